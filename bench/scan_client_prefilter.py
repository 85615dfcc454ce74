"""Micro-benchmark of the fast path's client scan (``proxy.wire.fastpath.SCAN_CLIENT``) on typical
short reads: a simple Query and a Parse/Bind/Describe/Execute/Sync batch. Prints ns per call (the
minimum over many repeats) for session pooling (txn False) and transaction pooling (txn True).

    PYTHONPATH=. python bench/scan_client_prefilter.py [path/to/_fastpath.so ...]

With paths, each given build of the C extension is measured instead (e.g. one built from the
previous ``_fastpath.c``, to compare), the builds interleaved round by round.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import struct
import sys
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


def load(path: str):
    """The ``scan_client`` of the C extension built at ``path``."""
    loader = importlib.machinery.ExtensionFileLoader("proxy.wire._fastpath", path)
    spec = importlib.util.spec_from_file_location("proxy.wire._fastpath", path, loader=loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod.scan_client


def main() -> None:
    """Measure each build (or the imported SCAN_CLIENT) on every read, 5 interleaved rounds of 40
    repeats of 20,000 calls, and print the minimum per call in ns, one column per build."""
    paths = sys.argv[1:]
    scans = {p: load(p) for p in paths} if paths else {f"SCAN_CLIENT (compiled={fastpath.compiled})": fastpath.SCAN_CLIENT}
    best: dict[tuple, float] = {}
    for _ in range(5):  # rounds, the builds interleaved
        for label, scan in scans.items():
            for name, data in reads().items():
                for txn in (False, True):
                    assert scan(data, txn, 1 << 30) >= 0, name
                    t = min(timeit.repeat(lambda: scan(data, txn, 1 << 30), number=20000, repeat=40)) / 20000
                    key = (label, name, txn)
                    best[key] = min(best.get(key, t), t)
    labels = list(scans)
    print("read                len txn   " + "  ".join(f"{lb[-24:]:>24s}" for lb in labels) + "  (ns per call, min)")
    for name, data in reads().items():
        for txn in (False, True):
            print(f"{name:18s} {len(data):4d} {txn!s:5s} " + "  ".join(f"{best[(lb, name, txn)] * 1e9:24.1f}" for lb in labels))


if __name__ == "__main__":
    main()
