"""Module RPCs ``log_group_tail`` (aws_cloudwatch), ``start_build`` (aws_codebuild) and
``confirm_subscription`` (aws_sns) through psql/psycopg and the proxy on the sandbox cloud (moto
over HTTP): answered by the engine on the client's own connection; unknown (42883) while their
module is not installed."""

from __future__ import annotations

import json
import time

import boto3
import psycopg
import pytest

from tests.intercept.conftest import install_with_credentials, psql
from tests.intercept.test_privileges import roles  # noqa: F401  (fixture)

ASSUME = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"Service": "codebuild.amazonaws.com"}, "Action": "sts:AssumeRole"}]})


def _client(moto_server, service, region="us-east-1"):
    return boto3.client(service, endpoint_url=moto_server.endpoint_url, region_name=region,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


@pytest.fixture(autouse=True)
def _cleanup(moto_server):
    """The sandbox cloud is shared by the whole session: this file's log groups (``/rpt-``),
    projects and roles (``rpb-``) and topics (``rps-``) are deleted after each test."""
    yield
    logs = _client(moto_server, "logs")
    for g in logs.describe_log_groups(logGroupNamePrefix="/rpt-")["logGroups"]:
        logs.delete_log_group(logGroupName=g["logGroupName"])
    cb = _client(moto_server, "codebuild")
    for name in cb.list_projects()["projects"]:
        if name.startswith("rpb-"):
            cb.delete_project(name=name)
    iam = _client(moto_server, "iam")
    for r in iam.list_roles()["Roles"]:
        if r["RoleName"].startswith("rpb-"):
            iam.delete_role(RoleName=r["RoleName"])
    sns = _client(moto_server, "sns")
    for t in sns.list_topics()["Topics"]:
        if t["TopicArn"].rsplit(":", 1)[-1].startswith("rps-"):
            sns.delete_topic(TopicArn=t["TopicArn"])


@pytest.mark.parametrize("call", ["SELECT * FROM log_group_tail('/g')", "SELECT * FROM start_build('p')",
                                  "SELECT * FROM confirm_subscription('arn', 'token')"])
def test_not_installed_is_an_unknown_function(iasql_proxy, fresh_db, call):
    res = psql(iasql_proxy.port, fresh_db, "SELECT * FROM iasql_version()", "-A", "-t")  # metadata only
    assert res.returncode == 0, res.stderr
    res = psql(iasql_proxy.port, fresh_db, call, "-v", "VERBOSITY=verbose")
    assert res.returncode != 0
    assert "42883" in res.stderr and call.split()[3].split("(")[0] in res.stderr, res.stderr


def test_log_group_tail_through_psql_and_psycopg(iasql_proxy, fresh_db, moto_server):
    logs = _client(moto_server, "logs")
    group = f"/rpt-{fresh_db[-8:]}"
    logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName="api")
    t0 = int(time.time() * 1000) - 60_000
    logs.put_log_events(logGroupName=group, logStreamName="api",
                        logEvents=[{"timestamp": t0, "message": "boot"}, {"timestamp": t0 + 2000, "message": "ready"}])
    install_with_credentials(iasql_proxy.port, fresh_db, "aws_cloudwatch")
    res = psql(iasql_proxy.port, fresh_db, f"SELECT * FROM log_group_tail('{group}')", "-A", "-F|")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "event_id|log_stream_name|event_timestamp|message"
    ids = [e["eventId"] for e in logs.filter_log_events(logGroupName=group)["events"]]
    assert [(ln.split("|")[0], ln.split("|")[1], ln.split("|")[3]) for ln in lines[1:3]] == [
        (ids[0], "api", "boot"), (ids[1], "api", "ready")]
    # it reads only: usable in any query form, with a WHERE and computed columns
    res = psql(iasql_proxy.port, fresh_db, "SELECT message, (extract(epoch FROM event_timestamp) * 1000)::bigint "
                                           f"FROM log_group_tail('{group}', 'us-east-1') WHERE message <> 'boot'",
               "-A", "-t", "-F|")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [f"ready|{t0 + 2000}"]
    with psycopg.connect(iasql_proxy.dsn(dbname=fresh_db), autocommit=True, connect_timeout=5) as conn:
        cur = conn.execute("SELECT * FROM log_group_tail(%s)", (group,))
        assert [d.name for d in cur.description] == ["event_id", "log_stream_name", "event_timestamp", "message"]
        rows = cur.fetchall()
        assert [(r[3], int(r[2].timestamp() * 1000)) for r in rows] == [("boot", t0), ("ready", t0 + 2000)]
        with pytest.raises(psycopg.errors.UndefinedObject):
            conn.execute("SELECT * FROM log_group_tail(%s)", ("/rpt-no-such-group",))
        with pytest.raises(psycopg.errors.NullValueNotAllowed) as ei:
            conn.execute("SELECT * FROM log_group_tail(NULL)")
        assert ei.value.diag.message_primary == "Invalid log group name"


