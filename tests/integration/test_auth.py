"""Client authentication and start-up negotiation through the proxy, against a real Postgres.

Wrong passwords must get exactly what Postgres sends (FATAL 28P01, ``password authentication
failed for user "..."``); the start-up corner cases (pipelined plaintext after SSLRequest,
GSSENCRequest, direct TLS with and without ALPN, protocol 3.2 and ``_pq_.`` options) are driven on
raw sockets and, where Postgres itself answers the same request, compared with its answer.
"""

from __future__ import annotations

import socket
import ssl
import struct
import time

import psycopg
import pytest

from proxy.certs import make_client_cert
from proxy.wire import frontend as F
from tests.support.faults import (CA_FILE, RawConn, ServerFatal, data_rows, error_fields, tls_context,
                                  wait_closed)

pytestmark = pytest.mark.timeout(60)

WRONG = "definitely-not-the-password"


def failed_text(user: str) -> str:
    return f'password authentication failed for user "{user}"'


def login_error(port: int, user: str, password: str | None, tls: bool = False, **kw) -> ServerFatal:
    """Log in on a raw connection and return the ServerFatal it must end with."""
    with RawConn(port) as c:
        if tls:
            assert c.ssl_request() == b"S"
            c.wrap_tls()
        with pytest.raises(ServerFatal) as exc:
            c.startup(user, password=password, **kw)
        closed, rest = wait_closed(c.sock, 5) if not tls else (True, b"")
        assert closed, "the connection must be closed after the FATAL error"
        return exc.value


def auth_codes(messages) -> list[int]:
    return [struct.unpack_from("!i", p)[0] for t, p in messages if t == "R"]


# ---------------------------------------------------------------------------------------------
# SCRAM-SHA-256 (secrets from auth_query; the proxy never sees plaintext passwords)
# ---------------------------------------------------------------------------------------------

class TestScram:
    def test_right_password(self, scram_proxy, pg_roles):
        with psycopg.connect(scram_proxy.dsn(user="alice", password=pg_roles["alice"], sslmode="verify-full"),
                             connect_timeout=5) as conn:
            assert conn.execute("select current_user, session_user").fetchone() == ("alice", "alice")
            assert conn.pgconn.ssl_in_use

    def test_raw_login_uses_sasl(self, scram_proxy, pg_roles):
        with RawConn(scram_proxy.port) as c:
            got = c.startup("alice", password=pg_roles["alice"])
            assert auth_codes(got) == [10, 11, 12, 0]
            assert data_rows(c.query("select current_user")) == [["alice"]]

    def test_wrong_password_same_as_postgres(self, scram_proxy, pg, pg_roles):
        through = login_error(scram_proxy.port, "alice", WRONG)
        direct = login_error(pg.port, "alice", WRONG)
        assert (through.severity, through.sqlstate, through.message) == ("FATAL", "28P01", failed_text("alice"))
        assert (through.severity, through.sqlstate, through.message) == \
            (direct.severity, direct.sqlstate, direct.message)

    def test_wrong_password_libpq_message(self, scram_proxy):
        with pytest.raises(psycopg.OperationalError) as exc:
            psycopg.connect(scram_proxy.dsn(user="alice", password=WRONG, sslmode="verify-full"), connect_timeout=5)
        assert f"FATAL:  {failed_text('alice')}" in str(exc.value)

    def test_unknown_user_fails_like_wrong_password(self, scram_proxy, pg):
        through = login_error(scram_proxy.port, "nosuchuser", WRONG)
        direct = login_error(pg.port, "nosuchuser", WRONG)
        assert (through.sqlstate, through.message) == ("28P01", failed_text("nosuchuser"))
        assert (through.sqlstate, through.message) == (direct.sqlstate, direct.message)
        # the exchange went as far as for a real user (no early "no such user" answer)
        assert auth_codes(through.messages) == [10, 11]

    def test_md5_user_cannot_use_scram(self, scram_proxy, pg_roles):
        # Postgres: a role whose password is stored as md5 cannot log in with SCRAM.
        err = login_error(scram_proxy.port, "bob", pg_roles["bob"])
        assert (err.sqlstate, err.message) == ("28P01", failed_text("bob"))


# ---------------------------------------------------------------------------------------------
# md5
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def md5_proxy(proxy_ini, start_proxy, pg_roles):
    return start_proxy(proxy_ini(auth_type="md5"), "md5-proxy")


