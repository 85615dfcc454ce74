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


async def _module_rpc(fn: Function, module: str, state: Any, ctx: Any, *args: Any) -> list[tuple]:
    """Run module RPC ``fn`` of ``module`` only while that module is installed: its stub
    (``public.<name>(<argument types>)``, created by ``iasql_install``) must exist, as it must for
    Postgres to call a function; else raises EngineError 42883 (undefined function) as Postgres
    would, with a HINT naming the module to install. A ``mutating`` RPC (one that changes the cloud)
    is then refused in a read-only transaction, before any cloud call: EngineError 25006
    (``engine.core.session.refuse_in_read_only``). Returns ``fn.impl(state, ctx, *args)``."""
    types = ",".join(a.type_name + ("[]" if a.variadic else "") for a in fn.arguments)
    res = await ctx.run("SELECT pg_catalog.to_regprocedure($1) IS NOT NULL", (f"public.{fn.name}({types})",))
    if not res.rows[0][0]:
        raise EngineError("42883", f"function {fn.name}({', '.join(a.type_name for a in fn.arguments)}) does not exist",
                          hint=f"{fn.name} is a function of module {module}, which is not installed in this "
                               f"database: SELECT * FROM iasql_install('{module}');")
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
            reg.register(dataclasses.replace(fn, impl=functools.partial(_module_rpc, fn, mod.name, state),
                                             module=mod.name))
    state.functions = [fn for fn in reg.functions.values() if fn.module is None]
    reg.engine_state = state  # type: ignore[attr-defined]
    return reg


__all__ = ["build_registry", "EngineSettings", "ensure_metadata", "error_row", "after_failure", "EngineError", "rpc"]
