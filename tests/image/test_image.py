"""The container image, run for real (``make image-test``; skipped by ``make test``).

tools/image.sh builds the image and runs this module with ``IASQL_IMAGE`` (the image),
``IASQL_IMAGE_RUNNER`` (``docker``, or ``podman --runtime runc``) and ``IASQL_IMAGE_RUN_ARGS``
(extra ``run`` flags). Containers use the host's network, so the proxy, psql on the host and the
test session's moto server meet on 127.0.0.1; the volume is a directory of the test.

What a user of the image would check: the quick start of the README over TLS verify-full with the
certificate the container generated, as the image's default user; ``docker stop`` during a
statement lets it finish and the container exits 0; a new container on the same volume has the
data and the same CA; the first log line says the relay is compiled; the image holds no compiler,
no test dependency and no private key.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from proxy.embedded.postgres import free_port

IMAGE = os.environ.get("IASQL_IMAGE", "")
RUNNER = shlex.split(os.environ.get("IASQL_IMAGE_RUNNER", "docker"))
RUN_ARGS = shlex.split(os.environ.get("IASQL_IMAGE_RUN_ARGS", ""))
PASSWORD = "image-Sekr1t"
QUICK_START = ("SELECT * FROM iasql_install('aws_s3');\nSELECT * FROM iasql_begin();\n"
               "INSERT INTO bucket (name) VALUES ('my-first-bucket');\nSELECT * FROM iasql_commit();\n"
               "SELECT name FROM bucket;\n")
TEST_PACKAGES = {"pytest", "pytest-asyncio", "pytest-timeout", "hypothesis", "moto", "asyncpg", "pg8000",
                 "psycopg2-binary", "sqlalchemy", "cython"}

pytestmark = [
    pytest.mark.skipif(not IMAGE, reason="`make image-test` runs this (it builds the image first)"),
    pytest.mark.timeout(900),
]


def engine(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``docker``/``podman`` with ``args``; raises AssertionError with its output on failure."""
    res = subprocess.run([*RUNNER, *args], capture_output=True, text=True, timeout=timeout)
    if check:
        assert res.returncode == 0, f"{' '.join(args[:2])}: {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res


class Container:
    """One detached container of the image on the host's network with ``data`` as its volume."""

    def __init__(self, data: Path, env: dict[str, str]):
        self.name = f"iasql-image-test-{uuid.uuid4().hex[:8]}"
        self.env = env
        self.started = time.monotonic()
        flags = [f for k, v in env.items() for f in ("-e", f"{k}={v}")]
        engine("run", "-d", "--name", self.name, "--network=host", *RUN_ARGS,
               "-v", f"{data}:/var/lib/iasql", *flags, IMAGE)

    def logs(self) -> str:
        """Everything the container wrote (the entrypoint, Postgres and the proxy log to stderr)."""
        res = engine("logs", self.name, check=False)
        return res.stderr + res.stdout

    def exit_code(self) -> int:
        """The exit status of the stopped container."""
        return int(engine("inspect", "--format", "{{.State.ExitCode}}", self.name).stdout.strip())

    def remove(self) -> None:
        """Remove the container, running or not."""
        engine("rm", "-f", self.name, check=False)


