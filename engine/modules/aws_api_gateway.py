"""Module ``aws_api_gateway``: API Gateway v2 APIs (HTTP and WebSocket).

The table follows IaSQL v0.1's ``aws_api_gateway`` migration
(``src/modules/aws_api_gateway/migration/1678806009101-aws_api_gateway.ts``): ``api(id, api_id,
name, description, disable_execute_api_endpoint, protocol_type api_protocol_type_enum, version,
region, tags json)``, cloud id ``api_id`` (AWS makes it; there is no unique constraint, as in
IaSQL). What the mapper reads, compares and updates follows ``mappers/api.ts``: name,
description, ``disable_execute_api_endpoint``, version and tags change in place (``update_api``,
``tag_resource``/``untag_resource`` on ``arn:aws:apigateway:<region>::/apis/<api_id>``). AWS cannot
change an API's protocol: IaSQL writes the cloud's value back; here a new ``protocol_type``
replaces the API (a new ``api_id``). A NULL ``protocol_type`` creates an ``HTTP`` API and a NULL
``disable_execute_api_endpoint`` takes AWS's default, both written back by the sync. A WebSocket
API is created with the route selection expression ``$request.body.action`` (AWS requires one;
IaSQL passes none, so its WebSocket creates failed). An empty description or version reads as
NULL. Only the APIs of the enabled regions are read.

Cloud failures raise ``engine.aws.CloudError``, which a commit reports with SQLSTATE 58000
(after taking back its cloud changes).

moto (5.2.5, the tests' cloud) answers create_api, get_api(s), update_api, delete_api,
tag_resource and untag_resource as AWS does for these fields.
"""

from __future__ import annotations

import asyncio
from typing import Any

from engine.aws import CloudError
from engine.modules.aws_account import VERSION
from engine.modules.aws_vpc import VpcModuleMapper, _tags_value
from engine.modules.base import Col, MapperContext, Module

#: How often and how long (seconds) a create or update waits for its tags to show in ``get_api``.
TAG_WAIT_TRIES, TAG_WAIT_DELAY = 30, 1.0

#: IaSQL v0.1's ``api_protocol_type_enum``.
PROTOCOLS = ("HTTP", "WEBSOCKET")


def api_arn(region: str, api_id: str) -> str:
    """The ARN tags are set on (IaSQL's ``buildApiArn``)."""
    return f"arn:aws:apigateway:{region}::/apis/{api_id}"


