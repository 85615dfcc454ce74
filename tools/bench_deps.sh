#!/usr/bin/env bash
# What `make bench` needs beyond `make install`: pgbench, PgBouncer (Debian packages) and matplotlib
# (pinned, into the venv). Never prompts; never starts PgBouncer as a service (the bench runs the
# binary itself). Usage: tools/bench_deps.sh [PYTHON]   (default .venv/bin/python)
set -uo pipefail
PY="${1:-.venv/bin/python}"
need=()
command -v pgbench >/dev/null 2>&1 || need+=(postgresql-contrib)
[ -x /usr/sbin/pgbouncer ] || command -v pgbouncer >/dev/null 2>&1 || need+=(pgbouncer)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "bench_deps: missing ${need[*]}: install them (Debian: apt-get install -y ${need[*]})" >&2
    exit 1
  fi
  echo "bench_deps: installing ${need[*]} (apt-get)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null 2>&1 || true
  # policy-rc.d 101: the package must not start its own pgbouncer service
  rc=/usr/sbin/policy-rc.d; made_rc=0
  if [ ! -e "$rc" ]; then printf '#!/bin/sh\nexit 101\n' >"$rc"; chmod +x "$rc"; made_rc=1; fi
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1
  status=$?
  [ "$made_rc" = 1 ] && rm -f "$rc"
  if [ $status -ne 0 ]; then echo "bench_deps: apt-get install ${need[*]} failed" >&2; exit 1; fi
fi
if ! "$PY" -c 'import matplotlib' >/dev/null 2>&1; then
  echo "bench_deps: installing matplotlib==3.10.* into the venv" >&2
  "$PY" -m pip install -q 'matplotlib==3.10.*' || { echo "bench_deps: pip install matplotlib failed (the PNG will be skipped)" >&2; }
fi
exit 0
