"""Frontend messages: what a client sends to the server (PostgreSQL protocol chapter, "Message Formats").

Each message is a frozen, slotted dataclass named as in the spec, with ``encode() -> bytes`` (the
whole framed message) and ``decode(payload: bytes)`` (the payload after the type byte and length).
``decode_frontend(type_byte, payload)`` dispatches on the type byte. The three 'p' messages
(PasswordMessage, SASLInitialResponse, SASLResponse) share a type byte; which one it is depends on
the authentication exchange, so ``decode_frontend`` returns ``PasswordMessage`` with the raw payload
and the authentication code re-decodes it with ``SASLInitialResponse.decode`` etc.

Start-up messages have no type byte: see ``decode_startup``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from proxy.wire.codec import ProtocolViolation, Reader, cstr, frame, i16, i32, nullable, u16, u32, untyped_frame
from proxy.wire.common import CopyData, CopyDone, EmptyMessage

# Request codes of the untyped start-up messages.
PROTOCOL_3_0 = 196608  # (3 << 16) | 0
SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104
CANCEL_REQUEST_CODE = 80877102


# -- start-up phase ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class StartupMessage:
    """StartupMessage: protocol version (major << 16 | minor) and parameter name/value pairs."""

    protocol: int
    parameters: dict[str, str] = field(default_factory=dict)

    def encode(self) -> bytes:
        body = i32(self.protocol) + b"".join(cstr(k) + cstr(v) for k, v in self.parameters.items()) + b"\0"
        return untyped_frame(body)


@dataclass(frozen=True, slots=True)
class SSLRequest:
    """SSLRequest: asks the server to start TLS."""

    def encode(self) -> bytes:
        return untyped_frame(i32(SSL_REQUEST_CODE))


@dataclass(frozen=True, slots=True)
class GSSENCRequest:
    """GSSENCRequest: asks for GSSAPI encryption (this proxy always answers 'N')."""

    def encode(self) -> bytes:
        return untyped_frame(i32(GSSENC_REQUEST_CODE))


@dataclass(frozen=True, slots=True)
class CancelRequest:
    """CancelRequest: process id and secret key of the backend to cancel."""

    process_id: int
    secret_key: int

    def encode(self) -> bytes:
        return untyped_frame(i32(CANCEL_REQUEST_CODE) + i32(self.process_id) + i32(self.secret_key))


StartupPhaseMessage = StartupMessage | SSLRequest | GSSENCRequest | CancelRequest


def decode_startup(payload: bytes) -> StartupPhaseMessage:
    """Decode an untyped start-up message from its payload (after the Int32 length).

    Raises ProtocolViolation (08P01) for an unknown code or malformed parameters; the caller
    checks the protocol major version (``FEATURE_NOT_SUPPORTED`` when not 3).
    """
    r = Reader(payload)
    code = r.int32()
    if code == SSL_REQUEST_CODE:
        r.end()
        return SSLRequest()
    if code == GSSENC_REQUEST_CODE:
        r.end()
        return GSSENCRequest()
    if code == CANCEL_REQUEST_CODE:
        pid, key = r.int32(), r.int32()
        r.end()
        return CancelRequest(pid, key)
    params = _parameters(payload, 4)
    if params is None:  # malformed: read string by string, which raises the precise error
        params = {}
        while True:
            name = r.cstring()
            if name == "":
                break
            params[name] = r.cstring()
        r.end()
    return StartupMessage(code, params)


def _parameters(payload: bytes, start: int) -> dict[str, str] | None:
    """The StartupMessage's ``name\\0value\\0 ... \\0`` list from offset ``start`` in one
    decode and one split (every client connection runs this), or None when it is not exactly
    that in valid UTF-8: then ``decode_startup`` reads it string by string to raise its error."""
    body = payload[start:]
    if not body.endswith(b"\0"):
        return None
    try:
        parts = body[:-1].decode("utf-8").split("\0")
    except UnicodeDecodeError:
        return None
    n = len(parts)
    if not n % 2 or parts[-1]:
        return None
    names = parts[0:n - 1:2]
    if not all(names):
        return None
    return dict(zip(names, parts[1:n:2]))


# -- authentication responses ('p') ------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PasswordMessage:
    """PasswordMessage ('p'): a password (clear text or md5-hashed), or the raw payload of a SASL reply."""

    TYPE: ClassVar[bytes] = b"p"
    payload: bytes

    @property
    def password(self) -> str:
        """The password String (raises ProtocolViolation when not NUL-terminated UTF-8)."""
        r = Reader(self.payload)
        s = r.cstring()
        r.end()
        return s

    def encode(self) -> bytes:
        return frame(self.TYPE, self.payload)

    @classmethod
    def from_password(cls, password: str) -> "PasswordMessage":
        """Build from a password string."""
        return cls(cstr(password))

    @classmethod
    def decode(cls, payload: bytes) -> "PasswordMessage":
        return cls(bytes(payload))


@dataclass(frozen=True, slots=True)
class SASLInitialResponse:
    """SASLInitialResponse ('p'): mechanism name and the client-first message (None = absent)."""

    TYPE: ClassVar[bytes] = b"p"
    mechanism: str
    data: bytes | None

    def encode(self) -> bytes:
        return frame(self.TYPE, cstr(self.mechanism) + nullable(self.data))

    @classmethod
    def decode(cls, payload: bytes) -> "SASLInitialResponse":
        r = Reader(payload)
        mech = r.cstring()
        data = r.nullable_bytes()
        r.end()
        return cls(mech, data)


@dataclass(frozen=True, slots=True)
class SASLResponse:
    """SASLResponse ('p'): SASL mechanism-specific data (the client-final message for SCRAM)."""

    TYPE: ClassVar[bytes] = b"p"
    data: bytes

    def encode(self) -> bytes:
        return frame(self.TYPE, self.data)

    @classmethod
    def decode(cls, payload: bytes) -> "SASLResponse":
        return cls(bytes(payload))


# -- simple and extended query -----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Query:
    """Query ('Q'): a simple-protocol query string."""

    TYPE: ClassVar[bytes] = b"Q"
    query: str

    def encode(self) -> bytes:
        return frame(self.TYPE, cstr(self.query))

    @classmethod
    def decode(cls, payload: bytes) -> "Query":
        r = Reader(payload)
        q = r.cstring()
        r.end()
        return cls(q)


@dataclass(frozen=True, slots=True)
class Parse:
    """Parse ('P'): statement name, query string, parameter type OIDs (0 = unspecified)."""

    TYPE: ClassVar[bytes] = b"P"
    statement: str
    query: str
    param_types: tuple[int, ...] = ()

    def encode(self) -> bytes:
        body = cstr(self.statement) + cstr(self.query) + u16(len(self.param_types))
        body += b"".join(u32(t) for t in self.param_types)
        return frame(self.TYPE, body)

    @classmethod
    def decode(cls, payload: bytes) -> "Parse":
        r = Reader(payload)
        name, query = r.cstring(), r.cstring()
        n = r.uint16()
        types = tuple(r.int32() & 0xFFFFFFFF for _ in range(n))
        r.end()
        return cls(name, query, types)


@dataclass(frozen=True, slots=True)
class Bind:
    """Bind ('B'): portal, statement, parameter format codes, values (None = NULL), result formats."""

    TYPE: ClassVar[bytes] = b"B"
    portal: str
    statement: str
    param_formats: tuple[int, ...] = ()
    params: tuple[bytes | None, ...] = ()
    result_formats: tuple[int, ...] = ()

    def encode(self) -> bytes:
        body = cstr(self.portal) + cstr(self.statement)
        body += u16(len(self.param_formats)) + b"".join(i16(f) for f in self.param_formats)
        body += u16(len(self.params)) + b"".join(nullable(p) for p in self.params)
        body += u16(len(self.result_formats)) + b"".join(i16(f) for f in self.result_formats)
        return frame(self.TYPE, body)

    @classmethod
    def decode(cls, payload: bytes) -> "Bind":
        r = Reader(payload)
        portal, stmt = r.cstring(), r.cstring()
        pf = tuple(r.int16() for _ in range(_count(r)))
        params = tuple(r.nullable_bytes() for _ in range(_count(r)))
        rf = tuple(r.int16() for _ in range(_count(r)))
        r.end()
        return cls(portal, stmt, pf, params, rf)

    def param_format(self, i: int) -> int:
        """Format code (0 text, 1 binary) of parameter ``i`` per the spec's 0/1/N rule."""
        if not self.param_formats:
            return 0
        if len(self.param_formats) == 1:
            return self.param_formats[0]
        return self.param_formats[i]


