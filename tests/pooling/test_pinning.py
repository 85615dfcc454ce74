"""What cannot follow pins (issue 5, "What cannot follow pins"): LISTEN, temporary tables, SQL
PREPARE, DECLARE .. WITH HOLD and session advisory locks keep the client on its connection, with
a log line ``event=pinned``; removing the state unpins.

Differential against direct Postgres with three clients on ``txn_proxy`` (pool of two). A pinned
client holds one connection, so the others share the second; "both other clients can open a
transaction at once" (steps ``BOTH_OPEN``) proves an unpin gave the connection back (otherwise the
second BEGIN waits and fails with query_wait_timeout after 5 s).
"""

from __future__ import annotations

import re

import psycopg
import pytest

from tests.pooling.support import differential, wait_until

pytestmark = pytest.mark.timeout(60)

BOTH_OPEN = [(1, "BEGIN"), (2, "BEGIN"), (1, "SELECT 1"), (2, "SELECT 2"), (1, "COMMIT"), (2, "COMMIT")]


@pytest.fixture
def diff(direct, via, txn_proxy, pool_db):
    def run(steps, clients=3):
        return differential(direct(pool_db), via(txn_proxy, pool_db), clients, steps)

    return run


def pinned_reasons(proxy) -> list[str]:
    return re.findall(r"event=pinned client=\S+ user=\S+ reason='([^']*)'", proxy.log())


def assert_pinned(proxy, reason: str) -> None:
    wait_until(lambda: reason in pinned_reasons(proxy), 5, what=f"event=pinned reason={reason!r} in the proxy log")


def _listen_script(dsn: str, pids: list | None = None) -> list:
    """LISTEN / NOTIFY / UNLISTEN * with three clients; what each observes (notifications included)."""
    conns = [psycopg.connect(dsn, autocommit=True) for _ in range(3)]
    got: list = []
    conns[0].add_notify_handler(lambda n: got.append(("notify", n.channel, n.payload)))
    out: list = []
    try:
        a, b, c = conns
        a.execute("LISTEN pool_ch")
        for i in range(4):
            if pids is not None:
                pids.append(a.execute("SELECT pg_backend_pid()").fetchone()[0])
            b.execute(f"NOTIFY pool_ch, 'from-b-{i}'")
            c.execute("SELECT pg_notify('pool_ch', 'from-c')")
            c.execute("SELECT 1")
            a.execute("SELECT 1")
            out.append(list(got))
            got.clear()
        out.append(a.execute("SELECT pg_listening_channels()").fetchall())
        out.append(b.execute("SELECT pg_listening_channels()").fetchall())
        a.execute("UNLISTEN *")
        out.append(a.execute("SELECT pg_listening_channels()").fetchall())
        b.execute("NOTIFY pool_ch, 'after-unlisten'")
        a.execute("SELECT 1")
        out.append(list(got))
        b.execute("BEGIN"); c.execute("BEGIN")  # noqa: E702  both fit only if a gave its connection back
        out.append((b.execute("SELECT 1").fetchone(), c.execute("SELECT 2").fetchone()))
        b.execute("COMMIT"); c.execute("COMMIT")  # noqa: E702
    finally:
        for x in conns:
            x.close()
    return out


def test_listen_pins_and_unlisten_unpins(pg, direct, via, txn_proxy, pool_db):
    expected = _listen_script(direct(pool_db))
    pids: list[int] = []
    got = _listen_script(via(txn_proxy, pool_db), pids)
    assert got == expected
    assert len(set(pids)) == 1, f"the listening client moved between backends: {pids}"
    assert_pinned(txn_proxy, "LISTEN pool_ch")


def test_temp_table_pins(diff, txn_proxy):
    diff([
        (0, "CREATE TEMP TABLE pool_tt(x int)"),
        (0, "INSERT INTO pool_tt VALUES (1)"),
        (1, "SELECT to_regclass('pg_temp.pool_tt')::text"),
        (2, "SELECT 1"),
        (0, "INSERT INTO pool_tt VALUES (2)"),
        (1, "SELECT count(*) FROM pool_tt"),               # 42P01 on both: not client 1's table
        (0, "BEGIN"), (0, "INSERT INTO pool_tt VALUES (3)"), (0, "COMMIT"),
        (0, "SELECT count(*) FROM pool_tt"), (0, "SELECT to_regclass('pg_temp.pool_tt')::text"),
        (0, "CREATE TEMP TABLE pool_tt2 ON COMMIT DROP AS SELECT 1"),   # no block: dropped at once
        (0, "SELECT sum(x) FROM pool_tt"),
        (0, "DISCARD TEMP"), (0, "SELECT to_regclass('pg_temp.pool_tt')::text"),
        *BOTH_OPEN,
    ])
    assert_pinned(txn_proxy, "CREATE TEMP TABLE pool_tt")


