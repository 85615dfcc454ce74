"""Session state set in a text that also calls iasql_* follows the client in transaction and
statement pooling exactly as in any other text (it used to stay on the server connection for the
next client): SET, set_config, temp tables and LISTEN, over the simple and the extended protocol."""

from __future__ import annotations

import psycopg
import pytest

from tests.intercept.conftest import engine_section

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module", params=["transaction", "statement"])
def pooled_proxy(request, pg, moto_server, proxy_ini, start_proxy):
    ini = proxy_ini(pool_mode=request.param, default_pool_size=2, query_wait_timeout=10)
    return start_proxy(ini + engine_section(moto_server.endpoint_url), f"iasql-{request.param}")


def _other(proxy, db):
    return psycopg.connect(proxy.dsn(dbname=db), autocommit=True, connect_timeout=5)


def test_set_and_temp_table_in_an_iasql_text_stay_with_their_client(pooled_proxy, db):
    with psycopg.connect(pooled_proxy.dsn(dbname=db), autocommit=True, connect_timeout=5) as a:
        a.execute("SET search_path = leaked, public; CREATE TEMP TABLE secret AS SELECT 'A-only' AS x; "
                  "SELECT * FROM iasql_version()")
        with _other(pooled_proxy, db) as b:
            assert b.execute("SHOW search_path").fetchone() != ("leaked, public",)
            assert b.execute("SELECT to_regclass('pg_temp.secret') IS NULL").fetchone() == (True,)
        assert a.execute("SHOW search_path").fetchone() == ("leaked, public",)


def test_set_config_in_a_call_statement_follows_its_client(pooled_proxy, db):
    with psycopg.connect(pooled_proxy.dsn(dbname=db), autocommit=True, connect_timeout=5) as a:
        a.execute("SELECT set_config('work_mem', '77kB', false) FROM iasql_version()")
        with _other(pooled_proxy, db) as b:
            assert b.execute("SHOW work_mem").fetchone() != ("77kB",)
        assert a.execute("SHOW work_mem").fetchone() == ("77kB",)


def test_extended_protocol_set_config_with_a_call_follows_its_client(pooled_proxy, db):
    with psycopg.connect(pooled_proxy.dsn(dbname=db), autocommit=True, connect_timeout=5) as a:
        a.execute("SELECT set_config('search_path', 'leak_ext', false) FROM iasql_version() WHERE %s", (True,))
        with _other(pooled_proxy, db) as b:
            assert b.execute("SHOW search_path").fetchone() != ("leak_ext",)
        assert a.execute("SHOW search_path").fetchone() == ("leak_ext",)


def test_listen_in_an_iasql_text_pins(pooled_proxy, db):
    with psycopg.connect(pooled_proxy.dsn(dbname=db), autocommit=True, connect_timeout=5) as a:
        a.execute("LISTEN chan_a; SELECT * FROM iasql_version()")
        a_pid = a.execute("SELECT pg_backend_pid()").fetchone()[0]
        assert a.execute("SELECT pg_listening_channels()").fetchall() == [("chan_a",)]
    with _other(pooled_proxy, db) as b:  # the pinned connection was closed when A left
        assert b.execute("SELECT count(*) FROM pg_listening_channels()").fetchone() == (0,)
        assert b.execute("SELECT pg_backend_pid()").fetchone()[0] != a_pid


def _ext(sql: str) -> bytes:
    from proxy.wire import frontend as F

    return (F.Parse("", sql).encode() + F.Bind("", "", (), (), ()).encode() + F.Describe(b"P", "").encode()
            + F.Execute("", 0).encode())


