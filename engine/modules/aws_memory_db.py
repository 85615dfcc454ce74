"""Module ``aws_memory_db``: MemoryDB subnet groups and clusters, with the clusters' security groups.

Tables, columns, types, enums, keys, defaults, constraints and triggers follow IaSQL v0.1's
``aws_memory_db`` migration (``src/modules/aws_memory_db/migration/1670284780262-aws_memory_db.ts``)
and its ``sql/after_install.sql``/``before_uninstall.sql``; what each mapper reads, compares,
updates or replaces follows ``src/modules/aws_memory_db/mappers/*.ts``. Depends on
``aws_account``, ``aws_security_group`` and ``aws_vpc``, as in IaSQL. Only the regions of IaSQL's
``mappers/supported_regions.ts`` are read (MemoryDB has no API that lists them). Tables, in
dependency order:

- ``subnet_group(subnet_group_name, description, arn, subnets varchar[], region)``: identity
  ``(subnet_group_name, region)``. NULL or empty ``subnets`` means the subnets of the region's
  default VPC (from ``aws_vpc``'s tables, as IaSQL; when AWS answers that only some of their
  zones are supported, those zones' default subnets, as IaSQL; moto supports every zone, so this
  retry is not tested). Description and subnets change in place
  (``update_subnet_group``). The trigger ``check_subnet_group_subnets`` refuses subnets that are
  not in ``subnet`` or span several VPCs; ``check_subnets_by_subnet_group`` refuses deleting or
  changing the ``subnet_id`` of a ``subnet`` row a subnet group names (IaSQL's fires on any
  update of the row, so the sync of a changed ``available_ip_address_count`` failed; and its
  message names ``r.cluster_name``, a column ``subnet_group`` does not have; here it names the
  group).
  AWS's ``default`` subnet group cannot be deleted: deleting its row plans nothing and the sync
  restores it.
- ``memory_db_cluster``: identity ``(cluster_name, region)``; ``address``, ``arn`` and ``status``
  come from AWS. A new ``port`` or ``subnet_group_id`` replaces the cluster (as IaSQL's
  ``updateOrReplace``); ``node_type``, ``description`` and tags change in place with
  ``update_cluster`` / ``tag_resource`` / ``untag_resource`` (IaSQL left tags as a to-do and
  checked ``list_allowed_node_type_updates`` first, restoring the row for a node type it could not
  take; here ``update_cluster`` is called and AWS's refusal fails the commit). Clusters are created
  with the ``open-access`` ACL, as IaSQL.
- ``memory_db_cluster_security_groups(memory_db_cluster_id, region, security_group_id)``: the
  clusters' security groups (``engine.modules.security_group_join``), set with
  ``update_cluster(SecurityGroupIds=...)``; a cluster's create passes the rows' groups.

Cloud failures raise ``engine.aws.CloudError``, which a commit reports with SQLSTATE 58000
(after taking back its cloud changes).

moto (5.2.5, the tests' cloud) answers create/describe/update/delete_cluster(s), create/describe/
delete_subnet_group(s), list_tags, tag_resource and untag_resource, with clusters ``available`` at
once and a ``default`` subnet group of the default VPC in every region. It does not implement
``update_subnet_group`` (HTTP 500), so an in-place subnet-group change fails the commit against
moto (tested as such); nor ``list_allowed_node_type_updates`` (not used here).
moto's ``update_cluster`` stores ``SecurityGroupIds`` but its ``describe_clusters`` keeps answering
the groups given at create (``models.py``: ``security_groups`` is built once in ``__init__``), so
a join row added to or deleted from an existing cluster never shows against moto (the commit
keeps planning it until it gives up); that case is not tested. ``subnet_group``'s
``check_subnet_group_subnets`` accepts subnets none of which has a ``subnet`` row (as IaSQL).
"""

from __future__ import annotations

import asyncio
from typing import Any

from engine.aws import CloudError
from engine.modules.aws_account import VERSION
from engine.modules.aws_rds import RdsModuleMapper, SubnetGroupRules
from engine.modules.aws_vpc import _tags_value, tags_from_aws
from engine.modules.base import Col, MapperContext, Module
from engine.modules.security_group_join import SecurityGroupJoinMapper

