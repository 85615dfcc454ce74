#!/usr/bin/env bash
# Container entrypoint: PostgreSQL (loopback only) + iasql-proxy (the only port exposed).
#
# On the first start: initdb into $IASQL_DATA/pgdata, passwords generated into
# $IASQL_DATA/credentials (mode 0600) unless given by IASQL_PASSWORD / POSTGRES_PASSWORD.
# Every start: certificates generated when none are mounted, roles' passwords (re)set, the
# auth_file rebuilt from pg_authid (SCRAM verifiers only, so the proxy never holds the login
# role's password), the proxy config generated unless IASQL_CONFIG names one, then Postgres and
# the proxy run until SIGTERM/SIGINT, which stops both: the proxy first (SIGTERM: it lets running
# statements and iasql_* calls finish for up to IASQL_SHUTDOWN_TIMEOUT seconds), then Postgres
# (fast shutdown).
#
# The script also runs outside a container (the tests do): every path and port comes from the
# environment below, and when it is not run as root Postgres runs as the invoking user (local
# connections over a private socket directory use trust instead of peer authentication).
#
#   IASQL_DATA (/var/lib/iasql)  IASQL_PGDATA ($IASQL_DATA/pgdata)  IASQL_CERTS_DIR ($IASQL_DATA/certs)
#   IASQL_SOCKET_DIR (/run/postgresql)
#   IASQL_LISTEN_ADDR/IASQL_LISTEN_PORT (0.0.0.0:6432)  IASQL_PG_PORT (5432)
#   IASQL_USER/IASQL_PASSWORD/IASQL_DB  POSTGRES_PASSWORD  IASQL_CONFIG
#   IASQL_ADMIN_USERS (postgres)  IASQL_STATS_USERS  IASQL_METRICS_PORT  IASQL_SHUTDOWN_TIMEOUT (8)
set -Eeuo pipefail

IASQL_DATA=${IASQL_DATA:-/var/lib/iasql}
# generated certificates live in the volume, so a new container keeps the CA its clients trust
IASQL_CERTS_DIR=${IASQL_CERTS_DIR:-$IASQL_DATA/certs}
IASQL_USER=${IASQL_USER:-iasql}
IASQL_DB=${IASQL_DB:-$IASQL_USER}
IASQL_LISTEN_ADDR=${IASQL_LISTEN_ADDR:-0.0.0.0}
IASQL_LISTEN_PORT=${IASQL_LISTEN_PORT:-6432}
PG_PORT=${IASQL_PG_PORT:-5432}
PGDATA=${IASQL_PGDATA:-$IASQL_DATA/pgdata}
SOCKDIR=${IASQL_SOCKET_DIR:-/run/postgresql}
CREDS="$IASQL_DATA/credentials"
# Docker's default stop timeout is 10 s: the proxy's drain must end before the SIGKILL.
SHUTDOWN_TIMEOUT=${IASQL_SHUTDOWN_TIMEOUT:-8}

log() { echo "iasql-entrypoint: $*" >&2; }
gen_password() { python3 -c 'import secrets; print(secrets.token_urlsafe(18))'; }
if [[ $(id -u) -eq 0 ]]; then
    # Postgres refuses to run as root: the server and its tools run as the postgres OS user.
    AS_PG=(setpriv --reuid=postgres --regid=postgres --init-groups --)
    LOCAL_AUTH=peer
else
    AS_PG=()
    LOCAL_AUTH=trust  # only this user can reach the socket directory (mode 0700)
fi
as_postgres() { "${AS_PG[@]}" "$@"; }
own_pg() { [[ $(id -u) -eq 0 ]] && chown postgres:postgres "$@" || true; }

# The first line says which relay runs: `compiled` (the image's wheel was built with a compiler) or
# `python` (correct, slower); the proxy's own first line (event=listening) says it again.
log "starting: $(python3 -c 'import importlib.metadata as m, proxy.relay.core as c
print("iasql-proxy", m.version("iasql-proxy"), "relay=" + ("compiled" if c.compiled else "python"))' 2>/dev/null \
    || echo 'iasql-proxy relay=unknown'), data in $IASQL_DATA"

