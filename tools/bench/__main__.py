"""``python -m tools.bench``: see tools/bench/__init__.py and ``--help``."""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


def parse(argv: list[str]):
    from tools.bench.run import Options

    p = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__)
    p.add_argument("--seconds", type=int, default=_env_int("BENCH_SECONDS", 20),
                   help="pgbench seconds per run (env BENCH_SECONDS, default 20)")
    p.add_argument("--rounds", type=int, default=_env_int("BENCH_ROUNDS", 3),
                   help="alternating rounds, the median is reported (env BENCH_ROUNDS, default 3)")
    p.add_argument("--conn-seconds", type=int, default=_env_int("BENCH_CONN_SECONDS", 0) or None,
                   help="seconds per pgbench -C run (env BENCH_CONN_SECONDS, default: half of --seconds, at least 3)")
    p.add_argument("--latency-n", type=int, default=_env_int("BENCH_LATENCY_N", 2000),
                   help="queries per latency case (env BENCH_LATENCY_N, default 2000)")
    p.add_argument("--idle", default=os.environ.get("BENCH_IDLE", "1000,10000"),
                   help="idle TLS client counts, comma-separated (env BENCH_IDLE, default 1000,10000)")
    p.add_argument("--skip", default=os.environ.get("BENCH_SKIP", ""),
                   help="phases to skip: throughput,connect,workers,latency,idle,websockets,modules (env BENCH_SKIP)")
    p.add_argument("--out", default=str(REPO / "bench" / "results"), help="results directory")
    p.add_argument("--no-deps", action="store_true", help="do not run tools/bench_deps.sh first")
    a = p.parse_args(argv)
    env = " ".join(f"{k}={shlex.quote(os.environ[k])}" for k in
                   ("BENCH_SECONDS", "BENCH_ROUNDS", "BENCH_CONN_SECONDS", "BENCH_LATENCY_N", "BENCH_IDLE",
                    "BENCH_SKIP") if os.environ.get(k))
    cmd = " ".join(filter(None, [env, "make bench" if os.environ.get("MAKELEVEL") else "python -m tools.bench",
                                 shlex.join(argv)]))
    opts = Options(seconds=a.seconds, rounds=a.rounds, conn_seconds=a.conn_seconds, latency_n=a.latency_n,
                   idle_counts=tuple(int(x) for x in a.idle.split(",") if x.strip()) or (0,),
                   out_dir=Path(a.out), skip=frozenset(x.strip() for x in a.skip.split(",") if x.strip()),
                   command=cmd)
    return opts, a


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    opts, a = parse(argv)
    if not a.no_deps:
        rc = subprocess.run(["bash", str(REPO / "tools" / "bench_deps.sh"), sys.executable], cwd=REPO).returncode
        if rc != 0:
            print("bench: dependencies missing (see above)", file=sys.stderr)
            return 1
    from tools.bench.run import main as run_main

    return run_main(opts)


if __name__ == "__main__":
    sys.exit(main())
