"""IaSQL's metadata database (``iasql_metadata``) and the four functions answered in it.

Follows IaSQL v0.1 (https://github.com/iasql/iasql): the tables of ``src/migration`` (``1647661129900-
init``, ``...-record-count``, ``...-add-iasql-db-op-count``, ``...-upgrading-flag``, ``...-rpcCount``)
and the functions of ``1669932953007-rpcs`` / ``1670872677486-update-iasql-db-list``, whose bodies
IaSQL answered over HTTP in its engine (``src/services/iasql.ts`` ``connect``/``disconnect``):

- ``iasql_connect(db_alias varchar)`` -> ``("user" varchar, "password" varchar, record_count int,
  operation_count int, alias varchar, id varchar)``: a database ``_<16 hex digits>`` and a login role
  (8 characters, ``[a-z][a-z0-9]{7}``) with a generated 16-character password, on the configured
  server with the fewest databases for its weight; IaSQL's metadata is installed in it, as the new
  role, which owns the database (``REVOKE ALL ... FROM PUBLIC``: nobody else connects to it).
- ``iasql_disconnect(db_alias varchar)`` -> ``text`` (``disconnected <alias>``): drops the
  caller's database and its role.
- ``iasql_db_list()`` -> ``(pg_name, alias, record_count, operation_count, rpc_count, upgrading,
  created_at, updated_at, pg_user)``: the caller's own databases only.
- ``iasql_engine_health()`` -> ``text``: ``ok``, or what is unreachable.

"The caller" is the user the proxy authenticated (``CallContext.user``), IaSQL's ``session_user``.
The calls are not part of the caller's transaction: like IaSQL's HTTP calls (and ``CREATE
DATABASE``, which cannot run in a transaction block), they take effect at once and a ROLLBACK
does not undo them. They run on the proxy's admin connections (``Fleet``), never as the caller:
the metadata tables are readable and writable by their owner (the admin role) only.

The routing table ``iasql_route (pg_name, server)`` (ours) says which ``[servers]`` entry holds
each database; a trigger sends ``NOTIFY iasql_route`` on every change, and every proxy follows it
(``proxy.routing.fleet``).
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from engine.rpc import Argument, Column, EngineError, Function, Registry

#: The channel a change of ``iasql_route`` is notified on (payload: the database name).
ROUTE_CHANNEL = "iasql_route"
#: Advisory lock (two-int form, with the caller's name hashed as the second) serialising one
#: user's connects and disconnects across proxies.
USER_LOCK_CLASS = 7355609
#: Advisory lock (two-int form) serialising the creation of the metadata tables.
DDL_LOCK = (7355608, 3)
#: Longest ``db_alias`` taken (IaSQL's ``iasql_disconnect`` takes ``varchar(255)``).
MAX_ALIAS = 255

METADATA_DDL = [
    """CREATE TABLE IF NOT EXISTS public.iasql_database (
         pg_name character varying PRIMARY KEY,
         alias character varying NOT NULL,
         pg_user character varying NOT NULL,
         record_count integer NOT NULL DEFAULT 0,
         operation_count integer NOT NULL DEFAULT 0,
         rpc_count integer NOT NULL DEFAULT 0,
         upgrading boolean NOT NULL DEFAULT false,
         created_at timestamp without time zone NOT NULL DEFAULT now(),
         updated_at timestamp without time zone NOT NULL DEFAULT now())""",
    """CREATE TABLE IF NOT EXISTS public.iasql_user (
         id character varying PRIMARY KEY,
         email character varying NOT NULL,
         created_at timestamp without time zone NOT NULL DEFAULT now(),
         updated_at timestamp without time zone NOT NULL DEFAULT now())""",
    """CREATE TABLE IF NOT EXISTS public.iasql_user_databases (
         iasql_user_id character varying NOT NULL REFERENCES public.iasql_user (id)
           ON DELETE CASCADE ON UPDATE CASCADE,
         iasql_database_pg_name character varying NOT NULL REFERENCES public.iasql_database (pg_name),
         PRIMARY KEY (iasql_user_id, iasql_database_pg_name))""",
    "CREATE INDEX IF NOT EXISTS iasql_user_databases_user ON public.iasql_user_databases (iasql_user_id)",
    "CREATE INDEX IF NOT EXISTS iasql_user_databases_db ON public.iasql_user_databases (iasql_database_pg_name)",
    """CREATE TABLE IF NOT EXISTS public.iasql_route (
         pg_name character varying PRIMARY KEY,
         server character varying NOT NULL,
         created_at timestamp with time zone NOT NULL DEFAULT now())""",
    # the server a MOVE is copying the database to (proxy.routing.move); NULL when none
    "ALTER TABLE public.iasql_route ADD COLUMN IF NOT EXISTS moving_to character varying",
    f"""CREATE OR REPLACE FUNCTION public.iasql_route_notify() RETURNS trigger LANGUAGE plpgsql
       SET search_path = pg_catalog, pg_temp AS $$
       BEGIN
         PERFORM pg_catalog.pg_notify('{ROUTE_CHANNEL}', COALESCE(NEW.pg_name, OLD.pg_name));
         RETURN NULL;
       END $$""",
    "DROP TRIGGER IF EXISTS iasql_route_notify ON public.iasql_route",
    """CREATE TRIGGER iasql_route_notify AFTER INSERT OR UPDATE OR DELETE ON public.iasql_route
       FOR EACH ROW EXECUTE FUNCTION public.iasql_route_notify()""",
    """REVOKE ALL ON public.iasql_database, public.iasql_user, public.iasql_user_databases, public.iasql_route
       FROM PUBLIC""",
]


class Fleet(Protocol):
    """What the metadata functions need from whoever runs them (``proxy.routing.fleet.Fleet``).

    - ``metadata_database``: the metadata database's name; ``servers``: ``{name: weight}`` of the
      servers new databases may go to, in configuration order.
    - ``metadata()``: an async context manager giving a ``psycopg.AsyncConnection`` to the
      metadata database as the admin role, in a transaction committed when the block ends
      normally and rolled back otherwise. Raises ``EngineError('08006', ...)`` when unreachable.
    - ``admin(server)``: the same in autocommit, to database ``postgres`` (the entry's ``dbname``)
      of ``server``.
    - ``connect_as(server, dbname, user, password)``: a ``psycopg.AsyncConnection`` (autocommit
      off) to ``dbname`` on ``server`` as ``user``; the caller closes it.
    - ``route_changed(pg_name, server)``: this process learns a route at once (None: removed).
    - ``close_idle(server, dbname)``: close the proxy's idle pooled connections to ``dbname``.
    - ``await health()``: a list of problems (empty when every server and the metadata database
      answer).
    """

    metadata_database: str
    servers: dict[str, float]

    def metadata(self) -> AbstractAsyncContextManager[Any]: ...

    def admin(self, server: str) -> AbstractAsyncContextManager[Any]: ...

    async def connect_as(self, server: str, dbname: str, user: str, password: str) -> Any: ...

    def route_changed(self, pg_name: str, server: str | None) -> None: ...

    def close_idle(self, server: str, dbname: str) -> None: ...

    async def health(self) -> list[str]: ...


class Holder:
    """Where the registered functions find the ``Fleet``: ``fleet`` is None until the proxy sets
    it (no ``[servers]``: the functions then answer 0A000)."""

    fleet: Fleet | None = None


# -- names and passwords, as IaSQL generates them (src/services/db-manager.ts) -------------------
_FIRST = string.ascii_lowercase
_REST = string.ascii_lowercase + string.digits
_PASSWORD = _REST + string.ascii_uppercase + "$.^*"


def new_database_name() -> str:
    """``_`` and 16 random hex digits (IaSQL's ``genDbId`` in multi-user mode)."""
    return "_" + secrets.token_hex(8)


def new_user_and_password() -> tuple[str, str]:
    """An 8-character role name ``[a-z][a-z0-9]{7}`` and a 16-character password of
    ``[a-zA-Z0-9$.^*]`` (IaSQL's ``genUserAndPass``), from ``secrets``."""
    user = secrets.choice(_FIRST) + "".join(secrets.choice(_REST) for _ in range(7))
    return user, "".join(secrets.choice(_PASSWORD) for _ in range(16))


def place(servers: dict[str, float], counts: dict[str, int], exclude: Sequence[str] = ()) -> list[str]:
    """Servers in the order to try for a new database: fewest databases per unit of weight first
    (``counts`` by server name; missing = 0), configuration order among equals; ``exclude``d
    names left out. Pure."""
    order = list(servers)
    return sorted((s for s in order if s not in exclude),
                  key=lambda s: (counts.get(s, 0) / servers[s], order.index(s)))


# -- the functions ------------------------------------------------------------------------------
def _fleet(ctx: Any, fn: str, *, metadata_only: bool = True) -> Fleet:
    fleet = Holder.fleet
    if fleet is None:
        raise EngineError("0A000", f"{fn}() needs the proxy's [servers] section",
                          hint="List the Postgres servers databases may be created on in [servers] "
                               "(see README, Scaling out).")
    if metadata_only and ctx.database != fleet.metadata_database:
        raise EngineError("0A000", f'{fn}() is answered in the metadata database "{fleet.metadata_database}" only',
                          hint=f"Connect to dbname={fleet.metadata_database} and call it there.")
    return fleet


def _alias(value: Any) -> str:
    if value is None:
        raise EngineError("22004", "db_alias must not be NULL")
    alias = str(value)
    if not alias.strip() or len(alias) > MAX_ALIAS or "\x00" in alias:
        raise EngineError("22023", f"db_alias must be 1-{MAX_ALIAS} characters, got {alias[:80]!r}")
    return alias


async def _lock_user(meta: Any, user: str) -> None:
    await meta.execute("SELECT pg_catalog.pg_advisory_xact_lock(%s, pg_catalog.hashtext(%s))",
                       (USER_LOCK_CLASS, user))


async def iasql_connect(ctx: Any, db_alias: Any = None) -> list[tuple]:
    """Create a database for the caller (see the module docstring); returns one row ``(user,
    password, record_count, operation_count, alias, id)``.

    Raises EngineError 0A000 (no ``[servers]``, or called outside the metadata database), 22004
    (NULL alias), 22023 (empty or longer than 255 characters), 42P04 (the caller already has a
    database with that alias: IaSQL's message), 08006 (no server could create it: every server's
    reason), 57014 (cancelled). Whatever was created on a server is dropped again on failure.
    """
    import psycopg

    fleet = _fleet(ctx, "iasql_connect")
    alias = _alias(db_alias)
    user = ctx.user
    async with fleet.metadata() as meta:
        await _lock_user(meta, user)
        taken = await (await meta.execute(
            "SELECT 1 FROM public.iasql_database d JOIN public.iasql_user_databases u "
            "ON u.iasql_database_pg_name = d.pg_name WHERE u.iasql_user_id = %s AND d.alias = %s",
            (user, alias))).fetchone()
        if taken:
            raise EngineError("42P04", f"User with ID {user} already has an IaSQL database with alias {alias}")
        counts = dict(await (await meta.execute(
            "SELECT server, count(*) FROM public.iasql_route GROUP BY server")).fetchall())
        failures: list[str] = []
        for server in place(fleet.servers, counts):
            if ctx.cancelled.is_set():
                raise EngineError("57014", "canceling statement due to user request")
            pg_name = new_database_name()
            role, password = new_user_and_password()
            try:
                await _create(fleet, server, pg_name, role, password)
            except (psycopg.Error, OSError, EngineError) as e:
                failures.append(f"{server}: {_reason(e)}")
                continue
            try:
                await meta.execute("INSERT INTO public.iasql_user (id, email) VALUES (%s, '') ON CONFLICT DO NOTHING",
                                   (user,))
                await meta.execute("INSERT INTO public.iasql_database (pg_name, alias, pg_user) VALUES (%s, %s, %s)",
                                   (pg_name, alias, role))
                await meta.execute("INSERT INTO public.iasql_user_databases (iasql_user_id, iasql_database_pg_name) "
                                   "VALUES (%s, %s)", (user, pg_name))
                await meta.execute("INSERT INTO public.iasql_route (pg_name, server) VALUES (%s, %s)",
                                   (pg_name, server))
                await meta.commit()
            except BaseException:
                await _drop(fleet, server, pg_name, role, quiet=True)
                raise
            fleet.route_changed(pg_name, server)
            ctx.progress(f"created database {pg_name} for alias {alias} on server {server}")
            return [(role, password, 0, 0, alias, pg_name)]
    raise EngineError("08006", f"no server could create a database: {'; '.join(failures) or 'no [servers]'}")


def _reason(e: BaseException) -> str:
    if isinstance(e, EngineError):
        return e.message
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:300]


async def _create(fleet: Fleet, server: str, pg_name: str, role: str, password: str) -> None:
    """Role, database (owned by the role, closed to PUBLIC) and IaSQL's metadata in it, as the role.
    Undoes what it made when a step fails, then raises."""
    from psycopg import sql

    from engine.local import PsycopgCaller

    made = False
    try:
        async with fleet.admin(server) as adm:
            await adm.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(password)))
            made = True
            await adm.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(sql.Identifier(role)))
            await adm.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(pg_name),
                                                                            sql.Identifier(role)))
            await adm.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(pg_name)))
        conn = await fleet.connect_as(server, pg_name, role, password)
        try:
            from engine.schema import ensure_metadata

            caller = PsycopgCaller(conn=conn, database=pg_name, user=role)
            await ensure_metadata(caller, list(functions_for_metadata()))
            await conn.commit()
        finally:
            await conn.close()
    except BaseException:
        if made:
            await _drop(fleet, server, pg_name, role, quiet=True)
        raise


