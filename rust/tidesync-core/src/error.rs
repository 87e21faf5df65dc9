//! The error type of the core: few variants, each one a caller can act on.

/// What went wrong, grouped by what the caller should do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// No answer from the server (connection refused, reset, timeout). Retry later; nothing
    /// local was lost.
    #[error("network: {reason}")]
    Network {
        /// What failed.
        reason: String,
    },
    /// No secure connection: the server's certificate is not trusted (unknown CA, self-signed,
    /// expired, issued for another host) or the TLS handshake failed. Nothing was sent. Fix the
    /// server's certificate, or trust its CA (`HttpConfig::trusted_certificates_pem`).
    #[error("TLS: {reason}")]
    Tls {
        /// What rustls reported.
        reason: String,
    },
    /// Not logged in, or the server rejected the session or the credentials (HTTP 401). Show
    /// the login screen.
    #[error("unauthorized: {message}")]
    Unauthorized {
        /// The server's message.
        message: String,
    },
    /// The server answered with an error status.
    #[error("server error {status}: {message}")]
    Server {
        /// HTTP status.
        status: u16,
        /// The body the server sent (truncated).
        message: String,
    },
    /// The server's answer does not follow the protocol (malformed page, wrong version).
    /// Nothing was applied.
    #[error("protocol: {reason}")]
    Protocol {
        /// What did not parse.
        reason: String,
    },
    /// The local database failed (disk full, corrupt, newer than this build).
    #[error("storage: {reason}")]
    Storage {
        /// SQLite's message.
        reason: String,
    },
    /// The database was written by a newer TideSync.
    #[error("database schema version {found} is newer than this build supports ({supported})")]
    IncompatibleSchema {
        /// Version in the file.
        found: u32,
        /// Highest version this build knows.
        supported: u32,
    },
    /// Another sync is running.
    #[error("a sync is already running")]
    Busy,
    /// The sync was stopped (`stop_sync`); it resumes where it stopped.
    #[error("stopped")]
    Stopped,
    /// A bad argument: unknown source, bad attribute name, malformed condition…
    #[error("invalid input: {reason}")]
    InvalidInput {
        /// What is wrong.
        reason: String,
    },
    /// No such object.
    #[error("not found: {what}")]
    NotFound {
        /// What was looked for.
        what: String,
    },
    /// The server's schema changed (`schema-changed`): the sync stopped; a new bulk sync is
    /// needed.
    #[error("the server's schema changed: a new bulk sync is needed")]
    SchemaChanged,
    /// A bulk data file was corrupt, truncated or did not match the request (spec §6.4).
    /// Nothing was changed; the bulk state stays "needed", so the next sync tries again.
    #[error("bulk data file: {reason}")]
    BulkFile {
        /// What is wrong with the file.
        reason: String,
    },
    /// The engine was shut down or closed.
    #[error("closed")]
    Closed,
    /// A bug: an invariant broke or a task panicked. Reported, never silently ignored.
    #[error("internal error: {reason}")]
    Internal {
        /// What happened.
        reason: String,
    },
}

/// The core's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        Error::InvalidInput { reason: reason.into() }
    }

    pub(crate) fn protocol(reason: impl Into<String>) -> Self {
        Error::Protocol { reason: reason.into() }
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        if let rusqlite::Error::SqliteFailure(f, _) = &e
            && f.code == rusqlite::ErrorCode::OperationInterrupted
        {
            return Error::Stopped;
        }
        Error::Storage { reason: e.to_string() }
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Storage {
            reason: format!("stored JSON: {e}"),
        }
    }
}
