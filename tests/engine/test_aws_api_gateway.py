"""Module aws_api_gateway through the engine against a real moto server, checked with boto3 and the table."""

from __future__ import annotations

import pytest

from tests.engine.support import call, sql


@pytest.fixture
async def api_mod(registry, ctx, dsn):
    """aws_api_gateway installed; returns the install rows."""
    rows = await call(registry, ctx, "iasql_install", "aws_api_gateway")
    await sql(dsn, "INSERT INTO aws_credentials (access_key_id, secret_access_key) VALUES ('testing', 'testing')")
    return rows


def apis(aws, region="us-east-1"):
    return {a["Name"]: a for a in aws("apigatewayv2", region).get_apis()["Items"]}


async def test_create_update_replace_delete(registry, ctx, dsn, aws, api_mod):
    assert [(t, n) for _, t, n in api_mod] == [("api", 0)]
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, """INSERT INTO api (name, description, version, tags) VALUES ('shop', 'shop api', 'v1', '{"team": "web"}')""")
    await sql(dsn, "INSERT INTO api (name, protocol_type) VALUES ('chat', 'WEBSOCKET')")
    pks = dict(await sql(dsn, "SELECT name, id FROM api"))
    assert set(await call(registry, ctx, "iasql_preview")) == {
        ("create", "api", str(pks["chat"]), "WEBSOCKET API chat (new) in us-east-1"),
        ("create", "api", str(pks["shop"]), "HTTP API shop (new) in us-east-1")}
    await call(registry, ctx, "iasql_commit")
    got = apis(aws)
    shop, chat = got["shop"], got["chat"]
    assert (shop["ProtocolType"], shop["Description"], shop["Version"], shop["Tags"]) == ("HTTP", "shop api", "v1",
                                                                                         {"team": "web"})
    assert (chat["ProtocolType"], chat["RouteSelectionExpression"]) == ("WEBSOCKET", "$request.body.action")
    # the sync wrote back the id and AWS's choices
    assert await sql(dsn, "SELECT name, api_id, protocol_type::text, disable_execute_api_endpoint FROM api ORDER BY name") == [
        ("chat", chat["ApiId"], "WEBSOCKET", False), ("shop", shop["ApiId"], "HTTP", False)]

    # in place: name, description, version, endpoint switch, tags
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, """UPDATE api SET name = 'store', description = NULL, version = 'v2', disable_execute_api_endpoint = true,
                      tags = '{"team": "store", "env": "prod"}' WHERE name = 'shop'""")
    rows = await call(registry, ctx, "iasql_commit")
    assert [(a, t, i) for a, t, i, d in rows if not d.startswith("synced")] == [("update", "api", shop["ApiId"])]
    store = apis(aws)["store"]
    assert (store["ApiId"], store.get("Description") or None, store["Version"], store["DisableExecuteApiEndpoint"],
            store["Tags"]) == (shop["ApiId"], None, "v2", True, {"team": "store", "env": "prod"})
    assert "shop" not in apis(aws)

    # a new protocol replaces the API (AWS cannot change it)
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "UPDATE api SET protocol_type = 'HTTP' WHERE name = 'chat'")
    rows = await call(registry, ctx, "iasql_commit")
    assert [(a, t) for a, t, _, d in rows if not d.startswith("synced")] == [("replace", "api")]
    new_chat = apis(aws)["chat"]
    assert new_chat["ProtocolType"] == "HTTP" and new_chat["ApiId"] != chat["ApiId"]
    assert await sql(dsn, "SELECT id, api_id FROM api WHERE name = 'chat'") == [(pks["chat"], new_chat["ApiId"])]

    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "DELETE FROM api")
    rows = await call(registry, ctx, "iasql_commit")
    assert sorted(a for a, _, _, d in rows if not d.startswith("synced")) == ["delete", "delete"]
    assert apis(aws) == {}


async def test_import_drift_and_two_regions(registry, ctx, dsn, aws, api_mod):
    gw = aws("apigatewayv2")
    made = gw.create_api(Name="outside", ProtocolType="HTTP", Description="made outside", Tags={"k": "v"})
    await call(registry, ctx, "iasql_begin")
    rows = await call(registry, ctx, "iasql_rollback")
    assert rows == [("create", "api", made["ApiId"], f"HTTP API outside ({made['ApiId']}) in us-east-1")]
    assert await sql(dsn, "SELECT name, description, tags::text FROM api") == [("outside", "made outside", '{"k": "v"}')]
    gw.update_api(ApiId=made["ApiId"], Description="changed outside")
    await call(registry, ctx, "iasql_begin")
    assert await call(registry, ctx, "iasql_preview") == [
        ("update", "api", made["ApiId"], f"HTTP API outside ({made['ApiId']}) in us-east-1")]
    await call(registry, ctx, "iasql_rollback")
    assert await sql(dsn, "SELECT description FROM api") == [("changed outside",)]
    gw.delete_api(ApiId=made["ApiId"])
    await call(registry, ctx, "iasql_begin")
    assert [a for a, _, _, _ in await call(registry, ctx, "iasql_rollback")] == ["delete"]
    assert await sql(dsn, "SELECT count(*) FROM api") == [(0,)]

    await sql(dsn, "UPDATE aws_regions SET is_enabled = true WHERE region = 'eu-west-1'")
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO api (name, region) VALUES ('eu-api', 'eu-west-1'), ('us-api', 'us-east-1')")
    await call(registry, ctx, "iasql_commit")
    assert list(apis(aws, "eu-west-1")) == ["eu-api"] and list(apis(aws)) == ["us-api"]
    assert await sql(dsn, "SELECT name, region FROM api ORDER BY name") == [("eu-api", "eu-west-1"), ("us-api", "us-east-1")]
    # a region that is not enabled is refused before any cloud call
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO api (name, region) VALUES ('far', 'ap-south-1')")
    with pytest.raises(Exception) as ei:
        await call(registry, ctx, "iasql_commit")
    assert "region ap-south-1 is not enabled" in str(ei.value)
    await call(registry, ctx, "iasql_rollback")


async def test_install_imports_existing_apis(registry, ctx, dsn, aws):
    made = aws("apigatewayv2").create_api(Name="before-install", ProtocolType="WEBSOCKET",
                                          RouteSelectionExpression="$request.body.action")
    rows = await call(registry, ctx, "iasql_install", "aws_api_gateway")
    assert [(t, n) for _, t, n in rows] == [("api", 1)]
    assert await sql(dsn, "SELECT api_id, name, protocol_type::text FROM api") == [
        (made["ApiId"], "before-install", "WEBSOCKET")]
