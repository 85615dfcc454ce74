"""``make bench``: the proxy side by side with PgBouncer and direct Postgres (issue 8).

Run with ``python -m tools.bench`` (see ``--help``; ``BENCH_SECONDS`` and ``BENCH_ROUNDS`` shorten a
run). Modules: ``stack`` starts and stops Postgres, PgBouncer and proxies by pid; ``load`` runs
pgbench and the raw-socket latency and idle-client loads; ``run`` orchestrates the phases; ``report``
writes ``bench/results/latest.md``, ``latest.json`` and ``latest.png``.
"""
