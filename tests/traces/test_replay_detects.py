"""Replay fails, pointing at the right message, when the proxy's replies differ from the trace; and
passes when only what legitimately differs (server version, keys, OIDs, source lines) differs.

Two ways to get a "broken proxy": a trace whose recorded backend side was edited (the proxy is
right, the recording says otherwise), and a proxy run in-process with a monkeypatched codec.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from pathlib import Path


from proxy.wire import backend as B
from tests.support.traces import TRACES, trace_env, trace_test

TRACE = TRACES / "psycopg.jsonl"


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def _write(path: Path, lines: list[dict]) -> Path:
    path.write_text("".join(json.dumps(o) + "\n" for o in lines))
    return path


def _find(lines, msg, pred=lambda o: True) -> dict:
    return next(o for o in lines if o.get("msg") == msg and pred(o))


def _set(line: dict, message) -> None:
    line["hex"] = message.encode().hex()


def test_edited_datarow_is_reported_at_its_index(request, tmp_path):
    lines = _lines(TRACE)
    # the row of the extended-protocol query (the first ["2", "two"] is the multi-statement one's)
    row = [o for o in lines if o.get("msg") == "DataRow" and o["fields"]["values"] == ["2", "two"]][1]
    _set(row, B.DataRow((b"2", b"TWO")))
    result = trace_env(request).run(_write(tmp_path / "edited.jsonl", lines))
    assert not result.ok
    assert result.index == row["i"]
    assert f"message #{row['i']} (backend DataRow)" in result.diff
    assert 'expected: DataRow {"values": ["2", "TWO"]}' in result.diff
    assert 'got:      DataRow {"values": ["2", "two"]}' in result.diff
    assert "SELECT id, name FROM trace_items WHERE id = $1" in result.diff  # what was sent before it


def test_edited_sqlstate_is_reported(request, tmp_path):
    lines = _lines(TRACE)
    err = _find(lines, "ErrorResponse", lambda o: o["fields"]["C"] == "22012")
    fields = tuple((k, "22003" if k == "C" else v) for k, v in err["fields"].items())
    _set(err, B.ErrorResponse(fields))
    result = trace_env(request).run(_write(tmp_path / "edited_error.jsonl", lines))
    assert result.index == err["i"]
    assert "field 'C': expected \"22003\", got \"22012\"" in result.diff


def test_missing_message_is_reported(request, tmp_path):
    lines = _lines(TRACE)
    cc = _find(lines, "CommandComplete", lambda o: o["fields"]["tag"] == "COPY 2")
    extra = dict(cc, i=cc["i"], msg="NoticeResponse", fields={})
    _set(extra, B.NoticeResponse.build("NOTICE", "00000", "one more"))
    lines.insert(lines.index(cc), extra)
    result = trace_env(request).run(_write(tmp_path / "extra.jsonl", lines))
    assert result.index == cc["i"] and "expected: NoticeResponse" in result.diff
    assert 'got:      CommandComplete {"tag": "COPY 2"}' in result.diff


def test_what_legitimately_differs_is_ignored(request, tmp_path):
    lines = _lines(TRACE)
    _set(_find(lines, "ParameterStatus", lambda o: o["fields"]["name"] == "server_version"),
         B.ParameterStatus("server_version", "99.9 (elsewhere)"))
    _set(_find(lines, "ParameterStatus", lambda o: o["fields"]["name"] == "TimeZone"),
         B.ParameterStatus("TimeZone", "Pacific/Chatham"))
    _set(_find(lines, "BackendKeyData"), B.BackendKeyData(1, 2))
    rd = _find(lines, "RowDescription", lambda o: o["fields"]["fields"][0]["table_oid"] != 0)
    msg = B.RowDescription.decode(bytes.fromhex(rd["hex"])[5:])
    _set(rd, B.RowDescription(tuple(__import__("dataclasses").replace(f, table_oid=f.table_oid + 777)
                                    for f in msg.fields)))
    err = _find(lines, "ErrorResponse", lambda o: o["fields"]["C"] == "22012")
    _set(err, B.ErrorResponse(tuple((k, "12345" if k == "L" else v) for k, v in err["fields"].items())))
    result = trace_env(request).run(_write(tmp_path / "variable.jsonl", lines))
    assert result.ok, result.diff
    assert result.cancels == 1


def test_marked_digits_are_normalised(request, tmp_path):
    lines = _lines(TRACE)
    row = _find(lines, "DataRow", lambda o: o["fields"]["values"] == ["42", "answer"])
    _set(row, B.DataRow((b"17", b"answer")))
    result = trace_env(request).run(_write(tmp_path / "digits.jsonl", lines))
    assert result.index == row["i"]
    row["variable"] = [0]  # column 0's digits vary: replay compares "#"
    result = trace_env(request).run(_write(tmp_path / "digits.jsonl", lines))
    assert result.ok, result.diff


class _InProcessProxy:
    """``serve(cfg)`` on its own event loop in a thread (so this process's monkeypatches apply)."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="trace-inproc-proxy")
        self.app = None

    def __enter__(self):
        from proxy.server import serve

        self.thread.start()
        self.app = asyncio.run_coroutine_threadsafe(serve(self.cfg), self.loop).result(30)
        return self

    def __exit__(self, *exc):
        asyncio.run_coroutine_threadsafe(self.app.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def test_proxy_with_broken_codec_fails_at_the_right_message(request, tmp_path, monkeypatch):
    """The proxy builds the login's ParameterStatus messages itself: a codec that upper-cases their
    values makes replay stop at the first non-variable one whose value changes (integer_datetimes)."""
    from proxy.config import load_config
    from tests.traces.stack import proxy_ini

    env = trace_env(request)
    ini = tmp_path / "broken.ini"
    ini.write_text(proxy_ini(env.pg, env.moto.endpoint_url, request.getfixturevalue("dev_certs"),
                             tmp_path / "userlist.txt").replace("[proxy]", "[proxy]\nlisten_port = 0", 1))
    original = B.ParameterStatus.encode
    monkeypatch.setattr(B.ParameterStatus, "encode",
                        lambda self: original(B.ParameterStatus(self.name, self.value.upper())))
    with _InProcessProxy(load_config(ini)) as proxy:
        result = env.run(TRACE, dsn_port=proxy.app.port)
    lines = _lines(TRACE)
    variable = lines[0]["variable"]["parameter_status"]
    want = _find(lines, "ParameterStatus", lambda o: o["fields"]["name"] not in variable
                 and o["fields"]["value"] != o["fields"]["value"].upper())
    assert result.index == want["i"], result.diff
    name, value = want["fields"]["name"], want["fields"]["value"]
    assert f'expected: ParameterStatus {{"name": "{name}", "value": "{value}"}}' in result.diff
    assert f'got:      ParameterStatus {{"name": "{name}", "value": "{value.upper()}"}}' in result.diff


def test_cli_exit_status_and_diff(request, tmp_path):
    env = trace_env(request)
    lines = _lines(TRACE)
    row = _find(lines, "DataRow", lambda o: o["fields"]["values"] == ["still alive"])
    _set(row, B.DataRow((b"still dead",)))
    edited = _write(tmp_path / "cli_edit.jsonl", lines)
    from tests.traces.stack import drop_database, fresh_database

    fresh_database(env.pg, "trace_cli")
    try:
        cmd = [sys.executable, "-m", "proxy.cli", "replay", str(edited), "--dsn", env.dsn("trace_cli")]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    finally:
        drop_database(env.pg, "trace_cli")
    assert res.returncode == 1, res.stderr
    assert f"replay differs at message #{row['i']} (backend DataRow)" in res.stdout
    res = subprocess.run([sys.executable, "-m", "proxy.cli", "replay", str(tmp_path / "nope.jsonl"), "--dsn", "x"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "bad trace" in res.stderr


# the one-line form a regression test takes (tests/support/traces.py)
test_psycopg_trace_one_line = trace_test("psycopg.jsonl")
