"""PgBouncer's timeouts (issue 16, "Timeouts"): the same keys and defaults, and each sends the
client the error PgBouncer sends (FATAL 08P01 with PgBouncer's text), then closes it; a server
connection in a query or a transaction is closed with it (Postgres rolls the transaction back),
and the pool's accounting returns to idle.

Timeouts are set to 1 second here and awaited with generous deadlines: what is tested is the
error and what is left behind, never how long it took.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid

import psycopg
import pytest

from proxy.config import parse_config
from proxy.embedded.postgres import free_port
from proxy.wire import frontend as F
from tests.ops.helpers import psql, table
from tests.support.faults import RawConn, ServerFatal, data_rows, errors_in
from tests.support.proxy import ProxyProcess

pytestmark = pytest.mark.timeout(120)

KEYS = {"idle_transaction_timeout": 0.0, "client_idle_timeout": 0.0, "query_timeout": 0.0,
        "server_connect_timeout": 15.0, "server_login_retry": 15.0, "cancel_wait_timeout": 10.0}


@pytest.fixture
def make_proxy(proxy_ini, tmp_path):
    started: list[ProxyProcess] = []

    def make(databases: str | None = None, **keys: object) -> ProxyProcess:
        keys.setdefault("admin_users", "postgres")
        proc = ProxyProcess(proxy_ini(databases, **keys), tmp_path / f"proxy{len(started)}").start()
        started.append(proc)
        return proc

    yield make
    for p in started:
        p.stop()


def login(proxy, dbname: str = "postgres", timeout: float = 20.0) -> RawConn:
    c = RawConn(proxy.port, timeout=timeout)
    c.startup("postgres", dbname, password="postgres")
    return c


def fatal_then_closed(c: RawConn) -> tuple[str | None, str, str]:
    """Read until the proxy closes the connection (socket.timeout, a failure, if it never does);
    returns the last ErrorResponse's (severity, SQLSTATE, message)."""
    got = c.read_until_closed()
    c.close()
    errs = errors_in(got)
    assert errs, f"closed without an ErrorResponse: {got!r}"
    return errs[-1].get("S"), errs[-1].sqlstate, errs[-1].message


def pool_row(proxy, dbname: str = "postgres") -> dict[str, str]:
    proc = psql(proxy, "SHOW POOLS")
    assert proc.returncode == 0, proc.stderr
    _, rows = table(proc.stdout)
    return next((r for r in rows if r["database"] == dbname and r["user"] == "postgres"), {})


def wait_pool_idle(proxy, dbname: str = "postgres", timeout: float = 30.0) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        row = pool_row(proxy, dbname)
        if all(row.get(k, "0") == "0" for k in ("cl_active", "cl_waiting", "sv_active", "sv_tested", "sv_login")):
            return row
        if time.monotonic() > deadline:
            raise AssertionError(f"pool not idle: {row}")
        time.sleep(0.2)


def fresh_table(pg) -> str:
    name = f"to_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg.dsn(), autocommit=True) as c:
        c.execute(f"CREATE TABLE {name} (v int)")
    return name


def count(pg, name: str) -> int:
    with psycopg.connect(pg.dsn(), autocommit=True) as c:
        return c.execute(f"SELECT count(*) FROM {name}").fetchone()[0]


# -- the keys ---------------------------------------------------------------------------------------

def test_pgbouncer_timeout_keys_have_pgbouncers_defaults():
    base = "[databases]\n* = host=h\n[proxy]\nauth_type = trust\n"
    cfg = parse_config(base)
    assert {k: getattr(cfg, k) for k in KEYS} == KEYS
    cfg = parse_config(base + "".join(f"{k} = 1500ms\n" for k in KEYS))
    assert {k: getattr(cfg, k) for k in KEYS} == {k: 1.5 for k in KEYS}


def test_show_config_lists_the_timeouts(make_proxy):
    proxy = make_proxy(idle_transaction_timeout=7)
    proc = psql(proxy, "SHOW CONFIG")
    assert proc.returncode == 0, proc.stderr
    _, rows = table(proc.stdout)
    conf = {r["key"]: r for r in rows}
    assert conf["idle_transaction_timeout"]["value"] == "7"
    for key in KEYS:
        assert key in conf


# -- idle_transaction_timeout ---------------------------------------------------------------------

@pytest.mark.parametrize("pool_mode", ["transaction", "session"])
def test_idle_transaction_timeout(make_proxy, pg, pool_mode):
    """A client idle in a transaction gets FATAL 08P01 "idle transaction timeout"; its transaction
    is rolled back, its server connection is closed, and the pool serves the next client."""
    proxy = make_proxy(pool_mode=pool_mode, default_pool_size=1, idle_transaction_timeout=1)
    name = fresh_table(pg)
    c = login(proxy)
    c.query("BEGIN")
    c.query(f"INSERT INTO {name} VALUES (1)")
    assert fatal_then_closed(c) == ("FATAL", "08P01", "idle transaction timeout")
    assert count(pg, name) == 0
    wait_pool_idle(proxy)
    nxt = login(proxy)
    assert data_rows(nxt.query("SELECT 7")) == [["7"]]
    nxt.terminate()


