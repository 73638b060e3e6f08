#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 60) each; fails on any crash.
# Built with debug assertions (-a), so an arithmetic overflow is a crash too.
# Installs cargo-fuzz when missing. libFuzzer needs nightly features, which
# the stable toolchain allows with RUSTC_BOOTSTRAP=1.
set -euo pipefail
cd "$(dirname "$0")/../.."
fz=tests/fuzz
seconds=${1:-60}
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "tests/fuzz: installing cargo-fuzz"
    cargo install --locked cargo-fuzz </dev/null
fi
export RUSTC_BOOTSTRAP=1
targets=$(cargo fuzz list --fuzz-dir $fz)
cargo fuzz build --fuzz-dir $fz -O -a </dev/null
for t in $targets; do
    mkdir -p "$fz/corpus/$t" "$fz/target"
    # Committed seeds (e.g. the SIP torture messages) start the corpus.
    [ -d "$fz/seeds/$t" ] && cp -n "$fz/seeds/$t"/* "$fz/corpus/$t"/ 2>/dev/null || true
    rm -rf "$fz/artifacts/$t"
    log="$fz/target/$t.log"
    echo "tests/fuzz: $t for ${seconds}s"
    if ! cargo fuzz run --fuzz-dir $fz -O -a "$t" "$fz/corpus/$t" -- -max_total_time="$seconds" \
        -rss_limit_mb=2048 -print_final_stats=1 </dev/null >"$log" 2>&1; then
        echo "tests/fuzz: $t failed; the end of its log:" >&2
        tail -n 40 "$log" >&2
        exit 1
    fi
    grep -E "^stat::number_of_executed_units|^stat::peak_rss_mb" "$log" | sed "s/^/    /"
done
