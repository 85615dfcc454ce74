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

*Prepared statements follow the client.* A named Parse gets a server-side name derived from its
text and parameter types, shared by every client that prepares the same statement; each server
connection knows which it holds. Bind/Describe/Close of a client's name are renamed, and the
statement is prepared first on a connection that lacks it. Such batches run through the owed-reply
queue (``ServerBatch``) so replies the client did not ask for are dropped and the ones it expects
(ParseComplete for a statement the connection already had, CloseComplete) are inserted in order.

*What cannot follow pins*: SQL PREPARE, LISTEN, temporary tables, cursors WITH HOLD, session
advisory locks and LOAD keep the client on its connection until the state is gone (UNLISTEN *,
DEALLOCATE ALL, DISCARD, CLOSE ALL, pg_advisory_unlock_all) or the client leaves; a log line says why.
"""

from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING

from proxy.backend.batch import ServerBatch, server_batch
from proxy.backend.connection import ServerConnection
from proxy.intercept.values import array_literal
from proxy.router.session_state import may_change_state
from proxy.wire import backend as B
from proxy.wire import frontend as F
from proxy.wire import sqlstate

if TYPE_CHECKING:
    from proxy.frontend.session import ClientSession

log = logging.getLogger("iasql_proxy.transaction")

_EXTENDED = frozenset(map(ord, "PBDECHS"))
#: GUCs that must be applied before others (SET SESSION AUTHORIZATION resets ROLE).
_FIRST = ("session_authorization",)
_RESET_SPECIAL = {"session_authorization": "RESET SESSION AUTHORIZATION", "role": "RESET ROLE"}


def server_statement_name(query: str, param_types: tuple[int, ...]) -> str:
    """The server-side name of a prepared statement: ``iasqlp_`` + 24 hex digits of SHA-256 over
    its text and parameter types, so identical statements share one server statement."""
    h = hashlib.sha256(query.encode() + b"\0" + b",".join(str(t).encode() for t in param_types)).hexdigest()
    return "iasqlp_" + h[:24]


def _literal(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


async def apply_state(session: "ClientSession", server: ServerConnection) -> None:
    """Make ``server``'s session parameters equal the client's (``session.gucs``), in one Query whose
    replies (including ParameterStatus) are not forwarded. Raises ServerError."""
    want: dict[str, str] = session.gucs
    have: dict[str, str] = server.gucs
    if want == have:
        return
    parts: list[str] = []
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
    server.gucs = dict(want)
    server.custom_seen |= {n for n in want if "." in n}


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
    rows = await server.extended_query(PINNED_STATE_QUERY, [], deliver=session.write)
    return bool(rows) and rows[0][0] == b"t"


class PreparedStatements:
    """A client's named prepared statements: client name -> (server name, query, parameter types,
    stateful); ``stateful`` is True when the query may change session state (``may_change_state``):
    each Bind of it is noted like the text itself (``ClientSession.note_text_state``), since a
    client may Parse in one transaction (Parse, Sync) and execute in later ones.

    ``confirmed`` holds the client names whose Parse is known to have succeeded (a batch that
    prepared them reached Sync without error); a name not confirmed may be parsed again.
    """

    def __init__(self) -> None:
        self.by_name: dict[str, tuple[str, str, tuple[int, ...], bool]] = {}
        self.confirmed: set[str] = set()


def needs_rename(t: int, buf: bytearray, pos: int, end: int) -> bool:
    """Whether message ``t`` at ``buf[pos:end]`` names a prepared statement (cheap byte checks only)."""
    body = pos + 5
    if t == ord("P"):
        return buf[body] != 0
    if t == ord("B"):
        nul = buf.find(b"\0", body, end)
        return nul >= 0 and nul + 1 < end and buf[nul + 1] != 0
    if t in (ord("D"), ord("C")):
        return buf[body] == ord("S") and buf[body + 1] != 0
    return False


def rename_inline(session: "ClientSession", t: int, payload: bytes) -> bytes | None:
    """The fast path of statement renaming: a Bind or Describe with the client's statement name
    replaced by the server's, when that server connection holds the statement for sure. None when
    the slow path (``run_named_batch``) is needed. Raises ProtocolViolation on a malformed message."""
    server = session.server
    if server is None:
        return None
    by_name = session.prepared.by_name
    if t == ord("P"):
        return None  # a Parse is confirmed through the slow path (once per statement and client)
    if t == ord("B"):
        msg = F.Bind.decode(payload)
        entry = by_name.get(msg.statement)
        if entry is None or entry[0] not in server.prepared:
            return None
        if entry[3]:
            session.note_text_state(entry[1])
        return F.Bind(msg.portal, entry[0], msg.param_formats, msg.params, msg.result_formats).encode()
    if t == ord("D"):
        msg = F.Describe.decode(payload)
        entry = by_name.get(msg.name)
        if entry is None or entry[0] not in server.prepared:
            return None
        return F.Describe(b"S", entry[0]).encode()
    return None  # Close: the client's CloseComplete is made up by the slow path


async def run_named_batch(session: "ClientSession") -> None:
    """Process extended messages from the head of the session's input up to Sync, renaming named
    statements (see the module docstring). The session holds a leased ``server`` here."""
    server = session.server
    async with server_batch(session, server) as batch:
        names = Renamer(session, server, batch)
        while True:
            buf = session._inbuf
            if buf[:1] and buf[0] not in _EXTENDED:
                await batch.flushed()
                break
            t, payload, raw = await session.next_message()
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
            if t == ord("P"):
                msg = F.Parse.decode(payload)
                if not msg.statement:
                    server.send(raw)
                    batch.expect("parse")
                    continue
                names.parse(msg.statement, msg.query, msg.param_types)
            elif t == ord("B"):
                msg = F.Bind.decode(payload)
                if msg.statement:
                    renamed = names.bind(msg)
                    if renamed is None:
                        continue
                    raw = renamed
                server.send(raw)
                batch.expect("bind")
            elif t == ord("D"):
                msg = F.Describe.decode(payload)
                if msg.kind == b"S" and msg.name:
                    renamed = names.describe(msg.name)
                    if renamed is None:
                        continue
                    raw = renamed
                server.send(raw)
                batch.expect("describe")
            elif t == ord("C"):
                msg = F.Close.decode(payload)
                if msg.kind == b"S" and msg.name:
                    names.close(msg.name)
                else:
                    server.send(raw)
                    batch.expect("close")
            elif t == ord("E"):
                server.send(raw)
                batch.expect("execute")
            elif t == ord("H"):
                await batch.flushed()


class Renamer:
    """Transaction pooling's statement renaming for one extended batch on ``server`` (see the
    module docstring), used by ``run_named_batch`` and by the extended ``iasql_*`` interceptor.
    It remembers the server names parsed on the connection and the client names used in the
    batch, for ``synced``."""

    def __init__(self, session: "ClientSession", server: ServerConnection, batch: ServerBatch):
        self.session = session
        self.server = server
        self.batch = batch
        self.parsed_here: set[str] = set()   # server names parsed on this connection in this batch
        self.named_here: set[str] = set()    # client names parsed or used in this batch

    def parse(self, client_name: str, query: str, param_types: tuple[int, ...]) -> None:
        """A Parse of the client's statement ``client_name``: recorded under its shared server
        name (``server_statement_name``) and parsed on the server unless it holds it already
        (then ParseComplete is made up). A name already confirmed gets PostgreSQL's 42P05 and
        fails the batch."""
        prepared = self.session.prepared
        batch = self.batch
        if client_name in prepared.confirmed:
            self.session.write(B.error(sqlstate.DUPLICATE_PREPARED_STATEMENT,
                                       f'prepared statement "{client_name}" already exists'))
            batch.failed = True
            return
        sname = server_statement_name(query, param_types)
        prepared.by_name[client_name] = (sname, query, param_types, may_change_state(query.encode()))
        self.named_here.add(client_name)
        if sname in self.server.prepared:
            batch.inject(B.ParseComplete().encode())
        else:
            # Close first: after an earlier failed batch the server may hold it already
            self.server.send(F.Close(b"S", sname).encode() + F.Parse(sname, query, param_types).encode())
            batch.expect("close", forward=False)
            batch.expect("parse")
            self.parsed_here.add(sname)

    def bind(self, msg: F.Bind) -> bytes | None:
        """``msg`` (naming a client statement) with the server's name, the statement prepared on
        the server first when needed and the session state it may change noted; None (with
        26000 sent and the batch failed) when the client never prepared it."""
        sname = self._server_name(msg.statement)
        if sname is None:
            return None
        entry = self.session.prepared.by_name[msg.statement]
        if entry[3]:
            self.session.note_text_state(entry[1])
        return F.Bind(msg.portal, sname, msg.param_formats, msg.params, msg.result_formats).encode()

    def describe(self, client_name: str) -> bytes | None:
        """Describe of the client's statement under the server's name (None as in ``bind``)."""
        sname = self._server_name(client_name)
        return None if sname is None else F.Describe(b"S", sname).encode()

    def close(self, client_name: str) -> None:
        """Close of the client's statement: forgotten for this client, CloseComplete made up; the
        shared server statement stays for other clients."""
        self.session.prepared.by_name.pop(client_name, None)
        self.session.prepared.confirmed.discard(client_name)
        self.batch.inject(B.CloseComplete().encode())

    def synced(self, failed: bool) -> None:
        """The batch reached Sync: unless it ``failed``, the statements parsed in it are now held
        by the server and the client's names used in it are confirmed."""
        if not failed:
            self.server.prepared |= self.parsed_here
            prepared = self.session.prepared
            prepared.confirmed |= {n for n in self.named_here if n in prepared.by_name}
        self.parsed_here.clear()

    def _server_name(self, client_name: str) -> str | None:
        """The server name of ``client_name``, preparing it on the server first when needed; None
        (and an ErrorResponse, as PostgreSQL's 26000) when the client never prepared it."""
        self.named_here.add(client_name)
        entry = self.session.prepared.by_name.get(client_name)
        if entry is None:
            self.session.write(B.error(sqlstate.INVALID_SQL_STATEMENT_NAME,
                                       f'prepared statement "{client_name}" does not exist'))
            self.batch.failed = True
            return None
        sname, query, types, _ = entry
        if sname not in self.server.prepared and sname not in self.parsed_here:
            self.server.send(F.Close(b"S", sname).encode() + F.Parse(sname, query, types).encode())
            self.batch.expect("close", forward=False)
            self.batch.expect("parse", forward=False)
            self.parsed_here.add(sname)
        return sname
