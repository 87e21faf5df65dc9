//! Load: 200 TideSync clients (`SyncClient`, each with its own database, 100 users × 2
//! installations) against one reference server, all at once: each logs in, syncs, pushes a
//! create and an update of its own, and syncs again; then, after every client has pushed, each
//! syncs once more and must hold exactly the backend's data. No request may fail, every change is
//! applied exactly once, and the whole run is bounded in time.

use std::sync::{Arc, Barrier, mpsc};
use std::time::{Duration, Instant};

use tidesync_core::protocol::rhoconnect::HttpConfig;
use tidesync_core::{Attrs, Query, SourceDef, SyncClient, SyncConfig, SyncOptions};
use tidesync_server::AppliedOp;
use tidesync_tests::{Store, TestServer, store_diff};

const CLIENTS: usize = 200;
const PRODUCTS: usize = 400;
/// All 200 clients must be done by then (debug build, 2 cores).
const BUDGET: Duration = Duration::from_secs(240);

fn local(c: &SyncClient, source: &str) -> Result<Store, String> {
    Ok(c.find_all(source, &Query::all())
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|o| (o.id, o.attrs))
        .collect())
}

fn sync(c: &SyncClient, what: &str) -> Result<(), String> {
    let r = c
        .sync_all(&SyncOptions::default(), None)
        .map_err(|e| format!("{what}: {e}"))?;
    if r.ok() { Ok(()) } else { Err(format!("{what}: {r:?}")) }
}

fn attrs(pairs: &[(&str, String)]) -> Attrs {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
}

/// One installation; returns the user name.
fn run_client(n: usize, url: &str, pushed: &Barrier, server: &TestServer) -> Result<String, String> {
    let user = format!("user{:03}", n / 2);
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut config = SyncConfig::new(url);
    config.page_size = 200;
    config.http = HttpConfig {
        read_timeout: Duration::from_secs(120),
        ..HttpConfig::default()
    };
    let c = SyncClient::open(&dir.path().join("client.db"), config).map_err(|e| e.to_string())?;
    for def in [
        SourceDef::new("Product").priority(1),
        SourceDef::new("Customer").priority(2),
    ] {
        c.define_source(&def).map_err(|e| e.to_string())?;
    }
    let outcome = (|| {
        c.login(&user, "password").map_err(|e| format!("login: {e}"))?;
        sync(&c, "first sync")?;
        c.create(
            "Product",
            attrs(&[("name", format!("load {n}")), ("ctag", format!("load-{n}"))]),
        )
        .map_err(|e| e.to_string())?;
        // Each installation updates its own product: no two clients edit the same object.
        c.store()
            .update("Product", &(n + 1).to_string(), attrs(&[("utag", format!("load-{n}"))]))
            .map_err(|e| e.to_string())?;
        sync(&c, "push")?;
        Ok::<(), String>(())
    })();
    // Everyone waits for everyone (even after a failure), then pulls what the others pushed.
    pushed.wait();
    outcome?;
    sync(&c, "final sync")?;
    sync(&c, "settling sync")?;
    for (source, u) in [("Product", None), ("Customer", Some(user.as_str()))] {
        let expected: Store = server.backend_store(source, u);
        let actual = local(&c, source)?;
        if expected != actual {
            return Err(format!("{user} {source}: {}", store_diff(&expected, &actual)));
        }
    }
    if !c.pending_changes("Product").map_err(|e| e.to_string())?.is_empty() {
        return Err(format!("{user}: changes left in the queue"));
    }
    Ok(user)
}

#[test]
fn two_hundred_concurrent_clients_sync_push_and_converge() {
    let server = Arc::new(TestServer::generated(&format!("Product={PRODUCTS},Customer=30"), 7));
    let url = server.server.sync_url();
    let started = Instant::now();
    let barrier = Arc::new(Barrier::new(CLIENTS));
    let (tx, rx) = mpsc::channel();
    for n in 0..CLIENTS {
        let (tx, url, barrier, server) = (tx.clone(), url.clone(), barrier.clone(), server.clone());
        std::thread::Builder::new()
            .name(format!("load-client-{n}"))
            .stack_size(512 * 1024)
            .spawn(move || {
                let r = run_client(n, &url, &barrier, &server);
                let _ = tx.send((n, r));
            })
            .expect("a client thread starts");
    }
    drop(tx);
    let mut failures = Vec::new();
    let mut done = 0;
    while done < CLIENTS {
        let left = (started + BUDGET).saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((_, Ok(_))) => done += 1,
            Ok((n, Err(e))) => {
                done += 1;
                failures.push(format!("client {n}: {e}"));
            }
            Err(_) => panic!("only {done} of {CLIENTS} clients finished within {BUDGET:?}"),
        }
    }
    assert!(
        failures.is_empty(),
        "{} clients failed:\n{}",
        failures.len(),
        failures.join("\n")
    );

    let log = server.server.backend().applied_log();
    let creates = log.iter().filter(|a| a.op == AppliedOp::Create).count();
    let updates = log.iter().filter(|a| a.op == AppliedOp::Update).count();
    assert_eq!(
        (creates, updates),
        (CLIENTS, CLIENTS),
        "each change applied exactly once"
    );
    let tags: std::collections::BTreeSet<&str> = log.iter().filter_map(|a| a.attrs.get("ctag")).collect();
    assert_eq!(tags.len(), CLIENTS, "every client's create is on the server once");
    println!(
        "load: {CLIENTS} clients synced, pushed and converged in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
