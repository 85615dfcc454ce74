"""A throwaway PostgreSQL cluster that the project starts and stops itself.

Used by ``make run`` (the embedded development database) and by the test suite. The cluster lives
in its own data directory, listens on 127.0.0.1 at an ephemeral port (or one given) and is stopped
by pid. Postgres refuses to run as root, so when this process is root the server runs as an
unprivileged OS user (``nobody`` unless ``IASQL_PG_OS_USER`` names another).

Binaries are found, in order: ``IASQL_PG_BINDIR``; ``pg_config --bindir``; the newest
``/usr/lib/postgresql/*/bin``; ``initdb`` on ``PATH``; the ``pgserver`` wheel's bundled binaries.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path


class EmbeddedPostgresError(RuntimeError):
    """Raised when no Postgres binaries are found or the cluster fails to start."""


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that was free a moment ago (bound to port 0 and released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def find_bindir() -> Path:
    """Return the directory holding ``initdb`` and ``postgres``.

    Raises EmbeddedPostgresError when none of the sources in the module docstring has them.
    """
    candidates: list[Path] = []
    if os.environ.get("IASQL_PG_BINDIR"):
        candidates.append(Path(os.environ["IASQL_PG_BINDIR"]))
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10)
            if out.returncode == 0:
                candidates.append(Path(out.stdout.strip()))
        except (OSError, subprocess.SubprocessError):
            pass

    def version_key(p: str) -> float:
        try:
            return float(Path(p).parent.name)
        except ValueError:
            return 0.0

    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version_key, reverse=True)]
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(os.path.realpath(initdb)).parent)
    try:
        import pgserver  # type: ignore[import-not-found]

        candidates.append(Path(pgserver.__file__).parent / "pginstall" / "bin")
    except ImportError:
        pass
    for c in candidates:
        if (c / "initdb").exists() and (c / "postgres").exists():
            return c
    raise EmbeddedPostgresError(
        "no PostgreSQL server binaries found: install the Debian package postgresql, "
        "or `pip install pgserver`, or set IASQL_PG_BINDIR"
    )


def _os_user() -> pwd.struct_passwd | None:
    """The unprivileged account to run the server as, or None when we are not root."""
    if os.geteuid() != 0:
        return None
    return pwd.getpwnam(os.environ.get("IASQL_PG_OS_USER", "nobody"))


@dataclass
class EmbeddedPostgres:
    """A Postgres cluster in ``data_dir`` (a new temporary directory when None).

    ``password`` is the superuser ``postgres``'s password; TCP connections authenticate with
    ``host_auth`` (``scram-sha-256`` by default). ``settings`` are extra ``-c name=value`` server
    settings. ``ssl_cert``/``ssl_key`` (PEM file paths) turn on server TLS.
    """

    data_dir: Path | None = None
    port: int | None = None
    password: str = "postgres"
    host_auth: str = "scram-sha-256"
    settings: dict[str, str] = field(default_factory=dict)
    ssl_cert: Path | None = None
    ssl_key: Path | None = None
    hba_lines: list[str] = field(default_factory=list)
    host: str = "127.0.0.1"
    superuser: str = "postgres"

    process: subprocess.Popen | None = None
    _tmp: str | None = None

    # -- helpers ------------------------------------------------------------------------------
    def _run_kw(self) -> dict:
        user = _os_user()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C", LANG="C")
        if user is None:
            return {"env": env}
        env["HOME"] = str(self.data_dir)
        return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": [], "env": env}

    def _chown(self, path: Path) -> None:
        user = _os_user()
        if user is not None:
            os.chown(path, user.pw_uid, user.pw_gid)

    @property
    def socket_dir(self) -> Path:
        """Directory of the Unix socket (inside the data directory's parent)."""
        assert self.data_dir is not None
        return self.data_dir.parent / "sock"

    def dsn(self, dbname: str = "postgres", user: str | None = None, password: str | None = None) -> str:
        """A libpq key=value connection string for TCP to this cluster."""
        user = user or self.superuser
        pw = self.password if password is None and user == self.superuser else password
        parts = [f"host={self.host}", f"port={self.port}", f"dbname={dbname}", f"user={user}", "sslmode=disable"]
        if pw is not None:
            parts.append(f"password={pw}")
        return " ".join(parts)

    # -- lifecycle ----------------------------------------------------------------------------
    def initialized(self) -> bool:
        """True when the data directory already holds a cluster (PG_VERSION exists)."""
        return self.data_dir is not None and (self.data_dir / "PG_VERSION").exists()

    def init(self) -> None:
        """Run initdb into ``data_dir`` (creating a temporary one when None)."""
        bindir = find_bindir()
        if self.data_dir is None:
            self._tmp = tempfile.mkdtemp(prefix="iasql-pg-")
            os.chmod(self._tmp, 0o755)
            self.data_dir = Path(self._tmp) / "data"
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        self._chown(self.data_dir)
        self.socket_dir.mkdir(exist_ok=True)
        self._chown(self.socket_dir)
        pwfile = self.data_dir.parent / ".pwfile"
        pwfile.write_text(self.password + "\n")
        self._chown(pwfile)
        try:
            res = subprocess.run(
                [str(bindir / "initdb"), "-D", str(self.data_dir), "-U", self.superuser, "-E", "UTF8",
                 "--locale=C", "--auth-local=trust", f"--auth-host={self.host_auth}",
                 f"--pwfile={pwfile}", "--no-sync"],
                capture_output=True, text=True, timeout=120, **self._run_kw(),
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if res.returncode != 0:
            raise EmbeddedPostgresError(f"initdb failed: {res.stderr.strip() or res.stdout.strip()}")
        if self.hba_lines:
            hba = self.data_dir / "pg_hba.conf"
            existing = hba.read_text()
            hba.write_text("\n".join(self.hba_lines) + "\n" + existing)

    def start(self, timeout: float = 60.0) -> "EmbeddedPostgres":
        """Initialise when needed, start the server and wait until it accepts connections.

        Returns self. Raises EmbeddedPostgresError with the server log when it does not come up
        within ``timeout`` seconds.
        """
        if not self.initialized():
            self.init()
        assert self.data_dir is not None
        bindir = find_bindir()
        if self.port is None:
            self.port = free_port(self.host)
        args = [str(bindir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port),
                "-c", f"listen_addresses={self.host}", "-c", f"unix_socket_directories={self.socket_dir}",
                "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                "-c", "max_connections=300", "-c", "shared_buffers=64MB"]
        if self.ssl_cert and self.ssl_key:
            for src, name in ((self.ssl_cert, "server.crt"), (self.ssl_key, "server.key")):
                dst = self.data_dir / name
                shutil.copyfile(src, dst)
                os.chmod(dst, 0o600)
                self._chown(dst)
            args += ["-c", "ssl=on", "-c", "ssl_cert_file=server.crt", "-c", "ssl_key_file=server.key"]
        for k, v in self.settings.items():
            args += ["-c", f"{k}={v}"]
        log = open(self.data_dir.parent / "postgres.log", "ab")
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                        **self._run_kw())
        log.close()
        deadline = time.monotonic() + timeout
        sock_file = self.socket_dir / f".s.PGSQL.{self.port}"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EmbeddedPostgresError(f"postgres exited ({self.process.returncode}): {self.log_tail()}")
            if sock_file.exists() and self._ready():
                return self
            time.sleep(0.05)
        self.stop()
        raise EmbeddedPostgresError(f"postgres did not start within {timeout} s: {self.log_tail()}")

    def _ready(self) -> bool:
        res = subprocess.run(
            [str(find_bindir() / "pg_ctl"), "status", "-D", str(self.data_dir)],
            capture_output=True, text=True, **self._run_kw())
        if res.returncode != 0:
            return False
        pid_file = self.data_dir / "postmaster.pid"
        try:
            lines = pid_file.read_text().splitlines()
        except OSError:
            return False
        return len(lines) >= 8 and lines[7].strip() == "ready"

    def log_tail(self, n: int = 30) -> str:
        """The last ``n`` lines of the server log (for error messages)."""
        assert self.data_dir is not None
        try:
            return "\n".join((self.data_dir.parent / "postgres.log").read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run ``sql`` with psql as the superuser over the Unix socket; return stdout. Raises on error."""
        psql = shutil.which("psql") or str(find_bindir() / "psql")
        res = subprocess.run([psql, "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", str(self.socket_dir),
                              "-p", str(self.port), "-U", self.superuser, "-d", dbname, "-c", sql],
                             capture_output=True, text=True, timeout=60,
                             env={**os.environ, "PGPASSWORD": self.password})
        if res.returncode != 0:
            raise EmbeddedPostgresError(res.stderr.strip())
        return res.stdout

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown (SIGINT) by pid, SIGKILL after ``timeout`` seconds; remove a temp dir."""
        if self.process is not None and self.process.poll() is None:
            try:
                os.kill(self.process.pid, signal.SIGINT)
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
            except ProcessLookupError:
                pass
        self.process = None
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> "EmbeddedPostgres":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
