"""Answering ``iasql_*`` calls sent with the extended query protocol (Parse/Bind/Describe/Execute/Sync).

Theory of operation
-------------------
A Parse whose query calls a registered function is not sent as is. The server gets a *shape* of
it under the same statement name: the call replaced by a typed, zero-row VALUES list, with every
``$n`` that only the call used declared as the function's argument type (``arguments.param_types``:
``text[]`` for ``VARIADIC $1``). So Bind, Describe and Close of that statement are answered by
PostgreSQL itself, with the right ParameterDescription and RowDescription (and binary result
formats when asked). Only Execute of a portal bound to such a statement is done by the proxy: the
engine runs the call on the client's server connection, inside the transaction the batch has open
(the client's block, or the batch's own implicit transaction, which PostgreSQL commits at the
client's Sync), with the Bind's parameter values evaluated by PostgreSQL (``arguments``); then the
statement with the call's rows in place of the call is parsed, bound (same parameters and result
formats) and executed under private names; its DataRows and CommandComplete go to the client in
place of the portal's.

While a session has such statements, its extended-protocol traffic runs through this module,
batch by batch (up to Sync), with server output read in collect mode and tracked against a queue
of the responses the server still owes, so the proxy's own messages are inserted in the right order
and hidden replies are dropped. After an error, messages are discarded until Sync, as PostgreSQL
does (protocol chapter, "Extended Query"); a failed call aborts the server's transaction too, and
its ERROR audit row is written once the Sync has ended it (``caller.settle``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from proxy.backend.batch import ServerBatch, server_batch
from proxy.frontend import transaction as txn
import proxy.intercept.arguments as arguments
from proxy.intercept.caller import ServerCaller, settle
from proxy.intercept.errors import CallFailed, call_error_fields, encode_error
from proxy.intercept.simple import MAX_CLASSIFIED_STATEMENT, SPLIT_OFF_LOOP_CHARS, select_form, statement_too_long
from proxy.intercept.values import ValueError_, to_text
from proxy.router.classify import Call, CallError, find_calls, may_contain_call
from proxy.router.rewrite import rewrite_with_rows
from proxy.wire import backend as B
from proxy.wire import frontend as F
from proxy.wire import sqlstate

if TYPE_CHECKING:
    from proxy.frontend.session import ClientSession
    from proxy.intercept.simple import QueryInterceptor

_EXTENDED = frozenset(map(ord, "PBDECHS"))
PRIVATE_STMT = "iasql_proxy_stmt"
PRIVATE_PORTAL = "iasql_proxy_portal"
_private_ids = itertools.count(1)

@dataclass
class InterceptedStatement:
    """A client's prepared statement that calls ``iasql_*``: original text, calls, parameter types."""

    query: str
    calls: list[Call]
    param_types: tuple[int, ...]
    claimed: frozenset[str] = frozenset()  # module RPCs found to be the engine's at Parse


@dataclass
class ExtendedState:
    """Per-session: intercepted statements by name and portals bound to them (portal -> (stmt,
    Bind)); what failed calls of the current batch left to settle after its Sync."""

    statements: dict[str, InterceptedStatement] = field(default_factory=dict)
    portals: dict[str, tuple[InterceptedStatement, F.Bind]] = field(default_factory=dict)
    running: dict[str, str] = field(default_factory=dict)  # client portal -> proxy portal (row limits)
    closes: bytes = b""                                     # Close messages for statements left prepared
    audits: list = field(default_factory=list)              # statements for after the transaction

    @property
    def active(self) -> bool:
        """True while any intercepted statement exists (the session's extended traffic comes here)."""
        return bool(self.statements)