async def _drop(fleet: Fleet, server: str, pg_name: str, role: str, *, quiet: bool = False) -> None:
    """Drop database ``pg_name`` (its sessions ended first) and role ``role`` on ``server``."""
    from psycopg import sql

    try:
        fleet.close_idle(server, pg_name)
        async with fleet.admin(server) as adm:
            exists = await (await adm.execute("SELECT 1 FROM pg_catalog.pg_database WHERE datname = %s",
                                              (pg_name,))).fetchone()
            if exists:
                await adm.execute(sql.SQL("REVOKE CONNECT ON DATABASE {} FROM PUBLIC, {}").format(
                    sql.Identifier(pg_name), sql.Identifier(role)))
                await adm.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(pg_name)))
            await adm.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
    except Exception:
        if not quiet:
            raise


async def iasql_disconnect(ctx: Any, db_alias: Any = None) -> list[tuple]:
    """Drop the caller's database ``db_alias`` and its role; returns ``[("disconnected <alias>",)]``.

    Raises EngineError 0A000 (no ``[servers]``, or outside the metadata database), 22004/22023 (a
    bad alias), 3D000 (the caller has no database of that alias: IaSQL's message; another user's
    database is not the caller's, so it is reported the same way), 08006 (its server is
    unreachable: nothing is changed, call again when it is back).
    """
    import psycopg

    fleet = _fleet(ctx, "iasql_disconnect")
    alias = _alias(db_alias)
    user = ctx.user
    async with fleet.metadata() as meta:
        await _lock_user(meta, user)
        row = await (await meta.execute(
            "SELECT d.pg_name, d.pg_user, r.server FROM public.iasql_database d "
            "JOIN public.iasql_user_databases u ON u.iasql_database_pg_name = d.pg_name "
            "LEFT JOIN public.iasql_route r ON r.pg_name = d.pg_name "
            "WHERE u.iasql_user_id = %s AND d.alias = %s", (user, alias))).fetchone()
        if row is None:
            raise EngineError("3D000", f"User with ID {user} has no IaSQL database with alias {alias}")
        pg_name, role, server = row
        if server is not None and server in fleet.servers:
            try:
                await _drop(fleet, server, pg_name, role)
            except (psycopg.Error, OSError) as e:
                raise EngineError("08006", f'cannot drop database "{pg_name}" on server {server}: {_reason(e)}',
                                  hint="Nothing was changed; call iasql_disconnect again when the server is back.")
        await meta.execute("DELETE FROM public.iasql_user_databases WHERE iasql_database_pg_name = %s", (pg_name,))
        await meta.execute("DELETE FROM public.iasql_database WHERE pg_name = %s", (pg_name,))
        await meta.execute("DELETE FROM public.iasql_route WHERE pg_name = %s", (pg_name,))
        await meta.commit()
    fleet.route_changed(pg_name, None)
    return [(f"disconnected {alias}",)]


