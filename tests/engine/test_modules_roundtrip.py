"""Every simple module's round trip through the engine against a real moto server, from one
``Sample`` per table (``tests/engine/module_roundtrip.py`` runs the steps; boto3 checks the cloud)."""

from __future__ import annotations

import json

import pytest

from engine.rpc import EngineError
from tests.engine.module_roundtrip import ROUNDTRIP, Sample, SqlExpr
from tests.engine.support import call, sql


# -- aws_sqs ---------------------------------------------------------------------------------------
def sqs_queues(aws, region):
    """Queues of ``region`` as boto3 sees them: name -> timeouts, FIFO flag, ARN."""
    sqs = aws("sqs", region)
    out = {}
    for url in sqs.list_queues().get("QueueUrls", []):
        a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        out[url.rsplit("/", 1)[-1]] = {"visibility_timeout": int(a["VisibilityTimeout"]),
                                       "delay_seconds": int(a["DelaySeconds"]),
                                       "fifo": a.get("FifoQueue") == "true", "arn": a["QueueArn"]}
    return out


def sqs_url(aws, region, name):
    """The URL of queue ``name``."""
    return aws("sqs", region).get_queue_url(QueueName=name)["QueueUrl"]


SQS = Sample(
    module="aws_sqs", table="queue", name="iasql-q",
    row={"name": "iasql-q", "visibility_timeout": 45},
    read_back=sqs_queues, expect={"visibility_timeout": 45, "delay_seconds": 0, "fifo": False},
    cloud_id="arn", filled=("url",),
    update={"delay_seconds": 5}, update_expect={"visibility_timeout": 45, "delay_seconds": 5},
    replace={"name": "iasql-q.fifo", "fifo_queue": True}, replace_name="iasql-q.fifo",
    replace_expect={"fifo": True, "delay_seconds": 5},
    cloud_create=lambda aws, region, name: aws("sqs", region).create_queue(
        QueueName=name, Attributes={"DelaySeconds": "7"}),
    imported={"delay_seconds": 7, "visibility_timeout": 30, "fifo_queue": False},
    cloud_drift=lambda aws, region, name: aws("sqs", region).set_queue_attributes(
        QueueUrl=sqs_url(aws, region, name), Attributes={"VisibilityTimeout": "99"}),
    drifted={"visibility_timeout": 99, "delay_seconds": 7},
    refused=(({"name": "plain", "fifo_queue": True}, "The name of a fifo queue should end with .fifo"),
             ({"name": "odd.fifo"}, "Non-fifo queue name should not end with .fifo")),
)


# -- aws_sns ---------------------------------------------------------------------------------------
def sns_topics(aws, region):
    """Topics of ``region``: name -> display name, ARN."""
    sns = aws("sns", region)
    out = {}
    for t in sns.list_topics()["Topics"]:
        a = sns.get_topic_attributes(TopicArn=t["TopicArn"])["Attributes"]
        out[t["TopicArn"].rsplit(":", 1)[-1]] = {"display_name": a.get("DisplayName"), "arn": a["TopicArn"]}
    return out


def sns_arn(aws, region, name):
    """The ARN of topic ``name``."""
    return next(t["TopicArn"] for t in aws("sns", region).list_topics()["Topics"] if t["TopicArn"].endswith(":" + name))


SNS = Sample(
    module="aws_sns", table="topic", name="iasql-t",
    row={"name": "iasql-t", "display_name": "first"},
    read_back=sns_topics, expect={"display_name": "first"},
    cloud_id="arn", filled=("policy",),  # AWS's default policy comes back into the row
    update={"display_name": "second"}, update_expect={"display_name": "second"},
    cloud_create=lambda aws, region, name: aws("sns", region).create_topic(Name=name, Attributes={"DisplayName": "oob"}),
    imported={"display_name": "oob", "fifo_topic": False},
    cloud_drift=lambda aws, region, name: aws("sns", region).set_topic_attributes(
        TopicArn=sns_arn(aws, region, name), AttributeName="DisplayName", AttributeValue="drifted"),
    drifted={"display_name": "drifted"},
    refused=(({"name": "iasql-t"}, "uq_topic_name_region"),),
)



