"""The [servers] section and the scale-out keys of [proxy] (proxy.routing.config)."""

from __future__ import annotations

import pytest

from proxy.config import ConfigError, parse_config

BASE = "[proxy]\nauth_type = trust\n"


def test_servers_with_password_file_env_and_weights(tmp_path, monkeypatch):
    pw = tmp_path / "pg1.password"
    pw.write_text("s3cret\nignored\n")
    pw.chmod(0o600)
    monkeypatch.setenv("PG2_PW", "other")
    cfg = parse_config(f"[servers]\npg1 = host=10.0.0.5 user=admin password_file={pw}\n"
                       "pg2 = host=10.0.0.6 port=5433 user=admin password_env=PG2_PW weight=2.5 pool_size=7\n" + BASE +
                       "metadata_server = pg2\nroute_refresh_interval = 500ms\n")
    assert cfg.databases == {} and cfg.metadata_server == "pg2" and cfg.metadata_database == "iasql_metadata"
    assert cfg.route_refresh_interval == 0.5
    pg1, pg2 = cfg.servers["pg1"], cfg.servers["pg2"]
    assert (pg1.host, pg1.port, pg1.user, pg1.password, pg1.weight) == ("10.0.0.5", 5432, "admin", "s3cret", 1.0)
    assert (pg2.port, pg2.password, pg2.weight, pg2.pool_size) == (5433, "other", 2.5, 7)
    assert "s3cret" not in repr(cfg) and "other" not in repr(cfg)


def test_metadata_server_defaults_to_the_first_entry():
    cfg = parse_config("[servers]\nb = user=x\na = user=x\n" + BASE)
    assert cfg.metadata_server == "b"


@pytest.mark.parametrize("entry, key, words", [
    ("a = user=x password=y", "servers.a.password", "must not be written in the ini file"),
    ("a = host=h", "servers.a", "needs user="),
    ("a = user=x weight=0", "servers.a.weight", "must be a number > 0"),
    ("a = user=x weight=nan", "servers.a.weight", "must be a number > 0"),
    ("a = user=x port=99999", "servers.a.port", "1-65535"),
    ("a = user=x nonsense=1", "servers.a", "unknown parameter 'nonsense'"),
    ("a = user=x password_env=IASQL_TEST_SURELY_UNSET", "servers.a.password_env", "is not set"),
    ("a = user=x password_file=/nonexistent/pw", "servers.a.password_file", "cannot read"),
    ("a = user='x", "servers.a", "unterminated"),
])
def test_bad_server_entries_name_the_key(entry, key, words):
    with pytest.raises(ConfigError) as info:
        parse_config(f"[servers]\n{entry}\n" + BASE)
    assert info.value.key == key and words in str(info.value)


def test_a_password_file_readable_by_others_is_refused(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("x")
    pw.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        parse_config(f"[servers]\na = user=x password_file={pw}\n" + BASE)


def test_metadata_server_must_name_an_entry():
    with pytest.raises(ConfigError) as info:
        parse_config("[servers]\na = user=x\n" + BASE + "metadata_server = b\n")
    assert info.value.key == "metadata_server" and "known: a" in str(info.value)
    with pytest.raises(ConfigError, match="metadata_server"):
        parse_config("[databases]\n* = host=h\n" + BASE + "metadata_server = b\n")


def test_the_admin_password_may_come_from_the_auth_file(tmp_path):
    users = tmp_path / "userlist.txt"
    users.write_text('"admin" "plainpw"\n"alice" "md5' + "0" * 32 + '"\n')
    cfg = parse_config(f"[servers]\na = user=admin\nb = user=alice\n[proxy]\nauth_type = trust\nauth_file = {users}\n")
    assert cfg.servers["a"].password == "plainpw" and cfg.servers["b"].password is None


def test_without_servers_nothing_changes():
    cfg = parse_config("[databases]\n* = host=h\n" + BASE)
    assert cfg.servers == {} and cfg.metadata_server is None
    with pytest.raises(ConfigError, match=r"\[databases\]"):
        parse_config(BASE)
