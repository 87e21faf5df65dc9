//! Engine tests against the reference server (transcripts app: Product 300 objects in the app
//! partition, Customer 120 per user, password `password`). Nothing sleeps: waits are channel
//! receives or condvar waits with deadlines; the only spin is on a server fault counter, which
//! has no notification (bounded, `yield_now`).

mod concurrency;
mod notifications;
mod stress;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tidesync_server::{App, Server, ServerConfig};

use super::{Engine, EngineConfig, EngineState, SyncNotification, SyncStatus};
use crate::model::{Attrs, SourceDef};
use crate::query::Query;

#[test]
fn engine_handles_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Engine>();
    check::<super::SyncLock>();
    check::<super::NotificationHandle>();
    check::<SyncNotification>();
}

/// Deadline for anything that should happen "soon"; reaching it means a hang or deadlock.
pub(super) const WAIT: Duration = Duration::from_secs(30);

/// parking_lot's deadlock detection (the `deadlock_detection` feature is on for tests): a
/// checker thread looks for lock cycles every 100 ms and aborts the run, printing the threads
/// involved, instead of letting a deadlocked test hang until its deadline.
fn deadlock_checker() {
    static START: std::sync::Once = std::sync::Once::new();
    START.call_once(|| {
        let spawned = std::thread::Builder::new().name("deadlock-checker".into()).spawn(|| {
            loop {
                std::thread::park_timeout(Duration::from_millis(100));
                let found = parking_lot::deadlock::check_deadlock();
                if found.is_empty() {
                    continue;
                }
                eprintln!("{} deadlock(s) detected", found.len());
                for (i, threads) in found.iter().enumerate() {
                    for t in threads {
                        eprintln!("deadlock #{i}, thread {:?}:\n{:?}", t.thread_id(), t.backtrace());
                    }
                }
                std::process::abort();
            }
        });
        assert!(spawned.is_ok(), "the deadlock checker thread could not start");
    });
}

pub(super) fn start_server() -> Server {
    deadlock_checker();
    Server::start(ServerConfig::new(App::transcripts())).expect("the reference server binds a loopback port")
}

/// An installation: its directory (kept alive) and engine.
pub(super) struct Device {
    pub engine: Arc<Engine>,
    pub dir: TempDir,
}

impl std::ops::Deref for Device {
    type Target = Engine;
    fn deref(&self) -> &Engine {
        &self.engine
    }
}

pub(super) fn config(url: &str, page_size: u32) -> EngineConfig {
    EngineConfig {
        sync_server: Some(url.to_owned()),
        page_size: Some(page_size),
        poll_interval: Some(0),
        read_timeout: Some(Duration::from_secs(20)),
        ..EngineConfig::default()
    }
}

pub(super) fn open_engine(path: &Path, config: EngineConfig) -> Arc<Engine> {
    let e = Engine::open(path, config).expect("the engine opens");
    e.client()
        .define_source(&SourceDef::new("Product").priority(1))
        .expect("define Product");
    e.client()
        .define_source(&SourceDef::new("Customer").priority(2))
        .expect("define Customer");
    Arc::new(e)
}

/// An engine with Product and Customer, not logged in, polling off.
pub(super) fn device_with(config: EngineConfig) -> Device {
    let dir = tempfile::tempdir().expect("temporary directory");
    let engine = open_engine(&dir.path().join("client.db"), config);
    Device { engine, dir }
}

/// An engine logged in as `alice`.
pub(super) fn alice(server: &Server, page_size: u32) -> Device {
    let d = device_with(config(&server.sync_url(), page_size));
    d.login_blocking("alice", "password").expect("login succeeds");
    d
}

/// Every notification for `source` (`None`: `*`) into a channel.
pub(super) fn listen(engine: &Engine, source: Option<&str>) -> Receiver<SyncNotification> {
    let (tx, rx) = mpsc::channel();
    let _handle = engine.set_notification(source, move |n: &SyncNotification| {
        let _ = tx.send(n.clone());
    });
    rx
}

pub(super) fn next(rx: &Receiver<SyncNotification>, what: &str) -> SyncNotification {
    rx.recv_timeout(WAIT)
        .unwrap_or_else(|e| panic!("no notification ({what}) within {WAIT:?}: {e} — hang or deadlock"))
}

/// Receives until a run event (`complete` / run `cancelled`) and returns everything received.
pub(super) fn until_run_end(rx: &Receiver<SyncNotification>) -> Vec<SyncNotification> {
    let mut out = Vec::new();
    loop {
        let n = next(rx, "until the run event");
        let end = n.source_name.is_none();
        out.push(n);
        if end {
            return out;
        }
    }
}

