"""Module aws_iam's iam_user and access_key tables through the engine against a real moto server,
checked with boto3 and the tables. IAM is global: there is no second region to test."""

from __future__ import annotations

import json

import psycopg
import pytest

from tests.engine.support import call, sql


@pytest.fixture
async def iam_mod(registry, ctx, dsn):
    """aws_iam installed, with credentials; returns the install rows."""
    rows = await call(registry, ctx, "iasql_install", "aws_iam")
    await sql(dsn, "INSERT INTO aws_credentials (access_key_id, secret_access_key) VALUES ('testing', 'testing')")
    return rows


def applied(rows):
    """The (action, table) pairs of a commit's cloud actions (sync rows left out)."""
    return [(a, t) for a, t, _, d in rows if not d.startswith("synced")]


def policy(aws, name):
    doc = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:Get*", "Resource": "*"}]}
    return aws("iam").create_policy(PolicyName=name, PolicyDocument=json.dumps(doc))["Policy"]["Arn"]


def attached(aws, user):
    return sorted(p["PolicyArn"] for p in aws("iam").list_attached_user_policies(UserName=user)["AttachedPolicies"])


async def test_install_creates_the_tables_as_iasql(registry, ctx, dsn, iam_mod):
    assert iam_mod == [("aws_iam@0.1.0", t, 0) for t in ("iam_user", "access_key", "iam_role")]
    cols = await sql(dsn, """SELECT table_name, column_name, data_type, udt_name, is_nullable, column_default
                               FROM information_schema.columns WHERE table_name IN ('iam_user', 'access_key')
                              ORDER BY table_name, ordinal_position""")
    assert cols == [
        ("access_key", "id", "integer", "int4", "NO", "nextval('access_key_id_seq'::regclass)"),
        ("access_key", "access_key_id", "character varying", "varchar", "NO", None),
        ("access_key", "create_date", "timestamp with time zone", "timestamptz", "NO", "now()"),
        ("access_key", "status", "USER-DEFINED", "access_key_status_enum", "YES", None),
        ("access_key", "user_name", "character varying", "varchar", "NO", None),
        ("iam_user", "arn", "character varying", "varchar", "YES", None),
        ("iam_user", "user_name", "character varying", "varchar", "NO", None),
        ("iam_user", "create_date", "timestamp with time zone", "timestamptz", "NO", "now()"),
        ("iam_user", "path", "character varying", "varchar", "YES", None),
        ("iam_user", "user_id", "character varying", "varchar", "YES", None),
        ("iam_user", "attached_policies_arns", "ARRAY", "_text", "YES", None)]
    assert await sql(dsn, "SELECT enum_range(NULL::access_key_status_enum)::text") == [("{Active,Inactive}",)]
    assert await sql(dsn, """SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint
                              WHERE conrelid::regclass::text = 'access_key' ORDER BY 1""") == [
        ("FK_370b0be46883538aa03396c665f", "FOREIGN KEY (user_name) REFERENCES iam_user(user_name)"),
        ("PK_8bff331b150893bb5833f6e5675", "PRIMARY KEY (id)")]
    await call(registry, ctx, "iasql_uninstall", "aws_iam")
    assert await sql(dsn, "SELECT count(*) FROM pg_type WHERE typname = 'access_key_status_enum'") == [(0,)]


