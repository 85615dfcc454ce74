"""Answering a simple-protocol Query that contains ``iasql_*`` calls.

Theory of operation (the contract in README "How iasql_* calls are answered")
-----------------------------------------------------------------------------
The Query text is split at PostgreSQL's statement boundaries (``proxy.router.split``) and each
statement classified (``find_calls``). A call behaves as an ordinary set-returning function of the
client's: the engine runs it on the client's own server connection, inside the client's current
transaction (``caller.ServerCaller``), and its rows are put in place of the call as a typed VALUES
list that PostgreSQL then evaluates, so RowDescription, type OIDs, text/binary output and the
session's DateStyle/TimeZone are PostgreSQL's own.

PostgreSQL runs a multi-statement text in ONE implicit transaction block. The proxy has to send
the text in pieces (runs of ordinary statements as one Query each, cut byte for byte; each call
between them), so it opens a block of its own (a hidden ``BEGIN``) when the server is idle, and
ends it (hidden ``COMMIT``, or ``ROLLBACK`` after an error) where PostgreSQL would end the implicit
one. Transaction-control statements behave differently in an explicit block than in an implicit
one, so each is sent alone (``proxy.router.txn_control``): ``BEGIN`` turns the hidden block into
the client's (its "already in progress" WARNING, which PostgreSQL does not give there, is dropped);
``COMMIT``/``END`` first commits the hidden block and ``ROLLBACK``/``ABORT``/``SAVEPOINT``/
``RELEASE``/``ROLLBACK TO``/``... AND CHAIN`` first roll it back, then go to the server outside any
block, where PostgreSQL answers them exactly as inside an implicit block (warning, or error).
A text of one statement has no implicit block in PostgreSQL: the engine's statements then run in
the implicit transaction of the extended protocol (no Sync) and the statement itself, as a Query,
commits it, exactly as the statement alone would.

The client sees each statement's messages in order and exactly one ReadyForQuery. After the first
error the rest is skipped and the transaction is rolled back (a failed call's error aborts the
server's transaction too), as PostgreSQL does. A failed call's ERROR audit row is written after
the transaction has ended (``caller.settle``). A text whose calls are all ``instant`` (constant
rows, no database, no side effects) is sent whole, as one Query with the calls' rows in place
(``_fold_instant``): one round trip, and PostgreSQL runs the text itself.
"""

from __future__ import annotations

import asyncio
import codecs
import dataclasses
import logging
import struct
from typing import TYPE_CHECKING, Any, Callable

from engine import after_failure
from engine.rpc import EngineError, Function, Registry, SqlError
from engine.schema import ensure_metadata
from proxy.backend.connection import ServerConnection, ServerError
from proxy.backend.pool import PoolTimeout
import proxy.intercept.arguments as arguments
from proxy.intercept.caller import ServerCaller, error_fields, settle
from proxy.intercept.errors import CallFailed, call_error_fields, encode_error, engine_fields
from proxy.intercept.values import ValueError_, to_text
from proxy.router import split
from proxy.router.classify import Call, CallError, find_calls, may_contain_call, sends_rows_first
from proxy.router.rewrite import rewrite_with_rows
from proxy.router.txn_control import txn_control
from proxy.wire import backend as B
from proxy.wire import frontend as F
from proxy.wire import sqlstate
from proxy.wire.codec import frame

if TYPE_CHECKING:
    from proxy.frontend.session import ClientSession

log = logging.getLogger("iasql_proxy.intercept")

_HDR = struct.Struct("!Bi")
_Z, _E, _N, _G, _S, _C, _I, _T = (ord(c) for c in "ZENGSCIT")

#: Query texts longer than this (characters) are split in a worker thread so that one huge text
#: never stalls other clients on the event loop.
SPLIT_OFF_LOOP_CHARS = 64 * 1024
#: Largest Query text (bytes) the interceptor splits; larger ones get 54000 program_limit_exceeded.
MAX_INTERCEPTED_QUERY = 16 * 1024 * 1024
#: Largest statement (characters) that mentions ``iasql_`` and is classified (lexed for calls:
#: about a hundred bytes of memory per token); a longer one gets 54000 program_limit_exceeded, so
#: classifying a text costs bounded memory.
MAX_CLASSIFIED_STATEMENT = 1024 * 1024
#: Largest text (characters) ``_fold_instant`` builds; beyond it the general path sends run by run.
FOLD_MAX_CHARS = 1 << 20
#: Where a mutating call is refused, the forms that take it (SQLSTATE 0A000; ``name`` is the function's).
SUPPORTED_FORMS = ("SELECT * FROM {name}(...), SELECT {name}(...), or the last FROM item of a statement "
                   "(SELECT ..., INSERT ... SELECT ..., CREATE TABLE ... AS SELECT ... FROM {name}(...) [AS alias])")


