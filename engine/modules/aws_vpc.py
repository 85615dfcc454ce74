"""Module ``aws_vpc``: VPCs, subnets, DHCP options, network ACLs, gateways, elastic IPs, route tables,
routes, peering connections and endpoints.

Tables, columns, types, enums, keys, defaults and constraints follow IaSQL v0.1's ``aws_vpc``
migration (``src/modules/aws_vpc/migration/1680099851511-aws_vpc.ts``); what each mapper reads,
compares, updates in place or replaces follows ``src/modules/aws_vpc/mappers/*.ts``. Tables, in
dependency order:

- ``availability_zone(name, region)``: AWS's zones of the enabled regions, read-only (IaSQL turns
  an insert or a delete back; here a new zone is refused and a deleted row comes back at sync).
- ``vpc``: cloud id ``vpc_id``. A ``cidr_block`` change replaces the VPC; tags and the three DNS /
  metrics attributes are updated in place. The default VPC cannot be deleted (deleting its row
  plans nothing; the sync restores it) and its attributes are not compared, as in IaSQL.
- ``subnet``: cloud id ``subnet_id``; any change to ``cidr_block``, ``availability_zone`` or
  ``vpc_id`` replaces it. Subnets of the default VPC are not deleted (as in IaSQL).
- ``internet_gateway``: attached to ``vpc_id`` (or none); re-attached and re-tagged in place.
- ``route_table``: cloud id ``route_table_id``; a ``vpc_id`` change replaces it, its routes are
  created again on the replacement. A VPC's main route table is not deleted (AWS refuses).
- ``route_table_association``: explicit subnet associations and each VPC's main association.
  A new ``route_table_id`` is an in-place ``replace_route_table_association``; a new subnet or
  VPC replaces it. The main association comes with the VPC: it cannot be inserted or deleted,
  only pointed at another route table of its VPC.
- ``route``: identified by (``route_table_id``, ``destination``, ``region``) as IaSQL's
  ``entityId``; any change replaces it. The ``local`` route is AWS's, as are the routes of the
  default VPC's main route table: deleting their rows plans nothing. The gateway columns hold AWS
  ids (``igw-...``), as in IaSQL, so a route to a gateway made in the same commit cannot be
  written before that gateway exists: commit the gateway first.
- ``elastic_ip``, ``nat_gateway`` (tags in place, anything else replaces), ``endpoint_gateway``
  (route tables and policy in place through ``modify_vpc_endpoint``; a new ``service`` or
  ``vpc_id`` replaces it; a NULL ``route_table_ids`` / ``policy`` means AWS's choice, which the
  sync writes back).

- ``dhcp_options`` (before ``vpc``): every DHCP option set (AWS's default one too); tags in place,
  ``dhcp_configurations`` is restorable (AWS cannot change it: not compared, the sync writes the
  cloud's back). ``vpc.dhcp_options_id`` (NULL: AWS's ``default``, no options) is associated after
  the VPC is created and on update (``VpcDhcpOptionsMapper``).
- ``network_acl`` (before ``subnet``): the non-default ACLs of VPCs with a row; a new VPC replaces,
  ``entries`` and tags in place. ``subnet.network_acl_id`` (NULL: the VPC's default ACL) is set
  after the subnet is created and moved in place (``SubnetNetworkAclMapper``).
- ``peering_connection`` (no ``region``: the requester's): requested, accepted, routed both ways;
  a new requester or accepter replaces, tags in place.
- ``endpoint_interface`` and its join table ``endpoint_interface_subnets`` (IaSQL has no security
  group join table for it): a new service or VPC replaces; policy, tags and subnets in place;
  ``private_dns_enabled`` and ``dns_name_record_type`` are restorable (taken at create).

These four follow IaSQL's ``mappers/dhcp_options.ts``, ``network_acl.ts``, ``peering_connection.ts``
and ``endpoint_interface.ts``; their DDL and the two foreign keys are ``MORE_INSTALL_SQL``.

Tags are ``json`` objects; an AWS resource without tags reads as NULL (``{}`` and NULL compare
equal).

A replace deletes before it creates (``engine.core.plan``): AWS refuses to delete a VPC that still
has subnets or route tables besides its main one, and a route table that still has subnet
associations (DependencyViolation), so such a replace fails and the commit is reverted; delete or
move those first. Rows whose parent row is gone (a subnet of a VPC row deleted in the same commit)
are still read, as ``_orphan`` records: the commit deletes them in the cloud, the sync never
inserts them. ``route_table_association`` has no ``region`` column (as in IaSQL): the sync of a
region that is not enabled leaves its VPCs alone but deletes their association rows.

moto (5.2.5, the tests' cloud) answers every call used here: describe/create/delete_vpc,
describe/modify_vpc_attribute, create/delete/describe_subnets, create/attach/detach/delete/
describe_internet_gateways, allocate/release/describe_addresses, create/delete/describe_route_tables,
create/delete_route, associate/disassociate/replace_route_table_association,
create/delete/describe_nat_gateways, create/modify/delete/describe_vpc_endpoints,
describe_availability_zones, create_tags/delete_tags, create/describe/delete/associate_dhcp_options,
create/describe/delete_network_acl(s), create/delete_network_acl_entry, replace_network_acl_association,
create/accept/describe/delete_vpc_peering_connection(s) (across regions too). Where it differs from
AWS: it creates no internet gateway for the default VPC (so ``internet_gateway`` starts empty
against moto) and no DHCP options (its VPCs read ``default``: ``dhcp_options`` starts empty),
``create_dhcp_options`` ignores ``TagSpecifications`` (the create tags the set afterwards),
interface endpoints keep no ``DnsOptions`` (``dns_name_record_type`` reads NULL), its NAT
gateways and VPCs are ``available`` at once (the creates wait for ``available`` all the same),
deleted NAT gateways and endpoints stay listed in state ``deleted`` (never read into the tables),
and ``replace_route_table_association`` keeps the association id where AWS issues a new one (the
engine writes back whichever id the call returns).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from typing import Any

from engine.aws import CloudError
from engine.modules.aws_account import VERSION
from engine.modules.base import (
    Col,
    Mapper,
    MapperContext,
    Module,
    json_or_text,
    normalize,
)

#: How often and how long (seconds) a create waits for a resource to leave ``pending``.
WAIT_TRIES, WAIT_DELAY = 30, 1.0


# -- helpers ------------------------------------------------------------------------------------------
def tags_from_aws(tags: list | None) -> dict | None:
    """AWS ``[{"Key", "Value"}]`` as a dict, or None when there are none."""
    out = {t["Key"]: t.get("Value", "") for t in tags or () if "Key" in t}
    return out or None


def _tags_value(value: Any) -> dict | None:
    """A ``tags`` column value (json text or dict) as a dict of strings (AWS keeps tag values as
    text), None when empty."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {"": value}
    if not isinstance(value, dict):
        return {"": json.dumps(value)} if value else None
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in value.items()} or None


def tag_specifications(resource_type: str, tags: Any) -> dict:
    """``TagSpecifications`` keyword for a create call (empty dict when there are no tags)."""
    t = _tags_value(tags)
    if not t:
        return {}
    return {"TagSpecifications": [{"ResourceType": resource_type,
                                   "Tags": [{"Key": str(k), "Value": str(v)} for k, v in t.items()]}]}


async def set_tags(mc: MapperContext, region: str, resource_id: str, want: Any, have: Any) -> None:
    """Make ``resource_id``'s tags ``want`` (from ``have``): delete the keys that go or change,
    create the new ones. Raises engine.aws.CloudError. Follows IaSQL's ``updateTags``."""
    want_t, have_t = _tags_value(want) or {}, _tags_value(have) or {}
    gone = [k for k in have_t if k not in want_t or str(want_t[k]) != str(have_t[k])]
    if gone:
        await mc.call("ec2", region, "delete_tags", Resources=[resource_id], Tags=[{"Key": k} for k in gone])
    new = {k: v for k, v in want_t.items() if k not in have_t or str(have_t[k]) != str(v)}
    if new:
        await mc.call("ec2", region, "create_tags", Resources=[resource_id],
                      Tags=[{"Key": str(k), "Value": str(v)} for k, v in new.items()])


async def id_maps(mc: MapperContext, table: str, cloud_col: str) -> tuple[dict, dict]:
    """``({(region, cloud id): db id}, {db id: (region, cloud id)})`` for the rows of ``table``
    (any table with ``id`` and ``region`` columns, e.g. aws_ec2's too) that have a cloud id. Raises
    SqlError on a failed read."""
    rows = await mc.fetchall(f'SELECT id, "{cloud_col}", region FROM public."{table}" WHERE "{cloud_col}" IS NOT NULL')
    return {(r, c): i for i, c, r in rows}, {i: (r, c) for i, c, r in rows}


async def _default_vpc_ids(mc: MapperContext) -> set:
    """Database ids of the default VPCs."""
    return {r[0] for r in await mc.fetchall("SELECT id FROM public.vpc WHERE is_default")}


def missing_dependency(what: str, ref: Any, op: str) -> CloudError:
    """The CloudError (DependencyViolation) for ``what`` #``ref`` that has no cloud id yet, raised
    by a create that needs it; the commit's next pass retries after the parent is created."""
    return CloudError("DependencyViolation", f"{what} #{ref} is not created in the cloud yet", op)


async def _cloud_id(mc: MapperContext, table: str, cloud_col: str, db_id: Any, op: str) -> tuple[str, str]:
    """(region, cloud id) of row ``db_id`` of ``table``; raises CloudError DependencyViolation
    while that row has no cloud id."""
    _, by_db = await id_maps(mc, table, cloud_col)
    got = by_db.get(db_id)
    if got is None:
        raise missing_dependency(table, db_id, op)
    return got


class VpcModuleMapper(Mapper):
    """Shared comparison rules of this module's mappers: ``tags`` compare as dicts ({} == NULL)
    and the columns in ``optional`` are compared only when the row sets them (NULL = AWS's
    choice, written back by the sync)."""

    optional: tuple[str, ...] = ()
    cloud_read_uses_db = True

    @staticmethod
    def _same(c: Col, a: Any, b: Any) -> bool:
        if c.name == "tags":
            return _tags_value(a) == _tags_value(b)
        return normalize(c.kind, a) == normalize(c.kind, b)

    def compared(self, row: dict, cloud: dict) -> list[Col]:
        """The user columns ``equals`` compares for this row/cloud pair."""
        return [c for c in self.user_cols if not (c.name in self.optional and row.get(c.name) is None)]

    def equals(self, row: dict, cloud: dict) -> bool:
        """True when the row's desired state matches the cloud record."""
        return all(self._same(c, row.get(c.name), cloud.get(c.name)) for c in self.compared(row, cloud))

    def synced_equals(self, row: dict, cloud: dict) -> bool:
        """True when writing ``cloud`` back into ``row`` would change nothing."""
        return all(self._same(c, row.get(c.name), cloud.get(c.name)) for c in self.synced_cols)

    def differs(self, row: dict, cloud: dict, names: tuple[str, ...]) -> bool:
        """True when any of the columns ``names`` differ between row and cloud."""
        return any(not self._same(self.col(n), row.get(n), cloud.get(n)) for n in names)

    async def _records(self, mc: MapperContext, region: str, **filters: Any) -> list[dict]:
        """The cloud records of one region (``filters``: the describe call's, e.g. ids)."""
        raise NotImplementedError

    async def _get(self, mc: MapperContext, region: str, cloud_id: str) -> dict:
        """The record of one resource (``_records`` filtered by its id)."""
        raise NotImplementedError

    async def _get_or_undo(self, mc: MapperContext, region: str, cloud_id: str, id_col: str,
                           delete_op: str, id_arg: str) -> dict:
        """The record of ``cloud_id``, just created; when reading it fails the resource is deleted
        again (``ec2.<delete_op>(<id_arg>=cloud_id)``), and when even that fails ``{id_col: cloud_id,
        "region": region}`` is set as ``left`` on the CloudError re-raised, for the engine's
        journal (``Mapper.create``). Raises engine.aws.CloudError."""
        try:
            return await self._get(mc, region, cloud_id)
        except CloudError as e:
            try:
                await mc.call("ec2", region, delete_op, **{id_arg: cloud_id})
            except CloudError:
                e.left = {id_col: cloud_id, "region": region}
            raise

    async def read(self, mc: MapperContext) -> list[dict]:
        """``_records`` of every enabled region, one region after another (they look up ids in
        the caller's database, over one connection). Raises engine.aws.CloudError."""
        out: list[dict] = []
        for region in mc.regions:
            out += await self._records(mc, region)
        return out


