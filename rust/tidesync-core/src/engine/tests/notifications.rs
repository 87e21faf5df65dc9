//! Exact notification sequences: a full sync, per-source routing, login results, a refused
//! session, a server error page, a dropped connection, object notifications, settings.

use std::sync::mpsc;

use tidesync_server::{FaultKind, FaultRule, Obj, Route};

use super::*;
use crate::engine::{CreatedObject, ErrorCode, LoginResult, ObjectNotification, SyncStatus::*};
use crate::error::Error;
use crate::sync::SyncOptions;

fn run_end() -> Step {
    step("*", Complete, true, 0, 0, None)
}

#[test]
fn engine_full_sync_sends_page_progress_then_one_final_per_source_then_complete() {
    let server = start_server();
    let d = alice(&server, 50);
    let rx = listen(&d, None);
    let report = d.sync_all_blocking(SyncOptions::default()).expect("the sync runs");
    assert!(report.ok(), "{report:?}");
    // The blocking call returns after the run's notifications were delivered.
    let got = drain(&rx);
    let mut want = progress("Product", 300, 50);
    want.push(step("Product", Ok, true, 0, 300, Some(300)));
    want.extend(progress("Customer", 120, 50));
    want.push(step("Customer", Ok, true, 0, 120, Some(120)));
    want.push(run_end());
    assert_eq!(steps(&got), want);
    let complete = got.last().expect("run event");
    assert!(complete.all_ok());
    let names: Vec<_> = complete.outcomes.iter().map(|o| o.source_name.as_str()).collect();
    assert_eq!(names, ["Product", "Customer"]);
    assert!(
        got.iter()
            .all(|n| n.error_code == ErrorCode::None && n.server_errors.is_empty())
    );
    // One JSON line per notification, with the CLI's fields.
    let v: serde_json::Value = serde_json::from_str(&got[0].to_json()).expect("JSON");
    for field in [
        "source_name",
        "status",
        "total_count",
        "processed_count",
        "cumulative_count",
        "error_code",
    ] {
        assert!(v.get(field).is_some(), "{field} in {v}");
    }
    // Nothing new: no progress, one final per source, complete.
    d.sync_all_blocking(SyncOptions::default()).expect("second sync");
    assert_eq!(
        steps(&drain(&rx)),
        vec![
            step("Product", Ok, true, 0, 0, Some(300)),
            step("Customer", Ok, true, 0, 0, Some(120)),
            run_end()
        ]
    );
    assert_in_sync(&server, &d);
}

#[test]
fn engine_per_source_listener_gets_its_source_until_the_final_event_then_star_does() {
    let server = start_server();
    let d = alice(&server, 100);
    let star = listen(&d, None);
    let replaced = listen(&d, Some("Product"));
    let product = listen(&d, Some("Product")); // replaces the previous one
    d.sync_all_blocking(SyncOptions::default()).expect("sync");
    let mut want = progress("Product", 300, 100);
    want.push(step("Product", Ok, true, 0, 300, Some(300)));
    assert_eq!(steps(&drain(&product)), want);
    assert!(drain(&replaced).is_empty(), "a replaced listener hears nothing");
    let mut want = progress("Customer", 120, 100);
    want.push(step("Customer", Ok, true, 0, 120, Some(120)));
    want.push(run_end());
    assert_eq!(steps(&drain(&star)), want);
    // The per-source listener was removed by Product's final event: `*` hears Product now.
    d.sync_source_blocking("Product", SyncOptions::default())
        .expect("sync Product");
    assert!(drain(&product).is_empty());
    assert_eq!(steps(&drain(&star)), vec![step("Product", Ok, true, 0, 0, Some(300))]);
    // A cancelled handle no longer hears; clear_notification silences `*`.
    let (tx, rx) = mpsc::channel();
    let h = d.set_notification(Some("Customer"), move |n: &SyncNotification| {
        let _ = tx.send(n.clone());
    });
    assert_eq!(h.source(), Some("Customer"));
    h.cancel();
    d.clear_notification(None);
    d.sync_all_blocking(SyncOptions::default()).expect("sync");
    assert!(rx.try_recv().is_err() && drain(&star).is_empty());
}

