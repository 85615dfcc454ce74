"""IaSQL metadata in each user database, created idempotently.

``ensure_metadata(ctx, functions)`` creates, in schema ``public`` (as IaSQL does):

- ``iasql_module(name)`` (``name@version``), ``iasql_dependencies(module, dependency)``,
  ``iasql_tables(table, module)``;
- ``iasql_audit_log(id, ts, "user", table_name, change_type, change json, message,
  transaction_id)``;
- ``iasql_audit()``, the trigger function attached (``<table>_audit``) to every module table at
  install, recording INSERT/UPDATE/DELETE as ``{"original": ..., "change": ...}``; it is SECURITY
  DEFINER (a role granted a module table writes its audit rows without a grant on the log), so it
  runs with ``search_path = pg_catalog, pg_temp`` and records tables of schema ``public`` only (a
  role that attaches it to a table of its own elsewhere, e.g. a temporary ``bucket``, writes
  nothing);
- one stub per ``iasql_*`` function (and per RPC of each installed module, ``Module.rpcs``, for a
  database whose modules were installed by an older proxy: ``iasql_install`` creates them), with
  the registry's real signature and result columns, that
  raises ``iasql_* functions must be called through iasql-proxy`` (SQLSTATE 0A000) with a HINT, so
  a direct connection or a DO block fails loudly instead of silently doing nothing.

- schema ``iasql_args`` with one *argument probe* per function (every module RPC's too, installed
  or not: the schema is the metadata owner's): same name and argument list as the
  stub, returning the arguments it was given as one row (``a1``, ``a2``, ...). The proxy evaluates
  a call's argument expressions by calling the probe on the caller's connection, so PostgreSQL's
  own function resolution (named and VARIADIC notation, defaults, implicit casts, its error
  messages) applies to ``iasql_*`` arguments exactly as to any function's.

Everything is created in the caller's transaction, as the caller (``ensure_metadata`` runs
through ``engine.rpc.CallContext``), so the caller needs the right to create in ``public``. Every
name in these statements, and in every statement the engine sends, is schema-qualified
(``public.`` for IaSQL's tables and functions, ``pg_catalog.`` for built-ins). The audit log is
readable by its owner only (``REVOKE ALL ... FROM PUBLIC``); the module catalogue by everyone.

**How engine writes are told apart from the user's.** Engine calls run on the caller's own
connection, as the caller; for the duration of a call the engine sets the transaction-local
setting ``iasql.engine_call`` to ``on`` (``set_config(..., true)``) and back to ``off`` when the
call ends. ``iasql_audit()`` records ``"user"`` as ``iasql_engine`` while that setting is ``on`` and
as ``session_user`` otherwise, so the caller's own statements before and after the call, even in
the same transaction, are attributed to the caller. The setting is a marker, not a security
boundary: a user who sets it by hand only mislabels their own audit entries (which then are not
treated as their changes at commit).

Follows IaSQL's ``iasql_platform`` entities and ``iasql_functions/sql/after_install.sql``.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Iterable

from psycopg import sql

if TYPE_CHECKING:  # pragma: no cover
    from engine.rpc import Function

#: Bumped whenever the metadata DDL changes; stored as the comment of ``iasql_audit_log``.
METADATA_VERSION = "iasql-proxy metadata 9"  # 7: module RPC stubs of installed modules; 8: RPC probes always;
#                                                9: the metadata database functions' probes in every database
#: Columns whose values never reach the audit log (table -> columns): the audit row holds
#: ``REDACTED`` instead, so ``iasql_get_sql_since`` and ``iasql_get_sql_for_transaction`` print
#: the placeholder and a revert leaves these tables alone.
REDACTED_COLUMNS = {"aws_credentials": ("secret_access_key",), "secret": ("value",)}
REDACTED_TABLES = frozenset(REDACTED_COLUMNS)
#: What the audit log holds in place of a redacted value.
REDACTED = "<redacted>"
#: The name recorded in the audit log for the engine's own writes.
ENGINE_USER = "iasql_engine"
#: The session setting that marks a connection as the engine's.
ENGINE_GUC = "iasql.engine_call"
#: Advisory lock (two-int form) serialising metadata DDL across processes.
METADATA_LOCK = (7355608, 2)
#: The schema holding the argument probes (one per function, see the module docstring).
ARGS_SCHEMA = "iasql_args"
#: One SQL expression giving the metadata marker of the current database (NULL when absent).
METADATA_MARKER_SQL = ("SELECT pg_catalog.obj_description(pg_catalog.to_regclass('public.iasql_audit_log'), "
                       "'pg_class')")

STUB_MESSAGE = "iasql_* functions must be called through iasql-proxy"
#: What identifies a function in ``public`` as the engine's stub (and not a user's function of
#: the same name): a PL/pgSQL body (``pg_proc.prosrc``) containing this text (``stub_statements``).
STUB_MARKER = STUB_MESSAGE
STUB_HINT = ("Connect to this database through iasql-proxy, which answers iasql_* calls itself; "
             "calls it cannot see are refused: over a direct connection, or hidden inside DO blocks, "
             "other functions, views or an SQL-level PREPARE (send the call itself, or use your "
             "driver's prepared statements).")

CHANGE_TYPES = ("INSERT", "UPDATE", "DELETE", "START_COMMIT", "PREVIEW_START_COMMIT", "END_COMMIT",
                "PREVIEW_END_COMMIT", "OPEN_TRANSACTION", "CLOSE_TRANSACTION", "ERROR", "START_REVERT",
                "END_REVERT", "SET_COMMIT_MESSAGE")

def _quote(text: str) -> str:
    """``text`` as a SQL string literal (only constants of this module are quoted)."""
    return "'" + text.replace("'", "''") + "'"


def _redact_map() -> str:
    """REDACTED_COLUMNS as a jsonb literal."""
    import json

    return _quote(json.dumps({t: list(c) for t, c in REDACTED_COLUMNS.items()})) + "::jsonb"


BASE_DDL = [
    """CREATE TABLE IF NOT EXISTS public.iasql_module (name character varying PRIMARY KEY)""",
    """CREATE TABLE IF NOT EXISTS public.iasql_dependencies (
         module character varying NOT NULL REFERENCES public.iasql_module (name) ON DELETE CASCADE,
         dependency character varying NOT NULL REFERENCES public.iasql_module (name) ON DELETE CASCADE,
         PRIMARY KEY (module, dependency))""",
    """CREATE TABLE IF NOT EXISTS public.iasql_tables (
         "table" character varying NOT NULL,
         module character varying NOT NULL REFERENCES public.iasql_module (name) ON DELETE CASCADE,
         PRIMARY KEY ("table", module))""",
    f"""CREATE TABLE IF NOT EXISTS public.iasql_audit_log (
         id bigserial PRIMARY KEY,
         ts timestamp with time zone NOT NULL DEFAULT pg_catalog.clock_timestamp(),
         "user" character varying NOT NULL,
         table_name character varying NOT NULL,
         change_type character varying NOT NULL
           CHECK (change_type IN ({", ".join(f"'{t}'" for t in CHANGE_TYPES)})),
         change json NOT NULL DEFAULT '{{}}',
         message character varying,
         transaction_id character varying)""",
    # the allowed change types grow with versions: an older database gets the current list
    "ALTER TABLE public.iasql_audit_log DROP CONSTRAINT IF EXISTS iasql_audit_log_change_type_check",
    f"""ALTER TABLE public.iasql_audit_log ADD CONSTRAINT iasql_audit_log_change_type_check
         CHECK (change_type IN ({", ".join(f"'{t}'" for t in CHANGE_TYPES)}))""",
    "CREATE INDEX IF NOT EXISTS iasql_audit_log_ts ON public.iasql_audit_log (ts)",
    "CREATE INDEX IF NOT EXISTS iasql_audit_log_type ON public.iasql_audit_log (change_type, id)",
    f"""CREATE OR REPLACE FUNCTION public.iasql_redacted(_table text, _row json) RETURNS json
       LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
         SELECT CASE WHEN _row IS NULL OR NOT ({_redact_map()} ? _table) THEN _row
                ELSE (_row::jsonb || (SELECT pg_catalog.jsonb_object_agg(c, {_quote(REDACTED)})
                                        FROM pg_catalog.jsonb_array_elements_text({_redact_map()} -> _table) AS c))::json END
       $$""",
    f"""CREATE OR REPLACE FUNCTION public.iasql_audit() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
       SET search_path = pg_catalog, pg_temp AS $$
       DECLARE
         _user text := CASE WHEN pg_catalog.current_setting('{ENGINE_GUC}', true) = 'on' THEN '{ENGINE_USER}'
                            ELSE session_user END;
         _tx text;
       BEGIN
         IF TG_TABLE_SCHEMA <> 'public' THEN
           -- only IaSQL's tables (in public) are audited: a role that attaches this SECURITY DEFINER
           -- function to a table of its own elsewhere (a temporary table) writes no audit rows
           RETURN NULL;
         END IF;
         SELECT CASE WHEN change_type = 'OPEN_TRANSACTION' THEN transaction_id END INTO _tx
           FROM public.iasql_audit_log WHERE change_type IN ('OPEN_TRANSACTION', 'CLOSE_TRANSACTION')
           ORDER BY id DESC LIMIT 1;
         IF TG_OP = 'INSERT' THEN
           INSERT INTO public.iasql_audit_log ("user", table_name, change_type, change, transaction_id)
           VALUES (_user, TG_TABLE_NAME, 'INSERT', pg_catalog.json_build_object('change', public.iasql_redacted(TG_TABLE_NAME, pg_catalog.to_json(NEW.*))), _tx);
         ELSIF TG_OP = 'DELETE' THEN
           INSERT INTO public.iasql_audit_log ("user", table_name, change_type, change, transaction_id)
           VALUES (_user, TG_TABLE_NAME, 'DELETE', pg_catalog.json_build_object('original', public.iasql_redacted(TG_TABLE_NAME, pg_catalog.to_json(OLD.*))), _tx);
         ELSIF TG_OP = 'UPDATE' THEN
           INSERT INTO public.iasql_audit_log ("user", table_name, change_type, change, transaction_id)
           VALUES (_user, TG_TABLE_NAME, 'UPDATE',
                   pg_catalog.json_build_object('original', public.iasql_redacted(TG_TABLE_NAME, pg_catalog.to_json(OLD.*)),
                                                'change', public.iasql_redacted(TG_TABLE_NAME, pg_catalog.to_json(NEW.*))), _tx);
         END IF;
         RETURN NULL;
       END $$""",
    # the module catalogue is readable by every role of the database (it says which modules are
    # installed, nothing else); the audit log is not: it holds row contents, so only its owner
    # (the role that created the metadata) reads it unless granted
    # audit rows written before redaction existed lose their secrets on upgrade
    """UPDATE public.iasql_audit_log
          SET change = pg_catalog.json_build_object('original', public.iasql_redacted(table_name, change -> 'original'),
                                                    'change', public.iasql_redacted(table_name, change -> 'change'))
        WHERE change_type IN ('INSERT', 'UPDATE', 'DELETE') AND table_name IN (SELECT pg_catalog.jsonb_object_keys(""" +
    _redact_map() + """))""",
    "GRANT SELECT ON public.iasql_module, public.iasql_dependencies, public.iasql_tables TO PUBLIC",
    "REVOKE ALL ON public.iasql_audit_log FROM PUBLIC",
    # earlier versions (those with an engine role) granted every module table to PUBLIC: the keys
    # lose that grant on upgrade (a caller that does not own the table revokes nothing: a WARNING)
    """DO $iasql_upgrade$ BEGIN
         IF pg_catalog.to_regclass('public.aws_credentials') IS NOT NULL THEN
           REVOKE ALL ON public.aws_credentials FROM PUBLIC;
         END IF;
       END $iasql_upgrade$""",
    f"CREATE SCHEMA IF NOT EXISTS {ARGS_SCHEMA}",
    f"GRANT USAGE ON SCHEMA {ARGS_SCHEMA} TO PUBLIC",
]


def stub_statements(functions: Iterable["Function"]) -> list[sql.Composable]:
    """``CREATE OR REPLACE FUNCTION`` statements for the stubs of ``functions``.

    Each stub has the function's argument list (defaults included) and ``RETURNS TABLE`` of its
    result columns, and raises STUB_MESSAGE with SQLSTATE 0A000 and STUB_HINT.
    """
    from engine.rpc import NO_DEFAULT

    out: list[sql.Composable] = []
    for fn in functions:
        args = []
        for a in fn.arguments:
            piece = sql.SQL("{}{} {}{}").format(
                sql.SQL("VARIADIC ") if a.variadic else sql.SQL(""), sql.Identifier(a.name),
                sql.SQL(a.type_name), sql.SQL("[]") if a.variadic else sql.SQL(""))
            if a.default is not NO_DEFAULT:
                piece = sql.SQL("{} DEFAULT {}").format(piece, sql.Literal(a.default))
            args.append(piece)
        cols = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.type_name.lstrip("_") + ("[]" if c.type_name.startswith("_") else "")))
            for c in fn.columns)
        body = sql.SQL("BEGIN RAISE EXCEPTION USING ERRCODE = '0A000', MESSAGE = {}, HINT = {}; END").format(
            sql.Literal(STUB_MESSAGE), sql.Literal(STUB_HINT))
        types = sql.SQL(", ").join(sql.SQL("{}{}{}").format(
            sql.SQL("VARIADIC ") if a.variadic else sql.SQL(""), sql.SQL(a.type_name),
            sql.SQL("[]") if a.variadic else sql.SQL("")) for a in fn.arguments)
        name = sql.Identifier("public", fn.name)
        out.append(sql.SQL("DROP FUNCTION IF EXISTS {name}({types})").format(name=name, types=types))
        out.append(sql.SQL(
            "CREATE OR REPLACE FUNCTION {name}({args}) RETURNS TABLE ({cols}) LANGUAGE plpgsql "
            "SET search_path = pg_catalog, pg_temp AS {body}"
        ).format(name=name, args=sql.SQL(", ").join(args), cols=cols,
                 body=sql.Literal(body.as_string(None))))
        out.append(sql.SQL("COMMENT ON FUNCTION {name}({types}) IS {c}").format(
            name=name,
            types=types,
            c=sql.Literal(f"iasql-proxy stub: {fn.description}")))
    return out


def probe_statements(functions: Iterable["Function"]) -> list[sql.Composable]:
    """``CREATE OR REPLACE FUNCTION`` statements for the argument probes of ``functions``.

    Each probe ``iasql_args.<name>`` has the function's argument list (names, types, VARIADIC,
    defaults) and returns one row of its arguments as columns ``a1``..``an`` (a VARIADIC argument
    as its array). Functions without arguments get a probe too, so that a call given arguments it
    does not take fails with PostgreSQL's own 42883.
    """
    from engine.rpc import NO_DEFAULT

    out: list[sql.Composable] = []
    for fn in functions:
        args = []
        types = []
        cols = []
        for i, a in enumerate(fn.arguments, 1):
            typ = sql.SQL(a.type_name + ("[]" if a.variadic else ""))
            piece = sql.SQL("{}{} {}").format(sql.SQL("VARIADIC ") if a.variadic else sql.SQL(""),
                                              sql.Identifier(a.name), typ)
            if a.default is not NO_DEFAULT:
                piece = sql.SQL("{} DEFAULT {}").format(piece, sql.Literal(a.default))
            args.append(piece)
            types.append(sql.SQL("{}{}").format(sql.SQL("VARIADIC ") if a.variadic else sql.SQL(""), typ))
            cols.append(sql.SQL("{} {}").format(sql.Identifier(f"a{i}"), typ))
        name = sql.Identifier(ARGS_SCHEMA, fn.name)
        body = "SELECT " + ", ".join(f"${i}" for i in range(1, len(fn.arguments) + 1)) if fn.arguments else "SELECT"
        out.append(sql.SQL("DROP FUNCTION IF EXISTS {name}({types})").format(name=name, types=sql.SQL(", ").join(types)))
        out.append(sql.SQL(
            "CREATE FUNCTION {name}({args}) RETURNS {ret} LANGUAGE sql IMMUTABLE PARALLEL SAFE AS {body}"
        ).format(name=name, args=sql.SQL(", ").join(args),
                 ret=sql.SQL("TABLE ({})").format(sql.SQL(", ").join(cols)) if cols else sql.SQL("void"),
                 body=sql.Literal(body if cols else "SELECT NULL::void")))
    return out


def drop_statements(functions: Iterable["Function"], schemas: tuple[str, ...] = ("public", ARGS_SCHEMA)
                    ) -> list[sql.Composable]:
    """``DROP FUNCTION IF EXISTS`` statements for the stubs (``public``) and/or argument probes
    (``iasql_args``) of ``functions``: ``iasql_uninstall`` drops a module's RPC stubs with them
    (``schemas=("public",)``; the probes belong to the metadata and stay)."""
    out: list[sql.Composable] = []
    for fn in functions:
        types = sql.SQL(", ").join(sql.SQL("{}{}{}").format(
            sql.SQL("VARIADIC ") if a.variadic else sql.SQL(""), sql.SQL(a.type_name),
            sql.SQL("[]") if a.variadic else sql.SQL("")) for a in fn.arguments)
        for schema in schemas:
            out.append(sql.SQL("DROP FUNCTION IF EXISTS {name}({types})").format(
                name=sql.Identifier(schema, fn.name), types=types))
    return out


def rpc_procedure(fn: "Function") -> str:
    """``public.<name>(<argument types>)`` of ``fn``'s stub, as ``to_regprocedure`` takes it."""
    return f"public.{fn.name}({','.join(a.type_name + ('[]' if a.variadic else '') for a in fn.arguments)})"


