"""The HTTPS side's checks: Basic credentials (RFC 7617) against the proxy's own secrets, Origin
(RFC 6455 10.2), message size, runs per user, malformed messages, idle timeout, and that none of
it disturbs Postgres clients."""

from __future__ import annotations

import asyncio
import http.client
import json
import time

import psycopg
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.conftest import ALICE_PASSWORD, BOB_PASSWORD
from tests.http.conftest import PASSWORD, basic
from tests.http.test_run_protocol import open_ws, run_script

pytestmark = pytest.mark.timeout(60)


def get(port, client_tls, path="/", headers=None):
    conn = http.client.HTTPSConnection("localhost", port, context=client_tls, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def test_console_page_needs_a_login(http_proxy, client_tls):
    status, headers, _ = get(http_proxy.http_port, client_tls)
    assert status == 401
    assert headers["WWW-Authenticate"] == 'Basic realm="iasql-proxy", charset="UTF-8"'
    status, _, _ = get(http_proxy.http_port, client_tls, headers={"Authorization": basic("alice", "wrong")})
    assert status == 401
    status, headers, body = get(http_proxy.http_port, client_tls, headers={"Authorization": basic("alice", ALICE_PASSWORD)})
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b'<textarea id="sql"' in body
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    for path, ctype in (("/console.js", "text/javascript"), ("/console.css", "text/css")):
        status, headers, body = get(http_proxy.http_port, client_tls, path, {"Authorization": basic("postgres", PASSWORD)})
        assert status == 200 and headers["Content-Type"].startswith(ctype) and body
    status, _, _ = get(http_proxy.http_port, client_tls, "/../etc/passwd", {"Authorization": basic("alice", ALICE_PASSWORD)})
    assert status == 404


@pytest.mark.parametrize("user,password", [("alice", "wrong"), ("nobody_here", "x"), ("alice", ""),
                                           ("", ALICE_PASSWORD)])
async def test_run_refuses_bad_credentials(http_proxy, client_tls, user, password):
    with pytest.raises(InvalidStatus) as e:
        await open_ws(http_proxy.http_port, client_tls, user=user, password=password)
    assert e.value.response.status_code == 401


@pytest.mark.parametrize("header", [None, "Bearer abc", "Basic !!!notbase64", "Basic " + "YWxpY2U="])
async def test_run_refuses_malformed_authorization(http_proxy, client_tls, header):
    headers = {"Authorization": header} if header else {}
    with pytest.raises(InvalidStatus) as e:
        await connect(f"wss://localhost:{http_proxy.http_port}/run", ssl=client_tls, additional_headers=headers)
    assert e.value.response.status_code == 401


async def test_users_log_in_as_over_postgres(http_proxy, http_db, client_tls):
    # alice: SCRAM verifier by auth_query; postgres: a password in the auth_file
    for user, pw in (("alice", ALICE_PASSWORD), ("postgres", PASSWORD)):
        async with await open_ws(http_proxy.http_port, client_tls, user=user, password=pw, database=http_db) as ws:
            got = [m for _, m in await run_script(ws, "SELECT current_user")]
            assert got[0]["rows"] == [[user]]
    # bob's password is stored as md5: Postgres (and the proxy) refuse him a SCRAM login, so does /run
    with pytest.raises(InvalidStatus) as e:
        await open_ws(http_proxy.http_port, client_tls, user="bob", password=BOB_PASSWORD, database=http_db)
    assert e.value.response.status_code == 401


async def test_origin_is_checked(http_proxy, http_db, client_tls):
    port = http_proxy.http_port
    with pytest.raises(InvalidStatus) as e:
        await open_ws(port, client_tls, database=http_db, origin="https://evil.example")
    assert e.value.response.status_code == 403
    with pytest.raises(InvalidStatus) as e:  # the right host over plain http is another origin
        await open_ws(port, client_tls, database=http_db, origin=f"http://localhost:{port}")
    assert e.value.response.status_code == 403
    for origin in (f"https://localhost:{port}", "https://console.example:8443"):
        async with await open_ws(port, client_tls, database=http_db, origin=origin) as ws:
            assert [m for _, m in await run_script(ws, "SELECT 1")][0]["command"] == "SELECT 1"


async def test_unknown_database_gets_the_proxys_error(http_proxy, http_db, client_tls):
    async with await open_ws(http_proxy.http_port, client_tls, database="no_such_db_here") as ws:
        got = [m for _, m in await run_script(ws, "SELECT 1")]
        assert got[0] == {"error": {"sqlstate": "3D000", "message": 'database "no_such_db_here" does not exist',
                                    "detail": None, "hint": None, "position": None}}
        assert got[1] == {"done": True}
        # the message's own database wins over the URL's
        got = [m for _, m in await run_script(ws, "SELECT current_database()", database=http_db)]
        assert got[0]["rows"] == [[http_db]]


async def test_oversized_message_closes_the_socket_only(http_proxy, http_db, client_tls):
    ws = await open_ws(http_proxy.http_port, client_tls, database=http_db)
    await ws.send(json.dumps({"sql": "SELECT '" + "x" * 70000 + "'"}))
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(ws.recv(), 10)
    assert ws.close_code == 1009  # RFC 6455 7.4.1: message too big
    async with await open_ws(http_proxy.http_port, client_tls, database=http_db) as ws2:
        got = [m for _, m in await run_script(ws2, "SELECT length('" + "x" * 60000 + "')")]
        assert got[0]["rows"] == [["60000"]]


@pytest.mark.parametrize("message,fragment", [
    ("not json", "not JSON"), ("[1, 2]", "JSON object"), ('{"sql": 5}', '"sql" must be a string'),
    ('{"cancel": false}', "cancel message"), ('{"sql": "SELECT 1", "extra": 1}', "unknown key"),
    ('{"sql": "SELECT \\u0000"}', "NUL"), ('{"sql": "SELECT 1", "database": ""}', '"database"'),
    ("[" * 100000 + "]" * 100000, "not JSON")])
async def test_malformed_messages_are_answered(http_proxy, http_db, client_tls, message, fragment):
    async with await open_ws(http_proxy.http_port, client_tls, database=http_db, max_size=None) as ws:
        await ws.send(message[:60000])
        reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert reply["error"]["sqlstate"] == "08P01" and fragment in reply["error"]["message"]
        assert [m for _, m in await run_script(ws, "SELECT 2")][0]["rows"] == [["2"]]


async def test_runs_per_user_are_limited(http_proxy, http_db, client_tls):
    sockets = [await open_ws(http_proxy.http_port, client_tls, database=http_db) for _ in range(3)]
    try:
        runs = [asyncio.create_task(run_script(ws, "SELECT pg_sleep(1.5)")) for ws in sockets[:2]]
        await asyncio.sleep(0.5)
        third = [m for _, m in await run_script(sockets[2], "SELECT 1")]
        assert third[0]["error"]["sqlstate"] == "53300" and "http_max_runs_per_user = 2" in third[0]["error"]["message"]
        assert third[1] == {"done": True}
        for task in runs:
            assert (await task)[0][1]["command"] == "SELECT 1"
        assert [m for _, m in await run_script(sockets[2], "SELECT 1")][0]["command"] == "SELECT 1"
        # another user is not counted against alice
        async with await open_ws(http_proxy.http_port, client_tls, user="postgres", password=PASSWORD,
                                 database=http_db) as bob:
            busy = [asyncio.create_task(run_script(ws, "SELECT pg_sleep(1)")) for ws in sockets[:2]]
            await asyncio.sleep(0.3)
            assert [m for _, m in await run_script(bob, "SELECT 1")][0]["command"] == "SELECT 1"
            await asyncio.gather(*busy)
    finally:
        for ws in sockets:
            await ws.close()


async def test_one_run_at_a_time_per_socket(http_proxy, http_db, client_tls):
    async with await open_ws(http_proxy.http_port, client_tls, database=http_db) as ws:
        await ws.send(json.dumps({"sql": "SELECT pg_sleep(0.5)"}))
        await ws.send(json.dumps({"sql": "SELECT 2"}))
        got = [json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(4)]
    assert got[0]["error"]["sqlstate"] == "55000" and got[1] == {"done": True}
    assert got[2]["command"] == "SELECT 1" and got[3] == {"done": True}


async def test_idle_socket_is_closed(sleepy_proxy, client_tls):
    ws = await open_ws(sleepy_proxy.http_port, client_tls, user="postgres", password=PASSWORD,
                       database=sleepy_proxy.database)
    t0 = time.monotonic()
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(ws.recv(), 10)
    assert 2.5 < time.monotonic() - t0 < 6
    assert ws.close_code == 1000 and "http_idle_timeout" in ws.close_reason


async def test_a_running_script_is_not_idle(sleepy_proxy, client_tls):
    async with await open_ws(sleepy_proxy.http_port, client_tls, user="postgres", password=PASSWORD,
                             database=sleepy_proxy.database) as ws:
        got = [m for _, m in await run_script(ws, "SELECT * FROM iasql_sleep(4)")]
        assert got[-2]["rows"] == [["4"]]


async def test_postgres_clients_do_not_notice(http_proxy, http_db, client_tls):
    """Garbage on the HTTP port (not TLS, half a handshake, a flood of bad upgrades) leaves
    Postgres clients' round trips as they were."""
    dsn = http_proxy.dsn(user="alice", password=ALICE_PASSWORD, dbname=http_db, sslmode="require")
    with psycopg.connect(dsn, autocommit=True) as c:
        async def junk():
            r, w = await asyncio.open_connection("127.0.0.1", http_proxy.http_port)
            w.write(b"GET / HTTP/1.1\r\n\r\n" * 100)
            await w.drain()
            w.close()
        await asyncio.gather(*(junk() for _ in range(50)))
        bad = [connect(f"wss://localhost:{http_proxy.http_port}/run", ssl=client_tls) for _ in range(50)]
        results = await asyncio.gather(*bad, return_exceptions=True)
        assert all(isinstance(r, InvalidStatus) for r in results)
        t0 = time.monotonic()
        for _ in range(20):
            assert c.execute("SELECT 1").fetchone() == (1,)
        assert time.monotonic() - t0 < 2
    status, _, _ = get(http_proxy.http_port, client_tls, headers={"Authorization": basic("alice", ALICE_PASSWORD)})
    assert status == 200
    assert "Traceback" not in http_proxy.log()


async def test_sigterm_with_open_sockets(pg, pg_roles, proxy_ini, start_proxy, client_tls, http_db):
    """A graceful shutdown stops the endpoint with the proxy: a running statement finishes, open
    sockets are closed (1001, going away) and the process exits 0 in time."""
    import signal

    from proxy.embedded.postgres import free_port
    from tests.http.conftest import wait_for_port

    port = free_port()
    proxy = start_proxy(proxy_ini(http_listen_port=port, shutdown_timeout=5), "http-shutdown")
    wait_for_port(port)
    idle = await open_ws(port, client_tls, database=http_db)
    await run_script(idle, "SELECT 1")
    busy = await open_ws(port, client_tls, database=http_db)
    await busy.send(json.dumps({"sql": "SELECT pg_sleep(1), 'finished' AS f"}))
    await asyncio.sleep(0.3)
    t0 = time.monotonic()
    proxy.process.send_signal(signal.SIGTERM)
    first = json.loads(await asyncio.wait_for(busy.recv(), 10))
    assert first["rows"] == [["", "finished"]]
    assert await asyncio.to_thread(proxy.process.wait, 15) == 0
    assert time.monotonic() - t0 < 5
    for ws in (idle, busy):
        with pytest.raises(ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), 10)
        assert ws.close_code == 1001
    assert "Traceback" not in proxy.log()


