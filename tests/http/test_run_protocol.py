"""The /run protocol over a real WebSocket client (``websockets``) against a real proxy.

Per statement results arrive as each statement finishes (timestamps against pg_sleep), notices of
an ``iasql_*`` call while it runs, errors with SQLSTATE and position, chunks of a large result,
cancel, and a client that leaves mid-run.
"""

from __future__ import annotations

import asyncio
import json
import time

import psycopg
import pytest
from websockets.asyncio.client import connect

from tests.conftest import ALICE_PASSWORD
from tests.http.conftest import PASSWORD, basic

pytestmark = pytest.mark.timeout(90)


async def open_ws(port, client_tls, user="alice", password=ALICE_PASSWORD, database=None, **kw):
    query = f"?database={database}" if database else ""
    return await connect(f"wss://localhost:{port}/run{query}", ssl=client_tls,
                         additional_headers={"Authorization": basic(user, password)}, **kw)


async def run_script(ws, sql, database=None, on_message=None):
    """Send one script; returns [(seconds since sent, message)] up to and with {"done": true}."""
    t0 = time.monotonic()
    await ws.send(json.dumps({"sql": sql, **({"database": database} if database else {})}))
    out = []
    while True:
        m = json.loads(await asyncio.wait_for(ws.recv(), 60))
        out.append((time.monotonic() - t0, m))
        if on_message is not None:
            await on_message(m)
        if m.get("done"):
            return out


async def test_results_arrive_per_statement_before_the_script_ends(http_proxy, http_db, client_tls):
    async with await open_ws(http_proxy.http_port, client_tls, database=http_db) as ws:
        got = await run_script(ws, "SELECT 1 AS a, NULL AS b; SELECT pg_sleep(1.5); "
                                   "CREATE TEMP TABLE t (v int); INSERT INTO t VALUES (7)")
    msgs = [m for _, m in got]
    assert msgs[0] == {"statement": 0, "text": "SELECT 1 AS a, NULL AS b", "start": 0, "command": "SELECT 1",
                       "columns": ["a", "b"], "types": [23, 25], "rows": [["1", None]]}
    assert [m.get("statement") for m in msgs] == [0, 1, 2, 3, None]
    assert msgs[1]["command"] == "SELECT 1" and msgs[1]["text"] == "SELECT pg_sleep(1.5)"
    assert msgs[3]["command"] == "INSERT 0 1" and "rows" not in msgs[3]
    assert msgs[-1] == {"done": True}
    times = [t for t, _ in got]
    assert times[0] < 1.0, f"statement 0 came at {times[0]:.2f} s: held back until the sleep ended"
    assert times[1] >= 1.4
    assert times[0] + 1.0 < times[1]


async def test_install_then_bucket_in_one_script(http_proxy, http_db, client_tls):
    async with await open_ws(http_proxy.http_port, client_tls, database=http_db) as ws:
        got = [m for _, m in await run_script(ws, "SELECT * FROM iasql_install('aws_s3'); SELECT * FROM bucket;")]
    results = [m for m in got if "command" in m]
    assert [m["statement"] for m in results] == [0, 1], got
    assert results[0]["text"] == "SELECT * FROM iasql_install('aws_s3')"
    assert "module_name" in results[0]["columns"]
    assert any("aws_s3" in (v or "") for row in results[0]["rows"] for v in row)
    assert "name" in results[1]["columns"] and results[1]["command"].startswith("SELECT")
    assert any(m.get("notice", "").startswith("installing aws_s3") for m in got), got
    assert got[-1] == {"done": True}


async def test_error_has_sqlstate_and_position_and_stops_the_run(http_proxy, http_db, client_tls):
    sql = "SELECT 1;\n  SELECT x FROM no_such_table;\nSELECT 3"
    async with await open_ws(http_proxy.http_port, client_tls, database=http_db) as ws:
        got = [m for _, m in await run_script(ws, sql)]
        again = [m for _, m in await run_script(ws, "SELECT 'still usable' AS s")]
    assert got[0]["command"] == "SELECT 1"
    err = got[1]
    assert err["statement"] == 1 and err["text"] == "SELECT x FROM no_such_table"
    assert err["start"] == sql.index("SELECT x")
    assert err["error"] == {"sqlstate": "42P01", "message": 'relation "no_such_table" does not exist',
                            "detail": None, "hint": None, "position": 15}
    # the position points into the script at start + position - 1
    assert sql[err["start"] + err["error"]["position"] - 1:].startswith("no_such_table")
    assert got[2:] == [{"done": True}], "the run goes on after an error"
    assert again[0]["rows"] == [["still usable"]]


