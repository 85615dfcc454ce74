"""Operations of a running proxy: reload, pause/resume, reconnect, kill, disable/enable, graceful
and immediate shutdown.

``Operations(app)`` is installed by ``proxy.admin.install`` as ``app.ops``. It wraps two
ProxyApp methods on the instance (no per-message work):

- ``app.lease``: measures the wait for a server connection (the ``pool_wait_seconds`` histogram
  and SHOW STATS' wait time) and holds clients of paused databases until RESUME;
- ``app.session_ended``: keeps an ending session's counters in the per-database totals.

Reload (SIGHUP or the console's RELOAD) re-reads the config file, the TLS certificate/key and the
auth_file; anything that fails to load or validate leaves the running configuration untouched and
is logged as ``event=reload_failed``. Connected clients keep their connections. New sessions use
the new configuration; pools get the new sizes (growing wakes waiting clients, shrinking closes
idle connections beyond the size); a database entry whose host, port, dbname, user or password
changed has its idle server connections closed. ``listen_addr``, ``listen_port``, ``workers``,
``metrics_*`` and ``[engine]`` need a restart (logged when they changed).

Graceful shutdown (SIGTERM, ``SHUTDOWN WAIT_FOR_SERVERS``): stop accepting, close every client
that is between statements (after a FATAL 57P01, as Postgres does on shutdown), let clients in
the middle of a statement, an open transaction block, an extended-protocol batch or an iasql_* call
finish and then close them, for at most ``shutdown_timeout`` seconds. Engine calls still running
then are asked to stop at their next safe point (the engine rolls back its own transaction there;
see engine docs) and get a few more seconds before everything is closed. SIGINT and the console's
``SHUTDOWN`` close at once; a second SIGTERM during a graceful shutdown does too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from proxy.admin.journal import EngineJournal
from proxy.config import Config, ConfigError, load_auth_file, load_config
from proxy.metrics import Metrics

if TYPE_CHECKING:
    from proxy.server import ProxyApp

log = logging.getLogger("iasql_proxy.ops")

#: Keys that only take effect when the proxy restarts.
RESTART_KEYS = ("listen_addr", "listen_port", "workers", "metrics_port", "metrics_addr", "engine", "http_listen_addr",
                "http_listen_port", "http_allowed_origins", "http_max_message_size", "http_max_runs_per_user",
                "http_idle_timeout",  # the HTTPS endpoint keeps the configuration it started with
                # scale out (issue 19): the fleet is built once, at start
                "servers", "metadata_server", "metadata_database", "route_refresh_interval")
#: Seconds engine calls get to stop after being cancelled at the end of a graceful shutdown.
ENGINE_STOP_GRACE = 10.0
#: How often the graceful shutdown looks at clients.
DRAIN_POLL = 0.05
_OPEN_BATCH = frozenset(map(ord, "PBDECH"))


class Operations:
    """Reload, pause/resume and shutdown for ``app``; also owns ``metrics`` and ``journal``."""

    def __init__(self, app: "ProxyApp"):
        self.app = app
        self.waiting: dict[Any, float] = {}
        self.metrics = Metrics(app, self.waiting)
        self.journal = EngineJournal(on_end=self.metrics.engine_call_ended)
        self.paused_all = False
        self.paused: set[str] = set()
        self.disabled: set[str] = set()
        #: databases paused by a MOVE (resumed when it ends, ``end_move``)
        self.moves: set[str] = set()
        #: server connections RECONNECT or KILL marked, until they are closed (WAIT_CLOSE)
        self.close_needed: set[Any] = set()
        self._resumed = asyncio.Event()
        self.shutdown_requested = asyncio.Event()
        self.graceful = True
        self.draining = False
        self.reloads = 0
        self._drain_task: asyncio.Task | None = None
        self._lease = app.lease
        self._session_ended = app.session_ended
        app.lease = self._timed_lease  # type: ignore[method-assign]
        app.session_ended = self._retire  # type: ignore[method-assign]

    # -- wrappers -----------------------------------------------------------------------------
    async def _timed_lease(self, session: Any, *args: Any, **kwargs: Any) -> Any:
        t0 = time.monotonic()
        self.waiting[session] = t0
        try:
            if self.paused_all or self.paused:
                await self._wait_resumed(session)
            result = await self._lease(session, *args, **kwargs)
        finally:
            self.waiting.pop(session, None)
        self.metrics.observe_wait(session, time.monotonic() - t0)
        return result

    def _retire(self, session: Any) -> None:
        was_client = session in self.app.clients
        self._session_ended(session)
        if was_client:
            self.metrics.retire(session)

    # -- pause / resume -----------------------------------------------------------------------
    def is_paused(self, session: Any) -> bool:
        """True when ``session``'s database (the name it asked for, or its entry's) is paused."""
        if self.paused_all:
            return True
        target = getattr(session, "target", None)
        return session.database in self.paused or (target is not None and target.name in self.paused)

    async def _wait_resumed(self, session: Any) -> None:
        while self.is_paused(session):
            ev = self._resumed
            await ev.wait()

    def _matches(self, db: str | None, tname: str, dbname: str) -> bool:
        return db is None or db == tname or db == dbname

    def server_count(self, db: str | None) -> int:
        """Open or opening server connections of pools of ``db`` (None: all)."""
        return sum(pool.total for (tname, dbname, _), pool in list(self.app.pools.items())
                   if self._matches(db, tname, dbname))

    async def pause(self, db: str | None) -> None:
        """PAUSE [db]: new leases wait; idle server connections close; returns when the database
        has no server connection left (in session pooling: when its clients have left)."""
        if db is None:
            self.paused_all = True
        else:
            self.paused.add(db)
        log.info("event=pause database=%s", db or "*")
        while True:
            for (tname, dbname, _), pool in list(self.app.pools.items()):
                if self._matches(db, tname, dbname):
                    while pool.idle:
                        pool.idle.pop().close()
            if self.server_count(db) == 0:
                return
            await asyncio.sleep(DRAIN_POLL)

    def resume(self, db: str | None) -> bool:
        """RESUME [db]; False when that was not paused."""
        if db is None:
            if not (self.paused_all or self.paused):
                return False
            self.paused_all = False
            self.paused.clear()
        else:
            if db not in self.paused:
                return False
            self.paused.discard(db)
        log.info("event=resume database=%s", db or "*")
        ev, self._resumed = self._resumed, asyncio.Event()
        ev.set()
        return True

    # -- reconnect / kill / disable (PgBouncer's console commands) ------------------------------
    def _servers_of(self, db: str | None) -> list[Any]:
        """Open server connections (idle and in use) of the pools of ``db`` (None: all)."""
        out: list[Any] = []
        for (tname, dbname, _), pool in list(self.app.pools.items()):
            if self._matches(db, tname, dbname):
                out.extend(pool.idle)
                out.extend(pool.active)
        return out

    def reconnect(self, db: str | None) -> int:
        """RECONNECT [db]: every open server connection of ``db`` (None: all) is closed once it is
        released (transaction pooling: at the end of its transaction; session pooling: when its
        client leaves), idle ones at once; new connections are opened as needed. Returns how
        many were marked. Marking sets ``broken``, which the pools already honour on release
        (no per-message cost)."""
        marked = 0
        for (tname, dbname, _), pool in list(self.app.pools.items()):
            if not self._matches(db, tname, dbname):
                continue
            while pool.idle:
                pool.idle.pop().close()
                marked += 1
            for conn in list(pool.active):
                if not conn.broken:
                    conn.broken = True
                    self.close_needed.add(conn)
                    marked += 1
        log.info("event=reconnect database=%s marked=%d", db or "*", marked)
        return marked

    async def wait_close(self, db: str | None) -> None:
        """WAIT_CLOSE [db]: return once no server connection of ``db`` (None: all) that RECONNECT
        (or KILL) marked is still open."""
        while True:
            live = [c for c in self.close_needed if not c.closed]
            self.close_needed = set(live)
            mine = set(map(id, self._servers_of(db)))
            if not any(id(c) in mine for c in live):
                return
            await asyncio.sleep(DRAIN_POLL)

    def kill(self, db: str) -> int:
        """KILL db: pause ``db`` (new clients wait until RESUME, as PgBouncer's KILL does), close
        every client of it at once with PgBouncer's ``FATAL 08P01 database removed`` and every
        server connection of it (in use ones as their client goes). Returns the clients closed."""
        self.paused.add(db)
        killed = 0
        for session in list(self.app.clients):
            if session.closed or getattr(session, "admin_role", None) is not None:
                continue
            target = getattr(session, "target", None)
            if session.database != db and (target is None or target.name != db):
                continue
            server = getattr(session, "server", None)
            if server is not None:
                server.broken = True  # never reused, whatever state the client leaves it in
            session.fatal("08P01", "database removed")
            killed += 1
        self.reconnect(db)
        log.info("event=kill database=%s clients=%d", db, killed)
        return killed

    # -- MOVE (scale out, proxy.routing.move) ---------------------------------------------------
    def begin_move(self, db: str, dest: str) -> None:
        """A MOVE of ``db`` to server ``dest`` began somewhere in the fleet: new server leases of
        ``db`` wait (transaction pooling: a pause, not an error), its session-pooling clients are
        disconnected with ``FATAL 57P01`` naming the move (a session holds its server connection
        for good), and its server connections close (idle ones now, others when released)."""
        if db not in self.paused:
            self.moves.add(db)
            self.paused.add(db)
        for session in list(self.app.clients):
            if (session.closed or getattr(session, "admin_role", None) is not None or session.database != db
                    or getattr(session, "pool_mode", None) != "session"):
                continue
            server = getattr(session, "server", None)
            if server is not None:
                server.broken = True
            session.fatal("57P01", f'terminating connection because database "{db}" is moving to server '
                                   f'"{dest}"; connect again in a moment')
        self.reconnect(db)
        log.info("event=move_pause database=%s to=%s", db, dest)

    def end_move(self, db: str) -> None:
        """The MOVE of ``db`` ended (done or undone): connected transaction-pooling clients of ``db``
        take the route as it is now for their next leases, and ``db`` resumes."""
        for session in list(self.app.clients):
            if session.closed or session.database != db or getattr(session, "server", None) is not None \
                    or getattr(session, "pool_mode", "session") == "session" or session.target is None:
                continue
            target = self.app.target_for(db)
            if target is not None and target != session.target:
                session.target = target
                session.pool = self.app.pool_for(target, target.dbname or db, target.user or session.user)
        if db in self.moves:
            self.moves.discard(db)
            self.resume(db)
        log.info("event=move_resume database=%s", db)

    def disable(self, db: str) -> None:
        """DISABLE db: new client logins to ``db`` are refused (``FATAL 08P01 database does not
        allow connections: db``, PgBouncer's text); connected clients stay."""
        self.disabled.add(db)
        log.info("event=disable database=%s", db)

    def enable(self, db: str) -> bool:
        """ENABLE db: undo DISABLE; False when ``db`` was not disabled."""
        if db not in self.disabled:
            return False
        self.disabled.discard(db)
        log.info("event=enable database=%s", db)
        return True

    def login_refused(self, session: Any) -> str | None:
        """PgBouncer's refusal text for a new login of ``session`` to a DISABLEd database, or None."""
        if not self.disabled:
            return None
        target = getattr(session, "target", None)
        for name in (session.database, target.name if target is not None else None):
            if name in self.disabled:
                return f"database does not allow connections: {name}"
        return None

    # -- reload -------------------------------------------------------------------------------
    def reload(self) -> str | None:
        """Re-read the configuration; returns None on success, else the error (the old one stays)."""
        from proxy.tls import TLSContexts

        app = self.app
        old: Config = app.cfg
        path = old.config_file
        if path is None:
            msg = "no configuration file to reload (the proxy was started from text)"
            log.error("event=reload_failed error=%r", msg)
            return msg
        try:
            new = load_config(path)
            tls = TLSContexts.build(new)
            auth = load_auth_file(new.auth_file) if new.auth_file else {}
        except ConfigError as e:
            log.error("event=reload_failed file=%s error=%r (keeping the running configuration)", path, str(e))
            return str(e)
        except Exception as e:  # never let a reload take the process down
            log.exception("event=reload_failed file=%s", path)
            return f"{type(e).__name__}: {e}"
        need_restart = [k for k in RESTART_KEYS if getattr(old, k) != getattr(new, k)]
        app.cfg = new
        app.tls = tls
        app._auth_file = auth
        if (old.auth_user, old.auth_query, old.databases) != (new.auth_user, new.auth_query, new.databases):
            for conn in list(app._auth_conns.values()):
                conn.close()
            app._auth_conns.clear()
        resized = self._apply_pools(old, new)
        if app.admin is not None:
            app.admin.database = new.admin_database
        self.reloads += 1
        log.info("event=reload file=%s pools_resized=%d", path, resized)
        if need_restart:
            log.warning("event=reload_needs_restart keys=%s (running with the old values)", ",".join(need_restart))
        return None

    def _apply_pools(self, old: Config, new: Config) -> int:
        resized = 0
        for (tname, _dbname, _user), pool in list(self.app.pools.items()):
            target = new.databases.get(tname)
            size = (target.pool_size if target is not None else None) or new.default_pool_size
            pool.reset_query = new.server_reset_query
            pool.wait_timeout = new.query_wait_timeout
            for attr, value in (("min_size", new.min_pool_size), ("reserve_size", new.reserve_pool_size),
                                ("lifetime", new.server_lifetime), ("idle_timeout", new.server_idle_timeout),
                                ("query_timeout", new.query_timeout), ("login_retry", new.server_login_retry)):
                if hasattr(pool, attr):
                    setattr(pool, attr, value)
            before = old.databases.get(tname)
            if target is None or before is None or _endpoint(before) != _endpoint(target):
                while pool.idle:  # connections to the old place are not reused
                    pool.idle.pop().close()
            if pool.resize(size):
                resized += 1
        return resized

    # -- shutdown -----------------------------------------------------------------------------
    def request_shutdown(self, graceful: bool = True) -> None:
        """Ask the main loop to stop (graceful: drain first). A second request is immediate."""
        if self.shutdown_requested.is_set():
            graceful = False
        self.graceful = graceful
        self.shutdown_requested.set()
        if not graceful and self._drain_task is not None and not self._drain_task.done():
            log.info("event=shutdown mode=immediate reason=second_request")
            self._drain_task.cancel()

    async def run_until_shutdown(self) -> None:
        """Wait for a shutdown request, drain when it is graceful, then stop the app."""
        await self.shutdown_requested.wait()
        if self.graceful:
            log.info("event=shutdown mode=graceful timeout_s=%s", self.app.cfg.shutdown_timeout)
            self._drain_task = asyncio.get_running_loop().create_task(self.drain(self.app.cfg.shutdown_timeout))
            await asyncio.wait([self._drain_task])
        else:
            log.info("event=shutdown mode=immediate")
        await self.app.stop()

    async def drain(self, timeout: float) -> None:
        """Graceful shutdown up to ``timeout`` seconds (see the module docstring)."""
        app = self.app
        self.draining = True
        app.stop_listening()
        deadline = time.monotonic() + timeout
        while True:
            for s in list(app.clients):
                if not _busy(s):
                    _terminate(s)
                else:
                    _close_when_done(s)
            if not app.clients and not self.journal.running:
                log.info("event=shutdown_drained")
                return
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(DRAIN_POLL)
        busy = len(app.clients)
        log.warning("event=shutdown_timeout clients_still_busy=%d engine_calls=%d", busy, len(self.journal.running))
        if self.journal.running:
            interceptor = app.interceptor
            for call in list(self.journal.running):
                if interceptor is not None and call.session is not None and hasattr(interceptor, "cancel"):
                    interceptor.cancel(call.session)
            await self.journal.wait_idle(ENGINE_STOP_GRACE)

    def close(self) -> None:
        """Stop the metrics endpoint."""
        self.metrics.close()


def _endpoint(t: Any) -> tuple:
    return (t.host, t.port, t.dbname, t.user, t.password)


def _busy(session: Any) -> bool:
    """True while a client is in the middle of something a graceful shutdown lets finish."""
    if getattr(session, "admin_role", None) is not None or not session.ready or session.closed:
        return False
    return (session.pending_ready > 0 or session._busy is not None or session.tx_status != b"I"
            or getattr(session, "_last_type", 0) in _OPEN_BATCH)


def _close_when_done(session: Any) -> None:
    """Close ``session`` as soon as the server's ReadyForQuery that ends its work is relayed (so a
    client cannot slip its next statement in between two looks of the drain loop): set as the
    session's ``after_ready`` hook (``proxy.relay.core.ClientCore``) during a graceful shutdown."""
    session.after_ready = _terminate_when_idle


def _terminate_when_idle(session: Any) -> None:
    if not _busy(session):
        _terminate(session)


def _terminate(session: Any) -> None:
    """Close a client as Postgres does on shutdown (FATAL 57P01)."""
    if session.closed:
        return
    if session.ready or getattr(session, "admin_role", None) is not None:
        session.fatal("57P01", "terminating connection due to administrator command")
    else:
        session.close()
