"""Scale out (issue 19): the ``[servers]`` section, the routing table in the metadata database
that every proxy follows live, and the admin connections ``iasql_connect`` uses.

- ``config``: the ``[servers]`` entries (``ServerEntry``) parsed for ``proxy.config``.
- ``fleet``: ``Fleet``, one per proxy process: admin connections to each server and to the
  metadata database, the routing table (``RouteTable``) kept current by LISTEN/NOTIFY and a
  periodic re-read, and ``target_for(dbname)`` used at login.
"""
