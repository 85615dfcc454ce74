"""What one huge message costs the proxy and the other clients: ``python -m tools.bench.large_message``.

Starts a throwaway Postgres and the proxy (transaction pooling, the engine on, every other key at
its default unless ``--max-packet-size`` is given), keeps ``--clients`` clients running
``SELECT 1`` back to back, and then, per case, one more client sends one Query of ``--mb``
MiB: a plain one (``SELECT length('xxx...')``), one whose text contains ``iasql_`` (classified by
the interceptor), texts that may change session state (too long to analyse, or analysed in a
worker thread), and one that exceeds ``max_packet_size`` (refused). For each case it prints the
answer the big client got, the proxy's resident memory above its level before the case (sampled
every 5 ms) and the longest any ``SELECT 1`` took while the case ran (the stall the others saw),
against the longest before it. Results are measurements, not pass/fail: README "Memory" quotes
them.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

from proxy.embedded.postgres import EmbeddedPostgres
from proxy.wire import frontend as F
from tests.support.faults import RawConn, errors_in
from tests.support.proxy import ProxyProcess
from tools.bench.stack import rss_bytes

MiB = 1 << 20


class Sampler(threading.Thread):
    """Polls a pid's VmRSS every 5 ms; ``peak`` is the largest value since the last ``reset``."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.stop = threading.Event()

    def reset(self) -> int:
        """Start a new window; returns the current RSS (bytes)."""
        now = rss_bytes(self.pid)
        self.peak = now
        return now

    def run(self) -> None:
        """Sample until stopped (or the process is gone)."""
        while not self.stop.is_set():
            try:
                self.peak = max(self.peak, rss_bytes(self.pid))
            except OSError:
                return
            time.sleep(0.005)


class Pinger(threading.Thread):
    """One client running ``SELECT 1`` in a loop; ``worst`` is its slowest round trip (seconds)
    since the last ``reset``."""

    def __init__(self, port: int):
        super().__init__(daemon=True)
        self.conn = RawConn(port, timeout=60)
        self.conn.startup("postgres", password="postgres")
        self.worst = 0.0
        self.count = 0
        self.stop = threading.Event()
        self.error: str | None = None

    def reset(self) -> None:
        """Start a new window."""
        self.worst = 0.0
        self.count = 0

    def run(self) -> None:
        """Query until stopped; a failure is kept in ``error``."""
        msg = F.Query("SELECT 1").encode()
        try:
            while not self.stop.is_set():
                t0 = time.perf_counter()
                self.conn.send(msg)
                self.conn.read_until_ready()
                self.worst = max(self.worst, time.perf_counter() - t0)
                self.count += 1
        except Exception as e:  # noqa: BLE001 - reported, not raised: the bench goes on
            self.error = repr(e)


def big_query(size: int, marker: str = "") -> bytes:
    """A Query of about ``size`` bytes: ``SELECT length('xx...')`` with ``marker`` in the literal."""
    head, tail = "SELECT length('" + marker, "')"
    return F.Query(head + "x" * max(0, size - len(head) - len(tail) - 6) + tail).encode()


