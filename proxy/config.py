"""The proxy's configuration: an ini file with PgBouncer's section and key names.

Read with :mod:`configparser`. Key names, defaults and units follow PgBouncer's configuration
reference (https://www.pgbouncer.org/config.html) wherever PgBouncer has the key; the proxy's own
keys (``record_dir``, ``metrics_port``, the ``[engine]`` section) are marked "ours" below. Every
value is checked when the file is loaded; a bad value, an unknown key or an inconsistent
combination raises :class:`ConfigError`, whose message starts with the key's name, so the proxy
refuses to start instead of failing on the first client.

Sections
--------
``[databases]``
    ``name = host=... port=... dbname=... user=... password=... pool_size=... pool_mode=...``
    (libpq key=value syntax; values may be single-quoted, ``\\'`` and ``\\\\`` escape inside quotes).
    ``*`` is the fallback entry for database names that have no entry of their own. Names are
    case-sensitive, as Postgres database names are.
``[proxy]`` (``[pgbouncer]`` is accepted as an alias; not both)
    The keys in the table below. Key names are case-insensitive.
``[engine]`` (ours)
    ``aws_endpoint_url`` (string; empty = boto3's default), ``lock_wait_timeout`` (seconds,
    default 30), ``aws_max_workers`` (integer 1-256, default 16), ``enabled`` (boolean, default
    true). ``engine_user`` and ``engine_password`` are
    deprecated and ignored (a warning is logged at start): ``iasql_*`` calls run as the calling
    user, on the caller's own server connection.

``[servers]`` (ours; scale out, issue 19)
    ``name = host=... port=... user=<admin role> password_file=... | password_env=... dbname=...
    weight=... pool_size=... pool_mode=...``: the Postgres servers ``iasql_connect`` places
    databases on, and the admin role the proxy uses there. Parsed and documented in
    :mod:`proxy.routing.config` (an inline ``password`` is refused). With ``[servers]``,
    ``[databases]`` may be empty: the routing table of the metadata database comes first, then
    ``[databases]`` (``proxy.routing.fleet``).

``[proxy]`` keys
----------------
=========================  ==========  ===================  =========================================
key                        unit        default              notes
=========================  ==========  ===================  =========================================
listen_addr                address     127.0.0.1            ``*`` = all addresses; comma-separated list
listen_port                port        6432                 0-65535 (0 = any free port)
workers                    count       1                    1-255; processes sharing listen_port (proxy.workers)
auth_type                  enum        scram-sha-256        trust | md5 | scram-sha-256 | plain | cert
auth_file                  path        (none)               PgBouncer userlist.txt format
auth_query                 SQL         pg_authid lookup     ``$1`` = user name; run as ``auth_user``
auth_user                  role        (none)               role that runs ``auth_query`` upstream
client_tls_sslmode         enum        disable              disable|allow|prefer|require|verify-ca|verify-full
client_tls_cert_file       path        (none)               PEM certificate chain shown to clients
client_tls_key_file        path        (none)               PEM private key of that certificate
client_tls_ca_file         path        (none)               PEM CAs that sign client certificates
server_tls_sslmode         enum        prefer               disable|allow|prefer|require|verify-ca|verify-full
server_tls_ca_file         path        (none)               PEM CAs for the server; none = system CAs
pool_mode                  enum        session              session | transaction | statement
default_pool_size          count       20                   server connections per (database, user)
min_pool_size              count       0                    at most default_pool_size
reserve_pool_size          count       0
max_client_conn            count       100
server_reset_query         SQL         DISCARD ALL          empty = none
server_lifetime            seconds     3600                 0 = unlimited
server_idle_timeout        seconds     600                  0 = unlimited
query_wait_timeout         seconds     120                  0 = wait forever
query_timeout              seconds     0                    0 = off; a longer query: FATAL "query timeout"
idle_transaction_timeout   seconds     0                    0 = off; FATAL "idle transaction timeout"
client_idle_timeout        seconds     0                    0 = off; FATAL "client_idle_timeout"
server_connect_timeout     seconds     15                   connect + login to the server
server_login_retry         seconds     15                   after a failed connect, new clients fail at once
cancel_wait_timeout        seconds     10                   0 = no limit; forwarding a CancelRequest
client_login_timeout       seconds     60                   0 = no limit
max_packet_size            bytes       67108864 (64 MiB)    1024 .. 2147483647; PgBouncer's default is 2147483647
record_dir                 path        (none)               ours: where session traces go
metrics_port               port        (none)               ours: Prometheus endpoint
admin_users                list        (empty)              comma-separated role names
stats_users                list        (empty)              comma-separated role names
admin_database             name        iasql_proxy          ours: the admin console's virtual database
metadata_server            name        first [servers]      ours: the [servers] entry holding the metadata database
metadata_database          name        iasql_metadata       ours: the metadata database's name
route_refresh_interval     seconds     10                   ours: the routing table is re-read at least this often
metrics_addr               address     127.0.0.1            ours: where the Prometheus endpoint listens
shutdown_timeout           seconds     30                   ours: SIGTERM waits this long for statements
log_connections            boolean     1                    log each successful login (event=session_start)
log_disconnections         boolean     1                    log each session end (event=session_end)
http_listen_addr           address     127.0.0.1            ours: where the HTTPS console and /run listen
http_listen_port           port        (none)               ours: HTTPS console + WebSocket /run; none = off; 0 = any
http_allowed_origins       list        (empty)              ours: browser Origins allowed besides the endpoint's own
http_max_message_size      bytes       1048576 (1 MiB)      ours: largest WebSocket message accepted (1024 .. 64 MiB)
http_max_runs_per_user     count       4                    ours: scripts running at once per user over /run
http_idle_timeout          seconds     300                  ours: a WebSocket with no run and no message is closed; 0 = off
=========================  ==========  ===================  =========================================

Durations are numbers of seconds (fractions allowed) and may carry a unit suffix ``ms``, ``s``,
``min``, ``h`` or ``d``. Sizes are numbers of bytes and may carry ``kB``, ``MB`` or ``GB``
(1024-based, as Postgres's own settings). Relative file paths are resolved against the directory of
the config file (the current directory for :func:`parse_config` without ``base_dir``).

Differences from PgBouncer: ``auth_type`` ``hba``, ``pam`` and ``any`` are not supported and are
rejected; a ``[databases]`` entry without ``host`` means 127.0.0.1 (not the Unix socket); the
client side's ``allow``/``prefer`` need a certificate, as the other TLS modes do.
"""