# -- availability_zone -----------------------------------------------------------------------------------
class AvailabilityZoneMapper(VpcModuleMapper):
    """``availability_zone`` rows <-> the available zones of each enabled region (read-only).
    Follows IaSQL's ``mappers/availability_zone.ts``."""

    table = "availability_zone"
    columns = (Col("name"), Col("region"))
    key = ("name",)
    pk = ("name",)
    cloud_read_uses_db = False

    def describe(self, rec: dict) -> str:
        """The plan-row description of ``rec``."""
        return f"availability zone {rec.get('name')} in {rec.get('region')}"

    def deletable(self, cloud: dict) -> bool:
        """Zones are AWS's: a deleted row comes back at sync."""
        return False

    async def read(self, mc: MapperContext) -> list[dict]:
        """The zones of every enabled region. Raises engine.aws.CloudError."""
        out = []
        for region in mc.regions:
            res = await mc.call("ec2", region, "describe_availability_zones")
            out += [{"name": z["ZoneName"], "region": region} for z in res.get("AvailabilityZones", [])
                    if z.get("State", "available") == "available"]
        return out

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """Always raises CloudError: zones cannot be created."""
        raise CloudError("InvalidParameterValue", f"availability zone {row.get('name')} does not exist in "
                         f"{row.get('region')}: zones are AWS's and cannot be created", "ec2.availability_zone")

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """Always raises CloudError: zones cannot change."""
        raise CloudError("InvalidParameterValue", "availability zones cannot be changed", "ec2.availability_zone")

    async def delete(self, mc: MapperContext, cloud: dict) -> None:
        """Nothing (never planned: ``deletable`` is False)."""


# -- vpc -------------------------------------------------------------------------------------------------
_VPC_ATTRS = (("enable_dns_hostnames", "enableDnsHostnames", "EnableDnsHostnames"),
              ("enable_dns_support", "enableDnsSupport", "EnableDnsSupport"),
              ("enable_network_address_usage_metrics", "enableNetworkAddressUsageMetrics",
               "EnableNetworkAddressUsageMetrics"))


class VpcMapper(VpcModuleMapper):
    """``vpc`` rows <-> EC2 VPCs of the enabled regions. Follows IaSQL's ``mappers/vpc.ts``:
    ``cidr_block`` replaces, tags and attributes update, the default VPC is never deleted."""

    table = "vpc"
    columns = (Col("id", "int", "pk"), Col("vpc_id", "text", "cloud"), Col("cidr_block"),
               Col("state", "text", "cloud"), Col("is_default", "bool", "cloud"),
               Col("enable_dns_hostnames", "bool"), Col("enable_dns_support", "bool"),
               Col("enable_network_address_usage_metrics", "bool"), Col("tags", "json"), Col("region"))
    key = ("vpc_id",)
    pk = ("id",)
    cloud_read_uses_db = False

    def describe(self, rec: dict) -> str:
        """The plan-row description of ``rec``."""
        default = " (default)" if rec.get("is_default") else ""
        return f"VPC {rec.get('cidr_block')} ({rec.get('vpc_id') or 'new'}){default} in {rec.get('region')}"

    def compared(self, row: dict, cloud: dict) -> list[Col]:
        """The default VPC's attributes are not compared (IaSQL reads them as false)."""
        cols = super().compared(row, cloud)
        if cloud.get("is_default"):
            cols = [c for c in cols if c.name not in {a[0] for a in _VPC_ATTRS}]
        return cols

    def needs_replace(self, row: dict, cloud: dict) -> bool:
        """A new ``cidr_block`` (or region) needs a new VPC."""
        return self.differs(row, cloud, ("cidr_block", "region"))

    def deletable(self, cloud: dict) -> bool:
        """The default VPC is never deleted."""
        return not cloud.get("is_default")

    async def _record(self, mc: MapperContext, v: dict, region: str) -> dict:
        rec = {"vpc_id": v["VpcId"], "cidr_block": v.get("CidrBlock"), "state": v.get("State"),
               "is_default": bool(v.get("IsDefault")), "tags": tags_from_aws(v.get("Tags")), "region": region}
        for col, attr, field in _VPC_ATTRS:
            if rec["is_default"]:
                rec[col] = False
                continue
            res = await mc.call("ec2", region, "describe_vpc_attribute", VpcId=v["VpcId"], Attribute=attr)
            rec[col] = bool((res.get(field) or {}).get("Value", False))
        return rec

    async def read(self, mc: MapperContext) -> list[dict]:
        """Every VPC of the enabled regions. Raises engine.aws.CloudError."""
        out = []
        for region in mc.regions:
            for v in await mc.paginate("ec2", region, "describe_vpcs", "Vpcs"):
                if v.get("VpcId") and v.get("CidrBlock"):
                    out.append(await self._record(mc, v, region))
        return out

    async def _set_attributes(self, mc: MapperContext, region: str, vpc_id: str, row: dict, cloud: dict) -> None:
        for col, _, field in _VPC_ATTRS:
            if row.get(col) is not None and bool(row[col]) != bool(cloud.get(col)):
                await mc.call("ec2", region, "modify_vpc_attribute", VpcId=vpc_id, **{field: {"Value": bool(row[col])}})

    async def _get(self, mc: MapperContext, region: str, vpc_id: str) -> dict:
        for _ in range(WAIT_TRIES):
            res = await mc.call("ec2", region, "describe_vpcs", VpcIds=[vpc_id])
            v = res["Vpcs"][0]
            if v.get("State") != "pending":
                return v
            await asyncio.sleep(WAIT_DELAY)
        return v

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """Create the VPC, set its attributes as the row says; returns its record. A failure
        after the create deletes it again (or sets ``left``). Raises engine.aws.CloudError."""
        region = row.get("region") or mc.default_region
        res = await mc.call("ec2", region, "create_vpc", CidrBlock=row["cidr_block"],
                            **tag_specifications("vpc", row.get("tags")))
        vpc_id = res["Vpc"]["VpcId"]
        try:
            first = await self._record(mc, await self._get(mc, region, vpc_id), region)
            await self._set_attributes(mc, region, vpc_id, row, first)
            return await self._record(mc, await self._get(mc, region, vpc_id), region)
        except CloudError as e:
            try:
                await mc.call("ec2", region, "delete_vpc", VpcId=vpc_id)
            except CloudError:
                e.left = {"vpc_id": vpc_id, "region": region, "cidr_block": row["cidr_block"]}
            raise

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """Tags and attributes in place; returns the new record. Raises engine.aws.CloudError."""
        region, vpc_id = cloud["region"], cloud["vpc_id"]
        if not self._same(self.col("tags"), row.get("tags"), cloud.get("tags")):
            await set_tags(mc, region, vpc_id, row.get("tags"), cloud.get("tags"))
        if not cloud.get("is_default"):
            await self._set_attributes(mc, region, vpc_id, row, cloud)
        return await self._record(mc, await self._get(mc, region, vpc_id), region)

    async def delete(self, mc: MapperContext, cloud: dict) -> None:
        """Delete the VPC (AWS refuses while subnets or extra route tables remain: DependencyViolation).
        The default VPC is left alone. Raises engine.aws.CloudError."""
        if cloud.get("is_default"):
            return
        await mc.call("ec2", cloud["region"], "delete_vpc", VpcId=cloud["vpc_id"])


# -- subnet ----------------------------------------------------------------------------------------------
class SubnetMapper(VpcModuleMapper):
    """``subnet`` rows <-> EC2 subnets whose VPC has a row. Follows IaSQL's ``mappers/subnet.ts``:
    any change replaces; subnets of the default VPC are never deleted."""

    table = "subnet"
    columns = (Col("id", "int", "pk"), Col("state", "text", "cloud"), Col("available_ip_address_count", "int", "cloud"),
               Col("cidr_block"), Col("subnet_id", "text", "cloud"), Col("owner_id", "text", "cloud"),
               Col("subnet_arn", "text", "cloud"), Col("region"), Col("availability_zone"), Col("vpc_id", "int"))
    key = ("subnet_id",)
    pk = ("id",)

    def describe(self, rec: dict) -> str:
        """The plan-row description of ``rec``."""
        return (f"subnet {rec.get('cidr_block')} ({rec.get('subnet_id') or 'new'}) in {rec.get('availability_zone')} "
                f"of VPC #{rec.get('vpc_id')}")

    def needs_replace(self, row: dict, cloud: dict) -> bool:
        """Subnets cannot change: any difference replaces."""
        return True

    def deletable(self, cloud: dict) -> bool:
        """Subnets of the default VPC are never deleted (as IaSQL)."""
        return not cloud.get("_default_vpc")

    @staticmethod
    def _record(s: dict, region: str, vpc: int | None, default: bool) -> dict:
        return {"state": s.get("State"), "available_ip_address_count": s.get("AvailableIpAddressCount"),
                "cidr_block": s.get("CidrBlock"), "subnet_id": s["SubnetId"], "owner_id": s.get("OwnerId"),
                "subnet_arn": s.get("SubnetArn"), "region": region, "availability_zone": s.get("AvailabilityZone"),
                "vpc_id": vpc, "_default_vpc": default or bool(s.get("DefaultForAz")), "_orphan": vpc is None}

    async def read(self, mc: MapperContext) -> list[dict]:
        """Every subnet of the enabled regions (``_orphan`` when its VPC has no row). Raises
        engine.aws.CloudError."""
        vpcs, _ = await id_maps(mc, "vpc", "vpc_id")
        defaults = await _default_vpc_ids(mc)
        out = []
        for region in mc.regions:
            for s in await mc.paginate("ec2", region, "describe_subnets", "Subnets"):
                vpc = vpcs.get((region, s.get("VpcId")))
                if s.get("SubnetId") and s.get("AvailabilityZone"):
                    out.append(self._record(s, region, vpc, vpc in defaults))
        return out

    async def _get(self, mc: MapperContext, region: str, subnet_id: str) -> dict:
        vpcs, _ = await id_maps(mc, "vpc", "vpc_id")
        defaults = await _default_vpc_ids(mc)
        for _ in range(WAIT_TRIES):
            s = (await mc.call("ec2", region, "describe_subnets", SubnetIds=[subnet_id]))["Subnets"][0]
            if s.get("State") != "pending":
                break
            await asyncio.sleep(WAIT_DELAY)
        vpc = vpcs.get((region, s.get("VpcId")))
        return self._record(s, region, vpc, vpc in defaults)

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """Create the subnet in the row's VPC and zone; returns its record. Raises engine.aws.CloudError."""
        region, vpc_id = await _cloud_id(mc, "vpc", "vpc_id", row.get("vpc_id"), "ec2.create_subnet")
        if not row.get("cidr_block"):
            raise CloudError("MissingParameter", "a subnet needs a cidr_block", "ec2.create_subnet")
        res = await mc.call("ec2", region, "create_subnet", VpcId=vpc_id, CidrBlock=row["cidr_block"],
                            AvailabilityZone=row["availability_zone"])
        sid = res["Subnet"]["SubnetId"]
        return await self._get_or_undo(mc, region, sid, "subnet_id", "delete_subnet", "SubnetId")

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """Never called (subnets are replaced); raises CloudError."""
        raise CloudError("Unsupported", "subnets are replaced, not updated", "ec2.update")

    async def delete(self, mc: MapperContext, cloud: dict) -> None:
        """Delete the subnet (not one of the default VPC). Raises engine.aws.CloudError."""
        if cloud.get("_default_vpc"):
            return
        await mc.call("ec2", cloud["region"], "delete_subnet", SubnetId=cloud["subnet_id"])