async def iasql_db_list(ctx: Any) -> list[tuple]:
    """The caller's databases, IaSQL's columns. Raises EngineError 0A000 as ``iasql_connect``,
    08006 when the metadata database is unreachable."""
    fleet = _fleet(ctx, "iasql_db_list")
    async with fleet.metadata() as meta:
        rows = await (await meta.execute(
            "SELECT d.pg_name, d.alias, d.record_count, d.operation_count, d.rpc_count, d.upgrading, "
            "d.created_at, d.updated_at, d.pg_user FROM public.iasql_database d "
            "JOIN public.iasql_user_databases u ON u.iasql_database_pg_name = d.pg_name "
            "WHERE u.iasql_user_id = %s ORDER BY d.created_at, d.pg_name", (ctx.user,))).fetchall()
    return [tuple(r) for r in rows]


async def iasql_engine_health(ctx: Any) -> list[tuple]:
    """``ok`` when the metadata database and every ``[servers]`` entry answer (or there is no
    ``[servers]``: the engine runs in the proxy, so answering is being healthy); otherwise
    ``unhealthy: <problem>; ...``. Raises nothing."""
    fleet = Holder.fleet
    problems = await fleet.health() if fleet is not None else []
    return [("ok" if not problems else "unhealthy: " + "; ".join(problems),)]


