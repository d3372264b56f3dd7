#!/usr/bin/env bash
# Runs every check of the project on a Debian 12 machine, as root:
#   deps      Debian packages, the Rust toolchain check, a Python venv (.venv/) with the e2b SDK
#   fmt       cargo fmt --all -- --check
#   clippy    cargo clippy --workspace --all-targets -- -D warnings
#   postgres  PostgreSQL cluster + test database for the control plane's tests
#             (exports WRENN_TEST_POSTGRES_URL; with CI=true those tests fail without it)
#   ui        the dashboard: npm ci, build (embedded by every later wrenn build), svelte-check,
#             vitest, bundle-size budget (scripts/web-test.sh without the browser)
#   test      cargo test --workspace --no-fail-fast (every test binary runs)
#   build     release (static) envd, used by the agent's capsule image and the e2b suite
#   sdk       the official wrenn SDK against `wrenn up` (tests/sdk; builds code-runner-beta)
#   web       the dashboard in Chromium against `wrenn up` (tests/web, playwright-core)
#   e2b       the public e2b Python SDK against envd (tests/e2b, pytest)
#   bench-*   bench/envd/run.sh and bench/agent/run.sh (performance targets as ratios)
# Every step runs even when an earlier one failed (unless it needs that one's output);
# the exit status is non-zero if any step failed. CI runs this through .ci/run.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

TEST_PACKAGES=(python3 python3-venv iproute2 procps passwd libnss-myhostname chromium)
VENV="$REPO_ROOT/.venv"
E2B_LOG_DIR="$REPO_ROOT/target/e2b"
export ENVD_BIN E2B_LOG_DIR

if [[ ${CI:-} == true ]]; then
    # A clean build gains nothing from incremental artifacts.
    export CARGO_INCREMENTAL=0
fi

declare -a step_names=() step_results=() step_secs=()
failed_steps=()

record() { # name result seconds
    step_names+=("$1")
    step_results+=("$2")
    step_secs+=("$3")
    [[ $2 != FAIL ]] || failed_steps+=("$1")
}

# step NAME CMD...: runs CMD in a subshell with errexit in force, records the result.
step() {
    local name=$1 start rc
    shift
    log "[$name] $*"
    start=$SECONDS
    set +e
    (
        set -e
        "$@"
    )
    rc=$?
    set -e
    if ((rc == 0)); then
        record "$name" PASS $((SECONDS - start))
    else
        printf '\n[%s] FAILED (exit %d)\n' "$name" "$rc" >&2
        record "$name" FAIL $((SECONDS - start))
    fi
    return 0
}

skip() { # name reason
    log "[$1] skipped: $2"
    record "$1" "SKIP ($2)" 0
}

passed() { # name: whether that step passed
    local i
    for i in "${!step_names[@]}"; do
        [[ ${step_names[$i]} == "$1" ]] && [[ ${step_results[$i]} == PASS ]] && return 0
    done
    return 1
}

