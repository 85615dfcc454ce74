"""Module ``aws_s3``: S3 buckets, their website and public-access-block settings, and objects.

Tables, columns, types, keys, defaults and constraints follow IaSQL v0.1's ``aws_s3`` migration
(``src/modules/aws_s3/migration/1680874179829-aws_s3.ts``) and its ``sql/after_install.sql``
(triggers and ``get_bucket_website_endpoint``); what each mapper reads, compares, updates or
replaces follows ``src/modules/aws_s3/mappers/*.ts``. Tables, in dependency order:

- ``bucket(name, policy json, created_at timestamp, tags json, region)``: cloud id ``name``.
  ``tags`` is a JSON object ``{"key": "value"}``; ``created_at`` is cloud-managed; ``policy`` and
  ``tags`` are updated in place. As in IaSQL, a trigger refuses to change a bucket's ``name`` or
  ``region`` (``Bucket name or region cannot be modified``, SQLSTATE P0001): delete the row and
  insert a new one. Only buckets of enabled regions are read (IaSQL's bucket ``read``).
- ``bucket_website(index_document, error_document, bucket_name)``: the bucket's static-website
  configuration (cloud id ``bucket_name``; ``put_bucket_website`` creates and updates it in
  place, ``delete_bucket_website`` removes it). ``get_bucket_website_endpoint(bucket_name)``
  returns the website's host name.
- ``public_access_block(block_public_acls, ignore_public_acls, block_public_policy,
  restrict_public_buckets, bucket_name)``: the bucket's public access block (cloud id
  ``bucket_name``; the four flags default to true and are updated in place with
  ``put_public_access_block``; deleting the row calls ``delete_public_access_block``).
- ``bucket_object(id, key, bucket_name, region, e_tag)``: the objects of every bucket, read-only
  as in IaSQL: a row inserted by hand creates nothing and is removed by the commit (IaSQL uploads
  objects with its ``s3_upload_object`` RPC, see below), deleting a row deletes the object, and a
  trigger refuses to change ``key``, ``bucket_name`` or ``region``; ``e_tag`` is the cloud's.

``bucket_website`` and ``public_access_block`` have no ``region`` column (as in IaSQL): when a
bucket's region is no longer enabled, the sync leaves its ``bucket`` and ``bucket_object`` rows
alone but deletes its website and public-access-block rows (they come back once it is enabled).

IaSQL's RPC ``s3_upload_object(bucket_name, bucket_key, file_content, content_type)`` is built
(``s3_upload_object`` below, in ``Module.rpcs``): the proxy passes statements naming it
(``proxy.router.marker.MODULE_RPC_NAMES``) to the engine, which answers it while ``aws_s3`` is
installed. It uploads the object and
records it in ``bucket_object`` when the bucket has a row; objects uploaded with any other S3
client are read into ``bucket_object`` by the next ``iasql_commit`` or ``iasql_rollback``.

moto (5.2.5, the tests' cloud) answers every call used here: list_buckets, get_bucket_location,
create/delete_bucket, get/put/delete_bucket_policy, get/put/delete_bucket_tagging,
get/put/delete_bucket_website, get/put/delete_public_access_block, list_objects_v2 and
delete_object. Like AWS before April 2023 (and unlike AWS now), moto gives a new bucket no public
access block, so a bucket made outside IaSQL has no ``public_access_block`` row until one is set.
"""

from __future__ import annotations

import json
from typing import Any

from engine.aws import CloudError
from engine.modules.aws_account import VERSION
from engine.modules.base import Col, Mapper, MapperContext, Module, normalize, require_table_privileges

GLOBAL_REGION = "us-east-1"


async def bucket_region(mc: MapperContext, name: str) -> str | None:
    """The region of bucket ``name`` (``get_bucket_location``; ``EU`` means eu-west-1), or None
    when the bucket is gone. Raises engine.aws.CloudError on any other failure."""
    try:
        loc = await mc.call("s3", GLOBAL_REGION, "get_bucket_location", Bucket=name)
    except CloudError as e:
        if e.code in ("NoSuchBucket", "404"):
            return None
        raise
    region = loc.get("LocationConstraint") or GLOBAL_REGION
    return "eu-west-1" if region == "EU" else region


