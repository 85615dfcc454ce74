"""proxy.certs: the development CA and certificates verify the way psql's verify-full does."""

from __future__ import annotations

import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509

from proxy.certs import ensure_dev_certs, make_client_cert
from proxy.config import parse_config
from proxy.tls import client_facing_context, peer_common_name


def handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, server_hostname: str | None):
    """Run a TLS handshake over a loopback socket pair.

    Returns ``(client_ssl_info, server_ssl_info)`` dicts, or raises the client's error. The server
    side's error (if any) is returned in ``server_ssl_info['error']``.
    """
    a, b = socket.socketpair()
    a.settimeout(10)
    b.settimeout(10)
    server_info: dict = {}

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(a, server_side=True) as s:
                server_info.update(version=s.version(), alpn=s.selected_alpn_protocol(),
                                   peer_cn=peer_common_name(s))
                s.sendall(b"ok")
                s.recv(1)
        except (ssl.SSLError, OSError) as e:
            server_info["error"] = e

    t = threading.Thread(target=serve)
    t.start()
    try:
        with client_ctx.wrap_socket(b, server_hostname=server_hostname) as c:
            client_info = {"version": c.version(), "alpn": c.selected_alpn_protocol(), "data": c.recv(2)}
            c.sendall(b"x")
    finally:
        b.close()
        t.join(10)
        a.close()
    return client_info, server_info


def tls_config(directory: Path, **extra: str):
    """A Config with client TLS from the dev certificates in ``directory`` plus ``extra`` keys."""
    extra.setdefault("client_tls_sslmode", "require")
    lines = "".join(f"{k} = {v}\n" for k, v in extra.items())
    text = (f"[databases]\n* = host=127.0.0.1\n[proxy]\n"
            f"client_tls_cert_file = {directory / 'server.crt'}\n"
            f"client_tls_key_file = {directory / 'server.key'}\n{lines}")
    if "auth_type" not in extra:
        text += "auth_type = trust\n"
    return parse_config(text)


def verify_full_client(ca: Path) -> ssl.SSLContext:
    """What libpq does for sslmode=verify-full sslrootcert=ca: chain to ca, host name checked."""
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.set_alpn_protocols(["postgresql"])
    return ctx


def test_files_created_with_modes(tmp_path: Path) -> None:
    ca, crt, key = ensure_dev_certs(tmp_path / "certs")
    assert (ca, crt, key) == (tmp_path / "certs/ca.crt", tmp_path / "certs/server.crt", tmp_path / "certs/server.key")
    for p in (ca, crt, key, tmp_path / "certs/ca.key"):
        assert p.is_file()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "certs/ca.key").stat().st_mode) == 0o600


def test_server_cert_names_and_chain(tmp_path: Path) -> None:
    ca, crt, _ = ensure_dev_certs(tmp_path)
    cert = x509.load_pem_x509_certificate(crt.read_bytes())
    ca_cert = x509.load_pem_x509_certificate(ca.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}
    cert.verify_directly_issued_by(ca_cert)
    assert ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_idempotent_and_renews_foreign_server_cert(tmp_path: Path) -> None:
    ca, crt, key = ensure_dev_certs(tmp_path)
    before = (ca.read_bytes(), crt.read_bytes(), key.read_bytes())
    ensure_dev_certs(tmp_path)
    assert (ca.read_bytes(), crt.read_bytes(), key.read_bytes()) == before
    # a server cert from another CA is reissued under this one
    other = tmp_path / "other"
    _, other_crt, other_key = ensure_dev_certs(other)
    crt.write_bytes(other_crt.read_bytes())
    key.write_bytes(other_key.read_bytes())
    ensure_dev_certs(tmp_path)
    assert crt.read_bytes() not in (before[1], other_crt.read_bytes())
    assert ca.read_bytes() == before[0]


