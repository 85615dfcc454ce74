"""``ServerConnection.attach``: what the server sent on its own while the proxy drove the
connection (after its last reply was read) reaches the client the connection is attached to.

Found by ``tests/pooling/test_exactness.py::test_notification_during_the_proxys_own_check_reaches_the_listener``
under load: a NotificationResponse that arrived between the pin check's ReadyForQuery and the
re-attach stayed in the collect-mode inbox and never reached the LISTENing client.
"""

from __future__ import annotations

from proxy.backend.connection import ServerConnection
from proxy.config import DatabaseTarget
from proxy.relay.core import ClientCore
from proxy.wire import backend as B
from proxy.wire.codec import frame


class Client(ClientCore):
    """A relay client (the compiled ``ClientCore``) that records what it is given: the surface
    attach uses is ``write`` and ``server_parameter``."""

    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.params: list[tuple[str, str]] = []

    def write(self, data: bytes) -> None:
        self.out.append(data)

    def server_parameter(self, name: str, value: str) -> None:
        self.params.append((name, value))


def test_async_messages_collected_before_attach_go_to_the_client_in_order():
    conn = ServerConnection(DatabaseTarget("db"), frozenset())
    note = frame(b"A", b"\0\0\0\x07ch13\0p13\0")
    notice = B.notice("hello")
    status = B.ParameterStatus("TimeZone", "UTC").encode()
    reply = frame(b"C", b"SELECT 1\0")
    conn._collect(note + notice + status + reply)
    client = Client()
    conn.attach(client)
    assert client.out == [note, notice, status]
    assert client.params == [("TimeZone", "UTC")] and conn.params["TimeZone"] == "UTC"
    assert list(conn._inbox) == [(ord("C"), b"SELECT 1\0")]  # a reply is not the client's: it stays


def test_nothing_collected_nothing_written():
    conn = ServerConnection(DatabaseTarget("db"), frozenset())
    client = Client()
    conn.attach(client)
    assert client.out == [] and conn.client is client
