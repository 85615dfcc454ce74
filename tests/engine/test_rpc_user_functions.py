"""At engine level: a module RPC is the engine's only when its module is installed and the function
of that name is the engine's stub (``engine.rpc_claims``); a user's own function of that name is never
run over, replaced (``iasql_install``: 42723) nor dropped (``iasql_uninstall``)."""

from __future__ import annotations

import psycopg
import pytest

from engine.rpc import EngineError
from tests.engine.support import call, sql

STUB_SIG = "public.set_user_password(varchar,varchar,varchar)"
USER_FN = """CREATE FUNCTION public.set_user_password(u varchar, p varchar, r varchar = 'false')
  RETURNS TABLE(status varchar, message varchar) LANGUAGE sql AS $$ SELECT 'APP'::varchar, ''::varchar $$"""


async def _install_iam(registry, ctx, dsn):
    await call(registry, ctx, "iasql_install", "aws_iam")
    if await sql(dsn, "SELECT count(*) FROM aws_credentials") == [(0,)]:
        await sql(dsn, "INSERT INTO aws_credentials (access_key_id, secret_access_key) VALUES ('testing', 'testing')")


async def test_the_engine_never_runs_over_a_users_function(registry, ctx, dsn, aws):
    aws("iam").create_user(UserName="ufn-engine")
    await call(registry, ctx, "iasql_version")
    await sql(dsn, USER_FN)
    fn = registry.get("set_user_password")
    caller = await ctx.open()
    assert await fn.claims(caller, False) is False
    await caller.conn.rollback()
    with pytest.raises(EngineError) as ei:
        await call(registry, ctx, "set_user_password", "ufn-engine", "Sekr1t-Pa55word-x!")
    assert ei.value.sqlstate == "42725" and "not IaSQL's" in ei.value.message
    with pytest.raises(Exception):
        aws("iam").get_login_profile(UserName="ufn-engine")


async def test_install_refuses_to_replace_a_users_function_and_uninstall_keeps_it(registry, ctx, dsn):
    await call(registry, ctx, "iasql_help")  # the metadata
    await sql(dsn, USER_FN)
    with pytest.raises(EngineError) as ei:
        await call(registry, ctx, "iasql_install", "aws_iam")
    assert ei.value.sqlstate == "42723"
    assert ei.value.message == 'function "set_user_password" already exists with same argument types'
    assert "Rename or drop your function" in ei.value.hint
    assert await sql(dsn, "SELECT count(*) FROM iasql_module WHERE name LIKE 'aws_%'") == [(0,)]
    assert await sql(dsn, "SELECT * FROM set_user_password('a', 'b')") == [("APP", "")]
    # the stub taken out by the user while installed: uninstall leaves the user's function
    await sql(dsn, "DROP FUNCTION " + STUB_SIG)
    await _install_iam(registry, ctx, dsn)
    assert await sql(dsn, f"SELECT to_regprocedure('{STUB_SIG}') IS NOT NULL") == [(True,)]
    await sql(dsn, "DROP FUNCTION " + STUB_SIG)
    await sql(dsn, USER_FN)
    await call(registry, ctx, "iasql_uninstall", "aws_iam")
    assert await sql(dsn, "SELECT * FROM set_user_password('a', 'b')") == [("APP", "")]


async def test_a_dropped_stub_hint_and_install_recreates_it(registry, ctx, dsn):
    await _install_iam(registry, ctx, dsn)
    await sql(dsn, "DROP FUNCTION " + STUB_SIG)
    with pytest.raises(EngineError) as ei:
        await call(registry, ctx, "set_user_password", "u", "p")
    assert ei.value.sqlstate == "42883"
    assert "which is installed" in ei.value.hint and "iasql_install('aws_iam')" in ei.value.hint
    await call(registry, ctx, "iasql_install", "aws_iam")
    assert await sql(dsn, f"SELECT to_regprocedure('{STUB_SIG}') IS NOT NULL") == [(True,)]
    with pytest.raises(psycopg.errors.FeatureNotSupported):  # the stub, again
        await sql(dsn, "SELECT * FROM set_user_password('a', 'b')")
