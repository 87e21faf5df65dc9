//! [`Engine`]: the sync engine runtime — one background thread that owns sync, a command queue
//! with coalescing, the sync mutex, polling, `stop_sync`, and notifications delivered on a
//! notifier thread (spec §9, §11).
//!
//! # Threads
//!
//! * `tidesync-sync` (the worker): runs every command — login, logout, syncs, push, settings
//!   that rebuild the client — and every HTTP request and page transaction.
//! * `tidesync-notify` (the notifier): calls listeners and completion callbacks, in order.
//! * App threads: call the engine, read and write local data through [`Engine::client`].
//!
//! The threads share an `Arc<Shared>`; the [`Engine`] handle is not shared with them, so
//! dropping it signals shutdown (it never blocks) and [`Engine::shutdown`] joins.
//!
//! # Locks (outer first; each held briefly, none across HTTP, SQLite transactions or callbacks)
//!
//! `gate` → `state` (the worker reports "waiting for the sync mutex" under the gate), then
//! leaf locks that are never nested: `settings`, `client` (an `RwLock` read only to clone the
//! `Arc`), the observer's progress, the notifier's `registry`, `watch` and `queue`, and the
//! store's own connection mutexes. Listeners and callbacks run on the notifier thread with no
//! engine lock held; the worker never waits for the notifier (its queue is unbounded for
//! finals and thins progress), so a listener may call any engine method, including blocking
//! ones and `stop_sync`.
//!
//! # Stop
//!
//! [`Engine::stop_sync`] bumps the engine's stop epoch (under the state lock, where the worker
//! reads it when a command starts), cancels queued syncs, calls [`SyncClient::stop`] (the
//! client's epoch and `sqlite3_interrupt`), wakes a worker waiting at the sync mutex, and waits
//! on the state condvar, with a deadline, for the running command to end. A request blocked in
//! HTTP ends only when it returns or times out ([`EngineConfig::read_timeout`]); its answer is
//! then not applied.

mod bulk;
mod command;
mod gate;
mod notifier;
mod notify;
mod run;
mod settings;
#[cfg(test)]
mod tests;
mod worker;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};

pub use command::{EngineState, EngineStats};
pub use gate::SyncLock;
pub use notifier::NotificationHandle;
pub use notify::{
    CreatedObject, ErrorCode, ListenerError, LoginResult, ObjectListener, ObjectNotification, SourceOutcome,
    SyncListener, SyncNotification, SyncStatus, SyncType,
};
pub use settings::{DEFAULT_POLL_INTERVAL, EngineConfig};

use command::{Command, FromOutcome, Outcome, Reply, State};
use gate::Gate;
use notifier::{Delivery, Notifier};
use settings::Settings;

use crate::error::{Error, Result};
use crate::protocol::SourceReport;
use crate::store::Store;
use crate::sync::{SyncClient, SyncOptions, SyncReport};

/// What the worker, the notifier and the engine handle share.
pub(crate) struct Shared {
    db_path: PathBuf,
    state: Mutex<State>,
    state_cv: Condvar,
    gate: Arc<Gate>,
    client: RwLock<Arc<SyncClient>>,
    settings: Mutex<Settings>,
    /// Bumped by every stop; a command is stopped when it differs from its value at the start.
    stop_epoch: AtomicU64,
    notifier: Arc<Notifier>,
}

impl Shared {
    fn client(&self) -> Arc<SyncClient> {
        self.client.read().clone()
    }

    fn stopped_since(&self, epoch: u64) -> bool {
        self.stop_epoch.load(Ordering::SeqCst) != epoch
    }

