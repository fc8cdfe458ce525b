#!/usr/bin/env bash
# `just bench-scaling`: how the figures of `just bench` move with load — flat handshakes against
# the number of pairs, paced latencies against the rate, idle memory and connect rate against
# the number of sockets. It runs bench.sh once per value (a fresh server each time, ours on
# SQLite and Postgres by default) and prints one table per knob, each row one run's figures
# (the columns are bench.sh's; docs/benchmarks.md, "How the figures grow").
#
# Knobs (environment): SCALING_PAIRS ("1 10 50 100 200"), SCALING_RATES ("250 500 1000 1500"),
# SCALING_SOCKETS ("5000 10000 15000"), SCALING_ONLY ("pairs rate sockets"), and bench.sh's own
# (BENCH_TARGETS "sqlite postgres", BENCH_DURATION_S, VIDEOCHAT_BIN, BENCH_POSTGRES_URL, …).
set -euo pipefail
cd "$(dirname "$0")/.."

PAIRS_LIST="${SCALING_PAIRS:-1 10 50 100 200}"
RATES="${SCALING_RATES:-250 500 1000 1500}"
SOCKETS_LIST="${SCALING_SOCKETS:-5000 10000 15000}"
ONLY="${SCALING_ONLY:-pairs rate sockets}"
export BENCH_TARGETS="${BENCH_TARGETS:-sqlite postgres}"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT

# One bench.sh run; its table's rows of ours, each named by the knob's value, cut to `columns`
# (bench.sh's table fields: 2 run, 3-6 flat, 7-13 paced, 14-15 idle).
run() { # knob value scenario columns env...
  local knob="$1" value="$2" scenario="$3" columns="$4"
  shift 4
  if ! env "$@" BENCH_ONLY="$scenario" BENCH_LABEL="$knob-$value" bash bench/bench.sh > "$log" 2>&1; then
    echo "!! bench.sh failed for $knob=$value; the end of its output:" >&2
    tail -n 20 "$log" >&2
    return 1
  fi
  grep -E '^\| ours-' "$log" | awk -F'|' -v knob="$knob=$value" -v columns="$columns" '{
    n = split(columns, c, " ")
    sub(/^ +/, "", $2); sub(/ +$/, "", $2)
    line = "| " knob ", " $2 " |"
    for (i = 1; i <= n; i++) line = line $(c[i]) "|"
    print line
  }'
}

table() { # title header
  echo
  echo "## $1"
  echo
  echo "$2"
  echo "$2" | sed -e 's/[^|]//g' -e 's/|/---|/g' -e 's/^---|/|/'
}

if [[ " $ONLY " == *" pairs "* ]]; then
  table "flat, by pairs" "| run | handshakes/s | errors | ring p99 ms | accept p99 ms |"
  for pairs in $PAIRS_LIST; do run pairs "$pairs" flat "3 4 5 6" BENCH_PAIRS="$pairs"; done
fi
if [[ " $ONLY " == *" rate "* ]]; then
  table "paced, by rate (handshakes/s asked)" \
    "| run | handshakes/s | errors | slips | ring p50 ms | ring p99 ms | accept p99 ms | stop-ringing p99 ms |"
  for rate in $RATES; do run rate "$rate" paced "7 8 9 10 11 12 13" BENCH_RATE="$rate"; done
fi
if [[ " $ONLY " == *" sockets "* ]]; then
  table "idle, by sockets" "| run | KiB/socket | connects/s |"
  for sockets in $SOCKETS_LIST; do run sockets "$sockets" idle "14 15" BENCH_SOCKETS="$sockets"; done
fi
