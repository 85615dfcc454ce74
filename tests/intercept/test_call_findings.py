"""Regression tests for what a fresh tester found in calls that run as the caller (one test per
finding): module tables and sequences are not opened to PUBLIC, a schema-qualified name of another
schema is that schema's function, mutating calls only where PostgreSQL surely runs them once, a
deadlock through the IaSQL lock is detected as PostgreSQL detects one, LATERAL arguments get a
clear error, and iasql_begin waits the whole lock_wait_timeout whatever it waits for."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
from psycopg import errors as pe

from tests.intercept.conftest import engine_section
from tests.intercept.helpers import data_rows, errors_in

pytestmark = pytest.mark.timeout(120)

DAVE = "dave-Sekr1t"


@pytest.fixture(scope="module")
def dave(pg):
    pg.psql("DROP ROLE IF EXISTS dave; SET password_encryption = 'scram-sha-256'; "
            f"CREATE ROLE dave LOGIN PASSWORD '{DAVE}'")
    return "dave"


@pytest.fixture(scope="module")
def short_lock_proxy(pg, moto_server, proxy_ini, start_proxy):
    ini = proxy_ini() + engine_section(moto_server.endpoint_url).replace("lock_wait_timeout = 10",
                                                                         "lock_wait_timeout = 1.5")
    return start_proxy(ini, "iasql-findings-proxy")


def test_install_opens_nothing_to_other_roles(iasql_proxy, pg, fresh_db, dave):
    with psycopg.connect(pg.dsn(fresh_db), autocommit=True) as d:
        d.execute("CREATE SEQUENCE private_seq")
        before = d.execute("SELECT relacl FROM pg_class WHERE relname = 'private_seq'").fetchone()
    with psycopg.connect(iasql_proxy.dsn(dbname=fresh_db), autocommit=True) as c:
        c.execute("SELECT * FROM iasql_install('aws_s3')").fetchall()
        c.execute("INSERT INTO aws_credentials (access_key_id, secret_access_key) VALUES ('AKIA', 'secret')")
    with psycopg.connect(pg.dsn(fresh_db), autocommit=True) as d:
        assert d.execute("SELECT relacl FROM pg_class WHERE relname = 'private_seq'").fetchone() == before
    with psycopg.connect(iasql_proxy.dsn(dbname=fresh_db, user="dave", password=DAVE), autocommit=True) as c:
        for sql in ("SELECT * FROM aws_credentials", "SELECT * FROM iasql_audit_log", "SELECT nextval('private_seq')",
                    "INSERT INTO aws_credentials (access_key_id, secret_access_key) VALUES ('x', 'y')"):
            with pytest.raises(pe.InsufficientPrivilege):
                c.execute(sql)
        # the module catalogue stays readable: which modules are installed is no secret
        assert ("aws_s3", "0.1.0") in [r[:2] for r in c.execute("SELECT * FROM iasql_modules_installed()")]


def test_another_schemas_function_is_that_schemas(raw, fresh_db):
    conn = raw(dbname=fresh_db)
    conn.query("CREATE SCHEMA mine; CREATE FUNCTION mine.iasql_version() RETURNS TABLE (version text) "
               "LANGUAGE sql AS $$ SELECT 'mine' $$")
    assert data_rows(conn.query("SELECT * FROM mine.iasql_version()")) == [["mine"]]
    [err] = errors_in(conn.query("SELECT * FROM pg_catalog.iasql_version()"))
    assert (err.sqlstate, err.message) == ("42883", "function pg_catalog.iasql_version() does not exist")
    assert data_rows(conn.query("SELECT * FROM public.iasql_version()")) != [["mine"]]


@pytest.mark.parametrize("sql", [
    "SELECT * FROM iasql_begin() WHERE false",
    "SELECT * FROM iasql_begin() LIMIT 0",
    "WITH m AS (SELECT * FROM iasql_begin()) SELECT 1",
    "SELECT 1 WHERE false AND EXISTS (SELECT 1 FROM iasql_begin())",
    "SELECT * FROM (VALUES (1)) v, iasql_begin()",
    "SELECT iasql_begin(), 1",
])
def test_mutating_call_only_where_postgres_surely_runs_it(raw, fresh_db, sql):
    conn = raw(dbname=fresh_db)
    [err] = errors_in(conn.query(sql))
    assert err.sqlstate == "0A000"
    assert err.message == ("iasql_begin() changes the database and the cloud, so it cannot be called where "
                           "PostgreSQL may skip it or call it more than once")
    assert "SELECT * FROM iasql_begin(...)" in err.get("H")
    # nothing ran: no IaSQL transaction was opened
    assert errors_in(conn.query("SELECT * FROM iasql_begin()")) == []


def test_plain_forms_of_a_mutating_call(raw, fresh_db):
    conn = raw(dbname=fresh_db)
    msgs = conn.query("CREATE TABLE got AS SELECT module_name FROM iasql_install('aws_account') AS i; "
                      "SELECT count(*) FROM got")
    assert errors_in(msgs) == [] and data_rows(msgs)[-1] == ["2"]
    msgs = conn.query("SELECT dropped_table_name FROM iasql_uninstall('aws_account') u(m, dropped_table_name)")
    assert errors_in(msgs) == [] and sorted(data_rows(msgs)) == [["aws_credentials"], ["aws_regions"]]


def test_a_deadlock_through_the_iasql_lock_is_detected(iasql_proxy, pg, fresh_db):
    """A holds a table lock and waits for the IaSQL lock; B holds the IaSQL lock and waits for the
    table: PostgreSQL's deadlock detector ends one of them (40P01), as with pg_advisory_xact_lock."""
    with psycopg.connect(iasql_proxy.dsn(dbname=fresh_db), autocommit=True) as c:
        c.execute("SELECT * FROM iasql_modules_installed()").fetchall()
        c.execute("CREATE TABLE t (a int)")
    a = psycopg.connect(iasql_proxy.dsn(dbname=fresh_db))
    b = psycopg.connect(iasql_proxy.dsn(dbname=fresh_db))
    errors = {}
    try:
        a.execute("LOCK TABLE t")
        b.execute("SELECT * FROM iasql_install('aws_account')").fetchall()  # holds the IaSQL lock

        def b_waits():
            try:
                b.execute("SELECT * FROM t")
                b.commit()
            except psycopg.Error as e:
                errors["b"] = e

        th = threading.Thread(target=b_waits)
        th.start()
        time.sleep(0.5)
        t0 = time.monotonic()
        try:
            a.execute("SELECT * FROM iasql_install('aws_account')").fetchall()
        except psycopg.Error as e:
            errors["a"] = e
        a.rollback()
        th.join(30)
        assert [type(e) for e in errors.values()] == [pe.DeadlockDetected], errors
        assert time.monotonic() - t0 < 8  # deadlock_timeout (1 s), not lock_wait_timeout (10 s)
    finally:
        a.close()
        b.close()