    /// Signals a stop of the running command and cancels queued syncs (`shutdown`: and ends
    /// the worker). Returns the sequence number of the command running then, if any.
    fn signal_stop(&self, shutdown: bool) -> Option<u64> {
        let (cancelled, running, running_sync) = {
            let mut st = self.state.lock();
            self.stop_epoch.fetch_add(1, Ordering::SeqCst);
            let cancelled = st.take_queued_syncs();
            let running = matches!(
                st.phase,
                EngineState::Running | EngineState::WaitingForSyncLock | EngineState::Stopping
            );
            if running {
                st.phase = EngineState::Stopping;
            }
            st.shutdown |= shutdown;
            self.state_cv.notify_all();
            (cancelled, running.then_some(st.started), st.running_sync)
        };
        if running_sync {
            self.client().stop();
        }
        self.gate.wake();
        for job in cancelled {
            worker::complete(self, job.replies, &Outcome::failed(&job.cmd, Error::Stopped));
        }
        running
    }

    /// Login, logout and a server change cancel the running sync and queued syncs.
    fn signal_stop_syncs(&self) {
        let syncing = {
            let st = self.state.lock();
            st.running_sync || st.queue.iter().any(|j| j.cmd.is_sync())
        };
        if syncing {
            self.signal_stop(false);
        }
    }
}

#[derive(Default)]
struct Threads {
    worker: Option<JoinHandle<()>>,
    notifier: Option<JoinHandle<()>>,
}

/// The sync engine over one database. `Send + Sync`: share it (`Arc<Engine>`) and call it from
/// any thread, listeners included.
pub struct Engine {
    shared: Arc<Shared>,
    threads: Mutex<Threads>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("db_path", &self.shared.db_path)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Opens the database at `db_path` (creating or migrating it) and starts the worker and
    /// notifier threads. Settings given in `config` win and are stored; the others come from
    /// the store (see [`EngineConfig`]). A server URL different from the stored one is a new
    /// account, as [`Engine::set_sync_server`].
    ///
    /// # Errors
    /// Storage, an incompatible schema, no or an invalid server URL, a page size of 0, or the
    /// threads could not be started.
    pub fn open(db_path: &Path, config: EngineConfig) -> Result<Engine> {
        let (settings, new_account) = {
            let store = Store::open(db_path)?;
            settings::resolve(&store, &config)?
        };
        let client = SyncClient::open(db_path, settings.sync_config())?;
        if new_account {
            client.database_client_reset()?;
            client.logout(false)?;
            log::info!("sync server changed since the last run: client id, tokens and session cleared");
        }
        let shared = Arc::new(Shared {
            db_path: db_path.to_owned(),
            state: Mutex::new(State::new(settings.poll_interval)),
            state_cv: Condvar::new(),
            gate: Arc::new(Gate::default()),
            client: RwLock::new(Arc::new(client)),
            settings: Mutex::new(settings),
            stop_epoch: AtomicU64::new(0),
            notifier: Arc::new(Notifier::default()),
        });
        let spawn_error = |e: std::io::Error| Error::Storage {
            reason: format!("starting the engine threads: {e}"),
        };
        let notifier = shared.notifier.spawn().map_err(spawn_error)?;
        let s = shared.clone();
        let worker = match std::thread::Builder::new()
            .name("tidesync-sync".into())
            .spawn(move || worker::run(s))
        {
            Ok(w) => w,
            Err(e) => {
                shared.notifier.close();
                return Err(spawn_error(e));
            }
        };
        Ok(Engine {
            shared,
            threads: Mutex::new(Threads {
                worker: Some(worker),
                notifier: Some(notifier),
            }),
        })
    }

    /// The sync client: the local data API (`create`, `find`, `find_all`, `count`, …), server
    /// errors and their resolution. Safe from any thread while the engine syncs. Do not sync
    /// through it directly: use the engine's commands.
    pub fn client(&self) -> Arc<SyncClient> {
        self.shared.client()
    }

    /// The store of [`Engine::client`].
    pub fn store(&self) -> Arc<Store> {
        self.shared.client().store().clone()
    }

    // ----- commands ----------------------------------------------------------------------

