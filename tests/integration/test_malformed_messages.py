"""Malformed messages after login get Postgres's own answer (issue 16, "Malformed input").

Differential: the same bytes go on a raw socket straight to Postgres (the ``pg`` fixture) and
through the proxy in session pooling (``scram_proxy``) and in transaction pooling (a proxy of
this module, pool of 2). Every frontend message type Postgres reads after login (Q P B E D C S H
F d c f X, the extended ones also naming a prepared statement) is sent with a body that is
*empty*, *truncated* (a valid length header whose fields end early: a Parse without its
parameter count, a Describe without the name's NUL), *overlong* (valid fields, then extra bytes)
or *garbage*; a few unknown type bytes too. Each client first prepares the unnamed statement and
a named one (``s1``), then sends the case followed by Sync and ``SELECT 42``, in one write or in
two. Compared: the message types and payloads, ErrorResponse/NoticeResponse as severity, SQLSTATE
and message, and whether the connection was closed.

Where the proxy answers differently on purpose (README "Errors the proxy itself sends"): a
message whose length Postgres refuses (below 4, or above 10,000 bytes for a type Postgres limits
so) makes Postgres close the connection without a word (it only logs "invalid message length");
the proxy sends ``FATAL 08P01 invalid message length N`` and closes, after the replies to the
messages before it, as Postgres runs those first.

No input may leave a traceback in the proxy's log (checked after every test).
"""

from __future__ import annotations

import struct
import time

import psycopg
import pytest

from proxy.wire import frontend as F
from tests.support.faults import Message, RawConn, error_fields

pytestmark = pytest.mark.timeout(300)

SETUP = F.Parse("", "SELECT 1").encode() + F.Parse("s1", "SELECT $1::int").encode() + F.Sync().encode()
PROBE = F.Sync().encode() + F.Query("SELECT 42").encode()

#: A valid body per case key (type byte first; a second letter names a variant).
VALID = {
    "Q": b"SELECT 1\0",
    "P": b"\0SELECT 2\0\0\0",                       # the unnamed statement
    "Pn": b"s2\0SELECT 2\0\0\x01\0\0\0\x17",          # a named one, one int4 parameter
    "B": b"\0\0\0\0\0\0\0\0",                        # the unnamed statement, no parameters
    "Bn": b"\0s1\0\0\0\0\x01\0\0\0\x017\0\0",         # s1 with its one parameter
    "E": b"\0\0\0\0\0",
    "D": b"S\0",
    "Dn": b"Ss1\0",
    "Dp": b"P\0",
    "C": b"S\0",
    "Cn": b"Ss1\0",
    "Cp": b"P\0",
    "S": b"",
    "H": b"",
    "F": struct.pack("!IhhH", 89, 0, 0, 0),          # version(), no arguments
    "d": b"abc",
    "c": b"",
    "f": b"msg\0",
    "X": b"",
}
GARBAGE = b"\xff\xfe\x00garbage\x01\x02"


def _frame(t: str, body: bytes) -> bytes:
    return t.encode("latin-1") + struct.pack("!i", len(body) + 4) + body


def _bodies(key: str) -> dict[str, bytes]:
    v = VALID[key]
    out = {"empty": b"", "overlong": v + b"xyz", "garbage": GARBAGE}
    if v:
        out["truncated"] = v[:-1]
    return out


CASES = [(key, kind, body) for key in VALID for kind, body in _bodies(key).items()]


def _norm(messages: list[Message]) -> list[tuple]:
    out = []
    for t, p in messages:
        if t in "EN":
            f = error_fields(p)
            out.append((t, f.get("S"), f.get("C"), f.get("M")))
        elif t == "K":
            out.append(("K",))
        else:
            out.append((t, p))
    return out


def _login(port: int, timeout: float = 10.0) -> RawConn:
    conn = RawConn(port, timeout=timeout)
    conn.startup("postgres", password="postgres")
    return conn


def _read_answer(conn: RawConn, until_probe: bool) -> tuple[list[tuple], bool]:
    """Messages until the connection closes, or (``until_probe``) the ReadyForQuery after the
    probe's DataRow ``42``; ('timeout',) marks silence. Returns (normalised messages, closed)."""
    got: list[Message] = []
    seen = False
    try:
        while True:
            msg = conn.read_message()
            if msg is None:
                return _norm(got), True
            got.append(msg)
            if msg[0] == "D" and msg[1].endswith(b"\x0242"):
                seen = True
            if until_probe and seen and msg[0] == "Z":
                return _norm(got), False
    except TimeoutError:
        return _norm(got) + [("timeout",)], False


