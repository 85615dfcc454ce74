"""Module RPCs and ``iasql_*`` functions in a read-only transaction (refused before any cloud
call, 25006), and the races between an RPC's row write and another session's sync (a row
committed meanwhile fails neither), at engine level against moto."""

from __future__ import annotations

import asyncio

import pytest

from engine.local import call_in_transaction
from engine.rpc import EngineError
from tests.engine.support import Ctx, call, sql


@pytest.fixture
async def mods(registry, ctx, dsn):
    """aws_ec2, aws_iam, aws_s3 and aws_acm installed, credentials set."""
    await call(registry, ctx, "iasql_install", "aws_ec2", "aws_iam", "aws_s3", "aws_acm")
    await sql(dsn, "INSERT INTO aws_credentials (access_key_id, secret_access_key) VALUES ('testing', 'testing')")


async def read_only_call(registry, ctx, how: str, name: str, *args) -> EngineError:
    """Call ``name`` in a read-only transaction opened ``how`` ('tx': SET TRANSACTION READ ONLY,
    'default': SET default_transaction_read_only = on); returns the error it raised."""
    caller = await ctx.open()
    if how == "default":
        await caller.run("SET default_transaction_read_only = on")
        await caller.commit()
    else:
        await caller.run("SET TRANSACTION READ ONLY")
    try:
        with pytest.raises(EngineError) as ei:
            await call_in_transaction(registry.get(name), caller, *args)
    finally:
        if how == "default":
            await caller.run("SET default_transaction_read_only = off")
            await caller.commit()
    return ei.value


@pytest.mark.parametrize("how", ["tx", "default"])
async def test_cloud_changing_rpcs_are_refused_in_a_read_only_transaction(registry, ctx, dsn, aws, mods, how):
    aws("iam").create_user(UserName="alice")
    aws("s3").create_bucket(Bucket="ro-bucket")
    await call(registry, ctx, "iasql_begin")
    await call(registry, ctx, "iasql_rollback")  # the user and the bucket get their rows
    for name, args in (("access_key_request", ("alice",)), ("key_pair_request", ("ro2", None)),
                       ("s3_upload_object", ("ro-bucket", "k.txt", "v", "text/plain"))):
        err = await read_only_call(registry, ctx, how, name, *args)
        assert (err.sqlstate, err.message) == ("25006", f"cannot execute {name} in a read-only transaction")
    # nothing was made in the cloud, nothing written
    assert aws("iam").list_access_keys(UserName="alice")["AccessKeyMetadata"] == []
    assert aws("ec2").describe_key_pairs()["KeyPairs"] == []
    assert aws("s3").list_objects_v2(Bucket="ro-bucket").get("Contents", []) == []
    assert await sql(dsn, "SELECT count(*) FROM access_key") == [(0,)]
    assert await sql(dsn, "SELECT count(*) FROM key_pair") == [(0,)]


async def test_iasql_commit_is_refused_in_a_read_only_transaction(registry, ctx, dsn, aws, mods):
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO bucket (name) VALUES ('ro-commit')")
    for name, args in (("iasql_commit", (None,)), ("iasql_rollback", (False,)), ("iasql_begin", ()),
                       ("iasql_install", (["aws_sns"],)), ("iasql_uninstall", (["aws_acm"],))):
        err = await read_only_call(registry, ctx, "tx", name, *args)
        assert (err.sqlstate, err.message) == ("25006", f"cannot execute {name} in a read-only transaction")
    assert aws("s3").list_buckets()["Buckets"] == []
    # out of the read-only transaction the commit goes through
    await call(registry, ctx, "iasql_commit")
    assert [b["Name"] for b in aws("s3").list_buckets()["Buckets"]] == ["ro-commit"]
