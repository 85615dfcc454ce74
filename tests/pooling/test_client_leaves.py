"""A client that sends work and leaves before the replies (Query + Terminate in one write, or a
socket closed while a statement runs): Postgres finishes the statement it is running, so an
autocommit write is committed and an open transaction is rolled back. The proxy closes the server
connection without cancelling it, so Postgres sees what it would see without the proxy. Each case
runs against Postgres directly and through the proxy (transaction and session pooling) and must end
with the same rows; afterwards the proxy's pool of one connection serves the next client with none
of the departed client's session state."""

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


def test_state_of_a_departed_client_does_not_reach_the_next(make_proxy, pool_db, pg):
    """SETs, SET ROLE and an UNLISTEN that an error rolled back, sent just before leaving, stay
    with the departed client's connection: the next client sees defaults and hears nothing."""
    proxy = make_proxy(pool_mode="transaction", default_pool_size=1, query_wait_timeout=10)
    with psycopg.connect(proxy_dsn(proxy, pool_db), autocommit=True) as c:
        default = c.execute("SHOW work_mem").fetchone()[0]
    raw = RawConn(proxy.port)
    raw.startup("postgres", pool_db, password="postgres")
    raw.query("LISTEN chan_left")
    raw.send(F.Query("SET work_mem = '1234kB'; SET ROLE pg_read_all_data; SELECT pg_sleep(0.2)").encode()
             + F.Query("UNLISTEN *; SELECT 1/0").encode() + F.Terminate().encode())
    raw.sock.close()
    time.sleep(0.6)
    with psycopg.connect(proxy_dsn(proxy, pool_db), autocommit=True) as c:
        assert c.execute("SELECT current_setting('work_mem'), current_user, "
                         "(SELECT count(*) FROM pg_listening_channels())").fetchone() == (default, "postgres", 0)


def test_cancel_key_of_a_departed_client_still_cancels(make_proxy, pool_db, pg):
    """A driver that sends CancelRequest and closes its socket races the two: the cancel still
    reaches the statement the client left running (as it reaches a Postgres backend)."""
    proxy = make_proxy(pool_mode="transaction", default_pool_size=1, query_wait_timeout=10)
    table = f"leave_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(direct_dsn(pg, pool_db), autocommit=True) as c:
        c.execute(f"CREATE TABLE {table} (v int)")
    raw = RawConn(proxy.port)
    raw.startup("postgres", pool_db, password="postgres")
    assert raw.backend_key is not None
    raw.send(F.Query(f"SELECT pg_sleep(3); INSERT INTO {table} VALUES (1)").encode() + F.Terminate().encode())
    raw.sock.close()
    time.sleep(0.3)
    cancel = RawConn(proxy.port)
    cancel.send(F.CancelRequest(*raw.backend_key).encode())
    cancel.sock.close()
    time.sleep(3.5)
    with psycopg.connect(direct_dsn(pg, pool_db), autocommit=True) as c:
        assert c.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)


def test_client_leaving_while_its_state_is_applied_does_not_lose_the_connection(make_proxy, pool_db):
    """The next client's lease must first RESET what the previous one SET; if that client leaves
    during it, the connection is given back (before, it stayed 'tested' for good and every later
    client got query_wait_timeout)."""
    proxy = make_proxy(pool_mode="transaction", default_pool_size=1, query_wait_timeout=5)
    with psycopg.connect(proxy_dsn(proxy, pool_db), autocommit=True) as a:
        a.execute("SET work_mem = '2MB'")
        for _ in range(5):
            b = RawConn(proxy.port)
            b.startup("postgres", pool_db, password="postgres")
            b.send(F.Query("SELECT 1").encode() + F.Terminate().encode())
            b.sock.close()
            time.sleep(0.05)
        with psycopg.connect(proxy_dsn(proxy, pool_db), autocommit=True) as c:
            assert c.execute("SELECT current_setting('work_mem')").fetchone() != ("2MB",)
        assert a.execute("SHOW work_mem").fetchone() == ("2MB",)


@pytest.mark.parametrize("pool_mode", ["transaction", "session"])
def test_half_closed_client_gets_its_replies(pool_mode, make_proxy, pool_db, pg):
    """A client that sends its Queries and then shuts down its sending side (shutdown SHUT_WR)
    still gets every reply, then the connection ends: the same messages as from Postgres."""
    import socket

    proxy = make_proxy(pool_mode=pool_mode, default_pool_size=1, query_wait_timeout=10)
    seen = {}
    for where, port in (("direct", pg.port), ("proxy", proxy.port)):
        raw = RawConn(port)
        raw.startup("postgres", pool_db, password="postgres")
        raw.send(F.Query("SELECT 1 AS a").encode() + F.Query("SELECT pg_sleep(0.2), 2 AS b").encode())
        raw.sock.shutdown(socket.SHUT_WR)
        seen[where] = [t for t, _ in raw.read_until_closed()]
        raw.sock.close()
    assert seen["proxy"] == seen["direct"] == ["T", "D", "C", "Z", "T", "D", "C", "Z"]
    with psycopg.connect(proxy_dsn(proxy, pool_db), autocommit=True) as c:  # the pool still serves
        assert c.execute("SELECT 3").fetchone() == (3,)


def test_departed_client_over_server_tls_stops_like_postgres(dev_certs, tmp_path):
    """With TLS between the proxy and Postgres, the connection of a client that left with work
    pipelined is dropped at once (a graceful TLS close would keep reading Postgres's output, so
    all the work would run): as directly, Postgres runs what it can before its writes fail."""
    from proxy.embedded.postgres import EmbeddedPostgres
    from tests.support.proxy import ProxyProcess

    ca, crt, key = dev_certs
    pg = EmbeddedPostgres(password="postgres", ssl_cert=crt, ssl_key=key)
    pg.start()
    proxy = None
    try:
        ini = (f"[databases]\n* = host=127.0.0.1 port={pg.port}\n[proxy]\nauth_type = trust\n"
               f"server_tls_sslmode = verify-full\nserver_tls_ca_file = {ca}\nauth_file = {tmp_path / 'users.txt'}\n"
               "auth_user = postgres\npool_mode = session\ndefault_pool_size = 2\n")
        (tmp_path / "users.txt").write_text('"postgres" "postgres"\n')
        proxy = ProxyProcess(ini.replace("host=127.0.0.1", "host=localhost"), tmp_path / "px").start()
        table = "leave_tls"
        with psycopg.connect(direct_dsn(pg, "postgres"), autocommit=True) as c:
            c.execute(f"CREATE TABLE {table} (v int)")
        raw = RawConn(proxy.port)
        raw.startup("postgres", "postgres")
        raw.send(F.Query("SELECT repeat('x', 1000) FROM generate_series(1, 20000)").encode()
                 + F.Query(f"INSERT INTO {table} VALUES (2)").encode())
        raw.sock.close()
        time.sleep(1.5)
        with psycopg.connect(direct_dsn(pg, "postgres"), autocommit=True) as c:
            assert c.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)
    finally:
        if proxy is not None:
            proxy.stop()
        pg.stop()
