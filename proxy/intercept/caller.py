"""The engine's ``CallContext`` over the client's own server connection.

Theory of operation
-------------------
An ``iasql_*`` call runs as the caller, on the caller's connection, in the caller's transaction:
``ServerCaller.run`` sends each of the engine's statements to the session's server connection
(in collect mode) with the extended query protocol and NO Sync: Parse and Bind under a private
name, Describe, Execute, Close of portal and statement, then Flush. Without a Sync the statement
joins whatever transaction the server has open for the client: an explicit block, the block the
proxy opened for a multi-statement Query (``simple``), or the implicit transaction of the
client's own extended-protocol batch (``extended``), which commits only at the client's Sync
(protocol chapter, "Extended Query" and "Pipelining"). Private, process-unique names keep the
client's unnamed statement and portal intact.

Rows come back in text format and are turned into Python values by psycopg's loaders
(``psycopg.adapt.Transformer``); parameters go out as text made by psycopg's dumpers. While a call
runs with a ``DateStyle``/``IntervalStyle`` other than ISO/postgres, those two are set to ISO and
postgres for the call (transaction-local, reported to nobody) so the loaders read every value.

When a statement fails, the server has reported an ErrorResponse, has aborted the transaction and
skips every message until Sync: ``failed`` holds the error, ``run`` raises ``engine.rpc.SqlError``,
and the interceptor ends the exchange. A failure the engine raises itself (a cloud error, a
cancel) aborts the server's transaction the same way (``abort``), as an error raised by a SQL
function aborts its caller's transaction. Statements a failure left prepared are closed after the
Sync (``cleanup``). Notices of the engine's statements are not the client's and are dropped;
NotificationResponse (a trigger's NOTIFY) is relayed.

``run_after`` runs what a failed call leaves for after the caller's transaction
(``engine.after_failure``: its ERROR audit row, a failed commit's table revert): on the same
connection when it is idle, else, once the client has ended its block, on a pooled connection of
the same (database, user), never as another role.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import TYPE_CHECKING, Any, Sequence

from psycopg import pq
from psycopg.adapt import PyFormat, Transformer

from engine.rpc import Result, SqlError
from proxy.backend.connection import ServerConnection, ServerError
from proxy.intercept.errors import CallFailed, engine_fields
from proxy.wire import backend as B
from proxy.wire import frontend as F
from proxy.wire.codec import frame

if TYPE_CHECKING:
    from proxy.frontend.session import ClientSession

log = logging.getLogger("iasql_proxy.intercept")

#: Process-unique suffixes of the engine's private statement and portal names.
_ids = itertools.count(1)
PRIVATE_PREFIX = "iasql_engine_"
#: The output styles psycopg's text loaders read; other values are set for the call's duration.
_STYLES = (("DateStyle", "ISO, MDY", "ISO"), ("IntervalStyle", "postgres", "postgres"))
_ONE, _TWO, _THREE = ord("1"), ord("2"), ord("3")
_T, _D, _C, _E, _N, _S, _A, _I, _n, _t = (ord(c) for c in "TDCENSAInt")


def error_fields(payload: bytes) -> dict[str, str]:
    """An ErrorResponse/NoticeResponse payload as ``{field code: value}``."""
    return dict(B.ErrorResponse.decode(payload).fields)


class ServerCaller:
    """``engine.rpc.CallContext`` for calls of ``session`` on ``server`` (already detached).

    ``database``/``user``: the client's database and user; ``cancelled``: set by a CancelRequest;
    ``failed``: the ErrorResponse fields once a statement failed (the server then skips to Sync).
    """

    def __init__(self, session: "ClientSession", server: ServerConnection):
        self.session = session
        self.server = server
        target = session.target
        self.database = (target.dbname if target is not None else None) or session.database
        self.user = session.user
        self.cancelled = asyncio.Event()
        self.failed: dict[str, str] | None = None
        self._left: list[str] = []          # private names a failure may have left prepared
        self._styles: dict[str, str] = {}   # DateStyle/IntervalStyle to put back, by name
        self._styles_checked = False
        self.busy = False                   # a statement of the call is running on the server
        # module RPC names whose calls the engine was found to answer (``QueryInterceptor.engine_calls``)
        self.claimed: set[str] = set()
        # IaSQL transactions whose opening session ended (``abandon``): iasql_begin closes them
        self.abandoned_transactions = session.app.__dict__.get("abandoned_iasql_transactions", {})
        # the IaSQL transaction this client session opened (iasql_begin refuses a second at once)
        self.own_transaction = getattr(session, "iasql_transaction", None)

    # -- CallContext ------------------------------------------------------------------------------
    async def run(self, query: str, params: Sequence[Any] = ()) -> Result:
        """Run one statement (``$n`` placeholders, Python values) in the caller's transaction.
        Raises SqlError (the server's error; the transaction is then aborted) or ServerError."""
        values: tuple[bytes | None, ...] = ()
        types: tuple[int, ...] = ()
        if params:
            tx = Transformer()
            dumped = tx.dump_sequence(list(params), [PyFormat.TEXT] * len(params))
            values = tuple(None if v is None else bytes(v) for v in dumped)
            types = tuple(tx.types or ())
        return await self.run_raw(query, types, (), values)

    async def run_raw(self, query: str, param_types: Sequence[int], param_formats: Sequence[int],
                      values: Sequence[bytes | None]) -> Result:
        """Run one statement with parameters already in wire form (``param_types`` OIDs, 0 =
        unspecified; format codes as in Bind). Rows are decoded from text. Raises SqlError or
        ServerError."""
        if self.failed is not None:
            raise SqlError({"S": "ERROR", "C": "25P02", "M": "current transaction is aborted, commands "
                            "ignored until end of transaction block"})
        if not self._styles_checked:
            await self._set_styles()
        name = f"{PRIVATE_PREFIX}{next(_ids)}"
        self._left.append(name)
        self.busy = True
        try:
            return await self._exchange(name, query, param_types, param_formats, values)
        finally:
            self.busy = False

    async def _exchange(self, name: str, query: str, param_types: Sequence[int], param_formats: Sequence[int],
                        values: Sequence[bytes | None]) -> Result:
        self.server.send(
            F.Parse(name, query, tuple(param_types)).encode()
            + F.Bind(name, name, tuple(param_formats), tuple(values), ()).encode()
            + F.Describe(b"P", name).encode() + F.Execute(name, 0).encode()
            + F.Close(b"P", name).encode() + F.Close(b"S", name).encode() + F.Flush().encode())
        columns: tuple[str, ...] = ()
        rows: list[tuple] = []
        command = ""
        loader: Transformer | None = None
        closed = 0
        while closed < 2:
            t, payload = await self.server.recv()
            if t == _D:
                assert loader is not None
                rows.append(loader.load_sequence(B.DataRow.decode(payload).values))
            elif t == _T:
                desc = B.RowDescription.decode(payload)
                columns = tuple(f.name for f in desc.fields)
                loader = Transformer()
                loader.set_loader_types([f.type_oid for f in desc.fields], pq.Format.TEXT)
            elif t == _C:
                command = B.CommandComplete.decode(payload).tag
            elif t == _THREE:
                closed += 1
            elif t == _E:
                self.failed = error_fields(payload)
                raise SqlError(self.failed)
            else:
                self._aside(t, payload)
        self._left.remove(name)
        return Result(columns, rows, command)

    async def describe(self, query: str) -> bytes | None:
        """Parse ``query`` (no parameters) under a private name and describe it: the payload of
        its RowDescription, or None when it returns no rows (NoData). PostgreSQL's parse analysis
        runs (names, types, function resolution) but nothing executes. Raises SqlError (the
        transaction is then aborted) or ServerError."""
        if self.failed is not None:
            raise SqlError({"S": "ERROR", "C": "25P02", "M": "current transaction is aborted, commands "
                            "ignored until end of transaction block"})
        name = f"{PRIVATE_PREFIX}{next(_ids)}"
        self._left.append(name)
        self.busy = True
        try:
            self.server.send(F.Parse(name, query, ()).encode() + F.Describe(b"S", name).encode()
                             + F.Close(b"S", name).encode() + F.Flush().encode())
            desc: bytes | None = None
            while True:
                t, payload = await self.server.recv()
                if t == _T:
                    desc = bytes(payload)
                elif t == _THREE:
                    break
                elif t == _E:
                    self.failed = error_fields(payload)
                    raise SqlError(self.failed)
                elif t not in (_ONE, _n, _t):
                    self._aside(t, payload)
        finally:
            self.busy = False
        self._left.remove(name)
        return desc

    def progress(self, message: str) -> None:
        """Send one progress line to the client as a NOTICE, at once."""
        self.session.write(B.notice(message))

    # -- around the call --------------------------------------------------------------------------
    def _aside(self, t: int, payload: bytes) -> None:
        """A message that is not a reply to the engine's statement: ParameterStatus is noted (and
        relayed unless it is a style set for the call), NotificationResponse relayed, notices and
        the completion messages of Parse/Bind/Describe dropped."""
        if t == _S:
            ps = B.ParameterStatus.decode(payload)
            if ps.name in self._styles:
                return
            self.server.params[ps.name] = ps.value
            self.session.write(frame(b"S", payload))
        elif t == _A:
            self.session.write(frame(b"A", payload))

    async def _set_styles(self) -> None:
        """Set DateStyle/IntervalStyle for the call when the session's differ from what the
        loaders read (transaction-local; ``finish`` puts them back)."""
        self._styles_checked = True
        wanted = {name: value for name, value, prefix in _STYLES
                  if not self.server.params.get(name, prefix).startswith(prefix)}
        if not wanted:
            return
        self._styles = {name: self.server.params.get(name, "") for name in wanted}
        await self.run("SELECT " + ", ".join(f"pg_catalog.set_config('{n}', $%d, true)" % i for i, n in enumerate(wanted, 1)),
                       tuple(wanted.values()))

    async def finish(self) -> None:
        """After a successful call: put back the styles set for it (PostgreSQL reports GUC changes
        only at ReadyForQuery, so the client never sees them change). Raises CallFailed (the
        statement failed, e.g. cancelled) or ServerError."""
        if self._styles and self.failed is None:
            try:
                await self.run("SELECT " + ", ".join(f"pg_catalog.set_config('{n}', $%d, true)" % i
                                                     for i, n in enumerate(self._styles, 1)),
                               tuple(self._styles.values()))
            except SqlError as e:
                raise CallFailed(engine_fields(e)) from None
            self._styles = {}

    async def abort(self) -> None:
        """Make the server abort the caller's transaction (the engine failed by itself) unless a
        statement already did: Execute of a portal that does not exist fails, and the server
        then skips to Sync. Raises ServerError."""
        if self.failed is not None:
            return
        self.server.send(F.Execute(f"{PRIVATE_PREFIX}aborted").encode() + F.Flush().encode())
        while True:
            t, payload = await self.server.recv()
            if t == _E:
                self.failed = error_fields(payload)
                return
            self._aside(t, payload)

    def cleanup(self) -> bytes:
        """Close messages for the private statements a failure left prepared (send them after the
        Sync, before anything else; each is answered with CloseComplete)."""
        out = b"".join(F.Close(b"S", name).encode() for name in self._left)
        self._left.clear()
        return out


async def settle(session: "ClientSession", server: ServerConnection, closes: bytes, after: list,
                 status: bytes) -> None:
    """After a failed call's transaction state is known (``status`` from the ReadyForQuery that
    followed): close what the failure left prepared, then run the statements for after the
    transaction (``engine.after_failure``: ERROR audit rows, a failed commit's table revert).
    Raises ServerError when the link fails."""
    if closes:
        server.send(closes + F.Sync().encode())
        while True:
            t, payload = await server.recv()
            if t == ord("Z"):
                server.status = bytes(payload[:1])
                break
    if after:
        await run_after(session, server, after, status)


async def run_after(session: "ClientSession", server: ServerConnection, statements: list, status: bytes) -> None:
    """Run ``statements`` ((SQL, parameters) from ``engine.after_failure``) as the client's user,
    each in a transaction of its own, once the client's transaction has ended.

    With the client's connection idle (``status`` I) they run there, before the client hears
    ReadyForQuery. Inside the client's transaction block they would be rolled back with it (and
    could wait for the block's locks), so they wait until the client ends its block: when a
    ReadyForQuery with status I has been relayed (or the client has left), they run on a pooled
    connection of the same (database, user), never as another role (``run_pending``). Best
    effort: a failure is logged (``event=after_call_lost``), never raised."""
    if status == b"I":
        for query, params in statements:
            try:
                await server.extended_query(query, [None if p is None else str(p) for p in params])
            except ServerError as e:
                if server.closed:
                    raise
                log.info("event=after_call_lost client=%s reason=%r", session.peer, e.message)
        return
    defer(session, statements)


def defer(session: "ClientSession", statements: list) -> None:
    """Keep ``statements`` for when the client's transaction has ended (``run_after``): they run
    after the next ReadyForQuery with status I relayed to the client, or when it leaves."""
    pending = getattr(session, "after_transaction", None)
    if pending is None:
        pending = session.after_transaction = []
    pending.extend(statements)
    previous = session.after_ready
    if getattr(previous, "iasql_after", False):
        return

    def hook(s: "ClientSession") -> None:
        if s.tx_status == b"I" or s.closed:
            s.after_ready = previous
            run_pending(s)
        if previous is not None:
            previous(s)

    hook.iasql_after = True  # type: ignore[attr-defined]
    session.after_ready = hook


#: How many abandoned IaSQL transaction ids a process remembers (the oldest are forgotten).
_ABANDONED_MAX = 10_000


def abandon(app: Any, tx_id: str) -> None:
    """Remember ``tx_id`` as an IaSQL transaction whose opening session has ended
    (``ServerCaller.abandoned_transactions``, read by ``iasql_begin``)."""
    known = app.__dict__.setdefault("abandoned_iasql_transactions", {})
    known[tx_id] = None
    while len(known) > _ABANDONED_MAX:
        del known[next(iter(known))]


def run_pending(session: "ClientSession") -> None:
    """Start running the statements ``defer`` kept for ``session`` (a task of the app)."""
    statements = getattr(session, "after_transaction", None) or []
    session.after_transaction = []
    if statements:
        session.app.spawn(_run_elsewhere(session, statements))


#: Seconds ``_run_elsewhere`` waits for a pooled connection.
_LEASE_WAIT = 5.0


def _give_back_late_lease(task: "asyncio.Future") -> None:
    """A lease that completed after ``_run_elsewhere`` stopped waiting: the connection goes back
    to its pool unused (reused when idle, else closed)."""
    if task.cancelled() or task.exception() is not None:
        return
    conn, pool = task.result()
    pool.release(conn, conn.status == b"I", reset=False)


async def _run_elsewhere(session: "ClientSession", statements: list) -> None:
    """Run ``statements`` on a pooled connection of the session's (database, user), waited for up
    to five seconds each."""
    app = session.app
    lease = asyncio.ensure_future(app.lease(session, session.credentials))
    await asyncio.wait({lease}, timeout=_LEASE_WAIT)
    if not lease.done():
        # (not wait_for: a lease granted just as the wait ends would be lost, and with it the
        # connection, counted active for good); one that still completes goes straight back
        lease.cancel()
        lease.add_done_callback(_give_back_late_lease)
        log.info("event=after_call_lost client=%s reason=%r", session.peer, "no server connection within 5 s")
        return
    try:
        other, pool = lease.result()
    except Exception as e:  # server down, login failed...: the rows are lost, the call's error stands
        log.info("event=after_call_lost client=%s reason=%r", session.peer, str(e))
        return
    clean = True
    try:
        for query, params in statements:
            try:
                await asyncio.wait_for(other.extended_query(query, [None if p is None else str(p) for p in params]), 30)
            except (ServerError, asyncio.TimeoutError) as e:
                clean = not isinstance(e, asyncio.TimeoutError) and not other.closed
                log.info("event=after_call_lost client=%s reason=%r", session.peer, str(e))
                if not clean:
                    break
    finally:
        pool.release(other, clean and other.status == b"I", reset=session.pool_mode == "session")
