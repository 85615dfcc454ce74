"""Module ``aws_iam``: IAM roles, users and users' access keys.

Tables, columns, types, enums, keys and defaults follow IaSQL v0.1's ``aws_iam`` migration
(``src/modules/aws_iam/migration/1676629405620-aws_iam.ts``); what each mapper reads, compares,
updates or replaces follows ``src/modules/aws_iam/mappers/*.ts``. IAM is global: every call goes
to ``us-east-1`` and the tables have no ``region``. Tables, in dependency order:

- ``iam_user(arn, user_name, create_date timestamptz, path, user_id, attached_policies_arns
  text[])``: cloud id ``user_name``; ``arn``, ``create_date`` and ``user_id`` are the cloud's.
  ``path`` (NULL means ``/``) and the attached managed policies are changed in place
  (``update_user``, ``attach/detach_user_policy``); a new ``user_name`` makes a new user and
  deletes the old one. Deleting a user detaches its policies and deletes its login profile first.
- ``access_key(id, access_key_id, create_date timestamptz, status access_key_status_enum,
  user_name)``: the users' access keys, read-only as in IaSQL (keys are made by the
  ``access_key_request`` RPC, or by any IAM client): a row inserted by hand creates nothing and
  is removed by the commit, ``status`` (``Active``/``Inactive``) is changed in place with
  ``update_access_key``, deleting a row deletes the key. The table holds no secret (the secret
  access key is returned only once, by the create call, and IaSQL does not store it either), so
  nothing of it can reach the audit log. Unlike IaSQL, a trigger refuses to change a row's
  ``access_key_id`` or ``user_name`` (SQLSTATE P0001): IaSQL would take such a row for a new key
  (removed) and delete the real one.
- ``iam_role(arn, role_name, assume_role_policy_document jsonb, description,
  attached_policies_arns text[])``: cloud id ``role_name``; ``arn`` is the cloud's.
  Service-linked roles (path ``/aws-service-role/``) are not listed.

RPCs: ``access_key_request(user_name)`` and ``set_user_password(user_name, password,
reset_password)`` (below). The password goes to IAM only: it is never written to a table, the
audit log, a progress line, an error message or the engine's logs.

moto (5.2.5, the tests' cloud) answers every call used here: list/create/get/update/delete_user,
list_attached_user_policies, attach/detach_user_policy, get/delete_login_profile,
list/update/delete_access_key, get/create/update/delete_login_profile and the role calls.
moto does not apply an account password policy (no ``PasswordPolicyViolation``) and its
``create_login_profile`` ignores ``PasswordResetRequired`` (its ``update_login_profile`` keeps it).
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

from engine.aws import CloudError
from engine.modules.aws_account import VERSION
from engine.modules.base import Col, Mapper, MapperContext, Module, normalize, require_table_privileges

IAM_REGION = "us-east-1"


def _policy_doc(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(urllib.parse.unquote(value))
        except ValueError:
            return value
    return value


def allows_ec2(doc: Any) -> bool:
    """True when the assume-role policy ``doc`` has a statement that lets EC2 assume the role
    (IaSQL's ``allowEc2Service``: Effect Allow, ``ec2.amazonaws.com`` among the principal's services)."""
    doc = _policy_doc(doc)
    stmts = doc.get("Statement") if isinstance(doc, dict) else None
    for st in stmts if isinstance(stmts, list) else [stmts] if isinstance(stmts, dict) else []:
        if not isinstance(st, dict) or st.get("Effect") != "Allow":
            continue
        svc = (st.get("Principal") or {}).get("Service") if isinstance(st.get("Principal"), dict) else None
        if "ec2.amazonaws.com" in ([svc] if isinstance(svc, str) else svc or []):
            return True
    return False


async def ensure_instance_profile(mc: MapperContext, name: str) -> None:
    """The instance profile named ``name`` exists and holds role ``name`` (IaSQL makes one with every
    role EC2 may assume: ``aws_ec2``'s ``instance.role_name`` launches with it). Raises
    engine.aws.CloudError."""
    try:
        res = await mc.call("iam", IAM_REGION, "get_instance_profile", InstanceProfileName=name)
        roles = [r.get("RoleName") for r in (res.get("InstanceProfile") or {}).get("Roles") or ()]
    except CloudError as e:
        if e.code != "NoSuchEntity":
            raise
        await mc.call("iam", IAM_REGION, "create_instance_profile", InstanceProfileName=name)
        roles = []
    if name not in roles:
        await mc.call("iam", IAM_REGION, "add_role_to_instance_profile", InstanceProfileName=name, RoleName=name)


async def drop_instance_profile(mc: MapperContext, name: str) -> None:
    """Take role ``name`` out of the instance profile of the same name and delete the profile;
    nothing when either is gone. Raises engine.aws.CloudError."""
    for op in ("remove_role_from_instance_profile", "delete_instance_profile"):
        kw = {"InstanceProfileName": name, **({"RoleName": name} if op.startswith("remove") else {})}
        try:
            await mc.call("iam", IAM_REGION, op, **kw)
        except CloudError as e:
            if e.code != "NoSuchEntity":
                raise


class RoleMapper(Mapper):
    """``iam_role`` rows <-> IAM roles (list_roles, list_attached_role_policies). A role EC2 may
    assume gets an instance profile of the same name, made and deleted with it (IaSQL's
    ``mappers/role.ts``)."""

    table = "iam_role"
    columns = (Col("role_name"), Col("arn", "text", "cloud"), Col("assume_role_policy_document", "jsonb"),
               Col("description"), Col("attached_policies_arns", "text[]"))
    key = ("role_name",)
    pk = ("role_name",)

    def describe(self, rec: dict) -> str:
        """The plan-row description of ``rec``."""
        return f"IAM role {rec.get('role_name')}"

    def equals(self, row: dict, cloud: dict) -> bool:
        """True when the row's desired state matches the cloud record (IaSQL's mapper ``equals``)."""
        return (normalize("jsonb", _policy_doc(row.get("assume_role_policy_document")))
                == normalize("jsonb", _policy_doc(cloud.get("assume_role_policy_document")))
                and (row.get("description") or None) == (cloud.get("description") or None)
                and normalize("text[]", row.get("attached_policies_arns"))
                == normalize("text[]", cloud.get("attached_policies_arns")))

    async def _record(self, mc: MapperContext, role: dict) -> dict:
        attached = await mc.paginate("iam", IAM_REGION, "list_attached_role_policies", "AttachedPolicies",
                                     RoleName=role["RoleName"])
        return {
            "role_name": role["RoleName"],
            "arn": role.get("Arn"),
            "assume_role_policy_document": _policy_doc(role.get("AssumeRolePolicyDocument")),
            "description": role.get("Description") or None,
            "attached_policies_arns": sorted(p["PolicyArn"] for p in attached) or None,
        }

    async def read(self, mc: MapperContext) -> list[dict]:
        """Every cloud record of this type. Raises engine.aws.CloudError (reported as SQLSTATE 58000)."""
        roles = await mc.paginate("iam", IAM_REGION, "list_roles", "Roles")
        out = []
        for r in roles:
            if (r.get("Path") or "/").startswith("/aws-service-role/"):
                continue
            out.append(await self._record(mc, r))
        return out

    async def _sync_policies(self, mc: MapperContext, name: str, want: Any, have: Any) -> None:
        want_s, have_s = set(want or []), set(have or [])
        for arn in sorted(want_s - have_s):
            await mc.call("iam", IAM_REGION, "attach_role_policy", RoleName=name, PolicyArn=arn)
        for arn in sorted(have_s - want_s):
            await mc.call("iam", IAM_REGION, "detach_role_policy", RoleName=name, PolicyArn=arn)

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """Create the row's resource in the cloud; returns its cloud record. Raises engine.aws.CloudError."""
        doc = _policy_doc(row.get("assume_role_policy_document"))
        kw: dict[str, Any] = {"RoleName": row["role_name"],
                              "AssumeRolePolicyDocument": doc if isinstance(doc, str) else json.dumps(doc)}
        if row.get("description"):
            kw["Description"] = row["description"]
        res = await mc.call("iam", IAM_REGION, "create_role", **kw)
        try:
            await self._sync_policies(mc, row["role_name"], row.get("attached_policies_arns"), [])
            if allows_ec2(doc):
                await ensure_instance_profile(mc, row["role_name"])
            return await self._record(mc, res["Role"])
        except CloudError as e:
            if not await self._remove(mc, row["role_name"]):  # never leave a role the table cannot record
                e.left = {"role_name": row["role_name"], "attached_policies_arns": None}
            raise

    async def _remove(self, mc: MapperContext, name: str) -> bool:
        """Detach every policy of role ``name``, drop its instance profile and delete it; False when
        that failed."""
        try:
            await drop_instance_profile(mc, name)
            attached = await mc.paginate("iam", IAM_REGION, "list_attached_role_policies", "AttachedPolicies",
                                         RoleName=name)
            for p in attached:
                await mc.call("iam", IAM_REGION, "detach_role_policy", RoleName=name, PolicyArn=p["PolicyArn"])
            await mc.call("iam", IAM_REGION, "delete_role", RoleName=name)
            return True
        except CloudError:
            return False

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """Make the cloud record match the row in place; returns the new record. Raises engine.aws.CloudError."""
        name = row["role_name"]
        doc = _policy_doc(row.get("assume_role_policy_document"))
        if normalize("jsonb", doc) != normalize("jsonb", cloud.get("assume_role_policy_document")):
            await mc.call("iam", IAM_REGION, "update_assume_role_policy", RoleName=name,
                          PolicyDocument=doc if isinstance(doc, str) else json.dumps(doc))
            if allows_ec2(doc) and not allows_ec2(cloud.get("assume_role_policy_document")):
                await ensure_instance_profile(mc, name)
            elif allows_ec2(cloud.get("assume_role_policy_document")) and not allows_ec2(doc):
                await drop_instance_profile(mc, name)
        if (row.get("description") or None) != (cloud.get("description") or None):
            await mc.call("iam", IAM_REGION, "update_role", RoleName=name, Description=row.get("description") or "")
        await self._sync_policies(mc, name, row.get("attached_policies_arns"), cloud.get("attached_policies_arns"))
        res = await mc.call("iam", IAM_REGION, "get_role", RoleName=name)
        return await self._record(mc, res["Role"])

    async def delete(self, mc: MapperContext, cloud: dict) -> None:
        """Delete the cloud resource. Raises engine.aws.CloudError."""
        name = cloud["role_name"]
        if cloud.get("attached_policies_arns") is None and "arn" not in cloud:  # left by a failed create
            if not await self._remove(mc, name):
                raise CloudError("DeleteConflict", f"role {name} could not be removed", "iam.delete_role")
            return
        await self._sync_policies(mc, name, [], cloud.get("attached_policies_arns"))
        if allows_ec2(cloud.get("assume_role_policy_document")):
            await drop_instance_profile(mc, name)
        await mc.call("iam", IAM_REGION, "delete_role", RoleName=name)


