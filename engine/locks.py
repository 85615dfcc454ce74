"""Transaction-level advisory locks, taken as PostgreSQL takes them, with IaSQL's wait message.

``take_xact_lock`` first tries the lock (``pg_try_advisory_xact_lock``). When another transaction
holds it, it describes the holder (for the error below, while the transaction can still run
queries), sends one progress NOTICE, and waits in ``pg_advisory_xact_lock`` itself, with a
transaction-local ``lock_timeout`` of the remaining time (the caller's own ``lock_timeout`` when
that is shorter): so PostgreSQL's deadlock detector sees the wait (40P01 ``deadlock detected``
after ``deadlock_timeout``), a CancelRequest stops it (57014), and after the timeout the call
fails with 55P03 naming the holder. The caller's ``lock_timeout`` is put back once the lock is
taken. The lock is held until the caller's transaction ends; taking it again in the same
transaction succeeds at once (advisory locks are re-entrant in one session), so a caller never
waits for itself.
"""

from __future__ import annotations

import re
from typing import Any, Awaitable, Callable

from engine.rpc import EngineError, SqlError

_UNITS_MS = {"ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}


def setting_ms(value: str) -> int:
    """A ``lock_timeout`` value as ``current_setting`` shows it (``0``, ``250ms``, ``5s``, ``2min``)
    in milliseconds; 0 = no timeout."""
    m = re.fullmatch(r"\s*(\d+)\s*([a-z]*)\s*", value or "0")
    if m is None:
        return 0
    return int(m.group(1)) * _UNITS_MS.get(m.group(2) or "ms", 1)


async def take_xact_lock(ctx: Any, key: tuple[int, int], *, timeout: float, waiting: str,
                         failure: Callable[[], Awaitable[EngineError]]) -> None:
    """Take the advisory lock ``key`` (two-int form) for the rest of the caller's transaction.

    ``timeout``: seconds to wait at most; ``waiting``: the progress line sent when the lock is
    busy; ``failure()``: builds the error raised when the wait times out (SQLSTATE 55P03, naming
    the holder). Raises that error, or ``engine.rpc.SqlError`` from the server (40P01 deadlock,
    57014 cancel). After any of them the caller's transaction is aborted, as after a failed
    ``pg_advisory_xact_lock``.
    """
    got, current = (await ctx.run("SELECT pg_catalog.pg_try_advisory_xact_lock($1, $2), "
                                  "pg_catalog.current_setting('lock_timeout')", key)).rows[0]
    if got:
        return
    if ctx.cancelled.is_set():
        raise EngineError("57014", "canceling statement due to user request")
    timed_out = await failure()
    ctx.progress(waiting)
    ms = max(1, int(timeout * 1000))
    own = setting_ms(current)
    if own and own < ms:
        ms = own
    try:
        await ctx.run("SELECT pg_catalog.set_config('lock_timeout', $1, true), pg_catalog.pg_advisory_xact_lock($2, $3)",
                      (f"{ms}ms", *key))
    except SqlError as e:
        if e.sqlstate == "55P03" and ms != own:
            raise timed_out from None
        raise
    await ctx.run("SELECT pg_catalog.set_config('lock_timeout', $1, true)", (current,))


async def holder_of(ctx: Any, key: tuple[int, int]) -> str:
    """A description of the other session holding advisory lock ``key`` in this database (from
    ``pg_locks`` and ``pg_stat_activity``), or 'unknown' when it is not visible."""
    rows = (await ctx.run(
        """SELECT a.pid, a.usename, a.application_name, a.client_addr::text, a.state,
                  a.backend_start, a.query_start, pg_catalog.left(a.query, 200)
             FROM pg_catalog.pg_locks l JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
            WHERE l.locktype = 'advisory' AND l.granted AND l.pid <> pg_catalog.pg_backend_pid()
              AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database())
              AND l.classid = $1 AND l.objid = $2 AND l.objsubid = 2""", key)).rows
    if not rows:
        return "unknown (the holder was not visible in pg_stat_activity)"
    pid, user, app, addr, state, started, qstart, query = rows[0]
    return (f"pid {pid} (user {user}, application \"{app}\", client {addr or 'local'}, "
            f"connected since {started:%Y-%m-%d %H:%M:%S%z}, state {state}, "
            f"last query at {qstart:%H:%M:%S}: {query!r})" if started and qstart else
            f"pid {pid} (user {user}, application \"{app}\", state {state})")
