//! Bulk sync end to end (spec §6, transcript 18): the core's `SyncClient` and `Engine` against
//! the reference server — both partitions, `wait` polling, `.rzip` and `.data` downloads, a
//! dropped download resumed, corrupt and mismatched files refused with the store unchanged,
//! queued local changes pushed exactly once after the swap, a stop at each step, and server
//! changes during the bulk job converging through incremental sync afterwards.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tidesync_core::{
    Attrs, BulkEvent, BulkStep, BulkSyncState, Engine, EngineConfig, Error as CoreError, Partition, SourceDef,
    SyncClient, SyncConfig, SyncNotification, SyncObserver, SyncOptions, SyncStatus, SyncType,
};
use tidesync_server::{App, FaultKind, FaultRule, Obj, Route, Server, ServerConfig};
use tidesync_tests::{Store, store_diff, store_of};

const PASSWORD: &str = "password";

fn server(config: ServerConfig) -> Server {
    Server::start(config).expect("the reference server binds a loopback port")
}

/// The transcripts' application with its bulk files in `data_dir`.
fn transcripts_server(data_dir: &Path) -> Server {
    let mut cfg = ServerConfig::new(App::transcripts());
    cfg.data_dir = Some(data_dir.to_owned());
    server(cfg)
}

struct Device {
    client: Arc<SyncClient>,
    dir: TempDir,
}

impl Device {
    fn db(&self) -> PathBuf {
        self.dir.path().join("client.db")
    }
}

/// A device with Product (app partition) and Customer (user partition), both bulk sources,
/// logged in as `user`.
fn device(server: &Server, user: &str) -> Device {
    let dir = tempfile::tempdir().expect("temporary directory");
    let client = SyncClient::open(&dir.path().join("client.db"), SyncConfig::new(&server.sync_url()))
        .expect("the client database opens");
    client
        .define_source(
            &SourceDef::new("Product")
                .priority(1)
                .partition(Partition::App)
                .sync_type(SyncType::Bulk),
        )
        .expect("define Product");
    client
        .define_source(
            &SourceDef::new("Customer")
                .priority(2)
                .partition(Partition::User)
                .sync_type(SyncType::Bulk),
        )
        .expect("define Customer");
    client.login(user, PASSWORD).expect("login");
    Device {
        client: Arc::new(client),
        dir,
    }
}

fn local_store(client: &SyncClient, source: &str) -> Store {
    let objs = client
        .find_all(source, &tidesync_core::Query::default())
        .expect("find_all");
    store_of(
        objs.into_iter()
            .map(|o| {
                (
                    o.id,
                    Obj::from_pairs(o.attrs.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
                )
            })
            .collect(),
    )
}

fn assert_converged(server: &Server, client: &SyncClient, source: &str, user: Option<&str>) {
    let expected = server.backend().objects(source, user).expect("backend objects");
    let expected = store_of(expected);
    let actual = local_store(client, source);
    assert!(
        expected == actual,
        "{source}: local store differs from the backend:\n{}",
        store_diff(&expected, &actual)
    );
}

/// Every row of the client's database that sync can change, as text (compared before/after).
fn dump(db: &Path) -> String {
    let c = rusqlite::Connection::open(db).expect("open the client db");
    let mut out = String::new();
    for (table, order) in [
        ("objects", "source_id, id"),
        ("changes", "seq"),
        ("sources", "id"),
        ("sync_errors", "id"),
        ("settings", "key"),
        ("id_map", "source_id, temp_id"),
        // The client id a bulk request may create is identity, not data.
        ("client_info", "id"),
    ] {
        let cols = if table == "client_info" {
            "session, user_name, reset_pending"
        } else {
            "*"
        };
        let mut stmt = c
            .prepare(&format!("SELECT {cols} FROM {table} ORDER BY {order}"))
            .unwrap();
        let n = stmt.column_count();
        let rows = stmt
            .query_map([], |r| {
                let mut line = String::new();
                for i in 0..n {
                    let v: rusqlite::types::Value = r.get(i)?;
                    line.push_str(&format!("{v:?}|"));
                }
                Ok(line)
            })
            .unwrap();
        out.push_str(&format!("## {table}\n"));
        for r in rows {
            out.push_str(&r.unwrap());
            out.push('\n');
        }
    }
    out
}

/// What a [`Recorder`] runs at a step.
type Action = Box<dyn FnMut(&BulkEvent) + Send>;

/// Records bulk events; runs an action on a chosen step.
#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<(BulkStep, Option<Partition>)>>,
    /// Download events: (bytes in the file, total when known).
    downloads: Mutex<Vec<(u64, Option<u64>)>>,
    on: Mutex<Vec<(BulkStep, Action)>>,
}

