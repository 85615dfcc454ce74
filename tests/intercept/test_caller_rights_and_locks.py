"""A call has the caller's rights, is audited as the engine only while it runs, and serialises on
the per-database IaSQL lock held to the end of the caller's transaction (issue points 4 and 5).

Roles log in through the proxy with SCRAM pass-through (``auth_query``; the proxy never learns
their passwords) and the proxy has no engine credentials: every database statement of a call runs
on the caller's own connection, so what the caller may not do, the call may not do either.
"""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
from psycopg import errors as pe
from psycopg.pq import TransactionStatus

from tests.intercept.conftest import engine_section
from tests.support.faults import RawConn, cancel_request, error_fields

pytestmark = pytest.mark.timeout(120)

CAROL = "carol-Sekr1t"


@pytest.fixture(scope="module")
def lock_proxy(pg, moto_server, proxy_ini, start_proxy):
    """The engine with a short lock_wait_timeout (1.5 s), session pooling."""
    ini = proxy_ini() + engine_section(moto_server.endpoint_url).replace("lock_wait_timeout = 10",
                                                                         "lock_wait_timeout = 1.5")
    return start_proxy(ini, "iasql-lock-proxy")


@pytest.fixture(scope="module")
def carol(pg):
    """A role that may log in and nothing else (PostgreSQL 15: no CREATE on schema public)."""
    pg.psql("DROP ROLE IF EXISTS carol; SET password_encryption = 'scram-sha-256'; "
            f"CREATE ROLE carol LOGIN PASSWORD '{CAROL}'")
    return "carol"


def connect(proxy, db, user="postgres", password="postgres", **kw):
    return psycopg.connect(proxy.dsn(dbname=db, user=user, password=password, sslmode="verify-full"),
                           connect_timeout=10, **kw)


def direct_error(pg, db, user, password, sql):
    dsn = pg.dsn(db, user=user, password=password) if user != "postgres" else pg.dsn(db)
    with psycopg.connect(dsn, autocommit=True) as c:
        with pytest.raises(psycopg.Error) as ei:
            c.execute(sql)
    return ei.value.sqlstate, ei.value.diag.message_primary


def test_install_has_the_callers_create_right(iasql_proxy, pg, fresh_db, carol):
    # straight to Postgres, carol may not create a table in public ...
    want = direct_error(pg, fresh_db, "carol", CAROL, "CREATE TABLE public.x (a int)")
    assert want == ("42501", "permission denied for schema public")
    # ... and through the proxy neither may iasql_install (no metadata yet: it would create it)
    with connect(iasql_proxy, fresh_db, "carol", CAROL, autocommit=True) as c:
        with pytest.raises(psycopg.Error) as ei:
            c.execute("SELECT * FROM iasql_install('aws_iam')")
        assert (ei.value.sqlstate, ei.value.diag.message_primary) == want
    # with the metadata made by the owner, the module's own DDL is refused the same way
    with connect(iasql_proxy, fresh_db, autocommit=True) as owner:
        owner.execute("SELECT * FROM iasql_modules_installed()").fetchall()
    with connect(iasql_proxy, fresh_db, "carol", CAROL, autocommit=True) as c:
        with pytest.raises(psycopg.Error) as ei:
            c.execute("SELECT * FROM iasql_install('aws_iam')")
        assert (ei.value.sqlstate, ei.value.diag.message_primary) == want
        # what the caller may read, the call reads: the metadata is readable by PUBLIC
        assert ("iasql_platform", "0.1.0") in [r[:2] for r in c.execute("SELECT * FROM iasql_modules_installed()")]
    # once granted, the call works as carol, and carol owns what it created
    pg.psql("GRANT CREATE ON SCHEMA public TO carol; GRANT INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public "
            "TO carol; GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO carol", dbname=fresh_db)
    with connect(iasql_proxy, fresh_db, "carol", CAROL, autocommit=True) as c:
        c.execute("SELECT * FROM iasql_install('aws_iam')").fetchall()
    with psycopg.connect(pg.dsn(fresh_db), autocommit=True) as d:
        assert d.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'iam_role'").fetchone() == ("carol",)


