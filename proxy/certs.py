"""Development certificates: a local CA, a server certificate for localhost, client certificates.

Made with ``cryptography`` (https://cryptography.io/en/latest/x509/tutorial/). Keys are EC P-256,
written as unencrypted PKCS#8 PEM with mode 0600. The server certificate carries the names a local
client uses (DNS ``localhost``, IP ``127.0.0.1`` and ``::1``) as subjectAltName, so libpq's
``sslmode=verify-full sslrootcert=certs/ca.crt host=localhost`` verifies it. Certificates follow
the RFC 5280 profile that strict verifiers (Python 3.13's ``VERIFY_X509_STRICT``, OpenSSL 3)
expect: key identifiers, basicConstraints, keyUsage and extendedKeyUsage.

These are for development and tests only: the CA key sits next to its certificate.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
SERVER_CERT = "server.crt"
SERVER_KEY = "server.key"

#: Validity of the local CA (days).
CA_DAYS = 3650
#: Validity of leaf certificates (days): under the 825-day ceiling some clients (macOS) enforce.
LEAF_DAYS = 800
#: A server certificate closer than this to its expiry is reissued by ensure_dev_certs (days).
RENEW_BEFORE_DAYS = 14
#: Names in the development server certificate.
SERVER_DNS_NAMES = ("localhost",)
SERVER_IPS = ("127.0.0.1", "::1")


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _load(cert_path: Path, key_path: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    return cert, key  # type: ignore[return-value]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _make_ca() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "iasql-proxy development"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "iasql-proxy development CA")])
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _make_leaf(ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, common_name: str,
               *, server: bool) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _new_key()
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + dt.timedelta(days=LEAF_DAYS), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server
                                              else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if server:
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in SERVER_DNS_NAMES]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in SERVER_IPS]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def _ensure_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, bool]:
    """Load the CA in ``directory`` or create one; the bool is True when it was created."""
    ca_crt, ca_key = directory / CA_CERT, directory / CA_KEY
    if ca_crt.exists() and ca_key.exists():
        cert, key = _load(ca_crt, ca_key)
        return cert, key, False
    if ca_crt.exists() != ca_key.exists():
        present = ca_crt if ca_crt.exists() else ca_key
        raise FileExistsError(f"{present} exists without its pair; remove it to create a new CA")
    cert, key = _make_ca()
    _write_key(ca_key, key)
    _write_cert(ca_crt, cert)
    return cert, key, True


def _needs_new_server_cert(crt: Path, key: Path, ca_cert: x509.Certificate) -> bool:
    if not (crt.exists() and key.exists()):
        return True
    try:
        cert = x509.load_pem_x509_certificate(crt.read_bytes())
    except ValueError:
        return True
    if cert.issuer != ca_cert.subject:
        return True
    try:
        cert.verify_directly_issued_by(ca_cert)
    except Exception:  # InvalidSignature, or a key type that cannot have signed it
        return True
    return cert.not_valid_after_utc - _now() < dt.timedelta(days=RENEW_BEFORE_DAYS)


def ensure_dev_certs(directory: Path | str) -> tuple[Path, Path, Path]:
    """Make sure ``directory`` holds a development CA and a server certificate signed by it.

    Creates the directory and any of ``ca.crt``/``ca.key``/``server.crt``/``server.key`` that are
    missing; reissues the server certificate when it is not signed by the CA there or expires within
    RENEW_BEFORE_DAYS. Existing valid files are left alone, so running it again is cheap. Keys get
    mode 0600. Returns ``(ca.crt, server.crt, server.key)`` paths. Raises FileExistsError when only
    one of ``ca.crt``/``ca.key`` exists (we would otherwise overwrite someone's CA).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key, _created = _ensure_ca(directory)
    crt, key = directory / SERVER_CERT, directory / SERVER_KEY
    if _needs_new_server_cert(crt, key, ca_cert):
        cert, leaf_key = _make_leaf(ca_cert, ca_key, "localhost", server=True)
        _write_key(key, leaf_key)
        _write_cert(crt, cert)
    return directory / CA_CERT, crt, key


def make_client_cert(directory: Path | str, common_name: str, ca_dir: Path | str) -> tuple[Path, Path]:
    """Issue a client certificate with CN ``common_name`` (the user name for ``auth_type = cert``).

    Signed by the CA in ``ca_dir`` (created by :func:`ensure_dev_certs` when missing). Written as
    ``<directory>/<common_name>.crt`` and ``.key`` (key mode 0600; characters outside
    ``[A-Za-z0-9._-]`` in the file name become ``_``); always reissued. Returns ``(crt, key)``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key, _ = _ensure_ca(_mkdir(ca_dir))
    cert, key = _make_leaf(ca_cert, ca_key, common_name, server=False)
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", common_name) or "client"
    crt_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
    _write_key(key_path, key)
    _write_cert(crt_path, cert)
    return crt_path, key_path


def _mkdir(path: Path | str) -> Path:
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    return p
