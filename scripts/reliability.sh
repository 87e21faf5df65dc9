#!/usr/bin/env bash
# The reliability suite (RELIABILITY.md). The default tiers also run in scripts/test.sh; this
# script runs them on their own and, with flags, at soak size.
#
#   scripts/reliability.sh            crash test (50 kills), fault matrix, TLS, secrets, load
#   scripts/reliability.sh --soak     the same with 1,000 kills (TIDESYNC_CRASH_KILLS to change)
#   scripts/reliability.sh --update   also rewrites the fault matrix table in RELIABILITY.md
#   scripts/reliability.sh --fuzz N   also runs every cargo-fuzz target for N seconds (scripts/fuzz.sh)
#
# Summaries are written to target/tmp/reliability/ (crash.md, fault-matrix.md).
set -euo pipefail
cd "$(dirname "$0")/.."

kills="${TIDESYNC_CRASH_KILLS:-50}"
update=0
fuzz_seconds=""
while [ $# -gt 0 ]; do
    case "$1" in
        --soak) kills="${TIDESYNC_CRASH_KILLS:-1000}" ;;
        --update) update=1 ;;
        --fuzz) fuzz_seconds="${2:?--fuzz needs a number of seconds}"; shift ;;
        *) echo "unknown option $1 (--soak, --update, --fuzz SECONDS)" >&2; exit 2 ;;
    esac
    shift
done

step() { printf '\n==> %s\n' "$*"; }

step "crash test: ${kills} SIGKILLs"
TIDESYNC_CRASH_KILLS="$kills" cargo test --locked -p tidesync-tests --test it crash:: -- --nocapture 2>&1 \
    | grep -E '^(crash test|seed|kills by step|- |test result)'
test -s target/tmp/reliability/crash.md

step "fault matrix: every requested route x every fault"
TIDESYNC_UPDATE_RELIABILITY="$update" cargo test --locked -p tidesync-tests --test it fault_matrix:: 2>&1 | grep -E '^test result'
cat target/tmp/reliability/fault-matrix.md

step "TLS, secrets in logs, wipe"
cargo test --locked -p tidesync-tests --test it tls:: 2>&1 | grep -E '^test result'
cargo test --locked -p tidesync-tests --test logs 2>&1 | grep -E '^test result'

step "load: 200 concurrent clients"
cargo test --locked -p tidesync-tests --test it load:: -- --nocapture 2>&1 | grep -E '^(load:|test result)'

if [ -n "$fuzz_seconds" ]; then
    step "fuzzing: every target for ${fuzz_seconds} s"
    scripts/fuzz.sh --seconds "$fuzz_seconds"
fi