def subscriptions(aws, region):
    """Subscriptions of ``region``: endpoint -> protocol and topic name."""
    return {sub["Endpoint"]: {"protocol": sub["Protocol"], "topic": sub["TopicArn"].rsplit(":", 1)[-1]}
            for sub in aws("sns", region).list_subscriptions()["Subscriptions"]}


def sub_arn(aws, region, endpoint):
    """The ARN of the subscription of ``endpoint``."""
    return next(sub["SubscriptionArn"] for sub in aws("sns", region).list_subscriptions()["Subscriptions"]
                if sub["Endpoint"] == endpoint)


SUBSCRIPTION = Sample(
    module="aws_sns", table="subscription", name="ops@iasql.example", match="endpoint = %s",
    setup=("INSERT INTO topic (name, region) VALUES ('iasql-alerts', '{region}')",),
    setup_committed=True,  # the row names the topic by its ARN
    row={"endpoint": "ops@iasql.example", "protocol": "email",
         "topic": SqlExpr("(SELECT arn FROM topic WHERE name = 'iasql-alerts' AND region = '{region}')")},
    read_back=subscriptions, expect={"protocol": "email", "topic": "iasql-alerts"},
    cloud_id="arn", described="email subscription of",
    update=None, update_expect={},
    cloud_create=lambda aws, region, name: aws("sns", region).subscribe(
        TopicArn=sns_arn(aws, region, "iasql-alerts"), Protocol="email", Endpoint=name),
    imported={"protocol": "email"},
    cloud_drift=lambda aws, region, name: aws("sns", region).unsubscribe(SubscriptionArn=sub_arn(aws, region, name)),
    drifted=None,
)

# -- aws_cloudwatch --------------------------------------------------------------------------------
def log_groups(aws, region):
    """Log groups of ``region``: name -> ARN."""
    return {lg["logGroupName"]: {"arn": lg.get("arn")} for lg in aws("logs", region).describe_log_groups()["logGroups"]}


LOG_GROUP = Sample(
    module="aws_cloudwatch", table="log_group", name="/iasql/app",
    row={"log_group_name": "/iasql/app"}, match="log_group_name = %s",
    read_back=log_groups, expect={}, cloud_id="log_group_arn", filled=("creation_time",),
    update=None, update_expect={},
    cloud_create=lambda aws, region, name: aws("logs", region).create_log_group(logGroupName=name),
    imported={"log_group_name": "/iasql/app"},
    cloud_drift=lambda aws, region, name: aws("logs", region).delete_log_group(logGroupName=name),
    drifted=None,  # deleted out of band: the rollback deletes the row
    refused=(({"log_group_name": "/iasql/app"}, "uq_log_group_name_region"),),
)


def alarms(aws, region):
    """Metric alarms of ``region``: name -> threshold, metric, operator."""
    return {a["AlarmName"]: {"threshold": a["Threshold"], "metric_name": a["MetricName"],
                             "comparison_operator": a["ComparisonOperator"]}
            for a in aws("cloudwatch", region).describe_alarms()["MetricAlarms"]}


def put_alarm(aws, region, name, threshold):
    """Create or overwrite alarm ``name`` (CPU above ``threshold``) out of band."""
    aws("cloudwatch", region).put_metric_alarm(
        AlarmName=name, MetricName="CPUUtilization", Namespace="AWS/EC2", Statistic="Average", Period=60,
        EvaluationPeriods=1, Threshold=threshold, ComparisonOperator="GreaterThanThreshold")


METRIC_ALARM = Sample(
    module="aws_cloudwatch", table="metric_alarm", name="iasql-cpu",
    row={"alarm_name": "iasql-cpu", "metric_name": "CPUUtilization", "namespace": "AWS/EC2", "statistic": "Average",
         "period": 60, "evaluation_periods": 1, "threshold": 50, "comparison_operator": "GreaterThanThreshold"},
    match="alarm_name = %s", read_back=alarms,
    expect={"threshold": 50.0, "metric_name": "CPUUtilization", "comparison_operator": "GreaterThanThreshold"},
    cloud_id="alarm_arn",
    update={"threshold": 80, "comparison_operator": "LessThanThreshold"},
    update_expect={"threshold": 80.0, "comparison_operator": "LessThanThreshold"},
    cloud_create=lambda aws, region, name: put_alarm(aws, region, name, 10),
    imported={"threshold": 10.0, "statistic": "Average", "period": 60},
    cloud_drift=lambda aws, region, name: put_alarm(aws, region, name, 95),
    drifted={"threshold": 95.0},
    refused=(({"alarm_name": "x", "statistic": "Median"}, "metric_alarm_statistic_enum"),),
)