impl SyncObserver for Recorder {
    fn on_page(&self, _: &tidesync_core::PageEvent<'_>) {}
    fn on_bulk(&self, e: &BulkEvent) {
        self.events.lock().unwrap().push((e.step, e.partition));
        if e.step == BulkStep::Download {
            self.downloads.lock().unwrap().push((e.bytes, e.total_bytes));
        }
        let mut on = self.on.lock().unwrap();
        for (step, f) in on.iter_mut() {
            if *step == e.step {
                f(e);
            }
        }
    }
}

impl Recorder {
    fn when(self, step: BulkStep, f: impl FnMut(&BulkEvent) + Send + 'static) -> Self {
        self.on.lock().unwrap().push((step, Box::new(f)));
        self
    }
    fn steps(&self) -> Vec<(BulkStep, Option<Partition>)> {
        let mut v = self.events.lock().unwrap().clone();
        v.dedup();
        v
    }
}

// ---------------------------------------------------------------------------------------------

#[test]
fn bulk_loads_user_and_app_partitions_and_incremental_brings_nothing_twice() {
    let data = tempfile::tempdir().unwrap();
    let s = transcripts_server(data.path());
    let d = device(&s, "alice");
    assert_eq!(d.client.bulk_sync_state().unwrap(), BulkSyncState::Needed);
    assert!(d.client.bulk_needed().unwrap());
    let rec = Arc::new(Recorder::default());
    let report = d
        .client
        .bulk_sync(&SyncOptions::default(), Some(rec.clone() as Arc<dyn SyncObserver>))
        .expect("bulk sync");
    assert_eq!(report.objects(), 420);
    assert_eq!(
        report.partitions,
        vec![
            (Partition::User, vec![("Customer".to_owned(), 120)]),
            (Partition::App, vec![("Product".to_owned(), 300)]),
        ]
    );
    assert_eq!(
        rec.steps(),
        vec![
            (BulkStep::Start, None),
            (BulkStep::Start, Some(Partition::User)),
            (BulkStep::Download, Some(Partition::User)),
            (BulkStep::ChangeDb, Some(Partition::User)),
            (BulkStep::Ok, Some(Partition::User)),
            (BulkStep::Start, Some(Partition::App)),
            (BulkStep::Download, Some(Partition::App)),
            (BulkStep::ChangeDb, Some(Partition::App)),
            (BulkStep::Ok, Some(Partition::App)),
            (BulkStep::Complete, None),
        ]
    );
    assert_eq!(d.client.bulk_sync_state().unwrap(), BulkSyncState::Done);
    assert_converged(&s, &d.client, "Product", None);
    assert_converged(&s, &d.client, "Customer", Some("alice"));
    // The snapshot is what the server believes we hold: incremental sync brings no object.
    let r = d.client.sync_all(&SyncOptions::default(), None).expect("sync_all");
    assert!(r.ok(), "{r:?}");
    for (name, res) in &r.sources {
        assert_eq!(res.as_ref().unwrap().objects, 0, "{name} got objects again");
    }
    assert_eq!(d.client.store().count("Product", None).unwrap(), 300);
    // The bulk directory holds no leftover file.
    let left: Vec<_> = std::fs::read_dir(format!("{}.bulk", d.db().display()))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
    d.client.store().check_integrity().unwrap();
}

#[test]
fn sync_all_runs_the_bulk_sync_first_only_while_it_is_needed() {
    let data = tempfile::tempdir().unwrap();
    let s = transcripts_server(data.path());
    let d = device(&s, "bob");
    let r = d.client.sync_all(&SyncOptions::default(), None).unwrap();
    assert!(r.ok(), "{r:?}");
    assert_eq!(d.client.bulk_sync_state().unwrap(), BulkSyncState::Done);
    assert_converged(&s, &d.client, "Customer", Some("bob"));
    // Set back to needed (e.g. after schema_changed): the next sync_all bulk-loads again.
    s.backend()
        .update("Product", None, "5", Obj::from_pairs([("price", "1.00")]))
        .unwrap();
    d.client.set_bulk_sync_state(BulkSyncState::Needed).unwrap();
    let r = d.client.sync_all(&SyncOptions::default(), None).unwrap();
    assert!(r.ok(), "{r:?}");
    assert_eq!(d.client.bulk_sync_state().unwrap(), BulkSyncState::Done);
    assert_converged(&s, &d.client, "Product", None);
}

#[test]
fn empty_url_for_a_source_error_is_a_typed_error_and_the_state_stays_needed() {
    // Transcript 18: a user-partition source with a source error → {"result":"url","url":""}.
    let data = tempfile::tempdir().unwrap();
    let s = transcripts_server(data.path());
    let d = device(&s, "carol");
    d.client
        .define_source(
            &SourceDef::new("NoSuchSource")
                .priority(3)
                .partition(Partition::User)
                .sync_type(SyncType::Bulk),
        )
        .unwrap();
    // Its first query makes the server register it with a source error (transcript 13).
    let _ = d.client.sync_source("NoSuchSource", &SyncOptions::default(), None);
    let before = dump(&d.db());
    let r = d.client.bulk_sync(&SyncOptions::default(), None);
    match r {
        Err(CoreError::Server { message, .. }) => assert!(message.contains("empty url"), "{message}"),
        other => panic!("expected a server error, got {other:?}"),
    }
    assert_eq!(d.client.bulk_sync_state().unwrap(), BulkSyncState::Needed);
    assert_eq!(before, dump(&d.db()));
    // sync_all reports the bulk sources as failed and does not sync them page by page (H7),
    // but the run goes on.
    let r = d.client.sync_all(&SyncOptions::default(), None).unwrap();
    assert!(r.sources.iter().all(|(_, res)| res.is_err()), "{r:?}");
    assert_eq!(d.client.store().count("Customer", None).unwrap(), 0);
}

#[test]
fn a_partition_without_sources_on_the_server_is_nop() {
    let data = tempfile::tempdir().unwrap();
    let mut cfg = ServerConfig::new(App::generated(
        &tidesync_server::DatasetSpec::parse_list("Item=50x3").unwrap(),
        1,
    ));
    cfg.data_dir = Some(data.path().to_owned());
    let s = server(cfg);
    let dir = tempfile::tempdir().unwrap();
    let client = SyncClient::open(&dir.path().join("c.db"), SyncConfig::new(&s.sync_url())).unwrap();
    client
        .define_source(
            &SourceDef::new("Item")
                .partition(Partition::App)
                .sync_type(SyncType::Bulk),
        )
        .unwrap();
    client
        .define_source(
            &SourceDef::new("Note")
                .partition(Partition::User)
                .sync_type(SyncType::Bulk),
        )
        .unwrap();
    client.login("dave", PASSWORD).unwrap();
    let report = client.bulk_sync(&SyncOptions::default(), None).unwrap();
    assert_eq!(report.partitions, vec![(Partition::App, vec![("Item".to_owned(), 50)])]);
    assert_eq!(client.bulk_sync_state().unwrap(), BulkSyncState::Done);
}

#[test]
fn a_download_dropped_mid_body_resumes_with_a_range() {
    let data = tempfile::tempdir().unwrap();
    let mut cfg = ServerConfig::new(App::generated(
        &tidesync_server::DatasetSpec::parse_list("Item=20000x10").unwrap(),
        3,
    ));
    cfg.data_dir = Some(data.path().to_owned());
    cfg.faults = tidesync_server::Faults::new(
        vec![FaultRule::once_after(Route::BulkFile, FaultKind::DropMidBody, 0)],
        1,
    );
    let s = server(cfg);
    let dir = tempfile::tempdir().unwrap();
    let client = SyncClient::open(&dir.path().join("c.db"), SyncConfig::new(&s.sync_url())).unwrap();
    client
        .define_source(
            &SourceDef::new("Item")
                .partition(Partition::App)
                .sync_type(SyncType::Bulk),
        )
        .unwrap();
    client.login("erin", PASSWORD).unwrap();
    let rec = Arc::new(Recorder::default());
    let report = client
        .bulk_sync(&SyncOptions::default(), Some(rec.clone() as Arc<dyn SyncObserver>))
        .expect("the bulk sync survives a dropped download");
    assert_eq!(s.faults().injected(), 1, "the drop was injected");
    assert_eq!(report.objects(), 20_000);
    // An attempt starts with an event without a total: the second one started where the first
    // one was cut (half the file), not from zero.
    let starts: Vec<u64> = rec
        .downloads
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, total)| total.is_none())
        .map(|(b, _)| *b)
        .collect();
    assert_eq!(starts.len(), 2, "{starts:?}");
    assert_eq!(starts[0], 0);
    assert!(starts[1] > 0, "the second attempt resumed at {} bytes", starts[1]);
    assert_converged(&s, &client, "Item", None);
}

