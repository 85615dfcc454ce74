"""Contract point 1 (fast path): a Query without ``iasql_`` is forwarded unchanged.

Proved behaviourally: the same sequence of Query messages sent straight to Postgres and through
the proxy gives byte-identical backend message streams (only BackendKeyData differs, and it is
not part of the query streams compared here). The texts are the ones whose semantics depend on
being ONE Query message: an error mid-batch, BEGIN/COMMIT inside the text, VACUUM inside a
multi-statement text (25001: implicit transaction block), SET.
"""

from __future__ import annotations

import psycopg
import pytest

from tests.intercept.conftest import PASSWORD, types
from tests.support.faults import RawConn, data_rows, errors_in

pytestmark = pytest.mark.timeout(60)

#: Query texts sent in order on one session. Table ``ft`` is created once and truncated before
#: each run, so its OID (part of RowDescription) is the same on both runs.
SEQUENCE = [
    # error mid-batch: the first INSERT is rolled back with the batch, the last one never runs
    "INSERT INTO ft VALUES (1, 'one'); SELECT 1/0; INSERT INTO ft VALUES (2, 'two')",
    "SELECT a, b FROM ft ORDER BY a",
    # BEGIN/COMMIT inside the text: the first part commits, the error only rolls back what follows
    "BEGIN; INSERT INTO ft VALUES (3, 'three'); COMMIT; INSERT INTO ft VALUES (4, 'four'); "
    "INSERT INTO ft VALUES (3, 'dup'); INSERT INTO ft VALUES (5, 'five')",
    "SELECT a, b FROM ft ORDER BY a",
    # an open block left by the text; the next Query runs inside it
    "BEGIN; INSERT INTO ft VALUES (6, 'six')",
    "SELECT count(*) FROM ft",
    "SELECT nope FROM ft",
    "COMMIT",
    "SELECT a FROM ft ORDER BY a",
    # statements that refuse a transaction block, in a multi-statement text
    "SELECT 1; VACUUM ft; SELECT 2",
    "VACUUM ft",
    "CREATE DATABASE x_never; SELECT 1",
    # SET and its ParameterStatus, SHOW, an empty statement and an empty query
    "SET application_name = 'fast-path'; SHOW application_name; ;",
    "",
    "SET DateStyle = 'SQL, DMY'; SELECT '2024-03-01'::date, now() - now()",
    # notices and a rollback with nothing open
    "ROLLBACK; DO $$BEGIN RAISE NOTICE 'hello %', 42; END$$",
    # a syntax error in the middle: Postgres rejects the whole text before running any of it
    "INSERT INTO ft VALUES (7, 'seven'); SELEC 1; INSERT INTO ft VALUES (8, 'eight')",
    "SELECT a FROM ft ORDER BY a",
]


def run_sequence(port: int, dbname: str, seq: list[str], reset: str, pg) -> list[list[tuple[str, bytes]]]:
    with psycopg.connect(pg.dsn(dbname), autocommit=True) as c:
        c.execute(reset)
    with RawConn(port, timeout=20) as conn:
        conn.startup("postgres", dbname, password=PASSWORD)
        return [conn.query(q) for q in seq]


def test_byte_identical_direct_and_through_proxy(pg, iasql_proxy, db):
    reset = "CREATE TABLE IF NOT EXISTS ft(a int PRIMARY KEY, b text); TRUNCATE ft"
    direct = run_sequence(pg.port, db, SEQUENCE, reset, pg)
    proxied = run_sequence(iasql_proxy.port, db, SEQUENCE, reset, pg)
    for q, d, p in zip(SEQUENCE, direct, proxied):
        assert p == d, f"stream differs for {q!r}"
    # and the streams are the interesting ones (the batch semantics really were exercised)
    by_q = dict(zip(SEQUENCE, proxied))
    assert [e.sqlstate for e in errors_in(by_q[SEQUENCE[0]])] == ["22012"]
    assert [e.sqlstate for e in errors_in(by_q["SELECT 1; VACUUM ft; SELECT 2"])] == ["25001"]
    assert [e.sqlstate for e in errors_in(by_q["CREATE DATABASE x_never; SELECT 1"])] == ["25001"]
    assert types(by_q["VACUUM ft"]) == "CZ"
    assert by_q["SELECT count(*) FROM ft"][-1] == ("Z", b"T")
    assert by_q["SELECT nope FROM ft"][-1] == ("Z", b"E")
    assert by_q["COMMIT"][0] == ("C", b"ROLLBACK\0")


def test_text_with_iasql_only_in_a_comment_is_also_identical(pg, iasql_proxy, db):
    """A text mentioning iasql_ but calling nothing goes through the splitter, then is forwarded
    as the original single message: the same batch semantics as direct."""
    seq = [
        "INSERT INTO ct VALUES (1); /* iasql_install('x') */ SELECT 1/0; INSERT INTO ct VALUES (2)",
        "SELECT 'iasql_version()'; VACUUM ct; -- iasql_commit()",
        "SELECT count(*) FROM ct",
    ]

    reset = "CREATE TABLE IF NOT EXISTS ct(a int); TRUNCATE ct"
    direct = run_sequence(pg.port, db, seq, reset, pg)
    proxied = run_sequence(iasql_proxy.port, db, seq, reset, pg)
    assert proxied == direct
    assert [e.sqlstate for e in errors_in(proxied[0])] == ["22012"]
    assert [e.sqlstate for e in errors_in(proxied[1])] == ["25001"]
    assert data_rows(proxied[2]) == [["0"]]
