"""What a module is made of: tables (DDL), dependencies and one mapper per table.

A ``Module`` declares its name, version, dependencies (module names), the DDL that creates and
drops its tables, and ``mappers``: one ``Mapper`` per table, in dependency order (a table's
mapper comes after the mappers of tables it references). Adding a module means writing one file
with a ``MODULE`` object and adding one line to ``engine.modules.MODULES``.

A mapper converts between database rows and cloud records, both plain ``dict``s keyed by column
name. The engine diffs them by the mapper's ``key`` (the cloud identity, e.g. a bucket name or a
security-group id) and calls ``create``/``update``/``delete`` on the cloud, or writes the cloud
record back into the table. Follows IaSQL's ``MapperBase`` (cloud.read/create/update/delete,
``equals``, ``entityId``), in Python.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Awaitable, Callable

if TYPE_CHECKING:  # pragma: no cover
    from engine.aws import AwsGateway, Credentials

#: Column kinds understood by the engine (how values are compared and written).
#: ``timestamp`` is a column without time zone (compared and written as naive UTC), ``timestamptz`` one
#: with (compared as UTC, written with its zone so the session's TimeZone cannot shift it).
KINDS = {"text", "int", "bool", "json", "jsonb", "text[]", "cidr", "timestamp", "timestamptz"}


@dataclass(frozen=True)
class Col:
    """A mapped column: ``name``, ``kind`` (one of KINDS) and ``role``.

    ``role`` is ``"user"`` (desired state, compared and pushed to the cloud), ``"cloud"``
    (cloud-managed, e.g. an ARN: never pushed, always copied back from the cloud) or ``"pk"`` (a
    database-only surrogate key such as a SERIAL id, never compared).
    """

    name: str
    kind: str = "text"
    role: str = "user"


def normalize(kind: str, value: Any) -> Any:
    """The comparable form of a column value of ``kind`` (cidr -> str, json -> canonical, a
    timestamp -> naive UTC to the second, ...)."""
    if value is None:
        return None
    if kind in ("json", "jsonb"):
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                return value
        return json.dumps(value, sort_keys=True)
    if kind == "text[]":
        return tuple(sorted(value)) if value else None
    if kind == "cidr":
        try:
            return str(ipaddress.ip_network(str(value), strict=False))
        except ValueError:
            return str(value)
    if kind in ("timestamp", "timestamptz"):  # compared as UTC without time zone, to the second
        if isinstance(value, datetime) and value.tzinfo is not None:
            value = value.astimezone(timezone.utc).replace(tzinfo=None)
        return value.replace(microsecond=0) if isinstance(value, datetime) else value
    if kind == "int":
        return int(value)
    if kind == "bool":
        return bool(value)
    return value


@dataclass
class MapperContext:
    """What a mapper may use while running: the caller's database, AWS, and regions.

    - ``db``: the call's ``engine.core.session.EngineSession`` (statements in the caller's
      transaction; mappers use it for read lookups only, ``fetchall``).
    - ``aws``/``creds``: ``await mc.call(service, region, operation, **kw)``.
    - ``regions``: enabled region names; ``default_region``: ``default_aws_region()``.
    """

    db: Any
    aws: "AwsGateway"
    creds: "Credentials"
    regions: list[str]
    default_region: str
    memo: dict = field(default_factory=dict)

    async def call(self, service: str, region: str, operation: str, **kwargs: Any) -> Any:
        """One AWS call (raises engine.aws.CloudError)."""
        return await self.aws.call(self.creds, service, region, operation, **kwargs)

    async def paginate(self, service: str, region: str, operation: str, result_key: str, **kwargs: Any) -> list:
        """All pages of one AWS list call (raises engine.aws.CloudError)."""
        return await self.aws.paginate(self.creds, service, region, operation, result_key, **kwargs)

    async def fetchall(self, query: Any, params: Any = None) -> list[tuple]:
        """Rows of a read-only lookup query (``$n`` placeholders) in the caller's transaction."""
        return await self.db.fetchall(query, params or ())