async def cloud_buckets(mc: MapperContext) -> list[tuple[str, str]]:
    """``(name, region)`` of every bucket in an enabled region, by name (IaSQL's child mappers read
    the buckets that ``bucket.cloud.read`` returns). Raises engine.aws.CloudError."""
    res = await mc.call("s3", GLOBAL_REGION, "list_buckets")
    out = []
    for b in res.get("Buckets", []):
        region = await bucket_region(mc, b["Name"])
        if region is not None and region in mc.regions:
            out.append((b["Name"], region))
    return sorted(out)


async def _db_buckets(mc: MapperContext) -> set[tuple[str, str]]:
    """``(name, region)`` of the ``bucket`` rows."""
    return {(n, r) for n, r in await mc.fetchall("SELECT name, region FROM public.bucket")}


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
        region = await bucket_region(mc, name)
        if region is None:
            return None
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
        """The buckets of the enabled regions (IaSQL's bucket ``read``). Raises
        engine.aws.CloudError (reported as SQLSTATE 58000)."""
        res = await mc.call("s3", GLOBAL_REGION, "list_buckets")
        out = []
        for b in res.get("Buckets", []):
            rec = await self._describe_one(mc, b["Name"], b.get("CreationDate"))
            if rec is not None and rec["region"] in mc.regions:
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


class BucketChildMapper(Mapper):
    """Shared rules of ``bucket_website`` and ``public_access_block``: one record per bucket (cloud id
    ``bucket_name``), read for every bucket of the enabled regions, created and updated in place by
    one ``put_*`` call, deleted by one ``delete_*`` call (IaSQL: ``updateOrReplace`` is always
    ``update``). A record of a bucket without a row is an ``_orphan`` (``Mapper.read``)."""

    key = ("bucket_name",)
    pk = ("bucket_name",)
    cloud_read_uses_db = True
    #: (get operation, error code meaning "none set", put operation, delete operation)
    ops: tuple[str, str, str, str] = ("", "", "", "")

    def _record(self, name: str, res: dict) -> dict:
        """The record of bucket ``name`` from the get call's result ``res``."""
        raise NotImplementedError

    def _put_args(self, row: dict) -> dict:
        """The put call's keyword arguments besides ``Bucket``."""
        raise NotImplementedError

    async def _get(self, mc: MapperContext, name: str, region: str) -> dict | None:
        try:
            res = await mc.call("s3", region, self.ops[0], Bucket=name)
        except CloudError as e:
            if e.code in (self.ops[1], "NoSuchBucket"):
                return None
            raise
        return self._record(name, res)

    async def read(self, mc: MapperContext) -> list[dict]:
        """The record of every bucket of the enabled regions that has one. Raises
        engine.aws.CloudError (reported as SQLSTATE 58000)."""
        rows = await _db_buckets(mc)
        out = []
        for name, region in await cloud_buckets(mc):
            rec = await self._get(mc, name, region)
            if rec is not None:
                rec["_region"] = region
                rec["_orphan"] = (name, region) not in rows
                out.append(rec)
        return out

    async def _region_of(self, mc: MapperContext, rec: dict) -> str:
        region = rec.get("_region") or await bucket_region(mc, rec["bucket_name"])
        if region is None:
            raise CloudError("NoSuchBucket", f"bucket {rec['bucket_name']} does not exist", f"s3.{self.ops[2]}")
        return region

    async def _put(self, mc: MapperContext, row: dict, region: str, new: bool) -> dict:
        """Put the row's configuration and read it back; when reading fails after a ``new`` one
        was set, it is removed again (or, failing that, left for the journal as ``left``)."""
        await mc.call("s3", region, self.ops[2], Bucket=row["bucket_name"], **self._put_args(row))
        try:
            rec = await self._get(mc, row["bucket_name"], region)
            if rec is None:
                raise CloudError(self.ops[1], f"{self.table} of bucket {row['bucket_name']} vanished after "
                                 "it was set", f"s3.{self.ops[2]}")
        except CloudError as e:
            if new:
                try:  # never leave a configuration the table cannot record
                    await mc.call("s3", region, self.ops[3], Bucket=row["bucket_name"])
                except CloudError:
                    e.left = {"bucket_name": row["bucket_name"], "_region": region}
            raise
        rec["_region"] = region
        return rec

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """Put the row's configuration on its bucket; returns the record read back. Raises
        engine.aws.CloudError (NoSuchBucket when the bucket is not in the cloud)."""
        return await self._put(mc, row, await self._region_of(mc, row), True)

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """Put the row's configuration in place of ``cloud``'s; returns the new record. Raises
        engine.aws.CloudError."""
        return await self._put(mc, row, await self._region_of(mc, cloud), False)

    async def delete(self, mc: MapperContext, cloud: dict) -> None:
        """Remove the configuration from its bucket (nothing when the bucket is gone). Raises
        engine.aws.CloudError."""
        try:
            region = await self._region_of(mc, cloud)
            await mc.call("s3", region, self.ops[3], Bucket=cloud["bucket_name"])
        except CloudError as e:
            if e.code != "NoSuchBucket":
                raise


