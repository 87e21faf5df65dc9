//! Notifications across the FFI: the records and enums the app receives, the foreign listener
//! traits, and the adapters that implement the core's listener traits with them.
//!
//! One foreign call per event (a page, a final, a run end, a source's watched objects), never
//! per object. Listeners run on the engine's notifier thread: on the JVM each call arrives on a
//! JNA-attached thread, never the caller's. A listener that throws is logged by the engine
//! (`ListenerError`), which carries on.

use std::sync::Arc;
use std::time::Instant;

use tidesync_core as core;
use tidesync_core::engine::{
    CreatedObject, EngineState, EngineStats, ErrorCode, ObjectNotification, SourceOutcome, SyncStatus, SyncType,
};

use crate::error::TideSyncError;
use crate::types::ServerError;

/// How the data came.
#[uniffi::remote(Enum)]
pub enum SyncType {
    /// Page by page.
    Incremental,
    /// A bulk data file (spec §6); also a source loaded from bulk files.
    Bulk,
}

/// The status of a [`SyncNotification`].
#[uniffi::remote(Enum)]
pub enum SyncStatus {
    /// A page was applied.
    InProgress,
    /// The source synced (final).
    Ok,
    /// The source failed (final), or a page carried server errors (not final).
    Error,
    /// A sync of all sources ended without being stopped (run event, `*` listener only).
    Complete,
    /// The server's schema changed; a bulk sync is needed.
    SchemaChanged,
    /// Stopped by `stopSync`, `login`, `logout`, a server change or shutdown.
    Cancelled,
}

/// Error codes, as RhoConnect's `RhoError`, plus local kinds ([`rho_error_code`] gives the
/// number).
#[uniffi::remote(Enum)]
pub enum ErrorCode {
    /// No error.
    None,
    /// No answer from the server.
    Network,
    /// The server answered with an error status other than 401.
    RemoteServer,
    /// Unknown source or another local precondition failed.
    Runtime,
    /// The server's answer did not follow the protocol.
    UnexpectedServerResponse,
    /// A sync was requested without a session.
    ClientNotLoggedIn,
    /// A page carried server errors (`serverErrors`).
    CustomSyncServer,
    /// HTTP 401: credentials or session refused.
    Unauthorized,
    /// Stopped by the app.
    CancelledByUser,
    /// The local database failed.
    Storage,
    /// A bad argument.
    InvalidInput,
    /// No secure connection: untrusted certificate or failed TLS handshake (not retried by
    /// waiting: fix the certificate or `trustedCertificatesPem`).
    Tls,
}

/// What the engine is doing.
#[uniffi::remote(Enum)]
pub enum EngineState {
    /// Waiting for a command or the next poll.
    Idle,
    /// Running a command (login, logout, sync, reconfiguration).
    Running,
    /// A command waits at the sync mutex (held by the app).
    WaitingForSyncLock,
    /// A stop was requested; the running command ends at its next check.
    Stopping,
    /// Shut down.
    Closed,
}

/// Engine counters, for diagnostics and tests.
#[uniffi::remote(Record)]
pub struct EngineStats {
    /// Commands run.
    pub commands_run: u64,
    /// Sync runs (all sources, one source, push), polls included.
    pub sync_runs: u64,
    /// Requests merged into an equal queued command.
    pub coalesced_requests: u64,
    /// Polls that queued a sync.
    pub polls: u64,
    /// `in_progress` events merged with the previous one (notification queue full).
    pub progress_coalesced: u64,
    /// `in_progress` events dropped (notification queue full).
    pub progress_dropped: u64,
}

/// How one source of a run ended (in the run's final event).
#[uniffi::remote(Record)]
pub struct SourceOutcome {
    /// Source name.
    pub source_name: String,
    /// `OK`, `ERROR`, `SCHEMA_CHANGED` or `CANCELLED`.
    pub status: SyncStatus,
    /// `NONE` on success.
    pub error_code: ErrorCode,
    /// Empty on success.
    pub error_message: String,
}

/// A watched object that the server created: its temporary id is now `id`.
#[uniffi::remote(Record)]
pub struct CreatedObject {
    /// The temporary id the app knew.
    pub temp_id: String,
    /// The server's id (the watch follows it).
    pub id: String,
}

/// Changes to watched objects during one source's sync (last change wins between `updated`
/// and `deleted`).
#[uniffi::remote(Record)]
pub struct ObjectNotification {
    /// Source name.
    pub source_name: String,
    /// Creates the server confirmed.
    pub created: Vec<CreatedObject>,
    /// Objects that received attributes.
    pub updated: Vec<String>,
    /// Objects deleted.
    pub deleted: Vec<String>,
}

