//! Fault matrix: every route the client requests × every fault the reference server injects.
//!
//! Each cell starts a server with the transcripts' application and a client (`SyncClient`, page
//! size 100, read timeout 1 s) holding queued local changes (a create, and where the client has
//! synced before, an update and a delete — each with a unique marker), arms ONE fault on the
//! cell's route, and runs the operation that requests that route. The operation must end — with
//! success or a typed error, never a panic, never a hang (a watchdog fails the cell after 30 s).
//! Then the fault is cleared, the client syncs until it succeeds (at most 3 tries) and once more,
//! and the cell checks: the local store equals the backend for every source, nothing is left
//! queued or in error, and the server applied every local change exactly once.
//!
//! The table of results is written to `target/tmp/reliability/fault-matrix.md`; with
//! `TIDESYNC_UPDATE_RELIABILITY=1` it also replaces the matrix in `RELIABILITY.md`.

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use tidesync_core::protocol::rhoconnect::HttpConfig;
use tidesync_core::{
    Attrs, Error as CoreError, Partition, PushRegistration, Query, SearchRequest, SourceDef, SyncClient, SyncConfig,
    SyncOptions, SyncType,
};
use tidesync_server::{App, AppliedOp, FaultKind, FaultRule, Route, Server, ServerConfig};
use tidesync_tests::{Store, applied_by_marker, store_diff, store_of};

const PASSWORD: &str = "password";

/// Routes of the server this client never requests, with the reason (rows of the table).
const NOT_REQUESTED: [(&str, &str); 1] = [(
    "clientreset",
    "not requested: `database_client_reset` starts over with a new client id (clientcreate row)",
)];

/// The routes the client requests, with the operation that requests each.
const ROUTES: [Route; 8] = [
    Route::Login,
    Route::ClientCreate,
    Route::ClientRegister,
    Route::Query,
    Route::Push,
    Route::Search,
    Route::BulkData,
    Route::BulkFile,
];

fn faults() -> Vec<(&'static str, FaultKind)> {
    vec![
        ("latency 300 ms", FaultKind::Latency(Duration::from_millis(300))),
        ("500", FaultKind::Http500),
        ("dropped mid-body", FaultKind::DropMidBody),
        ("stall past read timeout", FaultKind::Stall(Duration::from_secs(20))),
        ("truncated JSON", FaultKind::TruncatedJson),
        ("malformed JSON", FaultKind::MalformedJson),
        ("duplicated page", FaultKind::DuplicatePage),
        ("apply then drop", FaultKind::ApplyThenDrop),
    ]
}

fn client_for(server: &Server, dir: &std::path::Path, bulk: bool) -> SyncClient {
    let mut config = SyncConfig::new(&server.sync_url());
    config.page_size = 100;
    config.http = HttpConfig {
        connect_timeout: Duration::from_secs(2),
        read_timeout: Duration::from_secs(1),
        ..HttpConfig::default()
    };
    let c = SyncClient::open(&dir.join("client.db"), config).expect("the client database opens");
    let product = SourceDef::new("Product").priority(1);
    // Bulk cells: Product (app partition) starts from the server's bulk file.
    let product = if bulk {
        product.partition(Partition::App).sync_type(SyncType::Bulk)
    } else {
        product
    };
    c.define_source(&product).expect("define");
    c.define_source(&SourceDef::new("Customer").priority(2))
        .expect("define");
    c
}

fn attrs(pairs: &[(&str, &str)]) -> Attrs {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn local(c: &SyncClient, source: &str) -> Store {
    c.find_all(source, &Query::all())
        .expect("find_all")
        .into_iter()
        .map(|o| (o.id, o.attrs))
        .collect()
}

fn sync_ok(c: &SyncClient) -> Result<(), String> {
    match c.sync_all(&SyncOptions::default(), None) {
        Ok(r) if r.ok() => Ok(()),
        Ok(r) => Err(format!("{r:?}")),
        Err(e) => Err(e.to_string()),
    }
}

/// The error kind as a short label.
fn kind_of(e: &CoreError) -> String {
    let dbg = format!("{e:?}");
    dbg.split([' ', '{', '(']).next().unwrap_or("error").to_owned()
}

/// The marked local changes of one cell.
struct Marks {
    create: String,
    update: Option<(String, String)>,
    delete: Option<String>,
}

fn queue_changes(c: &SyncClient, cell: &str, synced: bool) -> Marks {
    let create = format!("mx-{cell}");
    c.create(
        "Product",
        attrs(&[
            ("name", &format!("matrix {cell}")),
            ("ctag", &create),
            ("price", "1.00"),
        ]),
    )
    .expect("local create");
    if !synced {
        return Marks {
            create,
            update: None,
            delete: None,
        };
    }
    let utag = format!("mu-{cell}");
    c.store()
        .update("Product", "5", attrs(&[("utag", &utag)]))
        .expect("local update");
    assert!(c.store().destroy("Product", "9").expect("local delete"));
    Marks {
        create,
        update: Some(("5".into(), utag)),
        delete: Some("9".into()),
    }
}

/// Runs `f` on its own thread; `None` if it did not end within `limit`.
fn with_watchdog<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).ok()
}

