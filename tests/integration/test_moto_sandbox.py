"""The sandbox cloud keeps answering however much it logs (a tester's finding: moto's request log
went to a pipe nobody read, and after a few hundred requests the server blocked for good)."""

from __future__ import annotations

import boto3
import pytest
from botocore.config import Config

pytestmark = pytest.mark.timeout(120)


def test_moto_answers_after_thousands_of_requests(moto_server):
    s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=moto_server.endpoint_url,
                      aws_access_key_id="testing", aws_secret_access_key="testing",
                      config=Config(retries={"max_attempts": 1}, read_timeout=5, connect_timeout=5))
    for _ in range(1500):  # each request is a line of moto's log: well over a pipe's 64 KiB
        s3.list_buckets()
    s3.create_bucket(Bucket="still-answering")
    assert "still-answering" in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    s3.delete_bucket(Bucket="still-answering")
