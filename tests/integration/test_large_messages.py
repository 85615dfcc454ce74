"""Large messages that need no inspection (COPY data, Bind values) are streamed to the server as
they arrive, instead of being held whole: they must still arrive intact (breaker finding: a client
could make the proxy buffer a 1 GB message)."""

from __future__ import annotations

import hashlib

import psycopg

FIVE_MB = 5 << 20


def _dsn(proxy) -> str:
    return proxy.dsn(user="postgres", password="postgres")


def test_large_copy_data_and_bind_value_arrive_intact(scram_proxy):
    big = ("0123456789abcdef" * (FIVE_MB // 16))[:FIVE_MB]
    with psycopg.connect(_dsn(scram_proxy), autocommit=True) as conn:
        conn.execute("CREATE TEMP TABLE big_rows (x text)")
        with conn.cursor().copy("COPY big_rows FROM STDIN") as copy:
            copy.write(big + "\n" + big[::-1] + "\n")  # one CopyData message of ~10 MB
        n, total, digest = conn.execute(
            "SELECT count(*), sum(length(x)), md5(string_agg(x, '' ORDER BY x)) FROM big_rows").fetchone()
        assert (n, total) == (2, 2 * FIVE_MB)
        assert digest == hashlib.md5("".join(sorted([big, big[::-1]])).encode()).hexdigest()
        # a Bind carrying a 5 MB parameter, then the session goes on
        assert conn.execute("SELECT length(%s::text), md5(%s::text)", [big, big]).fetchone() == (
            FIVE_MB, hashlib.md5(big.encode()).hexdigest())
        assert conn.execute("SELECT 42").fetchone() == (42,)
