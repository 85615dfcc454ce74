"""Byte-exact tables for every wire message, checked both ways (encode and decode).

Each expected byte string is written by hand from the PostgreSQL protocol chapter, "Message
Formats": Byte1 type, Int32 length (counting itself, not the type byte), then the payload. The
start-up messages have no type byte. Tables also used by the framing and malformed-input tests.
"""

from __future__ import annotations

import struct

import pytest

from proxy.wire import backend as B
from proxy.wire import frontend as F
from proxy.wire.codec import ProtocolViolation

# -- frontend (typed) ---------------------------------------------------------------------------
MD5_REPLY = "md5" + "0123456789abcdef0123456789abcdef"

FRONTEND_TABLE: list[tuple[object, bytes]] = [
    (F.Query("select 1"), b"Q\x00\x00\x00\x0dselect 1\x00"),
    (F.Query(""), b"Q\x00\x00\x00\x05\x00"),
    (F.Query("select 'é'"), b"Q\x00\x00\x00\x10select '\xc3\xa9'\x00"),
    (F.Parse("", "select 1"), b"P\x00\x00\x00\x10\x00select 1\x00\x00\x00"),
    (F.Parse("s1", "select $1", (23,)),
     b"P\x00\x00\x00\x17s1\x00select $1\x00\x00\x01\x00\x00\x00\x17"),
    (F.Parse("s2", "select $1, $2", (0, 25)),
     b"P\x00\x00\x00\x1fs2\x00select $1, $2\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\x19"),
    (F.Bind("", ""), b"B\x00\x00\x00\x0c\x00\x00\x00\x00\x00\x00\x00\x00"),
    # mixed parameter formats (text, binary, text), a NULL parameter, and mixed result formats
    (F.Bind("p", "s", (0, 1, 0), (b"42", b"\x00\x00\x00\x07", None), (0, 1)),
     b"B\x00\x00\x00\x2a"
     b"p\x00s\x00"
     b"\x00\x03\x00\x00\x00\x01\x00\x00"
     b"\x00\x03\x00\x00\x00\x0242\x00\x00\x00\x04\x00\x00\x00\x07\xff\xff\xff\xff"
     b"\x00\x02\x00\x00\x00\x01"),
    # one format code applying to all parameters, an empty (not NULL) value
    (F.Bind("", "st", (1,), (b"",), ()),
     b"B\x00\x00\x00\x14\x00st\x00\x00\x01\x00\x01\x00\x01\x00\x00\x00\x00\x00\x00"),
    (F.Describe(b"S", "stmt"), b"D\x00\x00\x00\x0aSstmt\x00"),
    (F.Describe(b"P", ""), b"D\x00\x00\x00\x06P\x00"),
    (F.Execute("", 0), b"E\x00\x00\x00\x09\x00\x00\x00\x00\x00"),
    (F.Execute("p", 100), b"E\x00\x00\x00\x0ap\x00\x00\x00\x00\x64"),
    (F.Close(b"S", "s1"), b"C\x00\x00\x00\x08Ss1\x00"),
    (F.Close(b"P", ""), b"C\x00\x00\x00\x06P\x00"),
    (F.Sync(), b"S\x00\x00\x00\x04"),
    (F.Flush(), b"H\x00\x00\x00\x04"),
    (F.Terminate(), b"X\x00\x00\x00\x04"),
    (F.CopyDone(), b"c\x00\x00\x00\x04"),
    (F.CopyData(b"1\tfoo\n"), b"d\x00\x00\x00\x0a1\tfoo\n"),
    (F.CopyData(b""), b"d\x00\x00\x00\x04"),
    (F.CopyFail("boom"), b"f\x00\x00\x00\x09boom\x00"),
    (F.FunctionCall(1598, (1,), (b"\x00\x00\x00\x01", None), 1),
     b"F\x00\x00\x00\x1c\x00\x00\x06\x3e\x00\x01\x00\x01\x00\x02"
     b"\x00\x00\x00\x04\x00\x00\x00\x01\xff\xff\xff\xff\x00\x01"),
    (F.FunctionCall(2), b"F\x00\x00\x00\x0e\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00"),
    (F.PasswordMessage(b"secret\x00"), b"p\x00\x00\x00\x0bsecret\x00"),
    (F.PasswordMessage(MD5_REPLY.encode() + b"\x00"), b"p\x00\x00\x00\x28" + MD5_REPLY.encode() + b"\x00"),
]

