//! What the app hears while the engine syncs: [`SyncNotification`] (per source and per run),
//! [`ObjectNotification`] (watched objects), [`LoginResult`], and the listener traits.
//!
//! Every type is `serde::Serialize`, so a notification prints as one JSON line (`tidesync sync
//! --notifications`) and crosses the FFI as a record. Strings are escaped by the serializer (spec
//! H12 does not apply).
//!
//! # Sequence (fixes spec H3 and H11)
//!
//! For each source of a run, in sync order:
//!
//! 1. `in_progress` after every committed page that carried objects (`count > 0`):
//!    `processed_count` = objects in that page, `cumulative_count` = objects applied so far in
//!    this sync of the source, `total_count` = the server's `total_count` (the server's object
//!    count for the source, not what this client will receive).
//! 2. `error` (**not final**, `is_final = false`, `error_code = custom_sync_server`) after a
//!    committed page that carried server errors (`source-error`, `create-error`, `update-error`,
//!    `delete-error`); `server_errors` holds the source's unresolved errors as stored after that
//!    page (resolve them with `SyncClient::on_sync_*_error`). It follows the page's `in_progress`.
//! 3. Exactly one final event: `ok`, `error` (with `error_code`/`error_message`),
//!    `schema_changed`, or `cancelled` (after `stop_sync`, also for sources the run did not
//!    reach). `processed_count` is 0, `cumulative_count` the objects applied in this sync of the
//!    source. A per-source listener is removed after it received this event.
//! 4. An [`ObjectNotification`] for the source if watched objects changed.
//!
//! A sync of all sources then sends one run event to the `*` listener (`source_name: null`):
//! `complete` (the run was not stopped; it does **not** mean that every source succeeded — see
//! `outcomes` and [`SyncNotification::all_ok`]) or `cancelled`. A sync of one source (or
//! `push_changes`) sends no run event, as in RhoConnect.
//!
//! A sync of all sources that starts with a bulk sync first sends its `sync_type: bulk` events to
//! `*` (`source_name: null`, not final, `bulk_status` `start` → per partition `start`, `download`,
//! `change_db`, `ok` → `blobs` → `complete`, or `error`); see ARCHITECTURE.md "Bulk
//! notifications".
//!
//! Differences from RhoConnect: `processed_count` and `cumulative_count` count objects (inserts +
//! deletes per page, as the server counts them) instead of repeating `total_count` and the page
//! count; server errors are not final; a stop yields `cancelled` instead of silence; `complete`
//! carries per-source outcomes.

use serde::Serialize;

use crate::error::Error;
use crate::sync::SyncErrorRecord;

/// How the data came: the same type as a source's sync type ([`crate::model::SyncType`]).
pub use crate::model::SyncType;

/// The status of a [`SyncNotification`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncStatus {
    /// A page was applied.
    InProgress,
    /// The source synced.
    Ok,
    /// The source failed (final), or a page carried server errors (not final).
    Error,
    /// A sync of all sources ended without being stopped (run event, `*` only).
    Complete,
    /// The server's schema changed; a bulk sync is needed.
    SchemaChanged,
    /// Stopped by `stop_sync`, `login`, `logout`, a server change or shutdown.
    Cancelled,
}

/// Error codes, as RhoConnect's `RhoError` (spec §10.1), plus local kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// No error.
    None,
    /// No answer from the server (connection failure, timeout, dropped connection).
    Network,
    /// The server answered with an error status other than 401.
    RemoteServer,
    /// Unknown source or another local precondition failed.
    Runtime,
    /// The server's answer did not follow the protocol.
    UnexpectedServerResponse,
    /// A sync was requested without a session.
    ClientNotLoggedIn,
    /// A page carried server errors (`server_errors`).
    CustomSyncServer,
    /// HTTP 401: credentials or session refused.
    Unauthorized,
    /// Stopped by the app.
    CancelledByUser,
    /// The local database failed.
    Storage,
    /// A bad argument.
    InvalidInput,
    /// No secure connection: the server's certificate is not trusted, or the TLS handshake
    /// failed. Retrying does not help until the certificate or the trusted CAs change.
    Tls,
}

impl ErrorCode {
    /// The numeric RhoConnect code (local kinds map to `ERR_RUNTIME`, 3).
    pub fn rho_code(self) -> u32 {
        match self {
            ErrorCode::None => 0,
            ErrorCode::Network | ErrorCode::Tls => 1,
            ErrorCode::RemoteServer => 2,
            ErrorCode::Runtime | ErrorCode::Storage | ErrorCode::InvalidInput => 3,
            ErrorCode::UnexpectedServerResponse => 4,
            ErrorCode::ClientNotLoggedIn => 7,
            ErrorCode::CustomSyncServer => 8,
            ErrorCode::Unauthorized => 9,
            ErrorCode::CancelledByUser => 10,
        }
    }

