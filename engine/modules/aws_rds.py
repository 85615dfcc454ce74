"""Module ``aws_rds``: RDS DB instances, parameter groups, DB subnet groups and Multi-AZ DB clusters.

Tables, columns, types, enums, keys, defaults and constraints follow IaSQL v0.1's ``aws_rds``
migration (``src/modules/aws_rds/migration/1679413172916-aws_rds.ts``) and its
``sql/after_install.sql`` trigger; what each mapper reads, compares, updates in place or replaces
follows ``src/modules/aws_rds/mappers/*.ts``. Depends on ``aws_account``, ``aws_vpc`` (``rds``
rows name an ``availability_zone``) and ``aws_security_group`` (the join tables), as in IaSQL.
Tables, in dependency order:

- ``parameter_group(name, family, description, parameters jsonb, region)``: cloud identity
  ``(name, region)``, ``arn`` from AWS. ``parameters`` is AWS's ``Parameters`` list
  (``[{"ParameterName", "ParameterValue", "ApplyMethod", ...}]``); NULL means AWS's defaults. A
  parameter whose fields differ from AWS's (only the fields the row's object has are compared) is
  set in place with ``modify_db_parameter_group``, unless AWS says it is not modifiable
  (``IsModifiable`` false, as IaSQL). A new ``family`` or ``description`` replaces the group (AWS
  cannot change them; IaSQL leaves them unapplied); AWS refuses to delete a group an instance
  still uses. Groups named ``default.*`` cannot be deleted: deleting their rows plans nothing
  and the sync restores them. Groups of an Aurora family, or of a family the
  ``parameter_group_family_enum`` does not list (IaSQL v0.1's list, ``postgres10`` to
  ``postgres14``, ``mysql5.7``, ``mysql8.0``, ...), are not read into the table.
- ``db_subnet_group(name, description, subnets varchar[], region)``: identity ``(name, region)``;
  description and subnets change in place (``modify_db_subnet_group``). NULL or empty ``subnets``
  means the subnets of the region's default VPC (read from ``aws_vpc``'s tables, as IaSQL).
- ``db_cluster``: Multi-AZ DB clusters (engines ``mysql``/``postgres``, storage type ``io1``),
  identity ``(db_cluster_identifier, region)``. Storage, iops, backup retention, instance class,
  deletion protection, engine version and tags change in place (``modify_db_cluster``); as in
  IaSQL, a change of ``engine``, ``master_username``, ``port``, ``publicly_accessible``,
  ``storage_encrypted`` or ``subnet_group_id`` is not applied: the commit's sync writes AWS's
  value back into the row.
- ``rds``: DB instances, identity ``(db_instance_identifier, region)``; ``endpoint_*`` and
  ``arn`` come from AWS. Instance class, engine version, storage, backup retention, parameter
  group and tags change in place (``modify_db_instance`` with ``ApplyImmediately``, then a wait
  for ``available``); as in IaSQL, a change of ``engine``, ``master_username``,
  ``availability_zone`` or ``db_cluster_id`` is not applied and the sync writes AWS's value back.
  A new ``db_instance_identifier`` makes a new instance and deletes the old one. NULL
  ``engine_version`` / ``parameter_group_id`` mean AWS's choice (the sync writes it back; a group
  AWS picks that the table cannot hold leaves ``parameter_group_id`` NULL). Instances of a
  cluster (``db_cluster_id`` set) are AWS's: they are never modified or deleted on their own
  (the trigger ``block_rds_in_cluster_pk_update`` refuses renaming them or moving them to
  another region, as IaSQL). Aurora instances are not read.
- ``rds_security_groups(rds_id, security_group_id)`` and ``db_cluster_security_groups
  (db_cluster_id, security_group_id)``: IaSQL's many-to-many join tables of the instances' and
  clusters' VPC security groups. A create reads them to pass ``VpcSecurityGroupIds``; inserting or
  deleting a join row later sets the instance's (cluster's) groups to the rows' groups with
  ``modify_db_instance`` (``modify_db_cluster``), keeping groups the ``security_group`` table does
  not hold. An instance keeps at least one group: deleting its last join row fails (CloudError
  InvalidParameterCombination; the commit's retry over all modules plans no delete, so the commit
  ends and its sync puts the row back; the progress line ``failed: delete ...`` says why).
  The join tables have no ``region`` column (as IaSQL), so the sync of a region that is not
  enabled deletes their rows for that region's instances.

Cloud failures raise ``engine.aws.CloudError``, which a commit reports with SQLSTATE 58000 (after
taking back its cloud changes). ``master_user_password`` is write-only, as in IaSQL: a row that sets it is applied (the password
is set at create, or changed in place) and the column is then written back as NULL, since AWS
never returns it.

moto (5.2.5, the tests' cloud) answers every call used here: create/describe/modify/
delete_db_instance(s), create/describe/modify/delete_db_parameter_group(s), describe_db_parameters,
create/describe/modify/delete_db_subnet_group(s), create/describe/modify/delete_db_cluster(s),
add_tags_to_resource, remove_tags_from_resource. Where it differs from AWS: instances and
clusters are ``available`` at once (the creates and updates wait all the same);
``describe_db_parameters`` lists only the parameters set by ``modify_db_parameter_group`` (AWS
lists every parameter of the family, with ``IsModifiable``); no ``default.*`` parameter group
exists until an instance is created without a group, and then its family is the engine's oldest
(``postgres9.3``, not in IaSQL's enum, so not read); an instance created without
``VpcSecurityGroupIds`` gets a made-up group id that EC2 does not know (no join row is read for
it); a Multi-AZ cluster gets no member instances (AWS makes three, which IaSQL and this module
read into ``rds`` with ``db_cluster_id`` set), so that part is not tested against moto.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from engine.aws import CloudError
from engine.modules.aws_account import VERSION
from engine.modules.aws_vpc import VpcModuleMapper, _tags_value
from engine.modules.base import Col, MapperContext, Module, normalize
from engine.modules.security_group_join import SecurityGroupJoinMapper

#: How often and how long (seconds) a create, update or delete waits for an instance or a
#: cluster to reach the state it waits for (IaSQL waits up to 30 minutes).
WAIT_TRIES, WAIT_DELAY = 360, 5.0

#: IaSQL v0.1's ``parameter_group_family_enum``.
PARAMETER_GROUP_FAMILIES = (
    "docdb3.6", "docdb4.0", "custom-sqlserver-ee-15.0", "custom-sqlserver-se-15.0", "custom-sqlserver-web-15.0",
    "neptune1", "mariadb10.2", "mariadb10.3", "mariadb10.4", "mariadb10.5", "mariadb10.6", "mysql5.7", "mysql8.0",
    "oracle-ee-19", "oracle-ee-cdb-19", "oracle-ee-cdb-21", "oracle-se2-19", "oracle-se2-cdb-19", "oracle-se2-cdb-21",
    "postgres10", "postgres11", "postgres12", "postgres13", "postgres14", "sqlserver-ee-12.0", "sqlserver-ee-13.0",
    "sqlserver-ee-14.0", "sqlserver-ee-15.0", "sqlserver-ex-12.0", "sqlserver-ex-13.0", "sqlserver-ex-14.0",
    "sqlserver-ex-15.0", "sqlserver-se-12.0", "sqlserver-se-13.0", "sqlserver-se-14.0", "sqlserver-se-15.0",
    "sqlserver-web-12.0", "sqlserver-web-13.0", "sqlserver-web-14.0", "sqlserver-web-15.0")

#: IaSQL v0.1's ``db_cluster_engine_enum``.
CLUSTER_ENGINES = ("mysql", "postgres")


# -- helpers ------------------------------------------------------------------------------------------
def rds_tags(tag_list: list | None) -> dict | None:
    """AWS ``TagList`` as a dict (tags without a value left out, as IaSQL), None when empty."""
    out = {t["Key"]: t["Value"] for t in tag_list or () if t.get("Key") and t.get("Value")}
    return out or None


def _tag_list(tags: Any) -> list[dict]:
    """A ``tags`` column value as AWS's ``[{"Key", "Value"}]``."""
    return [{"Key": str(k), "Value": str(v)} for k, v in (_tags_value(tags) or {}).items()]


