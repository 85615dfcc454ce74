"""The model of transaction pooling's differential tests (issue 14): message constructors and
scripts, a raw client that reads replies by the protocol's rules, and ``check``, which runs a case
on direct connections and then through the proxy and fails at the first difference a client sees.
``test_model.py`` draws cases with hypothesis; ``test_exactness.py`` keeps the ones it found."""

from __future__ import annotations

import os
import struct
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import psycopg
from hypothesis import strategies as st

from proxy.wire import frontend as F
from tests.pooling.conftest import direct_dsn
from tests.support.faults import RawConn, error_fields

NAMES = ("", "a", "b")
PORTALS = ("", "p")
PARSE_SQL = (
    "SELECT 1",
    "SELECT $1::int + 1",
    "SELECT * FROM m_t ORDER BY a",
    "SELECT v FROM t",
    "SELEC 1",
    "SELECT 1/0",
    "SELECT generate_series(1, 3) AS g",
    "INSERT INTO m_t VALUES (7)",
    "SET search_path = s2",
    "SELECT current_setting('search_path')",
    "",
    "NOTIFY mc, 'ext'",
)
QUERIES = (
    "SET search_path = s1",
    "SET search_path = s2, public",
    "RESET search_path",
    "SET application_name = 'model'",
    "SHOW search_path",
    "DEALLOCATE a",
    "DEALLOCATE ALL",
    "PREPARE a AS SELECT 'sql'",
    "EXECUTE a",
    "LISTEN mc",
    "UNLISTEN *",
    "NOTIFY mc, 'q'",
    "BEGIN",
    "COMMIT",
    "ROLLBACK",
    "SELECT 1/0",
    "SELECT 1; SELECT 2",
    "ALTER TABLE m_t ADD COLUMN b text DEFAULT 'x'",
    "ALTER TABLE m_t DROP COLUMN b",
    "SELECT * FROM m_t ORDER BY a",
    "SELECT v FROM t",
)
# the message a reply completes (Describe: its RowDescription or NoData; Execute: its end)
_LAST_REPLY = {"P": "1", "B": "2", "C": "3", "D": "Tn", "E": "CsI"}


@dataclass(frozen=True)
class Msg:
    """One frontend message: its type letter, its bytes, and how a script writes it."""

    letter: str
    raw: bytes
    text: str


# The message constructors of scripts (``check_script``); their texts are themselves scripts.
def Parse(name: str, sql: str) -> Msg:  # noqa: N802
    return Msg("P", F.Parse(name, sql).encode(), f"Parse({name!r}, {sql!r})")


def Bind(portal: str, name: str, params=()) -> Msg:  # noqa: N802
    return Msg("B", F.Bind(portal, name, (), tuple(p.encode() for p in params), ()).encode(),
               f"Bind({portal!r}, {name!r}, {list(params)!r})")


def Execute(portal: str, limit: int = 0) -> Msg:  # noqa: N802
    return Msg("E", F.Execute(portal, limit).encode(), f"Execute({portal!r}, {limit})")


def Describe(kind: str, name: str) -> Msg:  # noqa: N802
    return Msg("D", F.Describe(kind.encode(), name).encode(), f"Describe({kind!r}, {name!r})")


def Close(kind: str, name: str) -> Msg:  # noqa: N802
    return Msg("C", F.Close(kind.encode(), name).encode(), f"Close({kind!r}, {name!r})")


def Sync() -> Msg:  # noqa: N802
    return Msg("S", F.Sync().encode(), "Sync()")


def Flush() -> Msg:  # noqa: N802
    return Msg("H", F.Flush().encode(), "Flush()")


def Query(sql: str) -> Msg:  # noqa: N802
    return Msg("Q", F.Query(sql).encode(), f"Query({sql!r})")


_SCRIPT_NAMES = {f.__name__: f for f in (Parse, Bind, Execute, Describe, Close, Sync, Flush, Query)}


@dataclass
class Step:
    """One client's turn: messages ending in Sync, Flush or a Query."""

    client: int
    msgs: list[Msg]

    @property
    def end(self) -> str:
        return self.msgs[-1].letter

    @property
    def text(self) -> str:
        return f"{self.client}: " + ", ".join(m.text for m in self.msgs)