/// One cell: `Ok(label of the first attempt)` or `Err(what went wrong)`.
fn run_cell(route: Route, fault_name: &str, fault: FaultKind) -> Result<String, String> {
    let server = Server::start(ServerConfig::new(App::transcripts())).map_err(|e| e.to_string())?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let bulk = matches!(route, Route::BulkData | Route::BulkFile);
    let c = std::sync::Arc::new(client_for(&server, dir.path(), bulk));
    let cell = format!("{}-{}", route.as_str(), fault_name.replace(' ', "_"));

    // Bring the client to the state in which the operation requests the route.
    let synced = !matches!(
        route,
        Route::Login | Route::ClientCreate | Route::BulkData | Route::BulkFile
    );
    if route != Route::Login {
        c.login("alice", PASSWORD).map_err(|e| format!("setup login: {e}"))?;
    }
    if synced {
        sync_ok(&c).map_err(|e| format!("setup sync: {e}"))?;
    }
    let marks = queue_changes(&c, &cell, synced);
    // A fault in the middle of a pull: skip the first page request.
    let skip = u32::from(route == Route::Query);
    server.faults().set(vec![FaultRule::once_after(route, fault, skip)]);

    let op_client = c.clone();
    let first = with_watchdog(Duration::from_secs(30), move || -> Result<(), CoreError> {
        let c = op_client;
        match route {
            Route::Login => c.login("alice", PASSWORD),
            Route::ClientRegister => c.register_push(&PushRegistration {
                device_pin: "pin-1".into(),
                device_type: "Android".into(),
                push_type: "fcm".into(),
            }),
            Route::Search => c
                .search(
                    &SearchRequest {
                        sources: vec!["Product".into()],
                        params: vec![("name".into(), "Product 2".into())],
                        sync_changes: false,
                    },
                    None,
                )
                .map(|_| ()),
            _ => match c.sync_all(&SyncOptions::default(), None) {
                Ok(r) if r.ok() => Ok(()),
                Ok(r) => Err(r
                    .sources
                    .into_iter()
                    .find_map(|(_, s)| s.err())
                    .unwrap_or(CoreError::Internal {
                        reason: "a source failed without an error".into(),
                    })),
                Err(e) => Err(e),
            },
        }
    })
    .ok_or("the operation hung (30 s)")?;
    let injected = server.faults().injected();
    server.faults().clear();
    server.faults().release_stalls();
    if matches!(fault, FaultKind::Stall(_)) {
        // The stalled request is now handled on the server; let it finish before the client
        // goes on (a request applied only after the client's retry is outside what RhoConnect's
        // protocol can detect: see RELIABILITY.md).
        std::thread::sleep(Duration::from_millis(300));
    }
    let label = match &first {
        Ok(()) => "ok".to_owned(),
        Err(e) => format!("{} error", kind_of(e)),
    };
    if injected == 0 {
        return Err(format!("the fault was never injected (first attempt: {label})"));
    }

    // Recovery: log in again if needed, then sync until it succeeds, then once more.
    if !c.is_logged_in().unwrap_or(false) {
        c.login("alice", PASSWORD)
            .map_err(|e| format!("login after the fault: {e}"))?;
    }
    let mut last = Err(String::from("not run"));
    for _ in 0..3 {
        last = sync_ok(&c);
        if last.is_ok() {
            break;
        }
    }
    last.map_err(|e| format!("no convergence after the fault: {e}"))?;
    sync_ok(&c).map_err(|e| format!("second sync: {e}"))?;

    // Convergence.
    for (source, user) in [("Product", None), ("Customer", Some("alice"))] {
        let expected: Store = store_of(server.backend().objects(source, user).map_err(|e| e.to_string())?);
        let actual = local(&c, source);
        if expected != actual {
            return Err(format!("{source} differs: {}", store_diff(&expected, &actual)));
        }
        let queued = c.pending_changes(source).map_err(|e| e.to_string())?;
        let errors = c.sync_errors(source).map_err(|e| e.to_string())?;
        if !queued.is_empty() || !errors.is_empty() {
            return Err(format!("{source}: queued {queued:?}, errors {errors:?}"));
        }
    }
    // Exactly once.
    let mut count = applied_by_marker(&server.backend().applied_log(), None);
    let mut expected = vec![((AppliedOp::Create, marks.create.clone()), 1)];
    if let Some((_, u)) = &marks.update {
        expected.push(((AppliedOp::Update, u.clone()), 1));
    }
    if let Some(d) = &marks.delete {
        expected.push(((AppliedOp::Delete, d.clone()), 1));
    }
    for (k, n) in &expected {
        let got = count.remove(k).unwrap_or(0);
        if got != *n {
            return Err(format!("{k:?} applied {got} times"));
        }
    }
    if !count.is_empty() {
        return Err(format!("unexpected applications: {count:?}"));
    }
    server.stop();
    Ok(label)
}

