"""The development stack behind ``make run``: certificates, a persistent embedded Postgres, moto,
and a proxy configuration that ties them together.

Theory of operation
-------------------
Everything lives in two directories: the certificates in ``certs/`` (made by
:func:`proxy.certs.ensure_dev_certs`, reused when present) and the state in ``.run/`` (never
committed)::

    .run/pgdata/            the cluster's data directory (initdb on the first start only)
    .run/credentials        generated passwords, mode 0600, key=value lines
    .run/userlist.txt       auth_file: the login roles' SCRAM verifiers read from pg_authid,
                            and the auth_user's password
    .run/iasql-proxy.ini    the proxy configuration for this run
    .run/devstack.json      ports of the running services (for ``iasql-proxy init-db``)
    .run/postgres.log       the server log
    .run/moto-state.pickle  the sandbox cloud (moto's state), mode 0600, saved while it runs
                            and restored at the next start (``proxy.embedded.moto_state``)

On every start the stack (re)sets the superuser's and the login role's passwords from
``credentials`` (over the Unix socket, where the superuser is trusted), so a lost or edited
credentials file heals itself. Postgres gets a fresh ephemeral port each start and serves TLS with
the same development certificate; the proxy reaches it with ``server_tls_sslmode = verify-full``.
Clients authenticate to the proxy with SCRAM-SHA-256: the proxy holds only the verifier from
``pg_authid`` (in ``userlist.txt``), never the login role's password, and logs in upstream with the
client key recovered from the client's proof. ``auth_user = postgres`` with the default
``auth_query`` covers roles created after the start.

The tables and the sandbox cloud are kept together: ``pgdata`` holds the rows, ``moto-state.pickle``
the resources they describe, so after a restart ``iasql_commit`` finds in the cloud what the
tables say is there (a cloud that started empty would make the next commit's sync delete the rows).
A cloud that cannot be restored (a moto upgrade changed its classes) stops the start with the
reason rather than starting empty under the old tables. A service moto cannot save is named on the
stack's stderr (``MotoServer.warn_fd``) when it is left out, not only in moto's log.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from proxy.certs import ensure_dev_certs
from proxy.config import Config, load_config
from proxy.embedded.moto import MotoServer
from proxy.embedded.postgres import EmbeddedPostgres, find_bindir

DEFAULT_USER = "iasql"
DEFAULT_DBNAME = "iasql"
#: The engine's own role of earlier versions (calls now run as the caller); dropped at start.
OLD_ENGINE_ROLE = "iasql_engine"
SUPERUSER = "postgres"


class DevStackError(RuntimeError):
    """The development stack cannot start (port taken, Postgres or moto failing)."""


def _quote_literal(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _quote_ident(s: str) -> str:
    return '"' + s.replace('"', '""') + '"'


def _userlist_field(s: str) -> str:
    return '"' + s.replace('"', '""') + '"'


def read_credentials(path: Path) -> dict[str, str]:
    """Parse a ``key=value`` credentials file (blank lines and ``#`` comments skipped)."""
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def port_is_free(host: str, port: int) -> bool:
    """True when a TCP listener could bind ``host``:``port`` right now."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


@dataclass
class DevStack:
    """Embedded Postgres + moto + a generated proxy configuration (see the module docstring).

    ``state_dir`` and ``certs_dir`` are made absolute. ``port`` is the proxy's listen port. ``server_tls_sslmode`` is what the proxy uses towards Postgres.
    ``with_moto`` False skips the AWS sandbox (``[engine] aws_endpoint_url`` stays unset).
    """

    state_dir: Path = Path(".run")
    certs_dir: Path = Path("certs")
    port: int = 6432
    listen_addr: str = "127.0.0.1"
    user: str = DEFAULT_USER
    dbname: str = DEFAULT_DBNAME
    server_tls_sslmode: str = "verify-full"
    with_moto: bool = True
    #: The web console's port (``http_listen_port``): None = ``port`` + 2000 when that is free, else
    #: any free port (the proxy prints its URL when it listens); 0 = any free port.
    http_port: int | None = None

    pg: EmbeddedPostgres | None = None
    moto: MotoServer | None = None
    credentials: dict[str, str] = field(default_factory=dict)
    config_path: Path | None = None
    #: After start(): one sentence on the sandbox cloud (restored, new, or new beside old tables).
    cloud_note: str = ""

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir).absolute()
        self.certs_dir = Path(self.certs_dir).absolute()

    # -- files ---------------------------------------------------------------------------------
    @property
    def credentials_path(self) -> Path:
        """``<state_dir>/credentials``: generated passwords (mode 0600)."""
        return self.state_dir / "credentials"

    @property
    def moto_state_path(self) -> Path:
        """``<state_dir>/moto-state.pickle``: the saved sandbox cloud."""
        return self.state_dir / "moto-state.pickle"

    @property
    def ca_file(self) -> Path:
        """The development CA certificate clients verify the proxy against."""
        return self.certs_dir / "ca.crt"

    def _load_or_make_credentials(self) -> dict[str, str]:
        creds: dict[str, str] = {}
        if self.credentials_path.exists():
            creds = read_credentials(self.credentials_path)
        changed = False
        for key in ("postgres_password", "user_password"):
            if not creds.get(key):
                creds[key] = secrets.token_urlsafe(18)
                changed = True
        if creds.get("user") != self.user:
            creds["user"] = self.user
            changed = True
        if changed or not self.credentials_path.exists():
            body = "".join(f"{k}={v}\n" for k, v in creds.items())
            _write_private(self.credentials_path,
                           "# generated by `iasql-proxy dev`; never commit this file\n" + body)
        return creds

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> Config:
        """Start Postgres and moto, write the config files; return the loaded proxy Config.

        Raises DevStackError when the proxy port is taken, EmbeddedPostgresError /
        MotoServerError (with their logs) when a service does not come up, and MotoStateError when
        the saved sandbox cloud cannot be restored. On failure, whatever was started is stopped
        again. ``cloud_note`` then says what happened to the sandbox cloud.
        """
        running = self._running_elsewhere()
        if running is not None:
            raise DevStackError(f"another `iasql-proxy dev` (pid {running}) is running from {self.state_dir}: "
                                "stop it first (Ctrl-C there); two stacks cannot share one database directory")
        if not port_is_free(self.listen_addr, self.port):
            raise DevStackError(f"{self.listen_addr}:{self.port} is already in use "
                                "(another `iasql-proxy dev`? choose another port: make run PORT=6433, or --port)")
        if self.http_port is None:
            guess = self.port + 2000
            self.http_port = guess if guess <= 65535 and port_is_free(self.listen_addr, guess) else 0
        elif self.http_port and not port_is_free(self.listen_addr, self.http_port):
            raise DevStackError(f"{self.listen_addr}:{self.http_port} (the console's port) is already in use "
                                "(choose another: --http-port, or 0 for any free port)")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o755)  # the unprivileged Postgres user must reach pgdata/ and sock/
        _, server_crt, server_key = ensure_dev_certs(self.certs_dir)
        self.credentials = self._load_or_make_credentials()
        had_tables = (self.state_dir / "pgdata" / "PG_VERSION").exists()
        try:
            self._start_postgres(server_crt, server_key)
            if self.with_moto:
                self.cloud_note = self._cloud_note(had_tables)
                self.moto = MotoServer(state_file=self.moto_state_path).start()
            return self._write_config(server_crt, server_key)
        except BaseException:
            self.stop()
            raise

    def _running_elsewhere(self) -> int | None:
        """The pid of another live ``iasql-proxy dev`` using this state directory (its
        ``devstack.json``), else None. Its Postgres is not an orphan: ``_stop_orphan`` must not
        stop it (a second ``make run PORT=...`` in the same checkout used to)."""
        try:
            pid = int(json.loads((self.state_dir / "devstack.json").read_text()).get("pid") or 0)
        except (OSError, ValueError, TypeError, AttributeError):
            return None
        if pid <= 0 or pid == os.getpid():
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None  # gone (or no /proc: then the port check is what is left)
        return pid if (b"iasql-proxy" in cmdline or b"proxy.cli" in cmdline) else None

    def _cloud_note(self, had_tables: bool) -> str:
        """What the start does with the sandbox cloud, in one sentence for the user."""
        where = self.moto_state_path
        if where.exists():
            return f"sandbox cloud restored from {where}"
        assert self.pg is not None
        if had_tables and self.pg.psql("SELECT to_regclass('public.iasql_module') IS NOT NULL",
                                       dbname=self.dbname).strip() == "t":
            return (f"new, empty sandbox cloud, saved in {where} from now on: the tables in "
                    f"{self.state_dir / 'pgdata'} were made without one, so resources they name from "
                    "an earlier run are not in it and the next iasql_commit removes their rows "
                    "(remove the state directory to start afresh)")
        return f"new sandbox cloud, saved in {where} and restored at the next start"

    def _start_postgres(self, server_crt: Path, server_key: Path) -> None:
        pw = self.credentials["postgres_password"]
        self.pg = EmbeddedPostgres(data_dir=self.state_dir / "pgdata", password=pw,
                                   ssl_cert=server_crt, ssl_key=server_key,
                                   settings={"password_encryption": "scram-sha-256"})
        self._stop_orphan()
        self.pg.start()
        user_pw = self.credentials["user_password"]
        role, db = _quote_ident(self.user), _quote_ident(self.dbname)
        self.pg.psql(f"ALTER ROLE {_quote_ident(SUPERUSER)} PASSWORD {_quote_literal(pw)}")
        exists = self.pg.psql(f"SELECT 1 FROM pg_roles WHERE rolname = {_quote_literal(self.user)}").strip()
        verb = "ALTER" if exists else "CREATE"
        self.pg.psql(f"{verb} ROLE {role} LOGIN CREATEDB PASSWORD {_quote_literal(user_pw)}")
        if not self.pg.psql(f"SELECT 1 FROM pg_database WHERE datname = {_quote_literal(self.dbname)}").strip():
            self.pg.psql(f"CREATE DATABASE {db} OWNER {role}")
        self._drop_old_engine_role()

    def _drop_old_engine_role(self) -> None:
        """A dev stack made by an earlier version has a superuser engine role that owns the IaSQL
        tables it created; calls now run as the user, so those become the user's and the role goes."""
        assert self.pg is not None
        old = _quote_literal(OLD_ENGINE_ROLE)
        if not self.pg.psql(f"SELECT 1 FROM pg_roles WHERE rolname = {old}").strip():
            return
        dbs = self.pg.psql("SELECT datname FROM pg_database WHERE datallowconn").split()
        for name in dbs:
            self.pg.psql(f"REASSIGN OWNED BY {_quote_ident(OLD_ENGINE_ROLE)} TO {_quote_ident(self.user)}; "
                         f"DROP OWNED BY {_quote_ident(OLD_ENGINE_ROLE)}", dbname=name)
        self.pg.psql(f"DROP ROLE {_quote_ident(OLD_ENGINE_ROLE)}")

    def _stop_orphan(self) -> None:
        """Stop a Postgres left running on our data directory by a dev stack that was killed.

        Postgres runs in its own session, so SIGKILL of ``iasql-proxy dev`` leaves it behind holding
        ``postmaster.pid``. ``pg_ctl stop`` signals exactly the pid recorded in that file.
        """
        assert self.pg is not None and self.pg.data_dir is not None
        if not (self.pg.data_dir / "postmaster.pid").exists():
            return
        pg_ctl = str(find_bindir() / "pg_ctl")
        kw = self.pg._run_kw()
        status = subprocess.run([pg_ctl, "status", "-D", str(self.pg.data_dir)], capture_output=True, **kw)
        if status.returncode == 0:
            subprocess.run([pg_ctl, "stop", "-D", str(self.pg.data_dir), "-m", "fast", "-w", "-t", "60"],
                           capture_output=True, **kw)

    def _userlist(self) -> str:
        """auth_file text: every login role's SCRAM verifier, and the superuser's password."""
        assert self.pg is not None
        rows = self.pg.psql("SELECT rolname, rolpassword FROM pg_authid WHERE rolcanlogin "
                            "AND rolpassword LIKE 'SCRAM-SHA-256$%' ORDER BY rolname")
        lines = ["; generated by `iasql-proxy dev` from pg_authid; never commit this file"]
        for row in rows.splitlines():
            name, _, verifier = row.partition("|")
            if name and name != SUPERUSER:
                lines.append(f"{_userlist_field(name)} {_userlist_field(verifier)}")
        # auth_user needs a password it can log in with to run auth_query (as PgBouncer's does)
        lines.append(f"{_userlist_field(SUPERUSER)} {_userlist_field(self.credentials['postgres_password'])}")
        return "\n".join(lines) + "\n"

    def _write_config(self, server_crt: Path, server_key: Path) -> Config:
        assert self.pg is not None
        userlist = self.state_dir / "userlist.txt"
        _write_private(userlist, self._userlist())
        engine = ""
        if self.moto is not None:
            engine = f"\n[engine]\naws_endpoint_url = {self.moto.endpoint_url}\n"
        text = f"""\
; generated by `iasql-proxy dev` on each start; edit proxy/devstack.py instead
[databases]
* = host=127.0.0.1 port={self.pg.port}

; scale out (README, Scaling out): iasql_connect places databases here; the metadata database
; iasql_metadata is created on it at start. The admin password is the auth_file's postgres entry.
[servers]
local = host=127.0.0.1 port={self.pg.port} user={SUPERUSER}

[proxy]
listen_addr = {self.listen_addr}
listen_port = {self.port}
auth_type = scram-sha-256
auth_file = {userlist}
auth_user = {SUPERUSER}
client_tls_sslmode = require
client_tls_cert_file = {server_crt}
client_tls_key_file = {server_key}
server_tls_sslmode = {self.server_tls_sslmode}
server_tls_ca_file = {self.ca_file}
pool_mode = session
; one server connection per psql/IDE session: leave room for many (Postgres allows 300 here)
default_pool_size = 100
max_client_conn = 200
admin_users = {self.user}
; the web console and WebSocket /run (HTTPS, same certificate, same logins)
http_listen_addr = {self.listen_addr}
http_listen_port = {self.http_port or 0}
{engine}"""
        self.config_path = self.state_dir / "iasql-proxy.ini"
        _write_private(self.config_path, text)
        state = {"postgres_port": self.pg.port, "proxy_port": self.port,
                 "aws_endpoint_url": self.moto.endpoint_url if self.moto else None, "pid": os.getpid()}
        _write_private(self.state_dir / "devstack.json", json.dumps(state, indent=2) + "\n")
        return load_config(self.config_path)

    def apply_aws_environment(self) -> None:
        """Point boto3 in this process at moto (AWS_ENDPOINT_URL and dummy credentials).

        The credentials are replaced too, so no real AWS key is ever sent anywhere from a dev run.
        """
        if self.moto is None:
            return
        os.environ["AWS_ENDPOINT_URL"] = self.moto.endpoint_url
        os.environ["AWS_ACCESS_KEY_ID"] = "testing"
        os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
        os.environ.pop("AWS_SESSION_TOKEN", None)
        os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

    def psql_command(self, port: int | None = None) -> str:
        """The shell command that connects psql to the proxy over verify-full TLS as the login role."""
        conninfo = (f"host=localhost port={port or self.port} user={self.user} dbname={self.dbname} "
                    f"sslmode=verify-full sslrootcert={self.ca_file}")
        return f"PGPASSWORD={shlex.quote(self.credentials['user_password'])} psql {shlex.quote(conninfo)}"

    def console_url(self, port: int | None = None) -> str:
        """The web console's address for the login role's database (``port``: the bound port)."""
        return f"https://localhost:{port or self.http_port}/?database={self.dbname}"

    def stop(self) -> None:
        """Stop moto and Postgres (each by pid); safe to call more than once."""
        if self.moto is not None:
            self.moto.stop()
            self.moto = None
        if self.pg is not None:
            self.pg.stop()
            self.pg = None
        (self.state_dir / "devstack.json").unlink(missing_ok=True)

    def __enter__(self) -> "DevStack":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def read_state(state_dir: Path) -> dict | None:
    """The running dev stack's ``devstack.json`` plus its credentials, or None when none is running."""
    state_dir = Path(state_dir)
    try:
        state = json.loads((state_dir / "devstack.json").read_text())
        state.update(read_credentials(state_dir / "credentials"))
    except (OSError, ValueError):
        return None
    return state