def parse_script(script: str) -> list[Step]:
    """Steps from lines ``client: Message(...), ...`` (the form failures are reported in)."""
    steps = []
    for line in script.strip().splitlines():
        client, _, msgs = line.strip().partition(":")
        steps.append(Step(int(client), list(eval(f"[{msgs}]", {"__builtins__": {}}, _SCRIPT_NAMES))))  # noqa: S307
    return steps


@dataclass
class ClientModel:
    """What the draws know about one client (from the direct run's answers)."""

    status: str = "I"          # from the last ReadyForQuery
    pending: bool = False      # messages sent since the last Sync
    pins: set[str] = field(default_factory=set)  # LISTEN / PREPARE, kept pessimistically

    def holds(self) -> bool:
        return self.status != "I" or self.pending or bool(self.pins)

    def copy(self) -> "ClientModel":
        return ClientModel(self.status, self.pending, set(self.pins))


class Wire:
    """One raw connection and the reading rules of the extended protocol."""

    def __init__(self, port: int, dbname: str):
        self.conn = RawConn(port, timeout=15)
        self.conn.startup("postgres", dbname, password="postgres")
        self.skipping = False  # after an ErrorResponse, until Sync
        self.notes: list[tuple[bytes, bytes]] = []

    def run(self, step: Step) -> tuple[list[tuple], str | None]:
        """Send ``step``; return the normalized replies and the ReadyForQuery status (None: Flush)."""
        self.conn.send(b"".join(m.raw for m in step.msgs))
        if step.end in ("S", "Q"):
            msgs = self.conn.read_until_ready(1)
            self.skipping = False
            return self._norm(msgs), chr(msgs[-1][1][0])
        got: list = []
        if not self.skipping:
            for m in step.msgs[:-1]:
                while True:
                    r = self.conn.read_message()
                    assert r is not None, "connection closed"
                    got.append(r)
                    if r[0] == "E":
                        self.skipping = True
                        break
                    if r[0] in _LAST_REPLY[m.letter]:
                        break
                if self.skipping:
                    break
        return self._norm(got), None

    def _norm(self, messages) -> list[tuple]:
        out: list[tuple] = []
        for t, p in messages:
            if t == "K":
                continue
            if t == "A":
                channel, payload = bytes(p[4:]).split(b"\0")[:2]
                self.notes.append((channel, payload))
            elif t in ("E", "N"):
                f = error_fields(p)
                out.append((t, f.sqlstate, f.message))
            elif t == "T":
                out.append(("T", _row_description(p)))
            else:
                out.append((t, bytes(p)))
        return out

    def close(self) -> None:
        self.conn.terminate()


def _row_description(p: bytes) -> tuple:
    """RowDescription fields without table OID and column number (DDL renumbers columns)."""
    n, = struct.unpack_from("!h", p)
    pos, fields = 2, []
    for _ in range(n):
        end = p.index(b"\0", pos)
        name = bytes(p[pos:end])
        _table, _col, typ, size, mod, fmt = struct.unpack_from("!ihihih", p, end + 1)
        fields.append((name, typ, size, mod, fmt))
        pos = end + 1 + 18
    return tuple(fields)


# -- drawing steps ----------------------------------------------------------------------------

def _draw_message(data) -> Msg:
    kind = data.draw(st.sampled_from(("P", "P", "B", "B", "E", "E", "DS", "DP", "CS", "CP")))
    if kind == "P":
        return Parse(data.draw(st.sampled_from(NAMES)), data.draw(st.sampled_from(PARSE_SQL)))
    if kind == "B":
        return Bind(data.draw(st.sampled_from(PORTALS)), data.draw(st.sampled_from(NAMES)),
                    data.draw(st.sampled_from(((), ("5",)))))
    if kind == "E":
        return Execute(data.draw(st.sampled_from(PORTALS)), data.draw(st.sampled_from((0, 0, 1))))
    name = data.draw(st.sampled_from(NAMES if kind[1] == "S" else PORTALS))
    return (Describe if kind[0] == "D" else Close)(kind[1], name)


