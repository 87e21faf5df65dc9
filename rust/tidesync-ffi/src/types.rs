//! Records and enums copied across the FFI.

use std::collections::HashMap;
use std::time::Duration;

use tidesync_core as core;
use tidesync_core::ErrorCode;

/// How an [`crate::Engine`] is opened. Settings left `None` come from the database (stored by
/// an earlier run or setter), else the defaults.
#[derive(Debug, Clone, uniffi::Record)]
pub struct EngineConfig {
    /// The database file (created if missing).
    pub db_path: String,
    /// The RhoConnect `syncserver` URL, e.g. `https://host/application/`. Required the first
    /// time; a URL different from the stored one is a new account (see `setSyncServer`).
    #[uniffi(default)]
    pub sync_server: Option<String>,
    /// Objects per page (default 2000).
    #[uniffi(default)]
    pub page_size: Option<u32>,
    /// Seconds between background syncs; 0 turns polling off (default 60).
    #[uniffi(default)]
    pub poll_interval: Option<u32>,
    /// Verify TLS certificates (default true). Turn off only for test servers.
    #[uniffi(default)]
    pub ssl_verify_peer: Option<bool>,
    /// The directory for files of blob attributes (created if missing; default
    /// `<dbPath>.files`). The store owns its `blobs/` subdirectory: files the app gives as blob
    /// values are copied there, downloaded blobs land there, and files nobody references are
    /// removed after each sync. Use `context.filesDir` (or `noBackupFilesDir`) on Android.
    #[uniffi(default)]
    pub files_dir: Option<String>,
    /// Connect timeout in milliseconds (default 10 s; not stored).
    #[uniffi(default)]
    pub connect_timeout_ms: Option<u32>,
    /// Response timeout in milliseconds (default 60 s; not stored). It bounds how long a stop
    /// waits for a stalled request.
    #[uniffi(default)]
    pub read_timeout_ms: Option<u32>,
    /// Certificates (PEM) to trust instead of the built-in Mozilla roots: your private CA or
    /// a self-signed server certificate (not stored). An untrusted server fails with
    /// `TideSyncError.Tls`.
    #[uniffi(default)]
    pub trusted_certificates_pem: Option<String>,
}

impl From<&EngineConfig> for core::EngineConfig {
    fn from(c: &EngineConfig) -> Self {
        let ms = |v: Option<u32>| v.map(|ms| Duration::from_millis(ms.into()));
        core::EngineConfig {
            sync_server: c.sync_server.clone(),
            page_size: c.page_size,
            poll_interval: c.poll_interval,
            ssl_verify_peer: c.ssl_verify_peer,
            connect_timeout: ms(c.connect_timeout_ms),
            read_timeout: ms(c.read_timeout_ms),
            trusted_certificates_pem: c.trusted_certificates_pem.clone(),
            files_dir: c.files_dir.as_ref().map(std::path::PathBuf::from),
        }
    }
}

/// Whose data a source is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum Partition {
    /// One data set per user.
    User,
    /// Shared by all users.
    App,
    /// Never synced.
    Local,
}

/// `belongs_to`: `attr` holds the id of an object of `source`.
#[derive(Debug, Clone, uniffi::Record)]
pub struct BelongsTo {
    /// The attribute.
    pub attr: String,
    /// The parent source.
    pub source: String,
}

/// A source (model) declaration.
#[derive(Debug, Clone, uniffi::Record)]
pub struct SourceDefinition {
    /// Name (the server's source name).
    pub name: String,
    /// Whose data it is.
    pub partition: Partition,
    /// Synced with the server (default true; never for [`Partition::Local`]).
    #[uniffi(default = true)]
    pub sync: bool,
    /// Sync order, ascending (default 0).
    #[uniffi(default)]
    pub priority: i64,
    /// `None`: property bag (any attributes). `Some(columns)`: a fixed-schema table.
    #[uniffi(default)]
    pub fixed_columns: Option<Vec<String>>,
    /// Attributes holding files (blob attributes). Write the path of a file you wrote
    /// (absolute, or relative to `filesDir`): the store copies it into `filesDir/blobs/` and
    /// pushes it as a multipart upload. Reads return the absolute path of the store's copy, or
    /// the server URL while a synced blob is not downloaded yet.
    #[uniffi(default)]
    pub blob_attrs: Vec<String>,
    /// References to other sources.
    #[uniffi(default)]
    pub belongs_to: Vec<BelongsTo>,
}

