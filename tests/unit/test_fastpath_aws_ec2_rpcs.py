"""The fast path's prefilter (C and Python) sees aws_ec2's RPC names (``key_pair_request``,
``key_pair_import``, ``describe_ami``) at an identifier start, in any letter case, and only there."""

from __future__ import annotations

import pytest

from proxy.router.marker import MODULE_RPC_NAMES, may_call
from proxy.wire import fastpath
from proxy.wire import frontend as F
from tests.unit.test_fastpath import LIMIT, C, q

PASS = 1 * 256 + ord("Q")  # relayed as is: no engine call in it


def test_names_are_known():
    assert {"key_pair_request", "key_pair_import", "describe_ami"} <= set(MODULE_RPC_NAMES)


@pytest.mark.parametrize("impl", [fastpath.scan_client, pytest.param("C", marks=C)])
@pytest.mark.parametrize("data,expected", [
    (q("select * from key_pair_request('k', 'us-east-1')"), -1),
    (q("SELECT * FROM Key_Pair_Import('k', 'ssh-rsa AAAA', NULL)"), -1),
    (q("SELECT attributes::json FROM public.DESCRIBE_AMI('ami-1')"), -1),
    (q('select * from "describe_ami"($1)'), -1),
    (F.Parse("", "select * from key_pair_import($1, $2, $3)").encode() + F.Sync().encode(), -1),
    (q("select my_key_pair_request('k')"), PASS),           # another identifier
    (q("select xdescribe_ami('a')"), PASS),
    (q("select describe_am('a')"), PASS),
    (q("select key_pair_impor('a')"), PASS),
])
def test_scan_client_sees_the_calls(impl, data, expected):
    scan = fastpath.SCAN_CLIENT if impl == "C" else impl
    assert scan(data, False, LIMIT) == expected
    assert may_call(data) == (expected == -1)
