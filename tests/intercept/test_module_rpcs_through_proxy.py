"""Module RPCs through psql and the proxy on the sandbox cloud (moto over HTTP): aws_s3's
``s3_upload_object`` is answered by the engine on the client's own connection, inside its
transaction; without the module installed it is an unknown function (42883), as in Postgres."""

from __future__ import annotations

import re

import boto3
import psycopg
import pytest

from tests.intercept.conftest import install_with_credentials, psql
from tests.intercept.test_privileges import roles  # noqa: F401  (fixture)

UPLOAD = "SELECT * FROM s3_upload_object('{b}', '{k}', '{c}', 'text/plain')"


def _s3(moto_server):
    return boto3.client("s3", endpoint_url=moto_server.endpoint_url, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


@pytest.fixture(autouse=True)
def _remove_buckets(moto_server):
    """The sandbox cloud is shared by the whole session: this file's buckets (``rp?-*``) and their
    objects are deleted after each test, so later installs do not read them in."""
    yield
    s3 = _s3(moto_server)
    for b in s3.list_buckets()["Buckets"]:
        if re.match(r"rp[cxlr]-", b["Name"]):
            for o in s3.list_objects_v2(Bucket=b["Name"]).get("Contents", []):
                s3.delete_object(Bucket=b["Name"], Key=o["Key"])
            s3.delete_bucket(Bucket=b["Name"])


def _install(port: int, db: str) -> None:
    install_with_credentials(port, db, "aws_s3")


def test_not_installed_is_an_unknown_function(iasql_proxy, fresh_db):
    res = psql(iasql_proxy.port, fresh_db, "SELECT * FROM iasql_version()", "-A", "-t")  # metadata only
    assert res.returncode == 0, res.stderr
    res = psql(iasql_proxy.port, fresh_db, UPLOAD.format(b="b", k="k", c="c"), "-v", "VERBOSITY=verbose")
    assert res.returncode != 0
    assert "42883" in res.stderr and "s3_upload_object" in res.stderr, res.stderr
    assert "iasql_args" not in res.stderr


def test_upload_through_psql(iasql_proxy, fresh_db, moto_server):
    s3 = _s3(moto_server)
    bucket = f"rpc-{fresh_db[-8:]}"
    _install(iasql_proxy.port, fresh_db)
    res = psql(iasql_proxy.port, fresh_db, f"SELECT * FROM iasql_begin(); INSERT INTO bucket (name) VALUES ('{bucket}'); "
                                           "SELECT * FROM iasql_commit()")
    assert res.returncode == 0, res.stderr
    res = psql(iasql_proxy.port, fresh_db, UPLOAD.format(b=bucket, k="a/hello.txt", c="hello proxy"), "-A", "-F|")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[:2] == ["bucket|key|status|response_message",
                                           f"{bucket}|a/hello.txt|OK|Bucket content has been updated"]
    obj = s3.get_object(Bucket=bucket, Key="a/hello.txt")
    assert obj["Body"].read() == b"hello proxy" and obj["ContentType"] == "text/plain"
    res = psql(iasql_proxy.port, fresh_db, f"SELECT key, bucket_name, e_tag FROM bucket_object WHERE bucket_name = '{bucket}'",
               "-A", "-t", "-F|")
    assert res.stdout.split() == [f"a/hello.txt|{bucket}|{obj['ETag']}"]

    # in a transaction block, any letter case, qualified: the row is written in the caller's
    # transaction (gone with its ROLLBACK); the object, a cloud action, stays
    sql = ("BEGIN; SELECT status FROM public.S3_Upload_Object('{b}', 'b.txt', 'x', 'text/plain'); "
           "SELECT count(*) FROM bucket_object WHERE bucket_name = '{b}'; ROLLBACK; "
           "SELECT count(*) FROM bucket_object WHERE bucket_name = '{b}'").format(b=bucket)
    res = psql(iasql_proxy.port, fresh_db, sql, "-A", "-t")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["BEGIN", "OK", "2", "ROLLBACK", "1"]
    assert s3.get_object(Bucket=bucket, Key="b.txt")["Body"].read() == b"x"

    # failures carry their SQLSTATE
    res = psql(iasql_proxy.port, fresh_db, UPLOAD.format(b="no-such-bucket-rpc", k="k", c="c"), "-v", "VERBOSITY=verbose")
    assert res.returncode != 0 and "42704" in res.stderr, res.stderr
    res = psql(iasql_proxy.port, fresh_db, UPLOAD.format(b=bucket, k="k", c=""), "-v", "VERBOSITY=verbose")
    assert res.returncode != 0 and "22023" in res.stderr and "Cannot upload an object" in res.stderr, res.stderr

    # uninstalled: unknown again
    res = psql(iasql_proxy.port, fresh_db, "SELECT * FROM iasql_uninstall('aws_s3')")
    assert res.returncode == 0, res.stderr
    res = psql(iasql_proxy.port, fresh_db, UPLOAD.format(b=bucket, k="k", c="c"), "-v", "VERBOSITY=verbose")
    assert res.returncode != 0 and "42883" in res.stderr, res.stderr


def test_upload_with_the_extended_protocol(iasql_proxy, fresh_db, moto_server):
    s3 = _s3(moto_server)
    bucket = f"rpx-{fresh_db[-8:]}"
    s3.create_bucket(Bucket=bucket)
    _install(iasql_proxy.port, fresh_db)
    with psycopg.connect(iasql_proxy.dsn(dbname=fresh_db), autocommit=False, connect_timeout=5) as conn:
        rows = conn.execute("SELECT * FROM s3_upload_object(%s, %s, %s, %s)",
                            (bucket, "ext.json", '{"a": 1}', "application/json")).fetchall()
        assert rows == [(bucket, "ext.json", "OK", "Bucket content has been updated")]
        assert [d.name for d in conn.execute("SELECT * FROM s3_upload_object(%s, %s, %s, %s)",
                                             (bucket, "ext2", "v", "text/plain")).description] == \
            ["bucket", "key", "status", "response_message"]
        conn.rollback()
        with pytest.raises(psycopg.errors.UndefinedObject):
            conn.execute("SELECT * FROM s3_upload_object(%s, %s, %s, %s)", ("nope-rpx", "k", "v", "t"))
    obj = s3.get_object(Bucket=bucket, Key="ext.json")
    assert obj["Body"].read() == b'{"a": 1}' and obj["ContentType"] == "application/json"


def test_call_in_a_huge_query_across_a_scan_slice(iasql_proxy, fresh_db, moto_server):
    """A Query above 1 MiB is classified a slice at a time (``_classify_large``): a module RPC name
    across two slices (256 KiB) is still seen and the call answered."""
    s3 = _s3(moto_server)
    bucket = f"rpl-{fresh_db[-8:]}"
    s3.create_bucket(Bucket=bucket)
    _install(iasql_proxy.port, fresh_db)
    pre = "SELECT length('{}'); SELECT * FROM "
    pre = pre.format("x" * (256 * 1024 - 5 - len(pre.format(""))))  # the name starts 5 bytes before a slice end
    text = pre + f"s3_upload_object('{bucket}', 'big.txt', 'v', 'text/plain'); SELECT length('{'y' * (1 << 20)}')"
    with psycopg.connect(iasql_proxy.dsn(dbname=fresh_db), autocommit=True, connect_timeout=5) as conn:
        cur = conn.execute(text)
        results = [cur.fetchall()]
        while cur.nextset():
            results.append(cur.fetchall())
        assert results == [[(len(pre) - 33,)], [(bucket, "big.txt", "OK", "Bucket content has been updated")],
                           [(1 << 20,)]]
    assert s3.get_object(Bucket=bucket, Key="big.txt")["Body"].read() == b"v"


def test_upload_with_the_callers_rights(iasql_proxy, pg, fresh_db, moto_server, roles):
    """The call runs as the calling role: without INSERT/UPDATE on bucket_object it is refused
    (42501) before anything is uploaded; granted them, it uploads and writes the row."""
    from tests.intercept.test_privileges import refused, through_proxy

    s3 = _s3(moto_server)
    bucket = f"rpr-{fresh_db[-8:]}"
    r, pw = roles()
    with through_proxy(iasql_proxy, fresh_db) as owner:
        owner.execute("SELECT * FROM iasql_install('aws_s3')").fetchall()
        if owner.execute("SELECT count(*) FROM aws_credentials").fetchone() == (0,):
            owner.execute("INSERT INTO aws_credentials (access_key_id, secret_access_key) VALUES ('testing', 'testing')")
        owner.execute("SELECT * FROM iasql_begin()").fetchall()
        owner.execute("INSERT INTO bucket (name) VALUES (%s)", (bucket,))
        owner.execute("SELECT * FROM iasql_commit()").fetchall()
    pg.psql(f'GRANT SELECT ON public.bucket, public.aws_regions, public.aws_credentials, public.bucket_object TO "{r}"',
            dbname=fresh_db)
    call = "SELECT * FROM s3_upload_object(%s, 'priv.txt', 'v', 'text/plain')"
    with through_proxy(iasql_proxy, fresh_db, r, pw) as c:
        err = refused(c, call, (bucket,))
        assert (err.sqlstate, err.diag.message_primary) == ("42501", "permission denied for table bucket_object")
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)  # nothing was uploaded
    pg.psql(f'GRANT INSERT, UPDATE ON public.bucket_object TO "{r}"; '
            f'GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO "{r}"; '
            f'GRANT SELECT, INSERT ON public.iasql_audit_log TO "{r}"', dbname=fresh_db)
    with through_proxy(iasql_proxy, fresh_db, r, pw) as c:
        assert c.execute(call, (bucket,)).fetchall() == [(bucket, "priv.txt", "OK", "Bucket content has been updated")]
        assert c.execute("SELECT key FROM bucket_object WHERE bucket_name = %s", (bucket,)).fetchall() == [("priv.txt",)]
    assert s3.get_object(Bucket=bucket, Key="priv.txt")["Body"].read() == b"v"


