"""The IaSQL engine: IaSQL's ``iasql_*`` functions, metadata and AWS modules, in Python over boto3.

Public API (what the proxy calls):

- ``build_registry(config: EngineSettings | None = None) -> rpc.Registry``: every ``iasql_*``
  function with IaSQL's names, arguments and result columns. Call each ``Function.impl(ctx,
  *args)`` with an ``rpc.CallContext``; it returns rows or raises ``rpc.EngineError``.
- ``rpc.CallContext``: the one interface through which the engine reaches the database: run a
  statement in the caller's transaction (on the caller's own connection, with the caller's
  rights), report progress, learn of a cancel. The proxy implements it over the client's server
  connection (``proxy.intercept.caller``), ``engine.local.PsycopgCaller`` over a psycopg
  connection. The engine never opens or ends a transaction and never opens a connection.
- ``after_failure(err)``: the statements to run as the caller once its transaction has ended
  after a failed call: the ``ERROR`` audit row (``error_row(err.audit)``) and the call's
  ``followup`` (a failed commit's table revert).
- ``EngineSettings``: endpoint, lock and AWS timeouts (``engine.settings``).
- ``ensure_metadata(ctx, functions)``: create the metadata (tables, audit trigger function, stubs, argument
  probes) in the caller's database; every call does it on first use, so calling it is optional.
- ``engine.local.init_db(dsn)``: the same, synchronously, for ``iasql-proxy init-db NAME``.

Mutating functions hold a per-database transaction-level advisory lock until the caller's
transaction ends (``engine.core.session``).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

from engine import rpc
from engine.aws import AwsGateway
from engine.core import functions as F
from engine.core.session import EngineState, refuse_in_read_only
from engine.rpc import Argument, Column, EngineError, Function, Registry
from engine.schema import ensure_metadata, error_row
from engine.settings import EngineSettings


def after_failure(err: EngineError) -> list[tuple[str, tuple]]:
    """The statements (SQL with ``$n``, parameters) to run as the caller, each in a transaction
    of its own, once the caller's transaction has ended after ``err``: its ERROR audit row, then
    its ``followup``. Empty when there is nothing to record."""
    out = [error_row(err.audit)] if err.audit else []
    return out + list(err.followup)

_PLAN = (Column("action", "varchar"), Column("table_name", "varchar"), Column("id", "varchar"),
         Column("description", "varchar"))


#: The functions named $1 that an unqualified call ($3 false) or a ``public.``-qualified one ($3
#: true) could resolve to (the schemas PostgreSQL searches: ``public``, or the search path but the
#: temporary schema; when $5, the number of arguments written, is known: only those that take that
#: many, and the stub), each with whether it is the engine's stub (``public.<name>(<types>)`` =
#: $2, PL/pgSQL, body with STUB_MARKER = $4); and whether the caller may read ``public.iasql_module``.
_CANDIDATES_SQL = (
    "SELECT (SELECT pg_catalog.array_agg(c.stub) FROM (SELECT n.nspname = 'public' "
    "AND p.oid = pg_catalog.to_regprocedure($2) "
    "AND p.prolang = (SELECT l.oid FROM pg_catalog.pg_language l WHERE l.lanname = 'plpgsql') "
    "AND pg_catalog.strpos(p.prosrc, $4) > 0 AS stub, "
    "$5::int IS NULL OR p.provariadic <> 0 OR $5::int BETWEEN p.pronargs - p.pronargdefaults AND p.pronargs AS fits "
    "FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace "
    "WHERE p.proname = $1 AND CASE WHEN $3 THEN n.nspname = 'public' "
    "ELSE n.nspname = ANY (pg_catalog.current_schemas(true)) AND n.oid <> pg_catalog.pg_my_temp_schema() END) c "
    "WHERE c.stub OR c.fits), "
    "COALESCE(pg_catalog.has_table_privilege(pg_catalog.to_regclass('public.iasql_module'), 'SELECT'), false)")


async def rpc_claims(fn: Function, module: str, ctx: Any, qualified: bool = False, nargs: int | None = None, *,
                     full_name: str | None = None) -> bool:
    """Whether the engine answers a call of module RPC ``fn`` (of module ``module``, bare name) in
    the caller's database, judged by statements run as the caller (read-only catalog queries that
    cannot fail in a healthy transaction).

    Args: ``ctx`` an ``rpc.CallContext``; ``qualified`` whether the call is written
    ``public.<name>(...)`` (else PostgreSQL searches the ``search_path``); ``full_name`` the
    module's ``name@version`` as ``iasql_module`` holds it (default: ``module`` at the platform
    version); ``nargs`` the number of arguments the call is written with, when all are positional
    and none is marked VARIADIC (a function of the user's that cannot take that many is not one
    PostgreSQL could call; None: every function of that name counts).
    Returns True when the module is installed (a row of ``public.iasql_module``; for a caller who may
    not read that table, the stub's presence) and every function
    of that name the call could resolve to is the engine's stub (``engine.schema.STUB_MARKER``);
    False when one of them is not (a user's own function: the statement must run as written, and
    PostgreSQL picks the function, as without the proxy).
    Raises EngineError 42883 (undefined function, as PostgreSQL) when no function of that name is
    there at all, with a HINT that says what to do: install the module, or, when it is installed
    but its stub was dropped, ``iasql_install`` it again (which recreates missing stubs).
    """
    from engine.schema import STUB_MARKER, rpc_procedure

    cands, readable = (await ctx.run(_CANDIDATES_SQL, (fn.name, rpc_procedure(fn), qualified, STUB_MARKER,
                                                       nargs))).rows[0]
    cands = list(cands or ())
    if not all(cands):
        return False
    # a caller who may not read the module table: the stub (there only while the module is
    # installed) stands for it, and the engine reports what the caller may not do as it runs
    installed = bool(cands)
    if readable:
        from engine.modules import VERSION  # the module table as ``installed_modules`` reads it

        installed = bool((await ctx.run("SELECT EXISTS (SELECT 1 FROM public.iasql_module WHERE name = $1)",
                                        (full_name or f"{module}@{VERSION}",))).rows[0][0])
    if installed and cands:
        return True
    if not installed:
        hint = (f"{fn.name} is a function of module {module}, which is not installed in this database: "
                f"SELECT * FROM iasql_install('{module}');")
    else:
        hint = (f"{fn.name} is a function of module {module}, which is installed, but its SQL function "
                f"{rpc_procedure(fn)} is missing or not on the search_path: SELECT * FROM iasql_install('{module}'); "
                f"recreates it (or call it as public.{fn.name}(...)).")
    raise EngineError("42883", f"function {fn.name}({', '.join(a.type_name for a in fn.arguments)}) does not exist",
                      hint=hint)


async def _module_rpc(fn: Function, module: str, full_name: str, state: Any, ctx: Any, *args: Any) -> list[tuple]:
    """Run module RPC ``fn`` of ``module`` when the engine answers it (``rpc_claims``), unless the
    caller already established that (``ctx.claimed`` holds the name: the proxy's interceptor asks
    before it evaluates a call). Returns ``fn.impl(state, ctx, *args)``. Raises EngineError 42883
    (``rpc_claims``); 42725 when the call would resolve to a user's own function of that name, which
    the engine never replaces (the proxy runs such a statement as written instead of calling here).
    A ``mutating`` RPC (one that changes the cloud) is then refused in a read-only transaction,
    before any cloud call: EngineError 25006 (``engine.core.session.refuse_in_read_only``)."""
    if fn.name not in getattr(ctx, "claimed", ()):
        if not await rpc_claims(fn, module, ctx, full_name=full_name):
            raise EngineError("42725", f"function {fn.name} is not IaSQL's in this database",
                              detail=f"A function {fn.name} of the user's is visible where PostgreSQL would "
                                     f"resolve the call; IaSQL does not run instead of it.",
                              hint=f"Run the statement over a plain PostgreSQL connection to call your "
                                   f"{fn.name}, or rename it to use the one of module {module}.")
    if fn.mutating:
        await refuse_in_read_only(ctx, fn.name)
    return await fn.impl(state, ctx, *args)


async def _refusing_in_read_only(name: str, impl: Any, ctx: Any, *args: Any) -> list[tuple]:
    """``impl(ctx, *args)`` of the mutating ``iasql_*`` function ``name``, refused first with
    EngineError 25006 when the caller's transaction is read-only (``refuse_in_read_only``)."""
    await refuse_in_read_only(ctx, name)
    return await impl(ctx, *args)


def build_registry(config: EngineSettings | None = None) -> Registry:
    """A Registry holding every IaSQL function and every module RPC (``Module.rpcs``), bound to
    one shared engine state. ``registry.engine_state.functions`` lists the ``iasql_*`` ones only
    (whose stubs ``ensure_metadata`` creates); a module RPC has ``Function.module`` set.

    Takes optional settings (default ``EngineSettings()``). Raises nothing. The registry's AWS
    thread pool lives as long as the registry (``registry.engine_state.aws.close()`` stops it).
    """
    settings = config or EngineSettings()
    state = EngineState(settings=settings, aws=AwsGateway(settings))
    reg = Registry()

    def add(name: str, args: tuple, cols: tuple, impl: Any, desc: str, usage: str, mutating: bool = False,
            instant: bool = False, opens_transaction: bool = False) -> None:
        bound = functools.partial(impl, state)
        if mutating:  # refused in a read-only transaction before anything else (25006)
            bound = functools.partial(_refusing_in_read_only, name, bound)
        reg.register(Function(name=name, arguments=args, columns=cols,
                              impl=bound, description=desc,
                              sample_usage=usage, mutating=mutating, instant=instant,
                              opens_transaction=opens_transaction))

    add("iasql_install", (Argument("modules", "text", variadic=True),),
        (Column("module_name", "varchar"), Column("created_table_name", "varchar"), Column("record_count", "int4")),
        F.iasql_install, "Install modules in the hosted db", "SELECT * FROM iasql_install('aws_s3', 'aws_iam')", True)
    add("iasql_uninstall", (Argument("modules", "text", variadic=True),),
        (Column("module_name", "varchar"), Column("dropped_table_name", "varchar"), Column("record_count", "int4")),
        F.iasql_uninstall, "Uninstall modules in the hosted db",
        "SELECT * FROM iasql_uninstall('aws_iam')", True)
    add("iasql_begin", (), (Column("message", "varchar"), Column("transaction_id", "varchar")), F.iasql_begin,
        "Opens a transaction used to make changes to the cloud", "SELECT * FROM iasql_begin()", True,
        opens_transaction=True)
    add("iasql_commit", (Argument("message", "varchar", default=None),), _PLAN, F.iasql_commit,
        "Commit changes done to the database by creating, updating or deleting cloud resources",
        "SELECT * FROM iasql_commit()", True)
    add("iasql_preview", (), _PLAN, F.iasql_preview,
        "Preview of the resources in the db to be modified on the next `commit`", "SELECT * FROM iasql_preview()")
    add("iasql_rollback", (Argument("force", "bool", default=False),), _PLAN, F.iasql_rollback,
        "Rollback changes done to the database by synchronizing cloud resources",
        "SELECT * FROM iasql_rollback()", True)
    add("iasql_get_errors", (), (Column("ts", "timestamptz"), Column("message", "varchar")), F.iasql_get_errors,
        "Lists the errors recorded by commits, rollbacks and other calls", "SELECT * FROM iasql_get_errors()")
    add("iasql_get_sql_since", (Argument("limit_date", "timestamptz", default=None),), (Column("sql", "varchar"),),
        F.iasql_get_sql_since, "Generates the SQL of the changes made since a point in time",
        "SELECT * FROM iasql_get_sql_since((now() - interval '5 minutes')::timestamptz)")
    add("iasql_get_sql_for_transaction", (Argument("transaction_id", "varchar", default=None),),
        (Column("sql", "varchar"),), F.iasql_get_sql_for_transaction,
        "Generate SQL from the audit log for a given transaction identifier",
        "SELECT * FROM iasql_get_sql_for_transaction()")
    add("iasql_create_review", (Argument("title", "varchar", default="New Review"),
                                Argument("description", "varchar", default="Review description")),
        (Column("markdown", "text"),), F.iasql_create_review, "Generate review markdown for latest transaction",
        "SELECT * FROM iasql_create_review('My review title', 'Meaningful description')")
    add("iasql_modules_list", (),
        (Column("module_name", "varchar"), Column("module_version", "varchar"), Column("dependencies", "json")),
        F.iasql_modules_list, "Lists all modules available to be installed", "SELECT * FROM iasql_modules_list()",
        instant=True)
    add("iasql_modules_installed", (),
        (Column("module_name", "text"), Column("module_version", "text"), Column("dependencies", "_varchar")),
        F.iasql_modules_installed, "Lists all modules currently installed in the hosted db",
        "SELECT * FROM iasql_modules_installed()")
    add("iasql_version", (), (Column("version", "text"),), F.iasql_version,
        "Lists the currently installed IaSQL Platform version", "SELECT * from iasql_version()", instant=True)

    async def iasql_help(state_: Any, ctx: Any) -> list[tuple]:
        """(module, name, signature, description, sample_usage) of the IaSQL functions and of the
        SQL functions of every installed module (IaSQL's ``iasql_help``)."""
        rows = [("iasql_functions", fn.name, fn.signature, fn.description, fn.sample_usage)
                for fn in reg.functions.values() if fn.module is None]
        async with F.EngineSession(ctx, state_, "iasql_help", record_errors=False) as s:
            for mod in await F.installed_modules(s):
                rows += [(mod.name, *entry) for entry in mod.functions]
                rows += [(mod.name, fn.name, fn.signature, fn.description, fn.sample_usage) for fn in mod.rpcs]
        return rows

    add("iasql_help", (), (Column("module", "varchar"), Column("name", "varchar"), Column("signature", "varchar"),
                           Column("description", "varchar"), Column("sample_usage", "varchar")), iasql_help,
        "Returns a list of the IaSQL functions and the SQL functions of the installed modules, "
        "with description and sample usage", "SELECT * FROM iasql_help() WHERE module = 'iasql_functions'")
    for old, new in (("iasql_apply", "iasql_commit"), ("iasql_sync", "iasql_commit"),
                     ("iasql_preview_apply", "iasql_preview"), ("iasql_preview_sync", "iasql_preview")):
        add(old, (), _PLAN, F.deprecated(old, new), f"Deprecated: use {new}()", f"SELECT * FROM {new}()")
    from engine.modules import MODULES

    for mod in MODULES:  # the modules' RPCs (stubs created at install, not with the metadata)
        for fn in mod.rpcs:
            reg.register(dataclasses.replace(fn, impl=functools.partial(_module_rpc, fn, mod.name, mod.full_name, state),
                                             module=mod.name,
                                             claims=functools.partial(rpc_claims, fn, mod.name,
                                                                      full_name=mod.full_name)))
    state.functions = [fn for fn in reg.functions.values() if fn.module is None]
    reg.engine_state = state  # type: ignore[attr-defined]
    return reg


__all__ = ["build_registry", "rpc_claims", "EngineSettings", "ensure_metadata", "error_row", "after_failure", "EngineError", "rpc"]
