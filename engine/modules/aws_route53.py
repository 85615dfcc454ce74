"""Module ``aws_route53``: Route 53 hosted zones and their record sets.

Tables as in IaSQL v0.1.x's ``aws_route53`` module (``migration/1667844568145-aws_route53.ts``):

- ``hosted_zone(id, hosted_zone_id unique, domain_name)``: the cloud id is ``hosted_zone_id``
  (as AWS spells it, ``/hostedzone/Z...``); a new ``domain_name`` replaces the zone (IaSQL's
  ``updateOrReplace: 'replace'``). Domains compare without their final dot; the sync writes AWS's
  form (``example.com.``). Deleting a zone deletes its remaining record sets in the cloud first
  (AWS refuses to delete a zone that has any besides its SOA and NS); the foreign key asks the
  user to delete their rows anyway.
- ``resource_record_set(id, name, record_type resource_record_set_record_type_enum, record,
  ttl, parent_hosted_zone_id -> hosted_zone, alias_target_id -> alias_target)`` with IaSQL's
  checks ``Check_record__ttl`` and ``Check_record__alias_target`` and unique
  ``UQ_name__record_type (parent_hosted_zone_id, name, record_type)``. The cloud id is
  ``(parent_hosted_zone_id, name, record_type)``, names compared without their final dot and in
  lower case; ``record`` holds the values one per line; a new ``record`` or ``ttl`` is an UPSERT
  (IaSQL creates the new and deletes the old: the same change). The zone's SOA and apex NS
  records cannot be deleted: deleting their rows plans nothing and the sync restores them.
- ``alias_target(id, evaluate_target_health (true), load_balancer_id)``: database-only here.

Not built yet: alias records. IaSQL's ``alias_target.load_balancer_id`` references ``aws_elb``'s
``load_balancer``, a module that does not exist here: the column exists without its foreign key,
record sets with an alias target are not read, and committing one fails with
``AliasTargetUnsupported`` (SQLSTATE 58000). Route 53 is global: no ``region`` column, calls go
to us-east-1.
"""

from __future__ import annotations

import uuid
from typing import Any

from engine.aws import CloudError
from engine.modules.aws_account import VERSION
from engine.modules.base import Col, Mapper, MapperContext, Module, normalize

REGION = "us-east-1"
RECORD_TYPES = ("A", "AAAA", "CAA", "CNAME", "DS", "MX", "NAPTR", "NS", "PTR", "SOA", "SPF", "SRV", "TXT")


def domain(name: Any) -> str | None:
    """A DNS name compared as Route 53 does: lower case, without the final dot."""
    return None if name is None else str(name).rstrip(".").lower()


class HostedZoneMapper(Mapper):
    """``hosted_zone`` rows <-> Route 53 hosted zones."""

    table = "hosted_zone"
    columns = (Col("id", "int", "pk"), Col("hosted_zone_id", "text", "cloud"), Col("domain_name"))
    key = ("hosted_zone_id",)
    pk = ("id",)

    def describe(self, rec: dict) -> str:
        """``hosted zone <domain> (<id or new>)``."""
        return f"hosted zone {domain(rec.get('domain_name'))} ({rec.get('hosted_zone_id') or 'new'})"

    def equals(self, row: dict, cloud: dict) -> bool:
        """True when the domains match (final dot aside)."""
        return domain(row.get("domain_name")) == domain(cloud.get("domain_name"))

    def needs_replace(self, row: dict, cloud: dict) -> bool:
        """A new domain needs a new zone."""
        return not self.equals(row, cloud)

    async def read(self, mc: MapperContext) -> list[dict]:
        """Every hosted zone. Raises engine.aws.CloudError."""
        return [{"hosted_zone_id": z["Id"], "domain_name": z["Name"]}
                for z in await mc.paginate("route53", REGION, "list_hosted_zones", "HostedZones")]

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """Create the zone (AWS adds its SOA and NS records); returns its record. Raises
        engine.aws.CloudError."""
        res = await mc.call("route53", REGION, "create_hosted_zone", Name=row["domain_name"],
                            CallerReference=f"iasql-{uuid.uuid4()}")
        z = res["HostedZone"]
        return {"hosted_zone_id": z["Id"], "domain_name": z["Name"]}

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """Nothing changes in place (a new domain replaces): returns the cloud record."""
        return cloud

    async def delete(self, mc: MapperContext, cloud: dict) -> None:
        """Delete the zone's record sets other than its SOA and apex NS, then the zone. Raises
        engine.aws.CloudError."""
        zone = cloud["hosted_zone_id"]
        apex = domain(cloud.get("domain_name"))
        changes = [{"Action": "DELETE", "ResourceRecordSet": r}
                   for r in await mc.paginate("route53", REGION, "list_resource_record_sets", "ResourceRecordSets",
                                              HostedZoneId=zone)
                   if not (r["Type"] == "SOA" or (r["Type"] == "NS" and domain(r["Name"]) == apex))]
        if changes:
            await mc.call("route53", REGION, "change_resource_record_sets", HostedZoneId=zone,
                          ChangeBatch={"Changes": changes})
        await mc.call("route53", REGION, "delete_hosted_zone", Id=zone)


