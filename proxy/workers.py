"""Several worker processes on one machine: ``workers = N`` (N > 1) in ``[proxy]``/``[pgbouncer]``.

Theory of operation
-------------------
``iasql-proxy`` with ``workers = N`` becomes a small *supervisor* (``supervise``) that forks N
*workers*. Each worker is a whole proxy (``ProxyApp``: its own pools, clients, cancel keys, admin
console and engine) whose listening sockets set ``SO_REUSEPORT`` on the same ``listen_port``, so
the kernel spreads new connections between them (by a hash of the client's address and port).
This is PgBouncer's ``so_reuseport`` design (https://www.pgbouncer.org/config.html#so_reuseport);
as there, pools are per process: ``default_pool_size``, ``max_client_conn`` and the other sizes
apply to each worker, so N workers may open up to N times ``default_pool_size`` server connections
per (database, user).

Peers. Each worker also listens on a Unix socket of its own, ``<run dir>/worker-<i>.sock`` (the run
directory is a fresh private temporary directory made by the supervisor), and answers one JSON
request per connection (``PeerServer``). Workers use it to reach each other:

- CancelRequest. A worker's BackendKeyData process id carries ``worker index + 1`` in its low byte
  (``key_owner``), PgBouncer's ``[peers]``/``peer_id`` idea
  (https://www.pgbouncer.org/config.html#section-peers): a CancelRequest that the kernel hands to
  another worker (it arrives on a new connection) is forwarded to the owner, which cancels as it
  would have itself. With ``workers = 1`` keys are made as before and nothing is forwarded.
- Admin console. ``SHOW POOLS|STATS|STATS_TOTALS|STATS_AVERAGES|TOTALS|DATABASES|LISTS`` add up
  the rows of every worker (by database, user...); ``SHOW CLIENTS|SERVERS|ENGINE`` list the rows of
  all, with a last column ``worker`` (the worker's index, 0..N-1). ``RELOAD``, ``PAUSE``,
  ``RESUME``, ``RECONNECT``, ``WAIT_CLOSE``, ``KILL``, ``DISABLE`` and ``ENABLE`` run in the worker
  that got the command and in the others (``EVERYWHERE``). ``SHUTDOWN`` asks the supervisor, which
  stops them all.
- Endpoints that listen once: only worker 0 opens ``metrics_port`` and ``http_listen_port`` (the
  web console and ``/run``, whose sessions log in through ``listen_port`` like any client).
- Metrics. Worker 0's ``GET /metrics`` sums every worker's series (same names and labels as with
  one process).

Signals. The supervisor forwards SIGTERM (graceful shutdown), SIGINT (immediate) and SIGHUP
(reload) to every worker, waits for all to exit and returns 0; the port is free once it returns. A
worker that exits while no shutdown was asked for (a crash, a kill) is started again under the
same index, after a pause that doubles while it keeps dying within a second of starting
(``RESTART_BACKOFF_MIN`` .. ``RESTART_BACKOFF_MAX``), and the supervisor logs
``event=worker_exited`` and ``event=worker_restarted``. Its clients are disconnected, as a restart of
one PgBouncer process would. Workers are told to end when the supervisor dies
(``PR_SET_PDEATHSIG``), so none is left holding the port.

Limits: a peer that does not answer within ``PEER_TIMEOUT`` seconds (restarting, blocked) is left
out of a SHOW and logged; cancel keys of a worker that died die with it; ``listen_port = 0``
picks one free port for all workers; ``workers`` needs a restart to change.
"""

from __future__ import annotations

import asyncio
import base64
import ctypes
import dataclasses
import json
import logging
import os
import secrets
import select
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from proxy import logs
from proxy.config import Config

if TYPE_CHECKING:
    from proxy.server import ProxyApp

log = logging.getLogger("iasql_proxy.workers")

