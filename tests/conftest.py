"""Shared fixtures: a throwaway Postgres cluster and a moto server, started by the test session."""

from __future__ import annotations

import pytest

from proxy.embedded.moto import MotoServer
from proxy.embedded.postgres import EmbeddedPostgres


@pytest.fixture(scope="session")
def pg():
    """A running EmbeddedPostgres (superuser postgres/postgres, SCRAM over TCP) for the session."""
    server = EmbeddedPostgres(password="postgres")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def moto_server():
    """A running moto server on an ephemeral loopback port for the session."""
    server = MotoServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
