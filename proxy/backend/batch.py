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
        self.owed: collections.deque[tuple[str, bool | bytes]] = collections.deque()
        self.failed = False
        self.idle = asyncio.Event()
        self.idle.set()
        loop = asyncio.get_running_loop()
        self.ready: asyncio.Future = loop.create_future()
        self.reader = loop.create_task(self._read())
        # the reader's failure is re-raised by the awaits; never log it as "never retrieved"
        self.reader.add_done_callback(lambda t: t.cancelled() or t.exception())

    def expect(self, kind: str, forward: bool = True) -> None:
        """Record that the server owes one reply of ``kind``; forward it to the client or drop it."""
        self.owed.append((kind, forward))
        self.idle.clear()

    def inject(self, data: bytes) -> None:
        """Queue ``data`` for the client after everything owed so far."""
        if not self.owed:
            self.client.write(data)
        else:
            self.owed.append(("inject", data))

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
            forward = self.owed[0][1] if self.owed else True
            if t == _E:
                self.failed = True
                if forward is not False:
                    client.write(frame(b"E", payload))
                self.owed.clear()
                self.idle.set()
                continue
            if forward is True:
                client.write(frame(bytes((t,)), payload))
            if self.owed and t in DONE.get(self.owed[0][0], ()):
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
        done, _ = await asyncio.wait({waiter, self.reader}, return_when=asyncio.FIRST_COMPLETED)
        if waiter in done:
            return waiter.result()
        waiter.cancel()
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
    await batch.aclose()
    if not server.closed and session.server is server:
        server.attach(session)
