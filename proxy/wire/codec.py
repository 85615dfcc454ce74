"""Low-level field readers and writers shared by both message directions (no I/O).

Field types follow the PostgreSQL protocol chapter, "Message Data Types" (protocol-message-types):
Int8/Int16/Int32 big-endian, String = NUL-terminated, Byte{n}. All functions take and return
``bytes``; a malformed payload raises ``ProtocolViolation`` (SQLSTATE 08P01).
"""

from __future__ import annotations

import struct

from proxy.wire import sqlstate

_I16 = struct.Struct("!h")
_U16 = struct.Struct("!H")
_I32 = struct.Struct("!i")
_U32 = struct.Struct("!I")
_HDR = struct.Struct("!ci")


class ProtocolViolation(Exception):
    """The peer sent bytes that break the protocol. ``sqlstate`` defaults to 08P01 (protocol_violation)."""

    def __init__(self, message: str, sqlstate_code: str = sqlstate.PROTOCOL_VIOLATION):
        super().__init__(message)
        self.message = message
        self.sqlstate = sqlstate_code


class Reader:
    """Sequential reader over one message payload (``bytes``). Every read checks bounds."""

    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes):
        self.buf = buf
        self.pos = 0

    def _need(self, n: int) -> None:
        if n < 0 or self.pos + n > len(self.buf):
            raise ProtocolViolation("invalid message format")

    def int8(self) -> int:
        """One unsigned byte."""
        self._need(1)
        v = self.buf[self.pos]
        self.pos += 1
        return v

    def int16(self) -> int:
        """A signed big-endian Int16."""
        self._need(2)
        (v,) = _I16.unpack_from(self.buf, self.pos)
        self.pos += 2
        return v

    def uint16(self) -> int:
        """An unsigned big-endian Int16: PostgreSQL reads the counts of Parse, Bind and
        FunctionCall with ``pq_getmsgint(msg, 2)``, so 0..65535."""
        self._need(2)
        (v,) = _U16.unpack_from(self.buf, self.pos)
        self.pos += 2
        return v

    def int32(self) -> int:
        """A signed big-endian Int32."""
        self._need(4)
        (v,) = _I32.unpack_from(self.buf, self.pos)
        self.pos += 4
        return v

    def cstring(self) -> str:
        """A NUL-terminated UTF-8 String (invalid UTF-8 is a protocol violation)."""
        end = self.buf.find(b"\0", self.pos)
        if end < 0:
            raise ProtocolViolation("invalid string in message")
        raw = self.buf[self.pos:end]
        self.pos = end + 1
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ProtocolViolation("invalid byte sequence for encoding \"UTF8\"",
                                    sqlstate.CHARACTER_NOT_IN_REPERTOIRE) from e

    def bytes_(self, n: int) -> bytes:
        """Exactly ``n`` raw bytes."""
        self._need(n)
        v = self.buf[self.pos:self.pos + n]
        self.pos += n
        return bytes(v)

    def nullable_bytes(self) -> bytes | None:
        """An Int32 length then that many bytes; length -1 means NULL (None)."""
        n = self.int32()
        if n == -1:
            return None
        if n < -1:
            raise ProtocolViolation("invalid field length in message")
        return self.bytes_(n)

    def rest(self) -> bytes:
        """All remaining bytes."""
        v = bytes(self.buf[self.pos:])
        self.pos = len(self.buf)
        return v

    def end(self) -> None:
        """Assert the payload is fully consumed (PostgreSQL's pq_getmsgend)."""
        if self.pos != len(self.buf):
            raise ProtocolViolation("invalid message format")


def i16(v: int) -> bytes:
    """Encode a signed Int16."""
    return _I16.pack(v)


def u16(v: int) -> bytes:
    """Encode an unsigned Int16 (a count of parameters or formats, 0..65535)."""
    return _U16.pack(v)


def i32(v: int) -> bytes:
    """Encode a signed Int32."""
    return _I32.pack(v)


def u32(v: int) -> bytes:
    """Encode an unsigned Int32 (an OID: decoders read OIDs as unsigned, so values >= 2**31 occur)."""
    return _U32.pack(v)


def cstr(s: str) -> bytes:
    """Encode a String (UTF-8 with NUL terminator). Raises ValueError on an embedded NUL."""
    b = s.encode("utf-8")
    if b"\0" in b:
        raise ValueError("string contains NUL")
    return b + b"\0"


def nullable(v: bytes | None) -> bytes:
    """Encode Int32 length + bytes, or -1 for NULL."""
    if v is None:
        return b"\xff\xff\xff\xff"
    return _I32.pack(len(v)) + v


def frame(type_byte: bytes, payload: bytes) -> bytes:
    """A typed message: Byte1 type, Int32 length (payload + 4), payload."""
    return _HDR.pack(type_byte, len(payload) + 4) + payload


def untyped_frame(payload: bytes) -> bytes:
    """A start-up phase message: Int32 length (payload + 4), payload."""
    return _I32.pack(len(payload) + 4) + payload