# -- aws_ecr ---------------------------------------------------------------------------------------
def repositories(aws, region):
    """ECR repositories of ``region``: name -> tag mutability, scan on push."""
    return {r["repositoryName"]: {"mutability": r["imageTagMutability"],
                                  "scan_on_push": r["imageScanningConfiguration"]["scanOnPush"]}
            for r in aws("ecr", region).describe_repositories()["repositories"]}


REPOSITORY = Sample(
    module="aws_ecr", table="repository", name="iasql-repo",
    row={"repository_name": "iasql-repo", "scan_on_push": True}, match="repository_name = %s",
    read_back=repositories, expect={"mutability": "MUTABLE", "scan_on_push": True},
    cloud_id="repository_arn", filled=("registry_id", "repository_uri", "created_at"),
    update={"image_tag_mutability": "IMMUTABLE", "scan_on_push": False},
    update_expect={"mutability": "IMMUTABLE", "scan_on_push": False},
    cloud_create=lambda aws, region, name: aws("ecr", region).create_repository(repositoryName=name),
    imported={"image_tag_mutability": "MUTABLE", "scan_on_push": False},
    cloud_drift=lambda aws, region, name: aws("ecr", region).put_image_tag_mutability(
        repositoryName=name, imageTagMutability="IMMUTABLE"),
    drifted={"image_tag_mutability": "IMMUTABLE"},
    refused=(({"repository_name": "x", "image_tag_mutability": "SOMETIMES"}, "repository_image_tag_mutability_enum"),),
)


def ecr_policy(action):
    """A repository policy allowing ``action`` to everyone."""
    return {"Version": "2012-10-17", "Statement": [{"Sid": "pull", "Effect": "Allow", "Principal": "*",
                                                    "Action": [action]}]}


def repository_policies(aws, region):
    """Repository policies of ``region``: repository name -> the actions allowed."""
    ecr = aws("ecr", region)
    out = {}
    for r in ecr.describe_repositories()["repositories"]:
        try:
            text = ecr.get_repository_policy(repositoryName=r["repositoryName"])["policyText"]
        except ecr.exceptions.RepositoryPolicyNotFoundException:
            continue
        out[r["repositoryName"]] = {"actions": json.loads(text)["Statement"][0]["Action"]}
    return out


REPOSITORY_POLICY = Sample(
    module="aws_ecr", table="repository_policy", name="iasql-repo-p",
    setup=("INSERT INTO repository (repository_name, region) VALUES ('iasql-repo-p', '{region}')",),
    row={"repository_id": SqlExpr("(SELECT id FROM repository WHERE repository_name = 'iasql-repo-p' "
                                  "AND region = '{region}')"), "policy": ecr_policy("ecr:BatchGetImage")},
    match="repository_id = (SELECT id FROM repository WHERE repository_name = %s)",
    read_back=repository_policies, expect={"actions": ["ecr:BatchGetImage"]},
    cloud_id="registry_id", described="policy of repository #",
    update={"policy": ecr_policy("ecr:ListImages")}, update_expect={"actions": ["ecr:ListImages"]},
    cloud_create=lambda aws, region, name: aws("ecr", region).set_repository_policy(
        repositoryName=name, policyText=json.dumps(ecr_policy("ecr:DescribeImages"))),
    imported={"policy": ecr_policy("ecr:DescribeImages")},
    cloud_drift=lambda aws, region, name: aws("ecr", region).delete_repository_policy(repositoryName=name),
    drifted=None,
    refused=(({"repository_id": 999999, "policy": {}}, "fk_repository_policy_repository"),),
)


