"""The HTTPS side of the proxy: a web console at ``/`` and the WebSocket ``/run`` (issue 20).

``server`` (the endpoint, in a thread of its own), ``protocol`` (the /run messages and the
handshake checks, no I/O), ``runner`` (a script run through the proxy's own PostgreSQL listener),
``static/`` (the console: one page, no build step). Enabled by ``http_listen_port``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from proxy.auth import AuthFailed, Secret, check_plain

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


async def lookup_secret(app: "ProxyApp", user: str, database: str) -> Secret | None:
    """``user``'s secret from the source the proxy's own logins use (``auth_file``, else
    ``auth_query`` on ``database``'s target: ``ProxyApp.lookup_secret``). Runs on the proxy's loop;
    the password itself is checked elsewhere (``password_matches``), off that loop. Returns None
    for an unknown user; raises nothing."""
    cfg = app.cfg
    # app.target_for: the routing table of scale out first (proxy.routing), then [databases]
    target = app.target_for(database) or app.target_for(user) or next(iter(cfg.databases.values()), None)
    if target is None:
        return None
    from proxy.frontend.login import ClientError

    try:
        return await app.lookup_secret(user, target)
    except ClientError:  # auth_query's server cannot be reached (08006): no secret to check against
        return None


def password_matches(auth_type: str, secret: Secret | None, user: str, password: str) -> bool:
    """Whether ``password`` is the one ``secret`` stores (``proxy.auth.check_plain``: plain, md5 or
    SCRAM-SHA-256, whose PBKDF2 costs a few milliseconds). As for a PostgreSQL login, a secret
    stored as md5 does not pass under ``auth_type = scram-sha-256`` (Postgres refuses such a role a
    SCRAM login, and so does the proxy). Returns False for None; raises nothing."""
    if secret is None or (auth_type == "scram-sha-256" and secret.kind == "md5"):
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

    async def lookup(user: str, database: str) -> Secret | None:
        return await lookup_secret(app, user, database)

    endpoint = HttpEndpoint(app.cfg, loopback_host(app.cfg.listen_addr), app.port, lookup, loop)
    await asyncio.to_thread(endpoint.start)
    return endpoint