/// Everything already delivered.
pub(super) fn drain(rx: &Receiver<SyncNotification>) -> Vec<SyncNotification> {
    rx.try_iter().collect()
}

/// `(source, status, final, processed, cumulative, total)` for sequence assertions.
pub(super) type Step = (String, SyncStatus, bool, u64, u64, Option<u64>);

pub(super) fn steps(ns: &[SyncNotification]) -> Vec<Step> {
    ns.iter()
        .map(|n| {
            (
                n.source_name.clone().unwrap_or_else(|| "*".into()),
                n.status,
                n.is_final,
                n.processed_count,
                n.cumulative_count,
                n.total_count,
            )
        })
        .collect()
}

pub(super) fn step(source: &str, status: SyncStatus, is_final: bool, p: u64, c: u64, t: Option<u64>) -> Step {
    (source.to_owned(), status, is_final, p, c, t)
}

/// The expected in_progress steps of a source of `total` objects at `page` per page.
pub(super) fn progress(source: &str, total: u64, page: u64) -> Vec<Step> {
    let mut out = Vec::new();
    let mut done = 0;
    while done < total {
        let n = page.min(total - done);
        done += n;
        out.push(step(source, SyncStatus::InProgress, false, n, done, Some(total)));
    }
    out
}

pub(super) type Data = BTreeMap<String, Attrs>;

pub(super) fn local(engine: &Engine, source: &str) -> Data {
    engine
        .client()
        .find_all(source, &Query::all())
        .expect("find_all")
        .into_iter()
        .map(|o| (o.id, o.attrs))
        .collect()
}

pub(super) fn remote(server: &Server, source: &str, user: Option<&str>) -> Data {
    server
        .backend()
        .objects(source, user)
        .expect("the backend lists the source")
        .into_iter()
        .map(|(id, o)| (id, o.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect()))
        .collect()
}

pub(super) fn assert_in_sync(server: &Server, engine: &Engine) {
    for (source, user) in [("Product", None), ("Customer", Some("alice"))] {
        let (l, r) = (local(engine, source), remote(server, source, user));
        if l != r {
            let missing: Vec<_> = r.keys().filter(|k| !l.contains_key(*k)).take(5).collect();
            let extra: Vec<_> = l.keys().filter(|k| !r.contains_key(*k)).take(5).collect();
            let differ: Vec<_> = l
                .iter()
                .filter(|(k, v)| r.get(*k).is_some_and(|rv| rv != *v))
                .take(3)
                .collect();
            panic!(
                "{source}: local {} vs server {} objects; missing {missing:?}, extra {extra:?}, differ {differ:?}",
                l.len(),
                r.len()
            );
        }
    }
}

pub(super) fn attrs(pairs: &[(&str, &str)]) -> Attrs {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

pub(super) fn product(name: &str) -> Attrs {
    attrs(&[
        ("name", name),
        ("brand", "Acme"),
        ("price", "1.99"),
        ("quantity", "3"),
        ("sku", "SKU-LOCAL"),
    ])
}

/// Waits until `engine` reaches a state matching `pred`.
pub(super) fn wait_state(engine: &Engine, what: &str, pred: impl Fn(EngineState) -> bool) {
    assert!(engine.wait_state(WAIT, pred, false), "engine never reached {what}");
}

/// Bounded spin for server-side counters (they have no notification).
pub(super) fn spin_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}");
        std::thread::yield_now();
    }
}

/// Syncs until local data equals the server's (a create's link and an update's echo can take
/// a second run), at most `runs` times.
pub(super) fn converge(server: &Server, engine: &Engine, runs: usize) {
    for i in 0..runs {
        let report = engine
            .sync_all_blocking(crate::sync::SyncOptions::default())
            .expect("sync_all runs");
        if std::env::var("TIDESYNC_DEBUG_CONVERGE").is_ok() {
            eprintln!(
                "converge run {i}: {report:?}\npending: {:?}",
                engine.client().pending_changes("Product")
            );
        }
        let same = [("Product", None), ("Customer", Some("alice"))]
            .iter()
            .all(|(s, u)| local(engine, s) == remote(server, s, *u));
        if report.ok()
            && same
            && engine
                .client()
                .pending_changes("Product")
                .map(|c| c.is_empty())
                .unwrap_or(false)
        {
            return;
        }
        if i + 1 == runs {
            assert!(report.ok(), "last sync failed: {report:?}");
        }
    }
    assert_in_sync(server, engine);
}
