"""Session-state analysis (analyze, STATEFUL_HINT): a table of texts with the expected effects,
a cross-check of SET/RESET parameter names against libpg_query (pglast), and hypothesis
properties (never raises; the byte pre-check has no false negatives)."""

from __future__ import annotations


import pglast
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.router import STATEFUL_HINT, StateEffects, analyze, split
from proxy.router.session_state import may_change_state

G = frozenset

# id -> (sql, the fields of StateEffects that are not empty; every other field must be empty)
CASES: dict[str, tuple[str, dict]] = {
    # --- SET ------------------------------------------------------------------------------------
    "set to": ("SET search_path TO a, b", {"gucs": G({"search_path"})}),
    "set equals": ("set statement_timeout = 5000", {"gucs": G({"statement_timeout"})}),
    "set mixed case": ("SeT StateMent_TimeOut tO '1s'", {"gucs": G({"statement_timeout"})}),
    "set session": ("SET SESSION application_name = 'x'", {"gucs": G({"application_name"})}),
    "set default": ("SET DateStyle TO DEFAULT", {"gucs": G({"datestyle"})}),
    "set from current": ("SET work_mem FROM CURRENT", {"gucs": G({"work_mem"})}),
    "set quoted name": ('SET "search_path" TO x', {"gucs": G({"search_path"})}),
    "set quoted mixed case": ('SET "Search_Path" TO x', {"gucs": G({"search_path"})}),
    "set custom": ("SET myapp.x = 1", {"gucs": G({"myapp.x"})}),
    "set custom quoted": ('SET "MyApp"."User" = 1', {"gucs": G({"myapp.user"})}),
    "set local": ("SET LOCAL search_path TO a", {}),
    "set local session authorization": ("SET LOCAL SESSION AUTHORIZATION bob", {}),
    "set transaction": ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", {}),
    "set transaction snapshot": ("SET TRANSACTION SNAPSHOT '00000003-0000001B-1'", {}),
    "set constraints": ("SET CONSTRAINTS ALL DEFERRED", {}),
    "set role": ("SET ROLE admin", {"gucs": G({"role"})}),
    "set role none": ("set role none", {"gucs": G({"role"})}),
    "set session role": ("SET SESSION ROLE admin", {"gucs": G({"role"})}),
    "set session authorization": ("SET SESSION AUTHORIZATION bob", {"gucs": G({"session_authorization", "role"})}),
    "set session session authorization": (
        "SET SESSION SESSION AUTHORIZATION DEFAULT",
        {"gucs": G({"session_authorization", "role"})},
    ),
    "set time zone": ("SET TIME ZONE 'UTC'", {"gucs": G({"timezone"})}),
    "set timezone": ("SET timezone = 'UTC'", {"gucs": G({"timezone"})}),
    "set names": ("SET NAMES 'LATIN1'", {"gucs": G({"client_encoding"})}),
    "set schema": ("SET SCHEMA 'app'", {"gucs": G({"search_path"})}),
    "set xml option": ("SET XML OPTION DOCUMENT", {"gucs": G({"xmloption"})}),
    "set session characteristics": (
        "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY",
        {"gucs": G({"default_transaction_isolation", "default_transaction_read_only"})},
    ),
    "parameter named local": ("SET local = 1", {"gucs": G({"local"})}),
    "parameter named session": ("set session to 1", {"gucs": G({"session"})}),
    "set local of parameter named local": ("SET LOCAL local = 1", {}),
    "set unreadable": ("SET", {"unknown_gucs_possible": True}),
    # --- RESET / DISCARD ------------------------------------------------------------------------
    "reset": ("RESET statement_timeout", {"gucs": G({"statement_timeout"})}),
    "reset role": ("RESET ROLE", {"gucs": G({"role"})}),
    "reset time zone": ("reset time zone", {"gucs": G({"timezone"})}),
    "reset session authorization": ("RESET SESSION AUTHORIZATION", {"gucs": G({"session_authorization", "role"})}),
    "reset transaction isolation": ("RESET TRANSACTION ISOLATION LEVEL", {}),
    "reset all": ("RESET ALL", {"reset_all": True}),
    "discard all": ("DISCARD ALL", {"reset_all": True, "discard_all": True, "unpins": ("DISCARD ALL",)}),
    "discard temp": ("discard temporary", {"unpins": ("DISCARD TEMP",)}),
    "discard plans": ("DISCARD PLANS", {}),
    # --- set_config ----------------------------------------------------------------------------
    "set_config false": ("SELECT set_config('Search_Path', 'a', false)", {"gucs": G({"search_path"})}),
    "set_config true": ("SELECT set_config('search_path', 'a', true)", {}),
    "set_config string true": ("SELECT set_config('search_path', 'a', 'on')", {}),
    "set_config qualified cast": (
        "select pg_catalog.set_config('myapp.user'::text, $1, false)",
        {"gucs": G({"myapp.user"})},
    ),
    "set_config param name": ("SELECT set_config($1, $2, false)", {"unknown_gucs_possible": True}),
    "set_config expression flag": ("SELECT set_config('work_mem', '1MB', $3)", {"gucs": G({"work_mem"})}),
    "set_config other schema": ("SELECT myschema.set_config('work_mem', '1MB', false)", {}),
    "set_config E string name": ("SELECT set_config(E'work\\x5fmem', '1MB', false)", {"gucs": G({"work_mem"})}),
    "set_config nested": (
        "SELECT count(*) FROM (SELECT set_config('a.b', f(1, 2), false)) s",
        {"gucs": G({"a.b"})},
    ),
    # --- keywords that are not statements ------------------------------------------------------
    "in string": ("SELECT 'SET search_path TO x; LISTEN c; pg_advisory_lock(1)'", {}),
    "in comment": ("SELECT 1 -- SET x = 1\n /* RESET ALL; LISTEN c */", {}),
    "in dollar body": ("SELECT $$ set_config('a', 'b', false) $$", {}),
    "in quoted identifier": ('SELECT "set_config"  FROM "LISTEN"', {}),
    "DO body": ("DO $$BEGIN SET search_path TO x; PERFORM pg_advisory_lock(1); END$$", {}),
    "begin atomic": (
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END",
        {},
    ),
    "alter role set": ("ALTER ROLE bob SET search_path TO x", {}),
    "update set": ("UPDATE t SET reset = 1, listen = 2", {}),
    "insert into temp table named temp": ("INSERT INTO temp SELECT 1", {}),
    # --- pins and unpins ------------------------------------------------------------------------
    "prepare": ("PREPARE S1 (int) AS SELECT $1", {"pins": ("PREPARE s1",), "statement_name": ("prepare", "s1", 8, 10)}),
    "prepare transaction": ("PREPARE TRANSACTION 'gid'", {}),
    "deallocate": ("DEALLOCATE s1", {"unpins": ("DEALLOCATE s1",), "deallocate": ("s1",),
                                     "statement_name": ("deallocate", "s1", 11, 13)}),
    "deallocate prepare quoted": ('DEALLOCATE PREPARE "S1"', {"unpins": ("DEALLOCATE S1",), "deallocate": ("S1",),
                                                              "statement_name": ("deallocate", "S1", 19, 23)}),
    "uescape identifier": ("""SET U&"search!005Fpath" UESCAPE '!' = s1""", {"gucs": G({"search_path"})}),
    "uescape listen": ("""LISTEN U&"c!0068" uescape  '!'""", {"pins": ("LISTEN ch",)}),
    "execute": ("  execute Q1 (1, 'x')", {"statement_name": ("execute", "q1", 10, 12)}),
    "execute in a longer text": ("SELECT 1; EXECUTE q1", {}),
    "explain execute": ("EXPLAIN EXECUTE q1", {}),
    "deallocate all": ("deallocate prepare all", {"unpins": ("DEALLOCATE ALL",), "deallocate": ("*",)}),
    "listen": ("LISTEN Ch", {"pins": ("LISTEN ch",)}),
    "unlisten star": ("UNLISTEN *", {"unpins": ("UNLISTEN *",)}),
    "unlisten": ("UNLISTEN ch", {"unpins": ("UNLISTEN ch",)}),
    "create temp table": ("CREATE TEMP TABLE t (a int)", {"pins": ("CREATE TEMP TABLE t",)}),
    "create local temporary table": (
        "create local temporary table if not exists s.T (a int) on commit preserve rows",
        {"pins": ("CREATE TEMP TABLE s.t",)},
    ),
    "create temp table on commit drop": ("CREATE TEMP TABLE t (a int) ON COMMIT DROP", {}),
    "create temp table as": ("CREATE TEMP TABLE t AS SELECT 1", {"pins": ("CREATE TEMP TABLE t",)}),
    "create temp view": ("CREATE OR REPLACE TEMP VIEW v AS SELECT 1", {"pins": ("CREATE TEMP VIEW v",)}),
    "create temp sequence": ("CREATE TEMPORARY SEQUENCE q", {"pins": ("CREATE TEMP SEQUENCE q",)}),
    "create table in pg_temp": ("CREATE TABLE pg_temp.t (a int)", {"pins": ("CREATE pg_temp.t",)}),
    "create table": ("CREATE TABLE t (a int)", {}),
    "select into temp": ("SELECT 1 AS a INTO TEMP TABLE t", {"pins": ("SELECT INTO TEMP t",)}),
    "explain analyze create temp": (
        "EXPLAIN ANALYZE CREATE TEMP TABLE t AS SELECT 1",
        {"pins": ("CREATE TEMP TABLE t",)},
    ),
    "declare with hold": (
        "DECLARE c NO SCROLL CURSOR WITH HOLD FOR SELECT 1",
        {"pins": ("DECLARE c CURSOR WITH HOLD",)},
    ),
    "declare without hold": ("DECLARE c CURSOR WITHOUT HOLD FOR SELECT 1", {}),
    "declare plain": ("DECLARE c CURSOR FOR SELECT 1", {}),
    "close": ("CLOSE c", {"unpins": ("CLOSE c",)}),
    "close all": ("CLOSE ALL", {"unpins": ("CLOSE ALL",)}),
    "advisory lock": ("SELECT pg_advisory_lock(42)", {"pins": ("pg_advisory_lock",)}),
    "try advisory lock shared": (
        "SELECT PG_TRY_ADVISORY_LOCK_SHARED(1, 2)",
        {"pins": ("pg_try_advisory_lock_shared",)},
    ),
    "xact advisory lock": ("SELECT pg_advisory_xact_lock(42)", {}),
    "advisory unlock all": ("SELECT pg_catalog.pg_advisory_unlock_all()", {"unpins": ("pg_advisory_unlock_all",)}),
    "load": ("LOAD 'auto_explain'", {"pins": ("LOAD",)}),
    # --- blocks ---------------------------------------------------------------------------------
    "begin": ("BEGIN", {"begins_block": True}),
    "begin isolation": ("begin isolation level serializable", {"begins_block": True}),
    "start transaction": ("START TRANSACTION READ ONLY", {"begins_block": True}),
    "commit": ("COMMIT", {}),
    # --- several statements ---------------------------------------------------------------------
    "multi": (
        "BEGIN; SET LOCAL a.b = 1; SET search_path = x; LISTEN ch; SELECT ';SET c = 1'; COMMIT",
        {"gucs": G({"search_path"}), "pins": ("LISTEN ch",), "begins_block": True},
    ),
    "multi reset and prepare": (
        "RESET ALL; prepare a as select 1; deallocate a; prepare a as select 2",
        {"reset_all": True, "pins": ("PREPARE a",), "unpins": ("DEALLOCATE a",), "deallocate": ("a",)},
    ),
    # --- unreadable -----------------------------------------------------------------------------
    "unterminated string": ("SET search_path = 'x", {"unknown_gucs_possible": True}),
    "empty": ("", {}),
}


