//! Models (RhoConnect "sources"): what the app declares about each kind of object.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// An object's attributes. All values are strings, as on the wire.
pub type Attrs = BTreeMap<String, String>;

/// One object: its id (a server id, or a temporary id until its create is confirmed) and
/// attributes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Object {
    /// Object id.
    pub id: String,
    /// Attributes.
    pub attrs: Attrs,
}

/// Whose data a source is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Partition {
    /// One data set per user (RhoConnect's default).
    #[default]
    User,
    /// Shared by all users of the app.
    App,
    /// Never synced.
    Local,
}

impl Partition {
    /// `user`, `app` or `local`.
    pub fn as_str(self) -> &'static str {
        match self {
            Partition::User => "user",
            Partition::App => "app",
            Partition::Local => "local",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<Self> {
        match s {
            "user" => Ok(Partition::User),
            "app" => Ok(Partition::App),
            "local" => Ok(Partition::Local),
            other => Err(Error::Storage {
                reason: format!("unknown partition `{other}`"),
            }),
        }
    }
}

/// How a source's objects are stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum ModelKind {
    /// Any attributes (RhoConnect property bag): one row per object, attributes as JSON.
    #[default]
    PropertyBag,
    /// A real table with one column per declared attribute; other attributes are ignored.
    FixedSchema {
        /// Column (attribute) names.
        columns: Vec<String>,
    },
}

/// How a source's data first arrives (RhoConnect `sources.sync_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SyncType {
    /// Page by page only (the default).
    #[default]
    Incremental,
    /// Loaded from the server's bulk data file (spec §6) while the bulk state is
    /// [`crate::BulkSyncState::Needed`] (a first sync, or after the app asked for one), then
    /// page by page from where the file left off.
    Bulk,
}

impl SyncType {
    /// `incremental` or `bulk`.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncType::Incremental => "incremental",
            SyncType::Bulk => "bulk",
        }
    }
}

/// `belongs_to`: attribute `attr` holds the id of an object of `source`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BelongsTo {
    /// The attribute holding the parent's id.
    pub attr: String,
    /// The parent source.
    pub source: String,
}

/// What the app declares about a source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceDef {
    /// Source (model) name; the server's source name.
    pub name: String,
    /// Synced with the server (false: local only, no change queue).
    pub sync: bool,
    /// Sync order, ascending.
    pub priority: i64,
    /// Whose data it is.
    pub partition: Partition,
    /// Storage.
    pub kind: ModelKind,
    /// Attributes holding files (blob attributes).
    pub blob_attrs: Vec<String>,
    /// References to other sources.
    pub belongs_to: Vec<BelongsTo>,
    /// Incremental only, or bulk first (see [`SyncType`]).
    #[serde(default)]
    pub sync_type: SyncType,
}

impl SourceDef {
    /// A synced property-bag source in the user partition with priority 1000.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            sync: true,
            priority: 1000,
            partition: Partition::User,
            kind: ModelKind::PropertyBag,
            blob_attrs: Vec::new(),
            belongs_to: Vec::new(),
            sync_type: SyncType::Incremental,
        }
    }

    /// Sets the priority.
    pub fn priority(mut self, p: i64) -> Self {
        self.priority = p;
        self
    }

    /// Sets the partition (`Local` also turns sync off).
    pub fn partition(mut self, p: Partition) -> Self {
        self.partition = p;
        if p == Partition::Local {
            self.sync = false;
        }
        self
    }

    /// Makes it a fixed-schema source with these columns.
    pub fn fixed_schema(mut self, columns: &[&str]) -> Self {
        self.kind = ModelKind::FixedSchema {
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
        };
        self
    }

    /// Adds a belongs_to reference.
    pub fn belongs_to(mut self, attr: &str, source: &str) -> Self {
        self.belongs_to.push(BelongsTo {
            attr: attr.into(),
            source: source.into(),
        });
        self
    }

    /// Sets how the source's data first arrives ([`SyncType::Bulk`]: from bulk data files).
    pub fn sync_type(mut self, t: SyncType) -> Self {
        self.sync_type = t;
        self
    }

    /// Turns sync off (a local-only source).
    pub fn local_only(mut self) -> Self {
        self.sync = false;
        self
    }

    /// Checks names: non-empty, at most 255 bytes, no control characters; column names unique.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the problem.
    pub fn validate(&self) -> Result<()> {
        check_name("source name", &self.name)?;
        if let ModelKind::FixedSchema { columns } = &self.kind {
            if columns.is_empty() {
                return Err(Error::invalid(format!(
                    "source {}: a fixed schema needs columns",
                    self.name
                )));
            }
            let mut seen = std::collections::HashSet::new();
            for c in columns {
                check_name("column name", c)?;
                if c == "id" || !seen.insert(c) {
                    return Err(Error::invalid(format!(
                        "source {}: column `{c}` is reserved or repeated",
                        self.name
                    )));
                }
            }
        }
        for b in &self.belongs_to {
            check_name("belongs_to attribute", &b.attr)?;
            check_name("belongs_to source", &b.source)?;
        }
        Ok(())
    }
}

pub(crate) fn check_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 255 || name.chars().any(char::is_control) {
        return Err(Error::invalid(format!(
            "{what} `{}` must be 1-255 bytes without control characters",
            name.escape_debug()
        )));
    }
    Ok(())
}
