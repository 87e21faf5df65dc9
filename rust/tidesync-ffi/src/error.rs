//! The one public error of the FFI, mapped from the core error in one place.

use log::Level;
use tidesync_core::Error as CoreError;

/// What went wrong, grouped by what the app should do about it. (Fields are not called
/// `message`: that clashes with `Throwable.message` in Kotlin.)
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum TideSyncError {
    /// No answer from the server: retry later; nothing local was lost.
    #[error("network: {reason}")]
    Network {
        /// What failed.
        reason: String,
    },
    /// No secure connection: the server's certificate is not trusted (unknown CA,
    /// self-signed, expired, another host) or the TLS handshake failed. Nothing was sent.
    #[error("TLS: {reason}")]
    Tls {
        /// What the TLS library reported.
        reason: String,
    },
    /// Not logged in, or the server refused the credentials or session: show the login screen.
    #[error("unauthorized: {detail}")]
    Unauthorized {
        /// The server's words.
        detail: String,
    },
    /// The server answered with an error status.
    #[error("server error {status}: {detail}")]
    Server {
        /// HTTP status.
        status: u16,
        /// The body the server sent (truncated).
        detail: String,
    },
    /// The server's answer does not follow the protocol; nothing was applied.
    #[error("protocol: {reason}")]
    Protocol {
        /// What did not parse.
        reason: String,
    },
    /// The local database failed (disk full, corrupt, newer than this build).
    #[error("storage: {reason}")]
    Storage {
        /// SQLite's words.
        reason: String,
    },
    /// Another sync is running.
    #[error("busy")]
    Busy,
    /// The sync was stopped; it resumes where it stopped.
    #[error("stopped")]
    Stopped,
    /// A bad argument (unknown source, bad attribute name, …).
    #[error("invalid argument: {reason}")]
    InvalidArgument {
        /// What is wrong.
        reason: String,
    },
    /// No such object or error record.
    #[error("not found: {what}")]
    NotFound {
        /// What was looked for.
        what: String,
    },
    /// A bulk data file was corrupt, truncated or did not match; nothing changed and the next
    /// sync tries the bulk sync again.
    #[error("bulk data file: {reason}")]
    BulkFile {
        /// What is wrong with the file.
        reason: String,
    },
    /// The object was closed or shut down.
    #[error("closed")]
    Closed,
    /// The server's schema changed: a new bulk sync is needed.
    #[error("the server's schema changed")]
    SchemaChanged,
    /// A bug in TideSync (a panic or a broken invariant); please report it.
    #[error("internal error: {reason}")]
    Internal {
        /// What happened.
        reason: String,
    },
}

impl From<CoreError> for TideSyncError {
    fn from(e: CoreError) -> Self {
        let (out, level) = match &e {
            CoreError::Network { reason } => (Self::Network { reason: reason.clone() }, Level::Warn),
            CoreError::Tls { reason } => (Self::Tls { reason: reason.clone() }, Level::Warn),
            CoreError::Unauthorized { message } => (
                Self::Unauthorized {
                    detail: message.clone(),
                },
                Level::Info,
            ),
            CoreError::Server { status, message } => (
                Self::Server {
                    status: *status,
                    detail: message.clone(),
                },
                Level::Warn,
            ),
            CoreError::Protocol { reason } => (Self::Protocol { reason: reason.clone() }, Level::Warn),
            CoreError::Storage { reason } => (Self::Storage { reason: reason.clone() }, Level::Error),
            CoreError::IncompatibleSchema { .. } => (Self::Storage { reason: e.to_string() }, Level::Error),
            CoreError::Busy => (Self::Busy, Level::Info),
            CoreError::Stopped => (Self::Stopped, Level::Info),
            CoreError::InvalidInput { reason } => (Self::InvalidArgument { reason: reason.clone() }, Level::Info),
            CoreError::NotFound { what } => (Self::NotFound { what: what.clone() }, Level::Info),
            CoreError::SchemaChanged => (Self::SchemaChanged, Level::Warn),
            CoreError::BulkFile { reason } => (Self::BulkFile { reason: reason.clone() }, Level::Warn),
            CoreError::Closed => (Self::Closed, Level::Info),
            CoreError::Internal { reason } => (Self::Internal { reason: reason.clone() }, Level::Error),
        };
        log::log!(level, "{e}");
        out
    }
}
