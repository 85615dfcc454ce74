"""Replaying a wire trace against a proxy or Postgres, and comparing the replies.

Theory of operation
-------------------
A trace (proxy.trace.format) holds both sides of one session. Replay cannot reuse the recorded
login (its secrets are redacted, and a SCRAM exchange cannot be replayed anyway), so it:

1. connects to the DSN's host/port, with TLS as its ``sslmode`` says (``disable``, ``allow``/
   ``prefer``: TLS when offered, ``require``: TLS without checks, ``verify-ca``/``verify-full``:
   checked against ``sslrootcert``, the latter with the host name);
2. sends the recorded StartupMessage's parameters with ``user``/``database`` taken from the DSN,
   and authenticates with the DSN's password (cleartext, MD5 or SCRAM-SHA-256);
3. from the recorded AuthenticationOk on, walks the trace: each run of consecutive frontend
   messages is sent in one write (pipelines stay pipelined), each run of backend messages is read
   message by message and compared with the recording; a ``CancelRequest`` line with
   ``"conn": "cancel"`` makes replay wait the recorded delay since the previous frontend message
   (at most ``cancel_delay_max`` seconds) and send a CancelRequest with the BackendKeyData it got.

Redacted messages after login (proxy.trace.redact: anything that may carry an AWS secret access
key) cannot be replayed as recorded. A redacted *frontend* message (a statement on
``aws_credentials``, the Bind of its values, COPY data) was never written, so ``replay`` refuses
the whole trace before connecting, with ``SecretRedactedError`` naming the first such message's
index: sending the rest would run a different session (an INSERT missing, a COPY left waiting).
A redacted *backend* message whose request was recorded (a row under a ``secret_access_key``
column of a view, say) is read and checked for its type only (``ReplayResult.redacted`` counts
them); a difference there shows the received message's type, never its contents.

Comparison ignores what legitimately differs (the header's ``variable`` section and per-line
``variable`` marks): BackendKeyData contents, NotificationResponse process ids, values (and, in
the login block, presence and order) of variable ParameterStatus names, the F/L/R fields of
errors and notices, digits in marked error/notice fields and DataRow columns, RowDescription table
OIDs. Everything else must be byte-identical. The first difference stops the replay and is
reported with the trace's message index, the expected and received messages decoded, and the
last frontend messages sent before it.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import ssl
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

from proxy.trace import format as fmt
from proxy.wire import backend as B
from proxy.wire import frontend as F
from proxy.wire.codec import ProtocolViolation

_HDR = struct.Struct("!Bi")


class TraceFormatError(Exception):
    """The file is not a usable trace."""


class ReplayError(Exception):
    """Replay could not run (connection or login failed)."""


class SecretRedactedError(TraceFormatError):
    """The trace cannot be replayed: frontend message ``index`` (named ``msg``) after login was
    redacted when recorded because it may hold an AWS secret (proxy.trace.redact)."""

    def __init__(self, index, msg: str):
        super().__init__(
            f"message #{index} (frontend {msg}) after AuthenticationOk was redacted when recorded because it "
            f"may hold an AWS secret (a statement on aws_credentials/secret_access_key, its bound values or "
            f"COPY data): replay cannot send what was not recorded. Record the scenario without that "
            f"statement, or put a statement without the secret back into that line's \"hex\"")
        self.index = index
        self.msg = msg


@dataclass
class Trace:
    path: Path
    header: dict
    messages: list[dict]
    end: dict | None

    @property
    def variable(self) -> dict:
        return self.header.get("variable") or {}

    @property
    def complete(self) -> bool:
        return self.end is not None and bool(self.end.get("complete"))


def load_trace(path) -> Trace:
    """Read and check a trace file."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise TraceFormatError(str(e)) from None
    objs = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            objs.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise TraceFormatError(f"line {n}: {e}") from None
    if not objs or objs[0].get("trace") != fmt.MAGIC:
        raise TraceFormatError("first line is not an iasql-proxy trace header")
    if objs[0].get("format") != fmt.FORMAT_VERSION:
        raise TraceFormatError(f"format {objs[0].get('format')} is not supported (expected {fmt.FORMAT_VERSION})")
    end = objs[-1] if objs[-1].get("end") else None
    msgs = objs[1:-1] if end is not None else objs[1:]
    return Trace(path, objs[0], msgs, end)


