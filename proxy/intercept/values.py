"""Turn the engine's Python values into PostgreSQL text input, and bound parameters into Python values.

The engine returns rows of Python values (rpc.Impl); the interceptor hands them to PostgreSQL as
typed literals inside a VALUES list, so that PostgreSQL itself produces the output text or binary
format, the session's TimeZone/DateStyle and the RowDescription. These functions only need to
produce text that the type's input function accepts (PostgreSQL docs: "Date/Time Input",
"Array Value Input", "JSON Types").
"""

from __future__ import annotations

import datetime as dt
import json
import struct
from typing import Any

from proxy.wire import sqlstate


class ValueError_(Exception):
    """A bound parameter that cannot be read: ``sqlstate`` 22P03 (invalid_binary_representation) or
    0A000 for a binary format of a type this proxy does not decode."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.sqlstate = code
        self.message = message


def to_text(value: Any, type_name: str) -> str | None:
    """The text input form of ``value`` for a column of ``type_name`` (a key of engine.rpc.OID).

    None -> None (NULL); bool -> 'true'/'false'; datetime -> ISO 8601; dict/list for json/jsonb ->
    JSON text; list/tuple for array types -> an array literal; everything else -> str(value).
    """
    if value is None:
        return None
    if type_name.startswith("_"):
        return array_literal(value)
    if type_name in ("json", "jsonb") and not isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    return str(value)


def array_literal(items: Any) -> str:
    """A one-dimensional array literal ``{a,"b c",NULL}`` with PostgreSQL's quoting rules."""
    parts = []
    for item in items:
        if item is None:
            parts.append("NULL")
            continue
        s = "true" if item is True else "false" if item is False else str(item)
        if s == "" or s.upper() == "NULL" or any(c in s for c in '{},"\\ \t\n\r'):
            s = '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
        parts.append(s)
    return "{" + ",".join(parts) + "}"


_BINARY = {
    16: lambda b: struct.unpack("!?", b)[0],
    20: lambda b: struct.unpack("!q", b)[0],
    21: lambda b: struct.unpack("!h", b)[0],
    23: lambda b: struct.unpack("!i", b)[0],
    25: lambda b: b.decode(),
    1043: lambda b: b.decode(),
    19: lambda b: b.decode(),
    114: lambda b: b.decode(),
    3802: lambda b: b[1:].decode(),
    701: lambda b: struct.unpack("!d", b)[0],
    700: lambda b: struct.unpack("!f", b)[0],
}


def param_value(raw: bytes | None, fmt: int, type_oid: int) -> Any:
    """A Bind parameter as a Python value: text format -> str; binary -> decoded by ``type_oid``
    (bool, int2/4/8, float4/8, text, varchar, name, json, jsonb). Raises ValueError_ otherwise."""
    if raw is None:
        return None
    if fmt == 0:
        try:
            return raw.decode()
        except UnicodeDecodeError:
            raise ValueError_(sqlstate.CHARACTER_NOT_IN_REPERTOIRE, 'invalid byte sequence for encoding "UTF8"') from None
    decode = _BINARY.get(type_oid)
    if decode is None:
        raise ValueError_(sqlstate.FEATURE_NOT_SUPPORTED,
                          f"binary format of type OID {type_oid} is not supported for iasql_* arguments")
    try:
        return decode(raw)
    except (struct.error, UnicodeDecodeError, IndexError):
        raise ValueError_(sqlstate.INVALID_BINARY_REPRESENTATION, "incorrect binary data format in bind parameter") from None