# -- internet_gateway -----------------------------------------------------------------------------------------
class InternetGatewayMapper(VpcModuleMapper):
    """``internet_gateway`` rows <-> internet gateways (attached to a VPC with a row, or to none).
    Follows IaSQL's ``mappers/internet_gateway.ts``: the attachment and tags change in place; the
    default VPC's gateway is never deleted."""

    table = "internet_gateway"
    columns = (Col("id", "int", "pk"), Col("internet_gateway_id", "text", "cloud"), Col("tags", "json"),
               Col("region"), Col("vpc_id", "int"))
    key = ("internet_gateway_id",)
    pk = ("id",)

    def describe(self, rec: dict) -> str:
        """The plan-row description of ``rec``."""
        where = f"attached to VPC #{rec['vpc_id']}" if rec.get("vpc_id") is not None else "detached"
        return f"internet gateway {rec.get('internet_gateway_id') or 'new'} {where} in {rec.get('region')}"

    def needs_replace(self, row: dict, cloud: dict) -> bool:
        """A new region needs a new gateway; everything else is updated."""
        return self.differs(row, cloud, ("region",))

    def deletable(self, cloud: dict) -> bool:
        """The default VPC's gateway is never deleted (as IaSQL)."""
        return not cloud.get("_default_vpc")

    async def _records(self, mc: MapperContext, region: str, **filters: Any) -> list[dict]:
        vpcs, _ = await id_maps(mc, "vpc", "vpc_id")
        defaults = await _default_vpc_ids(mc)
        out = []
        for g in await mc.paginate("ec2", region, "describe_internet_gateways", "InternetGateways", **filters):
            attached = [a["VpcId"] for a in g.get("Attachments") or () if a.get("State") in ("available", "attached")]
            vpc = vpcs.get((region, attached[0])) if attached else None
            out.append({"internet_gateway_id": g["InternetGatewayId"], "tags": tags_from_aws(g.get("Tags")),
                        "region": region, "vpc_id": vpc, "_vpc": attached[0] if attached else None,
                        "_default_vpc": vpc in defaults, "_orphan": bool(attached) and vpc is None})
        return out


    async def _get(self, mc: MapperContext, region: str, igw: str) -> dict:
        return (await self._records(mc, region, InternetGatewayIds=[igw]))[0]

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """Create the gateway and attach it to the row's VPC; returns its record. Raises engine.aws.CloudError."""
        region = row.get("region") or mc.default_region
        vpc = None
        if row.get("vpc_id") is not None:
            region, vpc = await _cloud_id(mc, "vpc", "vpc_id", row["vpc_id"], "ec2.attach_internet_gateway")
        res = await mc.call("ec2", region, "create_internet_gateway",
                            **tag_specifications("internet-gateway", row.get("tags")))
        igw = res["InternetGateway"]["InternetGatewayId"]
        try:
            if vpc is not None:
                await mc.call("ec2", region, "attach_internet_gateway", InternetGatewayId=igw, VpcId=vpc)
            return await self._get(mc, region, igw)
        except CloudError as e:
            try:
                await mc.call("ec2", region, "delete_internet_gateway", InternetGatewayId=igw)
            except CloudError:
                e.left = {"internet_gateway_id": igw, "region": region, "_vpc": vpc}
            raise

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """Re-attach and re-tag in place; returns the new record. Raises engine.aws.CloudError."""
        region, igw = cloud["region"], cloud["internet_gateway_id"]
        if self.differs(row, cloud, ("vpc_id",)):
            new = None
            if row.get("vpc_id") is not None:
                _, new = await _cloud_id(mc, "vpc", "vpc_id", row["vpc_id"], "ec2.attach_internet_gateway")
            if cloud.get("_vpc"):
                await mc.call("ec2", region, "detach_internet_gateway", InternetGatewayId=igw, VpcId=cloud["_vpc"])
            if new is not None:
                await mc.call("ec2", region, "attach_internet_gateway", InternetGatewayId=igw, VpcId=new)
        if not self._same(self.col("tags"), row.get("tags"), cloud.get("tags")):
            await set_tags(mc, region, igw, row.get("tags"), cloud.get("tags"))
        return await self._get(mc, region, igw)

    async def delete(self, mc: MapperContext, cloud: dict) -> None:
        """Detach and delete the gateway (never the default VPC's). Raises engine.aws.CloudError."""
        if cloud.get("_default_vpc"):
            return
        region, igw = cloud["region"], cloud["internet_gateway_id"]
        if cloud.get("_vpc"):
            await mc.call("ec2", region, "detach_internet_gateway", InternetGatewayId=igw, VpcId=cloud["_vpc"])
        await mc.call("ec2", region, "delete_internet_gateway", InternetGatewayId=igw)


# -- elastic_ip -------------------------------------------------------------------------------------------------
class ElasticIpMapper(VpcModuleMapper):
    """``elastic_ip`` rows <-> VPC elastic IP allocations. Follows IaSQL's ``mappers/elastic_ip.ts``:
    tags change in place."""

    table = "elastic_ip"
    columns = (Col("id", "int", "pk"), Col("allocation_id", "text", "cloud"), Col("public_ip", "text", "cloud"),
               Col("tags", "json"), Col("region"))
    key = ("allocation_id",)
    pk = ("id",)
    cloud_read_uses_db = False

    def describe(self, rec: dict) -> str:
        """The plan-row description of ``rec``."""
        return f"elastic IP {rec.get('public_ip') or 'new'} ({rec.get('allocation_id') or 'new'}) in {rec.get('region')}"

    def needs_replace(self, row: dict, cloud: dict) -> bool:
        """A new region needs a new address."""
        return self.differs(row, cloud, ("region",))

    @staticmethod
    def _record(a: dict, region: str) -> dict:
        return {"allocation_id": a["AllocationId"], "public_ip": a.get("PublicIp"),
                "tags": tags_from_aws(a.get("Tags")), "region": region}

    async def read(self, mc: MapperContext) -> list[dict]:
        """Every VPC address of the enabled regions. Raises engine.aws.CloudError."""
        out = []
        for region in mc.regions:
            res = await mc.call("ec2", region, "describe_addresses")
            out += [self._record(a, region) for a in res.get("Addresses", []) if a.get("AllocationId")]
        return out

    async def _get(self, mc: MapperContext, region: str, alloc: str) -> dict:
        res = await mc.call("ec2", region, "describe_addresses", AllocationIds=[alloc])
        return self._record(res["Addresses"][0], region)

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """Allocate an address; returns its record. Raises engine.aws.CloudError."""
        region = row.get("region") or mc.default_region
        res = await mc.call("ec2", region, "allocate_address", Domain="vpc",
                            **tag_specifications("elastic-ip", row.get("tags")))
        try:
            return await self._get(mc, region, res["AllocationId"])
        except CloudError as e:
            try:
                await mc.call("ec2", region, "release_address", AllocationId=res["AllocationId"])
            except CloudError:
                e.left = {"allocation_id": res["AllocationId"], "region": region}
            raise

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """Re-tag; returns the new record. Raises engine.aws.CloudError."""
        await set_tags(mc, cloud["region"], cloud["allocation_id"], row.get("tags"), cloud.get("tags"))
        return await self._get(mc, cloud["region"], cloud["allocation_id"])

    async def delete(self, mc: MapperContext, cloud: dict) -> None:
        """Release the address. Raises engine.aws.CloudError."""
        await mc.call("ec2", cloud["region"], "release_address", AllocationId=cloud["allocation_id"])


# -- route_table -------------------------------------------------------------------------------------------------
async def _route_tables(mc: MapperContext, region: str, **filters: Any) -> list[dict]:
    return await mc.paginate("ec2", region, "describe_route_tables", "RouteTables", **filters)


def _is_main(rt: dict) -> bool:
    return any(a.get("Main") for a in rt.get("Associations") or ())


class RouteTableMapper(VpcModuleMapper):
    """``route_table`` rows <-> route tables of VPCs with a row. Follows IaSQL's
    ``mappers/route_table.ts``: a new ``vpc_id`` replaces (the routes are created again on the
    replacement), tags change in place, a main route table is never deleted."""

    table = "route_table"
    columns = (Col("id", "int", "pk"), Col("route_table_id", "text", "cloud"), Col("tags", "json"), Col("region"),
               Col("vpc_id", "int"))
    key = ("route_table_id",)
    pk = ("id",)
    children = (("route", "route_table_id"),)

    def describe(self, rec: dict) -> str:
        """The plan-row description of ``rec``."""
        main = " (main)" if rec.get("_main") else ""
        return f"route table {rec.get('route_table_id') or 'new'}{main} of VPC #{rec.get('vpc_id')} in {rec.get('region')}"

    def needs_replace(self, row: dict, cloud: dict) -> bool:
        """A route table cannot move to another VPC."""
        return self.differs(row, cloud, ("vpc_id", "region"))

    def deletable(self, cloud: dict) -> bool:
        """A VPC's main route table goes with the VPC only."""
        return not cloud.get("_main")

    async def _records(self, mc: MapperContext, region: str, **filters: Any) -> list[dict]:
        vpcs, _ = await id_maps(mc, "vpc", "vpc_id")
        out = []
        for rt in await _route_tables(mc, region, **filters):
            vpc = vpcs.get((region, rt.get("VpcId")))
            out.append({"route_table_id": rt["RouteTableId"], "tags": tags_from_aws(rt.get("Tags")),
                        "region": region, "vpc_id": vpc, "_main": _is_main(rt), "_orphan": vpc is None})
        return out


    async def create(self, mc: MapperContext, row: dict) -> dict:
        """Create the route table in the row's VPC; returns its record. Raises engine.aws.CloudError."""
        region, vpc = await _cloud_id(mc, "vpc", "vpc_id", row.get("vpc_id"), "ec2.create_route_table")
        res = await mc.call("ec2", region, "create_route_table", VpcId=vpc,
                            **tag_specifications("route-table", row.get("tags")))
        rtb = res["RouteTable"]["RouteTableId"]
        try:
            return (await self._records(mc, region, RouteTableIds=[rtb]))[0]
        except CloudError as e:
            try:
                await mc.call("ec2", region, "delete_route_table", RouteTableId=rtb)
            except CloudError:
                e.left = {"route_table_id": rtb, "region": region}
            raise

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """Re-tag; returns the new record. Raises engine.aws.CloudError."""
        await set_tags(mc, cloud["region"], cloud["route_table_id"], row.get("tags"), cloud.get("tags"))
        return (await self._records(mc, cloud["region"], RouteTableIds=[cloud["route_table_id"]]))[0]

    async def delete(self, mc: MapperContext, cloud: dict) -> None:
        """Delete the route table (gone already is fine). Raises engine.aws.CloudError."""
        if cloud.get("_main"):
            return
        try:
            await mc.call("ec2", cloud["region"], "delete_route_table", RouteTableId=cloud["route_table_id"])
        except CloudError as e:
            if e.code != "InvalidRouteTableID.NotFound":
                raise


# -- route_table_association ------------------------------------------------------------------------------------------
class RouteTableAssociationMapper(VpcModuleMapper):
    """``route_table_association`` rows <-> subnet and main associations of route tables with a
    row. Follows IaSQL's ``mappers/route_table_association.ts``: a new ``route_table_id`` is
    ``replace_route_table_association`` (in place), a new subnet or VPC replaces it, the main
    association can be neither created nor deleted."""

    table = "route_table_association"
    columns = (Col("id", "int", "pk"), Col("route_table_association_id", "text", "cloud"), Col("is_main", "bool"),
               Col("route_table_id", "int"), Col("subnet_id", "int"), Col("vpc_id", "int"))
    key = ("route_table_association_id",)
    pk = ("id",)

    def describe(self, rec: dict) -> str:
        """The plan-row description of ``rec``."""
        what = "main association" if rec.get("is_main") else f"association of subnet #{rec.get('subnet_id')}"
        return (f"{what} {rec.get('route_table_association_id') or 'new'} with route table "
                f"#{rec.get('route_table_id')} in VPC #{rec.get('vpc_id')}")

    def needs_replace(self, row: dict, cloud: dict) -> bool:
        """Another subnet, VPC or main flag needs a new association."""
        return self.differs(row, cloud, ("subnet_id", "vpc_id", "is_main"))

    def deletable(self, cloud: dict) -> bool:
        """The main association goes with the VPC only."""
        return not cloud.get("is_main")

    async def _records(self, mc: MapperContext, region: str, **filters: Any) -> list[dict]:
        vpcs, _ = await id_maps(mc, "vpc", "vpc_id")
        rts, _ = await id_maps(mc, "route_table", "route_table_id")
        subnets, _ = await id_maps(mc, "subnet", "subnet_id")
        out = []
        for rt in await _route_tables(mc, region, **filters):
            vpc, table = vpcs.get((region, rt.get("VpcId"))), rts.get((region, rt.get("RouteTableId")))
            for a in rt.get("Associations") or ():
                if (a.get("AssociationState") or {}).get("State", "associated") not in ("associated", "associating"):
                    continue
                if not a.get("SubnetId") and not a.get("Main"):
                    continue  # a gateway (edge) association: not part of IaSQL's table
                subnet = subnets.get((region, a.get("SubnetId"))) if a.get("SubnetId") else None
                orphan = vpc is None or table is None or (bool(a.get("SubnetId")) and subnet is None)
                out.append({"route_table_association_id": a["RouteTableAssociationId"],
                            "is_main": bool(a.get("Main")), "route_table_id": table, "subnet_id": subnet,
                            "vpc_id": vpc, "_region": region, "_orphan": orphan})
        return out


    async def _get(self, mc: MapperContext, region: str, assoc: str) -> dict:
        recs = await self._records(mc, region, Filters=[{"Name": "association.route-table-association-id",
                                                          "Values": [assoc]}])
        for r in recs:
            if r["route_table_association_id"] == assoc:
                return r
        raise CloudError("InvalidAssociationID.NotFound", f"association {assoc} was not found after the call",
                         "ec2.describe_route_tables")

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """Associate the row's subnet with its route table; returns the record. A main
        association cannot be created (it comes with the VPC). Raises engine.aws.CloudError."""
        if row.get("is_main"):
            raise CloudError("Unsupported", "a VPC's main association comes with the VPC and cannot be created: "
                             "update its route_table_id instead", "ec2.associate_route_table")
        region, rtb = await _cloud_id(mc, "route_table", "route_table_id", row.get("route_table_id"),
                                      "ec2.associate_route_table")
        _, subnet = await _cloud_id(mc, "subnet", "subnet_id", row.get("subnet_id"), "ec2.associate_route_table")
        res = await mc.call("ec2", region, "associate_route_table", RouteTableId=rtb, SubnetId=subnet)
        try:
            return await self._get(mc, region, res["AssociationId"])
        except CloudError as e:
            try:
                await mc.call("ec2", region, "disassociate_route_table", AssociationId=res["AssociationId"])
            except CloudError:
                e.left = {"route_table_association_id": res["AssociationId"], "is_main": False, "_region": region}
            raise

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """Point the association at the row's route table; returns the new record. Raises engine.aws.CloudError."""
        region, rtb = await _cloud_id(mc, "route_table", "route_table_id", row.get("route_table_id"),
                                      "ec2.replace_route_table_association")
        res = await mc.call("ec2", region, "replace_route_table_association",
                            AssociationId=cloud["route_table_association_id"], RouteTableId=rtb)
        return await self._get(mc, region, res["NewAssociationId"])

    async def delete(self, mc: MapperContext, cloud: dict) -> None:
        """Disassociate (never the main association). Raises engine.aws.CloudError."""
        if cloud.get("is_main"):
            return
        region = cloud.get("_region") or mc.default_region
        try:
            await mc.call("ec2", region, "disassociate_route_table", AssociationId=cloud["route_table_association_id"])
        except CloudError as e:
            if e.code != "InvalidAssociationID.NotFound":
                raise


