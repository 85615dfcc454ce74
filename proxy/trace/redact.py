"""Which protocol messages of a traced session may carry a secret, and must be redacted.

The IaSQL ``aws_credentials`` table holds the user's AWS key pair, and its ``secret_access_key``
must never reach a wire trace; nor must a Secrets Manager value written to ``secret.value``
(module ``aws_secrets_manager``), a password (``set_user_password``, ``rds.master_user_password``,
``ALTER ROLE ... PASSWORD``), a private key passed to ``certificate_import`` or a secret a module
RPC returns (``access_key_request``'s ``secretaccesskey``, ``key_pair_request``'s
``privatekey``). What counts as secret is listed in one place, below: ``SECRET_TEXT_WORDS``,
``SECRET_ARGUMENT_FUNCTIONS``, ``SECRET_RESULT_FUNCTIONS`` and ``SECRET_COLUMN_WORDS``. The trace writer (proxy.trace.recorder) asks a
``SecretTracker``, one per session, about every message after it is framed; a message the
tracker flags is written with ``"redacted": true`` and ``"hex": null`` like a password, keeping
``len`` and the few fields that ``redacted_fields`` says are safe (statement and portal names, an
error's severity and code).

The rules are deliberately conservative and cheap (a bytes search per Query/Parse, set look-ups
otherwise), and they only run on the writer thread, when tracing is on:

- a ``Query`` or ``Parse`` whose text mentions ``aws_credentials``, ``secret_access_key``, the
  word ``secret`` (the table), ``password`` anywhere (a column, a role's password, an RPC) or a
  module RPC whose arguments carry a secret (``SECRET_ARGUMENT_FUNCTIONS``; case-insensitive) is
  redacted; so is a later one that names an
  SQL-level prepared statement or cursor (``PREPARE x AS ...``, ``DECLARE x CURSOR FOR ...``)
  such a text created;
- a ``Bind`` of a statement whose ``Parse`` was redacted is redacted (it carries the values), and
  its portal is remembered (the unnamed statement and portal included);
- every protocol *unit* (a Query, or the extended messages up to and including Sync, or a
  FunctionCall: each ends with one ReadyForQuery) that contains such a message, or executes such a
  portal, is *secret* until its ReadyForQuery; while any secret unit is outstanding, backend
  ``DataRow``, ``CopyData``, ``ErrorResponse``, ``NoticeResponse`` and ``NotificationResponse``
  messages, and frontend ``CopyData``/``CopyFail``, are redacted (COPY in either direction, the
  rows of a SELECT with aliased columns, an error or notice that echoes a value);
- a ``Query`` or ``Parse`` whose text calls a module RPC whose *results* carry a secret
  (``SECRET_RESULT_FUNCTIONS``) is recorded (the call itself carries none, and replay can send
  it), but the rows answering it are redacted, whatever their columns are named (``SELECT * FROM
  access_key_request('u') AS t(a, b, c, d)``); so are the rows of a later execution of that
  prepared statement or portal;
- a ``RowDescription`` with a secret column (its name, lower-cased with everything but letters and
  digits dropped, contains a word of ``SECRET_COLUMN_WORDS``: ``secret_access_key``,
  ``secretaccesskey``, ``privatekey``, ``private_key``, ``master_user_password``...) makes the
  ``DataRow`` messages
  after it redacted until the next RowDescription, CommandComplete, EmptyQueryResponse,
  ErrorResponse or ReadyForQuery (kept across a PortalSuspended), whatever statement produced
  them (a view, a function); the statements and portals described in the outstanding units are
  remembered, so that their later executions without a Describe have their rows redacted too.

"Any outstanding unit" rather than "the unit being answered" keeps the rules safe when pairing
replies with requests is not exact: with pipelined units, a neighbour of a secret unit may be
redacted too, and a unit whose ReadyForQuery never comes (a Sync that Postgres ignored in copy-in
mode, when the unit cannot be reopened) keeps redacting, never less. What the rules cannot see (a
secret copied into another table or passed to a function, a view's rows fetched by COPY) is not
redacted: check a trace before publishing it.
"""

from __future__ import annotations

import collections
import re