#: IaSQL's ``mappers/supported_regions.ts``: the regions MemoryDB is read in.
SUPPORTED_REGIONS = (
    "ap-east-1", "ap-northeast-1", "ap-northeast-2", "ap-south-1", "ap-southeast-1", "ap-southeast-2",
    "ca-central-1", "cn-north-1", "cn-northwest-1", "eu-central-1", "eu-north-1", "eu-south-1", "eu-west-1",
    "eu-west-2", "eu-west-3", "sa-east-1", "us-east-1", "us-east-2", "us-west-1", "us-west-2")

#: IaSQL v0.1's ``memory_db_cluster_node_type_enum``.
NODE_TYPES = ("db.t4g.small", "db.t4g.medium", "db.r6g.large", "db.r6g.xlarge", "db.r6g.2xlarge", "db.r6g.4xlarge",
              "db.r6g.8xlarge", "db.r6g.12xlarge", "db.r6g.16xlarge")

#: How often and how long (seconds) a create, update or delete waits for a cluster's status
#: (IaSQL waits up to 30 minutes).
WAIT_TRIES, WAIT_DELAY = 360, 5.0


async def _wait(mc: MapperContext, region: str, name: str, want: str | None) -> dict | None:
    """Poll ``describe_clusters`` until cluster ``name`` has status ``want`` (None: until it is
    gone); returns the last AWS record (None when gone). Raises CloudError (``WaitTimeout``)."""
    last = None
    for i in range(WAIT_TRIES):
        try:
            got = (await mc.call("memorydb", region, "describe_clusters", ClusterName=name)).get("Clusters") or []
        except CloudError as e:
            if e.code != "ClusterNotFoundFault":
                raise
            got = []
        if not got:
            if want is None:
                return None
        else:
            last = got[0]
            if want is not None and last.get("Status") == want:
                return last
        if i + 1 < WAIT_TRIES:
            await asyncio.sleep(WAIT_DELAY)
    raise CloudError("WaitTimeout", f"cluster {name} did not become {want or 'deleted'} in time",
                     "memorydb.describe_clusters")


class MemoryDbMapper(RdsModuleMapper):
    """This module's mappers read only IaSQL's supported regions."""

    supported_regions = SUPPORTED_REGIONS

    async def read(self, mc: MapperContext) -> list[dict]:
        """The records of every enabled region MemoryDB supports. Raises engine.aws.CloudError."""
        out: list[dict] = []
        for region in mc.regions:
            if region in SUPPORTED_REGIONS:
                out += await self._records(mc, region)
        return out


