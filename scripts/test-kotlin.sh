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

# shellcheck source=scripts/lib/reference-server.sh
source scripts/lib/reference-server.sh
start_reference_server "kotlin tier"

# Compiled classes of deleted sources must not survive (the bindings change with the Rust API).
rm -rf android/tidesync-kotlin/target/classes android/tidesync-kotlin/target/test-classes
mvn -B --no-transfer-progress -f android/tidesync-kotlin/pom.xml test -Dtidesync.syncUrl="${base}/application/" \
    "${mvn_args[@]}" "$@"
echo "kotlin tier: passed"
