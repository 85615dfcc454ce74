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
