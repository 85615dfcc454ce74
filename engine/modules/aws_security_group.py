"""Module ``aws_security_group``: security groups and their rules, in every VPC of the enabled regions.

Tables follow IaSQL's ``aws_security_group`` module: ``security_group(id, description, group_name,
owner_id, group_id, region, vpc_id)`` (cloud id ``group_id``) and ``security_group_rule(id,
security_group_rule_id, is_egress, ip_protocol, from_port, to_port, cidr_ipv4, cidr_ipv6,
prefix_list_id, description, region, security_group_id, source_security_group)`` (cloud id
``security_group_rule_id``). As in IaSQL the module depends on ``aws_vpc``: ``vpc_id`` references
``vpc (id, region)``; the groups of every VPC that has a row are read, and a group inserted with
``vpc_id`` NULL is created in the region's default VPC (the commit's sync then fills in
``vpc_id``). A group's name, description and VPC cannot change in AWS, so such a change replaces
the group, and its rules are created again on the replacement; a rule change replaces the rule.
The ``default`` group cannot be deleted: deleting its row plans nothing and the commit's sync
restores it (it goes with its VPC; delete its row before the VPC's, as the foreign key asks).
A database whose ``aws_security_group`` was installed before this dependency (no ``vpc`` table)
keeps the earlier behaviour: only the default VPC's groups, ``vpc_id`` NULL.
"""

from __future__ import annotations

from typing import Any

from engine.aws import CloudError
from engine.modules.aws_account import VERSION
from engine.modules.base import Col, Mapper, MapperContext, Module, normalize


async def _vpc_maps(mc: MapperContext) -> tuple[dict, dict] | None:
    """``({(region, AWS vpc id): vpc row id}, {vpc row id: (region, AWS vpc id)})`` from the
    ``vpc`` table of ``aws_vpc``; None when that table does not exist (a database whose
    aws_security_group was installed before it depended on aws_vpc: then only the default VPC's
    groups are read, with ``vpc_id`` NULL, as that version did)."""
    [(exists,)] = await mc.fetchall("SELECT pg_catalog.to_regclass('public.vpc') IS NOT NULL")
    if not exists:
        return None
    rows = await mc.fetchall("SELECT id, vpc_id, region FROM public.vpc WHERE vpc_id IS NOT NULL")
    return {(r, v): i for i, v, r in rows}, {i: (r, v) for i, v, r in rows}


async def default_vpc(mc: MapperContext, region: str) -> str | None:
    """The AWS id of ``region``'s default VPC (None without one), asked once per call (memo).
    Raises engine.aws.CloudError."""
    memo_key = ("default_vpc", region)
    if memo_key not in mc.memo:
        vpcs = await mc.call("ec2", region, "describe_vpcs", Filters=[{"Name": "is-default", "Values": ["true"]}])
        mc.memo[memo_key] = vpcs["Vpcs"][0]["VpcId"] if vpcs.get("Vpcs") else None
    return mc.memo[memo_key]


