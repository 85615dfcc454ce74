"""A failed commit through the proxy (issue 15): the revert's table half runs after the caller's
transaction has ended, at once in autocommit and after ROLLBACK inside a block; an IaSQL
transaction whose session ended is closed at once; iasql_help's samples run as printed."""

from __future__ import annotations

import time
import uuid

import psycopg
import pytest

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def txn_iasql_proxy(pg, moto_server, proxy_ini, start_proxy):
    """The proxy process with the engine, in transaction pooling with a pool of 2."""
    from tests.intercept.conftest import engine_section

    return start_proxy(proxy_ini(pool_mode="transaction", default_pool_size=2)
                       + engine_section(moto_server.endpoint_url), "iasql-txn-proxy")


@pytest.fixture(params=["session", "transaction"])
def pooled(request, iasql_proxy, txn_iasql_proxy):
    """``pooled(dbname, autocommit=True)``: a psycopg connection through the proxy in session
    pooling, then (second run) in transaction pooling."""
    proxy = iasql_proxy if request.param == "session" else txn_iasql_proxy
    opened: list[psycopg.Connection] = []

    def make(dbname: str, autocommit: bool = True) -> psycopg.Connection:
        conn = psycopg.connect(proxy.dsn(dbname=dbname), autocommit=autocommit, connect_timeout=5)
        opened.append(conn)
        return conn

    yield make
    for c in opened:
        c.close()


@pytest.fixture
def aws_s3(moto_server):
    """``aws_s3()``: the bucket names in the sandbox cloud (moto), read with boto3."""
    import boto3
    from botocore.config import Config

    client = boto3.client("s3", region_name="us-east-1", endpoint_url=moto_server.endpoint_url,
                          aws_access_key_id="testing", aws_secret_access_key="testing",
                          config=Config(s3={"addressing_style": "path"}))
    return lambda: {b["Name"] for b in client.list_buckets()["Buckets"]}


def _bucket_rows(conn: psycopg.Connection) -> list[str]:
    return [r[0] for r in conn.execute("SELECT name FROM bucket ORDER BY name").fetchall()]


def _prepare(conn: psycopg.Connection) -> str:
    conn.execute("SELECT * FROM iasql_install('aws_s3')").fetchall()
    conn.execute("SELECT * FROM iasql_begin()").fetchall()
    good = f"iasql-ok-{uuid.uuid4().hex[:8]}"
    conn.execute("INSERT INTO bucket (name) VALUES (%s), ('ab')", (good,))
    return good


def test_failed_commit_in_autocommit_reverts_before_the_next_statement(pooled, fresh_db, aws_s3):
    conn = pooled(fresh_db)
    good = _prepare(conn)
    with pytest.raises(psycopg.errors.SystemError) as ei:  # 58000 system_error
        conn.execute("SELECT * FROM iasql_commit()").fetchall()
    assert ei.value.sqlstate == "58000"
    assert "were taken back" in ei.value.diag.message_detail
    # the revert ran before ReadyForQuery: the very next statement sees the tables as at iasql_begin
    assert _bucket_rows(conn) == []
    assert good not in aws_s3()
    kinds = [r[0] for r in conn.execute("SELECT change_type FROM iasql_audit_log WHERE change_type IN "
                                        "('ERROR', 'START_REVERT', 'END_REVERT', 'CLOSE_TRANSACTION') ORDER BY id")]
    assert kinds == ["ERROR", "START_REVERT", "END_REVERT", "CLOSE_TRANSACTION"]


def test_failed_commit_inside_a_block_reverts_after_rollback(pooled, fresh_db, aws_s3):
    setup = pooled(fresh_db)
    good = _prepare(setup)
    conn = pooled(fresh_db, autocommit=False)  # a driver's default mode
    with pytest.raises(psycopg.errors.SystemError):
        conn.execute("SELECT * FROM iasql_commit()").fetchall()
    assert good not in aws_s3()
    # the block is aborted; the rows are still there until the client ends it
    assert _bucket_rows(setup) == ["ab", good]
    conn.rollback()
    deadline = time.monotonic() + 15
    while _bucket_rows(setup) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _bucket_rows(setup) == []
    assert setup.execute("SELECT count(*) FROM iasql_audit_log WHERE change_type = 'END_REVERT'").fetchone() == (1,)
    assert setup.execute("SELECT message FROM iasql_audit_log WHERE change_type = 'ERROR'").fetchone()[0].startswith(
        "iasql_commit: Forward progress halted")


