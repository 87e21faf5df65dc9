//! What the client writes to the log, and what stays in the database file after a wipe.
//!
//! Its own test binary: it installs TideSync's logging at trace level — the same path apps get
//! through `init_logging` (a `LogSink` here; `android_logger` and `oslog` go through the same
//! filter) — with a sink that records every line of the client side (TideSync, ureq, rustls…;
//! the in-process reference server's own lines are left out by target). Tests run one at a time
//! here (a mutex), so each one reads only its own lines.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use parking_lot::Mutex;
use tidesync_core::protocol::rhoconnect::HttpConfig;
use tidesync_core::{Attrs, Query, SourceDef, SyncClient, SyncConfig, SyncOptions, UpdateErrorAction};
use tidesync_ffi::{LogLevel, LogSink, init_logging};
use tidesync_server::adapter::FixedPassword;
use tidesync_server::{App, Server, ServerConfig};

const PASSWORD: &str = "Pw-7f3a9c1e-very-secret";

static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());
static SERIAL: Mutex<()> = Mutex::new(());

struct Capture;

/// Targets of the reference server running in this process (not the client's log).
const SERVER_TARGETS: [&str; 6] = ["tidesync_server", "hyper", "axum", "tower", "tokio", "mio"];

impl LogSink for Capture {
    fn log(&self, level: LogLevel, target: String, line: String) {
        if SERVER_TARGETS.iter().any(|t| target.starts_with(t)) {
            return;
        }
        let level = format!("{level:?}").to_uppercase();
        LINES.lock().push(format!("{level} {target} {line}"));
    }
}

fn capture() -> parking_lot::MutexGuard<'static, ()> {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        init_logging(LogLevel::Trace, Some(Arc::new(Capture)));
    });
    let guard = SERIAL.lock();
    LINES.lock().clear();
    guard
}

fn server() -> Server {
    let mut app = App::transcripts();
    app.auth = Arc::new(FixedPassword(PASSWORD.into()));
    Server::start(ServerConfig::new(app)).expect("the server binds a loopback port")
}

fn client(server: &Server, dir: &std::path::Path) -> SyncClient {
    let c = SyncClient::open(&dir.join("client.db"), SyncConfig::new(&server.sync_url())).expect("open");
    c.define_source(&SourceDef::new("Product").priority(1)).unwrap();
    c.define_source(&SourceDef::new("Customer").priority(2)).unwrap();
    c
}