# -- comparison ----------------------------------------------------------------------------------
def describe(name: str, raw: bytes | None, fields=None) -> str:
    """One readable line: the message name and its decoded fields (from raw bytes when given)."""
    if raw is not None and fields is None:
        fields = _decode(raw)
    if fields is None:
        return name + (f" {raw.hex()}" if raw else "")
    return f"{name} {json.dumps(fields, ensure_ascii=False)}"


def _decode(raw: bytes):
    try:
        msg = B.decode_backend(raw[0], raw[5:])
    except (ProtocolViolation, ValueError, IndexError):
        return None
    return fmt.message_fields(msg)


def _name_of(raw: bytes) -> str:
    if raw[:1] == b"R" and len(raw) >= 9:
        return fmt.AUTH_NAMES.get(struct.unpack_from("!i", raw, 5)[0], "Authentication")
    return B.BACKEND_NAMES.get(raw[0], f"Unknown_{chr(raw[0])!r}")


def normalise(raw: bytes, variable: dict, line_variable=()) -> object:
    """A comparison key for backend message ``raw`` with the variable parts blanked."""
    t = raw[:1]
    try:
        msg = B.decode_backend(raw[0], raw[5:])
    except (ProtocolViolation, ValueError):
        return raw
    if t == b"K" and variable.get("backend_key_data", True):
        return ("BackendKeyData",)
    if t == b"S":
        if msg.name in variable.get("parameter_status", ()):
            return ("ParameterStatus", msg.name, "*")
        return ("ParameterStatus", msg.name, msg.value)
    if t in (b"E", b"N"):
        ignore = set(variable.get("error_fields", ()))
        marked = set(x for x in line_variable if isinstance(x, str))
        return (t, tuple((k, fmt.normalise_digits(v) if k in marked else v) for k, v in msg.fields
                         if k not in ignore))
    if t == b"A" and variable.get("notification_pid", True):
        return ("NotificationResponse", msg.channel, msg.payload)
    if t == b"T" and variable.get("row_description_table_oid", True):
        return ("RowDescription", tuple(dataclasses.replace(f, table_oid=0) for f in msg.fields))
    if t == b"D" and line_variable:
        cols = set(x for x in line_variable if isinstance(x, int))
        return ("DataRow", tuple(fmt.normalise_digits(v.decode("utf-8", "replace")) if i in cols and v is not None
                                 else v for i, v in enumerate(msg.values)))
    return raw


