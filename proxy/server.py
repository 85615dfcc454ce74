"""The proxy process: listening sockets, server-wide state, and the entry point ``run(cfg)``.

``ProxyApp`` owns what is shared between client sessions: the configuration, TLS contexts, the
pools, the cancel-key map and counters. Per-connection state lives in ``ClientSession``.
Listening is done with an accept loop rather than ``create_server`` so that, when client TLS is
on, the first byte can be peeked: 0x16 (a TLS record) means PostgreSQL 17 direct TLS
(``sslnegotiation=direct``, ALPN ``postgresql``); anything else is the classic SSLRequest path.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import signal
import socket
import sys
import time
from pathlib import Path
from collections.abc import Coroutine
from typing import Any

from proxy import logs
from proxy.auth import Secret, parse_secret
from proxy.backend.connection import Credentials, ServerConnection, ServerError, send_cancel
from proxy.backend.pool import Pool
from proxy.config import Config, DatabaseTarget, load_auth_file
from proxy.frontend.session import ClientSession
from proxy.memory import MemoryReturn
from proxy.relay.core import compiled as relay_compiled
from proxy.tls import TLSContexts
from proxy.wire.sqlstate import INVALID_CATALOG_NAME

log = logging.getLogger("iasql_proxy")


#: How long (seconds) a departed client's cancel key still reaches the statement it left running.
LEFT_BEHIND_CANCEL_SECONDS = 600.0


class ListenError(OSError):
    """A listening address cannot be bound (in use, not local, not permitted). The message names
    the address and the reason; ``iasql-proxy`` prints it as one line and exits with status 2."""


class _LeftBehind:
    """Stands in the cancel-key table for a session whose client left while its statement ran:
    what a CancelRequest needs (the server's target and BackendKeyData), not the connection."""

    __slots__ = ("target", "backend_key")

    def __init__(self, server: ServerConnection):
        self.target = server.target
        self.backend_key = server.backend_key


class ProxyApp:
    """Server-wide state for one configuration. ``start()`` opens the listeners; ``stop()`` closes all.

    Attributes: ``cfg``; ``tls`` (TLSContexts); ``pools`` by (target name, dbname, user);
    ``clients`` (live sessions); ``interceptor`` (None, or an object with ``async handle(session)``
    that answers messages containing ``iasql_``); ``port`` (the bound port, useful with port 0).
    """

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.tls = TLSContexts.build(cfg)
        self.pools: dict[tuple[str, str, str], Pool] = {}
        self.clients: set[ClientSession] = set()
        self.admitted = 0
        self.keys: dict[tuple[int, int], ClientSession | _LeftBehind] = {}
        self.interceptor = None
        self.admin = None  # the admin console (proxy.admin), answering its virtual database in-process
        self.record_dir = cfg.record_dir  # where session traces go (proxy.trace), None = off
        self.ops = None  # proxy.admin.ops.Operations: reload, pause, shutdown, metrics (set by serve)
        self.http = None  # proxy.http.server.HttpEndpoint: the console and /run (http_listen_port)
        self.auth_failures = 0
        self.tls_failures = 0
        self._auth_file: dict[str, str] = load_auth_file(cfg.auth_file) if cfg.auth_file else {}
        self._auth_conns: dict[tuple[str, str], ServerConnection] = {}
        self._auth_lock = asyncio.Lock()
        self._listeners: list[socket.socket] = []
        self._accept_tasks: list[asyncio.Task] = []
        self._servers: list[asyncio.AbstractServer] = []
        self.memory = MemoryReturn()
        self._tasks: set[asyncio.Task] = set()
        self.port: int | None = None
        # -- scale out (issue 19): the routing table, with [servers] (proxy.routing.fleet) --
        self.fleet = None
        if cfg.servers:
            from proxy.routing.fleet import Fleet

            self.fleet = Fleet(cfg, self)

    # -- listening ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Bind ``listen_addr``:``listen_port`` (comma-separated addresses, ``*`` = all) and accept."""
        loop = asyncio.get_running_loop()
        addrs = [a.strip() for a in self.cfg.listen_addr.split(",") if a.strip()]
        port = self.cfg.listen_port
        for addr in addrs:
            host = None if addr == "*" else addr
            for family, stype, proto, _, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                                          flags=socket.AI_PASSIVE):
                s = socket.socket(family, stype, proto)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if self.cfg.workers > 1:  # the workers share the port; the kernel spreads connections
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                where = sockaddr if self.port is None or port else (sockaddr[0], self.port, *sockaddr[2:])
                try:
                    s.bind(where)
                except OSError as e:
                    s.close()
                    self.stop_listening()
                    raise ListenError(e.errno, f"cannot listen on {addr}:{where[1]} "
                                               f"(listen_addr, listen_port): {e.strerror}") from None
                s.listen(1024)
                s.setblocking(False)
                if self.port is None:
                    self.port = s.getsockname()[1]
                    if port == 0:
                        port = self.port
                self._listeners.append(s)
                if self.tls.client is None:
                    # no TLS to detect: the loop accepts natively (uvloop sets TCP_NODELAY)
                    self._servers.append(await loop.create_server(lambda: ClientSession(self), sock=s,
                                                                  backlog=1024))
                else:
                    self._accept_tasks.append(loop.create_task(self._accept_loop(s)))
        self._accept_tasks.append(loop.create_task(self._maintain_pools()))
        if self.fleet is not None:  # scale out (issue 19): follow the routing table
            self.fleet.start()
        log.info("event=listening addr=%s port=%s tls=%s pool_mode=%s relay=%s", self.cfg.listen_addr, self.port,
                 self.cfg.client_tls_sslmode, self.cfg.pool_mode, "compiled" if relay_compiled else "python")
        from proxy.config import DEPRECATED_ENGINE_KEYS

        for key in self.cfg.engine.deprecated_keys:
            log.warning("event=deprecated_key key=engine.%s reason=%r", key, DEPRECATED_ENGINE_KEYS[key])

    async def _maintain_pools(self) -> None:
        """Once a second: pool housekeeping (idle timeout, lifetime, min_pool_size), the client
        timeouts (``query_timeout``, ``idle_transaction_timeout``, ``client_idle_timeout``:
        ``ClientSession.check_timeouts``), and memory given back to the system after many
        clients left (``proxy.memory``)."""
        while True:
            await asyncio.sleep(1.0)
            self.memory.tick(len(self.clients))
            cfg = self.cfg
            if cfg.query_timeout > 0 or cfg.idle_transaction_timeout > 0 or cfg.client_idle_timeout > 0:
                now = time.monotonic()
                for session in list(self.clients):
                    try:
                        session.check_timeouts(now, cfg)
                    except Exception:  # never let housekeeping stop
                        log.exception("event=client_timeout_check_failed client=%s", session.peer)
            for pool in list(self.pools.values()):
                try:
                    await pool.maintain()
                except Exception:  # never let housekeeping stop
                    log.exception("event=pool_maintenance_failed pool=%s", pool.name)

    async def _accept_loop(self, lsock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, _addr = await loop.sock_accept(lsock)
            except asyncio.CancelledError:
                raise
            except OSError as e:  # EMFILE and friends: back off, keep serving
                log.warning("event=accept_failed error=%r", str(e))
                await asyncio.sleep(0.1)
                continue
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            if self.tls.client is None:
                try:
                    await loop.connect_accepted_socket(lambda: ClientSession(self), sock)
                except OSError:
                    sock.close()
            else:
                try:  # the client's first byte is usually there already: decide without waiting
                    first = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
                except BlockingIOError:
                    first = None
                except OSError:
                    sock.close()
                    continue
                if first == b"":  # gone before saying anything
                    sock.close()
                elif first is None or first == b"\x16":
                    loop.create_task(self._accept_tls_capable(sock, first))
                else:  # SSLRequest or StartupMessage: TLS, if any, starts inside the session
                    try:
                        await loop.connect_accepted_socket(lambda: ClientSession(self), sock)
                    except OSError:
                        sock.close()

    async def _accept_tls_capable(self, sock: socket.socket, first: bytes | None = None) -> None:
        """Serve an accepted socket whose first byte (``first``, peeked) is a TLS record (direct
        TLS, PostgreSQL 17 ``sslnegotiation=direct``) or not known yet (waited for, at most
        ``client_login_timeout`` seconds)."""
        loop = asyncio.get_running_loop()
        try:
            if first is None:
                first = await asyncio.wait_for(self._peek(sock), self.cfg.client_login_timeout)
            if first == b"\x16":
                await loop.connect_accepted_socket(lambda: ClientSession(self, direct_tls=True), sock,
                                                   ssl=self.tls.client,
                                                   ssl_handshake_timeout=self.cfg.client_login_timeout)
            else:
                await loop.connect_accepted_socket(lambda: ClientSession(self), sock)
        except (OSError, asyncio.TimeoutError, ConnectionError) as e:
            if isinstance(e, OSError) and "SSL" in type(e).__name__:
                self.tls_failures += 1
            sock.close()

    @staticmethod
    async def _peek(sock: socket.socket) -> bytes:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        fd = sock.fileno()
        loop.add_reader(fd, lambda: fut.done() or fut.set_result(None))
        try:
            await fut
        finally:
            loop.remove_reader(fd)
        return sock.recv(1, socket.MSG_PEEK)

    def stop_listening(self) -> None:
        """Stop accepting connections (graceful shutdown); connected clients stay."""
        if self.http is not None:
            self.http.stop_accepting()
        for t in self._accept_tasks:
            t.cancel()
        for srv in self._servers:
            srv.close()
        for s in self._listeners:
            s.close()

    async def stop(self) -> None:
        """Close listeners, clients and server connections."""
        self.stop_listening()
        if self.http is not None:
            await self.http.stop()
        if self.ops is not None:
            self.ops.close()
        for c in list(self.clients):
            c.close()
        for p in self.pools.values():
            p.close_all()
        for c in self._auth_conns.values():
            c.close()
        if self.fleet is not None:  # scale out (issue 19)
            await self.fleet.stop()

    def target_for(self, dbname: str) -> DatabaseTarget | None:
        """Where clients of database ``dbname`` go, decided at login: the routing table (scale out,
        ``proxy.routing.fleet``, when ``[servers]`` is configured), else ``[databases]`` (its own
        entry, else ``*``), else None (``3D000 database "x" does not exist``)."""
        if self.fleet is not None:
            target = self.fleet.target_for(dbname)
            if target is not None:
                return target
        return self.cfg.target_for(dbname)

    # -- sessions -----------------------------------------------------------------------------
    def new_recorder(self, session: ClientSession):
        """A trace recorder for ``session`` (``proxy.trace.Recorder``), when ``record_dir`` is set."""
        from proxy.trace import Recorder  # only imported when tracing is on

        return Recorder.for_session(self.record_dir, session)

    def admit(self, session: ClientSession) -> bool:
        """Count a logging-in client against ``max_client_conn``; False when over the limit."""
        if self.admitted >= self.cfg.max_client_conn:
            return False
        self.admitted += 1
        session.counted = True
        return True

    def session_ended(self, session: ClientSession) -> None:
        """Forget a closed session (its cancel key and its place under max_client_conn)."""
        self.clients.discard(session)
        if session.counted:
            self.admitted -= 1
            session.counted = False
        if session.key is not None and self.keys.get(session.key) is session:
            del self.keys[session.key]

    def keep_cancel_key(self, key: tuple[int, int] | None, server: ServerConnection) -> None:
        """The client of ``key`` left while ``server`` still worked for it (the connection is being
        closed, its backend runs on): for ``LEFT_BEHIND_CANCEL_SECONDS`` a CancelRequest with that
        key still reaches that backend, as it would reach a Postgres backend until it exits."""
        if key is None or server.backend_key is None:
            return
        stand_in = _LeftBehind(server)
        self.keys[key] = stand_in
        asyncio.get_running_loop().call_later(LEFT_BEHIND_CANCEL_SECONDS, self._forget_left_behind, key, stand_in)

    def _forget_left_behind(self, key: tuple[int, int], stand_in: "_LeftBehind") -> None:
        if self.keys.get(key) is stand_in:
            del self.keys[key]

    def spawn(self, coro) -> asyncio.Task:
        """Run ``coro`` as a task the app keeps a reference to until it ends."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def register_key(self, session: ClientSession) -> tuple[int, int]:
        """A fresh (process id, secret key) for BackendKeyData, mapped to ``session``."""
        while True:
            raw = int.from_bytes(secrets.token_bytes(8), "big")  # one system call for both
            key = ((raw >> 33) or 1, (raw & 0xFFFFFFFF) - (1 << 31))
            if key not in self.keys:
                self.keys[key] = session
                return key

    async def cancel(self, pid: int, secret: int) -> None:
        """Handle a CancelRequest: forward it to the server running that client's statement; an
        unknown key is ignored silently, as Postgres does."""
        session = self.keys.get((pid, secret))
        if session is None:
            return
        if isinstance(session, _LeftBehind):
            await send_cancel(session.target, session.backend_key, self.cfg.cancel_wait_timeout)
            return
        if self.interceptor is not None and self.interceptor.cancel(session):
            return  # an iasql_* call was running between statements: it stops at its next safe point
        server = session.server
        if server is not None:
            await self.cancel_server(server)

    async def cancel_server(self, server: ServerConnection) -> None:
        """Send CancelRequest for ``server``'s backend (given up after ``cancel_wait_timeout``)."""
        if server.backend_key is not None:
            await send_cancel(server.target, server.backend_key, self.cfg.cancel_wait_timeout)

    # -- servers ------------------------------------------------------------------------------
    def pool_for(self, target: DatabaseTarget, dbname: str, user: str) -> Pool:
        """The pool of (target, dbname, user), created on first use."""
        key = (target.name, dbname, user)
        pool = self.pools.get(key)
        if pool is None:
            cfg = self.cfg
            pool = Pool(f"{dbname}/{user}", target.pool_size or cfg.default_pool_size,
                        cfg.server_reset_query, cfg.query_wait_timeout, min_size=cfg.min_pool_size,
                        reserve_size=cfg.reserve_pool_size,
                        reserve_timeout=getattr(cfg, "reserve_pool_timeout", 5.0),
                        lifetime=cfg.server_lifetime, idle_timeout=cfg.server_idle_timeout,
                        query_timeout=cfg.query_timeout, login_retry=cfg.server_login_retry)
            self.pools[key] = pool
        return pool

    def close_idle_to(self, host: str, port: int, dbname: str) -> int:
        """Close every idle pooled connection to database ``dbname`` on the server ``host``:``port``
        (all users' pools), as ``DROP DATABASE`` needs (``proxy.router.drop_database``); returns
        how many were closed. Connections in use are left alone."""
        closed = 0
        for (_, name, _), pool in list(self.pools.items()):
            if name != dbname:
                continue
            for conn in list(pool.idle):
                if conn.target.host == host and conn.target.port == port:
                    pool.idle.remove(conn)
                    conn.close()
                    closed += 1
        return closed

    async def lease(self, session: ClientSession, creds: Credentials,
                    login_deadline: float | None = None) -> tuple[ServerConnection, Pool]:
        """A server connection for ``session`` (session pooling). Raises PoolTimeout, ServerError, AuthFailed.
        ``login_deadline``: see ``Pool.acquire`` (a client that is still logging in).

        When the server refuses the database (3D000, it does not exist) the pool made for it is
        forgotten again if nothing else uses it, so SHOW POOLS lists no pool for a typo.
        """
        target = session.target
        user = target.user or session.user
        dbname = target.dbname or session.database
        pool = self.pool_for(target, dbname, user)
        params = session.params

        async def opener() -> ServerConnection:
            return await ServerConnection.open(target, user, dbname, params, tls_mode=self.cfg.server_tls_sslmode,
                                               tls_context=self.tls.server, credentials=creds,
                                               timeout=self.cfg.server_connect_timeout)

        try:
            conn = await pool.acquire(frozenset(params.items()), opener,
                                      started=getattr(session, "wait_started", None), login_deadline=login_deadline)
        except ServerError as e:
            if e.sqlstate == INVALID_CATALOG_NAME:
                self._forget_unused_pool((target.name, dbname, user), pool)
            raise
        return conn, pool

    def _forget_unused_pool(self, key: tuple[str, str, str], pool: Pool) -> None:
        """Drop ``pool`` from ``pools`` when it has no connection, no opening one and no waiter."""
        if self.pools.get(key) is pool and not (pool.total or pool.waiters or pool.queued):
            del self.pools[key]

    async def lookup_secret(self, user: str, target: DatabaseTarget) -> Secret | None:
        """The user's secret: from ``auth_file``, else by ``auth_query`` run as ``auth_user`` on the
        target database, else None (the login then fails as a wrong password would). Raises
        ClientError 08006 (``could not connect to server host:port: ...``, DETAIL naming the
        server) when ``auth_query``'s server cannot be reached."""
        raw = self._auth_file.get(user)
        if raw is None and self.cfg.auth_user:
            raw = await self._auth_query(user, target)
        if raw is None:
            return None
        try:
            return parse_secret(raw)
        except ValueError:
            log.warning("event=bad_secret user=%s", user)
            return None

    async def _auth_query(self, user: str, target: DatabaseTarget) -> str | None:
        auth_user = self.cfg.auth_user
        dbname = target.dbname or "postgres"
        key = (target.name, dbname)
        async with self._auth_lock:
            for attempt in range(2):
                conn = self._auth_conns.get(key)
                try:
                    if conn is None or conn.closed:
                        secret = self._auth_file.get(auth_user)
                        creds = Credentials(password=target.password) if target.password else (
                            Credentials(password=secret) if secret and not secret.startswith(("md5", "SCRAM"))
                            else Credentials(secret=parse_secret(secret) if secret else None))
                        conn = await ServerConnection.open(target, auth_user, dbname, {}, tls_mode=self.cfg.server_tls_sslmode,
                                                           tls_context=self.tls.server, credentials=creds,
                                                           timeout=self.cfg.server_connect_timeout)
                        self._auth_conns[key] = conn
                    rows = await conn.extended_query(self.cfg.auth_query, [user])
                except (ServerError, OSError) as e:
                    self._auth_conns.pop(key, None)
                    if attempt:
                        log.warning("event=auth_query_failed user=%s error=%r", user, str(e))
                        if isinstance(e, ServerError) and e.reason is not None:
                            # the server cannot be reached (scale out, issue 19): say so, rather
                            # than failing as a wrong password would
                            from proxy.frontend.login import ClientError

                            raise ClientError(e.sqlstate, e.message, detail=_where(target)) from None
                        return None
                    continue
                except Exception as e:
                    log.warning("event=auth_query_failed user=%s error=%r", user, str(e))
                    self._auth_conns.pop(key, None)
                    return None
                if not rows or len(rows[0]) < 2 or rows[0][1] is None:
                    return None
                return rows[0][1].decode()
        return None


def _where(target: DatabaseTarget) -> str:
    """The DETAIL of a login that failed because ``target``'s server cannot be reached."""
    if target.name.startswith("server:"):  # a routed database (proxy.routing.fleet)
        return (f"The database is on server {target.name[7:]} ([servers]); databases on other servers "
                "are not affected.")
    return f"[databases] entry {target.name!r}."


#: Seconds a thread may hold the GIL while another waits for it (``sys.setswitchinterval``).
GIL_SWITCH_INTERVAL = 0.001


async def serve(cfg: Config, attach=None) -> ProxyApp:
    """Start a proxy for ``cfg`` on the running loop; returns the started ProxyApp (call ``stop()``).

    ``attach``: None, or (with ``workers`` > 1, ``proxy.workers``) an async callable run with the
    app before anything listens, returning whether this process opens the endpoints that listen
    once per proxy (``metrics_port``, ``http_listen_port``)."""
    from proxy.admin import install, start_metrics

    # Long texts are analysed in worker threads (pure Python, holding the GIL); the event loop
    # thread, which gives the GIL up at every socket call, would then wait up to the default 5 ms
    # switch interval each time, and other clients' round trips with it (tools/bench/large_message:
    # worst SELECT 1 during a 60 KiB analysis ~60 ms at 5 ms, ~35 ms at 1 ms). With no worker
    # thread running, the interval changes nothing.
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    app = ProxyApp(cfg)
    _install_interceptor(app)
    install(app)
    first = attach is None or await attach(app)
    try:
        if first:
            await start_metrics(app)  # before the listeners: once clients can connect, metrics are up
    except OSError as e:
        raise ListenError(e.errno, f"cannot listen on {cfg.metrics_addr}:{cfg.metrics_port} "
                                   f"(metrics_addr, metrics_port): {e.strerror}") from None
    await app.start()
    if cfg.http_listen_port is not None and first:
        from proxy.http import start_http

        try:
            app.http = await start_http(app)
        except OSError as e:
            await app.stop()
            raise ListenError(e.errno, f"cannot listen on {cfg.http_listen_addr}:{cfg.http_listen_port} "
                                       f"(http_listen_addr, http_listen_port): {e.strerror or e}") from None
    return app


def _install_interceptor(app: ProxyApp) -> None:
    """Attach the iasql_* interceptor when the engine is enabled and available."""
    if not app.cfg.engine.enabled:
        return
    try:
        from proxy.intercept import build_interceptor  # type: ignore[attr-defined]
    except ImportError:
        return
    app.interceptor = build_interceptor(app)


async def _main(cfg: Config) -> int:
    app = await serve(cfg)
    ops = app.ops
    loop = asyncio.get_running_loop()
    # SIGTERM: graceful (running statements and iasql_* calls finish, up to shutdown_timeout);
    # SIGINT or a second SIGTERM: immediate; SIGHUP: reload the configuration (proxy.admin.ops).
    loop.add_signal_handler(signal.SIGTERM, ops.request_shutdown, True)
    loop.add_signal_handler(signal.SIGINT, ops.request_shutdown, False)
    loop.add_signal_handler(signal.SIGHUP, ops.reload)
    print(f"iasql-proxy listening on {cfg.listen_addr}:{app.port}", file=sys.stderr, flush=True)
    if app.http is not None:
        print(f"iasql-proxy console on https://{_url_host(cfg.http_listen_addr)}:{app.http.port}/",
              file=sys.stderr, flush=True)
    await ops.run_until_shutdown()
    log.info("event=shutdown_done")
    return 0


def _url_host(addr: str) -> str:
    """A host for a URL of ``addr`` (the first of a list; ``localhost`` for wildcards and loopback,
    which the development certificate names; brackets around IPv6)."""
    first = [a.strip() for a in addr.split(",") if a.strip()][0]
    if first in ("*", "0.0.0.0", "::", "127.0.0.1", "::1"):
        return "localhost"
    return f"[{first}]" if ":" in first else first


def run(cfg: Config) -> int:
    """Run the proxy until SIGTERM (graceful) or SIGINT (immediate); SIGHUP reloads (uvloop when
    available). Returns the exit status. ``workers`` > 1: a supervisor and that many worker
    processes sharing the port (``proxy.workers.supervise``)."""
    if cfg.workers > 1:
        from proxy.workers import supervise

        return supervise(cfg)
    logs.setup()
    return run_loop(_main(cfg))


#: Seconds the tasks still running after the main coroutine ended get to finish their cancellation.
EXIT_TASK_GRACE = 5.0


def run_loop(main: Coroutine[Any, Any, int | None]) -> int:
    """Run coroutine ``main`` on a new event loop (uvloop when installed) and close the loop in a
    bounded time; returns ``main``'s result as the exit status.

    Unlike ``asyncio.run``, the end is bounded: tasks still running when ``main`` returns are
    cancelled and get ``EXIT_TASK_GRACE`` seconds (a task that does not end is named in the log,
    ``event=exit_task_stuck``, and abandoned); the default executor is shut down without waiting
    for its threads. A stuck library call must never keep a stopped proxy (or ``make run``'s
    stack, which stops Postgres after it) alive. Raises what ``main`` raises."""
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvloop is a dependency
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return int(loop.run_until_complete(main) or 0)
    finally:
        try:
            _cancel_leftovers(loop)
            loop.run_until_complete(asyncio.wait_for(loop.shutdown_asyncgens(), EXIT_TASK_GRACE))
        except (Exception, asyncio.CancelledError):  # noqa: BLE001 -- closing must go on
            log.warning("event=exit_asyncgens_stuck")
        finally:
            asyncio.set_event_loop(None)
            loop.close()  # shuts the default executor down without waiting


def _cancel_leftovers(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    if not tasks:
        return
    for t in tasks:
        t.cancel()
    done, pending = loop.run_until_complete(asyncio.wait(tasks, timeout=EXIT_TASK_GRACE))
    for t in done:
        if not t.cancelled() and t.exception() is not None:
            log.warning("event=exit_task_failed task=%s error=%r", t.get_name(), t.exception())
    for t in pending:
        log.warning("event=exit_task_stuck task=%s coro=%s", t.get_name(), t.get_coro())


__all__ = ["ProxyApp", "ListenError", "serve", "run", "run_loop", "Path"]