#: Seconds a worker waits for a peer's answer (a SHOW, a reload, a forwarded cancel).
PEER_TIMEOUT = 5.0
#: Longest JSON request or answer on a peer socket (a SHOW CLIENTS of many thousands of clients).
PEER_MESSAGE_LIMIT = 64 * 1024 * 1024
#: First and longest pause (seconds) before a worker that keeps dying is started again.
RESTART_BACKOFF_MIN = 0.5
RESTART_BACKOFF_MAX = 30.0
#: A worker that ran at least this long (seconds) is restarted without waiting.
STABLE_AFTER = 1.0
#: Console commands that run in every worker (the answering one, then the others over the peer
#: sockets); SHUTDOWN goes to the supervisor instead.
EVERYWHERE = ("RELOAD", "PAUSE", "RESUME", "RECONNECT", "WAIT_CLOSE", "KILL", "DISABLE", "ENABLE")
#: Those of them that wait for server connections to be released: run in all workers at once, no time limit.
WAITING = ("PAUSE", "WAIT_CLOSE")
#: Signals the supervisor handles (blocked, read with sigtimedwait).
_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD}
_PR_SET_PDEATHSIG = 1


# --------------------------------------------------------------------------------------------
# cancel keys
# --------------------------------------------------------------------------------------------

def make_key(index: int) -> tuple[int, int]:
    """A fresh BackendKeyData (process id, secret key) for worker ``index`` (0-based).

    The process id is a positive 31-bit number whose low byte is ``index + 1`` (never 0); the
    secret key is 32 random bits as a signed int32, as ``ProxyApp.register_key`` makes them.
    """
    raw = int.from_bytes(secrets.token_bytes(8), "big")
    pid = ((raw >> 33) & ~0xFF) | (index + 1)
    return pid, (raw & 0xFFFFFFFF) - (1 << 31)


def key_owner(process_id: int) -> int:
    """The index of the worker that made a key with this process id (``make_key``); -1 for a
    process id no worker made (its low byte is 0)."""
    return (process_id & 0xFF) - 1


# --------------------------------------------------------------------------------------------
# merging SHOW results
# --------------------------------------------------------------------------------------------

#: How each console SHOW is combined: (key columns, columns to sum, columns to take the max of).
#: Other columns come from the first worker that has the row. ``None``: rows of all workers
#: are listed, with a ``worker`` column added.
MERGE_RULES: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]] | None] = {
    "POOLS": (("database", "user"),
              ("cl_active", "cl_waiting", "cl_active_cancel_req", "cl_waiting_cancel_req", "sv_active",
               "sv_active_cancel", "sv_being_canceled", "sv_idle", "sv_used", "sv_tested", "sv_login"),
              ("maxwait", "maxwait_us")),
    "STATS": (("database",), ("*",), ("avg_xact_time", "avg_query_time", "avg_wait_time")),
    "STATS_TOTALS": (("database",), ("*",), ()),
    "STATS_AVERAGES": (("database",), ("*",), ("avg_xact_time", "avg_query_time", "avg_wait_time")),
    "TOTALS": ((), ("*",), ("avg_xact_time", "avg_query_time", "avg_wait_time")),
    "DATABASES": (("name",), ("current_connections", "current_client_connections"), ()),
    "LISTS": (("list",), ("pools", "free_clients", "used_clients", "login_clients", "free_servers",
                          "used_servers"), ("databases", "users")),
    "CLIENTS": None,
    "SERVERS": None,
    "ENGINE": None,
}