class ResourceRecordSetMapper(Mapper):
    """``resource_record_set`` rows <-> the record sets of the zones that have rows."""

    table = "resource_record_set"
    columns = (Col("id", "int", "pk"), Col("name"), Col("record_type"), Col("record"), Col("ttl", "int"),
               Col("parent_hosted_zone_id", "int"), Col("alias_target_id", "int"))
    key = ("parent_hosted_zone_id", "name", "record_type")
    pk = ("id",)
    cloud_read_uses_db = True

    def key_of(self, rec: dict) -> tuple | None:
        """``(zone row id, name without final dot in lower case, type)``, or None while any is NULL."""
        vals = (rec.get("parent_hosted_zone_id"), domain(rec.get("name")), rec.get("record_type"))
        return None if any(v is None for v in vals) else vals

    def describe(self, rec: dict) -> str:
        """``<type> record <name> of zone #<id>``."""
        return f"{rec.get('record_type')} record {domain(rec.get('name'))} of zone #{rec.get('parent_hosted_zone_id')}"

    def equals(self, row: dict, cloud: dict) -> bool:
        """True when values, TTL and alias target match (IaSQL's ``equals``)."""
        return (normalize("int", row.get("ttl")) == normalize("int", cloud.get("ttl"))
                and (row.get("record") or None) == (cloud.get("record") or None)
                and row.get("alias_target_id") == cloud.get("alias_target_id"))

    def deletable(self, cloud: dict) -> bool:
        """The zone's SOA and apex NS records are never deleted."""
        return not (cloud.get("record_type") == "SOA"
                    or (cloud.get("record_type") == "NS" and domain(cloud.get("name")) == domain(cloud.get("_apex"))))

    async def _zones(self, mc: MapperContext) -> dict:
        """hosted_zone_id -> (row id, domain) of the zones with rows."""
        return {z: (i, d) for i, z, d in await mc.fetchall(
            "SELECT id, hosted_zone_id, domain_name FROM public.hosted_zone WHERE hosted_zone_id IS NOT NULL")}

    @staticmethod
    def _record(r: dict, zone: str, row_id: Any, apex: str) -> dict | None:
        if not r.get("ResourceRecords"):
            return None  # an alias record (or a traffic policy's): not built yet
        return {"name": r["Name"], "record_type": r["Type"], "ttl": r.get("TTL"),
                "record": "\n".join(v["Value"] for v in r["ResourceRecords"]), "parent_hosted_zone_id": row_id,
                "alias_target_id": None, "_zone": zone, "_apex": apex, "_orphan": row_id is None}

    async def read(self, mc: MapperContext) -> list[dict]:
        """The record sets of every zone that has a row (zone ids resolved through
        ``hosted_zone``). Raises engine.aws.CloudError."""
        out = []
        for zone, (row_id, apex) in (await self._zones(mc)).items():
            try:
                sets = await mc.paginate("route53", REGION, "list_resource_record_sets", "ResourceRecordSets",
                                         HostedZoneId=zone)
            except CloudError as e:
                if e.code == "NoSuchHostedZone":
                    continue
                raise
            out += [rec for r in sets if (rec := self._record(r, zone, row_id, apex)) is not None]
        return out

    async def _zone_of(self, mc: MapperContext, row: dict) -> tuple[str, str]:
        rows = await mc.fetchall("SELECT hosted_zone_id, domain_name FROM public.hosted_zone WHERE id = $1",
                                 (row.get("parent_hosted_zone_id"),))
        if not rows or rows[0][0] is None:
            raise CloudError("NoSuchHostedZone", f"hosted zone #{row.get('parent_hosted_zone_id')} is not in the "
                             "cloud yet", "route53.change_resource_record_sets")
        return rows[0][0], rows[0][1]

    async def _upsert(self, mc: MapperContext, row: dict, action: str) -> dict:
        if row.get("alias_target_id") is not None:
            raise CloudError("AliasTargetUnsupported", "alias records need the aws_elb module, which is not built",
                             "route53.change_resource_record_sets")
        zone, apex = await self._zone_of(mc, row)
        rrs = {"Name": row["name"], "Type": row["record_type"], "TTL": int(row["ttl"]),
               "ResourceRecords": [{"Value": v} for v in str(row["record"]).split("\n")]}
        await mc.call("route53", REGION, "change_resource_record_sets", HostedZoneId=zone,
                      ChangeBatch={"Changes": [{"Action": action, "ResourceRecordSet": rrs}]})
        for r in await mc.paginate("route53", REGION, "list_resource_record_sets", "ResourceRecordSets",
                                   HostedZoneId=zone):
            if domain(r["Name"]) == domain(row["name"]) and r["Type"] == row["record_type"]:
                rec = self._record(r, zone, row["parent_hosted_zone_id"], apex)
                if rec is not None:
                    return rec
        raise CloudError("NoSuchResourceRecordSet", f"{row['record_type']} {row['name']} vanished after "
                         f"{action}", "route53.change_resource_record_sets")

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """CREATE the record set in its zone; returns its record. Raises engine.aws.CloudError."""
        return await self._upsert(mc, row, "CREATE")

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """UPSERT the new values and TTL; returns the new record. Raises engine.aws.CloudError."""
        return await self._upsert(mc, row, "UPSERT")

    async def delete(self, mc: MapperContext, cloud: dict) -> None:
        """DELETE the record set (nothing for the SOA and apex NS). Raises engine.aws.CloudError."""
        if not self.deletable(cloud):
            return
        rrs = {"Name": cloud["name"], "Type": cloud["record_type"], "TTL": int(cloud["ttl"]),
               "ResourceRecords": [{"Value": v} for v in str(cloud["record"]).split("\n")]}
        try:
            await mc.call("route53", REGION, "change_resource_record_sets", HostedZoneId=cloud["_zone"],
                          ChangeBatch={"Changes": [{"Action": "DELETE", "ResourceRecordSet": rrs}]})
        except CloudError as e:
            if e.code not in ("NoSuchHostedZone",):
                raise


