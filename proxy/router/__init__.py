"""Statement splitting and ``iasql_*`` call classification for the proxy (pure, no I/O).

- ``split``: cut a simple-Query text at PostgreSQL's own statement boundaries (``split.py``).
- ``may_contain_call``: the fast pre-check, a case-insensitive search for ``iasql_`` and the
  module RPC names (``proxy.router.marker``).
- ``find_calls``: the calls of registered functions in one statement, with constant arguments
  (``classify.py``).
- ``rewrite_with_rows``: put a call's result rows in place of the call in a larger statement
  (``rewrite.py``, SQL built with sqlglot).
- ``lex``: the PostgreSQL-faithful lexer all of the above stand on (``lexer.py``).
"""

from .classify import Arg, Call, CallError, ParamRef, find_calls, may_contain_call
from .lexer import LexError, Token, lex
from .rewrite import rewrite_with_rows
from .session_state import STATEFUL_HINT, StateEffects, analyze
from .split import Statement, split

__all__ = [
    "Arg",
    "Call",
    "CallError",
    "LexError",
    "ParamRef",
    "STATEFUL_HINT",
    "StateEffects",
    "Statement",
    "Token",
    "analyze",
    "find_calls",
    "lex",
    "may_contain_call",
    "rewrite_with_rows",
    "split",
]
