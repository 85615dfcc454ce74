"""Module aws_s3's bucket_website, public_access_block and bucket_object tables through the engine
against a real moto server, checked with boto3 and the tables."""

from __future__ import annotations

import psycopg
import pytest

from tests.engine.support import call, sql


@pytest.fixture
async def s3_mod(registry, ctx, dsn):
    """aws_s3 installed, with credentials; returns the install rows."""
    rows = await call(registry, ctx, "iasql_install", "aws_s3")
    await sql(dsn, "INSERT INTO aws_credentials (access_key_id, secret_access_key) VALUES ('testing', 'testing')")
    return rows


def applied(rows):
    """The (action, table) pairs of a commit's cloud actions (sync rows left out)."""
    return [(a, t) for a, t, _, d in rows if not d.startswith("synced")]


def website(aws, bucket, region="us-east-1"):
    try:
        res = aws("s3", region).get_bucket_website(Bucket=bucket)
    except aws("s3").exceptions.ClientError as e:
        assert e.response["Error"]["Code"] == "NoSuchWebsiteConfiguration"
        return None
    return (res["IndexDocument"]["Suffix"], res.get("ErrorDocument", {}).get("Key"))


def access_block(aws, bucket, region="us-east-1"):
    try:
        conf = aws("s3", region).get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    except aws("s3").exceptions.ClientError as e:
        assert e.response["Error"]["Code"] == "NoSuchPublicAccessBlockConfiguration"
        return None
    return (conf["BlockPublicAcls"], conf["IgnorePublicAcls"], conf["BlockPublicPolicy"], conf["RestrictPublicBuckets"])


async def test_install_creates_the_tables_as_iasql(registry, ctx, dsn, s3_mod):
    assert s3_mod == [("aws_s3@0.1.0", t, 0) for t in ("bucket", "bucket_website", "bucket_object", "public_access_block")]
    cols = await sql(dsn, """SELECT table_name, column_name, data_type, is_nullable, column_default
                               FROM information_schema.columns
                              WHERE table_name IN ('bucket_website', 'bucket_object', 'public_access_block')
                              ORDER BY table_name, ordinal_position""")
    assert cols == [
        ("bucket_object", "id", "integer", "NO", "nextval('bucket_object_id_seq'::regclass)"),
        ("bucket_object", "key", "character varying", "NO", None),
        ("bucket_object", "bucket_name", "character varying", "NO", None),
        ("bucket_object", "region", "character varying", "NO", "default_aws_region()"),
        ("bucket_object", "e_tag", "character varying", "YES", None),
        ("bucket_website", "index_document", "character varying", "NO", None),
        ("bucket_website", "error_document", "character varying", "YES", None),
        ("bucket_website", "bucket_name", "character varying", "NO", None),
        ("public_access_block", "block_public_acls", "boolean", "NO", "true"),
        ("public_access_block", "ignore_public_acls", "boolean", "NO", "true"),
        ("public_access_block", "block_public_policy", "boolean", "NO", "true"),
        ("public_access_block", "restrict_public_buckets", "boolean", "NO", "true"),
        ("public_access_block", "bucket_name", "character varying", "NO", None)]
    cons = await sql(dsn, """SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint
                              WHERE conrelid::regclass::text IN ('bucket_website', 'bucket_object', 'public_access_block')
                              ORDER BY 1, 2""")
    assert cons == [
        ("bucket_object", "FK_17d5255cf02bdc352a134b7b8cc",
         "FOREIGN KEY (bucket_name, region) REFERENCES bucket(name, region)"),
        ("bucket_object", "FK_b5dc0fceb794ba8bd6d46075e89", "FOREIGN KEY (region) REFERENCES aws_regions(region)"),
        ("bucket_object", "PK_6f1581372c9408fae61030e1d55", "PRIMARY KEY (id)"),
        ("bucket_object", "uq_bucketobject_bucket_name_key_region", "UNIQUE (bucket_name, key, region)"),
        ("bucket_website", "FK_450a65ad6132813c9ca2676436c",
         "FOREIGN KEY (bucket_name) REFERENCES bucket(name) ON DELETE CASCADE"),
        ("bucket_website", "PK_450a65ad6132813c9ca2676436c", "PRIMARY KEY (bucket_name)"),
        ("public_access_block", "FK_d6fdac79c8d56cc6639b56923fe",
         "FOREIGN KEY (bucket_name) REFERENCES bucket(name) ON DELETE CASCADE"),
        ("public_access_block", "PK_d6fdac79c8d56cc6639b56923fe", "PRIMARY KEY (bucket_name)")]
    # iasql_help lists the module's SQL function, whose sample runs as printed
    # (and its RPC s3_upload_object: tests/engine/test_module_rpcs.py)
    [(name, sig, sample)] = [(r[1], r[2], r[4]) for r in await call(registry, ctx, "iasql_help")
                             if r[0] == "aws_s3" and r[1] != "s3_upload_object"]
    assert (name, sig) == ("get_bucket_website_endpoint", "get_bucket_website_endpoint(bucket_name text) RETURNS text")
    assert await sql(dsn, sample) == [(None,)]
    # uninstall drops the tables and the functions
    await call(registry, ctx, "iasql_uninstall", "aws_s3")
    assert await sql(dsn, "SELECT count(*) FROM pg_proc WHERE proname IN ('get_bucket_website_endpoint', "
                          "'block_s3_primary_key_update', 'block_s3_object_primary_key_update')") == [(0,)]


