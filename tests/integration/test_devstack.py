"""The development stack of ``make run``: persistent Postgres, credentials, generated config.

Starts real Postgres (and moto) processes; the end-to-end test also runs the proxy and psql.
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import pytest

from proxy.config import load_auth_file
from proxy.devstack import DevStack, DevStackError, read_credentials, read_state
from proxy.embedded.postgres import free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def workdir():
    """A scratch directory the unprivileged Postgres user can traverse (pytest's tmp_path is 0700)."""
    d = tempfile.mkdtemp(prefix="iasql-devstack-")
    os.chmod(d, 0o755)
    try:
        yield Path(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _scram_matches(verifier: str, password: str) -> bool:
    scramp = pytest.importorskip("scramp")
    head, keys = verifier.split("$", 1)[1].split("$")
    iterations, salt = head.split(":")
    _, stored, server, _ = scramp.ScramMechanism("SCRAM-SHA-256").make_auth_info(
        password, iteration_count=int(iterations), salt=base64.b64decode(salt))
    return keys == f"{base64.b64encode(stored).decode()}:{base64.b64encode(server).decode()}"


def test_start_stop_restart(workdir: Path) -> None:
    port = free_port()
    stack = DevStack(state_dir=workdir / ".run", certs_dir=workdir / "certs", port=port)
    cfg = stack.start()
    try:
        pg_pid, moto_pid = stack.pg.process.pid, stack.moto.process.pid
        assert (cfg.listen_addr, cfg.listen_port) == ("127.0.0.1", port)
        assert cfg.client_tls_sslmode == "require" and cfg.auth_type == "scram-sha-256"
        assert cfg.target_for("anything").port == stack.pg.port
        assert cfg.engine.aws_endpoint_url == stack.moto.endpoint_url
        assert cfg.config_file == workdir / ".run" / "iasql-proxy.ini"
        for secret_file in ("credentials", "userlist.txt", "iasql-proxy.ini"):
            assert (workdir / ".run" / secret_file).stat().st_mode & 0o077 == 0
        creds = read_credentials(workdir / ".run" / "credentials")
        assert creds["user"] == "iasql"

        # the login role and its database exist, reachable over verify-full TLS with the printed password
        with psycopg.connect(host="127.0.0.1", port=stack.pg.port, user="iasql", dbname="iasql",
                             password=creds["user_password"], sslmode="verify-full",
                             sslrootcert=str(workdir / "certs" / "ca.crt")) as conn:
            assert conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone() == (True,)
            assert conn.execute("SELECT current_user").fetchone() == ("iasql",)

        # the auth_file holds the role's SCRAM verifier (not its password), matching that password
        users = load_auth_file(cfg.auth_file)
        assert users["iasql"].startswith("SCRAM-SHA-256$") and creds["user_password"] not in users["iasql"]
        assert _scram_matches(users["iasql"], creds["user_password"])
        assert users["postgres"] == creds["postgres_password"]  # auth_user logs in to run auth_query

        cmd = stack.psql_command()
        assert cmd.startswith(f"PGPASSWORD={creds['user_password']} psql ")
        conninfo = shlex.split(cmd)[-1]
        assert f"port={port}" in conninfo and "host=localhost" in conninfo and "sslmode=verify-full" in conninfo
        assert f"sslrootcert={workdir / 'certs' / 'ca.crt'}" in conninfo

        state = read_state(workdir / ".run")
        assert state["postgres_port"] == stack.pg.port and state["postgres_password"] == creds["postgres_password"]
    finally:
        stack.stop()
    deadline = time.monotonic() + 15
    while (_alive(pg_pid) or _alive(moto_pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pg_pid) and not _alive(moto_pid)
    assert read_state(workdir / ".run") is None

    # second start: same data directory (no initdb), same credentials, same CA
    ca_before = (workdir / "certs" / "ca.crt").read_bytes()
    (workdir / ".run" / "pgdata" / "marker").write_text("kept")
    again = DevStack(state_dir=workdir / ".run", certs_dir=workdir / "certs", port=port, with_moto=False)
    cfg2 = again.start()
    try:
        assert (workdir / ".run" / "pgdata" / "marker").exists()
        assert read_credentials(workdir / ".run" / "credentials") == creds
        assert (workdir / "certs" / "ca.crt").read_bytes() == ca_before
        assert cfg2.engine.aws_endpoint_url is None
        with psycopg.connect(again.pg.dsn("iasql", "iasql", creds["user_password"])) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        again.stop()


def test_port_in_use(workdir: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        stack = DevStack(state_dir=workdir / ".run", certs_dir=workdir / "certs", port=s.getsockname()[1])
        with pytest.raises(DevStackError, match="already in use"):
            stack.start()
    assert stack.pg is None and not (workdir / ".run").exists()


def test_orphaned_postgres_is_replaced(workdir: Path) -> None:
    """A dev stack killed with SIGKILL leaves Postgres running; the next start stops it first."""
    first = DevStack(state_dir=workdir / ".run", certs_dir=workdir / "certs", port=free_port(), with_moto=False)
    first.start()
    orphan = first.pg.process.pid
    first.pg.process = None  # forget it, as a killed parent would
    first.pg = None
    second = DevStack(state_dir=workdir / ".run", certs_dir=workdir / "certs", port=free_port(), with_moto=False)
    try:
        second.start()
        assert second.pg.process.pid != orphan
    finally:
        second.stop()
        if _alive(orphan):
            os.kill(orphan, signal.SIGKILL)
    assert not _alive(orphan)


def test_make_run_end_to_end(workdir: Path) -> None:
    """`iasql-proxy dev`, then the printed psql command runs two statements over verify-full TLS."""
    pytest.importorskip("proxy.server")
    psql = shutil.which("psql")
    if psql is None:
        pytest.skip("psql not installed")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy.cli", "dev", "--port", str(port), "--state-dir", str(workdir / ".run"),
         "--certs-dir", str(workdir / "certs"), "--no-moto"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        command = None
        lines = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "psql " in line and "PGPASSWORD=" in line:
                command = line.strip()
                break
        assert command, "".join(lines)
        # wait for the proxy to listen
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.1)
        env_part, _, rest = command.partition(" ")
        env = {**os.environ, env_part.split("=", 1)[0]: shlex.split(env_part.split("=", 1)[1])[0]}
        res = subprocess.run(shlex.split(rest) + ["-X", "-At", "-c", "select 1; select 2;"],
                             capture_output=True, text=True, timeout=30, env=env)
        assert res.returncode == 0, res.stderr
        assert res.stdout.split() == ["1", "2"]
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        if proc.stdout:
            proc.stdout.close()
    assert proc.returncode == 0
    assert read_state(workdir / ".run") is None
    # no Postgres left running on that data directory
    assert not (workdir / ".run" / "pgdata" / "postmaster.pid").exists()


def _start_dev(workdir: Path, port: int) -> tuple[subprocess.Popen, dict[str, str], str]:
    """Start `iasql-proxy dev` with moto and wait until the proxy listens. Returns the process (its
    printed lines up to the psql command in ``printed``), the environment and the conninfo of the
    psql command it printed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy.cli", "dev", "--port", str(port), "--state-dir", str(workdir / ".run"),
         "--certs-dir", str(workdir / "certs")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    proc.printed = []
    command = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and command is None:
        line = proc.stdout.readline()
        if not line:
            break
        proc.printed.append(line)
        if "psql " in line and "PGPASSWORD=" in line:
            command = line.strip()
    assert command, "".join(proc.printed)
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        assert proc.poll() is None, "".join(proc.printed) + proc.stdout.read()
        time.sleep(0.1)
    env_part, _, rest = command.partition(" ")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "AWS_"))}
    env["PGPASSWORD"] = shlex.split(env_part.split("=", 1)[1])[0]
    return proc, env, shlex.split(rest)[-1]


def _stop_dev(proc: subprocess.Popen) -> int:
    """SIGTERM the dev stack (as Ctrl-C would stop it) and return its exit status."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    proc.stdout.close()
    return proc.returncode


def _psql(env: dict[str, str], conninfo: str, sql: str) -> str:
    """Run ``sql`` in one psql session (unaligned output); returns stdout, fails the test on an error."""
    res = subprocess.run([shutil.which("psql"), "-X", "-At", "-v", "ON_ERROR_STOP=1", conninfo], input=sql,
                         capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0, res.stderr
    return res.stdout


def _cloud_buckets(printed: list[str]) -> list[str]:
    """The bucket names in the sandbox cloud whose URL the dev stack printed, sorted."""
    import boto3

    url = next(line.split()[2] for line in printed if line.startswith("AWS (moto)"))
    s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=url, aws_access_key_id="testing",
                      aws_secret_access_key="testing")
    return sorted(b["Name"] for b in s3.list_buckets()["Buckets"])


def test_restart_keeps_the_sandbox_cloud(workdir: Path) -> None:
    """`make run`, the README's quick start, Ctrl-C, `make run` again: the bucket is in the table
    and in the sandbox cloud, and the next commit keeps it (an empty cloud would make it go)."""
    pytest.importorskip("proxy.server")
    pytest.importorskip("moto")
    if shutil.which("psql") is None:
        pytest.skip("psql not installed")
    port = free_port()
    proc, env, conninfo = _start_dev(workdir, port)
    try:
        assert any("new sandbox cloud" in line for line in proc.printed), proc.printed
        out = _psql(env, conninfo, "SELECT * FROM iasql_install('aws_s3');\nSELECT * FROM iasql_begin();\n"
                                   "INSERT INTO bucket (name) VALUES ('my-first-bucket');\n"
                                   "SELECT * FROM iasql_commit();\nSELECT name FROM bucket;\n")
        assert out.splitlines()[-1] == "my-first-bucket"
        assert _cloud_buckets(proc.printed) == ["my-first-bucket"]
    finally:
        assert _stop_dev(proc) == 0
    assert (workdir / ".run" / "moto-state.pickle").stat().st_mode & 0o077 == 0

    proc, env, conninfo = _start_dev(workdir, port)
    try:
        assert any("sandbox cloud restored from" in line for line in proc.printed), proc.printed
        assert _psql(env, conninfo, "SELECT name FROM bucket;").split() == ["my-first-bucket"]
        assert _cloud_buckets(proc.printed) == ["my-first-bucket"]
        out = _psql(env, conninfo, "SELECT * FROM iasql_begin();\n"
                                   "INSERT INTO bucket (name) VALUES ('my-second-bucket');\n"
                                   "SELECT * FROM iasql_commit();\nSELECT name FROM bucket ORDER BY name;\n")
        assert out.splitlines()[-2:] == ["my-first-bucket", "my-second-bucket"]
        assert _cloud_buckets(proc.printed) == ["my-first-bucket", "my-second-bucket"]
    finally:
        assert _stop_dev(proc) == 0


def test_second_stack_on_the_same_directory_is_refused(workdir: Path) -> None:
    """A second `make run PORT=...` in the same checkout used to take the first stack's Postgres
    for an orphan and stop it; now it is refused while the first `iasql-proxy dev` lives."""
    state = workdir / ".run"
    state.mkdir(parents=True)
    other = subprocess.Popen(["bash", "-c", "exec -a iasql-proxy sleep 60"])
    # until the child has exec'd, /proc/<pid>/cmdline is this test process's own command line
    deadline = time.monotonic() + 10
    while b"iasql-proxy" not in Path(f"/proc/{other.pid}/cmdline").read_bytes():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    try:
        (state / "devstack.json").write_text(json.dumps({"pid": other.pid}))
        stack = DevStack(state_dir=state, certs_dir=workdir / "certs", port=free_port(), with_moto=False)
        with pytest.raises(DevStackError, match=rf"another `iasql-proxy dev` \(pid {other.pid}\) is running"):
            stack.start()
        assert stack.pg is None
    finally:
        other.kill()
        other.wait()
    # once it is gone, the directory is free again
    stack = DevStack(state_dir=state, certs_dir=workdir / "certs", port=free_port(), with_moto=False)
    try:
        stack.start()
    finally:
        stack.stop()
