"""PgBouncer's connection commands on the admin console: RECONNECT, WAIT_CLOSE, KILL, DISABLE,
ENABLE (README "Admin console"), in session and transaction pooling, checked with what Postgres
itself says (``pg_stat_activity``, the backend pid a client is served by)."""

from __future__ import annotations

import threading
import time
import uuid

import psycopg
import pytest

from tests.ops.helpers import psql, table, wait_for
from tests.support.faults import RawConn, ServerFatal

pytestmark = pytest.mark.timeout(90)


def ok(proc):
    assert proc.returncode == 0, proc.stderr
    return table(proc.stdout) if proc.stdout.strip() else ([], [])


@pytest.fixture(scope="module", params=["session", "transaction"])
def proxy(request, proxy_ini, start_proxy, pg_roles):
    proc = start_proxy(proxy_ini(admin_users="postgres", pool_mode=request.param, default_pool_size=4),
                       f"conn-cmds-{request.param}")
    proc.cfg_pool_mode = request.param
    return proc


@pytest.fixture
def db(pg):
    """A database of its own, so commands on it touch no other test's clients."""
    name = f"cmds_{uuid.uuid4().hex[:8]}"
    pg.psql(f'CREATE DATABASE "{name}"')
    yield name
    pg.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def backends(pg, db: str) -> set[int]:
    with psycopg.connect(pg.dsn("postgres"), autocommit=True) as c:
        return {r[0] for r in c.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (db,))}


def client(proxy, db: str) -> psycopg.Connection:
    return psycopg.connect(proxy.dsn(dbname=db, connect_timeout="10"), autocommit=True)


def pid(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT pg_backend_pid()").fetchone()[0]


def test_reconnect_closes_each_server_connection_once_released(pg, proxy, db):
    a = client(proxy, db)
    first = pid(a)
    assert backends(pg, db) == {first}
    a.execute("BEGIN")  # in use (both modes) until COMMIT
    a.execute("CREATE TABLE t (x int)")
    ok(psql(proxy, f"RECONNECT {db}"))
    _, rows = ok(psql(proxy, "SHOW SERVERS"))
    assert [r["close_needed"] for r in rows if r["database"] == db] == ["1"]
    # the statement in progress is not disturbed; the connection goes once it is released
    assert pid(a) == first
    a.execute("INSERT INTO t VALUES (1)")
    waiter: dict = {}
    t = threading.Thread(target=lambda: waiter.update(proc=psql(proxy, f"WAIT_CLOSE {db}")), daemon=True)
    t.start()
    time.sleep(0.5)
    assert "proc" not in waiter  # the marked connection is still open
    a.execute("COMMIT")
    if proxy.cfg_pool_mode == "session":
        a.close()  # session pooling: released when the client leaves
    t.join(15)
    assert waiter["proc"].returncode == 0, waiter["proc"].stderr
    wait_for(lambda: first not in backends(pg, db))
    with client(proxy, db) as b:
        assert pid(b) != first
        assert b.execute("SELECT x FROM t").fetchall() == [(1,)]  # committed work kept
    if not a.closed:
        assert pid(a) != first  # transaction pooling: the next transaction gets a new connection
        a.close()


def test_kill_drops_clients_and_servers_and_pauses_until_resume(pg, proxy, db):
    a = client(proxy, db)
    first = pid(a)
    ok(psql(proxy, f"KILL {db}"))
    with pytest.raises(psycopg.OperationalError, match="database removed"):
        a.execute("SELECT 1")
    wait_for(lambda: not backends(pg, db))
    # new clients wait until RESUME, as after PgBouncer's KILL
    got: dict = {}

    def late():
        with client(proxy, db) as c:
            got["pid"] = pid(c)

    t = threading.Thread(target=late, daemon=True)
    t.start()
    time.sleep(1.0)
    assert "pid" not in got
    ok(psql(proxy, f"RESUME {db}"))
    t.join(15)
    assert got["pid"] != first


def test_disable_refuses_new_logins_only(pg, proxy, db):
    a = client(proxy, db)
    ok(psql(proxy, f"DISABLE {db}"))
    with pytest.raises(psycopg.OperationalError, match=f"database does not allow connections: {db}"):
        client(proxy, db)
    with RawConn(proxy.port) as raw, pytest.raises(ServerFatal) as ei:
        raw.startup("postgres", db, "postgres")
    assert (ei.value.severity, ei.value.sqlstate) == ("FATAL", "08P01")  # PgBouncer's code for it
    assert a.execute("SELECT 1").fetchone() == (1,)  # connected clients stay
    ok(psql(proxy, f"ENABLE {db}"))
    with client(proxy, db) as b:
        assert b.execute("SELECT 2").fetchone() == (2,)
    again = psql(proxy, f"ENABLE {db}")
    assert again.returncode != 0 and f"database {db} is not disabled" in again.stderr
    a.close()


@pytest.mark.parametrize("command", ["KILL", "DISABLE", "ENABLE", "RECONNECT a b", "WAIT_CLOSE a b"])
def test_commands_need_their_database_argument(proxy, command):
    proc = psql(proxy, command)
    assert proc.returncode != 0 and f"invalid command '{command}', use SHOW HELP;" in proc.stderr


def test_admin_console_database_cannot_be_killed(proxy):
    proc = psql(proxy, "KILL iasql_proxy")
    assert proc.returncode != 0 and 'cannot kill the admin console database "iasql_proxy"' in proc.stderr


def test_kill_ends_a_client_in_the_middle_of_a_statement(pg, proxy, db):
    a = client(proxy, db)
    outcome: dict = {}

    def sleep():
        try:
            a.execute("SELECT pg_sleep(60)")
            outcome["done"] = "finished"
        except psycopg.OperationalError as e:
            outcome["done"] = str(e)

    t = threading.Thread(target=sleep, daemon=True)
    t.start()
    wait_for(lambda: any(r["database"] == db and r["state"] == "active"
                         for r in ok(psql(proxy, "SHOW SERVERS"))[1]))
    ok(psql(proxy, f"KILL {db}"))
    t.join(20)
    assert "database removed" in outcome["done"]
    ok(psql(proxy, f"RESUME {db}"))