def test_a_table_without_grant_is_refused_to_the_call(iasql_proxy, pg, fresh_db, carol):
    with connect(iasql_proxy, fresh_db, autocommit=True) as owner:
        owner.execute("SELECT * FROM iasql_install('aws_iam')").fetchall()
    pg.psql("GRANT SELECT, INSERT ON iasql_audit_log TO carol; "
            "GRANT USAGE ON SEQUENCE iasql_audit_log_id_seq TO carol", dbname=fresh_db)
    # the module tables are the owner's, granted to nobody (as CREATE TABLE leaves them)
    want = direct_error(pg, fresh_db, "carol", CAROL, "SELECT * FROM aws_credentials")
    assert want == ("42501", "permission denied for table aws_credentials")
    with connect(iasql_proxy, fresh_db, "carol", CAROL, autocommit=True) as c:
        c.execute("SELECT * FROM iasql_begin()").fetchall()
        for call in ("SELECT * FROM iasql_rollback()", "SELECT * FROM iasql_uninstall('aws_iam')"):
            with pytest.raises(psycopg.Error) as ei:
                c.execute(call)
            assert ei.value.sqlstate == "42501", call
            assert ei.value.diag.message_primary.startswith("permission denied for table "), call


def test_audit_log_tells_the_engines_writes_from_the_callers_in_one_transaction(iasql_proxy, pg, fresh_db):
    with connect(iasql_proxy, fresh_db) as c:  # autocommit off: one transaction for all of it
        c.execute("SELECT * FROM iasql_install('aws_s3')").fetchall()
        c.execute("INSERT INTO bucket (name) VALUES ('audit-before')")
        c.execute("SELECT * FROM iasql_rollback(true)").fetchall()  # the engine deletes the row (not in the cloud)
        c.execute("INSERT INTO bucket (name) VALUES ('audit-after')")
        assert c.execute("SELECT current_setting('iasql.engine_call')").fetchone() == ("off",)
        c.commit()
    with psycopg.connect(pg.dsn(fresh_db), autocommit=True) as d:
        rows = d.execute("SELECT change_type, \"user\", coalesce(change->'change'->>'name', change->'original'->>'name') "
                         "FROM iasql_audit_log WHERE table_name = 'bucket' ORDER BY id").fetchall()
    assert rows == [("INSERT", "postgres", "audit-before"), ("DELETE", "iasql_engine", "audit-before"),
                    ("INSERT", "postgres", "audit-after")]


def test_second_caller_waits_then_gets_55p03_naming_the_holder(lock_proxy, fresh_db):
    holder = connect(lock_proxy, fresh_db, application_name="lock-holder")
    try:
        holder.execute("SELECT * FROM iasql_modules_installed()").fetchall()
        holder.commit()  # the metadata exists for everyone
        holder.execute("SELECT * FROM iasql_install('aws_iam')").fetchall()  # its transaction stays open
        [pid] = holder.execute("SELECT pg_backend_pid()").fetchone()  # the server's (BackendKeyData is the proxy's)
        with RawConn(lock_proxy.port, timeout=30) as other:
            other.startup("postgres", fresh_db, password="postgres")
            t0 = time.monotonic()
            msgs = other.query("SELECT * FROM iasql_uninstall('aws_iam')")
            waited = time.monotonic() - t0
        notices = [error_fields(p).message for t, p in msgs if t == "N"]
        assert f'waiting for another IaSQL call on database "{fresh_db}" to finish' in notices
        [err] = [error_fields(p) for t, p in msgs if t == "E"]
        assert err.sqlstate == "55P03"
        assert f"held by pid {pid}" in err.message and 'application "lock-holder"' in err.message
        assert waited >= 1.4 and msgs[-1] == ("Z", b"I")
        # no self-deadlock: the holder calls again in the same transaction and goes on at once
        t0 = time.monotonic()
        holder.execute("SELECT * FROM iasql_uninstall('aws_iam')").fetchall()
        assert time.monotonic() - t0 < 1.0
        holder.rollback()
        # the lock went with the holder's transaction: the other caller gets it now
        with connect(lock_proxy, fresh_db, autocommit=True) as c:
            assert [r[1] for r in c.execute("SELECT * FROM iasql_install('aws_iam')")] == [
                "iam_user", "access_key", "iam_role"]
    finally:
        holder.close()