class AliasTargetMapper(Mapper):
    """``alias_target``: database-only until alias records are built (see the module docstring)."""

    table = "alias_target"
    columns = (Col("id", "int", "pk"), Col("evaluate_target_health", "bool"), Col("load_balancer_id", "int"))
    key = ("id",)
    pk = ("id",)
    cloud = False


MODULE = Module(
    name="aws_route53",
    version=VERSION,
    dependencies=("aws_account",),
    install_sql=(
        """CREATE TABLE public.alias_target (
             id serial PRIMARY KEY,
             evaluate_target_health boolean NOT NULL DEFAULT true,
             load_balancer_id integer)""",
        """CREATE TABLE public.hosted_zone (
             id serial PRIMARY KEY,
             hosted_zone_id character varying,
             domain_name character varying NOT NULL,
             CONSTRAINT uq_hosted_zone_hosted_zone_id UNIQUE (hosted_zone_id))""",
        "CREATE TYPE public.resource_record_set_record_type_enum AS ENUM ("
        + ", ".join(f"'{t}'" for t in RECORD_TYPES) + ")",
        """CREATE TABLE public.resource_record_set (
             id serial PRIMARY KEY,
             name character varying NOT NULL,
             record_type public.resource_record_set_record_type_enum NOT NULL,
             record character varying,
             ttl integer,
             parent_hosted_zone_id integer REFERENCES public.hosted_zone (id),
             alias_target_id integer REFERENCES public.alias_target (id),
             CONSTRAINT "UQ_name__record_type" UNIQUE (parent_hosted_zone_id, name, record_type),
             CONSTRAINT "Check_record__ttl" CHECK ((record IS NULL AND ttl IS NULL AND alias_target_id IS NOT NULL)
                                                 OR (record IS NOT NULL AND ttl IS NOT NULL AND alias_target_id IS NULL)),
             CONSTRAINT "Check_record__alias_target" CHECK ((record IS NULL AND alias_target_id IS NOT NULL)
                                                           OR (record IS NOT NULL AND alias_target_id IS NULL)))""",
    ),
    uninstall_sql=("DROP TABLE public.resource_record_set", "DROP TYPE public.resource_record_set_record_type_enum",
                   "DROP TABLE public.hosted_zone", "DROP TABLE public.alias_target"),
    mappers=(AliasTargetMapper(), HostedZoneMapper(), ResourceRecordSetMapper()),
    description="Route 53 hosted zones and record sets (alias records not built yet)",
)