/// One sync notification. Per source, in sync order: `IN_PROGRESS` after each page with objects
/// (`processedCount` objects in the page, `cumulativeCount` so far, `totalCount` the server's
/// count); a non-final `ERROR` with `serverErrors` after a page that carried refused changes;
/// exactly one final (`OK`, `ERROR`, `SCHEMA_CHANGED` or `CANCELLED`). A sync of all sources
/// then sends one run event to the `*` listener (`sourceName == null`): `COMPLETE` (not
/// stopped; see `outcomes` for per-source results) or `CANCELLED`.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SyncNotification {
    /// Local source id; `None` for run events.
    pub source_id: Option<i64>,
    /// Source name; `None` for run events.
    pub source_name: Option<String>,
    /// Incremental or bulk.
    pub sync_type: SyncType,
    /// What happened.
    pub status: SyncStatus,
    /// True for the one final event per source per run, and for run events.
    pub is_final: bool,
    /// The server's object count for the source, if known.
    pub total_count: Option<u64>,
    /// Objects in the page this event reports (0 for finals and run events).
    pub processed_count: u64,
    /// Objects applied so far in this sync of the source.
    pub cumulative_count: u64,
    /// Why it failed; `NONE` otherwise.
    pub error_code: ErrorCode,
    /// The server's message or the error's text; empty on success.
    pub error_message: String,
    /// The source's unresolved server errors (non-final `ERROR` events only).
    pub server_errors: Vec<ServerError>,
    /// Per-source outcomes (run events only).
    pub outcomes: Vec<SourceOutcome>,
    /// Bulk sync step (`syncType == BULK` only): `start`, `download`, `change_db`, `blobs`,
    /// `ok`, `complete` or `error`. For `download`, `cumulativeCount` counts bytes received and
    /// `totalCount` is the file's size; for `ok`/`complete` they count objects imported.
    pub bulk_status: Option<String>,
    /// Bulk sync partition (`user`, `app`, or "" for the steps of the whole bulk sync).
    pub partition: Option<String>,
}

impl From<&core::SyncNotification> for SyncNotification {
    fn from(n: &core::SyncNotification) -> Self {
        Self {
            source_id: n.source_id,
            source_name: n.source_name.clone(),
            sync_type: n.sync_type,
            status: n.status,
            is_final: n.is_final,
            total_count: n.total_count,
            processed_count: n.processed_count,
            cumulative_count: n.cumulative_count,
            error_code: n.error_code,
            error_message: n.error_message.clone(),
            server_errors: n.server_errors.iter().cloned().map(Into::into).collect(),
            outcomes: n.outcomes.clone(),
            bulk_status: n.bulk_status.clone(),
            partition: n.partition.clone(),
        }
    }
}

/// The numeric RhoConnect error code of `code` (local kinds are `ERR_RUNTIME`, 3).
#[uniffi::export]
pub fn rho_error_code(code: ErrorCode) -> u32 {
    code.rho_code()
}

/// Why a listener failed. The engine logs it (warn) and carries on; the listener stays
/// registered.
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum ListenerError {
    /// The listener reported a failure (Kotlin: throw `ListenerException.Failed`).
    #[error("{reason}")]
    Failed {
        /// What went wrong.
        reason: String,
    },
    /// The listener threw something else (any other exception).
    #[error("threw {reason}")]
    Unexpected {
        /// The exception (its first line: class and message).
        reason: String,
    },
}

impl From<uniffi::UnexpectedUniFFICallbackError> for ListenerError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        // Kotlin sends the whole stack trace: its first line names the exception.
        let reason = e.reason.lines().next().unwrap_or_default().to_owned();
        Self::Unexpected { reason }
    }
}

/// Receives sync notifications, in order, on the engine's notifier thread.
#[uniffi::export(foreign)]
pub trait SyncListener: Send + Sync {
    /// One notification.
    ///
    /// # Errors
    /// Whatever the listener wants logged; the engine carries on.
    fn on_notification(&self, notification: SyncNotification) -> Result<(), ListenerError>;
}

/// Receives changes of watched objects (one call per source sync with changes).
#[uniffi::export(foreign)]
pub trait ObjectListener: Send + Sync {
    /// Changes to watched objects of one source.
    ///
    /// # Errors
    /// Whatever the listener wants logged; the engine carries on.
    fn on_objects(&self, notification: ObjectNotification) -> Result<(), ListenerError>;
}

/// Implements the core's listener trait with a foreign [`SyncListener`].
pub(crate) struct SyncListenerAdapter(pub(crate) Arc<dyn SyncListener>);

impl core::SyncListener for SyncListenerAdapter {
    fn on_notification(&self, n: &core::SyncNotification) -> Result<(), core::engine::ListenerError> {
        self.0
            .on_notification(n.into())
            .map_err(|e| core::engine::ListenerError(e.to_string()))
    }
}

/// Implements the core's object listener trait with a foreign [`ObjectListener`].
pub(crate) struct ObjectListenerAdapter(pub(crate) Arc<dyn ObjectListener>);

impl core::ObjectListener for ObjectListenerAdapter {
    fn on_objects(&self, n: &ObjectNotification) -> Result<(), core::engine::ListenerError> {
        self.0
            .on_objects(n.clone())
            .map_err(|e| core::engine::ListenerError(e.to_string()))
    }
}