class UserMapper(Mapper):
    """``iam_user`` rows <-> IAM users (list_users, list_attached_user_policies). Follows IaSQL's
    ``mappers/user.ts``: ``path`` and policies are updated in place."""

    table = "iam_user"
    columns = (Col("arn", "text", "cloud"), Col("user_name"), Col("create_date", "timestamptz", "cloud"),
               Col("path"), Col("user_id", "text", "cloud"), Col("attached_policies_arns", "text[]"))
    key = ("user_name",)
    pk = ("user_name",)

    def describe(self, rec: dict) -> str:
        """The plan-row description of ``rec``."""
        return f"IAM user {rec.get('user_name')}"

    def equals(self, row: dict, cloud: dict) -> bool:
        """True when the row's path (NULL = ``/``) and policies match the cloud's (IaSQL's
        ``equals``; the cloud-managed columns are written back by the sync)."""
        return ((row.get("path") or "/") == (cloud.get("path") or "/")
                and normalize("text[]", row.get("attached_policies_arns"))
                == normalize("text[]", cloud.get("attached_policies_arns")))

    async def _record(self, mc: MapperContext, user: dict) -> dict:
        attached = await mc.paginate("iam", IAM_REGION, "list_attached_user_policies", "AttachedPolicies",
                                     UserName=user["UserName"])
        return {"arn": user.get("Arn"), "user_name": user["UserName"], "create_date": user.get("CreateDate"),
                "path": user.get("Path"), "user_id": user.get("UserId"),
                "attached_policies_arns": sorted(p["PolicyArn"] for p in attached) or None}

    async def read(self, mc: MapperContext) -> list[dict]:
        """Every IAM user. Raises engine.aws.CloudError (reported as SQLSTATE 58000)."""
        out = []
        for u in await mc.paginate("iam", IAM_REGION, "list_users", "Users"):
            try:
                out.append(await self._record(mc, u))
            except CloudError as e:
                if e.code != "NoSuchEntity":  # deleted while being read
                    raise
        return out

    async def _sync_policies(self, mc: MapperContext, name: str, want: Any, have: Any) -> None:
        want_s, have_s = set(want or []), set(have or [])
        for arn in sorted(want_s - have_s):
            await mc.call("iam", IAM_REGION, "attach_user_policy", UserName=name, PolicyArn=arn)
        for arn in sorted(have_s - want_s):
            await mc.call("iam", IAM_REGION, "detach_user_policy", UserName=name, PolicyArn=arn)

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """Create the user with its path and policies; returns its cloud record. A create that
        fails halfway removes the user again. Raises engine.aws.CloudError."""
        kw: dict[str, Any] = {"UserName": row["user_name"]}
        if row.get("path"):
            kw["Path"] = row["path"]
        res = await mc.call("iam", IAM_REGION, "create_user", **kw)
        try:
            await self._sync_policies(mc, row["user_name"], row.get("attached_policies_arns"), [])
            return await self._record(mc, res["User"])
        except CloudError as e:
            if not await self._remove(mc, row["user_name"]):  # never leave a user the table cannot record
                e.left = {"user_name": row["user_name"], "attached_policies_arns": None}
            raise

    async def _remove(self, mc: MapperContext, name: str) -> bool:
        """Detach every policy of user ``name``, delete its login profile and the user; False
        when that failed."""
        try:
            attached = await mc.paginate("iam", IAM_REGION, "list_attached_user_policies", "AttachedPolicies",
                                         UserName=name)
            for p in attached:
                await mc.call("iam", IAM_REGION, "detach_user_policy", UserName=name, PolicyArn=p["PolicyArn"])
            await self._delete_login_profile(mc, name)
            await mc.call("iam", IAM_REGION, "delete_user", UserName=name)
            return True
        except CloudError:
            return False

    async def _delete_login_profile(self, mc: MapperContext, name: str) -> None:
        try:
            await mc.call("iam", IAM_REGION, "delete_login_profile", UserName=name)
        except CloudError as e:
            if e.code != "NoSuchEntity":
                raise

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """Change the user's path and policies in place; returns the new record. Raises
        engine.aws.CloudError."""
        name = row["user_name"]
        if (row.get("path") or "/") != (cloud.get("path") or "/"):
            await mc.call("iam", IAM_REGION, "update_user", UserName=name, NewPath=row.get("path") or "/")
        await self._sync_policies(mc, name, row.get("attached_policies_arns"), cloud.get("attached_policies_arns"))
        res = await mc.call("iam", IAM_REGION, "get_user", UserName=name)
        return await self._record(mc, res["User"])

    async def delete(self, mc: MapperContext, cloud: dict) -> None:
        """Detach the user's policies, delete its login profile, then the user (its access keys
        must be gone: AWS refuses otherwise). Raises engine.aws.CloudError."""
        name = cloud["user_name"]
        if cloud.get("attached_policies_arns") is None and "arn" not in cloud:  # left by a failed create
            if not await self._remove(mc, name):
                raise CloudError("DeleteConflict", f"user {name} could not be removed", "iam.delete_user")
            return
        await self._sync_policies(mc, name, [], cloud.get("attached_policies_arns"))
        await self._delete_login_profile(mc, name)
        await mc.call("iam", IAM_REGION, "delete_user", UserName=name)


