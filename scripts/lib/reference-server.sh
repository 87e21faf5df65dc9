# shellcheck shell=bash
# Sourced by the test scripts: starts `tidesync serve --app transcripts` on 127.0.0.1 port 0,
# sets `base` (http://ADDR) and stops the server on exit. Usage: start_reference_server LABEL
start_reference_server() {
    local label=$1
    server_out=$(mktemp)
    ./target/debug/tidesync serve --addr 127.0.0.1:0 --app transcripts >"$server_out" 2>&1 &
    server_pid=$!
    trap 'kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; rm -f "$server_out"' EXIT
    for _ in $(seq 1 100); do
        grep -q '^listening on ' "$server_out" && break
        sleep 0.1
    done
    base=$(sed -n 's#^listening on \(http://[^/]*\)/$#\1#p' "$server_out")
    if [ -z "$base" ]; then
        echo "${label}: the reference server did not start" >&2
        cat "$server_out" >&2
        exit 1
    fi
}