def draw_step(data, models: list[ClientModel], pool: int) -> Step:
    """A step for a client that can act without waiting for the pool (see the module docstring)."""
    holders = sum(m.holds() for m in models)
    allowed = [i for i, m in enumerate(models) if m.holds() or holders < pool]
    client = data.draw(st.sampled_from(allowed))
    if not models[client].pending and data.draw(st.integers(0, 9)) < 4:
        return Step(client, [Query(data.draw(st.sampled_from(QUERIES)))])
    msgs = [_draw_message(data) for _ in range(data.draw(st.integers(0, 3)))]
    msgs.append(Flush() if data.draw(st.integers(0, 3)) == 0 else Sync())
    return Step(client, msgs)


def update_model(m: ClientModel, step: Step, replies: list[tuple], status: str | None) -> None:
    """Follow what the direct run answered (pins pessimistically: any LISTEN/PREPARE pins; only
    an unpinning statement that succeeded outside a block unpins)."""
    m.pending = status is None
    if status is not None:
        m.status = status
    if step.end != "Q":
        return
    sql = step.msgs[0].text
    failed = any(r[0] == "E" for r in replies)
    if "LISTEN mc" in sql and "UNLISTEN" not in sql:
        m.pins.add("LISTEN")
    if "PREPARE a" in sql and "DEALLOCATE" not in sql:
        m.pins.add("PREPARE")
    if not failed and status == "I":
        if "UNLISTEN *" in sql:
            m.pins.discard("LISTEN")
        if "DEALLOCATE" in sql:
            m.pins.discard("PREPARE")


# -- running ----------------------------------------------------------------------------------

RESET = "ALTER TABLE m_t DROP COLUMN IF EXISTS b; TRUNCATE m_t; INSERT INTO m_t VALUES (1), (2)"


class ModelEnv:
    """The model test's database (schemas s1, s2 with a table t; table m_t; lock_timeout 150 ms so
    a step that would wait for another client's lock fails alike on both sides), its direct port,
    and a transaction-pooling proxy per pool size (restarted when a case leaves it unusable, so
    one failure does not spoil the next cases)."""

    def __init__(self, pg, proxy_ini, start_proxy):
        self.pg, self.proxy_ini, self.start_proxy = pg, proxy_ini, start_proxy
        self.direct_port = pg.port
        self.dbname = f"pooling_model_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(direct_dsn(pg, "postgres"), autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{self.dbname}"')
            c.execute(f"ALTER DATABASE \"{self.dbname}\" SET lock_timeout = '150ms'")
        with psycopg.connect(direct_dsn(pg, self.dbname), autocommit=True) as c:
            for schema, v in (("s1", "one"), ("s2", "two")):
                c.execute(f"CREATE SCHEMA {schema}; CREATE TABLE {schema}.t(v text); "
                          f"INSERT INTO {schema}.t VALUES ('{v}')")
            c.execute("CREATE TABLE m_t (a int)")
        self.proxies = {size: self._start(size) for size in (1, 2)}

    def _start(self, size: int):
        return self.start_proxy(self.proxy_ini(pool_mode="transaction", default_pool_size=size,
                                               query_wait_timeout=2), f"model-proxy-{size}")

    def port(self, pool: int) -> int:
        return self.proxies[pool].port

    def restart(self, pool: int) -> None:
        self.proxies[pool].stop()
        self.proxies[pool] = self._start(pool)

    def reset(self) -> None:
        with psycopg.connect(direct_dsn(self.pg, self.dbname), autocommit=True) as c:
            c.execute(RESET)

    def drop(self) -> None:
        with psycopg.connect(direct_dsn(self.pg, "postgres"), autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)')


