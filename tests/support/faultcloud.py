"""FaultCloud: a fault-injecting HTTP proxy between boto3 and a moto server.

Point boto3 (``endpoint_url=cloud.endpoint_url``, path-style S3) at a ``FaultCloud`` wrapped around
a moto server URL; every request is forwarded and its response relayed unchanged, and each request
is classified as one AWS operation:

- query protocol (EC2, IAM, STS, ...): the ``Action`` parameter (form body or query string);
- JSON protocol: the operation part of ``X-Amz-Target`` (``AmazonSQS.CreateQueue`` -> ``CreateQueue``);
- S3 (REST): ``"<METHOD> <what>[?<subresources>]"`` where what is ``/`` (no bucket), ``bucket`` or
  ``object``, e.g. ``PUT bucket``, ``PUT bucket?tagging``, ``GET /``, ``DELETE object``;
- other REST services: ``"<METHOD> <path>"``.

``fail(n)`` / ``fail_after_forward(n)`` make the n-th matching call fail with an error in that
protocol's format, so tests can break "the k-th cloud call of a commit" and check what is left.
Requests to moto's own ``/moto-api/`` are forwarded without being logged or counted.
"""

from __future__ import annotations

import http.client
import json
import threading
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape

READ_PREFIXES = ("describe", "list", "get", "head")
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
              "expect", "host", "content-length"}
S3_VALUED_SUBRESOURCES = {"uploadId", "versionId", "list-type"}


@dataclass
class Call:
    """One classified request: operation name, protocol (query/json/s3/rest), service, mutating."""

    operation: str
    protocol: str
    service: str
    mutating: bool


@dataclass
class _Rule:
    nth: int
    mutating_only: bool
    status: int
    code: str
    message: str
    after_forward: bool
    seen: int = 0
    times: int = 1


def _scope_service(headers) -> str:
    """The service of the SigV4 credential scope (``Credential=AK/date/region/SERVICE/aws4_request``)."""
    auth = headers.get("Authorization", "")
    if "Credential=" in auth:
        parts = auth.split("Credential=", 1)[1].split(",", 1)[0].split("/")
        if len(parts) >= 4:
            return parts[3]
    return ""


def classify(method: str, target: str, headers, body: bytes) -> Call:
    """Classify one request (method, request target ``/path?query``, headers, body bytes) as a Call."""
    url = urlsplit(target)
    query = parse_qs(url.query, keep_blank_values=True)
    service = _scope_service(headers)
    amz_target = headers.get("X-Amz-Target")
    if amz_target:
        op = amz_target.rsplit(".", 1)[-1]
        return Call(op, "json", service, not op.lower().startswith(READ_PREFIXES))
    params = query
    if "x-www-form-urlencoded" in headers.get("Content-Type", "") and body:
        params = {**query, **parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)}
    if "Action" in params and service != "s3":
        op = params["Action"][0]
        if not service and params.get("Version", [""])[0] == "2016-11-15":
            service = "ec2"
        return Call(op, "query", service, not op.lower().startswith(READ_PREFIXES))
    mutating = method in ("PUT", "POST", "DELETE", "PATCH")
    if service in ("s3", ""):
        segments = [s for s in url.path.split("/", 2)[1:] if s]
        what = ("/", "bucket", "object")[min(len(segments), 2)]
        subs = sorted(k for k, v in query.items() if v == [""] or k in S3_VALUED_SUBRESOURCES)
        return Call(f"{method} {what}" + ("?" + "&".join(subs) if subs else ""), "s3", "s3", mutating)
    return Call(f"{method} {url.path}", "rest", service, mutating)


def error_response(call: Call, code: str, message: str) -> tuple[dict[str, str], bytes]:
    """(headers, body bytes) of an AWS-style error with ``code``/``message`` in ``call``'s protocol format."""
    rid = str(uuid.uuid4())
    code_x, msg_x = escape(code), escape(message)
    if call.protocol in ("json", "rest"):  # rest: assumes rest-json (Lambda, EKS...), not rest-xml
        body = json.dumps({"__type": code, "message": message}).encode()
        return {"Content-Type": "application/x-amz-json-1.1", "x-amzn-ErrorType": code, "x-amzn-RequestId": rid}, body
    if call.protocol == "s3":
        xml = f"<Error><Code>{code_x}</Code><Message>{msg_x}</Message><RequestId>{rid}</RequestId></Error>"
        return {"Content-Type": "application/xml", "x-amz-request-id": rid}, xml.encode()
    err = f"<Code>{code_x}</Code><Message>{msg_x}</Message>"
    xml = (f"<Response><Errors><Error>{err}</Error></Errors><RequestID>{rid}</RequestID></Response>"
           if call.service == "ec2" else
           f"<ErrorResponse><Error><Type>Sender</Type>{err}</Error><RequestId>{rid}</RequestId></ErrorResponse>")
    return {"Content-Type": "text/xml", "x-amzn-RequestId": rid}, xml.encode()


