"""Password secrets and the crypto of md5 / SCRAM-SHA-256, for both sides of the proxy (no I/O).

Follows PostgreSQL's authentication chapter (auth-password) and RFC 5802/7677. The SCRAM server
role is scramp's; what scramp does not offer is the pass-through PgBouncer does (and this proxy
does too): recovering the client's ClientKey from its proof, then proving to the real server with
that ClientKey, so the proxy never needs the plaintext password.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets as _secrets
from dataclasses import dataclass

import scramp


class AuthFailed(Exception):
    """The client's credentials were wrong (the caller sends FATAL 28P01 with Postgres's text)."""


@dataclass(frozen=True)
class Secret:
    """A user's stored secret: ``kind`` is 'plain', 'md5' (``value`` = 'md5' + hex) or 'scram'.

    For 'scram', ``iterations``, ``salt``, ``stored_key`` and ``server_key`` come from a verifier
    ``SCRAM-SHA-256$<iter>:<salt b64>$<StoredKey b64>:<ServerKey b64>`` (pg_authid.rolpassword).
    """

    kind: str
    value: str
    iterations: int = 0
    salt: bytes = b""
    stored_key: bytes = b""
    server_key: bytes = b""


def parse_secret(text: str) -> Secret:
    """Classify a secret string from an auth_file or pg_authid. Raises ValueError on a bad verifier."""
    if text.startswith("SCRAM-SHA-256$"):
        try:
            _, it_salt, keys = text.split("$")
            it, salt = it_salt.split(":")
            sk, svk = keys.split(":")
            return Secret("scram", text, int(it), base64.b64decode(salt, validate=True),
                          base64.b64decode(sk, validate=True), base64.b64decode(svk, validate=True))
        except (ValueError, TypeError) as e:
            raise ValueError("invalid SCRAM-SHA-256 verifier") from e
    if len(text) == 35 and text.startswith("md5") and all(c in "0123456789abcdef" for c in text[3:]):
        return Secret("md5", text)
    return Secret("plain", text)


def md5_hex(data: bytes) -> str:
    """Lower-case hex MD5 of ``data``."""
    return hashlib.md5(data).hexdigest()


def md5_secret(user: str, password: str) -> str:
    """PostgreSQL's stored md5 form: 'md5' + md5(password || user)."""
    return "md5" + md5_hex((password + user).encode())


def md5_response(md5_stored: str, salt: bytes) -> str:
    """The PasswordMessage for AuthenticationMD5Password: 'md5' + md5(stored hex || salt)."""
    return "md5" + md5_hex(md5_stored[3:].encode() + salt)


def check_md5(secret: Secret, user: str, salt: bytes, response: str) -> None:
    """Verify an md5 PasswordMessage against a plain or md5 secret. Raises AuthFailed (SCRAM secrets can't)."""
    if secret.kind == "plain":
        stored = md5_secret(user, secret.value)
    elif secret.kind == "md5":
        stored = secret.value
    else:
        raise AuthFailed("md5 authentication with a SCRAM secret")
    if not hmac.compare_digest(md5_response(stored, salt), response):
        raise AuthFailed("wrong md5 response")


def check_plain(secret: Secret, user: str, password: str) -> None:
    """Verify a clear-text password against any secret kind. Raises AuthFailed."""
    if secret.kind == "plain":
        ok = hmac.compare_digest(secret.value.encode(), password.encode())
    elif secret.kind == "md5":
        ok = hmac.compare_digest(secret.value, md5_secret(user, password))
    else:
        salted = _salted_password(password, secret.salt, secret.iterations)
        ok = hmac.compare_digest(hashlib.sha256(_hmac(salted, b"Client Key")).digest(), secret.stored_key)
    if not ok:
        raise AuthFailed("wrong password")


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def _salted_password(password: str, salt: bytes, iterations: int) -> bytes:
    from scramp.utils import saslprep  # scramp's SASLprep (RFC 4013)

    try:
        pw = saslprep(password).encode()
    except Exception:  # PostgreSQL uses the raw bytes when SASLprep fails
        pw = password.encode()
    return hashlib.pbkdf2_hmac("sha256", pw, salt, iterations)


