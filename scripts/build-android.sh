#!/usr/bin/env bash
# Builds the native engine for Android and the Kotlin bindings, ready for the Gradle build of
# android/tidesync-android (then: gradle -p android/tidesync-android assembleRelease).
#
#  - libtidesync_ffi.so per ABI with cargo-ndk, profile release-mobile (size-optimised, LTO,
#    unwinding), into android/tidesync-android/src/main/jniLibs/<abi>/ (git-ignored);
#  - 16 KB page alignment of the LOAD segments (Android 15+ devices with 16 KB pages), checked
#    afterwards with llvm-readelf;
#  - the Kotlin bindings generated from the host build (scripts/generate-bindings.sh): the same
#    crate and uniffi version, so the same Kotlin for every ABI.
#
# Usage: scripts/build-android.sh [--dry-run] [--abi ABI]... [--api LEVEL] [--profile NAME]
#   --dry-run   print the commands instead of running them (needs no NDK)
#   --abi       arm64-v8a, armeabi-v7a, x86_64 or x86 (repeatable; default: the first three)
#   --api       minimum Android API level (default 24, as minSdk in build.gradle.kts)
#   --profile   cargo profile (default release-mobile)
# Needs: the Android NDK (ANDROID_NDK_HOME), cargo-ndk (cargo install cargo-ndk --locked) and
# the rustup targets (added here). Not runnable on the development machine (no NDK): CI runs it.
set -euo pipefail
cd "$(dirname "$0")/.."

dry_run=false
abis=()
api=24
profile=release-mobile
jni_dir=android/tidesync-android/src/main/jniLibs
page_size=16384

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) dry_run=true ;;
        --abi) abis+=("${2:?--abi needs a value}"); shift ;;
        --api) api="${2:?--api needs a value}"; shift ;;
        --profile) profile="${2:?--profile needs a value}"; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if [ ${#abis[@]} -eq 0 ]; then
    abis=(arm64-v8a armeabi-v7a x86_64)
fi

# Prints a command (shell-quoted), then runs it unless --dry-run.
run() {
    printf '+'
    printf ' %q' "$@"
    printf '\n'
    if ! "$dry_run"; then
        "$@"
    fi
}

rust_target() {
    case "$1" in
        arm64-v8a) echo aarch64-linux-android ;;
        armeabi-v7a) echo armv7-linux-androideabi ;;
        x86_64) echo x86_64-linux-android ;;
        x86) echo i686-linux-android ;;
        *) echo "unknown ABI: $1 (arm64-v8a, armeabi-v7a, x86_64, x86)" >&2; return 1 ;;
    esac
}

targets=()
ndk_args=()
rustflags_env=()
for abi in "${abis[@]}"; do
    target=$(rust_target "$abi")
    targets+=("$target")
    ndk_args+=(-t "$abi")
    # Per target, so that build scripts and proc-macros (host code) are not linked with it.
    var="CARGO_TARGET_$(echo "$target" | tr 'a-z-' 'A-Z_')_RUSTFLAGS"
    rustflags_env+=("${var}=-C link-arg=-Wl,-z,max-page-size=${page_size}")
done

if ! "$dry_run"; then
    if ! command -v cargo-ndk >/dev/null; then
        echo "cargo-ndk is missing: cargo install cargo-ndk --locked" >&2
        exit 1
    fi
    if [ -z "${ANDROID_NDK_HOME:-}" ] || [ ! -d "${ANDROID_NDK_HOME}" ]; then
        echo "ANDROID_NDK_HOME must point at an Android NDK (r27 or later)" >&2
        exit 1
    fi
fi

run rustup target add "${targets[@]}"
run env "${rustflags_env[@]}" cargo ndk "${ndk_args[@]}" --platform "$api" -o "$jni_dir" \
    build --locked -p tidesync-ffi --profile "$profile"

# Every LOAD segment must be aligned to 16 KB (p_align 0x4000 or more).
check_alignment() {
    local lib=$1 readelf align n=0 bad=0
    readelf=$(find "${ANDROID_NDK_HOME}/toolchains/llvm/prebuilt" -name llvm-readelf \( -type f -o -type l \) | head -n 1)
    if [ -z "$readelf" ]; then
        echo "llvm-readelf not found in the NDK: alignment of $lib not checked" >&2
        return 0
    fi
    for align in $("$readelf" --program-headers --wide "$lib" | awk '$1 == "LOAD" { print $NF }'); do
        n=$((n + 1))
        if ((align < page_size)); then
            echo "$lib: a LOAD segment is aligned to $align, not $page_size" >&2
            bad=1
        fi
    done
    if ((n == 0)); then
        echo "$lib: no LOAD segment found" >&2
        bad=1
    fi
    return "$bad"
}
for abi in "${abis[@]}"; do
    lib="$jni_dir/$abi/libtidesync_ffi.so"
    if "$dry_run"; then
        echo "+ check 16 KB alignment of $lib (llvm-readelf --program-headers)"
    else
        check_alignment "$lib"
        echo "$lib: $(du -h "$lib" | cut -f1), LOAD segments aligned to ${page_size}"
    fi
done

# The bindings come from the host build of the same crate (library mode reads its metadata).
run scripts/generate-bindings.sh
echo "next: gradle -p android/tidesync-android assembleRelease (AAR in build/outputs/aar/)"
