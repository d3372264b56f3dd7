# shellcheck shell=bash
# Helpers shared by scripts/setup.sh and scripts/test.sh. Sourcing this file only
# defines variables and functions; it changes nothing on the machine.

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# envd is built static for the host target, so the same binary can be copied into
# any capsule image (no glibc version coupling with the image).
ENVD_TARGET=x86_64-unknown-linux-gnu
ENVD_BIN="$REPO_ROOT/target/$ENVD_TARGET/release/envd"
ENVD_PORT=${ENVD_PORT:-49983}

# Debian packages needed to build the workspace. protoc is vendored (protoc-bin-vendored);
# libc6-dev (pulled in by build-essential) provides the static glibc that +crt-static links.
# shellcheck disable=SC2034 # used by the scripts that source this file
BUILD_PACKAGES=(build-essential pkg-config ca-certificates git)

log() { printf '\n==> %s\n' "$*" >&2; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

require_root() {
    [[ $(id -u) -eq 0 ]] || die "run this as root (it installs Debian packages and runs envd as root)"
}

# apt_install PKG...: installs the packages that are not installed yet. Runs
# `apt-get update` only when something is missing, so a second run does nothing.
apt_install() {
    local missing=() pkg
    for pkg in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$pkg")
        fi
    done
    if ((${#missing[@]} == 0)); then
        return 0
    fi
    log "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# ensure_rust: the Rust toolchain (rustup, stable >= the workspace's rust-version) must
# already be installed; nothing outside Debian's archive and crates.io is downloaded.
ensure_rust() {
    if ! command -v cargo >/dev/null 2>&1 && [[ -f "$HOME/.cargo/env" ]]; then
        # shellcheck disable=SC1091
        source "$HOME/.cargo/env"
    fi
    command -v cargo >/dev/null 2>&1 ||
        die "cargo not found: install Rust stable with rustup (https://rustup.rs) and re-run"
    local want have
    want=$(sed -n 's/^rust-version *= *"\(.*\)"/\1/p' "$REPO_ROOT/Cargo.toml")
    have=$(rustc --version | awk '{print $2}')
    if [[ -n $want ]] && [[ $(printf '%s\n%s\n' "$want" "$have" | sort -V | head -n1) != "$want" ]]; then
        die "rustc $have is older than the workspace's rust-version $want: run 'rustup update stable'"
    fi
}

# build_envd: release build of the static envd binary at $ENVD_BIN.
build_envd() {
    log "building envd (release, static) -> ${ENVD_BIN#"$REPO_ROOT"/}"
    (cd "$REPO_ROOT" &&
        RUSTFLAGS='-C target-feature=+crt-static' \
            cargo build --locked --release --target "$ENVD_TARGET" -p envd)
    [[ -x $ENVD_BIN ]] || die "build finished but $ENVD_BIN is missing"
}

# PostgreSQL for the control plane's tests (crates/server/tests run against SQLite and this).
TEST_PG_NAME=wrenn_test

# setup_test_postgres: installs Debian's PostgreSQL, starts its first cluster and creates the
# role and database $TEST_PG_NAME (password = name) unless they exist. Safe to re-run.
setup_test_postgres() {
    apt_install postgresql
    local ver name port status
    read -r ver name port status _ < <(pg_lsclusters --no-header | head -n1) ||
        die "no PostgreSQL cluster found (pg_lsclusters)"
    if [[ $status != online* ]]; then
        log "starting PostgreSQL cluster $ver/$name"
        pg_ctlcluster "$ver" "$name" start
    fi
    local psql=(runuser -u postgres -- psql -p "$port" -v ON_ERROR_STOP=1 -qtA)
    if [[ $("${psql[@]}" -c "SELECT 1 FROM pg_roles WHERE rolname = '$TEST_PG_NAME'") != 1 ]]; then
        "${psql[@]}" -c "CREATE ROLE $TEST_PG_NAME LOGIN PASSWORD '$TEST_PG_NAME'"
    fi
    if [[ $("${psql[@]}" -c "SELECT 1 FROM pg_database WHERE datname = '$TEST_PG_NAME'") != 1 ]]; then
        "${psql[@]}" -c "CREATE DATABASE $TEST_PG_NAME OWNER $TEST_PG_NAME"
    fi
}

# test_postgres_url: the URL of that database (what WRENN_TEST_POSTGRES_URL must hold).
test_postgres_url() {
    local port
    port=$(pg_lsclusters --no-header 2>/dev/null | awk 'NR == 1 { print $3 }')
    printf 'postgres://%s:%s@127.0.0.1:%s/%s\n' "$TEST_PG_NAME" "$TEST_PG_NAME" "${port:-5432}" "$TEST_PG_NAME"
}
