"""Calls inside transaction blocks (they run in the block), and direct connections / stubs."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors as pe
from psycopg.pq import TransactionStatus

from tests.intercept.conftest import tags
from tests.intercept.helpers import data_rows, errors_in

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module", autouse=True)
def initialised(iasql_proxy, db):
    """The engine has initialised ``db`` (metadata and stub functions)."""
    with psycopg.connect(iasql_proxy.dsn(dbname=db), autocommit=True) as c:
        c.execute("SELECT * FROM iasql_modules_installed()").fetchall()


def test_begin_and_call_in_one_text(raw):
    """A call inside BEGIN ... runs in that block: what it does is visible to the next statement,
    and ROLLBACK undoes it with the rest of the block."""
    conn = raw()
    conn.query("CREATE TABLE IF NOT EXISTS txb (a int)")
    msgs = conn.query("BEGIN; INSERT INTO txb VALUES (1); SELECT * FROM iasql_install('aws_iam'); "
                      "SELECT count(*) FROM iam_role; INSERT INTO txb VALUES (2)")
    assert errors_in(msgs) == []
    assert tags(msgs) == ["BEGIN", "INSERT 0 1", "SELECT 3", "SELECT 1", "INSERT 0 1"]
    assert msgs[-1] == ("Z", b"T")
    msgs = conn.query("ROLLBACK")
    assert tags(msgs) == ["ROLLBACK"] and msgs[-1] == ("Z", b"I")
    assert data_rows(conn.query("SELECT count(*), to_regclass('iam_role') IS NULL FROM txb")) == [["0", "t"]]


def test_begin_and_call_in_separate_queries(raw):
    conn = raw()
    assert conn.query("BEGIN")[-1] == ("Z", b"T")
    msgs = conn.query("SELECT module_name FROM iasql_install('aws_iam')")
    assert errors_in(msgs) == [] and msgs[-1] == ("Z", b"T")
    assert data_rows(conn.query("SELECT count(*) FROM iam_role"))[0][0].isdigit()
    msgs = conn.query("COMMIT")
    assert tags(msgs) == ["COMMIT"] and msgs[-1] == ("Z", b"I")
    assert data_rows(conn.query("SELECT to_regclass('iam_role') IS NOT NULL")) == [["t"]]
    conn.query("SELECT * FROM iasql_uninstall('aws_iam')")
    # a call in an already failed block: 25P02 like any statement
    conn.query("BEGIN; SELECT 1/0")
    msgs = conn.query("SELECT * FROM iasql_modules_installed()")
    assert [e.sqlstate for e in errors_in(msgs)] == ["25P02"] and msgs[-1] == ("Z", b"E")
    assert tags(conn.query("ROLLBACK")) == ["ROLLBACK"]
    # a failing call fails the block, as a failing function does; COMMIT then rolls back
    conn.query("BEGIN")
    msgs = conn.query("SELECT * FROM iasql_install('no_such_module')")
    assert [e.sqlstate for e in errors_in(msgs)] == ["42704"] and msgs[-1] == ("Z", b"E")
    msgs = conn.query("COMMIT")
    assert tags(msgs) == ["ROLLBACK"] and msgs[-1] == ("Z", b"I")


def test_extended_protocol_in_a_psycopg_transaction(connect):
    conn = connect(autocommit=False)
    conn.execute("SELECT 1")  # psycopg opened a block with BEGIN
    assert conn.execute("SELECT count(*) FROM iasql_modules_installed()").fetchone()[0] >= 2
    assert conn.info.transaction_status == TransactionStatus.INTRANS
    rows = conn.execute("SELECT module_name FROM iasql_modules_list() WHERE module_name = %s", ["aws_s3"]).fetchall()
    assert rows == [("aws_s3",)]
    # with parameters too; a failing call fails the block, as a failing function does
    with pytest.raises(pe.UndefinedObject):
        conn.execute("SELECT * FROM iasql_install(%s)", ["no_such_module"])
    assert conn.info.transaction_status == TransactionStatus.INERROR
    with pytest.raises(pe.InFailedSqlTransaction):
        conn.execute("SELECT 1")
    conn.rollback()
    assert conn.info.transaction_status == TransactionStatus.IDLE


def test_commit_of_the_failed_block_reports_rollback_psycopg(connect):
    conn = connect(autocommit=True)
    conn.execute("BEGIN")
    with pytest.raises(pe.UndefinedObject):
        conn.execute("SELECT * FROM iasql_uninstall('nope')", prepare=False)
    assert conn.info.transaction_status == TransactionStatus.INERROR
    cur = conn.execute("COMMIT")
    assert cur.statusmessage == "ROLLBACK"
    assert conn.info.transaction_status == TransactionStatus.IDLE


def test_direct_connection_gets_the_stub_error(pg, db):
    with psycopg.connect(pg.dsn(db), autocommit=True) as direct:
        for sql in ("SELECT * FROM iasql_version()", "SELECT * FROM iasql_install('aws_s3')",
                    "SELECT * FROM iasql_commit()"):
            with pytest.raises(psycopg.Error) as ei:
                direct.execute(sql)
            assert "must be called through iasql-proxy" in ei.value.diag.message_primary, sql
            assert ei.value.diag.message_hint, sql


def test_call_hidden_in_a_do_block_fails_loudly_through_the_proxy(raw, connect):
    msgs = raw().query("DO $$BEGIN PERFORM * FROM iasql_version(); END$$")
    [err] = errors_in(msgs)
    assert "must be called through iasql-proxy" in err.message
    assert msgs[-1] == ("Z", b"I")
    conn = connect()
    conn.execute("CREATE OR REPLACE FUNCTION hidden() RETURNS text LANGUAGE plpgsql AS "
                 "$$BEGIN RETURN (SELECT version FROM iasql_version()); END$$")
    with pytest.raises(psycopg.Error) as ei:
        conn.execute("SELECT hidden()")
    assert "must be called through iasql-proxy" in ei.value.diag.message_primary