impl From<SourceDefinition> for core::SourceDef {
    fn from(d: SourceDefinition) -> Self {
        let mut def = core::SourceDef::new(d.name).priority(d.priority);
        def.partition = match d.partition {
            Partition::User => core::Partition::User,
            Partition::App => core::Partition::App,
            Partition::Local => core::Partition::Local,
        };
        def.sync = d.sync && d.partition != Partition::Local;
        if let Some(columns) = d.fixed_columns {
            def.kind = core::ModelKind::FixedSchema { columns };
        }
        def.blob_attrs = d.blob_attrs;
        def.belongs_to = d
            .belongs_to
            .into_iter()
            .map(|b| core::BelongsTo {
                attr: b.attr,
                source: b.source,
            })
            .collect();
        def
    }
}

/// An object: id and string attributes.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SyncObject {
    /// Object id (a temporary `tmp-…` id until the server confirms a create).
    pub id: String,
    /// Attributes.
    pub attrs: HashMap<String, String>,
}

impl From<core::Object> for SyncObject {
    fn from(o: core::Object) -> Self {
        Self {
            id: o.id,
            attrs: o.attrs.into_iter().collect(),
        }
    }
}

/// One condition on an attribute (`id` names the object id).
#[derive(Debug, Clone, uniffi::Enum)]
pub enum Condition {
    /// `attr = value`
    Eq {
        /// Attribute.
        attr: String,
        /// Value.
        value: String,
    },
    /// `attr != value`
    Ne {
        /// Attribute.
        attr: String,
        /// Value.
        value: String,
    },
    /// `attr < value` (text order)
    Lt {
        /// Attribute.
        attr: String,
        /// Value.
        value: String,
    },
    /// `attr > value`
    Gt {
        /// Attribute.
        attr: String,
        /// Value.
        value: String,
    },
    /// `attr <= value`
    Le {
        /// Attribute.
        attr: String,
        /// Value.
        value: String,
    },
    /// `attr >= value`
    Ge {
        /// Attribute.
        attr: String,
        /// Value.
        value: String,
    },
    /// SQL LIKE pattern
    Like {
        /// Attribute.
        attr: String,
        /// Pattern (`%`, `_`).
        pattern: String,
    },
    /// one of
    In {
        /// Attribute.
        attr: String,
        /// Values.
        values: Vec<String>,
    },
    /// absent
    IsNull {
        /// Attribute.
        attr: String,
    },
    /// present
    NotNull {
        /// Attribute.
        attr: String,
    },
}

impl From<Condition> for core::Cond {
    fn from(c: Condition) -> Self {
        match c {
            Condition::Eq { attr, value } => core::Cond::Eq(attr, value),
            Condition::Ne { attr, value } => core::Cond::Ne(attr, value),
            Condition::Lt { attr, value } => core::Cond::Lt(attr, value),
            Condition::Gt { attr, value } => core::Cond::Gt(attr, value),
            Condition::Le { attr, value } => core::Cond::Le(attr, value),
            Condition::Ge { attr, value } => core::Cond::Ge(attr, value),
            Condition::Like { attr, pattern } => core::Cond::Like(attr, pattern),
            Condition::In { attr, values } => core::Cond::In(attr, values),
            Condition::IsNull { attr } => core::Cond::IsNull(attr),
            Condition::NotNull { attr } => core::Cond::NotNull(attr),
        }
    }
}

/// A find: conditions (all, or any with `match_any`), order, paging, selected attributes.
#[derive(Debug, Clone, Default, uniffi::Record)]
pub struct FindQuery {
    /// Conditions.
    #[uniffi(default)]
    pub conditions: Vec<Condition>,
    /// Match when any condition holds (default: all).
    #[uniffi(default)]
    pub match_any: bool,
    /// Order by these attributes.
    #[uniffi(default)]
    pub order_by: Vec<String>,
    /// Descending order.
    #[uniffi(default)]
    pub descending: bool,
    /// At most this many.
    #[uniffi(default)]
    pub limit: Option<u64>,
    /// Skip this many.
    #[uniffi(default)]
    pub offset: Option<u64>,
    /// Only these attributes in the results.
    #[uniffi(default)]
    pub select: Option<Vec<String>>,
}

impl FindQuery {
    pub(crate) fn cond(&self) -> Option<core::Cond> {
        if self.conditions.is_empty() {
            return None;
        }
        let cs: Vec<core::Cond> = self.conditions.iter().cloned().map(Into::into).collect();
        Some(if self.match_any {
            core::Cond::Or(cs)
        } else {
            core::Cond::And(cs)
        })
    }
}

impl From<FindQuery> for core::Query {
    fn from(q: FindQuery) -> Self {
        core::Query {
            cond: q.cond(),
            order: q.order_by.iter().map(|a| (a.clone(), q.descending)).collect(),
            limit: q.limit,
            offset: q.offset,
            select: q.select,
        }
    }
}

