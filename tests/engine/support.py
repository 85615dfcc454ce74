"""Test helpers for the engine: a real CallContext over psycopg, and call shortcuts."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import psycopg

from engine.rpc import CallContext, Registry


@dataclass
class Ctx:
    """A CallContext whose connections go straight to Postgres with ``dsn``; progress is collected.

    ``cancel_after_progress = n`` sets ``cancelled`` when the n-th cloud-operation progress line
    (create/update/replace/delete) arrives, i.e. while that operation runs.
    """

    dsn: str
    database: str
    user: str = "postgres"
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    lines: list[str] = field(default_factory=list)
    cancel_after_progress: int | None = None

    async def connect(self):
        return await psycopg.AsyncConnection.connect(self.dsn)

    def progress(self, message: str) -> None:
        self.lines.append(message)
        ops = [ln for ln in self.lines if ln.startswith(("create ", "update ", "replace ", "delete "))]
        if self.cancel_after_progress is not None and len(ops) >= self.cancel_after_progress:
            self.cancelled.set()


_: type[CallContext] = Ctx  # structural check for readers


async def call(reg: Registry, ctx: Ctx, name: str, *args):
    """Call registry function ``name`` with ``args``; returns its rows."""
    fn = reg.get(name)
    assert fn is not None, name
    return await fn.impl(ctx, *args)


async def sql(dsn: str, query: str, params=None):
    """Run one statement as the user (autocommit); returns rows or None."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(query, params)
        return await cur.fetchall() if cur.description else None
