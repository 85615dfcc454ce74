"""Transaction pooling corner cases a fresh tester found (session 2): a Flush after Sync, a read-back
racing the client's next messages after an iasql_* call, texts in a client_encoding other than
UTF-8. Each checks what a client of real Postgres would see."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from tests.pooling.conftest import proxy_dsn
from tests.support.faults import RawConn, data_rows, errors_in
from proxy.wire import frontend as F

pytestmark = pytest.mark.timeout(60)


def test_flush_after_sync_gives_the_connection_back(make_proxy, pool_db):
    """psycopg's executemany and pipelines send Sync then Flush; on a pool of one connection a
    second client must still get it (PgBouncer releases at ReadyForQuery 'I')."""
    proxy = make_proxy(pool_mode="transaction", default_pool_size=1, query_wait_timeout=3)
    with psycopg.connect(proxy_dsn(proxy, pool_db), autocommit=True) as a:
        a.execute("CREATE TEMP TABLE IF NOT EXISTS x (v int) ON COMMIT DROP")  # no pin: dropped at once
        with a.cursor() as cur:
            cur.executemany("SELECT %s::int", [(1,), (2,), (3,)])
        with a.pipeline():
            a.execute("SELECT 1")
        with psycopg.connect(proxy_dsn(proxy, pool_db), autocommit=True) as b:
            assert b.execute("SELECT 42").fetchone() == (42,)
    raw = RawConn(proxy.port)
    try:
        raw.startup("postgres", pool_db, password="postgres")
        raw.send(F.Parse("", "SELECT 7").encode() + F.Bind("", "", (), (), ()).encode()
                 + F.Execute("", 0).encode() + F.Sync().encode() + F.Flush().encode())
        assert data_rows(raw.read_until_ready()) == [["7"]]
        with psycopg.connect(proxy_dsn(proxy, pool_db), autocommit=True) as b:
            assert b.execute("SELECT 43").fetchone() == (43,)
    finally:
        raw.terminate()


def test_set_then_call_then_temp_table_in_one_write(make_proxy, pool_db):
    """SET (read back when the transaction ends), an iasql_* call answered from memory, then a
    temp table, all in one write: every reply arrives, and the temp table (which pins) is not
    seen by another client."""
    proxy = make_proxy(pool_mode="transaction", default_pool_size=2, query_wait_timeout=5)
    table = f"leak_{uuid.uuid4().hex[:8]}"
    raw = RawConn(proxy.port)
    try:
        raw.startup("postgres", pool_db, password="postgres")
        raw.send(F.Query("SET application_name = 'a'").encode() + F.Query("SELECT * FROM iasql_version()").encode()
                 + F.Query(f"CREATE TEMP TABLE {table} (a int)").encode() + F.Query("SELECT 1").encode())
        got = raw.read_until_ready(4)
        assert not errors_in(got)
        assert data_rows(got)[-1] == ["1"]
        for _ in range(3):
            with psycopg.connect(proxy_dsn(proxy, pool_db), autocommit=True) as other:
                assert other.execute("SELECT to_regclass(%s) IS NULL", (table,)).fetchone() == (True,)
        assert data_rows(raw.query(f"SELECT count(*) FROM {table}")) == [["0"]]
    finally:
        raw.terminate()


def test_latin1_client_encoding_state_is_tracked(make_proxy, pool_db):
    """With client_encoding LATIN1, a text with non-UTF-8 bytes that takes an advisory lock still
    pins the client: another client does not see the lock as its own."""
    proxy = make_proxy(pool_mode="transaction", default_pool_size=2, query_wait_timeout=5)
    raw = RawConn(proxy.port)
    try:
        raw.startup("postgres", pool_db, password="postgres")
        assert not errors_in(raw.query("SET client_encoding = 'LATIN1'"))
        raw.send(b"Q" + (4 + len("SELECT pg_advisory_lock(4242), 'caf\xe9'") + 1).to_bytes(4, "big")
                 + "SELECT pg_advisory_lock(4242), 'caf\xe9'".encode("latin-1") + b"\0")
        assert not errors_in(raw.read_until_ready())
        mine = data_rows(raw.query("SELECT pg_backend_pid()"))
        for _ in range(3):
            with psycopg.connect(proxy_dsn(proxy, pool_db), autocommit=True) as other:
                pid = other.execute("SELECT pg_backend_pid()").fetchone()[0]
                assert [[str(pid)]] != mine  # the pinned connection is not shared
                held = other.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                                     "AND objid = 4242 AND pid = pg_backend_pid()").fetchone()
                assert held == (0,)
    finally:
        raw.terminate()
