"""Find the calls of registered ``iasql_*`` functions in one statement, with no I/O.

Theory of operation
-------------------
The statement is lexed as PostgreSQL lexes it (``lexer.py``), so a name inside a string, comment,
dollar-quoted body or quoted identifier is never a call. A call is a name token followed by
``(``, unqualified or qualified with ``public`` (the schema IaSQL's functions live in; a name
qualified with any other schema is that schema's function, left to PostgreSQL), whose name as
PostgreSQL resolves it (unquoted: ASCII-lower-cased; quoted: exactly as written) is registered. Names right after ``FUNCTION``,
``PROCEDURE``, ``ROUTINE``, ``AGGREGATE``, ``TABLE``, ``INTO``, ``VIEW``, ``TYPE``, ``INDEX``,
``SEQUENCE``, ``UPDATE`` or ``EXISTS`` are declarations or relations (``DROP FUNCTION
iasql_install(text)``, the stub functions of the issue's point 8), not calls.

Calls are intercepted in statements that run their query now: ``SELECT``, ``WITH``, ``VALUES``,
``TABLE``, ``INSERT``, ``UPDATE``, ``DELETE``, ``MERGE`` (possibly in parentheses), ``CREATE TABLE
.. AS`` (unless ``WITH NO DATA``), ``COPY (query) TO``, ``DECLARE .. CURSOR FOR`` and ``EXPLAIN
ANALYZE`` (recorded in ``Call.context``: a cursor's query runs at its first FETCH and EXPLAIN
ANALYZE only measures, so the interceptor refuses mutating calls there). Plain EXPLAIN, CREATE
VIEW, CREATE MATERIALIZED VIEW, PREPARE and function bodies store or describe the query instead
of running it; they reach PostgreSQL, where the stub function (same name, arguments and result
columns) is described like any set-returning function, or fails loudly if it ever runs.

Arguments are kept as written (``Call.args_start``/``args_end`` span the text between the
parentheses): the interceptor evaluates them on the caller's own connection, so any expression
PostgreSQL can evaluate is allowed. Each ``Arg`` also carries its value when it is a constant
(string of any kind, number, ``NULL``, ``TRUE``/``FALSE``, ``ARRAY[..]`` of constants, ``CAST(c AS
t)``, ``type 'literal'``, parentheses, any number of ``::type``) or a bind parameter ``$n``, and
``EXPRESSION`` otherwise. Named notation ``name => value`` (and the old ``name := value``) and
``VARIADIC`` are kept on the argument.

The form of the statement is recorded for building the result (issue point 6): ``from`` for
exactly ``SELECT * FROM [schema.]f(..)``, ``select`` for exactly ``SELECT [schema.]f(..)``,
``embedded`` otherwise; ``in_from`` says whether the call is a FROM item (after ``FROM``,
``JOIN``, ``LATERAL`` or a comma of a FROM list), the only place ``rewrite_with_rows`` can put
rows.
"""

from __future__ import annotations

from proxy.router.marker import may_call

import re
from dataclasses import dataclass
from typing import Union

from .lexer import LexError, Token, fold_identifier, identifier_value, lex, string_value
from .split import Statement

__all__ = ["Arg", "Call", "CallError", "EXPRESSION", "ParamRef", "find_calls", "may_contain_call", "sends_rows_first"]

FEATURE_NOT_SUPPORTED = "0A000"
#: The schema IaSQL's functions live in: a call qualified with any other schema is not IaSQL's.
IASQL_SCHEMA = "public"
SYNTAX_ERROR = "42601"


class CallError(Exception):
    """A call the proxy cannot run, to be reported as ErrorResponse: ``sqlstate``, ``message``,
    optional ``hint`` and ``position``. The client's fault (its SQL), not the proxy's."""

    def __init__(self, sqlstate: str, message: str, *, hint: str | None = None, position: int | None = None):
        super().__init__(message)
        self.sqlstate = sqlstate
        self.message = message
        self.hint = hint
        self.position = position  # 0-based offset in the statement text, when PostgreSQL gives one


