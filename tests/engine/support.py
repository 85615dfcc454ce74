"""Test helpers for the engine: a caller over psycopg (engine.local), and call shortcuts."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import psycopg

from engine.local import PsycopgCaller, call_in_transaction
from engine.rpc import CallContext, Registry


@dataclass
class Ctx:
    """One caller's session straight to Postgres with ``dsn`` (``engine.local.PsycopgCaller``,
    opened on first use, one transaction per ``call``); progress lines are collected.

    ``cancel_after_progress = n`` sets ``cancelled`` when the n-th cloud-operation progress line
    (create/update/replace/delete) arrives, i.e. while that operation runs.
    """

    dsn: str
    database: str
    user: str = "postgres"
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    lines: list[str] = field(default_factory=list)
    cancel_after_progress: int | None = None
    caller: PsycopgCaller | None = None

    async def open(self) -> PsycopgCaller:
        """The caller (its connection opened on first use)."""
        if self.caller is None or self.caller.conn.closed:
            self.caller = await PsycopgCaller.connect(self.dsn, cancelled=self.cancelled, on_progress=self.progress)
        return self.caller

    async def close(self) -> None:
        if self.caller is not None:
            await self.caller.close()
            self.caller = None

    def progress(self, message: str) -> None:
        self.lines.append(message)
        ops = [ln for ln in self.lines if ln.startswith(("create ", "update ", "replace ", "delete "))]
        if self.cancel_after_progress is not None and len(ops) >= self.cancel_after_progress:
            self.cancelled.set()


_: type[CallContext] = PsycopgCaller  # structural check for readers


async def call(reg: Registry, ctx: Ctx, name: str, *args):
    """Call registry function ``name`` with ``args`` as one statement of ``ctx``'s session
    (committed on success; rolled back, with the ERROR row recorded, on failure); returns its rows."""
    fn = reg.get(name)
    assert fn is not None, name
    return await call_in_transaction(fn, await ctx.open(), *args)


async def sql(dsn: str, query: str, params=None):
    """Run one statement as the user (autocommit); returns rows or None."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(query, params)
        return await cur.fetchall() if cur.description else None