class TestMd5:
    def test_right_password(self, md5_proxy, pg_roles):
        with RawConn(md5_proxy.port) as c:
            got = c.startup("bob", password=pg_roles["bob"])
            assert auth_codes(got) == [5, 0]
            assert data_rows(c.query("select current_user")) == [["bob"]]
        with psycopg.connect(md5_proxy.dsn(user="bob", password=pg_roles["bob"], sslmode="verify-full"),
                             connect_timeout=5) as conn:
            assert conn.execute("select current_user").fetchone() == ("bob",)

    def test_wrong_password_same_as_postgres(self, md5_proxy, pg):
        through = login_error(md5_proxy.port, "bob", WRONG)
        direct = login_error(pg.port, "bob", WRONG)  # pg_hba: md5 for bob
        assert (through.severity, through.sqlstate, through.message) == ("FATAL", "28P01", failed_text("bob"))
        assert (through.sqlstate, through.message) == (direct.sqlstate, direct.message)

    def test_unknown_user(self, md5_proxy):
        err = login_error(md5_proxy.port, "nosuchuser", WRONG)
        assert (err.sqlstate, err.message) == ("28P01", failed_text("nosuchuser"))

    def test_scram_user_uses_scram_under_md5(self, md5_proxy, pg_roles):
        # Postgres (and PgBouncer) with the md5 method switch to SCRAM for a role with a SCRAM secret.
        with psycopg.connect(md5_proxy.dsn(user="alice", password=pg_roles["alice"], sslmode="verify-full"),
                             connect_timeout=5) as conn:
            assert conn.execute("select current_user").fetchone() == ("alice",)
        err = login_error(md5_proxy.port, "alice", WRONG)
        assert (err.sqlstate, err.message) == ("28P01", failed_text("alice"))


# ---------------------------------------------------------------------------------------------
# plain (clear text) only over TLS
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def plain_proxy(proxy_ini, start_proxy, pg_roles):
    return start_proxy(proxy_ini(auth_type="plain", client_tls_sslmode="require"), "plain-proxy")


class TestPlainRequiresTls:
    def test_non_tls_client_refused(self, plain_proxy):
        err = login_error(plain_proxy.port, "alice", "whatever")
        assert err.severity == "FATAL"
        assert err.sqlstate == "28000"
        assert err.message == 'no pg_hba.conf entry for host "127.0.0.1", user "alice", database "postgres", no encryption'
        assert auth_codes(err.messages) == []  # refused before any password was asked for

    def test_libpq_without_tls_refused(self, plain_proxy, pg_roles):
        with pytest.raises(psycopg.OperationalError) as exc:
            psycopg.connect(plain_proxy.dsn(user="alice", password=pg_roles["alice"], sslmode="disable"),
                            connect_timeout=5)
        assert "no encryption" in str(exc.value)

    def test_tls_client_clear_text_password(self, plain_proxy, pg_roles):
        with RawConn(plain_proxy.port) as c:
            assert c.ssl_request() == b"S"
            c.wrap_tls()
            got = c.startup("alice", password=pg_roles["alice"])
            assert auth_codes(got) == [3, 0]
            assert data_rows(c.query("select current_user")) == [["alice"]]
        with psycopg.connect(plain_proxy.dsn(user="alice", password=pg_roles["alice"], sslmode="verify-full"),
                             connect_timeout=5) as conn:
            assert conn.execute("select current_user").fetchone() == ("alice",)

    def test_tls_client_wrong_password(self, plain_proxy):
        err = login_error(plain_proxy.port, "alice", WRONG, tls=True)
        assert (err.sqlstate, err.message) == ("28P01", failed_text("alice"))


# ---------------------------------------------------------------------------------------------
# start-up negotiation
# ---------------------------------------------------------------------------------------------

