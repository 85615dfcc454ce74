"""Malformed input: every failure is a ProtocolViolation (never IndexError, struct.error, ...)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.wire import backend as B
from proxy.wire import frontend as F
from proxy.wire.codec import ProtocolViolation, Reader
from proxy.wire.framing import FrameBuffer
from tests.unit.test_wire_messages import BACKEND_TABLE, FRONTEND_TABLE, SASL_TABLE, STARTUP_TABLE

#: Classes whose payload (or payload tail) is opaque bytes, so any prefix is itself a valid message.
OPAQUE = {F.PasswordMessage, F.SASLResponse, F.CopyData, B.CopyData}


def _pv(fn, *args) -> ProtocolViolation:
    with pytest.raises(ProtocolViolation) as ei:
        fn(*args)
    assert ei.value.sqlstate in ("08P01", "22021")
    return ei.value


# -- framing ------------------------------------------------------------------------------------
@pytest.mark.parametrize("length", [-(2**31), -1, 0, 1, 2, 3])
def test_framebuffer_length_below_4(length):
    fb = FrameBuffer()
    fb.feed(b"Q" + struct.pack("!i", length))
    e = _pv(lambda: list(fb.frames()))
    assert e.sqlstate == "08P01"


def test_framebuffer_length_over_max_raises_on_the_header_alone():
    fb = FrameBuffer(max_size=1000)
    fb.feed(b"d" + struct.pack("!i", 1001))  # only the header: the payload never has to arrive
    e = _pv(lambda: list(fb.frames()))
    assert e.sqlstate == "08P01" and "1001" in e.message
    assert len(fb) == 5  # nothing else was waited for or buffered

    fb = FrameBuffer()
    fb.feed(b"d" + struct.pack("!i", 0x7FFFFFFF))
    _pv(lambda: list(fb.frames()))


def test_framebuffer_error_after_good_frames_keeps_them_delivered():
    fb = FrameBuffer(max_size=100)
    fb.feed(F.Sync().encode() + b"d" + struct.pack("!i", 101))
    got = []
    with pytest.raises(ProtocolViolation):
        for f in fb.frames():
            got.append(f)
    assert got == [(ord("S"), b"")]
    with pytest.raises(ProtocolViolation):  # the stream stays broken
        list(fb.frames())


# -- unknown types ------------------------------------------------------------------------------
def test_unknown_type_bytes():
    for t in set(range(256)) - {k[0] for k in F.FRONTEND_TYPES}:
        _pv(F.decode_frontend, t, b"")
    for t in set(range(256)) - {k[0] for k in B.BACKEND_TYPES}:
        _pv(B.decode_backend, t, b"")


def test_unknown_startup_codes_and_bad_parameters():
    _pv(F.decode_startup, b"")
    _pv(F.decode_startup, b"\x00\x03")
    _pv(F.decode_startup, b"\x00\x03\x00\x00")                       # no terminator
    _pv(F.decode_startup, b"\x00\x03\x00\x00user\x00")               # name without value
    _pv(F.decode_startup, b"\x00\x03\x00\x00user\x00bob\x00")        # no final NUL
    _pv(F.decode_startup, b"\x00\x03\x00\x00\x00extra")              # bytes after the terminator
    _pv(F.decode_startup, b"\x04\xd2\x16\x2f\x00")                   # SSLRequest with a tail
    _pv(F.decode_startup, b"\x04\xd2\x16\x30\x00")                   # GSSENCRequest with a tail
    _pv(F.decode_startup, b"\x04\xd2\x16\x2e\x00\x00\x00\x01")       # CancelRequest without key
    _pv(F.decode_startup, b"\x04\xd2\x16\x2e" + b"\x00" * 9)         # CancelRequest with a tail
    _pv(F.decode_startup, b"\x00\x03\x00\x00us\xffer\x00x\x00\x00")   # invalid UTF-8


# -- truncation ---------------------------------------------------------------------------------
TYPED = FRONTEND_TABLE + SASL_TABLE + BACKEND_TABLE


@pytest.mark.parametrize("msg,wire", TYPED, ids=[f"{type(m).__name__}-{i}" for i, (m, _) in enumerate(TYPED)])
def test_truncated_payloads(msg, wire):
    payload = wire[5:]
    for cut in range(len(payload)):
        short = payload[:cut]
        if type(msg) in OPAQUE or (isinstance(msg, B.Authentication)
                                   and msg.code in (B.AUTH_SASL_CONTINUE, B.AUTH_SASL_FINAL) and cut >= 4):
            type(msg).decode(short)
            continue
        _pv(type(msg).decode, short)
        if type(msg) not in (F.SASLInitialResponse,):
            decode = F.decode_frontend if msg in [m for m, _ in FRONTEND_TABLE] else B.decode_backend
            _pv(decode, wire[0], short)


@pytest.mark.parametrize("msg,wire", STARTUP_TABLE, ids=[f"{type(m).__name__}-{i}" for i, (m, _) in enumerate(STARTUP_TABLE)])
def test_truncated_startup(msg, wire):
    for cut in range(len(wire) - 4):
        _pv(F.decode_startup, wire[4:4 + cut])


@pytest.mark.parametrize("msg,wire", [(m, w) for m, w in TYPED if type(m) not in OPAQUE and type(m) is not B.Authentication],
                         ids=lambda x: type(x).__name__ if not isinstance(x, bytes) else "")
def test_trailing_garbage(msg, wire):
    _pv(type(msg).decode, wire[5:] + b"\x00")


# -- invalid content ----------------------------------------------------------------------------
def test_invalid_utf8_in_strings():
    e = _pv(F.Query.decode, b"select \xff\x00")
    assert e.sqlstate == "22021"
    _pv(F.Parse.decode, b"\xc3\x00select 1\x00\x00\x00")
    _pv(F.Describe.decode, b"S\xed\xa0\x80\x00")                      # a UTF-16 surrogate
    _pv(F.CopyFail.decode, b"\xe2\x82\x00")                           # truncated sequence
    _pv(B.ParameterStatus.decode, b"a\x00\xff\x00")
    _pv(B.ErrorResponse.decode, b"M\xff\x00\x00")
    _pv(B.CommandComplete.decode, b"\x80\x00")
    _pv(B.NegotiateProtocolVersion.decode, b"\x00\x00\x00\x00\x00\x00\x00\x01\xff\x00")
    _pv(B.RowDescription.decode, b"\x00\x01\xff\x00" + b"\x00" * 18)


def test_negative_counts():
    _pv(F.Parse.decode, b"\x00q\x00\xff\xff")
    _pv(F.Bind.decode, b"\x00\x00\xff\xff\x00\x00\x00\x00")
    _pv(F.Bind.decode, b"\x00\x00\x00\x00\xff\xff\x00\x00")
    _pv(F.Bind.decode, b"\x00\x00\x00\x00\x00\x00\xff\xff")
    _pv(F.FunctionCall.decode, b"\x00\x00\x00\x01\xff\xff\x00\x00\x00\x00")
    _pv(F.FunctionCall.decode, b"\x00\x00\x00\x01\x00\x00\xff\xfe\x00\x00")
    _pv(B.NegotiateProtocolVersion.decode, b"\x00\x00\x00\x00\xff\xff\xff\xff")
    _pv(B.RowDescription.decode, b"\xff\xff")
    _pv(B.DataRow.decode, b"\xff\xff")
    _pv(B.ParameterDescription.decode, b"\x80\x00")
    _pv(B.CopyInResponse.decode, b"\x00\xff\xff")
    _pv(B.CopyOutResponse.decode, b"\x00\xff\xff")
    _pv(B.CopyBothResponse.decode, b"\x00\xff\xff")


def test_negative_field_lengths_other_than_null():
    _pv(B.DataRow.decode, b"\x00\x01\xff\xff\xff\xfe")
    _pv(B.FunctionCallResponse.decode, b"\x80\x00\x00\x00")
    _pv(F.Bind.decode, b"\x00\x00\x00\x00\x00\x01\xff\xff\xff\xfe\x00\x00")
    _pv(F.SASLInitialResponse.decode, b"M\x00\xff\xff\xff\xfe")


def test_field_lengths_beyond_the_payload():
    _pv(B.DataRow.decode, b"\x00\x01\x7f\xff\xff\xff")
    _pv(B.FunctionCallResponse.decode, b"\x00\x00\x00\x05abcd")
    _pv(F.SASLInitialResponse.decode, b"M\x00\x00\x00\x00\x10abc")


def test_invalid_subtypes_and_statuses():
    _pv(F.Describe.decode, b"X\x00")
    _pv(F.Close.decode, b"s\x00")
    _pv(B.ReadyForQuery.decode, b"i")
    _pv(B.ReadyForQuery.decode, b"")


def test_authentication_payloads_checked_by_code():
    _pv(B.Authentication.decode, b"")
    _pv(B.Authentication.decode, b"\x00\x00\x00")
    _pv(B.Authentication.decode, b"\x00\x00\x00\x00\x00")              # AuthenticationOk with a tail
    _pv(B.Authentication.decode, b"\x00\x00\x00\x03x")                 # cleartext with a tail
    _pv(B.Authentication.decode, b"\x00\x00\x00\x05\x01\x02\x03")      # MD5 with a 3-byte salt
    _pv(B.Authentication.decode, b"\x00\x00\x00\x05\x01\x02\x03\x04\x05")
    _pv(B.Authentication.decode, b"\x00\x00\x00\x0aSCRAM-SHA-256\x00")  # list without its final NUL
    _pv(B.Authentication.decode, b"\x00\x00\x00\x0aSCRAM-SHA-256")
    _pv(B.Authentication.decode, b"\x00\x00\x00\x0a\xff\x00\x00")       # mechanism name not UTF-8
    # other codes keep their data as opaque bytes
    assert B.Authentication.decode(b"\x00\x00\x00\x08abc") == B.Authentication(8, b"abc")


def test_reader_bounds():
    r = Reader(b"\x00\x01")
    _pv(r.int32)
    assert r.int16() == 1
    _pv(r.int8)
    _pv(r.bytes_, 1)
    _pv(r.bytes_, -1)
    assert r.rest() == b""
    r.end()
    _pv(Reader(b"x").end)


# -- fuzz ---------------------------------------------------------------------------------------
_types = st.integers(0, 255)


@settings(max_examples=1500, deadline=None)
@given(_types, st.binary(max_size=64))
def test_fuzz_decode_frontend(t, payload):
    try:
        F.decode_frontend(t, payload)
    except ProtocolViolation:
        pass
    for cls in (F.SASLInitialResponse, F.SASLResponse):
        try:
            cls.decode(payload)
        except ProtocolViolation:
            pass


@settings(max_examples=1500, deadline=None)
@given(_types, st.binary(max_size=64))
def test_fuzz_decode_backend(t, payload):
    try:
        m = B.decode_backend(t, payload)
    except ProtocolViolation:
        return
    if isinstance(m, B.Authentication) and m.code == B.AUTH_SASL:
        m.mechanisms()


@settings(max_examples=1000, deadline=None)
@given(st.one_of(st.binary(max_size=64),
                 st.sampled_from([b"\x00\x03\x00\x00", b"\x04\xd2\x16\x2e", b"\x04\xd2\x16\x2f"]).flatmap(
                     lambda head: st.binary(max_size=24).map(lambda tail: head + tail))))
def test_fuzz_decode_startup(payload):
    try:
        F.decode_startup(payload)
    except ProtocolViolation:
        pass


def _startup_by_strings(payload: bytes):
    """Reference reading of a StartupMessage's parameters, string by string (the protocol
    chapter's definition): the dict, or the ProtocolViolation's SQLSTATE."""
    r = Reader(payload)
    r.int32()
    params = {}
    try:
        while True:
            name = r.cstring()
            if name == "":
                break
            params[name] = r.cstring()
        r.end()
    except ProtocolViolation as e:
        return e.sqlstate
    return params


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.sampled_from([b"user", b"", b"\x00", b"bob", b"\xff", b"\xc3\xa9", b"database", b"a\x00b",
                                 b"\xc3"]), max_size=10))
def test_startup_parameters_same_as_string_by_string(chunks):
    """decode_startup reads the parameter list in one split; every input gives what reading it
    string by string gives: the same parameters, or a ProtocolViolation with the same SQLSTATE."""
    payload = b"\x00\x03\x00\x00" + b"".join(chunks)
    want = _startup_by_strings(payload)
    try:
        got = F.decode_startup(payload).parameters
    except ProtocolViolation as e:
        got = e.sqlstate
    assert got == want


@st.composite
def _valid_typed_payload(draw):
    """A real message's payload with a few bytes flipped, inserted or removed."""
    msg, wire = draw(st.sampled_from(TYPED))
    buf = bytearray(wire[5:])
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["flip", "insert", "delete"]))
        i = draw(st.integers(0, len(buf)))
        if op == "insert" or not buf:
            buf[i:i] = bytes([draw(st.integers(0, 255))])
        elif op == "delete":
            del buf[min(i, len(buf) - 1)]
        else:
            buf[min(i, len(buf) - 1)] = draw(st.integers(0, 255))
    return wire[0], bytes(buf), msg in [m for m, _ in FRONTEND_TABLE]


@settings(max_examples=1500, deadline=None)
@given(_valid_typed_payload())
def test_fuzz_mutated_messages(case):
    """Mutated real messages either fail cleanly or decode to something that re-encodes to the same bytes."""
    t, payload, frontend = case
    decode = F.decode_frontend if frontend else B.decode_backend
    try:
        m = decode(t, payload)
    except ProtocolViolation:
        return
    if not isinstance(m, F.StartupMessage):
        assert m.encode() == bytes([t]) + struct.pack("!i", len(payload) + 4) + payload
