"""Many proxies in front of many servers (issue 19 points 2 and 4): 2 proxy processes x 2
Postgres servers on loopback, following one routing table in the metadata database."""

from __future__ import annotations

import os
import signal
import threading
import time

import psycopg
import pytest

from tests.scale.conftest import connect_db, db_conn, metadata_conn
from tests.scale.test_metadata import server_of


def wait_connectable(proxy, db: dict, within: float) -> float:
    """Seconds until ``db`` accepts a login through ``proxy``; fails after ``within`` seconds."""
    start = time.monotonic()
    while True:
        try:
            with db_conn(proxy, db, autocommit=True) as c:
                c.execute("SELECT 1")
            return time.monotonic() - start
        except psycopg.OperationalError as e:
            if time.monotonic() - start > within:
                raise AssertionError(f"{db['id']} not reachable through port {proxy.port} after {within} s: {e}")
            time.sleep(0.02)


def test_any_proxy_serves_any_database_within_a_second(fleet, servers):
    a, b = fleet
    made = [connect_db(a, "reach-a0"), connect_db(b, "reach-b0"), connect_db(a, "reach-a1"), connect_db(b, "reach-b1")]
    assert {server_of(servers, db) for db in made} == {0, 1}
    for db in made:
        for proxy in (a, b):
            # the other proxy learns the route from the NOTIFY (its periodic re-read is 2 s away)
            assert wait_connectable(proxy, db, within=1.0) < 1.0
    with db_conn(a, made[0]) as c:
        c.execute("CREATE TABLE t (v int)")
        c.execute("INSERT INTO t VALUES (1)")
        c.commit()
    with db_conn(b, made[0]) as c:
        assert c.execute("SELECT v FROM t").fetchall() == [(1,)]


def test_iasql_calls_from_two_proxies_on_one_database_serialise(fleet):
    a, b = fleet
    db = connect_db(a, "serialise")
    wait_connectable(b, db, within=1.0)
    hold = 1.5
    with db_conn(a, db) as first, db_conn(b, db, autocommit=True) as second:
        first.execute("SELECT * FROM iasql_begin()")  # the IaSQL lock, held until this transaction ends
        notices: list[str] = []
        second.add_notice_handler(lambda d: notices.append(d.message_primary))
        out: dict = {}

        def commit() -> None:
            t0 = time.monotonic()
            try:
                out["rows"] = second.execute("SELECT * FROM iasql_commit()").fetchall()
            except Exception as e:  # noqa: BLE001 -- reported below
                out["error"] = e
            out["took"] = time.monotonic() - t0

        th = threading.Thread(target=commit)
        th.start()
        time.sleep(hold)
        assert th.is_alive(), out  # still waiting for the lock the other proxy's client holds
        first.commit()
        th.join(30)
    assert "error" not in out, out
    assert out["took"] >= hold - 0.2
    assert any("waiting for another IaSQL call" in n for n in notices), notices


def test_a_proxy_killed_loses_nothing_committed_and_the_other_goes_on(fleet_ini, start_proxy):
    doomed, survivor = start_proxy(fleet_ini(), "fleet-doomed"), start_proxy(fleet_ini(), "fleet-survivor")
    db = connect_db(doomed, "survives-kill")
    wait_connectable(survivor, db, within=1.0)
    with db_conn(doomed, db) as c:
        c.execute("CREATE TABLE t (v int)")
        c.execute("INSERT INTO t SELECT generate_series(1, 3)")
        c.commit()
    open_txn = db_conn(doomed, db)
    open_txn.execute("INSERT INTO t VALUES (4)")  # never committed
    open_txn.execute("SELECT * FROM iasql_begin()")  # holds the IaSQL lock when the proxy dies
    ongoing = db_conn(survivor, db, autocommit=True)
    assert ongoing.execute("SELECT count(*) FROM t").fetchone() == (3,)
    os.kill(doomed.process.pid, signal.SIGKILL)
    doomed.process.wait(10)
    assert ongoing.execute("SELECT array_agg(v ORDER BY v) FROM t").fetchone() == ([1, 2, 3],)
    with db_conn(survivor, db, autocommit=True) as c:
        assert c.execute("SELECT array_agg(v ORDER BY v) FROM t").fetchone() == ([1, 2, 3],)
        t0 = time.monotonic()
        c.execute("SELECT * FROM iasql_begin()")  # the dead proxy's lock went with its connection
        assert time.monotonic() - t0 < 10
        c.execute("SELECT * FROM iasql_commit()")
    new = connect_db(survivor, "after-kill")
    wait_connectable(survivor, new, within=1.0)
    ongoing.close()
    with pytest.raises(psycopg.OperationalError):
        open_txn.execute("SELECT 1")
    open_txn.close()


