#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ for a bounded time each (not part of scripts/test.sh).
#
#   scripts/fuzz.sh                          # every target, 60 s each
#   scripts/fuzz.sh --seconds 600 page_parser server_request
#
# Targets: page_parser, search_answer (the client's parsers on arbitrary bytes), server_request
# (the reference server's router on arbitrary requests), push_body (arbitrary pushes, then the
# server's next page must parse). Needs the nightly toolchain; installs cargo-fuzz (pinned) if
# missing. Seeds come from the recorded transcripts (regenerated each run, git-ignored). One
# fuzzing process per target (the machine is shared): no -jobs/-workers. Prints libFuzzer's
# executions per target and any crash (the input lands in fuzz/artifacts/TARGET/); exits 1 if a
# target crashed. A crash becomes a regression test in the normal suite (RELIABILITY.md).
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.1
ALL_TARGETS=(page_parser search_answer server_request push_body)
TRANSCRIPTS="${TIDESYNC_TRANSCRIPTS:-../shared/spec/transcripts}"
seconds=60
targets=()
while (($#)); do
    case "$1" in
        --seconds) seconds="$2"; shift 2 ;;
        --seconds=*) seconds="${1#*=}"; shift ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        -*) echo "unknown option $1" >&2; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done
((${#targets[@]})) || targets=("${ALL_TARGETS[@]}")

if ! rustup toolchain list | grep -q '^nightly'; then
    echo "==> installing the nightly toolchain (cargo-fuzz needs it)"
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
    echo "==> installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

if [[ -d "$TRANSCRIPTS" ]]; then
    python3 scripts/lib/fuzz_seeds.py "$TRANSCRIPTS" fuzz/corpus
else
    echo "no transcripts at $TRANSCRIPTS: built-in seeds only"
    python3 scripts/lib/fuzz_seeds.py /nonexistent fuzz/corpus
fi

cd fuzz
echo "==> cargo +nightly fuzz build -O ${targets[*]}"
for t in "${targets[@]}"; do
    cargo +nightly fuzz build -O "$t"
done

failed=()
summary=()
for t in "${targets[@]}"; do
    echo "==> fuzzing $t for ${seconds}s"
    log="$(mktemp)"
    start=$(date +%s)
    set +e
    cargo +nightly fuzz run -O "$t" -- \
        -max_total_time="$seconds" -print_final_stats=1 -timeout=30 -rss_limit_mb=4096 \
        -max_len=65536 2>&1 | tee "$log" | grep -E '^(#[0-9]+[[:space:]]+(INITED|DONE)|==[0-9]+==|stat::|SUMMARY|Failing input|thread .* panicked|artifact_prefix|Test unit written)' 
    rc=${PIPESTATUS[0]}
    set -e
    elapsed=$(( $(date +%s) - start ))
    execs=$(grep -oE 'stat::number_of_executed_units: [0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1)
    if ((rc != 0)); then
        failed+=("$t")
        summary+=("$t: CRASH after ${elapsed}s (exit $rc) — see fuzz/artifacts/$t/ and the log above")
        grep -E 'panicked at|Test unit written' "$log" | head -5 || true
    else
        summary+=("$t: ${execs:-?} executions in ${elapsed}s, no crash")
    fi
    rm -f "$log"
done

echo
echo "==> fuzzing summary"
printf '%s\n' "${summary[@]}"
if ((${#failed[@]})); then
    echo "crashed: ${failed[*]}" >&2
    exit 1
fi
