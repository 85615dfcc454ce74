"""The admin console: the virtual database ``admin_database`` (default ``iasql_proxy``), answered
in-process with PgBouncer's commands and column names.

Login: ``proxy.frontend.login.startup`` hands a session whose database is ours to ``AdminConsole.login``
after the StartupMessage and TLS checks. The client authenticates with the proxy's ``auth_type``
exactly as for any database (secrets from ``auth_file``, else ``auth_query`` on the first
database entry); then a user that is in neither ``admin_users`` nor ``stats_users`` gets
``FATAL 28000`` (checked after authentication, so the answer does not reveal who is an admin).
The console sends AuthenticationOk, a Postgres-like set of ParameterStatus, BackendKeyData and
ReadyForQuery, then answers simple Query messages until Terminate. Only the simple query
protocol is supported (as PgBouncer); extended-protocol messages get an error until Sync.

Commands (case-insensitive, one or more separated by ``;``): ``SHOW HELP|POOLS|CLIENTS|SERVERS|
STATS|STATS_TOTALS|STATS_AVERAGES|TOTALS|DATABASES|CONFIG|VERSION|STATE|LISTS|ENGINE``,
``RELOAD``, ``PAUSE [db]``, ``RESUME [db]``, ``DISABLE db``, ``ENABLE db``, ``RECONNECT [db]``,
``KILL db``, ``WAIT_CLOSE [db]``, ``MOVE db TO server`` (``proxy.routing.move``), ``SHUTDOWN
[WAIT_FOR_SERVERS]`` (``proxy.admin.ops``). ``stats_users`` may
only SHOW (42501 otherwise). Anything else: ``ERROR 42601 invalid command '...', use SHOW HELP;``
as PgBouncer words it. Rows are sent as text; counters are typed int8, times are text
``YYYY-MM-DD HH:MM:SS UTC`` as PgBouncer prints them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from proxy.config import Config, DatabaseTarget
from proxy.frontend.login import ClientError, authenticate
from proxy.metrics import session_state
from proxy.wire import backend as B
from proxy.wire import sqlstate
from proxy.wire.codec import ProtocolViolation

if TYPE_CHECKING:
    from proxy.admin.ops import Operations
    from proxy.frontend.session import ClientSession
    from proxy.server import ProxyApp

log = logging.getLogger("iasql_proxy.admin")

try:
    from importlib.metadata import version as _dist_version

    _VERSION = _dist_version("iasql-proxy")
except Exception:  # not installed as a distribution (running from a checkout)
    _VERSION = "0.1.0"

#: server_version the console reports when no server connection has told us Postgres's.
DEFAULT_SERVER_VERSION = "16.0"
TEXT, INT8, FLOAT8 = 25, 20, 701
_Q, _X, _S = ord("Q"), ord("X"), ord("S")
_EXTENDED = frozenset(map(ord, "PBDECHF"))

HELP = """Console usage
SHOW [HELP|POOLS|CLIENTS|SERVERS|STATS|STATS_TOTALS|STATS_AVERAGES|TOTALS|DATABASES|CONFIG|VERSION|STATE|LISTS|ENGINE|ROUTES]
RELOAD
PAUSE [<db>]
RESUME [<db>]
DISABLE <db>
ENABLE <db>
RECONNECT [<db>]
KILL <db>
WAIT_CLOSE [<db>]
MOVE <db> TO <server>
SHUTDOWN [WAIT_FOR_SERVERS]"""


class AdminError(Exception):
    """An ERROR answer to one console command (the session stays)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def _ts(wall: float | None) -> str | None:
    if wall is None:
        return None
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(wall))


def _wall(mono: float) -> float:
    """Wall-clock time of a monotonic timestamp."""
    return time.time() - (time.monotonic() - mono)


def _result(columns: list[tuple[str, int]], rows: list[tuple], tag: str = "SHOW") -> bytes:
    out = [B.RowDescription(tuple(B.FieldDescription(name, type_oid=oid,
                                                     type_size=8 if oid in (INT8, FLOAT8) else -1)
                                  for name, oid in columns)).encode()]
    for row in rows:
        out.append(B.DataRow(tuple(None if v is None else (v if isinstance(v, bytes) else str(v).encode())
                                   for v in row)).encode())
    out.append(B.CommandComplete(tag).encode())
    return b"".join(out)


