//! Wire protocols behind one seam. RhoConnect is the first; CouchDB and LoopBack replication
//! plug in here without touching the store or the engine: a protocol turns server exchanges
//! into [`crate::store::apply::Batch`]es applied atomically with their checkpoint, and queued
//! local changes into pushes.

pub mod rhoconnect;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::Result;
use crate::store::Store;
use crate::store::apply::ApplyStats;

/// One applied page, reported to the observer after its transaction committed.
#[derive(Debug)]
pub struct PageEvent<'a> {
    /// Source name.
    pub source: &'a str,
    /// Local source id.
    pub source_id: i64,
    /// Objects in this page (inserts + deletes, as the server counts them).
    pub page_objects: usize,
    /// Objects applied so far in this sync of the source.
    pub cumulative_objects: usize,
    /// The server's object count for the source (`total_count`).
    pub server_total: u64,
    /// What the page did locally.
    pub stats: &'a ApplyStats,
}

/// A step of a bulk sync (spec §6.5 `bulk_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BulkStep {
    /// The bulk sync (partition `None`) or a partition starts.
    Start,
    /// The partition's file is being downloaded (repeated with byte progress).
    Download,
    /// The file was validated; its import into the store begins (one transaction). An observer
    /// may block here (the engine's sync mutex): nothing has changed yet.
    ChangeDb,
    /// Blob downloads begin (partition `None`; only when a bulk source declares blob
    /// attributes — the downloads themselves are not part of bulk sync yet).
    Blobs,
    /// The partition was imported (or the server had nothing for it).
    Ok,
    /// Every partition was imported; the bulk state is now done (partition `None`).
    Complete,
}

impl BulkStep {
    /// The RhoConnect `bulk_status` value.
    pub fn as_str(self) -> &'static str {
        match self {
            BulkStep::Start => "start",
            BulkStep::Download => "download",
            BulkStep::ChangeDb => "change_db",
            BulkStep::Blobs => "blobs",
            BulkStep::Ok => "ok",
            BulkStep::Complete => "complete",
        }
    }
}

/// Progress of a bulk sync, reported to the observer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkEvent {
    /// The step.
    pub step: BulkStep,
    /// The partition; `None` for the steps of the whole bulk sync.
    pub partition: Option<crate::model::Partition>,
    /// Bytes of the file received so far (download steps).
    pub bytes: u64,
    /// The file's size, when the server said it.
    pub total_bytes: Option<u64>,
    /// Objects imported (partition `ok`).
    pub objects: u64,
}

impl BulkEvent {
    /// An event without counts.
    pub fn new(step: BulkStep, partition: Option<crate::model::Partition>) -> Self {
        Self {
            step,
            partition,
            bytes: 0,
            total_bytes: None,
            objects: 0,
        }
    }
}

/// Receives progress (the engine turns it into notifications).
pub trait SyncObserver: Send + Sync {
    /// A page was applied and committed.
    fn on_page(&self, event: &PageEvent<'_>);

    /// A bulk sync step (default: ignored).
    fn on_bulk(&self, event: &BulkEvent) {
        let _ = event;
    }
}

/// Per-run context: page size, extra query parameters, stop signal, observer.
#[derive(Clone)]
pub struct SyncCtx {
    /// Objects per page requested from the server.
    pub page_size: u32,
    /// Extra query parameters appended to every pull (`a=1&b=2`).
    pub query_params: String,
    /// Count the source's local objects at the end of its sync.
    pub count_objects: bool,
    epoch: Arc<AtomicU64>,
    start: u64,
    observer: Option<Arc<dyn SyncObserver>>,
}

impl std::fmt::Debug for SyncCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncCtx")
            .field("page_size", &self.page_size)
            .finish_non_exhaustive()
    }
}

impl SyncCtx {
    /// A context whose stop signal is `epoch` changing from its current value.
    pub fn new(page_size: u32, epoch: Arc<AtomicU64>, observer: Option<Arc<dyn SyncObserver>>) -> Self {
        let start = epoch.load(Ordering::SeqCst);
        Self {
            page_size: page_size.max(1),
            query_params: String::new(),
            count_objects: true,
            epoch,
            start,
            observer,
        }
    }

    /// A context belonging to stop epoch `start` (a stop after `start` stops it).
    pub fn from_epoch(
        page_size: u32,
        epoch: Arc<AtomicU64>,
        start: u64,
        observer: Option<Arc<dyn SyncObserver>>,
    ) -> Self {
        Self {
            page_size: page_size.max(1),
            query_params: String::new(),
            count_objects: true,
            epoch,
            start,
            observer,
        }
    }