#: Whether the function ``to_regprocedure($1)`` names is the engine's stub (NULL: no such function).
_IS_STUB_SQL = ("SELECT p.prolang = (SELECT l.oid FROM pg_catalog.pg_language l WHERE l.lanname = 'plpgsql') "
                "AND pg_catalog.strpos(p.prosrc, $2) > 0 FROM pg_catalog.pg_proc p "
                "WHERE p.oid = pg_catalog.to_regprocedure($1)")


async def stub_state(ctx: Any, fn: "Function") -> str:
    """What ``public.<name>(<argument types>)`` of module RPC ``fn`` is in the caller's database:
    ``"stub"`` (the engine's: a PL/pgSQL body with ``STUB_MARKER``), ``"user"`` (a function of
    the user's with the stub's name and argument types) or ``"none"``. ``ctx`` is anything with
    ``await run(query, params)`` returning an ``engine.rpc.Result``. Raises ``SqlError`` only when
    the connection's transaction is already aborted."""
    rows = (await ctx.run(_IS_STUB_SQL, (rpc_procedure(fn), STUB_MARKER))).rows
    if not rows:
        return "none"
    return "stub" if rows[0][0] else "user"


def user_function_error(fn: "Function", module: str) -> "Any":
    """The EngineError (42723, Postgres's own text for a duplicate function) ``iasql_install``
    raises when the user has a function of their own with the signature of ``module``'s RPC
    ``fn``: installing would replace it with the stub."""
    from engine.rpc import EngineError

    return EngineError("42723", f'function "{fn.name}" already exists with same argument types',
                       detail=f"Module {module} defines the SQL function {fn.signature}; the existing "
                              f"{rpc_procedure(fn)} is not IaSQL's, and installing would replace it.",
                       hint=f"Rename or drop your function {rpc_procedure(fn)}, then install {module} again.")


