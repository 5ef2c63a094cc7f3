# shellcheck shell=bash
# What the chaos scripts and the wrk benchmark share: installing what a fresh Debian
# machine lacks, a release build of syncline, Postgres (a fresh database on
# DATABASE_URL's server, or a private cluster in a temporary folder), background
# processes that are stopped on exit, bounded waits, and the result table.
#
# Source it; it sets `set -euo pipefail` and an EXIT trap.

set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/syncline-$(basename "$0").XXXXXX")
FAILED=0

say() { printf '%s\n' "$*" >&2; }
die() {
  say "error: $*"
  exit 1
}

# Milliseconds since the epoch, without forking.
now_ms() {
  local t=${EPOCHREALTIME/[.,]/}
  echo $((t / 1000))
}

# Cleanup steps run in reverse order of registration when the script exits.
CLEANUP=()
at_exit() { CLEANUP+=("$1"); }
run_cleanup() {
  local status=$?
  local i
  for ((i = ${#CLEANUP[@]} - 1; i >= 0; i--)); do
    eval "${CLEANUP[i]}" >/dev/null 2>&1 || true
  done
  if [ "$status" -ne 0 ] || [ "$FAILED" -ne 0 ]; then
    say "logs kept in $WORK"
  else
    rm -rf "$WORK"
  fi
}
trap run_cleanup EXIT
trap 'exit 130' INT TERM

# need COMMAND [DEBIAN_PACKAGE]: installs the package when the command is missing.
need() {
  command -v "$1" >/dev/null 2>&1 && return 0
  local package=${2:-$1}
  [ "$(id -u)" -eq 0 ] || die "$1 is missing: install it (apt-get install $package)"
  say "installing $package"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends "$package" >/dev/null 2>&1 ||
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "$package" >/dev/null; }
}

# Builds the release binary (or takes SYNCLINE_BIN, a binary built before); sets SYNCLINE.
build_syncline() {
  if [ -n "${SYNCLINE_BIN:-}" ]; then
    SYNCLINE=$SYNCLINE_BIN
    return
  fi
  command -v cargo >/dev/null || die "cargo is missing: install Rust from https://rustup.rs"
  say "building syncline (release)"
  (cd "$REPO" && cargo build --release --quiet --bin syncline)
  SYNCLINE="${CARGO_TARGET_DIR:-$REPO/target}/release/syncline"
}

# --- Postgres ---------------------------------------------------------------------

# psql against DATABASE_URL: unaligned, tuples only, stop on the first error.
sql() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$DATABASE_URL" -c "$1"; }

# A port nothing listens on (nothing answers a connection attempt).
free_port() {
  local port
  while :; do
    port=$((20000 + RANDOM % 20000))
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || {
      echo "$port"
      return
    }
  done
}

# Runs a command as the cluster's owner: the `postgres` user when we are root (initdb
# refuses root), ourselves otherwise.
as_cluster_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

pg_ctl_private() { as_cluster_owner "$PG_BIN/pg_ctl" -D "$PG_DIR/data" "$@"; }

# Starts (again) the private cluster; waits until it accepts connections.
pg_start() {
  pg_ctl_private -l "$PG_DIR/postgres.log" -w -t 30 \
    -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$PG_DIR -c max_connections=300 ${PG_EXTRA_OPTIONS:-}" \
    start >/dev/null
}

# pg_stop MODE: stops the private cluster (fast: clients disconnected cleanly;
# immediate: as if the server crashed, recovery from WAL at the next start).
pg_stop() { pg_ctl_private -m "$1" -w -t 30 stop >/dev/null; }

# A Postgres cluster of our own under $WORK, on a free port; never the system server.
# Sets PG_BIN, PG_DIR, PG_PORT and SERVER_URL.
start_private_cluster() {
  "$REPO/.ci/install-postgres"
  PG_BIN=$(dirname "$(command -v initdb 2>/dev/null || printf '%s\n' /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n 1)")
  PG_DIR="$WORK/pg"
  mkdir -p "$PG_DIR"
  if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || die "running as root and there is no postgres user to run the cluster as"
    chmod o+x "$WORK"
    chown postgres: "$PG_DIR"
  fi
  as_cluster_owner "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres --auth=trust -E UTF8 --no-locale >/dev/null
  PG_PORT=$(free_port)
  pg_start
  at_exit "pg_ctl_private -m immediate stop"
  SERVER_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
}

# fresh_database PREFIX: a new database, dropped on exit, on DATABASE_URL's server or,
# when DATABASE_URL is unset (or PRIVATE_CLUSTER=1), on a private cluster. Sets DATABASE_URL.
fresh_database() {
  need psql postgresql-client
  if [ -n "${DATABASE_URL:-}" ] && [ "${PRIVATE_CLUSTER:-0}" != 1 ]; then
    SERVER_URL=$DATABASE_URL
  else
    start_private_cluster
  fi
  local name="${1}_$$_${RANDOM}"
  psql -X -q -v ON_ERROR_STOP=1 -d "$SERVER_URL" -c "CREATE DATABASE $name"
  at_exit "psql -X -q -d '$SERVER_URL' -c 'DROP DATABASE IF EXISTS $name WITH (FORCE)'"
  local base=${SERVER_URL%%\?*}
  local query=${SERVER_URL#"$base"}
  case $base in
  *://*/*) base=${base%/*} ;;
  esac
  DATABASE_URL="$base/$name$query"
  export DATABASE_URL
}

# --- processes --------------------------------------------------------------------

# spawn NAME COMMAND...: runs COMMAND in the background with output in $WORK/NAME.log;
# SIGTERM (then SIGKILL after 5 s) on exit. Sets SPAWNED to its pid.
spawn() {
  local name=$1
  shift
  "$@" >"$WORK/$name.log" 2>&1 &
  SPAWNED=$!
  at_exit "stop_process $SPAWNED"
}

stop_process() {
  kill -TERM "$1" 2>/dev/null || return 0
  local i
  for i in $(seq 50); do
    kill -0 "$1" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL "$1" 2>/dev/null || true
}

# poll_until SECONDS COMMAND...: polls COMMAND every 100 ms until it succeeds (status 0)
# or SECONDS pass (status 1).
poll_until() {
  local deadline=$(($(now_ms) + $1 * 1000))
  shift
  until "$@"; do
    [ "$(now_ms)" -lt "$deadline" ] || return 1
    sleep 0.1
  done
}

# wait_for SECONDS WHAT COMMAND...: poll_until, or stop the script naming WHAT.
wait_for() {
  local limit=$1 what=$2
  shift 2
  poll_until "$limit" "$@" || die "gave up after ${limit}s waiting for $what"
}

# log_line LOG PATTERN: the first line of LOG matching PATTERN (grep -E), if any.
log_line() { grep -m 1 -E "$2" "$1" 2>/dev/null; }

# The common syncline settings of the scripts: quiet logs, short drains.
export RUST_LOG=${RUST_LOG:-warn}
export SYNCLINE_SHUTDOWN_GRACE_SECS=${SYNCLINE_SHUTDOWN_GRACE_SECS:-3}
export SYNCLINE_ADMIN_TOKEN=${SYNCLINE_ADMIN_TOKEN:-chaos-admin-token-0123456789}

# start_api NAME [COMMAND]: `syncline serve` (or COMMAND, e.g. dev) on a free port; waits
# until it answers and sets API to its base URL.
start_api() {
  local name=$1 command=${2:-serve}
  SYNCLINE_LISTEN=127.0.0.1:0 spawn "$name" "$SYNCLINE" "$command"
  wait_for 60 "the API to start (see $WORK/$name.log)" log_line "$WORK/$name.log" 'http://127\.0\.0\.1:[0-9]+' >/dev/null
  API=$(log_line "$WORK/$name.log" 'http://127\.0\.0\.1:[0-9]+' | grep -oE 'http://127\.0\.0\.1:[0-9]+' | head -n 1)
}

# admin METHOD PATH [JSON]: an admin API call that must succeed; prints the answer.
admin() {
  local body=${3:-'{}'}
  curl -sS --fail-with-body --max-time 10 -X "$1" "$API$2" \
    -H "authorization: Bearer $SYNCLINE_ADMIN_TOKEN" \
    -H 'content-type: application/json' --data "$body"
}

# --- results ----------------------------------------------------------------------

# check NAME VALUE [TEST...]: one row of the result table. With a TEST (a command, e.g.
# [ "$lost" -eq 0 ]) the row says ok or FAIL, and a FAIL makes the script exit 1 once
# the table is printed; without one it says "-".
ROWS=()
check() {
  local name=$1 value=$2 verdict=-
  shift 2
  if [ $# -gt 0 ]; then
    if "$@"; then verdict=ok; else verdict=FAIL FAILED=1; fi
  fi
  ROWS+=("$name|$value|$verdict")
}

# at_most A B: whether the decimal number A is at most B.
at_most() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a <= b) }'; }

# seconds MS: milliseconds as seconds with one decimal.
seconds() { awk -v ms="$1" 'BEGIN { printf "%.1f s", ms / 1000 }'; }

print_table() {
  local row name value verdict
  printf '| %-50s | %-28s | %-7s |\n' "measure" "value" "verdict"
  printf '| %s | %s | %s |\n' "$(printf -- '-%.0s' {1..50})" "$(printf -- '-%.0s' {1..28})" "-------"
  for row in "${ROWS[@]}"; do
    IFS='|' read -r name value verdict <<<"$row"
    printf '| %-50s | %-28s | %-7s |\n' "$name" "$value" "$verdict"
  done
  if [ "$FAILED" -ne 0 ]; then
    say "FAILED: see the rows above"
    exit 1
  fi
}
