#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine (run as root) and starts Wrenn.
#
#   ./scripts/setup.sh            install, build, then run `wrenn up` in the foreground
#   ./scripts/setup.sh --no-run   only install and build (and build the capsule image)
#
# `wrenn up` runs the control plane and the host agent in one process with embedded defaults:
# data in $WRENN_DATA_DIR (default /var/lib/wrenn), SQLite, API on $WRENN_LISTEN (default
# 127.0.0.1:8080). The first run builds the `minimal` capsule image with debootstrap and prints
# an admin API key (also in $WRENN_DATA_DIR/admin-api-key).
# Safe to re-run: installed packages, up-to-date builds and the built image are skipped.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

run=1
case ${1:-} in
"") ;;
--no-run) run=0 ;;
-h | --help)
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
    exit 0
    ;;
*) die "unknown argument '$1' (try --help)" ;;
esac

DATA_DIR=${WRENN_DATA_DIR:-/var/lib/wrenn}
LISTEN=${WRENN_LISTEN:-127.0.0.1:8080}
WRENN_BIN=$REPO_ROOT/target/release/wrenn

require_root
# libnss-myhostname: `*.localhost` names resolve to loopback, so capsule URLs
# (`<port>-<capsule id>.localhost:8080`, the SDK's get_url) work on this machine.
apt_install "${BUILD_PACKAGES[@]}" libnss-myhostname
# runsc (gVisor), debootstrap, nftables, iproute2, e2fsprogs: what the host agent needs.
bash scripts/install-runsc.sh
ensure_rust
build_envd
# The dashboard first: the release binary embeds web/build at compile time.
command -v node >/dev/null || apt_install nodejs npm
log "building the dashboard (web/)"
(cd web && npm ci --no-audit --no-fund --loglevel=error && npm run build)
log "building wrenn (release)"
cargo build --locked --release -p wrenn-cli
log "building (or updating envd in) the minimal capsule image in $DATA_DIR"
"$WRENN_BIN" image build minimal --data-dir "$DATA_DIR" --envd-bin "$ENVD_BIN"
if ((run)); then
    log "starting wrenn up on $LISTEN (Ctrl-C stops it; capsules keep running)"
    exec "$WRENN_BIN" up --data-dir "$DATA_DIR" --listen "$LISTEN" --envd-bin "$ENVD_BIN"
fi
