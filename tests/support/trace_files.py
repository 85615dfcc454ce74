"""Test helpers that read the trace files a recording proxy writes (``record_dir``, one JSON
object per line, ``proxy.trace.format``)."""

from __future__ import annotations

import json
import time
from pathlib import Path


def read_lines(path: Path) -> list[dict]:
    """The decoded lines of trace file ``path``. Raises json.JSONDecodeError for a half-written
    line, OSError when the file cannot be read."""
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def app_name(lines: list[dict]) -> str | None:
    """The ``application_name`` of the traced session's StartupMessage, or None."""
    for o in lines:
        if o.get("msg") == "StartupMessage":
            return o["fields"]["parameters"].get("application_name")
    return None


def wait_for_traces(record_dir: Path, names: set[str], timeout: float = 20.0) -> dict[str, Path]:
    """The closed trace (its end line written) of each application name in ``names``, polled
    every 0.1 s for up to ``timeout`` seconds. Raises AssertionError naming what was found (and
    the directory's files) when one is still missing then."""
    deadline = time.monotonic() + timeout
    while True:
        found = {}
        for f in record_dir.glob("*.jsonl"):
            try:
                lines = read_lines(f)
            except (json.JSONDecodeError, OSError):
                continue
            if lines and lines[-1].get("end") and app_name(lines) in names:
                found[app_name(lines)] = f
        if set(found) == names or time.monotonic() > deadline:
            assert set(found) == names, (sorted(found), sorted(p.name for p in record_dir.glob("*")))
            return found
        time.sleep(0.1)