def answer(port: int, data: bytes, split: bool = False, tail: bytes = PROBE, timeout: float = 5.0,
           setup: bytes = SETUP) -> tuple[list[tuple], bool]:
    """What a fresh, logged-in client receives after ``setup`` for ``data`` followed by ``tail``
    (in one write, or with ``split`` in two writes 0.2 s apart)."""
    conn = _login(port, timeout)
    try:
        if setup:
            conn.send(setup)
            conn.read_until_ready()
        try:
            if split:
                conn.send(data)
                time.sleep(0.2)
                conn.send(tail)
            else:
                conn.send(data + tail)
        except OSError:
            pass
        return _read_answer(conn, until_probe=bool(tail))
    finally:
        conn.close()


@pytest.fixture(scope="module")
def txn_proxy(pg, proxy_ini, start_proxy):
    """The proxy in transaction pooling (pool of 2)."""
    return start_proxy(proxy_ini(pool_mode="transaction", default_pool_size=2, query_wait_timeout=5),
                       "malformed-txn-proxy")


@pytest.fixture
def targets(pg, scram_proxy, txn_proxy):
    """Ports by name; the proxies' logs must show no traceback for what the test sent."""
    proxies = {"session": scram_proxy, "transaction": txn_proxy}
    before = {name: len(p.log()) for name, p in proxies.items()}
    yield {"postgres": pg.port, "session": scram_proxy.port, "transaction": txn_proxy.port}
    for name, p in proxies.items():
        new = p.log()[before[name]:]
        assert "Traceback" not in new, f"{name} proxy:\n{new}"


def _compare(targets: dict[str, int], data: bytes, **kw) -> dict[str, tuple]:
    got = {name: answer(port, data, **kw) for name, port in targets.items()}
    for name in ("session", "transaction"):
        assert got[name] == got["postgres"], f"{name} differs from Postgres:\n pg: {got['postgres']}\n {name}: {got[name]}"
    return got


@pytest.mark.parametrize("split", [False, True], ids=["one-write", "two-writes"])
@pytest.mark.parametrize("key,kind,body", CASES, ids=[f"{k}-{kind}" for k, kind, _ in CASES])
def test_malformed_message_gets_postgres_answer(targets, key, kind, body, split):
    got = _compare(targets, _frame(key[0], body), split=split)
    if key[0] != "X":  # the session goes on after an ERROR (Terminate ends it, without a word)
        assert got["postgres"][1] is False and got["postgres"][0][-1][0] == "Z"


@pytest.mark.parametrize("data", [b"k", b"k\0", b"\x81\0\0\0", b"\x81\0\0\0\x04", b"p\0\0\0\x09pass\0", b"\0"],
                         ids=["1-byte", "2-bytes", "4-bytes", "whole", "password", "nul"])
def test_unknown_type_is_fatal_at_once_even_with_1_to_4_bytes(targets, data):
    """Postgres reads the type byte and ends the session at once (it does not wait for the
    length word); so does the proxy."""
    got = _compare(targets, data, tail=b"", timeout=3)
    msgs, closed = got["postgres"]
    assert closed and msgs[-1][:3] == ("E", "FATAL", "08P01")
    assert msgs[-1][3] == f"invalid frontend message type {data[0]}"


@pytest.mark.parametrize("data", [b"Q", b"Q\0\0", b"P\0\0\0", b"S\0\0\0"], ids=["1", "3", "4", "sync-4"])
def test_known_type_with_partial_header_waits_as_postgres(targets, data):
    """Postgres waits for the rest of the length word of a known type (as long as the client
    stays connected); so does the proxy, and the message is answered once it is whole."""
    whole = {b"Q": F.Query("SELECT 42").encode(), b"P": F.Parse("", "SELECT 42").encode() + PROBE,
             b"S": F.Sync().encode() + F.Query("SELECT 42").encode()}[data[:1]]
    for name, port in targets.items():
        conn = _login(port, timeout=1)
        try:
            conn.send(data)
            assert _read_answer(conn, until_probe=True) == ([("timeout",)], False), name
            conn.timeout = 10
            conn.sock.settimeout(10)
            conn.send(whole[len(data):])
            msgs, closed = _read_answer(conn, until_probe=True)
            assert not closed and ("D", b"\0\x01\0\0\0\x0242") in msgs, (name, msgs)
        finally:
            conn.close()