async def test_large_result_comes_in_chunks(http_proxy, http_db, client_tls):
    async with await open_ws(http_proxy.http_port, client_tls, database=http_db) as ws:
        got = [m for _, m in await run_script(ws, "SELECT g, repeat('x', 10) FROM generate_series(1, 1200) g")]
    chunks = [m for m in got if "rows" in m]
    assert [len(m["rows"]) for m in chunks] == [500, 500, 200]
    assert ["command" in m for m in chunks] == [False, False, True]
    assert all(m["columns"] == ["g", "repeat"] for m in chunks)
    assert [int(r[0]) for m in chunks for r in m["rows"]] == list(range(1, 1201))


async def test_session_lasts_across_runs(http_proxy, http_db, client_tls):
    async with await open_ws(http_proxy.http_port, client_tls, database=http_db) as ws:
        await run_script(ws, "BEGIN; CREATE TABLE across_runs (v int)")
        got = [m for _, m in await run_script(ws, "INSERT INTO across_runs VALUES (1); ROLLBACK; "
                                                   "SELECT to_regclass('across_runs') IS NULL AS gone")]
    assert got[2]["rows"] == [["t"]]


async def test_progress_notices_stream_while_the_call_runs(sleepy_proxy, client_tls):
    async with await open_ws(sleepy_proxy.http_port, client_tls, user="postgres", password=PASSWORD,
                             database=sleepy_proxy.database) as ws:
        got = await run_script(ws, "SELECT * FROM iasql_sleep(2); SELECT 'after' AS a")
    notices = [(t, m) for t, m in got if "notice" in m]
    assert [m["notice"] for _, m in notices][:3] == ["slept 0.00 s", "slept 0.50 s", "slept 1.00 s"]
    assert all(m["statement"] == 0 and m["severity"] == "NOTICE" for _, m in notices)
    result_at = next(t for t, m in got if m.get("statement") == 0 and "command" in m)
    assert notices[0][0] < 0.8 and notices[2][0] < result_at - 0.5, "notices held back until the call ended"
    assert result_at >= 1.9
    assert [m for _, m in got if "command" in m][1]["rows"] == [["after"]]


async def _cancel_after_first(ws, sql):
    async def on_message(m):
        if m.get("notice") == "slept 0.00 s" or m.get("cancel_now"):
            await ws.send(json.dumps({"cancel": True}))
    return await run_script(ws, sql, on_message=on_message)


async def test_cancel_stops_the_running_call(sleepy_proxy, client_tls):
    probe = sleepy_proxy.probe
    async with await open_ws(sleepy_proxy.http_port, client_tls, user="postgres", password=PASSWORD,
                             database=sleepy_proxy.database) as ws:
        got = await _cancel_after_first(ws, "SELECT * FROM iasql_sleep(30); SELECT 'not run'")
        assert got[-1][0] < 5.0
        errors = [m for _, m in got if "error" in m]
        assert len(errors) == 1 and errors[0]["statement"] == 0
        assert errors[0]["error"]["sqlstate"] == "57014"
        assert probe.finished[-1] == "cancelled"
        assert not any(m.get("statement") == 1 for _, m in got)
        after = [m for _, m in await run_script(ws, "SELECT 42 AS answer")]
        assert after[0]["rows"] == [["42"]]


async def test_cancel_stops_pg_sleep(http_proxy, http_db, client_tls):
    async with await open_ws(http_proxy.http_port, client_tls, database=http_db) as ws:
        async def later():
            await asyncio.sleep(0.5)
            await ws.send(json.dumps({"cancel": True}))
        task = asyncio.create_task(later())
        got = [m for _, m in await run_script(ws, "SELECT 1; SELECT pg_sleep(30); SELECT 3")]
        await task
    assert got[1]["error"]["sqlstate"] == "57014" and got[1]["statement"] == 1
    assert got[2:] == [{"done": True}]


def _sleepers(pg, marker: str) -> int:
    with psycopg.connect(pg.dsn(), autocommit=True) as c:
        return c.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE %s AND state = 'active' "
                         "AND pid <> pg_backend_pid()", [f"%{marker}%"]).fetchone()[0]


async def test_client_leaving_mid_run_cancels_its_statement_only(http_proxy, http_db, client_tls, pg):
    other = await open_ws(http_proxy.http_port, client_tls, database=http_db)
    other_run = asyncio.create_task(run_script(other, "SELECT /* other_one */ pg_sleep(2), 'other' AS who"))
    ws = await open_ws(http_proxy.http_port, client_tls, database=http_db)
    await ws.send(json.dumps({"sql": "SELECT /* leaving_one */ pg_sleep(60)"}))
    deadline = time.monotonic() + 10
    while _sleepers(pg, "leaving_one") == 0:
        assert time.monotonic() < deadline, "the statement never started"
        await asyncio.sleep(0.1)
    await ws.close()
    deadline = time.monotonic() + 10
    while _sleepers(pg, "leaving_one") != 0:
        assert time.monotonic() < deadline, "the departed client's statement still runs"
        await asyncio.sleep(0.1)
    got = [m for _, m in await other_run]
    assert got[0]["rows"] == [["", "other"]] and got[-1] == {"done": True}
    await other.close()
    with psycopg.connect(http_proxy.dsn(user="alice", password=ALICE_PASSWORD, dbname=http_db, sslmode="require"),
                         autocommit=True) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)