async def test_bucket_with_website_and_access_block_in_one_commit(registry, ctx, dsn, aws, s3_mod):
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO bucket (name) VALUES ('iasql-site')")
    await sql(dsn, "INSERT INTO bucket_website (bucket_name, index_document, error_document) "
                   "VALUES ('iasql-site', 'index.html', 'error.html')")
    await sql(dsn, "INSERT INTO public_access_block (bucket_name, block_public_policy, restrict_public_buckets) "
                   "VALUES ('iasql-site', false, false)")
    preview = await call(registry, ctx, "iasql_preview")
    assert sorted(preview) == [
        ("create", "bucket", "iasql-site", "bucket iasql-site in us-east-1"),
        ("create", "bucket_website", "iasql-site", "website of bucket iasql-site (index index.html, error error.html)"),
        ("create", "public_access_block", "iasql-site",
         "public access block of bucket iasql-site (block_public_acls, ignore_public_acls)")]
    assert aws("s3").list_buckets()["Buckets"] == []  # the preview changed nothing
    rows = await call(registry, ctx, "iasql_commit")
    # dependency order: the bucket before what hangs off it
    assert applied(rows) == [("create", "bucket"), ("create", "bucket_website"), ("create", "public_access_block")]
    assert website(aws, "iasql-site") == ("index.html", "error.html")
    assert access_block(aws, "iasql-site") == (True, True, False, False)
    assert await sql(dsn, "SELECT get_bucket_website_endpoint('iasql-site')") == [
        ("iasql-site.s3-website-us-east-1.amazonaws.com",)]

    # update both in place
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "UPDATE bucket_website SET index_document = 'home.html', error_document = NULL")
    await sql(dsn, "UPDATE public_access_block SET block_public_acls = false")
    assert sorted(await call(registry, ctx, "iasql_preview")) == [
        ("update", "bucket_website", "iasql-site", "website of bucket iasql-site (index home.html)"),
        ("update", "public_access_block", "iasql-site", "public access block of bucket iasql-site (ignore_public_acls)")]
    rows = await call(registry, ctx, "iasql_commit")
    assert sorted(applied(rows)) == [("update", "bucket_website"), ("update", "public_access_block")]
    assert website(aws, "iasql-site") == ("home.html", None)
    assert access_block(aws, "iasql-site") == (False, True, False, False)

    # delete the settings, keep the bucket
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "DELETE FROM bucket_website; DELETE FROM public_access_block")
    rows = await call(registry, ctx, "iasql_commit")
    assert sorted(applied(rows)) == [("delete", "bucket_website"), ("delete", "public_access_block")]
    assert website(aws, "iasql-site") is None and access_block(aws, "iasql-site") is None
    assert [b["Name"] for b in aws("s3").list_buckets()["Buckets"]] == ["iasql-site"]

    # settings again, then the bucket deleted with them (the rows cascade) in one commit
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO bucket_website (bucket_name, index_document) VALUES ('iasql-site', 'index.html')")
    await call(registry, ctx, "iasql_commit")
    assert website(aws, "iasql-site") == ("index.html", None)
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "DELETE FROM bucket WHERE name = 'iasql-site'")
    rows = await call(registry, ctx, "iasql_commit")
    assert applied(rows) == [("delete", "bucket_website"), ("delete", "bucket")]  # leaf to root
    assert aws("s3").list_buckets()["Buckets"] == []
    assert await sql(dsn, "SELECT count(*) FROM bucket_website") == [(0,)]


