"""Registry shape, install/uninstall, stubs, deprecations, injection attempts (real Postgres + moto)."""

from __future__ import annotations

import psycopg
import pytest

from engine import build_registry
from engine.rpc import EngineError
from tests.engine.support import call, sql

EXPECTED = {
    "iasql_install": ([("modules", "text", True)], [("module_name", "varchar"), ("created_table_name", "varchar"), ("record_count", "int4")]),
    "iasql_uninstall": ([("modules", "text", True)], [("module_name", "varchar"), ("dropped_table_name", "varchar"), ("record_count", "int4")]),
    "iasql_begin": ([], [("message", "varchar"), ("transaction_id", "varchar")]),
    "iasql_commit": ([("message", "varchar", False)], [("action", "varchar"), ("table_name", "varchar"), ("id", "varchar"), ("description", "varchar")]),
    "iasql_preview": ([], [("action", "varchar"), ("table_name", "varchar"), ("id", "varchar"), ("description", "varchar")]),
    "iasql_rollback": ([("force", "bool", False)], [("action", "varchar"), ("table_name", "varchar"), ("id", "varchar"), ("description", "varchar")]),
    "iasql_get_errors": ([], [("ts", "timestamptz"), ("message", "varchar")]),
    "iasql_get_sql_since": ([("limit_date", "timestamptz", False)], [("sql", "varchar")]),
    "iasql_modules_list": ([], [("module_name", "varchar"), ("module_version", "varchar"), ("dependencies", "json")]),
    "iasql_modules_installed": ([], [("module_name", "text"), ("module_version", "text"), ("dependencies", "_varchar")]),
    "iasql_version": ([], [("version", "text")]),
    "iasql_help": ([], [("module", "varchar"), ("name", "varchar"), ("signature", "varchar"), ("description", "varchar"), ("sample_usage", "varchar")]),
    "iasql_get_sql_for_transaction": ([("transaction_id", "varchar", False)], [("sql", "varchar")]),
    "iasql_create_review": ([("title", "varchar", False), ("description", "varchar", False)], [("markdown", "text")]),
}
DEPRECATED = {"iasql_apply": "iasql_commit", "iasql_sync": "iasql_commit",
              "iasql_preview_apply": "iasql_preview", "iasql_preview_sync": "iasql_preview"}


def test_registry_names_arguments_and_columns():
    reg = build_registry()
    try:
        module_rpcs = {n for n in reg.names() if reg.get(n).module is not None}  # test_module_rpcs.py
        assert module_rpcs == {"s3_upload_object", "access_key_request", "key_pair_request",
                               "key_pair_import", "describe_ami", "certificate_request", "certificate_import",
                               "set_user_password", "log_group_tail", "start_build", "confirm_subscription"}
        assert reg.names() - module_rpcs == frozenset(EXPECTED) | frozenset(DEPRECATED)
        for name, (args, cols) in EXPECTED.items():
            fn = reg.get(name)
            assert [(c.name, c.type_name) for c in fn.columns] == cols, name
            for a, exp in zip(fn.arguments, args, strict=True):
                assert (a.name, a.type_name) == exp[:2]
                if len(exp) == 3 and exp[2] is True:
                    assert a.variadic
            for c in fn.columns:
                assert isinstance(c.type_oid, int)
        assert reg.get("iasql_commit").arguments[0].default is None
        assert reg.get("iasql_rollback").arguments[0].default is False
        assert reg.get("iasql_install").signature == "iasql_install(VARIADIC modules text[])"
        assert reg.get("iasql_commit").mutating and not reg.get("iasql_preview").mutating
    finally:
        reg.engine_state.aws.close()


async def test_instant_functions_need_no_database_or_cloud():
    """The functions the proxy runs without giving the server connection back answer with no
    context at all (no database, no cloud)."""
    reg = build_registry()
    try:
        instant = {fn.name for fn in reg.functions.values() if fn.instant}
        assert instant == {"iasql_version", "iasql_modules_list"}
        for name in sorted(instant):
            rows = await reg.get(name).impl(None)
            assert rows and all(len(r) == len(reg.get(name).columns) for r in rows), name
    finally:
        reg.engine_state.aws.close()


