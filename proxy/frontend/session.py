"""One client connection: start-up, TLS, authentication, then relaying to its server connection.

Theory of operation
-------------------
``ClientSession`` is an asyncio Protocol. Until login completes, received bytes are buffered and
a login coroutine (``_login``) runs ``proxy.frontend.login.startup`` over that buffer: start-up
messages, TLS and authentication. Then it leases a server connection from the pool and sends the
server's ParameterStatus values, the proxy's own BackendKeyData and ReadyForQuery.

After login, ``data_received`` is the fast path (``proxy.relay.core.ClientCore``, compiled): it
follows message boundaries only, enforces ``max_packet_size``, and forwards complete messages to
the server in one write per read; ``_relay`` here takes every read the fast path cannot. A Query or
Parse whose bytes contain ``iasql_`` (case-insensitive) or a module RPC name (``proxy.router.marker``) is handed to the interceptor, if one is
installed; nothing else is parsed. Server output is relayed by ``ServerConnection`` in relay mode.
Sources: PostgreSQL protocol chapter ("Start-up", "SSL Session Encryption", "Canceling Requests in
Progress"), PgBouncer's client.c for pooler behaviour and error texts.
"""

from __future__ import annotations

import asyncio
import logging
import re
import struct
import time
from typing import TYPE_CHECKING

from proxy import logs
from proxy.auth import AuthFailed
from proxy.backend.connection import Credentials, ServerConnection, ServerError
from proxy.backend.pool import PoolTimeout
from proxy.frontend import login
from proxy.frontend import transaction as txn
from proxy.frontend.login import ClientError
from proxy.relay.core import EXTENDED as _EXTENDED
from proxy.relay.core import QUEUED, ClientCore
from proxy.router import split
from proxy.router.marker import LONGEST, may_call
from proxy.router.drop_database import MAX_TEXT as MAX_DROP_TEXT, dropped_database
from proxy.router.session_state import (
    _STATE_ANYWHERE_PATTERN,
    _STATE_AT_START,
    analyze,
    may_change_state,
)
from proxy.wire import backend as B
from proxy.wire import sqlstate
from proxy.wire.codec import ProtocolViolation
from proxy.wire.framing import startup_frame

if TYPE_CHECKING:
    from proxy.server import ProxyApp

log = logging.getLogger("iasql_proxy.client")

_HDR = struct.Struct("!Bi")
#: A Query text with a statement that may be COPY FROM STDIN (then Postgres reads what the client
#: pipelined behind it as part of the copy, not as messages of their own): COPY at the start of
#: the text, of a line, or after ";" or a comment's end (linear: no backtracking over the text).
_COPY_AT_START = re.compile(rb"\s*[cC][oO][pP][yY]\b")
_COPY_INSIDE = re.compile(rb"(?:[;\n]|\*/)\s*[cC][oO][pP][yY]\b")


#: A Query or Parse text that begins with DROP (maybe DROP DATABASE: ``_before_drop``).
_DROP_AT_START = re.compile(rb"\s*[dD][rR][oO][pP]\b")


def _may_copy(buf, a: int, b: int) -> bool:
    """Whether the Query text ``buf[a:b]`` may run COPY (``_COPY_AT_START``; ``_COPY_INSIDE`` only
    for texts up to _STREAM_ABOVE bytes: searching a huge text on the event loop would stall
    every other client, and a huge multi-statement text with a COPY inside it is not a case
    worth that)."""
    return _COPY_AT_START.match(buf, a, b) is not None or (
        b - a <= _STREAM_ABOVE and _COPY_INSIDE.search(buf, a, b) is not None)
_Q, _P, _X, _S, _F, _H = ord("Q"), ord("P"), ord("X"), ord("S"), ord("F"), ord("H")
_E = ord("E")
_BATCH = frozenset(b"PBDEC")  # messages that continue an extended batch (no reply owed at once)
_COPY_DONE, _COPY_FAIL, _COPY_DATA = ord("c"), ord("f"), ord("d")
#: Messages above this size (bytes) other than Query and Parse are streamed to the server as they
#: arrive, so a client cannot make the proxy hold a huge message in memory; Query and Parse are
#: inspected for iasql_ and stay bounded by max_packet_size.
_STREAM_ABOVE = 1 << 20
#: A Query or Parse longer than _STREAM_ABOVE is classified (``iasql_``, session-state keywords)
#: by ``_classify_large`` a slice of this many bytes per event-loop turn, and its text analysed
#: (``analyze``) in a worker thread: one huge text never stalls the other clients.
_SCAN_SLICE = 256 * 1024
#: In transaction and statement pooling, a text longer than this (bytes) that may change session
#: state is analysed (``analyze``) in a worker thread, not on the event loop.
_ANALYZE_ON_LOOP = 16 * 1024
#: ... and one longer than this is not analysed at all (the lexer keeps about a hundred bytes per
#: token, and a worker thread still takes turns with the event loop): it pins its client to its
#: server connection for good (``_UNANALYSED``).
_ANALYZE_MAX = 64 * 1024
_UNANALYSED = "a text over 64 KiB that may change session state (not analysed)"
#: ``may_change_state``'s anywhere-pattern for ``_classify_large``, with ``temp`` for ``mp`` (as
#: sound: ``temp``, ``temporary`` and ``pg_temp`` all contain it), so that a long text is not
#: taken for a state change because it says ``timestamp``.
_LARGE_STATE_ANYWHERE = re.compile(_STATE_ANYWHERE_PATTERN.replace(b"|mp", b"|temp"))
_WS = b" \t\n\r\f\v"
_SPECIAL = frozenset((_Q, _P, _X, ord("c"), ord("f")))
#: While discarding an extended batch until Sync, every message is looked at.
_SPECIAL_SKIP = frozenset(range(256))
#: In transaction/statement pooling, messages that may name a prepared statement are looked at too.
_SPECIAL_TXN = frozenset(map(ord, "QPXBDCcf"))
#: While a session has prepared statements that call iasql_*, all its extended traffic is special.
SPECIAL_EXTENDED = frozenset(map(ord, "QPXBDECHScf"))
#: Message types a client may send after login, and how long each may be (PostgreSQL's
#: SocketBackend): 0 unknown (FATAL "invalid frontend message type"), _SMALL at most
#: PQ_SMALL_MESSAGE_LIMIT (10000) bytes, _LARGE up to max_packet_size.
_SMALL, _LARGE = 1, 2
_PQ_SMALL_MESSAGE_LIMIT = 10000
_MESSAGE_LIMITS = bytes(_LARGE if chr(i) in "QFBPd" else _SMALL if chr(i) in "XCDEHScf" else 0 for i in range(256))

