"""Commits that never lose a user's rows or leave half-done cloud changes (issue 15), against moto.

IaSQL's commit algorithm: apply the user's changes, then over all modules, then revert (the
cloud changes taken back, the tables set back to ``iasql_begin``), then sync; entities others
change while a commit runs are left alone; a replace keeps the replaced entity's children;
regions that are not enabled are refused before any cloud call; the ``default`` security group
cannot be deleted and is restored without looping; secrets never reach the audit log.
"""

from __future__ import annotations

import psycopg
import pytest

from engine.rpc import EngineError
from tests.engine.support import Ctx, call, sql


@pytest.fixture
async def s3(registry, ctx, dsn):
    await call(registry, ctx, "iasql_install", "aws_s3")


def bucket_names(aws) -> list[str]:
    return sorted(b["Name"] for b in aws("s3").list_buckets()["Buckets"])


async def audit_types(dsn: str, after: int = 0) -> list[str]:
    return [r[0] for r in await sql(dsn, "SELECT change_type FROM iasql_audit_log WHERE id > %s AND change_type NOT IN "
                                         "('INSERT', 'UPDATE', 'DELETE') ORDER BY id", (after,))]


async def max_audit_id(dsn: str) -> int:
    return (await sql(dsn, "SELECT coalesce(max(id), 0) FROM iasql_audit_log"))[0][0]


async def test_failed_commit_reverts_cloud_and_tables(registry, ctx, dsn, aws, s3):
    """Two buckets, the cloud rejects one: the good one is taken back from the cloud, both rows
    go (the tables return to iasql_begin), the IaSQL transaction is closed, audit rows as IaSQL's."""
    await sql(dsn, "INSERT INTO bucket (name) VALUES ('iasql-kept')")  # committed before: must survive
    await call(registry, ctx, "iasql_begin")
    await call(registry, ctx, "iasql_commit")
    assert bucket_names(aws) == ["iasql-kept"]
    mark = await max_audit_id(dsn)
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO bucket (name) VALUES ('iasql-good'), ('ab')")
    await sql(dsn, "UPDATE bucket SET tags = '{\"a\": \"b\"}' WHERE name = 'iasql-kept'")
    with pytest.raises(EngineError) as ei:
        await call(registry, ctx, "iasql_commit", "two buckets")
    assert ei.value.sqlstate == "58000"
    assert "InvalidBucketName" in ei.value.message
    assert "cloud changes this commit made were taken back" in ei.value.detail
    assert "reverted to their state at iasql_begin" in ei.value.detail
    assert bucket_names(aws) == ["iasql-kept"]
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError):  # the tag the commit set in the cloud was taken back
        aws("s3").get_bucket_tagging(Bucket="iasql-kept")
    assert await sql(dsn, "SELECT name, tags FROM bucket ORDER BY name") == [("iasql-kept", None)]
    assert await audit_types(dsn, mark) == ["OPEN_TRANSACTION", "ERROR", "START_REVERT", "END_REVERT",
                                            "CLOSE_TRANSACTION"]
    [(message,)] = await sql(dsn, "SELECT message FROM iasql_audit_log WHERE change_type = 'ERROR'")
    assert message.startswith("iasql_commit: Forward progress halted")
    # the IaSQL transaction is closed: a new one applies nothing of the reverted changes
    with pytest.raises(EngineError) as ei:
        await call(registry, ctx, "iasql_commit")
    assert ei.value.sqlstate == "25P01"
    await call(registry, ctx, "iasql_begin")
    assert await call(registry, ctx, "iasql_preview") == []
    rows = await call(registry, ctx, "iasql_commit")
    assert [r for r in rows if not r[3].startswith("synced")] == []
    assert bucket_names(aws) == ["iasql-kept"]


async def test_retry_over_all_modules_then_success(registry, ctx, dsn, aws, s3):
    """The first apply covers the changed modules; when it fails, a second apply over all
    modules runs (IaSQL's order); a failure of both reverts, a success commits."""
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO bucket (name) VALUES ('iasql-one')")
    rows = await call(registry, ctx, "iasql_commit")
    assert ("create", "bucket", "iasql-one", "bucket iasql-one in us-east-1") in rows
    assert not any("applying again over all installed modules" in ln for ln in ctx.lines)


