"""Which session state a SQL text may change, found without executing it (pure, no I/O).

Theory of operation
-------------------
In transaction pooling a client's statements run on whichever server connection is free, so the
proxy must know, for each simple Query text or Parse query, what session state it may leave
behind: run-time parameters to re-apply elsewhere, state that cannot be replayed and so pins the
client to its connection (SQL ``PREPARE``, ``LISTEN``, temporary tables, ``DECLARE .. WITH HOLD``,
session advisory locks, ``LOAD``), state removed again, and whether an explicit block opens.

The proxy first runs the cheap byte pre-check ``may_change_state``; only when it matches does it
call ``analyze``. ``analyze`` splits the text at PostgreSQL's statement boundaries (``split.py``) and
lexes each statement (``lexer.py``), so words inside strings, comments, dollar-quoted bodies and
quoted identifiers never count. It reads the *start* of each statement for the utility commands
(grammar of ``gram.y``: ``VariableSetStmt``/``set_rest``/``set_rest_more``/``generic_set``,
``VariableResetStmt``/``reset_rest``, ``DiscardStmt``, ``PrepareStmt``, ``DeallocateStmt``,
``ListenStmt``, ``UnlistenStmt``, ``DeclareCursorStmt``, ``ClosePortalStmt``, ``TransactionStmt``,
``LoadStmt``, ``CreateStmt``/``ViewStmt``/``CreateSeqStmt``/``CreateAsStmt``, ``SELECT .. INTO``),
and *any* token position for the calls ``set_config(..)`` and the advisory lock functions (bare or
qualified with ``pg_catalog``).

Behaviour checked against PostgreSQL where the grammar alone does not say: ``SET SESSION
AUTHORIZATION`` and ``RESET SESSION AUTHORIZATION`` also reset ``role`` to ``none``; ``SET local =
1`` and ``SET session = 1`` name parameters called ``local``/``session`` (the keyword is a modifier
only when a name follows); ``SET SESSION CHARACTERISTICS AS TRANSACTION ..`` sets the
``default_transaction_*`` parameters; a temporary table ``ON COMMIT DROP`` is gone at the end of
its transaction, so it does not pin.

Limitations (documented, not bugs to be surprised by): statements inside a ``DO`` block, a
function or procedure body, ``EXECUTE`` of dynamic SQL, or a trigger are not seen, so a ``SET``
or ``CREATE TEMP TABLE`` run from PL/pgSQL goes unnoticed; user functions that call
``set_config`` or take advisory locks are not followed. A view that becomes temporary because it
references a temporary table, and dropping a temporary table by name, are not detected.
Statements inside an explicit block that is later rolled back are reported as if committed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .lexer import Token, identifier_value, lex, string_value, uescape_spans
from .split import split

__all__ = ["STATEFUL_HINT", "StateEffects", "analyze", "lowered_may_change_state", "may_change_state"]

STATEFUL_HINT: re.Pattern[bytes] = re.compile(
    rb"set|reset|discard|prepare|execute|deallocate|listen|unlisten|declare|close|temp|temporary"
    rb"|set_config|advisory|begin|start|load|u&",
    re.IGNORECASE,
)
"""Byte pre-check: matches when the text *may* change session state (no false negatives).

