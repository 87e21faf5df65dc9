//! `tidesync bench`: the end-to-end figures, each measured in the same run as its baseline.
//!
//! Every sync here goes through the real path: the reference server on loopback (its own
//! threads), HTTP, the page parser, the store. The raw-SQLite ceiling inserts the same objects
//! with one cached statement in one transaction into a one-row-per-object table of 10 text
//! columns, with the store's pragmas, on the same machine in the same run.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, Result};
use tidesync_core::{Attrs, PageEvent, SourceDef, SyncClient, SyncConfig, SyncObserver, SyncOptions};
use tidesync_server::dataset::{Shape, generate};
use tidesync_server::{App, DatasetSpec, Obj, Server, ServerConfig};

/// Sizes of one bench run.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    pub initial: u64,
    pub rss: u64,
    pub incremental_store: u64,
    pub stop_store: u64,
    pub blob_files: u64,
}

impl Sizes {
    pub fn full() -> Self {
        Self {
            initial: 100_000,
            rss: 1_000_000,
            incremental_store: 500_000,
            stop_store: 500_000,
            blob_files: 1_000,
        }
    }
    pub fn quick() -> Self {
        Self {
            initial: 20_000,
            rss: 50_000,
            incremental_store: 20_000,
            stop_store: 50_000,
            blob_files: 20,
        }
    }
}

/// The figures.
#[derive(Debug, Default, serde::Serialize)]
pub struct Figures {
    pub objects: u64,
    pub initial_sync_objects_per_s: f64,
    pub raw_sqlite_objects_per_s: f64,
    pub ratio_to_raw: f64,
    pub peak_rss_mb_1m: f64,
    pub rss_objects: u64,
    pub incremental_update_ms_500k: f64,
    pub local_update_ms_500k: f64,
    pub incremental_store_objects: u64,
    pub stop_sync_ms: f64,
    pub local_batch_1k_ms: f64,
    pub blobs: crate::bench_blobs::BlobFigures,
}

fn server(count: u64) -> Result<Server> {
    let specs = DatasetSpec::parse_list(&format!("Item={count}x10")).map_err(anyhow::Error::msg)?;
    Ok(Server::start(ServerConfig::new(App::generated(&specs, 7)))?)
}

fn client(dir: &Path, name: &str, server: &Server) -> Result<SyncClient> {
    let c = SyncClient::open(&dir.join(name), SyncConfig::new(&server.sync_url()))?;
    c.define_source(&SourceDef::new("Item"))?;
    Ok(c)
}

/// Logs `user` in and syncs Item fully; returns the seconds taken by the sync.
fn full_sync(c: &SyncClient, user: &str, observer: Option<Arc<dyn SyncObserver>>) -> Result<f64> {
    c.login(user, "password")?;
    let t = Instant::now();
    c.sync_source("Item", &SyncOptions::default(), observer)?;
    Ok(t.elapsed().as_secs_f64())
}

/// The raw ceiling: `n` objects of 10 attributes into a plain table, one transaction.
fn raw_sqlite(dir: &Path, n: u64) -> Result<f64> {
    let conn = rusqlite::Connection::open(dir.join("raw.db"))?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA temp_store = MEMORY; PRAGMA cache_size = -16384;
         CREATE TABLE raw (id TEXT PRIMARY KEY, c0 TEXT, c1 TEXT, c2 TEXT, c3 TEXT, c4 TEXT, c5 TEXT, c6 TEXT, c7 TEXT, c8 TEXT, c9 TEXT);",
    )?;
    let shape = Shape::Generic { attrs: 10 };
    let objects: Vec<(String, Obj)> = (1..=n).map(|i| (i.to_string(), generate(&shape, i, 7))).collect();
    let t = Instant::now();
    let tx = conn.unchecked_transaction()?;
    {
        let mut stmt = tx.prepare_cached("INSERT INTO raw VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)")?;
        for (id, o) in &objects {
            let v: Vec<&str> = o.iter().map(|(_, v)| v).collect();
            stmt.execute(rusqlite::params![
                id, v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9]
            ])?;
        }
    }
    tx.commit()?;
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

