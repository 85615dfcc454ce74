"""Module ``aws_ec2``: EC2 instances, their security groups, key pairs, EBS volumes and target-group registrations.

Tables, columns, types, enums, keys, defaults and constraints follow IaSQL v0.1's ``aws_ec2``
migration (``src/modules/aws_ec2/migration/1678376551722-aws_ec2.ts`` and ``sql/before_install.sql``);
what each mapper reads, compares, updates in place or replaces follows ``src/modules/aws_ec2/
mappers/*.ts``. Tables, in dependency order:

- ``key_pair(id, name, key_pair_id, type, fingerprint, public_key, region)``: identified by
  (``name``, ``region``). AWS's columns (id, type, fingerprint, public key) are never pushed: a
  change to them is turned back by the sync, as in IaSQL. IaSQL never creates a key pair from a
  row (its ``key_pair_request``/``key_pair_import`` functions do); here a row inserted with a
  ``public_key`` is imported (``import_key_pair``, what ``key_pair_import`` does), and a row
  without one is refused (the commit fails: AWS would generate a private key the table cannot
  hold). Deleting a row deletes the key pair.
- ``instance``: cloud id ``instance_id``. ``tags`` and ``state`` (``running``/``stopped``/
  ``hibernate``: a stop with hibernation, read back as ``stopped``) change in place; a new
  ``instance_type``, ``user_data``, ``key_pair_name``, ``role_name``, ``subnet_id``,
  ``hibernation_enabled`` or ``region`` replaces the instance (terminate, then run a new one), as
  IaSQL's ``updateOrReplace``. Unlike IaSQL, whose ``equals`` ignores ``ami`` (so an edited ami was
  silently turned back by the next sync), a new ``ami`` replaces too; an ami written as
  ``resolve:ssm:<parameter>`` is resolved through SSM at create and not compared afterwards (the
  sync writes the image id back). A NULL ``subnet_id`` means AWS's choice (the default subnet),
  which the sync writes back. The instance profile is IaSQL's: the role's ARN with ``:role/``
  turned into ``:instance-profile/``: ``aws_iam`` makes an instance profile named after each role
  EC2 may assume (and deletes it with the role), as IaSQL's.
  Interim states read as ``running`` (IaSQL); terminated, shutting-down and spot instances are not
  read. Creates wait until the instance leaves ``pending`` (IaSQL also waits for a public IP,
  which an instance in a private subnet never gets); deletes wait until it is terminated.
- ``instance_security_groups(instance_id, security_group_id)``: IaSQL's many-to-many join table.
  A new instance is launched with its rows' groups (the default group of its VPC when it has none,
  which the sync then writes back). IaSQL replaces an instance whose groups change; here a row
  added or deleted changes the running instance's groups in place (``modify_instance_attribute``),
  as AWS allows for VPC instances; deleting the last row gives the instance its VPC's default
  group (AWS requires one). Rows of instances in regions that are not enabled are left alone.

- ``general_purpose_volume``, ``instance_block_device_mapping``, ``registered_instance``: see their
  mappers. ``aws_elb`` is a dependency, as in IaSQL's ``module.json`` (``registered_instance``
  references its ``target_group``).

RPCs (below): ``key_pair_request(key_pair_name, region, key_format, key_type)`` and
``key_pair_import(key_name, public_key, region)`` make a key pair and record its ``key_pair`` row;
``describe_ami(ami_id[, region])`` returns an image's attributes.

Not built: IaSQL's launch of an instance with the mapping rows (and a root-volume row) given before
it exists (here a mapping row attaches its volume once the instance runs; the root volume is AWS's
and is read back).

Reads are batched: one paginated ``describe_instances`` per enabled region (regions read
concurrently), kept for the rest of the engine call (``mc.memo``) and updated by this module's own
creates, updates and deletes, so that the instance table, the join table and ``aws_ec2_metadata``
share it. It starts in the background when a commit, rollback or install begins
(``Mapper.prefetch``), so that it overlaps the other tables' reads and writes. AWS has no batched read of user data: ``describe_instance_attribute(userData)`` runs once
per instance, ``USER_DATA_CONCURRENCY`` at a time, and the answer of a running instance is kept
for later calls, keyed by its launch time (AWS only lets user data change while an instance is
stopped, and starting it again sets a new launch time). Database lookups (subnet, security group
and role ids) run before or after the concurrent cloud part, never during it: the caller's
connection serves one query at a time.

moto (5.2.5, the tests' cloud) answers every call used here: run/describe/terminate/start/
stop_instances, describe/modify_instance_attribute, describe_instance_types, create/import/describe/
delete_key_pair(s), describe_images, describe_security_groups, ssm get_parameter, create_tags/delete_tags. Where it
differs from AWS: an instance launched without security groups has none (AWS gives it its VPC's
default group), a started instance keeps its launch time, instances are ``running`` right after
launch, and ``CpuOptions`` is not returned (``aws_ec2_metadata`` then takes the instance type's
default core count), and ``create_key_pair`` takes any ``KeyType``/``KeyFormat`` (it makes an RSA
key in PEM for an unknown one: ``key_pair_request`` checks them itself).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from typing import Any

from engine.aws import CloudError
from engine.modules.aws_account import VERSION
from engine.modules.aws_vpc import (
    WAIT_DELAY,
    WAIT_TRIES,
    VpcModuleMapper,
    id_maps,
    missing_dependency,
    set_tags,
    tag_specifications,
    tags_from_aws,
)
from engine.modules.base import Col, MapperContext, Module, require_table_privileges, rpc_region

#: At most this many per-instance cloud calls (user data) run at once in one read.
USER_DATA_CONCURRENCY = 16
#: Terminations take longer than starts: how many ``WAIT_DELAY`` polls a delete waits.
TERMINATE_TRIES = 120
#: Instance states that are gone (never read into the tables).
_GONE = ("terminated", "shutting-down")
SSM_PREFIX = "resolve:ssm:"

#: User data of running instances, by (access key, region, instance id, launch time).
_USER_DATA: dict[tuple, str | None] = {}
_USER_DATA_MAX = 200_000


# -- the shared, batched instance read ------------------------------------------------------------------
def _memo_key(region: str) -> tuple:
    return ("aws_ec2.instances", region)


async def _read_region(mc: MapperContext, region: str) -> dict[str, dict]:
    """Cloud only: the live instances of ``region`` and their user data (into the call's memo)."""
    reservations = await mc.paginate("ec2", region, "describe_instances", "Reservations")
    found = {i["InstanceId"]: i for r in reservations for i in r.get("Instances") or () if _live(i)}
    await user_data(mc, region, list(found.values()))
    return found


def _quiet(task: asyncio.Task) -> None:
    """Retrieve a background read's exception, so an unawaited failure is not logged as lost."""
    if not task.cancelled():
        task.exception()


def prefetch_instances(mc: MapperContext) -> None:
    """Start reading every enabled region's instances and user data in the background (cloud
    calls only), unless this call has them already; ``region_instances`` awaits the read."""
    for region in mc.regions:
        if _memo_key(region) not in mc.memo and ("aws_ec2.task", region) not in mc.memo:
            task = asyncio.ensure_future(_read_region(mc, region))
            task.add_done_callback(_quiet)
            mc.memo[("aws_ec2.task", region)] = task


async def region_instances(mc: MapperContext, region: str) -> dict[str, dict]:
    """``{instance id: describe_instances record}`` of ``region`` (gone and spot instances left
    out), read once per engine call (``mc.memo``, started early by ``prefetch_instances``), with
    the user data of each fetched into the call's memo. Raises engine.aws.CloudError."""
    key = _memo_key(region)
    if key not in mc.memo:
        task = mc.memo.pop(("aws_ec2.task", region), None)
        found = await (task if task is not None else _read_region(mc, region))
        mc.memo.setdefault(key, found)
    return mc.memo[key]


async def all_instances(mc: MapperContext) -> dict[str, dict[str, dict]]:
    """``{region: region_instances(region)}`` for the enabled regions, read concurrently.
    Raises engine.aws.CloudError."""
    got = await asyncio.gather(*(region_instances(mc, r) for r in mc.regions))
    return dict(zip(mc.regions, got))


def _live(i: dict) -> bool:
    return ((i.get("State") or {}).get("Name") not in _GONE and i.get("InstanceLifecycle") != "spot"
            and bool(i.get("InstanceType")))


async def describe_instance(mc: MapperContext, region: str, instance_id: str) -> dict | None:
    """The fresh describe record of one instance (None when gone), also stored in the call's
    shared read. Raises engine.aws.CloudError."""
    try:
        res = await mc.call("ec2", region, "describe_instances", InstanceIds=[instance_id])
    except CloudError as e:
        if e.code != "InvalidInstanceID.NotFound":
            raise
        res = {}
    found = [i for r in res.get("Reservations") or () for i in r.get("Instances") or ()]
    inst = found[0] if found and _live(found[0]) else None
    cached = mc.memo.get(_memo_key(region))
    if cached is not None:
        if inst is None:
            cached.pop(instance_id, None)
        else:
            cached[instance_id] = inst
    return inst


async def user_data(mc: MapperContext, region: str, instances: list[dict]) -> dict[str, str | None]:
    """``{instance id: decoded user data or None}`` for ``instances`` of ``region``: one
    ``describe_instance_attribute`` per instance not known yet, at most USER_DATA_CONCURRENCY at
    once. Answers are kept for the call (an instance's user data is never changed by this module:
    a new one replaces it) and, for running instances, across calls by launch time (see the module
    docstring). Raises engine.aws.CloudError."""
    known = mc.memo.setdefault(("aws_ec2.user_data", region), {})
    out: dict[str, str | None] = {}
    todo: list[tuple[dict, tuple | None]] = []
    for i in instances:
        iid = i["InstanceId"]
        running = (i.get("State") or {}).get("Name") == "running"
        key = (mc.creds.access_key_id, region, iid, str(i.get("LaunchTime"))) if running else None
        if iid in known:
            out[iid] = known[iid]
        elif key is not None and key in _USER_DATA:
            out[iid] = known[iid] = _USER_DATA[key]
        else:
            todo.append((i, key))
    gate = asyncio.Semaphore(USER_DATA_CONCURRENCY)

    async def one(i: dict, key: tuple | None) -> None:
        """Read and keep one instance's user data (under the gate)."""
        async with gate:
            res = await mc.call("ec2", region, "describe_instance_attribute", InstanceId=i["InstanceId"],
                                Attribute="userData")
        out[i["InstanceId"]] = known[i["InstanceId"]] = value = _decode((res.get("UserData") or {}).get("Value"))
        if key is not None:
            if len(_USER_DATA) >= _USER_DATA_MAX:
                _USER_DATA.clear()
            _USER_DATA[key] = value

    await asyncio.gather(*(one(i, k) for i, k in todo))
    return out


def _decode(raw: str | None) -> str | None:
    """Base64 user data as text (None when there is none; undecodable bytes are replaced)."""
    if not raw:
        return None
    try:
        return base64.b64decode(raw).decode("utf-8", errors="replace")
    except (binascii.Error, ValueError):
        return raw


# -- key_pair ------------------------------------------------------------------------------------------------
class KeyPairMapper(VpcModuleMapper):
    """``key_pair`` rows <-> EC2 key pairs of the enabled regions. Follows IaSQL's
    ``mappers/key_pair.ts`` (AWS's columns are restored, never pushed); creating imports the row's
    ``public_key``."""

    table = "key_pair"
    columns = (Col("id", "int", "pk"), Col("name"), Col("key_pair_id", "text", "cloud"), Col("type", "text", "cloud"),
               Col("fingerprint", "text", "cloud"), Col("public_key", "text", "cloud"), Col("region"))
    key = ("name", "region")
    pk = ("id",)
    cloud_read_uses_db = False

    def describe(self, rec: dict) -> str:
        """The plan-row description of ``rec``."""
        return f"key pair {rec.get('name')} ({rec.get('key_pair_id') or 'new'}) in {rec.get('region')}"

    @staticmethod
    def _record(k: dict, region: str) -> dict:
        return {"name": k.get("KeyName") or k["KeyPairId"], "key_pair_id": k["KeyPairId"], "type": k.get("KeyType"),
                "fingerprint": k.get("KeyFingerprint"), "public_key": k.get("PublicKey"), "region": region}

    async def _records(self, mc: MapperContext, region: str, **kw: Any) -> list[dict]:
        res = await mc.call("ec2", region, "describe_key_pairs", IncludePublicKey=True, **kw)
        return [self._record(k, region) for k in res.get("KeyPairs") or () if k.get("KeyPairId")]

    async def read(self, mc: MapperContext) -> list[dict]:
        """The key pairs of every enabled region (regions read concurrently). Raises
        engine.aws.CloudError."""
        got = await asyncio.gather(*(self._records(mc, r) for r in mc.regions))
        return [k for recs in got for k in recs]

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """Import the row's ``public_key`` under its name; returns the key pair's record. Raises
        engine.aws.CloudError (InvalidParameterValue when the row has no public key)."""
        region = row.get("region") or mc.default_region
        if not row.get("public_key"):
            raise CloudError("InvalidParameterValue", f"key pair {row.get('name')} has no public_key to import: "
                             "create the key pair in AWS and import it with iasql_rollback(), or insert its "
                             "public key", "ec2.import_key_pair")
        await mc.call("ec2", region, "import_key_pair", KeyName=row["name"],
                      PublicKeyMaterial=str(row["public_key"]).encode())
        try:
            return (await self._records(mc, region, KeyNames=[row["name"]]))[0]
        except (CloudError, IndexError) as e:
            err = e if isinstance(e, CloudError) else CloudError("InvalidKeyPair.NotFound", str(e),
                                                                 "ec2.describe_key_pairs")
            try:
                await mc.call("ec2", region, "delete_key_pair", KeyName=row["name"])
            except CloudError:
                err.left = {"name": row["name"], "region": region}
            raise err from None

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """Nothing to push (only AWS's columns can differ; the sync restores them); returns ``cloud``."""
        return cloud

    async def delete(self, mc: MapperContext, cloud: dict) -> None:
        """Delete the key pair. Raises engine.aws.CloudError."""
        await mc.call("ec2", cloud["region"], "delete_key_pair", KeyName=cloud["name"])


# -- instance ---------------------------------------------------------------------------------------------------
_REPLACING = ("instance_type", "user_data", "key_pair_name", "role_name", "subnet_id", "hibernation_enabled",
              "region")


class InstanceMapper(VpcModuleMapper):
    """``instance`` rows <-> EC2 instances of the enabled regions. Follows IaSQL's
    ``mappers/instance.ts``: tags and state in place, the launch settings replace."""

    table = "instance"
    columns = (Col("id", "int", "pk"), Col("instance_id", "text", "cloud"), Col("ami"), Col("instance_type"),
               Col("key_pair_name"), Col("state"), Col("user_data"), Col("tags", "json"),
               Col("hibernation_enabled", "bool"), Col("region"), Col("role_name"), Col("subnet_id", "int"))
    key = ("instance_id",)
    pk = ("id",)
    optional = ("subnet_id",)

    def describe(self, rec: dict) -> str:
        """The plan-row description of ``rec``."""
        return (f"{rec.get('instance_type')} instance {rec.get('instance_id') or 'new'} ({rec.get('ami')}, "
                f"{rec.get('state')}) in {rec.get('region')}")

    @staticmethod
    def _same(c: Col, a: Any, b: Any) -> bool:
        if c.name in ("user_data", "key_pair_name", "role_name"):  # '' is none, as AWS reads it
            return (a or None) == (b or None)
        return VpcModuleMapper._same(c, a, b)

    def compared(self, row: dict, cloud: dict) -> list[Col]:
        """The user columns compared: an ami to resolve through SSM is not (see the module docstring)."""
        cols = super().compared(row, cloud)
        if str(row.get("ami") or "").startswith(SSM_PREFIX):
            cols = [c for c in cols if c.name != "ami"]
        return cols

    def needs_replace(self, row: dict, cloud: dict) -> bool:
        """True when a launch setting (or a compared ami) differs: only a new instance can have it."""
        names = tuple(c.name for c in self.compared(row, cloud) if c.name in _REPLACING or c.name == "ami")
        return self.differs(row, cloud, names)

    # -- reading
    async def _lookups(self, mc: MapperContext) -> tuple[dict, dict]:
        """(subnet ids ``{(region, subnet id): db id}``, role names ``{instance profile name: role
        name}``) from the database."""
        subnets, _ = await id_maps(mc, "subnet", "subnet_id")
        roles = {name: name for (name,) in await mc.fetchall("SELECT role_name FROM public.iam_role")}
        return subnets, roles

    @staticmethod
    def _record(i: dict, region: str, subnets: dict, roles: dict, data: str | None) -> dict:
        profile = ((i.get("IamInstanceProfile") or {}).get("Arn") or "").rsplit("/", 1)[-1]
        state = (i.get("State") or {}).get("Name")
        return {"instance_id": i["InstanceId"], "ami": i.get("ImageId") or "", "instance_type": i.get("InstanceType"),
                "key_pair_name": i.get("KeyName") or None, "state": "stopped" if state == "stopped" else "running",
                "user_data": data, "tags": tags_from_aws([t for t in i.get("Tags") or () if t.get("Value")]),
                "hibernation_enabled": bool((i.get("HibernationOptions") or {}).get("Configured")),
                "region": region, "role_name": roles.get(profile) if profile else None,
                "subnet_id": subnets.get((region, i.get("SubnetId"))), "_subnet": i.get("SubnetId"),
                "_vpc": i.get("VpcId"), "_groups": [g["GroupId"] for g in i.get("SecurityGroups") or ()]}

    def prefetch(self, mc: MapperContext) -> None:
        """Start the batched instance read (``prefetch_instances``)."""
        prefetch_instances(mc)

    async def read(self, mc: MapperContext) -> list[dict]:
        """Every instance of the enabled regions: the database lookups first, then the batched
        describe and the per-instance user data, concurrently. Raises engine.aws.CloudError."""
        subnets, roles = await self._lookups(mc)
        by_region = await all_instances(mc)
        datas = await asyncio.gather(*(user_data(mc, r, list(by_region[r].values())) for r in mc.regions))
        out = []
        for region, data in zip(mc.regions, datas):
            out += [self._record(i, region, subnets, roles, data.get(iid)) for iid, i in by_region[region].items()]
        return out

    async def _get(self, mc: MapperContext, region: str, instance_id: str) -> dict:
        """The record of one instance, waiting while it is ``pending``. Raises engine.aws.CloudError."""
        for _ in range(WAIT_TRIES):
            i = await describe_instance(mc, region, instance_id)
            if i is None:
                raise CloudError("InvalidInstanceID.NotFound", f"instance {instance_id} is gone", "ec2.describe_instances")
            if (i.get("State") or {}).get("Name") not in ("pending", "stopping"):
                break
            await asyncio.sleep(WAIT_DELAY)
        subnets, roles = await self._lookups(mc)
        data = await user_data(mc, region, [i])
        return self._record(i, region, subnets, roles, data.get(instance_id))

    # -- writing
    async def _launch_settings(self, mc: MapperContext, row: dict) -> tuple[str, dict]:
        """(region, run_instances keywords) for ``row``; raises CloudError DependencyViolation while
        its subnet or a security group has no cloud id yet."""
        op = "ec2.run_instances"
        region = row.get("region") or mc.default_region
        kw: dict[str, Any] = {"ImageId": row["ami"], "InstanceType": row["instance_type"], "MinCount": 1, "MaxCount": 1}
        if row.get("subnet_id") is not None:
            _, by_db = await id_maps(mc, "subnet", "subnet_id")
            if row["subnet_id"] not in by_db:
                raise missing_dependency("subnet", row["subnet_id"], op)
            sub_region, kw["SubnetId"] = by_db[row["subnet_id"]]
            if sub_region != region:
                raise CloudError("InvalidParameterValue", f"subnet #{row['subnet_id']} is in {sub_region}, the "
                                 f"instance in {region}", op)
        if row.get("id") is not None:
            wanted = [g for (g,) in await mc.fetchall(
                "SELECT security_group_id FROM public.instance_security_groups WHERE instance_id = $1", (row["id"],))]
            _, groups = await id_maps(mc, "security_group", "group_id")
            for g in wanted:
                if g not in groups:
                    raise missing_dependency("security group", g, op)
            if wanted:
                kw["SecurityGroupIds"] = sorted(groups[g][1] for g in wanted)
        elif row.get("_groups"):  # a cloud record put back by a revert
            kw["SecurityGroupIds"] = list(row["_groups"])
        if row.get("role_name"):
            found = await mc.fetchall("SELECT arn FROM public.iam_role WHERE role_name = $1", (row["role_name"],))
            if not found or not found[0][0]:
                raise missing_dependency("iam_role", row["role_name"], op)
            kw["IamInstanceProfile"] = {"Arn": found[0][0].replace(":role/", ":instance-profile/")}
        if row.get("key_pair_name"):
            kw["KeyName"] = row["key_pair_name"]
        if row.get("user_data"):
            kw["UserData"] = row["user_data"]  # boto3 base64-encodes it
        if row.get("hibernation_enabled"):
            kw["HibernationOptions"] = {"Configured": True}
        kw.update(tag_specifications("instance", row.get("tags")))
        if kw["ImageId"].startswith(SSM_PREFIX):
            res = await mc.call("ssm", region, "get_parameter", Name=kw["ImageId"][len(SSM_PREFIX):])
            kw["ImageId"] = res["Parameter"]["Value"]
        return region, kw

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """Run the row's instance and wait until it runs; returns its record. A failure after the
        launch terminates it again (or sets ``left``). Raises engine.aws.CloudError."""
        region, kw = await self._launch_settings(mc, row)
        res = await mc.call("ec2", region, "run_instances", **kw)
        iid = res["Instances"][0]["InstanceId"]
        try:
            return await self._get(mc, region, iid)
        except CloudError as e:
            try:
                await mc.call("ec2", region, "terminate_instances", InstanceIds=[iid])
            except CloudError:
                e.left = {"instance_id": iid, "region": region}
            raise

    async def _wait_state(self, mc: MapperContext, region: str, iid: str, want: str, tries: int = WAIT_TRIES) -> None:
        for _ in range(tries):
            i = await describe_instance(mc, region, iid)
            name = "terminated" if i is None else (i.get("State") or {}).get("Name")
            if name == want:
                return
            await asyncio.sleep(WAIT_DELAY)
        raise CloudError("Timeout", f"instance {iid} did not become {want}", "ec2.describe_instances")

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """Tags and state in place (start, stop, or stop with hibernation); returns the new record.
        Raises engine.aws.CloudError (InvalidParameterCombination for a state change AWS cannot make,
        e.g. stopped to hibernate)."""
        region, iid = cloud["region"], cloud["instance_id"]
        if not self._same(self.col("tags"), row.get("tags"), cloud.get("tags")):
            await set_tags(mc, region, iid, row.get("tags"), cloud.get("tags"))
        want, have = row.get("state"), cloud.get("state")
        if want != have:
            if (have, want) == ("stopped", "running"):
                await mc.call("ec2", region, "start_instances", InstanceIds=[iid])
                await self._wait_state(mc, region, iid, "running")
            elif have == "running" and want in ("stopped", "hibernate"):
                await mc.call("ec2", region, "stop_instances", InstanceIds=[iid], Hibernate=want == "hibernate")
                await self._wait_state(mc, region, iid, "stopped")
            else:
                raise CloudError("InvalidParameterCombination",
                                 f"Invalid instance state transition. From CLOUD state {have} to DB state {want}",
                                 "ec2.update_instance")
        return await self._get(mc, region, iid)

    async def delete(self, mc: MapperContext, cloud: dict) -> None:
        """Terminate the instance and wait until it is terminated. Raises engine.aws.CloudError."""
        region, iid = cloud["region"], cloud["instance_id"]
        try:
            await mc.call("ec2", region, "terminate_instances", InstanceIds=[iid])
        except CloudError as e:
            if e.code != "InvalidInstanceID.NotFound":
                raise
        await self._wait_state(mc, region, iid, "terminated", TERMINATE_TRIES)


# -- instance_security_groups ----------------------------------------------------------------------------------
class InstanceSecurityGroupsMapper(VpcModuleMapper):
    """``instance_security_groups`` rows <-> the security groups of instances that have a row
    (IaSQL's join table of ``Instance.securityGroups``); rows change the groups in place."""

    table = "instance_security_groups"
    columns = (Col("instance_id", "int"), Col("security_group_id", "int"))
    key = ("instance_id", "security_group_id")
    pk = ("instance_id", "security_group_id")

    def describe(self, rec: dict) -> str:
        """The plan-row description of ``rec``."""
        return f"security group #{rec.get('security_group_id')} of instance #{rec.get('instance_id')}"

    async def _maps(self, mc: MapperContext) -> tuple[dict, dict, dict, dict]:
        instances, inst_by_db = await id_maps(mc, "instance", "instance_id")
        groups, group_by_db = await id_maps(mc, "security_group", "group_id")
        return instances, inst_by_db, groups, group_by_db

    def prefetch(self, mc: MapperContext) -> None:
        """Start the batched instance read (``prefetch_instances``)."""
        prefetch_instances(mc)

    async def read(self, mc: MapperContext) -> list[dict]:
        """A record per (instance with a row, group with a row) pair of the enabled regions, plus
        the rows of instances in regions that are not enabled, as they are. Raises
        engine.aws.CloudError."""
        instances, _, groups, _ = await self._maps(mc)
        kept = await mc.fetchall(
            "SELECT g.instance_id, g.security_group_id FROM public.instance_security_groups g "
            "JOIN public.instance i ON i.id = g.instance_id WHERE NOT (i.region = ANY($1::varchar[]))",
            (list(mc.regions),))
        out = [{"instance_id": i, "security_group_id": g} for i, g in kept]
        for region, found in (await all_instances(mc)).items():
            for iid, inst in found.items():
                db_inst = instances.get((region, iid))
                if db_inst is None:
                    continue
                for sg in inst.get("SecurityGroups") or ():
                    db_sg = groups.get((region, sg.get("GroupId")))
                    if db_sg is not None:
                        out.append({"instance_id": db_inst, "security_group_id": db_sg})
        return out

    async def _target(self, mc: MapperContext, rec: dict, op: str) -> tuple[str, str, str, dict | None]:
        """(region, instance id, group id, fresh instance record or None when gone) for ``rec``."""
        _, inst_by_db, _, group_by_db = await self._maps(mc)
        if rec.get("instance_id") not in inst_by_db:
            raise missing_dependency("instance", rec.get("instance_id"), op)
        if rec.get("security_group_id") not in group_by_db:
            raise missing_dependency("security_group", rec.get("security_group_id"), op)
        region, iid = inst_by_db[rec["instance_id"]]
        return region, iid, group_by_db[rec["security_group_id"]][1], await describe_instance(mc, region, iid)

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """Add the group to the instance (nothing when it has it already, e.g. from its launch);
        returns the row's record. Raises engine.aws.CloudError."""
        op = "ec2.modify_instance_attribute"
        region, iid, gid, inst = await self._target(mc, row, op)
        if inst is None:
            raise CloudError("InvalidInstanceID.NotFound", f"instance {iid} is gone", op)
        have = [g["GroupId"] for g in inst.get("SecurityGroups") or ()]
        if gid not in have:
            await mc.call("ec2", region, "modify_instance_attribute", InstanceId=iid, Groups=have + [gid])
            await describe_instance(mc, region, iid)
        return {"instance_id": row["instance_id"], "security_group_id": row["security_group_id"]}

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """Never needed (a row is its own identity); returns ``cloud``."""
        return cloud

    async def delete(self, mc: MapperContext, cloud: dict) -> None:
        """Take the group off the instance (its VPC's default group when it was the last one).
        Nothing when the instance or the group is gone. Raises engine.aws.CloudError."""
        try:
            region, iid, gid, inst = await self._target(mc, cloud, "ec2.modify_instance_attribute")
        except CloudError:
            return  # its instance or group has no cloud id any more: nothing holds the pair
        if inst is None:
            return
        have = [g["GroupId"] for g in inst.get("SecurityGroups") or ()]
        if gid not in have:
            return
        rest = [g for g in have if g != gid]
        if not rest:
            res = await mc.call("ec2", region, "describe_security_groups", Filters=[
                {"Name": "vpc-id", "Values": [inst.get("VpcId") or ""]}, {"Name": "group-name", "Values": ["default"]}])
            rest = [g["GroupId"] for g in res.get("SecurityGroups") or ()]
            if not rest or rest == [gid]:
                raise CloudError("InvalidParameterValue", f"instance {iid} needs at least one security group",
                                 "ec2.modify_instance_attribute")
        await mc.call("ec2", region, "modify_instance_attribute", InstanceId=iid, Groups=rest)
        await describe_instance(mc, region, iid)


def _is_root(inst: dict, mapping: dict) -> bool:
    """True when ``mapping`` (one of ``inst``'s BlockDeviceMappings) is its root device: the one
    named ``RootDeviceName``, else (moto names the root device /dev/xvda but maps it at
    /dev/sda1) the first one."""
    maps = inst.get("BlockDeviceMappings") or []
    if any(m.get("DeviceName") == inst.get("RootDeviceName") for m in maps):
        return mapping.get("DeviceName") == inst.get("RootDeviceName")
    return bool(maps) and mapping is maps[0]


# -- general_purpose_volume -------------------------------------------------------------------------------------
_VOLUME_REPLACING = ("availability_zone", "snapshot_id", "region")


async def _wait_volume(mc: MapperContext, region: str, vid: str, want: tuple[str, ...], op: str) -> dict | None:
    """The describe record of volume ``vid`` once its state is one of ``want`` (None once it is
    gone, when ``deleted`` is wanted). Raises CloudError Timeout."""
    for _ in range(WAIT_TRIES):
        try:
            found = (await mc.call("ec2", region, "describe_volumes", VolumeIds=[vid])).get("Volumes") or []
        except CloudError as e:
            if e.code != "InvalidVolume.NotFound":
                raise
            found = []
        if not found and "deleted" in want:
            return None
        if found and found[0].get("State") in want:
            return found[0]
        await asyncio.sleep(WAIT_DELAY)
    raise CloudError("Timeout", f"volume {vid} did not become {' or '.join(want)}", op)


class GeneralPurposeVolumeMapper(VpcModuleMapper):
    """``general_purpose_volume`` rows <-> the gp2/gp3 EBS volumes (available, in use or failed) of
    the enabled regions. Follows IaSQL's ``mappers/general_purpose_volume.ts``: type, size, iops,
    throughput and tags change in place (``modify_volume``), a new availability zone, snapshot or
    region replaces the volume; ``state`` is AWS's (restored by the sync). NULL ``iops``/
    ``throughput`` mean AWS's choice. A volume in use is not deleted (IaSQL): the sync puts its row
    back; delete its mapping first. A row with ``is_root_device`` is never created (IaSQL: root
    volumes come with their instance)."""

    table = "general_purpose_volume"
    columns = (Col("id", "int", "pk"), Col("volume_id", "text", "cloud"), Col("volume_type"), Col("size", "int"),
               Col("state", "text", "cloud"), Col("is_root_device", "bool", "cloud"), Col("iops", "int"),
               Col("throughput", "int"), Col("snapshot_id"), Col("tags", "json"), Col("region"),
               Col("availability_zone"))
    key = ("volume_id",)
    pk = ("id",)
    optional = ("iops", "throughput")

    def describe(self, rec: dict) -> str:
        """The plan-row description of ``rec``."""
        return (f"{rec.get('volume_type')} volume {rec.get('volume_id') or 'new'} ({rec.get('size')} GiB) in "
                f"{rec.get('availability_zone')}")

    def needs_replace(self, row: dict, cloud: dict) -> bool:
        """True when the zone, snapshot or region differs: only a new volume can have it."""
        return self.differs(row, cloud, _VOLUME_REPLACING)

    @staticmethod
    def _record(v: dict, region: str, roots: set) -> dict:
        return {"volume_id": v["VolumeId"], "volume_type": v.get("VolumeType"), "size": v.get("Size"),
                "state": v.get("State"), "is_root_device": v["VolumeId"] in roots, "iops": v.get("Iops"),
                "throughput": v.get("Throughput"), "snapshot_id": v.get("SnapshotId") or None,
                "tags": tags_from_aws([t for t in v.get("Tags") or () if t.get("Value")]), "region": region,
                "availability_zone": v.get("AvailabilityZone")}

    @staticmethod
    def _roots(instances: dict) -> set:
        """Volume ids that are the root device of one of ``instances`` (describe records)."""
        return {m["Ebs"]["VolumeId"] for i in instances.values() for m in i.get("BlockDeviceMappings") or ()
                if _is_root(i, m) and (m.get("Ebs") or {}).get("VolumeId")}

    @staticmethod
    def _describe(mc: MapperContext, region: str) -> Any:
        """The awaitable paginated describe_volumes of ``region`` (gp2/gp3, available, in use or failed)."""
        return mc.paginate("ec2", region, "describe_volumes", "Volumes", Filters=[
            {"Name": "volume-type", "Values": ["gp2", "gp3"]}, {"Name": "status", "Values": ["available", "in-use", "error"]}])

    def prefetch(self, mc: MapperContext) -> None:
        """Start the batched instance read (``prefetch_instances``: it tells root volumes apart) and
        each region's volume read in the background (cloud calls only)."""
        prefetch_instances(mc)
        for region in mc.regions:
            if ("aws_ec2.volumes", region) not in mc.memo:
                task = asyncio.ensure_future(self._describe(mc, region))
                task.add_done_callback(_quiet)
                mc.memo[("aws_ec2.volumes", region)] = task

    async def _region(self, mc: MapperContext, region: str) -> list[dict]:
        task = mc.memo.pop(("aws_ec2.volumes", region), None)
        vols = await (task if task is not None else self._describe(mc, region))
        roots = self._roots(await region_instances(mc, region))
        return [self._record(v, region, roots) for v in vols]

    async def read(self, mc: MapperContext) -> list[dict]:
        """The gp2/gp3 volumes of every enabled region (regions read concurrently). Raises
        engine.aws.CloudError."""
        got = await asyncio.gather(*(self._region(mc, r) for r in mc.regions))
        return [v for vols in got for v in vols]

    async def _one(self, mc: MapperContext, region: str, vid: str, want: tuple[str, ...], op: str) -> dict:
        v = await _wait_volume(mc, region, vid, want, op)
        if v is None:
            raise CloudError("InvalidVolume.NotFound", f"volume {vid} is gone", op)
        return self._record(v, region, self._roots(await region_instances(mc, region)))

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """Create the volume and wait until it is available; returns its record. Raises
        engine.aws.CloudError (InvalidParameterValue for a root-device row)."""
        op = "ec2.create_volume"
        if row.get("is_root_device"):
            raise CloudError("InvalidParameterValue", "a root volume comes with its instance: it cannot be created "
                             "from a row", op)
        region = row.get("region") or mc.default_region
        kw: dict[str, Any] = {"AvailabilityZone": row["availability_zone"], "VolumeType": row["volume_type"],
                              "Size": int(row.get("size") or 8)}
        if row["volume_type"] == "gp3":
            kw.update({k: int(row[c]) for k, c in (("Iops", "iops"), ("Throughput", "throughput"))
                       if row.get(c) is not None})
        if row.get("snapshot_id"):
            kw["SnapshotId"] = row["snapshot_id"]
        kw.update(tag_specifications("volume", row.get("tags")))
        vid = (await mc.call("ec2", region, "create_volume", **kw))["VolumeId"]
        try:
            return await self._one(mc, region, vid, ("available", "in-use"), op)
        except CloudError as e:
            try:
                await mc.call("ec2", region, "delete_volume", VolumeId=vid)
            except CloudError:
                e.left = {"volume_id": vid, "region": region, "state": "available"}
            raise

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """Type, size, iops and throughput (``modify_volume``) and tags in place; returns the new
        record. Raises engine.aws.CloudError."""
        region, vid = cloud["region"], cloud["volume_id"]
        if self.differs(row, cloud, tuple(c.name for c in self.compared(row, cloud)
                                          if c.name in ("volume_type", "size", "iops", "throughput"))):
            kw: dict[str, Any] = {"VolumeId": vid, "VolumeType": row["volume_type"], "Size": int(row["size"])}
            if row["volume_type"] == "gp3":
                kw.update({k: int(row[c]) for k, c in (("Iops", "iops"), ("Throughput", "throughput"))
                           if row.get(c) is not None})
            await mc.call("ec2", region, "modify_volume", **kw)
        if not self._same(self.col("tags"), row.get("tags"), cloud.get("tags")):
            await set_tags(mc, region, vid, row.get("tags"), cloud.get("tags"))
        return await self._one(mc, region, vid, ("available", "in-use", "error"), "ec2.modify_volume")

    async def delete(self, mc: MapperContext, cloud: dict) -> None:
        """Delete the volume and wait until it is gone; a volume in use is left (IaSQL). Raises
        engine.aws.CloudError."""
        if cloud.get("state") == "in-use":
            return
        region, vid = cloud["region"], cloud["volume_id"]
        try:
            await mc.call("ec2", region, "delete_volume", VolumeId=vid)
        except CloudError as e:
            if e.code == "InvalidVolume.NotFound":
                return
            raise
        await _wait_volume(mc, region, vid, ("deleted",), "ec2.delete_volume")


# -- instance_block_device_mapping ------------------------------------------------------------------------------
class InstanceBlockDeviceMappingMapper(VpcModuleMapper):
    """``instance_block_device_mapping`` rows <-> the EBS devices of instances with a row whose
    volume has a row. Follows IaSQL's ``mappers/instance_block_device_mapping.ts``: a new row
    attaches its (available) volume to the created instance, a deleted row detaches it, and
    ``delete_on_termination`` changes in place; a new device name, instance or volume is a new
    mapping (detach, attach). A root device is never detached: deleting its row plans nothing and
    the sync puts it back. Mappings of instances in regions that are not enabled are left alone."""

    table = "instance_block_device_mapping"
    columns = (Col("id", "int", "pk"), Col("device_name"), Col("instance_id", "int"), Col("volume_id", "int"),
               Col("delete_on_termination", "bool"), Col("region"))
    key = ("instance_id", "device_name", "volume_id", "region")
    pk = ("id",)
    cloud_read_uses_db = True

    def describe(self, rec: dict) -> str:
        """The plan-row description of ``rec``."""
        return f"volume #{rec.get('volume_id')} as {rec.get('device_name')} of instance #{rec.get('instance_id')}"

    def prefetch(self, mc: MapperContext) -> None:
        """Start the batched instance read (``prefetch_instances``)."""
        prefetch_instances(mc)

    def deletable(self, cloud: dict) -> bool:
        """False for an instance's root device (AWS cannot detach it from a live instance)."""
        return not cloud.get("_root")

    async def read(self, mc: MapperContext) -> list[dict]:
        """A record per EBS device (of an instance with a row, on a volume with a row) of the
        enabled regions, from the batched instance read. Raises engine.aws.CloudError."""
        instances, _ = await id_maps(mc, "instance", "instance_id")
        volumes, _ = await id_maps(mc, "general_purpose_volume", "volume_id")
        out = []
        for region, found in (await all_instances(mc)).items():
            for iid, inst in found.items():
                db_inst = instances.get((region, iid))
                if db_inst is None:
                    continue
                for m in inst.get("BlockDeviceMappings") or ():
                    ebs = m.get("Ebs") or {}
                    db_vol = volumes.get((region, ebs.get("VolumeId")))
                    if db_vol is None or not m.get("DeviceName"):
                        continue
                    out.append({"device_name": m["DeviceName"], "instance_id": db_inst, "volume_id": db_vol,
                                "delete_on_termination": bool(ebs.get("DeleteOnTermination", True)),
                                "region": region, "_root": _is_root(inst, m)})
        return out

    async def _ends(self, mc: MapperContext, rec: dict, op: str) -> tuple[str, str, str]:
        """(region, instance id, volume id) of ``rec``; CloudError DependencyViolation while either
        has no cloud id, InvalidParameterValue when they are in different regions."""
        _, inst_by_db = await id_maps(mc, "instance", "instance_id")
        _, vol_by_db = await id_maps(mc, "general_purpose_volume", "volume_id")
        if rec.get("instance_id") not in inst_by_db:
            raise missing_dependency("instance", rec.get("instance_id"), op)
        if rec.get("volume_id") not in vol_by_db:
            raise missing_dependency("general_purpose_volume", rec.get("volume_id"), op)
        (region, iid), (vregion, vid) = inst_by_db[rec["instance_id"]], vol_by_db[rec["volume_id"]]
        if region != vregion:
            raise CloudError("InvalidParameterValue", f"instance {iid} is in {region}, volume {vid} in {vregion}", op)
        return region, iid, vid

    async def _record(self, mc: MapperContext, rec: dict, region: str, iid: str, vid: str) -> dict:
        inst = await describe_instance(mc, region, iid)
        for m in (inst or {}).get("BlockDeviceMappings") or ():
            if (m.get("Ebs") or {}).get("VolumeId") == vid:
                return {"device_name": m["DeviceName"], "instance_id": rec["instance_id"], "volume_id": rec["volume_id"],
                        "delete_on_termination": bool(m["Ebs"].get("DeleteOnTermination", True)), "region": region,
                        "_root": _is_root(inst, m)}
        raise CloudError("IncorrectState", f"volume {vid} is not attached to instance {iid}", "ec2.attach_volume")

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """Attach the volume to the instance as ``device_name`` (nothing when it is attached there
        already), wait until it is in use, then set ``delete_on_termination``; returns the record.
        Raises engine.aws.CloudError."""
        op = "ec2.attach_volume"
        region, iid, vid = await self._ends(mc, row, op)
        inst = await describe_instance(mc, region, iid)
        if not any((m.get("Ebs") or {}).get("VolumeId") == vid for m in (inst or {}).get("BlockDeviceMappings") or ()):
            await mc.call("ec2", region, "attach_volume", VolumeId=vid, InstanceId=iid, Device=row["device_name"])
            await _wait_volume(mc, region, vid, ("in-use",), op)
        rec = await self._record(mc, row, region, iid, vid)
        if row.get("delete_on_termination") is not None and \
                bool(row["delete_on_termination"]) != rec["delete_on_termination"]:
            return await self.update(mc, row, rec)
        return rec

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """Set ``delete_on_termination`` in place; returns the new record. Raises engine.aws.CloudError."""
        region, iid, vid = await self._ends(mc, cloud, "ec2.modify_instance_attribute")
        await mc.call("ec2", region, "modify_instance_attribute", InstanceId=iid, BlockDeviceMappings=[
            {"DeviceName": cloud["device_name"], "Ebs": {"DeleteOnTermination": bool(row["delete_on_termination"]),
                                                        "VolumeId": vid}}])
        return await self._record(mc, cloud, region, iid, vid)

    async def delete(self, mc: MapperContext, cloud: dict) -> None:
        """Detach the volume and wait until it is available; nothing when the instance or volume is
        gone. Raises engine.aws.CloudError."""
        try:
            region, iid, vid = await self._ends(mc, cloud, "ec2.detach_volume")
        except CloudError:
            return
        try:
            await mc.call("ec2", region, "detach_volume", VolumeId=vid, InstanceId=iid)
        except CloudError as e:
            if e.code in ("InvalidVolume.NotFound", "InvalidAttachment.NotFound", "IncorrectState"):
                return
            raise
        await _wait_volume(mc, region, vid, ("available", "deleted"), "ec2.detach_volume")
        await describe_instance(mc, region, iid)


# -- registered_instance ------------------------------------------------------------------------------------------
class RegisteredInstanceMapper(VpcModuleMapper):
    """``registered_instance`` rows <-> the instances registered in the ``instance`` target groups
    of aws_elb's ``target_group`` table. Follows IaSQL's ``mappers/registered_instance.ts``: every
    column is part of the identity, so a changed row (e.g. a new port) is a new registration (the
    old one is deregistered, the new one registered); a NULL ``port`` means the target group's
    port, which the sync writes back."""

    table = "registered_instance"
    columns = (Col("id", "int", "pk"), Col("port", "int"), Col("region"), Col("instance", "int"),
               Col("target_group_id", "int"))
    key = ("instance", "target_group_id", "port", "region")
    pk = ("id",)
    cloud_read_uses_db = True

    def describe(self, rec: dict) -> str:
        """The plan-row description of ``rec``."""
        port = rec.get("port") if rec.get("port") is not None else "the group's port"
        return (f"instance #{rec.get('instance')} in target group #{rec.get('target_group_id')} on port {port} "
                f"in {rec.get('region')}")

    async def _health(self, mc: MapperContext, region: str, arn: str, **kw: Any) -> list[tuple[str, int | None]]:
        """(instance id, port) of the targets registered in target group ``arn``."""
        res = await mc.call("elbv2", region, "describe_target_health", TargetGroupArn=arn, **kw)
        return [(d["Target"]["Id"], d["Target"].get("Port")) for d in res.get("TargetHealthDescriptions") or ()
                if (d.get("Target") or {}).get("Id")]

    async def read(self, mc: MapperContext) -> list[dict]:
        """A record per registration of an instance with a row in a target group with a row, in the
        enabled regions (target groups of a region read concurrently). Registrations whose instance
        or group has no row are left out, as IaSQL cannot map them either. Raises
        engine.aws.CloudError."""
        instances, _ = await id_maps(mc, "instance", "instance_id")
        groups, _ = await id_maps(mc, "target_group", "target_group_arn")

        async def region_read(region: str) -> list[dict]:
            """The records of one region."""
            tgs = [tg for tg in await mc.paginate("elbv2", region, "describe_target_groups", "TargetGroups")
                   if tg.get("TargetType") == "instance" and (region, tg.get("TargetGroupArn")) in groups]
            healths = await asyncio.gather(*(self._health(mc, region, tg["TargetGroupArn"]) for tg in tgs))
            out = []
            for tg, targets in zip(tgs, healths):
                for iid, port in targets:
                    if (region, iid) in instances:
                        out.append({"instance": instances[(region, iid)], "region": region,
                                    "target_group_id": groups[(region, tg["TargetGroupArn"])],
                                    "port": port if port is not None else tg.get("Port")})
            return out

        got = await asyncio.gather(*(region_read(r) for r in mc.regions))
        return [rec for recs in got for rec in recs]

    async def _ends(self, mc: MapperContext, rec: dict, op: str) -> tuple[str, str, str, int | None]:
        """(region, instance id, target group ARN, port) of ``rec``: the group's port when the
        record has none. Raises CloudError DependencyViolation while the instance or the group has
        no cloud id, InvalidParameterValue when they are in different regions."""
        _, inst_by_db = await id_maps(mc, "instance", "instance_id")
        _, tg_by_db = await id_maps(mc, "target_group", "target_group_arn")
        if rec.get("instance") not in inst_by_db:
            raise missing_dependency("instance", rec.get("instance"), op)
        if rec.get("target_group_id") not in tg_by_db:
            raise missing_dependency("target_group", rec.get("target_group_id"), op)
        region, iid = inst_by_db[rec["instance"]]
        tg_region, arn = tg_by_db[rec["target_group_id"]]
        if tg_region != region:
            raise CloudError("InvalidParameterValue", f"instance #{rec['instance']} is in {region}, target group "
                             f"#{rec['target_group_id']} in {tg_region}", op)
        port = rec.get("port")
        if port is None:
            found = await mc.fetchall("SELECT port FROM public.target_group WHERE id = $1", (rec["target_group_id"],))
            port = found[0][0] if found else None
        return region, iid, arn, port

    @staticmethod
    def _target(iid: str, port: int | None) -> dict:
        return {"Id": iid, "Port": int(port)} if port is not None else {"Id": iid}

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """Register the instance in the target group (on the row's port, else the group's); returns
        the registration's record. Raises engine.aws.CloudError."""
        op = "elbv2.register_targets"
        region, iid, arn, port = await self._ends(mc, row, op)
        await mc.call("elbv2", region, "register_targets", TargetGroupArn=arn, Targets=[self._target(iid, port)])
        found = await self._health(mc, region, arn, Targets=[self._target(iid, port)])
        if not found:
            raise CloudError("InvalidTarget", f"instance {iid} is not registered in {arn} after register_targets", op)
        return {"instance": row["instance"], "target_group_id": row["target_group_id"], "region": region,
                "port": found[0][1] if found[0][1] is not None else port}

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """Never needed (every column is part of the identity); returns ``cloud``."""
        return cloud

    async def delete(self, mc: MapperContext, cloud: dict) -> None:
        """Deregister the instance from the target group; nothing when either is gone. Raises
        engine.aws.CloudError."""
        op = "elbv2.deregister_targets"
        try:
            region, iid, arn, port = await self._ends(mc, cloud, op)
        except CloudError:
            return  # the instance or the group has no cloud id any more: nothing holds the registration
        try:
            await mc.call("elbv2", region, "deregister_targets", TargetGroupArn=arn, Targets=[self._target(iid, port)])
        except CloudError as e:
            if e.code not in ("TargetGroupNotFound", "InvalidTarget"):
                raise


# -- module ---------------------------------------------------------------------------------------------------------
INSTALL_SQL = (
    # IaSQL's before_install.sql: a registered instance's target group must take instances
    """CREATE OR REPLACE FUNCTION public.check_target_group_instance(_target_group_id integer) RETURNS boolean
       LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
       DECLARE _target_group_type public.target_group_target_type_enum;
       BEGIN
         SELECT target_type INTO _target_group_type FROM public.target_group WHERE id = _target_group_id;
         RETURN _target_group_type = 'instance';
       END $$""",
    "CREATE TYPE public.general_purpose_volume_volume_type_enum AS ENUM ('gp2', 'gp3')",
    ("CREATE TYPE public.general_purpose_volume_state_enum AS ENUM ('available', 'creating', 'deleted', 'deleting', "
     "'error', 'in-use')"),
    """CREATE TABLE public.general_purpose_volume (
         id SERIAL NOT NULL,
         volume_id character varying,
         volume_type public.general_purpose_volume_volume_type_enum NOT NULL,
         size integer NOT NULL DEFAULT '8',
         state public.general_purpose_volume_state_enum,
         is_root_device boolean DEFAULT false,
         iops integer,
         throughput integer,
         snapshot_id character varying,
         tags json,
         region character varying NOT NULL DEFAULT public.default_aws_region(),
         availability_zone character varying NOT NULL,
         CONSTRAINT volume_id_region UNIQUE (id, region),
         CONSTRAINT "Check_gp_volume_size_min_max" CHECK (size > 0 AND size < 16385),
         CONSTRAINT "Check_gp_volume_iops" CHECK (iops is NULL OR (iops is NOT NULL AND ((volume_type = 'gp3'
           AND iops <= 16000 AND iops >= 3000) OR (volume_type = 'gp2' AND iops > 0)))),
         CONSTRAINT "Check_gp_volume_throughput" CHECK (throughput IS NULL OR (throughput IS NOT NULL
           AND volume_type = 'gp3' AND throughput >= 125 AND throughput <= 1000)),
         CONSTRAINT "PK_ded6aa0f99ab2bc666ee032778e" PRIMARY KEY (id),
         CONSTRAINT "FK_6d207f0b3f4bf5f7c162c28cd9e" FOREIGN KEY (availability_zone)
           REFERENCES public.availability_zone (name),
         CONSTRAINT "FK_6cf180e59980f6cda9aff59af15" FOREIGN KEY (region) REFERENCES public.aws_regions (region))""",
    # an instance's role must let EC2 assume it
    """CREATE OR REPLACE FUNCTION public.check_role_ec2(_role_name text) RETURNS boolean
       LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
       DECLARE _number_of_records integer;
       BEGIN
         SELECT pg_catalog.count(*) INTO _number_of_records FROM public.iam_role
          WHERE role_name = _role_name AND assume_role_policy_document -> 'Statement'
                @> '[{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}}]';
         RETURN _number_of_records > 0;
       END $$""",
    "CREATE TYPE public.instance_state_enum AS ENUM ('running', 'stopped', 'hibernate')",
    "CREATE TYPE public.key_pair_type_enum AS ENUM ('ed25519', 'rsa')",
    """CREATE TABLE public.instance (
         id SERIAL NOT NULL,
         instance_id character varying,
         ami character varying NOT NULL,
         instance_type character varying NOT NULL,
         key_pair_name character varying,
         state public.instance_state_enum NOT NULL DEFAULT 'running',
         user_data text,
         tags json,
         hibernation_enabled boolean NOT NULL DEFAULT false,
         region character varying NOT NULL DEFAULT public.default_aws_region(),
         role_name character varying,
         subnet_id integer,
         CONSTRAINT instance_id_region UNIQUE (id, region),
         CONSTRAINT check_role_ec2 CHECK (role_name IS NULL OR (role_name IS NOT NULL AND public.check_role_ec2(role_name))),
         CONSTRAINT "PK_eaf60e4a0c399c9935413e06474" PRIMARY KEY (id),
         CONSTRAINT "FK_c24c2124cf72257adac2dfa2c8e" FOREIGN KEY (role_name) REFERENCES public.iam_role (role_name),
         CONSTRAINT "FK_7660424ef50e6538c77706b2480" FOREIGN KEY (subnet_id) REFERENCES public.subnet (id),
         CONSTRAINT "FK_52f1134c0a4287cdb97af5a9886" FOREIGN KEY (region) REFERENCES public.aws_regions (region))""",
    "COMMENT ON COLUMN public.instance.instance_id IS 'Unique identifier provided by AWS once the instance is provisioned'",
    """CREATE TABLE public.key_pair (
         id SERIAL NOT NULL,
         name character varying NOT NULL,
         key_pair_id character varying,
         type public.key_pair_type_enum,
         fingerprint character varying,
         public_key character varying,
         region character varying NOT NULL DEFAULT public.default_aws_region(),
         CONSTRAINT uq_keypair_name_region UNIQUE (name, region),
         CONSTRAINT uq_keypair_id_region UNIQUE (id, region),
         CONSTRAINT "PK_7ff350a8546214b80dfdd52bcb2" PRIMARY KEY (id),
         CONSTRAINT "FK_e2d86caddef571b4984217b4f55" FOREIGN KEY (region) REFERENCES public.aws_regions (region))""",
    """CREATE TABLE public.instance_security_groups (
         instance_id integer NOT NULL,
         security_group_id integer NOT NULL,
         CONSTRAINT "PK_8045eb55d2a16cf6e4cf80e7ee5" PRIMARY KEY (instance_id, security_group_id),
         CONSTRAINT "FK_fa3c179d5090cb1309c63b5e20a" FOREIGN KEY (instance_id) REFERENCES public.instance (id)
           ON DELETE CASCADE ON UPDATE CASCADE,
         CONSTRAINT "FK_b3b92934eff56d2eb0477a1d27f" FOREIGN KEY (security_group_id)
           REFERENCES public.security_group (id) ON DELETE CASCADE ON UPDATE CASCADE)""",
    'CREATE INDEX "IDX_fa3c179d5090cb1309c63b5e20" ON public.instance_security_groups (instance_id)',
    'CREATE INDEX "IDX_b3b92934eff56d2eb0477a1d27" ON public.instance_security_groups (security_group_id)',
    """CREATE TABLE public.instance_block_device_mapping (
         id SERIAL NOT NULL,
         device_name character varying NOT NULL,
         instance_id integer NOT NULL,
         volume_id integer,
         delete_on_termination boolean NOT NULL DEFAULT true,
         region character varying NOT NULL DEFAULT public.default_aws_region(),
         CONSTRAINT "PK_b798e916409eefb1193854452e4" PRIMARY KEY (id),
         CONSTRAINT "FK_11e56b6904d492f3025fd2f4ba3" FOREIGN KEY (instance_id, region)
           REFERENCES public.instance (id, region) ON DELETE CASCADE,
         CONSTRAINT "FK_2cb202ff0a970817beec595281a" FOREIGN KEY (volume_id, region)
           REFERENCES public.general_purpose_volume (id, region),
         CONSTRAINT "FK_fbbd02bffab3b73e12b879bf71e" FOREIGN KEY (region) REFERENCES public.aws_regions (region))""",
    ('CREATE UNIQUE INDEX "IDX_33f2e790466c1e3603f32ff37b" ON public.instance_block_device_mapping (volume_id) '
     "WHERE volume_id IS NOT NULL"),
    """CREATE TABLE public.registered_instance (
         id SERIAL NOT NULL,
         port integer,
         region character varying NOT NULL DEFAULT public.default_aws_region(),
         instance integer,
         target_group_id integer,
         CONSTRAINT check_target_group_instance CHECK (public.check_target_group_instance(target_group_id)),
         CONSTRAINT "PK_e566c7adcf3a7974c08b7f1712c" PRIMARY KEY (id),
         CONSTRAINT "FK_6bf12c7f170e44eeb869e171f0c" FOREIGN KEY (instance, region)
           REFERENCES public.instance (id, region) ON DELETE CASCADE,
         CONSTRAINT "FK_b2f419e2eada3ad14e089612720" FOREIGN KEY (target_group_id)
           REFERENCES public.target_group (id) ON DELETE CASCADE,
         CONSTRAINT "FK_65a392a8bbc87257b1251aeb63e" FOREIGN KEY (region) REFERENCES public.aws_regions (region))""",
)

UNINSTALL_SQL = (
    "DROP TABLE public.registered_instance",
    "DROP TABLE public.instance_block_device_mapping",
    "DROP TABLE public.instance_security_groups",
    "DROP TABLE public.key_pair",
    "DROP TABLE public.instance",
    "DROP TYPE public.key_pair_type_enum",
    "DROP TYPE public.instance_state_enum",
    "DROP TABLE public.general_purpose_volume",
    "DROP TYPE public.general_purpose_volume_state_enum",
    "DROP TYPE public.general_purpose_volume_volume_type_enum",
    "DROP FUNCTION public.check_role_ec2(text)",
    "DROP FUNCTION public.check_target_group_instance(integer)",
)

# -- RPCs --------------------------------------------------------------------------------------------------------
#: What ``key_pair_request`` accepts (AWS's CreateKeyPair values; moto 5.2.5 accepts anything and
#: makes an RSA key in PEM, so they are checked here).
KEY_FORMATS = ("pem", "ppk")
KEY_TYPES = ("rsa", "ed25519")


async def _may_record_key_pair(s: Any, fn: str) -> None:
    """Raise EngineError 42501 unless the caller may INSERT and UPDATE ``key_pair``: checked before
    the cloud call, since the row could not be written afterwards."""
    await require_table_privileges(s, fn, "key_pair", ("INSERT", "UPDATE"), "the key pair")


def _key_pair_error(e: CloudError, name: str, region: str) -> Exception:
    """The EngineError for a failed create/import of key pair ``name`` (42710 duplicate name,
    22023 a value AWS refused), or ``e`` itself (reported as 58000)."""
    from engine.rpc import EngineError

    if e.code == "InvalidKeyPair.Duplicate":
        return EngineError("42710", f"key pair {name} already exists in {region}", detail=str(e))
    if e.code in ("InvalidKeyPair.Format", "InvalidKey.Format", "InvalidParameterValue", "InvalidParameter"):
        return EngineError("22023", f"AWS refused key pair {name}: {e.aws_message}", detail=str(e))
    return e


def _check_public_key(name: str, public_key: str) -> None:
    """Refuse, before any cloud call, a ``public_key`` that is none of the shapes EC2's
    ``import_key_pair`` takes: OpenSSH (``ssh-rsa``, ``ssh-ed25519``, ``ecdsa-sha2-*`` and the
    base64 key), PEM (``-----BEGIN PUBLIC KEY-----``), base64 DER, or an RFC 4716 SSH2 file (passed
    to EC2 as it is). Parsed with the ``cryptography`` package. Returns None. Raises EngineError
    22023 ``invalid public key for key pair <name>: ...`` (AWS would refuse it, moto answers
    some such keys with an HTTP 500)."""
    import base64
    import binascii

    from cryptography.hazmat.primitives.serialization import (load_der_public_key, load_pem_public_key,
                                                              load_ssh_public_key)

    from engine.rpc import EngineError

    text = public_key.strip()
    if text.startswith("---- BEGIN SSH2 PUBLIC KEY ----"):
        return
    data = text.encode()
    for load in (load_ssh_public_key, load_pem_public_key):
        try:
            load(data)
            return
        except Exception:  # ValueError, UnsupportedAlgorithm: not this shape
            pass
    try:
        load_der_public_key(base64.b64decode("".join(text.split()), validate=True))
        return
    except (binascii.Error, ValueError, Exception):  # not base64, not DER, an unsupported key
        pass
    raise EngineError("22023", f"invalid public key for key pair {name}: it is not an OpenSSH "
                               "(ssh-rsa, ssh-ed25519, ecdsa-sha2-*), PEM or base64 DER public key",
                      hint="Give the text of a public key, e.g. the line of ~/.ssh/id_ed25519.pub.")


async def _read_key_pair(s: Any, mc: MapperContext, name: str, region: str) -> dict | None:
    """The new key pair's record, waiting until ``describe_key_pairs`` sees it (IaSQL's
    ``waitUntilKeyPairExists``); None when it never does. Raises EngineError 57014 (cancelled)."""
    mapper = KeyPairMapper()
    for attempt in range(WAIT_TRIES):
        try:
            recs = await mapper._records(mc, region, KeyNames=[name])
        except CloudError as e:
            if e.code != "InvalidKeyPair.NotFound":
                raise
            recs = []
        if recs:
            return recs[0]
        s.check_cancelled()
        if attempt + 1 < WAIT_TRIES:
            await asyncio.sleep(WAIT_DELAY)
    return None


async def _record_key_pair(s: Any, rec: dict) -> None:
    """Insert the ``key_pair`` row of ``rec`` (or bring the row of that name and region up to date)."""
    await s.execute(
        "INSERT INTO public.key_pair (name, key_pair_id, type, fingerprint, public_key, region) "
        "VALUES ($1, $2, $3::public.key_pair_type_enum, $4, $5, $6) ON CONFLICT (name, region) DO UPDATE SET "
        "key_pair_id = EXCLUDED.key_pair_id, type = EXCLUDED.type, fingerprint = EXCLUDED.fingerprint, "
        "public_key = EXCLUDED.public_key",
        (rec["name"], rec["key_pair_id"], rec.get("type"), rec.get("fingerprint"), rec.get("public_key"),
         rec["region"]))


async def key_pair_request(state: Any, ctx: Any, key_pair_name: Any, region: Any, key_format: Any = "pem",
                           key_type: Any = "rsa") -> list[tuple]:
    """IaSQL's ``key_pair_request`` RPC (``src/modules/aws_ec2/rpcs/request.ts``): create EC2 key
    pair ``key_pair_name`` in ``region`` and return its private key, as the caller, in the
    caller's transaction.

    Takes the engine state, the ``CallContext`` and four ``varchar`` arguments: the name, the
    region (NULL or empty: the default region, as IaSQL), ``key_format`` (``pem`` or ``ppk``,
    default ``pem``) and ``key_type`` (``rsa`` or ``ed25519``, default ``rsa``). Calls EC2
    ``create_key_pair``, waits until ``describe_key_pairs`` sees the key and, when the region is
    enabled, records it in ``key_pair`` (id, type, fingerprint, public key; never the private
    key). As IaSQL, a region that is not enabled is not refused: the key pair is made there and
    returned, but no row is written (the sync does not read that region; the next
    ``iasql_rollback`` after enabling it reads the key pair in). Returns one row (name, status,
    message, privatekey; IaSQL's ``privateKey`` is unquoted, so Postgres names it in lower case):
    the name, ``OK``, ``Generated the keypair successfully`` and the private key (the only time
    AWS shows it); ``ERROR`` with a message when the new key pair cannot be read back (the private
    key is still returned: unlike IaSQL, which drops it). Raises EngineError 22004 (name NULL or
    empty), 22023 (bad key format or type, a region that is not a row of ``aws_regions``, a name
    AWS refuses), 42501 (the region is enabled and the caller may not INSERT and UPDATE
    ``key_pair``: checked before the key pair is made), 42710 (a key pair of that name exists in
    the region), 58000 (any other AWS failure), 57014 (cancelled), the server's SQLSTATE when the
    row cannot be written.
    """
    from engine.core.functions import mapper_context
    from engine.core.session import EngineSession
    from engine.rpc import EngineError

    if not key_pair_name:
        raise EngineError("22004", "key_pair_request needs a key pair name")
    fmt, typ = (key_format or "pem").lower(), (key_type or "rsa").lower()
    if fmt not in KEY_FORMATS:
        raise EngineError("22023", f"key_pair_request: key format {key_format} is not one of {', '.join(KEY_FORMATS)}")
    if typ not in KEY_TYPES:
        raise EngineError("22023", f"key_pair_request: key type {key_type} is not one of {', '.join(KEY_TYPES)}")
    async with EngineSession(ctx, state, "key_pair_request") as s:
        mc = await mapper_context(s)
        region = await rpc_region(s, mc, "key_pair_request", region)
        record = region in mc.regions
        if record:
            await _may_record_key_pair(s, "key_pair_request")
        s.check_cancelled()
        try:
            res = await mc.call("ec2", region, "create_key_pair", KeyName=key_pair_name, KeyFormat=fmt, KeyType=typ)
        except CloudError as e:
            raise _key_pair_error(e, key_pair_name, region) from None
        private_key = res.get("KeyMaterial")
        if not res.get("KeyPairId") or not private_key:
            return [("", "ERROR", "Error generating keypair", "")]
        ctx.progress(f"created key pair {key_pair_name} ({res['KeyPairId']}) in {region}")
        rec = await _read_key_pair(s, mc, key_pair_name, region)
        if rec is None:
            return [(key_pair_name, "ERROR", "Failure loading the keypair", private_key)]
        if record:
            await _record_key_pair(s, rec)
        return [(key_pair_name, "OK", "Generated the keypair successfully", private_key)]


async def key_pair_import(state: Any, ctx: Any, key_name: Any, public_key: Any, region: Any) -> list[tuple]:
    """IaSQL's ``key_pair_import`` RPC (``src/modules/aws_ec2/rpcs/import.ts``): import the public
    key ``public_key`` (OpenSSH, PEM or DER text) as EC2 key pair ``key_name`` in ``region``, as
    the caller, in the caller's transaction.

    Takes the engine state, the ``CallContext`` and three ``varchar`` arguments (region NULL or
    empty: the default region, as IaSQL). Calls EC2 ``import_key_pair``, waits until
    ``describe_key_pairs`` sees the key and, when the region is enabled, records it in ``key_pair``
    (a region that is not enabled gets the key pair but no row, as ``key_pair_request``). Returns
    one row (name, status, message): the name, ``OK``, ``Imported the keypair successfully``, or
    ``ERROR``/``Failure loading the keypair`` when it cannot be read back. Raises EngineError 22004
    (name or public key NULL or empty), 22023 (a public key that is none of the shapes EC2 takes,
    checked before any call, or one AWS refuses, a region that is not a
    row of ``aws_regions``), 42501 (the region is enabled and the caller may not INSERT and UPDATE
    ``key_pair``: checked before the import), 42710 (a key pair of that name exists in the
    region), 58000 (any other AWS failure), 57014 (cancelled), the server's SQLSTATE when the row
    cannot be written.
    """
    from engine.core.functions import mapper_context
    from engine.core.session import EngineSession
    from engine.rpc import EngineError

    if not key_name or not public_key:
        raise EngineError("22004", "key_pair_import needs a key name and a public key")
    _check_public_key(str(key_name), str(public_key))
    async with EngineSession(ctx, state, "key_pair_import") as s:
        mc = await mapper_context(s)
        region = await rpc_region(s, mc, "key_pair_import", region)
        record = region in mc.regions
        if record:
            await _may_record_key_pair(s, "key_pair_import")
        s.check_cancelled()
        try:
            res = await mc.call("ec2", region, "import_key_pair", KeyName=key_name,
                                PublicKeyMaterial=str(public_key).encode())
        except CloudError as e:
            raise _key_pair_error(e, key_name, region) from None
        if not res.get("KeyPairId"):
            return [("", "ERROR", "Error importing keypair")]
        ctx.progress(f"imported key pair {key_name} ({res['KeyPairId']}) in {region}")
        rec = await _read_key_pair(s, mc, key_name, region)
        if rec is None:
            return [("", "ERROR", "Failure loading the keypair")]
        if record:
            await _record_key_pair(s, rec)
        return [(key_name, "OK", "Imported the keypair successfully")]


async def describe_ami(state: Any, ctx: Any, ami_id: Any, region: Any = None) -> list[tuple]:
    """IaSQL's ``describe_ami`` RPC (``src/modules/aws_ec2/rpcs/describe_ami.ts``): the attributes
    of image ``ami_id`` (an image id, or ``resolve:ssm:<parameter>``, resolved through SSM as
    IaSQL does).

    Takes the engine state, the ``CallContext``, the ``varchar`` image id and an optional
    ``varchar`` region (not in IaSQL, which always asks the default region: NULL, the default,
    does that; any row of ``aws_regions`` may be named, enabled or not, since nothing is
    recorded). Calls EC2 ``describe_images`` (and SSM ``get_parameter``). Returns one row
    (attributes, status, message): the image's ``describe_images`` record as JSON text with AWS's
    field names (``ImageId``, ``Name``, ``Architecture``, ...), ``OK``, ``''``. Writes nothing.
    Raises EngineError 22004 (image id NULL or empty), 22023 (a malformed image id, a
    ``resolve:ssm:`` without a parameter name, a region that
    is not a row of ``aws_regions``), 42704 (no such image, or no such SSM parameter), 58000 (any
    other AWS failure), 57014 (cancelled).
    """
    from engine.core.functions import mapper_context
    from engine.core.session import EngineSession
    from engine.rpc import EngineError

    if not ami_id:
        raise EngineError("22004", "describe_ami needs an image id")
    async with EngineSession(ctx, state, "describe_ami") as s:
        mc = await mapper_context(s)
        region = await rpc_region(s, mc, "describe_ami", region)
        image_id = str(ami_id)
        s.check_cancelled()
        if image_id.startswith(SSM_PREFIX):
            if not image_id[len(SSM_PREFIX):].strip():
                raise EngineError("22023", f"{image_id} names no SSM parameter",
                                  hint="Write resolve:ssm:<parameter name>, e.g. resolve:ssm:/aws/service/"
                                       "canonical/ubuntu/server/20.04/stable/current/amd64/hvm/ebs-gp2/ami-id")
            try:
                res = await mc.call("ssm", region, "get_parameter", Name=image_id[len(SSM_PREFIX):])
            except CloudError as e:
                if e.code == "ParameterNotFound":
                    raise EngineError("42704", f"SSM parameter {image_id[len(SSM_PREFIX):]} does not exist in "
                                               f"{region}", detail=str(e)) from None
                raise
            image_id = res["Parameter"]["Value"]
            s.check_cancelled()
        try:
            res = await mc.call("ec2", region, "describe_images", ImageIds=[image_id])
        except CloudError as e:
            if e.code == "InvalidAMIID.Malformed":
                raise EngineError("22023", f"{image_id} is not an image id", detail=str(e)) from None
            if e.code in ("InvalidAMIID.NotFound", "InvalidAMIID.Unavailable"):
                raise EngineError("42704", f"image {image_id} does not exist in {region}", detail=str(e)) from None
            raise
        images = res.get("Images") or []
        if not images:
            raise EngineError("42704", f"image {image_id} does not exist in {region}")
        return [(json.dumps(images[0], default=str), "OK", "")]


def _rpcs() -> tuple:
    """The module's RPC declarations (``Module.rpcs``)."""
    from engine.rpc import Argument, Column, Function

    return (
        Function(
            name="key_pair_request",
            arguments=(Argument("key_pair_name", "varchar"), Argument("region", "varchar"),
                       Argument("key_format", "varchar", default="pem"),
                       Argument("key_type", "varchar", default="rsa")),
            columns=(Column("name", "varchar"), Column("status", "varchar"), Column("message", "varchar"),
                     Column("privatekey", "varchar")),
            impl=key_pair_request,
            description="Creates an EC2 key pair and returns its private key (shown only once)",
            sample_usage="SELECT * FROM key_pair_request('my-key', 'us-east-1')",
            mutating=True,
        ),
        Function(
            name="key_pair_import",
            arguments=(Argument("key_name", "varchar"), Argument("public_key", "varchar"),
                       Argument("region", "varchar")),
            columns=(Column("name", "varchar"), Column("status", "varchar"), Column("message", "varchar")),
            impl=key_pair_import,
            description="Imports a public key as an EC2 key pair",
            sample_usage="SELECT * FROM key_pair_import('my-key', 'ssh-rsa AAAA...', 'us-east-1')",
            mutating=True,
        ),
        Function(
            name="describe_ami",
            arguments=(Argument("ami_id", "varchar"), Argument("region", "varchar", default=None)),
            columns=(Column("attributes", "varchar"), Column("status", "varchar"), Column("message", "varchar")),
            impl=describe_ami,
            description="Describes an AMI: its attributes as JSON",
            sample_usage="SELECT * FROM describe_ami('resolve:ssm:/aws/service/canonical/ubuntu/server/20.04/"
                         "stable/current/amd64/hvm/ebs-gp2/ami-id')",
        ),
    )


MODULE = Module(
    name="aws_ec2",
    version=VERSION,
    dependencies=("aws_account", "aws_security_group", "aws_elb", "aws_iam", "aws_vpc"),  # IaSQL's module.json
    install_sql=INSTALL_SQL,
    uninstall_sql=UNINSTALL_SQL,
    mappers=(KeyPairMapper(), GeneralPurposeVolumeMapper(), InstanceMapper(), InstanceSecurityGroupsMapper(),
             InstanceBlockDeviceMappingMapper(), RegisteredInstanceMapper()),
    description="EC2 instances, their security groups, key pairs, EBS volumes and target-group registrations",
    rpcs=_rpcs(),
)
