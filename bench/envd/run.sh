#!/usr/bin/env bash
# Builds envd and envd-bench in release mode and runs the benchmark once.
# Extra arguments go to envd-bench (e.g. `-n 1000`). Exits non-zero when a
# performance target of the envd issue is missed.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -p envd -p envd-bench
exec target/release/envd-bench target/release/envd "$@"