# -- route -------------------------------------------------------------------------------------------------------
_TARGETS = (("egress_only_internet_gateway_id", "EgressOnlyInternetGatewayId"), ("gateway_id", "GatewayId"),
            ("instance_id", "InstanceId"), ("nat_gateway_id", "NatGatewayId"),
            ("transit_gateway_id", "TransitGatewayId"), ("local_gateway_id", "LocalGatewayId"),
            ("carrier_gateway_id", "CarrierGatewayId"), ("network_interface_id", "NetworkInterfaceId"),
            ("vpc_peering_connection_id", "VpcPeeringConnectionId"), ("core_network_arn", "CoreNetworkArn"))


def destination_args(destination: str) -> dict:
    """The destination keyword of create_route/delete_route for ``destination`` (a prefix list
    id, an IPv4 or an IPv6 CIDR), as IaSQL's route mapper chooses it."""
    if destination.startswith("pl-"):
        return {"DestinationPrefixListId": destination}
    net = ipaddress.ip_network(destination, strict=False)
    return {"DestinationIpv6CidrBlock" if net.version == 6 else "DestinationCidrBlock": destination}


class RouteMapper(VpcModuleMapper):
    """``route`` rows <-> routes of route tables with a row, identified by (route table,
    destination, region) as IaSQL's ``mappers/route.ts``: any change replaces; the ``local``
    route and the routes of the default VPC's main route table are AWS's and never deleted."""

    table = "route"
    columns = (Col("id", "int", "pk"), Col("destination"), *(Col(c) for c, _ in _TARGETS[:3]),
               Col("instance_owner_id", "text", "cloud"), *(Col(c) for c, _ in _TARGETS[3:]), Col("region"),
               Col("route_table_id", "int"))
    key = ("route_table_id", "destination", "region")
    pk = ("id",)

    def describe(self, rec: dict) -> str:
        """The plan-row description of ``rec``."""
        target = next((rec[c] for c, _ in _TARGETS if rec.get(c)), "nowhere")
        return f"route {rec.get('destination')} -> {target} in route table #{rec.get('route_table_id')}"

    def needs_replace(self, row: dict, cloud: dict) -> bool:
        """Routes are replaced, never updated (as IaSQL)."""
        return True

    def deletable(self, cloud: dict) -> bool:
        """The ``local`` route and the default VPC's main-table routes are never deleted."""
        return cloud.get("gateway_id") != "local" and not cloud.get("_default_main")

    async def _records(self, mc: MapperContext, region: str, **filters: Any) -> list[dict]:
        rts, _ = await id_maps(mc, "route_table", "route_table_id")
        defaults = {r[0] for r in await mc.fetchall("SELECT vpc_id, region FROM public.vpc WHERE is_default")}
        out = []
        for rt in await _route_tables(mc, region, **filters):
            table = rts.get((region, rt.get("RouteTableId")))
            if table is None:
                continue
            default_main = _is_main(rt) and rt.get("VpcId") in defaults
            for r in rt.get("Routes") or ():
                dest = r.get("DestinationPrefixListId") or r.get("DestinationCidrBlock") or r.get("DestinationIpv6CidrBlock")
                if not dest:
                    continue
                rec = {c: r.get(f) for c, f in _TARGETS}
                rec.update(destination=dest, instance_owner_id=r.get("InstanceOwnerId"), region=region,
                           route_table_id=table, _rtb=rt["RouteTableId"], _default_main=default_main)
                out.append(rec)
        return out


    async def _find(self, mc: MapperContext, region: str, rtb: str, destination: str) -> dict | None:
        for rec in await self._records(mc, region, RouteTableIds=[rtb]):
            if rec["destination"] == destination:
                return rec
        return None

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """Create the route (a ``local`` route is AWS's: the existing one is returned); returns
        its record. Raises engine.aws.CloudError."""
        region, rtb = await _cloud_id(mc, "route_table", "route_table_id", row.get("route_table_id"),
                                      "ec2.create_route")
        if row.get("gateway_id") != "local":
            targets = {f: row[c] for c, f in _TARGETS if row.get(c)}
            await mc.call("ec2", region, "create_route", RouteTableId=rtb, **destination_args(row["destination"]),
                          **targets)
        rec = await self._find(mc, region, rtb, row["destination"])
        if rec is None:
            raise CloudError("InvalidRoute.NotFound", f"no route {row['destination']} in {rtb}", "ec2.create_route")
        return rec

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """Never called (routes are replaced); raises CloudError."""
        raise CloudError("Unsupported", "routes are replaced, not updated", "ec2.update")

    async def delete(self, mc: MapperContext, cloud: dict) -> None:
        """Delete the route (AWS's own routes are left alone). Raises engine.aws.CloudError."""
        if not self.deletable(cloud):
            return
        rtb = cloud.get("_rtb")
        if rtb is None:
            _, rtb = await _cloud_id(mc, "route_table", "route_table_id", cloud.get("route_table_id"), "ec2.delete_route")
        try:
            await mc.call("ec2", cloud["region"], "delete_route", RouteTableId=rtb, **destination_args(cloud["destination"]))
        except CloudError as e:
            if e.code not in ("InvalidRoute.NotFound", "InvalidRouteTableID.NotFound"):
                raise


# -- nat_gateway ---------------------------------------------------------------------------------------------------------
class NatGatewayMapper(VpcModuleMapper):
    """``nat_gateway`` rows <-> NAT gateways (pending, available or failed) in subnets with a row.
    Follows IaSQL's ``mappers/nat_gateway.ts``: tags change in place, anything else replaces."""

    table = "nat_gateway"
    columns = (Col("id", "int", "pk"), Col("nat_gateway_id", "text", "cloud"), Col("connectivity_type"),
               Col("state", "text", "cloud"), Col("tags", "json"), Col("region"), Col("subnet_id", "int"),
               Col("elastic_ip_id", "int"))
    key = ("nat_gateway_id",)
    pk = ("id",)

    def describe(self, rec: dict) -> str:
        """The plan-row description of ``rec``."""
        return (f"{rec.get('connectivity_type')} NAT gateway {rec.get('nat_gateway_id') or 'new'} in subnet "
                f"#{rec.get('subnet_id')}")

    def needs_replace(self, row: dict, cloud: dict) -> bool:
        """Only tags change in place."""
        return self.differs(row, cloud, ("connectivity_type", "region", "subnet_id", "elastic_ip_id"))

    async def _records(self, mc: MapperContext, region: str, **filters: Any) -> list[dict]:
        subnets, _ = await id_maps(mc, "subnet", "subnet_id")
        eips, _ = await id_maps(mc, "elastic_ip", "allocation_id")
        out = []
        for n in await mc.paginate("ec2", region, "describe_nat_gateways", "NatGateways", **filters):
            if n.get("State") not in ("pending", "available", "failed"):
                continue
            subnet = subnets.get((region, n.get("SubnetId")))
            allocs = [a.get("AllocationId") for a in n.get("NatGatewayAddresses") or () if a.get("AllocationId")]
            out.append({"nat_gateway_id": n["NatGatewayId"], "connectivity_type": n.get("ConnectivityType") or "public",
                        "state": n.get("State"), "tags": tags_from_aws(n.get("Tags")), "region": region,
                        "subnet_id": subnet, "elastic_ip_id": eips.get((region, allocs[0])) if allocs else None,
                        "_orphan": subnet is None or (bool(allocs) and eips.get((region, allocs[0])) is None)})
        return out


    async def _get(self, mc: MapperContext, region: str, nat: str) -> dict:
        for _ in range(WAIT_TRIES):
            recs = await self._records(mc, region, NatGatewayIds=[nat])
            if recs and recs[0]["state"] != "pending":
                return recs[0]
            await asyncio.sleep(WAIT_DELAY)
        if not recs:
            raise CloudError("NatGatewayNotFound", f"{nat} was not found after the create", "ec2.describe_nat_gateways")
        return recs[0]

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """Create the NAT gateway (with the row's elastic IP) and wait for it; returns its record.
        Raises engine.aws.CloudError."""
        region, subnet = await _cloud_id(mc, "subnet", "subnet_id", row.get("subnet_id"), "ec2.create_nat_gateway")
        kw: dict[str, Any] = {"SubnetId": subnet, "ConnectivityType": row.get("connectivity_type") or "public"}
        if row.get("elastic_ip_id") is not None:
            _, kw["AllocationId"] = await _cloud_id(mc, "elastic_ip", "allocation_id", row["elastic_ip_id"],
                                                    "ec2.create_nat_gateway")
        res = await mc.call("ec2", region, "create_nat_gateway", **kw,
                            **tag_specifications("natgateway", row.get("tags")))
        nat = res["NatGateway"]["NatGatewayId"]
        return await self._get_or_undo(mc, region, nat, "nat_gateway_id", "delete_nat_gateway", "NatGatewayId")

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """Re-tag; returns the new record. Raises engine.aws.CloudError."""
        await set_tags(mc, cloud["region"], cloud["nat_gateway_id"], row.get("tags"), cloud.get("tags"))
        return await self._get(mc, cloud["region"], cloud["nat_gateway_id"])

    async def delete(self, mc: MapperContext, cloud: dict) -> None:
        """Delete the NAT gateway and wait until it is gone (so its address can be released).
        Raises engine.aws.CloudError."""
        region, nat = cloud["region"], cloud["nat_gateway_id"]
        await mc.call("ec2", region, "delete_nat_gateway", NatGatewayId=nat)
        for _ in range(WAIT_TRIES):
            got = await mc.call("ec2", region, "describe_nat_gateways", NatGatewayIds=[nat])
            if all(n.get("State") == "deleted" for n in got.get("NatGateways", [])):
                return
            await asyncio.sleep(WAIT_DELAY)


# -- endpoint_gateway ------------------------------------------------------------------------------------------------------
class EndpointGatewayMapper(VpcModuleMapper):
    """``endpoint_gateway`` rows <-> Gateway VPC endpoints (s3, dynamodb) of VPCs with a row.
    Follows IaSQL's ``mappers/endpoint_gateway.ts``: a new service or VPC replaces; route tables,
    policy and tags change in place (``modify_vpc_endpoint``)."""

    table = "endpoint_gateway"
    columns = (Col("id", "int", "pk"), Col("vpc_endpoint_id", "text", "cloud"), Col("service"), Col("policy", "json"),
               Col("state", "text", "cloud"), Col("route_table_ids", "text[]"), Col("tags", "json"), Col("region"),
               Col("vpc_id", "int"))
    key = ("vpc_endpoint_id",)
    pk = ("id",)
    optional = ("policy", "route_table_ids")

    def describe(self, rec: dict) -> str:
        """The plan-row description of ``rec``."""
        return f"{rec.get('service')} gateway endpoint {rec.get('vpc_endpoint_id') or 'new'} in VPC #{rec.get('vpc_id')}"

    def needs_replace(self, row: dict, cloud: dict) -> bool:
        """A new service, VPC or region needs a new endpoint."""
        return self.differs(row, cloud, ("service", "vpc_id", "region"))

    async def _records(self, mc: MapperContext, region: str, **kw: Any) -> list[dict]:
        vpcs, _ = await id_maps(mc, "vpc", "vpc_id")
        out = []
        for e in await mc.paginate("ec2", region, "describe_vpc_endpoints", "VpcEndpoints", **kw):
            if e.get("VpcEndpointType") != "Gateway" or e.get("State") in ("deleted", "deleting"):
                continue
            service = (e.get("ServiceName") or "").rsplit(".", 1)[-1]
            vpc = vpcs.get((region, e.get("VpcId")))
            if service not in ("s3", "dynamodb"):
                continue
            policy = e.get("PolicyDocument")
            try:
                policy = json.loads(policy) if isinstance(policy, str) else policy
            except ValueError:
                pass
            out.append({"vpc_endpoint_id": e["VpcEndpointId"], "service": service, "policy": policy,
                        "state": e.get("State"), "route_table_ids": sorted(e.get("RouteTableIds") or []),
                        "tags": tags_from_aws(e.get("Tags")), "region": region, "vpc_id": vpc,
                        "_orphan": vpc is None})
        return out


    async def _get(self, mc: MapperContext, region: str, vpce: str) -> dict:
        return (await self._records(mc, region, VpcEndpointIds=[vpce]))[0]

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """Create the endpoint on the row's route tables (all of the VPC's when NULL); returns its
        record. Raises engine.aws.CloudError."""
        region, vpc = await _cloud_id(mc, "vpc", "vpc_id", row.get("vpc_id"), "ec2.create_vpc_endpoint")
        tables = list(row.get("route_table_ids") or [])
        if row.get("route_table_ids") is None:
            tables = [rt["RouteTableId"] for rt in await _route_tables(
                mc, region, Filters=[{"Name": "vpc-id", "Values": [vpc]}])]
        kw: dict[str, Any] = {"VpcEndpointType": "Gateway", "VpcId": vpc, "RouteTableIds": tables,
                              "ServiceName": f"com.amazonaws.{region}.{row['service']}"}
        if row.get("policy") is not None:
            pol = row["policy"]
            kw["PolicyDocument"] = pol if isinstance(pol, str) else json.dumps(pol)
        res = await mc.call("ec2", region, "create_vpc_endpoint", **kw,
                            **tag_specifications("vpc-endpoint", row.get("tags")))
        vpce = res["VpcEndpoint"]["VpcEndpointId"]
        try:
            return await self._get(mc, region, vpce)
        except CloudError as e:
            try:
                await mc.call("ec2", region, "delete_vpc_endpoints", VpcEndpointIds=[vpce])
            except CloudError:
                e.left = {"vpc_endpoint_id": vpce, "region": region}
            raise

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """Route tables, policy and tags in place; returns the new record. Raises engine.aws.CloudError."""
        region, vpce = cloud["region"], cloud["vpc_endpoint_id"]
        kw: dict[str, Any] = {}
        if row.get("route_table_ids") is not None:
            want, have = set(row["route_table_ids"]), set(cloud.get("route_table_ids") or [])
            if want - have:
                kw["AddRouteTableIds"] = sorted(want - have)
            if have - want:
                kw["RemoveRouteTableIds"] = sorted(have - want)
        if row.get("policy") is not None and not self._same(self.col("policy"), row["policy"], cloud.get("policy")):
            pol = row["policy"]
            kw["PolicyDocument"] = pol if isinstance(pol, str) else json.dumps(pol)
        if kw:
            await mc.call("ec2", region, "modify_vpc_endpoint", VpcEndpointId=vpce, **kw)
        if not self._same(self.col("tags"), row.get("tags"), cloud.get("tags")):
            await set_tags(mc, region, vpce, row.get("tags"), cloud.get("tags"))
        return await self._get(mc, region, vpce)

    async def delete(self, mc: MapperContext, cloud: dict) -> None:
        """Delete the endpoint. Raises engine.aws.CloudError."""
        await mc.call("ec2", cloud["region"], "delete_vpc_endpoints", VpcEndpointIds=[cloud["vpc_endpoint_id"]])