class Mapper:
    """Base mapper. Subclasses set ``table``, ``columns``, ``key``, ``pk`` and the cloud methods.

    ``cloud = False`` marks a database-only table (e.g. ``aws_credentials``) that commit and
    rollback leave alone.
    """

    table: str = ""
    columns: tuple[Col, ...] = ()
    key: tuple[str, ...] = ()
    pk: tuple[str, ...] = ()
    cloud: bool = True
    #: True when ``read`` resolves foreign keys through other tables (so sync re-reads it after
    #: the tables it depends on were synced).
    cloud_read_uses_db: bool = False
    #: ``(child_table, foreign_key_column)`` pairs: rows that hang off this entity in the cloud
    #: (a security group's rules). When the entity is replaced they are created again on the
    #: replacement (``engine.core.plan``); the foreign key holds this table's single-column pk.
    children: tuple[tuple[str, str], ...] = ()
    #: False for a table whose resources are made elsewhere (IaSQL's ``bucket_object``, uploaded
    #: by an RPC, and ``access_key``): a row the user inserts is planned as a ``create`` that makes
    #: nothing in the cloud and removes the row again, as IaSQL's mapper ``create`` does
    #: (``engine.core.plan``).
    creatable: bool = True

    # -- column helpers -------------------------------------------------------------------------
    def col(self, name: str) -> Col:
        """The Col named ``name``."""
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def user_cols(self) -> list[Col]:
        """Columns that hold desired state."""
        return [c for c in self.columns if c.role == "user"]

    @property
    def synced_cols(self) -> list[Col]:
        """Columns written back from the cloud on sync (user and cloud roles)."""
        return [c for c in self.columns if c.role != "pk"]

    def key_of(self, rec: dict) -> tuple | None:
        """The cloud identity of ``rec`` (normalized), or None while any key column is NULL."""
        vals = tuple(normalize(self.col(k).kind, rec.get(k)) for k in self.key)
        return None if any(v is None for v in vals) else vals

    def id_string(self, rec: dict) -> str:
        """The ``id`` column of a plan row: the cloud key, else the database primary key."""
        k = self.key_of(rec)
        if k is not None:
            return "|".join(str(v) for v in k)
        return "|".join(str(rec.get(p)) for p in self.pk)

    def describe(self, rec: dict) -> str:
        """Human description of a record for plan rows (override for something nicer)."""
        return f"{self.table} {self.id_string(rec)}"

    def equals(self, row: dict, cloud: dict) -> bool:
        """True when the database row's desired state matches the cloud record."""
        return all(normalize(c.kind, row.get(c.name)) == normalize(c.kind, cloud.get(c.name))
                   for c in self.user_cols)

    def synced_equals(self, row: dict, cloud: dict) -> bool:
        """True when writing ``cloud`` back into ``row`` would change nothing."""
        return all(normalize(c.kind, row.get(c.name)) == normalize(c.kind, cloud.get(c.name))
                   for c in self.synced_cols)

    def needs_replace(self, row: dict, cloud: dict) -> bool:
        """True when the change can only be made by deleting and re-creating the resource."""
        return False

    def deletable(self, cloud: dict) -> bool:
        """False for a cloud record that cannot be deleted (a VPC's ``default`` security group):
        deleting its row plans nothing and the sync that follows restores the row."""
        return True

    # -- cloud side ------------------------------------------------------------------------------
    async def read(self, mc: MapperContext) -> list[dict]:
        """Every cloud record of this type, each a dict of column values (pk columns omitted).
        Keys starting with ``_`` are the mapper's own notes; ``_orphan: True`` marks a record
        whose parent (a foreign key resolved through another table) has no row: apply still
        sees it (so a child whose parent row was deleted in the same commit is deleted in the
        cloud), sync never inserts it."""
        raise NotImplementedError

    def prefetch(self, mc: MapperContext) -> None:
        """Start slow cloud-only reads in the background (asyncio tasks kept in ``mc.memo``) for
        a later ``read`` to await, so that they overlap the engine's database work; called by
        apply and sync before they read. Must never use ``mc.db`` (the caller's one connection
        serves one query at a time). Default: nothing."""

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """Create ``row`` in the cloud; return the cloud record as ``read`` would. A create that
        fails after the resource exists removes it again; when even that fails it sets
        ``left`` on the CloudError it raises (a record ``delete`` accepts), so the engine's
        journal can take it back later."""
        raise NotImplementedError

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """Make the cloud record ``cloud`` match ``row``; return the new cloud record."""
        raise NotImplementedError

    async def delete(self, mc: MapperContext, cloud: dict) -> None:
        """Delete the cloud record ``cloud``."""
        raise NotImplementedError

    async def seed(self, db: Any) -> None:
        """For database-only tables: rows to insert at install (default none)."""
        return None


