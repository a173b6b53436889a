#!/usr/bin/env bash
# Builds the Debian package into target/debian/ (or -o DIR).
#
#   packaging/build-deb.sh                        # release build, as shipped (about 12 min cold)
#   packaging/build-deb.sh --binary PATH [ARGS]   # package an already built keysafe binary
#
# Completions and man pages are generated from the binary itself (keysafe completions SHELL,
# keysafe man DIR), then cargo-deb packages what [package.metadata.deb] in
# crates/keysafe-cli/Cargo.toml lists. ARGS go to cargo-deb (for example -o DIR, --fast).
# Needs cargo-deb: cargo install cargo-deb --locked.
set -euo pipefail
cd "$(dirname "$0")/.."

binary=""
if [ "${1:-}" = "--binary" ]; then
    binary="${2:?--binary needs a path}"
    shift 2
fi
command -v cargo-deb >/dev/null 2>&1 || {
    echo "build-deb.sh: cargo-deb is missing: cargo install cargo-deb --locked" >&2
    exit 1
}

target="${CARGO_TARGET_DIR:-target}"
if [ -z "$binary" ]; then
    profile=release
    cargo build --release --locked -p keysafe-cli
else
    # cargo-deb packages target/<profile>/keysafe; a profile of our own keeps a debug binary
    # out of the release directory.
    profile=deb-check
    mkdir -p "$target/$profile"
    cp "$binary" "$target/$profile/keysafe"
fi
bin="$target/$profile/keysafe"
extra="$target/$profile/keysafe-extra"
rm -rf "$extra"
mkdir -p "$extra/man"
"$bin" completions bash > "$extra/keysafe.bash"
"$bin" completions zsh > "$extra/_keysafe"
"$bin" completions fish > "$extra/keysafe.fish"
"$bin" man "$extra/man"
gzip -9n "$extra/man/"*.1
cargo deb -p keysafe-cli --no-build --locked --profile "$profile" "$@"
