"""Recording client sessions as JSON Lines traces (format: proxy.trace.format).

Theory of operation
-------------------
The session calls ``frontend(data)`` / ``backend(data)`` with raw bytes on the event loop, and
``close()`` at its end. Those calls only append ``(recorder, kind, monotonic_ns, bytes)`` to ONE
bounded queue shared by the process (``queue_events`` items and about ``queue_bytes`` bytes); a
single daemon writer thread cuts the two byte streams into messages, decodes them with the codec
(proxy.wire), redacts secrets, and writes one file per session. When the queue is full the event
is dropped, the session's recording stops there (a gap breaks framing) and its last line says
``"complete": false``: the client is never slowed down by tracing beyond one queue append.

Because every session shares the queue and the event loop is single-threaded, the writer sees all
events in the order the proxy saw them. That is how a CancelRequest, which arrives on its own
connection, is placed in the cancelled session's trace: the writer remembers each session's
BackendKeyData and, when a cancel connection's CancelRequest carries that key, writes a
``CancelRequest`` line with ``"conn": "cancel"`` into that session's trace at that point (the
cancel connection itself then gets no file of its own; a CancelRequest for an unknown key does).

Secrets in statements: a ``SecretTracker`` (proxy.trace.redact) per session follows the typed
messages both ways, and a message that may carry a secret (a statement on ``aws_credentials``
or calling ``set_user_password``/``certificate_import``, the values bound to it, the rows, COPY
data, errors and notices answering it, the rows of ``access_key_request``/``key_pair_request``,
rows under a secret column such as ``secret_access_key`` or ``privatekey``) is written like a password: ``"redacted": true``,
``"hex": null``, its ``len`` and a few safe fields. This runs on the writer thread only.

Files are named ``<UTC time>-<proxy pid>-<sequence>-<user>@<database>.jsonl`` and created when the
session's StartupMessage is seen (or at its end, for sessions that never got that far).
"""

from __future__ import annotations

import atexit
import collections
import datetime as _dt
import json
import os
import queue
import re
import struct
import threading
import time
from pathlib import Path

import proxy.trace.format as fmt
from proxy.trace.redact import SecretTracker
from proxy.wire import backend as B
from proxy.wire import frontend as F
from proxy.wire.codec import ProtocolViolation
from proxy.wire.framing import startup_frame

_HDR = struct.Struct("!Bi")
_FRONT, _BACK, _CLOSE = 0, 1, 2

#: Queue bounds (items, bytes). Module attributes so tests can shrink them.
QUEUE_EVENTS = 65536
QUEUE_BYTES = 64 * 1024 * 1024


def _proxy_version() -> str:
    try:
        from importlib.metadata import version

        return version("iasql-proxy")
    except Exception:
        return "unknown"


class _Writer:
    """The process-wide writer thread and its bounded queue."""

    def __init__(self, max_events: int, max_bytes: int):
        self.queue: queue.Queue = queue.Queue(max_events)
        self.max_bytes = max_bytes
        self.pending_bytes = 0            # approximate (updated from two threads under the GIL)
        self.late_closes: collections.deque = collections.deque()  # close() calls that found the queue full
        self.keys: dict[tuple[int, int], _SessionTrace] = {}      # BackendKeyData -> open session trace
        self.seq = 0
        self.version = _proxy_version()
        self.thread = threading.Thread(target=self._run, name="trace-writer", daemon=True)
        self.stopping = False
        self._dirty: set = set()
        self.thread.start()

    def _run(self) -> None:
        q = self.queue
        while True:
            try:
                item = q.get(timeout=0.2)
            except queue.Empty:
                while self.late_closes:
                    self._close(self.late_closes.popleft())
                if self.stopping:
                    return
                continue
            if item is None:
                while True:  # drain what is left, then stop
                    try:
                        item = q.get_nowait()
                    except queue.Empty:
                        break
                    if item is not None:
                        self._handle(item)
                while self.late_closes:
                    self._close(self.late_closes.popleft())
                return
            self._handle(item)
            if q.empty():
                for st in list(self._dirty):
                    st.flush()
                self._dirty.clear()

    def _handle(self, item) -> None:
        rec, kind, t, data = item
        if data is not None:
            self.pending_bytes -= len(data)
        st = rec._trace
        if st is None:
            if kind == _CLOSE:
                return  # a connection that never sent or got a byte (a port probe): no file
            self.seq += 1
            st = rec._trace = _SessionTrace(self, rec, self.seq, t)
        try:
            if kind == _FRONT:
                st.frontend(data, t)
            elif kind == _BACK:
                st.backend(data, t)
            else:
                self._close(rec)
                return
        except Exception as e:  # a recorder bug must not kill the writer: the trace says what happened
            st.broken(f"{type(e).__name__}: {e}")
        self._dirty.add(st)

    def _close(self, rec: "Recorder") -> None:
        st = rec._trace
        if st is None:
            return
        try:
            st.close(time.monotonic_ns())
        except Exception:
            pass
        self._dirty.discard(st)

    def stop(self, timeout: float = 5.0) -> None:
        """Write what is queued and stop (at interpreter exit)."""
        self.stopping = True
        try:
            self.queue.put(None, timeout=timeout)
        except queue.Full:
            pass
        self.thread.join(timeout)


