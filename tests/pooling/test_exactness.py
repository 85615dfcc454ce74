"""Transaction pooling that no client can tell from its own connection (regression tests, one per
finding; the model-based differential test is ``test_model.py``)."""

from __future__ import annotations

import time

import pytest

from proxy.wire import frontend as F
from tests.pooling.model import check_script
from tests.support.faults import RawConn

pytestmark = pytest.mark.timeout(120)


def test_notification_during_the_proxys_own_check_reaches_the_listener(txn_proxy, pool_db):
    """LISTEN pins the client, and after its transaction the proxy asks the server whether the pin
    still holds: a NOTIFY from another client in that moment used to be dropped with the check's
    replies. Every notification must arrive."""
    with RawConn(txn_proxy.port, timeout=15) as listener, RawConn(txn_proxy.port, timeout=15) as notifier:
        listener.startup("postgres", pool_db, password="postgres")
        notifier.startup("postgres", pool_db, password="postgres")
        got = []
        for i in range(20):
            listener.send(F.Query(f"LISTEN ch{i}").encode())
            assert listener.read_until_ready()[-1] == ("Z", b"I")
            notifier.query(f"NOTIFY ch{i}, 'p{i}'")  # while the proxy checks the listener's pins
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                msgs = listener.query("SELECT 1")
                notes = [p for t, p in msgs if t == "A"]
                if notes:
                    got.append(i)
                    break
            listener.query(f"UNLISTEN ch{i}")
        assert got == list(range(20))


# -- statements: bookkeeping on the server's answer, one server statement per client ----------------

def _p(name: str, sql: str) -> bytes:
    return F.Parse(name, sql).encode()


def _be(name: str, *params: str) -> bytes:
    return F.Bind("", name, (), tuple(p.encode() for p in params), ()).encode() + F.Execute("", 0).encode()


_S = F.Sync().encode()


def _q(sql: str) -> bytes:
    return F.Query(sql).encode()


@pytest.fixture
def raw_diff(pg, txn_proxy, pool_db):
    from tests.pooling.support import raw_differential

    return lambda clients, steps: raw_differential(pg.port, txn_proxy.port, pool_db, clients, steps)


def test_parse_that_ran_before_an_error_in_its_batch_exists(raw_diff):
    raw_diff(2, [
        (0, _p("s1", "SELECT 1/$1::int") + _be("s1", "0") + _S, 1),   # the Parse ran, the Execute failed
        (1, _q("BEGIN"), 1),                                            # hold the other connection
        (0, _p("s1", "SELECT 2") + _S, 1),                              # 42P05 on both
        (0, _be("s1", "1") + _S, 1),
        (1, _q("COMMIT"), 1),
    ])


def test_messages_after_an_error_never_happened(raw_diff):
    raw_diff(1, [
        (0, _p("n1", "SELECT 1") + _p("n2", "SELEC 2") + _p("n3", "SELECT 3") + _S, 1),
        (0, _be("n1") + _S, 1),
        (0, _be("n3") + _S, 1),                                          # 26000: n3 was never parsed
        (0, _p("n3", "SELECT 33") + _be("n3") + _S, 1),                  # and may be parsed now
        (0, _p("s2", "SELECT 5") + _S, 1),
        (0, _be("nope") + F.Close(b"S", "s2").encode() + _S, 1),         # the Close was skipped
        (0, _be("s2") + _S, 1),
    ])


def test_two_parses_of_one_name_in_a_batch(raw_diff):
    raw_diff(1, [
        (0, _p("d1", "SELECT 1") + _p("d1", "SELECT 2") + _S, 1),       # 42P05 on the second
        (0, _be("d1") + _S, 1),                                          # the first stands
    ])


def test_parse_in_an_aborted_block(raw_diff):
    raw_diff(1, [
        (0, _q("BEGIN"), 1),
        (0, _q("SELECT 1/0"), 1),
        (0, _p("ab", "SELECT 1") + _S, 1),                               # 25P02, nothing created
        (0, _q("ROLLBACK"), 1),
        (0, _be("ab") + _S, 1),                                          # 26000
        (0, _p("ab", "SELECT 2") + _be("ab") + _S, 1),
    ])


