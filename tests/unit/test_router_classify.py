"""Call classification (find_calls, may_contain_call) and the VALUES rewrite, the latter run on a
real PostgreSQL."""

from __future__ import annotations

import psycopg
import pytest

from proxy.router import Arg, CallError, ParamRef, find_calls, may_contain_call, rewrite_with_rows, split
from proxy.router.classify import EXPRESSION

NAMES = frozenset({"iasql_install", "iasql_commit", "iasql_modules_list"})
INSTALL_COLUMNS = [("module_name", "varchar"), ("created_table_name", "varchar"), ("record_count", "int4")]


def names_of(sql, **kw):
    return [c.name for c in find_calls(sql, NAMES, **kw)]


# --- found / not found --------------------------------------------------------------------------

FOUND = {
    "from": ("SELECT * FROM iasql_install('aws_s3')", ["iasql_install"]),
    "select": ("select iasql_commit()", ["iasql_commit"]),
    "mixed case": ("SELECT * FROM IaSQL_Install('x')", ["iasql_install"]),
    "schema-qualified": ("select * from public.iasql_install('x')", ["iasql_install"]),
    "quoted schema": ('select * from "public".iasql_commit()', ["iasql_commit"]),
    "quoted exact": ('select * from "iasql_commit"()', ["iasql_commit"]),
    "space before paren": ("select * from iasql_commit ()", ["iasql_commit"]),
    "comment before paren": ("select * from iasql_commit /* c */ ()", ["iasql_commit"]),
    "two calls": ("select * from iasql_install('a') join iasql_commit() on true", ["iasql_install", "iasql_commit"]),
    "in CTE": ("with c as (select * from iasql_commit()) select * from c", ["iasql_commit"]),
    "in where": ("select 1 where exists (select * from iasql_modules_list())", ["iasql_modules_list"]),
    "after string with name": ("select 'iasql_commit()', iasql_commit()", ["iasql_commit"]),
    "trailing semicolon": ("select * from iasql_commit();", ["iasql_commit"]),
}


@pytest.mark.parametrize("sql,expected", FOUND.values(), ids=FOUND.keys())
def test_calls_found(sql, expected):
    assert may_contain_call(sql)
    assert names_of(sql) == expected


NOT_FOUND = {
    "in string": "select 'iasql_commit()'",
    "in E string": "select E'\\' iasql_commit()'",
    "in dollar body": "select $$ select iasql_commit() $$",
    "in tagged dollar body": "do $fn$ begin perform iasql_commit(); end $fn$",
    "in block comment": "select 1 /* iasql_commit() /* nested */ iasql_commit() */",
    "in dash comment": "select 1 -- iasql_commit()\n",
    "quoted mismatch": 'select * from "IASQL_COMMIT"()',
    "quoted mismatch 2": 'select * from "iasql_Commit"()',
    "not registered": "select * from iasql_unknown()",
    "prefix of name": "select * from iasql_commit_x()",
    "column not call": "select iasql_commit from t",
    "quoted identifier": 'select 1 as "iasql_commit()"',
    "drop function": "drop function if exists iasql_install(text)",
    "create function": "create function iasql_commit() returns int language sql as 'select 1'",
    "comment on function": "comment on function iasql_commit() is 'x'",
    "qualified by column": "select t.x.iasql_commit() from t",
    "scs on string with backslash": "select 'a\\', 'iasql_commit()'",
}


@pytest.mark.parametrize("sql", NOT_FOUND.values(), ids=NOT_FOUND.keys())
def test_calls_not_found(sql):
    assert find_calls(sql, NAMES) == []


def test_standard_conforming_strings_off_changes_what_is_a_string():
    sql = "select 'a\\', iasql_commit(), 'b'"
    assert names_of(sql) == ["iasql_commit"]
    assert names_of(sql, standard_conforming_strings=False) == []  # one string, then unterminated
    sql = "select '\\'' as a, iasql_commit() as b -- '"
    assert names_of(sql) == []
    assert names_of(sql, standard_conforming_strings=False) == ["iasql_commit"]


