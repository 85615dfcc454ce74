"""Operations: the admin console, metrics, reload and graceful shutdown (``install(app)``).

``install(app)`` gives a ProxyApp ``app.ops`` (proxy.admin.ops.Operations: reload, pause, shutdown,
the metrics and the engine journal) and ``app.admin`` (proxy.admin.console.AdminConsole, which
``ClientSession`` calls for the virtual database ``admin_database``), and attaches the journal to
the iasql_* interceptor. ``start_metrics(app)`` opens the Prometheus endpoint when
``metrics_port`` is set.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from proxy.admin.console import AdminConsole
from proxy.admin.journal import EngineJournal
from proxy.admin.ops import Operations

if TYPE_CHECKING:
    from proxy.server import ProxyApp


def install(app: "ProxyApp") -> Operations:
    """Attach operations, the admin console and the engine journal to ``app``; returns ``app.ops``."""
    ops = Operations(app)
    app.ops = ops
    app.admin = AdminConsole(app, ops)
    query = getattr(app.interceptor, "query", None)
    if query is not None:
        query.journal = ops.journal
    return ops


async def start_metrics(app: "ProxyApp") -> None:
    """Open the metrics endpoint on ``metrics_addr``:``metrics_port`` when the port is set."""
    cfg = app.cfg
    if cfg.metrics_port is not None and app.ops is not None:
        await app.ops.metrics.start(cfg.metrics_addr, cfg.metrics_port)


__all__ = ["install", "start_metrics", "AdminConsole", "EngineJournal", "Operations"]
