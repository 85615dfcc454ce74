"""Diff database rows against cloud records and act on the difference.

- ``apply`` (commit, preview): push the entities the user changed since the last successful
  commit/rollback to the cloud: creates and updates in dependency order, deletes in reverse,
  pass after pass until one makes no progress. Every cloud operation reports a progress line,
  checks for cancellation first, and writes the cloud-managed columns (ids, ARNs) back to its row
  at once, so a cancel or a crash between operations leaves the tables truthful.
- ``sync`` (commit, rollback, install): make the tables match the cloud: deletes leaf-to-root,
  then inserts and updates root-to-leaf.

Follows IaSQL's ``commit``/``apply``/``sync`` in ``iasql_functions/iasql.ts`` (diff by cloud id,
only user-changed entities applied first, retries until no progress, sync back), in Python.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from psycopg import sql
from psycopg.types.json import Json, Jsonb

from engine.aws import CloudError
from engine.core.session import EngineSession, placeholders
from engine.modules.base import Mapper, MapperContext, normalize
from engine.rpc import EngineError
from engine.schema import ENGINE_USER


@dataclass
class Touched:
    """What the user changed in one table: primary keys and cloud keys (both normalized)."""

    pks: set = field(default_factory=set)
    keys: set = field(default_factory=set)


@dataclass
class Op:
    """One planned action on one entity: ``create``/``update``/``replace``/``delete``."""

    action: str
    mapper: Mapper
    row: dict | None
    cloud: dict | None

    def plan_row(self, prefix: str = "") -> tuple:
        """(action, table_name, id, description) as IaSQL's plan rows."""
        rec = self.row if self.row is not None else self.cloud
        assert rec is not None
        return (self.action, self.mapper.table, self.mapper.id_string(rec), prefix + self.mapper.describe(rec))


def _pk_of(mapper: Mapper, rec: dict) -> tuple:
    return tuple(normalize(mapper.col(p).kind, rec.get(p)) for p in mapper.pk)


async def user_changes(s: EngineSession, mappers: list[Mapper], after_id: int, before_id: int) -> dict[str, Touched]:
    """Touched entities per table from the user's (non-engine) audit rows in (after_id, before_id)."""
    by_table = {m.table: m for m in mappers}
    rows = await s.fetchall(
        """SELECT table_name, change FROM iasql_audit_log
            WHERE id > $1 AND id < $2 AND "user" <> $3 AND change_type IN ('INSERT', 'UPDATE', 'DELETE')
              AND table_name = ANY($4::varchar[]) ORDER BY id""", (after_id, before_id, ENGINE_USER, list(by_table)))
    out: dict[str, Touched] = {}
    for table, change in rows:
        m = by_table[table]
        t = out.setdefault(table, Touched())
        if isinstance(change, str):
            change = json.loads(change)
        for side in ("original", "change"):
            rec = (change or {}).get(side)
            if not rec:
                continue
            t.pks.add(_pk_of(m, rec))
            k = m.key_of(rec)
            if k is not None:
                t.keys.add(k)
    return out


async def commit_window_start(s: EngineSession) -> int:
    """The audit id after which user changes are still to be applied: the START id of the last
    successful commit or rollback (0 when none)."""
    row = await s.fetchone(
        """SELECT (change->>'start_id')::bigint FROM iasql_audit_log
            WHERE change_type IN ('END_COMMIT', 'END_REVERT') AND change->>'status' = 'ok'
            ORDER BY id DESC LIMIT 1""")
    return int(row[0]) if row and row[0] is not None else 0


async def read_db(s: EngineSession, mapper: Mapper) -> list[dict]:
    """Every row of the mapper's table as dicts of its mapped columns."""
    names = [c.name for c in mapper.columns]
    q = sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(map(sql.Identifier, names)),
                                           sql.Identifier(mapper.table))
    return [dict(zip(names, r)) for r in await s.fetchall(q)]


def adapt(kind: str, value: Any) -> Any:
    """A Python value ready to be sent for a column of ``kind``."""
    if value is None:
        return None
    if kind == "json":
        return Json(json.loads(value) if isinstance(value, str) else value)
    if kind == "jsonb":
        return Jsonb(json.loads(value) if isinstance(value, str) else value)
    if kind == "text[]":
        return list(value)
    if kind == "cidr":
        return str(value)
    if kind == "timestamp":
        return normalize("timestamp", value)
    return value