class FaultCloud:
    """A loopback HTTP proxy to a moto server that logs AWS operations and injects faults.

    ``FaultCloud(upstream)`` takes the moto base URL (``http://127.0.0.1:5123``). Public state,
    guarded by a lock: ``calls`` (operation names in arrival order, failed ones included), ``log``
    (the matching ``Call`` records) and ``injected`` (operations answered with an injected fault).
    Use as a context manager or with ``start()`` / ``stop()``.
    """

    def __init__(self, upstream: str):
        parts = urlsplit(upstream)
        self.upstream_host, self.upstream_port, self.upstream_netloc = parts.hostname, parts.port or 80, parts.netloc
        self.calls: list[str] = []
        self.log: list[Call] = []
        self.injected: list[str] = []
        self._rules: list[_Rule] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint_url(self) -> str:
        """``http://127.0.0.1:<port>`` of the running proxy (after ``start()``)."""
        assert self._server is not None, "FaultCloud not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> Self:
        """Listen on an ephemeral loopback port, serving in a daemon thread; returns self."""
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="faultcloud", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket (idempotent)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5)
            self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def fail(self, nth: int, *, mutating_only: bool = True, status: int = 400, code: str = "InjectedFault",
             message: str = "injected fault", times: int = 1) -> None:
        """Answer the ``nth`` (1-based, counted from now) matching call with an error, not forwarding it.

        Matching calls are mutating ones when ``mutating_only`` (else all calls). ``status`` is the
        HTTP status (default 400: botocore does not retry it); ``code``/``message`` go in the body.
        The rule fires ``times`` times: for the nth matching call and the ``times - 1`` after it.
        """
        self._add(_Rule(nth, mutating_only, status, code, message, after_forward=False, times=times))

    def fail_after_forward(self, nth: int, *, mutating_only: bool = True, status: int = 400,
                           code: str = "InjectedFault", message: str = "injected fault") -> None:
        """Like ``fail``, but forward the call to moto first (it takes effect) and discard its response."""
        self._add(_Rule(nth, mutating_only, status, code, message, after_forward=True))

    def _add(self, rule: _Rule) -> None:
        if rule.nth < 1:
            raise ValueError("nth is 1-based")
        with self._lock:
            self._rules.append(rule)

    def clear(self) -> None:
        """Remove every fault rule (the call log is kept)."""
        with self._lock:
            self._rules.clear()

    def mutating_calls(self) -> list[str]:
        """Operation names of the mutating calls seen so far (failed ones included), in order."""
        with self._lock:
            return [c.operation for c in self.log if c.mutating]

    def _record(self, call: Call) -> _Rule | None:
        """Log ``call`` and advance the rules; return the rule that fires for it, if any."""
        fired = None
        with self._lock:
            self.calls.append(call.operation)
            self.log.append(call)
            for rule in list(self._rules):
                if call.mutating or not rule.mutating_only:
                    rule.seen += 1
                    if rule.nth <= rule.seen < rule.nth + rule.times and fired is None:
                        fired = rule
                        if rule.seen == rule.nth + rule.times - 1:
                            self._rules.remove(rule)
                        self.injected.append(call.operation)
        return fired

    def _forward(self, method: str, target: str, headers: list[tuple[str, str]], body: bytes):
        """Send one request to moto; returns (status, reason, header list, body bytes)."""
        conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=120)
        try:
            conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            conn.putheader("Host", self.upstream_netloc)  # moto checks no signature: rewriting is fine
            for k, v in headers:
                if k.lower() not in HOP_BY_HOP:
                    conn.putheader(k, v)
            if body or method in ("POST", "PUT", "PATCH"):
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body or None)
            resp = conn.getresponse()
            return resp.status, resp.reason, resp.getheaders(), resp.read()
        finally:
            conn.close()


def _make_handler(cloud: FaultCloud) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # keep test output quiet
            pass

        def _body(self) -> bytes:
            if "chunked" not in self.headers.get("Transfer-Encoding", "").lower():
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))
            data = b""
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                data += self.rfile.read(size)
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return data

        def _send(self, status: int, reason: str | None, headers, body: bytes) -> None:
            self.send_response_only(status, reason)
            for k, v in headers:
                if k.lower() not in ("connection", "keep-alive", "transfer-encoding", "content-length"):
                    self.send_header(k, v)
            no_body = self.command == "HEAD" or status in (204, 304)  # keep upstream's length for these
            length = {k.lower(): v for k, v in headers}.get("content-length") if no_body else str(len(body))
            if length is not None:
                self.send_header("Content-Length", length)
            self.end_headers()
            if not no_body:
                self.wfile.write(body)

        def _handle(self) -> None:
            body, headers = self._body(), list(self.headers.items())
            if self.path.startswith("/moto-api"):  # moto's own control API: not an AWS call
                return self._send(*cloud._forward(self.command, self.path, headers, body))
            call = classify(self.command, self.path, self.headers, body)
            rule = cloud._record(call)
            if rule is None or rule.after_forward:
                try:
                    result = cloud._forward(self.command, self.path, headers, body)
                except OSError as exc:
                    return self._send(502, None, [("Content-Type", "text/plain")], f"upstream: {exc}".encode())
                if rule is None:
                    return self._send(*result)
            err_headers, err_body = error_response(call, rule.code, rule.message)
            self._send(rule.status, None, list(err_headers.items()), err_body)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _handle

    return Handler
