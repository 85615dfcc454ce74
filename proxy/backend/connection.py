"""One connection from the proxy to a real PostgreSQL server.

It has two modes. In *collect* mode (login, reset, and traffic the proxy itself drives) every
complete message is queued for ``recv()``; past ``INBOX_HIGH_WATER`` queued bytes the
connection stops reading its socket until ``recv`` has taken the queue down to
``INBOX_LOW_WATER``. In *relay* mode (a client's ordinary traffic) bytes go straight to the
attached client's transport as they arrive; a ``RelayScanner`` follows message boundaries only to
see ReadyForQuery (transaction status) and ParameterStatus. Rows are never decoded. Protocol
follows the PostgreSQL protocol chapter, "Start-up" and "Message Flow".
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
import ssl
import time
from typing import TYPE_CHECKING, Callable, Protocol

from proxy.auth import AuthFailed, ScramClientExchange, Secret, md5_response, md5_secret
from proxy.relay.core import ServerCore
from proxy.wire import backend as B
from proxy.wire import frontend as F
from proxy.wire import sqlstate
from proxy.wire.codec import ProtocolViolation, frame
from proxy.wire.framing import FrameBuffer, RelayScanner

if TYPE_CHECKING:
    from proxy.config import DatabaseTarget

log = logging.getLogger("iasql_proxy.server")

_Z, _S, _E, _A = ord("Z"), ord("S"), ord("E"), ord("A")
#: Relayed messages the proxy looks at: ReadyForQuery, ParameterStatus, ErrorResponse (to see FATAL).
_G = ord("G")
_RELAY_WATCH = frozenset((_Z, _S, _E, _G))
#: Messages the server sends on its own, between requests (protocol chapter, "Asynchronous
#: Operations"): NotificationResponse, NoticeResponse, ParameterStatus.
_ASYNC = frozenset((_A, ord("N"), _S))
_BYTE = tuple(bytes((i,)) for i in range(256))
#: Collect-mode flow control (bytes of complete messages queued for ``recv``): above the high
#: mark the connection stops reading from its socket (``transport.pause_reading``), so the peer
#: waits (a /run link whose WebSocket client reads slowly holds back its own results); it reads
#: again once ``recv`` has taken the queue down to the low mark. The queue can exceed the high
#: mark by one read (and one message: a message is never cut).
INBOX_HIGH_WATER = 1024 * 1024
INBOX_LOW_WATER = 256 * 1024


class ServerError(Exception):
    """The server refused or failed the login or the link. ``fields`` is its ErrorResponse, if any.

    ``sqlstate``/``message`` describe it for the client (08006 connection_failure when the server
    sent nothing). ``reason``: PgBouncer's short word for a server that could not be reached
    (``connect failed``, ``connect timeout``), kept by the pool for ``server_login_retry``.
    """

    def __init__(self, message: str, sqlstate_code: str = sqlstate.CONNECTION_FAILURE,
                 fields: B.ErrorResponse | None = None, reason: str | None = None):
        super().__init__(message)
        self.message = message
        self.sqlstate = sqlstate_code
        self.fields = fields
        self.reason = reason


class RelayClient(Protocol):
    """What a server connection needs from the client session it relays to."""

    transport: asyncio.Transport
    recorder: object | None

    def server_ready(self, status: bytes) -> None: ...

    def server_lost(self, server: "ServerConnection") -> None: ...

    def server_parameter(self, name: str, value: str) -> None: ...

    def copy_in_started(self) -> None: ...


class ServerConnection(ServerCore, asyncio.Protocol):
    """An asyncio Protocol for one server link. Create with ``await ServerConnection.open(...)``.

    Attributes: ``params`` (dict of the server's current ParameterStatus values),
    ``backend_key`` (its BackendKeyData), ``status`` (last ReadyForQuery status: b'I', b'T', b'E'),
    ``startup_key`` (the start-up parameters it was opened with, used to match pooled reuse),
    ``created``/``last_used`` (monotonic seconds), ``inbox_bytes`` (bytes of the complete
    messages collected and not yet taken by ``recv``: at most ``INBOX_HIGH_WATER`` plus one read
    and one message while the consumer lags).
    """

    def __init__(self, target: "DatabaseTarget", startup_key: frozenset):
        self.target = target
        self.startup_key = startup_key
        self.transport: asyncio.Transport | None = None
        self.params: dict[str, str] = {}
        self.backend_key: B.BackendKeyData | None = None
        self.status = b"I"
        self.client: RelayClient | None = None
        self.closed = False
        self.broken = False
        self.created = time.monotonic()
        self.last_used = self.created
        self.pool = None  # set by the pool that owns it
        self.gucs: dict[str, str] = {}   # session parameters applied for transaction pooling
        self.prepared: dict[str, tuple] = {}  # server-side statement name -> (text, types) it holds
        self.custom_seen: set[str] = set()  # custom (dotted) GUCs ever set here: placeholders stay
        self.garbage: set[str] = set()  # statements it holds for clients that left: closed before reuse
        self._frames = FrameBuffer()
        self._inbox: collections.deque = collections.deque()
        #: bytes of the complete messages in ``_inbox`` (type byte, length word and payload)
        self.inbox_bytes = 0
        #: collect mode paused the transport's reading (``INBOX_HIGH_WATER``); only collect mode
        #: resumes what it paused (relay mode's own pause is the client session's)
        self._inbox_paused = False
        self._waiter: asyncio.Future | None = None
        self._scanner = RelayScanner(_RELAY_WATCH, self._on_relay_message)
        self._raw_waiter: asyncio.Future | None = None
        self._raw = bytearray()
        self._raw_mode = False
        self._paused_client = False
        self.sent_fatal = False  # a FATAL/PANIC ErrorResponse was relayed (the server is ending the session)
        self.input_ended = False  # end_input ran: the server ends the connection after its replies
        #: an ErrorResponse was relayed and no ReadyForQuery since: the server skips extended
        #: messages until Sync (protocol chapter, "Extended Query")
        self.skipping = False

    # -- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:  # small protocol messages must not wait for Nagle's algorithm
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    def _collect(self, data: bytes) -> None:
        """Server output while no client is attached (``ServerCore.data_received`` relays the
        rest): kept whole in raw mode, else cut into frames for ``recv``."""
        if self._raw_mode:
            self._raw += data
            if self._raw_waiter is not None and not self._raw_waiter.done():
                self._raw_waiter.set_result(None)
            return
        frames = self._frames
        held = len(frames)
        frames.feed(data)
        inbox = self._inbox
        try:
            for message in frames.frames():
                inbox.append(message)
        except ProtocolViolation as e:
            inbox.append(e)
            self.abort()
        # complete messages only (a partial one stays in ``_frames``): so a paused connection
        # always has something queued for ``recv``, whose taking it resumes reading
        self.inbox_bytes += held + len(data) - len(frames)
        if self.inbox_bytes > INBOX_HIGH_WATER and not self._inbox_paused and inbox:
            self._pause_collect()
        self._wake()

    def _pause_collect(self) -> None:
        """Stop reading from the socket (collect mode's queue passed ``INBOX_HIGH_WATER``)."""
        transport = self.transport
        if transport is not None and not self.closed and not transport.is_closing():
            try:
                transport.pause_reading()
            except (RuntimeError, NotImplementedError):  # a transport that cannot pause: no limit
                return
            self._inbox_paused = True

    def _resume_collect(self) -> None:
        """Read from the socket again after ``_pause_collect`` (no-op when it did not pause)."""
        if not self._inbox_paused:
            return
        self._inbox_paused = False
        transport = self.transport
        if transport is not None and not self.closed and not transport.is_closing():
            try:
                transport.resume_reading()
            except (RuntimeError, NotImplementedError):
                pass

    def _took(self, item) -> None:
        """Account for ``item`` taken off the inbox; read again below ``INBOX_LOW_WATER``."""
        if not isinstance(item, Exception):
            self.inbox_bytes -= 5 + len(item[1])
        if self._inbox_paused and self.inbox_bytes <= INBOX_LOW_WATER:
            self._resume_collect()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._inbox.append(ServerError("server closed the connection unexpectedly"))
        self._wake()
        if self._raw_waiter is not None and not self._raw_waiter.done():
            self._raw_waiter.set_result(None)
        client = self.client
        if client is not None:
            self.client = None
            client.server_lost(self)
        if self.pool is not None:
            self.pool.forget(self)

    def pause_writing(self) -> None:
        client = self.client
        if client is not None:
            client.transport.pause_reading()
            self._paused_client = True

    def resume_writing(self) -> None:
        client = self.client
        if client is not None and self._paused_client:
            client.transport.resume_reading()
        self._paused_client = False

    # -- relay mode ---------------------------------------------------------------------------
    def _on_relay_message(self, t: int, payload: bytes) -> None:
        if t == _Z:
            self.status = _BYTE[payload[0]] if payload else b""
            self.skipping = False
            client = self.client
            if client is not None:
                client.server_ready(self.status)
        elif t == _G:  # CopyInResponse: until CopyDone/CopyFail the server ignores Sync
            client = self.client
            if client is not None:
                client.copy_in_started()
        elif t == _E:
            try:
                err = B.ErrorResponse.decode(payload)
            except ProtocolViolation:
                return
            if (err.get("V") or err.get("S")) in ("FATAL", "PANIC"):
                self.sent_fatal = True
            else:
                self.skipping = True
        else:  # ParameterStatus
            try:
                msg = B.ParameterStatus.decode(payload)
            except ProtocolViolation:
                return
            self.params[msg.name] = msg.value
            if self.client is not None:
                self.client.server_parameter(msg.name, msg.value)

    def attach(self, client: RelayClient) -> None:
        """Start relaying server output to ``client`` (the connection must be idle at a boundary).
        ``last_used`` is set when the connection is given back (``detach``, ``Pool.give_back``).

        The asynchronous messages the server sent after the proxy's last collect-mode reply and
        before this call (NotificationResponse for a LISTEN of the client's, NoticeResponse,
        ParameterStatus) are the client's: they are relayed first, in order (anything else stays
        for ``recv``). The transaction-pooling fast path attaches inline and never has any: it
        takes no connection whose inbox holds something."""
        self.client = client
        inbox = self._inbox
        while inbox and not isinstance(inbox[0], Exception) and inbox[0][0] in _ASYNC:
            t, payload = inbox.popleft()
            self.inbox_bytes -= 5 + len(payload)
            client.write(frame(bytes((t,)), payload))
            if t == _S:
                self._on_relay_message(t, payload)
        if self._inbox_paused:  # relayed output does not queue here: relay mode's own flow control
            self._resume_collect()

    def detach(self) -> None:
        """Stop relaying; later output is collected for ``recv()``."""
        self.client = None
        self.last_used = time.monotonic()
        if self._paused_client:
            self._paused_client = False

    def clear_inbox(self) -> None:
        """Drop messages that arrived while the connection sat idle in the pool (e.g. notices)."""
        while self._inbox and not isinstance(self._inbox[0], Exception):
            t, payload = self._inbox.popleft()
            self.inbox_bytes -= 5 + len(payload)
            if t == _S:
                ps = B.ParameterStatus.decode(payload)
                self.params[ps.name] = ps.value
        if self._inbox_paused and self.inbox_bytes <= INBOX_LOW_WATER:
            self._resume_collect()

    @property
    def at_boundary(self) -> bool:
        """True when relayed output ended exactly at a message boundary."""
        return self._scanner.at_boundary and not len(self._frames)

    # -- collect mode -------------------------------------------------------------------------
    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def recv(self) -> tuple[int, bytes]:
        """Next complete ``(type, payload)``: ``type`` the message's type byte as an int,
        ``payload`` its body without type and length. Raises ServerError when the link is gone
        (and the ProtocolViolation that made the connection abort, in its place in the stream).

        Flow control: while more than ``INBOX_HIGH_WATER`` bytes wait here the connection reads
        nothing more from its socket; taking them down to ``INBOX_LOW_WATER`` bytes resumes it. A
        consumer that keeps calling ``recv`` therefore never waits on a paused connection, and a
        closed peer is still seen (as ServerError) once the queue before it is taken.
        """
        while not self._inbox:
            if self.closed:
                raise ServerError("server closed the connection unexpectedly")
            self._resume_collect()  # nothing queued: never wait on a paused socket
            fut = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await fut
            finally:
                # a reader cancelled late (a finished batch) must not clear the next owner's waiter
                if self._waiter is fut:
                    self._waiter = None
        item = self._inbox.popleft()
        self._took(item)
        if isinstance(item, Exception):
            raise item
        if item[0] == _Z:
            self.skipping = False
        return item

    def send(self, data: bytes) -> None:
        """Write bytes to the server (no-op once closed, or after ``end_input``)."""
        if self.transport is not None and not self.closed and not self.input_ended:
            self.transport.write(data)

    async def query(self, sql: str, deliver: Callable[[bytes], None] | None = None) -> list[tuple[int, bytes]]:
        """Run ``sql`` with the simple protocol in collect mode; return the messages up to ReadyForQuery.

        ``deliver``: called with each NotificationResponse (whole message bytes) that arrives
        meanwhile: it is for the client whose connection this is, not for the proxy's query.
        Raises ServerError when the server reports an error (with its fields) or the link fails.
        """
        self.send(F.Query(sql).encode())
        out = []
        err = None
        while True:
            t, payload = await self.recv()
            if t == _A:
                if deliver is not None:
                    deliver(frame(b"A", payload))
                continue
            if t == ord("E"):
                err = B.ErrorResponse.decode(payload)
            elif t == _Z:
                self.status = payload[:1]
                break
            elif t == _S:
                ps = B.ParameterStatus.decode(payload)
                self.params[ps.name] = ps.value
            out.append((t, payload))
        if err is not None:
            raise ServerError(err.message or "error", err.sqlstate or sqlstate.INTERNAL_ERROR, err)
        return out

    async def extended_query(self, sql: str, params: list[str | None],
                             deliver: Callable[[bytes], None] | None = None) -> list[tuple[bytes | None, ...]]:
        """Run ``sql`` with text parameters ($1...) via Parse/Bind/Execute/Sync; return the DataRow values.

        ``deliver``: as for ``query``. Raises ServerError with the server's fields on an error.
        """
        self.send(F.Parse("", sql).encode()
                  + F.Bind("", "", (), tuple(None if p is None else p.encode() for p in params), ()).encode()
                  + F.Execute("", 0).encode() + F.Sync().encode())
        rows: list[tuple[bytes | None, ...]] = []
        err = None
        while True:
            t, payload = await self.recv()
            if t == _A:
                if deliver is not None:
                    deliver(frame(b"A", payload))
            elif t == ord("D"):
                rows.append(B.DataRow.decode(payload).values)
            elif t == ord("E"):
                err = B.ErrorResponse.decode(payload)
            elif t == _Z:
                self.status = payload[:1]
                break
        if err is not None:
            raise ServerError(err.message or "error", err.sqlstate or sqlstate.INTERNAL_ERROR, err)
        return rows

    def end_input(self) -> None:
        """The client's input ended (it half-closed, or went away) while replies are owed: pass
        that on, so that Postgres answers what it received and then ends the connection, as it
        does for a client of its own. Plain TCP: a half-close (Postgres reads the end of its
        input); over TLS, which cannot half-close, Terminate. Never reused afterwards."""
        self.input_ended = True
        self.broken = True
        transport = self.transport
        if transport is None or self.closed or transport.is_closing():
            return
        try:
            if transport.can_write_eof():
                transport.write_eof()
            else:
                transport.write(F.Terminate().encode())
        except (OSError, RuntimeError, NotImplementedError):
            self.abort()

    def abort(self) -> None:
        """Close the link at once; the pool will not reuse it."""
        self.broken = True
        if self.transport is not None and not self.closed:
            self.transport.abort()

    def close(self) -> None:
        """Send Terminate and close (nothing more once ``abort`` ran)."""
        self.broken = True
        if self.transport is not None and not self.closed and not self.transport.is_closing():
            try:
                if not self.input_ended:  # after end_input nothing more may be written
                    self.transport.write(F.Terminate().encode())
            except (OSError, RuntimeError):
                pass
            finally:
                self.transport.close()

    # -- opening ------------------------------------------------------------------------------
    async def _read_raw(self, n: int, timeout: float) -> bytes:
        while len(self._raw) < n:
            if self.closed:
                raise ServerError("server closed the connection during TLS negotiation")
            self._raw_waiter = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(self._raw_waiter, timeout)
            finally:
                self._raw_waiter = None
        data = bytes(self._raw[:n])
        del self._raw[:n]
        return data

    @classmethod
    async def open(cls, target: "DatabaseTarget", user: str, database: str, params: dict[str, str], *,
                   tls_mode: str, tls_context: ssl.SSLContext | None, credentials: "Credentials",
                   timeout: float = 15.0) -> "ServerConnection":
        """Connect, negotiate TLS per ``tls_mode`` (disable/allow/prefer/require/verify-ca/verify-full),
        send StartupMessage(user, database, params), authenticate and wait for ReadyForQuery, all
        within ``timeout`` seconds (``server_connect_timeout``; 0: no limit).

        Returns the ready connection in collect mode. Raises ServerError (08006, or the server's own
        SQLSTATE such as 28P01 or 3D000; ``reason`` ``connect timeout`` when the time ran out,
        ``connect failed`` when the server could not be reached) and AuthFailed when credentials
        are missing.
        """
        try:
            return await asyncio.wait_for(
                cls._open(target, user, database, params, tls_mode=tls_mode, tls_context=tls_context,
                          credentials=credentials), timeout if timeout and timeout > 0 else None)
        except asyncio.TimeoutError:
            raise ServerError(f"could not connect to server {target.host}:{target.port}: connect timeout "
                              f"(server_connect_timeout)", reason="connect timeout") from None

    @classmethod
    async def _open(cls, target: "DatabaseTarget", user: str, database: str, params: dict[str, str], *,
                    tls_mode: str, tls_context: ssl.SSLContext | None, credentials: "Credentials") -> "ServerConnection":
        loop = asyncio.get_running_loop()
        key = frozenset(params.items())
        timeout = None  # open() bounds the whole
        try:
            transport, conn = await loop.create_connection(lambda: cls(target, key), target.host, target.port)
        except OSError as e:
            raise ServerError(f"could not connect to server {target.host}:{target.port}: {e}",
                              reason="connect failed") from e
        try:
            if tls_mode not in ("disable", "allow"):
                conn._raw_mode = True
                transport.write(F.SSLRequest().encode())
                answer = await conn._read_raw(1, timeout)
                conn._raw_mode = False
                if answer == b"S":
                    if conn._raw:
                        raise ServerError("server sent unencrypted data after SSL response", sqlstate.PROTOCOL_VIOLATION)
                    ctx = tls_context or ssl.create_default_context()
                    new_transport = await asyncio.wait_for(loop.start_tls(
                        transport, conn, ctx,
                        server_hostname=target.host if tls_mode == "verify-full" else None), timeout)
                    conn.transport = new_transport
                elif tls_mode in ("require", "verify-ca", "verify-full"):
                    raise ServerError("server does not support SSL, but SSL was required")
            conn.send(F.StartupMessage(F.PROTOCOL_3_0, {"user": user, "database": database, **params}).encode())
            await conn._login(user, credentials)
        except BaseException:
            conn.abort()
            raise
        return conn

    def _server_binding(self) -> bytes | None:
        """The ``tls-server-end-point`` channel binding data of the server's certificate (RFC 5929),
        or None when the connection is not TLS or the server sent no certificate."""
        obj = self.transport.get_extra_info("ssl_object") if self.transport is not None else None
        der = obj.getpeercert(binary_form=True) if obj is not None else None
        if not der:
            return None
        from proxy.tls import server_end_point

        return server_end_point(der)

    async def _login(self, user: str, creds: "Credentials") -> None:
        scram: ScramClientExchange | None = None
        while True:
            t, payload = await self.recv()
            if t == ord("R"):
                auth = B.Authentication.decode(payload)
                if auth.code == B.AUTH_OK:
                    continue
                if auth.code == B.AUTH_CLEARTEXT:
                    if creds.password is None:
                        raise AuthFailed("server asks for a clear-text password and none is configured")
                    self.send(F.PasswordMessage.from_password(creds.password).encode())
                elif auth.code == B.AUTH_MD5:
                    stored = creds.md5_stored(user)
                    self.send(F.PasswordMessage.from_password(md5_response(stored, auth.data[:4])).encode())
                elif auth.code == B.AUTH_SASL:
                    offered = auth.mechanisms()
                    binding = None
                    if "SCRAM-SHA-256-PLUS" in offered:  # over TLS: bind the login to the channel
                        binding = self._server_binding()
                    if binding is None and "SCRAM-SHA-256" not in offered:
                        raise ServerError("server offers no supported SASL mechanism")
                    scram = ScramClientExchange(user, password=creds.password, client_key=creds.client_key,
                                                secret=creds.secret, binding=binding)
                    self.send(F.SASLInitialResponse(scram.mechanism, scram.first().encode()).encode())
                elif auth.code == B.AUTH_SASL_CONTINUE and scram is not None:
                    self.send(F.SASLResponse(scram.final(auth.data.decode()).encode()).encode())
                elif auth.code == B.AUTH_SASL_FINAL and scram is not None:
                    scram.verify(auth.data.decode())
                else:
                    raise ServerError(f"unsupported authentication request {auth.code} from server")
            elif t == ord("E"):
                err = B.ErrorResponse.decode(payload)
                raise ServerError(err.message or "server error", err.sqlstate or sqlstate.CONNECTION_FAILURE, err)
            elif t == _S:
                ps = B.ParameterStatus.decode(payload)
                self.params[ps.name] = ps.value
            elif t == ord("K"):
                self.backend_key = B.BackendKeyData.decode(payload)
            elif t == ord("v"):
                continue  # NegotiateProtocolVersion: we only ask for 3.0
            elif t == ord("N"):
                continue
            elif t == _Z:
                self.status = payload[:1]
                return
            else:
                raise ServerError(f"unexpected message {chr(t)!r} during server login", sqlstate.PROTOCOL_VIOLATION)


class Credentials:
    """What the proxy can prove to a server for one user: a ``password``, an md5 ``secret``, or a
    SCRAM ``client_key`` with the matching verifier ``secret`` (pass-through)."""

    def __init__(self, password: str | None = None, secret: Secret | None = None, client_key: bytes | None = None):
        self.password = password
        self.secret = secret
        self.client_key = client_key

    def md5_stored(self, user: str) -> str:
        """The md5 stored form for AuthenticationMD5Password. Raises AuthFailed when unknown."""
        if self.password is not None:
            return md5_secret(user, self.password)
        if self.secret is not None and self.secret.kind == "md5":
            return self.secret.value
        raise AuthFailed("server asks for md5 and the proxy has neither the password nor its md5 hash")


async def send_cancel(target: "DatabaseTarget", key: B.BackendKeyData, timeout: float = 10.0) -> None:
    """Open a new connection to ``target`` and send CancelRequest for ``key`` (Postgres answers
    nothing, then closes); given up after ``timeout`` seconds in all (``cancel_wait_timeout``; 0:
    no limit), as PgBouncer gives up a cancel request it could not forward."""
    limit = timeout if timeout and timeout > 0 else None
    try:
        await asyncio.wait_for(_send_cancel(target, key), limit)
    except asyncio.TimeoutError:
        log.info("event=cancel_wait_timeout host=%s port=%s", target.host, target.port)


async def _send_cancel(target: "DatabaseTarget", key: B.BackendKeyData) -> None:
    try:
        reader, writer = await asyncio.open_connection(target.host, target.port)
    except OSError:
        return
    try:
        writer.write(F.CancelRequest(key.process_id, key.secret_key).encode())
        await writer.drain()
        await reader.read(1)
    except OSError:
        pass
    finally:
        writer.close()