def token_query(size: int) -> bytes:
    """A Query of about ``size`` bytes made of many small tokens, which mentions ``pg_temp`` (so
    the proxy must analyse it for session state): ``SELECT 'pg_temp', count(*) FROM (VALUES (1),(1),...)``."""
    head = "SELECT 'pg_temp', count(*) FROM (VALUES (1)"
    n = max(1, (size - len(head) - 10) // 4)
    return F.Query(head + ",(1)" * n + ") v").encode()


def run_case(port: int, name: str, data: bytes, sampler: Sampler, pingers: list[Pinger]) -> dict:
    """Send ``data`` on a fresh client and measure while it is answered."""
    conn = RawConn(port, timeout=300)
    conn.startup("postgres", password="postgres")
    time.sleep(0.5)
    base_rss = sampler.reset()
    for p in pingers:
        p.reset()
    time.sleep(1.0)
    before = max(p.worst for p in pingers)
    for p in pingers:
        p.reset()
    sampler.reset()
    t0 = time.perf_counter()
    got = []
    try:
        conn.send(data)
    except OSError:
        pass  # refused before it was all sent: the answer is read below
    try:
        while (msg := conn.read_message()) is not None:
            got.append(msg)
            if msg[0] == "Z":
                break
    except OSError as e:
        got.append(("error", repr(e).encode()))
    took = time.perf_counter() - t0
    time.sleep(0.3)
    conn.close()
    errs = errors_in([m for m in got if m[0] in "EN"])
    answer = f"{errs[0].get('S')} {errs[0].sqlstate} {errs[0].message}" if errs else \
        ",".join(t for t, _ in got)
    return {"case": name, "bytes": len(data), "answer": answer, "seconds": round(took, 2),
            "rss_extra_mib": round((sampler.peak - base_rss) / MiB, 1),
            "worst_select1_ms": round(max(p.worst for p in pingers) * 1000, 1),
            "worst_before_ms": round(before * 1000, 1)}


def main(argv: list[str] | None = None) -> int:
    """Run the cases and print one line per case."""
    ap = argparse.ArgumentParser(prog="python -m tools.bench.large_message", description=__doc__)
    ap.add_argument("--mb", type=float, default=60.0, help="size of the big Query, MiB (default 60)")
    ap.add_argument("--clients", type=int, default=4, help="clients running SELECT 1 meanwhile (default 4)")
    ap.add_argument("--max-packet-size", default=None, help="max_packet_size for the proxy (default: its default)")
    ap.add_argument("--pure", action="store_true", help="run the proxy's pure-Python forms (IASQL_PROXY_PURE=1)")
    ap.add_argument("--direct", action="store_true",
                    help="send everything to Postgres directly, without the proxy: the stall this machine "
                         "shows with no proxy at all, to compare with (memory is then Postgres's postmaster's)")
    a = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="large-message-"))
    pg = EmbeddedPostgres(password="postgres")
    pg.start()
    proxy = None
    try:
        userlist = work / "userlist.txt"
        userlist.write_text('"postgres" "postgres"\n')
        ini = "\n".join([
            "[databases]", f"* = host=127.0.0.1 port={pg.port}", "", "[proxy]",
            "auth_type = scram-sha-256", f"auth_file = {userlist}", "auth_user = postgres",
            "server_tls_sslmode = disable", "pool_mode = transaction", "default_pool_size = 8",
            *( [f"max_packet_size = {a.max_packet_size}"] if a.max_packet_size else []), ""])
        env = {"IASQL_PROXY_PURE": "1"} if a.pure else None
        proxy = ProxyProcess(ini, work / "proxy", env=env).start(timeout=60)
        port, pid = (pg.port, pg.process.pid) if a.direct else (proxy.port, proxy.process.pid)
        sampler = Sampler(pid)
        sampler.start()
        pingers = [Pinger(port) for _ in range(a.clients)]
        for p in pingers:
            p.start()
        size = int(a.mb * MiB)
        limit = int(a.max_packet_size) if a.max_packet_size else None
        cases = [("plain Query", big_query(size)), ("Query containing iasql_", big_query(size, "iasql_")),
                 ("literal mentioning timestamp (not a state change)", big_query(size, "timestamp")),
                 ("literal mentioning pg_temp (may change session state: pinned, not analysed)",
                  big_query(size, "pg_temp")),
                 (f"{min(a.mb, 8):g} MiB of small tokens mentioning pg_temp (pinned, not analysed)",
                  token_query(int(min(a.mb, 8) * MiB))),
                 ("60 KiB of small tokens mentioning pg_temp (analysed in a worker thread)",
                  token_query(60 * 1024)),
                 ("over max_packet_size", big_query((limit or 64 * MiB) + MiB))]
        print(f"{'Postgres directly' if a.direct else 'proxy'} pid {pid}, {a.clients} clients running SELECT 1, "
              f"big Query {a.mb} MiB")
        for name, data in cases:
            if a.direct and name == "over max_packet_size":
                continue  # the proxy's own limit
            r = run_case(port, name, data, sampler, pingers)
            print(r, flush=True)
        for p in pingers:
            p.stop.set()
            if p.error:
                print(f"pinger error: {p.error}")
        sampler.stop.set()
        tracebacks = proxy.log().count("Traceback")
        print(f"tracebacks in the proxy log: {tracebacks}")
        return 0
    finally:
        if proxy is not None:
            proxy.stop()
        pg.stop()


if __name__ == "__main__":
    sys.exit(main())
