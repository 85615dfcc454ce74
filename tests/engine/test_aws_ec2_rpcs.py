"""aws_ec2's RPCs at engine level against a real moto server: ``key_pair_request``,
``key_pair_import`` and ``describe_ami`` (IaSQL's ``src/modules/aws_ec2/rpcs/*.ts``), checked with
boto3 and the ``key_pair`` table."""

from __future__ import annotations

import json

import psycopg
import pytest
from cryptography.hazmat.primitives import serialization

from engine.rpc import EngineError
from tests.engine.support import Ctx, call, sql
from tests.engine.test_aws_ec2 import ami_of, public_key
from tests.intercept.test_privileges import roles  # noqa: F401  (fixture)

KEY_ROW = "SELECT name, key_pair_id, type::text, fingerprint, public_key, region FROM key_pair ORDER BY name"


@pytest.fixture
async def ec2_mod(registry, ctx, dsn):
    """aws_ec2 (with its dependencies) installed, credentials set."""
    await call(registry, ctx, "iasql_install", "aws_ec2")
    await sql(dsn, "INSERT INTO aws_credentials (access_key_id, secret_access_key) VALUES ('testing', 'testing')")


def cloud_key(aws, name, region="us-east-1") -> dict:
    [k] = aws("ec2", region).describe_key_pairs(KeyNames=[name], IncludePublicKey=True)["KeyPairs"]
    return k


def row_of(k: dict, region="us-east-1") -> tuple:
    return (k["KeyName"], k["KeyPairId"], k["KeyType"], k["KeyFingerprint"], k["PublicKey"], region)


async def refused(registry, ctx, name, *args) -> EngineError:
    with pytest.raises(EngineError) as ei:
        await call(registry, ctx, name, *args)
    return ei.value


def test_declared_as_iasql_declares_them(registry):
    req, imp, ami = (registry.get(n) for n in ("key_pair_request", "key_pair_import", "describe_ami"))
    assert req.module == imp.module == ami.module == "aws_ec2"
    assert req.signature == ("key_pair_request(key_pair_name varchar, region varchar, key_format varchar = 'pem', "
                             "key_type varchar = 'rsa')")
    assert [c.name for c in req.columns] == ["name", "status", "message", "privatekey"]
    assert imp.signature == "key_pair_import(key_name varchar, public_key varchar, region varchar)"
    assert [c.name for c in imp.columns] == ["name", "status", "message"]
    assert ami.signature == "describe_ami(ami_id varchar, region varchar = NULL)"
    assert [c.name for c in ami.columns] == ["attributes", "status", "message"]
    assert req.mutating and imp.mutating and not ami.mutating


async def test_key_pair_request_creates_and_records(registry, ctx, dsn, aws, ec2_mod):
    [(name, status, message, private)] = await call(registry, ctx, "key_pair_request", "req-key", "us-east-1")
    assert (name, status, message) == ("req-key", "OK", "Generated the keypair successfully")
    assert private.startswith("-----BEGIN RSA PRIVATE KEY-----")
    k = cloud_key(aws, "req-key")
    assert k["KeyType"] == "rsa"
    assert await sql(dsn, KEY_ROW) == [row_of(k)]
    assert private not in str(await sql(dsn, "SELECT * FROM key_pair"))
    # the private key matches the public key AWS keeps
    priv = serialization.load_pem_private_key(private.encode(), None)
    ours = priv.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    assert ours.split()[:2] == k["PublicKey"].split()[:2]
    # the row is what the cloud has: a commit changes nothing
    await call(registry, ctx, "iasql_begin")
    assert await call(registry, ctx, "iasql_commit") == []
    assert await sql(dsn, KEY_ROW) == [row_of(k)]


async def test_key_pair_request_ed25519_default_region(registry, ctx, dsn, aws, ec2_mod):
    [(name, status, _, private)] = await call(registry, ctx, "key_pair_request", "ed-key", None, "pem", "ED25519")
    assert (name, status) == ("ed-key", "OK") and "PRIVATE KEY" in private
    k = cloud_key(aws, "ed-key")
    assert k["KeyType"] == "ed25519"
    assert await sql(dsn, KEY_ROW) == [row_of(k)]


