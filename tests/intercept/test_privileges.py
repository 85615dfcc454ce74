"""Privileges and secrets (issue 16): the engine can never do what the caller could not.

One regression test per reported attack, each through the real proxy process with roles that log
in by SCRAM pass-through (``auth_query`` as postgres; the proxy never learns their passwords):

(a) a database owner who is not a superuser puts a schema of its own first in its search_path
    (before ``pg_catalog`` even) with functions named as the ones the engine uses
    (``default_aws_region()``, ``set_config``, ``count(*)``...) that run ``ALTER ROLE ... SUPERUSER``,
    and calls ``iasql_rollback(true)`` and the rest: the engine calls none of them (every name it
    uses carries its schema), nor ``public.default_aws_region()`` once the owner rewrites it (not
    even when a superuser calls in that database); ``rolsuper`` stays false;
(b) a role that may only connect: ``iasql_uninstall`` of a module another role installed, an
    ``iasql_install`` in ``postgres`` and ``template1`` (where it may not create), and
    ``iasql_commit``/``iasql_rollback(true)`` with another role's AWS keys all get 42501 and
    change nothing (no table dropped or created, no cloud call);
(c) ``aws_credentials`` and ``iasql_audit_log`` are not readable by PUBLIC (even when the owner's
    default privileges would grant new tables to everyone), the owner's GRANT lets a role read
    them, and the audit log holds ``<redacted>``, never the secret;
(d) a role cannot write the audit log by attaching IaSQL's SECURITY DEFINER audit trigger to a
    table of its own (a temporary ``bucket``): such forged rows would be read by the owner's
    next commit and undone by its revert, as the owner.

Roles are cluster-wide: every test makes its own, with unique names, and drops them at the end.
"""

from __future__ import annotations

import time
import uuid

import psycopg
import pytest

pytestmark = pytest.mark.timeout(180)

SECRET = f"wJalrXUtnFEMI/K7MDENG/PRIVILEGES-{uuid.uuid4().hex[:8]}"


# -- helpers ----------------------------------------------------------------------------------

def _drop_role(pg, name: str) -> None:
    """Drop role ``name`` and what it owns or was granted in every database."""
    pg.psql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{name}'")
    for db in pg.psql("SELECT datname FROM pg_database WHERE datallowconn").split():
        pg.psql(f'REASSIGN OWNED BY "{name}" TO postgres; DROP OWNED BY "{name}"', dbname=db)
    pg.psql(f'DROP ROLE IF EXISTS "{name}"')


@pytest.fixture
def roles(pg):
    """``roles(prefix)``: a new LOGIN role (SCRAM password, no other right) -> (name, password)."""
    made: list[str] = []

    def make(prefix: str = "iasql_priv") -> tuple[str, str]:
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        password = f"Pw-{uuid.uuid4().hex}"
        pg.psql(f"SET password_encryption = 'scram-sha-256'; CREATE ROLE \"{name}\" LOGIN PASSWORD '{password}'")
        made.append(name)
        return name, password

    yield make
    for name in made:
        _drop_role(pg, name)


@pytest.fixture
def s3_buckets(moto_server):
    """``s3_buckets()``: the bucket names in the sandbox cloud (moto). Buckets named
    ``iasql-priv-*`` are deleted at the end (the cloud is shared by the whole session: every
    later ``iasql_install('aws_s3')`` would read them into its table)."""
    import boto3
    from botocore.config import Config

    client = boto3.client("s3", region_name="us-east-1", endpoint_url=moto_server.endpoint_url,
                          aws_access_key_id="testing", aws_secret_access_key="testing",
                          config=Config(s3={"addressing_style": "path"}))

    def names() -> set[str]:
        return {b["Name"] for b in client.list_buckets()["Buckets"]}

    yield names
    for name in names():
        if name.startswith("iasql-priv-"):
            client.delete_bucket(Bucket=name)


def through_proxy(proxy, db: str, user: str = "postgres", password: str = "postgres", **kw) -> psycopg.Connection:
    """An autocommit connection through the proxy."""
    return psycopg.connect(proxy.dsn(dbname=db, user=user, password=password, sslmode="verify-full"),
                           autocommit=True, connect_timeout=10, **kw)


def direct(pg, db: str, user: str | None = None, password: str | None = None) -> psycopg.Connection:
    """An autocommit connection straight to Postgres (postgres unless ``user``)."""
    return psycopg.connect(pg.dsn(db, user=user, password=password), autocommit=True)


