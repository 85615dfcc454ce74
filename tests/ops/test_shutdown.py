"""SIGTERM lets running statements finish (up to shutdown_timeout); SIGINT is immediate."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import psycopg
import pytest

from tests.ops.helpers import wait_for

pytestmark = pytest.mark.timeout(60)


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


def running_sleep(proxy, password: str, seconds: float, out: dict) -> threading.Thread:
    def run():
        try:
            with psycopg.connect(proxy.dsn(user="alice", password=password), autocommit=True) as c:
                out["connected"] = time.monotonic()
                t0 = time.monotonic()
                out["row"] = c.execute(f"select pg_sleep({seconds}), 'done'").fetchone()
                out["took"] = time.monotonic() - t0
                try:
                    c.execute("select 1")
                except psycopg.OperationalError as e:
                    out["after"] = e
        except BaseException as e:
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    wait_for(lambda: "connected" in out or "error" in out)
    time.sleep(0.4)  # the statement is running on the server now
    return t


def test_sigterm_lets_running_statement_finish(proxy_ini, start_proxy, pg_roles):
    proxy = start_proxy(proxy_ini(shutdown_timeout=10), "sigterm-proxy")
    idle = psycopg.connect(proxy.dsn(user="alice", password=pg_roles["alice"]), autocommit=True)
    out: dict = {}
    t = running_sleep(proxy, pg_roles["alice"], 2, out)
    t_signal = time.monotonic()
    os.kill(proxy.process.pid, signal.SIGTERM)
    wait_for(lambda: refused(proxy.port), timeout=2)  # stops accepting at once
    with pytest.raises(psycopg.OperationalError, match="administrator command"):
        idle.execute("select 1")  # an idle client is closed at once (57P01, as Postgres does)
    t.join(10)
    assert "error" not in out, out
    assert out["row"] == ("", "done") and out["took"] >= 1.5
    assert "after" in out  # then its connection is closed
    assert proxy.process.wait(10) == 0
    assert time.monotonic() - t_signal < 6
    log = proxy.log()
    assert "event=shutdown mode=graceful" in log and "event=shutdown_drained" in log


def test_sigterm_timeout_and_sigint(proxy_ini, start_proxy, pg_roles):
    proxy = start_proxy(proxy_ini(shutdown_timeout=0.5), "sigterm-timeout-proxy")
    out: dict = {}
    t = running_sleep(proxy, pg_roles["alice"], 5, out)
    t0 = time.monotonic()
    os.kill(proxy.process.pid, signal.SIGTERM)
    assert proxy.process.wait(5) == 0
    assert time.monotonic() - t0 < 3  # shutdown_timeout bounds the wait
    t.join(10)
    assert "row" not in out and "event=shutdown_timeout" in proxy.log()

    proxy = start_proxy(proxy_ini(shutdown_timeout=30), "sigint-proxy")
    out = {}
    t = running_sleep(proxy, pg_roles["alice"], 5, out)
    t0 = time.monotonic()
    os.kill(proxy.process.pid, signal.SIGINT)
    assert proxy.process.wait(5) == 0
    assert time.monotonic() - t0 < 2
    t.join(10)
    assert "row" not in out and "event=shutdown mode=immediate" in proxy.log()


@pytest.mark.parametrize("pool_mode", ["transaction", "session"])
@pytest.mark.parametrize("form", ["compiled", "python"])
def test_sigterm_closes_a_busy_client_when_its_transaction_ends(proxy_ini, tmp_path, pg_roles, pool_mode, form):
    """A client running transactions back to back is closed (57P01) right after the transaction
    that was running at SIGTERM ends; it cannot slip in more until shutdown_timeout."""
    from tests.support.proxy import ProxyProcess

    proxy = ProxyProcess(proxy_ini(shutdown_timeout=8, pool_mode=pool_mode), tmp_path,
                         env={"IASQL_PROXY_PURE": "1"} if form == "python" else None).start()
    try:
        conn = psycopg.connect(proxy.dsn(user="alice", password=pg_roles["alice"]), autocommit=True)
        signalled = threading.Event()
        out = {"after": 0}

        def loop():
            try:
                while True:
                    conn.execute("BEGIN")
                    conn.execute("SELECT pg_sleep(0.02)")
                    conn.execute("COMMIT")
                    if signalled.is_set():
                        out["after"] += 1
            except psycopg.Error as e:
                out["error"] = e

        t = threading.Thread(target=loop, daemon=True)
        t.start()
        time.sleep(0.3)
        os.kill(proxy.process.pid, signal.SIGTERM)
        signalled.set()
        t.join(15)
        # FATAL 57P01; or, when the client's next statement reached the proxy's socket before the
        # close, the kernel resets the connection and libpq reports only the closed connection
        # ("server closed the connection unexpectedly", or psycopg's "connection socket closed"
        # when the reset arrives while it waits for the reply)
        assert isinstance(out.get("error"), psycopg.OperationalError), out
        assert any(m in str(out["error"]) for m in (
            "administrator command", "server closed the connection unexpectedly",
            "connection socket closed")), out
        assert out["after"] <= 1, f"{out['after']} transactions completed after SIGTERM"
        assert proxy.process.wait(10) == 0
    finally:
        proxy.stop()

