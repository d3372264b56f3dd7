#!/usr/bin/env bash
# Builds release `wrenn`, makes sure the SDK venv (.venv-sdk), `wrk` and the `minimal` image are
# there, and runs the control-plane benchmark once (as root): SDK exec and create-to-running vs
# the in-process agent called directly, and GET /v1/capsules throughput with 200 rows on SQLite
# (and PostgreSQL when WRENN_TEST_POSTGRES_URL is set). Extra arguments go to bench.py
# (e.g. `-n 100 --creates 10`). Exits non-zero when a ratio target is missed.
#
#   WRENN_BENCH_IMAGES=DIR  reuse a built image dir (DIR/minimal; default: the agent tests'
#                           $CARGO_TARGET_DIR/tmp/wrenn-agent-data/images when built) by symlink
#   WRENN_BENCH_DIR=DIR     scratch dir (default: $CARGO_TARGET_DIR/tmp/api-bench)
#
# It holds the host-wide capsule lock (/run/lock/wrenn-capsules.lock) for the whole run: an
# agent that starts reclaims every `wrenn-` netns it does not own, so capsule runs must not
# overlap.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ "$(id -u)" != 0 ]; then
    echo "api-bench: needs root (wrenn up runs the host agent)" >&2
    exit 2
fi
command -v runsc >/dev/null || { echo "api-bench: runsc not found (scripts/install-runsc.sh)" >&2; exit 2; }
target=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release -p wrenn-cli
bash scripts/sdk-venv.sh
if ! command -v wrk >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null 2>&1 ||
        echo "api-bench: wrk not installable; using the Python load generator" >&2
fi

scratch=${WRENN_BENCH_DIR:-$target/tmp/api-bench}
data=$scratch/data
exec 9>>/run/lock/wrenn-capsules.lock
echo "api-bench: waiting for /run/lock/wrenn-capsules.lock" >&2
flock -w 3600 9 || { echo "api-bench: capsule lock not free after 1 h" >&2; exit 2; }

# A fresh data dir each run (database, keys); the image is reused.
rm -rf "$data"
mkdir -p "$data/images"
fixture="$target/tmp/wrenn-agent-data/images"
if [ -z "${WRENN_BENCH_IMAGES:-}" ] && [ -f "$fixture/minimal/rootfs/usr/local/bin/envd" ]; then
    WRENN_BENCH_IMAGES=$fixture
fi
if [ -n "${WRENN_BENCH_IMAGES:-}" ]; then
    src=$(realpath "$WRENN_BENCH_IMAGES/minimal")
    [ -f "$src/rootfs/usr/local/bin/envd" ] || { echo "no built minimal image in $WRENN_BENCH_IMAGES" >&2; exit 2; }
    ln -sfn "$src" "$data/images/minimal"
else
    # The image needs a static envd (same recipe and target dir as bench/agent).
    CARGO_TARGET_DIR="$target/envd-static" RUSTFLAGS="-C target-feature=+crt-static" \
        cargo build --release --target x86_64-unknown-linux-gnu -p envd
    "$target/release/wrenn" image build minimal --data-dir "$data" \
        --envd-bin "$target/envd-static/x86_64-unknown-linux-gnu/release/envd"
fi
# Not exec: the lock (fd 9) stays held by this shell until bench.py is done.
.venv-sdk/bin/python bench/api/bench.py --wrenn "$target/release/wrenn" --data-dir "$data" "$@"
