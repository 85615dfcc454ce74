"""Session logs: one structured line per session end (user, database, client address, TLS version,
duration), and never a password, whether the login succeeded or not."""

from __future__ import annotations

import re
import time

import psycopg
import pytest

from tests.support.faults import RawConn, ServerFatal

pytestmark = pytest.mark.timeout(60)

WRONG = "Wr0ng-and-Distinctive-pw"


@pytest.fixture(scope="module")
def log_proxy(scram_proxy):
    """The shared proxy: its log then also holds every session the other tests ran through it."""
    return scram_proxy


def kv(line: str) -> dict[str, str]:
    return dict(re.findall(r"(\w+)=(\S+)", line))


def session_end_lines(log: str) -> list[dict[str, str]]:
    return [kv(line) for line in log.splitlines() if "event=session_end" in line]


def wait_for(proxy, predicate, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while True:
        found = predicate(proxy.log())
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_session_end_line(log_proxy, pg_roles):
    with RawConn(log_proxy.port) as c:
        assert c.ssl_request() == b"S"
        c.wrap_tls()
        c.startup("alice", password=pg_roles["alice"])
        c.query("select pg_sleep(0.2)")
        port = c.sock.getsockname()[1]
        c.terminate()
    lines = wait_for(log_proxy, lambda log: [e for e in session_end_lines(log)
                                             if e.get("client") == f"127.0.0.1:{port}"])
    assert len(lines) == 1, log_proxy.log()
    entry = lines[0]
    assert entry["user"] == "alice"
    assert entry["database"] == "postgres"
    assert entry["tls"] in ("TLSv1.2", "TLSv1.3")
    duration_key = next(k for k in entry if k.startswith("duration"))
    assert 0.2 <= float(entry[duration_key]) < 10


def test_session_end_line_without_tls(log_proxy, pg_roles):
    with RawConn(log_proxy.port) as c:
        c.startup("alice", database="postgres", password=pg_roles["alice"])
        port = c.sock.getsockname()[1]
        c.terminate()
    lines = wait_for(log_proxy, lambda log: [e for e in session_end_lines(log)
                                             if e.get("client") == f"127.0.0.1:{port}"])
    assert len(lines) == 1
    assert (lines[0]["user"], lines[0]["tls"]) == ("alice", "off")


def test_no_password_in_the_log(log_proxy, pg_roles, pg):
    # successful logins with every client path, and failed ones with a distinctive wrong password
    with psycopg.connect(log_proxy.dsn(user="alice", password=pg_roles["alice"], sslmode="verify-full")) as conn:
        conn.execute("select 1")
    with psycopg.connect(log_proxy.dsn(user="postgres", password=pg.password, sslmode="require")) as conn:
        conn.execute("select 1")
    for user in ("alice", "nosuchuser", "postgres"):
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(log_proxy.dsn(user=user, password=WRONG, sslmode="verify-full"))
    with RawConn(log_proxy.port) as c:
        with pytest.raises(ServerFatal):
            c.startup("alice", password=WRONG)
    time.sleep(0.3)
    log = log_proxy.log()
    assert "event=session_end" in log
    for secret in (pg_roles["alice"], pg_roles["bob"], WRONG):
        assert secret not in log, f"secret {secret!r} found in the proxy log"
    assert "SCRAM-SHA-256$" not in log  # no verifier either
    assert not re.search(r"\bp=[A-Za-z0-9+/]{20,}", log)  # no SCRAM client proof
    assert not re.search(r"md5[0-9a-f]{32}", log)


def test_log_connections_and_disconnections_off(proxy_ini, start_proxy, pg):
    """PgBouncer's log_connections = 0 and log_disconnections = 0: no session_start/session_end
    lines, while failed logins are still logged."""
    proxy = start_proxy(proxy_ini(log_connections=0, log_disconnections=0), "quietlog")
    with psycopg.connect(proxy.dsn(user="postgres", password=pg.password, sslmode="disable")) as conn:
        assert conn.execute("select 7").fetchone() == (7,)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(proxy.dsn(user="postgres", password=WRONG, sslmode="disable"))
    log = wait_for(proxy, lambda log: log if "event=login_failed" in log else "")
    assert "event=login_failed" in log
    assert "event=session_start" not in log and "event=session_end" not in log


def test_log_connections_on_by_default(proxy_ini, start_proxy, pg):
    proxy = start_proxy(proxy_ini(), "defaultlog")
    with psycopg.connect(proxy.dsn(user="postgres", password=pg.password, sslmode="disable")) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    log = wait_for(proxy, lambda log: log if "event=session_end" in log else "")
    assert "event=session_start" in log and "event=session_end" in log
