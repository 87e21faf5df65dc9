//! Records and enums copied across the FFI.

use std::collections::HashMap;

use tidesync_core as core;

/// How a client is set up.
#[derive(Debug, Clone, uniffi::Record)]
pub struct ClientConfig {
    /// The database file (created if missing).
    pub db_path: String,
    /// The RhoConnect `syncserver` URL, e.g. `https://host/application/`.
    pub sync_server: String,
    /// Objects per page (2000 is a good default).
    pub page_size: u32,
    /// Verify TLS certificates. Turn off only for test servers.
    pub ssl_verify_peer: bool,
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
    /// Synced with the server.
    pub sync: bool,
    /// Sync order, ascending.
    pub priority: i64,
    /// Whose data it is.
    pub partition: Partition,
    /// `None`: property bag (any attributes). `Some(columns)`: a fixed-schema table.
    pub fixed_columns: Option<Vec<String>>,
    /// Attributes holding files.
    pub blob_attrs: Vec<String>,
    /// References to other sources.
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
    pub conditions: Vec<Condition>,
    /// Match when any condition holds (default: all).
    pub match_any: bool,
    /// Order by these attributes.
    pub order_by: Vec<String>,
    /// Descending order.
    pub descending: bool,
    /// At most this many.
    pub limit: Option<u64>,
    /// Skip this many.
    pub offset: Option<u64>,
    /// Only these attributes in the results.
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
    /// Objects applied from the server.
    pub objects_applied: u64,
    /// Objects of the source in the local store afterwards.
    pub local_objects: u64,
    /// The error, if any.
    pub error: Option<String>,
}

/// A refused change as the server reported it.
#[derive(Debug, Clone, uniffi::Record)]
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