/// An update of one object (batch updates).
#[derive(Debug, Clone, uniffi::Record)]
pub struct ObjectUpdate {
    /// Object id.
    pub id: String,
    /// Attributes to set.
    pub attrs: HashMap<String, String>,
}

/// The outcome of one source in a sync.
#[derive(Debug, Clone, uniffi::Record)]
pub struct SourceResult {
    /// Source name.
    pub name: String,
    /// Synced without error.
    pub ok: bool,
    /// Local changes pushed.
    pub pushed: u64,
    /// Pages applied.
    pub pages: u64,
    /// Objects applied from the server (inserts + deletes).
    pub objects_applied: u64,
    /// Objects of the source in the local store afterwards.
    pub local_objects: u64,
    /// Why it failed ([`ErrorCode::None`] when `ok`).
    pub error_code: ErrorCode,
    /// The error's text, if any.
    pub error_message: Option<String>,
}

impl From<core::SourceReport> for SourceResult {
    fn from(s: core::SourceReport) -> Self {
        Self {
            name: s.name,
            ok: true,
            pushed: s.pushed as u64,
            pages: s.pages as u64,
            objects_applied: s.objects as u64,
            local_objects: s.local_objects,
            error_code: ErrorCode::None,
            error_message: None,
        }
    }
}

impl SourceResult {
    /// A source that failed with `e`; `local_objects` as counted now.
    pub(crate) fn failed(name: String, e: &core::Error, local_objects: u64) -> Self {
        Self {
            name,
            ok: false,
            pushed: 0,
            pages: 0,
            objects_applied: 0,
            local_objects,
            error_code: ErrorCode::of(e),
            error_message: Some(ErrorCode::message_of(e)),
        }
    }
}

/// What a search brought for one source.
#[derive(Debug, Clone, uniffi::Record)]
pub struct SearchResult {
    /// Source name.
    pub source: String,
    /// Objects received (and stored like synced ones).
    pub objects: u64,
    /// The server's `search-error` for this source, if any.
    pub error: Option<String>,
}

/// A refused change as the server reported it.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ServerError {
    /// `create`, `update`, `delete` or `source`.
    pub kind: String,
    /// The object.
    pub object_id: Option<String>,
    /// The server's words.
    pub detail: String,
    /// What was sent.
    pub attrs: HashMap<String, String>,
    /// For updates: the server's copy.
    pub rollback: Option<HashMap<String, String>>,
}

impl From<core::SyncErrorRecord> for ServerError {
    fn from(r: core::SyncErrorRecord) -> Self {
        Self {
            kind: r.kind,
            object_id: r.object,
            detail: r.message,
            attrs: r.attrs.into_iter().collect(),
            rollback: r.rollback.map(|a| a.into_iter().collect()),
        }
    }
}

/// What to do with refused creates.
#[derive(Debug, Clone, Copy, uniffi::Enum)]
pub enum CreateErrorAction {
    /// Drop the object locally.
    Delete,
    /// Send it again as a new create.
    Recreate,
}

/// What to do with refused updates.
#[derive(Debug, Clone, Copy, uniffi::Enum)]
pub enum UpdateErrorAction {
    /// Send the refused values again (newer local edits win).
    Retry,
    /// Take the server's copy.
    Rollback,
}

/// What to do with refused deletes.
#[derive(Debug, Clone, Copy, uniffi::Enum)]
pub enum DeleteErrorAction {
    /// Send the delete again.
    Retry,
    /// Bring the object back locally.
    Restore,
}

impl From<CreateErrorAction> for core::CreateErrorAction {
    fn from(a: CreateErrorAction) -> Self {
        match a {
            CreateErrorAction::Delete => core::CreateErrorAction::Delete,
            CreateErrorAction::Recreate => core::CreateErrorAction::Recreate,
        }
    }
}

impl From<UpdateErrorAction> for core::UpdateErrorAction {
    fn from(a: UpdateErrorAction) -> Self {
        match a {
            UpdateErrorAction::Retry => core::UpdateErrorAction::Retry,
            UpdateErrorAction::Rollback => core::UpdateErrorAction::Rollback,
        }
    }
}

impl From<DeleteErrorAction> for core::DeleteErrorAction {
    fn from(a: DeleteErrorAction) -> Self {
        match a {
            DeleteErrorAction::Retry => core::DeleteErrorAction::Retry,
            DeleteErrorAction::Restore => core::DeleteErrorAction::Restore,
        }
    }
}