#[test]
fn a_truncated_or_garbage_file_is_refused_and_the_store_is_unchanged() {
    for kind in [FaultKind::TruncatedJson, FaultKind::MalformedJson] {
        let data = tempfile::tempdir().unwrap();
        let s = transcripts_server(data.path());
        let d = device(&s, "frank");
        // Some state first: an incremental sync of Product and a queued local change.
        d.client
            .define_source(&SourceDef::new("Product").priority(1).partition(Partition::App))
            .unwrap();
        d.client.set_bulk_sync_state(BulkSyncState::Done).unwrap();
        d.client.sync_source("Product", &SyncOptions::default(), None).unwrap();
        d.client
            .store()
            .update("Product", "3", Attrs::from([("name".to_owned(), "mine".to_owned())]))
            .unwrap();
        d.client
            .define_source(
                &SourceDef::new("Product")
                    .priority(1)
                    .partition(Partition::App)
                    .sync_type(SyncType::Bulk),
            )
            .unwrap();
        d.client
            .define_source(&SourceDef::new("Customer").priority(2).partition(Partition::User))
            .unwrap();
        d.client.set_bulk_sync_state(BulkSyncState::Needed).unwrap();
        s.faults().set(vec![FaultRule::always(Route::BulkFile, kind)]);
        let before = dump(&d.db());
        let r = d.client.bulk_sync(&SyncOptions::default(), None);
        assert!(matches!(r, Err(CoreError::BulkFile { .. })), "{kind:?}: {r:?}");
        assert_eq!(before, dump(&d.db()), "{kind:?} changed the store");
        assert_eq!(d.client.bulk_sync_state().unwrap(), BulkSyncState::Needed);
        // With the fault gone the next bulk sync succeeds and keeps the local edit.
        s.faults().clear();
        d.client.bulk_sync(&SyncOptions::default(), None).unwrap();
        assert_eq!(d.client.find("Product", "3").unwrap().unwrap().attrs["name"], "mine");
        d.client.store().check_integrity().unwrap();
    }
}

