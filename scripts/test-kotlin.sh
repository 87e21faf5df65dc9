#!/usr/bin/env bash
# The Kotlin tier: builds the cdylib, generates the bindings, starts the reference server on
# loopback (port 0), runs the JUnit tests of android/tidesync-kotlin with Maven, stops the server.
# Skipped (with a message) when java or mvn is missing.
#
# Usage: scripts/test-kotlin.sh [--bench] [maven args…]
#   --bench   run only the benchmarks (JUnit @Tag("bench"), excluded by default) against the
#             release build of the cdylib; they print lines starting with "BENCH".
# On a shared machine: CARGO_BUILD_JOBS=1 nice -n 10 scripts/test-kotlin.sh
set -euo pipefail
cd "$(dirname "$0")/.."

mvn_args=()
bindings_args=()
if [ "${1:-}" = "--bench" ]; then
    shift
    bindings_args=(--release)
    mvn_args=(-Dgroups=bench -Dbench.excluded=none -Dnative.dir="$PWD/target/release")
fi

if ! command -v java >/dev/null || ! command -v mvn >/dev/null; then
    echo "kotlin tier SKIPPED: java and mvn are needed (JDK 17 + Maven)"
    exit 0
fi

scripts/generate-bindings.sh "${bindings_args[@]}"
cargo build --locked --quiet -p tidesync-cli

out=$(mktemp)
./target/debug/tidesync serve --addr 127.0.0.1:0 --app transcripts >"$out" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; rm -f "$out"' EXIT
for _ in $(seq 1 100); do
    grep -q '^listening on ' "$out" && break
    sleep 0.1
done
base=$(sed -n 's#^listening on \(http://[^/]*\)/$#\1#p' "$out")
if [ -z "$base" ]; then
    echo "kotlin tier: the reference server did not start" >&2
    cat "$out" >&2
    exit 1
fi

# Compiled classes of deleted sources must not survive (the bindings change with the Rust API).
rm -rf android/tidesync-kotlin/target/classes android/tidesync-kotlin/target/test-classes
mvn -B --no-transfer-progress -f android/tidesync-kotlin/pom.xml test -Dtidesync.syncUrl="${base}/application/" \
    "${mvn_args[@]}" "$@"
echo "kotlin tier: passed"
