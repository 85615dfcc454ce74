"""One engine call's view of the database: the caller's transaction, the IaSQL lock, audit rows.

``EngineSession`` wraps the caller (``engine.rpc.CallContext``). Every statement goes through
``CallContext.run``, so it runs on the caller's own server connection, inside the caller's
transaction and with the caller's rights: a call's table changes are visible to the caller's next
statement and are rolled back with the caller's transaction, and a role that may not create or
read a table gets the same 42501 from a call as from its own SQL.

On entry (one round trip) it reads the caller's ``search_path``, sets it to ``public, pg_temp``
for the call (besides, every function and table the engine names carries its schema, ``public.``
or ``pg_catalog.``, so no object of a user's schema is ever run in place of one; the path matters
only to the triggers users put on module tables), marks the transaction as the engine's with the
transaction-local setting ``iasql.engine_call`` (the audit trigger then records the engine's
writes as ``iasql_engine``, see ``engine.schema``), and checks the metadata marker. It creates the
metadata when missing and optionally takes the per-database IaSQL lock: a transaction-level
advisory lock, held until the caller's transaction ends. On a normal exit it puts both settings
back (so the caller's later statements in the same transaction are attributed to the caller).
On a failure it converts the exception to ``EngineError`` and marks it for the ``ERROR`` audit row
(``EngineError.audit``), which the caller writes once its transaction has ended
(``engine.error_row``): nothing more is run, since the caller's transaction may be aborted.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Sequence

from psycopg import sql
from psycopg.types.json import Json

from engine.aws import AwsGateway, CloudError, Credentials
from engine.locks import holder_of, take_xact_lock
from engine.rpc import EngineError, Result, SqlError
from engine.schema import ENGINE_GUC, ENGINE_USER, METADATA_MARKER_SQL, ensure_metadata, metadata_marker
from engine.settings import EngineSettings

#: Advisory lock (two-int form; advisory locks are per database) held by mutating calls.
ENGINE_LOCK = (7355608, 1)
#: Transaction-local setting through which ``lock_if_no_transaction`` answers.
BEGIN_GUC = "iasql.begin_locked"
#: The search_path the engine's statements run with (restored when the call ends).
ENGINE_SEARCH_PATH = "public, pg_temp"


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
    """Map any failure to an EngineError: engine and server errors keep their SQLSTATE, cloud
    errors get 58000, a cancelled task 57014, anything else XX000."""
    if isinstance(exc, EngineError):
        return exc
    if isinstance(exc, CloudError):
        return EngineError("58000", f"AWS call failed: {exc}")
    if isinstance(exc, asyncio.CancelledError):
        return cancelled_error()
    return EngineError("XX000", f"internal engine error: {type(exc).__name__}: {exc}")


async def refuse_in_read_only(ctx: Any, function: str) -> None:
    """Refuse a call that changes the cloud when the caller's transaction is read-only
    (``BEGIN READ ONLY``, ``SET default_transaction_read_only = on``, a hot standby), before it
    makes any cloud call: otherwise the cloud change would be made and only the row write after it
    would fail, losing what the call returned (a secret key, a private key) and leaving an orphan.

    Takes the caller's ``CallContext`` and the function's SQL name; runs one statement
    (``current_setting('transaction_read_only')``) in the caller's transaction. Returns None.
    Raises EngineError 25006 with Postgres's own wording, ``cannot execute <function> in a
    read-only transaction`` (not recorded as an ERROR audit row: nothing could be written), or
    the server's error (``SqlError``) when the statement fails (25P02 in an aborted transaction).
    """
    res = await ctx.run("SELECT pg_catalog.current_setting('transaction_read_only')", ())
    if res.rows and res.rows[0][0] == "on":
        raise EngineError("25006", f"cannot execute {function} in a read-only transaction")


def query_text(query: str | sql.Composable) -> str:
    """``query`` as SQL text (a ``psycopg.sql`` composition is rendered; it only ever holds
    identifiers and SQL fragments, values travel as ``$n`` parameters)."""
    return query if isinstance(query, str) else query.as_string(None)


class EngineSession:
    """``async with EngineSession(ctx, state, "iasql_commit", lock=True) as s:`` …

    Takes the caller's ``CallContext``, the registry's ``EngineState``, the function's SQL name,
    whether to take the IaSQL lock, and whether a failure is recorded as an ``ERROR`` audit row.
    Raises EngineError: 55P03 when the lock is not obtained within ``lock_wait_timeout`` (the
    message names the holder from ``pg_stat_activity``), 57014 when cancelled while waiting,
    the server's SQLSTATE (``SqlError``) when a statement fails (e.g. 42501 without privileges).
    """

    def __init__(self, ctx: Any, state: EngineState, function: str, *, lock: bool = False,
                 record_errors: bool = True):
        self.ctx = ctx
        self.state = state
        self.settings = state.settings
        self.function = function
        self.want_lock = lock
        self.record_errors = record_errors
        self.search_path: str | None = None

    # -- lifecycle --------------------------------------------------------------------------------
    async def __aenter__(self) -> "EngineSession":
        try:
            row = await self.fetchone(
                f"SELECT pg_catalog.current_setting('search_path'), pg_catalog.set_config('search_path', $1, true), "
                f"pg_catalog.set_config('{ENGINE_GUC}', 'on', true), ({METADATA_MARKER_SQL})", (ENGINE_SEARCH_PATH,))
            assert row is not None
            self.search_path = row[0]
            if row[3] != metadata_marker():
                await ensure_metadata(self.ctx, self.state.functions, lock_timeout=self.settings.lock_wait_timeout)
            if self.want_lock:
                await self.acquire_lock()
        except BaseException as e:
            err = self._failed(e)
            if err is e:
                raise
            raise err from e
        return self

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if exc is not None:
            err = self._failed(exc)
            if err is not exc:
                raise err from exc
            return False
        await self.run(f"SELECT pg_catalog.set_config('search_path', $1, true), "
                       f"pg_catalog.set_config('{ENGINE_GUC}', 'off', true)",
                       (self.search_path,))
        return False

    def _failed(self, exc: BaseException) -> EngineError:
        """``exc`` as an EngineError, marked for the ERROR audit row when this function records
        its failures (a missing IaSQL transaction, 25P01, is not recorded, as in IaSQL)."""
        err = to_engine_error(exc)
        if self.record_errors and err.sqlstate != "25P01" and err.audit is None:
            err.audit = f"{self.function}: {err.message}" + (f"\n{err.detail}" if err.detail else "")
        return err

    # -- statements -------------------------------------------------------------------------------
    async def run(self, query: str | sql.Composable, params: Sequence[Any] = ()) -> Result:
        """Run one statement in the caller's transaction. Raises SqlError."""
        return await self.ctx.run(query_text(query), tuple(params))

    async def execute(self, query: str | sql.Composable, params: Sequence[Any] = ()) -> str:
        """Run one statement; returns its command tag."""
        return (await self.run(query, params)).command

    async def fetchall(self, query: str | sql.Composable, params: Sequence[Any] = ()) -> list[tuple]:
        """Rows of ``query``."""
        return (await self.run(query, params)).rows

    async def fetchone(self, query: str | sql.Composable, params: Sequence[Any] = ()) -> tuple | None:
        """First row of ``query`` or None."""
        rows = (await self.run(query, params)).rows
        return rows[0] if rows else None

    def check_cancelled(self) -> None:
        """Raise EngineError 57014 when the client has cancelled."""
        if self.ctx.cancelled.is_set():
            raise cancelled_error()

    # -- lock -------------------------------------------------------------------------------------
    async def lock_holder(self) -> str:
        """A description of the session holding the IaSQL lock on this database (or 'unknown')."""
        return await holder_of(self.ctx, ENGINE_LOCK)

    async def acquire_lock(self, timeout: float | None = None) -> None:
        """Take the per-database IaSQL lock as a transaction-level advisory lock, held until the
        caller's transaction ends (``engine.locks``), waiting up to ``timeout`` seconds (default
        ``lock_wait_timeout``). Raises EngineError 55P03 naming the holder, or 57014."""
        timeout = self.settings.lock_wait_timeout if timeout is None else timeout

        async def failure() -> EngineError:
            return EngineError(
                "55P03",
                f"could not obtain the IaSQL lock on database \"{self.ctx.database}\" within "
                f"{timeout:g} s: it is held by {await self.lock_holder()}",
                hint="Another iasql_* call is running on this database, or a transaction that "
                     "made one is still open; try again when it ends.")

        await take_xact_lock(self.ctx, ENGINE_LOCK, timeout=timeout, failure=failure,
                             waiting=f"waiting for another IaSQL call on database \"{self.ctx.database}\" to finish")

    async def lock_if_no_transaction(self) -> bool:
        """Take the IaSQL lock if nobody holds it and no IaSQL transaction is open (never waits);
        True when taken, and then no transaction is open and none can be opened by anyone else
        until the caller's transaction ends.

        The lock is tried, and the open transaction looked for after it is taken (a fresh
        snapshot sees what every earlier holder committed), inside one ``DO`` block's
        sub-transaction: when a transaction turns out to be open (one opened between the
        caller's first look and the lock), the sub-transaction is rolled back, which releases
        the lock again, so the caller can wait for that transaction without keeping it from
        closing. The answer comes back through the transaction-local setting ``BEGIN_GUC``."""
        ttl = float(self.settings.transaction_ttl_seconds)
        await self.run(f"""DO $iasql_begin$
DECLARE _got boolean := false;
BEGIN
  BEGIN
    _got := pg_catalog.pg_try_advisory_xact_lock({ENGINE_LOCK[0]:d}, {ENGINE_LOCK[1]:d});
    IF _got AND (SELECT change_type = 'OPEN_TRANSACTION' FROM public.iasql_audit_log
                  WHERE change_type IN ('OPEN_TRANSACTION', 'CLOSE_TRANSACTION')
                    AND ts > pg_catalog.now() - pg_catalog.make_interval(secs => {ttl!r}::pg_catalog.float8)
                  ORDER BY id DESC LIMIT 1) THEN
      RAISE EXCEPTION USING ERRCODE = 'P0001';  -- rolls the sub-transaction back: the lock goes with it
    END IF;
  EXCEPTION WHEN raise_exception THEN _got := false;
  END;
  PERFORM pg_catalog.set_config('{BEGIN_GUC}', _got::pg_catalog.text, true);
END $iasql_begin$""")
        row = await self.fetchone(f"SELECT pg_catalog.current_setting('{BEGIN_GUC}')")
        return bool(row and row[0] == "true")

    async def _sleep(self, seconds: float) -> None:
        """Sleep up to ``seconds``, waking at once when the client cancels."""
        try:
            await asyncio.wait_for(self.ctx.cancelled.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    # -- audit log ---------------------------------------------------------------------------------
    async def log(self, change_type: str, *, message: str | None = None, change: dict | None = None,
                  transaction_id: str | None = None, table_name: str = "iasql_audit_log") -> int:
        """Insert an engine row into ``iasql_audit_log`` (in the caller's transaction); returns its id."""
        row = await self.fetchone(
            'INSERT INTO public.iasql_audit_log ("user", table_name, change_type, change, message, transaction_id) '
            "VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            (ENGINE_USER, table_name, change_type, Json(change or {}), message, transaction_id))
        assert row is not None
        return row[0]

    # -- IaSQL transactions ------------------------------------------------------------------------
    async def open_transaction(self) -> tuple[str, Any, str] | None:
        """(transaction_id, opened ts, message) of the open IaSQL transaction, or None.

        A transaction is open when the latest OPEN/CLOSE_TRANSACTION row is an OPEN younger than
        ``transaction_ttl_seconds`` (IaSQL: 30 minutes)."""
        row = await self.fetchone(
            """SELECT change_type, transaction_id, ts, message FROM public.iasql_audit_log
                WHERE change_type IN ('OPEN_TRANSACTION', 'CLOSE_TRANSACTION')
                  AND ts > pg_catalog.now() - pg_catalog.make_interval(secs => $1::pg_catalog.float8)
                ORDER BY id DESC LIMIT 1""", (float(self.settings.transaction_ttl_seconds),))
        if row is None or row[0] != "OPEN_TRANSACTION":
            return None
        return row[1], row[2], row[3] or ""

    async def require_transaction(self, what: str, function: str | None = None) -> str:
        """The open transaction's id; raises EngineError 25P01 when there is none, its message
        saying what could not be done (``what``, e.g. "commit") and its hint which function to call
        again (``function``, default ``iasql_<what>``)."""
        tx = await self.open_transaction()
        if tx is None:
            raise EngineError("25P01", f"Cannot {what}: no open IaSQL transaction",
                              hint="Call SELECT * FROM iasql_begin(); first, make your changes, then "
                                   f"call {function or 'iasql_' + what}().")
        return tx[0]

    # -- AWS --------------------------------------------------------------------------------------
    async def table_exists(self, name: str) -> bool:
        """True when public.<name> exists."""
        row = await self.fetchone("SELECT pg_catalog.to_regclass($1) IS NOT NULL", (f"public.{name}",))
        return bool(row and row[0])

    async def credentials(self) -> Credentials:
        """The first ``aws_credentials`` row; with none, and a sandbox endpoint configured, moto's
        ``testing`` pair; otherwise boto3's default chain (None, None)."""
        if await self.table_exists("aws_credentials"):
            row = await self.fetchone(
                "SELECT access_key_id, secret_access_key FROM public.aws_credentials ORDER BY id LIMIT 1")
            if row:
                return Credentials(row[0], row[1])
        if self.settings.aws_endpoint_url:
            return Credentials("testing", "testing")
        return Credentials(None, None)

    async def regions(self) -> tuple[list[str], str]:
        """(enabled regions, default region) from ``aws_regions`` (us-east-1 without it).

        The default is read as ``default_aws_region()`` reads it (the ``is_default`` row, else
        us-east-1), not by calling that function: it lives in schema ``public``, whose owner may
        rewrite it, and a call runs it with the caller's rights (issue 16)."""
        if not await self.table_exists("aws_regions"):
            return ["us-east-1"], "us-east-1"
        rows = await self.fetchall("SELECT region FROM public.aws_regions WHERE is_enabled ORDER BY region")
        default = (await self.fetchone("SELECT coalesce((SELECT region FROM public.aws_regions WHERE is_default), "
                                       "'us-east-1')"))[0]
        regions = [r[0] for r in rows]
        if default not in regions:
            regions.append(default)
        return regions, default

    async def installed(self) -> list[str]:
        """Installed module names (``name@version``)."""
        return [r[0] for r in await self.fetchall("SELECT name FROM public.iasql_module ORDER BY name")]


def ident(name: str) -> sql.Identifier:
    """A quoted SQL identifier."""
    return sql.Identifier(name)


def placeholders(n: int, start: int = 1) -> str:
    """``$start, $start+1, ...`` (``n`` of them)."""
    return ", ".join(f"${i}" for i in range(start, start + n))


__all__ = ["EngineSession", "EngineState", "ENGINE_LOCK", "SqlError", "cancelled_error", "to_engine_error",
           "refuse_in_read_only",
           "ident", "placeholders", "query_text"]
