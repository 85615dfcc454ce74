"""Differential helpers: run the same client steps directly on Postgres and through the proxy,
and compare what the clients observe."""

from __future__ import annotations

import time
from typing import Callable, Iterable

import psycopg

#: ParameterStatus values a client holds (psycopg ``conn.info.parameter_status``), compared after each step.
REPORTED = ("application_name", "DateStyle", "TimeZone", "IntervalStyle", "is_superuser",
            "session_authorization", "standard_conforming_strings", "client_encoding")

Step = tuple[int, str]


def observe(conn: psycopg.Connection, sql: str) -> tuple:
    """What a client sees for one statement: rows or command tag, or (sqlstate, primary message)."""
    try:
        cur = conn.execute(sql)
        res: tuple = ("ok", cur.fetchall() if cur.description else cur.statusmessage)
        while cur.nextset():
            res += (cur.fetchall() if cur.description else cur.statusmessage,)
    except psycopg.Error as e:
        res = ("error", e.sqlstate, e.diag.message_primary)
    return res


def run_script(dsn: str, clients: int, steps: Iterable[Step], **connect_kw) -> list[tuple]:
    """Open ``clients`` autocommit connections to ``dsn`` and run ``steps`` (client index, SQL) in
    order. Returns one record per step: (client, sql, result, reported parameters, transaction status)."""
    conns = [psycopg.connect(dsn, autocommit=True, **connect_kw) for _ in range(clients)]
    out: list[tuple] = [("login", i, {k: c.info.parameter_status(k) for k in REPORTED}) for i, c in enumerate(conns)]
    try:
        for i, sql in steps:
            c = conns[i]
            res = observe(c, sql)
            params = {k: c.info.parameter_status(k) for k in REPORTED}
            out.append((i, sql, res, params, c.info.transaction_status.name))
    finally:
        for c in conns:
            c.close()
    return out


def assert_same(direct: list[tuple], proxied: list[tuple]) -> None:
    """Fail at the first step where the proxy's clients saw something else than direct ones."""
    assert len(direct) == len(proxied)
    logins = sum(1 for x in direct if x[0] == "login")
    for n, (d, p) in enumerate(zip(direct, proxied)):
        if d != p:
            raise AssertionError(
                "client observed a difference through the proxy\n"
                f"  step #{n - logins}: {d[:2]!r}\n  direct    : {d[2:]!r}\n  via proxy : {p[2:]!r}\n"
                "direct transcript up to there (#, client, sql, result):\n"
                + "\n".join(f"    #{k - logins} {x[:3]!r}" for k, x in enumerate(direct[:n + 1]) if x[0] != "login"))


def differential(direct_dsn: str, proxy_dsn: str, clients: int, steps: list[Step], **connect_kw) -> list[tuple]:
    """Run ``steps`` directly and through the proxy; assert identical transcripts; return the direct one."""
    d = run_script(direct_dsn, clients, steps, **connect_kw)
    p = run_script(proxy_dsn, clients, steps, **connect_kw)
    assert_same(d, p)
    return d


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.1, what: str = "") -> object:
    """Poll ``predicate`` until it returns a truthy value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}: last value {last!r}")


# -- raw protocol differential ----------------------------------------------------------------

def normalize(messages) -> list[tuple]:
    """Protocol messages as a client compares them: ErrorResponse as (E, sqlstate, message);
    ParameterStatus, NoticeResponse and BackendKeyData left out."""
    from tests.support.faults import error_fields

    out: list[tuple] = []
    for t, p in messages:
        if t in ("S", "N", "K"):
            continue
        if t == "E":
            f = error_fields(p)
            out.append(("E", f.sqlstate, f.message))
        else:
            out.append((t, p))
    return out


RawStep = tuple[int, bytes, int]


def run_raw(port: int, dbname: str, clients: int, steps: list[RawStep], password: str = "postgres") -> list[tuple]:
    """Log ``clients`` RawConns in to ``port`` and run (client, bytes, ReadyForQuery count to read)."""
    from tests.support.faults import RawConn

    conns = []
    try:
        for _ in range(clients):
            c = RawConn(port, timeout=15)
            c.startup("postgres", dbname, password=password)
            conns.append(c)
        out = []
        for i, data, ready in steps:
            conns[i].send(data)
            out.append((i, normalize(conns[i].read_until_ready(ready)) if ready else []))
        return out
    finally:
        for c in conns:
            c.terminate()


def raw_differential(direct_port: int, proxy_port: int, dbname: str, clients: int, steps: list[RawStep]) -> list:
    d = run_raw(direct_port, dbname, clients, steps)
    p = run_raw(proxy_port, dbname, clients, steps)
    for n, (a, b) in enumerate(zip(d, p)):
        if a != b:
            raise AssertionError(f"raw step #{n} (client {a[0]}) differs\n  direct    : {a[1]!r}\n  via proxy : {b[1]!r}\n"
                                 "direct up to there:\n" + "\n".join(f"    #{k} {x!r}" for k, x in enumerate(d[:n + 1])))
    return d