def parse_result(data: bytes) -> tuple[list[tuple[str, int]], list[tuple[bytes | None, ...]], str]:
    """Split one console answer (RowDescription, DataRows, CommandComplete, as
    ``proxy.admin.console._result`` builds them) into (columns as (name, type oid), rows, tag).
    Raises ``proxy.wire.codec.ProtocolViolation`` on bytes that are not such an answer."""
    from proxy.wire.backend import CommandComplete, DataRow, RowDescription, decode_backend
    from proxy.wire.codec import ProtocolViolation

    cols: list[tuple[str, int]] = []
    rows: list[tuple[bytes | None, ...]] = []
    tag = "SHOW"
    i = 0
    while i < len(data):
        if i + 5 > len(data):
            raise ProtocolViolation("truncated console answer")
        length = int.from_bytes(data[i + 1:i + 5], "big")
        msg = decode_backend(data[i], data[i + 5:i + 1 + length])
        i += 1 + length
        if isinstance(msg, RowDescription):
            cols = [(f.name, f.type_oid) for f in msg.fields]
        elif isinstance(msg, DataRow):
            rows.append(msg.values)
        elif isinstance(msg, CommandComplete):
            tag = msg.tag
    return cols, rows, tag


def _number(v: bytes | None) -> int:
    try:
        return int(v) if v is not None else 0
    except ValueError:
        return 0


def merge_results(name: str, parts: list[tuple[int, bytes]]) -> bytes:
    """Combine the answers ``parts`` ((worker index, bytes) pairs) of every worker to ``SHOW name``
    following ``MERGE_RULES``; returns one answer in the same format. A SHOW without a rule is
    answered by the first part alone."""
    from proxy.admin.console import INT8, _result

    rule = MERGE_RULES.get(name, ())
    if rule == ():
        return parts[0][1]
    parsed = [(w, parse_result(data)) for w, data in parts]
    cols, _, tag = parsed[0][1]
    names = [c for c, _ in cols]
    if rule is None:
        out_rows: list[tuple] = []
        for w, (_, rows, _) in parsed:
            out_rows += [(*row, str(w).encode()) for row in rows]
        return _result([*cols, ("worker", INT8)], out_rows, tag)
    keys, sums, maxes = rule
    key_idx = [names.index(k) for k in keys if k in names]
    int_cols = {i for i, (_, oid) in enumerate(cols) if oid == INT8}
    sum_idx = int_cols if sums == ("*",) else {names.index(c) for c in sums if c in names}
    max_idx = {names.index(c) for c in maxes if c in names}
    sum_idx -= max_idx
    merged: dict[tuple, list] = {}
    for _, (_, rows, _) in parsed:
        for row in rows:
            k = tuple(row[i] for i in key_idx)
            have = merged.get(k)
            if have is None:
                merged[k] = list(row)
                continue
            for i in sum_idx:
                have[i] = str(_number(have[i]) + _number(row[i])).encode()
            for i in max_idx:
                have[i] = str(max(_number(have[i]), _number(row[i]))).encode()
    return _result(cols, [tuple(r) for r in merged.values()], tag)


def merge_metrics(texts: list[str]) -> bytes:
    """Sum Prometheus exposition ``texts`` (one per worker) series by series (same name and labels):
    counters, gauges and histogram buckets add up; ``*_created`` samples keep the earliest and the
    ``paused`` gauge the largest value. Returns the exposition text of the sums."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families
    from prometheus_client.samples import Sample

    families: dict[str, Any] = {}
    values: dict[str, dict[tuple, float]] = {}
    for text in texts:
        for fam in text_string_to_metric_families(text):
            have = families.setdefault(fam.name, fam)
            acc = values.setdefault(fam.name, {})
            for s in fam.samples:
                k = (s.name, tuple(sorted(s.labels.items())))
                if k not in acc:
                    acc[k] = s.value
                elif s.name.endswith("_created"):
                    acc[k] = min(acc[k], s.value)
                elif fam.name.endswith("_paused"):
                    acc[k] = max(acc[k], s.value)
                else:
                    acc[k] += s.value
            del have  # only the first worker's family object (type, help) is kept
    merged = []
    for fname, fam in families.items():
        fam.samples = [Sample(n, dict(labels), v) for (n, labels), v in values[fname].items()]
        merged.append(fam)

    class _Fixed:
        def collect(self) -> list:
            return merged

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed())
    return generate_latest(registry)


# --------------------------------------------------------------------------------------------
# peers: one Unix socket per worker
# --------------------------------------------------------------------------------------------

def peer_path(run_dir: Path, index: int) -> Path:
    """The Unix socket of worker ``index`` in the supervisor's run directory."""
    return Path(run_dir) / f"worker-{index}.sock"


