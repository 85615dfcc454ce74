"""The engine's call interface: a registry of IaSQL functions that the proxy answers in-process.

The engine knows nothing about the wire protocol. The proxy's interception layer looks a function
up by its SQL name, binds the call's constant arguments, awaits ``Function.impl`` with a
``CallContext`` and turns the returned rows into RowDescription/DataRow messages using the
``Column`` type OIDs. Names, arguments and result columns follow IaSQL v0.1
(https://github.com/iasql/iasql, ``src/modules/iasql_functions``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Protocol

#: Postgres type OIDs used by IaSQL's result columns (from pg_type.dat).
OID = {
    "bool": 16, "int4": 23, "int8": 20, "text": 25, "json": 114, "varchar": 1043,
    "timestamptz": 1184, "jsonb": 3802, "_varchar": 1015, "_text": 1009,
}

NO_DEFAULT: Any = object()


@dataclass(frozen=True)
class Column:
    """A result column: its name as IaSQL names it and its Postgres type name (a key of ``OID``)."""

    name: str
    type_name: str

    @property
    def type_oid(self) -> int:
        """The Postgres type OID of this column."""
        return OID[self.type_name]


@dataclass(frozen=True)
class Argument:
    """A declared argument: ``name``, Postgres ``type_name``, an optional default, VARIADIC flag."""

    name: str
    type_name: str
    default: Any = NO_DEFAULT
    variadic: bool = False


class CallContext(Protocol):
    """What a running function may use. Supplied by the caller (the proxy, or a test).

    - ``database``: the database name the call was made in.
    - ``user``: the session user name of the client that made the call.
    - ``connect()``: an awaitable giving a new ``psycopg.AsyncConnection`` to that database as the
      engine's own role; the function closes it.
    - ``progress(message)``: report one progress line (the proxy sends it as a NOTICE).
    - ``cancelled``: an ``asyncio.Event`` set when the client sends a CancelRequest; functions check
      it between cloud operations and raise ``EngineError('57014', ...)`` at a safe point.
    """

    database: str
    user: str
    cancelled: asyncio.Event

    def connect(self) -> Awaitable[Any]: ...

    def progress(self, message: str) -> None: ...


#: The implementation: ``await impl(ctx, *args)`` returns a list of rows, each a tuple of Python
#: values in column order (None for NULL; str, int, bool, datetime, dict/list for json/jsonb,
#: list for arrays).
Impl = Callable[..., Awaitable[list[tuple]]]


@dataclass(frozen=True)
class Function:
    """One ``iasql_*`` SQL function: name, arguments, result columns and implementation."""

    name: str
    arguments: tuple[Argument, ...]
    columns: tuple[Column, ...]
    impl: Impl
    description: str = ""
    sample_usage: str = ""
    mutating: bool = False
    #: answers from the engine's memory alone (no database, no cloud, no await that waits): the
    #: proxy keeps the client's server connection during the call and runs it without a task
    instant: bool = False

    @property
    def signature(self) -> str:
        """The SQL signature, e.g. ``iasql_install(VARIADIC text[])``."""
        parts = []
        for a in self.arguments:
            s = f"{'VARIADIC ' if a.variadic else ''}{a.name} {a.type_name}{'[]' if a.variadic else ''}"
            if a.default is not NO_DEFAULT:
                s += f" = {'NULL' if a.default is None else repr(a.default)}"
            parts.append(s)
        return f"{self.name}({', '.join(parts)})"


class EngineError(Exception):
    """A failure to report to the client as ErrorResponse: ``sqlstate`` (5 chars), message, detail, hint."""

    def __init__(self, sqlstate: str, message: str, *, detail: str | None = None, hint: str | None = None):
        super().__init__(message)
        self.sqlstate = sqlstate
        self.message = message
        self.detail = detail
        self.hint = hint


@dataclass
class Registry:
    """Functions by lower-case SQL name."""

    functions: dict[str, Function] = field(default_factory=dict)

    def register(self, fn: Function) -> Function:
        """Add ``fn``; returns it. Raises ValueError on a duplicate name."""
        key = fn.name.lower()
        if key in self.functions:
            raise ValueError(f"duplicate function {fn.name}")
        self.functions[key] = fn
        return fn

    def get(self, name: str) -> Function | None:
        """The function with SQL name ``name`` (already case-folded by the caller), or None."""
        return self.functions.get(name)

    def names(self) -> frozenset[str]:
        """All registered names."""
        return frozenset(self.functions)
