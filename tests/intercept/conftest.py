"""Fixtures for the iasql_* interception suite (README "How iasql_* calls are answered").

- ``iasql_proxy``: the real ``iasql-proxy`` as a subprocess, engine enabled, AWS calls going to the
  session's moto server (calls run as the client, on its own server connection).
- ``db``: a fresh database per test module (the engine's metadata never leaks between modules).
- ``connect(...)``: psycopg 3 connections through the proxy to ``db``.
- ``InProcessProxy``: a proxy served on its own event loop in a thread, so a test can install a
  test registry as the interceptor (see test_progress_cancel.py).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import struct
import subprocess
import threading
import uuid
from pathlib import Path

import psycopg
import pytest

from tests.support.faults import RawConn

PASSWORD = "postgres"
JDBC_JAR = Path("/usr/share/java/postgresql.jar")


def engine_section(moto_url: str) -> str:
    return f"\n[engine]\naws_endpoint_url = {moto_url}\nlock_wait_timeout = 10\n"


@pytest.fixture(scope="session")
def iasql_proxy(pg, moto_server, proxy_ini, start_proxy):
    """The proxy process with the real engine (client TLS optional, SCRAM, postgres in auth_file)."""
    ini = proxy_ini() + engine_section(moto_server.endpoint_url)
    return start_proxy(ini, "iasql-proxy")


def _new_database(pg, prefix: str) -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg.dsn(), autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    return name


def _drop_database(pg, name: str) -> None:
    with psycopg.connect(pg.dsn(), autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def db(pg, request):
    """A new database for this test module, dropped at the end."""
    name = _new_database(pg, "ic_" + request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")[:20])
    yield name
    _drop_database(pg, name)


@pytest.fixture
def fresh_db(pg):
    """A new database for one test."""
    name = _new_database(pg, "icf")
    yield name
    _drop_database(pg, name)


@pytest.fixture
def connect(iasql_proxy, db):
    """``connect(autocommit=True, dbname=db, **kw)``: a psycopg connection through the proxy."""
    opened: list[psycopg.Connection] = []

    def make(autocommit: bool = True, dbname: str | None = None, **kw) -> psycopg.Connection:
        conn = psycopg.connect(iasql_proxy.dsn(dbname=dbname or db), autocommit=autocommit,
                               connect_timeout=5, **kw)
        opened.append(conn)
        return conn

    yield make
    for c in opened:
        c.close()


@pytest.fixture
def raw(iasql_proxy, db):
    """``raw(dbname=db, port=proxy)``: a logged-in RawConn (protocol-level client) to the proxy."""
    opened: list[RawConn] = []

    def make(dbname: str | None = None, port: int | None = None) -> RawConn:
        conn = RawConn(port or iasql_proxy.port, timeout=30)
        conn.startup("postgres", dbname or db, password=PASSWORD)
        opened.append(conn)
        return conn

    yield make
    for c in opened:
        c.terminate()


def psql(port: int, dbname: str, sql: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``psql -X -c sql`` against 127.0.0.1:port as postgres."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGPASSWORD"] = PASSWORD
    return subprocess.run([shutil.which("psql") or "psql", "-X", "-v", "ON_ERROR_STOP=1",
                           f"host=127.0.0.1 port={port} user=postgres dbname={dbname} sslmode=disable",
                           *args, "-c", sql], capture_output=True, text=True, timeout=timeout, env=env)


def install_with_credentials(port: int, dbname: str, module: str) -> None:
    """``iasql_install(module)`` through psql, then the sandbox cloud's credentials in
    ``aws_credentials`` when the table is empty (the module RPC tests' starting point)."""
    res = psql(port, dbname, f"SELECT * FROM iasql_install('{module}')", "-A", "-t")
    assert res.returncode == 0, res.stderr
    res = psql(port, dbname, "SELECT count(*) FROM aws_credentials", "-A", "-t")
    if res.stdout.strip() == "0":
        res = psql(port, dbname, "INSERT INTO aws_credentials (access_key_id, secret_access_key) "
                                 "VALUES ('testing', 'testing')")
        assert res.returncode == 0, res.stderr


# -- decoding helpers -------------------------------------------------------------------------

def row_description(payload: bytes) -> list[tuple[str, int]]:
    """(name, type OID) of each field of a RowDescription payload."""
    n = struct.unpack_from("!h", payload)[0]
    pos = 2
    out = []
    for _ in range(n):
        end = payload.index(b"\0", pos)
        name = payload[pos:end].decode()
        pos = end + 1
        _table, _col, oid, _size, _mod, _fmt = struct.unpack_from("!ihihih", payload, pos)
        pos += 18
        out.append((name, oid))
    return out


def types(messages) -> str:
    """The message type letters, e.g. 'TDCZ'."""
    return "".join(t for t, _ in messages)


def tags(messages) -> list[str]:
    """CommandComplete tags."""
    return [p[:-1].decode() for t, p in messages if t == "C"]


# -- pgJDBC -----------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def jdbc_jar() -> Path:
    """/usr/share/java/postgresql.jar, installing Debian's libpostgresql-jdbc-java when missing."""
    if not JDBC_JAR.exists():
        if shutil.which("apt-get") is None or os.geteuid() != 0:
            pytest.fail("pgJDBC missing: install libpostgresql-jdbc-java (needs root + apt-get)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "libpostgresql-jdbc-java"]
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=600)
        if res.returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env, stdin=subprocess.DEVNULL,
                           timeout=600)
            res = subprocess.run(cmd, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=600)
        assert JDBC_JAR.exists(), f"apt-get install libpostgresql-jdbc-java failed: {res.stdout}\n{res.stderr}"
    if shutil.which("javac") is None or shutil.which("java") is None:
        pytest.fail("javac/java not on PATH (install openjdk-17-jdk-headless)")
    return JDBC_JAR


# -- an in-process proxy on its own loop ------------------------------------------------------

class InProcessProxy:
    """``serve(cfg)`` on an event loop in a daemon thread. ``call(coro_fn)`` runs on that loop."""

    def __init__(self, cfg, setup=None):
        self.cfg = cfg
        self.setup = setup
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="inproc-proxy")
        self.app = None

    def start(self) -> "InProcessProxy":
        from proxy.server import serve

        self.thread.start()

        async def boot():
            app = await serve(self.cfg)
            if self.setup is not None:
                self.setup(app)
            return app

        self.app = asyncio.run_coroutine_threadsafe(boot(), self.loop).result(30)
        return self

    @property
    def port(self) -> int:
        return self.app.port

    def stop(self) -> None:
        if self.app is not None:
            asyncio.run_coroutine_threadsafe(self.app.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
