"""Turn bench Results into bench/results/latest.md (+ latest.json) and latest.png.

Every figure is the median over the rounds. The "Targets" table compares them with issue 8's
targets (reported, not pass/fail).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import statistics
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def proxy_version() -> str:
    try:
        from importlib.metadata import version

        v = version("iasql-proxy")
    except Exception:  # noqa: BLE001
        v = "?"
    if os.environ.get("BENCH_PROXY_REV"):  # run from an exported snapshot (no .git)
        return f"{v} (git {os.environ['BENCH_PROXY_REV']})"
    try:
        sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no", "--",
                                "proxy", "engine"], capture_output=True, text=True).stdout.strip()
        v += f" (git {sha}{', with uncommitted changes in proxy/ or engine/' if dirty else ''})"
    except OSError:
        pass
    return v


def _med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def _f(x, nd=0, suffix=""):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:,.{nd}f}{suffix}"


def _ratio(a, b):
    return a / b if a is not None and b else None


def _summary(runs):
    """Median TPS, latency, CPU us/tx, and total errors of a list of PgbenchResult."""
    return {
        "tps": _med([r.tps for r in runs]),
        "lat": _med([r.latency_ms for r in runs]),
        "cpu": _med([r.cpu_us_per_tx for r in runs]),
        "errors": sum(1 for r in runs if r.errors),
        "n": len(runs),
    }


def _yes(ok: bool | None) -> str:
    return "-" if ok is None else ("yes" if ok else "**no**")


def build(res, opts) -> tuple[str, dict]:
    from tools.bench.run import CONNECT_CONFIGS, THROUGHPUT_CONFIGS, conn_seconds

    date = dt.datetime.fromtimestamp(res.started, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    v = res.versions
    lines = [
        "# iasql-proxy benchmark: latest results",
        "",
        f"- date: {date}; total run time {res.elapsed / 60:.1f} min",
        f"- command: `{opts.command}` (pgbench {opts.seconds} s per run, -C runs {conn_seconds(opts)} s, "
        f"{opts.rounds} alternating "
        f"round{'s' if opts.rounds != 1 else ''}, median reported)",
        f"- machine: {v.get('cpus')} CPUs (pgbench, Postgres, PgBouncer and the proxy share them), everything on "
        f"127.0.0.1; load average (1/5/15 min) {v.get('load_start')} at the start, {v.get('load_end')} at the end "
        "(other work on the machine makes TPS noisy; CPU per transaction is the steadier figure)",
        f"- versions: {v.get('postgres')}; {v.get('pgbouncer')}; {v.get('pgbench')}; Python {v.get('python')}; "
        f"iasql-proxy {v.get('proxy')}",
        f"- pool mode: **{res.pool_mode}** for both PgBouncer and the proxy, pool size {res.pool_size} "
        f"({res.pool_mode_note})",
        "- auth: SCRAM-SHA-256 (PgBouncer and the proxy hold the verifier and log in upstream with the "
        "client key) except the -C trust rows; TLS rows: client TLS to PgBouncer/proxy/Postgres (TLS 1.3, "
        "P-256 certificate), no TLS between pooler and Postgres",
        "",
    ]
    data: dict = {"date": date, "versions": v, "pool_mode": res.pool_mode, "pool_size": res.pool_size,
                  "seconds": opts.seconds, "rounds": opts.rounds, "command": opts.command,
                  "conn_seconds": conn_seconds(opts)}
    targets: list[tuple[str, str, bool | None]] = []

    # -- throughput ------------------------------------------------------------------------------
    rows = []
    if res.throughput:
        lines += ["## Throughput: pgbench -S (select only), scale 1, -j 2",
                  "",
                  "| configuration | direct TPS | PgBouncer TPS | proxy TPS | proxy/PgBouncer | proxy/direct | "
                  "latency ms direct / PgBouncer / proxy | CPU us/tx PgBouncer | CPU us/tx proxy | CPU proxy/PgBouncer |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for label, mode, clients, tls in THROUGHPUT_CONFIGS:
            s = {t: _summary(res.throughput.get((label, t), [])) for t in ("direct", "pgbouncer", "proxy")}
            if not any(x["n"] for x in s.values()):
                continue
            d, b, p = s["direct"], s["pgbouncer"], s["proxy"]
            r_pb, r_pd, r_cpu = _ratio(p["tps"], b["tps"]), _ratio(p["tps"], d["tps"]), _ratio(p["cpu"], b["cpu"])
            errs = sum(x["errors"] for x in s.values())
            lines.append(f"| {label}{' (runs with errors: %d)' % errs if errs else ''} | {_f(d['tps'])} | "
                         f"{_f(b['tps'])} | {_f(p['tps'])} | {_f(r_pb, 2)} | {_f(r_pd, 2)} | "
                         f"{_f(d['lat'], 3)} / {_f(b['lat'], 3)} / {_f(p['lat'], 3)} | {_f(b['cpu'], 1)} | "
                         f"{_f(p['cpu'], 1)} | {_f(r_cpu, 2)} |")
            rows.append({"label": label, "mode": mode, "clients": clients, "tls": tls, **{
                f"{t}_{k}": s[t][k] for t in s for k in ("tps", "lat", "cpu")}, "proxy_over_pgbouncer": r_pb,
                "proxy_over_direct": r_pd, "cpu_ratio": r_cpu})
            limit = 1.5 if tls else 1.3
            targets.append((f"proxy CPU/tx at most {limit} x PgBouncer's ({label})",
                            f"{_f(p['cpu'], 1)} vs {_f(b['cpu'], 1)} us = {_f(r_cpu, 2)} x",
                            None if r_cpu is None else r_cpu <= limit))
            if not tls and clients == 10:
                need = 0.85 if mode == "simple" else 0.8
                targets.append((f"TPS at least {need} x PgBouncer's ({label})", f"{_f(r_pb, 2)} x",
                                None if r_pb is None else r_pb >= need))
        lines += ["", "CPU us/tx = (utime + stime of the pooler process during the run, from /proc) / "
                  "transactions pgbench counted.", ""]
    data["throughput"] = rows

    # -- connection-heavy -------------------------------------------------------------------------
    crows = []
    if res.connect:
        lines += [f"## Connection-heavy: pgbench -S -C (a new connection per transaction), 10 clients, -j 2, "
                  f"{data['conn_seconds']} s per run",
                  "",
                  "trust: Postgres trusts the role on 127.0.0.1 and the poolers use auth_type = trust, so the figure is "
                  "connection handling, not password hashing; SCRAM: libpq's client-side PBKDF2 (4096 iterations) "
                  "is paid in pgbench for every connection, whichever system it talks to.",
                  "",
                  "| configuration | direct TPS | PgBouncer TPS | proxy TPS | proxy/PgBouncer | proxy/direct | "
                  "CPU us/conn PgBouncer | CPU us/conn proxy | CPU proxy/PgBouncer |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for label, tls, _auth in CONNECT_CONFIGS:
            s = {t: _summary(res.connect.get((label, t), [])) for t in ("direct", "pgbouncer", "proxy")}
            if not any(x["n"] for x in s.values()):
                continue
            d, b, p = s["direct"], s["pgbouncer"], s["proxy"]
            r_pb, r_pd, r_cpu = _ratio(p["tps"], b["tps"]), _ratio(p["tps"], d["tps"]), _ratio(p["cpu"], b["cpu"])
            errs = sum(x["errors"] for x in s.values())
            lines.append(f"| {label}{' (runs with errors: %d)' % errs if errs else ''} | {_f(d['tps'])} | "
                         f"{_f(b['tps'])} | {_f(p['tps'])} | {_f(r_pb, 2)} | {_f(r_pd, 2)} | {_f(b['cpu'], 0)} | "
                         f"{_f(p['cpu'], 0)} | {_f(r_cpu, 2)} |")
            crows.append({"label": label, "tls": tls, **{f"{t}_{k}": s[t][k] for t in s for k in ("tps", "cpu")},
                          "proxy_over_pgbouncer": r_pb, "proxy_over_direct": r_pd})
            targets.append((f"-C at least 0.7 x PgBouncer ({label})", f"{_f(r_pb, 2)} x",
                            None if r_pb is None else r_pb >= 0.7))
            targets.append((f"-C at least 10 x direct ({label})", f"{_f(r_pd, 2)} x",
                            None if r_pd is None else r_pd >= 10))
        lines.append("")
    data["connect"] = crows

    # -- workers ---------------------------------------------------------------------------------
    wrows = []
    if res.workers:
        from tools.bench.run import WORKER_CONFIGS, WORKER_COUNTS

        lo, hi = min(WORKER_COUNTS), max(WORKER_COUNTS)
        lines += [f"## Worker processes: the proxy with workers = {lo} vs {hi} (pgbench -S, -j 2, SCRAM, no TLS)",
                  "",
                  f"Same server connections in all: pool size {res.pool_size} with one worker, "
                  f"{max(1, res.pool_size // hi)} per worker with {hi} (default_pool_size is per worker). CPU is the "
                  "supervisor's and every worker's.",
                  "",
                  f"| configuration | TPS workers={lo} | TPS workers={hi} | {hi}/{lo} | CPU us/tx workers={lo} | "
                  f"CPU us/tx workers={hi} | CPU {hi}/{lo} |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for label, mode, clients in WORKER_CONFIGS:
            a, b = (_summary(res.workers.get((label, n), [])) for n in (lo, hi))
            if not (a["n"] or b["n"]):
                continue
            errs = a["errors"] + b["errors"]
            lines.append(f"| {label}{' (runs with errors: %d)' % errs if errs else ''} | {_f(a['tps'])} | "
                         f"{_f(b['tps'])} | {_f(_ratio(b['tps'], a['tps']), 2)} | {_f(a['cpu'], 1)} | "
                         f"{_f(b['cpu'], 1)} | {_f(_ratio(b['cpu'], a['cpu']), 2)} |")
            wrows.append({"label": label, "mode": mode, "clients": clients,
                          **{f"workers{n}_{k}": s[k] for n, s in ((lo, a), (hi, b)) for k in ("tps", "lat", "cpu")}})
        lines.append("")
    data["workers"] = wrows

    # -- latency ---------------------------------------------------------------------------------
    if res.latency:
        lines += [f"## Latency through the proxy with the engine on (one connection, {opts.latency_n} simple "
                  "Queries each, raw-socket client, no TLS)",
                  "", "| query | text | p50 ms | p99 ms |", "|---|---|---:|---:|"]
        lat = {}
        for label, sql, p50, p99, errors in res.latency:
            lat[label] = (p50, p99)
            lines.append(f"| {label}{' (errors)' if errors else ''} | `{sql}` | {_f(p50, 3)} | {_f(p99, 3)} |")
        split = lat.get("split: 3 statements with iasql_version()")
        plain = lat.get("same text's ordinary statements alone")
        ver = lat.get("SELECT * FROM iasql_version()")
        if split and plain:
            o50, o99 = split[0] - plain[0], split[1] - plain[1]
            lines.append(f"| **split overhead** (with call - without) | | {_f(o50, 3)} | {_f(o99, 3)} |")
            targets.append(("split overhead p50 at most 0.3 ms", f"{_f(o50, 3)} ms (p99 {_f(o99, 3)} ms)",
                            None if math.isnan(o50) else o50 <= 0.3))
            data["split_overhead_ms"] = {"p50": o50, "p99": o99}
        if ver:
            targets.append(("iasql_version() p50 at most 1 ms", f"{_f(ver[0], 3)} ms (p99 {_f(ver[1], 3)} ms)",
                            None if math.isnan(ver[0]) else ver[0] <= 1.0))
        lines.append("")
        data["latency"] = [{"label": a, "sql": b, "p50_ms": c, "p99_ms": d, "errors": e} for a, b, c, d, e in res.latency]

    # -- idle ------------------------------------------------------------------------------------
    if res.idle:
        base = res.idle_baseline or 0
        lines += ["## Idle TLS clients (SSLRequest + TLS 1.3 + StartupMessage, auth trust; then idle)", "",
                  f"Proxy RSS before: {base / 2**20:.1f} MiB.", "",
                  "| clients | logged in: ready / waiting for a server / failed | time to open | proxy RSS | "
                  "per client | RSS after they left |",
                  "|---:|---|---:|---:|---:|---:|"]
        for row in res.idle:
            connected = row["ready"] + row["waiting"]
            per = (row["rss"] - base) / connected if connected else None
            row["bytes_per_client"] = per
            lines.append(f"| {row['clients']:,} | {row['ready']:,} / {row['waiting']:,} / {row['failed']:,} | "
                         f"{row['open_s']:.1f} s | {row['rss'] / 2**20:.1f} MiB | "
                         f"{_f(per / 1024 if per else None, 1)} KiB | {row['after'] / 2**20:.1f} MiB "
                         f"({(row['after'] - base) / 2**20:+.1f}) |")
            if row["clients"] >= 10000:
                targets.append((f"{row['clients']:,} idle TLS clients at most 50 KiB each",
                                f"{_f(per / 1024 if per else None, 1)} KiB ({connected:,} connected)",
                                None if per is None or connected < row["clients"] * 0.99 else per <= 50 * 1024))
                added, left = row["rss"] - base, row["after"] - base
                targets.append((f"RSS back to baseline after {row['clients']:,} clients left (within 10% of what "
                                "they added)",
                                f"{row['after'] / 2**20:.1f} MiB after, baseline {base / 2**20:.1f} MiB "
                                f"({left / 2**20:+.1f} of {added / 2**20:+.1f} MiB)",
                                None if added <= 0 else left <= 0.1 * added))
        if res.pool_mode == "session":
            lines += ["", f"In session mode only {res.pool_size} clients get a server connection; the others are "
                      "logged in (AuthenticationOk) and wait in the pool queue, which is what they cost here."]
        lines.append("")
        data["idle"] = res.idle
        data["idle_baseline"] = base

    # -- idle WebSockets (issue 20) ----------------------------------------------------------------
    ws = getattr(res, "websockets", None) or {}
    if ws.get("with") or ws.get("without"):
        from tools.bench.run import WS_CLIENTS, WS_LABEL

        a, b = _summary(ws.get("without", [])), _summary(ws.get("with", []))
        opens = ws.get("opens", [])
        opened = min((o.opened for o in opens), default=0)
        open_s = _med([o.seconds for o in opens])
        still = min(ws.get("still_open", []), default=0)
        rss_a, rss_b = _med(ws.get("rss_without", [])), _med(ws.get("rss_with", []))
        lines += [f"## pgbench beside {WS_CLIENTS:,} idle WebSockets at /run (issue 20)", "",
                  "One proxy with the HTTPS endpoint on (`http_listen_port`), pgbench -S through it, runs "
                  f"without and with {WS_CLIENTS:,} WebSockets open at /run (TLS, HTTP Basic, idle; the "
                  "endpoint pings each every 20 s), alternating; CPU counts both of the proxy's threads.", "",
                  "| configuration | proxy TPS | latency ms | CPU us/tx proxy | WebSockets open (fewest opened / "
                  "still open at the end) | time to open them | proxy RSS |",
                  "|---|---:|---:|---:|---|---:|---:|",
                  f"| {WS_LABEL} | {_f(a['tps'])} | {_f(a['lat'], 3)} | {_f(a['cpu'], 1)} | - | - | "
                  f"{_f(rss_a / 2**20 if rss_a else None, 1)} MiB |",
                  f"| {WS_LABEL}, {WS_CLIENTS:,} idle WebSockets | {_f(b['tps'])} | {_f(b['lat'], 3)} | "
                  f"{_f(b['cpu'], 1)} | {opened:,} / {still:,} | {_f(open_s, 1)} s | "
                  f"{_f(rss_b / 2**20 if rss_b else None, 1)} MiB |", ""]
        ratio = _ratio(b["tps"], a["tps"])
        targets.append((f"TPS with {WS_CLIENTS:,} idle WebSockets at least 0.9 x without ({WS_LABEL})",
                        f"{_f(ratio, 2)} x ({opened:,} opened, {still:,} still open)",
                        None if ratio is None else (ratio >= 0.9 and still >= WS_CLIENTS)))
        data["websockets"] = {"without": a, "with": b, "opened": opened, "still_open": still, "open_s": open_s,
                              "rss_without": rss_a, "rss_with": rss_b, "tps_ratio": ratio}

    # -- modules (issue 18) -----------------------------------------------------------------------
    if res.modules:
        mo = res.modules
        lines += [f"## IaSQL engine over a large account ({mo['instances']:,} EC2 instances, {mo['subnets']} subnets "
                  f"in moto; `python -m tools.bench.modules`; median of {len(mo['rounds'])})", "",
                  "| call | seconds |", "|---|---:|",
                  f"| `iasql_install('aws_ec2', 'aws_vpc')` | {_f(mo['install_s'], 2)} |",
                  f"| `iasql_commit()` after one instance's tags changed | {_f(mo['commit_s'], 2)} |",
                  f"| `iasql_rollback()` with nothing changed | {_f(mo['rollback_s'], 2)} |",
                  f"| moto alone: `describe_instances` + 1,000 user-data reads (boto3, 16 threads) | "
                  f"{_f(mo['cloud_floor_s'], 2)} |", ""]
        for k, label in (("install_s", "iasql_install"), ("commit_s", "iasql_commit")):
            targets.append((f"{label} over {mo['instances']:,} instances under {mo['goal_s']:.0f} s",
                            f"{_f(mo[k], 2)} s", mo[k] < mo["goal_s"]))
        data["modules"] = mo

    # -- targets ---------------------------------------------------------------------------------
    if targets:
        met = sum(1 for t in targets if t[2])
        tl = ["## Targets (issue 8)", "", f"{met} of {len(targets)} met.", "",
              "| target | measured | target met? |", "|---|---|---|"]
        tl += [f"| {a} | {b} | {_yes(c)} |" for a, b, c in targets]
        tl.append("")
        # targets right after the header block
        first_section = next(i for i, line in enumerate(lines) if line.startswith("## "))
        lines[first_section:first_section] = tl
    data["targets"] = [{"target": a, "measured": b, "met": c} for a, b, c in targets]

    # -- problems --------------------------------------------------------------------------------
    lines += ["## Errors and anomalies seen during the run", ""]
    if res.errors:
        lines += [f"- {e}" for e in dict.fromkeys(res.errors)]
    else:
        lines.append("- none")
    lines.append("")
    data["errors"] = list(dict.fromkeys(res.errors))
    return "\n".join(lines), data


def plot(data: dict, path: Path) -> bool:
    """Bar chart of median TPS per configuration: steady-state runs left, -C runs right (own scale)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    panels = [(title, rows) for title, rows in (("pgbench -S", data.get("throughput", [])),
                                                 ("pgbench -S -C (new connection per transaction)",
                                                  data.get("connect", []))) if rows]
    if not panels:
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(4 + 1.6 * sum(len(r) for _, r in panels), 5),
                             gridspec_kw={"width_ratios": [len(r) for _, r in panels]}, squeeze=False)
    width = 0.27
    colors = {"direct": "#4c72b0", "pgbouncer": "#dd8452", "proxy": "#55a868"}
    names = {"direct": "direct Postgres", "pgbouncer": "PgBouncer", "proxy": "iasql-proxy"}
    for ax, (title, rows) in zip(axes[0], panels):
        for j, t in enumerate(("direct", "pgbouncer", "proxy")):
            xs = [i + (j - 1) * width for i in range(len(rows))]
            ys = [r.get(f"{t}_tps") or 0 for r in rows]
            bars = ax.bar(xs, ys, width, label=names[t], color=colors[t])
            for b, y in zip(bars, ys):
                if y:
                    ax.annotate(f"{y:,.0f}", (b.get_x() + b.get_width() / 2, y), ha="center", va="bottom",
                                fontsize=7, rotation=90, xytext=(0, 2), textcoords="offset points")
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels([r["label"].replace("-C, ", "").replace(", ", "\n") for r in rows], fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.margins(y=0.18)
    axes[0][0].set_ylabel("transactions per second (median)")
    axes[0][0].legend(fontsize=8, loc="upper right")
    fig.suptitle(f"iasql-proxy vs PgBouncer vs direct Postgres: {data['pool_mode']} pooling, pool "
                 f"{data['pool_size']}, {data['versions'].get('cpus')} CPUs, {data['date']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write(res, opts) -> str:
    text, data = build(res, opts)
    out = Path(opts.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    png = out / "latest.png"
    if plot(data, png):
        text = text.replace("# iasql-proxy benchmark: latest results\n",
                            "# iasql-proxy benchmark: latest results\n\n![TPS per configuration](latest.png)\n", 1)
    (out / "latest.md").write_text(text)
    (out / "latest.json").write_text(json.dumps(data, indent=1, default=str) + "\n")
    (out / "README-performance.md").write_text(performance_section(data, text))
    return text


def performance_section(data: dict, table_md: str) -> str:
    """The README "Performance" section proposed for the lead to paste."""
    met = [t for t in data.get("targets", []) if t["met"]]
    unmet = [t for t in data.get("targets", []) if t["met"] is False]
    body = ["## Performance", "",
            "`make bench` (never part of `make test`) starts its own Postgres, PgBouncer (the Debian package, "
            "installed when missing) and the proxy on 127.0.0.1, runs pgbench and a few raw-socket clients, "
            "and writes `bench/results/latest.md` (tables), `latest.json` and `latest.png` (TPS per configuration). "
            "`BENCH_SECONDS=3 BENCH_ROUNDS=1 make bench` is a quick run; the default (20 s x 3 alternating rounds, "
            "medians) takes about 25 minutes.", "",
            f"Latest run: {data['date']}, `{data['command']}`, {data['versions'].get('cpus')} CPUs shared by "
            f"pgbench, Postgres and the poolers; {data['pool_mode']} pooling for both PgBouncer and the proxy "
            f"(pool size {data['pool_size']}).", ""]
    body.append(f"Targets met ({len(met)}): " + ("; ".join(f"{t['target']}: {t['measured']}" for t in met) or "none") + ".")
    body.append("")
    body.append(f"Targets not met ({len(unmet)}): " + ("; ".join(f"{t['target']}: {t['measured']}" for t in unmet) or "none") + ".")
    body.append("")
    section = [line for line in table_md.splitlines() if not line.startswith("# ") and "latest.png" not in line]
    # demote headings by one level under "## Performance"
    section = [("#" + line) if line.startswith("## ") else line for line in section]
    body += ["![TPS per configuration](bench/results/latest.png)", ""] + section
    return "\n".join(body).rstrip() + "\n"
