"""Real clients through the proxy with ``sslmode=verify-full`` against certs/ca.crt.

psql (subprocess), psycopg 3, asyncpg and pg8000 each run: a multi-statement simple query, an
extended query with parameters, COPY in and out, LISTEN/NOTIFY with the notification sent from
another connection, an error in the middle of a batch (the rest is skipped, the next query works)
and the cancel of ``pg_sleep(10)`` (SQLSTATE 57014, quickly). All as role ``alice``, whose secret
the proxy gets from ``auth_query`` (SCRAM pass-through: the proxy never sees her password).
"""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import signal
import ssl
import subprocess
import threading
import time

import asyncpg
import pg8000.native
import psycopg
import pytest

from tests.support.faults import CA_FILE, cancel_request

pytestmark = pytest.mark.timeout(60)

USER = "alice"
PSQL = shutil.which("psql")


@pytest.fixture(scope="module")
def direct(pg):
    """An autocommit psycopg connection straight to Postgres as the superuser (to NOTIFY, to watch)."""
    with psycopg.connect(pg.dsn(), autocommit=True, connect_timeout=5) as conn:
        yield conn


@pytest.fixture(scope="module")
def password(pg_roles):
    return pg_roles[USER]


def wait_active(direct: psycopg.Connection, like: str, timeout: float = 5.0) -> int:
    """Wait until a backend of USER runs a query matching ``like``; return its pid."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = direct.execute("SELECT pid FROM pg_stat_activity WHERE usename = %s AND state = 'active' "
                             "AND query LIKE %s", (USER, like)).fetchone()
        if row:
            return row[0]
        time.sleep(0.02)
    raise AssertionError(f"no active backend running {like!r} within {timeout} s")


def ssl_ctx() -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(CA_FILE))  # verifies the chain and the host name


# ---------------------------------------------------------------------------------------------
# psql
# ---------------------------------------------------------------------------------------------

@pytest.mark.skipif(PSQL is None, reason="psql not installed")
class TestPsql:
    def run(self, proxy, password, *args, input: str | None = None, timeout: float = 20):
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["PGCONNECT_TIMEOUT"] = "5"
        return subprocess.run([PSQL, proxy.dsn(user=USER, password=password, sslmode="verify-full"),
                               "-X", "-q", "-At", "-v", "VERBOSITY=verbose", *args],
                              input=input, capture_output=True, text=True, timeout=timeout, env=env)

    def test_tls_and_multi_statement(self, scram_proxy, password):
        res = self.run(scram_proxy, password, "-c", "select 1; select 2", "-c", r"\conninfo")
        assert res.returncode == 0, res.stderr
        lines = res.stdout.splitlines()
        assert lines[:2] == ["1", "2"]
        assert 'as user "alice"' in lines[2] and "SSL connection (protocol: TLSv1." in res.stdout

    def test_prepared_statement_with_parameters(self, scram_proxy, password):
        # psql 15 has no \bind; PREPARE/EXECUTE is the server-side parameterised path it offers.
        res = self.run(scram_proxy, password, "-c",
                       "PREPARE q(int, text) AS SELECT $1 * 2, upper($2); EXECUTE q(21, 'abc')")
        assert res.returncode == 0, res.stderr
        assert res.stdout.splitlines() == ["42|ABC"]

    def test_copy_in_and_out(self, scram_proxy, password):
        res = self.run(scram_proxy, password,
                       "-c", "CREATE TEMP TABLE t(a int, b text)",
                       "-c", "COPY t FROM STDIN",
                       "-c", "SELECT count(*), sum(a) FROM t",
                       "-c", "COPY (SELECT b FROM t ORDER BY a DESC) TO STDOUT",
                       input="1\tone\n2\ttwo\n3\tthree\n\\.\n")
        assert res.returncode == 0, res.stderr
        assert res.stdout.splitlines() == ["3|6", "three", "two", "one"]

    def test_listen_notify(self, scram_proxy, password, direct):
        proc = subprocess.Popen([PSQL, scram_proxy.dsn(user=USER, password=password, sslmode="verify-full"),
                                 "-X", "-q", "-At"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            proc.stdin.write("LISTEN psql_ch;\nselect pg_sleep(1.5);\nselect 'after';\n")
            proc.stdin.close()
            wait_active(direct, "select pg_sleep(1.5)%")
            direct.execute("NOTIFY psql_ch, 'from-another-connection'")
            proc.wait(timeout=15)
            out, err = proc.stdout.read(), proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, err
        assert ('Asynchronous notification "psql_ch" with payload "from-another-connection" received '
                'from server process with PID') in out
        assert out.rstrip().endswith("after")

    def test_error_in_the_middle_of_a_batch(self, scram_proxy, password):
        res = self.run(scram_proxy, password,
                       "-c", "CREATE TEMP SEQUENCE s",
                       "-c", "SELECT 1; SELECT 1/0; SELECT nextval('s')",
                       "-c", "SELECT nextval('s')")
        assert "ERROR:  22012: division by zero" in res.stderr
        # "1" from the first statement, then "1" from the last -c: the nextval after the error never ran
        assert res.stdout.splitlines() == ["1", "1"]

    def test_cancel_pg_sleep(self, scram_proxy, password, direct):
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        proc = subprocess.Popen([PSQL, scram_proxy.dsn(user=USER, password=password, sslmode="verify-full"),
                                 "-X", "-q", "-At", "-v", "VERBOSITY=verbose", "-c", "select pg_sleep(10)"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            wait_active(direct, "select pg_sleep(10)")
            start = time.monotonic()
            proc.send_signal(signal.SIGINT)  # psql sends a CancelRequest
            out, err = proc.communicate(timeout=8)
            elapsed = time.monotonic() - start
        finally:
            if proc.poll() is None:
                proc.kill()
        assert "ERROR:  57014: canceling statement due to user request" in err
        assert elapsed < 5


# ---------------------------------------------------------------------------------------------
# psycopg 3 (libpq)
# ---------------------------------------------------------------------------------------------

class TestPsycopg:
    @pytest.fixture
    def conn(self, scram_proxy, password):
        with psycopg.connect(scram_proxy.dsn(user=USER, password=password, sslmode="verify-full"),
                             autocommit=True, connect_timeout=5) as conn:
            yield conn

    def test_tls_and_multi_statement(self, conn):
        assert conn.pgconn.ssl_in_use
        assert conn.info.parameter_status("server_version")
        cur = conn.execute("select 1; select 2")
        assert cur.fetchall() == [(1,)]
        assert cur.nextset()
        assert cur.fetchall() == [(2,)]
        assert not cur.nextset()

    def test_extended_query_with_parameters(self, conn):
        assert conn.execute("select %s::int + %s::int, upper(%s)", (40, 2, "abc")).fetchone() == (42, "ABC")
        for i in range(3):  # prepared (named statement) after the first execution
            assert conn.execute("select %s::int * 10", (i,), prepare=True).fetchone() == (i * 10,)
        assert conn.execute("select %s::text is null", (None,)).fetchone() == (True,)

    def test_pipeline_mode(self, conn):
        conn.execute("create temp table pipe(a int)")
        with conn.pipeline():
            conn.cursor().executemany("insert into pipe values (%s)", [(i,) for i in range(50)])
            cur = conn.execute("select count(*), sum(a) from pipe")
        assert cur.fetchone() == (50, sum(range(50)))

    def test_copy_in_and_out(self, conn):
        conn.execute("create temp table t(a int, b text)")
        with conn.cursor().copy("COPY t FROM STDIN") as copy:
            for row in [(1, "one"), (2, "two"), (3, None)]:
                copy.write_row(row)
        assert conn.execute("select count(*), sum(a), count(b) from t").fetchone() == (3, 6, 2)
        out = io.BytesIO()
        with conn.cursor().copy("COPY (select a, b from t order by a) TO STDOUT") as copy:
            for chunk in copy:
                out.write(chunk)
        assert out.getvalue() == b"1\tone\n2\ttwo\n3\t\\N\n"

    def test_listen_notify(self, conn, direct):
        conn.execute("LISTEN psycopg_ch")
        direct.execute("NOTIFY psycopg_ch, 'hello from direct'")
        got = list(conn.notifies(timeout=5, stop_after=1))
        assert [(n.channel, n.payload) for n in got] == [("psycopg_ch", "hello from direct")]
        # the pid is that of the sending backend, as Postgres reports it
        assert got[0].pid == direct.info.backend_pid

    def test_error_in_the_middle_of_a_batch(self, conn):
        conn.execute("create temp sequence s")
        with pytest.raises(psycopg.errors.DivisionByZero) as exc:
            conn.execute("select 1; select 1/0; select nextval('s')")
        assert exc.value.sqlstate == "22012"
        assert conn.execute("select nextval('s')").fetchone() == (1,)

    def test_error_inside_transaction_then_rollback(self, conn):
        conn.autocommit = False
        with pytest.raises(psycopg.errors.UndefinedTable):
            conn.execute("select * from no_such_table")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("select 1")
        conn.rollback()
        assert conn.execute("select 7").fetchone() == (7,)
        conn.rollback()

    @pytest.mark.parametrize("how", ["cancel", "cancel_safe"])
    def test_cancel_pg_sleep(self, conn, how):
        timer = threading.Timer(0.5, getattr(conn, how))
        timer.start()
        start = time.monotonic()
        try:
            with pytest.raises(psycopg.errors.QueryCanceled) as exc:
                conn.execute("select pg_sleep(10)")
        finally:
            timer.cancel()
        assert exc.value.sqlstate == "57014"
        assert time.monotonic() - start < 5
        assert conn.execute("select 'still usable'").fetchone() == ("still usable",)


# ---------------------------------------------------------------------------------------------
# asyncpg
# ---------------------------------------------------------------------------------------------

class TestAsyncpg:
    @pytest.fixture
    async def conn(self, scram_proxy, password):
        conn = await asyncpg.connect(host="localhost", port=scram_proxy.port, user=USER, password=password,
                                     database="postgres", ssl=ssl_ctx(), timeout=5)
        try:
            yield conn
        finally:
            await asyncio.wait_for(conn.close(), 5)

    async def test_tls_and_multi_statement(self, conn):
        assert conn._protocol.get_settings().server_version
        assert conn.get_server_version().major >= 15
        assert conn._transport.get_extra_info("ssl_object").version().startswith("TLSv1.")
        status = await conn.execute("create temp table m(a int); insert into m values (1); insert into m values (2)")
        assert status == "INSERT 0 1"
        assert [r["a"] for r in await conn.fetch("select a from m order by a")] == [1, 2]

    async def test_extended_query_with_parameters(self, conn):
        assert await conn.fetchval("select $1::int + $2::int", 40, 2) == 42
        row = await conn.fetchrow("select $1::text || '!' as t, $2::numeric * 2 as n, $3::int[] as arr",
                                  "hi", 1.25, [1, 2])
        assert (row["t"], float(row["n"]), row["arr"]) == ("hi!", 2.5, [1, 2])
        stmt = await conn.prepare("select $1::int * 3")
        assert [await stmt.fetchval(i) for i in range(3)] == [0, 3, 6]

    async def test_copy_in_and_out(self, conn):
        await conn.execute("create temp table t(a int, b text)")
        res = await conn.copy_records_to_table("t", records=[(1, "one"), (2, "two"), (3, "three")])
        assert res == "COPY 3"
        assert await conn.fetchval("select sum(a) from t") == 6
        out = io.BytesIO()
        res = await conn.copy_from_query("select a, b from t order by a", output=out, format="csv")
        assert res == "COPY 3"
        assert out.getvalue() == b"1,one\n2,two\n3,three\n"

    async def test_listen_notify(self, conn, direct):
        got: asyncio.Future = asyncio.get_running_loop().create_future()
        await conn.add_listener("asyncpg_ch", lambda c, pid, channel, payload: got.done() or
                                got.set_result((pid, channel, payload)))
        await asyncio.to_thread(direct.execute, "NOTIFY asyncpg_ch, 'hello asyncpg'")
        pid, channel, payload = await asyncio.wait_for(got, 5)
        assert (channel, payload) == ("asyncpg_ch", "hello asyncpg")
        assert pid == direct.info.backend_pid

    async def test_error_in_the_middle_of_a_batch(self, conn):
        await conn.execute("create temp sequence s")
        with pytest.raises(asyncpg.exceptions.DivisionByZeroError) as exc:
            await conn.execute("select 1; select 1/0; select nextval('s')")
        assert exc.value.sqlstate == "22012"
        assert await conn.fetchval("select nextval('s')") == 1

    async def test_cancel_pg_sleep(self, conn, scram_proxy):
        # asyncpg has no public cancel(); send the CancelRequest with the key the proxy gave it.
        pid, secret = conn._protocol.backend_pid, conn._protocol.backend_secret
        if isinstance(secret, (bytes, bytearray)):
            secret = int.from_bytes(secret, "big", signed=True)
        task = asyncio.ensure_future(conn.fetchval("select pg_sleep(10)"))
        await asyncio.sleep(0.5)
        start = time.monotonic()
        await asyncio.to_thread(cancel_request, scram_proxy.port, pid, secret)
        with pytest.raises(asyncpg.exceptions.QueryCanceledError) as exc:
            await asyncio.wait_for(task, 5)
        assert exc.value.sqlstate == "57014"
        assert time.monotonic() - start < 5
        assert await conn.fetchval("select 5") == 5

    async def test_timeout_cancels_server_side(self, conn):
        with pytest.raises(asyncio.TimeoutError):
            await conn.fetchval("select pg_sleep(10)", timeout=0.5)
        start = time.monotonic()
        assert await conn.fetchval("select 1", timeout=5) == 1  # would wait ~10 s if not cancelled
        assert time.monotonic() - start < 3


# ---------------------------------------------------------------------------------------------
# pg8000 (pure Python)
# ---------------------------------------------------------------------------------------------

class TestPg8000:
    @pytest.fixture
    def conn(self, scram_proxy, password):
        conn = pg8000.native.Connection(USER, host="localhost", port=scram_proxy.port, password=password,
                                        database="postgres", ssl_context=ssl_ctx(), timeout=15)
        try:
            yield conn
        finally:
            conn.close()

    def test_tls_and_multi_statement(self, conn, pg):
        assert isinstance(conn._usock, ssl.SSLSocket)
        through = conn.run("select 1; select 2")
        direct = pg8000.native.Connection("postgres", host="127.0.0.1", port=pg.port, password=pg.password,
                                          database="postgres", timeout=15)
        try:
            assert through == direct.run("select 1; select 2")
        finally:
            direct.close()
        assert through[-1] == [2]

    def test_extended_query_with_parameters(self, conn):
        assert conn.run("select cast(:a as int) + cast(:b as int)", a=40, b=2) == [[42]]
        assert conn.run("select upper(:s), cast(:n as int) is null", s="abc", n=None) == [["ABC", True]]

    def test_copy_in_and_out(self, conn):
        conn.run("create temp table t(a int, b text)")
        conn.run("COPY t FROM STDIN", stream=io.BytesIO(b"1\tone\n2\ttwo\n"))
        assert conn.row_count == 2
        assert conn.run("select count(*), sum(a) from t") == [[2, 2 + 1]]
        out = io.BytesIO()
        conn.run("COPY (select b from t order by a) TO STDOUT", stream=out)
        assert out.getvalue() == b"one\ntwo\n"

    def test_listen_notify(self, conn, direct):
        conn.run("LISTEN pg8000_ch")
        direct.execute("NOTIFY pg8000_ch, 'hello pg8000'")
        deadline = time.monotonic() + 5
        while not conn.notifications and time.monotonic() < deadline:
            conn.run("select pg_sleep(0.05)")
        assert list(conn.notifications) == [(direct.info.backend_pid, "pg8000_ch", "hello pg8000")]

    def test_error_in_the_middle_of_a_batch(self, conn):
        conn.run("create temp sequence s")
        with pytest.raises(pg8000.native.DatabaseError) as exc:
            conn.run("select 1; select 1/0; select nextval('s')")
        assert exc.value.args[0]["C"] == "22012"
        assert conn.run("select nextval('s')") == [[1]]

    def test_cancel_pg_sleep(self, conn, scram_proxy):
        key = conn._backend_key_data
        pid, secret = int.from_bytes(key[:4], "big"), int.from_bytes(key[4:8], "big", signed=True)
        timer = threading.Timer(0.5, cancel_request, (scram_proxy.port, pid, secret))
        timer.start()
        start = time.monotonic()
        try:
            with pytest.raises(pg8000.native.DatabaseError) as exc:
                conn.run("select pg_sleep(10)")
        finally:
            timer.cancel()
        assert exc.value.args[0]["C"] == "57014"
        assert time.monotonic() - start < 5
        assert conn.run("select 3") == [[3]]


# ---------------------------------------------------------------------------------------------
# cancel routing and bulk data
# ---------------------------------------------------------------------------------------------

def test_cancel_reaches_only_the_right_client(scram_proxy, password):
    a = psycopg.connect(scram_proxy.dsn(user=USER, password=password, sslmode="verify-full"), autocommit=True)
    b = psycopg.connect(scram_proxy.dsn(user=USER, password=password, sslmode="verify-full"), autocommit=True)
    outcome: dict = {}

    def run(name, conn, seconds):
        try:
            outcome[name] = conn.execute(f"select pg_sleep({seconds}), 'done'").fetchone()[1]
        except psycopg.Error as e:
            outcome[name] = e.sqlstate

    try:
        ta = threading.Thread(target=run, args=("a", a, 10))
        tb = threading.Thread(target=run, args=("b", b, 1.5))
        ta.start()
        tb.start()
        time.sleep(0.4)
        # an unknown key is ignored silently, as Postgres does
        cancel_request(scram_proxy.port, 12345, 67890)
        cancel_request(scram_proxy.port, a.info.backend_pid, 0)
        a.cancel_safe()
        ta.join(5)
        tb.join(5)
        assert outcome == {"a": "57014", "b": "done"}
    finally:
        a.close()
        b.close()


def test_large_copy_both_ways(scram_proxy, password):
    rows = 200_000
    line = b"%d\t" + b"p" * 90 + b"\n"
    with psycopg.connect(scram_proxy.dsn(user=USER, password=password, sslmode="verify-full"),
                         autocommit=True) as conn:
        conn.execute("create temp table big(a int, b text)")
        with conn.cursor().copy("COPY big FROM STDIN") as copy:
            for start in range(0, rows, 10_000):
                copy.write(b"".join(line % i for i in range(start, start + 10_000)))
        assert conn.execute("select count(*), sum(a) from big").fetchone() == (rows, rows * (rows - 1) // 2)
        total = 0
        digest = __import__("hashlib").md5()
        with conn.cursor().copy("COPY (select * from big order by a) TO STDOUT") as copy:
            for chunk in copy:
                total += len(chunk)
                digest.update(chunk)
        expected = __import__("hashlib").md5(b"".join(line % i for i in range(rows))).hexdigest()
        assert (total, digest.hexdigest()) == (rows * (len(line) - 2) + sum(len(str(i)) for i in range(rows)),
                                               expected)
