//! [`Engine`]: the one object of the FFI — the background sync engine (login, syncs,
//! notifications, the sync mutex, settings) and the local data (in `data.rs`).
//!
//! Blocking calls (`login`, `syncAll`, `syncSource`, `search`, local data) run on the caller's
//! thread and must be called off the main thread (the Kotlin layer wraps them in
//! `Dispatchers.IO`). `doSync` and `doSyncSource` return at once; notifications report.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use tidesync_core as core;
use tidesync_core::engine::{EngineState, EngineStats};

use crate::error::TideSyncError;
use crate::listener::{NotificationHandle, ObjectListener, ObjectListenerAdapter, SyncListener, SyncListenerAdapter};
use crate::types::{EngineConfig, SearchResult, SourceResult};

pub(crate) type R<T> = Result<T, TideSyncError>;

/// How long `search` waits for a running sync to stop.
const SEARCH_STOP_WAIT: Duration = Duration::from_secs(30);

/// The sync engine over one database: a background sync thread and a notifier thread. Safe to
/// call from any thread, listeners included. Keep one per database for the app's lifetime;
/// `shutdown()` (or `close()`) ends it, after which calls fail with `Closed`.
#[derive(uniffi::Object)]
pub struct Engine {
    inner: RwLock<Option<Arc<core::Engine>>>,
    files_dir: Option<String>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("inner", &*self.inner.read()).finish()
    }
}

impl Engine {
    /// The core engine, cloned out so that no lock is held during the call.
    pub(crate) fn engine(&self) -> R<Arc<core::Engine>> {
        self.inner.read().clone().ok_or(TideSyncError::Closed)
    }

    pub(crate) fn client(&self) -> R<Arc<core::SyncClient>> {
        Ok(self.engine()?.client())
    }
}

fn opts(query_params: String, only_changed_sources: bool) -> core::SyncOptions {
    core::SyncOptions {
        query_params,
        only_changed_sources,
        ..Default::default()
    }
}

fn ms(v: u32) -> Duration {
    Duration::from_millis(v.into())
}

