"""Session state follows its client in ``pool_mode = transaction`` (issue 5, "Session state follows
the client"): differential against direct Postgres, three clients sharing a pool of two.

Every script is run twice with the same interleaving: once with each client connected directly to
Postgres, once through ``txn_proxy``; each client's results, errors, ParameterStatus values and
transaction status after every step must be identical. Scripts keep at most two clients inside an
explicit block at once (the pool has two connections).
"""

from __future__ import annotations

import psycopg
import pytest

from tests.pooling.support import differential

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def diff(direct, via, txn_proxy, pool_db):
    def run(steps, clients=3, **kw):
        return differential(direct(pool_db), via(txn_proxy, pool_db), clients, steps, **kw)

    return run


def test_pool_is_shared(txn_proxy, via, pool_db):
    """Sanity: four clients doing transactions in turns run on at most two backends, and a client
    whose transaction is open elsewhere runs on the other connection."""
    conns = [psycopg.connect(via(txn_proxy, pool_db), autocommit=True) for _ in range(4)]
    try:
        pids = {c.execute("SELECT pg_backend_pid()").fetchone()[0] for c in conns * 3}
        assert len(pids) <= 2
        conns[0].execute("BEGIN")
        held = conns[0].execute("SELECT pg_backend_pid()").fetchone()[0]
        other = {c.execute("SELECT pg_backend_pid()").fetchone()[0] for c in conns[1:]}
        conns[0].execute("COMMIT")
        assert held not in other and len(other) == 1
    finally:
        for c in conns:
            c.close()


def test_search_path(diff):
    diff([
        (0, "SET search_path = s1"),
        (1, "SET search_path = s2"),
        (0, "SELECT v FROM t"), (1, "SELECT v FROM t"),
        (2, "SHOW search_path"), (2, "SELECT to_regclass('t')::text"), (2, "SELECT v FROM t"),
        (0, "BEGIN"), (0, "SELECT v, current_setting('search_path') FROM t"),
        (1, "SELECT v FROM t"), (2, "SELECT current_setting('search_path')"),
        (1, "SET search_path = s3"), (1, "SELECT v FROM t"), (2, "SELECT v FROM t"),
        (0, "SELECT v FROM t"), (0, "COMMIT"),
        (0, "SHOW search_path"), (1, "SHOW search_path"), (2, "SHOW search_path"),
        (2, "SET SCHEMA 's4'"), (2, "SELECT v FROM t"), (0, "SELECT v FROM t"),
        (1, "RESET search_path"), (1, "SHOW search_path"), (1, "SELECT v FROM t"),
        (0, "SELECT set_config('search_path', 's3, public', false)"), (0, "SELECT v FROM t"),
        (2, "SET search_path TO DEFAULT"), (2, "SHOW search_path"), (0, "SHOW search_path"),
    ])


def test_statement_timeout(diff):
    diff([
        (0, "SET statement_timeout = '200ms'"),
        (1, "SHOW statement_timeout"),
        (1, "SELECT pg_sleep(0.4)"),
        (0, "SELECT pg_sleep(0.4)"),
        (2, "SET statement_timeout = 3000"),
        (0, "SHOW statement_timeout"), (1, "SHOW statement_timeout"), (2, "SHOW statement_timeout"),
        (1, "BEGIN"), (1, "SELECT pg_sleep(0.3)"),
        (0, "SELECT pg_sleep(0.3)"), (0, "SELECT current_setting('statement_timeout')"),
        (1, "COMMIT"),
        (0, "RESET statement_timeout"), (0, "SELECT pg_sleep(0.3)"), (0, "SHOW statement_timeout"),
        (2, "SELECT current_setting('statement_timeout')"),
    ])


def test_application_name_and_parameter_status(diff):
    """application_name values, SHOW and the ParameterStatus each client holds (run_script
    records ``conn.info.parameter_status('application_name')`` after every step)."""
    diff([
        (0, "SET application_name = 'client-a'"),
        (1, "SHOW application_name"),
        (1, "SET application_name = 'client-b'"),
        (0, "SELECT current_setting('application_name')"),
        (2, "SELECT current_setting('application_name')"),
        (0, "BEGIN"), (0, "SET application_name = 'a-in-block'"),
        (1, "SHOW application_name"), (2, "SHOW application_name"),
        (0, "COMMIT"), (0, "SHOW application_name"), (1, "SHOW application_name"),
        (2, "SET application_name TO 'client-c'"), (0, "SHOW application_name"),
        (1, "RESET application_name"), (1, "SHOW application_name"), (2, "SHOW application_name"),
        (0, "SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()"),
    ])