def refused(conn: psycopg.Connection, statement: str, params=None) -> psycopg.Error:
    """The error ``statement`` fails with (it must fail)."""
    with pytest.raises(psycopg.Error) as ei:
        conn.execute(statement, params).fetchall()
    return ei.value


def is_superuser(pg, role: str) -> bool:
    with direct(pg, "postgres") as c:
        return c.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (role,)).fetchone()[0]


def relations(pg, db: str, *names: str) -> dict[str, bool]:
    """Whether each of ``names`` (schema-qualified) exists in ``db``."""
    with direct(pg, db) as c:
        return {n: c.execute("SELECT to_regclass(%s) IS NOT NULL", (n,)).fetchone()[0] for n in names}


# -- (a) a database owner does not become superuser -------------------------------------------

#: Functions named as built-ins and IaSQL's own, in a schema the owner puts first in its
#: search_path (before pg_catalog), each running ALTER ROLE <session_user> SUPERUSER first: were the
#: engine to call one, the call would fail (the owner may not do that), so every call succeeding
#: shows none was called.
SHADOWS = """
CREATE SCHEMA {s};
CREATE FUNCTION {s}.escalate() RETURNS void LANGUAGE plpgsql AS $$
  BEGIN EXECUTE pg_catalog.format('ALTER ROLE %I SUPERUSER', session_user); END $$;
CREATE FUNCTION {s}.default_aws_region() RETURNS text LANGUAGE plpgsql AS $$
  BEGIN PERFORM {s}.escalate(); RETURN 'us-east-1'; END $$;
CREATE FUNCTION {s}.set_config(text, text, boolean) RETURNS text LANGUAGE plpgsql AS $$
  BEGIN PERFORM {s}.escalate(); RETURN pg_catalog.set_config($1, $2, $3); END $$;
CREATE FUNCTION {s}.current_setting(text) RETURNS text LANGUAGE plpgsql AS $$
  BEGIN PERFORM {s}.escalate(); RETURN pg_catalog.current_setting($1); END $$;
CREATE FUNCTION {s}.current_setting(text, boolean) RETURNS text LANGUAGE plpgsql AS $$
  BEGIN PERFORM {s}.escalate(); RETURN pg_catalog.current_setting($1, $2); END $$;
CREATE FUNCTION {s}.to_regclass(text) RETURNS regclass LANGUAGE plpgsql AS $$
  BEGIN PERFORM {s}.escalate(); RETURN pg_catalog.to_regclass($1); END $$;
CREATE FUNCTION {s}.obj_description(oid, name) RETURNS text LANGUAGE plpgsql AS $$
  BEGIN PERFORM {s}.escalate(); RETURN pg_catalog.obj_description($1, $2); END $$;
CREATE FUNCTION {s}.now() RETURNS timestamptz LANGUAGE plpgsql AS $$
  BEGIN PERFORM {s}.escalate(); RETURN pg_catalog.now(); END $$;
CREATE FUNCTION {s}.clock_timestamp() RETURNS timestamptz LANGUAGE plpgsql AS $$
  BEGIN PERFORM {s}.escalate(); RETURN pg_catalog.clock_timestamp(); END $$;
CREATE FUNCTION {s}.pg_try_advisory_xact_lock(integer, integer) RETURNS boolean LANGUAGE plpgsql AS $$
  BEGIN PERFORM {s}.escalate(); RETURN pg_catalog.pg_try_advisory_xact_lock($1, $2); END $$;
CREATE FUNCTION {s}.unnest(anyarray) RETURNS SETOF anyelement LANGUAGE plpgsql AS $$
  BEGIN PERFORM {s}.escalate(); RETURN QUERY SELECT * FROM pg_catalog.unnest($1); END $$;
CREATE FUNCTION {s}.count_step(bigint) RETURNS bigint LANGUAGE plpgsql AS $$
  BEGIN PERFORM {s}.escalate(); RETURN $1 + 1; END $$;
CREATE AGGREGATE {s}.count(*) (SFUNC = {s}.count_step, STYPE = bigint, INITCOND = '0');
"""