class ClientSession(ClientCore, asyncio.Protocol):
    """A client connection. ``direct_tls`` is True when TLS was negotiated before any protocol byte
    (PostgreSQL 17 ``sslnegotiation=direct``)."""

    def __init__(self, app: "ProxyApp", direct_tls: bool = False):
        self.app = app
        self.cfg = app.cfg
        self.direct_tls = direct_tls
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.tls_version: str | None = None
        self.user = ""
        self.database = ""
        self.params: dict[str, str] = {}
        self.server: ServerConnection | None = None
        self.pool = None
        self.target = None
        self.key: tuple[int, int] | None = None
        self.ready = False
        self.closed = False
        self.started = time.monotonic()
        self.tx_status = b"I"
        self.pending_ready = 0       # ReadyForQuery messages the server still owes
        self._last_type = _S         # type of the last message forwarded (to know if a batch is open)
        self._inbuf = bytearray()
        self._waiter: asyncio.Future | None = None
        self._login_task: asyncio.Task | None = None
        self._busy: asyncio.Task | None = None
        self._paused_server = False
        self.max_message = app.cfg.max_packet_size
        self.counted = False
        self._auth_ok_pending = False
        self.credentials: Credentials | None = None
        self.special = _SPECIAL          # message types the fast path looks at
        self.special_default = _SPECIAL
        self.after_ready = None          # called after each ReadyForQuery (graceful shutdown)
        self.after_transaction: list = []  # statements for after the client's block (intercept.caller.defer)
        self.iasql_transaction: str | None = None  # the IaSQL transaction this session opened
        # counters read by the admin console and metrics (plain ints: cheap on the fast path)
        self.bytes_in = 0
        self.bytes_out = 0
        self.queries = 0
        self.transactions = 0
        self.assignments = 0    # server connections taken on the fast path (the slow path: metrics)
        self.wait_started: float | None = None
        # transaction / statement pooling (proxy.frontend.transaction)
        self.pool_mode = "session"
        self.pooled = False                     # transaction or statement pooling
        self.gucs: dict[str, str] = {}          # session parameters the client changed, by name
        self.touched_gucs: set[str] = set()     # names to read back when the transaction ends
        self.reset_all_pending = False
        self.pins: dict[str, str] = {}          # state that keeps the client on its connection
        self.prepared = txn.PreparedStatements()
        self._drained: asyncio.Future | None = None
        self._eof = False  # the client half-closed: end the session once the replies are out
        self._answer: bytes | None = None     # a reply the proxy gives instead of forwarding
        self._watched: tuple | None = None    # a Query to run watched: () or analyze's statement_name
        self._skip_to_sync = False            # discarding an extended batch after refusing it
        self._pins_dirty = False              # pins taken or released since the last check
        self.copy_in = False                  # COPY FROM STDIN in progress (Sync owes nothing)
        # CopyDone/CopyFail sent outside COPY, each as (ReadyForQuery-owing messages sent before
        # it, whether an Execute came last before it): it ends a COPY that a message before it
        # starts (its CopyInResponse not here yet); Postgres ignores one sent before the COPY
        self._copy_done_early: list[tuple[int, bool]] = []
        self._passthrough = 0                 # bytes of a large message still to stream to the server
        self._batch_settled = False           # the Query at the head may go: its batch did not fail (_settle_batch)
        self._timer: tuple | None = None      # (timeout, counter, since) for check_timeouts
        self._checked: tuple[int, int, int] | None = None  # (bytes, pending, last type) queued by _relay_fast
        self._startup_key: frozenset = frozenset()
        self._special_before_copy = _SPECIAL
        # wire trace of this session (proxy.trace), or None: gets raw bytes after TLS, both ways
        self.recorder = app.new_recorder(self) if app.record_dir is not None else None
        self.extended_state = None       # set by the interceptor (intercept.extended.ExtendedState)
        self._intercepting = False       # an iasql_* text or batch is being answered (_run_intercept)
        # transaction pooling: the client's unnamed statement (its Parse message, whole) and
        # whether the current server connection holds it (proxy.frontend.transaction)
        self._unnamed: bytes | None = None
        self._unnamed_here = False
        # what _classify_large found for the large Query/Parse at the head of the input:
        # (signature, iasql_ found, may change state, (StateEffects, one statement) or None)
        self._verdict: tuple | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.app.clients.add(self)
        if self.direct_tls:
            obj = transport.get_extra_info("ssl_object")
            self.tls_version = obj.version() if obj else None
        self._login_task = asyncio.get_running_loop().create_task(self._login())

    def _data_waiting(self) -> None:
        """Bytes were buffered while a task owns the session (``ClientCore.data_received``): wake
        the task's ``_wait_data``."""
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def eof_received(self) -> bool | None:
        """The client half-closed its side (shutdown SHUT_WR) after its last message, or closed
        its socket (over plain TCP the two look alike until a write fails). Postgres still
        answers what it received before ending the session, so the write side stays open until
        the replies owed are out (not possible over TLS, which has no half-close): see
        ``_end_after_eof``. A task waiting for more input is woken and sees the end."""
        if self.tls_version is None and self.ready and not self.closed:
            self._eof = True
            self._data_waiting()
            self._end_after_eof()
            return True
        return None

    def _end_after_eof(self) -> None:
        """After a half-close: end the session at once when nothing is owed or being done for the
        client. Otherwise, once every whole message the client sent has gone to the server, the
        end of the input is passed on to the server connection too (``end_input``): Postgres
        then answers what it has, as it answers a half-closed client, and ends the connection
        on reading the end, so the session ends once those replies are relayed even when
        Postgres owes fewer than counted or waits for input (COPY FROM STDIN, a message half
        sent). That connection is never reused; called again after each ReadyForQuery and
        after each task."""
        if self.closed:
            return
        server = self.server
        if (not (self.pending_ready or self._busy is not None or self.copy_in or self._passthrough)
                or (self._busy is None and (server is None or server.closed))):
            self.close()
            return
        if self._busy is None and not server.input_ended:
            server.end_input()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._login_task is not None and not self._login_task.done():
            self._login_task.cancel()
        # a client that leaves while an iasql_* text runs for it is treated as Postgres treats a
        # client that leaves during a function call: the work goes on to the end of the text
        # (an autocommit text commits), then the server connection is released (_run_intercept)
        finishing = self._intercepting and self._busy is not None and not self._busy.done()
        if self._busy is not None and not self._busy.done() and not finishing:
            self._busy.cancel()
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)
        if not finishing:
            self._release_server()
        if self.pooled:
            txn.forget_client_statements(self)
        if self.iasql_transaction is not None or self.after_transaction:
            self._after_session()
        self.app.session_ended(self)
        if finishing and self.key is not None:
            self.app.keys[self.key] = self  # its cancel key still stops the call, as a backend's would
        if self.recorder is not None:
            self.recorder.close()
        if self.user and self.cfg.log_disconnections:
            logs.info(log, "event=session_end client=%s user=%s database=%s tls=%s duration_s=%.3f",
                      self.peer, self.user, self.database, self.tls_version or "off", time.monotonic() - self.started)

    def _after_session(self) -> None:
        """The session ended: run what failed calls left for after its transaction (on a pooled
        connection of its database and user), and remember the IaSQL transaction it opened as
        abandoned, so the next ``iasql_begin`` closes it at once instead of waiting for it."""
        from proxy.intercept.caller import abandon, run_pending

        if self.iasql_transaction is not None:
            abandon(self.app, self.iasql_transaction)
            self.iasql_transaction = None
        if self.credentials is not None:
            run_pending(self)

    def pause_writing(self) -> None:
        if self.server is not None and self.server.transport is not None:
            self.server.transport.pause_reading()
            self._paused_server = True

    def resume_writing(self) -> None:
        if self._paused_server and self.server is not None and self.server.transport is not None:
            self.server.transport.resume_reading()
        self._paused_server = False

    # -- output helpers -----------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        """Send bytes to the client (dropped once closed)."""
        if self._auth_ok_pending:  # an error after authentication: AuthenticationOk came first
            self._auth_ok_pending = False
            data = B.AUTHENTICATION_OK + data
        if not self.closed and self.transport is not None:
            if self.recorder is not None:
                self.recorder.backend(data)
            self.bytes_out += len(data)
            self.transport.write(data)

    def fatal(self, code: str, message: str, fields: B.ErrorResponse | None = None) -> None:
        """Send FATAL ErrorResponse and close the connection (as Postgres ends a session)."""
        self.write(fields.encode() if fields is not None else B.error(code, message, severity="FATAL"))
        self.close()

    def close(self) -> None:
        """Close the client connection after flushing what was written."""
        if not self.closed and self.transport is not None:
            self.transport.close()
        self.closed = True

    # -- start-up -----------------------------------------------------------------------------
    async def _wait_data(self) -> None:
        if self.closed or self._eof:  # the client's input ended: nothing more will come
            raise ConnectionResetError()
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None
        if self.closed or (self._eof and not self._inbuf):
            raise ConnectionResetError()

    def _resume_relay(self) -> None:
        """Relay what the client sent while the session was busy (leasing, intercepting, ...).
        Nothing happens while a task still owns the session (``_busy``, e.g. the read-back that
        ``_maybe_give_back`` just started): that task resumes relaying when it ends."""
        if self._busy is not None:
            return
        if self._inbuf and not self.closed:
            if len(self._inbuf) > _STREAM_ABOVE and not self._passthrough:
                self._relay(b"")  # large: relayed in place, without copies or the fast path's scan
            else:
                data = bytes(self._inbuf)
                self._inbuf.clear()
                self.bytes_in -= len(data)  # counted when it arrived
                if not (self.special is self.special_default and not self._passthrough and self._relay_fast(data)):
                    self._relay(data)
        if self._eof:
            self._end_after_eof()

    async def next_message(self) -> tuple[int, bytes, bytes]:
        """The next complete message from the client's input, waiting for more bytes if needed:
        ``(type, payload, raw)``. Raises ProtocolViolation (08P01) on a bad length."""
        while True:
            buf = self._inbuf
            if len(buf) >= 5:
                t, length = _HDR.unpack_from(buf, 0)
                if length < 4 or length > self.max_message:
                    raise ProtocolViolation(f"invalid message length {length}")
                if len(buf) >= 1 + length:
                    self._verdict = None
                    raw = bytes(buf[: 1 + length])
                    del buf[: 1 + length]
                    return t, raw[5:], raw
            await self._wait_data()

    async def read_startup_packet(self) -> bytes:
        """The next start-up packet (no type byte) from the client's input, waiting for it.
        Raises ProtocolViolation (bad length), ConnectionResetError (client gone)."""
        while True:
            payload = startup_frame(self._inbuf)
            if payload is not None:
                return payload
            await self._wait_data()

    async def read_message(self, limit: int = 65536) -> tuple[int, bytes]:
        """The next typed message, whole, as ``(type, payload)``, during authentication or in the
        admin console (at most ``limit`` bytes). Raises ProtocolViolation (08P01) on a bad length,
        ConnectionResetError when the client is gone."""
        while True:
            if len(self._inbuf) >= 5:
                t, length = _HDR.unpack_from(self._inbuf, 0)
                if length < 4 or length > limit:
                    raise ProtocolViolation(f"invalid message length {length}")
                if len(self._inbuf) >= 1 + length:
                    payload = bytes(self._inbuf[5:1 + length])
                    del self._inbuf[:1 + length]
                    return t, payload
            await self._wait_data()

    async def _login(self) -> None:
        try:
            # client_login_timeout bounds start-up, TLS and authentication (here), and the wait
            # for a pool's first welcome (_welcome); other waits for a server connection are
            # bounded by query_wait_timeout, as in PgBouncer
            timeout = self.cfg.client_login_timeout
            timer = (asyncio.get_running_loop().call_later(timeout, self._login_timed_out)
                     if timeout > 0 else None)
            try:
                proceed = await login.startup(self)
            finally:
                if timer is not None:
                    timer.cancel()
            if proceed:
                key = frozenset(self.params.items())
                self._startup_key = _STARTUP_KEYS.setdefault(key, key)  # one object per parameter set
                if len(_STARTUP_KEYS) > 10000:
                    _STARTUP_KEYS.clear()
                self._auth_ok_pending = True  # sent with the rest of the welcome, in one write
                await self._welcome()
        except ClientError as e:
            if e.sqlstate in (sqlstate.INVALID_PASSWORD, sqlstate.INVALID_AUTHORIZATION_SPECIFICATION):
                self.app.auth_failures += 1
            log.info("event=login_failed client=%s user=%s database=%s sqlstate=%s reason=%r",
                     self.peer, self.user, self.database, e.sqlstate, e.message)
            self.write(e.encode())
            self.close()
        except ProtocolViolation as e:
            self.fatal(e.sqlstate, e.message)
        except (ConnectionError, asyncio.CancelledError):
            self.close()
        except Exception as e:  # never let one client's bug take the process down
            log.exception("event=login_error client=%s", self.peer)
            self.fatal(sqlstate.INTERNAL_ERROR, f"internal proxy error: {type(e).__name__}")

    def _login_timed_out(self) -> None:
        """client_login_timeout passed before start-up, TLS and authentication completed."""
        task = self._login_task
        if task is not None and not task.done() and not self.ready:
            self._login_task = None
            task.cancel()
            log.info("event=login_timeout client=%s", self.peer)
            self.fatal(sqlstate.PROTOCOL_VIOLATION, "client_login_timeout")

    async def _welcome(self) -> None:
        """Lease a server (or use the pool's known parameters) and send AuthenticationOk,
        ParameterStatus, BackendKeyData and ReadyForQuery. Raises ClientError."""
        creds = self.credentials
        self.pool_mode = self.target.pool_mode or self.cfg.pool_mode
        welcome = None
        if self.pool_mode != "session":
            # as PgBouncer: a pool that already knows the server's parameters for these start-up
            # parameters logs clients in without waiting for a server connection
            self.pool = self.app.pool_for(self.target, self.target.dbname or self.database,
                                          self.target.user or self.user)
            welcome = self.pool.welcome.get(self._startup_key)
        try:
            if welcome is None:
                # as PgBouncer: a client waiting for a pool's first welcome (its server has never
                # answered for these parameters: down, or not yet) waits client_login_timeout from
                # its connect; a session client of a pool that has welcomed before waits as a query
                # waits (query_wait_timeout)
                login_deadline = None
                if self.cfg.client_login_timeout > 0:
                    pool = self.pool or self.app.pool_for(self.target, self.target.dbname or self.database,
                                                          self.target.user or self.user)
                    if self._startup_key not in pool.welcome:
                        login_deadline = self.started + self.cfg.client_login_timeout
                self.server, self.pool = await self.app.lease(self, creds, login_deadline)
                welcome = dict(self.server.params)
                self.pool.welcome[self._startup_key] = welcome
        except PoolTimeout as e:
            raise ClientError(sqlstate.PROTOCOL_VIOLATION, e.reason) from None
        except ServerError as e:
            raise ClientError(e.sqlstate, e.message, fields=_as_fatal(e.fields)) from None
        except AuthFailed as e:
            raise ClientError(sqlstate.INVALID_PASSWORD, f"server login failed: {e}") from None
        out = [B.AUTHENTICATION_OK]
        self._auth_ok_pending = False
        out.append(_parameter_status(welcome) if self.pool_mode != "session"
                   else b"".join(B.ParameterStatus(k, v).encode() for k, v in welcome.items()))
        if self.pool_mode != "session":
            self.special = self.special_default = _SPECIAL_TXN
            self.pooled = True
        self.key = self.app.register_key(self)
        out.append(B.BackendKeyData(*self.key).encode())
        out.append(B.ReadyForQuery(b"I").encode())
        self.write(b"".join(out))
        self.ready = True
        if self.pool_mode == "session":
            self.server.attach(self)
        else:
            self._give_back()
        if self.cfg.log_connections:
            logs.info(log, "event=session_start client=%s user=%s database=%s tls=%s", self.peer, self.user,
                      self.database, self.tls_version or "off")
        if self._inbuf:
            data = bytes(self._inbuf)
            self._inbuf.clear()
            self._relay(data)

    # -- after login: the fast path -----------------------------------------------------------
    def _relay(self, data: bytes) -> None:
        self.bytes_in += len(data)
        if self._passthrough:
            # the rest of a large message being streamed to the server as it arrives
            take = min(self._passthrough, len(data))
            if self.server is not None:
                self.server.send(data[:take])
            self._passthrough -= take
            data = data[take:]
            if not self._passthrough:  # the message is whole on the server: it may be given back
                self._maybe_give_back()
            if not data:
                if self._eof:
                    self._end_after_eof()
                return
            if self._busy is not None:  # the give-back's read-back owns the session: it relays the rest
                self._inbuf += data
                return
        buf = self._inbuf
        buf += data
        if self.server is None and self.pool_mode != "session":
            if buf[:1] == b"X":
                self._terminate()
                return
            bad = _header_error(buf, 0, self.max_message)
            if bad is not None:  # refused before it takes a server connection
                self._inbuf.clear()
                self.fatal(bad.sqlstate, bad.message)
                return
            if len(buf) < 5 or len(buf) <= _HDR.unpack_from(buf, 0)[1]:
                return  # a server connection is taken only for a whole message: a slow sender holds none
            if not self._lease_now():
                if not self._queue_now():
                    self._busy = asyncio.get_running_loop().create_task(self._lease_then_relay())
                return
        n = len(buf)
        pos = 0
        limit = self.max_message
        pending = 0
        last = -1
        # where the extended batch the scan is in began (after the last Sync, Query, Flush...):
        # a batch that needs the slow path is handed to it whole from there, so its first
        # messages' replies are not in flight when the slow path starts
        bstart, blast = 0, -1
        unnamed_before = None  # the unnamed statement when the batch began, if the scan changed it
        special = self.special
        try:
            while n - pos >= 5:
                bad = _header_error(buf, pos, limit)
                if bad is not None:
                    raise bad
                t, length = _HDR.unpack_from(buf, pos)
                end = pos + 1 + length
                behind_batch = ((t == _Q or t == _F) and not self.copy_in and not self._skip_to_sync
                                and (last if last >= 0 else self._last_type) in txn.OPEN_BATCH)
                if end > n:
                    if (length > _STREAM_ABOVE and (t == _COPY_DATA or t not in special)
                            and self.server is not None and not behind_batch):
                        # a large message that needs no inspection (COPY data, Bind values...):
                        # forward it as it arrives instead of holding it whole in memory
                        if t == _F:
                            pending += 1
                        self._flush(buf, n, pending, t)
                        self._passthrough = end - n
                        return
                    break
                if behind_batch:
                    if self._batch_settled:
                        self._batch_settled = False
                    else:
                        # behind extended messages sent without a Sync: Postgres skips it if one
                        # of them failed, so the server is asked first (_settle_batch)
                        self._flush(buf, pos, pending, last)
                        self._busy = asyncio.get_running_loop().create_task(self._settle_batch())
                        return
                if t in special:
                    if self.copy_in:
                        # copy input, never part of an extended batch: a slow path started
                        # further on flushes from after it (else the copy's end would stay
                        # behind in the buffer while the server waits for it)
                        if t == _COPY_DONE or t == _COPY_FAIL:
                            self.copy_in = False
                            self.special = special = self._special_before_copy
                        # (a Sync here is ignored by the server: no ReadyForQuery owed)
                        last = t
                        pos = end
                        bstart, blast, unnamed_before = end, last, None
                        continue
                    if t == _COPY_DONE or t == _COPY_FAIL:
                        # the client pipelined its COPY data behind the COPY command: the copy is
                        # over before the server's CopyInResponse arrives (with nothing in flight
                        # there is no COPY to end: Postgres ignores the message)
                        if self.pending_ready or pending:
                            self._copy_done_early.append(
                                (self.queries + pending, (last if last >= 0 else self._last_type) == _E))
                        pos = end  # not ``last``: like Flush, it leaves a batch as open as it was
                        bstart, blast, unnamed_before = end, last, None
                        continue
                    if self._skip_to_sync:
                        self._flush(buf, pos, pending, last)
                        pending, last = 0, -1
                        del buf[:end - pos]
                        self._verdict = None
                        n, pos = len(buf), 0
                        bstart, blast, unnamed_before = 0, -1, None
                        if t == _S:
                            self._skip_to_sync = False
                            self.special = special = self.special_default
                            self.write(B.ReadyForQuery(self.tx_status).encode())
                        continue
                    if t == _X:
                        self._flush(buf, pos, pending, last)
                        self._terminate()
                        return
                    verdict = None
                    if ((t == _Q or t == _P) and length > _ANALYZE_ON_LOOP
                            and (self.pooled or self.app.interceptor is not None)):
                        verdict = self._verdict
                        if verdict is None or verdict[0] != _signature(buf, pos, end):
                            verdict = None
                            if length > _STREAM_ABOVE or (
                                    self.pooled and may_change_state(buf, *_text_span(t, buf, pos, end))):
                                # a huge text, or a long one to analyse: classified a slice per
                                # loop turn and analysed in a worker thread, then relayed again
                                # (the extended batch it is in stays whole, as for the slow path)
                                if unnamed_before is not None:
                                    self._unnamed, self._unnamed_here = unnamed_before
                                self._flush(buf, bstart, pending, blast)
                                self._verdict = None
                                self._busy = asyncio.get_running_loop().create_task(
                                    self._classify_large(t, pos - bstart, end - bstart))
                                return
                    intercept = self.app.interceptor is not None and (
                        special is SPECIAL_EXTENDED or ((t == _Q or t == _P) and (
                            verdict[1] if verdict is not None else may_call(buf, pos + 5, end))))
                    if not intercept and (t == _Q or t == _P):
                        a, b = _text_span(t, buf, pos, end)
                        if _DROP_AT_START.match(buf, a, b) is not None:
                            self._before_drop(bytes(buf[a:min(b, a + 2 * MAX_DROP_TEXT)]))
                    # state set in a text that also calls iasql_* follows the client (or pins it)
                    # like any other; an intercepted Parse is noted by the extended interceptor
                    if (self.pooled and (t == _Q or (t == _P and not intercept))
                            and (verdict[2] if verdict is not None else may_change_state(buf, *_text_span(t, buf, pos, end)))):
                        if not self._note_state(t, buf, pos, end, verdict[3] if verdict is not None else None):
                            self._flush(buf, pos, pending, last)
                            if self._watched is not None:  # see note_text_state
                                self._busy = asyncio.get_running_loop().create_task(self._run_watched())
                            else:
                                self._refuse_block(buf, end)
                            return
                    if intercept:
                        if t == _Q:
                            self._flush(buf, pos, pending, last)
                        else:  # the extended interceptor takes the batch whole, as the slow path
                            if unnamed_before is not None:
                                self._unnamed, self._unnamed_here = unnamed_before
                            self._flush(buf, bstart, pending, blast)
                        self._start_intercept()
                        return
                    if special is _SPECIAL_TXN:
                        if t == _Q:
                            self._unnamed = None  # a simple Query drops the unnamed statement
                            self._unnamed_here = False
                        if t != _Q and txn.needs_rename(self, t, buf, pos, end):
                            renamed = txn.rename_inline(self, t, bytes(buf[pos + 5:end]))
                            if renamed is None:  # needs hidden or made-up replies: the slow path
                                if unnamed_before is not None:
                                    self._unnamed, self._unnamed_here = unnamed_before
                                self._flush(buf, bstart, pending, blast)
                                self._busy = asyncio.get_running_loop().create_task(self._run_named())
                                return
                            self._flush(buf, pos, pending, last)
                            pending = 0
                            if self.server is None or self.closed:
                                return
                            self.server.send(renamed)
                            last = self._last_type = t
                            del buf[:end - pos]
                            self._verdict = None
                            n = len(buf)
                            pos = bstart = 0
                            unnamed_before = None
                            continue
                        if t == _P:  # unnamed, bound later in this read: as on the fast path
                            if unnamed_before is None:
                                unnamed_before = (self._unnamed, self._unnamed_here)
                            self._unnamed = bytes(buf[pos:end])
                            self._unnamed_here = True
                if t == _Q and self.pooled and not self.copy_in and _may_copy(buf, pos + 5, end):
                    # what the client sends behind a COPY FROM STDIN, in this read or later ones:
                    # whether Postgres reads it as part of the copy (a Sync then owes nothing, a
                    # CopyFail ends the copy) is known only from its answer, so it waits for that
                    # answer (_hold_behind_copy)
                    self._flush(buf, end, pending + 1, t)
                    self._busy = asyncio.get_running_loop().create_task(self._hold_behind_copy())
                    return
                if t == _Q or t == _S or t == _F:
                    pending += 1
                if (t != _H or length != 4) and t != _COPY_DATA:
                    # Flush neither opens nor closes an extended-protocol batch, nor does CopyData
                    # outside COPY (Postgres ignores it): a batch it follows is still open. A Flush
                    # with a body does: Postgres fails it ("invalid message format") and skips to Sync
                    last = t
                pos = end
                if t not in _BATCH:
                    bstart, blast, unnamed_before = end, last, None
            if pos < n and n - pos < 5:
                bad = _header_error(buf, pos, limit)  # 1-4 bytes: the type byte is known already
                if bad is not None:
                    raise bad
        except ProtocolViolation as e:
            self._flush(buf, pos, pending, last)
            self._fatal_after_replies(e.sqlstate, e.message)
            return
        self._flush(buf, pos, pending, last)

    def _before_drop(self, text: bytes) -> None:
        """Before a text that begins with DROP is forwarded: when it is ``DROP DATABASE x``, close
        the proxy's idle pooled connections to ``x`` on this client's server, which would
        otherwise keep PostgreSQL from dropping it (``proxy.router.drop_database``)."""
        name = dropped_database(text.decode("utf-8", "replace"))
        if name is not None:
            closed = self.app.close_idle_to(self.target.host, self.target.port, name)
            if closed:
                log.info("event=drop_database_closed_idle client=%s database=%s closed=%d", self.peer, name, closed)

    async def _classify_large(self, t: int, start: int, end: int) -> None:
        """Classify the Query or Parse ``buf[start:end]`` of the input (longer than
        _STREAM_ABOVE, or longer than _ANALYZE_ON_LOOP and to be analysed) as ``_relay`` does a
        short one, without stalling other clients: it is searched for ``iasql_`` and the module
        RPC names (``proxy.router.marker``; slices overlap by the longest of them) and, in
        transaction and statement pooling, for the keywords of ``may_change_state`` one
        _SCAN_SLICE at a time, yielding to the event loop in between, with no copy of the whole
        text; a text that may change session state is analysed (``analyze``) in a worker thread,
        or, longer than _ANALYZE_MAX, not at all (``_UNANALYSED``: its client is pinned to its
        connection until it leaves). Then ``_relay`` goes on with that verdict
        (``_verdict``: valid while the message is at that place in the input; the session is
        busy meanwhile, so nothing consumes what comes before it)."""
        loop = asyncio.get_running_loop()
        verdict = None
        try:
            buf = self._inbuf
            a, b = _text_span(t, buf, start, end)
            iasql = state = False
            overlap = max(8, LONGEST)  # longer than every keyword searched for ("iasql_", "_config", RPC names...)
            # iasql_ anywhere in the payload (as _relay's search); state keywords in the text
            for lo, hi, what in ((start + 5, end, "iasql"), (a, b, "state") if self.pooled else (0, 0, "")):
                s = lo
                while s < hi:
                    e = min(hi, s + _SCAN_SLICE)
                    low = buf[s:min(hi, e + overlap)].lower()
                    if what == "iasql":
                        iasql = may_call(low)
                    elif s == lo and (_STATE_AT_START.match(low) or not low.strip(_WS)):
                        state = True  # at the start (or only white space in the first slice: assume so)
                    else:  # (a ";" whose next token is in the next slice: assume it may)
                        state = bool(_LARGE_STATE_ANYWHERE.search(low)) or (e < hi and low.rstrip(_WS).endswith(b";"))
                    s = hi if (iasql if what == "iasql" else state) else e  # found: no need to go on
                    await asyncio.sleep(0)
                    if self.closed or self._inbuf is not buf:
                        return
            analysed = None
            noted = state and not (t == _P and iasql and self.app.interceptor is not None)  # as in _relay
            if noted and b - a > _ANALYZE_MAX:
                analysed = _UNANALYSED
            elif noted:
                try:
                    text = str(memoryview(buf)[a:b], "utf-8")
                except UnicodeDecodeError:  # another client_encoding: the keywords are ASCII in all
                    text = str(memoryview(buf)[a:b], "latin-1")
                scs = self.server.params.get("standard_conforming_strings", "on") == "on" if self.server else True
                analysed = await loop.run_in_executor(None, _analyze_large, text, scs)
                del text
                if self.closed or self._inbuf is not buf:
                    return
            verdict = (_signature(buf, start, end), iasql, state, analysed)
        except asyncio.CancelledError:
            return
        finally:
            self._busy = None
        self._verdict = verdict
        self._resume_relay()

    def _fatal_after_replies(self, code: str, message: str) -> None:
        """End the session with FATAL ``code``/``message`` for a message Postgres would not read
        (an unknown type, a bad length), after the replies to the messages before it: Postgres
        runs those first, so the client gets their results (an open extended batch's too: its
        replies are fetched with ``server_batch``'s barrier), then the FATAL. What came after
        the bad message is never read. The server connection is then released as for any client
        that leaves (an open transaction or batch is not committed: Postgres rolls it back)."""
        head = self._inbuf[0] if self._inbuf else -1
        self._inbuf.clear()
        server = self.server
        if self.closed:
            return
        if self.copy_in:
            # Postgres reads the message inside COPY FROM STDIN (CopyGetData): an ERROR for the
            # message, then FATAL, as it can no longer find the next message boundary
            if head >= 0 and not _MESSAGE_LIMITS[head]:
                self.write(B.error(code, f"unexpected message type 0x{head:02X} during COPY from stdin"))
            elif "max_packet_size" in message:  # the proxy's own limit: its own words
                self.fatal(code, message)
                return
            else:  # a bad length: pq_getmessage fails, which CopyGetData reports so
                self.write(B.error(sqlstate.CONNECTION_FAILURE,
                                   "unexpected EOF on client connection with an open transaction"))
            self.fatal(sqlstate.PROTOCOL_VIOLATION, "terminating connection because protocol synchronization was lost")
            return
        if server is None or server.closed or (not self.pending_ready and self._last_type not in txn.OPEN_BATCH):
            self.fatal(code, message)  # (the server connection, idle between transactions, is released as usual)
            return
        self._busy = asyncio.get_running_loop().create_task(self._answer_then_fatal(code, message))

    async def _answer_then_fatal(self, code: str, message: str) -> None:
        try:
            await self.wait_replies()
            server = self.server
            if (self._last_type in txn.OPEN_BATCH and server is not None and not server.closed
                    and not self.closed):
                from proxy.backend.batch import server_batch

                async with server_batch(self, server) as batch:
                    await batch.after_relay(True)
        except asyncio.CancelledError:
            return
        finally:
            self._busy = None
        self._inbuf.clear()
        server, self.server = self.server, None
        if server is not None and self.pool is not None:
            # Postgres's session ends with that FATAL, and what it changed (SET, LISTEN, a
            # temporary table...) with it: the connection is closed, never given to another client
            self.pool.release(server, False)
        if not self.closed:
            self.fatal(code, message)

    async def _settle_batch(self) -> None:
        """The Query or FunctionCall at the head of the input follows extended messages sent
        without a Sync. Postgres runs it unless one of those failed: then it discards everything
        up to Sync, that message included, and owes no ReadyForQuery for it. The replies owed so
        far are relayed, then ``ServerBatch``'s barrier asks the server whether the batch failed;
        a message the server would discard is dropped here, any other is relayed as usual, so
        the ReadyForQuery messages owed are counted exactly (a miscount would hold the
        connection for good, or give it back while a reply is still on its way)."""
        from proxy.backend.batch import server_batch

        failed = True
        try:
            await self.wait_replies()
            server = self.server
            if self.copy_in:  # a COPY pipelined before: the copy reads the message, as Postgres's does
                failed = False
            elif server is not None and not server.closed and not self.closed:
                async with server_batch(self, server) as batch:
                    await batch.after_relay(True)
                failed = batch.failed
                if failed:
                    server.skipping = True  # until Sync: a later barrier would never be answered
        except asyncio.CancelledError:
            return
        finally:
            self._busy = None
        if self.closed or self.server is None:
            return
        if failed:
            self.take_message()  # discarded, as Postgres discards it
        elif not self.copy_in:
            self._batch_settled = True
        self._resume_relay()

    def _flush(self, buf: bytearray, pos: int, pending: int, last: int) -> None:
        if not pos:
            return
        self._verdict = None  # the head of the input is consumed
        server = self.server
        if server is None or server.closed:
            del buf[:pos]
            self.fatal(sqlstate.CONNECTION_FAILURE, "server closed the connection unexpectedly")
            return
        if pos == len(buf) and pos > _STREAM_ABOVE and buf is self._inbuf:
            # all of it, large: sent as it is (no copy), the session gets a new input buffer
            self._inbuf = bytearray()
            server.send(buf)
        else:
            server.send(bytes(memoryview(buf)[:pos]))
            del buf[:pos]
        self.pending_ready += pending
        self.queries += pending
        if last >= 0:
            self._last_type = last

    # -- transaction and statement pooling ----------------------------------------------------
    def note_state(self, raw: bytes) -> bool:
        """Record the session state a whole Parse message ``raw`` may change (transaction and
        statement pooling; the extended-protocol interceptor calls this for the Parse messages it
        consumes). Returns False when statement pooling must refuse it (a transaction block)."""
        if self.pooled and may_change_state(raw, *_text_span(raw[0], raw, 0, len(raw))):
            return self._note_state(raw[0], raw, 0, len(raw))
        return True

    async def wait_input(self) -> None:
        """Wait until the client has sent something (nothing is consumed). Raises
        ConnectionResetError once the client is gone."""
        while not self._inbuf:
            await self._wait_data()

    def _note_state(self, t: int, buf: bytearray, pos: int, end: int, analysed: tuple | None = None) -> bool:
        """Record what a Query/Parse may change in session state (its text passed
        ``may_change_state``: the callers check). Returns False when statement pooling must refuse
        it (it opens a transaction block). ``analysed``: ``_classify_large``'s analysis of the
        text, (StateEffects, whether it is one statement), or None."""
        if analysed is None and end - pos > _ANALYZE_MAX:
            analysed = _UNANALYSED  # (never analysed on the event loop)
        if analysed is _UNANALYSED:
            if _UNANALYSED not in self.pins:
                self.pins[_UNANALYSED] = _UNANALYSED
                log.info("event=pinned client=%s user=%s reason=%r", self.peer, self.user, _UNANALYSED)
            return True
        if analysed is not None:
            return self._note_effects(analysed[0], t == _Q, lambda: analysed[1])
        raw = bytes(buf[pos + 5:end])
        try:
            body = raw[:-1] if t == _Q else raw[raw.index(b"\0") + 1:raw.index(b"\0", raw.index(b"\0") + 1)]
        except ValueError:
            return True  # malformed: the server rejects it
        try:
            text = body.decode()
        except UnicodeDecodeError:  # another client_encoding: the keywords are ASCII in all of them
            text = body.decode("latin-1")
        return self.note_text_state(text, t == _Q)

    def note_text_state(self, text: str, simple: bool = False) -> bool:
        """Record what the SQL ``text`` may change in session state: a Query's text (``simple``),
        a Parse's, or the query of a named prepared statement being bound (``Bind`` runs it
        again, maybe in a later transaction than its Parse). Returns False when statement pooling
        must refuse it (it opens a transaction block), or when it must run through
        ``txn.run_watched_query`` (``_watched``: a DEALLOCATE or DISCARD ALL alone in a Query, or
        PREPARE/EXECUTE/DEALLOCATE of a statement the client prepared with Parse)."""
        scs = self.server.params.get("standard_conforming_strings", "on") == "on" if self.server else True
        fx = analyze(text, standard_conforming_strings=scs)
        return self._note_effects(fx, simple, lambda: len(split(text) or ()) == 1)

    def _note_effects(self, fx, simple: bool, one_statement) -> bool:
        """``note_text_state`` for the analysis ``fx`` of a text (``one_statement()``: whether
        the text is a single statement, asked only for DEALLOCATE and DISCARD ALL)."""
        if fx.begins_block and self.pool_mode == "statement":
            return False
        # DEALLOCATE / DISCARD ALL alone in a Query: what it drops is known from the server's
        # answer (an aborted block refuses it), so the Query runs through txn.run_watched_query,
        # as SQL naming a protocol-level statement (its server name differs)
        named = fx.statement_name
        if not (simple and named is not None and named[1] in self.prepared.by_name
                and f"PREPARE {named[1]}" not in self.pins):
            named = None  # not a name the client prepared with Parse
        watch = simple and (named is not None or (
            (fx.discard_all or bool(fx.deallocate)) and one_statement()))
        self.touched_gucs |= fx.gucs
        if fx.reset_all:
            self.reset_all_pending = True
        if fx.pins or fx.unpins:
            self._pins_dirty = True
        for why in fx.pins:
            if named is not None:
                continue  # PREPARE of the client's protocol-level name: it fails (42P05)
            if why not in self.pins:
                self.pins[why] = why
                log.info("event=pinned client=%s user=%s reason=%r", self.peer, self.user, why)
        for what in fx.unpins:
            self._unpin(what)
        if (fx.discard_all or "*" in fx.deallocate) and not watch:
            # inside a longer text: the server drops every prepared statement of the connection
            self.prepared.by_name.clear()
            if self.server is not None:
                self.server.prepared.clear()
        if fx.discard_all:
            self.pins.clear()
        if watch:
            self._watched = named or ()
            return False
        return True

    def _unpin(self, what: str) -> None:
        """Drop the pins that ``what`` (an ``unpins`` entry of ``analyze``) releases."""
        kind, _, name = what.partition(" ")
        for why in list(self.pins):
            words = why.split(" ")
            if kind == "UNLISTEN":
                hit = words[0] == "LISTEN" and name in ("*", words[-1])
            elif kind == "DEALLOCATE":
                hit = words[0] == "PREPARE" and name in ("ALL", words[-1])
            elif kind == "CLOSE":
                hit = words[0] == "DECLARE" and name in ("ALL", words[1] if len(words) > 1 else "")
            elif kind == "DISCARD":
                hit = "TEMP" in why.upper()
            elif kind == "pg_advisory_unlock_all":
                hit = "advisory" in why
            else:
                hit = False
            if hit:
                del self.pins[why]

    def _refuse_block(self, buf: bytearray, end: int) -> None:
        """Answer the message at the head of ``buf`` without forwarding it: the reply ``_note_state``
        prepared, or (statement pooling) an ERROR for a transaction block; the client stays
        connected. An extended-protocol message is followed by discarding until Sync."""
        t, length = _HDR.unpack_from(buf, 0)
        del buf[:1 + length]
        self._verdict = None
        answer, self._answer = self._answer, None
        if answer is not None:
            self.write(answer + B.ReadyForQuery(self.tx_status).encode())
        else:
            self.write(B.error(sqlstate.ACTIVE_SQL_TRANSACTION,
                               "transaction blocks are not allowed in statement pooling mode",
                               hint="Use pool_mode = transaction, or run the statements one at a time."))
            if t == _Q:
                self.write(B.ReadyForQuery(self.tx_status).encode())
            else:
                self._skip_to_sync = True
                self.special = _SPECIAL_SKIP
        if buf and not self.closed:
            data = bytes(buf)
            buf.clear()
            self._relay(data)

    # -- PgBouncer's client timeouts (ProxyApp checks them about once a second) ---------------
    def check_timeouts(self, now: float, cfg) -> None:
        """Enforce ``query_timeout``, ``idle_transaction_timeout`` and ``client_idle_timeout``
        (``cfg``, seconds; 0: off) at ``now`` (monotonic seconds). Nothing is measured on the
        relay's path: each check compares a counter the relay keeps anyway with its value at the
        previous check (replies received for a running query, bytes received for an idle client),
        so a limit fires up to a second late. On expiry the client gets PgBouncer's FATAL 08P01
        (``query timeout``, ``idle transaction timeout``, ``client_idle_timeout``) and is closed;
        a server connection in a query or a transaction is closed too (Postgres rolls the
        transaction back), never given to another client."""
        if self.closed or not self.ready or getattr(self, "admin_role", None) is not None:
            return
        if self.pending_ready and self.server is not None:
            kind, marker, limit = "query timeout", self.queries - self.pending_ready, cfg.query_timeout
        elif self._busy is not None:
            self._timer = None  # a task works for the client (a lease, an iasql_* call, a check)
            return
        elif self.server is not None and self.tx_status != b"I":
            kind, marker, limit = "idle transaction timeout", self.bytes_in, cfg.idle_transaction_timeout
        elif not self.pending_ready:
            kind, marker, limit = "client_idle_timeout", self.bytes_in, cfg.client_idle_timeout
        else:
            self._timer = None
            return
        timer = self._timer
        if limit <= 0:
            self._timer = None
        elif timer is None or timer[0] != kind or timer[1] != marker:
            self._timer = (kind, marker, now)
        elif now - timer[2] >= limit:
            self._timed_out(kind)

    def _timed_out(self, reason: str) -> None:
        log.info("event=client_timeout client=%s user=%s database=%s reason=%r", self.peer, self.user,
                 self.database, reason)
        server = self.server
        if server is not None and reason != "client_idle_timeout":
            self.server = None
            server.abort()
            if self.pool is not None:
                self.pool.release(server, False)
        self._inbuf.clear()
        self.fatal(sqlstate.PROTOCOL_VIOLATION, reason)

    @property
    def in_queue(self) -> bool:
        """True while the session waits in its pool's queue (``_queue_now``)."""
        return self._busy is QUEUED and not self.closed

    def leave_queue(self) -> None:
        """Stop waiting in the pool's queue and wait the slow way (``Pool.maintain`` calls this
        when the session waited ``reserve_pool_timeout``: ``acquire`` may open a reserve connection)."""
        if self.in_queue:
            self._busy = asyncio.get_running_loop().create_task(self._lease_then_relay())

    def queue_timed_out(self, reason: str = "query_wait_timeout") -> None:
        """No connection came within ``query_wait_timeout`` (or ``query_timeout``): end the
        session with PgBouncer's error (08P01 ``reason``: ``query_wait_timeout`` or
        ``query_timeout``), as the task path does."""
        if self.in_queue:
            self._busy = None
            self.wait_started = None
            self.fatal(sqlstate.PROTOCOL_VIOLATION, reason)

    async def _lease_then_relay(self) -> None:
        try:
            await self._lease()
        except asyncio.CancelledError:
            return
        except PoolTimeout as e:
            self._busy = None
            self.fatal(sqlstate.PROTOCOL_VIOLATION, e.reason)
            return
        except ServerError as e:
            self._busy = None
            self.write(e.fields.encode() if e.fields is not None else B.error(e.sqlstate, e.message, severity="FATAL"))
            self.close()
            return
        except AuthFailed as e:
            self._busy = None
            self.fatal(sqlstate.INVALID_PASSWORD, f"server login failed: {e}")
            return
        except Exception:  # never leave the session owned by a task that is gone
            log.exception("event=lease_error client=%s", self.peer)
            self._busy = None
            self.fatal(sqlstate.INTERNAL_ERROR, "internal proxy error")
            return
        self._busy = None
        self._resume_relay()

    async def _lease(self) -> None:
        """Lease a server connection for the next transaction and give it the client's state."""
        if self.wait_started is None:  # else it began in the pool's queue
            self.wait_started = time.monotonic()
        server, self.pool = await self.app.lease(self, self.credentials)
        for _ in range(3):
            # a custom parameter set on a connection leaves a placeholder no RESET removes: a
            # client that never set it must not see it, so such a connection is replaced
            if not (server.custom_seen - set(self.gucs)):
                break
            self.pool.release(server, False)
            server, self.pool = await self.app.lease(self, self.credentials)
        self.wait_started = None
        server.clear_inbox()
        self._unnamed_here = False
        try:
            await txn.apply_state(self, server)
        except (ServerError, asyncio.CancelledError):  # cancelled: the client left meanwhile
            self.pool.release(server, False)
            raise
        if self.closed:
            self.pool.release(server, True, reset=False)
            return
        self.server = server
        server.attach(self)

    async def _run_watched(self) -> None:
        name, self._watched = self._watched, None
        try:
            await self.wait_replies()
            if self.server is None or self.server.closed:
                return  # the server was lost meanwhile: the client has been told
            if not self.copy_in:  # else a COPY pipelined before: the copy reads the Query, as is
                await txn.run_watched_query(self, name or None)
        except asyncio.CancelledError:
            return
        except Exception:
            log.exception("event=watched_query_error client=%s", self.peer)
            self.fatal(sqlstate.INTERNAL_ERROR, "internal proxy error")
            return
        finally:
            self._busy = None
        self._maybe_give_back()
        self._resume_relay()

    async def _hold_behind_copy(self) -> None:
        """A Query that may start COPY FROM STDIN went to the server with more messages behind
        it (transaction and statement pooling): they are relayed once the server has either
        started the copy (``copy_in``: they are then read as copy input, as Postgres reads them)
        or answered the Query, so that the ReadyForQuery messages owed are counted exactly (a
        Sync counted that Postgres ignores would hold the connection for good)."""
        try:
            await self.wait_replies()
        except asyncio.CancelledError:
            return
        finally:
            self._busy = None
        if self.closed:
            return
        self._maybe_give_back()
        self._resume_relay()

    async def _run_named(self) -> None:
        try:
            await self.wait_replies()
            if not self.copy_in:  # else a COPY pipelined before: the copy reads what follows, as is
                await txn.run_named_batch(self)
        except asyncio.CancelledError:
            return
        except ConnectionError:  # the client's input ended in the middle of its batch
            self._busy = None
            self.close()
            return
        finally:
            self._busy = None
        self._maybe_give_back()
        self._resume_relay()

    async def wait_replies(self) -> None:
        """Wait until every ReadyForQuery the server owes for relayed messages has been relayed,
        or the server starts COPY FROM STDIN (it then waits for the client's input, which the
        caller must let through: ``copy_in`` is True)."""
        while self.pending_ready and self.server is not None and not self.server.closed and not self.copy_in:
            self._drained = asyncio.get_running_loop().create_future()
            try:
                await self._drained
            finally:
                self._drained = None

    def _maybe_give_back(self) -> None:
        """In transaction/statement pooling, return the server once the client is idle between transactions."""
        if (self.pool_mode == "session" or self.server is None or self.pending_ready or self._busy is not None
                or self.tx_status != b"I" or self._last_type in _EXTENDED or self.closed or self._passthrough):
            return
        if self.server.input_ended:  # the client's input ended: the connection is not reused
            self._give_back()
            return
        if self.pins:
            if self._pins_dirty and "LOAD" not in self.pins and _UNANALYSED not in self.pins:
                self._busy = asyncio.get_running_loop().create_task(self._verify_pins())
            return
        if self.touched_gucs or self.reset_all_pending:
            self._busy = asyncio.get_running_loop().create_task(self._read_back_then_give_back())
            return
        self._give_back()

    async def _ask_server(self, server: ServerConnection, question) -> tuple[bool, object]:
        """Run ``question`` (a coroutine using ``server`` in collect mode) between two transactions.
        Returns (True, its result); on failure the client is told and the server connection, whose
        state is then unknown, is not reused: returns (False, None)."""
        try:
            server.detach()
            return True, await question
        except ServerError:
            self._busy = None
            self.server_lost(server)
        except Exception:
            log.exception("event=session_check_failed client=%s", self.peer)
            self._busy = None
            server.close()
            self.server_lost(server)
        return False, None

    async def _verify_pins(self) -> None:
        """After a transaction that took or released pinned state, ask the server whether any is
        left (a failed pg_try_advisory_lock takes none; CLOSE of the last cursor releases it)."""
        server = self.server
        self._pins_dirty = False
        try:
            ok, pinned = await self._ask_server(server, txn.still_pinned(self, server))
        except asyncio.CancelledError:
            return
        if not ok:
            return
        if self.server is server and not server.closed:
            server.attach(self)
        self._busy = None
        if not pinned:
            log.info("event=unpinned client=%s user=%s", self.peer, self.user)
            self.pins.clear()
            self._maybe_give_back()
        self._resume_relay()

    async def _read_back_then_give_back(self) -> None:
        server = self.server
        try:
            ok, _ = await self._ask_server(server, txn.read_back(self, server))
        except asyncio.CancelledError:
            return
        if not ok:
            return
        self._busy = None
        if self.server is server:
            self._give_back()
        self._resume_relay()

    def _give_back(self) -> None:
        server, self.server = self.server, None
        if server is not None and self.pool is not None:
            self.pool.release(server, True, reset=False)

    def _start_intercept(self) -> None:
        """Hand the message at the head of the buffer to the interceptor; pause relaying until done."""
        self._busy = asyncio.get_running_loop().create_task(self._run_intercept())

    async def _run_intercept(self) -> None:
        self._intercepting = True
        try:
            if self.server is None and self.pool_mode != "session" and not self._lease_now():
                await self._lease()
            await self.wait_replies()
            if not self.copy_in:  # else a COPY pipelined before: the copy reads the text, as is
                await self.app.interceptor.handle(self)
        except asyncio.CancelledError:
            return
        except ConnectionError:
            pass  # the client left while the interceptor waited for its next message
        except Exception:
            log.exception("event=intercept_error client=%s", self.peer)
            self.fatal(sqlstate.INTERNAL_ERROR, "internal proxy error in iasql_* interception")
            return
        finally:
            self._intercepting = False
            self._busy = None
            if self.closed:  # the client left meanwhile: its text has run to the end
                self._release_server()
                if self.key is not None and self.app.keys.get(self.key) is self:
                    del self.app.keys[self.key]
        if self.closed:
            return
        self._maybe_give_back()
        self._resume_relay()

    # -- what the interceptors use (proxy.intercept) ---------------------------------------------
    def forward_head_message(self) -> None:
        """Send the message at the head of the input buffer to the server unchanged."""
        _, length = _HDR.unpack_from(self._inbuf, 0)
        t = self._inbuf[0]
        self._flush(self._inbuf, 1 + length, 1 if t in (_Q, _S, _F) else 0, t)

    def has_input(self) -> bool:
        """True when client bytes wait in the input buffer."""
        return bool(self._inbuf)

    def peek_type(self) -> int:
        """The type byte of the message at the head of the input (the buffer must not be empty)."""
        return self._inbuf[0]

    def head_size(self) -> int:
        """The size in bytes (type, length and body) of the complete message at the head of the input."""
        return 1 + _HDR.unpack_from(self._inbuf, 0)[1]

    def drop_head_message(self) -> None:
        """Remove the complete message at the head of the input without copying it."""
        self._verdict = None
        del self._inbuf[:self.head_size()]

    def take_message(self) -> bytes:
        """Remove the complete message at the head of the input and return it whole (type,
        length and body); the relay has already checked that it is complete."""
        self._verdict = None
        _, length = _HDR.unpack_from(self._inbuf, 0)
        raw = bytes(self._inbuf[: 1 + length])
        del self._inbuf[: 1 + length]
        return raw

    def forward_query(self, raw: bytes) -> None:
        """Send the Query message ``raw`` to the server as the client's own: its ReadyForQuery is
        relayed like any other."""
        self.server.send(raw)
        self.pending_ready += 1
        self._last_type = _Q

    def _terminate(self) -> None:
        self._inbuf.clear()
        self.close()

    # -- callbacks from the server connection -------------------------------------------------
    def copy_in_started(self) -> None:
        """CopyInResponse relayed: look at every client message until CopyDone/CopyFail."""
        early = self._copy_done_early
        if early:
            # the COPY is the oldest message still owing a ReadyForQuery (a Query, or the Sync
            # behind the Execute that started it): a CopyDone/CopyFail sent before it was ignored
            # by Postgres; one sent after it (or after that Execute) has ended it already
            number = self.queries - self.pending_ready + 1
            while early and (early[0][0] < number - 1 or (early[0][0] == number - 1 and not early[0][1])):
                early.pop(0)
            if early:
                early.pop(0)
                return
        if not self.copy_in:
            if self._last_type == _S and self.pending_ready:
                # COPY started by Execute with a Sync pipelined behind it: the server read that
                # Sync in copy-in mode and ignored it, so it owes no ReadyForQuery for it
                self.pending_ready -= 1
            self.copy_in = True
            self._special_before_copy = self.special
            self.special = _SPECIAL_SKIP
            d = self._drained
            if d is not None and not d.done():  # a task waiting for replies: the server waits for input now
                d.set_result(None)
            if self._eof:  # the client's input ended before the copy did: it never will
                self.close()

    def server_parameter(self, name: str, value: str) -> None:
        """ParameterStatus seen in relayed output (already forwarded)."""

    def server_lost(self, server: ServerConnection) -> None:
        """The server link died (or failed in a way that leaves its state unknown): tell the
        client as Postgres clients expect, then close. A link that is still open is dropped and
        taken out of its pool, so it is never counted active without a client, nor reused."""
        if not server.closed:
            server.abort()
            if server.pool is not None:
                server.pool.release(server, False)
        if server is self.server:
            self.server = None
            if not self.closed:
                # Postgres's own FATAL already says why; after end_input its end is expected
                if server.at_boundary and not server.sent_fatal and not server.input_ended:
                    self.write(B.error(sqlstate.CONNECTION_FAILURE, "server closed the connection unexpectedly",
                                       severity="FATAL",
                                       detail="The server connection ended before the request completed."))
                self.close()

    def _release_server(self) -> None:
        server, self.server = self.server, None
        if server is None:
            return
        clean = (self.pending_ready == 0 and self._last_type not in _EXTENDED and self._busy is None
                 and not self._passthrough and not self.copy_in and server.at_boundary
                 and server.status == b"I")
        # Not clean (replies still owed, a batch, COPY or message half sent, a transaction open): the
        # connection is closed, not cancelled. Postgres then treats what it already received as
        # it would for a client that went away itself: the running statement finishes (an
        # autocommit write commits), an open transaction rolls back, and it stops once a write
        # to the vanished peer fails. (PgBouncer also just closes the server connection.) Until
        # it exits, the departed client's cancel key still reaches it.
        if not clean and (self.pending_ready or self._busy is not None):
            self.app.keep_cancel_key(self.key, server)
        if not clean:
            # dropped at once, without Terminate: over TLS a graceful close would go on reading
            # (and discarding) the server's output, so Postgres would never see its client gone
            server.abort()
        if self.pool is None:
            server.close()
        elif self.pool_mode == "session":
            self.pool.release(server, clean)
        else:
            # a pinned connection holds state no later client may see: it is closed, not reused;
            # so does one whose session parameters the client changed and the proxy has not read
            # back yet (a SET followed at once by Terminate: server.gucs would not say it), or
            # one that skips to Sync after an error (issue 16's fuzz campaign found both)
            self.pool.release(server, clean and not self.pins and not self.touched_gucs
                              and not self.reset_all_pending and not server.skipping, reset=False)


