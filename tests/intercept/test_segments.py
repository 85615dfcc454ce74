"""Contract points 4 and 5 (segments, stitching) with the real engine through the proxy.

A call runs in the text's transaction like any function: the engine sees what came before it in
the text, the next statement in the same Query and the next Query see what the call did, and an
error anywhere rolls the whole text back (PostgreSQL's implicit transaction); the client gets each
statement's results in order and exactly one ReadyForQuery with the right status; after an error
the rest is skipped.
"""

from __future__ import annotations

import re

import psycopg
import pytest

from tests.intercept.conftest import PASSWORD, tags, types
from tests.intercept.helpers import VERSION_RE, data_rows, errors_in, results
from tests.support.faults import RawConn

pytestmark = pytest.mark.timeout(90)


def test_install_then_same_query_and_next_query_see_the_table(raw):
    conn = raw()
    msgs = conn.query("SELECT * FROM iasql_install('aws_s3'); SELECT count(*) FROM bucket;")
    assert errors_in(msgs) == []
    assert types(msgs).count("Z") == 1 and msgs[-1] == ("Z", b"I")
    install, count = results(msgs)
    rows = data_rows(install)
    # the dependency aws_account gets no rows
    assert [r[:2] for r in rows] == [["aws_s3@0.1.0", t] for t in ("bucket", "bucket_website", "bucket_object",
                                                                   "public_access_block")]
    bucket_count = next(r[2] for r in rows if r[1] == "bucket")
    assert data_rows(count) == [[bucket_count]]
    assert tags(msgs) == ["SELECT 4", "SELECT 1"]
    # the next Query
    msgs = conn.query("SELECT count(*) FROM bucket")
    assert data_rows(msgs) == [[bucket_count]] and errors_in(msgs) == []
    # and another connection (the install committed)
    conn2 = raw()
    assert data_rows(conn2.query("SELECT count(*) FROM bucket")) == [[bucket_count]]


def test_statement_before_a_call_is_visible_to_the_engine_and_rolled_back_with_it(raw, db, pg):
    conn = raw()
    # the engine refuses to install aws_iam over an existing table: it must see this CREATE TABLE
    msgs = conn.query("CREATE TABLE iam_role (x int); SELECT * FROM iasql_install('aws_iam'); "
                      "INSERT INTO iam_role VALUES (1)")
    [err] = errors_in(msgs)
    assert err.sqlstate == "42P07", err.message
    assert "aws_iam collides with tables: iam_role" in err.message
    assert tags(msgs) == ["CREATE TABLE"]
    assert types(msgs).count("Z") == 1 and msgs[-1] == ("Z", b"I")
    # the failed call rolled the whole text back, the CREATE TABLE before it included, as a
    # failing function does in PostgreSQL's implicit transaction
    with psycopg.connect(pg.dsn(db), autocommit=True) as direct:
        assert direct.execute("SELECT to_regclass('iam_role')").fetchone() == (None,)


def test_ordinary_statements_between_calls_are_one_implicit_transaction(raw, pg, db, iasql_proxy):
    run = "CREATE TABLE seg (a int); INSERT INTO seg VALUES (1); INSERT INTO seg VALUES (1/0); INSERT INTO seg VALUES (3)"
    conn = raw()
    msgs = conn.query(f"SELECT * FROM iasql_version(); {run}; SELECT * FROM iasql_version()")
    groups = results(msgs)
    assert len(groups) == 4  # version, CREATE TABLE, INSERT 0 1, the error; nothing after
    assert re.match(VERSION_RE, data_rows(groups[0])[0][0])
    assert [g[-1][0] for g in groups[1:]] == ["C", "C", "E"]
    [err] = errors_in(msgs)
    assert err.sqlstate == "22012"
    assert msgs[-1] == ("Z", b"I")
    # the CREATE TABLE and the first INSERT were rolled back with their run, exactly as direct
    msgs = conn.query("SELECT to_regclass('seg') IS NULL")
    assert data_rows(msgs) == [["t"]]
    with RawConn(pg.port) as direct:
        direct.startup("postgres", db, password=PASSWORD)
        d = direct.query(run)
        assert [t for t, _ in d if t in "CE"] == ["C", "C", "E"]
        assert data_rows(direct.query("SELECT to_regclass('seg') IS NULL")) == [["t"]]


def test_error_position_is_relative_to_the_whole_text(pg, db, raw):
    """Postgres reports an error position (field P, 1-based characters) in the Query text the
    client sent; psql draws its LINE/caret from it. A run cut out of a larger text must report
    the position in the client's text."""
    text = "SELECT * FROM iasql_version(); SELECT nope_column"
    msgs = raw().query(text)
    [err] = errors_in(msgs)
    assert err.sqlstate == "42703"
    assert err.get("P") == str(text.index("nope_column") + 1)


def test_one_ready_for_query_results_in_order_and_skip_after_error(raw):
    conn = raw()
    conn.query("CREATE TABLE IF NOT EXISTS st (a int)")
    msgs = conn.query("SELECT 1 AS one; SELECT * FROM iasql_version(); SELECT 2 AS two; "
                      "SELECT iasql_version(); INSERT INTO st VALUES (10); SELECT 3 AS three")
    assert types(msgs).count("Z") == 1 and msgs[-1] == ("Z", b"I")
    assert tags(msgs) == ["SELECT 1", "SELECT 1", "SELECT 1", "SELECT 1", "INSERT 0 1", "SELECT 1"]
    rows = data_rows(msgs)
    assert rows[0] == ["1"] and rows[2] == ["2"] and rows[4] == ["3"]
    assert re.match(VERSION_RE, rows[1][0]) and re.match(VERSION_RE, rows[3][0])
    # an engine error: the rest is skipped (the INSERT after it never happens)
    msgs = conn.query("INSERT INTO st VALUES (20); SELECT * FROM iasql_install('no_such_module'); "
                      "INSERT INTO st VALUES (30); SELECT 4")
    [err] = errors_in(msgs)
    assert err.sqlstate == "42704" and "no_such_module" in err.message
    assert tags(msgs) == ["INSERT 0 1"] and types(msgs).endswith("EZ") and msgs[-1] == ("Z", b"I")
    # a Postgres error after a call: same
    msgs = conn.query("SELECT * FROM iasql_version(); INSERT INTO st VALUES (1/0); INSERT INTO st VALUES (40)")
    assert [e.sqlstate for e in errors_in(msgs)] == ["22012"] and tags(msgs) == ["SELECT 1"]
    # only the first text committed: the INSERT before the failed call went with it
    assert sorted(r[0] for r in data_rows(conn.query("SELECT a FROM st"))) == ["10"]


def test_transaction_status_byte(raw):
    conn = raw()
    msgs = conn.query("SELECT * FROM iasql_version(); BEGIN; SELECT 1")
    assert errors_in(msgs) == [] and msgs[-1] == ("Z", b"T")
    msgs = conn.query("COMMIT")
    assert tags(msgs) == ["COMMIT"] and msgs[-1] == ("Z", b"I")
    msgs = conn.query("SELECT * FROM iasql_version(); BEGIN; SELECT 1/0")
    assert msgs[-1] == ("Z", b"E")
    msgs = conn.query("ROLLBACK")
    assert tags(msgs) == ["ROLLBACK"] and msgs[-1] == ("Z", b"I")
    # an empty statement between calls gives nothing, as Postgres drops it
    msgs = conn.query("SELECT * FROM iasql_version();;  ; SELECT * FROM iasql_version()")
    assert types(msgs) == "TDCTDCZ"
