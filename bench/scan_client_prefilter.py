"""Micro-benchmark of the fast path's client scan (``proxy.wire.fastpath.SCAN_CLIENT``) on typical
short reads: a simple Query and a Parse/Bind/Describe/Execute/Sync batch. Prints ns per call (the
minimum over many repeats) for session pooling (txn False) and transaction pooling (txn True).

    PYTHONPATH=. python bench/scan_client_prefilter.py
"""

from __future__ import annotations

import struct
import timeit

from proxy.wire import fastpath


def msg(t: bytes, body: bytes) -> bytes:
    """One frontend message."""
    return t + struct.pack("!i", len(body) + 4) + body


QUERIES = {
    "select_1": b"SELECT 1",
    "pk_lookup": b"SELECT id, name, email, created_at FROM accounts WHERE id = 42",
    "insert": b"INSERT INTO events (kind, payload, ts) VALUES ('click', '{\"a\": 1}', now())",
    "update": b"UPDATE bucket SET policy = NULL, tags = '{}' WHERE name = 'some-bucket-name' AND region = 'us-east-1'",
}


def reads() -> dict[str, bytes]:
    """The reads benchmarked, by name."""
    out = {f"Q {k}": msg(b"Q", v + b"\0") for k, v in QUERIES.items()}
    text = QUERIES["pk_lookup"].replace(b"42", b"$1")
    out["PBDES pk_lookup"] = (msg(b"P", b"\0" + text + b"\0" + struct.pack("!hi", 1, 23))
                              + msg(b"B", b"\0\0" + struct.pack("!hhih", 0, 1, 2, 1) + b"42" + b"\0\0")
                              + msg(b"D", b"P\0") + msg(b"E", b"\0" + struct.pack("!i", 0)) + msg(b"S", b""))
    return out


def main() -> None:
    print(f"compiled={fastpath.compiled}")
    scan = fastpath.SCAN_CLIENT
    for name, data in reads().items():
        for txn in (False, True):
            assert scan(data, txn, 1 << 30) >= 0, name
            t = min(timeit.repeat(lambda: scan(data, txn, 1 << 30), number=20000, repeat=200)) / 20000
            print(f"{name:20s} len={len(data):4d} txn={txn!s:5s} {t * 1e9:7.1f} ns")


if __name__ == "__main__":
    main()
