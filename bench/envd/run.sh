#!/usr/bin/env bash
# Builds envd and envd-bench in release mode and runs the benchmark once.
# Extra arguments go to envd-bench (e.g. `-n 1000`). Exits non-zero when a
# performance target of the envd issue is missed.
set -euo pipefail
cd "$(dirname "$0")/../.."
# Same flags and target as the shipped (static) envd, so scripts/test.sh's envd
# build is reused instead of compiling every dependency a second time.
target=x86_64-unknown-linux-gnu
RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --target "$target" -p envd -p envd-bench
exec "target/$target/release/envd-bench" "target/$target/release/envd" "$@"
