"""Model-based differential test of transaction pooling (issue 14).

The model: every client on its own direct connection. Hypothesis draws random interleavings of
protocol messages for 2-4 clients (Parse named and unnamed, valid and invalid SQL, duplicate
names; Bind; Describe of statements and portals; Execute with row limits; Close; Sync; Flush;
simple Queries with SET, DEALLOCATE, PREPARE, LISTEN, NOTIFY, BEGIN/COMMIT/ROLLBACK, errors and
DDL that changes a result type). The steps run first on direct connections to Postgres (the draws
see what they answer: who is in a transaction block, who has an unfinished batch), then, after
the database is reset, through a proxy in transaction pooling with a pool of 1 or 2 server
connections. Every client must receive the same messages both times (RowDescription without
table OIDs and column numbers, which DDL renumbers; ErrorResponse/NoticeResponse as SQLSTATE and
message; BackendKeyData left out) and the same notifications (compared as a multiset per client:
their moment is asynchronous on a direct connection too).

Steps never make the pool wait: a client may act while it holds a server connection (in a
transaction block, in an unfinished batch, or pinned by LISTEN/PREPARE, counted pessimistically)
or while fewer clients than the pool size hold one.

``make test`` runs ``IASQL_MODEL_EXAMPLES`` examples (default 30); ``make model`` runs a long
search (2000). A failure found this way becomes a plain test in ``test_exactness.py``.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.pooling.model import check, draw_step

EXAMPLES = int(os.environ.get("IASQL_MODEL_EXAMPLES", "30"))

pytestmark = pytest.mark.timeout(max(600, EXAMPLES * 30))


@settings(max_examples=EXAMPLES, deadline=None, derandomize=os.environ.get("IASQL_MODEL_RANDOM") is None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.data_too_large])
@given(data=st.data())
def test_clients_cannot_tell_they_share_a_pool(data, model_env):
    clients = data.draw(st.integers(2, 4), label="clients")
    pool = data.draw(st.sampled_from((1, 2)), label="pool")
    count = data.draw(st.integers(3, 25), label="steps")
    taken = []

    def choose(models):
        if len(taken) == count:
            return None
        taken.append(1)
        return draw_step(data, models, pool)

    check(model_env, pool, clients, choose)
