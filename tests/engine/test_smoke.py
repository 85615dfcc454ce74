from tests.engine.support import call, sql


async def test_install_s3_commit(registry, ctx, dsn, aws):
    rows = await call(registry, ctx, "iasql_install", "aws_s3")
    print(rows)
    await sql(dsn, "INSERT INTO aws_credentials (access_key_id, secret_access_key) VALUES ('testing', 'testing')")
    print(await call(registry, ctx, "iasql_begin"))
    await sql(dsn, "INSERT INTO bucket (name) VALUES ('b-one')")
    print(await call(registry, ctx, "iasql_preview"))
    print(await call(registry, ctx, "iasql_commit"))
    print([b["Name"] for b in aws("s3").list_buckets()["Buckets"]])
    print(ctx.lines)
    print(await sql(dsn, "SELECT * FROM bucket"))
    print(await sql(dsn, "SELECT id, \"user\", table_name, change_type, change, transaction_id FROM iasql_audit_log ORDER BY id"))
