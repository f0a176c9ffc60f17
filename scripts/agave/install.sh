#!/usr/bin/env bash
# Install agave-validator and solana-genesis (3.1.12, or --version 4.2.2) into a cache directory
# outside the repo, and build the rlimit LD_PRELOAD shim next to them. See --help.
set -euo pipefail

AGAVE_VERSION=3.1.12
# The versions the test bed runs: 3.1.12 (TowerBFT) and 4.2.2 (TowerBFT or Alpenglow). Agave 4.3
# and later declare rust-version 1.97+, newer than this machine's toolchain.
SUPPORTED_VERSIONS=(3.1.12 4.2.2)
for ((i = 1; i <= $#; i++)); do
    case "${!i}" in
        --version) j=$((i + 1)); AGAVE_VERSION="${!j:-}" ;;
        --version=*) v="${!i}"; AGAVE_VERSION="${v#--version=}" ;;
    esac
done
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# Where a prebuilt tarball may be: $AGAVE_PREBUILT_DIR, shared/agave next to the repo, or the
# workplace's /work/shared/agave (a clean clone elsewhere, as CI makes, still finds it).
PREBUILT_DIRS=()
[[ -n "${AGAVE_PREBUILT_DIR:-}" ]] && PREBUILT_DIRS+=("$AGAVE_PREBUILT_DIR")
PREBUILT_DIRS+=("$(realpath -m "$SCRIPT_DIR/../../../shared/agave")" /work/shared/agave)
TARBALL_NAME="agave-${AGAVE_VERSION}-x86_64-linux.tar.xz"
CACHE_DIR="${AGAVE_CACHE:-$HOME/.cache/solana-failover/agave-${AGAVE_VERSION}}"

usage() {
    cat <<EOF
Usage: $(basename "$0") [--version V] [--cache DIR] [--no-prebuilt | --no-build]

Puts agave-validator and solana-genesis ${AGAVE_VERSION} into DIR/bin and builds the rlimit
LD_PRELOAD shim (from rlimit-shim.c) into DIR/librlimit-shim.so.

  --version V      Agave version: ${SUPPORTED_VERSIONS[*]} (default 3.1.12); 4.2.2 runs TowerBFT
                   or, with solana-genesis --alpenglow, Alpenglow. 4.3+ needs a newer rustc.
  --cache DIR      cache directory (default: \${AGAVE_CACHE:-\$HOME/.cache/solana-failover/agave-${AGAVE_VERSION}},
                   currently $CACHE_DIR)
  --no-prebuilt    ignore the prebuilt tarball and build from crates.io
  --no-build       never build: exit 3 when neither the cache nor a prebuilt tarball has them
  -h, --help       show this help

Source of the binaries, in order:
  1. already installed in DIR/bin and reporting ${AGAVE_VERSION}: nothing to do;
  2. the prebuilt tarball ${TARBALL_NAME} in \$AGAVE_PREBUILT_DIR, in shared/agave next
     to the repo or in /work/shared/agave (${PREBUILT_DIRS[*]}), if its sha256 matches
     SHA256SUMS;
  3. cargo install --locked agave-validator / solana-genesis --version ${AGAVE_VERSION}
     (about an hour on 2 cores).

The last line printed is the bin directory.
EOF
}

die() { echo "install.sh: error: $*" >&2; exit 1; }
log() { echo "install.sh: $*" >&2; }

USE_PREBUILT=1
BUILD=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        --version) shift 2 ;;
        --version=*) shift ;;
        --cache) [[ $# -ge 2 ]] || die "--cache needs a directory"; CACHE_DIR="$2"; shift 2 ;;
        --cache=*) CACHE_DIR="${1#--cache=}"; shift ;;
        --no-prebuilt) USE_PREBUILT=0; shift ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done

case " ${SUPPORTED_VERSIONS[*]} " in
    *" $AGAVE_VERSION "*) ;;
    *) die "--version $AGAVE_VERSION is not one the test bed runs (${SUPPORTED_VERSIONS[*]}); Agave 4.3 and later need rustc 1.97+" ;;