_WELCOME_BYTES: dict[int, tuple[dict[str, str], bytes]] = {}
#: Start-up parameter sets seen, each kept as one frozenset object, so that ``Pool.take_idle``
#: recognises a connection opened for the same parameters by identity (no set comparison).
_STARTUP_KEYS: dict[frozenset, frozenset] = {}


def _parameter_status(values: dict[str, str]) -> bytes:
    """ParameterStatus messages for ``values``, encoded once per dict object (pools keep the dict
    of each start-up parameter set, so a login reuses the bytes of the previous one)."""
    hit = _WELCOME_BYTES.get(id(values))
    if hit is not None and hit[0] is values:
        return hit[1]
    data = b"".join(B.ParameterStatus(k, v).encode() for k, v in values.items())
    if len(_WELCOME_BYTES) > 1000:
        _WELCOME_BYTES.clear()
    _WELCOME_BYTES[id(values)] = (values, data)
    return data


def _signature(buf: bytearray, start: int, end: int) -> tuple:
    """What identifies the message ``buf[start:end]`` for ``ClientSession._verdict``: its place and
    its first and last 64 bytes (the verdict is also dropped whenever the input's head is consumed)."""
    return start, end, bytes(buf[start:start + 64]), bytes(buf[max(start, end - 64):end])