class AccessKeyMapper(Mapper):
    """``access_key`` rows <-> the access keys of every IAM user (list_access_keys). Follows
    IaSQL's ``mappers/access_key.ts``: read-only (``creatable`` False), ``status`` updated in
    place, a deleted row deletes the key. Cloud id ``(access_key_id, user_name)``; a key of a user
    without a row is an ``_orphan``."""

    table = "access_key"
    columns = (Col("id", "int", "pk"), Col("access_key_id"), Col("create_date", "timestamptz", "cloud"),
               Col("status"), Col("user_name"))
    key = ("access_key_id", "user_name")
    pk = ("id",)
    cloud_read_uses_db = True
    creatable = False

    def describe(self, rec: dict) -> str:
        """The plan-row description of ``rec`` (the key id, which is not a secret)."""
        return f"access key {rec.get('access_key_id')} of IAM user {rec.get('user_name')} ({rec.get('status')})"

    async def read(self, mc: MapperContext) -> list[dict]:
        """The access keys of every user. Raises engine.aws.CloudError (reported as SQLSTATE 58000)."""
        users = {r[0] for r in await mc.fetchall("SELECT user_name FROM public.iam_user")}
        out = []
        for u in await mc.paginate("iam", IAM_REGION, "list_users", "Users"):
            try:
                keys = await mc.paginate("iam", IAM_REGION, "list_access_keys", "AccessKeyMetadata",
                                         UserName=u["UserName"])
            except CloudError as e:
                if e.code == "NoSuchEntity":  # deleted while being read
                    continue
                raise
            out += [{"access_key_id": k["AccessKeyId"], "create_date": k.get("CreateDate"),
                     "status": k.get("Status"), "user_name": u["UserName"],
                     "_orphan": u["UserName"] not in users} for k in keys]
        return out

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """Never called (``creatable`` is False); raises CloudError."""
        raise CloudError("NotImplemented", "access keys cannot be created through the table", "iam.create_access_key")

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """Set the key's status (``Active``/``Inactive``); returns the new record. Raises
        engine.aws.CloudError."""
        if row.get("status") and row.get("status") != cloud.get("status"):
            await mc.call("iam", IAM_REGION, "update_access_key", UserName=cloud["user_name"],
                          AccessKeyId=cloud["access_key_id"], Status=row["status"])
        keys = await mc.paginate("iam", IAM_REGION, "list_access_keys", "AccessKeyMetadata",
                                 UserName=cloud["user_name"])
        for k in keys:
            if k["AccessKeyId"] == cloud["access_key_id"]:
                return {**cloud, "status": k.get("Status"), "create_date": k.get("CreateDate")}
        raise CloudError("NoSuchEntity", f"access key {cloud['access_key_id']} vanished", "iam.update_access_key")

    async def delete(self, mc: MapperContext, cloud: dict) -> None:
        """Delete the key. Raises engine.aws.CloudError."""
        await mc.call("iam", IAM_REGION, "delete_access_key", UserName=cloud["user_name"],
                      AccessKeyId=cloud["access_key_id"])