from proxy.secret_words import (  # what counts as secret: one list for traces and logs
    SECRET_ARGUMENT_FUNCTIONS,
    SECRET_COLUMN_WORDS,
    SECRET_RESULT_FUNCTIONS,
    SECRET_TEXT_WORDS,
)

#: A statement text that may carry a secret (bytes, case-insensitive): ``SECRET_TEXT_WORDS``.
SECRET_WORDS = re.compile(b"|".join(w.encode() for w in SECRET_TEXT_WORDS), re.IGNORECASE)

#: A statement text whose rows carry a secret (bytes, case-insensitive): ``SECRET_RESULT_FUNCTIONS``.
SECRET_RESULT_CALLS = re.compile(b"|".join(re.escape(w.encode()) for w in SECRET_RESULT_FUNCTIONS), re.IGNORECASE)

_NOT_ALNUM = re.compile(rb"[^a-z0-9]+")

#: Names an SQL text creates that later texts may use without naming the table again.
_CREATES = re.compile(rb"\b(?:PREPARE|DECLARE)\s+(\"(?:[^\"]|\"\")+\"|[A-Za-z_][A-Za-z0-9_$]*)", re.IGNORECASE)


def mentions_secret(data: bytes) -> bool:
    """Whether a statement's text may carry a secret.

    Args:
        data: the text (any bytes).

    Returns:
        True when ``data`` contains one of ``SECRET_TEXT_WORDS`` (``aws_credentials``,
        ``secret_access_key``, the word ``secret``, ``password``, a ``SECRET_ARGUMENT_FUNCTIONS``
        name) in any letter case.
    """
    return SECRET_WORDS.search(data) is not None


def calls_secret_result_function(data: bytes) -> bool:
    """Whether a statement's text calls a module RPC whose rows carry a secret.

    Args:
        data: the text (any bytes).

    Returns:
        True when ``data`` names one of ``SECRET_RESULT_FUNCTIONS`` in any letter case.
    """
    return SECRET_RESULT_CALLS.search(data) is not None


def is_secret_column(name: bytes | str) -> bool:
    """Whether a result column's values are secrets.

    Args:
        name: the column name (as in a RowDescription; bytes or text).

    Returns:
        True when ``name``, lower-cased with everything but ASCII letters and digits dropped
        (``Secret_Access_Key`` -> ``secretaccesskey``), contains one of ``SECRET_COLUMN_WORDS``.
    """
    if isinstance(name, str):
        name = name.encode("utf-8", "replace")
    norm = _NOT_ALNUM.sub(b"", name.lower())
    return any(w.encode() in norm for w in SECRET_COLUMN_WORDS)


def row_description_is_secret(payload: bytes) -> bool:
    """Whether the rows after a RowDescription carry a secret.

    Args:
        payload: the RowDescription's payload (after its type byte and length).

    Returns:
        True when one of its column names is secret (``is_secret_column``); when the payload is
        malformed, True when any of its bytes, normalised the same way, contains a secret word
        (never less redaction than a well-formed message would get).
    """
    if len(payload) >= 2:
        n = int.from_bytes(payload[:2], "big")
        pos = 2
        for _ in range(n):
            end = payload.find(b"\0", pos)
            if end < 0:
                break
            if is_secret_column(payload[pos:end]):
                return True
            pos = end + 19  # NUL, table oid (4), attnum (2), type oid (4), size (2), modifier (4), format (2)
        else:
            return False
    return is_secret_column(payload)


class _Unit:
    """One request unit, answered by one ReadyForQuery. ``secret``: its replies are redacted;
    ``rows``: its DataRows are; ``extended``: extended-protocol messages closed by a Sync;
    ``described``: (kind, name) of its Describe messages."""

    __slots__ = ("secret", "rows", "extended", "described")

    def __init__(self, secret: bool = False, extended: bool = False):
        self.secret = secret
        self.rows = False
        self.extended = extended
        self.described: list[tuple[bytes, bytes]] = []


def _cstrings(payload: bytes, n: int) -> list[bytes] | None:
    """The first ``n`` NUL-terminated strings of ``payload``, or None when it has fewer."""
    out, pos = [], 0
    for _ in range(n):
        end = payload.find(b"\0", pos)
        if end < 0:
            return None
        out.append(payload[pos:end])
        pos = end + 1
    return out


def _text(b: bytes) -> str:
    return b.decode("utf-8", "replace")