def _analyze_large(text: str, scs: bool) -> tuple:
    """``analyze`` of a large text and whether it is one statement (asked only when it deallocates
    or discards: ``note_text_state``), for ``_classify_large``'s worker thread."""
    fx = analyze(text, standard_conforming_strings=scs)
    one = (fx.discard_all or bool(fx.deallocate)) and len(split(text) or ()) == 1
    return fx, one


def _header_error(buf: bytes | bytearray, pos: int, limit: int) -> ProtocolViolation | None:
    """What Postgres (SocketBackend, pq_getmessage) does with the message header at
    ``buf[pos:]`` after login, as far as it has arrived (1-5 bytes are enough): the error for an
    unknown type (at once, as Postgres reads no further), for a length below 4, above
    ``limit`` (``max_packet_size``) or, for a type Postgres limits to PQ_SMALL_MESSAGE_LIMIT,
    above 10,000 bytes; None when the message may follow."""
    kind = _MESSAGE_LIMITS[buf[pos]] if pos < len(buf) else _LARGE
    if not kind:
        return ProtocolViolation(f"invalid frontend message type {buf[pos]}")
    if len(buf) - pos < 5:
        return None
    _, length = _HDR.unpack_from(buf, pos)
    if length < 4 or (kind == _SMALL and length > _PQ_SMALL_MESSAGE_LIMIT):
        return ProtocolViolation(f"invalid message length {length}")
    if length > limit:
        return ProtocolViolation(f"message of {length} bytes exceeds max_packet_size ({limit} bytes)")
    return None


def _text_span(t: int, buf: bytes | bytearray, pos: int, end: int) -> tuple[int, int]:
    """Offsets of the SQL text in the Query or Parse message at ``buf[pos:end]`` (without its NUL);
    for a malformed message, the whole payload (the server will reject it)."""
    if t == _Q:
        return pos + 5, end - 1
    a = buf.find(b"\0", pos + 5, end) + 1
    b = buf.find(b"\0", a, end) if a else -1
    return (a, b) if b >= 0 else (pos + 5, end)


def _as_fatal(fields: B.ErrorResponse | None) -> B.ErrorResponse | None:
    return fields
