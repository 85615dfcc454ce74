"""The queue of replies a server still owes, for traffic the proxy drives itself in collect mode.

PgBouncer keeps such a queue so it can insert its own replies in the right order; this proxy does
the same for extended-protocol batches it rewrites (intercepted ``iasql_*`` statements, renamed
prepared statements in transaction pooling). Each message sent to the server ``expect``s one
reply kind; a reader task takes the server's messages in order, forwards them to the client (or
drops them, for the proxy's own messages), and completes the head entry when its last message
arrives. ``inject`` queues a message the proxy makes up, sent when everything before it has been
answered. An ErrorResponse ends the batch as PostgreSQL does: the server skips to Sync, so the
queue is cleared and ``failed`` set (protocol chapter, "Extended Query").
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from typing import TYPE_CHECKING

from proxy.wire import backend as B
from proxy.wire import frontend as F
from proxy.backend.connection import ServerError
from proxy.wire.codec import ProtocolViolation, frame

if TYPE_CHECKING:
    from proxy.backend.connection import ServerConnection

#: What ends each owed reply: the message types that complete it.
DONE = {
    "parse": frozenset(b"1"), "bind": frozenset(b"2"), "close": frozenset(b"3"),
    "describe": frozenset(b"Tn"), "execute": frozenset(b"CIsGH"),
}
_Z, _E = ord("Z"), ord("E")
_ASYNC = frozenset(b"NAS")
#: The barrier's hidden statement: an empty query with a parameter list no client declares, so
#: its ParameterDescription cannot be taken for the reply to a client's Describe.
_MARK_NAME = "iasql_proxy_barrier"
_MARK_TYPES = (16, 21, 16, 21, 16, 21, 16, 21, 16)
_MARK_SENT = (F.Parse(_MARK_NAME, "", _MARK_TYPES).encode() + F.Describe(b"S", _MARK_NAME).encode()
              + F.Close(b"S", _MARK_NAME).encode())
_MARK_SIG = len(_MARK_TYPES).to_bytes(2, "big") + b"".join(t.to_bytes(4, "big") for t in _MARK_TYPES)


class ServerBatch:
    """One batch on ``server`` (already detached from relay) for ``client`` (has ``write(bytes)``).

    ``expect(kind, forward)``: a message was sent whose reply is ``kind`` (a key of DONE).
    ``inject(data)``: send ``data`` to the client once all earlier replies have been forwarded.
    ``flushed()``: send Flush and wait until nothing is owed. ``sync()``: send Sync and return the
    ReadyForQuery status (not forwarded). ``close()``: stop the reader. Raises ServerError (through
    the awaits) when the link dies.
    """

    def __init__(self, client, server: "ServerConnection"):
        self.client = client
        self.server = server
        self.owed: collections.deque[tuple] = collections.deque()  # (kind, forward, done, failed)
        self.failed = False
        #: server-side names of the client's statements -> the client's own names: an error that
        #: names one (42P05 "already exists") is forwarded with the client's name in it
        self.aliases: dict[str, str] = {}
        self.idle = asyncio.Event()
        self.idle.set()
        self._mark = 0                        # barrier: 1 waiting, 2 its NoData, 3 its CloseComplete
        self._held: bytes | None = None       # a ParseComplete that may be the barrier's
        loop = asyncio.get_running_loop()
        self.ready: asyncio.Future = loop.create_future()
        self.reader = loop.create_task(self._read())
        # the reader's failure is re-raised by the awaits; never log it as "never retrieved"
        self.reader.add_done_callback(lambda t: t.cancelled() or t.exception())

    def expect(self, kind: str, forward: bool | str = True, done=None, failed=None) -> None:
        """Record that the server owes one reply of ``kind``: ``forward`` True sends it to the
        client, False drops it, ``"errors"`` drops it unless it is an ErrorResponse (a message the
        proxy sends on the client's behalf, whose failure is the client's), a list collects its
        messages as (type, payload) for the proxy (an error is dropped). ``done()`` is called
        when the reply has come whole, ``failed()`` when the message ran and failed; neither when
        an earlier error made the server skip it (bookkeeping on the server's answer, not on
        sending)."""
        self.owed.append((kind, forward, done, failed))
        self.idle.clear()

    def inject(self, data: bytes) -> None:
        """Queue ``data`` for the client after everything owed so far."""
        if not self.owed:
            self.client.write(data)
        else:
            self.owed.append(("inject", data, None, None))

    async def barrier(self) -> None:
        """Wait until the server has answered every message relayed to it before this batch began
        (extended messages the fast path forwarded without a Sync, whose replies may still be on
        the way), forwarding those replies to the client. A hidden Parse, Describe and Close of a
        statement with a parameter list no client uses marks the end of them. If one of the
        relayed messages failed, the server skips the marker with the rest up to Sync: ``failed``
        is set and the batch must discard the client's messages until Sync, as PostgreSQL does."""
        self.server.send(_MARK_SENT)
        self.owed.append(("barrier", True, None, None))
        self.idle.clear()
        self._mark = 1
        await self.flushed()

    async def after_relay(self, batch_open: bool) -> None:
        """Start the batch where relaying left the server: ``batch_open`` says the last message
        relayed was an extended one without Sync after it (``barrier`` waits for its replies);
        if one of them failed, ``failed`` is set so the batch discards until Sync."""
        if self.server.skipping:  # an error already relayed: the server ignores all until Sync
            self.failed = True
        elif batch_open:
            await self.barrier()

    def _barrier_reply(self, t: int, payload: bytes) -> bool:
        """The reader's handling of a message while a barrier is owed (see ``barrier``). Returns
        True when the message was consumed here."""
        client = self.client
        if self._mark == 1:
            if t == 0x31:  # ParseComplete: the barrier's if its ParameterDescription follows
                if self._held is not None:
                    client.write(frame(b"1", self._held))
                self._held = payload
                return True
            if t == 0x74 and self._held is not None and payload == _MARK_SIG:
                self._held = None
                self._mark = 2
                return True
            if self._held is not None:
                client.write(frame(b"1", self._held))
                self._held = None
            if t == _E:
                self._mark = 0  # the server skips the barrier: the caller handles the error
            return False
        self._mark += 1  # its NoData, then its CloseComplete
        if self._mark == 4:
            self._mark = 0
            self._pop()
        return True

    def _client_names(self, payload: bytes) -> bytes:
        """An ErrorResponse payload with the server-side statement names it quotes replaced by the
        client's (PostgreSQL quotes a statement name as ``"name"``)."""
        for sname, cname in self.aliases.items():
            quoted = b'"' + sname.encode() + b'"'
            if quoted in payload:
                payload = payload.replace(quoted, b'"' + cname.encode() + b'"')
        return payload

    def fail(self, error: bytes) -> None:
        """Answer the client's current message with ``error`` (an ErrorResponse the proxy made, sent
        after everything owed so far) and fail the server's transaction as PostgreSQL fails it for
        any error (a hidden Execute of a portal that does not exist): the rest of the batch is
        discarded until Sync, which then reports the transaction's true status."""
        self.inject(error)
        self.failed = True
        self.server.send(F.Execute("iasql_proxy_failed").encode())
        self.expect("execute", forward=False)

    def _pop(self) -> None:
        self.owed.popleft()
        while self.owed and self.owed[0][0] == "inject":
            self.client.write(self.owed.popleft()[1])
        if not self.owed:
            self.idle.set()

    async def _read(self) -> None:
        server, client = self.server, self.client
        while True:
            t, payload = await server.recv()
            if t == _Z:
                server.status = bytes(payload[:1])
                self._mark = 0
                self.owed.clear()
                self.idle.set()
                if not self.ready.done():
                    self.ready.set_result(server.status)
                self.ready = asyncio.get_running_loop().create_future()
                continue
            if t in _ASYNC:
                if t == ord("S"):
                    ps = B.ParameterStatus.decode(payload)
                    server.params[ps.name] = ps.value
                client.write(frame(bytes((t,)), payload))
                continue
            if self._mark and self._barrier_reply(t, payload):
                continue
            head = self.owed[0] if self.owed else None
            forward = head[1] if head is not None else True
            if t == _E:
                self.failed = True
                server.skipping = True  # the server now discards everything up to Sync
                if forward is True or forward == "errors":
                    client.write(frame(b"E", self._client_names(payload) if self.aliases else payload))
                if head is not None and head[0] != "inject" and head[3] is not None:
                    head[3]()
                self.owed.clear()
                self.idle.set()
                continue
            if forward is True:
                client.write(frame(bytes((t,)), payload))
            elif isinstance(forward, list):
                forward.append((t, bytes(payload)))
            if head is not None and t in DONE.get(head[0], ()):
                if head[2] is not None:
                    head[2]()
                self._pop()

    async def flushed(self) -> None:
        """Ask the server for everything owed so far and wait until it has come."""
        if not self.idle.is_set():
            self.server.send(F.Flush().encode())
            await self._wait(self.idle.wait())

    async def sync(self) -> bytes:
        """Send Sync and wait for ReadyForQuery; returns the transaction status (not forwarded)."""
        fut = self.ready
        self.server.send(F.Sync().encode())
        return await self._wait(fut)

    async def _wait(self, aw):
        waiter = asyncio.ensure_future(aw)
        try:
            done, _ = await asyncio.wait({waiter, self.reader}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not waiter.done():  # this task cancelled (its client left), or the reader stopped
                waiter.cancel()
        if waiter in done:
            return waiter.result()
        self.reader.result()  # re-raises the reader's ServerError
        raise RuntimeError("server batch reader stopped")

    @contextlib.asynccontextmanager
    async def paused(self):
        """Stop the reader while the proxy talks to the server itself in collect mode
        (``server.recv``), then read again. Nothing may be owed on entry (call ``flushed`` first)."""
        assert not self.owed, "paused() with replies owed"
        await self.aclose()
        try:
            yield self.server
        finally:
            loop = asyncio.get_running_loop()
            if self.ready.done():
                self.ready = loop.create_future()
            self.reader = loop.create_task(self._read())
            self.reader.add_done_callback(lambda t: t.cancelled() or t.exception())

    def close(self) -> None:
        """Stop reading (the server connection returns to relay or collect mode)."""
        self.reader.cancel()

    async def aclose(self) -> None:
        """Stop reading and wait until the reader has really stopped."""
        self.reader.cancel()
        try:
            await self.reader
        except BaseException:  # its cancellation or the link's failure: both already handled
            pass


@contextlib.asynccontextmanager
async def server_batch(session, server: "ServerConnection"):
    """Run a batch the proxy drives on ``server`` for ``session``: collect mode and a ServerBatch
    inside, relay mode again after. A lost server connection ends the session as Postgres clients
    expect (``session.server_lost``); a malformed client message ends it with FATAL 08P01."""
    server.detach()
    batch = ServerBatch(session, server)
    try:
        yield batch
    except ServerError:
        batch.close()
        session.server_lost(server)
        return
    except ProtocolViolation as e:
        batch.close()
        session.fatal(e.sqlstate, e.message)
        return
    except BaseException:  # cancelled, or the client's input ended: stop reading, let it through
        batch.close()
        raise
    await batch.aclose()
    if not server.closed and session.server is server:
        server.attach(session)
