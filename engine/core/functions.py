"""Implementations of the ``iasql_*`` functions (registered by ``engine.build_registry``).

Each ``async def`` takes the ``CallContext`` and the bound arguments and returns rows in the
registered column order; every failure is an ``EngineError`` with a SQLSTATE. Behaviour and
messages follow IaSQL v0.1's ``src/modules/iasql_functions`` (install/uninstall/begin/commit/
preview/rollback/get_errors/get_sql_since/modules_*; the deprecated apply/sync family).
"""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from engine.aws import CloudError
from engine.core import plan
from engine.core.session import EngineSession, EngineState, to_engine_error
from engine.locks import setting_ms
from engine.modules import MODULES, VERSION
from engine.modules.base import Mapper, MapperContext, Module
from engine.rpc import EngineError
from engine.schema import (ENGINE_USER, REDACTED_TABLES, drop_statements, stub_state, stub_statements,
                           user_function_error)

PLATFORM_MODULES = ("iasql_platform", "iasql_functions")
#: The message of the CLOSE_TRANSACTION row that ends an IaSQL transaction whose session ended.
ABANDONED = "abandoned: the session that opened it ended"
_MODULE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}(@[0-9][0-9a-z.\-]{0,30})?$")


# -- module catalogue -------------------------------------------------------------------------------
def module_by_name() -> dict[str, Module]:
    """Installable modules by bare name."""
    return {m.name: m for m in MODULES}


def all_full_names() -> list[str]:
    """``name@version`` of every module, platform modules included."""
    return [f"{p}@{VERSION}" for p in PLATFORM_MODULES] + [m.full_name for m in MODULES]


def full_dependencies(mod: Module) -> list[str]:
    """A module's dependencies as ``name@version``, the platform modules included (as in IaSQL)."""
    return [f"{p}@{VERSION}" for p in PLATFORM_MODULES] + [f"{d}@{VERSION}" for d in mod.dependencies]


def validate_names(names: tuple, what: str) -> list[str]:
    """Check module-name arguments; returns them lower-cased and stripped.

    Raises EngineError 22004 for NULL, 22023 for anything that is not ``name`` or ``name@version``
    made of [a-z0-9_] (this rejects quotes, semicolons and other injection attempts outright)."""
    out = []
    flat: list = []
    for n in names:
        if isinstance(n, (list, tuple)):
            flat.extend(n)
        else:
            flat.append(n)
    if not flat:
        raise EngineError("22023", f"iasql_{what} needs at least one module name",
                          hint=f"SELECT * FROM iasql_{what}('aws_s3');")
    for n in flat:
        if n is None:
            raise EngineError("22004", "module name must not be NULL")
        s = str(n).strip().lower()
        if not _MODULE_NAME.match(s):
            raise EngineError("22023", f"invalid module name: {str(n)[:80]!r}",
                              hint="Module names look like aws_s3 or aws_s3@" + VERSION +
                                   "; see SELECT * FROM iasql_modules_list();")
        out.append(s)
    return out


def resolve(names: list[str]) -> list[Module | str]:
    """Each name as a Module, or as the platform module name; raises EngineError 42704 for unknown
    names with IaSQL's message and a close-match suggestion."""
    mods = module_by_name()
    out: list[Module | str] = []
    missing = []
    for n in names:
        base, _, ver = n.partition("@")
        if ver and ver != VERSION:
            missing.append(n)
        elif base in PLATFORM_MODULES:
            out.append(base)
        elif base in mods:
            out.append(mods[base])
        else:
            missing.append(n)
    if missing:
        full = [n if "@" in n else f"{n}@{VERSION}" for n in missing]
        candidates = all_full_names()
        suggestions = []
        for m in full:
            close = closest(m, candidates)
            if close not in suggestions:
                suggestions.append(close)
        raise EngineError("42704", f"The following modules do not exist: {', '.join(full)}. "
                                   f"Did you mean: {', '.join(suggestions)}",
                          hint="SELECT * FROM iasql_modules_list(); lists the modules.")
    return out


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance between ``a`` and ``b`` (insertions, deletions, substitutions)."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def closest(name: str, candidates: list[str]) -> str:
    """The candidate nearest to ``name`` by edit distance (the first of equals), as IaSQL's
    ``levenshtein.closest`` picks the "did you mean" suggestion."""
    return min(candidates, key=lambda c: edit_distance(name, c))


