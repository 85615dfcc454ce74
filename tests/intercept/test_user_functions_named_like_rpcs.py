"""A user's own SQL function named like a module RPC (``set_user_password``, ``start_build``, ...)
is left alone: through the proxy it runs as with PostgreSQL directly (the engine answers a call
only when its module is installed and the function PostgreSQL would call is the engine's stub),
``iasql_install`` refuses to replace it (42723) and ``iasql_uninstall`` does not drop it. A stub
dropped while its module is installed gives 42883 with a HINT that works: ``iasql_install``
recreates it. Real Postgres, the proxy and the sandbox cloud (moto over HTTP)."""

from __future__ import annotations

import uuid

import boto3
import psycopg
import pytest

USER_FN = """CREATE FUNCTION {schema}.set_user_password(u varchar, p varchar, r varchar = 'false')
  RETURNS TABLE(status varchar, message varchar) LANGUAGE sql
  AS $$ INSERT INTO public.app_log VALUES ('app ran ' || u); SELECT 'APP'::varchar, ''::varchar $$"""
PASSWORD = "Sekr1t-Pa55word-for-user-fns!"
STUB_SIG = "public.set_user_password(varchar,varchar,varchar)"


def _iam(moto_server):
    return boto3.client("iam", endpoint_url=moto_server.endpoint_url, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


@pytest.fixture
def iam_user(moto_server):
    """An IAM user of the sandbox cloud without a console password (deleted afterwards)."""
    iam = _iam(moto_server)
    name = f"ufn-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=name)
    yield name
    try:
        iam.delete_login_profile(UserName=name)
    except iam.exceptions.NoSuchEntityException:
        pass
    iam.delete_user(UserName=name)


def _has_login_profile(moto_server, name: str) -> bool:
    iam = _iam(moto_server)
    try:
        iam.get_login_profile(UserName=name)
        return True
    except iam.exceptions.NoSuchEntityException:
        return False


def _connect(iasql_proxy, db, **kw):
    return psycopg.connect(iasql_proxy.dsn(dbname=db), autocommit=True, connect_timeout=5, **kw)


def _install_iam(conn) -> None:
    conn.execute("SELECT * FROM iasql_install('aws_iam')").fetchall()
    if conn.execute("SELECT count(*) FROM aws_credentials").fetchone()[0] == 0:
        conn.execute("INSERT INTO aws_credentials (access_key_id, secret_access_key) VALUES ('testing', 'testing')")


def _installed(conn) -> list[str]:
    return [r[0] for r in conn.execute("SELECT module_name FROM iasql_modules_installed()").fetchall()
            if not r[0].startswith("iasql_")]


@pytest.mark.parametrize("cursor", ["server", "client"])  # extended and simple protocol
def test_the_users_function_runs_when_no_module_is_installed(iasql_proxy, fresh_db, moto_server, iam_user, cursor):
    """The tester's repro: the user's function runs, returns APP and writes its row; IAM is untouched."""
    with _connect(iasql_proxy, fresh_db,
                  cursor_factory=psycopg.ClientCursor if cursor == "client" else psycopg.Cursor) as conn:
        conn.execute("SELECT * FROM iasql_version()").fetchall()  # the metadata exists
        conn.execute("CREATE TABLE app_log(msg text)")
        conn.execute(USER_FN.format(schema="public"))
        assert conn.execute(f"SELECT * FROM set_user_password('{iam_user}', 'pw')").fetchall() == [("APP", "")]
        assert conn.execute("SELECT * FROM set_user_password(%s, %s)", (iam_user, PASSWORD)).fetchall() == [("APP", "")]
        assert conn.execute("SELECT set_user_password(%s, %s, 'true')", (iam_user, PASSWORD)).fetchone()[0] == ("APP", "")
        assert conn.execute("SELECT count(*) FROM app_log").fetchone()[0] == 3
        # in a multi-statement text too (simple protocol: the proxy's hidden block)
        cur = conn.cursor()
        cur.execute(f"SELECT 1; SELECT * FROM public.set_user_password('{iam_user}', 'x'); SELECT 2")
        assert conn.execute("SELECT count(*) FROM app_log").fetchone()[0] == 4
    assert not _has_login_profile(moto_server, iam_user)


def test_the_users_function_of_the_same_name_in_a_schema_on_the_path(iasql_proxy, fresh_db, moto_server, iam_user):
    """aws_iam installed (its stub in public) and the user's function in a schema before public on the
    search_path: PostgreSQL calls the user's, so does the proxy; qualified with public, the engine's."""
    with _connect(iasql_proxy, fresh_db) as conn:
        _install_iam(conn)
        conn.execute("CREATE TABLE app_log(msg text)")
        conn.execute("CREATE SCHEMA app")
        conn.execute(USER_FN.format(schema="app"))
        conn.execute("SET search_path = app, public")
        assert conn.execute("SELECT * FROM set_user_password(%s, %s)", (iam_user, PASSWORD)).fetchall() == [("APP", "")]
        assert conn.execute("SELECT count(*) FROM public.app_log").fetchone()[0] == 1
        assert not _has_login_profile(moto_server, iam_user)
        assert conn.execute("SELECT * FROM public.set_user_password(%s, %s)",
                            (iam_user, PASSWORD)).fetchall() == [("OK", "")]
        assert _has_login_profile(moto_server, iam_user)


def test_a_users_function_with_other_argument_types(iasql_proxy, fresh_db, moto_server, iam_user):
    with _connect(iasql_proxy, fresh_db) as conn:
        conn.execute("SELECT * FROM iasql_version()").fetchall()
        conn.execute("CREATE FUNCTION public.start_build(n integer) RETURNS TABLE(name varchar) "
                     "LANGUAGE sql AS $$ SELECT 'build ' || n $$")
        assert conn.execute("SELECT * FROM start_build(42)").fetchall() == [("build 42",)]
        assert conn.execute("SELECT * FROM start_build(%s)", (7,)).fetchall() == [("build 7",)]
        cur = psycopg.ClientCursor(conn)
        assert cur.execute("SELECT * FROM start_build(8)").fetchall() == [("build 8",)]
        # with the module installed, the engine's stub next to the user's overload
        _install_iam(conn)
        conn.execute("CREATE FUNCTION public.set_user_password(n integer) RETURNS TABLE(status varchar) "
                     "LANGUAGE sql AS $$ SELECT 'mine ' || n $$")
        assert conn.execute("SELECT * FROM set_user_password(5)").fetchall() == [("mine 5",)]
        assert cur.execute("SELECT * FROM set_user_password(6)").fetchall() == [("mine 6",)]
        assert not _has_login_profile(moto_server, iam_user)
        # a call with arguments the user's overload cannot take is the engine's
        assert conn.execute("SELECT * FROM set_user_password(%s, %s)", (iam_user, PASSWORD)).fetchall() == [("OK", "")]
        assert _has_login_profile(moto_server, iam_user)
        # named notation: PostgreSQL matches by name, so the call goes to PostgreSQL (the stub: 0A000)
        with pytest.raises(psycopg.errors.FeatureNotSupported):
            conn.execute("SELECT * FROM set_user_password(user_name => 'x', password => 'y')")


def test_install_refuses_to_replace_a_users_function(iasql_proxy, fresh_db):
    with _connect(iasql_proxy, fresh_db) as conn:
        conn.execute("CREATE TABLE app_log(msg text)")
        conn.execute(USER_FN.format(schema="public"))
        before = conn.execute(f"SELECT prosrc FROM pg_proc WHERE oid = '{STUB_SIG}'::regprocedure").fetchone()
        with pytest.raises(psycopg.errors.DuplicateFunction) as ei:
            conn.execute("SELECT * FROM iasql_install('aws_iam')")
        diag = ei.value.diag
        assert diag.sqlstate == "42723"
        assert diag.message_primary == 'function "set_user_password" already exists with same argument types'
        assert "Rename or drop your function" in diag.message_hint
        assert _installed(conn) == []
        assert conn.execute("SELECT to_regclass('public.iam_user') IS NULL").fetchone()[0]
        assert conn.execute(f"SELECT prosrc FROM pg_proc WHERE oid = '{STUB_SIG}'::regprocedure").fetchone() == before
        assert conn.execute("SELECT * FROM set_user_password('x', 'y')").fetchall() == [("APP", "")]
        # renamed, the install goes through and the user's function is still there
        conn.execute("ALTER FUNCTION public.set_user_password(varchar, varchar, varchar) RENAME TO my_password")
        conn.execute("SELECT * FROM iasql_install('aws_iam')").fetchall()
        assert "aws_iam" in _installed(conn)
        assert conn.execute("SELECT * FROM my_password('x', 'y')").fetchall() == [("APP", "")]


def test_uninstall_leaves_a_users_function_alone(iasql_proxy, fresh_db, moto_server, iam_user):
    with _connect(iasql_proxy, fresh_db) as conn:
        _install_iam(conn)
        conn.execute("CREATE TABLE app_log(msg text)")
        # the user replaces the stub by a function of their own of the same signature
        conn.execute(f"DROP FUNCTION {STUB_SIG}")
        conn.execute(USER_FN.format(schema="public"))
        assert conn.execute("SELECT * FROM set_user_password(%s, %s)", (iam_user, PASSWORD)).fetchall() == [("APP", "")]
        assert [r[0] for r in conn.execute("SELECT * FROM iasql_install('aws_iam')").fetchall()] == []
        assert conn.execute("SELECT * FROM set_user_password(%s, %s)", (iam_user, PASSWORD)).fetchall() == [("APP", "")]
        conn.execute("SELECT * FROM iasql_uninstall('aws_iam')").fetchall()
        assert "aws_iam" not in _installed(conn)
        assert conn.execute(f"SELECT to_regprocedure('{STUB_SIG}') IS NOT NULL").fetchone()[0]
        assert conn.execute("SELECT * FROM set_user_password(%s, %s)", (iam_user, PASSWORD)).fetchall() == [("APP", "")]
        assert conn.execute("SELECT count(*) FROM app_log").fetchone()[0] == 3
    assert not _has_login_profile(moto_server, iam_user)


@pytest.mark.parametrize("cursor", ["server", "client"])
def test_a_dropped_stub_has_a_truthful_hint_and_comes_back_with_install(iasql_proxy, fresh_db, moto_server, iam_user,
                                                                       cursor):
    with _connect(iasql_proxy, fresh_db,
                  cursor_factory=psycopg.ClientCursor if cursor == "client" else psycopg.Cursor) as conn:
        _install_iam(conn)
        conn.execute(f"DROP FUNCTION {STUB_SIG}")
        with pytest.raises(psycopg.errors.UndefinedFunction) as ei:
            conn.execute(f"SELECT * FROM set_user_password('{iam_user}', '{PASSWORD}')")
        hint = ei.value.diag.message_hint
        assert "which is installed" in hint and "iasql_install('aws_iam')" in hint, hint
        # what the hint says works: the stub is back and the engine answers again
        conn.execute("SELECT * FROM iasql_install('aws_iam')").fetchall()
        assert conn.execute(f"SELECT to_regprocedure('{STUB_SIG}') IS NOT NULL").fetchone()[0]
        assert conn.execute(f"SELECT * FROM set_user_password('{iam_user}', '{PASSWORD}')").fetchall() == [("OK", "")]
    assert _has_login_profile(moto_server, iam_user)


def test_the_repro_through_psql_and_in_a_failed_block(iasql_proxy, fresh_db, moto_server, iam_user):
    from tests.intercept.conftest import psql

    repro = ("CREATE TABLE app_log(msg text);\n" + USER_FN.format(schema="public") + ";\n"
             f"SELECT * FROM set_user_password('{iam_user}', 'pw');")
    res = psql(iasql_proxy.port, fresh_db, repro, "-A", "-t")
    assert res.returncode == 0, res.stderr
    assert "APP|" in res.stdout.split(), res.stdout
    res = psql(iasql_proxy.port, fresh_db, "SELECT msg FROM app_log", "-A", "-t")
    assert res.stdout.split("\n")[0] == f"app ran {iam_user}"
    assert not _has_login_profile(moto_server, iam_user)
    # in a failed block, Postgres's own 25P02 (extended protocol: decided at Parse)
    with _connect(iasql_proxy, fresh_db) as conn:
        with conn.transaction():
            with pytest.raises(psycopg.errors.DivisionByZero):
                conn.execute("SELECT 1/0")
            with pytest.raises(psycopg.errors.InFailedSqlTransaction):
                conn.execute("SELECT * FROM set_user_password(%s, %s)", (iam_user, "pw"))
            raise psycopg.Rollback
