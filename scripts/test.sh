#!/usr/bin/env bash
# The project's test command (README): format check, clippy with warnings denied, every test.
# Later tiers (Kotlin, Android) are added here as they land; a tier whose toolchain is missing
# says so and is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

if ! command -v cargo >/dev/null; then
    echo "cargo not found: install Rust (rustup) first" >&2
    exit 1
fi
for component in rustfmt clippy; do
    if ! rustup component list --installed 2>/dev/null | grep -q "^${component}"; then
        step "installing rustup component ${component}"
        rustup component add "${component}"
    fi
done

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings denied)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo build (the tidesync binary the CLI tests run)"
cargo build --locked -p tidesync-cli

step "cargo test"
cargo test --workspace --locked

step "CLI smoke: tidesync serve answers on loopback"
scripts/smoke-serve.sh

step "CLI smoke: tidesync bench --quick (the whole bench path at small sizes; figures not checked)"
./target/debug/tidesync bench --quick --json | tail -1 | python3 -c 'import json,sys; f=json.load(sys.stdin); assert f["initial_sync_objects_per_s"] > 0 and f["ratio_to_raw"] > 0, f; print("bench smoke: 1 passed, 0 failed")'

step "Kotlin tier: UniFFI bindings + JUnit on the host JVM against the reference server"
scripts/test-kotlin.sh

step "CLI smoke: tidesync demo (the README's main command)"
./target/debug/tidesync demo | tail -8

step "Android tier: WorkManager worker and scheduler with Robolectric, and the real engine"
scripts/test-android.sh
