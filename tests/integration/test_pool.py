"""Session pooling: reuse after DISCARD ALL, default_pool_size, query_wait_timeout, max_client_conn.

One proxy with ``default_pool_size = 1``, ``query_wait_timeout = 1`` and ``max_client_conn = 2``,
so "the next client gets the same backend" and "a second client must wait" are deterministic.
"""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from tests.support.faults import RawConn, ServerFatal

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def pool_proxy(proxy_ini, start_proxy, pg_roles):
    return start_proxy(proxy_ini(default_pool_size=1, query_wait_timeout=1, max_client_conn=2), "pool-proxy")


@pytest.fixture(scope="module")
def dsn(pool_proxy, pg_roles):
    def make(user: str = "alice", **extra: str) -> str:
        password = pg_roles.get(user, "postgres")
        return pool_proxy.dsn(user=user, password=password, sslmode="verify-full", connect_timeout="5", **extra)

    return make


def test_server_connection_reused_and_reset(dsn):
    with psycopg.connect(dsn(), autocommit=True) as a:
        server_pid = a.execute("select pg_backend_pid()").fetchone()[0]
        a.execute("create temp table leftover(x int)")
        a.execute("set work_mem = '7MB'")
        a.execute("prepare leftover_stmt as select 1")
        a.execute("listen leftover_channel")
        a.execute("select set_config('my.var', 'left', false)")
    with psycopg.connect(dsn(), autocommit=True) as b:
        assert b.execute("select pg_backend_pid()").fetchone()[0] == server_pid  # same backend reused
        # ... and DISCARD ALL left nothing of the previous session behind
        assert b.execute("select to_regclass('pg_temp.leftover')").fetchone() == (None,)
        assert b.execute("select current_setting('work_mem')").fetchone() == ("4MB",)
        assert b.execute("select count(*) from pg_prepared_statements").fetchone() == (0,)
        assert b.execute("select count(*) from pg_listening_channels()").fetchone() == (0,)
        assert b.execute("select current_setting('my.var', true)").fetchone() in ((None,), ("",))


def test_different_startup_parameters_get_their_own_settings(dsn):
    with psycopg.connect(dsn(), autocommit=True) as a:
        first = a.execute("select pg_backend_pid()").fetchone()[0]
    with psycopg.connect(dsn(application_name="pool-other"), autocommit=True) as b:
        assert b.info.parameter_status("application_name") == "pool-other"
        assert b.execute("select current_setting('application_name'), pg_backend_pid()").fetchone() != \
            ("pool-other", first)
        assert b.execute("show application_name").fetchone() == ("pool-other",)
    with psycopg.connect(dsn(), autocommit=True) as c:
        assert c.info.parameter_status("application_name") in (None, "")
        assert c.execute("show application_name").fetchone() == ("",)


def test_client_leaving_inside_a_transaction_is_rolled_back(dsn, pg):
    with psycopg.connect(pg.dsn(), autocommit=True) as admin:
        admin.execute("create table if not exists pool_tx(x int)")
        admin.execute("grant all on pool_tx to alice")
        admin.execute("truncate pool_tx")
    a = psycopg.connect(dsn())
    a.execute("insert into pool_tx values (1)")  # implicit BEGIN, never committed
    a.pgconn.finish()  # vanish without COMMIT/ROLLBACK
    with psycopg.connect(dsn(), autocommit=True) as b:
        assert b.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert b.execute("select count(*) from pool_tx").fetchone() == (0,)
        b.execute("insert into pool_tx values (2)")
        assert b.execute("select array_agg(x) from pool_tx").fetchone() == ([2],)


def test_second_client_waits_then_gets_the_connection(dsn):
    a = psycopg.connect(dsn(), autocommit=True)
    server_pid = a.execute("select pg_backend_pid()").fetchone()[0]
    result: dict = {}

    def second():
        start = time.monotonic()
        try:
            with psycopg.connect(dsn(), autocommit=True) as b:
                result["pid"] = b.execute("select pg_backend_pid()").fetchone()[0]
        except Exception as e:  # noqa: BLE001 - reported below
            result["error"] = e
        result["elapsed"] = time.monotonic() - start

    t = threading.Thread(target=second)
    t.start()
    time.sleep(0.4)
    assert t.is_alive(), f"second client did not wait: {result}"
    a.close()
    t.join(10)
    assert "error" not in result, result
    assert result["pid"] == server_pid
    assert 0.3 < result["elapsed"] < 1.5


def test_query_wait_timeout(dsn):
    with psycopg.connect(dsn(), autocommit=True) as a:
        a.execute("select 1")
        start = time.monotonic()
        with pytest.raises(psycopg.OperationalError) as exc:
            psycopg.connect(dsn(), autocommit=True)
        elapsed = time.monotonic() - start
        assert "query_wait_timeout" in str(exc.value)
        assert 0.9 <= elapsed < 3, elapsed
        assert a.execute("select 'holder unaffected'").fetchone() == ("holder unaffected",)


