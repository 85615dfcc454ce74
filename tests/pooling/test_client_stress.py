"""Real clients on a pool of two in transaction pooling (issue 14): three concurrent clients of
each kind run 200 statements each with zero errors and the right results.

Kinds: pg8000 native (unnamed statements: Parse and Describe with Sync, Bind and Execute in a
later transaction) and DB-API (autocommit off: its own BEGIN, COMMIT every few statements),
Bun-style raw unnamed statements, psycopg 3 with ``prepare=True`` inside pipelines, and
node-postgres named queries. (asyncpg, psycopg ``prepare_threshold=0`` and pgJDBC after
``prepareThreshold`` are in ``test_prepared.py``.)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from pathlib import Path

import pg8000.dbapi
import pg8000.native
import psycopg
import pytest

from proxy.wire import frontend as F
from tests.support.faults import RawConn

pytestmark = pytest.mark.timeout(180)

CLIENTS = 3
STATEMENTS = 200
NODE_SCRIPT = Path(__file__).parent / "node" / "named_queries.js"
NODE_CLIENTS = Path(__file__).parents[1] / "traces" / "clients"  # node-postgres, pinned there


def _run_clients(worker, *args) -> list[str]:
    errors: list[str] = []
    threads = [threading.Thread(target=worker, args=(*args, k, errors)) for k in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(150)
    assert not any(t.is_alive() for t in threads), "a client did not finish"
    return errors


def _pg8000_native(port: int, db: str, k: int, errors: list[str]) -> None:
    con = pg8000.native.Connection("postgres", host="127.0.0.1", port=port, database=db, password="postgres")
    try:
        for i in range(STATEMENTS):
            try:
                if i % 2:
                    got = con.run("SELECT :a::int + :b::int", a=i, b=k)[0][0]
                    want = i + k
                else:
                    got = con.run(f"SELECT :s::text || '-{i % 7}'", s=f"c{k}")[0][0]
                    want = f"c{k}-{i % 7}"
                if got != want:
                    errors.append(f"client {k} statement {i}: {got!r} != {want!r}")
            except pg8000.native.DatabaseError as e:
                errors.append(f"client {k} statement {i}: {e}")
    finally:
        con.close()


def test_pg8000_native(txn_proxy, pool_db):
    assert _run_clients(_pg8000_native, txn_proxy.port, pool_db) == []


def _pg8000_dbapi(port: int, db: str, k: int, errors: list[str]) -> None:
    con = pg8000.dbapi.connect("postgres", host="127.0.0.1", port=port, database=db, password="postgres")
    try:
        cur = con.cursor()
        for i in range(STATEMENTS):
            try:
                cur.execute("SELECT %s::int * 2, %s::text", (i, f"k{k}"))
                row = tuple(cur.fetchone())
                if row != (2 * i, f"k{k}"):
                    errors.append(f"client {k} statement {i}: {row!r}")
                if i % 5 == 4:
                    con.commit()  # the driver's own BEGIN opened this transaction
            except pg8000.dbapi.DatabaseError as e:
                errors.append(f"client {k} statement {i}: {e}")
                con.rollback()
        con.commit()
    finally:
        con.close()


def test_pg8000_dbapi(txn_proxy, pool_db):
    assert _run_clients(_pg8000_dbapi, txn_proxy.port, pool_db) == []


def _bun_style(port: int, db: str, k: int, errors: list[str]) -> None:
    """Unnamed statements as Bun's SQL client sends them: Parse + Describe + Sync first, then
    Bind + Execute + Sync in the next round trip (another transaction for the pool)."""
    with RawConn(port, timeout=30) as c:
        c.startup("postgres", db, password="postgres")
        for i in range(STATEMENTS):
            sql = f"SELECT $1::int + {k} AS v" if i % 2 else f"SELECT $1::text || '-{k}' AS v"
            c.send(F.Parse("", sql).encode() + F.Describe(b"S", "").encode() + F.Sync().encode())
            first = [t for t, _ in c.read_until_ready()]
            c.send(F.Bind("", "", (), (str(i).encode(),), ()).encode() + F.Execute("", 0).encode()
                   + F.Sync().encode())
            second = c.read_until_ready()
            rows = [bytes(p[6:]).decode() for t, p in second if t == "D"]
            want = str(i + k) if i % 2 else f"{i}-{k}"
            if first != ["1", "t", "T", "Z"] or rows != [want]:
                errors.append(f"client {k} statement {i}: {first!r} {second!r}")


def test_bun_style_unnamed_statements(txn_proxy, pool_db):
    assert _run_clients(_bun_style, txn_proxy.port, pool_db) == []


def _psycopg_pipeline(dsn: str, k: int, errors: list[str]) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for batch in range(STATEMENTS // 10):
            try:
                with conn.pipeline():
                    curs = []
                    for j in range(10):
                        i = batch * 10 + j
                        if j % 2:
                            curs.append((conn.execute("SELECT %s::int + %s::int", (i, k), prepare=True), i + k))
                        else:
                            curs.append((conn.execute("SELECT %s::text || %s::text", (f"c{k}-", str(j)),
                                                      prepare=True), f"c{k}-{j}"))
                for cur, want in curs:
                    got = cur.fetchone()[0]
                    if got != want:
                        errors.append(f"client {k} batch {batch}: {got!r} != {want!r}")
            except psycopg.Error as e:
                errors.append(f"client {k} batch {batch}: {e.sqlstate} {e}")


def test_psycopg_prepared_in_pipelines(txn_proxy, via, pool_db):
    """psycopg 3 pipelines with ``prepare=True``: named Parse, Bind, Describe, Execute of ten
    statements ahead of one Sync."""
    assert _run_clients(_psycopg_pipeline, via(txn_proxy, pool_db)) == []


@pytest.fixture(scope="session")
def node_pg() -> Path:
    """node-postgres (the version pinned in tests/traces/clients), installed with npm when missing."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("node and npm are needed for the node-postgres test (Debian: nodejs npm)")
    if not (NODE_CLIENTS / "node_modules" / "pg").exists():
        res = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_CLIENTS, capture_output=True,
                             text=True, stdin=subprocess.DEVNULL, timeout=600)
        assert res.returncode == 0, f"npm ci failed: {res.stdout}\n{res.stderr}"
    return NODE_CLIENTS / "node_modules"


def test_node_postgres_named_queries(txn_proxy, pool_db, node_pg):
    res = subprocess.run(["node", str(NODE_SCRIPT), str(txn_proxy.port), pool_db, str(CLIENTS), str(STATEMENTS)],
                         capture_output=True, text=True, timeout=150, env={**os.environ, "NODE_PATH": str(node_pg)})
    assert res.stdout.startswith(f"RESULT ok={CLIENTS * STATEMENTS} errors=0"), res.stdout + res.stderr