    /// True once a stop was requested after this context was made.
    pub fn stopped(&self) -> bool {
        self.epoch.load(Ordering::SeqCst) != self.start
    }

    pub(crate) fn page(&self, e: &PageEvent<'_>) {
        if let Some(o) = &self.observer {
            o.on_page(e);
        }
    }

    pub(crate) fn bulk(&self, e: &BulkEvent) {
        if let Some(o) = &self.observer {
            o.on_bulk(e);
        }
    }
}

/// The outcome of syncing one source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceReport {
    /// Source name.
    pub name: String,
    /// Local changes pushed.
    pub pushed: usize,
    /// Pages applied.
    pub pages: usize,
    /// Objects applied (inserts + deletes over all pages).
    pub objects: usize,
    /// Objects of the source in the local store afterwards (0 with
    /// `SyncOptions::skip_object_count`).
    pub local_objects: u64,
}

/// A sync protocol.
pub trait Protocol: Send + Sync + std::fmt::Debug {
    /// Signs in and stores the session.
    ///
    /// # Errors
    /// [`crate::Error::Unauthorized`] for refused credentials, network and server errors.
    fn login(&self, store: &Store, user: &str, password: &str) -> Result<()>;

    /// Pushes the source's queued changes, then pulls until the server has nothing more. On
    /// success the sync result (`last_sync_at`, ok) is recorded in the transaction of the last
    /// page (the caller records failures).
    ///
    /// # Errors
    /// Typed errors; whatever was committed stays committed and the next run resumes.
    fn sync_source(&self, store: &Store, ctx: &SyncCtx, source: &str) -> Result<SourceReport>;

    /// Queues an empty push for the source (makes the server run deferred work).
    ///
    /// # Errors
    /// Unknown source, storage.
    fn push_changes_marker(&self, store: &Store, source: &str) -> Result<()>;

    /// Runs a server-side search over `request.sources`; found objects land in the store.
    ///
    /// # Errors
    /// Typed errors; pages already applied stay applied.
    fn search(&self, store: &Store, ctx: &SyncCtx, request: &SearchRequest) -> Result<SearchReport>;

    /// Fetches a snapshot of `request.partition` (RhoConnect: the bulk data file, spec §6) into
    /// `request.dir`, reporting [`BulkStep::Download`] through `ctx`. The file has the shape of
    /// spec §6.4 (tables `sources` and `object_values`), which the store validates and imports;
    /// it is not validated here. `Ok(None)`: the server has no sources in the partition.
    ///
    /// # Errors
    /// Not logged in, network (after bounded retries with resume), server, protocol, stopped.
    fn fetch_snapshot(&self, store: &Store, ctx: &SyncCtx, request: &SnapshotRequest) -> Result<Option<SnapshotFile>>;

    /// Registers the device for push messages (`device_pin` empty: unregister).
    ///
    /// # Errors
    /// Not logged in, network, server.
    fn register_push(&self, store: &Store, device: &PushRegistration) -> Result<()>;
}

/// A server-side search.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchRequest {
    /// Sources to search, in order.
    pub sources: Vec<String>,
    /// Search parameters, sent as `search[name]=value` (e.g. `name` → `Product 2`; `offset`
    /// and `max_results` are passed the same way for adapters that use them).
    pub params: Vec<(String, String)>,
    /// Push the local changes of the searched sources first.
    pub sync_changes: bool,
}

/// What a search brought.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchReport {
    /// Objects received per source.
    pub objects: Vec<(String, usize)>,
    /// Server errors per source (`search-error`).
    pub errors: Vec<(String, String)>,
}

/// Push-registration data (RhoConnect `clientregister`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushRegistration {
    /// The push token (FCM / APNs); empty to unregister.
    pub device_pin: String,
    /// `Android`, `APPLE`, …
    pub device_type: String,
    /// Push provider id (e.g. `fcm`), may be empty.
    pub push_type: String,
}

/// What [`Protocol::fetch_snapshot`] is asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRequest {
    /// The partition (`user` or `app`).
    pub partition: crate::model::Partition,
    /// The sources wanted, by name.
    pub sources: Vec<String>,
    /// Where to put the file (and partial downloads, kept for resuming).
    pub dir: std::path::PathBuf,
    /// How long to wait for the server to build the file before giving up.
    pub max_wait: std::time::Duration,
}

/// A downloaded snapshot file (spec §6.4 shape), not yet validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFile {
    /// The SQLite file.
    pub path: std::path::PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
}
