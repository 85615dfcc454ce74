"""Issue 5's "Done when": 100 clients with their own search_path and statement_timeout, each
running 50 transactions through a pool of 5 server connections, each see only their own settings;
and a many-client asyncpg prepared-statement workload on that pool has no "prepared statement does
not exist" error (the pgJDBC workload is in test_prepared.py).
"""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
import psycopg
import pytest

pytestmark = pytest.mark.timeout(150)

CLIENTS = 100
TRANSACTIONS = 50
POOL = 5


@pytest.fixture(scope="module")
def schemas(pg, pool_db):
    """sc_000 .. sc_099, each with a table t holding its number."""
    from tests.pooling.conftest import direct_dsn

    with psycopg.connect(direct_dsn(pg, pool_db), autocommit=True) as c:
        c.execute("; ".join(f"CREATE SCHEMA IF NOT EXISTS sc_{i:03d}; CREATE TABLE IF NOT EXISTS sc_{i:03d}.t(n int); "
                            f"TRUNCATE sc_{i:03d}.t; INSERT INTO sc_{i:03d}.t VALUES ({i})" for i in range(CLIENTS)))
    return [f"sc_{i:03d}" for i in range(CLIENTS)]


@pytest.fixture(params=["compiled", "python"])
def scale_proxy(request, make_proxy):
    """Its own proxy per test: a hung run is ended by stopping it, without touching the next test.
    Run twice: with the relay path compiled at install (``proxy.relay.core``, when the build had a
    C compiler) and as Python (``IASQL_PROXY_PURE=1``, what an install without a compiler runs)."""
    from proxy.relay import core

    if request.param == "compiled" and not core.compiled:
        pytest.skip("the relay path was not compiled at install (tests/unit/test_relay_build.py says why)")
    proxy = make_proxy(env={"IASQL_PROXY_PURE": "1"} if request.param == "python" else None,
                       pool_mode="transaction", default_pool_size=POOL, query_wait_timeout=60,
                       max_client_conn=CLIENTS + 50)
    assert f"relay={request.param}" in proxy.log()
    return proxy


async def _finish(proxy, tasks: list) -> None:
    """After a failure: stop the proxy (the clients' connections break) and collect the tasks."""
    if not all(t.done() for t in tasks):
        await asyncio.get_running_loop().run_in_executor(None, proxy.stop)
        await asyncio.wait(tasks, timeout=15)
        for t in tasks:
            t.cancel()


async def _client(dsn: str, i: int, start: asyncio.Event, bad: list, count: list, where: dict) -> None:
    """One client: its own search_path and statement_timeout, then TRANSACTIONS transactions (every
    fifth an explicit block). psycopg's default prepare_threshold (5) makes the repeated statements
    named prepared statements after their fifth use."""
    where[i] = "connecting"
    conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    try:
        await conn.execute(f"SET search_path = sc_{i:03d}")
        await conn.execute(f"SET statement_timeout = '{20001 + i}ms'")
        where[i] = "ready"
        await start.wait()
        want = (i, f"{20001 + i}ms", f"sc_{i:03d}")
        q = "SELECT n, current_setting('statement_timeout'), current_setting('search_path') FROM t"
        for k in range(TRANSACTIONS):
            where[i] = k
            if k % 5 == 4:
                await conn.execute("BEGIN")
                got = await (await conn.execute(q)).fetchone()
                await conn.execute("SELECT pg_sleep(0)")
                await conn.execute("COMMIT")
            else:
                got = await (await conn.execute(q)).fetchone()
            count[0] += 1
            if got != want:
                bad.append((i, k, got))
        where[i] = "done"
    except psycopg.Error as e:
        bad.append((i, "error", e.sqlstate, str(e)))
    finally:
        await asyncio.wait_for(conn.close(), 10)


async def test_hundred_clients_own_settings(scale_proxy, pool_db, schemas, pg):
    from tests.pooling.conftest import direct_dsn

    app = f"scale_{uuid.uuid4().hex[:8]}"
    dsn = scale_proxy.dsn(dbname=pool_db, connect_timeout="30", application_name=app)
    start = asyncio.Event()
    bad: list = []
    count = [0]
    peak = [0]

    async def sample(stop: asyncio.Event) -> None:
        async with await psycopg.AsyncConnection.connect(direct_dsn(pg, "postgres"), autocommit=True) as mon:
            while not stop.is_set():
                cur = await mon.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (app,))
                peak[0] = max(peak[0], (await cur.fetchone())[0])
                await asyncio.sleep(0.05)

    stop = asyncio.Event()
    sampler = asyncio.create_task(sample(stop))
    where: dict = {}
    clients = [asyncio.create_task(_client(dsn, i, start, bad, count, where)) for i in range(CLIENTS)]
    deadline = time.monotonic() + 60
    while sum(1 for w in where.values() if w == "ready") < CLIENTS and not any(t.done() for t in clients):
        if time.monotonic() > deadline:
            await _finish(scale_proxy, clients)
            pytest.fail(f"clients not logged in and set up within 60 s: {where}")
        await asyncio.sleep(0.05)
    started = time.monotonic()
    start.set()
    last, last_change = -1, time.monotonic()
    try:
        while not all(t.done() for t in clients):        # watchdog: fail fast when clients stop progressing
            await asyncio.wait(clients, timeout=1)
            if count[0] != last:
                last, last_change = count[0], time.monotonic()
            elif time.monotonic() - last_change > 10:
                stuck = {i: w for i, w in where.items() if w != "done"}
                pytest.fail(f"no progress for 10 s after {count[0]} of {CLIENTS * TRANSACTIONS} transactions; "
                            f"clients stuck at (client: transaction) {stuck}")
    finally:
        await _finish(scale_proxy, clients)
        stop.set()
        await sampler
    elapsed = time.monotonic() - started
    assert bad == [], f"{len(bad)} clients saw other settings or errors, first: {bad[:5]}"
    assert count[0] == CLIENTS * TRANSACTIONS
    assert 1 <= peak[0] <= POOL, f"peak server connections {peak[0]}"
    assert elapsed < 90, f"{CLIENTS * TRANSACTIONS} transactions took {elapsed:.1f} s"


async def test_asyncpg_many_clients_small_pool(scale_proxy, pool_db, schemas):
    """20 asyncpg clients x 50 parameterized fetches (named statements) on the pool of 5."""
    errors: list = []

    async def one(i: int) -> None:
        conn = await asyncpg.connect(host="127.0.0.1", port=scale_proxy.port, user="postgres", password="postgres",
                                     database=pool_db, ssl=False)
        try:
            await conn.execute(f"SET search_path = sc_{i:03d}")
            for k in range(50):
                try:
                    row = await conn.fetchrow("SELECT n, $1::int + $2::int AS s FROM t", k, i)
                    if (row["n"], row["s"]) != (i, k + i):
                        errors.append((i, k, tuple(row)))
                except asyncpg.PostgresError as e:
                    errors.append((i, k, e.sqlstate, str(e)))
        finally:
            await conn.close()

    tasks = [asyncio.create_task(one(i)) for i in range(20)]
    done, pending = await asyncio.wait(tasks, timeout=30)
    if pending:
        await _finish(scale_proxy, tasks)
        pytest.fail(f"{len(pending)} of 20 asyncpg clients did not finish within 30 s; errors so far: {errors[:5]}")
    for t in done:
        t.result()
    missing = [e for e in errors if "does not exist" in str(e)]
    assert missing == [], missing[:5]
    assert errors == []
