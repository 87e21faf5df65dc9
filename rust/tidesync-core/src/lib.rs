//! TideSync core: the local store, models, the RhoConnect sync client and (later) the engine.
//!
//! This crate has no UniFFI dependency; `tidesync-ffi` wraps it for Kotlin and Swift.
//!
//! ```no_run
//! use tidesync_core::{SourceDef, SyncClient, SyncConfig, SyncOptions};
//! let client = SyncClient::open("app.db".as_ref(), SyncConfig::new("http://127.0.0.1:9292/application/"))?;
//! client.define_source(&SourceDef::new("Product"))?;
//! client.login("alice", "password")?;
//! let report = client.sync_all(&SyncOptions::default(), None)?;
//! assert!(report.ok());
//! # Ok::<(), tidesync_core::Error>(())
//! ```

pub mod engine;
pub mod error;
pub mod model;
pub mod protocol;
pub mod query;
pub mod store;
pub mod sync;

pub use engine::{
    Engine, EngineConfig, EngineState, EngineStats, ErrorCode, LoginResult, NotificationHandle, ObjectListener,
    ObjectNotification, SyncListener, SyncLock, SyncNotification, SyncStatus,
};
pub use error::{Error, Result};
pub use model::{Attrs, BelongsTo, ModelKind, Object, Partition, SourceDef, SyncType};
pub use protocol::{
    BulkEvent, BulkStep, PageEvent, PushRegistration, SearchReport, SearchRequest, SourceReport, SyncCtx, SyncObserver,
};
pub use query::{Cond, Query};
pub use store::Store;
pub use sync::{
    BulkReport, BulkSyncState, CreateErrorAction, DeleteErrorAction, SyncClient, SyncConfig, SyncErrorRecord,
    SyncOptions, SyncReport, UpdateErrorAction,
};
