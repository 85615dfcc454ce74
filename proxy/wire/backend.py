"""Backend messages: what the server sends to a client (PostgreSQL protocol chapter, "Message Formats").

Frozen, slotted dataclasses named as in the spec, with ``encode() -> bytes`` (the framed message)
and ``decode(payload)``; ``decode_backend(type_byte, payload)`` dispatches. The proxy relays server
output without decoding it on the fast path; these classes are for messages the proxy itself
builds (authentication, errors, intercepted results) and for tests and traces.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from proxy.wire.codec import ProtocolViolation, Reader, cstr, frame, i16, i32, nullable, u32
from proxy.wire.common import CopyData, CopyDone, EmptyMessage

# Authentication request codes (message 'R').
AUTH_OK = 0
AUTH_CLEARTEXT = 3
AUTH_MD5 = 5
AUTH_SASL = 10
AUTH_SASL_CONTINUE = 11
AUTH_SASL_FINAL = 12


@dataclass(frozen=True, slots=True)
class Authentication:
    """Authentication* ('R'): ``code`` (AUTH_OK, AUTH_CLEARTEXT, AUTH_MD5, AUTH_SASL...) and its data.

    ``data`` is the MD5 salt (4 bytes), the SASL mechanism list (NUL-separated names + final NUL)
    or the SASL challenge bytes, as the code implies.
    """

    TYPE: ClassVar[bytes] = b"R"
    code: int
    data: bytes = b""

    def encode(self) -> bytes:
        return frame(self.TYPE, i32(self.code) + self.data)

    @classmethod
    def decode(cls, payload: bytes) -> "Authentication":
        r = Reader(payload)
        code = r.int32()
        if code in (AUTH_OK, AUTH_CLEARTEXT):
            r.end()
            return cls(code)
        if code == AUTH_MD5:
            salt = r.bytes_(4)
            r.end()
            return cls(code, salt)
        if code == AUTH_SASL:
            start = r.pos
            while r.cstring():  # mechanism names, then an empty one
                pass
            r.end()
            return cls(code, bytes(payload[start:]))
        return cls(code, r.rest())

    @classmethod
    def sasl(cls, mechanisms: list[str]) -> "Authentication":
        """AuthenticationSASL listing ``mechanisms``."""
        return cls(AUTH_SASL, b"".join(cstr(m) for m in mechanisms) + b"\0")

    def mechanisms(self) -> list[str]:
        """The mechanism names of an AuthenticationSASL."""
        return [m.decode() for m in self.data.split(b"\0") if m]


AUTHENTICATION_OK = Authentication(AUTH_OK).encode()


@dataclass(frozen=True, slots=True)
class BackendKeyData:
    """BackendKeyData ('K'): process id and secret key for CancelRequest."""

    TYPE: ClassVar[bytes] = b"K"
    process_id: int
    secret_key: int

    def encode(self) -> bytes:
        return frame(self.TYPE, i32(self.process_id) + i32(self.secret_key))

    @classmethod
    def decode(cls, payload: bytes) -> "BackendKeyData":
        r = Reader(payload)
        pid, key = r.int32(), r.int32()
        r.end()
        return cls(pid, key)


@dataclass(frozen=True, slots=True)
class ParameterStatus:
    """ParameterStatus ('S'): a run-time parameter's name and current value."""

    TYPE: ClassVar[bytes] = b"S"
    name: str
    value: str

    def encode(self) -> bytes:
        return frame(self.TYPE, cstr(self.name) + cstr(self.value))

    @classmethod
    def decode(cls, payload: bytes) -> "ParameterStatus":
        r = Reader(payload)
        n, v = r.cstring(), r.cstring()
        r.end()
        return cls(n, v)


@dataclass(frozen=True, slots=True)
class ReadyForQuery:
    """ReadyForQuery ('Z'): transaction status b'I' idle, b'T' in a block, b'E' in a failed block."""

    TYPE: ClassVar[bytes] = b"Z"
    status: bytes = b"I"

    def encode(self) -> bytes:
        return frame(self.TYPE, self.status)

    @classmethod
    def decode(cls, payload: bytes) -> "ReadyForQuery":
        r = Reader(payload)
        s = r.bytes_(1)
        r.end()
        if s not in (b"I", b"T", b"E"):
            raise ProtocolViolation("invalid transaction status in ReadyForQuery")
        return cls(s)


