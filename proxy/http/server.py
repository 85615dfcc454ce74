"""The HTTPS endpoint: the web console at ``/`` and the WebSocket ``/run`` (RFC 6455).

Built on ``websockets`` (its asyncio server): one small, well-kept library that does the
WebSocket protocol (framing, masking, close handshake, ping/pong, the ``max_size`` limit) and the
few plain HTTP answers the console needs (``process_request``), over the ``ssl`` module. An ASGI
stack (Starlette on uvicorn) would add a framework and a server for three static files and one
socket.

Isolation: the endpoint runs in a thread of its own with its own event loop. It shares nothing
mutable with the PostgreSQL side: it reaches the proxy only through sockets (a PostgreSQL
login to the proxy's own listener per WebSocket and database, CancelRequests to the same
listener; see ``proxy.http.runner``) and through one read, the user's secret for the HTTP Basic
check, made on the proxy's loop by ``ProxyApp.lookup_secret`` (``auth_file`` or ``auth_query``, the
source of SCRAM and md5 logins). Its state (WebSockets, runs per user) is its own. An exception
in a handler ends that WebSocket (logged), and the proxy's loop never waits for this one.

Checks of the opening handshake, in order: the path (``/``, ``/console.js``, ``/console.css``,
``/run``; else 404), for ``/run`` the ``Origin`` (403 unless the endpoint's own or in
``http_allowed_origins``), then HTTP Basic credentials (RFC 7617) against the user's secret (401
with ``WWW-Authenticate: Basic realm="iasql-proxy"``). The first run logs in to the proxy (the
database of the message, else of ``?database=``, else the user's name); when the proxy refuses
that login the run gets the proxy's error (e.g. 3D000) and ``{"done": true}``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import ssl
import threading
import time
import weakref
from importlib import resources
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection as WebSocket
from websockets.asyncio.server import serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from proxy.auth import Secret
from proxy.config import Config, DatabaseTarget

from . import protocol as P
from .runner import ProxyLink, ServerError, run_error

log = logging.getLogger("iasql_proxy.http")

#: Looks a user's secret up: ``(user, database) -> Secret | None``, run on the proxy's loop.
SecretLookup = Callable[[str, str], Awaitable["Secret | None"]]

#: Files of the console, served from the package (``proxy/http/static``), by path.
STATIC_FILES = {"/": ("index.html", "text/html; charset=utf-8"),
                "/console.js": ("console.js", "text/javascript; charset=utf-8"),
                "/console.css": ("console.css", "text/css; charset=utf-8")}
#: Response headers of every static file: no caching, no sniffing, no framing, no foreign code.
SECURITY_HEADERS = (("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"),
                    ("X-Frame-Options", "DENY"), ("Referrer-Policy", "no-referrer"),
                    ("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; "
                                                "connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'"))
REALM = "iasql-proxy"
#: Seconds a WebSocket whose client left waits for its cancelled statement to end before its
#: PostgreSQL session is closed anyway.
CANCEL_GRACE = 10.0
#: Seconds between WebSocket pings (RFC 6455 5.5.2), and for the pong: a peer that vanished
#: without a close is noticed within about twice this.
PING_INTERVAL = 20.0


def load_static() -> dict[str, tuple[bytes, str]]:
    """The console's files from the installed package: ``{path: (body, content type)}``."""
    root = resources.files("proxy.http") / "static"
    return {path: ((root / name).read_bytes(), ctype) for path, (name, ctype) in STATIC_FILES.items()}