    fn submit(&self, cmd: Command, reply: Option<Reply>) {
        let mut st = self.shared.state.lock();
        if st.shutdown {
            drop(st);
            if let Some(r) = reply {
                worker::complete(&self.shared, vec![r], &Outcome::failed(&cmd, Error::Stopped));
            }
            return;
        }
        st.enqueue(cmd, reply);
        self.shared.state_cv.notify_all();
    }

    fn submit_with<T: FromOutcome + 'static>(&self, cmd: Command, done: impl FnOnce(Result<T>) + Send + 'static) {
        self.submit(cmd, Some(Reply::new(false, done)));
    }

    /// Runs `cmd` and waits for its result (delivered after the run's notifications, or
    /// directly when called from a listener).
    fn call<T: FromOutcome + Send + 'static>(&self, cmd: Command) -> Result<T> {
        if self.shared.gate.held_by_current_thread() {
            return Err(Error::InvalidInput {
                reason: "this thread holds the sync mutex: waiting for the worker would deadlock".into(),
            });
        }
        let direct = self.shared.notifier.is_current_thread();
        let (tx, rx) = mpsc::channel();
        self.submit(
            cmd,
            Some(Reply::new::<T>(direct, move |r| {
                let _ = tx.send(r);
            })),
        );
        rx.recv().unwrap_or(Err(Error::Stopped))
    }

    /// Signs in (RhoConnect `login`): cancels a running sync and queued syncs first, as
    /// RhoConnect does. `done` gets the error code and message on the notifier thread.
    pub fn login(&self, user: &str, password: &str, done: impl FnOnce(LoginResult) + Send + 'static) {
        self.shared.signal_stop_syncs();
        self.submit_with::<()>(login_cmd(user, password), move |r| done(LoginResult::from_result(r)));
    }

    /// [`Engine::login`], waiting for the result.
    ///
    /// # Errors
    /// [`Error::Unauthorized`] for refused credentials, network and server errors.
    pub fn login_blocking(&self, user: &str, password: &str) -> Result<()> {
        self.shared.signal_stop_syncs();
        self.call(login_cmd(user, password))
    }

    /// Signs out (see [`SyncClient::logout`]) after cancelling a running sync and queued syncs.
    pub fn logout(&self, wipe_data: bool, done: impl FnOnce(Result<()>) + Send + 'static) {
        self.shared.signal_stop_syncs();
        self.submit_with(Command::Logout { wipe_data }, done);
    }

    /// [`Engine::logout`], waiting for the result.
    ///
    /// # Errors
    /// Storage.
    pub fn logout_blocking(&self, wipe_data: bool) -> Result<()> {
        self.shared.signal_stop_syncs();
        self.call(Command::Logout { wipe_data })
    }

    /// True when a session is stored.
    ///
    /// # Errors
    /// Storage.
    pub fn is_logged_in(&self) -> Result<bool> {
        self.client().is_logged_in()
    }

    /// The last login name.
    ///
    /// # Errors
    /// Storage.
    pub fn user_name(&self) -> Result<Option<String>> {
        self.client().user_name()
    }

    /// Syncs every source (RhoConnect `dosync`), no callback. Requests made while a sync runs
    /// are queued once (coalesced) and run after it.
    pub fn do_sync(&self) {
        self.submit(sync_all_cmd(SyncOptions::default()), None);
    }

    /// Syncs every source; `done` gets the per-source report on the notifier thread, after the
    /// run's notifications.
    pub fn sync_all(&self, opts: SyncOptions, done: impl FnOnce(Result<SyncReport>) + Send + 'static) {
        self.submit_with(sync_all_cmd(opts), done);
    }

    /// [`Engine::sync_all`], waiting for the report.
    ///
    /// # Errors
    /// Storage errors reading the sources, [`Error::Stopped`] when cancelled before it ran,
    /// [`Error::InvalidInput`] when this thread holds the sync mutex.
    pub fn sync_all_blocking(&self, opts: SyncOptions) -> Result<SyncReport> {
        self.call(sync_all_cmd(opts))
    }

    /// Syncs one source (RhoConnect `dosync_source`).
    pub fn sync_source(
        &self,
        source: &str,
        opts: SyncOptions,
        done: impl FnOnce(Result<SourceReport>) + Send + 'static,
    ) {
        self.submit_with(sync_one_cmd(source, opts, false), done);
    }

    /// [`Engine::sync_source`], waiting for the report.
    ///
    /// # Errors
    /// As [`SyncClient::sync_source`], plus [`Error::Stopped`].
    pub fn sync_source_blocking(&self, source: &str, opts: SyncOptions) -> Result<SourceReport> {
        self.call(sync_one_cmd(source, opts, false))
    }

    /// Pushes a source's changes — even none, which makes the server run work it deferred —
    /// then pulls it (RhoConnect `push_changes`).
    pub fn push_changes(&self, source: &str, done: impl FnOnce(Result<SourceReport>) + Send + 'static) {
        self.submit_with(sync_one_cmd(source, SyncOptions::default(), true), done);
    }

    /// [`Engine::push_changes`], waiting for the report.
    ///
    /// # Errors
    /// As [`Engine::sync_source_blocking`].
    pub fn push_changes_blocking(&self, source: &str) -> Result<SourceReport> {
        self.call(sync_one_cmd(source, SyncOptions::default(), true))
    }

    // ----- stop, state ----------------------------------------------------------------------

    /// Stops the running command (a sync ends at its next check: between requests, pages and
    /// statements) and cancels queued syncs; the store stays consistent and the next sync
    /// resumes. Waits up to `wait` for the command to end (from a listener too); true when it
    /// did, or nothing was running.
    pub fn stop_sync(&self, wait: Duration) -> bool {
        let Some(target) = self.shared.signal_stop(false) else {
            return true;
        };
        let deadline = Instant::now() + wait;
        let mut st = self.shared.state.lock();
        while st.finished < target && st.phase != EngineState::Closed {
            if self.shared.state_cv.wait_until(&mut st, deadline).timed_out() {
                return st.finished >= target;
            }
        }
        true
    }

    /// What the engine is doing now.
    pub fn state(&self) -> EngineState {
        self.shared.state.lock().phase
    }

    /// True while a sync runs (or waits at the sync mutex).
    pub fn is_syncing(&self) -> bool {
        self.shared.state.lock().running_sync
    }

    /// Waits up to `timeout` until the engine is idle with nothing queued. True when it is.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        self.wait_state(timeout, |s| s == EngineState::Idle || s == EngineState::Closed, true)
    }

    /// Waits up to `timeout` for a state matching `pred` (with `empty_queue`: and nothing
    /// queued). True when reached.
    pub(crate) fn wait_state(&self, timeout: Duration, pred: impl Fn(EngineState) -> bool, empty_queue: bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.state.lock();
        while !(pred(st.phase) && (!empty_queue || st.queue.is_empty() || st.phase == EngineState::Closed)) {
            if self.shared.state_cv.wait_until(&mut st, deadline).timed_out() {
                return false;
            }
        }
        true
    }

    /// Counters.
    pub fn stats(&self) -> EngineStats {
        let mut s = self.shared.state.lock().stats;
        (s.progress_coalesced, s.progress_dropped) = self.shared.notifier.thinned();
        s
    }

    /// Stops the running sync, lets the worker finish and joins both threads (not the calling
    /// one, when called from a listener). Queued commands fail with [`Error::Stopped`]. Later
    /// commands fail at once (their callbacks run on the calling thread).
    pub fn shutdown(&self) {
        self.shared.signal_stop(true);
        let threads = std::mem::take(&mut *self.threads.lock());
        let me = std::thread::current().id();
        for handle in [threads.worker, threads.notifier].into_iter().flatten() {
            if handle.thread().id() != me && handle.join().is_err() {
                log::error!("an engine thread panicked");
            }
        }
    }

    // ----- sync mutex ------------------------------------------------------------------------

    /// Takes the sync mutex (RhoConnect `lock_sync_mutex`): waits until a running sync finished
    /// its current page; then no sync starts and a running one waits before its next request
    /// until [`Engine::unlock_sync_mutex`]. Nested locks count.
    pub fn lock_sync_mutex(&self) {
        self.shared.gate.acquire(None);
    }

    /// Releases one [`Engine::lock_sync_mutex`].
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when the sync mutex is not held.
    pub fn unlock_sync_mutex(&self) -> Result<()> {
        self.shared.gate.release(std::thread::current().id())
    }

    /// True while someone holds the sync mutex.
    pub fn is_sync_mutex_locked(&self) -> bool {
        self.shared.gate.is_held()
    }

    /// [`Engine::lock_sync_mutex`] as a guard, released on drop.
    pub fn sync_lock(&self) -> SyncLock {
        self.shared.gate.acquire(None);
        SyncLock::new(self.shared.gate.clone())
    }

    /// [`Engine::sync_lock`], giving up after `timeout` (a page can take long on a slow
    /// network).
    pub fn try_sync_lock(&self, timeout: Duration) -> Option<SyncLock> {
        self.shared
            .gate
            .acquire(Some(Instant::now() + timeout))
            .then(|| SyncLock::new(self.shared.gate.clone()))
    }

    // ----- notifications ---------------------------------------------------------------------

    /// Sets or replaces the listener of `source` (`None`: `*`, which gets run events and the
    /// events of sources without a listener of their own). A per-source listener is removed
    /// after that source's final event; `*` stays until cleared.
    pub fn set_notification<L: SyncListener + 'static>(&self, source: Option<&str>, listener: L) -> NotificationHandle {
        self.shared.notifier.set_listener(source, Arc::new(listener))
    }

    /// Removes the listener of `source` (`None`: `*`).
    pub fn clear_notification(&self, source: Option<&str>) {
        self.shared.notifier.clear_listener(source);
    }

    /// Watches objects of `source` (temporary ids too: the watch follows the server's id).
    pub fn add_object_notify(&self, source: &str, ids: &[String]) {
        self.shared.notifier.add_watch(source, ids);
    }

    /// Sets the listener of watched objects' changes (one per source sync with changes).
    pub fn set_object_notify<L: ObjectListener + 'static>(&self, listener: L) {
        self.shared.notifier.set_object_listener(Some(Arc::new(listener)));
    }

    /// Removes the object listener and every watch.
    pub fn clear_object_notify(&self) {
        self.shared.notifier.set_object_listener(None);
        self.shared.notifier.clear_watch();
    }

    /// Waits up to `timeout` until everything queued for listeners so far was delivered. True
    /// when it was (at once on the notifier thread).
    pub fn flush_notifications(&self, timeout: Duration) -> bool {
        if self.shared.notifier.is_current_thread() {
            return true;
        }
        let (tx, rx) = mpsc::channel();
        self.shared.notifier.push(Delivery::Call(Box::new(move || {
            let _ = tx.send(());
        })));
        rx.recv_timeout(timeout).is_ok()
    }
}

impl Drop for Engine {
    /// Signals shutdown (stopping a running sync) and returns at once; the threads end on their
    /// own.
    fn drop(&mut self) {
        self.shared.signal_stop(true);
    }
}

fn login_cmd(user: &str, password: &str) -> Command {
    Command::Login {
        user: user.to_owned(),
        password: password.to_owned(),
    }
}

fn sync_all_cmd(opts: SyncOptions) -> Command {
    Command::SyncAll { opts, poll: false }
}

fn sync_one_cmd(source: &str, opts: SyncOptions, push_marker: bool) -> Command {
    Command::SyncSource {
        source: source.to_owned(),
        opts,
        push_marker,
    }
}
