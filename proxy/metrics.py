"""Counters for the admin console and the Prometheus endpoint (``metrics_port``).

Nothing here runs per message. Sessions keep plain integer counters (``bytes_in``, ``queries``,
``transactions``, and ``bytes_out`` when the relay counts it); they are summed when someone looks:
at scrape time by a custom collector, or by ``SHOW STATS``. When a session ends its counters are
added to per-database totals (``retire``), so the exported counters never go backwards. Two
histograms are observed as events happen, once per server lease (pool wait) and once per engine
call (duration by function and outcome).

The endpoint is a minimal HTTP/1.0 responder on the proxy's own event loop (``GET /metrics``),
so the collector reads the sessions and pools from the thread that changes them; the text comes
from ``prometheus_client.generate_latest``.

Exported series (all prefixed ``iasql_proxy_``):

- ``client_connections{database,user,state}``: state active (holds a server), waiting (for a
  server), idle (logged in, no server: transaction pooling), login
- ``server_connections{database,user,state}``: active (linked to a client), idle, tested (being
  reset), login (opening)
- ``pool_size{database,user}``
- ``queries_total``, ``transactions_total``, ``received_bytes_total``, ``sent_bytes_total``,
  ``server_assignments_total`` (all ``{database}``; database = the name the client asked for)
- ``pool_wait_seconds`` histogram: time from asking for a server connection to getting one
- ``statements_split_total``, ``statements_intercepted_total``: statements the interceptor's
  splitter produced, and those among them that called ``iasql_*``
- ``engine_call_duration_seconds{function,outcome}`` histogram; ``engine_calls_running``
- ``tls_handshake_failures_total``, ``auth_failures_total``
- ``admin_clients``, ``paused`` (1 when every database is paused)
"""

from __future__ import annotations

import asyncio
import logging
import time
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

if TYPE_CHECKING:
    from proxy.server import ProxyApp

log = logging.getLogger("iasql_proxy.metrics")

PREFIX = "iasql_proxy_"
#: PgBouncer's default stats_period: SHOW STATS averages are per second over about this long.
STATS_PERIOD = 60.0
WAIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
ENGINE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)

#: Per-database counter names, in the order of the ``Totals`` lists.
TOTAL_FIELDS = ("xact_count", "query_count", "received", "sent", "server_assignment_count", "wait_us")


def session_pool_labels(session: Any) -> tuple[str, str] | None:
    """(database, user) of the pool a client session uses (the server-side names), or None
    before its database entry is known and for admin console sessions."""
    if getattr(session, "admin_role", None) is not None:
        return None
    target = getattr(session, "target", None)
    if target is None:
        return None
    return (target.dbname or session.database, target.user or session.user)


def session_state(session: Any, waiting: dict) -> str:
    """active, waiting, idle or login (see the module docstring)."""
    if session.server is not None:
        return "active"
    if session in waiting or getattr(session, "wait_started", None) is not None:
        return "waiting"
    if session.ready:
        return "idle"
    return "login"


def _logged_in(session: Any) -> bool:
    """Whether ``session`` completed its login (was sent ReadyForQuery at least once)."""
    return bool(getattr(session, "ready", False) or getattr(session, "key", None))


@dataclass
class PoolView:
    """One pool's numbers, for SHOW POOLS and the gauges."""

    database: str
    user: str
    pool_mode: str
    size: int = 0
    cl_active: int = 0
    cl_waiting: int = 0
    cl_idle: int = 0
    cl_login: int = 0
    sv_active: int = 0
    sv_idle: int = 0
    sv_tested: int = 0
    sv_login: int = 0
    maxwait: float = 0.0
    target_names: set = field(default_factory=set)


