//! Bulk sync (spec §6): for each partition holding [`SyncType::Bulk`] sources, the protocol
//! fetches a snapshot file, the store validates it and imports it in one transaction; then the
//! bulk state becomes [`BulkSyncState::Done`] and incremental sync continues from the snapshot.
//!
//! The state is RhoConnect's `bulksync_state` (0 = needed, 1 = done), stored in the settings
//! (`bulksync_state`); absent means needed, so a new installation with bulk sources starts with
//! a bulk sync. Any failure leaves it at "needed" and the next sync tries again (spec H7: the
//! server already counts the file's objects as delivered, so falling back to page-by-page
//! sync without a bulk install would miss them).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::{SyncClient, SyncOptions};
use crate::error::{Error, Result};
use crate::model::{Partition, SyncType};
use crate::protocol::{BulkEvent, BulkStep, SnapshotRequest, SyncObserver};
use crate::store::bulk_import;
use crate::store::meta::SourceRow;

/// The settings key of the bulk state (RhoConnect's name).
pub const BULK_STATE_KEY: &str = "bulksync_state";

/// How long a bulk sync waits for the server to build a partition's file.
const MAX_WAIT: Duration = Duration::from_secs(600);

/// RhoConnect's `bulksync_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BulkSyncState {
    /// 0: the next sync starts with a bulk sync of the bulk sources.
    Needed,
    /// 1: done; incremental sync only.
    Done,
}

impl BulkSyncState {
    /// RhoConnect's number (0 needed, 1 done).
    pub fn code(self) -> u8 {
        match self {
            BulkSyncState::Needed => 0,
            BulkSyncState::Done => 1,
        }
    }
}

/// What a bulk sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BulkReport {
    /// Per partition imported: objects per source.
    pub partitions: Vec<(Partition, Vec<(String, u64)>)>,
    /// Bytes of the files imported.
    pub bytes: u64,
}

impl BulkReport {
    /// Objects imported in all partitions.
    pub fn objects(&self) -> u64 {
        self.partitions
            .iter()
            .flat_map(|(_, s)| s.iter().map(|(_, n)| *n))
            .sum()
    }
}

impl SyncClient {
    /// The bulk state (absent = [`BulkSyncState::Needed`]).
    ///
    /// # Errors
    /// Storage.
    pub fn bulk_sync_state(&self) -> Result<BulkSyncState> {
        Ok(match self.store.setting(BULK_STATE_KEY)?.as_deref() {
            Some("1") => BulkSyncState::Done,
            _ => BulkSyncState::Needed,
        })
    }

    /// Sets the bulk state: [`BulkSyncState::Needed`] makes the next sync start with a bulk
    /// sync (e.g. after `schema_changed`).
    ///
    /// # Errors
    /// Storage.
    pub fn set_bulk_sync_state(&self, state: BulkSyncState) -> Result<()> {
        self.store.set_setting(BULK_STATE_KEY, Some(&state.code().to_string()))
    }

    /// The synced sources loaded by bulk sync, in sync order.
    ///
    /// # Errors
    /// Storage.
    pub fn bulk_sources(&self) -> Result<Vec<SourceRow>> {
        Ok(self
            .sync_plan()?
            .into_iter()
            .filter(|s| s.def.sync && s.def.sync_type == SyncType::Bulk && s.def.partition != Partition::Local)
            .collect())
    }

    /// True when the next sync starts with a bulk sync: the state is "needed" and there are
    /// bulk sources.
    ///
    /// # Errors
    /// Storage.
    pub fn bulk_needed(&self) -> Result<bool> {
        Ok(self.bulk_sync_state()? == BulkSyncState::Needed && !self.bulk_sources()?.is_empty())
    }

    /// Where snapshot files and partial downloads live: `<database>.bulk/`.
    fn bulk_dir(&self) -> PathBuf {
        let mut p = self.store.path().as_os_str().to_owned();
        p.push(".bulk");
        PathBuf::from(p)
    }

