"""SCRAM-SHA-256-PLUS (channel binding ``tls-server-end-point``, RFC 5929) through the proxy (issue 14).

Clients connected over TLS are offered SCRAM-SHA-256-PLUS as PostgreSQL offers it, so libpq's
``channel_binding=require`` works; a GS2 header that does not fit the chosen mechanism is refused
with the same FATAL Postgres sends (compared with a Postgres that has TLS on); and with
server TLS the proxy binds its own login to Postgres to the channel where Postgres offers it.
"""

from __future__ import annotations

import base64
import struct
import subprocess

import psycopg
import pytest

from proxy.auth import ScramClientExchange
from proxy.embedded.postgres import EmbeddedPostgres
from proxy.tls import server_end_point
from proxy.wire import frontend as F
from tests.support.faults import RawConn, error_fields
from tests.support.proxy import ProxyProcess

pytestmark = pytest.mark.timeout(90)

ALICE = "alice-Cb-Sekr1t"


@pytest.fixture(scope="module")
def tls_pg(dev_certs):
    """A Postgres with TLS on (the development certificate) and a SCRAM role alice."""
    ca, crt, key = dev_certs
    server = EmbeddedPostgres(password="postgres", ssl_cert=crt, ssl_key=key)
    server.start()
    try:
        server.psql(f"SET password_encryption = 'scram-sha-256'; CREATE ROLE alice LOGIN PASSWORD '{ALICE}'")
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def cb_proxy(tls_pg, dev_certs, tmp_path_factory):
    """A proxy in front of ``tls_pg``: client TLS with the development certificate, server TLS
    verify-full, secrets by auth_query (alice logs in by SCRAM pass-through; postgres has its
    password in the auth_file)."""
    ca, crt, key = dev_certs
    tmp = tmp_path_factory.mktemp("cb-proxy")
    (tmp / "users.txt").write_text('"postgres" "postgres"\n')
    ini = (f"[databases]\n* = host=localhost port={tls_pg.port}\n[proxy]\nauth_type = scram-sha-256\n"
           f"auth_file = {tmp / 'users.txt'}\nauth_user = postgres\n"
           f"client_tls_sslmode = prefer\nclient_tls_cert_file = {crt}\nclient_tls_key_file = {key}\n"
           f"server_tls_sslmode = verify-full\nserver_tls_ca_file = {ca}\npool_mode = transaction\n"
           "default_pool_size = 2\n[engine]\nenabled = false\n")
    proc = ProxyProcess(ini, tmp / "run").start()
    try:
        yield proc
    finally:
        proc.stop()


def _dsn(port: int, user: str, password: str, **extra: str) -> str:
    from tests.support.faults import CA_FILE

    opts = {"host": "localhost", "port": str(port), "dbname": "postgres", "user": user, "password": password,
            "sslmode": "verify-full", "sslrootcert": str(CA_FILE), **extra}
    return " ".join(f"{k}={v}" for k, v in opts.items())


@pytest.mark.parametrize("user,password", [("alice", ALICE), ("postgres", "postgres")])
def test_libpq_channel_binding_require_through_the_proxy(cb_proxy, user, password):
    """libpq refuses to log in without channel binding when asked; through the proxy it logs in,
    and the proxy's own login to the TLS Postgres behind it (SCRAM-SHA-256-PLUS, by pass-through
    for alice and with the auth_file password for postgres) succeeded too."""
    with psycopg.connect(_dsn(cb_proxy.port, user, password, channel_binding="require"),
                         autocommit=True, connect_timeout=10) as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("SELECT current_user, ssl FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) "
                            "WHERE pid = pg_backend_pid()").fetchone() == (user, True)


def test_psql_channel_binding_require(cb_proxy):
    """psql with ``channel_binding=require`` over TLS verify-full, as a user would type it."""
    res = subprocess.run(["psql", _dsn(cb_proxy.port, "alice", ALICE, channel_binding="require"),
                          "-XAtc", "SELECT 'bound'"], capture_output=True, text=True, timeout=30,
                         stdin=subprocess.DEVNULL)
    assert (res.returncode, res.stdout.strip()) == (0, "bound"), res.stderr


def test_wrong_password_with_channel_binding(cb_proxy):
    with pytest.raises(psycopg.OperationalError) as exc:
        psycopg.connect(_dsn(cb_proxy.port, "alice", "not-it", channel_binding="require"), connect_timeout=10)
    assert 'password authentication failed for user "alice"' in str(exc.value)


def test_no_plus_without_tls(cb_proxy, tls_pg):
    """Over plain TCP only SCRAM-SHA-256 is offered (as Postgres), so libpq's
    ``channel_binding=require`` refuses to go on, through the proxy as directly."""
    for port in (cb_proxy.port, tls_pg.port):
        with pytest.raises(psycopg.OperationalError) as exc:
            psycopg.connect(_dsn(port, "alice", ALICE, channel_binding="require", sslmode="disable"),
                            connect_timeout=10)
        assert "channel binding" in str(exc.value), (port, exc.value)


def _sasl_start(port: int) -> tuple[RawConn, list[str]]:
    """A TLS connection to ``port`` that sent StartupMessage as alice; returns it and the SASL
    mechanisms offered."""
    c = RawConn(port)
    assert c.ssl_request() == b"S"
    c.wrap_tls()
    c.send(F.StartupMessage(F.PROTOCOL_3_0, {"user": "alice", "database": "postgres"}).encode())
    t, payload = c.read_message()
    assert t == "R" and struct.unpack_from("!i", payload)[0] == 10, (t, payload)
    return c, [m.decode() for m in payload[4:].split(b"\x00") if m]


