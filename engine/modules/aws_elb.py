"""Module ``aws_elb``: application/network load balancers, target groups and listeners (ELBv2).

Tables, columns, types, enums, keys, defaults and constraints follow IaSQL v0.1's ``aws_elb``
migration (``src/modules/aws_elb/migration/1667909465542-aws_elb.ts``, the same in v0.1.0 to
v0.1.9) and its ``sql/*.sql``; what each mapper reads, compares, updates in place or replaces
follows ``src/modules/aws_elb/mappers/*.ts``. Tables, in dependency order:

- ``target_group``: cloud id ``target_group_arn``. A new name, target type, VPC, port, protocol,
  IP address type, protocol version or region replaces it; the health-check columns are updated
  in place (``modify_target_group``). A NULL ``vpc`` means the region's default VPC (as IaSQL's
  create), NULL optional columns mean AWS's choice (the sync writes it back). AWS refuses to
  delete a target group a listener still forwards to (ResourceInUse), so a replace of such a
  group fails and the commit is reverted: point the listener elsewhere first (IaSQL has the same
  TODO).
- ``load_balancer``: cloud id ``load_balancer_arn``. A new name, type, scheme, VPC or region
  replaces it (its listeners are created again on the replacement); ``ip_address_type``,
  ``subnets`` and ``attributes`` are updated in place (``set_ip_address_type``, ``set_subnets``,
  ``modify_load_balancer_attributes``). ``subnets`` holds AWS subnet ids (``varchar[]``, checked
  by IaSQL's ``check_load_balancer_subnets``); NULL means the subnets of the row's ``vpc`` (or of
  the default VPC when ``vpc`` is NULL too). IaSQL takes every subnet of the region there, which
  AWS refuses as soon as the region has two VPCs; this module keeps to one VPC. ``attributes``
  is IaSQL's ``[{"Key", "Value"}]`` list; only the keys a row lists are compared (AWS returns all
  of them, the sync writes them back). ``dns_name``, ``canonical_hosted_zone_id``,
  ``created_time``, ``state`` and ``availability_zones`` are cloud-managed.
- ``load_balancer_security_groups``: IaSQL's many-to-many join table of a load balancer's
  security groups (``load_balancer_id``, ``security_group_id``, both row ids). A load balancer
  is created with the groups its join rows name; a join row added or deleted later is a
  ``set_security_groups`` call on its load balancer.
- ``listener``: cloud id ``listener_arn``; a new ``load_balancer_id`` replaces it, anything else
  is a ``modify_listener``. Only ``forward`` actions exist (as IaSQL's ``action_type_enum``).
  ``certificate_id`` references ``certificate (id)`` of ``aws_acm`` (a dependency, as in IaSQL):
  an HTTPS listener is created with that certificate's ARN, and a listener read from the cloud
  gets the id of the certificate row whose ``arn`` it names (NULL when there is none).

IaSQL's ``check_subnets_by_load_balancer`` trigger on ``subnet`` (the other half of the array
"foreign key") is installed too, narrowed to what a foreign key refuses: deleting a subnet row
a load balancer names, or changing its ``subnet_id``. IaSQL's fires on every update of such a
row, which would refuse the engine's own sync of ``available_ip_address_count``.

moto (5.2.5, the tests' cloud) answers every call used here: create/describe/delete_load_balancers,
describe/modify_load_balancer_attributes, set_ip_address_type, set_subnets, set_security_groups,
create/describe/modify/delete_target_group(s), create/describe/modify/delete_listener(s). Where it
differs from AWS: a new load balancer is ``provisioning`` until the first describe (the create
waits for ``active`` all the same), an application load balancer created without security groups
gets none (AWS gives it the VPC's default group), and it creates no network interfaces.
"""

from __future__ import annotations

import asyncio
from typing import Any

from engine.aws import CloudError
from engine.modules.aws_account import VERSION
from engine.modules.aws_security_group import _vpc_maps, default_vpc
from engine.modules.base import Col, Mapper, MapperContext, Module, normalize, subnet_guard_sql

#: How often and how long (seconds) a create waits for ``active`` and a delete for the end.
WAIT_TRIES, WAIT_DELAY = 60, 1.0
#: IaSQL's SSL policy for a listener with a certificate and no policy.
DEFAULT_SSL_POLICY = "ELBSecurityPolicy-2016-08"


def _region_of_arn(arn: str) -> str:
    """The region field of an ARN (``arn:aws:elasticloadbalancing:REGION:...``)."""
    return arn.split(":")[3]


def _same(kind: str, a: Any, b: Any) -> bool:
    """True when ``a`` and ``b`` compare equal as column values of ``kind``."""
    return normalize(kind, a) == normalize(kind, b)


async def _vpcs(mc: MapperContext) -> tuple[dict, dict]:
    """``({(region, AWS vpc id): vpc row id}, {vpc row id: (region, AWS vpc id)})``."""
    maps = await _vpc_maps(mc)
    return maps if maps is not None else ({}, {})


async def _vpc_is_default(mc: MapperContext, region: str, vpc_id: str | None) -> bool:
    """True when ``vpc_id`` is the AWS id of ``region``'s default VPC."""
    return vpc_id is not None and vpc_id == await default_vpc(mc, region)


def _optional_equal(mapper: Mapper, row: dict, cloud: dict, names: tuple[str, ...]) -> bool:
    """True when every column of ``names`` whose row value is not NULL matches the cloud (a NULL
    optional column stands for AWS's choice)."""
    for n in names:
        if row.get(n) is None:
            continue
        if not _same(mapper.col(n).kind, row.get(n), cloud.get(n)):
            return False
    return True


def _vpc_equal(row: dict, cloud: dict) -> bool:
    """A row's ``vpc`` matches the cloud's; NULL stands for the region's default VPC (or none)."""
    if row.get("vpc") is None:
        return cloud.get("vpc") is None or bool(cloud.get("_default_vpc"))
    return row.get("vpc") == cloud.get("vpc")


