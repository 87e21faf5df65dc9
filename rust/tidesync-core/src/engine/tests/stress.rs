//! Random interleavings of app calls, syncs, stops, polls and the sync mutex from several
//! threads. Seeded: the seed is printed, and `TIDESYNC_STRESS_SEED=<n>` replays it. Passes when
//! no thread hangs (every wait has a deadline) and the store ends equal to the server.

use std::sync::mpsc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::error::Error;
use crate::sync::SyncOptions;

const THREADS: u64 = 4;
/// Operations per thread (`TIDESYNC_STRESS_OPS` overrides).
const OPS: usize = 60;

/// A local write, retried when a concurrent `stop_sync` interrupted it (the store's interrupt
/// handle aborts whatever runs on the writer connection, app writes included).
fn write<T>(what: &str, mut f: impl FnMut() -> crate::Result<T>) -> Option<T> {
    for _ in 0..20 {
        match f() {
            Ok(v) => return Some(v),
            Err(Error::Stopped) => continue,
            Err(Error::NotFound { .. }) => return None,
            Err(e) => panic!("{what}: {e}"),
        }
    }
    panic!("{what}: interrupted 20 times in a row");
}

fn app_thread(engine: Arc<Engine>, seed: u64, t: u64, ops: usize) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(seed ^ (t + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut created = Vec::new();
    for i in 0..ops {
        match rng.random_range(0..11u32) {
            0 => engine.do_sync(),
            1 => {
                let source = if rng.random_bool(0.5) { "Product" } else { "Customer" };
                engine.sync_source(source, SyncOptions::default(), |_| {});
            }
            2 | 3 => {
                let name = format!("Stress {t}-{i}");
                if write("create", || engine.client().create("Product", product(&name))).is_some() {
                    created.push(name);
                }
            }
            4 => {
                let id = rng.random_range(1..=300u32).to_string();
                let q = rng.random_range(0..1000u32).to_string();
                write("update", || {
                    engine
                        .client()
                        .store()
                        .update("Product", &id, attrs(&[("quantity", &q)]))
                });
            }
            5 => {
                let id = rng.random_range(200..=300u32).to_string();
                write("destroy", || engine.client().store().destroy("Product", &id));
            }
            6 => {
                let wait = Duration::from_millis(rng.random_range(0..50));
                engine.stop_sync(wait);
            }
            7 => {
                engine.set_poll_interval(rng.random_range(0..2));
            }
            8 => {
                let lock = engine.try_sync_lock(WAIT).expect("the sync mutex within the deadline");
                let _ = engine.client().count("Product", None);
                lock.release();
            }
            9 => engine.push_changes("Product", |_| {}),
            _ => match engine.sync_all_blocking(SyncOptions::default()) {
                Ok(_) | Err(Error::Stopped) => {}
                Err(e) => panic!("sync_all_blocking: {e}"),
            },
        }
    }
    created
}

#[test]
fn engine_stress_random_interleavings_end_in_the_server_state_without_deadlock() {
    let seed = std::env::var("TIDESYNC_STRESS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x7D5E_ED01_u64);
    let ops = std::env::var("TIDESYNC_STRESS_OPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(OPS);
    println!("engine stress seed {seed} (replay: TIDESYNC_STRESS_SEED={seed}), {ops} operations per thread");
    let server = start_server();
    let d = alice(&server, 50);
    let _star = listen(&d, None);
    let (tx, rx) = mpsc::channel();
    for t in 0..THREADS {
        let (e, tx) = (d.engine.clone(), tx.clone());
        std::thread::Builder::new()
            .name(format!("stress-app-{t}"))
            .spawn(move || {
                let created = app_thread(e, seed, t, ops);
                let _ = tx.send(created);
            })
            .expect("spawn");
    }
    let mut created = Vec::new();
    for _ in 0..THREADS {
        let c = rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("an app thread did not finish (seed {seed}): hang or deadlock"));
        created.extend(c);
    }
    d.set_poll_interval(0);
    assert!(d.wait_idle(WAIT), "idle after the storm (seed {seed})");
    d.store().check_integrity().expect("sound");
    converge(&server, &d, 4);
    let on_server: std::collections::BTreeSet<String> = remote(&server, "Product", None)
        .into_values()
        .filter_map(|a| a.get("name").cloned())
        .collect();
    for name in &created {
        assert!(
            on_server.contains(name),
            "{name} never reached the server (seed {seed})"
        );
    }
    println!("engine stress: {:?}, {} local creates", d.stats(), created.len());
    d.shutdown();
}