async def set_rds_tags(mc: MapperContext, region: str, arn: str, want: Any, have: Any) -> None:
    """Make the tags of the RDS resource ``arn`` ``want`` (from ``have``): remove the keys that go
    or change, add the new ones. Follows IaSQL's ``mappers/tags.ts`` (which removes and re-adds
    all). Raises engine.aws.CloudError."""
    want_t, have_t = _tags_value(want) or {}, _tags_value(have) or {}
    gone = [k for k in have_t if k not in want_t or str(want_t[k]) != str(have_t[k])]
    if gone:
        await mc.call("rds", region, "remove_tags_from_resource", ResourceName=arn, TagKeys=gone)
    new = {k: v for k, v in want_t.items() if k not in have_t or str(have_t[k]) != str(v)}
    if new:
        await mc.call("rds", region, "add_tags_to_resource", ResourceName=arn, Tags=_tag_list(new))


async def name_maps(mc: MapperContext, table: str, name_col: str) -> tuple[dict, dict]:
    """``({(region, name): db id}, {db id: (region, name)})`` for the rows of this module's
    ``table`` that exist in the cloud (``arn`` set). Raises SqlError on a failed read."""
    rows = await mc.fetchall(f'SELECT id, "{name_col}", region FROM public."{table}" WHERE arn IS NOT NULL')
    return {(r, n): i for i, n, r in rows}, {i: (r, n) for i, n, r in rows}


async def _wait(mc: MapperContext, region: str, what: str, ident: str, want: str | None) -> dict | None:
    """Poll ``describe_db_instances`` (``what`` = "instance") or ``describe_db_clusters``
    ("cluster") for ``ident`` until its status is ``want`` with no ``PendingModifiedValues`` left
    (None: until it is gone); returns the last AWS record (None when gone). Gives up after
    WAIT_TRIES * WAIT_DELAY seconds with CloudError ``WaitTimeout``. Follows IaSQL's waiters in ``mappers/rds.ts``/``db_cluster.ts``."""
    op, arg, key, nf = (("describe_db_instances", "DBInstanceIdentifier", "DBInstances", "DBInstanceNotFound")
                        if what == "instance" else
                        ("describe_db_clusters", "DBClusterIdentifier", "DBClusters", "DBClusterNotFoundFault"))
    status_key = "DBInstanceStatus" if what == "instance" else "Status"
    last = None
    for i in range(WAIT_TRIES):
        try:
            got = (await mc.call("rds", region, op, **{arg: ident})).get(key) or []
        except CloudError as e:
            if e.code not in (nf, "DBInstanceNotFoundFault", "DBClusterNotFound"):
                raise
            got = []
        if not got:
            if want is None:
                return None
        else:
            last = got[0]
            # AWS answers a modify at once with the old state and the changes as
            # PendingModifiedValues: "available" counts once none are left
            if want is not None and last.get(status_key) == want and not last.get("PendingModifiedValues"):
                return last
        if i + 1 < WAIT_TRIES:
            await asyncio.sleep(WAIT_DELAY)
    raise CloudError("WaitTimeout", f"{what} {ident} did not become {want or 'deleted'} in time", f"rds.{op}")


async def _security_group_ids(mc: MapperContext, join: str, fk: str, parent_id: Any) -> list[str]:
    """AWS ids of the security groups the join table ``join`` names for parent row ``parent_id``;
    raises CloudError DependencyViolation while one of them has no cloud id yet."""
    rows = await mc.fetchall(f'SELECT g.id, g.group_id FROM public."{join}" j JOIN public.security_group g '
                             f'ON g.id = j.security_group_id WHERE j."{fk}" = $1 ORDER BY g.id', (parent_id,))
    missing = [str(i) for i, g in rows if g is None]
    if missing:
        raise CloudError("DependencyViolation", f"security group #{', #'.join(missing)} is not created in the "
                         "cloud yet", f"rds.{join}")
    return [g for _, g in rows]


class RdsModuleMapper(VpcModuleMapper):
    """Shared rules of this module's mappers (``VpcModuleMapper``'s: tags compare as dicts,
    ``optional`` columns compared only when the row sets them) plus ``immutable``: columns AWS
    cannot change, left out of ``equals`` so that a change is never applied and the commit's
    sync writes AWS's value back (IaSQL's update restores the cloud record for them)."""

    immutable: tuple[str, ...] = ()

    def compared(self, row: dict, cloud: dict) -> list:
        """The user columns ``equals`` compares: ``optional`` ones only when set, never ``immutable`` ones."""
        return [c for c in super().compared(row, cloud) if c.name not in self.immutable]