def diff_for_apply(mapper: Mapper, rows: list[dict], cloud: list[dict], touched: Touched) -> list[Op]:
    """Cloud actions for the entities the user touched (rows without a cloud key are always created)."""
    by_key = {}
    for c in cloud:
        k = mapper.key_of(c)
        if k is not None:
            by_key[k] = c
    ops: list[Op] = []
    db_keys = set()
    for row in rows:
        k = mapper.key_of(row)
        mine = _pk_of(mapper, row) in touched.pks or (k is not None and k in touched.keys)
        if k is None:
            ops.append(Op("create", mapper, row, None))
            continue
        db_keys.add(k)
        c = by_key.get(k)
        if c is None:
            if mine:
                ops.append(Op("create", mapper, row, None))
        elif mine and not mapper.equals(row, c):
            ops.append(Op("replace" if mapper.needs_replace(row, c) else "update", mapper, row, c))
    for k, c in by_key.items():
        if k not in db_keys and k in touched.keys:
            ops.append(Op("delete", mapper, None, c))
    return ops


def _assignments(cols: list) -> sql.Composable:
    """``"c1" = $1, "c2" = $2, ...`` for ``cols`` (Col objects)."""
    return sql.SQL(", ").join(sql.SQL("{} = ${}").format(sql.Identifier(c.name), sql.SQL(str(i)))
                              for i, c in enumerate(cols, 1))


def _conditions(names: tuple | list, start: int = 1) -> sql.Composable:
    """``"p1" = $start AND "p2" = $start+1 ...`` for the column ``names``."""
    return sql.SQL(" AND ").join(sql.SQL("{} = ${}").format(sql.Identifier(p), sql.SQL(str(i)))
                                 for i, p in enumerate(names, start))


async def _write_back(s: EngineSession, mapper: Mapper, row: dict, rec: dict) -> None:
    cols = [c for c in mapper.columns if c.role == "cloud" or c.name in mapper.key]
    cols = [c for c in cols if c.name not in mapper.pk or mapper.pk == mapper.key]
    if not cols:
        return
    q = sql.SQL("UPDATE {} SET {} WHERE {}").format(
        sql.Identifier(mapper.table), _assignments(cols),
        _conditions(mapper.pk, start=len(cols) + 1))
    params = [adapt(c.kind, rec.get(c.name)) for c in cols] + [row.get(p) for p in mapper.pk]
    await s.execute(q, params)


async def _run_op(s: EngineSession, mc: MapperContext, op: Op) -> None:
    m = op.mapper
    if op.action == "create":
        assert op.row is not None
        rec = await m.create(mc, op.row)
        await _write_back(s, m, op.row, rec)
    elif op.action == "update":
        assert op.row is not None and op.cloud is not None
        rec = await m.update(mc, op.row, op.cloud)
        await _write_back(s, m, op.row, rec)
    elif op.action == "replace":
        assert op.row is not None and op.cloud is not None
        await m.delete(mc, op.cloud)
        rec = await m.create(mc, op.row)
        await _write_back(s, m, op.row, rec)
    elif op.action == "delete":
        assert op.cloud is not None
        await m.delete(mc, op.cloud)


