"""Arguments as PostgreSQL takes them, and calls inside larger statements (issue points 7 and 8).

Arguments are evaluated by PostgreSQL on the caller's connection (any expression, named and
VARIADIC notation, defaults, implicit casts, PostgreSQL's own errors); ``VARIADIC $1`` takes a
``text[]`` in text or binary format and its ParameterDescription says ``text[]``. A call inside
DECLARE, CREATE TABLE AS, COPY (query) TO or EXPLAIN ANALYZE returns what the same statement
returns over a real set-returning function; a mutating call where that cannot be done is refused
with 0A000 naming the forms that take it.
"""

from __future__ import annotations

import asyncio

import asyncpg
import psycopg
import pytest
from psycopg import errors as pe

from proxy.wire import frontend as F
from tests.intercept.conftest import PASSWORD, tags
from tests.intercept.helpers import data_rows, errors_in

pytestmark = pytest.mark.timeout(120)

TEXT_ARRAY = 1009
ACCOUNT = [["aws_account@0.1.0", "aws_credentials"], ["aws_account@0.1.0", "aws_regions"]]


def installed(msgs) -> list:
    return [r[:2] for r in data_rows(msgs)]


ARGUMENTS = ["VARIADIC ARRAY['aws_account']", "VARIADIC '{aws_account}'::text[]",
             "VARIADIC (SELECT array_agg(m) FROM (VALUES ('aws_account')) v(m))",
             "VARIADIC modules => ARRAY['aws_account']", "modules => VARIADIC ARRAY['aws_account']",
             "lower('AWS_ACCOUNT')", "'aws_account'::varchar", "modules => 'aws_account'", "1", "NULL::text[]",
             "'aws_account', 2"]


@pytest.mark.parametrize("args", ARGUMENTS)
def test_argument_resolution_is_postgres_own(raw, db, pg, args):
    """Whatever PostgreSQL accepts for the stub function (same signature) the proxy runs, and what
    it refuses the proxy refuses with the same error (checked on a direct connection)."""
    from tests.support.faults import RawConn

    sql = f"SELECT module_name, created_table_name FROM iasql_install({args})"
    raw(dbname=db).query("SELECT * FROM iasql_modules_installed()")  # the stub functions exist
    text = f"BEGIN; {sql}; ROLLBACK"
    with RawConn(pg.port) as direct:
        direct.startup("postgres", db, password=PASSWORD)
        [want] = errors_in(direct.query(text))
    conn = raw(dbname=db)
    msgs = conn.query(text)
    if want.message == "iasql_* functions must be called through iasql-proxy":  # resolved: it runs
        assert errors_in(msgs) == [], errors_in(msgs)
        assert installed(msgs) == ACCOUNT
    else:
        [got] = errors_in(msgs)
        assert (got.sqlstate, got.message, got.get("P")) == (want.sqlstate, want.message, want.get("P"))
        conn.query("ROLLBACK")


def test_argument_expressions(raw, fresh_db):
    conn = raw(dbname=fresh_db)
    # the date argument from an expression, evaluated once by PostgreSQL
    msgs = conn.query("SELECT * FROM iasql_get_sql_since(now() - interval '5 minutes')")
    assert errors_in(msgs) == [] and data_rows(msgs) == []
    msgs = conn.query("SELECT * FROM iasql_get_sql_since(current_setting('iasql.nope', true)::timestamptz)")
    assert errors_in(msgs) == []
    # PostgreSQL's own resolution and errors, with the position in the client's text
    text = "SELECT * FROM iasql_rollback(1)"
    [err] = errors_in(conn.query(text))
    assert (err.sqlstate, err.message) == ("42883", "function iasql_rollback(integer) does not exist")
    assert err.get("P") == str(text.index("iasql_rollback") + 1)
    text = "SELECT * FROM iasql_get_sql_since('yesterday but not a date')"
    [err] = errors_in(conn.query(text))
    assert err.sqlstate == "22007" and err.get("P") == str(text.index("'yesterday") + 1)
    [err] = errors_in(conn.query("SELECT * FROM iasql_install()"))
    assert (err.sqlstate, err.message) == ("42883", "function iasql_install() does not exist")
    # a string where a boolean goes is read by PostgreSQL's boolean input
    [err] = errors_in(conn.query("SELECT * FROM iasql_rollback('maybe')"))
    assert (err.sqlstate, err.message) == ("22P02", 'invalid input syntax for type boolean: "maybe"')