# -- parameter_group -----------------------------------------------------------------------------------
def _params(value: Any) -> list[dict] | None:
    """A ``parameters`` value (json text or list) as a list of dicts, None when NULL."""
    if isinstance(value, str):
        value = json.loads(value)
    if value is None:
        return None
    return [p for p in value if isinstance(p, dict)]


class ParameterGroupMapper(RdsModuleMapper):
    """``parameter_group`` rows <-> RDS DB parameter groups. Follows IaSQL's
    ``mappers/parameter_group.ts``."""

    table = "parameter_group"
    columns = (Col("id", "int", "pk"), Col("name"), Col("arn", "text", "cloud"), Col("family"),
               Col("description"), Col("parameters", "jsonb"), Col("region"))
    key = ("name", "region")
    pk = ("id",)
    cloud_read_uses_db = False

    def describe(self, rec: dict) -> str:
        """The plan-row description of ``rec``."""
        return f"parameter group {rec.get('name')} ({rec.get('family')}) in {rec.get('region')}"

    @staticmethod
    def params_to_set(row: dict, cloud: dict) -> list[dict]:
        """The row's parameters that differ from the cloud's (by ``ParameterName``; only the
        fields the row's object has are compared). Follows IaSQL's ``getParametersNotEqual``."""
        want = _params(row.get("parameters"))
        if want is None:
            return []
        have = {p.get("ParameterName"): p for p in _params(cloud.get("parameters")) or []}
        out = []
        for p in want:
            c = have.get(p.get("ParameterName"))
            if c is None or any(normalize("json", v) != normalize("json", c.get(k)) for k, v in p.items()):
                out.append(p)
        return out

    def equals(self, row: dict, cloud: dict) -> bool:
        """Family, description and the row's parameters as AWS has them (NULL parameters: any)."""
        return (not self.differs(row, cloud, ("name", "family", "description", "region"))
                and not self.params_to_set(row, cloud))

    def needs_replace(self, row: dict, cloud: dict) -> bool:
        """AWS cannot change a group's family or description."""
        return self.differs(row, cloud, ("family", "description"))

    def deletable(self, cloud: dict) -> bool:
        """``default.*`` groups are AWS's (IaSQL puts their rows back)."""
        return not str(cloud.get("name") or "").startswith("default.")

    async def _record(self, mc: MapperContext, g: dict, region: str) -> dict | None:
        family = g.get("DBParameterGroupFamily") or ""
        if "aurora" in family or family not in PARAMETER_GROUP_FAMILIES:
            return None  # IaSQL skips Aurora groups; the enum cannot hold other families
        params = await mc.paginate("rds", region, "describe_db_parameters", "Parameters",
                                   DBParameterGroupName=g["DBParameterGroupName"])
        return {"name": g["DBParameterGroupName"], "arn": g.get("DBParameterGroupArn"), "family": family,
                "description": g.get("Description") or "", "parameters": params, "region": region}

    async def _records(self, mc: MapperContext, region: str, **filters: Any) -> list[dict]:
        out = []
        for g in await mc.paginate("rds", region, "describe_db_parameter_groups", "DBParameterGroups", **filters):
            rec = await self._record(mc, g, region)
            if rec is not None:
                out.append(rec)
        return out

    async def _get(self, mc: MapperContext, region: str, name: str) -> dict:
        got = await self._records(mc, region, DBParameterGroupName=name)
        if not got:
            raise CloudError("DBParameterGroupNotFound", f"parameter group {name} cannot be read back",
                             "rds.describe_db_parameter_groups")
        return got[0]

    async def _set_params(self, mc: MapperContext, region: str, name: str, params: list[dict]) -> None:
        """Set ``params`` (AWS takes at most 20 a call); parameters AWS marks not modifiable are
        skipped (as IaSQL)."""
        todo = [{"ParameterName": p["ParameterName"], "ParameterValue": p.get("ParameterValue"),
                 "ApplyMethod": p.get("ApplyMethod") or "immediate"}
                for p in params if p.get("ParameterName") and p.get("IsModifiable") is not False]
        for i in range(0, len(todo), 20):
            await mc.call("rds", region, "modify_db_parameter_group", DBParameterGroupName=name,
                          Parameters=todo[i:i + 20])

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """Create the group and set the row's parameters; returns its record. A failure after the
        create deletes the group again (or sets ``left``). Raises engine.aws.CloudError."""
        region = row.get("region") or mc.default_region
        await mc.call("rds", region, "create_db_parameter_group", DBParameterGroupName=row["name"],
                      DBParameterGroupFamily=row["family"], Description=row["description"])
        try:
            await self._set_params(mc, region, row["name"], _params(row.get("parameters")) or [])
            return await self._get(mc, region, row["name"])
        except CloudError as e:
            try:
                await mc.call("rds", region, "delete_db_parameter_group", DBParameterGroupName=row["name"])
            except CloudError:
                e.left = {"name": row["name"], "region": region, "family": row["family"]}
            raise

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """Set the parameters that differ; returns the new record. Raises engine.aws.CloudError."""
        region = cloud["region"]
        await self._set_params(mc, region, cloud["name"], self.params_to_set(row, cloud))
        return await self._get(mc, region, cloud["name"])

    async def delete(self, mc: MapperContext, cloud: dict) -> None:
        """Delete the group (``default.*`` groups are left alone). Raises engine.aws.CloudError
        (InvalidDBParameterGroupState while an instance uses it)."""
        if not self.deletable(cloud):
            return
        await mc.call("rds", cloud["region"], "delete_db_parameter_group", DBParameterGroupName=cloud["name"])