def _project(moto_server, name):
    role = _client(moto_server, "iam").create_role(RoleName=f"{name}-role", AssumeRolePolicyDocument=ASSUME)["Role"]
    _client(moto_server, "codebuild").create_project(
        name=name, source={"type": "NO_SOURCE", "location": "none", "buildspec": "version: 0.2"},
        artifacts={"type": "NO_ARTIFACTS"}, serviceRole=role["Arn"],
        environment={"type": "LINUX_CONTAINER", "image": "aws/codebuild/standard:7.0",
                     "computeType": "BUILD_GENERAL1_SMALL"})


def test_start_build_through_psql(iasql_proxy, fresh_db, moto_server):
    cb = _client(moto_server, "codebuild")
    project = f"rpb-{fresh_db[-8:]}"
    _project(moto_server, project)
    install_with_credentials(iasql_proxy.port, fresh_db, "aws_codebuild")
    res = psql(iasql_proxy.port, fresh_db, "SELECT * FROM iasql_begin(); SELECT * FROM iasql_rollback()")
    assert res.returncode == 0, res.stderr
    res = psql(iasql_proxy.port, fresh_db, f"SELECT * FROM start_build('{project}')", "-A", "-F|")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[:2] == ["name|status|message", f"{project}|OK|"]
    [build_id] = cb.list_builds_for_project(projectName=project)["ids"]
    res = psql(iasql_proxy.port, fresh_db, "SELECT aws_id, build_status, project_name FROM codebuild_build_list "
                                           f"WHERE project_name = '{project}'", "-A", "-t", "-F|")
    assert res.stdout.split() == [f"{build_id}|SUCCEEDED|{project}"]
    # in a transaction block: the row goes with its ROLLBACK; the build, a cloud action, stays
    res = psql(iasql_proxy.port, fresh_db, f"BEGIN; SELECT status FROM start_build('{project}', 'us-east-1'); "
                                           "SELECT count(*) FROM codebuild_build_list; ROLLBACK; "
                                           "SELECT count(*) FROM codebuild_build_list", "-A", "-t")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["BEGIN", "OK", "2", "ROLLBACK", "1"]
    assert len(cb.list_builds_for_project(projectName=project)["ids"]) == 2
    # failures carry their SQLSTATE
    res = psql(iasql_proxy.port, fresh_db, "SELECT * FROM start_build('rpb-no-such-project')", "-v", "VERBOSITY=verbose")
    assert res.returncode != 0 and "42704" in res.stderr and "Codebuild project not found" in res.stderr, res.stderr
    res = psql(iasql_proxy.port, fresh_db, "SELECT * FROM start_build(NULL)", "-v", "VERBOSITY=verbose")
    assert res.returncode != 0 and "22004" in res.stderr, res.stderr
    # a mutating RPC is refused where Postgres could skip it or run it twice
    res = psql(iasql_proxy.port, fresh_db, f"SELECT 1 WHERE false AND EXISTS (SELECT * FROM start_build('{project}'))",
               "-v", "VERBOSITY=verbose")
    assert res.returncode != 0 and "0A000" in res.stderr and "cannot be called" in res.stderr, res.stderr
    assert len(cb.list_builds_for_project(projectName=project)["ids"]) == 2