mkdir -p "$IASQL_DATA" "$SOCKDIR"
own_pg "$SOCKDIR"
[[ $(id -u) -eq 0 ]] || chmod 0700 "$SOCKDIR"
chmod 0755 "$IASQL_DATA"

# -- credentials ------------------------------------------------------------------------------
touch "$CREDS"; chmod 0600 "$CREDS"
cred() { sed -n "s/^$1=//p" "$CREDS" | tail -n 1; }
POSTGRES_PASSWORD=${POSTGRES_PASSWORD:-$(cred postgres_password)}
POSTGRES_PASSWORD=${POSTGRES_PASSWORD:-$(gen_password)}
IASQL_PASSWORD=${IASQL_PASSWORD:-$(cred user_password)}
IASQL_PASSWORD=${IASQL_PASSWORD:-$(gen_password)}
printf 'postgres_password=%s\nuser=%s\nuser_password=%s\n' \
    "$POSTGRES_PASSWORD" "$IASQL_USER" "$IASQL_PASSWORD" > "$CREDS"

# -- certificates -----------------------------------------------------------------------------
if [[ ! -s "$IASQL_CERTS_DIR/server.crt" || ! -s "$IASQL_CERTS_DIR/server.key" ]]; then
    log "no certificate in $IASQL_CERTS_DIR: generating a development CA and server certificate"
    iasql-proxy certs --dir "$IASQL_CERTS_DIR" >/dev/null
fi

# -- cluster ----------------------------------------------------------------------------------
if [[ ! -s "$PGDATA/PG_VERSION" ]]; then
    log "initialising $PGDATA"
    install -d -m 0700 "$PGDATA"; own_pg "$PGDATA"
    pwfile=$(mktemp); own_pg "$pwfile"; chmod 0600 "$pwfile"
    printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
    as_postgres initdb -D "$PGDATA" -U postgres -E UTF8 --locale=C.UTF-8 \
        --auth-local="$LOCAL_AUTH" --auth-host=scram-sha-256 --pwfile="$pwfile" >/dev/null
    rm -f "$pwfile"
else
    log "using the existing cluster in $PGDATA"
fi
# Postgres's own TLS (the proxy connects with server_tls_sslmode=verify-ca): a copy it owns.
install -m 0600 "$IASQL_CERTS_DIR/server.key" "$PGDATA/server.key"
install -m 0644 "$IASQL_CERTS_DIR/server.crt" "$PGDATA/server.crt"
own_pg "$PGDATA/server.key" "$PGDATA/server.crt"

# A plain command (not the function) so that $! is the postmaster itself: setpriv execs.
"${AS_PG[@]}" \
    postgres -D "$PGDATA" -p "$PG_PORT" -c listen_addresses=127.0.0.1 \
    -c unix_socket_directories="$SOCKDIR" -c ssl=on -c ssl_cert_file=server.crt \
    -c ssl_key_file=server.key -c password_encryption=scram-sha-256 &
PG_PID=$!
PROXY_PID=

shutdown() {
    trap - TERM INT
    log "stopping"
    [[ -n "$PROXY_PID" ]] && kill -TERM "$PROXY_PID" 2>/dev/null && wait "$PROXY_PID" 2>/dev/null || true
    kill -INT "$PG_PID" 2>/dev/null && wait "$PG_PID" 2>/dev/null || true
    exit "${1:-0}"
}
trap 'shutdown 0' TERM INT

for _ in $(seq 1 120); do
    # as the postgres OS user: as root, peer authentication would log a FATAL line per try
    as_postgres pg_isready -q -U postgres -h "$SOCKDIR" -p "$PG_PORT" && break
    kill -0 "$PG_PID" 2>/dev/null || { log "postgres exited during start-up"; exit 1; }
    sleep 0.5
