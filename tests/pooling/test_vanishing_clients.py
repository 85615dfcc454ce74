"""Pool integrity (issue 16, "Pool integrity"): a client that vanishes in any protocol state costs
at most its own server connection, which is closed or cleanly reset, and the pool's accounting
(SHOW POOLS, the client slot) returns to idle; a message is forwarded only when it is whole and
valid, so no byte of one client is ever read by a server connection serving another.

Every case runs on plain TCP in transaction pooling (``server_tls_sslmode = disable``), with more
vanishing clients than the pool has connections, and ends by checking what a user would check:
SHOW POOLS back to idle (no client, no active or "tested" server connection) and a fresh client
getting its own result. Deadlines are generous and never the thing tested.
"""

from __future__ import annotations

import random
import socket
import struct
import threading
import time
import uuid

import psycopg
import pytest

from proxy.wire import frontend as F
from tests.fuzz.campaign import (
    IDLE,  # what SHOW POOLS says of a pool nobody uses (sv_idle aside)
)
from tests.fuzz.campaign import show_pools as pools_row
from tests.pooling.conftest import direct_dsn, proxy_dsn
from tests.support.faults import RawConn, data_rows, errors_in

pytestmark = pytest.mark.timeout(180)

POOL = 2


# -- helpers --------------------------------------------------------------------------------------

def show_pools(proxy, dbname: str) -> dict[str, int]:
    """The SHOW POOLS row of ``dbname``/postgres (numbers as ints; zeros when the pool is unknown)."""
    return pools_row(proxy.port, dbname)


def wait_pool_idle(proxy, dbname: str, timeout: float = 30.0) -> dict[str, int]:
    """Poll SHOW POOLS until the pool is idle (IDLE); AssertionError with the last row otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        row = show_pools(proxy, dbname)
        if all(row.get(k, 0) == v for k, v in IDLE.items()):
            return row
        if time.monotonic() > deadline:
            raise AssertionError(f"the pool never went back to idle: {row}")
        time.sleep(0.2)


def login(proxy, dbname: str, timeout: float = 15.0) -> RawConn:
    c = RawConn(proxy.port, timeout=timeout)
    c.startup("postgres", dbname, password="postgres")
    return c


def reset(c: RawConn) -> None:
    """Close with an RST (SO_LINGER 0), as a crashed or killed client does."""
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.sock.close()


def serves_everyone(proxy, dbname: str, n: int = POOL) -> None:
    """``n`` clients at once each hold a transaction (so each needs its own server connection) and
    get their own answer: the pool has all its connections back."""
    conns = [psycopg.connect(proxy_dsn(proxy, dbname), autocommit=True) for _ in range(n)]
    try:
        for i, c in enumerate(conns):
            c.execute("BEGIN")
            assert c.execute("SELECT %s::int", (i,)).fetchone() == (i,)
        for c in conns:
            c.execute("COMMIT")
    finally:
        for c in conns:
            c.close()


@pytest.fixture
def proxy(make_proxy):
    return make_proxy(pool_mode="transaction", default_pool_size=POOL, query_wait_timeout=20,
                      admin_users="postgres")


@pytest.fixture
def table(pool_db, pg):
    name = f"vanish_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(direct_dsn(pg, pool_db), autocommit=True) as c:
        c.execute(f"CREATE TABLE {name} (v int)")
    return name


def pg_log_count(pg, text: str) -> int:
    """How many lines of Postgres's own log contain ``text``."""
    log = (pg.data_dir.parent / "postgres.log").read_text(errors="replace")
    return sum(1 for line in log.splitlines() if text in line)


def count_rows(pg, dbname: str, table: str) -> int:
    with psycopg.connect(direct_dsn(pg, dbname), autocommit=True) as c:
        return c.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


# -- the relay's scan -------------------------------------------------------------------------------------

