"""Contract point 10 (progress and cancel).

Progress: psql prints the engine's NOTICE lines during iasql_install (real engine). Streaming and
cancel use an in-process proxy whose interceptor has a TEST registry: ``iasql_sleep(seconds)``
reports progress and sleeps in small steps, checking ``ctx.cancelled`` (the engine's own safe-point
contract), so a CancelRequest must stop it with 57014 quickly, and the connection must be usable
afterwards (no stray server-side cancel hitting the next statement).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import threading
import time

import psycopg
import pytest
from psycopg import errors as pe

from engine.rpc import Argument, Column, EngineError, Function, Registry
from proxy.config import parse_config
from proxy.intercept.dispatch import Interceptor
from proxy.intercept.simple import QueryInterceptor
from proxy.wire import frontend as F
from tests.intercept.conftest import PASSWORD, InProcessProxy, psql
from tests.intercept.helpers import data_rows, errors_in
from tests.support.faults import RawConn, cancel_request, error_fields

#: The test registry's own database (made and dropped by ``test_proxy``).
DB = "progress_cancel_db"

pytestmark = pytest.mark.timeout(60)


def test_psql_prints_install_progress(iasql_proxy, fresh_db):
    res = psql(iasql_proxy.port, fresh_db, "SELECT module_name, created_table_name FROM iasql_install('aws_iam')")
    assert res.returncode == 0, res.stderr
    notices = [ln for ln in res.stderr.splitlines() if ln.startswith("NOTICE:  ")]
    assert "NOTICE:  installing aws_account@0.1.0" in notices
    assert "NOTICE:  installing aws_iam@0.1.0" in notices
    assert notices.index("NOTICE:  installing aws_account@0.1.0") < notices.index("NOTICE:  installing aws_iam@0.1.0")
    assert re.search(r"^ aws_iam@0\.1\.0 +\| iam_role", res.stdout, re.M), res.stdout


# -- a test registry on an in-process proxy ----------------------------------------------------

class Probe:
    """What the test registry's functions report to the test thread."""

    def __init__(self):
        self.started = threading.Event()
        self.finished: list[str] = []


def make_registry(probe: Probe) -> Registry:
    reg = Registry()

    async def iasql_sleep(ctx, seconds):
        probe.started.set()
        deadline = time.monotonic() + float(seconds)
        step = 0
        while time.monotonic() < deadline:
            if ctx.cancelled.is_set():
                probe.finished.append("cancelled")
                raise EngineError("57014", "canceling statement due to user request")
            if step % 10 == 0:
                ctx.progress(f"slept {step * 0.05:.2f} s")
            step += 1
            await asyncio.sleep(0.05)
        probe.finished.append("done")
        return [(int(seconds),)]

    async def iasql_slow_write(ctx, v, seconds):
        probe.started.set()
        await asyncio.sleep(float(seconds))
        await ctx.run("CREATE TABLE IF NOT EXISTS slow_written (v int)")
        await ctx.run("INSERT INTO slow_written VALUES ($1)", (v,))
        probe.finished.append(f"wrote {v}")
        return [(v,)]

    reg.register(Function("iasql_sleep", (Argument("seconds", "int4", default=30),), (Column("slept", "int4"),),
                          iasql_sleep))
    reg.register(Function("iasql_slow_write", (Argument("v", "int4"), Argument("seconds", "float8")),
                          (Column("written", "int4"),), iasql_slow_write))
    return reg


@pytest.fixture(scope="module")
def probe():
    return Probe()