#: The 'p' messages decode_frontend can't tell apart: checked with their own decode().
SASL_TABLE: list[tuple[object, bytes]] = [
    (F.SASLInitialResponse("SCRAM-SHA-256", b"n,,n=,r=abc"),
     b"p\x00\x00\x00\x21SCRAM-SHA-256\x00\x00\x00\x00\x0bn,,n=,r=abc"),
    (F.SASLInitialResponse("SCRAM-SHA-256", None), b"p\x00\x00\x00\x16SCRAM-SHA-256\x00\xff\xff\xff\xff"),
    (F.SASLInitialResponse("X", b""), b"p\x00\x00\x00\x0aX\x00\x00\x00\x00\x00"),
    (F.SASLResponse(b"c=biws,r=abc,p=xyz"), b"p\x00\x00\x00\x16c=biws,r=abc,p=xyz"),
]

# -- start-up phase (untyped) -------------------------------------------------------------------
STARTUP_TABLE: list[tuple[object, bytes]] = [
    (F.StartupMessage(F.PROTOCOL_3_0, {"user": "alice", "database": "db"}),
     b"\x00\x00\x00\x20\x00\x03\x00\x00user\x00alice\x00database\x00db\x00\x00"),
    (F.StartupMessage(F.PROTOCOL_3_0), b"\x00\x00\x00\x09\x00\x03\x00\x00\x00"),
    (F.StartupMessage((3 << 16) | 2, {"_pq_.x": "1"}),
     b"\x00\x00\x00\x12\x00\x03\x00\x02_pq_.x\x001\x00\x00"),
    (F.SSLRequest(), b"\x00\x00\x00\x08\x04\xd2\x16\x2f"),
    (F.GSSENCRequest(), b"\x00\x00\x00\x08\x04\xd2\x16\x30"),
    (F.CancelRequest(1234, 5678), b"\x00\x00\x00\x10\x04\xd2\x16\x2e\x00\x00\x04\xd2\x00\x00\x16\x2e"),
    (F.CancelRequest(-1, -2), b"\x00\x00\x00\x10\x04\xd2\x16\x2e\xff\xff\xff\xff\xff\xff\xff\xfe"),
]