@dataclass(frozen=True)
class Module:
    """An installable module: ``name``, ``version``, ``dependencies`` (module names, no version),
    ``install_sql``/``uninstall_sql`` (statements run in order inside one transaction) and
    ``mappers`` in dependency order. ``tables`` are the mappers' tables. ``after_install(db)``,
    when set, runs after the DDL with the call's ``EngineSession`` (e.g. to seed rows);
    ``functions`` documents the SQL functions the DDL creates (``iasql_help``); ``rpcs`` declares
    the module's RPC functions, answered by the engine (``engine.rpc.Function``)."""

    name: str
    version: str
    dependencies: tuple[str, ...]
    install_sql: tuple[str, ...]
    uninstall_sql: tuple[str, ...]
    mappers: tuple[Mapper, ...]
    description: str = ""
    after_install: Callable[[Any], Awaitable[None]] | None = None
    #: SQL functions the module's DDL creates, for ``iasql_help``: (name, signature, description,
    #: sample_usage) each; every sample runs as printed once the module is installed
    functions: tuple[tuple[str, str, str, str], ...] = ()
    #: the module's RPCs: SQL functions that call AWS and that the engine answers
    #: (``engine.rpc.Function`` each, its ``impl`` taking ``(state, ctx, *args)``). ``build_registry``
    #: registers them (bound to the engine state, ``module`` set to this module's name); their
    #: stubs and argument probes exist while the module is installed. Their names must be in
    #: ``proxy.router.marker.MODULE_RPC_NAMES`` so that the proxy's prefilter sees their calls.
    rpcs: tuple[Any, ...] = ()

    @property
    def tables(self) -> list[str]:
        """The tables this module creates, in dependency order."""
        return [m.table for m in self.mappers]

    @property
    def full_name(self) -> str:
        """``name@version``, as stored in ``iasql_module``."""
        return f"{self.name}@{self.version}"


