"""Module ``aws_lambda``: Lambda functions (zip packages) and their VPC security groups.

Tables, columns, types, enums, keys, defaults and constraints follow IaSQL v0.1's ``aws_lambda``
migration (``src/modules/aws_lambda/migration/1673457875123-aws_lambda.ts``, the same in v0.1.0
to v0.1.9) and its ``sql/*.sql``; what the mapper reads, compares and updates follows
``src/modules/aws_lambda/mappers/lambda_function.ts`` and ``aws.ts``.

- ``lambda_function``: cloud id ``arn`` (IaSQL's ``name`` + ``region``); a new ``name`` or
  ``region`` replaces the function, which needs ``zip_b64`` in the same change (without it the
  commit fails before anything is deleted). ``role_name`` references ``iam_role`` (module ``aws_iam``);
  a function whose role has no row is not imported (as IaSQL). ``zip_b64`` is the base64 zip
  package, input only as in IaSQL: a create or a code update sends it and then sets it to NULL
  (AWS never gives the code back), so a non-NULL ``zip_b64`` always means "deploy this code"
  (``update_function_code``). Role, handler, memory size, description, environment, runtime and
  ``subnets`` are one ``update_function_configuration``; tags are untagged and tagged again.
  ``version``, ``package_type`` and ``architecture`` are IaSQL's "restorable" fields: taken at
  create, then written back from the cloud (a change to them alone is put back by the commit's
  sync; ``architecture`` goes with the next code update). Only ``Zip`` functions exist (IaSQL's
  ``package_type`` enum); image functions in the cloud are not read.
- ``lambda_function_security_groups``: IaSQL's many-to-many join table of a function's VPC
  security groups (row ids). A function is created with the groups its join rows name; a join
  row added or deleted later is an ``update_function_configuration`` of its ``VpcConfig``.

IaSQL's ``check_subnets_by_lambda`` trigger on ``subnet`` is installed, narrowed (as in
``aws_elb``) to a delete of a subnet row a function names or a change of its ``subnet_id``.
IaSQL's ``invoke_lambda`` RPC is not part of this module yet.

A delete first detaches the function from its VPC, deletes it, then removes the function's
detached ``lambda`` network interfaces in its subnets, as IaSQL. An undo (failed commit) cannot
give back deleted code: re-creating a deleted function or putting back old code fails with
``Missing base64 encoded zip file`` and is listed in the revert's message.

moto (5.2.5, the tests' cloud) answers create/get/list/delete_function,
update_function_configuration, update_function_code, tag_resource/untag_resource without Docker
(only invoking needs it). Where it differs from AWS: a function is ``Active`` at once, it checks
that the role exists but not that Lambda may assume it, it reports ``VpcId`` ``vpc-123abc`` for any
VPC config and creates no network interfaces.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import Any

from engine.aws import CloudError
from engine.modules.aws_account import VERSION
from engine.modules.base import Col, Mapper, MapperContext, Module, normalize, subnet_guard_sql

#: How often and how long (seconds) a create/update waits for the function to be ready.
WAIT_TRIES, WAIT_DELAY = 150, 2.0
#: IaSQL's createFunction retries while IAM has not yet let Lambda assume a new role.
ROLE_TRIES, ROLE_DELAY = 10, 5.0
ROLE_NOT_ASSUMABLE = "The role defined for the function cannot be assumed by Lambda."


def _obj(value: Any) -> Any:
    """A json object column's comparable form: empty and NULL are the same."""
    if isinstance(value, str):
        import json

        value = json.loads(value)
    return normalize("json", value) if value else None


def _role_name(arn: str | None) -> str | None:
    """``arn:aws:iam::123:role/path/name`` -> ``name`` (IaSQL's ``roleNameFromArn``)."""
    return arn.rsplit("/", 1)[-1] if arn else None


def _zip(b64: str) -> bytes:
    """The zip bytes of a ``zip_b64`` value. Raises CloudError when it is not base64."""
    try:
        return base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError) as e:
        raise CloudError("InvalidParameterValueException", f"zip_b64 is not base64: {e}",
                         "lambda.create_function") from None


