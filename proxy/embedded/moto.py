"""A sandbox AWS cloud: a moto server on loopback, started as a subprocess and stopped by pid.

Used by ``make run`` (so the whole IaSQL flow works with no AWS account) and by the tests.
boto3 talks to it over real HTTP at ``endpoint_url``. With ``state_file`` set, the cloud is saved
to that file and restored from it at the next start (``proxy.embedded.moto_state``); without, it
starts empty each time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from proxy.embedded.postgres import free_port


class MotoServerError(RuntimeError):
    """Raised when the moto server is not installed or does not come up."""


class MotoStateError(MotoServerError):
    """Raised when the saved sandbox cloud (``state_file``) cannot be restored: another moto
    version wrote it, or it is damaged. The message says which and names the file."""


@dataclass
class MotoServer:
    """``moto.server`` on ``host``:``port`` (an ephemeral port when None).

    ``state_file``: None for a cloud that starts empty; a path to keep the cloud across restarts
    (created on the first stop; restored at every later start). ``warn_fd``: with ``state_file``,
    the file descriptor of this process that also gets the server's warnings (a service it cannot
    save or restore), by default 2, this process's stderr; None leaves them in the server's log
    only (read when the server fails to start).
    """

    host: str = "127.0.0.1"
    port: int | None = None
    process: subprocess.Popen | None = None
    state_file: Path | None = None
    warn_fd: int | None = 2

    @property
    def endpoint_url(self) -> str:
        """The HTTP endpoint to give boto3 (``AWS_ENDPOINT_URL``)."""
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 60.0) -> "MotoServer":
        """Start the server and wait until it answers HTTP. Returns self.

        Raises MotoStateError when ``state_file`` cannot be restored, MotoServerError when the
        server is not installed, exits or does not answer within ``timeout`` seconds.
        """
        if self.port is None:
            self.port = free_port(self.host)
        if self.state_file is None:
            command = [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)]
        else:
            from proxy.embedded.moto_state import EXIT_STATE

            command = [sys.executable, "-m", "proxy.embedded.moto_state", "--state", str(self.state_file),
                       "-H", self.host, "-p", str(self.port)]
        # the server's warnings reach the user on a copy of our stderr (its own stderr is the log)
        warn_fd = None
        if self.state_file is not None and self.warn_fd is not None:
            try:
                warn_fd = os.dup(self.warn_fd)
            except OSError:
                warn_fd = None  # no stderr (a daemon): the warnings stay in the log
            else:
                command += ["--warn-fd", str(warn_fd)]
        # moto logs every request on stderr: to a file, never to a pipe nobody reads (a full pipe
        # blocks the server after a few hundred requests)
        self._log = tempfile.TemporaryFile()
        try:
            self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=self._log,
                                            start_new_session=True, pass_fds=() if warn_fd is None else (warn_fd,))
        finally:
            if warn_fd is not None:
                os.close(warn_fd)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.process.poll()
            if status is not None:
                self._log.seek(0)
                err = self._log.read().decode(errors="replace").strip()
                self.stop()
                if self.state_file is not None and status == EXIT_STATE:
                    raise MotoStateError(err.splitlines()[-1] if err else f"cannot restore {self.state_file}")
                raise MotoServerError(f"moto server exited: {err[-2000:]}")
            try:
                with urllib.request.urlopen(self.endpoint_url + "/moto-api/", timeout=1):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise MotoServerError(f"moto server did not answer within {timeout} s")

    def reset(self) -> None:
        """Forget every resource (moto's reset API)."""
        req = urllib.request.Request(self.endpoint_url + "/moto-api/reset", method="POST")
        urllib.request.urlopen(req, timeout=10).close()

    def stop(self) -> None:
        """SIGTERM by pid (a server with ``state_file`` writes its last snapshot then), SIGKILL
        after 10 s."""
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
            except ProcessLookupError:
                pass
        log = getattr(self, "_log", None)
        if log is not None:
            log.close()
            self._log = None
        self.process = None

    def __enter__(self) -> "MotoServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
