"""A client that sends work and leaves before the replies (Query + Terminate in one write, or a
socket closed while a statement runs): Postgres runs what it received, so an autocommit write is
committed and an open transaction is rolled back. Each case runs against Postgres directly and
through the proxy (transaction and session pooling) and must end with the same rows; afterwards the
proxy's pool of one connection still serves the next client (proxy.backend.drain)."""

from __future__ import annotations

import time
import uuid

import psycopg
import pytest

from tests.pooling.conftest import direct_dsn, proxy_dsn
from tests.support.faults import RawConn
from proxy.wire import frontend as F

pytestmark = pytest.mark.timeout(90)

CASES = {
    # name: (statements sent as Queries, then how the client leaves)
    "insert then terminate": (["INSERT INTO {t} VALUES (1)"], "terminate"),
    "slow insert then terminate": (["SELECT pg_sleep(0.4); INSERT INTO {t} VALUES (1)"], "terminate"),
    "two queries then terminate": (["INSERT INTO {t} VALUES (1)", "INSERT INTO {t} VALUES (2)"], "terminate"),
    "slow insert then close": (["SELECT pg_sleep(0.4); INSERT INTO {t} VALUES (1)"], "close"),
    "open transaction then terminate": (["BEGIN; INSERT INTO {t} VALUES (1)"], "terminate"),
    "extended insert then terminate": ([("INSERT INTO {t} VALUES ($1)", "5")], "terminate"),
}


def _send_and_leave(port: int, dbname: str, table: str, statements, how: str) -> None:
    raw = RawConn(port)
    raw.startup("postgres", dbname, password="postgres")
    data = b""
    for st in statements:
        if isinstance(st, tuple):
            sql, arg = st
            data += (F.Parse("", sql.format(t=table)).encode() + F.Bind("", "", (), (arg.encode(),), ()).encode()
                     + F.Execute("", 0).encode() + F.Sync().encode())
        else:
            data += F.Query(st.format(t=table)).encode()
    if how == "terminate":
        data += F.Terminate().encode()
    raw.send(data)
    raw.sock.close()


def _rows_after(dsn: str, table: str, expect_some: bool) -> list[tuple]:
    deadline = time.monotonic() + 5
    with psycopg.connect(dsn, autocommit=True) as c:
        while True:
            rows = c.execute(f"SELECT v FROM {table} ORDER BY v").fetchall()
            if rows or not expect_some or time.monotonic() > deadline:
                return rows
            time.sleep(0.05)


@pytest.mark.parametrize("pool_mode", ["transaction", "session"])
@pytest.mark.parametrize("case", list(CASES))
def test_work_sent_before_leaving_ends_as_on_postgres(case, pool_mode, make_proxy, pool_db, pg):
    statements, how = CASES[case]
    proxy = make_proxy(pool_mode=pool_mode, default_pool_size=1, query_wait_timeout=10)
    outcome = {}
    for where, port in (("direct", pg.port), ("proxy", proxy.port)):
        table = f"leave_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(direct_dsn(pg, pool_db), autocommit=True) as c:
            c.execute(f"CREATE TABLE {table} (v int)")
        _send_and_leave(port, pool_db, table, statements, how)
        time.sleep(0.8)  # the slow cases' statements finish
        outcome[where] = _rows_after(direct_dsn(pg, pool_db), table, expect_some=where == "proxy"
                                     and bool(outcome["direct"]))
    assert outcome["proxy"] == outcome["direct"]
    if case != "open transaction then terminate":
        assert outcome["direct"], "Postgres committed the work sent before Terminate"
    with psycopg.connect(proxy_dsn(proxy, pool_db), autocommit=True) as after:  # the pool of one still serves
        assert after.execute("SELECT 1, current_setting('transaction_isolation')").fetchone()[0] == 1
        assert after.execute("SELECT pg_current_xact_id_if_assigned() IS NULL").fetchone() == (True,)


def test_drained_connection_is_reused(make_proxy, pool_db, pg):
    """After the replies owed to a departed client are read, the connection goes back to the pool
    (the next client gets the same server process) instead of being cancelled and closed."""
    proxy = make_proxy(pool_mode="transaction", default_pool_size=1, query_wait_timeout=10)
    with psycopg.connect(proxy_dsn(proxy, pool_db), autocommit=True) as c:
        before = c.execute("SELECT pg_backend_pid()").fetchone()[0]
    raw = RawConn(proxy.port)
    raw.startup("postgres", pool_db, password="postgres")
    raw.send(F.Query("SELECT pg_sleep(0.3)").encode() + F.Terminate().encode())
    raw.sock.close()
    time.sleep(0.6)
    with psycopg.connect(proxy_dsn(proxy, pool_db), autocommit=True) as c:
        assert c.execute("SELECT pg_backend_pid()").fetchone()[0] == before
