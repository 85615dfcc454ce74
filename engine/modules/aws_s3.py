"""Module ``aws_s3``: S3 buckets.

Table ``bucket(name, policy json, created_at timestamp, tags json, region)`` as in IaSQL's
``aws_s3`` module (cloud id: ``name``). ``tags`` is a JSON object ``{"key": "value"}``;
``created_at`` is cloud-managed. Changing ``region`` replaces the bucket (delete + create);
changing ``policy`` or ``tags`` updates it in place.
"""

from __future__ import annotations

import json
from typing import Any

from engine.aws import CloudError
from engine.modules.aws_account import VERSION
from engine.modules.base import Col, Mapper, MapperContext, Module, normalize

GLOBAL_REGION = "us-east-1"


class BucketMapper(Mapper):
    """``bucket`` rows <-> S3 buckets (list_buckets, get_bucket_location/policy/tagging)."""

    table = "bucket"
    columns = (Col("name"), Col("policy", "json"), Col("created_at", "timestamp", "cloud"),
               Col("tags", "json"), Col("region"))
    key = ("name",)
    pk = ("name",)

    def describe(self, rec: dict) -> str:
        """The plan-row description of ``rec``."""
        return f"bucket {rec.get('name')} in {rec.get('region')}"

    def equals(self, row: dict, cloud: dict) -> bool:
        """True when the row's desired state matches the cloud record (IaSQL's mapper ``equals``)."""
        tags_row = row.get("tags") or None
        tags_cloud = cloud.get("tags") or None
        return (row.get("name") == cloud.get("name") and row.get("region") == cloud.get("region")
                and normalize("json", row.get("policy")) == normalize("json", cloud.get("policy"))
                and normalize("json", tags_row) == normalize("json", tags_cloud))

    def needs_replace(self, row: dict, cloud: dict) -> bool:
        """True when only delete + create can make the cloud match the row."""
        return row.get("region") != cloud.get("region")

    async def _describe_one(self, mc: MapperContext, name: str, created: Any) -> dict | None:
        try:
            loc = await mc.call("s3", GLOBAL_REGION, "get_bucket_location", Bucket=name)
        except CloudError as e:
            if e.code in ("NoSuchBucket", "404"):
                return None
            raise
        region = loc.get("LocationConstraint") or GLOBAL_REGION
        if region == "EU":
            region = "eu-west-1"
        policy = None
        try:
            pol = await mc.call("s3", region, "get_bucket_policy", Bucket=name)
            policy = json.loads(pol["Policy"]) if pol.get("Policy") else None
        except CloudError as e:
            if e.code not in ("NoSuchBucketPolicy", "NoSuchBucket"):
                raise
        tags = None
        try:
            tg = await mc.call("s3", region, "get_bucket_tagging", Bucket=name)
            tags = {t["Key"]: t["Value"] for t in tg.get("TagSet", [])} or None
        except CloudError as e:
            if e.code not in ("NoSuchTagSet", "NoSuchBucket"):
                raise
        return {"name": name, "policy": policy, "created_at": created, "tags": tags, "region": region}

    async def read(self, mc: MapperContext) -> list[dict]:
        """Every cloud record of this type. Raises engine.aws.CloudError (reported as SQLSTATE 58000)."""
        res = await mc.call("s3", GLOBAL_REGION, "list_buckets")
        out = []
        for b in res.get("Buckets", []):
            rec = await self._describe_one(mc, b["Name"], b.get("CreationDate"))
            if rec is not None:
                out.append(rec)
        return out

    async def _apply_policy_tags(self, mc: MapperContext, row: dict, region: str, cloud: dict | None) -> None:
        name = row["name"]
        want_policy = row.get("policy")
        if cloud is None or normalize("json", want_policy) != normalize("json", cloud.get("policy")):
            if want_policy:
                pol = want_policy if isinstance(want_policy, str) else json.dumps(want_policy)
                await mc.call("s3", region, "put_bucket_policy", Bucket=name, Policy=pol)
            elif cloud is not None:
                await mc.call("s3", region, "delete_bucket_policy", Bucket=name)
        want_tags = row.get("tags") or None
        if cloud is None or normalize("json", want_tags) != normalize("json", cloud.get("tags") or None):
            if want_tags:
                if isinstance(want_tags, str):
                    want_tags = json.loads(want_tags)
                if not isinstance(want_tags, dict):
                    raise CloudError("InvalidTags", 'tags must be a JSON object like {"key": "value"}',
                                     "s3.put_bucket_tagging")
                await mc.call("s3", region, "put_bucket_tagging", Bucket=name, Tagging={
                    "TagSet": [{"Key": str(k), "Value": str(v)} for k, v in want_tags.items()]})
            elif cloud is not None:
                await mc.call("s3", region, "delete_bucket_tagging", Bucket=name)

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """Create the row's resource in the cloud; returns its cloud record. Raises engine.aws.CloudError."""
        region = row.get("region") or mc.default_region
        kw: dict[str, Any] = {"Bucket": row["name"]}
        if region != GLOBAL_REGION:
            kw["CreateBucketConfiguration"] = {"LocationConstraint": region}
        await mc.call("s3", region, "create_bucket", **kw)
        try:
            await self._apply_policy_tags(mc, row, region, None)
            created = None
            res = await mc.call("s3", GLOBAL_REGION, "list_buckets")
            for b in res.get("Buckets", []):
                if b["Name"] == row["name"]:
                    created = b.get("CreationDate")
            rec = await self._describe_one(mc, row["name"], created)
        except CloudError as e:
            try:  # never leave a bucket the table cannot record
                await mc.call("s3", region, "delete_bucket", Bucket=row["name"])
            except CloudError:
                e.left = {"name": row["name"], "region": region}  # the engine's journal takes it back later
            raise
        if rec is None:
            raise CloudError("NoSuchBucket", f"bucket {row['name']} vanished after creation", "s3.create_bucket")
        return rec

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """Make the cloud record match the row in place; returns the new record. Raises engine.aws.CloudError."""
        await self._apply_policy_tags(mc, row, cloud["region"], cloud)
        rec = await self._describe_one(mc, row["name"], cloud.get("created_at"))
        return rec or cloud

    async def delete(self, mc: MapperContext, cloud: dict) -> None:
        """Delete the cloud resource. Raises engine.aws.CloudError."""
        await mc.call("s3", cloud.get("region") or GLOBAL_REGION, "delete_bucket", Bucket=cloud["name"])


MODULE = Module(
    name="aws_s3",
    version=VERSION,
    dependencies=("aws_account",),
    install_sql=(
        """CREATE TABLE public.bucket (
             name character varying PRIMARY KEY,
             policy json,
             created_at timestamp without time zone,
             tags json,
             region character varying NOT NULL DEFAULT public.default_aws_region() REFERENCES public.aws_regions (region),
             CONSTRAINT uq_bucket_name_region UNIQUE (name, region))""",
    ),
    uninstall_sql=("DROP TABLE public.bucket",),
    mappers=(BucketMapper(),),
    description="S3 buckets",
)
