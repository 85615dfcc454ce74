"""Raw-socket helpers for integration, differential and fault tests.

``RawConn`` speaks the PostgreSQL v3 protocol over a plain blocking socket (optionally upgraded to
TLS after an SSLRequest, or directly with ALPN ``postgresql``), so tests can send exactly the bytes
they want and see exactly the messages that come back, to the proxy or straight to Postgres.
Every read has a timeout (``RawConn.timeout`` seconds): a test never hangs on a silent peer.

``cancel_request`` sends a CancelRequest; ``spray_garbage`` opens many connections that send
malformed or truncated start-up traffic (for "nothing a client sends can crash the process").
"""

from __future__ import annotations

import random
import select
import socket
import ssl
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from proxy.auth import ScramClientExchange, md5_response, md5_secret
from proxy.wire import frontend as F
from proxy.wire.backend import ErrorResponse

REPO = Path(__file__).resolve().parents[2]
CA_FILE = REPO / "certs" / "ca.crt"

Message = tuple[str, bytes]


class ServerFatal(Exception):
    """The peer sent an ErrorResponse during login. ``fields`` is the decoded ErrorResponse."""

    def __init__(self, fields: ErrorResponse, messages: list[Message]):
        super().__init__(f"{fields.sqlstate}: {fields.message}")
        self.fields = fields
        self.sqlstate = fields.sqlstate
        self.message = fields.message
        self.severity = fields.get("S")
        self.messages = messages


def error_fields(payload: bytes) -> ErrorResponse:
    """Decode an ErrorResponse/NoticeResponse payload."""
    return ErrorResponse.decode(payload)


def tls_context(alpn: bool = True, cafile: Path = CA_FILE, certfile: Path | None = None,
                keyfile: Path | None = None) -> ssl.SSLContext:
    """A verifying client context for the development CA (host name checked), ALPN ``postgresql``."""
    ctx = ssl.create_default_context(cafile=str(cafile))
    if alpn:
        ctx.set_alpn_protocols(["postgresql"])
    if certfile is not None:
        ctx.load_cert_chain(str(certfile), str(keyfile))
    return ctx