@pytest.mark.parametrize("txn", [True, False])
def test_scan_sends_a_query_behind_an_unsynced_batch_to_the_slow_path(txn):
    """Whether a Query or FunctionCall behind extended messages without a Sync owes a ReadyForQuery
    depends on whether the batch failed (Postgres then discards it): never counted by the scan.
    CopyData and Flush leave a batch as open as it was; C and Python scans agree."""
    from proxy.wire.fastpath import SCAN_CLIENT, scan_client

    limit = 1 << 30
    fcall = F.FunctionCall(1598, (), (), 0).encode()
    behind = [
        F.Execute("p").encode() + F.Query("SELECT 1").encode() + F.Sync().encode(),
        F.Parse("", "SELECT 1").encode() + F.Bind("", "", (), (), ()).encode() + F.Execute("").encode()
        + F.Flush().encode() + F.CopyData(b"x").encode() + F.Query("SELECT 1").encode(),
        F.Describe(b"P", "").encode() + fcall,
    ]
    for data in behind:
        assert scan_client(data, txn, limit) == SCAN_CLIENT(data, txn, limit) == -1
    synced = F.Execute("p").encode() + F.Sync().encode() + F.Query("SELECT 1").encode()
    r = SCAN_CLIENT(synced, txn, limit)
    assert r == scan_client(synced, txn, limit) and r >= 0 and (r >> 8) & 0x7FFFFF == 2
    d = F.Query("SELECT 1").encode() + F.CopyData(b"x").encode()
    r = SCAN_CLIENT(d, txn, limit)
    assert r == scan_client(d, txn, limit) and r & 255 == ord("Q")  # CopyData is not "the last message"


# -- defect 4: vanishing while Postgres waits for the client's input -----------------------------------

@pytest.mark.parametrize("how", ["close", "reset"])
def test_clients_gone_mid_copy_from_stdin_leave_nothing_behind(proxy, pool_db, pg, table, how):
    """25 clients each send ``COPY t FROM STDIN`` and one CopyData in one write, then go: before,
    SHOW POOLS stayed at cl_active = sv_active = pool size for good and nobody else got a
    connection. Postgres never commits a COPY that did not end."""
    clients = [login(proxy, pool_db) for _ in range(25)]
    for c in clients:
        c.send(F.Query(f"COPY {table} FROM STDIN").encode() + F.CopyData(b"1\n").encode())
    time.sleep(0.3)
    for c in clients:
        reset(c) if how == "reset" else c.sock.close()
    wait_pool_idle(proxy, pool_db)
    serves_everyone(proxy, pool_db)
    assert count_rows(pg, pool_db, table) == 0


def test_client_gone_mid_copy_after_copy_in_response(proxy, pool_db, pg, table):
    """The client has read the CopyInResponse (Postgres now waits for it) and closes its socket."""
    clients = [login(proxy, pool_db) for _ in range(POOL + 2)]
    for c in clients[:POOL]:
        c.send(F.Query(f"COPY {table} FROM STDIN").encode())
        assert c.read_message()[0] == "G"
        c.send(F.CopyData(b"7\n").encode())
    for c in clients:
        c.sock.close()
    wait_pool_idle(proxy, pool_db)
    serves_everyone(proxy, pool_db)
    assert count_rows(pg, pool_db, table) == 0


def _missing_portal_then_query() -> bytes:
    # Execute of a portal that does not exist fails; Postgres then discards everything up to Sync,
    # the Query included, and sends one ReadyForQuery (for the Sync)
    return F.Execute("no_such_portal").encode() + F.Query("SELECT 1").encode() + F.Sync().encode()


def test_clients_gone_after_failed_execute_query_sync(proxy, pool_db):
    """Execute of a missing portal + Query + Sync, then close: Postgres discards the Query, so
    only one ReadyForQuery comes; the proxy must not wait for a second one for good."""
    clients = [login(proxy, pool_db) for _ in range(3 * POOL)]
    for c in clients:
        c.send(_missing_portal_then_query())
    time.sleep(0.3)
    for c in clients:
        c.sock.close()
    wait_pool_idle(proxy, pool_db)
    serves_everyone(proxy, pool_db)


def test_failed_execute_query_sync_answers_as_postgres_and_gives_the_connection_back(proxy, pool_db, pg):
    """The same messages from a client that stays: exactly Postgres's replies (the error and one
    ReadyForQuery), the next statement answered, and the connection back in the pool in between."""
    seen = {}
    for where, port in (("direct", pg.port), ("proxy", proxy.port)):
        c = RawConn(port, timeout=10)
        c.startup("postgres", pool_db, password="postgres")
        c.send(_missing_portal_then_query())
        got = c.read_until_ready()
        assert [e.sqlstate for e in errors_in(got)] == ["34000"]
        seen[where] = [t for t, _ in got]
        if where == "proxy":
            row = show_pools(proxy, pool_db)
            assert (row["sv_active"], row["sv_tested"]) == (0, 0), row  # not held while idle
        assert data_rows(c.query("SELECT 2")) == [["2"]]
        c.terminate()
    assert seen["proxy"] == seen["direct"] == ["E", "Z"]
    wait_pool_idle(proxy, pool_db)


