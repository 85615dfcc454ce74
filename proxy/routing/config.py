"""The ``[servers]`` section (ours): the Postgres servers ``iasql_connect`` places databases on.

Each entry names one server and how the proxy administers it, in libpq ``key=value`` syntax with
PgBouncer's ``[databases]`` key names where they exist::

    [servers]
    pg1 = host=10.0.0.5 port=5432 user=iasql_admin password_file=/etc/iasql-proxy/pg1.password
    pg2 = host=10.0.0.6 port=5432 user=iasql_admin password_env=IASQL_PG2_PASSWORD weight=2

=============  ========  ===========  ==========================================================
key            unit      default      meaning
=============  ========  ===========  ==========================================================
host           address   127.0.0.1    the server
port           port      5432
user           role      (required)   the admin role: may create databases and roles
                                      (``CREATEDB CREATEROLE``, or a superuser)
password_file  path      (none)       file holding the admin password (first line); must not be
                                      readable by group or others (``chmod 600``)
password_env   name      (none)       environment variable holding the admin password
dbname         name      postgres     database the admin connection uses
weight         number    1            share of new databases: placed where count/weight is least
pool_size      count     (proxy's)    ``default_pool_size`` for the databases routed here
pool_mode      enum      (proxy's)    ``pool_mode`` for the databases routed here
=============  ========  ===========  ==========================================================

Without ``password_file`` and ``password_env`` the admin password is the ``auth_file`` entry of
``user`` (a plain password), as PgBouncer finds ``auth_user``'s. A ``password=`` in the ini file
itself is refused: the ini file is often committed, an admin password must not be.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Keys of a ``[servers]`` entry (see the module docstring).
SERVER_KEYS = ("host", "port", "user", "password_file", "password_env", "dbname", "weight", "pool_size",
               "pool_mode")


@dataclass(frozen=True)
class ServerEntry:
    """One ``[servers]`` entry: ``name`` (its key), address, admin role and placement weight.

    ``password`` is the admin password read at load (from ``password_file``, ``password_env`` or the
    ``auth_file``), None when none was found (the admin connection then relies on ``trust``).
    ``pool_size``/``pool_mode`` None mean the ``[proxy]`` defaults.
    """

    name: str
    host: str = "127.0.0.1"
    port: int = 5432
    user: str = ""
    password: str | None = None
    dbname: str = "postgres"
    weight: float = 1.0
    pool_size: int | None = None
    pool_mode: str | None = None

    def __repr__(self) -> str:  # never show the password (logs, tracebacks)
        return (f"ServerEntry(name={self.name!r}, host={self.host!r}, port={self.port}, user={self.user!r}, "
                f"dbname={self.dbname!r}, weight={self.weight})")


def parse_server(name: str, text: str, base_dir: Path, auth_secrets: dict[str, str],
                 conninfo: Callable[[str, str], dict[str, str]], error: type, port: Callable[[str, str], int],
                 positive_int: Callable[[str, str], int], pool_mode: Callable[[str, str], str]) -> ServerEntry:
    """Parse the ``[servers]`` entry ``name = text``.

    ``conninfo``, ``port``, ``positive_int`` and ``pool_mode`` are ``proxy.config``'s value parsers
    (passed in so this module does not import the config module it is used by); ``error`` is its
    ``ConfigError``. ``auth_secrets`` is the loaded ``auth_file`` (``{user: secret}``). Returns a
    ServerEntry. Raises ``error`` naming ``servers.<name>[.<key>]`` for an unknown key, a bad value,
    a missing ``user``, an inline ``password``, an unreadable or group-readable ``password_file``,
    or an unset ``password_env``.
    """
    key = f"servers.{name}"
    kv = conninfo(key, text)
    values: dict[str, Any] = {}
    for k, v in kv.items():
        sub = f"{key}.{k}"
        if k == "password":
            raise error(sub, "an admin password must not be written in the ini file; use password_file "
                             "(a file with mode 0600) or password_env (an environment variable)")
        if k not in SERVER_KEYS:
            raise error(key, f"unknown parameter {k!r}; known: {', '.join(SERVER_KEYS)}")
        if k == "port":
            values[k] = port(sub, v)
        elif k == "pool_size":
            values[k] = positive_int(sub, v)
        elif k == "pool_mode":
            values[k] = pool_mode(sub, v)
        elif k == "weight":
            try:
                w = float(v)
            except ValueError:
                w = -1.0
            if not 0 < w < float("inf"):  # also refuses nan
                raise error(sub, f"must be a number > 0, got {v!r}")
            values[k] = w
        elif not v.strip():
            raise error(sub, "must not be empty")
        else:
            values[k] = v.strip()
    if not values.get("user"):
        raise error(key, "needs user= (the admin role that creates databases and roles on this server)")
    password: str | None = None
    if "password_file" in values:
        p = Path(values.pop("password_file")).expanduser()
        p = p if p.is_absolute() else base_dir / p
        try:
            mode = p.stat().st_mode
            if mode & 0o077:
                raise error(f"{key}.password_file", f"{p} must not be readable by group or others "
                                                    f"(chmod 600 {p})")
            lines = p.read_text(encoding="utf-8").splitlines()
        except OSError as e:
            raise error(f"{key}.password_file", f"cannot read {p}: {e.strerror}") from None
        except UnicodeDecodeError:
            raise error(f"{key}.password_file", f"{p} is not UTF-8 text") from None
        password = lines[0] if lines else ""
    if "password_env" in values:
        var = values.pop("password_env")
        if password is not None:
            raise error(key, "give password_file or password_env, not both")
        if var not in os.environ:
            raise error(f"{key}.password_env", f"environment variable {var} is not set")
        password = os.environ[var]
    if password is None:
        secret = auth_secrets.get(values["user"])
        if secret is not None and not secret.startswith(("md5", "SCRAM-SHA-256$")):
            password = secret
    return ServerEntry(name=name, password=password, **values)


def check_servers(servers: dict[str, ServerEntry], metadata_server: str | None, error: type) -> str | None:
    """Cross-checks of ``[servers]`` with ``metadata_server``; returns the metadata server's name
    (``metadata_server``, else the first entry, else None when there are no servers). Raises
    ``error`` (key ``metadata_server``) when it names no entry."""
    if metadata_server is not None:
        if metadata_server not in servers:
            known = ", ".join(servers) or "none"
            raise error("metadata_server", f"names no [servers] entry: {metadata_server!r} (known: {known})")
        return metadata_server
    return next(iter(servers), None)