class ApiMapper(VpcModuleMapper):
    """``api`` rows <-> API Gateway v2 APIs. Follows IaSQL's ``mappers/api.ts``."""

    table = "api"
    columns = (Col("id", "int", "pk"), Col("api_id", "text", "cloud"), Col("name"), Col("description"),
               Col("disable_execute_api_endpoint", "bool"), Col("protocol_type"), Col("version"), Col("region"),
               Col("tags", "json"))
    key = ("api_id",)
    pk = ("id",)
    optional = ("disable_execute_api_endpoint", "protocol_type")
    cloud_read_uses_db = False

    def describe(self, rec: dict) -> str:
        """The plan-row description of ``rec``."""
        return (f"{rec.get('protocol_type') or 'HTTP'} API {rec.get('name')} ({rec.get('api_id') or 'new'}) "
                f"in {rec.get('region')}")

    def needs_replace(self, row: dict, cloud: dict) -> bool:
        """A new protocol needs a new API (or a new region)."""
        return row.get("protocol_type") is not None and self.differs(row, cloud, ("protocol_type", "region"))

    @staticmethod
    def _record(a: dict, region: str) -> dict:
        return {"api_id": a["ApiId"], "name": a.get("Name"), "description": a.get("Description") or None,
                "disable_execute_api_endpoint": a.get("DisableExecuteApiEndpoint"),
                "protocol_type": a.get("ProtocolType"), "version": a.get("Version") or None, "region": region,
                "tags": a.get("Tags") or None}

    async def _records(self, mc: MapperContext, region: str, **filters: Any) -> list[dict]:
        items = await mc.paginate("apigatewayv2", region, "get_apis", "Items")
        return [self._record(a, region) for a in items if a.get("ApiId") and a.get("Name")]

    async def _get(self, mc: MapperContext, region: str, api_id: str) -> dict:
        return self._record(await mc.call("apigatewayv2", region, "get_api", ApiId=api_id), region)

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """Create the API with its tags; returns its record. A failure after the create deletes it
        again (or sets ``left``). Raises engine.aws.CloudError."""
        region = row.get("region") or mc.default_region
        protocol = row.get("protocol_type") or "HTTP"
        kw: dict[str, Any] = {"Name": row.get("name"), "ProtocolType": protocol}
        for col, arg in (("description", "Description"), ("version", "Version"),
                         ("disable_execute_api_endpoint", "DisableExecuteApiEndpoint")):
            if row.get(col) is not None:
                kw[arg] = row[col]
        if protocol == "WEBSOCKET":
            kw["RouteSelectionExpression"] = "$request.body.action"
        tags = _tags_value(row.get("tags"))
        if tags:
            kw["Tags"] = tags
        res = await mc.call("apigatewayv2", region, "create_api", **kw)
        try:
            return await self._tags_settled(mc, region, res["ApiId"], row.get("tags"))
        except CloudError as e:
            try:
                await mc.call("apigatewayv2", region, "delete_api", ApiId=res["ApiId"])
            except CloudError:
                e.left = {"api_id": res["ApiId"], "region": region, "name": row.get("name")}
            raise

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """Name, description, endpoint switch and version with ``update_api``, tags with
        ``untag_resource``/``tag_resource``; returns the new record. Raises engine.aws.CloudError."""
        region, api_id = cloud["region"], cloud["api_id"]
        kw: dict[str, Any] = {}
        for col, arg in (("name", "Name"), ("description", "Description"), ("version", "Version"),
                         ("disable_execute_api_endpoint", "DisableExecuteApiEndpoint")):
            if self.differs(row, cloud, (col,)) and not (col in self.optional and row.get(col) is None):
                kw[arg] = row.get(col) if row.get(col) is not None else ""
        if kw:
            await mc.call("apigatewayv2", region, "update_api", ApiId=api_id, **kw)
        if not self._same(self.col("tags"), row.get("tags"), cloud.get("tags")):
            want, have = _tags_value(row.get("tags")) or {}, _tags_value(cloud.get("tags")) or {}
            gone = [k for k in have if k not in want]
            if gone:
                await mc.call("apigatewayv2", region, "untag_resource", ResourceArn=api_arn(region, api_id), TagKeys=gone)
            new = {k: v for k, v in want.items() if have.get(k) != v}
            if new:
                await mc.call("apigatewayv2", region, "tag_resource", ResourceArn=api_arn(region, api_id), Tags=new)
        return await self._tags_settled(mc, region, api_id, row.get("tags"))

    async def _tags_settled(self, mc: MapperContext, region: str, api_id: str, want: Any) -> dict:
        """The API's record once ``get_api`` answers the tags ``want`` (tags show up a little
        after ``tag_resource``; IaSQL's ``tagAndWait`` waits up to 300 s), or after
        TAG_WAIT_TRIES tries. Raises engine.aws.CloudError."""
        for i in range(TAG_WAIT_TRIES):
            rec = await self._get(mc, region, api_id)
            if self._same(self.col("tags"), rec.get("tags"), want) or i + 1 == TAG_WAIT_TRIES:
                return rec
            await asyncio.sleep(TAG_WAIT_DELAY)
        raise AssertionError("unreachable")

    async def delete(self, mc: MapperContext, cloud: dict) -> None:
        """Delete the API. Raises engine.aws.CloudError."""
        await mc.call("apigatewayv2", cloud["region"], "delete_api", ApiId=cloud["api_id"])


MODULE = Module(
    name="aws_api_gateway",
    version=VERSION,
    dependencies=("aws_account",),
    install_sql=(
        "CREATE TYPE public.api_protocol_type_enum AS ENUM ('HTTP', 'WEBSOCKET')",
        """CREATE TABLE public.api (
             id SERIAL NOT NULL,
             api_id character varying,
             name character varying,
             description character varying,
             disable_execute_api_endpoint boolean,
             protocol_type public.api_protocol_type_enum,
             version character varying,
             region character varying NOT NULL DEFAULT public.default_aws_region(),
             tags json,
             CONSTRAINT "PK_12f6cbe9e79197c2bf4c79c009d" PRIMARY KEY (id),
             CONSTRAINT "FK_49eda141b7f204f34bb34e3f357" FOREIGN KEY (region) REFERENCES public.aws_regions (region))""",
    ),
    uninstall_sql=("DROP TABLE public.api", "DROP TYPE public.api_protocol_type_enum"),
    mappers=(ApiMapper(),),
    description="API Gateway v2 APIs",
)
