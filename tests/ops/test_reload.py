"""Reload (SIGHUP and RELOAD): pool size and certificate change while a client stays connected;
a bad file is refused and the running configuration stays."""

from __future__ import annotations

import os
import shutil
import signal
import threading

import psycopg
import pytest

from proxy.certs import ensure_dev_certs
from proxy.embedded.postgres import free_port
from tests.ops.helpers import psql, sample, scrape, table, wait_for

pytestmark = pytest.mark.timeout(90)


def dsn(proxy, password: str, ca, **extra: str) -> str:
    parts = [f"host=localhost port={proxy.port} user=alice dbname=postgres password={password}",
             f"sslmode=verify-full sslrootcert={ca} connect_timeout=10"]
    parts += [f"{k}={v}" for k, v in extra.items()]
    return " ".join(parts)


def in_thread(fn) -> tuple[threading.Thread, dict]:
    """Run ``fn`` in a started daemon thread; the dict gets ``pid`` (its result) or ``error``."""
    out: dict = {}

    def run():
        try:
            out["pid"] = fn()
        except BaseException as e:
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def config_value(proxy, key: str) -> str:
    out = psql(proxy, "SHOW CONFIG")
    assert out.returncode == 0, out.stderr
    return {r["key"]: r["value"] for r in table(out.stdout)[1]}[key]


def test_reload_pool_size_and_certificate(proxy_ini, start_proxy, pg_roles, tmp_path):
    old_ca, old_crt, old_key = ensure_dev_certs(tmp_path / "ca-old")
    new_ca, new_crt, new_key = ensure_dev_certs(tmp_path / "ca-new")
    live = tmp_path / "live"
    live.mkdir()
    shutil.copy(old_crt, live / "server.crt")
    shutil.copy(old_key, live / "server.key")
    metrics_port = free_port()
    proxy = start_proxy(proxy_ini(client_tls_cert_file=live / "server.crt", client_tls_key_file=live / "server.key",
                                  default_pool_size=1, query_wait_timeout=30, admin_users="postgres",
                                  metrics_port=metrics_port), "reload-proxy")
    password = pg_roles["alice"]

    first = psycopg.connect(dsn(proxy, password, old_ca), autocommit=True)
    backend = first.execute("select pg_backend_pid()").fetchone()[0]
    assert sample(scrape(metrics_port), "iasql_proxy_pool_size", user="alice") == 1

    def connect_second():  # waits: the pool's one server connection is the first client's
        with psycopg.connect(dsn(proxy, password, old_ca, application_name="second"), autocommit=True) as c:
            return c.execute("select pg_backend_pid()").fetchone()[0]

    t, second = in_thread(connect_second)
    wait_for(lambda: any(r["user"] == "alice" and r["cl_waiting"] == "1"
                         for r in table(psql(proxy, "SHOW POOLS").stdout)[1]))

    # new certificate (another CA) and default_pool_size = 2, then SIGHUP
    shutil.copy(new_crt, live / "server.crt")
    shutil.copy(new_key, live / "server.key")
    proxy.config_path.write_text(proxy.config_path.read_text().replace("default_pool_size = 1",
                                                                       "default_pool_size = 2"))
    os.kill(proxy.process.pid, signal.SIGHUP)

    t.join(15)
    assert "error" not in second and second["pid"] != backend, second
    assert first.execute("select pg_backend_pid()").fetchone()[0] == backend  # still connected, same server
    assert config_value(proxy, "default_pool_size") == "2"
    assert sample(scrape(metrics_port), "iasql_proxy_pool_size", user="alice") == 2

    with psycopg.connect(dsn(proxy, password, new_ca)) as c:  # the new certificate is served
        assert c.execute("select 1").fetchone() == (1,)
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        psycopg.connect(dsn(proxy, password, old_ca))

    # a bad file is refused, by SIGHUP and by RELOAD; the running configuration stays
    good = proxy.config_path.read_text()
    proxy.config_path.write_text(good.replace("default_pool_size = 2", "default_pool_size = banana"))
    os.kill(proxy.process.pid, signal.SIGHUP)
    wait_for(lambda: "event=reload_failed" in proxy.log())
    assert "default_pool_size: must be an integer" in proxy.log()
    out = psql(proxy, "RELOAD")
    assert out.returncode != 0 and "configuration file not reloaded: default_pool_size" in out.stderr
    assert config_value(proxy, "default_pool_size") == "2"
    shutil.copy(old_key, live / "server.key")  # a key that does not match the certificate: refused too
    proxy.config_path.write_text(good)
    out = psql(proxy, "RELOAD")
    assert out.returncode != 0 and "client_tls_cert_file" in out.stderr
    assert first.execute("select 1").fetchone() == (1,)
    with psycopg.connect(dsn(proxy, password, new_ca)) as c:
        assert c.execute("select 1").fetchone() == (1,)
    first.close()
    assert proxy.process.poll() is None


def test_bigger_pool_serves_clients_already_queued(proxy_ini, start_proxy, pg_roles):
    """Transaction pooling, pool of one held by an open transaction: a logged-in client's query
    waits in the pool's queue; RELOAD with default_pool_size = 2 runs it at once (before, only
    clients still logging in were woken, and the query waited for the first transaction to end)."""
    proxy = start_proxy(proxy_ini(pool_mode="transaction", default_pool_size=1, query_wait_timeout=30,
                                  admin_users="postgres"), "reload-queue-proxy")
    plain = f"host=127.0.0.1 port={proxy.port} user=alice dbname=postgres password={pg_roles['alice']} sslmode=disable"
    holder = psycopg.connect(plain, autocommit=True)
    waiter = psycopg.connect(plain, autocommit=True)
    try:
        holder.execute("BEGIN")
        held = holder.execute("select pg_backend_pid()").fetchone()[0]
        t, out = in_thread(lambda: waiter.execute("select pg_backend_pid()").fetchone()[0])
        wait_for(lambda: any(r["user"] == "alice" and r["cl_waiting"] == "1"
                             for r in table(psql(proxy, "SHOW POOLS").stdout)[1]))
        proxy.config_path.write_text(proxy.config_path.read_text().replace("default_pool_size = 1",
                                                                           "default_pool_size = 2"))
        assert psql(proxy, "RELOAD").returncode == 0
        t.join(10)
        assert "error" not in out and out.get("pid") not in (None, held), out
        assert holder.execute("select pg_backend_pid()").fetchone()[0] == held  # its transaction still open
        holder.execute("COMMIT")
    finally:
        holder.close()
        waiter.close()