async def ask_peer(run_dir: Path, index: int, request: dict, timeout: float | None = PEER_TIMEOUT) -> dict:
    """Send ``request`` (a JSON object with ``op``) to worker ``index`` and return its answer.

    Raises OSError (no such socket, refused, reset), asyncio.TimeoutError after ``timeout``
    seconds (None: no limit), ValueError on an answer that is not JSON."""
    async def exchange() -> dict:
        reader, writer = await asyncio.open_unix_connection(str(peer_path(run_dir, index)),
                                                            limit=PEER_MESSAGE_LIMIT)
        try:
            writer.write(json.dumps(request).encode() + b"\n")
            await writer.drain()
            line = await reader.readline()
            if not line:
                raise ConnectionResetError(f"worker {index} closed the peer connection")
            return json.loads(line)
        finally:
            writer.close()

    return await asyncio.wait_for(exchange(), timeout)


class PeerServer:
    """One worker's side of the peer sockets, and the hooks that make ``app`` (a ProxyApp) one of
    ``count`` workers: cancel keys naming the worker, forwarded CancelRequests, SHOWs, RELOAD,
    PAUSE, RESUME and SHUTDOWN reaching every worker, summed metrics on worker 0.

    ``install()`` wraps the app's methods on the instance (as ``proxy.admin.ops`` does), so a
    proxy with ``workers = 1`` (which never builds a PeerServer) runs the unwrapped code.

    Console errors: a command that fails in the answering worker fails as with one process (the
    same SQLSTATE; before any other worker is asked, except PAUSE and WAIT_CLOSE, which wait for
    server connections to be released and run in all at once); one that fails in another worker
    is ``ERROR F0000`` (RELOAD) or ``ERROR 55000`` (the others) naming that worker and its message.
    A peer that cannot be reached is logged (``event=peer_unreachable``) and left out.
    """

    def __init__(self, app: "ProxyApp", index: int, count: int, run_dir: Path, supervisor_pid: int):
        self.app = app
        self.index = index
        self.count = count
        self.run_dir = Path(run_dir)
        self.supervisor_pid = supervisor_pid
        self._server: asyncio.AbstractServer | None = None
        self._cancel_local = app.cancel
        self.forwarded_cancels = 0

    # -- hooks --------------------------------------------------------------------------------
    def install(self) -> None:
        """Wrap ``app.register_key`` and ``app.cancel``, the console's SHOWs and actions, and (on
        worker 0) the metrics endpoint's answer."""
        app = self.app
        app.register_key = self._register_key  # type: ignore[method-assign]
        app.cancel = self._cancel  # type: ignore[method-assign]
        app.worker_index = self.index  # type: ignore[attr-defined]
        console = app.admin
        if console is not None:
            shows = dict(type(console).SHOWS)
            for name in MERGE_RULES:
                if name in shows:
                    shows[name] = self._gathering_show(name, shows[name])
            console.SHOWS = shows
            actions = dict(type(console).ACTIONS)
            for verb in EVERYWHERE:
                if verb in actions:
                    actions[verb] = self._everywhere(verb, actions[verb])
            actions["SHUTDOWN"] = self._shutdown_action
            console.ACTIONS = actions
        if self.index == 0 and app.ops is not None:
            app.ops.metrics.render_all = self._render_all  # type: ignore[method-assign]

    def _register_key(self, session: Any) -> tuple[int, int]:
        keys = self.app.keys
        while True:
            key = make_key(self.index)
            if key not in keys:
                keys[key] = session
                return key

    async def _cancel(self, pid: int, secret: int) -> None:
        owner = key_owner(pid)
        if owner == self.index or not 0 <= owner < self.count:
            await self._cancel_local(pid, secret)
            return
        self.forwarded_cancels += 1
        log.info("event=cancel_forwarded worker=%d owner=%d", self.index, owner)
        try:
            await ask_peer(self.run_dir, owner, {"op": "cancel", "pid": pid, "secret": secret},
                           self.app.cfg.cancel_wait_timeout or PEER_TIMEOUT)
        except (OSError, ValueError, TimeoutError) as e:  # as for an unknown key: nothing to answer
            log.warning("event=cancel_forward_failed worker=%d owner=%d error=%r", self.index, owner, str(e))

    async def _others(self, request: dict, timeout: float | None = PEER_TIMEOUT) -> list[tuple[int, dict]]:
        """Ask every other worker (each for at most ``timeout`` seconds, None = no limit); returns
        (index, answer) of those that answered."""
        others = [i for i in range(self.count) if i != self.index]
        answers = await asyncio.gather(*(ask_peer(self.run_dir, i, request, timeout) for i in others),
                                       return_exceptions=True)
        out = []
        for i, a in zip(others, answers):
            if isinstance(a, BaseException):
                log.warning("event=peer_unreachable worker=%d peer=%d op=%s error=%r", self.index, i,
                            request.get("op"), str(a) or type(a).__name__)
            else:
                out.append((i, a))
        return out

    def _gathering_show(self, name: str, local: Callable) -> Callable[[Any, Any], Awaitable[bytes]]:
        async def show(console: Any, session: Any) -> bytes:
            mine = local(console, session)
            parts = [(self.index, mine)]
            for i, answer in await self._others({"op": "show", "name": name}):
                if "data" in answer:
                    parts.append((i, base64.b64decode(answer["data"])))
            parts.sort(key=lambda p: p[0])
            return merge_results(name, parts)

        return show

    def _everywhere(self, verb: str, local: Callable) -> Callable:
        async def action(console: Any, session: Any, args: list[str], command: str) -> bytes:
            from proxy.admin.console import AdminError

            request = {"op": "admin", "command": command}
            if verb in WAITING:  # waits for servers to be released: every worker at once, no time limit
                result, answers = await asyncio.gather(local(console, session, args, command),
                                                       self._others(request, None))
            else:
                result = await local(console, session, args, command)  # raises AdminError as before
                answers = await self._others(request)
            failed = [f"worker {i}: {a['error']}" for i, a in answers if a.get("error")]
            if failed:
                raise AdminError("F0000" if verb == "RELOAD" else "55000", "; ".join(failed))
            return result

        return action

    async def _shutdown_action(self, console: Any, session: Any, args: list[str], command: str) -> bytes:
        from proxy.admin.console import AdminError
        from proxy.wire import backend as B

        mode = args[0].upper() if args else ""
        if len(args) > 1 or mode not in ("", "WAIT_FOR_SERVERS"):
            raise AdminError("42601", f"invalid command '{command}', use SHOW HELP;")
        sig = signal.SIGTERM if mode == "WAIT_FOR_SERVERS" else signal.SIGINT
        asyncio.get_running_loop().call_soon(self._signal_supervisor, sig)
        return B.CommandComplete("SHUTDOWN").encode()

    def _signal_supervisor(self, sig: int) -> None:
        if os.getppid() == self.supervisor_pid:  # never signal whoever adopted an orphan
            os.kill(self.supervisor_pid, sig)
        elif self.app.ops is not None:
            self.app.ops.request_shutdown(sig == signal.SIGTERM)

    async def _render_all(self) -> bytes:
        metrics = self.app.ops.metrics  # type: ignore[union-attr]
        texts = [metrics.render().decode()]
        texts += [a["text"] for _, a in await self._others({"op": "metrics"}) if "text" in a]
        return merge_metrics(texts)

    # -- the socket ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Listen on this worker's peer socket (a stale file from a dead worker is replaced)."""
        path = peer_path(self.run_dir, self.index)
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        self._server = await asyncio.start_unix_server(self._handle, str(path), limit=PEER_MESSAGE_LIMIT)

    def close(self) -> None:
        """Stop answering peers and remove this worker's socket file."""
        if self._server is not None:
            self._server.close()
            self._server = None
            try:
                peer_path(self.run_dir, self.index).unlink()
            except FileNotFoundError:
                pass

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), PEER_TIMEOUT)
            if not line:
                return
            answer = await self.answer(json.loads(line))
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
        except (TimeoutError, ConnectionError, ValueError):
            pass
        except Exception:
            log.exception("event=peer_request_failed worker=%d", self.index)
        finally:
            writer.close()

    async def answer(self, request: dict) -> dict:
        """Answer one peer request: ``cancel`` (pid, secret), ``show`` (name: this worker's rows
        only, base64), ``admin`` (command: one of ``EVERYWHERE``, run here only; ``error`` is None
        or the message), ``metrics`` (this worker's exposition text). Unknown: ``error``."""
        op = request.get("op")
        app = self.app
        if op == "cancel":
            await self._cancel_local(int(request["pid"]), int(request["secret"]))
            return {}
        console = app.admin
        if op == "show" and console is not None:
            local = type(console).SHOWS.get(str(request.get("name")))
            if local is None:
                return {"error": "no such SHOW"}
            return {"data": base64.b64encode(local(console, None)).decode()}
        if op == "admin" and console is not None:
            from proxy.admin.console import AdminError

            words = str(request.get("command", "")).split()
            action = type(console).ACTIONS.get(words[0].upper() if words else "")
            if action is None or words[0].upper() not in EVERYWHERE:
                return {"error": "not a peer command"}
            try:
                await action(console, None, words[1:], request["command"])
            except AdminError as e:
                return {"error": e.message}
            return {"error": None}
        if op == "metrics" and app.ops is not None:
            return {"text": app.ops.metrics.render().decode()}
        return {"error": f"unknown op {op!r}"}


