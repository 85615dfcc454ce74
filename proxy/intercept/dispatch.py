"""Dispatch of intercepted messages to the simple-query and extended-protocol interceptors.

``build_interceptor(app)`` returns an object with ``async handle(session)`` (the message at the head
of the session's input buffer) and ``cancel(session)``; ``ProxyApp`` installs it when the engine is
enabled. Simple Queries are answered by ``simple.QueryInterceptor``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from proxy.intercept.extended import ExtendedInterceptor
from proxy.intercept.simple import QueryInterceptor

if TYPE_CHECKING:
    from proxy.frontend.session import ClientSession
    from proxy.server import ProxyApp


_EXTENDED = frozenset(b"PBDECHS")


class Interceptor:
    """Dispatches intercepted messages by type: a Query ('Q') to the simple-query interceptor,
    extended-protocol messages to the extended interceptor, batch by batch."""

    def __init__(self, query: QueryInterceptor):
        self.query = query
        self.extended = ExtendedInterceptor(query)

    async def handle(self, session: "ClientSession") -> None:
        """Answer the message at the head of the session's input."""
        head = session.peek_type()
        if head == ord("Q"):
            await self.query.handle_query(session)
        elif head in _EXTENDED:
            from proxy.frontend.session import SPECIAL_EXTENDED

            await self.extended.handle_batch(session)
            st = session.extended_state
            session.special = SPECIAL_EXTENDED if st is not None and st.active else session.special_default
        else:
            session.forward_head_message()

    def cancel(self, session: "ClientSession") -> bool:
        """Tell a running engine call of a CancelRequest; True when one was running (the request
        also goes to the server, which cancels a statement the engine has running there)."""
        return self.query.cancel(session)


def build_interceptor(app: "ProxyApp") -> Interceptor:
    """Build the engine registry from ``app.cfg.engine`` and the interceptor around it."""
    from engine import EngineSettings, build_registry
    from engine import metadata as engine_metadata

    eng = app.cfg.engine
    kwargs = {}
    endpoint = eng.aws_endpoint_url or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        kwargs["aws_endpoint_url"] = endpoint
    kwargs["lock_wait_timeout"] = eng.lock_wait_timeout
    kwargs["aws_max_workers"] = eng.aws_max_workers
    registry = build_registry(EngineSettings(**kwargs))
    # scale out (issue 19): iasql_connect and the other calls of the metadata database
    registry = engine_metadata.register(registry)
    engine_metadata.Holder.fleet = getattr(app, "fleet", None)
    check_prefilter(registry.names())
    return Interceptor(QueryInterceptor(registry))


def check_prefilter(names: frozenset[str]) -> None:
    """Refuse to start when a registered function could slip past the prefilter: every name must
    begin with ``iasql_`` or be one of ``proxy.router.marker.MODULE_RPC_NAMES`` (which the C scan
    also knows), else its calls would be forwarded to the stub by the fast path. Raises
    RuntimeError naming the functions."""
    from proxy.router.marker import MODULE_RPC_NAMES

    missed = sorted(n for n in names if not n.startswith("iasql_") and n not in MODULE_RPC_NAMES)
    if missed:
        raise RuntimeError(f"engine functions unknown to the proxy's prefilter: {', '.join(missed)} "
                           "(add them to proxy.router.marker.MODULE_RPC_NAMES and RPC_NAMES in proxy/wire/_fastpath.c)")