# -- dhcp_options, network_acl, peering_connection, endpoint_interface (IaSQL v0.1's other aws_vpc tables) ---------


class DhcpOptionsMapper(VpcModuleMapper):
    """``dhcp_options`` rows <-> DHCP option sets of the enabled regions. Follows IaSQL's
    ``mappers/dhcp_options.ts``: every set is read (AWS's default set too; moto has none until one
    is created); AWS cannot change a set's configurations, so ``dhcp_configurations`` is not
    compared after the create and the sync writes the cloud's back (IaSQL "restores the record");
    tags change in place. Deleting a set still associated with a VPC fails (DependencyViolation) and reverts."""

    table = "dhcp_options"
    columns = (Col("id", "int", "pk"), Col("dhcp_options_id", "text", "cloud"), Col("dhcp_configurations", "json"),
               Col("tags", "json"), Col("region"))
    key = ("dhcp_options_id",)
    pk = ("id",)
    cloud_read_uses_db = False

    def describe(self, rec: dict) -> str:
        """The plan-row description of ``rec``."""
        return f"DHCP options {rec.get('dhcp_options_id') or 'new'} in {rec.get('region')}"

    def compared(self, row: dict, cloud: dict) -> list[Col]:
        """``dhcp_configurations`` is restorable (not compared: the sync writes the cloud's back)."""
        return [c for c in super().compared(row, cloud) if c.name != "dhcp_configurations"]

    def needs_replace(self, row: dict, cloud: dict) -> bool:
        """A new region needs a new set; nothing else replaces (as IaSQL)."""
        return self.differs(row, cloud, ("region",))

    @staticmethod
    def _configurations(value: Any) -> list | None:
        """``[{"Key", "Values": [{"Value"}]}]`` in a comparable order (keys and values sorted)."""
        value = json_or_text(value)
        if not isinstance(value, list):
            return value
        out = []
        for c in value:
            if not isinstance(c, dict):
                return value
            vals = sorted((v.get("Value") if isinstance(v, dict) else v) for v in c.get("Values") or [])
            out.append({"Key": c.get("Key"), "Values": [{"Value": v} for v in vals]})
        return sorted(out, key=lambda c: str(c["Key"]))

    def _same(self, c: Col, a: Any, b: Any) -> bool:
        if c.name == "dhcp_configurations":
            return self._configurations(a) == self._configurations(b)
        return super()._same(c, a, b)

    def _record(self, d: dict, region: str) -> dict:
        return {"dhcp_options_id": d["DhcpOptionsId"], "dhcp_configurations": self._configurations(
                d.get("DhcpConfigurations") or []), "tags": tags_from_aws(d.get("Tags")), "region": region}

    async def _records(self, mc: MapperContext, region: str, **kw: Any) -> list[dict]:
        return [self._record(d, region) for d in await mc.paginate("ec2", region, "describe_dhcp_options",
                                                                   "DhcpOptions", **kw) if d.get("DhcpOptionsId")]

    async def _get(self, mc: MapperContext, region: str, dopt: str) -> dict:
        return (await self._records(mc, region, DhcpOptionsIds=[dopt]))[0]

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """Create the set (tags that the create did not apply - moto ignores ``TagSpecifications``
        there - are set after); returns its record. Raises engine.aws.CloudError."""
        region = row.get("region") or mc.default_region
        configs = []
        for c in self._configurations(row.get("dhcp_configurations")) or []:
            configs.append({"Key": c["Key"], "Values": [str(v["Value"]) for v in c["Values"] if v["Value"]]})
        res = await mc.call("ec2", region, "create_dhcp_options", DhcpConfigurations=configs,
                            **tag_specifications("dhcp-options", row.get("tags")))
        dopt = res["DhcpOptions"]["DhcpOptionsId"]
        rec = await self._get_or_undo(mc, region, dopt, "dhcp_options_id", "delete_dhcp_options", "DhcpOptionsId")
        if not self._same(self.col("tags"), row.get("tags"), rec.get("tags")):  # moto drops TagSpecifications here
            try:
                await set_tags(mc, region, dopt, row.get("tags"), rec.get("tags"))
                rec = await self._get(mc, region, dopt)
            except CloudError as e:
                try:
                    await mc.call("ec2", region, "delete_dhcp_options", DhcpOptionsId=dopt)
                except CloudError:
                    e.left = rec
                raise
        return rec

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """Tags in place; a new ``dhcp_configurations`` is not applied (AWS has no call for it):
        the cloud record is returned for the sync to restore. Raises engine.aws.CloudError."""
        if not self._same(self.col("tags"), row.get("tags"), cloud.get("tags")):
            await set_tags(mc, cloud["region"], cloud["dhcp_options_id"], row.get("tags"), cloud.get("tags"))
        return await self._get(mc, cloud["region"], cloud["dhcp_options_id"])

    async def delete(self, mc: MapperContext, cloud: dict) -> None:
        """Delete the set. Raises engine.aws.CloudError (DependencyViolation while a VPC uses it)."""
        await mc.call("ec2", cloud["region"], "delete_dhcp_options", DhcpOptionsId=cloud["dhcp_options_id"])


class VpcDhcpOptionsMapper(VpcMapper):
    """``vpc`` with its ``dhcp_options_id``: IaSQL's ``mappers/vpc.ts`` reads the VPC's DHCP
    option set (NULL for AWS's ``default`` - no options - or a set without a row), associates the
    row's set after creating the VPC and on update (NULL associates ``default``)."""

    columns = VpcMapper.columns + (Col("dhcp_options_id", "int"),)
    cloud_read_uses_db = True

    async def _record(self, mc: MapperContext, v: dict, region: str) -> dict:
        rec = await super()._record(mc, v, region)
        dopts, _ = await id_maps(mc, "dhcp_options", "dhcp_options_id")
        rec["dhcp_options_id"] = dopts.get((region, v.get("DhcpOptionsId")))
        rec["_dhcp_options"] = v.get("DhcpOptionsId") or "default"
        return rec

    def _dhcp_differs(self, row: dict, cloud: dict) -> bool:
        """True when the row's DHCP options are not the VPC's: a NULL row differs from a set
        without a row (its row deleted in this commit), as IaSQL reads such a set from the cloud."""
        if row.get("dhcp_options_id") is None and cloud.get("dhcp_options_id") is None:
            return cloud.get("_dhcp_options", "default") != "default"
        return self.differs(row, cloud, ("dhcp_options_id",))

    def equals(self, row: dict, cloud: dict) -> bool:
        """``VpcMapper.equals`` and the same DHCP options."""
        return super().equals(row, cloud) and not self._dhcp_differs(row, cloud)

    async def _associate(self, mc: MapperContext, row: dict, rec: dict) -> dict:
        """Associate the row's DHCP options with the VPC of ``rec`` when they differ; the new record."""
        if not self._dhcp_differs(row, rec):
            return rec
        region, vpc_id = rec["region"], rec["vpc_id"]
        dopt = "default"
        if row.get("dhcp_options_id") is not None:
            _, dopt = await _cloud_id(mc, "dhcp_options", "dhcp_options_id", row["dhcp_options_id"],
                                      "ec2.associate_dhcp_options")
        await mc.call("ec2", region, "associate_dhcp_options", DhcpOptionsId=dopt, VpcId=vpc_id)
        return await self._record(mc, await self._get(mc, region, vpc_id), region)

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """Create the VPC (``VpcMapper.create``), then associate the row's DHCP options. Raises
        engine.aws.CloudError (DependencyViolation while the options have no cloud id)."""
        if row.get("dhcp_options_id") is not None:  # fail before creating anything
            await _cloud_id(mc, "dhcp_options", "dhcp_options_id", row["dhcp_options_id"], "ec2.associate_dhcp_options")
        rec = await super().create(mc, row)
        try:
            return await self._associate(mc, row, rec)
        except CloudError as e:
            try:
                await mc.call("ec2", rec["region"], "delete_vpc", VpcId=rec["vpc_id"])
            except CloudError:
                e.left = rec
            raise

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """``VpcMapper.update``, then the DHCP options association. Raises engine.aws.CloudError."""
        rec = await super().update(mc, row, cloud)
        return await self._associate(mc, row, rec)


#: Network ACL rule numbers a user can write (AWS's default rules are numbered 32767 and above).
ACL_MAX_RULE = 32766
_ACL_ENTRY_KEYS = ("CidrBlock", "Egress", "IcmpTypeCode", "Ipv6CidrBlock", "PortRange", "Protocol", "RuleAction",
                   "RuleNumber")


def acl_entries(value: Any) -> list | Any:
    """The user rules of a network ACL ``entries`` value (AWS's ``Entries`` shape), comparable:
    AWS's default rules (rule number above 32766) left out, only the fields
    ``create_network_acl_entry`` takes, ordered by (egress, rule number)."""
    value = json_or_text(value)
    if not isinstance(value, list):
        return value
    out = []
    for e in value:
        if not isinstance(e, dict):
            return value
        n = e.get("RuleNumber")
        if not n or int(n) > ACL_MAX_RULE:
            continue
        entry = {k: e[k] for k in _ACL_ENTRY_KEYS if e.get(k) is not None}
        entry["RuleNumber"], entry["Egress"] = int(n), bool(e.get("Egress"))
        if "Protocol" in entry:
            entry["Protocol"] = str(entry["Protocol"])
        out.append(entry)
    return sorted(out, key=lambda e: (e["Egress"], e["RuleNumber"]))