#: ErrorResponse/NoticeResponse field codes (protocol-error-fields).
FIELD_CODES = {
    "S": "severity", "V": "severity_nonlocalized", "C": "code", "M": "message", "D": "detail",
    "H": "hint", "P": "position", "p": "internal_position", "q": "internal_query", "W": "where",
    "s": "schema_name", "t": "table_name", "c": "column_name", "d": "data_type_name",
    "n": "constraint_name", "F": "file", "L": "line", "R": "routine",
}


@dataclass(frozen=True, slots=True)
class _Fields:
    TYPE: ClassVar[bytes] = b"?"
    fields: tuple[tuple[str, str], ...]

    def encode(self) -> bytes:
        return frame(self.TYPE, b"".join(k.encode("latin-1") + cstr(v) for k, v in self.fields) + b"\0")

    @classmethod
    def decode(cls, payload: bytes):
        r = Reader(payload)
        out = []
        while True:
            code = r.int8()
            if code == 0:
                break
            out.append((chr(code), r.cstring()))  # chr(byte): encode() maps it back via latin-1
        r.end()
        return cls(tuple(out))

    def get(self, code: str, default: str | None = None) -> str | None:
        """The value of field ``code`` (e.g. 'C' for SQLSTATE, 'M' for message)."""
        for k, v in self.fields:
            if k == code:
                return v
        return default

    @property
    def sqlstate(self) -> str | None:
        """Field 'C'."""
        return self.get("C")

    @property
    def message(self) -> str | None:
        """Field 'M'."""
        return self.get("M")

    @classmethod
    def build(cls, severity: str, code: str, message: str, *, detail: str | None = None,
              hint: str | None = None, **extra: str):
        """Build from parts: severity (ERROR, FATAL, NOTICE...), SQLSTATE, message, optional fields."""
        fields = [("S", severity), ("V", severity), ("C", code), ("M", message)]
        if detail:
            fields.append(("D", detail))
        if hint:
            fields.append(("H", hint))
        rev = {v: k for k, v in FIELD_CODES.items()}
        fields += [(rev[k], v) for k, v in extra.items() if v is not None]
        return cls(tuple(fields))


@dataclass(frozen=True, slots=True)
class ErrorResponse(_Fields):
    """ErrorResponse ('E'): identified fields (S, V, C, M, D, H, P, ...)."""

    TYPE: ClassVar[bytes] = b"E"


@dataclass(frozen=True, slots=True)
class NoticeResponse(_Fields):
    """NoticeResponse ('N'): same layout as ErrorResponse."""

    TYPE: ClassVar[bytes] = b"N"


@dataclass(frozen=True, slots=True)
class NegotiateProtocolVersion:
    """NegotiateProtocolVersion ('v'): newest version supported and unrecognised options.

    The spec calls the first Int32 the "newest minor protocol version", but PostgreSQL sends the
    whole version number there (``3 << 16 | minor``, e.g. 196608 for 3.0) and libpq reads it so:
    a bare minor such as 0 makes libpq fail with "server requested downgrade to pre-3.0".
    """

    TYPE: ClassVar[bytes] = b"v"
    newest_minor: int
    unrecognized: tuple[str, ...] = ()

    def encode(self) -> bytes:
        return frame(self.TYPE, i32(self.newest_minor) + i32(len(self.unrecognized))
                     + b"".join(cstr(o) for o in self.unrecognized))

    @classmethod
    def decode(cls, payload: bytes) -> "NegotiateProtocolVersion":
        r = Reader(payload)
        minor, n = r.int32(), r.int32()
        if n < 0:
            raise ProtocolViolation("invalid option count")
        opts = tuple(r.cstring() for _ in range(n))
        r.end()
        return cls(minor, opts)


def _count(r: Reader) -> int:
    """An Int16 element count; a negative one is a protocol violation (not "zero")."""
    n = r.int16()
    if n < 0:
        raise ProtocolViolation("invalid count in message")
    return n


