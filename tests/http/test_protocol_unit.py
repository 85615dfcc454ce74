"""The /run protocol's socket-free parts (``proxy.http.protocol``) and the ``http_*`` keys."""

from __future__ import annotations

import base64

import pytest

from proxy.config import ConfigError, parse_config
from proxy.http import loopback_host
from proxy.http.protocol import (CancelRun, ProtocolError, RunScript, origin_allowed, parse_basic_auth,
                                 parse_client_message)


def b64(s: bytes) -> str:
    return base64.b64encode(s).decode()


@pytest.mark.parametrize("text,event", [
    ('{"sql": "SELECT 1"}', RunScript("SELECT 1")),
    ('{"sql": "SELECT 1", "database": "d"}', RunScript("SELECT 1", "d")),
    ('{"sql": ""}', RunScript("")),
    (b'{"sql": "SELECT \'\xc3\xa9\'"}', RunScript("SELECT 'é'")),
    ('{"cancel": true}', CancelRun()),
])
def test_client_messages(text, event):
    assert parse_client_message(text) == event


@pytest.mark.parametrize("text", ["", "nul", "1", '"s"', "[]", "{}", '{"cancel": 1}', '{"cancel": true, "sql": ""}',
                                  '{"sql": null}', '{"sql": "x", "database": 3}', '{"sql": "x", "db": "y"}',
                                  b"\xff\xfe", '{"sql": "a\\u0000b"}', "[" * 50000])
def test_bad_client_messages(text):
    with pytest.raises(ProtocolError) as e:
        parse_client_message(text)
    assert e.value.sqlstate == "08P01"


@pytest.mark.parametrize("header,expected", [
    ("Basic " + b64(b"alice:pw"), ("alice", "pw")),
    ("basic " + b64(b"alice:p:w:"), ("alice", "p:w:")),      # RFC 7617: the password may hold ':'
    ("Basic " + b64("jos\u00e9:\u00fc".encode()), ("jos\u00e9", "\u00fc")),  # charset UTF-8
    ("Basic " + b64(b"alice:"), ("alice", "")),
    (None, None), ("", None), ("Basic", None), ("Bearer x", None), ("Basic " + b64(b"alice"), None),
    ("Basic " + b64(b":pw"), None), ("Basic @@@", None), ("Basic " + b64(b"\xff:x"), None),
    ("Basic " + b64(b"a\x00:x"), None),
])
def test_basic_credentials(header, expected):
    assert parse_basic_auth(header) == expected


def test_origins():
    assert origin_allowed(None, "localhost:8432", ())
    assert origin_allowed("https://localhost:8432", "localhost:8432", ())
    assert origin_allowed("HTTPS://LOCALHOST:8432/", "localhost:8432", ())
    assert not origin_allowed("http://localhost:8432", "localhost:8432", ())
    assert not origin_allowed("https://localhost:8433", "localhost:8432", ())
    assert not origin_allowed("null", "localhost:8432", ())
    assert origin_allowed("https://ide.example", "localhost:8432", ("https://ide.example",))


def test_loopback_host():
    assert loopback_host("*") == "127.0.0.1"
    assert loopback_host("0.0.0.0, ::") == "127.0.0.1"
    assert loopback_host("::") == "::1"
    assert loopback_host("10.0.0.5,127.0.0.1") == "10.0.0.5"


BASE = "[databases]\n* = host=127.0.0.1\n[proxy]\nauth_type = {auth}\nauth_user = pgb\n"


def cfg(extra: str, auth: str = "scram-sha-256", tls: bool = True, tmp=None):
    text = BASE.format(auth=auth) + extra
    if tls:
        text += f"client_tls_cert_file = {tmp}/c.crt\nclient_tls_key_file = {tmp}/c.key\n"
    return parse_config(text)


def test_http_keys(tmp_path):
    (tmp_path / "c.crt").write_text("x")
    (tmp_path / "c.key").write_text("x")
    c = cfg("http_listen_port = 8443\nhttp_allowed_origins = https://a.example, https://b.example:444\n"
            "http_max_message_size = 2MB\nhttp_max_runs_per_user = 1\nhttp_idle_timeout = 2min\n", tmp=tmp_path)
    assert (c.http_listen_port, c.http_listen_addr, c.http_max_message_size, c.http_max_runs_per_user,
            c.http_idle_timeout) == (8443, "127.0.0.1", 2 * 1024 * 1024, 1, 120.0)
    assert c.http_allowed_origins == ("https://a.example", "https://b.example:444")
    assert parse_config(BASE.format(auth="md5")).http_listen_port is None
    with pytest.raises(ConfigError, match="^http_listen_port: the console is served over HTTPS only"):
        cfg("http_listen_port = 8443\n", tls=False)
    with pytest.raises(ConfigError, match="^http_listen_port: HTTP Basic .* auth_type must be"):
        cfg("http_listen_port = 8443\n", auth="trust", tmp=tmp_path)
    with pytest.raises(ConfigError, match="^http_listen_port: /run logs in .* verify-ca requires"):
        (tmp_path / "ca.crt").write_text("x")
        cfg(f"http_listen_port = 8443\nclient_tls_sslmode = verify-ca\nclient_tls_ca_file = {tmp_path}/ca.crt\n",
            tmp=tmp_path)
    with pytest.raises(ConfigError, match="^http_listen_port: must differ"):
        cfg("http_listen_port = 6432\n", tmp=tmp_path)
    with pytest.raises(ConfigError, match="^http_allowed_origins: must be"):
        cfg("http_allowed_origins = *\n", tmp=tmp_path)
    with pytest.raises(ConfigError, match="^http_max_message_size"):
        cfg("http_max_message_size = 1GB\n", tmp=tmp_path)
    with pytest.raises(ConfigError, match="did you mean 'http_listen_port'"):
        cfg("http_listen_prt = 1\n", tmp=tmp_path)