/// Asks the server for the bulk URL of `partition` (building the file) with a raw client.
fn bulk_url(s: &Server, user: &str, partition: &str, sources: &str) -> String {
    let mut c = tidesync_tests::Client::new(tidesync_tests::Http::new(&s.url()));
    c.login(user, PASSWORD).unwrap();
    let id = c.client_create().unwrap();
    let cookie = c.cookie.clone().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = c
            .http
            .get(
                &format!("/application/bulk_data?client_id={id}&partition={partition}&sources={sources}"),
                &[("Cookie", &cookie)],
            )
            .unwrap();
        let v = r.json().unwrap();
        if v["result"] == "url" {
            return v["url"].as_str().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "bulk job did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_mismatched_or_corrupt_sqlite_file_is_refused_and_the_store_is_unchanged() {
    type Spoil = fn(&rusqlite::Connection);
    let cases: [(&str, Spoil); 3] = [
        ("object count differs from last_inserted_size", |c| {
            c.execute("DELETE FROM object_values WHERE object = '7'", []).unwrap();
        }),
        ("source not selected", |c| {
            c.execute("UPDATE sources SET sync_type = 'none'", []).unwrap();
        }),
        ("source missing", |c| {
            c.execute("UPDATE sources SET name = 'Other'", []).unwrap();
        }),
    ];
    for (what, spoil) in cases {
        let data = tempfile::tempdir().unwrap();
        let s = transcripts_server(data.path());
        let d = device(&s, "gina");
        d.client
            .define_source(&SourceDef::new("Customer").priority(2).partition(Partition::User))
            .unwrap();
        let url = bulk_url(&s, "gina", "app", "Product");
        // Serve a spoiled raw .data file: remove the .rzip so that the client falls back to it.
        let file = data.path().join(url.trim_start_matches("/data/"));
        std::fs::remove_file(format!("{}.rzip", file.display())).unwrap();
        spoil(&rusqlite::Connection::open(&file).unwrap());
        let before = dump(&d.db());
        let r = d.client.bulk_sync(&SyncOptions::default(), None);
        assert!(matches!(r, Err(CoreError::BulkFile { .. })), "{what}: {r:?}");
        assert_eq!(before, dump(&d.db()), "{what}: the store changed");
    }
    // Bytes that are not SQLite at all.
    let data = tempfile::tempdir().unwrap();
    let s = transcripts_server(data.path());
    let d = device(&s, "gina");
    d.client
        .define_source(&SourceDef::new("Customer").priority(2).partition(Partition::User))
        .unwrap();
    let url = bulk_url(&s, "gina", "app", "Product");
    let file = data.path().join(url.trim_start_matches("/data/"));
    std::fs::remove_file(format!("{}.rzip", file.display())).unwrap();
    let mut bytes = std::fs::read(&file).unwrap();
    for b in bytes.iter_mut().skip(4096).step_by(7) {
        *b ^= 0x5a;
    }
    std::fs::write(&file, bytes).unwrap();
    let before = dump(&d.db());
    let r = d.client.bulk_sync(&SyncOptions::default(), None);
    assert!(matches!(r, Err(CoreError::BulkFile { .. })), "{r:?}");
    assert_eq!(before, dump(&d.db()));
}

#[test]
fn local_changes_queued_before_the_swap_are_pushed_after_it_exactly_once() {
    let data = tempfile::tempdir().unwrap();
    let s = transcripts_server(data.path());
    let d = device(&s, "hank");
    // Incremental first, then local edits, then a bulk sync that replaces the source.
    d.client.set_bulk_sync_state(BulkSyncState::Done).unwrap();
    d.client.sync_all(&SyncOptions::default(), None).unwrap();
    let created = d
        .client
        .create("Product", Attrs::from([("name".to_owned(), "Fresh".to_owned())]))
        .unwrap();
    d.client
        .store()
        .update("Product", "2", Attrs::from([("price".to_owned(), "7.77".to_owned())]))
        .unwrap();
    d.client.store().destroy("Product", "4").unwrap();
    let before = s.backend().applied();
    d.client.set_bulk_sync_state(BulkSyncState::Needed).unwrap();
    let r = d.client.sync_all(&SyncOptions::default(), None).unwrap();
    assert!(r.ok(), "{r:?}");
    // Survived the swap.
    let after = s.backend().applied();
    assert_eq!(after.creates - before.creates, 1);
    assert_eq!(after.updates - before.updates, 1);
    assert_eq!(after.deletes - before.deletes, 1);
    // Once more: nothing is pushed again.
    let r = d.client.sync_all(&SyncOptions::default(), None).unwrap();
    assert!(r.ok(), "{r:?}");
    assert_eq!(s.backend().applied(), after);
    assert!(
        d.client.find("Product", &created.id).unwrap().is_none(),
        "the temp id was linked"
    );
    assert_eq!(
        s.backend().get("Product", None, "2").unwrap().unwrap().get("price"),
        Some("7.77")
    );
    assert!(s.backend().get("Product", None, "4").unwrap().is_none());
    assert_converged(&s, &d.client, "Product", None);
    assert_eq!(d.client.store().count("Product", None).unwrap(), 300);
}

/// A stop at `step` ends the bulk sync with `Stopped`, changes nothing, and the next bulk
/// sync completes.
fn stop_at(step: BulkStep, job_delay: Duration) {
    let data = tempfile::tempdir().unwrap();
    let mut app = App::transcripts();
    app.bulk_job_delay = job_delay;
    let mut cfg = ServerConfig::new(app);
    cfg.data_dir = Some(data.path().to_owned());
    let s = server(cfg);
    let d = device(&s, "ivy");
    let before = dump(&d.db());
    let slot: Arc<OnceLock<Arc<SyncClient>>> = Arc::new(OnceLock::new());
    slot.set(d.client.clone()).ok();
    let stoppers: Arc<Mutex<Vec<std::thread::JoinHandle<()>>>> = Arc::default();
    let rec = {
        let slot = slot.clone();
        let stoppers = stoppers.clone();
        let mut done = false;
        Recorder::default().when(step, move |e| {
            if done || e.partition.is_none() {
                return; // once, at the first partition
            }
            done = true;
            let c = slot.get().unwrap().clone();
            if step == BulkStep::Start {
                // Stop while the client waits for the job (`wait` answers).
                stoppers.lock().unwrap().push(std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(300));
                    c.stop();
                }));
            } else {
                c.stop();
            }
        })
    };
    let started = Instant::now();
    let r = d
        .client
        .bulk_sync(&SyncOptions::default(), Some(Arc::new(rec) as Arc<dyn SyncObserver>));
    assert_eq!(r, Err(CoreError::Stopped), "{step:?}");
    for t in stoppers.lock().unwrap().drain(..) {
        t.join().unwrap();
    }
    assert!(started.elapsed() < job_delay.max(Duration::from_secs(2)) + Duration::from_secs(1));
    assert_eq!(before, dump(&d.db()), "a stop at {step:?} changed the store");
    assert_eq!(d.client.bulk_sync_state().unwrap(), BulkSyncState::Needed);
    d.client
        .bulk_sync(&SyncOptions::default(), None)
        .expect("the next bulk sync");
    assert_converged(&s, &d.client, "Product", None);
    assert_converged(&s, &d.client, "Customer", Some("ivy"));
}

