"""Fixtures for the HTTPS console and /run (README "The web console and /run").

- ``http_proxy``: the real ``iasql-proxy`` process with the engine (AWS calls to the session's
  moto) and ``http_listen_port``; SCRAM logins, secrets by ``auth_query`` (alice) or auth_file.
- ``sleepy_proxy``: an in-process proxy whose interceptor has a test registry: ``iasql_sleep(s)``
  reports progress every 0.5 s and stops at a cancel (the engine's safe-point contract), for
  streaming and cancel tests that need a call of known length.
- ``ws_connect``: a ``websockets`` client for /run with Basic credentials and the dev CA.
"""

from __future__ import annotations

import base64
import ssl
import uuid

import psycopg
import pytest

from proxy.config import parse_config
from proxy.embedded.postgres import free_port
from tests.conftest import ALICE_PASSWORD

PASSWORD = "postgres"


def basic(user: str, password: str) -> str:
    """An ``Authorization`` header value (RFC 7617)."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture(scope="session")
def client_tls(dev_certs):
    """An SSLContext that verifies the proxy against the development CA."""
    ca, _crt, _key = dev_certs
    ctx = ssl.create_default_context(cafile=str(ca))
    return ctx


@pytest.fixture(scope="session")
def http_proxy(pg, pg_roles, moto_server, proxy_ini, start_proxy):
    """The proxy process with the engine and the HTTPS endpoint; ``.http_port`` is its port."""
    port = free_port()
    ini = proxy_ini(http_listen_port=port, http_max_message_size="64kB", http_max_runs_per_user=2,
                    http_allowed_origins="https://console.example:8443",
                    client_tls_sslmode="require")
    ini += f"\n[engine]\naws_endpoint_url = {moto_server.endpoint_url}\nlock_wait_timeout = 10\n"
    proc = start_proxy(ini, "http-proxy")
    proc.http_port = port
    wait_for_port(port)
    return proc


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    """Wait until 127.0.0.1:``port`` accepts connections (the endpoint starts after the
    PostgreSQL listener). Raises TimeoutError."""
    import socket
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on 127.0.0.1:{port}") from None
            time.sleep(0.05)


@pytest.fixture(scope="session")
def http_db(pg, pg_roles):
    """A database for the HTTP tests, owned by alice (so she can install modules in it)."""
    name = f"http_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg.dsn(), autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}" OWNER alice')
    yield name
    with psycopg.connect(pg.dsn(), autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def sleepy_proxy(pg, dev_certs, tmp_path_factory):
    """An in-process proxy with ``iasql_sleep`` (test registry) and the HTTPS endpoint."""
    from proxy.intercept.dispatch import Interceptor
    from proxy.intercept.simple import QueryInterceptor
    from tests.intercept.conftest import InProcessProxy
    from tests.intercept.test_progress_cancel import Probe, make_registry

    _ca, crt, key = dev_certs
    userlist = tmp_path_factory.mktemp("ul") / "userlist.txt"
    userlist.write_text(f'"postgres" "{PASSWORD}"\n')
    cfg = parse_config(f"[databases]\n* = host=127.0.0.1 port={pg.port}\n[proxy]\nlisten_addr = 127.0.0.1\n"
                       f"listen_port = 0\nauth_type = scram-sha-256\nauth_file = {userlist}\n"
                       f"client_tls_sslmode = require\nclient_tls_cert_file = {crt}\nclient_tls_key_file = {key}\n"
                       f"server_tls_sslmode = disable\nhttp_listen_port = 0\nhttp_idle_timeout = 3\n"
                       f"[engine]\nenabled = false\n")
    probe = Probe()

    def setup(app):
        app.interceptor = Interceptor(QueryInterceptor(make_registry(probe)))

    # a database of its own: the test registry's metadata (stubs of iasql_sleep only) must not be
    # what another proxy's full registry finds, already marked current, in a shared database
    name = f"sleepy_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg.dsn(), autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    proxy = InProcessProxy(cfg, setup).start()
    proxy.probe = probe
    proxy.http_port = proxy.app.http.port
    proxy.database = name
    yield proxy
    proxy.stop()
    with psycopg.connect(pg.dsn(), autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
