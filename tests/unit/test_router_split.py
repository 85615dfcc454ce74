"""The splitter against PostgreSQL's own grammar: libpg_query (pglast) as the oracle, and a real
server for standard_conforming_strings = off (which libpg_query cannot be switched to)."""

from __future__ import annotations

import pglast
import pglast.parser
import psycopg
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from proxy.router import Statement, split


def pg_boundaries(sql: str) -> list[tuple[int, int]]:
    """Statement spans per libpg_query: the parser's split when the text parses, else the
    scanner's; each span trimmed to its first and last non-comment token (char offsets)."""
    try:
        slices = pglast.parser.split(sql, with_parser=True, only_slices=True)
    except pglast.parser.ParseError:
        slices = pglast.parser.split(sql, with_parser=False, only_slices=True)
    # pglast reports both slices and scanner tokens in character offsets (token end inclusive).
    tokens = [
        (t.start, t.end + 1, t.name)
        for t in pglast.parser.scan(sql)
        if t.name not in ("C_COMMENT", "SQL_COMMENT")
    ]
    spans = []
    for sl in slices:
        inside = [t for t in tokens if t[0] >= sl.start and t[1] <= sl.stop]
        while inside and inside[-1][2] == "ASCII_59":
            inside.pop()
        if inside:
            spans.append((inside[0][0], inside[-1][1]))
    return spans


def spans(sql: str, **kw) -> list[tuple[int, int]]:
    result = split(sql, **kw)
    assert result is not None, sql
    for s in result:
        assert s.text == sql[s.start : s.end]
    return [(s.start, s.end) for s in result]


TRICKY = {
    "plain": "select 1; select 2;",
    "dollar": "select $$a;b$$; select 2",
    "dollar tag": "select $fn$ ; $$ ; $fn$; select 2",
    "dollar nested tags": "create function f() returns void language plpgsql as $outer$ begin "
    "execute $inner$ select ';' $inner$; end $outer$; select 1",
    "dollar non-ascii tag": "select $é$;$é$; select 1",
    "dollar after identifier is identifier": "select a$b$c from t; select 1",
    "params are not dollar quotes": "select $1,$2; select $3+$4",
    "E string backslash quote": "select E'a\\';b'; select 2",
    "e string double backslash": "select e'\\\\'; select ';'",
    "E string continuation keeps escapes": "select E'a'\n'\\';' ; select 1",
    "continuation with comment": "select 'a' -- c;\n'b;c'; select 1",
    "standard string backslash": "select 'a\\'; select 2",
    "doubled quote": "select 'it''s;'; select 2",
    "national string": "select N'x;y'; select 2",
    "unicode string": "select U&'d\\0061t;' uescape '!'; select 2",
    "bit strings": "select B'101', X'1F'; select 2",
    "quoted identifier": 'select 1 as "a;""b"; select 2',
    "unicode identifier": 'select 1 as U&"a;b"; select 2',
    "nested comments": "select /* a /* b ; */ c ; */ 1; select 2",
    "dash comment": "select 1 -- ; not a boundary\n; select 2 -- trailing",
    "comment inside operator": "select 1 +-- c;\n 2; select 3 */* ; */ 4",
    "rule action": "create rule r as on insert to t do also (insert into u values (1); "
    "delete from v); select 1",
    "rule action instead": "create rule r as on update to t do instead (select 1; select 2;); select 3",
    "begin atomic": "create function f() returns int language sql begin atomic select 1; "
    "select case when true then 1 else 2 end; end; select 3",
    "begin atomic nested case": "CREATE OR REPLACE FUNCTION f(x int) RETURNS int LANGUAGE sql "
    "BEGIN ATOMIC SELECT CASE WHEN x > 0 THEN CASE x WHEN 1 THEN 1 END END; "
    "SELECT (CASE WHEN true THEN 2 END); END; SELECT 4",
    "begin atomic procedure": "create procedure p() begin atomic insert into t values (1); end; select 1",
    "begin atomic comment between": "create function f() returns int begin /* x */ atomic select 1; end;"
    " select 2",
    "transaction begin end": "begin; select 1; end; commit",
    "begin as column": "select begin from t; select 1",
    "empty statements": " ;; ; select 1 /* c */ ; -- d\n ; ",
    "only comments": "/* a */ -- b\n",
    "empty": "",
    "do block": "do $$ begin perform 1; end $$; select 1",
    "commands": "explain select ';'; reset all; vacuum; lock table t; select 1",
    "semicolon in brackets of call": "select f(1, (select 2)); select 3",
    "no trailing semicolon": "select 1",
    "non-ascii": "select 'é;€'; select 'ü'",
    "json operators": "select '{}'::jsonb #>> '{a}', 1 @> 2; select '?' ? 'a'",
    "crlf": "select 1\r\n;\r\nselect 2 --x\r\n;",
    "numbers": "select 1.5e3, .5, 1e-3, 0x1F, 1_000; select 1",
    "typecast and array": "select x::text[], arr[1:2] from t; select 1",
}


