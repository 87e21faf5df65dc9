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
    /// Objects of the bulk-versus-incremental first sync.
    pub bulk: u64,
    pub blob_files: u64,
}

impl Sizes {
    pub fn full() -> Self {
        Self {
            initial: 100_000,
            rss: 1_000_000,
            incremental_store: 500_000,
            stop_store: 500_000,
            bulk: 1_000_000,
            blob_files: 1_000,
        }
    }
    pub fn quick() -> Self {
        Self {
            initial: 20_000,
            rss: 50_000,
            incremental_store: 20_000,
            stop_store: 50_000,
            bulk: 5_000,
            blob_files: 20,
        }
    }
}

/// The figures.
#[derive(Debug, Default, serde::Serialize)]
pub struct Figures {
    pub objects: u64,
    pub initial_sync_objects_per_s: f64,
    /// CPU seconds (all threads: client and in-process server) of the initial sync.
    pub initial_sync_cpu_s: f64,
    /// CPU seconds of the raw ceiling's insert (the faster layout).
    pub raw_sqlite_cpu_s: f64,
    /// `raw_sqlite_cpu_s / initial_sync_cpu_s`: the ratio on CPU time, which a loaded machine
    /// disturbs much less than wall time (it leaves out waiting for a core and for fsync).
    pub cpu_ratio_to_raw: f64,
    /// The ceiling: the faster of the two raw layouts below.
    pub raw_sqlite_objects_per_s: f64,
    /// The raw insert into a rowid table with a unique index on the text id.
    pub raw_rowid_objects_per_s: f64,
    /// The raw insert into a `WITHOUT ROWID` table clustered on the text id.
    pub raw_without_rowid_objects_per_s: f64,
    pub ratio_to_raw: f64,
    pub peak_rss_mb_1m: f64,
    pub rss_objects: u64,
    pub incremental_update_ms_500k: f64,
    pub local_update_ms_500k: f64,
    pub incremental_store_objects: u64,
    pub stop_sync_ms: f64,
    pub local_batch_1k_ms: f64,
    /// The bulk-versus-incremental figures.
    pub bulk: Option<BulkFigures>,
    /// Blob download throughput.
    pub blobs: crate::bench_blobs::BlobFigures,
}

/// Bulk first sync against the incremental path, same data, same server, same run; each sync
/// in its own child `tidesync sync` process (its peak RSS is the client's alone).
#[derive(Debug, Default, serde::Serialize)]
pub struct BulkFigures {
    pub objects: u64,
    /// Bulk first sync while the server builds the file (its job is part of the wait).
    pub bulk_cold_s: f64,
    pub bulk_cold_peak_rss_mb: f64,
    /// Bulk first sync of a second client (the server reuses the built file).
    pub bulk_warm_s: f64,
    pub bulk_warm_peak_rss_mb: f64,
    /// Page-by-page first sync (page size 2000).
    pub incremental_s: f64,
    pub incremental_peak_rss_mb: f64,
    /// incremental_s / bulk_warm_s.
    pub speedup_warm: f64,
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

/// The raw ceiling: `n` objects of 10 attributes into a plain table of 10 text columns, one
/// cached statement, one transaction. Both table layouts are measured (a rowid table with a
/// unique index on the text id, and a `WITHOUT ROWID` table clustered on it); the faster one is
/// the ceiling. Returns (rowid, without rowid) objects/s and the CPU seconds of the faster.
fn raw_sqlite(dir: &Path, n: u64) -> Result<(f64, f64, f64)> {
    let shape = Shape::Generic { attrs: 10 };
    let objects: Vec<(String, Obj)> = (1..=n).map(|i| (i.to_string(), generate(&shape, i, 7))).collect();
    let mut rates = [0.0; 2];
    let mut cpu = [0.0; 2];
    for (i, (file, suffix)) in [("raw.db", ""), ("raw-wr.db", " WITHOUT ROWID")]
        .into_iter()
        .enumerate()
    {
        let conn = rusqlite::Connection::open(dir.join(file))?;
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA temp_store = MEMORY; PRAGMA cache_size = -16384;
             CREATE TABLE raw (id TEXT PRIMARY KEY, c0 TEXT, c1 TEXT, c2 TEXT, c3 TEXT, c4 TEXT, c5 TEXT, c6 TEXT, c7 TEXT, c8 TEXT, c9 TEXT){suffix};"
        ))?;
        let t = Instant::now();
        let c0 = process_cpu_s();
        let tx = conn.unchecked_transaction()?;
        {
            let mut stmt =
                tx.prepare_cached("INSERT INTO raw VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)")?;
            for (id, o) in &objects {
                let v: Vec<&str> = o.iter().map(|(_, v)| v).collect();
                stmt.execute(rusqlite::params![
                    id, v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9]
                ])?;
            }
        }
        tx.commit()?;
        rates[i] = n as f64 / t.elapsed().as_secs_f64();
        cpu[i] = process_cpu_s() - c0;
    }
    let best_cpu = if rates[0] >= rates[1] { cpu[0] } else { cpu[1] };
    Ok((rates[0], rates[1], best_cpu))
}

