//! Threads: local writes during a sync, the sync mutex with polls and pages, stop during a
//! stalled download and around page application, listeners that panic or call back into the
//! engine, coalescing, shutdown and drop.

use std::sync::{Arc, Weak, mpsc};
use std::time::{Duration, Instant};

use tidesync_server::{App, DatasetSpec, FaultKind, FaultRule, Route, Server, ServerConfig};

use super::*;
use crate::engine::SyncStatus::{Cancelled, Complete, InProgress};
use crate::engine::{ListenerError, SyncListener, SyncStatus};
use crate::error::Error;
use crate::sync::{SyncOptions, SyncReport};

type Done = mpsc::Receiver<crate::Result<SyncReport>>;

fn sync_all_async(engine: &Engine) -> Done {
    let (tx, rx) = mpsc::channel();
    engine.sync_all(SyncOptions::default(), move |r| {
        let _ = tx.send(r);
    });
    rx
}

fn stall(after_queries: u32) -> Vec<FaultRule> {
    vec![FaultRule::once_after(
        Route::Query,
        FaultKind::Stall(Duration::from_secs(120)),
        after_queries,
    )]
}

#[test]
fn engine_local_writes_from_other_threads_during_a_sync_succeed_and_are_pushed() {
    let server = start_server();
    let d = alice(&server, 50);
    let star = listen(&d, None);
    let done = sync_all_async(&d);
    let first = next(&star, "first page");
    assert_eq!(
        (first.status, first.source_name.as_deref()),
        (InProgress, Some("Product"))
    );
    let writers: Vec<_> = (0..2)
        .map(|t| {
            let e = d.engine.clone();
            std::thread::spawn(move || {
                (0..5)
                    .map(|i| {
                        e.client()
                            .create("Product", product(&format!("Local {t}-{i}")))
                            .expect("a local write during a sync succeeds")
                    })
                    .count()
            })
        })
        .collect();
    let written: usize = writers.into_iter().map(|w| w.join().expect("writer")).sum();
    assert_eq!(written, 10);
    done.recv_timeout(WAIT).expect("the sync completes").expect("runs");
    until_run_end(&star);
    converge(&server, &d, 3);
    let names: Vec<String> = remote(&server, "Product", None)
        .into_values()
        .filter_map(|a| a.get("name").filter(|n| n.starts_with("Local ")).cloned())
        .collect();
    assert_eq!(names.len(), 10, "every local create reached the server: {names:?}");
}

#[test]
fn engine_sync_mutex_held_while_a_poll_fires_defers_the_sync_until_unlocked() {
    let server = start_server();
    let d = alice(&server, 50);
    let star = listen(&d, None);
    let lock = d.sync_lock();
    assert!(d.is_sync_mutex_locked());
    assert_eq!(d.set_poll_interval(1), 0);
    wait_state(&d, "waiting for the sync mutex", |s| {
        s == EngineState::WaitingForSyncLock
    });
    assert_eq!(d.stats().polls, 1);
    assert!(d.flush_notifications(WAIT));
    assert!(drain(&star).is_empty(), "no sync ran while the mutex was held");
    assert_eq!(d.client().count("Product", None).expect("count"), 0);
    assert_eq!(d.set_poll_interval(0), 1);
    lock.release();
    let got = until_run_end(&star);
    assert_eq!(got.last().map(|n| n.status), Some(Complete));
    assert_in_sync(&server, &d);
    // The non-guard pair.
    d.lock_sync_mutex();
    assert!(matches!(
        d.sync_all_blocking(SyncOptions::default()),
        Err(Error::InvalidInput { .. })
    ));
    d.unlock_sync_mutex().expect("held");
    assert!(d.unlock_sync_mutex().is_err(), "not held");
}

