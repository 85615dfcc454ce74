"""The metadata database through the proxy: iasql_connect, iasql_disconnect, iasql_db_list and
iasql_engine_health with IaSQL's names, arguments and result columns (issue 19 point 1)."""

from __future__ import annotations

import psycopg
import pytest

from engine.metadata import new_user_and_password, place
from tests.scale.conftest import PASSWORDS, connect_db, db_conn, metadata_conn


def server_of(servers, db: dict) -> int:
    """Index in ``servers`` of the cluster holding database ``db["id"]``."""
    found = [i for i, s in enumerate(servers) if s.psql(f"SELECT 1 FROM pg_database WHERE datname = '{db['id']}'").strip()]
    assert len(found) == 1, found
    return found[0]


def test_connect_returns_iasqls_columns_and_a_usable_database(fleet, servers):
    a, _ = fleet
    with metadata_conn(a) as c:
        cur = c.execute("SELECT * FROM iasql_connect('first')")
        row = cur.fetchone()
        assert [d.name for d in cur.description] == ["user", "password", "record_count", "operation_count", "alias", "id"]
        assert [d.type_code for d in cur.description] == [1043, 1043, 23, 23, 1043, 1043]
    db = dict(zip(["user", "password", "record_count", "operation_count", "alias", "id"], row))
    assert db["alias"] == "first" and db["record_count"] == 0 and db["operation_count"] == 0
    assert db["id"].startswith("_") and len(db["id"]) == 17
    assert len(db["user"]) == 8 and db["user"][0].isalpha() and len(db["password"]) == 16
    with db_conn(a, db, autocommit=True) as c:
        assert c.execute("SELECT current_database(), current_user").fetchone() == (db["id"], db["user"])
        mods = [r[0] for r in c.execute("SELECT module_name FROM iasql_modules_installed()").fetchall()]
        assert mods == ["iasql_functions", "iasql_platform"]
        owner = c.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()").fetchone()
        assert owner == (db["user"],)
    server_of(servers, db)


def test_new_databases_go_to_the_server_with_fewest(fleet, servers):
    a, _ = fleet
    counts = [0, 0]
    made = [connect_db(a, f"spread{i}") for i in range(4)]
    for db in made:
        counts[server_of(servers, db)] += 1
    assert abs(counts[0] - counts[1]) <= 1 + 1  # the other tests' databases may tilt it by one


def test_place_orders_by_count_per_weight():
    assert place({"a": 1, "b": 1}, {"a": 2, "b": 1}) == ["b", "a"]
    assert place({"a": 1, "b": 1}, {}) == ["a", "b"]
    assert place({"a": 1, "b": 3}, {"a": 1, "b": 2}) == ["b", "a"]  # 2/3 < 1/1
    assert place({"a": 1, "b": 1}, {}, exclude=["a"]) == ["b"]
    user, password = new_user_and_password()
    assert user.isalnum() and user.islower() and len(password) == 16


def test_db_list_shows_only_the_callers_own(fleet):
    a, b = fleet
    mine = connect_db(a, "alice-only")
    theirs = connect_db(b, "bob-only", user="bob")
    with metadata_conn(b) as c:  # alice, through the other proxy
        cur = c.execute("SELECT * FROM iasql_db_list()")
        assert [d.name for d in cur.description] == ["pg_name", "alias", "record_count", "operation_count",
                                                     "rpc_count", "upgrading", "created_at", "updated_at", "pg_user"]
        rows = cur.fetchall()
    names = {r[0] for r in rows}
    assert mine["id"] in names and theirs["id"] not in names
    with metadata_conn(a, "bob") as c:
        assert {r[1] for r in c.execute("SELECT * FROM iasql_db_list()").fetchall()} == {"bob-only"}


