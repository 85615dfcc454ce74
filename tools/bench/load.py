"""Load generators: pgbench runs, a raw-socket latency client, and idle TLS clients.

The raw clients speak just enough of the v3 protocol (StartupMessage, trust/cleartext login, simple
Query) to time round trips without a driver's own overhead hiding the proxy's.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import ssl
import struct
import subprocess
import time
from dataclasses import dataclass, field

from tools.bench.stack import PASSWORD, cpu_seconds


@dataclass
class PgbenchResult:
    tps: float | None = None
    latency_ms: float | None = None
    transactions: int = 0
    failed: int = 0
    cpu_s: float | None = None          # CPU seconds the measured pooler process used during the run
    errors: list[str] = field(default_factory=list)

    @property
    def cpu_us_per_tx(self) -> float | None:
        if self.cpu_s is None or not self.transactions:
            return None
        return self.cpu_s / self.transactions * 1e6


def pgbench(port: int, *, clients: int, seconds: int, mode: str = "simple", sslmode: str = "disable",
            connect_each: bool = False, cpu_pid: int | None = None, threads: int = 2, user: str = "postgres",
            extra: tuple[str, ...] = ()) -> PgbenchResult:
    """Run ``pgbench -S`` against 127.0.0.1:``port``; CPU of ``cpu_pid`` is measured around the run."""
    args = ["pgbench", "-n", "-S", "-M", mode, "-c", str(clients), "-j", str(threads), "-T", str(seconds),
            "-h", "127.0.0.1", "-p", str(port), "-U", user, *extra]
    if connect_each:
        args.append("-C")
    args.append("postgres")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(PGPASSWORD=PASSWORD, PGSSLMODE=sslmode, PGCONNECT_TIMEOUT="10")
    before = cpu_seconds(cpu_pid) if cpu_pid else None
    try:
        res = subprocess.run(args, capture_output=True, text=True, env=env, timeout=seconds + 90)
        out, err, rc = res.stdout, res.stderr, res.returncode
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = f"pgbench did not finish within {seconds + 90} s (hang)"
        rc = -1
    after = cpu_seconds(cpu_pid) if cpu_pid else None
    r = PgbenchResult()
    m = re.search(r"^tps = ([0-9.]+)", out, re.M)
    r.tps = float(m.group(1)) if m else None
    m = re.search(r"^latency average = ([0-9.]+) ms", out, re.M)
    r.latency_ms = float(m.group(1)) if m else None
    m = re.search(r"number of transactions actually processed: (\d+)", out)
    r.transactions = int(m.group(1)) if m else 0
    m = re.search(r"number of failed transactions: (\d+)", out)
    r.failed = int(m.group(1)) if m else 0
    if before is not None and after is not None:
        r.cpu_s = after - before
    if rc != 0 or r.tps is None or r.failed:
        lines = [line for line in err.splitlines() if line.strip() and "pgbench (" not in line]
        r.errors.append(f"pgbench exit {rc}: " + " | ".join(dict.fromkeys(lines[:8])) if lines else f"pgbench exit {rc}")
    return r


def pgbench_init(port: int, scale: int = 1) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(PGPASSWORD=PASSWORD, PGSSLMODE="disable")
    res = subprocess.run(["pgbench", "-i", "-q", "-s", str(scale), "-h", "127.0.0.1", "-p", str(port), "-U",
                          "postgres", "postgres"], capture_output=True, text=True, env=env, timeout=600)
    if res.returncode != 0:
        raise RuntimeError(f"pgbench -i failed: {res.stderr.strip()}")


# ------------------------------------------------------------------------------------------------
# a minimal blocking client for latency
# ------------------------------------------------------------------------------------------------

def _startup_message(user: str, database: str) -> bytes:
    body = struct.pack("!i", 196608) + b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in
                                                   (("user", user), ("database", database))) + b"\0"
    return struct.pack("!i", len(body) + 4) + body


class RawClient:
    """One blocking connection (no TLS); ``query(sql)`` sends a simple Query and reads to ReadyForQuery."""

    def __init__(self, port: int, user: str = "postgres", database: str = "postgres"):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.sock.sendall(_startup_message(user, database))
        while True:
            t, payload = self._read()
            if t == b"R":
                code = struct.unpack_from("!i", payload)[0]
                if code == 3:  # cleartext
                    pw = PASSWORD.encode() + b"\0"
                    self.sock.sendall(b"p" + struct.pack("!i", len(pw) + 4) + pw)
                elif code != 0:
                    raise RuntimeError(f"RawClient: authentication method {code} not supported")
            elif t == b"E":
                raise RuntimeError(f"login failed: {_error_text(payload)}")
            elif t == b"Z":
                return

    def _read(self) -> tuple[bytes, bytes]:
        buf = self.buf
        while True:
            if len(buf) >= 5:
                length = struct.unpack_from("!i", buf, 1)[0]
                if len(buf) >= 1 + length:
                    t, payload = bytes(buf[:1]), bytes(buf[5:1 + length])
                    del buf[:1 + length]
                    return t, payload
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("server closed the connection")
            buf += data

    def query(self, sql: str) -> list[str]:
        """Run ``sql``; returns the error texts received (empty when none)."""
        q = sql.encode() + b"\0"
        self.sock.sendall(b"Q" + struct.pack("!i", len(q) + 4) + q)
        errors = []
        while True:
            t, payload = self._read()
            if t == b"E":
                errors.append(_error_text(payload))
            elif t == b"Z":
                return errors

    def close(self) -> None:
        try:
            self.sock.sendall(b"X\0\0\0\4")
        except OSError:
            pass
        self.sock.close()


def _error_text(payload: bytes) -> str:
    fields = {}
    for part in payload.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode(errors="replace")
    return f"{fields.get('S', '?')} {fields.get('C', '?')} {fields.get('M', '?')}"


def percentile(values: list[float], p: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = min(len(s) - 1, max(0, int(round(p / 100 * (len(s) - 1)))))
    return s[k]


def latency(port: int, sql: str, n: int, warmup: int = 50) -> tuple[float, float, list[str]]:
    """p50 and p99 (ms) of ``n`` round trips of ``sql`` on one connection; plus distinct errors."""
    c = RawClient(port)
    errors: list[str] = []
    try:
        for _ in range(warmup):
            errors += c.query(sql)
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            errors += c.query(sql)
            times.append((time.perf_counter() - t0) * 1000)
    finally:
        c.close()
    return percentile(times, 50), percentile(times, 99), list(dict.fromkeys(errors))


# ------------------------------------------------------------------------------------------------
# idle TLS clients
# ------------------------------------------------------------------------------------------------

SSL_REQUEST = struct.pack("!ii", 8, 80877103)


@dataclass
class IdleResult:
    ready: int = 0            # got ReadyForQuery
    waiting: int = 0          # logged in (AuthenticationOk) but still waiting for a server connection
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


class IdleClients:
    """Open ``n`` TLS clients (SSLRequest + TLS + StartupMessage, trust auth) and keep them open."""

    def __init__(self, port: int, concurrency: int = 200, ready_wait: float = 1.0):
        self.port = port
        self.concurrency = concurrency
        self.ready_wait = ready_wait
        self.ctx = ssl.create_default_context()
        self.ctx.check_hostname = False
        self.ctx.verify_mode = ssl.CERT_NONE
        self.writers: list[asyncio.StreamWriter] = []

    async def _one(self, sem: asyncio.Semaphore, res: IdleResult) -> None:
        async with sem:
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.port), 30)
            except (OSError, asyncio.TimeoutError) as e:
                res.failed += 1
                key = f"connect: {type(e).__name__} {e}"
                res.errors[key] = res.errors.get(key, 0) + 1
                return
            self.writers.append(writer)
            try:
                writer.write(SSL_REQUEST)
                if await asyncio.wait_for(reader.readexactly(1), 30) != b"S":
                    raise RuntimeError("SSLRequest refused")
                await asyncio.wait_for(writer.start_tls(self.ctx), 30)
                writer.write(_startup_message("postgres", "postgres"))
                authed = False
                deadline = time.monotonic() + 30
                while True:
                    timeout = deadline - time.monotonic()
                    if authed:
                        timeout = min(timeout, self.ready_wait)
                    try:
                        head = await asyncio.wait_for(reader.readexactly(5), max(timeout, 0.01))
                    except asyncio.TimeoutError:
                        if authed:
                            res.waiting += 1
                            return
                        raise
                    t, length = head[:1], struct.unpack("!i", head[1:])[0]
                    payload = await reader.readexactly(length - 4)
                    if t == b"R" and struct.unpack_from("!i", payload)[0] == 0:
                        authed = True
                    elif t == b"E":
                        raise RuntimeError(_error_text(payload))
                    elif t == b"Z":
                        res.ready += 1
                        return
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, RuntimeError, ssl.SSLError) as e:
                res.failed += 1
                key = f"{type(e).__name__}: {e}"
                res.errors[key] = res.errors.get(key, 0) + 1

    async def open(self, n: int, budget: float) -> IdleResult:
        res = IdleResult()
        sem = asyncio.Semaphore(self.concurrency)
        t0 = time.monotonic()
        tasks = [asyncio.ensure_future(self._one(sem, res)) for _ in range(n)]
        done, pending = await asyncio.wait(tasks, timeout=budget)
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
            res.errors[f"not logged in within the {budget:.0f} s budget"] = len(pending)
            res.failed += len(pending)
        res.seconds = time.monotonic() - t0
        return res

    async def close(self) -> None:
        for w in self.writers:
            try:
                w.write(b"X\0\0\0\4")
            except Exception:
                pass
            w.close()
        for w in self.writers:
            try:
                await asyncio.wait_for(w.wait_closed(), 5)
            except Exception:
                pass
        self.writers.clear()


@dataclass
class WebSocketResult:
    """What opening idle WebSockets gave: how many opened or failed (errors by text), in seconds."""

    opened: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


class IdleWebSockets:
    """Open ``n`` WebSockets at the proxy's ``/run`` (TLS, HTTP Basic as ``user``) and keep them open
    and idle (the library answers the endpoint's pings); ``still_open()`` counts those still up."""

    def __init__(self, port: int, user: str, password: str, concurrency: int = 50):
        import base64

        self.port = port
        self.headers = {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
        self.concurrency = concurrency
        self.ctx = ssl.create_default_context()
        self.ctx.check_hostname = False
        self.ctx.verify_mode = ssl.CERT_NONE
        self.sockets: list = []

    async def open(self, n: int, budget: float) -> WebSocketResult:
        """Open ``n`` sockets, ``concurrency`` at a time, within ``budget`` seconds."""
        from websockets.asyncio.client import connect

        res = WebSocketResult()
        sem = asyncio.Semaphore(self.concurrency)

        async def one() -> None:
            async with sem:
                try:
                    ws = await asyncio.wait_for(connect(f"wss://127.0.0.1:{self.port}/run", ssl=self.ctx,
                                                        additional_headers=self.headers), 30)
                    self.sockets.append(ws)
                    res.opened += 1
                except Exception as e:  # noqa: BLE001 - counted and reported
                    res.failed += 1
                    key = f"{type(e).__name__}: {e}"[:200]
                    res.errors[key] = res.errors.get(key, 0) + 1

        t0 = time.monotonic()
        tasks = [asyncio.ensure_future(one()) for _ in range(n)]
        done, pending = await asyncio.wait(tasks, timeout=budget)
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
            res.failed += len(pending)
            res.errors[f"not open within the {budget:.0f} s budget"] = len(pending)
        res.seconds = time.monotonic() - t0
        return res

    def still_open(self) -> int:
        """How many of the opened sockets are still open (call on the loop that opened them)."""
        from websockets.protocol import State

        return sum(1 for ws in self.sockets if ws.state is State.OPEN)

    async def close(self) -> None:
        """Close every socket (close handshake, code 1000)."""
        await asyncio.gather(*(ws.close() for ws in self.sockets), return_exceptions=True)
        self.sockets.clear()