@dataclass(frozen=True, slots=True)
class FieldDescription:
    """One column of a RowDescription."""

    name: str
    table_oid: int = 0
    column_attr: int = 0
    type_oid: int = 25
    type_size: int = -1
    type_modifier: int = -1
    format_code: int = 0


@dataclass(frozen=True, slots=True)
class RowDescription:
    """RowDescription ('T'): the columns of the rows that follow."""

    TYPE: ClassVar[bytes] = b"T"
    fields: tuple[FieldDescription, ...]

    def encode(self) -> bytes:
        body = i16(len(self.fields))
        for f in self.fields:
            body += (cstr(f.name) + u32(f.table_oid) + i16(f.column_attr) + u32(f.type_oid)
                     + i16(f.type_size) + i32(f.type_modifier) + i16(f.format_code))
        return frame(self.TYPE, body)

    @classmethod
    def decode(cls, payload: bytes) -> "RowDescription":
        r = Reader(payload)
        n = _count(r)
        out = []
        for _ in range(n):
            out.append(FieldDescription(r.cstring(), r.int32() & 0xFFFFFFFF, r.int16(), r.int32() & 0xFFFFFFFF,
                                        r.int16(), r.int32(), r.int16()))
        r.end()
        return cls(tuple(out))


@dataclass(frozen=True, slots=True)
class DataRow:
    """DataRow ('D'): column values as bytes (None = NULL)."""

    TYPE: ClassVar[bytes] = b"D"
    values: tuple[bytes | None, ...]

    def encode(self) -> bytes:
        return frame(self.TYPE, i16(len(self.values)) + b"".join(nullable(v) for v in self.values))

    @classmethod
    def decode(cls, payload: bytes) -> "DataRow":
        r = Reader(payload)
        vals = tuple(r.nullable_bytes() for _ in range(_count(r)))
        r.end()
        return cls(vals)


@dataclass(frozen=True, slots=True)
class CommandComplete:
    """CommandComplete ('C'): the command tag, e.g. ``SELECT 3`` or ``INSERT 0 1``."""

    TYPE: ClassVar[bytes] = b"C"
    tag: str

    def encode(self) -> bytes:
        return frame(self.TYPE, cstr(self.tag))

    @classmethod
    def decode(cls, payload: bytes) -> "CommandComplete":
        r = Reader(payload)
        t = r.cstring()
        r.end()
        return cls(t)


@dataclass(frozen=True, slots=True)
class NotificationResponse:
    """NotificationResponse ('A'): notifying backend pid, channel, payload."""

    TYPE: ClassVar[bytes] = b"A"
    process_id: int
    channel: str
    payload: str

    def encode(self) -> bytes:
        return frame(self.TYPE, i32(self.process_id) + cstr(self.channel) + cstr(self.payload))

    @classmethod
    def decode(cls, payload: bytes) -> "NotificationResponse":
        r = Reader(payload)
        pid, ch, pl = r.int32(), r.cstring(), r.cstring()
        r.end()
        return cls(pid, ch, pl)


@dataclass(frozen=True, slots=True)
class ParameterDescription:
    """ParameterDescription ('t'): parameter type OIDs of a prepared statement."""

    TYPE: ClassVar[bytes] = b"t"
    type_oids: tuple[int, ...]

    def encode(self) -> bytes:
        return frame(self.TYPE, i16(len(self.type_oids)) + b"".join(u32(o) for o in self.type_oids))

    @classmethod
    def decode(cls, payload: bytes) -> "ParameterDescription":
        r = Reader(payload)
        oids = tuple(r.int32() & 0xFFFFFFFF for _ in range(_count(r)))
        r.end()
        return cls(oids)


@dataclass(frozen=True, slots=True)
class _CopyResponse:
    TYPE: ClassVar[bytes] = b"?"
    format: int
    column_formats: tuple[int, ...] = ()

    def encode(self) -> bytes:
        return frame(self.TYPE, bytes((self.format,)) + i16(len(self.column_formats))
                     + b"".join(i16(f) for f in self.column_formats))

    @classmethod
    def decode(cls, payload: bytes):
        r = Reader(payload)
        fmt = r.int8()
        cols = tuple(r.int16() for _ in range(_count(r)))
        r.end()
        return cls(fmt, cols)