def test_a_database_owner_does_not_become_superuser_through_the_engine(iasql_proxy, pg, fresh_db, roles,
                                                                       s3_buckets):
    owner, pw = roles("iasql_owner")
    pg.psql(f'ALTER DATABASE "{fresh_db}" OWNER TO "{owner}"')  # PostgreSQL 15: it owns schema public too
    # the attack of issue 16: "$user" first in the search_path, and here before pg_catalog even
    pg.psql(f'ALTER ROLE "{owner}" SET search_path = "$user", pg_catalog, public')
    with direct(pg, fresh_db, owner, pw) as c:
        c.execute(SHADOWS.format(s=f'"{owner}"'))
        # the shadows work: the owner's own unqualified now() runs one, which tries to escalate
        assert refused(c, "SELECT now()").sqlstate == "42501"

    good = f"iasql-priv-{uuid.uuid4().hex[:8]}"
    with through_proxy(iasql_proxy, fresh_db, owner, pw) as c:
        assert c.execute("SHOW search_path").fetchone() == ('"$user", pg_catalog, public',)
        c.execute("SELECT * FROM iasql_install('aws_s3')").fetchall()  # metadata, aws_account, aws_s3
        c.execute("SELECT * FROM iasql_rollback(true)").fetchall()
        c.execute("SELECT * FROM iasql_begin()").fetchall()
        c.execute("INSERT INTO public.bucket (name) VALUES (%s)", (good,))
        assert [r[0] for r in c.execute("SELECT * FROM iasql_preview()")] == ["create"]
        c.execute("SELECT * FROM iasql_commit('made by the owner')").fetchall()
        assert good in s3_buckets()
        for call in ("iasql_modules_installed()", "iasql_get_errors()", "iasql_get_sql_since()",
                     "iasql_get_sql_for_transaction()", "iasql_help()"):
            c.execute(f"SELECT * FROM {call}").fetchall()
        # a failed call: its ERROR row is written after the transaction, with the caller's search_path
        c.execute("CREATE TABLE public.iam_role (x int)")
        assert refused(c, "SELECT * FROM iasql_install('aws_iam')").sqlstate == "42P07"
        assert any("collides with tables: iam_role" in r[1] for r in c.execute("SELECT * FROM iasql_get_errors()"))
        # a failed commit: its revert (a DO block) also runs after the transaction, on this connection
        c.execute("SELECT * FROM iasql_begin()").fetchall()
        c.execute("INSERT INTO public.bucket (name) VALUES (%s), ('ab')", (good + "-2",))
        err = refused(c, "SELECT * FROM iasql_commit()")
        assert err.sqlstate == "58000" and "taken back" in err.diag.message_detail
        assert sorted(r[0] for r in c.execute("SELECT name FROM public.bucket WHERE name LIKE %s", (good + "%",))) \
            == [good]
        kinds = [r[0] for r in c.execute("SELECT change_type FROM public.iasql_audit_log WHERE change_type IN "
                                         "('START_REVERT', 'END_REVERT') ORDER BY id")]
        assert kinds == ["START_REVERT", "END_REVERT"]
        c.execute("SELECT * FROM iasql_uninstall('aws_s3')").fetchall()
    assert not is_superuser(pg, owner)

    # the owner owns public.default_aws_region() (it installed aws_account) and may rewrite it: the
    # engine does not call it (it reads the default region from aws_regions), neither for the owner
    # nor for a superuser calling in the owner's database, which would run it as the superuser
    with direct(pg, fresh_db, owner, pw) as c:
        c.execute("""CREATE OR REPLACE FUNCTION public.default_aws_region() RETURNS text LANGUAGE plpgsql AS $$
                     BEGIN EXECUTE pg_catalog.format('ALTER ROLE %I SUPERUSER', '{owner}'); RETURN 'us-east-1';
                     END $$""".replace("{owner}", owner))
        assert refused(c, "SELECT public.default_aws_region()").sqlstate == "42501"  # as the owner
    with through_proxy(iasql_proxy, fresh_db, owner, pw) as c:
        c.execute("SELECT * FROM iasql_rollback(true)").fetchall()
    with through_proxy(iasql_proxy, fresh_db) as c:  # postgres, a superuser
        c.execute("SELECT * FROM iasql_rollback(true)").fetchall()
        c.execute("SELECT * FROM iasql_begin()").fetchall()
        c.execute("SELECT * FROM iasql_commit()").fetchall()
    assert not is_superuser(pg, owner)


# -- (b) a role that may only connect -----------------------------------------------------------

def test_b_connect_only_role_cannot_uninstall_a_module_it_does_not_own(iasql_proxy, pg, fresh_db, roles):
    r, pw = roles()
    with through_proxy(iasql_proxy, fresh_db) as owner:
        owner.execute("SELECT * FROM iasql_install('aws_s3')").fetchall()
    with through_proxy(iasql_proxy, fresh_db, r, pw) as c:
        err = refused(c, "SELECT * FROM iasql_uninstall('aws_s3')")
        assert (err.sqlstate, err.diag.message_primary) == ("42501", "permission denied for table bucket")
        # what PUBLIC may read, the role reads: the module is still installed
        assert "aws_s3" in [row[0] for row in c.execute("SELECT * FROM iasql_modules_installed()")]
    assert relations(pg, fresh_db, "public.bucket", "public.aws_credentials") == \
        {"public.bucket": True, "public.aws_credentials": True}


