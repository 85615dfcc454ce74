"""The relay's per-transaction path: base classes of the client session, the server connection
and the pool, compiled to C when the project is installed.

Theory of operation
-------------------
In transaction pooling every transaction runs the same few steps: the client's read is checked
(``scan_client``) and written to a server connection taken from the pool's idle list; the
server's reply is written back to the client and scanned for its final ReadyForQuery
(``RelayScanner.feed_ready``); at ReadyForQuery 'I' the connection goes back to the idle list, or
to the first client waiting in the pool's queue. These steps are the proxy's CPU cost per
transaction, so they live here, in three base classes whose attributes are typed C fields
(``core.pxd``): ``ClientCore`` (subclassed by ``proxy.frontend.session.ClientSession``),
``ServerCore`` (``proxy.backend.connection.ServerConnection``) and ``PoolCore``
(``proxy.backend.pool.Pool``). Everything else (login, the message-by-message relay, interception,
leasing with a task, collect mode, pool housekeeping) stays in the subclasses, which the code here
calls for any case that is not the common one: ``_relay``, ``_lease_then_relay``,
``_resume_relay``, ``_maybe_give_back``, ``_end_after_eof`` (client), ``_collect`` (server),
``release`` (pool).

This file is plain Python and runs as it is when the extension was not built (no C compiler at
install): ``setup.py`` compiles it with Cython, ``core.pxd`` giving the C types. So both forms run
the same code; ``proxy.relay.compiled`` says which one is in use.

Protocol: PostgreSQL protocol chapter, "Message Flow" (Simple Query, Extended Query) and
"Message Formats"; the pooling rules follow PgBouncer's transaction mode (a server connection is
released when its transaction ends, ReadyForQuery 'I').
"""

from __future__ import annotations

import asyncio
from time import monotonic as _monotonic

from proxy.wire.codec import ProtocolViolation
from proxy.wire.fastpath import SCAN_CLIENT

__all__ = ["QUEUED", "ClientCore", "PoolCore", "ServerCore", "compiled"]

_H = 72   # Flush
#: Messages after which no ReadyForQuery is owed until a Sync (the extended protocol's open batch).
EXTENDED = frozenset(map(ord, "PBDECH"))
_EXTENDED_TABLE = bytes(1 if i in EXTENDED else 0 for i in range(256))  # EXTENDED by type byte
#: Extended messages a Sync must close (Parse, Bind, Describe, Execute, Close), by type byte: a
#: Query or FunctionCall sent behind one of them may be skipped by the server (``_relay``'s check)
_OPEN_TABLE = bytes(1 if chr(i) in "PBDEC" else 0 for i in range(256))
_Q = 81   # Query
_F = 70   # FunctionCall
_BYTE = tuple(bytes((i,)) for i in range(256))
_IDLE = b"I"
#: transaction.MAX_HELD_STATEMENTS: a connection holding more statements is emptied on the slow path
_MAX_HELD = 1000


class _QueuedForServer:
    """Stands in ``ClientCore._busy`` while the session waits in its pool's queue for a server
    connection (``PoolCore.queue``): relaying is paused as for a running task, but no task exists."""

    __slots__ = ()

    def done(self) -> bool:
        return False

    def cancel(self) -> bool:
        return True


QUEUED = _QueuedForServer()


