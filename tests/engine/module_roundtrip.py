"""Module test template: the round trip of one table, from a small declarative ``Sample``.

A module gets its round-trip tests by describing one row and one change of each table
(``tests/engine/test_modules_roundtrip.py`` lists the samples and runs ``ROUNDTRIP`` on each):

- create: the row inserted inside ``iasql_begin``, ``iasql_preview`` names it, ``iasql_commit``
  creates it (checked with boto3 through ``read_back``) and writes its cloud columns back;
- update: ``update`` changes the row in place (its ``cloud_id`` stays), checked with boto3;
- replace (when ``replace`` is set): a change only delete + create can make (``cloud_id`` changes);
- import: ``cloud_create`` makes one out of band, ``iasql_rollback`` brings its row in;
- drift: ``cloud_drift`` changes it in the cloud, ``iasql_rollback`` pulls the change into the row;
- second region: the row inserted with ``region = 'eu-west-1'`` lands there and nowhere else;
- delete: the deleted row's resource is gone from the cloud;
- after every commit, a preview has nothing left to do for the table (the commit settled);
- uninstall: the module's tables go, and it installs again.

``read_back(aws, region)`` returns what boto3 sees: ``{name: {field: value}}`` for every resource
of the table in ``region``, keyed by the sample's ``name`` (the value a user recognises: a queue
name, a topic name, a domain). The expectations (``expect``, ``update_expect``, ...) are subsets
of one such ``{field: value}`` dict, so a check reads as "the cloud has queue q with
visibility_timeout 45".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

import psycopg
import pytest
from psycopg import sql as psql
from psycopg.types.json import Json

from engine.modules import MODULES
from tests.engine.support import call, sql

#: ``aws(service, region)`` -> boto3 client against moto (the ``aws`` fixture).
Aws = Callable[..., Any]
SECOND_REGION = "eu-west-1"


@dataclass(frozen=True)
class SqlExpr:
    """A row value written as SQL (``{region}`` replaced by the row's region), e.g. a foreign key
    ``SqlExpr("(SELECT id FROM repository WHERE repository_name = 'r')")``."""

    text: str


@dataclass
class Sample:
    """One table of one module, described for ``ROUNDTRIP``.

    - ``module``, ``table``: what is installed and which table the row goes in.
    - ``name``: the sample resource's name as ``read_back`` keys it; ``row``: the inserted
      column values (dicts and lists are sent as JSON, ``SqlExpr`` values as SQL).
    - ``read_back(aws, region)``: ``{name: {field: value}}`` from boto3; ``expect``: what the
      created resource's dict holds (a subset).
    - ``cloud_id``: a cloud-managed column (an ARN, a URL) that an update keeps and a replace
      changes (None when the endpoint fills none, e.g. moto's DynamoDB has no table id);
      ``filled``: cloud-managed columns a commit writes back (non-NULL afterwards).
    - ``update``/``update_expect``: an in-place change of the row and what the cloud then holds
      (None for a table with nothing to change in place, e.g. ``log_group``).
    - ``replace``/``replace_name``/``replace_expect`` (optional): a change that replaces the
      resource, the name it then has in ``read_back``, what the cloud then holds.
    - ``cloud_create(aws, region, name)``: creates a resource named ``name`` out of band;
      ``imported``: ``{column: value}`` its row holds after ``iasql_rollback``.
    - ``cloud_drift(aws, region, name)``: changes that resource out of band; ``drifted``: the
      row's ``{column: value}`` after ``iasql_rollback`` (None: the drift deleted the resource,
      the rollback deletes the row).
    - ``setup``: SQL run inside the same IaSQL transaction before the row is inserted (a
      parent row; ``{region}`` is replaced by the row's region), or in a commit of its own first
      with ``setup_committed`` (the row needs the parent's cloud id, e.g. a topic's ARN).
    - ``match``: a WHERE condition with one ``%s`` (the name) that finds the row (default
      ``name = %s``); ``regional``: False for a global resource (no second-region test).
    - ``refused``: ``(row, message)`` pairs: rows the table's constraints or triggers refuse,
      with a piece of the error message.
    - ``described``: what the plan row's description holds (default ``name``).
    - ``before_delete``: SQL (one ``%s``: the name) run before the row is deleted (rows that
      reference it, e.g. a hosted zone's SOA and NS record sets).
    """

    module: str
    table: str
    name: str
    row: dict
    read_back: Callable[[Aws, str], dict[str, dict]]
    expect: dict
    cloud_id: str | None
    update: dict | None
    update_expect: dict
    cloud_create: Callable[[Aws, str, str], Any]
    imported: dict
    cloud_drift: Callable[[Aws, str, str], Any]
    drifted: dict | None
    filled: tuple[str, ...] = ()
    replace: dict | None = None
    replace_name: str | None = None
    replace_expect: dict = field(default_factory=dict)
    setup: tuple[str, ...] = ()
    match: str = "name = %s"
    regional: bool = True
    refused: tuple[tuple[dict, str], ...] = ()
    described: str | None = None
    before_delete: tuple[str, ...] = ()
    setup_committed: bool = False

    @property
    def id(self) -> str:
        """The pytest id: ``module.table``."""
        return f"{self.module}.{self.table}"


def _mapper(table: str):
    """The mapper of ``table`` (raises StopIteration for an unknown table)."""
    return next(mp for m in MODULES for mp in m.mappers if mp.table == table)


def _value(v: Any) -> Any:
    """A row value as psycopg sends it (dicts and lists as JSON)."""
    return Json(v) if isinstance(v, (dict, list)) else v


def _subset(got: dict | None, want: dict) -> dict | None:
    """``got`` restricted to ``want``'s fields (None when the resource is missing)."""
    return None if got is None else {k: got.get(k) for k in want}


class Roundtrip:
    """The steps of the template, each usable alone (``s``: the Sample, the rest the engine
    fixtures of ``tests/engine/conftest.py``)."""

    async def install(self, s: Sample, registry, ctx, dsn) -> None:
        """Install ``s.module`` and give it the moto credentials."""
        await call(registry, ctx, "iasql_install", s.module)
        await sql(dsn, "INSERT INTO aws_credentials (access_key_id, secret_access_key) VALUES ('testing', 'testing')")

    async def row(self, s: Sample, dsn, name: str | None = None, cols: tuple[str, ...] = ()) -> dict | None:
        """The sample's row (``cols``, default the primary key), or None."""
        cols = cols or _mapper(s.table).pk
        q = psql.SQL("SELECT {} FROM {} WHERE " + s.match).format(
            psql.SQL(", ").join(map(psql.Identifier, cols)), psql.Identifier(s.table))
        rows = await sql(dsn, q, (name or s.name,))
        assert len(rows) <= 1, rows
        return dict(zip(cols, rows[0])) if rows else None

    async def parent(self, s: Sample, registry, ctx, dsn, region: str | None = None) -> None:
        """With ``s.setup_committed``: run ``s.setup`` in an IaSQL transaction of its own and commit
        it (the parent exists in the cloud before the row is inserted)."""
        if s.setup_committed:
            await call(registry, ctx, "iasql_begin")
            for stmt in s.setup:
                await sql(dsn, stmt.format(region=region or "us-east-1"))
            await call(registry, ctx, "iasql_commit")

    async def insert(self, s: Sample, dsn, region: str | None = None, row: dict | None = None) -> None:
        """INSERT the sample row (or ``row``; in ``region`` when given), after ``s.setup`` (unless
        ``s.setup_committed``: ``parent`` ran it)."""
        if row is None and not s.setup_committed:
            for stmt in s.setup:
                await sql(dsn, stmt.format(region=region or "us-east-1"))
        values = dict(row or s.row, **({"region": region} if region else {}))
        q = psql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
            psql.Identifier(s.table), psql.SQL(", ").join(map(psql.Identifier, values)),
            psql.SQL(", ").join(psql.SQL(v.text.format(region=region or "us-east-1")) if isinstance(v, SqlExpr)
                                else psql.Placeholder() for v in values.values()))
        await sql(dsn, q, [_value(v) for v in values.values() if not isinstance(v, SqlExpr)])

    async def change(self, s: Sample, dsn, name: str, values: dict) -> None:
        """UPDATE the sample row (found by ``name``) with ``values``."""
        q = psql.SQL("UPDATE {} SET {} WHERE " + s.match).format(
            psql.Identifier(s.table),
            psql.SQL(", ").join(psql.SQL("{} = %s").format(psql.Identifier(c)) for c in values))
        await sql(dsn, q, [*map(_value, values.values()), name])

    async def delete(self, s: Sample, dsn, name: str) -> None:
        """DELETE the sample row (found by ``name``), after ``s.before_delete``."""
        for stmt in s.before_delete:
            await sql(dsn, stmt, (name,))
        await sql(dsn, psql.SQL("DELETE FROM {} WHERE " + s.match).format(psql.Identifier(s.table)), (name,))

    async def begin_settled(self, s: Sample, registry, ctx) -> None:
        """``iasql_begin``, then check that the last commit settled: the preview has nothing to do
        for the table (no difference the mapper keeps seeing, e.g. a default it compares)."""
        await call(registry, ctx, "iasql_begin")
        assert [r for r in await call(registry, ctx, "iasql_preview") if r[1] == s.table] == []

    # -- the tests --------------------------------------------------------------------------------
    async def create_update_replace_delete(self, s: Sample, registry, ctx, dsn, aws) -> None:
        """Create (with preview), update in place, replace (if described), delete."""
        await self.install(s, registry, ctx, dsn)
        region = "us-east-1"
        await self.parent(s, registry, ctx, dsn)
        await call(registry, ctx, "iasql_begin")
        await self.insert(s, dsn)
        for bad, message in s.refused:
            with pytest.raises(psycopg.Error, match=re.escape(message)):
                await self.insert(s, dsn, row=bad)
        preview = await call(registry, ctx, "iasql_preview")
        mapper = _mapper(s.table)
        new = await self.row(s, dsn, cols=tuple(c.name for c in mapper.columns))
        mine = [r for r in preview if r[1] == s.table]
        # named by its cloud key when the row holds it (a log group's name), else by its primary key
        assert [(a, t, i) for a, t, i, _ in mine] == [("create", s.table, mapper.id_string(new))]
        assert (s.described or s.name) in mine[0][3], mine  # the description names the resource
        assert s.name not in s.read_back(aws, region)  # a preview changes nothing
        await call(registry, ctx, "iasql_commit")
        assert _subset(s.read_back(aws, region).get(s.name), s.expect) == s.expect
        created = await self.row(s, dsn, cols=tuple(c for c in (s.cloud_id, *s.filled) if c))
        assert all(v is not None for v in created.values()), created  # cloud columns written back

        if s.update is not None:
            await self.begin_settled(s, registry, ctx)
            await self.change(s, dsn, s.name, s.update)
            assert [(a, t) for a, t, _, _ in await call(registry, ctx, "iasql_preview")] == [("update", s.table)]
            rows = await call(registry, ctx, "iasql_commit")
            assert ("update", s.table) in [(a, t) for a, t, _, _ in rows]
            assert _subset(s.read_back(aws, region).get(s.name), s.update_expect) == s.update_expect
            if s.cloud_id:  # the same resource
                assert await self.row(s, dsn, cols=(s.cloud_id,)) == {s.cloud_id: created[s.cloud_id]}

        name = s.name
        if s.replace is not None:
            await self.begin_settled(s, registry, ctx)
            await self.change(s, dsn, s.name, s.replace)
            rows = await call(registry, ctx, "iasql_commit")
            assert ("replace", s.table) in [(a, t) for a, t, _, _ in rows]
            name = s.replace_name or s.name
            cloud = s.read_back(aws, region)
            assert _subset(cloud.get(name), s.replace_expect) == s.replace_expect
            if name != s.name:
                assert s.name not in cloud
            if s.cloud_id:  # a new resource
                new_id = (await self.row(s, dsn, name, cols=(s.cloud_id,)))[s.cloud_id]
                assert new_id is not None and new_id != created[s.cloud_id]

        await self.begin_settled(s, registry, ctx)
        await self.delete(s, dsn, name)
        rows = await call(registry, ctx, "iasql_commit")
        assert ("delete", s.table) in [(a, t) for a, t, _, _ in rows]
        assert name not in s.read_back(aws, region)
        assert await self.row(s, dsn, name) is None

    async def import_and_drift(self, s: Sample, registry, ctx, dsn, aws) -> None:
        """A resource made out of band comes in with ``iasql_rollback``; so does a change to it."""
        await self.install(s, registry, ctx, dsn)
        for stmt in s.setup:  # a parent the out-of-band resource hangs off
            await call(registry, ctx, "iasql_begin")
            await sql(dsn, stmt.format(region="us-east-1"))
            await call(registry, ctx, "iasql_commit")
        s.cloud_create(aws, "us-east-1", s.name)
        await call(registry, ctx, "iasql_begin")
        rows = await call(registry, ctx, "iasql_rollback")
        assert ("create", s.table) in [(a, t) for a, t, _, _ in rows]
        assert await self.row(s, dsn, cols=tuple(s.imported)) == s.imported

        s.cloud_drift(aws, "us-east-1", s.name)
        await call(registry, ctx, "iasql_begin")
        rows = await call(registry, ctx, "iasql_rollback")
        assert ("update" if s.drifted is not None else "delete", s.table) in [(a, t) for a, t, _, _ in rows]
        assert await self.row(s, dsn, cols=tuple(s.drifted or ())) == s.drifted

    async def uninstall_and_again(self, s: Sample, registry, ctx, dsn) -> None:
        """``iasql_uninstall`` drops every table of the module (and its types, functions and
        triggers: installing it again works)."""
        module = next(m for m in MODULES if m.name == s.module)
        await self.install(s, registry, ctx, dsn)
        await call(registry, ctx, "iasql_uninstall", s.module)
        for table in module.tables:
            assert await sql(dsn, "SELECT to_regclass(%s)::text", (f"public.{table}",)) == [(None,)], table
        await call(registry, ctx, "iasql_install", s.module)
        assert await sql(dsn, "SELECT count(*) FROM iasql_tables WHERE module = %s", (module.full_name,)) == [
            (len(module.tables),)]

    async def second_region(self, s: Sample, registry, ctx, dsn, aws) -> None:
        """With eu-west-1 enabled, a row with ``region = 'eu-west-1'`` is created there only."""
        await self.install(s, registry, ctx, dsn)
        await sql(dsn, "UPDATE aws_regions SET is_enabled = true WHERE region = %s", (SECOND_REGION,))
        await self.parent(s, registry, ctx, dsn, region=SECOND_REGION)
        await call(registry, ctx, "iasql_begin")
        await self.insert(s, dsn, region=SECOND_REGION)
        await call(registry, ctx, "iasql_commit")
        assert _subset(s.read_back(aws, SECOND_REGION).get(s.name), s.expect) == s.expect
        assert s.name not in s.read_back(aws, "us-east-1")
        assert await self.row(s, dsn, cols=("region",)) == {"region": SECOND_REGION}
        await call(registry, ctx, "iasql_begin")
        await self.delete(s, dsn, s.name)
        await call(registry, ctx, "iasql_commit")
        assert s.name not in s.read_back(aws, SECOND_REGION)


ROUNDTRIP = Roundtrip()