def test_a_user_drops_only_their_own(fleet, servers):
    a, _ = fleet
    bobs = connect_db(a, "bobs-db", user="bob")
    with metadata_conn(a, "alice") as c, \
            pytest.raises(psycopg.errors.InvalidCatalogName, match="has no IaSQL database with alias bobs-db"):
        c.execute("SELECT iasql_disconnect('bobs-db')")
    # nor can alice connect to it with her own credentials
    with pytest.raises(psycopg.OperationalError, match="permission denied|CONNECT privilege"):
        psycopg.connect(a.dsn(user="alice", password=PASSWORDS["alice"], dbname=bobs["id"]), connect_timeout=10)
    with metadata_conn(a, "bob") as c:
        cur = c.execute("SELECT iasql_disconnect('bobs-db')")
        assert [d.name for d in cur.description] == ["iasql_disconnect"]
        assert cur.fetchone() == ("disconnected bobs-db",)
        assert "bobs-db" not in {r[1] for r in c.execute("SELECT * FROM iasql_db_list()").fetchall()}
    for s in servers:
        assert not s.psql(f"SELECT 1 FROM pg_database WHERE datname = '{bobs['id']}'").strip()
        assert not s.psql(f"SELECT 1 FROM pg_roles WHERE rolname = '{bobs['user']}'").strip()
    with pytest.raises(psycopg.OperationalError, match="does not exist"):
        db_conn(a, bobs)
    with psycopg.connect(a.dsn(dbname="iasql_proxy"), autocommit=True) as c:  # no pool left behind
        c.cursor_factory = psycopg.ClientCursor
        assert bobs["id"] not in {r[0] for r in c.execute("SHOW POOLS").fetchall()}


def test_an_alias_is_unique_per_user(fleet):
    a, _ = fleet
    connect_db(a, "twice")
    with metadata_conn(a) as c, \
            pytest.raises(psycopg.errors.DuplicateDatabase, match="already has an IaSQL database with alias twice"):
        c.execute("SELECT * FROM iasql_connect('twice')")
    connect_db(a, "twice", user="bob")  # another user's alias is theirs


@pytest.mark.parametrize("call, error", [
    ("SELECT * FROM iasql_connect(NULL)", psycopg.errors.NullValueNotAllowed),
    ("SELECT * FROM iasql_connect('')", psycopg.errors.InvalidParameterValue),
    ("SELECT * FROM iasql_connect(repeat('x', 256))", psycopg.errors.InvalidParameterValue),
    ("SELECT * FROM iasql_connect(1, 2)", psycopg.errors.UndefinedFunction),
    ("SELECT iasql_disconnect(NULL)", psycopg.errors.NullValueNotAllowed),
    ("SELECT iasql_disconnect('no such alias')", psycopg.errors.InvalidCatalogName),
])
def test_bad_arguments_get_an_error_and_the_session_goes_on(fleet, call, error):
    a, _ = fleet
    with metadata_conn(a) as c:
        with pytest.raises(error):
            c.execute(call)
        assert c.execute("SELECT 1").fetchone() == (1,)


def test_the_metadata_calls_belong_to_the_metadata_database(fleet):
    a, _ = fleet
    db = connect_db(a, "elsewhere")
    with db_conn(a, db, autocommit=True) as c:
        with pytest.raises(psycopg.errors.FeatureNotSupported, match='metadata database "iasql_metadata" only'):
            c.execute("SELECT * FROM iasql_db_list()")
        assert c.execute("SELECT iasql_engine_health()").fetchone() == ("ok",)
        # as in IaSQL, iasql_help lists the iasql_functions module, not the metadata database's calls
        names = {r[0] for r in c.execute("SELECT name FROM iasql_help()").fetchall()}
        assert "iasql_commit" in names and not names & {"iasql_connect", "iasql_disconnect", "iasql_db_list"}


def test_engine_health(fleet):
    a, _ = fleet
    with metadata_conn(a) as c:
        cur = c.execute("SELECT * FROM iasql_engine_health()")
        assert [d.name for d in cur.description] == ["iasql_engine_health"]
        assert cur.fetchone() == ("ok",)


def test_metadata_tables_are_not_the_users(fleet):
    a, _ = fleet
    with metadata_conn(a) as c:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("INSERT INTO iasql_route VALUES ('x', 'pg2')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("SELECT * FROM iasql_database")


def test_init_db_creates_the_metadata_database(servers):
    import subprocess
    import sys

    from tests.support.proxy import REPO

    pg = servers[1]
    for expected in ("(created)", ""):
        res = subprocess.run([sys.executable, "-m", "proxy.cli", "init-db", "scratch_metadata", "--metadata",
                              "--dsn", pg.dsn()], check=False, capture_output=True, text=True, cwd=REPO, timeout=120)
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip() == f"initialised the metadata database scratch_metadata {expected}".strip()
    tables = pg.psql("SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables WHERE schemaname = 'public'",
                     dbname="scratch_metadata").strip().split(",")
    assert {"iasql_database", "iasql_user", "iasql_user_databases", "iasql_route"} <= set(tables)
    pg.psql("DROP DATABASE scratch_metadata")
