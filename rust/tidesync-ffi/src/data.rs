//! Local data on the [`Engine`]: sources, objects, queries, batches, and the app's decisions
//! about changes the server refused. Blocking calls on the caller's thread; safe while the
//! engine syncs (one writer connection, WAL readers).

use std::collections::HashMap;

use tidesync_core as core;

use crate::engine::{Engine, R};
use crate::types::{
    CreateErrorAction, DeleteErrorAction, FindQuery, ObjectUpdate, ServerError, SourceDefinition, SyncObject,
    UpdateErrorAction,
};

fn attrs(m: HashMap<String, String>) -> core::Attrs {
    m.into_iter().collect()
}

fn objects(v: Vec<core::Object>) -> Vec<SyncObject> {
    v.into_iter().map(Into::into).collect()
}

#[uniffi::export]
impl Engine {
    /// Declares (or redeclares) a source.
    ///
    /// # Errors
    /// `InvalidArgument` for a bad definition, `Storage`, `Closed`.
    pub fn define_source(&self, definition: SourceDefinition) -> R<()> {
        Ok(self.client()?.define_source(&definition.into())?)
    }

    /// Creates one object (a temporary `tmp-…` id until the server confirms it).
    ///
    /// # Errors
    /// `InvalidArgument` (unknown source, bad attribute name), `Storage`, `Closed`.
    pub fn create(&self, source: String, attributes: HashMap<String, String>) -> R<SyncObject> {
        Ok(self.client()?.create(&source, attrs(attributes))?.into())
    }

    /// Creates objects in one transaction: one call for the whole batch.
    ///
    /// # Errors
    /// As `create`; nothing is created when one fails.
    pub fn create_objects(&self, source: String, items: Vec<HashMap<String, String>>) -> R<Vec<SyncObject>> {
        let items = items.into_iter().map(attrs).collect();
        Ok(objects(self.client()?.store().create_many(&source, items)?))
    }

    /// The object `id`, if it exists.
    ///
    /// # Errors
    /// `InvalidArgument` (unknown source), `Storage`, `Closed`.
    pub fn find(&self, source: String, id: String) -> R<Option<SyncObject>> {
        Ok(self.client()?.find(&source, &id)?.map(Into::into))
    }

    /// Objects matching `query` (conditions, order, paging, selected attributes).
    ///
    /// # Errors
    /// `InvalidArgument` (unknown source, bad condition), `Storage`, `Closed`.
    pub fn find_all(&self, source: String, query: FindQuery) -> R<Vec<SyncObject>> {
        Ok(objects(self.client()?.find_all(&source, &query.into())?))
    }

    /// Number of objects matching `query`'s conditions.
    ///
    /// # Errors
    /// As `findAll`.
    pub fn count(&self, source: String, query: FindQuery) -> R<u64> {
        Ok(self.client()?.count(&source, query.cond().as_ref())?)
    }

    /// Sets attributes of several objects in one transaction.
    ///
    /// # Errors
    /// `NotFound` for a missing object (nothing is changed), `InvalidArgument`, `Storage`.
    pub fn update_objects(&self, source: String, updates: Vec<ObjectUpdate>) -> R<Vec<SyncObject>> {
        let items = updates.into_iter().map(|u| (u.id, attrs(u.attrs))).collect();
        Ok(objects(self.client()?.store().update_many(&source, items)?))
    }

    /// Deletes an object; false if it did not exist.
    ///
    /// # Errors
    /// `InvalidArgument`, `Storage`, `Closed`.
    pub fn destroy(&self, source: String, id: String) -> R<bool> {
        Ok(self.client()?.store().destroy(&source, &id)?)
    }

    /// Deletes every object matching `query`'s conditions; how many.
    ///
    /// # Errors
    /// `InvalidArgument`, `Storage`, `Closed`.
    pub fn delete_all(&self, source: String, query: FindQuery) -> R<u64> {
        Ok(self.client()?.store().delete_all(&source, query.cond().as_ref())?)
    }

    /// Changes the server refused for a source, until resolved with `onSync…Error`.
    ///
    /// # Errors
    /// `InvalidArgument` (unknown source), `Storage`, `Closed`.
    pub fn server_errors(&self, source: String) -> R<Vec<ServerError>> {
        Ok(self
            .client()?
            .sync_errors(&source)?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// Resolves refused creates (atomically).
    ///
    /// # Errors
    /// `NotFound` when an id has no create error (nothing is changed), `Storage`, `Closed`.
    pub fn on_sync_create_error(&self, source: String, ids: Vec<String>, action: CreateErrorAction) -> R<()> {
        Ok(self.client()?.on_sync_create_error(&source, &ids, action.into())?)
    }

    /// Resolves refused updates (atomically).
    ///
    /// # Errors
    /// `NotFound` when an id has no update error, `Storage`, `Closed`.
    pub fn on_sync_update_error(&self, source: String, ids: Vec<String>, action: UpdateErrorAction) -> R<()> {
        Ok(self.client()?.on_sync_update_error(&source, &ids, action.into())?)
    }

    /// Resolves refused deletes (atomically).
    ///
    /// # Errors
    /// `NotFound` when an id has no delete error, `Storage`, `Closed`.
    pub fn on_sync_delete_error(&self, source: String, ids: Vec<String>, action: DeleteErrorAction) -> R<()> {
        Ok(self.client()?.on_sync_delete_error(&source, &ids, action.into())?)
    }
}
