"""Secrets never leave aws_credentials: an AWS secret access key written and read through a proxy
with wire tracing on is in none of its trace files, its log, or anything else under its work
directory; the trace still holds the rest of each session; replay refuses a trace whose redacted
statements it cannot send, and compares rows redacted by their column by type only.

The engine is off: plain SQL on a table named ``aws_credentials`` in a fresh database is all the
redaction rules look at. Sessions: psql (simple protocol, a PREPARE/EXECUTE, COPY out and in, an
error naming the secret, an error echoing it), psycopg (extended protocol with the key as a bound
parameter, a named prepared statement, a pipeline, client-side binding, COPY both ways, errors),
and a psycopg session that only reads a view over the table (the column rule).
"""

from __future__ import annotations

import json
import os
import secrets as _secrets
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from proxy.trace.redact import SecretTracker
from proxy.trace.replay import SecretRedactedError, load_trace, replay
from proxy.wire import backend as B
from proxy.wire import frontend as F
from proxy.wire.common import CopyData, CopyDone
from tests.support.proxy import REPO, ProxyProcess
from tests.support.trace_files import read_lines, wait_for_traces

pytestmark = pytest.mark.timeout(180)

TOKEN = _secrets.token_hex(6)
#: Planted keys, one per way in, so that a leak says where it came from.
KEYS = {name: f"wJalrXUtnFEMI/K7MDENG/PLANTED-{name}-{TOKEN}"
        for name in ("psql", "prep", "copyin", "psycopg", "pipeline", "client", "pcopy", "view", "replay")}
DB = "secret_redaction"
REPLAY_DB = "secret_redaction_replay"