def test_idle_transaction_timeout_leaves_busy_and_idle_clients_alone(make_proxy):
    """A transaction that keeps working, and a client idle outside any transaction, are not ended."""
    proxy = make_proxy(pool_mode="transaction", default_pool_size=2, idle_transaction_timeout=1)
    worker, idler = login(proxy), login(proxy)
    worker.query("BEGIN")
    for _ in range(6):
        worker.query("SELECT pg_sleep(0.5)")
    assert data_rows(worker.query("SELECT 1")) == [["1"]]
    worker.query("COMMIT")
    assert data_rows(idler.query("SELECT 2")) == [["2"]]
    worker.terminate()
    idler.terminate()


# -- client_idle_timeout --------------------------------------------------------------------------------

@pytest.mark.parametrize("pool_mode", ["transaction", "session"])
def test_client_idle_timeout(make_proxy, pool_mode):
    proxy = make_proxy(pool_mode=pool_mode, default_pool_size=1, client_idle_timeout=1)
    c = login(proxy)
    assert data_rows(c.query("SELECT 1")) == [["1"]]
    assert fatal_then_closed(c) == ("FATAL", "08P01", "client_idle_timeout")
    wait_pool_idle(proxy)
    nxt = login(proxy)
    assert data_rows(nxt.query("SELECT 8")) == [["8"]]
    nxt.terminate()


def test_client_idle_timeout_ends_a_client_that_stops_mid_message(make_proxy):
    """A client that sent part of a message and stalls holds no server connection, and is ended
    by client_idle_timeout like any idle client."""
    proxy = make_proxy(pool_mode="transaction", default_pool_size=1, client_idle_timeout=1)
    c = login(proxy)
    c.send(F.Query("SELECT 1").encode()[:7])
    assert fatal_then_closed(c) == ("FATAL", "08P01", "client_idle_timeout")
    wait_pool_idle(proxy)


# -- query_timeout ---------------------------------------------------------------------------------------

def test_query_timeout(make_proxy, pg):
    """A query running longer gets FATAL 08P01 "query timeout"; the server connection is closed
    (never given to another client) and the pool serves the next client."""
    proxy = make_proxy(pool_mode="transaction", default_pool_size=1, query_timeout=1)
    c = login(proxy)
    c.send(F.Query("SELECT pg_sleep(4)").encode())
    assert fatal_then_closed(c) == ("FATAL", "08P01", "query timeout")
    wait_pool_idle(proxy)
    nxt = login(proxy)
    assert data_rows(nxt.query("SELECT 9")) == [["9"]]
    nxt.terminate()


def test_query_timeout_while_waiting_for_a_connection(make_proxy):
    """A client whose query waits for a server connection longer than query_timeout gets
    PgBouncer's FATAL 08P01 "query_timeout" (shorter than query_wait_timeout here)."""
    proxy = make_proxy(pool_mode="transaction", default_pool_size=1, query_timeout=1, query_wait_timeout=60)
    holder = login(proxy)
    holder.query("BEGIN")  # holds the only connection (not a query: query_timeout does not apply)
    waiter = login(proxy)
    waiter.send(F.Query("SELECT 1").encode())
    assert fatal_then_closed(waiter) == ("FATAL", "08P01", "query_timeout")
    assert data_rows(holder.query("SELECT 3")) == [["3"]]
    holder.query("COMMIT")
    holder.terminate()


def test_queries_shorter_than_query_timeout_run(make_proxy):
    proxy = make_proxy(pool_mode="transaction", default_pool_size=1, query_timeout=3)
    c = login(proxy)
    for _ in range(4):
        assert data_rows(c.query("SELECT pg_sleep(0.5), 1"))[0][1] == "1"
    c.terminate()


# -- server_connect_timeout and server_login_retry --------------------------------------------------------

@pytest.fixture
def silent_server():
    """A TCP port that accepts connections (the kernel's backlog) and never says a word."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    yield s.getsockname()[1]
    s.close()


def _expect_login_error(proxy, dbname: str) -> tuple[str | None, str, str]:
    with pytest.raises(ServerFatal) as info:
        login(proxy, dbname, timeout=30)
    return info.value.severity, info.value.sqlstate, info.value.message


def test_server_connect_timeout_and_login_retry(make_proxy, pg, silent_server):
    """A server that does not answer within server_connect_timeout: the client waiting for it
    gets query_wait_timeout (the server is tried again after server_login_retry, as PgBouncer
    does), and a client that arrives meanwhile fails at once with PgBouncer's cached error."""
    databases = f"dead = host=127.0.0.1 port={silent_server} dbname=postgres\n* = host=127.0.0.1 port={pg.port}"
    proxy = make_proxy(databases, pool_mode="transaction", server_connect_timeout=1, server_login_retry=60,
                       query_wait_timeout=3)
    assert _expect_login_error(proxy, "dead") == ("FATAL", "08P01", "query_wait_timeout")
    assert _expect_login_error(proxy, "dead") == (
        "FATAL", "08P01", "server login has been failing, cached error: connect timeout (server_login_retry)")
    nxt = login(proxy)  # other databases are not affected
    assert data_rows(nxt.query("SELECT 4")) == [["4"]]
    nxt.terminate()
    assert "event=server_login_failed" in proxy.log() and "connect timeout" in proxy.log()


