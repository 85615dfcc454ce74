"""proxy.tls: protocol floor, ALPN, verification modes on both sides, reload."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from proxy.certs import ensure_dev_certs
from proxy.config import ConfigError, parse_config
from proxy.tls import ALPN_POSTGRESQL, TLSContexts, client_facing_context, server_facing_context
from tests.unit.test_certs import handshake, tls_config, verify_full_client


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    ensure_dev_certs(tmp_path)
    return tmp_path


def test_disabled_gives_none() -> None:
    cfg = parse_config("[databases]\n* = host=h\n[proxy]\nauth_type = trust\nserver_tls_sslmode = disable\n")
    assert client_facing_context(cfg) is None and server_facing_context(cfg) is None
    assert TLSContexts.build(cfg) == TLSContexts(None, None)


def test_client_facing_defaults(certs: Path) -> None:
    ctx = client_facing_context(tls_config(certs))
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.verify_mode == ssl.CERT_NONE
    assert ctx.options & ssl.OP_NO_COMPRESSION


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_tls11_refused(certs: Path) -> None:
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_NONE
    try:
        client_ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let OpenSSL's client try TLS 1.1 at all
        client_ctx.minimum_version = ssl.TLSVersion.TLSv1_1
    except (ssl.SSLError, ValueError):
        pass
    client_ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    # (the same client completes a TLS 1.1 handshake with a server that allows it, so this
    # failure is our minimum version at work, not the client's own policy)
    with pytest.raises(ssl.SSLError, match="(?i)version|protocol"):
        handshake(client_facing_context(tls_config(certs)), client_ctx, None)


def test_tls12_accepted(certs: Path) -> None:
    client_ctx = verify_full_client(certs / "ca.crt")
    client_ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    client, _ = handshake(client_facing_context(tls_config(certs)), client_ctx, "localhost")
    assert client["version"] == "TLSv1.2" and client["alpn"] == ALPN_POSTGRESQL


def test_alpn_offered_and_other_protocols_not_selected(certs: Path) -> None:
    client_ctx = verify_full_client(certs / "ca.crt")
    client, server = handshake(client_facing_context(tls_config(certs)), client_ctx, "localhost")
    assert client["alpn"] == server["alpn"] == "postgresql"
    # a client that asks for something else gets no ALPN (the server decides what to do with it)
    client_ctx.set_alpn_protocols(["http/1.1"])
    client, server = handshake(client_facing_context(tls_config(certs)), client_ctx, "localhost")
    assert client["alpn"] is None and server["alpn"] is None


def test_client_ca_makes_certs_optional_or_required(certs: Path) -> None:
    ca = str(certs / "ca.crt")
    assert client_facing_context(tls_config(certs, client_tls_ca_file=ca)).verify_mode == ssl.CERT_OPTIONAL
    assert client_facing_context(tls_config(certs, client_tls_ca_file=ca, client_tls_sslmode="verify-ca"))\
        .verify_mode == ssl.CERT_REQUIRED


def test_bad_key_named(certs: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    ensure_dev_certs(other)
    cfg = parse_config(f"[databases]\n* = host=h\n[proxy]\nauth_type = trust\nclient_tls_sslmode = require\n"
                       f"client_tls_cert_file = {certs / 'server.crt'}\nclient_tls_key_file = {other / 'server.key'}\n")
    with pytest.raises(ConfigError) as e:
        client_facing_context(cfg)
    assert e.value.key == "client_tls_cert_file"
    (tmp_path / "garbage.crt").write_text("not a pem\n")
    cfg = parse_config(f"[databases]\n* = host=h\n[proxy]\nauth_type = trust\nserver_tls_sslmode = verify-ca\n"
                       f"server_tls_ca_file = {tmp_path / 'garbage.crt'}\n")
    with pytest.raises(ConfigError) as e:
        server_facing_context(cfg)
    assert e.value.key == "server_tls_ca_file"


def server_cfg(mode: str, ca: Path | None = None):
    extra = f"server_tls_ca_file = {ca}\n" if ca else ""
    return parse_config(f"[databases]\n* = host=h\n[proxy]\nauth_type = trust\nserver_tls_sslmode = {mode}\n{extra}")


@pytest.mark.parametrize("mode", ["allow", "prefer", "require"])
def test_server_facing_encrypt_without_verify(certs: Path, tmp_path: Path, mode: str) -> None:
    ctx = server_facing_context(server_cfg(mode))
    assert ctx.verify_mode == ssl.CERT_NONE and not ctx.check_hostname
    # a certificate from an unknown CA, for the wrong name, is accepted
    client, _ = handshake(client_facing_context(tls_config(certs)), ctx, "db.example.com")
    assert client["data"] == b"ok" and client["alpn"] == "postgresql"


def test_server_facing_verify_ca_ignores_hostname(certs: Path, tmp_path: Path) -> None:
    ctx = server_facing_context(server_cfg("verify-ca", certs / "ca.crt"))
    assert ctx.verify_mode == ssl.CERT_REQUIRED and not ctx.check_hostname
    client, _ = handshake(client_facing_context(tls_config(certs)), ctx, "db.example.com")
    assert client["data"] == b"ok"
    other = tmp_path / "other"
    ensure_dev_certs(other)
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(client_facing_context(tls_config(other)), ctx, "localhost")


def test_server_facing_verify_full_checks_hostname(certs: Path) -> None:
    ctx = server_facing_context(server_cfg("verify-full", certs / "ca.crt"))
    assert ctx.check_hostname
    client, _ = handshake(client_facing_context(tls_config(certs)), ctx, "localhost")
    assert client["data"] == b"ok"
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(client_facing_context(tls_config(certs)), ctx, "db.example.com")


def test_server_facing_verify_without_ca_uses_system_store() -> None:
    ctx = server_facing_context(server_cfg("verify-full"))
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname


def test_reload_reads_files_again(certs: Path) -> None:
    cfg = tls_config(certs)
    first = TLSContexts.build(cfg)
    ca_before = (certs / "ca.crt").read_bytes()
    for name in ("ca.crt", "ca.key", "server.crt", "server.key"):
        (certs / name).unlink()
    ensure_dev_certs(certs)  # a new CA and server certificate
    assert (certs / "ca.crt").read_bytes() != ca_before
    second = TLSContexts.build(cfg)
    assert second.client is not first.client
    client, _ = handshake(second.client, verify_full_client(certs / "ca.crt"), "localhost")
    assert client["data"] == b"ok"
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(first.client, verify_full_client(certs / "ca.crt"), "localhost")