fn attrs(pairs: &[(&str, &str)]) -> Attrs {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

/// Values of synced objects worth looking for: long enough not to match ordinary words.
fn distinctive_values(c: &SyncClient) -> Vec<String> {
    let mut out: Vec<String> = ["Product", "Customer"]
        .iter()
        .flat_map(|s| c.find_all(s, &Query::all()).unwrap())
        .flat_map(|o| o.attrs.into_values())
        .filter(|v| v.len() >= 8 && v.chars().any(|ch| ch.is_ascii_alphabetic()))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// A full session: login, pull, local create/update/delete pushed, a refused create and a
/// refused update (server errors), their resolution, another sync.
fn full_session(server: &Server, c: &SyncClient) {
    c.login("alice", PASSWORD).unwrap();
    assert!(c.sync_all(&SyncOptions::default(), None).unwrap().ok());
    c.create(
        "Product",
        attrs(&[("name", "LocalSecretName-4b1d"), ("sku", "LocalSecretSku-77aa")]),
    )
    .unwrap();
    c.store()
        .update("Product", "5", attrs(&[("price", "SecretPrice-31337")]))
        .unwrap();
    assert!(c.store().destroy("Product", "9").unwrap());
    c.create("Product", attrs(&[("name", "error"), ("sku", "RefusedSecretSku-0c0c")]))
        .unwrap();
    c.store()
        .update(
            "Product",
            "6",
            attrs(&[("name", "conflict"), ("brand", "RefusedSecretBrand-1e1e")]),
        )
        .unwrap();
    let _ = c.sync_all(&SyncOptions::default(), None).unwrap();
    let _ = c.sync_all(&SyncOptions::default(), None).unwrap();
    c.on_sync_update_error("Product", &["6".to_owned()], UpdateErrorAction::Rollback)
        .unwrap();
    let _ = c.sync_all(&SyncOptions::default(), None).unwrap();
    assert!(server.backend().count("Product", None).unwrap() > 0);
}

#[test]
fn secrets_never_reach_the_log_at_trace_level() {
    let _serial = capture();
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let c = client(&server, dir.path());
    full_session(&server, &c);

    let cookie: String = rusqlite::Connection::open(dir.path().join("client.db"))
        .unwrap()
        .query_row("SELECT session FROM client_info", [], |r| r.get(0))
        .unwrap();
    let cookie_value = cookie.split_once('=').map_or(cookie.as_str(), |(_, v)| v).to_owned();
    assert!(cookie_value.len() > 20, "a session cookie is stored: {cookie}");
    let mut secrets = vec![
        PASSWORD.to_owned(),
        cookie_value.chars().take(24).collect::<String>(),
        "LocalSecretName-4b1d".into(),
        "LocalSecretSku-77aa".into(),
        "SecretPrice-31337".into(),
        "RefusedSecretSku-0c0c".into(),
        "RefusedSecretBrand-1e1e".into(),
    ];
    secrets.extend(distinctive_values(&c));
    let lines = LINES.lock().clone();
    assert!(
        lines.iter().any(|l| l.contains("logged in")) && lines.iter().any(|l| l.contains("page 1 applied")),
        "the client logged its steps: {lines:?}"
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.starts_with("TRACE ureq") || l.starts_with("DEBUG ureq")),
        "request dumps are filtered out"
    );
    let leaks: Vec<(&String, &String)> = lines
        .iter()
        .flat_map(|l| secrets.iter().filter(|s| l.contains(s.as_str())).map(move |s| (s, l)))
        .collect();
    assert!(
        leaks.is_empty(),
        "secrets in the log ({} lines checked for {} values): {:?}",
        lines.len(),
        secrets.len(),
        &leaks[..leaks.len().min(5)]
    );
}

#[test]
fn logout_with_wipe_leaves_no_user_data_in_the_database_files() {
    let _serial = capture();
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let c = client(&server, dir.path());
    full_session(&server, &c);
    let mut values = distinctive_values(&c);
    values.extend(["LocalSecretName-4b1d".to_owned(), "SecretPrice-31337".into()]);
    assert!(values.len() > 50, "the store held user data: {}", values.len());
    let user_in_file = |bytes: &[u8]| {
        values
            .iter()
            .filter(|v| bytes.windows(v.len()).any(|w| w == v.as_bytes()))
            .cloned()
            .collect::<Vec<_>>()
    };
    let files = || -> Vec<u8> {
        let mut all = Vec::new();
        for suffix in ["", "-wal", "-journal"] {
            if let Ok(b) = std::fs::read(dir.path().join(format!("client.db{suffix}"))) {
                all.extend(b);
            }
        }
        all
    };
    assert!(
        !user_in_file(&files()).is_empty(),
        "before the wipe the data is in the file"
    );

    c.logout(true).unwrap();
    let found = user_in_file(&files());
    assert!(found.is_empty(), "after logout(wipe) the file still holds: {found:?}");
    drop(c);
    let found = user_in_file(&files());
    assert!(found.is_empty(), "after close the file still holds: {found:?}");
}

#[test]
fn verification_off_is_logged_at_warn() {
    let _serial = capture();
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let mut config = SyncConfig::new(&server.sync_url());
    config.http = HttpConfig {
        ssl_verify_peer: false,
        ..HttpConfig::default()
    };
    let _c = SyncClient::open(&dir.path().join("client.db"), config).unwrap();
    let lines = LINES.lock().clone();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("WARN") && l.contains("verification is OFF")),
        "{lines:?}"
    );
}
