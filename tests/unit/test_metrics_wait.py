"""proxy.metrics.Metrics.observe_wait: the pool_wait_seconds histogram it exports is exactly what
prometheus_client's own Histogram exports for the same waits (same buckets, counts and sum)."""

from types import SimpleNamespace

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from proxy.metrics import PREFIX, WAIT_BUCKETS, Metrics


def _series(text: bytes) -> dict[str, float]:
    out = {}
    for line in text.decode().splitlines():
        if line.startswith(PREFIX + "pool_wait_seconds_") and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_pool_wait_histogram_matches_prometheus_client():
    waits = [0.0, 0.0005, 0.00051, 0.003, 0.1, 2.5, 59.9, 60.0, 61.0, 1e-9]
    m = Metrics(SimpleNamespace(sessions=lambda: [], pools={}))
    for w in waits:
        m.observe_wait(SimpleNamespace(database="db"), w)
    reg = CollectorRegistry()
    ref = Histogram(PREFIX + "pool_wait_seconds", "Time clients waited for a server connection",
                    buckets=WAIT_BUCKETS, registry=reg)
    for w in waits:
        ref.observe(w)
    ours = _series(generate_latest(_OnlyWait(m)))
    theirs = {k: v for k, v in _series(generate_latest(reg)).items() if "_created" not in k}
    assert ours == theirs
    assert ours[PREFIX + 'pool_wait_seconds_count'] == len(waits)
    assert m.assignments["db"][0] == len(waits)


class _OnlyWait:
    def __init__(self, m):
        self.m = m

    def collect(self):
        yield self.m.pool_wait()