class ScramServerExchange:
    """The proxy as SCRAM-SHA-256 server towards a client (RFC 5802/7677 as PostgreSQL speaks it).

    PostgreSQL clients send an empty user name (``n=,``) in client-first, since the user comes from
    the StartupMessage; scramp's server rejects that, so this side of the exchange is done here,
    with scramp still generating verifiers. ``first(client_first) -> server_first``;
    ``final(client_final) -> server_final`` raises AuthFailed on a wrong proof or a malformed
    message. After success ``client_key`` holds the ClientKey recovered from the proof
    (ClientKey = ClientProof XOR ClientSignature), which PgBouncer-style pass-through reuses.
    """

    #: the channel binding type this proxy supports (PostgreSQL supports only this one too)
    BINDING = "tls-server-end-point"

    def __init__(self, secret: Secret, *, plus: bool = False, binding: bytes | None = None):
        """``plus``: the client chose SCRAM-SHA-256-PLUS; ``binding``: the channel binding data of
        the proxy's certificate when the client connection is TLS (None: no channel binding
        possible, SCRAM-SHA-256-PLUS was not offered)."""
        self.plus = plus
        self.binding = binding
        if secret.kind == "plain":
            salt, stored, server, it = scramp.ScramMechanism().make_auth_info(secret.value, iteration_count=4096)
            secret = Secret("scram", "", it, salt, stored, server)
        elif secret.kind != "scram":
            raise AuthFailed("SCRAM authentication with an md5 secret")
        self.secret = secret
        self.client_key: bytes | None = None
        self._gs2 = ""
        self._bare = ""
        self._nonce = ""
        self._server_first = ""

    def first(self, client_first: str) -> str:
        """Take the client-first message; return the server-first. Raises AuthFailed when
        malformed, and ChannelBindingError (08P01) where PostgreSQL refuses the GS2 header: a
        channel binding flag that does not match the chosen mechanism, an unsupported binding
        type, or 'y' (the client thinks the server cannot bind) while the server offered
        SCRAM-SHA-256-PLUS (auth-scram.c, read_client_first_message)."""
        parts = client_first.split(",", 2)
        if len(parts) != 3 or parts[1] != "":
            raise AuthFailed("malformed SCRAM client-first message")
        flag = parts[0]
        if flag.startswith("p="):
            if not self.plus:
                raise ChannelBindingError(
                    "malformed SCRAM message",
                    "The client selected SCRAM-SHA-256 without channel binding, but the SCRAM message "
                    "includes channel binding data.")
            if flag[2:] != self.BINDING:
                raise ChannelBindingError(f'unsupported SCRAM channel-binding type "{flag[2:]}"')
        elif flag in ("n", "y"):
            if self.plus:
                raise ChannelBindingError(
                    "malformed SCRAM message",
                    "The client selected SCRAM-SHA-256-PLUS, but the SCRAM message does not include "
                    "channel binding data.")
            if flag == "y" and self.binding is not None:
                raise ChannelBindingError(
                    "SCRAM channel binding negotiation error",
                    "The client supports SCRAM channel binding but thinks the server does not.  "
                    "However, this server does support channel binding.", sqlstate="28000")
        else:
            raise AuthFailed("malformed SCRAM client-first message")
        self._gs2 = parts[0] + "," + parts[1] + ","
        self._bare = parts[2]
        attrs = _scram_attrs(self._bare)
        nonce = attrs.get("r", "")
        if "n" not in attrs or not nonce or "m" in attrs:
            raise AuthFailed("malformed SCRAM client-first message")
        self._nonce = nonce + base64.b64encode(_secrets.token_bytes(18)).decode()
        s = self.secret
        self._server_first = f"r={self._nonce},s={base64.b64encode(s.salt).decode()},i={s.iterations}"
        return self._server_first

    def final(self, client_final: str) -> str:
        """Take the client-final message; return the server-final. Raises AuthFailed on a bad proof."""
        without_proof, sep, proof_b64 = client_final.rpartition(",p=")
        attrs = _scram_attrs(without_proof)
        if not sep or attrs.get("r") != self._nonce:
            raise AuthFailed("malformed SCRAM client-final message")
        expected = self._gs2.encode() + ((self.binding or b"") if self._gs2.startswith("p=") else b"")
        try:
            if base64.b64decode(attrs.get("c", ""), validate=True) != expected:
                raise ChannelBindingError("SCRAM channel binding check failed", sqlstate="28000")
            proof = base64.b64decode(proof_b64, validate=True)
        except (ValueError, TypeError) as e:
            raise AuthFailed("malformed SCRAM client-final message") from e
        auth_msg = ",".join((self._bare, self._server_first, without_proof)).encode()
        s = self.secret
        if len(proof) != len(s.stored_key):
            raise AuthFailed("malformed SCRAM proof")
        client_key = _xor(proof, _hmac(s.stored_key, auth_msg))
        if not hmac.compare_digest(hashlib.sha256(client_key).digest(), s.stored_key):
            raise AuthFailed("wrong SCRAM proof")
        self.client_key = client_key
        return "v=" + base64.b64encode(_hmac(s.server_key, auth_msg)).decode()


