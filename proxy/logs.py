"""The proxy's log output: stderr, one line per event, ``asctime levelname name message``.

Theory of operation
-------------------
``setup()`` configures the standard ``logging`` module (a StreamHandler on stderr with
``LineFormatter``, INFO) and skips the per-record work the proxy never prints (caller's file and
line, thread and process names: the Logging HOWTO's "Optimization" settings).

A connection-heavy load (``pgbench -C``) logs two lines per connection (``log_connections``,
``log_disconnections``), and the logging module's dispatch (record object, filters, handler
chain) costs several microseconds per line. ``info(logger, fmt, *args)`` writes exactly the line
``logger.info(fmt, *args)`` would, straight to the stream, when nothing but that handler would see
it (no filters, no other handlers, levels that pass INFO); otherwise it calls ``logger.info``.
"""

from __future__ import annotations

import logging
import sys
import time

__all__ = ["LineFormatter", "setup", "info", "escape"]

_handler: logging.StreamHandler | None = None

#: Control characters in a message are written escaped (``\n``, ``\x1b``...): a client-chosen
#: user or database name can never start a line of its own that looks like the proxy's.
_CONTROLS = {i: f"\\x{i:02x}" for i in range(32)} | {10: "\\n", 13: "\\r", 9: "\\t", 127: "\\x7f"}


def escape(message: str) -> str:
    """``message`` with control characters escaped (printable text is returned as it is)."""
    return message if message.isprintable() else message.translate(_CONTROLS)


class LineFormatter(logging.Formatter):
    """``asctime levelname name message``, with the date and time formatted once per second."""

    _second = -1
    _text = ""

    def stamp(self, created: float) -> str:
        """``YYYY-mm-dd HH:MM:SS,mmm`` of ``created`` (seconds since the epoch, local time)."""
        second = int(created)
        if second != self._second:
            self._text = time.strftime("%Y-%m-%d %H:%M:%S", self.converter(second))
            self._second = second
        return "%s,%03d" % (self._text, int((created - second) * 1000))

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return self.stamp(record.created)

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape(record.message)  # a traceback, added after this, keeps its lines
        return super().formatMessage(record)


def setup() -> None:
    """Log to stderr at INFO (replaces the root logger's handlers)."""
    global _handler
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LineFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    _handler = handler


def _only_our_handler(logger: logging.Logger) -> bool:
    """True when an INFO record of ``logger`` would reach ``setup``'s handler and nothing else:
    no filters or handlers on the way up, and the root logger's only handler is ours."""
    h = _handler
    if h is None or h.filters or h.level > logging.INFO:
        return False
    lg: logging.Logger | None = logger
    while lg is not None:
        if lg.filters or lg.disabled:
            return False
        if lg.parent is None:  # the root logger
            return lg.handlers == [h]
        if lg.handlers or not lg.propagate:
            return False
        lg = lg.parent
    return False


def info(logger: logging.Logger, fmt: str, *args: object) -> None:
    """``logger.info(fmt, *args)``, written directly when only ``setup``'s handler would see it."""
    if not logger.isEnabledFor(logging.INFO):
        return
    h = _handler
    if h is None or not _only_our_handler(logger):
        logger.info(fmt, *args)
        return
    fm = h.formatter
    line = f"{fm.stamp(time.time())} INFO {logger.name} {escape(fmt % args)}\n"  # type: ignore[union-attr]
    h.acquire()
    try:
        stream = h.stream
        stream.write(line)
        stream.flush()
    except Exception:
        h.handleError(logging.makeLogRecord({"msg": fmt, "args": args, "name": logger.name}))
    finally:
        h.release()
