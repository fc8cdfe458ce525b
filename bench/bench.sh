#!/usr/bin/env bash
# `just bench`: our server on SQLite and on Postgres, and the Socket.IO peer on Postgres, through
# the same scenarios of the same load generator, side by side. docs/benchmarks.md says what each
# scenario measures; this script only orchestrates:
#
#   for each target (ours on SQLite, ours on Postgres, the peer on Postgres):
#     for each scenario (flat, paced, idle): start a fresh server process, run, stop it
#   then one table (stdout) and one JSON file (target/bench/results.json + a timestamped copy).
#
# Knobs (environment): BENCH_DURATION_S (10), BENCH_PAIRS (50, flat), BENCH_RATE (500/s, paced),
# BENCH_POOL (200 pairs, paced), BENCH_SOCKETS (15000, idle), BENCH_ONLY (scenarios, "flat paced
# idle"), BENCH_TARGETS ("sqlite postgres peer"; also "sqlite-webhooks postgres-webhooks": ours
# with call-status webhooks on, sent to a local sink answering 204 — compare with "sqlite
# postgres" in the same run), BENCH_LABEL (names the run in the JSON and the copy's file name),
# VIDEOCHAT_BIN (another server binary, e.g. a baseline build), BENCH_POSTGRES_URL (a database
# whose user may create databases), BENCH_PORT (18480; uses 5), BENCH_SINK_NICE (19: the
# webhook sink's nice level, see start_ours_webhooks).
#
# Every server is killed on exit, every database this run created is dropped, every scenario runs
# under `timeout`.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

DURATION="${BENCH_DURATION_S:-10}"
PAIRS="${BENCH_PAIRS:-50}"
RATE="${BENCH_RATE:-500}"
POOL="${BENCH_POOL:-200}"
SOCKETS="${BENCH_SOCKETS:-15000}"
ONLY="${BENCH_ONLY:-flat paced idle}"
TARGETS="${BENCH_TARGETS:-sqlite postgres peer}"
LABEL="${BENCH_LABEL:-current}"
PG_URL="${BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
PORT="${BENCH_PORT:-18480}"
PEER_PORT=$((PORT + 3))
SINK_PORT=$((PORT + 4))
SINK_NICE="${BENCH_SINK_NICE:-19}"
SERVER="${VIDEOCHAT_BIN:-$root/target/release/videochat}"
LOADGEN="$root/target/release/videochat-loadgen"
OUT="$root/target/bench"
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
run_dir="$OUT/runs/$stamp-$LABEL"
mkdir -p "$run_dir"

# How fast this machine switches between threads right now (perf's pipe ping-pong, µs per
# round trip): every handshake is a chain of wake-ups across processes (load generator, server,
# Postgres), and on this VM that cost has been seen to vary 4× within an hour while a CPU-bound
# loop stays as fast. Printed and kept in the JSON so that figures from different runs can be
# told apart; compare builds within one run.
wakeup_us() {
  command -v perf > /dev/null || { echo "unknown"; return; }
  perf bench sched pipe -l 50000 2> /dev/null | awk '/usecs\/op/ {print $1}' || echo "unknown"
}
wakeup_before="$(wakeup_us)"
echo "== machine: ${wakeup_before} us per thread wake-up round trip (perf bench sched pipe)"

echo "== build"
# Both packages always, even with VIDEOCHAT_BIN: building one alone unifies features differently
# and rebuilds half the dependency tree.
nice -n 19 cargo build --release -q -p videochat -p videochat-loadgen
[ -x "$SERVER" ] || { echo "no server binary at $SERVER" >&2; exit 1; }
if [[ " $TARGETS " == *" peer "* ]]; then
  command -v node > /dev/null || { echo "the peer needs node (BENCH_TARGETS without peer skips it)" >&2; exit 1; }
  [ -d bench/socketio-peer/node_modules ] ||
    (cd bench/socketio-peer && npm ci --no-audit --no-fund --loglevel=error)