/// Peak RSS of a child `tidesync sync` of `n` objects, in MB.
fn child_rss(dir: &Path, server: &Server) -> Result<f64> {
    Ok(child_sync(dir, server, "rss", false)?.1)
}

/// A child `tidesync sync` of Item (app partition) as `user` (`bulk`: `--bulk`); returns its
/// sync time in seconds (login to end, as the child measures it) and peak RSS in MB.
fn child_sync(dir: &Path, server: &Server, user: &str, bulk: bool) -> Result<(f64, f64)> {
    let exe = std::env::current_exe()?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args([
        "sync",
        "--url",
        &server.sync_url(),
        "--user",
        user,
        "--password",
        "password",
        "--source",
        "Item:app",
    ])
    .arg("--db")
    .arg(dir.join(format!("{user}.db")))
    .args(["--json", "--report-rss"]);
    if bulk {
        cmd.arg("--bulk");
    }
    let out = cmd.output().context("running the child sync")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(last).with_context(|| format!("child output: {stdout}"))?;
    anyhow::ensure!(v["ok"] == true, "child sync failed: {last}");
    let rss = v["peak_rss_kb"]
        .as_f64()
        .map(|kb| kb / 1024.0)
        .context("child did not report its RSS")?;
    let secs = v["elapsed_s"].as_f64().context("child did not report its time")?;
    Ok((secs, rss))
}

/// Bulk first sync against page-by-page first sync of the same `n` objects.
pub fn bulk_figures(dir: &Path, n: u64) -> Result<BulkFigures> {
    let server = server(n)?;
    // The server generates its data on first use: warm it with a count, not a sync.
    server.backend().count("Item", None)?;
    let mut f = BulkFigures {
        objects: n,
        ..BulkFigures::default()
    };
    eprintln!("bench: bulk first sync of {n} objects (the server builds the file)…");
    (f.bulk_cold_s, f.bulk_cold_peak_rss_mb) = child_sync(dir, &server, "bulk1", true)?;
    eprintln!("bench: bulk first sync of {n} objects (file already built)…");
    (f.bulk_warm_s, f.bulk_warm_peak_rss_mb) = child_sync(dir, &server, "bulk2", true)?;
    eprintln!("bench: incremental first sync of {n} objects…");
    (f.incremental_s, f.incremental_peak_rss_mb) = child_sync(dir, &server, "pages", false)?;
    f.speedup_warm = f.incremental_s / f.bulk_warm_s;
    for user in ["bulk1", "bulk2", "pages"] {
        let _ = std::fs::remove_file(dir.join(format!("{user}.db")));
    }
    Ok(f)
}

/// Prints the bulk figures as table rows.
pub fn print_bulk(b: &BulkFigures) {
    println!(
        "| bulk first sync, {} objects x 10 attrs, server builds the file | {:.2} s, peak RSS {:.1} MB |",
        b.objects, b.bulk_cold_s, b.bulk_cold_peak_rss_mb
    );
    println!(
        "| bulk first sync, file already built | {:.2} s, peak RSS {:.1} MB |",
        b.bulk_warm_s, b.bulk_warm_peak_rss_mb
    );
    println!(
        "| incremental first sync, same objects (pages of 2000) | {:.2} s, peak RSS {:.1} MB |",
        b.incremental_s, b.incremental_peak_rss_mb
    );
    println!("| bulk speed-up (warm) | {:.2}x |", b.speedup_warm);
}

/// `bench --bulk`: only the bulk-versus-incremental figures.
pub fn run_bulk(sizes: Sizes, json: bool) -> Result<BulkFigures> {
    let dir = tempfile_dir()?;
    let b = bulk_figures(dir.path(), sizes.bulk)?;
    println!("| figure | value |");
    println!("| --- | --- |");
    print_bulk(&b);
    if json {
        println!("{}", serde_json::to_string(&b)?);
    }
    Ok(b)
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

/// Which figures to measure (`--only`, for profiling one part under callgrind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// The initial sync and its raw-SQLite ceiling.
    Initial,
    /// The raw-SQLite ceiling alone.
    Raw,
    /// The initial sync alone.
    Sync,
    /// Peak RSS of the large sync in a child process.
    Rss,
    /// The incremental update (and the local update) on the large store.
    Incremental,
    /// stop_sync latency.
    Stop,
    /// The local batch of 1k objects.
    Batch,
    /// Bulk versus incremental first sync (also `bench --bulk`).
    Bulk,
    /// Blob download throughput.
    Blobs,
}

