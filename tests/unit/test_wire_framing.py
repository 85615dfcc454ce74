"""FrameBuffer, RelayScanner and startup_frame: any split of a valid stream gives the same frames."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.wire import backend as B
from proxy.wire import frontend as F
from proxy.wire.codec import ProtocolViolation
from proxy.wire.framing import MAX_STARTUP_PACKET_LENGTH, FrameBuffer, RelayScanner, startup_frame
from tests.unit.test_wire_messages import BACKEND_TABLE, FRONTEND_TABLE, SASL_TABLE, STARTUP_TABLE

TYPED_WIRES = [w for _, w in FRONTEND_TABLE + SASL_TABLE + BACKEND_TABLE]


def _frame_of(wire: bytes) -> tuple[int, bytes]:
    return wire[0], wire[5:]


def _ends(wires: list[bytes]) -> set[int]:
    """Stream offsets at which a message ends (0 counts: an empty stream is at a boundary)."""
    out, pos = {0}, 0
    for w in wires:
        pos += len(w)
        out.add(pos)
    return out


def _collect_frames(fb: FrameBuffer, chunks) -> list[tuple[int, bytes]]:
    got = []
    for c in chunks:
        fb.feed(c)
        got.extend(fb.frames())
    return got


# -- FrameBuffer --------------------------------------------------------------------------------
def test_framebuffer_one_byte_at_a_time():
    stream = b"".join(TYPED_WIRES)
    fb = FrameBuffer()
    got = _collect_frames(fb, (stream[i:i + 1] for i in range(len(stream))))
    assert got == [_frame_of(w) for w in TYPED_WIRES]
    assert len(fb) == 0


@pytest.mark.parametrize("wire", TYPED_WIRES, ids=[f"{w[:1]!r}-{i}" for i, w in enumerate(TYPED_WIRES)])
def test_framebuffer_each_message_bytewise(wire):
    fb = FrameBuffer()
    for i in range(len(wire) - 1):
        fb.feed(wire[i:i + 1])
        assert list(fb.frames()) == []
        assert len(fb) == i + 1  # nothing consumed before the frame is whole
    fb.feed(wire[-1:])
    assert list(fb.frames()) == [_frame_of(wire)]
    assert len(fb) == 0


def test_framebuffer_whole_stream_at_once_and_take_raw():
    stream = b"".join(TYPED_WIRES)
    fb = FrameBuffer()
    fb.feed(stream + b"Q\x00\x00")
    assert list(fb.frames()) == [_frame_of(w) for w in TYPED_WIRES]
    assert fb.take_raw() == b"Q\x00\x00"
    assert len(fb) == 0


def test_framebuffer_partial_iteration_keeps_the_rest():
    fb = FrameBuffer()
    fb.feed(TYPED_WIRES[0] + TYPED_WIRES[1] + TYPED_WIRES[2])
    it = fb.frames()
    assert next(it) == _frame_of(TYPED_WIRES[0])
    it.close()  # the consumer stopped after one frame: that one is gone, the rest stays
    assert list(fb.frames()) == [_frame_of(TYPED_WIRES[1]), _frame_of(TYPED_WIRES[2])]


def test_framebuffer_max_size_is_inclusive():
    fb = FrameBuffer(max_size=13)
    fb.feed(F.Query("select 1").encode())  # length field 13
    assert list(fb.frames()) == [(ord("Q"), b"select 1\x00")]


# -- RelayScanner -------------------------------------------------------------------------------
WATCH = frozenset(b"ZSERTp")  # ReadyForQuery, ParameterStatus/Sync, Error/Execute, Auth, RowDescription, 'p'


def _scan(watch, chunks, ends=None):
    seen: list[tuple[int, bytes]] = []
    sc = RelayScanner(watch, lambda t, p: seen.append((t, bytes(p))))
    pos = 0
    for c in chunks:
        sc.feed(c)
        pos += len(c)
        if ends is not None:
            assert sc.at_boundary == (pos in ends), f"at_boundary wrong at offset {pos}"
    return sc, seen


def test_relay_scanner_one_byte_at_a_time():
    stream = b"".join(TYPED_WIRES)
    ends = _ends(TYPED_WIRES)
    sc, seen = _scan(WATCH, (stream[i:i + 1] for i in range(len(stream))), ends)
    assert seen == [_frame_of(w) for w in TYPED_WIRES if w[0] in WATCH]
    assert sc.at_boundary


def test_relay_scanner_whole_stream_and_empty_watch():
    stream = b"".join(TYPED_WIRES)
    _, seen = _scan(WATCH, [stream])
    assert seen == [_frame_of(w) for w in TYPED_WIRES if w[0] in WATCH]
    sc, seen = _scan(frozenset(), [stream[:7], stream[7:]])
    assert seen == [] and sc.at_boundary
    everything = frozenset(w[0] for w in TYPED_WIRES)
    _, seen = _scan(everything, [stream[:3], stream[3:100], stream[100:]])
    assert seen == [_frame_of(w) for w in TYPED_WIRES]


def test_relay_scanner_boundary_inside_header_and_body():
    wire = B.ReadyForQuery(b"I").encode()
    sc, seen = _scan(WATCH, [b""])
    assert sc.at_boundary
    sc.feed(wire[:2])
    assert not sc.at_boundary
    sc.feed(wire[2:5])
    assert not sc.at_boundary and seen == []
    sc.feed(wire[5:])
    assert sc.at_boundary and seen == [(ord("Z"), b"I")]
    sc.feed(B.DataRow((b"xyz",)).encode()[:8])  # unwatched, mid-body
    assert not sc.at_boundary


def test_relay_scanner_rejects_short_length():
    sc, _ = _scan(WATCH, [])
    with pytest.raises(ProtocolViolation) as ei:
        sc.feed(b"D\x00\x00\x00\x03")
    assert ei.value.sqlstate == "08P01"
    sc2, _ = _scan(WATCH, [])
    sc2.feed(b"Z\x00\x00")
    with pytest.raises(ProtocolViolation):
        sc2.feed(b"\x00\x00")


# -- startup_frame ------------------------------------------------------------------------------
def test_startup_frame_one_byte_at_a_time():
    stream = b"".join(w for _, w in STARTUP_TABLE)
    buf = bytearray()
    got = []
    for i in range(len(stream)):
        buf += stream[i:i + 1]
        p = startup_frame(buf)
        if p is not None:
            got.append(p)
    assert got == [w[4:] for _, w in STARTUP_TABLE]
    assert buf == bytearray()
    assert [F.decode_startup(p) for p in got] == [m for m, _ in STARTUP_TABLE]


def test_startup_frame_leaves_following_bytes():
    buf = bytearray(F.SSLRequest().encode() + b"\x16\x03\x01")
    assert startup_frame(buf) == struct.pack("!i", F.SSL_REQUEST_CODE)
    assert buf == bytearray(b"\x16\x03\x01")


def test_startup_frame_limits():
    for good in (8, MAX_STARTUP_PACKET_LENGTH):
        buf = bytearray(struct.pack("!i", good) + b"\x00" * (good - 4))
        assert startup_frame(buf) == b"\x00" * (good - 4)
    for bad in (-1, 0, 4, 7, MAX_STARTUP_PACKET_LENGTH + 1, 0x7FFFFFFF):
        with pytest.raises(ProtocolViolation) as ei:
            startup_frame(bytearray(struct.pack("!i", bad)))  # raised from the length alone
        assert ei.value.sqlstate == "08P01"
    assert startup_frame(bytearray(b"\x00\x00\x00")) is None


# -- property: random valid streams, random splits ----------------------------------------------
_text = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=20)
_blob = st.binary(max_size=40)
_i16 = st.integers(-2**15, 2**15 - 1)
_i32 = st.integers(-2**31, 2**31 - 1)
_oid = st.integers(0, 2**31 - 1)

_messages = st.one_of(
    st.sampled_from([m for m, _ in FRONTEND_TABLE + SASL_TABLE + BACKEND_TABLE]),
    st.builds(F.Query, _text),
    st.builds(F.Parse, _text, _text, st.lists(_oid, max_size=4).map(tuple)),
    st.builds(F.Bind, _text, _text, st.lists(st.sampled_from([0, 1]), max_size=3).map(tuple),
              st.lists(st.none() | _blob, max_size=4).map(tuple), st.lists(_i16, max_size=3).map(tuple)),
    st.builds(F.Execute, _text, _i32),
    st.builds(F.CopyData, _blob),
    st.builds(B.DataRow, st.lists(st.none() | _blob, max_size=5).map(tuple)),
    st.builds(B.CommandComplete, _text),
    st.builds(B.ParameterStatus, _text, _text),
    st.builds(B.ReadyForQuery, st.sampled_from([b"I", b"T", b"E"])),
    st.builds(B.ErrorResponse.build, st.sampled_from(["ERROR", "FATAL"]), st.just("XX000"), _text),
    st.builds(B.Authentication, st.sampled_from([11, 12]), _blob),
)


@st.composite
def _stream_and_splits(draw):
    msgs = draw(st.lists(_messages, max_size=12))
    wires = [m.encode() for m in msgs]
    stream = b"".join(wires)
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    chunks, prev = [], 0
    for c in cuts + [len(stream)]:
        chunks.append(stream[prev:c])
        prev = c
    return msgs, wires, chunks


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_stream_and_splits(), st.frozensets(st.sampled_from(list(b"QPBEdDCSZRT")), max_size=11))
def test_random_streams_random_splits(data, watch):
    msgs, wires, chunks = data
    expected = [_frame_of(w) for w in wires]
    assert _collect_frames(FrameBuffer(), chunks) == expected
    sc, seen = _scan(watch, chunks, _ends(wires))
    assert seen == [f for f in expected if f[0] in watch]
    assert sc.at_boundary
    # and the frames decode back to the same messages (per direction, 'p' excepted)
    for m, (t, payload) in zip(msgs, expected):
        assert type(m).decode(payload) == m
