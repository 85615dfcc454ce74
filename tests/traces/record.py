"""Re-record the trace corpus (``make traces``): every client's scenario through a recording proxy.

Usage: ``python -m tests.traces.record [CLIENT ...]`` (default: all of CLIENTS). Starts an
embedded Postgres, a moto server and the proxy with ``--record-dir``, runs each client against a
fresh database ``iasql_trace`` (moto reset first), and writes the one trace of that client's
session to ``tests/traces/<client>.jsonl``. The cancel connections a client opens are folded into
its session's trace by the recorder, so exactly one trace file per client is expected.

Clients: psql (tests/traces/clients/scenario.psql), psycopg, psycopg2, asyncpg, pg8000
(clients/python_clients.py), node-postgres (clients/node_pg.js, ``npm install`` in clients/ on
first use) and pgJDBC (clients/TraceJdbc.java, Debian's libpostgresql-jdbc-java).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.traces.stack import PASSWORD, REPO, TRACE_DB, TRACES, fresh_database, proxy_ini

CLIENT_DIR = TRACES / "clients"
JDBC_JAR = Path("/usr/share/java/postgresql.jar")
CLIENTS = ["psql", "psycopg", "psycopg2", "asyncpg", "pg8000", "node_pg", "jdbc"]


def _params(port: int) -> dict:
    return {"host": "localhost", "port": port, "user": "postgres", "password": PASSWORD, "dbname": TRACE_DB,
            "sslrootcert": str(REPO / "certs" / "ca.crt")}


def _env() -> dict:
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


def run_psql(p: dict, pg) -> None:
    """psql runs scenario.psql; the cancel is the script's last statement: psql in a script stops
    after a Ctrl-C, so SIGINT is sent once pg_sleep is seen running in pg_stat_activity."""
    env = _env()
    env["PGPASSWORD"] = p["password"]
    dsn = (f"host={p['host']} port={p['port']} user={p['user']} dbname={p['dbname']} sslmode=verify-full "
           f"sslrootcert={p['sslrootcert']} application_name=trace")
    proc = subprocess.Popen(["psql", "-X", "-q", "-f", str(CLIENT_DIR / "scenario.psql"), dsn], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    import psycopg

    deadline = time.monotonic() + 60
    with psycopg.connect(pg.dsn(), autocommit=True) as c:
        while time.monotonic() < deadline and proc.poll() is None:
            row = c.execute("SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30);' "
                            "AND state = 'active'").fetchone()
            if row[0]:
                break
            time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    if "canceling statement due to user request" not in err:
        raise RuntimeError(f"psql scenario did not cancel: {err}")


def run_node(p: dict, pg) -> None:
    if not (CLIENT_DIR / "node_modules" / "pg").exists():
        subprocess.run(["npm", "install", "--no-audit", "--no-fund"], cwd=CLIENT_DIR, check=True)
    res = subprocess.run(["node", str(CLIENT_DIR / "node_pg.js"), json.dumps(p)], cwd=CLIENT_DIR,
                         capture_output=True, text=True, timeout=120, env=_env())
    if res.returncode != 0:
        raise RuntimeError(f"node_pg.js failed: {res.stdout}{res.stderr}")


def run_jdbc(p: dict, pg) -> None:
    if not JDBC_JAR.exists():
        raise RuntimeError(f"{JDBC_JAR} missing: apt-get install -y libpostgresql-jdbc-java")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["javac", "-d", tmp, "-cp", str(JDBC_JAR), str(CLIENT_DIR / "TraceJdbc.java")], check=True)
        url = (f"jdbc:postgresql://{p['host']}:{p['port']}/{p['dbname']}?sslmode=verify-full"
               f"&sslrootcert={p['sslrootcert']}&ApplicationName=trace")
        res = subprocess.run(["java", "-Duser.timezone=UTC", "-cp", f"{JDBC_JAR}:{tmp}", "TraceJdbc", url,
                              p["user"], p["password"]], capture_output=True, text=True, timeout=120, env=_env())
        if res.returncode != 0:
            raise RuntimeError(f"TraceJdbc failed: {res.stdout}{res.stderr}")


def run_client(name: str, p: dict, pg) -> None:
    if name == "psql":
        return run_psql(p, pg)
    if name == "node_pg":
        return run_node(p, pg)
    if name == "jdbc":
        return run_jdbc(p, pg)
    code = f"from tests.traces.clients.python_clients import run; run({name!r}, {p!r})"
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env=_env())
    if res.returncode != 0:
        raise RuntimeError(f"{name} client failed: {res.stdout}{res.stderr}")


def _wait_for_traces(record_dir: Path, timeout: float = 10.0) -> list[Path]:
    """The session traces in record_dir, once each has its end line."""
    deadline = time.monotonic() + timeout
    while True:
        files = sorted(record_dir.glob("*.jsonl"))
        done = [f for f in files if f.read_text().rstrip().endswith("}") and '"end": true' in f.read_text()]
        if files and len(done) == len(files):
            return files
        if time.monotonic() > deadline:
            raise RuntimeError(f"traces in {record_dir} did not end: {[f.name for f in files]}")
        time.sleep(0.1)


def check_trace(path: Path) -> None:
    """Raise RuntimeError unless the trace shows the whole scenario: TLS, a cancel that cancelled
    (57014), division by zero, COPY both ways, the iasql_* calls, a clean end."""
    msgs = [json.loads(line) for line in path.read_text().splitlines()]
    head, end, msgs = msgs[0], msgs[-1], msgs[1:-1]
    missing = []
    if not any(m["msg"] == "SSLResponse" and m["fields"]["answer"] == "S" for m in msgs):
        missing.append("TLS")
    cancel = next((m["i"] for m in msgs if m.get("conn") == "cancel"), None)
    if cancel is None or not any(m["msg"] == "ErrorResponse" and m["fields"].get("C") == "57014" and m["i"] > cancel
                                 for m in msgs):
        missing.append("a CancelRequest followed by 57014")
    if not any(m["msg"] == "ErrorResponse" and m["fields"].get("C") == "22012" for m in msgs):
        missing.append("the division by zero")
    for name in ("CopyInResponse", "CopyOutResponse"):
        if not any(m["msg"] == name for m in msgs):
            missing.append(name)
    queries = " ".join(m["fields"].get("query", "") for m in msgs if m["msg"] in ("Query", "Parse"))
    for call in ("iasql_version", "iasql_modules_list", "iasql_install"):
        if call not in queries:
            missing.append(call)
    if not end.get("end") or not end.get("complete"):
        missing.append("a complete end")
    if missing:
        raise RuntimeError(f"{path.name}: the recording lacks {', '.join(missing)}")


def record(clients: list[str]) -> int:
    from proxy.certs import ensure_dev_certs
    from proxy.embedded.moto import MotoServer
    from proxy.embedded.postgres import EmbeddedPostgres
    from tests.support.proxy import ProxyProcess

    certs = ensure_dev_certs(REPO / "certs")
    work = Path(tempfile.mkdtemp(prefix="iasql-traces-"))
    record_dir = work / "record"
    pg = EmbeddedPostgres(password=PASSWORD)
    moto = MotoServer()
    proxy = None
    failed = []
    try:
        pg.start()
        moto.start()
        proxy = ProxyProcess(proxy_ini(pg, moto.endpoint_url, certs, work / "userlist.txt", record_dir),
                             work / "proxy").start()
        for name in clients:
            fresh_database(pg)
            moto.reset()
            if record_dir.exists():
                shutil.rmtree(record_dir)
            try:
                run_client(name, _params(proxy.port), pg)
                files = _wait_for_traces(record_dir)
            except Exception as e:
                print(f"{name}: FAILED: {e}", file=sys.stderr)
                failed.append(name)
                continue
            if len(files) != 1:
                print(f"{name}: FAILED: expected one session trace, got {[f.name for f in files]}", file=sys.stderr)
                failed.append(name)
                continue
            try:
                check_trace(files[0])
            except RuntimeError as e:
                print(f"{name}: FAILED: {e}", file=sys.stderr)
                failed.append(name)
                continue
            dest = TRACES / f"{name}.jsonl"
            shutil.copyfile(files[0], dest)
            n = sum(1 for _ in dest.open()) - 2
            print(f"{name}: {dest.relative_to(REPO)} ({n} messages)")
    finally:
        if proxy is not None:
            proxy.stop()
        moto.stop()
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


def _terminate(signum, frame):
    raise SystemExit(128 + signum)  # unwind through record()'s clean-up


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGTERM, _terminate)
    clients = argv or CLIENTS
    unknown = [c for c in clients if c not in CLIENTS]
    if unknown:
        print(f"unknown client(s) {unknown}; known: {CLIENTS}", file=sys.stderr)
        return 2
    return record(clients)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