# -- target_group -------------------------------------------------------------------------------------
class TargetGroupMapper(Mapper):
    """``target_group`` rows <-> ELBv2 target groups (IaSQL's ``TargetGroupMapper``)."""

    table = "target_group"
    columns = (Col("id", "int", "pk"), Col("target_group_name"), Col("target_type"),
               Col("target_group_arn", "text", "cloud"), Col("ip_address_type"), Col("protocol"),
               Col("port", "int"), Col("health_check_protocol"), Col("health_check_port"),
               Col("health_check_enabled", "bool"), Col("health_check_interval_seconds", "int"),
               Col("health_check_timeout_seconds", "int"), Col("healthy_threshold_count", "int"),
               Col("unhealthy_threshold_count", "int"), Col("health_check_path"), Col("protocol_version"),
               Col("region"), Col("vpc", "int"))
    key = ("target_group_arn",)
    pk = ("id",)
    cloud_read_uses_db = True  # vpc ids are resolved through the vpc table

    #: changed in place by modify_target_group
    HEALTH = ("health_check_protocol", "health_check_port", "health_check_enabled",
              "health_check_interval_seconds", "health_check_timeout_seconds", "healthy_threshold_count",
              "unhealthy_threshold_count", "health_check_path")
    #: a change replaces the group (IaSQL's ``updateOrReplace``); optional ones may be NULL
    FIXED_OPTIONAL = ("port", "protocol", "ip_address_type", "protocol_version")

    def describe(self, rec: dict) -> str:
        """The plan-row description of ``rec``."""
        return f"target group {rec.get('target_group_name')} ({rec.get('target_group_arn') or 'new'}) in {rec.get('region')}"

    def equals(self, row: dict, cloud: dict) -> bool:
        """IaSQL's ``equals``, where a NULL optional column or ``vpc`` means AWS's choice."""
        return (row.get("target_group_name") == cloud.get("target_group_name")
                and row.get("target_type") == cloud.get("target_type")
                and row.get("region") == cloud.get("region") and _vpc_equal(row, cloud)
                and _optional_equal(self, row, cloud, self.FIXED_OPTIONAL + self.HEALTH))

    def needs_replace(self, row: dict, cloud: dict) -> bool:
        """True when a column other than the health check ones differs (IaSQL's ``updateOrReplace``)."""
        return not (row.get("target_group_name") == cloud.get("target_group_name")
                    and row.get("target_type") == cloud.get("target_type")
                    and row.get("region") == cloud.get("region") and _vpc_equal(row, cloud)
                    and _optional_equal(self, row, cloud, self.FIXED_OPTIONAL))

    @staticmethod
    def _record(tg: dict, region: str, vpcs: dict, default: str | None) -> dict:
        """The cloud record (a dict of column values and ``_`` notes) of one AWS answer."""
        aws_vpc = tg.get("VpcId")
        vpc = vpcs.get((region, aws_vpc)) if aws_vpc else None
        return {"target_group_name": tg.get("TargetGroupName"), "target_type": tg.get("TargetType"),
                "target_group_arn": tg.get("TargetGroupArn"), "ip_address_type": tg.get("IpAddressType"),
                "protocol": tg.get("Protocol"), "port": tg.get("Port"),
                "health_check_protocol": tg.get("HealthCheckProtocol"),
                "health_check_port": tg.get("HealthCheckPort"), "health_check_enabled": tg.get("HealthCheckEnabled"),
                "health_check_interval_seconds": tg.get("HealthCheckIntervalSeconds"),
                "health_check_timeout_seconds": tg.get("HealthCheckTimeoutSeconds"),
                "healthy_threshold_count": tg.get("HealthyThresholdCount"),
                "unhealthy_threshold_count": tg.get("UnhealthyThresholdCount"),
                "health_check_path": tg.get("HealthCheckPath"), "protocol_version": tg.get("ProtocolVersion"),
                "region": region, "vpc": vpc, "_default_vpc": aws_vpc is not None and aws_vpc == default,
                # a group in a VPC without a row (IaSQL skips those too)
                "_orphan": aws_vpc is not None and vpc is None}

    async def read(self, mc: MapperContext) -> list[dict]:
        """The target groups of the enabled regions. Raises engine.aws.CloudError (SQLSTATE 58000)."""
        vpcs, _ = await _vpcs(mc)
        out = []
        for region in mc.regions:
            default = await default_vpc(mc, region)
            for tg in await mc.paginate("elbv2", region, "describe_target_groups", "TargetGroups"):
                out.append(self._record(tg, region, vpcs, default))
        return out

    async def _one(self, mc: MapperContext, region: str, arn: str) -> dict:
        """The cloud record of one resource, read again. Raises CloudError."""
        vpcs, _ = await _vpcs(mc)
        got = await mc.call("elbv2", region, "describe_target_groups", TargetGroupArns=[arn])
        return self._record(got["TargetGroups"][0], region, vpcs, await default_vpc(mc, region))

    def _health_kwargs(self, row: dict) -> dict:
        """``modify_target_group``/``create_target_group`` arguments of the row's non-NULL health-check columns."""
        names = {"health_check_protocol": "HealthCheckProtocol", "health_check_port": "HealthCheckPort",
                 "health_check_enabled": "HealthCheckEnabled",
                 "health_check_interval_seconds": "HealthCheckIntervalSeconds",
                 "health_check_timeout_seconds": "HealthCheckTimeoutSeconds",
                 "healthy_threshold_count": "HealthyThresholdCount",
                 "unhealthy_threshold_count": "UnhealthyThresholdCount", "health_check_path": "HealthCheckPath"}
        return {aws: row[col] for col, aws in names.items() if row.get(col) is not None}

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """Create the target group in the row's VPC (the default VPC when ``vpc`` is NULL, none for
        ``lambda`` targets); returns its cloud record. Raises engine.aws.CloudError
        (DependencyViolation while the row's VPC has no cloud id yet)."""
        region = row.get("region") or mc.default_region
        _, by_db = await _vpcs(mc)
        kw: dict[str, Any] = {"Name": row["target_group_name"], "TargetType": row["target_type"]}
        if row.get("vpc") is not None:
            if row["vpc"] not in by_db:
                raise CloudError("DependencyViolation", f"vpc #{row['vpc']} is not created in the cloud yet",
                                 "elbv2.create_target_group")
            kw["VpcId"] = by_db[row["vpc"]][1]
        elif row["target_type"] != "lambda":
            default = await default_vpc(mc, region)
            if default:
                kw["VpcId"] = default
        for col, aws in (("port", "Port"), ("protocol", "Protocol"), ("protocol_version", "ProtocolVersion"),
                         ("ip_address_type", "IpAddressType")):
            if row.get(col) is not None:
                kw[aws] = row[col]
        kw.update(self._health_kwargs(row))
        res = await mc.call("elbv2", region, "create_target_group", **kw)
        arn = res["TargetGroups"][0]["TargetGroupArn"]
        try:
            return await self._one(mc, region, arn)
        except CloudError as e:
            try:  # never leave a group the table cannot record
                await mc.call("elbv2", region, "delete_target_group", TargetGroupArn=arn)
            except CloudError:
                e.left = {"target_group_arn": arn, "target_group_name": row["target_group_name"], "region": region}
            raise

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """Set the health-check columns in place (``modify_target_group``); returns the new record.
        Raises engine.aws.CloudError."""
        region = cloud["region"]
        kw = self._health_kwargs(row)
        if kw:
            await mc.call("elbv2", region, "modify_target_group", TargetGroupArn=cloud["target_group_arn"], **kw)
        return await self._one(mc, region, cloud["target_group_arn"])

    async def delete(self, mc: MapperContext, cloud: dict) -> None:
        """Delete the target group. Raises engine.aws.CloudError (ResourceInUse while a listener uses it)."""
        await mc.call("elbv2", cloud["region"], "delete_target_group", TargetGroupArn=cloud["target_group_arn"])


