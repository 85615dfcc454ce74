"""``iasql-proxy init-db iasql_metadata``: create the metadata database ahead of the first proxy.

A proxy with ``[servers]`` creates it itself at start when it is missing (``proxy.routing.fleet``);
this is the same step for an operator who prefers to make it up front, as the admin role.
"""

from __future__ import annotations

import asyncio

#: IaSQL's name of the metadata database: ``init-db`` with this name creates the metadata database.
METADATA_DATABASE = "iasql_metadata"


def init_metadata(dsn: str, name: str) -> bool:
    """Create the metadata database ``name`` (when missing) on the server of libpq ``dsn`` (whose
    ``dbname`` is the admin connection's database, e.g. ``postgres``) and its tables, stubs and
    argument probes (``engine.metadata.ensure_metadata_database``). Returns True when the database
    was created. Raises psycopg.Error (cannot connect, no CREATEDB right, ...)."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from engine.metadata import ensure_metadata_database

    params = conninfo_to_dict(dsn)

    async def run() -> bool:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as admin:
            return await ensure_metadata_database(
                admin, lambda db: psycopg.AsyncConnection.connect(make_conninfo(**{**params, "dbname": db}),
                                                                  autocommit=False), name)

    return asyncio.run(run())
