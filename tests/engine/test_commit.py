"""Commit / preview / rollback against a real moto server, checked with boto3."""

from __future__ import annotations

import json

import pytest

from engine.rpc import EngineError
from tests.engine.support import call, sql

POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
                                                  "Action": "sts:AssumeRole"}]}


@pytest.fixture
async def s3_iam(registry, ctx, dsn):
    await call(registry, ctx, "iasql_install", "aws_s3", "aws_iam")
    await sql(dsn, "INSERT INTO aws_credentials (access_key_id, secret_access_key) VALUES ('testing', 'testing')")


def bucket_names(aws):
    return sorted(b["Name"] for b in aws("s3").list_buckets()["Buckets"])


async def test_insert_update_delete_then_commit(registry, ctx, dsn, aws, s3_iam):
    [(msg, tx)] = await call(registry, ctx, "iasql_begin")
    assert msg == "Transaction started" and len(tx) == 36
    await sql(dsn, "INSERT INTO bucket (name, tags) VALUES ('iasql-b1', '{\"team\": \"infra\"}'), ('iasql-b2', NULL)")
    policy_arn = aws("iam").create_policy(PolicyName="iasql-read", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:Get*", "Resource": "*"}]}))["Policy"]["Arn"]
    await sql(dsn, "INSERT INTO iam_role (role_name, assume_role_policy_document, description, attached_policies_arns) "
                   "VALUES ('iasql-role', %s, 'first', ARRAY[%s])", (json.dumps(POLICY), policy_arn))
    rows = await call(registry, ctx, "iasql_commit", "first commit")
    applied = {(a, t, i) for a, t, i, d in rows if not d.startswith("synced")}
    assert applied == {("create", "bucket", "iasql-b1"), ("create", "bucket", "iasql-b2"),
                       ("create", "iam_role", "iasql-role")}
    assert bucket_names(aws) == ["iasql-b1", "iasql-b2"]
    assert aws("s3").get_bucket_tagging(Bucket="iasql-b1")["TagSet"] == [{"Key": "team", "Value": "infra"}]
    role = aws("iam").get_role(RoleName="iasql-role")["Role"]
    assert role["Description"] == "first" and role["AssumeRolePolicyDocument"] == POLICY
    [(arn, created)] = await sql(dsn, "SELECT r.arn, b.created_at FROM iam_role r, bucket b WHERE b.name = 'iasql-b1'")
    assert arn == role["Arn"] and created is not None
    assert any(line.startswith("create bucket iasql-b1") for line in ctx.lines)
    # engine writes are audited as iasql_engine, the user's as the session user
    users = dict(await sql(dsn, "SELECT change_type || ':' || \"user\", count(*) FROM iasql_audit_log "
                                "WHERE table_name = 'bucket' GROUP BY 1"))
    assert users["INSERT:postgres"] == 2 and users["UPDATE:iasql_engine"] >= 2

    # update and delete
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "UPDATE bucket SET tags = '{\"team\": \"data\"}' WHERE name = 'iasql-b1'")
    await sql(dsn, "UPDATE iam_role SET description = 'second', attached_policies_arns = NULL")
    await sql(dsn, "DELETE FROM bucket WHERE name = 'iasql-b2'")
    rows = await call(registry, ctx, "iasql_commit")
    assert {(a, i) for a, t, i, d in rows} >= {("update", "iasql-b1"), ("update", "iasql-role"), ("delete", "iasql-b2")}
    assert bucket_names(aws) == ["iasql-b1"]
    assert aws("s3").get_bucket_tagging(Bucket="iasql-b1")["TagSet"] == [{"Key": "team", "Value": "data"}]
    assert aws("iam").get_role(RoleName="iasql-role")["Role"]["Description"] == "second"
    assert aws("iam").list_attached_role_policies(RoleName="iasql-role")["AttachedPolicies"] == []
    # the transaction is closed by the commit
    with pytest.raises(EngineError) as ei:
        await call(registry, ctx, "iasql_commit")
    assert ei.value.sqlstate == "25P01"


