# Shared by .ci/run (tests) and .ci/up (the running system): make sure Redis, PostgreSQL
# and the Python environment exist, installing them on a fresh Debian machine.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
export PG_URL="${TEST_PG_URL:-postgresql://root@127.0.0.1:5432}"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

apt_updated=0
apt_install() {
  if [ $apt_updated = 0 ]; then
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    apt_updated=1
  fi
  log "apt-get install $*"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

ensure_redis() {
  # A Redis already answering on 127.0.0.1:6379 is used as it is (never restarted: it may be
  # someone else's). One started here keeps no data for CI (.ci/run), and with "aof" (.ci/up)
  # an append-only file fsynced every second, so the demo's queued jobs survive a restart.
  local persistence=(--save "" --appendonly no) kept="no persistence"
  if [ "${1:-}" = aof ]; then
    persistence=(--save "" --appendonly yes --appendfsync everysec) kept="AOF, appendfsync everysec"
  fi
  if command -v redis-cli >/dev/null && redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; then
    if [ "${1:-}" = aof ]; then
      log "using the Redis already running on 127.0.0.1:6379 (appendonly $(redis-cli -h 127.0.0.1 -p 6379 \
        config get appendonly 2>/dev/null | tail -1); not restarted)"
    fi
    return
  fi
  command -v redis-server >/dev/null || apt_install redis-server
  log "starting redis-server on 127.0.0.1:6379 ($kept)"
  $SUDO mkdir -p /var/lib/redis /var/log/redis
  $SUDO redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 "${persistence[@]}" \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 1 50); do redis-cli -h 127.0.0.1 ping 2>/dev/null | grep -q PONG && return; sleep 0.2; done
  log "redis did not start"; exit 1
}

pg_ready() { command -v pg_isready >/dev/null && pg_isready -q -h 127.0.0.1 -p 5432; }

ensure_postgres() {
  if ! pg_ready; then
    if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
      apt_install postgresql postgresql-client
    fi
    local version
    version="$(ls /etc/postgresql | sort -V | tail -1)"
    log "starting PostgreSQL $version"
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    for _ in $(seq 1 50); do pg_ready && break; sleep 0.2; done
    pg_ready || { log "PostgreSQL did not start"; exit 1; }
  fi
  # The tests connect as root over TCP without a password (trust), to a database "test".
  if ! psql "$PG_URL/postgres" -Atqc 'select 1' >/dev/null 2>&1; then
    log "configuring PostgreSQL: role root, trust on 127.0.0.1"
    local hba
    hba="$($SUDO -u postgres psql -Atqc 'show hba_file' 2>/dev/null || su postgres -c "psql -Atqc 'show hba_file'")"
    grep -q '^host all root 127.0.0.1/32 trust' "$hba" || \
      $SUDO sed -i '1i host all root 127.0.0.1/32 trust\nhost all root ::1/128 trust' "$hba"
    su postgres -c "psql -qc \"DO \\\$\\\$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname='root') THEN CREATE ROLE root SUPERUSER LOGIN; END IF; END\\\$\\\$\"" 
    su postgres -c "psql -qc 'select pg_reload_conf()'" >/dev/null
  fi
  psql "$PG_URL/postgres" -Atqc "select 1 from pg_database where datname='test'" | grep -q 1 || \
    psql "$PG_URL/postgres" -qc 'create database test'
}

ensure_venv() {
  if [ ! -x "$PY" ]; then
    local base
    base="$(command -v python3.11 || command -v python3)"
    log "creating virtualenv with $base"
    "$base" -m venv "$VENV" || { apt_install python3-venv; "$base" -m venv "$VENV"; }
  fi
  local stamp="$VENV/.installed-$(sha1sum "$ROOT/pyproject.toml" | cut -c1-12)"
  if [ ! -f "$stamp" ]; then
    log "installing the project and its test dependencies"
    "$PY" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
    "$PY" -m pip install -q -e "$ROOT[test]" 2>&1 | grep -v -i "warning" || true
    "$PY" -c "import dramatiq, periodiq, sqlalchemy, psycopg2, posthog, prometheus_client, alembic"
    touch "$stamp"
  fi
}

ensure_tools() {
  # Servers and tools the tests drive: promtool and prometheus (alert rules, live alerting
  # test), docker-compose (config check), dovecot (real IMAP server for email sync).
  local missing=()
  command -v promtool >/dev/null || missing+=(prometheus)
  command -v docker-compose >/dev/null || missing+=(docker-compose)
  [ -x /usr/sbin/dovecot ] || missing+=(dovecot-imapd)
  if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi
  # The Debian prometheus package starts a server on :9090 via its service; tests run their own.
}

ensure_browser() {
  # The console's browser tests drive Debian's chromium with Playwright (pip); a browser
  # is never downloaded (no `playwright install`).
  command -v chromium >/dev/null || apt_install chromium fonts-dejavu-core
}

ensure_sentinel_tools() {
  # Redis Sentinel (the failover acceptance test runs its own primary, replica and three
  # sentinels on free ports) and PgBouncer (the transaction-pooling test runs its own).
  # Debian's packages may start system services; the tests never use those.
  local missing=()
  command -v redis-sentinel >/dev/null || missing+=(redis-sentinel)
  command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ] || missing+=(pgbouncer)
  if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi
}