# -- aws_dynamo ------------------------------------------------------------------------------------
def dynamo_tables(aws, region):
    """DynamoDB tables of ``region``: name -> read capacity, key schema, attribute types."""
    ddb = aws("dynamodb", region)
    out = {}
    for name in ddb.list_tables()["TableNames"]:
        t = ddb.describe_table(TableName=name)["Table"]
        out[name] = {"read": t["ProvisionedThroughput"]["ReadCapacityUnits"],
                     "key": [(k["AttributeName"], k["KeyType"]) for k in t["KeySchema"]],
                     "types": {a["AttributeName"]: a["AttributeType"] for a in t["AttributeDefinitions"]}}
    return out


def provisioned(n):
    """Provisioned throughput of ``n`` read and write units."""
    return {"ReadCapacityUnits": n, "WriteCapacityUnits": n}


DYNAMO_TABLE = Sample(
    module="aws_dynamo", table="dynamo_table", name="iasql-tbl", match="table_name = %s",
    row={"table_name": "iasql-tbl", "table_class": "STANDARD", "throughput": provisioned(5),
         "primary_key": {"pk": "S", "sk": "N"}},
    read_back=dynamo_tables, expect={"read": 5, "key": [("pk", "HASH"), ("sk", "RANGE")]},
    cloud_id=None, filled=("created_at",),  # moto's tables have no TableId
    update={"throughput": provisioned(10)}, update_expect={"read": 10},
    replace={"primary_key": {"id": "N"}}, replace_expect={"key": [("id", "HASH")], "types": {"id": "N"}},
    cloud_create=lambda aws, region, name: aws("dynamodb", region).create_table(
        TableName=name, BillingMode="PAY_PER_REQUEST", AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}]),
    imported={"throughput": "PAY_PER_REQUEST", "primary_key": {"k": "S"}, "table_class": "STANDARD"},
    cloud_drift=lambda aws, region, name: aws("dynamodb", region).update_table(
        TableName=name, BillingMode="PROVISIONED", ProvisionedThroughput=provisioned(3)),
    drifted={"throughput": provisioned(3)},
    refused=(({"table_name": "x", "table_class": "CHEAP", "throughput": provisioned(1), "primary_key": {"k": "S"}},
              "dynamo_table_table_class_enum"),),
)


# -- aws_secrets_manager ---------------------------------------------------------------------------
def secrets(aws, region):
    """Secrets of ``region``: name -> description and current value."""
    sm = aws("secretsmanager", region)
    return {s["Name"]: {"description": s.get("Description"),
                        "value": sm.get_secret_value(SecretId=s["Name"])["SecretString"]}
            for s in sm.list_secrets()["SecretList"]}


SECRET = Sample(
    module="aws_secrets_manager", table="secret", name="iasql-secret",
    row={"name": "iasql-secret", "description": "first", "value": "s3cr3t-1"},
    read_back=secrets, expect={"description": "first", "value": "s3cr3t-1"},
    cloud_id="version_id",
    update={"description": "second"}, update_expect={"description": "second", "value": "s3cr3t-1"},
    cloud_create=lambda aws, region, name: aws("secretsmanager", region).create_secret(
        Name=name, SecretString="oob", Description="made elsewhere"),
    imported={"description": "made elsewhere", "value": None},  # a value is never read
    cloud_drift=lambda aws, region, name: aws("secretsmanager", region).update_secret(
        SecretId=name, Description="drifted"),
    drifted={"description": "drifted", "value": None},
)


# -- aws_acm ---------------------------------------------------------------------------------------
def certificates(aws, region):
    """ACM certificates of ``region``: domain -> type and tags."""
    acm = aws("acm", region)
    out = {}
    for c in acm.list_certificates()["CertificateSummaryList"]:
        tags = acm.list_tags_for_certificate(CertificateArn=c["CertificateArn"]).get("Tags", [])
        detail = acm.describe_certificate(CertificateArn=c["CertificateArn"])["Certificate"]
        out[c["DomainName"]] = {"type": detail["Type"], "tags": {t["Key"]: t["Value"] for t in tags}}
    return out