class LambdaFunctionMapper(Mapper):
    """``lambda_function`` rows <-> Lambda functions of the enabled regions (IaSQL's
    ``LambdaFunctionMapper``)."""

    table = "lambda_function"
    columns = (Col("id", "int", "pk"), Col("name"), Col("arn", "text", "cloud"), Col("version", "text", "cloud"),
               Col("description"), Col("zip_b64", "text", "cloud"), Col("handler"), Col("runtime"),
               Col("package_type"), Col("architecture"), Col("memory_size", "int"), Col("environment", "json"),
               Col("tags", "json"), Col("subnets", "text[]"), Col("region"), Col("role_name"))
    key = ("arn",)
    pk = ("id",)
    cloud_read_uses_db = True  # roles are resolved through the iam_role table

    def describe(self, rec: dict) -> str:
        """The plan-row description of ``rec``."""
        return f"lambda function {rec.get('name')} ({rec.get('arn') or 'new'}) in {rec.get('region')}"

    @staticmethod
    def config_equal(row: dict, cloud: dict) -> bool:
        """IaSQL's ``updateableFunctionFieldsEq`` and ``updateableVpcConfigFieldsEq`` (subnets;
        the security groups are the join table's)."""
        return (row.get("role_name") == cloud.get("role_name") and row.get("handler") == cloud.get("handler")
                and normalize("int", row.get("memory_size")) == normalize("int", cloud.get("memory_size"))
                and (row.get("description") or None) == (cloud.get("description") or None)
                and _obj(row.get("environment")) == _obj(cloud.get("environment"))
                and row.get("runtime") == cloud.get("runtime")
                and normalize("text[]", row.get("subnets")) == normalize("text[]", cloud.get("subnets")))

    def equals(self, row: dict, cloud: dict) -> bool:
        """IaSQL's ``equals`` minus the restorable fields (the sync writes those back); a non-NULL
        ``zip_b64`` is code to deploy."""
        return (row.get("name") == cloud.get("name") and row.get("region") == cloud.get("region")
                and self.config_equal(row, cloud) and _obj(row.get("tags")) == _obj(cloud.get("tags"))
                and row.get("zip_b64") is None)

    @staticmethod
    def _moved(row: dict, cloud: dict) -> bool:
        """True when the name or the region differs."""
        return row.get("name") != cloud.get("name") or row.get("region") != cloud.get("region")

    def needs_replace(self, row: dict, cloud: dict) -> bool:
        """True when the name or the region (the function's identity) differs and the row has
        code to create the new function from. Without code it is an update that fails before
        anything is deleted (a replace deletes first, and AWS never gives the code back)."""
        return self._moved(row, cloud) and bool(row.get("zip_b64"))

    async def _roles(self, mc: MapperContext) -> dict:
        """``{role_name: arn}`` of the iam_role table."""
        return {n: a for n, a in await mc.fetchall("SELECT role_name, arn FROM public.iam_role")}

    @staticmethod
    def _record(fn: dict, region: str, roles: dict) -> dict | None:
        """The cloud record (a dict of column values and ``_`` notes) of one AWS answer."""
        c = fn.get("Configuration") or {}
        if c.get("PackageType", "Zip") != "Zip":
            return None  # IaSQL: only zip packages
        role = _role_name(c.get("Role"))
        vpc = c.get("VpcConfig") or {}
        return {"name": c.get("FunctionName"), "arn": c.get("FunctionArn"), "version": c.get("Version"),
                "description": c.get("Description") or None, "zip_b64": None, "handler": c.get("Handler"),
                "runtime": c.get("Runtime"), "package_type": c.get("PackageType") or "Zip",
                "architecture": (c.get("Architectures") or ["x86_64"])[-1], "memory_size": c.get("MemorySize"),
                "environment": (c.get("Environment") or {}).get("Variables") or None,
                "tags": fn.get("Tags") or None, "subnets": list(vpc.get("SubnetIds") or []) or None,
                "region": region, "role_name": role,
                "_security_groups": list(vpc.get("SecurityGroupIds") or []),
                # a function whose role has no row (IaSQL does not import it either)
                "_orphan": role not in roles}

    async def read(self, mc: MapperContext) -> list[dict]:
        """The zip functions of the enabled regions. Raises engine.aws.CloudError (SQLSTATE 58000)."""
        roles = await self._roles(mc)
        out = []
        for region in mc.regions:
            for f in await mc.paginate("lambda", region, "list_functions", "Functions"):
                try:
                    fn = await mc.call("lambda", region, "get_function", FunctionName=f["FunctionName"])
                except CloudError as e:
                    if e.code == "ResourceNotFoundException":
                        continue  # deleted meanwhile
                    raise
                rec = self._record(fn, region, roles)
                if rec is not None:
                    out.append(rec)
        return out

    async def _one(self, mc: MapperContext, region: str, name: str) -> dict:
        """The cloud record of one resource, read again. Raises CloudError."""
        fn = await mc.call("lambda", region, "get_function", FunctionName=name)
        rec = self._record(fn, region, await self._roles(mc))
        assert rec is not None
        return rec

    async def _wait(self, mc: MapperContext, region: str, name: str) -> None:
        """Until the function is ``Active`` and no update is in progress (IaSQL's waiters)."""
        for _ in range(WAIT_TRIES):
            c = (await mc.call("lambda", region, "get_function", FunctionName=name))["Configuration"]
            if c.get("State") in (None, "Active") and c.get("LastUpdateStatus") in (None, "Successful"):
                return
            if c.get("State") == "Failed" or c.get("LastUpdateStatus") == "Failed":
                raise CloudError("FunctionFailed", c.get("StateReason") or c.get("LastUpdateStatusReason") or "",
                                 "lambda.get_function")
            await asyncio.sleep(WAIT_DELAY)
        raise CloudError("Timeout", f"lambda function {name} did not become active", "lambda.get_function")

    async def _role_arn(self, mc: MapperContext, row: dict, op: str) -> str:
        """The ARN of the row's role (DependencyViolation while it has none). Raises CloudError."""
        roles = await self._roles(mc)
        arn = roles.get(row.get("role_name"))
        if not arn:
            raise CloudError("DependencyViolation", f"role {row.get('role_name')} is not created in the cloud yet",
                             f"lambda.{op}")
        return arn

    async def _groups(self, mc: MapperContext, row: dict, op: str) -> list[str]:
        """AWS ids of the security groups the row's join rows name."""
        if row.get("id") is None:
            return list(row.get("_security_groups") or [])  # a cloud record re-created by an undo
        got = await mc.fetchall(
            "SELECT g.id, g.group_id FROM public.lambda_function_security_groups j JOIN public.security_group g "
            "ON g.id = j.security_group_id WHERE j.lambda_function_id = $1 ORDER BY g.id", (row["id"],))
        missing = [str(i) for i, gid in got if gid is None]
        if missing:
            raise CloudError("DependencyViolation", f"security group #{', #'.join(missing)} is not created in the "
                             "cloud yet", f"lambda.{op}")
        return [gid for _, gid in got]

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """Create the function from ``zip_b64`` (retrying while IAM does not yet let Lambda assume
        a new role, as IaSQL), wait for ``Active``; returns its cloud record (``zip_b64`` NULL).
        Raises engine.aws.CloudError (``Missing base64 encoded zip file`` without code,
        DependencyViolation while the role or a security group has no cloud id)."""
        region = row.get("region") or mc.default_region
        if not row.get("zip_b64"):
            raise CloudError("InvalidParameterValueException", "Missing base64 encoded zip file",
                             "lambda.create_function")
        kw: dict[str, Any] = {
            "FunctionName": row["name"], "Role": await self._role_arn(mc, row, "create_function"),
            "Code": {"ZipFile": _zip(row["zip_b64"])}, "Handler": row.get("handler"), "Runtime": row.get("runtime"),
            "PackageType": row.get("package_type") or "Zip", "Architectures": [row.get("architecture") or "x86_64"],
            "MemorySize": int(row.get("memory_size") or 128),
            "VpcConfig": {"SubnetIds": list(row.get("subnets") or []),
                          "SecurityGroupIds": await self._groups(mc, row, "create_function")}}
        if row.get("description"):
            kw["Description"] = row["description"]
        env = _obj(row.get("environment"))
        if env:
            kw["Environment"] = {"Variables": _obj_dict(row["environment"])}
        if _obj(row.get("tags")):
            kw["Tags"] = _obj_dict(row["tags"])
        kw = {k: v for k, v in kw.items() if v is not None}
        for attempt in range(ROLE_TRIES):
            try:
                await mc.call("lambda", region, "create_function", **kw)
                break
            except CloudError as e:
                if ROLE_NOT_ASSUMABLE not in str(e) or attempt == ROLE_TRIES - 1:
                    raise
            await asyncio.sleep(ROLE_DELAY)
        try:
            await self._wait(mc, region, row["name"])
            return await self._one(mc, region, row["name"])
        except CloudError as e:
            try:  # never leave a function the table cannot record
                await mc.call("lambda", region, "delete_function", FunctionName=row["name"])
            except CloudError:
                e.left = {"name": row["name"], "region": region, "arn": None}
            raise

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """Configuration (with ``VpcConfig``), code (a non-NULL ``zip_b64``) and tags, each only
        when it differs; returns the new record. Raises engine.aws.CloudError."""
        region, name = cloud["region"], cloud["name"]
        if self._moved(row, cloud):
            raise CloudError("InvalidParameterValueException", "Missing base64 encoded zip file: a new name or region "
                             "re-creates the function, set zip_b64 in the same change", "lambda.create_function")
        if not self.config_equal(row, cloud):
            removed = sorted(set(cloud.get("subnets") or []) - set(row.get("subnets") or []))
            kw: dict[str, Any] = {
                "FunctionName": name, "Role": await self._role_arn(mc, row, "update_function_configuration"),
                "Handler": row.get("handler"), "Description": row.get("description") or "",
                "MemorySize": int(row.get("memory_size") or 128),
                "Environment": {"Variables": _obj_dict(row.get("environment")) or {}},
                "Runtime": row.get("runtime"),
                "VpcConfig": {"SubnetIds": list(row.get("subnets") or []),
                              "SecurityGroupIds": await self._groups(mc, row, "update_function_configuration")}}
            await mc.call("lambda", region, "update_function_configuration",
                          **{k: v for k, v in kw.items() if v is not None})
            await self._wait(mc, region, name)
            for subnet in removed:
                await self._delete_interfaces(mc, region, subnet, name)
        if row.get("zip_b64"):
            await mc.call("lambda", region, "update_function_code", FunctionName=name, ZipFile=_zip(row["zip_b64"]),
                          Architectures=[row.get("architecture") or "x86_64"])
            await self._wait(mc, region, name)
        if _obj(row.get("tags")) != _obj(cloud.get("tags")):
            old = _obj_dict(cloud.get("tags")) or {}
            if old:
                await mc.call("lambda", region, "untag_resource", Resource=cloud["arn"], TagKeys=sorted(old))
            new = _obj_dict(row.get("tags")) or {}
            if new:
                await mc.call("lambda", region, "tag_resource", Resource=cloud["arn"], Tags=new)
        return await self._one(mc, region, name)

    async def _delete_interfaces(self, mc: MapperContext, region: str, subnet: str, name: str) -> None:
        """Delete the function's ``lambda`` network interfaces in ``subnet`` once detached (IaSQL's
        ``deleteNetworkInterface``). Raises engine.aws.CloudError."""
        filters = [{"Name": "subnet-id", "Values": [subnet]}, {"Name": "interface-type", "Values": ["lambda"]}]
        for _ in range(WAIT_TRIES):
            enis = [i for i in (await mc.call("ec2", region, "describe_network_interfaces", Filters=filters))
                    .get("NetworkInterfaces") or [] if name in (i.get("Description") or "")]
            attached = [i for i in enis if (i.get("Attachment") or {}).get("Status") not in (None, "detached")]
            if not attached:
                for i in enis:
                    await mc.call("ec2", region, "delete_network_interface", NetworkInterfaceId=i["NetworkInterfaceId"])
                return
            await asyncio.sleep(WAIT_DELAY)
        raise CloudError("DependencyViolation", "Lambda still has pending interfaces, cannot detach VPC",
                         "ec2.delete_network_interface")

    async def delete(self, mc: MapperContext, cloud: dict) -> None:
        """Detach the function from its VPC, delete it, remove its network interfaces. Raises
        engine.aws.CloudError."""
        region, name = cloud["region"], cloud["name"]
        if cloud.get("subnets") or cloud.get("_security_groups"):
            try:
                await mc.call("lambda", region, "update_function_configuration", FunctionName=name,
                              VpcConfig={"SubnetIds": [], "SecurityGroupIds": []})
                await self._wait(mc, region, name)
            except CloudError:
                pass  # e.g. its role is gone already: delete all the same (as IaSQL)
        await mc.call("lambda", region, "delete_function", FunctionName=name)
        for subnet in cloud.get("subnets") or []:
            await self._delete_interfaces(mc, region, subnet, name)