async def test_key_pair_request_failures(registry, ctx, dsn, aws, ec2_mod):
    for bad in (None, ""):
        err = await refused(registry, ctx, "key_pair_request", bad, "us-east-1")
        assert (err.sqlstate, err.message) == ("22004", "key_pair_request needs a key pair name")
    err = await refused(registry, ctx, "key_pair_request", "k", "us-east-1", "pem", "dsa")
    assert err.sqlstate == "22023" and "key type dsa" in err.message
    err = await refused(registry, ctx, "key_pair_request", "k", "us-east-1", "der", "rsa")
    assert err.sqlstate == "22023" and "key format der" in err.message
    err = await refused(registry, ctx, "key_pair_request", "k", "mars-north-1")
    assert (err.sqlstate, err.message) == ("22023", "mars-north-1 is not an AWS region")
    # iasql_get_errors names the function once
    errors = [m for _, m in await call(registry, ctx, "iasql_get_errors") if "mars-north-1" in m]
    assert errors and errors[-1] == "key_pair_request: mars-north-1 is not an AWS region"
    assert aws("ec2").describe_key_pairs()["KeyPairs"] == []
    # a name already taken in the region
    aws("ec2").create_key_pair(KeyName="taken")
    err = await refused(registry, ctx, "key_pair_request", "taken", "us-east-1")
    assert (err.sqlstate, err.message) == ("42710", "key pair taken already exists in us-east-1")
    assert await sql(dsn, "SELECT count(*) FROM key_pair") == [(0,)]


async def test_key_pair_request_in_a_region_not_enabled(registry, ctx, dsn, aws, ec2_mod):
    """As IaSQL, the key pair is made in any region; the row only in an enabled one."""
    [(name, status, message, private)] = await call(registry, ctx, "key_pair_request", "far-key", "eu-west-3")
    assert (name, status, message) == ("far-key", "OK", "Generated the keypair successfully") and private
    assert cloud_key(aws, "far-key", "eu-west-3")["KeyName"] == "far-key"
    assert await sql(dsn, "SELECT count(*) FROM key_pair") == [(0,)]
    await sql(dsn, "UPDATE aws_regions SET is_enabled = true WHERE region = 'eu-west-3'")
    await call(registry, ctx, "iasql_begin")
    await call(registry, ctx, "iasql_rollback")
    assert await sql(dsn, "SELECT name, region FROM key_pair") == [("far-key", "eu-west-3")]


async def test_key_pair_import_imports_and_records(registry, ctx, dsn, aws, ec2_mod):
    pub = public_key()
    rows = await call(registry, ctx, "key_pair_import", "imp-key", pub, "us-east-1")
    assert rows == [("imp-key", "OK", "Imported the keypair successfully")]
    k = cloud_key(aws, "imp-key")
    assert k["PublicKey"].split()[:2] == pub.split()[:2]
    assert await sql(dsn, KEY_ROW) == [row_of(k)]
    # the same name again
    err = await refused(registry, ctx, "key_pair_import", "imp-key", public_key(), "us-east-1")
    assert (err.sqlstate, err.message) == ("42710", "key pair imp-key already exists in us-east-1")
    assert await sql(dsn, KEY_ROW) == [row_of(k)]
    # an ed25519 OpenSSH key passes the check before the cloud call too
    from cryptography.hazmat.primitives.asymmetric import ed25519
    ed = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    rows = await call(registry, ctx, "key_pair_import", "imp-ed", ed + " me@host\n", "us-east-1")
    assert rows == [("imp-ed", "OK", "Imported the keypair successfully")]
    assert cloud_key(aws, "imp-ed")["KeyType"] == "ed25519"


async def test_key_pair_import_failures(registry, ctx, dsn, aws, ec2_mod):
    for args in ((None, public_key(), "us-east-1"), ("k", None, "us-east-1"), ("", "x", None), ("k", "", None)):
        err = await refused(registry, ctx, "key_pair_import", *args)
        assert (err.sqlstate, err.message) == ("22004", "key_pair_import needs a key name and a public key")
    # checked before the cloud call (moto 5.2.5 answers 'not a key' with an HTTP 500 page)
    for bad in ("ssh-rsa notbase64!!", "not a key", "ssh-ed25519 AAAA", "-----BEGIN PUBLIC KEY-----\nxx\n"
                "-----END PUBLIC KEY-----"):
        err = await refused(registry, ctx, "key_pair_import", "bad-key", bad, "us-east-1")
        assert (err.sqlstate, err.message) == ("22023", "invalid public key for key pair bad-key: it is not an "
                                               "OpenSSH (ssh-rsa, ssh-ed25519, ecdsa-sha2-*), PEM or base64 DER "
                                               "public key")
    assert aws("ec2").describe_key_pairs()["KeyPairs"] == []
    assert await sql(dsn, "SELECT count(*) FROM key_pair") == [(0,)]