class RawConn:
    """One raw protocol connection to ``host``:``port`` (every read bounded by ``timeout`` s)."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 10.0):
        self.port = port
        self.host = host
        self.timeout = timeout
        self.sock: socket.socket | ssl.SSLSocket = socket.create_connection((host, port), timeout=timeout)
        self.buf = bytearray()
        self.backend_key: tuple[int, int] | None = None

    # -- bytes ------------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        """Read more bytes into the buffer; False on EOF (or reset)."""
        try:
            chunk = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return False
        except ssl.SSLError:
            return False
        if not chunk:
            return False
        self.buf += chunk
        return True

    def recv_exact(self, n: int) -> bytes:
        """Exactly ``n`` bytes, or fewer when the peer closed (socket.timeout on silence)."""
        while len(self.buf) < n:
            if not self._fill():
                break
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    # -- TLS --------------------------------------------------------------------------------
    def ssl_request(self) -> bytes:
        """Send SSLRequest; return the one-byte answer (b'' on EOF)."""
        self.send(F.SSLRequest().encode())
        return self.recv_exact(1)

    def wrap_tls(self, ctx: ssl.SSLContext | None = None, server_hostname: str = "localhost") -> None:
        """TLS handshake on the current socket (after an 'S', or as direct TLS)."""
        assert not self.buf, "bytes buffered before the TLS handshake"
        self.sock = (ctx or tls_context()).wrap_socket(self.sock, server_hostname=server_hostname)
        self.sock.settimeout(self.timeout)

    @property
    def tls_version(self) -> str | None:
        return self.sock.version() if isinstance(self.sock, ssl.SSLSocket) else None

    # -- messages ---------------------------------------------------------------------------
    def read_message(self) -> Message | None:
        """The next (type char, payload), or None when the peer closed."""
        while len(self.buf) < 5:
            if not self._fill():
                return None
        t, length = struct.unpack_from("!ci", self.buf, 0)
        if length < 4:
            raise AssertionError(f"peer sent a message with length {length}")
        while len(self.buf) < 1 + length:
            if not self._fill():
                return None
        payload = bytes(self.buf[5:1 + length])
        del self.buf[:1 + length]
        return t.decode("latin-1"), payload

    def unread(self, msg: Message) -> None:
        """Put a message read with ``read_message`` back in front of the buffer."""
        t, payload = msg
        self.buf[0:0] = t.encode("latin-1") + struct.pack("!i", len(payload) + 4) + payload

    def read_until_ready(self, count: int = 1) -> list[Message]:
        """Messages up to and including the ``count``-th ReadyForQuery. AssertionError on EOF."""
        out: list[Message] = []
        seen = 0
        while seen < count:
            msg = self.read_message()
            if msg is None:
                raise AssertionError(f"connection closed after {out!r}")
            out.append(msg)
            if msg[0] == "Z":
                seen += 1
        return out

    def read_until_closed(self) -> list[Message]:
        """All messages until the peer closes (socket.timeout if it never does)."""
        out: list[Message] = []
        while True:
            msg = self.read_message()
            if msg is None:
                return out
            out.append(msg)

    # -- start-up ---------------------------------------------------------------------------
    def startup(self, user: str, database: str = "postgres", password: str | None = None,
                params: dict[str, str] | None = None, protocol: int = F.PROTOCOL_3_0) -> list[Message]:
        """Send StartupMessage, answer the authentication the peer asks for (SCRAM-SHA-256, md5,
        clear text, none) and read up to the first ReadyForQuery.

        Returns every message received (authentication included). Raises ServerFatal when the peer
        sends an ErrorResponse before ReadyForQuery.
        """
        self.send(F.StartupMessage(protocol, {"user": user, "database": database, **(params or {})}).encode())
        return self.login(user, password)

    def login(self, user: str, password: str | None) -> list[Message]:
        """Answer authentication requests until ReadyForQuery (see ``startup``)."""
        got: list[Message] = []
        scram: ScramClientExchange | None = None
        while True:
            msg = self.read_message()
            if msg is None:
                raise AssertionError(f"connection closed during login after {got!r}")
            got.append(msg)
            t, payload = msg
            if t == "E":
                raise ServerFatal(error_fields(payload), got)
            if t == "K":
                self.backend_key = struct.unpack("!ii", payload)
            if t == "Z":
                return got
            if t != "R":
                continue
            code = struct.unpack_from("!i", payload)[0]
            if code == 0:
                continue
            if password is None:
                raise AssertionError(f"peer asks for authentication code {code} and no password was given")
            if code == 3:
                self.send(F.PasswordMessage.from_password(password).encode())
            elif code == 5:
                self.send(F.PasswordMessage.from_password(md5_response(md5_secret(user, password),
                                                                       payload[4:8])).encode())
            elif code == 10:
                scram = ScramClientExchange(user, password=password)
                self.send(F.SASLInitialResponse("SCRAM-SHA-256", scram.first().encode()).encode())
            elif code == 11:
                assert scram is not None
                self.send(F.SASLResponse(scram.final(payload[4:].decode()).encode()).encode())
            elif code == 12:
                assert scram is not None
                scram.verify(payload[4:].decode())
            else:
                raise AssertionError(f"unsupported authentication code {code}")

    # -- queries ----------------------------------------------------------------------------
    def query(self, sql: str) -> list[Message]:
        """Simple Query; messages up to ReadyForQuery."""
        self.send(F.Query(sql).encode())
        return self.read_until_ready()

    def terminate(self) -> None:
        try:
            self.send(F.Terminate().encode())
        except OSError:
            pass
        self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> "RawConn":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def errors_in(messages: list[Message]) -> list[ErrorResponse]:
    """The decoded ErrorResponses in ``messages``."""
    return [error_fields(p) for t, p in messages if t == "E"]


def data_rows(messages: list[Message]) -> list[list[str | None]]:
    """Text values of the DataRows in ``messages``."""
    rows = []
    for t, p in messages:
        if t != "D":
            continue
        n = struct.unpack_from("!h", p)[0]
        pos = 2
        row: list[str | None] = []
        for _ in range(n):
            ln = struct.unpack_from("!i", p, pos)[0]
            pos += 4
            if ln < 0:
                row.append(None)
            else:
                row.append(p[pos:pos + ln].decode())
                pos += ln
        rows.append(row)
    return rows


def cancel_request(port: int, pid: int, secret: int, host: str = "127.0.0.1", timeout: float = 5.0) -> None:
    """Send CancelRequest(pid, secret) on a new plain connection and wait for the peer to close."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(F.CancelRequest(pid, secret).encode())
        try:
            s.recv(1)
        except (socket.timeout, OSError):
            pass


