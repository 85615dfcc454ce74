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
Parse whose bytes contain ``iasql_`` (case-insensitive) is handed to the interceptor, if one is
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
from proxy.router.session_state import analyze, may_change_state
from proxy.wire import backend as B
from proxy.wire import sqlstate
from proxy.wire.codec import ProtocolViolation
from proxy.wire.framing import startup_frame

if TYPE_CHECKING:
    from proxy.server import ProxyApp

log = logging.getLogger("iasql_proxy.client")

_HDR = struct.Struct("!Bi")
_IASQL = re.compile(rb"[iI][aA][sS][qQ][lL]_")
_Q, _P, _X, _S, _F, _H = ord("Q"), ord("P"), ord("X"), ord("S"), ord("F"), ord("H")
_BATCH = frozenset(b"PBDEC")  # messages that continue an extended batch (no reply owed at once)
_COPY_DONE, _COPY_FAIL, _COPY_DATA = ord("c"), ord("f"), ord("d")
#: Messages above this size (bytes) other than Query and Parse are streamed to the server as they
#: arrive, so a client cannot make the proxy hold a huge message in memory; Query and Parse are
#: inspected for iasql_ and stay bounded by max_packet_size.
_STREAM_ABOVE = 1 << 20
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
        self._copy_done_early = 0             # CopyDone/CopyFail sent before the CopyInResponse came
        self._passthrough = 0                 # bytes of a large message still to stream to the server
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
        """The client half-closed its side (shutdown SHUT_WR) after its last message. Postgres
        still answers what it received before ending the session, so the write side stays open
        until the replies owed are out (not possible over TLS, which has no half-close)."""
        if self.tls_version is None and self.ready and not self.closed:
            self._eof = True
            self._end_after_eof()
            return True
        return None

    def _end_after_eof(self) -> None:
        """After a half-close: end the session once nothing is owed or being done for the client."""
        if self.pending_ready or self._busy is not None or self.closed:
            return
        self.close()

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
        if self.closed:
            raise ConnectionResetError()
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None
        if self.closed:
            raise ConnectionResetError()

    def _resume_relay(self) -> None:
        """Relay what the client sent while the session was busy (leasing, intercepting, ...).
        Nothing happens while a task still owns the session (``_busy``, e.g. the read-back that
        ``_maybe_give_back`` just started): that task resumes relaying when it ends."""
        if self._busy is not None:
            return
        if self._inbuf and not self.closed:
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
            # client_login_timeout bounds start-up, TLS and authentication; waiting for a server
            # connection after that is bounded by query_wait_timeout, as in PgBouncer
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
                self.server, self.pool = await self.app.lease(self, creds)
                welcome = dict(self.server.params)
                self.pool.welcome[self._startup_key] = welcome
        except PoolTimeout:
            raise ClientError(sqlstate.PROTOCOL_VIOLATION, "query_wait_timeout") from None
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
            if not data:
                return
        buf = self._inbuf
        buf += data
        if self.server is None and self.pool_mode != "session":
            if buf[:1] == b"X":
                self._terminate()
                return
            if len(buf) < 5:
                return
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
                t, length = _HDR.unpack_from(buf, pos)
                if length < 4 or length > limit:
                    raise ProtocolViolation(
                        f"invalid message length {length}" if length < 4
                        else f"message of {length} bytes exceeds max_packet_size ({limit} bytes)")
                kind = _MESSAGE_LIMITS[t]
                if kind != _LARGE:
                    # as Postgres (SocketBackend): an unknown type, or a short message declaring
                    # a long body, ends the session at once instead of waiting for that body
                    if not kind:
                        raise ProtocolViolation(f"invalid frontend message type {t}")
                    if length > _PQ_SMALL_MESSAGE_LIMIT:
                        raise ProtocolViolation(f"invalid message length {length}")
                end = pos + 1 + length
                if end > n:
                    if (length > _STREAM_ABOVE and (t == _COPY_DATA or t not in special)
                            and self.server is not None):
                        # a large message that needs no inspection (COPY data, Bind values...):
                        # forward it as it arrives instead of holding it whole in memory
                        if t == _F:
                            pending += 1
                        self._flush(buf, n, pending, t)
                        self._passthrough = end - n
                        return
                    break
                if t in special:
                    if self.copy_in:
                        if t == _COPY_DONE or t == _COPY_FAIL:
                            self.copy_in = False
                            self.special = special = self._special_before_copy
                        elif t == _S:  # ignored by the server during COPY FROM STDIN: no ReadyForQuery owed
                            last = t
                            pos = end
                            continue
                        last = t
                        pos = end
                        continue
                    if t == _COPY_DONE or t == _COPY_FAIL:
                        # the client pipelined its COPY data behind the COPY command: the copy is
                        # over before the server's CopyInResponse arrives
                        self._copy_done_early += 1
                        last = t
                        pos = end
                        continue
                    if self._skip_to_sync:
                        self._flush(buf, pos, pending, last)
                        pending, last = 0, -1
                        del buf[:end - pos]
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
                    intercept = self.app.interceptor is not None and (
                        special is SPECIAL_EXTENDED or ((t == _Q or t == _P) and _IASQL.search(buf, pos + 5, end)))
                    # state set in a text that also calls iasql_* follows the client (or pins it)
                    # like any other; an intercepted Parse is noted by the extended interceptor
                    if (self.pooled and (t == _Q or (t == _P and not intercept))
                            and may_change_state(buf, *_text_span(t, buf, pos, end))):
                        if not self._note_state(t, buf, pos, end):
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
                            n = len(buf)
                            pos = bstart = 0
                            unnamed_before = None
                            continue
                        if t == _P:  # unnamed, bound later in this read: as on the fast path
                            if unnamed_before is None:
                                unnamed_before = (self._unnamed, self._unnamed_here)
                            self._unnamed = bytes(buf[pos:end])
                            self._unnamed_here = True
                if t == _Q or t == _S or t == _F:
                    pending += 1
                if t != _H:  # Flush neither opens nor closes an extended-protocol batch
                    last = t
                pos = end
                if t not in _BATCH:
                    bstart, blast, unnamed_before = end, last, None
        except ProtocolViolation as e:
            self._flush(buf, pos, pending, last)
            self.fatal(e.sqlstate, e.message)
            return
        self._flush(buf, pos, pending, last)

    def _flush(self, buf: bytearray, pos: int, pending: int, last: int) -> None:
        if not pos:
            return
        server = self.server
        if server is None or server.closed:
            del buf[:pos]
            self.fatal(sqlstate.CONNECTION_FAILURE, "server closed the connection unexpectedly")
            return
        server.send(bytes(buf[:pos]))
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

    def _note_state(self, t: int, buf: bytearray, pos: int, end: int) -> bool:
        """Record what a Query/Parse may change in session state (its text passed
        ``may_change_state``: the callers check). Returns False when statement pooling must refuse
        it (it opens a transaction block)."""
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
            (fx.discard_all or bool(fx.deallocate)) and len(split(text) or ()) == 1))
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

    @property
    def in_queue(self) -> bool:
        """True while the session waits in its pool's queue (``_queue_now``)."""
        return self._busy is QUEUED and not self.closed

    def leave_queue(self) -> None:
        """Stop waiting in the pool's queue and wait the slow way (``Pool.maintain`` calls this
        when the session waited ``reserve_pool_timeout``: ``acquire`` may open a reserve connection)."""
        if self.in_queue:
            self._busy = asyncio.get_running_loop().create_task(self._lease_then_relay())

    def queue_timed_out(self) -> None:
        """No connection came within ``query_wait_timeout``: end the session with PgBouncer's
        error (08P01 ``query_wait_timeout``), as the task path does."""
        if self.in_queue:
            self._busy = None
            self.wait_started = None
            self.fatal(sqlstate.PROTOCOL_VIOLATION, "query_wait_timeout")

    async def _lease_then_relay(self) -> None:
        try:
            await self._lease()
        except asyncio.CancelledError:
            return
        except PoolTimeout:
            self._busy = None
            self.fatal(sqlstate.PROTOCOL_VIOLATION, "query_wait_timeout")
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

    async def _run_named(self) -> None:
        try:
            await self.wait_replies()
            await txn.run_named_batch(self)
        except asyncio.CancelledError:
            return
        finally:
            self._busy = None
        self._maybe_give_back()
        self._resume_relay()

    async def wait_replies(self) -> None:
        """Wait until every ReadyForQuery the server owes for relayed messages has been relayed."""
        while self.pending_ready and self.server is not None and not self.server.closed:
            self._drained = asyncio.get_running_loop().create_future()
            try:
                await self._drained
            finally:
                self._drained = None

    def _maybe_give_back(self) -> None:
        """In transaction/statement pooling, return the server once the client is idle between transactions."""
        if (self.pool_mode == "session" or self.server is None or self.pending_ready or self._busy is not None
                or self.tx_status != b"I" or self._last_type in _EXTENDED or self.closed):
            return
        if self.pins:
            if self._pins_dirty and "LOAD" not in self.pins:
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

    def take_message(self) -> bytes:
        """Remove the complete message at the head of the input and return it whole (type,
        length and body); the relay has already checked that it is complete."""
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
        if self._copy_done_early:
            self._copy_done_early -= 1
            return
        if not self.copy_in:
            if self._last_type == _S and self.pending_ready:
                # COPY started by Execute with a Sync pipelined behind it: the server read that
                # Sync in copy-in mode and ignored it, so it owes no ReadyForQuery for it
                self.pending_ready -= 1
            self.copy_in = True
            self._special_before_copy = self.special
            self.special = _SPECIAL_SKIP

    def server_parameter(self, name: str, value: str) -> None:
        """ParameterStatus seen in relayed output (already forwarded)."""

    def server_lost(self, server: ServerConnection) -> None:
        """The server link died: tell the client as Postgres clients expect, then close."""
        if server is self.server:
            self.server = None
            if not self.closed:
                if server.at_boundary and not server.sent_fatal:  # Postgres's own FATAL already says why
                    self.write(B.error(sqlstate.CONNECTION_FAILURE, "server closed the connection unexpectedly",
                                       severity="FATAL",
                                       detail="The server connection ended before the request completed."))
                self.close()

    def _release_server(self) -> None:
        server, self.server = self.server, None
        if server is None:
            return
        clean = (self.pending_ready == 0 and self._last_type not in _EXTENDED and self._busy is None
                 and server.at_boundary and server.status == b"I")
        # Not clean (replies still owed, a batch or COPY half sent, a transaction open): the
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
            # a pinned connection holds state no later client may see: it is closed, not reused
            self.pool.release(server, clean and not self.pins, reset=False)


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
