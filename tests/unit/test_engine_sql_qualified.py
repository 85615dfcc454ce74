"""Every SQL statement the engine sends names its functions and tables with their schema
(issue 16, "Privileges and secrets"): ``public.`` for IaSQL's tables and functions, ``pg_catalog.``
for built-ins, so that an object of the same name in a schema the caller (or anyone) can write
is never run in their place, whatever the ``search_path``.

A source scan: the string constants of the engine modules that are SQL statements (they start
with a statement keyword; error messages, hints and docstrings do not count) are checked for a
function call or a table reference without a schema. SQL keywords that take parentheses
(``IN (``, ``coalesce(``, ``ANY(``...) are not functions.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FILES = sorted([*ROOT.glob("engine/core/*.py"), ROOT / "engine/schema/__init__.py", ROOT / "engine/locks.py",
                ROOT / "engine/local.py", *ROOT.glob("engine/modules/*.py")])

STATEMENT = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|CREATE|DROP|ALTER|GRANT|REVOKE|COMMENT|DO|WITH)\b", re.I)
#: words followed by "(" that are SQL syntax, not function calls
SYNTAX = {"in", "exists", "any", "all", "some", "array", "values", "coalesce", "nullif", "greatest", "least",
          "and", "or", "not", "unique", "check", "key", "conflict", "table", "as", "filter", "over", "cast",
          "row", "using", "when", "then", "else", "case", "by", "select", "from", "where", "on", "is",
          "returns", "into", "set", "with", "if", "elsif", "exception", "begin", "end", "perform", "return",
          "enum"}  # CREATE TYPE ... AS ENUM (...)
#: names of messages and hints given to the user (not run), excluded from the scan
NOT_SQL_KEYWORDS = {"hint", "detail", "message", "description", "functions", "sample_usage"}
NOT_SQL_CALLS = {"EngineError", "PlanRefused", "CloudError", "progress"}


def _text(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
    return None


def sql_strings() -> list[tuple[str, int, str]]:
    """(file, line, text) of every SQL statement constant of the engine."""
    out = []
    for path in FILES:
        tree = ast.parse(path.read_text())
        skip: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                if name in NOT_SQL_CALLS:
                    skip |= {id(n) for n in ast.walk(node)}
                for kw in node.keywords:
                    if kw.arg in NOT_SQL_KEYWORDS:
                        skip |= {id(n) for n in ast.walk(kw.value)}
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)):
                if node.body and isinstance(node.body[0], ast.Expr) and _text(node.body[0].value) is not None:
                    skip.add(id(node.body[0].value))  # docstrings
        for node in ast.walk(tree):
            if id(node) in skip or isinstance(getattr(node, "parent", None), ast.JoinedStr):
                continue
            text = _text(node)
            if text is not None and STATEMENT.match(text):
                out.append((path.relative_to(ROOT).as_posix(), node.lineno, text))
    return out


def _strip(text: str, literals: bool) -> str:
    text = re.sub(r"--[^\n]*", " ", text)
    if literals:
        text = re.sub(r"'(?:[^']|'')*'", "''", text)
    return text


def unqualified_calls(text: str) -> list[str]:
    """Function names called without a schema in ``text``."""
    found = []
    for m in re.finditer(r"(?<![\w.$\"%])([A-Za-z_]\w*)\s*\(", _strip(text, literals=False)):
        if m.group(1).lower() not in SYNTAX:
            found.append(m.group(1))
    return found


def unqualified_tables(text: str) -> list[str]:
    """Relations named without a schema after FROM, JOIN, INSERT INTO, UPDATE ... SET, TABLE,
    REFERENCES in ``text`` (string literals inside the SQL left out)."""
    text = _strip(text, literals=True)
    found = []
    for pattern in (r"\b(?:FROM|JOIN)\s+([A-Za-z_]\w*)\b(?!\s*[.(])",  # FROM f(...): a function
                    r"\b(?:INSERT\s+INTO|REFERENCES)\s+([A-Za-z_]\w*)\b(?!\s*\.)",
                    r"\bUPDATE\s+([A-Za-z_]\w*)\b(?!\s*\.)\s+SET\b",
                    r"\bTABLE\s+(?:IF\s+(?:NOT\s+)?EXISTS\s+)?(?!IF\b)([A-Za-z_]\w*)\b(?!\s*\.)"):
        found += re.findall(pattern, text, re.I)
    return [name for name in found if name.lower() != "public"]  # REVOKE ... FROM PUBLIC: the role


def test_the_scan_finds_sql():
    texts = [t for _, _, t in sql_strings()]
    assert any("public.default_aws_region()" in t for t in texts)
    assert any(t.lstrip().startswith("DO $iasql_revert$") for t in texts)
    assert len(texts) > 40
    # and it would see what issue 16 found
    assert unqualified_calls("SELECT default_aws_region()") == ["default_aws_region"]
    assert unqualified_calls("SELECT count(*) FROM t WHERE x IN (1) AND coalesce(a, b)") == ["count"]
    assert unqualified_tables("SELECT 1 FROM aws_regions WHERE region IN (SELECT 1 FROM public.x)") == ["aws_regions"]
    assert unqualified_tables("UPDATE aws_regions SET a = 1") == ["aws_regions"]
    assert unqualified_tables("CREATE TABLE IF NOT EXISTS bucket (a int)") == ["bucket"]
    assert unqualified_tables("INSERT INTO iasql_module (name) VALUES ($1)") == ["iasql_module"]
    assert unqualified_tables("CREATE TABLE public.b (r varchar REFERENCES aws_regions (region))") == ["aws_regions"]


@pytest.mark.parametrize("where,line,text", sql_strings(), ids=lambda v: v if isinstance(v, str) and len(v) < 40 else "")
def test_every_engine_statement_qualifies_its_names(where, line, text):
    assert unqualified_calls(text) == [], f"{where}:{line}: unqualified function call"
    assert unqualified_tables(text) == [], f"{where}:{line}: unqualified table"


def test_no_engine_sql_calls_default_aws_region_unqualified():
    """The function of issue 16's attack 1: every call and every column default names its schema."""
    for path in FILES:
        for m in re.finditer(r"(?<![\w.])default_aws_region\s*\(", path.read_text()):
            line = path.read_text()[:m.start()].count("\n") + 1
            context = path.read_text().splitlines()[line - 1]
            # the help entries (name, signature, sample usage) and docstrings are text for users
            assert "SELECT * FROM default_aws_region" in context or '"default_aws_region' in context \
                or "``" in context, f"{path.relative_to(ROOT)}:{line}: {context.strip()}"


FUNCTION = re.compile(r"CREATE\s+(OR\s+REPLACE\s+)?FUNCTION\b", re.I)


@pytest.mark.parametrize("path,line,text", [s for s in sql_strings() if FUNCTION.match(s[2].lstrip())],
                         ids=lambda v: v if isinstance(v, str) and v.startswith("engine/") else "")
def test_every_function_the_engine_creates_fixes_its_search_path(path, line, text):
    """A function created in the user's database runs with ``search_path = pg_catalog, pg_temp``
    (a trigger or check of a module runs whenever anyone writes the table: an object planted in a
    schema on the caller's path must never be found first), and SECURITY DEFINER only with it."""
    head = text.split("$", 1)[0] if "$" in text else text
    assert re.search(r"SET\s+search_path\s*=\s*pg_catalog\s*,\s*pg_temp", head, re.I) or \
        re.search(r"LANGUAGE\s+sql\b", head, re.I) and "SECURITY DEFINER" not in head.upper(), \
        f"{path}:{line}: function without SET search_path = pg_catalog, pg_temp"