# -- load_balancer ------------------------------------------------------------------------------------
def _attrs(value: Any) -> dict:
    """IaSQL's ``[{"Key", "Value"}]`` attributes as ``{key: value}``."""
    if isinstance(value, str):
        import json

        value = json.loads(value)
    return {a.get("Key"): a.get("Value") for a in value or () if isinstance(a, dict)}


class LoadBalancerMapper(Mapper):
    """``load_balancer`` rows <-> ELBv2 load balancers (IaSQL's ``LoadBalancerMapper``)."""

    table = "load_balancer"
    columns = (Col("id", "int", "pk"), Col("load_balancer_name"), Col("load_balancer_arn", "text", "cloud"),
               Col("dns_name", "text", "cloud"), Col("canonical_hosted_zone_id", "text", "cloud"),
               Col("created_time", "timestamp", "cloud"), Col("scheme"), Col("state", "text", "cloud"),
               Col("load_balancer_type"), Col("subnets", "text[]"), Col("availability_zones", "text[]", "cloud"),
               Col("ip_address_type"), Col("customer_owned_ipv4_pool"), Col("region"), Col("attributes", "json"),
               Col("vpc", "int"))
    key = ("load_balancer_arn",)
    pk = ("id",)
    children = (("listener", "load_balancer_id"),)
    cloud_read_uses_db = True  # vpc ids are resolved through the vpc table

    def describe(self, rec: dict) -> str:
        """The plan-row description of ``rec``."""
        return (f"{rec.get('load_balancer_type')} load balancer {rec.get('load_balancer_name')} "
                f"({rec.get('load_balancer_arn') or 'new'}) in {rec.get('region')}")

    def _fixed_equal(self, row: dict, cloud: dict) -> bool:
        """True when nothing differs that only a replace can change."""
        return (row.get("load_balancer_name") == cloud.get("load_balancer_name")
                and row.get("load_balancer_type") == cloud.get("load_balancer_type")
                and row.get("scheme") == cloud.get("scheme") and row.get("region") == cloud.get("region")
                # a NULL vpc follows from the row's subnets when it lists some
                and ((row.get("vpc") is None and bool(row.get("subnets"))) or _vpc_equal(row, cloud)))

    def equals(self, row: dict, cloud: dict) -> bool:
        """IaSQL's ``equals`` over the user columns; NULL ``subnets``/``vpc``/``attributes``/
        ``customer_owned_ipv4_pool`` mean AWS's choice and only listed attribute keys count."""
        if not (self._fixed_equal(row, cloud) and row.get("ip_address_type") == cloud.get("ip_address_type")):
            return False
        if not _optional_equal(self, row, cloud, ("subnets", "customer_owned_ipv4_pool")):
            return False
        have = _attrs(cloud.get("attributes"))
        return all(have.get(k) == v for k, v in _attrs(row.get("attributes")).items())

    def needs_replace(self, row: dict, cloud: dict) -> bool:
        """True when name, type, scheme, VPC or region differ (IaSQL's ``updateOrReplace``)."""
        return not self._fixed_equal(row, cloud)

    @staticmethod
    async def _record(mc: MapperContext, lb: dict, region: str, vpcs: dict) -> dict:
        """The cloud record (a dict of column values and ``_`` notes) of one AWS answer."""
        attrs = await mc.call("elbv2", region, "describe_load_balancer_attributes",
                              LoadBalancerArn=lb["LoadBalancerArn"])
        zones = lb.get("AvailabilityZones") or []
        vpc = vpcs.get((region, lb.get("VpcId")))
        return {"load_balancer_name": lb.get("LoadBalancerName"), "load_balancer_arn": lb.get("LoadBalancerArn"),
                "dns_name": lb.get("DNSName"), "canonical_hosted_zone_id": lb.get("CanonicalHostedZoneId"),
                "created_time": lb.get("CreatedTime"), "scheme": lb.get("Scheme"),
                "state": (lb.get("State") or {}).get("Code"), "load_balancer_type": lb.get("Type"),
                "subnets": [z.get("SubnetId") or "" for z in zones] or None,
                "availability_zones": [z.get("ZoneName") or "" for z in zones] or None,
                "ip_address_type": lb.get("IpAddressType"),
                "customer_owned_ipv4_pool": lb.get("CustomerOwnedIpv4Pool"), "region": region,
                "attributes": sorted(({"Key": a["Key"], "Value": a.get("Value")} for a in attrs.get("Attributes") or []),
                                     key=lambda a: a["Key"]) or None,
                "vpc": vpc, "_default_vpc": await _vpc_is_default(mc, region, lb.get("VpcId")),
                "_security_groups": list(lb.get("SecurityGroups") or []),
                "_orphan": vpc is None}

    async def read(self, mc: MapperContext) -> list[dict]:
        """The load balancers of the enabled regions (``_orphan`` when their VPC has no row).
        Raises engine.aws.CloudError (SQLSTATE 58000)."""
        vpcs, _ = await _vpcs(mc)
        out = []
        for region in mc.regions:
            for lb in await mc.paginate("elbv2", region, "describe_load_balancers", "LoadBalancers"):
                out.append(await self._record(mc, lb, region, vpcs))
        return out

    async def _one(self, mc: MapperContext, region: str, arn: str) -> dict:
        """The cloud record of one resource, read again. Raises CloudError."""
        vpcs, _ = await _vpcs(mc)
        got = await mc.call("elbv2", region, "describe_load_balancers", LoadBalancerArns=[arn])
        return await self._record(mc, got["LoadBalancers"][0], region, vpcs)

    async def _subnets(self, mc: MapperContext, row: dict, region: str) -> list[str]:
        """The row's subnets, else the subnets of its VPC (the default VPC when ``vpc`` is NULL)."""
        if row.get("subnets"):
            return list(row["subnets"])
        _, by_db = await _vpcs(mc)
        if row.get("vpc") is not None:
            if row["vpc"] not in by_db:
                raise CloudError("DependencyViolation", f"vpc #{row['vpc']} is not created in the cloud yet",
                                 "elbv2.create_load_balancer")
            vpc = by_db[row["vpc"]][1]
        else:
            vpc = await default_vpc(mc, region)
        subnets = await mc.paginate("ec2", region, "describe_subnets", "Subnets",
                                    Filters=[{"Name": "vpc-id", "Values": [vpc or ""]}])
        return sorted(s["SubnetId"] for s in subnets)

    async def _groups(self, mc: MapperContext, row: dict) -> list[str]:
        """AWS ids of the security groups the row's join rows name (DependencyViolation while one
        has no cloud id yet)."""
        if row.get("id") is None:
            return list(row.get("_security_groups") or [])  # a cloud record re-created by an undo
        got = await mc.fetchall(
            "SELECT g.id, g.group_id FROM public.load_balancer_security_groups j "
            "JOIN public.security_group g ON g.id = j.security_group_id WHERE j.load_balancer_id = $1 ORDER BY g.id",
            (row["id"],))
        missing = [str(i) for i, gid in got if gid is None]
        if missing:
            raise CloudError("DependencyViolation", f"security group #{', #'.join(missing)} is not created in the "
                             "cloud yet", "elbv2.create_load_balancer")
        return [gid for _, gid in got]

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """Create the load balancer (with its join rows' security groups for ``application``), wait
        for ``active``, set the row's attributes; returns its cloud record. Raises
        engine.aws.CloudError."""
        region = row.get("region") or mc.default_region
        kw: dict[str, Any] = {"Name": row["load_balancer_name"], "Subnets": await self._subnets(mc, row, region),
                              "Scheme": row["scheme"], "Type": row["load_balancer_type"],
                              "IpAddressType": row["ip_address_type"]}
        if row.get("customer_owned_ipv4_pool"):
            kw["CustomerOwnedIpv4Pool"] = row["customer_owned_ipv4_pool"]
        if row["load_balancer_type"] == "application":
            groups = await self._groups(mc, row)
            if groups:
                kw["SecurityGroups"] = groups
        res = await mc.call("elbv2", region, "create_load_balancer", **kw)
        arn = res["LoadBalancers"][0]["LoadBalancerArn"]
        try:
            for _ in range(WAIT_TRIES):
                got = await mc.call("elbv2", region, "describe_load_balancers", LoadBalancerArns=[arn])
                if (got["LoadBalancers"][0].get("State") or {}).get("Code") != "provisioning":
                    break
                await asyncio.sleep(WAIT_DELAY)
            want = _attrs(row.get("attributes"))
            if want:
                await mc.call("elbv2", region, "modify_load_balancer_attributes", LoadBalancerArn=arn,
                              Attributes=[{"Key": k, "Value": v} for k, v in sorted(want.items())])
            return await self._one(mc, region, arn)
        except CloudError as e:
            try:  # never leave a load balancer the table cannot record
                await mc.call("elbv2", region, "delete_load_balancer", LoadBalancerArn=arn)
            except CloudError:
                e.left = {"load_balancer_arn": arn, "load_balancer_name": row["load_balancer_name"],
                          "region": region, "load_balancer_type": row["load_balancer_type"]}
            raise

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """Set IP address type, subnets and the row's attributes in place; returns the new record.
        Raises engine.aws.CloudError."""
        region, arn = cloud["region"], cloud["load_balancer_arn"]
        if row.get("ip_address_type") != cloud.get("ip_address_type"):
            await mc.call("elbv2", region, "set_ip_address_type", LoadBalancerArn=arn,
                          IpAddressType=row["ip_address_type"])
        if row.get("subnets") and not _same("text[]", row["subnets"], cloud.get("subnets")):
            await mc.call("elbv2", region, "set_subnets", LoadBalancerArn=arn, Subnets=list(row["subnets"]))
        have = _attrs(cloud.get("attributes"))
        changed = {k: v for k, v in _attrs(row.get("attributes")).items() if have.get(k) != v}
        if changed:
            await mc.call("elbv2", region, "modify_load_balancer_attributes", LoadBalancerArn=arn,
                          Attributes=[{"Key": k, "Value": v} for k, v in sorted(changed.items())])
        return await self._one(mc, region, arn)

    async def delete(self, mc: MapperContext, cloud: dict) -> None:
        """Delete the load balancer (its listeners go with it) and wait until it is gone, as
        IaSQL's ``deleteLoadBalancer``. Raises engine.aws.CloudError."""
        region, arn = cloud["region"], cloud["load_balancer_arn"]
        await mc.call("elbv2", region, "delete_load_balancer", LoadBalancerArn=arn)
        for _ in range(WAIT_TRIES):
            try:
                await mc.call("elbv2", region, "describe_load_balancers", LoadBalancerArns=[arn])
            except CloudError as e:
                if e.code == "LoadBalancerNotFound":
                    break
                raise
            await asyncio.sleep(WAIT_DELAY)
        # the load balancer's network interfaces go some time after it (AWS): wait for them too
        name = arn.split(":loadbalancer/")[-1]
        for _ in range(WAIT_TRIES):
            enis = await mc.call("ec2", region, "describe_network_interfaces",
                                 Filters=[{"Name": "description", "Values": [f"*{name}"]}])
            if not enis.get("NetworkInterfaces"):
                break
            await asyncio.sleep(WAIT_DELAY)


