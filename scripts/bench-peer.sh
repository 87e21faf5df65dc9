#!/usr/bin/env bash
# TideSync vs PouchDB: initial sync of the same N objects × 10 attributes, both over loopback,
# in the same run. Prints the two rates and the ratio TideSync / PouchDB.
#
#   scripts/bench-peer.sh [--count N] [--batch-size B] [--json]
#
#   --count N        objects (default 100000)
#   --batch-size B   PouchDB replication batch_size (default 1000)
#   --json           stdout is only one line: {"tidesync_objects_per_s":…,"pouchdb_docs_per_s":…,"ratio":…}
#
# What it does (progress goes to stderr):
#   1. builds the release CLI (nice -n 10) and installs scripts/peer with `npm ci` (pinned pouchdb
#      9.0.0, pouchdb-server 4.2.0; optional dependencies omitted, i.e. no sqlite3 build);
#   2. starts `tidesync serve --dataset Item=Nx10 --seed 7` on 127.0.0.1:0, syncs it once into a
#      temporary SQLite file (user `export`, this also warms the server) and exports the rows as
#      PouchDB documents (`_id` = object id, attr0..attr9 as fields);
#   3. starts `pouchdb-server --in-memory` on a free 127.0.0.1 port and loads them with _bulk_docs
#      (not timed);
#   4. times (a) a fresh PouchDB (Node, leveldb adapter, on disk) PouchDB.replicate(remote, local,
#      {batch_size}) until complete, local doc count checked; (b) the whole
#      `tidesync sync --source Item --json` command for a fresh user and a fresh database, object
#      count checked.
# Needs node + npm, sqlite3 (the CLI) and cargo. Both servers are stopped on exit.
set -euo pipefail

count=100000
batch=1000
json=0
usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --count) count=${2:?--count needs a number}; shift 2 ;;
        --batch-size) batch=${2:?--batch-size needs a number}; shift 2 ;;
        --json) json=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "bench-peer: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done
case "$count$batch" in
    *[!0-9]*) echo "bench-peer: --count and --batch-size take positive integers" >&2; exit 2 ;;
esac
if [ "$count" -le 0 ] || [ "$batch" -le 0 ]; then
    echo "bench-peer: --count and --batch-size take positive integers" >&2
    exit 2
fi

log() { echo "bench-peer: $*" >&2; }
fail() { log "$*"; exit 1; }
for tool in node npm; do
    command -v "$tool" >/dev/null 2>&1 ||
        fail "$tool is missing: install Node.js (20 or later) with npm to run the PouchDB side"
done
command -v sqlite3 >/dev/null 2>&1 || fail "sqlite3 (the command-line shell) is missing: apt-get install sqlite3"
command -v cargo >/dev/null 2>&1 || fail "cargo is missing"

root=$(cd "$(dirname "$0")/.." && pwd)
peer="$root/scripts/peer"
cd "$root"

log "building the release CLI (nice -n 10)"
nice -n 10 cargo build --quiet --release --locked -p tidesync-cli || fail "cargo build --release -p tidesync-cli failed"
tidesync="$root/target/release/tidesync"

log "installing pouchdb + pouchdb-server (npm ci in scripts/peer)"
(cd "$peer" && nice -n 10 npm ci --omit=optional --no-audit --no-fund --loglevel=error >&2) ||
    fail "npm ci in scripts/peer failed"

tmp=$(mktemp -d)
ts_pid=""
pouch_pid=""
cleanup() {
    for p in "$ts_pid" "$pouch_pid"; do
        if [ -n "$p" ]; then
            kill "$p" 2>/dev/null || true
            wait "$p" 2>/dev/null || true
        fi
    done
    rm -rf "$tmp"
}
trap cleanup EXIT

# --- TideSync server -----------------------------------------------------------------------
"$tidesync" serve --addr 127.0.0.1:0 --dataset "Item=${count}x10" --seed 7 >"$tmp/serve.out" 2>"$tmp/serve.err" &
ts_pid=$!
addr=""
for _ in $(seq 1 200); do
    addr=$(sed -n 's#^listening on http://\(127\.0\.0\.1:[0-9]*\)/$#\1#p' "$tmp/serve.out")
    [ -n "$addr" ] && break
    kill -0 "$ts_pid" 2>/dev/null || break
    sleep 0.05
