"""Small helpers shared by the interception tests (message grouping)."""

from __future__ import annotations

from tests.support.faults import Message, data_rows, errors_in

__all__ = ["results", "data_rows", "errors_in", "VERSION_RE"]

VERSION_RE = r"^\d+\.\d+\.\d+$"


def results(messages: list[Message]) -> list[list[Message]]:
    """The messages of a simple Query grouped per statement: each group ends with its
    CommandComplete, EmptyQueryResponse or ErrorResponse; notices and ParameterStatus are dropped,
    ReadyForQuery is not included."""
    out: list[list[Message]] = []
    cur: list[Message] = []
    for t, p in messages:
        if t in ("N", "S", "Z"):
            continue
        cur.append((t, p))
        if t in ("C", "I", "E"):
            out.append(cur)
            cur = []
    assert not cur, f"trailing messages without a completion: {cur!r}"
    return out