# -- load_balancer_security_groups --------------------------------------------------------------------
class LoadBalancerSecurityGroupsMapper(Mapper):
    """``load_balancer_security_groups`` rows <-> the security groups of each load balancer that
    has a row (IaSQL's ``LoadBalancer.securityGroups`` many-to-many, as its join table)."""

    table = "load_balancer_security_groups"
    columns = (Col("load_balancer_id", "int"), Col("security_group_id", "int"))
    key = ("load_balancer_id", "security_group_id")
    pk = ("load_balancer_id", "security_group_id")
    cloud_read_uses_db = True

    def describe(self, rec: dict) -> str:
        """The plan-row description of ``rec``."""
        return f"security group #{rec.get('security_group_id')} of load balancer #{rec.get('load_balancer_id')}"

    async def _maps(self, mc: MapperContext) -> tuple[dict, dict, dict, dict]:
        """Load balancer and security group ids both ways, from their tables."""
        lbs = await mc.fetchall("SELECT id, load_balancer_arn, region FROM public.load_balancer "
                                "WHERE load_balancer_arn IS NOT NULL")
        sgs = await mc.fetchall("SELECT id, group_id, region FROM public.security_group WHERE group_id IS NOT NULL")
        return ({a: i for i, a, _ in lbs}, {i: (a, r) for i, a, r in lbs},
                {(r, g): i for i, g, r in sgs}, {i: g for i, g, _ in sgs})

    async def read(self, mc: MapperContext) -> list[dict]:
        """One record per (load balancer, security group) pair whose both ends have rows. Raises
        engine.aws.CloudError (SQLSTATE 58000)."""
        lb_by_arn, _, sg_by_aws, _ = await self._maps(mc)
        out = []
        for region in mc.regions:
            for lb in await mc.paginate("elbv2", region, "describe_load_balancers", "LoadBalancers"):
                lb_id = lb_by_arn.get(lb["LoadBalancerArn"])
                if lb_id is None:
                    continue
                for g in lb.get("SecurityGroups") or []:
                    sg_id = sg_by_aws.get((region, g))
                    if sg_id is not None:
                        out.append({"load_balancer_id": lb_id, "security_group_id": sg_id,
                                    "_lb_arn": lb["LoadBalancerArn"], "_group_id": g, "_region": region})
        return out

    async def _ends(self, mc: MapperContext, rec: dict, op: str) -> tuple[str, str, str]:
        """(load balancer arn, AWS group id, region) of a join record. Raises CloudError."""
        if rec.get("_lb_arn"):
            return rec["_lb_arn"], rec["_group_id"], rec["_region"]
        _, lbs, _, sgs = await self._maps(mc)
        lb, group = lbs.get(rec.get("load_balancer_id")), sgs.get(rec.get("security_group_id"))
        if lb is None or group is None:
            raise CloudError("DependencyViolation", f"{self.describe(rec)}: not created in the cloud yet",
                             f"elbv2.{op}")
        return lb[0], group, lb[1]

    async def _set(self, mc: MapperContext, rec: dict, add: bool) -> dict:
        """Add (``add``) or take off the record's group on its load balancer; returns the record."""
        arn, group, region = await self._ends(mc, rec, "set_security_groups")
        got = await mc.call("elbv2", region, "describe_load_balancers", LoadBalancerArns=[arn])
        have = list(got["LoadBalancers"][0].get("SecurityGroups") or [])
        want = (have + [group]) if add and group not in have else [g for g in have if g != group or add]
        if want != have:
            await mc.call("elbv2", region, "set_security_groups", LoadBalancerArn=arn, SecurityGroups=want)
        return {"load_balancer_id": rec["load_balancer_id"], "security_group_id": rec["security_group_id"],
                "_lb_arn": arn, "_group_id": group, "_region": region}

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """Add the group to the load balancer (``set_security_groups``); returns the record.
        Raises engine.aws.CloudError (DependencyViolation while either end has no cloud id)."""
        return await self._set(mc, row, add=True)

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """Never needed (every column is part of the key). Raises engine.aws.CloudError."""
        raise CloudError("Unsupported", "a join row is added or deleted, not updated", "elbv2.set_security_groups")

    async def delete(self, mc: MapperContext, cloud: dict) -> None:
        """Take the group off the load balancer (``set_security_groups``). Raises engine.aws.CloudError."""
        await self._set(mc, cloud, add=False)