FUNCTIONS = (
    Function("iasql_connect", (Argument("db_alias", "varchar"),),
             (Column("user", "varchar"), Column("password", "varchar"), Column("record_count", "int4"),
              Column("operation_count", "int4"), Column("alias", "varchar"), Column("id", "varchar")),
             iasql_connect, "Creates an IaSQL database and a login role for it (metadata database)",
             "SELECT * FROM iasql_connect('my_db')", mutating=True),
    Function("iasql_disconnect", (Argument("db_alias", "varchar"),), (Column("iasql_disconnect", "text"),),
             iasql_disconnect, "Drops one of your IaSQL databases and its role (metadata database)",
             "SELECT iasql_disconnect('my_db')", mutating=True),
    Function("iasql_db_list", (),
             (Column("pg_name", "varchar"), Column("alias", "varchar"), Column("record_count", "int4"),
              Column("operation_count", "int4"), Column("rpc_count", "int4"), Column("upgrading", "bool"),
              Column("created_at", "timestamp"), Column("updated_at", "timestamp"), Column("pg_user", "varchar")),
             iasql_db_list, "Lists your IaSQL databases (metadata database)", "SELECT * FROM iasql_db_list()"),
    Function("iasql_engine_health", (), (Column("iasql_engine_health", "text"),), iasql_engine_health,
             "Says whether the engine and its servers answer", "SELECT iasql_engine_health()"),
)