LENGTH_CASES = {
    "below-4": b"Q\0\0\0\x02",
    "zero": b"E\0\0\0\0",
    "negative": b"P\xff\xff\xff\xf0",
    "sync-over-10000": b"S" + struct.pack("!i", 20000) + b"\0" * 19996,
    "describe-over-10000": b"D" + struct.pack("!i", 10001) + b"S" + b"x" * 9995 + b"\0",
}


@pytest.mark.parametrize("before", [b"", F.Query("SELECT 7").encode()], ids=["alone", "after-a-query"])
@pytest.mark.parametrize("case", list(LENGTH_CASES))
def test_bad_length_closes_as_postgres_with_the_documented_fatal(targets, case, before):
    """Postgres closes without a word (it logs "invalid message length"); the proxy sends
    ``FATAL 08P01 invalid message length N`` (README), after answering what came before."""
    data = before + LENGTH_CASES[case]
    got = {name: answer(port, data, tail=b"") for name, port in targets.items()}
    pg_msgs, pg_closed = got["postgres"]
    assert pg_closed and all(m[0] != "E" for m in pg_msgs)
    length = struct.unpack("!i", LENGTH_CASES[case][1:5])[0]
    for name in ("session", "transaction"):
        assert got[name] == (pg_msgs + [("E", "FATAL", "08P01", f"invalid message length {length}")], True), name


def test_valid_messages_before_an_invalid_one_are_answered_first(targets):
    """A Query, then an extended batch without Sync, then an unknown type, in one write:
    Postgres runs the Query, answers the batch's messages and ends with FATAL; the proxy too."""
    data = (F.Query("SELECT 7").encode() + F.Parse("", "SELECT 8").encode() + F.Bind("", "", (), (), ()).encode()
            + F.Execute("", 0).encode() + b"\x81\0\0\0\x04" + F.Query("SELECT 9").encode())
    got = _compare(targets, data, tail=b"")
    msgs, closed = got["postgres"]
    assert closed and [m[0] for m in msgs] == ["T", "D", "C", "Z", "1", "2", "D", "C", "E"]
    assert msgs[-1] == ("E", "FATAL", "08P01", "invalid frontend message type 129")


@pytest.fixture
def scratch_table(pg):
    pg.psql("DROP TABLE IF EXISTS malformed_rows; CREATE TABLE malformed_rows(v int)")
    yield "malformed_rows"
    pg.psql("DROP TABLE IF EXISTS malformed_rows")


def _rows(pg) -> list[int]:
    with psycopg.connect(pg.dsn(), autocommit=True) as c:
        return sorted(r[0] for r in c.execute("SELECT v FROM malformed_rows"))


def test_what_runs_before_an_invalid_message_commits_or_rolls_back_as_on_postgres(targets, pg, scratch_table):
    """An autocommit INSERT before the bad message is committed; an INSERT in an extended batch
    without Sync (its implicit transaction) and one in an open block are rolled back by the
    FATAL, on Postgres and through the proxy alike."""
    for name, port in targets.items():
        pg.psql("TRUNCATE malformed_rows")
        data = (F.Query("INSERT INTO malformed_rows VALUES (1)").encode()
                + F.Parse("", "INSERT INTO malformed_rows VALUES (2)").encode() + F.Bind("", "", (), (), ()).encode()
                + F.Execute("", 0).encode() + b"k\0\0\0\x04")
        msgs, closed = answer(port, data, tail=b"")
        assert closed and msgs[-1] == ("E", "FATAL", "08P01", "invalid frontend message type 107"), name
        assert _rows(pg) == [1], name
        pg.psql("TRUNCATE malformed_rows")
        msgs, closed = answer(port, F.Query("BEGIN; INSERT INTO malformed_rows VALUES (3)").encode() + b"k", tail=b"")
        assert closed and msgs[-1][3] == "invalid frontend message type 107", name
        time.sleep(0.3)
        assert _rows(pg) == [], name