#[test]
fn a_stop_while_waiting_for_the_job_ends_the_bulk_sync_at_once() {
    stop_at(BulkStep::Start, Duration::from_secs(5));
}

#[test]
fn a_stop_during_the_download_changes_nothing() {
    stop_at(BulkStep::Download, Duration::from_millis(50));
}

#[test]
fn a_stop_before_the_swap_changes_nothing() {
    stop_at(BulkStep::ChangeDb, Duration::from_millis(50));
}

#[test]
fn server_changes_during_the_bulk_job_converge_through_incremental_sync() {
    let data = tempfile::tempdir().unwrap();
    let s = transcripts_server(data.path());
    let d = device(&s, "jack");
    let b = s.backend();
    let b2 = s.backend();
    let rec = Recorder::default()
        .when(BulkStep::Start, move |e| {
            if e.partition != Some(Partition::App) {
                return;
            }
            // Before the job snapshots the data: these are in the file.
            let _ = b.update("Product", None, "10", Obj::from_pairs([("price", "10.10")]));
            let _ = b.insert("Product", None, "900", Obj::from_pairs([("name", "early")]));
            let _ = b.delete("Product", None, "11");
        })
        .when(BulkStep::ChangeDb, move |e| {
            if e.partition != Some(Partition::App) {
                return;
            }
            // After the snapshot: incremental sync must bring exactly these.
            let _ = b2.update("Product", None, "12", Obj::from_pairs([("price", "12.12")]));
            let _ = b2.insert("Product", None, "901", Obj::from_pairs([("name", "late")]));
            let _ = b2.delete("Product", None, "13");
            let _ = b2.update("Customer", Some("jack"), "1", Obj::from_pairs([("city", "Oslo")]));
        });
    d.client
        .bulk_sync(&SyncOptions::default(), Some(Arc::new(rec) as Arc<dyn SyncObserver>))
        .unwrap();
    assert!(d.client.find("Product", "900").unwrap().is_some());
    assert!(
        d.client.find("Product", "901").unwrap().is_none(),
        "not in the snapshot"
    );
    let r = d.client.sync_all(&SyncOptions::default(), None).unwrap();
    assert!(r.ok(), "{r:?}");
    assert_converged(&s, &d.client, "Product", None);
    assert_converged(&s, &d.client, "Customer", Some("jack"));
    assert_eq!(d.client.find("Product", "12").unwrap().unwrap().attrs["price"], "12.12");
}

