"""One proxy's view of the fleet: admin connections to the ``[servers]``, the metadata database,
and the routing table every proxy follows live.

Theory of operation
-------------------
The routing table ``iasql_route (pg_name, server)`` lives in the metadata database (on the server
``metadata_server`` names); ``engine.metadata`` writes it when ``iasql_connect``/``iasql_disconnect``
run, and a trigger there sends ``NOTIFY iasql_route`` with the database name. Each proxy process
keeps one connection to the metadata database as the admin role (``_follow``): it creates the
metadata database and tables when missing, runs ``LISTEN iasql_route``, reads the whole table, and
reads it again on every notification and at least every ``route_refresh_interval`` seconds (the
safety net for a notification lost while the connection was down). When that connection breaks it
is opened again, 0.5 s after the failure and then up to every 5 s; the last table read stays in
force meanwhile. So a database made through any proxy is reachable through every proxy within the
notification's delivery (milliseconds), and a proxy that missed it catches up at its next read.

``target_for(dbname)`` is what login uses (``ProxyApp.target_for``): the metadata database goes to
its server, a database in the table to the ``[servers]`` entry the table names, anything else is
left to ``[databases]``. The lookup is a dictionary read at login (and at lease, in transaction
pooling, through the session's target): nothing is looked up per query.

A server that stops answering fails only the logins and leases of its own databases (the pool's
``server_login_retry`` error names its address); the routing table and the other servers are not
affected, and the pool connects again once it answers.

Admin connections are psycopg connections opened per operation (``admin``, ``metadata``): the
operations are rare (a connect, a disconnect, a list), and nothing is left open to a server that
might be restarted meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from proxy.config import Config, DatabaseTarget

if TYPE_CHECKING:
    from proxy.routing.config import ServerEntry
    from proxy.server import ProxyApp

log = logging.getLogger("iasql_proxy.routing")

#: Seconds to wait for an admin connection (connect and log in) before the server counts as down.
ADMIN_CONNECT_TIMEOUT = 5
#: Seconds between attempts to open the metadata connection again: the first, then the longest.
RETRY_FIRST, RETRY_MAX = 0.5, 5.0
#: Prefix of the ``DatabaseTarget.name`` of a routed database (pool keys, SHOW POOLS).
TARGET_PREFIX = "server:"


class Fleet:
    """Admin connections and the live routing table of one proxy process (see the module docstring).

    ``routes``: ``{pg_name: server name}`` as last read; ``loaded``: True once the table was read;
    ``last_read``: ``time.monotonic()`` of the last read. Implements ``engine.metadata.Fleet``.
    """

    def __init__(self, cfg: Config, app: ProxyApp | None = None):
        self.cfg = cfg
        self.app = app
        self.entries: dict[str, ServerEntry] = dict(cfg.servers)
        self.servers: dict[str, float] = {n: e.weight for n, e in self.entries.items()}
        self.metadata_server: str = cfg.metadata_server or next(iter(self.entries))
        self.metadata_database: str = cfg.metadata_database
        self.routes: dict[str, str] = {}
        #: ``{pg_name: server}`` of the databases a MOVE is copying (``proxy.routing.move``)
        self.moving: dict[str, str] = {}
        self.loaded = False
        self.last_read = 0.0
        self.reads = 0
        self._targets = {n: self._target(e) for n, e in self.entries.items()}
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self._ready = asyncio.Event()

    @staticmethod
    def _target(entry: ServerEntry) -> DatabaseTarget:
        # dbname/user/password None: the client's database, user and credentials (pass-through)
        return DatabaseTarget(name=TARGET_PREFIX + entry.name, host=entry.host, port=entry.port,
                              pool_size=entry.pool_size, pool_mode=entry.pool_mode)

    # -- routing ----------------------------------------------------------------------------------
    def target_for(self, dbname: str) -> DatabaseTarget | None:
        """The target of ``dbname`` by the routing table: the metadata database's server for the
        metadata database, the named server for a routed database, else None (``[databases]``
        decides). A route naming a server this proxy has no ``[servers]`` entry for is ignored
        (logged once per read)."""
        if dbname == self.metadata_database:
            return self._targets[self.metadata_server]
        server = self.routes.get(dbname)
        return self._targets.get(server) if server is not None else None

    def route_changed(self, pg_name: str, server: str | None) -> None:
        """Learn (``server``) or forget (None) the route of ``pg_name`` at once, ahead of the
        notification (which then changes nothing). A read of the table that finds a route gone or
        moved closes this proxy's idle connections to its old place (``close_idle``)."""
        if server is None:
            self.routes.pop(pg_name, None)
        else:
            self.routes[pg_name] = server

    def moving_changed(self, pg_name: str, dest: str | None) -> None:
        """A MOVE of ``pg_name`` to ``dest`` began (this proxy pauses the database:
        ``Operations.begin_move``) or ended (None: it resumes). Idempotent."""
        ops = getattr(self.app, "ops", None) if self.app is not None else None
        if dest is None:
            if self.moving.pop(pg_name, None) is not None and ops is not None:
                ops.end_move(pg_name)
        elif self.moving.get(pg_name) != dest:
            self.moving[pg_name] = dest
            if ops is not None:
                ops.begin_move(pg_name, dest)

    def close_idle(self, server: str, dbname: str) -> None:
        """Close this proxy's idle pooled connections to ``dbname`` on ``server`` (before it is
        dropped, or once its route is gone or moved), and forget its pools that are then empty."""
        entry = self.entries.get(server)
        if entry is not None and self.app is not None:
            self.app.close_idle_to(entry.host, entry.port, dbname)
            for key, pool in list(self.app.pools.items()):  # and forget its pools that are now empty
                if key[0] == TARGET_PREFIX + server and key[1] == dbname:
                    self.app._forget_unused_pool(key, pool)

    def show_rows(self) -> list[tuple]:
        """Rows of the admin console's SHOW ROUTES: one per ``[servers]`` entry (``database`` NULL,
        ``source`` ``servers``, or ``metadata`` for the metadata server with the metadata database),
        then one per routed database (``source`` ``routes``; host and port NULL when this proxy has
        no entry for its server)."""
        rows: list[tuple] = []
        for name, e in self.entries.items():
            meta = name == self.metadata_server
            rows.append((self.metadata_database if meta else None, name, e.host, e.port, f"{e.weight:g}",
                         "metadata" if meta else "servers"))
        for db, server in sorted(self.routes.items()):
            e = self.entries.get(server)
            rows.append((db, server, e.host if e else None, e.port if e else None, None, "routes"))
        return rows

    # -- connections ------------------------------------------------------------------------------
    def _kwargs(self, entry: ServerEntry, dbname: str, user: str, password: str | None) -> dict[str, Any]:
        cfg = self.cfg
        kw: dict[str, Any] = {"host": entry.host, "port": entry.port, "dbname": dbname, "user": user,
                              "sslmode": cfg.server_tls_sslmode, "connect_timeout": ADMIN_CONNECT_TIMEOUT,
                              "application_name": "iasql-proxy admin"}
        if password is not None:
            kw["password"] = password
        if cfg.server_tls_ca_file is not None:
            kw["sslrootcert"] = str(cfg.server_tls_ca_file)
        return kw

    async def _open(self, server: str, dbname: str | None = None, *, autocommit: bool) -> Any:
        import psycopg

        entry = self.entries[server]
        kw = self._kwargs(entry, dbname or entry.dbname, entry.user, entry.password)
        return await asyncio.wait_for(psycopg.AsyncConnection.connect(autocommit=autocommit, **kw),
                                      ADMIN_CONNECT_TIMEOUT + 1)

    @contextlib.asynccontextmanager
    async def admin(self, server: str) -> AsyncIterator[Any]:
        """An autocommit psycopg connection to ``server``'s admin database as its admin role,
        closed when the block ends. Raises psycopg.OperationalError when unreachable."""
        conn = await self._open(server, autocommit=True)
        try:
            yield conn
        finally:
            await conn.close()

    @contextlib.asynccontextmanager
    async def metadata(self) -> AsyncIterator[Any]:
        """A psycopg connection to the metadata database as the admin role, in a transaction that
        commits when the block ends normally (rolls back otherwise). Raises
        ``engine.rpc.EngineError('08006')`` when the metadata database cannot be reached."""
        import psycopg

        from engine.rpc import EngineError

        try:
            conn = await self._open(self.metadata_server, self.metadata_database, autocommit=False)
        except (TimeoutError, psycopg.Error, OSError) as e:
            raise EngineError("08006", f'the metadata database "{self.metadata_database}" on server '
                                       f"{self.metadata_server} cannot be reached: {_first_line(e)}") from None
        try:
            yield conn
            await conn.commit()
        except BaseException:
            with contextlib.suppress(Exception):
                await conn.rollback()
            raise
        finally:
            await conn.close()

    async def connect_as(self, server: str, dbname: str, user: str, password: str) -> Any:
        """A psycopg connection (autocommit off) to ``dbname`` on ``server`` as ``user``."""
        import psycopg

        kw = self._kwargs(self.entries[server], dbname, user, password)
        return await asyncio.wait_for(psycopg.AsyncConnection.connect(autocommit=False, **kw),
                                      ADMIN_CONNECT_TIMEOUT + 1)

    async def health(self) -> list[str]:
        """Problems found by a ``SELECT 1`` on every server's admin connection and on the metadata
        database, all at once (each at most ADMIN_CONNECT_TIMEOUT seconds); empty when all answer."""

        async def check(server: str, dbname: str | None) -> str | None:
            try:
                conn = await self._open(server, dbname, autocommit=True)
                try:
                    await conn.execute("SELECT 1")
                finally:
                    await conn.close()
            except Exception as e:  # noqa: BLE001 -- any failure is a health problem to report
                where = f'metadata database "{dbname}" on server {server}' if dbname else f"server {server}"
                return f"{where}: {_first_line(e)}"
            return None

        checks = [check(s, None) for s in self.entries] + [check(self.metadata_server, self.metadata_database)]
        return [p for p in await asyncio.gather(*checks) if p]

    # -- following the routing table --------------------------------------------------------------
    def start(self) -> None:
        """Start following the routing table (a task of its own until ``stop``)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._follow())

    async def wait_loaded(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the first read of the table; True when it happened."""
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
            return True
        except TimeoutError:
            return False

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop following (the last table read stays in force): cancel the task and wait up to
        ``timeout`` seconds for it to close its connection."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task], timeout=timeout)

    async def _follow(self) -> None:
        import psycopg

        from engine.metadata import ROUTE_CHANNEL, ensure_metadata_database

        delay = RETRY_FIRST
        ensured = False
        while True:
            conn = None
            try:
                if not ensured:
                    async with self.admin(self.metadata_server) as adm:
                        created = await ensure_metadata_database(
                            adm, lambda name: self._open(self.metadata_server, name, autocommit=False),
                            self.metadata_database)
                    if created:
                        log.info("event=metadata_database_created database=%s server=%s",
                                 self.metadata_database, self.metadata_server)
                    ensured = True
                conn = await self._open(self.metadata_server, self.metadata_database, autocommit=True)
                await conn.execute(f"LISTEN {ROUTE_CHANNEL}")
                await self._read(conn)
                log.info("event=routes_following server=%s database=%s routes=%d", self.metadata_server,
                         self.metadata_database, len(self.routes))
                delay = RETRY_FIRST
                interval = max(self.cfg.route_refresh_interval, 0.1)
                while True:
                    changed = False
                    deadline = time.monotonic() + interval
                    async for _ in conn.notifies(timeout=max(deadline - time.monotonic(), 0.01), stop_after=1):
                        changed = True
                    if changed:  # take every notification that came with it, then one read
                        async for _ in conn.notifies(timeout=0.01):
                            pass
                    await self._read(conn)
            except asyncio.CancelledError:
                raise
            except (TimeoutError, psycopg.Error, OSError) as e:
                log.warning("event=routes_unavailable server=%s database=%s error=%r retry_in=%.1f routes_kept=%d",
                            self.metadata_server, self.metadata_database, _first_line(e), delay, len(self.routes))
            except Exception:  # never let following stop: log and retry
                log.exception("event=routes_follow_failed")
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)

    async def _read(self, conn: Any) -> None:
        rows = await (await conn.execute("SELECT pg_name, server, moving_to FROM public.iasql_route")).fetchall()
        routes = {name: server for name, server, _ in rows}
        moving = {name: to for name, _, to in rows if to is not None}
        unknown = sorted({s for s in routes.values() if s not in self.entries})
        if unknown and routes != self.routes:
            log.warning("event=routes_unknown_server servers=%s reason='no [servers] entry of that name here'",
                        ",".join(unknown))
        for name, server in self.routes.items():  # gone, or moved: idle connections to the old place close
            if routes.get(name) != server:
                self.close_idle(server, name)
        self.routes = routes
        for name in [n for n in self.moving if n not in moving]:  # a move ended (or was undone)
            self.moving_changed(name, None)
        for name, to in moving.items():  # a move began: every proxy pauses the database
            self.moving_changed(name, to)
        self.loaded = True
        self.last_read = time.monotonic()
        self.reads += 1
        self._ready.set()


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines() or [type(e).__name__])[0][:300] if text else type(e).__name__