_writer: _Writer | None = None
_writer_lock = threading.Lock()


def _get_writer() -> _Writer:
    global _writer
    if _writer is None:
        with _writer_lock:
            if _writer is None:
                _writer = _Writer(QUEUE_EVENTS, QUEUE_BYTES)
                atexit.register(_writer.stop)
    return _writer


def flush(timeout: float = 5.0) -> bool:
    """Wait until everything queued so far is written (for tests and shutdown). True when done."""
    w = _writer
    if w is None:
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if w.queue.empty() and not w.late_closes and w.pending_bytes <= 0:
            time.sleep(0.05)  # the item taken last may still be in _handle
            if w.queue.empty():
                return True
        time.sleep(0.01)
    return False


class Recorder:
    """One session's recorder. ``frontend``/``backend``/``close`` are cheap and never block."""

    __slots__ = ("record_dir", "session", "_writer", "_dropping", "dropped_bytes", "_closed", "_trace")

    def __init__(self, record_dir: Path, session=None):
        self.record_dir = Path(record_dir)
        self.session = session
        self._writer = _get_writer()
        self._dropping = False
        self.dropped_bytes = 0
        self._closed = False
        self._trace: _SessionTrace | None = None   # writer-thread state (touched only by the writer)

    @classmethod
    def for_session(cls, record_dir, session) -> "Recorder":
        """The hook ``ProxyApp.new_recorder`` calls for each new client session."""
        return cls(Path(record_dir), session)

    def _put(self, kind: int, data: bytes) -> None:
        if self._dropping or self._closed:
            self.dropped_bytes += len(data)
            return
        if type(data) is not bytes:
            data = bytes(data)
        w = self._writer
        if w.pending_bytes + len(data) > w.max_bytes:
            self._dropping = True
            self.dropped_bytes += len(data)
            return
        try:
            w.queue.put_nowait((self, kind, time.monotonic_ns(), data))
        except queue.Full:
            self._dropping = True
            self.dropped_bytes += len(data)
            return
        w.pending_bytes += len(data)

    def frontend(self, data: bytes) -> None:
        """Bytes the client sent (after TLS), in any chunking."""
        self._put(_FRONT, data)

    def backend(self, data: bytes) -> None:
        """Bytes sent to the client (before TLS), in any chunking."""
        self._put(_BACK, data)

    def close(self) -> None:
        """The session ended: the trace gets its last line and its file is closed."""
        if self._closed:
            return
        self._closed = True
        try:
            self._writer.queue.put_nowait((self, _CLOSE, time.monotonic_ns(), None))
        except queue.Full:
            self._writer.late_closes.append(self)


_SAFE = re.compile(r"[^A-Za-z0-9_.@-]+")