# -- db_subnet_group -----------------------------------------------------------------------------------
class SubnetGroupRules:
    """What RDS's ``db_subnet_group`` and MemoryDB's ``subnet_group`` share (IaSQL's two subnet
    group mappers): empty ``subnets`` mean the default VPC's (not compared, resolved through
    aws_vpc's tables at create/update), and AWS's ``default`` group cannot be deleted.
    ``name_column`` is the table's name column. Mixed in before the module's Mapper class."""

    name_column = "name"

    def compared(self, row: dict, cloud: dict) -> list:
        """Empty ``subnets`` mean the default VPC's, as NULL."""
        return [c for c in super().compared(row, cloud)  # type: ignore[misc]
                if not (c.name == "subnets" and not row.get("subnets"))]

    def deletable(self, cloud: dict) -> bool:
        """AWS's ``default`` subnet group cannot be deleted."""
        return cloud.get(self.name_column) != "default"

    async def _subnets(self, mc: MapperContext, row: dict, region: str) -> list[str]:
        """The row's subnets, or the default VPC's (from aws_vpc's tables) when it has none."""
        if row.get("subnets"):
            return list(row["subnets"])
        rows = await mc.fetchall("SELECT s.subnet_id FROM public.subnet s JOIN public.vpc v ON v.id = s.vpc_id "
                                 "WHERE v.is_default AND v.region = $1 AND s.subnet_id IS NOT NULL "
                                 "ORDER BY s.subnet_id", (region,))
        return [r[0] for r in rows]


class DbSubnetGroupMapper(SubnetGroupRules, RdsModuleMapper):
    """``db_subnet_group`` rows <-> RDS DB subnet groups. Follows IaSQL's ``mappers/db_subnet_group.ts``."""

    table = "db_subnet_group"
    columns = (Col("id", "int", "pk"), Col("name"), Col("arn", "text", "cloud"), Col("description"),
               Col("subnets", "text[]"), Col("region"))
    key = ("name", "region")
    pk = ("id",)
    optional = ("subnets",)
    cloud_read_uses_db = False

    def describe(self, rec: dict) -> str:
        """The plan-row description of ``rec``."""
        return f"DB subnet group {rec.get('name')} in {rec.get('region')}"

    @staticmethod
    def _record(g: dict, region: str) -> dict:
        return {"name": g["DBSubnetGroupName"], "arn": g.get("DBSubnetGroupArn"),
                "description": g.get("DBSubnetGroupDescription") or "",
                "subnets": [s["SubnetIdentifier"] for s in g.get("Subnets") or [] if s.get("SubnetIdentifier")],
                "region": region}

    async def _records(self, mc: MapperContext, region: str, **filters: Any) -> list[dict]:
        return [self._record(g, region) for g in
                await mc.paginate("rds", region, "describe_db_subnet_groups", "DBSubnetGroups", **filters)
                if g.get("DBSubnetGroupArn")]

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """Create the subnet group; returns its record. Raises engine.aws.CloudError."""
        region = row.get("region") or mc.default_region
        res = await mc.call("rds", region, "create_db_subnet_group", DBSubnetGroupName=row["name"],
                            DBSubnetGroupDescription=row["description"], SubnetIds=await self._subnets(mc, row, region))
        return self._record(res["DBSubnetGroup"], region)

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """Description and subnets in place; returns the new record. Raises engine.aws.CloudError."""
        region = cloud["region"]
        res = await mc.call("rds", region, "modify_db_subnet_group", DBSubnetGroupName=cloud["name"],
                            DBSubnetGroupDescription=row["description"],
                            SubnetIds=await self._subnets(mc, row, region))
        return self._record(res["DBSubnetGroup"], region)

    async def delete(self, mc: MapperContext, cloud: dict) -> None:
        """Delete the subnet group. Raises engine.aws.CloudError (InvalidDBSubnetGroupStateFault while in use)."""
        await mc.call("rds", cloud["region"], "delete_db_subnet_group", DBSubnetGroupName=cloud["name"])


