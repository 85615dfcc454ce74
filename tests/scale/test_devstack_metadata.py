"""``make run``'s dev stack is a fleet of one: the metadata database is there and iasql_connect
works through the dev proxy (TLS verify-full to Postgres for the admin connection too)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from proxy.devstack import DevStack, read_credentials
from proxy.embedded.postgres import free_port
from tests.support.proxy import REPO


def test_dev_stack_answers_iasql_connect():
    work = Path(tempfile.mkdtemp(prefix="iasql-devfleet-"))
    os.chmod(work, 0o755)
    port = free_port()
    stack = DevStack(state_dir=work / ".run", certs_dir=REPO / "certs", port=port, with_moto=False)
    proc = None
    try:
        cfg = stack.start()
        assert list(cfg.servers) == ["local"] and cfg.servers["local"].port == stack.pg.port
        with open(work / "proxy.log", "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "proxy.cli", "--config", str(stack.config_path)],
                                    stdout=log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, (work / "proxy.log").read_text()
                time.sleep(0.05)
        creds = read_credentials(work / ".run" / "credentials")
        tls = {"sslmode": "verify-full", "sslrootcert": str(REPO / "certs" / "ca.crt"), "host": "localhost",
               "port": port}
        deadline = time.monotonic() + 20
        # the proxy creates the metadata database just after it starts listening
        while "event=routes_following" not in (work / "proxy.log").read_text():
            assert time.monotonic() < deadline, (work / "proxy.log").read_text()
            time.sleep(0.1)
        meta = psycopg.connect(user="iasql", password=creds["user_password"], dbname="iasql_metadata",
                               autocommit=True, **tls)
        with meta:
            user, password, _, _, _, db = meta.execute("SELECT * FROM iasql_connect('dev')").fetchone()
            assert meta.execute("SELECT alias FROM iasql_db_list()").fetchall() == [("dev",)]
        with psycopg.connect(user=user, password=password, dbname=db, **tls) as c:
            assert c.execute("SELECT current_user").fetchone() == (user,)
    finally:
        if proc is not None:
            os.kill(proc.pid, signal.SIGINT)
            proc.wait(20)
        stack.stop()
        shutil.rmtree(work, ignore_errors=True)