async def test_user_create_update_rename_delete(registry, ctx, dsn, aws, iam_mod):
    iam = aws("iam")
    read, write = policy(aws, "iasql-read"), policy(aws, "iasql-write")
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO iam_user (user_name, path, attached_policies_arns) VALUES ('iasql-alice', '/team/', ARRAY[%s])",
              (read,))
    await sql(dsn, "INSERT INTO iam_user (user_name) VALUES ('iasql-bob')")
    assert sorted(await call(registry, ctx, "iasql_preview")) == [
        ("create", "iam_user", "iasql-alice", "IAM user iasql-alice"), ("create", "iam_user", "iasql-bob", "IAM user iasql-bob")]
    rows = await call(registry, ctx, "iasql_commit")
    assert applied(rows) == [("create", "iam_user"), ("create", "iam_user")]
    alice = iam.get_user(UserName="iasql-alice")["User"]
    assert alice["Path"] == "/team/" and attached(aws, "iasql-alice") == [read]
    # the cloud's columns are written back (a NULL path is AWS's "/")
    got = await sql(dsn, "SELECT user_name, arn, user_id, path, create_date FROM iam_user ORDER BY user_name")
    bob = iam.get_user(UserName="iasql-bob")["User"]
    assert [r[:4] for r in got] == [("iasql-alice", alice["Arn"], alice["UserId"], "/team/"),
                                    ("iasql-bob", bob["Arn"], bob["UserId"], "/")]
    assert abs((got[0][4] - alice["CreateDate"]).total_seconds()) < 1

    # path and policies change in place
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "UPDATE iam_user SET path = '/ops/', attached_policies_arns = ARRAY[%s] WHERE user_name = 'iasql-alice'",
              (write,))
    assert await call(registry, ctx, "iasql_preview") == [("update", "iam_user", "iasql-alice", "IAM user iasql-alice")]
    rows = await call(registry, ctx, "iasql_commit")
    assert applied(rows) == [("update", "iam_user")]
    assert iam.get_user(UserName="iasql-alice")["User"]["UserId"] == alice["UserId"]  # the same user
    assert iam.get_user(UserName="iasql-alice")["User"]["Path"] == "/ops/" and attached(aws, "iasql-alice") == [write]

    # a new user_name makes a new user and deletes the old one
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "UPDATE iam_user SET user_name = 'iasql-robert' WHERE user_name = 'iasql-bob'")
    rows = await call(registry, ctx, "iasql_commit")
    assert sorted(applied(rows)) == [("create", "iam_user"), ("delete", "iam_user")]
    assert sorted(u["UserName"] for u in iam.list_users()["Users"]) == ["iasql-alice", "iasql-robert"]

    # delete (its policies detached, its login profile deleted first)
    iam.create_login_profile(UserName="iasql-alice", Password="Secret-Passw0rd!")
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "DELETE FROM iam_user WHERE user_name = 'iasql-alice'")
    rows = await call(registry, ctx, "iasql_commit")
    assert applied(rows) == [("delete", "iam_user")]
    assert [u["UserName"] for u in iam.list_users()["Users"]] == ["iasql-robert"]
    assert iam.list_entities_for_policy(PolicyArn=write)["PolicyUsers"] == []


async def test_import_and_drift_through_rollback(registry, ctx, dsn, aws, iam_mod):
    iam = aws("iam")
    read = policy(aws, "iasql-read")
    iam.create_user(UserName="iasql-outside", Path="/ext/")
    iam.attach_user_policy(UserName="iasql-outside", PolicyArn=read)
    key = iam.create_access_key(UserName="iasql-outside")["AccessKey"]
    await call(registry, ctx, "iasql_begin")
    rows = await call(registry, ctx, "iasql_rollback")
    assert sorted((a, t, i) for a, t, i, _ in rows) == [
        ("create", "access_key", f"{key['AccessKeyId']}|iasql-outside"), ("create", "iam_user", "iasql-outside")]
    assert await sql(dsn, "SELECT user_name, path, attached_policies_arns FROM iam_user") == [
        ("iasql-outside", "/ext/", [read])]
    assert await sql(dsn, "SELECT access_key_id, status::text, user_name FROM access_key") == [
        (key["AccessKeyId"], "Active", "iasql-outside")]
    # the secret is nowhere in the database: not in the table, not in the audit log
    assert key["SecretAccessKey"] not in str(await sql(dsn, "SELECT * FROM access_key"))
    assert key["SecretAccessKey"] not in str(await sql(dsn, "SELECT * FROM iasql_audit_log"))

    # drift: path, policies and the key's status changed in the cloud, a second key made
    iam.update_user(UserName="iasql-outside", NewPath="/moved/")
    iam.detach_user_policy(UserName="iasql-outside", PolicyArn=read)
    iam.update_access_key(UserName="iasql-outside", AccessKeyId=key["AccessKeyId"], Status="Inactive")
    key2 = iam.create_access_key(UserName="iasql-outside")["AccessKey"]
    await call(registry, ctx, "iasql_begin")
    preview = await call(registry, ctx, "iasql_preview")  # no user change: the sync plan
    assert sorted((a, t, i) for a, t, i, _ in preview) == [
        ("create", "access_key", f"{key2['AccessKeyId']}|iasql-outside"),
        ("update", "access_key", f"{key['AccessKeyId']}|iasql-outside"), ("update", "iam_user", "iasql-outside")]
    await call(registry, ctx, "iasql_rollback")
    assert await sql(dsn, "SELECT path, attached_policies_arns FROM iam_user") == [("/moved/", None)]
    assert sorted(await sql(dsn, "SELECT access_key_id, status::text FROM access_key")) == sorted(
        [(key["AccessKeyId"], "Inactive"), (key2["AccessKeyId"], "Active")])