# --------------------------------------------------------------------------------------------
# a worker
# --------------------------------------------------------------------------------------------

async def _worker_main(cfg: Config, index: int, run_dir: Path, ready_fd: int, supervisor_pid: int) -> int:
    from proxy.server import serve

    peers: list[PeerServer] = []

    async def attach(app: "ProxyApp") -> bool:
        server = PeerServer(app, index, cfg.workers, run_dir, supervisor_pid)
        server.install()
        await server.start()
        peers.append(server)
        return index == 0  # only the first worker opens metrics_port and http_listen_port

    app = await serve(cfg, attach)
    ops = app.ops
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, ops.request_shutdown, True)
    loop.add_signal_handler(signal.SIGINT, ops.request_shutdown, False)
    loop.add_signal_handler(signal.SIGHUP, ops.reload)
    log.info("event=worker_started worker=%d pid=%d port=%s", index, os.getpid(), app.port)
    os.write(ready_fd, b"R")
    os.close(ready_fd)
    await ops.run_until_shutdown()
    for server in peers:
        server.close()
    if os.getppid() != supervisor_pid:  # the supervisor is gone: the last worker out removes the run directory
        try:
            os.rmdir(run_dir)
        except OSError:
            pass
    log.info("event=worker_stopped worker=%d pid=%d", index, os.getpid())
    return 0


