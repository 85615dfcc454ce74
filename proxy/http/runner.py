"""A script run through the proxy's own listener: the /run endpoint's PostgreSQL side.

Why a real connection to the proxy's own port: every statement then takes exactly the path a psql
user's statement takes (login and its checks, ``max_client_conn``, pooling, the fast path, the
``iasql_*`` interception, cancel, timeouts), so /run has no second implementation of any of it to
keep in step. The link is a :class:`proxy.backend.connection.ServerConnection`, the proxy's own
PostgreSQL client (its codec, TLS and SCRAM), pointed at the proxy over loopback and logged in
with the user's own password; a CancelRequest for it goes to the same listener, as psql's Ctrl-C
does.

Each statement of the script (cut by :func:`proxy.router.split.split`, the splitter the
interception uses, the original text byte for byte) is sent as its own Query, as psql sends the
statements of a file, so each statement's result is complete, and sent to the browser, the moment
its CommandComplete arrives. The run stops at the first error (psql's ``ON_ERROR_STOP``). One link
is one session: ``BEGIN`` in one run and ``COMMIT`` in the next work, as in psql.

Rows are read only as fast as the browser takes them: ``emit`` waits for the WebSocket to drain,
and meanwhile the link's collect-mode queue stops reading its socket past ``INBOX_HIGH_WATER``
bytes (``proxy.backend.connection``), so the proxy's listener, and then Postgres, wait for the
browser: a slow reader holds back its own results instead of the proxy holding them.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any, Awaitable, Callable

from proxy.backend.connection import Credentials, ServerConnection, ServerError, send_cancel
from proxy.config import DatabaseTarget
from proxy.router.split import Statement, split
from proxy.wire import backend as B
from proxy.wire import frontend as F

from .protocol import CHUNK_BYTES, ROW_CHUNK, error_fields, local_error

log = logging.getLogger("iasql_proxy.http")

Emit = Callable[[dict[str, Any]], Awaitable[None]]

_T, _D, _C, _E, _N, _A, _S, _Z = (ord(c) for c in "TDCENASZ")
_G, _H, _CD, _CDONE, _I = ord("G"), ord("H"), ord("d"), ord("c"), ord("I")

#: Start-up parameters of a /run session: ``application_name`` shows it in SHOW CLIENTS and
#: pg_stat_activity; UTF8 because the browser's JSON is Unicode.
STARTUP_PARAMS = {"application_name": "iasql-console", "client_encoding": "UTF8"}


def loopback_tls_context() -> ssl.SSLContext:
    """The TLS context of the link to the proxy's own listener: TLS 1.2+, no certificate check
    (the peer is this process, reached over loopback; the check that matters, the user's
    password, is SCRAM's, channel-bound when the proxy offers it)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


class ProxyLink:
    """One PostgreSQL session with the proxy's own listener, as one user, for one WebSocket.

    Create with ``await ProxyLink.open(...)``. ``run`` runs a script, ``cancel`` sends a
    CancelRequest for the statement running now, ``close`` ends the session (Terminate).
    """

    def __init__(self, conn: ServerConnection, target: DatabaseTarget, cancel_timeout: float):
        self.conn = conn
        self.target = target
        self.cancel_timeout = cancel_timeout
        self.running = False
        self.busy = False  # a Query was sent and its ReadyForQuery has not come yet
        self.stop_requested = False

    @classmethod
    async def open(cls, target: DatabaseTarget, user: str, password: str, database: str, *,
                   tls: bool, timeout: float, cancel_timeout: float) -> "ProxyLink":
        """Log in to the proxy at ``target`` (host, port) as ``user`` with ``password`` on
        ``database``, over TLS when ``tls``; within ``timeout`` seconds.

        Returns the link. Raises ServerError with the proxy's SQLSTATE (28P01 wrong password,
        3D000 unknown database, 53300 too many clients, 08006 unreachable).
        """
        conn = await ServerConnection.open(target, user, database, dict(STARTUP_PARAMS),
                                           tls_mode="require" if tls else "disable",
                                           tls_context=loopback_tls_context() if tls else None,
                                           credentials=Credentials(password=password), timeout=timeout)
        return cls(conn, target, cancel_timeout)

    @property
    def closed(self) -> bool:
        """True once the session has ended (closed here, or by the proxy)."""
        return self.conn.closed

    async def cancel(self) -> None:
        """Cancel the statement running now and run no further statement of this script: a
        CancelRequest with this session's key to the proxy's listener (the proxy forwards it to
        Postgres, or stops an ``iasql_*`` call at its next safe point; the statement fails with
        57014). Nothing happens when no run is going on and no statement is in flight."""
        if not (self.running or self.busy):
            return
        self.stop_requested = True
        key = self.conn.backend_key
        if key is not None:
            await send_cancel(self.target, key, self.cancel_timeout)

    def close(self) -> None:
        """End the session with Terminate (no-op when already closed)."""
        if not self.conn.closed:
            self.conn.send(F.Terminate().encode())
            self.conn.close()

    async def run(self, script: str, emit: Emit) -> None:
        """Run ``script`` statement by statement, calling ``emit`` with each server message of the
        /run protocol (``proxy.http.protocol``) as soon as it is known; ``{"done": true}`` is the
        caller's. Stops after the first statement that fails or after ``cancel``.

        Raises ServerError when the link to the proxy fails mid-run, and whatever ``emit`` raises
        (a WebSocket that closed): the link is then in an unknown state and must be closed.
        """
        scs = self.conn.params.get("standard_conforming_strings", "on") == "on"
        statements = split(script, standard_conforming_strings=scs)
        if statements is None:  # cannot be lexed (an unterminated quote...): Postgres says where
            statements = [Statement(0, len(script), script)]
        self.running, self.stop_requested = True, False
        try:
            for i, stmt in enumerate(statements):
                if self.stop_requested:
                    break
                if not await self._statement(i, stmt, emit):
                    break
        finally:
            self.running = False

    async def _statement(self, i: int, stmt: Statement, emit: Emit) -> bool:
        """Send one statement as a Query and relay its answer up to ReadyForQuery; False when it failed."""
        conn = self.conn
        conn.send(F.Query(stmt.text).encode())
        self.busy = True
        base: dict[str, Any] = {"statement": i, "text": stmt.text, "start": stmt.start}
        columns: list[str] | None = None
        types: list[int] | None = None
        rows: list[list[str | None]] = []
        size = 0
        ok = True
        while True:
            t, payload = await conn.recv()
            if t == _D:
                values = B.DataRow.decode(payload).values
                rows.append([None if v is None else v.decode("utf-8", "replace") for v in values])
                size += len(payload)
                if len(rows) >= ROW_CHUNK or size >= CHUNK_BYTES:
                    await emit({**base, "columns": columns, "types": types, "rows": rows})
                    rows, size = [], 0
            elif t == _T:
                fields = B.RowDescription.decode(payload).fields
                columns, types = [f.name for f in fields], [f.type_oid for f in fields]
            elif t == _C:
                tag = B.CommandComplete.decode(payload).tag
                msg = {**base, "command": tag}
                if columns is not None:
                    msg.update(columns=columns, types=types, rows=rows)
                await emit(msg)
                columns = types = None
                rows, size = [], 0
            elif t == _I:  # EmptyQueryResponse (cannot happen after split, but say something)
                await emit({**base, "command": ""})
            elif t == _E:
                ok = False
                await emit({**base, "error": error_fields(B.ErrorResponse.decode(payload))})
            elif t == _N:
                fields = B.NoticeResponse.decode(payload)
                await emit({"notice": fields.message, "severity": fields.get("S"), "statement": i})
            elif t == _A:
                n = B.NotificationResponse.decode(payload)
                await emit({"notification": {"channel": n.channel, "payload": n.payload}, "statement": i})
            elif t == _S:
                ps = B.ParameterStatus.decode(payload)
                conn.params[ps.name] = ps.value
            elif t == _G:  # COPY FROM STDIN: there is no input to send over /run
                conn.send(F.CopyFail("COPY FROM STDIN is not available over /run").encode())
            elif t == _H:  # COPY TO STDOUT: its lines become rows of one column
                columns, types = ["COPY"], [25]
            elif t == _CD:
                rows.append([payload.decode("utf-8", "replace").rstrip("\n")])
                size += len(payload)
            elif t == _Z:
                conn.status = payload[:1]
                self.busy = False
                return ok
            # CopyDone and anything else: nothing to show


def run_error(sqlstate: str, message: str) -> dict[str, Any]:
    """A server message with an endpoint error that is no statement's (see ``protocol``)."""
    return {"error": local_error(sqlstate, message)}


__all__ = ["ProxyLink", "ServerError", "loopback_tls_context", "run_error", "STARTUP_PARAMS"]
