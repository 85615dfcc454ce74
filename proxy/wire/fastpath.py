"""The relay's two per-read scans, without I/O: which client reads can be forwarded as they are, and
whether a server read ends with ReadyForQuery.

Theory of operation
-------------------
After login most reads are whole messages that need nothing but counting: a Query, or a
Parse/Bind/Describe/Execute/Sync batch, from the client; rows ending with ReadyForQuery from the
server. ``scan_client`` and ``scan_reply`` decide that in one pass over the bytes, so the relay
(``proxy.frontend.session``, ``proxy.wire.framing.RelayScanner``) can forward the read in one write
and fall back to its general, message-by-message path only when a read needs more.

Both exist twice: in C (``proxy/wire/_fastpath.c``, built at install when a compiler is present)
and here in Python, the reference. ``SCAN_CLIENT``/``SCAN_REPLY`` are the C versions when the
extension imports, else these. ``tests/unit/test_fastpath.py`` checks that both agree.

Message format: PostgreSQL protocol chapter, "Message Formats". Keyword rules: ``may_change_state``
in ``proxy.router.session_state`` (no false negatives against ``analyze``).
"""

from __future__ import annotations

import functools
import re
import struct

from proxy.router.marker import MODULE_RPC_NAMES, may_call
from proxy.router.session_state import lowered_may_change_state

__all__ = ["RPC_NAMES", "SCAN_CLIENT", "SCAN_REPLY", "compiled", "scan_client", "scan_reply", "unnamed_flags", "watch_table"]

_HDR = struct.Struct("!Bi")
_Q, _P, _S, _F, _B, _Z, _H = (ord(c) for c in "QPSFBZH")
_NEVER = frozenset(map(ord, "Xcf"))
_NAMED = frozenset(map(ord, "BDC"))
_C = ord("C")
_D = ord("d")
#: The extended messages a Sync must close (Parse, Bind, Describe, Execute, Close), by type byte.
_OPENS_BATCH = bytes(1 if chr(i) in "PBDEC" else 0 for i in range(256))
#: Message types Postgres reads after login (SocketBackend) and the longest each may be: 0 not a
#: type (FATAL "invalid frontend message type"), 1 PQ_SMALL_MESSAGE_LIMIT (10,000 bytes), 2 up to
#: ``limit``. Anything else is the slow path's to refuse.
_TYPES = bytes(2 if chr(i) in "QFBPd" else 1 if chr(i) in "XCDEHScf" else 0 for i in range(256))
_SMALL_LIMIT = 10000
#: A lower-cased Query text that begins with COPY.
_COPY_AT_START = re.compile(rb"\s*copy")
#: A lower-cased Query or Parse text that begins with DROP (maybe DROP DATABASE: the slow path
#: closes the proxy's idle connections to that database first).
_DROP_AT_START = re.compile(rb"\s*drop")