def _obj_dict(value: Any) -> dict | None:
    """A json object column as a dict of strings (AWS's tags and variables are text)."""
    if isinstance(value, str):
        import json

        value = json.loads(value)
    return {str(k): v if isinstance(v, str) else str(v) for k, v in value.items()} if value else None


class LambdaFunctionSecurityGroupsMapper(Mapper):
    """``lambda_function_security_groups`` rows <-> the VPC security groups of each function that
    has a row (IaSQL's ``LambdaFunction.securityGroups`` many-to-many, as its join table)."""

    table = "lambda_function_security_groups"
    columns = (Col("lambda_function_id", "int"), Col("security_group_id", "int"))
    key = ("lambda_function_id", "security_group_id")
    pk = ("lambda_function_id", "security_group_id")
    cloud_read_uses_db = True

    def describe(self, rec: dict) -> str:
        """The plan-row description of ``rec``."""
        return f"security group #{rec.get('security_group_id')} of lambda function #{rec.get('lambda_function_id')}"

    async def _maps(self, mc: MapperContext) -> tuple[dict, dict, dict, dict]:
        """Function and security group ids both ways, from their tables."""
        fns = await mc.fetchall("SELECT id, name, region FROM public.lambda_function WHERE arn IS NOT NULL")
        sgs = await mc.fetchall("SELECT id, group_id, region FROM public.security_group WHERE group_id IS NOT NULL")
        return ({(r, n): i for i, n, r in fns}, {i: (n, r) for i, n, r in fns},
                {(r, g): i for i, g, r in sgs}, {i: g for i, g, _ in sgs})

    async def read(self, mc: MapperContext) -> list[dict]:
        """One record per (function, security group) pair whose both ends have rows. Raises
        engine.aws.CloudError (SQLSTATE 58000)."""
        fn_by_name, _, sg_by_aws, _ = await self._maps(mc)
        out = []
        for region in mc.regions:
            for f in await mc.paginate("lambda", region, "list_functions", "Functions"):
                fn_id = fn_by_name.get((region, f["FunctionName"]))
                if fn_id is None:
                    continue
                for g in (f.get("VpcConfig") or {}).get("SecurityGroupIds") or []:
                    sg_id = sg_by_aws.get((region, g))
                    if sg_id is not None:
                        out.append({"lambda_function_id": fn_id, "security_group_id": sg_id,
                                    "_name": f["FunctionName"], "_group_id": g, "_region": region})
        return out

    async def _set(self, mc: MapperContext, rec: dict, add: bool) -> dict:
        """Add (``add``) or take out the record's group in its function's ``VpcConfig``; returns the record."""
        if rec.get("_name"):
            name, group, region = rec["_name"], rec["_group_id"], rec["_region"]
        else:
            _, fns, _, sgs = await self._maps(mc)
            fn, group = fns.get(rec.get("lambda_function_id")), sgs.get(rec.get("security_group_id"))
            if fn is None or group is None:
                raise CloudError("DependencyViolation", f"{self.describe(rec)}: not created in the cloud yet",
                                 "lambda.update_function_configuration")
            name, region = fn
        c = (await mc.call("lambda", region, "get_function", FunctionName=name))["Configuration"]
        vpc = c.get("VpcConfig") or {}
        have = list(vpc.get("SecurityGroupIds") or [])
        want = (have + [group]) if add and group not in have else [g for g in have if g != group or add]
        if want != have:
            await mc.call("lambda", region, "update_function_configuration", FunctionName=name,
                          VpcConfig={"SubnetIds": list(vpc.get("SubnetIds") or []), "SecurityGroupIds": want})
            await LambdaFunctionMapper()._wait(mc, region, name)
        return {"lambda_function_id": rec["lambda_function_id"], "security_group_id": rec["security_group_id"],
                "_name": name, "_group_id": group, "_region": region}

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """Add the group to the function's ``VpcConfig``; returns the record. Raises
        engine.aws.CloudError (DependencyViolation while either end has no cloud id)."""
        return await self._set(mc, row, add=True)

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """Never needed (every column is part of the key). Raises engine.aws.CloudError."""
        raise CloudError("Unsupported", "a join row is added or deleted, not updated",
                         "lambda.update_function_configuration")

    async def delete(self, mc: MapperContext, cloud: dict) -> None:
        """Take the group out of the function's ``VpcConfig``. Raises engine.aws.CloudError."""
        await self._set(mc, cloud, add=False)