#[test]
fn engine_login_callback_reports_code_and_message_on_the_notifier_thread() {
    let server = start_server();
    let d = device_with(config(&server.sync_url(), 50));
    let (tx, rx) = mpsc::channel::<(LoginResult, Option<String>)>();
    let tx2 = tx.clone();
    d.login("alice", "wrong", move |r| {
        let _ = tx.send((r, std::thread::current().name().map(str::to_owned)));
    });
    let (r, thread) = rx.recv_timeout(WAIT).expect("login callback");
    assert_eq!(thread.as_deref(), Some("tidesync-notify"));
    assert_eq!(r.error_code, ErrorCode::Unauthorized);
    assert_eq!(r.error_code.rho_code(), 9);
    assert!(!r.error_message.is_empty(), "the server's message");
    println!("login refused: {}", serde_json::to_string(&r).expect("json"));
    assert!(matches!(r.clone().into_result(), Err(Error::Unauthorized { .. })));
    assert!(matches!(
        d.login_blocking("alice", "wrong"),
        Err(Error::Unauthorized { .. })
    ));
    assert!(!d.is_logged_in().expect("reads"));

    // A sync without a session: every source ends with client_not_logged_in, then complete.
    let star = listen(&d, None);
    let report = d.sync_all_blocking(SyncOptions::default()).expect("runs");
    assert!(!report.ok());
    let got = drain(&star);
    assert_eq!(
        steps(&got),
        vec![
            step("Product", Error, true, 0, 0, None),
            step("Customer", Error, true, 0, 0, None),
            run_end()
        ]
    );
    assert!(got[..2].iter().all(|n| n.error_code == ErrorCode::ClientNotLoggedIn));
    assert!(!got[2].all_ok());

    d.login("alice", "password", move |r| {
        let _ = tx2.send((r, None));
    });
    let (r, _) = rx.recv_timeout(WAIT).expect("login callback");
    assert!(r.is_ok());
    assert_eq!((r.error_code, r.error_message.as_str()), (ErrorCode::None, ""));
    assert_eq!(d.user_name().expect("reads").as_deref(), Some("alice"));
}

#[test]
fn engine_refused_session_ends_each_source_with_unauthorized_and_logs_out() {
    let server = start_server();
    let d = alice(&server, 50);
    // Synced once, so that the refusal comes on the query (a 401 on clientcreate does not end
    // the session yet: reported to the client's owner).
    d.sync_source_blocking("Customer", SyncOptions::default())
        .expect("first sync");
    d.store()
        .write(|tx| crate::store::meta::set_session(tx, Some("rhoconnect_session=forged"), None))
        .expect("forge the session");
    let star = listen(&d, None);
    let report = d.sync_all_blocking(SyncOptions::default()).expect("runs");
    assert!(!report.ok());
    let got = drain(&star);
    assert_eq!(
        steps(&got),
        vec![
            step("Product", Error, true, 0, 0, None),
            step("Customer", Error, true, 0, 0, Some(120)),
            run_end()
        ]
    );
    assert_eq!(got[0].error_code, ErrorCode::Unauthorized);
    assert_eq!(got[1].error_code, ErrorCode::Unauthorized);
    assert!(
        got[1].error_message.starts_with("skipped: "),
        "{}",
        got[1].error_message
    );
    println!("refused session: {}", got[0].to_json());
    assert!(!d.is_logged_in().expect("reads"), "a refused session is a logout");
    d.login_blocking("alice", "password").expect("login again");
    converge(&server, &d, 2);
}

#[test]
fn engine_server_error_page_is_a_non_final_error_event_then_ok() {
    let server = start_server();
    let d = alice(&server, 2000);
    d.sync_all_blocking(SyncOptions::default()).expect("initial sync");
    let refused = d.client().create("Product", product("error")).expect("local create");
    let rx = listen(&d, Some("Product"));
    d.sync_source_blocking("Product", SyncOptions::default())
        .expect("the sync succeeds despite the refusal");
    let got = drain(&rx);
    assert_eq!(
        steps(&got),
        vec![
            step("Product", Error, false, 0, 0, Some(300)),
            step("Product", Ok, true, 0, 0, Some(300))
        ]
    );
    let e = &got[0];
    assert_eq!(
        (e.error_code, e.error_code.rho_code()),
        (ErrorCode::CustomSyncServer, 8)
    );
    assert_eq!(e.server_errors.len(), 1, "{:?}", e.server_errors);
    let rec = &e.server_errors[0];
    assert_eq!(
        (rec.kind.as_str(), rec.object.as_deref()),
        ("create", Some(refused.id.as_str()))
    );
    assert_eq!(rec.attrs.get("name").map(String::as_str), Some("error"));
    assert!(!rec.message.is_empty());
    println!("server errors: {}", e.to_json());
    assert_eq!(d.client().sync_errors("Product").expect("stored"), e.server_errors);
}