def test_datestyle_timezone_intervalstyle(diff):
    q = "SELECT '2024-03-04'::date::text, '2024-01-01 12:00:00+00'::timestamptz::text, '1 day 2 hours'::interval::text"
    diff([
        (0, "SET DateStyle = 'SQL, DMY'"),
        (1, "SET TimeZone = 'Asia/Tokyo'"),
        (2, "SET IntervalStyle = 'postgres_verbose'"),
        (0, q), (1, q), (2, q),
        (1, "SET TIME ZONE 'America/New_York'"), (0, q), (1, q),
        (2, "SET datestyle TO german"), (0, "SHOW DateStyle"), (2, "SHOW DateStyle"), (2, q),
        (0, "BEGIN"), (0, q), (1, q), (2, "SHOW timezone"), (0, "COMMIT"),
        (0, "RESET DateStyle"), (1, "RESET TIME ZONE"), (0, q), (1, q), (2, q),
        (2, "SHOW intervalstyle"), (1, "SHOW TimeZone"),
    ])


WHO = "SELECT current_user, session_user, current_setting('role'), current_setting('is_superuser')"


def test_set_role(diff):
    diff([
        (0, "SET ROLE pool_role_a"),
        (0, WHO), (1, WHO), (2, WHO),
        (1, "SET ROLE pool_role_b"), (0, WHO), (1, WHO),
        (0, "BEGIN"), (0, WHO), (2, WHO), (1, WHO), (0, "COMMIT"),
        (0, "RESET ROLE"), (0, WHO), (1, WHO),
        (1, "SET ROLE NONE"), (1, WHO), (2, "SET ROLE pool_role_b"), (0, WHO), (2, WHO),
    ])


def test_set_session_authorization(diff):
    diff([
        (0, "SET SESSION AUTHORIZATION pool_role_b"),
        (0, WHO), (1, WHO),
        (0, "SET ROLE pool_role_a"),  # pool_role_b is not a member: 42501 on both
        (1, "SET ROLE pool_role_a"), (1, WHO), (0, WHO), (2, WHO),
        (2, "SET SESSION AUTHORIZATION pool_role_a"), (2, WHO), (0, WHO), (1, WHO),
        (0, "RESET SESSION AUTHORIZATION"), (0, WHO), (2, WHO),
        (2, "SET SESSION AUTHORIZATION DEFAULT"), (2, WHO), (1, WHO),
    ])


def test_session_authorization_then_role(diff):
    """A connection left with session_authorization and role by one client, then used by a client
    that only has the same role: the reset of session_authorization must not drop that role."""
    diff([
        (1, "SET ROLE pool_role_a"), (1, WHO),
        (0, "SET SESSION AUTHORIZATION postgres"), (0, "SET ROLE pool_role_a"), (0, WHO),
        (1, WHO), (2, WHO), (0, WHO), (1, WHO),
    ], clients=3)


def test_custom_guc(diff):
    """myapp.x set by one client is the other clients' to see only through their own SETs."""
    get = "SELECT current_setting('myapp.x', true)"
    diff([
        (0, "SET myapp.x = 'a'"),
        (1, "SET myapp.x = 'b'"),
        (0, get), (1, get), (0, "SHOW myapp.x"),
        (0, "BEGIN"), (0, "SET myapp.x = 'a2'"), (1, get), (0, get), (0, "COMMIT"),
        (0, get), (1, "SHOW myapp.x"),
        (1, "RESET myapp.x"), (1, get), (0, get),
        (0, "SELECT set_config('myapp.x', 'a3', false)"), (0, "SHOW myapp.x"), (1, "SHOW myapp.x"),
    ], clients=2)


def test_custom_guc_unknown_to_other_clients(diff):
    """A client that never set myapp.x sees it as undefined (NULL, SHOW fails with 42704), even on
    a connection where another client defined it."""
    get = "SELECT current_setting('myapp.x', true)"
    diff([
        (0, "SET myapp.x = 'a'"),
        (1, get), (1, "SHOW myapp.x"),
        (0, "RESET myapp.x"),
        (1, get), (1, "SHOW myapp.x"), (0, get),
    ], clients=2)


def test_reset_all(diff):
    show = ("SELECT current_setting('search_path'), current_setting('statement_timeout'), "
            "current_setting('application_name'), current_setting('DateStyle'), current_setting('TimeZone')")
    diff([
        (0, "SET search_path = s1"), (0, "SET statement_timeout = '7s'"), (0, "SET application_name = 'ra'"),
        (0, "SET DateStyle = 'German'"), (0, "SET TimeZone = 'UTC'"), (0, "SET IntervalStyle = 'iso_8601'"),
        (1, "SET search_path = s2"), (1, "SET application_name = 'rb'"), (1, "SET statement_timeout = 9000"),
        (0, show), (1, show),
        (0, "RESET ALL"), (0, show), (1, show), (0, "SELECT v FROM t"), (2, show),
        (1, "BEGIN"), (1, "RESET ALL"), (1, show), (1, "ROLLBACK"), (1, show), (0, show),
        (1, "RESET ALL"), (1, show), (0, show),
    ])