@dataclass(frozen=True, slots=True)
class ParamRef:
    """A bind parameter ``$n`` (1-based ``n``) used as an argument."""

    n: int


class _Expression:
    """The value of an argument that is not a constant: evaluated by PostgreSQL, not here."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "EXPRESSION"


#: ``Arg.value`` of an argument that is an expression PostgreSQL must evaluate.
EXPRESSION = _Expression()

Value = Union[str, int, float, bool, None, ParamRef, tuple, _Expression]


@dataclass(frozen=True, slots=True)
class Arg:
    """One argument: its ``value`` (str, int, float, bool, None, ``ParamRef``, a tuple of those
    for ``ARRAY[..]``, or ``EXPRESSION``), its ``name`` when written in named notation (folded as
    an identifier), and whether it was marked ``VARIADIC``."""

    value: Value
    name: str | None = None
    variadic: bool = False


@dataclass(frozen=True, slots=True)
class Call:
    """A call of a registered function found in a statement.

    ``name``: the registered lower-case name; ``args``: the arguments in order; ``form``:
    ``"from"``, ``"select"`` or ``"embedded"`` (module docstring); ``start``/``end``: the span of
    the call expression (qualifier included, closing parenthesis included) in the statement text;
    ``in_from``: whether the call is a FROM item; ``args_start``/``args_end``: the span of the
    argument list between the parentheses; ``context``: ``""`` in a statement that runs its query
    now, ``"DECLARE"`` in a cursor's query, ``"EXPLAIN ANALYZE"`` under EXPLAIN ANALYZE;
    ``plain``: PostgreSQL is sure to call the function exactly once when the statement runs (the
    statement is ``SELECT f(..)``, or the call is the top-level FROM item that ends the statement,
    an alias at most after it); elsewhere (a join, ``WHERE``, ``LIMIT``, a CTE, a subquery) the
    planner may skip it, so the interceptor refuses mutating calls there; ``lateral``: the call is
    a FROM item after another one (a comma, JOIN or LATERAL), so its arguments could refer to
    columns of earlier items, which the proxy cannot evaluate before the statement runs.
    """

    name: str
    args: tuple[Arg, ...]
    form: str
    start: int
    end: int
    in_from: bool = False
    args_start: int = 0
    args_end: int = 0
    context: str = ""
    plain: bool = False
    lateral: bool = False


def may_contain_call(sql: str | bytes) -> bool:
    """The fast path's test (issue point 1): whether ``sql`` contains ``iasql_`` in any ASCII
    letter case, or a module RPC name at an identifier start (``proxy.router.marker``). Takes a
    str or the raw bytes of a Query; returns False only when no call can be present (PostgreSQL
    folds only ASCII letters, and a quoted name must match exactly)."""
    return may_call(sql)


_NOT_A_CALL_AFTER = frozenset(
    "function functions procedure procedures routine routines aggregate table into view type "
    "index sequence update exists".split()
)
_FROM_ITEM_AFTER = frozenset(("from", "join", "lateral"))
#: Statements that run their query when executed; a call in any other statement (EXPLAIN, CREATE
#: VIEW, CREATE TABLE AS, PREPARE, DECLARE, COPY, CREATE FUNCTION ...) is not intercepted.
_RUNS_NOW = frozenset("select with values table insert update delete merge".split())
# Clause keywords that change what a comma at the same depth separates.
_CLAUSES = frozenset(
    "select from where group having order limit offset window union intersect except returning "
    "values set using into fetch for".split()
)


def _word(sql: str, tok: Token) -> str:
    """The folded word of an ``ident`` token, else ''."""
    return fold_identifier(sql[tok.start : tok.end]) if tok.kind == "ident" else ""


def find_calls(
    stmt: Statement | str, names: frozenset[str], *, standard_conforming_strings: bool = True
) -> list[Call]:
    """The calls of functions named in ``names`` (lower-case registered names) in one statement.

    Takes a ``Statement`` or its text (a trailing ``;`` is allowed), the registered names and the
    session's ``standard_conforming_strings`` (used to decode string arguments). Returns the calls
    in text order with offsets into the statement text; a call nested in another call's arguments
    is not listed separately (the outer call's argument check rejects it). Returns ``[]`` when the
    text cannot be lexed (PostgreSQL will report that error itself).
    Raises ``CallError('0A000', ..)`` naming the function when an argument is not a constant or
    bind parameter, and ``CallError('42601', ..)`` when the call's parentheses are not closed.
    Follows ``scan.l`` for names and literals and ``gram.y`` for argument syntax
    (``func_arg_expr``: ``a_expr``, ``param_name => a_expr``, ``VARIADIC a_expr``).
    """
    sql = stmt.text if isinstance(stmt, Statement) else stmt
    try:
        toks = lex(sql, standard_conforming_strings=standard_conforming_strings)
    except LexError:
        return []
    if toks and toks[-1].kind == "punct" and sql[toks[-1].start : toks[-1].end] == ";":
        toks = toks[:-1]
    context = _statement_context(sql, toks)
    if context is None:
        # EXPLAIN, CREATE VIEW / FUNCTION / RULE, PREPARE ...: the statement stores or describes
        # the query instead of running it now, so the call is left to PostgreSQL, whose stub
        # function is described like any function, or fails loudly if it ever runs
        return []
    calls: list[Call] = []
    clause: list[str] = [""]  # the current clause keyword per parenthesis depth
    n = len(toks)
    i = 0
    skip_until = -1  # index of the token closing the last call found
    while i < n:
        tok = toks[i]
        text = sql[tok.start : tok.end]
        if tok.kind == "punct" and text in "([":
            clause.append("")
        elif tok.kind == "punct" and text in ")]":
            if len(clause) > 1:
                clause.pop()
        elif tok.kind == "ident":
            w = fold_identifier(text)
            if w in _CLAUSES:
                clause[-1] = w
            elif w == "join":
                clause[-1] = "from"
        if (
            i > skip_until
            and tok.kind in ("ident", "qident")
            and i + 1 < n
            and toks[i + 1].kind == "punct"
            and sql[toks[i + 1].start : toks[i + 1].end] == "("
            and identifier_value(text) in names
        ):
            first = i
            qualifier = None
            if i >= 2 and sql[toks[i - 1].start : toks[i - 1].end] == "." and toks[i - 2].kind in (
                "ident",
                "qident",
            ):
                first = i - 2
                qualifier = identifier_value(sql[toks[i - 2].start : toks[i - 2].end])
            before = toks[first - 1] if first > 0 else None
            before_word = _word(sql, before) if before is not None else ""
            if qualifier is not None and qualifier != IASQL_SCHEMA:
                # another schema's function of the same name (the user's own, pg_catalog's, the
                # argument probes'): PostgreSQL resolves and runs it, not the proxy
                pass
            elif before_word not in _NOT_A_CALL_AFTER and not (
                before is not None and sql[before.start : before.end] == "."
            ):
                name = identifier_value(text)
                close = _matching_paren(sql, toks, i + 1)
                if close is None:
                    # the statement is a syntax error: PostgreSQL says so, with its own position
                    return []
                args = _arguments(sql, toks[i + 2 : close], name, standard_conforming_strings)
                in_from = before_word in _FROM_ITEM_AFTER or (
                    before is not None
                    and sql[before.start : before.end] == ","
                    and clause[-1] == "from"
                )
                form = _form(sql, toks, first, close)
                plain = not context and (form != "embedded" or (
                    len(clause) == 1 and before_word == "from" and _only_alias(sql, toks[close + 1 :])))
                lateral = in_from and before_word != "from"  # after a comma, JOIN or LATERAL
                calls.append(Call(name, args, form, toks[first].start, toks[close].end, in_from,
                                  toks[i + 1].end, toks[close].start, context, plain, lateral))
                skip_until = close
        i += 1
    return calls


_TABLE_PREFIX = frozenset(("global", "local", "temporary", "temp", "unlogged"))
_TRUE_WORDS = frozenset(("true", "on", "1"))
_FALSE_WORDS = frozenset(("false", "off", "0"))


def _statement_context(sql: str, toks: list[Token], start: int = 0) -> str | None:
    """How the statement starting at token ``start`` treats the queries in it: ``""`` runs them
    now, ``"DECLARE"``/``"EXPLAIN ANALYZE"`` (see ``Call.context``), None stores or describes them
    (``gram.y``: CreateAsStmt, DeclareCursorStmt, ExplainStmt, CopyStmt)."""
    i = start
    n = len(toks)
    while i < n and toks[i].kind == "punct" and sql[toks[i].start : toks[i].end] == "(":
        i += 1
    if i >= n:
        return None
    lead = _word(sql, toks[i])
    if lead in _RUNS_NOW:
        return ""
    if lead == "declare":
        return "DECLARE"
    if lead == "copy":
        nxt = toks[i + 1] if i + 1 < n else None
        return "" if nxt is not None and sql[nxt.start : nxt.end] == "(" else None
    if lead == "create":
        j = i + 1
        while j < n and _word(sql, toks[j]) in _TABLE_PREFIX:
            j += 1
        if j >= n or _word(sql, toks[j]) != "table":
            return None
        depth = 0
        has_as = False
        for t in toks[j + 1 :]:
            c = sql[t.start : t.end]
            if c == "(":
                depth += 1
            elif c == ")":
                depth -= 1
            elif depth == 0 and _word(sql, t) == "as":
                has_as = True
                break
        words = [_word(sql, t) for t in toks[-3:]]
        if not has_as or words == ["with", "no", "data"]:
            return None
        return ""
    if lead == "explain":
        j = i + 1
        analyze = False
        if j < n and sql[toks[j].start : toks[j].end] == "(":
            close = _matching_paren(sql, toks, j)
            if close is None:
                return None
            opts = toks[j + 1 : close]
            k = 0
            while k < len(opts):
                w = _word(sql, opts[k]) or sql[opts[k].start : opts[k].end].lower()
                if w in ("analyze", "analyse"):
                    value = True
                    if k + 1 < len(opts) and sql[opts[k + 1].start : opts[k + 1].end] != ",":
                        v = _word(sql, opts[k + 1]) or sql[opts[k + 1].start : opts[k + 1].end].strip("'").lower()
                        value = v not in _FALSE_WORDS
                        k += 1
                    analyze = value
                k += 1
            j = close + 1
        else:
            while j < n and _word(sql, toks[j]) in ("analyze", "analyse", "verbose"):
                if _word(sql, toks[j]) in ("analyze", "analyse"):
                    analyze = True
                j += 1
        if not analyze:
            return None
        inner = _statement_context(sql, toks, j)
        return None if inner is None else "EXPLAIN ANALYZE"
    return None


def sends_rows_first(sql: str, *, standard_conforming_strings: bool = True) -> bool:
    """Whether PostgreSQL sends the statement's RowDescription when its execution starts, before
    any NOTICE a function in it raises: a plain query (``SELECT``, ``VALUES``, ``TABLE``, ``WITH``
    without a data-modifying part; portal strategy PORTAL_ONE_SELECT in ``pquery.c``). For
    ``INSERT/UPDATE/DELETE .. RETURNING``, data-modifying WITH, ``SELECT .. INTO`` and utility
    statements (EXPLAIN, FETCH, ...) it is sent after the statement has run."""
    try:
        toks = lex(sql, standard_conforming_strings=standard_conforming_strings)
    except LexError:
        return False
    words = [_word(sql, t) for t in toks]
    lead = next((w for w, t in zip(words, toks) if not (t.kind == "punct" and sql[t.start:t.end] == "(")), "")
    if lead not in ("select", "values", "table", "with"):
        return False
    return not any(w in ("insert", "update", "delete", "merge", "into") for w in words)


def _only_alias(sql: str, toks: list[Token]) -> bool:
    """Whether ``toks`` (what follows a FROM item to the end of the statement) is at most an alias:
    ``[AS] name [(column, ...)]``."""
    k = 0
    if k < len(toks) and _word(sql, toks[k]) == "as":
        k += 1
    if k < len(toks) and toks[k].kind in ("ident", "qident") and (
            toks[k].kind == "qident" or _word(sql, toks[k]) not in _CLAUSES | _FROM_ITEM_AFTER | {"on", "using",
                                                                                                      "with", "inner",
                                                                                                      "left", "right",
                                                                                                      "full", "cross",
                                                                                                      "natural"}):
        k += 1
        if k < len(toks) and sql[toks[k].start : toks[k].end] == "(":
            close = _matching_paren(sql, toks, k)
            if close is None:
                return False
            k = close + 1
    elif k:
        return False  # AS without a name
    return k == len(toks)


def _matching_paren(sql: str, toks: list[Token], open_index: int) -> int | None:
    """Index of the ``)`` closing the ``(`` at ``open_index``, or None."""
    depth = 0
    for j in range(open_index, len(toks)):
        t = toks[j]
        if t.kind == "punct":
            c = sql[t.start : t.end]
            if c == "(":
                depth += 1
            elif c == ")":
                depth -= 1
                if depth == 0:
                    return j
    return None


def _form(sql: str, toks: list[Token], first: int, close: int) -> str:
    """``from``/``select``/``embedded`` for a call spanning tokens ``first``..``close``."""
    if close != len(toks) - 1:
        return "embedded"
    head = [sql[t.start : t.end] if t.kind != "ident" else fold_identifier(sql[t.start : t.end]) for t in toks[:first]]
    if head == ["select", "*", "from"]:
        return "from"
    if head == ["select"]:
        return "select"
    return "embedded"


def _arguments(sql: str, toks: list[Token], name: str, scs: bool) -> tuple[Arg, ...]:
    """Split the argument tokens at top-level commas and evaluate each argument."""
    if not toks:
        return ()
    groups: list[list[Token]] = [[]]
    depth = 0
    for t in toks:
        c = sql[t.start : t.end] if t.kind == "punct" else ""
        if c in ("(", "["):
            depth += 1
        elif c in (")", "]"):
            depth -= 1
        elif c == "," and depth == 0:
            groups.append([])
            continue
        groups[-1].append(t)
    args = []
    for position, g in enumerate(groups, 1):
        arg_name = None
        variadic = False
        if len(g) > 2 and g[0].kind in ("ident", "qident") and sql[g[1].start : g[1].end] in ("=>", ":="):
            arg_name = identifier_value(sql[g[0].start : g[0].end])
            g = g[2:]
        if len(g) > 1 and _word(sql, g[0]) == "variadic":
            variadic = True
            g = g[1:]
        ev = _Evaluator(sql, g, scs)
        try:
            value = ev.expression()
            if ev.i != len(g):
                raise _NotConstant
        except _NotConstant:
            value = EXPRESSION  # evaluated by PostgreSQL on the caller's connection
        args.append(Arg(value, arg_name, variadic))
    return tuple(args)


class _NotConstant(Exception):
    """An argument that is not a constant expression."""


# PostgreSQL's reserved keywords (kwlist.h, RESERVED_KEYWORD) plus IS/AT: never a type name.
_TYPE_WORDS_STOP = frozenset(
    "all analyse analyze and any array as asc asymmetric both case cast check collate column "
    "constraint create current_catalog current_date current_role current_time current_timestamp "
    "current_user default deferrable desc distinct do else end except false fetch for foreign "
    "from grant group having in initially intersect into lateral leading limit localtime "
    "localtimestamp not null offset on only or order placing primary references returning "
    "select session_user some symmetric system_user table then to trailing true union unique "
    "user using variadic when where window with is at".split()
)


class _Evaluator:
    """Evaluates a constant argument expression over tokens (a tiny recursive descent)."""

    def __init__(self, sql: str, toks: list[Token], scs: bool):
        self.sql, self.toks, self.scs, self.i = sql, toks, scs, 0

    def _text(self, k: int | None = None) -> str:
        t = self.toks[self.i if k is None else k]
        return self.sql[t.start : t.end]

    def _peek(self) -> str:
        return self._text() if self.i < len(self.toks) else ""

    def _expect(self, s: str) -> None:
        if self.i >= len(self.toks) or self._text().lower() != s:
            raise _NotConstant
        self.i += 1

    def expression(self) -> Value:
        value = self._primary()
        while self._peek() == "::":
            self.i += 1
            self._type_name()
        return value

    def _type_name(self) -> None:
        """Consume a type name: words (``double precision``), dots, ``(n, m)``, ``[]``."""
        toks = self.toks
        start = self.i
        while self.i < len(toks):
            t = toks[self.i]
            c = self.sql[t.start : t.end]
            if t.kind in ("ident", "qident") and (t.kind == "qident" or fold_identifier(c) not in _TYPE_WORDS_STOP):
                self.i += 1
            elif c == "." or c == "[" or c == "]" or (t.kind == "number" and self.i > start):
                self.i += 1
            elif c == "(" and self.i > start:
                depth = 0
                while self.i < len(toks):
                    c2 = self._text()
                    if c2 == "(":
                        depth += 1
                    elif c2 == ")":
                        depth -= 1
                    elif toks[self.i].kind not in ("number", "punct", "ident"):
                        raise _NotConstant
                    self.i += 1
                    if depth == 0:
                        break
            else:
                break
        if self.i == start:
            raise _NotConstant

    def _primary(self) -> Value:
        if self.i >= len(self.toks):
            raise _NotConstant
        t = self.toks[self.i]
        text = self._text()
        if t.kind in ("string", "dollar"):
            self.i += 1
            uescape = "\\"
            if self.i + 1 < len(self.toks) and self._word() == "uescape":
                esc = self.toks[self.i + 1]
                if esc.kind == "string":
                    uescape = string_value(self.sql[esc.start : esc.end])
                    self.i += 2
            return string_value(text, standard_conforming_strings=self.scs, uescape=uescape)
        if t.kind == "param":
            self.i += 1
            return ParamRef(int(text[1:]))
        if t.kind == "number":
            self.i += 1
            return _number(text)
        if t.kind == "op" and text in ("-", "+") and self.i + 1 < len(self.toks) and self.toks[self.i + 1].kind == "number":
            self.i += 2
            value = _number(self._text(self.i - 1))
            return -value if text == "-" else value
        if text == "(":
            self.i += 1
            value = self.expression()
            self._expect(")")
            return value
        if t.kind == "ident":
            w = fold_identifier(text)
            if w == "null":
                self.i += 1
                return None
            if w in ("true", "false"):
                self.i += 1
                return w == "true"
            if w == "array" and self.i + 1 < len(self.toks) and self._text(self.i + 1) == "[":
                self.i += 2
                items: list[Value] = []
                if self._peek() != "]":
                    items.append(self.expression())
                    while self._peek() == ",":
                        self.i += 1
                        items.append(self.expression())
                self._expect("]")
                return tuple(items)
            if w == "cast" and self.i + 1 < len(self.toks) and self._text(self.i + 1) == "(":
                self.i += 2
                value = self.expression()
                self._expect("as")
                self._type_name()
                self._expect(")")
                return value
            # ``type 'literal'`` (gram.y AexprConst: func_name Sconst, ConstTypename Sconst)
            start = self.i
            self._type_name()
            if self.i < len(self.toks) and self.toks[self.i].kind == "string":
                return self._primary()
            self.i = start
        raise _NotConstant

    def _word(self) -> str:
        return _word(self.sql, self.toks[self.i])


def _number(text: str) -> int | float:
    """The value of a numeric literal (``1_000``, ``0x1F``, ``0o17``, ``0b101`` included)."""
    clean = text.replace("_", "")
    try:
        if clean[:2].lower() in ("0x", "0o", "0b"):
            return int(clean, 0)
        if clean.isdigit():
            return int(clean)
        return float(clean)
    except ValueError:
        raise _NotConstant from None