def test_query_in_an_open_batch_that_did_not_fail_is_answered(proxy, pool_db, pg):
    """Parse/Bind/Execute then a Query before the Sync, no error: Postgres runs both and sends two
    ReadyForQuery; through the proxy too, and the connection goes back afterwards."""
    data = (F.Parse("", "SELECT 5").encode() + F.Bind("", "", (), (), ()).encode() + F.Execute("", 0).encode()
            + F.Query("SELECT 6").encode() + F.Sync().encode())
    seen = {}
    for where, port in (("direct", pg.port), ("proxy", proxy.port)):
        c = RawConn(port, timeout=10)
        c.startup("postgres", pool_db, password="postgres")
        c.send(data)
        got = c.read_until_ready(2)
        seen[where] = ([t for t, _ in got], data_rows(got))
        assert data_rows(c.query("SELECT 7")) == [["7"]]
        c.terminate()
    assert seen["proxy"] == seen["direct"]
    assert seen["direct"][1] == [["5"], ["6"]]
    wait_pool_idle(proxy, pool_db)


def test_half_closed_after_failed_execute_query_sync_gets_postgres_replies(proxy, pool_db, pg):
    """A client that shuts down its sending side after those messages gets what Postgres sends
    (the error, one ReadyForQuery), then the end of the connection; nothing stays behind."""
    seen = {}
    for where, port in (("direct", pg.port), ("proxy", proxy.port)):
        c = RawConn(port, timeout=10)
        c.startup("postgres", pool_db, password="postgres")
        c.send(_missing_portal_then_query())
        c.sock.shutdown(socket.SHUT_WR)
        seen[where] = [t for t, _ in c.read_until_closed()]
        c.close()
    assert seen["proxy"] == seen["direct"] == ["E", "Z"]
    wait_pool_idle(proxy, pool_db)


def test_half_closed_mid_copy_ends_the_session(proxy, pool_db, pg, table):
    """A client that shuts down its sending side in the middle of COPY FROM STDIN: Postgres would
    end the session (the copy never completes); the proxy ends it too instead of waiting."""
    c = login(proxy, pool_db)
    c.send(F.Query(f"COPY {table} FROM STDIN").encode() + F.CopyData(b"3\n").encode())
    c.sock.shutdown(socket.SHUT_WR)
    got = c.read_until_closed()  # socket.timeout (a failure) if the session is never ended
    c.close()
    assert [t for t, _ in got][:1] == ["G"]
    wait_pool_idle(proxy, pool_db)
    assert count_rows(pg, pool_db, table) == 0


# -- defect 5: an invalid message behind a valid one -----------------------------------------------

def _junk_behind_a_commit(proxy, dbname: str, junk: bytes) -> list:
    """Client A holds the pool's only connection in a transaction; client B's Query waits for it;
    A sends COMMIT and ``junk`` in one write. Returns A's messages; checks that B, which gets the
    connection the moment COMMIT's ReadyForQuery says idle, gets its own result and no error."""
    a = login(proxy, dbname)
    a.query("BEGIN")
    b = login(proxy, dbname)
    b.send(F.Query("SELECT 42").encode())
    time.sleep(0.05)  # B waits in the queue
    a.send(F.Query("COMMIT").encode() + junk)
    got_a = a.read_until_closed()
    a.close()
    got_b = b.read_until_ready()
    assert [(e.get("S"), e.sqlstate, e.message) for e in errors_in(got_b)] == []
    assert data_rows(got_b) == [["42"]]
    b.terminate()
    return got_a