Takes nothing; use ``STATEFUL_HINT.search(raw_bytes)``. A case-insensitive search for the words
``set reset discard prepare execute deallocate listen unlisten declare close temp temporary set_config
advisory begin start load`` (``pg_temp`` and the advisory lock functions contain ``temp`` and
``advisory``), plus ``U&``, because a ``U&".."`` identifier can spell ``set_config`` with escapes.
When it does not match, ``analyze`` of the same text returns no effect (or fails to lex, in which
case PostgreSQL rejects the text and nothing changes either).
"""

#: ``may_change_state``'s two patterns, for lower-cased bytes. The utility commands of ``analyze``
#: (and ``EXPLAIN``, whose statement it reads) only count at a statement start: the start of the text (comments could hide one, so they are
#: in the second pattern) or after a ``;`` followed by more text. The calls and names ``analyze``
#: finds anywhere are matched by a distinctive part: ``_config`` (``set_config``), ``visory``
#: (the advisory lock functions), ``mp`` (``temp``, ``temporary``, ``pg_temp``), ``&``
#: (``U&".."`` can spell any of them with escapes). Rare first bytes keep the search fast.
_STATE_AT_START = re.compile(
    rb"\s*(?:s(?:et|tart)|reset|d(?:iscard|e(?:allocate|clare))|prepare|l(?:isten|oad)|unlisten|close|begin"
    rb"|ex(?:plain|ecute))")
_STATE_ANYWHERE_PATTERN = rb";\s*[^\s]|/\*|--|&|visory|_config|mp"
_STATE_ANYWHERE = re.compile(_STATE_ANYWHERE_PATTERN)


def may_change_state(data: bytes | bytearray, pos: int = 0, endpos: int | None = None) -> bool:
    """Whether the SQL text ``data[pos:endpos]`` may change session state: no false negatives
    against ``analyze`` (when this returns False, ``analyze`` of the same text reports no effect,
    or the text does not lex and PostgreSQL rejects it). About 3 times cheaper than
    ``STATEFUL_HINT`` (which also matches ``UPDATE t SET``); transaction pooling's fast path calls
    it for every Query and Parse text. ``endpos`` defaults to the end of ``data``."""
    low = data.lower()
    return lowered_may_change_state(low, pos, len(low) if endpos is None else endpos)


def lowered_may_change_state(low: bytes, pos: int, endpos: int) -> bool:
    """``may_change_state`` for bytes already lower-cased (ASCII, ``bytes.lower``)."""
    return _STATE_AT_START.match(low, pos, endpos) is not None or _STATE_ANYWHERE.search(low, pos, endpos) is not None


@dataclass(frozen=True)
class StateEffects:
    """The session state a SQL text may change, as read by ``analyze``.

    - ``gucs``: run-time parameter names possibly changed at session level, lower-cased as
      PostgreSQL compares GUC names: ``SET [SESSION] x`` / ``RESET x`` give ``x`` (a quoted name
      verbatim then lower-cased, qualified custom names joined with ``.``); ``SET ROLE`` and
      ``RESET ROLE`` give ``role``; ``SET``/``RESET SESSION AUTHORIZATION`` give
      ``session_authorization`` and ``role`` (which PostgreSQL resets); ``SET TIME ZONE`` gives
      ``timezone``; ``SET NAMES`` ``client_encoding``; ``SET SCHEMA`` ``search_path``; ``SET XML
      OPTION`` ``xmloption``; ``SET SESSION CHARACTERISTICS AS TRANSACTION`` the matching
      ``default_transaction_isolation``/``_read_only``/``_deferrable``; ``set_config('x', ..,
      is_local)`` gives ``x`` unless ``is_local`` is the constant true. ``SET LOCAL``, ``SET
      TRANSACTION``, ``SET CONSTRAINTS`` and ``RESET TRANSACTION ISOLATION LEVEL`` give nothing.
    - ``reset_all``: ``RESET ALL`` or ``DISCARD ALL`` present (every parameter back to default).
    - ``discard_all``: ``DISCARD ALL`` present (also drops prepared statements, temporary tables,
      listens, advisory locks and cursors).
    - ``pins``: why the client must stay on its server connection, in text order, without
      duplicates: ``"PREPARE s1"``, ``"LISTEN ch"``, ``"CREATE TEMP TABLE t"`` (``VIEW``,
      ``SEQUENCE`` alike; ``"SELECT INTO TEMP t"``; ``"CREATE pg_temp.t"`` for an object created
      in ``pg_temp``), ``"DECLARE c CURSOR WITH HOLD"``, the name of a session advisory lock
      function (``"pg_advisory_lock"``, ``"pg_advisory_lock_shared"``, ``"pg_try_advisory_lock"``,
      ``"pg_try_advisory_lock_shared"``; the ``_xact_`` ones are transaction-scoped and do not
      pin), ``"LOAD"``. Names are as PostgreSQL folds them.
    - ``unpins``: state removed: ``"DEALLOCATE ALL"``, ``"DEALLOCATE s1"``, ``"UNLISTEN *"``,
      ``"UNLISTEN ch"``, ``"DISCARD TEMP"``, ``"DISCARD ALL"``, ``"CLOSE ALL"``, ``"CLOSE c"``,
      ``"pg_advisory_unlock_all"``, and ``"pg_advisory_unlock"``/``"pg_advisory_unlock_shared"``
      (these release *one* hold of one lock: the proxy must count or look at ``pg_locks``).
    - ``deallocate``: the folded names of ``DEALLOCATE [PREPARE] name``, or ``"*"`` for
      ``DEALLOCATE [PREPARE] ALL`` (``DISCARD ALL`` is reported by ``discard_all`` only).
    - ``statement_name``: for a text that is one ``PREPARE name``, ``EXECUTE name`` or
      ``DEALLOCATE [PREPARE] name`` statement: (``"prepare"``/``"execute"``/``"deallocate"``, the
      folded name, start and end offsets of the name's token in the text), else None; transaction
      pooling maps a name the client prepared with the protocol (Parse) to its server name.
    - ``begins_block``: ``BEGIN`` or ``START TRANSACTION`` present at a statement start.
    - ``unknown_gucs_possible``: a ``set_config`` whose name is not a constant string, a ``SET``/
      ``RESET``/``set_config`` the analysis could not read, or a text that could not be lexed:
      the proxy should treat the session's parameters as unknown and read them back.

    Sources: PostgreSQL ``gram.y`` (``VariableSetStmt``, ``VariableResetStmt``, ``DiscardStmt``)
    and the reference pages of SET, RESET, DISCARD, PREPARE, DEALLOCATE, LISTEN, UNLISTEN,
    DECLARE, CLOSE, CREATE TABLE, LOAD and "Advisory Lock Functions".
    """

    gucs: frozenset[str] = frozenset()
    reset_all: bool = False
    discard_all: bool = False
    pins: tuple[str, ...] = ()
    unpins: tuple[str, ...] = ()
    deallocate: tuple[str, ...] = ()
    statement_name: tuple[str, str, int, int] | None = None
    begins_block: bool = False
    unknown_gucs_possible: bool = False


_UNREADABLE = StateEffects(unknown_gucs_possible=True)

_ADVISORY_PIN = frozenset(
    {"pg_advisory_lock", "pg_advisory_lock_shared", "pg_try_advisory_lock", "pg_try_advisory_lock_shared"}
)
_ADVISORY_UNPIN = frozenset({"pg_advisory_unlock_all", "pg_advisory_unlock", "pg_advisory_unlock_shared"})
_FUNCTIONS = _ADVISORY_PIN | _ADVISORY_UNPIN | {"set_config"}
_TEMP = ("temp", "temporary")
# Reserved words that can follow SELECT .. INTO TEMP when "temp" is itself the table name.
_AFTER_INTO_NAME = frozenset(
    {"from", "where", "group", "having", "window", "order", "limit", "offset", "fetch", "for",
     "union", "intersect", "except", "into", "select", "values", "default", "overriding", "as"}
)
_TRUE_WORDS = ("true", "yes")  # boolin: any prefix of these (and "on", "1") is true


class _Statement:
    """One statement's tokens with small accessors (beyond the end they give ``None``/``""``)."""

    __slots__ = ("sql", "toks")

    def __init__(self, sql: str, toks: list[Token]):
        self.sql = sql
        self.toks = toks

    def text(self, i: int) -> str:
        if 0 <= i < len(self.toks):
            t = self.toks[i]
            return self.sql[t.start : t.end]
        return ""

    def word(self, i: int) -> str | None:
        """The lower-cased word at ``i`` when it is an unquoted identifier (a keyword candidate)."""
        if 0 <= i < len(self.toks) and self.toks[i].kind == "ident":
            return self.text(i).lower()
        return None

    def name(self, i: int) -> str | None:
        """The name an identifier (quoted or not) at ``i`` denotes, else ``None``."""
        if 0 <= i < len(self.toks) and self.toks[i].kind in ("ident", "qident"):
            return identifier_value(self.text(i))
        return None

    def qualified(self, i: int) -> tuple[str | None, int]:
        """A dotted name ``a.b.c`` starting at ``i``: (joined name or None, index after it)."""
        first = self.name(i)
        if first is None:
            return None, i
        parts = [first]
        i += 1
        while self.text(i) == "." and self.name(i + 1) is not None:
            parts.append(self.name(i + 1))
            i += 2
        return ".".join(parts), i


def _named(s: _Statement, acc: "_Acc", verb: str, i: int) -> None:
    """Record the statement name at token ``i`` (offsets encoded as negative until ``analyze``
    adds the statement's start)."""
    name = s.name(i)
    if name is not None:
        tok = s.toks[i]
        acc.named = (verb, name, -tok.start - 1, -tok.end - 1)


class _Acc:
    """Mutable collector turned into a ``StateEffects`` at the end."""

    def __init__(self) -> None:
        self.gucs: set[str] = set()
        self.reset_all = False
        self.discard_all = False
        self.pins: list[str] = []
        self.unpins: list[str] = []
        self.deallocate: list[str] = []
        self.named: tuple[str, str, int, int] | None = None  # of the statement read last
        self.statements = 0
        self.begins_block = False
        self.unknown = False

    def pin(self, why: str) -> None:
        if why not in self.pins:
            self.pins.append(why)

    def unpin(self, why: str) -> None:
        if why not in self.unpins:
            self.unpins.append(why)

    def result(self) -> StateEffects:
        return StateEffects(
            gucs=frozenset(self.gucs),
            reset_all=self.reset_all,
            discard_all=self.discard_all,
            pins=tuple(self.pins),
            unpins=tuple(self.unpins),
            deallocate=tuple(self.deallocate),
            statement_name=self.named if self.statements == 1 else None,
            begins_block=self.begins_block,
            unknown_gucs_possible=self.unknown,
        )


def analyze(sql: str, *, standard_conforming_strings: bool = True) -> StateEffects:
    """Read which session state ``sql`` may change, without executing it.

    Takes one simple-Query text or one Parse query, and the session's
    ``standard_conforming_strings`` (from ParameterStatus). Returns a ``StateEffects`` (all empty
    when nothing stateful is found). Raises nothing: a text that cannot be lexed, or any internal
    failure, gives ``StateEffects(unknown_gucs_possible=True)``. Follows PostgreSQL's ``gram.y``
    (``VariableSetStmt``, ``VariableResetStmt``, ``DiscardStmt`` and the other statements named in
    the module docstring) and the documentation of SET, RESET, DISCARD, PREPARE, LISTEN, DECLARE
    and the advisory lock functions. Statements run inside ``DO`` blocks and routine bodies are
    not seen (see the module docstring).
    """
    try:
        statements = split(sql, standard_conforming_strings=standard_conforming_strings)
        if statements is None:
            return _UNREADABLE
        acc = _Acc()
        acc.statements = len(statements)
        for st in statements:
            toks = lex(st.text, standard_conforming_strings=standard_conforming_strings)
            if "uescape" in st.text.lower():
                toks = uescape_spans(st.text, toks)
            s = _Statement(st.text, toks)
            _statement(s, acc)
            if acc.named is not None and acc.named[2] < 0:  # offsets of the statement -> of the text
                verb, name, a, b = acc.named
                acc.named = (verb, name, st.start - a - 1, st.start - b - 1)
            _calls(s, acc, standard_conforming_strings)
        return acc.result()
    except Exception:  # noqa: BLE001 - documented: never raises
        return _UNREADABLE


# --- statement starts ---------------------------------------------------------------------------


def _statement(s: _Statement, acc: _Acc) -> None:
    """Dispatch on the first word of one statement."""
    head = s.word(0)
    i = 0
    if head == "explain":  # EXPLAIN ANALYZE runs CREATE TABLE AS / SELECT INTO
        i = 1
        if s.text(i) == "(":
            i = _close_paren(s, i) + 1
        else:
            while s.word(i) in ("analyze", "analyse", "verbose"):
                i += 1
        head = s.word(i)
    if head == "set":
        _set(s, i + 1, acc)
    elif head == "reset":
        _reset(s, i + 1, acc)
    elif head == "discard":
        what = s.word(i + 1)
        if what == "all":
            acc.reset_all = acc.discard_all = True
            acc.unpin("DISCARD ALL")
        elif what in _TEMP:
            acc.unpin("DISCARD TEMP")
    elif head == "prepare":
        # PREPARE TRANSACTION 'gid' is two-phase commit, not a prepared statement.
        if not (s.word(i + 1) == "transaction" and s.toks[i + 2 : i + 3] and s.toks[i + 2].kind == "string"):
            name = s.name(i + 1)
            if name is not None:
                acc.pin(f"PREPARE {name}")
                _named(s, acc, "prepare", i + 1)
    elif head == "deallocate":
        j = i + 1
        if s.word(j) == "prepare" and j + 1 < len(s.toks):
            j += 1
        if s.word(j) == "all":
            acc.deallocate.append("*")
            acc.unpin("DEALLOCATE ALL")
        elif (name := s.name(j)) is not None:
            acc.deallocate.append(name)
            acc.unpin(f"DEALLOCATE {name}")
            _named(s, acc, "deallocate", j)
    elif head == "execute" and i == 0:
        _named(s, acc, "execute", 1)
    elif head == "listen":
        if (name := s.name(i + 1)) is not None:
            acc.pin(f"LISTEN {name}")
    elif head == "unlisten":
        if s.text(i + 1) == "*":
            acc.unpin("UNLISTEN *")
        elif (name := s.name(i + 1)) is not None:
            acc.unpin(f"UNLISTEN {name}")
    elif head == "declare":
        name = s.name(i + 1)
        for j in range(i + 2, min(i + 10, len(s.toks))):
            if s.word(j) == "cursor":
                if s.word(j + 1) == "with" and s.word(j + 2) == "hold":
                    acc.pin(f"DECLARE {name} CURSOR WITH HOLD")
                break
    elif head == "close":
        if s.word(i + 1) == "all":
            acc.unpin("CLOSE ALL")
        elif (name := s.name(i + 1)) is not None:
            acc.unpin(f"CLOSE {name}")
    elif head == "begin":
        acc.begins_block = True
    elif head == "start":
        if s.word(i + 1) == "transaction":
            acc.begins_block = True
    elif head == "load":
        acc.pin("LOAD")
    elif head == "create":
        _create(s, i + 1, acc)
    if head in ("select", "with") or s.text(i) == "(":
        _select_into(s, i, acc)


def _close_paren(s: _Statement, i: int) -> int:
    """Index of the ``)`` matching the ``(`` at ``i`` (or the last token)."""
    depth = 0
    for j in range(i, len(s.toks)):
        t = s.text(j)
        if t == "(":
            depth += 1
        elif t == ")":
            depth -= 1
            if depth == 0:
                return j
    return len(s.toks) - 1


def _set(s: _Statement, i: int, acc: _Acc) -> None:
    """``SET [SESSION | LOCAL] set_rest`` (gram.y ``VariableSetStmt``)."""

    def assigns(j: int) -> bool:  # a generic_set's "TO" / "=" follows at j
        return s.word(j) == "to" or s.text(j) == "="

    first = s.word(i)
    if first in ("local", "session") and not assigns(i + 1):
        if first == "local":
            return  # SET LOCAL: transaction only
        if s.word(i + 1) not in ("authorization", "characteristics"):
            i += 1  # SET SESSION modifier
    w, w1 = s.word(i), s.word(i + 1)
    if w is not None and not assigns(i + 1):
        if w in ("transaction", "constraints"):
            return  # SET TRANSACTION .. / SET TRANSACTION SNAPSHOT / SET CONSTRAINTS: transaction only
        if w == "session" and w1 == "characteristics":
            _characteristics(s, i + 2, acc)
            return
        if w == "session" and w1 == "authorization":
            acc.gucs.update(("session_authorization", "role"))
            return
        if w == "time" and w1 == "zone":
            acc.gucs.add("timezone")
            return
        if w == "xml" and w1 == "option":
            acc.gucs.add("xmloption")
            return
        simple = {"role": "role", "names": "client_encoding", "schema": "search_path"}
        if w in simple:
            acc.gucs.add(simple[w])
            return
    name, j = s.qualified(i)
    if name is not None and (assigns(j) or (s.word(j) == "from" and s.word(j + 1) == "current")):
        acc.gucs.add(name.lower())
    else:
        acc.unknown = True


def _characteristics(s: _Statement, i: int, acc: _Acc) -> None:
    """``SET SESSION CHARACTERISTICS AS TRANSACTION transaction_mode_list``."""
    for j in range(i, len(s.toks)):
        w = s.word(j)
        if w == "isolation":
            acc.gucs.add("default_transaction_isolation")
        elif w == "read" and s.word(j + 1) in ("only", "write"):
            acc.gucs.add("default_transaction_read_only")
        elif w == "deferrable":
            acc.gucs.add("default_transaction_deferrable")


def _reset(s: _Statement, i: int, acc: _Acc) -> None:
    """``RESET reset_rest`` (gram.y ``VariableResetStmt``)."""
    w, w1 = s.word(i), s.word(i + 1)
    if w == "all" and i + 1 == len(s.toks):
        acc.reset_all = True
    elif w == "time" and w1 == "zone":
        acc.gucs.add("timezone")
    elif w == "transaction" and w1 == "isolation":
        pass  # transaction only
    elif w == "session" and w1 == "authorization":
        acc.gucs.update(("session_authorization", "role"))
    else:
        name, j = s.qualified(i)
        if name is not None and j == len(s.toks):
            acc.gucs.add(name.lower())
        else:
            acc.unknown = True


def _create(s: _Statement, i: int, acc: _Acc) -> None:
    """``CREATE [OR REPLACE] [GLOBAL|LOCAL] TEMP|TEMPORARY [RECURSIVE] TABLE|VIEW|SEQUENCE``, and
    any ``CREATE`` naming an object in ``pg_temp``."""
    if s.word(i) == "or" and s.word(i + 1) == "replace":
        i += 2
    if s.word(i) in ("global", "local") and s.word(i + 1) in _TEMP:
        i += 1
    if s.word(i) in _TEMP:
        i += 1
        if s.word(i) == "recursive":
            i += 1
        kind = s.word(i)
        if kind not in ("table", "view", "sequence"):
            return
        i += 1
        if s.word(i) == "if" and s.word(i + 1) == "not" and s.word(i + 2) == "exists":
            i += 3
        name, _ = s.qualified(i)
        if kind == "table" and _on_commit_drop(s, i):
            return  # dropped at the end of its transaction: nothing outlives the lease
        acc.pin(f"CREATE TEMP {kind.upper()} {name}")
        return
    for j in range(i, len(s.toks) - 2):
        n = s.name(j)
        if n is not None and (n == "pg_temp" or n.startswith("pg_temp_")) and s.text(j + 1) == ".":
            if s.name(j + 2) is not None and not (j > 0 and s.text(j - 1) == "."):
                if not _on_commit_drop(s, j):
                    acc.pin(f"CREATE pg_temp.{s.name(j + 2)}")
                return


def _on_commit_drop(s: _Statement, i: int) -> bool:
    """``ON COMMIT DROP`` before the first ``AS`` at parenthesis depth 0 (CREATE TABLE [AS])."""
    depth = 0
    for j in range(i, len(s.toks)):
        t = s.text(j)
        if t == "(":
            depth += 1
        elif t == ")":
            depth -= 1
        elif depth == 0:
            w = s.word(j)
            if w == "as":
                return False
            if w == "on" and s.word(j + 1) == "commit" and s.word(j + 2) == "drop":
                return True
    return False


def _select_into(s: _Statement, i: int, acc: _Acc) -> None:
    """``SELECT .. INTO [GLOBAL|LOCAL] TEMP|TEMPORARY [TABLE] name`` creates a temporary table."""
    for j in range(i, len(s.toks) - 1):
        if s.word(j) != "into":
            continue
        k = j + 1
        if s.word(k) in ("global", "local"):
            k += 1
        if s.word(k) not in _TEMP:
            continue
        k += 1
        if s.word(k) == "table":
            k += 1
        name, _ = s.qualified(k)
        if name is not None and s.word(k) not in _AFTER_INTO_NAME:
            acc.pin(f"SELECT INTO TEMP {name}")


# --- function calls anywhere --------------------------------------------------------------------


def _calls(s: _Statement, acc: _Acc, scs: bool) -> None:
    """``set_config(..)`` and the advisory lock functions, bare or ``pg_catalog.``-qualified."""
    toks = s.toks
    for j, t in enumerate(toks):
        if t.kind not in ("ident", "qident") or s.text(j + 1) != "(":
            continue
        fn = s.name(j)
        if fn not in _FUNCTIONS:
            continue
        if j >= 1 and s.text(j - 1) == ".":
            if not (s.name(j - 2) == "pg_catalog" and not (j >= 3 and s.text(j - 3) == ".")):
                continue  # another schema's function of the same name
        if fn in _ADVISORY_PIN:
            acc.pin(fn)
        elif fn in _ADVISORY_UNPIN:
            acc.unpin(fn)
        else:
            _set_config(s, j + 1, acc, scs)


def _args(s: _Statement, i: int) -> list[list[int]]:
    """Token indexes of each top-level argument of the call whose ``(`` is at ``i``."""
    args: list[list[int]] = [[]]
    depth = 0
    for j in range(i, len(s.toks)):
        t = s.text(j)
        if t in ("(", "["):
            depth += 1
            if depth == 1:
                continue
        elif t in (")", "]"):
            depth -= 1
            if depth == 0:
                break
        elif t == "," and depth == 1:
            args.append([])
            continue
        args[-1].append(j)
    if args == [[]]:
        return []
    return args


def _constant_string(s: _Statement, idx: list[int], scs: bool) -> str | None:
    """The value of an argument that is a string constant, optionally cast (``'x'::text``)."""
    if not idx or s.toks[idx[0]].kind not in ("string", "dollar"):
        return None
    if len(idx) > 1 and s.text(idx[1]) != "::":
        return None
    text = s.text(idx[0])
    if text[:2].lower() == "u&" and len(idx) > 1 and s.word(idx[1]) == "uescape":
        return None
    return string_value(text, standard_conforming_strings=scs)


def _set_config(s: _Statement, i: int, acc: _Acc, scs: bool) -> None:
    """``set_config(name, value, is_local)``: session-level unless ``is_local`` is constant true."""
    args = _args(s, i)
    if len(args) != 3:
        acc.unknown = True
        return
    name = _constant_string(s, args[0], scs)
    if name is None:
        acc.unknown = True
        return
    flag = args[2]
    local = False
    if len(flag) == 1 and s.word(flag[0]) == "true":
        local = True
    else:
        value = _constant_string(s, flag, scs)
        if value is not None:
            v = value.strip().lower()
            local = v in ("1", "on") or (v != "" and any(w.startswith(v) for w in _TRUE_WORDS))
    if not local:
        acc.gucs.add(name.lower())
