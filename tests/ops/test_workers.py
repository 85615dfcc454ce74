"""``workers = 2``: two worker processes share the port (proxy.workers), against a real Postgres.

Connections land on both workers; SHOW CLIENTS lists them all with the worker of each; SHOW POOLS
and the metrics add both workers up; a CancelRequest that lands on the other worker still cancels
(57014); RELOAD (SIGHUP or the console) reaches both; a killed worker is started again; SIGTERM
stops both and frees the port.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import threading
import time
from pathlib import Path

import psycopg
import pytest

from proxy.embedded.postgres import free_port
from proxy.workers import ask_peer, key_owner, parse_result
from tests.ops.helpers import psql, sample, scrape, table, wait_for

N_CLIENTS = 16


def _ready(proc, count: int = 1) -> None:
    wait_for(lambda: proc.log().count("event=workers_ready") >= count, timeout=30)


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie no one has reaped yet counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _run_dir(proc) -> Path:
    return Path(re.search(r"event=supervisor_started .*run_dir=(\S+)", proc.log()).group(1))


def _worker_pids(proc) -> dict[int, int]:
    """The latest pid of each worker, from its event=worker_started lines."""
    return {int(w): int(p) for w, p in re.findall(r"event=worker_started worker=(\d+) pid=(\d+)", proc.log())}


def _peer_show(proc, index: int, name: str) -> list[dict[str, bytes | None]]:
    """One worker's own rows of SHOW ``name`` (asked on its peer socket, as the workers do)."""
    import base64

    answer = asyncio.run(ask_peer(_run_dir(proc), index, {"op": "show", "name": name}))
    cols, rows, _ = parse_result(base64.b64decode(answer["data"]))
    return [dict(zip([c for c, _ in cols], r)) for r in rows]


@pytest.fixture(scope="module")
def workers_proxy(proxy_ini, start_proxy, pg_roles):
    port = free_port()
    proc = start_proxy(proxy_ini(workers=2, admin_users="postgres", metrics_port=port), "workers-proxy")
    proc.metrics_port = port
    _ready(proc)
    return proc


@pytest.fixture
def clients(workers_proxy):
    conns = [psycopg.connect(workers_proxy.dsn(), autocommit=True) for _ in range(N_CLIENTS)]
    for c in conns:
        c.execute("SELECT 1").fetchone()
    yield conns
    for c in conns:
        c.close()


def test_clients_land_on_both_workers_and_show_clients_lists_them_all(workers_proxy, clients):
    owners = {key_owner(c.info.backend_pid) for c in clients}
    assert owners == {0, 1}, "the kernel spread the connections over both workers (SO_REUSEPORT)"
    def listed():
        r = psql(workers_proxy, "SHOW CLIENTS")
        assert r.returncode == 0, r.stderr
        header, rows = table(r.stdout)
        assert header[-1] == "worker"
        mine = [row for row in rows if row["database"] == "postgres"]
        return mine if len(mine) == N_CLIENTS else None  # earlier tests' clients may still be leaving

    mine = wait_for(listed)
    assert {row["worker"] for row in mine} == {"0", "1"}
    # the id column is the client's BackendKeyData process id, which names its worker
    by_id = {int(row["id"]): row["worker"] for row in mine}
    for c in clients:
        assert by_id[c.info.backend_pid] == str(key_owner(c.info.backend_pid))
    # session pooling: each client holds a server connection in its own worker's pool
    header, servers = table(psql(workers_proxy, "SHOW SERVERS").stdout)
    assert header[-1] == "worker"
    active = [row for row in servers if row["database"] == "postgres" and row["state"] == "active"]
    assert len(active) == N_CLIENTS and {row["worker"] for row in active} == {"0", "1"}
    assert sorted(row["worker"] for row in active) == sorted(row["worker"] for row in mine)


def test_show_pools_and_metrics_sum_both_workers(workers_proxy, clients):
    per_worker = [sum(int(r["cl_active"]) for r in _peer_show(workers_proxy, i, "POOLS")
                      if r["database"] == b"postgres") for i in (0, 1)]
    assert sum(per_worker) == N_CLIENTS and all(per_worker)
    _, rows = table(psql(workers_proxy, "SHOW POOLS").stdout)
    pool = [r for r in rows if r["database"] == "postgres" and r["user"] == "postgres"]
    assert len(pool) == 1
    assert int(pool[0]["cl_active"]) == N_CLIENTS
    assert int(pool[0]["sv_active"]) == N_CLIENTS
    text = scrape(workers_proxy.metrics_port)
    assert sample(text, "iasql_proxy_client_connections", database="postgres", state="active") == N_CLIENTS
    _, rows = table(psql(workers_proxy, "SHOW TOTALS").stdout)
    assert int(rows[0]["total_query_count"]) >= N_CLIENTS