def test_an_iasql_transaction_of_a_session_that_ended_is_closed_by_the_next_begin(connect, fresh_db):
    """The transaction stays usable from other sessions (commit from a second psql works); only
    a new iasql_begin closes it at once, without waiting, once its opener's session has ended."""
    first = connect(dbname=fresh_db)
    first.execute("SELECT * FROM iasql_install('aws_s3')").fetchall()
    [(_, tx)] = first.execute("SELECT * FROM iasql_begin()").fetchall()
    first.close()
    other = connect(dbname=fresh_db)
    assert other.execute("SELECT * FROM iasql_preview()").fetchall() == []  # still open for others
    second = connect(dbname=fresh_db)
    [(message, tx2)] = second.execute("SELECT * FROM iasql_begin()").fetchall()
    assert message == "Transaction started" and tx2 != tx
    assert second.execute("SELECT message, transaction_id FROM iasql_audit_log WHERE change_type = "
                          "'CLOSE_TRANSACTION'").fetchall() == [("abandoned: the session that opened it ended", tx)]
    # a transaction whose opener is still connected is waited for, as before
    third = connect(dbname=fresh_db)
    with pytest.raises(psycopg.errors.LockNotAvailable):
        third.execute("SET lock_timeout = '1s'; SELECT * FROM iasql_begin()")


NEEDS_TRANSACTION = ("iasql_commit", "iasql_preview", "iasql_rollback", "iasql_create_review")


def test_help_samples_run_as_printed(connect, fresh_db):
    conn = connect(dbname=fresh_db)
    conn.execute("SELECT * FROM iasql_install('aws_s3', 'aws_iam')").fetchall()
    helps = conn.execute("SELECT module, name, sample_usage FROM iasql_help()").fetchall()
    assert {m for m, _, _ in helps} == {"iasql_functions", "aws_account", "aws_s3", "aws_iam"}
    assert ("aws_account", "default_aws_region", "SELECT * FROM default_aws_region('us-east-1')") in helps
    # the module functions' samples name a bucket and a user: made first, as a user would
    conn.execute("SELECT * FROM iasql_begin()").fetchall()
    conn.execute("INSERT INTO bucket (name) VALUES ('my-bucket')")
    conn.execute("INSERT INTO iam_user (user_name) VALUES ('my-user')")
    conn.execute("SELECT * FROM iasql_commit()").fetchall()
    for module, name, sample in helps:
        if any(f in sample for f in NEEDS_TRANSACTION):
            conn.execute("SELECT * FROM iasql_rollback(true)").fetchall()  # close any open one
            conn.execute("SELECT * FROM iasql_begin()").fetchall()
        try:
            conn.execute(sample).fetchall()
        except psycopg.Error as e:
            pytest.fail(f"{module}.{name}: {sample!r} failed: {e.sqlstate} {e}")
        if "iasql_uninstall" in sample:
            conn.execute("SELECT * FROM iasql_install('aws_s3', 'aws_iam')").fetchall()
    assert conn.execute("SELECT default_aws_region('us-west-2')").fetchone() == ("us-west-2",)
    assert conn.execute("SELECT default_aws_region()").fetchone() == ("us-west-2",)
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        conn.execute("SELECT default_aws_region('mars-north-1')")


def test_review_and_sql_for_transaction(connect, fresh_db):
    conn = connect(dbname=fresh_db)
    conn.execute("SELECT * FROM iasql_install('aws_s3')").fetchall()
    [(_, tx)] = conn.execute("SELECT * FROM iasql_begin()").fetchall()
    conn.execute("INSERT INTO bucket (name) VALUES ('iasql-review-me')")
    want = ["INSERT INTO \"bucket\" (\"name\", \"policy\", \"created_at\", \"tags\", \"region\") VALUES "
            "('iasql-review-me', NULL, NULL, NULL, 'us-east-1');"]
    assert [r[0] for r in conn.execute("SELECT * FROM iasql_get_sql_for_transaction()")] == want
    assert [r[0] for r in conn.execute("SELECT * FROM iasql_get_sql_for_transaction(%s)", (tx,))] == want
    assert conn.execute("SELECT * FROM iasql_get_sql_for_transaction('no-such-id')").fetchall() == []
    [(md,)] = conn.execute("SELECT * FROM iasql_create_review('Add a bucket', 'For the logs')").fetchall()
    assert md.startswith("# Add a bucket\n\nFor the logs\n\n## IaSQL Preview\n\n| action | table_name | id | description |")
    assert "| create | bucket | iasql-review-me | bucket iasql-review-me in us-east-1 |" in md
    assert md.endswith("## SQL changes\n\n```sql\n" + want[0] + "\n```")


def test_get_errors_lists_the_newest_500(connect, fresh_db):
    conn = connect(dbname=fresh_db)
    conn.execute("SELECT * FROM iasql_modules_installed()").fetchall()  # creates the metadata
    conn.execute("INSERT INTO iasql_audit_log (\"user\", table_name, change_type, message, ts) "
                 "SELECT 'x', 'iasql_audit_log', 'ERROR', 'e' || g, now() - make_interval(secs => 600 - g) "
                 "FROM generate_series(1, 600) g")
    rows = conn.execute("SELECT message FROM iasql_get_errors()").fetchall()
    assert len(rows) == 500 and rows[0] == ("e600",) and rows[-1] == ("e101",)