async def test_preview_changes_nothing(registry, ctx, dsn, aws, s3_iam):
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO bucket (name) VALUES ('iasql-preview')")
    before = await sql(dsn, "SELECT * FROM bucket")
    log_before = await sql(dsn, "SELECT count(*) FROM iasql_audit_log")
    rows = await call(registry, ctx, "iasql_preview")
    assert rows == [("create", "bucket", "iasql-preview", "bucket iasql-preview in us-east-1")]
    assert bucket_names(aws) == []
    assert await sql(dsn, "SELECT * FROM bucket") == before
    assert await sql(dsn, "SELECT count(*) FROM iasql_audit_log") == log_before
    assert await call(registry, ctx, "iasql_preview") == rows


async def test_rollback_brings_in_cloud_changes_and_drops_uncommitted_rows(registry, ctx, dsn, aws, s3_iam):
    aws("s3").create_bucket(Bucket="made-elsewhere")
    aws("iam").create_role(RoleName="elsewhere-role", AssumeRolePolicyDocument=json.dumps(POLICY))
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO bucket (name) VALUES ('never-committed')")
    rows = await call(registry, ctx, "iasql_rollback")
    assert {(a, t, i) for a, t, i, _ in rows} == {("create", "bucket", "made-elsewhere"),
                                                 ("delete", "bucket", "never-committed"),
                                                 ("create", "iam_role", "elsewhere-role")}
    assert await sql(dsn, "SELECT name FROM bucket") == [("made-elsewhere",)]
    assert await sql(dsn, "SELECT role_name, assume_role_policy_document FROM iam_role") == [("elsewhere-role", POLICY)]
    assert bucket_names(aws) == ["made-elsewhere"]
    # the rolled-back insert is not applied by a later commit
    await call(registry, ctx, "iasql_begin")
    await call(registry, ctx, "iasql_commit")
    assert bucket_names(aws) == ["made-elsewhere"]
    # a commit also pulls in drift of entities the user did not touch
    aws("s3").create_bucket(Bucket="drifted-in")
    await call(registry, ctx, "iasql_begin")
    rows = await call(registry, ctx, "iasql_commit")
    assert ("create", "bucket", "drifted-in", "synced from cloud: bucket drifted-in in us-east-1") in rows
    assert bucket_names(aws) == ["drifted-in", "made-elsewhere"]


async def test_failing_cloud_call_is_reported_and_logged(registry, ctx, dsn, aws, s3_iam):
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO bucket (name) VALUES ('good-bucket')")
    await sql(dsn, "INSERT INTO iam_role (role_name, assume_role_policy_document, attached_policies_arns) "
                   "VALUES ('bad-role', %s, ARRAY['arn:aws:iam::123456789012:policy/missing'])", (json.dumps(POLICY),))
    with pytest.raises(EngineError) as ei:
        await call(registry, ctx, "iasql_commit")
    assert ei.value.sqlstate == "58000"
    assert ei.value.message.startswith("Forward progress halted. All remaining Cloud changes failing to apply")
    assert "IAM role bad-role: iam.attach_role_policy: NoSuchEntity" in ei.value.message
    assert "policy/missing" in ei.value.detail
    errors = await call(registry, ctx, "iasql_get_errors")
    assert len(errors) == 1 and "NoSuchEntity" in errors[0][1] and errors[0][0] is not None
    assert any(line.startswith("failed: ") for line in ctx.lines)
    assert any(line.startswith("applying again over all installed modules") or "applying again" in line
               for line in ctx.lines)
    # reverted: what the commit created in the cloud is gone, the rows are back to iasql_begin,
    # and the IaSQL transaction is closed
    assert bucket_names(aws) == []
    assert [r["RoleName"] for r in aws("iam").list_roles()["Roles"] if r["RoleName"] == "bad-role"] == []
    assert await sql(dsn, "SELECT role_name FROM iam_role UNION ALL SELECT name FROM bucket") == []
    with pytest.raises(EngineError) as ei:
        await call(registry, ctx, "iasql_commit")
    assert ei.value.sqlstate == "25P01"
    # the failed commit's START/END rows went with its rolled-back transaction; the revert's stay
    assert await sql(dsn, "SELECT change_type FROM iasql_audit_log WHERE change_type IN ('START_COMMIT', "
                          "'END_COMMIT', 'START_REVERT', 'END_REVERT') ORDER BY id") == [
        ("START_REVERT",), ("END_REVERT",)]


