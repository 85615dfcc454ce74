"""Transaction and statement pooling: what makes a client unable to tell that its transactions run
on different server connections.

Theory of operation
-------------------
In ``pool_mode = transaction`` a client holds a server connection only from its first message
after ReadyForQuery(idle) until the next ReadyForQuery(idle); ``statement`` mode is the same but
refuses explicit transaction blocks (PgDog's kinder rule: an ERROR, the client stays connected).

*Session state follows the client.* Messages are not parsed on the fast path; a Query or Parse
whose bytes match ``STATEFUL_HINT`` (set, reset, discard, prepare, listen, ...) is analysed with the
router's lexer (``analyze``). Parameters a transaction may have changed at session level are read
back with ``current_setting`` when it ends (so a SET rolled back by an error, or a SET LOCAL, is
not kept, exactly as PostgreSQL decides) into ``session.gucs``. Each server connection remembers
what it has applied (``server.gucs``); before a client's transaction runs on a connection, the
difference is applied with ``set_config``/``RESET`` in one round trip, its replies hidden.

*Prepared statements follow the client.* A client's named statement has a server-side name of its
own (``PreparedStatements.server_name``: the client's number and a hash of its name), so no two
clients ever share a server statement: after DDL, or with another ``search_path``, each sees what
it would see on its own connection. Every server connection knows which statements it holds, with
their text (``ServerConnection.prepared``); Bind/Describe/Close of a client's name are renamed, and
the statement is prepared first, hidden, on a connection that lacks it (or holds an older text
under that name). Bookkeeping follows the server's answers, not what was sent: a statement is
the client's once ParseComplete has come for it, gone once CloseComplete has, and a message the
server skipped after an error changes nothing (``ServerBatch.expect``'s callbacks). A Parse of a
name the client holds is sent to a connection that holds it too, so PostgreSQL itself answers
42P05, or the error it checks first (25P02 in an aborted block, a syntax error). An error the proxy
makes itself (26000 for a name the client never prepared) fails the server's transaction too
(``ServerBatch.fail``), as PostgreSQL's own error would. Such batches run through the owed-reply
queue (``ServerBatch``) so replies the client did not ask for are dropped and the ones it expects
are inserted in order. A connection that holds more than ``MAX_HELD_STATEMENTS`` statements
(clients come and go) is emptied with ``DEALLOCATE ALL`` before its next client.

*What cannot follow pins*: SQL PREPARE, LISTEN, temporary tables, cursors WITH HOLD, session
advisory locks and LOAD keep the client on its connection until the state is gone (UNLISTEN *,
DEALLOCATE ALL, DISCARD, CLOSE ALL, pg_advisory_unlock_all) or the client leaves; a log line says why.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
from typing import TYPE_CHECKING

from proxy.backend.batch import ServerBatch, server_batch
from proxy.backend.connection import ServerConnection, ServerError
from proxy.intercept.values import array_literal
from proxy.router.session_state import may_change_state
from proxy.wire import backend as B
from proxy.wire import frontend as F
from proxy.wire import sqlstate
from proxy.wire.codec import ProtocolViolation, frame

if TYPE_CHECKING:
    from proxy.frontend.session import ClientSession

log = logging.getLogger("iasql_proxy.transaction")

_EXTENDED = frozenset(map(ord, "PBDECHS"))
#: the last message relayed left an extended batch open (no Sync after it); a Flush counts only
#: when it has a body (Postgres fails it, "invalid message format", and skips to Sync), as the
#: relay records a Flush as the last message only then
OPEN_BATCH = frozenset(map(ord, "PBDECH"))
#: GUCs that must be applied before others (SET SESSION AUTHORIZATION resets ROLE).
_FIRST = ("session_authorization",)
_RESET_SPECIAL = {"session_authorization": "RESET SESSION AUTHORIZATION", "role": "RESET ROLE"}


def statement_key(query: str, param_types: tuple[int, ...]) -> tuple[str, tuple[int, ...]]:
    """What a server connection must hold under a statement's server name: text and types."""
    return query, tuple(param_types)


def describe_key(messages: list[tuple[int, bytes]]) -> tuple | None:
    """The result of a statement from its Describe's replies, as PostgreSQL compares result types
    (``equalTupleDescs``: names, types, type modifiers): a tuple per column, () for NoData, None
    when the Describe did not answer (it was skipped or failed)."""
    for t, payload in messages:
        if t == ord("n"):
            return ()
        if t == ord("T"):
            return tuple((f.name, f.type_oid, f.type_modifier) for f in B.RowDescription.decode(payload).fields)
    return None


#: Statements a server connection may hold before it is emptied (``DEALLOCATE ALL``) between
#: clients; the clients' own statements are prepared again on demand.
MAX_HELD_STATEMENTS = 1000