def test_access_key_request_through_psql(iasql_proxy, fresh_db, moto_server):
    iam = boto3.client("iam", endpoint_url=moto_server.endpoint_url, region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    user = f"rpk-{fresh_db[-8:]}"
    iam.create_user(UserName=user)
    try:
        res = psql(iasql_proxy.port, fresh_db, "SELECT * FROM iasql_install('aws_iam')", "-A", "-t")
        assert res.returncode == 0, res.stderr
        res = psql(iasql_proxy.port, fresh_db, f"SELECT * FROM access_key_request('{user}')", "-A", "-F|")
        assert res.returncode == 0, res.stderr
        head, row = res.stdout.splitlines()[:2]
        assert head == "status|message|accesskeyid|secretaccesskey"
        status, message, key_id, secret = row.split("|")
        assert (status, message) == ("SUCCESS", "") and secret
        assert [k["AccessKeyId"] for k in iam.list_access_keys(UserName=user)["AccessKeyMetadata"]] == [key_id]
        res = psql(iasql_proxy.port, fresh_db, "SELECT access_key_id FROM access_key WHERE user_name = "
                                               f"'{user}'", "-A", "-t")
        assert res.stdout.split() == [key_id]
        res = psql(iasql_proxy.port, fresh_db, "SELECT * FROM access_key_request('nobody-rpk')", "-v", "VERBOSITY=verbose")
        assert res.returncode != 0 and "42704" in res.stderr, res.stderr
    finally:
        for k in iam.list_access_keys(UserName=user)["AccessKeyMetadata"]:
            iam.delete_access_key(UserName=user, AccessKeyId=k["AccessKeyId"])
        iam.delete_user(UserName=user)