@pytest.mark.parametrize("sql", TRICKY.values(), ids=TRICKY.keys())
def test_tricky_inputs_match_libpg_query(sql):
    assert spans(sql) == pg_boundaries(sql)


def test_statement_is_original_text():
    sql = "  SELECT  'a'  /* x */ ;\n\tselect\n2 -- y\n"
    result = split(sql)
    assert result == [Statement(2, 13, "SELECT  'a'"), Statement(26, 34, "select\n2")]


def test_begin_atomic_psql_heuristic_only_in_create_routine():
    # "begin atomic" as column and alias outside CREATE FUNCTION does not open a body.
    sql = "select begin atomic from t; select 1"
    assert spans(sql) == pg_boundaries(sql) == [(0, 26), (28, 36)]


UNLEXABLE = [
    "select 'unterminated",
    "select 1 /* unterminated",
    "select 1 /* nested /* */",
    "select $tag$ unterminated $$",
    'select "unterminated',
    "select E'a\\'",
]


@pytest.mark.parametrize("sql", UNLEXABLE)
def test_unlexable_text_gives_none(sql):
    assert split(sql) is None
    with pytest.raises(pglast.parser.ParseError):
        pglast.parser.split(sql, with_parser=False)


# --- standard_conforming_strings = off -------------------------------------------------------

SCS_OFF = [
    ("select 'a\\';b'; select 2", ["select 'a\\';b'", "select 2"]),
    ("select 'a\\\\'; select ';'", ["select 'a\\\\'", "select ';'"]),
    ("select N'x\\';'; select 2", ["select N'x\\';'", "select 2"]),
    ("select 'a'\n'\\';'; select 2", ["select 'a'\n'\\';'", "select 2"]),
    ("select $$\\$$; select 'x'", ["select $$\\$$", "select 'x'"]),
    ('select "a\\"; select 2', ['select "a\\"', "select 2"]),
]


@pytest.mark.parametrize("sql,expected", SCS_OFF)
def test_scs_off(sql, expected):
    result = split(sql, standard_conforming_strings=False)
    assert [s.text for s in result] == expected


def test_scs_off_unicode_string_is_an_error():
    assert split("select U&'x'", standard_conforming_strings=False) is None
    assert split("select U&'x'") is not None


# --- hypothesis: generated statement mixes against libpg_query ------------------------------

TEXT = st.text(alphabet=st.sampled_from(list("ab;'\"$\\/*-\n éE()t")), max_size=10)


@st.composite
def literal(draw):
    s = draw(TEXT)
    kind = draw(st.sampled_from(["std", "e", "dollar", "num", "sub", "cont"]))
    if kind == "std":
        return "'" + s.replace("'", "''") + "'"
    if kind == "e":
        return "E'" + s.replace("\\", "\\\\").replace("'", draw(st.sampled_from(["\\'", "''"]))) + "'"
    if kind == "dollar":
        tag = draw(st.sampled_from(["", "t", "_x1", "é"]))
        assume(f"${tag}$" not in s + "$" and not s.endswith("$"))
        return f"${tag}${s}${tag}$"
    if kind == "cont":
        return "E'a'\n" + "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if kind == "sub":
        return "(select 1)"
    return draw(st.sampled_from(["1", "2.5", "$1", "-3"]))