def topo_order(mods: list[Module]) -> list[Module]:
    """``mods`` sorted root-to-leaf by their dependencies (stable by MODULES order)."""
    index = {m.name: i for i, m in enumerate(MODULES)}
    names = {m.name for m in mods}
    done: list[Module] = []
    seen: set[str] = set()
    by = module_by_name()

    def visit(m: Module) -> None:
        if m.name in seen:
            return
        seen.add(m.name)
        for d in m.dependencies:
            if d in names:
                visit(by[d])
        done.append(m)

    for m in sorted(mods, key=lambda m: index[m.name]):
        visit(m)
    return done


async def installed_modules(s: EngineSession) -> list[Module]:
    """Installed modules (platform modules excluded), root-to-leaf."""
    names = set(await s.installed())
    return topo_order([m for m in MODULES if m.full_name in names])


async def mapper_context(s: EngineSession) -> MapperContext:
    """A MapperContext for this session (credentials and regions read from the tables)."""
    creds = await s.credentials()
    regions, default = await s.regions()
    return MapperContext(db=s, aws=s.state.aws, creds=creds, regions=regions, default_region=default)


def cloud_mappers(mods: list[Module]) -> list[Mapper]:
    """Mappers of ``mods`` that sync with the cloud, in dependency order."""
    return [mp for m in mods for mp in m.mappers if mp.cloud]


