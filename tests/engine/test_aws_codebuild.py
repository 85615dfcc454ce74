"""Module aws_codebuild through the engine against a real moto server, checked with boto3 and the tables."""

from __future__ import annotations

import json

import pytest

from engine.rpc import EngineError
from tests.engine.support import call, sql

ASSUME = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"Service": "codebuild.amazonaws.com"}, "Action": "sts:AssumeRole"}]})


@pytest.fixture
async def cb_mod(registry, ctx, dsn):
    """aws_codebuild installed (with aws_iam); returns the install rows."""
    rows = await call(registry, ctx, "iasql_install", "aws_codebuild")
    await sql(dsn, "INSERT INTO aws_credentials (access_key_id, secret_access_key) VALUES ('testing', 'testing')")
    return rows


def projects(aws, region="us-east-1"):
    cb = aws("codebuild", region)
    names = cb.list_projects()["projects"]
    return {p["name"]: p for p in cb.batch_get_projects(names=names)["projects"]} if names else {}


async def test_role_and_project_in_one_commit_replace_delete(registry, ctx, dsn, aws, cb_mod):
    assert {t: n for _, t, n in cb_mod} == {"codebuild_project": 0, "source_credentials_list": 0,
                                            "codebuild_build_list": 0}
    # moto does not implement list_source_credentials: the table is left as it is, and said so
    assert any(ln.startswith("left source_credentials_list as it is") for ln in ctx.lines)
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO iam_role (role_name, assume_role_policy_document) VALUES ('cb-role', %s)", (ASSUME,))
    await sql(dsn, """INSERT INTO codebuild_project (project_name, source_type, source_location, build_spec,
                        environment_variables, service_role_name)
                      VALUES ('app-build', 'GITHUB', 'https://github.com/acme/app', 'version: 0.2',
                              '[{"name": "STAGE", "value": "prod", "type": "PLAINTEXT"}]', 'cb-role')""")
    [(pk,)] = await sql(dsn, "SELECT id FROM codebuild_project")
    assert sorted(await call(registry, ctx, "iasql_preview")) == [
        ("create", "codebuild_project", "app-build|us-east-1", "CodeBuild project app-build (GITHUB) in us-east-1"),
        ("create", "iam_role", "cb-role", "IAM role cb-role")]
    rows = await call(registry, ctx, "iasql_commit")
    # dependency order across modules: the role before the project that names it
    assert [t for _, t, _, d in rows if not d.startswith("synced")] == ["iam_role", "codebuild_project"]
    role_arn = aws("iam").get_role(RoleName="cb-role")["Role"]["Arn"]
    p = projects(aws)["app-build"]
    assert (p["serviceRole"], p["source"], p["artifacts"]["type"]) == (
        role_arn, {"type": "GITHUB", "location": "https://github.com/acme/app", "buildspec": "version: 0.2"},
        "NO_ARTIFACTS")
    assert (p["environment"]["image"], p["environment"]["computeType"], p["environment"]["privilegedMode"],
            p["environment"]["environmentVariables"]) == (
        "aws/codebuild/standard:6.0", "BUILD_GENERAL1_SMALL", True, [{"name": "STAGE", "value": "prod", "type": "PLAINTEXT"}])
    assert await sql(dsn, "SELECT id, arn FROM codebuild_project") == [(pk, p["arn"])]

    # any change replaces the project, as IaSQL
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "UPDATE codebuild_project SET compute_type = 'BUILD_GENERAL1_MEDIUM', build_spec = 'version: 0.2\n'")
    rows = await call(registry, ctx, "iasql_commit")
    assert [(a, t) for a, t, _, d in rows if not d.startswith("synced")] == [("replace", "codebuild_project")]
    p = projects(aws)["app-build"]
    assert (p["environment"]["computeType"], p["source"]["buildspec"]) == ("BUILD_GENERAL1_MEDIUM", "version: 0.2\n")
    assert await sql(dsn, "SELECT id, compute_type::text FROM codebuild_project") == [(pk, "BUILD_GENERAL1_MEDIUM")]

    # the project and its role go in one commit, in reverse dependency order
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "DELETE FROM codebuild_project; DELETE FROM iam_role WHERE role_name = 'cb-role'")
    rows = await call(registry, ctx, "iasql_commit")
    assert [t for a, t, _, d in rows if a == "delete" and not d.startswith("synced")] == ["codebuild_project", "iam_role"]
    assert projects(aws) == {}


