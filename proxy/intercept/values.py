"""Turn the engine's Python values into PostgreSQL text input.

The engine returns rows of Python values (rpc.Impl); the interceptor hands them to PostgreSQL as
typed literals inside a VALUES list, so that PostgreSQL itself produces the output text or binary
format, the session's TimeZone/DateStyle and the RowDescription. These functions only need to
produce text that the type's input function accepts (PostgreSQL docs: "Date/Time Input",
"Array Value Input", "JSON Types").
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any


class ValueError_(Exception):
    """A value that cannot be given to PostgreSQL as text input: ``sqlstate`` and ``message``."""

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
