"""The trace scenario, driven by the Python clients (psycopg 3, psycopg2, asyncpg, pg8000).

Every client runs the same steps on ONE session (``make traces`` records it through the proxy):
TLS (verify-full against the dev CA), a table, a multi-statement simple Query, extended-protocol
queries with parameters, COPY in and out, an error and recovery, ``iasql_version()``,
``iasql_modules_list()``, ``iasql_install('aws_s3')``, and a ``pg_sleep`` cancelled from another
connection after ``CANCEL_AFTER`` seconds. Results contain no random values or times.

``run(client, conn_params)``; ``conn_params`` has host, port, user, password, dbname, sslrootcert.
"""

from __future__ import annotations

import asyncio
import io
import socket
import ssl
import struct
import threading

CANCEL_AFTER = 1.0

CREATE = "CREATE TABLE trace_items (id int PRIMARY KEY, name text NOT NULL)"
MULTI = ("INSERT INTO trace_items VALUES (1, 'one'), (2, 'two'); "
         "SELECT id, name FROM trace_items ORDER BY id; SELECT count(*) AS n FROM trace_items")
COPY_IN = "COPY trace_items (id, name) FROM STDIN"
COPY_ROWS = "3\tthree\n4\tfour\n"
COPY_OUT = "COPY (SELECT id, name FROM trace_items ORDER BY id) TO STDOUT"
ERROR = "SELECT 1 / 0"
AFTER_ERROR = "SELECT 'still alive' AS status"
SLEEP = "SELECT pg_sleep(30)"
IASQL = ["SELECT * FROM iasql_version()", "SELECT * FROM iasql_modules_list()",
         "SELECT * FROM iasql_install('aws_s3')", "SELECT count(*) AS buckets FROM bucket"]


def _libpq_dsn(p: dict) -> str:
    return (f"host={p['host']} port={p['port']} user={p['user']} password={p['password']} dbname={p['dbname']} "
            f"sslmode=verify-full sslrootcert={p['sslrootcert']} application_name=trace")


def _after(seconds: float, fn) -> threading.Timer:
    t = threading.Timer(seconds, fn)
    t.start()
    return t


def _raw_cancel(p: dict, key_data: bytes) -> None:
    """A CancelRequest on a new plain connection (for clients without a cancel API)."""
    with socket.create_connection((p["host"], int(p["port"])), timeout=5) as s:
        s.sendall(struct.pack("!ii", 16, 80877102) + key_data)
        s.recv(1)


def run_psycopg(p: dict) -> None:
    import psycopg

    with psycopg.connect(_libpq_dsn(p), autocommit=True) as conn:
        conn.execute(CREATE)
        cur = conn.cursor()
        cur.execute(MULTI)
        while cur.nextset():
            cur.fetchall()
        conn.execute("SELECT id, name FROM trace_items WHERE id = %s AND name <> %s", (2, "zzz")).fetchall()
        conn.execute("SELECT %s::int + %s::int AS sum, %s::text AS label", (40, 2, "answer")).fetchall()
        with cur.copy(COPY_IN) as copy:
            copy.write(COPY_ROWS)
        with cur.copy(COPY_OUT) as copy:
            for _ in copy:
                pass
        try:
            conn.execute(ERROR)
        except psycopg.errors.DivisionByZero:
            pass
        conn.execute(AFTER_ERROR).fetchall()
        for q in IASQL:
            conn.execute(q).fetchall()
        t = _after(CANCEL_AFTER, conn.cancel_safe)
        try:
            conn.execute(SLEEP)
        except psycopg.errors.QueryCanceled:
            pass
        t.join()
        conn.execute(AFTER_ERROR).fetchall()


