"""Module RPCs and ``iasql_*`` functions in a read-only transaction (refused before any cloud
call, 25006), and the races between an RPC's row write and another session's sync (a row
committed meanwhile fails neither), at engine level against moto."""

from __future__ import annotations

import asyncio

import psycopg
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


async def test_a_sync_waiting_for_an_rpcs_row_does_not_fail_when_it_commits(registry, ctx, dsn, dbname, aws, mods):
    """Session A makes a key pair and keeps its transaction open; session B's rollback reads the
    key pair from the cloud, waits for A's uncommitted row (a unique index: Postgres) and, once A
    commits, goes on instead of failing with 23505 uq_keypair_name_region."""
    a = await ctx.open()
    [(name, status, _, _)] = await registry.get("key_pair_request").impl(a, "tx-race", None)
    assert (name, status) == ("tx-race", "OK")
    other = Ctx(dsn=dsn, database=dbname)
    try:
        await call(registry, other, "iasql_begin")
        b = asyncio.create_task(call(registry, other, "iasql_rollback"))
        await asyncio.sleep(4)
        assert not b.done()  # waiting for A's row
        await a.commit()
        await asyncio.wait_for(b, 60)
    finally:
        await other.close()
    k = aws("ec2").describe_key_pairs(KeyNames=["tx-race"])["KeyPairs"][0]
    assert await sql(dsn, "SELECT name, key_pair_id, region FROM key_pair") == [("tx-race", k["KeyPairId"],
                                                                                 "us-east-1")]
    assert await sql(dsn, "SELECT count(*) FROM iasql_audit_log WHERE change_type = 'ERROR'") == [(0,)]


async def test_certificate_request_when_a_sync_recorded_the_certificate_meanwhile(registry, ctx, dsn, dbname, aws,
                                                                                  mods, monkeypatch):
    """Another session's sync reads the new certificate in and commits its row while
    certificate_request runs (as during a DNS validation's wait): the call's own row write
    updates that row instead of failing with 23505 uq_certificate_arn."""
    from engine.modules import aws_acm

    other = Ctx(dsn=dsn, database=dbname)
    original = aws_acm.CertificateMapper._record
    synced: list[bool] = []

    async def record_after_a_sync(self, mc, region, arn):
        if not synced:
            synced.append(True)
            await call(registry, other, "iasql_begin")
            await call(registry, other, "iasql_rollback")
            assert await sql(dsn, "SELECT arn FROM certificate") == [(arn,)]
        return await original(self, mc, region, arn)

    monkeypatch.setattr(aws_acm.CertificateMapper, "_record", record_after_a_sync)
    try:
        [(arn, status, message)] = await call(registry, ctx, "certificate_request", "race.example.com", "EMAIL",
                                              None, "{}", '{"team": "web"}')
    finally:
        await other.close()
    assert synced and status == "PENDING"
    assert message == "Check your email for next steps to validate the certificate request"
    assert await sql(dsn, "SELECT arn, domain_name, region, tags::text FROM certificate") == [
        (arn, "race.example.com", "us-east-1", '{"team": "web"}')]
    assert [c["CertificateArn"] for c in aws("acm").list_certificates(
        CertificateStatuses=["PENDING_VALIDATION", "ISSUED"])["CertificateSummaryList"]] == [arn]


async def test_access_key_request_when_a_sync_recorded_the_key_meanwhile(registry, ctx, dsn, dbname, aws, mods,
                                                                         monkeypatch):
    """access_key has no unique key: a key another session's sync recorded while the call ran is
    not written a second time."""

    aws("iam").create_user(UserName="alice")
    await call(registry, ctx, "iasql_begin")
    await call(registry, ctx, "iasql_rollback")  # alice gets her row
    other = Ctx(dsn=dsn, database=dbname)
    caller = await ctx.open()
    real_run = caller.run
    synced: list[bool] = []

    async def run(query, params=()):
        if query.startswith("INSERT INTO public.access_key") and not synced:
            synced.append(True)
            await call(registry, other, "iasql_begin")
            await call(registry, other, "iasql_rollback")
            assert len(await sql(dsn, "SELECT access_key_id FROM access_key")) == 1
        return await real_run(query, params)

    monkeypatch.setattr(caller, "run", run)
    try:
        [(status, _, key_id, secret)] = await call(registry, ctx, "access_key_request", "alice")
    finally:
        await other.close()
    assert synced and status == "SUCCESS" and secret
    assert await sql(dsn, "SELECT access_key_id, user_name FROM access_key") == [(key_id, "alice")]


async def test_iasql_help_signatures_are_valid_sql(registry, ctx, dsn):
    """Every signature iasql_help shows can be written in CREATE FUNCTION (confirm_subscription's
    was ``VARIADIC _args text[] = []``)."""
    await call(registry, ctx, "iasql_install", "aws_sns", "aws_ec2", "aws_acm")
    rows = await call(registry, ctx, "iasql_help")
    sigs = {name: sig for _, name, sig, _, _ in rows if registry.get(name)}  # the engine's functions
    assert sigs["confirm_subscription"] == "confirm_subscription(VARIADIC _args text[])"
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        for sig in sigs.values():
            await conn.execute(f"CREATE FUNCTION pg_temp.{sig} RETURNS void LANGUAGE sql AS ''")