def _fatal(c: RawConn) -> tuple[str | None, str | None, str | None, str | None]:
    msg = c.read_message()
    assert msg is not None and msg[0] == "E", msg
    f = error_fields(msg[1])
    return f.get("S"), f.sqlstate, f.message, f.get("D")


def _client_first(c: RawConn, mechanism: str, gs2: str) -> None:
    c.send(F.SASLInitialResponse(mechanism, f"{gs2}n=,r=cbtestnonce0123456789".encode()).encode())


CASES = {
    # the client thinks the server cannot bind, though it offered SCRAM-SHA-256-PLUS
    "y flag (downgrade)": ("SCRAM-SHA-256", "y,,"),
    # PLUS chosen but no channel binding in the message, and the reverse
    "PLUS without binding": ("SCRAM-SHA-256-PLUS", "n,,"),
    "binding without PLUS": ("SCRAM-SHA-256", "p=tls-server-end-point,,"),
    # a binding type Postgres does not support
    "tls-unique": ("SCRAM-SHA-256-PLUS", "p=tls-unique,,"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_gs2_header_refused_as_postgres_refuses_it(cb_proxy, tls_pg, case):
    """Each malformed or downgraded GS2 header gets the ErrorResponse Postgres sends (severity,
    SQLSTATE 08P01, or 28000 for the downgrade, message, detail), and the connection is closed."""
    mechanism, gs2 = CASES[case]
    got = {}
    for name, port in (("proxy", cb_proxy.port), ("postgres", tls_pg.port)):
        c, offered = _sasl_start(port)
        with c:
            assert offered == ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"], (name, offered)
            _client_first(c, mechanism, gs2)
            got[name] = _fatal(c)
            assert c.read_message() is None, f"{name} kept the connection open"
    assert got["proxy"] == got["postgres"]
    assert got["proxy"][1] == ("28000" if gs2 == "y,," else "08P01")


def _plus_login(port: int, binding: bytes) -> tuple[str, ...] | None:
    """SCRAM-SHA-256-PLUS as alice with the given channel binding data; None when logged in, else
    the FATAL's (severity, sqlstate, message, detail)."""
    c, _ = _sasl_start(port)
    with c:
        scram = ScramClientExchange("alice", password=ALICE, binding=binding)
        c.send(F.SASLInitialResponse(scram.mechanism, scram.first().encode()).encode())
        t, payload = c.read_message()
        assert t == "R" and struct.unpack_from("!i", payload)[0] == 11
        c.send(F.SASLResponse(scram.final(payload[4:].decode()).encode()).encode())
        t, payload = c.read_message()
        if t == "E":
            f = error_fields(payload)
            return f.get("S"), f.sqlstate, f.message, f.get("D")
        assert t == "R" and struct.unpack_from("!i", payload)[0] == 12
        scram.verify(payload[4:].decode())
        c.login("alice", ALICE)
        assert c.query("SELECT 1")[-1][0] == "Z"
        return None


def test_binding_data_checked_like_postgres(cb_proxy, tls_pg, dev_certs):
    """The right ``tls-server-end-point`` hash logs in, on the proxy as on Postgres; the hash of
    another certificate (what a man in the middle would present) fails the channel binding check."""
    ca, crt, key = dev_certs
    import ssl

    right = server_end_point(ssl.PEM_cert_to_DER_cert(crt.read_text()))
    wrong = server_end_point(ssl.PEM_cert_to_DER_cert(ca.read_text()))
    assert right != wrong
    for port in (cb_proxy.port, tls_pg.port):
        assert _plus_login(port, right) is None
    assert _plus_login(cb_proxy.port, wrong) == _plus_login(tls_pg.port, wrong)
    assert _plus_login(cb_proxy.port, wrong)[1:3] == ("28000", "SCRAM channel binding check failed")


def test_binding_computed_as_scramp_server_expects():
    """The client-final's ``c=`` attribute carries the GS2 header and the binding data (RFC 5802
    section 7), as scramp's server side checks it."""
    import scramp

    data = b"\x01" * 32
    mech = scramp.ScramMechanism("SCRAM-SHA-256-PLUS")
    salt, stored, server_key, it = mech.make_auth_info("pw", iteration_count=4096)
    server = mech.make_server(lambda _u: (salt, stored, server_key, it),
                              channel_binding=("tls-server-end-point", data))
    client = ScramClientExchange("u", password="pw", binding=data)
    server.set_client_first(client.first())
    final = client.final(server.get_server_first())
    assert base64.b64decode(final.split(",")[0][2:]) == b"p=tls-server-end-point,," + data
    server.set_client_final(final)
    client.verify(server.get_server_final())


def test_offered_mechanisms_over_plain_tcp(cb_proxy):
    with RawConn(cb_proxy.port) as c:
        c.send(F.StartupMessage(F.PROTOCOL_3_0, {"user": "alice", "database": "postgres"}).encode())
        t, payload = c.read_message()
        assert t == "R" and payload[4:] == b"SCRAM-SHA-256\x00\x00"


def test_downgrade_error_fields(cb_proxy):
    """The downgrade FATAL carries Postgres's message and detail (compared with Postgres above)."""
    c, _ = _sasl_start(cb_proxy.port)
    with c:
        _client_first(c, "SCRAM-SHA-256", "y,,")
        severity, code, message, detail = _fatal(c)
    assert (severity, code, message) == ("FATAL", "28000", "SCRAM channel binding negotiation error")
    assert "thinks the server does not" in detail
