"""Module ``aws_secrets_manager``: Secrets Manager secrets.

Table ``secret(id, name, description, value, version_id, region)`` as in IaSQL v0.1.x's
``aws_secrets_manager`` module (``migration/1668095913103-aws_secrets_manager.ts``).

Follows IaSQL's ``index.ts``: the cloud id is ``(name, region)``. ``value`` is write-only: a
commit sends it (``create_secret``/``update_secret`` with ``SecretString``) and sets it back to
NULL, and it is never read from the cloud, so the table holds a secret only between the user's
write and the commit. ``version_id`` (the ``AWSCURRENT`` version) is cloud-managed: a new value
gives a new one. ``description`` changes in place. A new secret needs a ``value`` (the commit
fails with SQLSTATE 58000, ``MissingSecretValue``, where IaSQL skips the row). A deleted secret
is deleted without a recovery window (``ForceDeleteWithoutRecovery``), as IaSQL does.

Secret values never reach the audit log: ``engine.schema.REDACTED_COLUMNS`` names
``secret.value``, so its audit rows hold ``<redacted>`` (``iasql_get_sql_since`` prints that),
and a failed commit's revert leaves the table alone, as for ``aws_credentials``.
"""

from __future__ import annotations

from engine.aws import CloudError
from engine.modules.aws_account import VERSION
from engine.modules.base import Col, Mapper, MapperContext, Module


class SecretMapper(Mapper):
    """``secret`` rows <-> Secrets Manager secrets of the enabled regions."""

    table = "secret"
    # ``value`` has the "cloud" role: never compared or pushed as desired state by the base
    # rules, and written back (as NULL) with the cloud-managed columns after every create/update
    columns = (Col("id", "int", "pk"), Col("name"), Col("description"), Col("value", "text", "cloud"),
               Col("version_id", "text", "cloud"), Col("region"))
    key = ("name", "region")
    pk = ("id",)

    def describe(self, rec: dict) -> str:
        """``secret <name> in <region>`` (never the value)."""
        return f"secret {rec.get('name')} in {rec.get('region')}"

    def equals(self, row: dict, cloud: dict) -> bool:
        """True when the description matches and the row holds no new value (IaSQL's ``equals``)."""
        return row.get("value") is None and (row.get("description") or None) == (cloud.get("description") or None)

    @staticmethod
    def _record(s: dict, region: str) -> dict:
        current = next((v for v, stages in (s.get("VersionIdsToStages") or s.get("SecretVersionsToStages") or {}).items()
                        if "AWSCURRENT" in stages), None)
        return {"name": s["Name"], "description": s.get("Description") or None, "value": None,
                "version_id": current, "region": region}

    async def _get(self, mc: MapperContext, region: str, name: str) -> dict:
        return self._record(await mc.call("secretsmanager", region, "describe_secret", SecretId=name), region)

    async def read(self, mc: MapperContext) -> list[dict]:
        """Every secret of the enabled regions (metadata only, never a value). Raises
        engine.aws.CloudError."""
        out = []
        for region in mc.regions:
            out += [self._record(s, region) for s in await mc.paginate("secretsmanager", region, "list_secrets",
                                                                       "SecretList") if s.get("Name")]
        return out

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """Create the secret with the row's value; returns its record (``value`` NULL). A failed
        read afterwards deletes it again (or sets ``left``). Raises engine.aws.CloudError
        (``MissingSecretValue`` for a row without a value)."""
        region = row.get("region") or mc.default_region
        if row.get("value") is None:
            raise CloudError("MissingSecretValue", f"secret {row['name']} needs a value to be created",
                             "secretsmanager.create_secret")
        kw = {"Description": row["description"]} if row.get("description") else {}
        await mc.call("secretsmanager", region, "create_secret", Name=row["name"], SecretString=row["value"], **kw)
        try:
            return await self._get(mc, region, row["name"])
        except CloudError as e:
            try:
                await mc.call("secretsmanager", region, "delete_secret", SecretId=row["name"],
                              ForceDeleteWithoutRecovery=True)
            except CloudError:
                e.left = {"name": row["name"], "region": region}
            raise

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """Set the description and, when the row holds one, the new value; returns the new
        record (``value`` NULL). Raises engine.aws.CloudError."""
        kw = {"Description": row.get("description") or ""}
        if row.get("value") is not None:
            kw["SecretString"] = row["value"]
        await mc.call("secretsmanager", cloud["region"], "update_secret", SecretId=cloud["name"], **kw)
        return await self._get(mc, cloud["region"], cloud["name"])

    async def delete(self, mc: MapperContext, cloud: dict) -> None:
        """Delete the secret at once (no recovery window). Raises engine.aws.CloudError."""
        await mc.call("secretsmanager", cloud["region"], "delete_secret", SecretId=cloud["name"],
                      ForceDeleteWithoutRecovery=True)


MODULE = Module(
    name="aws_secrets_manager",
    version=VERSION,
    dependencies=("aws_account",),
    install_sql=(
        """CREATE TABLE public.secret (
             id serial PRIMARY KEY,
             name character varying NOT NULL,
             description character varying,
             value character varying,
             version_id character varying,
             region character varying NOT NULL DEFAULT public.default_aws_region() REFERENCES public.aws_regions (region))""",
    ),
    uninstall_sql=("DROP TABLE public.secret",),
    mappers=(SecretMapper(),),
    description="Secrets Manager secrets (values are write-only and never audited)",
)