async def test_rows_written_during_a_commit_are_left_alone(registry, dsn, dbname, aws, s3):
    """A bucket row another session commits while a commit runs is neither deleted by that
    commit's sync nor applied by it; the next commit applies it."""
    inserted = []

    class Inserting(Ctx):
        def progress(self, message: str) -> None:
            super().progress(message)
            if message.startswith("syncing cloud state") and not inserted:
                with psycopg.connect(dsn, autocommit=True) as other:
                    other.execute("INSERT INTO bucket (name) VALUES ('iasql-late')")
                inserted.append(True)

    c = Inserting(dsn=dsn, database=dbname)
    try:
        await call(registry, c, "iasql_begin")
        await sql(dsn, "INSERT INTO bucket (name) VALUES ('iasql-early')")
        rows = await call(registry, c, "iasql_commit")
        assert inserted
        assert not any(i == "iasql-late" for _, _, i, _ in rows)
        assert bucket_names(aws) == ["iasql-early"]
        assert await sql(dsn, "SELECT name FROM bucket ORDER BY name") == [("iasql-early",), ("iasql-late",)]
        await call(registry, c, "iasql_begin")
        rows = await call(registry, c, "iasql_commit")
        assert ("create", "bucket", "iasql-late", "bucket iasql-late in us-east-1") in rows
        assert bucket_names(aws) == ["iasql-early", "iasql-late"]
    finally:
        await c.close()


async def test_replace_keeps_the_rules_of_a_security_group(registry, ctx, dsn, aws):
    await call(registry, ctx, "iasql_install", "aws_security_group")
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO security_group (description, group_name) VALUES ('first', 'iasql-sg')")
    await sql(dsn, "INSERT INTO security_group_rule (is_egress, ip_protocol, from_port, to_port, cidr_ipv4, "
                   "security_group_id) SELECT false, 'tcp', 22, 22, '10.0.0.0/8', id FROM security_group "
                   "WHERE group_name = 'iasql-sg'")
    await call(registry, ctx, "iasql_commit")
    [(old_gid,)] = await sql(dsn, "SELECT group_id FROM security_group WHERE group_name = 'iasql-sg'")
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "UPDATE security_group SET description = 'second' WHERE group_name = 'iasql-sg'")
    rows = await call(registry, ctx, "iasql_commit")
    assert any(a == "replace" and t == "security_group" for a, t, _, _ in rows)
    [(gid,)] = await sql(dsn, "SELECT group_id FROM security_group WHERE group_name = 'iasql-sg'")
    assert gid != old_gid
    ec2 = aws("ec2")
    [group] = ec2.describe_security_groups(GroupIds=[gid])["SecurityGroups"]
    assert group["Description"] == "second"
    rules = ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [gid]}])["SecurityGroupRules"]
    assert {(r["IsEgress"], r["IpProtocol"], r.get("FromPort"), r.get("CidrIpv4")) for r in rules} >= {
        (False, "tcp", 22, "10.0.0.0/8")}
    # the rule row survived the replace and points at the new group's rule
    got = await sql(dsn, "SELECT r.security_group_rule_id, r.from_port FROM security_group_rule r JOIN security_group g "
                         "ON g.id = r.security_group_id WHERE g.group_name = 'iasql-sg' AND NOT r.is_egress")
    ingress = {r["SecurityGroupRuleId"] for r in rules if not r["IsEgress"]}
    assert [(rid in ingress, port) for rid, port in got] == [(True, 22)]


async def test_region_not_enabled_is_refused_before_any_cloud_call(registry, ctx, dsn, aws):
    await call(registry, ctx, "iasql_install", "aws_security_group")
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO security_group (description, group_name, region) VALUES ('x', 'iasql-far', 'eu-west-3')")
    with pytest.raises(EngineError) as ei:
        await call(registry, ctx, "iasql_commit")
    assert ei.value.sqlstate == "22023"
    assert "region eu-west-3 is not enabled" in ei.value.message
    assert "UPDATE aws_regions SET is_enabled = true WHERE region = 'eu-west-3'" in ei.value.hint
    names = {g["GroupName"] for g in aws("ec2", "eu-west-3").describe_security_groups()["SecurityGroups"]}
    assert "iasql-far" not in names
    # the row and the IaSQL transaction stay; a rollback leaves a row of a disabled region alone
    await call(registry, ctx, "iasql_rollback")
    assert await sql(dsn, "SELECT group_name FROM security_group WHERE region = 'eu-west-3'") == [("iasql-far",)]
    # enabled, it is created once
    await sql(dsn, "UPDATE aws_regions SET is_enabled = true WHERE region = 'eu-west-3'")
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "UPDATE security_group SET description = 'y' WHERE group_name = 'iasql-far'")
    await call(registry, ctx, "iasql_commit")
    names = [g["GroupName"] for g in aws("ec2", "eu-west-3").describe_security_groups()["SecurityGroups"]]
    assert names.count("iasql-far") == 1


