#!/usr/bin/env bash
# `just bench`: builds release binaries, starts `videochat serve` on loopback against a fresh
# SQLite file (and, with BENCH_POSTGRES_URL set, a fresh Postgres database), runs the load
# generator against it, and stops the server. Figures go to stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

PAIRS="${BENCH_PAIRS:-1 10 50}"   # concurrency levels, one run each
DURATION="${BENCH_DURATION_S:-10}"
cargo build --release -q -p videochat -p videochat-loadgen

run() {
  local label="$1" database_url="$2"
  local dir; dir="$(mktemp -d)"
  local port=18480
  VIDEOCHAT_WS_ADDR="127.0.0.1:${port}" VIDEOCHAT_GRPC_ADDR="127.0.0.1:18481" \
  VIDEOCHAT_METRICS_ADDR="127.0.0.1:18482" DATABASE_URL="$database_url" \
  VIDEOCHAT_RATE_LIMIT_PER_S=100000 VIDEOCHAT_RATE_LIMIT_BURST=100000 RUST_LOG=warn \
    ./target/release/videochat serve > "$dir/serve.log" 2>&1 &
  local pid=$!
  trap 'kill $pid 2>/dev/null || true' RETURN
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:${port}/readyz" > /dev/null 2>&1 && break
    sleep 0.1
  done
  for pairs in $PAIRS; do
    echo "== ${label}: ${pairs} pairs, ${DURATION}s"
    ./target/release/videochat-loadgen --url "ws://127.0.0.1:${port}/ws" \
      --pairs "$pairs" --duration-s "$DURATION"
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -rf "$dir"
}

run "sqlite" "sqlite://$(mktemp -d)/bench.db"
if [ -n "${BENCH_POSTGRES_URL:-}" ]; then
  db="vc_bench_$$"
  psql "$BENCH_POSTGRES_URL" -qc "CREATE DATABASE $db"
  run "postgres" "${BENCH_POSTGRES_URL%/*}/$db"
  psql "$BENCH_POSTGRES_URL" -qc "DROP DATABASE $db WITH (FORCE)"
fi