async def apply(s: EngineSession, mc: MapperContext, mappers: list[Mapper], touched: dict[str, Touched],
                *, dry_run: bool) -> list[tuple]:
    """Push user changes to the cloud; returns plan rows of what was done (or would be, dry_run).

    Raises EngineError 58000 when a pass makes no progress while operations still fail (message
    lists each failure), 57014 when cancelled between operations, 55P03 on a lock timeout.
    """
    mappers = [m for m in mappers if m.table in touched]
    done: list[tuple] = []
    failures: dict[tuple, str] = {}
    for _ in range(max(1, s.settings.max_apply_passes)):
        ops: list[Op] = []
        for m in mappers:
            s.check_cancelled()
            rows = await read_db(s, m)
            s.ctx.progress(f"reading {m.table} from the cloud")
            cloud = await m.read(mc)
            ops += diff_for_apply(m, rows, cloud, touched[m.table])
        if dry_run:
            return [op.plan_row() for op in ops]
        if not ops:
            return done
        order = {m.table: i for i, m in enumerate(mappers)}
        deletes = sorted((o for o in ops if o.action == "delete"), key=lambda o: -order[o.mapper.table])
        others = sorted((o for o in ops if o.action != "delete"), key=lambda o: order[o.mapper.table])
        progress = 0
        failures = {}
        for op in deletes + others:
            s.check_cancelled()
            action, table, ident_, desc = op.plan_row()
            s.ctx.progress(f"{action} {desc}")
            try:
                await _run_op(s, mc, op)
            except CloudError as e:
                failures[(action, table, ident_)] = f"{action} {desc}: {e}"
                s.ctx.progress(f"failed: {action} {desc}: {e}")
                continue
            progress += 1
            done.append(op.plan_row())
        if failures and progress == 0:
            break
    if failures:
        listed = list(failures.values())
        summary = "; ".join(listed[:3]) + (f"; and {len(listed) - 3} more" if len(listed) > 3 else "")
        raise EngineError("58000", "Forward progress halted. All remaining Cloud changes failing to apply: "
                          + summary, detail="\n".join(listed))
    raise EngineError("58000", "Forward progress halted: changes keep reappearing after "
                      f"{s.settings.max_apply_passes} passes")


async def _insert_row(s: EngineSession, m: Mapper, rec: dict) -> None:
    cols = m.synced_cols
    q = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
        sql.Identifier(m.table), sql.SQL(", ").join(sql.Identifier(c.name) for c in cols),
        sql.SQL(placeholders(len(cols))))
    await s.execute(q, [adapt(c.kind, rec.get(c.name)) for c in cols])


async def _update_row(s: EngineSession, m: Mapper, row: dict, rec: dict) -> None:
    cols = m.synced_cols
    q = sql.SQL("UPDATE {} SET {} WHERE {}").format(
        sql.Identifier(m.table), _assignments(cols), _conditions(m.pk, start=len(cols) + 1))
    await s.execute(q, [adapt(c.kind, rec.get(c.name)) for c in cols] + [row.get(p) for p in m.pk])


async def _delete_row(s: EngineSession, m: Mapper, row: dict) -> None:
    q = sql.SQL("DELETE FROM {} WHERE {}").format(sql.Identifier(m.table), _conditions(m.pk))
    await s.execute(q, [row.get(p) for p in m.pk])


async def sync(s: EngineSession, mc: MapperContext, mappers: list[Mapper], *, dry_run: bool = False) -> list[tuple]:
    """Make the tables of ``mappers`` match the cloud; returns (action, table, id, description) rows
    of the database changes. Raises EngineError 57014 between tables when cancelled, CloudError
    on a failed read, psycopg errors (e.g. 55P03 lock timeout) on a failed write."""
    out: list[tuple] = []
    cache: dict[str, list[dict]] = {}
    for m in reversed(mappers):
        s.check_cancelled()
        s.ctx.progress(f"reading {m.table} from the cloud")
        cloud = await m.read(mc)
        cache[m.table] = cloud
        keys = {m.key_of(c) for c in cloud}
        for row in await read_db(s, m):
            k = m.key_of(row)
            if k is None or k not in keys:
                out.append(Op("delete", m, row, None).plan_row())
                if not dry_run:
                    await _delete_row(s, m, row)
    for m in mappers:
        s.check_cancelled()
        if m.cloud_read_uses_db:
            s.ctx.progress(f"reading {m.table} from the cloud")
            cloud = await m.read(mc)
        else:
            cloud = cache[m.table]
        rows = {m.key_of(r): r for r in await read_db(s, m)}
        for c in cloud:
            k = m.key_of(c)
            if k is None:
                continue
            row = rows.get(k)
            if row is None:
                out.append(Op("create", m, c, None).plan_row())
                if not dry_run:
                    await _insert_row(s, m, c)
            elif not m.synced_equals(row, c):
                out.append(Op("update", m, row, c).plan_row())
                if not dry_run:
                    await _update_row(s, m, row, c)
    return out
