"""The fuzz campaign: input generator, good clients, batch checks (see ``tests/fuzz/__init__.py``).

Everything is deterministic for a seed except timing: input ``i`` of batch ``b`` is generated from
``Random(f"{seed}:{b}:{i}")``, so a failing batch can be replayed with ``--seed`` and
``--first-batch``. Every socket operation has a timeout, so no input can hang the campaign.
"""

from __future__ import annotations

import json
import os
import random
import socket
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

from proxy.wire import frontend as F
from proxy.wire.backend import RowDescription
from tests.support.faults import RawConn, data_rows, error_fields

#: Frontend message types Postgres reads after login, and a few it does not.
VALID_TYPES = "QPBEDCSHFdcfX"
UNKNOWN_TYPES = b"kp\x00\x81\xffAZ"
#: What SHOW POOLS must say of the fuzzed pool between batches (sv_idle may be anything).
IDLE = {"cl_active": 0, "cl_waiting": 0, "sv_active": 0, "sv_tested": 0, "sv_login": 0}
QUERIES = [
    "SELECT 1", "BEGIN", "COMMIT", "ROLLBACK", "SET work_mem = '3MB'", "SET ROLE fuzz_role", "RESET ALL",
    "SELECT pg_sleep(0.01)", "PREPARE fz AS SELECT 1", "EXECUTE fz", "DEALLOCATE ALL", "LISTEN fz",
    "NOTIFY fz, 'x'", "UNLISTEN *", "COPY fuzz_t FROM STDIN", "COPY fuzz_t TO STDOUT", "SELECT 1/0",
    "SELECT * FROM iasql_version()", "DISCARD ALL", "CREATE TEMP TABLE IF NOT EXISTS tt(x int)",
    "SELECT pg_advisory_lock(7)", "SELECT pg_advisory_unlock_all()", "SELECT set_config('work_mem', '5MB', false)",
    "BEGIN; SELECT 1; COMMIT", "SELECT 1; SELECT 2", "DECLARE c CURSOR WITH HOLD FOR SELECT 1", "CLOSE ALL",
    "INSERT INTO fuzz_t VALUES ('x')", "SELECT iasql_nope()", "",
]
PARSE_TEXTS = ["SELECT $1::int", "SELECT 1", "SELECT $1::text, $2::int", "BEGIN", "SET work_mem = '4MB'",
               "SELECT * FROM iasql_version()", "SELEC"]
NAMES = [b"", b"s1", b"s2", b"nope", b"iasqlp_1_0000000000000000"]


def _frame(t: bytes, body: bytes, length: int | None = None) -> bytes:
    return t + struct.pack("!i", len(body) + 4 if length is None else length) + body


def _cstr(b: bytes | str) -> bytes:
    return (b.encode() if isinstance(b, str) else b) + b"\0"


