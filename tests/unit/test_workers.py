"""proxy.workers without processes: cancel keys naming their worker, SHOW rows and metrics added
up across workers, the ``workers`` key."""

from __future__ import annotations

import pytest

from proxy.admin.console import INT8, TEXT, _result
from proxy.config import MAX_WORKERS, ConfigError, parse_config
from proxy.workers import key_owner, make_key, merge_metrics, merge_results, parse_result


def _cfg(lines: str):
    return parse_config(f"[databases]\n* = host=127.0.0.1\n[pgbouncer]\nauth_type = trust\n{lines}\n")


def test_workers_key_default_range_and_errors() -> None:
    assert _cfg("").workers == 1
    assert _cfg("workers = 4").workers == 4
    assert _cfg(f"workers = {MAX_WORKERS}").workers == MAX_WORKERS
    for bad in ("0", "-1", str(MAX_WORKERS + 1), "two"):
        with pytest.raises(ConfigError, match="^workers: must be an integer 1-255"):
            _cfg(f"workers = {bad}")


@pytest.mark.parametrize("index", [0, 1, 7, 254])
def test_keys_name_their_worker(index: int) -> None:
    for _ in range(200):
        pid, secret = make_key(index)
        assert 0 < pid < 2**31 and -(2**31) <= secret < 2**31
        assert key_owner(pid) == index


def test_a_process_id_with_a_zero_low_byte_has_no_owner() -> None:
    assert key_owner(0x1200) == -1


def _answer(cols, rows) -> bytes:
    return _result(cols, [tuple(None if v is None else str(v).encode() for v in r) for r in rows])


POOL_COLS = [("database", TEXT), ("user", TEXT), ("cl_active", INT8), ("cl_waiting", INT8), ("sv_active", INT8),
             ("sv_idle", INT8), ("maxwait", INT8), ("maxwait_us", INT8), ("pool_mode", TEXT)]


def test_show_pools_adds_up_by_database_and_user() -> None:
    w0 = _answer(POOL_COLS, [("db", "u", 3, 1, 3, 2, 4, 5, "session"), ("only0", "u", 1, 0, 1, 0, 0, 0, "session")])
    w1 = _answer(POOL_COLS, [("db", "u", 2, 0, 2, 5, 1, 900, "session"), ("only1", "v", 7, 0, 7, 0, 0, 0, "session")])
    cols, rows, tag = parse_result(merge_results("POOLS", [(0, w0), (1, w1)]))
    assert [c for c, _ in cols] == [c for c, _ in POOL_COLS] and tag == "SHOW"
    got = {(r[0], r[1]): r for r in rows}
    assert got[(b"db", b"u")] == (b"db", b"u", b"5", b"1", b"5", b"7", b"4", b"900", b"session")
    assert got[(b"only0", b"u")][2] == b"1" and got[(b"only1", b"v")][2] == b"7"


def test_show_clients_lists_every_worker_with_a_worker_column() -> None:
    cols = [("type", TEXT), ("user", TEXT), ("id", INT8)]
    w0 = _answer(cols, [("C", "a", 257)])
    w1 = _answer(cols, [("C", "b", 514), ("C", "c", 770)])
    out_cols, rows, _ = parse_result(merge_results("CLIENTS", [(0, w0), (1, w1)]))
    assert out_cols[-1] == ("worker", INT8)
    assert rows == [(b"C", b"a", b"257", b"0"), (b"C", b"b", b"514", b"1"), (b"C", b"c", b"770", b"1")]


def test_show_totals_sums_every_counter() -> None:
    cols = [("total_query_count", INT8), ("total_received", INT8), ("avg_wait_time", INT8)]
    out = merge_results("TOTALS", [(0, _answer(cols, [(10, 100, 7)])), (1, _answer(cols, [(5, 50, 9)]))])
    assert parse_result(out)[1] == [(b"15", b"150", b"9")]


def test_a_show_without_a_rule_is_the_first_workers() -> None:
    one = _answer([("key", TEXT)], [("x",)])
    assert merge_results("CONFIG", [(0, one), (1, _answer([("key", TEXT)], [("y",)]))]) == one


def test_metrics_are_summed_series_by_series() -> None:
    w0 = ("# HELP iasql_proxy_queries Queries\n# TYPE iasql_proxy_queries counter\n"
          'iasql_proxy_queries_total{database="a"} 3.0\n'
          "# HELP iasql_proxy_paused paused\n# TYPE iasql_proxy_paused gauge\niasql_proxy_paused 1.0\n"
          "# HELP iasql_proxy_pool_wait_seconds wait\n# TYPE iasql_proxy_pool_wait_seconds histogram\n"
          'iasql_proxy_pool_wait_seconds_bucket{le="0.5"} 1.0\niasql_proxy_pool_wait_seconds_bucket{le="+Inf"} 2.0\n'
          "iasql_proxy_pool_wait_seconds_count 2.0\niasql_proxy_pool_wait_seconds_sum 0.75\n")
    w1 = ("# HELP iasql_proxy_queries Queries\n# TYPE iasql_proxy_queries counter\n"
          'iasql_proxy_queries_total{database="a"} 4.0\niasql_proxy_queries_total{database="b"} 1.0\n'
          "# HELP iasql_proxy_paused paused\n# TYPE iasql_proxy_paused gauge\niasql_proxy_paused 1.0\n"
          "# HELP iasql_proxy_pool_wait_seconds wait\n# TYPE iasql_proxy_pool_wait_seconds histogram\n"
          'iasql_proxy_pool_wait_seconds_bucket{le="0.5"} 0.0\niasql_proxy_pool_wait_seconds_bucket{le="+Inf"} 1.0\n'
          "iasql_proxy_pool_wait_seconds_count 1.0\niasql_proxy_pool_wait_seconds_sum 0.5\n")
    text = merge_metrics([w0, w1]).decode()
    assert 'iasql_proxy_queries_total{database="a"} 7.0' in text
    assert 'iasql_proxy_queries_total{database="b"} 1.0' in text
    assert "iasql_proxy_paused 1.0" in text
    assert 'iasql_proxy_pool_wait_seconds_bucket{le="+Inf"} 3.0' in text
    assert "iasql_proxy_pool_wait_seconds_sum 1.25" in text
    assert text.count("# TYPE iasql_proxy_queries_total counter") == 1  # how prometheus_client writes a counter


def test_a_workers_log_lines_carry_its_tag_on_both_paths(stderr) -> None:
    import logging

    from proxy import logs

    try:
        logs.set_tag("[w1]")
        lg = logging.getLogger("iasql_proxy.test_tag")
        logs.info(lg, "event=x n=%d", 1)
        lg.info("event=x n=%d", 1)
        fast, slow = stderr.getvalue().splitlines()
        assert fast[24:] == slow[24:] == "INFO iasql_proxy.test_tag[w1] event=x n=1"
    finally:
        logs.set_tag("")