def json_or_text(value: Any) -> Any:
    """A ``json`` column value or an AWS policy document: JSON text decoded, other values (already
    decoded, None, text that is not JSON) as they are (IaSQL's ``safeParse``). Raises nothing."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def subnet_guard_sql(function: str, table: str, what: str, name_column: str) -> tuple[str, str]:
    """IaSQL's ``sql/after_install.sql`` guard of a table whose ``subnets`` column (text[] of AWS
    subnet ids) is half an array "foreign key" to ``subnet``, narrowed to what a foreign key
    refuses: deleting a ``subnet`` row that a row of ``table`` names, or changing its
    ``subnet_id`` (IaSQL's fires on every update of such a row, which would refuse the engine's
    own sync of the subnet). Returns the two statements (the trigger function ``public.<function>``
    and its BEFORE DELETE OR UPDATE trigger on ``subnet``); the error names ``what`` and the row's
    ``name_column``. Only names the engine defines are formatted in."""
    names = {"function": function, "table": table, "what": what, "name_column": name_column}
    return (
        """CREATE OR REPLACE FUNCTION public.{function}() RETURNS TRIGGER
       LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
       DECLARE
         _row record;
       BEGIN
         IF TG_OP = 'DELETE' OR NEW.subnet_id IS DISTINCT FROM OLD.subnet_id THEN
           FOR _row IN SELECT * FROM public.{table} LOOP
             IF OLD.subnet_id = any(_row.subnets) THEN
               RAISE EXCEPTION 'subnet_id % is being used by {what} %', OLD.subnet_id, _row.{name_column};
             END IF;
           END LOOP;
         END IF;
         IF (TG_OP = 'DELETE') THEN
           RETURN OLD;
         END IF;
         RETURN NEW;
       END;
       $$""".format(**names),
        """CREATE TRIGGER {function} BEFORE DELETE OR UPDATE ON public.subnet
       FOR EACH ROW EXECUTE FUNCTION public.{function}()""".format(**names),
    )


async def read_back_or_remove(read: Awaitable[dict], remove: Callable[[], Awaitable[Any]], left: dict) -> dict:
    """The record of a resource a ``create`` just made (``read``); when reading it fails, the
    resource is removed again (``remove``) so no resource the table cannot record is left, and when
    even that fails the CloudError raised carries ``left`` (a record ``delete`` accepts) for the
    engine's journal to take back later (``Mapper.create``). Raises that engine.aws.CloudError."""
    from engine.aws import CloudError

    try:
        return await read
    except CloudError as e:
        try:
            await remove()
        except CloudError:
            e.left = left
        raise


async def rpc_region(s: Any, mc: Any, fn: str, region: Any, *, enabled: bool = False) -> str:
    """The region a module RPC works in: ``region``, or the default region (``default_aws_region()``)
    when it is NULL or empty, as IaSQL's ``getAwsClient``.

    Takes the engine session ``s``, the ``MapperContext`` ``mc`` (its enabled ``regions`` and
    ``default_region``), the RPC's name ``fn`` and the argument. The messages do not name ``fn``:
    the RPC's ``EngineSession`` prefixes it to the ERROR audit row (``iasql_get_errors`` shows
    ``key_pair_request: mars-north-1 is not an AWS region``). Returns the
    region name. Raises EngineError 22023 when it is not a row of ``aws_regions``, or, with
    ``enabled``, when it is not an enabled one (an RPC whose row the next commit would refuse)."""
    from engine.rpc import EngineError

    region = region or mc.default_region
    if enabled:
        if region not in mc.regions:
            raise EngineError("22023", f"region {region} is not an enabled region",
                              hint="Enable it in aws_regions (is_enabled) or pass an enabled region.")
    elif region not in mc.regions and not await s.fetchone(
            "SELECT 1 FROM public.aws_regions WHERE region = $1", (region,)):
        raise EngineError("22023", f"{region} is not an AWS region", hint="The regions are the rows of aws_regions.")
    return region


async def require_table_privileges(s: Any, fn: str, table: str, privileges: tuple[str, ...], what: str) -> None:
    """Refuse a module RPC before its cloud call when the caller may not write the row it records
    (afterwards the row could not be written and the cloud change would be left unrecorded).

    Takes the engine session ``s`` (running as the caller), the RPC's name ``fn``, the ``public``
    table, the privileges needed on it (``("INSERT",)``, ``("INSERT", "UPDATE")``) and what the
    row describes (``"the key pair"``, for the HINT). Returns None. Raises EngineError 42501
    (insufficient_privilege) ``permission denied for table <table>``, as PostgreSQL words it."""
    from engine.rpc import EngineError

    checks = " AND ".join(f"pg_catalog.has_table_privilege('public.{table}', '{p}')" for p in privileges)
    if not (await s.fetchone(f"SELECT {checks}"))[0]:
        raise EngineError("42501", f"permission denied for table {table}",
                          hint=f"{fn} records {what} in {table}: it needs {' and '.join(privileges)} on it "
                               "(and USAGE on its id sequence).")
