"""Module aws_lambda through the engine against a real moto server (no Docker: nothing is
invoked), checked with boto3 and the tables."""

from __future__ import annotations

import base64
import io
import json
import zipfile

import pytest

from engine.rpc import EngineError
from tests.engine.support import call, sql

POLICY = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]})


def code(body: str) -> bytes:
    """A zip package with one ``index.py``."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("index.py", body)
    return buf.getvalue()


def b64(body: str) -> str:
    return base64.b64encode(code(body)).decode()


@pytest.fixture
async def lambda_mod(registry, ctx, dsn):
    """aws_lambda installed (with aws_iam, aws_vpc, aws_security_group); returns the install rows."""
    rows = await call(registry, ctx, "iasql_install", "aws_lambda")
    await sql(dsn, "INSERT INTO aws_credentials (access_key_id, secret_access_key) VALUES ('testing', 'testing')")
    return rows


def applied(rows):
    return [(a, t) for a, t, _, d in rows if not d.startswith("synced")]


async def test_role_and_function_in_one_commit_then_update_replace_delete(registry, ctx, dsn, aws, lambda_mod):
    assert {t: n for _, t, n in lambda_mod} == {"lambda_function": 0, "lambda_function_security_groups": 0}
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO iam_role (role_name, assume_role_policy_document) VALUES ('fn-role', %s)", (POLICY,))
    await sql(dsn, """INSERT INTO lambda_function (name, zip_b64, handler, runtime, role_name, environment, tags)
                      VALUES ('fn', %s, 'index.handler', 'python3.9', 'fn-role', '{"A": "1"}', '{"team": "x"}')""",
              (b64("def handler(e, c): return 1"),))
    [(fn_pk,)] = await sql(dsn, "SELECT id FROM lambda_function")
    preview = await call(registry, ctx, "iasql_preview")
    assert sorted(preview) == [("create", "iam_role", "fn-role", "IAM role fn-role"),
                               ("create", "lambda_function", str(fn_pk), "lambda function fn (new) in us-east-1")]
    lam = aws("lambda")
    assert lam.list_functions()["Functions"] == []
    rows = await call(registry, ctx, "iasql_commit")
    assert applied(rows) == [("create", "iam_role"), ("create", "lambda_function")]  # the role first
    fn = lam.get_function(FunctionName="fn")
    c = fn["Configuration"]
    [(role_arn,)] = await sql(dsn, "SELECT arn FROM iam_role WHERE role_name = 'fn-role'")
    assert (c["Role"], c["Handler"], c["Runtime"], c["MemorySize"], c["Environment"]["Variables"], fn["Tags"]) == (
        role_arn, "index.handler", "python3.9", 128, {"A": "1"}, {"team": "x"})
    # the code is input only: NULL once deployed; the cloud's fields are written back
    assert await sql(dsn, "SELECT arn, version, zip_b64, architecture::text, package_type::text FROM lambda_function") == [
        (c["FunctionArn"], "$LATEST", None, "x86_64", "Zip")]

    # in place: configuration, tags and new code
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, """UPDATE lambda_function SET memory_size = 256, description = 'second', environment = '{"A": "2"}',
                      tags = '{"team": "y", "env": "t"}', zip_b64 = %s""", (b64("def handler(e, c): return 2"),))
    assert [(a, t) for a, t, _, _ in await call(registry, ctx, "iasql_preview")] == [("update", "lambda_function")]
    rows = await call(registry, ctx, "iasql_commit")
    assert applied(rows) == [("update", "lambda_function")]
    fn2 = lam.get_function(FunctionName="fn")
    c2 = fn2["Configuration"]
    assert (c2["FunctionArn"], c2["MemorySize"], c2["Description"], c2["Environment"]["Variables"], fn2["Tags"]) == (
        c["FunctionArn"], 256, "second", {"A": "2"}, {"team": "y", "env": "t"})
    assert c2["CodeSha256"] != c["CodeSha256"]
    assert await sql(dsn, "SELECT zip_b64, memory_size FROM lambda_function") == [(None, 256)]
    # nothing left to do: a second commit applies nothing
    await call(registry, ctx, "iasql_begin")
    assert applied(await call(registry, ctx, "iasql_commit")) == []

    # a new name replaces the function (with code: AWS never gives it back)
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "UPDATE lambda_function SET name = 'fn2', zip_b64 = %s", (b64("def handler(e, c): return 3"),))
    rows = await call(registry, ctx, "iasql_commit")
    assert applied(rows) == [("replace", "lambda_function")]
    assert [f["FunctionName"] for f in lam.list_functions()["Functions"]] == ["fn2"]
    assert await sql(dsn, "SELECT id, name, zip_b64 FROM lambda_function") == [(fn_pk, "fn2", None)]
    # ... without code it cannot be re-created: the commit fails before deleting anything
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "UPDATE lambda_function SET name = 'fn3'")
    with pytest.raises(EngineError) as ei:
        await call(registry, ctx, "iasql_commit")
    assert "Missing base64 encoded zip file" in ei.value.message
    assert await sql(dsn, "SELECT name FROM lambda_function") == [("fn2",)]
    assert [f["FunctionName"] for f in lam.list_functions()["Functions"]] == ["fn2"]

    # delete the function and its role in one commit (the function first)
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "DELETE FROM lambda_function; DELETE FROM iam_role WHERE role_name = 'fn-role'")
    rows = await call(registry, ctx, "iasql_commit")
    assert applied(rows) == [("delete", "lambda_function"), ("delete", "iam_role")]
    assert lam.list_functions()["Functions"] == []


async def test_function_in_a_vpc_with_security_groups(registry, ctx, dsn, aws, lambda_mod):
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO vpc (cidr_block) VALUES ('10.70.0.0/16')")
    await sql(dsn, "INSERT INTO subnet (cidr_block, availability_zone, vpc_id) "
                   "SELECT '10.70.1.0/24', 'us-east-1a', id FROM vpc WHERE cidr_block = '10.70.0.0/16'")
    await sql(dsn, "INSERT INTO security_group (group_name, description, vpc_id) "
                   "SELECT n, n, id FROM vpc, (VALUES ('fn-a'), ('fn-b')) AS x(n) WHERE cidr_block = '10.70.0.0/16'")
    await sql(dsn, "INSERT INTO iam_role (role_name, assume_role_policy_document) VALUES ('vpc-role', %s)", (POLICY,))
    await sql(dsn, "INSERT INTO lambda_function (name, zip_b64, handler, runtime, role_name) "
                   "VALUES ('vfn', %s, 'index.handler', 'python3.9', 'vpc-role')", (b64("x = 1"),))
    await sql(dsn, "INSERT INTO lambda_function_security_groups (lambda_function_id, security_group_id) "
                   "SELECT f.id, g.id FROM lambda_function f, security_group g WHERE g.group_name = 'fn-a'")
    rows = await call(registry, ctx, "iasql_commit")
    assert [t for _, t in applied(rows)] == ["iam_role", "vpc", "subnet", "security_group", "security_group",
                                             "lambda_function", "lambda_function_security_groups"]
    groups = dict(await sql(dsn, "SELECT group_name, group_id FROM security_group WHERE group_name LIKE 'fn-%%'"))
    lam = aws("lambda")
    assert lam.get_function(FunctionName="vfn")["Configuration"]["VpcConfig"]["SecurityGroupIds"] == [groups["fn-a"]]

    # subnets (AWS ids, as IaSQL) and a second group, then the first group taken off
    [(subnet,)] = await sql(dsn, "SELECT subnet_id FROM subnet WHERE cidr_block = '10.70.1.0/24'")
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "UPDATE lambda_function SET subnets = ARRAY[%s]", (subnet,))
    await sql(dsn, "INSERT INTO lambda_function_security_groups (lambda_function_id, security_group_id) "
                   "SELECT f.id, g.id FROM lambda_function f, security_group g WHERE g.group_name = 'fn-b'")
    await sql(dsn, "DELETE FROM lambda_function_security_groups WHERE security_group_id = "
                   "(SELECT id FROM security_group WHERE group_name = 'fn-a')")
    rows = await call(registry, ctx, "iasql_commit")
    assert sorted(applied(rows)) == [("create", "lambda_function_security_groups"),
                                     ("delete", "lambda_function_security_groups"), ("update", "lambda_function")]
    vpc = lam.get_function(FunctionName="vfn")["Configuration"]["VpcConfig"]
    assert (vpc["SubnetIds"], vpc["SecurityGroupIds"]) == ([subnet], [groups["fn-b"]])
    assert await sql(dsn, "SELECT g.group_name FROM lambda_function_security_groups j "
                          "JOIN security_group g ON g.id = j.security_group_id") == [("fn-b",)]
    # the subnet a function names cannot go (IaSQL's trigger)
    await call(registry, ctx, "iasql_begin")
    with pytest.raises(Exception) as ei:
        await sql(dsn, "DELETE FROM subnet WHERE subnet_id = %s", (subnet,))
    assert "is being used by lambda vfn" in str(ei.value)
    await call(registry, ctx, "iasql_rollback")


async def test_import_and_drift_through_rollback(registry, ctx, dsn, aws):
    iam, lam = aws("iam"), aws("lambda")
    role = iam.create_role(RoleName="imp-role", AssumeRolePolicyDocument=POLICY)["Role"]
    lam.create_function(FunctionName="imp", Role=role["Arn"], Runtime="python3.9", Handler="index.handler",
                        Code={"ZipFile": code("x = 1")}, MemorySize=512, Tags={"k": "v"})
    rows = await call(registry, ctx, "iasql_install", "aws_lambda")
    await sql(dsn, "INSERT INTO aws_credentials (access_key_id, secret_access_key) VALUES ('testing', 'testing')")
    assert ("aws_lambda@0.1.0", "lambda_function", 1) in rows
    assert await sql(dsn, "SELECT name, role_name, memory_size, tags::text, zip_b64 FROM lambda_function") == [
        ("imp", "imp-role", 512, '{"k": "v"}', None)]

    # drift in the cloud comes back into the table
    lam.update_function_configuration(FunctionName="imp", MemorySize=1024, Description="drifted")
    lam.create_function(FunctionName="imp2", Role=role["Arn"], Runtime="python3.8", Handler="a.b",
                        Code={"ZipFile": code("y = 2")})
    await call(registry, ctx, "iasql_begin")
    arn = lam.get_function(FunctionName="imp")["Configuration"]["FunctionArn"]
    preview = await call(registry, ctx, "iasql_preview")
    assert sorted((a, t) for a, t, _, _ in preview) == [("create", "lambda_function"), ("update", "lambda_function")]
    assert ("update", "lambda_function", arn, f"lambda function imp ({arn}) in us-east-1") in preview
    await call(registry, ctx, "iasql_rollback")
    assert await sql(dsn, "SELECT name, memory_size, description FROM lambda_function ORDER BY name") == [
        ("imp", 1024, "drifted"), ("imp2", 128, None)]
    # a function deleted in the cloud goes from the table
    lam.delete_function(FunctionName="imp2")
    await call(registry, ctx, "iasql_begin")
    rows = await call(registry, ctx, "iasql_rollback")
    assert [(a, t) for a, t, _, _ in rows] == [("delete", "lambda_function")]
    # a user change that is rolled back leaves the cloud alone
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "UPDATE lambda_function SET memory_size = 128")
    await call(registry, ctx, "iasql_rollback")
    assert lam.get_function(FunctionName="imp")["Configuration"]["MemorySize"] == 1024
    assert await sql(dsn, "SELECT memory_size FROM lambda_function") == [(1024,)]


async def test_two_regions(registry, ctx, dsn, aws, lambda_mod):
    await sql(dsn, "UPDATE aws_regions SET is_enabled = true WHERE region = 'eu-west-1'")
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO iam_role (role_name, assume_role_policy_document) VALUES ('r2', %s)", (POLICY,))
    await sql(dsn, "INSERT INTO lambda_function (name, zip_b64, handler, runtime, role_name, region) VALUES "
                   "('same', %s, 'index.handler', 'python3.9', 'r2', 'us-east-1'), "
                   "('same', %s, 'index.handler', 'nodejs18.x', 'r2', 'eu-west-1')", (b64("a = 1"), b64("b = 2")))
    await call(registry, ctx, "iasql_commit")
    assert aws("lambda").get_function(FunctionName="same")["Configuration"]["Runtime"] == "python3.9"
    assert aws("lambda", "eu-west-1").get_function(FunctionName="same")["Configuration"]["Runtime"] == "nodejs18.x"
    assert await sql(dsn, "SELECT region, arn LIKE 'arn:aws:lambda:' || region || ':%%' FROM lambda_function "
                          "ORDER BY region") == [("eu-west-1", True), ("us-east-1", True)]
    # a region change replaces the function
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "DELETE FROM lambda_function WHERE region = 'eu-west-1'")
    await sql(dsn, "UPDATE lambda_function SET region = 'eu-west-1', zip_b64 = %s", (b64("c = 3"),))
    rows = await call(registry, ctx, "iasql_commit")
    assert sorted(applied(rows)) == [("delete", "lambda_function"), ("replace", "lambda_function")]
    assert aws("lambda").list_functions()["Functions"] == []
    assert aws("lambda", "eu-west-1").get_function(FunctionName="same")["Configuration"]["Runtime"] == "python3.9"


async def test_listed_installed_together_with_aws_elb_and_uninstalled(registry, ctx, dsn):
    mods = {r[0]: r for r in await call(registry, ctx, "iasql_modules_list")}
    base = ["iasql_platform@0.1.0", "iasql_functions@0.1.0", "aws_account@0.1.0"]
    assert mods["aws_lambda"][1:] == ("0.1.0", base + ["aws_iam@0.1.0", "aws_security_group@0.1.0", "aws_vpc@0.1.0"])
    assert mods["aws_elb"][1:] == ("0.1.0", base + ["aws_security_group@0.1.0", "aws_vpc@0.1.0", "aws_acm@0.1.0"])
    rows = await call(registry, ctx, "iasql_install", "aws_elb", "aws_lambda")
    assert [t for m, t, _ in rows if m in ("aws_elb@0.1.0", "aws_lambda@0.1.0")] == [
        "target_group", "load_balancer", "load_balancer_security_groups", "listener",
        "lambda_function", "lambda_function_security_groups"]
    # both modules' subnet triggers live side by side on subnet
    assert sorted(r[0] for r in await sql(dsn, "SELECT tgname FROM pg_trigger WHERE tgrelid = 'subnet'::regclass "
                                               "AND tgname LIKE 'check_%%'")) == [
        "check_subnets_by_lambda", "check_subnets_by_load_balancer"]
    # aws_vpc cannot go while they depend on it; they can, and leave nothing of theirs behind
    with pytest.raises(EngineError) as ei:
        await call(registry, ctx, "iasql_uninstall", "aws_vpc")
    assert ei.value.sqlstate == "2BP01"
    await call(registry, ctx, "iasql_uninstall", "aws_lambda", "aws_elb")
    assert await sql(dsn, "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'subnet'::regclass AND tgname LIKE 'check_%%'") == [(0,)]
    assert await sql(dsn, "SELECT count(*) FROM pg_proc WHERE proname LIKE 'check_%%load_balancer%%' "
                          "OR proname LIKE 'check_subnets_by_%%'") == [(0,)]
    await call(registry, ctx, "iasql_uninstall", "aws_security_group", "aws_vpc")


async def test_function_without_code_fails_and_takes_back_its_new_role(registry, ctx, dsn, aws, lambda_mod):
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO iam_role (role_name, assume_role_policy_document) VALUES ('lonely', %s)", (POLICY,))
    await sql(dsn, "INSERT INTO lambda_function (name, handler, runtime, role_name) "
                   "VALUES ('nocode', 'index.handler', 'python3.9', 'lonely')")
    with pytest.raises(EngineError) as ei:
        await call(registry, ctx, "iasql_commit")
    assert ei.value.sqlstate == "58000" and "Missing base64 encoded zip file" in ei.value.message
    assert [r["RoleName"] for r in aws("iam").list_roles()["Roles"]] == []
    assert await sql(dsn, "SELECT count(*) FROM lambda_function") == [(0,)]
    assert await sql(dsn, "SELECT count(*) FROM iam_role WHERE role_name = 'lonely'") == [(0,)]


async def test_security_group_drift_comes_back_into_the_join_table(registry, ctx, dsn, aws, lambda_mod):
    ec2, iam, lam = aws("ec2"), aws("iam"), aws("lambda")
    [vpc] = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
    subnet = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])["Subnets"][0]["SubnetId"]
    g1 = ec2.create_security_group(GroupName="d1", Description="d1", VpcId=vpc["VpcId"])["GroupId"]
    g2 = ec2.create_security_group(GroupName="d2", Description="d2", VpcId=vpc["VpcId"])["GroupId"]
    role = iam.create_role(RoleName="d-role", AssumeRolePolicyDocument=POLICY)["Role"]
    lam.create_function(FunctionName="dfn", Role=role["Arn"], Runtime="python3.9", Handler="index.handler",
                        Code={"ZipFile": code("x = 1")}, VpcConfig={"SubnetIds": [subnet], "SecurityGroupIds": [g1]})
    await call(registry, ctx, "iasql_begin")
    await call(registry, ctx, "iasql_rollback")
    q = ("SELECT g.group_id FROM lambda_function_security_groups j JOIN security_group g ON g.id = j.security_group_id "
         "JOIN lambda_function f ON f.id = j.lambda_function_id WHERE f.name = 'dfn'")
    assert await sql(dsn, q) == [(g1,)]
    assert await sql(dsn, "SELECT subnets FROM lambda_function") == [([subnet],)]
    lam.update_function_configuration(FunctionName="dfn", VpcConfig={"SubnetIds": [subnet], "SecurityGroupIds": [g2]})
    await call(registry, ctx, "iasql_begin")
    rows = await call(registry, ctx, "iasql_rollback")
    assert sorted((a, t) for a, t, _, _ in rows) == [("create", "lambda_function_security_groups"),
                                                    ("delete", "lambda_function_security_groups")]
    assert await sql(dsn, q) == [(g2,)]