esac
CACHE_DIR="$(realpath -m "$CACHE_DIR")"
BIN_DIR="$CACHE_DIR/bin"
REPO_DIR="$(cd "$SCRIPT_DIR/../.." && pwd -P)"
case "$CACHE_DIR/" in
    "$REPO_DIR"/*) die "the cache dir must be outside the repo ($REPO_DIR): $CACHE_DIR" ;;
esac
mkdir -p "$CACHE_DIR"

# True when DIR/bin/NAME exists and its --version reports the wanted version.
has_version() {
    local bin="$BIN_DIR/$1" out
    [[ -x "$bin" ]] || return 1
    out="$("$bin" --version 2>/dev/null)" || return 1
    [[ "$out" == "$1 ${AGAVE_VERSION} "* || "$out" == "$1 ${AGAVE_VERSION}" ]]
}

binaries_ok() { has_version agave-validator && has_version solana-genesis; }

build_shim() {
    local src="$SCRIPT_DIR/rlimit-shim.c" out="$CACHE_DIR/librlimit-shim.so"
    [[ -f "$src" ]] || die "missing $src"
    if [[ -f "$out" && "$out" -nt "$src" ]]; then
        return 0
    fi
    command -v gcc >/dev/null || die "gcc is needed to build the rlimit shim (apt-get install gcc)"
    log "building $out"
    gcc -shared -fPIC -O2 -Wall -o "$out.tmp" "$src" -ldl
    mv -f "$out.tmp" "$out"
}

install_from_tarball() {
    local dir
    for dir in "${PREBUILT_DIRS[@]}"; do
        [[ -f "$dir/$TARBALL_NAME" && -f "$dir/SHA256SUMS" ]] && unpack_tarball "$dir" && return 0
    done
    return 1
}

unpack_tarball() {
    local tarball="$1/$TARBALL_NAME" sums="$1/SHA256SUMS"
    [[ "$(uname -m)" == x86_64 ]] || { log "prebuilt tarball is x86_64 only; skipping it"; return 1; }
    log "checking $tarball against SHA256SUMS"
    local want got
    want="$(awk -v f="$TARBALL_NAME" '$2 == f || $2 == "*"f {print $1}' "$sums")"
    [[ -n "$want" ]] || { log "SHA256SUMS has no entry for $TARBALL_NAME; not using it"; return 1; }
    got="$(sha256sum "$tarball" | awk '{print $1}')"
    if [[ "$want" != "$got" ]]; then
        log "sha256 mismatch for $tarball (want $want, got $got); not using it"
        return 1
    fi
    local tmp
    tmp="$(mktemp -d "$CACHE_DIR/.unpack.XXXXXX")"
    tar -xJf "$tarball" -C "$tmp"
    [[ -x "$tmp/bin/agave-validator" && -x "$tmp/bin/solana-genesis" ]] \
        || { rm -rf "$tmp"; die "tarball does not hold bin/agave-validator and bin/solana-genesis"; }
    mkdir -p "$BIN_DIR"
    mv -f "$tmp/bin/agave-validator" "$BIN_DIR/agave-validator"
    mv -f "$tmp/bin/solana-genesis" "$BIN_DIR/solana-genesis"
    rm -rf "$tmp"
    log "unpacked prebuilt binaries into $BIN_DIR"
}

install_from_crates_io() {
    command -v cargo >/dev/null || die "cargo is needed to build Agave from crates.io (https://rustup.rs)"
    log "building agave-validator and solana-genesis ${AGAVE_VERSION} from crates.io with cargo install --locked"
    log "this takes about an hour on 2 cores (it also needs clang, libudev-dev, protobuf-compiler, pkg-config, libssl-dev)"
    local crate
    for crate in agave-validator solana-genesis; do
        if has_version "$crate"; then
            log "$crate ${AGAVE_VERSION} already present"
            continue
        fi
        log "cargo install --locked $crate --version ${AGAVE_VERSION} --root $CACHE_DIR"
        cargo install --locked "$crate" --version "$AGAVE_VERSION" --root "$CACHE_DIR" \
            || die "cargo install $crate ${AGAVE_VERSION} failed"
    done
}

if binaries_ok; then
    log "agave-validator and solana-genesis ${AGAVE_VERSION} already in $BIN_DIR"
else
    installed=0
    if [[ "$USE_PREBUILT" == 1 ]] && install_from_tarball; then
        installed=1
    fi
    if [[ "$installed" == 0 && "$BUILD" == 0 ]]; then
        log "no agave-validator ${AGAVE_VERSION} in $BIN_DIR and no prebuilt tarball in: ${PREBUILT_DIRS[*]}"
        exit 3
    fi
    if [[ "$installed" == 0 ]]; then
        install_from_crates_io
    fi
    binaries_ok || die "after installing, $BIN_DIR does not hold agave-validator and solana-genesis reporting ${AGAVE_VERSION}"
fi

build_shim
log "agave-validator: $("$BIN_DIR/agave-validator" --version)"
log "solana-genesis:  $("$BIN_DIR/solana-genesis" --version)"
log "rlimit shim:     $CACHE_DIR/librlimit-shim.so"
echo "$BIN_DIR"
