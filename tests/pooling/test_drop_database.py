"""``DROP DATABASE x`` through the proxy (issue 19, point 6): the proxy's own idle pooled
connections to ``x`` are closed first, so the statement succeeds exactly when it would against
Postgres alone; a client really connected to ``x`` still makes it fail with Postgres's 55006.

Compared with Postgres itself (same statements straight to the server), in session and in
transaction pooling, over the simple protocol (psql) and the extended one (psycopg).
"""

from __future__ import annotations

import uuid

import psycopg
import pytest

from tests.intercept.conftest import psql
from tests.pooling.conftest import direct_dsn, proxy_dsn

pytestmark = pytest.mark.timeout(120)


def new_database(pg, name: str | None = None) -> str:
    name = name or f"dropme_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(direct_dsn(pg, "postgres"), autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    return name


def exists(pg, name: str) -> bool:
    with psycopg.connect(direct_dsn(pg, "postgres"), autocommit=True) as c:
        return c.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (name,)).fetchone()[0] == 1


def use_and_leave(proxy, name: str) -> None:
    """A client of the proxy uses ``name`` and disconnects: its server connection stays pooled."""
    with psycopg.connect(proxy_dsn(proxy, name), autocommit=True) as c:
        assert c.execute("SELECT current_database()").fetchone() == (name,)


def backends_on(pg, name: str) -> int:
    with psycopg.connect(direct_dsn(pg, "postgres"), autocommit=True) as c:
        return c.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (name,)).fetchone()[0]


@pytest.mark.parametrize("pool_mode", ["session", "transaction"])
def test_drop_database_after_clients_left(pg, make_proxy, pool_mode):
    proxy = make_proxy(pool_mode=pool_mode, default_pool_size=3, server_idle_timeout=600)
    simple, extended, quoted = new_database(pg), new_database(pg), new_database(pg, f"Drop_Me_{uuid.uuid4().hex[:6]}")
    for name in (simple, extended, quoted):
        use_and_leave(proxy, name)
        assert backends_on(pg, name) == 1  # the pooled connection Postgres would count as a user

    # psql, simple protocol, as dropdb would send it
    done = psql(proxy.port, "postgres", f'DROP DATABASE "{simple}"')
    assert (done.returncode, done.stdout.strip()) == (0, "DROP DATABASE"), done.stderr
    assert not exists(pg, simple)
    # psycopg, extended protocol (binary=True: Parse/Bind/Execute), with IF EXISTS and a quoted name
    with psycopg.connect(proxy_dsn(proxy, "postgres"), autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {extended}", binary=True)
        c.execute(f'drop database if exists "{quoted}" with (force)', binary=True)
        assert c.execute("SELECT 1").fetchone() == (1,)  # the session goes on as usual
    assert not exists(pg, extended) and not exists(pg, quoted)
    # the proxy still serves the databases that remain, and a dropped one gets Postgres's error
    use_and_leave(proxy, "postgres")
    # (in transaction pooling the login takes no server connection: the first query gets it)
    with pytest.raises(psycopg.Error, match=f'database "{simple}" does not exist'):
        with psycopg.connect(proxy_dsn(proxy, simple)) as c:
            c.execute("SELECT 1")


def test_drop_database_still_in_use_fails_as_in_postgres(pg, make_proxy):
    """A client holding a session on the database: the DROP fails with 55006 through the proxy as
    straight to Postgres (same SQLSTATE, same message), and nothing of the client's is closed."""
    proxy = make_proxy(pool_mode="session", default_pool_size=3)
    name = new_database(pg)
    holder = psycopg.connect(proxy_dsn(proxy, name), autocommit=True)
    try:
        answers = []
        for dsn in (direct_dsn(pg, "postgres"), proxy_dsn(proxy, "postgres")):
            with psycopg.connect(dsn, autocommit=True) as c:
                with pytest.raises(psycopg.errors.ObjectInUse) as ei:
                    c.execute(f'DROP DATABASE "{name}"')
                answers.append((ei.value.sqlstate, ei.value.diag.message_primary))
        assert answers[0] == answers[1] == ("55006", f'database "{name}" is being accessed by other users')
        assert holder.execute("SELECT current_database()").fetchone() == (name,)
    finally:
        holder.close()
    use_and_leave(proxy, "postgres")
    done = psql(proxy.port, "postgres", f'DROP DATABASE "{name}"')
    assert done.returncode == 0, done.stderr
    assert not exists(pg, name)