# -- connection ---------------------------------------------------------------------------------
def parse_dsn(dsn: str) -> dict[str, str]:
    """libpq key=value or URI connection string to a dict (psycopg's parser)."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        return {k: str(v) for k, v in conninfo_to_dict(dsn).items()}
    except Exception as e:
        raise ReplayError(f"bad --dsn: {e}") from None


class _Conn:
    """A blocking protocol connection: TLS per sslmode, message reads with a timeout."""

    def __init__(self, params: dict[str, str], timeout: float):
        self.params = params
        self.timeout = timeout
        host = params.get("host") or params.get("hostaddr") or "localhost"
        port = int(params.get("port") or 5432)
        self.host, self.port = host, port
        try:
            if host.startswith("/"):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.settimeout(timeout)
                s.connect(f"{host}/.s.PGSQL.{port}")
            else:
                s = socket.create_connection((params.get("hostaddr") or host, port), timeout=timeout)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as e:
            raise ReplayError(f"cannot connect to {host}:{port}: {e}") from None
        self.sock = s
        self.buf = bytearray()
        self.eof = False
        self.tls = False
        self._negotiate_tls()

    def _negotiate_tls(self) -> None:
        mode = self.params.get("sslmode", "prefer")
        if mode == "disable" or self.sock.family == getattr(socket, "AF_UNIX", None):
            return
        self.sock.sendall(F.SSLRequest().encode())
        answer = self.sock.recv(1)
        if answer != b"S":
            if mode in ("allow", "prefer"):
                return
            raise ReplayError(f"the server does not support TLS (sslmode={mode})")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if mode in ("verify-ca", "verify-full"):
            root = self.params.get("sslrootcert")
            if root:
                ctx.load_verify_locations(root)
            else:
                ctx.load_default_certs()
            ctx.check_hostname = mode == "verify-full"
            ctx.verify_mode = ssl.CERT_REQUIRED
        else:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.params.get("sslcert"):
            ctx.load_cert_chain(self.params["sslcert"], self.params.get("sslkey"))
        try:
            self.sock = ctx.wrap_socket(self.sock, server_hostname=self.host)
        except (ssl.SSLError, OSError) as e:
            raise ReplayError(f"TLS handshake failed: {e}") from None
        self.tls = True

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read(self, timeout: float | None = None) -> bytes | None:
        """The next whole backend message (type byte and length included); None on EOF or timeout."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            if len(self.buf) >= 5:
                _, length = _HDR.unpack_from(self.buf, 0)
                if len(self.buf) >= 1 + length:
                    raw = bytes(self.buf[:1 + length])
                    del self.buf[:1 + length]
                    return raw
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except (socket.timeout, TimeoutError):
                return None
            except OSError:
                self.eof = True
                return None
            if not chunk:
                self.eof = True
                return None
            self.buf += chunk

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def _login(conn: _Conn, startup_params: dict[str, str]) -> None:
    """Send StartupMessage (the recorded parameters, user and database from the DSN) and
    authenticate with the DSN's password; return once AuthenticationOk is read."""
    from proxy.auth import AuthFailed, ScramClientExchange, md5_response, md5_secret

    params = conn.params
    user = params.get("user") or startup_params.get("user") or "postgres"
    sp = dict(startup_params)
    sp["user"] = user
    sp["database"] = params.get("dbname") or user
    if params.get("application_name"):
        sp["application_name"] = params["application_name"]
    conn.send(F.StartupMessage(F.PROTOCOL_3_0, sp).encode())
    password = params.get("password", "")
    scram = None
    while True:
        raw = conn.read()
        if raw is None:
            raise ReplayError("the server closed the connection during login")
        t = raw[:1]
        if t == b"E":
            raise ReplayError("login failed: " + describe("ErrorResponse", raw))
        if t == b"v":
            continue
        if t != b"R":
            raise ReplayError(f"unexpected {_name_of(raw)} during login")
        auth = B.Authentication.decode(raw[5:])
        if auth.code == B.AUTH_OK:
            return
        if auth.code == B.AUTH_CLEARTEXT:
            conn.send(F.PasswordMessage.from_password(password).encode())
        elif auth.code == B.AUTH_MD5:
            conn.send(F.PasswordMessage.from_password(md5_response(md5_secret(user, password), auth.data)).encode())
        elif auth.code == B.AUTH_SASL:
            if "SCRAM-SHA-256" not in auth.mechanisms():
                raise ReplayError(f"no supported SASL mechanism in {auth.mechanisms()}")
            scram = ScramClientExchange(user, password=password)
            conn.send(F.SASLInitialResponse("SCRAM-SHA-256", scram.first().encode()).encode())
        elif auth.code == B.AUTH_SASL_CONTINUE and scram is not None:
            try:
                conn.send(F.SASLResponse(scram.final(auth.data.decode()).encode()).encode())
            except AuthFailed as e:
                raise ReplayError(f"SCRAM: {e}") from None
        elif auth.code == B.AUTH_SASL_FINAL and scram is not None:
            try:
                scram.verify(auth.data.decode())
            except AuthFailed as e:
                raise ReplayError(f"SCRAM: {e}") from None
        else:
            raise ReplayError(f"unsupported authentication request {auth.code}")


def _send_cancel(params: dict[str, str], key: tuple[int, int], timeout: float) -> None:
    c = _Conn(params, timeout)
    try:
        c.send(F.CancelRequest(*key).encode())
        c.read(timeout=2.0)  # the server closes the connection when done
    finally:
        c.close()


# -- replay -------------------------------------------------------------------------------------
@dataclass
class ReplayResult:
    """What ``replay`` did: counts of messages sent and compared (``redacted``: backend messages
    compared by type only), and the first difference (``diff``, ``index``, ``expected``, ``got``)."""

    trace: Trace
    compared: int = 0            # backend messages compared
    sent: int = 0                # frontend messages sent
    cancels: int = 0
    diff: str | None = None      # the first difference, readable; None when equal
    index: int | None = None     # trace message index of the first difference
    expected: dict | None = None
    got: bytes | None = None
    notes: list[str] = field(default_factory=list)
    redacted: int = 0            # redacted backend messages: only their type was checked

    @property
    def ok(self) -> bool:
        return self.diff is None

    def summary(self) -> str:
        s = f"OK: {self.sent} frontend messages sent, {self.compared} backend messages compared"
        if self.redacted:
            s += f" ({self.redacted} redacted: type only)"
        if self.cancels:
            s += f", {self.cancels} cancel(s)"
        return s + "".join(f"; {n}" for n in self.notes)


