"""`make run`'s stack (``iasql-proxy dev``) serves the console: its printed lines give the URL,
and a script runs over /run as the dev user with the printed password."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from proxy.embedded.postgres import free_port
from tests.http.conftest import basic, wait_for_port
from tests.integration.test_devstack import ROOT, workdir  # noqa: F401  (fixture)

pytestmark = pytest.mark.timeout(180)


async def _run(url: str, ca: Path, user: str, password: str, sql: str) -> list[dict]:
    ctx = ssl.create_default_context(cafile=str(ca))
    async with connect(url, ssl=ctx, additional_headers={"Authorization": basic(user, password)}) as ws:
        await ws.send(json.dumps({"sql": sql}))
        out = []
        while not out or not out[-1].get("done"):
            out.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
        return out


def test_dev_stack_prints_the_console_url_and_runs_scripts(workdir: Path) -> None:  # noqa: F811
    port, http_port = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy.cli", "dev", "--port", str(port), "--http-port", str(http_port),
         "--state-dir", str(workdir / ".run"), "--certs-dir", str(workdir / "certs"), "--no-moto"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        env={**os.environ, "PYTHONFAULTHANDLER": "1"})  # a stop that hangs dumps its threads (SIGABRT)
    try:
        lines, command = [], None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and command is None:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "psql " in line and "PGPASSWORD=" in line:
                command = line.strip()
        assert command, "".join(lines)
        console = [ln for ln in lines if ln.startswith("console ")]
        assert console and f"https://localhost:{http_port}/?database=iasql" in console[0], lines
        password = shlex.split(command.partition(" ")[0].split("=", 1)[1])[0]
        wait_for_port(http_port, 60)
        got = asyncio.run(_run(f"wss://localhost:{http_port}/run?database=iasql", workdir / "certs" / "ca.crt",
                               "iasql", password, "SELECT current_user AS u; SELECT * FROM iasql_version()"))
        assert got[0]["rows"] == [["iasql"]]
        assert got[1]["command"] == "SELECT 1" and got[-1] == {"done": True}
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
        try:
            rest = proc.communicate(timeout=60)[0]
        except subprocess.TimeoutExpired:  # say where it hangs: faulthandler prints every thread
            os.kill(proc.pid, signal.SIGABRT)
            try:
                rest = proc.communicate(timeout=20)[0]
            finally:
                os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, rest
    assert f"iasql-proxy console on https://localhost:{http_port}/" in rest
