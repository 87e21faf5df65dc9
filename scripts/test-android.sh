#!/usr/bin/env bash
# The Android tier on the host JVM: builds the cdylib, generates the bindings, builds the CLI,
# starts the reference server on loopback (port 0), runs the Robolectric tests of
# android/tidesync-android with Maven (the real androidx WorkManager, the real engine through JNA),
# stops the server. No Android SDK, NDK or Gradle is needed (the Gradle build and the emulator
# tests run in .github/workflows/android.yml). Skipped (with a message) when java or mvn is missing.
#
# Usage: scripts/test-android.sh [maven args…]   e.g. -Dtest=SyncSchedulerTest
# On a shared machine: CARGO_BUILD_JOBS=1 nice -n 10 scripts/test-android.sh
# First run downloads ~450 MB into ~/.m2 (androidx, Robolectric and its Android 14 jar).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v java >/dev/null || ! command -v mvn >/dev/null; then
    echo "android tier SKIPPED: java and mvn are needed (JDK 17 + Maven)"
    exit 0
fi

scripts/generate-bindings.sh # builds tidesync-ffi (target/debug/libtidesync_ffi.so) first
cargo build --locked --quiet -p tidesync-cli

# shellcheck source=scripts/lib/reference-server.sh
source scripts/lib/reference-server.sh
start_reference_server "android tier"

reports=android/tidesync-android/maven/tidesync-android/target/surefire-reports
rm -rf "$reports"
mvn -B --no-transfer-progress -f android/tidesync-android/pom.xml test \
    -Dtidesync.syncUrl="${base}/application/" -Dsurefire.failIfNoSpecifiedTests=false "$@"

# Every test class must have run: Kotlin's incremental compiler has been seen to leave a class out
# after a failed compile (a green run with fewer tests). Only for a full run (no -Dtest=…).
if [ $# -eq 0 ]; then
    for src in android/tidesync-android/src/test/kotlin/dev/tidesync/android/*Test.kt; do
        name=$(basename "$src" .kt)
        if [ ! -f "$reports/TEST-dev.tidesync.android.${name}.xml" ]; then
            echo "android tier FAILED: ${name} did not run (stale incremental state? rm -rf android/tidesync-android/maven/tidesync-android/target)" >&2
            exit 1
        fi
    done
fi
echo "android tier: passed"