class NetworkAclMapper(VpcModuleMapper):
    """``network_acl`` rows <-> the non-default network ACLs of VPCs with a row. Follows IaSQL's
    ``mappers/network_acl.ts``: default ACLs are not read (a subnet on its VPC's default ACL has
    a NULL ``network_acl_id``); a new VPC replaces; ``entries`` (AWS's ``Entries`` shape) are
    applied by deleting the ACL's user rules and creating the row's; tags in place. ``entries``
    compare without AWS's default rules (numbered above 32766), which the sync writes back."""

    table = "network_acl"
    columns = (Col("id", "int", "pk"), Col("network_acl_id", "text", "cloud"), Col("entries", "json"),
               Col("tags", "json"), Col("region"), Col("vpc_id", "int"))
    key = ("network_acl_id",)
    pk = ("id",)

    def describe(self, rec: dict) -> str:
        """The plan-row description of ``rec``."""
        return f"network ACL {rec.get('network_acl_id') or 'new'} of VPC #{rec.get('vpc_id')} in {rec.get('region')}"

    def needs_replace(self, row: dict, cloud: dict) -> bool:
        """A new VPC (or region) needs a new ACL."""
        return self.differs(row, cloud, ("vpc_id", "region"))

    def _same(self, c: Col, a: Any, b: Any) -> bool:
        if c.name == "entries":  # NULL: no rules of the user's
            return (acl_entries(a) or []) == (acl_entries(b) or [])
        return super()._same(c, a, b)

    async def _records(self, mc: MapperContext, region: str, **kw: Any) -> list[dict]:
        vpcs, _ = await id_maps(mc, "vpc", "vpc_id")
        out = []
        for a in await mc.paginate("ec2", region, "describe_network_acls", "NetworkAcls", **kw):
            if not a.get("NetworkAclId") or a.get("IsDefault"):
                continue
            vpc = vpcs.get((region, a.get("VpcId")))
            out.append({"network_acl_id": a["NetworkAclId"], "entries": a.get("Entries") or [],
                        "tags": tags_from_aws(a.get("Tags")), "region": region, "vpc_id": vpc, "_orphan": vpc is None})
        return out

    async def _get(self, mc: MapperContext, region: str, acl: str) -> dict:
        return (await self._records(mc, region, NetworkAclIds=[acl]))[0]

    async def _add_entries(self, mc: MapperContext, region: str, acl: str, entries: Any) -> None:
        for e in acl_entries(entries) or []:
            await mc.call("ec2", region, "create_network_acl_entry", NetworkAclId=acl, **e)

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """Create the ACL in the row's VPC and its rules; returns its record. Raises engine.aws.CloudError."""
        region, vpc = await _cloud_id(mc, "vpc", "vpc_id", row.get("vpc_id"), "ec2.create_network_acl")
        res = await mc.call("ec2", region, "create_network_acl", VpcId=vpc,
                            **tag_specifications("network-acl", row.get("tags")))
        acl = res["NetworkAcl"]["NetworkAclId"]
        try:
            await self._add_entries(mc, region, acl, row.get("entries"))
        except CloudError as e:
            try:
                await mc.call("ec2", region, "delete_network_acl", NetworkAclId=acl)
            except CloudError:
                e.left = {"network_acl_id": acl, "region": region}
            raise
        return await self._get_or_undo(mc, region, acl, "network_acl_id", "delete_network_acl", "NetworkAclId")

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """Rules (all user rules deleted, the row's created) and tags in place; returns the new
        record. Raises engine.aws.CloudError."""
        region, acl = cloud["region"], cloud["network_acl_id"]
        if not self._same(self.col("entries"), row.get("entries"), cloud.get("entries")):
            for e in acl_entries(cloud.get("entries")) or []:
                await mc.call("ec2", region, "delete_network_acl_entry", NetworkAclId=acl, Egress=e["Egress"],
                              RuleNumber=e["RuleNumber"])
            await self._add_entries(mc, region, acl, row.get("entries"))
        if not self._same(self.col("tags"), row.get("tags"), cloud.get("tags")):
            await set_tags(mc, region, acl, row.get("tags"), cloud.get("tags"))
        return await self._get(mc, region, acl)

    async def delete(self, mc: MapperContext, cloud: dict) -> None:
        """Delete the ACL (AWS refuses while subnets use it). Raises engine.aws.CloudError."""
        await mc.call("ec2", cloud["region"], "delete_network_acl", NetworkAclId=cloud["network_acl_id"])


class SubnetNetworkAclMapper(SubnetMapper):
    """``subnet`` with its ``network_acl_id``: IaSQL's ``mappers/subnet.ts`` reads the subnet's
    ACL association (NULL on its VPC's default ACL), sets the row's ACL after creating the subnet
    and, when only ``network_acl_id`` changes, moves the association in place
    (``replace_network_acl_association``; NULL moves it back to the VPC's default ACL)."""

    columns = SubnetMapper.columns + (Col("network_acl_id", "int"),)

    def needs_replace(self, row: dict, cloud: dict) -> bool:
        """Any change but ``network_acl_id`` replaces the subnet."""
        return any(not self._same(c, row.get(c.name), cloud.get(c.name))
                   for c in self.user_cols if c.name != "network_acl_id")

    @staticmethod
    async def _acls(mc: MapperContext, region: str, **kw: Any) -> dict:
        """``{subnet id: (acl id, association id, acl is default, vpc id)}`` of one region."""
        out = {}
        for a in await mc.paginate("ec2", region, "describe_network_acls", "NetworkAcls", **kw):
            for s in a.get("Associations") or ():
                out[s.get("SubnetId")] = (a["NetworkAclId"], s.get("NetworkAclAssociationId"), bool(a.get("IsDefault")),
                                          a.get("VpcId"))
        return out

    async def _with_acl(self, mc: MapperContext, recs: list[dict]) -> list[dict]:
        acls_by_db, _ = await id_maps(mc, "network_acl", "network_acl_id")
        cache: dict[str, dict] = {}
        for rec in recs:
            region = rec["region"]
            if region not in cache:
                cache[region] = await self._acls(mc, region)
            got = cache[region].get(rec["subnet_id"])
            rec["network_acl_id"] = None if got is None or got[2] else acls_by_db.get((region, got[0]))
            rec["_acl_association"] = got[1] if got else None
        return recs

    async def read(self, mc: MapperContext) -> list[dict]:
        """``SubnetMapper.read`` with each subnet's ACL. Raises engine.aws.CloudError."""
        return await self._with_acl(mc, await super().read(mc))

    async def _get(self, mc: MapperContext, region: str, subnet_id: str) -> dict:
        return (await self._with_acl(mc, [await super()._get(mc, region, subnet_id)]))[0]

    async def _set_acl(self, mc: MapperContext, row: dict, rec: dict) -> dict:
        """Move the subnet of ``rec`` to the row's ACL when they differ; the new record."""
        if not self.differs(row, rec, ("network_acl_id",)):
            return rec
        region, subnet = rec["region"], rec["subnet_id"]
        if row.get("network_acl_id") is not None:
            _, acl = await _cloud_id(mc, "network_acl", "network_acl_id", row["network_acl_id"],
                                     "ec2.replace_network_acl_association")
        else:
            _, vpc = await _cloud_id(mc, "vpc", "vpc_id", rec.get("vpc_id"), "ec2.replace_network_acl_association")
            acl = next(a["NetworkAclId"] for a in await mc.paginate(
                "ec2", region, "describe_network_acls", "NetworkAcls",
                Filters=[{"Name": "vpc-id", "Values": [vpc]}, {"Name": "default", "Values": ["true"]}]))
        assoc = (await self._acls(mc, region, Filters=[{"Name": "association.subnet-id", "Values": [subnet]}]))[subnet][1]
        await mc.call("ec2", region, "replace_network_acl_association", AssociationId=assoc, NetworkAclId=acl)
        return await self._get(mc, region, subnet)

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """Create the subnet (``SubnetMapper.create``), then put it on the row's ACL. Raises
        engine.aws.CloudError."""
        if row.get("network_acl_id") is not None:  # fail before creating anything
            await _cloud_id(mc, "network_acl", "network_acl_id", row["network_acl_id"],
                            "ec2.replace_network_acl_association")
        rec = await super().create(mc, row)
        try:
            return await self._set_acl(mc, row, rec)
        except CloudError as e:
            try:
                await mc.call("ec2", rec["region"], "delete_subnet", SubnetId=rec["subnet_id"])
            except CloudError:
                e.left = rec
            raise

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """Only ``network_acl_id`` is updated (anything else replaces). Raises engine.aws.CloudError."""
        return await self._set_acl(mc, row, cloud)


class PeeringConnectionMapper(VpcModuleMapper):
    """``peering_connection`` rows <-> VPC peering connections between two VPCs with rows (the
    table has no ``region``: the connection lives in the requester VPC's region, the accepter may
    be in another). Follows IaSQL's ``mappers/peering_connection.ts``: create requests the
    connection, waits for ``pending-acceptance``, accepts it in the accepter's region, waits for
    ``active`` and adds a route to the other VPC's CIDR through the connection to every route
    table of both VPCs (one left there by a deleted connection is replaced; IaSQL takes the route tables from its database; here from the cloud, so
    the main route table of a VPC made in the same commit is included; the sync brings the routes
    in). A new requester or accepter replaces; tags change in place; ``state`` is AWS's. Deleted
    connections (``deleted``/``deleting``) are not read."""

    table = "peering_connection"
    columns = (Col("id", "int", "pk"), Col("peering_connection_id", "text", "cloud"), Col("state", "text", "cloud"),
               Col("tags", "json"), Col("requester_id", "int"), Col("accepter_id", "int"))
    key = ("peering_connection_id",)
    pk = ("id",)

    def describe(self, rec: dict) -> str:
        """The plan-row description of ``rec``."""
        return (f"peering connection {rec.get('peering_connection_id') or 'new'} from VPC #{rec.get('requester_id')} "
                f"to VPC #{rec.get('accepter_id')}")

    def needs_replace(self, row: dict, cloud: dict) -> bool:
        """A new requester or accepter VPC needs a new connection."""
        return self.differs(row, cloud, ("requester_id", "accepter_id"))

    async def _records(self, mc: MapperContext, region: str, **kw: Any) -> list[dict]:
        vpcs, _ = await id_maps(mc, "vpc", "vpc_id")
        out = []
        for p in await mc.paginate("ec2", region, "describe_vpc_peering_connections", "VpcPeeringConnections", **kw):
            req, acc = p.get("RequesterVpcInfo") or {}, p.get("AccepterVpcInfo") or {}
            state = (p.get("Status") or {}).get("Code")
            if not req.get("VpcId") or not acc.get("VpcId") or state in ("deleted", "deleting"):
                continue
            requester = vpcs.get((req.get("Region") or region, req["VpcId"]))
            accepter = vpcs.get((acc.get("Region") or region, acc["VpcId"]))
            out.append({"peering_connection_id": p["VpcPeeringConnectionId"], "state": state,
                        "tags": tags_from_aws(p.get("Tags")), "requester_id": requester, "accepter_id": accepter,
                        "_region": req.get("Region") or region, "_orphan": requester is None or accepter is None})
        return out

    async def read(self, mc: MapperContext) -> list[dict]:
        """The connections of every enabled region, each once (a connection between two regions is
        listed in both). Raises engine.aws.CloudError."""
        seen: dict[str, dict] = {}
        for region in mc.regions:
            for rec in await self._records(mc, region):
                seen.setdefault(rec["peering_connection_id"], rec)
        return list(seen.values())

    async def _wait(self, mc: MapperContext, region: str, pcx: str, state: str) -> dict:
        rec: dict = {}
        for _ in range(WAIT_TRIES):
            [rec] = await self._records(mc, region, VpcPeeringConnectionIds=[pcx]) or [{}]
            if rec.get("state") == state:
                break
            await asyncio.sleep(WAIT_DELAY)
        return rec

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """Request, accept and route the connection; returns its record. A failure after the
        request deletes it again (or sets ``left``). Raises engine.aws.CloudError."""
        region, vpc = await _cloud_id(mc, "vpc", "vpc_id", row.get("requester_id"), "ec2.create_vpc_peering_connection")
        peer_region, peer = await _cloud_id(mc, "vpc", "vpc_id", row.get("accepter_id"),
                                            "ec2.create_vpc_peering_connection")
        res = await mc.call("ec2", region, "create_vpc_peering_connection", VpcId=vpc, PeerVpcId=peer,
                            PeerRegion=peer_region, **tag_specifications("vpc-peering-connection", row.get("tags")))
        pcx = res["VpcPeeringConnection"]["VpcPeeringConnectionId"]
        try:
            await self._wait(mc, region, pcx, "pending-acceptance")
            await mc.call("ec2", peer_region, "accept_vpc_peering_connection", VpcPeeringConnectionId=pcx)
            await self._wait(mc, region, pcx, "active")
            cidrs = {}
            for r, v in ((region, vpc), (peer_region, peer)):
                cidrs[v] = (await mc.call("ec2", r, "describe_vpcs", VpcIds=[v]))["Vpcs"][0]["CidrBlock"]
            for r, v, other in ((region, vpc, peer), (peer_region, peer, vpc)):
                for rt in await _route_tables(mc, r, Filters=[{"Name": "vpc-id", "Values": [v]}]):
                    route = {"RouteTableId": rt["RouteTableId"], "DestinationCidrBlock": cidrs[other],
                             "VpcPeeringConnectionId": pcx}
                    try:
                        await mc.call("ec2", r, "create_route", **route)
                    except CloudError as e:  # a route left by a deleted connection (a replace)
                        if e.code != "RouteAlreadyExists":
                            raise
                        await mc.call("ec2", r, "replace_route", **route)
            return await self._wait(mc, region, pcx, "active")
        except CloudError as e:
            try:
                await mc.call("ec2", region, "delete_vpc_peering_connection", VpcPeeringConnectionId=pcx)
            except CloudError:
                e.left = {"peering_connection_id": pcx, "_region": region}
            raise

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """Tags in place; returns the new record. Raises engine.aws.CloudError."""
        region, pcx = cloud["_region"], cloud["peering_connection_id"]
        if not self._same(self.col("tags"), row.get("tags"), cloud.get("tags")):
            await set_tags(mc, region, pcx, row.get("tags"), cloud.get("tags"))
        return (await self._records(mc, region, VpcPeeringConnectionIds=[pcx]))[0]

    async def delete(self, mc: MapperContext, cloud: dict) -> None:
        """Delete the connection (its routes stay, as AWS leaves them). Raises engine.aws.CloudError."""
        await mc.call("ec2", cloud["_region"], "delete_vpc_peering_connection",
                      VpcPeeringConnectionId=cloud["peering_connection_id"])


