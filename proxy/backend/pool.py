"""Server connection pools, one per (database target, database name, user), as PgBouncer divides them.

Session pooling: a client holds one server connection from login to logout. On release the
connection runs ``server_reset_query`` (default ``DISCARD ALL``) and returns to the idle list, to be
reused by a client whose start-up parameters are the same (so ParameterStatus and GUC defaults are
exactly those the client asked for). ``default_pool_size`` bounds open connections per pool; a
client that cannot get one within ``query_wait_timeout`` seconds (or ``query_timeout``, when that
is shorter) gets PgBouncer's error text.

A server that cannot be reached (connection refused, ``server_connect_timeout``) is tried again
only ``server_login_retry`` seconds later, as PgBouncer does: the client that waits for it goes on
waiting (up to its ``query_wait_timeout``, or ``client_login_timeout`` from its connect while it
is logging in to a pool that has never welcomed a client), and a client that arrives meanwhile while the pool has
no connection at all fails at once with PgBouncer's ``server login has been failing, cached error:
... (server_login_retry)``. An error the server itself sends at login (wrong password, unknown
database) goes to the client as it is, every time.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import Awaitable, Callable

from proxy.backend.connection import ServerConnection, ServerError
from proxy.relay.core import PoolCore
from proxy.wire import sqlstate

log = logging.getLogger("iasql_proxy.pool")

#: PgBouncer's text for a client whose login waited for a server longer than client_login_timeout.
LOGIN_TIMEOUT_REASON = "client_login_timeout (server down)"


class PoolTimeout(Exception):
    """No server connection became free in time. ``reason`` is PgBouncer's text for the client:
    ``query_wait_timeout``, or ``query_timeout`` when that limit is the shorter one."""

    def __init__(self, reason: str = "query_wait_timeout"):
        super().__init__(reason)
        self.reason = reason


def login_failed_error(reason: str) -> ServerError:
    """PgBouncer's error for a client that arrives while the server's login has been failing
    (``server_login_retry``): FATAL 08P01 ``server login has been failing, cached error: <reason>
    (server_login_retry)``."""
    return ServerError(f"server login has been failing, cached error: {reason} (server_login_retry)",
                       sqlstate.PROTOCOL_VIOLATION)


Opener = Callable[[], Awaitable[ServerConnection]]


class Pool(PoolCore):
    """Connections of one (target, dbname, user). The transaction-pooling fast path (``take_idle``,
    ``put_back``, ``give_back``, ``queue``, ``_wake_one``) is ``proxy.relay.core.PoolCore``.

    ``size``: maximum open connections (``default_pool_size`` or the database's ``pool_size``);
    ``reset_query``: run on release ('' to skip); ``wait_timeout``: seconds a client may wait
    (``query_wait_timeout``); ``query_timeout``: the same limit under PgBouncer's other name (0:
    none); ``login_retry``: seconds before a server that could not be reached is tried again
    (``server_login_retry``; 0: at once, and the failure goes to the client).
    """

    def __init__(self, name: str, size: int, reset_query: str, wait_timeout: float, *, min_size: int = 0,
                 reserve_size: int = 0, reserve_timeout: float = 5.0, lifetime: float = 3600.0,
                 idle_timeout: float = 600.0, query_timeout: float = 0.0, login_retry: float = 0.0):
        self.name = name
        self.size = size
        self.reset_query = reset_query
        self.wait_timeout = wait_timeout
        self.query_timeout = query_timeout
        self.login_retry = login_retry
        #: (monotonic time, PgBouncer's reason) of the last failed attempt to reach the server
        self.login_failed: tuple[float, str] | None = None
        self.min_size = min_size
        self.reserve_size = reserve_size
        self.reserve_timeout = reserve_timeout
        self.lifetime = lifetime
        self.idle_timeout = idle_timeout
        self.welcome: dict[frozenset, dict[str, str]] = {}  # ParameterStatus values by start-up parameters
        self.last_opener: Opener | None = None
        self.last_key: frozenset | None = None
        self.waits: list[float] = []  # seconds each acquire waited (drained by metrics)
        self.idle: list[ServerConnection] = []
        self.active: set[ServerConnection] = set()
        self.opening = 0
        self.waiters: collections.deque[asyncio.Future] = collections.deque()
        #: client sessions waiting without a task (transaction pooling's fast path), in arrival
        #: order: each has ``server_granted()``, ``leave_queue()``, ``queue_timed_out(reason)``,
        #: ``in_queue`` and ``wait_started`` (monotonic seconds); ``maintain`` enforces
        #: ``wait_timeout`` and moves sessions that waited ``reserve_timeout`` to ``acquire``
        self.queued: collections.deque = collections.deque()
        self.closed = False

    @property
    def total(self) -> int:
        """Open plus opening connections."""
        return len(self.idle) + len(self.active) + self.opening

    async def acquire(self, startup_key: frozenset, opener: Opener, started: float | None = None,
                      login_deadline: float | None = None) -> ServerConnection:
        """A ready server connection whose start-up parameters equal ``startup_key``.

        Reuses an idle match, opens a new one while under ``size`` (closing an idle non-matching
        one when full), else waits. Raises PoolTimeout ``wait_timeout`` (or the shorter
        ``query_timeout``) seconds after ``started`` (monotonic seconds; default now),
        ServerError/AuthFailed from ``opener`` (a server that could not be reached is tried again
        after ``login_retry`` seconds, while the deadline allows), and the ServerError of
        ``login_failed_error`` when the server could not be reached less than ``login_retry``
        seconds ago and the pool has no connection. ``login_deadline`` (monotonic seconds): a
        client still logging in waits no longer than this (its connect time plus
        ``client_login_timeout``), then PoolTimeout ``client_login_timeout (server down)``, as
        PgBouncer's janitor ends clients waiting for a pool's first welcome.
        """
        if started is None:
            started = time.monotonic()
        deadline = started + self.wait_timeout if self.wait_timeout > 0 else float("inf")
        reason = "query_wait_timeout"
        if self.query_timeout > 0 and started + self.query_timeout <= deadline:
            deadline, reason = started + self.query_timeout, "query_timeout"
        if login_deadline is not None and login_deadline < deadline:
            deadline, reason = login_deadline, LOGIN_TIMEOUT_REASON
        self.last_opener, self.last_key = opener, startup_key
        failed = self.login_failed
        if (failed is not None and time.monotonic() - failed[0] < self.login_retry
                and not self.idle and not self.active):
            raise login_failed_error(failed[1])
        while True:
            capacity = self.size
            if self.reserve_size and time.monotonic() - started >= self.reserve_timeout:
                capacity += self.reserve_size  # PgBouncer's reserve pool: for clients that waited
            for i in range(len(self.idle) - 1, -1, -1):
                conn = self.idle[i]
                if self.lifetime > 0 and time.monotonic() - conn.created > self.lifetime:
                    del self.idle[i]  # server_lifetime passed while it sat idle
                    conn.close()
                    continue
                if conn.startup_key == startup_key and not conn.closed:
                    del self.idle[i]
                    self.active.add(conn)
                    self._waited(started)
                    return conn
            if self.total >= capacity and self.idle:
                victim = self.idle.pop(0)
                victim.close()
            retry_at = self._retry_at()
            if self.total < capacity and retry_at is None:
                self.opening += 1
                try:
                    conn = await opener()
                except ServerError as e:
                    if e.fields is not None or self.login_retry <= 0:
                        raise  # the server's own answer (or no retrying): the client's error
                    self.login_failed = (time.monotonic(), e.reason or "connect failed")
                    log.info("event=server_login_failed pool=%s reason=%r retry_in_s=%s", self.name,
                             self.login_failed[1], self.login_retry)
                    continue  # tried again after login_retry, while the deadline allows
                finally:
                    self.opening -= 1
                self.login_failed = None
                conn.pool = self
                self.active.add(conn)
                self._waited(started)
                return conn
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PoolTimeout(reason)
            if retry_at is not None and self.total < capacity:
                remaining = min(remaining, retry_at - time.monotonic() + 0.001)
            if self.reserve_size and time.monotonic() - started < self.reserve_timeout:
                remaining = min(remaining, self.reserve_timeout - (time.monotonic() - started) + 0.001)
            fut = asyncio.get_running_loop().create_future()
            self.waiters.append(fut)
            try:
                await asyncio.wait_for(fut, None if remaining == float("inf") else remaining)
            except asyncio.TimeoutError:
                if time.monotonic() >= deadline:
                    raise PoolTimeout(reason) from None
            finally:
                if fut in self.waiters:
                    self.waiters.remove(fut)

    def _retry_at(self) -> float | None:
        """When the server, which could not be reached, may be tried again (monotonic seconds), or
        None when it may be tried now."""
        failed = self.login_failed
        if failed is None or self.login_retry <= 0:
            return None
        at = failed[0] + self.login_retry
        return at if time.monotonic() < at else None

    def resize(self, size: int) -> bool:
        """Set ``size`` (RELOAD of ``default_pool_size``/``pool_size``). New places go at once to
        waiting ``acquire`` calls and to sessions in the queue (in arrival order); fewer places
        close idle connections beyond the new size. Returns False when the size is unchanged."""
        added = size - self.size
        if not added:
            return False
        self.size = size
        if added > 0:
            for fut in list(self.waiters):
                if not fut.done():
                    fut.set_result(None)
            for _ in range(added):
                self._wake_one()
        else:
            while self.total > size and self.idle:
                self.idle.pop(0).close()
        return True

    def _waited(self, started: float) -> None:
        if len(self.waits) < 10000:
            self.waits.append(time.monotonic() - started)

    def release(self, conn: ServerConnection, clean: bool, reset: bool = True) -> None:
        """Give ``conn`` back. A clean, idle connection is reset (``server_reset_query``, session
        pooling only: ``reset``) and reused; otherwise it is closed."""
        conn.detach()
        if not clean or conn.closed or conn.broken or conn.status != b"I" or self.closed:
            self.active.discard(conn)
            conn.close()
            self._wake_one()
            return
        if self.lifetime > 0 and time.monotonic() - conn.created > self.lifetime:
            self.active.discard(conn)
            conn.close()  # server_lifetime: replaced by a fresh connection on demand
            self._wake_one()
            return
        if not reset:
            self.active.discard(conn)
            self.idle.append(conn)
            self._wake_one()
            return
        asyncio.get_running_loop().create_task(self._reset_and_idle(conn))

    async def _reset_and_idle(self, conn: ServerConnection) -> None:
        try:
            if self.reset_query:
                await asyncio.wait_for(conn.query(self.reset_query), 30)
        except (ServerError, asyncio.TimeoutError, OSError) as e:
            log.info("event=server_reset_failed pool=%s error=%r", self.name, str(e))
            conn.close()
            self.active.discard(conn)
        else:
            self.active.discard(conn)
            conn.gucs = {}
            conn.prepared.clear()
            if not conn.closed:
                self.idle.append(conn)
        self._wake_one()

    def forget(self, conn: ServerConnection) -> None:
        """Drop a connection that died."""
        self.active.discard(conn)
        if conn in self.idle:
            self.idle.remove(conn)
        self._wake_one()

    async def maintain(self) -> None:
        """Housekeeping, called about once a second: close idle connections past
        ``server_idle_timeout`` or ``server_lifetime`` (keeping ``min_pool_size``), and open
        connections up to ``min_pool_size`` with the last opener used."""
        now = time.monotonic()
        if self.queued:
            waiting, self.queued = self.queued, collections.deque()
            for session in waiting:
                if not session.in_queue:
                    continue
                waited = now - (session.wait_started or now)
                if self.query_timeout > 0 and waited >= self.query_timeout:
                    session.queue_timed_out("query_timeout")  # PgBouncer checks this one first
                elif self.wait_timeout > 0 and waited >= self.wait_timeout:
                    session.queue_timed_out("query_wait_timeout")
                elif self.reserve_size and waited >= self.reserve_timeout:
                    session.leave_queue()  # acquire() may open a reserve connection for it
                else:
                    self.queued.append(session)
        for conn in list(self.idle):
            expired = (self.lifetime > 0 and now - conn.created > self.lifetime)
            idle_too_long = self.idle_timeout > 0 and now - conn.last_used > self.idle_timeout
            if conn.closed or expired or (idle_too_long and self.total > self.min_size):
                self.idle.remove(conn)
                conn.close()
        while (self.min_size and self.total < min(self.min_size, self.size) and self.last_opener is not None
               and not self.closed):
            self.opening += 1
            try:
                conn = await self.last_opener()
            except Exception as e:  # a failing server: try again at the next tick
                log.info("event=min_pool_open_failed pool=%s error=%r", self.name, str(e))
                return
            finally:
                self.opening -= 1
            conn.pool = self
            self.idle.append(conn)
            self._wake_one()

    def close_all(self) -> None:
        """Close idle connections and refuse reuse of active ones."""
        self.closed = True
        for conn in self.idle:
            conn.close()
        self.idle.clear()
