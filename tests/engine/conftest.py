"""Engine fixtures: a fresh database per test, a registry pointed at the session moto server."""

from __future__ import annotations

import uuid

import boto3
import psycopg
import pytest

from engine import EngineSettings, build_registry
from tests.engine.support import Ctx


@pytest.fixture
def settings(moto_server):
    """Engine settings aimed at moto, with short lock waits."""
    return EngineSettings(aws_endpoint_url=moto_server.endpoint_url, lock_wait_timeout=5.0,
                          aws_max_attempts=1, aws_read_timeout=20)


@pytest.fixture
def registry(settings):
    reg = build_registry(settings)
    yield reg
    reg.engine_state.aws.close()


@pytest.fixture
def dbname(pg, moto_server):
    """A new empty database (dropped afterwards); the moto server is reset first."""
    moto_server.reset()
    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(pg.dsn("postgres"), autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    yield name
    with psycopg.connect(pg.dsn("postgres"), autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def dsn(pg, dbname):
    return pg.dsn(dbname)


@pytest.fixture
async def ctx(dsn, dbname):
    c = Ctx(dsn=dsn, database=dbname)
    yield c
    await c.close()


@pytest.fixture
def aws(moto_server):
    """boto3 clients against moto: aws('s3')."""
    from botocore.config import Config

    def make(service: str, region: str = "us-east-1"):
        return boto3.client(service, region_name=region, endpoint_url=moto_server.endpoint_url,
                            aws_access_key_id="testing", aws_secret_access_key="testing",
                            config=Config(s3={"addressing_style": "path"}))

    return make
