"""The bench run: start everything, measure, stop everything, write the results.

Phases (issue 8): throughput with pgbench -S (direct, PgBouncer, proxy; alternating rounds, median),
CPU per transaction of PgBouncer and the proxy from /proc, connection-heavy load (pgbench -C) with
and without TLS, split overhead and iasql_version() latency through the proxy with the engine on,
and proxy memory with 1,000 and 10,000 idle TLS clients. Issue 20: pgbench through a proxy with the
HTTPS endpoint on, with and without 1,000 idle WebSockets open at /run (phase ``websockets``).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from proxy.certs import ensure_dev_certs
from tools.bench import load, stack

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Options:
    seconds: int = 20
    rounds: int = 3
    conn_seconds: int | None = None      # -C runs (default: half of seconds, at least 3)
    latency_n: int = 2000
    idle_counts: tuple[int, ...] = (1000, 10000)
    pool_size: int = 20
    session_pool_size: int = 60          # session mode: every pgbench client needs its own server
    out_dir: Path = REPO / "bench" / "results"
    skip: frozenset[str] = frozenset()   # phase names to skip: throughput, connect, workers, latency, idle, websockets, modules
    command: str = ""


@dataclass
class Results:
    started: float = field(default_factory=time.time)
    pool_mode: str = "session"
    pool_mode_note: str = ""
    pool_size: int = 20
    # (label, target) -> list of PgbenchResult
    throughput: dict[tuple[str, str], list[load.PgbenchResult]] = field(default_factory=dict)
    connect: dict[tuple[str, str], list[load.PgbenchResult]] = field(default_factory=dict)
    latency: list[tuple[str, str, float, float, list[str]]] = field(default_factory=list)
    idle: list[dict] = field(default_factory=list)
    # (label, workers) -> list of PgbenchResult: the workers phase
    workers: dict[tuple[str, int], list[load.PgbenchResult]] = field(default_factory=dict)
    idle_baseline: int | None = None
    # issue 20: {"without": [PgbenchResult], "with": [...], "opens": [WebSocketResult], "still_open": [int],
    # "rss_without": [bytes], "rss_with": [bytes]}
    websockets: dict = field(default_factory=dict)
    modules: dict | None = None  # tools.bench.modules.measure()
    errors: list[str] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    options: Options | None = None
    elapsed: float = 0.0


TARGETS = ("direct", "pgbouncer", "proxy")
THROUGHPUT_CONFIGS = [  # (label, -M, clients, TLS)
    ("simple, 10 clients", "simple", 10, False),
    ("extended, 10 clients", "extended", 10, False),
    ("simple, 50 clients", "simple", 50, False),
    ("extended, 50 clients", "extended", 50, False),
    ("simple, 10 clients, TLS", "simple", 10, True),
]
#: The workers phase: the same proxy with ``workers = 1`` and ``workers = 2`` (label, -M, clients).
WORKER_CONFIGS = [
    ("simple, 50 clients", "simple", 50),
    ("extended, 50 clients", "extended", 50),
]
WORKER_COUNTS = (1, 2)
CONNECT_CONFIGS = [  # (label, TLS, auth)
    ("-C, trust", False, "trust"),
    ("-C, trust, TLS", True, "trust"),
    ("-C, SCRAM", False, "scram"),
]


def conn_seconds(opts: "Options") -> int:
    return opts.conn_seconds or max(3, opts.seconds // 2)


class Progress:
    def __init__(self, total_runs: int, run_seconds: float):
        self.total = total_runs
        self.done = 0
        self.run_seconds = run_seconds
        self.t0 = time.monotonic()

    def step(self, text: str) -> None:
        self.done += 1
        elapsed = time.monotonic() - self.t0
        left = max(0, self.total - self.done)
        eta = elapsed / self.done * left if self.done else left * self.run_seconds
        print(f"[{self.done}/{self.total} {elapsed / 60:4.1f} min, ~{eta / 60:.1f} min left] {text}", flush=True)


def say(text: str) -> None:
    print(f"bench: {text}", flush=True)


def _fmt(x: float | None, nd: int = 0) -> str:
    return "-" if x is None else f"{x:,.{nd}f}"


def probe_transaction_mode(pg, work: Path, certs) -> tuple[str, str]:
    """Does the proxy pool per transaction? Two clients on a pool of ONE server connection must both
    run statements (session pooling makes the second wait for query_wait_timeout), then a short
    pgbench -M extended on a pool of 2 must finish without errors."""
    import psycopg

    cfg = stack.proxy_config(pg, work / "probe", certs, pool_mode="transaction", pool_size=1, tls=False,
                             query_wait_timeout="4")
    try:
        proxy = stack.start_proxy(cfg, work / "probe")
    except RuntimeError as e:
        return "session", f"the proxy refused pool_mode = transaction: {str(e).strip()[-300:]}"
    try:
        outcome: dict[int, str] = {}
        barrier = threading.Barrier(2, timeout=8)

        def client(i: int) -> None:
            try:
                with psycopg.connect(proxy.dsn(), autocommit=True, connect_timeout=8) as c:
                    barrier.wait()  # both logged in at the same time, on a pool of one
                    for _ in range(20):
                        c.execute("SELECT 1").fetchall()
                    c.execute("BEGIN")
                    c.execute("SELECT 1").fetchall()
                    c.execute("COMMIT")
                outcome[i] = "ok"
            except Exception as e:  # noqa: BLE001 - reported
                outcome[i] = f"{type(e).__name__}: {str(e).strip()}"

        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        bad = {i: o for i, o in outcome.items() if o != "ok"}
        if len(outcome) < 2 or bad:
            what = "; ".join(bad.values()) or "a client hung"
            logged = [line for line in stack.proxy_errors(proxy) if "Error" in line or " ERROR " in line]
            if logged:
                what += f" (proxy log: {' | '.join(logged[-3:])})"
            return "session", ("pool_mode = transaction is accepted but 2 clients cannot share 1 server "
                               f"connection (session pooling): {what}")
        proxy.stop()
        cfg = stack.proxy_config(pg, work / "probe2", certs, pool_mode="transaction", pool_size=2, tls=False,
                                 query_wait_timeout="10")
        proxy = stack.start_proxy(cfg, work / "probe2")
        for mode in ("extended", "simple"):
            r = load.pgbench(proxy.port, clients=6, seconds=2, mode=mode)
            if r.errors or not r.tps:
                logged = [line for line in stack.proxy_errors(proxy) if "Error" in line or " ERROR " in line]
                return "session", (f"pool_mode = transaction misbehaves under pgbench -M {mode}: {'; '.join(r.errors)}"
                                   + (f" (proxy log: {' | '.join(logged[-3:])})" if logged else ""))
        return "transaction", "pool_mode = transaction probe passed (2 clients on 1 server connection; pgbench on a pool of 2)"
    finally:
        proxy.stop()


def run_throughput(res: Results, opts: Options, endpoints: dict, prog: Progress) -> None:
    for rnd in range(opts.rounds):
        for ci, (label, mode, clients, tls) in enumerate(THROUGHPUT_CONFIGS):
            order = list(TARGETS)
            k = (rnd + ci) % len(order)
            order = order[k:] + order[:k]  # alternate which system goes first
            for target in order:
                port, pid = endpoints[(target, tls, "scram")]
                r = load.pgbench(port, clients=clients, seconds=opts.seconds, mode=mode,
                                 sslmode="require" if tls else "disable", cpu_pid=pid)
                res.throughput.setdefault((label, target), []).append(r)
                for e in r.errors:
                    res.errors.append(f"{target} [{label}, round {rnd + 1}]: {e}")
                cpu = f", {r.cpu_us_per_tx:.1f} us CPU/tx" if r.cpu_us_per_tx else ""
                prog.step(f"round {rnd + 1} {label:<24} {target:<9} {_fmt(r.tps)} tps, "
                          f"{_fmt(r.latency_ms, 3)} ms{cpu}{'  ERRORS: ' + '; '.join(r.errors) if r.errors else ''}")


def run_connect(res: Results, opts: Options, endpoints: dict, prog: Progress) -> None:
    secs = conn_seconds(opts)
    for rnd in range(opts.rounds):
        for ci, (label, tls, auth) in enumerate(CONNECT_CONFIGS):
            order = list(TARGETS)
            k = (rnd + ci) % len(order)
            order = order[k:] + order[:k]
            for target in order:
                port, pid = endpoints[(target, tls, auth)]
                r = load.pgbench(port, clients=10, seconds=secs, mode="simple", connect_each=True,
                                 sslmode="require" if tls else "disable", cpu_pid=pid,
                                 user=stack.TRUST_USER if auth == "trust" else "postgres")
                res.connect.setdefault((label, target), []).append(r)
                for e in r.errors:
                    res.errors.append(f"{target} [{label}, round {rnd + 1}]: {e}")
                cpu = f", {r.cpu_us_per_tx:.0f} us CPU/conn" if r.cpu_us_per_tx else ""
                prog.step(f"round {rnd + 1} {label:<24} {target:<9} {_fmt(r.tps)} conn+tx/s{cpu}"
                          f"{'  ERRORS: ' + '; '.join(r.errors) if r.errors else ''}")


def run_workers(res: Results, opts: Options, pg, work: Path, certs) -> None:
    """The same proxy (SCRAM, no TLS, the run's pool mode) with ``workers = 1`` and ``workers = 2``
    under pgbench -S, alternating which goes first; CPU is the whole process tree's (supervisor and
    workers). Both have the same number of server connections in all: ``workers = 2`` gets half
    the pool size per worker (``default_pool_size`` is per worker)."""
    proxies = {}
    try:
        for n in WORKER_COUNTS:
            size = max(1, res.pool_size // n)
            cfg = stack.proxy_config(pg, work / f"workers-{n}", certs, pool_mode=res.pool_mode, pool_size=size,
                                     tls=False, workers=n)
            proxies[n] = stack.start_proxy(cfg, work / f"workers-{n}")
        if len(WORKER_COUNTS) > 1:  # every worker listening, not just the first
            deadline = time.monotonic() + 60
            while "event=workers_ready" not in proxies[max(WORKER_COUNTS)].log() and time.monotonic() < deadline:
                time.sleep(0.1)
        for rnd in range(opts.rounds):
            for ci, (label, mode, clients) in enumerate(WORKER_CONFIGS):
                order = list(WORKER_COUNTS)
                k = (rnd + ci) % len(order)
                for n in order[k:] + order[:k]:
                    p = proxies[n]
                    r = load.pgbench(p.port, clients=clients, seconds=opts.seconds, mode=mode, cpu_pid=p.process.pid)
                    res.workers.setdefault((label, n), []).append(r)
                    for e in r.errors:
                        res.errors.append(f"proxy workers={n} [{label}, round {rnd + 1}]: {e}")
                    cpu = f", {r.cpu_us_per_tx:.1f} us CPU/tx" if r.cpu_us_per_tx else ""
                    say(f"workers round {rnd + 1} {label:<22} workers={n} {_fmt(r.tps)} tps{cpu}"
                        f"{'  ERRORS: ' + '; '.join(r.errors) if r.errors else ''}")
        for n, p in proxies.items():
            res.errors += [f"proxy workers={n} log: {line}" for line in stack.proxy_errors(p)[:20]]
    finally:
        for p in proxies.values():
            p.stop()


def run_latency(res: Results, opts: Options, pg, work: Path, certs) -> None:
    cfg = stack.proxy_config(pg, work / "engine", certs, pool_mode=res.pool_mode, pool_size=res.pool_size,
                             tls=False, auth="trust", engine=True, fixed_password=True)
    proxy = stack.start_proxy(cfg, work / "engine")
    try:
        n = opts.latency_n
        cases = [
            ("SELECT 1", "SELECT 1"),
            ("SELECT * FROM iasql_version()", "SELECT * FROM iasql_version()"),
            ("split: 3 statements with iasql_version()",
             "SELECT 1 AS a; SELECT * FROM iasql_version(); SELECT 2 AS b"),
            ("same text's ordinary statements alone", "SELECT 1 AS a; SELECT 2 AS b"),
            # calls that read the database: their statements run on the client's own connection
            ("iasql_modules_installed() (reads the database)", "SELECT * FROM iasql_modules_installed()"),
            ("iasql_get_sql_since(expression)", "SELECT * FROM iasql_get_sql_since(now() - interval '1 minute')"),
        ]
        for label, sql in cases:
            try:
                p50, p99, errors = load.latency(proxy.port, sql, n)
            except Exception as e:  # noqa: BLE001 - reported as a bug
                p50 = p99 = float("nan")
                errors = [f"{type(e).__name__}: {e}"]
            res.latency.append((label, sql, p50, p99, errors))
            for e in errors:
                res.errors.append(f"proxy (engine on) [{label}]: {e}")
            say(f"latency {label:<44} p50 {p50:.3f} ms  p99 {p99:.3f} ms{'  ERRORS: ' + '; '.join(errors) if errors else ''}")
        res.errors += [f"proxy (engine on) log: {line}" for line in stack.proxy_errors(proxy)[:20]]
    finally:
        proxy.stop()


def run_idle(res: Results, opts: Options, pg, work: Path, certs) -> None:
    biggest = max(opts.idle_counts)
    cfg = stack.proxy_config(pg, work / "idle", certs, pool_mode=res.pool_mode, pool_size=res.pool_size,
                             tls=True, auth="trust", max_client_conn=biggest + 1000, fixed_password=True,
                             query_wait_timeout="3600")
    proxy = stack.start_proxy(cfg, work / "idle")
    pid = proxy.process.pid
    try:
        try:
            import uvloop
            runner = uvloop.run
        except ImportError:
            runner = asyncio.run

        async def scenario() -> None:
            warm = load.IdleClients(proxy.port)
            await warm.open(20, 60)
            await warm.close()
            await asyncio.sleep(3)
            res.idle_baseline = stack.rss_bytes(pid)
            say(f"idle: proxy RSS baseline {res.idle_baseline / 2**20:.1f} MiB")
            for n in opts.idle_counts:
                clients = load.IdleClients(proxy.port, concurrency=400, ready_wait=0.5)
                r = await clients.open(n, budget=max(120.0, n / 30))
                await asyncio.sleep(2)
                rss = stack.rss_bytes(pid)
                cpu_before_close = stack.cpu_seconds(pid)
                await clients.close()
                await asyncio.sleep(8)
                after = stack.rss_bytes(pid)
                row = {"clients": n, "ready": r.ready, "waiting": r.waiting, "failed": r.failed,
                       "open_s": r.seconds, "rss": rss, "after": after, "errors": r.errors,
                       "cpu_s": cpu_before_close}
                res.idle.append(row)
                for e, count in r.errors.items():
                    res.errors.append(f"proxy idle TLS clients [{n}]: {count} x {e}")
                say(f"idle: {n} clients ({r.ready} ready, {r.waiting} waiting for a server, {r.failed} failed) "
                    f"in {r.seconds:.1f} s: RSS {rss / 2**20:.1f} MiB "
                    f"({(rss - res.idle_baseline) / max(1, r.ready + r.waiting) / 1024:.1f} KiB/client); "
                    f"after they left {after / 2**20:.1f} MiB")

        runner(scenario())
        res.errors += [f"proxy (idle) log: {line}" for line in stack.proxy_errors(proxy)[:20]]
    finally:
        proxy.stop()


#: Idle WebSockets held open at /run during the pgbench runs of the ``websockets`` phase.
WS_CLIENTS = 1000
WS_LABEL = "simple, 10 clients"


def run_websockets(res: Results, opts: Options, pg, work: Path, certs) -> None:
    """pgbench -S (simple, 10 clients, no TLS) through one proxy with ``http_listen_port`` set,
    alternating runs without and with ``WS_CLIENTS`` idle WebSockets open at /run (TLS, HTTP Basic
    as postgres), the sockets held by a client loop in a thread of this process that answers the
    endpoint's pings. The proxy's CPU per transaction counts both of its threads."""
    import socket

    from proxy.embedded.postgres import free_port

    http_port = free_port()
    cfg = stack.proxy_config(pg, work / "ws", certs, pool_mode=res.pool_mode, pool_size=res.pool_size, tls=False,
                             max_client_conn=WS_CLIENTS + 1000)
    cfg = cfg.replace("server_tls_sslmode = disable", "server_tls_sslmode = disable\nclient_tls_sslmode = prefer\n"
                      f"client_tls_cert_file = {certs[1]}\nclient_tls_key_file = {certs[2]}\n"
                      f"http_listen_port = {http_port}\nhttp_idle_timeout = 0")
    proxy = stack.start_proxy(cfg, work / "ws")
    pid = proxy.process.pid
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True, name="bench-websockets")
    thread.start()

    def on_loop(coro, timeout: float):
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)

    ws = res.websockets
    try:
        deadline = time.monotonic() + 30
        while True:  # the endpoint listens just after the PostgreSQL port
            try:
                socket.create_connection(("127.0.0.1", http_port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the proxy's /run endpoint never listened on {http_port}") from None
                time.sleep(0.05)
        for rnd in range(opts.rounds):
            for with_ws in ((False, True) if rnd % 2 == 0 else (True, False)):
                clients = None
                if with_ws:
                    clients = load.IdleWebSockets(http_port, "postgres", stack.PASSWORD)
                    opened = on_loop(clients.open(WS_CLIENTS, budget=180), 200)
                    ws.setdefault("opens", []).append(opened)
                    for e, count in opened.errors.items():
                        res.errors.append(f"proxy /run WebSockets [round {rnd + 1}]: {count} x {e}")
                    time.sleep(1)
                ws.setdefault("rss_with" if with_ws else "rss_without", []).append(stack.rss_bytes(pid))
                r = load.pgbench(proxy.port, clients=10, seconds=opts.seconds, mode="simple", cpu_pid=pid)
                ws.setdefault("with" if with_ws else "without", []).append(r)
                for e in r.errors:
                    res.errors.append(f"proxy [{WS_LABEL}{', idle WebSockets' if with_ws else ''}, round {rnd + 1}]: {e}")
                extra = ""
                if clients is not None:
                    still = clients.still_open()
                    ws.setdefault("still_open", []).append(still)
                    extra = f", {opened.opened} WebSockets opened in {opened.seconds:.1f} s, {still} still open after"
                    on_loop(clients.close(), 60)
                say(f"websockets round {rnd + 1} {'with' if with_ws else 'without'} {WS_CLIENTS} idle: "
                    f"{_fmt(r.tps)} tps, {_fmt(r.latency_ms, 3)} ms, "
                    f"{_fmt(r.cpu_us_per_tx, 1)} us CPU/tx{extra}")
        res.errors += [f"proxy (websockets) log: {line}" for line in stack.proxy_errors(proxy)[:20]]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        proxy.stop()


def median(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def main(opts: Options) -> int:
    from tools.bench import report

    res = Results(options=opts)
    nofile = stack.raise_nofile(max(65536, max(opts.idle_counts) * 3))
    certs = ensure_dev_certs(REPO / "certs")
    work = Path(tempfile.mkdtemp(prefix="iasql-bench-"))
    os.chmod(work, 0o755)
    res.versions = {
        "cpus": str(os.cpu_count()),
        "postgres": stack.postgres_version(),
        "pgbouncer": stack.pgbouncer_version(),
        "python": sys.version.split()[0],
        "proxy": report.proxy_version(),
        "pgbench": subprocess.run(["pgbench", "--version"], capture_output=True, text=True).stdout.strip(),
        "nofile": str(nofile),
        "load_start": " ".join(open("/proc/loadavg").read().split()[:3]),
    }
    say(f"work dir {work}; {res.versions['cpus']} CPUs; {res.versions['postgres']}; {res.versions['pgbouncer']}")
    pg = pgb = None
    running: list = []
    bouncers: list = []
    t0 = time.monotonic()
    try:
        pg = stack.start_postgres(work, certs)
        say(f"postgres on 127.0.0.1:{pg.port}; pgbench -i -s 1")
        load.pgbench_init(pg.port)
        pg.psql("VACUUM ANALYZE")
        stack.grant_trust_user(pg)
        res.pool_mode, res.pool_mode_note = probe_transaction_mode(pg, work, certs)
        res.pool_size = opts.pool_size if res.pool_mode == "transaction" else opts.session_pool_size
        say(f"pool_mode = {res.pool_mode} for PgBouncer and the proxy, pool size {res.pool_size} "
            f"({res.pool_mode_note})")
        verifier = stack.scram_verifier(pg)
        if not {"throughput", "connect"} <= opts.skip:
            pgb = stack.PgBouncer(work / "pgbouncer", pg, verifier, certs, res.pool_mode, res.pool_size).start()
            pgb_trust = stack.PgBouncer(work / "pgbouncer-trust", pg, verifier, certs, res.pool_mode, res.pool_size,
                                        auth="trust").start()
            bouncers.append(pgb_trust)
            proxies = {}
            for name, tls, auth in (("proxy", False, "scram"), ("proxy-tls", True, "scram"),
                                    ("proxy-trust", False, "trust"), ("proxy-trust-tls", True, "trust")):
                cfg = stack.proxy_config(pg, work / name, certs, pool_mode=res.pool_mode, pool_size=res.pool_size,
                                         tls=tls, auth="trust" if auth == "trust" else "scram-sha-256",
                                         trust_user=auth == "trust")
                proxies[name] = p = stack.start_proxy(cfg, work / name)
                running.append(p)
            endpoints = {}
            for tls in (False, True):
                sfx = "-tls" if tls else ""
                endpoints[("direct", tls, "scram")] = endpoints[("direct", tls, "trust")] = (pg.port, None)
                endpoints[("pgbouncer", tls, "scram")] = (pgb.port, pgb.pid)
                endpoints[("pgbouncer", tls, "trust")] = (pgb_trust.port, pgb_trust.pid)
                p = proxies["proxy" + sfx]
                endpoints[("proxy", tls, "scram")] = (p.port, p.process.pid)
                p = proxies["proxy-trust" + sfx]
                endpoints[("proxy", tls, "trust")] = (p.port, p.process.pid)
            n_t = 0 if "throughput" in opts.skip else opts.rounds * len(THROUGHPUT_CONFIGS) * len(TARGETS)
            n_c = 0 if "connect" in opts.skip else opts.rounds * len(CONNECT_CONFIGS) * len(TARGETS)
            est = n_t * (opts.seconds + 1.5) + n_c * (conn_seconds(opts) + 1.5)
            say(f"{n_t + n_c} pgbench runs, about {est / 60:.1f} min")
            prog = Progress(n_t + n_c, opts.seconds)
            if "throughput" not in opts.skip:
                run_throughput(res, opts, endpoints, prog)
            if "connect" not in opts.skip:
                run_connect(res, opts, endpoints, prog)
            for name, p in proxies.items():
                res.errors += [f"{name} log: {line}" for line in stack.proxy_errors(p)[:20]]
                if p.process.poll() is not None:
                    res.errors.append(f"{name} exited during the run with status {p.process.returncode}")
            for b, name in ((pgb, "pgbouncer"), (pgb_trust, "pgbouncer (trust)")):
                res.errors += [f"{name} log: {line}" for line in b.errors()[:10]]
            for p in running:
                p.stop()
            running.clear()
            for b in bouncers:
                b.stop()
            bouncers.clear()
            pgb.stop()
            pgb = None
        if "workers" not in opts.skip:
            run_workers(res, opts, pg, work, certs)
        if "latency" not in opts.skip:
            run_latency(res, opts, pg, work, certs)
        if "idle" not in opts.skip:
            run_idle(res, opts, pg, work, certs)
        if "websockets" not in opts.skip:
            run_websockets(res, opts, pg, work, certs)
        if "modules" not in opts.skip:
            from tools.bench import modules

            say("modules: 1,000 instances and 200 subnets in moto; install, commit and rollback timed")
            try:
                res.modules = modules.measure(rounds=opts.rounds, say=say)
            except Exception as e:  # noqa: BLE001 - reported, the other phases' results are kept
                res.errors.append(f"modules phase failed: {type(e).__name__}: {e}")
    finally:
        for p in running:
            p.stop()
        for b in bouncers:
            b.stop()
        if pgb is not None:
            pgb.stop()
        if pg is not None:
            pg.stop()
        res.elapsed = time.monotonic() - t0
        res.versions["load_end"] = " ".join(open("/proc/loadavg").read().split()[:3])
    text = report.write(res, opts)
    print(text, flush=True)
    say(f"wrote {opts.out_dir / 'latest.md'} and {opts.out_dir / 'latest.png'} in {res.elapsed / 60:.1f} min "
        f"(work dir {work} kept for logs)")
    return 0
