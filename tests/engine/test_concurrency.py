"""Per-database lock, lock_timeout, concurrent commits from two OS processes, crash recovery."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from engine import EngineSettings, build_registry
from engine.core.session import ENGINE_LOCK, EngineSession
from engine.rpc import EngineError
from tests.engine.support import Ctx, call, sql

ROOT = Path(__file__).resolve().parents[2]


def worker(dsn: str, db: str, endpoint: str, steps: list, sleep: float = 0.0) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.engine.worker", dsn, db, endpoint, str(sleep), json.dumps(steps)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def results(proc: subprocess.Popen, timeout: float = 90) -> list[dict]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return [json.loads(line) for line in out.splitlines() if line.strip() and '"progress"' not in line]


@pytest.fixture
async def s3(registry, ctx, dsn):
    await call(registry, ctx, "iasql_install", "aws_s3")
    await sql(dsn, "INSERT INTO aws_credentials (access_key_id, secret_access_key) VALUES ('testing', 'testing')")


async def test_lock_wait_gives_up_naming_the_holder(registry, ctx, dsn, s3, settings):
    holder = await psycopg.AsyncConnection.connect(dsn + " application_name=holder-app", autocommit=True)
    try:
        await holder.execute("SELECT pg_advisory_lock(%s, %s)", ENGINE_LOCK)
        pid = holder.info.backend_pid
        short = build_registry(EngineSettings(aws_endpoint_url=settings.aws_endpoint_url, lock_wait_timeout=0.5))
        try:
            t0 = time.monotonic()
            with pytest.raises(EngineError) as ei:
                await call(short, ctx, "iasql_install", "aws_iam")
            assert 0.4 < time.monotonic() - t0 < 5
        finally:
            short.engine_state.aws.close()
        assert ei.value.sqlstate == "55P03"
        assert f"held by pid {pid}" in ei.value.message and 'application "holder-app"' in ei.value.message
        assert any("waiting for another IaSQL call" in line for line in ctx.lines)
    finally:
        await holder.close()
    # released: the call goes through now
    await call(registry, ctx, "iasql_install", "aws_iam")


async def test_engine_statements_wait_for_locks_like_the_callers_own_sql(registry, ctx, dsn, aws, s3):
    """The engine's statements are the caller's statements: a lock held by another session makes
    them wait as the caller's own SQL would (no separate lock_timeout), and they go on when it ends."""
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO bucket (name) VALUES ('locked-row')")
    user = await psycopg.AsyncConnection.connect(dsn)
    try:
        await user.execute("LOCK TABLE bucket IN ACCESS EXCLUSIVE MODE")  # an open user transaction
        task = asyncio.ensure_future(call(registry, ctx, "iasql_commit"))
        await asyncio.sleep(1.5)
        assert not task.done()
        waiting = await sql(dsn, "SELECT count(*) FROM pg_locks WHERE relation = 'bucket'::regclass AND NOT granted")
        assert waiting == [(1,)]
    finally:
        await user.rollback()
        await user.close()
    await asyncio.wait_for(task, 30)
    assert [b["Name"] for b in aws("s3").list_buckets()["Buckets"]] == ["locked-row"]


async def test_two_processes_commit_one_after_the_other(ctx, dsn, dbname, aws, s3, moto_server):
    steps = lambda name: [["call", "iasql_begin"], ["sql", f"INSERT INTO bucket (name) VALUES ('{name}-1'), ('{name}-2')"],
                          ["call", "iasql_commit", name]]
    a = worker(dsn, dbname, moto_server.endpoint_url, steps("proc-a"), sleep=0.2)
    b = worker(dsn, dbname, moto_server.endpoint_url, steps("proc-b"), sleep=0.2)
    ra, rb = results(a), results(b)
    assert [r for r in ra + rb if "error" in r] == []
    names = sorted(x["Name"] for x in aws("s3").list_buckets()["Buckets"])
    assert names == ["proc-a-1", "proc-a-2", "proc-b-1", "proc-b-2"]
    assert sorted(r[0] for r in await sql(dsn, "SELECT name FROM bucket")) == names
    # START/END_COMMIT pairs never interleave
    log = await sql(dsn, "SELECT change_type, message FROM iasql_audit_log WHERE change_type IN "
                         "('START_COMMIT', 'END_COMMIT', 'OPEN_TRANSACTION', 'CLOSE_TRANSACTION') ORDER BY id")
    kinds = [k for k, _ in log]
    assert kinds == ["OPEN_TRANSACTION", "START_COMMIT", "END_COMMIT", "CLOSE_TRANSACTION"] * 2
    assert log[1][1] != log[5][1]


async def test_begin_keeps_the_lock_only_when_no_transaction_is_open(registry, ctx, dsn, dbname, s3):
    """Two begins at once: the second looks (no transaction), the first opens one and lets the
    lock go, the second takes the lock. It must then let the lock go again (so the first can
    commit) and wait, not fail: ``lock_if_no_transaction`` answers False and holds nothing."""
    other = Ctx(dsn=dsn, database=dbname)
    probe = await psycopg.AsyncConnection.connect(dsn, autocommit=True)

    async def lock_free() -> bool:
        async with probe.transaction():
            return (await (await probe.execute("SELECT pg_try_advisory_xact_lock(%s, %s)", ENGINE_LOCK)).fetchone())[0]

    try:
        await call(registry, ctx, "iasql_begin")  # the first session's transaction is open
        async with EngineSession(await other.open(), registry.engine_state, "iasql_begin") as s:
            assert await s.lock_if_no_transaction() is False
            assert await lock_free()  # the second session took it and gave it back
        await other.caller.commit()
        await call(registry, ctx, "iasql_commit")
        async with EngineSession(await other.open(), registry.engine_state, "iasql_begin") as s:
            assert await s.lock_if_no_transaction() is True
            assert not await lock_free()  # kept until the second session's transaction ends
        await other.caller.rollback()
        assert await lock_free()
    finally:
        await probe.close()
        await other.close()


async def test_killed_mid_commit_then_rerun_converges(registry, ctx, dsn, dbname, aws, s3, moto_server):
    names = [f"crash-{i}" for i in range(1, 6)]
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO bucket (name) SELECT unnest(%s::text[])", (names,))
    proc = worker(dsn, dbname, moto_server.endpoint_url, [["call", "iasql_commit"]], sleep=0.5)
    seen = 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # wait until at least two creates started
        line = await asyncio.to_thread(proc.stdout.readline)
        if '"create bucket' in line:
            seen += 1
            if seen == 2:
                break
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    created = [b["Name"] for b in aws("s3").list_buckets()["Buckets"]]
    assert 1 <= len(created) < len(names)
    # the lock died with the process; re-running the commit finishes the job with no row lost
    await call(registry, ctx, "iasql_commit")
    assert sorted(b["Name"] for b in aws("s3").list_buckets()["Buckets"]) == names
    rows = await sql(dsn, "SELECT name, created_at IS NOT NULL FROM bucket ORDER BY name")
    assert rows == [(n, True) for n in names]
    log = await sql(dsn, "SELECT change_type, change->>'status' FROM iasql_audit_log "
                         "WHERE change_type IN ('START_COMMIT', 'END_COMMIT') ORDER BY id")
    # the killed commit's rows went with its transaction (rolled back when its connection died)
    assert log == [("START_COMMIT", None), ("END_COMMIT", "ok")]