class SubnetGroupMapper(SubnetGroupRules, MemoryDbMapper):
    """``subnet_group`` rows <-> MemoryDB subnet groups. Follows IaSQL's ``mappers/subnet_group.ts``."""

    table = "subnet_group"
    columns = (Col("id", "int", "pk"), Col("subnet_group_name"), Col("description"), Col("arn", "text", "cloud"),
               Col("subnets", "text[]"), Col("region"))
    key = ("subnet_group_name", "region")
    pk = ("id",)
    optional = ("subnets",)
    cloud_read_uses_db = False
    name_column = "subnet_group_name"

    def describe(self, rec: dict) -> str:
        """The plan-row description of ``rec``."""
        return f"MemoryDB subnet group {rec.get('subnet_group_name')} in {rec.get('region')}"

    @staticmethod
    def _record(g: dict, region: str) -> dict:
        return {"subnet_group_name": g["Name"], "description": g.get("Description"), "arn": g.get("ARN"),
                "subnets": [s["Identifier"] for s in g.get("Subnets") or [] if s.get("Identifier")], "region": region}

    async def _records(self, mc: MapperContext, region: str, **filters: Any) -> list[dict]:
        res = await mc.paginate("memorydb", region, "describe_subnet_groups", "SubnetGroups", **filters)
        return [self._record(g, region) for g in res if g.get("ARN") and g.get("Name")]

    def _kw(self, row: dict, subnets: list[str]) -> dict:
        kw = {"SubnetGroupName": row["subnet_group_name"], "SubnetIds": subnets}
        if row.get("description") is not None:
            kw["Description"] = row["description"]
        return kw

    async def _call(self, mc: MapperContext, op: str, row: dict, region: str) -> dict:
        """``create_subnet_group``/``update_subnet_group`` with the row's subnets. When the row names
        none (the default VPC's) and AWS answers that only some zones are supported ("Supported
        availability zones are [...]"), it is tried again with the default subnets of those zones,
        at most three times (IaSQL's ``handleSubnetGroupCreateOrUpdate``). Raises engine.aws.CloudError."""
        subnets = await self._subnets(mc, row, region)
        marker = "Supported availability zones are ["
        for attempt in range(4):
            try:
                return await mc.call("memorydb", region, op, **self._kw(row, subnets))
            except CloudError as e:
                if row.get("subnets") or attempt == 3 or marker not in e.aws_message:
                    raise
                zones = e.aws_message[e.aws_message.rindex(marker) + len(marker):].split("]")[0].split(", ")
                rows = await mc.fetchall(
                    "SELECT s.subnet_id FROM public.subnet s JOIN public.vpc v ON v.id = s.vpc_id WHERE v.is_default "
                    "AND v.region = $1 AND s.subnet_id IS NOT NULL AND s.availability_zone = ANY($2::varchar[]) "
                    "ORDER BY s.subnet_id", (region, [z.strip() for z in zones]))
                subnets = [r[0] for r in rows]
        raise AssertionError("unreachable")

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """Create the subnet group; returns its record. Raises engine.aws.CloudError."""
        region = row.get("region") or mc.default_region
        res = await self._call(mc, "create_subnet_group", row, region)
        return self._record(res["SubnetGroup"], region)

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """Description and subnets in place (``update_subnet_group``); returns the new record.
        Raises engine.aws.CloudError (moto: not implemented)."""
        region = cloud["region"]
        res = await self._call(mc, "update_subnet_group", row, region)
        return self._record(res["SubnetGroup"], region)

    async def delete(self, mc: MapperContext, cloud: dict) -> None:
        """Delete the subnet group. Raises engine.aws.CloudError (SubnetGroupInUseFault while a cluster uses it)."""
        if not self.deletable(cloud):
            return
        await mc.call("memorydb", cloud["region"], "delete_subnet_group", SubnetGroupName=cloud["subnet_group_name"])