def test_sync_then_flush_after_a_batch_with_a_call(pooled_proxy, db):
    """psycopg's pipeline ends with Sync then Flush: after a batch that called iasql_*, the next
    Query is answered and the connection is free for other clients (it used to hang both)."""
    from proxy.wire import frontend as F
    from tests.intercept.conftest import PASSWORD
    from tests.intercept.helpers import data_rows, errors_in
    from tests.support.faults import RawConn

    c = RawConn(pooled_proxy.port, timeout=10)
    c.startup("postgres", db, password=PASSWORD)
    c.send(_ext("SELECT 1") + _ext("SELECT * FROM iasql_version()") + F.Sync().encode() + F.Flush().encode())
    assert not errors_in(c.read_until_ready())
    assert data_rows(c.query("SELECT 42")) == [["42"]]
    with _other(pooled_proxy, db) as b, _other(pooled_proxy, db) as b2:
        assert b.execute("SELECT 1").fetchone() == (1,) and b2.execute("SELECT 2").fetchone() == (2,)
    with psycopg.connect(pooled_proxy.dsn(dbname=db), autocommit=True, connect_timeout=5) as a:
        with a.pipeline():
            a.execute("SELECT 1")
            a.execute("SELECT * FROM iasql_version() WHERE %s::int = 1", [1])
        assert a.execute("SELECT 7").fetchone() == (7,)
    c.terminate()


def test_statement_pooling_refuses_a_block_inside_a_batch_with_a_call(pooled_proxy, db, request):
    from proxy.wire import frontend as F
    from tests.intercept.conftest import PASSWORD
    from tests.intercept.helpers import errors_in
    from tests.support.faults import RawConn

    """Statement pooling answers 25001 and stays out of a block; transaction pooling opens the
    block as Postgres does."""
    c = RawConn(pooled_proxy.port, timeout=10)
    c.startup("postgres", db, password=PASSWORD)
    c.send(_ext("SELECT * FROM iasql_version()") + _ext("BEGIN") + _ext("SET LOCAL work_mem = '5MB'")
           + F.Sync().encode())
    msgs = c.read_until_ready()
    if "statement" in request.node.callspec.id:
        assert [e.sqlstate for e in errors_in(msgs)] == ["25001"] and msgs[-1] == ("Z", b"I")
    else:
        assert errors_in(msgs) == [] and msgs[-1] == ("Z", b"T")
        assert c.query("ROLLBACK")[-1] == ("Z", b"I")
    c.terminate()


async def test_asyncpg_prepared_calls_and_statements_share_the_pool(pooled_proxy, db):
    """asyncpg names every statement (``__asyncpg_stmt_N__``); once a client prepared a statement
    calling iasql_* with a parameter, its named statements went to the shared server connections
    under the client's own names: other clients' statements of the same name collided ("already
    exists", "does not exist"). Three asyncpg clients each interleave a parameterised call and
    plain statements while a fourth keeps the pool busy; every result must be right."""
    import asyncio

    import asyncpg

    async def client(i: int) -> list:
        c = await asyncpg.connect(host="127.0.0.1", port=pooled_proxy.port, user="postgres", password="postgres",
                                  database=db, ssl=False)
        errors = []
        try:
            for k in range(12):
                try:
                    n = await c.fetchval("select count(*) from iasql_modules_list() where $1::int >= 0", k)
                    assert n > 0
                    assert await c.fetchval("select $1::int * 2", i * 100 + k) == 2 * (i * 100 + k)
                    assert await c.fetchval("select $1::text || 'x'", f"c{i}") == f"c{i}x"
                except (asyncpg.PostgresError, AssertionError) as e:
                    errors.append(f"{type(e).__name__}: {e}")
        finally:
            await c.close()
        return errors

    async def busy(stop: asyncio.Event) -> None:
        c = await asyncpg.connect(host="127.0.0.1", port=pooled_proxy.port, user="postgres", password="postgres",
                                  database=db, ssl=False)
        try:
            while not stop.is_set():
                await c.execute("select pg_sleep(0.005)")
        finally:
            await c.close()

    stop = asyncio.Event()
    bg = asyncio.create_task(busy(stop))
    try:
        results = await asyncio.gather(*(client(i) for i in range(3)))
    finally:
        stop.set()
        await bg
    assert results == [[], [], []]