done
[ -n "$addr" ] || fail "tidesync serve did not print its address: $(cat "$tmp/serve.out" "$tmp/serve.err")"
ts_url="http://$addr/application"
log "tidesync serve on $addr (Item=${count}x10, seed 7)"

# --- export the same objects as PouchDB documents -----------------------------------------
"$tidesync" sync --url "$ts_url" --user export --password password --db "$tmp/export.db" \
    --source Item --json >"$tmp/export.json" || fail "export sync failed: $(cat "$tmp/export.json")"
exported=$(node "$peer/peer.js" tidesync-objects Item <"$tmp/export.json")
[ "$exported" = "$count" ] || fail "export sync holds $exported objects, expected $count"
sqlite3 "$tmp/export.db" >"$tmp/docs.ndjson" <<'SQL'
SELECT json_patch(json_object('_id', o.id), o.attrs)
FROM objects o JOIN sources s ON s.id = o.source_id
WHERE s.name = 'Item'
ORDER BY CAST(o.id AS INTEGER);
SQL
lines=$(wc -l <"$tmp/docs.ndjson")
[ "$lines" -eq "$count" ] || fail "exported $lines documents, expected $count"
log "exported $lines documents, e.g. $(head -c 200 "$tmp/docs.ndjson")"

# --- pouchdb-server, in memory --------------------------------------------------------------
port=$(node "$peer/peer.js" free-port)
mkdir -p "$tmp/pouchdb-server"
(cd "$tmp/pouchdb-server" && exec node "$peer/node_modules/pouchdb-server/bin/pouchdb-server" \
    --in-memory --host 127.0.0.1 --port "$port" --no-stdout-logs \
    --config "$tmp/pouchdb-server/config.json" --dir "$tmp/pouchdb-server" \
    >"$tmp/pouchdb-server.out" 2>&1) &
pouch_pid=$!
pouch_url="http://127.0.0.1:$port"
node "$peer/peer.js" wait "$pouch_url/" 60 || fail "pouchdb-server did not start: $(cat "$tmp/pouchdb-server.out")"
log "pouchdb-server --in-memory on 127.0.0.1:$port; loading (not timed)"
node "$peer/peer.js" load "$pouch_url/bench" "$tmp/docs.ndjson" "$count"

now_ns() { date +%s%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b - a) / 1e9 }'; }
load_before=$(uptime)

# --- (a) PouchDB replication ----------------------------------------------------------------
log "timing PouchDB.replicate(remote, local leveldb, {batch_size: $batch})"
node "$peer/peer.js" replicate "$pouch_url/bench" "$tmp/pouch-local" "$batch" "$count" >"$tmp/pouch.json" ||
    fail "PouchDB replication failed"
pouch_s=$(node -e 'process.stdout.write(String(JSON.parse(require("fs").readFileSync(0, "utf8")).seconds))' <"$tmp/pouch.json")
log "PouchDB: $(cat "$tmp/pouch.json")"

# --- (b) TideSync initial sync --------------------------------------------------------------
log "timing tidesync sync (fresh user, fresh database)"
t0=$(now_ns)
"$tidesync" sync --url "$ts_url" --user bench --password password --db "$tmp/bench.db" \
    --source Item --json >"$tmp/tidesync.json" || fail "tidesync sync failed: $(cat "$tmp/tidesync.json")"
t1=$(now_ns)
synced=$(node "$peer/peer.js" tidesync-objects Item <"$tmp/tidesync.json")
[ "$synced" = "$count" ] || fail "tidesync sync reports $synced objects, expected $count"
ts_s=$(secs "$t0" "$t1")
log "TideSync: $synced objects in $ts_s s"
load_after=$(uptime)

result=$(node "$peer/peer.js" summary "$count" "$ts_s" "$pouch_s")
log "load average before the timed part: ${load_before#*load average: }; after: ${load_after#*load average: }"
if [ "$json" = 1 ]; then
    echo "$result"
else
    printf '%-44s %10s s\n' "PouchDB 9 replicate (leveldb, batch $batch)" "$(printf '%.3f' "$pouch_s")"
    printf '%-44s %10s s\n' "TideSync initial sync (whole command)" "$ts_s"
    echo "objects: $count; load average before: ${load_before#*load average: }; after: ${load_after#*load average: }"
    echo "$result"
fi