async def test_install_with_dependencies_then_uninstall(registry, ctx, dsn):
    rows = await call(registry, ctx, "iasql_install", "aws_s3")
    # rows for the module named only, as IaSQL (aws_account came along as a dependency)
    assert rows == [("aws_s3@0.1.0", t, 0) for t in ("bucket", "bucket_website", "bucket_object", "public_access_block")]
    assert (await sql(dsn, "SELECT count(*) > 10 FROM aws_regions")) == [(True,)]
    installed = await call(registry, ctx, "iasql_modules_installed")
    by = {r[0]: r for r in installed}
    assert set(by) == {"aws_account", "aws_s3", "iasql_platform", "iasql_functions"}
    assert "aws_account@0.1.0" in by["aws_s3"][2]
    assert await call(registry, ctx, "iasql_install", "aws_s3") == []  # already installed
    # a module something depends on cannot go
    with pytest.raises(EngineError) as ei:
        await call(registry, ctx, "iasql_uninstall", "aws_account")
    assert ei.value.sqlstate == "2BP01"
    assert "aws_s3@0.1.0 still depends" in ei.value.message
    # every dependent is named at once (aws_vpc came with aws_security_group, its dependency)
    await call(registry, ctx, "iasql_install", "aws_iam", "aws_security_group")
    with pytest.raises(EngineError) as ei:
        await call(registry, ctx, "iasql_uninstall", "aws_account")
    assert ei.value.message == ("Cannot uninstall aws_account as aws_s3@0.1.0, aws_iam@0.1.0, aws_vpc@0.1.0, "
                                "aws_security_group@0.1.0 still depend on one or more of them")
    await call(registry, ctx, "iasql_uninstall", "aws_iam", "aws_security_group", "aws_vpc")
    rows = await call(registry, ctx, "iasql_uninstall", "aws_s3", "aws_account")
    assert {t for _, t, _ in rows} == {"aws_regions", "aws_credentials", "bucket", "bucket_website", "bucket_object",
                                       "public_access_block"}
    assert await sql(dsn, "SELECT to_regclass('bucket') IS NULL, to_regclass('aws_regions') IS NULL") == [(True, True)]
    with pytest.raises(EngineError) as ei:
        await call(registry, ctx, "iasql_uninstall", "iasql_platform")
    assert ei.value.sqlstate == "0A000"


async def test_typo_gets_a_suggestion(registry, ctx):
    with pytest.raises(EngineError) as ei:
        await call(registry, ctx, "iasql_install", "aws_s4")
    assert ei.value.sqlstate == "42704"
    assert ei.value.message == "The following modules do not exist: aws_s4@0.1.0. Did you mean: aws_s3@0.1.0"
    with pytest.raises(EngineError) as ei:
        await call(registry, ctx, "iasql_install", "aws_secrity_group")
    assert "Did you mean: aws_security_group@0.1.0" in ei.value.message
    # the suggestion is the nearest name by edit distance, one per missing name
    with pytest.raises(EngineError) as ei:
        await call(registry, ctx, "iasql_install", "aws_iamm", "aws_acount", "aws_s3")
    assert ei.value.message.endswith("Did you mean: aws_iam@0.1.0, aws_account@0.1.0")


async def test_bad_module_names_are_errors_of_iasql_get_errors(registry, ctx):
    """As every other failed call: the ERROR row iasql_get_errors() lists (IaSQL records them too)."""
    await call(registry, ctx, "iasql_modules_installed")  # the metadata, so that the ERROR rows can be kept
    for fn, arg, code in (("iasql_install", "aws_s4", "42704"), ("iasql_uninstall", "nope", "42704"),
                          ("iasql_install", None, "22004")):
        with pytest.raises(EngineError) as ei:
            await call(registry, ctx, fn, arg)
        assert ei.value.sqlstate == code
    messages = [m for _, m in await call(registry, ctx, "iasql_get_errors")]
    assert len(messages) == 3, messages
    assert messages[2].startswith("iasql_install: The following modules do not exist: aws_s4@0.1.0")
    assert messages[1].startswith("iasql_uninstall: ")
    assert messages[0].startswith("iasql_install: ")