def test_metadata_made_by_a_call_without_arguments_has_every_probe(raw, fresh_db, pg):
    """The metadata of a database whose first call takes no arguments (made by the engine itself)
    holds the same argument probes as one made before a probe (iasql_modules_installed()): iasql_connect('x') there gets its
    own 0A000, not 42883 from a missing probe."""
    conn = raw(dbname=fresh_db)
    assert errors_in(conn.query("SELECT * FROM iasql_modules_installed()")) == []
    [err] = errors_in(conn.query("SELECT * FROM iasql_connect('x')"))
    assert (err.sqlstate, err.message) == ("0A000", "iasql_connect() needs the proxy's [servers] section")
    with psycopg.connect(pg.dsn(fresh_db), autocommit=True) as c:
        made = {r[0] for r in c.execute("SELECT proname FROM pg_proc WHERE pronamespace = 'iasql_args'::regnamespace")}
    assert {"iasql_connect", "iasql_disconnect", "iasql_db_list", "iasql_install", "iasql_commit"} <= made


def test_parameter_description_and_text_array_parameters(raw, fresh_db, iasql_proxy):
    conn = raw(dbname=fresh_db)
    conn.send(F.Parse("v", "SELECT * FROM iasql_install(VARIADIC $1)").encode() + F.Describe(b"S", "v").encode()
              + F.Parse("d", "SELECT * FROM iasql_get_sql_since($1)").encode() + F.Describe(b"S", "d").encode()
              + F.Sync().encode())
    msgs = conn.read_until_ready()
    descs = [p for t, p in msgs if t == "t"]
    assert [int.from_bytes(p[2:6], "big") for p in descs] == [TEXT_ARRAY, 1184]  # text[], timestamptz
    # text format
    conn.send(F.Bind("", "v", (0,), (b"{aws_account}",), ()).encode() + F.Execute("", 0).encode() + F.Sync().encode())
    msgs = conn.read_until_ready()
    assert errors_in(msgs) == [] and installed(msgs) == ACCOUNT
    # psycopg 3 with a list in binary format, asyncpg's list (binary) in a transaction
    with psycopg.connect(iasql_proxy.dsn(dbname=fresh_db)) as c:
        rows = c.execute("SELECT module_name FROM iasql_uninstall(VARIADIC %b)", [["aws_account"]]).fetchall()
        assert [r[0] for r in rows] == ["aws_account@0.1.0", "aws_account@0.1.0"]
        c.rollback()

    async def go():
        a = await asyncpg.connect(host="127.0.0.1", port=iasql_proxy.port, user="postgres", password=PASSWORD,
                                  database=fresh_db, ssl=False)
        try:
            async with a.transaction():
                stmt = await a.prepare("SELECT module_name FROM iasql_uninstall(VARIADIC $1)")
                assert [t.oid for t in stmt.get_parameters()] == [TEXT_ARRAY]
                return [r[0] for r in await stmt.fetch(["aws_account"])]
        finally:
            await a.close()

    assert asyncio.run(go()) == ["aws_account@0.1.0", "aws_account@0.1.0"]


