"""Which transaction-control statement a statement is, with no I/O (``gram.y``: TransactionStmt).

The interceptor runs a multi-statement Query that calls ``iasql_*`` as several messages inside a
block of its own, standing in for PostgreSQL's implicit transaction block. Statements that start,
end or nest transactions behave differently in an explicit block than in an implicit one, so the
interceptor must know them (``proxy.intercept.simple``). ``txn_control(text)`` returns:

- ``"begin"``: ``BEGIN``/``START TRANSACTION`` (any modes);
- ``"commit"``: ``COMMIT``/``END`` (``WORK``/``TRANSACTION``, ``AND NO CHAIN``);
- ``"rollback"``: ``ROLLBACK``/``ABORT`` (same forms);
- ``"other"``: ``... AND CHAIN``, ``SAVEPOINT``, ``RELEASE [SAVEPOINT]``, ``ROLLBACK TO``;
- ``"prepare"``: ``PREPARE TRANSACTION``;
- None: anything else (``COMMIT PREPARED``/``ROLLBACK PREPARED`` included: they refuse to run in
  any block and so behave alike in both).
"""

from __future__ import annotations

from .lexer import LexError, fold_identifier, lex

__all__ = ["txn_control"]

_NOISE = frozenset(("work", "transaction"))


def txn_control(text: str, *, standard_conforming_strings: bool = True) -> str | None:
    """The transaction-control kind of the statement ``text`` (see the module docstring)."""
    try:
        toks = lex(text, standard_conforming_strings=standard_conforming_strings)
    except LexError:
        return None
    words = [fold_identifier(text[t.start:t.end]) if t.kind == "ident" else text[t.start:t.end] for t in toks]
    if words and words[-1] == ";":
        words.pop()
    if not words:
        return None
    head = words[0]
    if head == "begin" or (head == "start" and words[1:2] == ["transaction"]):
        return "begin"
    if head == "savepoint" or head == "release":
        return "other"
    if head == "prepare":
        return "prepare" if words[1:2] == ["transaction"] else None
    if head not in ("commit", "end", "rollback", "abort"):
        return None
    rest = words[1:]
    if rest[:1] == ["prepared"]:
        return None
    if head == "rollback" and "to" in rest[:2]:
        return "other"
    while rest and rest[0] in _NOISE:
        rest = rest[1:]
    if rest == ["and", "chain"]:
        return "other"
    return "commit" if head in ("commit", "end") else "rollback"