    /// Runs a bulk sync of the bulk sources now, whatever the state (spec §6): per partition
    /// (`user`, then `app`) fetch, validate and import; then the state is set to done. Reports
    /// [`BulkStep`]s to `observer`.
    ///
    /// # Errors
    /// Not logged in, network (after bounded retries), server, [`Error::BulkFile`] (nothing
    /// of that partition changed), [`Error::SchemaChanged`], [`Error::Stopped`]. Partitions
    /// imported before the failure stay imported; the state stays "needed".
    pub fn bulk_sync(&self, opts: &SyncOptions, observer: Option<Arc<dyn SyncObserver>>) -> Result<BulkReport> {
        if !self.is_logged_in()? {
            return Err(Error::Unauthorized {
                message: "not logged in".into(),
            });
        }
        let ctx = self.ctx(opts, observer);
        let sources = self.bulk_sources()?;
        let mut report = BulkReport::default();
        if sources.is_empty() {
            return Ok(report);
        }
        ctx.bulk(&BulkEvent::new(BulkStep::Start, None));
        for partition in [Partition::User, Partition::App] {
            let mine: Vec<SourceRow> = sources
                .iter()
                .filter(|s| s.def.partition == partition)
                .cloned()
                .collect();
            if mine.is_empty() {
                continue;
            }
            if ctx.stopped() {
                return Err(Error::Stopped);
            }
            ctx.bulk(&BulkEvent::new(BulkStep::Start, Some(partition)));
            let request = SnapshotRequest {
                partition,
                sources: mine.iter().map(|s| s.def.name.clone()).collect(),
                dir: self.bulk_dir(),
                max_wait: MAX_WAIT,
            };
            let Some(file) = self.protocol.fetch_snapshot(&self.store, &ctx, &request)? else {
                // `nop`: the server has no sources in this partition.
                log::info!(
                    "bulk sync: partition {} has no sources on the server",
                    partition.as_str()
                );
                ctx.bulk(&BulkEvent::new(BulkStep::Ok, Some(partition)));
                continue;
            };
            let discard = |e: Error| {
                if matches!(e, Error::BulkFile { .. } | Error::SchemaChanged) {
                    // Not resumable: the next attempt downloads the file again.
                    let _ = std::fs::remove_file(&file.path);
                }
                e
            };
            let t = std::time::Instant::now();
            let plan = bulk_import::validate(&file.path, partition, &mine).map_err(discard)?;
            log::debug!("bulk sync: file validated in {:?}", t.elapsed());
            if ctx.stopped() {
                return Err(Error::Stopped);
            }
            // The observer may wait here for the app's sync mutex; nothing changed yet.
            ctx.bulk(&BulkEvent::new(BulkStep::ChangeDb, Some(partition)));
            if ctx.stopped() {
                return Err(Error::Stopped);
            }
            let t = std::time::Instant::now();
            let stats = self
                .store
                .import_snapshot(&file.path, &plan, &|| ctx.stopped())
                .map_err(discard)?;
            log::debug!("bulk sync: file imported in {:?}", t.elapsed());
            let _ = std::fs::remove_file(&file.path);
            log::info!(
                "bulk sync: partition {} imported, {} objects from {} bytes",
                partition.as_str(),
                stats.total(),
                file.bytes
            );
            let mut ok = BulkEvent::new(BulkStep::Ok, Some(partition));
            ok.objects = stats.total();
            ok.bytes = file.bytes;
            ctx.bulk(&ok);
            report.bytes += file.bytes;
            report.partitions.push((partition, stats.objects));
        }
        if sources.iter().any(|s| !s.def.blob_attrs.is_empty()) {
            ctx.bulk(&BulkEvent::new(BulkStep::Blobs, None));
        }
        self.set_bulk_sync_state(BulkSyncState::Done)?;
        let mut done = BulkEvent::new(BulkStep::Complete, None);
        done.objects = report.objects();
        done.bytes = report.bytes;
        ctx.bulk(&done);
        Ok(report)
    }
}
