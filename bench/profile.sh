#!/usr/bin/env bash
# One flat-out run under `perf record -a -g`: the whole machine is sampled (server, Postgres, load
# generator, and whoever else is busy), then folded into a flame graph with inferno, and the CPU
# split per process is summarised. Output under target/bench/profile-<date>/:
#
#   flamegraph.svg   every sampled stack, all processes (open in a browser, click to zoom)
#   processes.txt    CPU share per process (server, load generator, postgres, idle = swapper)
#   commands.txt     `perf report --sort comm`: the same by thread name
#   flat.json        the load generator's figures for the run
#   perf.data        the raw samples, for `perf report -i …`
#
# Knobs: PROFILE_TARGET (sqlite | postgres | peer; sqlite), BENCH_DURATION_S (10), BENCH_PAIRS
# (50), BENCH_POSTGRES_URL, BENCH_PORT (18480), VIDEOCHAT_BIN, PROFILE_FREQ (999 Hz),
# PROFILE_WEBHOOKS=1 (ours with call-status webhooks on, sent to the load generator's sink on
# BENCH_PORT+4, as bench.sh's "-webhooks" targets do; the sink shows up as its own process).
# PROFILE_FRAME_POINTERS=1 builds the server and load generator with frame pointers into
# target/profiling first (a full release build, minutes on two cores): without them, stacks
# through our code are cut short, since release builds omit frame pointers and `-g` walks them.
#
# This VM has no hardware counters: perf falls back to the cpu-clock software event, which is
# what `-F` then samples. Needs perf and root (or perf_event_paranoid <= 0).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

TARGET="${PROFILE_TARGET:-sqlite}"
DURATION="${BENCH_DURATION_S:-10}"
PAIRS="${BENCH_PAIRS:-50}"
FREQ="${PROFILE_FREQ:-999}"
PG_URL="${BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
PORT="${BENCH_PORT:-18480}"
out="$root/target/bench/profile-$(date -u +%Y%m%dT%H%M%SZ)-$TARGET"
tools="$root/target/bench/tools"
mkdir -p "$out"

command -v perf > /dev/null || { echo "perf is not installed" >&2; exit 1; }

echo "== build"
target_dir="$root/target"
if [ "${PROFILE_FRAME_POINTERS:-0}" = 1 ]; then
  target_dir="$root/target/profiling"
  RUSTFLAGS="${RUSTFLAGS:-} -C force-frame-pointers=yes" CARGO_TARGET_DIR="$target_dir" \
    nice -n 19 cargo build --release -q -p videochat -p videochat-loadgen
else
  nice -n 19 cargo build --release -q -p videochat -p videochat-loadgen
fi
SERVER="${VIDEOCHAT_BIN:-$target_dir/release/videochat}"
LOADGEN="$target_dir/release/videochat-loadgen"
if ! [ -x "$tools/bin/inferno-flamegraph" ]; then
  echo "== installing inferno into $tools"
  nice -n 19 cargo install --quiet --locked --root "$tools" inferno
fi

server_pid=""
sink_pid=""
database=""
scratch="$(mktemp -d)"
cleanup() {
  if [ -n "$server_pid" ]; then
    kill -TERM "$server_pid" 2> /dev/null || true
    for _ in $(seq 1 100); do kill -0 "$server_pid" 2> /dev/null || break; sleep 0.1; done
    kill -KILL "$server_pid" 2> /dev/null || true
  fi
  [ -z "$sink_pid" ] || kill -TERM "$sink_pid" 2> /dev/null || true
  [ -z "$database" ] || psql "$PG_URL" -qc "DROP DATABASE IF EXISTS $database WITH (FORCE)" > /dev/null 2>&1 || true
  rm -rf "$scratch"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

protocol=videochat
url="ws://127.0.0.1:$PORT/ws"
ready="http://127.0.0.1:$PORT/readyz"
case "$TARGET" in
  sqlite | postgres)
    database_url="sqlite://$scratch/bench.db"
    if [ "$TARGET" = postgres ]; then
      database="vc_profile_$$"
      psql "$PG_URL" -qc "CREATE DATABASE $database" > /dev/null
      database_url="${PG_URL%/*}/$database"
    fi
    webhooks=()
    if [ "${PROFILE_WEBHOOKS:-0}" = 1 ]; then
      # As in bench.sh: the sink stands in for a receiver elsewhere (BENCH_SINK_NICE, 19).
      nice -n "${BENCH_SINK_NICE:-19}" "$LOADGEN" sink --addr "127.0.0.1:$((PORT + 4))" > "$out/sink.log" 2>&1 &
      sink_pid=$!
      webhooks=(VIDEOCHAT_WEBHOOK_URL="http://127.0.0.1:$((PORT + 4))/hook"
        VIDEOCHAT_WEBHOOK_SECRET="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    fi
    VIDEOCHAT_WS_ADDR="127.0.0.1:$PORT" VIDEOCHAT_GRPC_ADDR="127.0.0.1:$((PORT + 1))" \
    VIDEOCHAT_METRICS_ADDR="127.0.0.1:$((PORT + 2))" DATABASE_URL="$database_url" \
    VIDEOCHAT_RATE_LIMIT_PER_S=1000000 VIDEOCHAT_RATE_LIMIT_BURST=1000000 RUST_LOG=warn \
      env "${webhooks[@]}" "$SERVER" serve > "$out/server.log" 2>&1 &
    server_pid=$!
    ;;
  peer)
    [ -d bench/socketio-peer/node_modules ] ||
      (cd bench/socketio-peer && npm ci --no-audit --no-fund --loglevel=error)
    database="vc_profile_$$"
    psql "$PG_URL" -qc "CREATE DATABASE $database" > /dev/null
    (cd bench/socketio-peer && PORT="$((PORT + 3))" DATABASE_URL="${PG_URL%/*}/$database" \
      NODE_ENV=production exec node --perf-basic-prof --logfile="$out/node-v8.log" --no-logfile-per-isolate server.js) > "$out/server.log" 2>&1 &
    server_pid=$!
    protocol=socketio
    url="ws://127.0.0.1:$((PORT + 3))/socket.io/?EIO=4&transport=websocket"
    ready="http://127.0.0.1:$((PORT + 3))/healthz"
    ;;
  *) echo "PROFILE_TARGET is sqlite, postgres or peer" >&2; exit 1 ;;