def test_cancel_while_waiting_for_the_lock_aborts_the_transaction(lock_proxy, fresh_db):
    holder = connect(lock_proxy, fresh_db)
    try:
        holder.execute("SELECT * FROM iasql_modules_installed()").fetchall()
        holder.commit()
        holder.execute("SELECT * FROM iasql_begin()").fetchall()
        with RawConn(lock_proxy.port, timeout=30) as waiter:
            waiter.startup("postgres", fresh_db, password="postgres")
            assert waiter.query("BEGIN")[-1] == ("Z", b"T")
            from proxy.wire import frontend as F

            waiter.send(F.Query("SELECT * FROM iasql_install('aws_iam')").encode())
            timer = threading.Timer(0.5, cancel_request, (lock_proxy.port, *waiter.backend_key))
            timer.start()
            msgs = waiter.read_until_ready()
            timer.join()
            [err] = [error_fields(p) for t, p in msgs if t == "E"]
            assert (err.sqlstate, err.message) == ("57014", "canceling statement due to user request")
            assert msgs[-1] == ("Z", b"E")  # the caller's transaction is aborted, as after any cancel
            assert [error_fields(p).sqlstate for t, p in waiter.query("SELECT 1") if t == "E"] == ["25P02"]
            assert waiter.query("ROLLBACK")[-1] == ("Z", b"I")
    finally:
        holder.close()


def test_first_metadata_in_an_open_transaction_makes_others_wait_bounded(lock_proxy, fresh_db):
    """The metadata made by a caller whose transaction is still open: another caller waits for it
    as for any lock, with a NOTICE, at most lock_wait_timeout, then 55P03."""
    first = connect(lock_proxy, fresh_db)
    try:
        first.execute("SELECT * FROM iasql_modules_installed()").fetchall()  # creates it; not committed
        with connect(lock_proxy, fresh_db, autocommit=True) as second:
            notices = []
            second.add_notice_handler(lambda d: notices.append(d.message_primary))
            with pytest.raises(pe.LockNotAvailable) as ei:
                second.execute("SELECT * FROM iasql_get_errors()")
            assert "IaSQL metadata lock" in ei.value.diag.message_primary
            assert notices == ["waiting for another session to finish creating IaSQL's metadata"]
            first.commit()
            assert second.execute("SELECT * FROM iasql_get_errors()").fetchall() == []
    finally:
        first.close()


def test_cancel_of_an_engine_statement_blocked_on_a_row_lock(iasql_proxy, pg, fresh_db):
    """The engine's statement runs on the caller's connection: a CancelRequest reaches it there."""
    with connect(iasql_proxy, fresh_db, autocommit=True) as c:
        c.execute("SELECT * FROM iasql_install('aws_s3')").fetchall()
        c.execute("SELECT * FROM iasql_begin()").fetchall()
        c.execute("INSERT INTO bucket (name) VALUES ('locked-one')")
    blocker = psycopg.connect(pg.dsn(fresh_db))
    try:
        blocker.execute("LOCK TABLE bucket IN ACCESS EXCLUSIVE MODE")
        conn = connect(iasql_proxy, fresh_db)
        try:
            done = threading.Event()
            box = {}

            def run():
                try:
                    conn.execute("SELECT * FROM iasql_commit()")
                except psycopg.Error as e:
                    box["err"] = e
                done.set()

            th = threading.Thread(target=run)
            th.start()
            time.sleep(1.0)
            assert not done.is_set()
            conn.cancel_safe(timeout=5)
            assert done.wait(10)
            th.join()
            assert isinstance(box.get("err"), pe.QueryCanceled)
            assert conn.info.transaction_status == TransactionStatus.INERROR
            conn.rollback()
        finally:
            conn.close()
    finally:
        blocker.rollback()
        blocker.close()