def wait_closed(sock: socket.socket, timeout: float) -> tuple[bool, bytes]:
    """Read until EOF or ``timeout`` seconds; return (closed, bytes received)."""
    deadline = time.monotonic() + timeout
    got = bytearray()
    sock.setblocking(False)
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False, bytes(got)
            r, _, _ = select.select([sock], [], [], left)
            if not r:
                continue
            try:
                chunk = sock.recv(65536)
            except BlockingIOError:
                continue
            except (ConnectionResetError, OSError):
                return True, bytes(got)
            if not chunk:
                return True, bytes(got)
            got += chunk
    finally:
        sock.setblocking(True)


# -- fault payloads ---------------------------------------------------------------------------

@dataclass
class GarbageResult:
    sent: int
    answered: int


def garbage_payloads(seed: int = 2021, count: int = 50) -> list[bytes]:
    """Malformed start-up traffic: random bytes, truncated and lying length fields, bad codes,
    SSLRequest followed by a non-TLS 'ClientHello', start-up packets without terminators, and
    password messages where none is expected. Deterministic for ``seed``."""
    rng = random.Random(seed)
    startup = F.StartupMessage(F.PROTOCOL_3_0, {"user": "postgres", "database": "postgres"}).encode()
    fixed = [
        b"",                                              # connect and close
        b"\x00",                                          # one byte
        b"\x00\x00\x00",                                  # truncated length
        struct.pack("!i", 0),                             # length 0
        struct.pack("!i", 4),                             # length 4, no code
        struct.pack("!i", 7) + b"\x00\x03\x00",           # length 7 < 8
        struct.pack("!ii", 0x7FFFFFFF, 196608),           # huge length
        struct.pack("!ii", -5, 196608),                   # negative length
        struct.pack("!ii", 100, 196608) + b"user\0",      # truncated startup (claims 100 bytes)
        startup[:len(startup) // 2],                      # half a startup packet
        struct.pack("!ii", 16, 196608) + b"user\0abc",    # unterminated parameter
        struct.pack("!ii", 9, 196608) + b"\x01",          # missing final NUL
        struct.pack("!ii", 12, 196608) + b"user",         # key without value
        struct.pack("!ii", 8, 0x00020000),                # protocol 2.0
        struct.pack("!ii", 8, 0x00040000),                # protocol 4.0
        struct.pack("!ii", 8, 1234),                      # nonsense code
        struct.pack("!iiii", 16, 80877102, 1, 2),         # cancel with unknown key
        struct.pack("!iii", 12, 80877102, 1),             # short cancel request
        F.SSLRequest().encode() + b"\x16\x03\x01\x00\x05hello",  # SSLRequest + pipelined junk
        F.SSLRequest().encode() + F.SSLRequest().encode(),       # SSLRequest twice, pipelined
        F.GSSENCRequest().encode() + b"\xff" * 40,       # GSS then junk
        startup + b"p\x00\x00\x00\x08abcd",              # password before asked, wrong kind
        startup + b"p\x7f\xff\xff\xff",                  # SASL response with a huge length
        startup + b"p\x00\x00\x00\x02",                  # SASL response with length 2
        startup + b"p\x00\x00\x00\x0cSCRAM\0\0\0\0\0\0",  # SASLInitialResponse without a valid body
        startup + b"p\x00\x00\x00\x17NOT-A-MECH\0\x00\x00\x00\x04abcd",  # unknown mechanism
        startup + b"Q\x00\x00\x00\x0dselect 1\0",        # query before authentication
        startup + b"X\x00\x00\x00\x04",                  # terminate during auth
        b"\x16\x03\x01\x02\x00" + b"\x01" * 50,           # fake TLS record header (direct TLS junk)
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",             # HTTP
    ]
    out = list(fixed)
    while len(out) < count:
        n = rng.randint(1, 300)
        blob = bytes(rng.getrandbits(8) for _ in range(n))
        if rng.random() < 0.3:
            blob = struct.pack("!i", rng.randint(-10, 200)) + blob
        out.append(blob)
    return out[:count]


def spray_garbage(port: int, payloads: list[bytes], host: str = "127.0.0.1", linger: float = 0.5) -> GarbageResult:
    """Open one connection per payload (all at once), send it, wait ``linger`` seconds, read what
    came back without blocking, then close every socket (half of them with an RST)."""
    socks: list[socket.socket] = []
    for data in payloads:
        s = socket.create_connection((host, port), timeout=5)
        if data:
            try:
                s.sendall(data)
            except OSError:
                pass
        socks.append(s)
    time.sleep(linger)
    answered = 0
    for i, s in enumerate(socks):
        s.setblocking(False)
        try:
            if s.recv(65536):
                answered += 1
        except (BlockingIOError, OSError):
            pass
        if i % 2:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST on close
        s.close()
    return GarbageResult(sent=len(socks), answered=answered)