class SecretTracker:
    """Per-session state of the redaction rules (see the module docstring). Not thread-safe: the
    trace writer thread alone uses it.

    ``frontend(typ, raw)`` and ``backend(typ, raw)`` take one whole message (type byte, length and
    payload; ``typ`` is its type byte as an int) in the order the proxy saw them, and return None
    when the message may be written as it is, else the dict of fields to write for it redacted.
    """

    def __init__(self) -> None:
        self.units: collections.deque[_Unit] = collections.deque()   # sent, ReadyForQuery not yet seen
        self.batch: _Unit | None = None       # the extended unit being sent (no Sync yet); also in units
        self.secret_statements: set[bytes] = set()   # Parse redacted
        self.secret_portals: set[bytes] = set()      # bound from a secret statement
        self.rows_statements: set[bytes] = set()     # described with a secret column, or calling a SECRET_RESULT_FUNCTIONS
        self.rows_portals: set[bytes] = set()
        self.sql_names: set[bytes] = set()           # PREPARE / DECLARE names from secret texts
        self._sql_names_re: re.Pattern | None = None
        self.rows_by_column = False   # a RowDescription with a secret column, until the result ends
        self.suspended = False        # a PortalSuspended since that RowDescription

    # -- helpers ------------------------------------------------------------------------------
    def _secret_outstanding(self) -> bool:
        for u in self.units:
            if u.secret:
                return True
        return False

    def _rows_outstanding(self) -> bool:
        if self.rows_by_column:
            return True
        for u in self.units:
            if u.secret or u.rows:
                return True
        return False

    def _text_is_secret(self, text: bytes) -> bool:
        if SECRET_WORDS.search(text) is not None:
            return True
        r = self._sql_names_re
        return r is not None and r.search(text) is not None

    def _learn_names(self, text: bytes) -> None:
        """Remember the prepared statement / cursor names a secret SQL text creates."""
        found = {m.group(1) for m in _CREATES.finditer(text)}
        if not found:
            return
        for name in found:
            if name.startswith(b'"'):
                self.sql_names.add(name[1:-1].replace(b'""', b'"'))
            else:
                self.sql_names.add(name.lower())
        alternatives = b"|".join(re.escape(n) for n in sorted(self.sql_names))
        self._sql_names_re = re.compile(rb"(?<![A-Za-z0-9_$])(?:" + alternatives + rb")(?![A-Za-z0-9_$])",
                                        re.IGNORECASE)

    def _extended(self) -> _Unit:
        """The open extended unit (created and queued by its first message)."""
        u = self.batch
        if u is None:
            u = self.batch = _Unit(extended=True)
            self.units.append(u)
        return u

    # -- frontend -----------------------------------------------------------------------------
    def frontend(self, typ: int, raw: bytes) -> dict | None:
        """Account for frontend message ``raw``; returns the fields to keep when it must be redacted."""
        payload = raw[5:]
        if typ == 0x51:  # Query
            secret = self._text_is_secret(payload)
            if secret:
                self._learn_names(payload)
            rows = not secret and SECRET_RESULT_CALLS.search(payload) is not None
            if self.batch is not None:  # a Query inside an unsynced batch: one ReadyForQuery for both
                self.batch.secret |= secret
                self.batch.rows |= rows
                self.batch = None
            else:
                u = _Unit(secret)
                u.rows = rows
                self.units.append(u)
            return {} if secret else None
        if typ == 0x50:  # Parse
            names = _cstrings(payload, 1)
            name = names[0] if names else b""
            text = payload[len(name) + 1:]
            secret = self._text_is_secret(text)
            rows = not secret and SECRET_RESULT_CALLS.search(text) is not None
            if rows:  # its executions' rows are redacted, in this unit and later ones
                self.rows_statements.add(name)
            else:
                self.rows_statements.discard(name)
            if secret:
                self._learn_names(text)
                self.secret_statements.add(name)
            else:
                self.secret_statements.discard(name)
            u = self._extended()
            u.secret |= secret
            u.rows |= rows
            return {"statement": _text(name)} if secret else None
        if typ == 0x42:  # Bind
            names = _cstrings(payload, 2)
            u = self._extended()
            if names is None:  # malformed: cannot tell which statement it binds
                secret = bool(self.secret_statements)
                u.secret |= secret
                return {} if secret else None
            portal, statement = names
            if statement in self.secret_statements:
                self.secret_portals.add(portal)
                self.rows_portals.discard(portal)
                u.secret = True
                return {"portal": _text(portal), "statement": _text(statement)}
            self.secret_portals.discard(portal)
            if statement in self.rows_statements:
                self.rows_portals.add(portal)
                u.rows = True
            else:
                self.rows_portals.discard(portal)
            return None
        if typ == 0x45:  # Execute
            names = _cstrings(payload, 1)
            u = self._extended()
            if names is not None:
                if names[0] in self.secret_portals:
                    u.secret = True
                elif names[0] in self.rows_portals:
                    u.rows = True
            return None
        if typ == 0x44:  # Describe
            u = self._extended()
            if len(payload) >= 2:
                kind, name = payload[:1], payload[1:].split(b"\0", 1)[0]
                u.described.append((kind, name))
                if name in (self.secret_portals if kind == b"P" else self.secret_statements):
                    u.secret = True
            return None
        if typ == 0x43:  # Close
            self._extended()
            if len(payload) >= 2:
                kind, name = payload[:1], payload[1:].split(b"\0", 1)[0]
                if kind == b"S":
                    self.secret_statements.discard(name)
                    self.rows_statements.discard(name)
                else:
                    self.secret_portals.discard(name)
                    self.rows_portals.discard(name)
            return None
        if typ == 0x53:  # Sync
            if self.batch is None:
                self.units.append(_Unit())
            self.batch = None
            return None
        if typ == 0x46:  # FunctionCall
            if self.batch is not None:
                self.batch = None
            else:
                self.units.append(_Unit())
            return None
        if typ in (0x64, 0x66):  # CopyData, CopyFail
            return {} if self._secret_outstanding() else None
        return None

    # -- backend ------------------------------------------------------------------------------
    def backend(self, typ: int, raw: bytes) -> dict | None:
        """Account for backend message ``raw``; returns the fields to keep when it must be redacted."""
        if typ == 0x44:  # DataRow
            return {} if self._rows_outstanding() else None
        if typ == 0x54:  # RowDescription: a new result (or a Describe's answer)
            self.suspended = False
            self.rows_by_column = row_description_is_secret(raw[5:])
            if self.rows_by_column:
                for u in self.units:
                    for kind, name in u.described:
                        (self.rows_portals if kind == b"P" else self.rows_statements).add(name)
            return None
        if typ == 0x64:  # CopyData
            return {} if self._rows_outstanding() else None
        if typ in (0x45, 0x4E):  # ErrorResponse, NoticeResponse
            if typ == 0x45:
                self.rows_by_column = self.suspended = False
            if not self._secret_outstanding():
                return None
            return _error_code_fields(raw)
        if typ == 0x41:  # NotificationResponse
            return {} if self._secret_outstanding() else None
        if typ in (0x43, 0x49):  # CommandComplete, EmptyQueryResponse
            self.rows_by_column = self.suspended = False
            return None
        if typ == 0x73:  # PortalSuspended
            self.suspended = True
            return None
        if typ == 0x5A:  # ReadyForQuery
            if not self.suspended:
                self.rows_by_column = False
            if self.units and self.units[0] is not self.batch:
                self.units.popleft()
            return None
        if typ == 0x47:  # CopyInResponse
            # Postgres ignores a Sync received in copy-in mode (libpq sends one right after the
            # Execute of an extended COPY FROM STDIN, and another after CopyDone): reopen the unit
            # that Sync closed, so that only the second Sync closes it.
            if self.batch is None and len(self.units) == 1 and self.units[0].extended:
                self.batch = self.units[0]
            return None
        return None


def _error_code_fields(raw: bytes) -> dict:
    """The severity and SQLSTATE fields (S, V, C) of ErrorResponse/NoticeResponse ``raw``; the
    rest (message, detail, hint, where, query...) may echo a value."""
    out = {}
    pos, end = 5, len(raw)
    while pos < end and raw[pos] != 0:
        code = chr(raw[pos])
        stop = raw.find(b"\0", pos + 1)
        if stop < 0:
            break
        if code in ("S", "V", "C"):
            out[code] = _text(raw[pos + 1:stop])
        pos = stop + 1
    return out