def test_may_contain_call():
    assert may_contain_call("SELECT * FROM IASQL_COMMIT()")
    assert may_contain_call(b"select iasql_commit()")
    assert may_contain_call(b"SELECT Iasql_X()")
    assert not may_contain_call("select 1; select 'iasql'")
    assert not may_contain_call(b"select 1")


def test_statement_input_and_offsets():
    sql = "select 1; SELECT module_name FROM iasql_install('aws_s3') WHERE record_count > 0"
    stmt = split(sql)[1]
    (call,) = find_calls(stmt, NAMES)
    assert stmt.text[call.start : call.end] == "iasql_install('aws_s3')"


# --- arguments ----------------------------------------------------------------------------------

ARGS = {
    "text": ("select * from iasql_install('aws_s3', 'it''s')", ["aws_s3", "it's"]),
    "E string": ("select * from iasql_install(E'a\\nb\\x41\\u00e9\\'')", ["a\nbAé'"]),
    "dollar": ("select * from iasql_install($$a'b$$, $t$x$t$)", ["a'b", "x"]),
    "continuation": ("select * from iasql_install('a'\n'b')", ["ab"]),
    "unicode": ("select * from iasql_install(U&'d\\0061t', U&'d!0061t' UESCAPE '!')", ["dat", "dat"]),
    "ints": ("select * from iasql_install(1, -2, +3, 1_000, 0x1F)", [1, -2, 3, 1000, 31]),
    "floats": ("select * from iasql_install(1.5, -2e3, .5)", [1.5, -2000.0, 0.5]),
    "null": ("select * from iasql_install(NULL, null)", [None, None]),
    "booleans": ("select * from iasql_install(TRUE, false)", [True, False]),
    "params": ("select * from iasql_install($1, $2::text)", [ParamRef(1), ParamRef(2)]),
    "casts": ("select * from iasql_install('a'::text, CAST('b' AS varchar(10)), text 'c', 'd'::character varying)", ["a", "b", "c", "d"]),
    "parens": ("select * from iasql_install(('a'))", ["a"]),
    "array": ("select * from iasql_install(ARRAY['a', 'b'])", [("a", "b")]),
    "empty": ("select * from iasql_commit()", []),
}


@pytest.mark.parametrize("sql,expected", ARGS.values(), ids=ARGS.keys())
def test_argument_values(sql, expected):
    (call,) = find_calls(sql, NAMES)
    assert [a.value for a in call.args] == expected


def test_scs_off_argument_decoding():
    (call,) = find_calls("select iasql_install('a\\nb', 'c''d')", NAMES, standard_conforming_strings=False)
    assert [a.value for a in call.args] == ["a\nb", "c'd"]
    (call,) = find_calls("select iasql_install('a\\nb')", NAMES)
    assert [a.value for a in call.args] == ["a\\nb"]


def test_variadic_and_named_arguments():
    (call,) = find_calls("select * from iasql_install(VARIADIC ARRAY['aws_s3', 'aws_iam'])", NAMES)
    assert call.args == (Arg(("aws_s3", "aws_iam"), None, True),)
    (call,) = find_calls("select * from iasql_install(modules => 'x', \"Dry\" := true, DRY => $1)", NAMES)
    assert call.args == (Arg("x", "modules"), Arg(True, "Dry"), Arg(ParamRef(1), "dry"))


NON_CONSTANT = {
    "column": "select * from iasql_install(name) ",
    "function": "select * from iasql_install(lower('X'))",
    "subquery": "select * from iasql_install((select 'a'))",
    "expression": "select * from iasql_install('a' || 'b')",
    "nested call": "select * from iasql_install(iasql_commit())",
    "array of columns": "select * from iasql_install(ARRAY[a, 'b'])",
    "second arg": "select * from iasql_install('a', now())",
}