summary() {
    local i total=${#step_names[@]}
    log "summary"
    for i in "${!step_names[@]}"; do
        printf '  %-8s %-24s %5ss\n' "${step_names[$i]}" "${step_results[$i]}" "${step_secs[$i]}"
    done
    printf '  total    %-24s %5ss\n' "" "$SECONDS"
    if ((${#failed_steps[@]})); then
        printf '\ntest.sh: FAILED: %s (%d of %d steps)\n' "${failed_steps[*]}" "${#failed_steps[@]}" "$total"
    else
        printf '\ntest.sh: OK, no step failed (%d steps)\n' "$total"
    fi
}

setup_venv() {
    local py=${PYTHON:-python3}
    "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
        die "$py is $("$py" --version 2>&1); the e2b SDK needs Python >= 3.11"
    if ! "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        log "creating $VENV"
        rm -rf "$VENV"
        "$py" -m venv "$VENV"
    fi
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        -r tests/e2b/requirements.txt
}

deps() {
    require_root
    apt_install "${BUILD_PACKAGES[@]}" "${TEST_PACKAGES[@]}"
    # runsc (gVisor), debootstrap, nftables: the host agent's capsule tests need them.
    bash scripts/install-runsc.sh
    ensure_rust
    setup_venv
    # Python 3.13 venv with the official wrenn SDK (tests/sdk).
    bash scripts/sdk-venv.sh
    # schemathesis venv (tests/api).
    bash scripts/api-venv.sh
}

# schemathesis against /openapi.json of `wrenn server` (no agent): zero 500s, envelope on every
# error.
run_api() {
    cargo build --locked -p wrenn-cli
    WRENN_BIN=$PWD/target/debug/wrenn timeout -k 30 900 .venv-api/bin/python -m pytest -p no:cacheprovider tests/api
}

# The official SDK (wrenn 0.3.0) against `wrenn up` on a scratch data dir, reusing the
# `minimal` image the agent tests built in the test step.
run_sdk() {
    cargo build --locked --release -p wrenn-cli
    WRENN_BIN=$PWD/target/release/wrenn \
        WRENN_IMAGES_DIR=$PWD/target/tmp/wrenn-agent-data/images \
        timeout -k 30 1800 .venv-sdk/bin/python -m pytest -p no:cacheprovider tests/sdk
}

# The dashboard in a real browser against the release `wrenn` (built by run_sdk, UI embedded).
run_web() {
    cargo build --locked --release -p wrenn-cli
    WRENN_BIN=$PWD/target/release/wrenn \
        WRENN_IMAGES_DIR=$PWD/target/tmp/wrenn-agent-data/images \
        WEB_TEST_SKIP_NODE=1 timeout -k 30 1800 bash scripts/web-test.sh
}

run_e2b() {
    mkdir -p "$E2B_LOG_DIR"
    # -p no:cacheprovider: keep the clone clean. The suite starts envd itself.
    if ! timeout -k 30 1800 "$VENV/bin/python" -m pytest -p no:cacheprovider tests/e2b; then
        if [[ -f $E2B_LOG_DIR/envd.log ]]; then
            log "last lines of envd's log ($E2B_LOG_DIR/envd.log)"
            tail -n 60 "$E2B_LOG_DIR/envd.log" >&2
        fi
        return 1
    fi
}

# The whole run (debug + release builds, capsule image, venvs) needs roughly 15 GiB. A full
# disk shows up as linker crashes and ENOSPC in every later step, so say it once, up front.
disk_check() {
    local free_gib
    free_gib=$(df --output=avail -B1G "$REPO_ROOT" | tail -n 1 | tr -d ' ')
    log "free disk at $REPO_ROOT: ${free_gib} GiB"
    ((free_gib >= 15)) || die "only ${free_gib} GiB free at $REPO_ROOT; the test run needs about 15 GiB"
}

step disk disk_check
step deps deps
if ! passed disk || ! passed deps; then
    summary
    exit 1
fi
# ensure_rust may have put cargo on PATH inside the step's subshell; do it here too.
ensure_rust

step fmt cargo fmt --all -- --check
# Before any cargo build: the wrenn binary embeds web/build at compile time.
step ui env WEB_TEST_SKIP_BROWSER=1 bash scripts/web-test.sh
step clippy cargo clippy --locked --workspace --all-targets -- -D warnings
# The static envd goes first: the agent's tests put it into the capsule image.
step build build_envd
export WRENN_ENVD_BIN=$ENVD_BIN
step postgres setup_test_postgres
export WRENN_TEST_POSTGRES_URL=${WRENN_TEST_POSTGRES_URL:-$(test_postgres_url)}
step test cargo test --locked --workspace --no-fail-fast
step api run_api
if passed test; then
    step sdk run_sdk
else
    skip sdk "the test step (which builds the capsule image) failed"
fi
if passed test && passed ui; then
    step web run_web
else
    skip web "needs the ui step and the capsule image of the test step"
fi
if passed build; then
    step e2b run_e2b
else
    skip e2b "no envd build"
fi
for bench in envd agent api; do
    if [[ -f bench/$bench/run.sh ]]; then
        step "bench-$bench" bash "bench/$bench/run.sh"
    else
        skip "bench-$bench" "bench/$bench/run.sh absent"
    fi
done
summary
((${#failed_steps[@]} == 0))