#[test]
fn fault_matrix_every_route_every_fault_converges_exactly_once() {
    let faults = faults();
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    // Cells run four at a time (each has its own server and database).
    let cells: Vec<(Route, &'static str, FaultKind)> = ROUTES
        .iter()
        .flat_map(|r| faults.iter().map(move |(n, f)| (*r, *n, *f)))
        .collect();
    let mut results: Vec<Option<Result<String, String>>> = vec![None; cells.len()];
    for (chunk_no, chunk) in cells.chunks(4).enumerate() {
        let handles: Vec<_> = chunk
            .iter()
            .map(|&(r, n, f)| std::thread::spawn(move || run_cell(r, n, f)))
            .collect();
        for (i, h) in handles.into_iter().enumerate() {
            results[chunk_no * 4 + i] = Some(h.join().unwrap_or_else(|_| Err("panicked".into())));
        }
    }
    let mut header = String::from("| route \\ fault |");
    let mut rule = String::from("| --- |");
    for (n, _) in &faults {
        header.push_str(&format!(" {n} |"));
        rule.push_str(" --- |");
    }
    rows.push(header);
    rows.push(rule);
    for (ri, r) in ROUTES.iter().enumerate() {
        let mut row = format!("| {} |", r.as_str());
        for (fi, (n, _)) in faults.iter().enumerate() {
            let cell = match results[ri * faults.len() + fi].take() {
                Some(Ok(label)) => format!(" {label} → converged, exactly once |"),
                Some(Err(e)) => {
                    failures.push(format!("{} × {n}: {e}", r.as_str()));
                    " **FAILED** |".to_owned()
                }
                None => " not run |".to_owned(),
            };
            row.push_str(&cell);
        }
        rows.push(row);
    }
    for (route, why) in NOT_REQUESTED {
        rows.push(format!("| {route} | {why} |{}", " |".repeat(faults.len() - 1)));
    }
    let table = rows.join("\n");
    println!("{table}");
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("reliability");
    if std::fs::create_dir_all(&out).is_ok() {
        let _ = std::fs::write(out.join("fault-matrix.md"), format!("{table}\n"));
    }
    if std::env::var("TIDESYNC_UPDATE_RELIABILITY").is_ok_and(|v| v == "1") {
        update_reliability_md(&table);
    }
    assert!(
        failures.is_empty(),
        "fault matrix cells failed:\n{}",
        failures.join("\n")
    );
}

/// Replaces the table between the matrix markers in `RELIABILITY.md`.
fn update_reliability_md(table: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../RELIABILITY.md");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return;
    };
    let (begin, end) = ("<!-- fault-matrix:begin -->", "<!-- fault-matrix:end -->");
    if let (Some(a), Some(b)) = (text.find(begin), text.find(end)) {
        let new = format!("{}{begin}\n{table}\n{}", &text[..a], &text[b..]);
        let _ = std::fs::write(&path, new);
    }
}