def statement_too_long() -> CallError:
    """The error for a statement mentioning ``iasql_`` (or a module function's name) longer than
    MAX_CLASSIFIED_STATEMENT."""
    return CallError(sqlstate.PROGRAM_LIMIT_EXCEEDED,
                     f"statement calling an iasql_* or module function is longer than {MAX_CLASSIFIED_STATEMENT} "
                     "characters", hint="Pass long values as bind parameters ($1) instead of literals.")


async def _text_is_valid(buf: bytearray, size: int) -> bool:
    """Whether the Query ``buf[:size]`` is one NUL-terminated UTF-8 string (else Postgres rejects
    the message: 08P01 or 22021), checked a MiB at a time, yielding to the event loop in between,
    without a copy of the whole text."""
    if buf.find(b"\0", 5, size - 1) >= 0 or buf[size - 1] != 0:
        return False
    decoder = codecs.getincrementaldecoder("utf-8")()
    step = 1 << 20
    try:
        for s in range(5, size - 1, step):
            with memoryview(buf) as view:
                decoder.decode(view[s:min(size - 1, s + step)])
            await asyncio.sleep(0)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def _with_rows(sql: str, fn: Function, call: Call, ncalls: int, rows: list[tuple], scs: bool) -> str:
    """``sql`` (a statement's text) with ``call`` replaced by ``rows`` (the engine's values, in
    ``fn.columns`` order) as a typed VALUES list; a statement that is nothing but the call (form
    'select', ``ncalls`` 1) becomes ``SELECT <fn> FROM (VALUES ...)``. Raises CallError (0A000)
    when the call is not a FROM item, ValueError_ for a value that does not fit its column."""
    columns = [(c.name, c.type_name) for c in fn.columns]
    text_rows = [tuple(to_text(v, c.type_name) for v, c in zip(row, fn.columns)) for row in rows]
    if call.form == "select" and ncalls == 1:
        synthetic = select_form(fn)
        at = synthetic.index(" FROM ") + 6
        return rewrite_with_rows(synthetic, dataclasses.replace(call, start=at, end=len(synthetic), in_from=True),
                                 columns, text_rows, standard_conforming_strings=scs)
    return rewrite_with_rows(sql, call, columns, text_rows, standard_conforming_strings=scs)


def select_form(fn: Function) -> str:
    """``SELECT f(..)`` as PostgreSQL answers it for a set-returning function: one column named
    after the function, of the function's type when it returns one column, else ``record``. The
    statement returned has ``FROM f()`` for the rows to go in place of."""
    if len(fn.columns) == 1:
        column = fn.columns[0].name.replace('"', '""')
        return f'SELECT {fn.name}."{column}" AS {fn.name} FROM {fn.name}()'
    return f"SELECT {fn.name} FROM {fn.name}()"


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
    """Processing of the current Query ends here (an error was already sent); ``args[0]`` is the
    transaction status."""


async def run_sql(session: "ClientSession", server: ServerConnection, sql: str,
                  position_offset: int | Callable[[int], int] = 0, completed: list[int] | None = None,
                  end_reply: bool = False, drop_notice: str | None = None, drop_row_description: bool = False) -> bytes:
    """Send one Query, forward every reply but ReadyForQuery; return the status. Raises _Stop
    (with the status) when the server reported an error. ``position_offset``: where ``sql``
    starts in the client's text (characters), added to an error's position field, or a
    function mapping a position in ``sql`` to one in the client's text. ``completed``: when
    given, ``[0]`` counts the statements that ended (CommandComplete, EmptyQueryResponse).
    ``end_reply``: the ReadyForQuery goes to the client too, in the same write as the rest.
    ``drop_notice``: the first notice with this SQLSTATE is not forwarded; ``drop_row_description``:
    neither is the first RowDescription (the client has it already)."""
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
        if t == _T and drop_row_description:
            drop_row_description = False
            continue
        if t == _E or t == _N:
            if t == _N and drop_notice is not None and error_fields(payload).get("C") == drop_notice:
                drop_notice = None
                continue
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