def test_bind_with_the_wrong_parameter_count_names_the_clients_statement(targets):
    """PostgreSQL's error names the statement; in transaction pooling it is the client's name,
    not the server-side one, also when the connection already holds the statement."""
    bind = _frame("B", b"\0s1\0\0\0\0\0\0\0") + F.Execute("", 0).encode()
    got = _compare(targets, bind + F.Sync().encode() + bind)
    errors = [m for m in got["postgres"][0] if m[0] == "E"]
    assert errors == [("E", "ERROR", "08P01", 'bind message supplies 0 parameters, but prepared statement "s1" requires 1')] * 2


def test_a_malformed_parse_leaves_the_previous_unnamed_statement(targets):
    """Postgres rejects a Parse it cannot read before it replaces the unnamed statement: a Bind of
    the unnamed statement in a later transaction still runs ``SELECT 1``."""
    bad = _frame("P", b"\0SELECT 2\0")  # no parameter count
    later = F.Bind("", "", (), (), ()).encode() + F.Execute("", 0).encode() + F.Sync().encode()
    got = _compare(targets, bad + F.Sync().encode() + later)
    assert ("D", b"\0\x01\0\0\0\x011") in got["postgres"][0]


def test_stray_copy_messages_outside_copy_are_ignored_and_a_later_copy_works(targets, scratch_table):
    """CopyData, CopyDone and CopyFail outside COPY are ignored by Postgres; a COPY FROM STDIN
    after them behaves normally."""
    data = (F.CopyDone().encode() + _frame("f", b"x\0") + F.CopyData(b"zz").encode()
            + F.Query("COPY malformed_rows FROM STDIN").encode() + F.CopyData(b"5\n").encode()
            + F.CopyDone().encode())
    got = _compare(targets, data, tail=F.Query("SELECT 42").encode())
    assert ("C", b"COPY 1\0") in got["postgres"][0]


COPY_CASES = {
    "unknown-type": F.CopyData(b"1\n").encode() + b"k\0\0\0\x04",
    "unknown-type-1-byte": b"k",
    "query-inside-copy": F.Query("SELECT 1").encode(),
    "copyfail-empty": _frame("f", b"") + F.Query("SELECT 42").encode(),
    "copydone-overlong": _frame("c", b"xyz") + F.Query("SELECT 42").encode(),
    "flush-overlong": _frame("H", b"abc") + F.CopyDone().encode() + F.Query("SELECT 42").encode(),
}


@pytest.mark.parametrize("case", list(COPY_CASES))
def test_malformed_message_inside_copy_from_stdin(targets, scratch_table, case):
    """Inside COPY FROM STDIN Postgres reads only CopyData, CopyDone, CopyFail, Flush and Sync:
    another type gets ERROR ``unexpected message type`` and then FATAL ``protocol
    synchronization was lost``; a bad CopyDone/CopyFail/Flush body is the COPY's to judge."""
    got = {}
    for name, port in targets.items():
        conn = _login(port, timeout=3)
        try:
            conn.send(F.Query("COPY malformed_rows FROM STDIN").encode())
            assert conn.read_message()[0] == "G"
            conn.send(COPY_CASES[case])
            got[name] = _read_answer(conn, until_probe=True)
        finally:
            conn.close()
    assert got["session"] == got["postgres"]
    assert got["transaction"] == got["postgres"]


def test_bad_length_inside_copy_as_postgres_with_the_documented_fatal(targets, scratch_table):
    """A CopyData with length 2 inside COPY: Postgres sends ERROR 08006 and FATAL 08P01; the
    proxy sends the same."""
    for name, port in targets.items():
        conn = _login(port, timeout=3)
        try:
            conn.send(F.Query("COPY malformed_rows FROM STDIN").encode())
            assert conn.read_message()[0] == "G"
            conn.send(b"d\0\0\0\x02")
            msgs, closed = _read_answer(conn, until_probe=False)
        finally:
            conn.close()
        assert closed and msgs == [
            ("E", "ERROR", "08006", "unexpected EOF on client connection with an open transaction"),
            ("E", "FATAL", "08P01", "terminating connection because protocol synchronization was lost")], name