@pytest.mark.parametrize("sql", NON_CONSTANT.values(), ids=NON_CONSTANT.keys())
def test_non_constant_argument_is_kept_as_an_expression(sql):
    """Any expression is an argument: PostgreSQL evaluates it on the caller's connection (through
    the argument probe), so the classifier keeps its text and marks its value EXPRESSION."""
    (call,) = find_calls(sql, NAMES)
    assert EXPRESSION in [a.value for a in call.args]
    inner = sql[sql.index("iasql_install(") + len("iasql_install("):sql.rindex(")")]
    assert sql[call.args_start:call.args_end] == inner


def test_unclosed_call_is_left_to_postgres():
    """The statement is a syntax error: PostgreSQL reports it, with its own message and position."""
    assert find_calls("select * from iasql_install('a'", NAMES) == []


# --- forms --------------------------------------------------------------------------------------

FORMS = {
    "from": ("SELECT * FROM iasql_install('x')", "from", True),
    "from qualified, semicolon": ("select * from public.iasql_install('x');", "from", True),
    "select": ("SELECT iasql_install('x')", "select", False),
    "select qualified": ("select public.iasql_commit()", "select", False),
    "where": ("SELECT module_name FROM iasql_install('aws_s3') WHERE record_count > 0", "embedded", True),
    "alias": ("SELECT * FROM iasql_install('x') AS r", "embedded", True),
    "column list": ("SELECT iasql_install('x'), 1", "embedded", False),
    "cte": ("WITH r AS (SELECT * FROM iasql_install('x')) SELECT * FROM r", "embedded", True),
    "join": ("SELECT * FROM t JOIN iasql_install('x') r ON true", "embedded", True),
    "from list": ("SELECT * FROM t, iasql_install('x') r", "embedded", True),
    "lateral": ("SELECT * FROM t, LATERAL iasql_install('x') r", "embedded", True),
    "select list comma": ("SELECT 1, iasql_install('x') FROM t", "embedded", False),
    "insert select": ("INSERT INTO t SELECT * FROM iasql_install('x')", "embedded", True),
}


@pytest.mark.parametrize("sql,form,in_from", FORMS.values(), ids=FORMS.keys())
def test_forms(sql, form, in_from):
    (call,) = find_calls(sql, NAMES)
    assert (call.form, call.in_from) == (form, in_from)


# --- rewrite, run on a real server --------------------------------------------------------------

ROWS = [("aws_s3", "bucket", "3"), ("aws_iam", None, "0"), ("it's \\ \"q\"", "x", None)]


@pytest.fixture(scope="module")
def conn(pg):
    with psycopg.connect(pg.dsn(), autocommit=True) as c:
        yield c


def run_rewritten(conn, sql, rows=ROWS, columns=INSTALL_COLUMNS, **kw):
    (call,) = find_calls(sql, NAMES, **kw)
    new = rewrite_with_rows(sql, call, columns, rows, **kw)
    assert new[: call.start] == sql[: call.start]
    assert new[len(new) - (len(sql) - call.end) :] == sql[call.end :]
    return new, conn.execute(new).fetchall()


def test_rewrite_where(conn):
    sql = "SELECT module_name FROM iasql_install('aws_s3') WHERE record_count > 0"
    new, rows = run_rewritten(conn, sql)
    assert rows == [("aws_s3",)]
    assert new.startswith("SELECT module_name FROM (VALUES (")


def test_rewrite_all_columns_types_and_nulls(conn):
    _, rows = run_rewritten(conn, "select * from iasql_install('a') where true order by 1")
    assert rows == sorted([("aws_s3", "bucket", 3), ("aws_iam", None, 0), ("it's \\ \"q\"", "x", None)])


def test_rewrite_zero_rows(conn):
    sql = "SELECT module_name, record_count + 1 FROM iasql_install('x') WHERE true"
    new, rows = run_rewritten(conn, sql, rows=[])
    assert rows == []
    desc = conn.execute(new).description
    assert [d.name for d in desc] == ["module_name", "?column?"]


