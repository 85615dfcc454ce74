"""The only place that imports boto3: AWS clients and a bounded thread pool for their blocking calls.

``AwsGateway`` is created once per registry (``build_registry``) and shared by every call. Each call
gives it the credentials read from the user's ``aws_credentials`` table (``Credentials``); clients
are cached per (credentials, service, region). Every blocking boto3 call runs in a
``ThreadPoolExecutor`` of ``EngineSettings.aws_max_workers`` threads, with botocore ``Config``
connect/read timeouts and ``standard`` retries. The endpoint is ``EngineSettings.aws_endpoint_url``
(default: boto3's ``AWS_ENDPOINT_URL``), which is how the sandbox moto server is reached.

Failures are raised as ``CloudError`` (never a botocore exception; an answer botocore cannot
parse, such as an endpoint's HTML error page, is ``CloudError("ResponseParserError", ...)``),
which the engine records in the audit log and reports with SQLSTATE 58000.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import boto3
import botocore.exceptions
import botocore.parsers
from botocore.config import Config

from engine.settings import EngineSettings


@dataclass(frozen=True)
class Credentials:
    """An access key pair from ``aws_credentials`` (None values mean boto3's default chain)."""

    access_key_id: str | None
    secret_access_key: str | None


class CloudError(Exception):
    """A failed AWS call: ``code`` (AWS error code or exception class), ``operation``, message."""

    def __init__(self, code: str, message: str, operation: str = ""):
        super().__init__(f"{operation}: {code}: {message}" if operation else f"{code}: {message}")
        self.code = code
        self.operation = operation
        self.aws_message = message


class ReadUnavailable(CloudError):
    """A mapper's ``read`` could not be answered at all by the endpoint (e.g. an operation the
    endpoint does not implement): the sync leaves that table as it is (no row inserted, updated or
    deleted, a progress line says why) instead of failing, and a commit fails only when the user
    changed that table. Raised by mappers that choose to, never made up as an empty answer."""


def available_regions() -> list[str]:
    """The EC2 region names botocore knows (no network call), sorted."""
    return sorted(boto3.session.Session().get_available_regions("ec2"))


class AwsGateway:
    """Runs boto3 calls off the event loop. Thread-safe; ``close()`` shuts the pool down."""

    def __init__(self, settings: EngineSettings):
        self.settings = settings
        self._pool = ThreadPoolExecutor(max_workers=max(1, settings.aws_max_workers),
                                        thread_name_prefix="iasql-aws")
        self._clients: dict[tuple, Any] = {}
        self._lock = threading.Lock()
        self._config = Config(
            connect_timeout=settings.aws_connect_timeout,
            read_timeout=settings.aws_read_timeout,
            retries={"max_attempts": settings.aws_max_attempts, "mode": "standard"},
            # one kept-alive connection per pool thread (botocore's default is 10: more threads
            # than that would open and drop a connection per call)
            max_pool_connections=max(10, settings.aws_max_workers),
            s3={"addressing_style": "path"} if settings.aws_endpoint_url else None,
        )

    def _client(self, creds: Credentials, service: str, region: str) -> Any:
        key = (creds, service, region)
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                session = boto3.session.Session(
                    aws_access_key_id=creds.access_key_id,
                    aws_secret_access_key=creds.secret_access_key,
                    region_name=region,
                )
                client = session.client(service, endpoint_url=self.settings.aws_endpoint_url,
                                        config=self._config)
                self._clients[key] = client
            return client

    def _invoke(self, creds: Credentials, service: str, region: str, operation: str, kwargs: dict) -> Any:
        try:
            client = self._client(creds, service, region)
            result = getattr(client, operation)(**kwargs)
        except botocore.exceptions.ClientError as e:
            err = e.response.get("Error", {})
            raise CloudError(str(err.get("Code", "ClientError")), str(err.get("Message", e)),
                             f"{service}.{operation}") from None
        except botocore.exceptions.NoCredentialsError:
            raise CloudError("NoCredentials",
                             "no AWS credentials: INSERT INTO aws_credentials (access_key_id, "
                             "secret_access_key) VALUES (...)", f"{service}.{operation}") from None
        except (botocore.exceptions.BotoCoreError, botocore.parsers.ResponseParserError) as e:
            raise CloudError(type(e).__name__, str(e), f"{service}.{operation}") from None
        if isinstance(result, dict):
            result.pop("ResponseMetadata", None)
        return result

    async def call(self, creds: Credentials, service: str, region: str, operation: str, **kwargs: Any) -> Any:
        """Run ``<service client in region>.<operation>(**kwargs)`` in the pool and return its result.

        Raises CloudError on any AWS or transport failure.
        """
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._pool, functools.partial(self._invoke, creds, service, region, operation, kwargs))

    async def paginate(self, creds: Credentials, service: str, region: str, operation: str,
                       result_key: str, **kwargs: Any) -> list:
        """All items under ``result_key`` across every page of ``operation``. Raises CloudError."""

        def run() -> list:
            try:
                client = self._client(creds, service, region)
                out: list = []
                for page in client.get_paginator(operation).paginate(**kwargs):
                    out.extend(page.get(result_key, []))
                return out
            except botocore.exceptions.ClientError as e:
                err = e.response.get("Error", {})
                raise CloudError(str(err.get("Code", "ClientError")), str(err.get("Message", e)),
                                 f"{service}.{operation}") from None
            except botocore.exceptions.NoCredentialsError:
                raise CloudError("NoCredentials", "no AWS credentials: INSERT INTO aws_credentials "
                                 "(access_key_id, secret_access_key) VALUES (...)",
                                 f"{service}.{operation}") from None
            except (botocore.exceptions.BotoCoreError, botocore.parsers.ResponseParserError) as e:
                raise CloudError(type(e).__name__, str(e), f"{service}.{operation}") from None

        return await asyncio.get_running_loop().run_in_executor(self._pool, run)

    def close(self) -> None:
        """Stop the thread pool (pending calls finish)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