def test_reset_all_keeps_role_and_session_authorization(diff):
    """RESET ALL does not reset role or session_authorization (PostgreSQL's GUC_NO_RESET_ALL): the
    client keeps its role wherever its next transaction runs, and no other client gets it."""
    who = WHO + ", current_setting('search_path')"
    diff([
        (0, "SET ROLE pool_role_a"), (0, "SET search_path = s1"),
        (0, "RESET ALL"), (0, who),
        (1, who),                           # same connection as client 0's last transaction
        (2, "BEGIN"), (2, who),             # holds that connection, so client 0 runs on the other one
        (0, who), (1, who), (2, "COMMIT"),
        (1, "SET SESSION AUTHORIZATION pool_role_b"), (1, "RESET ALL"), (1, who), (0, who), (2, who),
        (0, "BEGIN"), (0, who), (1, who), (0, "COMMIT"),
    ])


def test_set_rolled_back_is_not_kept(diff):
    show = "SELECT current_setting('search_path'), current_setting('statement_timeout'), current_setting('application_name')"
    diff([
        (0, "SET search_path = s1"),
        (0, "BEGIN"), (0, "SET search_path = s2"), (0, "SET application_name = 'rolled'"),
        (0, "SELECT v FROM t"), (0, "ROLLBACK"),
        (0, show), (0, "SELECT v FROM t"), (1, show),
        (0, "BEGIN"), (0, "SET statement_timeout = '3s'"), (0, "SELECT 1/0"), (0, "SHOW search_path"),
        (0, "COMMIT"), (0, show),
        (0, "BEGIN"), (0, "SAVEPOINT sp"), (0, "SET search_path = s3"), (0, "ROLLBACK TO SAVEPOINT sp"),
        (0, "SET application_name = 'kept'"), (0, "COMMIT"), (0, show), (1, show),
    ], clients=2)


def test_set_local_is_not_kept(diff):
    show = "SELECT current_setting('search_path'), current_setting('statement_timeout')"
    diff([
        (0, "SET search_path = s1"),
        (0, "BEGIN"), (0, "SET LOCAL search_path = s3"), (0, "SELECT v FROM t"),
        (0, "SET LOCAL statement_timeout = '2s'"), (0, show), (1, show), (0, "COMMIT"),
        (0, show), (0, "SELECT v FROM t"),
        (0, "BEGIN"), (0, "SELECT set_config('search_path', 's4', true)"), (0, "SELECT v FROM t"), (0, "COMMIT"),
        (0, show), (1, show), (0, "SELECT v FROM t"),
    ], clients=2)


def test_set_in_failed_implicit_transaction_is_not_kept(diff):
    """A multi-statement simple Query is one implicit transaction: an error rolls its SETs back."""
    show = "SELECT current_setting('search_path'), current_setting('application_name')"
    diff([
        (0, "SET search_path = s1"),
        (0, "SET search_path = s4; SET application_name = 'failed'; SELECT 1/0"),
        (0, show), (0, "SELECT v FROM t"), (1, show),
        (0, "SET search_path = s2; SELECT v FROM t"),
        (0, show), (1, "SELECT 1"), (0, "SELECT v FROM t"),
        (0, "SELECT set_config('search_path', 's3', false), 1/0"), (0, show),
    ], clients=2)


@pytest.mark.parametrize("prepare_threshold", [0, None])
def test_state_set_by_a_prepared_statement_follows_its_client(make_proxy, via, direct, pool_db, prepare_threshold):
    """A SET (or set_config) run as a named prepared statement: psycopg parses it in one batch
    (Parse, Sync) and binds it in later ones (Bind, Execute, Sync), so the change happens in a
    transaction whose texts never mention it. Each client must still see only its own value, on a
    pool of one connection: compared with the same steps on direct connections. ``prepare_threshold
    = None`` is psycopg's default (prepare after 5 runs); 0 prepares at once."""
    proxy = make_proxy(pool_mode="transaction", default_pool_size=1)

    def run(dsn: str) -> list:
        seen = []
        a = psycopg.connect(dsn, autocommit=True, prepare_threshold=prepare_threshold if prepare_threshold is not None else 5)
        b = psycopg.connect(dsn, autocommit=True, prepare_threshold=prepare_threshold if prepare_threshold is not None else 5)
        try:
            for i in range(7):
                a.execute("select set_config('search_path', %s, false)", (f"a_path{i}, public",))
                b.execute("select set_config('search_path', %s, false)", (f"b_path{i}, public",))
                seen.append((a.execute("select current_setting('search_path')").fetchone()[0],
                             b.execute("select current_setting('search_path')").fetchone()[0]))
            a.execute("set statement_timeout = '7s'")
            b.execute("set statement_timeout = '9s'")
            seen.append((a.execute("show statement_timeout").fetchone()[0],
                         b.execute("show statement_timeout").fetchone()[0]))
        finally:
            a.close()
            b.close()
        return seen

    want = run(direct(pool_db))
    assert want[-1] == ("7s", "9s")
    assert run(via(proxy, pool_db)) == want
