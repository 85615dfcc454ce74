"""Answering a simple-protocol Query that contains ``iasql_*`` calls.

Theory of operation (the contract in README "How iasql_* calls are answered")
-----------------------------------------------------------------------------
The Query text is split at PostgreSQL's statement boundaries (``proxy.router.split``) and each
statement classified (``find_calls``). Runs of ordinary statements are sent to the client's server
connection as ONE Query each, cut byte for byte from the original text, so PostgreSQL's implicit
transaction semantics hold inside each run. A statement with calls runs after everything before it
has finished and committed: the engine answers each call in-process, and its rows are put in place
of the call as a typed VALUES list that PostgreSQL then evaluates, so RowDescription, type OIDs,
text/binary output and the session's DateStyle/TimeZone are PostgreSQL's own. The client sees each
statement's messages in order and exactly one ReadyForQuery. On the first error the rest is
skipped, as PostgreSQL does. A call inside a transaction block fails like VACUUM (25001) and leaves
the block failed. A text whose calls are all ``instant`` (constant rows, no side effects) is sent
whole, as one Query with the calls' rows in place (``_fold_instant``), when nothing before the last
call can open a transaction block: one round trip, and the implicit transaction covers the text.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import struct
from typing import TYPE_CHECKING, Any, Callable

from engine.rpc import NO_DEFAULT, EngineError, Function, Registry
from proxy.backend.connection import ServerConnection, ServerError
from proxy.backend.pool import PoolTimeout
from proxy.intercept.values import ValueError_, to_text
from proxy.router import split
from proxy.router.classify import Call, CallError, ParamRef, find_calls, may_contain_call
from proxy.router.rewrite import rewrite_with_rows
from proxy.wire import backend as B
from proxy.wire import sqlstate
from proxy.wire.codec import frame

if TYPE_CHECKING:
    from proxy.frontend.session import ClientSession

log = logging.getLogger("iasql_proxy.intercept")

_HDR = struct.Struct("!Bi")
_Z, _E, _N, _G, _S, _C, _I = ord("Z"), ord("E"), ord("N"), ord("G"), ord("S"), ord("C"), ord("I")

#: Query texts longer than this (characters) are split in a worker thread so that one huge text
#: never stalls other clients on the event loop.
SPLIT_OFF_LOOP_CHARS = 64 * 1024
#: Largest Query text (bytes) the interceptor splits; larger ones get 54000 program_limit_exceeded.
MAX_INTERCEPTED_QUERY = 16 * 1024 * 1024


#: Largest text (characters) ``_fold_instant`` builds; beyond it the general path sends run by run.
FOLD_MAX_CHARS = 1 << 20

#: A statement that may open (or end) a transaction block, or that starts with a comment (which
#: could hide such a keyword from this check): an instant call after it is not folded.
_MAY_OPEN_BLOCK = re.compile(r"\s*(?:--|/\*|(?:begin|start|commit|end|rollback|abort|savepoint|release|prepare)\b)",
                             re.IGNORECASE)


def _with_rows(sql: str, fn: Function, call: Call, ncalls: int, rows: list[tuple], scs: bool) -> str:
    """``sql`` (a statement's text) with ``call`` replaced by ``rows`` (the engine's values, in
    ``fn.columns`` order) as a typed VALUES list; a statement that is nothing but the call (form
    'select', ``ncalls`` 1) becomes ``SELECT <fn> FROM (VALUES ...)``. Raises CallError (0A000)
    when the call is not a FROM item, ValueError_ for a value that does not fit its column."""
    columns = [(c.name, c.type_name) for c in fn.columns]
    text_rows = [tuple(to_text(v, c.type_name) for v, c in zip(row, fn.columns)) for row in rows]
    if call.form == "select" and ncalls == 1:
        synthetic = f"SELECT {fn.name} FROM {fn.name}()"
        at = synthetic.index(" FROM ") + 6
        return rewrite_with_rows(synthetic, dataclasses.replace(call, start=at, end=len(synthetic), in_from=True),
                                 columns, text_rows, standard_conforming_strings=scs)
    return rewrite_with_rows(sql, call, columns, text_rows, standard_conforming_strings=scs)


def _shift_position(payload: bytes | bytearray, offset: int | Callable[[int], int]) -> bytes:
    """An ErrorResponse payload with its position field (P, 1-based characters) moved by ``offset``
    characters (the error was reported for a run cut out of the client's text at ``offset``), or
    mapped by ``offset`` when it is a function (a text with statements replaced)."""
    out = bytearray()
    pos = 0
    while pos < len(payload) and payload[pos] != 0:
        end = payload.index(b"\0", pos + 1)
        value = bytes(payload[pos + 1:end])
        if payload[pos] == ord("P") and value.isdigit():
            value = str(offset(int(value)) if callable(offset) else int(value) + offset).encode()
        out += payload[pos:pos + 1] + value + b"\0"
        pos = end + 1
    return bytes(out + b"\0")


class _Stop(Exception):
    """Processing of the current Query ends here (an error was already sent)."""


class QueryInterceptor:
    """Runs intercepted simple Queries for client sessions. ``registry`` maps names to engine Functions;
    ``make_context(session, fn)`` builds the engine's CallContext."""

    def __init__(self, registry: Registry, make_context):
        self.registry = registry
        self.names = registry.names()
        self.make_context = make_context
        self.running: dict[Any, Any] = {}
        self.journal = None  # proxy.admin.journal.EngineJournal (SHOW ENGINE, metrics, shutdown), when installed
        self.split_statements = 0        # statements split out of intercepted Queries (metrics)
        self.intercepted_statements = 0  # ... of which called iasql_* (or failed to parse as a call)

    async def handle_query(self, session: "ClientSession") -> None:
        """Take the Query at the head of ``session``'s input buffer and answer it completely."""
        session.queries += 1  # the counters the fast path keeps (metrics, SHOW STATS)
        buf = session._inbuf
        _, length = _HDR.unpack_from(buf, 0)
        raw = bytes(buf[: 1 + length])
        del buf[: 1 + length]
        server = session.server
        if server is None or server.closed:
            session.fatal(sqlstate.CONNECTION_FAILURE, "server closed the connection unexpectedly")
            return
        try:
            text = raw[5:-1].decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if text is None or "\0" in text:
            # invalid UTF-8, or a NUL inside the string: Postgres reports the malformed message
            self._forward_unchanged(session, raw)
            return
        if len(raw) > MAX_INTERCEPTED_QUERY:
            session.write(B.error(sqlstate.PROGRAM_LIMIT_EXCEEDED,
                                  f"query containing iasql_ is longer than {MAX_INTERCEPTED_QUERY} bytes")
                          + B.ReadyForQuery(session.tx_status).encode())
            return
        scs = server.params.get("standard_conforming_strings", "on") == "on"
        if len(text) > SPLIT_OFF_LOOP_CHARS:
            # splitting AND classifying a large text both take long: neither may stall the loop
            stmts, plan = await asyncio.get_running_loop().run_in_executor(None, self._plan, text, scs)
        else:
            stmts, plan = self._plan(text, scs)
        if not stmts:
            self._forward_unchanged(session, raw)
            return
        self.split_statements += len(stmts)
        self.intercepted_statements += sum(1 for p in plan if isinstance(p, CallError) or p)
        if not any(isinstance(p, CallError) or p for p in plan):
            self._forward_unchanged(session, raw)
            return
        server.detach()
        status = session.tx_status
        folded = await self._fold_instant(session, text, stmts, plan, scs)
        if folded is not None:
            await self._run_folded(session, server, *folded)
            return
        # a call's result statement (a VALUES list, no side effects) goes out in the same Query as
        # the run of ordinary statements after it: one round trip instead of two
        carry: str | None = None
        try:
            i = 0
            while i < len(stmts):
                server = await self._server(session)
                if plan[i] == []:
                    j = i
                    while j < len(stmts) and plan[j] == []:
                        j += 1
                    sql, offset = text[stmts[i].start:stmts[j - 1].end], stmts[i].start
                    if carry is not None:
                        sql, offset, carry = f"{carry};\n{sql}", offset - len(carry) - 2, None
                    status = await self._run_sql(session, server, sql, position_offset=offset)
                    i = j
                    continue
                if carry is not None:  # the next call must not run before this result is out
                    status, carry = await self._run_sql(session, server, carry), None
                carry = await self._run_statement(session, server, stmts[i].text, plan[i], status, scs)
                i += 1
            if carry is not None:
                status = await self._run_sql(session, await self._server(session), carry)
        except _Stop as stop:
            status = stop.args[0] if stop.args else status
        except ServerError:
            session.server_lost(server)
            return
        except PoolTimeout:
            session.fatal(sqlstate.PROTOCOL_VIOLATION, "query_wait_timeout")
            return
        self._finish(session, status)

    @staticmethod
    def _finish(session: "ClientSession", status: bytes, ready_sent: bool = False) -> None:
        """The reply's ReadyForQuery with ``status`` (unless ``ready_sent``); relaying resumes on
        the session's server."""
        session.tx_status = status
        if status == b"I":
            session.transactions += 1
        if not ready_sent:
            session.write(B.ReadyForQuery(status).encode())
        server = session.server
        if server is not None and not server.closed:
            server.attach(session)

    @staticmethod
    async def _server(session: "ClientSession") -> ServerConnection:
        """The session's server connection in collect mode, leased again when transaction pooling
        gave it back while the engine ran. Raises ServerError."""
        if session.server is None:
            await session._lease()
            if session.server is None:
                raise ServerError("no server connection for this session")
            session.server.detach()
        return session.server

    @staticmethod
    async def _give_back_during_call(session: "ClientSession") -> None:
        """Transaction pooling: an engine call can take seconds and holds nothing on the client's
        server connection (everything before it has committed), so the connection goes back to the
        pool for its duration; each segment around the call is its own lease."""
        server = session.server
        if (session.pool_mode == "session" or server is None or session.pins or session.pool is None
                or server.status != b"I"):
            return
        from proxy.frontend import transaction as txn

        if session.touched_gucs or session.reset_all_pending:
            await txn.read_back(session, server)
        session.server = None
        session.pool.release(server, True, reset=False)

    def _plan(self, text: str, scs: bool) -> tuple[list | None, list[list[Call] | CallError]]:
        """Split ``text`` and classify each statement (pure; run off the loop for large texts).
        A statement without ``iasql_`` in it has no call and is not lexed again."""
        stmts = split(text, standard_conforming_strings=scs)
        plan: list[list[Call] | CallError] = []
        for st in stmts or ():
            if not may_contain_call(st.text):
                plan.append([])
                continue
            try:
                plan.append(find_calls(st, self.names, standard_conforming_strings=scs))
            except CallError as e:
                plan.append(e)
        return stmts, plan

    def _forward_unchanged(self, session: "ClientSession", raw: bytes) -> None:
        session.server.send(raw)
        session.pending_ready += 1
        session._last_type = ord("Q")

    async def _run_sql(self, session: "ClientSession", server: ServerConnection, sql: str,
                       drop_row_description: bool = False, position_offset: int | Callable[[int], int] = 0,
                       completed: list[int] | None = None, end_reply: bool = False) -> bytes:
        """Send one Query, forward every reply but ReadyForQuery; return the status. Raises _Stop
        (with the status) when the server reported an error. ``position_offset``: where ``sql``
        starts in the client's text (characters), added to an error's position field, or a
        function mapping a position in ``sql`` to one in the client's text. ``completed``: when
        given, ``[0]`` counts the statements that ended (CommandComplete, EmptyQueryResponse).
        ``end_reply``: the ReadyForQuery goes to the client too, in the same write as the rest."""
        from proxy.wire import frontend as F

        server.send(F.Query(sql).encode())
        failed = False
        out: list[bytes] = []
        while True:
            t, payload = await server.recv()
            if completed is not None and (t == _C or t == _I):
                completed[0] += 1
            if t == _Z:
                status = bytes(payload[:1])
                server.status = status
                break
            if t == _E or t == _N:
                failed = failed or t == _E
                if position_offset:
                    payload = _shift_position(payload, position_offset)
            elif t == _G:  # COPY FROM STDIN inside an intercepted text: the client is not reading
                server.send(F.CopyFail("COPY FROM STDIN is not supported in a query containing iasql_* calls").encode())
            elif t == _S:
                ps = B.ParameterStatus.decode(payload)
                server.params[ps.name] = ps.value
            out.append(frame(bytes((t,)), payload))
            if len(out) >= 256:
                session.write(b"".join(out))
                out.clear()
                # recv() does not yield while messages are queued: let other clients run
                await asyncio.sleep(0)
        if end_reply:
            out.append(B.ReadyForQuery(status).encode())
        session.write(b"".join(out))
        if failed:
            raise _Stop(status)
        return status

    async def _run_folded(self, session: "ClientSession", server: ServerConnection, sql: str,
                          edits: list[tuple[int, int, int]], calls: list[tuple[int, Function]]) -> None:
        """Run the text ``_fold_instant`` built as one Query and end the reply with ReadyForQuery;
        each call is journaled (SHOW ENGINE, metrics) only if its statement was reached."""

        def to_client(p: int) -> int:  # 1-based position in sql -> in the client's text
            shift = 0
            for start, new_len, old_len in edits:
                if p <= start:
                    break
                if p <= start + new_len:  # inside a replaced statement: its first character
                    return start + 1 + shift
                shift += old_len - new_len
            return p + shift

        completed = [0]
        status = session.tx_status
        try:
            status = await self._run_sql(session, server, sql, position_offset=to_client, completed=completed,
                                         end_reply=True)
        except _Stop as stop:
            status = stop.args[0] if stop.args else status
        except ServerError:
            session.server_lost(server)
            return
        finally:
            if self.journal is not None:
                for i, fn in calls:
                    if i < completed[0]:
                        self.journal.end(self.journal.begin(session, fn.name), None)
        self._finish(session, status, ready_sent=True)

    async def _fail(self, session: "ClientSession", status: bytes, code: str, message: str,
                    hint: str | None = None, detail: str | None = None) -> None:
        session.write(B.error(code, message, hint=hint, detail=detail))
        raise _Stop(status)

    async def _run_statement(self, session: "ClientSession", server: ServerConnection, stmt_text: str,
                             calls: list[Call] | CallError, status: bytes, scs: bool) -> str:
        """Run the statement's calls in the engine; return the statement with their rows in place,
        for the caller to send. Raises _Stop after an error (already sent to the client)."""
        if isinstance(calls, CallError):
            await self._fail(session, status, calls.sqlstate, calls.message, hint=calls.hint)
        assert isinstance(calls, list)
        if status == b"E":
            await self._fail(session, status, sqlstate.IN_FAILED_SQL_TRANSACTION,
                             "current transaction is aborted, commands ignored until end of transaction block")
        if status == b"T":
            await self._fail_block(session, server, calls[0].name)
        sql = stmt_text
        if not all(self.registry.get(c.name).instant for c in calls):
            await self._give_back_during_call(session)
        for call in sorted(calls, key=lambda c: c.start, reverse=True):
            fn = self.registry.get(call.name)
            assert fn is not None
            rows = await self._call(session, fn, call, params=None)
            try:
                sql = _with_rows(sql, fn, call, len(calls), rows, scs)
            except CallError as e:
                await self._fail(session, b"I", e.sqlstate, e.message, hint=e.hint)
        return sql

    async def _fold_instant(self, session: "ClientSession", text: str, stmts: list, plan: list,
                      scs: bool) -> tuple[str, list[tuple[int, int, int]], list[tuple[int, Function]]] | None:
        """When every call in ``text`` is an ``instant`` function (constant rows: no arguments, no
        database, no side effects) and nothing before the last call can open a transaction block,
        the calls are answered now and the whole text, each calling statement replaced by its rows,
        goes to the server as ONE Query: one round trip instead of one per run, and PostgreSQL's
        implicit transaction covers the whole text exactly as it would without the calls.
        Returns ``(sql, edits, calls)`` or None when the general path must run: ``edits`` are
        ``(start in sql, length in sql, length in text)`` of each replaced statement (characters,
        for error positions), ``calls`` the ``(statement index, function)`` pairs to journal once
        their statement has run."""
        if session.tx_status != b"I":
            return None
        last = max(i for i, p in enumerate(plan) if p)
        for st, calls in zip(stmts[:last + 1], plan):
            if isinstance(calls, CallError):
                return None
            if not calls and _MAY_OPEN_BLOCK.match(st.text):
                return None
        parts: list[str] = []
        edits: list[tuple[int, int, int]] = []
        ran: list[tuple[int, Function]] = []
        at = 0      # where the next unread part of text starts
        size = 0    # characters in parts so far
        for i, (st, calls) in enumerate(zip(stmts, plan)):
            if not calls:
                continue
            sql = st.text
            local: list[tuple[int, int, int]] | None = []  # (start in st.text, old length, new length)
            for call in sorted(calls, key=lambda c: c.start, reverse=True):
                fn = self.registry.get(call.name)
                if fn is None or not fn.instant:
                    return None
                try:
                    if self.bind_arguments(fn, call, None):
                        return None
                except CallError:
                    # arguments an instant function does not take: the statement goes to Postgres
                    # as written, where no function matches, so Postgres reports the error (its
                    # text, position and hint) and the implicit transaction rolls back
                    continue
                try:
                    rows = list(await fn.impl(self.make_context(session, fn)))
                    new = _with_rows(sql, fn, call, len(calls), rows, scs)
                except (CallError, EngineError, ValueError_, ValueError):
                    return None
                tail = len(sql) - call.end
                if local is not None and new[:call.start] == sql[:call.start] and new[len(new) - tail:] == sql[call.end:]:
                    local.append((call.start, call.end - call.start, len(new) - call.start - tail))
                else:  # the statement was rebuilt: positions inside it map to its first character
                    local = None
                sql = new
                ran.append((i, fn))
            if sql == st.text:
                continue
            head = text[at:st.start]
            parts.append(head)
            parts.append(sql)
            base = size + len(head)
            if local is None:
                edits.append((base, len(sql), st.end - st.start))
            else:
                shift = 0
                for start, old_len, new_len in sorted(local):
                    edits.append((base + start + shift, new_len, old_len))
                    shift += new_len - old_len
            size += len(head) + len(sql)
            at = st.end
            if size > FOLD_MAX_CHARS:  # many or large results: built and sent run by run instead
                return None
        parts.append(text[at:])
        return "".join(parts), edits, ran

    async def _fail_block(self, session: "ClientSession", server: ServerConnection, name: str) -> None:
        """Inside a transaction block: put the block in the failed state on the server (so COMMIT
        becomes ROLLBACK, as after VACUUM's error) and report 25001 as PostgreSQL words it."""
        from proxy.wire import frontend as F

        message = f"{name}() cannot run inside a transaction block"
        server.send(F.Query("DO $iasql$BEGIN RAISE EXCEPTION USING ERRCODE = '25001', MESSAGE = "
                            "'iasql_* call inside a transaction block'; END$iasql$").encode())
        status = b"E"
        while True:
            t, payload = await server.recv()
            if t == _Z:
                status = bytes(payload[:1])
                server.status = status
                break
        await self._fail(session, status, sqlstate.ACTIVE_SQL_TRANSACTION, message)

    def bind_arguments(self, fn: Function, call: Call, params: list[Any] | None) -> list[Any]:
        """Map the call's arguments onto ``fn``'s declared ones (positional, named, VARIADIC,
        defaults); ``params`` gives the values of ``$n``. Raises CallError 42883 when they don't fit."""
        def value(v: Any) -> Any:
            if isinstance(v, ParamRef):
                if params is None or v.n > len(params):
                    raise CallError(sqlstate.UNDEFINED_PARAMETER, f"there is no parameter ${v.n}")
                return params[v.n - 1]
            if isinstance(v, tuple):
                return [value(x) for x in v]
            return v

        declared = fn.arguments
        positional: list[Any] = []
        named: dict[str, Any] = {}
        for a in call.args:
            if a.name is not None:
                named[a.name] = value(a.value)
            elif a.variadic:
                v = value(a.value)
                if not isinstance(v, list):
                    raise CallError(sqlstate.DATATYPE_MISMATCH, "VARIADIC argument must be an array")
                positional.extend(v)
            else:
                positional.append(value(a.value))
        out: list[Any] = []
        if declared and declared[-1].variadic:
            fixed = declared[:-1]
            if len(positional) < len(fixed):
                raise self._no_function(fn, call)
            return positional
        if len(positional) > len(declared):
            raise self._no_function(fn, call)
        for i, d in enumerate(declared):
            if i < len(positional):
                out.append(positional[i])
            elif d.name in named:
                out.append(named.pop(d.name))
            elif d.default is not NO_DEFAULT:
                out.append(d.default)
            else:
                raise self._no_function(fn, call)
        if named:
            raise self._no_function(fn, call)
        return out

    @staticmethod
    def _no_function(fn: Function, call: Call) -> CallError:
        return CallError(sqlstate.UNDEFINED_FUNCTION,
                         f"function {fn.name}({', '.join('unknown' for _ in call.args)}) does not exist",
                         hint=f"The function is {fn.signature}.")

    async def _call(self, session: "ClientSession", fn: Function, call: Call, params: list[Any] | None) -> list[tuple]:
        """Run one engine function; progress goes to the client as NOTICE. Raises _Stop after an error."""
        try:
            args = self.bind_arguments(fn, call, params)
        except CallError as e:
            await self._fail(session, b"I", e.sqlstate, e.message, hint=e.hint)
        ctx = self.make_context(session, fn)
        if fn.instant:  # no await inside that waits: no task, nothing to cancel; still journaled
            record = self.journal.begin(session, fn.name) if self.journal is not None else None
            try:
                rows = list(await fn.impl(ctx, *args))
            except EngineError as e:
                if record is not None:
                    self.journal.end(record, e)
                await self._fail(session, b"I", e.sqlstate, e.message, hint=e.hint, detail=e.detail)
            if record is not None:
                self.journal.end(record, None)
            return rows
        self.running[session] = ctx
        task = asyncio.get_running_loop().create_task(fn.impl(ctx, *args))
        if self.journal is not None:
            self.journal.track(session, fn.name, task)
        try:
            rows = await asyncio.shield(task)
        except asyncio.CancelledError:
            # the client went away: let the engine stop at its next safe point, then give up
            ctx.cancelled.set()
            raise
        except EngineError as e:
            await self._fail(session, b"I", e.sqlstate, e.message, hint=e.hint, detail=e.detail)
        except ValueError_ as e:
            await self._fail(session, b"I", e.sqlstate, e.message)
        except Exception as e:
            log.exception("event=engine_error function=%s", fn.name)
            await self._fail(session, b"I", sqlstate.INTERNAL_ERROR, f"{fn.name}: {type(e).__name__}: {e}")
        finally:
            self.running.pop(session, None)
        return list(rows)

    def cancel(self, session: "ClientSession") -> bool:
        """CancelRequest for ``session``: the running call stops at its next safe point (57014).
        Returns True when a call was running (the request is then not forwarded to the server)."""
        ctx = self.running.get(session)
        if ctx is None:
            return False
        ctx.cancelled.set()
        return True