# -- backend ------------------------------------------------------------------------------------
BACKEND_TABLE: list[tuple[object, bytes]] = [
    (B.Authentication(B.AUTH_OK), b"R\x00\x00\x00\x08\x00\x00\x00\x00"),
    (B.Authentication(B.AUTH_CLEARTEXT), b"R\x00\x00\x00\x08\x00\x00\x00\x03"),
    (B.Authentication(B.AUTH_MD5, b"\x01\x02\x03\x04"), b"R\x00\x00\x00\x0c\x00\x00\x00\x05\x01\x02\x03\x04"),
    (B.Authentication(B.AUTH_SASL, b"SCRAM-SHA-256-PLUS\x00SCRAM-SHA-256\x00\x00"),
     b"R\x00\x00\x00\x2a\x00\x00\x00\x0aSCRAM-SHA-256-PLUS\x00SCRAM-SHA-256\x00\x00"),
    (B.Authentication(B.AUTH_SASL_CONTINUE, b"r=abc,s=c2FsdA==,i=4096"),
     b"R\x00\x00\x00\x1f\x00\x00\x00\x0br=abc,s=c2FsdA==,i=4096"),
    (B.Authentication(B.AUTH_SASL_FINAL, b"v=xyz"), b"R\x00\x00\x00\x0d\x00\x00\x00\x0cv=xyz"),
    (B.BackendKeyData(1234, 5678), b"K\x00\x00\x00\x0c\x00\x00\x04\xd2\x00\x00\x16\x2e"),
    (B.ParameterStatus("client_encoding", "UTF8"), b"S\x00\x00\x00\x19client_encoding\x00UTF8\x00"),
    (B.ReadyForQuery(b"I"), b"Z\x00\x00\x00\x05I"),
    (B.ReadyForQuery(b"T"), b"Z\x00\x00\x00\x05T"),
    (B.ReadyForQuery(b"E"), b"Z\x00\x00\x00\x05E"),
    (B.ErrorResponse((("S", "ERROR"), ("V", "ERROR"), ("C", "42P01"), ("M", 'relation "t" does not exist'),
                      ("H", "h"), ("P", "15"))),
     b"E\x00\x00\x00\x3eSERROR\x00VERROR\x00C42P01\x00Mrelation \"t\" does not exist\x00Hh\x00P15\x00\x00"),
    (B.ErrorResponse(()), b"E\x00\x00\x00\x05\x00"),
    (B.NoticeResponse((("S", "NOTICE"), ("V", "NOTICE"), ("C", "00000"), ("M", "hi"))),
     b"N\x00\x00\x00\x20SNOTICE\x00VNOTICE\x00C00000\x00Mhi\x00\x00"),
    # Postgres puts the whole version (PG_PROTOCOL_LATEST, 3 << 16 | minor) in the first Int32, not only the minor
    (B.NegotiateProtocolVersion(F.PROTOCOL_3_0, ("_pq_.foo",)),
     b"v\x00\x00\x00\x15\x00\x03\x00\x00\x00\x00\x00\x01_pq_.foo\x00"),
    (B.NegotiateProtocolVersion(2), b"v\x00\x00\x00\x0c\x00\x00\x00\x02\x00\x00\x00\x00"),
    (B.RowDescription((B.FieldDescription("id", 16384, 1, 23, 4, -1, 0), B.FieldDescription("name"))),
     b"T\x00\x00\x00\x32\x00\x02"
     b"id\x00\x00\x00\x40\x00\x00\x01\x00\x00\x00\x17\x00\x04\xff\xff\xff\xff\x00\x00"
     b"name\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x19\xff\xff\xff\xff\xff\xff\x00\x00"),
    (B.RowDescription(()), b"T\x00\x00\x00\x06\x00\x00"),
    (B.DataRow((b"1", None, b"")), b"D\x00\x00\x00\x13\x00\x03\x00\x00\x00\x011\xff\xff\xff\xff\x00\x00\x00\x00"),
    (B.DataRow((None,)), b"D\x00\x00\x00\x0a\x00\x01\xff\xff\xff\xff"),
    (B.DataRow(()), b"D\x00\x00\x00\x06\x00\x00"),
    (B.CommandComplete("SELECT 1"), b"C\x00\x00\x00\x0dSELECT 1\x00"),
    (B.CommandComplete("INSERT 0 1"), b"C\x00\x00\x00\x0fINSERT 0 1\x00"),
    (B.NotificationResponse(42, "chan", "pay"), b"A\x00\x00\x00\x11\x00\x00\x00\x2achan\x00pay\x00"),
    (B.ParameterDescription((23, 25)), b"t\x00\x00\x00\x0e\x00\x02\x00\x00\x00\x17\x00\x00\x00\x19"),
    (B.ParameterDescription(()), b"t\x00\x00\x00\x06\x00\x00"),
    (B.CopyInResponse(0, (0, 0)), b"G\x00\x00\x00\x0b\x00\x00\x02\x00\x00\x00\x00"),
    (B.CopyOutResponse(1, (1,)), b"H\x00\x00\x00\x09\x01\x00\x01\x00\x01"),
    (B.CopyBothResponse(0, ()), b"W\x00\x00\x00\x07\x00\x00\x00"),
    (B.FunctionCallResponse(b"\x00\x00\x00\x01"), b"V\x00\x00\x00\x0c\x00\x00\x00\x04\x00\x00\x00\x01"),
    (B.FunctionCallResponse(None), b"V\x00\x00\x00\x08\xff\xff\xff\xff"),
    (B.ParseComplete(), b"1\x00\x00\x00\x04"),
    (B.BindComplete(), b"2\x00\x00\x00\x04"),
    (B.CloseComplete(), b"3\x00\x00\x00\x04"),
    (B.NoData(), b"n\x00\x00\x00\x04"),
    (B.EmptyQueryResponse(), b"I\x00\x00\x00\x04"),
    (B.PortalSuspended(), b"s\x00\x00\x00\x04"),
    (B.CopyDone(), b"c\x00\x00\x00\x04"),
    (B.CopyData(b"\x00\x01row"), b"d\x00\x00\x00\x09\x00\x01row"),
]


def _ids(table):
    return [f"{type(m).__name__}-{i}" for i, (m, _) in enumerate(table)]


def _split_typed(wire: bytes) -> tuple[int, bytes]:
    """Type byte and payload of one typed message, checking the length field on the way."""
    (length,) = struct.unpack("!i", wire[1:5])
    assert length == len(wire) - 1, "hand-written length field is wrong"
    return wire[0], wire[5:]


# -- tables cover every class -------------------------------------------------------------------
def test_tables_cover_every_message_class():
    covered = {type(m) for table in (FRONTEND_TABLE, SASL_TABLE, STARTUP_TABLE, BACKEND_TABLE) for m, _ in table}
    required = set(F.FRONTEND_TYPES.values()) | set(B.BACKEND_TYPES.values())
    required |= {F.StartupMessage, F.SSLRequest, F.GSSENCRequest, F.CancelRequest,
                 F.SASLInitialResponse, F.SASLResponse}
    assert required - covered == set()


