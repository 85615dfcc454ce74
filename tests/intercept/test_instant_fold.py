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
from proxy.wire import backend as B

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
    "SELECT * FROM iasql_version() WHERE nosuch = 1",
    "SELECT 1; SELECT * FROM iasql_version() v JOIN {t} ON nosuch; SELECT 2",
    "SELECT * FROM iasql_version() v, iasql_version() w WHERE v.version = w.nosuch",
    "INSERT INTO {t} VALUES (9); SELECT * FROM iasql_version(1)",
    "INSERT INTO {t} VALUES (9); SELECT * FROM iasql_version(); SELECT * FROM iasql_version(version => 1)",
]


def _summary(messages) -> list:
    out = []
    for group in results(messages):
        t, payload = group[-1]
        rd = next((p for tt, p in group if tt == "T"), None)
        if t == "E":
            [err] = errors_in(group)
            out.append(("error", err.sqlstate, err.get("P"), err.message))
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


def test_warning_position_is_mapped_too(stand_in, raw, pg, db):
    """A NoticeResponse's position (psql's LINE 1 marker for a warning) points into the client's
    text, as Postgres's does."""
    text = "SELECT * FROM iasql_version(); SELECT 'it\\'s'"
    seen = {}
    for where in ("direct", "proxy"):
        if where == "direct":
            conn = RawConn(pg.port, timeout=30)
            conn.startup("postgres", db, password=PASSWORD)
        else:
            conn = raw()
        conn.query("SET standard_conforming_strings = off")
        msgs = conn.query(text)
        notices = [B.NoticeResponse.decode(p) for t, p in msgs if t == "N"]
        seen[where] = [(n.get("C"), n.get("P")) for n in notices]
        if where == "direct":
            conn.terminate()
    assert seen["proxy"] == seen["direct"] and seen["direct"], seen


def test_texts_too_large_to_fold_still_answer(raw):
    """Many instant calls whose rows would build a text over FOLD_MAX_CHARS go run by run: every
    statement still gets its rows, and one ReadyForQuery ends the reply."""
    from proxy.intercept.simple import FOLD_MAX_CHARS

    one = raw().query("SELECT * FROM iasql_help()")
    per_call = sum(len(p) for t, p in one if t == "D")
    n = FOLD_MAX_CHARS // max(per_call, 1) + 20
    msgs = raw().query("SELECT * FROM iasql_help();" * n)
    assert [t for t, _ in msgs].count("Z") == 1 and not errors_in(msgs)
    assert len(results(msgs)) == n