#[test]
fn engine_sync_mutex_waits_for_the_current_page_then_parks_the_sync() {
    let server = start_server();
    let d = alice(&server, 50);
    let faults = server.faults();
    faults.set(stall(2));
    let star = listen(&d, None);
    d.do_sync();
    spin_until("the third page request stalls", || faults.injected() == 1);
    let (tx, rx) = mpsc::channel();
    let e = d.engine.clone();
    let locker = std::thread::spawn(move || {
        let lock = e.try_sync_lock(WAIT);
        let _ = tx.send(());
        lock
    });
    assert!(
        rx.recv_timeout(Duration::from_millis(200)).is_err(),
        "the app waits while page 3 is in flight"
    );
    faults.release_stalls();
    rx.recv_timeout(WAIT).expect("the app gets the mutex after page 3");
    let lock = locker.join().expect("locker").expect("locked");
    wait_state(&d, "parked at the sync mutex", |s| s == EngineState::WaitingForSyncLock);
    assert_eq!(
        d.client().count("Product", None).expect("count"),
        150,
        "page 3 was finished, no more"
    );
    assert!(d.flush_notifications(WAIT));
    assert_eq!(steps(&drain(&star)), progress("Product", 300, 50)[..3].to_vec());
    drop(lock);
    let rest = until_run_end(&star);
    assert_eq!(rest.last().map(|n| n.status), Some(Complete));
    assert_in_sync(&server, &d);
}

#[test]
fn engine_stop_during_a_stalled_page_download_cancels_and_the_next_sync_resumes() {
    let server = start_server();
    let mut cfg = config(&server.sync_url(), 50);
    cfg.read_timeout = Some(Duration::from_secs(2));
    let d = device_with(cfg);
    d.login_blocking("alice", "password").expect("login");
    let faults = server.faults();
    faults.set(stall(2));
    let star = listen(&d, None);
    let done = sync_all_async(&d);
    spin_until("the third page request stalls", || faults.injected() == 1);
    let t0 = Instant::now();
    assert!(d.stop_sync(WAIT), "the worker ends, at the latest at the read timeout");
    let no_release = t0.elapsed();
    let report = done.recv_timeout(WAIT).expect("completion").expect("runs");
    assert!(
        report.sources.iter().all(|(_, r)| *r == Err(Error::Stopped)),
        "{report:?}"
    );
    let got = until_run_end(&star);
    let mut want = progress("Product", 300, 50)[..2].to_vec();
    want.push(step("Product", Cancelled, true, 0, 100, Some(300)));
    want.push(step("Customer", Cancelled, true, 0, 0, None));
    want.push(step("*", Cancelled, true, 0, 0, None));
    assert_eq!(steps(&got), want);
    assert!(
        got[2..]
            .iter()
            .all(|n| n.error_code == crate::engine::ErrorCode::CancelledByUser)
    );
    faults.release_stalls();

    // Stop, then the stalled answer arrives: it is dropped unapplied.
    faults.set(stall(0));
    d.do_sync();
    spin_until("the next page request stalls", || faults.injected() == 2);
    let t0 = Instant::now();
    assert!(!d.stop_sync(Duration::ZERO), "still in the request");
    faults.release_stalls();
    assert!(d.wait_idle(WAIT));
    let with_release = t0.elapsed();
    let got = until_run_end(&star);
    assert_eq!(got[0].status, Cancelled);
    assert_eq!(d.client().count("Product", None).expect("count"), 100);
    println!(
        "stop latency during a stalled page: {no_release:?} until the read timeout (2 s) ends the request; \
         {with_release:?} when the server answers right after the stop"
    );
    faults.clear();
    d.store().check_integrity().expect("sound");
    converge(&server, &d, 2);
}