class ExtendedInterceptor:
    """Runs extended-protocol batches for sessions with intercepted statements."""

    def __init__(self, query: "QueryInterceptor"):
        self.query = query

    @staticmethod
    def state(session: "ClientSession") -> ExtendedState:
        """The session's ExtendedState (created on first use)."""
        st = getattr(session, "extended_state", None)
        if st is None:
            st = session.extended_state = ExtendedState()
        return st

    async def handle_batch(self, session: "ClientSession") -> None:
        """Process extended messages from the head of the session's input up to and including Sync."""
        server = session.server
        if server is None or server.closed:
            session.fatal(sqlstate.CONNECTION_FAILURE, "server closed the connection unexpectedly")
            return
        st = self.state(session)
        status = session.tx_status
        async with server_batch(session, server) as batch:
            await batch.after_relay(session._last_type in txn.OPEN_BATCH)
            # transaction pooling: the client's statement names are renamed as everywhere else in
            # that mode (proxy.frontend.transaction), since the server connection is shared
            names = txn.Renamer(session, server, batch) if session.pooled else None
            open_batch = False  # a message other than Flush since the last Sync
            while True:
                if not session.has_input():
                    if not open_batch:
                        # only Flush (psycopg's pipeline sends Sync then Flush): nothing is owed
                        # and nothing to wait for; the client's next message is relayed as usual
                        await batch.flushed()
                        break
                    await session.wait_input()
                if session.peek_type() not in _EXTENDED:
                    # a Query or other message without a Sync first: finish what is owed, hand back
                    await batch.flushed()
                    break
                t, payload, raw = await session.next_message()
                if t != ord("H"):
                    open_batch = True
                    session._last_type = t
                if t == ord("S"):
                    await batch.flushed()
                    failed = batch.failed
                    status = await batch.sync()
                    if names is not None:
                        names.synced(failed)
                    st.running.clear()  # portals end with the transaction
                    if st.closes or st.audits:
                        closes, audits, st.closes, st.audits = st.closes, st.audits, b"", []
                        async with batch.paused():
                            await settle(session, server, closes, audits, status)
                    session.tx_status = status
                    session.write(B.ReadyForQuery(status).encode())
                    break
                if batch.failed:
                    continue  # discard until Sync
                if t == ord("P"):
                    if not session.note_state(raw):
                        await batch.flushed()
                        self._fail(session, batch, sqlstate.ACTIVE_SQL_TRANSACTION,
                                   "transaction blocks are not allowed in statement pooling mode",
                                   hint="Use pool_mode = transaction, or run the statements one at a time.")
                        continue
                    await self._parse(session, batch, st, F.Parse.decode(payload), raw, names)
                elif t == ord("B"):
                    msg = F.Bind.decode(payload)
                    st.running.pop(msg.portal, None)
                    stmt = st.statements.get(msg.statement)
                    if stmt is not None:
                        st.portals[msg.portal] = (stmt, msg)
                    else:
                        st.portals.pop(msg.portal, None)
                    if names is not None and msg.statement:
                        renamed = await names.bind(msg)
                        if renamed is None:
                            continue
                        raw = renamed
                    elif names is not None and not await names.unnamed():
                        continue
                    server.send(raw)
                    batch.expect("bind")
                elif t == ord("D"):
                    if names is not None:
                        msg = F.Describe.decode(payload)
                        if msg.kind == b"S" and msg.name:
                            renamed = await names.describe(msg.name)
                            if renamed is None:
                                continue
                            raw = renamed
                        elif msg.kind == b"S" and not await names.unnamed():
                            continue
                    server.send(raw)
                    batch.expect("describe")
                elif t == ord("E"):
                    msg = F.Execute.decode(payload)
                    bound = st.portals.get(msg.portal)
                    running = st.running.get(msg.portal)
                    if running is not None:
                        server.send(F.Execute(running, msg.max_rows).encode())
                        batch.expect("execute")
                    elif bound is None:
                        server.send(raw)
                        batch.expect("execute")
                    else:
                        await self._execute(session, batch, bound, msg)
                elif t == ord("C"):
                    msg = F.Close.decode(payload)
                    if msg.kind == b"S":
                        st.statements.pop(msg.name, None)
                        if names is not None and msg.name:
                            names.close(msg.name)
                            continue
                    else:
                        st.portals.pop(msg.name, None)
                        running = st.running.pop(msg.name, None)
                        if running is not None:
                            server.send(F.Close(b"P", running).encode())
                            batch.expect("close", forward=False)
                    server.send(raw)
                    batch.expect("close")
                elif t == ord("H"):
                    await batch.flushed()

    def _fail(self, session: "ClientSession", batch: ServerBatch, code: str, message: str, hint: str | None = None,
              detail: str | None = None) -> None:
        session.write(B.error(code, message, hint=hint, detail=detail))
        batch.failed = True

    async def _parse(self, session: "ClientSession", batch: ServerBatch, st: ExtendedState, msg: F.Parse, raw: bytes,
                     names: txn.Renamer | None = None) -> None:
        server = session.server
        scs = server.params.get("standard_conforming_strings", "on") == "on"
        calls: list[Call] = []
        if may_contain_call(msg.query):
            try:
                if len(msg.query) > MAX_CLASSIFIED_STATEMENT:
                    raise statement_too_long()
                if len(msg.query) > SPLIT_OFF_LOOP_CHARS:  # lexing a long text must not stall the loop
                    calls = await asyncio.get_running_loop().run_in_executor(
                        None, functools.partial(find_calls, msg.query, self.query.names,
                                                standard_conforming_strings=scs))
                else:
                    calls = find_calls(msg.query, self.query.names, standard_conforming_strings=scs)
            except CallError as e:
                await batch.flushed()
                self._fail(session, batch, e.sqlstate, e.message, hint=e.hint)
                return
        claimed: frozenset[str] = frozenset()
        if calls and any(getattr(self.query.registry.get(c.name), "claims", None) is not None for c in calls):
            # a module RPC's name: the engine's only when its module is installed and the function
            # PostgreSQL would call is the engine's stub; else the Parse goes as written (a user's own
            # function of that name). Decided at Parse, where PostgreSQL resolves the function too.
            await batch.flushed()
            if batch.failed:
                return
            if session.tx_status != b"E":  # in a failed block the server refuses the Parse itself
                async with batch.paused():
                    caller = ServerCaller(session, server)
                    try:
                        calls = await self.query.engine_calls(caller, calls, msg.query)
                        await caller.finish()
                    except CallFailed as e:
                        session.write(encode_error(e.fields))
                        await caller.abort()
                        st.closes += caller.cleanup()
                        batch.failed = True
                        return
                    claimed = frozenset(caller.claimed)
            else:
                calls = [c for c in calls if getattr(self.query.registry.get(c.name), "claims", None) is None]
        if not calls:
            st.statements.pop(msg.statement, None)
            if names is not None and msg.statement:
                await names.parse(msg.statement, msg.query, msg.param_types)
                return
            if names is not None:
                names.parse_unnamed(raw)
                return
            server.send(raw)
            batch.expect("parse")
            return
        types = list(msg.param_types)
        wanted: dict[int, int] = {}
        for call in calls:
            fn = self.query.registry.get(call.name)
            for n, oid in arguments.param_types(fn, call, msg.query, standard_conforming_strings=scs).items():
                wanted.setdefault(n, oid)
        top = max(set(wanted) | {len(types)}) if wanted or types else 0
        types += [0] * (top - len(types))
        for n, oid in wanted.items():
            if types[n - 1] == 0:
                types[n - 1] = oid
        stmt = InterceptedStatement(msg.query, calls, tuple(types), claimed)
        try:
            shape = self._with_rows(stmt, [[] for _ in calls], scs)
        except CallError as e:
            await batch.flushed()
            self._fail(session, batch, e.sqlstate, e.message, hint=e.hint)
            return
        if names is not None and msg.statement:
            await names.parse(msg.statement, shape, tuple(types))
            if not batch.failed:
                st.statements[msg.statement] = stmt
            return
        st.statements[msg.statement] = stmt
        if names is not None:  # the unnamed statement follows the client as the others
            names.parse_unnamed(F.Parse("", shape, tuple(types)).encode())
            return
        server.send(F.Parse(msg.statement, shape, tuple(types)).encode())
        batch.expect("parse")

    def _with_rows(self, stmt: InterceptedStatement, rows_per_call: list[list[tuple]], scs: bool) -> str:
        """The statement with each call replaced by its rows (text values), last call first."""
        sql = stmt.query
        pairs = sorted(zip(stmt.calls, rows_per_call), key=lambda p: p[0].start, reverse=True)
        for call, rows in pairs:
            fn = self.query.registry.get(call.name)
            columns = [(c.name, c.type_name) for c in fn.columns]
            text_rows = [tuple(to_text(v, c.type_name) for v, c in zip(row, fn.columns)) for row in rows]
            if call.form == "select" and len(stmt.calls) == 1:
                synthetic = select_form(fn)
                at = synthetic.index(" FROM ") + 6
                call = dataclasses.replace(call, start=at, end=len(synthetic), in_from=True)
                sql = synthetic
            sql = rewrite_with_rows(sql, call, columns, text_rows, standard_conforming_strings=scs)
        return sql

    async def _execute(self, session: "ClientSession", batch: ServerBatch, bound: tuple[InterceptedStatement, F.Bind],
                       msg: F.Execute) -> None:
        """Run the calls of the portal's statement in the engine, in the transaction the batch has
        open, then execute the statement with their rows in place (see the module docstring)."""
        stmt, bind = bound
        server = session.server
        await batch.flushed()
        if batch.failed:
            return
        scs = server.params.get("standard_conforming_strings", "on") == "on"
        async with batch.paused():
            caller = ServerCaller(session, server)
            caller.claimed |= stmt.claimed
            try:
                rows_per_call = []
                for call in stmt.calls:
                    fn = self.query.registry.get(call.name)
                    args = await self.query.call_arguments(caller, fn, call, stmt.query, scs=scs, bind=bind,
                                                           param_types=stmt.param_types)
                    rows_per_call.append(await self.query.invoke(session, caller, fn, args))
                try:
                    sql = self._with_rows(stmt, rows_per_call, scs)
                except (CallError, ValueError_) as e:
                    raise CallFailed(call_error_fields(e)) from None
                await caller.finish()
            except CallFailed as e:
                session.write(encode_error(e.fields))
                await caller.abort()
                st = self.state(session)
                st.closes += caller.cleanup()
                st.audits.extend(e.after)
                batch.failed = True
                return
        # unique private names: a statement or portal left behind by an error is never reused
        n = next(_private_ids)
        pstmt, pportal = f"{PRIVATE_STMT}_{n}", f"{PRIVATE_PORTAL}_{n}"
        out = (F.Parse(pstmt, sql, stmt.param_types).encode()
               + F.Bind(pportal, pstmt, bind.param_formats, bind.params, bind.result_formats).encode()
               + F.Execute(pportal, msg.max_rows).encode() + F.Close(b"S", pstmt).encode())
        if msg.max_rows <= 0:
            out += F.Close(b"P", pportal).encode()
        server.send(out)
        batch.expect("parse", forward=False)
        batch.expect("bind", forward=False)
        batch.expect("execute")
        batch.expect("close", forward=False)
        if msg.max_rows > 0:
            # the client may Execute this portal again for the next rows: they come from our
            # portal, and the call is not run again (it lives until Sync ends the transaction)
            self.state(session).running[msg.portal] = pportal
        else:
            batch.expect("close", forward=False)
        await batch.flushed()
