"""docker/entrypoint.sh run outside Docker (no engine in CI): first start, restart with the existing
data directory, SIGTERM handling (a running statement finishes, both processes stop)."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import psycopg
import pytest

from proxy.embedded.postgres import free_port

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[2]
ENTRYPOINT = REPO / "docker" / "entrypoint.sh"
VENV_BIN = REPO / ".venv" / "bin"


def _have_tools() -> str | None:
    for tool in ("initdb", "postgres", "pg_isready", "psql"):
        if shutil.which(tool) is None and not Path(f"/usr/lib/postgresql/15/bin/{tool}").exists():
            return f"{tool} not found"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root without a postgres OS user"
        if shutil.which("setpriv") is None:
            return "setpriv not found"
    return None


class Entrypoint:
    """One run of the entrypoint script in its own process group."""

    def __init__(self, base: Path, env: dict[str, str], name: str):
        self.log_path = base / f"{name}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(["bash", str(ENTRYPOINT)], env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


@pytest.fixture
def entry_env():
    reason = _have_tools()
    if reason:
        pytest.skip(reason)
    base = Path(tempfile.mkdtemp(prefix="iasql-entrypoint-"))
    base.chmod(0o755)  # the postgres OS user must reach the data directory inside
    path = os.environ.get("PATH", "")
    bindir = next((str(p) for p in sorted(Path("/usr/lib/postgresql").glob("*/bin"))), "")
    env = {**os.environ,
           "PATH": os.pathsep.join(p for p in (str(VENV_BIN), path, bindir) if p),
           "IASQL_DATA": str(base / "data"), "IASQL_CERTS_DIR": str(base / "certs"),
           "IASQL_SOCKET_DIR": str(base / "sock"), "IASQL_PG_PORT": str(free_port()),
           "IASQL_LISTEN_ADDR": "127.0.0.1", "IASQL_LISTEN_PORT": str(free_port()),
           "IASQL_PASSWORD": "entry-Sekr1t", "IASQL_SHUTDOWN_TIMEOUT": "10"}
    env.pop("IASQL_CONFIG", None)
    yield base, env
    pidfile = base / "data" / "pgdata" / "postmaster.pid"
    if pidfile.exists():  # a failed test must not leave Postgres running
        try:
            os.kill(int(pidfile.read_text().split()[0]), signal.SIGQUIT)
        except (OSError, ValueError):
            pass
        time.sleep(0.5)
    shutil.rmtree(base, ignore_errors=True)


def connect(env: dict[str, str], base: Path, timeout: float = 60):
    dsn = (f"host=localhost port={env['IASQL_LISTEN_PORT']} user=iasql dbname=iasql password={env['IASQL_PASSWORD']} "
           f"sslmode=verify-full sslrootcert={base / 'certs' / 'ca.crt'} connect_timeout=5")
    deadline = time.monotonic() + timeout
    while True:
        try:
            return psycopg.connect(dsn, autocommit=True)
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def stop(run: Entrypoint, base: Path, during=None) -> None:
    os.kill(run.proc.pid, signal.SIGTERM)
    assert run.proc.wait(30) == 0, run.log()
    assert not (base / "data" / "pgdata" / "postmaster.pid").exists(), run.log()


def test_entrypoint_first_start_restart_and_sigterm(entry_env):
    base, env = entry_env
    first = Entrypoint(base, env, "first")
    try:
        with connect(env, base) as conn:
            conn.execute("create table kept (v text)")
            conn.execute("insert into kept values ('from the first start')")
        assert "initialising" in first.log()
        assert (base / "certs" / "server.crt").exists() and (base / "data" / "credentials").stat().st_mode & 0o077 == 0
        stop(first, base)
    finally:
        first.kill()

    second = Entrypoint(base, env, "second")
    try:
        conn = connect(env, base)
        assert conn.execute("select v from kept").fetchall() == [("from the first start",)]
        assert "initialising" not in second.log() and "using the existing cluster" in second.log()
        result: dict = {}

        def sleeper():
            try:
                result["row"] = conn.execute("select pg_sleep(1.5), 'finished'").fetchone()
            except BaseException as e:
                result["error"] = e

        t = threading.Thread(target=sleeper, daemon=True)
        t.start()
        time.sleep(0.5)
        t0 = time.monotonic()
        stop(second, base)  # SIGTERM: the proxy drains, then Postgres stops
        t.join(10)
        assert result.get("row") == ("", "finished"), result
        assert time.monotonic() - t0 < 20
        log = second.log()
        assert "stopping" in log and "event=shutdown mode=graceful" in log
        conn.close()
    finally:
        second.kill()


def test_default_user_runs_the_quick_start(entry_env, moto_server):
    """The container's default user (SCRAM, no engine credentials in the generated configuration)
    runs the README's quick start with psql over TLS verify-full against a moto server."""
    base, env = entry_env
    moto_server.reset()
    env = {**env, "AWS_ENDPOINT_URL": moto_server.endpoint_url}
    run = Entrypoint(base, env, "quickstart")
    try:
        connect(env, base).close()  # up
        config = (base / "data" / "iasql-proxy.ini").read_text()
        assert "engine_user" not in config and "aws_endpoint_url" in config
        quick_start = ("SELECT * FROM iasql_install('aws_s3');\nSELECT * FROM iasql_begin();\n"
                       "INSERT INTO bucket (name) VALUES ('my-first-bucket');\nSELECT * FROM iasql_commit();\n"
                       "SELECT name FROM bucket;\n")
        psql_env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        psql_env["PGPASSWORD"] = env["IASQL_PASSWORD"]
        dsn = (f"host=localhost port={env['IASQL_LISTEN_PORT']} user=iasql dbname=iasql sslmode=verify-full "
               f"sslrootcert={base / 'certs' / 'ca.crt'}")
        res = subprocess.run([shutil.which("psql"), "-X", "-v", "ON_ERROR_STOP=1", "-At", dsn], input=quick_start,
                             capture_output=True, text=True, timeout=60, env=psql_env)
        assert res.returncode == 0, res.stderr + run.log()
        assert res.stdout.splitlines()[-1] == "my-first-bucket"
        assert "create|bucket|my-first-bucket|bucket my-first-bucket in us-east-1" in res.stdout
        import boto3

        s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=moto_server.endpoint_url,
                          aws_access_key_id="testing", aws_secret_access_key="testing")
        assert "my-first-bucket" in [b["Name"] for b in s3.list_buckets()["Buckets"]]
        stop(run, base)
    finally:
        run.kill()