@pytest.mark.parametrize("sql,fields", CASES.values(), ids=CASES.keys())
def test_analyze(sql, fields):
    result = analyze(sql)
    assert result == StateEffects(**fields)
    if any(getattr(result, f) for f in fields):
        assert STATEFUL_HINT.search(sql.encode())
        assert may_change_state(sql.encode())


def test_standard_conforming_strings_off():
    # With the setting off, the backslash escapes the quote: the whole tail is one string.
    sql = "SELECT 'a\\'; SET search_path = x; SELECT 1 --'"
    assert analyze(sql, standard_conforming_strings=False) == StateEffects()
    assert analyze(sql).gucs == {"search_path"}


def test_hint_u_and_identifier():
    # A U&"" identifier can spell set_config with escapes; the pre-check must still match.
    sql = 'SELECT U&"\\0073et_config"(\'work_mem\', \'1MB\', false)'
    assert analyze(sql).gucs == {"work_mem"}
    assert STATEFUL_HINT.search(sql.encode())
    assert may_change_state(sql.encode())


@pytest.mark.parametrize(
    "sql",
    [sql for sql, _ in CASES.values() if sql.split()[:1] and sql.split()[0].lower() in ("set", "reset")],
)
def test_set_names_agree_with_libpg_query(sql):
    """For texts that libpg_query parses as one session-level VariableSetStmt with a parameter
    name, analyze reports exactly that name (lower-cased)."""
    try:
        stmts = pglast.parse_sql(sql)
    except pglast.parser.ParseError:
        return
    node = stmts[0].stmt
    if not isinstance(node, pglast.ast.VariableSetStmt) or node.is_local or not node.name:
        return
    if node.name.upper() in ("TRANSACTION", "SESSION CHARACTERISTICS", "TRANSACTION SNAPSHOT"):
        return
    if node.name == "transaction_isolation":
        return
    assert node.name.lower() in analyze(sql).gucs


