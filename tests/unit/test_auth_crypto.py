"""Secrets, md5 and SCRAM-SHA-256 (both proxy roles), checked against scramp and against the RFC math."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
import scramp
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.auth import (
    AuthFailed,
    ScramClientExchange,
    ScramServerExchange,
    Secret,
    check_md5,
    check_plain,
    md5_response,
    md5_secret,
    parse_secret,
)

PASSWORD = "pencil"
#: Verifier for PASSWORD, salt bytes 0..15, 4096 iterations (as pg_authid.rolpassword stores it).
VERIFIER = ("SCRAM-SHA-256$4096:AAECAwQFBgcICQoLDA0ODw==$zHCdol2044/ZyWzPLi7oxApCkamKw9Z+E4U/QApd/5Y="
            ":dd5peBOitVnLNFu7VmwP+HiDaaw4OUCv396eVCWhYiE=")
#: Same password, a different salt: what another server (or a re-set password) would hold.
OTHER_SALT = bytes(range(16, 32))
ITER = 4096


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


def _salted(password: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)


def _client_key(password: str, salt: bytes, iterations: int) -> bytes:
    return _hmac(_salted(password, salt, iterations), b"Client Key")


def _verifier(password: str, salt: bytes, iterations: int = ITER) -> str:
    s, sk, svk, it = scramp.ScramMechanism().make_auth_info(password, iteration_count=iterations, salt=salt)
    b = lambda x: base64.b64encode(x).decode()  # noqa: E731
    return f"SCRAM-SHA-256${it}:{b(s)}${b(sk)}:{b(svk)}"


@pytest.fixture(scope="module")
def secret() -> Secret:
    return parse_secret(VERIFIER)


# -- parse_secret -------------------------------------------------------------------------------
def test_parse_scram_verifier_matches_rfc_math(secret):
    assert secret.kind == "scram" and secret.value == VERIFIER
    assert secret.iterations == 4096 and secret.salt == bytes(range(16))
    salted = _salted(PASSWORD, secret.salt, 4096)
    assert secret.stored_key == hashlib.sha256(_hmac(salted, b"Client Key")).digest()
    assert secret.server_key == _hmac(salted, b"Server Key")


def test_parse_md5_and_plain():
    md5 = md5_secret("alice", "secret")
    assert md5 == "md5" + hashlib.md5(b"secretalice").hexdigest()
    assert parse_secret(md5) == Secret("md5", md5)
    for plain in ("secret", "", "md5", "md5" + "0" * 31, "md5" + "0" * 33, "md5" + "G" * 32,
                  "md5" + "ABCDEF0123456789" * 2, "SCRAM-SHA-256"):
        assert parse_secret(plain) == Secret("plain", plain)


@pytest.mark.parametrize("bad", [
    "SCRAM-SHA-256$",
    "SCRAM-SHA-256$4096:c2FsdA==",
    "SCRAM-SHA-256$4096$a:b",
    "SCRAM-SHA-256$x:c2FsdA==$YQ==:Yg==",
    "SCRAM-SHA-256$4096:c2FsdA==$YQ==",
    "SCRAM-SHA-256$4096:c2FsdA==$YQ==:Yg==$extra",
    "SCRAM-SHA-256$4096:c2F*sdA==$YQ==:Yg==",
    "SCRAM-SHA-256$4096:a:b$YQ==:Yg==",
])
def test_parse_bad_scram_verifier(bad):
    with pytest.raises(ValueError):
        parse_secret(bad)


# -- md5 / plain --------------------------------------------------------------------------------
def test_check_md5():
    salt = b"\x01\x02\x03\x04"
    stored = md5_secret("alice", "secret")
    good = "md5" + hashlib.md5(stored[3:].encode() + salt).hexdigest()
    assert md5_response(stored, salt) == good
    check_md5(parse_secret(stored), "alice", salt, good)
    check_md5(parse_secret("secret"), "alice", salt, good)           # plain secret: hashed on the fly
    for secret_text, user, s, resp in [
        (stored, "alice", salt, md5_response(md5_secret("alice", "wrong"), salt)),
        (stored, "alice", b"\x00\x00\x00\x00", good),               # replay with another salt
        ("secret", "bob", salt, good),                                # the user name is in the hash
        (stored, "alice", salt, ""),
        (stored, "alice", salt, good.upper()),
    ]:
        with pytest.raises(AuthFailed):
            check_md5(parse_secret(secret_text), user, s, resp)
    with pytest.raises(AuthFailed):
        check_md5(parse_secret(VERIFIER), "alice", salt, good)


def test_check_plain(secret):
    check_plain(parse_secret("secret"), "alice", "secret")
    check_plain(parse_secret(md5_secret("alice", "secret")), "alice", "secret")
    check_plain(secret, "anyone", PASSWORD)
    for sec, user, pw in [(parse_secret("secret"), "alice", "Secret"),
                          (parse_secret("secret"), "alice", ""),
                          (parse_secret(md5_secret("alice", "secret")), "bob", "secret"),
                          (secret, "alice", "pencil "), (secret, "alice", "")]:
        with pytest.raises(AuthFailed):
            check_plain(sec, user, pw)


# -- the proxy as SCRAM server ------------------------------------------------------------------
def _scramp_login(server: ScramServerExchange, password: str) -> scramp.ScramClient:
    c = scramp.ScramClient(["SCRAM-SHA-256"], "alice", password)
    sf = server.first(c.get_client_first())
    c.set_server_first(sf)
    sfin = server.final(c.get_client_final())
    c.set_server_final(sfin)  # scramp checks the server signature
    return c


def test_scram_server_with_scramp_client(secret):
    server = ScramServerExchange(secret)
    _scramp_login(server, PASSWORD)
    assert server.client_key == _client_key(PASSWORD, secret.salt, secret.iterations)


def test_scram_server_with_plain_secret():
    server = ScramServerExchange(parse_secret("secret"))
    _scramp_login(server, "secret")
    with pytest.raises(AuthFailed):
        _scramp_login(ScramServerExchange(parse_secret("secret")), "wrong")


def test_scram_server_wrong_password(secret):
    server = ScramServerExchange(secret)
    with pytest.raises(AuthFailed):
        _scramp_login(server, "pencil2")
    assert server.client_key is None


def test_scram_server_refuses_md5_secret():
    with pytest.raises(AuthFailed):
        ScramServerExchange(parse_secret(md5_secret("alice", "x")))


def _pg_client_final(password: str, client_first_bare: str, server_first: str, gs2: str = "n,,") -> tuple[str, bytes]:
    """client-final computed from RFC 5802 directly (as libpq does), and the expected ServerSignature."""
    attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
    salted = _salted(password, base64.b64decode(attrs["s"]), int(attrs["i"]))
    client_key = _hmac(salted, b"Client Key")
    without_proof = f"c={base64.b64encode(gs2.encode()).decode()},r={attrs['r']}"
    auth_msg = ",".join((client_first_bare, server_first, without_proof)).encode()
    proof = bytes(a ^ b for a, b in zip(client_key, _hmac(hashlib.sha256(client_key).digest(), auth_msg)))
    server_sig = _hmac(_hmac(salted, b"Server Key"), auth_msg)
    return without_proof + ",p=" + base64.b64encode(proof).decode(), server_sig


@pytest.mark.parametrize("gs2", ["n,,", "y,,"])
def test_scram_server_postgres_style_empty_user(secret, gs2):
    server = ScramServerExchange(secret)
    bare = "n=,r=rOprNGfwEbeRWgbNEkqO"
    sf = server.first(gs2 + bare)
    attrs = dict(kv.split("=", 1) for kv in sf.split(","))
    assert attrs["r"].startswith("rOprNGfwEbeRWgbNEkqO") and len(attrs["r"]) > len("rOprNGfwEbeRWgbNEkqO")
    assert base64.b64decode(attrs["s"]) == secret.salt and attrs["i"] == "4096"
    final, sig = _pg_client_final(PASSWORD, bare, sf, gs2)
    assert server.final(final) == "v=" + base64.b64encode(sig).decode()
    assert server.client_key == _client_key(PASSWORD, secret.salt, 4096)


def test_scram_server_nonces_differ(secret):
    a = ScramServerExchange(secret).first("n,,n=,r=abc")
    b = ScramServerExchange(secret).first("n,,n=,r=abc")
    assert a != b


@pytest.mark.parametrize("client_first", [
    "", "n", "n,", "n,,", "x,,n=,r=abc", "p=tls-server-end-point,,n=,r=abc", "n,a=bob,n=,r=abc",
    "n,,r=abc", "n,,n=", "n,,n=,r=", "n,,m=ext,n=,r=abc", "\u00e9,,n=,r=abc", "n,,n=,r=abc\x00",
])
def test_scram_server_malformed_client_first(secret, client_first):
    server = ScramServerExchange(secret)
    try:
        server.first(client_first)
    except AuthFailed:
        return
    # accepted (e.g. a trailing NUL in the nonce): the exchange must still fail cleanly later
    with pytest.raises(AuthFailed):
        server.final("c=biws,r=zzz,p=AAAA")


def _good_exchange(secret) -> tuple[ScramServerExchange, str, str]:
    server = ScramServerExchange(secret)
    bare = "n=,r=fyko+d2lbbFgONRv9qkxdawL"
    sf = server.first("n,," + bare)
    final, _ = _pg_client_final(PASSWORD, bare, sf)
    return server, sf, final


def _mutations(final: str, nonce: str) -> list[str]:
    without_proof, _, proof = final.rpartition(",p=")
    raw = base64.b64decode(proof)
    flipped = base64.b64encode(bytes([raw[0] ^ 1]) + raw[1:]).decode()
    return [
        "",
        "p=",
        without_proof,                                      # no proof
        without_proof + ",p=",                              # empty proof
        without_proof + ",p=" + proof[:-4],                 # short proof
        without_proof + ",p=" + base64.b64encode(raw + b"x").decode(),
        without_proof + ",p=" + flipped,                    # wrong proof
        without_proof + ",p=" + proof.replace("=", "*"),    # not base64
        without_proof + ",p=\u00e9\u00e9\u00e9\u00e9",      # not ASCII
        f"c=biws,r={nonce}x,p={proof}",                     # nonce changed
        f"c=biws,p={proof}",                                # nonce missing
        f"r={nonce},p={proof}",                             # channel binding missing
        f"c=eSws,r={nonce},p={proof}",                      # gs2 'y,,' but client said 'n,,'
        f"c=b*ws,r={nonce},p={proof}",                      # channel binding not base64
        f"c=cD10bHMtc2VydmVyLWVuZC1wb2ludCws,r={nonce},p={proof}",  # channel binding data
    ]


def test_scram_server_malformed_client_final(secret):
    server, sf, final = _good_exchange(secret)
    nonce = dict(kv.split("=", 1) for kv in sf.split(","))["r"]
    for bad in _mutations(final, nonce):
        s2, sf2, final2 = _good_exchange(secret)
        nonce2 = dict(kv.split("=", 1) for kv in sf2.split(","))["r"]
        bad2 = _mutations(final2, nonce2)[_mutations(final, nonce).index(bad)]
        with pytest.raises(AuthFailed):
            s2.final(bad2)
        assert s2.client_key is None
    assert server.final(final).startswith("v=")


def test_scram_server_final_before_first(secret):
    with pytest.raises(AuthFailed):
        ScramServerExchange(secret).final("c=biws,r=,p=" + base64.b64encode(b"\x00" * 32).decode())


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60), st.text(max_size=120))
def test_scram_server_fuzz(client_first, client_final):
    server = ScramServerExchange(parse_secret(VERIFIER))
    try:
        server.first(client_first)
    except AuthFailed:
        pass
    with pytest.raises(AuthFailed):
        server.final(client_final)


# -- the proxy as SCRAM client (pass-through) ---------------------------------------------------
def _client_login(client: ScramClientExchange, server: ScramServerExchange) -> None:
    cf = client.first()
    sf = server.first(cf)
    cfin = client.final(sf)
    sfin = server.final(cfin)
    client.verify(sfin)


def test_pass_through_with_recovered_client_key(secret):
    front = ScramServerExchange(secret)
    _scramp_login(front, PASSWORD)
    assert front.client_key is not None
    # the real server holds the SAME verifier: the recovered ClientKey is enough
    back = ScramServerExchange(parse_secret(VERIFIER))
    client = ScramClientExchange("alice", client_key=front.client_key, secret=secret)
    assert client.first().startswith("n,,n=,r=")
    _client_login(client, back)
    assert back.client_key == front.client_key


def test_pass_through_different_salt_fails(secret):
    other = parse_secret(_verifier(PASSWORD, OTHER_SALT))
    client = ScramClientExchange("alice", client_key=_client_key(PASSWORD, secret.salt, ITER), secret=secret)
    server = ScramServerExchange(other)
    sf = server.first(client.first())
    with pytest.raises(AuthFailed):
        client.final(sf)


def test_pass_through_different_iterations_fails(secret):
    other = parse_secret(_verifier(PASSWORD, secret.salt, 8192))
    client = ScramClientExchange("alice", client_key=_client_key(PASSWORD, secret.salt, ITER), secret=secret)
    with pytest.raises(AuthFailed):
        client.final(ScramServerExchange(other).first(client.first()))


def test_pass_through_wrong_key_is_refused_by_server(secret):
    client = ScramClientExchange("alice", client_key=b"\x00" * 32, secret=secret)
    with pytest.raises(AuthFailed):
        _client_login(client, ScramServerExchange(secret))


def test_client_detects_forged_server_signature(secret):
    client = ScramClientExchange("alice", client_key=_client_key(PASSWORD, secret.salt, ITER), secret=secret)
    server = ScramServerExchange(secret)
    client.final(server.first(client.first()))
    with pytest.raises(AuthFailed):
        client.verify("v=" + base64.b64encode(b"\x00" * 32).decode())


def test_client_with_password(secret):
    client = ScramClientExchange("alice", password=PASSWORD)
    _client_login(client, ScramServerExchange(secret))
    with pytest.raises(AuthFailed):
        _client_login(ScramClientExchange("alice", password="nope"), ScramServerExchange(secret))


def test_client_without_credentials(secret):
    for kwargs in ({}, {"client_key": b"k" * 32}, {"secret": secret},
                   {"client_key": b"k" * 32, "secret": parse_secret("plain")}):
        with pytest.raises(AuthFailed):
            ScramClientExchange("alice", **kwargs)


@pytest.mark.parametrize("mode", ["pass-through", "password"])
@pytest.mark.parametrize("server_first", [
    "", "garbage", "r=", "r={nonce}", "r={nonce}xyz", "r={nonce}xyz,s=AAEC", "r={nonce}xyz,s=*,i=4096",
    "r={nonce}xyz,s=AAECAwQFBgcICQoLDA0ODw==,i=x", "r={nonce}xyz,s=AAECAwQFBgcICQoLDA0ODw==,i=",
    "r=other,s=AAECAwQFBgcICQoLDA0ODw==,i=4096", "r={nonce}xyz,s=AAECAwQFBgcICQoLDA0ODw==,i=-1",
])
def test_client_malformed_server_first(secret, mode, server_first):
    if mode == "pass-through":
        client = ScramClientExchange("alice", client_key=_client_key(PASSWORD, secret.salt, ITER), secret=secret)
    else:
        client = ScramClientExchange("alice", password=PASSWORD)
    nonce = dict(kv.split("=", 1) for kv in client.first().split(",")[2:])["r"]
    with pytest.raises(AuthFailed):
        client.final(server_first.replace("{nonce}", nonce))


@pytest.mark.parametrize("mode", ["pass-through", "password"])
@settings(max_examples=150, deadline=None)
@given(tail=st.text(max_size=60), server_final=st.text(max_size=60))
def test_client_fuzz(mode, tail, server_final):
    sec = parse_secret(VERIFIER)
    if mode == "pass-through":
        client = ScramClientExchange("alice", client_key=b"\x01" * 32, secret=sec)
    else:
        client = ScramClientExchange("alice", password=PASSWORD)
    nonce = dict(kv.split("=", 1) for kv in client.first().split(",")[2:])["r"]
    for server_first in (tail, f"r={nonce}{tail}", f"r={nonce}x,s=AAECAwQFBgcICQoLDA0ODw==,i={tail}"):
        try:
            client.final(server_first)
        except AuthFailed:
            continue
        with pytest.raises(AuthFailed):
            client.verify(server_final)
        return