# -- db_cluster ----------------------------------------------------------------------------------------
class DbClusterMapper(RdsModuleMapper):
    """``db_cluster`` rows <-> Multi-AZ DB clusters (mysql/postgres). Follows IaSQL's
    ``mappers/db_cluster.ts``."""

    table = "db_cluster"
    columns = (Col("id", "int", "pk"), Col("db_cluster_identifier"), Col("arn", "text", "cloud"),
               Col("allocated_storage", "int"), Col("iops", "int"), Col("backup_retention_period", "int"),
               Col("db_cluster_instance_class"), Col("deletion_protection", "bool"), Col("engine"),
               Col("engine_version"), Col("master_user_password", "text", "cloud"), Col("master_username"),
               Col("port", "int"), Col("publicly_accessible", "bool"), Col("storage_encrypted", "bool"),
               Col("tags", "json"), Col("region"), Col("subnet_group_id", "int"))
    key = ("db_cluster_identifier", "region")
    pk = ("id",)
    optional = ("engine_version", "port", "deletion_protection", "publicly_accessible", "storage_encrypted")
    immutable = ("engine", "master_username", "port", "publicly_accessible", "storage_encrypted", "subnet_group_id")
    children = (("db_cluster_security_groups", "db_cluster_id"),)
    cloud_read_uses_db = True  # subnet groups are resolved through db_subnet_group

    def describe(self, rec: dict) -> str:
        """The plan-row description of ``rec``."""
        return f"DB cluster {rec.get('db_cluster_identifier')} ({rec.get('engine')}) in {rec.get('region')}"

    def equals(self, row: dict, cloud: dict) -> bool:
        """A row that sets ``master_user_password`` always differs (the password is then set)."""
        return not row.get("master_user_password") and super().equals(row, cloud)

    def _record(self, c: dict, region: str, groups: dict) -> dict | None:
        if c.get("Engine") not in CLUSTER_ENGINES:
            return None  # Aurora and other engines are not IaSQL's db_cluster
        sng = c.get("DBSubnetGroup")
        return {"db_cluster_identifier": c["DBClusterIdentifier"], "arn": c.get("DBClusterArn"),
                "allocated_storage": c.get("AllocatedStorage"), "iops": c.get("Iops"),
                "backup_retention_period": c.get("BackupRetentionPeriod"),
                "db_cluster_instance_class": c.get("DBClusterInstanceClass"),
                "deletion_protection": bool(c.get("DeletionProtection")), "engine": c.get("Engine"),
                "engine_version": c.get("EngineVersion"), "master_user_password": None,
                "master_username": c.get("MasterUsername"), "port": c.get("Port"),
                "publicly_accessible": bool(c.get("PubliclyAccessible")),
                "storage_encrypted": bool(c.get("StorageEncrypted")), "tags": rds_tags(c.get("TagList")),
                "region": region, "subnet_group_id": groups.get((region, sng)) if sng else None,
                "_vpc_security_groups": [g["VpcSecurityGroupId"] for g in c.get("VpcSecurityGroups") or []]}

    async def _records(self, mc: MapperContext, region: str, **filters: Any) -> list[dict]:
        groups, _ = await name_maps(mc, "db_subnet_group", "name")
        out = []
        for c in await mc.paginate("rds", region, "describe_db_clusters", "DBClusters", **filters):
            if c.get("Status") == "deleting":
                continue
            rec = self._record(c, region, groups)
            if rec is not None:
                out.append(rec)
        return out

    async def _get(self, mc: MapperContext, region: str, ident: str) -> dict:
        groups, _ = await name_maps(mc, "db_subnet_group", "name")
        c = await _wait(mc, region, "cluster", ident, "available")
        rec = self._record(c or {}, region, groups)
        if rec is None:
            raise CloudError("DBClusterNotFoundFault", f"cluster {ident} cannot be read back", "rds.describe_db_clusters")
        return rec

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """Create the cluster (io1 storage, the join table's security groups, the row's subnet
        group) and wait until it is available; returns its record. Raises engine.aws.CloudError
        (MissingParameter without a password, as IaSQL; DependencyViolation while a security or
        subnet group is not created yet)."""
        region = row.get("region") or mc.default_region
        if not row.get("master_user_password"):
            raise CloudError("MissingParameter", "a DB cluster needs a master_user_password", "rds.create_db_cluster")
        kw: dict[str, Any] = {
            "DBClusterIdentifier": row["db_cluster_identifier"], "Engine": row["engine"],
            "DBClusterInstanceClass": row["db_cluster_instance_class"], "AllocatedStorage": row["allocated_storage"],
            "Iops": row["iops"], "StorageType": "io1", "MasterUsername": row["master_username"],
            "MasterUserPassword": row["master_user_password"],
            "BackupRetentionPeriod": row.get("backup_retention_period") or 1,
            "VpcSecurityGroupIds": await _security_group_ids(mc, "db_cluster_security_groups", "db_cluster_id",
                                                             row.get("id")),
        }
        for col, arg in (("engine_version", "EngineVersion"), ("port", "Port"),
                         ("deletion_protection", "DeletionProtection"), ("publicly_accessible", "PubliclyAccessible"),
                         ("storage_encrypted", "StorageEncrypted")):
            if row.get(col) is not None:
                kw[arg] = row[col]
        if row.get("subnet_group_id") is not None:
            _, by_db = await name_maps(mc, "db_subnet_group", "name")
            if row["subnet_group_id"] not in by_db:
                raise CloudError("DependencyViolation", f"db_subnet_group #{row['subnet_group_id']} is not created "
                                 "in the cloud yet", "rds.create_db_cluster")
            kw["DBSubnetGroupName"] = by_db[row["subnet_group_id"]][1]
        if _tag_list(row.get("tags")):
            kw["Tags"] = _tag_list(row.get("tags"))
        await mc.call("rds", region, "create_db_cluster", **kw)
        try:
            return await self._get(mc, region, row["db_cluster_identifier"])
        except CloudError as e:
            try:
                await mc.call("rds", region, "delete_db_cluster", DBClusterIdentifier=row["db_cluster_identifier"],
                              SkipFinalSnapshot=True)
            except CloudError:
                e.left = {"db_cluster_identifier": row["db_cluster_identifier"], "region": region}
            raise

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """Tags, then storage, iops, backup retention, instance class, deletion protection, engine
        version and password in place (``modify_db_cluster``, applied immediately); returns the new
        record. Raises engine.aws.CloudError."""
        region, ident = cloud["region"], cloud["db_cluster_identifier"]
        if not self._same(self.col("tags"), row.get("tags"), cloud.get("tags")):
            await set_rds_tags(mc, region, cloud["arn"], row.get("tags"), cloud.get("tags"))
        kw: dict[str, Any] = {}
        for col, arg in (("allocated_storage", "AllocatedStorage"), ("iops", "Iops"),
                         ("backup_retention_period", "BackupRetentionPeriod"),
                         ("db_cluster_instance_class", "DBClusterInstanceClass"),
                         ("deletion_protection", "DeletionProtection"), ("engine_version", "EngineVersion")):
            if row.get(col) is not None and self.differs(row, cloud, (col,)):
                kw[arg] = row[col]
        if row.get("master_user_password"):
            kw["MasterUserPassword"] = row["master_user_password"]
        if kw:
            await mc.call("rds", region, "modify_db_cluster", DBClusterIdentifier=ident, ApplyImmediately=True, **kw)
        return await self._get(mc, region, ident)

    async def delete(self, mc: MapperContext, cloud: dict) -> None:
        """Delete the cluster without a final snapshot and wait until it is gone. Raises
        engine.aws.CloudError (InvalidParameterCombination with deletion protection, as IaSQL)."""
        if cloud.get("deletion_protection"):
            raise CloudError("InvalidParameterCombination", f"cluster {cloud['db_cluster_identifier']} has deletion "
                             "protection: set deletion_protection = false and commit first", "rds.delete_db_cluster")
        await mc.call("rds", cloud["region"], "delete_db_cluster", DBClusterIdentifier=cloud["db_cluster_identifier"],
                      SkipFinalSnapshot=True)
        await _wait(mc, cloud["region"], "cluster", cloud["db_cluster_identifier"], None)


