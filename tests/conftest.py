"""Shared fixtures: a throwaway Postgres cluster and a moto server, started by the test session."""

from __future__ import annotations

import pytest

from proxy.embedded.moto import MotoServer
from proxy.embedded.postgres import EmbeddedPostgres


@pytest.fixture(scope="session")
def pg():
    """A running EmbeddedPostgres (superuser postgres/postgres, SCRAM over TCP) for the session."""
    server = EmbeddedPostgres(password="postgres")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def stderr(monkeypatch):
    """The proxy's log (``proxy.logs.setup``, as ``iasql-proxy`` does at start) on a fresh stderr,
    a StringIO; the root logger's handlers are restored afterwards."""
    import io
    import logging
    import sys

    from proxy import logs

    buf = io.StringIO()
    monkeypatch.setattr(sys, "stderr", buf)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    root.handlers.clear()
    logs.setup()
    yield buf
    root.handlers[:], root.level = saved
    logs._handler = None


@pytest.fixture(scope="session")
def moto_server():
    """A running moto server on an ephemeral loopback port for the session."""
    server = MotoServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------------
# Integration / differential fixtures: development certificates, roles on `pg`, proxies.
# ---------------------------------------------------------------------------------------------

import time as _time  # noqa: E402
from pathlib import Path as _Path  # noqa: E402

REPO_ROOT = _Path(__file__).resolve().parents[1]

#: Passwords of the roles created on `pg` by `pg_roles` (alice: SCRAM verifier, bob: md5 hash).
ALICE_PASSWORD = "alice-Sekr1t-pw"
BOB_PASSWORD = "bob-Md5-Sekr1t"


@pytest.fixture(scope="session")
def dev_certs():
    """certs/ca.crt, certs/server.crt, certs/server.key (created when missing)."""
    from proxy.certs import ensure_dev_certs

    return ensure_dev_certs(REPO_ROOT / "certs")


@pytest.fixture(scope="session")
def pg_roles(pg):
    """Roles on `pg`: alice (SCRAM password), bob (md5 password; pg_hba lets bob use md5 over TCP).

    Returns {"alice": password, "bob": password}.
    """
    pg.psql(
        "DROP ROLE IF EXISTS alice; DROP ROLE IF EXISTS bob; "
        "SET password_encryption = 'scram-sha-256'; "
        f"CREATE ROLE alice LOGIN PASSWORD '{ALICE_PASSWORD}'; "
        "SET password_encryption = 'md5'; "
        f"CREATE ROLE bob LOGIN PASSWORD '{BOB_PASSWORD}'; "
        "GRANT pg_signal_backend TO alice, bob;"
    )
    hba = pg.data_dir / "pg_hba.conf"
    text = hba.read_text()
    line = "host all bob 127.0.0.1/32 md5"
    if line not in text:
        hba.write_text(line + "\n" + text)
        pg.psql("SELECT pg_reload_conf()")
    import psycopg

    deadline = _time.monotonic() + 10
    while True:  # the reload is asynchronous: wait until bob can log in with md5
        try:
            psycopg.connect(pg.dsn(user="bob", password=BOB_PASSWORD), connect_timeout=5).close()
            break
        except psycopg.OperationalError:
            if _time.monotonic() > deadline:
                raise
            _time.sleep(0.1)
    return {"alice": ALICE_PASSWORD, "bob": BOB_PASSWORD}


@pytest.fixture(scope="session")
def proxy_ini(pg, dev_certs, tmp_path_factory):
    """Build a proxy ini for `pg`: ``proxy_ini(auth_type=..., **keys)`` returns the text.

    Defaults: SCRAM clients, client TLS ``prefer`` with certs/server.crt, secrets by ``auth_query``
    as ``auth_user = postgres`` (whose password alone is in the auth_file), server TLS off. Keys
    given as None are left out.
    """
    ca, crt, key = dev_certs
    userlist = tmp_path_factory.mktemp("userlist") / "userlist.txt"
    userlist.write_text(f'"postgres" "{pg.password}"\n')

    def build(databases: str | None = None, **keys: object) -> str:
        values: dict[str, object] = {
            "auth_type": "scram-sha-256",
            "auth_file": userlist,
            "auth_user": "postgres",
            "client_tls_sslmode": "prefer",
            "client_tls_cert_file": crt,
            "client_tls_key_file": key,
            "server_tls_sslmode": "disable",
        }
        values.update(keys)
        lines = ["[databases]", databases or f"* = host=127.0.0.1 port={pg.port}", "", "[proxy]"]
        lines += [f"{k} = {v}" for k, v in values.items() if v is not None]
        return "\n".join(lines) + "\n"

    return build


@pytest.fixture(scope="session")
def start_proxy(tmp_path_factory):
    """``start_proxy(ini_text, name)`` starts a ProxyProcess; all are stopped at session end."""
    from tests.support.proxy import ProxyProcess

    started = []

    def start(ini: str, name: str = "proxy") -> ProxyProcess:
        proc = ProxyProcess(ini, tmp_path_factory.mktemp(name)).start()
        started.append(proc)
        return proc

    yield start
    import os as _os
    import signal as _signal

    for proc in started:  # signal all first, so they shut down in parallel
        if proc.process is not None and proc.process.poll() is None:
            try:
                _os.kill(proc.process.pid, _signal.SIGTERM)
            except ProcessLookupError:
                pass
    for proc in started:
        proc.stop()


@pytest.fixture(scope="session")
def scram_proxy(pg, pg_roles, proxy_ini, start_proxy):
    """The main proxy: SCRAM pass-through for users not in the auth_file, client TLS prefer."""
    return start_proxy(proxy_ini(), "scram-proxy")


@pytest.fixture(scope="session")
def hardened_proxy(pg, pg_roles, proxy_ini, start_proxy):
    """Like scram_proxy, with ``max_packet_size = 1024`` and ``client_login_timeout = 1`` (seconds)."""
    return start_proxy(proxy_ini(max_packet_size=1024, client_login_timeout=1), "hardened-proxy")
