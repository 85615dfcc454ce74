"""The HTTPS side of the proxy: a web console at ``/`` and the WebSocket ``/run`` (issue 20).

``server`` (the endpoint, in a thread of its own), ``protocol`` (the /run messages and the
handshake checks, no I/O), ``runner`` (a script run through the proxy's own PostgreSQL listener),
``static/`` (the console: one page, no build step). Enabled by ``http_listen_port``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from proxy.auth import AuthFailed, check_plain

if TYPE_CHECKING:
    from proxy.server import ProxyApp

    from .server import HttpEndpoint


def loopback_host(listen_addr: str) -> str:
    """Where the endpoint reaches the proxy's PostgreSQL listener: the first ``listen_addr``
    address, or the loopback address of its family for a wildcard (``*``, ``0.0.0.0``, ``::``)."""
    first = [a.strip() for a in listen_addr.split(",") if a.strip()][0]
    if first in ("*", "0.0.0.0"):
        return "127.0.0.1"
    if first == "::":
        return "::1"
    return first


async def check_password(app: "ProxyApp", user: str, password: str, database: str) -> bool:
    """Whether ``password`` is ``user``'s, checked against the secret the proxy's own logins use
    (``auth_file``, else ``auth_query`` on ``database``'s target: ``ProxyApp.lookup_secret``) with
    ``proxy.auth.check_plain`` (plain, md5 or SCRAM-SHA-256 secret). As for a PostgreSQL login,
    a secret stored as md5 does not pass under ``auth_type = scram-sha-256`` (Postgres refuses
    such a role a SCRAM login, and so does the proxy). Runs on the proxy's loop. Returns False
    for an unknown user or a wrong password; raises nothing."""
    cfg = app.cfg
    target = cfg.target_for(database) or cfg.target_for(user) or next(iter(cfg.databases.values()))
    secret = await app.lookup_secret(user, target)
    if secret is None or (cfg.auth_type == "scram-sha-256" and secret.kind == "md5"):
        return False
    try:
        check_plain(secret, user, password)
    except AuthFailed:
        return False
    return True


async def start_http(app: "ProxyApp") -> "HttpEndpoint":
    """Start the endpoint for ``app`` (whose PostgreSQL listener is up) in its own thread.

    Returns the started HttpEndpoint (``port`` is the bound port). Raises OSError when
    ``http_listen_addr``:``http_listen_port`` cannot be bound or the certificate cannot be read.
    """
    from .server import HttpEndpoint

    loop = asyncio.get_running_loop()

    async def check(user: str, password: str, database: str) -> bool:
        return await check_password(app, user, password, database)

    endpoint = HttpEndpoint(app.cfg, loopback_host(app.cfg.listen_addr), app.port, check, loop)
    await asyncio.to_thread(endpoint.start)
    return endpoint