esac
for _ in $(seq 1 300); do
  curl -sf "$ready" > /dev/null 2>&1 && break
  kill -0 "$server_pid" 2> /dev/null || { cat "$out/server.log" >&2; exit 1; }
  sleep 0.1
done
curl -sf "$ready" > /dev/null || { echo "server not ready" >&2; exit 1; }

echo "== perf record -F $FREQ -a -g, ${DURATION}s flat-out at $PAIRS pairs against $TARGET"
# perf samples a little longer than the load runs; the load generator starts once perf does.
perf record -F "$FREQ" -a -g -o "$out/perf.data" -- sleep "$((DURATION + 3))" 2> "$out/perf-record.log" &
perf_pid=$!
sleep 1
"$LOADGEN" --protocol "$protocol" --url "$url" \
  --label "$TARGET" --json "$out/flat.json" flat --pairs "$PAIRS" --duration-s "$DURATION" &
loadgen_pid=$!   # itself, not a `timeout` wrapper: its samples are told apart by this pid
(sleep "$((DURATION + 60))" && kill "$loadgen_pid" 2> /dev/null) &
watchdog=$!
wait "$loadgen_pid" || echo "!! the load generator failed" >&2
kill "$watchdog" 2> /dev/null || true
wait "$perf_pid" || true
grep -i "fall\|cpu-clock\|warn" "$out/perf-record.log" || true

echo "== folding"
perf script -i "$out/perf.data" 2> /dev/null | "$tools/bin/inferno-collapse-perf" > "$out/stacks.folded"
"$tools/bin/inferno-flamegraph" --title "videochat $TARGET flat ${PAIRS} pairs (whole machine)" \
  < "$out/stacks.folded" > "$out/flamegraph.svg"
[ "$TARGET" != peer ] || rm -f "/tmp/perf-$server_pid.map"   # node's JIT symbol map, used above
perf report -i "$out/perf.data" --sort comm --stdio -g none --percent-limit 0.5 2> /dev/null |
  grep -v '^$' > "$out/commands.txt"
# Samples per process: the server and the load generator by pid (both name their threads
# tokio-runtime-w), every other process by its name; swapper is idle time.
perf script -i "$out/perf.data" -F pid,comm 2> /dev/null |
  awk -v server="$server_pid" -v loadgen="$loadgen_pid" -v sink="${sink_pid:--1}" -v target="$TARGET" '
    { pid = $NF; $NF = ""; comm = $0; gsub(/^ +| +$/, "", comm)
      if (pid == server) name = (target == "peer" ? "socketio-peer (node)" : "videochat serve")
      else if (pid == loadgen) name = "videochat-loadgen"
      else if (pid == sink) name = "webhook sink"
      else if (pid == 0) name = "idle (swapper)"
      else name = comm
      count[name]++; total++ }
    END { for (n in count) printf "%6.1f%%  %s\n", 100 * count[n] / total, n }' |
  sort -rn > "$out/processes.txt"

echo
echo "CPU share over the run (both cores = 100%):"
head -n 12 "$out/processes.txt"
echo
echo "flame graph: $out/flamegraph.svg"
echo "per process: $out/processes.txt, per thread name: $out/commands.txt, raw: $out/perf.data"
