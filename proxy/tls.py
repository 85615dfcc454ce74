"""TLS contexts for both sides of the proxy, built from the configuration's files.

- :func:`client_facing_context`: the server-side context clients handshake with, after an
  SSLRequest or directly (PostgreSQL 17 ``sslnegotiation=direct``).
- :func:`server_facing_context`: the client-side context the proxy uses towards Postgres.
- :class:`TLSContexts`: both, held together so that a configuration reload can build fresh
  contexts from the (possibly renewed) files and swap them in one assignment; connections already
  established keep the context they were made with.

Both sides require TLS 1.2 or newer and offer the ALPN protocol ``postgresql``, as PostgreSQL 17
does (https://www.postgresql.org/docs/17/protocol-flow.html#PROTOCOL-FLOW-SSL). Client-side
``client_tls_sslmode`` meanings follow PgBouncer's: ``verify-ca``/``verify-full`` make the client
present a certificate signed by ``client_tls_ca_file``. Server-side ``server_tls_sslmode`` meanings
follow libpq's (https://www.postgresql.org/docs/current/libpq-ssl.html, table 34.1); whether
``allow``/``prefer`` fall back to plaintext is the server connection's decision, not the context's.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from proxy.config import Config, ConfigError

#: The ALPN protocol name PostgreSQL registered with IANA (used by PostgreSQL 17+).
ALPN_POSTGRESQL = "postgresql"
#: Oldest TLS version either side accepts. TLS 1.0/1.1 are deprecated by RFC 8996.
MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2


def _harden(ctx: ssl.SSLContext) -> None:
    ctx.minimum_version = MINIMUM_VERSION
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    ctx.set_alpn_protocols([ALPN_POSTGRESQL])


def client_facing_context(cfg: Config) -> ssl.SSLContext | None:
    """The context for TLS with clients, or None when ``client_tls_sslmode = disable``.

    Loads ``client_tls_cert_file``/``client_tls_key_file`` (PEM; the cert file may hold the
    chain). With ``client_tls_ca_file`` clients may present a certificate (CERT_OPTIONAL); it is
    required (CERT_REQUIRED) with ``auth_type = cert`` or ``client_tls_sslmode`` ``verify-ca``/
    ``verify-full``. TLS 1.2 minimum, ALPN ``postgresql``, no compression or renegotiation.
    Reads the files on every call, so calling it again picks up renewed certificates. Raises
    ConfigError naming the key whose file cannot be loaded (bad PEM, key not matching the cert).
    """
    if cfg.client_tls_sslmode == "disable":
        return None
    if cfg.client_tls_cert_file is None or cfg.client_tls_key_file is None:
        raise ConfigError("client_tls_cert_file", f"client_tls_sslmode {cfg.client_tls_sslmode} needs a "
                          "certificate and key")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _harden(ctx)
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    try:
        ctx.load_cert_chain(cfg.client_tls_cert_file, cfg.client_tls_key_file)
    except (ssl.SSLError, OSError) as e:
        raise ConfigError("client_tls_cert_file", f"cannot load {cfg.client_tls_cert_file} with key "
                          f"{cfg.client_tls_key_file}: {e}") from e
    if cfg.client_tls_ca_file is not None:
        try:
            ctx.load_verify_locations(cafile=cfg.client_tls_ca_file)
        except (ssl.SSLError, OSError) as e:
            raise ConfigError("client_tls_ca_file", f"cannot load {cfg.client_tls_ca_file}: {e}") from e
        required = cfg.auth_type == "cert" or cfg.client_tls_sslmode in ("verify-ca", "verify-full")
        ctx.verify_mode = ssl.CERT_REQUIRED if required else ssl.CERT_OPTIONAL
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def server_facing_context(cfg: Config) -> ssl.SSLContext | None:
    """The context for TLS towards Postgres, or None when ``server_tls_sslmode = disable``.

    ``allow``/``prefer``/``require``: encrypt without checking the certificate. ``verify-ca``: the
    chain must lead to ``server_tls_ca_file`` (the system's CAs when unset), any host name.
    ``verify-full``: the chain as for verify-ca, and the certificate must name the host we connect
    to (pass ``server_hostname`` to ``wrap_socket``/``open_connection``). TLS 1.2 minimum, ALPN
    ``postgresql``. Raises ConfigError (key ``server_tls_ca_file``) when the CA file cannot be loaded.
    """
    mode = cfg.server_tls_sslmode
    if mode == "disable":
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _harden(ctx)
    if mode in ("verify-ca", "verify-full"):
        try:
            if cfg.server_tls_ca_file is not None:
                ctx.load_verify_locations(cafile=cfg.server_tls_ca_file)
            else:
                ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
        except (ssl.SSLError, OSError) as e:
            raise ConfigError("server_tls_ca_file", f"cannot load {cfg.server_tls_ca_file}: {e}") from e
        ctx.check_hostname = mode == "verify-full"
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


@dataclass(frozen=True)
class TLSContexts:
    """Both TLS contexts of one configuration generation (either may be None = TLS off).

    Build with :meth:`build`; on reload build a new one and replace the reference held by the
    server: a failed build raises before anything is swapped, so the old contexts stay in use.
    """

    client: ssl.SSLContext | None
    server: ssl.SSLContext | None
    #: SCRAM channel binding data of the proxy's own certificate (``tls-server-end-point``, RFC
    #: 5929 section 4.1), offered to clients connected over TLS as SCRAM-SHA-256-PLUS; None
    #: without client TLS
    client_binding: bytes | None = None

    @classmethod
    def build(cls, cfg: Config) -> "TLSContexts":
        """Read the files named in ``cfg`` and build both contexts. Raises ConfigError as the builders do."""
        client = client_facing_context(cfg)
        binding = None
        if client is not None and cfg.client_tls_cert_file is not None:
            binding = server_end_point(_first_certificate(cfg.client_tls_cert_file))
        return cls(client=client, server=server_facing_context(cfg), client_binding=binding)


def _first_certificate(path) -> bytes:
    """The DER bytes of the first certificate in the PEM file ``path`` (the server's own; the
    rest of the file is its chain)."""
    text = open(path, encoding="ascii", errors="replace").read()
    end = "-----END CERTIFICATE-----"
    return ssl.PEM_cert_to_DER_cert(text[text.index("-----BEGIN CERTIFICATE-----"):text.index(end) + len(end)])


def server_end_point(cert_der: bytes) -> bytes:
    """SCRAM's ``tls-server-end-point`` channel binding data of a certificate (DER bytes): its
    hash with the certificate's signature hash algorithm, SHA-256 for MD5 and SHA-1 (RFC 5929
    section 4.1, as PostgreSQL's be_tls_get_certificate_hash computes it). Computed by scramp."""
    from scramp.core import CBindData

    return bytes(CBindData.from_der(cert_der))


def peer_common_name(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> str | None:
    """The subject commonName of the verified client certificate, or None when there is none.

    Used by ``auth_type = cert``, where the CN must equal the user name (PgBouncer's rule). Only
    meaningful with CERT_OPTIONAL/CERT_REQUIRED, where ``getpeercert()`` returns a verified cert.
    """
    cert = ssl_object.getpeercert()
    if not cert:
        return None
    for rdn in cert.get("subject", ()):
        for name, value in rdn:
            if name == "commonName":
                return value
    return None
