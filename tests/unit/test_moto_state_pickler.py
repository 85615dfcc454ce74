"""proxy.embedded.moto_state.StatePickler: what moto keeps in a service's state and plain pickle
refuses (locks, conditions, weak dictionaries, a local lambda, cryptography keys) is written so that
it loads back usable."""

from __future__ import annotations

import pickle
import threading
import weakref
from collections import defaultdict

import pytest

from proxy.embedded.moto_state import dumps


class Holder:
    """Something a WeakValueDictionary can point at, with a lock like an SQS queue's."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rlock = threading.RLock()
        self.cond = threading.Condition()
        self.event = threading.Event()
        self.sem = threading.Semaphore(2)
        self.by_name: dict = defaultdict(lambda: {})  # noqa: PIE807 - a local lambda, as moto's Lambda has


def test_locks_come_back_new_and_unlocked() -> None:
    h = Holder()
    h.lock.acquire()
    h.rlock.acquire()
    h.event.set()
    h.by_name["a"]["b"] = 1
    with pytest.raises(TypeError):
        pickle.dumps(h)
    back = pickle.loads(dumps(h))
    assert back.lock.acquire(blocking=False) and back.rlock.acquire(blocking=False)
    assert type(back.lock) is type(threading.Lock()) and type(back.rlock) is type(threading.RLock())
    with back.cond:
        back.cond.notify_all()
    assert back.event.is_set() and back.sem.acquire(blocking=False)
    assert back.by_name == {"a": {"b": 1}} and back.by_name["new"] == {}


def test_weak_containers_keep_their_live_entries() -> None:
    h = Holder()
    weak = weakref.WeakValueDictionary({"h": h})
    back_h, back_weak = pickle.loads(dumps((h, weak)))
    assert back_weak["h"] is back_h


def test_cryptography_keys_and_certificates_round_trip() -> None:
    pytest.importorskip("cryptography")
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "example.com")])
    now = datetime.datetime(2026, 1, 1)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    back_key, back_cert = pickle.loads(dumps((key, cert)))
    assert back_key.private_numbers() == key.private_numbers()
    assert back_cert == cert


class NeedsArgs(defaultdict):
    """Like moto's SSM ParameterDict: a defaultdict whose __init__ takes other arguments."""

    def __init__(self, account_id: str, region_name: str) -> None:
        super().__init__(list)
        self.account_id = account_id
        self.region_name = region_name
        self.loaded = False


def test_defaultdict_subclass_with_its_own_init_round_trips() -> None:
    d = NeedsArgs("123456789012", "us-east-1")
    d["/a"].append(1)
    d.loaded = True
    with pytest.raises(TypeError):
        pickle.loads(pickle.dumps(d))  # plain pickle writes it, and cannot load it back
    back = pickle.loads(dumps({"params": d}))["params"]
    assert type(back) is NeedsArgs and dict(back) == {"/a": [1]} and back.default_factory is list
    assert (back.account_id, back.region_name, back.loaded) == ("123456789012", "us-east-1", True)
    back["/b"].append(2)
    plain = pickle.loads(dumps(defaultdict(list, a=[1])))
    assert type(plain) is defaultdict and plain == {"a": [1]}


def test_what_it_cannot_write_still_raises() -> None:
    with open(__file__) as f, pytest.raises((TypeError, pickle.PicklingError, AttributeError)):
        dumps(f)  # a file object is refused, as plain pickle does
