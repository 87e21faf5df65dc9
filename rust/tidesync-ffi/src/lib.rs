//! The UniFFI surface of TideSync: what Kotlin and Swift see.
//!
//! A thin facade over `tidesync-core`: records copied by value, one error enum mapped from the
//! core error in one place ([`error`]), objects for handles with identity. Calls are
//! coarse-grained: one call per operation or batch, never per attribute. No panic crosses the
//! FFI: UniFFI catches panics in exported calls and every fallible call returns
//! [`TideSyncError`].

#![warn(missing_docs)]

uniffi::setup_scaffolding!("tidesync");

mod client;
mod error;
mod logging;
mod types;

pub use client::TideSyncClient;
pub use error::TideSyncError;
pub use logging::{LogLevel, LogSink, init_logging};
pub use types::*;