class SecurityGroupMapper(Mapper):
    """``security_group`` rows <-> EC2 security groups of the VPCs that have a ``vpc`` row
    (IaSQL's ``aws_security_group`` mapper)."""

    table = "security_group"
    columns = (Col("id", "int", "pk"), Col("description"), Col("group_name"), Col("owner_id", "text", "cloud"),
               Col("group_id", "text", "cloud"), Col("region"), Col("vpc_id", "int"))
    key = ("group_id",)
    pk = ("id",)
    children = (("security_group_rule", "security_group_id"),)
    cloud_read_uses_db = True  # vpc ids are resolved through the vpc table

    def equals(self, row: dict, cloud: dict) -> bool:
        """True when the row matches the group; a row's NULL ``vpc_id`` stands for the region's
        default VPC (a group elsewhere is then replaced by one in the default VPC)."""
        if row.get("vpc_id") is None and not cloud.get("_default_vpc"):
            return False
        cols = [c for c in self.user_cols if not (c.name == "vpc_id" and row.get("vpc_id") is None)]
        return all(normalize(c.kind, row.get(c.name)) == normalize(c.kind, cloud.get(c.name)) for c in cols)

    def describe(self, rec: dict) -> str:
        """The plan-row description of ``rec``."""
        return f"security group {rec.get('group_name')} ({rec.get('group_id') or 'new'}) in {rec.get('region')}"

    def needs_replace(self, row: dict, cloud: dict) -> bool:
        """True when only delete + create can make the cloud match the row."""
        return True

    def deletable(self, cloud: dict) -> bool:
        """AWS refuses to delete a VPC's ``default`` group."""
        return cloud.get("group_name") != "default"

    @staticmethod
    def _record(g: dict, region: str, vpcs: dict | None, default: str | None) -> dict:
        vpc = None if vpcs is None else vpcs.get((region, g.get("VpcId")))
        return {"description": g.get("Description"), "group_name": g.get("GroupName"),
                "owner_id": g.get("OwnerId"), "group_id": g.get("GroupId"), "region": region, "vpc_id": vpc,
                "_default_vpc": default is not None and g.get("VpcId") == default,
                # a group of a VPC without a row: never inserted by sync
                "_orphan": vpcs is not None and vpc is None}

    async def read(self, mc: MapperContext) -> list[dict]:
        """The groups of the enabled regions (``_orphan`` when their VPC has no row). Raises
        engine.aws.CloudError (reported as SQLSTATE 58000)."""
        maps = await _vpc_maps(mc)
        vpcs = None if maps is None else maps[0]
        out = []
        for region in mc.regions:
            default = await default_vpc(mc, region)
            if maps is None and default is None:
                continue
            kw = {} if maps is not None else {"Filters": [{"Name": "vpc-id", "Values": [default]}]}
            groups = await mc.paginate("ec2", region, "describe_security_groups", "SecurityGroups", **kw)
            out += [self._record(g, region, vpcs, default) for g in groups]
        return out

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """Create the group in the row's VPC (the default VPC when ``vpc_id`` is NULL); returns
        its cloud record. Raises engine.aws.CloudError (DependencyViolation while the row's VPC
        has no cloud id yet)."""
        region = row.get("region") or mc.default_region
        maps = await _vpc_maps(mc)
        vpcs, by_db = maps if maps is not None else (None, {})
        kw = {}
        if row.get("vpc_id") is not None:
            if row["vpc_id"] not in by_db:
                raise CloudError("DependencyViolation", f"vpc #{row['vpc_id']} is not created in the cloud yet",
                                 "ec2.create_security_group")
            region, kw["VpcId"] = by_db[row["vpc_id"]]
        res = await mc.call("ec2", region, "create_security_group", GroupName=row["group_name"],
                            Description=row["description"], **kw)
        try:
            got = await mc.call("ec2", region, "describe_security_groups", GroupIds=[res["GroupId"]])
            rec = self._record(got["SecurityGroups"][0], region, vpcs, await default_vpc(mc, region))
        except CloudError as e:
            try:  # never leave a group the table cannot record
                await mc.call("ec2", region, "delete_security_group", GroupId=res["GroupId"])
            except CloudError:
                e.left = {"group_id": res["GroupId"], "group_name": row["group_name"], "region": region}
            raise
        return rec

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """Make the cloud record match the row in place; returns the new record. Raises engine.aws.CloudError."""
        raise CloudError("Unsupported", "security groups are replaced, not updated", "ec2.update")

    async def delete(self, mc: MapperContext, cloud: dict) -> None:
        """Delete the cloud resource. Raises engine.aws.CloudError."""
        if cloud.get("group_name") == "default":
            return  # AWS refuses; the sync that follows restores the row
        await mc.call("ec2", cloud["region"], "delete_security_group", GroupId=cloud["group_id"])