def test_unknown_type_behind_a_query_never_reaches_the_next_client(make_proxy, pool_db, pg):
    """A Query and a message of unknown type 129 in one write: the client gets Postgres's FATAL
    08P01 from the proxy; Postgres never sees the bad message (its log has no such FATAL), so the
    next client (on a pool of one, waiting for that very connection) gets its own result."""
    proxy = make_proxy(pool_mode="transaction", default_pool_size=1, query_wait_timeout=20, admin_users="postgres")
    before = pg_log_count(pg, "invalid frontend message type 129")
    for _ in range(5):
        got = _junk_behind_a_commit(proxy, pool_db, b"\x81" + struct.pack("!i", 8) + b"junk")
        assert [(e.get("S"), e.sqlstate, e.message) for e in errors_in(got)][-1:] == [
            ("FATAL", "08P01", "invalid frontend message type 129")]
    time.sleep(0.3)
    assert pg_log_count(pg, "invalid frontend message type 129") == before, "the bad message reached Postgres"
    wait_pool_idle(proxy, pool_db)


@pytest.mark.parametrize("junk", [
    b"S" + struct.pack("!i", 20000) + b"x" * 19996,                 # a Sync declaring 20,000 bytes
    b"Q" + struct.pack("!i", 2),                                    # a length below 4
    b"Q" + struct.pack("!i", 1000),                                 # a header, then nothing
], ids=["long-sync", "short-length", "partial"])
def test_invalid_message_after_a_valid_one_is_never_forwarded(make_proxy, pool_db, pg, junk):
    """Whatever follows a valid message in the same write, Postgres only ever gets whole, valid
    messages (its log shows no "invalid message length"), and the next client is served."""
    proxy = make_proxy(pool_mode="transaction", default_pool_size=1, query_wait_timeout=20, admin_users="postgres")
    before = pg_log_count(pg, "invalid message length")
    if junk.startswith(b"Q" + struct.pack("!i", 1000)):
        # an incomplete message is not invalid: A keeps its session; it leaves, B is served
        a = login(proxy, pool_db)
        a.query("BEGIN")
        b = login(proxy, pool_db)
        b.send(F.Query("SELECT 42").encode())
        time.sleep(0.3)
        a.send(F.Query("COMMIT").encode() + junk)
        got = a.read_until_ready()
        assert errors_in(got) == []
        got_b = b.read_until_ready()
        assert errors_in(got_b) == [] and data_rows(got_b) == [["42"]]
        reset(a)
        b.terminate()
    else:
        got = _junk_behind_a_commit(proxy, pool_db, junk)
        assert [(e.get("S"), e.sqlstate) for e in errors_in(got)][-1:] == [("FATAL", "08P01")]
    time.sleep(0.3)
    assert pg_log_count(pg, "invalid message length") == before, "a malformed message reached Postgres"
    wait_pool_idle(proxy, pool_db)


# -- defect 6: a half-sent message must never stay on a pooled connection -----------------------------

def _send_part_of_a_huge_message(c: RawConn) -> None:
    try:  # refused at its header when max_packet_size is below 1e9: the proxy may close first
        c.send(b"d" + struct.pack("!i", 1_000_000_000) + b"\0" * (3 << 20))
    except OSError:
        pass
    time.sleep(0.3)
    reset(c)


@pytest.mark.parametrize("max_packet_size", [None, 2147483647], ids=["default", "2GB"])
@pytest.mark.parametrize("state", ["idle", "in transaction"])
def test_huge_copy_data_header_then_reset_does_not_swallow_the_next_statement(make_proxy, pool_db, state,
                                                                              max_packet_size):
    """A CopyData declaring 1,000,000,000 bytes outside COPY, part of its body, then an RST: the
    next client's statement (pool of one) is its own, not the rest of that body. With
    ``max_packet_size`` above that size the body is streamed to the server as it arrives, so the
    half-sent message must close that server connection."""
    proxy = make_proxy(pool_mode="transaction", default_pool_size=1, query_wait_timeout=20, admin_users="postgres",
                       max_packet_size=max_packet_size)
    for _ in range(2):
        c = login(proxy, pool_db)
        if state == "in transaction":
            c.query("BEGIN")
        _send_part_of_a_huge_message(c)
        nxt = login(proxy, pool_db)
        got = nxt.query("SELECT 44")
        assert errors_in(got) == [] and data_rows(got) == [["44"]]
        nxt.terminate()
    wait_pool_idle(proxy, pool_db)


def test_session_pooling_half_sent_message_is_not_reset_and_reused(make_proxy, pool_db):
    """Session pooling: the connection of a client that vanished mid-message is closed, not
    given the reset query behind a half-sent body."""
    proxy = make_proxy(pool_mode="session", default_pool_size=1, query_wait_timeout=20, admin_users="postgres",
                       max_packet_size=2147483647)
    c = login(proxy, pool_db)
    _send_part_of_a_huge_message(c)
    nxt = login(proxy, pool_db)
    got = nxt.query("SELECT 45")
    assert errors_in(got) == [] and data_rows(got) == [["45"]]
    nxt.terminate()


