#!/usr/bin/env bash
# Install the system packages the tests use, when missing (Debian/Ubuntu, as root). Never prompts.
#   tools/system-deps.sh             psql, pgbench and chromium (make test; chromium drives the
#                                    console's browser test, tests/http/test_console_browser.py)
#   tools/system-deps.sh psql        psql only (make run)
set -uo pipefail
tools=("$@")
[ ${#tools[@]} -eq 0 ] && tools=(psql pgbench chromium)
need=()
for tool in "${tools[@]}"; do
  case "$tool" in
    psql) command -v psql >/dev/null 2>&1 || need+=(postgresql-client) ;;
    pgbench) command -v pgbench >/dev/null 2>&1 || need+=(postgresql-contrib) ;;
    chromium) [ -x /usr/bin/chromium ] || need+=(chromium fonts-liberation) ;;
  esac
done
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "missing system packages: ${need[*]} (Debian/Ubuntu: sudo apt-get install ${need[*]}; or run make as root)" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null 2>&1 || true
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1 || echo "apt-get install ${need[*]} failed" >&2
exit 0
