"""The proxy's one prefilter for "this text may call a function the engine answers".

A Query or Parse text goes to the interceptor (and, in the relay, to the slow path) when it
contains ``iasql_`` anywhere (any ASCII letter case), or one of ``MODULE_RPC_NAMES`` (the RPCs
that modules declare, ``engine.modules.base.Module.rpcs``) at an identifier start: where the byte
before it is not an ASCII letter, ``_``, ``$`` or a byte >= 0x80 (digits count as a start, which
only adds false positives). PostgreSQL folds only ASCII letters, and a quoted name (``"s3_..."``)
or a qualified one (``public.s3_...``) is preceded by ``"`` or ``.``, so no call of these names is
missed; a name spelled with Unicode escapes (``U&"..."``) is missed, as ``iasql_`` is, and reaches
the stub, which fails loudly.

The list is fixed at startup and duplicated in C (``proxy/wire/_fastpath.c``, ``RPC_NAMES``,
exported as ``_fastpath.RPC_NAMES``); ``tests/unit/test_fastpath.py`` checks that both agree and
``tests/engine/test_module_rpcs.py`` that it equals the modules' declared RPCs.
"""

from __future__ import annotations

import re

#: The module RPC names the proxy recognises (lower case), as declared by ``Module.rpcs``.
MODULE_RPC_NAMES: tuple[str, ...] = ("s3_upload_object", "access_key_request", "key_pair_request",
                                     "key_pair_import", "describe_ami", "certificate_request",
                                     "certificate_import", "set_user_password", "log_group_tail",
                                     "start_build", "confirm_subscription")

#: The longest marker (an overlap this long is enough when searching a text in slices).
LONGEST = max(len(n) for n in ("iasql_", *MODULE_RPC_NAMES))

_ALT = "|".join(re.escape(n) for n in MODULE_RPC_NAMES)
MARKER_BYTES = re.compile(rb"iasql_|(?<![a-z_$\x80-\xff])(?:" + _ALT.encode() + rb")", re.IGNORECASE)
MARKER_STR = re.compile(r"iasql_|(?<![a-z_$\u0080-\U0010ffff])(?:" + _ALT + r")", re.IGNORECASE | re.ASCII)
#: A name at the very start of the searched span (the lookbehind would see the byte before it)
_AT_START_BYTES = re.compile(rb"(?:" + _ALT.encode() + rb")", re.IGNORECASE)
_AT_START_STR = re.compile(r"(?:" + _ALT + r")", re.IGNORECASE | re.ASCII)


def may_call(text: str | bytes | bytearray | memoryview, start: int = 0, end: int | None = None) -> bool:
    """Whether ``text[start:end]`` (str, or bytes-like, e.g. a message in the input buffer) may
    call an engine function: contains ``iasql_`` or a module RPC name at an identifier start (the
    byte before ``start`` is not looked at: a name at ``start`` counts). Returns False only when
    no such call can be present. Raises nothing."""
    if end is None:
        end = len(text)
    if isinstance(text, str):
        return MARKER_STR.search(text, start, end) is not None or _AT_START_STR.match(text, start, end) is not None
    return MARKER_BYTES.search(text, start, end) is not None or _AT_START_BYTES.match(text, start, end) is not None
