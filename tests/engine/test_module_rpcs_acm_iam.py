"""aws_acm's ``certificate_request``/``certificate_import`` and aws_iam's ``set_user_password`` at
engine level against moto: the cloud change, the row written, the failures and their SQLSTATEs,
the caller's rights, and a password that reaches IAM only."""

from __future__ import annotations

import datetime
import json

import pytest

from engine.modules import aws_acm
from engine.rpc import EngineError
from tests.engine.support import Ctx, call, sql
from tests.intercept.test_privileges import roles  # noqa: F401  (fixture)


def self_signed(domain: str) -> tuple[str, str]:
    """A self-signed certificate for ``domain`` and its private key, both PEM."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(domain)]), critical=False)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM).decode(),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()).decode())


async def _install(registry, ctx, dsn, *modules: str) -> None:
    await call(registry, ctx, "iasql_install", *modules)
    if await sql(dsn, "SELECT count(*) FROM aws_credentials") == [(0,)]:
        await sql(dsn, "INSERT INTO aws_credentials (access_key_id, secret_access_key) VALUES ('testing', 'testing')")


async def _certificates(dsn):
    return await sql(dsn, "SELECT arn, certificate_id, domain_name, certificate_type::text, status::text, "
                          "renewal_eligibility::text, in_use, region, tags::text FROM certificate ORDER BY id")


# -- certificate_import -----------------------------------------------------------------------------

async def test_certificate_import_writes_the_row(registry, ctx, dsn, aws):
    await _install(registry, ctx, dsn, "aws_acm")
    pem, key = self_signed("import.example.com")
    [(arn, status, message)] = await call(registry, ctx, "certificate_import", pem, key, "us-east-1", "{}",
                                          '{"team": "web"}')
    assert (status, message) == ("ISSUED", "Imported the certificate successfully")
    described = aws("acm").describe_certificate(CertificateArn=arn)["Certificate"]
    assert (described["DomainName"], described["Type"]) == ("import.example.com", "IMPORTED")
    assert aws("acm").list_tags_for_certificate(CertificateArn=arn)["Tags"] == [{"Key": "team", "Value": "web"}]
    assert await _certificates(dsn) == [(arn, arn.rsplit("/", 1)[-1], "import.example.com", "IMPORTED", "ISSUED",
                                         "INELIGIBLE", False, "us-east-1", '{"team": "web"}')]
    # the key went to ACM only: not in the table, the audit log or a progress line
    body = key.splitlines()[1]
    assert body not in str(await sql(dsn, "SELECT * FROM iasql_audit_log")) + str(ctx.lines)
    # the next sync finds the row already there
    await call(registry, ctx, "iasql_begin")
    await call(registry, ctx, "iasql_rollback")
    assert [r[0] for r in await _certificates(dsn)] == [arn]


async def test_certificate_import_defaults_to_the_default_region(registry, ctx, dsn, aws):
    await _install(registry, ctx, dsn, "aws_acm")
    pem, key = self_signed("default.example.com")
    [(arn, status, _)] = await call(registry, ctx, "certificate_import", pem, key, None, None, None)
    assert status == "ISSUED" and ":us-east-1:" in arn
    assert await sql(dsn, "SELECT region, tags FROM certificate") == [("us-east-1", None)]


async def test_certificate_import_failures(registry, ctx, dsn, aws):
    await _install(registry, ctx, dsn, "aws_acm")
    pem, key = self_signed("bad.example.com")
    for args, state in (((None, key, "us-east-1"), "22004"), ((pem, "", "us-east-1"), "22004"),
                        (("not a pem", key, "us-east-1"), "22023"), ((pem, "not a key", "us-east-1"), "22023"),
                        ((pem, key, "us-east-1", "[1]"), "22023"), ((pem, key, "us-east-1", "{}", "nope"), "22023"),
                        ((pem, key, "eu-north-1"), "22023")):  # not an enabled region
        with pytest.raises(EngineError) as ei:
            await call(registry, ctx, "certificate_import", *args)
        assert ei.value.sqlstate == state, (args[2:], ei.value.message)
    with pytest.raises(EngineError) as ei:
        await call(registry, ctx, "certificate_import", "not a pem", key, "us-east-1")
    assert ei.value.message == "ACM refused to import the certificate: The certificate is not PEM-encoded or is not valid."
    assert aws("acm").list_certificates()["CertificateSummaryList"] == []
    assert await _certificates(dsn) == []
    errors = str(await call(registry, ctx, "iasql_get_errors"))
    assert "certificate_import" in errors and key.splitlines()[1] not in errors


# -- certificate_request ----------------------------------------------------------------------------

async def test_certificate_request_by_email_writes_the_row(registry, ctx, dsn, aws):
    await _install(registry, ctx, dsn, "aws_acm")
    [(arn, status, message)] = await call(registry, ctx, "certificate_request", "mail.example.com", "EMAIL",
                                          "us-east-1", '{"subjectAlternativeNames": ["www.mail.example.com"]}')
    assert (status, message) == ("PENDING", "Check your email for next steps to validate the certificate request")
    described = aws("acm").describe_certificate(CertificateArn=arn)["Certificate"]
    assert described["Status"] == "PENDING_VALIDATION"
    assert sorted(described["SubjectAlternativeNames"]) == ["mail.example.com", "www.mail.example.com"]
    assert await _certificates(dsn) == [(arn, arn.rsplit("/", 1)[-1], "mail.example.com", "AMAZON_ISSUED",
                                         "PENDING_VALIDATION", "INELIGIBLE", False, "us-east-1", None)]


async def test_certificate_request_by_dns_needs_route53(registry, ctx, dsn, aws):
    await _install(registry, ctx, dsn, "aws_acm")
    with pytest.raises(EngineError) as ei:
        await call(registry, ctx, "certificate_request", "dns.example.com", "DNS", "us-east-1")
    assert ei.value.sqlstate == "55000" and "aws_route53" in ei.value.message
    assert aws("acm").list_certificates()["CertificateSummaryList"] == []


async def test_certificate_request_by_dns_not_validated_is_deleted(registry, ctx, dsn, aws, monkeypatch):
    """moto issues a requested certificate only after MOTO_ACM_VALIDATION_WAIT (60 s), whatever
    the DNS records: with a short wait the certificate is not validated, so it is deleted again,
    no row is written, and the validation record made in the hosted zone is removed."""
    monkeypatch.setattr(aws_acm, "ISSUE_WAIT", 1.0)
    monkeypatch.setattr(aws_acm, "POLL_PAUSE", 0.2)
    zone = aws("route53").create_hosted_zone(Name="example.com", CallerReference="rpc-acm")["HostedZone"]["Id"]
    await _install(registry, ctx, dsn, "aws_acm", "aws_route53")
    [(arn, status, message)] = await call(registry, ctx, "certificate_request", "www.example.com", "DNS", "us-east-1")
    assert (status, message) == ("PENDING_VALIDATION", "Certificate could not be validated")
    assert any(ln.startswith("created validation record _") and "in hosted zone example.com" in ln for ln in ctx.lines)
    assert aws("acm").list_certificates()["CertificateSummaryList"] == []
    records = aws("route53").list_resource_record_sets(HostedZoneId=zone)["ResourceRecordSets"]
    assert sorted(r["Type"] for r in records) == ["NS", "SOA"]
    assert await _certificates(dsn) == []


async def test_certificate_request_by_dns_issued_at_once_writes_the_row(registry, ctx, dsn, aws):
    """A certificate of a private CA (options ``arn``) needs no DNS validation: moto issues it at
    once, so the call succeeds and records it."""
    await _install(registry, ctx, dsn, "aws_acm", "aws_route53")
    ca = "arn:aws:acm-pca:us-east-1:123456789012:certificate-authority/12345678-1234-1234-1234-123456789012"
    [(arn, status, message)] = await call(registry, ctx, "certificate_request", "pca.example.com", "DNS",
                                          "us-east-1", json.dumps({"arn": ca}), '{"env": "test"}')
    assert (status, message) == ("ISSUED", "Successfully validated the certificate")
    assert aws("acm").describe_certificate(CertificateArn=arn)["Certificate"]["Status"] == "ISSUED"
    assert await sql(dsn, "SELECT arn, domain_name, status::text, tags::text FROM certificate") == \
        [(arn, "pca.example.com", "ISSUED", '{"env": "test"}')]


async def test_certificate_request_failures(registry, ctx, dsn, aws):
    await _install(registry, ctx, dsn, "aws_acm")
    for args, state in (((None, "EMAIL", "us-east-1"), "22004"), (("", "EMAIL", "us-east-1"), "22004"),
                        (("x.example.com", "HTTP", "us-east-1"), "22023"),
                        (("x.example.com", None, "us-east-1"), "22023"),
                        (("x.example.com", "EMAIL", "us-east-1", "not json"), "22023"),
                        (("x.example.com", "EMAIL", "ap-south-1"), "22023")):
        with pytest.raises(EngineError) as ei:
            await call(registry, ctx, "certificate_request", *args)
        assert ei.value.sqlstate == state, (args, ei.value.message)
    assert aws("acm").list_certificates()["CertificateSummaryList"] == []
    assert await _certificates(dsn) == []


async def test_certificate_request_options_must_be_lists(registry, ctx, dsn, aws):
    """A string of SANs was sent as its letters (SANs s, l, t, ...): now 22023 before ACM is asked."""
    await _install(registry, ctx, dsn, "aws_acm")
    for options, message in (('{"subjectAlternativeNames": "notalist"}',
                              "options.subjectAlternativeNames must be a list of strings (domain names)"),
                             ('{"subjectAlternativeNames": ["ok.example.com", 3]}',
                              "options.subjectAlternativeNames must be a list of strings (domain names)"),
                             ('{"domainValidationOptions": "x.example.com"}',
                              'options.domainValidationOptions must be a list of objects ({"DomainName": ..., '
                              '"ValidationDomain": ...})')):
        with pytest.raises(EngineError) as ei:
            await call(registry, ctx, "certificate_request", "x.example.com", "EMAIL", "us-east-1", options)
        assert (ei.value.sqlstate, ei.value.message) == ("22023", message)
    assert aws("acm").list_certificates()["CertificateSummaryList"] == []
    assert await _certificates(dsn) == []
    # a list is sent as it is
    [(arn, status, _)] = await call(registry, ctx, "certificate_request", "x.example.com", "EMAIL", "us-east-1",
                                    '{"subjectAlternativeNames": ["x.example.com", "www.x.example.com"]}')
    assert status == "PENDING"
    sans = aws("acm").describe_certificate(CertificateArn=arn)["Certificate"]["SubjectAlternativeNames"]
    assert sorted(sans) == ["www.x.example.com", "x.example.com"]


async def test_certificate_rpcs_need_insert_on_certificate(registry, ctx, dsn, dbname, pg, aws, roles):
    """A caller who may not INSERT into certificate is refused (42501) before anything is made in
    the cloud."""
    await _install(registry, ctx, dsn, "aws_acm")
    r, pw = roles()
    pg.psql(f'GRANT SELECT ON public.certificate, public.aws_regions, public.aws_credentials TO "{r}"; '
            f'GRANT SELECT, INSERT ON public.iasql_audit_log TO "{r}"', dbname=dbname)
    other = Ctx(dsn=pg.dsn(dbname, user=r, password=pw), database=dbname, user=r)
    try:
        pem, key = self_signed("priv.example.com")
        for name, args in (("certificate_import", (pem, key, "us-east-1")),
                           ("certificate_request", ("priv.example.com", "EMAIL", "us-east-1"))):
            with pytest.raises(EngineError) as ei:
                await call(registry, other, name, *args)
            assert (ei.value.sqlstate, ei.value.message) == ("42501", "permission denied for table certificate")
        assert aws("acm").list_certificates()["CertificateSummaryList"] == []
        pg.psql(f'GRANT INSERT ON public.certificate TO "{r}"; GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO "{r}"',
                dbname=dbname)
        [(arn, status, _)] = await call(registry, other, "certificate_import", pem, key, "us-east-1")
        assert status == "ISSUED"
        assert await sql(dsn, "SELECT arn FROM certificate") == [(arn,)]
    finally:
        await other.close()


async def test_certificate_rpcs_not_installed(registry, ctx):
    for name, args in (("certificate_request", ("a.example.com", "EMAIL", "us-east-1")),
                       ("certificate_import", ("c", "k", "us-east-1"))):
        with pytest.raises(EngineError) as ei:
            await call(registry, ctx, name, *args)
        assert ei.value.sqlstate == "42883" and "iasql_install('aws_acm')" in ei.value.hint


# -- set_user_password ------------------------------------------------------------------------------

PASSWORD = "Sekr1t-Pa55word-for-rpc!"


async def test_set_user_password_creates_changes_and_removes_the_login_profile(registry, ctx, dsn, aws):
    aws("iam").create_user(UserName="pw-user")
    await _install(registry, ctx, dsn, "aws_iam")
    fn = registry.get("set_user_password")
    assert [c.name for c in fn.columns] == ["status", "message"]
    assert await call(registry, ctx, "set_user_password", "pw-user", PASSWORD, "false") == [("OK", "")]
    assert aws("iam").get_login_profile(UserName="pw-user")["LoginProfile"]["UserName"] == "pw-user"
    # a second call changes it, with the reset flag
    assert await call(registry, ctx, "set_user_password", "pw-user", PASSWORD + "2", "true") == [("OK", "")]
    assert aws("iam").get_login_profile(UserName="pw-user")["LoginProfile"]["PasswordResetRequired"] is True
    assert ctx.lines[-2:] == ["set the console password of IAM user pw-user",
                              "changed the console password of IAM user pw-user"]
    # an empty password removes the login profile; again, nothing to remove
    for _ in range(2):
        assert await call(registry, ctx, "set_user_password", "pw-user", "", "false") == [("OK", "")]
        with pytest.raises(aws("iam").exceptions.NoSuchEntityException):
            aws("iam").get_login_profile(UserName="pw-user")
    # the password never reached the database
    audit = str(await sql(dsn, "SELECT * FROM iasql_audit_log"))
    assert PASSWORD not in audit and PASSWORD not in str(ctx.lines)


async def test_set_user_password_failures(registry, ctx, dsn, aws):
    aws("iam").create_user(UserName="pw-other")
    await _install(registry, ctx, dsn, "aws_iam")
    for args, state in (((None, PASSWORD), "22004"), (("", PASSWORD), "22004"),
                        (("no-such-pw-user", PASSWORD), "42704"), (("pw-other", PASSWORD, "maybe"), "22023")):
        with pytest.raises(EngineError) as ei:
            await call(registry, ctx, "set_user_password", *args)
        assert ei.value.sqlstate == state, (args[0], ei.value.message)
        assert PASSWORD not in ei.value.message + (ei.value.detail or "")
    with pytest.raises(aws("iam").exceptions.NoSuchEntityException):
        aws("iam").get_login_profile(UserName="pw-other")
    errors = await call(registry, ctx, "iasql_get_errors")
    assert any("IAM user no-such-pw-user does not exist" in e[1] for e in errors)
    assert PASSWORD not in str(errors) + str(await sql(dsn, "SELECT * FROM iasql_audit_log"))


async def test_set_user_password_not_installed(registry, ctx):
    with pytest.raises(EngineError) as ei:
        await call(registry, ctx, "set_user_password", "u", PASSWORD)
    assert ei.value.sqlstate == "42883" and "iasql_install('aws_iam')" in ei.value.hint


async def test_certificate_request_cancelled_while_validating(registry, ctx, dsn, aws, monkeypatch):
    """A cancel while the call waits for ACM to issue the certificate: 57014, the certificate is
    deleted, the validation record removed, no row written."""
    import asyncio

    monkeypatch.setattr(aws_acm, "ISSUE_WAIT", 30.0)
    monkeypatch.setattr(aws_acm, "POLL_PAUSE", 0.2)
    zone = aws("route53").create_hosted_zone(Name="cancel.example", CallerReference="rpc-acm-c")["HostedZone"]["Id"]
    await _install(registry, ctx, dsn, "aws_acm", "aws_route53")
    asyncio.get_running_loop().call_later(1.5, ctx.cancelled.set)
    with pytest.raises(EngineError) as ei:
        await call(registry, ctx, "certificate_request", "www.cancel.example", "DNS", "us-east-1")
    assert ei.value.sqlstate == "57014"
    assert any(ln.startswith("created validation record") for ln in ctx.lines)
    assert aws("acm").list_certificates()["CertificateSummaryList"] == []
    records = aws("route53").list_resource_record_sets(HostedZoneId=zone)["ResourceRecordSets"]
    assert sorted(r["Type"] for r in records) == ["NS", "SOA"]
    ctx.cancelled.clear()
    assert await _certificates(dsn) == []