class _SessionTrace:
    """Writer-thread state of one session: framing both ways, auth state, the output file."""

    def __init__(self, writer: _Writer, rec: Recorder, seq: int, t0: int):
        self.writer = writer
        self.rec = rec
        self.seq = seq
        self.t0 = t0
        self.wall = _dt.datetime.now(_dt.timezone.utc)
        self.index = 0
        self.fe = bytearray()
        self.be = bytearray()
        self.fe_startup = True        # untyped start-up messages until StartupMessage
        self.pending_answers = 0      # one-byte answers owed to SSLRequest/GSSENCRequest
        self.auth_code: int | None = None
        self.broken_reason: str | None = None
        self.key: tuple[int, int] | None = None
        self.cancel_for: _SessionTrace | None = None  # this connection only cancelled that session
        self.user = self.database = None
        self.secrets = SecretTracker()         # which statements, rows and errors hold a secret
        self.buffered: list[str] | None = []   # lines before the file exists
        self.file = None
        self.closed = False

    # -- output ------------------------------------------------------------------------------
    def _header(self) -> str:
        peer = getattr(self.rec.session, "peer", None)
        head = {"trace": fmt.MAGIC, "format": fmt.FORMAT_VERSION, "proxy_version": self.writer.version,
                "time": self.wall.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "client": peer,
                "variable": fmt.default_variable()}
        return json.dumps(head)

    def _open(self) -> None:
        d = self.rec.record_dir
        d.mkdir(parents=True, exist_ok=True)
        who = f"-{self.user}@{self.database}" if self.user else ""
        name = f"{self.wall.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{self.seq:05d}{who}"
        self.file = open(d / (_SAFE.sub("_", name) + ".jsonl"), "w", encoding="utf-8")
        self.file.write(self._header() + "\n")
        for line in self.buffered or ():
            self.file.write(line + "\n")
        self.buffered = None

    def emit(self, obj: dict) -> None:
        if self.closed:
            return
        line = json.dumps(obj, ensure_ascii=False)
        if self.file is None:
            self.buffered.append(line)
        else:
            self.file.write(line + "\n")

    def flush(self) -> None:
        if self.file is not None and not self.file.closed:
            self.file.flush()

    def _line(self, direction: str, name: str, raw: bytes | None, t: int, fields: dict | None = None,
              **extra) -> dict:
        obj = {"i": self.index, "dir": direction, "msg": name}
        if fields is not None:
            obj["fields"] = fields
        obj["hex"] = raw.hex() if raw is not None else None
        obj["t_us"] = (t - self.t0) // 1000
        obj.update(extra)
        self.index += 1
        return obj

    def broken(self, reason: str) -> None:
        """Stop decoding this session (a framing or recorder error); the end line says why."""
        if self.broken_reason is None:
            self.broken_reason = reason

    # -- frontend ----------------------------------------------------------------------------
    def frontend(self, data: bytes, t: int) -> None:
        if self.broken_reason is not None:
            return
        self.fe += data
        buf = self.fe
        while buf:
            if self.fe_startup:
                raw_len = struct.unpack_from("!i", buf, 0)[0] if len(buf) >= 4 else None
                try:
                    payload = startup_frame(buf)
                except ProtocolViolation as e:
                    self.broken(f"frontend: {e.message}")
                    return
                if payload is None:
                    return
                raw = struct.pack("!i", raw_len) + payload
                self._startup_message(raw, payload, t)
                continue
            if len(buf) < 5:
                return
            typ, length = _HDR.unpack_from(buf, 0)
            if length < 4:
                self.broken(f"frontend: invalid message length {length}")
                return
            if len(buf) < 1 + length:
                return
            raw = bytes(buf[:1 + length])
            del buf[:1 + length]
            self._frontend_message(typ, raw, t)

    def _startup_message(self, raw: bytes, payload: bytes, t: int) -> None:
        try:
            msg = F.decode_startup(payload)
        except ProtocolViolation:
            self.emit(self._line("frontend", "StartupPacket", raw, t))
            return
        name = type(msg).__name__
        if isinstance(msg, (F.SSLRequest, F.GSSENCRequest)):
            self.pending_answers += 1
            self.emit(self._line("frontend", name, raw, t, {}))
            return
        if isinstance(msg, F.CancelRequest):
            target = self.writer.keys.get((msg.process_id, msg.secret_key))
            fields = {"process_id": msg.process_id, "secret_key": msg.secret_key}
            if target is not None and not target.closed:
                self.cancel_for = target
                target.emit(target._line("frontend", "CancelRequest", raw, t, fields, conn="cancel"))
            else:
                self.emit(self._line("frontend", name, raw, t, fields))
            return
        self.fe_startup = False
        self.user = msg.parameters.get("user")
        self.database = msg.parameters.get("database") or self.user
        self.emit(self._line("frontend", name, raw, t, {"protocol": msg.protocol, "parameters": dict(msg.parameters)}))
        self._open()

    def _frontend_message(self, typ: int, raw: bytes, t: int) -> None:
        if typ == ord("p"):  # authentication reply: always redacted
            payload = raw[5:]
            if self.auth_code == B.AUTH_SASL:
                fields = {}
                try:
                    fields["mechanism"] = F.SASLInitialResponse.decode(payload).mechanism
                except ProtocolViolation:
                    pass
                self.emit(self._line("frontend", "SASLInitialResponse", None, t, fields, redacted=True, len=len(raw)))
            elif self.auth_code in (B.AUTH_SASL_CONTINUE, B.AUTH_SASL_FINAL):
                self.emit(self._line("frontend", "SASLResponse", None, t, {}, redacted=True, len=len(raw)))
            else:
                self.emit(self._line("frontend", "PasswordMessage", None, t, {}, redacted=True, len=len(raw)))
            return
        name = F.FRONTEND_NAMES.get(typ, f"Unknown_{chr(typ)!r}")
        kept = self.secrets.frontend(typ, raw)
        if kept is not None:  # may carry an AWS secret: never written
            self.emit(self._line("frontend", name, None, t, kept, redacted=True, len=len(raw)))
            return
        fields = None
        try:
            fields = fmt.message_fields(F.decode_frontend(typ, raw[5:]))
        except (ProtocolViolation, ValueError):
            pass
        self.emit(self._line("frontend", name, raw, t, fields))

    # -- backend -----------------------------------------------------------------------------
    def backend(self, data: bytes, t: int) -> None:
        if self.broken_reason is not None:
            return
        self.be += data
        buf = self.be
        while buf:
            if self.pending_answers and buf[0] in (ord("S"), ord("N")):
                self.pending_answers -= 1
                answer = chr(buf[0])
                del buf[:1]
                self.emit(self._line("backend", "SSLResponse", answer.encode(), t, {"answer": answer}))
                continue
            self.pending_answers = 0
            if len(buf) < 5:
                return
            typ, length = _HDR.unpack_from(buf, 0)
            if length < 4:
                self.broken(f"backend: invalid message length {length}")
                return
            if len(buf) < 1 + length:
                return
            raw = bytes(buf[:1 + length])
            del buf[:1 + length]
            self._backend_message(typ, raw, t)

    def _backend_message(self, typ: int, raw: bytes, t: int) -> None:
        payload = raw[5:]
        if typ != 0x52:  # not Authentication*
            kept = self.secrets.backend(typ, raw)
            if kept is not None:  # may carry an AWS secret: never written
                name = B.BACKEND_NAMES.get(typ, f"Unknown_{chr(typ)!r}")
                self.emit(self._line("backend", name, None, t, kept, redacted=True, len=len(raw)))
                return
        try:
            msg = B.decode_backend(typ, payload)
        except (ProtocolViolation, ValueError):
            self.emit(self._line("backend", B.BACKEND_NAMES.get(typ, f"Unknown_{chr(typ)!r}"), raw, t))
            return
        if isinstance(msg, B.Authentication):
            self.auth_code = msg.code
            name = fmt.AUTH_NAMES.get(msg.code, f"Authentication{msg.code}")
            if msg.code in (B.AUTH_SASL_CONTINUE, B.AUTH_SASL_FINAL):
                self.emit(self._line("backend", name, None, t, {"code": msg.code}, redacted=True, len=len(raw)))
                return
            self.emit(self._line("backend", name, raw, t, fmt.message_fields(msg)))
            return
        name = type(msg).__name__
        extra = {}
        if isinstance(msg, B.BackendKeyData):
            self.key = (msg.process_id, msg.secret_key)
            self.writer.keys[self.key] = self
        elif isinstance(msg, B._Fields):
            variable = [k for k, v in msg.fields if k in ("M", "D", "H", "W") and fmt.has_variable_digits(v)]
            if variable:
                extra["variable"] = variable
        self.emit(self._line("backend", name, raw, t, fmt.message_fields(msg), **extra))

    # -- end ---------------------------------------------------------------------------------
    def close(self, t: int) -> None:
        if self.closed:
            return
        if self.key is not None and self.writer.keys.get(self.key) is self:
            del self.writer.keys[self.key]
        if self.cancel_for is not None and self.file is None:
            self.closed = True  # a cancel connection whose request is in the cancelled session's trace
            return
        end = {"end": True, "t_us": (t - self.t0) // 1000, "complete": not self.rec.dropped_bytes
               and self.broken_reason is None}
        if self.rec.dropped_bytes:
            end["dropped_bytes"] = self.rec.dropped_bytes
        if self.broken_reason is not None:
            end["error"] = self.broken_reason
        unframed = {k: n for k, n in (("frontend", len(self.fe)), ("backend", len(self.be))) if n}
        if unframed:
            end["unframed"] = unframed
        self.emit(end)
        if self.file is None:
            self._open()
        self.closed = True
        self.file.close()
