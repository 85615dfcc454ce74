"""The short fuzz campaign of ``make test`` (``IASQL_FUZZ_INPUTS`` inputs, default 400; the long
one is ``make fuzz N=...``): after every batch the proxy answers a fresh client, SHOW POOLS is back
to idle, the log has no traceback, memory is bounded, and every good client got its own answers."""

from __future__ import annotations

import os

import pytest

from tests.fuzz.campaign import Campaign, prepare_database

INPUTS = int(os.environ.get("IASQL_FUZZ_INPUTS", "400"))

pytestmark = pytest.mark.timeout(max(300, INPUTS))


@pytest.fixture(scope="module")
def fuzz_proxy(pg, proxy_ini, start_proxy):
    prepare_database(pg, "fuzz")
    return start_proxy(proxy_ini(pool_mode="transaction", default_pool_size=4, query_wait_timeout=20,
                                 admin_users="postgres", log_connections=0, log_disconnections=0), "fuzz-proxy")


def test_short_fuzz_campaign(fuzz_proxy):
    campaign = Campaign(fuzz_proxy.port, fuzz_proxy.process.pid, fuzz_proxy.log, "fuzz", seed=1,
                        batch_size=100, workers=8)
    res = campaign.run(INPUTS)
    assert res.inputs == INPUTS
    assert res.good_queries > 0
    assert (res.crashes, res.tracebacks, res.leaks, res.fresh_client_failures, res.cross_client) == (0, 0, 0, 0, 0), \
        res.problems
    assert res.max_rss_mib <= res.rss_limit_mib, res.to_json()
