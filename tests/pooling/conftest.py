"""Fixtures for the transaction-pooling suite (issue 5).

- ``pool_db``: a fresh database on ``pg`` with schemas ``s1``..``s4`` (each a table ``t`` holding
  the schema's name) and NOLOGIN roles ``pool_role_a``/``pool_role_b``; dropped at the end.
- ``txn_proxy``: the real proxy as a subprocess, ``pool_mode = transaction``,
  ``default_pool_size = 2``, ``query_wait_timeout = 5`` (a wrongly pinned connection gives an
  error instead of hanging a test).
- ``make_proxy(env=None, **keys)``: another proxy with its own keys (and extra environment
  variables), stopped when the test ends.
- ``direct(db)`` / ``via(proxy, db)``: psycopg connection strings.
- ``jdbc_jar``: pgJDBC, from the interception suite's fixture (apt-get installs it when missing).
"""

from __future__ import annotations

import uuid

import psycopg
import pytest

from tests.intercept.conftest import jdbc_jar  # noqa: F401  (re-exported fixture)
from tests.support.proxy import ProxyProcess

SCHEMAS = {"s1": "one", "s2": "two", "s3": "three", "s4": "four"}
ROLES = ("pool_role_a", "pool_role_b")


def direct_dsn(pg, dbname: str, **extra: str) -> str:
    parts = [f"host=127.0.0.1 port={pg.port} user=postgres password={pg.password} dbname={dbname}",
             "sslmode=disable connect_timeout=10"]
    parts += [f"{k}={v}" for k, v in extra.items()]
    return " ".join(parts)


def proxy_dsn(proxy: ProxyProcess, dbname: str, **extra: str) -> str:
    return proxy.dsn(dbname=dbname, connect_timeout="10", **extra)


@pytest.fixture(scope="session")
def pool_db(pg):
    name = f"pooling_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(direct_dsn(pg, "postgres"), autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
        for r in ROLES:
            c.execute(f"DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{r}') "
                      f"THEN CREATE ROLE {r} NOLOGIN; END IF; END$$")
    with psycopg.connect(direct_dsn(pg, name), autocommit=True) as c:
        for s, v in SCHEMAS.items():
            c.execute(f"CREATE SCHEMA {s}; CREATE TABLE {s}.t(v text); INSERT INTO {s}.t VALUES ('{v}')")
            c.execute(f"GRANT USAGE ON SCHEMA {s} TO PUBLIC; GRANT SELECT ON {s}.t TO PUBLIC")
    yield name
    with psycopg.connect(direct_dsn(pg, "postgres"), autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def txn_proxy(pg, proxy_ini, start_proxy):
    return start_proxy(proxy_ini(pool_mode="transaction", default_pool_size=2, query_wait_timeout=5),
                       "txn-proxy")


@pytest.fixture
def make_proxy(proxy_ini, tmp_path):
    started: list[ProxyProcess] = []

    def make(env: dict[str, str] | None = None, **keys: object) -> ProxyProcess:
        proc = ProxyProcess(proxy_ini(**keys), tmp_path / f"proxy{len(started)}", env=env).start()
        started.append(proc)
        return proc

    yield make
    for p in started:
        p.stop()


@pytest.fixture
def direct(pg):
    return lambda dbname, **extra: direct_dsn(pg, dbname, **extra)


@pytest.fixture
def via():
    return proxy_dsn


@pytest.fixture(scope="session")
def model_env(pg, proxy_ini, start_proxy):
    """The model test's database and proxies (``tests.pooling.model.ModelEnv``)."""
    from tests.pooling.model import ModelEnv

    env = ModelEnv(pg, proxy_ini, start_proxy)
    yield env
    env.drop()