#: IaSQL's ``endpoint_interface_service_enum``.
INTERFACE_SERVICES = ("s3", "s3-global.accesspoint", "execute-api", "rds", "logs", "codebuild", "codedeploy",
                      "codepipeline", "ec2", "ecr", "ecs", "elasticloadbalancing", "elasticache", "lambda", "memory-db")


def interface_service(service_name: str) -> str | None:
    """The enum value of an AWS endpoint service name (``com.amazonaws.us-east-1.lambda`` ->
    ``lambda``): the first of IaSQL's values the name ends with, as IaSQL's helper."""
    return next((s for s in INTERFACE_SERVICES if service_name.endswith(s)), None)


async def _interface_endpoints(mc: MapperContext, region: str, **kw: Any) -> list[dict]:
    """The Interface endpoints of one region that are not (being) deleted."""
    return [e for e in await mc.paginate("ec2", region, "describe_vpc_endpoints", "VpcEndpoints", **kw)
            if e.get("VpcEndpointType") == "Interface" and e.get("State") not in ("deleted", "deleting")]


class EndpointInterfaceMapper(VpcModuleMapper):
    """``endpoint_interface`` rows <-> Interface VPC endpoints of VPCs with a row; the subnets are
    in ``endpoint_interface_subnets``. Follows IaSQL's ``mappers/endpoint_interface.ts``: create
    uses the row's subnets (all of the VPC's when it has none), the row's policy,
    ``private_dns_enabled`` and ``dns_name_record_type``; a new service or VPC replaces; policy
    and tags change in place; ``private_dns_enabled`` and ``dns_name_record_type`` are not
    updated nor compared (the sync writes the cloud's back, as IaSQL restores them). A NULL
    ``policy`` is AWS's choice. moto keeps no ``DnsOptions``: its endpoints read a NULL
    ``dns_name_record_type``."""

    table = "endpoint_interface"
    columns = (Col("id", "int", "pk"), Col("vpc_endpoint_id", "text", "cloud"), Col("service"), Col("policy", "json"),
               Col("state", "text", "cloud"), Col("private_dns_enabled", "bool"), Col("dns_name_record_type"),
               Col("tags", "json"), Col("region"), Col("vpc_id", "int"))
    key = ("vpc_endpoint_id",)
    pk = ("id",)
    optional = ("policy",)

    def describe(self, rec: dict) -> str:
        """The plan-row description of ``rec``."""
        return (f"{rec.get('service')} interface endpoint {rec.get('vpc_endpoint_id') or 'new'} in VPC "
                f"#{rec.get('vpc_id')}")

    def compared(self, row: dict, cloud: dict) -> list[Col]:
        """``private_dns_enabled`` and ``dns_name_record_type`` are restorable (not compared: the
        sync writes the cloud's back)."""
        return [c for c in super().compared(row, cloud) if c.name not in ("private_dns_enabled", "dns_name_record_type")]

    def needs_replace(self, row: dict, cloud: dict) -> bool:
        """A new service, VPC or region needs a new endpoint."""
        return self.differs(row, cloud, ("service", "vpc_id", "region"))

    async def _records(self, mc: MapperContext, region: str, **kw: Any) -> list[dict]:
        vpcs, _ = await id_maps(mc, "vpc", "vpc_id")
        out = []
        for e in await _interface_endpoints(mc, region, **kw):
            service = interface_service(e.get("ServiceName") or "")
            if service is None or not e.get("VpcEndpointId"):
                continue
            vpc = vpcs.get((region, e.get("VpcId")))
            out.append({"vpc_endpoint_id": e["VpcEndpointId"], "service": service,
                        "policy": json_or_text(e.get("PolicyDocument")), "state": e.get("State"),
                        "private_dns_enabled": bool(e.get("PrivateDnsEnabled")),
                        "dns_name_record_type": (e.get("DnsOptions") or {}).get("DnsRecordIpType"),
                        "tags": tags_from_aws(e.get("Tags")), "region": region, "vpc_id": vpc,
                        "_orphan": vpc is None})
        return out

    async def _get(self, mc: MapperContext, region: str, vpce: str) -> dict:
        for _ in range(WAIT_TRIES):
            [rec] = await self._records(mc, region, VpcEndpointIds=[vpce])
            if rec.get("state") not in ("pending", "pendingAcceptance"):
                break
            await asyncio.sleep(WAIT_DELAY)
        return rec

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """Create the endpoint on the row's subnets (``endpoint_interface_subnets``; all of the
        VPC's when none); returns its record. Raises engine.aws.CloudError."""
        region, vpc = await _cloud_id(mc, "vpc", "vpc_id", row.get("vpc_id"), "ec2.create_vpc_endpoint")
        rows = await mc.fetchall("SELECT s.subnet_id FROM public.endpoint_interface_subnets j JOIN public.subnet s "
                                 "ON s.id = j.subnet_id WHERE j.endpoint_interface_id = $1", (row.get("id"),))
        if any(s is None for s, in rows):
            raise missing_dependency("subnet", "of endpoint_interface_subnets", "ec2.create_vpc_endpoint")
        subnets = sorted(s for s, in rows)
        if not subnets:
            subnets = sorted(s["SubnetId"] for s in await mc.paginate(
                "ec2", region, "describe_subnets", "Subnets", Filters=[{"Name": "vpc-id", "Values": [vpc]}]))
        kw: dict[str, Any] = {"VpcEndpointType": "Interface", "VpcId": vpc, "SubnetIds": subnets,
                              "ServiceName": f"com.amazonaws.{region}.{row['service']}",
                              "PrivateDnsEnabled": bool(row.get("private_dns_enabled"))}
        if row.get("dns_name_record_type"):
            kw["DnsOptions"] = {"DnsRecordIpType": row["dns_name_record_type"]}
        if row.get("policy") is not None:
            pol = row["policy"]
            kw["PolicyDocument"] = pol if isinstance(pol, str) else json.dumps(pol)
        res = await mc.call("ec2", region, "create_vpc_endpoint", **kw,
                            **tag_specifications("vpc-endpoint", row.get("tags")))
        vpce = res["VpcEndpoint"]["VpcEndpointId"]
        return await self._get_or_undo(mc, region, vpce, "vpc_endpoint_id", "delete_vpc_endpoints", "VpcEndpointIds")

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """Policy and tags in place; returns the new record. Raises engine.aws.CloudError."""
        region, vpce = cloud["region"], cloud["vpc_endpoint_id"]
        if row.get("policy") is not None and not self._same(self.col("policy"), row["policy"], cloud.get("policy")):
            pol = row["policy"]
            await mc.call("ec2", region, "modify_vpc_endpoint", VpcEndpointId=vpce,
                          PolicyDocument=pol if isinstance(pol, str) else json.dumps(pol))
        if not self._same(self.col("tags"), row.get("tags"), cloud.get("tags")):
            await set_tags(mc, region, vpce, row.get("tags"), cloud.get("tags"))
        return await self._get(mc, region, vpce)

    async def delete(self, mc: MapperContext, cloud: dict) -> None:
        """Delete the endpoint. Raises engine.aws.CloudError."""
        await mc.call("ec2", cloud["region"], "delete_vpc_endpoints", VpcEndpointIds=[cloud["vpc_endpoint_id"]])


class EndpointInterfaceSubnetsMapper(VpcModuleMapper):
    """``endpoint_interface_subnets`` (IaSQL's join table of ``endpoint_interface.subnets``) <->
    the subnets of the Interface endpoints that have rows: a new row adds the subnet to the
    endpoint, a deleted one removes it (``modify_vpc_endpoint``). The endpoint's create already
    uses the rows there are, so they are in the cloud before their own ops run."""

    table = "endpoint_interface_subnets"
    columns = (Col("endpoint_interface_id", "int"), Col("subnet_id", "int"))
    key = ("endpoint_interface_id", "subnet_id")
    pk = ("endpoint_interface_id", "subnet_id")

    def describe(self, rec: dict) -> str:
        """The plan-row description of ``rec``."""
        return f"subnet #{rec.get('subnet_id')} of interface endpoint #{rec.get('endpoint_interface_id')}"

    def needs_replace(self, row: dict, cloud: dict) -> bool:
        """Never updated: a join row is added or removed."""
        return True

    async def read(self, mc: MapperContext) -> list[dict]:
        """One record per (endpoint with a row, subnet with a row): a subnet without a row is not
        listed. Raises engine.aws.CloudError."""
        eps, _ = await id_maps(mc, "endpoint_interface", "vpc_endpoint_id")
        subnets, _ = await id_maps(mc, "subnet", "subnet_id")
        out = []
        for region in mc.regions:
            for e in await _interface_endpoints(mc, region):
                ep = eps.get((region, e.get("VpcEndpointId")))
                for s in e.get("SubnetIds") or ():
                    sub = subnets.get((region, s))
                    if ep is not None and sub is not None:
                        out.append({"endpoint_interface_id": ep, "subnet_id": sub, "_vpce": e["VpcEndpointId"],
                                    "_subnet": s, "_region": region})
        return out

    async def _ids(self, mc: MapperContext, row: dict, op: str) -> tuple[str, str, str]:
        region, vpce = await _cloud_id(mc, "endpoint_interface", "vpc_endpoint_id", row.get("endpoint_interface_id"), op)
        _, subnet = await _cloud_id(mc, "subnet", "subnet_id", row.get("subnet_id"), op)
        return region, vpce, subnet

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """Add the subnet to the endpoint; returns the record. Raises engine.aws.CloudError."""
        region, vpce, subnet = await self._ids(mc, row, "ec2.modify_vpc_endpoint")
        await mc.call("ec2", region, "modify_vpc_endpoint", VpcEndpointId=vpce, AddSubnetIds=[subnet])
        return {"endpoint_interface_id": row["endpoint_interface_id"], "subnet_id": row["subnet_id"], "_vpce": vpce,
                "_subnet": subnet, "_region": region}

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """Never called (join rows are replaced); raises CloudError."""
        raise CloudError("Unsupported", "endpoint_interface_subnets rows are replaced, not updated", "ec2.update")

    async def delete(self, mc: MapperContext, cloud: dict) -> None:
        """Remove the subnet from the endpoint. Raises engine.aws.CloudError."""
        await mc.call("ec2", cloud["_region"], "modify_vpc_endpoint", VpcEndpointId=cloud["_vpce"],
                      RemoveSubnetIds=[cloud["_subnet"]])


# -- module ---------------------------------------------------------------------------------------------------------------
_REGION = ("region character varying NOT NULL DEFAULT public.default_aws_region() "
           "REFERENCES public.aws_regions (region)")

