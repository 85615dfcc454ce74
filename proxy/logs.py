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

Secrets. No log line is meant to carry statement text or row values; the proxy logs events,
names, counts and error messages. As a safeguard for the AWS secret access keys users write to
``aws_credentials`` and the values they write to ``secret`` (``aws_secrets_manager``), every line
(both paths above) is checked: a value substituted into a line that mentions ``aws_credentials``,
``secret_access_key``, the word ``secret`` or a module RPC that takes a secret
(``set_user_password``, ``certificate_import``; ``proxy.secret_words``) is
replaced by ``<redacted: may hold a secret>``, and so is every exception message of a traceback
that mentions them (file, line and function lines are kept).
The check is one regular-expression search per line.
"""

from __future__ import annotations

import logging
import re
import sys
import time

from proxy.secret_words import SECRET_TEXT_WORDS

__all__ = ["LineFormatter", "setup", "set_tag", "info", "escape", "quote_fields", "mentions_secret", "redact_statement", "redact_traceback",
           "REDACTED"]

_handler: logging.StreamHandler | None = None
#: Written right after the logger's name on every line: a worker's ``[w1]`` with ``workers`` > 1
#: (``set_tag``), else empty.
_tag = ""

#: Control characters in a message are written escaped (``\n``, ``\x1b``...): a client-chosen
#: user or database name can never start a line of its own that looks like the proxy's.
_CONTROLS = {i: f"\\x{i:02x}" for i in range(32)} | {10: "\\n", 13: "\\r", 9: "\\t", 127: "\\x7f"}


def escape(message: str) -> str:
    """``message`` with control characters escaped (printable text is returned as it is)."""
    return message if message.isprintable() else message.translate(_CONTROLS)


#: Text mentioning these may be a statement carrying a secret (``proxy.secret_words``: an AWS secret
#: access key, a Secrets Manager value, a private key or password passed to a module RPC); the word
#: ``secret`` inside ``REDACTED`` itself does not count. The bare word ``password`` is left out
#: here (traces redact it): log lines carry no statement text, and Postgres's own messages
#: (``password authentication failed for user "x"``) must stay readable.
_SECRET_WORDS = re.compile("|".join(r"(?<!may hold a )\bsecret\b" if w == r"\bsecret\b" else w
                                    for w in SECRET_TEXT_WORDS if w != "password"), re.IGNORECASE)

#: What replaces such text in a log line.
REDACTED = "<redacted: may hold a secret>"


def mentions_secret(text: str) -> bool:
    """True when ``text`` mentions a word of ``proxy.secret_words.SECRET_TEXT_WORDS`` but the bare
    ``password`` (``aws_credentials``, ``secret_access_key``, the word ``secret``,
    ``set_user_password``, ``certificate_import``; any case)."""
    return _SECRET_WORDS.search(text) is not None


def redact_statement(text: str) -> str:
    """``text`` (a statement, or anything that may quote one) as it may be logged: unchanged, or
    ``REDACTED`` when it mentions a secret word (``mentions_secret``)."""
    return REDACTED if _SECRET_WORDS.search(text) is not None else text


#: A ``%s`` value that would read as more than one ``key=value`` field: written quoted.
_NEEDS_QUOTES = re.compile(r'[\s="\\]')
_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(?:\*|\d+)?(?:\.(?:\*|\d+))?[hlL]?([diouxXeEfFgGcrsa%])")


def quote_fields(fmt: str, args: tuple) -> tuple | None:
    """``args`` with every str substituted by a ``%s`` of ``fmt`` that holds whitespace, ``=``,
    ``"`` or a backslash written as a double-quoted string (``"evil user=postgres"``, inner ``"``
    and backslashes escaped), so a client-chosen user or database name cannot forge a field of a
    ``key=value`` line; None when nothing needs quoting (or ``fmt`` and ``args`` do not match)."""
    if not any(type(a) is str and _NEEDS_QUOTES.search(a) for a in args):
        return None
    kinds = [k for k in _SPEC.findall(fmt) if k != "%"]
    if len(kinds) != len(args):
        return None
    out = list(args)
    for i, (kind, a) in enumerate(zip(kinds, args)):
        if kind == "s" and type(a) is str and _NEEDS_QUOTES.search(a):
            out[i] = '"' + a.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return tuple(out)


def _mentions(value: object) -> bool:
    if isinstance(value, str):
        return _SECRET_WORDS.search(value) is not None
    try:
        return _SECRET_WORDS.search(str(value)) is not None or _SECRET_WORDS.search(repr(value)) is not None
    except Exception:
        return True


def _safe_message(fmt: object, args: object, message: str) -> str:
    """``message`` (``fmt % args``) with each argument that mentions a secret word replaced by
    ``REDACTED``; when that is not enough, only the line's leading ``event=...`` word is kept."""
    try:
        if isinstance(args, tuple):
            message = str(fmt) % tuple(REDACTED if _mentions(a) else a for a in args)
        elif isinstance(args, dict):
            message = str(fmt) % {k: REDACTED if _mentions(v) else v for k, v in args.items()}
    except Exception:
        pass
    if _SECRET_WORDS.search(message) is None:
        return message
    first = message.split(" ", 1)[0]
    return f"{first} {REDACTED}" if first.startswith("event=") and not mentions_secret(first) else REDACTED


