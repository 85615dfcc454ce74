"""Engine settings: where the cloud is, and how long the engine waits for locks and for AWS.

The proxy builds one ``EngineSettings`` (from its ``[engine]`` config section) and passes it to
``engine.build_registry``; every field has a default so ``EngineSettings()`` works out of the box.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field


def _env_endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL") or None


@dataclass(frozen=True)
class EngineSettings:
    """Configuration of the IaSQL engine.

    - ``aws_endpoint_url``: override for every AWS service endpoint (boto3's own ``AWS_ENDPOINT_URL``
      environment variable is the default), e.g. a moto server ``http://127.0.0.1:5000``. None means
      real AWS.
    - ``lock_wait_timeout``: seconds a mutating call waits for the per-database IaSQL lock before it
      fails with SQLSTATE 55P03 naming the holder.
    - ``aws_max_workers``: size of the thread pool that runs blocking boto3 calls (and of each
      boto3 client's connection pool); 16, so that aws_ec2's 16 concurrent per-instance reads
      (``USER_DATA_CONCURRENCY``) all run at once.
    - ``aws_connect_timeout`` / ``aws_read_timeout``: botocore socket timeouts, seconds.
    - ``aws_max_attempts``: botocore retry attempts (``standard`` retry mode).
    - ``max_apply_passes``: commit retries passes until one makes no progress, at most this many.
    - ``transaction_ttl_seconds``: an IaSQL transaction opened by ``iasql_begin`` is considered
      abandoned after this long (IaSQL uses 30 minutes).
    """

    aws_endpoint_url: str | None = field(default_factory=_env_endpoint)
    lock_wait_timeout: float = 30.0
    aws_max_workers: int = 16
    aws_connect_timeout: float = 10.0
    aws_read_timeout: float = 60.0
    aws_max_attempts: int = 3
    max_apply_passes: int = 8
    transaction_ttl_seconds: float = 30 * 60