from __future__ import annotations

import base64
import binascii
import configparser
import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


class ConfigError(ValueError):
    """A configuration value is missing, malformed, out of range or inconsistent with another.

    ``key`` is the offending key (``listen_port``, ``databases.mydb``, ``engine.enabled``,
    ``auth_file``); the message starts with it, e.g.
    ``listen_port: must be an integer 1-65535, got 'abc'``.
    """

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"{key}: {message}")


AUTH_TYPES = ("trust", "md5", "scram-sha-256", "plain", "cert")
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
#: Client-side modes under which a client that does not use TLS is refused.
TLS_REQUIRED_MODES = ("require", "verify-ca", "verify-full")
POOL_MODES = ("session", "transaction", "statement")

DEFAULT_AUTH_QUERY = (
    "SELECT rolname, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END "
    "FROM pg_authid WHERE rolname = $1"
)
#: Largest protocol message PgBouncer accepts by default, and the largest the v3 length field allows.
MAX_PACKET_SIZE_LIMIT = 2147483647
#: Default max_packet_size: 64 MiB. PgBouncer's default is the limit (2147483647) because it never
#: holds a message whole (it streams every packet through a ``pkt_buf``-sized buffer); this proxy
#: holds a Query or Parse whole to look for ``iasql_`` and session-state keywords, so the default
#: bounds what one client's message can make it hold.
DEFAULT_MAX_PACKET_SIZE = 64 * 1024 * 1024
#: Most worker processes (``workers``): a cancel key's low byte names its worker (proxy.workers).
MAX_WORKERS = 255
#: Smallest max_packet_size we accept: below this even a StartupMessage may not fit.
MIN_PACKET_SIZE = 1024
#: Default http_max_message_size: 1 MiB, room for a long script yet a bound on what one WebSocket
#: message (held whole and decoded as JSON) makes the proxy hold; at most 64 MiB, as max_packet_size.
DEFAULT_HTTP_MAX_MESSAGE_SIZE = 1024 * 1024
MAX_HTTP_MESSAGE_SIZE = 64 * 1024 * 1024


@dataclass(frozen=True)
class DatabaseTarget:
    """Where one ``[databases]`` entry sends its clients.

    ``name`` is the entry's key (``*`` = fallback). ``dbname``/``user`` None mean "the name the
    client asked for"; ``password`` None means the password comes from authentication (the SCRAM
    client key recovered from the client's proof, or the ``auth_file`` secret). ``pool_size`` and
    ``pool_mode`` None mean the ``[proxy]`` defaults.
    """

    name: str
    host: str = "127.0.0.1"
    port: int = 5432
    dbname: str | None = None
    user: str | None = None
    password: str | None = None
    pool_size: int | None = None
    pool_mode: str | None = None


