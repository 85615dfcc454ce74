"""The engine journal: ``iasql_*`` calls running now and the most recent finished ones.

``QueryInterceptor._call`` (proxy.intercept.simple) reports every engine call here when a journal
is attached (``interceptor.query.journal``): ``begin`` when the call starts, ``end`` when it
returns or raises. The admin console's ``SHOW ENGINE`` lists the entries, the metrics endpoint
observes their durations by function and outcome, and graceful shutdown waits for ``running`` to
empty. Two dictionary operations per engine call; nothing on the relay fast path.
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass, field
from typing import Any, Callable

#: How many finished calls SHOW ENGINE keeps.
RECENT_CALLS = 100


@dataclass(eq=False)
class EngineCall:
    """One engine call. ``state``: running, ok, error or cancelled; ``duration`` in seconds (None
    while running); ``started`` is wall-clock time (seconds since the epoch)."""

    database: str
    user: str
    function: str
    started: float
    t0: float
    session: Any = field(default=None, repr=False)
    state: str = "running"
    duration: float | None = None

    def elapsed(self) -> float:
        """Seconds the call ran (so far, while running)."""
        return self.duration if self.duration is not None else time.monotonic() - self.t0


class EngineJournal:
    """Running and recent engine calls. ``on_end(call)`` (optional) is called for each finished call."""

    def __init__(self, on_end: Callable[[EngineCall], None] | None = None, keep: int = RECENT_CALLS):
        self.running: dict[EngineCall, None] = {}   # insertion-ordered set
        self.recent: collections.deque[EngineCall] = collections.deque(maxlen=keep)
        self.on_end = on_end
        self._idle: asyncio.Event | None = None

    def begin(self, session: Any, function: str) -> EngineCall:
        """Record the start of ``function`` for ``session``; returns the entry to pass to ``end``."""
        call = EngineCall(database=getattr(session, "database", ""), user=getattr(session, "user", ""),
                          function=function, started=time.time(), t0=time.monotonic(), session=session)
        self.running[call] = None
        return call

    def track(self, session: Any, function: str, task: "asyncio.Future") -> EngineCall:
        """Record an engine call running as ``task``: it ends when the task does (not when the
        client stops waiting for it), with outcome ok, error, or cancelled (the task was
        cancelled, or the engine stopped with 57014 after a CancelRequest or shutdown)."""
        call = self.begin(session, function)

        def done(t: "asyncio.Future") -> None:
            if t.cancelled():
                self.end(call, asyncio.CancelledError())
                return
            exc = t.exception()
            if exc is not None and getattr(exc, "sqlstate", None) == "57014":
                exc = asyncio.CancelledError()
            self.end(call, exc)

        task.add_done_callback(done)
        return call

    def end(self, call: EngineCall, error: BaseException | None) -> None:
        """Record the end of ``call``; ``error`` is what it raised (None: it returned rows)."""
        call.duration = time.monotonic() - call.t0
        if error is None:
            call.state = "ok"
        elif isinstance(error, asyncio.CancelledError):
            call.state = "cancelled"
        else:
            call.state = "error"
        call.session = None
        self.running.pop(call, None)
        self.recent.append(call)
        if self.on_end is not None:
            self.on_end(call)
        if not self.running and self._idle is not None:
            self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for no call to be running; True when none is."""
        if not self.running:
            return True
        self._idle = asyncio.Event()
        try:
            await asyncio.wait_for(self._idle.wait(), max(timeout, 0))
        except asyncio.TimeoutError:
            pass
        finally:
            self._idle = None
        return not self.running