class Generator:
    """Builds one fuzz input: what a client sends (in writes) and how it leaves."""

    def __init__(self, rng: random.Random):
        self.rng = rng

    def valid_body(self, t: str) -> bytes:
        """A well-formed payload for type ``t``."""
        r = self.rng
        if t == "Q":
            return _cstr(r.choice(QUERIES))
        if t == "P":
            text = r.choice(PARSE_TEXTS)
            types = r.choice([(), (23,), (25, 23)])
            return _cstr(r.choice(NAMES)) + _cstr(text) + struct.pack("!H", len(types)) + b"".join(
                struct.pack("!I", x) for x in types)
        if t == "B":
            params = r.choice([(), (b"1",), (b"a", b"2")])
            body = _cstr(b"") + _cstr(r.choice(NAMES)) + struct.pack("!H", 0) + struct.pack("!H", len(params))
            body += b"".join(struct.pack("!i", len(p)) + p for p in params)
            return body + struct.pack("!H", 0)
        if t == "E":
            return _cstr(b"") + struct.pack("!i", r.choice([0, 1]))
        if t in "DC":
            return r.choice([b"S", b"P"]) + _cstr(r.choice(NAMES))
        if t == "F":
            return struct.pack("!IhhH", r.choice([89, 1, 0]), 0, 0, 0)
        if t == "d":
            return r.choice([b"1\n", b"x", b"\\.\n", bytes(r.getrandbits(8) for _ in range(r.randint(0, 40)))])
        if t == "f":
            return _cstr("fuzz")
        return b""  # S, H, c, X

    def message(self) -> bytes:
        """One message: valid, or malformed in one of the ways Postgres judges."""
        r = self.rng
        roll = r.random()
        if roll < 0.04:  # an unknown type byte
            t = bytes((r.choice(UNKNOWN_TYPES),))
            return _frame(t, bytes(r.getrandbits(8) for _ in range(r.randint(0, 8))))
        t = r.choice(VALID_TYPES)
        body = self.valid_body(t)
        if roll < 0.45:
            return _frame(t.encode(), body)
        kind = r.choice(["empty", "truncated", "overlong", "garbage", "length", "small-long", "huge"])
        if kind == "empty":
            return _frame(t.encode(), b"")
        if kind == "truncated":
            return _frame(t.encode(), body[:r.randint(0, max(0, len(body) - 1))])
        if kind == "overlong":
            return _frame(t.encode(), body + bytes(r.getrandbits(8) for _ in range(r.randint(1, 6))))
        if kind == "garbage":
            return _frame(t.encode(), bytes(r.getrandbits(8) for _ in range(r.randint(1, 48))))
        if kind == "length":  # a lying length word: short, negative, or longer than what follows
            return _frame(t.encode(), body, r.choice([-1, 0, 3, len(body) + 4 + r.randint(1, 64),
                                                      max(0, len(body) + 4 - r.randint(1, 4))]))
        if kind == "small-long":  # a type Postgres limits to 10,000 bytes declaring more
            return _frame(b"S", b"\0" * 10001)
        # huge: a declared length above max_packet_size, or a long message that is whole
        if r.random() < 0.5:
            return _frame(t.encode(), b"", 0x7FFFFFF0)
        return _frame(b"Q", _cstr("SELECT length('" + "x" * r.randint(20000, 300000) + "')"))

    def startup(self) -> bytes | None:
        """Garbage instead of a start-up packet (5% of inputs), else None (a normal login)."""
        r = self.rng
        if r.random() >= 0.05:
            return None
        return r.choice([b"", b"\0", struct.pack("!ii", 8, 0x00020000), struct.pack("!i", 0x7FFFFFFF),
                         F.SSLRequest().encode() + b"\x16garbage",
                         bytes(r.getrandbits(8) for _ in range(r.randint(1, 80)))])

    def input(self) -> FuzzInput:
        """A whole input: start-up, the messages cut into writes, and the way out."""
        r = self.rng
        msgs = [self.message() for _ in range(r.randint(1, 6))]
        data = b"".join(msgs)
        if r.random() < 0.25 and len(data) > 1:  # vanish in the middle of a message
            data = data[:r.randint(1, len(data) - 1)]
        cuts = sorted(r.sample(range(1, len(data)), min(len(data) - 1, r.randint(0, 2)))) if len(data) > 1 else []
        writes = [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]
        ending = r.choice(["close", "rst", "half-close", "terminate", "vanish", "close"])
        return FuzzInput(self.startup(), writes, ending, r.uniform(0.0, 0.15))


@dataclass
class FuzzInput:
    """One client's input: a start-up packet instead of a login (None: log in), the bytes it
    writes (one write each), how it leaves ("close", "rst", "half-close", "terminate",
    "vanish") and how long it reads replies before that (seconds)."""

    startup: bytes | None
    writes: list[bytes]
    ending: str
    linger: float