def _count(r: Reader) -> int:
    return r.uint16()


@dataclass(frozen=True, slots=True)
class Describe:
    """Describe ('D'): kind b'S' (statement) or b'P' (portal), and its name."""

    TYPE: ClassVar[bytes] = b"D"
    kind: bytes
    name: str

    def encode(self) -> bytes:
        return frame(self.TYPE, self.kind + cstr(self.name))

    @classmethod
    def decode(cls, payload: bytes) -> "Describe":
        r = Reader(payload)
        kind = r.bytes_(1)
        if kind not in (b"S", b"P"):
            raise ProtocolViolation(f"invalid DESCRIBE message subtype {kind[0]}")
        name = r.cstring()
        r.end()
        return cls(kind, name)


@dataclass(frozen=True, slots=True)
class Execute:
    """Execute ('E'): portal name and maximum rows (0 = no limit)."""

    TYPE: ClassVar[bytes] = b"E"
    portal: str
    max_rows: int = 0

    def encode(self) -> bytes:
        return frame(self.TYPE, cstr(self.portal) + i32(self.max_rows))

    @classmethod
    def decode(cls, payload: bytes) -> "Execute":
        r = Reader(payload)
        portal, n = r.cstring(), r.int32()
        r.end()
        return cls(portal, n)


@dataclass(frozen=True, slots=True)
class Close:
    """Close ('C'): kind b'S' or b'P', and the name."""

    TYPE: ClassVar[bytes] = b"C"
    kind: bytes
    name: str

    def encode(self) -> bytes:
        return frame(self.TYPE, self.kind + cstr(self.name))

    @classmethod
    def decode(cls, payload: bytes) -> "Close":
        r = Reader(payload)
        kind = r.bytes_(1)
        if kind not in (b"S", b"P"):
            raise ProtocolViolation(f"invalid CLOSE message subtype {kind[0]}")
        name = r.cstring()
        r.end()
        return cls(kind, name)


