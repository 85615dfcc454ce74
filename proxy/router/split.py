"""Split a simple-Query text into statements at PostgreSQL's own boundaries, with no I/O.

Theory of operation
-------------------
PostgreSQL runs the whole text of a Query message through its grammar (``stmtmulti`` in
``gram.y``): statements are separated by ``;`` tokens, empty ones are dropped, and a ``;`` does not
separate when it is inside parentheses (rule actions ``DO (a; b)``) or inside a SQL-standard
routine body ``BEGIN ATOMIC a; b; END`` (whose ``CASE .. END`` expressions also end in ``END``).
Which characters form a ``;`` token is decided by the scanner (``scan.l``): see ``lexer.py``.

For speed the text is read in *chunks* rather than tokens: one regular expression consumes a whole
run of words, numbers, operators and whitespace at once (none of them can hide a ``;`` or open a
quote), and stops at what matters: ``;``, ``(``, ``)``, comments, quoted strings and identifiers,
dollar quotes and ``$n``. Strings, comments and dollar bodies are skipped with the same helpers as
the full lexer. Only in ``CREATE [OR REPLACE] FUNCTION|PROCEDURE`` statements (detected as psql's
``psqlscan.l`` does) are word runs lexed token by token, to count ``BEGIN ATOMIC``/``CASE``/
``END``. Measured: a dense 1 MB script (20k statements, strings, comments, dollar bodies) or
110k one-line statements split in about 0.3 s; the worst case is text made only of one-character
chunks such as ``(1)(1)(1)..``, about 1 s per MB.

The original text is cut, never regenerated: ``Statement.text`` is the user's bytes between the
first and last token of the statement (leading/trailing whitespace and comments trimmed, the
terminating ``;`` excluded).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .lexer import (
    OPENERS,
    _BODY_BITS,
    _BODY_EXTENDED,
    _BODY_QIDENT,
    _BODY_STANDARD,
    _HIGH,
    _IDENT_CONT,
    _IDENT_START,
    LexError,
    _quoted_end,
    _skip_block_comment,
    fold_identifier,
)

__all__ = ["Statement", "split"]


@dataclass(frozen=True, slots=True)
class Statement:
    """One statement of a Query text.

    ``start``/``end``: offsets (characters of the str) of the statement in the original text, end
    exclusive and before the terminating ``;``; ``text`` is ``original[start:end]`` byte for byte.
    """

    start: int
    end: int
    text: str


# One "filler" token: a word (not the prefix of E'', B'', X'', N'', U&'' or U&""), a number (with
# the identifier PostgreSQL reads as its trailing junk, ``$`` included: scan.l's integer_junk), a
# single operator/punctuation character other than ; ( ) ' " $, or - and / when they do not open
# a comment.
_T = (
    rf"(?:(?![eEbBxXnN]'|[uU]&['\"])[{_IDENT_START}][{_IDENT_CONT}]*"
    rf"|[0-9][0-9_.]*(?:[{_IDENT_START}][{_IDENT_CONT}]*)?"
    rf"|[^\s'\"$;()\-/A-Za-z_0-9{_HIGH}]"
    r"|-(?!-)|/(?!\*))"
)
_WS_CHARS = r"[ \t\n\r\f\v]"
_CHUNK = re.compile(
    rf"""
    (?:{_WS_CHARS}+|--[^\n\r]*)*
    (?:
     (?P<fill>{_T}(?:{_WS_CHARS}*{_T})*)
    |(?P<semi>;(?:{_WS_CHARS}*;)*)
    |(?P<lp>\(+)
    |(?P<rp>\)+)
    |{OPENERS}
    |(?P<other>.)
    |(?P<eof>\Z)
    )
    """,
    re.VERBOSE | re.DOTALL,
)
# The words that open and close SQL-standard routine bodies, as whole identifiers.
_BODY_WORD = re.compile(
    rf"(?<![{_IDENT_CONT}])(begin|atomic|case|end)(?![{_IDENT_CONT}])", re.IGNORECASE | re.ASCII
)
_ROUTINE_KINDS = ("function", "procedure")
_WS = re.compile(r"[ \t\n\r\f\v]*")
_WORD = re.compile(rf"[{_IDENT_START}][{_IDENT_CONT}]*")


def _is_routine_head(words: list[str]) -> bool:
    """psqlscan.l's test: the statement starts CREATE [OR REPLACE] FUNCTION|PROCEDURE."""
    if len(words) >= 2 and words[0] == "create":
        if words[1] in _ROUTINE_KINDS:
            return True
        return len(words) >= 4 and words[1:3] == ["or", "replace"] and words[3] in _ROUTINE_KINDS
    return False