@dataclass(frozen=True, slots=True)
class CopyInResponse(_CopyResponse):
    """CopyInResponse ('G'): the server is ready for COPY FROM STDIN data."""

    TYPE: ClassVar[bytes] = b"G"


@dataclass(frozen=True, slots=True)
class CopyOutResponse(_CopyResponse):
    """CopyOutResponse ('H'): COPY TO STDOUT data follows."""

    TYPE: ClassVar[bytes] = b"H"


@dataclass(frozen=True, slots=True)
class CopyBothResponse(_CopyResponse):
    """CopyBothResponse ('W'): streaming replication copy."""

    TYPE: ClassVar[bytes] = b"W"


@dataclass(frozen=True, slots=True)
class FunctionCallResponse:
    """FunctionCallResponse ('V'): the function result (None = NULL)."""

    TYPE: ClassVar[bytes] = b"V"
    result: bytes | None

    def encode(self) -> bytes:
        return frame(self.TYPE, nullable(self.result))

    @classmethod
    def decode(cls, payload: bytes) -> "FunctionCallResponse":
        r = Reader(payload)
        v = r.nullable_bytes()
        r.end()
        return cls(v)


@dataclass(frozen=True, slots=True)
class ParseComplete(EmptyMessage):
    """ParseComplete ('1')."""

    TYPE: ClassVar[bytes] = b"1"


@dataclass(frozen=True, slots=True)
class BindComplete(EmptyMessage):
    """BindComplete ('2')."""

    TYPE: ClassVar[bytes] = b"2"


@dataclass(frozen=True, slots=True)
class CloseComplete(EmptyMessage):
    """CloseComplete ('3')."""

    TYPE: ClassVar[bytes] = b"3"


@dataclass(frozen=True, slots=True)
class NoData(EmptyMessage):
    """NoData ('n'): the statement or portal returns no rows."""

    TYPE: ClassVar[bytes] = b"n"


@dataclass(frozen=True, slots=True)
class EmptyQueryResponse(EmptyMessage):
    """EmptyQueryResponse ('I'): the query string was empty."""

    TYPE: ClassVar[bytes] = b"I"


@dataclass(frozen=True, slots=True)
class PortalSuspended(EmptyMessage):
    """PortalSuspended ('s'): Execute's row limit was reached."""

    TYPE: ClassVar[bytes] = b"s"


BACKEND_TYPES: dict[bytes, type] = {
    m.TYPE: m for m in (Authentication, BackendKeyData, ParameterStatus, ReadyForQuery, ErrorResponse,
                        NoticeResponse, NegotiateProtocolVersion, RowDescription, DataRow, CommandComplete,
                        NotificationResponse, ParameterDescription, CopyInResponse, CopyOutResponse,
                        CopyBothResponse, FunctionCallResponse, ParseComplete, BindComplete, CloseComplete,
                        NoData, EmptyQueryResponse, PortalSuspended, CopyDone, CopyData)
}

#: Human-readable names by type byte (for logs and traces).
BACKEND_NAMES: dict[int, str] = {t[0]: m.__name__ for t, m in BACKEND_TYPES.items()}


def decode_backend(type_byte: int, payload: bytes):
    """Decode one backend message. Raises ProtocolViolation (08P01) on an unknown type or bad payload."""
    cls = BACKEND_TYPES.get(bytes((type_byte,)))
    if cls is None:
        raise ProtocolViolation(f"invalid backend message type {type_byte}")
    return cls.decode(payload)


def error(code: str, message: str, *, severity: str = "ERROR", detail: str | None = None,
          hint: str | None = None) -> bytes:
    """An encoded ErrorResponse (severity ERROR unless FATAL/PANIC given)."""
    return ErrorResponse.build(severity, code, message, detail=detail, hint=hint).encode()


def notice(message: str, *, code: str = "00000", severity: str = "NOTICE") -> bytes:
    """An encoded NoticeResponse."""
    return NoticeResponse.build(severity, code, message).encode()
