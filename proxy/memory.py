"""Giving memory back to the system after a crowd of clients has left.

Theory of operation
-------------------
Each client connection costs the proxy about 30 KiB (its session, its transport, with TLS an
OpenSSL object and buffers). When thousands of clients leave, CPython frees those objects, but the
C allocator (glibc malloc) keeps the freed pages in its heap for reuse, so the process's resident
size stays at its peak. ``MemoryReturn.tick(live)``, called once a second by the server's
housekeeping with the number of live client sessions, notices a large drop from the recent peak,
waits until the count has stopped falling (a crowd of thousands takes more than one tick to close,
and trimming half-way leaves the second half's pages fragmented in the heap), and then runs a full garbage collection (sessions, transports and tasks form reference cycles) and
glibc's ``malloc_trim(0)``, which returns free heap pages to the system (``man 3 malloc_trim``).
On a C library without ``malloc_trim`` only the collection runs.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging

log = logging.getLogger("iasql_proxy.memory")

__all__ = ["MemoryReturn"]


def _malloc_trim():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


class MemoryReturn:
    """Decides when to give memory back. ``min_drop``: how many sessions must have ended since the
    peak (count); ``fraction``: and at least this share of the peak (0..1)."""

    def __init__(self, min_drop: int = 500, fraction: float = 0.5):
        self.min_drop = min_drop
        self.fraction = fraction
        self.peak = 0
        self.last = 0
        self.trims = 0
        self._trim = _malloc_trim()

    def tick(self, live: int) -> bool:
        """Called about once a second with the number of live client sessions. Returns True when it
        collected and trimmed this time (the peak then restarts from ``live``). While the count is
        still falling since the previous tick it waits for the next one."""
        falling, self.last = live < self.last, live
        if live > self.peak:
            self.peak = live
            return False
        drop = self.peak - live
        if falling or drop < self.min_drop or drop < self.fraction * self.peak:
            return False
        self.peak = live
        collected = gc.collect()
        trimmed = self._trim(0) if self._trim is not None else 0
        self.trims += 1
        log.info("event=memory_returned sessions_ended=%d objects_collected=%d malloc_trim=%s",
                 drop, collected, "yes" if trimmed else "no")
        return True