@st.composite
def gap(draw):
    """Whitespace, possibly with comments containing anything."""
    parts = []
    for _ in range(draw(st.integers(0, 2))):
        s = draw(TEXT)
        kind = draw(st.sampled_from(["sp", "nl", "dash", "block", "nested"]))
        if kind == "sp":
            parts.append(" ")
        elif kind == "nl":
            parts.append("\n")
        elif kind == "dash":
            parts.append(" --" + s.replace("\n", " ").replace("\r", " ") + "\n")
        elif kind == "block":
            parts.append(" /*" + s.replace("*", "").replace("/", "") + "*/ ")
        else:
            parts.append(" /* x /*" + s.replace("*", "").replace("/", "") + "*/ y */ ")
    return "".join(parts) or " "


@st.composite
def statement(draw):
    g = draw(gap())
    kind = draw(st.sampled_from(["select", "select", "alias", "rule", "atomic", "do", "empty"]))
    if kind == "select":
        return f"select{g}{draw(literal())}{draw(gap())}"
    if kind == "alias":
        name = draw(TEXT.filter(lambda s: s and len(s.encode()) < 60))
        return f"select {draw(literal())} as{g}\"{name.replace(chr(34), chr(34) * 2)}\""
    if kind == "rule":
        return f"create rule r as on insert to t do also (select {draw(literal())};{g}select 1;)"
    if kind == "atomic":
        return (
            "create or replace function f() returns int language sql begin atomic"
            f"{g}select {draw(literal())}; select case when true then 1 end;{draw(gap())}end"
        )
    if kind == "do":
        body = draw(literal().filter(lambda lit: lit[0] in "'$E"))
        return f"do{g}{body}"
    return g


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(st.lists(statement(), min_size=1, max_size=5), st.lists(st.sampled_from([";", " ;", ";\n", ";;"]), min_size=5, max_size=5), st.booleans())
def test_generated_mixes_match_libpg_query(stmts, seps, trailing):
    sql = "".join(s + sep for s, sep in zip(stmts, seps))
    if not trailing:
        sql = sql.rstrip(";\n ")
    try:  # the generator aims at valid SQL; the parser's split is the oracle
        pglast.parser.split(sql, with_parser=True)
    except pglast.parser.ParseError:
        assume(False)
    assert spans(sql) == pg_boundaries(sql)


# --- real server: standard_conforming_strings = off ------------------------------------------


@st.composite
def scs_off_literal(draw):
    s = draw(st.text(alphabet=st.sampled_from(list("ab;'\\\n é$")), max_size=8))
    quote = draw(st.sampled_from(["''", "\\'"]))
    return "'" + s.replace("\\", "\\\\").replace("'", quote) + "'", s


@pytest.fixture(scope="module")
def scs_off_conn(pg):
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute("SET standard_conforming_strings = off")
        conn.execute("SET escape_string_warning = off")
        yield conn


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(scs_off_literal(), min_size=1, max_size=4), st.lists(st.sampled_from(["; ", ";\n-- ;\n", "; /*;*/ "]), min_size=4, max_size=4))
def test_scs_off_against_server(scs_off_conn, literals, seps):
    sql = "".join(f"select {k} as n, {lit} as v{sep}" for k, ((lit, _), sep) in enumerate(zip(literals, seps)))
    result = split(sql, standard_conforming_strings=False)
    assert result is not None
    assert len(result) == len(literals)
    cur = scs_off_conn.cursor()
    cur.execute(sql)
    batch = []
    while True:
        batch.extend(cur.fetchall())
        if not cur.nextset():
            break
    assert batch == [(k, value) for k, (_, value) in enumerate(literals)]
    for k, stmt in enumerate(result):
        assert scs_off_conn.execute(stmt.text).fetchall() == [batch[k]]
