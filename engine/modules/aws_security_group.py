"""Module ``aws_security_group``: security groups and their rules (default VPC of enabled regions).

Tables follow IaSQL's ``aws_security_group`` module: ``security_group(id, description, group_name,
owner_id, group_id, region, vpc_id)`` (cloud id ``group_id``) and ``security_group_rule(id,
security_group_rule_id, is_egress, ip_protocol, from_port, to_port, cidr_ipv4, cidr_ipv6,
prefix_list_id, description, region, security_group_id, source_security_group)`` (cloud id
``security_group_rule_id``). IaSQL's ``vpc_id`` references the ``aws_vpc`` module, which does not
exist here yet: ``vpc_id`` is a plain nullable integer, NULL meaning the region's default VPC, and
only default-VPC groups are read. A group's name and description cannot change in AWS, so such a
change replaces the group, and its rules are created again on the replacement; a rule change
replaces the rule. The ``default`` group cannot be deleted: deleting its row plans nothing and the
commit's sync restores it.
"""

from __future__ import annotations

from typing import Any

from engine.aws import CloudError
from engine.modules.aws_account import VERSION
from engine.modules.base import Col, Mapper, MapperContext, Module, normalize


async def _default_vpc(mc: MapperContext, region: str) -> str | None:
    memo_key = ("default_vpc", region)
    if memo_key not in mc.memo:
        vpcs = await mc.call("ec2", region, "describe_vpcs", Filters=[{"Name": "is-default", "Values": ["true"]}])
        mc.memo[memo_key] = vpcs["Vpcs"][0]["VpcId"] if vpcs.get("Vpcs") else None
    return mc.memo[memo_key]


class SecurityGroupMapper(Mapper):
    """``security_group`` rows <-> EC2 security groups of the default VPC."""

    table = "security_group"
    columns = (Col("id", "int", "pk"), Col("description"), Col("group_name"), Col("owner_id", "text", "cloud"),
               Col("group_id", "text", "cloud"), Col("region"), Col("vpc_id", "int", "cloud"))
    key = ("group_id",)
    pk = ("id",)
    children = (("security_group_rule", "security_group_id"),)

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
    def _record(g: dict, region: str) -> dict:
        return {"description": g.get("Description"), "group_name": g.get("GroupName"),
                "owner_id": g.get("OwnerId"), "group_id": g.get("GroupId"), "region": region, "vpc_id": None}

    async def read(self, mc: MapperContext) -> list[dict]:
        """Every cloud record of this type. Raises engine.aws.CloudError (reported as SQLSTATE 58000)."""
        out = []
        for region in mc.regions:
            vpc = await _default_vpc(mc, region)
            if vpc is None:
                continue
            groups = await mc.paginate("ec2", region, "describe_security_groups", "SecurityGroups",
                                       Filters=[{"Name": "vpc-id", "Values": [vpc]}])
            out += [self._record(g, region) for g in groups]
        return out

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """Create the row's resource in the cloud; returns its cloud record. Raises engine.aws.CloudError."""
        region = row.get("region") or mc.default_region
        res = await mc.call("ec2", region, "create_security_group", GroupName=row["group_name"],
                            Description=row["description"])
        try:
            got = await mc.call("ec2", region, "describe_security_groups", GroupIds=[res["GroupId"]])
        except CloudError as e:
            try:  # never leave a group the table cannot record
                await mc.call("ec2", region, "delete_security_group", GroupId=res["GroupId"])
            except CloudError:
                e.left = {"group_id": res["GroupId"], "group_name": row["group_name"], "region": region}
            raise
        return self._record(got["SecurityGroups"][0], region)

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
        out = []
        for region in mc.regions:
            vpc = await _default_vpc(mc, region)
            if vpc is None:
                continue
            groups = await mc.paginate("ec2", region, "describe_security_groups", "SecurityGroups",
                                       Filters=[{"Name": "vpc-id", "Values": [vpc]}])
            ids = [g["GroupId"] for g in groups if g["GroupId"] in by_aws]
            if not ids:
                continue
            rules = await mc.paginate("ec2", region, "describe_security_group_rules", "SecurityGroupRules",
                                      Filters=[{"Name": "group-id", "Values": ids}])
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
    dependencies=("aws_account",),
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
             CONSTRAINT "UQ_groupNameByVpc" UNIQUE (group_name, vpc_id, region))""",
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