def test_same_text_after_ddl_is_each_clients_own(raw_diff):
    raw_diff(2, [
        (0, _q("CREATE TABLE IF NOT EXISTS ddl_t (a int); TRUNCATE ddl_t; INSERT INTO ddl_t VALUES (1)"), 1),
        (0, _p("q", "SELECT * FROM ddl_t") + _be("q") + _S, 1),
        (0, _q("ALTER TABLE ddl_t ADD COLUMN b text DEFAULT 'x'"), 1),
        (1, _p("q", "SELECT * FROM ddl_t") + _be("q") + _S, 1),         # its own: the new shape
        (0, _be("q") + _S, 1),                                           # 0A000 on both: its plan is older
        (0, _q("ALTER TABLE ddl_t DROP COLUMN b"), 1),
    ])


def test_same_text_with_another_search_path(raw_diff):
    raw_diff(2, [
        (0, _q("SET search_path = s1"), 1),
        (1, _q("SET search_path = s2"), 1),
        (0, _p("t", "SELECT v FROM t") + _be("t") + _S, 1),
        (1, _p("t", "SELECT v FROM t") + _be("t") + _S, 1),              # 'two', not client 0's 'one'
        (0, _be("t") + _S, 1),
        (1, _be("t") + _S, 1),
    ])


def test_sql_deallocate_of_a_protocol_statement(raw_diff):
    raw_diff(1, [
        (0, _p("ds", "SELECT 7") + _S, 1),
        (0, _q("BEGIN"), 1),
        (0, _q("SELECT 1/0"), 1),
        (0, _q("DEALLOCATE ds"), 1),                                     # 25P02: the name stays
        (0, _q("ROLLBACK"), 1),
        (0, _be("ds") + _S, 1),
        (0, _q("DEALLOCATE ds"), 1),
        (0, _be("ds") + _S, 1),                                          # 26000 now
        (0, _q("DEALLOCATE ds"), 1),                                     # 26000 from SQL too
    ])


# -- the unnamed statement follows the client -------------------------------------------------------

def test_unnamed_statement_parsed_in_an_earlier_transaction(raw_diff):
    """pg8000's pattern: Parse('')+Sync, then Describe+Sync, then Bind/Execute+Sync, each its own
    transaction, three clients on a pool of two: each client binds its own unnamed statement."""
    steps = []
    for i in range(3):
        steps.append((i, _p("", f"SELECT {i} AS client, $1::text AS v") + _S, 1))
    for i in range(3):
        steps.append((i, F.Describe(b"S", "").encode() + _S, 1))
    for round_ in range(2):
        for i in (2, 0, 1):
            steps.append((i, _be("", f"r{round_}") + _S, 1))
    raw_diff(3, steps)


def test_unnamed_statement_dropped_by_a_query(raw_diff):
    raw_diff(2, [
        (0, _p("", "SELECT 1") + _S, 1),
        (1, _q("BEGIN"), 1),
        (0, _q("SELECT 2"), 1),                                          # drops it
        (0, _be("") + _S, 1),                                            # 26000 on both
        (0, F.Describe(b"S", "").encode() + _S, 1),
        (0, _p("", "SELECT 3") + _S, 1),
        (1, _q("COMMIT"), 1),
        (0, F.Close(b"S", "").encode() + _be("") + _S, 1),               # closed: 26000
        (0, _p("", "SELEC 4") + _S, 1),                                  # a failed Parse drops it too
        (0, _be("") + _S, 1),
    ])


def test_unnamed_portal_inside_a_block(raw_diff):
    raw_diff(2, [
        (0, _q("BEGIN"), 1),
        (0, _p("", "SELECT g FROM generate_series(1, 5) g") + F.Bind("", "", (), (), ()).encode()
         + F.Execute("", 2).encode() + _S, 1),
        (1, _q("SELECT 1"), 1),
        (0, F.Execute("", 2).encode() + _S, 1),                          # the rest of the portal
        (0, F.Execute("", 0).encode() + _S, 1),
        (0, _q("COMMIT"), 1),
    ])