class SecurityGroupRuleMapper(Mapper):
    """``security_group_rule`` rows <-> EC2 security group rules (describe_security_group_rules)."""

    table = "security_group_rule"
    columns = (Col("id", "int", "pk"), Col("security_group_rule_id", "text", "cloud"), Col("is_egress", "bool"),
               Col("ip_protocol"), Col("from_port", "int"), Col("to_port", "int"), Col("cidr_ipv4", "cidr"),
               Col("cidr_ipv6", "cidr"), Col("prefix_list_id"), Col("description"), Col("region"),
               Col("security_group_id", "int"), Col("source_security_group", "int"))
    key = ("security_group_rule_id",)
    pk = ("id",)
    cloud_read_uses_db = True  # group ids are resolved through the security_group table

    def describe(self, rec: dict) -> str:
        """The plan-row description of ``rec``."""
        direction = "egress" if rec.get("is_egress") else "ingress"
        target = rec.get("cidr_ipv4") or rec.get("cidr_ipv6") or rec.get("prefix_list_id") or (
            f"group #{rec.get('source_security_group')}")
        return (f"{direction} rule {rec.get('ip_protocol')} {rec.get('from_port')}-{rec.get('to_port')} "
                f"{target} on security group #{rec.get('security_group_id')}")

    def needs_replace(self, row: dict, cloud: dict) -> bool:
        """True when only delete + create can make the cloud match the row."""
        return True

    async def _group_maps(self, mc: MapperContext) -> tuple[dict, dict]:
        """``({AWS group id: row id}, {row id: AWS group id})`` from the security_group table."""
        rows = await mc.fetchall("SELECT id, group_id FROM public.security_group WHERE group_id IS NOT NULL")
        return {g: i for i, g in rows}, {i: g for i, g in rows}

    @staticmethod
    def _record(r: dict, region: str, by_aws: dict) -> dict | None:
        gid = by_aws.get(r.get("GroupId"))
        if gid is None:
            return None
        ref = (r.get("ReferencedGroupInfo") or {}).get("GroupId")
        return {"security_group_rule_id": r["SecurityGroupRuleId"], "is_egress": bool(r.get("IsEgress")),
                "ip_protocol": r.get("IpProtocol"), "from_port": r.get("FromPort"), "to_port": r.get("ToPort"),
                "cidr_ipv4": r.get("CidrIpv4"), "cidr_ipv6": r.get("CidrIpv6"),
                "prefix_list_id": r.get("PrefixListId"), "description": r.get("Description") or None,
                "region": region, "security_group_id": gid,
                "source_security_group": by_aws.get(ref) if ref else None,
                "_aws_group_id": r.get("GroupId")}

    async def read(self, mc: MapperContext) -> list[dict]:
        """Every cloud record of this type. Raises engine.aws.CloudError (reported as SQLSTATE 58000)."""
        by_aws, _ = await self._group_maps(mc)
        in_region: dict[str, list[str]] = {}
        for gid, region in await mc.fetchall("SELECT group_id, region FROM public.security_group "
                                             "WHERE group_id IS NOT NULL ORDER BY id"):
            in_region.setdefault(region, []).append(gid)
        out = []
        for region in mc.regions:
            ids = in_region.get(region) or []
            for i in range(0, len(ids), 100):  # filter values are bounded in AWS
                rules = await mc.paginate("ec2", region, "describe_security_group_rules", "SecurityGroupRules",
                                          Filters=[{"Name": "group-id", "Values": ids[i:i + 100]}])
                for r in rules:
                    rec = self._record(r, region, by_aws)
                    if rec is not None:
                        out.append(rec)
        return out

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """Create the row's resource in the cloud; returns its cloud record. Raises engine.aws.CloudError."""
        by_aws, by_db = await self._group_maps(mc)
        group = by_db.get(row.get("security_group_id"))
        if group is None:
            raise CloudError("DependencyViolation",
                             f"security group #{row.get('security_group_id')} is not created in the cloud yet",
                             "ec2.authorize_security_group_rule")
        region = row.get("region") or mc.default_region
        perm: dict[str, Any] = {"IpProtocol": str(row.get("ip_protocol") or "-1")}
        if perm["IpProtocol"] != "-1":
            if row.get("from_port") is not None:
                perm["FromPort"] = int(row["from_port"])
            if row.get("to_port") is not None:
                perm["ToPort"] = int(row["to_port"])
        desc = {"Description": row["description"]} if row.get("description") else {}
        if row.get("source_security_group") is not None:
            src = by_db.get(row["source_security_group"])
            if src is None:
                raise CloudError("DependencyViolation", "source security group is not created in the cloud yet",
                                 "ec2.authorize_security_group_rule")
            perm["UserIdGroupPairs"] = [{"GroupId": src, **desc}]
        if row.get("cidr_ipv4"):
            perm["IpRanges"] = [{"CidrIp": str(row["cidr_ipv4"]), **desc}]
        if row.get("cidr_ipv6"):
            perm["Ipv6Ranges"] = [{"CidrIpv6": str(row["cidr_ipv6"]), **desc}]
        if row.get("prefix_list_id"):
            perm["PrefixListIds"] = [{"PrefixListId": row["prefix_list_id"], **desc}]
        op = "authorize_security_group_egress" if row.get("is_egress") else "authorize_security_group_ingress"
        try:
            res = await mc.call("ec2", region, op, GroupId=group, IpPermissions=[perm])
        except CloudError as e:
            if e.code != "InvalidPermission.Duplicate":
                raise
            # the rule exists already (a new group's default egress rule): adopt it
            existing = await self._find(mc, region, group, row, by_aws)
            if existing is None:
                raise
            return existing
        rules = res.get("SecurityGroupRules") or []
        if not rules:
            raise CloudError("NoRuleReturned", f"{op} returned no rule", f"ec2.{op}")
        rec = self._record(rules[0], region, by_aws)
        assert rec is not None
        return rec

    async def _find(self, mc: MapperContext, region: str, group: str, row: dict, by_aws: dict) -> dict | None:
        """The group's existing rule that matches ``row`` (direction, protocol, ports, target)."""
        rules = await mc.paginate("ec2", region, "describe_security_group_rules", "SecurityGroupRules",
                                  Filters=[{"Name": "group-id", "Values": [group]}])
        want = {c: normalize(self.col(c).kind, row.get(c)) for c in
                ("is_egress", "ip_protocol", "from_port", "to_port", "cidr_ipv4", "cidr_ipv6", "prefix_list_id")}
        if want["ip_protocol"] == "-1":
            want["from_port"] = want["to_port"] = None
        for r in rules:
            rec = self._record(r, region, by_aws)
            if rec is None:
                continue
            got = {c: normalize(self.col(c).kind, rec.get(c)) for c in want}
            if got["ip_protocol"] == "-1":
                got["from_port"] = got["to_port"] = None
            if got == want:
                return rec
        return None

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """Make the cloud record match the row in place; returns the new record. Raises engine.aws.CloudError."""
        raise CloudError("Unsupported", "security group rules are replaced, not updated", "ec2.update")

    async def delete(self, mc: MapperContext, cloud: dict) -> None:
        """Delete the cloud resource. Raises engine.aws.CloudError."""
        group = cloud.get("_aws_group_id")
        if group is None:
            _, by_db = await self._group_maps(mc)
            group = by_db.get(cloud.get("security_group_id"))
        op = "revoke_security_group_egress" if cloud.get("is_egress") else "revoke_security_group_ingress"
        try:
            await mc.call("ec2", cloud["region"], op, GroupId=group,
                          SecurityGroupRuleIds=[cloud["security_group_rule_id"]])
        except CloudError as e:
            if e.code not in ("InvalidGroup.NotFound", "InvalidSecurityGroupRuleId.NotFound"):
                raise