# -- rds -----------------------------------------------------------------------------------------------
class RdsMapper(RdsModuleMapper):
    """``rds`` rows <-> RDS DB instances (not Aurora). Follows IaSQL's ``mappers/rds.ts``."""

    table = "rds"
    columns = (Col("id", "int", "pk"), Col("db_instance_identifier"), Col("arn", "text", "cloud"),
               Col("allocated_storage", "int"), Col("db_instance_class"), Col("engine"), Col("engine_version"),
               Col("master_user_password", "text", "cloud"), Col("master_username"),
               Col("endpoint_addr", "text", "cloud"), Col("endpoint_port", "int", "cloud"),
               Col("endpoint_hosted_zone_id", "text", "cloud"), Col("backup_retention_period", "int"),
               Col("tags", "json"), Col("region"), Col("availability_zone"), Col("parameter_group_id", "int"),
               Col("db_cluster_id", "int"))
    key = ("db_instance_identifier", "region")
    pk = ("id",)
    optional = ("engine_version", "parameter_group_id")
    immutable = ("engine", "master_username", "availability_zone", "db_cluster_id")
    children = (("rds_security_groups", "rds_id"),)
    cloud_read_uses_db = True  # parameter groups and clusters are resolved through their tables

    def describe(self, rec: dict) -> str:
        """The plan-row description of ``rec``."""
        return (f"RDS instance {rec.get('db_instance_identifier')} ({rec.get('engine')}, "
                f"{rec.get('db_instance_class')}) in {rec.get('region')}")

    def equals(self, row: dict, cloud: dict) -> bool:
        """A row that sets ``master_user_password`` always differs (the password is then set, as
        IaSQL); an instance of a cluster is never changed on its own."""
        if cloud.get("db_cluster_id") is not None:
            return True
        return not row.get("master_user_password") and super().equals(row, cloud)

    def deletable(self, cloud: dict) -> bool:
        """Instances of a cluster go with their cluster (IaSQL puts their rows back)."""
        return cloud.get("db_cluster_id") is None and not cloud.get("_cluster")

    @staticmethod
    def _record(i: dict, region: str, pgs: dict, clusters: dict) -> dict:
        ep = i.get("Endpoint") or {}
        pg = (i.get("DBParameterGroups") or [{}])[0].get("DBParameterGroupName")
        cl = i.get("DBClusterIdentifier")
        return {"db_instance_identifier": i["DBInstanceIdentifier"], "arn": i.get("DBInstanceArn"),
                "allocated_storage": i.get("AllocatedStorage"), "db_instance_class": i.get("DBInstanceClass"),
                "engine": i.get("Engine"), "engine_version": i.get("EngineVersion"), "master_user_password": None,
                "master_username": i.get("MasterUsername"), "endpoint_addr": ep.get("Address"),
                "endpoint_port": ep.get("Port"), "endpoint_hosted_zone_id": ep.get("HostedZoneId"),
                "backup_retention_period": i.get("BackupRetentionPeriod", 1), "tags": rds_tags(i.get("TagList")),
                "region": region, "availability_zone": i.get("AvailabilityZone"),
                "parameter_group_id": pgs.get((region, pg)) if pg else None,
                "db_cluster_id": clusters.get((region, cl)) if cl else None, "_cluster": cl,
                "_parameter_group": pg,
                "_vpc_security_groups": [g["VpcSecurityGroupId"] for g in i.get("VpcSecurityGroups") or []],
                # an instance of a cluster without a row: never inserted by sync
                "_orphan": bool(cl) and (region, cl) not in clusters}

    async def _maps(self, mc: MapperContext) -> tuple[dict, dict]:
        pgs, _ = await name_maps(mc, "parameter_group", "name")
        clusters, _ = await name_maps(mc, "db_cluster", "db_cluster_identifier")
        return pgs, clusters

    async def _records(self, mc: MapperContext, region: str, **filters: Any) -> list[dict]:
        pgs, clusters = await self._maps(mc)
        out = []
        for i in await mc.paginate("rds", region, "describe_db_instances", "DBInstances", **filters):
            if "aurora" in (i.get("Engine") or "aurora") or i.get("DBInstanceStatus") in ("deleting", "deleted"):
                continue  # IaSQL reads no Aurora instance
            if not i.get("AvailabilityZone"):
                continue  # not placed yet: the table needs its zone
            out.append(self._record(i, region, pgs, clusters))
        return out

    async def _get(self, mc: MapperContext, region: str, ident: str) -> dict:
        pgs, clusters = await self._maps(mc)
        i = await _wait(mc, region, "instance", ident, "available")
        return self._record(i or {}, region, pgs, clusters)

    async def _parameter_group_name(self, mc: MapperContext, row: dict, op: str) -> str | None:
        if row.get("parameter_group_id") is None:
            return None
        _, by_db = await name_maps(mc, "parameter_group", "name")
        if row["parameter_group_id"] not in by_db:
            raise CloudError("DependencyViolation", f"parameter_group #{row['parameter_group_id']} is not created in "
                             "the cloud yet", op)
        return by_db[row["parameter_group_id"]][1]

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """Create the instance with the join table's security groups, the row's parameter group
        (and cluster) and tags, and wait until it is available; returns its record (the password
        is never read back). A failure after the create deletes it again (or sets ``left``).
        Raises engine.aws.CloudError (DependencyViolation while a group is not created yet)."""
        region = row.get("region") or mc.default_region
        op = "rds.create_db_instance"
        kw: dict[str, Any] = {
            "DBInstanceIdentifier": row["db_instance_identifier"], "DBInstanceClass": row["db_instance_class"],
            "Engine": row["engine"], "AllocatedStorage": row["allocated_storage"],
            "AvailabilityZone": row["availability_zone"],
            "BackupRetentionPeriod": row["backup_retention_period"] if row.get("backup_retention_period") is not None else 1,
        }
        sgs = await _security_group_ids(mc, "rds_security_groups", "rds_id", row.get("id"))
        if sgs:
            kw["VpcSecurityGroupIds"] = sgs
        for col, arg in (("engine_version", "EngineVersion"), ("master_username", "MasterUsername"),
                         ("master_user_password", "MasterUserPassword")):
            if row.get(col) is not None:
                kw[arg] = row[col]
        pg = await self._parameter_group_name(mc, row, op)
        if pg:
            kw["DBParameterGroupName"] = pg
        if row.get("db_cluster_id") is not None:
            _, by_db = await name_maps(mc, "db_cluster", "db_cluster_identifier")
            if row["db_cluster_id"] not in by_db:
                raise CloudError("DependencyViolation", f"db_cluster #{row['db_cluster_id']} is not created in the "
                                 "cloud yet", op)
            kw["DBClusterIdentifier"] = by_db[row["db_cluster_id"]][1]
        if _tag_list(row.get("tags")):
            kw["Tags"] = _tag_list(row.get("tags"))
        await mc.call("rds", region, "create_db_instance", **kw)
        try:
            return await self._get(mc, region, row["db_instance_identifier"])
        except CloudError as e:
            try:
                await mc.call("rds", region, "delete_db_instance", DBInstanceIdentifier=row["db_instance_identifier"],
                              SkipFinalSnapshot=True)
            except CloudError:
                e.left = {"db_instance_identifier": row["db_instance_identifier"], "region": region}
            raise

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """Tags (add/remove), then instance class, engine version, storage, backup retention,
        parameter group and password with one ``modify_db_instance`` (applied immediately),
        waiting until the instance is available again; returns the new record. Instances of a
        cluster are left alone. Raises engine.aws.CloudError."""
        region, ident = cloud["region"], cloud["db_instance_identifier"]
        if cloud.get("db_cluster_id") is not None:
            return cloud
        if not self._same(self.col("tags"), row.get("tags"), cloud.get("tags")):
            await set_rds_tags(mc, region, cloud["arn"], row.get("tags"), cloud.get("tags"))
        kw: dict[str, Any] = {}
        for col, arg in (("db_instance_class", "DBInstanceClass"), ("engine_version", "EngineVersion"),
                         ("allocated_storage", "AllocatedStorage"),
                         ("backup_retention_period", "BackupRetentionPeriod")):
            if row.get(col) is not None and self.differs(row, cloud, (col,)):
                kw[arg] = row[col]
        if row.get("parameter_group_id") is not None and self.differs(row, cloud, ("parameter_group_id",)):
            kw["DBParameterGroupName"] = await self._parameter_group_name(mc, row, "rds.modify_db_instance")
        if row.get("master_user_password"):
            kw["MasterUserPassword"] = row["master_user_password"]
        if kw:
            await mc.call("rds", region, "modify_db_instance", DBInstanceIdentifier=ident, ApplyImmediately=True, **kw)
        return await self._get(mc, region, ident)

    async def delete(self, mc: MapperContext, cloud: dict) -> None:
        """Delete the instance without a final snapshot (as IaSQL) and wait until it is gone.
        Instances of a cluster are left alone. Raises engine.aws.CloudError."""
        if not self.deletable(cloud):
            return
        await mc.call("rds", cloud["region"], "delete_db_instance",
                      DBInstanceIdentifier=cloud["db_instance_identifier"], SkipFinalSnapshot=True)
        await _wait(mc, cloud["region"], "instance", cloud["db_instance_identifier"], None)