// ---------------------------------------------------------------------------------------------
// The engine: notifications, the sync mutex, stop_sync.

fn engine_for(s: &Server, dir: &Path) -> Engine {
    let mut cfg = EngineConfig::new(&s.sync_url());
    cfg.poll_interval = Some(0);
    let e = Engine::open(&dir.join("e.db"), cfg).unwrap();
    e.client()
        .define_source(
            &SourceDef::new("Product")
                .priority(1)
                .partition(Partition::App)
                .sync_type(SyncType::Bulk),
        )
        .unwrap();
    e.client()
        .define_source(
            &SourceDef::new("Customer")
                .priority(2)
                .partition(Partition::User)
                .sync_type(SyncType::Bulk),
        )
        .unwrap();
    e.login_blocking("kim", PASSWORD).unwrap();
    e
}

type Seen = Arc<Mutex<Vec<SyncNotification>>>;

fn collect(engine: &Engine) -> (Seen, tidesync_core::NotificationHandle) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let handle = engine.set_notification(None, move |n: &SyncNotification| {
        s2.lock().unwrap().push(n.clone());
    });
    (seen, handle)
}

fn wait_for_state(e: &Engine, want: tidesync_core::EngineState) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if e.state() == want {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

#[test]
fn engine_bulk_notifications_follow_the_documented_sequence() {
    let data = tempfile::tempdir().unwrap();
    let s = transcripts_server(data.path());
    let dir = tempfile::tempdir().unwrap();
    let e = engine_for(&s, dir.path());
    let (seen, _handle) = collect(&e);
    let report = e.sync_all_blocking(SyncOptions::default()).unwrap();
    assert!(report.ok(), "{report:?}");
    assert!(e.flush_notifications(Duration::from_secs(5)));
    let seen = seen.lock().unwrap().clone();
    let bulk: Vec<(String, String, SyncStatus)> = seen
        .iter()
        .filter(|n| n.sync_type == SyncType::Bulk)
        .map(|n| (n.bulk_status.clone().unwrap(), n.partition.clone().unwrap(), n.status))
        .fold(Vec::new(), |mut v, x| {
            if v.last() != Some(&x) {
                v.push(x);
            }
            v
        });
    let s_ = |a: &str, p: &str, st| (a.to_owned(), p.to_owned(), st);
    assert_eq!(
        bulk,
        vec![
            s_("start", "", SyncStatus::InProgress),
            s_("start", "user", SyncStatus::InProgress),
            s_("download", "user", SyncStatus::InProgress),
            s_("change_db", "user", SyncStatus::InProgress),
            s_("ok", "user", SyncStatus::InProgress),
            s_("start", "app", SyncStatus::InProgress),
            s_("download", "app", SyncStatus::InProgress),
            s_("change_db", "app", SyncStatus::InProgress),
            s_("ok", "app", SyncStatus::InProgress),
            s_("complete", "", SyncStatus::Ok),
        ]
    );
    let ok_app = seen
        .iter()
        .find(|n| n.bulk_status.as_deref() == Some("ok") && n.partition.as_deref() == Some("app"))
        .unwrap();
    assert_eq!(ok_app.cumulative_count, 300);
    // Bulk events come first, then the incremental per-source finals and the run event.
    let first_incremental = seen.iter().position(|n| n.sync_type == SyncType::Incremental).unwrap();
    assert!(
        seen[first_incremental..]
            .iter()
            .all(|n| n.sync_type == SyncType::Incremental)
    );
    assert_eq!(seen.last().unwrap().status, SyncStatus::Complete);
    assert_eq!(e.client().store().count("Product", None).unwrap(), 300);
    e.shutdown();
}

#[test]
fn engine_bulk_sync_waits_for_the_sync_mutex_and_stops_on_stop_sync() {
    let data = tempfile::tempdir().unwrap();
    let s = transcripts_server(data.path());
    let dir = tempfile::tempdir().unwrap();
    let e = engine_for(&s, dir.path());
    let lock = e.sync_lock();
    let (tx, rx) = std::sync::mpsc::channel();
    e.sync_all(SyncOptions::default(), move |r| {
        let _ = tx.send(r);
    });
    assert!(wait_for_state(&e, tidesync_core::EngineState::WaitingForSyncLock));
    assert_eq!(
        e.client().store().count("Product", None).unwrap(),
        0,
        "nothing while the app holds the lock"
    );
    drop(lock);
    let r = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the sync ends")
        .unwrap();
    assert!(r.ok(), "{r:?}");
    assert_eq!(e.client().store().count("Product", None).unwrap(), 300);

    // stop_sync during a bulk sync waiting for a slow job: cancelled, state still needed.
    e.client().set_bulk_sync_state(BulkSyncState::Needed).unwrap();
    let (seen, _handle) = collect(&e);
    let lock = e.sync_lock();
    let (tx, rx) = std::sync::mpsc::channel();
    e.sync_all(SyncOptions::default(), move |r| {
        let _ = tx.send(r);
    });
    assert!(wait_for_state(&e, tidesync_core::EngineState::WaitingForSyncLock));
    assert!(e.stop_sync(Duration::from_secs(10)));
    drop(lock);
    let _ = rx.recv_timeout(Duration::from_secs(10)).expect("the sync ends");
    assert!(e.flush_notifications(Duration::from_secs(5)));
    assert_eq!(e.client().bulk_sync_state().unwrap(), BulkSyncState::Needed);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.last().unwrap().status, SyncStatus::Cancelled);
    assert!(!seen.iter().any(|n| n.bulk_status.as_deref() == Some("complete")));
    e.shutdown();
}

