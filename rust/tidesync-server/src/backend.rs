//! Changing a running server's data "as another user would" (tests, demo, benchmarks).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::app::Partition;
use crate::obj::Obj;
use crate::state::State;

/// Why a backend change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// The application declares no such source.
    #[error("unknown source `{0}`")]
    UnknownSource(String),
    /// A user-partition source needs a user, an app-partition source must not get one.
    #[error("source `{name}` is in the {partition} partition: {hint}")]
    WrongPartition {
        /// Source name.
        name: String,
        /// `user` or `app`.
        partition: &'static str,
        /// What to pass instead.
        hint: &'static str,
    },
    /// No object with this id.
    #[error("no object `{0}`")]
    NoSuchObject(String),
    /// The source's adapter failed to load its data.
    #[error("source query failed: {0}")]
    Query(String),
}

/// How many changes pushed by clients the backend accepted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppliedChanges {
    /// Creates applied.
    pub creates: u64,
    /// Updates applied.
    pub updates: u64,
    /// Deletes applied.
    pub deletes: u64,
}

/// Which operation a pushed change was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AppliedOp {
    /// A create (`id` is the id the backend gave it).
    Create,
    /// An update (`attrs` are the attributes the client sent).
    Update,
    /// A delete.
    Delete,
}

/// One change pushed by a client and accepted by the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedChange {
    /// The operation.
    pub op: AppliedOp,
    /// The source.
    pub source: String,
    /// The user who pushed it.
    pub user: String,
    /// The object id (for a create, the backend's new id).
    pub id: String,
    /// The attributes the client sent.
    pub attrs: Obj,
}

/// A handle on a running server's data. Changes made here reach clients as diffs on their next
/// pages, exactly like changes made in the backend by another system.
#[derive(Clone)]
pub struct Backend {
    state: Arc<State>,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend").finish_non_exhaustive()
    }
}

impl Backend {
    pub(crate) fn new(state: Arc<State>) -> Self {
        Self { state }
    }

    /// Stores `bytes` as a blob (as a multipart push would) and returns its id: the download
    /// URL is `<server url>blobs/<id>`.
    ///
    /// # Errors
    /// The file could not be written.
    pub fn put_blob(&self, bytes: &[u8]) -> std::io::Result<String> {
        crate::blob::write_blob(self.state.data_dir(), bytes)
    }

    /// The bytes of the blob a download URL (`…/blobs/<id>`) or a blob id names, if stored.
    pub fn blob(&self, url_or_id: &str) -> Option<Vec<u8>> {
        let id = url_or_id.rsplit('/').next().unwrap_or_default();
        crate::blob::read_blob(self.state.data_dir(), id.split('?').next().unwrap_or_default())
    }

    fn md(
        &self,
        source: &str,
        user: Option<&str>,
    ) -> Result<Arc<parking_lot::RwLock<crate::md::MasterDoc>>, BackendError> {
        Ok(self.md_def(source, user)?.0)
    }

    #[allow(clippy::type_complexity)]
    fn md_def(
        &self,
        source: &str,
        user: Option<&str>,
    ) -> Result<
        (
            Arc<parking_lot::RwLock<crate::md::MasterDoc>>,
            crate::app::SourceDef,
            String,
        ),
        BackendError,
    > {
        let def = self
            .state
            .app()
            .source(source)
            .ok_or_else(|| BackendError::UnknownSource(source.to_owned()))?;
        let user = match (def.partition, user) {
            (Partition::App, None) => "",
            (Partition::User, Some(u)) => u,
            (Partition::App, Some(_)) => {
                return Err(BackendError::WrongPartition {
                    name: source.to_owned(),
                    partition: "app",
                    hint: "pass no user",
                });
            }
            (Partition::User, None) => {
                return Err(BackendError::WrongPartition {
                    name: source.to_owned(),
                    partition: "user",
                    hint: "pass the user's login",
                });
            }
        };
        let def = def.clone();
        let md = self.state.md(&def, user);
        if let Some(e) = &md.read().source_error {
            return Err(BackendError::Query(e.message.clone()));
        }
        Ok((md, def, user.to_owned()))
    }