def test_a_stopped_server_fails_only_its_databases_and_they_come_back(fleet, servers):
    a, b = fleet
    dbs: dict[int, dict] = {}
    for i in range(6):
        db = connect_db(a, f"outage{i}")
        dbs.setdefault(server_of(servers, db), db)
        if len(dbs) == 2:
            break
    assert set(dbs) == {0, 1}
    for proxy in (a, b):
        for db in dbs.values():
            wait_connectable(proxy, db, within=1.0)
    kept = db_conn(a, dbs[0], autocommit=True)  # a session on the server that stays up
    servers[1].stop()
    try:
        for proxy in (a, b):
            with pytest.raises(psycopg.OperationalError) as info:
                db_conn(proxy, dbs[1])
            text = str(info.value)
            assert f"could not connect to server 127.0.0.1:{servers[1].port}" in text, text
            assert "on server pg2" in text, text
            with db_conn(proxy, dbs[0], autocommit=True) as c:
                assert c.execute("SELECT current_database()").fetchone() == (dbs[0]["id"],)
        assert kept.execute("SELECT 1").fetchone() == (1,)
        with metadata_conn(b) as c:
            health = c.execute("SELECT iasql_engine_health()").fetchone()[0]
            assert health.startswith("unhealthy: server pg2"), health
            # a new database goes to the server that answers
            row = c.execute("SELECT * FROM iasql_connect('during-outage')").fetchone()
        assert server_of(servers[:1], {"id": row[5]}) == 0
    finally:
        servers[1].start()
    for proxy in (a, b):  # back by themselves: server_login_retry is 1 s here
        assert wait_connectable(proxy, dbs[1], within=10.0) < 10.0
    with metadata_conn(a) as c:
        assert c.execute("SELECT iasql_engine_health()").fetchone() == ("ok",)
    kept.close()


def test_a_route_missed_by_notify_is_found_by_the_periodic_read(fleet, servers):
    a, b = fleet
    db = connect_db(a, "missed-notify")
    wait_connectable(b, db, within=1.0)
    meta = servers[0]
    # move the route without a notification: the trigger off, as if the NOTIFY were lost
    meta.psql("ALTER TABLE iasql_route DISABLE TRIGGER iasql_route_notify; "
              f"DELETE FROM iasql_route WHERE pg_name = '{db['id']}'; "
              "ALTER TABLE iasql_route ENABLE TRIGGER iasql_route_notify", dbname="iasql_metadata")
    deadline = time.monotonic() + 5  # route_refresh_interval is 2 s here
    while True:
        try:
            db_conn(b, db).close()
        except psycopg.OperationalError as e:
            assert "does not exist" in str(e)
            break
        assert time.monotonic() < deadline, "the periodic read did not drop the route"
        time.sleep(0.1)
    server = "pg1" if server_of(servers, db) == 0 else "pg2"
    meta.psql("ALTER TABLE iasql_route DISABLE TRIGGER iasql_route_notify; "
              f"INSERT INTO iasql_route (pg_name, server) VALUES ('{db['id']}', '{server}'); "
              "ALTER TABLE iasql_route ENABLE TRIGGER iasql_route_notify", dbname="iasql_metadata")
    assert wait_connectable(b, db, within=5.0) < 5.0


def test_routes_to_unknown_servers_are_ignored(fleet, servers):
    a, b = fleet
    meta = servers[0]
    meta.psql("INSERT INTO iasql_route (pg_name, server) VALUES ('ghost', 'nowhere')", dbname="iasql_metadata")
    try:
        time.sleep(0.5)
        for proxy in (a, b):
            with pytest.raises(psycopg.OperationalError, match='database "ghost" does not exist'):
                psycopg.connect(proxy.dsn(dbname="ghost"), connect_timeout=10)
            with metadata_conn(proxy) as c:
                assert c.execute("SELECT 1").fetchone() == (1,)
            assert "event=routes_unknown_server servers=nowhere" in proxy.log()
    finally:
        meta.psql("DELETE FROM iasql_route WHERE pg_name = 'ghost'", dbname="iasql_metadata")


