"""Failures: a server connection that dies, malformed and oversized messages, garbage from many
sockets. The proxy must give the affected client the error Postgres clients expect, close only
that client, and keep serving everyone else."""

from __future__ import annotations

import struct
import threading
import time

import psycopg
import pytest

from proxy.wire import frontend as F
from tests.support.faults import RawConn, data_rows, errors_in, garbage_payloads, spray_garbage, wait_closed

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def admin(pg):
    with psycopg.connect(pg.dsn(), autocommit=True, connect_timeout=5) as conn:
        yield conn


def alice_dsn(proxy, pg_roles) -> str:
    return proxy.dsn(user="alice", password=pg_roles["alice"], sslmode="verify-full", connect_timeout="5")


def terminate(admin: psycopg.Connection, pid: int) -> None:
    assert admin.execute("select pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)


# ---------------------------------------------------------------------------------------------
# the server connection dies
# ---------------------------------------------------------------------------------------------

def test_terminated_backend_client_gets_57p01_others_keep_working(scram_proxy, pg, pg_roles, admin):
    victim = psycopg.connect(alice_dsn(scram_proxy, pg_roles), autocommit=True)
    bystander = psycopg.connect(alice_dsn(scram_proxy, pg_roles), autocommit=True)
    try:
        pid = victim.execute("select pg_backend_pid()").fetchone()[0]
        assert bystander.execute("select pg_backend_pid()").fetchone()[0] != pid
        terminate(admin, pid)
        with pytest.raises(psycopg.OperationalError) as exc:
            for _ in range(50):  # the FATAL arrives asynchronously; the next query sees it
                victim.execute("select 1")
                time.sleep(0.05)
        assert "terminating connection due to administrator command" in str(exc.value)
        assert exc.value.sqlstate in ("57P01", None)
        assert victim.closed or victim.broken
        assert bystander.execute("select 'still here'").fetchone() == ("still here",)
        with psycopg.connect(alice_dsn(scram_proxy, pg_roles)) as fresh:
            assert fresh.execute("select 1").fetchone() == (1,)
    finally:
        victim.close()
        bystander.close()


def test_terminated_backend_same_error_as_postgres(scram_proxy, pg, pg_roles, admin):
    """The raw message stream after pg_terminate_backend: Postgres's own FATAL 57P01, then close."""
    streams = []
    for port, password in ((scram_proxy.port, pg_roles["alice"]), (pg.port, pg_roles["alice"])):
        with RawConn(port) as c:
            c.startup("alice", password=password)
            pid = int(data_rows(c.query("select pg_backend_pid()"))[0][0])
            terminate(admin, pid)
            streams.append(c.read_until_closed())
    through, direct = streams
    assert [e.sqlstate for e in errors_in(direct)] == ["57P01"]
    assert errors_in(through)[0].sqlstate == "57P01"
    assert errors_in(through)[0].fields == errors_in(direct)[0].fields
    assert [t for t, _ in through] == [t for t, _ in direct], "the proxy added or dropped messages"


def test_terminated_during_a_query(scram_proxy, pg, pg_roles, admin):
    victim = psycopg.connect(alice_dsn(scram_proxy, pg_roles), autocommit=True)
    pid = victim.execute("select pg_backend_pid()").fetchone()[0]
    outcome: dict = {}

    def run():
        try:
            victim.execute("select pg_sleep(10)")
        except psycopg.Error as e:
            outcome["error"] = e

    t = threading.Thread(target=run)
    t.start()
    try:
        deadline = time.monotonic() + 5
        while not admin.execute("select 1 from pg_stat_activity where pid = %s and state = 'active'",
                                (pid,)).fetchone():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        terminate(admin, pid)
        t.join(5)
        assert not t.is_alive()
        assert isinstance(outcome.get("error"), psycopg.OperationalError)
        assert "terminating connection due to administrator command" in str(outcome["error"])
    finally:
        victim.close()
    with psycopg.connect(alice_dsn(scram_proxy, pg_roles)) as fresh:
        assert fresh.execute("select 2").fetchone() == (2,)


# ---------------------------------------------------------------------------------------------
# malformed, oversized, garbage
# ---------------------------------------------------------------------------------------------

def logged_in(proxy, pg_roles) -> RawConn:
    c = RawConn(proxy.port, timeout=5)
    c.startup("alice", password=pg_roles["alice"])
    return c


def test_malformed_length_gets_08p01_and_close(hardened_proxy, pg_roles):
    with logged_in(hardened_proxy, pg_roles) as c:
        assert data_rows(c.query("select 1")) == [["1"]]
        c.send(b"Q\x00\x00\x00\x02")  # a length smaller than the length field itself
        got = c.read_until_closed()
    errs = errors_in(got)
    assert len(errs) == 1 and (errs[0].get("S"), errs[0].sqlstate) == ("FATAL", "08P01")


def test_oversized_message_gets_08p01_and_close(hardened_proxy, pg_roles):
    with logged_in(hardened_proxy, pg_roles) as c:
        sql = "select '" + "x" * 5000 + "'"
        c.send(F.Query(sql).encode())
        got = c.read_until_closed()
    errs = errors_in(got)
    assert len(errs) == 1 and (errs[0].get("S"), errs[0].sqlstate) == ("FATAL", "08P01")
    assert "max_packet_size" in errs[0].message
    assert [t for t, _ in got if t in "TD"] == []  # the query never ran


def test_oversized_length_field_rejected_before_the_body_arrives(hardened_proxy, pg_roles):
    with logged_in(hardened_proxy, pg_roles) as c:
        c.send(b"Q" + struct.pack("!i", 0x7FFFFFF0))  # announces ~2 GB, sends nothing more
        got = c.read_until_closed()
    assert [e.sqlstate for e in errors_in(got)] == ["08P01"]


def test_message_just_under_the_limit_passes(hardened_proxy, pg_roles):
    with logged_in(hardened_proxy, pg_roles) as c:
        sql = "select length('" + "y" * 900 + "')"
        assert len(F.Query(sql).encode()) - 1 <= 1024
        assert data_rows(c.query(sql)) == [["900"]]


def test_unknown_message_type_after_login(hardened_proxy, pg_roles):
    with logged_in(hardened_proxy, pg_roles) as c:
        c.send(b"@" + struct.pack("!i", 8) + b"junk")
        closed, raw = wait_closed(c.sock, 5)
    assert closed
    assert raw[:1] == b"E" and b"C08P01\x00" in raw


def test_garbage_from_50_sockets(hardened_proxy, pg_roles):
    before = hardened_proxy.log()
    result = spray_garbage(hardened_proxy.port, garbage_payloads(count=50))
    assert result.sent == 50
    assert hardened_proxy.process.poll() is None, "the proxy process died"
    with psycopg.connect(alice_dsn(hardened_proxy, pg_roles)) as conn:
        assert conn.execute("select 'alive'").fetchone() == ("alive",)
    # a second round with random bytes only, then TLS clients still work
    spray_garbage(hardened_proxy.port, garbage_payloads(seed=7, count=50)[30:])
    with psycopg.connect(alice_dsn(hardened_proxy, pg_roles)) as conn:
        assert conn.pgconn.ssl_in_use and conn.execute("select 1").fetchone() == (1,)
    assert hardened_proxy.process.poll() is None
    new_log = hardened_proxy.log()[len(before):]
    assert "Traceback" not in new_log, new_log
    assert "internal proxy error" not in new_log and "event=login_error" not in new_log, new_log
