"""Module RPC secrets never reach a wire trace: through a traced proxy with the engine on the
sandbox cloud (moto over HTTP), psql (simple protocol) and psycopg (extended protocol, the secrets
as bound parameters, a prepared statement run twice) call ``access_key_request`` (its rows hold
an AWS secret access key), ``key_pair_request`` (a private key), ``set_user_password`` (a
password in the text or a Bind) and ``certificate_import`` (a private key in the text or a Bind);
none of these secrets is in any trace file, as text or as hex, while the rest of each session
(the RPCs' texts without secrets, the column names, ``key_pair_import``'s rows, the plain
statements around them) is recorded as usual.
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid

import boto3
import psycopg
import pytest

from tests.engine.test_module_rpcs_acm_iam import self_signed
from tests.intercept.conftest import PASSWORD as PG_PASSWORD
from tests.intercept.conftest import engine_section
from tests.support.trace_files import read_lines, wait_for_traces

pytestmark = pytest.mark.timeout(240)

TAG = uuid.uuid4().hex[:8]
USERS = {"psql": f"trs-psql-{TAG}", "psycopg": f"trs-psy-{TAG}"}
KEY_PAIRS = {"psql": f"trs-kp-psql-{TAG}", "psycopg": f"trs-kp-psy-{TAG}", "prepared": f"trs-kp-prep-{TAG}"}
IMPORTED = f"trs-imp-{TAG}"
PASSWORDS = {"psql": f"TraceSecretPw99-{TAG}", "psycopg": f"TraceSecretPw98-{TAG}"}


def _client(moto_server, service: str):
    return boto3.client(service, endpoint_url=moto_server.endpoint_url, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def _public_key() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def _psql(port: int, db: str, sql: str, app: str = "rpc_secret_psql") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGPASSWORD"] = PG_PASSWORD
    return subprocess.run(["psql", "-X", "-q", "-A", "-F|", "-v", "ON_ERROR_STOP=1",
                           f"host=127.0.0.1 port={port} user=postgres dbname={db} sslmode=disable "
                           f"application_name={app}", "-f", "-"],
                          input=sql, capture_output=True, text=True, timeout=120, env=env)


def _needles(secret: str) -> list[bytes]:
    """What would betray ``secret`` in a trace: its text, and, for a PEM, each of its base64 lines
    (a JSON line escapes the newlines), each also as the hex a ``hex`` field would hold."""
    parts = [secret] + [x for x in secret.splitlines() if len(x) >= 16 and not x.startswith("-----")]
    out = []
    for p in parts:
        out += [p.encode(), p.encode().hex().encode()]
    return out


@pytest.fixture(scope="module")
def scenario(pg, moto_server, proxy_ini, start_proxy, tmp_path_factory):
    """A traced proxy with the engine; runs the psql and psycopg sessions and yields
    ``(traces by application name, secrets by what they are, key_pair_import's key name)``."""
    record_dir = tmp_path_factory.mktemp("rpc-secret-traces")
    proxy = start_proxy(proxy_ini(record_dir=record_dir) + engine_section(moto_server.endpoint_url), "rpc-secret")
    iam, ec2, acm = (_client(moto_server, s) for s in ("iam", "ec2", "acm"))
    db = f"trs_{TAG}"
    with psycopg.connect(pg.dsn(), autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{db}"')
    for u in USERS.values():
        iam.create_user(UserName=u)
    arns_before = {c["CertificateArn"] for c in acm.list_certificates()["CertificateSummaryList"]}
    secrets: dict[str, str] = dict(PASSWORDS)
    try:
        setup = ("SELECT * FROM iasql_install('aws_iam', 'aws_ec2', 'aws_acm');\n"
                 "INSERT INTO aws_credentials (access_key_id, secret_access_key) VALUES ('testing', 'testing');\n")
        res = _psql(proxy.port, db, setup, "rpc_secret_setup")
        assert res.returncode == 0, res.stderr
        pem, cert_key = self_signed(f"trace-psql-{TAG}.example.com")
        secrets["cert key psql"] = cert_key
        script = "\n".join([
            "SELECT 1 AS before_secret;",
            f"SELECT accesskeyid, secretaccesskey FROM access_key_request('{USERS['psql']}');",
            f"SELECT name, privatekey FROM key_pair_request('{KEY_PAIRS['psql']}', NULL);",
            f"SELECT * FROM set_user_password('{USERS['psql']}', '{PASSWORDS['psql']}');",
            f"SELECT status FROM certificate_import($c${pem}$c$, $k${cert_key}$k$, NULL);",
            f"SELECT name, status FROM key_pair_import('{IMPORTED}', '{_public_key()}', NULL);",
            f"SELECT access_key_id FROM access_key WHERE user_name = '{USERS['psql']}';",
            "SELECT 1 AS after_secret;",
            ""])
        res = _psql(proxy.port, db, script)
        assert res.returncode == 0, res.stderr
        out = res.stdout.splitlines()
        key_id, secret_key = out[out.index("accesskeyid|secretaccesskey") + 1].split("|")
        secrets["access key psql"] = secret_key
        kp = re.search(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----",
                       res.stdout.split(f"{KEY_PAIRS['psql']}|", 1)[1], re.DOTALL)
        assert kp, res.stdout
        secrets["private key psql"] = kp.group(0)

        pem2, cert_key2 = self_signed(f"trace-psy-{TAG}.example.com")
        secrets["cert key psycopg"] = cert_key2
        with psycopg.connect(proxy.dsn(dbname=db, password=PG_PASSWORD), autocommit=True, connect_timeout=5,
                             application_name="rpc_secret_psycopg") as conn:
            conn.execute("SELECT 1 AS before_secret")
            [(k_id, k_secret)] = conn.execute("SELECT accesskeyid, secretaccesskey FROM access_key_request(%s)",
                                              (USERS["psycopg"],)).fetchall()
            secrets["access key psycopg"] = k_secret
            [(_, priv)] = conn.execute("SELECT name, privatekey FROM key_pair_request(%s, NULL)",
                                       (KEY_PAIRS["psycopg"],)).fetchall()
            secrets["private key psycopg"] = priv
            for name in (KEY_PAIRS["prepared"],):  # a named prepared statement: Bind/Execute after Parse
                conn.execute("SELECT * FROM key_pair_request(%s, NULL) AS t(a, b, c, d)", (name,), prepare=True)
            [(_, _, _, priv2)] = conn.execute("SELECT * FROM key_pair_request(%s, NULL) AS t(a, b, c, d)",
                                              (KEY_PAIRS["prepared"] + "b",), prepare=True).fetchall()
            secrets["private key prepared"] = priv2
            assert conn.execute("SELECT * FROM set_user_password(%s, %s)",
                                (USERS["psycopg"], PASSWORDS["psycopg"])).fetchall() == [("OK", "")]
            [(status,)] = conn.execute("SELECT status FROM certificate_import(%s, %s, NULL)",
                                       (pem2, cert_key2)).fetchall()
            conn.execute("SELECT 1 AS after_secret")
        traces = wait_for_traces(record_dir, {"rpc_secret_psql", "rpc_secret_psycopg"})
        yield traces, secrets, (key_id, k_id)
    finally:
        for u in USERS.values():
            for k in iam.list_access_keys(UserName=u)["AccessKeyMetadata"]:
                iam.delete_access_key(UserName=u, AccessKeyId=k["AccessKeyId"])
            try:
                iam.delete_login_profile(UserName=u)
            except iam.exceptions.NoSuchEntityException:
                pass
            iam.delete_user(UserName=u)
        for name in [*KEY_PAIRS.values(), KEY_PAIRS["prepared"] + "b", IMPORTED]:
            ec2.delete_key_pair(KeyName=name)
        for c in acm.list_certificates()["CertificateSummaryList"]:
            if c["CertificateArn"] not in arns_before:
                acm.delete_certificate(CertificateArn=c["CertificateArn"])
        with psycopg.connect(pg.dsn(), autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def test_no_rpc_secret_in_any_trace(scenario):
    traces, secrets, _ = scenario
    assert len(secrets) == 9
    for what, path in traces.items():
        data = path.read_bytes().lower()
        leaks = [w for w, s in secrets.items() for n in _needles(s) if n.lower() in data]
        assert leaks == [], f"{what}: {leaks}"


def _by_query(lines: list[dict], text: str) -> list[dict]:
    return [o for o in lines if o.get("msg") in ("Query", "Parse") and text in (o.get("fields") or {}).get("query", "")]


def _rows_after(lines: list[dict], q: dict) -> list[dict]:
    """The DataRows answering Query/Parse ``q`` (up to the next ReadyForQuery)."""
    out = []
    for o in lines[lines.index(q) + 1:]:
        if o.get("msg") == "ReadyForQuery":
            return out
        if o.get("msg") == "DataRow":
            out.append(o)
    return out


def test_psql_trace_keeps_what_is_not_secret(scenario):
    traces, _, (key_id, _) = scenario
    lines = read_lines(traces["rpc_secret_psql"])
    assert lines[-1]["complete"] is True
    for text in ("access_key_request(", "key_pair_request("):  # names only: recorded, replayable
        (q,) = _by_query(lines, text)
        assert q["hex"] and not q.get("redacted")
        rows = _rows_after(lines, q)
        assert rows and all(r.get("redacted") and r["hex"] is None for r in rows)
    descs = [o["fields"] for o in lines if o.get("msg") == "RowDescription"]
    assert any([f["name"] for f in d["fields"]] == ["accesskeyid", "secretaccesskey"] for d in descs), descs
    for text in ("set_user_password(", "certificate_import("):  # nowhere in the trace: the text was redacted
        assert _by_query(lines, text) == []
    redacted_queries = [o for o in lines if o.get("msg") == "Query" and o.get("redacted")]
    assert len(redacted_queries) == 2
    for text, row in (("key_pair_import(", [IMPORTED, "OK"]), ("FROM access_key WHERE", [key_id]),
                      ("after_secret", ["1"]), ("before_secret", ["1"])):
        (q,) = _by_query(lines, text)
        assert q["hex"]
        [r] = _rows_after(lines, q)
        assert r["fields"]["values"] == row and r["hex"]


def test_psycopg_trace_redacts_binds_and_rows(scenario):
    traces, _, _ = scenario
    lines = read_lines(traces["rpc_secret_psycopg"])
    assert lines[-1]["complete"] is True
    parses = [o for o in lines if o.get("msg") == "Parse"]
    secret_parses = [o for o in parses if o.get("redacted")]
    assert len(secret_parses) == 2  # set_user_password, certificate_import
    binds = [o for o in lines if o.get("msg") == "Bind"]
    assert sum(1 for o in binds if o.get("redacted")) == 2
    # the prepared statement on key_pair_request, aliased columns: rows redacted on each execution
    (prep,) = [o for o in parses if "AS t(a, b, c, d)" in o["fields"].get("query", "")]
    assert prep["fields"]["statement"] and prep["hex"]
    rows = [o for o in lines if o.get("msg") == "DataRow"]
    assert [o.get("redacted", False) for o in rows] == [False, True, True, True, True, True, True, False]