class AdminConsole:
    """``app.admin``: ``database`` is the virtual database's name; ``login(session)`` takes over."""

    def __init__(self, app: "ProxyApp", ops: "Operations"):
        self.app = app
        self.ops = ops
        self.database = app.cfg.admin_database
        self.started = time.time()
        self.tasks: set[asyncio.Task] = set()

    # -- login --------------------------------------------------------------------------------
    def _auth_target(self, cfg: Config) -> DatabaseTarget:
        """Where ``auth_query`` runs for console users not in ``auth_file``: the first database entry."""
        base = cfg.databases.get("*") or next(iter(cfg.databases.values()), None)
        if base is None:  # only [servers] (scale out): the metadata database's server
            base = self.app.target_for(cfg.metadata_database)
        return dataclasses.replace(base, name=self.database, password=None, pool_size=None, pool_mode=None)

    async def login(self, session: "ClientSession") -> None:
        """Authenticate ``session``, check it is an admin or stats user, greet it and serve it.

        Raises ClientError (the session sends it as FATAL and closes) on failure. Returns once the
        console's loop runs as its own task (so client_login_timeout does not apply to it)."""
        cfg = self.app.cfg
        session.target = self._auth_target(cfg)
        await authenticate(session)
        user = session.user
        role = "admin" if user in cfg.admin_users else "stats" if user in cfg.stats_users else None
        if role is None:
            raise ClientError(sqlstate.INVALID_AUTHORIZATION_SPECIFICATION,
                              f'permission denied for database "{self.database}"',
                              detail=f'User "{user}" is in neither admin_users nor stats_users.')
        session.admin_role = role
        session.key = self.app.register_key(session)
        params = {
            "server_version": self._server_version(),
            "server_encoding": "UTF8",
            "client_encoding": "UTF8",
            "DateStyle": "ISO",
            "TimeZone": "UTC",
            "integer_datetimes": "on",
            "standard_conforming_strings": "on",
            "is_superuser": "off",
            "session_authorization": user,
            "application_name": session.params.get("application_name", ""),
        }
        out = [B.AUTHENTICATION_OK]
        out += [B.ParameterStatus(k, v).encode() for k, v in params.items()]
        out.append(B.BackendKeyData(*session.key).encode())
        out.append(B.ReadyForQuery(b"I").encode())
        session.write(b"".join(out))
        if session.cfg.log_connections:
            log.info("event=admin_login client=%s user=%s role=%s tls=%s", session.peer, user, role,
                     session.tls_version or "off")
        task = asyncio.get_running_loop().create_task(self._serve(session))
        session._busy = task  # cancelled by connection_lost
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _server_version(self) -> str:
        for pool in list(self.app.pools.values()):
            for conn in list(pool.idle) + list(pool.active):
                v = conn.params.get("server_version")
                if v:
                    return v
        return DEFAULT_SERVER_VERSION

    # -- the loop -----------------------------------------------------------------------------
    async def _serve(self, session: "ClientSession") -> None:
        in_batch_error = False
        try:
            while not session.closed:
                t, payload = await session.read_message()
                if t == _X:
                    session.close()
                    return
                if t == _Q:
                    await self._query(session, payload)
                elif t == _S:
                    in_batch_error = False
                    session.write(B.ReadyForQuery(b"I").encode())
                elif t in _EXTENDED:
                    if not in_batch_error:
                        in_batch_error = True
                        session.write(B.error(sqlstate.FEATURE_NOT_SUPPORTED,
                                              "the admin console supports only the simple query protocol"))
                else:
                    raise ProtocolViolation(f"invalid frontend message type {t}")
        except (ConnectionError, asyncio.CancelledError):
            return
        except ProtocolViolation as e:
            session.fatal(e.sqlstate, e.message)
        except Exception as e:
            log.exception("event=admin_error client=%s", session.peer)
            session.fatal(sqlstate.INTERNAL_ERROR, f"internal proxy error: {type(e).__name__}")

    async def _query(self, session: "ClientSession", payload: bytes) -> None:
        text = payload.rstrip(b"\0").decode("utf-8", "replace")
        commands = [c.strip() for c in text.split(";")]
        commands = [c for c in commands if c]
        if not commands:
            session.write(B.EmptyQueryResponse().encode() + B.ReadyForQuery(b"I").encode())
            return
        for command in commands:
            try:
                session.write(await self.execute(session, command))
            except AdminError as e:
                session.write(B.error(e.code, e.message))
                break
        session.write(B.ReadyForQuery(b"I").encode())

    async def execute(self, session: "ClientSession", command: str) -> bytes:
        """Answer one command; returns the messages (without ReadyForQuery). Raises AdminError."""
        words = command.split()
        verb = words[0].upper()
        args = words[1:]
        if verb == "SHOW":
            if len(args) != 1:
                raise self._invalid(command)
            show = self.SHOWS.get(args[0].upper())
            if show is None:
                raise self._invalid(command)
            result = show(self, session)
            if not isinstance(result, bytes):  # with workers > 1: rows gathered from every worker
                result = await result
            return result
        action = self.ACTIONS.get(verb)
        if action is None:
            raise self._invalid(command)
        if getattr(session, "admin_role", None) != "admin":
            raise AdminError(sqlstate.INSUFFICIENT_PRIVILEGE, "admin access needed")
        log.info("event=admin_command user=%s command=%r", session.user, command)
        return await action(self, session, args, command)

    @staticmethod
    def _invalid(command: str) -> AdminError:
        return AdminError(sqlstate.SYNTAX_ERROR, f"invalid command '{command}', use SHOW HELP;")

    # -- SHOW ---------------------------------------------------------------------------------
    def show_help(self, session: "ClientSession") -> bytes:
        return B.notice(HELP) + B.CommandComplete("SHOW").encode()

    def show_version(self, session: "ClientSession") -> bytes:
        return _result([("version", TEXT)], [(f"iasql-proxy {_VERSION}",)])

    def show_state(self, session: "ClientSession") -> bytes:
        ops = self.ops
        return _result([("key", TEXT), ("value", TEXT)], [
            ("active", "no" if ops.paused_all or ops.draining else "yes"),
            ("paused", "yes" if ops.paused_all else "no"),
            ("paused_databases", ",".join(sorted(ops.paused))),
            ("shutting_down", "yes" if ops.draining else "no"),
        ])

    def show_pools(self, session: "ClientSession") -> bytes:
        cols = [("database", TEXT), ("user", TEXT), ("cl_active", INT8), ("cl_waiting", INT8),
                ("cl_active_cancel_req", INT8), ("cl_waiting_cancel_req", INT8), ("sv_active", INT8),
                ("sv_active_cancel", INT8), ("sv_being_canceled", INT8), ("sv_idle", INT8), ("sv_used", INT8),
                ("sv_tested", INT8), ("sv_login", INT8), ("maxwait", INT8), ("maxwait_us", INT8),
                ("pool_mode", TEXT), ("load_balance_hosts", TEXT)]
        rows = []
        admins = sum(1 for s in list(self.app.clients) if getattr(s, "admin_role", None) is not None)
        rows.append((self.database, self.database, admins, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, "statement", None))
        for (db, user), v in sorted(self.ops.metrics.pools().items()):
            wait_s = int(v.maxwait)
            rows.append((db, user, v.cl_active + v.cl_idle, v.cl_waiting, 0, 0, v.sv_active, 0, 0, v.sv_idle, 0,
                         v.sv_tested, v.sv_login, wait_s, int((v.maxwait - wait_s) * 1e6), v.pool_mode, None))
        return _result(cols, rows)

    def show_clients(self, session: "ClientSession") -> bytes:
        cols = [("type", TEXT), ("user", TEXT), ("database", TEXT), ("replication", TEXT), ("state", TEXT),
                ("addr", TEXT), ("port", INT8), ("local_addr", TEXT), ("local_port", INT8),
                ("connect_time", TEXT), ("request_time", TEXT), ("wait", INT8), ("wait_us", INT8),
                ("close_needed", INT8), ("ptr", TEXT), ("link", TEXT), ("remote_pid", INT8), ("tls", TEXT),
                ("application_name", TEXT), ("prepared_statements", INT8), ("id", INT8)]
        now = time.monotonic()
        waiting = self.ops.waiting
        rows = []
        for s in sorted(list(self.app.clients), key=lambda c: c.started):
            if s.closed or not s.user:
                continue
            state = session_state(s, waiting)
            state = {"login": "login", "waiting": "waiting", "active": "active", "idle": "idle"}[state]
            if getattr(s, "admin_role", None) is not None:
                state = "active"
            waited = now - (waiting.get(s) or getattr(s, "wait_started", None) or now)
            addr, port = _split_addr(s.peer)
            laddr, lport = _sockname(s.transport)
            connected = _ts(_wall(s.started))
            rows.append(("C", s.user, s.database, "none", state, addr, port, laddr, lport, connected, connected,
                         int(waited), int((waited - int(waited)) * 1e6), 0, f"{id(s):#x}",
                         f"{id(s.server):#x}" if s.server is not None else None, 0, _tls(s),
                         s.params.get("application_name", ""), _prepared(s), s.key[0] if s.key else 0))
        return _result(cols, rows)

    def show_servers(self, session: "ClientSession") -> bytes:
        cols = [("type", TEXT), ("user", TEXT), ("database", TEXT), ("replication", TEXT), ("state", TEXT),
                ("addr", TEXT), ("port", INT8), ("local_addr", TEXT), ("local_port", INT8),
                ("connect_time", TEXT), ("request_time", TEXT), ("wait", INT8), ("wait_us", INT8),
                ("close_needed", INT8), ("ptr", TEXT), ("link", TEXT), ("remote_pid", INT8), ("tls", TEXT),
                ("application_name", TEXT), ("prepared_statements", INT8), ("id", INT8)]
        linked = {s.server: s for s in list(self.app.clients) if s.server is not None}
        cfg = self.app.cfg
        rows = []
        for (tname, dbname, user), pool in sorted(list(self.app.pools.items())):
            target = cfg.databases.get(tname)
            conns = [(c, "idle") for c in list(pool.idle)]
            conns += [(c, "active" if c in linked else "tested") for c in list(pool.active)]
            for conn, state in sorted(conns, key=lambda cs: cs[0].created):
                client = linked.get(conn)
                t = conn.target if getattr(conn, "target", None) is not None else target
                laddr, lport = _sockname(conn.transport)
                key = conn.backend_key
                rows.append(("S", user, dbname, "none", state, t.host if t else None, t.port if t else None,
                             laddr, lport, _ts(_wall(conn.created)), _ts(_wall(conn.last_used)), 0, 0,
                             int(bool(conn.broken)),  # close_needed: RECONNECT/KILL marked it
                             f"{id(conn):#x}", f"{id(client):#x}" if client is not None else None,
                             key.process_id if key is not None else 0, _tls_transport(conn.transport),
                             client.params.get("application_name", "") if client is not None else "",
                             len(getattr(conn, "prepared", ()) or ()), key.process_id if key is not None else 0))
        return _result(cols, rows)

    def _stats_columns(self, totals: bool, averages: bool) -> list[tuple[str, int]]:
        cols = [("database", TEXT)]
        if totals:
            cols += [("total_xact_count", INT8), ("total_query_count", INT8), ("total_server_assignment_count", INT8),
                     ("total_received", INT8), ("total_sent", INT8), ("total_xact_time", INT8),
                     ("total_query_time", INT8), ("total_wait_time", INT8)]
        if averages:
            cols += [("avg_xact_count", INT8), ("avg_query_count", INT8), ("avg_server_assignment_count", INT8),
                     ("avg_recv", INT8), ("avg_sent", INT8), ("avg_xact_time", INT8), ("avg_query_time", INT8),
                     ("avg_wait_time", INT8)]
        return cols

    def _stats(self, totals: bool, averages: bool, aggregate: bool = False) -> bytes:
        m = self.ops.metrics
        tot = m.totals()
        avg = m.averages(tot)
        if aggregate:
            keys = ["*"]
            tot = {"*": [sum(v[i] for v in tot.values()) for i in range(6)]}
            avg = {"*": [sum(v[i] for v in avg.values()) for i in range(6)]}
        else:
            keys = sorted(tot)
        rows = []
        for db in keys:
            t = tot[db]
            a = avg[db]
            row: list[Any] = [db]
            if totals:
                row += [t[0], t[1], t[4], t[2], t[3], 0, 0, t[5]]
            if averages:
                row += [int(a[0]), int(a[1]), int(a[4]), int(a[2]), int(a[3]), 0, 0, int(a[5])]
            rows.append(tuple(row))
        cols = self._stats_columns(totals, averages)
        if aggregate:
            cols = cols[1:]
            rows = [r[1:] for r in rows]
        return _result(cols, rows)

    def show_stats(self, session: "ClientSession") -> bytes:
        return self._stats(True, True)

    def show_stats_totals(self, session: "ClientSession") -> bytes:
        return self._stats(True, False)

    def show_stats_averages(self, session: "ClientSession") -> bytes:
        return self._stats(False, True)

    def show_totals(self, session: "ClientSession") -> bytes:
        return self._stats(True, True, aggregate=True)

    def show_databases(self, session: "ClientSession") -> bytes:
        cfg = self.app.cfg
        cols = [("name", TEXT), ("host", TEXT), ("port", INT8), ("database", TEXT), ("force_user", TEXT),
                ("pool_size", INT8), ("min_pool_size", INT8), ("reserve_pool_size", INT8),
                ("server_lifetime", INT8), ("pool_mode", TEXT), ("load_balance_hosts", TEXT),
                ("max_connections", INT8), ("current_connections", INT8), ("max_client_connections", INT8),
                ("current_client_connections", INT8), ("paused", INT8), ("disabled", INT8)]
        ops = self.ops
        clients: dict[str, int] = {}
        for s in list(self.app.clients):
            t = getattr(s, "target", None)
            if t is not None and getattr(s, "admin_role", None) is None and not s.closed:
                clients[t.name] = clients.get(t.name, 0) + 1
        servers: dict[str, int] = {}
        for (tname, _, _), pool in list(self.app.pools.items()):
            servers[tname] = servers.get(tname, 0) + pool.total
        admins = sum(1 for s in list(self.app.clients) if getattr(s, "admin_role", None) is not None)
        rows = [(self.database, None, cfg.listen_port, self.database, self.database, 2, 0, 0, 0, "statement",
                 None, 0, 0, 0, admins, 0, 0)]
        for name, t in sorted(cfg.databases.items()):
            paused = ops.paused_all or name in ops.paused
            rows.append((name, t.host, t.port, t.dbname or ("" if name == "*" else name), t.user,
                         t.pool_size or cfg.default_pool_size, cfg.min_pool_size, cfg.reserve_pool_size,
                         int(cfg.server_lifetime), t.pool_mode, None, 0, servers.get(name, 0), 0,
                         clients.get(name, 0), int(paused), 0))
        return _result(cols, rows)

    def show_config(self, session: "ClientSession") -> bytes:
        cfg = self.app.cfg
        default = Config(databases={})
        restart = ("listen_addr", "listen_port", "workers", "metrics_port", "metrics_addr")
        rows = []
        for f in dataclasses.fields(Config):
            if f.name in ("databases", "engine", "config_file", "servers"):  # servers: SHOW ROUTES
                continue
            rows.append((f.name, _fmt(getattr(cfg, f.name)), _fmt(getattr(default, f.name)),
                         "no" if f.name in restart else "yes"))
        for f in dataclasses.fields(cfg.engine):
            value = getattr(cfg.engine, f.name)
            dflt = getattr(default.engine, f.name)
            if f.name == "deprecated_keys":
                continue
            rows.append((f"engine.{f.name}", _fmt(value), _fmt(dflt), "no"))
        rows.append(("config_file", _fmt(cfg.config_file), "", "no"))
        return _result([("key", TEXT), ("value", TEXT), ("default", TEXT), ("changeable", TEXT)], rows)

    def show_routes(self, session: "ClientSession") -> bytes:
        """SHOW ROUTES (ours, scale out): ``proxy.routing.fleet.Fleet.show_rows``; empty without [servers]."""
        fleet = self.app.fleet
        return _result([("database", TEXT), ("server", TEXT), ("host", TEXT), ("port", INT8), ("weight", TEXT),
                        ("source", TEXT)], fleet.show_rows() if fleet is not None else [])

    def show_lists(self, session: "ClientSession") -> bytes:
        clients = list(self.app.clients)
        servers = sum(p.total for p in list(self.app.pools.values()))
        users = {s.user for s in clients if s.user}
        rows = [("databases", len(self.app.cfg.databases)), ("users", len(users)), ("pools", len(self.app.pools)),
                ("free_clients", 0), ("used_clients", len(clients)),
                ("login_clients", sum(1 for s in clients if not s.ready and getattr(s, "admin_role", None) is None)),
                ("free_servers", 0), ("used_servers", servers),
                ("dns_names", 0), ("dns_zones", 0), ("dns_queries", 0), ("dns_pending", 0)]
        return _result([("list", TEXT), ("items", INT8)], rows)

    def show_engine(self, session: "ClientSession") -> bytes:
        j = self.ops.journal
        cols = [("database", TEXT), ("user", TEXT), ("function", TEXT), ("start", TEXT), ("duration", FLOAT8),
                ("state", TEXT)]
        rows = []
        for call in list(j.running) + list(reversed(j.recent)):
            rows.append((call.database, call.user, call.function, _ts(call.started), f"{call.elapsed():.3f}",
                         call.state))
        return _result(cols, rows)

    SHOWS: dict[str, Callable[["AdminConsole", Any], bytes]] = {
        "HELP": show_help, "VERSION": show_version, "STATE": show_state, "POOLS": show_pools,
        "CLIENTS": show_clients, "SERVERS": show_servers, "STATS": show_stats, "STATS_TOTALS": show_stats_totals,
        "STATS_AVERAGES": show_stats_averages, "TOTALS": show_totals, "DATABASES": show_databases,
        "CONFIG": show_config, "LISTS": show_lists, "ENGINE": show_engine,
        "ROUTES": show_routes,  # scale out (issue 19)
    }

    # -- actions ------------------------------------------------------------------------------
    async def do_reload(self, session: "ClientSession", args: list[str], command: str) -> bytes:
        if args:
            raise self._invalid(command)
        error = self.ops.reload()
        if error is not None:
            raise AdminError("F0000", f"configuration file not reloaded: {error}")
        return B.CommandComplete("RELOAD").encode()

    def _db_arg(self, args: list[str], command: str) -> str | None:
        if len(args) > 1:
            raise self._invalid(command)
        if not args:
            return None
        db = args[0].strip('"')
        if db == self.database:
            raise AdminError(sqlstate.OBJECT_NOT_IN_PREREQUISITE_STATE, f"cannot {command.split()[0].lower()} the admin console database \"{db}\"")
        if self.app.target_for(db) is None:
            raise AdminError(sqlstate.INVALID_CATALOG_NAME, f"no such database: {db}")
        return db

    async def do_pause(self, session: "ClientSession", args: list[str], command: str) -> bytes:
        db = self._db_arg(args, command)
        if (db is None and self.ops.paused_all) or (db is not None and db in self.ops.paused):
            raise AdminError(sqlstate.OBJECT_NOT_IN_PREREQUISITE_STATE, f"database {db} is already paused" if db else "already paused")
        await self.ops.pause(db)
        return B.CommandComplete("PAUSE").encode()

    async def do_resume(self, session: "ClientSession", args: list[str], command: str) -> bytes:
        db = self._db_arg(args, command)
        if not self.ops.resume(db):
            raise AdminError(sqlstate.OBJECT_NOT_IN_PREREQUISITE_STATE, f"database {db} is not paused" if db else "pooler is not paused")
        return B.CommandComplete("RESUME").encode()

    async def do_shutdown(self, session: "ClientSession", args: list[str], command: str) -> bytes:
        mode = args[0].upper() if args else ""
        if len(args) > 1 or mode not in ("", "WAIT_FOR_SERVERS"):
            raise self._invalid(command)
        graceful = mode == "WAIT_FOR_SERVERS"
        asyncio.get_running_loop().call_soon(self.ops.request_shutdown, graceful)
        return B.CommandComplete("SHUTDOWN").encode()

    async def do_reconnect(self, session: "ClientSession", args: list[str], command: str) -> bytes:
        self.ops.reconnect(self._db_arg(args, command))
        return B.CommandComplete("RECONNECT").encode()

    async def do_wait_close(self, session: "ClientSession", args: list[str], command: str) -> bytes:
        await self.ops.wait_close(self._db_arg(args, command))
        return B.CommandComplete("WAIT_CLOSE").encode()

    def _one_db(self, args: list[str], command: str) -> str:
        db = self._db_arg(args, command)
        if db is None:
            raise self._invalid(command)
        return db

    async def do_kill(self, session: "ClientSession", args: list[str], command: str) -> bytes:
        self.ops.kill(self._one_db(args, command))
        return B.CommandComplete("KILL").encode()

    async def do_disable(self, session: "ClientSession", args: list[str], command: str) -> bytes:
        self.ops.disable(self._one_db(args, command))
        return B.CommandComplete("DISABLE").encode()

    async def do_enable(self, session: "ClientSession", args: list[str], command: str) -> bytes:
        db = self._one_db(args, command)
        if not self.ops.enable(db):
            raise AdminError(sqlstate.OBJECT_NOT_IN_PREREQUISITE_STATE, f"database {db} is not disabled")
        return B.CommandComplete("ENABLE").encode()

    async def do_move(self, session: "ClientSession", args: list[str], command: str) -> bytes:
        """``MOVE db TO server`` (scale out, ``proxy.routing.move``): progress as NOTICEs, then
        CommandComplete ``MOVE``; a MoveError is the command's ERROR with its SQLSTATE."""
        from proxy.routing.move import MoveError, move_database

        if len(args) != 3 or args[1].upper() != "TO":
            raise self._invalid(command)
        db, dest = args[0].strip('"'), args[2].strip('"')
        if db == self.database:
            raise AdminError(sqlstate.OBJECT_NOT_IN_PREREQUISITE_STATE, f'cannot move the admin console database "{db}"')
        def say(line: str) -> None:  # progress as it happens, as PgBouncer's console sends NOTICEs
            session.write(B.notice(line))

        try:
            await move_database(self.app, db, dest, say)
        except MoveError as e:
            raise AdminError(e.sqlstate, e.message) from None
        return B.CommandComplete("MOVE").encode()

    ACTIONS = {"MOVE": do_move, "RELOAD": do_reload, "PAUSE": do_pause, "RESUME": do_resume, "SHUTDOWN": do_shutdown,
               "RECONNECT": do_reconnect, "WAIT_CLOSE": do_wait_close, "KILL": do_kill,
               "DISABLE": do_disable, "ENABLE": do_enable}


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, tuple):
        return ",".join(v)
    if isinstance(v, Path):
        return str(v)
    return str(v)


def _split_addr(peer: str) -> tuple[str, int | None]:
    host, _, port = peer.rpartition(":")
    try:
        return host, int(port)
    except ValueError:
        return peer, None


def _sockname(transport: Any) -> tuple[str | None, int | None]:
    if transport is None:
        return None, None
    try:
        name = transport.get_extra_info("sockname")
    except Exception:
        return None, None
    if isinstance(name, tuple) and len(name) >= 2:
        return str(name[0]), int(name[1])
    return None, None


def _tls_transport(transport: Any) -> str:
    if transport is None:
        return ""
    try:
        obj = transport.get_extra_info("ssl_object")
    except Exception:
        return ""
    if obj is None:
        return ""
    cipher = obj.cipher()
    return f"{obj.version()}/{cipher[0]}" if cipher else str(obj.version())


def _tls(session: Any) -> str:
    if session.tls_version is None:
        return ""
    return _tls_transport(session.transport) or session.tls_version


def _prepared(session: Any) -> int:
    prepared = getattr(session, "prepared", None)
    try:
        return len(prepared)  # type: ignore[arg-type]
    except TypeError:
        return 0
