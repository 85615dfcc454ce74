"""The trace corpus (tests/traces/*.jsonl, re-recorded by `make traces`) replays green through a
fresh proxy and Postgres: one test per file. Each file must also still show the whole scenario."""

from __future__ import annotations

import pytest

from tests.support.traces import TRACES, trace_env
from tests.traces.record import CLIENTS, check_trace

CORPUS = sorted(TRACES.glob("*.jsonl"))


def test_corpus_has_every_client():
    assert sorted(p.stem for p in CORPUS) == sorted(CLIENTS)


@pytest.mark.parametrize("trace", CORPUS, ids=[p.stem for p in CORPUS])
def test_trace_covers_the_scenario(trace):
    check_trace(trace)


@pytest.mark.parametrize("trace", CORPUS, ids=[p.stem for p in CORPUS])
def test_replay(trace, request):
    trace_env(request).replay(trace)