async def test_deleting_the_default_group_restores_its_row(registry, ctx, dsn, aws):
    await call(registry, ctx, "iasql_install", "aws_security_group")
    before = await sql(dsn, "SELECT group_id FROM security_group WHERE group_name = 'default'")
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "DELETE FROM security_group_rule")
    await sql(dsn, "DELETE FROM security_group WHERE group_name = 'default'")
    rows = await call(registry, ctx, "iasql_commit")
    assert not any(a == "delete" and not d.startswith("synced") for a, _, _, d in rows)
    assert await sql(dsn, "SELECT group_id FROM security_group WHERE group_name = 'default'") == before


PLANTED = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYPLANTEDKEY"


async def test_secrets_never_reach_the_audit_log(registry, ctx, dsn, aws, s3):
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO aws_credentials (access_key_id, secret_access_key) VALUES ('AKIAPLANTED', %s)",
              (PLANTED,))
    await sql(dsn, "UPDATE aws_credentials SET access_key_id = 'AKIAPLANTED2'")
    await sql(dsn, "DELETE FROM aws_credentials")
    dump = await sql(dsn, "SELECT string_agg(change::text || coalesce(message, ''), ' ') FROM iasql_audit_log")
    assert PLANTED not in dump[0][0] and "AKIAPLANTED" in dump[0][0]
    since = [r[0] for r in await call(registry, ctx, "iasql_get_sql_since")]
    tx = [r[0] for r in await call(registry, ctx, "iasql_get_sql_for_transaction")]
    for out in (since, tx):
        assert not any(PLANTED in s for s in out)
        assert any("'<redacted>'" in s and "AKIAPLANTED" in s for s in out), out


async def test_audit_rows_of_a_commit(registry, ctx, dsn, aws, s3):
    mark = await max_audit_id(dsn)
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO bucket (name) VALUES ('iasql-audited')")
    await call(registry, ctx, "iasql_commit", "my message")
    assert await audit_types(dsn, mark) == ["OPEN_TRANSACTION", "SET_COMMIT_MESSAGE", "START_COMMIT", "END_COMMIT",
                                            "CLOSE_TRANSACTION"]
    assert await sql(dsn, "SELECT message FROM iasql_audit_log WHERE change_type = 'SET_COMMIT_MESSAGE'") == [
        ("my message",)]
    # a rollback is logged as IaSQL logs it: START_COMMIT / END_COMMIT
    mark = await max_audit_id(dsn)
    await call(registry, ctx, "iasql_begin")
    await call(registry, ctx, "iasql_rollback")
    assert await audit_types(dsn, mark) == ["OPEN_TRANSACTION", "START_COMMIT", "END_COMMIT", "CLOSE_TRANSACTION"]


async def test_preview_shows_drift_when_nothing_changed(registry, ctx, dsn, aws, s3):
    await call(registry, ctx, "iasql_begin")
    aws("s3").create_bucket(Bucket="iasql-drifted")
    assert await call(registry, ctx, "iasql_preview") == [
        ("create", "bucket", "iasql-drifted", "bucket iasql-drifted in us-east-1")]
    await sql(dsn, "INSERT INTO bucket (name) VALUES ('iasql-mine')")
    assert await call(registry, ctx, "iasql_preview") == [
        ("create", "bucket", "iasql-mine", "bucket iasql-mine in us-east-1")]


async def test_sql_of_a_transaction_keeps_non_ascii_json_text(registry, ctx, dsn, aws, s3):
    """A json value the user wrote with non-ASCII text is replayed as that text (not as \\u escapes:
    the json type keeps its text, so an escaped replay would store different text)."""
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, """INSERT INTO bucket (name, tags) VALUES ('iasql-unicode', '{"team": "ñ✓"}')""")
    [stmt] = [r[0] for r in await call(registry, ctx, "iasql_get_sql_for_transaction")]
    assert '"ñ✓"' in stmt and "\\u00f1" not in stmt, stmt
    await sql(dsn, "DELETE FROM bucket WHERE name = 'iasql-unicode'")
    await sql(dsn, stmt)
    assert await sql(dsn, "SELECT tags::text FROM bucket WHERE name = 'iasql-unicode'") == [('{"team": "ñ✓"}',)]
    await call(registry, ctx, "iasql_rollback")