def _finish(wires: list[Wire], models: list[ClientModel]) -> list[tuple]:
    """End every client's batch and block, then collect late notifications of the listeners."""
    out = []
    for i, (w, m) in enumerate(zip(wires, models)):
        if m.pending:
            out.append((i, w.run(Step(i, [Sync()]))[0]))
        if m.status != "I" or m.pending:
            out.append((i, w.run(Step(i, [Query("ROLLBACK")]))[0]))
    time.sleep(0.2)
    for i, (w, m) in enumerate(zip(wires, models)):
        if "LISTEN" in m.pins:
            out.append((i, w.run(Step(i, [Query("SELECT 1")]))[0]))
    return out


def _script(steps: list[Step], upto: int | None = None) -> str:
    return "\n".join(f"    {s.text}" for s in steps[:upto])


def check(env: ModelEnv, pool: int, clients: int, choose) -> list[Step]:
    """Run a case: ``choose(models)`` gives each next step (None: the case ends) while it runs on
    direct connections; then the same steps run through the proxy with a pool of ``pool``.
    Fails at the first message a client receives differently. Returns the steps."""
    env.reset()
    models = [ClientModel() for _ in range(clients)]
    wires = [Wire(env.direct_port, env.dbname) for _ in range(clients)]
    steps: list[Step] = []
    direct: list = []
    try:
        while (step := choose(models)) is not None:
            replies, status = wires[step.client].run(step)
            update_model(models[step.client], step, replies, status)
            steps.append(step)
            direct.append(replies)
        end_models = [m.copy() for m in models]
        direct.append(_finish(wires, models))
        direct_notes = [Counter(w.notes) for w in wires]
    finally:
        for w in wires:
            w.close()
    if os.environ.get("IASQL_MODEL_VERBOSE"):
        print(f"--- pool {pool}, {clients} clients\n{_script(steps)}", flush=True)
    env.reset()
    head = f"pool {pool}, {clients} clients"
    wires = []
    proxied: list = []
    try:
        wires = [Wire(env.port(pool), env.dbname) for _ in range(clients)]
        for s in steps:
            proxied.append(wires[s.client].run(s)[0])
            n = len(proxied) - 1
            if proxied[n] != direct[n]:
                raise AssertionError(f"{head}: step #{n} differs\n{_script(steps, n + 1)}\n"
                                     f"  direct   : {direct[n]!r}\n  via proxy: {proxied[n]!r}")
        proxied.append(_finish(wires, end_models))
        assert proxied[-1] == direct[-1], (f"{head}: the end differs\n{_script(steps)}\n"
                                           f"  direct   : {direct[-1]!r}\n  via proxy: {proxied[-1]!r}")
        notes = [Counter(w.notes) for w in wires]
        assert notes == direct_notes, f"{head}: notifications differ: direct {direct_notes}, via proxy {notes}\n{_script(steps)}"
    except (OSError, AssertionError) as e:
        msg = str(e) if isinstance(e, AssertionError) and str(e).startswith(head) else (
            f"{head}: step #{len(proxied)} failed through the proxy: {e}\n{_script(steps, len(proxied) + 1)}")
        if os.environ.get("IASQL_MODEL_VERBOSE"):
            print(f"FAILED: {msg}", flush=True)
        raise AssertionError(msg) from None
    finally:
        for w in wires:
            w.close()
        if not _pool_serves(env, pool):
            env.restart(pool)
            raise AssertionError(f"{head}: a new client gets no server connection after these clients left\n"
                                 f"{_script(steps)}")
    return steps


def _pool_serves(env: ModelEnv, pool: int) -> bool:
    """Whether ``pool`` new clients each get a server connection at once (every connection came
    back to the pool in a usable state)."""
    wires: list[Wire] = []
    try:
        for _ in range(pool):
            wires.append(Wire(env.port(pool), env.dbname))
            if wires[-1].run(Step(0, [Query("BEGIN; SELECT 1")]))[1] != "T":
                return False
        return True
    except (OSError, AssertionError):
        return False
    finally:
        for w in wires:
            w.close()


def check_script(env: ModelEnv, pool: int, clients: int, script: str) -> None:
    """``check`` with fixed steps (``parse_script``): a case hypothesis found, kept as a test."""
    steps = iter(parse_script(script))
    check(env, pool, clients, lambda models: next(steps, None))