def run_psycopg2(p: dict) -> None:
    import psycopg2
    import psycopg2.errors

    conn = psycopg2.connect(_libpq_dsn(p))
    conn.autocommit = True
    try:
        cur = conn.cursor()
        cur.execute(CREATE)
        cur.execute(MULTI)
        cur.fetchall()
        # psycopg2 binds client-side; PREPARE/EXECUTE makes the server bind the parameters
        cur.execute("PREPARE by_id(int) AS SELECT id, name FROM trace_items WHERE id = $1")
        cur.execute("EXECUTE by_id(%s)", (2,))
        cur.fetchall()
        cur.execute("SELECT %s::int + %s::int AS sum, %s::text AS label", (40, 2, "answer"))
        cur.fetchall()
        cur.copy_expert(COPY_IN, io.StringIO(COPY_ROWS))
        cur.copy_expert(COPY_OUT, io.StringIO())
        try:
            cur.execute(ERROR)
        except psycopg2.errors.DivisionByZero:
            pass
        cur.execute(AFTER_ERROR)
        cur.fetchall()
        for q in IASQL:
            cur.execute(q)
            cur.fetchall()
        t = _after(CANCEL_AFTER, conn.cancel)
        try:
            cur.execute(SLEEP)
        except psycopg2.errors.QueryCanceled:
            pass
        t.join()
        cur.execute(AFTER_ERROR)
        cur.fetchall()
    finally:
        conn.close()


def run_asyncpg(p: dict) -> None:
    import asyncpg

    async def main() -> None:
        ctx = ssl.create_default_context(cafile=p["sslrootcert"])
        conn = await asyncpg.connect(host=p["host"], port=int(p["port"]), user=p["user"], password=p["password"],
                                     database=p["dbname"], ssl=ctx, server_settings={"application_name": "trace"},
                                     statement_cache_size=0)
        try:
            await conn.execute(CREATE)
            await conn.execute(MULTI)  # simple protocol (no arguments)
            await conn.fetch("SELECT id, name FROM trace_items WHERE id = $1 AND name <> $2", 2, "zzz")
            await conn.fetch("SELECT $1::int + $2::int AS sum, $3::text AS label", 40, 2, "answer")
            await conn.copy_records_to_table("trace_items", records=[(3, "three"), (4, "four")],
                                             columns=["id", "name"])
            await conn.copy_from_query("SELECT id, name FROM trace_items ORDER BY id", output=io.BytesIO())
            try:
                await conn.fetch(ERROR)
            except asyncpg.DivisionByZeroError:
                pass
            await conn.fetch(AFTER_ERROR)
            for q in IASQL:
                await conn.fetch(q)
            try:
                await asyncio.wait_for(conn.execute(SLEEP), CANCEL_AFTER)
            except asyncio.TimeoutError:
                pass
            await conn.fetch(AFTER_ERROR)
        finally:
            await conn.close()

    asyncio.run(main())


def run_pg8000(p: dict) -> None:
    import pg8000.native

    ctx = ssl.create_default_context(cafile=p["sslrootcert"])
    conn = pg8000.native.Connection(p["user"], host=p["host"], port=int(p["port"]), password=p["password"],
                                    database=p["dbname"], ssl_context=ctx, application_name="trace")
    try:
        conn.run(CREATE)
        conn.run(MULTI)  # no parameters: simple Query
        conn.run("SELECT id, name FROM trace_items WHERE id = :id AND name <> :name", id=2, name="zzz")
        conn.run("SELECT CAST(:a AS int) + CAST(:b AS int) AS sum, CAST(:label AS text) AS label",
                 a=40, b=2, label="answer")
        try:
            conn.run(ERROR)
        except pg8000.native.DatabaseError:
            pass
        conn.run(AFTER_ERROR)
        for q in IASQL:
            conn.run(q)
        key = conn._backend_key_data  # pg8000 has no cancel API: send the CancelRequest ourselves
        t = _after(CANCEL_AFTER, lambda: _raw_cancel(p, key))
        try:
            conn.run(SLEEP)
        except pg8000.native.DatabaseError:
            pass
        t.join()
        conn.run(AFTER_ERROR)
        # COPY last: pg8000 sends Sync while in copy-in mode (Postgres ignores it, no ReadyForQuery)
        # and the proxy then waits for a ReadyForQuery that never comes before an iasql_* Query
        # runs, so an iasql_* call after this COPY hangs (reported to the lead).
        conn.run(COPY_IN, stream=io.StringIO(COPY_ROWS))
        conn.run(COPY_OUT, stream=io.StringIO())
    finally:
        conn.close()


CLIENTS = {"psycopg": run_psycopg, "psycopg2": run_psycopg2, "asyncpg": run_asyncpg, "pg8000": run_pg8000}


def run(client: str, params: dict) -> None:
    CLIENTS[client](params)