_base_functions: list[Function] = []


def register(reg: Registry) -> Registry:
    """A new Registry holding ``reg``'s functions (an ``engine.build_registry`` result) and the four
    metadata functions, with ``reg``'s ``engine_state``; ``reg`` itself is left as it was, so
    ``iasql_help`` (which lists ``reg``'s functions) keeps listing IaSQL's ``iasql_functions`` only,
    as IaSQL's does. Stubs and argument probes go wherever the new registry's do (the shared
    ``engine_state.functions`` becomes the new registry's ``iasql_*`` functions). Raises
    ValueError when ``reg`` already has one of the four."""
    out = Registry()
    for fn in list(reg.functions.values()) + list(FUNCTIONS):
        out.register(fn)
    if hasattr(reg, "engine_state"):
        out.engine_state = reg.engine_state  # type: ignore[attr-defined]
        # the engine's own metadata creation (EngineSession) makes the same probes and stubs as the
        # interceptor's: else a database whose first call was iasql_version() would lack the four's
        # probes while marked current, and iasql_connect('x') there would fail with 42883
        out.engine_state.functions = [fn for fn in out.functions.values() if fn.module is None]
    _base_functions[:] = list(out.functions.values())
    return out


def functions_for_metadata() -> list[Function]:
    """The functions whose stubs and probes a new database gets (the registry ``register`` saw
    last; else a fresh ``engine.build_registry`` plus these four)."""
    if not _base_functions:
        from engine import build_registry

        base = build_registry()
        base.engine_state.aws.close()  # type: ignore[attr-defined]
        register(base)
    return list(_base_functions)


