"""The /run protocol and the HTTP checks in front of it, with no I/O.

Theory of operation
-------------------
A WebSocket (RFC 6455) at ``/run`` carries JSON text messages. The client sends

    {"sql": "<script>", "database": "<name>"}     run a script ("database" optional)
    {"cancel": true}                              cancel the statement running now

and for each run the server sends, in order:

    {"statement": i, "text": ..., "start": s, "columns": [...], "types": [...], "rows": [...]}
                                         a chunk of rows of statement i (only while there are more)
    {"statement": i, "text": ..., "start": s, "columns": [...], "types": [...], "rows": [...],
     "command": "INSERT 0 1"}            statement i finished (its last rows, if any)
    {"statement": i, "text": ..., "start": s, "error": {"sqlstate", "message", "detail", "hint",
     "position"}}                        statement i failed; the run stops there
    {"notice": "...", "severity": "NOTICE", "statement": i}   a NoticeResponse, as it arrives
    {"done": true}                       the run is over (also after an error or a cancel)

``i`` counts from 0; ``start`` is the statement's offset (characters) in the script, so that
``position`` (1-based, in the statement, as Postgres gives it) points into the script at
``start + position - 1``. Values are Postgres's text output (NULL is ``null``). A message the
server cannot take gets ``{"error": {...}}`` with no ``statement`` (SQLSTATE 08P01 for a malformed
message, 53300 when the user already runs ``http_max_runs_per_user`` scripts, 55000 when this
socket already runs one) and, when it is a run, ``{"done": true}``.

This module holds the pieces that need no socket: parsing client messages into frozen events,
building server messages, and the HTTP checks of the opening handshake (RFC 7617 Basic
credentials, RFC 6454 origins).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

#: Rows per chunk message: big enough that a chunk costs little next to its rows, small enough that
#: a browser renders the first rows of a large result at once (about 50-200 KiB of JSON per chunk).
ROW_CHUNK = 500
#: Bytes of row text per chunk message at most (a few wide rows make a chunk too).
CHUNK_BYTES = 256 * 1024


class ProtocolError(ValueError):
    """A client message that is not valid /run protocol (the remote side's fault). ``sqlstate`` is
    what the reply's error carries: 08P01 (protocol_violation)."""

    sqlstate = "08P01"


@dataclass(frozen=True, slots=True)
class RunScript:
    """The client asks to run ``sql`` on ``database`` (None: the database named in the URL)."""

    sql: str
    database: str | None = None


@dataclass(frozen=True, slots=True)
class CancelRun:
    """The client asks to cancel the statement running now (a CancelRequest through the proxy)."""


def parse_client_message(text: str | bytes) -> RunScript | CancelRun:
    """Decode one client WebSocket message (a JSON object) into an event.

    Takes the message as received (text frame; a binary frame must hold UTF-8 JSON too). Returns
    RunScript or CancelRun. Raises ProtocolError (SQLSTATE 08P01) for anything else: not JSON, not
    an object, neither ``sql`` nor ``cancel``, wrong types, unknown keys, NUL characters in the
    script (Postgres cannot take them in a Query message).
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("message is not UTF-8") from None
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        raise ProtocolError("message is not JSON") from None
    if not isinstance(obj, dict):
        raise ProtocolError('message must be a JSON object: {"sql": ..., "database": ...} or {"cancel": true}')
    if "cancel" in obj:
        if obj.get("cancel") is not True or len(obj) != 1:
            raise ProtocolError('a cancel message is exactly {"cancel": true}')
        return CancelRun()
    unknown = set(obj) - {"sql", "database"}
    if unknown:
        raise ProtocolError(f"unknown key(s) {', '.join(sorted(map(str, unknown)))}: expected sql, database")
    sql = obj.get("sql")
    if not isinstance(sql, str):
        raise ProtocolError('"sql" must be a string')
    if "\0" in sql:
        raise ProtocolError('"sql" must not contain NUL characters')
    database = obj.get("database")
    if database is not None and (not isinstance(database, str) or not database or "\0" in database):
        raise ProtocolError('"database" must be a non-empty string')
    return RunScript(sql, database)


def error_fields(fields: Any) -> dict[str, Any]:
    """The ``error`` object of a server message from a decoded ErrorResponse (``proxy.wire.backend``).

    Returns {sqlstate, message, detail, hint, position}: strings or null; ``position`` an integer
    (1-based character in the statement) or null.
    """
    pos = fields.get("P")
    return {"sqlstate": fields.get("C"), "message": fields.get("M"), "detail": fields.get("D"),
            "hint": fields.get("H"), "position": int(pos) if pos and pos.isdigit() else None}


def local_error(sqlstate: str, message: str, *, hint: str | None = None) -> dict[str, Any]:
    """An ``error`` object for an error of the endpoint itself (not from Postgres)."""
    return {"sqlstate": sqlstate, "message": message, "detail": None, "hint": hint, "position": None}


def encode(message: dict[str, Any]) -> str:
    """A server message as JSON text (compact; non-ASCII kept as is)."""
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"))


# -- the opening handshake -------------------------------------------------------------------------

def parse_basic_auth(header: str | None) -> tuple[str, str] | None:
    """User and password from an ``Authorization: Basic ...`` header (RFC 7617, UTF-8 charset).

    Returns (user, password), or None when the header is missing, not Basic, not base64, not
    UTF-8, has no ``:`` or an empty user name. The user name cannot contain ``:`` (RFC 7617 2.)."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic" or not value.strip():
        return None
    try:
        raw = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    user, sep, password = raw.partition(":")
    if not sep or not user or "\0" in raw:
        return None
    return user, password


def origin_allowed(origin: str | None, host: str | None, allowed: tuple[str, ...]) -> bool:
    """Whether a request's ``Origin`` may use the endpoint (RFC 6455 10.2, RFC 6454).

    No ``Origin`` header: allowed (not a browser; browsers always send it on a WebSocket
    handshake). Otherwise it must be the endpoint's own origin, ``https://`` + the ``Host``
    header, or one of ``allowed`` (``http_allowed_origins``). Compared case-insensitively.
    """
    if origin is None:
        return True
    origin = origin.strip().rstrip("/").lower()
    if host and origin == f"https://{host.strip().lower()}":
        return True
    return origin in {a.lower() for a in allowed}