def acm_arn(aws, region, domain):
    """The ARN of the certificate for ``domain``."""
    return next(c["CertificateArn"] for c in aws("acm", region).list_certificates()["CertificateSummaryList"]
                if c["DomainName"] == domain)


CERTIFICATE = Sample(
    module="aws_acm", table="certificate", name="app.iasql.example", match="domain_name = %s",
    row={"domain_name": "app.iasql.example", "tags": {"env": "test"}},
    read_back=certificates, expect={"type": "AMAZON_ISSUED", "tags": {"env": "test"}},
    cloud_id="arn", filled=("certificate_id", "certificate_type", "status"),
    update={"tags": {"env": "prod", "team": "web"}}, update_expect={"tags": {"env": "prod", "team": "web"}},
    replace={"domain_name": "api.iasql.example"}, replace_name="api.iasql.example",
    replace_expect={"tags": {"env": "prod", "team": "web"}},
    cloud_create=lambda aws, region, name: aws("acm", region).request_certificate(DomainName=name,
                                                                                  ValidationMethod="DNS"),
    imported={"certificate_type": "AMAZON_ISSUED", "tags": None, "in_use": False},
    cloud_drift=lambda aws, region, name: aws("acm", region).add_tags_to_certificate(
        CertificateArn=acm_arn(aws, region, name), Tags=[{"Key": "owner", "Value": "ops"}]),
    drifted={"tags": {"owner": "ops"}},
    refused=(({"domain_name": "x.iasql.example", "status": "BROKEN"}, "certificate_status_enum"),),
)


# -- aws_route53 -----------------------------------------------------------------------------------
def hosted_zones(aws, region):
    """Hosted zones (global): domain without final dot -> record types."""
    r53 = aws("route53")
    return {z["Name"].rstrip("."): {"types": sorted(r["Type"] for r in r53.list_resource_record_sets(
        HostedZoneId=z["Id"])["ResourceRecordSets"])} for z in r53.list_hosted_zones()["HostedZones"]}


def zone_id(aws, name):
    """The id of hosted zone ``name``."""
    return next(z["Id"] for z in aws("route53").list_hosted_zones()["HostedZones"] if z["Name"].rstrip(".") == name)


HOSTED_ZONE = Sample(
    module="aws_route53", table="hosted_zone", name="iasql.example", match="rtrim(domain_name, '.') = %s",
    row={"domain_name": "iasql.example"}, regional=False,
    read_back=hosted_zones, expect={"types": ["NS", "SOA"]}, cloud_id="hosted_zone_id",
    update=None, update_expect={},
    replace={"domain_name": "iasql2.example"}, replace_name="iasql2.example", replace_expect={"types": ["NS", "SOA"]},
    before_delete=(("DELETE FROM resource_record_set WHERE parent_hosted_zone_id IN "
                    "(SELECT id FROM hosted_zone WHERE rtrim(domain_name, '.') = %s)"),),
    cloud_create=lambda aws, region, name: aws("route53").create_hosted_zone(Name=name, CallerReference="oob-" + name),
    imported={"domain_name": "iasql.example."},  # as AWS spells it
    cloud_drift=lambda aws, region, name: aws("route53").delete_hosted_zone(Id=zone_id(aws, name)),
    drifted=None,
)


def a_records(aws, region):
    """A records of every zone: name without final dot -> values, TTL."""
    r53 = aws("route53")
    return {r["Name"].rstrip("."): {"values": [v["Value"] for v in r["ResourceRecords"]], "ttl": r["TTL"]}
            for z in r53.list_hosted_zones()["HostedZones"]
            for r in r53.list_resource_record_sets(HostedZoneId=z["Id"])["ResourceRecordSets"] if r["Type"] == "A"}


def upsert_a(aws, name, value):
    """UPSERT A record ``name`` (TTL 120) in zone rrs.example out of band."""
    aws("route53").change_resource_record_sets(HostedZoneId=zone_id(aws, "rrs.example"), ChangeBatch={"Changes": [
        {"Action": "UPSERT", "ResourceRecordSet": {"Name": name, "Type": "A", "TTL": 120,
                                                   "ResourceRecords": [{"Value": value}]}}]})


