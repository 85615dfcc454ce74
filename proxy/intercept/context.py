"""The engine's CallContext as the proxy provides it for one intercepted call.

``connect()`` opens a psycopg connection to the client's database on the same server the client's
statements go to. Which role: ``[engine] engine_user``/``engine_password`` when configured, else the
client's own user with the password the proxy learned at login (clear-text auth, or a clear-text
secret in ``auth_file``). With SCRAM pass-through only, the proxy never learns a password, so an
``engine_user`` is needed; the error says so (SQLSTATE 28000).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from engine.rpc import EngineError
from proxy.wire import backend as B
from proxy.wire import sqlstate

if TYPE_CHECKING:
    from proxy.frontend.session import ClientSession


@dataclass
class ProxyCallContext:
    """rpc.CallContext for one call: ``database``, ``user``, ``cancelled`` and the connection recipe."""

    database: str
    user: str
    conninfo: dict[str, Any] | None
    notify: Callable[[bytes], None]
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    missing_credentials: str | None = None

    async def connect(self) -> Any:
        """A new psycopg.AsyncConnection (autocommit) to ``database``. Raises EngineError 28000
        when the proxy has no password for the engine's role."""
        import psycopg

        if self.conninfo is None:
            raise EngineError(sqlstate.INVALID_AUTHORIZATION_SPECIFICATION,
                              self.missing_credentials or "no credentials for the IaSQL engine",
                              hint="Set engine_user and engine_password in the [engine] section of the proxy configuration.")
        return await psycopg.AsyncConnection.connect(**self.conninfo, autocommit=True)

    def progress(self, message: str) -> None:
        """Send one progress line to the client as a NOTICE (psql prints it)."""
        self.notify(B.notice(message))


def make_context(session: "ClientSession", fn: Any) -> ProxyCallContext:
    """Build the context for ``fn`` called by ``session`` (see the module docstring for the role)."""
    cfg = session.cfg
    target = session.target
    dbname = target.dbname or session.database
    user = target.user or session.user
    password = None
    engine_user = getattr(cfg.engine, "engine_user", None)
    if engine_user:
        user, password = engine_user, getattr(cfg.engine, "engine_password", None)
    elif session.credentials is not None:
        password = session.credentials.password
    missing = None
    conninfo: dict[str, Any] | None = {"host": target.host, "port": target.port, "dbname": dbname, "user": user,
                                       "sslmode": _libpq_sslmode(cfg.server_tls_sslmode),
                                       "application_name": f"iasql-engine:{fn.name}"}
    if cfg.server_tls_ca_file:
        conninfo["sslrootcert"] = str(cfg.server_tls_ca_file)
    if password is not None:
        conninfo["password"] = password
    elif not engine_user and session.credentials is not None and session.credentials.client_key is not None:
        conninfo = None
        missing = (f"the IaSQL engine has no password for user \"{user}\" "
                   "(the proxy authenticated this client by SCRAM pass-through)")
    return ProxyCallContext(database=dbname, user=session.user, conninfo=conninfo, notify=session.write,
                            missing_credentials=missing)


def _libpq_sslmode(mode: str) -> str:
    return mode if mode in ("disable", "allow", "prefer", "require", "verify-ca", "verify-full") else "prefer"