def _body(trace: Trace) -> tuple[dict, list[dict]]:
    startup = None
    for n, m in enumerate(trace.messages):
        if m.get("msg") == "StartupMessage" and m.get("dir") == "frontend":
            startup = m
        if m.get("msg") == "AuthenticationOk" and m.get("dir") == "backend":
            if startup is None:
                raise TraceFormatError("AuthenticationOk without a StartupMessage before it")
            body = trace.messages[n + 1:]
            for b in body:
                if b.get("redacted") and b.get("dir") == "frontend":
                    raise SecretRedactedError(b.get("i"), b.get("msg"))
            return startup, body
    raise TraceFormatError("no AuthenticationOk in the trace (the session never logged in)")


def _steps(body: list[dict]) -> list[tuple[str, list[dict]]]:
    """Group the body into ("send", [frontend lines]), ("expect", [backend lines]), ("cancel", [line])."""
    steps: list[tuple[str, list[dict]]] = []
    for m in body:
        if m.get("dir") == "frontend" and m.get("conn") == "cancel":
            steps.append(("cancel", [m]))
            continue
        kind = "send" if m.get("dir") == "frontend" else "expect"
        if steps and steps[-1][0] == kind:
            steps[-1][1].append(m)
        else:
            steps.append((kind, [m]))
    return steps


def _expected_raw(m: dict) -> bytes:
    if m.get("hex") is None:
        raise TraceFormatError(f"message {m.get('i')} has no bytes")
    return bytes.fromhex(m["hex"])


def replay(path, dsn: str, *, timeout: float = 30.0, cancel_delay_max: float = 2.0) -> ReplayResult:
    """Replay trace ``path`` (a file name) against ``dsn`` (a libpq connection string); returns a
    ReplayResult whose ``diff`` is None when the replies match. ``timeout``: seconds to wait for
    each reply; ``cancel_delay_max``: the longest wait before a recorded cancel.

    Raises TraceFormatError when the file is not a usable trace (SecretRedactedError, before
    connecting, when a frontend message after login was redacted because it may hold an AWS
    secret), ReplayError when the connection or the login fails."""
    trace = load_trace(path)
    startup, body = _body(trace)
    result = ReplayResult(trace)
    if not trace.complete:
        why = "no end line" if trace.end is None else (trace.end.get("error") or
                                                       f"{trace.end.get('dropped_bytes', 0)} bytes dropped")
        result.notes.append(f"trace incomplete ({why}): replayed what was recorded")
    params = parse_dsn(dsn)
    variable = trace.variable
    conn = _Conn(params, timeout)
    sent_log: list[dict] = []
    group: list[dict] = []     # the last frontend messages sent together (shown with a difference)
    key: tuple[int, int] | None = None
    try:
        _login(conn, (startup.get("fields") or {}).get("parameters", {}))
        steps = _steps(body)
        last_send_t = None
        last_send_wall = time.monotonic()
        terminated = False
        for si, (kind, lines) in enumerate(steps):
            if kind == "send":
                data = b"".join(_expected_raw(m) for m in lines)
                try:
                    conn.send(data)
                except OSError as e:
                    return _differ(result, lines[0], None, group, f"sending failed: {e}")
                sent_log.extend(lines)
                group[:] = lines
                result.sent += len(lines)
                last_send_t = lines[-1].get("t_us", 0)
                last_send_wall = time.monotonic()
                if any(m.get("msg") == "Terminate" for m in lines):
                    terminated = True
                continue
            if kind == "cancel":
                m = lines[0]
                if key is None:
                    return _differ(result, m, None, group, "a cancel was recorded but no BackendKeyData was received")
                delay = 0.0
                if last_send_t is not None:
                    delay = max(0.0, (m.get("t_us", 0) - last_send_t) / 1e6)
                delay = min(delay, cancel_delay_max) - (time.monotonic() - last_send_wall)
                if delay > 0:
                    time.sleep(delay)
                _send_cancel(params, key, timeout)
                result.cancels += 1
                continue
            # expect
            login_block = result.compared == 0 and not sent_log
            if login_block:
                diff_at = _compare_login_block(conn, lines, variable, result, sent_log)
                if diff_at is not None:
                    return diff_at
                for got_raw in result._login_got:  # type: ignore[attr-defined]
                    if got_raw[:1] == b"K":
                        key = struct.unpack_from("!ii", got_raw, 5)
                continue
            for m in lines:
                got = conn.read()
                if got is None:
                    return _differ(result, m, None, group,
                                   "the connection was closed" if conn.eof else f"no reply within {timeout:g} s")
                if m.get("redacted"):  # may hold a secret: its type is all there is to compare
                    if _name_of(got) != m.get("msg"):
                        return _differ(result, m, got, group, "a message of another type arrived")
                    result.compared += 1
                    result.redacted += 1
                    continue
                want = _expected_raw(m)
                if got[:1] == b"K":
                    key = struct.unpack_from("!ii", got, 5)
                if normalise(got, variable, m.get("variable") or ()) != normalise(want, variable, m.get("variable") or ()):
                    return _differ(result, m, got, group)
                result.compared += 1
        if not terminated:
            extra = conn.read(timeout=0.2)
            if extra is not None:
                return _differ(result, None, extra, group, "an extra message arrived after the end of the trace")
        return result
    finally:
        conn.close()


