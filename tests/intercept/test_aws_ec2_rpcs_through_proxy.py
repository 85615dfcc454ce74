"""aws_ec2's RPCs (``key_pair_request``, ``key_pair_import``, ``describe_ami``) through psql and
the proxy on the sandbox cloud (moto over HTTP): answered by the engine on the client's own
connection, inside its transaction; unknown functions (42883) while aws_ec2 is not installed."""

from __future__ import annotations

import json

import boto3
import psycopg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.intercept.conftest import install_with_credentials, psql
from tests.intercept.test_privileges import roles  # noqa: F401  (fixture)

REGIONS = ("us-east-1", "eu-west-3")


def _ec2(moto_server, region="us-east-1"):
    return boto3.client("ec2", endpoint_url=moto_server.endpoint_url, region_name=region,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def _public_key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def _keys(moto_server, prefix: str, region="us-east-1") -> list[str]:
    return sorted(k["KeyName"] for k in _ec2(moto_server, region).describe_key_pairs()["KeyPairs"]
                  if k["KeyName"].startswith(prefix))


@pytest.fixture(autouse=True)
def _remove_key_pairs(moto_server):
    """The sandbox cloud is shared by the whole session: this file's key pairs (``rpe-*``) are
    deleted after each test, so later installs do not read them in."""
    yield
    for region in REGIONS:
        for name in _keys(moto_server, "rpe-", region):
            _ec2(moto_server, region).delete_key_pair(KeyName=name)


def _install(port: int, db: str) -> None:
    install_with_credentials(port, db, "aws_ec2")


def _ami(moto_server) -> str:
    return min(i["ImageId"] for i in _ec2(moto_server).describe_images(Owners=["amazon"])["Images"])


def test_not_installed_are_unknown_functions(iasql_proxy, fresh_db):
    res = psql(iasql_proxy.port, fresh_db, "SELECT * FROM iasql_version()", "-A", "-t")  # metadata only
    assert res.returncode == 0, res.stderr
    for call in ("key_pair_request('rpe-x', 'us-east-1')", "key_pair_import('rpe-x', 'ssh-rsa AAAA', 'us-east-1')",
                 "describe_ami('ami-12345678')"):
        res = psql(iasql_proxy.port, fresh_db, f"SELECT * FROM {call}", "-v", "VERBOSITY=verbose")
        assert res.returncode != 0
        assert "42883" in res.stderr and call.split("(")[0] in res.stderr, res.stderr
        assert "iasql_args" not in res.stderr


def test_key_pair_request_through_psql(iasql_proxy, fresh_db, moto_server):
    name = f"rpe-req-{fresh_db[-8:]}"
    _install(iasql_proxy.port, fresh_db)
    res = psql(iasql_proxy.port, fresh_db, f"SELECT name, status, message, length(privatekey) > 0 AS has_key "
                                           f"FROM key_pair_request('{name}', 'us-east-1')", "-A", "-F|")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[:2] == ["name|status|message|has_key",
                                           f"{name}|OK|Generated the keypair successfully|t"]
    [k] = _ec2(moto_server).describe_key_pairs(KeyNames=[name], IncludePublicKey=True)["KeyPairs"]
    res = psql(iasql_proxy.port, fresh_db, f"SELECT key_pair_id, type, fingerprint, region FROM key_pair "
                                           f"WHERE name = '{name}'", "-A", "-t", "-F|")
    assert res.stdout.split() == [f"{k['KeyPairId']}|rsa|{k['KeyFingerprint']}|us-east-1"]

    # failures carry their SQLSTATE
    res = psql(iasql_proxy.port, fresh_db, f"SELECT * FROM key_pair_request('{name}', 'us-east-1')",
               "-v", "VERBOSITY=verbose")
    assert res.returncode != 0 and "42710" in res.stderr and "already exists" in res.stderr, res.stderr
    res = psql(iasql_proxy.port, fresh_db, "SELECT * FROM key_pair_request(NULL, 'us-east-1')", "-v", "VERBOSITY=verbose")
    assert res.returncode != 0 and "22004" in res.stderr, res.stderr
    res = psql(iasql_proxy.port, fresh_db, "SELECT * FROM key_pair_request('rpe-z', 'us-east-1', 'pem', 'dsa')",
               "-v", "VERBOSITY=verbose")
    assert res.returncode != 0 and "22023" in res.stderr, res.stderr
    assert _keys(moto_server, "rpe-") == [name]

    # in a transaction block, any letter case, qualified: the row is written in the caller's
    # transaction (gone with its ROLLBACK); the key pair, a cloud action, stays
    other = f"rpe-blk-{fresh_db[-8:]}"
    sql = (f"BEGIN; SELECT status FROM public.Key_Pair_Request('{other}', 'us-east-1'); "
           f"SELECT count(*) FROM key_pair WHERE name = '{other}'; ROLLBACK; "
           f"SELECT count(*) FROM key_pair WHERE name = '{other}'")
    res = psql(iasql_proxy.port, fresh_db, sql, "-A", "-t")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["BEGIN", "OK", "1", "ROLLBACK", "0"]
    assert _keys(moto_server, "rpe-") == sorted([name, other])

    # uninstalled: unknown again
    res = psql(iasql_proxy.port, fresh_db, "SELECT * FROM iasql_uninstall('aws_ec2')")
    assert res.returncode == 0, res.stderr
    res = psql(iasql_proxy.port, fresh_db, "SELECT * FROM key_pair_request('rpe-y', 'us-east-1')",
               "-v", "VERBOSITY=verbose")
    assert res.returncode != 0 and "42883" in res.stderr, res.stderr


def test_import_and_describe_with_the_extended_protocol(iasql_proxy, fresh_db, moto_server):
    name = f"rpe-imp-{fresh_db[-8:]}"
    pub = _public_key()
    ami = _ami(moto_server)
    _install(iasql_proxy.port, fresh_db)
    with psycopg.connect(iasql_proxy.dsn(dbname=fresh_db), autocommit=True, connect_timeout=5) as conn:
        cur = conn.execute("SELECT * FROM key_pair_import(%s, %s, %s)", (name, pub, "us-east-1"))
        assert [d.name for d in cur.description] == ["name", "status", "message"]
        assert cur.fetchall() == [(name, "OK", "Imported the keypair successfully")]
        [k] = _ec2(moto_server).describe_key_pairs(KeyNames=[name], IncludePublicKey=True)["KeyPairs"]
        assert k["PublicKey"].split()[:2] == pub.split()[:2]
        assert conn.execute("SELECT key_pair_id, public_key, region FROM key_pair WHERE name = %s",
                            (name,)).fetchall() == [(k["KeyPairId"], k["PublicKey"], "us-east-1")]
        with pytest.raises(psycopg.errors.DuplicateObject):
            conn.execute("SELECT * FROM key_pair_import(%s, %s, %s)", (name, _public_key(), "us-east-1"))
        with pytest.raises(psycopg.errors.NullValueNotAllowed):
            conn.execute("SELECT * FROM key_pair_import(%s, %s, %s)", ("rpe-null", None, "us-east-1"))

        cur = conn.execute("SELECT * FROM describe_ami(%s)", (ami,))
        assert [d.name for d in cur.description] == ["attributes", "status", "message"]
        [(attributes, status, message)] = cur.fetchall()
        assert (status, message) == ("OK", "")
        assert json.loads(attributes)["ImageId"] == ami
        assert conn.execute("SELECT attributes::json->>'ImageId' FROM describe_ami(%s, %s)",
                            (ami, "us-east-1")).fetchall() == [(ami,)]
        with pytest.raises(psycopg.errors.UndefinedObject) as ei:
            conn.execute("SELECT * FROM describe_ami(%s)", ("ami-12345678",))
        assert ei.value.diag.message_primary == "image ami-12345678 does not exist in us-east-1"
        with pytest.raises(psycopg.errors.NullValueNotAllowed):
            conn.execute("SELECT * FROM describe_ami(NULL)")
    assert _keys(moto_server, "rpe-") == [name]


def test_key_pair_rpcs_with_the_callers_rights(iasql_proxy, pg, fresh_db, moto_server, roles):  # noqa: F811
    """The call runs as the calling role: without INSERT/UPDATE on key_pair it is refused (42501)
    before anything is made in the cloud; granted them, it makes the key pair and writes the row."""
    from tests.intercept.test_privileges import refused, through_proxy

    name = f"rpe-prv-{fresh_db[-8:]}"
    r, pw = roles()
    with through_proxy(iasql_proxy, fresh_db) as owner:
        owner.execute("SELECT * FROM iasql_install('aws_ec2')").fetchall()
        if owner.execute("SELECT count(*) FROM aws_credentials").fetchone() == (0,):
            owner.execute("INSERT INTO aws_credentials (access_key_id, secret_access_key) VALUES ('testing', 'testing')")
    pg.psql(f'GRANT SELECT ON public.key_pair, public.aws_regions, public.aws_credentials TO "{r}"', dbname=fresh_db)
    with through_proxy(iasql_proxy, fresh_db, r, pw) as c:
        err = refused(c, "SELECT * FROM key_pair_request(%s, 'us-east-1')", (name,))
        assert (err.sqlstate, err.diag.message_primary) == ("42501", "permission denied for table key_pair")
        err = refused(c, "SELECT * FROM key_pair_import(%s, %s, 'us-east-1')", (name, _public_key()))
        assert (err.sqlstate, err.diag.message_primary) == ("42501", "permission denied for table key_pair")
    assert _keys(moto_server, "rpe-") == []  # nothing was made
    pg.psql(f'GRANT INSERT, UPDATE ON public.key_pair TO "{r}"; '
            f'GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO "{r}"; '
            f'GRANT SELECT, INSERT ON public.iasql_audit_log TO "{r}"', dbname=fresh_db)
    with through_proxy(iasql_proxy, fresh_db, r, pw) as c:
        [(got, status, _, private)] = c.execute("SELECT * FROM key_pair_request(%s, 'us-east-1')", (name,)).fetchall()
        assert (got, status) == (name, "OK") and "PRIVATE KEY" in private
        assert c.execute("SELECT region FROM key_pair WHERE name = %s", (name,)).fetchall() == [("us-east-1",)]
    assert _keys(moto_server, "rpe-") == [name]


@pytest.mark.parametrize("how", ["BEGIN READ ONLY", "SET default_transaction_read_only = on"])
def test_refused_in_a_read_only_transaction_before_the_cloud_call(iasql_proxy, fresh_db, moto_server, how):
    """A key pair made in a read-only transaction could not be recorded, and its private key
    would be lost: the call is refused (25006, Postgres's wording) before EC2 is asked."""
    _install(iasql_proxy.port, fresh_db)
    with psycopg.connect(iasql_proxy.dsn(dbname=fresh_db), autocommit=True, connect_timeout=5) as conn:
        conn.execute(how)
        for call in ("key_pair_request('rpe-ro', NULL)", f"key_pair_import('rpe-ro-imp', '{_public_key()}', NULL)",
                     "iasql_commit()"):
            with pytest.raises(psycopg.Error) as ei:
                conn.execute(f"SELECT * FROM {call}")
            name = call.split("(")[0]
            assert (ei.value.sqlstate, ei.value.diag.message_primary) == (
                "25006", f"cannot execute {name} in a read-only transaction")
            if how.startswith("BEGIN"):
                conn.execute("ROLLBACK")
                conn.execute(how)
        # describe_ami changes nothing: it still answers
        [(status,)] = conn.execute("SELECT status FROM describe_ami(%s)", (_ami(moto_server),)).fetchall()
        assert status == "OK"
    assert _keys(moto_server, "rpe-") == []
