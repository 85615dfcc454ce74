"""Module RPCs (``Module.rpcs``) at engine level: aws_s3's ``s3_upload_object`` against moto, its
stub existing only while the module is installed, and ``iasql_help`` listing it."""

from __future__ import annotations

import psycopg
import pytest

from engine.modules import MODULES
from engine.rpc import EngineError
from proxy.router.marker import MODULE_RPC_NAMES
from tests.engine.support import call, sql


@pytest.fixture
async def s3_mod(registry, ctx, dsn):
    """aws_s3 installed, with credentials."""
    await call(registry, ctx, "iasql_install", "aws_s3")
    await sql(dsn, "INSERT INTO aws_credentials (access_key_id, secret_access_key) VALUES ('testing', 'testing')")


def test_every_module_rpc_is_registered_and_known_to_the_proxy_prefilter(registry):
    declared = {fn.name for m in MODULES for fn in m.rpcs}
    assert {"s3_upload_object", "access_key_request"} <= declared
    assert declared == set(MODULE_RPC_NAMES)
    for name in declared:
        assert registry.get(name).module is not None
    assert all(fn.module is None for fn in registry.engine_state.functions)


async def test_upload_object_as_iasql(registry, ctx, dsn, aws, s3_mod):
    aws("s3").create_bucket(Bucket="rpc-bucket")
    await call(registry, ctx, "iasql_begin")
    await call(registry, ctx, "iasql_rollback")  # the bucket gets its row
    rows = await call(registry, ctx, "s3_upload_object", "rpc-bucket", "dir/hello.txt", "hello world", "text/plain")
    assert rows == [("rpc-bucket", "dir/hello.txt", "OK", "Bucket content has been updated")]
    obj = aws("s3").get_object(Bucket="rpc-bucket", Key="dir/hello.txt")
    assert obj["Body"].read() == b"hello world"
    assert obj["ContentType"] == "text/plain"
    got = await sql(dsn, "SELECT key, bucket_name, region, e_tag FROM bucket_object")
    assert got == [("dir/hello.txt", "rpc-bucket", "us-east-1", obj["ETag"])]
    # again: the same row, the new e_tag
    await call(registry, ctx, "s3_upload_object", "rpc-bucket", "dir/hello.txt", "bye", "text/plain")
    etag = aws("s3").head_object(Bucket="rpc-bucket", Key="dir/hello.txt")["ETag"]
    assert await sql(dsn, "SELECT key, e_tag FROM bucket_object") == [("dir/hello.txt", etag)]


async def test_upload_to_a_bucket_without_a_row_uploads_only(registry, ctx, dsn, aws, s3_mod):
    aws("s3").create_bucket(Bucket="no-row")
    rows = await call(registry, ctx, "s3_upload_object", "no-row", "k", "v", "text/plain")
    assert rows == [("no-row", "k", "OK", "Bucket content has been updated")]
    assert aws("s3").get_object(Bucket="no-row", Key="k")["Body"].read() == b"v"
    assert await sql(dsn, "SELECT count(*) FROM bucket_object") == [(0,)]


async def test_no_such_bucket_is_42704(registry, ctx, s3_mod):
    with pytest.raises(EngineError) as ei:
        await call(registry, ctx, "s3_upload_object", "missing-bucket", "k", "v", "text/plain")
    assert ei.value.sqlstate == "42704"
    assert "missing-bucket" in ei.value.message


@pytest.mark.parametrize("args", [(None, "k", "v", "t"), ("b", "", "v", "t"), ("b", "k", None, "t"), ("b", "k", "v", "")])
async def test_missing_argument_is_22023(registry, ctx, s3_mod, args):
    with pytest.raises(EngineError) as ei:
        await call(registry, ctx, "s3_upload_object", *args)
    assert ei.value.sqlstate == "22023"
    assert ei.value.message == "Cannot upload an object without bucket name, key, content or content type"


async def test_stub_exists_only_while_installed(registry, ctx, dsn):
    await call(registry, ctx, "iasql_modules_list")
    await call(registry, ctx, "iasql_version")
    await call(registry, ctx, "iasql_help")  # creates the metadata
    exists = "SELECT to_regprocedure('public.s3_upload_object(varchar,varchar,varchar,varchar)') IS NOT NULL, " \
             "to_regprocedure('iasql_args.s3_upload_object(varchar,varchar,varchar,varchar)') IS NOT NULL"
    # the argument probe is the metadata's (its owner made it); the stub comes with the module
    assert await sql(dsn, exists) == [(False, True)]
    with pytest.raises(psycopg.errors.UndefinedFunction):
        await sql(dsn, "SELECT * FROM s3_upload_object('b', 'k', 'v', 't')")
    await call(registry, ctx, "iasql_install", "aws_s3")
    assert await sql(dsn, exists) == [(True, True)]
    with pytest.raises(psycopg.errors.FeatureNotSupported):  # a direct call fails loudly
        await sql(dsn, "SELECT * FROM s3_upload_object('b', 'k', 'v', 't')")
    help_rows = await call(registry, ctx, "iasql_help")
    assert ("aws_s3", "s3_upload_object",
            "s3_upload_object(bucket_name varchar, bucket_key varchar, file_content varchar, content_type varchar)",
            "Uploads text content as an object of an S3 bucket",
            "SELECT * FROM s3_upload_object('my-bucket', 'hello.txt', 'hello', 'text/plain')") in help_rows
    assert not [r for r in help_rows if r[0] == "iasql_functions" and r[1] == "s3_upload_object"]
    await call(registry, ctx, "iasql_uninstall", "aws_s3")
    assert await sql(dsn, exists) == [(False, True)]
    assert not [r for r in await call(registry, ctx, "iasql_help") if r[1] == "s3_upload_object"]


