"""``MOVE db TO server`` on the admin console (issue 19, point 3): a database moves between the two
Postgres servers while clients use it; transaction-pooling clients see a pause, not an error;
session-pooling clients are disconnected with 57P01 and a message that says why; every proxy
follows the new route; nothing committed is lost."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from tests.ops.helpers import psql
from tests.scale.conftest import connect_db, db_conn
from tests.scale.test_many_proxies import wait_connectable
from tests.scale.test_metadata import server_of

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def txn_proxy(fleet_ini, start_proxy):
    """A third proxy of the fleet, in transaction pooling."""
    return start_proxy(fleet_ini(pool_mode="transaction"), "fleet-txn")


def test_move_pauses_transaction_clients_and_ends_sessions(fleet, txn_proxy, servers):
    a, b = fleet
    db = connect_db(a, "move-me")
    wait_connectable(txn_proxy, db, within=2.0)
    source = server_of(servers, db)
    dest = f"pg{2 - source}"  # the other server's [servers] name (pg1, pg2)
    with db_conn(a, db, autocommit=True) as c:
        c.execute("CREATE TABLE t (v int)")
    session_client = db_conn(a, db, autocommit=True)  # session pooling (the fleet's default)
    assert session_client.execute("SELECT count(*) FROM t").fetchone() == (0,)

    # a transaction-pooling client writes all along the move
    written: list[int] = []
    errors: list[str] = []
    stop = threading.Event()

    def writer() -> None:
        with db_conn(txn_proxy, db, autocommit=True) as c:
            i = 0
            while not stop.is_set():
                try:
                    c.execute("INSERT INTO t VALUES (%s)", (i,))
                    written.append(i)
                except psycopg.Error as e:
                    errors.append(f"{type(e).__name__}: {e}")
                i += 1
                time.sleep(0.01)

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    time.sleep(0.5)
    moved = psql(a, f'MOVE "{db["id"]}" TO {dest}', timeout=120)
    time.sleep(0.5)
    stop.set()
    t.join(30)
    assert moved.returncode == 0, moved.stderr
    assert "MOVE" in moved.stdout and f"now on {dest}" in moved.stderr  # progress NOTICEs
    assert errors == []  # a pause, never an error
    assert server_of(servers, db) == 1 - source  # and the old copy is gone
    # the session-pooling client was told why it was disconnected
    with pytest.raises(psycopg.OperationalError) as ei:
        session_client.execute("SELECT 1")
    assert f'database "{db["id"]}" is moving to server "{dest}"' in str(ei.value)
    session_client.close()
    # every committed row is on the new server, seen through every proxy
    for proxy in (a, b, txn_proxy):
        with db_conn(proxy, db, autocommit=True) as c:
            assert sorted(r[0] for r in c.execute("SELECT v FROM t")) == written
    assert len(written) > 10
    # IaSQL's metadata moved with it: calls work there
    with db_conn(b, db, autocommit=True) as c:
        assert c.execute("SELECT count(*) FROM iasql_modules_installed()").fetchone()[0] >= 0


def test_move_refusals(fleet, servers):
    a, _ = fleet
    db = connect_db(a, "move-refusals")
    here = f"pg{server_of(servers, db) + 1}"
    for command, state, text in (
            (f'MOVE "{db["id"]}" TO {here}', "55000", f'is already on server "{here}"'),
            (f'MOVE "{db["id"]}" TO nowhere', "42704", 'no server "nowhere" in [servers]'),
            ("MOVE no_such_db TO pg1", "3D000", 'database "no_such_db" has no route'),
            ("MOVE x", "42601", "invalid command"),
    ):
        proc = psql(a, command)
        assert proc.returncode != 0 and text in proc.stderr, (command, proc.stderr)
    # the database was left alone and is usable
    with db_conn(a, db, autocommit=True) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)
