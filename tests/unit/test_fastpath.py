"""The relay's per-read scans (proxy.wire.fastpath): the Python reference against the C extension,
and both against what the slow path would decide (analyze, message boundaries).

The C extension is optional at install; ``test_extension_is_built`` says whether this run had it
(``make test`` builds it: the machine has a compiler), the comparisons run when it is present.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.router import StateEffects, analyze, split
from proxy.router.marker import MODULE_RPC_NAMES, may_call
from proxy.wire import fastpath
from proxy.wire import frontend as F

LIMIT = 1 << 30
REPLY_WATCH = fastpath.watch_table(frozenset(map(ord, "ZSEG")))
C = pytest.mark.skipif(not fastpath.compiled, reason="C extension not built")


def msg(t: bytes, body: bytes) -> bytes:
    return t + struct.pack("!i", len(body) + 4) + body


def q(sql: str) -> bytes:
    return F.Query(sql).encode()


SELECT = "SELECT abalance FROM pgbench_accounts WHERE aid = 1;"
BATCH = (F.Parse("", "SELECT $1::int", (23,)).encode() + F.Bind("", "", (0,), (b"1",), (0,)).encode()
         + F.Describe(b"P", "").encode() + F.Execute("", 0).encode() + F.Sync().encode())


@C
def test_c_and_python_know_the_same_rpc_names():
    from proxy.wire import _fastpath

    assert _fastpath.RPC_NAMES == MODULE_RPC_NAMES


def test_extension_is_built():
    # make test installs with a C compiler present, so the fast path runs in C there
    assert fastpath.compiled
    assert fastpath.SCAN_CLIENT is not fastpath.scan_client


def dropped(result: int) -> int:
    """``scan_client``'s result for a read in transaction pooling whose Query drops the client's
    unnamed statement (flag bit 0, shifted by 31)."""
    return result | 1 << 31


def parsed(result: int, at: int = 0) -> int:
    """... for a read whose last unnamed Parse starts at offset ``at``."""
    return result | ((at + 1) << 1) << 31


@pytest.mark.parametrize("impl", [fastpath.scan_client, pytest.param("C", marks=C)])
@pytest.mark.parametrize("data,txn,expected", [
    (q(SELECT), True, dropped(1 * 256 + ord("Q"))),
    (q(SELECT), False, 1 * 256 + ord("Q")),               # session pooling: no unnamed bookkeeping
    (q(SELECT) + q("SELECT 2"), True, dropped(2 * 256 + ord("Q"))),
    (BATCH, True, parsed(1 * 256 + ord("S"))),
    (BATCH + F.Flush().encode(), True, parsed(1 * 256 + ord("S"))),   # Flush neither opens nor closes a batch
    (q("SELECT 1") + BATCH, True, parsed(2 * 256 + ord("S"), len(q("SELECT 1")))),
    (BATCH + q("SELECT 1"), True, dropped(2 * 256 + ord("Q"))),  # the Query drops what the batch parsed
    (F.Flush().encode(), True, ord("H")),                     # only Flush: the caller keeps its state
    (F.Parse("", "SELECT 1").encode() + F.Flush().encode(), True, -1),  # not bound here: the slow path
    (F.Parse("", "SELECT 1").encode() + F.Flush().encode(), False, ord("P")),
    (F.Parse("", "SELECT 1").encode() + F.Bind("", "", (), (), ()).encode(), True, parsed(ord("B"))),  # no Sync yet
    (F.Bind("", "", (), (), ()).encode(), True, -1),      # the unnamed statement of an earlier read
    (q("SELECT 1") + F.Parse("", "SELECT 1").encode() + q("SELECT 2") + F.Bind("", "", (), (), ()).encode(),
     True, -1),                                           # ... dropped by a Query in between
    (F.Close(b"S", "").encode(), True, -1),               # closing it: the slow path keeps count
    (q(SELECT)[:-1], True, -1),                          # partial message
    (q(SELECT) + b"Q\0\0", True, -1),                    # partial header after a whole message
    (msg(b"Q", b"x") + b"", True, dropped(1 * 256 + ord("Q"))),
    (b"Q\0\0\0\x03", True, -1),                          # length below 4
    (msg(b"X", b""), True, -1),                          # Terminate
    (msg(b"c", b""), True, -1),                          # CopyDone outside COPY
    (q("select iasql_version()"), False, -1),
    (q("SELECT * FROM IASQL_INSTALL('aws_s3')"), True, -1),
    # module RPC names (proxy.router.marker), at an identifier start only, in any letter case
    (q("select * from s3_upload_object('b', 'k', 'c', 't')"), False, -1),
    (q("SELECT * FROM S3_Upload_Object('b', 'k', 'c', 't')"), True, -1),
    (q("s3_upload_object"), False, -1),                  # at the start of the text
    (q('select public."s3_upload_object"()'), False, -1),
    (q("select 1s3_upload_object"), False, -1),          # a digit before it: a start (false positive)
    (q("select xs3_upload_object()"), False, 1 * 256 + ord("Q")),   # another identifier
    (q("select $s3_upload_object"), False, 1 * 256 + ord("Q")),
    (q("select s3_upload_objec"), False, 1 * 256 + ord("Q")),
    (q("SELECT * FROM Access_Key_Request('u')"), False, -1),
    (q("select my_access_key_request('u')"), False, 1 * 256 + ord("Q")),
    (F.Parse("", "select s3_upload_object($1, $2, $3, $4)").encode() + F.Sync().encode(), False, -1),
    (q("SET search_path = x"), True, -1),
    (q("SET search_path = x"), False, 1 * 256 + ord("Q")),  # session pooling: state stays with the client
    (q("  begin"), True, -1),
    (q("EXPLAIN SET x = 1"), True, -1),                  # analyze reads the statement EXPLAIN names
    (q("SELECT 1; SET x.y = 1"), True, -1),
    (q("SELECT 1;  \n"), True, dropped(1 * 256 + ord("Q"))),
    (q("UPDATE t SET a = 1"), True, dropped(1 * 256 + ord("Q"))),
    (q("select pg_advisory_lock(1)"), True, -1),
    (q("create temp table t ()"), True, -1),
    (q("/* c */ select 1"), True, -1),
    (q("select 1 -- c"), True, -1),
    (q("select set_config('a', 'b', false)"), True, -1),
    (q('select U&"x"'), True, -1),
    (F.Parse("s1", "SELECT 1").encode(), True, -1),     # named statement: renamed by the slow path
    (F.Parse("s1", "SELECT 1").encode(), False, ord("P")),
    (F.Bind("", "s1", (), (), ()).encode(), True, -1),
    (F.Bind("p1", "", (), (), ()).encode(), True, -1),   # the unnamed statement of an earlier read
    (F.Bind("p1", "", (), (), ()).encode(), False, ord("B")),
    (F.Describe(b"S", "s1").encode(), True, -1),
    (F.Describe(b"S", "").encode(), True, -1),
    (F.Parse("", "SELECT 1").encode() + F.Describe(b"S", "").encode(), True, -1),
    (F.Describe(b"P", "p1").encode(), True, ord("D")),
    (F.Close(b"S", "s1").encode(), True, -1),
    (msg(b"F", b"\0\0\0\x01"), True, 1 * 256 + ord("F")),  # FunctionCall owes a ReadyForQuery
    (q("DROP DATABASE x"), False, -1),                   # the slow path closes idle connections to x first
    (q(" \n drop database x"), True, -1),
    (F.Parse("", "Drop Database x").encode() + F.Sync().encode(), False, -1),
    (q("SELECT 'drop database x'"), False, 1 * 256 + ord("Q")),  # only at the start
])
def test_scan_client_cases(impl, data, txn, expected):
    scan = fastpath.SCAN_CLIENT if impl == "C" else impl
    assert scan(data, txn, LIMIT) == expected


@pytest.mark.parametrize("impl", [fastpath.scan_client, pytest.param("C", marks=C)])
def test_scan_client_limit(impl):
    scan = fastpath.SCAN_CLIENT if impl == "C" else impl
    data = q("SELECT " + "1" * 100)
    assert scan(data, True, 200) >= 0
    assert scan(data, True, 50) == -1  # above max_packet_size: the slow path answers with its error


@pytest.mark.parametrize("impl", [fastpath.scan_reply, pytest.param("C", marks=C)])
@pytest.mark.parametrize("data,expected", [
    (msg(b"T", b"x" * 10) + msg(b"D", b"y" * 5) + msg(b"C", b"SELECT 1\0") + msg(b"Z", b"I"), ord("I")),
    (msg(b"Z", b"T"), ord("T")),
    (msg(b"D", b"y") + msg(b"Z", b"E"), ord("E")),
    (msg(b"D", b"y") + msg(b"S", b"a\0b\0") + msg(b"Z", b"I"), -1 - 6),   # a watched ParameterStatus first
    (msg(b"D", b"y") + msg(b"Z", b"I")[:-1], -1 - 6),                     # ReadyForQuery not whole
    (msg(b"D", b"y") + msg(b"Z", b"I") + msg(b"D", b"y"), -1 - 6),        # more after it
    (msg(b"D", b"yy"), -1),                                                # ends with an unwatched message
    (msg(b"D", b"yy")[:4], -1),
    (b"", -1),
    (b"D\0\0\0\x02xxxx", -1),                                             # bad length: the scanner raises
])
def test_scan_reply_cases(impl, data, expected):
    scan = fastpath.SCAN_REPLY if impl == "C" else impl
    assert scan(data, REPLY_WATCH) == expected


@pytest.mark.parametrize("impl", [fastpath.scan_reply, pytest.param("C", marks=C)])
def test_scan_reply_from_an_offset(impl):
    """``start``: where the first whole message begins (the rest of a message a previous read
    began is before it)."""
    scan = fastpath.SCAN_REPLY if impl == "C" else impl
    tail = b"yyy" + msg(b"D", b"y") + msg(b"C", b"SELECT 1\0") + msg(b"Z", b"I")
    assert scan(tail, REPLY_WATCH, 3) == ord("I")
    assert scan(tail, REPLY_WATCH, len(tail)) == -1 - len(tail)
    assert scan(b"yy" + msg(b"S", b"a\0b\0"), REPLY_WATCH, 2) == -1 - 2
    for bad in (-1, len(tail) + 1):
        with pytest.raises(ValueError):
            scan(tail, REPLY_WATCH, bad)


# -- differential: C against Python, and Python against the slow path's own checks ---------------

WORDS = ["SELECT", "set", "SET", " ", "\n", "\t", ";", "iasql_", "IaSQL_", "begin", "temp", "pg_temp", "_config",
         "advisory", "/*", "*/", "--", "&", "mp", "M", "P", "x", "'", '"', "1", "\0", "from", "u&", "listen",
         "unlisten", "close", "load", "start", "reset", "discard", "prepare", "deallocate", "declare", "visory",
         "s3_upload_object", "S3_UPLOAD_OBJECT", "s3_upload", "_object", "access_key_request", "Access_Key", "s", "3", "_", "$", "\u00e9", ".",
         "key_pair_import", "KEY_PAIR_REQUEST", "key", "_pair", "describe_ami", "certificate_import",
         "set_user_password", "log_group_tail", "Start_Build", "start_", "_build", "confirm_subscription"]
sql_text = st.one_of(st.text(max_size=80), st.lists(st.sampled_from(WORDS), max_size=14).map("".join))


def _message(kind: str, sql: str, name: str) -> bytes:
    raw = sql.replace("\0", "")
    if kind == "Q":
        return F.Query(raw).encode()
    if kind == "P":
        return F.Parse(name, raw, (23,) if len(raw) % 2 else ()).encode()
    if kind == "B":
        return F.Bind("", name, (), (), ()).encode()
    if kind == "D":
        return F.Describe(b"S" if len(raw) % 2 else b"P", name).encode()
    if kind == "S":
        return F.Sync().encode()
    if kind == "E":
        return F.Execute("", 0).encode()
    return msg(kind.encode(), raw.encode("utf-8", "surrogatepass"))


messages = st.lists(st.tuples(st.sampled_from(["Q", "P", "B", "D", "S", "E", "H", "X", "d", "C"]), sql_text,
                              st.sampled_from(["", "s1"])), max_size=5)


@C
@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(messages, st.booleans(), st.integers(0, 40), st.binary(max_size=8))
def test_scan_client_c_agrees_with_python(parts, txn, cut, junk):
    data = b"".join(_message(*p) for p in parts)
    for d in (data, data[:len(data) - cut], data + junk, junk + data):
        assert fastpath.SCAN_CLIENT(d, txn, LIMIT) == fastpath.scan_client(d, txn, LIMIT), d


@C
@settings(max_examples=1000)
@given(st.lists(st.tuples(st.sampled_from(b"TDCZSEGNA1"), st.binary(max_size=12)), max_size=6), st.integers(0, 10))
def test_scan_reply_c_agrees_with_python(parts, cut):
    data = b"".join(msg(bytes([t]), b) for t, b in parts)
    for d in (data, data[:len(data) - cut], data + b"Z\0\0\0\x05I"):
        assert fastpath.SCAN_REPLY(d, REPLY_WATCH) == fastpath.scan_reply(d, REPLY_WATCH), d
        start = min(cut, len(d))
        assert fastpath.SCAN_REPLY(d, REPLY_WATCH, start) == fastpath.scan_reply(d, REPLY_WATCH, start), (d, start)


@settings(max_examples=500)
@given(st.lists(st.tuples(st.sampled_from(b"TDCZSEGN"), st.binary(max_size=40)), max_size=8),
       st.lists(st.integers(1, 60), max_size=6))
def test_relay_scanner_any_split_sees_the_same(parts, cuts):
    """Fed in any pieces, ``RelayScanner.feed_ready`` reports the same watched messages, the same
    final ReadyForQuery status and the same boundary as one ``feed`` of the whole stream."""
    from proxy.wire.framing import RelayScanner

    watch = frozenset(b"ZSGE")
    data = b"".join(msg(bytes([t]), b) for t, b in parts)
    whole: list = []
    RelayScanner(watch, lambda t, p: whole.append((t, p))).feed(data)
    pieces: list = []
    sc = RelayScanner(watch, lambda t, p: pieces.append((t, p)))
    pos = 0
    for c in cuts + [len(data)]:
        chunk = data[pos:pos + c]
        pos += len(chunk)
        if chunk:
            status = sc.feed_ready(chunk)
            if status >= 0:  # a read that ended with ReadyForQuery and held no other watched message
                pieces.append((ord("Z"), bytes([status])))
    assert pieces == whole
    assert sc.at_boundary


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(sql_text)
def test_scan_client_never_forwards_state_or_calls(sql):
    """When a Query passes the scan in transaction pooling, ``analyze`` finds no session state in
    its text and it contains no iasql_ call: the slow path would have forwarded it unchanged."""
    raw = sql.replace("\0", "")
    if fastpath.SCAN_CLIENT(F.Query(raw).encode(), True, LIMIT) < 0:
        return
    assert "iasql_" not in raw.lower()
    assert not may_call(raw), raw
    if split(raw) is not None:  # text that does not lex is rejected by Postgres, changing nothing
        assert analyze(raw) == StateEffects(), raw
