#!/usr/bin/env bash
# Starts `tidesync serve --addr 127.0.0.1:0`, logs in and pulls one page with curl-free bash
# (python3 is used as the HTTP client), then stops the server. Fails loudly on any mismatch.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --quiet --locked -p tidesync-cli
out=$(mktemp)
./target/debug/tidesync serve --addr 127.0.0.1:0 --app transcripts >"$out" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; rm -f "$out"' EXIT
for _ in $(seq 1 100); do
    grep -q '^listening on ' "$out" && break
    sleep 0.1
done
url=$(sed -n 's#^listening on \(http://[^/]*\)/$#\1#p' "$out")
if [ -z "$url" ]; then
    echo "smoke: server did not print its address" >&2
    cat "$out" >&2
    exit 1
fi
python3 - "$url" <<'PY'
import json, sys, urllib.request
base = sys.argv[1]
def req(method, path, body=None, cookie=None):
    r = urllib.request.Request(base + path, method=method, data=body)
    if body is not None:
        r.add_header("Content-Type", "application/json")
    if cookie:
        r.add_header("Cookie", cookie)
    try:
        resp = urllib.request.urlopen(r, timeout=10)
    except urllib.error.HTTPError as e:
        resp = e
    return resp.status, dict(resp.headers), resp.read().decode()
st, h, _ = req("POST", "/application/clientlogin", b'{"login":"alice","password":"password","remember_me":1}')
assert st == 200, st
cookie = h["set-cookie"].split(";")[0]
st, _, body = req("GET", "/application/clientcreate", cookie=cookie)
cid = json.loads(body)["client"]["client_id"]
st, h, body = req("GET", f"/application?client_id={cid}&p_size=2000&version=3&source_name=Product", cookie=cookie)
page = json.loads(body)
assert st == 200 and page[0] == {"version": 3} and page[2] == {"count": 300} and page[4] == {"total_count": 300}, body[:200]
st, _, body = req("GET", f"/application?client_id={cid}&p_size=50&version=3&source_name=Product")
assert st == 401 and body == "Not authenticated", (st, body)
print("smoke: 1 passed, 0 failed")
PY
