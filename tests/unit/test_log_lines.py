"""proxy.logs.info: the same line as logging's own, and logging's own path whenever anything but
the proxy's stderr handler would see the record (a filter, another handler, a level)."""

from __future__ import annotations

import logging

from proxy import logs


def test_same_line_as_logging(stderr):
    lg = logging.getLogger("iasql_proxy.test_a")
    logs.info(lg, "event=x client=%s duration_s=%.3f", "127.0.0.1:5", 1.25)
    lg.info("event=x client=%s duration_s=%.3f", "127.0.0.1:5", 1.25)
    fast, slow = stderr.getvalue().splitlines()
    assert fast[24:] == slow[24:] == "INFO iasql_proxy.test_a event=x client=127.0.0.1:5 duration_s=1.250"
    assert fast[:19] == slow[:19] or fast[:17] == slow[:17]  # same date and time (a second may tick)


def test_other_handlers_and_filters_still_see_records(stderr):
    lg = logging.getLogger("iasql_proxy.test_b")
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    extra = Keep()
    logging.getLogger("iasql_proxy").addHandler(extra)
    try:
        logs.info(lg, "event=y n=%d", 1)
    finally:
        logging.getLogger("iasql_proxy").removeHandler(extra)
    assert seen == ["event=y n=1"] and "event=y n=1" in stderr.getvalue()
    lg.addFilter(lambda r: False)
    try:
        logs.info(lg, "event=z")
    finally:
        lg.filters.clear()
    assert "event=z" not in stderr.getvalue()


def test_level_is_respected(stderr):
    lg = logging.getLogger("iasql_proxy.test_c")
    lg.setLevel(logging.WARNING)
    try:
        logs.info(lg, "event=quiet")
    finally:
        lg.setLevel(logging.NOTSET)
    assert stderr.getvalue() == ""


def test_control_characters_cannot_forge_a_line(stderr):
    """A user name with a newline (chosen by the client) is written escaped, on one line, by both
    paths; a traceback keeps its own lines."""
    lg = logging.getLogger("iasql_proxy.test_d")
    forged = "x\n2026-11-29 00:00:00,000 INFO iasql_proxy event=session_start user=admin\r\x1b[2J"
    logs.info(lg, "event=session_start user=%s", forged)
    lg.info("event=login_failed user=%s", forged)
    try:
        raise ValueError("boom")
    except ValueError:
        lg.exception("event=error user=%s", "é ok")
    lines = stderr.getvalue().splitlines()
    # (quoted too: the name has spaces and "=")
    assert lines[0].endswith('user="x\\n2026-11-29 00:00:00,000 INFO iasql_proxy event=session_start user=admin\\r\\x1b[2J"')
    assert lines[1].endswith('event=login_failed user="x\\n2026-11-29 00:00:00,000 INFO iasql_proxy '
                             'event=session_start user=admin\\r\\x1b[2J"')
    assert lines[2].endswith('event=error user="é ok"') and lines[3] == "Traceback (most recent call last):"


def test_names_with_spaces_or_equals_cannot_forge_a_field(stderr):
    """A client-chosen user or database name is one ``key=value`` field, on both paths: a value
    with whitespace, ``=``, ``"`` or a backslash is written double-quoted (``%r`` fields as they were)."""
    lg = logging.getLogger("iasql_proxy.test_q")
    fmt = "event=login_failed user=%s database=%s reason=%r"
    args = ('evil user=postgres', 'd tls=TLSv1.3', "no pg_hba.conf entry")
    logs.info(lg, fmt, *args)
    lg.info(fmt, *args)
    lg.info("event=x user=%s", 'a"b\\c')
    fast, slow, odd = (line.split(" INFO iasql_proxy.test_q ", 1)[1] for line in stderr.getvalue().splitlines())
    want = 'event=login_failed user="evil user=postgres" database="d tls=TLSv1.3" reason=\'no pg_hba.conf entry\''
    assert fast == slow == want
    assert odd == 'event=x user="a\\"b\\\\c"'
    lg.info("event=x user=%s n=%d", "alice", 3)
    assert stderr.getvalue().splitlines()[-1].endswith("event=x user=alice n=3")
