//! `TideSyncClient`: login, sync and local data, blocking calls (Kotlin and Swift wrap them off
//! the main thread). The background engine with notifications is the `Engine` object.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use parking_lot::RwLock;
use tidesync_core as core;

use crate::error::TideSyncError;
use crate::types::*;

type R<T> = Result<T, TideSyncError>;

/// A sync client over one database. Safe to call from any thread.
#[derive(uniffi::Object)]
pub struct TideSyncClient {
    inner: RwLock<Option<Arc<core::SyncClient>>>,
}

fn attrs(m: HashMap<String, String>) -> core::Attrs {
    m.into_iter().collect()
}

impl TideSyncClient {
    fn get(&self) -> R<Arc<core::SyncClient>> {
        self.inner.read().clone().ok_or(TideSyncError::Closed)
    }
}

#[uniffi::export]
impl TideSyncClient {
    /// Opens (creating or migrating) the database and prepares a client of the sync server.
    #[uniffi::constructor]
    pub fn open(config: ClientConfig) -> R<Arc<Self>> {
        let mut c = core::SyncConfig::new(&config.sync_server);
        c.page_size = config.page_size.max(1);
        c.http.ssl_verify_peer = config.ssl_verify_peer;
        let client = core::SyncClient::open(Path::new(&config.db_path), c)?;
        Ok(Arc::new(Self {
            inner: RwLock::new(Some(Arc::new(client))),
        }))
    }

    /// Declares (or redeclares) a source.
    pub fn define_source(&self, definition: SourceDefinition) -> R<()> {
        Ok(self.get()?.define_source(&definition.into())?)
    }

    /// Signs in. Refused credentials: `TideSyncError.Unauthorized`.
    pub fn login(&self, user: String, password: String) -> R<()> {
        Ok(self.get()?.login(&user, &password)?)
    }

    /// Signs out locally; `wipe_data` also removes every object and queued change.
    pub fn logout(&self, wipe_data: bool) -> R<()> {
        Ok(self.get()?.logout(wipe_data)?)
    }

    /// True when a session is stored.
    pub fn is_logged_in(&self) -> R<bool> {
        Ok(self.get()?.is_logged_in()?)
    }

    /// The last login name.
    pub fn user_name(&self) -> R<Option<String>> {
        Ok(self.get()?.user_name()?)
    }

    /// Syncs every synced source (blocking); per-source outcomes.
    pub fn sync_all(&self, query_params: String, only_changed_sources: bool) -> R<Vec<SourceResult>> {
        let c = self.get()?;
        let opts = core::SyncOptions {
            query_params,
            only_changed_sources,
            ..Default::default()
        };
        let report = c.sync_all(&opts, None)?;
        Ok(report
            .sources
            .into_iter()
            .map(|(name, r)| match r {
                Ok(s) => SourceResult {
                    name,
                    ok: true,
                    pushed: s.pushed as u64,
                    objects_applied: s.objects as u64,
                    local_objects: s.local_objects,
                    error: None,
                },
                Err(e) => {
                    let local_objects = c.count(&name, None).unwrap_or(0);
                    SourceResult {
                        name,
                        ok: false,
                        pushed: 0,
                        objects_applied: 0,
                        local_objects,
                        error: Some(e.to_string()),
                    }
                }
            })
            .collect())
    }

    /// Syncs one source (blocking).
    pub fn sync_source(&self, name: String, query_params: String) -> R<SourceResult> {
        let c = self.get()?;
        let s = c.sync_source(
            &name,
            &core::SyncOptions {
                query_params,
                ..Default::default()
            },
            None,
        )?;
        Ok(SourceResult {
            name,
            ok: true,
            pushed: s.pushed as u64,
            objects_applied: s.objects as u64,
            local_objects: s.local_objects,
            error: None,
        })
    }

    /// Stops a running sync at once; it resumes at the next sync.
    pub fn stop_sync(&self) -> R<()> {
        self.get()?.stop();
        Ok(())
    }

