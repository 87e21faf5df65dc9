#!/usr/bin/env python3
"""Writes seed corpora for the cargo-fuzz targets from the recorded RhoConnect transcripts.

Usage: fuzz_seeds.py TRANSCRIPTS_DIR CORPUS_DIR

page_parser / search_answer: the recorded answer bodies (pages, search answers, errors).
server_request: each recorded request in the harness's text form (`METHOD TARGET`, header lines,
a blank line, the body), the session cookie replaced by @COOKIE@ and 32-hex client ids by
@CLIENT@; and each transcript file as one input of several requests separated by `~~~` lines.
push_body: the recorded push bodies, as JSON and as a `cud=` form.
Seeds are regenerated on every run and never committed (fuzz/corpus is git-ignored).
"""
import hashlib
import json
import pathlib
import re
import sys
import urllib.parse

HEX_ID = re.compile(r"\b[0-9a-f]{32}\b")
SKIP_HEADERS = {"content-length", "connection", "accept-encoding", "user-agent", "accept"}


def exchanges(path):
    data = json.loads(path.read_text())
    items = data if isinstance(data, list) else [data]
    return [x for x in items if isinstance(x, dict) and "request" in x]


def body_of(resp):
    if "body_json" in resp and resp.get("body_truncated"):
        return json.dumps(resp["body_json"], separators=(",", ":"))
    return resp.get("body") or ""


def request_text(req):
    target = req["path"] + ("?" + req["query"] if req.get("query") else "")
    lines = [f'{req["method"]} {target}']
    for name, value in (req.get("headers") or {}).items():
        if name.lower() in SKIP_HEADERS:
            continue
        if name.lower() == "cookie":
            value = "rhoconnect_session=@COOKIE@"
        lines.append(f"{name}: {value}")
    text = "\n".join(lines) + "\n\n" + (req.get("body") or "")
    return HEX_ID.sub("@CLIENT@", text)


def write(corpus, target, content):
    if isinstance(content, str):
        content = content.encode()
    d = corpus / target
    d.mkdir(parents=True, exist_ok=True)
    (d / ("seed-" + hashlib.sha1(content).hexdigest()[:16])).write_bytes(content)


def main():
    transcripts, corpus = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    counts = {}
    for path in sorted(transcripts.glob("*.json")):
        texts = []
        for x in exchanges(path):
            req, resp = x["request"], x["response"]
            body = body_of(resp)
            if body.lstrip().startswith("["):
                target = "search_answer" if "search" in req["path"] else "page_parser"
                write(corpus, target, body)
                counts[target] = counts.get(target, 0) + 1
            text = request_text(req)
            texts.append(text)
            write(corpus, "server_request", text)
            if req["method"] == "POST" and req["path"].rstrip("/").endswith("application") and req.get("body"):
                b = HEX_ID.sub("@CLIENT@", req["body"])
                write(corpus, "push_body", b)
                write(corpus, "push_body", "cud=" + urllib.parse.quote(b, safe=""))
                counts["push_body"] = counts.get("push_body", 0) + 2
        if texts:
            write(corpus, "server_request", "\n~~~\n".join(texts))
            counts["server_request"] = counts.get("server_request", 0) + len(texts) + 1
    # Minimal hand-written seeds, so every target has some even without transcripts.
    write(corpus, "page_parser", '[{"version":3},{"token":""},{"count":0},{"progress_count":0},{"total_count":0},{}]')
    write(corpus, "search_answer", '[[{"version":3},{"token":"1"},{"source":"Product"},{"count":1},{"insert":{"1":{"a":"b"}}}],[]]')
    write(corpus, "push_body", '{"create":{"t1":{"name":"x"}},"update":{"1":{"name":"y"}},"delete":{"2":{}}}')
    write(corpus, "server_request", "GET /application?client_id=@CLIENT@&source_name=Product&p_size=5\nCookie: rhoconnect_session=@COOKIE@\n\n")
    for target, n in sorted(counts.items()):
        print(f"seeds: {target}: {n} from transcripts")


if __name__ == "__main__":
    main()
