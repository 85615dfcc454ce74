"""Fixtures for scale out (issue 19): two Postgres servers on loopback and proxies that place and
route databases on both through the metadata database.

``servers`` (session): two EmbeddedPostgres clusters in data directories of their own (so one can
be stopped and started again on the same port), with the login roles ``alice`` and ``bob`` on
both. ``fleet_ini(**keys)`` builds a proxy configuration with ``[servers]`` naming both
(the admin password in a mode-0600 ``password_file``), SCRAM clients, ``auth_user = postgres`` and
the moto sandbox. ``fleet`` (session): two proxies on that configuration.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import psycopg
import pytest

from proxy.embedded.postgres import EmbeddedPostgres

PASSWORDS = {"alice": "alice-Scale-pw1", "bob": "bob-Scale-pw2"}


@pytest.fixture(scope="session")
def servers():
    """Two running clusters ``[pg1, pg2]`` (superuser postgres/postgres); pg1 holds the metadata
    database and the roles alice and bob."""
    base = Path(tempfile.mkdtemp(prefix="iasql-scale-"))
    os.chmod(base, 0o755)
    started: list[EmbeddedPostgres] = []
    try:
        for i in (1, 2):
            started.append(EmbeddedPostgres(password="postgres", data_dir=base / f"pg{i}" / "data").start())
        for s in started:  # on both, so that a login to a database on either can get that far
            s.psql("SET password_encryption = 'scram-sha-256'; " + " ".join(
                f"CREATE ROLE {u} LOGIN PASSWORD '{p}';" for u, p in PASSWORDS.items()))
        yield started
    finally:
        for s in started:
            s.stop()
        import shutil

        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def fleet_ini(servers, moto_server, tmp_path_factory):
    """``fleet_ini(**proxy_keys)``: the ini text of a proxy in front of both servers."""
    d = tmp_path_factory.mktemp("fleet-secrets")
    pwfile = d / "admin.password"
    pwfile.write_text("postgres\n")
    pwfile.chmod(0o600)
    userlist = d / "userlist.txt"
    userlist.write_text('"postgres" "postgres"\n')

    def build(**keys: object) -> str:
        values: dict[str, object] = {"auth_type": "scram-sha-256", "auth_file": userlist, "auth_user": "postgres",
                                     "server_tls_sslmode": "disable", "route_refresh_interval": 2,
                                     "server_login_retry": 1, "admin_users": "postgres"}
        values.update(keys)
        lines = ["[servers]"]
        lines += [f"pg{i} = host=127.0.0.1 port={s.port} user=postgres password_file={pwfile}"
                  for i, s in enumerate(servers, 1)]
        lines += ["", "[proxy]"] + [f"{k} = {v}" for k, v in values.items() if v is not None]
        lines += ["", "[engine]", f"aws_endpoint_url = {moto_server.endpoint_url}", "lock_wait_timeout = 20"]
        return "\n".join(lines) + "\n"

    return build


@pytest.fixture(scope="session")
def fleet(fleet_ini, start_proxy):
    """Two proxies ``[a, b]`` on the same configuration (each follows the routing table)."""
    return [start_proxy(fleet_ini(), "fleet-a"), start_proxy(fleet_ini(), "fleet-b")]


def metadata_conn(proxy, user: str = "alice") -> psycopg.Connection:
    """An autocommit connection to the metadata database through ``proxy`` as ``user``."""
    return psycopg.connect(proxy.dsn(user=user, password=PASSWORDS[user], dbname="iasql_metadata"),
                           autocommit=True, connect_timeout=10)


def connect_db(proxy, alias: str, user: str = "alice") -> dict:
    """``iasql_connect(alias)`` through ``proxy`` as ``user``: the row as a dict."""
    with metadata_conn(proxy, user) as c:
        cur = c.execute("SELECT * FROM iasql_connect(%s)", (alias,))
        return dict(zip([d.name for d in cur.description], cur.fetchone()))


def db_conn(proxy, db: dict, **kw) -> psycopg.Connection:
    """A connection to the database ``db`` (an ``iasql_connect`` row) through ``proxy``, as its role."""
    return psycopg.connect(proxy.dsn(user=db["user"], password=db["password"], dbname=db["id"]),
                           connect_timeout=10, **kw)