def test_type_bytes_match_the_spec():
    assert {k: v.__name__ for k, v in F.FRONTEND_TYPES.items()} == {
        b"Q": "Query", b"P": "Parse", b"B": "Bind", b"D": "Describe", b"E": "Execute", b"C": "Close",
        b"S": "Sync", b"H": "Flush", b"X": "Terminate", b"d": "CopyData", b"c": "CopyDone",
        b"f": "CopyFail", b"F": "FunctionCall", b"p": "PasswordMessage"}
    assert {k: v.__name__ for k, v in B.BACKEND_TYPES.items()} == {
        b"R": "Authentication", b"K": "BackendKeyData", b"S": "ParameterStatus", b"Z": "ReadyForQuery",
        b"E": "ErrorResponse", b"N": "NoticeResponse", b"v": "NegotiateProtocolVersion",
        b"T": "RowDescription", b"D": "DataRow", b"C": "CommandComplete", b"A": "NotificationResponse",
        b"t": "ParameterDescription", b"G": "CopyInResponse", b"H": "CopyOutResponse",
        b"W": "CopyBothResponse", b"V": "FunctionCallResponse", b"1": "ParseComplete",
        b"2": "BindComplete", b"3": "CloseComplete", b"n": "NoData", b"I": "EmptyQueryResponse",
        b"s": "PortalSuspended", b"c": "CopyDone", b"d": "CopyData"}
    assert F.FRONTEND_NAMES[ord("Q")] == "Query" and B.BACKEND_NAMES[ord("Z")] == "ReadyForQuery"


# -- frontend -----------------------------------------------------------------------------------
@pytest.mark.parametrize("msg,wire", FRONTEND_TABLE, ids=_ids(FRONTEND_TABLE))
def test_frontend_encode(msg, wire):
    _split_typed(wire)
    assert msg.encode() == wire


@pytest.mark.parametrize("msg,wire", FRONTEND_TABLE, ids=_ids(FRONTEND_TABLE))
def test_frontend_decode(msg, wire):
    t, payload = _split_typed(wire)
    assert type(msg).decode(payload) == msg
    assert F.decode_frontend(t, payload) == msg


@pytest.mark.parametrize("msg,wire", SASL_TABLE, ids=_ids(SASL_TABLE))
def test_sasl_messages_both_ways(msg, wire):
    t, payload = _split_typed(wire)
    assert msg.encode() == wire
    assert type(msg).decode(payload) == msg
    # on the wire they are 'p' messages: decode_frontend hands back the raw payload to re-decode
    assert F.decode_frontend(t, payload) == F.PasswordMessage(payload)


def test_password_message_helpers():
    assert F.PasswordMessage.from_password("secret").encode() == b"p\x00\x00\x00\x0bsecret\x00"
    assert F.PasswordMessage(b"secret\x00").password == "secret"
    assert F.PasswordMessage(MD5_REPLY.encode() + b"\x00").password == MD5_REPLY
    for bad in (b"secret", b"a\x00b\x00", b"\xff\x00"):
        with pytest.raises(ProtocolViolation):
            F.PasswordMessage(bad).password


def test_bind_param_format_rule():
    assert F.Bind("", "", (), (b"1", b"2")).param_format(1) == 0
    assert F.Bind("", "", (1,), (b"1", b"2")).param_format(1) == 1
    assert F.Bind("", "", (0, 1), (b"1", b"2")).param_format(0) == 0
    assert F.Bind("", "", (0, 1), (b"1", b"2")).param_format(1) == 1


def test_encode_refuses_embedded_nul():
    with pytest.raises(ValueError):
        F.Query("select\x001").encode()
    with pytest.raises(ValueError):
        B.ParameterStatus("a\x00", "b").encode()


# -- start-up -----------------------------------------------------------------------------------
@pytest.mark.parametrize("msg,wire", STARTUP_TABLE, ids=_ids(STARTUP_TABLE))
def test_startup_both_ways(msg, wire):
    (length,) = struct.unpack("!i", wire[:4])
    assert length == len(wire), "hand-written length field is wrong"
    assert msg.encode() == wire
    assert F.decode_startup(wire[4:]) == msg


def test_startup_request_codes():
    assert F.PROTOCOL_3_0 == 0x00030000
    assert F.SSL_REQUEST_CODE == (1234 << 16) | 5679
    assert F.GSSENC_REQUEST_CODE == (1234 << 16) | 5680
    assert F.CANCEL_REQUEST_CODE == (1234 << 16) | 5678


