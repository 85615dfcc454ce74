"""Moving a routed database to another server without errors: the admin console's ``MOVE db TO
server`` (issue 19, point 3).

Theory of operation
-------------------
1. **Every proxy pauses the database.** The mover sets ``iasql_route.moving_to`` in the metadata
   database; the NOTIFY that follows reaches every proxy (``Fleet._read``), and each one
   (``Operations.begin_move``) holds new server leases of that database (transaction-pooling
   clients see a pause, not an error), closes its idle connections to it, closes the ones in use
   as their transactions end, and disconnects the database's session-pooling clients with
   ``FATAL 57P01`` and a message naming the move (a session holds its connection for good, so it
   cannot be paused).
2. **The source drains.** ``CONNECT`` on the database is revoked from its role on the source
   server (a proxy that has not heard of the move yet gets an error rather than writing into the
   copy's past), and the mover waits until no session is left on it, up to ``shutdown_timeout``
   seconds; then the remaining ones are ended (``pg_terminate_backend``: their statements are
   cancelled and their transactions rolled back, as an administrator's command).
3. **Copy** with PostgreSQL's own tools: ``pg_dump -Fc`` from the source piped into
   ``pg_restore`` on the destination, into a database created there with the same owner role
   (made with the source's SCRAM verifier, so the proxy's SCRAM logins work unchanged, and the
   same closed-to-PUBLIC database privileges). pg_dump/pg_restore rather than logical replication:
   the database is paused anyway, a dump is one consistent snapshot, and it needs no
   ``wal_level = logical`` or publication on the user's servers.
4. **Flip and resume**: one UPDATE sets the route to the destination and clears ``moving_to``;
   every proxy follows it (NOTIFY, or the periodic read) and resumes the database, whose next
   leases go to the destination. The source copy is then dropped with its role.

Anything that fails before the flip undoes what was made (the destination copy is dropped,
``CONNECT`` is granted back, ``moving_to`` cleared) and the database resumes where it was; the
console answers the error. Reading the source's password verifier needs a superuser admin role
there (``pg_authid``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from proxy.routing.fleet import Fleet
    from proxy.server import ProxyApp

log = logging.getLogger("iasql_proxy.routing")

#: How often the mover looks at the source's sessions while it drains (seconds).
DRAIN_POLL = 0.1


class MoveError(Exception):
    """A MOVE that could not be done (nothing changed): ``sqlstate`` and a message for the console."""

    def __init__(self, sqlstate: str, message: str):
        super().__init__(message)
        self.sqlstate = sqlstate
        self.message = message


async def move_database(app: "ProxyApp", db: str, dest: str, say: Callable[[str], None] = lambda _: None) -> float:
    """Move the routed database ``db`` to the ``[servers]`` entry ``dest`` (see the module
    docstring); ``say`` gets progress lines. Returns the seconds the database was paused.

    Raises MoveError: 0A000 without ``[servers]``; 3D000 when ``db`` has no route; 42704 for an
    unknown server; 55000 when ``db`` is already there or already moving; 42501 when the source's
    admin role cannot read password verifiers; 08006 when a server or the metadata database cannot
    be reached, or pg_dump/pg_restore fail (their last error line).
    """
    import psycopg
    from psycopg import sql

    fleet: Fleet | None = getattr(app, "fleet", None)
    if fleet is None:
        raise MoveError("0A000", "MOVE needs [servers] (scale out): this proxy routes by [databases] only")
    source = fleet.routes.get(db)
    if source is None:
        raise MoveError("3D000", f'database "{db}" has no route in the metadata database')
    if dest not in fleet.entries:
        raise MoveError("42704", f'no server "{dest}" in [servers]')
    if source == dest:
        raise MoveError("55000", f'database "{db}" is already on server "{dest}"')
    if db in fleet.moving:
        raise MoveError("55000", f'database "{db}" is already moving to server "{fleet.moving[db]}"')
    src, dst = fleet.entries[source], fleet.entries[dest]
    t0 = time.monotonic()
    try:
        async with fleet.metadata() as meta:
            row = await (await meta.execute(
                "UPDATE public.iasql_route SET moving_to = %s WHERE pg_name = %s AND server = %s "
                "AND moving_to IS NULL RETURNING pg_name", (dest, db, source))).fetchone()
            if row is None:
                raise MoveError("55000", f'database "{db}" moved or started moving meanwhile')
    except MoveError:
        raise
    except Exception as e:
        raise MoveError("08006", f"the metadata database cannot be reached: {_line(e)}") from None
    fleet.moving_changed(db, dest)  # this proxy pauses at once (the others on the NOTIFY)
    say(f"paused {db} on every proxy; draining server {source}")
    role = None
    made_dest = False
    revoked = False
    try:
        async with fleet.admin(source) as adm:
            owner = await (await adm.execute(
                "SELECT r.rolname, a.rolpassword FROM pg_catalog.pg_database d "
                "JOIN pg_catalog.pg_roles r ON r.oid = d.datdba "
                "LEFT JOIN pg_catalog.pg_authid a ON a.oid = r.oid WHERE d.datname = %s", (db,))).fetchone()
            if owner is None:
                raise MoveError("3D000", f'database "{db}" does not exist on server "{source}"')
            role, verifier = owner
            await adm.execute(sql.SQL("REVOKE CONNECT ON DATABASE {} FROM PUBLIC, {}").format(
                sql.Identifier(db), sql.Identifier(role)))
            revoked = True
            await _drain(adm, db, app.cfg.shutdown_timeout, say)
        say(f"copying {db} from {source} to {dest} (pg_dump | pg_restore)")
        async with fleet.admin(dest) as adm:
            exists = await (await adm.execute("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %s",
                                              (role,))).fetchone()
            verb = "ALTER" if exists else "CREATE"
            if verifier is None:
                raise MoveError("42501", f'the admin role of server "{source}" cannot read the password of '
                                         f'role "{role}" (pg_authid): MOVE needs a superuser admin role there')
            await adm.execute(sql.SQL(verb + " ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(verifier)))
            await adm.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(sql.Identifier(role)))
            await adm.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(db), sql.Identifier(role)))
            made_dest = True
            await adm.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(db)))
        await _copy(fleet, src, dst, db, role)
        async with fleet.metadata() as meta:
            await meta.execute("UPDATE public.iasql_route SET server = %s, moving_to = NULL WHERE pg_name = %s",
                               (dest, db))
    except BaseException as e:
        await _undo(fleet, db, source, dest, role, made_dest, revoked)
        if isinstance(e, MoveError):
            raise
        if isinstance(e, (psycopg.Error, OSError, TimeoutError)):
            raise MoveError("08006", f"MOVE {db} TO {dest} failed, nothing changed: {_line(e)}") from None
        raise
    paused = time.monotonic() - t0
    fleet.route_changed(db, dest)
    fleet.moving_changed(db, None)  # resumes here at once; the others on the NOTIFY
    say(f"{db} now on {dest} (paused {paused:.2f} s); dropping the old copy on {source}")
    log.info("event=database_moved database=%s from=%s to=%s paused_s=%.3f", db, source, dest, paused)
    try:
        fleet.close_idle(source, db)
        async with fleet.admin(source) as adm:
            await adm.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))
            await adm.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
    except Exception as e:  # the move is done; an old copy left behind is only logged
        log.warning("event=move_old_copy_left database=%s server=%s error=%r", db, source, _line(e))
        say(f"the old copy of {db} on {source} could not be dropped: {_line(e)}")
    return paused


async def _drain(adm: Any, db: str, timeout: float, say: Callable[[str], None]) -> None:
    """Wait until no session is connected to ``db`` on ``adm``'s server, up to ``timeout``
    seconds; then end the remaining ones (``pg_terminate_backend``) and wait for them to go."""
    deadline = time.monotonic() + timeout
    terminated = False
    while True:
        pids = [r[0] for r in await (await adm.execute(
            "SELECT pid FROM pg_catalog.pg_stat_activity WHERE datname = %s AND pid <> pg_catalog.pg_backend_pid()",
            (db,))).fetchall()]
        if not pids:
            return
        if time.monotonic() >= deadline and not terminated:
            say(f"{len(pids)} session(s) still on {db} after {timeout:g} s: ending them")
            await adm.execute("SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity "
                              "WHERE datname = %s AND pid <> pg_catalog.pg_backend_pid()", (db,))
            terminated = True
            deadline = time.monotonic() + 10
        elif terminated and time.monotonic() >= deadline:
            raise TimeoutError(f"{len(pids)} session(s) on {db} did not end")
        await asyncio.sleep(DRAIN_POLL)


async def _copy(fleet: "Fleet", src: Any, dst: Any, db: str, role: str) -> None:
    """``pg_dump -Fc`` of ``db`` on ``src`` piped into ``pg_restore`` on ``dst`` (objects owned by
    ``role``). Raises OSError with the tools' last error line when either fails."""
    from proxy.embedded.postgres import find_bindir

    bindir = find_bindir()
    cfg = fleet.cfg

    def env(entry: Any) -> dict[str, str]:
        e = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        e.update(PGHOST=entry.host, PGPORT=str(entry.port), PGUSER=entry.user, PGSSLMODE=cfg.server_tls_sslmode,
                 PGCONNECT_TIMEOUT="10", PGAPPNAME="iasql-proxy move")
        if entry.password is not None:
            e["PGPASSWORD"] = entry.password
        if cfg.server_tls_ca_file is not None:
            e["PGSSLROOTCERT"] = str(cfg.server_tls_ca_file)
        return e

    read, write = os.pipe()
    dump = await asyncio.create_subprocess_exec(
        str(bindir / "pg_dump"), "-Fc", "--no-owner", "-d", db, stdout=write, stderr=asyncio.subprocess.PIPE,
        env=env(src))
    os.close(write)
    try:
        restore = await asyncio.create_subprocess_exec(
            str(bindir / "pg_restore"), "--no-owner", f"--role={role}", "--exit-on-error", "-d", db,
            stdin=read, stderr=asyncio.subprocess.PIPE, env=env(dst))
    finally:
        os.close(read)
    (_, dump_err), (_, restore_err) = await asyncio.gather(dump.communicate(), restore.communicate())
    for name, proc, err in (("pg_dump", dump, dump_err), ("pg_restore", restore, restore_err)):
        if proc.returncode != 0:
            lines = [ln for ln in err.decode("utf-8", "replace").splitlines() if ln.strip()]
            raise OSError(f"{name} failed: {lines[-1] if lines else f'exit {proc.returncode}'}")


async def _undo(fleet: "Fleet", db: str, source: str, dest: str, role: str | None, made_dest: bool,
                revoked: bool) -> None:
    """Put a failed move back: drop the destination copy, grant CONNECT back on the source, clear
    ``moving_to`` (every proxy resumes). Each step is tried; failures are only logged."""
    from psycopg import sql

    if made_dest:
        try:
            async with fleet.admin(dest) as adm:
                await adm.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))
        except Exception as e:
            log.warning("event=move_undo_failed step=drop_copy database=%s server=%s error=%r", db, dest, _line(e))
    if revoked and role is not None:
        try:
            async with fleet.admin(source) as adm:
                await adm.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                    sql.Identifier(db), sql.Identifier(role)))
        except Exception as e:
            log.warning("event=move_undo_failed step=grant_connect database=%s error=%r", db, _line(e))
    try:
        async with fleet.metadata() as meta:
            await meta.execute("UPDATE public.iasql_route SET moving_to = NULL WHERE pg_name = %s", (db,))
    except Exception as e:
        log.warning("event=move_undo_failed step=route database=%s error=%r", db, _line(e))
    fleet.moving_changed(db, None)


def _line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines() or [type(e).__name__])[0][:300] if text else type(e).__name__
