"""The admin console through psql: every command, roles, errors (README "Operations")."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from tests.ops.helpers import psql, table, wait_for
from proxy.wire import frontend as F
from tests.support.faults import RawConn, ServerFatal, data_rows, errors_in

pytestmark = pytest.mark.timeout(90)

POOLS_COLUMNS = ["database", "user", "cl_active", "cl_waiting", "cl_active_cancel_req", "cl_waiting_cancel_req",
                 "sv_active", "sv_active_cancel", "sv_being_canceled", "sv_idle", "sv_used", "sv_tested",
                 "sv_login", "maxwait", "maxwait_us", "pool_mode", "load_balance_hosts"]
CLIENT_COLUMNS = ["type", "user", "database", "replication", "state", "addr", "port", "local_addr", "local_port",
                  "connect_time", "request_time", "wait", "wait_us", "close_needed", "ptr", "link", "remote_pid",
                  "tls", "application_name", "prepared_statements", "id"]


def ok(proc):
    assert proc.returncode == 0, proc.stderr
    return table(proc.stdout)


@pytest.fixture
def busy_client(ops_proxy, pg_roles):
    """alice connected to postgres through the proxy (one client, one server connection)."""
    conn = psycopg.connect(ops_proxy.dsn(user="alice", password=pg_roles["alice"], application_name="ops-client"),
                           autocommit=True)
    conn.execute("select 1")
    yield conn
    conn.close()


def test_show_pools_clients_servers(ops_proxy, busy_client):
    header, rows = ok(psql(ops_proxy, "SHOW POOLS"))
    assert header == POOLS_COLUMNS
    pool = next(r for r in rows if r["user"] == "alice")
    assert pool["database"] == "postgres" and pool["cl_active"] == "1" and pool["sv_active"] == "1"
    assert pool["pool_mode"] == "session"
    assert any(r["database"] == "iasql_proxy" for r in rows)  # the console's own row, as PgBouncer's

    header, rows = ok(psql(ops_proxy, "show clients;"))
    assert header == CLIENT_COLUMNS
    alice = next(r for r in rows if r["user"] == "alice")
    assert alice["state"] == "active" and alice["application_name"] == "ops-client" and alice["type"] == "C"
    assert alice["addr"] == "127.0.0.1" and alice["link"]
    assert any(r["user"] == "postgres" and r["database"] == "iasql_proxy" for r in rows)

    header, rows = ok(psql(ops_proxy, "SHOW SERVERS"))
    assert header == CLIENT_COLUMNS
    server = next(r for r in rows if r["user"] == "alice")
    backend_pid = busy_client.execute("select pg_backend_pid()").fetchone()[0]
    assert server["state"] == "active" and server["remote_pid"] == str(backend_pid) and server["type"] == "S"
    assert server["link"] == alice["ptr"]


def test_show_stats_databases_config_version_help(ops_proxy, busy_client):
    for _ in range(3):
        busy_client.execute("select 1")
    header, rows = ok(psql(ops_proxy, "SHOW STATS"))
    assert header[:9] == ["database", "total_xact_count", "total_query_count", "total_server_assignment_count",
                          "total_received", "total_sent", "total_xact_time", "total_query_time", "total_wait_time"]
    assert "avg_query_count" in header and "avg_wait_time" in header
    stats = next(r for r in rows if r["database"] == "postgres")
    assert int(stats["total_query_count"]) >= 4 and int(stats["total_received"]) > 0
    assert int(stats["total_server_assignment_count"]) >= 1

    header, rows = ok(psql(ops_proxy, "SHOW DATABASES"))
    assert header[:6] == ["name", "host", "port", "database", "force_user", "pool_size"]
    assert "paused" in header and "current_connections" in header
    star = next(r for r in rows if r["name"] == "*")
    assert star["host"] == "127.0.0.1" and star["pool_size"] == "20"

    header, rows = ok(psql(ops_proxy, "SHOW CONFIG"))
    assert header == ["key", "value", "default", "changeable"]
    config = {r["key"]: r for r in rows}
    assert config["admin_users"]["value"] == "postgres"
    assert config["default_pool_size"]["value"] == "20" and config["default_pool_size"]["changeable"] == "yes"
    assert config["listen_port"]["changeable"] == "no"
    assert config["admin_database"]["value"] == "iasql_proxy"

    header, rows = ok(psql(ops_proxy, "SHOW VERSION"))
    assert header == ["version"] and rows[0]["version"].startswith("iasql-proxy ")

    proc = psql(ops_proxy, "SHOW HELP")
    assert proc.returncode == 0 and "SHOW [HELP|POOLS" in proc.stderr


def test_show_engine_lists_iasql_calls(ops_proxy, pg_roles):
    with psycopg.connect(ops_proxy.dsn(), autocommit=True) as conn:
        conn.execute("SELECT * FROM iasql_version()").fetchall()
    header, rows = ok(psql(ops_proxy, "SHOW ENGINE"))
    assert header == ["database", "user", "function", "start", "duration", "state"]
    call = next(r for r in rows if r["function"] == "iasql_version")
    assert call["database"] == "postgres" and call["user"] == "postgres" and call["state"] == "ok"
    assert float(call["duration"]) >= 0 and call["start"].endswith("UTC")


def test_show_engine_lists_only_calls_that_were_reached(ops_proxy, pg_roles):
    """In a text whose calls are answered from memory, a call after a failed statement was never
    reached (Postgres skips the rest of the text) and is not listed."""
    def count(function: str) -> int:
        _, rows = ok(psql(ops_proxy, "SHOW ENGINE"))
        return sum(1 for r in rows if r["function"] == function)

    help0, modules0 = count("iasql_help"), count("iasql_modules_list")
    with psycopg.connect(ops_proxy.dsn(), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1/0; SELECT * FROM iasql_help()")
        conn.execute("SELECT 1; SELECT * FROM iasql_modules_list()")
    assert (count("iasql_help"), count("iasql_modules_list")) == (help0, modules0 + 1)


def test_stats_user_may_only_show(ops_proxy, pg_roles):
    alice = pg_roles["alice"]
    ok(psql(ops_proxy, "SHOW POOLS", user="alice", password=alice))
    for command in ("RELOAD", "PAUSE", "RESUME", "SHUTDOWN"):
        proc = psql(ops_proxy, command, user="alice", password=alice)
        assert proc.returncode != 0 and "admin access needed" in proc.stderr, proc.stderr
    assert ops_proxy.process.poll() is None


def test_outsider_refused(ops_proxy, outsider):
    user, password = outsider
    proc = psql(ops_proxy, "SHOW POOLS", user=user, password=password)
    assert proc.returncode != 0
    assert 'FATAL:  permission denied for database "iasql_proxy"' in proc.stderr, proc.stderr
    with RawConn(ops_proxy.port) as raw, pytest.raises(ServerFatal) as e:
        raw.startup(user, "iasql_proxy", password)
    assert e.value.fields.sqlstate == "28000" and e.value.fields.get("S") == "FATAL"
    # a wrong password is a password failure, whoever the user is
    proc = psql(ops_proxy, "SHOW POOLS", user="postgres", password="wrong")
    assert proc.returncode != 0 and "password authentication failed" in proc.stderr


def test_failed_logins_add_no_show_stats_rows(ops_proxy, pg_roles):
    """Only databases someone logged in to have a SHOW STATS row: logins that fail (a database that
    does not exist, a wrong password) add none, however many made-up names they carry."""
    names = [f"flood_{i}_{time.monotonic_ns()}" for i in range(5)]
    for name in names:
        with RawConn(ops_proxy.port) as raw, pytest.raises(ServerFatal) as e:
            raw.startup("alice", name, pg_roles["alice"])
        assert e.value.fields.sqlstate == "3D000"
        with RawConn(ops_proxy.port) as raw, pytest.raises(ServerFatal) as e:
            raw.startup("alice", name + "_pw", "wrong password")
        assert e.value.fields.sqlstate == "28P01"

    def listed():
        return {r["database"] for r in ok(psql(ops_proxy, "SHOW STATS"))[1]}

    wait_for(lambda: not any(s.startswith("flood_") for s in listed()), timeout=5)
    assert not {n for n in listed() if n.startswith("flood_")}


def test_unknown_command_is_42601(ops_proxy):
    proc = psql(ops_proxy, "SELECT 1")
    assert proc.returncode != 0
    assert "ERROR:  invalid command 'SELECT 1', use SHOW HELP;" in proc.stderr
    with psycopg.connect(ops_proxy.dsn(dbname="iasql_proxy"), autocommit=True,
                         cursor_factory=psycopg.ClientCursor) as conn:
        with pytest.raises(psycopg.errors.SyntaxError):
            conn.execute("SHOW NOTHING")
        assert conn.execute("SHOW VERSION").fetchone()[0].startswith("iasql-proxy")


def test_reload_pause_resume(ops_proxy, pg_roles):
    ok(psql(ops_proxy, "RELOAD"))
    assert "event=reload " in ops_proxy.log()
    ok(psql(ops_proxy, "PAUSE postgres"))
    _, rows = ok(psql(ops_proxy, "SHOW DATABASES"))
    # '*' serves postgres; the paused name is the one clients ask for
    proc = psql(ops_proxy, "PAUSE postgres")
    assert proc.returncode != 0 and "already paused" in proc.stderr
    done = threading.Event()
    errors: list[BaseException] = []

    def client():
        try:
            with psycopg.connect(ops_proxy.dsn(user="alice", password=pg_roles["alice"], connect_timeout="20")) as c:
                c.execute("select 1")
        except BaseException as e:  # reported below
            errors.append(e)
        done.set()

    t = threading.Thread(target=client, daemon=True)
    t.start()
    wait_for(lambda: any(r["user"] == "alice" and r["cl_waiting"] == "1"
                         for r in ok(psql(ops_proxy, "SHOW POOLS"))[1]))
    assert not done.is_set()
    ok(psql(ops_proxy, "RESUME postgres"))
    assert done.wait(10) and not errors, errors
    proc = psql(ops_proxy, "RESUME postgres")
    assert proc.returncode != 0 and "not paused" in proc.stderr
    proc = psql(ops_proxy, "PAUSE nosuchdb_but_star_matches; RESUME nosuchdb_but_star_matches")
    assert proc.returncode == 0, proc.stderr


def test_pause_all_waits_for_servers(ops_proxy, pg_roles):
    conn = psycopg.connect(ops_proxy.dsn(user="alice", password=pg_roles["alice"]), autocommit=True)
    result: dict = {}

    def pause():
        t0 = time.monotonic()
        result["proc"] = psql(ops_proxy, "PAUSE")
        result["took"] = time.monotonic() - t0

    t = threading.Thread(target=pause, daemon=True)
    t.start()
    time.sleep(0.5)
    assert "proc" not in result  # session pooling: PAUSE returns once the client has left
    conn.close()
    t.join(10)
    assert result["proc"].returncode == 0, result["proc"].stderr
    _, rows = ok(psql(ops_proxy, "SHOW STATE"))
    assert {r["key"]: r["value"] for r in rows}["paused"] == "yes"
    ok(psql(ops_proxy, "RESUME"))
    with psycopg.connect(ops_proxy.dsn(user="alice", password=pg_roles["alice"])) as c:
        assert c.execute("select 1").fetchone() == (1,)


def test_extended_protocol_refused(ops_proxy):
    with psycopg.connect(ops_proxy.dsn(dbname="iasql_proxy"), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.FeatureNotSupported):
            conn.execute("SHOW POOLS", prepare=True)
    with RawConn(ops_proxy.port) as raw:  # the session is still usable after Sync
        raw.startup("postgres", "iasql_proxy", "postgres")
        raw.send(F.Parse("", "SHOW POOLS", ()).encode() + F.Sync().encode())
        msgs = raw.read_until_ready()
        assert [e.sqlstate for e in errors_in(msgs)] == ["0A000"]
        assert data_rows(raw.query("SHOW VERSION"))[0][0].startswith("iasql-proxy")


def test_shutdown_command(proxy_ini, start_proxy):
    proc = start_proxy(proxy_ini(admin_users="postgres"), "ops-shutdown")
    out = psql(proc, "SHUTDOWN")
    assert out.returncode == 0, out.stderr
    proc.process.wait(10)
    assert proc.process.returncode == 0
    assert "event=shutdown mode=immediate" in proc.log()


def test_stats_count_every_server_assignment_in_transaction_pooling(proxy_ini, start_proxy, pg_roles):
    """In transaction pooling each transaction takes a server connection: SHOW STATS'
    total_server_assignment_count counts them all, as PgBouncer's does (it counted only the
    assignments that had to wait)."""
    proxy = start_proxy(proxy_ini(pool_mode="transaction", admin_users="postgres"), "assign-proxy")
    dsn = f"host=127.0.0.1 port={proxy.port} user=alice dbname=postgres password={pg_roles['alice']} sslmode=disable"

    def stats() -> tuple[int, int]:
        row = next(r for r in ok(psql(proxy, "SHOW STATS"))[1] if r["database"] == "postgres")
        return int(row["total_xact_count"]), int(row["total_server_assignment_count"])

    # prepare_threshold=None: psycopg never prepares, so each transaction is one batch (a
    # prepared statement's Parse runs in a batch of its own, a server assignment of its own)
    with psycopg.connect(dsn, autocommit=True, prepare_threshold=None) as c:
        c.execute("select 0")
        xact0, assigned0 = stats()
        for _ in range(6):
            c.execute("select 1")
        with c.transaction():
            c.execute("select 2")
            c.execute("select 3")
        xact1, assigned1 = stats()
    assert (xact1 - xact0, assigned1 - assigned0) == (7, 7)
