"""``python -m tests.fuzz`` (``make fuzz N=...``): a long fuzz campaign on a throwaway Postgres and
proxy; the result goes to ``tests/fuzz/last_run.json`` (and a progress line per batch to stdout).
Exit status 1 when the campaign found a crash, a traceback, a leak, a failed fresh client, a
wrong answer or memory over the limit."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from proxy.embedded.postgres import EmbeddedPostgres
from tests.fuzz.campaign import Campaign, prepare_database, proxy_ini_text
from tests.support.proxy import ProxyProcess

OUT = Path(__file__).resolve().parent / "last_run.json"


def main(argv: list[str] | None = None) -> int:
    """Run the campaign; see ``--help``."""
    ap = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__)
    ap.add_argument("--inputs", type=int, default=20000, help="fuzz inputs to run (default 20000)")
    ap.add_argument("--seed", type=int, default=16, help="seed of the generator (default 16)")
    ap.add_argument("--batch", type=int, default=200, help="inputs per batch (default 200)")
    ap.add_argument("--first-batch", type=int, default=0, help="index of the first batch (to replay one)")
    ap.add_argument("--workers", type=int, default=32, help="fuzzing threads (default 32)")
    ap.add_argument("--out", default=str(OUT), help=f"result file (default {OUT})")
    a = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="fuzz-"))
    pg = EmbeddedPostgres(password="postgres")
    pg.start()
    proxy = None
    try:
        prepare_database(pg, "fuzz")
        (work / "userlist.txt").write_text('"postgres" "postgres"\n')
        ini = proxy_ini_text(pg.port, str(work / "userlist.txt"))
        proxy = ProxyProcess(ini, work / "proxy").start(timeout=60)
        proxies = [proxy]

        def restart():
            """A leak or an unanswered client: keep the log, go on with a fresh proxy."""
            proxies[-1].stop()
            fresh = ProxyProcess(ini, work / f"proxy{len(proxies)}").start(timeout=60)
            proxies.append(fresh)
            return fresh.port, fresh.process.pid, fresh.log

        campaign = Campaign(proxy.port, proxy.process.pid, proxy.log, "fuzz", a.seed, batch_size=a.batch,
                            workers=a.workers, restart=restart)
        started = time.strftime("%Y-%m-%d %H:%M:%S")

        def progress(res) -> None:
            print(f"{res.inputs} inputs, {res.seconds:.0f} s: crashes {res.crashes} tracebacks {res.tracebacks} "
                  f"leaks {res.leaks} fresh-client failures {res.fresh_client_failures} cross-client "
                  f"{res.cross_client} good queries {res.good_queries} (errors {res.good_errors}) "
                  f"max RSS {res.max_rss_mib} MiB", flush=True)
            if res.batches % 10 == 0:
                Path(a.out).write_text(res.to_json() + "\n")

        res = campaign.run(a.inputs, first_batch=a.first_batch, on_batch=progress)
        text = res.to_json()
        Path(a.out).write_text(text[:-1] + f',\n  "started": "{started}",\n  "command": "make fuzz N={a.inputs}"\n}}\n')
        print(text)
        print("proxy logs: " + " ".join(str(p.log_path) for p in proxies))
        return 0 if res.ok and res.inputs >= a.inputs else 1
    finally:
        for p in proxies if proxy is not None else ():
            p.stop()
        pg.stop()


if __name__ == "__main__":
    sys.exit(main())
