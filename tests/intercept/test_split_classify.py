"""Contract points 2 and 3 (split, classify) through the real proxy and engine.

Names inside strings, comments, dollar bodies and E'' strings are not calls; a text is cut at
PostgreSQL's own boundaries (including under ``standard_conforming_strings = off``, the session's
current value). The database is initialised by the engine first, so the stub functions exist: a
misclassified statement sent to Postgres would raise the stub's error, and a misclassified call
would come back as engine rows instead of the expected literal.
"""

from __future__ import annotations

import re

import pytest

from tests.intercept.conftest import types
from tests.intercept.helpers import VERSION_RE, data_rows, errors_in, results

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module", autouse=True)
def initialised(iasql_proxy, db):
    """Let the engine create its metadata and stubs in ``db`` (iasql_modules_installed connects)."""
    import psycopg

    with psycopg.connect(iasql_proxy.dsn(dbname=db), autocommit=True) as c:
        c.execute("SELECT * FROM iasql_modules_installed()").fetchall()
        assert c.execute("SELECT count(*) FROM pg_proc WHERE proname = 'iasql_version'").fetchone()[0] >= 1


def test_names_in_strings_comments_and_dollar_bodies_are_not_calls(raw):
    conn = raw()
    text = (
        "CREATE FUNCTION f_body() RETURNS text LANGUAGE plpgsql AS $fn$ BEGIN PERFORM iasql_version(); "
        "RETURN 'x'; END $fn$;\n"
        "SELECT $tag$ SELECT * FROM iasql_version(); $$ ; $tag$ AS d, "
        "'iasql_install(''aws_s3''); SELECT 1' AS s, "
        "E'iasql_commit(\\'x\\'); SELECT iasql_begin()' AS e /* iasql_version() /* nested; iasql_begin() */ ; */ "
        "-- ; iasql_rollback()\n;\n"
        "SELECT \"iasql_version\" FROM (SELECT 7 AS \"iasql_version\") q;\n"
        "SELECT * FROM iasql_version()"
    )
    msgs = conn.query(text)
    assert errors_in(msgs) == []
    groups = results(msgs)
    assert [g[-1] for g in groups][0] == ("C", b"CREATE FUNCTION\0")
    assert data_rows(groups[1]) == [[" SELECT * FROM iasql_version(); $$ ; ", "iasql_install('aws_s3'); SELECT 1",
                                     "iasql_commit('x'); SELECT iasql_begin()"]]
    assert data_rows(groups[2]) == [["7"]]
    [[version]] = data_rows(groups[3])
    assert re.match(VERSION_RE, version)
    assert msgs[-1] == ("Z", b"I")
    # the function body was stored as written, and calling it reaches the stub (not the engine)
    msgs = conn.query("SELECT f_body()")
    [err] = errors_in(msgs)
    assert "must be called through iasql-proxy" in err.message


def test_e_string_hiding_a_statement_boundary(raw):
    conn = raw()
    msgs = conn.query("SELECT E'\\'; SELECT * FROM iasql_version(); --' AS e; SELECT * FROM iasql_version()")
    assert errors_in(msgs) == []
    groups = results(msgs)
    assert len(groups) == 2
    assert data_rows(groups[0]) == [["'; SELECT * FROM iasql_version(); --"]]
    assert re.match(VERSION_RE, data_rows(groups[1])[0][0])


def test_standard_conforming_strings_off_uses_the_sessions_value(raw):
    conn = raw()
    msgs = conn.query("SET standard_conforming_strings = off; SET escape_string_warning = off")
    assert errors_in(msgs) == [] and ("S", b"standard_conforming_strings\0off\0") in msgs
    # under 'off', \' is an escaped quote: the first statement is one string, then one real call
    msgs = conn.query("SELECT 'it\\'s; SELECT * FROM iasql_version(); --' AS s; SELECT * FROM iasql_version()")
    assert errors_in(msgs) == []
    groups = results(msgs)
    assert len(groups) == 2
    assert data_rows(groups[0]) == [["it's; SELECT * FROM iasql_version(); --"]]
    assert re.match(VERSION_RE, data_rows(groups[1])[0][0])
    # a backslash-quoted string argument of a real call is decoded with the same rule
    msgs = conn.query("SELECT module_name FROM iasql_modules_list() WHERE module_name = 'aws\\_s3' "
                      "OR module_name = 'aws\\'s3'")
    assert errors_in(msgs) == [] and data_rows(msgs) == [["aws_s3"]]
    # and back on: the same bytes now mean something else: 'it\' AS s, then the call, then a comment
    conn.query("SET standard_conforming_strings = on")
    msgs = conn.query("SELECT 'it\\'s; SELECT * FROM iasql_version(); --' AS s; SELECT * FROM iasql_version()")
    assert errors_in(msgs) == []
    groups = results(msgs)
    assert len(groups) == 2 and data_rows(groups[0]) == [["it\\"]]
    assert re.match(VERSION_RE, data_rows(groups[1])[0][0])


def test_letter_case_schema_and_quoting(raw):
    conn = raw()
    for call in ("IASQL_VERSION()", "IaSql_Version()", "public.iasql_version()", '"iasql_version"()',
                 'public."iasql_version"()'):
        msgs = conn.query(f"SELECT * FROM {call}")
        assert errors_in(msgs) == [], call
        assert re.match(VERSION_RE, data_rows(msgs)[0][0]), call
    # a quoted name that differs in case is another function: Postgres says it does not exist
    msgs = conn.query('SELECT * FROM "IASQL_VERSION"()')
    [err] = errors_in(msgs)
    assert (err.sqlstate, err.message) == ("42883", "function IASQL_VERSION() does not exist")
    # an unregistered iasql_ name is left to Postgres too
    msgs = conn.query("SELECT iasql_no_such_function()")
    [err] = errors_in(msgs)
    assert err.sqlstate == "42883" and "iasql_no_such_function()" in err.message


def test_empty_statements_and_untokenizable_text(raw):
    conn = raw()
    msgs = conn.query(";; SELECT * FROM iasql_version() ;;; ")
    assert types(msgs).count("T") == 1 and types(msgs).endswith("CZ") and errors_in(msgs) == []
    # an unterminated dollar quote: forwarded unsplit, Postgres reports the syntax error itself
    msgs = conn.query("SELECT * FROM iasql_version(); SELECT $x$ never closed")
    [err] = errors_in(msgs)
    assert err.sqlstate == "42601" and "unterminated dollar-quoted string" in err.message
    assert types(msgs) == "EZ"