#[test]
fn engine_dropped_connection_ends_the_source_with_a_network_error_and_the_run_goes_on() {
    let server = start_server();
    let d = alice(&server, 50);
    server
        .faults()
        .set(vec![FaultRule::once_after(Route::Query, FaultKind::DropMidBody, 2)]);
    let star = listen(&d, None);
    let report = d.sync_all_blocking(SyncOptions::default()).expect("runs");
    assert!(matches!(report.sources[0].1, Err(Error::Network { .. })), "{report:?}");
    assert!(report.sources[1].1.is_ok());
    let got = drain(&star);
    let mut want = progress("Product", 300, 50)[..2].to_vec();
    want.push(step("Product", Error, true, 0, 100, Some(300)));
    want.extend(progress("Customer", 120, 50));
    want.push(step("Customer", Ok, true, 0, 120, Some(120)));
    want.push(run_end());
    assert_eq!(steps(&got), want);
    let product_end = &got[2];
    assert_eq!(
        (product_end.error_code, product_end.error_code.rho_code()),
        (ErrorCode::Network, 1)
    );
    let run = got.last().expect("run event");
    assert!(!run.all_ok());
    assert_eq!(run.outcomes[0].error_code, ErrorCode::Network);
    server.faults().clear();
    converge(&server, &d, 2);
}

#[test]
fn engine_object_notifications_report_watched_creates_updates_and_deletes() {
    let server = start_server();
    let d = alice(&server, 2000);
    d.sync_all_blocking(SyncOptions::default()).expect("initial sync");
    let (tx, rx) = mpsc::channel();
    d.set_object_notify(move |n: &ObjectNotification| {
        let _ = tx.send(n.clone());
    });
    let created = d.client().create("Product", product("Watched")).expect("create");
    d.add_object_notify("Product", &["1".into(), "2".into(), "3".into(), created.id.clone()]);
    let backend = server.backend();
    backend
        .update("Product", None, "1", Obj::from_pairs([("price", "99.99")]))
        .expect("backend update");
    backend.delete("Product", None, "2").expect("backend delete");
    d.sync_source_blocking("Product", SyncOptions::default()).expect("sync");
    let n = rx.recv_timeout(WAIT).expect("object notification");
    assert_eq!(n.source_name, "Product");
    assert_eq!(n.created.len(), 1);
    let CreatedObject { temp_id, id } = &n.created[0];
    assert_eq!(temp_id, &created.id);
    assert_eq!(
        (n.updated.as_slice(), n.deleted.as_slice()),
        (&["1".to_owned()][..], &["2".to_owned()][..])
    );
    // The watch follows the server id.
    backend
        .update("Product", None, id, Obj::from_pairs([("price", "5.00")]))
        .expect("backend update");
    d.sync_source_blocking("Product", SyncOptions::default()).expect("sync");
    let n = rx.recv_timeout(WAIT).expect("object notification");
    assert_eq!(n.updated, vec![id.clone()]);
    d.clear_object_notify();
    backend
        .update("Product", None, "3", Obj::from_pairs([("price", "6.00")]))
        .expect("backend update");
    d.sync_source_blocking("Product", SyncOptions::default()).expect("sync");
    assert!(d.flush_notifications(WAIT));
    assert!(rx.try_recv().is_err());
    converge(&server, &d, 2);
}

#[test]
fn engine_settings_are_stored_take_effect_and_a_new_server_is_a_new_account() {
    let server = start_server();
    let d = alice(&server, 50);
    assert_eq!(d.set_poll_interval(5), 0);
    assert_eq!(d.set_poll_interval(0), 5);
    assert_eq!(d.set_page_size(100).expect("page size"), 50);
    assert!(d.set_page_size(0).is_err());
    assert!(d.set_ssl_verify_peer(true).expect("ssl"), "verification was on");
    let rx = listen(&d, Some("Product"));
    d.sync_source_blocking("Product", SyncOptions::default()).expect("sync");
    let mut want = progress("Product", 300, 100);
    want.push(step("Product", Ok, true, 0, 300, Some(300)));
    assert_eq!(steps(&drain(&rx)), want, "the new page size applies to the next run");
    let path = d.dir.path().join("client.db");
    d.shutdown();
    let Device { engine, dir } = d;
    drop(engine);

    // Reopened without a config: the stored settings.
    let e = open_engine(&path, EngineConfig::default());
    assert_eq!(
        (e.page_size(), e.poll_interval(), e.sync_server()),
        (100, 0, server.sync_url())
    );
    assert!(e.is_logged_in().expect("reads"));
    assert!(e.set_sync_server("nonsense").is_err());

    // Another server: client id, tokens, synced copies and session go.
    let other = start_server();
    assert_eq!(
        e.set_sync_server(&other.sync_url()).expect("new server"),
        server.sync_url()
    );
    assert!(e.wait_idle(WAIT));
    assert!(!e.is_logged_in().expect("reads"));
    assert_eq!(e.client().count("Product", None).expect("count"), 0);
    e.login_blocking("alice", "password").expect("login to the new server");
    converge(&other, &e, 2);
    e.shutdown();
    drop(e);
    // A config naming yet another URL at open is a new account as well.
    let e = open_engine(&path, config(&server.sync_url(), 100));
    assert!(!e.is_logged_in().expect("reads"));
    e.shutdown();
    drop(e);
    drop(dir);
}
