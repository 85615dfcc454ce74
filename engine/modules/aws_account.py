"""Module ``aws_account``: credentials and regions (database-only tables) and ``default_aws_region()``.

Tables and columns follow IaSQL's ``aws_account`` module: ``aws_credentials(id, access_key_id,
secret_access_key)`` and ``aws_regions(region, is_default, is_enabled)``. Install seeds
``aws_regions`` with every region botocore knows (no network call); ``us-east-1`` is the default
and, unlike IaSQL (which enables all), only the default region starts enabled, so that reads of
regional resources stay fast. Enable more with ``UPDATE aws_regions SET is_enabled = true``.

``aws_credentials`` belongs to the caller who installs the module and is readable by no other
role (``REVOKE ALL ... FROM PUBLIC``, which also undoes a default privilege granting new tables to
PUBLIC) until its owner grants it; its secret never enters the audit log (``engine.schema``).
"""

from __future__ import annotations

from typing import Any

from engine.aws import available_regions
from engine.modules.base import Col, Mapper, Module

VERSION = "0.1.0"
DEFAULT_REGION = "us-east-1"


class AwsCredentialsMapper(Mapper):
    """``aws_credentials``: the key pair the engine signs AWS calls with (first row by id)."""

    table = "aws_credentials"
    columns = (Col("id", "int", "pk"), Col("access_key_id"), Col("secret_access_key"))
    key = ("id",)
    pk = ("id",)
    cloud = False


class AwsRegionsMapper(Mapper):
    """``aws_regions``: which regions exist, which are read, which is the default."""

    table = "aws_regions"
    columns = (Col("region"), Col("is_default", "bool"), Col("is_enabled", "bool"))
    key = ("region",)
    pk = ("region",)
    cloud = False


async def _seed_regions(db: Any) -> None:
    """Insert every region botocore knows into ``aws_regions`` (``db``: the call's EngineSession)."""
    regions = available_regions()
    if DEFAULT_REGION not in regions:
        regions.append(DEFAULT_REGION)
    await db.execute(
        "INSERT INTO public.aws_regions (region, is_default, is_enabled) "
        "SELECT r, r = $2, r = $2 FROM pg_catalog.unnest($1::varchar[]) AS r ON CONFLICT (region) DO NOTHING",
        (regions, DEFAULT_REGION))


MODULE = Module(
    name="aws_account",
    version=VERSION,
    dependencies=(),
    install_sql=(
        # the caller's keys: its own table, readable by nobody else until the owner grants it
        # (REVOKE from PUBLIC also undoes a default privilege that would grant it to everyone)
        """CREATE TABLE public.aws_credentials (
             id SERIAL PRIMARY KEY,
             access_key_id character varying NOT NULL,
             secret_access_key character varying NOT NULL)""",
        "REVOKE ALL ON public.aws_credentials FROM PUBLIC",
        """CREATE TABLE public.aws_regions (
             region character varying PRIMARY KEY,
             is_default boolean NOT NULL DEFAULT false,
             is_enabled boolean NOT NULL DEFAULT true)""",
        "CREATE UNIQUE INDEX aws_regions_one_default ON public.aws_regions (is_default) WHERE is_default",
        # every name schema-qualified; the getter (which the engine calls) also has a fixed search_path
        """CREATE OR REPLACE FUNCTION public.default_aws_region() RETURNS text LANGUAGE plpgsql STABLE
           SET search_path = pg_catalog, pg_temp AS $$
           DECLARE r text;
           BEGIN
             SELECT region INTO r FROM public.aws_regions WHERE is_default = true;
             RETURN coalesce(r, 'us-east-1');
           END $$""",
        # IaSQL's setter: makes region r the default (an unknown region is refused, 22023)
        """CREATE OR REPLACE FUNCTION public.default_aws_region(r text) RETURNS text LANGUAGE plpgsql
           SET search_path = pg_catalog, pg_temp AS $$
           BEGIN
             IF NOT EXISTS (SELECT 1 FROM public.aws_regions WHERE region = r) THEN
               RAISE EXCEPTION 'unknown AWS region: %', r USING ERRCODE = '22023',
                 HINT = 'SELECT region FROM aws_regions; lists the regions.';
             END IF;
             UPDATE public.aws_regions SET is_default = false WHERE is_default AND region <> r;
             UPDATE public.aws_regions SET is_default = true WHERE region = r AND NOT is_default;
             RETURN r;
           END $$""",
    ),
    uninstall_sql=(
        "DROP TABLE public.aws_regions",
        "DROP TABLE public.aws_credentials",
        "DROP FUNCTION IF EXISTS public.default_aws_region()",
        "DROP FUNCTION IF EXISTS public.default_aws_region(text)",
    ),
    mappers=(AwsCredentialsMapper(), AwsRegionsMapper()),
    description="AWS credentials and regions",
    after_install=_seed_regions,
    functions=(
        ("default_aws_region", "default_aws_region() RETURNS text", "Gets the default AWS region",
         "SELECT * FROM default_aws_region()"),
        ("default_aws_region", "default_aws_region(r text) RETURNS text", "Sets the default AWS region",
         "SELECT * FROM default_aws_region('us-east-1')"),
    ),
)