def test_half_a_ca_is_not_overwritten(tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_text("someone's CA\n")
    with pytest.raises(FileExistsError):
        ensure_dev_certs(tmp_path)


def test_ssl_module_loads_chain(tmp_path: Path) -> None:
    ca, crt, key = ensure_dev_certs(tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(crt, key)
    client = ssl.create_default_context(cafile=str(ca))
    assert client.get_ca_certs()[0]["subject"][-1][0][1] == "iasql-proxy development CA"


@pytest.mark.parametrize("hostname", ["localhost", "127.0.0.1"])
def test_verify_full_handshake(tmp_path: Path, hostname: str) -> None:
    ca, _, _ = ensure_dev_certs(tmp_path)
    client, server = handshake(client_facing_context(tls_config(tmp_path)), verify_full_client(ca), hostname)
    assert client["data"] == b"ok"
    assert client["version"] in ("TLSv1.2", "TLSv1.3")
    assert client["alpn"] == "postgresql" and server["alpn"] == "postgresql"


def test_strict_x509_verification(tmp_path: Path) -> None:
    """OpenSSL's strict RFC 5280 checks (default in Python 3.13) accept the chain."""
    ca, _, _ = ensure_dev_certs(tmp_path)
    client_ctx = verify_full_client(ca)
    client_ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    client, _ = handshake(client_facing_context(tls_config(tmp_path)), client_ctx, "localhost")
    assert client["data"] == b"ok"


def test_wrong_hostname_fails(tmp_path: Path) -> None:
    ca, _, _ = ensure_dev_certs(tmp_path)
    with pytest.raises(ssl.SSLCertVerificationError, match="match|mismatch"):
        handshake(client_facing_context(tls_config(tmp_path)), verify_full_client(ca), "db.example.com")


def test_other_ca_fails(tmp_path: Path) -> None:
    ensure_dev_certs(tmp_path / "a")
    other_ca, _, _ = ensure_dev_certs(tmp_path / "b")
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(client_facing_context(tls_config(tmp_path / "a")), verify_full_client(other_ca), "localhost")


def test_client_certificate_for_cert_auth(tmp_path: Path) -> None:
    ca, _, _ = ensure_dev_certs(tmp_path)
    crt, key = make_client_cert(tmp_path / "clients", "alice", tmp_path)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(crt.read_bytes())
    assert cert.subject.rfc4514_string() == "CN=alice"
    cfg = tls_config(tmp_path, auth_type="cert", client_tls_ca_file=str(ca))
    server_ctx = client_facing_context(cfg)
    assert server_ctx.verify_mode == ssl.CERT_REQUIRED
    client_ctx = verify_full_client(ca)
    client_ctx.load_cert_chain(crt, key)
    client, server = handshake(server_ctx, client_ctx, "localhost")
    assert client["data"] == b"ok" and server["peer_cn"] == "alice"


def test_cert_auth_without_client_cert_refused(tmp_path: Path) -> None:
    ca, _, _ = ensure_dev_certs(tmp_path)
    cfg = tls_config(tmp_path, auth_type="cert", client_tls_ca_file=str(ca))
    server_info: dict = {}
    try:
        _, server_info = handshake(client_facing_context(cfg), verify_full_client(ca), "localhost")
    except (ssl.SSLError, OSError):
        return  # TLS 1.2: refused during the handshake
    # TLS 1.3: the client finishes first; the server's refusal shows up on its side
    assert "error" in server_info


def test_client_cert_from_other_ca_refused(tmp_path: Path) -> None:
    ca, _, _ = ensure_dev_certs(tmp_path / "ours")
    crt, key = make_client_cert(tmp_path / "clients", "mallory", tmp_path / "theirs")
    cfg = tls_config(tmp_path / "ours", auth_type="cert", client_tls_ca_file=str(ca))
    client_ctx = verify_full_client(ca)
    client_ctx.load_cert_chain(crt, key)
    try:
        _, server_info = handshake(client_facing_context(cfg), client_ctx, "localhost")
    except (ssl.SSLError, OSError):
        return
    assert "error" in server_info