RESOURCE_RECORD_SET = Sample(
    module="aws_route53", table="resource_record_set", name="www.rrs.example", regional=False,
    setup=("INSERT INTO hosted_zone (domain_name) VALUES ('rrs.example')",),
    row={"name": "www.rrs.example", "record_type": "A", "record": "192.0.2.1\n192.0.2.2", "ttl": 300,
         "parent_hosted_zone_id": SqlExpr("(SELECT id FROM hosted_zone WHERE rtrim(domain_name, '.') = 'rrs.example')")},
    match="rtrim(name, '.') = %s AND record_type = 'A'",
    read_back=a_records, expect={"values": ["192.0.2.1", "192.0.2.2"], "ttl": 300}, cloud_id=None,
    update={"record": "192.0.2.3", "ttl": 60}, update_expect={"values": ["192.0.2.3"], "ttl": 60},
    cloud_create=lambda aws, region, name: upsert_a(aws, name, "198.51.100.1"),
    imported={"record": "198.51.100.1", "ttl": 120},
    cloud_drift=lambda aws, region, name: upsert_a(aws, name, "198.51.100.9"),
    drifted={"record": "198.51.100.9"},
    refused=(({"name": "x.rrs.example", "record_type": "A", "record": "192.0.2.1"}, "Check_record__ttl"),),
)

SAMPLES = [SQS, SNS, SUBSCRIPTION, LOG_GROUP, METRIC_ALARM, REPOSITORY, REPOSITORY_POLICY, DYNAMO_TABLE, SECRET, CERTIFICATE,
           HOSTED_ZONE, RESOURCE_RECORD_SET]
ids = [s.id for s in SAMPLES]


@pytest.mark.parametrize("s", SAMPLES, ids=ids)
async def test_create_update_replace_delete(s, registry, ctx, dsn, aws):
    await ROUNDTRIP.create_update_replace_delete(s, registry, ctx, dsn, aws)


@pytest.mark.parametrize("s", SAMPLES, ids=ids)
async def test_import_and_drift(s, registry, ctx, dsn, aws):
    await ROUNDTRIP.import_and_drift(s, registry, ctx, dsn, aws)


@pytest.mark.parametrize("s", list({s.module: s for s in SAMPLES}.values()), ids=lambda s: s.module)
async def test_uninstall_and_install_again(s, registry, ctx, dsn):
    await ROUNDTRIP.uninstall_and_again(s, registry, ctx, dsn)


@pytest.mark.parametrize("s", [s for s in SAMPLES if s.regional], ids=[s.id for s in SAMPLES if s.regional])
async def test_second_region(s, registry, ctx, dsn, aws):
    await ROUNDTRIP.second_region(s, registry, ctx, dsn, aws)


async def test_secret_values_are_write_only_and_never_audited(registry, ctx, dsn, aws):
    await ROUNDTRIP.install(SECRET, registry, ctx, dsn)
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO secret (name, value) VALUES ('db-password', 'hunter2-first')")
    await call(registry, ctx, "iasql_commit")
    sm = aws("secretsmanager")
    assert sm.get_secret_value(SecretId="db-password")["SecretString"] == "hunter2-first"
    [(value, version)] = await sql(dsn, "SELECT value, version_id FROM secret WHERE name = 'db-password'")
    assert value is None and version  # the table no longer holds the secret

    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "UPDATE secret SET value = 'hunter2-second' WHERE name = 'db-password'")
    await call(registry, ctx, "iasql_commit")
    assert sm.get_secret_value(SecretId="db-password")["SecretString"] == "hunter2-second"
    assert await sql(dsn, "SELECT value, version_id <> %s FROM secret WHERE name = 'db-password'", (version,)) == [
        (None, True)]  # a new value is a new version

    audit = await sql(dsn, "SELECT change::text FROM iasql_audit_log WHERE table_name = 'secret'")
    assert audit and not any("hunter2" in c for (c,) in audit)
    assert any("<redacted>" in c for (c,) in audit)
    since = await call(registry, ctx, "iasql_get_sql_since")
    text = "\n".join(r[0] for r in since)
    assert 'INSERT INTO "secret"' in text and "hunter2" not in text