def test_start_build_with_the_callers_rights(iasql_proxy, pg, fresh_db, moto_server, roles):
    """Without INSERT on codebuild_build_list the call is refused (42501) before a build is
    started; granted it, the build is started and recorded."""
    from tests.intercept.test_privileges import refused, through_proxy

    cb = _client(moto_server, "codebuild")
    project = f"rpb-{fresh_db[-8:]}"
    _project(moto_server, project)
    r, pw = roles()
    with through_proxy(iasql_proxy, fresh_db) as owner:
        owner.execute("SELECT * FROM iasql_install('aws_codebuild')").fetchall()
        if owner.execute("SELECT count(*) FROM aws_credentials").fetchone() == (0,):
            owner.execute("INSERT INTO aws_credentials (access_key_id, secret_access_key) VALUES ('testing', 'testing')")
        owner.execute("SELECT * FROM iasql_begin()").fetchall()
        owner.execute("SELECT * FROM iasql_rollback()").fetchall()
        assert owner.execute("SELECT count(*) FROM codebuild_project WHERE project_name = %s",
                             (project,)).fetchone() == (1,)
    pg.psql(f'GRANT SELECT ON public.codebuild_project, public.codebuild_build_list, public.aws_regions, '
            f'public.aws_credentials TO "{r}"', dbname=fresh_db)
    call = "SELECT * FROM start_build(%s)"
    with through_proxy(iasql_proxy, fresh_db, r, pw) as c:
        err = refused(c, call, (project,))
        assert (err.sqlstate, err.diag.message_primary) == ("42501", "permission denied for table codebuild_build_list")
    assert cb.list_builds_for_project(projectName=project)["ids"] == []  # no build was started
    pg.psql(f'GRANT INSERT ON public.codebuild_build_list TO "{r}"; '
            f'GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO "{r}"; '
            f'GRANT SELECT, INSERT ON public.iasql_audit_log TO "{r}"', dbname=fresh_db)
    with through_proxy(iasql_proxy, fresh_db, r, pw) as c:
        assert c.execute(call, (project,)).fetchall() == [(project, "OK", "")]
        [build_id] = cb.list_builds_for_project(projectName=project)["ids"]
        assert c.execute("SELECT aws_id, build_status::text FROM codebuild_build_list").fetchall() == [
            (build_id, "SUCCEEDED")]


def test_confirm_subscription_through_psql(iasql_proxy, fresh_db, moto_server):
    sns = _client(moto_server, "sns")
    topic = sns.create_topic(Name=f"rps-{fresh_db[-8:]}")["TopicArn"]
    install_with_credentials(iasql_proxy.port, fresh_db, "aws_sns")
    res = psql(iasql_proxy.port, fresh_db, f"SELECT * FROM confirm_subscription('{topic}', 'token-1')", "-A", "-F|")
    assert res.returncode == 0, res.stderr
    head, row = res.stdout.splitlines()[:2]
    assert head == "arn|status|error"
    arn, status, error = row.split("|")
    # moto accepts any token of an existing topic and answers a subscription ARN of that topic
    assert (status, error) == ("OK", "") and arn.startswith(topic + ":")
    with psycopg.connect(iasql_proxy.dsn(dbname=fresh_db), autocommit=True, connect_timeout=5) as conn:
        [(arn2, status2, _)] = conn.execute("SELECT * FROM confirm_subscription(%s, %s, %s)",
                                            (topic, "token-2", "us-east-1")).fetchall()
        assert status2 == "OK" and arn2.startswith(topic + ":")
        with pytest.raises(psycopg.errors.UndefinedObject):
            conn.execute("SELECT * FROM confirm_subscription(%s, %s)",
                         ("arn:aws:sns:us-east-1:123456789012:rps-no-such-topic", "t"))
        with pytest.raises(psycopg.errors.InvalidParameterValue) as ei:
            conn.execute("SELECT * FROM confirm_subscription(%s)", (topic,))
        assert ei.value.diag.message_primary == "Please provide a valid SNS subscription ARN and a valid token."