def scan_client(data: bytes, txn: bool, limit: int) -> int:
    """Whole frontend messages in ``data`` that may be forwarded unchanged.

    ``txn``: transaction or statement pooling (state and statement names matter); ``limit``: the
    largest message length allowed (``max_packet_size``, bytes). Returns -1 when the slow path must
    look: a partial message, a type Postgres does not read after login, a length below 4 or above
    ``limit`` (10,000 for the types Postgres limits so), with ``txn`` a Parse that is not of
    PostgreSQL's shape, a Query or FunctionCall behind an extended message (Parse, Bind,
    Describe, Execute, Close) with no Sync between them (Postgres skips it when that batch failed,
    so whether it owes a ReadyForQuery only the server can tell), Terminate, CopyDone/CopyFail, a
    Query/Parse text containing ``iasql_`` (any case) or a module RPC name at an identifier start
    (``proxy.router.marker``; the text's first byte counts as one) or beginning with DROP or, with ``txn``, text that may change session
    state or a Query beginning with COPY, or a named prepared statement (Parse, Bind, Describe/Close 'S'), or with ``txn`` a
    Bind/Describe of the unnamed statement that no unnamed Parse earlier in ``data`` defined, a
    Close of it, or an unnamed Parse that no Bind after it in ``data`` uses. Else returns ``pending * 256 + last``: ``pending`` counts Query, Sync and
    FunctionCall (each owes a ReadyForQuery), ``last`` is the type byte of the last message that is
    not Flush or CopyData (``H`` when all are: neither opens nor closes an extended-protocol batch); with
    ``txn``, plus ``flags << 31`` when ``data`` changes the client's unnamed statement
    (``unnamed_flags``). Never raises.
    """
    n = len(data)
    pos = 0
    pending = 0
    t = last = -1
    low = None
    unnamed = -1        # offset of the last unnamed Parse (txn)
    query_after = False  # a Query came after it (or with none)
    bound = False        # a Bind of it came after it in this read
    while pos < n:
        if n - pos < 5:
            return -1
        t, length = _HDR.unpack_from(data, pos)
        end = pos + 1 + length
        kind = _TYPES[t]
        if length < 4 or length > limit or end > n or not kind or (kind == 1 and length > _SMALL_LIMIT):
            return -1
        if t == _H and length != 4:
            return -1  # a Flush with a body: Postgres fails it and skips to Sync (the slow path counts that)
        if (t == _Q or t == _F) and last >= 0 and _OPENS_BATCH[last]:
            return -1  # the server may skip it (a failed batch discards until Sync): slow path
        if t == _Q or t == _P:
            if t == _Q:
                a, b = pos + 5, end - 1
                pending += 1
                query_after = True
            elif txn and (length < 5 or data[pos + 5]):
                return -1
            else:
                unnamed, query_after, bound = pos, False, False
                a = data.find(b"\0", pos + 5, end) + 1
                b = data.find(b"\0", a, end) if a else -1
                if b < 0:
                    return -1
                # with txn, only a Parse of PostgreSQL's shape may become the client's unnamed
                # statement here (one it rejects leaves the previous one in place)
                if txn and (end - b - 1 < 2 or end - b - 3 != 4 * ((data[b + 1] << 8) | data[b + 2])):
                    return -1
            if low is None:
                low = data.lower()
            if may_call(low, a, b) or (txn and lowered_may_change_state(low, a, b)):
                return -1
            if txn and t == _Q and _COPY_AT_START.match(low, a, b) is not None:
                return -1  # may start COPY FROM STDIN: what follows waits for the answer (slow path)
            if _DROP_AT_START.match(low, a, b) is not None:
                return -1  # may be DROP DATABASE (slow path: proxy.router.drop_database)
        elif t == _S or t == _F:
            pending += 1
        elif t in _NEVER:
            return -1
        elif txn and t in _NAMED:
            if t == _B:
                nul = data.find(b"\0", pos + 5, end)
                if nul < 0 or nul + 1 >= end or data[nul + 1]:
                    return -1
                if unnamed < 0 or query_after:  # the unnamed statement of an earlier read
                    return -1
                bound = True
            elif end - pos < 7 or (data[pos + 5] == _S and data[pos + 6]):
                return -1
            elif data[pos + 5] == _S and (t == _C or unnamed < 0 or query_after):
                return -1
        if t != _H and t != _D:  # neither Flush nor CopyData opens or closes a batch
            last = t
        pos = end
    if txn and unnamed >= 0 and not query_after and not bound:
        return -1  # an unnamed Parse nobody binds here (pg8000): the slow path confirms it
    result = pending * 256 + (last if last >= 0 else _H)
    if txn and (query_after or unnamed >= 0):
        result |= (1 if query_after else (unnamed + 1) << 1) << 31
    return result


def unnamed_flags(result: int) -> int:
    """The unnamed-statement flags of a ``scan_client`` result (0: the read left it alone): bit 0
    when a Query dropped it, else (offset of the read's last unnamed Parse + 1) << 1."""
    return result >> 31


def scan_reply(data: bytes, watch: bytes, start: int = 0) -> int:
    """Walk whole backend messages from offset ``start`` of ``data`` (a message boundary) while
    their type is not watched (``watch``: 256 bytes, non-zero at a watched type, see
    ``watch_table``). Returns the status byte (0..255) when ``data`` ends with a ReadyForQuery
    (length 5) that is its first watched message; else ``-1 - pos``, ``pos`` being the offset from
    which the caller's general scanner must continue (a watched message, a partial or bad one, or
    ``len(data)``). Raises ValueError only for ``start`` outside ``0..len(data)``."""
    n = len(data)
    if not 0 <= start <= n:
        raise ValueError("start out of range")
    pos = start
    while n - pos >= 5:
        t, length = _HDR.unpack_from(data, pos)
        if watch[t]:
            if t == _Z and length == 5 and n - pos == 6:
                return data[pos + 5]
            break
        if length < 4 or length >= n - pos - 1:
            break
        pos += 1 + length
    return -1 - pos


@functools.lru_cache(maxsize=16)
def watch_table(types: frozenset[int]) -> bytes:
    """The 256-byte ``watch`` argument of ``scan_reply`` for these type bytes (cached: every
    server connection's scanner asks for the same set)."""
    return bytes(1 if i in types else 0 for i in range(256))


try:  # the C versions, when the extension was built
    from proxy.wire._fastpath import scan_client as SCAN_CLIENT  # type: ignore[import-not-found]
    from proxy.wire._fastpath import scan_reply as SCAN_REPLY  # type: ignore[import-not-found]

    from proxy.wire._fastpath import RPC_NAMES  # type: ignore[import-not-found]

    if tuple(RPC_NAMES) != MODULE_RPC_NAMES:  # built from another list: it would miss calls
        raise ImportError("proxy.wire._fastpath RPC_NAMES differ from proxy.router.marker.MODULE_RPC_NAMES")
    compiled = True
except ImportError:  # pragma: no cover - depends on the build (or an extension built before RPC_NAMES)
    SCAN_CLIENT, SCAN_REPLY = scan_client, scan_reply
    RPC_NAMES = MODULE_RPC_NAMES
    compiled = False
