"""Diff database rows against cloud records and act on the difference.

- ``apply`` (commit, preview): push the entities the user changed since the last successful
  commit/rollback to the cloud (or, ``touched=None``, every row that differs from the cloud):
  creates and updates in dependency order, deletes in reverse, pass after pass until one makes
  no progress. Every cloud operation reports a progress line, checks for cancellation first, is
  recorded in the commit's ``Journal`` (so ``undo`` can take it back) and writes the
  cloud-managed columns (ids, ARNs) back to its row at once. A replace re-creates the children
  (``Mapper.children``) of the replaced entity on the replacement.
- ``sync`` (commit, rollback, install): make the tables match the cloud: deletes leaf-to-root,
  then inserts and updates root-to-leaf.
- ``undo``: take back a journal's cloud changes, newest first (a failed commit's revert).

Both ``apply`` and ``sync`` leave alone the entities changed by anyone after the commit started
(``late``: audit rows the commit did not see when it read the user's changes), and rows in
regions that are not enabled (the cloud read does not cover them).

Follows IaSQL's ``commit``/``apply``/``sync`` in ``iasql_functions/iasql.ts`` (diff by cloud id,
only user-changed entities applied first, retries until no progress, sync back), in Python.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from psycopg import sql
from psycopg.types.json import Json, Jsonb

from engine.aws import CloudError, ReadUnavailable
from engine.core.session import EngineSession, placeholders
from engine.modules.base import Mapper, MapperContext, normalize
from engine.rpc import EngineError
from engine.schema import ENGINE_USER


@dataclass
class Touched:
    """What the user changed in one table: primary keys and cloud keys (both normalized)."""

    pks: set = field(default_factory=set)
    keys: set = field(default_factory=set)

    def has(self, mapper: Mapper, rec: dict) -> bool:
        """True when ``rec`` (a row or a cloud record) is one of these entities."""
        if all(p in rec for p in mapper.pk) and _pk_of(mapper, rec) in self.pks:
            return True
        k = mapper.key_of(rec)
        return k is not None and k in self.keys


@dataclass
class Changes:
    """The user's audited changes in an id range: ``tables`` (table -> Touched) and ``seen`` (the
    audit ids read, so that ``late_changes`` can tell what committed afterwards)."""

    tables: dict[str, Touched] = field(default_factory=dict)
    seen: set = field(default_factory=set)


@dataclass
class Journal:
    """The cloud changes one commit made, in order: ``(action, mapper, before, after)`` with
    ``action`` ``create`` (``after`` is the new cloud record), ``update`` (``before``/``after``
    records) or ``delete`` (``before``)."""

    entries: list = field(default_factory=list)

    def add(self, action: str, mapper: Mapper, before: dict | None, after: dict | None) -> None:
        """Record one cloud change that happened."""
        self.entries.append((action, mapper, before, after))


class PlanRefused(EngineError):
    """The plan cannot be carried out and nothing was done in the cloud (22023): e.g. a row in a
    region that is not enabled. The caller's transaction rolls back; the IaSQL transaction and
    the user's rows stay as they were, to be fixed and committed again."""


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
        desc = prefix + self.mapper.describe(rec)
        if self.action == "create" and not self.mapper.creatable:
            desc += " (cannot be created here: the row is removed)"
        return (self.action, self.mapper.table, self.mapper.id_string(rec), desc)


def _pk_of(mapper: Mapper, rec: dict) -> tuple:
    return tuple(normalize(mapper.col(p).kind, rec.get(p)) for p in mapper.pk)


async def user_changes(s: EngineSession, mappers: list[Mapper], after_id: int, before_id: int) -> dict[str, Touched]:
    """Touched entities per table from the user's (non-engine) audit rows in (after_id, before_id)."""
    return (await read_changes(s, mappers, after_id, before_id)).tables


async def read_changes(s: EngineSession, mappers: list[Mapper], after_id: int, before_id: int | None,
                       skip: set | frozenset = frozenset()) -> Changes:
    """The user's (non-engine) changes to the mappers' tables in audit ids (after_id, before_id)
    (no upper bound when None), leaving out the ids in ``skip``. Returns Changes."""
    by_table = {m.table: m for m in mappers}
    rows = await s.fetchall(
        """SELECT id, table_name, change FROM public.iasql_audit_log
            WHERE id > $1 AND ($2::bigint IS NULL OR id < $2) AND "user" <> $3
              AND change_type IN ('INSERT', 'UPDATE', 'DELETE')
              AND table_name = ANY($4::varchar[]) AND NOT (id = ANY($5::bigint[])) ORDER BY id""",
        (after_id, before_id, ENGINE_USER, list(by_table), sorted(skip)))
    changes = Changes()
    out = changes.tables
    for audit_id, table, change in rows:
        changes.seen.add(audit_id)
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
    return changes