fi
if [[ " $TARGETS " == *" postgres "* || " $TARGETS " == *" peer "* ]]; then
  psql "$PG_URL" -Atqc 'SELECT 1' > /dev/null ||
    { echo "Postgres unreachable at $PG_URL (set BENCH_POSTGRES_URL or BENCH_TARGETS=sqlite)" >&2; exit 1; }
fi

server_pid=""
sink_pid=""
# Extra environment of the next server (webhooks on).
server_env=()
databases=()
scratch="$(mktemp -d)"
failures=()
reports=()

stop_server() {
  [ -n "$server_pid" ] || return 0
  kill -TERM "$server_pid" 2> /dev/null || true
  for _ in $(seq 1 150); do
    kill -0 "$server_pid" 2> /dev/null || break
    sleep 0.1
  done
  kill -KILL "$server_pid" 2> /dev/null || true
  wait "$server_pid" 2> /dev/null || true
  server_pid=""
  if [ -n "$sink_pid" ]; then
    kill -TERM "$sink_pid" 2> /dev/null || true
    wait "$sink_pid" 2> /dev/null || true
    sink_pid=""
  fi
}

cleanup() {
  stop_server
  for db in "${databases[@]}"; do
    psql "$PG_URL" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" > /dev/null 2>&1 || true
  done
  rm -rf "$scratch"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Creates a database for this run (dropped on exit); its URL in $database_url.
new_database() {
  local db="vc_bench_$1_${stamp,,}_$$"
  psql "$PG_URL" -qc "CREATE DATABASE $db" > /dev/null
  databases+=("$db")
  database_url="${PG_URL%/*}/$db"
}

# Bounded wait for `url` to answer while the server process lives.
wait_ready() {
  for _ in $(seq 1 300); do
    curl -sf "$1" > /dev/null 2>&1 && return 0
    kill -0 "$server_pid" 2> /dev/null || return 1
    sleep 0.1
  done
  return 1
}

port_taken() {
  (exec 3<> "/dev/tcp/127.0.0.1/$1") 2> /dev/null
}

start_ours() { # database_url log
  port_taken "$PORT" && { echo "port $PORT is in use (set BENCH_PORT)" >&2; return 1; }
  VIDEOCHAT_WS_ADDR="127.0.0.1:$PORT" VIDEOCHAT_GRPC_ADDR="127.0.0.1:$((PORT + 1))" \
  VIDEOCHAT_METRICS_ADDR="127.0.0.1:$((PORT + 2))" DATABASE_URL="$1" \
  VIDEOCHAT_RATE_LIMIT_PER_S=1000000 VIDEOCHAT_RATE_LIMIT_BURST=1000000 RUST_LOG=warn \
    env "${server_env[@]}" "$SERVER" serve >> "$2" 2>&1 &
  server_pid=$!
  wait_ready "http://127.0.0.1:$PORT/readyz"
}

start_ours_webhooks() { # database_url log: ours with call-status webhooks to a local sink
  port_taken "$SINK_PORT" && { echo "port $SINK_PORT is in use (set BENCH_PORT)" >&2; return 1; }
  # The sink stands in for a receiver on another machine: at the lowest priority it runs in the
  # CPU time the service leaves idle instead of taking turns with it (its CPU use is still
  # printed when it stops). BENCH_SINK_NICE=0 runs it as an equal.
  nice -n "$SINK_NICE" "$LOADGEN" sink --addr "127.0.0.1:$SINK_PORT" >> "$2" 2>&1 &
  sink_pid=$!
  server_env=(VIDEOCHAT_WEBHOOK_URL="http://127.0.0.1:$SINK_PORT/hook"
    VIDEOCHAT_WEBHOOK_SECRET="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
  local started=0
  start_ours "$@" || started=$?
  server_env=()
  return "$started"
}

start_peer() { # database_url log
  port_taken "$PEER_PORT" && { echo "port $PEER_PORT is in use (set BENCH_PORT)" >&2; return 1; }
  (cd bench/socketio-peer && PORT="$PEER_PORT" DATABASE_URL="$1" NODE_ENV=production exec node server.js) >> "$2" 2>&1 &
  server_pid=$!
  wait_ready "http://127.0.0.1:$PEER_PORT/healthz"
}

# One scenario on a fresh server process: target label, start function, database URL.
scenario() {
  local label="$1" start="$2" database_url="$3" name="$4"
  local protocol=videochat url="ws://127.0.0.1:$PORT/ws" log="$run_dir/$label.server.log"
  if [ "$start" = start_peer ]; then
    protocol=socketio url="ws://127.0.0.1:$PEER_PORT/socket.io/?EIO=4&transport=websocket"
  fi
  echo
  echo "== $label: $name"
  if ! "$start" "$database_url" "$log"; then
    echo "!! $label did not become ready; the end of $log:" >&2
    tail -n 20 "$log" >&2 || true
    stop_server
    failures+=("$label.$name")
    return 0
  fi
  local args budget
  case "$name" in
    flat) args=(flat --pairs "$PAIRS" --duration-s "$DURATION"); budget=$((DURATION + 120)) ;;
    paced) args=(paced --rate "$RATE" --pairs "$POOL" --duration-s "$DURATION"); budget=$((DURATION + 120)) ;;
    idle) args=(idle --sockets "$SOCKETS" --server-pid "$server_pid"); budget=600 ;;
  esac
  local json="$run_dir/$label.$name.json"
  if timeout -k 5 "$budget" "$LOADGEN" --protocol "$protocol" --url "$url" --label "$label" \
      --json "$json" "${args[@]}"; then
    reports+=("$json")
  else
    echo "!! $label $name failed" >&2
    failures+=("$label.$name")
    [ -f "$json" ] && reports+=("$json")
  fi
  stop_server
}