def test_queued_client_with_an_empty_describe_does_not_touch_another_session(pg, proxy_ini, start_proxy):
    """Issue 16, defect 8: with the pool's only connection busy, a client that sends
    ``D\\0\\0\\0\\4`` waits in the queue; when the connection comes, it gets Postgres's ERROR
    (before, an IndexError closed the connection of the session that gave it back)."""
    proxy = start_proxy(proxy_ini(pool_mode="transaction", default_pool_size=1, query_wait_timeout=10),
                        "malformed-queue-proxy")
    holder = _login(proxy.port)
    waiter = _login(proxy.port)
    try:
        holder.send(F.Query("BEGIN").encode())
        holder.read_until_ready()
        waiter.send(b"D\0\0\0\x04")
        time.sleep(0.3)
        holder.send(F.Query("SELECT 5; COMMIT").encode())
        assert ("D", b"\0\x01\0\0\0\x015") in _norm(holder.read_until_ready())
        waiter.send(PROBE)
        msgs, closed = _read_answer(waiter, until_probe=True)
        assert not closed and msgs[0] == ("E", "ERROR", "08P01", "no data left in message")
        assert ("D", b"\0\x01\0\0\0\x0242") in _norm(holder.query("SELECT 42"))
    finally:
        holder.close()
        waiter.close()
    assert "Traceback" not in proxy.log()


@pytest.fixture(scope="module")
def pool_of_one(pg, proxy_ini, start_proxy):
    """Transaction pooling with one server connection: the next client gets the same one."""
    return start_proxy(proxy_ini(pool_mode="transaction", default_pool_size=1, query_wait_timeout=10),
                       "malformed-pool1-proxy")


def _next_client_sees(proxy) -> tuple[list, list]:
    """What a fresh client gets for a named Parse + Bind/Execute, and for a Query of its settings."""
    c = _login(proxy.port)
    try:
        c.send(F.Parse("g", "SELECT $1::int", (23,)).encode() + F.Bind("", "g", (0,), (b"5",), ()).encode()
               + F.Execute("", 0).encode() + F.Sync().encode())
        extended = _norm(c.read_until_ready())
        simple = _norm(c.query("SELECT current_setting('work_mem'), current_user::text"))
        return extended, simple
    finally:
        c.terminate()


@pytest.mark.parametrize("first", [
    F.Query("SET work_mem = '3MB'").encode() + F.Terminate().encode(),
    F.Query("SELECT set_config('work_mem', '3MB', false)").encode() + _frame("X", b"junk"),
    F.Query("RESET ALL; SET work_mem = '3MB'").encode() + b"k",
    b"P\0\0\0\x04",                       # a Parse Postgres rejects, the batch left open...
], ids=["set-terminate", "set-config-terminate-with-body", "set-unknown-type", "failed-parse-then-terminate"])
def test_a_client_leaving_right_after_a_change_leaves_nothing_behind(pool_of_one, first):
    """Found by the fuzz campaign: a client that changes a setting and leaves at once (Terminate,
    or a message that ends its session) must not leave the setting on the pooled connection, and
    one that leaves while Postgres skips to Sync must not hand that state to the next client."""
    c = _login(pool_of_one.port)
    c.send(first)
    time.sleep(0.05)
    c.send(F.Terminate().encode()) if first == b"P\0\0\0\x04" else None
    time.sleep(0.2)
    c.close()
    extended, simple = _next_client_sees(pool_of_one)
    assert [m[0] for m in extended] == ["1", "2", "D", "C", "Z"]
    assert ("D", b"\0\x02\0\0\0\x034MB\0\0\0\x08postgres") in simple
    assert "Traceback" not in pool_of_one.log()


@pytest.mark.parametrize("size", [20_000, 2_000_000], ids=["20kB", "2MB"])
def test_long_texts_in_a_pipelined_batch_as_on_postgres(targets, size):
    """A long Parse text (classified off the event loop: over 16 KiB and stateful, or over 1 MiB)
    in the middle of a pipelined batch, behind a Bind of a named statement: the batch is answered
    as by Postgres, and the setting it makes is the client's."""
    long_set = "SET work_mem = '3MB' /* " + "x" * size + " */"
    data = (F.Bind("", "s1", (0,), (b"7",), ()).encode() + F.Execute("", 0).encode()
            + F.Parse("", long_set).encode() + F.Bind("", "", (), (), ()).encode() + F.Execute("", 0).encode()
            + F.Sync().encode() + F.Query("SELECT current_setting('work_mem')").encode())
    got = _compare(targets, data)
    assert ("D", b"\0\x01\0\0\0\x033MB") in got["postgres"][0]