async def late_changes(s: EngineSession, mappers: list[Mapper], window: int, seen: set) -> dict[str, Touched]:
    """Entities changed by users after the commit read its changes: audit rows after ``window``
    that were not among ``seen`` (committed by other sessions while the commit runs). Apply and
    sync leave them alone."""
    return (await read_changes(s, mappers, window, None, seen)).tables


def _enabled(mc: MapperContext, rec: dict) -> bool:
    """False for a record of a region that is not enabled (the cloud read does not cover it)."""
    region = rec.get("region")
    return region is None or region in mc.regions


async def commit_window_start(s: EngineSession) -> int:
    """The audit id after which user changes are still to be applied: the START id of the last
    successful commit or rollback (0 when none)."""
    row = await s.fetchone(
        """SELECT (change->>'start_id')::bigint FROM public.iasql_audit_log
            WHERE change_type IN ('END_COMMIT', 'END_REVERT') AND change->>'status' = 'ok'
            ORDER BY id DESC LIMIT 1""")
    return int(row[0]) if row and row[0] is not None else 0


async def read_db(s: EngineSession, mapper: Mapper) -> list[dict]:
    """Every row of the mapper's table as dicts of its mapped columns."""
    names = [c.name for c in mapper.columns]
    q = sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(map(sql.Identifier, names)),
                                           sql.Identifier("public", mapper.table))
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
    if kind == "timestamptz" and isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
    return value


def diff_for_apply(mapper: Mapper, rows: list[dict], cloud: list[dict], touched: Touched | None,
                   late: Touched | None = None, deleted: Touched | None = None) -> list[Op]:
    """Cloud actions for the entities the user touched (``touched=None``: every row that differs
    from the cloud; rows without a cloud key are always created). Entities in ``late`` are left
    alone; deletes are planned only for entities the user deleted (``touched``, or ``deleted``
    when ``touched`` is None: the retry over all modules still owes the user's deletes; never for
    cloud records that simply have no row) and never for records the mapper cannot delete
    (``Mapper.deletable``: the sync restores their rows)."""
    late = late or Touched()
    by_key = {}
    for c in cloud:
        k = mapper.key_of(c)
        if k is not None and not late.has(mapper, c):
            by_key[k] = c
    ops: list[Op] = []
    db_keys = set()
    for row in rows:
        k = mapper.key_of(row)
        if late.has(mapper, row):
            if k is not None:
                db_keys.add(k)
            continue
        mine = touched is None or touched.has(mapper, row)
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
    asked = touched if touched is not None else deleted
    for k, c in by_key.items():
        if k not in db_keys and asked is not None and k in asked.keys and mapper.deletable(c):
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
        sql.Identifier("public", mapper.table), _assignments(cols),
        _conditions(mapper.pk, start=len(cols) + 1))
    params = [adapt(c.kind, rec.get(c.name)) for c in cols] + [row.get(p) for p in mapper.pk]
    await s.execute(q, params)


def _catalog() -> dict[str, Mapper]:
    from engine.modules import MODULES

    return {mp.table: mp for mod in MODULES for mp in mod.mappers}


async def _recreate_children(s: EngineSession, mc: MapperContext, m: Mapper, row: dict, journal: Journal) -> None:
    """After ``row``'s entity was replaced: create its children (``m.children``: rows of child
    tables whose foreign key names ``row``) on the replacement and write their new cloud ids back,
    so a replace keeps what hangs off the entity (a security group's rules)."""
    catalog = _catalog()
    for child_table, fk in m.children:
        cm = catalog[child_table]
        q = sql.SQL("SELECT {} FROM {} WHERE {} = $1").format(
            sql.SQL(", ").join(sql.Identifier(c.name) for c in cm.columns), sql.Identifier("public", cm.table),
            sql.Identifier(fk))
        names = [c.name for c in cm.columns]
        for values in await s.fetchall(q, (row.get(m.pk[0]),)):
            child = dict(zip(names, values))
            if cm.key_of(child) is None:
                continue  # a new child: its own create op follows
            s.ctx.progress(f"create {cm.describe(child)} on the replacement")
            rec = await cm.create(mc, child)
            journal.add("create", cm, None, rec)
            await _write_back(s, cm, child, rec)


