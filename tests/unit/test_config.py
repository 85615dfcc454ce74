"""proxy.config: every key with its units, every bad value named, userlist.txt parsing."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from proxy.config import (
    DEFAULT_AUTH_QUERY,
    Config,
    ConfigError,
    DatabaseTarget,
    EngineConfig,
    load_auth_file,
    load_config,
    parse_config,
    parse_conninfo,
    secret_kind,
)

SCRAM = ("SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0$"
         "W+KVyCB0sBMT0cYVuNJR6b7vkBTgE2QtjeVdZBZSFRs=:"
         "XaoUFtpTX4Ui/2xVZ0v7hhC4nfkNXn4JLfr4MBAAKv8=")


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """A directory with the files the TLS/auth keys point to (contents are not read by the parser)."""
    for name in ("server.crt", "server.key", "ca.crt", "userlist.txt", "pg-ca.crt"):
        (tmp_path / name).write_text("x\n" if name != "userlist.txt" else '"u" "p"\n')
    return tmp_path


MINIMAL = "[databases]\n* = host=127.0.0.1\n[proxy]\nauth_type = trust\n"


def cfg_with(proxy_lines: str, base_dir: Path | None = None, databases: str = "* = host=127.0.0.1") -> Config:
    return parse_config(f"[databases]\n{databases}\n[proxy]\n{proxy_lines}\n", base_dir=base_dir)


def test_defaults() -> None:
    cfg = parse_config(MINIMAL)
    assert cfg.listen_addr == "127.0.0.1" and cfg.listen_port == 6432
    assert cfg.auth_type == "trust" and cfg.auth_query == DEFAULT_AUTH_QUERY
    assert cfg.client_tls_sslmode == "disable" and cfg.server_tls_sslmode == "prefer"
    assert cfg.pool_mode == "session" and cfg.default_pool_size == 20 and cfg.max_client_conn == 100
    assert cfg.server_reset_query == "DISCARD ALL"
    assert (cfg.query_wait_timeout, cfg.client_login_timeout) == (120.0, 60.0)
    assert (cfg.server_lifetime, cfg.server_idle_timeout) == (3600.0, 600.0)
    assert cfg.max_packet_size == 64 * 1024 * 1024  # 64 MiB: a Query or Parse is held whole
    assert cfg.engine == EngineConfig()
    assert cfg.config_file is None and not cfg.client_tls_required


def test_every_key(files: Path) -> None:
    text = f"""
    ; a comment
    # another
    [databases]
    app = host=db.internal port=5433 dbname=app_prod user=app password='s3 cr\\'et' pool_size=5 pool_mode=transaction
    * = port=5432

    [proxy]
    listen_addr = 0.0.0.0
    listen_port = 7432
    auth_type = scram-sha-256
    auth_file = userlist.txt
    auth_query = SELECT usename, passwd FROM pg_shadow WHERE usename = $1
    auth_user = pgbouncer
    client_tls_sslmode = verify-full
    client_tls_cert_file = server.crt
    client_tls_key_file = server.key
    client_tls_ca_file = {files / 'ca.crt'}
    server_tls_sslmode = verify-ca
    server_tls_ca_file = pg-ca.crt
    pool_mode = statement
    default_pool_size = 7
    min_pool_size = 2
    reserve_pool_size = 3
    max_client_conn = 500
    server_reset_query =
    server_lifetime = 1h
    server_idle_timeout = 90
    query_wait_timeout = 2.5
    client_login_timeout = 1500ms
    max_packet_size = 64kB
    record_dir = traces
    metrics_port = 9187
    admin_users = admin, root
    stats_users = stats

    [engine]
    aws_endpoint_url = http://127.0.0.1:5000
    lock_wait_timeout = 1min
    aws_max_workers = 8
    enabled = off
    """
    path = files / "proxy.ini"
    path.write_text(textwrap.dedent(text))
    cfg = load_config(path)
    assert cfg.config_file == path
    assert cfg.databases["app"] == DatabaseTarget(
        name="app", host="db.internal", port=5433, dbname="app_prod", user="app", password="s3 cr'et",
        pool_size=5, pool_mode="transaction")
    assert cfg.databases["*"] == DatabaseTarget(name="*")
    assert (cfg.listen_addr, cfg.listen_port) == ("0.0.0.0", 7432)
    assert cfg.auth_type == "scram-sha-256"
    assert cfg.auth_file == files / "userlist.txt"
    assert cfg.auth_query == "SELECT usename, passwd FROM pg_shadow WHERE usename = $1"
    assert cfg.auth_user == "pgbouncer"
    assert cfg.client_tls_sslmode == "verify-full" and cfg.client_tls_required
    assert cfg.client_tls_cert_file == files / "server.crt"
    assert cfg.client_tls_key_file == files / "server.key"
    assert cfg.client_tls_ca_file == files / "ca.crt"
    assert cfg.server_tls_sslmode == "verify-ca" and cfg.server_tls_ca_file == files / "pg-ca.crt"
    assert cfg.pool_mode == "statement"
    assert (cfg.default_pool_size, cfg.min_pool_size, cfg.reserve_pool_size) == (7, 2, 3)
    assert cfg.max_client_conn == 500
    assert cfg.server_reset_query == ""
    assert cfg.server_lifetime == 3600.0 and cfg.server_idle_timeout == 90.0
    assert cfg.query_wait_timeout == 2.5 and cfg.client_login_timeout == pytest.approx(1.5)
    assert cfg.max_packet_size == 65536
    assert cfg.record_dir == files / "traces"
    assert cfg.metrics_port == 9187
    assert cfg.admin_users == ("admin", "root") and cfg.stats_users == ("stats",)
    assert cfg.engine == EngineConfig(aws_endpoint_url="http://127.0.0.1:5000", lock_wait_timeout=60.0,
                                      aws_max_workers=8, enabled=False)


def test_listen_port_zero_means_any_free_port() -> None:
    assert cfg_with("auth_type = trust\nlisten_port = 0").listen_port == 0


def test_pgbouncer_section_alias_and_case_insensitive_keys() -> None:
    cfg = parse_config("[databases]\n* = host=h\n[pgbouncer]\nLISTEN_PORT = 1234\nauth_type = TRUST\n")
    assert cfg.listen_port == 1234 and cfg.auth_type == "trust"


def test_both_sections_rejected() -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(MINIMAL + "[pgbouncer]\nlisten_port = 1\n")
    assert "[pgbouncer]" in str(e.value)


@pytest.mark.parametrize("value,seconds", [
    ("0", 0.0), ("15", 15.0), ("2.5", 2.5), ("250ms", 0.25), ("3s", 3.0), ("2min", 120.0), ("1h", 3600.0),
    ("1d", 86400.0), ("1 s", 1.0),
])
def test_duration_units(value: str, seconds: float) -> None:
    assert cfg_with(f"auth_type = trust\nquery_wait_timeout = {value}").query_wait_timeout == pytest.approx(seconds)


@pytest.mark.parametrize("value,size", [("1024", 1024), ("1kB", 1024), ("16MB", 16 << 20), ("1GB", 1 << 30),
                                        ("2147483647", 2147483647)])
def test_size_units(value: str, size: int) -> None:
    assert cfg_with(f"auth_type = trust\nmax_packet_size = {value}").max_packet_size == size


BAD_VALUES = [
    ("listen_port", "abc", "listen_port: must be an integer 0-65535, got 'abc'"),
    ("listen_port", "-1", "listen_port"),
    ("listen_port", "65536", "listen_port"),
    ("listen_addr", "", "listen_addr"),
    ("auth_type", "password", "auth_type"),
    ("auth_type", "hba", "auth_type"),
    ("auth_type", "any", "auth_type"),
    ("client_tls_sslmode", "on", "client_tls_sslmode"),
    ("server_tls_sslmode", "verify", "server_tls_sslmode"),
    ("pool_mode", "txn", "pool_mode"),
    ("default_pool_size", "0", "default_pool_size"),
    ("default_pool_size", "1.5", "default_pool_size"),
    ("min_pool_size", "-1", "min_pool_size"),
    ("min_pool_size", "50", "min_pool_size"),  # > default_pool_size
    ("reserve_pool_size", "x", "reserve_pool_size"),
    ("max_client_conn", "0", "max_client_conn"),
    ("server_lifetime", "-1", "server_lifetime"),
    ("server_idle_timeout", "5 parsecs", "server_idle_timeout"),
    ("query_wait_timeout", "soon", "query_wait_timeout"),
    ("client_login_timeout", "1y", "client_login_timeout"),
    ("max_packet_size", "100", "max_packet_size"),
    ("max_packet_size", "4GB", "max_packet_size"),
    ("max_packet_size", "1.5MB", "max_packet_size"),
    ("metrics_port", "http", "metrics_port"),
    ("metrics_port", "6432", "metrics_port"),  # same as listen_port
    ("auth_query", "", "auth_query"),
    ("admin_users", "a b, c", "admin_users"),
    ("auth_file", "does-not-exist.txt", "auth_file"),
    ("client_tls_ca_file", "nope.crt", "client_tls_ca_file"),
    ("server_tls_ca_file", "nope.crt", "server_tls_ca_file"),
]


@pytest.mark.parametrize("key,value,expected", BAD_VALUES)
def test_bad_value_names_key(key: str, value: str, expected: str, files: Path) -> None:
    text = "auth_type = trust\n" if key != "auth_type" else ""
    with pytest.raises(ConfigError) as e:
        cfg_with(f"{text}{key} = {value}", base_dir=files)
    assert str(e.value).startswith(expected)
    assert e.value.key == key


@pytest.mark.parametrize("proxy_lines,key", [
    # cert without key, and key without cert
    ("auth_type = trust\nclient_tls_cert_file = server.crt", "client_tls_key_file"),
    ("auth_type = trust\nclient_tls_key_file = server.key", "client_tls_cert_file"),
    # any client TLS mode needs a certificate
    ("auth_type = trust\nclient_tls_sslmode = require", "client_tls_sslmode"),
    ("auth_type = trust\nclient_tls_sslmode = prefer", "client_tls_sslmode"),
    # verify-* on the client side need a CA for client certificates
    ("auth_type = trust\nclient_tls_sslmode = verify-ca\nclient_tls_cert_file = server.crt\n"
     "client_tls_key_file = server.key", "client_tls_sslmode"),
    # plain needs TLS required
    ("auth_type = plain\nauth_file = userlist.txt\nclient_tls_sslmode = prefer\n"
     "client_tls_cert_file = server.crt\nclient_tls_key_file = server.key", "auth_type"),
    ("auth_type = plain\nauth_file = userlist.txt", "auth_type"),
    # cert needs a CA, and TLS required
    ("auth_type = cert\nclient_tls_sslmode = require\nclient_tls_cert_file = server.crt\n"
     "client_tls_key_file = server.key", "auth_type"),
    ("auth_type = cert\nclient_tls_sslmode = prefer\nclient_tls_cert_file = server.crt\n"
     "client_tls_key_file = server.key\nclient_tls_ca_file = ca.crt", "auth_type"),
    # password auth without any source of secrets
    ("auth_type = md5", "auth_type"),
    ("auth_type = scram-sha-256", "auth_type"),
])
def test_inconsistent_combinations(proxy_lines: str, key: str, files: Path) -> None:
    with pytest.raises(ConfigError) as e:
        cfg_with(proxy_lines, base_dir=files)
    assert e.value.key == key and str(e.value).startswith(key + ":")


def test_consistent_tls_combinations(files: Path) -> None:
    tls = "client_tls_cert_file = server.crt\nclient_tls_key_file = server.key\n"
    cfg = cfg_with(f"auth_type = plain\nauth_file = userlist.txt\nclient_tls_sslmode = require\n{tls}", files)
    assert cfg.auth_type == "plain" and cfg.client_tls_required
    cfg = cfg_with(f"auth_type = cert\nclient_tls_sslmode = verify-full\nclient_tls_ca_file = ca.crt\n{tls}", files)
    assert cfg.auth_type == "cert"
    cfg = cfg_with("auth_type = scram-sha-256\nauth_user = postgres", files)
    assert cfg.auth_user == "postgres"


@pytest.mark.parametrize("line,suggestion", [
    ("listen_prot = 1", "listen_port"),
    ("client_tls_ssl_mode = require", "client_tls_sslmode"),
    ("default_poolsize = 3", "default_pool_size"),
])
def test_unknown_key_suggests_closest(line: str, suggestion: str) -> None:
    with pytest.raises(ConfigError) as e:
        cfg_with(f"auth_type = trust\n{line}")
    assert e.value.key == line.split()[0]
    assert f"did you mean {suggestion!r}" in str(e.value)


def test_unknown_key_without_close_match() -> None:
    with pytest.raises(ConfigError) as e:
        cfg_with("auth_type = trust\nfrobnicate = 1")
    assert e.value.key == "frobnicate" and "did you mean" not in str(e.value)


def test_unknown_section_and_engine_key() -> None:
    with pytest.raises(ConfigError, match=r"\[databses\].*did you mean 'databases'"):
        parse_config(MINIMAL + "[databses]\nx = host=y\n")
    with pytest.raises(ConfigError) as e:
        parse_config(MINIMAL + "[engine]\nenable = yes\n")
    assert e.value.key == "engine.enable" and "'enabled'" in str(e.value)
    with pytest.raises(ConfigError) as e:
        parse_config(MINIMAL + "[engine]\nenabled = maybe\n")
    assert e.value.key == "engine.enabled"
    for bad in ("0", "257", "many"):
        with pytest.raises(ConfigError) as e:
            parse_config(MINIMAL + f"[engine]\naws_max_workers = {bad}\n")
        assert e.value.key == "engine.aws_max_workers"
    assert parse_config(MINIMAL).engine.aws_max_workers == 16


def test_duplicate_key_and_syntax_errors() -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(MINIMAL + "listen_port = 1\nlisten_port = 2\n")
    assert e.value.key == "listen_port"
    with pytest.raises(ConfigError):
        parse_config("listen_port = 1\n")
    with pytest.raises(ConfigError):
        parse_config(MINIMAL + "this line has no equals sign\n")


@pytest.mark.parametrize("entry,key", [
    ("app = host=h port=x", "databases.app.port"),
    ("app = host=h port=70000", "databases.app.port"),
    ("app = host=h pool_size=0", "databases.app.pool_size"),
    ("app = host=h pool_mode=sometimes", "databases.app.pool_mode"),
    ("app = hots=h", "databases.app"),
    ("app = host=h host=i", "databases.app"),
    ("app = host", "databases.app"),
    ("app = password='unterminated", "databases.app"),
    ("app = host=", "databases.app.host"),
])
def test_bad_database_entries(entry: str, key: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(f"[databases]\n{entry}\n[proxy]\nauth_type = trust\n")
    assert e.value.key == key and str(e.value).startswith(key + ":")


def test_database_unknown_parameter_suggestion() -> None:
    with pytest.raises(ConfigError, match="did you mean 'host'"):
        parse_config("[databases]\napp = hots=h\n[proxy]\nauth_type = trust\n")


def test_no_databases_rejected() -> None:
    with pytest.raises(ConfigError) as e:
        parse_config("[proxy]\nauth_type = trust\n")
    assert e.value.key == "[databases]"


def test_target_for_exact_then_fallback() -> None:
    cfg = parse_config("[databases]\nApp = host=a\n* = host=b\n[proxy]\nauth_type = trust\n")
    assert cfg.target_for("App").host == "a"
    assert cfg.target_for("app").host == "b"  # database names are case-sensitive
    assert cfg.target_for("other").name == "*"
    no_fallback = parse_config("[databases]\napp = host=a\n[proxy]\nauth_type = trust\n")
    assert no_fallback.target_for("other") is None


def test_conninfo_quoting() -> None:
    assert parse_conninfo("k", "a=1  b = 2 c='x y' d='it\\'s' e=back\\\\slash f=''") == {
        "a": "1", "b": "2", "c": "x y", "d": "it's", "e": "back\\slash", "f": ""}


def test_relative_paths(files: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sub = files / "conf"
    sub.mkdir()
    (sub / "users.txt").write_text('"a" "b"\n')
    path = sub / "p.ini"
    path.write_text(MINIMAL.replace("trust", "md5") + "auth_file = users.txt\nrecord_dir = ../rec\n"
                    f"client_tls_ca_file = {files / 'ca.crt'}\n")
    monkeypatch.chdir(tmp_path.parent)  # the cwd must not matter
    cfg = load_config(path)
    assert cfg.auth_file == sub / "users.txt"
    assert cfg.record_dir == sub / ".." / "rec"
    assert cfg.client_tls_ca_file == files / "ca.crt"
    # parse_config without base_dir resolves against the cwd
    monkeypatch.chdir(sub)
    assert parse_config(MINIMAL.replace("trust", "md5") + "auth_file = users.txt\n").auth_file == \
        Path.cwd() / "users.txt"


def test_load_config_unreadable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path / "missing.ini")
    assert e.value.key == "config_file"


def test_config_is_frozen() -> None:
    cfg = parse_config(MINIMAL)
    with pytest.raises(AttributeError):
        cfg.listen_port = 1  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------
# auth_file
# ---------------------------------------------------------------------------------------------

def test_auth_file(tmp_path: Path) -> None:
    path = tmp_path / "userlist.txt"
    path.write_text(textwrap.dedent(f"""\
        ; PgBouncer-style comment
        # hash comment

        "alice" "plain password"
        "bob" "md5{'0' * 32}"
        "carol" "{SCRAM}"
        "we""ird" "pa""ss"  "ignored extra field"
          "spaced"   "x"
        "alice" "second wins"
        "empty" ""
        """))
    users = load_auth_file(path)
    assert users == {
        "alice": "second wins",
        "bob": "md5" + "0" * 32,
        "carol": SCRAM,
        'we"ird': 'pa"ss',
        "spaced": "x",
        "empty": "",
    }


@pytest.mark.parametrize("line", [
    'alice "x"',                       # unquoted user
    '"alice"',                         # no secret
    '"alice" "x',                      # unterminated
    '"" "x"',                          # empty user
    '"alice" "SCRAM-SHA-256$4096:salt$short"',  # malformed SCRAM
    '"alice" "SCRAM-SHA-256$4096:c2FsdA==$YQ==:YQ=="',  # keys not 32 bytes
])
def test_auth_file_bad_lines(line: str, tmp_path: Path) -> None:
    path = tmp_path / "userlist.txt"
    path.write_text('"ok" "fine"\n' + line + "\n")
    with pytest.raises(ConfigError) as e:
        load_auth_file(path)
    assert e.value.key == "auth_file" and f"{path}:2:" in str(e.value)


def test_secret_kind() -> None:
    assert secret_kind(SCRAM) == "scram-sha-256"
    assert secret_kind("md5" + "a" * 32) == "md5"
    assert secret_kind("md5short") == "plain"
    assert secret_kind("hunter2") == "plain"


def test_scram_secret_from_postgres_format() -> None:
    """A verifier made by scramp (as Postgres makes them) is accepted."""
    scramp = pytest.importorskip("scramp")
    salt, stored, server, iters = scramp.ScramMechanism("SCRAM-SHA-256").make_auth_info("pw", iteration_count=4096)
    import base64
    secret = (f"SCRAM-SHA-256${iters}:{base64.b64encode(salt).decode()}$"
              f"{base64.b64encode(stored).decode()}:{base64.b64encode(server).decode()}")
    assert secret_kind(secret) == "scram-sha-256"


# ---------------------------------------------------------------------------------------------
# the shipped example and the command line
# ---------------------------------------------------------------------------------------------

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_example_config_loads(tmp_path: Path) -> None:
    """examples/iasql-proxy.ini is valid once the certificates it points to exist."""
    from proxy.certs import ensure_dev_certs

    (tmp_path / "examples").mkdir()
    for name in ("iasql-proxy.ini", "userlist.txt"):
        (tmp_path / "examples" / name).write_text((EXAMPLES / name).read_text())
    ensure_dev_certs(tmp_path / "certs")
    cfg = load_config(tmp_path / "examples" / "iasql-proxy.ini")
    assert cfg.client_tls_cert_file == tmp_path / "examples" / ".." / "certs" / "server.crt"
    assert cfg.target_for("iasql").dbname == "iasql" and cfg.target_for("other").name == "*"
    users = load_auth_file(cfg.auth_file)
    assert secret_kind(users["iasql"]) == "scram-sha-256"
    # the documented password matches the example verifier
    scramp = pytest.importorskip("scramp")
    import base64
    head, keys = users["iasql"].split("$", 1)[1].split("$")
    iters, salt = head.split(":")
    _, stored, server, _ = scramp.ScramMechanism("SCRAM-SHA-256").make_auth_info(
        "example", iteration_count=int(iters), salt=base64.b64decode(salt))
    assert keys == f"{base64.b64encode(stored).decode()}:{base64.b64encode(server).decode()}"


def test_cli_configuration_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from proxy.cli import main

    path = tmp_path / "bad.ini"
    path.write_text("[databases]\n* = host=h\n[proxy]\nauth_type = trust\nlisten_port = abc\n")
    assert main(["--config", str(path)]) == 2
    assert capsys.readouterr().err.strip() == \
        "iasql-proxy: configuration error: listen_port: must be an integer 0-65535, got 'abc'"
    assert main(["run", "--config", str(tmp_path / "missing.ini")]) == 2
    assert "configuration error: config_file: cannot read" in capsys.readouterr().err
    assert main([]) == 2
    assert "--config FILE is required" in capsys.readouterr().err
    assert main(["run"]) == 2
    assert "--config FILE is required" in capsys.readouterr().err
    assert main(["--config", str(path), "run"]) == 2  # the option before the command counts too
    assert "listen_port: must be an integer" in capsys.readouterr().err


def test_cli_certificate_error_is_a_configuration_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from proxy.cli import main

    (tmp_path / "c.crt").write_text("not a certificate\n")
    (tmp_path / "c.key").write_text("not a key\n")
    path = tmp_path / "p.ini"
    path.write_text("[databases]\n* = host=h\n[proxy]\nauth_type = trust\nclient_tls_sslmode = require\n"
                    "client_tls_cert_file = c.crt\nclient_tls_key_file = c.key\n")
    assert main(["--config", str(path)]) == 2
    assert "configuration error: client_tls_cert_file: cannot load" in capsys.readouterr().err


def test_cli_certs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from proxy.cli import main

    assert main(["certs", "--dir", str(tmp_path / "c")]) == 0
    assert {p.name for p in (tmp_path / "c").iterdir()} == {"ca.crt", "ca.key", "server.crt", "server.key"}
    assert str(tmp_path / "c" / "ca.crt") in capsys.readouterr().out


def test_cli_init_db_without_engine_or_stack(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from proxy.cli import main

    status = main(["init-db", "mydb", "--state-dir", str(tmp_path / "none")])
    err = capsys.readouterr().err
    # either the engine is not there yet (1), or there is no dev stack to run it against (2)
    assert (status == 1 and "needs the IaSQL engine" in err) or (status == 2 and "no running dev stack" in err)