/// Logs the result of an asynchronous command (its notifications already told the app).
fn log_done<T>(what: &'static str) -> impl FnOnce(core::Result<T>) + Send + 'static {
    move |r| {
        if let Err(e) = r {
            log::debug!("{what} ended: {e}");
        }
    }
}

#[uniffi::export]
impl Engine {
    /// Opens the database at `config.dbPath` (creating or migrating it) and starts the engine.
    ///
    /// # Errors
    /// `Storage` (cannot open, too new), `InvalidArgument` (no or bad server URL, page size 0).
    #[uniffi::constructor]
    pub fn open(config: EngineConfig) -> R<Arc<Self>> {
        if let Some(dir) = &config.files_dir {
            std::fs::create_dir_all(dir).map_err(|e| TideSyncError::Storage {
                reason: format!("creating the files directory: {e}"),
            })?;
        }
        let inner = core::Engine::open(Path::new(&config.db_path), (&config).into())?;
        Ok(Arc::new(Self {
            inner: RwLock::new(Some(Arc::new(inner))),
            files_dir: config.files_dir,
        }))
    }

    // ----- session ------------------------------------------------------------------------

    /// Signs in (blocking; cancels a running sync first, as RhoConnect does).
    ///
    /// # Errors
    /// `Unauthorized` for refused credentials (`detail`: the server's words), `Network`,
    /// `Server`.
    pub fn login(&self, user: String, password: String) -> R<()> {
        Ok(self.engine()?.login_blocking(&user, &password)?)
    }

    /// Signs out (blocking; cancels a running sync first). `wipe` also removes every object,
    /// queued change and error.
    ///
    /// # Errors
    /// `Storage`.
    pub fn logout(&self, wipe: bool) -> R<()> {
        Ok(self.engine()?.logout_blocking(wipe)?)
    }

    /// True when a session is stored.
    ///
    /// # Errors
    /// `Storage`, `Closed`.
    pub fn is_logged_in(&self) -> R<bool> {
        Ok(self.engine()?.is_logged_in()?)
    }

    /// The last login name.
    ///
    /// # Errors
    /// `Storage`, `Closed`.
    pub fn user_name(&self) -> R<Option<String>> {
        Ok(self.engine()?.user_name()?)
    }

    // ----- syncs ---------------------------------------------------------------------------

    /// Starts a sync of every source and returns at once (RhoConnect `dosync`): notifications
    /// report. A request made while a sync runs is queued once and runs after it.
    ///
    /// # Errors
    /// `Closed`.
    #[uniffi::method(default(query_params = "", only_changed_sources = false))]
    pub fn do_sync(&self, query_params: String, only_changed_sources: bool) -> R<()> {
        self.engine()?
            .sync_all(opts(query_params, only_changed_sources), log_done("doSync"));
        Ok(())
    }

    /// Syncs every source and waits (after the run's notifications were delivered); per-source
    /// results in sync order. A source that fails is a result with `ok == false`.
    ///
    /// # Errors
    /// `Stopped` when cancelled before it ran, `InvalidArgument` when this thread holds the
    /// sync mutex, `Storage`.
    #[uniffi::method(default(query_params = "", only_changed_sources = false))]
    pub fn sync_all(&self, query_params: String, only_changed_sources: bool) -> R<Vec<SourceResult>> {
        let e = self.engine()?;
        let report = e.sync_all_blocking(opts(query_params, only_changed_sources))?;
        let client = e.client();
        Ok(report
            .sources
            .into_iter()
            .map(|(name, r)| match r {
                Ok(s) => s.into(),
                Err(err) => {
                    let local = client.count(&name, None).unwrap_or(0);
                    SourceResult::failed(name, &err, local)
                }
            })
            .collect())
    }

    /// Starts a sync of one source and returns at once (RhoConnect `dosync_source`).
    ///
    /// # Errors
    /// `Closed`.
    #[uniffi::method(default(query_params = ""))]
    pub fn do_sync_source(&self, name: String, query_params: String) -> R<()> {
        self.engine()?
            .sync_source(&name, opts(query_params, false), log_done("doSyncSource"));
        Ok(())
    }

    /// Syncs one source and waits.
    ///
    /// # Errors
    /// The source's error (`Network`, `Unauthorized`, `InvalidArgument` for an unknown source,
    /// …), `Stopped`.
    #[uniffi::method(default(query_params = ""))]
    pub fn sync_source(&self, name: String, query_params: String) -> R<SourceResult> {
        Ok(self
            .engine()?
            .sync_source_blocking(&name, opts(query_params, false))?
            .into())
    }

    /// Pushes a source's changes (even none: the server then runs work it deferred), then
    /// pulls it; waits.
    ///
    /// # Errors
    /// As `syncSource`.
    pub fn push_changes(&self, source: String) -> R<SourceResult> {
        Ok(self.engine()?.push_changes_blocking(&source)?.into())
    }

    /// Stops the running sync (it ends at its next check; the next sync resumes) and cancels
    /// queued ones. Waits up to `waitMs` for it to end; true when it did or nothing ran.
    ///
    /// # Errors
    /// `Closed`.
    #[uniffi::method(default(wait_ms = 10000))]
    pub fn stop_sync(&self, wait_ms: u32) -> R<bool> {
        Ok(self.engine()?.stop_sync(ms(wait_ms)))
    }

    /// Searches the server (blocking): stops a running sync first and keeps syncs out while
    /// it runs. Found objects are stored like synced ones. Per-source results in `sources`
    /// order.
    ///
    /// # Errors
    /// `Busy` when a running sync did not stop in time; `Unauthorized`, `InvalidArgument`
    /// (unknown or local-only source), `Network`, `Server`, `Protocol`.
    #[uniffi::method(default(sync_changes = false))]
    pub fn search(
        &self,
        sources: Vec<String>,
        params: HashMap<String, String>,
        sync_changes: bool,
    ) -> R<Vec<SearchResult>> {
        let e = self.engine()?;
        if !e.stop_sync(SEARCH_STOP_WAIT) {
            return Err(TideSyncError::Busy);
        }
        let _lock = e.sync_lock(); // no sync starts until the search ends
        let mut params: Vec<(String, String)> = params.into_iter().collect();
        params.sort();
        let request = core::SearchRequest {
            sources: sources.clone(),
            params,
            sync_changes,
        };
        let report = e.client().search(&request, None)?;
        Ok(sources
            .into_iter()
            .map(|source| SearchResult {
                objects: report
                    .objects
                    .iter()
                    .filter(|(s, _)| *s == source)
                    .map(|(_, n)| *n as u64)
                    .sum(),
                error: report.errors.iter().find(|(s, _)| *s == source).map(|(_, m)| m.clone()),
                source,
            })
            .collect())
    }

    // ----- sync mutex ------------------------------------------------------------------------

    /// Takes the sync mutex (RhoConnect `lock_sync_mutex`): waits until a running sync finished
    /// its current page; then no sync starts and a running one waits until
    /// `unlockSyncMutex`. Prefer `syncLock()`.
    ///
    /// # Errors
    /// `Closed`.
    pub fn lock_sync_mutex(&self) -> R<()> {
        self.engine()?.lock_sync_mutex();
        Ok(())
    }

    /// Releases one `lockSyncMutex`.
    ///
    /// # Errors
    /// `InvalidArgument` when not held, `Closed`.
    pub fn unlock_sync_mutex(&self) -> R<()> {
        Ok(self.engine()?.unlock_sync_mutex()?)
    }

    /// True while someone holds the sync mutex.
    ///
    /// # Errors
    /// `Closed`.
    pub fn is_sync_mutex_locked(&self) -> R<bool> {
        Ok(self.engine()?.is_sync_mutex_locked())
    }

    /// The sync mutex as an object, released by `release()` or `close()` (`use {}` in
    /// Kotlin). It keeps the engine alive. Do not wait for a blocking sync on the thread that
    /// took it (that fails with `InvalidArgument` instead of deadlocking).
    ///
    /// # Errors
    /// `Closed`.
    pub fn sync_lock(self: Arc<Self>) -> R<Arc<SyncLock>> {
        let lock = self.engine()?.sync_lock();
        Ok(Arc::new(SyncLock {
            lock: Mutex::new(Some(lock)),
            _engine: self,
        }))
    }

    /// `syncLock()`, giving up after `timeoutMs` (`None` then).
    ///
    /// # Errors
    /// `Closed`.
    pub fn try_sync_lock(self: Arc<Self>, timeout_ms: u32) -> R<Option<Arc<SyncLock>>> {
        let lock = self.engine()?.try_sync_lock(ms(timeout_ms));
        Ok(lock.map(|l| {
            Arc::new(SyncLock {
                lock: Mutex::new(Some(l)),
                _engine: self,
            })
        }))
    }

    // ----- notifications -----------------------------------------------------------------------

    /// Sets or replaces the listener of `source` (`None`: `*`, which gets run events and the
    /// events of sources without a listener of their own). A per-source listener is removed
    /// after its source's final event; `*` stays until cleared or cancelled.
    ///
    /// # Errors
    /// `Closed`.
    pub fn set_notification(
        &self,
        source: Option<String>,
        listener: Arc<dyn SyncListener>,
    ) -> R<Arc<NotificationHandle>> {
        let h = self
            .engine()?
            .set_notification(source.as_deref(), SyncListenerAdapter(listener));
        Ok(Arc::new(NotificationHandle(h)))
    }

    /// Removes the listener of `source` (`None`: `*`).
    ///
    /// # Errors
    /// `Closed`.
    pub fn clear_notification(&self, source: Option<String>) -> R<()> {
        self.engine()?.clear_notification(source.as_deref());
        Ok(())
    }

    /// Sets the listener of watched objects' changes.
    ///
    /// # Errors
    /// `Closed`.
    pub fn set_object_notify(&self, listener: Arc<dyn ObjectListener>) -> R<()> {
        self.engine()?.set_object_notify(ObjectListenerAdapter(listener));
        Ok(())
    }

    /// Watches objects of `source` (temporary ids too: the watch follows the server's id).
    ///
    /// # Errors
    /// `Closed`.
    pub fn add_object_notify(&self, source: String, ids: Vec<String>) -> R<()> {
        self.engine()?.add_object_notify(&source, &ids);
        Ok(())
    }

    /// Removes the object listener and every watch.
    ///
    /// # Errors
    /// `Closed`.
    pub fn clear_object_notify(&self) -> R<()> {
        self.engine()?.clear_object_notify();
        Ok(())
    }

    /// Waits up to `timeoutMs` until every notification queued so far was delivered.
    ///
    /// # Errors
    /// `Closed`.
    pub fn flush_notifications(&self, timeout_ms: u32) -> R<bool> {
        Ok(self.engine()?.flush_notifications(ms(timeout_ms)))
    }

    // ----- state and settings ------------------------------------------------------------------

    /// What the engine is doing (`CLOSED` after `shutdown`).
    pub fn state(&self) -> EngineState {
        self.engine().map_or(EngineState::Closed, |e| e.state())
    }

    /// True while a sync runs (or waits at the sync mutex).
    pub fn is_syncing(&self) -> bool {
        self.engine().is_ok_and(|e| e.is_syncing())
    }

    /// Waits up to `timeoutMs` until the engine is idle with nothing queued.
    pub fn wait_idle(&self, timeout_ms: u32) -> bool {
        self.engine().map_or(true, |e| e.wait_idle(ms(timeout_ms)))
    }

    /// Counters.
    ///
    /// # Errors
    /// `Closed`.
    pub fn stats(&self) -> R<EngineStats> {
        Ok(self.engine()?.stats())
    }

    /// Sets the poll interval in seconds (0: off); returns the old one. Stored.
    ///
    /// # Errors
    /// `Closed`.
    pub fn set_poll_interval(&self, seconds: u32) -> R<u32> {
        Ok(self.engine()?.set_poll_interval(seconds))
    }

    /// Seconds between polls (0: off).
    ///
    /// # Errors
    /// `Closed`.
    pub fn poll_interval(&self) -> R<u32> {
        Ok(self.engine()?.poll_interval())
    }

    /// Sets the page size for the next runs; returns the old one. Stored.
    ///
    /// # Errors
    /// `InvalidArgument` for 0, `Storage`, `Closed`.
    pub fn set_page_size(&self, objects: u32) -> R<u32> {
        Ok(self.engine()?.set_page_size(objects)?)
    }

    /// Objects per page.
    ///
    /// # Errors
    /// `Closed`.
    pub fn page_size(&self) -> R<u32> {
        Ok(self.engine()?.page_size())
    }

    /// Changes the sync server; returns the old URL. A different URL is a new account: the
    /// running sync stops, the client id, tokens, synced copies and session are cleared (log in
    /// again). Stored.
    ///
    /// # Errors
    /// `InvalidArgument` for a URL that is not `http(s)://`, `Storage`, `Closed`.
    pub fn set_sync_server(&self, url: String) -> R<String> {
        Ok(self.engine()?.set_sync_server(&url)?)
    }

    /// The sync server URL.
    ///
    /// # Errors
    /// `Closed`.
    pub fn sync_server(&self) -> R<String> {
        Ok(self.engine()?.sync_server())
    }

    /// Turns TLS certificate verification on or off for the next runs; returns the old value.
    ///
    /// # Errors
    /// `Storage`, `Closed`.
    pub fn set_ssl_verify_peer(&self, verify: bool) -> R<bool> {
        Ok(self.engine()?.set_ssl_verify_peer(verify)?)
    }

    /// Whether TLS certificates are verified.
    ///
    /// # Errors
    /// `Closed`.
    pub fn ssl_verify_peer(&self) -> R<bool> {
        Ok(self.engine()?.ssl_verify_peer())
    }

    /// The files directory given at open, if any (blob files live in its `blobs/`
    /// subdirectory; `None`: `<dbPath>.files`).
    pub fn files_dir(&self) -> Option<String> {
        self.files_dir.clone()
    }

    /// Starts over with the server (new client id, tokens and synced copies dropped, queued
    /// changes kept and pushed at the next sync). Stops a running sync first.
    ///
    /// # Errors
    /// `Busy` when a running sync did not stop in time, `Storage`, `Closed`.
    pub fn database_client_reset(&self) -> R<()> {
        let e = self.engine()?;
        if !e.stop_sync(SEARCH_STOP_WAIT) {
            return Err(TideSyncError::Busy);
        }
        let _lock = e.sync_lock();
        Ok(e.client().database_client_reset()?)
    }

    /// Stops the running sync, ends the engine's threads (not the calling one, from a listener)
    /// and releases the database once the last `SyncLock` is gone. Later calls fail with
    /// `Closed`; idempotent. (`close()` in Kotlin also frees the native object.)
    pub fn shutdown(&self) {
        let taken = self.inner.write().take();
        if let Some(e) = taken {
            e.shutdown();
        }
    }
}

/// A held sync mutex (from `Engine.syncLock()`): while held no sync starts and a running sync
/// waits after its current page. Released by `release()`, or when closed (`use {}`).
#[derive(Debug, uniffi::Object)]
pub struct SyncLock {
    lock: Mutex<Option<core::SyncLock>>,
    _engine: Arc<Engine>,
}

#[uniffi::export]
impl SyncLock {
    /// Releases the sync mutex now; later calls do nothing.
    pub fn release(&self) {
        let taken = self.lock.lock().take();
        if let Some(l) = taken {
            l.release();
        }
    }

    /// True until released.
    pub fn is_held(&self) -> bool {
        self.lock.lock().is_some()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::types::{FindQuery, Partition, SourceDefinition};

    /// A unique directory under the system temp dir, removed on drop.
    struct TempDir(std::path::PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let p = std::env::temp_dir().join(format!("tidesync-ffi-{name}-{}-{nanos}", std::process::id()));
            std::fs::create_dir_all(&p).expect("temp dir");
            Self(p)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn open(dir: &TempDir, page_size: Option<u32>) -> Arc<Engine> {
        let e = Engine::open(EngineConfig {
            db_path: dir.0.join("c.db").to_string_lossy().into_owned(),
            sync_server: Some("http://127.0.0.1:9/application/".into()),
            page_size,
            poll_interval: Some(0),
            ssl_verify_peer: None,
            files_dir: Some(dir.0.join("files").to_string_lossy().into_owned()),
            connect_timeout_ms: Some(500),
            read_timeout_ms: Some(500),
            trusted_certificates_pem: None,
        })
        .expect("opens");
        e.define_source(SourceDefinition {
            name: "Notes".into(),
            partition: Partition::Local,
            sync: false,
            priority: 0,
            fixed_columns: None,
            blob_attrs: Vec::new(),
            belongs_to: Vec::new(),
        })
        .expect("defines");
        e
    }

    #[test]
    fn ffi_engine_local_data_sync_lock_and_closed_after_shutdown() {
        let dir = TempDir::new("engine");
        let e = open(&dir, Some(50));
        assert!(dir.0.join("files").is_dir());
        let items = (0..10)
            .map(|i| HashMap::from([("n".to_owned(), i.to_string())]))
            .collect();
        assert_eq!(e.create_objects("Notes".into(), items).expect("creates").len(), 10);
        assert_eq!(e.count("Notes".into(), FindQuery::default()).expect("counts"), 10);
        assert!(matches!(
            e.create("Nope".into(), HashMap::new()),
            Err(TideSyncError::InvalidArgument { .. })
        ));
        let lock = e.clone().sync_lock().expect("locks");
        assert!(lock.is_held() && e.is_sync_mutex_locked().expect("open"));
        lock.release();
        lock.release();
        assert!(!lock.is_held() && !e.is_sync_mutex_locked().expect("open"));
        assert!(matches!(e.set_page_size(0), Err(TideSyncError::InvalidArgument { .. })));
        assert_eq!(e.set_page_size(20).expect("sets"), 50);
        e.shutdown();
        e.shutdown();
        assert_eq!(e.state(), EngineState::Closed);
        assert!(matches!(e.is_logged_in(), Err(TideSyncError::Closed)));
        assert!(matches!(e.do_sync(String::new(), false), Err(TideSyncError::Closed)));
        assert!(matches!(e.clone().sync_lock(), Err(TideSyncError::Closed)));
        drop(e);
        let again = open(&dir, None);
        assert_eq!(again.page_size().expect("open"), 20, "stored");
        again.shutdown();
    }
}
