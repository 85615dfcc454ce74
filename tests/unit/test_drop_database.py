"""``proxy.router.drop_database.dropped_database``: which database a text's DROP DATABASE drops
(PostgreSQL's DropdbStmt: DROP DATABASE [IF EXISTS] name [[WITH] (options)])."""

from __future__ import annotations

import pytest

from proxy.router.drop_database import MAX_TEXT, dropped_database


@pytest.mark.parametrize("text,name", [
    ("DROP DATABASE x", "x"),
    ("  drop   database   Sales;", "sales"),                  # unquoted names fold to lower case
    ('DROP DATABASE "Sales Db"', "Sales Db"),                 # quoted: verbatim
    ('DROP DATABASE "a""b"', 'a"b'),
    ("DROP DATABASE IF EXISTS x WITH (FORCE)", "x"),
    ("drop database if exists x (force)", "x"),
    ("DROP /* c */ DATABASE -- c\n x", "x"),                   # comments between words
    ('DROP DATABASE U&"d\\0061t\\+000061"', "data"),
    ("DROP DATABASE if", "if"),                               # IF is an unreserved keyword
    ("DROP TABLE x", None),
    ("DROP DATABASE", None),
    ("DROP DATABASE IF EXISTS", None),
    ("DROP DATABASE 'x'", None),                              # a string is not a name (syntax error)
    ("DROP DATABASE $$x", None),                              # cannot be lexed
    ("SELECT 1; DROP DATABASE x", None),                      # only at the start
    ("", None),
])
def test_dropped_database(text, name):
    assert dropped_database(text) == name


def test_a_name_cut_off_by_the_lexed_prefix_is_not_guessed():
    long_name = "d" * (MAX_TEXT + 10)
    assert dropped_database(f"DROP DATABASE {long_name}") is None
    assert dropped_database("DROP DATABASE x; " + "-" * MAX_TEXT) == "x"
