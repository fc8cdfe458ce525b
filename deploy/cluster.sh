#!/usr/bin/env bash
# `just cluster`: a small cluster on this machine, as plain processes — two handshake
# replicas and two gateways over the local Postgres, each gateway knowing both replicas
# (VIDEOCHAT_HANDSHAKE_URL lists them). Logs go to target/cluster/; Ctrl-C stops everything
# (SIGTERM, gateways first, so each process drains as it would in production; the processes
# run in their own sessions so that the terminal's Ctrl-C reaches only this script).
#
#   gateways   ws://127.0.0.1:8080/ws  ws://127.0.0.1:8081/ws   (CLUSTER_GATEWAY_PORTS)
#   replicas   127.0.0.1:50061  127.0.0.1:50062                 (CLUSTER_GRPC_PORTS)
#              metrics on 9471, 9472                            (CLUSTER_METRICS_PORTS)
#   database   postgres://postgres@127.0.0.1:5432/videochat_cluster (CLUSTER_DATABASE_URL)
#
# Try a replica failure: `kill -9 <pid>` of one replica (pids are in target/cluster/pids)
# while clients call; calls go on through the other. Extra settings pass through the
# environment (e.g. VIDEOCHAT_JWT_SECRET, VIDEOCHAT_RING_TIMEOUT_S).
set -euo pipefail
cd "$(dirname "$0")/.."

read -r -a gateway_ports <<< "${CLUSTER_GATEWAY_PORTS:-8080 8081}"
read -r -a grpc_ports <<< "${CLUSTER_GRPC_PORTS:-50061 50062}"
read -r -a metrics_ports <<< "${CLUSTER_METRICS_PORTS:-9471 9472}"
database_url="${CLUSTER_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/videochat_cluster}"
target="${CARGO_TARGET_DIR:-target}"
logs="$target/cluster"
mkdir -p "$logs"
: > "$logs/pids"

echo "== building videochat"
cargo build -q -p videochat
bin="$target/debug/videochat"

echo "== database ${database_url##*/}"
admin_url="${database_url%/*}/postgres"
database="${database_url##*/}"
pg_isready -q -d "$admin_url" || { echo "Postgres at ${database_url%/*} is not up" >&2; exit 1; }
if ! psql "$admin_url" -Atc "SELECT 1 FROM pg_database WHERE datname = '$database'" | grep -q 1; then
  psql "$admin_url" -qc "CREATE DATABASE \"$database\""
fi
DATABASE_URL="$database_url" "$bin" migrate >> "$logs/migrate.log" 2>&1

pids=()
stop() {
  trap - INT TERM EXIT
  echo
  echo "== stopping (SIGTERM; gateways drain first)"
  # Gateways first, so their sockets close with 1012 while the replicas still serve.
  for pid in "${pids[@]}"; do
    if grep -q "^gateway $pid$" "$logs/pids"; then kill -TERM "$pid" 2>/dev/null || true; fi
  done
  for pid in "${pids[@]}"; do
    if grep -q "^gateway $pid$" "$logs/pids"; then wait "$pid" 2>/dev/null || true; fi
  done
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  echo "stopped; logs in $logs/"
}
trap stop INT TERM EXIT

# The gateways' credential towards the replicas, fresh for this run (docs/security.md).
grpc_token="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"

urls=()
for i in "${!grpc_ports[@]}"; do
  n=$((i + 1))
  DATABASE_URL="$database_url" \
  VIDEOCHAT_GRPC_ADDR="127.0.0.1:${grpc_ports[$i]}" \
  VIDEOCHAT_METRICS_ADDR="127.0.0.1:${metrics_ports[$i]}" \
  VIDEOCHAT_GRPC_GATEWAY_TOKENS="$grpc_token" \
    setsid "$bin" handshake > "$logs/handshake-$n.log" 2>&1 &
  pids+=("$!")
  echo "handshake $!" >> "$logs/pids"
  urls+=("http://127.0.0.1:${grpc_ports[$i]}")
  echo "replica $n: grpc 127.0.0.1:${grpc_ports[$i]}, metrics :${metrics_ports[$i]} (pid $!, $logs/handshake-$n.log)"
done
handshake_url="$(IFS=,; echo "${urls[*]}")"

for i in "${!gateway_ports[@]}"; do
  n=$((i + 1))
  VIDEOCHAT_WS_ADDR="127.0.0.1:${gateway_ports[$i]}" \
  VIDEOCHAT_HANDSHAKE_URL="$handshake_url" \
  VIDEOCHAT_GRPC_TOKEN="$grpc_token" \
    setsid "$bin" gateway > "$logs/gateway-$n.log" 2>&1 &
  pids+=("$!")
  echo "gateway $!" >> "$logs/pids"
  echo "gateway $n: ws://127.0.0.1:${gateway_ports[$i]}/ws → $handshake_url (pid $!, $logs/gateway-$n.log)"
done

for port in "${gateway_ports[@]}"; do
  for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$port/readyz" > /dev/null 2>&1 && break
    sleep 0.1
  done
  if curl -fsS "http://127.0.0.1:$port/readyz" > /dev/null 2>&1; then
    echo "gateway on :$port ready"
  else
    echo "gateway on :$port not ready after 10 s; see $logs/" >&2
  fi
done
echo "== running; Ctrl-C stops. e.g.: videochat client --url ws://127.0.0.1:${gateway_ports[1]}/ws --as bob listen"
# Until Ctrl-C, or until every process has exited.
wait