    fn persist(def: &crate::app::SourceDef, user: &str, id: &str, obj: Option<&Obj>) -> Result<(), BackendError> {
        def.adapter.put(user, id, obj).map_err(|e| BackendError::Query(e.0))
    }

    /// Every object of `source` (for `user` in the user partition), sorted by id.
    ///
    /// # Errors
    /// Unknown source, wrong partition, or the adapter failed.
    pub fn objects(&self, source: &str, user: Option<&str>) -> Result<Vec<(String, Obj)>, BackendError> {
        let md = self.md(source, user)?;
        let md = md.read();
        let mut out: Vec<(String, Obj)> = md.iter().map(|(k, o)| (k.to_string(), (**o).clone())).collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Number of objects.
    ///
    /// # Errors
    /// As [`Backend::objects`].
    pub fn count(&self, source: &str, user: Option<&str>) -> Result<usize, BackendError> {
        Ok(self.md(source, user)?.read().len())
    }

    /// One object.
    ///
    /// # Errors
    /// As [`Backend::objects`].
    pub fn get(&self, source: &str, user: Option<&str>, id: &str) -> Result<Option<Obj>, BackendError> {
        Ok(self.md(source, user)?.read().get(id).map(|o| (**o).clone()))
    }

    /// Inserts or replaces object `id` with exactly `obj`.
    ///
    /// # Errors
    /// As [`Backend::objects`].
    pub fn insert(&self, source: &str, user: Option<&str>, id: &str, obj: Obj) -> Result<(), BackendError> {
        let (md, def, user) = self.md_def(source, user)?;
        let mut md = md.write();
        Self::persist(&def, &user, id, Some(&obj))?;
        md.put(id, Arc::new(obj));
        Ok(())
    }

    /// Sets the attributes in `changes` on object `id`.
    ///
    /// # Errors
    /// As [`Backend::objects`], or no such object.
    pub fn update(&self, source: &str, user: Option<&str>, id: &str, changes: Obj) -> Result<(), BackendError> {
        let (md, def, user) = self.md_def(source, user)?;
        let mut md = md.write();
        let current = md
            .get(id)
            .cloned()
            .ok_or_else(|| BackendError::NoSuchObject(id.to_owned()))?;
        let new = current.merged(&changes);
        Self::persist(&def, &user, id, Some(&new))?;
        md.put(id, Arc::new(new));
        Ok(())
    }

    /// Deletes object `id`.
    ///
    /// # Errors
    /// As [`Backend::objects`], or no such object.
    pub fn delete(&self, source: &str, user: Option<&str>, id: &str) -> Result<(), BackendError> {
        let (md, def, user) = self.md_def(source, user)?;
        let mut md = md.write();
        if md.get(id).is_none() {
            return Err(BackendError::NoSuchObject(id.to_owned()));
        }
        Self::persist(&def, &user, id, None)?;
        md.remove(id);
        Ok(())
    }

    /// The push-registration fields a client sent with `clientregister` (device pin, type, …).
    pub fn client_device(&self, client_id: &str) -> Option<Vec<(String, String)>> {
        let client = self.state.client_any(client_id)?;
        let c = client.lock();
        c.device.as_ref().map(|d| d.fields.clone())
    }

    /// Every change pushed by clients that the backend applied so far, in order.
    pub fn applied_log(&self) -> Vec<AppliedChange> {
        self.state.cud.log.lock().clone()
    }

    /// Changes pushed by clients that the backend applied so far.
    pub fn applied(&self) -> AppliedChanges {
        let a = &self.state.cud.applied;
        AppliedChanges {
            creates: a.creates.load(Ordering::SeqCst),
            updates: a.updates.load(Ordering::SeqCst),
            deletes: a.deletes.load(Ordering::SeqCst),
        }
    }
}