@pytest.fixture(scope="module")
def test_proxy(pg, probe, tmp_path_factory):
    userlist = tmp_path_factory.mktemp("ul") / "userlist.txt"
    userlist.write_text(f'"postgres" "{PASSWORD}"\n')
    cfg = parse_config(f"[databases]\n* = host=127.0.0.1 port={pg.port}\n[proxy]\nlisten_addr = 127.0.0.1\n"
                       f"listen_port = 0\nauth_type = scram-sha-256\nauth_file = {userlist}\n"
                       f"server_tls_sslmode = disable\n[engine]\nenabled = false\n")

    def setup(app):
        app.interceptor = Interceptor(QueryInterceptor(make_registry(probe)))

    # a database of its own: the test registry's metadata (probes of these two functions only) must
    # not be what a proxy with the full registry later finds, already marked current, in postgres
    with psycopg.connect(pg.dsn(), autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{DB}"')
        c.execute(f'CREATE DATABASE "{DB}"')
    proxy = InProcessProxy(cfg, setup).start()
    yield proxy
    proxy.stop()
    with psycopg.connect(pg.dsn(), autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')


def dsn(proxy) -> str:
    return f"host=127.0.0.1 port={proxy.port} user=postgres password={PASSWORD} dbname={DB} sslmode=disable"


def test_progress_arrives_while_the_call_runs(test_proxy):
    with RawConn(test_proxy.port, timeout=10) as conn:
        conn.startup("postgres", DB, password=PASSWORD)
        t0 = time.monotonic()
        conn.send(F.Query("SELECT * FROM iasql_sleep(2)").encode())
        # as from PostgreSQL: the RowDescription when execution starts, then the function's notices
        assert conn.read_message()[0] == "T"
        t, payload = conn.read_message()
        first_at = time.monotonic() - t0
        assert t == "N" and error_fields(payload).message == "slept 0.00 s"
        assert first_at < 1.0, f"the first NOTICE came after {first_at:.2f} s, not while the call ran"
        rest = conn.read_until_ready()
        assert time.monotonic() - t0 >= 1.9
        assert [error_fields(p).message for t, p in rest if t == "N"][:2] == ["slept 0.50 s", "slept 1.00 s"]
        assert data_rows(rest) == [["2"]] and rest[-1] == ("Z", b"I")


def _cancel_during(conn: psycopg.Connection, probe: Probe, run) -> tuple[BaseException | None, float]:
    probe.started.clear()
    box: list[BaseException | None] = [None]

    def target():
        try:
            run()
        except BaseException as e:  # noqa: BLE001
            box[0] = e

    th = threading.Thread(target=target)
    th.start()
    assert probe.started.wait(10), "the call never started"
    time.sleep(0.2)
    t0 = time.monotonic()
    # cancel_safe(), not cancel(): libpq's blocking PQcancel runs with the GIL held, which would
    # deadlock with this in-process proxy (psql's Ctrl-C below is the blocking, other-process case)
    conn.cancel_safe(timeout=5)
    th.join(10)
    assert not th.is_alive(), "the cancelled call did not end"
    return box[0], time.monotonic() - t0


@pytest.mark.parametrize("with_params", [False, True], ids=["simple", "extended"])
def test_cancel_stops_the_call_with_57014(test_proxy, probe, with_params):
    conn = psycopg.connect(dsn(test_proxy), autocommit=True, connect_timeout=5)
    try:
        if with_params:
            run = lambda: conn.execute("SELECT * FROM iasql_sleep(%s)", [30])  # noqa: E731
        else:
            run = lambda: conn.execute("SELECT * FROM iasql_sleep(30)")  # noqa: E731
        err, took = _cancel_during(conn, probe, run)
        assert isinstance(err, pe.QueryCanceled), repr(err)
        assert err.diag.sqlstate == "57014"
        assert took < 2.0, f"cancel took {took:.2f} s"
        assert probe.finished[-1] == "cancelled"
        # the connection is usable: a run of statements, none hit by a late server-side cancel
        for _ in range(5):
            assert conn.execute("SELECT pg_sleep(0.05), 42").fetchone()[1] == 42
        assert conn.execute("SELECT * FROM iasql_sleep(0)").fetchall() == [(0,)]
    finally:
        conn.close()


def test_psql_ctrl_c(test_proxy, probe):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGPASSWORD"] = PASSWORD
    probe.started.clear()
    proc = subprocess.Popen([shutil.which("psql"), "-X", dsn(test_proxy), "-c", "SELECT * FROM iasql_sleep(30)"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert probe.started.wait(10)
        time.sleep(0.2)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert time.monotonic() - t0 < 2.0
    assert "ERROR:  canceling statement due to user request" in err, err
    assert "NOTICE:  slept 0.00 s" in err
    assert proc.returncode == 1
    assert probe.finished[-1] == "cancelled"


def test_raw_cancel_request(test_proxy, probe):
    with RawConn(test_proxy.port, timeout=10) as conn:
        conn.startup("postgres", DB, password=PASSWORD)
        probe.started.clear()
        conn.send(F.Query("SELECT 1; SELECT * FROM iasql_sleep(30); SELECT 2").encode())
        assert probe.started.wait(10)
        t0 = time.monotonic()
        cancel_request(test_proxy.port, *conn.backend_key)
        msgs = conn.read_until_ready()
        assert time.monotonic() - t0 < 2.0
        [err] = errors_in(msgs)
        assert (err.sqlstate, err.message) == ("57014", "canceling statement due to user request")
        assert data_rows(msgs) == [["1"]]  # SELECT 2 was skipped
        assert msgs[-1] == ("Z", b"I")
        msgs = conn.query("SELECT 3")
        assert data_rows(msgs) == [["3"]] and errors_in(msgs) == []


def _written(pg) -> list[int]:
    with psycopg.connect(pg.dsn(DB), autocommit=True) as c:
        if c.execute("SELECT to_regclass('slow_written')").fetchone()[0] is None:
            return []
        return sorted(r[0] for r in c.execute("SELECT v FROM slow_written"))


def _wait_for(probe, what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while what not in probe.finished and time.monotonic() < deadline:
        time.sleep(0.05)
    assert what in probe.finished, probe.finished


def test_client_that_leaves_during_a_call_the_text_still_commits(test_proxy, probe, pg):
    """As with a plpgsql function on PostgreSQL: the client goes away during the call, the call runs
    to its end and the autocommit text commits."""
    conn = RawConn(test_proxy.port, timeout=10)
    conn.startup("postgres", DB, password=PASSWORD)
    probe.started.clear()
    conn.send(F.Query("SELECT * FROM iasql_slow_write(7, 0.5)").encode())
    assert probe.started.wait(10)
    conn.close()
    _wait_for(probe, "wrote 7")
    deadline = time.monotonic() + 10
    while 7 not in _written(pg) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert 7 in _written(pg)


def test_client_that_leaves_mid_batch_without_sync_is_rolled_back(test_proxy, probe, pg):
    """Extended protocol without Sync: PostgreSQL runs the function, then sees the client gone and
    rolls the unfinished transaction back; so does the proxy."""
    conn = RawConn(test_proxy.port, timeout=10)
    conn.startup("postgres", DB, password=PASSWORD)
    probe.started.clear()
    conn.send(F.Parse("", "SELECT * FROM iasql_slow_write($1, 0.5)").encode()
              + F.Bind("", "", (), (b"8",), ()).encode() + F.Execute("", 0).encode() + F.Flush().encode())
    assert probe.started.wait(10)
    conn.close()
    _wait_for(probe, "wrote 8")
    time.sleep(1.0)
    assert 8 not in _written(pg)