def test_routes_outlive_a_metadata_server_outage(fleet, servers):
    a, b = fleet
    db = None
    for i in range(6):
        made = connect_db(a, f"meta-outage{i}")
        if server_of(servers, made) == 1:
            db = made
            break
    assert db is not None
    for proxy in (a, b):
        wait_connectable(proxy, db, within=1.0)
    servers[0].stop()
    try:
        time.sleep(0.5)
        for proxy in (a, b):  # the last table read stays in force; pg2's databases still log in
            wait_connectable(proxy, db, within=2.0)
            with pytest.raises(psycopg.OperationalError):
                metadata_conn(proxy)
    finally:
        servers[0].start()
    for proxy in (a, b):  # they follow the table again
        deadline = time.monotonic() + 15
        while proxy.log().count("event=routes_following") < 2:
            assert time.monotonic() < deadline, proxy.log()[-2000:]
            time.sleep(0.2)
        assert "event=routes_unavailable" in proxy.log()
    new = connect_db(b, "after-meta-outage")
    for proxy in (a, b):
        wait_connectable(proxy, new, within=1.0)


def test_show_routes_in_the_admin_console(fleet, servers):
    a, b = fleet
    db = connect_db(a, "shown")
    wait_connectable(b, db, within=1.0)
    with psycopg.connect(b.dsn(dbname="iasql_proxy"), autocommit=True) as c:
        c.cursor_factory = psycopg.ClientCursor
        cur = c.execute("SHOW ROUTES")
        assert [d.name for d in cur.description] == ["database", "server", "host", "port", "weight", "source"]
        rows = cur.fetchall()
    assert rows[0] == ("iasql_metadata", "pg1", "127.0.0.1", servers[0].port, "1", "metadata")
    assert rows[1] == (None, "pg2", "127.0.0.1", servers[1].port, "1", "servers")
    assert (db["id"], "pg1" if server_of(servers, db) == 0 else "pg2") in {r[:2] for r in rows if r[5] == "routes"}


def test_routed_databases_in_transaction_pooling(fleet, fleet_ini, start_proxy):
    a, _ = fleet
    txn = start_proxy(fleet_ini(pool_mode="transaction", default_pool_size=2), "fleet-txn")
    db = connect_db(a, "txn-pooled")
    wait_connectable(txn, db, within=1.0)
    with db_conn(txn, db, autocommit=True) as c, db_conn(txn, db, autocommit=True) as d:
        c.execute("CREATE TABLE t (v int)")
        c.execute("SET work_mem = '7MB'")
        d.execute("INSERT INTO t VALUES (1)")
        assert c.execute("SHOW work_mem").fetchone() == ("7MB",)
        assert d.execute("SHOW work_mem").fetchone() != ("7MB",)
        assert [r[0] for r in c.execute("SELECT module_name FROM iasql_modules_installed()").fetchall()] == [
            "iasql_functions", "iasql_platform"]
        assert c.execute("SELECT count(*) FROM t").fetchone() == (1,)
    with metadata_conn(txn) as c:
        assert "txn-pooled" in {r[1] for r in c.execute("SELECT * FROM iasql_db_list()").fetchall()}


def test_proxies_starting_together_make_one_metadata_database(fleet_ini, start_proxy, servers):
    first = start_proxy(fleet_ini(metadata_database="race_metadata"), "fleet-race-1")
    second = start_proxy(fleet_ini(metadata_database="race_metadata"), "fleet-race-2")
    deadline = time.monotonic() + 20
    while not all("event=routes_following" in p.log() for p in (first, second)):
        assert time.monotonic() < deadline, first.log()[-1500:] + second.log()[-1500:]
        time.sleep(0.1)
    assert sum(p.log().count("event=metadata_database_created") for p in (first, second)) == 1
    names = servers[0].psql("SELECT string_agg(datname, ',') FROM pg_database WHERE datname LIKE 'race_metadata%'")
    assert names.strip() == "race_metadata"  # no temporary copy left behind
    from tests.scale.conftest import PASSWORDS

    with psycopg.connect(second.dsn(user="alice", password=PASSWORDS["alice"], dbname="race_metadata"),
                         autocommit=True) as c:
        assert c.execute("SELECT * FROM iasql_db_list()").fetchall() == []


def test_every_worker_of_a_proxy_follows_the_routing_table(fleet, fleet_ini, start_proxy):
    a, _ = fleet
    multi = start_proxy(fleet_ini(workers=2), "fleet-workers")
    deadline = time.monotonic() + 20
    while multi.log().count("event=routes_following") < 2:  # one per worker
        assert time.monotonic() < deadline, multi.log()[-2000:]
        time.sleep(0.1)
    db = connect_db(a, "two-workers")
    for _ in range(8):  # new connections land on either worker (the kernel hashes the client port)
        assert wait_connectable(multi, db, within=1.0) < 1.0
    made = connect_db(multi, "made-by-a-worker")
    assert wait_connectable(a, made, within=1.0) < 1.0