def test_cancel_request_landing_on_the_other_worker_is_forwarded(workers_proxy, pg):
    """libpq's cancel opens a fresh connection, which the kernel hands to either worker; repeat
    until one was forwarded (each attempt has one chance in two)."""
    forwarded = workers_proxy.log().count("event=cancel_forwarded")
    for attempt in range(30):
        with psycopg.connect(workers_proxy.dsn(application_name="sleeper")) as conn:
            errors: list[BaseException] = []

            def sleep(errors: list[BaseException] = errors) -> None:
                try:
                    conn.execute("SELECT pg_sleep(30)")
                except BaseException as e:  # noqa: BLE001 - the test looks at it
                    errors.append(e)

            t = threading.Thread(target=sleep)
            t.start()
            with psycopg.connect(pg.dsn(), autocommit=True) as direct:
                wait_for(lambda: direct.execute("SELECT 1 FROM pg_stat_activity WHERE application_name = 'sleeper' "
                                                "AND query LIKE 'SELECT pg_sleep%' AND state = 'active'").fetchone())
            started = time.monotonic()
            conn.cancel()
            t.join(10)
            assert not t.is_alive()
            assert time.monotonic() - started < 10
            assert len(errors) == 1 and isinstance(errors[0], psycopg.errors.QueryCanceled), errors
            assert errors[0].sqlstate == "57014"
        now = workers_proxy.log().count("event=cancel_forwarded")
        if now > forwarded:
            return
    pytest.fail("no CancelRequest landed on the other worker in 30 attempts")


def _set_key(proc, key: str, value: str) -> None:
    text = proc.config_path.read_text()
    text = re.sub(rf"(?m)^{key} = .*\n", "", text)
    proc.config_path.write_text(text.replace("[proxy]\n", f"[proxy]\n{key} = {value}\n", 1))


def _config_value(proc, index: int, key: str) -> bytes:
    return next(r["value"] for r in _peer_show(proc, index, "CONFIG") if r["key"] == key.encode())


def test_reload_reaches_every_worker(workers_proxy):
    proc = workers_proxy
    try:
        _set_key(proc, "query_wait_timeout", "77")
        r = psql(proc, "RELOAD")
        assert r.returncode == 0, r.stderr
        assert [_config_value(proc, i, "query_wait_timeout") for i in (0, 1)] == [b"77", b"77"]
        _set_key(proc, "query_wait_timeout", "66")
        os.kill(proc.process.pid, signal.SIGHUP)  # the supervisor passes it on
        wait_for(lambda: [_config_value(proc, i, "query_wait_timeout") for i in (0, 1)] == [b"66", b"66"])
    finally:
        _set_key(proc, "query_wait_timeout", "120")
        assert psql(proc, "RELOAD").returncode == 0


def test_pause_and_resume_reach_every_worker(workers_proxy):
    assert psql(workers_proxy, "PAUSE").returncode == 0
    try:
        assert [next(r["value"] for r in _peer_show(workers_proxy, i, "STATE") if r["key"] == b"paused")
                for i in (0, 1)] == [b"yes", b"yes"]
    finally:
        assert psql(workers_proxy, "RESUME").returncode == 0
    assert [next(r["value"] for r in _peer_show(workers_proxy, i, "STATE") if r["key"] == b"paused")
            for i in (0, 1)] == [b"no", b"no"]


def test_disable_and_enable_reach_every_worker(workers_proxy):
    r = psql(workers_proxy, "DISABLE postgres")
    assert r.returncode == 0, r.stderr
    try:
        for _ in range(8):  # new connections land on both workers: all are refused
            with pytest.raises(psycopg.OperationalError, match="database does not allow connections: postgres"):
                psycopg.connect(workers_proxy.dsn(), autocommit=True)
    finally:
        assert psql(workers_proxy, "ENABLE postgres").returncode == 0
    conns = [psycopg.connect(workers_proxy.dsn(), autocommit=True) for _ in range(8)]
    for c in conns:
        c.close()


def test_a_killed_worker_is_started_again(workers_proxy):
    proc = workers_proxy
    before = _worker_pids(proc)
    restarted = proc.log().count("event=worker_restarted")
    os.kill(before[1], signal.SIGKILL)
    wait_for(lambda: proc.log().count("event=worker_restarted") > restarted, timeout=20)
    after = _worker_pids(proc)
    assert after[0] == before[0] and after[1] != before[1]
    assert "event=worker_exited worker=1 status=-9" in proc.log()
    conns = [psycopg.connect(proc.dsn(), autocommit=True) for _ in range(8)]
    try:
        assert {key_owner(c.info.backend_pid) for c in conns} <= {0, 1}
        wait_for(lambda: len([r for r in table(psql(proc, "SHOW CLIENTS").stdout)[1]
                              if r["database"] == "postgres"]) == 8)
    finally:
        for c in conns:
            c.close()