class TestStartup:
    def test_plaintext_pipelined_after_sslrequest_refused(self, scram_proxy):
        startup = F.StartupMessage(F.PROTOCOL_3_0, {"user": "alice", "database": "postgres"}).encode()
        with socket.create_connection(("127.0.0.1", scram_proxy.port), timeout=5) as s:
            s.sendall(F.SSLRequest().encode() + startup)  # one write: CVE-2021-23214 class
            closed, got = wait_closed(s, 5)
        assert closed
        # No authentication request, ever: the injected start-up packet was not processed.
        # Accepted answers: a plaintext FATAL 08P01 (no 'S'), or 'S' and then a close.
        if got[:1] == b"S":
            assert got == b"S"
        else:
            assert got[:1] == b"E"
            err = error_fields(got[5:])
            assert (err.get("S"), err.sqlstate, err.message) == \
                ("FATAL", "08P01", "received unencrypted data after SSL request")
            assert len(got) == 1 + struct.unpack_from("!i", got, 1)[0]

    def test_gssencrequest_answered_n_then_login(self, scram_proxy, pg_roles):
        with RawConn(scram_proxy.port) as c:
            c.send(F.GSSENCRequest().encode())
            assert c.recv_exact(1) == b"N"
            got = c.startup("alice", password=pg_roles["alice"])
            assert auth_codes(got)[0] == 10
            assert data_rows(c.query("select 1")) == [["1"]]

    def test_gssenc_then_ssl_then_login(self, scram_proxy, pg_roles):
        with RawConn(scram_proxy.port) as c:
            c.send(F.GSSENCRequest().encode())
            assert c.recv_exact(1) == b"N"
            assert c.ssl_request() == b"S"
            c.wrap_tls()
            c.startup("alice", password=pg_roles["alice"])
            assert c.tls_version in ("TLSv1.2", "TLSv1.3")
            assert data_rows(c.query("select current_user")) == [["alice"]]

    def test_direct_tls_with_alpn(self, scram_proxy, pg_roles):
        with RawConn(scram_proxy.port) as c:
            c.wrap_tls(tls_context(alpn=True))  # TLS before any protocol byte
            assert c.sock.selected_alpn_protocol() == "postgresql"
            c.send(F.StartupMessage(F.PROTOCOL_3_0, {"user": "alice", "database": "postgres"}).encode())
            t, payload = first = c.read_message()
            assert t == "R" and struct.unpack_from("!i", payload)[0] == 10  # AuthenticationSASL
            assert b"SCRAM-SHA-256" in payload
            c.unread(first)
            got = c.login("alice", pg_roles["alice"])
            assert got[-1] == ("Z", b"I")
            assert data_rows(c.query("select current_user")) == [["alice"]]

    def test_libpq_direct_sslnegotiation(self, scram_proxy, pg_roles):
        if psycopg.pq.version() < 170000:
            pytest.skip("libpq < 17 has no sslnegotiation=direct")
        with psycopg.connect(scram_proxy.dsn(user="alice", password=pg_roles["alice"], sslmode="verify-full",
                                             sslnegotiation="direct"), connect_timeout=5) as conn:
            assert conn.pgconn.ssl_in_use
            assert conn.execute("select 1").fetchone() == (1,)

    def test_direct_tls_without_alpn_refused(self, scram_proxy):
        with RawConn(scram_proxy.port, timeout=5) as c:
            try:
                c.wrap_tls(tls_context(alpn=False))
            except (ssl.SSLError, OSError):
                return  # refusing in the handshake is fine too
            c.send(F.StartupMessage(F.PROTOCOL_3_0, {"user": "alice", "database": "postgres"}).encode())
            got = c.read_until_closed()
        assert all(t != "R" for t, _ in got), got
        if got:
            err = error_fields(got[0][1])
            assert got[0][0] == "E" and err.sqlstate == "08P01"
            assert "ALPN" in err.message

    @pytest.mark.parametrize("minor,options", [(2, {}), (0, {"_pq_.foo": "bar"}), (5, {"_pq_.a": "1", "_pq_.b": "2"})])
    def test_negotiate_protocol_version_same_as_postgres(self, scram_proxy, pg, pg_roles, minor, options):
        answers = []
        for port, password in ((scram_proxy.port, pg_roles["alice"]), (pg.port, None)):
            with RawConn(port) as c:
                c.send(F.StartupMessage((3 << 16) | minor,
                                        {"user": "alice", "database": "postgres", **options}).encode())
                first = c.read_message()
                answers.append(first)
                if port == scram_proxy.port:
                    got = c.login("alice", password)  # the login then proceeds normally
                    assert auth_codes(got)[-1] == 0 and got[-1][0] == "Z"
        through, direct = answers
        assert through[0] == "v"
        newest, n = struct.unpack_from("!ii", through[1])
        assert newest == (3 << 16)
        assert through[1][8:].split(b"\0")[:n] == [k.encode() for k in options]
        assert through == direct

    def test_libpq_max_protocol_3_2(self, scram_proxy, pg_roles):
        if psycopg.pq.version() < 180000:
            pytest.skip("libpq < 18 cannot ask for protocol 3.2")
        with psycopg.connect(scram_proxy.dsn(user="alice", password=pg_roles["alice"], sslmode="verify-full",
                                             max_protocol_version="3.2"), connect_timeout=5) as conn:
            assert conn.pgconn.protocol_version == 3
            assert conn.execute("select 1").fetchone() == (1,)

    def test_protocol_2_refused_same_as_postgres(self, scram_proxy, pg):
        answers = []
        for port in (scram_proxy.port, pg.port):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(F.StartupMessage(2 << 16, {"user": "alice", "database": "postgres"}).encode())
                closed, got = wait_closed(s, 5)
                assert closed and got[:1] == b"E"
                answers.append(got)
        through, direct = answers
        err = error_fields(through[5:])  # the proxy answers in v3 format
        assert (err.get("S"), err.sqlstate) == ("FATAL", "0A000")
        assert err.message == "unsupported frontend protocol 2.0: server supports 3.0 to 3.0"
        # Postgres answers a 2.0 client with a v2-format error ('E', text, NUL): same text
        assert err.message.encode() in direct


