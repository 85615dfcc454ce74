"""Transaction-level advisory locks taken the IaSQL way: poll, say once that we wait, give up in time.

``take_xact_lock`` polls ``pg_try_advisory_xact_lock`` on the caller's connection (through
``engine.rpc.CallContext``) instead of blocking in ``pg_advisory_xact_lock``, so that a waiting call
reports one progress NOTICE, notices a CancelRequest at once (57014) and gives up after a bounded
time (55P03) with a message naming the holder. The lock is held until the caller's transaction
ends; taking it again in the same transaction succeeds at once (advisory locks are re-entrant in
one session), so a caller never waits for itself.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Callable

from engine.rpc import EngineError

#: Seconds between two tries while the lock is held by someone else.
POLL_INTERVAL = 0.1


async def take_xact_lock(ctx: Any, key: tuple[int, int], *, timeout: float, waiting: str,
                         failure: Callable[[], Awaitable[EngineError]]) -> None:
    """Take the advisory lock ``key`` (two-int form) for the rest of the caller's transaction.

    ``waiting``: the progress line sent once when the lock is busy; ``failure()``: builds the
    error raised after ``timeout`` seconds (SQLSTATE 55P03, naming the holder). Raises that error,
    EngineError 57014 when the caller cancels while waiting, ``engine.rpc.SqlError`` from the server.
    """
    deadline = time.monotonic() + timeout
    reported = False
    while True:
        rows = (await ctx.run("SELECT pg_catalog.pg_try_advisory_xact_lock($1, $2)", key)).rows
        if rows and rows[0][0]:
            return
        if ctx.cancelled.is_set():
            raise EngineError("57014", "canceling statement due to user request")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise await failure()
        if not reported:
            ctx.progress(waiting)
            reported = True
        try:  # wake at once on a cancel
            await asyncio.wait_for(ctx.cancelled.wait(), min(POLL_INTERVAL, remaining))
        except asyncio.TimeoutError:
            pass


async def holder_of(ctx: Any, key: tuple[int, int]) -> str:
    """A description of the other session holding advisory lock ``key`` in this database (from
    ``pg_locks`` and ``pg_stat_activity``), or 'unknown' when it is not visible."""
    rows = (await ctx.run(
        """SELECT a.pid, a.usename, a.application_name, a.client_addr::text, a.state,
                  a.backend_start, a.query_start, left(a.query, 200)
             FROM pg_catalog.pg_locks l JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
            WHERE l.locktype = 'advisory' AND l.granted AND l.pid <> pg_catalog.pg_backend_pid()
              AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())
              AND l.classid = $1 AND l.objid = $2 AND l.objsubid = 2""", key)).rows
    if not rows:
        return "unknown (the holder was not visible in pg_stat_activity)"
    pid, user, app, addr, state, started, qstart, query = rows[0]
    return (f"pid {pid} (user {user}, application \"{app}\", client {addr or 'local'}, "
            f"connected since {started:%Y-%m-%d %H:%M:%S%z}, state {state}, "
            f"last query at {qstart:%H:%M:%S}: {query!r})" if started and qstart else
            f"pid {pid} (user {user}, application \"{app}\", state {state})")