async def test_install_collision(registry, ctx, dsn):
    await call(registry, ctx, "iasql_modules_installed")  # creates the metadata
    await sql(dsn, "CREATE TABLE bucket (x int)")
    with pytest.raises(EngineError) as ei:
        await call(registry, ctx, "iasql_install", "aws_s3")
    assert ei.value.sqlstate == "42P07"
    assert "Module aws_s3 collides with tables: bucket" in ei.value.message
    assert await sql(dsn, "SELECT count(*) FROM iasql_module WHERE name LIKE 'aws_%'") == [(0,)]


@pytest.mark.parametrize("evil", ["aws_s3'; DROP TABLE iasql_module; --", "aws_s3\"", "aws_s3; select 1",
                                  "../aws_s3", "", "aws_s3@0.1.0' OR '1'='1", "AWS S3"])
async def test_injection_through_module_names_is_rejected(registry, ctx, dsn, evil):
    await call(registry, ctx, "iasql_modules_installed")  # creates the metadata
    for fn in ("iasql_install", "iasql_uninstall"):
        with pytest.raises(EngineError) as ei:
            await call(registry, ctx, fn, evil)
        assert ei.value.sqlstate in ("22023", "42704")
    assert await sql(dsn, "SELECT count(*) FROM iasql_module") == [(2,)]


async def test_injection_through_arguments_and_values(registry, ctx, dsn):
    with pytest.raises(EngineError) as ei:
        await call(registry, ctx, "iasql_get_sql_since", "2020-01-01'; DROP TABLE iasql_module; --")
    assert ei.value.sqlstate == "22007"
    with pytest.raises(EngineError):
        await call(registry, ctx, "iasql_install", None)
    await call(registry, ctx, "iasql_install", "aws_iam")
    evil = "r'); DROP TABLE iasql_module; --"
    await sql(dsn, "INSERT INTO iam_role (role_name, assume_role_policy_document, description, attached_policies_arns) "
                   "VALUES (%s, '{\"a\": \"b'')\"}', %s, ARRAY['x''y'])", (evil, "it's"))
    await sql(dsn, "UPDATE iam_role SET attached_policies_arns = '{}'")
    stmts = [r[0] for r in await call(registry, ctx, "iasql_get_sql_since")]
    assert len(stmts) == 2 and stmts[0].startswith("INSERT INTO") and stmts[1].startswith("UPDATE")
    # the generated SQL replays the changes exactly, quotes and all
    before = await sql(dsn, "SELECT * FROM iam_role")
    await sql(dsn, "DELETE FROM iam_role")
    for stmt in stmts:
        await sql(dsn, stmt)
    assert await sql(dsn, "SELECT * FROM iam_role") == before
    assert before[0][1] == evil and before[0][2] == {"a": "b')"}
    assert await sql(dsn, "SELECT to_regclass('iasql_module') IS NOT NULL") == [(True,)]
    # commit message is a bound parameter
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "DELETE FROM iam_role")
    await call(registry, ctx, "iasql_commit", "msg'); DROP TABLE iasql_audit_log; --")
    assert await sql(dsn, "SELECT count(*) > 0 FROM iasql_audit_log WHERE message LIKE 'msg''); DROP%'") == [(True,)]


async def test_stubs_raise_on_direct_calls(registry, ctx, dsn):
    await call(registry, ctx, "iasql_version")  # nothing created by version: metadata via a session call
    await call(registry, ctx, "iasql_modules_installed")
    for q in ["SELECT * FROM iasql_install('aws_s3')", "SELECT * FROM iasql_commit()", "SELECT iasql_begin()",
              "SELECT * FROM iasql_rollback(true)", "SELECT * FROM iasql_apply()",
              "DO $$ BEGIN PERFORM iasql_commit(); END $$"]:
        with pytest.raises(psycopg.errors.FeatureNotSupported) as ei:
            await sql(dsn, q)
        assert ei.value.diag.message_primary == "iasql_* functions must be called through iasql-proxy"
        assert "iasql-proxy" in ei.value.diag.message_hint


