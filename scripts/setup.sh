#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine (run as root) and starts Wrenn.
#
#   ./scripts/setup.sh            install build deps, build, run envd in the foreground
#   ./scripts/setup.sh --no-run   only install and build
#
# Today "Wrenn" is the guest daemon envd, run on the host on port $ENVD_PORT (49983).
# Once the control plane and host agent exist, run_wrenn becomes `wrenn up`.
# Safe to re-run: installed packages and up-to-date builds are skipped.
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

run_wrenn() {
    log "starting envd on port $ENVD_PORT (Ctrl-C stops it)"
    exec "$ENVD_BIN" --port "$ENVD_PORT"
}

require_root
apt_install "${BUILD_PACKAGES[@]}"
ensure_rust
build_envd
log "envd is at ${ENVD_BIN#"$REPO_ROOT"/} ($(du -h "$ENVD_BIN" | cut -f1))"
if ((run)); then
    run_wrenn
fi
