"""Put a call's result rows in place of the call in a larger statement (issue point 6), no I/O.

Only the call's span is replaced; every other character of the user's statement is kept. The
replacement is built with sqlglot (never by pasting strings), as a FROM item:

- rows:    ``(VALUES (CAST('a' AS VARCHAR), CAST('1' AS INT)), ..) AS "f"("c1", "c2")``
- no rows: ``(SELECT CAST(NULL AS VARCHAR) AS "c1", .. WHERE FALSE) AS "f"("c1", "c2")`` so the
  columns keep their names and types;
- when the user gave the call an alias (``FROM iasql_x() AS t`` or ``.. t(a, b)``) the above is
  wrapped as ``(SELECT * FROM <above>)`` with no alias, so the user's alias (and column aliases)
  apply to it as they applied to the function.

Values arrive as PostgreSQL text (None for NULL) and are cast to the column's type, so PostgreSQL
parses them exactly as it would parse the function's output. With ``standard_conforming_strings``
off, backslashes in values are doubled, since that session reads ``'..'`` with backslash escapes.
"""

from __future__ import annotations

import functools

from sqlglot import exp

from .classify import FEATURE_NOT_SUPPORTED, Call, CallError
from .lexer import LexError, fold_identifier, lex

__all__ = ["rewrite_with_rows"]

# Words that may follow a FROM item and are not an alias for it (gram.y: table_ref and what can
# follow a from_list); anything else right after the call is an alias (bare ColId or AS).
_NOT_ALIAS = frozenset(
    "where join inner left right full cross natural on using group order limit offset union "
    "intersect except window having fetch for returning with into and or then else end when "
    "tablesample".split()
)


def _type(type_name: str) -> exp.DataType:
    """A sqlglot type for a PostgreSQL type name; ``_name`` (pg_type's array naming) is ``name[]``."""
    if type_name.startswith("_"):
        type_name = type_name[1:] + "[]"
    return exp.DataType.build(type_name, dialect="postgres")


def _ident(name: str) -> exp.Identifier:
    return exp.to_identifier(name, quoted=True)


def rewrite_with_rows(
    stmt_text: str,
    call: Call,
    columns: list[tuple[str, str]],
    rows: list[tuple[str | None, ...]],
    *,
    standard_conforming_strings: bool = True,
) -> str:
    """Return ``stmt_text`` with ``call``'s span replaced by its result rows as a FROM item.

    Takes the statement text the call was found in, the call (from ``find_calls`` on that text),
    the function's result columns as ``(name, pg type name)`` (``rpc.Column.name``/``type_name``;
    ``_x`` is an array of ``x``), the rows as tuples of text values (None = NULL) in column order,
    and the session's ``standard_conforming_strings``. Returns the new statement text.
    Raises ``CallError('0A000', ..)`` when the call is not a FROM item (a select-list or WHERE
    position cannot take a row set) or is used ``WITH ORDINALITY``, and ``ValueError`` when a row's
    length differs from the columns'. See the module docstring for the SQL produced.
    """
    if not call.in_from:
        raise CallError(
            FEATURE_NOT_SUPPORTED,
            f"{call.name}() can only be used as a FROM item (or alone) in a larger statement",
            hint=f"Write SELECT ... FROM {call.name}(...) AS r WHERE ..., or call it in its own statement.",
        )
    user_alias = _has_alias(stmt_text, call.end, len(columns))
    for row in rows:
        if len(row) != len(columns):
            raise ValueError(f"row has {len(row)} values for {len(columns)} columns")
    key_rows = tuple(map(tuple, rows))
    if sum(len(v) for row in key_rows for v in row if v is not None) <= _CACHE_VALUE_BYTES:
        replacement = _cached_replacement(call.name, tuple(columns), key_rows, standard_conforming_strings, user_alias)
    else:
        replacement = _replacement(call.name, columns, rows, standard_conforming_strings, user_alias)
    return stmt_text[: call.start] + replacement + stmt_text[call.end :]


