"""The relay's byte checks on malformed messages (issue 16, defect 8): they never raise, and
they leave to Postgres what Postgres rejects before it looks a statement up."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.frontend import transaction as txn
from proxy.frontend.session import _header_error


class _Session:
    """What ``needs_rename`` reads of a session."""

    _unnamed_here = False


def _msg(t: bytes, body: bytes) -> bytes:
    return t + struct.pack("!i", len(body) + 4) + body


@settings(max_examples=300, deadline=None)
@given(t=st.sampled_from(b"PBDCEQSH"), body=st.binary(max_size=40), tail=st.binary(max_size=12))
def test_needs_rename_never_raises(t, body, tail):
    buf = bytearray(_msg(bytes((t,)), body) + tail)
    assert txn.needs_rename(_Session(), t, buf, 0, 5 + len(body)) in (True, False)


def test_empty_or_unterminated_describe_and_close_go_to_the_server_as_they_are():
    # Postgres answers them ("no data left in message", "invalid string in message") before any
    # statement is looked up: nothing to rename
    for t in b"DC":
        for body in (b"", b"S", b"Ss1", b"Ss1\0x", b"X\0"):
            buf = bytearray(_msg(bytes((t,)), body))
            assert txn.needs_rename(_Session(), t, buf, 0, len(buf)) is False, (t, body)
    # well formed, naming a statement: renamed
    buf = bytearray(_msg(b"D", b"Ss1\0"))
    assert txn.needs_rename(_Session(), ord("D"), buf, 0, len(buf)) is True


def test_parse_shape():
    good = b"s1\0SELECT $1\0" + struct.pack("!H", 1) + struct.pack("!I", 23)
    assert txn.parse_shape_ok(good, 0, len(good))
    for bad in (b"", b"s1", b"s1\0SELECT 1", b"s1\0SELECT 1\0", b"s1\0SELECT 1\0\0", good + b"x", good[:-1]):
        assert not txn.parse_shape_ok(bad, 0, len(bad)), bad


def test_header_error_as_postgres_reads_it():
    limit = 1 << 20
    assert _header_error(b"k", 0, limit).message == "invalid frontend message type 107"  # 1 byte is enough
    assert _header_error(b"Q\0\0", 0, limit) is None                                     # waits for the rest
    assert _header_error(b"Q\0\0\0\x02", 0, limit).message == "invalid message length 2"
    assert _header_error(b"S" + struct.pack("!i", 10001), 0, limit).message == "invalid message length 10001"
    assert _header_error(b"d" + struct.pack("!i", 10001), 0, limit) is None
    assert "exceeds max_packet_size" in _header_error(b"d" + struct.pack("!i", limit + 1), 0, limit).message
