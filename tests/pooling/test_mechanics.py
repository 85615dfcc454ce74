"""Statement pooling and pool mechanics (issue 5, items 5 and 6): statement mode's ERROR for
transaction blocks, query_wait_timeout, server_idle_timeout, server_lifetime, min_pool_size,
reserve_pool_size, broken connections replaced.

Each test starts its own proxy; its clients send a unique ``application_name`` start-up parameter,
which the proxy passes to the server connections it opens, so ``pg_stat_activity`` (read on a
direct connection) counts exactly that test's server connections.
"""

from __future__ import annotations

import time
import uuid

import psycopg
import pytest

from proxy.wire import frontend as F
from tests.pooling.support import normalize, wait_until
from tests.support.faults import RawConn

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def app_name():
    return f"poolmech_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def backends(pg, direct, pool_db, app_name):
    """``backends()``: pids of this test's server connections, read directly on Postgres."""
    mon = psycopg.connect(direct("postgres"), autocommit=True)

    def pids() -> list[int]:
        return [r[0] for r in mon.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND backend_type = 'client backend' "
            "ORDER BY pid", (app_name,)).fetchall()]

    pids.conn = mon  # type: ignore[attr-defined]
    yield pids
    mon.close()


def connect(proxy, db, app_name, **kw) -> psycopg.Connection:
    return psycopg.connect(proxy.dsn(dbname=db, connect_timeout="10", application_name=app_name),
                           autocommit=kw.pop("autocommit", True), **kw)


# -- statement pooling ------------------------------------------------------------------------

def test_statement_mode_refuses_blocks_and_keeps_client(make_proxy, pool_db, app_name):
    proxy = make_proxy(pool_mode="statement", default_pool_size=1)
    with connect(proxy, pool_db, app_name) as c:
        for sql in ("BEGIN", "START TRANSACTION", "begin isolation level serializable"):
            with pytest.raises(psycopg.Error) as err:
                c.execute(sql)
            assert err.value.sqlstate == "25001"
            assert err.value.diag.message_primary == "transaction blocks are not allowed in statement pooling mode"
            assert err.value.diag.severity == "ERROR"
            assert not c.closed and c.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            assert c.execute("SELECT 2").fetchone() == (2,)
        # an implicit multi-statement transaction is one statement in this sense
        cur = c.execute("SELECT 1; SELECT 3")
        assert cur.fetchone() == (1,) and cur.nextset() and cur.fetchone() == (3,)
    with connect(proxy, pool_db, app_name, autocommit=False) as c:   # psycopg's own implicit BEGIN
        with pytest.raises(psycopg.Error) as err:
            c.execute("SELECT 1")
        assert err.value.sqlstate == "25001"


def test_statement_mode_refuses_extended_begin(make_proxy, pool_db):
    """BEGIN sent with Parse/Bind/Execute/Sync: one ErrorResponse 25001, then ReadyForQuery idle,
    and the connection keeps working."""
    proxy = make_proxy(pool_mode="statement", default_pool_size=1)
    c = RawConn(proxy.port, timeout=10)
    try:
        c.startup("postgres", pool_db, password="postgres")
        c.send(F.Parse("", "BEGIN").encode() + F.Bind("", "", (), (), ()).encode() + F.Execute("", 0).encode()
               + F.Sync().encode())
        got = normalize(c.read_until_ready())
        assert got == [("E", "25001", "transaction blocks are not allowed in statement pooling mode"), ("Z", b"I")]
        got = normalize(c.query("SELECT 5"))
        assert [t for t, *_ in got] == ["T", "D", "C", "Z"]
    finally:
        c.terminate()


# -- query_wait_timeout -----------------------------------------------------------------------

def test_query_wait_timeout(make_proxy, pool_db, app_name):
    proxy = make_proxy(pool_mode="transaction", default_pool_size=1, query_wait_timeout=1)
    holder = connect(proxy, pool_db, app_name)
    waiter = connect(proxy, pool_db, app_name)
    try:
        holder.execute("BEGIN")
        holder.execute("SELECT 1")             # the only server connection is in this transaction
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError) as err:
            waiter.execute("SELECT 2")
        waited = time.monotonic() - started
        assert "query_wait_timeout" in str(err.value)
        assert 0.8 <= waited < 4, waited
        holder.execute("COMMIT")
        assert holder.execute("SELECT 3").fetchone() == (3,)
        with connect(proxy, pool_db, app_name) as again:
            assert again.execute("SELECT 4").fetchone() == (4,)
    finally:
        holder.close()
        waiter.close()


# -- server_idle_timeout / server_lifetime / min_pool_size / reserve_pool_size -----------------