class MemoryDbClusterMapper(MemoryDbMapper):
    """``memory_db_cluster`` rows <-> MemoryDB clusters. Follows IaSQL's ``mappers/memory_db_cluster.ts``."""

    table = "memory_db_cluster"
    columns = (Col("id", "int", "pk"), Col("cluster_name"), Col("description"), Col("address", "text", "cloud"),
               Col("port", "int"), Col("node_type"), Col("arn", "text", "cloud"), Col("status", "text", "cloud"),
               Col("tags", "json"), Col("region"), Col("subnet_group_id", "int"))
    key = ("cluster_name", "region")
    pk = ("id",)
    children = (("memory_db_cluster_security_groups", "memory_db_cluster_id"),)
    cloud_read_uses_db = True  # subnet groups are resolved through subnet_group

    def describe(self, rec: dict) -> str:
        """The plan-row description of ``rec``."""
        return f"MemoryDB cluster {rec.get('cluster_name')} ({rec.get('node_type')}) in {rec.get('region')}"

    def needs_replace(self, row: dict, cloud: dict) -> bool:
        """A new port or subnet group needs a new cluster (IaSQL's ``updateOrReplace``)."""
        return self.differs(row, cloud, ("port", "subnet_group_id"))

    async def _groups(self, mc: MapperContext) -> tuple[dict, dict]:
        rows = await mc.fetchall("SELECT id, subnet_group_name, region FROM public.subnet_group WHERE arn IS NOT NULL")
        return {(r, n): i for i, n, r in rows}, {i: (r, n) for i, n, r in rows}

    async def _record(self, mc: MapperContext, c: dict, region: str, groups: dict) -> dict:
        tags = (await mc.call("memorydb", region, "list_tags", ResourceArn=c["ARN"])).get("TagList")
        ep = c.get("ClusterEndpoint") or {}
        sng = c.get("SubnetGroupName")
        return {"cluster_name": c["Name"], "description": c.get("Description"), "address": ep.get("Address"),
                "port": ep.get("Port") or 6379, "node_type": c.get("NodeType"), "arn": c["ARN"],
                "status": c.get("Status"), "tags": tags_from_aws(tags), "region": region,
                "subnet_group_id": groups.get((region, sng)),
                "_vpc_security_groups": [g["SecurityGroupId"] for g in c.get("SecurityGroups") or []
                                         if g.get("SecurityGroupId")],
                # a cluster whose subnet group has no row: the table cannot hold it (NOT NULL)
                "_orphan": (region, sng) not in groups}

    async def _records(self, mc: MapperContext, region: str, **filters: Any) -> list[dict]:
        groups, _ = await self._groups(mc)
        out = []
        for c in await mc.paginate("memorydb", region, "describe_clusters", "Clusters", **filters):
            if not (c.get("ARN") and c.get("Name") and c.get("NodeType") and c.get("SubnetGroupName")):
                continue  # as IaSQL's mapper
            if c.get("Status") == "deleting" or c.get("NodeType") not in NODE_TYPES:
                continue  # going, or a node type the enum cannot hold
            out.append(await self._record(mc, c, region, groups))
        return out

    async def _get(self, mc: MapperContext, region: str, name: str) -> dict:
        groups, _ = await self._groups(mc)
        c = await _wait(mc, region, name, "available")
        return await self._record(mc, c or {}, region, groups)

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """Create the cluster (``open-access`` ACL, the row's subnet group, the join table's
        security groups, tags) and wait until it is available; returns its record. A failure
        after the create deletes it again (or sets ``left``). Raises engine.aws.CloudError
        (DependencyViolation while the subnet group or a security group is not created yet)."""
        region = row.get("region") or mc.default_region
        op = "memorydb.create_cluster"
        _, by_db = await self._groups(mc)
        if row.get("subnet_group_id") not in by_db:
            raise CloudError("DependencyViolation", f"subnet_group #{row.get('subnet_group_id')} is not created in "
                             "the cloud yet", op)
        sgs = await mc.fetchall("SELECT g.group_id FROM public.memory_db_cluster_security_groups j JOIN "
                                "public.security_group g ON g.id = j.security_group_id WHERE j.memory_db_cluster_id = $1 "
                                "ORDER BY g.id", (row.get("id"),))
        if any(g is None for (g,) in sgs):
            raise CloudError("DependencyViolation", "a security group of the cluster is not created in the cloud yet", op)
        kw: dict[str, Any] = {"ClusterName": row["cluster_name"], "NodeType": row["node_type"], "ACLName": "open-access",
                              "SubnetGroupName": by_db[row["subnet_group_id"]][1],
                              "Port": row.get("port") or 6379}
        if sgs:
            kw["SecurityGroupIds"] = [g for (g,) in sgs]
        if row.get("description") is not None:
            kw["Description"] = row["description"]
        tags = _tags_value(row.get("tags"))
        if tags:
            kw["Tags"] = [{"Key": str(k), "Value": str(v)} for k, v in tags.items()]
        await mc.call("memorydb", region, "create_cluster", **kw)
        try:
            return await self._get(mc, region, row["cluster_name"])
        except CloudError as e:
            try:
                await mc.call("memorydb", region, "delete_cluster", ClusterName=row["cluster_name"])
            except CloudError:
                e.left = {"cluster_name": row["cluster_name"], "region": region}
            raise

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """Tags (tag/untag), then node type and description with ``update_cluster``, waiting for
        ``available``; returns the new record. Raises engine.aws.CloudError."""
        region, name = cloud["region"], cloud["cluster_name"]
        if not self._same(self.col("tags"), row.get("tags"), cloud.get("tags")):
            want, have = _tags_value(row.get("tags")) or {}, _tags_value(cloud.get("tags")) or {}
            gone = [k for k in have if k not in want]
            if gone:
                await mc.call("memorydb", region, "untag_resource", ResourceArn=cloud["arn"], TagKeys=gone)
            new = {k: v for k, v in want.items() if have.get(k) != v}
            if new:
                await mc.call("memorydb", region, "tag_resource", ResourceArn=cloud["arn"],
                              Tags=[{"Key": str(k), "Value": str(v)} for k, v in new.items()])
        kw: dict[str, Any] = {}
        if self.differs(row, cloud, ("node_type",)):
            kw["NodeType"] = row["node_type"]
        if self.differs(row, cloud, ("description",)):
            kw["Description"] = row.get("description") or ""
        if kw:
            await mc.call("memorydb", region, "update_cluster", ClusterName=name, **kw)
        return await self._get(mc, region, name)

    async def delete(self, mc: MapperContext, cloud: dict) -> None:
        """Delete the cluster and wait until it is gone. Raises engine.aws.CloudError."""
        await mc.call("memorydb", cloud["region"], "delete_cluster", ClusterName=cloud["cluster_name"])
        await _wait(mc, cloud["region"], cloud["cluster_name"], None)