@pytest.fixture
def volume():
    """A host directory as the container's /var/lib/iasql."""
    d = Path(tempfile.mkdtemp(prefix="iasql-image-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def conninfo(env: dict[str, str], volume: Path, dbname: str = "iasql") -> str:
    """What a user puts in psql: verify-full against the CA the container generated in the volume."""
    return (f"host=localhost port={env['IASQL_LISTEN_PORT']} user=iasql dbname={dbname} sslmode=verify-full "
            f"sslrootcert={volume / 'certs' / 'ca.crt'}")


def wait_ready(container: Container, volume: Path, timeout: float = 180, report: bool = True) -> psycopg.Connection:
    """Connect as the default user once the container serves; print how long the start took
    (``report``)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if (volume / "certs" / "ca.crt").exists():
                conn = psycopg.connect(conninfo(container.env, volume) + " connect_timeout=5",
                                       password=PASSWORD, autocommit=True)
                if report:
                    print(f"{container.name}: serving {time.monotonic() - container.started:.1f} s after `run`")
                return conn
        except psycopg.OperationalError:
            pass
        running = engine("inspect", "--format", "{{.State.Running}}", container.name).stdout.strip()
        assert running == "true", container.logs()
        assert time.monotonic() < deadline, container.logs()
        time.sleep(0.3)


def psql(env: dict[str, str], volume: Path, command: str | None = None) -> subprocess.Popen:
    """psql on the host, as the user would run it: ``-c command``, or statements on its stdin."""
    psql_env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    psql_env["PGPASSWORD"] = PASSWORD
    source = ["-c", command] if command is not None else ["-f", "-"]
    return subprocess.Popen([shutil.which("psql") or "psql", "-X", "-v", "ON_ERROR_STOP=1", "-At",
                             conninfo(env, volume), *source], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=psql_env)


def test_quick_start_stop_and_restart(volume: Path, moto_server) -> None:
    """The README's container story end to end, as the image's default user."""
    moto_server.reset()
    env = {"IASQL_PASSWORD": PASSWORD, "IASQL_LISTEN_PORT": str(free_port()), "IASQL_PG_PORT": str(free_port()),
           "AWS_ENDPOINT_URL": moto_server.endpoint_url}
    first = Container(volume, env)
    second = None
    try:
        wait_ready(first, volume).close()
        log = first.logs()
        assert "relay=compiled" in log.splitlines()[0], log
        listening = [line for line in log.splitlines() if "event=listening" in line]
        assert listening and "relay=compiled" in listening[0], log

        # the quick start in one psql session
        quick = psql(env, volume)
        out, err = quick.communicate(QUICK_START, timeout=180)
        assert quick.returncode == 0, err + first.logs()
        assert "create|bucket|my-first-bucket|bucket my-first-bucket in us-east-1" in out
        assert out.splitlines()[-1] == "my-first-bucket"
        import boto3

        s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=moto_server.endpoint_url,
                          aws_access_key_id="testing", aws_secret_access_key="testing")
        assert "my-first-bucket" in [b["Name"] for b in s3.list_buckets()["Buckets"]]

        # `docker stop` while a statement runs: it finishes, then the container exits 0
        watcher = wait_ready(first, volume, report=False)
        sleeper = psql(env, volume, "SELECT pg_sleep(3), 'finished'")
        deadline = time.monotonic() + 60
        while not watcher.execute("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                                  "AND query LIKE 'SELECT pg_sleep(3)%'").fetchone()[0]:
            assert time.monotonic() < deadline and sleeper.poll() is None, sleeper.communicate()
            time.sleep(0.1)
        watcher.close()
        engine("stop", first.name)  # the default stop timeout, as `docker stop`
        out, err = sleeper.communicate(timeout=30)
        assert (sleeper.returncode, out.strip()) == (0, "|finished"), err
        assert first.exit_code() == 0, first.logs()
        log = first.logs()
        assert "event=shutdown mode=graceful" in log and "stopping" in log, log
        ca = (volume / "certs" / "ca.crt").read_bytes()
        first.remove()

        # a new container on the same volume: same data, same CA, no new cluster
        second = Container(volume, env)
        conn = wait_ready(second, volume)
        assert conn.execute("SELECT name FROM bucket").fetchall() == [("my-first-bucket",)]
        conn.close()
        assert (volume / "certs" / "ca.crt").read_bytes() == ca
        log = second.logs()
        assert "using the existing cluster" in log and "initialising" not in log, log
        engine("stop", second.name)
        assert second.exit_code() == 0, second.logs()
    finally:
        first.remove()
        if second is not None:
            second.remove()


LISTING = r"""
for c in gcc cc c++ g++ cpp clang x86_64-linux-gnu-gcc; do command -v "$c" && echo "compiler: $c"; done
ls /usr/lib/gcc/*/*/cc1 2>/dev/null | sed 's/^/compiler: /'
/opt/iasql-proxy/bin/pip list --format=freeze 2>/dev/null | sed 's/^/package: /'
grep -rlsI -e '^-----BEGIN [A-Z ]*PRIVATE KEY-----$' / --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev \
    | sed 's/^/private key: /'
find / -xdev \( -name '*.key' -o -name 'ca.crt' -o -name 'server.crt' -o -name 'credentials' \) 2>/dev/null \
    | sed 's/^/key file: /'
ls /opt/iasql-proxy/lib/python3*/site-packages/proxy/relay/ | sed 's/^/relay: /'
"""


def test_image_contents() -> None:
    """A listing inside the image: no compiler, no test dependency, no key material; the relay's
    compiled module is there. Prints the image's size."""
    res = engine("run", "--rm", *RUN_ARGS, "--entrypoint", "/bin/sh", IMAGE, "-c", LISTING)
    lines = res.stdout.splitlines()
    assert [line for line in lines if line.startswith("compiler:")] == []
    packages = {line.split()[1].split("==")[0].lower() for line in lines if line.startswith("package:")}
    assert "iasql-proxy" in packages and "boto3" in packages, res.stdout
    assert packages & TEST_PACKAGES == set()
    assert [line for line in lines if line.startswith(("private key:", "key file:"))] == []
    assert any(line.startswith("relay: core.cpython-") and line.endswith(".so") for line in lines), res.stdout
    size = engine("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout.strip()
    print(f"{IMAGE}: {int(size) / 1e6:.0f} MB, packages: {len(packages)}")