async def test_deprecated_functions(registry, ctx):
    for old, new in DEPRECATED.items():
        with pytest.raises(EngineError) as ei:
            await call(registry, ctx, old)
        assert ei.value.message == f"{old}() has been deprecated in favor of {new}()"


async def test_transaction_required_and_read_only_functions(registry, ctx, dsn):
    for fn, what in (("iasql_commit", "commit"), ("iasql_preview", "preview"), ("iasql_rollback", "rollback"),
                     ("iasql_create_review", "create a review")):
        with pytest.raises(EngineError) as ei:
            await call(registry, ctx, fn)
        assert (ei.value.sqlstate, ei.value.message) == ("25P01", f"Cannot {what}: no open IaSQL transaction")
        assert ei.value.hint == ("Call SELECT * FROM iasql_begin(); first, make your changes, then "
                                 f"call {fn}().")
    assert await call(registry, ctx, "iasql_version") == [("0.1.0",)]
    mods = {r[0]: r for r in await call(registry, ctx, "iasql_modules_list")}
    assert {"aws_account", "aws_s3", "aws_iam", "aws_security_group", "iasql_platform"} <= set(mods)
    assert "aws_account@0.1.0" in mods["aws_security_group"][2]
    helps = await call(registry, ctx, "iasql_help")
    assert ("iasql_functions", "iasql_commit", "iasql_commit(message varchar = NULL)") == helps[3][:3]
    assert all(len(r) == 5 for r in helps)
    assert {r[0] for r in helps} == {"iasql_functions"}  # no module installed yet
    # begin twice: the second waits, then gives up with IaSQL's message
    reg_short = build_registry(type(registry.engine_state.settings)(lock_wait_timeout=0.5))
    try:
        await call(registry, ctx, "iasql_begin")
        with pytest.raises(EngineError) as ei:
            await call(reg_short, ctx, "iasql_begin")
        assert ei.value.sqlstate == "55P03"
        assert ei.value.message == "Another transaction is open or running. Please try again later."
    finally:
        reg_short.engine_state.aws.close()


def test_init_db_is_idempotent(pg, dbname, dsn):
    from engine.local import init_db

    init_db(dsn)
    init_db(dsn)
    with psycopg.connect(dsn) as c:
        rows = c.execute("SELECT name FROM iasql_module ORDER BY name").fetchall()
        assert rows == [("iasql_functions@0.1.0",), ("iasql_platform@0.1.0",)]
        # 18 stubs, the audit trigger function and its redaction helper in public; 18 argument probes
        assert c.execute("SELECT n.nspname, count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                         "WHERE proname LIKE 'iasql\\_%' GROUP BY 1 ORDER BY 1").fetchall() == [
            ("iasql_args", 18), ("public", 20)]


async def test_install_is_atomic_when_the_cloud_is_unreachable(pg, ctx, dsn):
    from engine import EngineSettings
    from proxy.embedded.postgres import free_port

    dead = build_registry(EngineSettings(aws_endpoint_url=f"http://127.0.0.1:{free_port()}", aws_max_attempts=1,
                                         aws_connect_timeout=1, aws_read_timeout=1))
    await call(dead, ctx, "iasql_modules_installed")  # the metadata, so that the ERROR row can be kept
    try:
        with pytest.raises(EngineError) as ei:
            await call(dead, ctx, "iasql_install", "aws_s3")
        assert ei.value.sqlstate == "58000"
        assert "s3.list_buckets" in ei.value.message
        errors = await call(dead, ctx, "iasql_get_errors")
        assert len(errors) == 1 and errors[0][1].startswith("iasql_install: AWS call failed")
    finally:
        dead.engine_state.aws.close()
    assert await sql(dsn, "SELECT to_regclass('bucket'), to_regclass('aws_regions')") == [(None, None)]
    assert await sql(dsn, "SELECT count(*) FROM iasql_module") == [(2,)]
