"""Letting a server finish what a departed client asked of it.

Theory of operation
-------------------
A client may send work and leave before the replies come: ``Query`` followed by ``Terminate`` in one
write, or a closed socket while a statement runs. Postgres itself reads and runs every message that
came before the Terminate, and a statement already running is not stopped by the client going away
(protocol chapter 55.2.10 "Termination"; ``client_connection_check_interval`` is off by default),
so an autocommit INSERT sent just before Terminate is committed. The proxy does the same: instead
of cancelling the server's work it attaches a ``Drain`` to the server connection in place of the
client. The Drain discards the replies, counts the ReadyForQuery messages still owed, and when the
last one arrives hands the connection back through ``done(server, status)``, which reuses it if
it is idle at a message boundary and closes it otherwise (an open transaction is thus rolled back,
as Postgres does for a session that ends inside one).

A COPY FROM STDIN that starts after the client left can never get its data: the Drain closes the
server connection, and Postgres aborts the copy as it does when its client disconnects.
"""

from __future__ import annotations

from typing import Callable

from proxy.backend.connection import ServerConnection

__all__ = ["Drain"]


class _Discard:
    """Stands in for the departed client's transport: output is dropped, flow control is a no-op."""

    def write(self, data: bytes) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


_DISCARD = _Discard()


class Drain:
    """A relay target (``proxy.backend.connection.RelayClient``) with no client behind it.

    ``server``: the connection whose replies are still owed; ``pending``: how many ReadyForQuery
    messages (count, >= 1); ``done(server, status)``: called once, with the last ReadyForQuery status
    (b'I', b'T', b'E'), or with b'' when the server went away or started a COPY FROM STDIN (the
    connection is then closed or being closed). Raises nothing."""

    transport = _DISCARD
    recorder = None

    def __init__(self, server: ServerConnection, pending: int,
                 done: Callable[[ServerConnection, bytes], None]):
        self.server = server
        self.pending = pending
        self.bytes_out = 0
        self._done: Callable[[ServerConnection, bytes], None] | None = done

    def start(self) -> None:
        """Attach to the server connection; its replies are read (never paused) and dropped."""
        self.server.attach(self)
        if self.server.transport is not None:
            self.server.transport.resume_reading()

    def _finish(self, status: bytes) -> None:
        done, self._done = self._done, None
        if done is not None:
            self.server.detach()
            done(self.server, status)

    def server_ready(self, status: bytes) -> None:
        self.pending -= 1
        if self.pending <= 0:
            self._finish(status)

    def server_lost(self, server: ServerConnection) -> None:
        self._finish(b"")

    def server_parameter(self, name: str, value: str) -> None:
        pass

    def copy_in_started(self) -> None:
        self.server.close()
        self._finish(b"")