# -- join tables ---------------------------------------------------------------------------------------
class RdsSecurityGroupJoinMapper(SecurityGroupJoinMapper):
    """``rds_security_groups`` / ``db_cluster_security_groups``: the groups are set with
    ``modify_db_instance`` / ``modify_db_cluster`` (applied immediately, then a wait for
    ``available``); an instance or cluster keeps at least one group."""

    at_least_one = True

    def __init__(self, table: str, parent: RdsModuleMapper, fk: str, ident: str, what: str):
        super().__init__(table, parent, fk, ident)
        self.what = what

    async def set_groups(self, mc: MapperContext, region: str, ident: str, groups: list[str]) -> None:
        """Give instance (cluster) ``ident`` the VPC security groups ``groups``. Raises engine.aws.CloudError."""
        op, arg = (("modify_db_instance", "DBInstanceIdentifier") if self.what == "instance"
                   else ("modify_db_cluster", "DBClusterIdentifier"))
        await mc.call("rds", region, op, **{arg: ident}, VpcSecurityGroupIds=groups, ApplyImmediately=True)
        await _wait(mc, region, self.what, ident, "available")


_DB_CLUSTER = DbClusterMapper()
_RDS = RdsMapper()

INSTALL_SQL = (
    """CREATE TABLE public.db_subnet_group (
         id SERIAL NOT NULL,
         name character varying NOT NULL,
         arn character varying,
         description character varying NOT NULL,
         subnets character varying array,
         region character varying NOT NULL DEFAULT public.default_aws_region(),
         CONSTRAINT "UQ_5a641e6e9fdf00cecbaeb496f23" UNIQUE (arn),
         CONSTRAINT db_subnet_group_id_region UNIQUE (id, region),
         CONSTRAINT db_subnet_group_name_region UNIQUE (name, region),
         CONSTRAINT "PK_687ed5ce05bd63fa341f8f7fe6f" PRIMARY KEY (id),
         CONSTRAINT "FK_8f149647656a06974353fa88d08" FOREIGN KEY (region) REFERENCES public.aws_regions (region))""",
    "CREATE TYPE public.db_cluster_engine_enum AS ENUM ('mysql', 'postgres')",
    """CREATE TABLE public.db_cluster (
         id SERIAL NOT NULL,
         db_cluster_identifier character varying NOT NULL,
         arn character varying,
         allocated_storage integer NOT NULL,
         iops integer NOT NULL,
         backup_retention_period integer NOT NULL DEFAULT '1',
         db_cluster_instance_class character varying NOT NULL,
         deletion_protection boolean DEFAULT false,
         engine public.db_cluster_engine_enum NOT NULL,
         engine_version character varying,
         master_user_password character varying,
         master_username character varying NOT NULL,
         port integer,
         publicly_accessible boolean DEFAULT false,
         storage_encrypted boolean DEFAULT false,
         tags json,
         region character varying NOT NULL DEFAULT public.default_aws_region(),
         subnet_group_id integer,
         CONSTRAINT db_cluster_unique_id_region UNIQUE (id, region),
         CONSTRAINT "UQ_db_cluster_identifier_region" UNIQUE (db_cluster_identifier, region),
         CONSTRAINT "Check_db_cluster_allocated_storage" CHECK (allocated_storage >= 100 AND allocated_storage <= 65000),
         CONSTRAINT "Check_db_cluster_iops" CHECK (iops >= 1000 AND iops <= 256000),
         CONSTRAINT "PK_4542fa5ac68deb8f3e54dbde217" PRIMARY KEY (id),
         CONSTRAINT "FK_f1268b6a9cd7e25c89b84d8a3ee" FOREIGN KEY (subnet_group_id, region)
           REFERENCES public.db_subnet_group (id, region),
         CONSTRAINT "FK_28695a318d83a46856d03670d3d" FOREIGN KEY (region) REFERENCES public.aws_regions (region))""",
    "CREATE TYPE public.parameter_group_family_enum AS ENUM ("
    + ", ".join(f"'{f}'" for f in PARAMETER_GROUP_FAMILIES) + ")",
    """CREATE TABLE public.parameter_group (
         id SERIAL NOT NULL,
         name character varying NOT NULL,
         arn character varying,
         family public.parameter_group_family_enum NOT NULL,
         description character varying NOT NULL,
         parameters jsonb,
         region character varying NOT NULL DEFAULT public.default_aws_region(),
         CONSTRAINT "UQ_cd5d35716aae42c8f6acb7dc989" UNIQUE (arn),
         CONSTRAINT paragrp_id_region UNIQUE (id, region),
         CONSTRAINT paragrp_name_region UNIQUE (name, region),
         CONSTRAINT "PK_33d024772ff6924f4bc337d865a" PRIMARY KEY (id),
         CONSTRAINT "FK_be8546b2c38fbd6dc4c146d732c" FOREIGN KEY (region) REFERENCES public.aws_regions (region))""",
    """CREATE TABLE public.rds (
         id SERIAL NOT NULL,
         db_instance_identifier character varying NOT NULL,
         arn character varying,
         allocated_storage integer NOT NULL,
         db_instance_class character varying NOT NULL,
         engine character varying NOT NULL,
         engine_version character varying,
         master_user_password character varying,
         master_username character varying,
         endpoint_addr character varying,
         endpoint_port integer,
         endpoint_hosted_zone_id character varying,
         backup_retention_period integer NOT NULL DEFAULT '1',
         tags json,
         region character varying NOT NULL DEFAULT public.default_aws_region(),
         availability_zone character varying NOT NULL,
         parameter_group_id integer,
         db_cluster_id integer,
         CONSTRAINT "UQ_identifier_region" UNIQUE (db_instance_identifier, region),
         CONSTRAINT "PK_67d6c2133366c8eda49b40de7b0" PRIMARY KEY (id),
         CONSTRAINT "FK_651e8eb207ea4120c252c5469f5" FOREIGN KEY (availability_zone, region)
           REFERENCES public.availability_zone (name, region),
         CONSTRAINT "FK_2303532f134366cb86aae40763f" FOREIGN KEY (parameter_group_id, region)
           REFERENCES public.parameter_group (id, region),
         CONSTRAINT "FK_798c0178dd91095e0800a30d2fb" FOREIGN KEY (db_cluster_id)
           REFERENCES public.db_cluster (id) ON DELETE CASCADE,
         CONSTRAINT "FK_25dea9b640575575c8049dfb2e7" FOREIGN KEY (region) REFERENCES public.aws_regions (region))""",
    """CREATE TABLE public.db_cluster_security_groups (
         db_cluster_id integer NOT NULL,
         security_group_id integer NOT NULL,
         CONSTRAINT "PK_f2deb8fce796ceb5603f1422def" PRIMARY KEY (db_cluster_id, security_group_id),
         CONSTRAINT "FK_d68400e3cedf412cde5b062a061" FOREIGN KEY (db_cluster_id)
           REFERENCES public.db_cluster (id) ON DELETE CASCADE ON UPDATE CASCADE,
         CONSTRAINT "FK_bf6786557c49ffda81752e177e6" FOREIGN KEY (security_group_id)
           REFERENCES public.security_group (id) ON DELETE CASCADE ON UPDATE CASCADE)""",
    'CREATE INDEX "IDX_d68400e3cedf412cde5b062a06" ON public.db_cluster_security_groups (db_cluster_id)',
    'CREATE INDEX "IDX_bf6786557c49ffda81752e177e" ON public.db_cluster_security_groups (security_group_id)',
    """CREATE TABLE public.rds_security_groups (
         rds_id integer NOT NULL,
         security_group_id integer NOT NULL,
         CONSTRAINT "PK_a0b5fa8fc927a6d22d5e2125e86" PRIMARY KEY (rds_id, security_group_id),
         CONSTRAINT "FK_a1927b280e2770235e52a9e0fb1" FOREIGN KEY (rds_id)
           REFERENCES public.rds (id) ON DELETE CASCADE ON UPDATE CASCADE,
         CONSTRAINT "FK_a4080f9f7f3fa99ac9d68dd910a" FOREIGN KEY (security_group_id)
           REFERENCES public.security_group (id) ON DELETE CASCADE ON UPDATE CASCADE)""",
    'CREATE INDEX "IDX_a1927b280e2770235e52a9e0fb" ON public.rds_security_groups (rds_id)',
    'CREATE INDEX "IDX_a4080f9f7f3fa99ac9d68dd910" ON public.rds_security_groups (security_group_id)',
    """CREATE OR REPLACE FUNCTION public.block_rds_in_cluster_pk_update() RETURNS trigger
         LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $block_rds_in_cluster_pk_update$
       BEGIN
         RAISE EXCEPTION 'RDS primary key on an instance belonging to a multi-az cluster cannot be modified'
           USING detail = 'An RDS instance belonging to a multi-az cluster cannot be moved to another region or renamed',
                 hint = 'If you want to change an RDS belonging to a multi-az cluster, please modify cluster settings directly.';
         RETURN OLD;
       END;
       $block_rds_in_cluster_pk_update$""",
    """CREATE TRIGGER block_rds_in_cluster_pk_update BEFORE UPDATE ON public.rds FOR EACH ROW
         WHEN ((OLD.region IS DISTINCT FROM NEW.region OR OLD.db_instance_identifier IS DISTINCT FROM
                NEW.db_instance_identifier) AND OLD.db_cluster_id IS NOT NULL)
         EXECUTE FUNCTION public.block_rds_in_cluster_pk_update()""",
)

