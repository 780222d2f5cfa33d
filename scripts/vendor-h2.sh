#!/usr/bin/env bash
# Re-vendors h2 at VERSION into vendor/h2 with pushgate's
# patch (vendor/h2.patch; why: vendor/h2/PATCHES.md). Run it for
# every h2 release pushgate takes (security fixes included), then
# `cargo build` and `bash .ci/run`:
#
#   bash scripts/vendor-h2.sh 0.4.22
set -euo pipefail
cd "$(dirname "$0")/.."
version=${1:?usage: scripts/vendor-h2.sh VERSION}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp" vendor/h2.new' EXIT
# A throwaway crate that depends on the release, to get its source.
mkdir -p "$tmp/fetch/src"
touch "$tmp/fetch/src/lib.rs"
cat > "$tmp/fetch/Cargo.toml" <<TOML
[package]
name = "fetch-h2"
version = "0.0.0"
edition = "2021"
[dependencies]
h2 = "=$version"
TOML
(cd "$tmp/fetch" && cargo fetch -q)
src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/h2-"$version" | head -1)
rm -rf vendor/h2.new
cp -r "$src" vendor/h2.new
rm -rf vendor/h2.new/{benches,examples,.github,.cargo-ok,Cargo.lock,Cargo.toml.orig,CONTRIBUTING.md}
sed "s/^This is h2 [0-9.]* from crates.io/This is h2 $version from crates.io/" \
  vendor/h2/PATCHES.md > vendor/h2.new/PATCHES.md
(cd vendor/h2.new && patch -p1 --no-backup-if-mismatch < ../h2.patch)
rm -rf vendor/h2
mv vendor/h2.new vendor/h2
echo "vendor/h2 is h2 $version with vendor/h2.patch"