# Fragments with no unterminated quote: see test_unterminated_quote_is_linear for why texts with
# an unterminated quote are kept short below.
FRAGMENTS = [
    "SET", "set", "LOCAL", "SESSION", "search_path", "TO", "=", "'x'", "RESET", "ALL", "DISCARD",
    "TEMP", "PREPARE", "DEALLOCATE", "LISTEN", "UNLISTEN", "*", "DECLARE", "CURSOR", "WITH", "HOLD",
    "CLOSE", "BEGIN", "START", "TRANSACTION", "LOAD", "CREATE", "TABLE", "t", "SELECT", "INTO",
    "set_config", "pg_catalog", ".", "pg_advisory_lock", "pg_advisory_unlock_all", "(", ")", ",",
    "false", "true", "$1", ";", "$$", "$$ SET x = 1 $$", "--", "\n", "/*", "*/", '"q"', '"Set_Config"',
    "E'\\''", "U&", 'U&"\\0073et_config"', "ROLE", "AUTHORIZATION", "TIME", "ZONE", "pg_temp",
    "explain", "analyze", "DO",
]
QUOTES = ["'", '"', "E'", "x"]


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.text(max_size=200),
        st.lists(st.sampled_from(FRAGMENTS), max_size=16).map(" ".join),
        st.lists(st.sampled_from(FRAGMENTS), max_size=16).map("".join),
        st.lists(st.sampled_from(FRAGMENTS + QUOTES), max_size=16).map(" ".join),
    ),
    st.booleans(),
)
def test_never_raises_and_hint_has_no_false_negatives(sql, scs):
    result = analyze(sql, standard_conforming_strings=scs)
    assert isinstance(result, StateEffects)
    lexable = split(sql, standard_conforming_strings=scs) is not None
    if not lexable:
        assert result == StateEffects(unknown_gucs_possible=True)
        return
    nonempty = any(
        (result.gucs, result.reset_all, result.discard_all, result.pins, result.unpins,
         result.deallocate, result.begins_block, result.unknown_gucs_possible)
    )
    if nonempty:
        raw = sql.encode("utf-8", "surrogatepass")
        assert STATEFUL_HINT.search(raw), (sql, result)
        assert may_change_state(raw), (sql, result)
        # as the fast path calls it: the text inside a Query message (type, length, text, NUL)
        framed = b"Q\0\0\0\0" + raw + b"\0"
        assert may_change_state(framed, 5, len(framed) - 1), (sql, result)


