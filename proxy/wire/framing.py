"""Framing: cutting a byte stream into messages, without I/O and without decoding payloads.

Theory of operation
-------------------
Every message after start-up is ``Byte1 type, Int32 length, payload`` where length counts itself
but not the type byte (PostgreSQL protocol chapter, "Message Formats"). Start-up phase messages
(StartupMessage, SSLRequest, GSSENCRequest, CancelRequest) have no type byte.

``FrameBuffer`` collects bytes and yields complete ``(type, payload)`` frames; it is used where the
proxy must see whole messages (client input, authentication, intercepted traffic).

``RelayScanner`` is the fast path for server output: bytes are forwarded as they arrive and the
scanner only follows message boundaries, handing over the few message types the proxy must see
(ReadyForQuery, ParameterStatus, ...) in full. Rows are never decoded.

This module is compiled with Cython at install (``framing.pxd`` makes ``RelayScanner`` an
extension type that ``proxy.relay.core`` calls directly); without a compiler it runs as Python.
"""

from __future__ import annotations

import struct
from typing import Callable, Iterator

from proxy.wire.codec import ProtocolViolation
from proxy.wire.fastpath import SCAN_REPLY, watch_table

_HDR = struct.Struct("!Bi")
_Z = ord("Z")
_I32 = struct.Struct("!i")

#: PostgreSQL's own limit for a start-up packet (MAX_STARTUP_PACKET_LENGTH in pqcomm.h): 10000 bytes.
MAX_STARTUP_PACKET_LENGTH = 10000

#: Default ceiling for one message (bytes): PostgreSQL's PQ_LARGE_MESSAGE_LIMIT is 1 GB - 1; a
#: configurable ``max_packet_size`` lowers it per proxy.
DEFAULT_MAX_MESSAGE = 0x3FFFFFFF


class FrameBuffer:
    """Accumulates bytes; ``frames()`` yields complete ``(type_byte: int, payload: bytes)`` messages.

    ``max_size`` (bytes, including the 4-byte length) bounds one message; a larger or negative
    declared length raises ProtocolViolation (08P01) before the payload is buffered.
    """

    __slots__ = ("buf", "max_size")

    def __init__(self, max_size: int = DEFAULT_MAX_MESSAGE):
        self.buf = bytearray()
        self.max_size = max_size

    def feed(self, data: bytes) -> None:
        """Append received bytes."""
        self.buf += data

    def frames(self) -> Iterator[tuple[int, bytes]]:
        """Yield each complete message and drop it from the buffer; stop at an incomplete one."""
        buf = self.buf
        pos = 0
        n = len(buf)
        try:
            while n - pos >= 5:
                t, length = _HDR.unpack_from(buf, pos)
                if length < 4 or length > self.max_size:
                    raise ProtocolViolation(
                        f"invalid message length {length}" if length < 4
                        else f"message of {length} bytes exceeds max_packet_size ({self.max_size} bytes)")
                end = pos + 1 + length
                if end > n:
                    break
                payload = bytes(buf[pos + 5:end])
                pos = end
                yield t, payload
        finally:
            if pos:
                del buf[:pos]

    def take_raw(self) -> bytes:
        """Remove and return everything buffered (complete or not)."""
        data = bytes(self.buf)
        self.buf.clear()
        return data

    def __len__(self) -> int:
        return len(self.buf)


def startup_frame(buf: bytearray) -> bytes | None:
    """Cut one untyped start-up message off ``buf``; return its payload or None if incomplete.

    Raises ProtocolViolation (08P01) for a length below 8 or above MAX_STARTUP_PACKET_LENGTH, as
    PostgreSQL's ProcessStartupPacket does ("invalid length of startup packet").
    """
    if len(buf) < 4:
        return None
    (length,) = _I32.unpack_from(buf, 0)
    if length < 8 or length > MAX_STARTUP_PACKET_LENGTH:
        raise ProtocolViolation("invalid length of startup packet")
    if len(buf) < length:
        return None
    payload = bytes(buf[4:length])
    del buf[:length]
    return payload


class RelayScanner:
    """Follows message boundaries in a stream that is forwarded untouched.

    ``watch`` is the set of type bytes (as ints) to hand over whole to ``on_message(type, payload)``;
    every other message is skipped by length. ``feed(data)`` may be called with any split of the
    stream. Raises ProtocolViolation (08P01) on a length below 4.
    """

    def __init__(self, watch: frozenset[int], on_message: Callable[[int, bytes], None]):
        self.watch = watch
        self._table = watch_table(watch)
        self.on_message = on_message
        self._skip = 0          # bytes of an unwatched message still to pass
        self._hdr = b""          # partial header (< 5 bytes)
        self._cur_type = -1      # type of a watched message being collected
        self._cur = bytearray()
        self._cur_need = 0

    def feed_ready(self, data: bytes) -> int:
        """``feed(data)``, except when ``data`` ends with a ReadyForQuery ('Z') and holds no other
        watched message: then its status byte (an int, e.g. ``ord('I')``) is returned instead of
        calling ``on_message``. Returns -1 otherwise. This is the relay's common case (a reply
        ending with ReadyForQuery in one read), kept to one header unpack per message.
        Raises ProtocolViolation (08P01) on a length below 4."""
        start = 0
        if self._skip or self._hdr or self._cur_need:
            # the rest of a message the previous read began (large results rarely end reads at a
            # boundary): finish it here, then scan the whole messages after it in C
            start = self.feed(data, 0, stop_at_boundary=True)
            if start >= len(data):
                return -1
        r = SCAN_REPLY(data, self._table, start)
        if r >= 0:
            return r
        pos = -1 - r
        if pos < len(data):
            self.feed(data, pos)
        return -1

    def feed(self, data: bytes, pos: int = 0, stop_at_boundary: bool = False) -> int:
        """Scan ``data`` from offset ``pos``; call ``on_message`` for each completed watched message.
        Returns the offset where scanning stopped: ``len(data)``, or with ``stop_at_boundary`` the
        first message boundary reached."""
        n = len(data)
        while pos < n:
            if stop_at_boundary and not (self._skip or self._hdr or self._cur_need):
                return pos
            if self._skip:
                step = min(self._skip, n - pos)
                self._skip -= step
                pos += step
                continue
            if self._cur_need:
                step = min(self._cur_need, n - pos)
                self._cur += data[pos:pos + step]
                self._cur_need -= step
                pos += step
                if not self._cur_need:
                    payload = bytes(self._cur)
                    self._cur.clear()
                    self.on_message(self._cur_type, payload)
                continue
            if self._hdr or n - pos < 5:
                need = 5 - len(self._hdr)
                self._hdr += data[pos:pos + need]
                pos += min(need, n - pos)
                if len(self._hdr) < 5:
                    return n
                t, length = _HDR.unpack(self._hdr)
                self._hdr = b""
            else:
                t, length = _HDR.unpack_from(data, pos)
                pos += 5
            if length < 4:
                raise ProtocolViolation(f"invalid message length {length}")
            body = length - 4
            if t in self.watch:
                if body == 0:
                    self.on_message(t, b"")
                elif n - pos >= body:
                    self.on_message(t, data[pos:pos + body])
                    pos += body
                else:
                    self._cur_type = t
                    self._cur_need = body
            else:
                self._skip = body
        return pos

    @property
    def at_boundary(self) -> bool:
        """True when the stream so far ends exactly at a message boundary."""
        return not (self._skip or self._hdr or self._cur_need)
