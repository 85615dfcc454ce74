"""Collect-mode flow control of ``ServerConnection``: past ``INBOX_HIGH_WATER`` queued bytes the
connection stops reading its socket, and every way of taking messages off the queue (``recv``,
``clear_inbox``, ``attach``) reads again below ``INBOX_LOW_WATER``, so no consumer can wait on a
paused socket. Found with /run: a WebSocket client that did not read made the link to the
proxy's own listener queue a whole 300 MB result (``tests/http/test_run_protocol.py::
test_a_client_that_does_not_read_holds_back_its_own_results``)."""

from __future__ import annotations

import asyncio

import pytest

from proxy.backend import connection as C
from proxy.backend.connection import ServerConnection, ServerError
from proxy.config import DatabaseTarget
from proxy.wire.codec import frame
from tests.unit.test_server_attach import Client


class Transport:
    """Records pause_reading/resume_reading, as an asyncio transport would take them."""

    def __init__(self) -> None:
        self.reading = True
        self.calls: list[str] = []

    def pause_reading(self) -> None:
        self.calls.append("pause")
        self.reading = False

    def resume_reading(self) -> None:
        self.calls.append("resume")
        self.reading = True

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name, default=None):
        return default


def make() -> tuple[ServerConnection, Transport]:
    conn = ServerConnection(DatabaseTarget("db"), frozenset())
    t = Transport()
    conn.connection_made(t)
    return conn, t


ROW = frame(b"D", b"\0\x01\0\x01\x00\x00" + b"x" * (64 * 1024))  # one 64 KiB DataRow


def test_pauses_past_the_high_mark_and_resumes_at_the_low_mark_as_recv_drains():
    conn, t = make()
    n = C.INBOX_HIGH_WATER // len(ROW) + 1
    for _ in range(n - 1):
        conn._collect(ROW)
    assert t.reading and conn.inbox_bytes == (n - 1) * len(ROW)
    conn._collect(ROW)
    assert not t.reading and conn.inbox_bytes == n * len(ROW)

    async def drain():
        taken = 0
        while not t.reading:
            await conn.recv()
            taken += 1
        return taken

    taken = asyncio.run(drain())
    assert conn.inbox_bytes <= C.INBOX_LOW_WATER < conn.inbox_bytes + len(ROW)
    assert t.calls == ["pause", "resume"] and taken == n - len(conn._inbox)


def test_a_partial_message_is_not_counted_and_never_pauses():
    conn, t = make()
    big = frame(b"D", b"x" * (3 * C.INBOX_HIGH_WATER))
    conn._collect(big[:-1])  # everything but its last byte: nothing for recv yet, so keep reading
    assert t.reading and conn.inbox_bytes == 0 and not conn._inbox
    conn._collect(big[-1:])
    assert not t.reading and conn.inbox_bytes == len(big)
    assert asyncio.run(conn.recv())[0] == ord("D")
    assert t.reading and conn.inbox_bytes == 0


def test_clear_inbox_and_attach_read_again():
    conn, t = make()
    for _ in range(C.INBOX_HIGH_WATER // len(ROW) + 1):
        conn._collect(ROW)
    assert not t.reading
    conn.clear_inbox()
    assert t.reading and conn.inbox_bytes == 0

    notice = frame(b"N", b"SNOTICE\0M" + b"n" * (2 * C.INBOX_HIGH_WATER) + b"\0\0")
    conn._collect(notice)
    assert not t.reading
    client = Client()
    conn.attach(client)  # relayed output never queues: the client session's flow control rules
    assert client.out == [notice] and t.reading and conn.inbox_bytes == 0


def test_the_end_of_the_link_is_seen_after_what_was_queued_before_it():
    conn, t = make()
    for _ in range(C.INBOX_HIGH_WATER // len(ROW) + 1):
        conn._collect(ROW)
    assert not t.reading
    conn.connection_lost(None)

    async def drain():
        got = 0
        with pytest.raises(ServerError):
            while True:
                await conn.recv()
                got += 1
        return got

    assert asyncio.run(drain()) == C.INBOX_HIGH_WATER // len(ROW) + 1
    assert t.calls == ["pause"]  # a closed link is not resumed
