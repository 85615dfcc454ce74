"""Fault injection: every cloud call of a multi-entity commit, failed in turn (issue 15).

A ``FaultCloud`` between boto3 and moto fails the 1st, 2nd, ... nth mutating AWS call of one
commit (three buckets, one tagged update of a bucket committed earlier, a security group and its
rule), either before the call reaches moto or after (a lost response). After each, an
``iasql_rollback`` through an engine that talks to moto directly must bring the tables and the cloud
to the same state, and the bucket committed earlier must still be there.
"""

from __future__ import annotations

import uuid

import psycopg
import pytest

from engine import EngineSettings, build_registry
from engine.rpc import EngineError
from tests.engine.support import Ctx, call, sql
from tests.support.faultcloud import FaultCloud

pytestmark = pytest.mark.timeout(600)


def _buckets(aws) -> set[str]:
    return {b["Name"] for b in aws("s3").list_buckets()["Buckets"]}


def _groups(aws) -> set[str]:
    return {g["GroupName"] for g in aws("ec2").describe_security_groups()["SecurityGroups"]}


async def _scenario(pg, moto_server, cloud: FaultCloud, n: int | None, after_forward: bool, aws,
                    times: int = 1) -> tuple:
    """A fresh database and cloud; commit the multi-entity change with the n-th mutating call
    failed; then roll back through moto directly. Returns (error or None, mutating calls seen)."""
    moto_server.reset()
    name = "f_" + uuid.uuid4().hex[:10]
    with psycopg.connect(pg.dsn("postgres"), autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    dsn = pg.dsn(name)
    direct = build_registry(EngineSettings(aws_endpoint_url=moto_server.endpoint_url, aws_max_attempts=1,
                                           lock_wait_timeout=5.0))
    faulty = build_registry(EngineSettings(aws_endpoint_url=cloud.endpoint_url, aws_max_attempts=1,
                                           lock_wait_timeout=5.0))
    ctx = Ctx(dsn=dsn, database=name)
    try:
        await call(direct, ctx, "iasql_install", "aws_s3", "aws_security_group")
        await call(direct, ctx, "iasql_begin")
        await sql(dsn, "INSERT INTO bucket (name) VALUES ('iasql-keep')")
        await call(direct, ctx, "iasql_commit")
        await call(direct, ctx, "iasql_begin")
        await sql(dsn, "INSERT INTO bucket (name, tags) VALUES ('iasql-f1', '{\"k\": \"1\"}'), ('iasql-f2', NULL), "
                       "('iasql-f3', '{\"k\": \"3\"}')")
        await sql(dsn, "UPDATE bucket SET tags = '{\"team\": \"x\"}' WHERE name = 'iasql-keep'")
        await sql(dsn, "INSERT INTO security_group (description, group_name) VALUES ('f', 'iasql-fsg')")
        await sql(dsn, "INSERT INTO security_group_rule (is_egress, ip_protocol, from_port, to_port, cidr_ipv4, "
                       "security_group_id) SELECT false, 'tcp', 80, 80, '10.0.0.0/8', id FROM security_group "
                       "WHERE group_name = 'iasql-fsg'")
        cloud.clear()
        start = len(cloud.mutating_calls())
        if n is not None and after_forward:
            cloud.fail_after_forward(n)
        elif n is not None:
            cloud.fail(n, times=times)
        error = None
        try:
            await call(faulty, ctx, "iasql_commit")
        except EngineError as e:
            error = e
        seen = cloud.mutating_calls()[start:]
        cloud.clear()
        if error is not None and "were taken back" in (error.detail or ""):
            # a revert that worked: the cloud is as before the commit, the tables as at iasql_begin
            assert _buckets(aws) == {"iasql-keep"}, (n, error)
            assert "iasql-fsg" not in _groups(aws), (n, error)
            assert {r[0] for r in await sql(dsn, "SELECT name FROM bucket")} == {"iasql-keep"}, (n, error)
        # whatever happened, a rollback brings tables and cloud to the same state
        await call(direct, ctx, "iasql_rollback", True)
        rows_b = {r[0] for r in await sql(dsn, "SELECT name FROM bucket")}
        rows_g = {r[0] for r in await sql(dsn, "SELECT group_name FROM security_group")}
        assert rows_b == _buckets(aws), (n, after_forward, error)
        assert rows_g == _groups(aws), (n, after_forward, error)
        assert "iasql-keep" in rows_b, (n, after_forward, error)
        rules = await sql(dsn, "SELECT count(*) FROM security_group_rule WHERE security_group_rule_id IS NULL")
        assert rules == [(0,)], (n, after_forward, error)
        return error, seen
    finally:
        await ctx.close()
        direct.engine_state.aws.close()
        faulty.engine_state.aws.close()
        with psycopg.connect(pg.dsn("postgres"), autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        moto_server.reset()  # the sandbox cloud is the session's: later tests must not read these buckets in


async def test_every_cloud_call_of_a_commit_failed_in_turn(pg, moto_server, aws):
    with FaultCloud(moto_server.endpoint_url) as cloud:
        error, calls = await _scenario(pg, moto_server, cloud, None, False, aws)
        assert error is None
        assert {"PUT bucket", "CreateSecurityGroup", "AuthorizeSecurityGroupIngress"} <= set(calls), calls
        assert len(calls) >= 6
        for n in range(1, len(calls) + 1):
            # once: the retry over all modules gets past it, the commit succeeds
            error, _ = await _scenario(pg, moto_server, cloud, n, False, aws)
            assert error is None, (n, error.message, error.detail)
        for n in (1, 3, len(calls)):
            # twice in a row: a later pass or the retry over all modules may get past it, or not
            error, _ = await _scenario(pg, moto_server, cloud, n, False, aws, times=2)
            assert error is None or error.sqlstate == "58000", (n, error)
        for n in (2, len(calls)):
            # from the nth call on, every cloud change fails, the revert's too: the error says so,
            # and the rollback that follows still brings tables and cloud together
            error, _ = await _scenario(pg, moto_server, cloud, n, False, aws, times=1000)
            assert error is not None and error.sqlstate == "58000", (n, error)


async def test_lost_responses_leave_a_consistent_pair(pg, moto_server, aws):
    """The call reaches moto but its answer is lost: the engine believes it failed."""
    with FaultCloud(moto_server.endpoint_url) as cloud:
        _, calls = await _scenario(pg, moto_server, cloud, None, False, aws)
        for n in sorted({1, len(calls) // 2, len(calls)}):
            error, _ = await _scenario(pg, moto_server, cloud, n, True, aws)
            assert error is None or error.sqlstate == "58000", (n, error)
