# videochat-handshake tasks. `just` is optional: every recipe is a plain cargo command.

# Gateway + handshake service on SQLite (ws://127.0.0.1:8080/ws)
serve:
    cargo run -p videochat -- serve

# The whole test suite (SQLite and Postgres)
test:
    cargo test --workspace

# What CI runs: fmt, clippy, tests
ci:
    bash .ci/run

# A development token for a user
token user name="":
    cargo run -q -p videochat -- token {{user}} --name "{{name}}"

fmt:
    cargo fmt --all

lint:
    cargo clippy --workspace --all-targets -- -D warnings

# 2 gateways (8080, 8081) + 2 handshake replicas + the local Postgres, as processes; Ctrl-C stops
cluster:
    bash deploy/cluster.sh

# Validate deploy/kubernetes with kubernetes-validate --strict
kube-validate:
    bash deploy/kubernetes/validate.sh

# Benchmark: ours on SQLite and Postgres vs a Socket.IO peer (docs/benchmarks.md; knobs BENCH_*)
bench:
    bash bench/bench.sh

# How the bench's figures grow with pairs, rate and sockets (docs/benchmarks.md; knobs SCALING_*)
bench-scaling:
    bash bench/scaling.sh

# Soak with faults on a schedule (replica killed for 20 s, gateways killed, Postgres crashed); prints the ledger
soak seconds="60":
    SOAK_SECONDS={{seconds}} cargo test -p videochat --test soak -- --ignored --nocapture
