"""Pytest helper: replay a recorded wire trace (proxy.trace) as a regression test.

One line makes a test of a trace file (a path relative to tests/traces/, or to the calling test
file's directory, or absolute)::

    from tests.support.traces import trace_test

    test_psql = trace_test("psql.jsonl")

The test replays the trace through a proxy started for trace tests (once per pytest session: the
session's ``pg``, a moto server of its own, the IaSQL engine, SCRAM, TLS with the dev
certificates) into a fresh database, with a reset moto, and fails with replay's diff of the first
difference. ``replay_trace(path, dsn)`` does the replay alone against any DSN.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

TRACES = Path(__file__).resolve().parents[1] / "traces"


def replay_trace(path, dsn: str, *, timeout: float = 30.0) -> None:
    """Replay ``path`` against ``dsn``; raise AssertionError with the readable diff when the replies differ."""
    from proxy.trace.replay import replay

    result = replay(path, dsn, timeout=timeout)
    if result.diff is not None:
        raise AssertionError(result.diff)


class TraceEnv:
    """The proxy (and moto server) trace tests replay against."""

    def __init__(self, request: pytest.FixtureRequest):
        from proxy.embedded.moto import MotoServer
        from tests.traces.stack import proxy_ini

        self.pg = request.getfixturevalue("pg")
        certs = request.getfixturevalue("dev_certs")
        start_proxy = request.getfixturevalue("start_proxy")
        tmp = request.getfixturevalue("tmp_path_factory").mktemp("traces")
        self.moto = MotoServer().start()
        request.config.add_cleanup(self.moto.stop)
        self.proxy = start_proxy(proxy_ini(self.pg, self.moto.endpoint_url, certs, tmp / "userlist.txt"), "trace-proxy")
        self.ca = certs[0]

    def dsn(self, dbname: str) -> str:
        return (f"host=localhost port={self.proxy.port} user=postgres password=postgres dbname={dbname} "
                f"sslmode=verify-full sslrootcert={self.ca}")

    def run(self, path: Path, dsn_port: int | None = None):
        """Replay ``path`` into a fresh database named after it (dropped afterwards); returns the
        ReplayResult. ``dsn_port`` replays against another proxy (same Postgres and moto)."""
        from proxy.trace.replay import replay
        from tests.traces.stack import drop_database, fresh_database

        db = "trace_" + re.sub(r"[^a-z0-9_]+", "_", Path(path).stem.lower())[:50]
        fresh_database(self.pg, db)
        self.moto.reset()
        dsn = self.dsn(db)
        if dsn_port is not None:
            dsn = dsn.replace(f"port={self.proxy.port}", f"port={dsn_port}")
        try:
            return replay(path, dsn)
        finally:
            drop_database(self.pg, db)

    def replay(self, path: Path) -> None:
        """Replay ``path`` (see run); AssertionError with the diff when the replies differ."""
        result = self.run(path)
        if result.diff is not None:
            raise AssertionError(result.diff)


_ENV: dict[int, TraceEnv] = {}


def trace_env(request: pytest.FixtureRequest) -> TraceEnv:
    """The session's TraceEnv (started on first use)."""
    key = id(request.session)
    if key not in _ENV:
        _ENV[key] = TraceEnv(request)
    return _ENV[key]


@pytest.fixture
def trace_replayer(request):
    """``trace_replayer(path)`` replays a trace against the trace proxy (AssertionError on a difference)."""
    env = trace_env(request)
    return lambda path: env.replay(Path(path))


def _resolve(name, caller: Path | None) -> Path:
    p = Path(name)
    if p.is_absolute():
        return p
    if caller is not None and (caller.parent / p).exists():
        return caller.parent / p
    return TRACES / p


def trace_test(name, *, marks=()):
    """A test function that replays trace ``name`` (see the module docstring)."""
    frame = inspect.stack()[1]
    path = _resolve(name, Path(frame.filename))

    def test(request):
        if not path.exists():
            pytest.fail(f"trace file {path} does not exist")
        trace_env(request).replay(path)

    test.__doc__ = f"Replay {path.name}: the proxy's replies equal the recorded ones."
    for m in marks:
        test = m(test)
    return test