async def test_replace_by_a_new_bucket_name(registry, ctx, dsn, aws, s3_mod):
    """The settings' cloud id is the bucket name: pointing a row at another bucket removes the
    setting from the old bucket and puts it on the new one. Renaming a bucket is refused, as IaSQL."""
    s3 = aws("s3")
    s3.create_bucket(Bucket="iasql-one")
    s3.create_bucket(Bucket="iasql-two")
    s3.put_bucket_website(Bucket="iasql-one", WebsiteConfiguration={"IndexDocument": {"Suffix": "a.html"}})
    await call(registry, ctx, "iasql_begin")
    await call(registry, ctx, "iasql_rollback")
    assert await sql(dsn, "SELECT bucket_name, index_document FROM bucket_website") == [("iasql-one", "a.html")]
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "UPDATE bucket_website SET bucket_name = 'iasql-two'")
    rows = await call(registry, ctx, "iasql_commit")
    assert sorted(applied(rows)) == [("create", "bucket_website"), ("delete", "bucket_website")]
    assert website(aws, "iasql-one") is None and website(aws, "iasql-two") == ("a.html", None)
    with pytest.raises(psycopg.errors.RaiseException, match="Bucket name or region cannot be modified"):
        await sql(dsn, "UPDATE bucket SET name = 'iasql-three' WHERE name = 'iasql-one'")
    with pytest.raises(psycopg.errors.RaiseException, match="Bucket name or region cannot be modified"):
        await sql(dsn, "UPDATE bucket SET region = 'eu-west-1' WHERE name = 'iasql-one'")


async def test_import_and_drift_through_rollback(registry, ctx, dsn, aws, s3_mod):
    s3 = aws("s3")
    s3.create_bucket(Bucket="iasql-made-outside")
    s3.put_bucket_website(Bucket="iasql-made-outside", WebsiteConfiguration={
        "IndexDocument": {"Suffix": "index.html"}, "ErrorDocument": {"Key": "404.html"}})
    s3.put_public_access_block(Bucket="iasql-made-outside", PublicAccessBlockConfiguration={
        "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True})
    etag = s3.put_object(Bucket="iasql-made-outside", Key="docs/a.txt", Body=b"hello")["ETag"]
    await call(registry, ctx, "iasql_begin")
    rows = await call(registry, ctx, "iasql_rollback")
    assert sorted((a, t, i) for a, t, i, _ in rows) == [
        ("create", "bucket", "iasql-made-outside"), ("create", "bucket_object", "iasql-made-outside|docs/a.txt|us-east-1"),
        ("create", "bucket_website", "iasql-made-outside"), ("create", "public_access_block", "iasql-made-outside")]
    assert await sql(dsn, "SELECT index_document, error_document FROM bucket_website") == [("index.html", "404.html")]
    assert await sql(dsn, "SELECT block_public_acls AND ignore_public_acls AND block_public_policy "
                          "AND restrict_public_buckets FROM public_access_block") == [(True,)]
    assert await sql(dsn, "SELECT key, bucket_name, region, e_tag FROM bucket_object") == [
        ("docs/a.txt", "iasql-made-outside", "us-east-1", etag)]

    # drift: the website and block changed in the cloud, the object rewritten, another one added
    s3.put_bucket_website(Bucket="iasql-made-outside", WebsiteConfiguration={"IndexDocument": {"Suffix": "main.html"}})
    s3.delete_public_access_block(Bucket="iasql-made-outside")
    etag2 = s3.put_object(Bucket="iasql-made-outside", Key="docs/a.txt", Body=b"changed")["ETag"]
    s3.put_object(Bucket="iasql-made-outside", Key="b.txt", Body=b"b")
    assert etag2 != etag
    await call(registry, ctx, "iasql_begin")
    preview = await call(registry, ctx, "iasql_preview")  # no user change: the sync plan
    assert sorted((a, t, i) for a, t, i, _ in preview) == [
        ("create", "bucket_object", "iasql-made-outside|b.txt|us-east-1"),
        ("delete", "public_access_block", "iasql-made-outside"),
        ("update", "bucket_object", "iasql-made-outside|docs/a.txt|us-east-1"),
        ("update", "bucket_website", "iasql-made-outside")]
    rows = await call(registry, ctx, "iasql_rollback")
    assert sorted((a, t, i) for a, t, i, _ in rows) == sorted((a, t, i) for a, t, i, _ in preview)
    assert await sql(dsn, "SELECT index_document, error_document FROM bucket_website") == [("main.html", None)]
    assert await sql(dsn, "SELECT count(*) FROM public_access_block") == [(0,)]
    assert await sql(dsn, "SELECT key, e_tag FROM bucket_object ORDER BY key") == [
        ("b.txt", s3.head_object(Bucket="iasql-made-outside", Key="b.txt")["ETag"]), ("docs/a.txt", etag2)]


async def test_bucket_objects_are_read_only_but_deletable(registry, ctx, dsn, aws, s3_mod):
    s3 = aws("s3")
    s3.create_bucket(Bucket="iasql-objects")
    s3.put_object(Bucket="iasql-objects", Key="keep.txt", Body=b"k")
    s3.put_object(Bucket="iasql-objects", Key="drop.txt", Body=b"d")
    await call(registry, ctx, "iasql_begin")
    await call(registry, ctx, "iasql_rollback")
    await call(registry, ctx, "iasql_begin")
    # an inserted row creates nothing and goes away (objects are uploaded, not inserted), a deleted
    # row deletes the object, and key / bucket / region cannot change
    await sql(dsn, "INSERT INTO bucket_object (key, bucket_name, region) VALUES ('new.txt', 'iasql-objects', 'us-east-1')")
    await sql(dsn, "DELETE FROM bucket_object WHERE key = 'drop.txt'")
    with pytest.raises(psycopg.errors.RaiseException, match="Object bucket, key or region cannot be modified"):
        await sql(dsn, "UPDATE bucket_object SET key = 'other.txt' WHERE key = 'keep.txt'")
    preview = await call(registry, ctx, "iasql_preview")
    assert sorted(preview) == [
        ("create", "bucket_object", "iasql-objects|new.txt|us-east-1",
         "object new.txt of bucket iasql-objects in us-east-1 (cannot be created here: the row is removed)"),
        ("delete", "bucket_object", "iasql-objects|drop.txt|us-east-1",
         "object drop.txt of bucket iasql-objects in us-east-1")]
    rows = await call(registry, ctx, "iasql_commit")
    assert sorted(applied(rows)) == [("create", "bucket_object"), ("delete", "bucket_object")]
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="iasql-objects")["Contents"]] == ["keep.txt"]
    assert await sql(dsn, "SELECT key FROM bucket_object") == [("keep.txt",)]
    # a bucket with objects is deleted once its object rows are (children first, one commit)
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "DELETE FROM bucket_object; DELETE FROM bucket")
    rows = await call(registry, ctx, "iasql_commit")
    assert applied(rows) == [("delete", "bucket_object"), ("delete", "bucket")]
    assert s3.list_buckets()["Buckets"] == []