def test_lateral_arguments_get_a_clear_error(raw, fresh_db):
    [err] = errors_in(raw(dbname=fresh_db).query(
        "SELECT * FROM generate_series(1, 2) g, LATERAL iasql_get_sql_since(now() - g * interval '1 hour')"))
    assert err.sqlstate == "0A000"
    assert err.message == "the arguments of iasql_get_sql_since() cannot refer to columns of other FROM items"
    assert err.get("D") == 'column "g" does not exist'


def test_iasql_begin_waits_the_whole_timeout_whatever_it_waits_for(short_lock_proxy, fresh_db):
    with psycopg.connect(short_lock_proxy.dsn(dbname=fresh_db), autocommit=True) as c:
        c.execute("SELECT * FROM iasql_modules_installed()").fetchall()
    holder = psycopg.connect(short_lock_proxy.dsn(dbname=fresh_db))
    try:
        holder.execute("SELECT * FROM iasql_begin()").fetchall()  # the IaSQL lock, not committed yet
        threading.Timer(0.5, holder.commit).start()  # then the open IaSQL transaction, committed
        with psycopg.connect(short_lock_proxy.dsn(dbname=fresh_db), autocommit=True) as other:
            notices = []
            other.add_notice_handler(lambda d: notices.append(d.message_primary))
            t0 = time.monotonic()
            with pytest.raises(pe.LockNotAvailable) as ei:
                other.execute("SELECT * FROM iasql_begin()")
            waited = time.monotonic() - t0
        assert ei.value.diag.message_primary == "Another transaction is open or running. Please try again later."
        assert ei.value.diag.message_detail.startswith("Transaction ")
        assert 1.3 < waited < 5, waited
        assert len(notices) == 1
    finally:
        holder.close()


def test_iasql_begin_waits_no_longer_than_the_callers_lock_timeout(iasql_proxy, fresh_db):
    """The README's promise for every wait of a call: lock_wait_timeout (10 s here), or the
    caller's own lock_timeout when shorter, which then ends it as Postgres's own lock timeout."""
    with psycopg.connect(iasql_proxy.dsn(dbname=fresh_db), autocommit=True) as holder, \
            psycopg.connect(iasql_proxy.dsn(dbname=fresh_db), autocommit=True) as other:
        holder.execute("SELECT * FROM iasql_begin()").fetchall()  # an open IaSQL transaction
        other.execute("SET lock_timeout = '500ms'")
        t0 = time.monotonic()
        with pytest.raises(pe.LockNotAvailable) as ei:
            other.execute("SELECT * FROM iasql_begin()")
        assert ei.value.diag.message_primary == "canceling statement due to lock timeout"
        assert ei.value.diag.message_detail.startswith("Transaction ")
        assert time.monotonic() - t0 < 8  # well under lock_wait_timeout
        holder.execute("SELECT * FROM iasql_rollback()").fetchall()


def test_iasql_begin_twice_in_one_session_fails_at_once(iasql_proxy, fresh_db):
    """The open IaSQL transaction is the caller's own: waiting for it could only time out."""
    with psycopg.connect(iasql_proxy.dsn(dbname=fresh_db), autocommit=True) as c:
        [(_, tx_id)] = c.execute("SELECT * FROM iasql_begin()").fetchall()
        t0 = time.monotonic()
        with pytest.raises(psycopg.errors.ActiveSqlTransaction) as ei:
            c.execute("SELECT * FROM iasql_begin()")
        assert ei.value.diag.message_primary == "an IaSQL transaction is already open in this session"
        assert ei.value.diag.message_detail.startswith(f"Transaction {tx_id} was opened at ")
        assert time.monotonic() - t0 < 8  # not lock_wait_timeout
        # the session goes on, and its transaction closes as usual
        c.execute("SELECT * FROM iasql_rollback()").fetchall()
        assert c.execute("SELECT * FROM iasql_begin()").fetchall()[0][0] == "Transaction started"
        c.execute("SELECT * FROM iasql_rollback()").fetchall()
