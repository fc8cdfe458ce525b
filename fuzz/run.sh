#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 20), on the stable toolchain.
#
#   fuzz/run.sh [SECONDS]
#
# Installs cargo-fuzz (crates.io) if it is missing. cargo-fuzz passes flags the stable compiler
# only accepts from nightly (-Zsanitizer=address and friends); RUSTC_BOOTSTRAP=1 lets stable
# take them, so no nightly toolchain is needed. New inputs that add coverage are kept in
# fuzz/corpus/<target> (not committed); fuzz/seeds/<target> are the committed starting points.
# A crash stops the run with a non-zero status and leaves the input in fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-20}"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "cargo-fuzz is missing; installing it"
  cargo install cargo-fuzz --locked
fi

toolchain=()
if command -v rustup >/dev/null 2>&1; then
  toolchain=(+stable)
fi
export RUSTC_BOOTSTRAP=1

targets=$(cargo "${toolchain[@]}" fuzz list)
cargo "${toolchain[@]}" fuzz build
for target in $targets; do
  echo "== fuzz $target for ${seconds}s"
  mkdir -p "corpus/$target" "seeds/$target"
  cargo "${toolchain[@]}" fuzz run "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$seconds" -dict=dicts/json.dict -max_len=4096 -timeout=60 \
    -print_final_stats=1
done