def check_form(fn: Function, call: Call) -> None:
    """Refuse a mutating call where PostgreSQL might not run the function exactly once (``Call.plain``):
    the proxy runs a call before the statement, so it could not skip it as the planner would.
    Raises CallFailed (0A000, the hint naming the forms that take it)."""
    if fn.mutating and not call.plain:
        where = f"under {call.context}" if call.context else "where PostgreSQL may skip it or call it more than once"
        raise CallFailed({"S": "ERROR", "V": "ERROR", "C": sqlstate.FEATURE_NOT_SUPPORTED,
                          "M": f"{fn.name}() changes the database and the cloud, so it cannot be called {where}",
                          "H": f"Call it as {SUPPORTED_FORMS.format(name=fn.name)}."})


class QueryInterceptor:
    """Runs intercepted simple Queries for client sessions; ``registry`` maps names to engine
    Functions. ``call_arguments`` and ``invoke`` run one call for either protocol."""

    def __init__(self, registry: Registry):
        self.registry = registry
        self.names = registry.names()
        # the functions whose stubs and probes come with the metadata (module RPCs come with their module)
        self.functions = [fn for fn in registry.functions.values() if fn.module is None]
        state = getattr(registry, "engine_state", None)
        self.lock_wait_timeout = state.settings.lock_wait_timeout if state is not None else 30.0
        self.running: dict[Any, ServerCaller] = {}
        self.journal = None  # proxy.admin.journal.EngineJournal (SHOW ENGINE, metrics, shutdown), when installed
        self.split_statements = 0        # statements split out of intercepted Queries (metrics)
        self.intercepted_statements = 0  # ... of which called iasql_* (or failed to parse as a call)

    async def handle_query(self, session: "ClientSession") -> None:
        """Take the Query at the head of ``session``'s input and answer it completely."""
        session.queries += 1  # the counters the fast path keeps (metrics, SHOW STATS)
        session._unnamed = None  # a simple Query drops the unnamed statement
        session._unnamed_here = False
        server = session.server
        if server is None or server.closed:
            session.take_message()
            session.fatal(sqlstate.CONNECTION_FAILURE, "server closed the connection unexpectedly")
            return
        size = session.head_size()
        if size > MAX_INTERCEPTED_QUERY:
            # judged without a copy of the text: memory stays bounded whatever its size
            if not await _text_is_valid(session._inbuf, size):
                session.queries -= 1  # counted again as it is forwarded
                session.forward_head_message()  # the server reports the malformed message
                return
            session.drop_head_message()
            session.write(B.error(sqlstate.PROGRAM_LIMIT_EXCEEDED,
                                  f"query containing iasql_ is longer than {MAX_INTERCEPTED_QUERY} bytes")
                          + B.ReadyForQuery(session.tx_status).encode())
            return
        raw = session.take_message()
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
        folded = await self._fold_instant(session, text, stmts, plan, scs)
        if folded is not None:
            await self._run_folded(session, server, *folded)
            return
        try:
            status = await _TextRun(self, session, server, text, stmts, plan, scs).run()
        except ServerError:
            session.server_lost(server)
            return
        except PoolTimeout as e:
            session.fatal(sqlstate.PROTOCOL_VIOLATION, e.reason)
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

    def _plan(self, text: str, scs: bool) -> tuple[list | None, list[list[Call] | CallError]]:
        """Split ``text`` and classify each statement (pure; run off the loop for large texts).
        A statement without ``iasql_`` in it has no call and is not lexed again."""
        stmts = split(text, standard_conforming_strings=scs)
        plan: list[list[Call] | CallError] = []
        for st in stmts or ():
            if not may_contain_call(st.text):
                plan.append([])
                continue
            if len(st.text) > MAX_CLASSIFIED_STATEMENT:
                plan.append(statement_too_long())
                continue
            try:
                plan.append(find_calls(st, self.names, standard_conforming_strings=scs))
            except CallError as e:
                plan.append(e)
        return stmts, plan

    def _forward_unchanged(self, session: "ClientSession", raw: bytes) -> None:
        session.forward_query(raw)

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
            status = await run_sql(session, server, sql, position_offset=to_client, completed=completed,
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

    async def _fold_instant(self, session: "ClientSession", text: str, stmts: list, plan: list,
                            scs: bool) -> tuple[str, list[tuple[int, int, int]], list[tuple[int, Function]]] | None:
        """When every call in ``text`` is an ``instant`` function (constant rows: no arguments, no
        database, no side effects), the calls are answered now and the whole text, each calling
        statement replaced by its rows, goes to the server as ONE Query: one round trip, and
        PostgreSQL runs the text itself, transaction blocks and all, exactly as it would without
        the calls. Returns ``(sql, edits, calls)`` or None when the general path must run:
        ``edits`` are ``(start in sql, length in sql, length in text)`` of each replaced statement
        (characters, for error positions), ``calls`` the ``(statement index, function)`` pairs to
        journal once their statement has run."""
        if any(isinstance(calls, CallError) for calls in plan):
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
                if call.args:
                    # arguments an instant function does not take: the statement goes to Postgres
                    # as written, where no function matches, so Postgres reports the error (its
                    # text, position and hint) and the transaction rolls back
                    continue
                try:
                    rows = list(await fn.impl(None))
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

    # -- one call, either protocol -------------------------------------------------------------------
    async def call_arguments(self, caller: ServerCaller, fn: Function, call: Call, stmt_text: str, *,
                             scs: bool = True, bind: F.Bind | None = None,
                             param_types: tuple[int, ...] = ()) -> list[Any]:
        """Evaluate ``call``'s arguments on the caller's connection (``arguments``); returns them
        as ``fn``'s implementation takes them. ``bind``/``param_types``: the client's Bind and the
        statement's parameter types (extended protocol). Raises CallFailed (the ErrorResponse
        fields, the position relative to ``stmt_text``)."""
        check_form(fn, call)
        if not arguments.needs_probe(fn, call):
            return arguments.defaults(fn)
        if bind is None:
            at = arguments.first_param(call, stmt_text, standard_conforming_strings=scs)
            if at is not None:  # a simple Query has no parameters: PostgreSQL's own error
                raise CallFailed({"S": "ERROR", "V": "ERROR", "C": sqlstate.UNDEFINED_PARAMETER,
                                  "M": f"there is no parameter {at[1]}", "P": str(at[0] + 1)})
        pr = arguments.probe(fn, call, stmt_text, renumber=bind is not None, standard_conforming_strings=scs)
        try:
            await ensure_metadata(caller, self.functions, lock_timeout=self.lock_wait_timeout)  # the probes are in it
        except EngineError as e:
            raise CallFailed(engine_fields(e), after_failure(e)) from None
        try:
            if bind is None:
                res = await caller.run(pr.sql)
            else:
                res = await caller.run_raw(
                    pr.sql, [param_types[n - 1] if n <= len(param_types) else 0 for n in pr.params],
                    [bind.param_format(n - 1) for n in pr.params], [bind.params[n - 1] for n in pr.params])
        except SqlError as e:
            if call.lateral and e.sqlstate in (sqlstate.UNDEFINED_COLUMN, sqlstate.UNDEFINED_TABLE):
                raise CallFailed({"S": "ERROR", "V": "ERROR", "C": sqlstate.FEATURE_NOT_SUPPORTED,
                                  "M": f"the arguments of {fn.name}() cannot refer to columns of other FROM items",
                                  "D": arguments.client_error(e, pr.position)["M"],
                                  "H": f"{fn.name}() runs once, before the statement: give it arguments that "
                                       "do not depend on other FROM items."}) from None
            raise CallFailed(arguments.client_error(e, pr.position)) from None
        return arguments.as_call_arguments(fn, res.rows[0])

    async def engine_calls(self, caller: ServerCaller, calls: list[Call], text: str) -> list[Call]:
        """The calls of ``calls`` (found in statement ``text``) that the engine answers: every
        ``iasql_*`` call, and each module RPC call that ``Function.claims`` (``engine.rpc_claims``)
        says is the engine's, asked on the caller's connection. A call left out is a user's own
        function of that name: it stays in the statement, for PostgreSQL to run as written.
        Returns the calls kept (in order; empty when the statement is to run as written). Raises
        CallFailed (42883 when no function of that name exists at all, with the engine's HINT;
        the server's error when the transaction is aborted) or ServerError."""
        keep: list[Call] = []
        for call in calls:
            fn = self.registry.get(call.name)
            if fn is None or fn.claims is None:
                keep.append(call)
                continue
            qualified = "." in text[call.start:call.args_start]
            # how many arguments, when PostgreSQL matches them by position alone
            nargs = None if any(a.name is not None or a.variadic for a in call.args) else len(call.args)
            try:
                ok = await fn.claims(caller, qualified, nargs)
            except EngineError as e:
                raise CallFailed(engine_fields(e)) from None
            if ok:
                caller.claimed.add(fn.name)
                keep.append(call)
        return keep

    async def invoke(self, session: "ClientSession", caller: ServerCaller, fn: Function, args: list[Any]) -> list[tuple]:
        """Run ``fn`` with ``args`` in the engine (a task of its own, journaled; a client that goes
        away sets ``cancelled``) and return its rows. Progress goes to the client as NOTICE.
        Raises CallFailed."""
        self.running[session] = caller
        task = asyncio.get_running_loop().create_task(fn.impl(caller, *args))
        if self.journal is not None:
            self.journal.track(session, fn.name, task)
        try:
            rows = list(await asyncio.shield(task))
            if fn.opens_transaction and rows and len(rows[0]) > 1:
                session.iasql_transaction = rows[0][1]  # closed if still open when the session ends
            return rows
        except asyncio.CancelledError:
            # the client went away: let the engine stop at its next safe point, then give up
            caller.cancelled.set()
            raise
        except EngineError as e:
            raise CallFailed(engine_fields(e), after_failure(e)) from None
        except Exception as e:
            log.exception("event=engine_error function=%s", fn.name)
            raise CallFailed({"S": "ERROR", "V": "ERROR", "C": sqlstate.INTERNAL_ERROR,
                              "M": f"{fn.name}: {type(e).__name__}: {e}"}) from None
        finally:
            self.running.pop(session, None)

    def cancel(self, session: "ClientSession") -> bool:
        """CancelRequest for ``session``: a running call stops at its next safe point (57014).
        Returns True when that is all there is to do; False when the request must also go to the
        server: no call is running, or the call has a statement running there (the server then
        cancels it, 57014, and the call fails with that)."""
        caller = self.running.get(session)
        if caller is None:
            return False
        caller.cancelled.set()
        return not caller.busy


class _TextRun:
    """One intercepted Query text that is not folded, run statement by statement (see the module
    docstring). ``run()`` returns the final transaction status; raises ServerError."""

    def __init__(self, icp: QueryInterceptor, session: "ClientSession", server: ServerConnection, text: str,
                 stmts: list, plan: list, scs: bool):
        self.icp, self.session, self.server = icp, session, server
        self.text, self.stmts, self.plan, self.scs = text, stmts, plan, scs
        self.status = session.tx_status
        self.hidden = False            # the server's block is the proxy's (the implicit block's stand-in)
        self.multi = len(stmts) > 1    # PostgreSQL would run the text in an implicit block
        self.closes = b""              # Close messages for what failed calls left prepared
        self.audits: list = []         # statements to run after the transaction (engine.after_failure)

    async def run(self) -> bytes:
        try:
            await self._syntax_check()
            await self._statements()
        except _Stop as stop:
            self.status = stop.args[0] if stop.args else self.status
        if self.hidden:
            self.hidden = False
            await self._hidden("COMMIT" if self.status == b"T" else "ROLLBACK")
        if self.closes or self.audits:
            await settle(self.session, self.server, self.closes, self.audits, self.status)
        return self.status

    async def _syntax_check(self) -> None:
        """PostgreSQL parses the whole text before it runs any of it: a syntax error anywhere means
        that nothing runs, a call before it included. The text is parsed with PostgreSQL's own
        grammar (libpg_query, through pglast) first; on a syntax error the client gets it (42601,
        with its position) and, inside a block, the block fails, as PostgreSQL does. Texts read with
        ``standard_conforming_strings = off`` are not checked (the library reads strings as on)."""
        if not self.scs:
            return
        from pglast import parser

        try:
            parser.parse_sql_json(self.text)
        except parser.ParseError as e:
            message, location = (e.args + (None, None))[:2]
            fields = {"S": "ERROR", "V": "ERROR", "C": sqlstate.SYNTAX_ERROR, "M": str(message)}
            if isinstance(location, int) and location >= 0:
                fields["P"] = str(location + 1)
            # inside a block, the block fails, as after any error in it
            await self._call_failed(ServerCaller(self.session, self.server), CallFailed(fields), 0)

    def _units(self) -> list[tuple[str, int, int]]:
        """(kind, first, end) per unit: a run of ordinary statements (``plain``), a statement
        with calls (``call``) or a transaction-control statement (its ``txn_control`` kind)."""
        units: list[tuple[str, int, int]] = []
        for i, (st, calls) in enumerate(zip(self.stmts, self.plan)):
            if calls:
                units.append(("call", i, i + 1))
                continue
            kind = txn_control(st.text, standard_conforming_strings=self.scs)
            if kind is not None:
                units.append((kind, i, i + 1))
            elif units and units[-1][0] == "plain":
                units[-1] = ("plain", units[-1][1], i + 1)
            else:
                units.append(("plain", i, i + 1))
        return units

    async def _statements(self) -> None:
        # a call's result statement, sent with the run after it, and whether its RowDescription
        # went to the client already (then the server's is dropped)
        carry: tuple[str, bool] | None = None
        for kind, first, end in self._units():
            if kind == "call":
                if carry is not None:  # the next call must not run before this result is out
                    await self._send(carry[0], drop_row_description=carry[1])
                    carry = None
                carry = await self._call(first)
                continue
            if kind == "plain":
                sql = self.text[self.stmts[first].start:self.stmts[end - 1].end]
                offset = self.stmts[first].start
                drop = False
                if carry is not None:
                    sql, offset, drop, carry = f"{carry[0]};\n{sql}", offset - len(carry[0]) - 2, carry[1], None
                await self._open()
                await self._send(sql, offset, drop_row_description=drop)
                continue
            if carry is not None:
                await self._send(carry[0], drop_row_description=carry[1])
                carry = None
            await self._transaction_control(kind, first)
        if carry is not None:
            await self._send(carry[0], drop_row_description=carry[1])

    async def _send(self, sql: str, offset: int | Callable[[int], int] = 0, drop_notice: str | None = None,
                    drop_row_description: bool = False) -> None:
        self.status = await run_sql(self.session, self.server, sql, position_offset=offset, drop_notice=drop_notice,
                                    drop_row_description=drop_row_description)

    async def _open(self) -> None:
        """Before a statement of a multi-statement text while the server is idle: open the block
        that stands in for PostgreSQL's implicit one."""
        if self.status == b"I" and self.multi and not self.hidden:
            await self._hidden("BEGIN")
            self.hidden = True

    async def _hidden(self, sql: str) -> None:
        """Run one of the proxy's own statements; its replies are not the client's, except an
        error (a hidden COMMIT that fails, e.g. on a deferred constraint: PostgreSQL reports that
        error for the implicit block too). Raises _Stop after such an error."""
        self.server.send(F.Query(sql).encode())
        failed = None
        while True:
            t, payload = await self.server.recv()
            if t == _Z:
                self.status = self.server.status = bytes(payload[:1])
                break
            if t == _E:
                failed = payload
            elif t == _S:
                ps = B.ParameterStatus.decode(payload)
                self.server.params[ps.name] = ps.value
                self.session.write(frame(b"S", payload))
            elif t == ord("A"):
                self.session.write(frame(b"A", payload))
        if failed is not None:
            self.session.write(frame(b"E", failed))
            raise _Stop(self.status)

    async def _transaction_control(self, kind: str, i: int) -> None:
        st = self.stmts[i]
        if self.hidden:
            if kind in ("begin", "prepare"):
                # the block becomes the client's (BEGIN), or is prepared as the implicit one would be;
                # if that fails, PostgreSQL rolls the implicit block back (``run`` ends ours)
                await self._send(st.text, st.start, drop_notice="25001" if kind == "begin" else None)
                self.hidden = False
                return
            self.hidden = False
            await self._hidden("COMMIT" if kind == "commit" else "ROLLBACK")
        await self._send(st.text, st.start)

    async def _call(self, i: int) -> tuple[str, bool] | None:
        """Run the calls of statement ``i`` as PostgreSQL runs a statement's functions: parse
        analysis of the statement first (its shape, the calls replaced by zero rows: an unknown
        table fails here and no call runs), then the arguments, then the RowDescription to the
        client (PostgreSQL sends it when execution starts, before any NOTICE of a function), then
        the calls. Returns the statement with their rows in place, for ``_statements`` to send,
        and whether its RowDescription was sent already; None when the statement's calls are
        all a user's own functions (``QueryInterceptor.engine_calls``): it was sent as written.
        Raises _Stop after an error (sent)."""
        st = self.stmts[i]
        calls = self.plan[i]
        if self.status == b"E":
            # an aborted block refuses every statement: PostgreSQL itself says so (25P02)
            await self._send(st.text, st.start)
            return "", False
        await self._open()
        caller = ServerCaller(self.session, self.server)
        try:
            if isinstance(calls, CallError):
                raise CallFailed(call_error_fields(calls))
            calls = await self.icp.engine_calls(caller, calls, st.text)
            if not calls:  # none is the engine's: PostgreSQL runs the statement as written
                await caller.finish()
                await self._send(st.text, st.start)
                return None
            fns = [self.icp.registry.get(c.name) for c in calls]
            for call, fn in zip(calls, fns):
                check_form(fn, call)
            shape, where = self._shape(st.text, calls, fns)
            try:
                desc = await caller.describe(shape)
            except SqlError as e:
                raise CallFailed(arguments.client_error(e, where)) from None
            args = [await self.icp.call_arguments(caller, fn, call, st.text, scs=self.scs)
                    for call, fn in zip(calls, fns)]
            if desc is not None and not sends_rows_first(st.text, standard_conforming_strings=self.scs):
                desc = None  # PostgreSQL sends it after the statement ran (RETURNING, EXPLAIN, ...)
            if desc is not None:
                self.session.write(frame(b"T", desc))
            results = [await self.icp.invoke(self.session, caller, fn, a) for fn, a in zip(fns, args)]
            sql = st.text
            for call, fn, rows in sorted(zip(calls, fns, results), key=lambda r: r[0].start, reverse=True):
                try:
                    sql = _with_rows(sql, fn, call, len(calls), rows, self.scs)
                except (CallError, ValueError_) as e:
                    raise CallFailed(call_error_fields(e)) from None
            await caller.finish()
        except CallFailed as e:
            await self._call_failed(caller, e, st.start)
        return sql, desc is not None

    def _shape(self, text: str, calls: list[Call], fns: list[Function]) -> tuple[str, Callable[[int], int]]:
        """The statement with each call replaced by zero rows of its columns, and a map from a
        position in it to one in ``text`` (a position inside a replacement maps to its call).
        Raises CallFailed (0A000) for a call that is not a FROM item."""
        sql = text
        spans: list[tuple[int, int, int]] = []  # (start in text, length in text, length in sql)
        rebuilt: int | None = None              # the whole statement was rebuilt for this call
        for call, fn in sorted(zip(calls, fns), key=lambda p: p[0].start, reverse=True):
            try:
                new = _with_rows(sql, fn, call, len(calls), [], self.scs)
            except (CallError, ValueError_) as e:
                raise CallFailed(call_error_fields(e)) from None
            tail = len(sql) - call.end
            if new[:call.start] == sql[:call.start] and new[len(new) - tail:] == sql[call.end:]:
                spans.append((call.start, call.end - call.start, len(new) - call.start - tail))
            else:  # the select-list form: the statement is rebuilt around the call
                rebuilt = call.start
            sql = new

        def position(p: int) -> int:
            if rebuilt is not None:
                return rebuilt + 1
            shift = 0
            for start, old_len, new_len in sorted(spans):
                if p - 1 < start + shift:
                    break
                if p - 1 < start + shift + new_len:  # inside a replacement: its call
                    return start + 1
                shift += new_len - old_len
            return p - shift

        return sql, position

    async def _call_failed(self, caller: ServerCaller, failure: CallFailed, offset: int) -> None:
        """Report a failed call and end the server's side of it as PostgreSQL ends a failed
        statement: the transaction is aborted (the server skips to Sync, which then answers with
        the block's status). Raises _Stop."""
        self.session.write(encode_error(failure.fields, offset))
        await caller.abort()
        self.server.send(F.Sync().encode())
        while True:
            t, payload = await self.server.recv()
            if t == _Z:
                self.status = self.server.status = bytes(payload[:1])
                break
        self.closes += caller.cleanup()
        self.audits.extend(failure.after)
        raise _Stop(self.status)


__all__ = ["QueryInterceptor", "run_sql"]
