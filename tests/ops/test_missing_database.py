"""A login to a database that does not exist leaves no pool behind (SHOW POOLS), in session and
transaction pooling; a busy listen port is a one-line error with exit status 2."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from tests.ops.helpers import psql, table

pytestmark = pytest.mark.timeout(90)


def pools(proxy) -> list[tuple[str, str]]:
    """(database, user) of every row of SHOW POOLS."""
    res = psql(proxy, "SHOW POOLS")
    assert res.returncode == 0, res.stderr
    return [(r["database"], r["user"]) for r in table(res.stdout)[1]]


@pytest.mark.parametrize("pool_mode", ["session", "transaction"])
def test_unknown_database_leaves_no_pool(pool_mode, proxy_ini, start_proxy, pg_roles) -> None:
    proxy = start_proxy(proxy_ini(admin_users="postgres", pool_mode=pool_mode), f"nodb-{pool_mode}")
    with pytest.raises(psycopg.OperationalError, match='database "no_such_db" does not exist'):
        psycopg.connect(proxy.dsn(user="alice", password=pg_roles["alice"], dbname="no_such_db"))
    assert ("no_such_db", "alice") not in pools(proxy)

    # a database that exists still gets its pool, and keeps it
    with psycopg.connect(proxy.dsn(user="alice", password=pg_roles["alice"], dbname="postgres")) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("postgres",)
    assert ("postgres", "alice") in pools(proxy)
    assert ("no_such_db", "alice") not in pools(proxy)


def test_busy_port_is_one_line_with_status_2(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ini = tmp_path / "p.ini"
        ini.write_text(f"[databases]\n* = host=127.0.0.1 port=1\n[proxy]\nauth_type = trust\n"
                       f"listen_addr = 127.0.0.1\nlisten_port = {port}\n")
        res = subprocess.run([sys.executable, "-m", "proxy.cli", "--config", str(ini)], capture_output=True,
                             text=True, timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert res.returncode == 2
    assert res.stderr.splitlines() == [
        f"iasql-proxy: cannot listen on 127.0.0.1:{port} (listen_addr, listen_port): Address already in use"]