    /// The code of a core error. Every variant is mapped by name, so a new one is mapped on
    /// purpose.
    pub fn of(e: &Error) -> ErrorCode {
        match e {
            Error::Network { .. } => ErrorCode::Network,
            Error::Tls { .. } => ErrorCode::Tls,
            Error::Unauthorized { .. } => ErrorCode::Unauthorized,
            Error::Server { .. } => ErrorCode::RemoteServer,
            Error::Protocol { .. } => ErrorCode::UnexpectedServerResponse,
            Error::Storage { .. } | Error::IncompatibleSchema { .. } => ErrorCode::Storage,
            Error::Busy | Error::NotFound { .. } => ErrorCode::Runtime,
            Error::Stopped => ErrorCode::CancelledByUser,
            Error::InvalidInput { .. } => ErrorCode::InvalidInput,
            Error::SchemaChanged | Error::BulkFile { .. } => ErrorCode::UnexpectedServerResponse,
            Error::Closed | Error::Internal { .. } => ErrorCode::Runtime,
        }
    }

    /// The message to show with [`ErrorCode::of`]: the server's body for HTTP errors (as
    /// RhoConnect's `error_message`), the error's text otherwise.
    pub fn message_of(e: &Error) -> String {
        match e {
            Error::Unauthorized { message } | Error::Server { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }
}

/// How one source of a run ended (in the run's final event).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceOutcome {
    /// Source name.
    pub source_name: String,
    /// `ok`, `error`, `schema_changed` or `cancelled`.
    pub status: SyncStatus,
    /// [`ErrorCode::None`] on success.
    pub error_code: ErrorCode,
    /// Empty on success.
    pub error_message: String,
}

/// One sync notification (spec §9, with the fixes of H3 and H11; see the module docs for the
/// exact sequence).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SyncNotification {
    /// Local source id; `None` for run events and unknown sources.
    pub source_id: Option<i64>,
    /// Source name; `None` for run events (`complete`, run `cancelled`).
    pub source_name: Option<String>,
    /// Incremental or bulk.
    pub sync_type: SyncType,
    /// What happened.
    pub status: SyncStatus,
    /// True for the one final event per source per run, and for run events.
    #[serde(rename = "final")]
    pub is_final: bool,
    /// The server's object count for the source (`total_count` of the last page), if known.
    pub total_count: Option<u64>,
    /// Objects in the page this event reports (0 for final and run events).
    pub processed_count: u64,
    /// Objects applied so far in this sync of the source.
    pub cumulative_count: u64,
    /// Why it failed; [`ErrorCode::None`] otherwise.
    pub error_code: ErrorCode,
    /// The server's message or the error's text; empty on success.
    pub error_message: String,
    /// Server errors (non-final `error` events only).
    pub server_errors: Vec<SyncErrorRecord>,
    /// Per-source outcomes (run events only).
    pub outcomes: Vec<SourceOutcome>,
    /// Bulk sync step (`sync_type` bulk only): `start`, `download`, `change_db`, `blobs`, `ok`,
    /// `complete` or `error` (spec §6.5).
    pub bulk_status: Option<String>,
    /// Bulk sync partition (`user` or `app`; empty for the steps of the whole bulk sync).
    pub partition: Option<String>,
}

impl SyncNotification {
    pub(crate) fn source(id: Option<i64>, name: &str, status: SyncStatus, is_final: bool) -> Self {
        Self {
            source_id: id,
            source_name: Some(name.to_owned()),
            sync_type: SyncType::Incremental,
            status,
            is_final,
            total_count: None,
            processed_count: 0,
            cumulative_count: 0,
            error_code: ErrorCode::None,
            error_message: String::new(),
            server_errors: Vec::new(),
            outcomes: Vec::new(),
            bulk_status: None,
            partition: None,
        }
    }

    pub(crate) fn run(status: SyncStatus, outcomes: Vec<SourceOutcome>) -> Self {
        Self {
            source_name: None,
            outcomes,
            ..Self::source(None, "", status, true)
        }
    }

    /// For a run event: true when every source of the run ended `ok`.
    pub fn all_ok(&self) -> bool {
        self.outcomes.iter().all(|o| o.status == SyncStatus::Ok)
    }

    /// The notification as one JSON line (what `tidesync sync --notifications` prints).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"serialize_error\":\"{e}\"}}"))
    }
}

