"""A ``CallContext`` over a plain psycopg connection: the engine without the proxy.

``iasql-proxy init-db`` and the engine's own tests use it; the proxy uses its own implementation
over the client's server connection (``proxy.intercept.caller``). One ``PsycopgCaller`` is one
caller's session: its connection is not in autocommit, so every statement a call runs belongs to
the transaction the connection has open, which the owner ends with ``commit()``/``rollback()``,
as a client ends its own transaction around a function call.

``call_in_transaction`` runs one registry function the way a client's single statement runs:
in a transaction of its own, committed on success and rolled back on failure, after which the
call's ``ERROR`` audit row (``engine.rpc.EngineError.audit``) is written in a new transaction.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import psycopg

from engine.rpc import EngineError, Function, Result, SqlError


def sql_error(exc: psycopg.Error) -> SqlError:
    """A psycopg error as ``SqlError`` with the server's fields (protocol field codes)."""
    d = exc.diag
    fields = {"S": d.severity or "ERROR", "C": exc.sqlstate or "XX000", "M": d.message_primary or str(exc)}
    for code, value in (("D", d.message_detail), ("H", d.message_hint), ("s", d.schema_name),
                        ("t", d.table_name), ("c", d.column_name), ("n", d.constraint_name)):
        if value:
            fields[code] = value
    return SqlError(fields)


@dataclass
class PsycopgCaller:
    """``engine.rpc.CallContext`` over one ``psycopg.AsyncConnection`` (autocommit off).

    ``database``/``user``: what the engine is told; ``on_progress``: called with each progress
    line (default: kept in ``lines``). Create with ``await PsycopgCaller.connect(dsn)``.
    """

    conn: psycopg.AsyncConnection
    database: str
    user: str
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    lines: list[str] = field(default_factory=list)
    on_progress: Callable[[str], None] | None = None

    @classmethod
    async def connect(cls, dsn: str, **kw: Any) -> "PsycopgCaller":
        """Open a connection to ``dsn`` (autocommit off). Raises psycopg.OperationalError."""
        conn = await psycopg.AsyncConnection.connect(dsn, autocommit=False)
        return cls(conn=conn, database=conn.info.dbname, user=conn.info.user, **kw)

    async def run(self, query: str, params: Sequence[Any] = ()) -> Result:
        """Run one statement (``$n`` placeholders) in the connection's transaction. Raises
        SqlError; the transaction is then aborted until ``rollback()``."""
        cur = psycopg.AsyncRawCursor(self.conn)
        try:
            await cur.execute(query, tuple(params) or None)
            rows = await cur.fetchall() if cur.description else []
            columns = tuple(c.name for c in cur.description or ())
            return Result(columns, list(rows), cur.statusmessage or "")
        except psycopg.Error as e:
            raise sql_error(e) from None
        finally:
            await cur.close()

    def progress(self, message: str) -> None:
        """Keep (or hand on) one progress line."""
        self.lines.append(message)
        if self.on_progress is not None:
            self.on_progress(message)

    async def commit(self) -> None:
        """Commit the connection's transaction. Raises SqlError (e.g. a deferred constraint)."""
        try:
            await self.conn.commit()
        except psycopg.Error as e:
            raise sql_error(e) from None

    async def rollback(self) -> None:
        """Roll the connection's transaction back."""
        await self.conn.rollback()

    async def close(self) -> None:
        """Close the connection (an open transaction is rolled back by the server)."""
        await self.conn.close()


async def record_error(caller: PsycopgCaller, err: EngineError) -> None:
    """Write ``err``'s ERROR audit row and run its followup (``engine.after_failure``), each in a
    transaction of its own (best effort: a database without the audit log, or a caller without
    the right to write it, records nothing)."""
    from engine import after_failure

    for query, params in after_failure(err):
        try:
            await caller.run(query, params)
            await caller.commit()
        except EngineError:
            await caller.rollback()


async def call_in_transaction(fn: Function, caller: PsycopgCaller, *args: Any) -> list[tuple]:
    """Run ``fn`` with ``args`` as one statement of its own: commit on success; on failure roll
    back, record the ERROR row, and raise the EngineError (SQLSTATE as the function raised it)."""
    try:
        rows = list(await fn.impl(caller, *args))
        await caller.commit()
        return rows
    except EngineError as err:
        await caller.rollback()
        await record_error(caller, err)
        raise
    except BaseException:
        await caller.rollback()
        raise


def init_db(dsn: str) -> None:
    """Create the IaSQL metadata in the database ``dsn`` names (for ``iasql-proxy init-db NAME``).

    Runs ``engine.schema.ensure_metadata`` for the full registry in one transaction of a fresh
    psycopg connection, as the DSN's user. Raises psycopg.OperationalError when it cannot connect,
    ``engine.rpc.SqlError`` from the DDL (e.g. 42501 without CREATE on schema public).
    """
    from engine import build_registry
    from engine.schema import ensure_metadata

    registry = build_registry()
    registry.engine_state.aws.close()  # type: ignore[attr-defined]

    async def run() -> None:
        caller = await PsycopgCaller.connect(dsn)
        try:
            await ensure_metadata(caller, [fn for fn in registry.functions.values() if fn.module is None])
            await caller.commit()
        finally:
            await caller.close()

    asyncio.run(run())