def _worker(cfg: Config, index: int, run_dir: Path, ready_fd: int, supervisor_pid: int) -> int:
    """The body of a forked worker; returns its exit status (2: cannot listen)."""
    from proxy.server import ListenError, run_loop

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != supervisor_pid:  # the supervisor died before prctl
        return 1
    logs.set_tag(f"[w{index}]")
    try:
        return run_loop(_worker_main(cfg, index, run_dir, ready_fd, supervisor_pid))
    except ListenError as e:
        print(f"iasql-proxy: {e.args[1] if len(e.args) > 1 else e}", file=sys.stderr, flush=True)
        return 2


# --------------------------------------------------------------------------------------------
# the supervisor
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class _Child:
    """One worker process as the supervisor sees it."""

    index: int
    pid: int = 0
    started: float = 0.0
    ready_fd: int = -1
    ready: bool = False
    backoff: float = RESTART_BACKOFF_MIN
    restart_at: float | None = None
    restarts: int = 0


def _reserve_port(cfg: Config) -> tuple[socket.socket, int]:
    """With ``listen_port = 0``: bind (not listen) a SO_REUSEPORT socket to a free port of the first
    ``listen_addr``, so every worker can bind the same one; returns it and the port."""
    addr = next(a.strip() for a in cfg.listen_addr.split(",") if a.strip())
    host = None if addr == "*" else addr
    family, stype, proto, _, sockaddr = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM,
                                                           flags=socket.AI_PASSIVE)[0]
    s = socket.socket(family, stype, proto)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(sockaddr)
    return s, s.getsockname()[1]


