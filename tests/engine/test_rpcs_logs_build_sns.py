"""Module RPCs ``log_group_tail`` (aws_cloudwatch), ``start_build`` (aws_codebuild) and
``confirm_subscription`` (aws_sns) at engine level, against the tests' moto server."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import pytest

from engine.rpc import EngineError
from tests.engine.support import call, sql

ASSUME = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"Service": "codebuild.amazonaws.com"}, "Action": "sts:AssumeRole"}]})


async def _install(registry, ctx, dsn, module):
    await call(registry, ctx, "iasql_install", module)
    if await sql(dsn, "SELECT count(*) FROM aws_credentials") == [(0,)]:
        await sql(dsn, "INSERT INTO aws_credentials (access_key_id, secret_access_key) VALUES ('testing', 'testing')")


# -- log_group_tail -------------------------------------------------------------------------------
def _put_events(aws, group, region="us-east-1"):
    logs = aws("logs", region)
    logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName="web-1")
    t0 = int(time.time() * 1000) - 60_000  # AWS (and moto) refuse events older than 14 days
    res = logs.put_log_events(logGroupName=group, logStreamName="web-1",
                              logEvents=[{"timestamp": t0, "message": "started"},
                                         {"timestamp": t0 + 1500, "message": "GET / 200"}])
    assert not res.get("rejectedLogEventsInfo")
    return t0


async def test_log_group_tail_returns_the_events(registry, ctx, dsn, aws):
    await _install(registry, ctx, dsn, "aws_cloudwatch")
    t0 = _put_events(aws, "/app/web")
    fn = registry.get("log_group_tail")
    assert [(c.name, c.type_name) for c in fn.columns] == [
        ("event_id", "varchar"), ("log_stream_name", "varchar"), ("event_timestamp", "timestamptz"),
        ("message", "varchar")]
    assert not fn.mutating and fn.module == "aws_cloudwatch"
    rows = await call(registry, ctx, "log_group_tail", "/app/web", None)
    cloud = aws("logs").filter_log_events(logGroupName="/app/web")["events"]
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        (e["eventId"], "web-1", datetime.fromtimestamp(e["timestamp"] / 1000, timezone.utc), e["message"])
        for e in cloud]
    assert [(r[1], r[2], r[3]) for r in rows] == [
        ("web-1", datetime.fromtimestamp(t0 / 1000, timezone.utc), "started"),
        ("web-1", datetime.fromtimestamp((t0 + 1500) / 1000, timezone.utc), "GET / 200")]
    assert all(r[0] for r in rows)
    # an explicit region; a log group without events gives no rows
    aws("logs", "us-west-2").create_log_group(logGroupName="/app/empty")
    assert await call(registry, ctx, "log_group_tail", "/app/empty", "us-west-2") == []


async def test_log_group_tail_failures(registry, ctx, dsn, aws):
    await _install(registry, ctx, dsn, "aws_cloudwatch")
    _put_events(aws, "/app/other-region", "us-west-2")
    with pytest.raises(EngineError) as ei:  # exists, but not in the default region
        await call(registry, ctx, "log_group_tail", "/app/other-region", None)
    assert ei.value.sqlstate == "42704" and "/app/other-region" in ei.value.message
    for bad in (None, ""):
        with pytest.raises(EngineError) as ei:
            await call(registry, ctx, "log_group_tail", bad, None)
        assert (ei.value.sqlstate, ei.value.message) == ("22004", "Invalid log group name")
    with pytest.raises(EngineError) as ei:
        await call(registry, ctx, "log_group_tail", "/app/other-region", "mars-1")
    assert ei.value.sqlstate == "22023" and "mars-1" in ei.value.message


async def test_log_group_tail_not_installed(registry, ctx):
    with pytest.raises(EngineError) as ei:
        await call(registry, ctx, "log_group_tail", "/x", None)
    assert ei.value.sqlstate == "42883"
    assert "iasql_install('aws_cloudwatch')" in ei.value.hint


# -- start_build ----------------------------------------------------------------------------------
def _project(aws, name, region="us-east-1"):
    role = aws("iam").create_role(RoleName=f"{name}-role", AssumeRolePolicyDocument=ASSUME)["Role"]
    aws("codebuild", region).create_project(
        name=name, source={"type": "NO_SOURCE", "location": "none", "buildspec": "version: 0.2"},
        artifacts={"type": "NO_ARTIFACTS"}, serviceRole=role["Arn"],
        environment={"type": "LINUX_CONTAINER", "image": "aws/codebuild/standard:7.0",
                     "computeType": "BUILD_GENERAL1_SMALL"})


async def test_start_build_records_the_build(registry, ctx, dsn, aws):
    await _install(registry, ctx, dsn, "aws_codebuild")
    _project(aws, "rpc-proj")
    await call(registry, ctx, "iasql_begin")
    await call(registry, ctx, "iasql_rollback")  # the project gets its row
    assert await sql(dsn, "SELECT project_name FROM codebuild_project") == [("rpc-proj",)]
    assert [c.name for c in registry.get("start_build").columns] == ["name", "status", "message"]
    rows = await call(registry, ctx, "start_build", "rpc-proj", None)
    assert rows == [("rpc-proj", "OK", "")]
    cb = aws("codebuild")
    [build_id] = cb.list_builds_for_project(projectName="rpc-proj")["ids"]
    [b] = cb.batch_get_builds(ids=[build_id])["builds"]
    got = await sql(dsn, "SELECT aws_id, arn, build_number, build_status::text, region, project_name, "
                         "start_time IS NOT NULL, end_time IS NOT NULL FROM codebuild_build_list")
    assert got == [(build_id, b["arn"], b["buildNumber"], "SUCCEEDED", "us-east-1", "rpc-proj", True, True)]
    assert any(ln.startswith(f"started build {build_id}") for ln in ctx.lines)
    # the next sync keeps the row (moto makes up a new end time at every read, which it writes back)
    [(pk,)] = await sql(dsn, "SELECT id FROM codebuild_build_list")
    await call(registry, ctx, "iasql_begin")
    rows = await call(registry, ctx, "iasql_rollback")
    assert not [r for r in rows if r[1] == "codebuild_build_list" and r[0] in ("create", "delete")]
    assert await sql(dsn, "SELECT id, aws_id, build_status::text FROM codebuild_build_list") == [
        (pk, build_id, "SUCCEEDED")]


async def test_start_build_of_a_project_without_a_row_only_builds(registry, ctx, dsn, aws):
    await _install(registry, ctx, dsn, "aws_codebuild")
    _project(aws, "rpc-west", "us-west-2")  # the region is not enabled: no row
    assert await call(registry, ctx, "start_build", "rpc-west", "us-west-2") == [("rpc-west", "OK", "")]
    assert len(aws("codebuild", "us-west-2").list_builds_for_project(projectName="rpc-west")["ids"]) == 1
    assert await sql(dsn, "SELECT count(*) FROM codebuild_build_list") == [(0,)]


async def test_start_build_failures(registry, ctx, dsn, aws):
    await _install(registry, ctx, dsn, "aws_codebuild")
    with pytest.raises(EngineError) as ei:
        await call(registry, ctx, "start_build", "no-such-project", None)
    assert (ei.value.sqlstate, ei.value.message) == ("42704", "Codebuild project not found")
    assert "no-such-project" in ei.value.detail
    for bad in (None, ""):
        with pytest.raises(EngineError) as ei:
            await call(registry, ctx, "start_build", bad, None)
        assert ei.value.sqlstate == "22004"
        assert ei.value.message == "Please provide the name of the CodeBuild project to build"
    with pytest.raises(EngineError) as ei:
        await call(registry, ctx, "start_build", "p", "mars-1")
    assert ei.value.sqlstate == "22023"
    assert aws("codebuild").list_builds()["ids"] == []


async def test_start_build_not_installed(registry, ctx):
    with pytest.raises(EngineError) as ei:
        await call(registry, ctx, "start_build", "p", None)
    assert ei.value.sqlstate == "42883"
    assert "iasql_install('aws_codebuild')" in ei.value.hint


# -- confirm_subscription -------------------------------------------------------------------------
async def test_confirm_subscription(registry, ctx, dsn, aws):
    await _install(registry, ctx, dsn, "aws_sns")
    topic = aws("sns").create_topic(Name="rpc-topic")["TopicArn"]
    fn = registry.get("confirm_subscription")
    assert fn.signature == "confirm_subscription(VARIADIC _args text[])"  # valid SQL (IaSQL's had "= []")
    assert [c.name for c in fn.columns] == ["arn", "status", "error"]
    [(arn, status, error)] = await call(registry, ctx, "confirm_subscription", topic, "a-token")
    # moto accepts any token of an existing topic and answers a subscription ARN of that topic
    assert (status, error) == ("OK", "") and arn.startswith(topic + ":")
    assert any(ln == f"confirmed subscription {arn}" for ln in ctx.lines)
    # an explicit region
    west = aws("sns", "us-west-2").create_topic(Name="rpc-west")["TopicArn"]
    [(arn, status, _)] = await call(registry, ctx, "confirm_subscription", west, "t", "us-west-2")
    assert status == "OK" and arn.startswith(west + ":")


async def test_confirm_subscription_failures(registry, ctx, dsn, aws):
    await _install(registry, ctx, dsn, "aws_sns")
    missing = "arn:aws:sns:us-east-1:123456789012:no-such-topic"
    with pytest.raises(EngineError) as ei:
        await call(registry, ctx, "confirm_subscription", missing, "t", None)
    assert ei.value.sqlstate == "42704" and missing in ei.value.message
    for args in ((), (missing,), (None, "t"), ("", "t"), (missing, None), (missing, "")):
        with pytest.raises(EngineError) as ei:
            await call(registry, ctx, "confirm_subscription", *args)
        assert (ei.value.sqlstate, ei.value.message) == (
            "22023", "Please provide a valid SNS subscription ARN and a valid token.")
    with pytest.raises(EngineError) as ei:
        await call(registry, ctx, "confirm_subscription", missing, "t", "us-east-1", "extra")
    assert ei.value.sqlstate == "22023" and "at most 3" in ei.value.message


async def test_confirm_subscription_not_installed(registry, ctx):
    with pytest.raises(EngineError) as ei:
        await call(registry, ctx, "confirm_subscription", "arn", "t")
    assert ei.value.sqlstate == "42883"
    assert "iasql_install('aws_sns')" in ei.value.hint


async def test_a_database_made_before_these_rpcs_gets_them(registry, ctx, dsn, aws):
    """Metadata made by a proxy without these RPCs (its marker has no or another RPC digest) gets
    their probes, and the stubs of installed modules, at the next engine call."""
    await _install(registry, ctx, dsn, "aws_sns")
    await sql(dsn, "DROP FUNCTION public.confirm_subscription(VARIADIC text[]); "
                   "DROP FUNCTION iasql_args.confirm_subscription(VARIADIC text[]); "
                   "DROP FUNCTION iasql_args.log_group_tail(varchar, varchar); "
                   "COMMENT ON TABLE public.iasql_audit_log IS 'iasql-proxy metadata 9 (0.1.0)'")
    await call(registry, ctx, "iasql_modules_installed")
    assert await sql(dsn, "SELECT to_regprocedure('public.confirm_subscription(text[])') IS NOT NULL, "
                          "to_regprocedure('iasql_args.confirm_subscription(text[])') IS NOT NULL, "
                          "to_regprocedure('iasql_args.log_group_tail(varchar, varchar)') IS NOT NULL, "
                          "to_regprocedure('public.log_group_tail(varchar, varchar)') IS NOT NULL") == [
        (True, True, True, False)]  # aws_cloudwatch is not installed: no stub
    topic = aws("sns").create_topic(Name="rpc-old-db")["TopicArn"]
    [(_, status, _)] = await call(registry, ctx, "confirm_subscription", topic, "t")
    assert status == "OK"


class _FakeCodebuild:
    """A CodeBuild whose build stays IN_PROGRESS (moto ends builds at the first read)."""

    def __init__(self):
        self.polls = 0

    async def call(self, service, region, operation, **kw):
        assert (service, operation) == ("codebuild", "batch_get_builds")
        self.polls += 1
        return {"builds": [{"id": kw["ids"][0], "buildStatus": "IN_PROGRESS"}]}


class _FakeSession:
    def __init__(self):
        import asyncio
        import types

        self.ctx = types.SimpleNamespace(cancelled=asyncio.Event())

    def check_cancelled(self):
        if self.ctx.cancelled.is_set():
            raise EngineError("57014", "canceling statement due to user request")


async def test_start_build_wait_ends_at_its_limit_and_on_cancel(monkeypatch):
    import asyncio

    from engine.modules import aws_codebuild

    monkeypatch.setattr(aws_codebuild, "BUILD_WAIT_SECONDS", 1.5)
    cloud, s = _FakeCodebuild(), _FakeSession()
    got = await aws_codebuild._wait_for_build(s, cloud, "us-east-1", {"id": "p:1"})
    assert got == {"id": "p:1", "buildStatus": "IN_PROGRESS"}  # recorded as it is then
    assert cloud.polls == 3  # at once, after 1 s, and a last look at the limit (1.5 s)
    monkeypatch.setattr(aws_codebuild, "BUILD_WAIT_SECONDS", 60.0)
    cloud, s = _FakeCodebuild(), _FakeSession()
    asyncio.get_running_loop().call_later(0.2, s.ctx.cancelled.set)
    with pytest.raises(EngineError) as ei:
        await aws_codebuild._wait_for_build(s, cloud, "us-east-1", {"id": "p:1"})
    # the cancel ends the pause between two looks: no second look at the build (due after 1 s)
    assert ei.value.sqlstate == "57014" and cloud.polls == 1