@dataclass(frozen=True)
class EngineConfig:
    """The ``[engine]`` section (ours): where the IaSQL engine sends AWS calls and how it locks.

    ``aws_endpoint_url`` None = boto3's default endpoints (or ``AWS_ENDPOINT_URL``);
    ``lock_wait_timeout`` in seconds; ``aws_max_workers``: AWS calls the engine runs at once (its
    boto3 thread pool, and each client's connection pool); ``enabled`` False = ``iasql_*`` calls are passed to Postgres;
    ``deprecated_keys``: keys given that are no longer used (``engine_user``, ``engine_password``:
    calls run as the caller), logged as a warning at start.
    """

    aws_endpoint_url: str | None = None
    lock_wait_timeout: float = 30.0
    aws_max_workers: int = 16
    enabled: bool = True
    deprecated_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class Config:
    """The whole, validated configuration. Units and defaults: see the module docstring."""

    databases: dict[str, DatabaseTarget]
    listen_addr: str = "127.0.0.1"
    listen_port: int = 6432
    workers: int = 1
    auth_type: str = "scram-sha-256"
    auth_file: Path | None = None
    auth_query: str = DEFAULT_AUTH_QUERY
    auth_user: str | None = None
    client_tls_sslmode: str = "disable"
    client_tls_cert_file: Path | None = None
    client_tls_key_file: Path | None = None
    client_tls_ca_file: Path | None = None
    server_tls_sslmode: str = "prefer"
    server_tls_ca_file: Path | None = None
    pool_mode: str = "session"
    default_pool_size: int = 20
    min_pool_size: int = 0
    reserve_pool_size: int = 0
    max_client_conn: int = 100
    server_reset_query: str = "DISCARD ALL"
    server_lifetime: float = 3600.0
    server_idle_timeout: float = 600.0
    query_wait_timeout: float = 120.0
    query_timeout: float = 0.0
    idle_transaction_timeout: float = 0.0
    client_idle_timeout: float = 0.0
    server_connect_timeout: float = 15.0
    server_login_retry: float = 15.0
    cancel_wait_timeout: float = 10.0
    client_login_timeout: float = 60.0
    max_packet_size: int = DEFAULT_MAX_PACKET_SIZE
    record_dir: Path | None = None
    metrics_port: int | None = None
    admin_users: tuple[str, ...] = ()
    stats_users: tuple[str, ...] = ()
    admin_database: str = "iasql_proxy"
    metrics_addr: str = "127.0.0.1"
    shutdown_timeout: float = 30.0
    log_connections: bool = True
    log_disconnections: bool = True
    http_listen_addr: str = "127.0.0.1"
    http_listen_port: int | None = None
    http_allowed_origins: tuple[str, ...] = ()
    http_max_message_size: int = DEFAULT_HTTP_MAX_MESSAGE_SIZE
    http_max_runs_per_user: int = 4
    http_idle_timeout: float = 300.0
    engine: EngineConfig = field(default_factory=EngineConfig)
    config_file: Path | None = None
    # -- scale out (issue 19; proxy.routing): [servers], the metadata database, route refresh --
    servers: dict = field(default_factory=dict)  # name -> proxy.routing.config.ServerEntry
    metadata_server: str | None = None
    metadata_database: str = "iasql_metadata"
    route_refresh_interval: float = 10.0

    def target_for(self, dbname: str) -> DatabaseTarget | None:
        """The entry for database ``dbname``: its own entry, else ``*``, else None (unknown database)."""
        target = self.databases.get(dbname)
        if target is None:
            target = self.databases.get("*")
        return target

    @property
    def client_tls_required(self) -> bool:
        """True when clients that do not use TLS are refused (client_tls_sslmode require or stricter)."""
        return self.client_tls_sslmode in TLS_REQUIRED_MODES


# --------------------------------------------------------------------------------------------
# value parsers: each takes (key, raw text) and returns the value or raises ConfigError
# --------------------------------------------------------------------------------------------