async def access_key_request(state: Any, ctx: Any, user_name: Any) -> list[tuple]:
    """IaSQL's ``access_key_request`` RPC (``src/modules/aws_iam/rpcs/request.ts``): create an
    access key for IAM user ``user_name``, as the caller, in the caller's transaction.

    Takes the engine state, the ``CallContext`` and the ``varchar`` user name. Calls IAM
    ``create_access_key`` and, when the user has an ``iam_user`` row, records the key in
    ``access_key`` (id, creation date, status; never the secret). Returns one row (status,
    message, accesskeyid, secretaccesskey): ``SUCCESS``, ``''``, the key id and its secret (the
    only time AWS shows it), as IaSQL's (its result columns are unquoted camelCase, so Postgres
    names them in lower case). Raises EngineError 22004 (user name NULL or empty), 42704 (no such
    IAM user), 42501 (the user has a row and the caller may not INSERT into ``access_key``: checked
    before the key is made), 58000 (any other AWS failure, e.g. LimitExceeded: two keys already),
    57014 (cancelled), the server's SQLSTATE when the row cannot be written.
    """
    from engine.core.functions import mapper_context
    from engine.core.session import EngineSession
    from engine.rpc import EngineError

    if not user_name:
        raise EngineError("22004", "access_key_request needs a user name")
    async with EngineSession(ctx, state, "access_key_request") as s:
        mc = await mapper_context(s)
        has_row = await s.fetchone("SELECT 1 FROM public.iam_user WHERE user_name = $1", (user_name,))
        if has_row:
            await require_table_privileges(s, "access_key_request", "access_key", ("INSERT",), "the new key")
        s.check_cancelled()
        try:
            res = await mc.call("iam", IAM_REGION, "create_access_key", UserName=user_name)
        except CloudError as e:
            if e.code == "NoSuchEntity":
                raise EngineError("42704", f"IAM user {user_name} does not exist", detail=str(e)) from None
            raise
        key = res.get("AccessKey") or {}
        if not key.get("AccessKeyId"):
            return [("ERROR", "Error generating access key", "", "")]
        if has_row:
            # access_key has no unique key (IaSQL's table): a row another session's sync
            # committed meanwhile for this key is not written twice
            await s.execute("INSERT INTO public.access_key (access_key_id, create_date, status, user_name) "
                            "SELECT $1::varchar, $2::timestamptz, $3::public.access_key_status_enum, $4::varchar "
                            "WHERE NOT EXISTS "
                            "(SELECT 1 FROM public.access_key WHERE access_key_id = $1::varchar)",
                            (key["AccessKeyId"], key.get("CreateDate"), key.get("Status") or "Active", user_name))
        ctx.progress(f"created access key {key['AccessKeyId']} for IAM user {user_name}")
        return [("SUCCESS", "", key["AccessKeyId"], key.get("SecretAccessKey"))]


