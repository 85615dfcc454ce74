"""Calls are intercepted only in statements that run their query now (breaker finding: EXPLAIN ran
iasql_install, CREATE VIEW froze one result)."""

import pytest

from proxy.router.classify import find_calls

NAMES = frozenset({"iasql_install", "iasql_version"})


@pytest.mark.parametrize("sql", [
    "EXPLAIN SELECT * FROM iasql_install('aws_s3')",
    "explain analyze select * from iasql_install('aws_s3')",
    "CREATE VIEW v AS SELECT * FROM iasql_version()",
    "CREATE MATERIALIZED VIEW v AS SELECT * FROM iasql_version()",
    "CREATE TABLE t AS SELECT * FROM iasql_version()",
    "PREPARE p AS SELECT * FROM iasql_version()",
    "DECLARE c CURSOR FOR SELECT * FROM iasql_version()",
    "COPY (SELECT * FROM iasql_version()) TO STDOUT",
    "CREATE FUNCTION f() RETURNS SETOF text LANGUAGE sql AS 'SELECT * FROM iasql_version()'",
    "/* c */ EXPLAIN SELECT iasql_version()",
])
def test_stored_or_described_queries_are_left_to_postgres(sql):
    assert find_calls(sql, NAMES) == []


@pytest.mark.parametrize("sql", [
    "SELECT * FROM iasql_version()",
    "(SELECT * FROM iasql_version())",
    "WITH v AS (SELECT * FROM iasql_version()) SELECT * FROM v",
    "INSERT INTO t SELECT version FROM iasql_version()",
    "VALUES ((SELECT version FROM iasql_version()))",
    "-- c\nselect iasql_version()",
])
def test_statements_that_run_now_are_intercepted(sql):
    assert [c.name for c in find_calls(sql, NAMES)] == ["iasql_version"]