_DURATION_UNITS = {"": 1.0, "us": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE_UNITS = {"": 1, "b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3}
_NUMBER_UNIT = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([A-Za-z]*)\s*$")


def _int(key: str, raw: str, lo: int, hi: int | None = None) -> int:
    what = f"an integer {lo}-{hi}" if hi is not None else f"an integer >= {lo}"
    try:
        value = int(raw.strip(), 10)
    except ValueError:
        raise ConfigError(key, f"must be {what}, got {raw!r}") from None
    if value < lo or (hi is not None and value > hi):
        raise ConfigError(key, f"must be {what}, got {raw!r}")
    return value


def _port(key: str, raw: str) -> int:
    return _int(key, raw, 1, 65535)


def _duration(key: str, raw: str) -> float:
    m = _NUMBER_UNIT.match(raw)
    unit = m.group(2) if m else ""
    if m is None or unit not in _DURATION_UNITS:
        raise ConfigError(key, f"must be a number of seconds >= 0 (units ms, s, min, h, d allowed), got {raw!r}")
    return float(m.group(1)) * _DURATION_UNITS[unit]


def _size(key: str, raw: str, lo: int, hi: int) -> int:
    m = _NUMBER_UNIT.match(raw)
    unit = m.group(2).lower() if m else ""
    if m is None or unit not in _SIZE_UNITS or "." in m.group(1):
        raise ConfigError(key, f"must be a whole number of bytes (units kB, MB, GB allowed), got {raw!r}")
    value = int(m.group(1)) * _SIZE_UNITS[unit]
    if not lo <= value <= hi:
        raise ConfigError(key, f"must be between {lo} and {hi} bytes, got {raw!r}")
    return value


def _enum(key: str, raw: str, choices: tuple[str, ...]) -> str:
    value = raw.strip().lower()
    if value not in choices:
        raise ConfigError(key, f"must be one of {', '.join(choices)}; got {raw!r}")
    return value


def _bool(key: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in configparser.ConfigParser.BOOLEAN_STATES:
        return configparser.ConfigParser.BOOLEAN_STATES[value]
    raise ConfigError(key, f"must be a boolean (true/false, on/off, yes/no, 1/0), got {raw!r}")


def _names(key: str, raw: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in raw.split(",") if n.strip())
    for n in names:
        if any(c.isspace() for c in n):
            raise ConfigError(key, f"must be a comma-separated list of role names, got {raw!r}")
    return names


def _origins(key: str, raw: str) -> tuple[str, ...]:
    """A comma-separated list of origins ``scheme://host[:port]`` (RFC 6454 serialisation)."""
    out = tuple(o.strip().rstrip("/") for o in raw.split(",") if o.strip())
    for o in out:
        if not re.match(r"^https?://[^/\s]+$", o):
            raise ConfigError(key, f"must be a comma-separated list of origins like https://host:8443, got {o!r}")
    return out


def _nonempty(key: str, raw: str) -> str:
    value = raw.strip()
    if not value:
        raise ConfigError(key, "must not be empty")
    return value


# --------------------------------------------------------------------------------------------
# [databases] values: libpq key=value strings
# --------------------------------------------------------------------------------------------

_DB_KEYS = ("host", "port", "dbname", "user", "password", "pool_size", "pool_mode")


def parse_conninfo(key: str, text: str) -> dict[str, str]:
    """Split a libpq-style ``k=v k2='v 2'`` string into a dict.

    Follows libpq's conninfo syntax (https://www.postgresql.org/docs/current/libpq-connect.html,
    34.1.1.1): spaces around ``=`` allowed, single-quoted values, backslash escapes ``\\'`` and
    ``\\\\``. Raises ConfigError(``key``) on a malformed string or a repeated keyword.
    """
    out: dict[str, str] = {}
    i, n = 0, len(text)
    while True:
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            return out
        start = i
        while i < n and not text[i].isspace() and text[i] != "=":
            i += 1
        name = text[start:i]
        while i < n and text[i].isspace():
            i += 1
        if not name or i >= n or text[i] != "=":
            raise ConfigError(key, f"expected keyword=value at {text[start:start + 20]!r}")
        i += 1
        while i < n and text[i].isspace():
            i += 1
        chars: list[str] = []
        if i < n and text[i] == "'":
            i += 1
            while True:
                if i >= n:
                    raise ConfigError(key, f"unterminated quoted value for {name}")
                c = text[i]
                if c == "\\" and i + 1 < n:
                    chars.append(text[i + 1])
                    i += 2
                elif c == "'":
                    i += 1
                    break
                else:
                    chars.append(c)
                    i += 1
        else:
            while i < n and not text[i].isspace():
                if text[i] == "\\" and i + 1 < n:
                    chars.append(text[i + 1])
                    i += 2
                else:
                    chars.append(text[i])
                    i += 1
        if name in out:
            raise ConfigError(key, f"{name} given twice")
        out[name] = "".join(chars)


def _database(name: str, text: str) -> DatabaseTarget:
    key = f"databases.{name}"
    kv = parse_conninfo(key, text)
    values: dict[str, Any] = {}
    for k, v in kv.items():
        sub = f"{key}.{k}"
        if k not in _DB_KEYS:
            raise ConfigError(key, f"unknown parameter {k!r}{_suggest(k, _DB_KEYS)}")
        if k == "port":
            values[k] = _port(sub, v)
        elif k == "pool_size":
            values[k] = _int(sub, v, 1)
        elif k == "pool_mode":
            values[k] = _enum(sub, v, POOL_MODES)
        elif k in ("host", "dbname", "user"):
            values[k] = _nonempty(sub, v)
        else:
            values[k] = v
    return DatabaseTarget(name=name, **values)


# --------------------------------------------------------------------------------------------
# the [proxy] and [engine] sections
# --------------------------------------------------------------------------------------------

Parser = Callable[[str, str], Any]

_PROXY_KEYS: dict[str, Parser] = {
    "listen_addr": _nonempty,
    "listen_port": lambda key, raw: _int(key, raw, 0, 65535),
    "workers": lambda key, raw: _int(key, raw, 1, MAX_WORKERS),
    "auth_type": lambda k, v: _auth_type(k, v),
    "auth_file": lambda k, v: v,  # paths are resolved afterwards
    "auth_query": _nonempty,
    "auth_user": _nonempty,
    "client_tls_sslmode": lambda k, v: _enum(k, v, SSLMODES),
    "client_tls_cert_file": lambda k, v: v,
    "client_tls_key_file": lambda k, v: v,
    "client_tls_ca_file": lambda k, v: v,
    "server_tls_sslmode": lambda k, v: _enum(k, v, SSLMODES),
    "server_tls_ca_file": lambda k, v: v,
    "pool_mode": lambda k, v: _enum(k, v, POOL_MODES),
    "default_pool_size": lambda k, v: _int(k, v, 1),
    "min_pool_size": lambda k, v: _int(k, v, 0),
    "reserve_pool_size": lambda k, v: _int(k, v, 0),
    "max_client_conn": lambda k, v: _int(k, v, 1),
    "server_reset_query": lambda k, v: v.strip(),
    "server_lifetime": _duration,
    "server_idle_timeout": _duration,
    "query_wait_timeout": _duration,
    "query_timeout": _duration,
    "idle_transaction_timeout": _duration,
    "client_idle_timeout": _duration,
    "server_connect_timeout": _duration,
    "server_login_retry": _duration,
    "cancel_wait_timeout": _duration,
    "client_login_timeout": _duration,
    "max_packet_size": lambda k, v: _size(k, v, MIN_PACKET_SIZE, MAX_PACKET_SIZE_LIMIT),
    "record_dir": lambda k, v: v,
    "metrics_port": _port,
    "admin_users": _names,
    "stats_users": _names,
    "admin_database": _nonempty,
    "metadata_server": _nonempty,  # scale out (issue 19)
    "metadata_database": _nonempty,  # scale out (issue 19)
    "route_refresh_interval": _duration,  # scale out (issue 19)
    "metrics_addr": _nonempty,
    "shutdown_timeout": _duration,
    "log_connections": _bool,
    "log_disconnections": _bool,
    "http_listen_addr": _nonempty,
    "http_listen_port": lambda key, raw: _int(key, raw, 0, 65535),
    "http_allowed_origins": _origins,
    "http_max_message_size": lambda k, v: _size(k, v, MIN_PACKET_SIZE, MAX_HTTP_MESSAGE_SIZE),
    "http_max_runs_per_user": lambda k, v: _int(k, v, 1),
    "http_idle_timeout": _duration,
}
_PATH_KEYS = ("auth_file", "client_tls_cert_file", "client_tls_key_file", "client_tls_ca_file",
              "server_tls_ca_file", "record_dir")
#: Path keys whose file must exist when the configuration is loaded.
_EXISTING_FILE_KEYS = ("auth_file", "client_tls_cert_file", "client_tls_key_file", "client_tls_ca_file",
                       "server_tls_ca_file")

_ENGINE_KEYS: dict[str, Parser] = {
    "aws_endpoint_url": lambda k, v: v.strip() or None,
    "lock_wait_timeout": _duration,
    "aws_max_workers": lambda k, v: _int(k, v, 1, 256),
    "enabled": _bool,
}
#: [engine] keys that are accepted and ignored, with why (logged as a warning at start).
DEPRECATED_ENGINE_KEYS = {
    "engine_user": "iasql_* calls run as the calling user on its own server connection; remove this key",
    "engine_password": "iasql_* calls run as the calling user on its own server connection; remove this key",
}

_UNSUPPORTED_AUTH = {
    "hba": "hba (PgBouncer's pg_hba.conf mode) is not supported",
    "pam": "pam is not supported",
    "any": "any (no user check at all) is not supported; use trust",
}


def _auth_type(key: str, raw: str) -> str:
    value = raw.strip().lower()
    if value in _UNSUPPORTED_AUTH:
        raise ConfigError(key, f"{_UNSUPPORTED_AUTH[value]}; supported: {', '.join(AUTH_TYPES)}")
    return _enum(key, raw, AUTH_TYPES)


def _suggest(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _resolve(base_dir: Path, raw: str) -> Path | None:
    raw = raw.strip()
    if not raw:
        return None
    p = Path(raw).expanduser()
    return p if p.is_absolute() else (base_dir / p)


def _validate(cfg: dict[str, Any]) -> None:
    """Cross-key rules; ``cfg`` holds the parsed [proxy] values (defaults filled in)."""
    for key in _EXISTING_FILE_KEYS:
        p = cfg.get(key)
        if p is not None and not p.is_file():
            raise ConfigError(key, f"file not found: {p}")
    cert, keyf = cfg["client_tls_cert_file"], cfg["client_tls_key_file"]
    if (cert is None) != (keyf is None):
        missing = "client_tls_key_file" if keyf is None else "client_tls_cert_file"
        raise ConfigError(missing, "client_tls_cert_file and client_tls_key_file must be given together")
    mode = cfg["client_tls_sslmode"]
    if mode != "disable" and cert is None:
        raise ConfigError("client_tls_sslmode",
                          f"{mode} needs client_tls_cert_file and client_tls_key_file")
    if mode in ("verify-ca", "verify-full") and cfg["client_tls_ca_file"] is None:
        raise ConfigError("client_tls_sslmode", f"{mode} needs client_tls_ca_file to verify client certificates")
    auth = cfg["auth_type"]
    if auth == "plain" and mode not in TLS_REQUIRED_MODES:
        raise ConfigError("auth_type", "plain sends passwords in clear text: it needs client_tls_sslmode "
                          f"require, verify-ca or verify-full (got {mode})")
    if auth == "cert":
        if cfg["client_tls_ca_file"] is None:
            raise ConfigError("auth_type", "cert needs client_tls_ca_file (the CA that signs client certificates)")
        if mode not in TLS_REQUIRED_MODES:
            raise ConfigError("auth_type", f"cert needs client_tls_sslmode require or stricter (got {mode})")
    if auth in ("md5", "scram-sha-256", "plain") and cfg["auth_file"] is None and cfg["auth_user"] is None:
        raise ConfigError("auth_type", f"{auth} needs a source of secrets: auth_file, or auth_user "
                          "(which runs auth_query upstream)")
    if cfg["min_pool_size"] > cfg["default_pool_size"]:
        raise ConfigError("min_pool_size", f"must be at most default_pool_size ({cfg['default_pool_size']}), "
                          f"got {cfg['min_pool_size']}")
    if cfg["metrics_port"] is not None and cfg["metrics_port"] == cfg["listen_port"]:
        raise ConfigError("metrics_port", f"must differ from listen_port ({cfg['listen_port']})")
    http_port = cfg["http_listen_port"]
    if http_port is not None:
        if cert is None:
            raise ConfigError("http_listen_port", "the console is served over HTTPS only: it needs "
                              "client_tls_cert_file and client_tls_key_file")
        if auth not in ("md5", "scram-sha-256", "plain"):
            raise ConfigError("http_listen_port", f"HTTP Basic logins are checked against the users' secrets: "
                              f"auth_type must be md5, scram-sha-256 or plain (got {auth})")
        if mode in ("verify-ca", "verify-full"):
            raise ConfigError("http_listen_port", f"/run logs in to the proxy's own listener without a client "
                              f"certificate, which client_tls_sslmode {mode} requires; use require or looser")
        if http_port and http_port in (cfg["listen_port"], cfg["metrics_port"]):
            raise ConfigError("http_listen_port", f"must differ from listen_port and metrics_port, got {http_port}")


def parse_config(text: str, base_dir: Path | None = None, *, config_file: Path | None = None) -> Config:
    """Parse and validate configuration ``text`` (ini syntax).

    ``base_dir`` resolves relative paths (default: the current directory); ``config_file`` is
    recorded in ``Config.config_file`` (for reload). Returns a Config. Raises ConfigError naming the
    key on a syntax error, an unknown section or key, a bad value, a file that does not exist, or an
    inconsistent combination (rules in the module docstring).
    """
    base_dir = Path.cwd() if base_dir is None else Path(base_dir)
    parser = configparser.ConfigParser(interpolation=None, strict=True, comment_prefixes=("#", ";"),
                                       inline_comment_prefixes=None, empty_lines_in_values=False,
                                       default_section="\x00no-default-section")
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # database names are case-sensitive
    try:
        parser.read_string(text, source=str(config_file or "<config>"))
    except configparser.DuplicateOptionError as e:
        raise ConfigError(str(e.option), f"given twice in [{e.section}] (line {e.lineno})") from e
    except configparser.DuplicateSectionError as e:
        raise ConfigError(f"[{e.section}]", f"section given twice (line {e.lineno})") from e
    except configparser.MissingSectionHeaderError as e:
        raise ConfigError("<file>", f"line {e.lineno}: key outside any section; start with [databases] or [proxy]") from e
    except configparser.ParsingError as e:
        lines = ", ".join(str(lineno) for lineno, _ in e.errors)
        raise ConfigError("<file>", f"cannot parse line(s) {lines}: expected key = value") from e

    sections = {s.lower(): s for s in parser.sections()}
    known_sections = ("databases", "proxy", "pgbouncer", "engine", "servers")
    for low, actual in sections.items():
        if low not in known_sections:
            raise ConfigError(f"[{actual}]", f"unknown section{_suggest(low, known_sections)}")
    if "proxy" in sections and "pgbouncer" in sections:
        raise ConfigError("[pgbouncer]", "give either [proxy] or its alias [pgbouncer], not both")

    # [proxy]
    raw: dict[str, Any] = {}
    main = sections.get("proxy") or sections.get("pgbouncer")
    if main is not None:
        for k, v in parser.items(main):
            key = k.lower()
            if key not in _PROXY_KEYS:
                raise ConfigError(key, f"unknown key in [{main}]{_suggest(key, _PROXY_KEYS)}")
            if key in raw:
                raise ConfigError(key, f"given twice in [{main}]")
            raw[key] = _PROXY_KEYS[key](key, v)
    for key in _PATH_KEYS:
        if key in raw:
            raw[key] = _resolve(base_dir, raw[key])
    defaults = {f: getattr(_DEFAULTS, f) for f in _PROXY_KEYS}
    merged = {**defaults, **raw}
    _validate(merged)

    # [engine]
    engine_values: dict[str, Any] = {}
    if "engine" in sections:
        for k, v in parser.items(sections["engine"]):
            key = k.lower()
            if key in DEPRECATED_ENGINE_KEYS:
                engine_values["deprecated_keys"] = engine_values.get("deprecated_keys", ()) + (key,)
                continue
            if key not in _ENGINE_KEYS:
                raise ConfigError(f"engine.{key}", f"unknown key in [engine]{_suggest(key, _ENGINE_KEYS)}")
            engine_values[key] = _ENGINE_KEYS[key](f"engine.{key}", v)

    # [databases]
    databases: dict[str, DatabaseTarget] = {}
    if "databases" in sections:
        for name, v in parser.items(sections["databases"]):
            databases[name] = _database(name, v)
    if not databases and "servers" not in sections:  # with [servers], the routing table may be all
        raise ConfigError("[databases]", "no database entries; add e.g. `* = host=127.0.0.1 port=5432`")
    admin_db = merged["admin_database"]
    if admin_db in databases:
        raise ConfigError(f"databases.{admin_db}", "this name is the admin console's (admin_database); "
                          "rename the entry or set admin_database to another name")

    # [servers] (scale out, issue 19: proxy.routing.config)
    servers: dict[str, Any] = {}
    if "servers" in sections:
        from proxy.routing.config import parse_server

        secrets = load_auth_file(merged["auth_file"]) if merged["auth_file"] is not None else {}
        for name, v in parser.items(sections["servers"]):
            servers[name] = parse_server(name, v, base_dir, secrets, parse_conninfo, ConfigError, _port,
                                         lambda k, v: _int(k, v, 1), lambda k, v: _enum(k, v, POOL_MODES))
    if servers or merged["metadata_server"] is not None:
        from proxy.routing.config import check_servers

        raw["metadata_server"] = check_servers(servers, merged["metadata_server"], ConfigError)
    if merged["metadata_database"] == admin_db:
        raise ConfigError("metadata_database", "must differ from admin_database")

    return Config(databases=databases, engine=EngineConfig(**engine_values), config_file=config_file,
                  servers=servers, **raw)


def load_config(path: Path | str) -> Config:
    """Read, parse and validate the ini file at ``path``.

    Relative paths inside are resolved against the file's directory. Returns a Config with
    ``config_file`` set to the absolute path. Raises ConfigError (key ``config_file``) when the file
    cannot be read, and as :func:`parse_config` otherwise.
    """
    path = Path(path).expanduser().absolute()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError("config_file", f"cannot read {path}: {e}") from e
    return parse_config(text, base_dir=path.parent, config_file=path)


_DEFAULTS = Config(databases={})


# --------------------------------------------------------------------------------------------
# auth_file (PgBouncer userlist.txt)
# --------------------------------------------------------------------------------------------

_MD5_SECRET = re.compile(r"^md5[0-9a-f]{32}$")
_SCRAM_SECRET = re.compile(r"^SCRAM-SHA-256\$([0-9]+):([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+):([A-Za-z0-9+/=]+)$")


def secret_kind(secret: str) -> str:
    """Classify an ``auth_file``/``pg_authid`` secret: ``'scram-sha-256'``, ``'md5'`` or ``'plain'``.

    A secret that starts like a SCRAM verifier but is malformed raises ValueError (it would never
    match any password, which is better reported than silently treated as a plain password).
    Formats: ``md5`` + 32 lowercase hex digits; ``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:
    <ServerKey>`` with base64 fields, as Postgres stores them (RFC 5803).
    """
    if secret.startswith("SCRAM-SHA-256$"):
        m = _SCRAM_SECRET.match(secret)
        if m is None or int(m.group(1)) < 1:
            raise ValueError("malformed SCRAM-SHA-256 secret")
        try:
            stored = base64.b64decode(m.group(3), validate=True)
            server = base64.b64decode(m.group(4), validate=True)
            base64.b64decode(m.group(2), validate=True)
        except binascii.Error:
            raise ValueError("malformed base64 in SCRAM-SHA-256 secret") from None
        if len(stored) != 32 or len(server) != 32:
            raise ValueError("SCRAM-SHA-256 StoredKey and ServerKey must be 32 bytes")
        return "scram-sha-256"
    if _MD5_SECRET.match(secret):
        return "md5"
    return "plain"


def _quoted_fields(line: str) -> list[str]:
    fields: list[str] = []
    i, n = 0, len(line)
    while i < n:
        if line[i].isspace():
            i += 1
            continue
        if line[i] != '"':
            raise ValueError(f"expected '\"' at column {i + 1}")
        i += 1
        chars: list[str] = []
        while True:
            if i >= n:
                raise ValueError("unterminated quoted field")
            if line[i] == '"':
                if i + 1 < n and line[i + 1] == '"':
                    chars.append('"')
                    i += 2
                    continue
                i += 1
                break
            chars.append(line[i])
            i += 1
        fields.append("".join(chars))
    return fields


def load_auth_file(path: Path) -> dict[str, str]:
    """Read a PgBouncer ``userlist.txt``: returns ``{user: secret}``.

    Format (PgBouncer config docs, "Authentication file format"): one ``"user" "secret"`` pair per
    line, both double-quoted, ``""`` inside a field stands for one ``"``; blank lines and lines
    starting with ``;`` or ``#`` are comments; extra quoted fields after the secret are ignored, as
    PgBouncer does. The secret is a plain password, ``md5<hex>`` or a SCRAM-SHA-256 verifier (see
    :func:`secret_kind`). A user listed twice keeps the last secret. Raises ConfigError (key
    ``auth_file``) naming the line on an unreadable file or malformed line.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError("auth_file", f"cannot read {path}: {e}") from e
    users: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped[0] in ";#":
            continue
        try:
            fields = _quoted_fields(stripped)
            if len(fields) < 2:
                raise ValueError('expected "user" "secret"')
            if not fields[0]:
                raise ValueError("empty user name")
            secret_kind(fields[1])
        except ValueError as e:
            raise ConfigError("auth_file", f"{path}:{lineno}: {e}") from None
        users[fields[0]] = fields[1]
    return users
