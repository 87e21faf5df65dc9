//! Concurrency: 50 clients (25 users × 2 installations), each with its own login and client id,
//! pull the same generated 10,000 × 10 data set at the same time; each must end up holding
//! exactly the backend's data, and no request may fail.

use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use tidesync_tests::{Client, Http, Store, TestServer, store_diff};

const CLIENTS: usize = 50;
const PAGE_SIZE: usize = 2000;
/// The whole test (all clients) must be done by then; each request is bounded by the same budget.
const BUDGET: Duration = Duration::from_secs(100);

/// What one client thread reports.
struct Outcome {
    client: usize,
    result: Result<usize, String>,
}

fn run_client(n: usize, base: &str, expected: &Store, deadline: Instant) -> Result<usize, String> {
    let user = format!("user{:02}", n / 2);
    let remaining = deadline.saturating_duration_since(Instant::now());
    let mut c = Client::new(Http::with_timeout(base, remaining.max(Duration::from_secs(1))));
    c.deadline = Some(deadline);
    c.login(&user, "password").map_err(|e| e.to_string())?;
    c.client_create().map_err(|e| e.to_string())?;
    let mut store = Store::new();
    // 10,000 objects at 2,000 per page: 5 pages and the final one; 20 is a generous bound.
    let report = c.sync("Item", PAGE_SIZE, &mut store, 20).map_err(|e| e.to_string())?;
    if Instant::now() > deadline {
        return Err("finished after the deadline".into());
    }
    if store != *expected {
        return Err(format!("{user}: {}", store_diff(expected, &store)));
    }
    if report.total_count != expected.len() as u64 {
        return Err(format!(
            "{user}: total_count {} (backend holds {})",
            report.total_count,
            expected.len()
        ));
    }
    Ok(report.pages)
}

#[test]
fn fifty_concurrent_clients_each_receive_the_whole_dataset() {
    let server = TestServer::generated("Item=10000x10", 42);
    let expected = Arc::new(server.backend_store("Item", None));
    assert_eq!(expected.len(), 10_000, "the generated data set has 10,000 objects");
    assert!(
        expected.values().all(|o| o.len() == 10),
        "every object has 10 attributes"
    );

    let start = Instant::now();
    let deadline = start + BUDGET;
    let (tx, rx) = mpsc::channel::<Outcome>();
    for n in 0..CLIENTS {
        let tx = tx.clone();
        let base = server.url();
        let expected = expected.clone();
        std::thread::Builder::new()
            .name(format!("client-{n}"))
            .spawn(move || {
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    run_client(n, &base, &expected, deadline)
                }))
                .unwrap_or_else(|_| Err("the client thread panicked".into()));
                let _ = tx.send(Outcome { client: n, result });
            })
            .expect("spawn a client thread");
    }
    drop(tx);

    let mut failures = Vec::new();
    let mut done = 0;
    while done < CLIENTS {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Outcome { client, result }) => {
                done += 1;
                match result {
                    Ok(6) => {}
                    Ok(pages) => failures.push(format!(
                        "client {client}: {pages} pages, expected 5 pages of 2,000 and the final page"
                    )),
                    Err(e) => failures.push(format!("client {client}: {e}")),
                }
            }
            Err(_) => {
                panic!("only {done} of {CLIENTS} clients finished within {BUDGET:?}; failures so far: {failures:?}")
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {CLIENTS} clients failed:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
    assert_eq!(server.server.faults().injected(), 0, "no fault was injected");
    eprintln!(
        "concurrency: {CLIENTS} clients × 10,000 objects synced in {:?}",
        start.elapsed()
    );
}