# -- listener -----------------------------------------------------------------------------------------
class ListenerMapper(Mapper):
    """``listener`` rows <-> the listeners of the load balancers of the enabled regions (IaSQL's
    ``ListenerMapper``)."""

    table = "listener"
    columns = (Col("id", "int", "pk"), Col("listener_arn", "text", "cloud"), Col("port", "int"), Col("protocol"),
               Col("action_type"), Col("ssl_policy"), Col("load_balancer_id", "int"), Col("target_group_id", "int"),
               Col("certificate_id", "int"))
    key = ("listener_arn",)
    pk = ("id",)
    cloud_read_uses_db = True

    def describe(self, rec: dict) -> str:
        """The plan-row description of ``rec``."""
        return (f"listener {rec.get('protocol')}:{rec.get('port')} ({rec.get('listener_arn') or 'new'}) "
                f"of load balancer #{rec.get('load_balancer_id')}")

    def equals(self, row: dict, cloud: dict) -> bool:
        """IaSQL's ``equals``; a NULL ``ssl_policy`` means AWS's choice."""
        return (all(_same(self.col(n).kind, row.get(n), cloud.get(n)) for n in
                    ("port", "protocol", "action_type", "load_balancer_id", "target_group_id", "certificate_id"))
                and _optional_equal(self, row, cloud, ("ssl_policy",)))

    def needs_replace(self, row: dict, cloud: dict) -> bool:
        """True when the load balancer changes (IaSQL's ``updateOrReplace``)."""
        return row.get("load_balancer_id") != cloud.get("load_balancer_id")

    @staticmethod
    async def _certificates(mc: MapperContext) -> dict | None:
        """``{arn: id}`` of aws_acm's ``certificate`` table, None while it does not exist."""
        [(exists,)] = await mc.fetchall("SELECT pg_catalog.to_regclass('public.certificate') IS NOT NULL")
        if not exists:
            return None
        return {a: i for i, a in await mc.fetchall("SELECT id, arn FROM public.certificate WHERE arn IS NOT NULL")}

    async def read(self, mc: MapperContext) -> list[dict]:
        """The listeners of the load balancers of the enabled regions (``_orphan`` when their load
        balancer or target group has no row: a commit that deletes a load balancer's row deletes
        its listeners first, as IaSQL). Raises engine.aws.CloudError (SQLSTATE 58000)."""
        lbs = {a: i for i, a in await mc.fetchall(
            "SELECT id, load_balancer_arn FROM public.load_balancer WHERE load_balancer_arn IS NOT NULL")}
        tgs = {a: i for i, a in await mc.fetchall(
            "SELECT id, target_group_arn FROM public.target_group WHERE target_group_arn IS NOT NULL")}
        certs = await self._certificates(mc)
        out = []
        for region in mc.regions:
            for lb in await mc.paginate("elbv2", region, "describe_load_balancers", "LoadBalancers"):
                try:
                    listeners = await mc.paginate("elbv2", region, "describe_listeners", "Listeners",
                                                  LoadBalancerArn=lb["LoadBalancerArn"])
                except CloudError as e:
                    if e.code == "LoadBalancerNotFound":
                        continue  # deleted meanwhile
                    raise
                out += [self._record(ln, region, lbs, tgs, certs) for ln in listeners]
        return out

    @staticmethod
    def _record(ln: dict, region: str, lbs: dict, tgs: dict, certs: dict | None) -> dict:
        """The cloud record (a dict of column values and ``_`` notes) of one AWS answer."""
        tg_arn = action = None
        for a in ln.get("DefaultActions") or []:
            if a.get("Type") == "forward":
                action, tg_arn = "forward", a.get("TargetGroupArn")
        cert_arns = [c.get("CertificateArn") for c in ln.get("Certificates") or []]
        cert = certs.get(cert_arns[-1]) if certs is not None and cert_arns else None
        lb_id = lbs.get(ln.get("LoadBalancerArn"))
        return {"listener_arn": ln["ListenerArn"], "port": ln.get("Port"), "protocol": ln.get("Protocol"),
                "action_type": action, "ssl_policy": ln.get("SslPolicy"), "load_balancer_id": lb_id,
                "target_group_id": tgs.get(tg_arn), "certificate_id": cert, "_region": region,
                # a listener of a load balancer or forwarding to a group without a row, or with
                # another action than IaSQL's ``forward``
                "_orphan": lb_id is None or action is None or tg_arn not in tgs}

    async def _input(self, mc: MapperContext, row: dict, op: str) -> tuple[str, str, dict]:
        """(region, load balancer arn, the create/modify arguments shared by both)."""
        [lb] = await mc.fetchall("SELECT load_balancer_arn, region FROM public.load_balancer WHERE id = $1",
                                 (row["load_balancer_id"],)) or [(None, None)]
        [tg] = await mc.fetchall("SELECT target_group_arn, region FROM public.target_group WHERE id = $1",
                                 (row["target_group_id"],)) or [(None, None)]
        if lb[0] is None or tg[0] is None:
            raise CloudError("DependencyViolation", f"{self.describe(row)}: its load balancer or target group is "
                             "not created in the cloud yet", f"elbv2.{op}")
        if lb[1] != tg[1]:
            raise CloudError("ValidationError", "Target group and load balancer are not from the same region.",
                             f"elbv2.{op}")
        kw: dict[str, Any] = {"Port": row["port"], "Protocol": row["protocol"],
                              "DefaultActions": [{"Type": row.get("action_type") or "forward",
                                                  "TargetGroupArn": tg[0]}]}
        if row.get("certificate_id") is not None:
            certs = await self._certificates(mc)
            arn = next((a for a, i in (certs or {}).items() if i == row["certificate_id"]), None)
            if arn is None:
                raise CloudError("DependencyViolation", f"certificate #{row['certificate_id']} is not created in "
                                 "the cloud yet", f"elbv2.{op}")
            kw["SslPolicy"] = row.get("ssl_policy") or DEFAULT_SSL_POLICY
            kw["Certificates"] = [{"CertificateArn": arn}]
        elif row.get("ssl_policy"):
            kw["SslPolicy"] = row["ssl_policy"]
        return tg[1], lb[0], kw

    async def _one(self, mc: MapperContext, region: str, arn: str) -> dict:
        """The cloud record of one resource, read again. Raises CloudError."""
        for rec in await self.read(mc):
            if rec["listener_arn"] == arn:
                return rec
        raise CloudError("ListenerNotFound", f"listener {arn} was not found after it was written",
                         "elbv2.describe_listeners")

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """Create the listener on its load balancer; returns its cloud record. Raises
        engine.aws.CloudError (DependencyViolation while the load balancer or target group has no
        cloud id)."""
        region, lb_arn, kw = await self._input(mc, row, "create_listener")
        res = await mc.call("elbv2", region, "create_listener", LoadBalancerArn=lb_arn, **kw)
        arn = res["Listeners"][0]["ListenerArn"]
        try:
            return await self._one(mc, region, arn)
        except CloudError as e:
            try:
                await mc.call("elbv2", region, "delete_listener", ListenerArn=arn)
            except CloudError:
                e.left = {"listener_arn": arn, "port": row["port"], "protocol": row["protocol"],
                          "load_balancer_id": row["load_balancer_id"]}
            raise

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """``modify_listener`` with the row's port, protocol, action and certificate; returns the
        new record. Raises engine.aws.CloudError."""
        region, _, kw = await self._input(mc, row, "modify_listener")
        await mc.call("elbv2", region, "modify_listener", ListenerArn=cloud["listener_arn"], **kw)
        return await self._one(mc, region, cloud["listener_arn"])

    async def delete(self, mc: MapperContext, cloud: dict) -> None:
        """Delete the listener (gone already with its load balancer is fine). Raises engine.aws.CloudError."""
        try:
            await mc.call("elbv2", _region_of_arn(cloud["listener_arn"]), "delete_listener",
                          ListenerArn=cloud["listener_arn"])
        except CloudError as e:
            if e.code != "ListenerNotFound":
                raise


