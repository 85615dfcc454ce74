"""Memory is bounded (issue 16, "Memory"): ``max_packet_size`` defaults to 64 MiB, and a huge
Query, with or without ``iasql_``, costs the proxy about its own size, not copies of it. (How long
it stalls other clients is measured by ``python -m tools.bench.large_message``, not tested.)"""

from __future__ import annotations

import struct

import pytest

from proxy.wire import frontend as F
from tests.support.faults import RawConn, data_rows, errors_in

pytestmark = pytest.mark.timeout(300)

MiB = 1 << 20


@pytest.fixture(scope="module")
def default_proxy(pg, proxy_ini, start_proxy):
    """Transaction pooling, the engine on, max_packet_size left at its default."""
    return start_proxy(proxy_ini(pool_mode="transaction", default_pool_size=2), "memory-proxy")


def _reset_peak(pid: int) -> None:
    """Reset the process's peak resident size (Linux: 5 to /proc/PID/clear_refs)."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):  # the peak resident size so far
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def _login(proxy) -> RawConn:
    c = RawConn(proxy.port, timeout=120)
    c.startup("postgres", password="postgres")
    return c


def test_default_max_packet_size_is_64_mib(default_proxy):
    c = _login(default_proxy)
    c.send(b"Q" + struct.pack("!i", 64 * MiB + 1))  # the header alone: refused at once
    got = c.read_until_closed()
    [err] = errors_in(got)
    assert (err.get("S"), err.sqlstate) == ("FATAL", "08P01")
    assert err.message == f"message of {64 * MiB + 1} bytes exceeds max_packet_size ({64 * MiB} bytes)"


@pytest.mark.parametrize("marker", ["", "iasql_"], ids=["plain", "with-iasql"])
def test_a_60_mib_query_costs_about_its_size(default_proxy, marker):
    """The peak resident size grows by less than twice the message (before: 1.4 GB for 500 MB,
    2.6 GB with ``iasql_``); the answer is Postgres's (or 54000 for a text with ``iasql_`` over
    16 MiB), and the session goes on."""
    pid = default_proxy.process.pid
    c = _login(default_proxy)
    c.query("SELECT 1")
    _reset_peak(pid)
    before = _rss_mib(pid)
    size = 60 * MiB
    c.send(F.Query("SELECT length('" + marker + "x" * size + "')").encode())
    got = c.read_until_ready()
    grown = _rss_mib(pid) - before
    if marker:
        assert [e.sqlstate for e in errors_in(got)] == ["54000"]
    else:
        assert data_rows(got) == [[str(size)]]
    assert grown < 2 * 60, f"peak resident size grew by {grown:.0f} MiB for a 60 MiB Query"
    assert data_rows(c.query("SELECT 2")) == [["2"]]
    c.terminate()
    assert "Traceback" not in default_proxy.log()
