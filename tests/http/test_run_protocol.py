"""The /run protocol over a real WebSocket client (``websockets``) against a real proxy.

Per statement results arrive as each statement finishes (timestamps against pg_sleep), notices of
an ``iasql_*`` call while it runs, errors with SQLSTATE and position, chunks of a large result,
cancel, and a client that leaves mid-run.
"""

from __future__ import annotations

import asyncio
import json
import time

import psycopg
import pytest
from websockets.asyncio.client import connect

from tests.conftest import ALICE_PASSWORD
from tests.http.conftest import PASSWORD, basic

pytestmark = pytest.mark.timeout(90)


async def open_ws(port, client_tls, user="alice", password=ALICE_PASSWORD, database=None, **kw):
    query = f"?database={database}" if database else ""
    return await connect(f"wss://localhost:{port}/run{query}", ssl=client_tls,
                         additional_headers={"Authorization": basic(user, password)}, **kw)


async def run_script(ws, sql, database=None, on_message=None):
    """Send one script; returns [(seconds since sent, message)] up to and with {"done": true}."""
    t0 = time.monotonic()
    await ws.send(json.dumps({"sql": sql, **({"database": database} if database else {})}))
    out = []
    while True:
        m = json.loads(await asyncio.wait_for(ws.recv(), 60))
        out.append((time.monotonic() - t0, m))
        if on_message is not None:
            await on_message(m)
        if m.get("done"):
            return out


async def test_results_arrive_per_statement_before_the_script_ends(http_proxy, http_db, client_tls):
    async with await open_ws(http_proxy.http_port, client_tls, database=http_db) as ws:
        got = await run_script(ws, "SELECT 1 AS a, NULL AS b; SELECT pg_sleep(1.5); "
                                   "CREATE TEMP TABLE t (v int); INSERT INTO t VALUES (7)")
    msgs = [m for _, m in got]
    assert msgs[0] == {"statement": 0, "text": "SELECT 1 AS a, NULL AS b", "start": 0, "command": "SELECT 1",
                       "columns": ["a", "b"], "types": [23, 25], "rows": [["1", None]]}
    assert [m.get("statement") for m in msgs] == [0, 1, 2, 3, None]
    assert msgs[1]["command"] == "SELECT 1" and msgs[1]["text"] == "SELECT pg_sleep(1.5)"
    assert msgs[3]["command"] == "INSERT 0 1" and "rows" not in msgs[3]
    assert msgs[-1] == {"done": True}
    times = [t for t, _ in got]
    assert times[0] < 1.0, f"statement 0 came at {times[0]:.2f} s: held back until the sleep ended"
    assert times[1] >= 1.4
    assert times[0] + 1.0 < times[1]