async def test_a_zones_soa_and_ns_records_come_back(registry, ctx, dsn, aws):
    await ROUNDTRIP.install(HOSTED_ZONE, registry, ctx, dsn)
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO hosted_zone (domain_name) VALUES ('keep.example')")
    await call(registry, ctx, "iasql_commit")
    assert await sql(dsn, "SELECT record_type::text, name FROM resource_record_set ORDER BY 1") == [
        ("NS", "keep.example."), ("SOA", "keep.example.")]
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "DELETE FROM resource_record_set")
    rows = await call(registry, ctx, "iasql_commit")
    assert not [r for r in rows if r[0] == "delete" and not r[3].startswith("synced")]  # nothing deleted in the cloud
    assert await sql(dsn, "SELECT count(*) FROM resource_record_set") == [(2,)]  # the sync restored them
    assert hosted_zones(aws, "us-east-1")["keep.example"] == {"types": ["NS", "SOA"]}


async def test_deleting_a_topic_takes_its_subscriptions(registry, ctx, dsn, aws):
    await ROUNDTRIP.install(SNS, registry, ctx, dsn)
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO topic (name) VALUES ('doomed')")
    await call(registry, ctx, "iasql_commit")
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO subscription (endpoint, protocol, topic) SELECT 'a@iasql.example', 'email', arn "
                   "FROM topic WHERE name = 'doomed'")
    await call(registry, ctx, "iasql_commit")
    assert subscriptions(aws, "us-east-1") == {"a@iasql.example": {"protocol": "email", "topic": "doomed"}}
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "DELETE FROM topic WHERE name = 'doomed'")  # ON DELETE CASCADE takes the subscription row
    rows = await call(registry, ctx, "iasql_commit")
    assert {(a, t) for a, t, _, d in rows if not d.startswith("synced")} == {("delete", "topic"), ("delete", "subscription")}
    assert sns_topics(aws, "us-east-1") == {} and subscriptions(aws, "us-east-1") == {}
    assert await sql(dsn, "SELECT count(*) FROM subscription") == [(0,)]


def push_image(aws, repository, tag):
    """Push a (manifest-only) image tagged ``tag`` to ``repository`` out of band; returns its digest."""
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                           "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 7,
                                      "digest": "sha256:" + "a" * 64}, "layers": [], "tag": tag})
    return aws("ecr").put_image(repositoryName=repository, imageManifest=manifest, imageTag=tag)["image"][
        "imageId"]["imageDigest"]


async def test_repository_images_come_in_and_go_but_are_not_inserted(registry, ctx, dsn, aws):
    await ROUNDTRIP.install(REPOSITORY, registry, ctx, dsn)
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO repository (repository_name) VALUES ('app')")
    await call(registry, ctx, "iasql_commit")
    digest = push_image(aws, "app", "v1")
    push_image(aws, "app", "v2")
    await call(registry, ctx, "iasql_begin")
    rows = await call(registry, ctx, "iasql_rollback")
    assert sorted(a for a, t, _, _ in rows if t == "repository_image") == ["create", "create"]
    got = await sql(dsn, "SELECT i.image_tag, i.image_digest, i.image_id, i.private_repository_region FROM repository_image i "
                         "JOIN repository r ON r.id = i.private_repository_id ORDER BY 1")
    assert got[0] == ("v1", digest, f"{digest}|v1|private|app|us-east-1", "us-east-1") and got[1][0] == "v2"
    # the region of an image cannot change (IaSQL's trigger)
    with pytest.raises(Exception, match="Region cannot be modified"):
        await sql(dsn, "UPDATE repository_image SET private_repository_region = 'eu-west-1'")

    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "DELETE FROM repository_image WHERE image_tag = 'v1'")
    await call(registry, ctx, "iasql_commit")
    tags = [t for i in aws("ecr").describe_images(repositoryName="app")["imageDetails"] for t in i.get("imageTags", [])]
    assert tags == ["v2"]

    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO repository_image (image_id, image_digest, image_tag, private_repository_id, "
                   "private_repository_region) SELECT 'x', 'sha256:x', 'v3', id, region FROM repository")
    with pytest.raises(EngineError, match="ImagesArePushed"):
        await call(registry, ctx, "iasql_commit")