def _create_db(pg, name: str, key: str | None = None) -> None:
    """Database ``name`` with ``aws_credentials`` and a view ``creds`` over it (one row with
    ``key`` when given), made directly on Postgres: the traces hold the scenario only."""
    with psycopg.connect(pg.dsn(), autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        c.execute(f'CREATE DATABASE "{name}"')
    with psycopg.connect(pg.dsn(dbname=name), autocommit=True) as c:
        c.execute("CREATE TABLE aws_credentials (id serial primary key, access_key_id varchar, "
                  "secret_access_key varchar)")
        c.execute("CREATE VIEW creds AS SELECT id, access_key_id, secret_access_key FROM aws_credentials")
        if key is not None:
            c.execute("INSERT INTO aws_credentials (access_key_id, secret_access_key) VALUES (%s, %s)",
                      ("AKIAVIEW", key))


def _drop_db(pg, name: str) -> None:
    with psycopg.connect(pg.dsn(), autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _psql_script() -> str:
    k, p, ci = KEYS["psql"], KEYS["prep"], KEYS["copyin"]
    return "\n".join([
        "SELECT 1 AS before_secret;",
        f"INSERT INTO aws_credentials (access_key_id, secret_access_key) VALUES ('AKIAPSQL', '{k}');",
        "SELECT * FROM aws_credentials;",
        "SELECT access_key_id, secret_access_key AS s FROM aws_credentials;",
        "PREPARE ins(text, text) AS INSERT INTO aws_credentials (access_key_id, secret_access_key) VALUES ($1, $2);",
        f"EXECUTE ins('AKIAPREP', '{p}');",
        "COPY aws_credentials TO STDOUT;",
        "COPY aws_credentials (access_key_id, secret_access_key) FROM STDIN;",
        f"AKIACOPY\t{ci}",
        "\\.",
        f"INSERT INTO aws_credentials (access_key_id, secret_access_key, nope) VALUES ('AKIAERR', '{k}', 1);",
        "SELECT secret_access_key::int FROM aws_credentials;",
        "SELECT 1 AS after_secret;",
        "",
    ])


def _run_psycopg(dsn: str) -> None:
    k = KEYS["psycopg"]
    with psycopg.connect(dsn, autocommit=True, application_name="secret_psycopg") as c:
        c.execute("SELECT 1 AS before_secret")
        c.execute("INSERT INTO aws_credentials (access_key_id, secret_access_key) VALUES (%s, %s)", ("AKIAPSY", k))
        rows = c.execute("SELECT access_key_id, secret_access_key FROM aws_credentials WHERE access_key_id = %s",
                         ("AKIAPSY",)).fetchall()
        assert rows == [("AKIAPSY", k)]
        for _ in range(3):  # a named prepared statement: Bind/Execute without Parse after the first
            got = c.execute("SELECT secret_access_key AS s FROM aws_credentials WHERE access_key_id = %s",
                            ("AKIAPSY",), prepare=True).fetchall()
            assert got == [(k,)]
        with c.pipeline():
            c.execute("SELECT 2 AS pipelined")
            c.execute("INSERT INTO aws_credentials (access_key_id, secret_access_key) VALUES (%s, %s)",
                      ("AKIAPIPE", KEYS["pipeline"]))
            c.execute("SELECT 3 AS pipelined")
        cur = psycopg.ClientCursor(c)  # the key as a literal in a Parse (client-side binding)
        cur.execute("INSERT INTO aws_credentials (access_key_id, secret_access_key) VALUES (%s, %s)",
                    ("AKIACLIENT", KEYS["client"]))
        cur.execute("SELECT * FROM aws_credentials")
        assert any(KEYS["client"] in r for r in cur.fetchall())
        with c.cursor().copy("COPY aws_credentials TO STDOUT") as cp:
            out = b"".join(bytes(b) for b in cp)
        assert k.encode() in out
        with c.cursor().copy("COPY aws_credentials (access_key_id, secret_access_key) FROM STDIN") as cp:
            cp.write_row(("AKIAPCOPY", KEYS["pcopy"]))
        with pytest.raises(psycopg.errors.UndefinedColumn):
            c.execute("INSERT INTO aws_credentials (access_key_id, secret_access_key, nope) VALUES (%s, %s, 1)",
                      ("AKIAERR", k))
        with pytest.raises(psycopg.errors.InvalidTextRepresentation) as e:
            c.execute("SELECT secret_access_key::int FROM aws_credentials WHERE access_key_id = %s", ("AKIAPSY",))
        assert k in str(e.value)  # Postgres echoes the value: the trace must not
        c.execute("SELECT 1 AS after_secret")


def _run_view(dsn: str) -> None:
    """Reads through a view: no statement names the table, the column does."""
    with psycopg.connect(dsn, autocommit=True, application_name="secret_view") as c:
        c.execute("SELECT 1 AS before_view")
        rows = c.execute("SELECT * FROM creds WHERE id > %s ORDER BY id", (0,)).fetchall()
        assert [r[2] for r in rows] == [KEYS["view"]]
        c.execute("SELECT 1 AS after_view")


def _after_login(lines: list[dict]) -> list[dict]:
    """The message lines after AuthenticationOk (the login's own redactions come before it)."""
    n = next(i for i, o in enumerate(lines) if o.get("msg") == "AuthenticationOk")
    return [o for o in lines[n + 1:] if "msg" in o]


def _wait_all_closed(record_dir: Path, timeout: float = 15.0) -> None:
    """Wait until every trace under ``record_dir`` has its end line."""
    deadline = time.monotonic() + timeout
    while True:
        open_ = [f.name for f in record_dir.glob("*.jsonl") if not f.read_text(encoding="utf-8").rstrip().endswith(
            "}") or not json.loads(f.read_text(encoding="utf-8").splitlines()[-1]).get("end")]
        if not open_:
            return
        assert time.monotonic() < deadline, open_
        time.sleep(0.1)


def _needles() -> list[tuple[str, bytes]]:
    """Every planted key as text, its random part, and the hex a trace line would hold."""
    out = [("token", TOKEN.encode())]
    for name, key in KEYS.items():
        out += [(name, key.encode()), (name + " hex", key.encode().hex().encode())]
    return out


def _leaks(root: Path) -> list[str]:
    found = []
    for f in sorted(root.rglob("*")):
        if not f.is_file():
            continue
        data = f.read_bytes()
        low = data.lower()
        for what, needle in _needles():
            if needle.lower() in low:
                found.append(f"{what} in {f.relative_to(root)}")
    return found


@pytest.fixture(scope="module")
def scenario(pg, proxy_ini, tmp_path_factory):
    """A traced proxy (its work directory holds proxy.ini, proxy.log and traces/) and the traces of
    the three sessions, by application name."""
    workdir = tmp_path_factory.mktemp("secret-proxy")
    record_dir = workdir / "traces"
    ini = proxy_ini(record_dir=record_dir) + "\n[engine]\nenabled = false\n"
    proxy = ProxyProcess(ini, workdir).start()
    try:
        _create_db(pg, DB)
        dsn = proxy.dsn(password=pg.password, dbname=DB, sslmode="require")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        res = subprocess.run(["psql", "-X", "-q", "-d", dsn + " application_name=secret_psql", "-f", "-"],
                             input=_psql_script(), capture_output=True, text=True, timeout=60, env=env)
        assert res.returncode == 0, res.stderr
        assert KEYS["psql"] in res.stdout and KEYS["copyin"] not in res.stderr
        assert 'column "nope" of relation "aws_credentials" does not exist' in res.stderr
        assert "invalid input syntax for type integer" in res.stderr
        _run_psycopg(dsn)
        with psycopg.connect(pg.dsn(dbname=DB), autocommit=True) as c:  # the view's one row
            c.execute("DELETE FROM aws_credentials")
            c.execute("INSERT INTO aws_credentials (access_key_id, secret_access_key) VALUES ('AKIAVIEW', %s)",
                      (KEYS["view"],))
        _run_view(dsn)
        traces = wait_for_traces(record_dir, {"secret_psql", "secret_psycopg", "secret_view"})
        yield proxy, workdir, traces
    finally:
        proxy.stop()
        _drop_db(pg, DB)


def test_no_planted_key_in_traces_log_or_workdir(scenario):
    _, workdir, traces = scenario
    assert (workdir / "proxy.log").exists() and len(traces) == 3
    assert _leaks(workdir) == []


def _by_query(lines: list[dict], text: str) -> list[dict]:
    return [o for o in lines if o.get("msg") in ("Query", "Parse")
            and text in (o.get("fields") or {}).get("query", "")]


def test_psql_trace_keeps_everything_else(scenario):
    lines = read_lines(scenario[2]["secret_psql"])
    assert lines[-1]["complete"] is True
    for text in ("SELECT 1 AS before_secret", "SELECT 1 AS after_secret"):
        (q,) = _by_query(lines, text)
        assert q["hex"] and bytes.fromhex(q["hex"])[:1] == b"Q"
    after = next(o for o in lines if "after_secret" in json.dumps(o.get("fields")))
    row = next(o for o in lines[lines.index(after):] if o.get("msg") == "DataRow")
    assert row["fields"] == {"values": ["1"]} and row["hex"]
    redacted = [o for o in _after_login(lines) if o.get("redacted")]
    kinds = {(o["dir"], o["msg"]) for o in redacted}
    assert {("frontend", "Query"), ("backend", "DataRow"), ("backend", "CopyData"), ("frontend", "CopyData"),
            ("backend", "ErrorResponse")} <= kinds
    for o in redacted:
        assert o["hex"] is None and o["len"] > 0
    # the INSERT, the PREPARE and the EXECUTE (which names no table) are all redacted
    assert sum(1 for o in redacted if o["msg"] == "Query") == 9
    codes = sorted(o["fields"]["C"] for o in redacted if o["msg"] == "ErrorResponse")
    assert codes == ["22P02", "42703"]
    assert {"INSERT 0 1", "COPY 1"} <= {(o.get("fields") or {}).get("tag") for o in lines
                                          if o.get("msg") == "CommandComplete"}


def test_psycopg_trace_redacts_binds_and_keeps_the_rest(scenario):
    lines = read_lines(scenario[2]["secret_psycopg"])
    assert lines[-1]["complete"] is True
    for text in ("SELECT 1 AS before_secret", "SELECT 1 AS after_secret", "SELECT 2 AS pipelined",
                 "SELECT 3 AS pipelined"):
        (p,) = _by_query(lines, text)
        assert p["hex"]
    binds = [o for o in lines if o.get("msg") == "Bind"]
    assert any(o.get("redacted") for o in binds)
    assert any(not o.get("redacted") and o["hex"] for o in binds)  # the SELECTs without a secret
    prepared = [o for o in binds if o.get("redacted") and o["fields"]["statement"]]
    assert len(prepared) >= 3  # each execution of the named statement, Parse'd once
    rows = [o for o in lines if o.get("msg") == "DataRow"]
    assert any(o.get("redacted") for o in rows) and any(o["hex"] for o in rows)


def test_view_rows_redacted_by_their_column(scenario):
    lines = read_lines(scenario[2]["secret_view"])
    assert not any(o.get("redacted") and o["dir"] == "frontend" for o in _after_login(lines))
    rows = [o for o in lines if o.get("msg") == "DataRow"]
    assert [o.get("redacted", False) for o in rows] == [False, True, False]
    assert rows[1]["len"] > len(KEYS["view"])


def test_replay_refuses_redacted_statements(scenario, pg):
    proxy, _, traces = scenario
    path = traces["secret_psql"]
    first = next(o for o in load_trace(path).messages
                 if o.get("redacted") and o["dir"] == "frontend" and o["msg"] == "Query")
    dsn = proxy.dsn(password=pg.password, dbname="nonexistent_never_reached")
    with pytest.raises(SecretRedactedError) as e:
        replay(path, dsn)
    assert e.value.index == first["i"]
    assert f"message #{first['i']} (frontend Query)" in str(e.value) and "secret" in str(e.value)
    res = subprocess.run([sys.executable, "-m", "proxy.cli", "replay", str(path), "--dsn", dsn],
                         capture_output=True, text=True, timeout=60, cwd=REPO)
    assert res.returncode == 2, res.stderr
    assert f"cannot replay {path}: message #{first['i']}" in res.stderr


def test_replay_compares_redacted_rows_by_type(scenario, pg):
    proxy, workdir, traces = scenario
    path = traces["secret_view"]
    dsn = proxy.dsn(password=pg.password, dbname=REPLAY_DB, sslmode="require")
    try:
        _create_db(pg, REPLAY_DB)  # no row: the redacted DataRow is missing
        result = replay(path, dsn)
        row = next(o for o in _after_login(load_trace(path).messages) if o.get("redacted"))
        assert not result.ok and result.index == row["i"]
        assert "a message of another type arrived" in result.diff
        assert "got:      CommandComplete (contents not shown)" in result.diff
        _create_db(pg, REPLAY_DB, key=KEYS["replay"])  # another key: only the type is compared
        result = replay(path, dsn)
        assert result.ok, result.diff
        assert result.redacted == 1 and "1 redacted" in result.summary()
    finally:
        _drop_db(pg, REPLAY_DB)
    _wait_all_closed(workdir / "traces")  # the replay sessions were traced too
    assert _leaks(workdir) == []


# -- the rules on synthetic message streams (no network) ---------------------------------------------

SECRET = b"wJalrXUtnFEMI/K7MDENG/SYNTHETIC"
_SECRET_ROW = B.RowDescription((B.FieldDescription("id", type_oid=23, type_size=4),
                                B.FieldDescription("secret_access_key", type_oid=1043)))
_PLAIN_ROW = B.RowDescription((B.FieldDescription("a", type_oid=23, type_size=4),))


def _feed(stream) -> list[tuple[str, str, bool]]:
    """Feed ("f"|"b", message) pairs to a tracker; returns (dir, type letter, redacted) per message."""
    t = SecretTracker()
    out = []
    for d, m in stream:
        raw = m.encode()
        kept = (t.frontend if d == "f" else t.backend)(raw[0], raw)
        out.append((d, chr(raw[0]), kept is not None))
    assert not t.units and t.batch is None, "units left outstanding: the pairing drifted"
    return out


def _select_one():
    return [("f", F.Query("SELECT 1 AS a")), ("b", _PLAIN_ROW), ("b", B.DataRow((b"1",))),
            ("b", B.CommandComplete("SELECT 1")), ("b", B.ReadyForQuery(b"I"))]


def _redacted(out) -> list[tuple[str, str]]:
    return [(d, t) for d, t, r in out if r]


def test_simple_copy_in_then_plain_query():
    out = _feed([("f", F.Query("COPY aws_credentials (access_key_id, secret_access_key) FROM STDIN")),
                 ("b", B.CopyInResponse(0, (0, 0))), ("f", CopyData(b"AKIA\t" + SECRET + b"\n")), ("f", CopyDone()),
                 ("b", B.CommandComplete("COPY 1")), ("b", B.ReadyForQuery(b"I"))] + _select_one())
    assert _redacted(out) == [("f", "Q"), ("f", "d")]


def test_extended_copy_in_with_libpq_syncs():
    """libpq sends Sync right after Execute and again after CopyDone; Postgres ignores the first."""
    out = _feed([("f", F.Parse("", "COPY aws_credentials FROM STDIN")), ("f", F.Bind("", "")),
                 ("f", F.Execute("")), ("f", F.Sync()), ("b", B.ParseComplete()), ("b", B.BindComplete()),
                 ("b", B.CopyInResponse(0, (0, 0, 0))), ("f", CopyData(b"1\tAKIA\t" + SECRET + b"\n")),
                 ("f", CopyDone()), ("f", F.Sync()), ("b", B.CommandComplete("COPY 1")),
                 ("b", B.ReadyForQuery(b"I"))] + _select_one())
    assert _redacted(out) == [("f", "P"), ("f", "B"), ("f", "d")]


def test_secret_error_and_notice_keep_their_code_only():
    t = SecretTracker()
    q = F.Query(f"SELECT secret_access_key::int FROM aws_credentials -- {SECRET.decode()}").encode()
    assert t.frontend(q[0], q) == {}
    err = B.ErrorResponse.build("ERROR", "22P02", f'invalid input syntax for type integer: "{SECRET.decode()}"').encode()
    assert t.backend(err[0], err) == {"S": "ERROR", "V": "ERROR", "C": "22P02"}


def test_view_rows_across_portal_suspended_and_later_executions():
    """No statement names the table: the column does, for this portal and the statement's later runs."""
    run = [("f", F.Bind("", "s1")), ("f", F.Execute("", 0)), ("f", F.Sync()), ("b", B.BindComplete()),
           ("b", B.DataRow((b"1", SECRET))), ("b", B.CommandComplete("SELECT 1")), ("b", B.ReadyForQuery(b"I"))]
    out = _feed([("f", F.Parse("s1", "SELECT * FROM creds")), ("f", F.Describe(b"S", "s1")), ("f", F.Sync()),
                 ("b", B.ParseComplete()), ("b", B.ParameterDescription(())), ("b", _SECRET_ROW),
                 ("b", B.ReadyForQuery(b"I"))]
                + run
                + [("f", F.Parse("", "SELECT * FROM creds")), ("f", F.Bind("c1", "")), ("f", F.Describe(b"P", "c1")),
                   ("f", F.Execute("c1", 1)), ("f", F.Sync()), ("b", B.ParseComplete()), ("b", B.BindComplete()),
                   ("b", _SECRET_ROW), ("b", B.DataRow((b"1", SECRET))), ("b", B.PortalSuspended()),
                   ("b", B.ReadyForQuery(b"T")), ("f", F.Execute("c1", 1)), ("f", F.Sync()),
                   ("b", B.DataRow((b"2", SECRET))), ("b", B.PortalSuspended()), ("b", B.ReadyForQuery(b"T"))]
                + _select_one())
    assert _redacted(out) == [("b", "D")] * 3
    assert [r for d, t, r in out if t == "D" and d == "b"] == [True, True, True, False]


def test_sql_prepared_statement_and_cursor_names():
    out = _feed([("f", F.Query("PREPARE ins(text) AS INSERT INTO aws_credentials (secret_access_key) VALUES ($1)")),
                 ("b", B.CommandComplete("PREPARE")), ("b", B.ReadyForQuery(b"I")),
                 ("f", F.Query(f"EXECUTE ins('{SECRET.decode()}')")), ("b", B.CommandComplete("INSERT 0 1")),
                 ("b", B.ReadyForQuery(b"I")),
                 ("f", F.Query('DECLARE "Cur" CURSOR WITH HOLD FOR SELECT secret_access_key AS s FROM aws_credentials')),
                 ("b", B.CommandComplete("DECLARE CURSOR")), ("b", B.ReadyForQuery(b"I")),
                 ("f", F.Query('FETCH ALL "Cur"')), ("b", _PLAIN_ROW), ("b", B.DataRow((SECRET,))),
                 ("b", B.CommandComplete("FETCH 1")), ("b", B.ReadyForQuery(b"I"))] + _select_one())
    assert _redacted(out) == [("f", "Q"), ("f", "Q"), ("f", "Q"), ("f", "Q"), ("b", "D")]


def test_pipelined_units_never_under_redact():
    """Several units in flight: the secret one's replies are redacted, so may be its neighbours'."""
    out = _feed([("f", F.Query("SELECT 1 AS a")), ("f", F.Query("SELECT secret_access_key FROM aws_credentials")),
                 ("b", _PLAIN_ROW), ("b", B.DataRow((b"1",))), ("b", B.CommandComplete("SELECT 1")),
                 ("b", B.ReadyForQuery(b"I")), ("b", _PLAIN_ROW), ("b", B.DataRow((SECRET,))),
                 ("b", B.CommandComplete("SELECT 1")), ("b", B.ReadyForQuery(b"I"))] + _select_one())
    assert out[7] == ("b", "D", True) and out[-3] == ("b", "D", False)


def test_secrets_manager_values_are_redacted_too():
    """A statement on the ``secret`` table (aws_secrets_manager) is secret; ``secrets`` is not."""
    out = _feed([("f", F.Query(f"INSERT INTO secret (name, value) VALUES ('db', '{SECRET.decode()}')")),
                 ("b", B.CommandComplete("INSERT 0 1")), ("b", B.ReadyForQuery(b"I")),
                 ("f", F.Parse("", 'SELECT value FROM public."Secret"')), ("f", F.Bind("", "")), ("f", F.Execute("")),
                 ("f", F.Sync()), ("b", B.ParseComplete()), ("b", B.BindComplete()), ("b", B.DataRow((SECRET,))),
                 ("b", B.CommandComplete("SELECT 1")), ("b", B.ReadyForQuery(b"I")),
                 ("f", F.Query("SELECT 1 AS secrets")), ("b", _PLAIN_ROW), ("b", B.DataRow((b"1",))),
                 ("b", B.CommandComplete("SELECT 1")), ("b", B.ReadyForQuery(b"I"))])
    assert _redacted(out) == [("f", "Q"), ("f", "P"), ("f", "B"), ("b", "D")]
    from proxy import logs

    assert logs.redact_statement("UPDATE secret SET value = 'x'") == logs.REDACTED
    assert logs.redact_statement("SELECT count(*) FROM secrets_archive") == "SELECT count(*) FROM secrets_archive"


def test_log_lines_never_carry_a_statement_on_aws_credentials(stderr):
    import logging

    from proxy import logs

    lg = logging.getLogger("iasql_proxy.test_secret")
    stmt = f"INSERT INTO aws_credentials (access_key_id, secret_access_key) VALUES ('AKIA', '{SECRET.decode()}')"
    logs.info(lg, "event=fast client=%s reason=%r", "127.0.0.1:5", stmt)
    lg.warning("event=slow user=%s command=%r", "alice", stmt)
    try:
        raise RuntimeError("cannot run " + stmt)
    except RuntimeError:
        lg.exception("event=failed client=%s", "127.0.0.1:6")
    lg.info("event=plain user=%s", "bob")
    err = stderr.getvalue()
    assert SECRET.decode() not in err
    assert "event=fast client=127.0.0.1:5 reason='<redacted: may hold a secret>'" in err
    assert "event=slow user=alice command='<redacted: may hold a secret>'" in err
    assert "RuntimeError: <redacted: may hold a secret>" in err and 'File "' in err
    assert "event=plain user=bob" in err


def test_log_lines_never_carry_a_module_rpc_secret_argument(stderr):
    """A statement calling set_user_password or certificate_import (a password, a private key in
    its text) is never substituted into a log line; Postgres's own password messages stay."""
    import logging


    lg = logging.getLogger("iasql_proxy.test_secret")
    lg.warning("event=slow command=%r", "SELECT * FROM Set_User_Password('alice', 'Pw-in-log-1')")
    lg.warning("event=slow command=%r", "SELECT * FROM certificate_import('c', 'KEY-in-log-2', NULL)")
    lg.warning("event=login_failed error=%s", 'password authentication failed for user "bob"')
    err = stderr.getvalue()
    assert "Pw-in-log-1" not in err and "KEY-in-log-2" not in err
    assert err.count("command='<redacted: may hold a secret>'") == 2
    assert "password authentication failed for user" in err


def test_module_rpc_secrets_arguments_results_and_columns():
    """set_user_password/certificate_import texts and Binds are secret; access_key_request's and
    key_pair_request's texts are kept but their rows redacted (aliased columns too, and a later run
    of the prepared statement); key_pair_import (a public key) is not secret."""
    from proxy.trace.redact import is_secret_column

    def rows_of(name, *values):
        return [("b", B.RowDescription(tuple(B.FieldDescription(n, type_oid=1043) for n in name))),
                ("b", B.DataRow(values)), ("b", B.CommandComplete("SELECT 1")), ("b", B.ReadyForQuery(b"I"))]

    out = _feed([("f", F.Query("SELECT * FROM Set_User_Password('alice', 'TraceSecretPw99')"))]
                + rows_of(("status", "message"), b"OK", b"")
                + [("f", F.Parse("", "SELECT * FROM certificate_import($1, $2, NULL)")), ("f", F.Bind("", "")),
                   ("f", F.Execute("")), ("f", F.Sync()), ("b", B.ParseComplete()), ("b", B.BindComplete()),
                   ("b", B.DataRow((b"arn",))), ("b", B.CommandComplete("SELECT 1")), ("b", B.ReadyForQuery(b"I"))]
                + [("f", F.Query("SELECT * FROM access_key_request('alice') AS t(a, b, c, d)"))]
                + rows_of(("a", "b", "c", "d"), b"SUCCESS", b"", b"AKIA", SECRET)
                + [("f", F.Parse("kp", "SELECT * FROM key_pair_request($1, NULL) AS t(a, b, c, d)")),
                   ("f", F.Sync()), ("b", B.ParseComplete()), ("b", B.ReadyForQuery(b"I")),
                   ("f", F.Bind("", "kp")), ("f", F.Execute("")), ("f", F.Sync()), ("b", B.BindComplete()),
                   ("b", B.DataRow((b"kp", SECRET))), ("b", B.CommandComplete("SELECT 1")), ("b", B.ReadyForQuery(b"I"))]
                + [("f", F.Query("SELECT name, status FROM key_pair_import('k', 'ssh-rsa AAAA', NULL)"))]
                + rows_of(("name", "status"), b"k", b"OK")
                + [("f", F.Query("SELECT * FROM some_view"))]
                + rows_of(("id", "Master_User_Password"), b"1", SECRET)
                + [("f", F.Query("SELECT * FROM other_view"))]
                + rows_of(("id", "PrivateKey"), b"1", SECRET)
                + _select_one())
    assert _redacted(out) == [("f", "Q"), ("b", "D"), ("f", "P"), ("f", "B"), ("b", "D"), ("b", "D"), ("b", "D"),
                              ("b", "D"), ("b", "D")]
    for name in ("secretaccesskey", "SECRET_ACCESS_KEY", "privatekey", "private_key", "password", "db_password",
                 "master_user_password", b"PrivateKey"):
        assert is_secret_column(name), name
    for name in ("accesskeyid", "access_key_id", "name", "public_key", "key_pair_id", "secret_arn"):
        assert not is_secret_column(name), name
