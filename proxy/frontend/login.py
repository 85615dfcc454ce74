"""Login of a client session: start-up messages, TLS, and authentication.

Theory of operation
-------------------
``startup(session)`` reads the start-up messages from the session's input (``read_startup_packet``):
SSLRequest (answered 'S' and upgraded with ``loop.start_tls``; plaintext bytes pipelined behind it
are refused, the CVE-2021-23214 class), GSSENCRequest (answered 'N'), CancelRequest, StartupMessage
(3.0; newer minors and ``_pq_.`` options answered with NegotiateProtocolVersion). It hands a
session for the admin console's database to the console, and authenticates everyone else with
``authenticate(session)``, which the admin console uses for its own users too. Failures are
``ClientError``: the session sends them as FATAL and closes, as Postgres does. Sources: PostgreSQL
protocol chapter ("Start-up", "SSL Session Encryption", "SASL Authentication"), ``ProcessStartupPacket``
in postmaster.c, PgBouncer's client.c for pooler behaviour and error texts.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import ssl
from typing import TYPE_CHECKING

from proxy.auth import AuthFailed, ChannelBindingError, ScramServerExchange, Secret, check_md5, check_plain
from proxy.backend.connection import Credentials
from proxy.tls import peer_common_name
from proxy.wire import backend as B
from proxy.wire import frontend as F
from proxy.wire import sqlstate

if TYPE_CHECKING:
    from proxy.frontend.session import ClientSession

log = logging.getLogger("iasql_proxy.client")

#: Start-up parameters that are not run-time settings and are never re-sent as such.
NOT_SETTINGS = frozenset(("user", "database", "replication"))


class ClientError(Exception):
    """End the login with an ErrorResponse: ``sqlstate``, ``message``, FATAL unless ``severity`` says."""

    def __init__(self, code: str, message: str, *, severity: str = "FATAL", detail: str | None = None,
                 fields: B.ErrorResponse | None = None, hint: str | None = None):
        super().__init__(message)
        self.sqlstate = code
        self.message = message
        self.severity = severity
        self.detail = detail
        self.hint = hint
        self.fields = fields

    def encode(self) -> bytes:
        """The ErrorResponse bytes (the server's own fields when it produced the error)."""
        if self.fields is not None:
            return self.fields.encode()
        return B.error(self.sqlstate, self.message, severity=self.severity, detail=self.detail, hint=self.hint)


def replication_requested(value: str) -> bool:
    """The start-up parameter ``replication`` as PostgreSQL reads it (ProcessStartupPacket:
    ``database`` or a boolean by ``parse_bool``'s rules: a prefix of true/false/yes/no, on/off
    from two letters, 1/0; any case). Returns whether a walsender was asked for. Raises
    ClientError 22023 for any other value, with PostgreSQL's message and hint."""
    if value == "database":
        return True
    v = value.lower()
    if v and ("true".startswith(v) or "yes".startswith(v) or v == "1" or (len(v) >= 2 and "on".startswith(v))):
        return True
    if v and ("false".startswith(v) or "no".startswith(v) or v == "0" or (len(v) >= 2 and "off".startswith(v))):
        return False
    raise ClientError(sqlstate.INVALID_PARAMETER_VALUE, f'invalid value for parameter "replication": "{value}"',
                      hint='Valid values are: "false", 0, "true", 1, "database".')


async def startup(session: "ClientSession") -> bool:
    """Start-up messages, TLS and authentication for ``session`` (PostgreSQL protocol chapter,
    "Start-up" and "SSL Session Encryption"). Sets the session's user, database, start-up
    parameters, target and credentials. Returns True when the client is authenticated and waits
    for its welcome (False: a CancelRequest or the admin console took over). Raises ClientError
    (FATAL with Postgres's SQLSTATE and text: 08P01, 0A000, 22023, 28000, 28P01, 53300, 3D000),
    ProtocolViolation, ConnectionResetError."""
    loop = asyncio.get_running_loop()
    if session.direct_tls:
        obj = session.transport.get_extra_info("ssl_object")
        if obj is None or obj.selected_alpn_protocol() != "postgresql":
            raise ClientError(sqlstate.PROTOCOL_VIOLATION,
                              "received direct SSL connection request without ALPN protocol negotiation extension")
    while True:
        msg = F.decode_startup(await session.read_startup_packet())
        if isinstance(msg, F.SSLRequest):
            ctx = session.app.tls.client
            if session.tls_version is not None:  # a second SSLRequest inside TLS: as Postgres
                raise ClientError(sqlstate.FEATURE_NOT_SUPPORTED,
                                  "unsupported frontend protocol 1234.5679: server supports 3.0 to 3.0")
            if ctx is None:
                session.write(b"N")
                continue
            if session.has_input():
                raise ClientError(sqlstate.PROTOCOL_VIOLATION, "received unencrypted data after SSL request",
                                  detail="This could be either a client-software bug or evidence of an attempted man-in-the-middle attack.")
            session.write(b"S")
            try:
                new = await loop.start_tls(session.transport, session, ctx, server_side=True,
                                           ssl_handshake_timeout=session.cfg.client_login_timeout)
            except (ssl.SSLError, OSError, ConnectionError) as e:
                session.app.tls_failures += 1
                log.info("event=tls_handshake_failed client=%s error=%r", session.peer, str(e))
                raise ConnectionResetError() from e
            if new is None:
                raise ConnectionResetError()
            session.transport = new
            obj = new.get_extra_info("ssl_object")
            session.tls_version = obj.version() if obj else "TLS"
            continue
        if isinstance(msg, F.GSSENCRequest):
            session.write(b"N")
            continue
        if isinstance(msg, F.CancelRequest):
            # detached: the sender may hang up at once, which must not abort the cancel
            session.app.spawn(session.app.cancel(msg.process_id, msg.secret_key))
            session.close()
            return False
        break
    major, minor = msg.protocol >> 16, msg.protocol & 0xFFFF
    if major != 3:
        raise ClientError(sqlstate.FEATURE_NOT_SUPPORTED,
                          f"unsupported frontend protocol {major}.{minor}: server supports 3.0 to 3.0")
    params = dict(msg.parameters)
    unsupported = tuple(k for k in params if k.startswith("_pq_."))
    for k in unsupported:
        del params[k]
    if minor > 0 or unsupported:
        session.write(B.NegotiateProtocolVersion(F.PROTOCOL_3_0, unsupported).encode())
    replication = params.get("replication")
    if replication is not None and replication_requested(replication):
        raise ClientError(sqlstate.FEATURE_NOT_SUPPORTED,
                          "replication connections are not supported by iasql-proxy",
                          detail="Connect to the PostgreSQL server itself for physical or logical replication.")
    session.user = params.get("user", "")
    if not session.user:
        raise ClientError(sqlstate.INVALID_AUTHORIZATION_SPECIFICATION,
                          "no PostgreSQL user name specified in startup packet")
    session.database = params.get("database") or session.user
    session.params = {k: v for k, v in params.items() if k not in NOT_SETTINGS}
    if session.cfg.client_tls_required and session.tls_version is None:
        raise ClientError(sqlstate.INVALID_AUTHORIZATION_SPECIFICATION,
                          f'no pg_hba.conf entry for host "{session.peer.rsplit(":", 1)[0]}", user "{session.user}", '
                          f'database "{session.database}", no encryption')
    if not session.app.admit(session):
        raise ClientError(sqlstate.TOO_MANY_CONNECTIONS, "no more connections allowed (max_client_conn)")
    admin = session.app.admin
    if admin is not None and session.database == admin.database:
        await admin.login(session)  # the admin console answers this session in-process
        return False
    session.target = session.app.target_for(session.database)
    if session.target is None:
        raise ClientError(sqlstate.INVALID_CATALOG_NAME, f'database "{session.database}" does not exist')
    ops = getattr(session.app, "ops", None)
    refused = ops.login_refused(session) if ops is not None else None
    if refused is not None:  # DISABLE db on the admin console
        raise ClientError(sqlstate.PROTOCOL_VIOLATION, refused)
    session.credentials = await authenticate(session)
    return True


async def authenticate(session: "ClientSession") -> Credentials:
    """Run ``auth_type``'s exchange with ``session``'s client; return what the proxy can prove to
    the server for this user (the admin console uses it too).

    Raises ClientError 28P01 (``password authentication failed for user "x"``, Postgres's
    text) or 28000 for certificate failures.
    """
    auth_type = session.cfg.auth_type
    user = session.user
    failed = ClientError(sqlstate.INVALID_PASSWORD, f'password authentication failed for user "{user}"')
    fixed = session.target.password
    if auth_type == "trust":
        secret = await session.app.lookup_secret(user, session.target) if fixed is None else None
        return _credentials(fixed, secret)
    if auth_type == "cert":
        obj = session.transport.get_extra_info("ssl_object")
        cn = peer_common_name(obj) if obj is not None else None
        if cn != user:
            raise ClientError(sqlstate.INVALID_AUTHORIZATION_SPECIFICATION,
                              f'certificate authentication failed for user "{user}"')
        secret = await session.app.lookup_secret(user, session.target) if fixed is None else None
        return _credentials(fixed, secret)
    secret = await session.app.lookup_secret(user, session.target)
    if auth_type == "plain":
        session.write(B.Authentication(B.AUTH_CLEARTEXT).encode())
        password = await _password_message(session)
        if secret is None:
            raise failed
        try:
            check_plain(secret, user, password)
        except AuthFailed:
            raise failed from None
        return Credentials(password=fixed or password, secret=secret)
    if auth_type == "md5" and not (secret is not None and secret.kind == "scram"):
        # as in pg_hba's md5 method, a user whose secret is a SCRAM verifier authenticates with SCRAM
        salt = secrets.token_bytes(4)
        session.write(B.Authentication(B.AUTH_MD5, salt).encode())
        response = await _password_message(session)
        if secret is None:
            raise failed
        try:
            check_md5(secret, user, salt, response)
        except AuthFailed:
            raise failed from None
        return _credentials(fixed, secret)
    # scram-sha-256
    if secret is not None and secret.kind == "md5":
        raise failed  # Postgres: a user with an md5 password cannot use SCRAM
    # over TLS, SCRAM-SHA-256-PLUS with tls-server-end-point channel binding too, as PostgreSQL
    binding = session.app.tls.client_binding if session.tls_version is not None else None
    mechanisms = ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"] if binding is not None else ["SCRAM-SHA-256"]
    session.write(B.Authentication.sasl(mechanisms).encode())
    t, payload = await session.read_message()
    if t != ord("p"):
        raise ClientError(sqlstate.PROTOCOL_VIOLATION, f"expected SASL response, got message type {t}")
    initial = F.SASLInitialResponse.decode(payload)
    if initial.mechanism not in mechanisms:
        raise ClientError(sqlstate.PROTOCOL_VIOLATION, "client selected an invalid SASL authentication mechanism")
    exchange = ScramServerExchange(secret or _mock_secret(), plus=initial.mechanism.endswith("-PLUS"),
                                   binding=binding)
    try:
        server_first = exchange.first((initial.data or b"").decode())
    except ChannelBindingError as e:
        raise ClientError(e.sqlstate, e.message, detail=e.detail) from None
    except (AuthFailed, UnicodeDecodeError):
        raise ClientError(sqlstate.PROTOCOL_VIOLATION, "malformed SCRAM message") from None
    session.write(B.Authentication(B.AUTH_SASL_CONTINUE, server_first.encode()).encode())
    t, payload = await session.read_message()
    if t != ord("p"):
        raise ClientError(sqlstate.PROTOCOL_VIOLATION, f"expected SASL response, got message type {t}")
    try:
        server_final = exchange.final(F.SASLResponse.decode(payload).data.decode())
    except ChannelBindingError as e:
        raise ClientError(e.sqlstate, e.message, detail=e.detail) from None
    except (AuthFailed, UnicodeDecodeError, ValueError):
        raise failed from None
    if secret is None:
        raise failed
    session.write(B.Authentication(B.AUTH_SASL_FINAL, server_final.encode()).encode())
    return Credentials(password=fixed or (secret.value if secret.kind == "plain" else None),
                       secret=exchange.secret, client_key=exchange.client_key)

async def _password_message(session: "ClientSession") -> str:
    t, payload = await session.read_message()
    if t != ord("p"):
        raise ClientError(sqlstate.PROTOCOL_VIOLATION, f"expected password response, got message type {t}")
    return F.PasswordMessage(payload).password


def _credentials(password: str | None, secret: Secret | None) -> Credentials:
    if password is not None:
        return Credentials(password=password)
    if secret is not None and secret.kind == "plain":
        return Credentials(password=secret.value, secret=secret)
    return Credentials(secret=secret)


def _mock_secret() -> Secret:
    """A random verifier, so an unknown user goes through the whole exchange and fails like a wrong
    password (as Postgres does, to not reveal which user names exist)."""
    return Secret("scram", "", 4096, secrets.token_bytes(16), secrets.token_bytes(32), secrets.token_bytes(32))