/// A registered sync listener (from `Engine.setNotification`). `cancel()` removes it unless it
/// was replaced or already removed (a per-source listener is removed after its source's final
/// event). Closing the handle does not remove the listener (RhoConnect semantics): cancel first.
#[derive(Debug, uniffi::Object)]
pub struct NotificationHandle(pub(crate) core::NotificationHandle);

#[uniffi::export]
impl NotificationHandle {
    /// Removes the listener (no-op when replaced, removed, or the engine is gone).
    pub fn cancel(&self) {
        self.0.cancel();
    }

    /// The source it listens to (`None`: `*`).
    pub fn source(&self) -> Option<String> {
        self.0.source().map(str::to_owned)
    }
}

/// Benchmark of the FFI crossing: calls `listener` `count` times with `notification` from a
/// new Rust thread (as the engine's notifier does) and returns the nanoseconds taken.
/// Listener errors are counted as calls.
///
/// # Errors
/// `Internal` when the thread cannot start or panicked.
#[uniffi::export]
pub fn measure_listener(
    listener: Arc<dyn SyncListener>,
    notification: SyncNotification,
    count: u32,
) -> Result<u64, TideSyncError> {
    let internal = |reason: String| TideSyncError::Internal { reason };
    std::thread::Builder::new()
        .name("tidesync-bench".into())
        .spawn(move || {
            let start = Instant::now();
            for _ in 0..count {
                let _ = listener.on_notification(notification.clone());
            }
            u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
        })
        .map_err(|e| internal(format!("starting the benchmark thread: {e}")))?
        .join()
        .map_err(|_| internal("the benchmark thread panicked".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Failing;

    impl SyncListener for Failing {
        fn on_notification(&self, n: SyncNotification) -> Result<(), ListenerError> {
            Err(ListenerError::Failed {
                reason: format!("saw {:?}", n.status),
            })
        }
    }

    fn in_progress() -> core::SyncNotification {
        core::SyncNotification {
            source_id: Some(1),
            source_name: Some("Product".into()),
            sync_type: SyncType::Incremental,
            status: SyncStatus::Error,
            is_final: false,
            total_count: Some(300),
            processed_count: 0,
            cumulative_count: 50,
            error_code: ErrorCode::CustomSyncServer,
            error_message: "refused".into(),
            server_errors: vec![core::SyncErrorRecord {
                kind: "create".into(),
                object: Some("tmp-1".into()),
                message: "Product name 'error' is not allowed".into(),
                attrs: [("name".to_owned(), "error".to_owned())].into_iter().collect(),
                rollback: None,
            }],
            outcomes: Vec::new(),
            bulk_status: None,
            partition: None,
        }
    }

    #[test]
    fn ffi_notification_mirrors_the_core_fields_and_server_errors() {
        let n = SyncNotification::from(&in_progress());
        assert_eq!(n.source_name.as_deref(), Some("Product"));
        assert_eq!(
            (n.status, n.is_final, n.cumulative_count),
            (SyncStatus::Error, false, 50)
        );
        assert_eq!(n.error_code, ErrorCode::CustomSyncServer);
        assert_eq!(rho_error_code(n.error_code), 8);
        let e = &n.server_errors[0];
        assert_eq!((e.kind.as_str(), e.object_id.as_deref()), ("create", Some("tmp-1")));
        assert_eq!(e.detail, "Product name 'error' is not allowed");
        assert_eq!(e.attrs.get("name").map(String::as_str), Some("error"));
    }

    #[test]
    fn ffi_listener_errors_reach_the_core_as_listener_errors() {
        let adapter = SyncListenerAdapter(Arc::new(Failing));
        let r = core::SyncListener::on_notification(&adapter, &in_progress());
        let e = r.expect_err("the listener failed");
        assert!(e.0.contains("saw Error"), "{e}");
        let thrown = ListenerError::from(uniffi::UnexpectedUniFFICallbackError::new(
            "java.lang.IllegalStateException: boom\n\tat dev.tidesync.X.onNotification(X.kt:1)",
        ));
        assert_eq!(thrown.to_string(), "threw java.lang.IllegalStateException: boom");
    }

    #[test]
    fn ffi_measure_listener_calls_the_listener_from_another_thread() {
        struct Count(std::sync::atomic::AtomicU32, std::thread::ThreadId);
        impl SyncListener for Count {
            fn on_notification(&self, _: SyncNotification) -> Result<(), ListenerError> {
                assert_ne!(std::thread::current().id(), self.1);
                self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Ok(())
            }
        }
        let l = Arc::new(Count(0.into(), std::thread::current().id()));
        let n = SyncNotification::from(&in_progress());
        measure_listener(l.clone(), n, 10).expect("runs");
        assert_eq!(l.0.load(std::sync::atomic::Ordering::SeqCst), 10);
    }
}