def _compare_login_block(conn: _Conn, lines: list[dict], variable: dict, result: ReplayResult, sent_log):
    """ParameterStatus*, BackendKeyData, ReadyForQuery after AuthenticationOk: variable names may
    be absent, present or in another order; everything else must match."""
    names = set(variable.get("parameter_status", ()))
    want_ps = {}
    want_other = []
    for m in lines:
        raw = _expected_raw(m)
        if raw[:1] == b"S":
            ps = B.ParameterStatus.decode(raw[5:])
            if ps.name not in names:
                want_ps[ps.name] = (ps.value, m)
        else:
            want_other.append(m)
    got_ps = {}
    got_all = []
    result._login_got = got_all  # type: ignore[attr-defined]
    oi = 0
    while oi < len(want_other):
        got = conn.read()
        m = want_other[oi]
        if got is None:
            return _differ(result, m, None, sent_log, "no reply during the login block")
        got_all.append(got)
        if got[:1] == b"S":
            ps = B.ParameterStatus.decode(got[5:])
            if ps.name not in names:
                got_ps[ps.name] = ps.value
            continue
        if normalise(got, variable, m.get("variable") or ()) != normalise(_expected_raw(m), variable, m.get("variable") or ()):
            return _differ(result, m, got, sent_log)
        result.compared += 1
        oi += 1
    for name, (value, m) in want_ps.items():
        if got_ps.get(name) != value:
            got = B.ParameterStatus(name, got_ps[name]).encode() if name in got_ps else None
            return _differ(result, m, got, sent_log, None if got is not None else f"ParameterStatus {name} was not sent")
        result.compared += 1
    for name in got_ps.keys() - want_ps.keys():
        return _differ(result, None, B.ParameterStatus(name, got_ps[name]).encode(), sent_log,
                       f"unexpected ParameterStatus {name} in the login block")
    return None


def _differ(result: ReplayResult, m: dict | None, got: bytes | None, sent_log: list[dict],
            why: str | None = None) -> ReplayResult:
    trace = result.trace
    out = [f"{trace.path.name}: replay differs at message #{m.get('i') if m else '?'}"
           + (f" ({m.get('dir')} {m.get('msg')})" if m else "")
           + (f": {why}" if why else "")]
    if sent_log:
        out.append("  after sending:" + (f" (last {len(sent_log[-10:])} of {len(sent_log)})" if len(sent_log) > 10 else ""))
        for s in sent_log[-10:]:
            out.append(f"    #{s.get('i')} {describe(s.get('msg'), None, s.get('fields'))}")
    redacted = m is not None and bool(m.get("redacted"))
    if m is not None:
        want = bytes.fromhex(m["hex"]) if m.get("hex") else None
        out.append(f"  expected: {describe(m.get('msg'), want)}" + (" (redacted: may hold a secret)" if redacted else ""))
    else:
        out.append("  expected: (nothing)")
    if got is not None and redacted:  # in place of a secret: show the type only
        out.append(f"  got:      {_name_of(got)} (contents not shown)")
    elif got is not None:
        out.append(f"  got:      {describe(_name_of(got), got)}")
    else:
        out.append("  got:      (nothing)")
    if m is not None and got is not None and m.get("hex"):
        want = bytes.fromhex(m["hex"])
        a, b = _decode(want), _decode(got)
        if isinstance(a, dict) and isinstance(b, dict):
            for k in list(a) + [k for k in b if k not in a]:
                if a.get(k) != b.get(k):
                    out.append(f"  field {k!r}: expected {json.dumps(a.get(k), ensure_ascii=False)}, "
                               f"got {json.dumps(b.get(k), ensure_ascii=False)}")
    result.diff = "\n".join(out)
    result.index = m.get("i") if m else None
    result.expected = m
    result.got = got
    return result
