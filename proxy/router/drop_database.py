"""Which database a ``DROP DATABASE`` statement drops, with no I/O.

PostgreSQL refuses ``DROP DATABASE x`` while other sessions are connected to ``x`` (55006
``database "x" is being accessed by other users``), after waiting up to 5 seconds for them to
leave (``CountOtherDBBackends`` in src/backend/storage/ipc/procarray.c). The proxy's own idle
pooled connections to ``x`` are such sessions although no client uses them, so before it
forwards the statement the proxy closes them (``proxy.server.App.close_idle_to``); connections a
client is using are left alone and PostgreSQL answers as it would without the proxy.

Grammar followed (PostgreSQL's ``DropdbStmt`` in gram.y): ``DROP DATABASE [IF EXISTS] name
[[WITH] (option [, ...])]``, ``name`` an identifier (folded when unquoted). Only a statement at the
start of the text is looked at: PostgreSQL refuses DROP DATABASE inside a transaction block,
which is what a multi-statement text runs in.
"""

from __future__ import annotations

from proxy.router.lexer import LexError, identifier_value, lex

__all__ = ["dropped_database", "MAX_TEXT"]

#: Only this many characters of a text are lexed (a DROP DATABASE statement is short).
MAX_TEXT = 4096


def dropped_database(text: str) -> str | None:
    """The name of the database that ``text`` (one SQL text, as sent in a Query or Parse) drops,
    or None when it does not begin with a ``DROP DATABASE`` statement (or cannot be lexed, or
    the name is cut off by ``MAX_TEXT``). Never raises."""
    head = text[:MAX_TEXT]
    try:
        toks = lex(head)[:5]
    except LexError:
        return None
    words = [head[t.start:t.end].lower() for t in toks]
    if words[:2] != ["drop", "database"]:
        return None
    i = 4 if words[2:4] == ["if", "exists"] else 2
    if i >= len(toks) or toks[i].kind not in ("ident", "qident"):
        return None
    if len(text) > MAX_TEXT and toks[i].end >= MAX_TEXT:
        return None  # the name may go on past what was lexed
    return identifier_value(head[toks[i].start:toks[i].end])