class PoolCore:
    """Idle list, active set and queue of one pool (``proxy.backend.pool.Pool`` adds the rest).

    Attributes set by the subclass: ``idle`` (list of ServerConnection, most recently used last),
    ``active`` (set), ``waiters`` (deque of futures of ``acquire``), ``queued`` (deque of sessions
    waiting without a task), ``closed``, ``lifetime`` (``server_lifetime``, seconds; 0: none),
    ``size`` (``default_pool_size``), ``opening`` (connections being opened).
    """

    def take_idle(self, startup_key):
        """An idle connection with these start-up parameters (a frozenset), taken at once (no
        await), or None. The fast path of transaction pooling; ``acquire`` does the rest.
        (``server_lifetime`` is enforced when a connection is given back and by ``maintain``.)"""
        idle = self.idle
        n = len(idle)
        if n:  # the common case: the connection given back last fits
            conn = idle[n - 1]
            if conn.startup_key is startup_key and not conn.closed:
                idle.pop()
                self.active.add(conn)
                return conn
        i = n - 1
        while i >= 0:
            conn = idle[i]
            key = conn.startup_key
            if (key is startup_key or key == startup_key) and not conn.closed:
                conn.startup_key = startup_key  # the same object from now on: an identity check
                del idle[i]
                self.active.add(conn)
                return conn
            i -= 1
        return None

    def put_back(self, conn) -> None:
        """Undo ``take_idle`` for a connection that was not used."""
        self.active.discard(conn)
        self.idle.append(conn)

    def queue(self, session) -> None:
        """Let ``session`` wait for the next connection to go idle (``ClientCore.server_granted``)."""
        self.queued.append(session)

    def _wake_one(self) -> None:
        """A connection went idle or a place opened: wake one waiting ``acquire``, else hand the
        place to sessions in the queue (in arrival order) until one takes a connection."""
        self._wake()

    def _wake(self) -> None:
        waiters = self.waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        queued = self.queued
        if queued and (self.idle or len(self.idle) + len(self.active) + self.opening < self.size):
            while queued:
                session = queued.popleft()
                if session._granted():
                    return

    def give_back(self, conn) -> None:
        """``release(conn, True, reset=False)`` for transaction pooling's fast path: a connection
        idle at a message boundary after ReadyForQuery 'I' goes straight to the idle list (or is
        closed once older than ``server_lifetime``), and the next waiter is woken."""
        if conn.closed or conn.broken or self.closed or conn.status != _IDLE:
            self.release(conn, True, reset=False)
            return
        conn.client = None
        conn._paused_client = False
        now = _monotonic()
        conn.last_used = now
        self.active.discard(conn)
        if self.lifetime > 0 and now - conn.created > self.lifetime:
            conn.close()  # server_lifetime: replaced by a fresh connection on demand
        else:
            self.idle.append(conn)
        if self.waiters or self.queued:
            self._wake()


class ServerCore:
    """Relay mode of a server connection: output goes straight to the attached client.

    Attributes set by the subclass: ``client`` (the attached ClientCore, or None: collect mode),
    ``transport``, ``status`` (last ReadyForQuery status, b'I'/b'T'/b'E'), ``skipping`` (an
    ErrorResponse relayed since the last ReadyForQuery), ``startup_key``,
    ``gucs``, ``custom_seen``, ``_inbox``, ``_scanner`` (a ``RelayScanner``), ``pool``, ``closed``,
    ``broken``, ``_paused_client``, ``created``/``last_used`` (monotonic seconds).
    """

    def data_received(self, data) -> None:
        """asyncio: ``data`` (bytes) from the server. Attached: written to the client unchanged and
        scanned for its final ReadyForQuery, which is reported with ``client.server_ready``; a
        length below 4 (ProtocolViolation, 08P01) aborts the connection. Detached: ``_collect``.
        A client that has gone (or that the proxy closed) is written nothing, but the replies
        are still scanned: a task finishing the client's work after it left (an iasql_* text
        runs to its end, as Postgres runs a function whose client went away) waits for them."""
        client = self.client
        if client is None:
            self._collect(data)
            return
        if not client.closed:
            client.transport.write(data)
            client.bytes_out += len(data)
            if client.recorder is not None:
                client.recorder.backend(data)
        try:
            status = self._scanner.feed_ready(data)
        except ProtocolViolation:
            self.abort()
            return
        if status >= 0:  # the reply ended with ReadyForQuery
            self.status = _BYTE[status]
            self.skipping = False
            client._ready(self.status)
            if client.after_ready is not None:
                client.after_ready(client)


