"""Regression tests for what a fresh tester found by feeding the proxy bad input, each compared
with what Postgres itself does where it answers."""

from __future__ import annotations

import struct

import pytest

from proxy.wire import frontend as F
from tests.support.faults import RawConn, ServerFatal, error_fields


def _login(port: int) -> RawConn:
    conn = RawConn(port, timeout=10)
    conn.startup("postgres", "postgres", password="postgres")
    return conn


def _nul_query(text: bytes) -> bytes:
    body = text + b"\0"
    return b"Q" + struct.pack("!i", len(body) + 4) + body


def test_nul_inside_an_iasql_query_is_answered_as_postgres_does(pg, scram_proxy):
    bad = _nul_query(b"SELECT * FROM iasql_version()\0garbage")
    direct = RawConn(pg.port, timeout=10)
    direct.startup("postgres", "postgres", password="postgres")
    through = _login(scram_proxy.port)
    answers = []
    for conn in (direct, through):
        conn.send(bad)
        msgs = conn.read_until_ready()
        [err] = [error_fields(p) for t, p in msgs if t == "E"]
        answers.append((err.sqlstate, err.message, err.get("S")))
        assert conn.query("SELECT 1")[-1][0] == "Z"  # the session goes on
    assert answers[0] == answers[1] == ("08P01", "invalid message format", "ERROR")


def test_second_ssl_request_inside_tls_is_refused_as_postgres_does(scram_proxy):
    conn = RawConn(scram_proxy.port, timeout=10)
    assert conn.ssl_request() == b"S"
    conn.wrap_tls()
    with pytest.raises(ServerFatal) as info:
        conn.send(F.SSLRequest().encode())
        conn.login("postgres", "postgres")
    assert info.value.sqlstate == "0A000"
    assert info.value.message == "unsupported frontend protocol 1234.5679: server supports 3.0 to 3.0"


def test_parse_counts_are_unsigned_as_in_postgres():
    parse = F.Parse("", "SELECT 1", tuple([25] * 40000))
    payload = parse.encode()[5:]
    assert F.Parse.decode(payload).param_types == parse.param_types


def test_waiting_for_a_server_at_login_is_bounded_by_query_wait_timeout(proxy_ini, start_proxy):
    proxy = start_proxy(proxy_ini(default_pool_size=1, client_login_timeout=1, query_wait_timeout=3),
                        "login-wait-proxy")
    holder = _login(proxy.port)  # session pooling: holds the only server connection
    try:
        with pytest.raises(ServerFatal) as info:
            _login(proxy.port)
        # not client_login_timeout: authentication finished; the wait was for a server connection
        assert (info.value.sqlstate, info.value.message) == ("08P01", "query_wait_timeout")
    finally:
        holder.terminate()