def test_server_refusing_connections_fails_fast_during_login_retry(make_proxy, pg):
    port = free_port()  # nothing listens there
    databases = f"gone = host=127.0.0.1 port={port} dbname=postgres\n* = host=127.0.0.1 port={pg.port}"
    proxy = make_proxy(databases, pool_mode="session", server_login_retry=60, query_wait_timeout=2)
    assert _expect_login_error(proxy, "gone") == ("FATAL", "08P01", "query_wait_timeout")
    assert _expect_login_error(proxy, "gone") == (
        "FATAL", "08P01", "server login has been failing, cached error: connect failed (server_login_retry)")


@pytest.mark.parametrize("pool_mode", ["session", "transaction"])
def test_login_waiting_for_a_server_that_never_answered_ends_at_client_login_timeout(make_proxy, pg, pool_mode):
    """PgBouncer 1.18 against the same dead port ends the login after client_login_timeout with
    ``client_login_timeout (server down)``; query_wait_timeout, when longer, does not keep it."""
    port = free_port()
    databases = f"gone = host=127.0.0.1 port={port} dbname=postgres\n* = host=127.0.0.1 port={pg.port}"
    proxy = make_proxy(databases, pool_mode=pool_mode, client_login_timeout=2, query_wait_timeout=60,
                       server_login_retry=1)
    t0 = time.monotonic()
    assert _expect_login_error(proxy, "gone") == ("FATAL", "08P01", "client_login_timeout (server down)")
    assert time.monotonic() - t0 < 30  # not query_wait_timeout's 60 s (the read would time out first)
    nxt = login(proxy)  # a database whose server answers logs in as before
    assert data_rows(nxt.query("SELECT 5")) == [["5"]]
    nxt.terminate()


def test_session_login_waiting_for_a_busy_pool_is_a_query_wait(make_proxy):
    """A session pool that has welcomed clients before (its server answers, all its connections are
    taken): the next login waits query_wait_timeout, not client_login_timeout."""
    proxy = make_proxy(pool_mode="session", default_pool_size=1, client_login_timeout=1, query_wait_timeout=4)
    holder = login(proxy)
    t0 = time.monotonic()
    assert _expect_login_error(proxy, "postgres") == ("FATAL", "08P01", "query_wait_timeout")
    assert time.monotonic() - t0 >= 3.5
    holder.terminate()


def test_server_login_retry_zero_reports_the_failure_at_once(make_proxy, pg):
    port = free_port()
    databases = f"gone = host=127.0.0.1 port={port} dbname=postgres\n* = host=127.0.0.1 port={pg.port}"
    proxy = make_proxy(databases, pool_mode="transaction", server_login_retry=0, query_wait_timeout=30)
    severity, code, message = _expect_login_error(proxy, "gone")
    assert (severity, code) == ("FATAL", "08006") and "could not connect to server" in message


# -- cancel_wait_timeout ------------------------------------------------------------------------------------

def test_cancel_still_forwarded_with_cancel_wait_timeout(make_proxy):
    proxy = make_proxy(pool_mode="transaction", default_pool_size=1, cancel_wait_timeout=1)
    c = login(proxy)
    assert c.backend_key is not None
    c.send(F.Query("SELECT pg_sleep(20)").encode())
    time.sleep(0.5)
    cancel = RawConn(proxy.port)
    cancel.send(F.CancelRequest(*c.backend_key).encode())
    cancel.close()
    got = c.read_until_ready()
    assert [e.sqlstate for e in errors_in(got)] == ["57014"]
    c.terminate()


# -- many clients at once --------------------------------------------------------------------------------------

def test_idle_transactions_no_longer_wedge_the_pool(make_proxy):
    """Clients that open a transaction and go idle held the pool for good; with
    idle_transaction_timeout they are ended and every other client is served."""
    proxy = make_proxy(pool_mode="transaction", default_pool_size=2, idle_transaction_timeout=1,
                       query_wait_timeout=60)
    idle = [login(proxy) for _ in range(2)]
    for c in idle:
        c.query("BEGIN")
    results: list = []

    def worker(i: int) -> None:
        with psycopg.connect(proxy.dsn(connect_timeout="10"), autocommit=True) as conn:
            results.append(conn.execute("SELECT %s::int", (i,)).fetchone()[0])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == list(range(6))
    for c in idle:
        assert fatal_then_closed(c) == ("FATAL", "08P01", "idle transaction timeout")
    wait_pool_idle(proxy)
