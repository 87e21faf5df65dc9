#!/usr/bin/env node
// The PouchDB side of scripts/bench-peer.sh. Loopback only: every URL it is given must be
// http://127.0.0.1:PORT/... (checked). Subcommands:
//
//   free-port                          print a free TCP port on 127.0.0.1 (bound to port 0, closed)
//   wait URL [SECONDS]                 poll GET URL until it answers 200 (default 30 s)
//   load DB_URL NDJSON EXPECT          create the database, _bulk_docs every line of NDJSON (one
//                                      document per line), check doc_count == EXPECT (not timed)
//   replicate DB_URL LOCAL_DIR BATCH EXPECT
//                                      fresh local PouchDB (leveldb adapter, LOCAL_DIR) and
//                                      PouchDB.replicate(remote, local, {batch_size: BATCH}) until
//                                      complete; checks doc_count == EXPECT; prints one JSON line
//   tidesync-objects SOURCE            read `tidesync sync --json` output on stdin, print the
//                                      object count of SOURCE (fails unless the sync was ok)
//   summary COUNT TIDESYNC_S POUCHDB_S print {"tidesync_objects_per_s":…,"pouchdb_docs_per_s":…,"ratio":…}
'use strict';

const fs = require('fs');
const net = require('net');
const readline = require('readline');

function die(msg) {
  process.stderr.write(`peer.js: ${msg}\n`);
  process.exit(1);
}

function loopbackUrl(u) {
  let parsed;
  try {
    parsed = new URL(u);
  } catch (e) {
    die(`not a URL: ${u}`);
  }
  if (parsed.protocol !== 'http:' || parsed.hostname !== '127.0.0.1') {
    die(`refusing a non-loopback URL: ${u}`);
  }
  return u.replace(/\/+$/, '');
}

function positiveInt(s, what) {
  const n = Number(s);
  if (!Number.isInteger(n) || n <= 0) die(`${what} must be a positive integer, not ${s}`);
  return n;
}

async function http(method, url, body) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = typeof body === 'string' ? body : JSON.stringify(body);
  }
  const res = await fetch(url, init);
  const text = await res.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch (e) {
    json = undefined;
  }
  return { status: res.status, json, text };
}

function freePort() {
  const srv = net.createServer();
  srv.listen(0, '127.0.0.1', () => {
    const { port } = srv.address();
    srv.close(() => console.log(port));
  });
}

async function wait(url, seconds) {
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    try {
      const r = await http('GET', url);
      if (r.status === 200) return;
    } catch (e) {
      // not listening yet
    }
    if (Date.now() > deadline) die(`${url} did not answer within ${seconds} s`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function load(dbUrl, ndjson, expect) {
  const created = await http('PUT', dbUrl);
  if (created.status !== 201) die(`PUT ${dbUrl}: ${created.status} ${created.text}`);
  const CHUNK = 2000;
  let batch = [];
  let sent = 0;
  const flush = async () => {
    // Documents are already JSON text: join them rather than re-serialising.
    const r = await http('POST', `${dbUrl}/_bulk_docs`, `{"docs":[${batch.join(',')}]}`);
    if (r.status !== 201 || !Array.isArray(r.json)) die(`_bulk_docs: ${r.status} ${r.text.slice(0, 300)}`);
    const failed = r.json.filter((x) => x.error);
    if (failed.length) die(`_bulk_docs: ${failed.length} documents refused, e.g. ${JSON.stringify(failed[0])}`);
    sent += batch.length;
    batch = [];
  };
  const lines = readline.createInterface({ input: fs.createReadStream(ndjson), crlfDelay: Infinity });
  for await (const line of lines) {
    if (!line) continue;
    batch.push(line);
    if (batch.length === CHUNK) await flush();
  }
  if (batch.length) await flush();
  const info = await http('GET', dbUrl);
  const count = info.json && info.json.doc_count;
  if (sent !== expect || count !== expect) die(`loaded ${sent} documents, server reports ${count}, expected ${expect}`);
  process.stderr.write(`peer.js: loaded ${count} documents into ${dbUrl}\n`);
}

async function replicate(dbUrl, localDir, batchSize, expect) {
  const PouchDB = require('pouchdb');
  const started = process.hrtime.bigint();
  const local = new PouchDB(localDir); // Node default: the leveldb adapter (leveldown), on disk
  const remote = new PouchDB(dbUrl, { skip_setup: true });
  const result = await PouchDB.replicate(remote, local, { batch_size: batchSize });
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const info = await local.info();
  await local.close();
  await remote.close();
  if (!result.ok || info.doc_count !== expect) {
    die(`replication ok=${result.ok}, local doc_count ${info.doc_count}, expected ${expect}`);
  }
  console.log(
    JSON.stringify({
      adapter: info.adapter,
      batch_size: batchSize,
      doc_count: info.doc_count,
      docs_written: result.docs_written,
      seconds,
    }),
  );
}

function tidesyncObjects(source) {
  const lines = fs.readFileSync(0, 'utf8').trim().split('\n');
  let j;
  try {
    j = JSON.parse(lines[lines.length - 1]);
  } catch (e) {
    die(`tidesync sync --json: last line is not JSON: ${lines[lines.length - 1]}`);
  }
  const src = j.sources && j.sources[source];
  if (!j.ok || !src || src.status !== 'ok') die(`tidesync sync failed: ${JSON.stringify(j)}`);
  console.log(src.objects);
}

function summary(count, tidesyncSeconds, pouchdbSeconds) {
  const t = count / tidesyncSeconds;
  const p = count / pouchdbSeconds;
  const round = (x, d) => Math.round(x * 10 ** d) / 10 ** d;
  console.log(
    JSON.stringify({ tidesync_objects_per_s: round(t, 0), pouchdb_docs_per_s: round(p, 0), ratio: round(t / p, 2) }),
  );
}

async function main() {
  const [cmd, ...a] = process.argv.slice(2);
  switch (cmd) {
    case 'free-port':
      return freePort();
    case 'wait':
      return wait(loopbackUrl(a[0]), a[1] ? positiveInt(a[1], 'SECONDS') : 30);
    case 'load':
      return load(loopbackUrl(a[0]), a[1], positiveInt(a[2], 'EXPECT'));
    case 'replicate':
      return replicate(loopbackUrl(a[0]), a[1], positiveInt(a[2], 'BATCH'), positiveInt(a[3], 'EXPECT'));
    case 'tidesync-objects':
      return tidesyncObjects(a[0]);
    case 'summary':
      return summary(positiveInt(a[0], 'COUNT'), Number(a[1]), Number(a[2]));
    default:
      die(`unknown subcommand ${cmd || '(none)'}; see the comment at the top of peer.js`);
  }
}

main().catch((e) => die(e && e.stack ? e.stack : String(e)));