run_target() { # label start database_url
  for name in flat paced idle; do
    [[ " $ONLY " == *" $name "* ]] && scenario "$1" "$2" "$3" "$name"
  done
  return 0
}

for target in $TARGETS; do
  case "$target" in
    sqlite) run_target ours-sqlite start_ours "sqlite://$scratch/bench.db" ;;
    postgres) new_database ours && run_target ours-postgres start_ours "$database_url" ;;
    sqlite-webhooks) run_target ours-sqlite-webhooks start_ours_webhooks "sqlite://$scratch/bench-webhooks.db" ;;
    postgres-webhooks) new_database ourswh && run_target ours-postgres-webhooks start_ours_webhooks "$database_url" ;;
    peer) new_database peer && run_target peer-postgres start_peer "$database_url" ;;
    *) echo "unknown target $target (BENCH_TARGETS: sqlite postgres peer sqlite-webhooks postgres-webhooks)" >&2; exit 1 ;;
  esac
done

wakeup_after="$(wakeup_us)"
echo
echo "== machine: ${wakeup_after} us per thread wake-up round trip at the end (${wakeup_before} at the start)"
echo "== summary ($LABEL, ${DURATION}s per scenario)"
if [ "${#reports[@]}" -gt 0 ]; then
  commit="$(git rev-parse --short HEAD 2> /dev/null || echo unknown)"
  git diff --quiet 2> /dev/null || commit="$commit+dirty"
  "$LOADGEN" summary --out "$OUT/results.json" --peer peer-postgres \
    --meta "label=$LABEL" --meta "date=$stamp" --meta "commit=$commit" \
    --meta "server_bin=$SERVER" --meta "cores=$(nproc)" --meta "loadavg=$(cut -d' ' -f1-3 /proc/loadavg)" \
    --meta "duration_s=$DURATION" --meta "pairs=$PAIRS" --meta "rate=$RATE" --meta "pool=$POOL" \
    --meta "sockets=$SOCKETS" --meta "only=$ONLY" --meta "targets=$TARGETS" --meta "run_dir=$run_dir" \
    --meta "wakeup_us_before=$wakeup_before" --meta "wakeup_us_after=$wakeup_after" \
    "${reports[@]}"
  cp "$OUT/results.json" "$OUT/results-$stamp-$LABEL.json"
  echo
  echo "JSON: $OUT/results.json (and results-$stamp-$LABEL.json); reports and server logs: $run_dir"
fi
if [ "${#failures[@]}" -gt 0 ]; then
  echo "failed: ${failures[*]}" >&2
  exit 1
fi
