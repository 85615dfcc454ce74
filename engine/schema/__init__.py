"""IaSQL metadata in each user database, created idempotently.

``ensure_metadata(conn)`` creates, in schema ``public`` (as IaSQL does):

- ``iasql_module(name)`` (``name@version``), ``iasql_dependencies(module, dependency)``,
  ``iasql_tables(table, module)``;
- ``iasql_audit_log(id, ts, "user", table_name, change_type, change json, message,
  transaction_id)``;
- ``iasql_audit()``, the trigger function attached (``<table>_audit``) to every module table at
  install, recording INSERT/UPDATE/DELETE as ``{"original": ..., "change": ...}``;
- one stub per ``iasql_*`` function, with the registry's real signature and result columns, that
  raises ``iasql_* functions must be called through iasql-proxy`` (SQLSTATE 0A000) with a HINT, so
  a direct connection or a DO block fails loudly instead of silently doing nothing.

**How engine writes are told apart from the user's.** The engine's connection (whatever role the
proxy connects it as, superuser or not) runs ``SELECT set_config('iasql.engine_call', 'on',
false)``; ``iasql_audit()`` records ``"user"`` as ``iasql_engine`` when that setting is ``on`` and
as ``session_user`` otherwise. A dedicated ``SET ROLE`` was not used because it needs the role to
exist and be granted to every proxy login, and it would change the owner of the tables the engine
creates. The setting is a marker, not a security boundary: a user who sets it by hand only
mislabels their own audit entries (which then are not treated as their changes at commit).

Follows IaSQL's ``iasql_platform`` entities and ``iasql_functions/sql/after_install.sql``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

from psycopg import sql

if TYPE_CHECKING:  # pragma: no cover
    from engine.rpc import Function

#: Bumped whenever the metadata DDL changes; stored as the comment of ``iasql_audit_log``.
METADATA_VERSION = "iasql-proxy metadata 1"
#: The name recorded in the audit log for the engine's own writes.
ENGINE_USER = "iasql_engine"
#: The session setting that marks a connection as the engine's.
ENGINE_GUC = "iasql.engine_call"
#: Advisory lock (two-int form) serialising metadata DDL across processes.
METADATA_LOCK = (7355608, 2)

STUB_MESSAGE = "iasql_* functions must be called through iasql-proxy"
STUB_HINT = ("Connect to this database through iasql-proxy, which answers iasql_* calls itself; "
             "calls over a direct connection, inside DO blocks or inside other functions are refused.")

CHANGE_TYPES = ("INSERT", "UPDATE", "DELETE", "START_COMMIT", "PREVIEW_START_COMMIT", "END_COMMIT",
                "PREVIEW_END_COMMIT", "OPEN_TRANSACTION", "CLOSE_TRANSACTION", "ERROR", "START_REVERT",
                "END_REVERT")

BASE_DDL = [
    """CREATE TABLE IF NOT EXISTS iasql_module (name character varying PRIMARY KEY)""",
    """CREATE TABLE IF NOT EXISTS iasql_dependencies (
         module character varying NOT NULL REFERENCES iasql_module (name) ON DELETE CASCADE,
         dependency character varying NOT NULL REFERENCES iasql_module (name) ON DELETE CASCADE,
         PRIMARY KEY (module, dependency))""",
    """CREATE TABLE IF NOT EXISTS iasql_tables (
         "table" character varying NOT NULL,
         module character varying NOT NULL REFERENCES iasql_module (name) ON DELETE CASCADE,
         PRIMARY KEY ("table", module))""",
    f"""CREATE TABLE IF NOT EXISTS iasql_audit_log (
         id bigserial PRIMARY KEY,
         ts timestamp with time zone NOT NULL DEFAULT clock_timestamp(),
         "user" character varying NOT NULL,
         table_name character varying NOT NULL,
         change_type character varying NOT NULL
           CHECK (change_type IN ({", ".join(f"'{t}'" for t in CHANGE_TYPES)})),
         change json NOT NULL DEFAULT '{{}}',
         message character varying,
         transaction_id character varying)""",
    "CREATE INDEX IF NOT EXISTS iasql_audit_log_ts ON iasql_audit_log (ts)",
    "CREATE INDEX IF NOT EXISTS iasql_audit_log_type ON iasql_audit_log (change_type, id)",
    f"""CREATE OR REPLACE FUNCTION iasql_audit() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
       SET search_path = public, pg_temp AS $$
       DECLARE
         _user text := CASE WHEN current_setting('{ENGINE_GUC}', true) = 'on' THEN '{ENGINE_USER}'
                            ELSE session_user END;
         _tx text;
       BEGIN
         SELECT CASE WHEN change_type = 'OPEN_TRANSACTION' THEN transaction_id END INTO _tx
           FROM iasql_audit_log WHERE change_type IN ('OPEN_TRANSACTION', 'CLOSE_TRANSACTION')
           ORDER BY id DESC LIMIT 1;
         IF TG_OP = 'INSERT' THEN
           INSERT INTO iasql_audit_log ("user", table_name, change_type, change, transaction_id)
           VALUES (_user, TG_TABLE_NAME, 'INSERT', json_build_object('change', to_json(NEW.*)), _tx);
         ELSIF TG_OP = 'DELETE' THEN
           INSERT INTO iasql_audit_log ("user", table_name, change_type, change, transaction_id)
           VALUES (_user, TG_TABLE_NAME, 'DELETE', json_build_object('original', to_json(OLD.*)), _tx);
         ELSIF TG_OP = 'UPDATE' THEN
           INSERT INTO iasql_audit_log ("user", table_name, change_type, change, transaction_id)
           VALUES (_user, TG_TABLE_NAME, 'UPDATE',
                   json_build_object('original', to_json(OLD.*), 'change', to_json(NEW.*)), _tx);
         END IF;
         RETURN NULL;
       END $$""",
    "GRANT SELECT ON iasql_module, iasql_dependencies, iasql_tables, iasql_audit_log TO PUBLIC",
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
        out.append(sql.SQL("DROP FUNCTION IF EXISTS {name}({types})").format(
            name=sql.Identifier(fn.name), types=types))
        out.append(sql.SQL(
            "CREATE OR REPLACE FUNCTION {name}({args}) RETURNS TABLE ({cols}) LANGUAGE plpgsql AS {body}"
        ).format(name=sql.Identifier(fn.name), args=sql.SQL(", ").join(args), cols=cols,
                 body=sql.Literal(body.as_string(None))))
        out.append(sql.SQL("COMMENT ON FUNCTION {name}({types}) IS {c}").format(
            name=sql.Identifier(fn.name),
            types=types,
            c=sql.Literal(f"iasql-proxy stub: {fn.description}")))
    return out


async def _marker(conn: Any) -> str | None:
    cur = await conn.execute(
        "SELECT obj_description(to_regclass('public.iasql_audit_log'), 'pg_class')")
    row = await cur.fetchone()
    return row[0] if row else None


async def ensure_metadata(conn: Any, functions: Iterable["Function"] | None = None, version: str | None = None) -> bool:
    """Create the IaSQL metadata in ``conn``'s database unless it is already current.

    Takes a ``psycopg.AsyncConnection`` (any autocommit state; left as found). ``functions`` are
    the registry's functions to stub (default: ``engine.build_registry()``'s); ``version`` the
    platform version recorded as ``iasql_platform@version``/``iasql_functions@version``. Returns
    True when it created or upgraded something, False when the metadata was already current.
    Concurrent callers are serialised by a transaction-scoped advisory lock. Raises
    psycopg errors (e.g. 42501 insufficient_privilege) unchanged.
    """
    from engine.modules import VERSION

    version = version or VERSION
    marker = f"{METADATA_VERSION} ({version})"
    if await _marker(conn) == marker:
        return False
    if functions is None:
        from engine import build_registry

        reg = build_registry()
        reg.engine_state.aws.close()  # type: ignore[attr-defined]
        functions = list(reg.functions.values())
    stubs = stub_statements(functions)
    was_autocommit = conn.autocommit
    if not was_autocommit and conn.info.transaction_status != 0:
        raise RuntimeError("ensure_metadata needs a connection outside a transaction")
    await conn.set_autocommit(True)
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", METADATA_LOCK)
            if await _marker(conn) == marker:
                return False
            for stmt in BASE_DDL:
                await conn.execute(stmt)
            for stmt in stubs:
                await conn.execute(stmt)
            for mod in ("iasql_platform", "iasql_functions"):
                await conn.execute("DELETE FROM iasql_module WHERE name LIKE %s AND name <> %s",
                                   (mod + "@%", f"{mod}@{version}"))
                await conn.execute("INSERT INTO iasql_module (name) VALUES (%s) ON CONFLICT DO NOTHING",
                                   (f"{mod}@{version}",))
            await conn.execute("INSERT INTO iasql_dependencies (module, dependency) VALUES (%s, %s) "
                               "ON CONFLICT DO NOTHING",
                               (f"iasql_functions@{version}", f"iasql_platform@{version}"))
            await conn.execute(sql.SQL("COMMENT ON TABLE iasql_audit_log IS {}").format(sql.Literal(marker)))
        return True
    finally:
        await conn.set_autocommit(was_autocommit)


def init_db(dsn: str) -> None:
    """Create the IaSQL metadata in the database ``dsn`` names (for ``iasql-proxy init-db NAME``).

    Synchronous wrapper around ``ensure_metadata`` over a fresh psycopg connection. Raises
    psycopg.OperationalError when it cannot connect, other psycopg errors from the DDL.
    """
    import asyncio

    import psycopg

    async def run() -> None:
        conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
        try:
            await ensure_metadata(conn)
        finally:
            await conn.close()

    asyncio.run(run())
