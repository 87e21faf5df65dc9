//! The UniFFI surface of TideSync: what Kotlin and Swift see.
//!
//! A thin facade over `tidesync-core`: one object, [`Engine`] (the background sync engine and
//! the local data), handles with identity ([`SyncLock`], [`NotificationHandle`]), records copied
//! by value, foreign listener traits ([`SyncListener`], [`ObjectListener`]) adapted to the
//! core's, and one error enum mapped from the core error in one place ([`error`]). Calls are
//! coarse-grained: one call per operation or batch and one callback per page or event, never
//! per object. No panic crosses the FFI: UniFFI catches panics in exported calls, the engine
//! catches them in listeners, and a listener that throws is logged ([`ListenerError`]).

#![warn(missing_docs)]

uniffi::setup_scaffolding!("tidesync");

mod bulk;
mod data;
mod engine;
mod error;
mod listener;
mod logging;
mod types;

pub use engine::{Engine, SyncLock};
pub use error::TideSyncError;
pub use listener::{
    ListenerError, NotificationHandle, ObjectListener, SyncListener, SyncNotification, measure_listener, rho_error_code,
};
pub use logging::{LogLevel, LogSink, init_logging};
pub use types::*;