async def test_not_installed_is_42883_from_the_engine_too(registry, ctx, dsn):
    """Through the proxy, constant arguments reach the engine without a probe: the engine itself
    refuses a module RPC whose module is not installed, as Postgres refuses an unknown function."""
    with pytest.raises(EngineError) as ei:
        await call(registry, ctx, "s3_upload_object", "b", "k", "v", "t")
    assert ei.value.sqlstate == "42883"
    assert ei.value.message == "function s3_upload_object(varchar, varchar, varchar, varchar) does not exist"
    assert "iasql_install('aws_s3')" in ei.value.hint


def test_proxy_refuses_a_function_its_prefilter_would_miss(registry):
    from proxy.intercept.dispatch import check_prefilter

    check_prefilter(registry.names())
    with pytest.raises(RuntimeError, match="new_rpc"):
        check_prefilter(registry.names() | {"new_rpc"})


async def test_metadata_upgrade_creates_the_stubs_of_installed_modules(registry, ctx, dsn):
    """A database whose aws_s3 was installed before module RPCs existed gets their stub and probe
    when its metadata is brought up to date."""
    await call(registry, ctx, "iasql_install", "aws_s3")
    await sql(dsn, "DROP FUNCTION public.s3_upload_object(varchar, varchar, varchar, varchar); "
                   "DROP FUNCTION iasql_args.s3_upload_object(varchar, varchar, varchar, varchar); "
                   "COMMENT ON TABLE public.iasql_audit_log IS 'iasql-proxy metadata 6 (0.1.0)'")
    await call(registry, ctx, "iasql_modules_installed")  # any engine call brings the metadata up to date
    assert await sql(dsn, "SELECT to_regprocedure('public.s3_upload_object(varchar,varchar,varchar,varchar)') IS NOT NULL, "
                          "to_regprocedure('iasql_args.s3_upload_object(varchar,varchar,varchar,varchar)') IS NOT NULL") \
        == [(True, True)]



@pytest.fixture
async def iam_mod(registry, ctx, dsn):
    """aws_iam installed, with credentials."""
    await call(registry, ctx, "iasql_install", "aws_iam")
    if await sql(dsn, "SELECT count(*) FROM aws_credentials") == [(0,)]:
        await sql(dsn, "INSERT INTO aws_credentials (access_key_id, secret_access_key) VALUES ('testing', 'testing')")


async def test_access_key_request_as_iasql(registry, ctx, dsn, aws, iam_mod):
    aws("iam").create_user(UserName="rpc-user")
    await call(registry, ctx, "iasql_begin")
    await call(registry, ctx, "iasql_rollback")  # the user gets its row
    fn = registry.get("access_key_request")
    assert [c.name for c in fn.columns] == ["status", "message", "accesskeyid", "secretaccesskey"]
    [(status, message, key_id, secret)] = await call(registry, ctx, "access_key_request", "rpc-user")
    assert (status, message) == ("SUCCESS", "") and key_id and secret
    keys = aws("iam").list_access_keys(UserName="rpc-user")["AccessKeyMetadata"]
    assert [k["AccessKeyId"] for k in keys] == [key_id]
    assert await sql(dsn, "SELECT access_key_id, status::text, user_name FROM access_key") == [(key_id, "Active", "rpc-user")]
    assert secret not in str(await sql(dsn, "SELECT * FROM access_key"))


async def test_access_key_request_failures(registry, ctx, iam_mod):
    with pytest.raises(EngineError) as ei:
        await call(registry, ctx, "access_key_request", "no-such-user")
    assert ei.value.sqlstate == "42704" and "no-such-user" in ei.value.message
    for bad in (None, ""):
        with pytest.raises(EngineError) as ei:
            await call(registry, ctx, "access_key_request", bad)
        assert ei.value.sqlstate == "22004"


async def test_access_key_request_not_installed(registry, ctx):
    with pytest.raises(EngineError) as ei:
        await call(registry, ctx, "access_key_request", "u")
    assert ei.value.sqlstate == "42883"
    assert "iasql_install('aws_iam')" in ei.value.hint