#[test]
fn engine_stop_from_a_listener_around_page_application_keeps_pages_whole_and_resumes() {
    let spec = DatasetSpec {
        name: "Item".into(),
        count: 6000,
        attrs: Some(10),
        partition: None,
    };
    let server = Server::start(ServerConfig::new(App::generated(&[spec], 7))).expect("server");
    let dir = tempfile::tempdir().expect("dir");
    let engine = Arc::new(Engine::open(&dir.path().join("c.db"), config(&server.sync_url(), 2000)).expect("open"));
    engine.client().define_source(&SourceDef::new("Item")).expect("define");
    engine.login_blocking("alice", "password").expect("login");
    let weak: Weak<Engine> = Arc::downgrade(&engine);
    let (tx, rx) = mpsc::channel();
    engine.set_notification(None, move |n: &SyncNotification| {
        if n.status == InProgress
            && n.cumulative_count == 2000
            && let Some(e) = weak.upgrade()
        {
            // From the notifier thread, while the worker fetches or applies the next page.
            let t0 = Instant::now();
            let idle = e.stop_sync(WAIT);
            let _ = tx.send(Err((idle, t0.elapsed())));
        }
        let _ = tx.send(Ok(n.clone()));
    });
    engine.do_sync();
    let mut events = Vec::new();
    let mut stop = None;
    loop {
        match rx.recv_timeout(WAIT).expect("events") {
            Err(s) => stop = Some(s),
            Ok(n) => {
                let end = n.source_name.is_none();
                events.push(n);
                if end {
                    break;
                }
            }
        }
    }
    let (idle, latency) = stop.expect("the listener stopped the sync");
    assert!(idle);
    let end = events.iter().find(|n| n.is_final).expect("final");
    assert!(matches!(end.status, Cancelled | SyncStatus::Ok), "{end:?}");
    let local = engine.client().count("Item", None).expect("count");
    assert_eq!(local, end.cumulative_count, "only whole pages are in the store");
    println!(
        "stop from a listener after page 1: {} objects kept, engine idle after {latency:?}",
        end.cumulative_count
    );
    engine.store().check_integrity().expect("sound");
    engine.clear_notification(None);
    let r = engine
        .sync_source_blocking("Item", SyncOptions::default())
        .expect("resumes");
    assert_eq!(r.local_objects, 6000);
    let want: Data = remote(&server, "Item", None);
    assert_eq!(local_data(&engine, "Item"), want);
    engine.shutdown();
}

fn local_data(e: &Engine, source: &str) -> Data {
    local(e, source)
}

struct Refusing(mpsc::Sender<SyncNotification>);

impl SyncListener for Refusing {
    fn on_notification(&self, n: &SyncNotification) -> Result<(), ListenerError> {
        let _ = self.0.send(n.clone());
        Err(ListenerError("refused by the test".into()))
    }
}

#[test]
fn engine_panicking_or_failing_listeners_and_callbacks_do_not_break_the_engine() {
    let server = start_server();
    let d = alice(&server, 100);
    let (tx, rx) = mpsc::channel();
    d.set_notification(None, move |n: &SyncNotification| {
        if n.status == InProgress {
            panic!("listener panic (expected by the test)");
        }
        let _ = tx.send(n.clone());
    });
    let (ctx, crx) = mpsc::channel();
    d.set_notification(Some("Customer"), Refusing(ctx));
    d.sync_all(SyncOptions::default(), |_| {
        panic!("completion panic (expected by the test)")
    });
    let first: Vec<_> = until_run_end(&rx)
        .iter()
        .map(|n| (n.source_name.clone(), n.status))
        .collect();
    assert_eq!(first, [(Some("Product".into()), SyncStatus::Ok), (None, Complete)]);
    // (Waiting for the first run: a request made while it is still queued would coalesce.)
    let report = d
        .sync_all_blocking(SyncOptions::default())
        .expect("the engine still runs");
    assert!(report.ok());
    let star: Vec<_> = drain(&rx).iter().map(|n| (n.source_name.clone(), n.status)).collect();
    assert_eq!(
        star,
        [
            (Some("Product".into()), SyncStatus::Ok),
            (Some("Customer".into()), SyncStatus::Ok),
            (None, Complete)
        ]
    );
    assert_eq!(crx.try_iter().filter(|n| n.is_final).count(), 1);
    assert_eq!(d.state(), EngineState::Idle);
    assert_in_sync(&server, &d);
}