/// Peak RSS of a child `tidesync sync` of `n` objects, in MB.
fn child_rss(dir: &Path, server: &Server) -> Result<f64> {
    let exe = std::env::current_exe()?;
    let out = std::process::Command::new(exe)
        .args([
            "sync",
            "--url",
            &server.sync_url(),
            "--user",
            "rss",
            "--password",
            "password",
            "--source",
            "Item",
        ])
        .arg("--db")
        .arg(dir.join("rss.db"))
        .args(["--json", "--report-rss"])
        .output()
        .context("running the child sync")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(last).with_context(|| format!("child output: {stdout}"))?;
    anyhow::ensure!(v["ok"] == true, "child sync failed: {last}");
    v["peak_rss_kb"]
        .as_f64()
        .map(|kb| kb / 1024.0)
        .context("child did not report its RSS")
}

/// One changed object on a large store: the whole incremental sync (push check, two requests,
/// apply, commit), median of 21; and one local update on the same store.
fn incremental(dir: &Path, n: u64) -> Result<(f64, f64)> {
    let server = server(n)?;
    let c = client(dir, "inc.db", &server)?;
    full_sync(&c, "inc", None)?;
    let backend = server.backend();
    let mut samples = Vec::new();
    for round in 0..21 {
        backend.update(
            "Item",
            None,
            &((round * 7919) % n + 1).to_string(),
            Obj::from_pairs([("attr3", format!("v{round}"))]),
        )?;
        let t = Instant::now();
        c.sync_source(
            "Item",
            &SyncOptions {
                skip_object_count: true,
                ..SyncOptions::default()
            },
            None,
        )?;
        samples.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    samples.sort_by(f64::total_cmp);
    let end_to_end = samples[samples.len() / 2];
    // For comparison: one local update (write + queue row + commit) on the same large store.
    let mut applies = Vec::new();
    for round in 0..21u64 {
        let id = ((round * 104_729) % n + 1).to_string();
        let mut a = Attrs::new();
        a.insert("attr5".into(), format!("local{round}"));
        let t = Instant::now();
        c.store().update("Item", &id, a)?;
        applies.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    applies.sort_by(f64::total_cmp);
    Ok((end_to_end, applies[applies.len() / 2]))
}

struct StopOnFirstPage {
    at: parking_lot::Mutex<Option<Instant>>,
    client: parking_lot::Mutex<Option<Arc<SyncClient>>>,
}

impl SyncObserver for StopOnFirstPage {
    fn on_page(&self, _e: &PageEvent<'_>) {
        let mut at = self.at.lock();
        if at.is_none() {
            *at = Some(Instant::now());
            if let Some(c) = self.client.lock().as_ref() {
                c.stop();
            }
        }
    }
}

fn stop_latency(dir: &Path, n: u64) -> Result<f64> {
    let server = server(n)?;
    let c = Arc::new(client(dir, "stop.db", &server)?);
    c.login("stop", "password")?;
    let obs = Arc::new(StopOnFirstPage {
        at: Default::default(),
        client: parking_lot::Mutex::new(Some(c.clone())),
    });
    let r = c.sync_source("Item", &SyncOptions::default(), Some(obs.clone()));
    let end = Instant::now();
    anyhow::ensure!(
        matches!(r, Err(tidesync_core::Error::Stopped)),
        "the sync was not stopped: {r:?}"
    );
    let at = obs.at.lock().context("no page arrived")?;
    *obs.client.lock() = None;
    Ok((end - at).as_secs_f64() * 1000.0)
}

fn local_batch(dir: &Path) -> Result<f64> {
    let server = server(1)?;
    let c = client(dir, "batch.db", &server)?;
    let shape = Shape::Generic { attrs: 10 };
    let mut samples = Vec::new();
    for round in 0..5u64 {
        let items: Vec<Attrs> = (0..1000u64)
            .map(|i| {
                generate(&shape, round * 1000 + i, 3)
                    .iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect()
            })
            .collect();
        let t = Instant::now();
        c.store().create_many("Item", items)?;
        samples.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    samples.sort_by(f64::total_cmp);
    Ok(samples[samples.len() / 2])
}

/// Runs everything; prints a table (and the JSON line when asked).
pub fn run(sizes: Sizes, json: bool) -> Result<Figures> {
    let dir = tempfile_dir()?;
    let mut f = Figures {
        objects: sizes.initial,
        rss_objects: sizes.rss,
        incremental_store_objects: sizes.incremental_store,
        ..Figures::default()
    };
    eprintln!("bench: initial sync of {} objects x 10 attributes…", sizes.initial);
    {
        let s = server(sizes.initial)?;
        // Warm the server (its data is generated on first use) with another user's sync.
        let warm = client(dir.path(), "warm.db", &s)?;
        full_sync(&warm, "warm", None)?;
        let c = client(dir.path(), "initial.db", &s)?;
        let secs = full_sync(&c, "bench", None)?;
        anyhow::ensure!(c.count("Item", None)? == sizes.initial, "initial sync incomplete");
        f.initial_sync_objects_per_s = sizes.initial as f64 / secs;
    }
    f.raw_sqlite_objects_per_s = raw_sqlite(dir.path(), sizes.initial)?;
    f.ratio_to_raw = f.initial_sync_objects_per_s / f.raw_sqlite_objects_per_s;
    eprintln!("bench: peak RSS of a {}-object sync (child process)…", sizes.rss);
    {
        let s = server(sizes.rss)?;
        f.peak_rss_mb_1m = child_rss(dir.path(), &s)?;
    }
    eprintln!(
        "bench: incremental update on a {}-object store…",
        sizes.incremental_store
    );
    (f.incremental_update_ms_500k, f.local_update_ms_500k) = incremental(dir.path(), sizes.incremental_store)?;
    eprintln!("bench: stop latency during a {}-object sync…", sizes.stop_store);
    f.stop_sync_ms = stop_latency(dir.path(), sizes.stop_store)?;
    f.local_batch_1k_ms = local_batch(dir.path())?;
    eprintln!("bench: download of {} blobs of 256 KB…", sizes.blob_files);
    f.blobs = crate::bench_blobs::run(dir.path(), sizes.blob_files)?;
    println!("| figure | value |");
    println!("| --- | --- |");
    println!(
        "| initial sync, {} objects x 10 attrs | {:.0} objects/s |",
        f.objects, f.initial_sync_objects_per_s
    );
    println!(
        "| raw SQLite insert, same objects | {:.0} objects/s |",
        f.raw_sqlite_objects_per_s
    );
    println!("| ratio to raw | {:.2} |", f.ratio_to_raw);
    println!(
        "| peak RSS, {}-object sync | {:.1} MB |",
        f.rss_objects, f.peak_rss_mb_1m
    );
    println!(
        "| incremental update, {}-object store (sync, median) | {:.2} ms |",
        f.incremental_store_objects, f.incremental_update_ms_500k
    );
    println!(
        "| one local update on that store (median) | {:.2} ms |",
        f.local_update_ms_500k
    );
    println!("| stop_sync latency | {:.2} ms |", f.stop_sync_ms);
    println!("| local batch of 1k objects (median) | {:.2} ms |", f.local_batch_1k_ms);
    println!(
        "| blob download, {} files x 256 KB (whole sync) | {:.1} MB/s, {:.0} files/s |",
        f.blobs.files, f.blobs.mb_per_s, f.blobs.files_per_s
    );
    if json {
        println!("{}", serde_json::to_string(&f)?);
    }
    Ok(f)
}

fn tempfile_dir() -> Result<TempDir> {
    let p = std::env::temp_dir().join(format!("tidesync-bench-{}", std::process::id()));
    std::fs::create_dir_all(&p)?;
    Ok(TempDir(p))
}

/// A directory removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// This process's peak resident set size in kB (Linux), if known.
pub fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
