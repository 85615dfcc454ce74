"""Texts whose only calls are instant functions (iasql_version, iasql_help, iasql_modules_list:
constant rows, no side effects) go to Postgres as ONE Query with each call's rows in place, so the
whole text keeps Postgres's implicit-transaction semantics. Differential: the same texts sent
straight to Postgres, where a stand-in SQL function ``iasql_version()`` returns the same row, must
give the same statement results, row types, error SQLSTATE and error position, and leave the same
rows behind."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from tests.intercept.conftest import PASSWORD, row_description, tags
from tests.intercept.helpers import data_rows, errors_in, results
from tests.support.faults import RawConn

pytestmark = pytest.mark.timeout(90)

TEXTS = [
    "SELECT 1 AS a; SELECT * FROM iasql_version(); SELECT 2 AS b",
    "INSERT INTO {t} VALUES (1); SELECT * FROM iasql_version(); SELECT 1/0",
    "INSERT INTO {t} VALUES (2); SELECT * FROM iasql_version(); INSERT INTO {t} VALUES (3)",
    "SELECT * FROM iasql_version(); SELECT nosuch_column",
    "SELECT version FROM iasql_version() WHERE version <> '';\n  SELECT v, nosuch FROM {t}",
    "SELECT 1/0; SELECT * FROM iasql_version()",
    "/* c */ SELECT * FROM iasql_version() ; ; SELECT 3 AS c;",
    "SELECT count(*) FROM iasql_version() v, iasql_version() w",
]


def _summary(messages) -> list:
    out = []
    for group in results(messages):
        t, payload = group[-1]
        rd = next((p for tt, p in group if tt == "T"), None)
        if t == "E":
            [err] = errors_in(group)
            out.append(("error", err.sqlstate, err.get("P")))
        else:
            out.append((tags(group), row_description(rd) if rd else None, data_rows(group)))
    return out


@pytest.fixture
def stand_in(pg, db, raw):
    """The engine's version string; the same function created straight on Postgres in ``db``."""
    [[version]] = data_rows(raw().query("SELECT * FROM iasql_version()"))
    with psycopg.connect(pg.dsn(db), autocommit=True) as c:
        c.execute(f"CREATE OR REPLACE FUNCTION iasql_version() RETURNS TABLE (version text) "
                  f"LANGUAGE sql AS $$ SELECT '{version}'::text $$")
    yield version
    with psycopg.connect(pg.dsn(db), autocommit=True) as c:
        c.execute("DROP FUNCTION IF EXISTS iasql_version()")


@pytest.mark.parametrize("text", TEXTS)
def test_same_as_postgres(text, stand_in, raw, pg, db):
    seen = {}
    for where in ("direct", "proxy"):
        table = f"fold_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(pg.dsn(db), autocommit=True) as c:
            c.execute(f"CREATE TABLE {table} (v int)")
        if where == "direct":
            conn = RawConn(pg.port, timeout=30)
            conn.startup("postgres", db, password=PASSWORD)
        else:
            conn = raw()
        msgs = conn.query(text.format(t=table))
        assert msgs[-1] == ("Z", b"I")
        with psycopg.connect(pg.dsn(db), autocommit=True) as c:
            rows = c.execute(f"SELECT v FROM {table} ORDER BY v").fetchall()
        seen[where] = (_summary(msgs), rows)
        if where == "direct":
            conn.terminate()
    assert seen["proxy"] == seen["direct"]
