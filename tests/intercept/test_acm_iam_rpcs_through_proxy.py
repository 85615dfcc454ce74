"""aws_acm's ``certificate_request``/``certificate_import`` and aws_iam's ``set_user_password``
through psql, psycopg and the proxy on the sandbox cloud (moto over HTTP): answered by the engine
in the caller's transaction, with the caller's rights; unknown functions (42883) until their
module is installed; the password reaches neither the proxy's log nor the audit log."""

from __future__ import annotations

import boto3
import psycopg
import pytest

from tests.engine.test_module_rpcs_acm_iam import self_signed
from tests.intercept.conftest import install_with_credentials, psql
from tests.intercept.test_privileges import refused, roles, through_proxy  # noqa: F401  (fixture)

PASSWORD = "Pr0xy-Secret-Passw0rd-xyz!"


def _client(moto_server, service: str):
    return boto3.client(service, endpoint_url=moto_server.endpoint_url, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


@pytest.fixture
def acm(moto_server):
    """The ACM client; certificates this test made (``made``) are deleted afterwards, so later
    installs in the shared sandbox cloud do not read them in."""
    client = _client(moto_server, "acm")
    client.made = []
    yield client
    for arn in client.made:
        try:
            client.delete_certificate(CertificateArn=arn)
        except client.exceptions.ResourceNotFoundException:
            pass


def test_not_installed_is_an_unknown_function(iasql_proxy, fresh_db):
    res = psql(iasql_proxy.port, fresh_db, "SELECT * FROM iasql_version()", "-A", "-t")
    assert res.returncode == 0, res.stderr
    for call in ("certificate_request('a.example.com', 'EMAIL', 'us-east-1')",
                 "certificate_import('c', 'k', 'us-east-1')", f"set_user_password('u', '{PASSWORD}')"):
        res = psql(iasql_proxy.port, fresh_db, f"SELECT * FROM {call}", "-v", "VERBOSITY=verbose")
        assert res.returncode != 0
        assert "42883" in res.stderr and call.split("(")[0] in res.stderr, res.stderr


def test_certificate_import_through_the_proxy(iasql_proxy, fresh_db, acm):
    install_with_credentials(iasql_proxy.port, fresh_db, "aws_acm")
    pem, key = self_signed("proxy-import.example.com")
    with psycopg.connect(iasql_proxy.dsn(dbname=fresh_db), autocommit=True, connect_timeout=5) as conn:
        cur = conn.execute("SELECT * FROM certificate_import(%s, %s, 'us-east-1', '{}', %s)", (pem, key, '{"t": "1"}'))
        assert [d.name for d in cur.description] == ["arn", "status", "message"]
        [(arn, status, message)] = cur.fetchall()
        acm.made.append(arn)
        assert (status, message) == ("ISSUED", "Imported the certificate successfully")
        assert conn.execute("SELECT domain_name, certificate_type::text, status::text, region, tags::text "
                            "FROM certificate WHERE arn = %s", (arn,)).fetchall() == \
            [("proxy-import.example.com", "IMPORTED", "ISSUED", "us-east-1", '{"t": "1"}')]
        # in a transaction block: the row goes with the ROLLBACK, the certificate stays in ACM
        conn.execute("BEGIN")
        [(arn2, _, _)] = conn.execute("SELECT * FROM certificate_import(%s, %s, 'us-east-1')", (pem, key)).fetchall()
        acm.made.append(arn2)
        assert conn.execute("SELECT count(*) FROM certificate WHERE arn = %s", (arn2,)).fetchone() == (1,)
        conn.execute("ROLLBACK")
        assert conn.execute("SELECT count(*) FROM certificate WHERE arn = %s", (arn2,)).fetchone() == (0,)
        assert acm.describe_certificate(CertificateArn=arn2)["Certificate"]["Type"] == "IMPORTED"
        with pytest.raises(psycopg.errors.InvalidParameterValue) as ei:
            conn.execute("SELECT * FROM certificate_import('no pem here', %s, 'us-east-1')", (key,))
        assert "not PEM-encoded" in ei.value.diag.message_primary
        with pytest.raises(psycopg.errors.NullValueNotAllowed):
            conn.execute("SELECT * FROM certificate_import(NULL, %s, 'us-east-1')", (key,))
        audit = str(conn.execute("SELECT * FROM iasql_audit_log").fetchall())
    assert key.splitlines()[1] not in audit
    assert key.splitlines()[1] not in iasql_proxy.log()


def test_certificate_request_through_psql(iasql_proxy, fresh_db, acm):
    install_with_credentials(iasql_proxy.port, fresh_db, "aws_acm")
    res = psql(iasql_proxy.port, fresh_db, "SELECT * FROM certificate_request('proxy-req.example.com', 'EMAIL', "
                                           "'us-east-1', '{}')", "-A", "-F|")
    assert res.returncode == 0, res.stderr
    head, row = res.stdout.splitlines()[:2]
    assert head == "arn|status|message"
    arn, status, message = row.split("|")
    acm.made.append(arn)
    assert (status, message) == ("PENDING", "Check your email for next steps to validate the certificate request")
    assert acm.describe_certificate(CertificateArn=arn)["Certificate"]["DomainName"] == "proxy-req.example.com"
    res = psql(iasql_proxy.port, fresh_db, f"SELECT domain_name, status FROM certificate WHERE arn = '{arn}'",
               "-A", "-t", "-F|")
    assert res.stdout.split() == ["proxy-req.example.com|PENDING_VALIDATION"]
    # DNS validation needs aws_route53, as in IaSQL; a bad method is refused
    res = psql(iasql_proxy.port, fresh_db, "SELECT * FROM certificate_request('d.example.com', 'DNS', 'us-east-1')",
               "-v", "VERBOSITY=verbose")
    assert res.returncode != 0 and "55000" in res.stderr and "aws_route53" in res.stderr, res.stderr
    res = psql(iasql_proxy.port, fresh_db, "SELECT * FROM certificate_request('d.example.com', 'FAX', 'us-east-1')",
               "-v", "VERBOSITY=verbose")
    assert res.returncode != 0 and "22023" in res.stderr, res.stderr


def test_certificate_import_with_the_callers_rights(iasql_proxy, pg, fresh_db, acm, roles):
    """Without INSERT on certificate the call is refused (42501) before anything is imported."""
    r, pw = roles()
    with through_proxy(iasql_proxy, fresh_db) as owner:
        owner.execute("SELECT * FROM iasql_install('aws_acm')").fetchall()
        if owner.execute("SELECT count(*) FROM aws_credentials").fetchone() == (0,):
            owner.execute("INSERT INTO aws_credentials (access_key_id, secret_access_key) VALUES ('testing', 'testing')")
    pg.psql(f'GRANT SELECT ON public.certificate, public.aws_regions, public.aws_credentials TO "{r}"', dbname=fresh_db)
    pem, key = self_signed("proxy-priv.example.com")
    before = {c["CertificateArn"] for c in acm.list_certificates()["CertificateSummaryList"]}
    with through_proxy(iasql_proxy, fresh_db, r, pw) as c:
        err = refused(c, "SELECT * FROM certificate_import(%s, %s, 'us-east-1')", (pem, key))
        assert (err.sqlstate, err.diag.message_primary) == ("42501", "permission denied for table certificate")
    assert {c["CertificateArn"] for c in acm.list_certificates()["CertificateSummaryList"]} == before


def test_set_user_password_through_the_proxy(iasql_proxy, fresh_db, moto_server):
    iam = _client(moto_server, "iam")
    user = f"rpw-{fresh_db[-8:]}"
    iam.create_user(UserName=user)
    try:
        install_with_credentials(iasql_proxy.port, fresh_db, "aws_iam")
        res = psql(iasql_proxy.port, fresh_db, f"SELECT * FROM set_user_password('{user}', '{PASSWORD}', 'true')",
                   "-A", "-F|")
        assert res.returncode == 0, res.stderr
        assert res.stdout.splitlines()[:2] == ["status|message", "OK|"]
        assert iam.get_login_profile(UserName=user)["LoginProfile"]["UserName"] == user
        with psycopg.connect(iasql_proxy.dsn(dbname=fresh_db), autocommit=True, connect_timeout=5) as conn:
            assert conn.execute("SELECT * FROM set_user_password(%s, %s, %s)",
                                (user, PASSWORD + "2", "true")).fetchall() == [("OK", "")]
            assert iam.get_login_profile(UserName=user)["LoginProfile"]["PasswordResetRequired"] is True
            with pytest.raises(psycopg.errors.UndefinedObject):
                conn.execute("SELECT * FROM set_user_password('nobody-rpw', %s)", (PASSWORD,))
            with pytest.raises(psycopg.errors.NullValueNotAllowed):
                conn.execute("SELECT * FROM set_user_password(NULL, %s)", (PASSWORD,))
            assert conn.execute("SELECT * FROM set_user_password(%s, '')", (user,)).fetchall() == [("OK", "")]
            audit = str(conn.execute("SELECT * FROM iasql_audit_log").fetchall())
            errors = str(conn.execute("SELECT * FROM iasql_get_errors()").fetchall())
        with pytest.raises(iam.exceptions.NoSuchEntityException):
            iam.get_login_profile(UserName=user)
        assert "nobody-rpw" in errors
        for text in (audit, errors, iasql_proxy.log()):
            assert PASSWORD not in text
    finally:
        try:
            iam.delete_login_profile(UserName=user)
        except iam.exceptions.NoSuchEntityException:
            pass
        iam.delete_user(UserName=user)