_RUNTIMES = ("dotnet6", "dotnetcore1.0", "dotnetcore2.0", "dotnetcore2.1", "dotnetcore3.1", "go1.x", "java11", "java8",
             "java8.al2", "nodejs", "nodejs10.x", "nodejs12.x", "nodejs14.x", "nodejs16.x", "nodejs18.x", "nodejs4.3",
             "nodejs4.3-edge", "nodejs6.10", "nodejs8.10", "provided", "provided.al2", "python2.7", "python3.6",
             "python3.7", "python3.8", "python3.9", "ruby2.5", "ruby2.7")

INSTALL_SQL = (
    "CREATE TYPE public.lambda_function_runtime_enum AS ENUM (" + ", ".join(f"'{r}'" for r in _RUNTIMES) + ")",
    "CREATE TYPE public.lambda_function_package_type_enum AS ENUM ('Zip')",
    "CREATE TYPE public.lambda_function_architecture_enum AS ENUM ('arm64', 'x86_64')",
    """CREATE TABLE public.lambda_function (
         id SERIAL NOT NULL,
         name character varying NOT NULL,
         arn character varying,
         version character varying NOT NULL DEFAULT '$LATEST',
         description character varying,
         zip_b64 character varying,
         handler character varying,
         runtime public.lambda_function_runtime_enum,
         package_type public.lambda_function_package_type_enum NOT NULL DEFAULT 'Zip',
         architecture public.lambda_function_architecture_enum NOT NULL DEFAULT 'x86_64',
         memory_size integer NOT NULL DEFAULT '128',
         environment json,
         tags json,
         subnets character varying array,
         region character varying NOT NULL DEFAULT public.default_aws_region(),
         role_name character varying,
         CONSTRAINT uq_lambda_region UNIQUE (name, region),
         CONSTRAINT "CHK_lambda_handler__package_type"
           CHECK ((package_type = 'Zip' AND handler IS NOT NULL) OR package_type != 'Zip'),
         CONSTRAINT "CHK_lambda_runtime__package_type"
           CHECK ((package_type = 'Zip' AND runtime IS NOT NULL) OR package_type != 'Zip'),
         CONSTRAINT "PK_047cc4e8b0922f375f48b74c2d8" PRIMARY KEY (id),
         CONSTRAINT "FK_e326decbc2b59a537bb9ee68ab9" FOREIGN KEY (role_name) REFERENCES public.iam_role (role_name),
         CONSTRAINT "FK_544ef802e761e12c43a2b63ca13" FOREIGN KEY (region) REFERENCES public.aws_regions (region))""",
    """CREATE TABLE public.lambda_function_security_groups (
         lambda_function_id integer NOT NULL,
         security_group_id integer NOT NULL,
         CONSTRAINT "PK_70f7b122dd48bc798ef03affda9" PRIMARY KEY (lambda_function_id, security_group_id),
         CONSTRAINT "FK_17bc65f40b84a9359b0455e3a48" FOREIGN KEY (lambda_function_id)
           REFERENCES public.lambda_function (id) ON DELETE CASCADE ON UPDATE CASCADE,
         CONSTRAINT "FK_0bc60a723ea0106b86ac8aabeb5" FOREIGN KEY (security_group_id)
           REFERENCES public.security_group (id) ON DELETE CASCADE ON UPDATE CASCADE)""",
    'CREATE INDEX "IDX_17bc65f40b84a9359b0455e3a4" ON public.lambda_function_security_groups (lambda_function_id)',
    'CREATE INDEX "IDX_0bc60a723ea0106b86ac8aabeb" ON public.lambda_function_security_groups (security_group_id)',
    # IaSQL's sql/after_install.sql, narrowed to what a foreign key refuses (module docstring)
    *subnet_guard_sql("check_subnets_by_lambda", "lambda_function", "lambda", "name"),
)

UNINSTALL_SQL = (
    "DROP TRIGGER IF EXISTS check_subnets_by_lambda ON public.subnet",
    "DROP FUNCTION public.check_subnets_by_lambda()",
    "DROP TABLE public.lambda_function_security_groups",
    "DROP TABLE public.lambda_function",
    "DROP TYPE public.lambda_function_architecture_enum",
    "DROP TYPE public.lambda_function_package_type_enum",
    "DROP TYPE public.lambda_function_runtime_enum",
)

MODULE = Module(
    name="aws_lambda",
    version=VERSION,
    dependencies=("aws_account", "aws_iam", "aws_security_group", "aws_vpc"),
    install_sql=INSTALL_SQL,
    uninstall_sql=UNINSTALL_SQL,
    mappers=(LambdaFunctionMapper(), LambdaFunctionSecurityGroupsMapper()),
    description="Lambda functions",
)