async def test_access_keys_status_in_place_delete_and_read_only(registry, ctx, dsn, aws, iam_mod):
    iam = aws("iam")
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO iam_user (user_name) VALUES ('iasql-keys')")
    await call(registry, ctx, "iasql_commit")
    k1 = iam.create_access_key(UserName="iasql-keys")["AccessKey"]["AccessKeyId"]
    k2 = iam.create_access_key(UserName="iasql-keys")["AccessKey"]["AccessKeyId"]
    await call(registry, ctx, "iasql_begin")
    await call(registry, ctx, "iasql_rollback")
    assert await sql(dsn, "SELECT count(*) FROM access_key") == [(2,)]

    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "UPDATE access_key SET status = 'Inactive' WHERE access_key_id = %s", (k1,))
    await sql(dsn, "DELETE FROM access_key WHERE access_key_id = %s", (k2,))
    # a row inserted by hand creates no key (IaSQL: keys come from access_key_request) and goes away
    await sql(dsn, "INSERT INTO access_key (access_key_id, user_name, status) VALUES ('AKIAMADEUP', 'iasql-keys', 'Active')")
    with pytest.raises(psycopg.errors.RaiseException, match="Access key id or user cannot be modified"):
        await sql(dsn, "UPDATE access_key SET access_key_id = 'AKIAOTHER' WHERE access_key_id = %s", (k1,))
    preview = await call(registry, ctx, "iasql_preview")
    assert sorted(preview) == [
        ("create", "access_key", "AKIAMADEUP|iasql-keys",
         "access key AKIAMADEUP of IAM user iasql-keys (Active) (cannot be created here: the row is removed)"),
        ("delete", "access_key", f"{k2}|iasql-keys", f"access key {k2} of IAM user iasql-keys (Active)"),
        ("update", "access_key", f"{k1}|iasql-keys", f"access key {k1} of IAM user iasql-keys (Inactive)")]
    rows = await call(registry, ctx, "iasql_commit")
    assert sorted(applied(rows)) == [("create", "access_key"), ("delete", "access_key"), ("update", "access_key")]
    keys = iam.list_access_keys(UserName="iasql-keys")["AccessKeyMetadata"]
    assert [(k["AccessKeyId"], k["Status"]) for k in keys] == [(k1, "Inactive")]
    assert await sql(dsn, "SELECT access_key_id, status::text FROM access_key") == [(k1, "Inactive")]

    # a user and its keys deleted in one commit: keys first, then the user
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "DELETE FROM access_key; DELETE FROM iam_user")
    rows = await call(registry, ctx, "iasql_commit")
    assert applied(rows) == [("delete", "access_key"), ("delete", "iam_user")]
    assert iam.list_users()["Users"] == []


async def test_install_imports_what_is_in_the_cloud(registry, ctx, dsn, aws):
    iam = aws("iam")
    iam.create_user(UserName="iasql-before")
    key = iam.create_access_key(UserName="iasql-before")["AccessKey"]["AccessKeyId"]
    rows = await call(registry, ctx, "iasql_install", "aws_iam")
    assert rows == [("aws_iam@0.1.0", "iam_user", 1), ("aws_iam@0.1.0", "access_key", 1), ("aws_iam@0.1.0", "iam_role", 0)]
    assert await sql(dsn, "SELECT access_key_id, user_name, status::text FROM access_key") == [
        (key, "iasql-before", "Active")]