class ChannelBindingError(AuthFailed):
    """A SCRAM message refused for its channel binding: PostgreSQL answers FATAL ``sqlstate``
    (08P01 protocol_violation for a malformed GS2 header, 28000
    invalid_authorization_specification for a downgrade or a binding that does not match) with
    ``message`` and ``detail``."""

    def __init__(self, message: str, detail: str | None = None, sqlstate: str = "08P01"):
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.sqlstate = sqlstate


def _scram_attrs(message: str) -> dict[str, str]:
    out = {}
    for item in message.split(","):
        if len(item) >= 2 and item[1] == "=":
            out.setdefault(item[0], item[2:])
    return out


class ScramClientExchange:
    """The proxy as SCRAM-SHA-256 client towards a server.

    With a ``password`` scramp does the work. With only a ``client_key`` and the verifier
    ``secret`` (pass-through), the proof is computed from the ClientKey; the server's salt and
    iteration count must equal the verifier's, else AuthFailed.
    """

    def __init__(self, user: str, *, password: str | None = None, client_key: bytes | None = None,
                 secret: Secret | None = None, binding: bytes | None = None):
        """``binding``: the ``tls-server-end-point`` data of the server's certificate, to log in
        with SCRAM-SHA-256-PLUS (the server offered it over TLS); None for SCRAM-SHA-256."""
        self.password = password
        self.client_key = client_key
        self.secret = secret
        self.binding = binding
        self.mechanism = "SCRAM-SHA-256-PLUS" if binding is not None else "SCRAM-SHA-256"
        self._gs2 = f"p={ScramServerExchange.BINDING},," if binding is not None else "n,,"
        if password is not None:
            self._client = scramp.ScramClient(
                [self.mechanism], user, password,
                channel_binding=(ScramServerExchange.BINDING, binding) if binding is not None else None)
        else:
            if client_key is None or secret is None or secret.kind != "scram":
                raise AuthFailed("no password or SCRAM key available for the server login")
            self._client = None
            self._nonce = base64.b64encode(_secrets.token_bytes(18)).decode()
        self._auth_msg = b""

    def first(self) -> str:
        """The client-first message (gs2 header 'n,,')."""
        if self._client is not None:
            return self._client.get_client_first()
        self._bare = f"n=,r={self._nonce}"
        return self._gs2 + self._bare

    def final(self, server_first: str) -> str:
        """Take the server-first; return the client-final. Raises AuthFailed on a mismatch."""
        if self._client is not None:
            try:
                self._client.set_server_first(server_first)
                return self._client.get_client_final()
            except scramp.ScramException as e:
                raise AuthFailed(str(e)) from e
        attrs = dict(kv.split("=", 1) for kv in server_first.split(",") if "=" in kv)
        assert self.secret is not None and self.client_key is not None
        if not attrs.get("r", "").startswith(self._nonce):
            raise AuthFailed("server nonce does not extend the client nonce")
        try:
            same = (base64.b64decode(attrs.get("s", ""), validate=True) == self.secret.salt
                    and int(attrs.get("i", "0")) == self.secret.iterations)
        except ValueError as e:
            raise AuthFailed("malformed SCRAM server-first message") from e
        if not same:
            raise AuthFailed("the server's SCRAM salt or iteration count differs from the proxy's verifier")
        cbind = base64.b64encode(self._gs2.encode() + (self.binding or b"")).decode()
        without_proof = f"c={cbind},r={attrs['r']}"
        self._auth_msg = ",".join((self._bare, server_first, without_proof)).encode()
        proof = _xor(self.client_key, _hmac(self.secret.stored_key, self._auth_msg))
        return without_proof + ",p=" + base64.b64encode(proof).decode()

    def verify(self, server_final: str) -> None:
        """Check the server signature. Raises AuthFailed when the server does not know the key."""
        if self._client is not None:
            try:
                self._client.set_server_final(server_final)
            except scramp.ScramException as e:
                raise AuthFailed(str(e)) from e
            return
        assert self.secret is not None
        expected = base64.b64encode(_hmac(self.secret.server_key, self._auth_msg)).decode()
        if not hmac.compare_digest(server_final.strip(), "v=" + expected):
            raise AuthFailed("invalid server signature")