def test_rewrite_user_alias_and_column_aliases(conn):
    _, rows = run_rewritten(conn, "SELECT r.module_name FROM iasql_install('x') AS r WHERE r.record_count = 3")
    assert rows == [("aws_s3",)]
    _, rows = run_rewritten(conn, "SELECT m, n FROM iasql_install('x') r(m, t, n) WHERE n = 0")
    assert rows == [("aws_iam", 0)]


def test_rewrite_cte_join_count(conn):
    sql = (
        "WITH i AS (SELECT * FROM iasql_install('x')) "
        "SELECT count(*) FROM i JOIN (VALUES ('aws_s3')) v(m) ON v.m = i.module_name"
    )
    assert run_rewritten(conn, sql)[1] == [(1,)]


def test_rewrite_keeps_bind_parameter_text(conn):
    sql = "SELECT module_name FROM iasql_install($1) WHERE record_count >= 0 ORDER BY 1"
    (call,) = find_calls(sql, NAMES)
    new = rewrite_with_rows(sql, call, INSTALL_COLUMNS, ROWS)
    assert conn.execute(new.replace("$1", "'ignored'")).fetchall() == [("aws_iam",), ("aws_s3",)]


def test_rewrite_scs_off(pg):
    with psycopg.connect(pg.dsn(), autocommit=True) as c:
        c.execute("SET standard_conforming_strings = off")
        c.execute("SET escape_string_warning = off")
        _, rows = run_rewritten(
            c, "SELECT module_name FROM iasql_install('a\\'b') WHERE record_count IS NULL",
            standard_conforming_strings=False,
        )
        assert rows == [("it's \\ \"q\"",)]


def test_rewrite_array_and_json_types(conn):
    cols = [("tags", "_varchar"), ("doc", "jsonb"), ("at", "timestamptz"), ("ok", "bool"), ("n", "int8")]
    sql = "SELECT tags[2], doc->>'a', ok, n FROM iasql_modules_list() WHERE at < now()"
    (call,) = find_calls(sql, NAMES)
    new = rewrite_with_rows(sql, call, cols, [("{x,y}", '{"a": "b"}', "2020-01-01 00:00:00+00", "t", "9")])
    assert conn.execute(new).fetchall() == [("y", "b", True, 9)]


def test_rewrite_outside_from_is_a_clear_error():
    sql = "SELECT iasql_install('x'), 1"
    (call,) = find_calls(sql, NAMES)
    with pytest.raises(CallError) as e:
        rewrite_with_rows(sql, call, INSTALL_COLUMNS, ROWS)
    assert e.value.sqlstate == "0A000"
    assert "FROM item" in e.value.message


def test_rewrite_same_result_reuses_text_but_keeps_each_statement(conn):
    """The replacement for a call with the same small result is cached; the statement around it,
    the scs mode and the user's alias still make their own text."""
    a = "SELECT module_name FROM iasql_install('x') WHERE record_count = 3"
    b = "SELECT count(*) FROM iasql_install('y') r WHERE r.record_count = 0"
    new_a1, rows_a1 = run_rewritten(conn, a)
    new_a2, rows_a2 = run_rewritten(conn, a)
    new_b, rows_b = run_rewritten(conn, b)
    assert new_a1 == new_a2 and rows_a1 == rows_a2 == [("aws_s3",)]
    assert rows_b == [(1,)]
    (call,) = find_calls(a, NAMES)
    other = rewrite_with_rows(a, call, INSTALL_COLUMNS, [("aws_s3", "bucket", "4")])
    assert conn.execute(other).fetchall() == []  # a different result is not served from the cache
    scs_off = rewrite_with_rows(a, call, INSTALL_COLUMNS, [("a\\b", None, "3")], standard_conforming_strings=False)
    scs_on = rewrite_with_rows(a, call, INSTALL_COLUMNS, [("a\\b", None, "3")])
    assert scs_off != scs_on


def test_rewrite_row_length_mismatch_raises():
    sql = "SELECT * FROM iasql_install('x') WHERE true"
    (call,) = find_calls(sql, NAMES)
    with pytest.raises(ValueError):
        rewrite_with_rows(sql, call, INSTALL_COLUMNS, [("only", "two")])