@pytest.mark.parametrize("sql", [
    "SELECT abalance FROM pgbench_accounts WHERE aid = 1;",
    "select 1",
    "UPDATE t SET a = 1 WHERE id = 2",   # SET not at a statement start
    "INSERT INTO offsets VALUES (1)",
    "SELECT 1;  \n",
])
def test_may_change_state_lets_ordinary_statements_pass(sql):
    """The pre-check lets through the texts the fast path sees most (no ``analyze`` needed)."""
    assert analyze(sql) == StateEffects()
    assert not may_change_state(sql.encode())


@pytest.mark.parametrize("sql", [
    "  set search_path = x", "SELECT 1; SET x.y = 1", "/* c */ SET a = 1", "-- c\nLISTEN ch",
    "select pg_catalog.set_config('a', 'b', false)", "SELECT pg_advisory_lock(1)",
    "CREATE TEMP TABLE t (a int)", "SELECT 1 INTO TEMPORARY t", "CREATE TABLE pg_temp.t (a int)",
    'SELECT U&"\\0073et_config"(\'a\', \'b\', false)', "begin", "START TRANSACTION", "load 'x'",
    "DECLARE c CURSOR WITH HOLD FOR SELECT 1", "close c", "prepare p as select 1", "DEALLOCATE p",
    "discard all", "reset all", "unlisten *", "EXPLAIN (ANALYZE) DECLARE c CURSOR WITH HOLD FOR SELECT 1",
])
def test_may_change_state_catches_state(sql):
    assert may_change_state(sql.encode())


@pytest.mark.timeout(20)
@pytest.mark.parametrize("opener", ["'", '"', "E'"])
def test_unterminated_quote_does_not_hang(opener):
    # exponential backtracking here once let a 40-byte text stall the proxy for minutes
    sql = "SELECT " + opener + "a" * 5000
    assert analyze(sql) == StateEffects(unknown_gucs_possible=True)