class Metrics:
    """Per-database totals, the two histograms, and the HTTP endpoint of one ProxyApp.

    ``waiting`` maps sessions waiting for a server to the monotonic time they started (kept by
    ``proxy.admin.ops``).
    """

    def __init__(self, app: "ProxyApp", waiting: dict | None = None):
        self.app = app
        self.waiting: dict = waiting if waiting is not None else {}
        self.registry = CollectorRegistry(auto_describe=False)
        # pool_wait_seconds: per-bucket counts kept by observe_wait (one bisect, no lock: it runs
        # on the fast path), exported by _Collector as a histogram
        self.wait_counts: list[int] = [0] * (len(WAIT_BUCKETS) + 1)  # the last one is +Inf
        self.wait_sum = 0.0  # seconds
        self.engine_calls = Histogram(PREFIX + "engine_call_duration_seconds", "Duration of iasql_* engine calls",
                                      ["function", "outcome"], buckets=ENGINE_BUCKETS, registry=self.registry)
        self.registry.register(_Collector(self))
        self.retired: dict[str, list[int]] = {}       # database -> first five TOTAL_FIELDS of ended sessions
        self.assignments: dict[str, list[int]] = {}   # database -> [server assignments, wait µs]
        self.started = time.time()
        self._period: tuple[float, dict[str, list[int]]] = (time.monotonic(), {})
        self._server: asyncio.AbstractServer | None = None
        self.port: int | None = None

    # -- events -------------------------------------------------------------------------------
    def observe_wait(self, session: Any, seconds: float, count: bool = True) -> None:
        """A server connection was assigned to ``session`` after ``seconds`` of waiting: counted in
        the ``pool_wait_seconds`` bucket whose upper bound ``le`` is the first >= ``seconds``
        (Prometheus's bucket rule), and as one server assignment unless ``count`` is False (the
        relay's fast path counts its own in ``session.assignments``). This runs on the fast path."""
        self.wait_counts[bisect_left(WAIT_BUCKETS, seconds)] += 1
        self.wait_sum += seconds
        a = self.assignments.get(session.database)
        if a is None:
            a = self.assignments[session.database] = [0, 0]
        if count:
            a[0] += 1
        a[1] += int(seconds * 1e6)

    def pool_wait(self) -> HistogramMetricFamily:
        """The ``pool_wait_seconds`` histogram as of now (cumulative buckets, sum in seconds)."""
        cumulative, buckets = 0, []
        for le, n in zip((*WAIT_BUCKETS, float("inf")), self.wait_counts):
            cumulative += n
            buckets.append((floatToGoString(le), cumulative))
        return HistogramMetricFamily(PREFIX + "pool_wait_seconds", "Time clients waited for a server connection",
                                     buckets=buckets, sum_value=self.wait_sum)

    def retire(self, session: Any) -> None:
        """``session`` ended: keep its counters in its database's totals. A session that never
        logged in (a wrong password, an unknown database, a refused start-up) adds no row: else
        anyone who can reach the port could grow SHOW STATS by one row per made-up name."""
        if getattr(session, "admin_role", None) is not None or not session.user or not _logged_in(session):
            return
        t = self.retired.get(session.database)
        if t is None:
            t = self.retired[session.database] = [0, 0, 0, 0, 0]
        t[4] += getattr(session, "assignments", 0)
        t[0] += session.transactions
        t[1] += session.queries
        t[2] += session.bytes_in
        t[3] += getattr(session, "bytes_out", 0)

    def engine_call_ended(self, call: Any) -> None:
        """Observe a finished engine call (EngineJournal's ``on_end``)."""
        self.engine_calls.labels(call.function, call.state).observe(call.duration or 0.0)

    # -- reading ------------------------------------------------------------------------------
    def totals(self) -> dict[str, list[int]]:
        """Per database: the TOTAL_FIELDS values since start (live sessions included)."""
        out: dict[str, list[int]] = {db: v[:] + [0] for db, v in self.retired.items()}
        for s in list(self.app.clients):
            if getattr(s, "admin_role", None) is not None or not s.user or not _logged_in(s):
                continue
            t = out.get(s.database)
            if t is None:
                t = out[s.database] = [0, 0, 0, 0, 0, 0]
            t[0] += s.transactions
            t[1] += s.queries
            t[2] += s.bytes_in
            t[3] += getattr(s, "bytes_out", 0)
            t[4] += getattr(s, "assignments", 0)
        for db, (n, us) in self.assignments.items():
            t = out.get(db)
            if t is None:
                t = out[db] = [0, 0, 0, 0, 0, 0]
            t[4] += n
            t[5] += us
        return out

    def averages(self, totals: dict[str, list[int]]) -> dict[str, list[float]]:
        """Per database, per second over the current stats period (at most about STATS_PERIOD s):
        the TOTAL_FIELDS rates; the last one is the average wait per assignment in µs."""
        now = time.monotonic()
        since, base = self._period
        elapsed = max(now - since, 1e-9)
        out: dict[str, list[float]] = {}
        for db, cur in totals.items():
            old = base.get(db, [0] * len(TOTAL_FIELDS))
            delta = [c - o for c, o in zip(cur, old)]
            rates = [d / elapsed for d in delta[:5]]
            rates.append(delta[5] / delta[4] if delta[4] else 0.0)
            out[db] = rates
        if now - since >= STATS_PERIOD:
            self._period = (now, {db: v[:] for db, v in totals.items()})
        return out

    def pools(self) -> dict[tuple[str, str], PoolView]:
        """Client and server counts per (database, user) pool."""
        app = self.app
        cfg = app.cfg
        views: dict[tuple[str, str], PoolView] = {}
        linked = {}
        for s in list(app.clients):
            if s.server is not None:
                linked[s.server] = s
        for (tname, db, user), pool in list(app.pools.items()):
            v = views.get((db, user))
            if v is None:
                target = cfg.databases.get(tname)
                mode = (target.pool_mode if target is not None else None) or cfg.pool_mode
                v = views[(db, user)] = PoolView(db, user, mode)
            v.target_names.add(tname)
            v.size += pool.size
            waits = getattr(pool, "waits", None)
            if waits:
                waits.clear()  # the pool's own record; pool_wait_seconds is measured around app.lease
            for conn in list(pool.active):
                if conn in linked:
                    v.sv_active += 1
                else:
                    v.sv_tested += 1
            v.sv_idle += len(pool.idle)
            v.sv_login += pool.opening
        now = time.monotonic()
        for s in list(app.clients):
            labels = session_pool_labels(s)
            if labels is None or s.closed:
                continue
            v = views.get(labels)
            if v is None:
                target = s.target
                v = views[labels] = PoolView(labels[0], labels[1], target.pool_mode or cfg.pool_mode)
                v.target_names.add(target.name)
            state = session_state(s, self.waiting)
            if state == "active":
                v.cl_active += 1
            elif state == "waiting":
                v.cl_waiting += 1
                started = self.waiting.get(s) or getattr(s, "wait_started", None) or now
                v.maxwait = max(v.maxwait, now - started)
            elif state == "idle":
                v.cl_idle += 1
            else:
                v.cl_login += 1
        return views

    # -- HTTP endpoint ------------------------------------------------------------------------
    def render(self) -> bytes:
        """The exposition text of every series."""
        return generate_latest(self.registry)

    async def render_all(self) -> bytes:
        """What ``GET /metrics`` answers: ``render()``; with ``workers`` > 1 the first worker's
        instance is given one that sums every worker's series (``proxy.workers``)."""
        return self.render()

    async def start(self, addr: str, port: int) -> None:
        """Serve ``GET /metrics`` on ``addr``:``port`` (``*`` = all addresses)."""
        host = None if addr == "*" else [a.strip() for a in addr.split(",") if a.strip()]
        self._server = await asyncio.start_server(self._handle, host, port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("event=metrics_listening addr=%s port=%s", addr, self.port)

    def close(self) -> None:
        """Stop the HTTP endpoint."""
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            line = request.split(b"\r\n", 1)[0].split()
            method = line[0] if line else b""
            path = line[1].split(b"?", 1)[0] if len(line) > 1 else b""
            if method not in (b"GET", b"HEAD"):
                status, body, ctype = b"405 Method Not Allowed", b"only GET\n", b"text/plain"
            elif path in (b"/metrics", b"/"):
                status, body, ctype = b"200 OK", await self.render_all(), b"text/plain; version=0.0.4; charset=utf-8"
            else:
                status, body, ctype = b"404 Not Found", b"see /metrics\n", b"text/plain"
            head = (b"HTTP/1.0 " + status + b"\r\nContent-Type: " + ctype + b"\r\nContent-Length: "
                    + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n")
            writer.write(head if method == b"HEAD" else head + body)
            await writer.drain()
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        except Exception:
            log.exception("event=metrics_error")
        finally:
            writer.close()


class _Collector:
    """Builds the gauges and counters from the live sessions and pools at scrape time."""

    def __init__(self, metrics: Metrics):
        self.m = metrics

    def collect(self) -> Iterable[Any]:
        m = self.m
        app = m.app
        yield m.pool_wait()
        clients = GaugeMetricFamily(PREFIX + "client_connections", "Client connections by pool and state",
                                    labels=["database", "user", "state"])
        servers = GaugeMetricFamily(PREFIX + "server_connections", "Server connections by pool and state",
                                    labels=["database", "user", "state"])
        sizes = GaugeMetricFamily(PREFIX + "pool_size", "Maximum server connections of the pool",
                                  labels=["database", "user"])
        for (db, user), v in sorted(m.pools().items()):
            for state, n in (("active", v.cl_active), ("waiting", v.cl_waiting), ("idle", v.cl_idle),
                             ("login", v.cl_login)):
                clients.add_metric([db, user, state], n)
            for state, n in (("active", v.sv_active), ("idle", v.sv_idle), ("tested", v.sv_tested),
                             ("login", v.sv_login)):
                servers.add_metric([db, user, state], n)
            sizes.add_metric([db, user], v.size)
        yield clients
        yield servers
        yield sizes
        names = ("transactions", "queries", "received_bytes", "sent_bytes", "server_assignments")
        helps = ("Transactions completed (ReadyForQuery idle after work)", "Queries sent (Query, Sync, FunctionCall)",
                 "Bytes received from clients", "Bytes sent to clients", "Server connections assigned to clients")
        families = [CounterMetricFamily(PREFIX + n, h, labels=["database"]) for n, h in zip(names, helps)]
        for db, t in sorted(m.totals().items()):
            for fam, value in zip(families, t[:5]):
                fam.add_metric([db], value)
        yield from families
        q = getattr(getattr(app, "interceptor", None), "query", None)
        split = CounterMetricFamily(PREFIX + "statements_split", "Statements the iasql_* interceptor split out of Queries")
        split.add_metric([], getattr(q, "split_statements", 0))
        yield split
        inter = CounterMetricFamily(PREFIX + "statements_intercepted", "Statements that called iasql_* functions")
        inter.add_metric([], getattr(q, "intercepted_statements", 0))
        yield inter
        ops = getattr(app, "ops", None)
        running = GaugeMetricFamily(PREFIX + "engine_calls_running", "iasql_* engine calls running now")
        running.add_metric([], len(ops.journal.running) if ops is not None else 0)
        yield running
        tls = CounterMetricFamily(PREFIX + "tls_handshake_failures", "Failed TLS handshakes with clients")
        tls.add_metric([], app.tls_failures)
        yield tls
        auth = CounterMetricFamily(PREFIX + "auth_failures", "Failed client authentications")
        auth.add_metric([], app.auth_failures)
        yield auth
        admins = GaugeMetricFamily(PREFIX + "admin_clients", "Sessions on the admin console")
        admins.add_metric([], sum(1 for s in list(app.clients) if getattr(s, "admin_role", None) is not None))
        yield admins
        paused = GaugeMetricFamily(PREFIX + "paused", "1 while every database is paused (PAUSE)")
        paused.add_metric([], 1 if ops is not None and ops.paused_all else 0)
        yield paused
