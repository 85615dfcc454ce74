"""The issue's "Done when": install, begin, INSERT, commit and a read of the table, as ONE psql -c
string through the proxy; the bucket then exists in the sandbox cloud (moto)."""

from __future__ import annotations

import re
import uuid

import boto3
import pytest
from botocore.config import Config

from tests.intercept.conftest import psql

pytestmark = pytest.mark.timeout(90)


def test_one_psql_string_install_begin_insert_commit_select(iasql_proxy, fresh_db, moto_server):
    name = f"iasql-done-{uuid.uuid4().hex[:8]}"  # S3 names are 3-63 characters
    sql = (f"SELECT * FROM iasql_install('aws_s3'); SELECT * FROM iasql_begin(); "
           f"INSERT INTO bucket (name) VALUES ('{name}'); SELECT * FROM iasql_commit(); SELECT name FROM bucket;")
    res = psql(iasql_proxy.port, fresh_db, sql)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    # install rows
    assert "aws_credentials" not in out  # the dependency installed along gets no rows (as IaSQL)
    assert re.search(r"^ aws_s3@0\.1\.0 +\| bucket +\| +\d+$", out, re.M), out
    # the begin row
    assert re.search(r"^ Transaction started \| [0-9a-f-]{36}$", out, re.M), out
    # the INSERT's tag
    assert re.search(r"^INSERT 0 1$", out, re.M), out
    # the commit rows: the bucket is created
    assert re.search(rf"^ create +\| bucket +\| {name} \| bucket {name} in us-east-1$", out, re.M), out
    # the last result: the bucket's name, read after the commit
    last = out.rstrip().split("\n\n")[-1].splitlines()
    assert last[0].strip() == "name" and f" {name}" in last and re.match(r"\(\d+ rows?\)", last[-1]), last
    # progress reached psql as NOTICE lines
    assert "NOTICE:  installing aws_s3@0.1.0" in res.stderr
    assert f"NOTICE:  create bucket {name} in us-east-1" in res.stderr
    # and the bucket exists in the cloud
    s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=moto_server.endpoint_url,
                      aws_access_key_id="testing", aws_secret_access_key="testing",
                      config=Config(s3={"addressing_style": "path"}))
    assert name in [b["Name"] for b in s3.list_buckets()["Buckets"]]
