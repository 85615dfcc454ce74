"""Contract point 6 (results of a call): IaSQL's columns and type OIDs, the select-list form as a
``record`` column, a call inside a larger statement, arguments evaluated by PostgreSQL."""

from __future__ import annotations

import json
import re

import pytest

from tests.intercept.conftest import row_description, tags
from tests.intercept.helpers import VERSION_RE, data_rows, errors_in

pytestmark = pytest.mark.timeout(60)

VARCHAR, JSON, RECORD, TEXT, INT4 = 1043, 114, 2249, 25, 23
DEPS = ["iasql_platform@0.1.0", "iasql_functions@0.1.0", "aws_account@0.1.0"]  # of aws_s3 and aws_iam


def rd(msgs):
    [payload] = [p for t, p in msgs if t == "T"]
    return row_description(payload)


def test_modules_list_columns_and_types(raw, connect):
    msgs = raw().query("SELECT * FROM iasql_modules_list()")
    assert errors_in(msgs) == []
    assert rd(msgs) == [("module_name", VARCHAR), ("module_version", VARCHAR), ("dependencies", JSON)]
    rows = {r[0]: r for r in data_rows(msgs)}
    assert {"aws_account", "aws_s3", "aws_iam"} <= set(rows)
    assert json.loads(rows["aws_s3"][2]) == DEPS
    assert re.match(VERSION_RE, rows["aws_s3"][1])
    # psycopg sees the same types (json decoded by its loader)
    cur = connect().execute("SELECT * FROM iasql_modules_list()")
    assert [(d.name, d.type_code) for d in cur.description] == [("module_name", VARCHAR), ("module_version", VARCHAR),
                                                                 ("dependencies", JSON)]
    got = {r[0]: r[2] for r in cur.fetchall()}
    assert got["aws_s3"] == DEPS


def test_select_list_form_is_one_column(raw, connect):
    """``SELECT f()`` gives one column named after the function: of its type when it returns one
    column (iasql_version: text), a ``record`` otherwise, exactly as PostgreSQL does for the stub."""
    msgs = raw().query("SELECT iasql_version()")
    assert errors_in(msgs) == []
    assert rd(msgs) == [("iasql_version", TEXT)]
    [[version]] = data_rows(msgs)
    assert re.match(VERSION_RE, version), version
    # the FROM form of the same function: a text column named "version"
    msgs = raw().query("SELECT * FROM iasql_version()")
    assert rd(msgs) == [("version", TEXT)] and data_rows(msgs) == [[version]]
    # several columns and rows in the select-list form: one record per row, fields quoted as Postgres does
    msgs = raw().query("SELECT iasql_modules_list()")
    assert rd(msgs) == [("iasql_modules_list", RECORD)]
    rows = [r[0] for r in data_rows(msgs)]
    assert f'(aws_s3,{version},"' + json.dumps(DEPS).replace('"', '""') + '")' in rows, rows
    assert tags(msgs) == [f"SELECT {len(rows)}"]


def test_call_inside_a_larger_statement(raw, db, pg):
    conn = raw()
    msgs = conn.query("SELECT module_name FROM iasql_modules_list() WHERE module_name LIKE 'aws%' ORDER BY 1")
    assert errors_in(msgs) == []
    names = [r[0] for r in data_rows(msgs)]
    assert names == sorted(names) and {"aws_account", "aws_iam", "aws_s3"} <= set(names)
    assert all(n.startswith("aws") for n in names)
    # a CTE
    msgs = conn.query("WITH m AS (SELECT * FROM iasql_modules_list()) "
                      "SELECT count(*) FILTER (WHERE module_name = 'aws_s3'), count(*) > 3 FROM m")
    assert errors_in(msgs) == [] and data_rows(msgs) == [["1", "t"]]
    # a join with a real table
    conn.query("CREATE TABLE wanted (name text, owner text); "
               "INSERT INTO wanted VALUES ('aws_s3', 'storage'), ('aws_iam', 'security'), ('nope', 'x')")
    msgs = conn.query("SELECT w.owner, m.module_name, m.dependencies::text FROM wanted w "
                      "JOIN iasql_modules_list() AS m ON m.module_name = w.name ORDER BY w.owner")
    assert errors_in(msgs) == []
    assert [(r[0], r[1], json.loads(r[2])) for r in data_rows(msgs)] == [
        ("security", "aws_iam", DEPS), ("storage", "aws_s3", DEPS)]
    # the call's result in an INSERT ... SELECT, then read back
    conn.query("CREATE TABLE snapshot (module_name text, module_version text)")
    msgs = conn.query("INSERT INTO snapshot SELECT module_name, module_version FROM iasql_modules_list() "
                      "WHERE module_name = 'aws_iam'")
    assert errors_in(msgs) == [] and tags(msgs) == ["INSERT 0 1"]
    assert data_rows(conn.query("SELECT module_name FROM snapshot")) == [["aws_iam"]]


def test_argument_expressions_are_evaluated_by_postgres(raw):
    """Any expression PostgreSQL can evaluate is an argument, evaluated on the caller's connection."""
    conn = raw()
    msgs = conn.query("SELECT * FROM iasql_install(current_user)")
    [err] = errors_in(msgs)
    assert (err.sqlstate, err.message.split(". ")[0]) == ("42704", "The following modules do not exist: postgres@0.1.0")
    assert msgs[-1] == ("Z", b"I")
    msgs = conn.query("SELECT * FROM iasql_commit(now()::text)")
    assert [e.sqlstate for e in errors_in(msgs)] == ["25P01"]  # evaluated, then: no IaSQL transaction
    msgs = conn.query("SELECT module_name FROM iasql_install(VARIADIC ARRAY[(SELECT 'aws_' || 'iam')])")
    assert errors_in(msgs) == [], errors_in(msgs)
    assert sorted(data_rows(msgs)) == [["aws_iam@0.1.0"]] * 3  # iam_user, access_key, iam_role
    # the module is now installed: a second install does nothing
    msgs = conn.query("SELECT * FROM iasql_install('aws_iam'::text)")
    assert errors_in(msgs) == [] and data_rows(msgs) == []