/// A watched object that the server created: its temporary id is now `id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CreatedObject {
    /// The temporary id the app knew.
    pub temp_id: String,
    /// The server's id (the watch follows it).
    pub id: String,
}

/// Changes to watched objects during one source's sync (spec §9.6, per object, last change
/// wins between `updated` and `deleted`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ObjectNotification {
    /// Source name.
    pub source_name: String,
    /// Creates the server confirmed (links).
    pub created: Vec<CreatedObject>,
    /// Objects that received attributes.
    pub updated: Vec<String>,
    /// Objects deleted.
    pub deleted: Vec<String>,
}

impl ObjectNotification {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.created.is_empty() && self.updated.is_empty() && self.deleted.is_empty()
    }
}

/// The outcome of a login, as RhoConnect's login callback: an error code and message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoginResult {
    /// [`ErrorCode::None`] when signed in.
    pub error_code: ErrorCode,
    /// The server's message (e.g. `Unable to authenticate`), empty on success.
    pub error_message: String,
    /// The typed error.
    #[serde(skip)]
    pub error: Option<Error>,
}

impl LoginResult {
    pub(crate) fn from_result(r: crate::Result<()>) -> Self {
        match r {
            Ok(()) => Self {
                error_code: ErrorCode::None,
                error_message: String::new(),
                error: None,
            },
            Err(e) => Self {
                error_code: ErrorCode::of(&e),
                error_message: ErrorCode::message_of(&e),
                error: Some(e),
            },
        }
    }

    /// True when signed in.
    pub fn is_ok(&self) -> bool {
        self.error.is_none()
    }

    /// As a `Result`.
    ///
    /// # Errors
    /// The login's error.
    pub fn into_result(self) -> crate::Result<()> {
        self.error.map_or(Ok(()), Err)
    }
}

/// Why a listener failed (logged by the engine, which carries on).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("listener failed: {0}")]
pub struct ListenerError(pub String);

/// Receives sync notifications on the engine's notifier thread, in order. Closures
/// `Fn(&SyncNotification)` are listeners.
pub trait SyncListener: Send + Sync {
    /// One notification. An error or a panic is logged; the engine carries on.
    ///
    /// # Errors
    /// Whatever the listener wants logged.
    fn on_notification(&self, n: &SyncNotification) -> Result<(), ListenerError>;
}

impl<F> SyncListener for F
where
    F: Fn(&SyncNotification) + Send + Sync,
{
    fn on_notification(&self, n: &SyncNotification) -> Result<(), ListenerError> {
        self(n);
        Ok(())
    }
}

/// Receives object notifications on the notifier thread. Closures `Fn(&ObjectNotification)`
/// are listeners.
pub trait ObjectListener: Send + Sync {
    /// Changes to watched objects of one source.
    ///
    /// # Errors
    /// Whatever the listener wants logged.
    fn on_objects(&self, n: &ObjectNotification) -> Result<(), ListenerError>;
}

impl<F> ObjectListener for F
where
    F: Fn(&ObjectNotification) + Send + Sync,
{
    fn on_objects(&self, n: &ObjectNotification) -> Result<(), ListenerError> {
        self(n);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_notification_serializes_as_one_json_line_with_escaped_strings() {
        let mut n = SyncNotification::source(Some(1), "Pro\"duct", SyncStatus::InProgress, false);
        n.total_count = Some(300);
        n.processed_count = 50;
        n.cumulative_count = 100;
        let json = n.to_json();
        assert!(!json.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
        assert_eq!(v["source_name"], "Pro\"duct");
        assert_eq!(v["status"], "in_progress");
        assert_eq!(v["final"], false);
        assert_eq!(v["total_count"], 300);
        assert_eq!(v["processed_count"], 50);
        assert_eq!(v["cumulative_count"], 100);
        assert_eq!(v["error_code"], "none");
        assert_eq!(v["error_message"], "");
        assert_eq!(v["sync_type"], "incremental");
    }

    #[test]
    fn engine_error_codes_follow_rhoconnect() {
        let e = Error::Unauthorized {
            message: "Unable to authenticate".into(),
        };
        assert_eq!(ErrorCode::of(&e), ErrorCode::Unauthorized);
        assert_eq!(ErrorCode::of(&e).rho_code(), 9);
        assert_eq!(ErrorCode::message_of(&e), "Unable to authenticate");
        let e = Error::Network { reason: "reset".into() };
        assert_eq!(ErrorCode::of(&e).rho_code(), 1);
        assert_eq!(ErrorCode::of(&Error::Stopped).rho_code(), 10);
        let r = LoginResult::from_result(Err(e.clone()));
        assert!(!r.is_ok());
        assert_eq!(r.into_result(), Err(e));
    }
}