async def test_two_regions(registry, ctx, dsn, aws, s3_mod):
    s3_eu = aws("s3", "eu-west-1")
    s3_eu.create_bucket(Bucket="iasql-eu-outside", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    s3_eu.put_object(Bucket="iasql-eu-outside", Key="x", Body=b"x")
    s3_eu.put_bucket_website(Bucket="iasql-eu-outside", WebsiteConfiguration={"IndexDocument": {"Suffix": "i.html"}})
    # a region that is not enabled is not read
    await call(registry, ctx, "iasql_begin")
    assert await call(registry, ctx, "iasql_rollback") == []
    await sql(dsn, "UPDATE aws_regions SET is_enabled = true WHERE region = 'eu-west-1'")
    await call(registry, ctx, "iasql_begin")
    await call(registry, ctx, "iasql_rollback")
    assert await sql(dsn, "SELECT name, region FROM bucket") == [("iasql-eu-outside", "eu-west-1")]
    assert await sql(dsn, "SELECT key, region FROM bucket_object") == [("x", "eu-west-1")]
    assert await sql(dsn, "SELECT bucket_name, index_document FROM bucket_website") == [("iasql-eu-outside", "i.html")]
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO bucket (name, region) VALUES ('iasql-eu-new', 'eu-west-1'), ('iasql-us-new', 'us-east-1')")
    await sql(dsn, "INSERT INTO public_access_block (bucket_name) VALUES ('iasql-eu-new'), ('iasql-us-new')")
    await sql(dsn, "INSERT INTO bucket_website (bucket_name, index_document) VALUES ('iasql-eu-new', 'eu.html')")
    await call(registry, ctx, "iasql_commit")
    assert s3_eu.get_bucket_location(Bucket="iasql-eu-new")["LocationConstraint"] == "eu-west-1"
    assert access_block(aws, "iasql-eu-new", "eu-west-1") == (True, True, True, True)
    assert access_block(aws, "iasql-us-new") == (True, True, True, True)
    assert website(aws, "iasql-eu-new", "eu-west-1") == ("eu.html", None)
    assert await sql(dsn, "SELECT get_bucket_website_endpoint('iasql-eu-new')") == [
        ("iasql-eu-new.s3-website-eu-west-1.amazonaws.com",)]


async def test_install_imports_what_is_in_the_cloud(registry, ctx, dsn, aws):
    s3 = aws("s3")
    s3.create_bucket(Bucket="iasql-before")
    s3.put_bucket_website(Bucket="iasql-before", WebsiteConfiguration={"IndexDocument": {"Suffix": "index.html"}})
    s3.put_public_access_block(Bucket="iasql-before", PublicAccessBlockConfiguration={
        "BlockPublicAcls": False, "IgnorePublicAcls": True, "BlockPublicPolicy": False, "RestrictPublicBuckets": True})
    s3.put_object(Bucket="iasql-before", Key="one", Body=b"1")
    s3.put_object(Bucket="iasql-before", Key="two", Body=b"2")
    rows = await call(registry, ctx, "iasql_install", "aws_s3")
    assert rows == [("aws_s3@0.1.0", "bucket", 1), ("aws_s3@0.1.0", "bucket_website", 1),
                    ("aws_s3@0.1.0", "bucket_object", 2), ("aws_s3@0.1.0", "public_access_block", 1)]
    assert await sql(dsn, "SELECT block_public_acls, ignore_public_acls, block_public_policy, restrict_public_buckets "
                          "FROM public_access_block WHERE bucket_name = 'iasql-before'") == [(False, True, False, True)]


async def test_failed_commit_takes_back_the_settings_it_made(registry, ctx, dsn, aws, s3_mod):
    """A bucket, its website and block are made, an update of another bucket's website applied, then
    the cloud rejects a bucket name: the revert takes all of it back, newest first."""
    from engine.rpc import EngineError

    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO bucket (name) VALUES ('iasql-old')")
    await sql(dsn, "INSERT INTO bucket_website (bucket_name, index_document) VALUES ('iasql-old', 'old.html')")
    await call(registry, ctx, "iasql_commit")
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "UPDATE bucket_website SET index_document = 'new.html' WHERE bucket_name = 'iasql-old'")
    await sql(dsn, "INSERT INTO bucket (name) VALUES ('iasql-made'), ('ab')")
    await sql(dsn, "INSERT INTO bucket_website (bucket_name, index_document) VALUES ('iasql-made', 'i.html')")
    await sql(dsn, "INSERT INTO public_access_block (bucket_name) VALUES ('iasql-made')")
    with pytest.raises(EngineError) as ei:
        await call(registry, ctx, "iasql_commit")
    assert ei.value.sqlstate == "58000" and "InvalidBucketName" in ei.value.message
    assert "cloud changes this commit made were taken back" in ei.value.detail
    assert [b["Name"] for b in aws("s3").list_buckets()["Buckets"]] == ["iasql-old"]
    assert website(aws, "iasql-old") == ("old.html", None)
    assert await sql(dsn, "SELECT bucket_name, index_document FROM bucket_website") == [("iasql-old", "old.html")]
    assert await sql(dsn, "SELECT count(*) FROM public_access_block") == [(0,)]


async def test_failed_commit_brings_back_rows_a_cascade_deleted(registry, ctx, dsn, aws, s3_mod):
    """Deleting a bucket row deletes its website row (ON DELETE CASCADE, audited before the
    bucket's own DELETE); when the commit is reverted both rows come back, the bucket first."""
    from engine.rpc import EngineError

    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO bucket (name) VALUES ('iasql-old')")
    await sql(dsn, "INSERT INTO bucket_website (bucket_name, index_document) VALUES ('iasql-old', 'old.html')")
    await call(registry, ctx, "iasql_commit")
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "DELETE FROM bucket WHERE name = 'iasql-old'")
    await sql(dsn, "INSERT INTO bucket (name) VALUES ('ab')")
    with pytest.raises(EngineError) as ei:
        await call(registry, ctx, "iasql_commit")
    assert "cloud changes this commit made were taken back" in ei.value.detail
    assert [b["Name"] for b in aws("s3").list_buckets()["Buckets"]] == ["iasql-old"]
    assert website(aws, "iasql-old") == ("old.html", None)
    assert await sql(dsn, "SELECT name FROM bucket") == [("iasql-old",)]
    assert await sql(dsn, "SELECT bucket_name, index_document FROM bucket_website") == [("iasql-old", "old.html")]