# -- defect 7: a server connection only for a whole message ---------------------------------------------

def test_slow_senders_hold_no_server_connection(proxy, pool_db):
    """25 clients that sent 15 of the 100 bytes of a Query hold nothing: SHOW POOLS shows no
    active server connection, other clients are served, and each slow client gets its own result
    once the rest of its message arrives."""
    msg = F.Query("SELECT 40".ljust(94)).encode()
    assert len(msg) == 100
    slow = [login(proxy, pool_db) for _ in range(25)]
    for c in slow:
        c.send(msg[:15])
    time.sleep(0.3)
    row = show_pools(proxy, pool_db)
    assert (row["sv_active"], row["sv_tested"], row["cl_waiting"]) == (0, 0, 0), row
    serves_everyone(proxy, pool_db)
    for c in slow:
        c.send(msg[15:])
    for c in slow:
        got = c.read_until_ready()
        assert data_rows(got) == [["40"]]
        c.terminate()
    wait_pool_idle(proxy, pool_db)


def test_slow_sender_in_a_header_holds_nothing(proxy, pool_db):
    """3 of a header's 5 bytes: nothing is taken either."""
    slow = [login(proxy, pool_db) for _ in range(10)]
    for c in slow:
        c.send(b"Q\0\0")
    time.sleep(0.2)
    assert show_pools(proxy, pool_db)["sv_active"] == 0
    serves_everyone(proxy, pool_db)
    for c in slow:
        c.sock.close()
    wait_pool_idle(proxy, pool_db)


# -- defect 9: concurrent vanishing clients in every protocol state --------------------------------------

def _pieces(table: str) -> list[bytes]:
    """Messages a fuzzing client strings together: whole, valid or not, in every protocol state."""
    q = lambda sql: F.Query(sql).encode()  # noqa: E731
    return [
        q("SELECT 1"), q("BEGIN"), q("COMMIT"), q("SELECT pg_sleep(0.05)"), q("SELECT 1/0"),
        q(f"COPY {table} FROM STDIN"), F.CopyData(b"5\n").encode(), b"c\0\0\0\x04", F.CopyFail("x").encode(),
        q("COPY (SELECT g FROM generate_series(1, 3000) g) TO STDOUT"),
        F.Parse("", "SELECT $1::int").encode(), F.Bind("", "", (), (b"3",), ()).encode(), F.Execute("", 0).encode(),
        F.Execute("nope").encode(), F.Sync().encode(), F.Flush().encode(), F.Describe(b"P", "").encode(),
        F.Parse("s1", "SELECT 2").encode(), F.Bind("", "s1", (), (), ()).encode(), F.Close(b"S", "s1").encode(),
        F.Describe(b"S", "s1").encode(), q("SET work_mem = '2MB'"), q("SET LOCAL work_mem = '3MB'"),
        q("SELECT 1; SELECT 2"), q(""), q("LISTEN x"), q("UNLISTEN *"), q("DEALLOCATE ALL"), q("DISCARD ALL"),
        F.FunctionCall(1598, (), (), 0).encode(), b"d" + struct.pack("!i", 3_000_000) + b"\0" * 70000,
        b"\x81\0\0\0\x08junk", b"S" + struct.pack("!i", 20000), b"Q\0\0\0\x02",
    ]


def _vanish(port: int, dbname: str, pieces: list[bytes], rng: random.Random, stuck: list) -> None:
    """One client that sends a random string of messages (maybe cut short or with a byte changed,
    in one write or many) and then vanishes: close, RST, or a half-close after which the proxy
    must end the session once Postgres's replies are out (``stuck`` collects those it never ends)."""
    try:
        c = RawConn(port, timeout=20)
        c.startup("postgres", dbname, password="postgres")
    except Exception:
        return
    data = b"".join(rng.choice(pieces) for _ in range(rng.randint(1, 6)))
    if rng.random() < 0.3:
        data = data[:rng.randrange(1, len(data) + 1)]
    if rng.random() < 0.1:
        b = bytearray(data)
        b[rng.randrange(len(b))] = rng.randrange(256)
        data = bytes(b)
    try:
        if rng.random() < 0.5:
            c.send(data)
        else:
            step = rng.randint(1, 300)
            for i in range(0, len(data), step):
                c.send(data[i:i + step])
        if rng.random() < 0.5:
            time.sleep(rng.random() * 0.2)
        how = rng.random()
        if how < 0.35:
            reset(c)
        elif how < 0.7:
            c.sock.close()
        else:
            c.sock.shutdown(socket.SHUT_WR)
            try:
                c.read_until_closed()
            except (socket.timeout, TimeoutError):
                stuck.append(data)
            c.close()
    except OSError:
        pass


