"""Transaction pooling that no client can tell from its own connection (regression tests, one per
finding; the model-based differential test is ``test_model.py``)."""

from __future__ import annotations

import time

import pytest

from proxy.wire import frontend as F
from tests.support.faults import RawConn

pytestmark = pytest.mark.timeout(120)


def test_notification_during_the_proxys_own_check_reaches_the_listener(txn_proxy, pool_db):
    """LISTEN pins the client, and after its transaction the proxy asks the server whether the pin
    still holds: a NOTIFY from another client in that moment used to be dropped with the check's
    replies. Every notification must arrive."""
    with RawConn(txn_proxy.port, timeout=15) as listener, RawConn(txn_proxy.port, timeout=15) as notifier:
        listener.startup("postgres", pool_db, password="postgres")
        notifier.startup("postgres", pool_db, password="postgres")
        got = []
        for i in range(20):
            listener.send(F.Query(f"LISTEN ch{i}").encode())
            assert listener.read_until_ready()[-1] == ("Z", b"I")
            notifier.query(f"NOTIFY ch{i}, 'p{i}'")  # while the proxy checks the listener's pins
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                msgs = listener.query("SELECT 1")
                notes = [p for t, p in msgs if t == "A"]
                if notes:
                    got.append(i)
                    break
            listener.query(f"UNLISTEN ch{i}")
        assert got == list(range(20))