#: Results up to this many characters of values have their replacement text cached (the same
#: call with the same result, e.g. ``iasql_version()``, is then not built again).
_CACHE_VALUE_BYTES = 4096


@functools.lru_cache(maxsize=256)
def _cached_replacement(name: str, columns: tuple, rows: tuple, scs: bool, user_alias: bool) -> str:
    return _replacement(name, columns, rows, scs, user_alias)


def _replacement(name: str, columns, rows, scs: bool, user_alias: bool) -> str:
    """The FROM item (SQL text) that stands for the call's rows; see the module docstring."""
    col_ids = [_ident(c) for c, _ in columns]
    types = [_type(t) for _, t in columns]
    alias = exp.TableAlias(this=_ident(name), columns=col_ids)
    if rows:
        tuples = []
        for row in rows:
            tuples.append(
                exp.Tuple(
                    expressions=[
                        exp.Cast(this=_literal(v, scs), to=t.copy())
                        for v, t in zip(row, types)
                    ]
                )
            )
        item: exp.Expression = exp.Values(expressions=tuples, alias=alias)
    else:
        select = exp.select(
            *[exp.alias_(exp.Cast(this=exp.Null(), to=t.copy()), c.copy()) for c, t in zip(col_ids, types)]
        ).where(exp.false())
        item = exp.Subquery(this=select, alias=alias)
    if user_alias:
        item = exp.select("*").from_(item).subquery()
    return item.sql(dialect="postgres")


def _literal(value: str | None, scs: bool) -> exp.Expression:
    if value is None:
        return exp.Null()
    if not scs:
        value = value.replace("\\", "\\\\")
    return exp.Literal.string(value)


def _has_alias(stmt_text: str, end: int, ncolumns: int = 2) -> bool:
    """Whether the FROM item ending at ``end`` is followed by an alias. Raises CallError on
    ``WITH ORDINALITY``, and on a column definition list (``AS t(a text)``) with PostgreSQL's
    42601 for a function with OUT parameters (``ncolumns`` of them) and its position."""
    try:
        toks = lex(stmt_text[end:])
    except LexError:
        return False
    if not toks:
        return False
    first = toks[0]
    text = stmt_text[end + first.start : end + first.end]
    if first.kind == "qident":
        _check_column_list(stmt_text, end, toks, 1, ncolumns)
        return True
    if first.kind != "ident":
        return False
    word = fold_identifier(text)
    if word == "with" and len(toks) > 1:
        nxt = toks[1]
        if fold_identifier(stmt_text[end + nxt.start : end + nxt.end]) == "ordinality":
            raise CallError(FEATURE_NOT_SUPPORTED, "WITH ORDINALITY is not supported on iasql_* functions")
    alias = word == "as" or word not in _NOT_ALIAS
    if alias:
        _check_column_list(stmt_text, end, toks, 2 if word == "as" else 1, ncolumns)
    return alias


def _check_column_list(stmt_text: str, end: int, toks: list, at: int, ncolumns: int) -> None:
    """After the alias name (token ``at - 1``): a column list whose entries have types is a column
    definition list, which PostgreSQL refuses for these functions (they have OUT parameters)."""
    if at >= len(toks) or stmt_text[end + toks[at].start : end + toks[at].end] != "(":
        return
    depth = 0
    entry_tokens = 0
    for t in toks[at:]:
        c = stmt_text[end + t.start : end + t.end]
        if c == "(":
            depth += 1
            if depth == 1:
                continue
        elif c == ")":
            depth -= 1
            if depth == 0:
                break
        if depth == 1 and c == ",":
            entry_tokens = 0
            continue
        entry_tokens += 1
        if entry_tokens > 1:
            message = ('a column definition list is only allowed for functions returning "record"' if ncolumns == 1
                       else "a column definition list is redundant for a function with OUT parameters")
            raise CallError("42601", message, position=end + toks[at + 1].start)
