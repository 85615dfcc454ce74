"""Every client in its default mode (autocommit off), over TLS, in session and transaction pooling:
an ``iasql_*`` call runs inside the driver's transaction, the next statement in that transaction
sees what it did, ``commit()`` keeps it and ``rollback()`` undoes it (issue point 6).

Clients: psycopg 2 and 3, pg8000's DB-API, asyncpg inside ``connection.transaction()``, pgJDBC with
``autoCommit=false``, SQLAlchemy 2 (``with engine.begin() as conn:``), psql with ``\\set AUTOCOMMIT
off``. Each run installs ``aws_iam`` in a fresh database and checks, straight on Postgres, whether
its table exists afterwards.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
import subprocess
from pathlib import Path

import asyncpg
import pg8000.dbapi
import psycopg
import psycopg2
import pytest
import sqlalchemy as sa

from tests.conftest import REPO_ROOT
from tests.intercept.conftest import PASSWORD, engine_section

pytestmark = pytest.mark.timeout(180)

CA = REPO_ROOT / "certs" / "ca.crt"
EXPECTED_INSTALL = [("aws_iam@0.1.0", "access_key"), ("aws_iam@0.1.0", "iam_role"),
                    ("aws_iam@0.1.0", "iam_user")]  # rows for the module named, not its dependency


@pytest.fixture(scope="module")
def txn_proxy(pg, moto_server, proxy_ini, start_proxy):
    """A second proxy with the engine, in transaction pooling with a pool of 2."""
    ini = proxy_ini(pool_mode="transaction", default_pool_size=2) + engine_section(moto_server.endpoint_url)
    return start_proxy(ini, "iasql-txn-proxy")


@pytest.fixture(params=["session", "transaction"])
def port(request, iasql_proxy, txn_proxy):
    return (iasql_proxy if request.param == "session" else txn_proxy).port


def table_exists(pg, db: str) -> bool:
    with psycopg.connect(pg.dsn(db), autocommit=True) as c:
        return c.execute("SELECT to_regclass('iam_role') IS NOT NULL").fetchone()[0]


def libpq_dsn(port: int, db: str) -> str:
    return (f"host=localhost port={port} user=postgres password={PASSWORD} dbname={db} "
            f"sslmode=verify-full sslrootcert={CA}")


def tls_context() -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(CA))


# -- one function per client: (installed rows, iam_role count seen in the same transaction) -------

def _dbapi(conn, finish: str):
    """The scenario over a DB-API connection in its default mode (psycopg2, pg8000.dbapi)."""
    try:
        cur = conn.cursor()
        cur.execute("SELECT module_name, created_table_name FROM iasql_install(%s)", ("aws_iam",))
        rows = [tuple(r) for r in cur.fetchall()]
        cur.execute("SELECT count(*) FROM iam_role")
        count = cur.fetchone()[0]
        getattr(conn, finish)()
        return rows, count
    finally:
        conn.close()


def run_psycopg2(port: int, db: str, finish: str):
    return _dbapi(psycopg2.connect(libpq_dsn(port, db)), finish)


def run_psycopg3(port: int, db: str, finish: str):
    with psycopg.connect(libpq_dsn(port, db)) as conn:
        rows = conn.execute("SELECT module_name, created_table_name FROM iasql_install(%s)", ["aws_iam"]).fetchall()
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        count = conn.execute("SELECT count(*) FROM iam_role").fetchone()[0]
        getattr(conn, finish)()
        return rows, count


def run_pg8000(port: int, db: str, finish: str):
    return _dbapi(pg8000.dbapi.connect(user="postgres", password=PASSWORD, host="localhost", port=port, database=db,
                                       ssl_context=tls_context()), finish)


class _Rollback(Exception):
    pass


def run_asyncpg(port: int, db: str, finish: str):
    async def go():
        conn = await asyncpg.connect(host="localhost", port=port, user="postgres", password=PASSWORD, database=db,
                                     ssl=tls_context())
        out = None
        try:
            async with conn.transaction():
                rows = await conn.fetch("SELECT module_name, created_table_name FROM iasql_install($1)", "aws_iam")
                count = await conn.fetchval("SELECT count(*) FROM iam_role")
                out = ([tuple(r) for r in rows], count)
                if finish == "rollback":
                    raise _Rollback()
        except _Rollback:
            pass
        finally:
            await conn.close()
        return out

    return asyncio.run(go())


def run_sqlalchemy(port: int, db: str, finish: str):
    engine = sa.create_engine(f"postgresql+psycopg://postgres:{PASSWORD}@localhost:{port}/{db}",
                              connect_args={"sslmode": "verify-full", "sslrootcert": str(CA)}, poolclass=sa.NullPool)
    try:
        if finish == "commit":
            with engine.begin() as conn:  # commits at the end of the block
                rows = conn.execute(sa.text("SELECT module_name, created_table_name FROM iasql_install(:m)"),
                                    {"m": "aws_iam"}).all()
                count = conn.execute(sa.text("SELECT count(*) FROM iam_role")).scalar()
        else:
            with engine.connect() as conn:  # "commit as you go": nothing is kept without commit()
                rows = conn.execute(sa.text("SELECT module_name, created_table_name FROM iasql_install(:m)"),
                                    {"m": "aws_iam"}).all()
                count = conn.execute(sa.text("SELECT count(*) FROM iam_role")).scalar()
                conn.rollback()
        return [tuple(r) for r in rows], count
    finally:
        engine.dispose()


def run_psql(port: int, db: str, finish: str):
    script = ("\\set AUTOCOMMIT off\n\\pset format unaligned\n\\pset tuples_only on\n"
              "SELECT module_name, created_table_name FROM iasql_install('aws_iam');\n"
              "SELECT 'count|' || count(*) FROM iam_role;\n"
              f"{finish.upper()};\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGPASSWORD"] = PASSWORD
    res = subprocess.run([shutil.which("psql"), "-X", "-v", "ON_ERROR_STOP=1", libpq_dsn(port, db)], input=script,
                         capture_output=True, text=True, timeout=60, env=env)
    assert res.returncode == 0, res.stderr
    lines = [ln for ln in res.stdout.splitlines() if "|" in ln]
    rows = [tuple(ln.split("|")) for ln in lines if not ln.startswith("count|")]
    [count] = [int(ln.split("|")[1]) for ln in lines if ln.startswith("count|")]
    return rows, count


CLIENTS = {"psycopg2": run_psycopg2, "psycopg3": run_psycopg3, "pg8000": run_pg8000, "asyncpg": run_asyncpg,
           "sqlalchemy": run_sqlalchemy, "psql": run_psql}


@pytest.mark.parametrize("finish", ["commit", "rollback"])
@pytest.mark.parametrize("client", CLIENTS)
def test_call_in_the_drivers_transaction(client, finish, port, pg, fresh_db):
    rows, count = CLIENTS[client](port, fresh_db, finish)
    assert sorted(rows) == EXPECTED_INSTALL
    assert isinstance(count, int) and count >= 0  # the very next statement sees the new table
    assert table_exists(pg, fresh_db) is (finish == "commit")


def test_pgjdbc_autocommit_off(port, pg, fresh_db, jdbc_jar, tmp_path):
    src = Path(__file__).parent / "java" / "IasqlTxJdbc.java"
    res = subprocess.run([shutil.which("javac"), "-d", str(tmp_path), "-cp", str(jdbc_jar), str(src)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    url = (f"jdbc:postgresql://localhost:{port}/{fresh_db}?sslmode=verify-full&sslrootcert={CA}"
           "&prepareThreshold=2")
    for finish in ("rollback", "commit"):
        res = subprocess.run([shutil.which("java"), "-cp", f"{jdbc_jar}:{tmp_path}", "IasqlTxJdbc", url, "postgres",
                              PASSWORD, finish], capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stdout + res.stderr
        lines = res.stdout.splitlines()
        installed = sorted(tuple(ln.split("|")[1:]) for ln in lines if ln.startswith("installed|"))
        if finish == "rollback":
            assert installed == EXPECTED_INSTALL, res.stdout
            assert [ln for ln in lines if ln.startswith("count|")] == ["count|0"] or \
                [ln for ln in lines if ln.startswith("count|")][0].split("|")[1].isdigit()
            assert not table_exists(pg, fresh_db)
        else:
            assert installed == EXPECTED_INSTALL, res.stdout
            assert table_exists(pg, fresh_db)
        assert f"done|{finish}" in lines
        assert not [ln for ln in lines if ln.startswith("ERR|")], res.stdout
        # VARIADIC ? bound with setArray(text[]) in every run, text then binary after the threshold
        if finish == "rollback":
            for run in (1, 2, 3):
                assert sorted(ln.split("|", 2)[2] for ln in lines if ln.startswith(f"variadic|{run}|")) == [
                    "aws_account@0.1.0|aws_credentials", "aws_account@0.1.0|aws_regions"], res.stdout
                assert f"paramtype|{run}|_text" in lines, res.stdout