_PROTOCOLS = "'GENEVE', 'HTTP', 'HTTPS', 'TCP', 'TCP_UDP', 'TLS', 'UDP'"
_REGION = ("region character varying NOT NULL DEFAULT public.default_aws_region() "
           "REFERENCES public.aws_regions (region)")

INSTALL_SQL = (
    # IaSQL's sql/before_install.sql: half of an array "foreign key" each
    """CREATE OR REPLACE FUNCTION public.check_load_balancer_availability_zones(
         _load_balancer_name VARCHAR, _availability_zones VARCHAR[]) RETURNS BOOLEAN
       LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
       declare
         _number_of_records integer;
       begin
         select pg_catalog.count(*) from public.availability_zone where name = any(_availability_zones) into _number_of_records;
         if _number_of_records != pg_catalog.array_length(_availability_zones, 1) then
           raise exception 'Load balancer % includes one or more invalid availability zones', _load_balancer_name;
         end if;
         return true;
       end;
       $$""",
    """CREATE OR REPLACE FUNCTION public.check_load_balancer_subnets(_subnets TEXT[]) RETURNS BOOLEAN
       LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
       declare
         _subnets_count integer;
       begin
         select pg_catalog.count(*) into _subnets_count from public.subnet where subnet_id = any(_subnets);
         return _subnets_count = pg_catalog.array_length(_subnets, 1);
       end;
       $$""",
    "CREATE TYPE public.target_group_target_type_enum AS ENUM ('alb', 'instance', 'ip', 'lambda')",
    "CREATE TYPE public.target_group_ip_address_type_enum AS ENUM ('ipv4', 'ipv6')",
    f"CREATE TYPE public.target_group_protocol_enum AS ENUM ({_PROTOCOLS})",
    f"CREATE TYPE public.target_group_health_check_protocol_enum AS ENUM ({_PROTOCOLS})",
    "CREATE TYPE public.target_group_protocol_version_enum AS ENUM ('GRPC', 'HTTP1', 'HTTP2')",
    f"""CREATE TABLE public.target_group (
         id SERIAL NOT NULL,
         target_group_name character varying NOT NULL,
         target_type public.target_group_target_type_enum NOT NULL,
         target_group_arn character varying,
         ip_address_type public.target_group_ip_address_type_enum,
         protocol public.target_group_protocol_enum,
         port integer,
         health_check_protocol public.target_group_health_check_protocol_enum,
         health_check_port character varying,
         health_check_enabled boolean,
         health_check_interval_seconds integer,
         health_check_timeout_seconds integer,
         healthy_threshold_count integer,
         unhealthy_threshold_count integer,
         health_check_path character varying,
         protocol_version public.target_group_protocol_version_enum,
         {_REGION},
         vpc integer,
         CONSTRAINT "PK_57d677c2f58ffc6255875625d4c" PRIMARY KEY (id),
         CONSTRAINT "FK_5e47493d36e4558ffb2418ef961" FOREIGN KEY (vpc) REFERENCES public.vpc (id))""",
    'CREATE UNIQUE INDEX "IDX_47ec3727ae525fc83627d0d148" ON public.target_group (target_group_name, region)',
    "CREATE TYPE public.load_balancer_scheme_enum AS ENUM ('internal', 'internet-facing')",
    "CREATE TYPE public.load_balancer_state_enum AS ENUM ('active', 'active_impaired', 'failed', 'provisioning')",
    "CREATE TYPE public.load_balancer_load_balancer_type_enum AS ENUM ('application', 'gateway', 'network')",
    "CREATE TYPE public.load_balancer_ip_address_type_enum AS ENUM ('dualstack', 'ipv4')",
    f"""CREATE TABLE public.load_balancer (
         id SERIAL NOT NULL,
         load_balancer_name character varying NOT NULL,
         load_balancer_arn character varying,
         dns_name character varying,
         canonical_hosted_zone_id character varying,
         created_time TIMESTAMP WITH TIME ZONE,
         scheme public.load_balancer_scheme_enum NOT NULL,
         state public.load_balancer_state_enum,
         load_balancer_type public.load_balancer_load_balancer_type_enum NOT NULL,
         subnets character varying array,
         availability_zones character varying array,
         ip_address_type public.load_balancer_ip_address_type_enum NOT NULL,
         customer_owned_ipv4_pool character varying,
         {_REGION},
         attributes json,
         vpc integer,
         CONSTRAINT check_load_balancer_subnets CHECK (public.check_load_balancer_subnets(subnets)),
         CONSTRAINT check_load_balancer_availability_zones
           CHECK (public.check_load_balancer_availability_zones(load_balancer_name, availability_zones)),
         CONSTRAINT "PK_602633aa1c4c1fbccc503e355b6" PRIMARY KEY (id),
         CONSTRAINT "FK_85469e168fb53493324102075fe" FOREIGN KEY (vpc) REFERENCES public.vpc (id))""",
    'CREATE UNIQUE INDEX "IDX_b4a4a3134224cdac89d0e1d804" ON public.load_balancer (load_balancer_name, region)',
    f"CREATE TYPE public.listener_protocol_enum AS ENUM ({_PROTOCOLS})",
    "CREATE TYPE public.listener_action_type_enum AS ENUM ('forward')",
    """CREATE TABLE public.listener (
         id SERIAL NOT NULL,
         listener_arn character varying,
         port integer NOT NULL,
         protocol public.listener_protocol_enum NOT NULL,
         action_type public.listener_action_type_enum NOT NULL DEFAULT 'forward',
         ssl_policy character varying,
         load_balancer_id integer NOT NULL,
         target_group_id integer NOT NULL,
         certificate_id integer,
         CONSTRAINT "UQ_load_balancer__port" UNIQUE (load_balancer_id, port),
         CONSTRAINT "PK_422c9d250eb7b0c0b6c96cdce94" PRIMARY KEY (id),
         CONSTRAINT "FK_515921874a4505a3f4786aaad75" FOREIGN KEY (load_balancer_id) REFERENCES public.load_balancer (id),
         CONSTRAINT "FK_5c1fa345667a762a249d9398688" FOREIGN KEY (target_group_id) REFERENCES public.target_group (id),
         CONSTRAINT "FK_21beaace54890e2a63d2150a56b" FOREIGN KEY (certificate_id) REFERENCES public.certificate (id))""",
    """CREATE TABLE public.load_balancer_security_groups (
         load_balancer_id integer NOT NULL,
         security_group_id integer NOT NULL,
         CONSTRAINT "PK_b6a290e33680aa3053e8992e2c3" PRIMARY KEY (load_balancer_id, security_group_id),
         CONSTRAINT "FK_b04ed8dca40b77dfa54096a4b6a" FOREIGN KEY (load_balancer_id)
           REFERENCES public.load_balancer (id) ON DELETE CASCADE ON UPDATE CASCADE,
         CONSTRAINT "FK_4da7e08287b5693e5b22959ced4" FOREIGN KEY (security_group_id)
           REFERENCES public.security_group (id) ON DELETE CASCADE ON UPDATE CASCADE)""",
    'CREATE INDEX "IDX_b04ed8dca40b77dfa54096a4b6" ON public.load_balancer_security_groups (load_balancer_id)',
    'CREATE INDEX "IDX_4da7e08287b5693e5b22959ced" ON public.load_balancer_security_groups (security_group_id)',
    # IaSQL's sql/after_install.sql, narrowed to what a foreign key refuses (module docstring)
    *subnet_guard_sql("check_subnets_by_load_balancer", "load_balancer", "load balancer", "load_balancer_name"),
)