def test_server_idle_timeout(make_proxy, pool_db, app_name, backends):
    proxy = make_proxy(pool_mode="transaction", default_pool_size=2, server_idle_timeout=1)
    with connect(proxy, pool_db, app_name) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)
        assert len(backends()) == 1
        started = time.monotonic()
        wait_until(lambda: not backends(), 6, what="the idle server connection to be closed")
        assert time.monotonic() - started < 5
        assert c.execute("SELECT 2").fetchone() == (2,)   # the client stays connected and is served again
        assert len(backends()) == 1


def test_server_lifetime(make_proxy, pool_db, app_name, backends):
    proxy = make_proxy(pool_mode="transaction", default_pool_size=2, server_lifetime=1)
    with connect(proxy, pool_db, app_name) as c:
        c.execute("SET search_path = s2")
        first = c.execute("SELECT pg_backend_pid()").fetchone()[0]
        time.sleep(2.2)   # past the lifetime and past the next once-a-second housekeeping tick
        second, value = c.execute("SELECT pg_backend_pid(), v FROM t").fetchone()
        assert second != first
        assert value == "two"                 # the client's state was applied to the new connection
        wait_until(lambda: first not in backends(), 5, what=f"backend {first} to be closed")


def test_min_pool_size(make_proxy, pool_db, app_name, backends):
    proxy = make_proxy(pool_mode="transaction", default_pool_size=3, min_pool_size=2)
    with connect(proxy, pool_db, app_name) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)
        wait_until(lambda: len(backends()) == 2, 5, what="min_pool_size = 2 server connections")
        time.sleep(1.5)
        assert len(backends()) == 2


def test_reserve_pool(make_proxy, pool_db, app_name, backends):
    """default_pool_size = 1, reserve_pool_size = 1: a client that waited reserve_pool_timeout (5 s,
    PgBouncer's default) gets a second connection."""
    proxy = make_proxy(pool_mode="transaction", default_pool_size=1, reserve_pool_size=1, query_wait_timeout=30)
    holder = connect(proxy, pool_db, app_name)
    waiter = connect(proxy, pool_db, app_name)
    try:
        holder.execute("BEGIN")
        held = holder.execute("SELECT pg_backend_pid()").fetchone()[0]
        started = time.monotonic()
        got = waiter.execute("SELECT pg_backend_pid()").fetchone()[0]
        waited = time.monotonic() - started
        assert got != held
        assert 4.5 <= waited < 9, waited
        assert sorted(backends()) == sorted([held, got])
        holder.execute("COMMIT")
    finally:
        holder.close()
        waiter.close()


def test_no_reserve_pool_without_reserve_size(make_proxy, pool_db, app_name, backends):
    """Contrast: with reserve_pool_size = 0 the waiting client gets query_wait_timeout."""
    proxy = make_proxy(pool_mode="transaction", default_pool_size=1, query_wait_timeout=2)
    holder = connect(proxy, pool_db, app_name)
    waiter = connect(proxy, pool_db, app_name)
    try:
        holder.execute("BEGIN")
        holder.execute("SELECT 1")
        with pytest.raises(psycopg.OperationalError, match="query_wait_timeout"):
            waiter.execute("SELECT 2")
        assert len(backends()) == 1
    finally:
        holder.close()
        waiter.close()


# -- broken connections -----------------------------------------------------------------------

def test_broken_idle_connection_replaced(make_proxy, pool_db, app_name, backends):
    """pg_terminate_backend of an idle pooled connection: the client's next transaction runs on a
    new connection without an error, with its session state."""
    proxy = make_proxy(pool_mode="transaction", default_pool_size=2)
    with connect(proxy, pool_db, app_name) as c, connect(proxy, pool_db, app_name) as d:
        c.execute("SET search_path = s3")
        d.execute("BEGIN")
        d.execute("SELECT 1")
        pid_c = c.execute("SELECT pg_backend_pid()").fetchone()[0]
        d.execute("COMMIT")
        pids = backends()
        assert len(pids) == 2
        for pid in pids:                                     # both pooled connections die while idle
            backends.conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        wait_until(lambda: not backends(), 5, what="the terminated backends to exit")
        time.sleep(0.2)
        new_pid, value = c.execute("SELECT pg_backend_pid(), v FROM t").fetchone()
        assert new_pid != pid_c and new_pid not in pids
        assert value == "three"
        assert d.execute("SELECT 7").fetchone() == (7,)
        d.execute("BEGIN")
        assert c.execute("SHOW search_path").fetchone() == ("s3",)
        d.execute("COMMIT")
