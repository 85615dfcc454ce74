"""Differential tests: the same bytes sent straight to Postgres and through the proxy must produce
the same backend message stream, after normalising only BackendKeyData and process ids
(NotificationResponse's pid).

Each ``sql/*.sql`` script is sent three ways on a fresh connection:

- ``simple``: the whole file as one Query message (a multi-statement string: an error skips the
  rest, VACUUM is refused inside the implicit transaction block);
- ``extended``: per statement Parse/Bind/Describe(portal)/Execute/Sync, all pipelined in one write;
- ``extended-one-sync``: the same without the intermediate Syncs (one implicit transaction; after
  an error everything is skipped until the Sync).

Statements are separated by ``;`` at the end of a line. A ``COPY ... FROM STDIN`` gets
``COPY_DATA`` right behind it (pipelined). Login streams (from AuthenticationOk on) are compared too.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest

from proxy.wire import frontend as F
from tests.support.faults import Message, RawConn, ServerFatal, error_fields

pytestmark = pytest.mark.timeout(60)

SQL_DIR = Path(__file__).parent / "sql"
SCRIPTS = sorted(SQL_DIR.glob("*.sql"))
COPY_DATA = b"1\tone\n2\ttwo\n3\tthree\n"
USER, PASSWORD = "postgres", "postgres"
STARTUP = {"application_name": "differential"}
_COPY_FROM_STDIN = re.compile(r"\bcopy\b.*\bfrom\s+stdin\b", re.I | re.S)


@pytest.fixture(scope="module")
def fixed_table(pg):
    """A persistent table (same OID in both runs, so RowDescription's table OIDs are comparable)."""
    pg.psql("DROP TABLE IF EXISTS diff_fixed; "
            "CREATE TABLE diff_fixed(id int PRIMARY KEY, name text NOT NULL, amount numeric(10,2), "
            "tags text[], created date); "
            "INSERT INTO diff_fixed VALUES (1, 'one', 1.50, '{a,b}', '2020-01-01'), "
            "(2, 'two', NULL, '{}', '2021-02-03'), (3, 'three', 1234.56, NULL, NULL);")
    yield "diff_fixed"


@pytest.fixture(scope="module")
def targets(pg, scram_proxy, fixed_table):
    return {"direct": pg.port, "proxy": scram_proxy.port}


def split_statements(text: str) -> list[str]:
    parts = [p.strip() for p in re.split(r";[ \t]*\n", text)]
    out = [p.rstrip(";").strip() for p in parts
           if p.strip() and not all(line.strip().startswith("--") for line in p.strip().splitlines())]
    return out or [""]


def copy_tail(sql: str) -> bytes:
    return (F.CopyData(COPY_DATA).encode() + F.CopyDone().encode()) if _COPY_FROM_STDIN.search(sql) else b""


def build(mode: str, text: str) -> tuple[bytes, int]:
    """The bytes to send for ``mode`` and the number of ReadyForQuery messages they produce."""
    if mode == "simple":
        return F.Query(text).encode() + copy_tail(text), 1
    stmts = split_statements(text)
    out = bytearray()
    for stmt in stmts:
        out += (F.Parse("", stmt).encode() + F.Bind("", "", (), (), ()).encode()
                + F.Describe(b"P", "").encode() + F.Execute("", 0).encode() + copy_tail(stmt))
        if mode == "extended":
            out += F.Sync().encode()
    if mode == "extended-one-sync":
        out += F.Sync().encode()
        return bytes(out), 1
    return bytes(out), len(stmts)


def normalise(messages: list[Message]) -> list[Message]:
    out = []
    for t, payload in messages:
        if t == "K":
            payload = b"<BackendKeyData>"
        elif t == "A":
            payload = b"\0\0\0\0" + payload[4:]  # NotificationResponse: sender's process id
        out.append((t, payload))
    return out


def login(port: int, params: dict[str, str] | None = None, tls: bool = False) -> tuple[RawConn, list[Message]]:
    conn = RawConn(port, timeout=15)
    if tls:
        assert conn.ssl_request() == b"S"
        conn.wrap_tls()
    got = conn.startup(USER, password=PASSWORD, params=params if params is not None else STARTUP)
    ok = next(i for i, (t, p) in enumerate(got) if t == "R" and struct.unpack_from("!i", p)[0] == 0)
    return conn, got[ok:]


def run(port: int, data: bytes, ready: int, tls: bool = False) -> tuple[list[Message], list[Message]]:
    conn, login_stream = login(port, tls=tls)
    try:
        conn.send(data)
        return login_stream, conn.read_until_ready(ready)
    finally:
        conn.terminate()


def describe(messages: list[Message]) -> str:
    lines = []
    for t, p in messages:
        lines.append(f"{t} {p[:120]!r}")
    return "\n".join(lines)


def assert_same(direct: list[Message], through: list[Message]) -> None:
    d, t = normalise(direct), normalise(through)
    if d != t:
        for i, (a, b) in enumerate(zip(d, t)):
            if a != b:
                raise AssertionError(f"streams differ at message {i}:\n direct {a!r}\n  proxy {b!r}\n"
                                     f"--- direct ---\n{describe(d)}\n--- proxy ---\n{describe(t)}")
        raise AssertionError(f"stream lengths differ: direct {len(d)}, proxy {len(t)}\n"
                             f"--- direct ---\n{describe(d)}\n--- proxy ---\n{describe(t)}")


@pytest.mark.parametrize("mode", ["simple", "extended", "extended-one-sync"])
@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_script(targets, script: Path, mode: str):
    data, ready = build(mode, script.read_text())
    login_d, direct = run(targets["direct"], data, ready)
    login_p, through = run(targets["proxy"], data, ready)
    assert_same(login_d, login_p)
    assert_same(direct, through)
    assert direct[-1][0] == "Z"


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_script_through_tls(targets, script: Path):
    """The proxy's TLS side changes nothing in the stream (Postgres here is reached without TLS)."""
    data, ready = build("simple", script.read_text())
    login_d, direct = run(targets["direct"], data, ready)
    login_p, through = run(targets["proxy"], data, ready, tls=True)
    assert_same(login_d, login_p)
    assert_same(direct, through)


def test_scripts_cover_what_they_claim():
    """The scripts exercise what the differential suite promises (guards against silent edits)."""
    text = "\n".join(p.read_text() for p in SCRIPTS).lower()
    for needle in ("1/0", "begin;", "commit;", "set application_name", "vacuum", "copy", "raise notice",
                   "notify", "from stdin", "to stdout", "savepoint", "prepare"):
        assert needle in text, needle
    assert split_statements((SQL_DIR / "09_empty.sql").read_text()) == [""]


# ---------------------------------------------------------------------------------------------
# hand-built batches that the scripts cannot express
# ---------------------------------------------------------------------------------------------

def both(targets, data: bytes, ready: int, params: dict[str, str] | None = None):
    streams = []
    for name in ("direct", "proxy"):
        conn, login_stream = login(targets[name], params)
        try:
            conn.send(data)
            streams.append((login_stream, conn.read_until_ready(ready)))
        finally:
            conn.terminate()
    (ld, d), (lp, p) = streams
    assert_same(ld, lp)
    assert_same(d, p)
    return d


def test_login_with_startup_parameters(targets):
    params = {"application_name": "diff-params", "DateStyle": "SQL, DMY", "TimeZone": "Asia/Tokyo",
              "extra_float_digits": "3", "options": "-c search_path=pg_catalog,public -c work_mem=5MB"}
    got = both(targets, F.Query("show DateStyle; show search_path; show work_mem; "
                                "select '2020-03-04'::date, 0.1::float8").encode(), 1, params)
    assert [p for t, p in got if t == "D"][:3] == [b"\x00\x01\x00\x00\x00\x08SQL, DMY",
                                                   b"\x00\x01\x00\x00\x00\x11pg_catalog,public",
                                                   b"\x00\x01\x00\x00\x00\x035MB"]


def test_extended_with_parameters_named_statements_and_binary(targets):
    data = (F.Parse("s1", "select $1::int + $2::int as sum, $3::text as t", (23, 23, 25)).encode()
            + F.Describe(b"S", "s1").encode()
            + F.Bind("p1", "s1", (0, 1, 0), (b"40", struct.pack("!i", 2), None), (1,)).encode()
            + F.Describe(b"P", "p1").encode()
            + F.Execute("p1", 0).encode()
            + F.Close(b"P", "p1").encode()
            + F.Flush().encode()
            + F.Bind("", "s1", (), (b"1", b"2", b"x"), ()).encode()
            + F.Execute("", 0).encode()
            + F.Close(b"S", "s1").encode()
            + F.Sync().encode()
            + F.Parse("", "select generate_series(1, 10)").encode()
            + F.Bind("cur", "", (), (), ()).encode()
            + F.Execute("cur", 3).encode()  # PortalSuspended after 3 rows
            + F.Execute("cur", 3).encode()
            + F.Sync().encode())
    got = both(targets, data, 2)
    assert [t for t, _ in got].count("s") == 2


def test_pipelined_simple_queries(targets):
    data = b"".join(F.Query(q).encode() for q in ("select 1", "select 1/0", "", "begin", "select 2",
                                                  "commit", "select 'last'"))
    got = both(targets, data, 7)
    assert [p for t, p in got if t == "Z"] == [b"I", b"I", b"I", b"T", b"T", b"I", b"I"]


def test_function_call(targets):
    # FunctionCall of int4abs (pg_proc oid 1397) with a binary int4 argument
    data = F.FunctionCall(1397, (1,), (struct.pack("!i", -42),), 1).encode() + F.Query("select 1").encode()
    got = both(targets, data, 2)
    assert ("V", struct.pack("!i", 4) + struct.pack("!i", 42)) in got


def test_copy_fail(targets):
    data = (F.Query("create temp table cf(a int); copy cf from stdin").encode()
            + F.CopyData(b"1\n").encode() + F.CopyFail("client gave up").encode()
            + F.Query("select count(*) from cf").encode())
    got = both(targets, data, 2)
    assert any(t == "E" and b"client gave up" in p for t, p in got)


def test_copy_in_extended_with_pipelined_messages(targets):
    data = (F.Query("create temp table ce(a int, b text)").encode()
            + F.Parse("", "copy ce from stdin").encode() + F.Bind("", "", (), (), ()).encode()
            + F.Execute("", 0).encode()
            + F.CopyData(COPY_DATA[:7]).encode() + F.CopyData(COPY_DATA[7:]).encode() + F.CopyDone().encode()
            + F.Sync().encode()
            + F.Query("select count(*) from ce").encode())
    both(targets, data, 3)


def test_set_application_name_parameter_status(targets):
    # Postgres reports a changed GUC_REPORT setting once, at the end of the query that changed it
    data = b"".join(F.Query(q).encode() for q in ("set application_name = 'renamed'; select 1",
                                                  "set application_name = 'x'; reset application_name",
                                                  "reset application_name"))
    got = both(targets, data, 3)
    statuses = [p for t, p in got if t == "S"]
    assert statuses == [b"application_name\0renamed\0", b"application_name\0differential\0"]


def test_batch_sent_one_byte_at_a_time(targets):
    """Message boundaries split anywhere (inside headers too) must not change anything."""
    import socket
    import time

    data = (F.Parse("", "select $1::int * 2").encode() + F.Bind("", "", (), (b"21",), ()).encode()
            + F.Execute("", 0).encode() + F.Sync().encode()
            + F.Query("select 'split'; select 1/0").encode())
    streams = []
    for name in ("direct", "proxy"):
        conn, login_stream = login(targets[name])
        try:
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for i in range(len(data)):
                conn.send(data[i:i + 1])
                if i % 7 == 0:
                    time.sleep(0.001)
            streams.append((login_stream, conn.read_until_ready(2)))
        finally:
            conn.terminate()
    (ld, d), (lp, p) = streams
    assert_same(ld, lp)
    assert_same(d, p)
    assert [t for t, _ in p].count("E") == 1


@pytest.mark.parametrize("value", ["bogus", "2", "o", "", "TRUE ", "databases"])
def test_startup_replication_bad_value_as_postgres(targets, value):
    """An invalid ``replication`` start-up parameter: the same FATAL (22023, message and hint)."""
    got = {}
    for name, port in targets.items():
        conn = RawConn(port, timeout=15)
        try:
            with pytest.raises(ServerFatal) as e:
                conn.startup(USER, password=PASSWORD, params={"replication": value})
            got[name] = {k: e.value.fields.get(k) for k in ("S", "C", "M", "H")}
        finally:
            conn.sock.close()
    assert got["proxy"] == got["direct"]
    assert got["direct"]["C"] == "22023"


@pytest.mark.parametrize("value", ["false", "0", "off", "no", "F", "of"])
def test_startup_replication_off_is_an_ordinary_session(targets, value):
    """``replication`` set to a false boolean: an ordinary session, on Postgres and through the proxy."""
    streams = []
    for port in targets.values():
        conn, _ = login(port, params={"replication": value})
        try:
            conn.send(F.Query("select 1").encode())
            streams.append(normalise(conn.read_until_ready(1)))
        finally:
            conn.terminate()
    assert streams[0] == streams[1]
    assert [t for t, _ in streams[0]] == ["T", "D", "C", "Z"]


@pytest.mark.parametrize("value", ["true", "on", "1", "yes", "database"])
def test_startup_replication_requested_is_refused(scram_proxy, value):
    """A walsender connection cannot go through a pooler: FATAL 0A000 (Postgres would start
    physical or logical replication)."""
    conn = RawConn(scram_proxy.port, timeout=15)
    try:
        with pytest.raises(ServerFatal) as e:
            conn.startup(USER, password=PASSWORD, params={"replication": value})
        assert e.value.fields.get("C") == "0A000"
        assert "replication connections are not supported" in e.value.fields.get("M")
    finally:
        conn.sock.close()


@pytest.mark.parametrize("head", [b"k\x00\x00\x00\x05!", b"k\x00\x10\x00\x00", b"p\x00\x00\x00\x09pass\x00"],
                         ids=["unknown-whole", "unknown-long-body", "password-after-login"])
def test_unknown_message_type_after_login_as_postgres(targets, head):
    """A message type Postgres does not know after login: FATAL 08P01 "invalid frontend message
    type N" at once, even when the declared body never comes (before, the proxy waited for it)."""
    got = {}
    for name, port in targets.items():
        conn, _ = login(port)
        try:
            conn.send(head)
            msg = conn.read_message()
            assert msg is not None and msg[0] == "E", (name, msg)
            fields = error_fields(msg[1])
            got[name] = (fields.get("S"), fields.get("C"), fields.get("M"))
            assert conn.read_message() is None  # then the connection is closed
        finally:
            conn.sock.close()
    assert got["proxy"] == got["direct"]
    assert got["direct"][1] == "08P01"


def test_short_message_declaring_a_long_body_ends_the_session_at_once(targets):
    """A Sync declaring a 100 MB body: Postgres (PQ_SMALL_MESSAGE_LIMIT) and the proxy both end
    the session without waiting for the body (Postgres says nothing; the proxy sends FATAL 08P01)."""
    for name, port in targets.items():
        conn, _ = login(port)
        try:
            conn.send(b"S" + struct.pack("!i", 100_000_000))
            msgs = []
            while (msg := conn.read_message()) is not None:
                msgs.append(msg)
            assert all(t == "E" and error_fields(p).get("C") == "08P01" for t, p in msgs), (name, msgs)
        finally:
            conn.sock.close()
