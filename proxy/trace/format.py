"""The trace file format (JSON Lines), shared by the recorder and replay.

Line 1, the header::

    {"trace": "iasql-proxy", "format": 1, "proxy_version": "0.1.0", "time": "2026-11-29T16:56:11.123456Z",
     "client": "127.0.0.1:51234",
     "variable": {"parameter_status": ["server_version", "TimeZone", ...],
                  "error_fields": ["F", "L", "R"], "row_description_table_oid": true,
                  "notification_pid": true, "backend_key_data": true}}

``variable`` lists what replay ignores because it legitimately differs between two runs: the
values of the named ParameterStatus messages (their presence too, in the login block), the
ErrorResponse/NoticeResponse fields that name the server's source file/line/routine, the table
OIDs of RowDescription, NotificationResponse process ids and BackendKeyData.

Then one line per protocol message, in the order the proxy saw them::

    {"i": 12, "dir": "backend", "msg": "DataRow", "fields": {"values": ["1", null]},
     "hex": "44000000...", "t_us": 10423}

- ``i``: message index (0-based, both directions), ``t_us``: microseconds since the session's first byte.
- ``dir``: ``frontend`` (client to proxy) or ``backend`` (proxy to client).
- ``msg``: the protocol message name (``SSLResponse`` is the one-byte answer to SSLRequest;
  ``Authentication*`` names follow the spec: AuthenticationOk, AuthenticationSASL...).
- ``fields``: decoded fields where the codec knows them (bytes as UTF-8 text, else ``{"hex": ...}``).
- ``hex``: the whole message as sent, type byte and length included. Authoritative for replay.
- ``redacted: true`` (and ``hex: null``, with ``len``: the message's length in bytes, type byte
  included): a secret was removed. During login: PasswordMessage, SASLInitialResponse,
  SASLResponse, AuthenticationSASLContinue/Final data. After login: a message that may carry a
  secret (proxy.trace.redact lists them): a Query or Parse whose text mentions
  ``aws_credentials``, ``secret_access_key``, ``secret``, ``password`` or ``certificate_import``,
  the Bind of such a statement, and, until the ReadyForQuery that ends them, the DataRow,
  CopyData, ErrorResponse, NoticeResponse and NotificationResponse messages answering them and the
  client's CopyData/CopyFail; the DataRows answering ``access_key_request``/``key_pair_request``;
  DataRows under a RowDescription with a secret column (``secretaccesskey``, ``privatekey``,
  ``password``... after lower-casing and dropping ``_``). ``fields`` then keeps only what cannot
  hold the secret: a statement/portal name (Parse, Bind), the S/V/C fields of an error or notice.
  Replay refuses a trace with a redacted *frontend* message after AuthenticationOk (it cannot send
  what was not recorded; the error names the message index); for a redacted *backend* message it
  checks only that a message of that type arrives.
- ``variable``: optional, per line: ErrorResponse/NoticeResponse field codes (e.g. ``["M"]``) or
  DataRow column indexes whose digits replay normalises (the recorder marks messages that contain
  timestamps, durations or process ids; edit by hand to mark more).
- ``conn: "cancel"`` on a ``CancelRequest`` line: a CancelRequest for this session, received on
  another connection at that point. Replay sends its own CancelRequest there.

Last line, when the session ended normally: ``{"end": true, "t_us": ..., "complete": true}``;
``complete: false`` with ``dropped_bytes`` when the bounded queue overflowed (nothing after the gap
is recorded), ``unframed`` when bytes at the end did not form whole messages.
"""

from __future__ import annotations

import dataclasses
import re

FORMAT_VERSION = 1
MAGIC = "iasql-proxy"

#: ParameterStatus names whose values depend on the server, the machine or the login, not the session.
VARIABLE_PARAMETER_STATUS = [
    "server_version", "server_version_num", "TimeZone", "session_authorization", "is_superuser",
    "application_name", "scram_iterations", "in_hot_standby", "default_transaction_read_only",
    "search_path",
]

#: ErrorResponse/NoticeResponse fields that name the server's C source location.
VARIABLE_ERROR_FIELDS = ["F", "L", "R"]


def default_variable() -> dict:
    """The ``variable`` section of a new trace's header."""
    return {"parameter_status": list(VARIABLE_PARAMETER_STATUS), "error_fields": list(VARIABLE_ERROR_FIELDS),
            "row_description_table_oid": True, "notification_pid": True, "backend_key_data": True}


AUTH_NAMES = {0: "AuthenticationOk", 2: "AuthenticationKerberosV5", 3: "AuthenticationCleartextPassword",
              5: "AuthenticationMD5Password", 7: "AuthenticationGSS", 8: "AuthenticationGSSContinue",
              9: "AuthenticationSSPI", 10: "AuthenticationSASL", 11: "AuthenticationSASLContinue",
              12: "AuthenticationSASLFinal"}

#: Digits in notice/error text that vary from run to run: timestamps, durations, pids.
_VARIABLE_TEXT = re.compile(
    r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d|\d+(?:\.\d+)?\s*(?:ms|msec|s|sec|secs|seconds|milliseconds|µs|us)\b"
    r"|\b(?:pid|PID|process)\s+\d+", re.IGNORECASE)
_DIGITS = re.compile(r"\d+")


def has_variable_digits(text: str) -> bool:
    """True when ``text`` contains a timestamp, a duration or a process id."""
    return bool(_VARIABLE_TEXT.search(text))


def normalise_digits(text: str) -> str:
    """``text`` with every run of digits replaced by ``#``."""
    return _DIGITS.sub("#", text)


def jsonable(v):
    """A JSON-friendly form of a decoded field value."""
    if isinstance(v, (bytes, bytearray, memoryview)):
        b = bytes(v)
        try:
            s = b.decode("utf-8")
        except UnicodeDecodeError:
            return {"hex": b.hex()}
        if any(ord(c) < 32 and c not in "\t\n\r" for c in s):
            return {"hex": b.hex()}
        return s
    if isinstance(v, (tuple, list)):
        return [jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {f.name: jsonable(getattr(v, f.name)) for f in dataclasses.fields(v)}
    return v


def message_fields(msg) -> dict:
    """Decoded fields of a codec message (ErrorResponse/NoticeResponse fields as ``{code: value}``)."""
    from proxy.wire import backend as B

    if isinstance(msg, B._Fields):
        return {k: v for k, v in msg.fields}
    if isinstance(msg, B.Authentication):
        if msg.code == B.AUTH_SASL:
            return {"code": msg.code, "mechanisms": msg.mechanisms()}
        out = {"code": msg.code}
        if msg.data:
            out["data"] = jsonable(msg.data)
        return out
    return {f.name: jsonable(getattr(msg, f.name)) for f in dataclasses.fields(msg)}