async def test_client_leaving_mid_call_cancels_the_call(sleepy_proxy, client_tls):
    probe = sleepy_proxy.probe
    probe.started.clear()
    ws = await open_ws(sleepy_proxy.http_port, client_tls, user="postgres", password=PASSWORD,
                       database=sleepy_proxy.database)
    await ws.send(json.dumps({"sql": "SELECT * FROM iasql_sleep(30)"}))
    first = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert first.get("notice") == "slept 0.00 s"
    n = len(probe.finished)
    await ws.close()
    deadline = time.monotonic() + 5
    while len(probe.finished) == n:
        assert time.monotonic() < deadline, "the call went on after its client left"
        await asyncio.sleep(0.05)
    assert probe.finished[-1] == "cancelled"


async def test_a_bug_in_a_run_ends_that_run_only(sleepy_proxy, client_tls, monkeypatch):
    """An exception inside the endpoint (here: the runner, patched to fail) answers that run with
    XX000 and ``done``; the socket, the endpoint and Postgres clients go on."""
    from proxy.http.runner import ProxyLink

    real = ProxyLink.run

    async def broken(self, script, emit):
        if "boom" in script:
            raise RuntimeError("boom")
        return await real(self, script, emit)

    monkeypatch.setattr(ProxyLink, "run", broken)
    async with await open_ws(sleepy_proxy.http_port, client_tls, user="postgres", password=PASSWORD,
                             database=sleepy_proxy.database) as ws:
        got = [m for _, m in await run_script(ws, "SELECT 'boom'")]
        assert got[0]["error"]["sqlstate"] == "XX000" and "RuntimeError" in got[0]["error"]["message"]
        assert got[1] == {"done": True}
        assert [m for _, m in await run_script(ws, "SELECT 5")][0]["rows"] == [["5"]]
    dsn = (f"host=127.0.0.1 port={sleepy_proxy.port} user=postgres password={PASSWORD} "
           f"dbname={sleepy_proxy.database} "
           "sslmode=require")
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as c:
        assert await (await c.execute("SELECT 1")).fetchone() == (1,)


def _rss_bytes(pid: int) -> int:
    """Resident memory of process ``pid`` and its direct children (``workers = N``), in bytes,
    from ``/proc/<pid>/status`` VmRSS."""
    import os

    pids = [pid]
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                pids += [int(p) for p in f.read().split()]
    except OSError:
        pass
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


async def test_a_client_that_does_not_read_holds_back_its_own_results(http_proxy, http_db, client_tls):
    """300 rows of 1 MB for a client that reads nothing for a while: the proxy keeps only a few
    MiB of them (the link to its own listener stops reading, and then Postgres waits), not the
    whole result; another client is answered meanwhile; then every row arrives intact."""
    pid = http_proxy.process.pid
    sql = "SELECT repeat('x', 1000000) FROM generate_series(1, 300)"
    # max_queue=1: the test client itself buffers at most ~one message before it stops reading
    async with await open_ws(http_proxy.http_port, client_tls, database=http_db,
                             max_size=None, max_queue=1) as slow:
        async with await open_ws(http_proxy.http_port, client_tls, database=http_db) as other:
            await run_script(other, "SELECT 1")  # both sessions exist: their cost is in the baseline
            before = _rss_bytes(pid)
            await slow.send(json.dumps({"sql": sql}))
            peak = before
            deadline = time.monotonic() + 6
            other_took = None
            while time.monotonic() < deadline:
                await asyncio.sleep(0.25)
                peak = max(peak, _rss_bytes(pid))
                if other_took is None and time.monotonic() > deadline - 4:
                    t0 = time.monotonic()
                    got = await asyncio.wait_for(run_script(other, "SELECT 42 AS answer"), 20)
                    other_took = time.monotonic() - t0
                    assert got[0][1]["rows"] == [["42"]]
            grown = (peak - before) / 2**20
            assert grown < 64, f"the proxy grew by {grown:.0f} MiB for a client that does not read"
            assert other_took is not None and other_took < 10
        rows = 0
        while True:
            m = json.loads(await asyncio.wait_for(slow.recv(), 60))
            if m.get("done"):
                break
            assert "error" not in m, m
            for row in m.get("rows", []):
                assert row == ["x" * 1000000]
                rows += 1
            if "command" in m:
                assert m["command"] == "SELECT 300"
    assert rows == 300
