"""The proxy set-up shared by recording (tests/traces/record.py) and replay (test_replay.py).

The proxy runs with SCRAM, client TLS ``prefer`` with the development certificates, secrets by
``auth_query`` as ``postgres``, and the IaSQL engine pointed at a moto server (connecting as
postgres/postgres). Each scenario gets a fresh database named ``TRACE_DB`` and a reset moto, so
nothing recorded depends on what ran before.
"""

from __future__ import annotations

from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parents[2]
TRACES = Path(__file__).resolve().parent
PASSWORD = "postgres"
TRACE_DB = "iasql_trace"


def proxy_ini(pg, moto_url: str, certs: tuple[Path, Path, Path], userlist: Path, record_dir: Path | None = None) -> str:
    """The ini text (ProxyProcess adds listen_port)."""
    _ca, crt, key = certs
    userlist.write_text(f'"postgres" "{pg.password}"\n')
    lines = ["[databases]", f"* = host=127.0.0.1 port={pg.port}", "", "[proxy]",
             "auth_type = scram-sha-256", f"auth_file = {userlist}", "auth_user = postgres",
             "client_tls_sslmode = prefer", f"client_tls_cert_file = {crt}", f"client_tls_key_file = {key}",
             "server_tls_sslmode = disable"]
    if record_dir is not None:
        lines.append(f"record_dir = {record_dir}")
    lines += ["", "[engine]", f"aws_endpoint_url = {moto_url}", "lock_wait_timeout = 10"]
    return "\n".join(lines) + "\n"


def fresh_database(pg, name: str = TRACE_DB) -> str:
    """Drop and create database ``name`` on ``pg`` (directly, not through the proxy)."""
    with psycopg.connect(pg.dsn(), autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        c.execute(f'CREATE DATABASE "{name}"')
    return name


def drop_database(pg, name: str) -> None:
    with psycopg.connect(pg.dsn(), autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
