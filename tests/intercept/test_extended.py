"""Contract point 9 (extended protocol): Parse/Bind/Execute of a statement calling iasql_* is
answered by the proxy, for psycopg 3, asyncpg, pg8000, psycopg2 (simple Query with client-side
parameters), pgJDBC (named statements after prepareThreshold), and raw pipelines with an error
("discard until Sync") followed by recovery."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import asyncpg
import pg8000.native
import psycopg
import psycopg2
import pytest
from psycopg import errors as pe

from tests.intercept.conftest import PASSWORD, row_description
from tests.intercept.helpers import VERSION_RE, data_rows, errors_in
from proxy.wire import frontend as F

pytestmark = pytest.mark.timeout(90)

DEPS = ["iasql_platform@0.1.0", "iasql_functions@0.1.0", "aws_account@0.1.0"]


# -- psycopg 3 ---------------------------------------------------------------------------------

def test_psycopg_with_and_without_params(connect):
    conn = connect()
    cur = conn.execute("SELECT * FROM iasql_version()", prepare=False)
    [(version,)] = cur.fetchall()
    assert re.match(VERSION_RE, version) and cur.description[0].name == "version"
    cur = conn.execute("SELECT module_name, dependencies FROM iasql_modules_list() WHERE module_name = %s", ["aws_s3"])
    assert cur.fetchall() == [("aws_s3", DEPS)]
    # binary parameters and binary results
    cur = conn.cursor(binary=True)
    cur.execute("SELECT module_name, module_version FROM iasql_modules_list() WHERE module_name = %b", ["aws_iam"])
    assert cur.fetchall() == [("aws_iam", version)]
    # a parameter that is an argument of the call, another in WHERE (a read-only call goes anywhere)
    cur = conn.execute("SELECT count(*) FROM iasql_modules_installed() WHERE module_name = %s", ["x"])
    assert cur.fetchall() == [(0,)]
    cur = conn.execute("SELECT count(*) FROM iasql_install(%s) AS i", ["aws_account"])
    assert cur.fetchall() == [(2,)]
    # ordinary parameterised statements keep working on the same connection
    assert conn.execute("SELECT %s::int + 1", [41]).fetchone() == (42,)


def test_psycopg_prepared_five_times(connect):
    conn = connect()
    for i in range(5):
        cur = conn.execute("SELECT module_name FROM iasql_modules_list() WHERE module_name = %s",
                           ["aws_s3" if i % 2 else "aws_iam"], prepare=True)
        assert cur.fetchall() == [("aws_s3" if i % 2 else "aws_iam",)], i
    for i in range(5):
        cur = conn.execute("SELECT * FROM iasql_version()", prepare=True)
        assert re.match(VERSION_RE, cur.fetchone()[0]), i
    # the prepared statements really were server-side ones
    names = conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0]
    assert names >= 2


def test_psycopg_error_then_recovery(connect):
    conn = connect()
    with pytest.raises(pe.UndefinedObject) as ei:
        conn.execute("SELECT * FROM iasql_install(%s)", ["no_such_module"])
    assert "no_such_module" in ei.value.diag.message_primary
    assert conn.execute("SELECT * FROM iasql_version()").fetchone()
    assert conn.execute("SELECT 42").fetchone() == (42,)
    # in a pipeline: the error aborts the rest up to the Sync, the next sync works
    with conn.pipeline() as p:
        c1 = conn.cursor()
        c1.execute("SELECT * FROM iasql_install(%s)", ["no_such_module"])
        c2 = conn.cursor()
        try:
            c2.execute("SELECT %s::int", [1])
        except pe.UndefinedObject:
            # psycopg read the error reply already while sending c2 (it does the same talking
            # to Postgres when the reply is that quick): the Sync is still owed
            with contextlib.suppress(pe.PipelineAborted):
                p.sync()
        else:
            with pytest.raises(pe.UndefinedObject):
                p.sync()
        with pytest.raises(psycopg.ProgrammingError, match="no result available"):
            c2.fetchall()  # discarded by the server side (psycopg says the same talking to Postgres)
        c3 = conn.execute("SELECT module_name FROM iasql_modules_list() WHERE module_name = %s", ["aws_s3"])
        c4 = conn.execute("SELECT %s::int * 2", [21])
        p.sync()
        assert c3.fetchall() == [("aws_s3",)] and c4.fetchall() == [(42,)]


# -- raw pipeline ------------------------------------------------------------------------------

def _ext(sql: str, params: tuple = (), name: str = "") -> bytes:
    return (F.Parse(name, sql, ()).encode() + F.Bind("", name, (), tuple(p.encode() for p in params), ()).encode()
            + F.Describe(b"P", "").encode() + F.Execute("", 0).encode())


def test_raw_pipeline_discard_until_sync(raw):
    conn = raw()
    conn.send(_ext("SELECT 1 AS a") + _ext("SELECT * FROM iasql_install($1)", ("no_such_module",))
              + _ext("SELECT 2 AS b") + F.Sync().encode()
              + _ext("SELECT module_name FROM iasql_modules_list() WHERE module_name = $1", ("aws_s3",))
              + _ext("SELECT 3 AS c") + F.Sync().encode())
    first = conn.read_until_ready()
    second = conn.read_until_ready()
    # batch 1: SELECT 1 complete, then the call's Parse/Bind answered, its Execute fails; SELECT 2 discarded
    assert "".join(t for t, _ in first) == "12TDC" + "12T" + "E" + "Z", first
    assert data_rows(first) == [["1"]]
    [err] = errors_in(first)
    assert err.sqlstate == "42704"
    assert first[-1] == ("Z", b"I")
    assert "".join(t for t, _ in second) == "12TDC12TDCZ", second
    assert data_rows(second) == [["aws_s3"], ["3"]]
    [(_, rd)] = [m for m in second if m[0] == "T"][:1]
    assert row_description(rd) == [("module_name", 1043)]
    # a named statement reused across syncs, with Describe of the statement
    conn.send(F.Parse("s1", "SELECT module_version FROM iasql_modules_list() WHERE module_name = $1", ()).encode()
              + F.Describe(b"S", "s1").encode() + F.Sync().encode())
    msgs = conn.read_until_ready()
    assert "".join(t for t, _ in msgs) == "1tTZ"
    for mod in ("aws_s3", "aws_iam", "nope", "aws_account"):
        conn.send(F.Bind("", "s1", (), (mod.encode(),), ()).encode() + F.Execute("", 0).encode() + F.Sync().encode())
        msgs = conn.read_until_ready()
        assert errors_in(msgs) == [] and len(data_rows(msgs)) == (0 if mod == "nope" else 1), (mod, msgs)


# -- asyncpg -------------------------------------------------------------------------------------

def test_asyncpg(iasql_proxy, fresh_db):
    async def main():
        conn = await asyncpg.connect(host="127.0.0.1", port=iasql_proxy.port, user="postgres", password=PASSWORD,
                                     database=fresh_db, ssl=False)
        try:
            [rec] = await conn.fetch("SELECT * FROM iasql_version()")
            assert re.match(VERSION_RE, rec["version"])
            # $1 in the call: installs aws_iam (and its dependency)
            rows = await conn.fetch("SELECT module_name, created_table_name, record_count FROM iasql_install($1)",
                                    "aws_iam")
            rows = [r for r in rows if r["module_name"] == "aws_iam@0.1.0"]
            assert [(r["module_name"], r["created_table_name"]) for r in rows] == [
                ("aws_iam@0.1.0", "iam_user"), ("aws_iam@0.1.0", "access_key"), ("aws_iam@0.1.0", "iam_role")]
            # the next statement sees the table the call created, with the rows it loaded from the cloud
            assert await conn.fetchval("SELECT count(*) FROM iam_role") == rows[2]["record_count"]
            stmt = await conn.prepare("SELECT module_name, dependencies FROM iasql_modules_list() WHERE module_name = $1")
            for i in range(5):
                mod = ["aws_s3", "aws_iam", "aws_account", "aws_s3", "nope"][i]
                got = await stmt.fetch(mod)
                assert [r["module_name"] for r in got] == ([] if mod == "nope" else [mod]), i
            assert json.loads((await stmt.fetchrow("aws_s3"))["dependencies"]) == DEPS
            assert await conn.fetchval("SELECT iasql_version()") is not None
            with pytest.raises(asyncpg.PostgresError) as ei:
                await conn.fetch("SELECT * FROM iasql_install($1)", "no_such_module")
            assert ei.value.sqlstate == "42704"
            assert await conn.fetchval("SELECT $1::int + 1", 41) == 42
        finally:
            await conn.close()

    asyncio.run(main())


# -- pg8000, psycopg2 ----------------------------------------------------------------------------

def test_pg8000(iasql_proxy, db):
    conn = pg8000.native.Connection("postgres", host="127.0.0.1", port=iasql_proxy.port, password=PASSWORD,
                                    database=db)
    try:
        [[version]] = conn.run("SELECT * FROM iasql_version()")
        assert re.match(VERSION_RE, version)
        rows = conn.run("SELECT module_name, dependencies FROM iasql_modules_list() WHERE module_name = :m", m="aws_s3")
        assert rows == [["aws_s3", DEPS]]
        with pytest.raises(pg8000.native.DatabaseError) as ei:
            conn.run("SELECT * FROM iasql_install(:m)", m="no_such_module")
        assert ei.value.args[0]["C"] == "42704"
        assert conn.run("SELECT :x::int * 2", x=21) == [[42]]
    finally:
        conn.close()


def test_psycopg2_client_side_params(iasql_proxy, db):
    conn = psycopg2.connect(host="127.0.0.1", port=iasql_proxy.port, user="postgres", password=PASSWORD,
                            dbname=db, sslmode="disable")
    try:
        conn.autocommit = True
        cur = conn.cursor()
        cur.execute("SELECT module_name, module_version FROM iasql_modules_list() WHERE module_name = %s", ("aws_s3",))
        assert [r[0] for r in cur.fetchall()] == ["aws_s3"]
        cur.execute("SELECT * FROM iasql_version()")
        assert re.match(VERSION_RE, cur.fetchone()[0])
        # psycopg2's default is a transaction: the call runs in it like any function
        conn.autocommit = False
        cur.execute("SELECT * FROM iasql_version()")
        assert re.match(VERSION_RE, cur.fetchone()[0])
        cur.execute("SELECT module_name FROM iasql_modules_installed() ORDER BY 1")
        assert {"iasql_functions", "iasql_platform"} <= {r[0] for r in cur.fetchall()}
        assert conn.get_transaction_status() == psycopg2.extensions.TRANSACTION_STATUS_INTRANS
        conn.rollback()
    finally:
        conn.close()


# -- pgJDBC ----------------------------------------------------------------------------------------

def test_pgjdbc(iasql_proxy, db, jdbc_jar, tmp_path):
    src = Path(__file__).parent / "java" / "IasqlJdbc.java"
    res = subprocess.run([shutil.which("javac"), "-d", str(tmp_path), "-cp", str(jdbc_jar), str(src)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    url = f"jdbc:postgresql://127.0.0.1:{iasql_proxy.port}/{db}?sslmode=disable&prepareThreshold=5"
    res = subprocess.run([shutil.which("java"), "-cp", f"{jdbc_jar}:{tmp_path}", "IasqlJdbc", url, "postgres",
                          PASSWORD], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    runs = [ln for ln in lines if ln.startswith("run")]
    deps = json.dumps(DEPS).replace(" ", "")
    expected = []
    for i in range(1, 7):
        mod = "aws_s3" if i % 2 else "aws_iam"
        expected.append(f"run{i}|module_name={mod}|module_version=0.1.0|dependencies=")
    assert [r.rsplit("=", 1)[0] + "=" for r in runs] == expected, res.stdout
    assert all(json.loads(r.rsplit("=", 1)[1]) == DEPS for r in runs), (runs, deps)
    [named] = [ln for ln in lines if ln.startswith("named|")]
    assert int(named.split("|")[1]) >= 1, res.stdout  # the threshold really switched to a named statement
    [version] = [ln for ln in lines if ln.startswith("version|")]
    assert re.match(VERSION_RE, version.split("|")[1])
    [err] = [ln for ln in lines if ln.startswith("ERR|")]
    assert err.startswith("ERR|42704|") and "no_such_module" in err
    assert "after|42" in lines