    /// Creates objects in one transaction (temporary ids until the server confirms them).
    pub fn create_objects(&self, source: String, items: Vec<HashMap<String, String>>) -> R<Vec<SyncObject>> {
        let objs = self
            .get()?
            .store()
            .create_many(&source, items.into_iter().map(attrs).collect())?;
        Ok(objs.into_iter().map(Into::into).collect())
    }

    /// Creates one object.
    pub fn create(&self, source: String, attrs_: HashMap<String, String>) -> R<SyncObject> {
        Ok(self.get()?.create(&source, attrs(attrs_))?.into())
    }

    /// The object `id`, if it exists.
    pub fn find(&self, source: String, id: String) -> R<Option<SyncObject>> {
        Ok(self.get()?.find(&source, &id)?.map(Into::into))
    }

    /// Objects matching `query`.
    pub fn find_all(&self, source: String, query: FindQuery) -> R<Vec<SyncObject>> {
        Ok(self
            .get()?
            .find_all(&source, &query.into())?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// Number of objects matching `query`'s conditions.
    pub fn count(&self, source: String, query: FindQuery) -> R<u64> {
        Ok(self.get()?.count(&source, query.cond().as_ref())?)
    }

    /// Sets attributes of several objects in one transaction.
    pub fn update_objects(&self, source: String, updates: Vec<ObjectUpdate>) -> R<Vec<SyncObject>> {
        let items = updates.into_iter().map(|u| (u.id, attrs(u.attrs))).collect();
        Ok(self
            .get()?
            .store()
            .update_many(&source, items)?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// Deletes an object; false if it did not exist.
    pub fn destroy(&self, source: String, id: String) -> R<bool> {
        Ok(self.get()?.store().destroy(&source, &id)?)
    }

    /// Deletes every object matching `query`'s conditions; how many.
    pub fn delete_all(&self, source: String, query: FindQuery) -> R<u64> {
        Ok(self.get()?.store().delete_all(&source, query.cond().as_ref())?)
    }

    /// Refused changes the server reported for a source.
    pub fn server_errors(&self, source: String) -> R<Vec<ServerError>> {
        Ok(self.get()?.sync_errors(&source)?.into_iter().map(Into::into).collect())
    }

    /// Resolves refused creates.
    pub fn on_sync_create_error(&self, source: String, ids: Vec<String>, action: CreateErrorAction) -> R<()> {
        let a = match action {
            CreateErrorAction::Delete => core::CreateErrorAction::Delete,
            CreateErrorAction::Recreate => core::CreateErrorAction::Recreate,
        };
        Ok(self.get()?.on_sync_create_error(&source, &ids, a)?)
    }

    /// Resolves refused updates.
    pub fn on_sync_update_error(&self, source: String, ids: Vec<String>, action: UpdateErrorAction) -> R<()> {
        let a = match action {
            UpdateErrorAction::Retry => core::UpdateErrorAction::Retry,
            UpdateErrorAction::Rollback => core::UpdateErrorAction::Rollback,
        };
        Ok(self.get()?.on_sync_update_error(&source, &ids, a)?)
    }

    /// Resolves refused deletes.
    pub fn on_sync_delete_error(&self, source: String, ids: Vec<String>, action: DeleteErrorAction) -> R<()> {
        let a = match action {
            DeleteErrorAction::Retry => core::DeleteErrorAction::Retry,
            DeleteErrorAction::Restore => core::DeleteErrorAction::Restore,
        };
        Ok(self.get()?.on_sync_delete_error(&source, &ids, a)?)
    }

    /// Forces a push for `source` at its next sync.
    pub fn push_changes(&self, source: String) -> R<()> {
        Ok(self.get()?.push_changes(&source)?)
    }

    /// Starts over with the server (new client id, local copies dropped, queued changes kept).
    pub fn database_client_reset(&self) -> R<()> {
        Ok(self.get()?.database_client_reset()?)
    }

    /// Releases the database. Later calls fail with `TideSyncError.Closed`. (`close()` in Kotlin also frees the native handle.)
    pub fn shutdown(&self) {
        self.inner.write().take();
    }
}
