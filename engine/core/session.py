"""One engine call's database session: connection setup, the per-database lock, audit-log writes.

``EngineSession`` wraps ``CallContext.connect()``: it switches the connection to autocommit, marks
it as the engine's (``iasql.engine_call``, see ``engine.schema``), sets ``lock_timeout`` and an
``application_name`` that names the running function, creates the metadata when missing, and
optionally takes the per-database IaSQL advisory lock. On the way out it converts any failure into
``EngineError`` (recording it in ``iasql_audit_log`` as an ``ERROR`` row, which is what
``iasql_get_errors`` lists), releases the lock and closes the connection.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from engine.aws import AwsGateway, CloudError, Credentials
from engine.rpc import EngineError
from engine.schema import ENGINE_GUC, ENGINE_USER, ensure_metadata
from engine.settings import EngineSettings

#: Advisory lock (two-int form; advisory locks are per database) held by mutating calls.
ENGINE_LOCK = (7355608, 1)


@dataclass
class EngineState:
    """What all calls of one registry share: settings, the AWS gateway and the stub functions."""

    settings: EngineSettings
    aws: AwsGateway
    functions: list = field(default_factory=list)


def cancelled_error() -> EngineError:
    """The error raised at a safe point after the client cancelled (SQLSTATE 57014)."""
    return EngineError("57014", "canceling statement due to user request")


def to_engine_error(exc: BaseException) -> EngineError:
    """Map any failure to an EngineError: psycopg errors keep their SQLSTATE, cloud errors get
    58000, anything else XX000."""
    if isinstance(exc, EngineError):
        return exc
    if isinstance(exc, CloudError):
        return EngineError("58000", f"AWS call failed: {exc}")
    if isinstance(exc, psycopg.errors.LockNotAvailable):
        return EngineError("55P03", f"could not obtain a lock within the engine's lock_timeout: {exc}",
                           hint="A transaction holds a lock on an IaSQL table; commit or roll it back "
                                "and call the function again.")
    if isinstance(exc, psycopg.Error):
        diag = exc.diag
        return EngineError(exc.sqlstate or "XX000", diag.message_primary or str(exc),
                           detail=diag.message_detail, hint=diag.message_hint)
    if isinstance(exc, asyncio.CancelledError):
        return cancelled_error()
    return EngineError("XX000", f"internal engine error: {type(exc).__name__}: {exc}")


class EngineSession:
    """``async with EngineSession(ctx, state, "iasql_commit", lock=True) as s:`` …

    Raises EngineError: 55P03 when the lock is not obtained within ``lock_wait_timeout`` (the
    message names the holder from ``pg_stat_activity``), 57014 when cancelled while waiting.
    """

    def __init__(self, ctx: Any, state: EngineState, function: str, *, lock: bool = False,
                 record_errors: bool = True):
        self.ctx = ctx
        self.state = state
        self.settings = state.settings
        self.function = function
        self.want_lock = lock
        self.record_errors = record_errors
        self.conn: Any = None
        self.locked = False

    # -- lifecycle --------------------------------------------------------------------------------
    async def __aenter__(self) -> "EngineSession":
        try:
            self.conn = await self.ctx.connect()
            await self.conn.set_autocommit(True)
            ms = int(self.settings.statement_lock_timeout * 1000)
            await self.conn.execute(
                "SELECT set_config(%s, 'on', false), set_config('lock_timeout', %s, false), "
                "set_config('application_name', %s, false)",
                (ENGINE_GUC, f"{ms}ms", f"iasql-engine {self.function} (pid {os.getpid()})"[:63]))
            await ensure_metadata(self.conn, self.state.functions)
            if self.want_lock:
                await self.acquire_lock()
        except BaseException as e:
            await self._close()
            raise to_engine_error(e) from e
        return self

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        err: EngineError | None = None
        if exc is not None:
            err = to_engine_error(exc)
            if self.record_errors and err.sqlstate != "25P01":
                await self.log_error(err.message if not err.detail else f"{err.message}\n{err.detail}")
        await self._close()
        if err is not None and err is not exc:
            raise err from exc
        return False

    async def _close(self) -> None:
        if self.conn is None:
            return
        try:
            if self.locked and not self.conn.closed:
                if self.conn.info.transaction_status != 0:
                    await self.conn.rollback()
                await self.conn.execute("SELECT pg_advisory_unlock(%s, %s)", ENGINE_LOCK)
        except Exception:
            pass  # closing the connection releases the lock anyway
        finally:
            self.locked = False
            try:
                await self.conn.close()
            except Exception:
                pass
            self.conn = None

    # -- lock -------------------------------------------------------------------------------------
    async def lock_holder(self) -> str:
        """A description of the session holding the IaSQL lock on this database (or 'unknown')."""
        cur = await self.conn.execute(
            """SELECT a.pid, a.usename, a.application_name, a.client_addr::text, a.state,
                      a.backend_start, a.query_start, left(a.query, 200)
                 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                WHERE l.locktype = 'advisory' AND l.granted
                  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                  AND l.classid = %s AND l.objid = %s AND l.objsubid = 2""", ENGINE_LOCK)
        row = await cur.fetchone()
        if row is None:
            return "unknown (the holder was not visible in pg_stat_activity)"
        pid, user, app, addr, state, started, qstart, query = row
        return (f"pid {pid} (user {user}, application \"{app}\", client {addr or 'local'}, "
                f"connected since {started:%Y-%m-%d %H:%M:%S%z}, state {state}, "
                f"last query at {qstart:%H:%M:%S}: {query!r})" if started and qstart else
                f"pid {pid} (user {user}, application \"{app}\", state {state})")

    async def acquire_lock(self, timeout: float | None = None) -> None:
        """Take the per-database IaSQL advisory lock, polling until ``timeout`` (default
        ``lock_wait_timeout``). Raises EngineError 55P03 naming the holder, or 57014."""
        timeout = self.settings.lock_wait_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        reported = False
        while True:
            cur = await self.conn.execute("SELECT pg_try_advisory_lock(%s, %s)", ENGINE_LOCK)
            if (await cur.fetchone())[0]:
                self.locked = True
                return
            if self.ctx.cancelled.is_set():
                raise cancelled_error()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                holder = await self.lock_holder()
                raise EngineError(
                    "55P03",
                    f"could not obtain the IaSQL lock on database \"{self.ctx.database}\" within "
                    f"{timeout:g} s: it is held by {holder}",
                    hint="Another iasql_* call is running on this database; try again when it finishes.")
            if not reported:
                self.ctx.progress(f"waiting for another IaSQL call on database \"{self.ctx.database}\" to finish")
                reported = True
            await asyncio.sleep(min(0.1, remaining))

    # -- helpers ----------------------------------------------------------------------------------
    def check_cancelled(self) -> None:
        """Raise EngineError 57014 when the client has cancelled."""
        if self.ctx.cancelled.is_set():
            raise cancelled_error()

    async def fetchall(self, query: Any, params: Any = None) -> list[tuple]:
        """Rows of ``query``."""
        async with self.conn.cursor() as cur:
            await cur.execute(query, params)
            return await cur.fetchall()

    async def fetchone(self, query: Any, params: Any = None) -> tuple | None:
        """First row of ``query`` or None."""
        async with self.conn.cursor() as cur:
            await cur.execute(query, params)
            return await cur.fetchone()

    async def log(self, change_type: str, *, message: str | None = None, change: dict | None = None,
                  transaction_id: str | None = None, table_name: str = "iasql_audit_log") -> int:
        """Insert an engine row into ``iasql_audit_log``; returns its id."""
        row = await self.fetchone(
            'INSERT INTO iasql_audit_log ("user", table_name, change_type, change, message, transaction_id) '
            "VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
            (ENGINE_USER, table_name, change_type, json.dumps(change or {}), message, transaction_id))
        assert row is not None
        return row[0]

    async def log_error(self, message: str) -> None:
        """Record an ERROR row (best effort: never raises)."""
        try:
            if self.conn is not None and not self.conn.closed:
                if self.conn.info.transaction_status != 0:
                    await self.conn.rollback()
                await self.log("ERROR", message=f"{self.function}: {message}")
        except Exception:
            pass

    # -- IaSQL transactions ------------------------------------------------------------------------
    async def open_transaction(self) -> tuple[str, Any, str] | None:
        """(transaction_id, opened ts, user) of the open IaSQL transaction, or None.

        A transaction is open when the latest OPEN/CLOSE_TRANSACTION row is an OPEN younger than
        ``transaction_ttl_seconds`` (IaSQL: 30 minutes)."""
        row = await self.fetchone(
            """SELECT change_type, transaction_id, ts, message FROM iasql_audit_log
                WHERE change_type IN ('OPEN_TRANSACTION', 'CLOSE_TRANSACTION')
                  AND ts > now() - make_interval(secs => %s)
                ORDER BY id DESC LIMIT 1""", (self.settings.transaction_ttl_seconds,))
        if row is None or row[0] != "OPEN_TRANSACTION":
            return None
        return row[1], row[2], row[3] or ""

    async def require_transaction(self, what: str) -> str:
        """The open transaction's id; raises EngineError 25P01 when there is none."""
        tx = await self.open_transaction()
        if tx is None:
            raise EngineError("25P01", f"Cannot {what}: no open IaSQL transaction",
                              hint="Call SELECT * FROM iasql_begin(); first, make your changes, then "
                                   f"call iasql_{what}().")
        return tx[0]

    # -- AWS --------------------------------------------------------------------------------------
    async def table_exists(self, name: str) -> bool:
        """True when public.<name> exists."""
        row = await self.fetchone("SELECT to_regclass(%s) IS NOT NULL", (f"public.{name}",))
        return bool(row and row[0])

    async def credentials(self) -> Credentials:
        """The first ``aws_credentials`` row; with none, and a sandbox endpoint configured, moto's
        ``testing`` pair; otherwise boto3's default chain (None, None)."""
        if await self.table_exists("aws_credentials"):
            row = await self.fetchone("SELECT access_key_id, secret_access_key FROM aws_credentials ORDER BY id LIMIT 1")
            if row:
                return Credentials(row[0], row[1])
        if self.settings.aws_endpoint_url:
            return Credentials("testing", "testing")
        return Credentials(None, None)

    async def regions(self) -> tuple[list[str], str]:
        """(enabled regions, default region) from ``aws_regions`` (us-east-1 without it)."""
        if not await self.table_exists("aws_regions"):
            return ["us-east-1"], "us-east-1"
        rows = await self.fetchall("SELECT region FROM aws_regions WHERE is_enabled ORDER BY region")
        default = (await self.fetchone("SELECT default_aws_region()"))[0]
        regions = [r[0] for r in rows]
        if default not in regions:
            regions.append(default)
        return regions, default

    async def installed(self) -> list[str]:
        """Installed module names (``name@version``)."""
        return [r[0] for r in await self.fetchall("SELECT name FROM iasql_module ORDER BY name")]


def ident(name: str) -> sql.Identifier:
    """A quoted SQL identifier."""
    return sql.Identifier(name)
