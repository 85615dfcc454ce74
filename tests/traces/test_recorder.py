"""The recorder without a network: framing from arbitrary chunks, decoding, redaction, the bounded
queue marking a trace incomplete, cancel requests folded into the cancelled session, the cheap hot
path, and ``--record-dir``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from proxy.trace import recorder as R
from proxy.wire import backend as B
from proxy.wire import frontend as F

SECRET_FIRST = b"n,,n=,r=SECRETNONCEfirst"
SECRET_FINAL = b"c=biws,r=SECRETNONCEfirstSERVER,p=SECRETPROOF"


class _Session:
    peer = "127.0.0.1:5555"


def _session_bytes():
    """(frontend chunks, backend chunks) in the order they happen: a list of (dir, bytes)."""
    return [
        ("f", F.SSLRequest().encode()),
        ("b", b"S"),
        ("f", F.StartupMessage(F.PROTOCOL_3_0, {"user": "alice", "database": "db1"}).encode()),
        ("b", B.Authentication.sasl(["SCRAM-SHA-256"]).encode()),
        ("f", F.SASLInitialResponse("SCRAM-SHA-256", SECRET_FIRST).encode()),
        ("b", B.Authentication(B.AUTH_SASL_CONTINUE, b"r=SECRETNONCEfirstSERVER,s=SALTSALT,i=4096").encode()),
        ("f", F.SASLResponse(SECRET_FINAL).encode()),
        ("b", B.Authentication(B.AUTH_SASL_FINAL, b"v=SECRETSIGNATURE").encode()
         + B.AUTHENTICATION_OK + B.ParameterStatus("server_version", "15.1").encode()
         + B.BackendKeyData(1234, 5678).encode() + B.ReadyForQuery(b"I").encode()),
        ("f", F.Query("SELECT 1 AS a").encode()),
        ("b", B.RowDescription((B.FieldDescription("a", type_oid=23, type_size=4),)).encode()
         + B.DataRow((b"1",)).encode() + B.CommandComplete("SELECT 1").encode()
         + B.NoticeResponse.build("NOTICE", "00000", "took 12 ms").encode() + B.ReadyForQuery(b"I").encode()),
        ("f", F.Terminate().encode()),
    ]


def _record(tmp_path: Path, chunking: int | None, writer=None) -> list[dict]:
    rec = R.Recorder.for_session(tmp_path, _Session())
    if writer is not None:
        rec._writer = writer
    for d, data in _session_bytes():
        feed = rec.frontend if d == "f" else rec.backend
        if chunking is None:
            feed(data)
        else:
            for i in range(0, len(data), chunking):
                feed(data[i:i + chunking])
    rec.close()
    assert R.flush()
    files = list(tmp_path.glob("*.jsonl"))
    assert len(files) == 1, files
    return [json.loads(line) for line in files[0].read_text().splitlines()]


def _strip_times(lines):
    return [{k: v for k, v in o.items() if k not in ("t_us", "time", "client")} for o in lines]


def test_chunking_does_not_matter(tmp_path):
    whole = _record(tmp_path / "whole", None)
    bytewise = _record(tmp_path / "bytes", 1)
    odd = _record(tmp_path / "odd", 7)
    assert _strip_times(whole) == _strip_times(bytewise) == _strip_times(odd)


def test_lines_decoded_and_redacted(tmp_path):
    lines = _record(tmp_path, 3)
    head, msgs, end = lines[0], lines[1:-1], lines[-1]
    assert head["trace"] == "iasql-proxy" and head["format"] == 1
    assert "server_version" in head["variable"]["parameter_status"]
    assert end == {"end": True, "t_us": end["t_us"], "complete": True}
    names = [(m["dir"], m["msg"]) for m in msgs]
    assert names == [
        ("frontend", "SSLRequest"), ("backend", "SSLResponse"), ("frontend", "StartupMessage"),
        ("backend", "AuthenticationSASL"), ("frontend", "SASLInitialResponse"),
        ("backend", "AuthenticationSASLContinue"), ("frontend", "SASLResponse"),
        ("backend", "AuthenticationSASLFinal"), ("backend", "AuthenticationOk"), ("backend", "ParameterStatus"),
        ("backend", "BackendKeyData"), ("backend", "ReadyForQuery"), ("frontend", "Query"),
        ("backend", "RowDescription"), ("backend", "DataRow"), ("backend", "CommandComplete"),
        ("backend", "NoticeResponse"), ("backend", "ReadyForQuery"), ("frontend", "Terminate")]
    assert [m["i"] for m in msgs] == list(range(len(msgs)))
    by = {m["msg"]: m for m in msgs}
    for name in ("SASLInitialResponse", "SASLResponse", "AuthenticationSASLContinue", "AuthenticationSASLFinal"):
        assert by[name]["redacted"] is True and by[name]["hex"] is None
    assert by["SASLInitialResponse"]["fields"] == {"mechanism": "SCRAM-SHA-256"}
    text = (tmp_path / next(p.name for p in tmp_path.glob("*.jsonl"))).read_text()
    for secret in (b"SECRETNONCE", b"SECRETPROOF", b"SECRETSIGNATURE", b"SALTSALT"):
        assert secret.decode() not in text and secret.hex() not in text
    assert by["StartupMessage"]["fields"]["parameters"] == {"user": "alice", "database": "db1"}
    assert by["DataRow"]["fields"] == {"values": ["1"]}
    assert bytes.fromhex(by["DataRow"]["hex"]) == B.DataRow((b"1",)).encode()
    assert by["NoticeResponse"]["variable"] == ["M"]  # a duration: replay normalises its digits
    assert by["Query"]["fields"] == {"query": "SELECT 1 AS a"}
    assert "alice@db1" in next(tmp_path.glob("*.jsonl")).name


def test_full_queue_marks_trace_incomplete_without_blocking(tmp_path):
    w = R._Writer(max_events=1000, max_bytes=1 << 20)
    consumed = w.queue
    w.queue = __import__("queue").Queue(3)  # the writer thread still reads `consumed`: nothing drains this one
    t = time.perf_counter()
    rec = R.Recorder.for_session(tmp_path, _Session())
    rec._writer = w
    for d, data in _session_bytes():
        (rec.frontend if d == "f" else rec.backend)(data)
    rec.close()
    assert time.perf_counter() - t < 0.5  # never blocked
    assert rec.dropped_bytes > 0 and list(w.late_closes) == [rec]
    while not w.queue.empty():
        consumed.put(w.queue.get())
    w.queue = consumed
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any('"end"' in p.read_text() for p in tmp_path.glob("*.jsonl")):
        time.sleep(0.05)
    lines = [json.loads(x) for x in next(tmp_path.glob("*.jsonl")).read_text().splitlines()]
    assert lines[-1]["complete"] is False and lines[-1]["dropped_bytes"] == rec.dropped_bytes
    # the three events that fitted are there, nothing after the gap
    assert [m["msg"] for m in lines[1:-1]] == ["SSLRequest", "SSLResponse", "StartupMessage"]
    w.stop()


def test_cancel_request_is_written_into_the_cancelled_session(tmp_path):
    main = R.Recorder.for_session(tmp_path, _Session())
    for d, data in _session_bytes()[:8]:
        (main.frontend if d == "f" else main.backend)(data)
    main.frontend(F.Query("SELECT pg_sleep(30)").encode())
    cancel = R.Recorder.for_session(tmp_path, _Session())
    cancel.frontend(F.CancelRequest(1234, 5678).encode())
    cancel.close()
    main.backend(B.ErrorResponse.build("ERROR", "57014", "canceling statement due to user request").encode()
                 + B.ReadyForQuery(b"I").encode())
    main.close()
    assert R.flush()
    files = list(tmp_path.glob("*.jsonl"))
    assert len(files) == 1  # the cancel connection has no file of its own
    msgs = [json.loads(x) for x in files[0].read_text().splitlines()][1:-1]
    assert [m["msg"] for m in msgs[-4:]] == ["Query", "CancelRequest", "ErrorResponse", "ReadyForQuery"]
    assert msgs[-3]["conn"] == "cancel" and msgs[-3]["fields"] == {"process_id": 1234, "secret_key": 5678}


def test_unknown_cancel_key_gets_its_own_file(tmp_path):
    cancel = R.Recorder.for_session(tmp_path, _Session())
    cancel.frontend(F.CancelRequest(1, 2).encode())
    cancel.close()
    probe = R.Recorder.for_session(tmp_path, _Session())
    probe.close()  # no bytes at all (a port probe): no file
    assert R.flush()
    files = list(tmp_path.glob("*.jsonl"))
    assert len(files) == 1
    msgs = [json.loads(x) for x in files[0].read_text().splitlines()]
    assert msgs[1]["msg"] == "CancelRequest" and "conn" not in msgs[1]


def test_hot_path_is_cheap(tmp_path):
    rec = R.Recorder.for_session(tmp_path, _Session())
    rec.frontend(F.StartupMessage(F.PROTOCOL_3_0, {"user": "u"}).encode())
    row = B.DataRow((b"x" * 20,)).encode()
    n = 20000
    t = time.perf_counter()
    for _ in range(n):
        rec.backend(row)
    per_call = (time.perf_counter() - t) / n
    rec.close()
    assert R.flush(30)
    assert per_call < 50e-6, f"{per_call * 1e6:.1f} µs per call"


def test_record_dir_option_overrides_the_config(tmp_path, monkeypatch):
    from proxy import cli

    ini = tmp_path / "p.ini"
    ini.write_text("[databases]\n* = host=127.0.0.1 port=5432\n\n[proxy]\nauth_type = trust\n"
                   f"record_dir = {tmp_path / 'from-file'}\n")
    seen = {}
    monkeypatch.setattr(cli, "_serve", lambda cfg: seen.setdefault("cfg", cfg) and 0)
    assert cli.main(["--config", str(ini), "--record-dir", str(tmp_path / "from-cli")]) == 0
    assert seen.pop("cfg").record_dir == tmp_path / "from-cli"
    assert cli.main(["--config", str(ini)]) == 0
    assert seen.pop("cfg").record_dir == tmp_path / "from-file"


@pytest.mark.parametrize("argv", [["replay"], ["replay", "x.jsonl"]])
def test_replay_usage_errors(argv, capsys):
    from proxy import cli

    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