def server_tls_context(cfg: Config) -> ssl.SSLContext:
    """The HTTPS context: the certificate and key Postgres clients see (``client_tls_cert_file``,
    ``client_tls_key_file``), TLS 1.2 or newer, ALPN ``http/1.1``. Raises OSError/ssl.SSLError
    when the files cannot be loaded."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cfg.client_tls_cert_file), str(cfg.client_tls_key_file))
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def _response(status: int, reason: str, body: bytes = b"", content_type: str = "text/plain; charset=utf-8",
              extra: tuple[tuple[str, str], ...] = ()) -> Response:
    headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(body))), *extra])
    return Response(status, reason, headers, body)


class HttpEndpoint:
    """The console and /run for one proxy. ``start()`` runs it in its own thread; ``stop()`` ends it.

    ``cfg``: the proxy's configuration (``http_*`` keys, the certificate); ``proxy_host`` and
    ``proxy_port``: where the proxy's PostgreSQL listener is reached over loopback;
    ``lookup_secret``: a coroutine function run on the proxy's loop ``proxy_loop`` (the only call
    into it; the password is checked against the secret here, off that loop).
    Attributes after start: ``port`` (the bound port), ``runs`` (scripts running now, by user).
    """

    def __init__(self, cfg: Config, proxy_host: str, proxy_port: int, lookup_secret: SecretLookup,
                 proxy_loop: asyncio.AbstractEventLoop):
        self.cfg = cfg
        self.target = DatabaseTarget(name="iasql-proxy", host=proxy_host, port=proxy_port)
        self.tls_to_proxy = cfg.client_tls_sslmode != "disable"
        self._lookup_secret = lookup_secret
        self._proxy_loop = proxy_loop
        self.static = load_static()
        self.port: int | None = None
        self.runs: dict[str, int] = {}
        self.sockets = 0
        self.auth_failures = 0
        # the login of a handshake that passed, until its handler starts (weak: a handshake that
        # fails afterwards leaves nothing behind)
        self._handshakes: weakref.WeakKeyDictionary[WebSocket, tuple[str, str, str]] = weakref.WeakKeyDictionary()
        self._live: set[WebSocket] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._server: Any = None

    # -- life cycle (called from the proxy's thread) ---------------------------------------------
    def start(self, timeout: float = 30.0) -> int:
        """Bind ``http_listen_addr``:``http_listen_port`` in a new thread and serve. Returns the
        bound port. Raises OSError (with errno) when the address cannot be bound or the
        certificate cannot be loaded."""
        ready: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._thread_main, args=(ready,), name="iasql-http", daemon=True)
        self._thread.start()
        self.port = ready.result(timeout)
        return self.port

    def stop_accepting(self) -> None:
        """Stop accepting new connections (graceful shutdown); open WebSockets stay."""
        if self._loop is not None and self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close, False)

    async def stop(self, timeout: float = 5.0) -> None:
        """Close every WebSocket (code 1001; running statements are cancelled) and end the thread,
        waiting at most ``timeout`` seconds."""
        if self._loop is None or self._thread is None or self._stop is None:
            return
        try:
            self._loop.call_soon_threadsafe(self._stop.set)
        except RuntimeError:  # the loop is already closed
            return
        await asyncio.to_thread(self._thread.join, timeout)

    def _thread_main(self, ready: concurrent.futures.Future) -> None:
        try:
            import uvloop

            loop = uvloop.new_event_loop()
        except ImportError:  # pragma: no cover - uvloop is a dependency
            loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve(ready))
        except BaseException as e:  # never let the thread die silently
            if not ready.done():
                ready.set_exception(e)
            else:
                log.exception("event=http_failed")
        finally:
            loop.close()

    async def _serve(self, ready: concurrent.futures.Future) -> None:
        self._stop = asyncio.Event()
        cfg = self.cfg
        ctx = server_tls_context(cfg)
        host = None if cfg.http_listen_addr.strip() == "*" else [a.strip() for a in cfg.http_listen_addr.split(",")]
        self._server = await serve(self._handler, host, cfg.http_listen_port or 0, ssl=ctx,
                                   process_request=self._process_request, max_size=cfg.http_max_message_size,
                                   compression=None, ping_interval=PING_INTERVAL, ping_timeout=PING_INTERVAL,
                                   server_header="iasql-proxy", open_timeout=cfg.client_login_timeout or None,
                                   logger=_library_logger())
        port = next(s.getsockname()[1] for s in self._server.sockets)
        log.info("event=http_listening addr=%s port=%s", cfg.http_listen_addr, port)
        ready.set_result(port)
        await self._stop.wait()
        self._server.close(close_connections=False)  # a no-op when stop_accepting came first
        # then every open socket, explicitly: a second close() of the server would do nothing
        await asyncio.gather(*(ws.close(1001, "server shutting down") for ws in list(self._live)),
                             return_exceptions=True)
        await asyncio.wait_for(self._server.wait_closed(), CANCEL_GRACE)

    # -- the opening handshake -------------------------------------------------------------------
    async def _password_ok(self, user: str, password: str, database: str) -> bool:
        from proxy.http import password_matches

        fut = asyncio.run_coroutine_threadsafe(self._lookup_secret(user, database), self._proxy_loop)
        try:
            secret = await asyncio.wrap_future(fut)
        except Exception:
            log.exception("event=http_auth_check_failed user=%s", user)
            return False
        # PBKDF2 releases the GIL: in a worker thread it slows neither loop
        return await asyncio.get_running_loop().run_in_executor(
            None, password_matches, self.cfg.auth_type, secret, user, password)

    async def _process_request(self, ws: WebSocket, request: Request) -> Response | None:
        """Answer plain GETs (the console's files), refuse what may not open /run, else None (the
        handshake goes on). Never raises: a failure is a 500 answer."""
        try:
            return await self._check_request(ws, request)
        except Exception:
            log.exception("event=http_request_failed path=%r", request.path[:200])
            return _response(500, "Internal Server Error", b"internal error\n")

    async def _check_request(self, ws: WebSocket, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        path = parts.path
        if path not in self.static and path != "/run":
            return _response(404, "Not Found", b"not found\n")
        headers = request.headers
        if path == "/run" and not P.origin_allowed(headers.get("Origin"), headers.get("Host"),
                                                   self.cfg.http_allowed_origins):
            log.warning("event=http_origin_refused origin=%r peer=%s", headers.get("Origin"), _peer(ws))
            return _response(403, "Forbidden", b"origin not allowed (http_allowed_origins)\n")
        creds = P.parse_basic_auth(headers.get("Authorization"))
        query = parse_qs(parts.query)
        database = (query.get("database") or [None])[0] or (creds[0] if creds else "")
        if creds is None or not await self._password_ok(creds[0], creds[1], database):
            if creds is not None:
                self.auth_failures += 1
                log.warning("event=http_auth_failed user=%r peer=%s", creds[0][:200], _peer(ws))  # unchecked input
            return _response(401, "Unauthorized", b"authentication required\n",
                             extra=(("WWW-Authenticate", f'Basic realm="{REALM}", charset="UTF-8"'),))
        if path != "/run":
            if headers.get("Upgrade"):
                return _response(404, "Not Found", b"WebSockets are at /run\n")
            body, ctype = self.static[path]
            return _response(200, "OK", body, ctype, SECURITY_HEADERS)
        self._handshakes[ws] = (creds[0], creds[1], database)
        return None

    # -- a WebSocket -------------------------------------------------------------------------------
    async def _handler(self, ws: WebSocket) -> None:
        user, password, database = self._handshakes.pop(ws)
        self.sockets += 1
        self._live.add(ws)
        session = _Socket(self, ws, user, password, database)
        started, peer = time.monotonic(), _peer(ws)
        if self.cfg.log_connections:
            log.info("event=http_socket_start user=%s database=%s peer=%s", user, database, peer)
        try:
            await session.serve()
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("event=http_socket_failed user=%s", user)
        finally:
            self.sockets -= 1
            self._live.discard(ws)
            await session.finish()
            if self.cfg.log_disconnections:
                log.info("event=http_socket_end user=%s peer=%s runs=%d close_code=%s duration_s=%.3f", user,
                         peer, session.runs, ws.close_code, time.monotonic() - started)

    async def open_link(self, user: str, password: str, database: str) -> ProxyLink:
        """A PostgreSQL session with the proxy as ``user`` on ``database``. Raises ServerError."""
        cfg = self.cfg
        return await ProxyLink.open(self.target, user, password, database, tls=self.tls_to_proxy,
                                    timeout=cfg.client_login_timeout or 60.0,
                                    cancel_timeout=cfg.cancel_wait_timeout)


def _library_logger() -> logging.Logger:
    """websockets' own logger, quiet below WARNING: the endpoint logs its events itself
    (``event=http_socket_start`` / ``_end``, ``http_auth_failed``, ``http_origin_refused``)."""
    lib = logging.getLogger("iasql_proxy.http.websockets")
    lib.setLevel(logging.WARNING)
    return lib


def _peer(ws: WebSocket) -> str:
    addr = ws.remote_address
    return f"{addr[0]}:{addr[1]}" if addr else "?"


class _Socket:
    """One /run WebSocket: its PostgreSQL sessions (one per database), the run going on, the idle
    timer."""

    def __init__(self, endpoint: HttpEndpoint, ws: WebSocket, user: str, password: str, database: str):
        self.endpoint = endpoint
        self.ws = ws
        self.user = user
        self.password = password
        self.database = database
        self.links: dict[str, ProxyLink] = {}
        self.run_task: asyncio.Task | None = None
        self.current: ProxyLink | None = None
        self.runs = 0

    async def serve(self) -> None:
        """Read messages until the client leaves or idles. The PostgreSQL session is opened by the
        first run (an idle socket holds no client slot and, in session pooling, no server
        connection) and kept for the next runs."""
        idle = self.endpoint.cfg.http_idle_timeout
        last = time.monotonic()
        while True:
            busy = self.run_task is not None and not self.run_task.done()
            if idle > 0 and not busy:
                remaining = idle - (time.monotonic() - last)
                if remaining <= 0:
                    await self.ws.close(1000, "idle timeout (http_idle_timeout)")
                    return
                try:
                    raw = await asyncio.wait_for(self.ws.recv(), remaining)
                except asyncio.TimeoutError:
                    continue
            else:
                raw = await self.ws.recv()
            last = time.monotonic()
            await self.message(raw)

    async def message(self, raw: str | bytes) -> None:
        """Handle one client message (protocol errors are answered, never raised)."""
        try:
            event = P.parse_client_message(raw)
        except P.ProtocolError as e:
            await self.ws.send(P.encode(run_error(e.sqlstate, str(e))))
            return
        if isinstance(event, P.CancelRun):
            if self.current is not None:
                await self.current.cancel()
            return
        if self.run_task is not None and not self.run_task.done():
            await self.ws.send(P.encode(run_error("55000", "a script is already running on this connection; "
                                                  'send {"cancel": true} or wait for {"done": true}')))
            await self.ws.send(P.encode({"done": True}))
            return
        limit = self.endpoint.cfg.http_max_runs_per_user
        runs = self.endpoint.runs
        if runs.get(self.user, 0) >= limit:
            await self.ws.send(P.encode(run_error("53300", f"too many scripts running for user \"{self.user}\" "
                                                  f"(http_max_runs_per_user = {limit})")))
            await self.ws.send(P.encode({"done": True}))
            return
        runs[self.user] = runs.get(self.user, 0) + 1
        self.runs += 1
        self.run_task = asyncio.get_running_loop().create_task(self.run(event))
        self.run_task.add_done_callback(self._run_ended)

    def _run_ended(self, task: asyncio.Task) -> None:
        runs = self.endpoint.runs
        left = runs.get(self.user, 1) - 1
        if left > 0:
            runs[self.user] = left
        else:
            runs.pop(self.user, None)
        if not task.cancelled() and task.exception() is not None and not isinstance(task.exception(), ConnectionClosed):
            log.error("event=http_run_failed user=%s error=%r", self.user, str(task.exception()))

    async def run(self, event: P.RunScript) -> None:
        """Run one script and send its messages, then ``{"done": true}``."""
        database = event.database or self.database
        link = self.links.get(database)
        if link is not None and link.closed:
            del self.links[database]
            link = None
        if link is None:
            try:
                link = self.links[database] = await self.endpoint.open_link(self.user, self.password, database)
            except (ServerError, OSError) as e:
                err = P.local_error(getattr(e, "sqlstate", "08006"), getattr(e, "message", str(e)))
                await self.ws.send(P.encode({"error": err}))
                await self.ws.send(P.encode({"done": True}))
                return
        self.current = link
        try:
            await link.run(event.sql, self.send)
        except ServerError as e:  # the proxy ended the session (FATAL, shutdown, timeout)
            self.links.pop(database, None)
            link.close()
            await self.send({"error": P.local_error(e.sqlstate, e.message)})
        except (ConnectionClosed, asyncio.CancelledError):
            raise
        except Exception as e:  # a bug here must end this run only, loudly
            log.exception("event=http_run_failed user=%s", self.user)
            self.links.pop(database, None)
            link.close()
            await self.send({"error": P.local_error("XX000", f"internal error in /run: {type(e).__name__}")})
        finally:
            self.current = None
        await self.send({"done": True})

    async def send(self, message: dict[str, Any]) -> None:
        """Send one server message (raises ConnectionClosed when the client is gone)."""
        await self.ws.send(P.encode(message))

    async def finish(self) -> None:
        """The WebSocket is closed: cancel the statement running (if any), wait for it to end (at
        most ``CANCEL_GRACE`` seconds), then end every PostgreSQL session."""
        for link in list(self.links.values()):
            if link.busy or link.running:  # the client left mid-statement: that statement stops
                try:
                    await link.cancel()
                except Exception:
                    log.exception("event=http_cancel_failed user=%s", self.user)
        task = self.run_task
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), CANCEL_GRACE)
            except BaseException:
                task.cancel()
        for link in self.links.values():
            link.close()
        self.links.clear()
        self.password = ""