# -- cases the model-based test found (tests/pooling/test_model.py) ---------------------------

def test_error_of_a_message_relayed_before_a_renamed_one_comes_first(model_env):
    """An Execute of a missing portal, then a Bind of a statement the client never prepared:
    Postgres answers the Execute (34000) and skips the Bind; the proxy must not answer the Bind
    (26000) before the server has answered the Execute."""
    check_script(model_env, 2, 2, """
        0: Execute('p', 1), Execute('p', 1), Bind('', 'b', []), Sync()
        0: Parse('a', 'SELECT 1'), Bind('', 'a', []), Execute('', 0), Sync()
    """)


def test_error_relayed_before_a_flush_is_not_left_on_the_connection(model_env):
    """A failed Execute answered after Flush, then Sync: the connection's "skip until Sync" state
    ends with that Sync, so the next client's own error is its own."""
    check_script(model_env, 2, 3, """
        0: Execute('p', 1), Execute('p', 1), Bind('', 'b', []), Sync()
        0: Execute('', 1), Flush()
        0: Sync()
        2: Bind('', 'b', ['5']), Bind('p', '', ['5']), Describe('P', 'p'), Sync()
    """)


def test_batch_split_by_flush_then_a_renamed_statement(model_env):
    """Messages relayed with Flush and the rest of the batch naming a statement: the replies to
    the first part reach the client before the proxy's own work for the rest."""
    check_script(model_env, 1, 2, """
        0: Parse('', 'SELECT generate_series(1, 3) AS g'), Bind('p', '', []), Execute('p', 1), Flush()
        0: Parse('a', 'SELECT 2'), Bind('', 'a', []), Execute('', 0), Execute('p', 1), Sync()
        1: Execute('p', 0), Flush()
        1: Bind('', 'a', []), Sync()
    """)


def test_sql_prepare_and_protocol_names_share_one_namespace(model_env):
    """PREPARE of a name the client parsed gives 42P05; EXECUTE and DEALLOCATE reach it; a
    statement made with SQL PREPARE is bound and closed with protocol messages."""
    check_script(model_env, 2, 2, """
        0: Parse('a', 'SELECT * FROM m_t ORDER BY a'), Flush()
        0: Sync()
        1: Query('SET search_path = s1')
        0: Query('EXECUTE a')
        0: Query("PREPARE a AS SELECT 'sql'")
        0: Query('BEGIN')
        0: Query('SELECT 1/0')
        0: Query('DEALLOCATE a')
        0: Query('ROLLBACK')
        0: Query('EXECUTE a')
        0: Query('DEALLOCATE a')
        0: Query('EXECUTE a')
        0: Query("PREPARE b AS SELECT 'sql'")
        0: Bind('p', 'b', ['5']), Sync()
        0: Parse('b', 'SELECT 1'), Sync()
        0: Bind('', 'b', []), Execute('', 0), Close('S', 'b'), Sync()
        0: Query('EXECUTE b')
    """)


def test_execute_after_ddl_changed_the_result(model_env):
    """SQL EXECUTE of a Parse-prepared statement after DDL changed its result: 0A000, as Postgres."""
    check_script(model_env, 2, 2, """
        0: Parse('a', 'SELECT * FROM m_t ORDER BY a'), Sync()
        1: Query("ALTER TABLE m_t ADD COLUMN b text DEFAULT 'x'")
        0: Query('EXECUTE a')
        0: Query('BEGIN')
        0: Query('EXECUTE a')
        0: Query('SELECT 1')
        0: Query('ROLLBACK')
    """)


def test_bind_after_ddl_changed_the_result_fails_every_time(model_env):
    check_script(model_env, 2, 2, """
        0: Parse('a', 'SELECT * FROM m_t ORDER BY a'), Sync()
        1: Query("ALTER TABLE m_t ADD COLUMN b text DEFAULT 'x'")
        0: Bind('', 'a', []), Execute('', 0), Sync()
        0: Bind('', 'a', []), Execute('', 0), Sync()
        1: Bind('', 'a', []), Sync()
        0: Describe('S', 'a'), Sync()
    """)