@pytest.mark.parametrize("request_bytes", [
    b"\x00\xff" * 500,
    b"POST /run HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    b"GET /run HTTP/1.1\r\nHost: x\r\n" + b"X-Long: " + b"a" * 20000 + b"\r\n\r\n",
    b"GET /run HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Version: 99\r\nSec-WebSocket-Key: nope\r\n\r\n",
    b"GET /run HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Basic YWxpY2U6YWxpY2UtU2VrcjF0LXB3\r\n\r\n"
    b"\x81\xff" + b"\x7f" * 12,   # authenticated, then a frame claiming 2**63 bytes
    b"GET / HTTP/1.1\r\n" + b"Host: x\r\n" * 500 + b"\r\n",
])
def test_garbage_over_tls_is_answered_or_dropped(http_proxy, client_tls, request_bytes):
    import socket

    with socket.create_connection(("127.0.0.1", http_proxy.http_port), timeout=10) as raw:
        with client_tls.wrap_socket(raw, server_hostname="localhost") as s:
            try:
                s.sendall(request_bytes)
                s.recv(4096)
            except OSError:
                pass
    status, _, _ = get(http_proxy.http_port, client_tls, headers={"Authorization": basic("alice", ALICE_PASSWORD)})
    assert status == 200
    assert "Traceback" not in http_proxy.log()