class BucketWebsiteMapper(BucketChildMapper):
    """``bucket_website`` rows <-> buckets' website configurations (get/put/delete_bucket_website).
    Follows IaSQL's ``mappers/bucket_website.ts``: compares ``index_document`` and
    ``error_document``, updates in place."""

    table = "bucket_website"
    columns = (Col("index_document"), Col("error_document"), Col("bucket_name"))
    ops = ("get_bucket_website", "NoSuchWebsiteConfiguration", "put_bucket_website", "delete_bucket_website")

    def describe(self, rec: dict) -> str:
        """The plan-row description of ``rec``."""
        err = f", error {rec.get('error_document')}" if rec.get("error_document") else ""
        return f"website of bucket {rec.get('bucket_name')} (index {rec.get('index_document')}{err})"

    def _record(self, name: str, res: dict) -> dict:
        """The record of bucket ``name``'s website from ``get_bucket_website``'s result."""
        return {"bucket_name": name, "index_document": (res.get("IndexDocument") or {}).get("Suffix"),
                "error_document": (res.get("ErrorDocument") or {}).get("Key")}

    def _put_args(self, row: dict) -> dict:
        """``WebsiteConfiguration`` for ``put_bucket_website`` (an error document only when set)."""
        conf: dict[str, Any] = {"IndexDocument": {"Suffix": row["index_document"]}}
        if row.get("error_document"):
            conf["ErrorDocument"] = {"Key": row["error_document"]}
        return {"WebsiteConfiguration": conf}


class PublicAccessBlockMapper(BucketChildMapper):
    """``public_access_block`` rows <-> buckets' public access blocks
    (get/put/delete_public_access_block). Follows IaSQL's ``mappers/public_access_block.ts``:
    compares the four flags, updates in place."""

    table = "public_access_block"
    columns = (Col("block_public_acls", "bool"), Col("ignore_public_acls", "bool"),
               Col("block_public_policy", "bool"), Col("restrict_public_buckets", "bool"), Col("bucket_name"))
    ops = ("get_public_access_block", "NoSuchPublicAccessBlockConfiguration", "put_public_access_block",
           "delete_public_access_block")
    _FLAGS = (("block_public_acls", "BlockPublicAcls"), ("ignore_public_acls", "IgnorePublicAcls"),
              ("block_public_policy", "BlockPublicPolicy"), ("restrict_public_buckets", "RestrictPublicBuckets"))

    def describe(self, rec: dict) -> str:
        """The plan-row description of ``rec``."""
        on = [c for c, _ in self._FLAGS if rec.get(c)]
        return f"public access block of bucket {rec.get('bucket_name')} ({', '.join(on) or 'all off'})"

    def _record(self, name: str, res: dict) -> dict:
        """The record of bucket ``name``'s block from ``get_public_access_block``'s result."""
        conf = res.get("PublicAccessBlockConfiguration") or {}
        return {"bucket_name": name, **{c: bool(conf.get(a, False)) for c, a in self._FLAGS}}

    def _put_args(self, row: dict) -> dict:
        """``PublicAccessBlockConfiguration`` for ``put_public_access_block`` (a NULL flag is true,
        the column default)."""
        return {"PublicAccessBlockConfiguration": {a: True if row.get(c) is None else bool(row.get(c))
                                                   for c, a in self._FLAGS}}