def test_calls_inside_larger_statements(raw, fresh_db):
    conn = raw(dbname=fresh_db)
    # a join with a table of the caller's
    conn.query("CREATE TABLE wanted (m text)")
    conn.query("INSERT INTO wanted VALUES ('aws_s3'), ('aws_iam')")
    msgs = conn.query("SELECT l.module_name FROM iasql_modules_list() l JOIN wanted w ON w.m = l.module_name ORDER BY 1")
    assert data_rows(msgs) == [["aws_iam"], ["aws_s3"]]
    # CREATE TABLE AS, COPY (query) TO, and a cursor over a call, in a block
    msgs = conn.query("CREATE TABLE helped AS SELECT * FROM iasql_help(); SELECT count(*) > 10 FROM helped")
    assert errors_in(msgs) == [] and tags(msgs)[0].startswith("SELECT ") and data_rows(msgs) == [["t"]]
    msgs = conn.query("COPY (SELECT module_name FROM iasql_modules_installed() ORDER BY 1) TO STDOUT")
    assert [p for t, p in msgs if t == "d"] == [b"iasql_functions\n", b"iasql_platform\n"]
    msgs = conn.query("BEGIN; DECLARE c CURSOR FOR SELECT module_name FROM iasql_modules_installed() ORDER BY 1; "
                      "FETCH 1 FROM c; FETCH 1 FROM c; COMMIT")
    assert errors_in(msgs) == [] and data_rows(msgs) == [["iasql_functions"], ["iasql_platform"]]
    # a cursor outside a block: PostgreSQL's own error, and nothing ran
    [err] = errors_in(conn.query("DECLARE c CURSOR FOR SELECT * FROM iasql_modules_installed()"))
    assert (err.sqlstate, err.message) == ("25P01", "DECLARE CURSOR can only be used in transaction blocks")
    # EXPLAIN describes the stub function (nothing runs); EXPLAIN ANALYZE runs a read-only call
    msgs = conn.query("EXPLAIN SELECT * FROM iasql_install('aws_s3')")
    assert errors_in(msgs) == [] and "Function Scan on iasql_install" in data_rows(msgs)[0][0]
    msgs = conn.query("EXPLAIN (ANALYZE, COSTS off, TIMING off) SELECT * FROM iasql_modules_installed()")
    assert errors_in(msgs) == [] and "actual rows=2" in data_rows(msgs)[0][0]
    assert data_rows(conn.query("SELECT to_regclass('bucket') IS NULL")) == [["t"]]
    # mutating calls where PostgreSQL would run them later, or only to measure: refused, nothing runs
    for sql in ("BEGIN; DECLARE c CURSOR FOR SELECT * FROM iasql_install('aws_s3'); COMMIT",
                "EXPLAIN ANALYZE SELECT * FROM iasql_install('aws_s3')"):
        msgs = conn.query(sql)
        [err] = errors_in(msgs)
        assert err.sqlstate == "0A000", sql
        assert "iasql_install() changes the database and the cloud" in err.message and "CREATE TABLE" in err.get("H")
        if msgs[-1] == ("Z", b"E"):
            conn.query("ROLLBACK")
    assert data_rows(conn.query("SELECT to_regclass('bucket') IS NULL")) == [["t"]]
    # where the statement itself is wrong, PostgreSQL says so before any call runs
    [err] = errors_in(conn.query("SELECT * FROM iasql_modules_installed() JOIN no_such_table ON true"))
    assert (err.sqlstate, err.message) == ("42P01", 'relation "no_such_table" does not exist')
    [err] = errors_in(conn.query("SELECT * FROM iasql_install('aws_s3') JOIN no_such_table ON true"))
    assert err.sqlstate == "0A000"  # a mutating call in a join: refused before anything runs
    assert data_rows(conn.query("SELECT to_regclass('bucket') IS NULL")) == [["t"]]


def test_driver_transaction_with_failing_call_then_recovery(connect):
    conn = connect(autocommit=False)
    with pytest.raises(pe.UndefinedFunction):
        conn.execute("SELECT * FROM iasql_rollback(%s::int)", [1])
    conn.rollback()
    assert conn.execute("SELECT * FROM iasql_version()").fetchone()[0]
