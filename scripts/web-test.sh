#!/usr/bin/env bash
# The dashboard's checks, from a clean clone: Debian's chromium (if missing), npm ci, the
# production build with its bundle-size report, svelte-check, vitest, then the browser tests
# (tests/web/, playwright-core driving /usr/bin/chromium) against `wrenn up` on a scratch data dir.
#
#   WRENN_BIN         wrenn binary for the browser tests (default: target/release/wrenn, else
#                     target/debug/wrenn). A release binary embeds web/build at compile time,
#                     so build the UI before it; a debug binary reads web/build from disk.
#   WRENN_IMAGES_DIR  prebuilt minimal image to reuse (else `wrenn up` builds one: slow)
#   WEB_TEST_SKIP_BROWSER=1  only the Node checks
#   WEB_TEST_SKIP_NODE=1     only the browser tests (the Node checks ran before, e.g. in
#                            test.sh's ui step; npm ci still runs if web/node_modules is missing)
#
# Holds /run/lock/wrenn-capsules.lock while capsules run. Artifacts: target/web/.
set -euo pipefail
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO_ROOT"
# shellcheck source=lib.sh
source scripts/lib.sh

start=$SECONDS
command -v node >/dev/null || apt_install nodejs npm
node_major=$(node -p 'process.versions.node.split(".")[0]')
((node_major >= 20)) || die "Node.js >= 20 needed (found $(node --version))"
if [[ -z ${WEB_TEST_SKIP_BROWSER:-} ]]; then
    [[ -x /usr/bin/chromium ]] || apt_install chromium
    # The admin pages test grants admin in the server's SQLite DB (the admin routes take a
    # user login, and `wrenn up`'s admin has no password).
    command -v sqlite3 >/dev/null || apt_install sqlite3
fi
mkdir -p target/web

if [[ -n ${WEB_TEST_SKIP_NODE:-} ]]; then
    log "web: Node checks skipped (WEB_TEST_SKIP_NODE)"
    if [[ ! -f web/node_modules/playwright-core/package.json ]]; then
        log "web: npm ci (for playwright-core)"
        (cd web && npm ci --no-audit --no-fund --loglevel=error)
    fi
else
    log "web: npm ci"
    (cd web && npm ci --no-audit --no-fund --loglevel=error)
    log "web: build (+ initial bundle size)"
    (cd web && npm run build) 2>&1 | tee target/web/build.log | grep -E 'initial JS|KiB  _app|bundle-size|error' || true
    grep -q 'initial JS' target/web/build.log || die "web build failed (target/web/build.log)"
    log "web: svelte-check"
    (cd web && npm run check)
    log "web: vitest"
    (cd web && npx vitest run)
fi

if [[ -n ${WEB_TEST_SKIP_BROWSER:-} ]]; then
    log "web: browser tests skipped (WEB_TEST_SKIP_BROWSER)"
    exit 0
fi
bin=${WRENN_BIN:-}
if [[ -z $bin ]]; then
    for c in target/release/wrenn target/debug/wrenn; do
        [[ -x $c ]] && { bin=$REPO_ROOT/$c; break; }
    done
fi
[[ -n $bin && -x $bin ]] || die "no wrenn binary: build it (cargo build -p wrenn-cli) or set WRENN_BIN"
log "web: browser tests against $bin"
lock=/run/lock/wrenn-capsules.lock
mkdir -p "$(dirname "$lock")"
exec 9>>"$lock"
flock -w "${WRENN_WEB_LOCK_TIMEOUT:-1800}" 9 || die "$lock still held after ${WRENN_WEB_LOCK_TIMEOUT:-1800}s"
set +e # keep going to report the time; the status is node's
WRENN_BIN=$bin node --test --test-reporter=spec tests/web/ 2>&1 | tee target/web/browser-tests.log
status=${PIPESTATUS[0]}
set -e
log "web: done in $((SECONDS - start)) s (screenshots in target/web/)"
exit "$status"