def test_concurrent_vanishing_clients_leave_the_pool_whole(make_proxy, pool_db, table):
    """300 clients, 60 at a time, each vanishing in a random protocol state (mid-message,
    mid-COPY, mid-pipeline, after a failed batch, with replies owed), while good clients run and
    get exactly their own results: a half-closed client's session ends, no server connection is
    left counted active or tested without a client, and the pool serves as many clients at once
    as it has connections (before: a pool of 60 ended with 2 usable connections)."""
    size = 6
    proxy = make_proxy(pool_mode="transaction", default_pool_size=size, query_wait_timeout=30,
                       admin_users="postgres", max_packet_size=2147483647)
    rng = random.Random(16)
    seeds = [rng.randrange(1 << 30) for _ in range(300)]
    pieces = _pieces(table)
    good_errors: list[BaseException] = []
    stuck: list[bytes] = []

    def good(i: int) -> None:
        try:
            with psycopg.connect(proxy_dsn(proxy, pool_db), autocommit=True) as conn:
                for k in range(5):
                    assert conn.execute("SELECT %s::int * 2", (i * 10 + k,)).fetchone() == ((i * 10 + k) * 2,)
        except BaseException as e:  # noqa: BLE001 - reported below
            good_errors.append(e)

    for start in range(0, len(seeds), 60):
        threads = [threading.Thread(target=_vanish, args=(proxy.port, pool_db, pieces, random.Random(s), stuck))
                   for s in seeds[start:start + 60]]
        threads += [threading.Thread(target=good, args=(start + i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert not good_errors, good_errors[:3]
    assert not stuck, f"half-closed clients whose session never ended: {stuck[:3]!r}"
    row = wait_pool_idle(proxy, pool_db, timeout=60)
    assert row["sv_idle"] <= size
    serves_everyone(proxy, pool_db, size)
    assert "Traceback" not in proxy.log(), proxy.log()[-5000:]


# -- found by the long fuzz campaign (seed 16) ------------------------------------------------------

FUZZ_789 = [b"Q\x00\x00", b"\x00\x1bCOPY f",
            (b"uzz_t FROM STDIN\x00S\x00\x00\x00\x05ef\x00\x00\x00\x07fuzB\x00\x00\x00\x1a\x00s1\x00\x00"
             b"\x00\x00\x02\x00\x00\x00\x01a\x00\x00\x00\x012\x00\x00\x9c\xe2")]


@pytest.mark.parametrize("busy", [0.0, 0.05])
def test_fuzz_copy_then_bad_sync_and_copyfail_then_close(proxy, pool_db, pg, busy):
    """Seed 16, batch 789: ``COPY ... FROM STDIN`` cut in three writes, a Sync with a body, a
    CopyFail without its terminator and half a Bind, then close, while the pool is busy for
    ``busy`` seconds: the session stayed counted active with its server connection for good."""
    with psycopg.connect(direct_dsn(pg, pool_db), autocommit=True) as c:
        c.execute("CREATE TABLE IF NOT EXISTS fuzz_t (v int)")
    holders = [psycopg.connect(proxy_dsn(proxy, pool_db), autocommit=True) for _ in range(POOL)]
    threads = [threading.Thread(target=h.execute, args=(f"SELECT pg_sleep({busy})",)) for h in holders]
    for t in threads:
        t.start()
    clients = [login(proxy, pool_db) for _ in range(3)]
    for w in FUZZ_789:
        for c in clients:
            c.send(w)
        time.sleep(0.002)
    time.sleep(0.03)
    for c in clients:
        c.sock.close()
    for t in threads:
        t.join()
    for h in holders:
        h.close()
    wait_pool_idle(proxy, pool_db)
    serves_everyone(proxy, pool_db)


def test_scan_sends_a_copy_query_to_the_slow_path():
    """A Query beginning with COPY leaves the fast path in transaction pooling (C and Python
    scans agree), so that what the client pipelines behind it waits for the server's answer."""
    from proxy.wire.fastpath import SCAN_CLIENT, scan_client

    limit = 1 << 30
    for text in ("COPY t FROM STDIN", "  copy t from stdin", "\ncOpY t TO STDOUT"):
        data = F.Query(text).encode() + F.Sync().encode()
        assert scan_client(data, True, limit) == SCAN_CLIENT(data, True, limit) == -1
        assert scan_client(data, False, limit) == SCAN_CLIENT(data, False, limit) >= 0
    data = F.Query("SELECT 'copy'").encode()
    assert scan_client(data, True, limit) == SCAN_CLIENT(data, True, limit) >= 0


def test_syncs_pipelined_behind_copy_owe_nothing(proxy, pool_db, pg, table):
    """``COPY t FROM STDIN`` + two Syncs + CopyData in one write, CopyDone later: Postgres reads
    the Syncs as copy input and ignores them, so it owes one ReadyForQuery, not three. Before,
    the proxy waited for two that never came and kept the server connection while the client
    lived; now the client gets Postgres's replies and the connection goes back to the pool."""
    def run(port: int, dbname: str) -> list[str]:
        c = RawConn(port, timeout=15)
        c.startup("postgres", dbname, password="postgres")
        c.send(F.Query(f"COPY {table} FROM STDIN").encode() + F.Sync().encode() + F.Sync().encode()
               + F.CopyData(b"5\n").encode())
        got = [c.read_message()[0]]
        c.send(F.CopyDone().encode())
        got += [t for t, _ in c.read_until_ready()]
        got += [t for t, _ in c.query("SELECT 1")]
        return c, got

    direct, want = run(pg.port, pool_db)
    direct.close()
    c, got = run(proxy.port, pool_db)
    assert got == want == ["G", "C", "Z", "T", "D", "C", "Z"]
    row = show_pools(proxy, pool_db)
    assert row["sv_active"] == 0 and row["sv_tested"] == 0, row
    c.close()
    assert count_rows(pg, pool_db, table) == 2
    wait_pool_idle(proxy, pool_db)


def test_client_gone_before_the_replies_ahead_of_an_iasql_parse(proxy, pool_db):
    """A Query, then a Parse calling iasql_*, then the client vanishes before any reply: the
    interception waits for the Query's ReadyForQuery, which arrives after the client reset. Those
    replies must still be counted (not written): the fuzz campaign (seed 16, batch 784) saw the
    server connection held for good, counted "tested" with no client."""
    for _ in range(POOL + 1):
        c = login(proxy, pool_db)
        c.send(F.Query("SELECT pg_sleep(0.3)").encode()
               + F.Parse("s1", "SELECT * FROM iasql_version()").encode())
        time.sleep(0.05)
        reset(c)
    wait_pool_idle(proxy, pool_db)
    serves_everyone(proxy, pool_db)


def test_copyfail_then_unnamed_parse_in_one_read_is_relayed(proxy, pool_db, pg):
    """After CopyInResponse, the client's CopyFail and an unnamed Parse in one read: the Parse
    needs the slow path, which flushed the read from the batch start it had remembered from
    before the CopyFail, so the CopyFail stayed in the buffer while Postgres waited for it (seed
    16, batch 885). Postgres's answers: the COPY fails, the Parse waits for a Sync."""
    def run(port: int) -> list[str]:
        c = RawConn(port, timeout=15)
        c.startup("postgres", pool_db, password="postgres")
        c.send(F.Query("COPY fuzz_t FROM STDIN").encode())
        got = [c.read_message()[0]]
        c.send(F.CopyFail("no").encode() + F.Parse("", "SELECT $1::int", (23,)).encode())
        got += [t for t, _ in c.read_until_ready()]
        c.send(F.Sync().encode())
        got += [t for t, _ in c.read_until_ready()]
        c.close()
        return got

    with psycopg.connect(direct_dsn(pg, pool_db), autocommit=True) as c:
        c.execute("CREATE TABLE IF NOT EXISTS fuzz_t (v text)")
    assert run(proxy.port) == run(pg.port) == ["G", "E", "Z", "1", "Z"]
    wait_pool_idle(proxy, pool_db)