class BucketObjectMapper(Mapper):
    """``bucket_object`` rows <-> the objects of the buckets of the enabled regions
    (list_objects_v2, delete_object). Follows IaSQL's ``mappers/bucket_object.ts``: read-only
    (``creatable`` False: an inserted row is removed by the commit), ``e_tag`` is the cloud's,
    deleting a row deletes the object. Cloud id ``(bucket_name, key, region)``."""

    table = "bucket_object"
    columns = (Col("id", "int", "pk"), Col("key"), Col("bucket_name"), Col("region"),
               Col("e_tag", "text", "cloud"))
    key = ("bucket_name", "key", "region")
    pk = ("id",)
    cloud_read_uses_db = True
    creatable = False

    def describe(self, rec: dict) -> str:
        """The plan-row description of ``rec``."""
        return f"object {rec.get('key')} of bucket {rec.get('bucket_name')} in {rec.get('region')}"

    async def read(self, mc: MapperContext) -> list[dict]:
        """Every object of every bucket of the enabled regions (``_orphan`` when the bucket has no
        row). Raises engine.aws.CloudError (reported as SQLSTATE 58000)."""
        rows = await _db_buckets(mc)
        out = []
        for name, region in await cloud_buckets(mc):
            try:
                objects = await mc.paginate("s3", region, "list_objects_v2", "Contents", Bucket=name)
            except CloudError as e:
                if e.code == "NoSuchBucket":
                    continue
                raise
            out += [{"key": o["Key"], "bucket_name": name, "region": region, "e_tag": o.get("ETag"),
                     "_orphan": (name, region) not in rows} for o in objects]
        return out

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """Never called (``creatable`` is False); raises CloudError."""
        raise CloudError("NotImplemented", "bucket objects cannot be created through the table", "s3.put_object")

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """Nothing to change (only ``e_tag``, the cloud's, can differ): returns ``cloud``, which the
        sync writes back, as IaSQL's update restores the cloud record."""
        return cloud

    async def delete(self, mc: MapperContext, cloud: dict) -> None:
        """Delete the object. Raises engine.aws.CloudError."""
        await mc.call("s3", cloud.get("region") or GLOBAL_REGION, "delete_object",
                      Bucket=cloud["bucket_name"], Key=cloud["key"])


#: IaSQL's ``sql/after_install.sql``: names and regions of buckets and objects cannot change, and
#: the website endpoint of a bucket (every name schema-qualified)
_AFTER_INSTALL = (
    """CREATE OR REPLACE FUNCTION public.block_s3_primary_key_update() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
       BEGIN
         RAISE EXCEPTION 'Bucket name or region cannot be modified'
           USING DETAIL = 'A bucket cannot be renamed or moved to another region',
                 HINT = 'If you want to rename or change bucket region, first remove it, and if re-using the '
                        'same name then you must wait about 2 hours before creating again.';
         RETURN OLD;
       END $$""",
    """CREATE TRIGGER block_s3_primary_key_update BEFORE UPDATE ON public.bucket FOR EACH ROW
       WHEN (OLD.name IS DISTINCT FROM NEW.name OR OLD.region IS DISTINCT FROM NEW.region)
       EXECUTE FUNCTION public.block_s3_primary_key_update()""",
    """CREATE OR REPLACE FUNCTION public.block_s3_object_primary_key_update() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
       BEGIN
         RAISE EXCEPTION 'Object bucket, key or region cannot be modified'
           USING DETAIL = 'A bucket object cannot be renamed or moved to another region or bucket',
                 HINT = 'If you want to rename or change bucket object, first remove it and then you could add it again.';
         RETURN OLD;
       END $$""",
    """CREATE TRIGGER block_s3_object_primary_key_update BEFORE UPDATE ON public.bucket_object FOR EACH ROW
       WHEN (OLD.bucket_name IS DISTINCT FROM NEW.bucket_name OR OLD.region IS DISTINCT FROM NEW.region
             OR OLD.key IS DISTINCT FROM NEW.key)
       EXECUTE FUNCTION public.block_s3_object_primary_key_update()""",
    """CREATE OR REPLACE FUNCTION public.get_bucket_website_endpoint(bucket_name text) RETURNS text
       LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
       DECLARE _region text;
       BEGIN
         SELECT b.region INTO _region FROM public.bucket b WHERE b.name = bucket_name;
         -- https://docs.aws.amazon.com/general/latest/gr/s3.html#s3_website_region_endpoints
         IF _region IN ('us-east-2', 'af-south-1', 'ap-east-1', 'ap-south-2', 'ap-southeast-3', 'ap-south-1',
                        'ap-northeast-3', 'ap-northeast-2', 'ca-central-1', 'cn-northwest-1', 'eu-central-1',
                        'eu-west-2', 'eu-south-1', 'eu-west-3', 'eu-north-1', 'eu-south-2', 'eu-central-2',
                        'me-south-1', 'me-central-1') THEN
           RETURN bucket_name || '.s3-website.' || _region || '.amazonaws.com';
         END IF;
         RETURN bucket_name || '.s3-website-' || _region || '.amazonaws.com';
       END $$""",
)