# -- backend ------------------------------------------------------------------------------------
@pytest.mark.parametrize("msg,wire", BACKEND_TABLE, ids=_ids(BACKEND_TABLE))
def test_backend_encode(msg, wire):
    _split_typed(wire)
    assert msg.encode() == wire


@pytest.mark.parametrize("msg,wire", BACKEND_TABLE, ids=_ids(BACKEND_TABLE))
def test_backend_decode(msg, wire):
    t, payload = _split_typed(wire)
    assert type(msg).decode(payload) == msg
    assert B.decode_backend(t, payload) == msg


def test_authentication_helpers():
    sasl = B.Authentication.sasl(["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"])
    assert sasl.encode() == b"R\x00\x00\x00\x2a\x00\x00\x00\x0aSCRAM-SHA-256-PLUS\x00SCRAM-SHA-256\x00\x00"
    assert sasl.mechanisms() == ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]
    assert B.Authentication.sasl(["SCRAM-SHA-256"]).encode() == b"R\x00\x00\x00\x17\x00\x00\x00\x0aSCRAM-SHA-256\x00\x00"
    assert B.AUTHENTICATION_OK == b"R\x00\x00\x00\x08\x00\x00\x00\x00"
    assert (B.AUTH_OK, B.AUTH_CLEARTEXT, B.AUTH_MD5, B.AUTH_SASL, B.AUTH_SASL_CONTINUE, B.AUTH_SASL_FINAL) == (
        0, 3, 5, 10, 11, 12)


def test_error_response_build():
    err = B.ErrorResponse.build("ERROR", "42P01", 'relation "t" does not exist', hint="h", position="15")
    assert err.encode() == (b"E\x00\x00\x00\x3eSERROR\x00VERROR\x00C42P01\x00Mrelation \"t\" does not exist\x00"
                            b"Hh\x00P15\x00\x00")
    assert err.sqlstate == "42P01" and err.message == 'relation "t" does not exist'
    assert err.get("H") == "h" and err.get("D") is None and err.get("D", "-") == "-"

    full = B.ErrorResponse.build("FATAL", "28P01", "m", detail="d", hint="h", schema_name="s", table_name="t",
                                 column_name="c", data_type_name="dt", constraint_name="k", where="w",
                                 internal_position="3", internal_query="iq", file="f.c", line="9",
                                 routine="r", severity_nonlocalized=None)
    assert full.fields == (("S", "FATAL"), ("V", "FATAL"), ("C", "28P01"), ("M", "m"), ("D", "d"), ("H", "h"),
                           ("s", "s"), ("t", "t"), ("c", "c"), ("d", "dt"), ("n", "k"), ("W", "w"),
                           ("p", "3"), ("q", "iq"), ("F", "f.c"), ("L", "9"), ("R", "r"))
    assert B.ErrorResponse.decode(full.encode()[5:]) == full

    assert B.error("28P01", "bad", severity="FATAL", detail="d") == (
        b"E\x00\x00\x00\x22SFATAL\x00VFATAL\x00C28P01\x00Mbad\x00Dd\x00\x00")
    assert B.notice("hi") == b"N\x00\x00\x00\x20SNOTICE\x00VNOTICE\x00C00000\x00Mhi\x00\x00"
    assert B.NoticeResponse.build("WARNING", "01000", "w").encode()[:1] == b"N"


def test_row_description_unsigned_oids():
    # OIDs are unsigned 32-bit: a type OID above 2**31 decodes as a positive number
    wire = (b"T\x00\x00\x00\x1a\x00\x01x\x00\xff\xff\xff\xfe\x00\x00\x80\x00\x00\x01"
            b"\xff\xff\xff\xff\xff\xff\x00\x00")
    t, payload = _split_typed(wire)
    rd = B.RowDescription.decode(payload)
    assert rd.fields == (B.FieldDescription("x", 0xFFFFFFFE, 0, 0x80000001, -1, -1, 0),)
    assert rd.encode() == wire


def test_oids_above_2_31_round_trip():
    cases = [
        (F.Parse("", "select $1", (0xFFFFFFFF,)),
         b"P\x00\x00\x00\x15\x00select $1\x00\x00\x01\xff\xff\xff\xff"),
        (F.FunctionCall(0x80000000), b"F\x00\x00\x00\x0e\x80\x00\x00\x00\x00\x00\x00\x00\x00\x00"),
        (B.ParameterDescription((0x80000000,)), b"t\x00\x00\x00\x0a\x00\x01\x80\x00\x00\x00"),
    ]
    for msg, wire in cases:
        t, payload = _split_typed(wire)
        assert type(msg).decode(payload) == msg
        assert msg.encode() == wire
