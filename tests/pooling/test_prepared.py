"""Prepared statements follow the client (issue 5, "Prepared statements follow the client").

Workloads of drivers that prepare named statements on their own (psycopg 3 with
``prepare_threshold=0``, asyncpg, pgJDBC) run with four clients on a pool of two: no "prepared
statement does not exist" error and correct results. Raw-protocol scripts compare Close, re-Parse,
DEALLOCATE and name clashes with direct Postgres.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import threading
from pathlib import Path

import asyncpg
import psycopg
import pytest

from proxy.wire import frontend as F
from tests.pooling.support import raw_differential

pytestmark = pytest.mark.timeout(120)

CLIENTS = 4
TRANSACTIONS = 120
JAVA_DIR = Path(__file__).parent / "java"


def _missing(errors: list[str]) -> list[str]:
    return [e for e in errors if "does not exist" in e and "prepared statement" in e]


# -- psycopg 3 --------------------------------------------------------------------------------

def _psycopg_worker(dsn: str, k: int, errors: list[str], prepared_max: int | None) -> None:
    with psycopg.connect(dsn, autocommit=True, prepare_threshold=0) as conn:
        if prepared_max is not None:
            conn.prepared_max = prepared_max
        for i in range(TRANSACTIONS):
            try:
                if i % 4 == 3:
                    with conn.transaction():
                        a = conn.execute("SELECT %s::int + %s::int", (i, k)).fetchone()[0]
                        b = conn.execute("SELECT v FROM s1.t WHERE v = %s", ("one",)).fetchone()[0]
                else:
                    a = conn.execute("SELECT %s::int + %s::int", (i, k)).fetchone()[0]
                    b = conn.execute("SELECT v FROM s1.t WHERE v = %s", ("one",)).fetchone()[0]
                c = conn.execute(f"SELECT %s::text || '-{i % 7}'", (f"c{k}",)).fetchone()[0]
                if (a, b, c) != (i + k, "one", f"c{k}-{i % 7}"):
                    errors.append(f"client {k} transaction {i}: wrong result {(a, b, c)!r}")
            except psycopg.Error as e:
                errors.append(f"client {k} transaction {i}: {e.sqlstate} {e}")


@pytest.mark.parametrize("prepared_max", [None, 3], ids=["cache", "evicting"])
def test_psycopg_prepared(txn_proxy, via, pool_db, prepared_max):
    """prepare_threshold=0: every statement is a named Parse; with prepared_max = 3 psycopg also
    closes (deallocates) statements and prepares them again."""
    errors: list[str] = []
    threads = [threading.Thread(target=_psycopg_worker, args=(via(txn_proxy, pool_db), k, errors, prepared_max))
               for k in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert not _missing(errors), _missing(errors)[:5]
    assert errors == []


# -- asyncpg ----------------------------------------------------------------------------------

async def _asyncpg_worker(port: int, db: str, k: int, errors: list[str], cache: int) -> None:
    conn = await asyncpg.connect(host="127.0.0.1", port=port, user="postgres", password="postgres", database=db,
                                 ssl=False, statement_cache_size=cache)
    try:
        explicit = await conn.prepare("SELECT $1::int * 2, $2::text")
        for i in range(TRANSACTIONS):
            try:
                if i % 5 == 4:
                    async with conn.transaction():
                        got = await conn.fetchval("SELECT $1::int + $2::int", i, k)
                        row = await explicit.fetchrow(i, f"k{k}")
                else:
                    got = await conn.fetchval("SELECT $1::int + $2::int", i, k)
                    row = await explicit.fetchrow(i, f"k{k}")
                name = await conn.fetchval(f"SELECT $1::text || '{i % 6}'", f"n{k}-")
                rows = await conn.fetch("SELECT g FROM generate_series(1, $1::int) g", i % 4 + 1)
                if (got, tuple(row), name, len(rows)) != (i + k, (2 * i, f"k{k}"), f"n{k}-{i % 6}", i % 4 + 1):
                    errors.append(f"client {k} fetch {i}: wrong result {(got, tuple(row), name, len(rows))!r}")
            except asyncpg.PostgresError as e:
                errors.append(f"client {k} fetch {i}: {e.sqlstate} {e}")
    finally:
        await conn.close()


@pytest.mark.parametrize("cache", [100, 2], ids=["cache", "evicting"])
async def test_asyncpg_prepared(txn_proxy, pool_db, cache):
    """asyncpg prepares every parameterized query as a named statement (its statement cache), plus
    an explicit ``conn.prepare``; with statement_cache_size = 2 it also closes evicted ones."""
    errors: list[str] = []
    await asyncio.wait_for(asyncio.gather(*[_asyncpg_worker(txn_proxy.port, pool_db, k, errors, cache)
                                            for k in range(CLIENTS)]), 90)
    assert not _missing(errors), _missing(errors)[:5]
    assert errors == []


# -- pgJDBC -----------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def pool_jdbc(jdbc_jar, tmp_path_factory) -> list[str]:
    """The compiled PoolJdbc program: the java command prefix."""
    out = tmp_path_factory.mktemp("pooljdbc")
    res = subprocess.run([shutil.which("javac"), "-cp", str(jdbc_jar), "-d", str(out), str(JAVA_DIR / "PoolJdbc.java")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return [shutil.which("java"), "-cp", f"{jdbc_jar}{os.pathsep}{out}", "PoolJdbc"]


def test_pgjdbc_prepared(txn_proxy, pool_db, pool_jdbc):
    """Four threads reuse PreparedStatements 120 times (named server statements after 5 uses)."""
    url = f"jdbc:postgresql://127.0.0.1:{txn_proxy.port}/{pool_db}"
    res = subprocess.run(pool_jdbc + [url, "postgres", "postgres", str(CLIENTS), str(TRANSACTIONS)],
                         capture_output=True, text=True, timeout=100)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"RESULT ok={CLIENTS * TRANSACTIONS} errors=0 missing=0" in res.stdout, res.stdout + res.stderr[-2000:]


def test_pgjdbc_prepared_direct_baseline(pg, pool_db, pool_jdbc):
    """The same program directly on Postgres (the workload itself is right)."""
    url = f"jdbc:postgresql://127.0.0.1:{pg.port}/{pool_db}"
    res = subprocess.run(pool_jdbc + [url, "postgres", pg.password, "2", "20"],
                         capture_output=True, text=True, timeout=100)
    assert "RESULT ok=40 errors=0 missing=0" in res.stdout, res.stdout + res.stderr[-2000:]


# -- raw protocol: Close, re-Parse, DEALLOCATE ------------------------------------------------

def _q(sql: str) -> bytes:
    return F.Query(sql).encode()


def _parse(name: str, sql: str) -> bytes:
    return F.Parse(name, sql).encode() + F.Sync().encode()


def _run(name: str, *params: str) -> bytes:
    return (F.Bind("", name, (), tuple(p.encode() for p in params), ()).encode() + F.Execute("", 0).encode()
            + F.Sync().encode())


def _close(name: str) -> bytes:
    return F.Close(b"S", name).encode() + F.Sync().encode()


@pytest.fixture
def raw_diff(pg, txn_proxy, pool_db):
    return lambda clients, steps: raw_differential(pg.port, txn_proxy.port, pool_db, clients, steps)


def test_named_statements_follow_client(raw_diff):
    """Client 0 prepares s1; client 1 holds the connection it was prepared on, so client 0's next
    Bind runs on the other connection; client 1 uses the same name for another statement."""
    raw_diff(2, [
        (0, _parse("s1", "SELECT $1::int + 1"), 1),
        (1, _q("BEGIN"), 1),
        (0, _run("s1", "41"), 1),
        (1, _parse("s1", "SELECT $1::text || '!'"), 1),
        (1, _run("s1", "hi"), 1),
        (0, _run("s1", "1"), 1),
        (1, _q("COMMIT"), 1),
        (1, _run("s1", "again"), 1),
        (0, F.Describe(b"S", "s1").encode() + F.Sync().encode(), 1),
        (0, _run("s1", "9") + _run("s1", "10"), 2),
    ])


def test_close_then_reparse(raw_diff):
    raw_diff(2, [
        (0, _parse("s1", "SELECT $1::int + 1"), 1),
        (0, _run("s1", "1"), 1),
        (1, _q("BEGIN"), 1),
        (0, _close("s1"), 1),
        (0, _run("s1", "1"), 1),                                   # 26000 on both
        (0, _parse("s1", "SELECT $1::int * 10"), 1),
        (0, _run("s1", "7"), 1),
        (1, _q("COMMIT"), 1),
        (0, _run("s1", "8"), 1),
        (0, _close("s1") + _parse("s1", "SELECT $1::int - 1") + _run("s1", "5"), 3),
        (0, _close("never_prepared"), 1),                          # closing an unknown name is not an error
    ])


def test_parse_existing_name_fails(raw_diff):
    """Parse of a name that exists is ERROR 42P05 'prepared statement "s1" already exists'."""
    raw_diff(1, [
        (0, _parse("s1", "SELECT 1"), 1),
        (0, _parse("s1", "SELECT 2"), 1),
        (0, _run("s1"), 1),
    ])


def test_deallocate_all_sql(raw_diff):
    """SQL DEALLOCATE ALL drops protocol-level statements too: a Bind afterwards fails with 26000,
    and the same names can be parsed again."""
    raw_diff(2, [
        (0, _parse("s1", "SELECT $1::int + 1"), 1),
        (0, _parse("s2", "SELECT $1::int + 2"), 1),
        (0, _run("s1", "1"), 1),
        (0, _q("DEALLOCATE ALL"), 1),
        (0, _run("s1", "1"), 1),
        (0, _parse("s1", "SELECT $1::int + 1"), 1),
        (0, _run("s1", "2"), 1),
        (1, _parse("x", "SELECT $1::int + 1"), 1),                  # same text as client 0's s1
        (1, _run("x", "3"), 1),
        (0, _run("s2", "1"), 1),
        (0, _parse("s2", "SELECT $1::int + 2"), 1),
        (0, _run("s2", "3"), 1),
    ])


def test_deallocate_name_sql(raw_diff):
    """SQL DEALLOCATE of a statement prepared with a protocol Parse."""
    raw_diff(1, [
        (0, _parse("s1", "SELECT $1::int + 1"), 1),
        (0, _q("DEALLOCATE s1"), 1),
        (0, _run("s1", "1"), 1),
        (0, _parse("s1", "SELECT $1::int + 1"), 1),
        (0, _run("s1", "2"), 1),
    ])


def test_psycopg_deallocate_all(txn_proxy, via, pool_db):
    """psycopg forgets its prepared statements when it sees DEALLOCATE ALL and prepares again."""
    with psycopg.connect(via(txn_proxy, pool_db), autocommit=True, prepare_threshold=0) as conn:
        for i in range(3):
            assert conn.execute("SELECT %s::int + 100", (i,)).fetchone() == (i + 100,)
        conn.execute("DEALLOCATE ALL")
        for i in range(3):
            assert conn.execute("SELECT %s::int + 100", (i,)).fetchone() == (i + 100,)