async def s3_upload_object(state: Any, ctx: Any, bucket_name: Any, bucket_key: Any, file_content: Any,
                           content_type: Any) -> list[tuple]:
    """IaSQL's ``s3_upload_object`` RPC (``src/modules/aws_s3/rpcs/s3_upload_object.ts``): upload
    ``file_content`` as object ``bucket_key`` of bucket ``bucket_name`` with MIME type
    ``content_type``, as the caller, in the caller's transaction.

    Takes the engine state, the ``CallContext`` and the four ``varchar`` arguments. Finds the
    bucket's region (``get_bucket_location``); when it is an enabled region, ``put_object`` there,
    waits until ``head_object`` sees the object, and records it in ``bucket_object`` (key, bucket,
    region, e_tag; an existing row of that key gets the new e_tag) when the bucket has a ``bucket``
    row (without one, the next ``iasql_rollback``/``iasql_commit`` reads the object with its bucket).
    Returns one row (bucket, key, status, response_message): ``OK``/``Bucket content has been
    updated``, or ``KO`` with IaSQL's message when the bucket is not in an enabled region.
    Raises EngineError 22023 (IaSQL's ``Cannot upload an object without bucket name, key, content
    or content type`` when one is NULL or empty), 42704 (no such bucket), 42501 (the bucket has a
    row and the caller may not INSERT and UPDATE ``bucket_object``: checked before the upload),
    58000 (any other AWS failure), 57014 (cancelled), the server's SQLSTATE when the row cannot be
    written.
    """
    from engine.core.functions import mapper_context
    from engine.core.session import EngineSession
    from engine.rpc import EngineError

    if not bucket_name or not bucket_key or not file_content or not content_type:
        raise EngineError("22023", "Cannot upload an object without bucket name, key, content or content type")
    async with EngineSession(ctx, state, "s3_upload_object") as s:
        mc = await mapper_context(s)
        region = await bucket_region(mc, bucket_name)
        if region is None:
            raise EngineError("42704", f"bucket {bucket_name} does not exist",
                              detail="S3 get_bucket_location answered NoSuchBucket")
        if region not in mc.regions:
            return [(bucket_name, bucket_key, "KO",
                     "Bucket content could not be updated because it is not on supported regions")]
        has_row = await s.fetchone("SELECT 1 FROM public.bucket WHERE name = $1 AND region = $2", (bucket_name, region))
        if has_row:
            await require_table_privileges(s, "s3_upload_object", "bucket_object", ("INSERT", "UPDATE"), "the object")
        s.check_cancelled()
        ctx.progress(f"uploading {bucket_key} to bucket {bucket_name} in {region}")
        result = await mc.call("s3", region, "put_object", Bucket=bucket_name, Key=bucket_key,
                               Body=file_content.encode("utf-8"), ContentType=content_type)
        head = await mc.call("s3", region, "head_object", Bucket=bucket_name, Key=bucket_key)
        e_tag = result.get("ETag") or head.get("ETag")
        if has_row:
            await s.execute(
                "INSERT INTO public.bucket_object (key, bucket_name, region, e_tag) VALUES ($1, $2, $3, $4) "
                "ON CONFLICT (bucket_name, key, region) DO UPDATE SET e_tag = EXCLUDED.e_tag",
                (bucket_key, bucket_name, region, e_tag))
        return [(bucket_name, bucket_key, "OK", "Bucket content has been updated")]