@functools.lru_cache(maxsize=1)
def rpc_digest() -> str:
    """A short digest of every module RPC's module and SQL signature: part of the marker, so that a
    database whose metadata was made before an RPC was added (or changed) gets its argument probe
    and, when its module is installed, its stub at the next call (no ``METADATA_VERSION`` bump per
    RPC)."""
    import hashlib

    from engine.modules import MODULES

    sigs = sorted(f"{m.name}.{fn.signature}" for m in MODULES for fn in m.rpcs)
    return hashlib.sha256("\n".join(sigs).encode()).hexdigest()[:12]


def metadata_marker(version: str | None = None) -> str:
    """The marker (comment of ``iasql_audit_log``) of current metadata for platform ``version``
    and the current module RPCs (``rpc_digest``)."""
    from engine.modules import VERSION

    return f"{METADATA_VERSION} ({version or VERSION}; rpcs {rpc_digest()})"


async def ensure_metadata(ctx: Any, functions: Iterable["Function"], version: str | None = None,
                          lock_timeout: float = 30.0) -> bool:
    """Create the IaSQL metadata in the caller's database unless it is already current.

    Takes an ``engine.rpc.CallContext`` (the statements run in the caller's transaction, as the
    caller), the registry's functions to stub and the platform ``version`` recorded as ``iasql_platform@version``/``iasql_functions@version``.
    Returns True when it created or upgraded something, False when the metadata was already
    current. Only a caller that finds it missing takes the transaction-level advisory lock that
    serialises creators (a second creator waits until the first one's transaction ends, at most
    ``lock_timeout`` seconds: then EngineError 55P03 naming the holder). Every
    name is schema-qualified: the caller's ``search_path`` is not used and not changed. Raises
    ``engine.rpc.SqlError`` from the DDL (e.g. 42501 when the caller may not create in ``public``).
    """
    marker = metadata_marker(version)
    if (await ctx.run(METADATA_MARKER_SQL)).rows[0][0] == marker:
        return False
    from engine.modules import VERSION

    version = version or VERSION
    # serialise creators; the lock is held until the caller's transaction ends, and a second
    # creator then finds the metadata current (each statement sees what committed before it)
    from engine.locks import holder_of, take_xact_lock
    from engine.rpc import EngineError

    async def failure() -> EngineError:
        return EngineError("55P03", f"could not obtain the IaSQL metadata lock within {lock_timeout:g} s: it is "
                                    f"held by {await holder_of(ctx, METADATA_LOCK)}",
                           hint="Another session is creating IaSQL's metadata in this database in a "
                                "transaction that is still open; try again when it ends.")

    await take_xact_lock(ctx, METADATA_LOCK, timeout=lock_timeout, failure=failure,
                         waiting="waiting for another session to finish creating IaSQL's metadata")
    if (await ctx.run(METADATA_MARKER_SQL)).rows[0][0] == marker:
        return False
    functions = list(functions)
    for stmt in BASE_DDL:
        await ctx.run(stmt)
    for stmt in stub_statements(functions) + probe_statements(functions):
        await ctx.run(stmt.as_string(None))
    # the RPCs of modules installed before their stubs came with the install (an older proxy)
    from engine.modules import MODULES

    # every module RPC's argument probe is the metadata's (made by its owner, so a caller who may
    # create tables in public but not in iasql_args can still install a module); the stub in
    # public exists while the module is installed
    for stmt in probe_statements([fn for m in MODULES for fn in m.rpcs]):
        await ctx.run(stmt.as_string(None))
    installed = {r[0] for r in (await ctx.run("SELECT name FROM public.iasql_module")).rows}
    rpcs = [fn for m in MODULES if m.full_name in installed for fn in m.rpcs]
    # a function of the user's with a stub's signature stays as it is (``stub_state``)
    rpcs = [fn for fn in rpcs if await stub_state(ctx, fn) != "user"]
    for stmt in stub_statements(rpcs):
        await ctx.run(stmt.as_string(None))
    for mod in ("iasql_platform", "iasql_functions"):
        await ctx.run("DELETE FROM public.iasql_module WHERE name LIKE $1 AND name <> $2",
                      (mod + "@%", f"{mod}@{version}"))
        await ctx.run("INSERT INTO public.iasql_module (name) VALUES ($1) ON CONFLICT DO NOTHING", (f"{mod}@{version}",))
    await ctx.run("INSERT INTO public.iasql_dependencies (module, dependency) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                  (f"iasql_functions@{version}", f"iasql_platform@{version}"))
    await ctx.run(sql.SQL("COMMENT ON TABLE public.iasql_audit_log IS {}").format(sql.Literal(marker)).as_string(None))
    return True


def error_row(message: str) -> tuple[str, tuple]:
    """The statement (SQL with ``$n``, parameters) that records a failed call as IaSQL's ``ERROR``
    row in ``iasql_audit_log`` (``EngineError.audit`` is the message). Run it after the caller's
    transaction has ended, as the caller, in a transaction of its own."""
    return ('INSERT INTO public.iasql_audit_log ("user", table_name, change_type, change, message) '
            "VALUES ($1, 'iasql_audit_log', 'ERROR', '{}', $2)", (ENGINE_USER, message))