# -- install / uninstall ------------------------------------------------------------------------------
async def iasql_install(state: EngineState, ctx: Any, *modules: Any) -> list[tuple]:
    """Install modules and their dependencies, then load their cloud records into the new tables.

    Returns (module_name, created_table_name, record_count) per created table of the modules
    named (dependencies installed with them get no rows, as in IaSQL). A module named that is
    installed already gets back the SQL functions of its RPCs (stubs) that were dropped, when no
    function of the user's has taken their signature. Raises EngineError 22023 (bad name), 42704
    (unknown module, with a suggestion), 42P07 (a table already exists), 42723 (a function of
    the user's has the name and argument types of a module RPC, ``public.<name>(<types>)``: the
    install would replace it with its stub; nothing is installed), 58000 (cloud read failed;
    nothing is installed), 55P03 (lock)."""
    async with EngineSession(ctx, state, "iasql_install") as s:
        # checked inside the session, so that a bad name is an ERROR row of iasql_get_errors()
        # like any other failure; before the lock, so that a typo never waits for it
        names = validate_names(modules, "install")
        wanted = [m for m in resolve(names) if isinstance(m, Module)]
        await s.acquire_lock()
        installed = set(await s.installed())
        by = module_by_name()
        todo: dict[str, Module] = {}
        stack = list(wanted)
        while stack:
            m = stack.pop()
            if m.full_name in installed or m.name in todo:
                continue
            todo[m.name] = m
            stack += [by[d] for d in m.dependencies]
        for m in wanted:  # installed already: its RPCs' stubs come back if they were dropped
            if m.full_name in installed:
                for fn in m.rpcs:
                    if await stub_state(s, fn) == "none":
                        ctx.progress(f"recreating the SQL function {fn.name} of {m.full_name}")
                        for stmt in stub_statements([fn]):
                            await s.execute(stmt)
        if not todo:
            ctx.progress("All modules already installed")
            return []
        order = topo_order(list(todo.values()))
        existing = {r[0] for r in await s.fetchall(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")}
        collisions = [f"Module {m.name} collides with tables: {', '.join(t for t in m.tables if t in existing)}"
                      for m in order if any(t in existing for t in m.tables)]
        if collisions:
            raise EngineError("42P07", "Collision with existing tables detected.\n" + "\n".join(collisions))
        # a function of the user's with an RPC's signature is never replaced by its stub
        for m in order:
            for fn in m.rpcs:
                if await stub_state(s, fn) == "user":
                    raise user_function_error(fn, m.name)
        out: list[tuple] = []
        # everything below is part of the caller's transaction: a failure (a cloud read, a
        # missing privilege, a cancel) leaves nothing installed once the transaction rolls back
        for m in order:
            s.check_cancelled()
            ctx.progress(f"installing {m.full_name}")
            for stmt in m.install_sql:
                await s.execute(stmt)
            if m.after_install is not None:
                await m.after_install(s)
            # the module's RPCs: a stub (a direct call fails loudly) while the module is installed
            # (their argument probes, which the proxy evaluates a call's arguments with, are the
            # metadata's: engine.schema.ensure_metadata)
            for stmt in stub_statements(m.rpcs):
                await s.execute(stmt)
            await s.execute("INSERT INTO public.iasql_module (name) VALUES ($1)", (m.full_name,))
            deps = full_dependencies(m)
            await s.execute("INSERT INTO public.iasql_dependencies (module, dependency) "
                            "SELECT $1, pg_catalog.unnest($2::varchar[])",
                            (m.full_name, deps))
            for t in m.tables:
                await s.execute('INSERT INTO public.iasql_tables ("table", module) VALUES ($1, $2)', (t, m.full_name))
                await s.execute(sql.SQL(
                    "CREATE TRIGGER {trg} AFTER INSERT OR UPDATE OR DELETE ON {t} "
                    "FOR EACH ROW EXECUTE FUNCTION public.iasql_audit()").format(
                    trg=sql.Identifier(f"{t}_audit"), t=sql.Identifier("public", t)))
        mappers = cloud_mappers(order)
        if mappers:
            mc = await mapper_context(s)
            ctx.progress("reading existing cloud resources for " + ", ".join(m.table for m in mappers))
            await plan.sync(s, mc, mappers)
        named = {m.name for m in wanted}
        for m in order:  # rows for the modules named, not for the dependencies installed with them (as IaSQL)
            if m.name not in named:
                continue
            for t in m.tables:
                n = (await s.fetchone(sql.SQL("SELECT pg_catalog.count(*) FROM {}").format(
                    sql.Identifier("public", t))))[0]
                out.append((m.full_name, t, n))
        return out


async def iasql_uninstall(state: EngineState, ctx: Any, *modules: Any) -> list[tuple]:
    """Drop modules' tables (cloud resources are left alone). Returns (module_name,
    dropped_table_name, record_count) per dropped table. Raises EngineError 22023/42704 (names),
    2BP01 when an installed module still depends on a target (IaSQL's message), 0A000 for the
    platform modules, 55P03 (lock)."""
    async with EngineSession(ctx, state, "iasql_uninstall") as s:
        # checked inside the session (an ERROR row, as iasql_install's), before the lock
        names = validate_names(modules, "uninstall")
        resolved = resolve(names)
        platform = [m for m in resolved if isinstance(m, str)]
        if platform:
            raise EngineError("0A000", f"Cannot uninstall {', '.join(platform)}: it is part of the IaSQL platform")
        wanted = [m for m in resolved if isinstance(m, Module)]
        await s.acquire_lock()
        installed = await installed_modules(s)
        targets = [m for m in installed if m.name in {w.name for w in wanted}]
        if not targets:
            ctx.progress("All modules already uninstalled")
            return []
        tnames = {m.name for m in targets}
        dependents = [m.full_name for m in installed if m.name not in tnames and tnames & set(m.dependencies)]
        if dependents:
            raise EngineError("2BP01", f"Cannot uninstall {', '.join(names)} as {', '.join(dependents)} still "
                                       f"depend{'s' if len(dependents) == 1 else ''} on one or more of them",
                              hint=f"Uninstall {', '.join(dependents)} first, or together with them.")
        out: list[tuple] = []
        for m in reversed(topo_order(targets)):
            s.check_cancelled()
            ctx.progress(f"uninstalling {m.full_name}")
            rows = []
            for t in m.tables:
                n = (await s.fetchone(sql.SQL("SELECT pg_catalog.count(*) FROM {}").format(
                    sql.Identifier("public", t))))[0]
                rows.append((m.full_name, t, n))
            for stmt in m.uninstall_sql:
                await s.execute(stmt)
            # its RPCs' stubs (42883 from now on); a function of the user's of that signature stays
            stubs = [fn for fn in m.rpcs if await stub_state(s, fn) == "stub"]
            for stmt in drop_statements(stubs, ("public",)):
                await s.execute(stmt)
            await s.execute('DELETE FROM public.iasql_tables WHERE module = $1', (m.full_name,))
            await s.execute("DELETE FROM public.iasql_module WHERE name = $1", (m.full_name,))
            out = rows + out
        return out


# -- transactions -------------------------------------------------------------------------------------
async def iasql_begin(state: EngineState, ctx: Any) -> list[tuple]:
    """Open an IaSQL transaction (an OPEN_TRANSACTION audit row with a new transaction id).

    An open transaction whose opening session has ended (``ctx.abandoned_transactions``) is
    closed at once (a CLOSE_TRANSACTION row, message ``ABANDONED``) instead of being waited for.

    Returns one row (message 'Transaction started', transaction_id). While another IaSQL
    transaction is open, or another call holds the IaSQL lock, it waits (one progress NOTICE) up
    to ``lock_wait_timeout`` in all, then raises EngineError 55P03 'Another transaction is open or
    running. Please try again later.'; the wait is the caller's own ``lock_timeout`` when that
    is shorter (then 55P03 'canceling statement due to lock timeout', as from Postgres). When
    the open transaction is the one the caller's own session opened (``ctx.own_transaction``),
    waiting could only time out: 25001 at once. 57014 when cancelled. The IaSQL lock is only ever tried,
    never waited for, and kept only when no transaction is open once it is held
    (``EngineSession.lock_if_no_transaction``): it is held until the caller's transaction ends,
    so waiting while holding it would keep the open transaction from closing."""
    import time

    started = time.monotonic()
    async with EngineSession(ctx, state, "iasql_begin") as s:
        wait = state.settings.lock_wait_timeout
        own = setting_ms((await s.fetchone("SELECT pg_catalog.current_setting('lock_timeout')"))[0]) / 1000
        lock_timeout = 0 < own < wait
        deadline = started + (own if lock_timeout else wait)
        reported = False
        while True:
            tx = await s.open_transaction()
            if tx is not None and tx[0] in getattr(ctx, "abandoned_transactions", ()):
                # the session that opened it has ended (the proxy saw it go): close it at once
                await s.log("CLOSE_TRANSACTION", transaction_id=tx[0], message=ABANDONED)
                ctx.progress(f"closed IaSQL transaction {tx[0]}: {ABANDONED}")
                tx = await s.open_transaction()
            if tx is None:
                if await s.lock_if_no_transaction():
                    tx_id = str(uuid.uuid4())
                    await s.log("OPEN_TRANSACTION", transaction_id=tx_id, message=f"opened by {ctx.user}")
                    return [("Transaction started", tx_id)]
                tx = await s.open_transaction()  # opened by someone else just before we looked again?
            if tx is not None and tx[0] == getattr(ctx, "own_transaction", None):
                raise EngineError("25001", "an IaSQL transaction is already open in this session",
                                  detail=f"Transaction {tx[0]} was opened at {tx[1]} ({tx[2]}).",
                                  hint="Finish it with iasql_commit() or iasql_rollback() before "
                                       "calling iasql_begin() again.")
            if time.monotonic() >= deadline:
                detail = f"Transaction {tx[0]} was opened at {tx[1]} ({tx[2]})." if tx else \
                    f"Another call holds the IaSQL lock: {await s.lock_holder()}."
                if lock_timeout:
                    raise EngineError("55P03", "canceling statement due to lock timeout", detail=detail)
                raise EngineError("55P03", "Another transaction is open or running. Please try again later.",
                                  detail=detail, hint="Finish it with iasql_commit() or iasql_rollback().")
            if not reported:
                ctx.progress(f"waiting for open transaction {tx[0]} to finish" if tx else
                             f"waiting for another IaSQL call on database \"{ctx.database}\" to finish")
                reported = True
            s.check_cancelled()
            await s._sleep(min(0.2, max(0.0, deadline - time.monotonic())))


@contextlib.asynccontextmanager
async def _logged_run(s: Any, kind: str, tx_id: str | None, message: str | None):
    """Bracket a commit or revert in the audit log: ``START_<kind>`` before (its id is yielded),
    ``END_<kind>`` with status ok after. Both rows are part of the caller's transaction: when the
    run fails, the transaction is rolled back with them, and the failure is recorded as an
    ``ERROR`` row written afterwards (``EngineError.audit``)."""
    extra = {} if message is None else {"message": message}
    start_id = await s.log(f"START_{kind}", transaction_id=tx_id, **extra)
    yield start_id
    await s.log(f"END_{kind}", transaction_id=tx_id, change={"status": "ok", "start_id": start_id}, **extra)


def _modules_with_changes(mods: list[Module], touched: dict) -> list[Module]:
    """The installed modules whose tables the user changed (IaSQL's ``getModulesWithChanges``)."""
    return [m for m in mods if any(t in touched for t in m.tables)]


async def _preview(s: EngineSession, mappers: list[Mapper], window: int) -> list[tuple]:
    """The apply plan of the user's changes; with none, the sync plan (cloud drift that a commit
    would pull into the tables), as IaSQL's preview."""
    row = await s.fetchone("SELECT coalesce(pg_catalog.max(id), 0) + 1 FROM public.iasql_audit_log")
    touched = await plan.user_changes(s, mappers, window, row[0])
    mc = await mapper_context(s)
    if touched:
        return await plan.apply(s, mc, mappers, touched, dry_run=True)
    return await plan.sync(s, mc, mappers, dry_run=True)


async def _revert(s: EngineSession, mc: MapperContext, journal: plan.Journal, tx_id: str, mods: list[Module],
                  err: EngineError, tables_too: bool) -> EngineError:
    """A failed commit's revert: take its cloud changes back (newest first) and, when
    ``tables_too``, attach the table revert (``engine.core.revert``) to ``err`` as its followup,
    run once the caller's transaction has ended. Returns ``err`` with the outcome in its detail."""
    from engine.core.revert import revert_statement

    s.ctx.progress("reverting: taking back this commit's cloud changes")
    failed = await plan.undo(mc, journal, s.ctx.progress)
    notes = []
    if failed:
        notes.append("The revert could not take back every cloud change (run SELECT * FROM iasql_rollback(); "
                     "to bring the tables in line with the cloud):\n" + "\n".join(failed))
    else:
        notes.append("The cloud changes this commit made were taken back.")
    if tables_too:
        tables = {mp.table: list(mp.pk) for m in mods for mp in m.mappers if mp.table not in REDACTED_TABLES}
        err.followup.append((revert_statement(tx_id, tables), ()))
        notes.append("The tables are reverted to their state at iasql_begin and the IaSQL transaction is closed.")
    err.detail = "\n".join(filter(None, [err.detail, *notes]))
    return err


async def _run_commit(state: EngineState, ctx: Any, message: str | None, dry_run: bool,
                      fname: str | None = None) -> list[tuple]:
    fname = fname or ("iasql_preview" if dry_run else "iasql_commit")
    async with EngineSession(ctx, state, fname, lock=True) as s:
        what = "create a review" if fname == "iasql_create_review" else "preview" if dry_run else "commit"
        tx_id = await s.require_transaction(what, fname)
        mods = await installed_modules(s)
        mappers = cloud_mappers(mods)
        window = await plan.commit_window_start(s)
        if dry_run:
            return await _preview(s, mappers, window)
        if message is not None:
            await s.log("SET_COMMIT_MESSAGE", transaction_id=tx_id, message=message)
        journal = plan.Journal()
        async with _logged_run(s, "COMMIT", tx_id, message) as start_id:
            changes = await plan.read_changes(s, mappers, window, start_id)
            touched = changes.tables

            async def late() -> dict:
                return await plan.late_changes(s, mappers, window, changes.seen)

            mc = await mapper_context(s)
            try:
                try:
                    changed = cloud_mappers(_modules_with_changes(mods, touched))
                    applied = await plan.apply(s, mc, changed, touched, dry_run=False, journal=journal, late=late)
                except EngineError as first:
                    if first.sqlstate != "58000" or isinstance(first, plan.PlanRefused):
                        raise
                    ctx.progress(f"apply failed ({first.message}); applying again over all installed modules")
                    try:
                        applied = await plan.apply(s, mc, mappers, None, dry_run=False, journal=journal, late=late,
                                                   deleted=touched)
                    except EngineError as second:
                        if second.sqlstate != "58000" or isinstance(second, plan.PlanRefused):
                            raise
                        err = to_engine_error(second)
                        raise await _revert(s, mc, journal, tx_id, mods, err, tables_too=True) from None
                ctx.progress("syncing cloud state back into the tables")
                synced = await plan.sync(s, mc, mappers, late=await late())
            except BaseException as e:
                if journal.entries:  # cancelled, a failed write-back, a failed sync read: undo the cloud half
                    err = to_engine_error(e)
                    raise await _revert(s, mc, journal, tx_id, mods, err, tables_too=False) from None
                raise
        await s.log("CLOSE_TRANSACTION", transaction_id=tx_id, message=message)
        return applied + [(a, t, i, "synced from cloud: " + d) for a, t, i, d in synced]


async def iasql_commit(state: EngineState, ctx: Any, message: Any = None) -> list[tuple]:
    """Apply the open transaction's changes to the cloud, sync the cloud back, close the transaction.

    IaSQL's algorithm: apply the entities the user changed since the transaction opened; if that
    fails, apply over all installed modules; if that fails too, revert: the commit's cloud
    changes are taken back and, once the caller's transaction has ended, the tables are set back
    to their state at ``iasql_begin`` and the IaSQL transaction is closed (``engine.core.revert``).
    Entities others change while the commit runs are left alone by apply and sync.

    Returns (action, table_name, id, description) rows: cloud actions first, then database
    changes made by the sync ('synced from cloud: ...'). Raises EngineError 25P01 (no open
    transaction), 22023 (the plan is refused before any cloud call, e.g. a region that is not
    enabled), 58000 (cloud failures: reverted), 57014 (cancelled), 55P03 (lock); after a cancel
    or a failed write-back the commit's cloud changes are taken back, the caller's transaction
    rolls back and the IaSQL transaction stays open."""
    return await _run_commit(state, ctx, None if message is None else str(message), dry_run=False)


async def iasql_preview(state: EngineState, ctx: Any) -> list[tuple]:
    """What ``iasql_commit`` would do to the cloud, without doing it. Same columns as commit.
    Raises EngineError 25P01 (no open transaction), 58000 (cloud read failed), 55P03 (lock)."""
    return await _run_commit(state, ctx, None, dry_run=True)


async def iasql_rollback(state: EngineState, ctx: Any, force: Any = False) -> list[tuple]:
    """Discard the transaction's changes: make every module table match the cloud, then close the
    transaction. ``force`` = true also syncs when no transaction is open. Returns the database
    changes as (action, table_name, id, description). Raises EngineError 25P01, 58000, 57014, 55P03."""
    if isinstance(force, str):
        force = force.strip().lower() in ("t", "true", "1", "on", "yes", "y")
    async with EngineSession(ctx, state, "iasql_rollback", lock=True) as s:
        tx = await s.open_transaction()
        if tx is None and not force:
            await s.require_transaction("rollback")
        tx_id = tx[0] if tx else None
        async with _logged_run(s, "COMMIT", tx_id, None):  # IaSQL's rollback logs START/END_COMMIT
            mc = await mapper_context(s)
            rows = await plan.sync(s, mc, cloud_mappers(await installed_modules(s)))
        if tx is not None:
            await s.log("CLOSE_TRANSACTION", transaction_id=tx_id, message="rollback")
        return rows


# -- read-only ----------------------------------------------------------------------------------------
async def iasql_get_errors(state: EngineState, ctx: Any) -> list[tuple]:
    """(ts, message) of the last 500 ERROR rows of the audit log, newest first (as IaSQL)."""
    async with EngineSession(ctx, state, "iasql_get_errors", record_errors=False) as s:
        return await s.fetchall("SELECT ts, message FROM public.iasql_audit_log WHERE change_type = 'ERROR' "
                                "ORDER BY ts DESC, id DESC LIMIT 500")


def _where(pk: list[str], rec: dict) -> sql.Composable:
    return sql.SQL(" AND ").join(
        sql.SQL("{} = {}").format(sql.Identifier(p), sql.Literal(rec.get(p))) if rec.get(p) is not None
        else sql.SQL("{} IS NULL").format(sql.Identifier(p)) for p in pk)


def _lit(v: Any, kind: str | None) -> sql.Composable:
    if kind in ("json", "jsonb") or (kind is None and isinstance(v, dict)):
        return sql.Literal(None if v is None else json.dumps(v, ensure_ascii=False))  # the text as written
    if kind == "text[]" and isinstance(v, list):
        return sql.SQL("{}::text[]").format(sql.Literal([str(x) for x in v]))
    return sql.Literal(v)


def _statements_of(rows: list[tuple]) -> list[tuple]:
    """IaSQL's ``recreateQueries``: (table_name, change_type, change) audit rows as SQL
    statements that redo them, one row ``(sql,)`` each (an UPDATE that changed nothing is left
    out). Redacted values (``engine.schema.REDACTED``) stay redacted."""
    mappers = {mp.table: mp for m in MODULES for mp in m.mappers}
    out = []
    for table, ctype, change in rows:
        if isinstance(change, str):
            change = json.loads(change)
        mp = mappers.get(table)
        serial = {c.name for c in mp.columns if c.role == "pk"} if mp else set()
        pk = list(mp.pk) if mp else []
        kinds = {c.name: c.kind for c in mp.columns} if mp else {}
        t = sql.Identifier(table)
        if ctype == "INSERT":
            rec = {k: v for k, v in (change.get("change") or {}).items() if k not in serial}
            q = sql.SQL("INSERT INTO {} ({}) VALUES ({});").format(
                t, sql.SQL(", ").join(map(sql.Identifier, rec)),
                sql.SQL(", ").join(_lit(v, kinds.get(k)) for k, v in rec.items()))
        elif ctype == "DELETE":
            orig = change.get("original") or {}
            q = sql.SQL("DELETE FROM {} WHERE {};").format(t, _where(pk or list(orig), orig))
        else:
            orig, new = change.get("original") or {}, change.get("change") or {}
            diff = {k: v for k, v in new.items() if orig.get(k) != v}
            if not diff:
                continue
            q = sql.SQL("UPDATE {} SET {} WHERE {};").format(
                t, sql.SQL(", ").join(sql.SQL("{} = {}").format(sql.Identifier(k), _lit(v, kinds.get(k)))
                                      for k, v in diff.items()),
                _where(pk or list(orig), orig))
        out.append((q.as_string(None),))
    return out


async def iasql_get_sql_since(state: EngineState, ctx: Any, limit_date: Any = None) -> list[tuple]:
    """The users' (not the engine's) INSERT/UPDATE/DELETE on module tables since ``limit_date``
    (all when NULL), as SQL statements, oldest first; secrets show as ``<redacted>``. Raises
    EngineError 22007 for a bad date."""
    async with EngineSession(ctx, state, "iasql_get_sql_since", record_errors=False) as s:
        if isinstance(limit_date, str):
            try:
                limit_date = datetime.fromisoformat(limit_date)
            except ValueError:
                raise EngineError("22007", f"invalid timestamp: {limit_date[:60]!r}") from None
        rows = await s.fetchall(
            """SELECT table_name, change_type, change FROM public.iasql_audit_log
                WHERE change_type IN ('INSERT', 'UPDATE', 'DELETE') AND "user" <> $1
                  AND ($2::timestamptz IS NULL OR ts > $2::timestamptz) ORDER BY id""",
            (ENGINE_USER, limit_date))
        return _statements_of(rows)


async def iasql_get_sql_for_transaction(state: EngineState, ctx: Any, transaction_id: Any = None) -> list[tuple]:
    """The users' INSERT/UPDATE/DELETE made in IaSQL transaction ``transaction_id`` (NULL: the
    latest one opened), as SQL statements, oldest first (IaSQL's
    ``iasql_get_sql_for_transaction``); secrets show as ``<redacted>``. No rows for an unknown id."""
    async with EngineSession(ctx, state, "iasql_get_sql_for_transaction", record_errors=False) as s:
        tx = transaction_id
        if tx is None:
            row = await s.fetchone("SELECT transaction_id FROM public.iasql_audit_log WHERE change_type = 'OPEN_TRANSACTION' "
                                   "ORDER BY id DESC LIMIT 1")
            if row is None:
                return []
            tx = row[0]
        rows = await s.fetchall(
            """SELECT table_name, change_type, change FROM public.iasql_audit_log
                WHERE change_type IN ('INSERT', 'UPDATE', 'DELETE') AND "user" <> $1 AND transaction_id = $2
                ORDER BY id""", (ENGINE_USER, str(tx)))
        return _statements_of(rows)


def review_markdown(title: str, description: str, preview: list[tuple], statements: list[str]) -> str:
    """The markdown of ``iasql_create_review``: a title, the description, the preview as a table
    and the transaction's SQL in a fenced block (IaSQL's layout; without preview rows only the
    title and the description)."""
    head = [f"# {title}", description]
    if not preview:
        return "\n\n".join(head)
    cols = ("action", "table_name", "id", "description")
    table = [f"| {' | '.join(cols)} |", f"| {' | '.join('---' for _ in cols)} |"]
    table += ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in preview]
    return "\n\n".join(head + ["## IaSQL Preview\n\n" + "\n".join(table), "## SQL changes",
                                "```sql\n" + "\n".join(statements) + "\n```"])


async def iasql_create_review(state: EngineState, ctx: Any, title: Any = "New Review",
                              description: Any = "Review description") -> list[tuple]:
    """One row (markdown): a review of the open transaction, its preview and its SQL (IaSQL's
    ``iasql_create_review``). Raises what ``iasql_preview`` raises (25P01 without an open
    transaction, 58000, 55P03)."""
    preview = await _run_commit(state, ctx, None, dry_run=True, fname="iasql_create_review")
    statements = [r[0] for r in await iasql_get_sql_for_transaction(state, ctx, None)]
    return [(review_markdown(str(title), str(description), preview, statements),)]


async def iasql_modules_list(state: EngineState, ctx: Any) -> list[tuple]:
    """(module_name, module_version, dependencies json) of every module, platform modules first."""
    rows = [(p, VERSION, [f"iasql_platform@{VERSION}"] if p == "iasql_functions" else []) for p in PLATFORM_MODULES]
    return rows + [(m.name, m.version, full_dependencies(m)) for m in MODULES]


async def iasql_modules_installed(state: EngineState, ctx: Any) -> list[tuple]:
    """(module_name, module_version, dependencies varchar[]) of the installed modules."""
    async with EngineSession(ctx, state, "iasql_modules_installed", record_errors=False) as s:
        return await s.fetchall(
            """SELECT pg_catalog.split_part(name, '@', 1), pg_catalog.split_part(name, '@', 2),
                      array(SELECT dependency FROM public.iasql_dependencies d WHERE d.module = m.name
                             ORDER BY dependency)
                 FROM public.iasql_module m ORDER BY name""")


async def iasql_version(state: EngineState, ctx: Any) -> list[tuple]:
    """The IaSQL platform version, one row."""
    return [(VERSION,)]


def deprecated(name: str, replacement: str):
    """An implementation that raises IaSQL's deprecation error (SQLSTATE 0A000)."""

    async def impl(state: EngineState, ctx: Any) -> list[tuple]:
        raise EngineError("0A000", f"{name}() has been deprecated in favor of {replacement}()",
                          hint=f"Use SELECT * FROM {replacement}();")

    return impl


__all__ = ["iasql_install", "iasql_uninstall", "iasql_begin", "iasql_commit", "iasql_preview",
           "iasql_rollback", "iasql_get_errors", "iasql_get_sql_since", "iasql_get_sql_for_transaction",
           "iasql_create_review", "review_markdown", "iasql_modules_list",
           "iasql_modules_installed", "iasql_version", "deprecated", "CloudError", "psycopg"]