INSTALL_SQL = (
    "CREATE TYPE public.vpc_state_enum AS ENUM ('available', 'pending')",
    "CREATE TYPE public.subnet_state_enum AS ENUM ('available', 'pending')",
    "CREATE TYPE public.endpoint_gateway_service_enum AS ENUM ('dynamodb', 's3')",
    "CREATE TYPE public.nat_gateway_connectivity_type_enum AS ENUM ('private', 'public')",
    "CREATE TYPE public.nat_gateway_state_enum AS ENUM ('available', 'deleted', 'deleting', 'failed', 'pending')",
    f"""CREATE TABLE public.availability_zone (
         name character varying PRIMARY KEY,
         {_REGION},
         CONSTRAINT uq_az_region UNIQUE (name, region))""",
    f"""CREATE TABLE public.vpc (
         id SERIAL PRIMARY KEY,
         vpc_id character varying,
         cidr_block character varying NOT NULL,
         state public.vpc_state_enum,
         is_default boolean NOT NULL DEFAULT false,
         enable_dns_hostnames boolean NOT NULL DEFAULT false,
         enable_dns_support boolean NOT NULL DEFAULT false,
         enable_network_address_usage_metrics boolean NOT NULL DEFAULT false,
         tags json,
         {_REGION},
         dhcp_options_id integer,
         CONSTRAINT uq_vpc_id_region UNIQUE (vpc_id, region),
         CONSTRAINT uq_vpc_region UNIQUE (id, region))""",
    f"""CREATE TABLE public.subnet (
         id SERIAL PRIMARY KEY,
         state public.subnet_state_enum,
         available_ip_address_count integer,
         cidr_block character varying,
         subnet_id character varying,
         owner_id character varying,
         subnet_arn character varying,
         {_REGION},
         availability_zone character varying NOT NULL,
         vpc_id integer NOT NULL,
         network_acl_id integer,
         CONSTRAINT uq_subnet_id_region UNIQUE (subnet_id, region),
         CONSTRAINT uq_subnet_region UNIQUE (id, region),
         CONSTRAINT fk_subnet_availability_zone FOREIGN KEY (availability_zone, region)
           REFERENCES public.availability_zone (name, region),
         CONSTRAINT fk_subnet_vpc FOREIGN KEY (vpc_id, region) REFERENCES public.vpc (id, region))""",
    f"""CREATE TABLE public.internet_gateway (
         id SERIAL PRIMARY KEY,
         internet_gateway_id character varying,
         tags json,
         {_REGION},
         vpc_id integer,
         CONSTRAINT "REL_c705d17149b548ae1da95eac65" UNIQUE (vpc_id, region),
         CONSTRAINT fk_internet_gateway_vpc FOREIGN KEY (vpc_id, region) REFERENCES public.vpc (id, region)
           ON DELETE CASCADE)""",
    f"""CREATE TABLE public.elastic_ip (
         id SERIAL PRIMARY KEY,
         allocation_id character varying,
         public_ip character varying UNIQUE,
         tags json,
         {_REGION},
         CONSTRAINT elasticip_id_region UNIQUE (id, region))""",
    f"""CREATE TABLE public.route_table (
         id SERIAL PRIMARY KEY,
         route_table_id character varying,
         tags json,
         {_REGION},
         vpc_id integer NOT NULL,
         CONSTRAINT uq_route_table_region UNIQUE (id, region),
         CONSTRAINT fk_route_table_vpc FOREIGN KEY (vpc_id, region) REFERENCES public.vpc (id, region)
           ON DELETE CASCADE)""",
    """CREATE TABLE public.route_table_association (
         id SERIAL PRIMARY KEY,
         route_table_association_id character varying,
         is_main boolean NOT NULL DEFAULT false,
         route_table_id integer NOT NULL REFERENCES public.route_table (id),
         subnet_id integer REFERENCES public.subnet (id),
         vpc_id integer NOT NULL REFERENCES public.vpc (id) ON DELETE CASCADE,
         CONSTRAINT uq_routetable_routetable_subnet_ismain UNIQUE (vpc_id, subnet_id, is_main))""",
    r"""CREATE TABLE public.route (
         id SERIAL PRIMARY KEY,
         destination character varying NOT NULL,
         egress_only_internet_gateway_id character varying,
         gateway_id character varying,
         instance_id character varying,
         instance_owner_id character varying,
         nat_gateway_id character varying,
         transit_gateway_id character varying,
         local_gateway_id character varying,
         carrier_gateway_id character varying,
         network_interface_id character varying,
         vpc_peering_connection_id character varying,
         core_network_arn character varying,
         region character varying NOT NULL DEFAULT public.default_aws_region() REFERENCES public.aws_regions (region),
         route_table_id integer NOT NULL,
         CONSTRAINT uq_route_table_destination UNIQUE (route_table_id, region, destination),
         CONSTRAINT fk_route_route_table FOREIGN KEY (route_table_id, region)
           REFERENCES public.route_table (id, region) ON DELETE CASCADE,
         CONSTRAINT "CHK_56dc081b0a3649dd2ea516920f" CHECK (
           destination LIKE 'pl-%'
           OR destination ~ '^(?:(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?).){3}(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?)/(3[0-2]|[12][0-9]|[0-9])$'
           OR destination ~ '^(([0-9a-fA-F]{1,4}:){7,7}[0-9a-fA-F]{1,4}|([0-9a-fA-F]{1,4}:){1,7}:|([0-9a-fA-F]{1,4}:){1,6}:[0-9a-fA-F]{1,4}|([0-9a-fA-F]{1,4}:){1,5}(:[0-9a-fA-F]{1,4}){1,2}|([0-9a-fA-F]{1,4}:){1,4}(:[0-9a-fA-F]{1,4}){1,3}|([0-9a-fA-F]{1,4}:){1,3}(:[0-9a-fA-F]{1,4}){1,4}|([0-9a-fA-F]{1,4}:){1,2}(:[0-9a-fA-F]{1,4}){1,5}|[0-9a-fA-F]{1,4}:((:[0-9a-fA-F]{1,4}){1,6})|:((:[0-9a-fA-F]{1,4}){1,7}|:))/(12[0-8]|1[01][0-9]|[1-9]?[0-9])$'))""",
    f"""CREATE TABLE public.nat_gateway (
         id SERIAL PRIMARY KEY,
         nat_gateway_id character varying,
         connectivity_type public.nat_gateway_connectivity_type_enum NOT NULL,
         state public.nat_gateway_state_enum,
         tags json,
         {_REGION},
         subnet_id integer NOT NULL,
         elastic_ip_id integer,
         CONSTRAINT "REL_630cbc267698f4fbe265bc9aec" UNIQUE (elastic_ip_id, region),
         CONSTRAINT "Check_elastic_ip_when_public" CHECK (
           (elastic_ip_id IS NOT NULL AND connectivity_type = 'public') OR elastic_ip_id IS NULL),
         CONSTRAINT fk_nat_gateway_subnet FOREIGN KEY (subnet_id, region) REFERENCES public.subnet (id, region),
         CONSTRAINT fk_nat_gateway_elastic_ip FOREIGN KEY (elastic_ip_id, region)
           REFERENCES public.elastic_ip (id, region))""",
    f"""CREATE TABLE public.endpoint_gateway (
         id SERIAL PRIMARY KEY,
         vpc_endpoint_id character varying,
         service public.endpoint_gateway_service_enum NOT NULL,
         policy json,
         state character varying,
         route_table_ids text ARRAY,
         tags json,
         {_REGION},
         vpc_id integer NOT NULL,
         CONSTRAINT fk_endpoint_gateway_vpc FOREIGN KEY (vpc_id, region) REFERENCES public.vpc (id, region))""",
    # IaSQL's after_install.sql: route_table_ids hold ids of one region
    """CREATE OR REPLACE FUNCTION public.check_route_table_ids_region_update() RETURNS trigger
       LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
       BEGIN
         IF OLD.region <> NEW.region AND NEW.route_table_ids IS NOT NULL THEN
           RAISE EXCEPTION 'route_table_ids cannot be transferred between AWS regions. Please NULL this column and try again';
         END IF;
         RETURN NEW;
       END $$""",
    """CREATE TRIGGER check_route_table_ids_region_update BEFORE UPDATE ON public.endpoint_gateway
       FOR EACH ROW EXECUTE FUNCTION public.check_route_table_ids_region_update()""",
)

#: IaSQL's dhcp_options, peering_connection, network_acl, endpoint_interface(_subnets) tables and the
#: foreign keys of vpc.dhcp_options_id and subnet.network_acl_id (run after the tables above).
MORE_INSTALL_SQL = (
    f"""CREATE TABLE public.dhcp_options (
         id SERIAL PRIMARY KEY,
         dhcp_options_id character varying,
         dhcp_configurations json,
         tags json,
         {_REGION},
         CONSTRAINT uq_dhcp_options_id_region UNIQUE (id, region),
         CONSTRAINT uq_dhcp_options_region UNIQUE (dhcp_options_id, region))""",
    """ALTER TABLE public.vpc ADD CONSTRAINT "FK_cd834c0377f2390d05341b7a883" FOREIGN KEY (dhcp_options_id, region)
         REFERENCES public.dhcp_options (id, region)""",
    "CREATE TYPE public.peering_connection_state_enum AS ENUM ('active', 'expired', 'failed', "
    "'initiating-request', 'pending-acceptance', 'provisioning', 'rejected')",
    """CREATE TABLE public.peering_connection (
         id SERIAL PRIMARY KEY,
         peering_connection_id character varying,
         state public.peering_connection_state_enum,
         tags json,
         requester_id integer NOT NULL,
         accepter_id integer NOT NULL,
         CONSTRAINT "FK_b195bf4246be413501fef93c5c7" FOREIGN KEY (requester_id) REFERENCES public.vpc (id),
         CONSTRAINT "FK_aa6d0dcc5d176475e86ca25c4e3" FOREIGN KEY (accepter_id) REFERENCES public.vpc (id))""",
    f"""CREATE TABLE public.network_acl (
         id SERIAL PRIMARY KEY,
         network_acl_id character varying,
         entries json,
         tags json,
         {_REGION},
         vpc_id integer NOT NULL,
         CONSTRAINT uq_network_acl_id_region UNIQUE (network_acl_id, region),
         CONSTRAINT uq_acl_id_region UNIQUE (id, region),
         CONSTRAINT "FK_0f9f559664c88e50857392a1dc4" FOREIGN KEY (vpc_id, region) REFERENCES public.vpc (id, region)
           ON DELETE CASCADE)""",
    """ALTER TABLE public.subnet ADD CONSTRAINT "FK_701856b5cac83db222fc36a127e" FOREIGN KEY (network_acl_id)
         REFERENCES public.network_acl (id)""",
    "CREATE TYPE public.endpoint_interface_service_enum AS ENUM ('s3', 's3-global.accesspoint', 'execute-api', "
    "'rds', 'logs', 'codebuild', 'codedeploy', 'codepipeline', 'ec2', 'ecr', 'ecs', 'elasticloadbalancing', "
    "'elasticache', 'lambda', 'memory-db')",
    "CREATE TYPE public.endpoint_interface_dns_name_record_type_enum AS ENUM ('dualstack', 'ipv4', 'ipv6', "
    "'service-defined')",
    f"""CREATE TABLE public.endpoint_interface (
         id SERIAL PRIMARY KEY,
         vpc_endpoint_id character varying,
         service public.endpoint_interface_service_enum NOT NULL,
         policy json,
         state character varying,
         private_dns_enabled boolean DEFAULT false,
         dns_name_record_type public.endpoint_interface_dns_name_record_type_enum DEFAULT 'ipv4',
         tags json,
         {_REGION},
         vpc_id integer NOT NULL,
         CONSTRAINT "FK_f94801d992a1d1e5237864341a7" FOREIGN KEY (vpc_id, region) REFERENCES public.vpc (id, region))""",
    """CREATE TABLE public.endpoint_interface_subnets (
         endpoint_interface_id integer NOT NULL,
         subnet_id integer NOT NULL,
         CONSTRAINT "PK_edb3c3e9dc6eb5838e9b4203453" PRIMARY KEY (endpoint_interface_id, subnet_id),
         CONSTRAINT "FK_0a1d6b751b00a4f108993dd3385" FOREIGN KEY (endpoint_interface_id)
           REFERENCES public.endpoint_interface (id) ON DELETE CASCADE ON UPDATE CASCADE,
         CONSTRAINT "FK_4cc01b4cb8c79840e521644f416" FOREIGN KEY (subnet_id)
           REFERENCES public.subnet (id) ON DELETE CASCADE ON UPDATE CASCADE)""",
    'CREATE INDEX "IDX_0a1d6b751b00a4f108993dd338" ON public.endpoint_interface_subnets (endpoint_interface_id)',
    'CREATE INDEX "IDX_4cc01b4cb8c79840e521644f41" ON public.endpoint_interface_subnets (subnet_id)',
)

#: Drops MORE_INSTALL_SQL's tables and foreign keys (run before the drops below).
MORE_UNINSTALL_SQL = (
    "DROP TABLE public.endpoint_interface_subnets",
    "DROP TABLE public.endpoint_interface",
    "DROP TYPE public.endpoint_interface_dns_name_record_type_enum",
    "DROP TYPE public.endpoint_interface_service_enum",
    'ALTER TABLE public.subnet DROP CONSTRAINT "FK_701856b5cac83db222fc36a127e"',
    "DROP TABLE public.network_acl",
    "DROP TABLE public.peering_connection",
    "DROP TYPE public.peering_connection_state_enum",
    'ALTER TABLE public.vpc DROP CONSTRAINT "FK_cd834c0377f2390d05341b7a883"',
    "DROP TABLE public.dhcp_options",
)

UNINSTALL_SQL = (
    "DROP TABLE public.endpoint_gateway",
    "DROP FUNCTION IF EXISTS public.check_route_table_ids_region_update()",
    "DROP TABLE public.nat_gateway",
    "DROP TABLE public.route",
    "DROP TABLE public.route_table_association",
    "DROP TABLE public.route_table",
    "DROP TABLE public.elastic_ip",
    "DROP TABLE public.internet_gateway",
    "DROP TABLE public.subnet",
    "DROP TABLE public.vpc",
    "DROP TABLE public.availability_zone",
    "DROP TYPE public.nat_gateway_state_enum",
    "DROP TYPE public.nat_gateway_connectivity_type_enum",
    "DROP TYPE public.endpoint_gateway_service_enum",
    "DROP TYPE public.subnet_state_enum",
    "DROP TYPE public.vpc_state_enum",
)

MODULE = Module(
    name="aws_vpc",
    version=VERSION,
    dependencies=("aws_account",),
    install_sql=INSTALL_SQL + MORE_INSTALL_SQL,
    uninstall_sql=MORE_UNINSTALL_SQL + UNINSTALL_SQL,
    mappers=(AvailabilityZoneMapper(), DhcpOptionsMapper(), VpcDhcpOptionsMapper(), NetworkAclMapper(),
             SubnetNetworkAclMapper(), InternetGatewayMapper(), ElasticIpMapper(), RouteTableMapper(),
             RouteTableAssociationMapper(), RouteMapper(), PeeringConnectionMapper(), NatGatewayMapper(),
             EndpointGatewayMapper(), EndpointInterfaceMapper(), EndpointInterfaceSubnetsMapper()),
    description="VPCs, subnets, internet and NAT gateways, elastic IPs, route tables, routes and gateway endpoints",
)