def _literal(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


async def apply_state(session: "ClientSession", server: ServerConnection) -> None:
    """Make ``server``'s session parameters equal the client's (``session.gucs``), in one Query whose
    replies (including ParameterStatus) are not forwarded, emptying the connection's statements
    first when it holds more than ``MAX_HELD_STATEMENTS``. Raises ServerError."""
    if server.garbage:
        await close_statements(session, server, server.garbage)
        server.garbage = set()
    want: dict[str, str] = session.gucs
    have: dict[str, str] = server.gucs
    parts: list[str] = []
    if len(server.prepared) > MAX_HELD_STATEMENTS:  # statements of clients long gone, mostly
        parts.append("DEALLOCATE ALL")
    if want == have and not parts:
        return
    names = sorted(set(want) | set(have), key=lambda n: (n not in _FIRST, n != "role", n))
    sa_changed = want.get("session_authorization") != have.get("session_authorization")
    calls = []
    for n in names:
        if n in want:
            if have.get(n) != want[n] or (n == "role" and sa_changed):  # SET SESSION AUTHORIZATION resets ROLE
                calls.append(f"set_config({_literal(n)}, {_literal(want[n])}, false)")
        else:
            if calls:
                parts.append("SELECT " + ", ".join(calls))
                calls = []
            parts.append(_RESET_SPECIAL.get(n, f'RESET "{n}"' if "." not in n else f"RESET {n}"))
    if calls:
        parts.append("SELECT " + ", ".join(calls))
    if parts:
        await server.query("; ".join(parts), deliver=session.write)
        if parts[0] == "DEALLOCATE ALL":
            server.prepared.clear()
    server.gucs = dict(want)
    server.custom_seen |= {n for n in want if "." in n}


async def close_statements(session: "ClientSession", server: ServerConnection, names) -> None:
    """Close the server statements ``names`` on ``server`` (Close never fails for a name the
    server does not hold), between two transactions; a notification that arrives meanwhile goes to
    the client. Raises ServerError."""
    names = [n for n in names if n in server.prepared]
    if not names:
        return
    server.send(b"".join(F.Close(b"S", n).encode() for n in names) + F.Sync().encode())
    while True:
        t, payload = await server.recv()
        if t == ord("A"):
            session.write(frame(b"A", payload))
        elif t == ord("Z"):
            server.status = bytes(payload[:1])
            break
    for n in names:
        server.prepared.pop(n, None)


def forget_client_statements(session: "ClientSession") -> None:
    """The client left: the statements its pool's connections hold for it are closed before those
    connections serve anyone again (``apply_state``)."""
    pool = session.pool
    if pool is None or not session.prepared.by_name:
        return
    prefix = session.prepared.prefix
    for conn in list(pool.idle) + list(pool.active):
        dead = {n for n in conn.prepared if n.startswith(prefix)}
        if dead:
            conn.garbage |= dead


async def read_back(session: "ClientSession", server: ServerConnection) -> None:
    """After a transaction that may have changed session parameters, read their values from the
    server (``current_setting(name, true)``) into ``session.gucs`` and ``server.gucs``."""
    touched = set(session.touched_gucs)
    session.touched_gucs = set()
    if session.reset_all_pending:
        # RESET ALL may have been rolled back, and it keeps role and session_authorization: read
        # back every parameter either side knows about rather than assume defaults
        touched |= set(session.gucs) | set(server.gucs)
        session.reset_all_pending = False
    names = sorted(touched)
    if not names:
        return
    rows = await server.extended_query("SELECT n, current_setting(n, true) FROM unnest($1::text[]) AS n",
                                       [array_literal(names)], deliver=session.write)
    session._unnamed_here = False  # that query used the unnamed statement
    for n_raw, v_raw in rows:
        if n_raw is None:
            continue
        n = n_raw.decode()
        if v_raw is None:
            session.gucs.pop(n, None)
            server.gucs.pop(n, None)
        else:
            session.gucs[n] = server.gucs[n] = v_raw.decode()
            if "." in n:
                server.custom_seen.add(n)


#: One round trip that tells whether a pinned connection still holds state no other client may
#: see (LISTEN channels, SQL prepared statements, WITH HOLD cursors, advisory locks, temp objects).
PINNED_STATE_QUERY = (
    "SELECT EXISTS (SELECT 1 FROM pg_listening_channels())"
    " OR EXISTS (SELECT 1 FROM pg_prepared_statements WHERE from_sql)"
    " OR EXISTS (SELECT 1 FROM pg_cursors WHERE is_holdable)"
    " OR EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid())"
    " OR EXISTS (SELECT 1 FROM pg_class WHERE relnamespace = pg_my_temp_schema())"
)


async def still_pinned(session: "ClientSession", server: ServerConnection) -> bool:
    """Whether ``server`` still holds session state that pins its client (PINNED_STATE_QUERY); a
    notification that arrives meanwhile goes to the client."""
    # a connection the client keeps for good shows it nobody else's statements
    prefix = session.prepared.prefix
    others = [n for n in server.prepared if not n.startswith(prefix)]
    if others:
        await close_statements(session, server, others)
    rows = await server.extended_query(PINNED_STATE_QUERY, [], deliver=session.write)
    session._unnamed_here = False  # that query used the unnamed statement
    return bool(rows) and rows[0][0] == b"t"


_client_serials = itertools.count(1)


class PreparedStatements:
    """A client's named prepared statements, as the client sees them: client name -> (query,
    parameter types, stateful, result), recorded when ParseComplete came for the client's Parse and removed
    when CloseComplete (or DEALLOCATE) did; ``stateful`` is True when the query may change session
    state (``may_change_state``): each Bind of it is noted like the text itself
    (``ClientSession.note_text_state``), since a client may Parse in one transaction and execute in
    later ones. ``result`` is the statement's result as PostgreSQL described it when the client
    parsed it (``describe_key``): PostgreSQL fixes it at Parse, and a statement prepared again on
    another connection after DDL changed it must fail as the client's own would (0A000 "cached
    plan must not change result type"). The client's number is in its server names
    (``server_name``, ``prefix``)."""

    def __init__(self) -> None:
        self.by_name: dict[str, tuple] = {}
        #: client name -> the number of parameters PostgreSQL said the statement takes (its
        #: ParameterDescription at the client's Parse); a Bind supplying another number takes the
        #: slow path, whose error names the client's statement, not the server's
        self.param_counts: dict[str, int] = {}
        #: what every server name of this client starts with: ``iasqlp_<client number>_``
        self.prefix = f"iasqlp_{next(_client_serials)}_"

    def server_name(self, name: str | bytes) -> str:
        """The server-side name of the client's statement ``name``: ``prefix`` and 16 hex digits
        of SHA-256 over the name's bytes (at most 40 characters, under NAMEDATALEN)."""
        return self.prefix + hashlib.sha256(name if isinstance(name, bytes) else name.encode()).hexdigest()[:16]


def needs_rename(session: "ClientSession", t: int, buf: bytearray, pos: int, end: int) -> bool:
    """Whether message ``t`` at ``buf[pos:end]`` (on the slow path) names a prepared statement,
    parses or closes the unnamed one, or needs the client's unnamed statement on a connection that
    may not hold it (it was parsed in an earlier transaction: ``session._unnamed_here``): then
    the batch runs through ``run_named_batch`` (cheap byte checks only). A Describe, Close or Bind
    that PostgreSQL rejects before it looks up a statement (empty, a name without its NUL, bytes
    after the name) needs nothing: it goes as it is and the server answers it; a malformed Parse
    takes the slow path, which sends it renamed (``Renamer.malformed_parse``)."""
    body = pos + 5
    if t == ord("P"):
        if not parse_shape_ok(buf, body, end):
            return True
        # named: renamed; unnamed and not bound later in this read (pg8000: Parse, Sync; Bind in
        # a later transaction): the client's once the server confirms it
        return buf[body] != 0 or not _bound_later(buf, end)
    if t == ord("B"):
        nul = buf.find(b"\0", body, end)
        if nul < 0 or nul + 1 >= end:
            return False
        return buf[nul + 1] != 0 or not session._unnamed_here
    if t in (ord("D"), ord("C")):
        # PostgreSQL reads the kind byte, the name and the end of the message before it looks
        # anything up: a message that fails there is the server's to answer
        if end - body < 2 or buf.find(b"\0", body + 1, end) != end - 1:
            return False
        return buf[body] == ord("S") and (buf[body + 1] != 0 or t == ord("C") or not session._unnamed_here)
    return False


def parse_shape_ok(buf: bytes | bytearray, body: int, end: int) -> bool:
    """Whether the Parse payload at ``buf[body:end]`` has PostgreSQL's shape: a name and a query
    (each with its NUL), a parameter count and exactly that many type OIDs, nothing after. The
    strings' encoding is not checked."""
    a = buf.find(b"\0", body, end)
    b = buf.find(b"\0", a + 1, end) if a >= 0 else -1
    if b < 0 or end - b - 1 < 2:
        return False
    count = (buf[b + 1] << 8) | buf[b + 2]
    return end - b - 3 == 4 * count


def _utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _bound_later(buf: bytearray, pos: int) -> bool:
    """Whether a Bind of the unnamed statement follows in ``buf`` from ``pos`` (whole messages),
    before a Query or another unnamed Parse replaces it."""
    n = len(buf)
    while n - pos >= 5:
        t = buf[pos]
        length = int.from_bytes(buf[pos + 1:pos + 5], "big")
        end = pos + 1 + length
        if length < 4 or end > n:
            return False
        if t == ord("B"):
            nul = buf.find(b"\0", pos + 5, end)
            if nul >= 0 and nul + 1 < end and buf[nul + 1] == 0:
                return True
        elif t == ord("Q") or (t == ord("P") and length > 4 and buf[pos + 5] == 0):
            return False
        pos = end
    return False


def rename_inline(session: "ClientSession", t: int, payload: bytes) -> bytes | None:
    """The fast path of statement renaming: a Bind or Describe with the client's statement name
    replaced by the server's, when that server connection holds the statement for sure. None when
    the slow path (``run_named_batch``) is needed: also for a message the proxy cannot read, and
    for a Bind whose parameter count is not the statement's (PostgreSQL's error then names the
    statement, which the slow path gives the client's name)."""
    server = session.server
    if server is None:
        return None
    by_name = session.prepared.by_name
    if t == ord("P"):
        return None  # a Parse is confirmed through the slow path (once per statement and client)
    prepared = session.prepared
    try:
        if t == ord("B"):
            msg = F.Bind.decode(payload)
        elif t == ord("D"):
            msg = F.Describe.decode(payload)
        else:
            return None  # Close: bookkept on its CloseComplete, by the slow path
    except ProtocolViolation:
        return None
    if t == ord("B"):
        if not msg.statement:
            return None  # the unnamed statement of an earlier transaction: the slow path
        entry = by_name.get(msg.statement)
        if entry is None:
            return None
        sname = prepared.server_name(msg.statement)
        if server.prepared.get(sname) != entry[:2]:
            return None
        if prepared.param_counts.get(msg.statement) != len(msg.params):
            return None
        if entry[2]:
            session.note_text_state(entry[0])
        return F.Bind(msg.portal, sname, msg.param_formats, msg.params, msg.result_formats).encode()
    if t == ord("D"):
        if not msg.name:
            return None
        entry = by_name.get(msg.name)
        if entry is None:
            return None
        sname = prepared.server_name(msg.name)
        if server.prepared.get(sname) != entry[:2]:
            return None
        return F.Describe(b"S", sname).encode()
    return None


#: the messages ``run_named_batch`` reads, and the reply each is owed
_DECODED = frozenset(map(ord, "PBDC"))
_KIND = {ord("P"): "parse", ord("B"): "bind", ord("D"): "describe", ord("C"): "close", ord("E"): "execute"}


async def run_named_batch(session: "ClientSession") -> None:
    """Process extended messages from the head of the session's input up to Sync, renaming named
    statements (see the module docstring). The session holds a leased ``server`` here (nothing
    is done when it has none: the server was lost and the client told)."""
    server = session.server
    if server is None or server.closed:
        return
    async with server_batch(session, server) as batch:
        await batch.after_relay(session._last_type in OPEN_BATCH)
        names = Renamer(session, server, batch)
        while True:
            buf = session._inbuf
            if buf[:1] and buf[0] not in _EXTENDED:
                await batch.flushed()
                break
            t, payload, raw = await session.next_message()
            if t not in _EXTENDED:  # came while waiting (Terminate, a Query...): not the batch's
                session._inbuf[0:0] = raw  # relayed after the batch, as if seen before
                await batch.flushed()
                break
            if t != ord("H") or payload:
                session._last_type = t  # an open batch (no Sync yet) keeps the connection
            if t == ord("S"):
                await batch.flushed()
                failed = batch.failed
                status = await batch.sync()
                names.synced(failed)
                session.write(B.ReadyForQuery(status).encode())
                session.tx_status = status
                session.pending_ready = 0
                break
            if batch.failed:
                continue
            try:
                msg = F.decode_frontend(t, payload) if t in _DECODED else None
            except ProtocolViolation:
                # a message the proxy cannot read goes to the server, which answers it as on
                # the client's own connection (a statement name it can read renamed first)
                if t == ord("P"):
                    names.malformed_parse(raw)
                    continue
                if t == ord("B"):
                    raw = await names.malformed_bind(raw)
                    if raw is None:
                        continue
                server.send(raw)
                batch.expect(_KIND[t])
                continue
            if t == ord("P"):
                if not msg.statement:
                    names.parse_unnamed(raw)
                    continue
                await names.parse(msg.statement, msg.query, msg.param_types)
            elif t == ord("B"):
                if msg.statement:
                    renamed = await names.bind(msg)
                    if renamed is None:
                        continue
                    raw = renamed
                elif not await names.unnamed():
                    continue
                server.send(raw)
                batch.expect("bind")
            elif t == ord("D"):
                if msg.kind == b"S" and msg.name:
                    renamed = await names.describe(msg.name)
                    if renamed is None:
                        continue
                    raw = renamed
                elif msg.kind == b"S" and not await names.unnamed():
                    continue
                server.send(raw)
                batch.expect("describe")
            elif t == ord("C"):
                if msg.kind == b"S" and msg.name:
                    names.close(msg.name)
                elif msg.kind == b"S":
                    names.close_unnamed(raw)
                else:
                    server.send(raw)
                    batch.expect("close")
            elif t == ord("E"):
                server.send(raw)
                batch.expect("execute")
            elif t == ord("H") and payload:  # Postgres fails it ("invalid message format")
                server.send(raw)
                batch.expect("malformed")  # no reply but its ErrorResponse
            elif t == ord("H"):
                await batch.flushed()


class Renamer:
    """Transaction pooling's statement renaming for one extended batch on ``server`` (see the
    module docstring), used by ``run_named_batch`` and by the extended ``iasql_*`` interceptor.
    Every change to what the client or the server connection holds is made when the server
    answers (``ServerBatch.expect`` callbacks)."""

    def __init__(self, session: "ClientSession", server: ServerConnection, batch: ServerBatch):
        self.session = session
        self.server = server
        self.batch = batch
        # what the messages sent in this batch will have made true once the server answers them
        # (later messages of the batch refer to it; if an earlier one fails, the server skips
        # them anyway): client name -> definition (None: closed), server name -> (text, types)
        self.client_pending: dict[str, tuple | None] = {}
        self.server_pending: dict[str, tuple | None] = {}
        self.unnamed_pending: bytes | None = None  # an unnamed Parse sent in this batch
        self.unnamed_closed = False                # ... or a Close of the unnamed statement

    def _sql_prepared(self, name: str) -> bool:
        """Whether ``name`` is a statement the client made with SQL ``PREPARE`` (it pins the
        client, and the server holds it under that very name), not one of its Parse messages."""
        return f"PREPARE {name}" in self.session.pins and self._client_def(name) is None

    def _client_def(self, name: str) -> tuple | None:
        if name in self.client_pending:
            return self.client_pending[name]
        return self.session.prepared.by_name.get(name)

    def _server_def(self, sname: str) -> tuple | None:
        if sname in self.server_pending:
            return self.server_pending[sname]
        return self.server.prepared.get(sname)

    async def parse(self, client_name: str, query: str, param_types: tuple[int, ...]) -> None:
        """A Parse of the client's statement ``client_name``, sent under its server name with a
        hidden Describe that records its result. When the client holds that name already, the
        connection is made to hold it too first, so that PostgreSQL answers the duplicate (42P05)
        itself, after the checks it makes first."""
        if self._sql_prepared(client_name):  # PostgreSQL answers 42P05 for the name itself
            self.server.send(F.Parse(client_name, query, param_types).encode())
            self.batch.expect("parse")
            return
        prepared = self.session.prepared
        sname = prepared.server_name(client_name)
        self.batch.aliases[sname] = client_name
        key = statement_key(query, param_types)
        held = self._client_def(client_name)
        if held is not None:
            if not await self._hold(sname, held):
                return
        elif self._server_def(sname) is not None:
            self._close_hidden(sname)  # an older text the client closed since: not the client's now
        stateful = may_change_state(query.encode())
        server = self.server
        described: list[tuple[int, bytes]] = []

        def parsed() -> None:
            prepared.by_name[client_name] = (query, key[1], stateful, None)
            prepared.param_counts.pop(client_name, None)
            server.prepared[sname] = key

        def recorded() -> None:
            entry = prepared.by_name.get(client_name)
            if entry is not None and entry[:2] == key:
                prepared.by_name[client_name] = (query, key[1], stateful, describe_key(described))
                for t, payload in described:
                    if t == ord("t") and len(payload) >= 2:
                        prepared.param_counts[client_name] = int.from_bytes(payload[:2], "big")

        server.send(F.Parse(sname, query, param_types).encode() + F.Describe(b"S", sname).encode())
        self.batch.expect("parse", done=parsed)
        self.batch.expect("describe", forward=described, done=recorded)
        if held is None:
            self.client_pending[client_name] = (query, key[1], stateful, None)
            self.server_pending[sname] = key

    async def bind(self, msg: F.Bind) -> bytes | None:
        """``msg`` (naming a client statement) with the server's name, the statement prepared on
        the server first when needed and the session state it may change noted; None (the error
        sent, the transaction failed) when the client holds no statement of that name (26000) or
        it cannot be prepared here as the client's."""
        if self._sql_prepared(msg.statement):
            return msg.encode()
        sname = await self._server_name(msg.statement)
        if sname is None:
            return None
        entry = self._client_def(msg.statement)
        if entry[2]:
            self.session.note_text_state(entry[0])
        return F.Bind(msg.portal, sname, msg.param_formats, msg.params, msg.result_formats).encode()

    async def describe(self, client_name: str) -> bytes | None:
        """Describe of the client's statement under the server's name (None as in ``bind``)."""
        if self._sql_prepared(client_name):
            return F.Describe(b"S", client_name).encode()
        sname = await self._server_name(client_name, describing=True)
        return None if sname is None else F.Describe(b"S", sname).encode()

    def close(self, client_name: str) -> None:
        """Close of the client's statement, sent under its server name (PostgreSQL answers
        CloseComplete for a name it does not hold too); the client's name is gone on CloseComplete."""
        session = self.session
        if self._sql_prepared(client_name):  # closes the SQL statement, as DEALLOCATE would

            def deallocated() -> None:
                session._unpin(f"DEALLOCATE {client_name}")

            self.server.send(F.Close(b"S", client_name).encode())
            self.batch.expect("close", done=deallocated)
            return
        prepared = session.prepared
        sname = prepared.server_name(client_name)
        server = self.server

        def closed() -> None:
            prepared.by_name.pop(client_name, None)
            server.prepared.pop(sname, None)

        server.send(F.Close(b"S", sname).encode())
        self.batch.expect("close", done=closed)
        self.client_pending[client_name] = None
        self.server_pending[sname] = None

    def _as_is(self, name: bytes) -> bool:
        """Whether a statement name the proxy cannot decode goes to the server unchanged: not
        UTF-8 while the client's encoding is UTF8, so PostgreSQL rejects the message while
        reading the name, before it looks anything up (22021), as on the client's own connection."""
        return not _utf8(name) and self.server.params.get("client_encoding", "UTF8").upper() in ("UTF8", "UTF-8")

    def malformed_parse(self, raw: bytes) -> None:
        """A Parse the proxy cannot read (``raw``, whole): sent with its name, when the name can
        be read, replaced by the client's server name, so PostgreSQL answers it as on the
        client's own connection (its message error) and never makes a statement under a name
        another client could use. Nothing changes for the client unless the server parses it
        after all (another client encoding): an unnamed one is then the client's unnamed
        statement; a named one is held by the connection under a definition that matches no
        client statement (closed before any Parse of that name)."""
        session, server = self.session, self.server
        nul = raw.find(b"\0", 5)
        done = None
        if nul > 5 and not self._as_is(raw[5:nul]):
            sname = session.prepared.server_name(raw[5:nul])
            raw = frame(b"P", sname.encode() + raw[nul:])

            def held() -> None:
                server.prepared[sname] = ("\0unreadable", ())

            done = held
        elif nul == 5:

            def parsed() -> None:
                session._unnamed = raw
                session._unnamed_here = True

            done = parsed
        server.send(raw)
        self.batch.expect("parse", done=done)

    async def malformed_bind(self, raw: bytes) -> bytes | None:
        """A Bind the proxy cannot read (``raw``, whole), as PostgreSQL reads it: when its portal
        and statement names can be read, the statement is looked up first (the client's one,
        renamed and held on this connection, or the unnamed one; the proxy's 26000 when the
        client has none) and the rest is left to the server, which rejects it. Returns the
        message to send, or None when the batch failed."""
        a = raw.find(b"\0", 5)
        b = raw.find(b"\0", a + 1) if a >= 0 else -1
        if b < 0 or not _utf8(raw[5:a]) or not _utf8(raw[a + 1:b]):
            return raw  # PostgreSQL rejects it while reading the names
        name = raw[a + 1:b].decode()
        if not name:
            return raw if await self.unnamed() else None
        if self._sql_prepared(name):
            return raw
        sname = await self._server_name(name)
        if sname is None:
            return None
        return frame(b"B", raw[5:a + 1] + sname.encode() + raw[b:])

    def parse_unnamed(self, raw: bytes) -> None:
        """The client's Parse of the unnamed statement, forwarded: once ParseComplete has come the
        client's unnamed statement is that one (kept whole, to be prepared again on another
        connection); a Parse that fails drops it, as PostgreSQL drops it before parsing."""
        session = self.session

        def parsed() -> None:
            session._unnamed = raw
            session._unnamed_here = True

        def failed() -> None:
            session._unnamed = None
            session._unnamed_here = False

        self.server.send(raw)
        self.batch.expect("parse", done=parsed, failed=failed)
        self.unnamed_pending = raw
        self.unnamed_closed = False

    async def unnamed(self) -> bool:
        """Before a Bind or Describe of the unnamed statement: make the connection hold the
        client's (it was parsed in an earlier transaction, maybe on another connection), hidden.
        Returns False (26000 sent, the transaction failed, as PostgreSQL's) when the client has
        none."""
        session = self.session
        if self.unnamed_pending is not None:
            return True
        if session._unnamed is None or self.unnamed_closed:
            self.batch.fail(B.error(sqlstate.INVALID_SQL_STATEMENT_NAME, "unnamed prepared statement does not exist"))
            return False
        if session._unnamed_here:
            return True
        raw = session._unnamed

        def held() -> None:
            session._unnamed_here = True

        self.server.send(raw)
        self.batch.expect("parse", forward="errors", done=held)
        self.unnamed_pending = raw
        return True

    def close_unnamed(self, raw: bytes) -> None:
        """Close of the unnamed statement, forwarded; it is gone once CloseComplete has come."""
        session = self.session

        def closed() -> None:
            session._unnamed = None
            session._unnamed_here = False

        self.server.send(raw)
        self.batch.expect("close", done=closed)
        self.unnamed_pending = None
        self.unnamed_closed = True

    def synced(self, failed: bool) -> None:
        """The batch reached Sync: what was pending is either answered (and recorded) or was
        skipped after an error (and never happened)."""
        self.client_pending.clear()
        self.server_pending.clear()
        self.unnamed_pending = None
        self.unnamed_closed = False

    async def _hold(self, sname: str, entry: tuple, describing: bool = False) -> bool:
        """Make the connection hold the client's statement ``entry`` under ``sname`` (hidden). An
        error of that Parse is the client's (PostgreSQL would give it for the client's message:
        25P02 in an aborted block, or what re-planning the statement fails with). When the result
        is not what the client's statement was described with at its Parse (DDL since), the
        client gets PostgreSQL's 0A000, as its own statement would fail (after the statement's
        ParameterDescription when ``describing``, as PostgreSQL answers a Describe). Returns False
        when the client's message must not be sent (the batch has failed)."""
        key = entry[:2]
        if self._server_def(sname) == key:
            return True
        if self._server_def(sname) is not None:
            self._close_hidden(sname)
        server = self.server
        described: list[tuple[int, bytes]] = []

        def held() -> None:
            server.prepared[sname] = key

        server.send(F.Parse(sname, key[0], key[1]).encode() + F.Describe(b"S", sname).encode())
        self.batch.expect("parse", forward="errors", done=held)
        self.batch.expect("describe", forward=described)
        self.server_pending[sname] = key
        await self.batch.flushed()
        if self.batch.failed:
            return False
        if entry[3] is not None and describe_key(described) != entry[3]:
            self._close_hidden(sname)  # not the client's statement: every later use fails alike
            if describing:  # PostgreSQL sends the ParameterDescription before it re-plans
                for t, payload in described:
                    if t == ord("t"):
                        self.batch.inject(frame(b"t", payload))
            self.batch.fail(B.error(sqlstate.FEATURE_NOT_SUPPORTED, "cached plan must not change result type"))
            return False
        return True

    def _close_hidden(self, sname: str) -> None:
        server = self.server

        def closed() -> None:
            server.prepared.pop(sname, None)

        server.send(F.Close(b"S", sname).encode())
        self.batch.expect("close", forward=False, done=closed)
        self.server_pending[sname] = None

    async def _server_name(self, client_name: str, describing: bool = False) -> str | None:
        """The server name of ``client_name``, held by the connection (prepared first when it is
        not); None (the error sent, the transaction failed) when the client never prepared it
        (PostgreSQL's 26000) or ``_hold`` refused."""
        entry = self._client_def(client_name)
        if entry is None:
            self.batch.fail(B.error(sqlstate.INVALID_SQL_STATEMENT_NAME,
                                    f'prepared statement "{client_name}" does not exist'))
            return None
        sname = self.session.prepared.server_name(client_name)
        self.batch.aliases[sname] = client_name
        if not await self._hold(sname, entry, describing):
            return None
        return sname


async def run_watched_query(session: "ClientSession", named: tuple[str, str, int, int] | None) -> None:
    """Run the Query at the head of the session's input (one statement: DEALLOCATE, DISCARD ALL,
    or PREPARE/EXECUTE/DEALLOCATE naming a statement the client prepared with Parse) and change
    the statement bookkeeping only as the server's answer says.

    ``named`` (from ``analyze``'s ``statement_name``: verb, client name, offsets of the name in the
    text) maps the client's protocol-level statement to its server name, so the statement behaves
    as on the client's own connection: ``EXECUTE`` runs it (prepared on this connection first,
    its errors and PostgreSQL's 0A000 after a change of result type being the client's);
    ``PREPARE`` of that name fails with PostgreSQL's 42P05 after the server parsed its body;
    ``DEALLOCATE`` drops it, refused with 25P02 in an aborted block (the name stays). Without
    ``named``, ``DEALLOCATE ALL``/``DISCARD ALL`` forget every statement of the client and of the
    connection once their CommandComplete came. A lost server ends the session as Postgres clients
    expect."""
    raw = session.take_message()
    server = session.server
    prepared = session.prepared
    server.detach()
    aliases: dict[bytes, bytes] = {}
    try:
        if named is not None:
            verb, name, a, b = named
            entry = prepared.by_name[name]
            sname = prepared.server_name(name)
            aliases[b'"' + sname.encode() + b'"'] = b'"' + name.encode() + b'"'
            text = F.Query.decode(raw[5:]).query
            if verb == "execute":
                failure = await _hold_for_execute(session, server, sname, entry)
                if failure is not None:
                    session.tx_status = server.status
                    session.write(failure)
                    return
                if entry[2]:
                    session.note_text_state(entry[0])
            elif sname not in server.prepared:
                # DEALLOCATE and PREPARE only need the name to exist on this connection: an empty
                # statement (refused with 25P02 in an aborted block, exactly as those commands are)
                server.send(F.Parse(sname, "").encode() + F.Sync().encode())
                for t, payload in await _until_ready(session, server):
                    if t == ord("1"):
                        server.prepared[sname] = ("", ())
            raw = F.Query(text[:a] + '"' + sname + '"' + text[b:]).encode()
        server.send(raw)
        out: list[bytes] = []
        while True:
            t, payload = await server.recv()
            if t == ord("Z"):
                status = server.status = bytes(payload[:1])
                break
            if t == ord("C"):
                tag = bytes(payload[:-1])
                if tag == b"DEALLOCATE" and named is not None and named[0] == "deallocate":
                    prepared.by_name.pop(named[1], None)
                    server.prepared.pop(prepared.server_name(named[1]), None)
                elif tag in (b"DEALLOCATE ALL", b"DISCARD ALL"):
                    prepared.by_name.clear()
                    server.prepared.clear()
            elif t == ord("S"):
                ps = B.ParameterStatus.decode(payload)
                server.params[ps.name] = ps.value
            elif t == ord("E"):
                for sq, cq in aliases.items():
                    payload = payload.replace(sq, cq)
            out.append(frame(bytes((t,)), payload))
        out.append(B.ReadyForQuery(status).encode())
        session.tx_status = status
        session.write(b"".join(out))
    except ServerError:
        session.server_lost(server)
        return
    finally:
        if not server.closed and session.server is server:
            server.attach(session)


async def _until_ready(session: "ClientSession", server: ServerConnection) -> list[tuple[int, bytes]]:
    """The server's messages up to ReadyForQuery (recorded as ``server.status``); notifications are
    the client's and reach it."""
    got = []
    while True:
        t, payload = await server.recv()
        if t == ord("Z"):
            server.status = bytes(payload[:1])
            return got
        if t == ord("A"):
            session.write(frame(b"A", payload))
        got.append((t, payload))


async def _hold_for_execute(session: "ClientSession", server: ServerConnection, sname: str,
                            entry: tuple) -> bytes | None:
    """Make ``server`` hold the client's statement ``entry`` under ``sname`` before an SQL EXECUTE
    of it. Returns None when it does, or the messages to answer the Query with instead (the
    server's error and ReadyForQuery): the Parse's own failure (PostgreSQL re-planning the
    statement for EXECUTE fails alike), or 0A000 "cached plan must not change result type" when
    its result is not the one described at the client's Parse (the server's transaction is failed
    too, as PostgreSQL fails it)."""
    key = entry[:2]
    if server.prepared.get(sname) == key:
        return None
    head = F.Close(b"S", sname).encode() if sname in server.prepared else b""
    server.send(head + F.Parse(sname, key[0], key[1]).encode() + F.Describe(b"S", sname).encode() + F.Sync().encode())
    server.prepared.pop(sname, None)
    got = await _until_ready(session, server)
    status = server.status
    for t, payload in got:
        if t == ord("E"):
            return frame(b"E", payload) + B.ReadyForQuery(status).encode()
    if entry[3] is not None and describe_key(got) != entry[3]:
        # not the client's statement (every later EXECUTE fails alike); fail the transaction
        server.send(F.Close(b"S", sname).encode() + F.Execute("iasql_proxy_failed").encode() + F.Sync().encode())
        await _until_ready(session, server)
        return (B.error(sqlstate.FEATURE_NOT_SUPPORTED, "cached plan must not change result type")
                + B.ReadyForQuery(server.status).encode())
    server.prepared[sname] = key
    return None