async def ensure_metadata_database(admin: Any, meta_connect: Any, database: str) -> bool:
    """Create the metadata database ``database`` (when missing) and its tables, stubs and probes.

    ``admin``: an autocommit ``psycopg.AsyncConnection`` to the metadata server as the admin role;
    ``meta_connect(dbname)``: awaitable giving a fresh ``psycopg.AsyncConnection`` (autocommit off)
    to ``dbname`` there as the admin role. A missing database is made whole under a temporary name
    and then renamed, so no client ever finds it half made. Idempotent and safe from several proxies
    at once (an advisory lock serialises the DDL; the loser of a rename race drops its copy).
    Returns True when it created the database. Raises ``psycopg.Error``.
    """
    from psycopg import errors, sql

    async def populate(dbname: str) -> None:
        from engine.local import PsycopgCaller
        from engine.schema import ensure_metadata

        conn = await meta_connect(dbname)
        try:
            await conn.execute("SELECT pg_catalog.pg_advisory_xact_lock(%s, %s)", DDL_LOCK)
            for stmt in METADATA_DDL:  # idempotent; the lock keeps two proxies' runs apart
                await conn.execute(stmt)
            caller = PsycopgCaller(conn=conn, database=dbname, user=conn.info.user)
            await ensure_metadata(caller, functions_for_metadata())
            await conn.commit()
        finally:
            await conn.close()

    async def exists() -> bool:
        return bool(await (await admin.execute("SELECT 1 FROM pg_catalog.pg_database WHERE datname = %s",
                                               (database,))).fetchone())

    created = False
    if not await exists():
        scratch = f"{database[:40]}_new_{secrets.token_hex(4)}"
        await admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(scratch)))
        try:
            await populate(scratch)
            await admin.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(scratch),
                                                                                 sql.Identifier(database)))
            created = True
        except (errors.DuplicateDatabase, errors.UniqueViolation):
            pass  # another proxy made it meanwhile
        finally:
            if not created:
                await admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(scratch)))
    await populate(database)  # brings an existing one up to date
    return created
