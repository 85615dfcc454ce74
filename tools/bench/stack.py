"""The processes a bench run starts itself: Postgres, PgBouncer and proxies, all on 127.0.0.1.

Everything is started by this process and stopped by pid. Postgres is ``EmbeddedPostgres`` (run as
``nobody`` when we are root); PgBouncer is ``/usr/sbin/pgbouncer`` with a generated ini, run in the
foreground as ``nobody`` when we are root (it refuses root); proxies are ``ProxyProcess`` (the real
``iasql-proxy`` as a subprocess). CPU time and memory come from ``/proc/PID/stat`` and
``/proc/PID/status``.
"""

from __future__ import annotations

import os
import pwd
import re
import resource
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from proxy.embedded.postgres import EmbeddedPostgres, find_bindir, free_port
from tests.support.proxy import ProxyProcess

CLK_TCK = os.sysconf("SC_CLK_TCK")
PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
PASSWORD = "postgres"
#: A role Postgres trusts on 127.0.0.1, for the connection-heavy runs where password hashing in the
#: client (libpq's SCRAM PBKDF2) would otherwise dominate every system alike.
TRUST_USER = "bench"


def raise_nofile(want: int = 65536) -> int:
    """Raise RLIMIT_NOFILE (inherited by the processes we start); returns the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else max(soft, min(want, hard))
    if os.geteuid() == 0 and hard != resource.RLIM_INFINITY and hard < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            return want
        except (ValueError, OSError):
            pass
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def cpu_seconds(pid: int) -> float:
    """utime + stime (seconds) of ``pid`` and of its live child processes (a proxy with
    ``workers`` > 1: the supervisor and its workers), from /proc/PID/stat and
    /proc/PID/task/*/children. A process without children (PgBouncer, a one-process proxy): its own."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2:].split()
    total = (int(fields[11]) + int(fields[12])) / CLK_TCK
    for child in _children(pid):
        try:
            total += cpu_seconds(child)
        except (FileNotFoundError, ProcessLookupError):  # exited meanwhile
            pass
    return total


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
        except FileNotFoundError:
            pass
    return out


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` (bytes), from /proc/PID/status VmRSS."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _nobody() -> pwd.struct_passwd | None:
    return pwd.getpwnam("nobody") if os.geteuid() == 0 else None


def wait_port(port: int, proc: subprocess.Popen, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited {proc.returncode}: {log.read_text(errors='replace')[-3000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen within {timeout} s")


def stop_pid(proc: subprocess.Popen | None, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    """Signal ``proc`` by pid and wait; SIGKILL (by pid) after ``timeout`` seconds."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.kill(proc.pid, sig)
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)
    except ProcessLookupError:
        pass


def start_postgres(workdir: Path, certs: tuple[Path, Path, Path]) -> EmbeddedPostgres:
    """A throwaway cluster with TLS on (clients choose with sslmode) and room for every pool."""
    pg = EmbeddedPostgres(data_dir=workdir / "pg" / "data", ssl_cert=certs[1], ssl_key=certs[2],
                          settings={"max_connections": "400", "shared_buffers": "128MB"},
                          hba_lines=[f"host all {TRUST_USER} 127.0.0.1/32 trust"])
    (workdir / "pg").mkdir(parents=True, exist_ok=True)
    os.chmod(workdir / "pg", 0o755)
    pg.start()
    pg.psql(f"CREATE ROLE {TRUST_USER} LOGIN PASSWORD '{TRUST_USER}'")
    return pg


def grant_trust_user(pg: EmbeddedPostgres) -> None:
    """Let the trust role read the pgbench tables (after pgbench -i)."""
    pg.psql(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {TRUST_USER}")


def scram_verifier(pg: EmbeddedPostgres, user: str = "postgres") -> str:
    return pg.psql(f"SELECT rolpassword FROM pg_authid WHERE rolname = '{user}'").strip()


def postgres_version() -> str:
    out = subprocess.run([str(find_bindir() / "postgres"), "--version"], capture_output=True, text=True)
    return out.stdout.strip()


def pgbouncer_version() -> str:
    out = subprocess.run([PGBOUNCER, "--version"], capture_output=True, text=True)
    return (out.stdout.splitlines() or ["?"])[0].strip()


class PgBouncer:
    """PgBouncer in the foreground with its own ini in ``workdir``; stopped by pid (SIGINT)."""

    def __init__(self, workdir: Path, pg: EmbeddedPostgres, verifier: str, certs: tuple[Path, Path, Path],
                 pool_mode: str, pool_size: int, max_client_conn: int = 2000, auth: str = "scram-sha-256"):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.workdir, 0o755)
        self.port = free_port()
        user = _nobody()
        # the key must be readable by the user pgbouncer runs as
        crt, key = self.workdir / "server.crt", self.workdir / "server.key"
        shutil.copyfile(certs[1], crt)
        shutil.copyfile(certs[2], key)
        os.chmod(key, 0o600)
        if auth == "trust":
            (self.workdir / "userlist.txt").write_text(f'"{TRUST_USER}" ""\n')
            db = f"host=127.0.0.1 port={pg.port} dbname=postgres user={TRUST_USER}"
        else:
            (self.workdir / "userlist.txt").write_text(f'"postgres" "{verifier}"\n')
            db = f"host=127.0.0.1 port={pg.port} dbname=postgres"
        self.log_path = self.workdir / "pgbouncer.log"
        ini = f"""[databases]
postgres = {db}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = {auth}
auth_file = {self.workdir / 'userlist.txt'}
pool_mode = {pool_mode}
default_pool_size = {pool_size}
max_client_conn = {max_client_conn}
client_tls_sslmode = allow
client_tls_cert_file = {crt}
client_tls_key_file = {key}
server_tls_sslmode = disable
logfile = {self.log_path}
pidfile = {self.workdir / 'pgbouncer.pid'}
"""
        self.ini = self.workdir / "pgbouncer.ini"
        self.ini.write_text(ini)
        if user is not None:
            for p in (self.workdir, crt, key, self.ini, self.workdir / "userlist.txt"):
                os.chown(p, user.pw_uid, user.pw_gid)
        self.process: subprocess.Popen | None = None

    def start(self) -> "PgBouncer":
        user = _nobody()
        kw: dict = {}
        if user is not None:
            kw = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        out = open(self.workdir / "stderr.log", "ab")
        self.process = subprocess.Popen([PGBOUNCER, str(self.ini)], stdout=out, stderr=subprocess.STDOUT,
                                        cwd=self.workdir, start_new_session=True, **kw)
        out.close()
        wait_port(self.port, self.process, 20, "pgbouncer", self.workdir / "stderr.log")
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def errors(self) -> list[str]:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if re.search(r" (ERROR|FATAL|WARNING) ", line)]

    def stop(self) -> None:
        stop_pid(self.process, signal.SIGINT)


def proxy_config(pg: EmbeddedPostgres, workdir: Path, certs: tuple[Path, Path, Path], *, pool_mode: str,
                 pool_size: int, tls: bool, auth: str = "scram-sha-256", max_client_conn: int = 2000,
                 engine: bool = False, query_wait_timeout: str = "120", fixed_password: bool = False,
                 trust_user: bool = False, workers: int = 1) -> str:
    """The ini text for a bench proxy (ProxyProcess adds listen_addr/listen_port); ``workers`` > 1
    adds the ``workers`` key (``pool_size`` is then each worker's)."""
    workdir.mkdir(parents=True, exist_ok=True)
    userlist = workdir / "userlist.txt"
    userlist.write_text(f'"postgres" "{scram_verifier(pg)}"\n')
    pw = f" password={PASSWORD}" if fixed_password else ""
    if trust_user:  # every client logs in upstream as the role Postgres trusts
        pw = f" user={TRUST_USER} password={TRUST_USER}"
    lines = [
        "[databases]",
        f"postgres = host=127.0.0.1 port={pg.port} dbname=postgres{pw}",
        "",
        "[proxy]",
        f"auth_type = {auth}",
        f"auth_file = {userlist}",
        f"pool_mode = {pool_mode}",
        f"default_pool_size = {pool_size}",
        f"max_client_conn = {max_client_conn}",
        "server_tls_sslmode = disable",
        f"query_wait_timeout = {query_wait_timeout}",
    ]
    if workers > 1:
        lines.append(f"workers = {workers}")
    if tls:
        lines += ["client_tls_sslmode = require", f"client_tls_cert_file = {certs[1]}",
                  f"client_tls_key_file = {certs[2]}"]
    lines += ["", "[engine]", f"enabled = {'true' if engine else 'false'}", ""]
    return "\n".join(lines)


def start_proxy(config_text: str, workdir: Path) -> ProxyProcess:
    return ProxyProcess(config_text, workdir).start(timeout=60)


def proxy_errors(proxy: ProxyProcess) -> list[str]:
    """Log lines of the proxy that are warnings, errors or tracebacks."""
    out = []
    for line in proxy.log().splitlines():
        if re.search(r" (WARNING|ERROR|CRITICAL) |Traceback|Error:", line):
            out.append(line)
    return out
