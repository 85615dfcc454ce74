"""The Prometheus endpoint: scraped over HTTP, its numbers move with traffic."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import psycopg
import pytest

from proxy.wire import frontend as F
from tests.ops.helpers import sample, scrape, wait_for

pytestmark = pytest.mark.timeout(60)
P = "iasql_proxy_"


def test_metrics_move_with_traffic(ops_proxy, pg_roles):
    port = ops_proxy.metrics_port
    before = scrape(port)
    assert "# TYPE iasql_proxy_pool_wait_seconds histogram" in before
    assert "# TYPE iasql_proxy_queries_total counter" in before
    q0 = sample(before, P + "queries_total", database="postgres")
    x0 = sample(before, P + "transactions_total", database="postgres")
    rx0 = sample(before, P + "received_bytes_total", database="postgres")
    waits0 = sample(before, P + "pool_wait_seconds_count")
    split0 = sample(before, P + "statements_split_total")
    inter0 = sample(before, P + "statements_intercepted_total")
    engine0 = sample(before, P + "engine_call_duration_seconds_count", function="iasql_version", outcome="ok")

    with psycopg.connect(ops_proxy.dsn(user="alice", password=pg_roles["alice"]), autocommit=True) as conn:
        for i in range(5):
            conn.execute("select %s::int", (i,))
        during = scrape(port)
        assert sample(during, P + "client_connections", database="postgres", user="alice", state="active") == 1
        assert sample(during, P + "server_connections", database="postgres", user="alice", state="active") == 1
        assert sample(during, P + "pool_size", database="postgres", user="alice") == 20
        assert sample(during, P + "queries_total", database="postgres") >= q0 + 5
        assert sample(during, P + "received_bytes_total", database="postgres") > rx0
    with psycopg.connect(ops_proxy.dsn(), autocommit=True) as conn:
        conn.execute("select 1; SELECT * FROM iasql_version()")

    after = wait_for(lambda: (lambda t: t if sample(t, P + "client_connections", user="alice", state="active") == 0
                              else None)(scrape(port)))
    assert sample(after, P + "queries_total", database="postgres") >= q0 + 6  # ended sessions are kept
    assert sample(after, P + "transactions_total", database="postgres") >= x0 + 6
    assert sample(after, P + "pool_wait_seconds_count") >= waits0 + 2
    assert sample(after, P + "statements_split_total") >= split0 + 2
    assert sample(after, P + "statements_intercepted_total") >= inter0 + 1
    assert sample(after, P + "engine_call_duration_seconds_count", function="iasql_version", outcome="ok") \
        >= engine0 + 1
    assert sample(after, P + "server_connections", database="postgres", user="alice", state="idle") == 1


def test_failure_counters(ops_proxy):
    port = ops_proxy.metrics_port
    before = scrape(port)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(ops_proxy.dsn(password="wrong"))
    with socket.create_connection(("127.0.0.1", ops_proxy.port), timeout=5) as s:
        s.sendall(F.SSLRequest().encode())
        assert s.recv(1) == b"S"
        s.sendall(b"\x16\x03\x01\x00\x05garbage-not-a-client-hello" * 4)
        try:
            s.recv(100)
        except OSError:
            pass
    after = wait_for(lambda: (lambda t: t if sample(t, P + "tls_handshake_failures_total")
                              > sample(before, P + "tls_handshake_failures_total") else None)(scrape(port)))
    assert sample(after, P + "auth_failures_total") == sample(before, P + "auth_failures_total") + 1


def test_http_paths(ops_proxy):
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"http://127.0.0.1:{ops_proxy.metrics_port}/nothing", timeout=5)
    assert e.value.code == 404