done
as_postgres pg_isready -q -U postgres -h "$SOCKDIR" -p "$PG_PORT" || { log "postgres did not start"; shutdown 1; }

psql_su() { as_postgres psql -X -q -v ON_ERROR_STOP=1 -h "$SOCKDIR" -p "$PG_PORT" -U postgres -d postgres "$@"; }
# Values go in as psql variables (quoted by psql with :'name'), never pasted into SQL text.
psql_su -v pw="$POSTGRES_PASSWORD" -v user="$IASQL_USER" -v upw="$IASQL_PASSWORD" -v db="$IASQL_DB" <<'SQL'
ALTER ROLE postgres PASSWORD :'pw';
SELECT NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'user') AS create_role \gset
\if :create_role
  CREATE ROLE :"user" LOGIN CREATEDB PASSWORD :'upw';
\else
  ALTER ROLE :"user" LOGIN PASSWORD :'upw';
\endif
SELECT NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') AS create_db \gset
\if :create_db
  CREATE DATABASE :"db" OWNER :"user";
\endif
SQL

# -- auth_file and config ---------------------------------------------------------------------
USERLIST="$IASQL_DATA/userlist.txt"
umask 077
{
    echo "; generated by the container entrypoint from pg_authid"
    psql_su -At -c "SELECT '\"' || replace(rolname, '\"', '\"\"') || '\" \"' || rolpassword || '\"'
                    FROM pg_authid WHERE rolcanlogin AND rolname <> 'postgres'
                    AND rolpassword LIKE 'SCRAM-SHA-256\$%' ORDER BY rolname"
    printf '"postgres" "%s"\n' "${POSTGRES_PASSWORD//\"/\"\"}"
} > "$USERLIST"

CONFIG=${IASQL_CONFIG:-}
if [[ -z "$CONFIG" ]]; then
    CONFIG="$IASQL_DATA/iasql-proxy.ini"
    CA_LINE=
    [[ -s "$IASQL_CERTS_DIR/ca.crt" ]] && CA_LINE="server_tls_ca_file = $IASQL_CERTS_DIR/ca.crt"
    SERVER_MODE=require
    [[ -n "$CA_LINE" ]] && SERVER_MODE=verify-ca
    ENGINE=
    METRICS_LINES=
    [[ -n "${IASQL_METRICS_PORT:-}" ]] && METRICS_LINES=$'metrics_addr = *\nmetrics_port = '"$IASQL_METRICS_PORT"
    [[ -n "${AWS_ENDPOINT_URL:-}" ]] && ENGINE=$'[engine]\naws_endpoint_url = '"$AWS_ENDPOINT_URL"
    cat > "$CONFIG" <<INI
; generated by the container entrypoint; mount your own and set IASQL_CONFIG to replace it
[databases]
* = host=127.0.0.1 port=$PG_PORT

[proxy]
listen_addr = $IASQL_LISTEN_ADDR
listen_port = $IASQL_LISTEN_PORT
auth_type = scram-sha-256
auth_file = $USERLIST
auth_user = postgres
client_tls_sslmode = require
client_tls_cert_file = $IASQL_CERTS_DIR/server.crt
client_tls_key_file = $IASQL_CERTS_DIR/server.key
server_tls_sslmode = $SERVER_MODE
$CA_LINE
admin_users = ${IASQL_ADMIN_USERS:-postgres}
stats_users = ${IASQL_STATS_USERS:-}
shutdown_timeout = $SHUTDOWN_TIMEOUT
$METRICS_LINES

$ENGINE
INI
fi
umask 022

log "proxy on $IASQL_LISTEN_ADDR:$IASQL_LISTEN_PORT as user $IASQL_USER, database $IASQL_DB (password in $CREDS)"
iasql-proxy --config "$CONFIG" &
PROXY_PID=$!

# Whichever exits first (proxy or Postgres) takes the other down; signals run shutdown().
set +e
wait -n "$PROXY_PID" "$PG_PID"
status=$?
set -e
log "a process exited (status $status)"
shutdown "$status"
