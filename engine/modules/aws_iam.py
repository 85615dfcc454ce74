"""Module ``aws_iam``: IAM roles.

Table ``iam_role(role_name, arn, assume_role_policy_document jsonb, description,
attached_policies_arns text[])`` as in IaSQL's ``aws_iam`` module (cloud id: ``role_name``;
``arn`` is cloud-managed). Service-linked roles (path ``/aws-service-role/``) are not listed.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

from engine.aws import CloudError
from engine.modules.aws_account import VERSION
from engine.modules.base import Col, Mapper, MapperContext, Module, normalize

IAM_REGION = "us-east-1"


def _policy_doc(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(urllib.parse.unquote(value))
        except ValueError:
            return value
    return value


class RoleMapper(Mapper):
    """``iam_role`` rows <-> IAM roles (list_roles, list_attached_role_policies)."""

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
            return await self._record(mc, res["Role"])
        except CloudError as e:
            if not await self._remove(mc, row["role_name"]):  # never leave a role the table cannot record
                e.left = {"role_name": row["role_name"], "attached_policies_arns": None}
            raise

    async def _remove(self, mc: MapperContext, name: str) -> bool:
        """Detach every policy of role ``name`` and delete it; False when that failed."""
        try:
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
        await mc.call("iam", IAM_REGION, "delete_role", RoleName=name)


MODULE = Module(
    name="aws_iam",
    version=VERSION,
    dependencies=("aws_account",),
    install_sql=(
        """CREATE TABLE public.iam_role (
             arn character varying,
             role_name character varying PRIMARY KEY,
             assume_role_policy_document jsonb NOT NULL,
             description character varying,
             attached_policies_arns text[])""",
    ),
    uninstall_sql=("DROP TABLE public.iam_role",),
    mappers=(RoleMapper(),),
    description="IAM roles",
)