async def _run_op(s: EngineSession, mc: MapperContext, op: Op, journal: Journal) -> None:
    m = op.mapper
    if op.action == "create" and not m.creatable:
        assert op.row is not None
        await _delete_row(s, m, op.row)  # IaSQL's create of such a row: no cloud call, the row goes
    elif op.action == "create":
        assert op.row is not None
        rec = await m.create(mc, op.row)
        journal.add("create", m, None, rec)
        await _write_back(s, m, op.row, rec)
    elif op.action == "update":
        assert op.row is not None and op.cloud is not None
        rec = await m.update(mc, op.row, op.cloud)
        journal.add("update", m, op.cloud, rec)
        await _write_back(s, m, op.row, rec)
    elif op.action == "replace":
        assert op.row is not None and op.cloud is not None
        await m.delete(mc, op.cloud)
        journal.add("delete", m, op.cloud, None)
        rec = await m.create(mc, op.row)
        journal.add("create", m, None, rec)
        await _write_back(s, m, op.row, rec)
        if m.children:
            await _recreate_children(s, mc, m, op.row, journal)
    elif op.action == "delete":
        assert op.cloud is not None
        await m.delete(mc, op.cloud)
        journal.add("delete", m, op.cloud, None)


async def undo(mc: MapperContext, journal: Journal, progress: Any = None) -> list[str]:
    """Take back the journal's cloud changes, newest first: delete what was created, put back
    what was updated (the ``before`` record as desired state), re-create what was deleted (with
    a new cloud id where the cloud assigns one). Never checks for cancellation (it is what a
    cancel leads to). Returns a description of each step that failed (empty when all worked)."""
    failed: list[str] = []
    for action, m, before, after in reversed(journal.entries):
        rec = after if after is not None else before
        desc = m.describe(rec) if rec is not None else m.table
        try:
            if progress is not None:
                progress(f"revert {action} {desc}")
            if action == "create":
                await m.delete(mc, after)
            elif action == "update":
                await m.update(mc, before, after)
            elif action == "delete":
                await m.create(mc, before)
        except CloudError as e:
            failed.append(f"undo {action} {desc}: {e}")
    journal.entries.clear()
    return failed


async def apply(s: EngineSession, mc: MapperContext, mappers: list[Mapper], touched: dict[str, Touched] | None,
                *, dry_run: bool, journal: Journal | None = None, late: Any = None,
                deleted: dict[str, Touched] | None = None) -> list[tuple]:
    """Push user changes to the cloud; returns plan rows of what was done (or would be, dry_run).

    ``touched``: the user's changes per table (None: every row that differs from the cloud, the
    retry over all modules, which still deletes what ``deleted``, the user's changes, deleted: a
    delete that failed in the first pass fails the commit rather than being dropped and the row
    restored by the sync); ``journal`` records each cloud change; ``late``: an async callable
    returning the entities to leave alone (``late_changes``), asked before every pass.
    Raises PlanRefused (22023) before any cloud call of a pass when a row to create or update is
    in a region that is not enabled; EngineError 58000 when a pass makes no progress while
    operations still fail (message lists each failure), 57014 when cancelled between
    operations, 55P03 on a lock timeout; SqlError when writing a cloud id back fails; the
    ``ReadUnavailable`` of a table the user changed (a table the user did not change is skipped).
    """
    journal = journal if journal is not None else Journal()
    if touched is not None:
        mappers = [m for m in mappers if m.table in touched]
    done: list[tuple] = []
    failures: dict[tuple, str] = {}
    for _ in range(max(1, s.settings.max_apply_passes)):
        ops: list[Op] = []
        skip = await late() if late is not None else {}
        for m in mappers:
            m.prefetch(mc)
        for m in mappers:
            s.check_cancelled()
            rows = await read_db(s, m)
            s.ctx.progress(f"reading {m.table} from the cloud")
            try:
                cloud = await m.read(mc)
            except ReadUnavailable as e:
                if touched is not None:
                    raise  # the user changed this table: it cannot be applied
                s.ctx.progress(f"left {m.table} alone: {e}")
                continue
            ops += diff_for_apply(m, rows, cloud, None if touched is None else touched[m.table], skip.get(m.table),
                                  None if deleted is None else deleted.get(m.table))
        outside = [op for op in ops if op.row is not None and not _enabled(mc, op.row)]
        if outside:
            regions = sorted({str(op.row.get("region")) for op in outside if op.row is not None})
            raise PlanRefused("22023", f"Cannot {outside[0].action} {outside[0].plan_row()[3]}: region "
                                       f"{', '.join(regions)} is not enabled",
                              hint="Enable it first: UPDATE aws_regions SET is_enabled = true WHERE region = "
                                   f"'{regions[0]}';")
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
                await _run_op(s, mc, op, journal)
            except CloudError as e:
                if getattr(e, "left", None) is not None:  # a half-made resource the mapper could not remove
                    journal.add("create", op.mapper, None, e.left)
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


#: Rows per INSERT statement when the sync inserts many (one round trip each).
INSERT_BATCH = 200