#[test]
fn engine_listener_may_call_back_into_the_engine_without_deadlock() {
    let server = start_server();
    let d = alice(&server, 100);
    let weak = Arc::downgrade(&d.engine);
    let (tx, rx) = mpsc::channel();
    d.set_notification(None, move |n: &SyncNotification| {
        let Some(e) = weak.upgrade() else { return };
        if n.status == InProgress && n.cumulative_count == 100 {
            e.lock_sync_mutex(); // the worker is never waiting for this thread
            let _ = e.state();
            e.unlock_sync_mutex().expect("held");
        }
        if n.source_name.is_none() && n.status == Complete {
            // A blocking call on the notifier thread gets its result directly.
            let r = e.sync_source_blocking("Customer", SyncOptions::default());
            let _ = tx.send(r.map(|r| r.name));
        }
    });
    d.do_sync();
    let r = rx.recv_timeout(WAIT).expect("the listener's blocking call returned");
    assert_eq!(r, Ok("Customer".to_owned()));
    assert!(d.wait_idle(WAIT));
}

#[test]
fn engine_thousand_rapid_sync_requests_coalesce_and_all_complete() {
    let server = start_server();
    let d = alice(&server, 2000);
    let (tx, rx) = mpsc::channel();
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let (e, tx) = (d.engine.clone(), tx.clone());
            std::thread::spawn(move || {
                for _ in 0..250 {
                    let tx = tx.clone();
                    e.sync_all(SyncOptions::default(), move |r| {
                        let _ = tx.send(r.map(|r| r.ok()));
                    });
                }
            })
        })
        .collect();
    for c in callers {
        c.join().expect("caller");
    }
    for i in 0..1000 {
        let r = rx
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("completion {i} missing"));
        assert_eq!(r, Ok(true));
    }
    let stats = d.stats();
    println!(
        "1000 sync requests: {} runs, {} coalesced",
        stats.sync_runs, stats.coalesced_requests
    );
    assert!(stats.sync_runs >= 1 && stats.sync_runs < 100, "{stats:?}");
    assert_eq!(stats.sync_runs + stats.coalesced_requests, 1000);
    assert_in_sync(&server, &d);
}

#[test]
fn engine_shutdown_with_a_sync_running_joins_and_the_database_resumes() {
    let server = start_server();
    let d = alice(&server, 50);
    let star = listen(&d, None);
    let done = sync_all_async(&d);
    next(&star, "first page");
    let t0 = Instant::now();
    d.shutdown();
    println!("shutdown during a sync took {:?}", t0.elapsed());
    assert_eq!(d.state(), EngineState::Closed);
    done.recv_timeout(WAIT)
        .expect("the running sync's completion was delivered")
        .expect("runs");
    let run = until_run_end(&star);
    assert!(matches!(run.last().map(|n| n.status), Some(Cancelled | Complete)));
    assert_eq!(
        d.sync_all_blocking(SyncOptions::default()),
        Err(Error::Stopped),
        "closed"
    );
    let path = d.dir.path().join("client.db");
    let e = open_engine(&path, EngineConfig::default());
    e.store().check_integrity().expect("sound");
    converge(&server, &e, 2);
    e.shutdown();
}

#[test]
fn engine_drop_with_a_stalled_sync_returns_at_once() {
    let server = start_server();
    let d = alice(&server, 50);
    let faults = server.faults();
    faults.set(stall(0));
    d.do_sync();
    spin_until("the first page request stalls", || faults.injected() == 1);
    let Device { engine, dir } = d;
    let t0 = Instant::now();
    drop(engine);
    let took = t0.elapsed();
    println!("dropping the engine during a stalled request took {took:?}");
    assert!(
        took < Duration::from_secs(10),
        "drop must not wait for the stalled request"
    );
    faults.release_stalls();
    faults.clear();
    let e = open_engine(&dir.path().join("client.db"), EngineConfig::default());
    converge(&server, &e, 2);
    e.shutdown();
}
