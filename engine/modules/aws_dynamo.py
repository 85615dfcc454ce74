"""Module ``aws_dynamo``: DynamoDB tables.

Table ``dynamo_table`` as in IaSQL v0.1.x's ``aws_dynamo`` module
(``migration/1666175118698-aws_dynamo.ts``): ``id`` SERIAL, ``table_name``, ``table_class``
(``dynamo_table_table_class_enum``: STANDARD, STANDARD_INFREQUENT_ACCESS), ``throughput`` json
(``"PAY_PER_REQUEST"`` or ``{"ReadCapacityUnits": n, "WriteCapacityUnits": n}``), ``table_id``
(cloud-managed), ``primary_key`` json (``{"attribute": "S|N|B"}``, the first the HASH key, a
second the RANGE key), ``created_at`` timestamp (cloud-managed) and ``region``.

Follows IaSQL's ``index.ts``: the cloud id is ``(table_name, region)``; ``throughput`` changes in
place (``update_table`` with the billing mode). Where IaSQL stops short, this module goes on:
``table_class`` changes in place too (an ``update_table`` of its own, as AWS asks), and a new
``primary_key`` replaces the table (delete + create; its items are lost, as AWS cannot change a
key schema). moto (5.2) gives tables no ``TableId``: there ``table_id`` stays NULL.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from engine.aws import CloudError
from engine.modules.aws_account import VERSION
from engine.modules.base import Col, Mapper, MapperContext, Module, normalize

PAY_PER_REQUEST = "PAY_PER_REQUEST"
#: Waiting for a table to become ACTIVE (or to go): tries and seconds between them.
WAIT_TRIES, WAIT_DELAY = 150, 2.0


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) and value[:1] in "{[\"" else value


def _throughput(value: Any) -> Any:
    """``"PAY_PER_REQUEST"`` or ``{"ReadCapacityUnits": int, "WriteCapacityUnits": int}``."""
    value = _json(value)
    if isinstance(value, dict):
        return {"ReadCapacityUnits": int(value.get("ReadCapacityUnits", 0)),
                "WriteCapacityUnits": int(value.get("WriteCapacityUnits", 0))}
    return value


def _key(value: Any) -> list:
    """The primary key as ``[(attribute, type), ...]``, HASH first (order matters)."""
    value = _json(value)
    return list(value.items()) if isinstance(value, dict) else []


class DynamoTableMapper(Mapper):
    """``dynamo_table`` rows <-> DynamoDB tables of the enabled regions."""

    table = "dynamo_table"
    columns = (Col("id", "int", "pk"), Col("table_name"), Col("table_class"), Col("throughput", "json"),
               Col("table_id", "text", "cloud"), Col("primary_key", "json"), Col("created_at", "timestamp", "cloud"),
               Col("region"))
    key = ("table_name", "region")
    pk = ("id",)

    def describe(self, rec: dict) -> str:
        """``DynamoDB table <name> in <region>``."""
        return f"DynamoDB table {rec.get('table_name')} in {rec.get('region')}"

    def equals(self, row: dict, cloud: dict) -> bool:
        """True when class, throughput and primary key match (IaSQL's ``equals``)."""
        return (row.get("table_class") == cloud.get("table_class")
                and _throughput(row.get("throughput")) == _throughput(cloud.get("throughput"))
                and _key(row.get("primary_key")) == _key(cloud.get("primary_key")))

    def synced_equals(self, row: dict, cloud: dict) -> bool:
        """True when writing the cloud record back would change nothing."""
        return self.equals(row, cloud) and all(
            normalize(self.col(c).kind, row.get(c)) == normalize(self.col(c).kind, cloud.get(c))
            for c in ("table_name", "table_id", "created_at", "region"))

    def needs_replace(self, row: dict, cloud: dict) -> bool:
        """A new primary key needs a new table."""
        return _key(row.get("primary_key")) != _key(cloud.get("primary_key"))

    @staticmethod
    def _record(t: dict, region: str) -> dict:
        types = {a["AttributeName"]: a["AttributeType"] for a in t.get("AttributeDefinitions", [])}
        keys = sorted(t.get("KeySchema", []), key=lambda k: 0 if k["KeyType"] == "HASH" else 1)
        if (t.get("BillingModeSummary") or {}).get("BillingMode") == PAY_PER_REQUEST:
            throughput: Any = json.dumps(PAY_PER_REQUEST)  # JSON text: a bare string would be read as JSON
        else:
            pt = t.get("ProvisionedThroughput") or {}
            throughput = {"ReadCapacityUnits": pt.get("ReadCapacityUnits", 0),
                          "WriteCapacityUnits": pt.get("WriteCapacityUnits", 0)}
        return {"table_name": t["TableName"], "table_class": (t.get("TableClassSummary") or {}).get("TableClass")
                or "STANDARD", "throughput": throughput, "table_id": t.get("TableId"),
                "primary_key": {k["AttributeName"]: types.get(k["AttributeName"]) for k in keys},
                "created_at": t.get("CreationDateTime"), "region": region}

    async def _wait(self, mc: MapperContext, region: str, name: str) -> dict:
        """The table once it is no longer CREATING/UPDATING. Raises engine.aws.CloudError."""
        for _ in range(WAIT_TRIES):
            t = (await mc.call("dynamodb", region, "describe_table", TableName=name))["Table"]
            if t.get("TableStatus") not in ("CREATING", "UPDATING"):
                return t
            await asyncio.sleep(WAIT_DELAY)
        return t

    async def read(self, mc: MapperContext) -> list[dict]:
        """Every table of the enabled regions. Raises engine.aws.CloudError."""
        out = []
        for region in mc.regions:
            for name in await mc.paginate("dynamodb", region, "list_tables", "TableNames"):
                try:
                    t = (await mc.call("dynamodb", region, "describe_table", TableName=name))["Table"]
                except CloudError as e:
                    if e.code == "ResourceNotFoundException":  # deleted between the list and the read
                        continue
                    raise
                out.append(self._record(t, region))
        return out

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """Create the table and wait until it is ACTIVE; returns its record. A failed wait
        deletes it again (or sets ``left``). Raises engine.aws.CloudError."""
        region = row.get("region") or mc.default_region
        name = row["table_name"]
        keys = _key(row.get("primary_key"))
        throughput = _throughput(row.get("throughput"))
        kw: dict[str, Any] = {
            "TableName": name, "TableClass": row.get("table_class") or "STANDARD",
            "BillingMode": PAY_PER_REQUEST if throughput == PAY_PER_REQUEST else "PROVISIONED",
            "AttributeDefinitions": [{"AttributeName": a, "AttributeType": t} for a, t in keys],
            "KeySchema": [{"AttributeName": a, "KeyType": "HASH" if i == 0 else "RANGE"} for i, (a, _) in enumerate(keys)]}
        if throughput != PAY_PER_REQUEST:
            kw["ProvisionedThroughput"] = throughput
        await mc.call("dynamodb", region, "create_table", **kw)
        try:
            return self._record(await self._wait(mc, region, name), region)
        except CloudError as e:
            try:
                await mc.call("dynamodb", region, "delete_table", TableName=name)
            except CloudError:
                e.left = {"table_name": name, "region": region}
            raise

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """Billing mode/throughput, then table class, each an ``update_table``; returns the new
        record. Raises engine.aws.CloudError."""
        region, name = cloud["region"], cloud["table_name"]
        throughput = _throughput(row.get("throughput"))
        if throughput != _throughput(cloud.get("throughput")):
            kw: dict[str, Any] = {"BillingMode": PAY_PER_REQUEST if throughput == PAY_PER_REQUEST else "PROVISIONED"}
            if throughput != PAY_PER_REQUEST:
                kw["ProvisionedThroughput"] = throughput
            await mc.call("dynamodb", region, "update_table", TableName=name, **kw)
            await self._wait(mc, region, name)
        if row.get("table_class") and row["table_class"] != cloud.get("table_class"):
            await mc.call("dynamodb", region, "update_table", TableName=name, TableClass=row["table_class"])
        return self._record(await self._wait(mc, region, name), region)

    async def delete(self, mc: MapperContext, cloud: dict) -> None:
        """Delete the table and wait until it is gone. Raises engine.aws.CloudError."""
        region, name = cloud["region"], cloud["table_name"]
        await mc.call("dynamodb", region, "delete_table", TableName=name)
        for _ in range(WAIT_TRIES):
            try:
                await mc.call("dynamodb", region, "describe_table", TableName=name)
            except CloudError as e:
                if e.code == "ResourceNotFoundException":
                    return
                raise
            await asyncio.sleep(WAIT_DELAY)


MODULE = Module(
    name="aws_dynamo",
    version=VERSION,
    dependencies=("aws_account",),
    install_sql=(
        "CREATE TYPE public.dynamo_table_table_class_enum AS ENUM ('STANDARD', 'STANDARD_INFREQUENT_ACCESS')",
        """CREATE TABLE public.dynamo_table (
             id serial PRIMARY KEY,
             table_name character varying NOT NULL,
             table_class public.dynamo_table_table_class_enum NOT NULL,
             throughput json NOT NULL,
             table_id character varying,
             primary_key json NOT NULL,
             created_at timestamp without time zone,
             region character varying NOT NULL DEFAULT public.default_aws_region() REFERENCES public.aws_regions (region))""",
    ),
    uninstall_sql=("DROP TABLE public.dynamo_table", "DROP TYPE public.dynamo_table_table_class_enum"),
    mappers=(DynamoTableMapper(),),
    description="DynamoDB tables",
)