async def test_import_builds_and_drift(registry, ctx, dsn, aws, cb_mod):
    role = aws("iam").create_role(RoleName="outside-role", AssumeRolePolicyDocument=ASSUME)["Role"]
    cb = aws("codebuild")
    cb.create_project(name="outside", source={"type": "NO_SOURCE", "location": "none", "buildspec": "version: 0.2"},
                      artifacts={"type": "NO_ARTIFACTS"}, serviceRole=role["Arn"],
                      environment={"type": "LINUX_CONTAINER", "image": "aws/codebuild/standard:7.0",
                                   "computeType": "BUILD_GENERAL1_LARGE", "privilegedMode": False})
    build = cb.start_build(projectName="outside")["build"]
    await call(registry, ctx, "iasql_begin")
    rows = await call(registry, ctx, "iasql_rollback")
    assert {(a, t, i) for a, t, i, _ in rows} >= {
        ("create", "iam_role", "outside-role"), ("create", "codebuild_project", "outside|us-east-1"),
        ("create", "codebuild_build_list", f"{build['id']}|us-east-1")}
    assert await sql(dsn, "SELECT image, compute_type::text, privileged_mode, service_role_name, source_type::text "
                          "FROM codebuild_project") == [
        ("aws/codebuild/standard:7.0", "BUILD_GENERAL1_LARGE", False, "outside-role", "NO_SOURCE")]
    [b] = cb.batch_get_builds(ids=[build["id"]])["builds"]
    got = await sql(dsn, "SELECT aws_id, arn, build_number, build_status::text, project_name, start_time IS NOT NULL "
                         "FROM codebuild_build_list")
    assert got == [(b["id"], b["arn"], b["buildNumber"], b["buildStatus"], "outside", True)]
    # builds are AWS's: an inserted row fails the commit, a changed row is put back by the sync
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "UPDATE codebuild_build_list SET build_status = 'FAILED'")
    assert await call(registry, ctx, "iasql_preview") == []
    await call(registry, ctx, "iasql_commit")
    assert await sql(dsn, "SELECT build_status::text FROM codebuild_build_list") == [(b["buildStatus"],)]
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO codebuild_build_list (aws_id, build_status, project_name) VALUES ('x:1', 'SUCCEEDED', 'outside')")
    with pytest.raises(Exception) as ei:
        await call(registry, ctx, "iasql_commit")
    assert "builds cannot be inserted" in str(ei.value)
    assert await sql(dsn, "SELECT aws_id FROM codebuild_build_list") == [(b["id"],)]
    # moto does not implement batch_delete_builds: the delete fails in the first pass and again in
    # the retry over all modules, so the commit fails (58000) and the table is reverted
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "DELETE FROM codebuild_build_list")
    with pytest.raises(EngineError) as ei:
        await call(registry, ctx, "iasql_commit")
    assert ei.value.sqlstate == "58000" and "delete" in ei.value.message
    assert any("batch_delete_builds" in ln for ln in ctx.lines if ln.startswith("failed: delete"))
    assert await sql(dsn, "SELECT aws_id FROM codebuild_build_list") == [(b["id"],)]
    # a project deleted outside goes from the table at the next rollback (its builds first)
    await call(registry, ctx, "iasql_begin")
    cb.delete_project(name="outside")
    rows = await call(registry, ctx, "iasql_rollback")
    assert ("delete", "codebuild_project", "outside|us-east-1") in {(a, t, i) for a, t, i, _ in rows}
    assert await sql(dsn, "SELECT count(*) FROM codebuild_project") == [(0,)]
    # source credentials: the table cannot be read from moto, so a commit that changes it fails
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO source_credentials_list (arn, source_type, auth_type) VALUES ('arn:x', 'GITHUB', 'OAUTH')")
    with pytest.raises(Exception) as ei:
        await call(registry, ctx, "iasql_commit")
    assert "list_source_credentials" in str(ei.value)
    # the IaSQL transaction stays open with the row; a rollback cannot read the table either, so
    # it leaves the table as it is: the row is taken out by hand
    assert await sql(dsn, "SELECT count(*) FROM source_credentials_list") == [(1,)]
    await sql(dsn, "DELETE FROM source_credentials_list")
    await call(registry, ctx, "iasql_rollback")
    assert any(ln.startswith("left source_credentials_list as it is") for ln in ctx.lines[-30:])


async def test_two_regions_and_the_build_spec_function(registry, ctx, dsn, aws, cb_mod):
    await sql(dsn, "UPDATE aws_regions SET is_enabled = true WHERE region = 'eu-west-1'")
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO iam_role (role_name, assume_role_policy_document) VALUES ('cb-role-2', %s)", (ASSUME,))
    await sql(dsn, "INSERT INTO codebuild_project (project_name, source_type, source_location, service_role_name, region) "
                   "VALUES ('same', 'GITHUB', 'https://github.com/a/eu', 'cb-role-2', 'eu-west-1'), "
                   "('same', 'GITHUB', 'https://github.com/a/us', 'cb-role-2', 'us-east-1')")
    await call(registry, ctx, "iasql_commit")
    assert projects(aws, "eu-west-1")["same"]["source"]["location"] == "https://github.com/a/eu"
    assert projects(aws)["same"]["source"]["location"] == "https://github.com/a/us"
    assert await sql(dsn, "SELECT region, arn FROM codebuild_project ORDER BY region") == [
        ("eu-west-1", projects(aws, "eu-west-1")["same"]["arn"]), ("us-east-1", projects(aws)["same"]["arn"])]
    [(spec,)] = await sql(dsn, "SELECT generate_put_ecr_image_build_spec('us-east-1', 'v1', 'app', 'repo.example/app', "
                               "'.', ARRAY['A=1'])")
    assert "docker build --build-arg A=1 -t app ." in spec and "docker push repo.example/app:v1" in spec
    help_rows = await call(registry, ctx, "iasql_help")
    assert sorted(r[1] for r in help_rows if r[0] == "aws_codebuild") == [
        "generate_put_ecr_image_build_spec", "start_build"]
    [(sample,)] = [(r[4],) for r in help_rows if r[1] == "generate_put_ecr_image_build_spec"]
    assert (await sql(dsn, sample))[0][0].startswith("version: 0.2")
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "DELETE FROM codebuild_project")
    await call(registry, ctx, "iasql_commit")
    assert projects(aws) == {} and projects(aws, "eu-west-1") == {}
    assert await call(registry, ctx, "iasql_uninstall", "aws_codebuild")
    assert await sql(dsn, "SELECT to_regclass('public.codebuild_project'), "
                          "to_regproc('public.generate_put_ecr_image_build_spec')") == [(None, None)]