async def test_describe_ami(registry, ctx, aws, ec2_mod):
    ami = ami_of(aws)
    want = aws("ec2").describe_images(ImageIds=[ami])["Images"][0]
    [(attributes, status, message)] = await call(registry, ctx, "describe_ami", ami)
    assert (status, message) == ("OK", "")
    got = json.loads(attributes)
    assert got["ImageId"] == ami and got["Name"] == want["Name"] and got["Architecture"] == want["Architecture"]
    # another region, and an image id from SSM (resolve:ssm:, as instance.ami takes it)
    ami_w = ami_of(aws, "eu-west-1")
    [(attributes, status, _)] = await call(registry, ctx, "describe_ami", ami_w, "eu-west-1")
    assert status == "OK" and json.loads(attributes)["ImageId"] == ami_w
    aws("ssm").put_parameter(Name="/test/ami", Value=ami, Type="String")
    [(attributes, status, _)] = await call(registry, ctx, "describe_ami", "resolve:ssm:/test/ami")
    assert status == "OK" and json.loads(attributes)["ImageId"] == ami


async def test_describe_ami_failures(registry, ctx, ec2_mod):
    err = await refused(registry, ctx, "describe_ami", "ami-12345678")
    assert (err.sqlstate, err.message) == ("42704", "image ami-12345678 does not exist in us-east-1")
    err = await refused(registry, ctx, "describe_ami", "not-an-ami")
    assert (err.sqlstate, err.message) == ("22023", "not-an-ami is not an image id")
    for empty in ("resolve:ssm:", "resolve:ssm:  "):
        err = await refused(registry, ctx, "describe_ami", empty)
        assert (err.sqlstate, err.message) == ("22023", f"{empty} names no SSM parameter")
    err = await refused(registry, ctx, "describe_ami", "resolve:ssm:/no/such/parameter")
    assert err.sqlstate == "42704" and "/no/such/parameter" in err.message
    for bad in (None, ""):
        err = await refused(registry, ctx, "describe_ami", bad)
        assert (err.sqlstate, err.message) == ("22004", "describe_ami needs an image id")


async def test_cancelled_before_the_cloud_call(registry, ctx, aws, ec2_mod):
    ctx.cancelled.set()
    err = await refused(registry, ctx, "key_pair_request", "never", "us-east-1")
    assert err.sqlstate == "57014"
    ctx.cancelled.clear()
    assert aws("ec2").describe_key_pairs()["KeyPairs"] == []


async def test_without_privileges_nothing_is_made(registry, ctx, pg, dbname, dsn, aws, ec2_mod, roles):  # noqa: F811
    """As another role: without INSERT and UPDATE on key_pair, 42501 before any cloud call."""
    r, pw = roles()
    await sql(dsn, f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{r}"; '
                   f'GRANT INSERT ON public.iasql_audit_log TO "{r}"; '
                   f'GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO "{r}"')
    other = Ctx(dsn=pg.dsn(dbname, user=r, password=pw), database=dbname, user=r)
    try:
        err = await refused(registry, other, "key_pair_request", "priv-key", "us-east-1")
        assert (err.sqlstate, err.message) == ("42501", "permission denied for table key_pair")
        err = await refused(registry, other, "key_pair_import", "priv-key", public_key(), "us-east-1")
        assert (err.sqlstate, err.message) == ("42501", "permission denied for table key_pair")
        assert aws("ec2").describe_key_pairs()["KeyPairs"] == []
        # describe_ami writes nothing: reading is enough
        [(_, status, _)] = await call(registry, other, "describe_ami", ami_of(aws))
        assert status == "OK"
        await sql(dsn, f'GRANT INSERT, UPDATE ON public.key_pair TO "{r}"')
        [(name, status, _, _)] = await call(registry, other, "key_pair_request", "priv-key", "us-east-1")
        assert (name, status) == ("priv-key", "OK")
        assert await sql(dsn, "SELECT name FROM key_pair") == [("priv-key",)]
    finally:
        await other.close()


async def test_not_installed_is_42883(registry, ctx, dsn):
    for name, args in (("key_pair_request", ("k", "us-east-1")), ("key_pair_import", ("k", "ssh-rsa x", "us-east-1")),
                       ("describe_ami", ("ami-1",))):
        err = await refused(registry, ctx, name, *args)
        assert err.sqlstate == "42883" and name in err.message
        assert "iasql_install('aws_ec2')" in err.hint
    with pytest.raises(psycopg.errors.UndefinedFunction):
        await sql(dsn, "SELECT * FROM key_pair_request('k', 'us-east-1')")