class ClientCore:
    """The client session's relay after login: reads that are whole, checked messages go to the
    session's server connection in one write, leasing one from the pool first in transaction
    pooling; replies end with ``server_ready``, which gives the connection back.

    Attributes set by the subclass (see ``ClientSession.__init__``): ``app``, ``transport``,
    ``server``, ``pool``, ``recorder``, ``_busy`` (the task that owns the session, ``QUEUED``, or
    None), ``special``/``special_default`` (message types the fast path must not pass), ``_inbuf``,
    ``tx_status``, ``_drained``, ``_startup_key``, ``gucs``, ``pins``, ``touched_gucs``,
    ``wait_started``, ``_checked``, ``pool_mode``, ``ready``, ``closed``, ``pooled``, ``_eof``,
    ``reset_all_pending``, ``_passthrough``, ``max_message`` (bytes), ``pending_ready``,
    ``_last_type``, the counters ``bytes_in``, ``bytes_out``, ``queries``, ``transactions``,
    ``assignments`` (server connections taken here, as PgBouncer's server_assignment_count), and
    ``after_ready`` (None, or a callable run with the session after each ReadyForQuery relayed).
    """

    def data_received(self, data) -> None:
        """asyncio: ``data`` (bytes) from the client. Relayed at once when the session is idle
        (``_relay_fast``, else ``_relay``); buffered while a task owns the session or before login."""
        if self.recorder is not None:
            self.recorder.frontend(data)
        elif (self.ready and self._busy is None and self.special is self.special_default
              and not self._inbuf and not self._passthrough and self._fast(data)):
            return
        if self.ready and self._busy is None:
            self._relay(data)
            return
        self._inbuf += data
        self._data_waiting()

    def _relay_fast(self, data) -> bool:
        """Forward ``data`` in one write when it is whole messages that need nothing but counting
        (``proxy.wire.fastpath.scan_client``: no partial message, no Terminate or copy end, no
        Query/Parse text that may call iasql_ or change session state, no named prepared
        statement in transaction pooling). Returns False, having done nothing, when ``_relay``
        must handle ``data`` instead."""
        return self._fast(data)

    def _fast(self, data) -> bool:
        if _OPEN_TABLE[self._last_type & 255]:
            t = data[0]
            if t == _Q or t == _F:  # behind an extended batch without Sync: ``_relay`` checks it
                return False
        r = SCAN_CLIENT(data, self.pooled, self.max_message)
        if r < 0:
            return False
        flags = r >> 31  # transaction pooling: the read changes the client's unnamed statement
        pending = (r >> 8) & 0x7FFFFF
        t = r & 255
        server = self.server
        if server is None:
            if self.pool_mode == "session":
                return False
            if not self._take_server():
                # whole, checked messages: relayed when the pool grants a server (queue), or when
                # the task path has leased one (opening a connection, applying state, paused)
                self._inbuf += data
                self.bytes_in += len(data)
                if self._enqueue():
                    self._checked = (len(data), pending, t, flags)
                else:
                    self._busy = asyncio.get_running_loop().create_task(self._lease_then_relay())
                return True
            server = self.server
        elif server.closed or server.transport is None:
            return False
        if flags:
            self._unnamed_sent(data, flags)
        self._send_checked(server, data, pending, t)
        return True

    def _unnamed_sent(self, data, flags) -> None:
        """Whole messages ``data`` going to this lease's server connection changed the client's
        unnamed statement (``flags``: ``proxy.wire.fastpath.unnamed_flags``): a Query dropped it,
        or an unnamed Parse defined it, kept whole so that it can be prepared again on another
        connection (``proxy.frontend.transaction``)."""
        if flags & 1:
            self._unnamed = None
            self._unnamed_here = False
        else:
            start = (flags >> 1) - 1
            length = (data[start + 1] << 24) | (data[start + 2] << 16) | (data[start + 3] << 8) | data[start + 4]
            self._unnamed = bytes(data[start:start + 1 + length])
            self._unnamed_here = True

    def _send_checked(self, server, data, pending, last) -> None:
        """Write whole messages ``data`` to ``server``: ``pending`` of them owe a ReadyForQuery,
        ``last`` is the type of the last one that is neither Flush nor CopyData (Flush when all are)."""
        server.transport.write(data)
        self.bytes_in += len(data)
        if pending:
            self.pending_ready += pending
            self.queries += pending
        if last != _H:  # only Flush messages: the batch is as open or closed as it was
            self._last_type = last

    def _lease_now(self) -> bool:
        """Transaction pooling's fast path: take an idle connection whose session state already
        matches the client's, without a task or an await. False when the slow path must run
        (nothing idle, state to apply, a paused database)."""
        return self._take_server()

    def _take_server(self) -> bool:
        pool = self.pool
        if pool is None:
            return False
        ops = self.app.ops
        if ops is not None and (ops.paused_all or ops.paused):
            return False
        server = pool.take_idle(self._startup_key)
        if server is None:
            return False
        if ((server.gucs is not self.gucs and server.gucs != self.gucs) or server.custom_seen or server._inbox
                or server.garbage or len(server.prepared) > _MAX_HELD):
            pool.put_back(server)
            return False
        self.server = server
        server.client = self  # ServerConnection.attach, inlined: this runs once per transaction
        self.assignments += 1
        self._unnamed_here = False
        return True

    def _queue_now(self) -> bool:
        """Transaction pooling with every connection of the pool busy: wait in the pool's queue,
        without a task, until ``server_granted``. False when the slow path must run instead (an
        idle connection has other session state, the pool may open a connection, the database is
        paused)."""
        return self._enqueue()

    def _enqueue(self) -> bool:
        pool = self.pool
        if pool is None or pool.idle or len(pool.idle) + len(pool.active) + pool.opening < pool.size:
            return False  # an idle connection needs this client's state applied: the task path
        ops = self.app.ops
        if ops is not None and (ops.paused_all or ops.paused):
            return False
        self.wait_started = _monotonic()
        self._busy = QUEUED
        pool.queue(self)
        return True

    def server_granted(self) -> bool:
        """Called by the pool when a connection went idle (or a place opened) while this session
        waited in its queue. Takes the idle connection and relays what the client sent; if the
        connection needs the client's state applied first, or none is idle, the task path takes
        over (the wait still counts from when it began). Returns False when the session no longer
        waits (closed, or already on the task path), True when it took the grant."""
        return self._granted()

    def _granted(self) -> bool:
        if self._busy is not QUEUED or self.closed:
            return False
        self._busy = None
        if not self._take_server():
            self._busy = asyncio.get_running_loop().create_task(self._lease_then_relay())
            return True
        started = self.wait_started
        self.wait_started = None
        ops = self.app.ops
        if ops is not None and started is not None:
            ops.metrics.observe_wait(self, _monotonic() - started, count=False)  # counted above
        checked = self._checked
        self._checked = None
        buf = self._inbuf
        if checked is not None and checked[0] == len(buf) and self.special is self.special_default:
            # nothing came after the messages _relay_fast checked before queueing
            data = bytes(buf)
            buf.clear()
            self.bytes_in -= len(data)
            if checked[3]:
                self._unnamed_sent(data, checked[3])
            self._send_checked(self.server, data, checked[1], checked[2])
            if self._eof:  # the client half-closed while it waited: end once nothing is owed
                self._end_after_eof()
        else:
            self._resume_relay()
        return True

    def server_ready(self, status) -> None:
        """ReadyForQuery (``status``: b'I', b'T' or b'E') seen in relayed output. The last one
        owed, in transaction pooling between transactions, gives the server connection back.
        Then ``after_ready(session)`` runs when set (a graceful shutdown closes a client whose
        work is done: ``proxy.admin.ops``)."""
        self._ready(status)
        if self.after_ready is not None:
            self.after_ready(self)

    def _ready(self, status) -> None:
        self.tx_status = status
        pending = self.pending_ready
        if pending:
            pending -= 1
            self.pending_ready = pending
        idle = status == _IDLE
        if idle:
            self.transactions += 1
        if pending:
            return
        d = self._drained
        if d is not None:
            if not d.done():
                d.set_result(None)
        elif idle and self.pooled and self._may_give_back_now():
            server = self.server
            self.server = None
            self.pool.give_back(server)
            if self._eof:
                self.close()
            return
        if self.pooled and idle:
            self._maybe_give_back()
        if self._eof:
            self._end_after_eof()

    def _may_give_back_now(self) -> bool:
        """The common end of a transaction in transaction pooling: nothing owed, nothing to read
        back, no pins, no task running; the server connection can go back to the pool at once."""
        return (self._busy is None and not _EXTENDED_TABLE[self._last_type & 255] and not self.pins
                and not self.touched_gucs and not self.reset_all_pending and not self.closed
                and not self._passthrough and self.server is not None and self.pool is not None)


#: True when this module is the C extension built at install, False when it runs as Python.
compiled = not __file__.endswith(".py")
