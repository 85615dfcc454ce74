"""Calls are intercepted only in statements that run their query now (breaker finding: EXPLAIN ran
iasql_install, CREATE VIEW froze one result)."""

import pytest

from proxy.router.classify import find_calls

NAMES = frozenset({"iasql_install", "iasql_version"})


@pytest.mark.parametrize("sql", [
    "EXPLAIN SELECT * FROM iasql_install('aws_s3')",
    "EXPLAIN (ANALYZE false, VERBOSE) SELECT * FROM iasql_install('aws_s3')",
    "CREATE VIEW v AS SELECT * FROM iasql_version()",
    "CREATE MATERIALIZED VIEW v AS SELECT * FROM iasql_version()",
    "CREATE TABLE t AS SELECT * FROM iasql_version() WITH NO DATA",
    "PREPARE p AS SELECT * FROM iasql_version()",
    "COPY t FROM STDIN",
    "CREATE FUNCTION f() RETURNS SETOF text LANGUAGE sql AS 'SELECT * FROM iasql_version()'",
    "/* c */ EXPLAIN SELECT iasql_version()",
])
def test_stored_or_described_queries_are_left_to_postgres(sql):
    """These store or only describe the query: PostgreSQL describes the stub (a real
    set-returning function of the same name and columns), or the stub fails if it ever runs."""
    assert find_calls(sql, NAMES) == []


@pytest.mark.parametrize("sql, context", [
    ("SELECT * FROM iasql_version()", ""),
    ("(SELECT * FROM iasql_version())", ""),
    ("WITH v AS (SELECT * FROM iasql_version()) SELECT * FROM v", ""),
    ("INSERT INTO t SELECT version FROM iasql_version()", ""),
    ("VALUES ((SELECT version FROM iasql_version()))", ""),
    ("-- c\nselect iasql_version()", ""),
    ("CREATE TABLE t AS SELECT * FROM iasql_version()", ""),
    ("create temporary table if not exists t (v) as select * from iasql_version() with data", ""),
    ("COPY (SELECT * FROM iasql_version()) TO STDOUT", ""),
    ("DECLARE c CURSOR WITH HOLD FOR SELECT * FROM iasql_version()", "DECLARE"),
    ("explain analyze select * from iasql_version()", "EXPLAIN ANALYZE"),
    ("EXPLAIN (ANALYZE, BUFFERS) SELECT * FROM iasql_version()", "EXPLAIN ANALYZE"),
    ("EXPLAIN (FORMAT JSON, ANALYZE on) CREATE TABLE t AS SELECT * FROM iasql_version()", "EXPLAIN ANALYZE"),
])
def test_statements_that_run_now_are_intercepted(sql, context):
    assert [(c.name, c.context) for c in find_calls(sql, NAMES)] == [("iasql_version", context)]