MODULE = Module(
    name="aws_security_group",
    version=VERSION,
    dependencies=("aws_account", "aws_vpc"),
    install_sql=(
        """CREATE TABLE public.security_group (
             id SERIAL PRIMARY KEY,
             description character varying NOT NULL,
             group_name character varying NOT NULL,
             owner_id character varying,
             group_id character varying,
             region character varying NOT NULL DEFAULT public.default_aws_region() REFERENCES public.aws_regions (region),
             vpc_id integer,
             CONSTRAINT uq_security_group_region UNIQUE (id, region),
             CONSTRAINT "UQ_groupNameByVpc" UNIQUE (group_name, vpc_id, region),
             CONSTRAINT fk_security_group_vpc FOREIGN KEY (vpc_id, region) REFERENCES public.vpc (id, region))""",
        """CREATE TABLE public.security_group_rule (
             id SERIAL PRIMARY KEY,
             security_group_rule_id character varying,
             is_egress boolean NOT NULL,
             ip_protocol character varying,
             from_port integer,
             to_port integer,
             cidr_ipv4 cidr,
             cidr_ipv6 cidr,
             prefix_list_id character varying,
             description character varying,
             region character varying NOT NULL DEFAULT public.default_aws_region() REFERENCES public.aws_regions (region),
             security_group_id integer,
             source_security_group integer REFERENCES public.security_group (id),
             CONSTRAINT uq_security_group_rule_region UNIQUE (id, region),
             CONSTRAINT "UQ_rule" UNIQUE (is_egress, ip_protocol, from_port, to_port, cidr_ipv4,
                                         security_group_id, region),
             CONSTRAINT fk_security_group_rule_group FOREIGN KEY (security_group_id, region)
               REFERENCES public.security_group (id, region),
             CONSTRAINT "Check_security_or_ip_permissions" CHECK (
               (source_security_group IS NULL AND (from_port IS NOT NULL AND to_port IS NOT NULL
                 AND (cidr_ipv4 IS NOT NULL OR cidr_ipv6 IS NOT NULL OR prefix_list_id IS NOT NULL)))
               OR (source_security_group IS NOT NULL AND ((from_port IS NULL OR from_port = -1)
                 AND (to_port IS NULL OR to_port = -1) AND (cidr_ipv4 IS NULL OR cidr_ipv4 = '0.0.0.0/0')
                 AND cidr_ipv6 IS NULL))))""",
    ),
    uninstall_sql=("DROP TABLE public.security_group_rule", "DROP TABLE public.security_group"),
    mappers=(SecurityGroupMapper(), SecurityGroupRuleMapper()),
    description="EC2 security groups and rules",
)
