#!/usr/bin/env bash
# Builds release `wrenn`, a static envd and agent-bench, makes sure the `minimal` image exists in
# a scratch data dir, and runs the host agent benchmark once (as root). Extra arguments go to
# agent-bench (e.g. `-n 30 --density 100`). Exits non-zero when a target of issue 3 is missed.
#
#   WRENN_BENCH_IMAGES=DIR  reuse a built image dir (DIR/minimal, e.g. the agent tests'
#                           target/tmp/wrenn-agent-data/images, the default when built) by
#                           symlink instead of building
#   WRENN_BENCH_DIR=DIR     scratch data dir (default: $CARGO_TARGET_DIR/tmp/agent-bench)
#
# It takes the agent tests' host-wide lock (/run/lock/wrenn-capsules.lock): an agent that
# starts reclaims every `wrenn-` netns it does not own, so capsule runs must not overlap.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ "$(id -u)" != 0 ]; then
    echo "agent-bench: needs root (network namespaces, runsc)" >&2
    exit 2
fi
target=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release -p wrenn-cli -p agent-bench
# The image needs a static envd (same recipe and target dir as the agent tests' fixture).
CARGO_TARGET_DIR="$target/envd-static" RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --target x86_64-unknown-linux-gnu -p envd
envd="$target/envd-static/x86_64-unknown-linux-gnu/release/envd"
data=${WRENN_BENCH_DIR:-$target/tmp/agent-bench}
mkdir -p "$data/images"
# Default: the agent tests' image fixture, when it is built.
fixture="$target/tmp/wrenn-agent-data/images"
if [ -z "${WRENN_BENCH_IMAGES:-}" ] && [ -f "$fixture/minimal/rootfs/usr/local/bin/envd" ]; then
    WRENN_BENCH_IMAGES=$fixture
    # The fixture may predate the envd just built: refresh it (cached: only envd is replaced).
    "$target/release/wrenn" image build minimal --data-dir "$(dirname "$fixture")" --envd-bin "$envd"
fi
if [ -n "${WRENN_BENCH_IMAGES:-}" ]; then
    src=$(realpath "$WRENN_BENCH_IMAGES/minimal")
    [ -f "$src/rootfs/usr/local/bin/envd" ] || { echo "no built minimal image in $WRENN_BENCH_IMAGES" >&2; exit 2; }
    ln -sfn "$src" "$data/images/minimal"
else
    "$target/release/wrenn" image build minimal --data-dir "$data" --envd-bin "$envd"
fi
exec "$target/release/agent-bench" --wrenn "$target/release/wrenn" --data-dir "$data" \
    --lock /run/lock/wrenn-capsules.lock "$@"
