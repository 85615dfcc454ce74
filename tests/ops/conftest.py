"""Fixtures for the operations tests (admin console, metrics, reload, shutdown, entrypoint)."""

from __future__ import annotations

import pytest

from proxy.embedded.postgres import free_port

#: A role that may log in but is in neither admin_users nor stats_users.
OUTSIDER = ("dave", "dave-Sekr1t-pw")


@pytest.fixture(scope="session")
def outsider(pg):
    user, password = OUTSIDER
    pg.psql(f"DROP ROLE IF EXISTS {user}; SET password_encryption = 'scram-sha-256'; "
            f"CREATE ROLE {user} LOGIN PASSWORD '{password}';")
    return OUTSIDER


@pytest.fixture(scope="module")
def ops_proxy(proxy_ini, start_proxy, pg_roles, outsider):
    """A proxy with postgres as admin, alice as stats user, and a metrics endpoint."""
    port = free_port()
    proc = start_proxy(proxy_ini(admin_users="postgres", stats_users="alice", metrics_port=port), "ops-proxy")
    proc.metrics_port = port
    return proc