def test_query_wait_timeout_raw(pool_proxy, dsn, pg_roles):
    with psycopg.connect(dsn(), autocommit=True):
        with RawConn(pool_proxy.port) as c:
            with pytest.raises(ServerFatal) as exc:
                c.startup("alice", password=pg_roles["alice"])
    assert (exc.value.severity, exc.value.sqlstate, exc.value.message) == ("FATAL", "08P01", "query_wait_timeout")


def test_max_client_conn(dsn, pool_proxy, pg_roles):
    # alice and postgres have separate pools, so both hold a server connection; the third is refused
    with psycopg.connect(dsn("alice")), psycopg.connect(dsn("postgres")):
        with RawConn(pool_proxy.port) as c:
            with pytest.raises(ServerFatal) as exc:
                c.startup("alice", password=pg_roles["alice"])
        assert (exc.value.severity, exc.value.sqlstate, exc.value.message) == \
            ("FATAL", "53300", "no more connections allowed (max_client_conn)")
        with pytest.raises(psycopg.OperationalError) as exc2:
            psycopg.connect(dsn("alice"))
        assert "no more connections allowed (max_client_conn)" in str(exc2.value)


def test_failed_logins_do_not_leak_client_slots(dsn, pool_proxy):
    for _ in range(4):
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(pool_proxy.dsn(user="alice", password="wrong", sslmode="verify-full"))
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dsn(), dbname="no_such_database")
    deadline = time.monotonic() + 3
    while True:  # both slots are free again
        try:
            with psycopg.connect(dsn("alice")) as a, psycopg.connect(dsn("postgres")) as b:
                assert a.execute("select 1").fetchone() == b.execute("select 1").fetchone() == (1,)
            break
        except psycopg.OperationalError as e:
            if "max_client_conn" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_client_vanishing_mid_result_does_not_poison_the_pool(pool_proxy, dsn, pg_roles):
    from proxy.wire import frontend as F

    c = RawConn(pool_proxy.port)
    c.startup("alice", password=pg_roles["alice"])
    c.send(F.Query("select g, repeat('x', 100) from generate_series(1, 2000000) g").encode())
    assert c.read_message()[0] == "T"  # the result started streaming
    c.close()  # leave in the middle of it
    start = time.monotonic()
    with psycopg.connect(dsn(), autocommit=True) as b:
        assert b.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert b.execute("select 'clean'").fetchone() == ("clean",)
    assert time.monotonic() - start < 5


def test_client_vanishing_inside_an_unsynced_extended_batch(pool_proxy, dsn, pg_roles):
    from proxy.wire import frontend as F

    c = RawConn(pool_proxy.port)
    c.startup("alice", password=pg_roles["alice"])
    c.send(F.Query("begin").encode())
    c.read_until_ready()
    c.send(F.Parse("dangling", "select 1/0").encode() + F.Bind("", "dangling", (), (), ()).encode()
           + F.Execute("", 0).encode())  # no Sync: the server sits in an aborted, unsynced batch
    time.sleep(0.2)
    c.close()
    with psycopg.connect(dsn(), autocommit=True) as b:
        assert b.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert b.execute("select count(*) from pg_prepared_statements").fetchone() == (0,)
        assert b.execute("select 'ok'").fetchone() == ("ok",)


def test_reported_parameters_reset_for_the_next_client(dsn, pg):
    with psycopg.connect(pg.dsn()) as direct:
        default_tz = direct.info.parameter_status("TimeZone")
    with psycopg.connect(dsn(), autocommit=True) as a:
        a.execute("set timezone = 'Asia/Tokyo'")
        a.execute("set application_name = 'left-behind'")
        assert a.info.parameter_status("TimeZone") == "Asia/Tokyo"
        server_pid = a.execute("select pg_backend_pid()").fetchone()[0]
    with psycopg.connect(dsn(), autocommit=True) as b:
        assert b.execute("select pg_backend_pid()").fetchone()[0] == server_pid
        assert b.info.parameter_status("TimeZone") == default_tz
        assert b.info.parameter_status("application_name") in (None, "")
        assert b.execute("show timezone").fetchone() == (default_tz,)


def test_pooled_server_connection_killed_while_idle(dsn, pg):
    with psycopg.connect(dsn(), autocommit=True) as a:
        server_pid = a.execute("select pg_backend_pid()").fetchone()[0]
    time.sleep(0.2)  # let the reset finish: the connection is now idle in the pool
    with psycopg.connect(pg.dsn(), autocommit=True) as admin:
        assert admin.execute("select pg_terminate_backend(%s)", (server_pid,)).fetchone() == (True,)
        deadline = time.monotonic() + 5
        while admin.execute("select 1 from pg_stat_activity where pid = %s", (server_pid,)).fetchone():
            assert time.monotonic() < deadline
            time.sleep(0.02)
    with psycopg.connect(dsn(), autocommit=True) as b:
        new_pid = b.execute("select pg_backend_pid()").fetchone()[0]
        assert new_pid != server_pid
        assert b.execute("select 'fresh'").fetchone() == ("fresh",)