UNINSTALL_SQL = (
    "DROP TRIGGER IF EXISTS check_subnets_by_load_balancer ON public.subnet",
    "DROP FUNCTION public.check_subnets_by_load_balancer()",
    "DROP TABLE public.load_balancer_security_groups",
    "DROP TABLE public.listener",
    "DROP TYPE public.listener_action_type_enum",
    "DROP TYPE public.listener_protocol_enum",
    "DROP TABLE public.load_balancer",
    "DROP TYPE public.load_balancer_ip_address_type_enum",
    "DROP TYPE public.load_balancer_load_balancer_type_enum",
    "DROP TYPE public.load_balancer_state_enum",
    "DROP TYPE public.load_balancer_scheme_enum",
    "DROP TABLE public.target_group",
    "DROP TYPE public.target_group_protocol_version_enum",
    "DROP TYPE public.target_group_health_check_protocol_enum",
    "DROP TYPE public.target_group_protocol_enum",
    "DROP TYPE public.target_group_ip_address_type_enum",
    "DROP TYPE public.target_group_target_type_enum",
    "DROP FUNCTION public.check_load_balancer_availability_zones(VARCHAR, VARCHAR[])",
    "DROP FUNCTION public.check_load_balancer_subnets(TEXT[])",
)

MODULE = Module(
    name="aws_elb",
    version=VERSION,
    dependencies=("aws_account", "aws_security_group", "aws_vpc", "aws_acm"),  # as IaSQL's module.json
    install_sql=INSTALL_SQL,
    uninstall_sql=UNINSTALL_SQL,
    mappers=(TargetGroupMapper(), LoadBalancerMapper(), LoadBalancerSecurityGroupsMapper(), ListenerMapper()),
    description="Elastic load balancers (ELBv2): load balancers, target groups, listeners",
)