@dataclass(frozen=True, slots=True)
class Sync(EmptyMessage):
    """Sync ('S'): end of an extended-query batch; the server answers ReadyForQuery."""

    TYPE: ClassVar[bytes] = b"S"


@dataclass(frozen=True, slots=True)
class Flush(EmptyMessage):
    """Flush ('H'): asks the server to send what it has buffered."""

    TYPE: ClassVar[bytes] = b"H"


@dataclass(frozen=True, slots=True)
class Terminate(EmptyMessage):
    """Terminate ('X'): the client is closing the connection."""

    TYPE: ClassVar[bytes] = b"X"


@dataclass(frozen=True, slots=True)
class CopyFail:
    """CopyFail ('f'): the client aborts COPY FROM STDIN with an error message."""

    TYPE: ClassVar[bytes] = b"f"
    message: str

    def encode(self) -> bytes:
        return frame(self.TYPE, cstr(self.message))

    @classmethod
    def decode(cls, payload: bytes) -> "CopyFail":
        r = Reader(payload)
        m = r.cstring()
        r.end()
        return cls(m)


@dataclass(frozen=True, slots=True)
class FunctionCall:
    """FunctionCall ('F'): function OID, argument formats, arguments, result format."""

    TYPE: ClassVar[bytes] = b"F"
    function_oid: int
    arg_formats: tuple[int, ...] = ()
    args: tuple[bytes | None, ...] = ()
    result_format: int = 0

    def encode(self) -> bytes:
        body = u32(self.function_oid) + u16(len(self.arg_formats)) + b"".join(i16(f) for f in self.arg_formats)
        body += u16(len(self.args)) + b"".join(nullable(a) for a in self.args) + i16(self.result_format)
        return frame(self.TYPE, body)

    @classmethod
    def decode(cls, payload: bytes) -> "FunctionCall":
        r = Reader(payload)
        oid = r.int32() & 0xFFFFFFFF
        af = tuple(r.int16() for _ in range(_count(r)))
        args = tuple(r.nullable_bytes() for _ in range(_count(r)))
        rf = r.int16()
        r.end()
        return cls(oid, af, args, rf)


FRONTEND_TYPES: dict[bytes, type] = {
    m.TYPE: m for m in (Query, Parse, Bind, Describe, Execute, Close, Sync, Flush, Terminate,
                        CopyData, CopyDone, CopyFail, FunctionCall, PasswordMessage)
}

#: Human-readable names by type byte (for logs and traces).
FRONTEND_NAMES: dict[int, str] = {t[0]: m.__name__ for t, m in FRONTEND_TYPES.items()}


def decode_frontend(type_byte: int, payload: bytes):
    """Decode one typed frontend message. Raises ProtocolViolation (08P01) on an unknown type or bad payload."""
    cls = FRONTEND_TYPES.get(bytes((type_byte,)))
    if cls is None:
        raise ProtocolViolation(f"invalid frontend message type {type_byte}")
    return cls.decode(payload)
