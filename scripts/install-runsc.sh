#!/usr/bin/env bash
# Installs what the host agent needs on a Debian 12 host: gVisor's `runsc` from Debian 13 (trixie),
# plus iproute2, nftables and debootstrap from the host's own release.
#
# Debian 12's runsc (2022) lacks the systrap platform and is ~10x slower; Debian 13's package is a
# static binary with no package dependencies, so we fetch just that .deb through a private apt
# configuration (own sources list, lists dir and state dir) and leave the host on Debian 12.
#
# Idempotent: does nothing when a new-enough runsc is already installed
# (WRENN_RUNSC_REINSTALL=1 fetches and installs it again).
set -euo pipefail

MIN_RUNSC_VERSION=20240729
WORK_DIR=${WRENN_RUNSC_APT_DIR:-/var/cache/wrenn/runsc-apt}

log() { printf 'install-runsc: %s\n' "$*" >&2; }

if [[ $(id -u) -ne 0 ]]; then
    log "must run as root"
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive

# Host tools from the host's own release.
missing=()
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v nft >/dev/null 2>&1 || missing+=(nftables)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
# Capsule disks: sparse ext4 images, loop-mounted (crates/agent/src/disk.rs).
command -v mkfs.ext4 >/dev/null 2>&1 || missing+=(e2fsprogs)
command -v losetup >/dev/null 2>&1 || missing+=(mount)
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# `runsc --version` prints e.g. "runsc version release-20240729.0"; older Debian builds print
# "runsc version 0.0~20221219.0". Either way the first 8-digit run is the release date.
installed_runsc_date() {
    local bin
    bin=$(command -v runsc 2>/dev/null) || return 1
    "$bin" --version 2>/dev/null | grep -o '[0-9]\{8\}' | head -n1
}

if [[ ${WRENN_RUNSC_REINSTALL:-0} != 1 ]] && date=$(installed_runsc_date) &&
    [[ -n $date && $date -ge $MIN_RUNSC_VERSION ]]; then
    log "runsc $date already installed (>= $MIN_RUNSC_VERSION); nothing to do"
    exit 0
fi

# Find the machine's Debian mirror: deb822 files first, then one-line sources.list entries.
mirror=""
for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f $f ]] || continue
    mirror=$(awk '
        /^URIs:/ { uri = $2 }
        /^Suites:/ { for (i = 2; i <= NF; i++) if ($i !~ /-/ && uri !~ /security/) { print uri; exit } }
    ' "$f")
    [[ -n $mirror ]] && break
done
if [[ -z $mirror ]]; then
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -f $f ]] || continue
        mirror=$(awk '$1 == "deb" && $0 !~ /security/ && $0 ~ /debian/ {
            for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i !~ /\]$/) { print $i; exit } }' "$f")
        [[ -n $mirror ]] && break
    done
fi
mirror=${mirror:-http://deb.debian.org/debian}
log "using Debian mirror $mirror for trixie"

keyring=/usr/share/keyrings/debian-archive-keyring.gpg
if [[ ! -f $keyring ]]; then
    log "missing $keyring (package debian-archive-keyring); cannot verify the trixie archive"
    exit 1
fi

mkdir -p "$WORK_DIR/lists/partial" "$WORK_DIR/archives/partial" "$WORK_DIR/deb"
cat >"$WORK_DIR/trixie.sources" <<EOF
Types: deb
URIs: $mirror
Suites: trixie
Components: main
Signed-By: $keyring
EOF

apt_opts=(
    -o "Dir::Etc::SourceList=$WORK_DIR/trixie.sources"
    -o "Dir::Etc::SourceParts=/dev/null"
    -o "Dir::State::Lists=$WORK_DIR/lists"
    -o "Dir::Cache::Archives=$WORK_DIR/archives"
    -o "Dir::Cache::pkgcache="
    -o "Dir::Cache::srcpkgcache="
    -o "APT::Get::List-Cleanup=0"
    # The download dir belongs to root; without this apt warns it cannot drop to _apt.
    -o "APT::Sandbox::User=root"
)
log "updating the private trixie package list"
apt-get "${apt_opts[@]}" update -qq

rm -f "$WORK_DIR"/deb/runsc_*.deb
(cd "$WORK_DIR/deb" && apt-get "${apt_opts[@]}" download runsc)
deb=$(ls "$WORK_DIR"/deb/runsc_*.deb)
log "installing $(basename "$deb")"
dpkg -i "$deb" >/dev/null

date=$(installed_runsc_date || true)
if [[ -z $date || $date -lt $MIN_RUNSC_VERSION ]]; then
    log "installed runsc reports version '${date:-unknown}', older than $MIN_RUNSC_VERSION"
    exit 1
fi
log "runsc $date installed at $(command -v runsc)"