// ---------------------------------------------------------------------------------------------
// The CLI

/// `target/debug/tidesync`, built once if missing.
fn cli_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let bin = root.join("target/debug/tidesync");
        if !bin.exists() {
            let status = std::process::Command::new(env!("CARGO"))
                .args(["build", "-p", "tidesync-cli", "--quiet"])
                .current_dir(&root)
                .status()
                .expect("cargo runs");
            assert!(status.success(), "building tidesync-cli failed");
        }
        bin
    })
    .clone()
}

#[test]
fn sync_cli_bulk_loads_both_partitions_and_prints_bulk_notifications() {
    let data = tempfile::tempdir().unwrap();
    let s = transcripts_server(data.path());
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(cli_binary())
        .args(["sync", "--url", &s.sync_url(), "--user", "lena", "--password", PASSWORD])
        .args(["--source", "Product:app", "--source", "Customer:user", "--bulk"])
        .arg("--db")
        .arg(dir.path().join("cli.db"))
        .args(["--json", "--notifications"])
        .output()
        .expect("tidesync runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let summary = lines.last().unwrap();
    assert_eq!(summary["ok"], true, "{summary}");
    assert_eq!(summary["sources"]["Product"]["objects"], 300);
    assert_eq!(summary["sources"]["Customer"]["objects"], 120);
    let bulk: Vec<String> = lines
        .iter()
        .filter(|n| n["sync_type"] == "bulk")
        .map(|n| {
            format!(
                "{}/{}",
                n["bulk_status"].as_str().unwrap(),
                n["partition"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(bulk.first().map(String::as_str), Some("start/"));
    assert_eq!(bulk.last().map(String::as_str), Some("complete/"));
    assert!(
        bulk.contains(&"ok/user".to_owned()) && bulk.contains(&"ok/app".to_owned()),
        "{bulk:?}"
    );
    // The objects came in the files: the incremental pages after them carried none.
    let paged: u64 = lines
        .iter()
        .filter(|n| n["sync_type"] == "incremental" && n["status"] == "in_progress")
        .map(|n| n["processed_count"].as_u64().unwrap())
        .sum();
    assert_eq!(paged, 0);
}

#[test]
fn engine_sync_of_one_source_runs_a_needed_bulk_sync_first() {
    let data = tempfile::tempdir().unwrap();
    let s = transcripts_server(data.path());
    let dir = tempfile::tempdir().unwrap();
    let e = engine_for(&s, dir.path());
    let r = e.sync_source_blocking("Customer", SyncOptions::default()).unwrap();
    assert_eq!(r.objects, 0, "Customer came in the user file, not in pages");
    assert_eq!(e.client().bulk_sync_state().unwrap(), BulkSyncState::Done);
    assert_eq!(e.client().store().count("Product", None).unwrap(), 300);
    assert_eq!(e.client().store().count("Customer", None).unwrap(), 120);
    // push_changes never starts a bulk sync.
    e.client().set_bulk_sync_state(BulkSyncState::Needed).unwrap();
    e.push_changes_blocking("Product").unwrap();
    assert_eq!(e.client().bulk_sync_state().unwrap(), BulkSyncState::Needed);
    e.shutdown();
}

#[test]
fn wiping_the_synced_data_makes_a_bulk_sync_needed_again() {
    let data = tempfile::tempdir().unwrap();
    let s = transcripts_server(data.path());
    let d = device(&s, "mia");
    d.client.sync_all(&SyncOptions::default(), None).unwrap();
    assert_eq!(d.client.bulk_sync_state().unwrap(), BulkSyncState::Done);
    d.client.logout(true).unwrap();
    assert_eq!(d.client.bulk_sync_state().unwrap(), BulkSyncState::Needed);
    d.client.login("nora", PASSWORD).unwrap();
    let r = d.client.sync_all(&SyncOptions::default(), None).unwrap();
    assert!(r.ok(), "{r:?}");
    assert_converged(&s, &d.client, "Customer", Some("nora"));
    assert_eq!(d.client.bulk_sync_state().unwrap(), BulkSyncState::Done);
}

// ---------------------------------------------------------------------------------------------
// Transcript 18: the requests the client sends

/// A loopback TCP proxy in front of `target` that records every request line it forwards.
struct Recording {
    addr: std::net::SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Recording {
    fn start(target: std::net::SocketAddr) -> Self {
        use std::io::{Read as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let l2 = lines.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let Ok(up) = std::net::TcpStream::connect(target) else {
                    continue;
                };
                let (mut c_read, mut c_write) = (conn.try_clone().unwrap(), conn);
                let (mut u_read, mut u_write) = (up.try_clone().unwrap(), up);
                let lines = l2.clone();
                std::thread::spawn(move || {
                    let mut buf = [0_u8; 16 * 1024];
                    let mut pending = Vec::new();
                    while let Ok(n) = c_read.read(&mut buf) {
                        if n == 0 || u_write.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        pending.extend_from_slice(&buf[..n]);
                        while let Some(i) = pending.windows(2).position(|w| w == b"\r\n") {
                            let line = String::from_utf8_lossy(&pending[..i]).into_owned();
                            // A request line may follow a body without a line break.
                            let start = ["GET /", "POST /"].iter().filter_map(|m| line.rfind(m)).max();
                            if let Some(at) = start.filter(|_| line.ends_with(" HTTP/1.1")) {
                                lines.lock().unwrap().push(line[at..].to_owned());
                            }
                            pending.drain(..i + 2);
                        }
                    }
                    let _ = u_write.shutdown(std::net::Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut u_read, &mut c_write);
                    let _ = c_write.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        Recording { addr, lines }
    }

    /// Request lines (method and path), the client id replaced by `CID`, timestamps by `TS`.
    fn normalized(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|l| {
                let path = l.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
                let mut out = String::new();
                let mut rest = path.as_str();
                // client_id=<32 hex>
                while let Some(i) = rest.find("client_id=") {
                    out.push_str(&rest[..i + 10]);
                    out.push_str("CID");
                    rest = rest[i + 10..].trim_start_matches(|c: char| c.is_ascii_hexdigit());
                }
                out.push_str(rest);
                // <name>_<digits>.data
                let mut norm = String::new();
                let mut chars = out.chars().peekable();
                while let Some(c) = chars.next() {
                    norm.push(c);
                    if c == '_' && chars.peek().is_some_and(char::is_ascii_digit) {
                        while chars.peek().is_some_and(char::is_ascii_digit) {
                            chars.next();
                        }
                        norm.push_str("TS");
                    }
                }
                norm
            })
            .collect()
    }
}

#[test]
fn the_client_sends_the_requests_of_transcript_18() {
    let data = tempfile::tempdir().unwrap();
    let s = transcripts_server(data.path());
    let proxy = Recording::start(s.addr());
    let url = format!("http://{}/application", proxy.addr);
    let dir = tempfile::tempdir().unwrap();
    let client = SyncClient::open(&dir.path().join("c.db"), SyncConfig::new(&url)).unwrap();
    for (name, p, prio) in [("Product", Partition::App, 1), ("Customer", Partition::User, 2)] {
        client
            .define_source(
                &SourceDef::new(name)
                    .priority(prio)
                    .partition(p)
                    .sync_type(SyncType::Bulk),
            )
            .unwrap();
    }
    client.login("olga", PASSWORD).unwrap();
    client.bulk_sync(&SyncOptions::default(), None).unwrap();
    let mut got = proxy.normalized();
    got.dedup(); // `wait` answers repeat the same request
    assert_eq!(
        got,
        vec![
            "POST /application/clientlogin",
            "GET /application/clientcreate",
            // user partition: `wait` until built, then the url (transcript 18, "sources=Customer")
            "GET /application/bulk_data?client_id=CID&partition=user&sources=Customer",
            "GET /data/application/olga/olga_TS.data.rzip",
            // app partition (transcript 18, "partition=app")
            "GET /application/bulk_data?client_id=CID&partition=app&sources=Product",
            "GET /data/application/application_TS.data.rzip",
        ]
    );
    // A second client while the file is fresh: the url at once, no `wait` (transcript 18, last).
    let before = proxy.lines.lock().unwrap().len();
    let dir2 = tempfile::tempdir().unwrap();
    let second = SyncClient::open(&dir2.path().join("c.db"), SyncConfig::new(&url)).unwrap();
    second
        .define_source(
            &SourceDef::new("Product")
                .partition(Partition::App)
                .sync_type(SyncType::Bulk),
        )
        .unwrap();
    second.login("pia", PASSWORD).unwrap();
    second.bulk_sync(&SyncOptions::default(), None).unwrap();
    let later = proxy.normalized()[before..].to_vec();
    assert_eq!(later.iter().filter(|l| l.contains("bulk_data")).count(), 1, "{later:?}");
    assert_eq!(second.store().count("Product", None).unwrap(), 300);
}