/// Runs everything (or only `only`); prints a table (and the JSON line when asked).
pub fn run(sizes: Sizes, json: bool, only: Option<Part>) -> Result<Figures> {
    let want = |p: Part| match only {
        None => true,
        Some(Part::Initial) => matches!(p, Part::Sync | Part::Raw),
        Some(o) => o == p,
    };
    let dir = tempfile_dir()?;
    let mut f = Figures {
        objects: sizes.initial,
        rss_objects: sizes.rss,
        incremental_store_objects: sizes.incremental_store,
        ..Figures::default()
    };
    if want(Part::Sync) {
        eprintln!("bench: initial sync of {} objects x 10 attributes…", sizes.initial);
        let s = server(sizes.initial)?;
        // Warm the server (its data is generated on first use) with another user's sync.
        let warm = client(dir.path(), "warm.db", &s)?;
        full_sync(&warm, "warm", None)?;
        let c = client(dir.path(), "initial.db", &s)?;
        let c0 = process_cpu_s();
        let secs = full_sync(&c, "bench", None)?;
        f.initial_sync_cpu_s = process_cpu_s() - c0;
        anyhow::ensure!(c.count("Item", None)? == sizes.initial, "initial sync incomplete");
        f.initial_sync_objects_per_s = sizes.initial as f64 / secs;
    }
    if want(Part::Raw) {
        let (rowid, without_rowid, cpu) = raw_sqlite(dir.path(), sizes.initial)?;
        f.raw_sqlite_cpu_s = cpu;
        f.raw_rowid_objects_per_s = rowid;
        f.raw_without_rowid_objects_per_s = without_rowid;
        f.raw_sqlite_objects_per_s = rowid.max(without_rowid);
    }
    if f.raw_sqlite_objects_per_s > 0.0 {
        f.ratio_to_raw = f.initial_sync_objects_per_s / f.raw_sqlite_objects_per_s;
    }
    if f.initial_sync_cpu_s > 0.0 {
        f.cpu_ratio_to_raw = f.raw_sqlite_cpu_s / f.initial_sync_cpu_s;
    }
    if want(Part::Rss) {
        eprintln!("bench: peak RSS of a {}-object sync (child process)…", sizes.rss);
        let s = server(sizes.rss)?;
        f.peak_rss_mb_1m = child_rss(dir.path(), &s)?;
    }
    if want(Part::Incremental) {
        eprintln!(
            "bench: incremental update on a {}-object store…",
            sizes.incremental_store
        );
        (f.incremental_update_ms_500k, f.local_update_ms_500k) = incremental(dir.path(), sizes.incremental_store)?;
    }
    if want(Part::Stop) {
        eprintln!("bench: stop latency during a {}-object sync…", sizes.stop_store);
        f.stop_sync_ms = stop_latency(dir.path(), sizes.stop_store)?;
    }
    if want(Part::Batch) {
        f.local_batch_1k_ms = local_batch(dir.path())?;
    }
    if want(Part::Bulk) {
        f.bulk = Some(bulk_figures(dir.path(), sizes.bulk)?);
    }
    if want(Part::Blobs) {
        eprintln!("bench: download of {} blobs of 256 KB…", sizes.blob_files);
        f.blobs = crate::bench_blobs::run(dir.path(), sizes.blob_files)?;
    }
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
    println!(
        "| (raw rowid table / WITHOUT ROWID table) | {:.0} / {:.0} objects/s |",
        f.raw_rowid_objects_per_s, f.raw_without_rowid_objects_per_s
    );
    println!("| ratio to raw | {:.2} |", f.ratio_to_raw);
    println!(
        "| CPU seconds: sync (client + server) / raw; ratio | {:.2} / {:.2}; {:.2} |",
        f.initial_sync_cpu_s, f.raw_sqlite_cpu_s, f.cpu_ratio_to_raw
    );
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
    if let Some(b) = &f.bulk {
        print_bulk(b);
    }
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

/// CPU time (user + system) this process has used so far, in seconds (Linux `/proc`, 10 ms
/// ticks; 0 elsewhere). Covers every thread, so the in-process server is counted too.
fn process_cpu_s() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) start at ") ".
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map(|(_, rest)| rest.split(' ').collect())
        .unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// This process's peak resident set size in kB (Linux), if known.
pub fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
