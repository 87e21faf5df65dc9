//! The sync mutex (RhoConnect `lock_sync_mutex`, spec §11.2): a gate flag plus a condvar, never
//! a lock guard held across calls.
//!
//! The worker passes the gate at *boundaries*: before a job or a source starts and after each
//! committed page. Between two boundaries it is "in a segment" (requests, one page's
//! transaction). The app's lock waits until the worker is not in a segment — it finishes its
//! current page — and then holds the gate; the worker waits at its next boundary until every
//! holder released it, or the sync is stopped. No partial page is committed to serve the app
//! (spec H2).
//!
//! Holders are counted (nested locks are fine, from any thread) and remembered by thread, so
//! that a thread holding the gate gets an error instead of a deadlock when it asks for a
//! blocking sync.

use std::sync::Arc;
use std::thread::ThreadId;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

use crate::error::{Error, Result};

#[derive(Debug, Default)]
struct GateState {
    /// One entry per held lock.
    holders: Vec<ThreadId>,
    /// App threads waiting for the worker's current segment to end.
    waiting: usize,
    /// The worker is between two boundaries.
    in_segment: bool,
}

/// The gate shared by the engine, its worker and [`SyncLock`]s.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    m: Mutex<GateState>,
    cv: Condvar,
}

impl Gate {
    /// Takes the gate: waits for the worker's current segment to end (until `deadline`, if
    /// any). False when the deadline passed first.
    pub(crate) fn acquire(&self, deadline: Option<Instant>) -> bool {
        let mut g = self.m.lock();
        g.waiting += 1;
        while g.in_segment {
            match deadline {
                Some(d) => {
                    if self.cv.wait_until(&mut g, d).timed_out() && g.in_segment {
                        g.waiting -= 1;
                        self.cv.notify_all();
                        return false;
                    }
                }
                None => self.cv.wait(&mut g),
            }
        }
        g.waiting -= 1;
        g.holders.push(std::thread::current().id());
        true
    }

    /// Releases one hold, preferably the calling thread's.
    pub(crate) fn release(&self, by: ThreadId) -> Result<()> {
        let mut g = self.m.lock();
        let pos = g
            .holders
            .iter()
            .position(|t| *t == by)
            .or(if g.holders.is_empty() { None } else { Some(0) });
        match pos {
            Some(i) => {
                g.holders.swap_remove(i);
                self.cv.notify_all();
                Ok(())
            }
            None => Err(Error::InvalidInput {
                reason: "unlock_sync_mutex without lock_sync_mutex".into(),
            }),
        }
    }

    /// True when the calling thread holds the gate.
    pub(crate) fn held_by_current_thread(&self) -> bool {
        let me = std::thread::current().id();
        self.m.lock().holders.contains(&me)
    }

    /// True when anyone holds the gate.
    pub(crate) fn is_held(&self) -> bool {
        !self.m.lock().holders.is_empty()
    }

    /// The worker at a boundary: ends its segment, waits while the gate is held or wanted,
    /// then starts the next segment. `on_wait(true/false)` reports the start and end of a wait
    /// (called under the gate lock: lock order gate → state). False, without starting a
    /// segment, when `stopped()` became true.
    pub(crate) fn boundary(&self, stopped: &dyn Fn() -> bool, on_wait: &dyn Fn(bool)) -> bool {
        let mut g = self.m.lock();
        if g.in_segment {
            g.in_segment = false;
            self.cv.notify_all();
        }
        let mut waited = false;
        while (!g.holders.is_empty() || g.waiting > 0) && !stopped() {
            if !waited {
                waited = true;
                on_wait(true);
            }
            self.cv.wait(&mut g);
        }
        if waited {
            on_wait(false);
        }
        if stopped() {
            return false;
        }
        g.in_segment = true;
        true
    }

    /// The worker finished a job: no segment.
    pub(crate) fn idle(&self) {
        let mut g = self.m.lock();
        if g.in_segment {
            g.in_segment = false;
            self.cv.notify_all();
        }
    }

    /// Wakes a worker waiting at a boundary (after a stop was signalled).
    pub(crate) fn wake(&self) {
        let _g = self.m.lock();
        self.cv.notify_all();
    }
}

/// A held sync mutex (from [`crate::engine::Engine::sync_lock`]): while it exists no sync
/// starts and a running sync waits after its current page. Released by [`SyncLock::release`]
/// or on drop.
#[derive(Debug)]
#[must_use = "the sync mutex is released when the SyncLock is dropped"]
pub struct SyncLock {
    gate: Arc<Gate>,
    thread: ThreadId,
    held: bool,
}

impl SyncLock {
    pub(crate) fn new(gate: Arc<Gate>) -> Self {
        Self {
            gate,
            thread: std::thread::current().id(),
            held: true,
        }
    }

    /// Releases the sync mutex now.
    pub fn release(mut self) {
        self.release_inner();
    }

    fn release_inner(&mut self) {
        if std::mem::take(&mut self.held)
            && let Err(e) = self.gate.release(self.thread)
        {
            log::error!("releasing a SyncLock: {e}");
        }
    }
}

impl Drop for SyncLock {
    fn drop(&mut self) {
        self.release_inner();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    #[test]
    fn engine_gate_app_lock_waits_for_the_segment_to_end() {
        let gate = Gate::default();
        assert!(
            gate.boundary(&|| false, &|_| {}),
            "free gate: the worker enters a segment"
        );
        assert!(
            !gate.acquire(Some(Instant::now() + Duration::from_millis(20))),
            "worker in a segment"
        );
        gate.idle();
        assert!(
            gate.acquire(Some(Instant::now() + Duration::from_secs(10))),
            "segment over"
        );
        assert!(gate.held_by_current_thread());
        gate.release(std::thread::current().id()).expect("held");
        assert!(gate.release(std::thread::current().id()).is_err(), "not held any more");
    }

    #[test]
    fn engine_gate_held_gate_parks_the_worker_until_released() {
        let gate = Arc::new(Gate::default());
        assert!(gate.acquire(None));
        let lock = SyncLock::new(gate.clone());
        let (tx, rx) = mpsc::channel();
        let g = gate.clone();
        let worker = std::thread::spawn(move || g.boundary(&|| false, &move |w| tx.send(w).expect("send")));
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(true), "the worker waits");
        lock.release();
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(false), "then goes on");
        assert!(worker.join().expect("worker"), "and enters its segment");
        assert!(!gate.is_held());
    }

    #[test]
    fn engine_gate_stop_releases_a_waiting_worker() {
        let gate = Arc::new(Gate::default());
        assert!(gate.acquire(None));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let (g, s) = (gate.clone(), stop.clone());
        let worker = std::thread::spawn(move || {
            let r = g.boundary(&|| s.load(std::sync::atomic::Ordering::SeqCst), &move |w| {
                let _ = tx.send(w);
            });
            assert!(!r, "stopped: no segment");
        });
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(true), "the worker waits");
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        gate.wake();
        worker.join().expect("worker");
        gate.release(std::thread::current().id()).expect("held");
    }
}