#: How often ``set_user_password`` retries a login profile IAM reports as temporarily unmodifiable
#: (``EntityTemporarilyUnmodifiable``, e.g. right after the user was made), and the pause between tries.
PASSWORD_RETRIES, PASSWORD_RETRY_PAUSE = 30, 10.0


def _reset_flag(value: Any) -> bool:
    """``reset_password`` as a bool: NULL, ``false`` -> False, ``true`` -> True (any letter case,
    surrounding blanks ignored). Raises EngineError 22023 for anything else."""
    from engine.rpc import EngineError

    if value is None or isinstance(value, bool):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("true", "false"):
        return text == "true"
    raise EngineError("22023", "reset_password must be 'true' or 'false'")


async def set_user_password(state: Any, ctx: Any, user_name: Any, password: Any, reset_password: Any = "false") -> list[tuple]:
    """IaSQL's ``set_user_password`` RPC (``src/modules/aws_iam/rpcs/set_password.ts``): set, change
    or remove the console password (login profile) of IAM user ``user_name``, as the caller.

    Takes the engine state, the ``CallContext`` and the ``varchar`` arguments ``user_name``,
    ``password`` (NULL or empty removes the user's login profile, as in IaSQL) and
    ``reset_password`` (``'true'``: the user must choose a new password at the next sign-in;
    default ``'false'``). Checks the user exists (``get_user``), then ``get_login_profile``
    and ``update_login_profile`` (retried while IAM answers EntityTemporarilyUnmodifiable), or
    ``create_login_profile`` when the user has none, or ``delete_login_profile``. Writes no row
    (IaSQL's neither): the password reaches IAM only, never a table, the audit log, a progress line,
    an error message or a log. Returns one row (status, message): ``OK``, ``''``. Raises
    EngineError 22004 (user name NULL or empty), 22023 (``reset_password`` neither true nor false;
    IAM refused the password, e.g. PasswordPolicyViolation), 42704 (no such IAM user), 58000 (any
    other AWS failure), 57014 (cancelled).
    """
    from engine.core.functions import mapper_context
    from engine.core.session import EngineSession
    from engine.rpc import EngineError

    if not user_name:
        raise EngineError("22004", "set_user_password needs a user name")
    reset = _reset_flag(reset_password)
    async with EngineSession(ctx, state, "set_user_password") as s:
        mc = await mapper_context(s)
        s.check_cancelled()
        try:
            await mc.call("iam", IAM_REGION, "get_user", UserName=user_name)
        except CloudError as e:
            if e.code == "NoSuchEntity":
                raise EngineError("42704", f"IAM user {user_name} does not exist") from None
            raise
        try:
            await mc.call("iam", IAM_REGION, "get_login_profile", UserName=user_name)
            has_profile = True
        except CloudError as e:
            if e.code != "NoSuchEntity":
                raise
            has_profile = False
        s.check_cancelled()
        try:
            if not password:
                if has_profile:
                    await mc.call("iam", IAM_REGION, "delete_login_profile", UserName=user_name)
                    ctx.progress(f"removed the console password of IAM user {user_name}")
                return [("OK", "")]
            if not has_profile:
                await mc.call("iam", IAM_REGION, "create_login_profile", UserName=user_name, Password=password,
                              PasswordResetRequired=reset)
            else:
                for attempt in range(PASSWORD_RETRIES):
                    try:
                        await mc.call("iam", IAM_REGION, "update_login_profile", UserName=user_name,
                                      Password=password, PasswordResetRequired=reset)
                        break
                    except CloudError as e:
                        if e.code != "EntityTemporarilyUnmodifiable" or attempt == PASSWORD_RETRIES - 1:
                            raise
                    await s._sleep(PASSWORD_RETRY_PAUSE)  # wakes at once on a cancel
                    s.check_cancelled()
        except CloudError as e:
            if e.code == "PasswordPolicyViolation":
                raise EngineError("22023", f"IAM refused the password of user {user_name}: {e.aws_message}") from None
            if e.code == "NoSuchEntity":
                raise EngineError("42704", f"IAM user {user_name} does not exist") from None
            raise EngineError("58000", f"AWS call failed: {e.operation}: {e.code}") from None
        ctx.progress(f"{'changed' if has_profile else 'set'} the console password of IAM user {user_name}")
        return [("OK", "")]