def test_sigterm_stops_every_worker_and_frees_the_port(proxy_ini, start_proxy, pg_roles):
    proc = start_proxy(proxy_ini(workers=2, shutdown_timeout=5), "workers-stop")
    _ready(proc)
    pids = _worker_pids(proc)
    assert len(pids) == 2
    with psycopg.connect(proc.dsn(), autocommit=True) as conn:
        conn.execute("SELECT 1")
        os.kill(proc.process.pid, signal.SIGTERM)
        assert proc.process.wait(15) == 0
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    assert not any(_alive(pid) for pid in pids.values())
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", proc.port))  # no worker holds it any more (no SO_REUSEPORT here)
        s.listen(1)
    finally:
        s.close()
    assert not _run_dir(proc).exists()


def test_sigterm_lets_running_statements_of_every_worker_finish(proxy_ini, start_proxy, pg_roles, pg):
    """Graceful shutdown in every worker: a statement running on each finishes, then all exit 0."""
    proc = start_proxy(proxy_ini(workers=2, shutdown_timeout=20), "workers-drain")
    _ready(proc)
    conns = [psycopg.connect(proc.dsn(application_name="drainer"), autocommit=True) for _ in range(6)]
    while {key_owner(c.info.backend_pid) for c in conns} != {0, 1} and len(conns) < 16:  # one in 32: all on one
        conns.append(psycopg.connect(proc.dsn(application_name="drainer"), autocommit=True))
    assert {key_owner(c.info.backend_pid) for c in conns} == {0, 1}
    results: list[object] = []

    def run(c) -> None:
        try:
            results.append(c.execute("SELECT pg_sleep(2), 'done'").fetchone()[1])
        except BaseException as e:  # noqa: BLE001 - the test looks at it
            results.append(e)

    threads = [threading.Thread(target=run, args=(c,)) for c in conns]
    for t in threads:
        t.start()
    with psycopg.connect(pg.dsn(), autocommit=True) as direct:
        wait_for(lambda: direct.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'drainer' "
                                        "AND state = 'active'").fetchone()[0] == len(conns))
    os.kill(proc.process.pid, signal.SIGTERM)
    for t in threads:
        t.join(20)
    assert results == ["done"] * len(conns)
    assert proc.process.wait(20) == 0
    for c in conns:
        c.close()


def test_admin_shutdown_stops_every_worker(proxy_ini, start_proxy, pg_roles):
    proc = start_proxy(proxy_ini(workers=2, admin_users="postgres"), "workers-shutdown")
    _ready(proc)
    pids = _worker_pids(proc)
    psql(proc, "SHUTDOWN")
    assert proc.process.wait(15) == 0
    assert not any(_alive(pid) for pid in pids.values())


def test_busy_port_fails_at_start_with_status_2(proxy_ini, tmp_path, pg_roles):
    from tests.support.proxy import ProxyProcess

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    try:
        proc = ProxyProcess(proxy_ini(workers=2), tmp_path)
        text = proc.config_path.read_text()
        proc.config_path.write_text(text.replace(f"listen_port = {proc.port}", f"listen_port = {holder.getsockname()[1]}"))
        with pytest.raises(RuntimeError, match="exited 2"):
            proc.start(timeout=15)
        assert "cannot listen on 127.0.0.1" in proc.log()
    finally:
        holder.close()


def test_workers_end_when_the_supervisor_is_killed(proxy_ini, start_proxy, pg_roles):
    """PR_SET_PDEATHSIG: no worker is left holding the port after a SIGKILL of the supervisor."""
    proc = start_proxy(proxy_ini(workers=2), "workers-orphans")
    _ready(proc)
    pids = _worker_pids(proc)
    os.kill(proc.process.pid, signal.SIGKILL)
    proc.process.wait(10)

    wait_for(lambda: not any(_alive(pid) for pid in pids.values()), timeout=20)
    assert not _run_dir(proc).exists()  # the last worker out removed it
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", proc.port))
    finally:
        s.close()


def test_the_web_console_listens_once_in_worker_0(proxy_ini, start_proxy, pg_roles, dev_certs):
    """http_listen_port, like metrics_port, is opened by worker 0 only (the others would find it taken)."""
    import http.client
    import ssl

    from tests.http.conftest import basic

    port = free_port()
    proc = start_proxy(proxy_ini(workers=2, http_listen_port=port), "workers-http")
    _ready(proc)
    lines = [ln for ln in proc.log().splitlines() if "event=http_listening" in ln]
    assert len(lines) == 1 and "[w0]" in lines[0]
    conn = http.client.HTTPSConnection("localhost", port, context=ssl.create_default_context(cafile=str(dev_certs[0])),
                                       timeout=10)
    try:
        conn.request("GET", "/", headers={"Authorization": basic("postgres", "postgres")})
        assert conn.getresponse().status == 200
    finally:
        conn.close()