def test_sql_prepare_pins(diff, txn_proxy):
    diff([
        (0, "PREPARE pool_p(int) AS SELECT $1 * 2"),
        (1, "EXECUTE pool_p(1)"),                          # 26000 on both
        (2, "SELECT 1"),
        (0, "EXECUTE pool_p(21)"),
        (0, "BEGIN"), (0, "EXECUTE pool_p(5)"), (0, "COMMIT"),
        (0, "SELECT name, statement FROM pg_prepared_statements ORDER BY name"),
        (1, "SELECT count(*) FROM pg_prepared_statements"),
        (0, "DEALLOCATE pool_p"), (0, "EXECUTE pool_p(1)"),
        *BOTH_OPEN,
        (1, "PREPARE pool_q AS SELECT 'q'"), (1, "EXECUTE pool_q"), (2, "SELECT 3"), (1, "EXECUTE pool_q"),
        (1, "DEALLOCATE ALL"), (1, "EXECUTE pool_q"),
        (0, "BEGIN"), (2, "BEGIN"), (0, "COMMIT"), (2, "COMMIT"),
    ])
    assert_pinned(txn_proxy, "PREPARE pool_p")


def test_cursor_with_hold_pins(diff, txn_proxy):
    diff([
        (0, "DECLARE pool_c CURSOR WITH HOLD FOR SELECT g FROM generate_series(1, 10) g"),
        (0, "FETCH 3 FROM pool_c"),
        (1, "SELECT 1"), (2, "FETCH 1 FROM pool_c"),        # 34000 on both
        (0, "FETCH 3 FROM pool_c"),
        (0, "BEGIN"), (0, "FETCH 2 FROM pool_c"), (0, "COMMIT"),
        (1, "SELECT 2"),
        (0, "FETCH ALL FROM pool_c"), (0, "CLOSE pool_c"), (0, "FETCH 1 FROM pool_c"),
        *BOTH_OPEN,
    ])
    assert_pinned(txn_proxy, "DECLARE pool_c CURSOR WITH HOLD")


def test_advisory_lock_pins(diff, txn_proxy):
    """The other clients probe the lock with the transaction-scoped try function (which pins nothing)."""
    mine = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
    diff([
        (0, "SELECT pg_advisory_lock(4242)"),
        (1, "SELECT pg_try_advisory_xact_lock(4242)"),      # false: client 0's session holds it
        (0, mine), (2, mine),
        (0, "BEGIN"), (0, mine), (0, "COMMIT"),
        (1, "SELECT pg_try_advisory_xact_lock(4242)"),
        (0, "SELECT pg_advisory_unlock_all()"), (0, mine),
        *BOTH_OPEN,
        (1, "SELECT pg_try_advisory_lock(4243)"), (2, "SELECT pg_try_advisory_xact_lock(4243)"), (1, mine),
        (1, "SELECT pg_advisory_unlock_all()"),
        (0, "BEGIN"), (2, "BEGIN"), (0, "COMMIT"), (2, "COMMIT"),
    ])
    assert_pinned(txn_proxy, "pg_advisory_lock")


def test_failed_try_advisory_lock_leaves_no_pin(diff):
    """pg_try_advisory_lock that returns false takes no lock: the client has no state to stay for,
    so it must not keep a connection (here: client 2 then needs the second connection)."""
    diff([
        (0, "SELECT pg_advisory_lock(4244)"),
        (1, "SELECT pg_try_advisory_lock(4244)"),           # false: nothing held by client 1
        (2, "SELECT 1"),
        (1, "SELECT 2"), (2, "SELECT 3"),
        (0, "SELECT pg_advisory_unlock_all()"),
    ])


def test_pinned_connection_not_reused_after_client_leaves(txn_proxy, via, pool_db):
    """A client that leaves while pinned takes its connection's state with it: the next clients do
    not see its temporary table, listen channel or prepared statement."""
    dsn = via(txn_proxy, pool_db)
    with psycopg.connect(dsn, autocommit=True) as a:
        a.execute("CREATE TEMP TABLE pool_left(x int)")
        a.execute("LISTEN pool_left_ch")
        a.execute("PREPARE pool_left_p AS SELECT 1")
    conns = [psycopg.connect(dsn, autocommit=True) for _ in range(2)]
    try:
        conns[0].execute("BEGIN")  # the two clients use both connections
        for c in conns:
            assert c.execute("SELECT to_regclass('pg_temp.pool_left')").fetchone() == (None,)
            assert c.execute("SELECT count(*) FROM pg_listening_channels()").fetchone() == (0,)
            assert c.execute("SELECT count(*) FROM pg_prepared_statements WHERE name = 'pool_left_p'").fetchone() == (0,)
        conns[0].execute("COMMIT")
    finally:
        for c in conns:
            c.close()
