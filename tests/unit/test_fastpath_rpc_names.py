"""The fast path's prefilter (C and Python) sees every module RPC name of ``MODULE_RPC_NAMES`` at
an identifier start, in any letter case, and only there (README "Recognising the calls without
parsing"): a name is looked for around its first ``_``, behind a filter on the bytes on either side
of that ``_`` in the C scan."""

from __future__ import annotations

import pytest

from proxy.router.marker import MODULE_RPC_NAMES, may_call
from proxy.wire import fastpath
from proxy.wire import frontend as F
from tests.unit.test_fastpath import LIMIT, C, q

PASS = 1 * 256 + ord("Q")  # relayed as is: no engine call in it


def test_names_are_known():
    assert {"s3_upload_object", "access_key_request", "key_pair_request", "key_pair_import", "describe_ami",
            "certificate_request", "certificate_import", "set_user_password", "log_group_tail", "start_build",
            "confirm_subscription"} == set(MODULE_RPC_NAMES)


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
    (q("select created_at, user_id, start_time from t_x"), PASS),  # '_' that start no name
])
def test_scan_client_sees_the_calls(impl, data, expected):
    scan = fastpath.SCAN_CLIENT if impl == "C" else impl
    assert scan(data, False, LIMIT) == expected
    assert may_call(data) == (expected == -1)


STARTS = ["", " ", "(", ".", '"', "1", ",", "\n", "=", "::"]   # an identifier starts after these
INSIDE = ["x", "_", "$", "\u00e9", "Z"]                         # ... and not after these


@pytest.mark.parametrize("impl", [fastpath.scan_client, pytest.param("C", marks=C)])
@pytest.mark.parametrize("name", MODULE_RPC_NAMES)
def test_every_name_in_every_case_at_every_start(impl, name):
    scan = fastpath.SCAN_CLIENT if impl == "C" else impl
    for spelled in (name, name.upper(), name.title(), name[:1].upper() + name[1:]):
        for before in STARTS:
            data = q(f"{before}{spelled}('a')")
            assert scan(data, False, LIMIT) == -1, data
            assert may_call(data)
        for before in INSIDE:
            data = q(f"select {before}{spelled}('a')")
            assert scan(data, False, LIMIT) == PASS, data
            assert not may_call(data)
        data = q(f"select {spelled[:-1]}('a')")  # one letter short
        assert scan(data, False, LIMIT) == PASS, data
