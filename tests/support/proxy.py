"""Run the real ``iasql-proxy`` as a subprocess for tests, and stop it by pid.

``ProxyProcess(config_text, workdir)`` writes the ini file, starts ``python -m proxy.cli --config``
with ``listen_port`` chosen free, waits until the port accepts connections, and exposes ``port``
and ``dsn(...)``. The process's stderr (its structured log) is kept in ``workdir/proxy.log``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from proxy.embedded.postgres import free_port

REPO = Path(__file__).resolve().parents[2]
CERTS = REPO / "certs"


class ProxyProcess:
    """A running proxy. ``config_text`` is the ini body without ``listen_port`` (added here)."""

    def __init__(self, config_text: str, workdir: Path, env: dict[str, str] | None = None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        text = config_text.replace("[proxy]", f"[proxy]\nlisten_port = {self.port}\nlisten_addr = 127.0.0.1", 1)
        self.config_path = self.workdir / "proxy.ini"
        self.config_path.write_text(text)
        self.log_path = self.workdir / "proxy.log"
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> "ProxyProcess":
        """Start and wait for the listening port. Raises RuntimeError with the log on failure."""
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen([sys.executable, "-m", "proxy.cli", "--config", str(self.config_path)],
                                        stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=REPO,
                                        start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"proxy exited {self.process.returncode}: {self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"proxy did not listen within {timeout} s: {self.log()}")

    def log(self) -> str:
        """The proxy's log so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def dsn(self, user: str = "postgres", password: str | None = "postgres", dbname: str = "postgres",
            sslmode: str = "disable", **extra: str) -> str:
        """A libpq connection string to the proxy (``sslmode=verify-full`` uses certs/ca.crt, host localhost)."""
        host = "localhost" if sslmode.startswith("verify") else "127.0.0.1"
        parts = [f"host={host}", f"port={self.port}", f"user={user}", f"dbname={dbname}", f"sslmode={sslmode}"]
        if password is not None:
            parts.append(f"password={password}")
        if sslmode.startswith("verify"):
            parts.append(f"sslrootcert={CERTS / 'ca.crt'}")
        parts += [f"{k}={v}" for k, v in extra.items()]
        return " ".join(parts)

    def stop(self, sig: int = signal.SIGINT, timeout: float = 10.0) -> int | None:
        """Signal the process by pid (SIGINT: immediate stop; SIGTERM would drain clients for
        ``shutdown_timeout``) and wait; SIGKILL after ``timeout`` seconds. Returns its exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            try:
                os.kill(self.process.pid, sig)
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
            except ProcessLookupError:
                pass
        return self.process.returncode

    def __enter__(self) -> "ProxyProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