# ---------------------------------------------------------------------------------------------
# cert, trust, client_login_timeout
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cert_proxy(proxy_ini, start_proxy, pg_roles):
    return start_proxy(proxy_ini(auth_type="cert", client_tls_sslmode="require", client_tls_ca_file=CA_FILE),
                       "cert-proxy")


@pytest.fixture(scope="module")
def client_certs(tmp_path_factory, dev_certs):
    d = tmp_path_factory.mktemp("client-certs")
    return {cn: make_client_cert(d, cn, CA_FILE.parent) for cn in ("postgres", "mallory")}


class TestCert:
    def test_cn_matches_user(self, cert_proxy, client_certs):
        crt, key = client_certs["postgres"]
        with psycopg.connect(cert_proxy.dsn(user="postgres", password=None, sslmode="verify-full",
                                            sslcert=str(crt), sslkey=str(key)), connect_timeout=5) as conn:
            assert conn.execute("select current_user").fetchone() == ("postgres",)

    def test_wrong_cn_refused(self, cert_proxy, client_certs):
        crt, key = client_certs["mallory"]
        with pytest.raises(psycopg.OperationalError) as exc:
            psycopg.connect(cert_proxy.dsn(user="postgres", password=None, sslmode="verify-full",
                                           sslcert=str(crt), sslkey=str(key)), connect_timeout=5)
        assert 'FATAL:  certificate authentication failed for user "postgres"' in str(exc.value)
        with RawConn(cert_proxy.port) as c:
            assert c.ssl_request() == b"S"
            c.wrap_tls(tls_context(certfile=crt, keyfile=key))
            with pytest.raises(ServerFatal) as err:
                c.startup("postgres")
        assert (err.value.severity, err.value.sqlstate) == ("FATAL", "28000")

    def test_no_client_certificate_refused(self, cert_proxy):
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(cert_proxy.dsn(user="postgres", password=None, sslmode="verify-full"), connect_timeout=5)


@pytest.fixture(scope="module")
def trust_proxy(proxy_ini, start_proxy, pg_roles):
    return start_proxy(proxy_ini(auth_type="trust"), "trust-proxy")


class TestTrust:
    def test_no_password_asked(self, trust_proxy):
        with RawConn(trust_proxy.port) as c:
            got = c.startup("postgres")  # no password: AssertionError if one were requested
            assert auth_codes(got) == [0]
            assert data_rows(c.query("select current_user")) == [["postgres"]]

    def test_md5_secret_from_auth_query_logs_in_upstream(self, trust_proxy):
        # bob is not in the auth_file: the proxy logs in to Postgres with his md5 hash from pg_authid
        with psycopg.connect(trust_proxy.dsn(user="bob", password=None, sslmode="verify-full"),
                             connect_timeout=5) as conn:
            assert conn.execute("select current_user").fetchone() == ("bob",)


class TestClientLoginTimeout:
    def test_silent_client_disconnected(self, hardened_proxy):
        with socket.create_connection(("127.0.0.1", hardened_proxy.port), timeout=5) as s:
            start = time.monotonic()
            closed, got = wait_closed(s, 5)
            elapsed = time.monotonic() - start
        assert closed, "a client that sends nothing must be disconnected"
        assert 0.8 <= elapsed < 3.5, elapsed
        assert got == b"" or got[:1] == b"E"

    def test_client_stalled_in_authentication(self, hardened_proxy):
        with socket.create_connection(("127.0.0.1", hardened_proxy.port), timeout=5) as s:
            s.sendall(F.StartupMessage(F.PROTOCOL_3_0, {"user": "alice", "database": "postgres"}).encode())
            start = time.monotonic()
            closed, got = wait_closed(s, 5)
            elapsed = time.monotonic() - start
        assert closed
        assert 0.8 <= elapsed < 3.5, elapsed
        assert got[:1] == b"R"  # AuthenticationSASL, never answered

    def test_normal_client_unaffected(self, hardened_proxy, pg_roles):
        with psycopg.connect(hardened_proxy.dsn(user="alice", password=pg_roles["alice"], sslmode="verify-full"),
                             connect_timeout=5) as conn:
            time.sleep(1.5)  # longer than client_login_timeout, after login
            assert conn.execute("select 1").fetchone() == (1,)


def test_unknown_database_same_error_as_postgres(scram_proxy, pg, pg_roles):
    errs = []
    for port in (scram_proxy.port, pg.port):
        with RawConn(port) as c:
            with pytest.raises(ServerFatal) as exc:
                c.startup("alice", database="no_such_db", password=pg_roles["alice"])
            errs.append(exc.value)
    through, direct = errs
    assert (through.severity, through.sqlstate, through.message) == \
        ("FATAL", "3D000", 'database "no_such_db" does not exist')
    assert (through.severity, through.sqlstate, through.message) == \
        (direct.severity, direct.sqlstate, direct.message)
