"""After a crowd of clients leaves, the proxy gives memory back (proxy.memory) and runs with the C
allocator for Python objects (proxy.cli re-executes itself with PYTHONMALLOC=malloc)."""

from __future__ import annotations

import socket
import ssl
import struct
import time

import pytest

from tools.bench.stack import rss_bytes as _rss

pytestmark = pytest.mark.timeout(120)


def _startup(user: str, database: str) -> bytes:
    body = struct.pack("!i", 196608) + b"".join(k + b"\0" + v + b"\0" for k, v in
                                                   ((b"user", user.encode()), (b"database", database.encode()))) + b"\0"
    return struct.pack("!i", len(body) + 4) + body


def test_proxy_runs_with_the_c_allocator(proxy_ini, start_proxy):
    proxy = start_proxy(proxy_ini(), "malloc")
    with open(f"/proc/{proxy.process.pid}/environ", "rb") as f:
        env = dict(item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item)
    assert env.get(b"PYTHONMALLOC") == b"malloc"


def test_memory_goes_back_after_clients_leave(proxy_ini, start_proxy, pg):
    """1,500 TLS clients log in (trust) and stay, then leave: the log says memory was returned and
    the resident size falls back close to where it was before they came. (TLS clients cost about
    30 KiB each, so what they add stands well above the allocator's page-level noise.)"""
    proxy = start_proxy(proxy_ini(auth_type="trust", max_client_conn=3000, pool_mode="transaction",
                                  log_connections=0, log_disconnections=0), "memory")
    pid = proxy.process.pid
    time.sleep(1.5)
    before = _rss(pid)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    socks = []
    for _ in range(1500):
        s = socket.create_connection(("127.0.0.1", proxy.port), timeout=30)
        s.sendall(struct.pack("!ii", 8, 80877103))  # SSLRequest
        assert s.recv(1) == b"S"
        s = ctx.wrap_socket(s, server_hostname="localhost")
        s.sendall(_startup("postgres", "postgres"))
        socks.append(s)
    for s in socks:  # read each welcome up to ReadyForQuery
        data = b""
        while not data.endswith(b"Z\0\0\0\x05I"):
            chunk = s.recv(65536)
            assert chunk, "proxy closed a client during login"
            data += chunk
    peak = _rss(pid)
    for s in socks:
        s.close()
    deadline = time.monotonic() + 20
    while "event=memory_returned" not in proxy.log() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "event=memory_returned" in proxy.log()
    time.sleep(0.5)
    after = _rss(pid)
    print(f"rss before {before >> 20} MiB, peak {peak >> 20} MiB, after {after >> 20} MiB")
    assert peak - before > 20 << 20, "1,500 TLS clients should cost more than 20 MiB"
    assert after - before <= 0.25 * (peak - before), (before, peak, after)


def test_restart_ignores_modules_in_the_current_directory(tmp_path):
    """The in-place restart runs ``python -P -m proxy.cli``: a ``proxy`` package in the directory
    the command is started from is not imported instead of the installed one."""
    import subprocess
    import sys
    from pathlib import Path

    fake = tmp_path / "proxy"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise SystemExit('HIJACKED')\n")
    (fake / "cli.py").write_text("raise SystemExit('HIJACKED')\n")
    (tmp_path / "bad.ini").write_text("[databases]\npostgres = host=127.0.0.1\n[proxy]\nno_such_key = 1\n")
    script = Path(sys.executable).with_name("iasql-proxy")
    proc = subprocess.run([str(script), "--config", "bad.ini"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60, env={k: v for k, v in __import__("os").environ.items() if k != "PYTHONMALLOC"})
    assert "HIJACKED" not in proc.stderr + proc.stdout
    assert proc.returncode == 2 and "configuration error" in proc.stderr
