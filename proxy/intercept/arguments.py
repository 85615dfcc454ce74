"""A call's arguments, evaluated by PostgreSQL on the caller's connection.

Theory of operation
-------------------
The metadata of every IaSQL database holds an *argument probe* per function
(``engine.schema.probe_statements``): ``iasql_args.<name>`` with the function's exact argument
list, returning its arguments as one row. The call's argument list is cut from the client's text
byte for byte and sent as ``SELECT * FROM iasql_args.<name>(<arguments>)`` through the call's
``ServerCaller``, in the caller's transaction. So PostgreSQL's own rules apply: any expression
(``now() - interval '5 minutes'``, a subquery, ``current_setting(..)``), named and VARIADIC
notation, defaults, implicit casts, and its own errors (42883 when no probe matches, reported
with the name as the client wrote it; the position points into the client's text).

In the extended protocol the argument list may use the statement's bind parameters: they are
renumbered ``$1..$k`` in order of first use and bound with the client's own bytes, format codes
and the types the statement was prepared with (``extended.param_types``), so a ``text[]`` sent
in binary by pgJDBC, asyncpg or psycopg is read by PostgreSQL itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from engine.rpc import NO_DEFAULT, Function, SqlError
from engine.schema import ARGS_SCHEMA
from proxy.router.classify import Call
from proxy.router.lexer import LexError, lex


@dataclass(frozen=True)
class Probe:
    """The probe query for one call: ``sql``, ``params`` (the client's parameter numbers, 1-based,
    in the order of the renumbered ``$1..$k``) and ``position`` (maps a 1-based character position
    in ``sql`` to one in the statement text)."""

    sql: str
    params: tuple[int, ...]
    position: Callable[[int], int]


def needs_probe(fn: Function, call: Call) -> bool:
    """False when the call has no arguments and every declared one has a default (the defaults
    are then the arguments, with no round trip)."""
    return bool(call.args) or any(a.default is NO_DEFAULT or a.variadic for a in fn.arguments)


def defaults(fn: Function) -> list[Any]:
    """The declared defaults of ``fn``'s arguments (for a call with none given)."""
    return [a.default for a in fn.arguments]


def probe(fn: Function, call: Call, stmt_text: str, *, renumber: bool = False,
          standard_conforming_strings: bool = True) -> Probe:
    """Build the probe query of ``call`` (found in ``stmt_text``). ``renumber``: the statement came
    with bind parameters (extended protocol), whose ``$n`` are renumbered as described above."""
    prefix = f"SELECT * FROM {ARGS_SCHEMA}.{fn.name}("
    args = stmt_text[call.args_start:call.args_end]
    pieces: list[tuple[int, int, str]] = []  # (start in args, end in args, replacement)
    order: list[int] = []
    if renumber and "$" in args:
        try:
            toks = lex(args, standard_conforming_strings=standard_conforming_strings)
        except LexError:
            toks = []
        for t in toks:
            if t.kind == "param":
                n = int(args[t.start + 1:t.end])
                if n not in order:
                    order.append(n)
                pieces.append((t.start, t.end, f"${order.index(n) + 1}"))
    out = [prefix]
    marks: list[tuple[int, int]] = [(len(prefix), call.args_start)]  # (offset in sql, offset in stmt)
    at = 0
    for start, end, new in pieces:
        out.append(args[at:start])
        out.append(new)
        marks.append((len("".join(out)), call.args_start + end))
        at = end
    out.append(args[at:])
    out.append(")")
    sql = "".join(out)

    def position(p: int) -> int:
        if p <= len(prefix):
            return call.start + 1
        base_sql, base_stmt = marks[0]
        for off_sql, off_stmt in marks:
            if off_sql < p:
                base_sql, base_stmt = off_sql, off_stmt
        return min(base_stmt + (p - base_sql), call.end)

    return Probe(sql, tuple(order), position)


def client_error(err: SqlError, position: Callable[[int], int] | None) -> dict[str, str]:
    """The probe's error as the client should see it: the probe schema taken out of the message
    (``function iasql_args.iasql_x(integer) does not exist`` reads as PostgreSQL would word it for
    the client's own call) and the position moved into the client's text."""
    fields = dict(err.fields)
    for code in ("M", "D", "H"):
        if code in fields:
            fields[code] = fields[code].replace(f"{ARGS_SCHEMA}.", "")
    if "P" in fields and position is not None and fields["P"].isdigit():
        fields["P"] = str(position(int(fields["P"])))
    else:
        fields.pop("P", None)
    return fields


def as_call_arguments(fn: Function, row: Sequence[Any]) -> list[Any]:
    """The probe's row as the engine implementation's positional arguments (a VARIADIC array is
    spread, as ``impl(ctx, *fixed, *variadic)`` takes it)."""
    values = list(row)
    if fn.arguments and fn.arguments[-1].variadic:
        tail = values.pop() if values else None
        values.extend(tail or [])
    return values


def param_types(fn: Function, call: Call, stmt_text: str, *, standard_conforming_strings: bool = True) -> dict[int, int]:
    """The type OID each bind parameter used in ``call``'s arguments gets in the statement's
    shape (``extended``), as PostgreSQL would infer it against the real function: an argument that
    is just ``$n`` takes its declared type (``VARIADIC $n`` the array type, an extra VARIADIC
    element the element type); a ``$n`` inside a larger expression is declared ``text``."""
    from engine.rpc import OID
    from proxy.router.classify import ParamRef

    declared = list(fn.arguments)
    fixed = declared[:-1] if declared and declared[-1].variadic else declared
    variadic = declared[-1] if declared and declared[-1].variadic else None

    def oid(type_name: str, array: bool = False) -> int:
        return OID.get(("_" if array else "") + type_name, OID["text"])

    out: dict[int, int] = {}
    positional = 0
    for a in call.args:
        target = None
        if a.name is not None:
            target = next(((d.type_name, d.variadic and a.variadic) for d in declared if d.name == a.name), None)
        elif a.variadic and variadic is not None:
            target = (variadic.type_name, True)
        elif positional < len(fixed):
            target = (fixed[positional].type_name, False)
        elif variadic is not None:
            target = (variadic.type_name, False)
        if a.name is None and not a.variadic:
            positional += 1
        if isinstance(a.value, ParamRef) and target is not None:
            out.setdefault(a.value.n, oid(*target))
    text_oid = OID["text"]
    for n in param_numbers(call, stmt_text, standard_conforming_strings=standard_conforming_strings):
        out.setdefault(n, text_oid)
    return out


def param_numbers(call: Call, stmt_text: str, *, standard_conforming_strings: bool = True) -> set[int]:
    """The bind parameter numbers used in ``call``'s argument list."""
    args = stmt_text[call.args_start:call.args_end]
    if "$" not in args:
        return set()
    try:
        toks = lex(args, standard_conforming_strings=standard_conforming_strings)
    except LexError:
        return set()
    return {int(args[t.start + 1:t.end]) for t in toks if t.kind == "param"}


def first_param(call: Call, stmt_text: str, *, standard_conforming_strings: bool = True) -> tuple[int, str] | None:
    """The first bind parameter (``$n``) in ``call``'s argument list as (offset in the statement
    text, its text), or None."""
    args = stmt_text[call.args_start:call.args_end]
    if "$" not in args:
        return None
    try:
        toks = lex(args, standard_conforming_strings=standard_conforming_strings)
    except LexError:
        return None
    for t in toks:
        if t.kind == "param":
            return call.args_start + t.start, args[t.start:t.end]
    return None