_FRAME = ("Traceback (most recent call last):", "  File ")
_CHAINS = ("During handling of the above exception, another exception occurred:",
           "The above exception was the direct cause of the following exception:")
_EXC_NAME = re.compile(r"[A-Za-z_][\w.]*(?=:|$)")


def redact_traceback(text: str) -> str:
    """A formatted traceback with every exception message replaced by ``REDACTED`` (the
    exception's type, the frames and their source lines are kept)."""
    out: list[str] = []
    state = "between"  # "frame": after a File line; "message": inside an exception message
    for line in text.split("\n"):
        if line.startswith(_FRAME):
            out.append(line)
            state = "frame" if line.startswith("  File ") else "between"
        elif state == "frame" and line.startswith("    "):
            out.append(line)  # source line, carets
        elif line == "" or line in _CHAINS:
            out.append(line)
            state = "between"
        elif state != "message":
            m = _EXC_NAME.match(line)
            out.append(f"{m.group(0)}: {REDACTED}" if m else REDACTED)
            state = "message"
        # further lines of the same message are dropped
    return "\n".join(out)


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
        message = record.message
        if type(record.args) is tuple and record.args:
            quoted = quote_fields(str(record.msg), record.args)
            if quoted is not None:
                try:
                    message = str(record.msg) % quoted
                    record.args = quoted
                except Exception:
                    pass
        if _SECRET_WORDS.search(message) is not None:
            message = _safe_message(record.msg, record.args, message)
        record.message = escape(message)  # a traceback, added after this, keeps its lines
        return super().formatMessage(record)

    def formatException(self, ei) -> str:
        text = super().formatException(ei)
        return redact_traceback(text) if _SECRET_WORDS.search(text) is not None else text


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


def set_tag(tag: str) -> None:
    """Write ``tag`` right after the logger's name on every line from now on (``proxy.workers``
    gives each worker ``[w<index>]``, so lines of several processes sharing stderr can be told
    apart). Takes effect on ``setup``'s handler; empty = no tag."""
    global _tag
    _tag = tag
    if _handler is not None:
        _handler.setFormatter(LineFormatter(f"%(asctime)s %(levelname)s %(name)s{tag.replace('%', '%%')} %(message)s"))


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
    quoted = quote_fields(fmt, args) if args else None
    if quoted is not None:
        args = quoted
    message = fmt % args
    if _SECRET_WORDS.search(message) is not None:
        message = _safe_message(fmt, args, message)
    line = f"{fm.stamp(time.time())} INFO {logger.name}{_tag} {escape(message)}\n"  # type: ignore[union-attr]
    h.acquire()
    try:
        stream = h.stream
        stream.write(line)
        stream.flush()
    except Exception:
        h.handleError(logging.makeLogRecord({"msg": fmt, "args": args, "name": logger.name}))
    finally:
        h.release()