@pytest.mark.parametrize("database", ["postgres", "template1"])
def test_b_connect_only_role_cannot_install_where_it_may_not_create(iasql_proxy, pg, roles, database):
    """PostgreSQL 15: only the database owner may create in schema public; template1's tables
    would be in every database created later."""
    r, pw = roles()
    with direct(pg, database) as c:
        before = {row[0] for row in c.execute("SELECT oid::regclass::text FROM pg_class "
                                              "WHERE relnamespace = 'public'::regnamespace")}
        installed = set()
        if c.execute("SELECT to_regclass('public.iasql_module') IS NOT NULL").fetchone()[0]:
            installed = {row[0].split("@")[0] for row in c.execute("SELECT name FROM public.iasql_module")}
    module, table = next((m, t) for m, t in (("aws_s3", "bucket"), ("aws_iam", "iam_role"),
                                             ("aws_security_group", "security_group")) if m not in installed)
    try:
        with through_proxy(iasql_proxy, database, r, pw) as c:
            err = refused(c, f"SELECT * FROM iasql_install('{module}')")
            assert (err.sqlstate, err.diag.message_primary) == ("42501", "permission denied for schema public")
    finally:
        # the proxy keeps the server connection in its pool: a connection to template1 would make
        # every CREATE DATABASE fail ("source database is being accessed by other users")
        deadline = time.monotonic() + 10
        while pg.psql(f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{database}' AND usename = '{r}'").strip() != "0":
            pg.psql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}' "
                    f"AND usename = '{r}'")
            assert time.monotonic() < deadline
            time.sleep(0.1)
    with direct(pg, database) as c:
        after = {row[0] for row in c.execute("SELECT oid::regclass::text FROM pg_class "
                                             "WHERE relnamespace = 'public'::regnamespace")}
        assert after == before
        assert c.execute("SELECT to_regclass(%s)", (f"public.{table}",)).fetchone() == (None,)
        assert c.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'iasql_args' AND nspowner = %s::regrole",
                         (r,)).fetchone() == (0,)


def test_b_connect_only_role_cannot_commit_with_another_roles_keys(iasql_proxy, pg, fresh_db, roles, s3_buckets):
    r, pw = roles()
    with through_proxy(iasql_proxy, fresh_db) as owner:
        owner.execute("SELECT * FROM iasql_install('aws_s3')").fetchall()
        owner.execute("INSERT INTO aws_credentials (access_key_id, secret_access_key) VALUES ('AKIAOWNER', %s)",
                      (SECRET,))
    # every right a commit needs except reading the owner's keys
    pg.psql(f'GRANT SELECT, INSERT, UPDATE, DELETE ON public.bucket, public.aws_regions TO "{r}"; '
            f'GRANT SELECT, INSERT ON public.iasql_audit_log TO "{r}"; '
            f'GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO "{r}"', dbname=fresh_db)
    name = f"iasql-priv-{uuid.uuid4().hex[:8]}"
    with through_proxy(iasql_proxy, fresh_db, r, pw) as c:
        c.execute("SELECT * FROM iasql_begin()").fetchall()
        c.execute("INSERT INTO public.bucket (name) VALUES (%s)", (name,))
        for call in ("SELECT * FROM iasql_commit()", "SELECT * FROM iasql_rollback(true)"):
            err = refused(c, call)
            assert (err.sqlstate, err.diag.message_primary) == \
                ("42501", "permission denied for table aws_credentials"), call
        assert SECRET not in str(err) and SECRET not in (err.diag.message_detail or "")
    assert name not in s3_buckets()  # no cloud call was made with the owner's keys


# -- (c) the keys and the audit log are the owner's --------------------------------------------

