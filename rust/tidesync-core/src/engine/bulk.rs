//! The bulk step of a sync run on the worker: runs [`SyncClient::bulk_sync`] and turns its
//! steps into notifications to the `*` listener (`sync_type` bulk, spec §6.5).
//!
//! Sequence: `start` (partition ""), then per partition `start`, `download` (repeated with
//! `cumulative_count` = bytes received and `total_count` = the file's size when known),
//! `change_db`, `ok` (`cumulative_count` = objects imported); `blobs` (partition "") when a
//! bulk source declares blob attributes; `complete` (status `ok`, partition ""). A failure
//! sends one `error` (or `schema_changed`) with `bulk_status` `error`; a stop sends nothing
//! here (the run ends `cancelled`). All bulk events are `in_progress` except `complete` and
//! failures, and none is final: the run event stays the one final event of a run.
//!
//! The sync mutex is honoured at the start and at `change_db`, before the import transaction;
//! `stop_sync` interrupts the `wait` polling, the download between chunks and the import.

use std::sync::Arc;

use parking_lot::Mutex;

use super::Shared;
use super::notifier::Delivery;
use super::notify::{ErrorCode, SyncNotification, SyncStatus, SyncType};
use super::worker;
use crate::error::{Error, Result};
use crate::model::Partition;
use crate::protocol::{BulkEvent, BulkStep, PageEvent, SyncObserver};
use crate::sync::{BulkReport, SyncClient, SyncOptions};

fn event(status: SyncStatus, step: &str, partition: Option<Partition>) -> SyncNotification {
    let mut n = SyncNotification::run(status, Vec::new());
    n.is_final = false;
    n.sync_type = SyncType::Bulk;
    n.bulk_status = Some(step.to_owned());
    n.partition = Some(partition.map(|p| p.as_str().to_owned()).unwrap_or_default());
    n
}

/// Runs the bulk sync with notifications. A stop yields [`Error::Stopped`].
pub(crate) fn run(
    shared: &Arc<Shared>,
    client: &Arc<SyncClient>,
    epoch: u64,
    opts: &SyncOptions,
) -> Result<BulkReport> {
    let obs = Arc::new(BulkObserver {
        shared: shared.clone(),
        client: client.clone(),
        epoch,
        partition: Mutex::new(None),
        restopped: Mutex::new(false),
    });
    let opts = SyncOptions {
        stop_epoch: Some(client.stop_epoch()),
        ..opts.clone()
    };
    let result = if shared.stopped_since(epoch) || !worker::enter(shared, epoch) {
        Err(Error::Stopped)
    } else {
        client.bulk_sync(&opts, Some(obs.clone() as Arc<dyn SyncObserver>))
    };
    let stopped = shared.stopped_since(epoch);
    match result {
        Ok(r) => Ok(r),
        Err(_) if stopped => Err(Error::Stopped),
        Err(e) => {
            let partition = *obs.partition.lock();
            let status = if e == Error::SchemaChanged {
                SyncStatus::SchemaChanged
            } else {
                SyncStatus::Error
            };
            let mut n = event(status, "error", partition);
            n.error_code = ErrorCode::of(&e);
            n.error_message = ErrorCode::message_of(&e);
            shared.notifier.push(Delivery::Sync(n));
            log::warn!("bulk sync failed: {e}");
            Err(e)
        }
    }
}

/// Turns bulk steps into notifications; the sync mutex boundary before the import.
struct BulkObserver {
    shared: Arc<Shared>,
    client: Arc<SyncClient>,
    epoch: u64,
    /// The partition being synced (for the error event).
    partition: Mutex<Option<Partition>>,
    restopped: Mutex<bool>,
}

impl SyncObserver for BulkObserver {
    fn on_page(&self, _: &PageEvent<'_>) {}

    fn on_bulk(&self, e: &BulkEvent) {
        if e.step == BulkStep::Start && e.partition.is_some() {
            *self.partition.lock() = e.partition;
        }
        let status = if e.step == BulkStep::Complete {
            SyncStatus::Ok
        } else {
            SyncStatus::InProgress
        };
        let mut n = event(status, e.step.as_str(), e.partition);
        match e.step {
            BulkStep::Download => {
                n.cumulative_count = e.bytes;
                n.total_count = e.total_bytes;
            }
            BulkStep::Ok | BulkStep::Complete => {
                n.cumulative_count = e.objects;
                n.total_count = Some(e.objects);
            }
            BulkStep::Start | BulkStep::ChangeDb | BulkStep::Blobs => {}
        }
        self.shared.notifier.push(Delivery::Sync(n));
        if e.step == BulkStep::ChangeDb
            && (self.shared.stopped_since(self.epoch) || !worker::enter(&self.shared, self.epoch))
        {
            // The import checks the client's stop signal right after this call.
            let first = !std::mem::replace(&mut *self.restopped.lock(), true);
            if first {
                self.client.stop();
            }
        }
    }
}
