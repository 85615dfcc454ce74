"""The engine's call interface: a registry of IaSQL functions that the proxy answers in-process.

The engine knows nothing about the wire protocol. The proxy's interception layer looks a function
up by its SQL name, has PostgreSQL evaluate the call's arguments, awaits ``Function.impl`` with a
``CallContext`` (the caller's own connection and transaction) and hands the returned rows to
PostgreSQL in place of the call, typed by the ``Column`` type names. Names, arguments and result columns follow IaSQL v0.1
(https://github.com/iasql/iasql, ``src/modules/iasql_functions``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Protocol, Sequence

#: Postgres type OIDs used by IaSQL's result columns (from pg_type.dat).
OID = {
    "bool": 16, "int4": 23, "int8": 20, "text": 25, "json": 114, "varchar": 1043,
    "timestamp": 1114, "timestamptz": 1184, "jsonb": 3802, "_varchar": 1015, "_text": 1009,
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


@dataclass(frozen=True)
class Result:
    """What one statement returned: ``columns`` (names), ``rows`` (tuples of Python values:
    None for NULL; str, int, float, bool, datetime, Decimal, dict/list for json, list for arrays)
    and the CommandComplete ``command`` tag (e.g. ``INSERT 0 1``)."""

    columns: tuple[str, ...] = ()
    rows: list[tuple] = field(default_factory=list)
    command: str = ""


class CallContext(Protocol):
    """The caller, as the engine sees it: the one interface between the engine and whoever runs
    its calls (the proxy's ``proxy.intercept.caller.ServerCaller``; ``engine.local.PsycopgCaller``
    for ``init-db`` and the engine's own tests).

    - ``database``: the database name the call was made in; ``user``: the caller's user name.
    - ``await run(query, params)``: run ONE statement in the caller's transaction, on the caller's
      own server connection and with the caller's rights, and return its ``Result``. ``query``
      uses PostgreSQL's ``$1``-style placeholders; ``params`` are Python values (str, int, float,
      bool, None, datetime, lists, ``psycopg.types.json.Json``). Raises ``SqlError`` with the
      server's SQLSTATE when the statement fails; the caller's transaction is then aborted, as
      after any failed statement, so the engine must not run anything else afterwards.
    - ``progress(message)``: report one progress line (the proxy sends it as a NOTICE at once).
    - ``cancelled``: an ``asyncio.Event`` set when the client sends a CancelRequest; functions check
      it between cloud operations and raise ``EngineError('57014', ...)`` at a safe point (a
      statement running on the server is cancelled by the server itself).
    - optional ``abandoned_transactions``: ids of IaSQL transactions whose opening session is
      known to have ended (a container of str; missing means none known). ``iasql_begin`` closes
      such a transaction at once instead of waiting for it.
    - optional ``own_transaction``: the id of the IaSQL transaction the caller's own session
      opened (None or missing: none known). ``iasql_begin`` fails at once when that one is open.

    The engine never opens, commits or rolls back transactions: the caller's transaction (an
    explicit block, the implicit transaction of a multi-statement Query, or the statement's own)
    is the unit, and whoever implements this interface ends it.
    """

    database: str
    user: str
    cancelled: asyncio.Event

    async def run(self, query: str, params: Sequence[Any] = ()) -> Result: ...

    def progress(self, message: str) -> None: ...


#: The implementation: ``await impl(ctx, *args)`` returns a list of rows, each a tuple of Python
#: values in column order (None for NULL; str, int, bool, datetime, dict/list for json/jsonb,
#: list for arrays).
Impl = Callable[..., Awaitable[list[tuple]]]


@dataclass(frozen=True)
class Function:
    """One SQL function the engine answers: name, arguments, result columns and implementation.

    ``module``: None for the ``iasql_*`` functions (their stubs are created with IaSQL's metadata,
    ``engine.schema.ensure_metadata``); else the name of the module that declares it (a module RPC
    such as ``s3_upload_object`` of ``aws_s3``), whose stub and argument probe exist only while
    that module is installed (``iasql_install`` creates them, ``iasql_uninstall`` drops them).
    """

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
    #: the call opens an IaSQL transaction whose id is the second column of its first row
    #: (``iasql_begin``): when the caller's session ends, whoever runs the call adds that id to
    #: the ``abandoned_transactions`` its contexts offer (``CallContext``)
    opens_transaction: bool = False
    module: str | None = None
    #: module RPCs only: ``await claims(ctx, qualified, nargs)`` says whether the engine answers a call
    #: of this name in the caller's database (``engine.rpc_claims``): True when it does, False when
    #: the call is the user's own function's (run the statement as written); raises EngineError
    #: 42883 when no function of that name is there at all. None: always the engine's.
    claims: Callable[..., Awaitable[bool]] | None = None

    @property
    def signature(self) -> str:
        """The SQL signature as ``iasql_help`` shows it, valid SQL (as in ``CREATE FUNCTION``), e.g.
        ``iasql_install(VARIADIC modules text[])``, ``describe_ami(ami_id varchar, region varchar =
        NULL)``. Defaults are SQL literals (``'pem'``; a list is an array literal ``'{a,b}'``); a
        VARIADIC argument's empty default is not shown (zero arguments is what VARIADIC means)."""
        parts = []
        for a in self.arguments:
            s = f"{'VARIADIC ' if a.variadic else ''}{a.name} {a.type_name}{'[]' if a.variadic else ''}"
            if a.default is not NO_DEFAULT and not (a.variadic and a.default in ([], ())):
                s += f" = {_sql_literal(a.default)}"
            parts.append(s)
        return f"{self.name}({', '.join(parts)})"


def _sql_literal(value: Any) -> str:
    """``value`` as a SQL literal for a displayed signature: NULL, a number, true/false as Python
    spells them (Postgres reads ``False``), a quoted string, or a list as a quoted array literal."""
    if value is None:
        return "NULL"
    if isinstance(value, (bool, int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        items = ",".join('"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"' for v in value)
        value = "{" + items + "}"
    return "'" + str(value).replace("'", "''") + "'"


class EngineError(Exception):
    """A failure to report to the client as ErrorResponse: ``sqlstate`` (5 chars), message, detail, hint.

    ``audit``: the text of the ``ERROR`` row IaSQL keeps for this failure in ``iasql_audit_log``
    (``iasql_get_errors`` lists it), or None when the failure is not recorded. ``followup``:
    further statements (SQL with ``$n``, parameters) to run as the caller once the caller's
    transaction has ended, e.g. the table half of a failed commit's revert
    (``engine.core.revert``). Whoever runs the call runs ``engine.after_failure(err)`` after the
    caller's transaction has ended, since rows written inside the failed transaction would be
    rolled back with it.
    """

    def __init__(self, sqlstate: str, message: str, *, detail: str | None = None, hint: str | None = None):
        super().__init__(message)
        self.sqlstate = sqlstate
        self.message = message
        self.detail = detail
        self.hint = hint
        self.audit: str | None = None
        self.followup: list[tuple[str, tuple]] = []


class SqlError(EngineError):
    """A statement run through ``CallContext.run`` failed on the server. ``fields`` holds every
    field of the server's ErrorResponse by its one-letter code (protocol chapter "Error and
    Notice Message Fields"), so the caller can relay the server's own error."""

    def __init__(self, fields: dict[str, str]):
        super().__init__(fields.get("C", "XX000"), fields.get("M", "error"), detail=fields.get("D"),
                         hint=fields.get("H"))
        self.fields = dict(fields)


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