def split(sql: str, *, standard_conforming_strings: bool = True) -> list[Statement] | None:
    """Split a Query text into its statements, at the boundaries PostgreSQL's grammar gives.

    Takes the text and the session's ``standard_conforming_strings`` (from ParameterStatus; when
    off, backslash escapes in plain ``'..'`` strings). Returns the non-empty statements in order
    (PostgreSQL drops empty ones, so a text of only ``;``, whitespace and comments gives ``[]``),
    or ``None`` when the text cannot be lexed as PostgreSQL lexes it (an unterminated quote,
    quoted identifier, dollar quote or block comment, or ``U&''`` with the setting off): the
    caller then forwards the text unsplit and PostgreSQL reports the error itself.
    Raises nothing. Follows ``gram.y`` (``stmtmulti``, rule actions, ``BEGIN ATOMIC``) and
    ``scan.l``; see the module docstring.
    """
    try:
        return _split(sql, standard_conforming_strings)
    except LexError:
        return None


def _split(sql: str, scs: bool) -> list[Statement]:
    plain_body = _BODY_STANDARD if scs else _BODY_EXTENDED
    chunk = _CHUNK.match
    out: list[Statement] = []
    pos = 0
    first = -1  # start of the current statement's first token, -1 when none yet
    last = -1  # end of its last token
    depth = 0  # parenthesis depth
    head: list[str] | None = []  # first words while deciding whether it is CREATE FUNCTION
    routine = False
    atomic = 0  # BEGIN ATOMIC / CASE nesting inside a routine body
    after_begin = False  # the previous token was the word BEGIN (routine statements only)
    while True:
        m = chunk(sql, pos)
        kind = m.lastgroup
        if kind == "eof":
            break
        pos = m.start(kind)
        end = m.end()
        if kind == "semi":
            if depth == 0 and atomic == 0:
                if first >= 0:
                    out.append(Statement(first, last, sql[first:last]))
                first = last = -1
                head, routine, after_begin = [], False, False
                pos = end
                continue
            after_begin = False
        elif kind == "bc":
            pos = _skip_block_comment(sql, pos)
            continue
        elif kind == "fill":
            text = m.group(kind)
            if head is not None and not head and text[:6].lower() != "create":
                head = None  # not CREATE ...: no routine body to track
            if head is not None:
                p = 0
                while head is not None:
                    p = _WS.match(text, p).end()
                    w = _WORD.match(text, p)
                    if w is None:
                        if p < len(text):  # a non-word token ends the head
                            routine, head = _is_routine_head(head), None
                        break
                    head.append(fold_identifier(w.group()))
                    p = w.end()
                    if len(head) >= 4:
                        routine, head = _is_routine_head(head), None
            if routine:
                prev_end = 0
                for w in _BODY_WORD.finditer(text):
                    word = w.group().lower()
                    adjacent = after_begin and not text[prev_end : w.start()].strip()
                    if word == "atomic" and adjacent:
                        atomic += 1
                    elif atomic and word == "case":
                        atomic += 1
                    elif atomic and word == "end":
                        atomic -= 1
                    after_begin = word == "begin"
                    prev_end = w.end()
                if text[prev_end:].strip():
                    after_begin = False
        else:
            if head is not None:
                routine, head = _is_routine_head(head), None
            after_begin = False
            if kind == "lp":
                depth += end - pos
            elif kind == "rp":
                depth = max(depth - (end - pos), 0)
            elif kind == "xq" or kind == "xn":
                end = _quoted_end(sql, end, plain_body, pos)
            elif kind == "xe":
                end = _quoted_end(sql, end, _BODY_EXTENDED, pos)
            elif kind == "xb":
                end = _quoted_end(sql, end, _BODY_BITS, pos)
            elif kind == "xus":
                if not scs:
                    raise LexError("unsafe use of string constant with Unicode escapes", pos)
                end = _quoted_end(sql, end, _BODY_STANDARD, pos)
            elif kind == "xd" or kind == "xui":
                b = _BODY_QIDENT.match(sql, end)
                if b is None:
                    raise LexError("unterminated quoted identifier", pos)
                end = b.end()
            elif kind == "dq":
                close = sql.find(m.group(kind), end)
                if close < 0:
                    raise LexError("unterminated dollar-quoted string", pos)
                end = close + (end - pos)
            # "other": a lone character ($ not starting a quote or parameter, a stray byte...)
        if first < 0:
            first = pos
        last = end
        pos = end
    if first >= 0:
        out.append(Statement(first, last, sql[first:last]))
    return out