def _rpcs() -> tuple:
    """The module's RPC declarations (``Module.rpcs``)."""
    from engine.rpc import Argument, Column, Function

    return (
        Function(
            name="access_key_request",
            arguments=(Argument("user_name", "varchar"),),
            columns=(Column("status", "varchar"), Column("message", "varchar"), Column("accesskeyid", "varchar"),
                     Column("secretaccesskey", "varchar")),
            impl=access_key_request,
            description="Creates an access key for an IAM user and returns its id and secret (shown only once)",
            sample_usage="SELECT * FROM access_key_request('my-user')",
            mutating=True,
        ),
        Function(
            name="set_user_password",
            arguments=(Argument("user_name", "varchar"), Argument("password", "varchar"),
                       Argument("reset_password", "varchar", default="false")),
            columns=(Column("status", "varchar"), Column("message", "varchar")),
            impl=set_user_password,
            description="Sets, changes or (with an empty password) removes the console password of an IAM user",
            sample_usage="SELECT * FROM set_user_password('my-user', 'A-long-Passw0rd!', 'true')",
            mutating=True,
        ),
    )


MODULE = Module(
    name="aws_iam",
    version=VERSION,
    dependencies=("aws_account",),
    install_sql=(
        """CREATE TABLE public.iam_user (
             arn character varying,
             user_name character varying NOT NULL,
             create_date timestamp with time zone NOT NULL DEFAULT pg_catalog.now(),
             path character varying,
             user_id character varying,
             attached_policies_arns text[],
             CONSTRAINT "PK_3c2bdde602dd518cb7495880609" PRIMARY KEY (user_name))""",
        "CREATE TYPE public.access_key_status_enum AS ENUM ('Active', 'Inactive')",
        """CREATE TABLE public.access_key (
             id SERIAL NOT NULL,
             access_key_id character varying NOT NULL,
             create_date timestamp with time zone NOT NULL DEFAULT pg_catalog.now(),
             status public.access_key_status_enum,
             user_name character varying NOT NULL,
             CONSTRAINT "PK_8bff331b150893bb5833f6e5675" PRIMARY KEY (id),
             CONSTRAINT "FK_370b0be46883538aa03396c665f" FOREIGN KEY (user_name) REFERENCES public.iam_user (user_name))""",
        """CREATE TABLE public.iam_role (
             arn character varying,
             role_name character varying PRIMARY KEY,
             assume_role_policy_document jsonb NOT NULL,
             description character varying,
             attached_policies_arns text[])""",
        # not in IaSQL: a key's identity cannot change (see the module docstring)
        """CREATE OR REPLACE FUNCTION public.block_access_key_primary_key_update() RETURNS trigger
           LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
           BEGIN
             RAISE EXCEPTION 'Access key id or user cannot be modified'
               USING DETAIL = 'An access key belongs to one user and its id is given by AWS',
                     HINT = 'Delete the row to delete the key; new keys are made with any IAM client.';
             RETURN OLD;
           END $$""",
        """CREATE TRIGGER block_access_key_primary_key_update BEFORE UPDATE ON public.access_key FOR EACH ROW
           WHEN (OLD.access_key_id IS DISTINCT FROM NEW.access_key_id OR OLD.user_name IS DISTINCT FROM NEW.user_name)
           EXECUTE FUNCTION public.block_access_key_primary_key_update()""",
    ),
    uninstall_sql=(
        "DROP TABLE public.iam_role",
        "DROP TABLE public.access_key",
        "DROP TYPE public.access_key_status_enum",
        "DROP TABLE public.iam_user",
        "DROP FUNCTION IF EXISTS public.block_access_key_primary_key_update()",
    ),
    mappers=(UserMapper(), AccessKeyMapper(), RoleMapper()),
    description="IAM roles, users and access keys",
    rpcs=_rpcs(),
)
