#!/usr/bin/env bash
# Builds the tidesync-ffi cdylib (debug) and generates the Kotlin and Swift bindings from it in
# library mode into bindings/ (git-ignored). Usage: scripts/generate-bindings.sh [--release]
set -euo pipefail
cd "$(dirname "$0")/.."

profile=debug
cargo_flags=()
if [ "${1:-}" = "--release" ]; then
    profile=release
    cargo_flags=(--release)
fi
cargo build --locked "${cargo_flags[@]}" -p tidesync-ffi
case "$(uname -s)" in
    Darwin) lib="target/${profile}/libtidesync_ffi.dylib" ;;
    *) lib="target/${profile}/libtidesync_ffi.so" ;;
esac
rm -rf bindings/kotlin bindings/swift
cargo run --locked --quiet -p uniffi-bindgen -- generate "$lib" --language kotlin --out-dir bindings/kotlin --no-format
cargo run --locked --quiet -p uniffi-bindgen -- generate "$lib" --language swift --out-dir bindings/swift --no-format
echo "bindings generated from ${lib}: bindings/kotlin, bindings/swift"