class MemoryDbSecurityGroupsMapper(SecurityGroupJoinMapper):
    """``memory_db_cluster_security_groups`` rows <-> the clusters' security groups, set with
    ``update_cluster(SecurityGroupIds=...)``."""

    async def set_groups(self, mc: MapperContext, region: str, ident: str, groups: list[str]) -> None:
        """Give cluster ``ident`` the security groups ``groups``. Raises engine.aws.CloudError."""
        await mc.call("memorydb", region, "update_cluster", ClusterName=ident, SecurityGroupIds=groups)
        await _wait(mc, region, ident, "available")


_CLUSTER = MemoryDbClusterMapper()

INSTALL_SQL = (
    """CREATE TABLE public.subnet_group (
         id SERIAL NOT NULL,
         subnet_group_name character varying NOT NULL,
         description character varying,
         arn character varying,
         subnets character varying array,
         region character varying NOT NULL DEFAULT public.default_aws_region(),
         CONSTRAINT uq_subnet_group_name_region UNIQUE (subnet_group_name, region),
         CONSTRAINT uq_subnet_group_id_region UNIQUE (id, region),
         CONSTRAINT "PK_a54731069caf05d2029dc7cd4c2" PRIMARY KEY (id),
         CONSTRAINT "FK_9c167de4a925902861770929701" FOREIGN KEY (region) REFERENCES public.aws_regions (region))""",
    "CREATE TYPE public.memory_db_cluster_node_type_enum AS ENUM (" + ", ".join(f"'{t}'" for t in NODE_TYPES) + ")",
    """CREATE TABLE public.memory_db_cluster (
         id SERIAL NOT NULL,
         cluster_name character varying NOT NULL,
         description character varying,
         address character varying,
         port integer NOT NULL DEFAULT '6379',
         node_type public.memory_db_cluster_node_type_enum NOT NULL DEFAULT 'db.r6g.large',
         arn character varying,
         status character varying,
         tags json,
         region character varying NOT NULL DEFAULT public.default_aws_region(),
         subnet_group_id integer NOT NULL,
         CONSTRAINT uq_memory_db_cluster_name_region UNIQUE (cluster_name, region),
         CONSTRAINT uq_memory_db_cluster_id_region UNIQUE (id, region),
         CONSTRAINT "PK_b7461d91a0f9b5cda3a86a7da24" PRIMARY KEY (id),
         CONSTRAINT "FK_88d06dfe65afb98a71707759361" FOREIGN KEY (subnet_group_id, region)
           REFERENCES public.subnet_group (id, region),
         CONSTRAINT "FK_6fd8e3f2d624960bc1ac10f4cea" FOREIGN KEY (region) REFERENCES public.aws_regions (region))""",
    """CREATE TABLE public.memory_db_cluster_security_groups (
         memory_db_cluster_id integer NOT NULL,
         region character varying NOT NULL,
         security_group_id integer NOT NULL,
         CONSTRAINT "PK_c24a4fa57989c3c95d17eb2e457" PRIMARY KEY (memory_db_cluster_id, region, security_group_id),
         CONSTRAINT "FK_4d04c1c4a206dae4337919be4dc" FOREIGN KEY (memory_db_cluster_id, region)
           REFERENCES public.memory_db_cluster (id, region) ON DELETE CASCADE ON UPDATE CASCADE,
         CONSTRAINT "FK_934dbce49712bcc04e479d551cf" FOREIGN KEY (security_group_id)
           REFERENCES public.security_group (id) ON DELETE CASCADE ON UPDATE CASCADE,
         CONSTRAINT "FK_memory_db_cluster_security_groups_region" FOREIGN KEY (security_group_id, region)
           REFERENCES public.security_group (id, region) ON DELETE CASCADE ON UPDATE CASCADE)""",
    ('CREATE INDEX "IDX_4d04c1c4a206dae4337919be4d" ON public.memory_db_cluster_security_groups '
     "(memory_db_cluster_id, region)"),
    'CREATE INDEX "IDX_934dbce49712bcc04e479d551c" ON public.memory_db_cluster_security_groups (security_group_id)',
    """CREATE OR REPLACE FUNCTION public.check_subnets_by_subnet_group() RETURNS trigger
         LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $check_subnets_by_subnet_group$
       DECLARE
         r record;
       BEGIN
         IF (TG_OP = 'UPDATE' AND OLD.subnet_id IS NOT DISTINCT FROM NEW.subnet_id) THEN
           RETURN NEW;
         END IF;
         FOR r IN SELECT * FROM public.subnet_group LOOP
           IF OLD.subnet_id = any(r.subnets) THEN
             RAISE EXCEPTION 'subnet_id % is being used by MemoryDB Subnet Group %', OLD.subnet_id, r.subnet_group_name;
           END IF;
         END LOOP;
         IF (TG_OP = 'DELETE') THEN
           RETURN OLD;
         ELSE
           RETURN NEW;
         END IF;
       END;
       $check_subnets_by_subnet_group$""",
    """CREATE TRIGGER check_subnets_by_subnet_group BEFORE DELETE OR UPDATE ON public.subnet
         FOR EACH ROW EXECUTE FUNCTION public.check_subnets_by_subnet_group()""",
    """CREATE OR REPLACE FUNCTION public.check_subnet_group_subnets() RETURNS trigger
         LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $check_subnet_group_subnets$
       DECLARE
         _subnets_count integer;
         _vpc_count integer;
       BEGIN
         SELECT pg_catalog.count(*) INTO _subnets_count FROM public.subnet
          WHERE subnet_id = any(NEW.subnets) AND region = NEW.region;
         SELECT pg_catalog.count(DISTINCT vpc_id) INTO _vpc_count FROM public.subnet
          WHERE subnet_id = any(NEW.subnets) AND region = NEW.region;
         IF ((_subnets_count = 0 OR _subnets_count = pg_catalog.array_length(NEW.subnets, 1)) AND _vpc_count <= 1) THEN
           RETURN NEW;
         ELSE
           RAISE EXCEPTION 'Subnets must be from the same vpc and region.';
           RETURN OLD;
         END IF;
       END;
       $check_subnet_group_subnets$""",
    """CREATE TRIGGER check_subnet_group_subnets BEFORE INSERT OR UPDATE ON public.subnet_group
         FOR EACH ROW EXECUTE FUNCTION public.check_subnet_group_subnets()""",
)

UNINSTALL_SQL = (
    "DROP TRIGGER IF EXISTS check_subnet_group_subnets ON public.subnet_group",
    "DROP FUNCTION public.check_subnet_group_subnets()",
    "DROP TRIGGER IF EXISTS check_subnets_by_subnet_group ON public.subnet",
    "DROP FUNCTION public.check_subnets_by_subnet_group()",
    "DROP TABLE public.memory_db_cluster_security_groups",
    "DROP TABLE public.memory_db_cluster",
    "DROP TYPE public.memory_db_cluster_node_type_enum",
    "DROP TABLE public.subnet_group",
)

MODULE = Module(
    name="aws_memory_db",
    version=VERSION,
    dependencies=("aws_account", "aws_security_group", "aws_vpc"),
    install_sql=INSTALL_SQL,
    uninstall_sql=UNINSTALL_SQL,
    mappers=(SubnetGroupMapper(), _CLUSTER,
             MemoryDbSecurityGroupsMapper("memory_db_cluster_security_groups", _CLUSTER, "memory_db_cluster_id",
                                          "cluster_name", with_region=True)),
    description="MemoryDB subnet groups and clusters",
)