UNINSTALL_SQL = (
    "DROP TABLE public.rds_security_groups",
    "DROP TABLE public.db_cluster_security_groups",
    "DROP TABLE public.rds",
    "DROP FUNCTION public.block_rds_in_cluster_pk_update()",
    "DROP TABLE public.parameter_group",
    "DROP TYPE public.parameter_group_family_enum",
    "DROP TABLE public.db_cluster",
    "DROP TYPE public.db_cluster_engine_enum",
    "DROP TABLE public.db_subnet_group",
)

MODULE = Module(
    name="aws_rds",
    version=VERSION,
    dependencies=("aws_account", "aws_security_group", "aws_vpc"),
    install_sql=INSTALL_SQL,
    uninstall_sql=UNINSTALL_SQL,
    mappers=(ParameterGroupMapper(), DbSubnetGroupMapper(), _DB_CLUSTER, _RDS,
             RdsSecurityGroupJoinMapper("db_cluster_security_groups", _DB_CLUSTER, "db_cluster_id",
                                        "db_cluster_identifier", "cluster"),
             RdsSecurityGroupJoinMapper("rds_security_groups", _RDS, "rds_id", "db_instance_identifier", "instance")),
    description="RDS instances, parameter groups, DB subnet groups and Multi-AZ DB clusters",
)