def _rpcs() -> tuple:
    """The module's RPC declarations (``Module.rpcs``)."""
    from engine.rpc import Argument, Column, Function

    return (
        Function(
            name="s3_upload_object",
            arguments=(Argument("bucket_name", "varchar"), Argument("bucket_key", "varchar"),
                       Argument("file_content", "varchar"), Argument("content_type", "varchar")),
            columns=(Column("bucket", "varchar"), Column("key", "varchar"), Column("status", "varchar"),
                     Column("response_message", "varchar")),
            impl=s3_upload_object,
            description="Uploads text content as an object of an S3 bucket",
            sample_usage="SELECT * FROM s3_upload_object('my-bucket', 'hello.txt', 'hello', 'text/plain')",
            mutating=True,
        ),
    )


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
        """CREATE TABLE public.bucket_website (
             index_document character varying NOT NULL,
             error_document character varying,
             bucket_name character varying NOT NULL,
             CONSTRAINT "PK_450a65ad6132813c9ca2676436c" PRIMARY KEY (bucket_name),
             CONSTRAINT "FK_450a65ad6132813c9ca2676436c" FOREIGN KEY (bucket_name)
               REFERENCES public.bucket (name) ON DELETE CASCADE)""",
        """CREATE TABLE public.bucket_object (
             id SERIAL NOT NULL,
             key character varying NOT NULL,
             bucket_name character varying NOT NULL,
             region character varying NOT NULL DEFAULT public.default_aws_region(),
             e_tag character varying,
             CONSTRAINT uq_bucketobject_bucket_name_key_region UNIQUE (bucket_name, key, region),
             CONSTRAINT "PK_6f1581372c9408fae61030e1d55" PRIMARY KEY (id),
             CONSTRAINT "FK_17d5255cf02bdc352a134b7b8cc" FOREIGN KEY (bucket_name, region)
               REFERENCES public.bucket (name, region),
             CONSTRAINT "FK_b5dc0fceb794ba8bd6d46075e89" FOREIGN KEY (region) REFERENCES public.aws_regions (region))""",
        """CREATE TABLE public.public_access_block (
             block_public_acls boolean NOT NULL DEFAULT true,
             ignore_public_acls boolean NOT NULL DEFAULT true,
             block_public_policy boolean NOT NULL DEFAULT true,
             restrict_public_buckets boolean NOT NULL DEFAULT true,
             bucket_name character varying NOT NULL,
             CONSTRAINT "PK_d6fdac79c8d56cc6639b56923fe" PRIMARY KEY (bucket_name),
             CONSTRAINT "FK_d6fdac79c8d56cc6639b56923fe" FOREIGN KEY (bucket_name)
               REFERENCES public.bucket (name) ON DELETE CASCADE)""",
        *_AFTER_INSTALL,
    ),
    uninstall_sql=(
        "DROP TABLE public.public_access_block",
        "DROP TABLE public.bucket_object",
        "DROP TABLE public.bucket_website",
        "DROP TABLE public.bucket",
        "DROP FUNCTION IF EXISTS public.block_s3_object_primary_key_update()",
        "DROP FUNCTION IF EXISTS public.block_s3_primary_key_update()",
        "DROP FUNCTION IF EXISTS public.get_bucket_website_endpoint(text)",
    ),
    mappers=(BucketMapper(), BucketWebsiteMapper(), BucketObjectMapper(), PublicAccessBlockMapper()),
    description="S3 buckets, their website and public access block settings, and their objects",
    functions=(
        ("get_bucket_website_endpoint", "get_bucket_website_endpoint(bucket_name text) RETURNS text",
         "Returns the website endpoint (host name) of a bucket of the bucket table",
         "SELECT get_bucket_website_endpoint('my-bucket')"),
    ),
    rpcs=_rpcs(),
)