async def _insert_rows(s: EngineSession, m: Mapper, recs: list[dict]) -> None:
    """Insert the cloud records ``recs`` into ``m``'s table, INSERT_BATCH rows per statement.

    A record whose row another transaction committed after this sync read the table (an RPC such
    as ``key_pair_request`` run meanwhile in another session: the insert waits for that
    transaction, then meets its row in a unique index) is skipped (``ON CONFLICT DO NOTHING``)
    rather than failing the whole sync with 23505; that row is the cloud's record already, and
    the next sync compares it like any other. Raises SqlError for any other failure."""
    cols = m.synced_cols
    for start in range(0, len(recs), INSERT_BATCH):
        chunk = recs[start:start + INSERT_BATCH]
        values = sql.SQL(", ").join(sql.SQL("({})").format(sql.SQL(placeholders(len(cols), 1 + i * len(cols))))
                                    for i in range(len(chunk)))
        q = sql.SQL("INSERT INTO {} ({}) VALUES {} ON CONFLICT DO NOTHING").format(
            sql.Identifier("public", m.table), sql.SQL(", ").join(sql.Identifier(c.name) for c in cols), values)
        await s.execute(q, [adapt(c.kind, rec.get(c.name)) for rec in chunk for c in cols])


async def _update_row(s: EngineSession, m: Mapper, row: dict, rec: dict) -> None:
    cols = m.synced_cols
    q = sql.SQL("UPDATE {} SET {} WHERE {}").format(
        sql.Identifier("public", m.table), _assignments(cols), _conditions(m.pk, start=len(cols) + 1))
    await s.execute(q, [adapt(c.kind, rec.get(c.name)) for c in cols] + [row.get(p) for p in m.pk])


async def _delete_row(s: EngineSession, m: Mapper, row: dict) -> None:
    q = sql.SQL("DELETE FROM {} WHERE {}").format(sql.Identifier("public", m.table), _conditions(m.pk))
    await s.execute(q, [row.get(p) for p in m.pk])


async def sync(s: EngineSession, mc: MapperContext, mappers: list[Mapper], *, dry_run: bool = False,
               late: dict[str, Touched] | None = None) -> list[tuple]:
    """Make the tables of ``mappers`` match the cloud; returns (action, table, id, description) rows
    of the database changes. Every mapper may start its cloud reads first (``Mapper.prefetch``);
    a table without rows is read once, root-to-leaf, since there is nothing in it to delete. Entities in ``late`` (changed by others while a commit ran) and rows
    of regions that are not enabled are left alone; cloud records marked ``_orphan`` (their
    parent has no row) are never inserted; a table whose read raises ``ReadUnavailable`` is left as
    it is. Raises EngineError 57014 between tables when
    cancelled, CloudError on a failed read, SqlError (e.g. 55P03 lock timeout) on a failed write."""
    out: list[tuple] = []
    cache: dict[str, list[dict]] = {}
    unavailable: set[str] = set()
    late = late or {}
    for m in mappers:
        m.prefetch(mc)
    for m in reversed(mappers):
        s.check_cancelled()
        skip = late.get(m.table) or Touched()
        rows_now = [r for r in await read_db(s, m) if not skip.has(m, r) and _enabled(mc, r)]
        if not rows_now:
            continue  # nothing to delete: the table's cloud read waits for the second loop
        s.ctx.progress(f"reading {m.table} from the cloud")
        try:
            cloud = [c for c in await m.read(mc) if not skip.has(m, c)]
        except ReadUnavailable as e:
            s.ctx.progress(f"left {m.table} as it is: {e}")
            unavailable.add(m.table)
            continue
        cache[m.table] = cloud
        keys = {m.key_of(c) for c in cloud}
        for row in rows_now:
            k = m.key_of(row)
            if k is None or k not in keys:
                out.append(Op("delete", m, row, None).plan_row())
                if not dry_run:
                    await _delete_row(s, m, row)
    for m in mappers:
        s.check_cancelled()
        skip = late.get(m.table) or Touched()
        if m.table in unavailable:
            continue  # its read is unavailable (ReadUnavailable): left as it is
        if m.cloud_read_uses_db or m.table not in cache:
            s.ctx.progress(f"reading {m.table} from the cloud")
            try:
                cloud = [c for c in await m.read(mc) if not skip.has(m, c)]
            except ReadUnavailable as e:
                s.ctx.progress(f"left {m.table} as it is: {e}")
                continue
        else:
            cloud = cache[m.table]
        rows = {m.key_of(r): r for r in await read_db(s, m) if not skip.has(m, r)}
        inserts: list[dict] = []
        for c in cloud:
            k = m.key_of(c)
            if k is None:
                continue
            row = rows.get(k)
            if row is None and (skip.has(m, c) or c.get("_orphan")):
                continue  # left alone, or a record whose parent has no row (``Mapper.read``)
            if row is None:
                out.append(Op("create", m, c, None).plan_row())
                inserts.append(c)
            elif not m.synced_equals(row, c):
                out.append(Op("update", m, row, c).plan_row())
                if not dry_run:
                    await _update_row(s, m, row, c)
        if inserts and not dry_run:
            await _insert_rows(s, m, inserts)
    return out
