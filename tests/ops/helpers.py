"""Helpers for the operations tests: psql against the admin console, metrics scraping."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import urllib.request

PSQL = shutil.which("psql") or "psql"
ADMIN_DB = "iasql_proxy"


def psql(proxy, sql: str, user: str = "postgres", password: str = "postgres", dbname: str = ADMIN_DB,
         timeout: float = 20) -> subprocess.CompletedProcess:
    """Run ``psql -c sql`` through ``proxy``; unaligned output, ``|`` separated, header included."""
    dsn = proxy.dsn(user=user, password=password, dbname=dbname, sslmode="disable", connect_timeout="5")
    return subprocess.run([PSQL, "-X", "-A", "-F", "|", "-v", "ON_ERROR_STOP=1", dsn, "-c", sql],
                          capture_output=True, text=True, timeout=timeout)


def table(out: str) -> tuple[list[str], list[dict[str, str]]]:
    """Parse psql -A output: (column names, rows as dicts); the '(n rows)' footer is dropped."""
    lines = [ln for ln in out.splitlines() if ln and not re.match(r"^\(\d+ rows?\)$", ln)]
    header = lines[0].split("|")
    return header, [dict(zip(header, ln.split("|"))) for ln in lines[1:]]


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        assert r.status == 200
        return r.read().decode()


def sample(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` (0 when none)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(4))
    return total


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05):
    """Poll ``predicate`` until it returns a truthy value; returns it or raises AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(interval)
