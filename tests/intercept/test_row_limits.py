"""Execute with a row limit on a portal of an intercepted statement behaves as on Postgres: rows in
chunks with PortalSuspended, and the call runs once (breaker finding: it ran again per Execute)."""

from __future__ import annotations

from proxy.wire import frontend as F


def _types(msgs) -> str:
    return "".join(t for t, _ in msgs)


def test_row_limited_executes_return_chunks_like_postgres(raw, pg, db):
    for sql in ("SELECT * FROM iasql_modules_list()", "SELECT * FROM generate_series(1, 5)"):
        through = raw()
        through.send(F.Parse("", sql).encode() + F.Bind("", "").encode() + F.Execute("", 2).encode()
                     + F.Execute("", 2).encode() + F.Close(b"P", "").encode() + F.Sync().encode())
        assert _types(through.read_until_ready()) == "12DDsDDs3Z", sql


def test_call_runs_once_for_a_row_limited_portal(raw, db):
    c = raw()
    c.send(F.Parse("", "SELECT * FROM iasql_begin()").encode() + F.Bind("", "").encode()
           + F.Execute("", 1).encode() + F.Execute("", 1).encode() + F.Sync().encode())
    msgs = c.read_until_ready()
    # as Postgres does for a one-row portal: the row, PortalSuspended, then CommandComplete
    # (not a second iasql_begin, which would wait for the first one's transaction)
    assert _types(msgs) == "12DsCZ", msgs
    c.send(F.Parse("", "SELECT 1").encode() + F.Bind("", "").encode() + F.Execute("", 1).encode()
           + F.Execute("", 1).encode() + F.Sync().encode())
    assert _types(c.read_until_ready()) == "12DsCZ"
    c.send(F.Query("SELECT * FROM iasql_rollback()").encode())
    assert "E" not in _types(c.read_until_ready())
