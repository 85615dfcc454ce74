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
- ``alias_target(id, evaluate_target_health (true), load_balancer_id -> load_balancer)`` with
  IaSQL's foreign key ``FK_4c791487240505a79afaad2a41c`` to ``aws_elb``'s ``load_balancer``
  (hence the module depends on ``aws_elb``, as IaSQL's ``module.json``).

Alias records (IaSQL's ``dbRecordToAwsObject``/``aliasTargetMapper``): a record set with
``alias_target_id`` (and NULL ``record``/``ttl``, the checks say so) is an alias record to its
alias target's load balancer: ``DNSName`` is the load balancer's ``dns_name`` (``dualstack.``
before it for an application load balancer), ``HostedZoneId`` its ``canonical_hosted_zone_id``,
``EvaluateTargetHealth`` the row's. One commit can make the load balancer, the zone, the alias
target and the record set (dependency order: aws_elb's tables first). Changing
``evaluate_target_health`` or ``load_balancer_id`` UPSERTs every alias record that uses the alias
target; pointing a record set at another alias target UPSERTs it; deleting the record set DELETEs
the alias (an alias target row is never anything in the cloud by itself). Reading: an alias
record whose ``DNSName`` (``dualstack.``, final dot and case aside) is a load balancer row's
``dns_name`` is read with the ``alias_target_id`` of its record set's row; one without a row (an
import, or a value record turned alias in the cloud) gets a new ``alias_target`` row, inserted by
the sync before the record set (IaSQL's mapper creates it on import too; the id is taken from
the table's sequence when the cloud is read, so a preview uses up sequence values). Drift of an alias
(evaluate_target_health, load balancer) is written to the alias target row. Alias records to
anything else (CloudFront, S3, another record set) and traffic-policy records are not read, as in
IaSQL. ``alias_target`` has a mapper of its own (IaSQL cascades it from the record set): rows no
alias record uses are left as they are (no cloud action, no sync delete). A record set pointed at a
new alias target row plans both an ``alias_target`` and a ``resource_record_set`` update (the
same UPSERT twice).

moto (which the tests run against) stores an alias record's ``AliasTarget`` as given (no final
dot, case kept) and accepts an alias to a target that does not exist; AWS refuses that and reads
``DNSName`` back in lower case with a final dot (both forms are matched).
Route 53 is global: no ``region`` column, calls go to us-east-1.
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


def _lb_dns(dns: Any) -> str:
    """An alias target's DNS name compared with a load balancer's: lower case, without the final
    dot and without the ``dualstack.`` prefix IaSQL gives application load balancers."""
    d = str(dns or "").rstrip(".").lower()
    return d.removeprefix("dualstack.")


class AliasContext:
    """What resolving alias records needs from the database, read once per cloud read:
    ``lbs`` (load balancer DNS name -> row id), ``targets`` (alias_target id ->
    ``(load_balancer_id, evaluate_target_health)``) and ``uses`` (record set key -> its
    alias_target_id)."""

    def __init__(self, lbs: dict, targets: dict, uses: dict) -> None:
        """Hold the three lookups (see the class docstring)."""
        self.lbs, self.targets, self.uses = lbs, targets, uses

    @classmethod
    async def load(cls, mc: MapperContext) -> AliasContext:
        """Read the load balancers, alias targets and record sets of the caller's transaction."""
        lbs = {_lb_dns(d): i for i, d in await mc.fetchall(
            "SELECT id, dns_name FROM public.load_balancer WHERE dns_name IS NOT NULL")}
        targets = {i: (lb, bool(eth)) for i, eth, lb in await mc.fetchall(
            "SELECT id, evaluate_target_health, load_balancer_id FROM public.alias_target")}
        uses = {(z, domain(n), t): a for z, n, t, a in await mc.fetchall(
            "SELECT parent_hosted_zone_id, name, record_type::text, alias_target_id "
            "FROM public.resource_record_set WHERE alias_target_id IS NOT NULL")}
        return cls(lbs, targets, uses)

    async def resolve(self, mc: MapperContext, r: dict, zone: str, row_id: Any) -> dict | None:
        """The alias target of AWS record set ``r`` (in zone ``zone``, whose row is ``row_id``):
        ``{"id", "load_balancer_id", "evaluate_target_health"}``, or None when it does not point
        at a load balancer with a row (IaSQL ignores other alias targets). ``id`` is the
        alias_target_id of the record set's row; a record without one gets a new id from the
        table's sequence, the same for the whole call (``mc.memo``), which the sync inserts."""
        at = r["AliasTarget"]
        lb = self.lbs.get(_lb_dns(at.get("DNSName")))
        if lb is None:
            return None
        key = (row_id, domain(r["Name"]), r["Type"])
        tid = self.uses.get(key)
        if tid is None:
            memo = mc.memo.setdefault("aws_route53.alias_target_ids", {})
            mkey = (zone, domain(r["Name"]), r["Type"])
            if mkey not in memo:
                [(memo[mkey],)] = await mc.fetchall(
                    "SELECT pg_catalog.nextval(pg_catalog.pg_get_serial_sequence('public.alias_target', 'id'))")
            tid = memo[mkey]
        return {"id": tid, "load_balancer_id": lb, "evaluate_target_health": bool(at.get("EvaluateTargetHealth"))}


async def _zones(mc: MapperContext) -> dict:
    """hosted_zone_id -> (row id, domain) of the zones with rows."""
    return {z: (i, d) for i, z, d in await mc.fetchall(
        "SELECT id, hosted_zone_id, domain_name FROM public.hosted_zone WHERE hosted_zone_id IS NOT NULL")}


async def _record_sets(mc: MapperContext) -> list[tuple[str, Any, str, dict]]:
    """(zone id, zone row id, apex domain, AWS record set) of every zone that has a row; a zone
    gone from the cloud is skipped. Raises engine.aws.CloudError."""
    out = []
    for zone, (row_id, apex) in (await _zones(mc)).items():
        try:
            sets = await mc.paginate("route53", REGION, "list_resource_record_sets", "ResourceRecordSets",
                                     HostedZoneId=zone)
        except CloudError as e:
            if e.code == "NoSuchHostedZone":
                continue
            raise
        out += [(zone, row_id, apex, r) for r in sets]
    return out


async def _aws_alias(mc: MapperContext, load_balancer_id: Any, evaluate_target_health: Any) -> dict:
    """Route 53's ``AliasTarget`` to load balancer row ``load_balancer_id``: its DNS name
    (``dualstack.`` before an application load balancer's, as IaSQL) and canonical hosted zone.
    Raises engine.aws.CloudError when the load balancer is missing or not created yet."""
    rows = await mc.fetchall(
        "SELECT dns_name, canonical_hosted_zone_id, load_balancer_type::text FROM public.load_balancer "
        "WHERE id = $1", (load_balancer_id,))
    if not rows or rows[0][0] is None or rows[0][1] is None:
        raise CloudError("InvalidAliasTarget", f"load balancer #{load_balancer_id} of the alias target is not in "
                         "the cloud yet", "route53.change_resource_record_sets")
    dns, zone, kind = rows[0]
    return {"HostedZoneId": zone, "DNSName": f"dualstack.{dns}" if kind == "application" else dns,
            "EvaluateTargetHealth": bool(evaluate_target_health)}


async def _row_alias(mc: MapperContext, row: dict) -> dict:
    """The ``AliasTarget`` of record set ``row``: as read when it is a cloud record (the engine's
    revert passes those), else from its ``alias_target`` row. Raises engine.aws.CloudError."""
    if row.get("_aws_alias"):
        return row["_aws_alias"]
    rows = await mc.fetchall("SELECT load_balancer_id, evaluate_target_health FROM public.alias_target "
                             "WHERE id = $1", (row["alias_target_id"],))
    if not rows:
        raise CloudError("InvalidAliasTarget", f"alias target #{row['alias_target_id']} does not exist",
                         "route53.change_resource_record_sets")
    return await _aws_alias(mc, rows[0][0], rows[0][1])


class ResourceRecordSetMapper(Mapper):
    """``resource_record_set`` rows <-> the record sets of the zones that have rows: value
    records (``record``, ``ttl``) and alias records to load balancers (``alias_target_id``)."""

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
        """``<type> record <name> of zone #<id>`` (``alias record`` for an alias)."""
        kind = "alias record" if rec.get("alias_target_id") is not None else "record"
        return f"{rec.get('record_type')} {kind} {domain(rec.get('name'))} of zone #{rec.get('parent_hosted_zone_id')}"

    def equals(self, row: dict, cloud: dict) -> bool:
        """True when values and TTL match and, for an alias, the row's alias target (load balancer,
        evaluate_target_health) is the cloud's (IaSQL's ``equals``)."""
        if not (normalize("int", row.get("ttl")) == normalize("int", cloud.get("ttl"))
                and (row.get("record") or None) == (cloud.get("record") or None)):
            return False
        if row.get("alias_target_id") is None or cloud.get("alias_target_id") is None:
            return row.get("alias_target_id") is None and cloud.get("alias_target_id") is None
        return cloud.get("_targets", {}).get(row["alias_target_id"]) == cloud.get("_alias")

    def deletable(self, cloud: dict) -> bool:
        """The zone's SOA and apex NS records are never deleted."""
        return not (cloud.get("record_type") == "SOA"
                    or (cloud.get("record_type") == "NS" and domain(cloud.get("name")) == domain(cloud.get("_apex"))))

    @staticmethod
    async def _record(mc: MapperContext, ac: AliasContext, r: dict, zone: str, row_id: Any,
                      apex: str) -> dict | None:
        base = {"name": r["Name"], "record_type": r["Type"], "parent_hosted_zone_id": row_id, "_zone": zone,
                "_apex": apex, "_orphan": row_id is None}
        if r.get("ResourceRecords"):
            return {**base, "ttl": r.get("TTL"), "record": "\n".join(v["Value"] for v in r["ResourceRecords"]),
                    "alias_target_id": None}
        if r.get("AliasTarget"):
            at = await ac.resolve(mc, r, zone, row_id)
            if at is None:
                return None  # an alias to something other than a load balancer with a row: ignored, as IaSQL
            # an alias target that has no row yet (the sync inserts it before the record sets): never inserted
            orphan = row_id is None or at["id"] not in ac.targets
            return {**base, "_orphan": orphan, "ttl": None, "record": None, "alias_target_id": at["id"],
                    "_alias": (at["load_balancer_id"], at["evaluate_target_health"]), "_targets": ac.targets,
                    "_aws_alias": r["AliasTarget"]}
        return None  # a traffic policy's record: ignored, as IaSQL

    async def read(self, mc: MapperContext) -> list[dict]:
        """The record sets of every zone that has a row (zone ids resolved through
        ``hosted_zone``, alias targets through ``alias_target`` and ``load_balancer``). Raises
        engine.aws.CloudError."""
        ac = await AliasContext.load(mc)
        out = []
        for zone, row_id, apex, r in await _record_sets(mc):
            if (rec := await self._record(mc, ac, r, zone, row_id, apex)) is not None:
                out.append(rec)
        return out

    async def _zone_of(self, mc: MapperContext, row: dict) -> tuple[str, str]:
        rows = await mc.fetchall("SELECT hosted_zone_id, domain_name FROM public.hosted_zone WHERE id = $1",
                                 (row.get("parent_hosted_zone_id"),))
        if not rows or rows[0][0] is None:
            raise CloudError("NoSuchHostedZone", f"hosted zone #{row.get('parent_hosted_zone_id')} is not in the "
                             "cloud yet", "route53.change_resource_record_sets")
        return rows[0][0], rows[0][1]

    @staticmethod
    def _aws_set(rec: dict) -> dict:
        """The AWS ``ResourceRecordSet`` of a cloud record (for DELETE)."""
        rrs = {"Name": rec["name"], "Type": rec["record_type"]}
        if rec.get("_aws_alias"):
            return {**rrs, "AliasTarget": rec["_aws_alias"]}
        return {**rrs, "TTL": int(rec["ttl"]),
                "ResourceRecords": [{"Value": v} for v in str(rec["record"]).split("\n")]}

    async def _upsert(self, mc: MapperContext, row: dict, action: str) -> dict:
        zone, apex = await self._zone_of(mc, row)
        rrs = {"Name": row["name"], "Type": row["record_type"]}
        if row.get("alias_target_id") is not None:
            rrs["AliasTarget"] = await _row_alias(mc, row)
        else:
            rrs.update(TTL=int(row["ttl"]), ResourceRecords=[{"Value": v} for v in str(row["record"]).split("\n")])
        await mc.call("route53", REGION, "change_resource_record_sets", HostedZoneId=zone,
                      ChangeBatch={"Changes": [{"Action": action, "ResourceRecordSet": rrs}]})
        ac = await AliasContext.load(mc)
        for r in await mc.paginate("route53", REGION, "list_resource_record_sets", "ResourceRecordSets",
                                   HostedZoneId=zone):
            if domain(r["Name"]) == domain(row["name"]) and r["Type"] == row["record_type"]:
                rec = await self._record(mc, ac, r, zone, row["parent_hosted_zone_id"], apex)
                if rec is not None:
                    return rec
        raise CloudError("NoSuchResourceRecordSet", f"{row['record_type']} {row['name']} vanished after "
                         f"{action}", "route53.change_resource_record_sets")

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """CREATE the record set (an alias record when ``alias_target_id`` is set) in its zone;
        returns its record. Raises engine.aws.CloudError."""
        return await self._upsert(mc, row, "CREATE")

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """UPSERT the new values and TTL, or the new alias target; returns the new record. Raises
        engine.aws.CloudError."""
        return await self._upsert(mc, row, "UPSERT")

    async def delete(self, mc: MapperContext, cloud: dict) -> None:
        """DELETE the record set (nothing for the SOA and apex NS). Raises engine.aws.CloudError."""
        if not self.deletable(cloud):
            return
        try:
            await mc.call("route53", REGION, "change_resource_record_sets", HostedZoneId=cloud["_zone"],
                          ChangeBatch={"Changes": [{"Action": "DELETE", "ResourceRecordSet": self._aws_set(cloud)}]})
        except CloudError as e:
            if e.code not in ("NoSuchHostedZone",):
                raise


class AliasTargetMapper(Mapper):
    """``alias_target`` rows <-> the alias part of Route 53 alias records (IaSQL cascades it
    from the record set; here it is a mapper of its own so that a changed
    ``evaluate_target_health`` or ``load_balancer_id`` is pushed).

    The cloud record of an alias record is keyed by the ``alias_target_id`` of the record set's
    row (a new id from the table's sequence when it has none, which the sync inserts: IaSQL's
    ``aliasTargetMapper`` on import). Rows no alias record in the cloud uses are reported as they
    are (database-only, like IaSQL's rows of a cascaded entity), so they are neither created nor
    deleted in the cloud: the record set's CREATE and DELETE do that."""

    table = "alias_target"
    columns = (Col("id", "int", "cloud"), Col("evaluate_target_health", "bool"), Col("load_balancer_id", "int"))
    key = ("id",)
    pk = ("id",)
    cloud_read_uses_db = True

    def describe(self, rec: dict) -> str:
        """``alias target #<id> -> load balancer #<id>``."""
        return f"alias target #{rec.get('id')} -> load balancer #{rec.get('load_balancer_id')}"

    async def read(self, mc: MapperContext) -> list[dict]:
        """The alias targets of the alias records of every zone with a row, then the rows no such
        record uses. Raises engine.aws.CloudError."""
        ac = await AliasContext.load(mc)
        out: dict = {}
        for zone, row_id, _, r in await _record_sets(mc):
            if r.get("AliasTarget") and (at := await ac.resolve(mc, r, zone, row_id)) is not None:
                out.setdefault(at["id"], at)
        for i, (lb, eth) in ac.targets.items():
            out.setdefault(i, {"id": i, "load_balancer_id": lb, "evaluate_target_health": eth, "_db_only": True})
        return list(out.values())

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """Nothing in the cloud (the record set's CREATE makes the alias): returns the row."""
        return {c.name: row.get(c.name) for c in self.columns}

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """UPSERT every alias record whose row uses this alias target with the new load balancer
        and evaluate_target_health; returns the new record. Raises engine.aws.CloudError."""
        rows = {(z, domain(n), t) for n, t, z in await mc.fetchall(
            "SELECT r.name, r.record_type::text, z.hosted_zone_id FROM public.resource_record_set r "
            "JOIN public.hosted_zone z ON z.id = r.parent_hosted_zone_id "
            "WHERE r.alias_target_id = $1 AND z.hosted_zone_id IS NOT NULL", (row["id"],))}
        # only the alias records that exist (a new record set using it is the record set's CREATE)
        found = [(zone, r["Name"], r["Type"]) for zone, _, _, r in await _record_sets(mc)
                 if r.get("AliasTarget") and (zone, domain(r["Name"]), r["Type"]) in rows]
        if found:
            alias = await _aws_alias(mc, row["load_balancer_id"], row["evaluate_target_health"])
            for zone, name, rtype in found:
                await mc.call("route53", REGION, "change_resource_record_sets", HostedZoneId=zone,
                              ChangeBatch={"Changes": [{"Action": "UPSERT", "ResourceRecordSet": {
                                  "Name": name, "Type": rtype, "AliasTarget": alias}}]})
        return {c.name: row.get(c.name) for c in self.columns}

    async def delete(self, mc: MapperContext, cloud: dict) -> None:
        """Nothing in the cloud: the record set's DELETE removes the alias."""
        return


MODULE = Module(
    name="aws_route53",
    version=VERSION,
    dependencies=("aws_account", "aws_elb"),  # as IaSQL's module.json
    install_sql=(
        """CREATE TABLE public.alias_target (
             id serial PRIMARY KEY,
             evaluate_target_health boolean NOT NULL DEFAULT true,
             load_balancer_id integer,
             CONSTRAINT "FK_4c791487240505a79afaad2a41c" FOREIGN KEY (load_balancer_id)
               REFERENCES public.load_balancer (id))""",
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
    # alias_target after hosted_zone: its cloud read needs the zones' rows (the sync inserts them first)
    mappers=(HostedZoneMapper(), AliasTargetMapper(), ResourceRecordSetMapper()),
    description="Route 53 hosted zones and record sets, alias records to load balancers included",
)