def run_input(port: int, dbname: str, inp: FuzzInput) -> int:
    """Play one input against the proxy (never raises for what the proxy does). Returns the
    client's local TCP port (0 when it could not connect): SHOW CLIENTS names a leaked client by it."""
    try:
        conn = RawConn(port, timeout=5)
    except OSError:
        return 0
    local = conn.sock.getsockname()[1]
    try:
        if inp.startup is not None:
            conn.send(inp.startup)
        else:
            conn.startup("postgres", dbname, password="postgres")
        for w in inp.writes:
            conn.send(w)
            time.sleep(0.002)
        if inp.ending == "vanish":
            return
        if inp.ending == "terminate":
            conn.send(F.Terminate().encode())
        if inp.ending == "half-close":
            conn.sock.shutdown(socket.SHUT_WR)
        conn.sock.settimeout(inp.linger if inp.ending != "half-close" else 2.0)
        deadline = time.monotonic() + (2.0 if inp.ending == "half-close" else inp.linger)
        while time.monotonic() < deadline and conn.sock.recv(65536):
            pass
    except Exception:  # noqa: BLE001, S110 - what the proxy did to this client is checked by the batch
        pass
    finally:
        if inp.ending == "rst":
            try:
                conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        conn.close()
    return local


class GoodClient(threading.Thread):
    """A client that runs queries whose answers it knows, until stopped: simple Queries, extended
    batches with its own named statement, and transaction blocks. Each answer must be exactly its
    own (its number and sequence, the default work_mem, role postgres, no notification)."""

    def __init__(self, port: int, dbname: str, cid: int):
        super().__init__(daemon=True)
        self.port, self.dbname, self.cid = port, dbname, cid
        self.stop = threading.Event()
        self.queries = 0
        self.wrong: list[str] = []
        self.errors: list[str] = []

    def _check(self, msgs, seq: int, how: str) -> None:
        for t, p in msgs:
            if t == "E":
                self.errors.append(f"{how}: {error_fields(p).sqlstate} {error_fields(p).message}")
                return
            if t == "A":
                self.wrong.append(f"{how}: a notification for another client: {p!r}")
        rows = data_rows(msgs)
        if rows != [[str(self.cid), str(seq), "4MB", "postgres"]]:
            self.wrong.append(f"{how}: client {self.cid} seq {seq} got {rows!r} ({''.join(t for t, _ in msgs)})")

    def run(self) -> None:
        """Log in, prepare the client's statement, then query until ``stop`` is set."""
        sql = "SELECT {c}, {s}, current_setting('work_mem'), current_user::text"
        try:
            conn = RawConn(self.port, timeout=30)
            conn.startup("postgres", self.dbname, password="postgres")
            stmt = f"g{self.cid}"
            conn.send(F.Parse(stmt, "SELECT $1::int, $2::int, current_setting('work_mem'), current_user::text",
                              (23, 23)).encode() + F.Sync().encode())
            conn.read_until_ready()
            seq = 0
            while not self.stop.is_set():
                seq += 1
                kind = seq % 3
                if kind == 0:
                    msgs = conn.query(sql.format(c=self.cid, s=seq))
                elif kind == 1:
                    conn.send(F.Bind("", stmt, (0, 0), (str(self.cid).encode(), str(seq).encode()), ()).encode()
                              + F.Execute("", 0).encode() + F.Sync().encode())
                    msgs = conn.read_until_ready()
                else:
                    msgs = conn.query("BEGIN; " + sql.format(c=self.cid, s=seq) + "; COMMIT")
                self._check(msgs, seq, ("simple", "extended", "block")[kind])
                self.queries += 1
            conn.terminate()
        except Exception as e:  # noqa: BLE001 - reported, judged by the batch
            self.errors.append(f"connection: {e!r}")


def show_pools(port: int, dbname: str) -> dict[str, int]:
    """The SHOW POOLS row of ``dbname``/postgres, numbers as ints (zeros when the pool is unknown)."""
    with RawConn(port, timeout=10) as c:
        c.startup("postgres", "iasql_proxy", password="postgres")
        got = c.query("SHOW POOLS")
    names = [f.name for f in RowDescription.decode(next(p for t, p in got if t == "T")).fields]
    for row in data_rows(got):
        rec = dict(zip(names, row))
        if rec["database"] == dbname and rec["user"] == "postgres":
            return {k: int(v) for k, v in rec.items() if v is not None and v.lstrip("-").isdigit()}
    return {k: 0 for k in IDLE}


def rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` in MiB (/proc/PID/status)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Result:
    """What a campaign found (``last_run.json``)."""

    seed: int
    inputs: int = 0
    batches: int = 0
    seconds: float = 0.0
    crashes: int = 0              # the proxy process exited
    tracebacks: int = 0           # "Traceback" in the proxy's log
    leaks: int = 0                # batches after which SHOW POOLS did not return to idle
    fresh_client_failures: int = 0
    cross_client: int = 0         # good-client answers that were not their own
    good_queries: int = 0
    good_errors: int = 0          # good-client errors (e.g. query_wait_timeout), not wrong answers
    max_rss_mib: float = 0.0
    rss_limit_mib: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No crash, traceback, leak, failed fresh client, wrong answer or memory over the limit."""
        return not (self.crashes or self.tracebacks or self.leaks or self.fresh_client_failures
                    or self.cross_client or self.max_rss_mib > self.rss_limit_mib)

    def to_json(self) -> str:
        """The result as JSON (with ``ok``; at most 50 problems)."""
        d = asdict(self)
        d["ok"] = self.ok
        d["problems"] = self.problems[:50]
        return json.dumps(d, indent=2)


class Campaign:
    """Runs batches of generated inputs against a running proxy (``port``, its process ``pid`` and
    ``log`` callable) for database ``dbname``."""

    def __init__(self, port: int, pid: int, log, dbname: str, seed: int, batch_size: int = 100,
                 workers: int = 8, good_clients: int = 3, rss_headroom_mib: float = 256.0, restart=None):
        self.port, self.pid, self.log, self.dbname = port, pid, log, dbname
        #: ``restart()`` -> (port, pid, log) of a fresh proxy, called after a batch that left the
        #: pool stuck or a fresh client unanswered (the long campaign goes on finding other
        #: problems; the problem and its batch are recorded), or None (stop counting on)
        self.restart = restart
        self.batch_size, self.workers, self.good = batch_size, workers, good_clients
        self.result = Result(seed=seed)
        self.rss_headroom = rss_headroom_mib
        self.log_seen = len(log())
        self._by_port: dict[int, FuzzInput] = {}

    def _problem(self, what: str) -> None:
        self.result.problems.append(f"batch {self.result.batches}: {what}")

    def batch(self, index: int, count: int) -> None:
        """Run ``count`` inputs of batch ``index`` with good clients alongside, then check."""
        res = self.result
        gen_inputs = [Generator(random.Random(f"{res.seed}:{index}:{i}")).input() for i in range(count)]
        good = [GoodClient(self.port, self.dbname, 1000 * index + g + 1) for g in range(self.good)]
        for g in good:
            g.start()
        with ThreadPoolExecutor(self.workers) as pool:
            ports = list(pool.map(lambda inp: run_input(self.port, self.dbname, inp), gen_inputs))
        self._by_port = {p: inp for p, inp in zip(ports, gen_inputs) if p}
        for g in good:
            g.stop.set()
        for g in good:
            g.join(60)
            res.good_queries += g.queries
            res.good_errors += len(g.errors)
            res.cross_client += len(g.wrong)
            for w in g.wrong[:3]:
                self._problem(f"wrong answer: {w}")
            for e in g.errors[:2]:
                self._problem(f"good client error (not counted as a failure): {e}")
        res.inputs += count
        res.batches += 1
        self.check()

    def _clients_left(self) -> list[tuple[int, str]]:
        """Ports of the fuzzed database's clients SHOW CLIENTS still lists (a leak's suspects)."""
        try:
            with RawConn(self.port, timeout=10) as c:
                c.startup("postgres", "iasql_proxy", password="postgres")
                got = c.query("SHOW CLIENTS")
        except Exception:  # noqa: BLE001 - diagnostics only
            return []
        names = [f.name for f in RowDescription.decode(next(p for t, p in got if t == "T")).fields]
        rows = [dict(zip(names, r)) for r in data_rows(got)]
        return [(int(r["port"]), r.get("state") or "") for r in rows
                if r.get("database") == self.dbname and r.get("port")]

    def check(self) -> None:
        """After a batch: the process lives, a fresh client is answered, SHOW POOLS is idle, no
        traceback in the log, memory within the limit."""
        res = self.result
        stuck = False
        if not os.path.exists(f"/proc/{self.pid}"):
            res.crashes += 1
            self._problem("the proxy process is gone")
            raise RuntimeError("the proxy crashed")
        try:
            with RawConn(self.port, timeout=30) as c:
                c.startup("postgres", self.dbname, password="postgres")
                if data_rows(c.query("SELECT 'fresh'")) != [["fresh"]]:
                    raise AssertionError("wrong answer")
        except Exception as e:  # noqa: BLE001
            res.fresh_client_failures += 1
            self._problem(f"fresh client: {e!r}")
            stuck = True
        deadline = time.monotonic() + 30
        row: dict[str, int] = {}
        while time.monotonic() < deadline:
            row = show_pools(self.port, self.dbname)
            if all(row.get(k, 0) == v for k, v in IDLE.items()):
                break
            time.sleep(0.2)
        else:
            res.leaks += 1
            self._problem(f"SHOW POOLS not idle: {row}")
            for port, state in self._clients_left():
                self._problem(f"client left on port {port} ({state}): {self._by_port.get(port)!r}")
            stuck = True
        text = self.log()
        new, self.log_seen = text[self.log_seen:], len(text)
        n = new.count("Traceback")
        if n:
            res.tracebacks += n
            at = new.index("Traceback")
            self._problem("traceback: " + new[max(0, at - 300):at + 1500])
        rss = rss_mib(self.pid)
        res.max_rss_mib = max(res.max_rss_mib, round(rss, 1))
        if stuck and self.restart is not None:
            self.port, self.pid, self.log = self.restart()
            self.log_seen = 0
            self._problem("proxy restarted")

    def run(self, inputs: int, first_batch: int = 0, on_batch=None) -> Result:
        """Run ``inputs`` inputs in batches; ``on_batch(result)`` after each. Stops at a crash."""
        res = self.result
        base = rss_mib(self.pid)
        res.rss_limit_mib = round(base + self.rss_headroom, 1)
        started = time.monotonic()
        index = first_batch
        try:
            while res.inputs < inputs:
                self.batch(index, min(self.batch_size, inputs - res.inputs))
                index += 1
                res.seconds = round(time.monotonic() - started, 1)
                if on_batch is not None:
                    on_batch(res)
        except RuntimeError:
            pass
        res.seconds = round(time.monotonic() - started, 1)
        return res


def prepare_database(pg, dbname: str) -> None:
    """The fuzzed database: a table for COPY and a role for SET ROLE (created when missing)."""
    exists = pg.psql(f"SELECT count(*) FROM pg_database WHERE datname = '{dbname}'").strip() == "1"
    if not exists:
        pg.psql(f'CREATE DATABASE "{dbname}"')
    pg.psql("DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'fuzz_role') "
            "THEN CREATE ROLE fuzz_role; END IF; END$$; GRANT fuzz_role TO postgres")
    pg.psql("CREATE TABLE IF NOT EXISTS fuzz_t(v text)", dbname=dbname)


def proxy_ini_text(pg_port: int, userlist: str) -> str:
    """The fuzzed proxy: transaction pooling, a pool of 4, the admin console for SHOW POOLS."""
    return "\n".join([
        "[databases]", f"* = host=127.0.0.1 port={pg_port}", "", "[proxy]",
        "auth_type = scram-sha-256", f"auth_file = {userlist}", "auth_user = postgres",
        "server_tls_sslmode = disable", "pool_mode = transaction", "default_pool_size = 4",
        "query_wait_timeout = 20", "admin_users = postgres", "log_connections = 0", "log_disconnections = 0", ""])
