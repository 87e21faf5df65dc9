//! Bulk sync settings on the [`Engine`]: the bulk state (RhoConnect `bulksync_state`) and each
//! source's sync type. A sync of all sources starts with a bulk sync of the `BULK` sources
//! while the state is `NEEDED`; notifications with `syncType == BULK` report its steps.

use tidesync_core as core;
use tidesync_core::{BulkSyncState, SyncType};

use crate::engine::{Engine, R};
use crate::error::TideSyncError;

/// RhoConnect's `bulksync_state`.
#[uniffi::remote(Enum)]
pub enum BulkSyncState {
    /// 0: the next sync of all sources starts with a bulk sync of the bulk sources.
    Needed,
    /// 1: done; incremental sync only.
    Done,
}

#[uniffi::export]
impl Engine {
    /// The bulk state (`NEEDED` until a bulk sync succeeded).
    ///
    /// # Errors
    /// `Storage`, `Closed`.
    pub fn bulk_sync_state(&self) -> R<BulkSyncState> {
        Ok(self.client()?.bulk_sync_state()?)
    }

    /// Sets the bulk state: `NEEDED` makes the next sync of all sources start with a bulk sync
    /// (e.g. after `SCHEMA_CHANGED`).
    ///
    /// # Errors
    /// `Storage`, `Closed`.
    pub fn set_bulk_sync_state(&self, state: BulkSyncState) -> R<()> {
        Ok(self.client()?.set_bulk_sync_state(state)?)
    }

    /// Sets how a defined source's data first arrives: `BULK` sources are loaded from the
    /// server's bulk file while the bulk state is `NEEDED`. Call it after `defineSource`
    /// (which resets the type to `INCREMENTAL`).
    ///
    /// # Errors
    /// `InvalidArgument` for an unknown source, `Storage`, `Closed`.
    pub fn set_source_sync_type(&self, source: String, sync_type: SyncType) -> R<()> {
        let client = self.client()?;
        let mut def = stored(&client, &source)?;
        def.sync_type = sync_type;
        Ok(client.define_source(&def)?)
    }

    /// A defined source's sync type.
    ///
    /// # Errors
    /// `InvalidArgument` for an unknown source, `Storage`, `Closed`.
    pub fn source_sync_type(&self, source: String) -> R<SyncType> {
        let client = self.client()?;
        Ok(stored(&client, &source)?.sync_type)
    }
}

fn stored(client: &core::SyncClient, source: &str) -> R<core::SourceDef> {
    client
        .store()
        .sources()?
        .into_iter()
        .find(|s| s.def.name == source)
        .map(|s| s.def)
        .ok_or_else(|| TideSyncError::InvalidArgument {
            reason: format!("unknown source `{source}`"),
        })
}