async def test_cancel_between_cloud_operations(registry, ctx, dsn, aws, s3_iam):
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO bucket (name) SELECT 'cancel-' || g FROM generate_series(1, 4) g")
    ctx.lines.clear()
    ctx.cancel_after_progress = 2  # set while the second create runs: it completes, the third never starts
    with pytest.raises(EngineError) as ei:
        await call(registry, ctx, "iasql_commit")
    assert ei.value.sqlstate == "57014"
    assert ei.value.message == "canceling statement due to user request"
    # the two buckets created before the cancel are taken back: tables and cloud stay in step
    assert "The cloud changes this commit made were taken back." in ei.value.detail
    assert bucket_names(aws) == []
    assert any(line.startswith("revert create bucket cancel-2") for line in ctx.lines)
    # the call's database writes went with the caller's rolled-back transaction; the cancel is an ERROR row
    assert await sql(dsn, "SELECT name FROM bucket WHERE created_at IS NOT NULL") == []
    assert await sql(dsn, "SELECT count(*) FROM iasql_audit_log WHERE change_type LIKE '%_COMMIT'") == [(0,)]
    [(message,)] = await sql(dsn, "SELECT message FROM iasql_audit_log WHERE change_type = 'ERROR'")
    assert message.startswith("iasql_commit: canceling statement due to user request")
    ctx.cancelled.clear()
    ctx.cancel_after_progress = None
    await call(registry, ctx, "iasql_commit")
    assert bucket_names(aws) == [f"cancel-{i}" for i in range(1, 5)]


async def test_security_groups_and_rules(registry, ctx, dsn, aws):
    await call(registry, ctx, "iasql_install", "aws_security_group")
    # the default group of the default VPC is read at install
    assert await sql(dsn, "SELECT group_name FROM security_group") == [("default",)]
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO security_group (description, group_name) VALUES ('web servers', 'iasql-web')")
    await sql(dsn, "INSERT INTO security_group_rule (is_egress, ip_protocol, from_port, to_port, cidr_ipv4, description, "
                   "security_group_id) SELECT false, 'tcp', 443, 443, '0.0.0.0/8', 'https', id FROM security_group "
                   "WHERE group_name = 'iasql-web'")
    await call(registry, ctx, "iasql_commit")
    [(gid,)] = await sql(dsn, "SELECT group_id FROM security_group WHERE group_name = 'iasql-web'")
    assert gid.startswith("sg-")
    ec2 = aws("ec2")
    rules = ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [gid]}])["SecurityGroupRules"]
    assert {(r["IsEgress"], r["IpProtocol"], r.get("FromPort"), r.get("CidrIpv4")) for r in rules} == {
        (False, "tcp", 443, "0.0.0.0/8"), (True, "-1", -1, "0.0.0.0/0")}
    # the default egress rule AWS added is synced into the table
    assert await sql(dsn, "SELECT count(*) FROM security_group_rule r JOIN security_group g ON g.id = r.security_group_id "
                          "WHERE g.group_name = 'iasql-web' AND r.security_group_rule_id IS NOT NULL") == [(2,)]
    # change a rule (replace) and delete the group with its rules
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "UPDATE security_group_rule SET to_port = 444 WHERE from_port = 443")
    rows = await call(registry, ctx, "iasql_commit")
    assert any(a == "replace" and t == "security_group_rule" for a, t, _, _ in rows)
    rules = ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [gid]}])["SecurityGroupRules"]
    assert {r.get("ToPort") for r in rules if not r["IsEgress"]} == {444}
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "DELETE FROM security_group_rule WHERE security_group_id IN "
                   "(SELECT id FROM security_group WHERE group_name = 'iasql-web')")
    await sql(dsn, "DELETE FROM security_group WHERE group_name = 'iasql-web'")
    await call(registry, ctx, "iasql_commit")
    names = {g["GroupName"] for g in ec2.describe_security_groups()["SecurityGroups"]}
    assert "iasql-web" not in names and "default" in names