class Supervisor:
    """Starts ``cfg.workers`` workers, restarts those that die, forwards signals; see the module
    docstring. ``run()`` returns the exit status: 0 after a shutdown, 2 when a worker could not
    start listening (its message is on stderr), 1 when a worker failed at start otherwise."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.children = [_Child(i) for i in range(cfg.workers)]
        self.run_dir = Path(tempfile.mkdtemp(prefix="iasql-proxy-"))
        self.stopping: int | None = None  # the signal that started the shutdown
        self.pid = os.getpid()
        self.reserved: socket.socket | None = None  # listen_port = 0: the port chosen, held until all listen

    def _spawn(self, child: _Child) -> None:
        r, w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the worker
            status = 1
            try:
                os.close(r)
                if self.reserved is not None:
                    self.reserved.close()
                for other in self.children:
                    if other.ready_fd >= 0:
                        os.close(other.ready_fd)
                signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a reload before the worker listens: nothing to do
                signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
                status = _worker(self.cfg, child.index, self.run_dir, w, self.pid)
            except KeyboardInterrupt:  # SIGINT before the worker's own handler was installed
                status = 0
            except BaseException:
                logging.getLogger("iasql_proxy.workers").exception("event=worker_failed worker=%d", child.index)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(status)
        os.close(w)
        child.pid, child.started, child.ready_fd, child.ready, child.restart_at = pid, time.monotonic(), r, False, None

    def _signal_all(self, sig: int) -> None:
        for c in self.children:
            if c.pid:
                try:
                    os.kill(c.pid, sig)
                except ProcessLookupError:
                    pass

    def _reap(self) -> list[tuple[_Child, int]]:
        """Collect exited workers; returns (child, exit status: negative = killed by that signal)."""
        out = []
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return out
            if pid == 0:
                return out
            for c in self.children:
                if c.pid == pid:
                    code = os.waitstatus_to_exitcode(status)
                    c.pid = 0
                    if c.ready_fd >= 0:
                        os.close(c.ready_fd)
                        c.ready_fd = -1
                    out.append((c, code))

    def _check_ready(self) -> None:
        fds = [c.ready_fd for c in self.children if c.ready_fd >= 0 and not c.ready]
        if not fds:
            return
        readable, _, _ = select.select(fds, [], [], 0)
        for c in self.children:
            if c.ready_fd in readable:
                if os.read(c.ready_fd, 1) == b"R":
                    c.ready = True
                    if c.restarts:
                        log.info("event=worker_restarted worker=%d pid=%d restarts=%d", c.index, c.pid, c.restarts)
                os.close(c.ready_fd)
                c.ready_fd = -1

    def run(self) -> int:
        """Supervise until shutdown; returns the exit status (see the class docstring)."""
        cfg = self.cfg
        if cfg.listen_port == 0:
            self.reserved, port = _reserve_port(cfg)
            self.cfg = cfg = dataclasses.replace(cfg, listen_port=port)
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        try:
            return self._loop()
        finally:
            if self.reserved is not None:
                self.reserved.close()
            self._signal_all(signal.SIGKILL)  # only workers still running here: an error in the loop
            while self._reap():
                pass
            shutil.rmtree(self.run_dir, ignore_errors=True)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)

    def _loop(self) -> int:
        for c in self.children:
            self._spawn(c)
        all_ready = False
        status = 0
        while True:
            now = time.monotonic()
            waits = [c.restart_at - now for c in self.children if c.restart_at is not None and self.stopping is None]
            pending = any(c.ready_fd >= 0 and not c.ready for c in self.children)
            timeout = min([1.0, *waits]) if waits else (0.05 if pending else 1.0)
            info = signal.sigtimedwait(_SIGNALS, max(timeout, 0.0))
            if info is not None and info.si_signo != signal.SIGCHLD:
                sig = info.si_signo
                if sig == signal.SIGHUP:
                    log.info("event=reload_all workers=%d", len(self.children))
                    self._signal_all(signal.SIGHUP)
                else:
                    if self.stopping is None:
                        log.info("event=shutdown_all signal=%s workers=%d", signal.Signals(sig).name,
                                 len(self.children))
                    self.stopping = sig
                    for c in self.children:
                        c.restart_at = None
                    self._signal_all(sig)
            self._check_ready()
            for c, code in self._reap():
                if self.stopping is not None:
                    log.info("event=worker_ended worker=%d status=%d", c.index, code)
                    continue
                if not all_ready and not c.ready:  # failed at start: stop everything
                    log.error("event=worker_start_failed worker=%d status=%d", c.index, code)
                    status = code if code > 0 else 1
                    self.stopping = signal.SIGINT
                    self._signal_all(signal.SIGINT)
                    continue
                lived = time.monotonic() - c.started
                c.backoff = RESTART_BACKOFF_MIN if lived >= STABLE_AFTER else min(c.backoff * 2, RESTART_BACKOFF_MAX)
                delay = 0.0 if lived >= STABLE_AFTER else c.backoff
                log.error("event=worker_exited worker=%d status=%d lived_s=%.1f restart_in_s=%.1f",
                          c.index, code, lived, delay)
                c.restart_at = time.monotonic() + delay
            if self.stopping is not None:
                if not any(c.pid for c in self.children):
                    log.info("event=shutdown_done workers=%d", len(self.children))
                    return status
                continue
            now = time.monotonic()
            for c in self.children:
                if c.restart_at is not None and c.restart_at <= now and not c.pid:
                    c.restarts += 1
                    self._spawn(c)
            if not all_ready and all(c.ready for c in self.children):
                all_ready = True
                if self.reserved is not None:
                    self.reserved.close()
                    self.reserved = None
                pids = ",".join(str(c.pid) for c in self.children)
                log.info("event=workers_ready workers=%d pids=%s port=%d", len(self.children), pids,
                         self.cfg.listen_port)
                print(f"iasql-proxy listening on {self.cfg.listen_addr}:{self.cfg.listen_port} "
                      f"({len(self.children)} workers)", file=sys.stderr, flush=True)


def supervise(cfg: Config) -> int:
    """Run ``cfg.workers`` worker processes sharing ``listen_port`` until SIGTERM (graceful) or SIGINT
    (immediate); SIGHUP reloads them all. Returns the exit status (``Supervisor.run``)."""
    logs.setup()
    if cfg.engine.enabled:  # imported once here, so the forked workers start sooner and share the pages
        try:
            import engine  # noqa: F401
            import proxy.intercept.dispatch  # noqa: F401
        except ImportError:
            pass
    supervisor = Supervisor(cfg)
    log.info("event=supervisor_started pid=%d workers=%d run_dir=%s", os.getpid(), cfg.workers, supervisor.run_dir)
    return supervisor.run()


__all__ = ["supervise", "Supervisor", "PeerServer", "make_key", "key_owner", "merge_results", "merge_metrics",
           "parse_result", "ask_peer", "peer_path", "MERGE_RULES"]