def test_c_credentials_and_audit_log_are_readable_only_by_roles_the_owner_grants(iasql_proxy, pg, fresh_db, roles):
    r, pw = roles()
    # an owner whose default privileges give every new table to everyone
    pg.psql("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO PUBLIC", dbname=fresh_db)
    with through_proxy(iasql_proxy, fresh_db) as owner:
        owner.execute("SELECT * FROM iasql_install('aws_s3')").fetchall()
        owner.execute("INSERT INTO aws_credentials (access_key_id, secret_access_key) VALUES ('AKIAOWNER', %s)",
                      (SECRET,))
    with through_proxy(iasql_proxy, fresh_db, r, pw) as c:
        for table in ("aws_credentials", "iasql_audit_log"):
            err = refused(c, f"SELECT * FROM {table}")
            assert (err.sqlstate, err.diag.message_primary) == ("42501", f"permission denied for table {table}")
        err = refused(c, "SELECT * FROM iasql_get_sql_since()")  # the engine reads as the caller
        assert (err.sqlstate, err.diag.message_primary) == ("42501", "permission denied for table iasql_audit_log")
        # the default privilege holds for the other tables: the REVOKE is what keeps the keys
        assert c.execute("SELECT count(*) > 0 FROM aws_regions").fetchone() == (True,)
    with direct(pg, fresh_db) as d:
        acl = d.execute("SELECT relacl::text[] FROM pg_class WHERE oid = 'public.aws_credentials'::regclass").fetchone()[0]
        assert not any(entry.startswith("=") for entry in acl), acl  # no entry for PUBLIC
        # the audit log never holds the secret
        assert d.execute("SELECT count(*) FROM iasql_audit_log WHERE change::text LIKE %s",
                         (f"%{SECRET}%",)).fetchone() == (0,)
    # the owner grants: the role reads the keys, and the audit rows about them, redacted
    pg.psql(f'GRANT SELECT ON public.aws_credentials, public.iasql_audit_log TO "{r}"', dbname=fresh_db)
    with through_proxy(iasql_proxy, fresh_db, r, pw) as c:
        assert c.execute("SELECT access_key_id, secret_access_key FROM aws_credentials").fetchall() == \
            [("AKIAOWNER", SECRET)]
        rows = c.execute("SELECT change->'change'->>'secret_access_key' FROM iasql_audit_log "
                         "WHERE table_name = 'aws_credentials'").fetchall()
        assert rows == [("<redacted>",)]


# -- (d) the audit trigger writes rows for IaSQL's tables only ----------------------------------

def test_d_a_role_cannot_forge_audit_rows_through_the_audit_trigger(iasql_proxy, pg, fresh_db, roles):
    r, pw = roles()
    with through_proxy(iasql_proxy, fresh_db) as owner:
        owner.execute("SELECT * FROM iasql_install('aws_s3')").fetchall()

    def bucket_rows() -> int:
        with direct(pg, fresh_db) as d:
            return d.execute("SELECT count(*) FROM iasql_audit_log WHERE table_name = 'bucket'").fetchone()[0]

    before = bucket_rows()
    with through_proxy(iasql_proxy, fresh_db, r, pw) as c:
        # a temporary table named as the owner's, with IaSQL's SECURITY DEFINER audit function
        c.execute("CREATE TEMP TABLE bucket (name varchar PRIMARY KEY, region varchar)")
        c.execute("CREATE TRIGGER bucket_audit AFTER INSERT OR UPDATE OR DELETE ON pg_temp.bucket "
                  "FOR EACH ROW EXECUTE FUNCTION public.iasql_audit()")
        c.execute("INSERT INTO pg_temp.bucket VALUES ('owners-production-bucket', 'us-east-1')")
        c.execute("DELETE FROM pg_temp.bucket")
    assert bucket_rows() == before


def test_c_an_upgraded_database_takes_back_publics_grant_on_the_keys(iasql_proxy, pg, fresh_db, roles):
    """Earlier versions granted every module table to PUBLIC: the metadata upgrade (the first call
    of a new version) revokes it on aws_credentials."""
    r, pw = roles()
    with through_proxy(iasql_proxy, fresh_db) as owner:
        owner.execute("SELECT * FROM iasql_install('aws_account')").fetchall()
        owner.execute("INSERT INTO aws_credentials (access_key_id, secret_access_key) VALUES ('AKIAOWNER', %s)",
                      (SECRET,))
    # the database as an earlier version left it
    pg.psql("GRANT SELECT, INSERT, UPDATE, DELETE ON public.aws_credentials TO PUBLIC; "
            "COMMENT ON TABLE public.iasql_audit_log IS 'iasql-proxy metadata 3 (0.1.0)'", dbname=fresh_db)
    with through_proxy(iasql_proxy, fresh_db, r, pw) as c:
        assert c.execute("SELECT secret_access_key FROM aws_credentials").fetchall() == [(SECRET,)]
    with through_proxy(iasql_proxy, fresh_db) as owner:
        owner.execute("SELECT * FROM iasql_modules_installed()").fetchall()  # upgrades the metadata
    with through_proxy(iasql_proxy, fresh_db, r, pw) as c:
        err = refused(c, "SELECT secret_access_key FROM aws_credentials")
        assert (err.sqlstate, err.diag.message_primary) == ("42501", "permission denied for table aws_credentials")
