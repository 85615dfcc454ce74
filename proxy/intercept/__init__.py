"""Interception of ``iasql_*`` calls and module RPC calls: messages whose bytes contain ``iasql_``
or a module RPC name at an identifier start (``proxy.router.marker``) come here.

``build_interceptor(app)`` (in ``dispatch``) returns the object ``ProxyApp`` installs when the
engine is enabled. This package's ``__init__`` imports nothing heavy, so that the proxy starts
without loading the engine (and boto3) when ``[engine] enabled = false``.
"""

from __future__ import annotations


def build_interceptor(app):
    """Build the engine registry from ``app.cfg.engine`` and the interceptor around it (see dispatch)."""
    from proxy.intercept.dispatch import build_interceptor as build

    return build(app)
