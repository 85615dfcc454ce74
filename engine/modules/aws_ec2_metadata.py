"""Module ``aws_ec2_metadata``: read-only facts about the instances of ``aws_ec2``.

Table ``instance_metadata(id, instance_id, architecture, private_ip_address, public_ip_address,
public_dns_name, launch_time, cpu_cores, mem_size_mb, ebs_optimized, root_device_type,
root_device_name, region)`` as IaSQL v0.1's migration
(``src/modules/aws_ec2_metadata/migration/1669392108690-aws_ec2_metadata.ts``): one row per
instance that has an ``instance`` row (``id`` is that row's id; deleting the instance row deletes
this one), identified by ``instance_id``. As in IaSQL the table is read-only: every column is
AWS's, a changed row is turned back and a deleted row comes back at the next sync, an inserted
row is removed by it; a commit never calls AWS for it. ``mem_size_mb`` comes from
``describe_instance_types`` (one call per region for all the types in use); ``cpu_cores`` is the
instance's ``CpuOptions.CoreCount``, or its type's default core count when AWS does not say
(moto never does). Instances come from ``aws_ec2``'s batched read (``engine.modules.aws_ec2``).
"""

from __future__ import annotations

from typing import Any

from engine.modules.aws_account import VERSION
from engine.modules.aws_ec2 import all_instances
from engine.modules.base import Col, Mapper, MapperContext, Module


async def instance_types(mc: MapperContext, region: str, names: set[str]) -> dict[str, dict]:
    """``{type name: describe_instance_types record}`` for ``names`` in ``region`` (100 a call;
    kept for the engine call). Raises engine.aws.CloudError."""
    known = mc.memo.setdefault(("aws_ec2_metadata.types", region), {})
    todo = sorted(n for n in names if n not in known)
    for start in range(0, len(todo), 100):
        res = await mc.paginate("ec2", region, "describe_instance_types", "InstanceTypes",
                                InstanceTypes=todo[start:start + 100])
        known.update({t["InstanceType"]: t for t in res})
    return known


class InstanceMetadataMapper(Mapper):
    """``instance_metadata`` rows <-> the instances that have an ``instance`` row (read-only).
    Follows IaSQL's ``aws_ec2_metadata`` mapper."""

    table = "instance_metadata"
    columns = (Col("id", "int", "cloud"), Col("instance_id"), Col("architecture", "text", "cloud"),
               Col("private_ip_address", "cidr", "cloud"), Col("public_ip_address", "cidr", "cloud"),
               Col("public_dns_name", "text", "cloud"), Col("launch_time", "timestamptz", "cloud"),
               Col("cpu_cores", "int", "cloud"), Col("mem_size_mb", "int", "cloud"),
               Col("ebs_optimized", "bool", "cloud"), Col("root_device_type", "text", "cloud"),
               Col("root_device_name", "text", "cloud"), Col("region", "text", "cloud"))
    key = ("instance_id",)
    pk = ("instance_id",)
    cloud_read_uses_db = True

    def describe(self, rec: dict) -> str:
        """The plan-row description of ``rec``."""
        return f"metadata of instance {rec.get('instance_id')} (read-only)"

    def deletable(self, cloud: dict) -> bool:
        """Read-only: a deleted row comes back at sync."""
        return False

    @staticmethod
    def _record(i: dict, region: str, db_id: int, itype: dict) -> dict:
        cores = (i.get("CpuOptions") or {}).get("CoreCount") or (itype.get("VCpuInfo") or {}).get("DefaultCores")
        return {"id": db_id, "instance_id": i["InstanceId"], "architecture": i.get("Architecture"),
                "private_ip_address": i.get("PrivateIpAddress"), "public_ip_address": i.get("PublicIpAddress") or None,
                "public_dns_name": i.get("PublicDnsName") or None, "launch_time": i.get("LaunchTime"),
                "cpu_cores": cores, "mem_size_mb": (itype.get("MemoryInfo") or {}).get("SizeInMiB"),
                "ebs_optimized": bool(i.get("EbsOptimized")), "root_device_type": i.get("RootDeviceType") or "ebs",
                "root_device_name": i.get("RootDeviceName") or "", "region": region}

    async def read(self, mc: MapperContext) -> list[dict]:
        """The metadata of every instance with an ``instance`` row and a private address in the
        enabled regions. Raises engine.aws.CloudError."""
        rows = await mc.fetchall("SELECT id, instance_id, region FROM public.instance WHERE instance_id IS NOT NULL")
        ids = {(r, iid): i for i, iid, r in rows}
        out = []
        for region, found in (await all_instances(mc)).items():
            mine = [i for iid, i in found.items() if (region, iid) in ids and i.get("PrivateIpAddress")]
            types = await instance_types(mc, region, {i["InstanceType"] for i in mine})
            out += [self._record(i, region, ids[(region, i["InstanceId"])], types.get(i["InstanceType"], {}))
                    for i in mine]
        return [r for r in out if r["cpu_cores"] is not None and r["mem_size_mb"] is not None]

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """Nothing in the cloud (read-only, as IaSQL): returns ``row``; the sync removes it."""
        return row

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """Nothing in the cloud (read-only): returns ``cloud``; the sync restores the row."""
        return cloud

    async def delete(self, mc: MapperContext, cloud: dict) -> Any:
        """Nothing in the cloud (never planned: ``deletable`` is False)."""
        return None


INSTALL_SQL = (
    "CREATE TYPE public.instance_metadata_architecture_enum AS ENUM ('arm64', 'i386', 'x86_64', 'x86_64_mac')",
    "CREATE TYPE public.instance_metadata_root_device_type_enum AS ENUM ('ebs', 'instance-store')",
    """CREATE TABLE public.instance_metadata (
         id integer NOT NULL,
         instance_id character varying NOT NULL,
         architecture public.instance_metadata_architecture_enum NOT NULL,
         private_ip_address cidr NOT NULL,
         public_ip_address cidr,
         public_dns_name character varying,
         launch_time timestamp with time zone NOT NULL,
         cpu_cores integer NOT NULL,
         mem_size_mb integer NOT NULL,
         ebs_optimized boolean NOT NULL,
         root_device_type public.instance_metadata_root_device_type_enum NOT NULL,
         root_device_name character varying,
         region character varying NOT NULL DEFAULT public.default_aws_region(),
         CONSTRAINT "REL_d3c7f86b7628690e6e68ccebbe" UNIQUE (id),
         CONSTRAINT "PK_e34728db56b9cf43fad3f80039f" PRIMARY KEY (instance_id),
         CONSTRAINT "FK_d3c7f86b7628690e6e68ccebbeb" FOREIGN KEY (id) REFERENCES public.instance (id) ON DELETE CASCADE,
         CONSTRAINT "FK_12f3ab0458b0e1965e9e5cfba7e" FOREIGN KEY (region) REFERENCES public.aws_regions (region))""",
)

UNINSTALL_SQL = (
    "DROP TABLE public.instance_metadata",
    "DROP TYPE public.instance_metadata_root_device_type_enum",
    "DROP TYPE public.instance_metadata_architecture_enum",
)

MODULE = Module(
    name="aws_ec2_metadata",
    version=VERSION,
    dependencies=("aws_account", "aws_ec2"),
    install_sql=INSTALL_SQL,
    uninstall_sql=UNINSTALL_SQL,
    mappers=(InstanceMetadataMapper(),),
    description="Read-only facts about EC2 instances (architecture, addresses, launch time, cores, memory)",
)
