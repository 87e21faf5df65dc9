//! One sync run on the worker: the sources in order, one final event each, and the run event.
//! The engine drives the sources itself (not `SyncClient::sync_all`) so that each source's
//! final event is sent when that source ends, before the next one starts.

use std::sync::Arc;

use parking_lot::Mutex;

use super::Shared;
use super::notifier::{Delivery, ObjectChanges};
use super::notify::{ErrorCode, SourceOutcome, SyncNotification, SyncStatus};
use super::worker;
use crate::error::{Error, Result};
use crate::protocol::{PageEvent, SourceReport, SyncObserver};
use crate::store::meta::SourceRow;
use crate::store::queue;
use crate::sync::{SyncClient, SyncOptions, SyncReport};

/// How a source ended, for its final event.
struct End {
    status: SyncStatus,
    code: ErrorCode,
    message: String,
}

impl End {
    fn of(result: &Result<SourceReport>, stopped: bool, not_logged_in: bool) -> End {
        match result {
            Ok(_) => End {
                status: SyncStatus::Ok,
                code: ErrorCode::None,
                message: String::new(),
            },
            Err(e) if stopped || *e == Error::Stopped => End {
                status: SyncStatus::Cancelled,
                code: ErrorCode::CancelledByUser,
                message: e.to_string(),
            },
            Err(e) if not_logged_in => End {
                status: SyncStatus::Error,
                code: ErrorCode::ClientNotLoggedIn,
                message: ErrorCode::message_of(e),
            },
            Err(e @ Error::SchemaChanged) => End {
                status: SyncStatus::SchemaChanged,
                code: ErrorCode::UnexpectedServerResponse,
                message: e.to_string(),
            },
            Err(e) => End {
                status: SyncStatus::Error,
                code: ErrorCode::of(e),
                message: ErrorCode::message_of(e),
            },
        }
    }
}

fn not_logged_in() -> Error {
    Error::Unauthorized {
        message: "not logged in".into(),
    }
}

/// A sync of every synced source (`dosync`, or a poll).
pub(crate) fn sync_all(
    shared: &Arc<Shared>,
    client: &Arc<SyncClient>,
    epoch: u64,
    opts: &SyncOptions,
    poll: bool,
) -> Result<SyncReport> {
    let prepared = client.sync_plan().and_then(|s| Ok((s, client.is_logged_in()?)));
    let (plan, logged_in) = match prepared {
        Ok(p) => p,
        Err(e) => {
            let mut n = SyncNotification::run(SyncStatus::Error, Vec::new());
            n.error_code = ErrorCode::of(&e);
            n.error_message = ErrorCode::message_of(&e);
            shared.notifier.push(Delivery::Sync(n));
            return Err(e);
        }
    };
    if poll && !logged_in {
        log::debug!("poll skipped: not logged in");
        return Ok(SyncReport::default());
    }
    let mut report = SyncReport::default();
    let mut outcomes = Vec::with_capacity(plan.len());
    let mut fatal: Option<Error> = None;
    // A bulk sync first when one is needed (spec §6.1). If it fails, the bulk sources are not
    // synced page by page in this run: the server counts the file's objects as delivered (H7).
    let bulk_failed = if logged_in && !opts.only_changed_sources && !shared.stopped_since(epoch) {
        match client.bulk_needed() {
            Ok(true) => super::bulk::run(shared, client, epoch, opts).err(),
            Ok(false) => None,
            Err(e) => Some(e),
        }
    } else {
        None
    };
    for src in &plan {
        let name = src.def.name.as_str();
        if opts.only_changed_sources && logged_in {
            match client.store().read(|c| queue::has_pending(c, src.id)) {
                Ok(false) => continue,
                Ok(true) => {}
                Err(e) => log::warn!("reading the change queue of {name}: {e}"),
            }
        }
        let skipped = if shared.stopped_since(epoch) {
            let r = Err(Error::Stopped);
            Some((End::of(&r, true, false), r))
        } else if !logged_in {
            let r = Err(not_logged_in());
            Some((End::of(&r, false, true), r))
        } else if let Some(e) = bulk_failed
            .as_ref()
            .filter(|_| src.def.sync_type == crate::model::SyncType::Bulk)
        {
            let r = Err(e.clone());
            let mut end = End::of(&r, shared.stopped_since(epoch), false);
            end.message = format!("bulk sync failed: {}", end.message);
            Some((end, r))
        } else if let Some(f) = &fatal {
            let r = Err(f.clone());
            let mut end = End::of(&r, false, false);
            end.message = format!("skipped: {}", end.message);
            Some((end, r))
        } else {
            None
        };
        let (result, end) = match skipped {
            Some((end, r)) => {
                // A source the run did not start still gets its one final event.
                let total = src.server_total.and_then(|t| u64::try_from(t).ok());
                final_event(shared, Some(src.id), name, &end, total, 0);
                (r, end)
            }
            None => {
                let r = sync_source(shared, client, epoch, src, opts, false);
                let end = End::of(&r, shared.stopped_since(epoch), false);
                (r, end)
            }
        };
        if let Err(e @ (Error::Unauthorized { .. } | Error::Storage { .. })) = &result
            && fatal.is_none()
        {
            fatal = Some(e.clone());
        }
        outcomes.push(SourceOutcome {
            source_name: name.to_owned(),
            status: end.status,
            error_code: end.code,
            error_message: end.message.clone(),
        });
        report.sources.push((name.to_owned(), result));
    }
    let cancelled = outcomes.iter().any(|o| o.status == SyncStatus::Cancelled);
    let mut n = SyncNotification::run(
        if cancelled {
            SyncStatus::Cancelled
        } else {
            SyncStatus::Complete
        },
        outcomes,
    );
    if cancelled {
        n.error_code = ErrorCode::CancelledByUser;
        n.error_message = Error::Stopped.to_string();
    }
    shared.notifier.push(Delivery::Sync(n));
    Ok(report)
}

/// A sync of one source (`dosync_source`), or `push_changes`: no run event.
pub(crate) fn sync_one(
    shared: &Arc<Shared>,
    client: &Arc<SyncClient>,
    epoch: u64,
    name: &str,
    opts: &SyncOptions,
    push_marker: bool,
) -> Result<SourceReport> {
    let prepared = client.store().sources().and_then(|all| {
        let src = all
            .into_iter()
            .find(|s| s.def.name == name)
            .ok_or_else(|| Error::invalid(format!("unknown source `{name}`")))?;
        Ok((src, client.is_logged_in()?))
    });
    match prepared {
        Err(e) => {
            let end = End::of(&Err(e.clone()), false, false);
            final_event(shared, None, name, &end, None, 0);
            Err(e)
        }
        Ok((src, false)) => {
            let r = Err(not_logged_in());
            final_event(shared, Some(src.id), name, &End::of(&r, false, true), None, 0);
            r
        }
        Ok((src, true)) => {
            // As RhoConnect's `prepareSync`: a needed bulk sync runs before a sync of one source
            // too (not before `push_changes`).
            let bulk = if push_marker || shared.stopped_since(epoch) {
                None
            } else {
                match client.bulk_needed() {
                    Ok(true) => super::bulk::run(shared, client, epoch, opts).err(),
                    Ok(false) => None,
                    Err(e) => Some(e),
                }
            };
            match bulk {
                Some(e) if src.def.sync_type == crate::model::SyncType::Bulk || e == Error::Stopped => {
                    let r = Err(e);
                    let mut end = End::of(&r, shared.stopped_since(epoch), false);
                    end.message = format!("bulk sync failed: {}", end.message);
                    let total = src.server_total.and_then(|t| u64::try_from(t).ok());
                    final_event(shared, Some(src.id), name, &end, total, 0);
                    r
                }
                _ => sync_source(shared, client, epoch, &src, opts, push_marker),
            }
        }
    }
}

fn final_event(shared: &Shared, id: Option<i64>, name: &str, end: &End, total: Option<u64>, cumulative: u64) {
    let mut n = SyncNotification::source(id, name, end.status, true);
    n.total_count = total;
    n.cumulative_count = cumulative;
    n.error_code = end.code;
    n.error_message = end.message.clone();
    shared.notifier.push(Delivery::Sync(n));
}

/// Syncs one source with an observer, then sends its final event and object changes.
fn sync_source(
    shared: &Arc<Shared>,
    client: &Arc<SyncClient>,
    epoch: u64,
    src: &SourceRow,
    opts: &SyncOptions,
    push_marker: bool,
) -> Result<SourceReport> {
    let name = src.def.name.as_str();
    let obs = Arc::new(PageObserver {
        shared: shared.clone(),
        client: client.clone(),
        epoch,
        source_id: src.id,
        name: name.to_owned(),
        progress: Mutex::new(Progress::default()),
    });
    // Taken before the engine's own stop check: a stop after this point reaches the run
    // through the client's epoch, a stop before it through the engine's.
    let opts = SyncOptions {
        stop_epoch: Some(client.stop_epoch()),
        ..opts.clone()
    };
    let opts = &opts;
    let result = if shared.stopped_since(epoch) || !worker::enter(shared, epoch) {
        Err(Error::Stopped)
    } else if let Err(e) = recover_in_flight(client, src.id) {
        Err(e)
    } else {
        let marker = if push_marker { client.push_changes(name) } else { Ok(()) };
        marker.and_then(|()| client.sync_source(name, opts, Some(obs.clone() as Arc<dyn SyncObserver>)))
    };
    let progress = std::mem::take(&mut *obs.progress.lock());
    let stopped = shared.stopped_since(epoch);
    let end = End::of(&result, stopped, false);
    // A request that failed because of the stop (e.g. a read timeout) is reported as stopped.
    let result = match result {
        Err(_) if stopped => Err(Error::Stopped),
        r => r,
    };
    let total = progress
        .total
        .or_else(|| src.server_total.and_then(|t| u64::try_from(t).ok()));
    final_event(shared, Some(src.id), name, &end, total, progress.cumulative);
    if !progress.objects.is_empty() {
        shared
            .notifier
            .push(Delivery::Objects(progress.objects.into_notification(name)));
    }
    result
}

/// Workaround until the client does it (see the engine's report): changes left `in_flight` —
/// by a push whose bookkeeping write a stop's SQLite interrupt aborted, or by a process killed
/// during a push — would never be sent again. Before a source syncs, when no push of it can be
/// running (pushes run only on this thread), they are settled as "outcome unknown", which the
/// next complete pull resolves (spec §5.4.5).
fn recover_in_flight(client: &SyncClient, source_id: i64) -> Result<()> {
    let n = client.store().write(|tx| {
        let pushes: Vec<Option<i64>> = tx
            .prepare_cached("SELECT DISTINCT push_id FROM changes WHERE source_id = ?1 AND state = 'in_flight'")?
            .query_map([source_id], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        for id in pushes.iter().flatten() {
            queue::push_finished(tx, source_id, *id, queue::PushOutcome::Unknown)?;
        }
        Ok(pushes.len())
    })?;
    if n > 0 {
        log::warn!("settled {n} interrupted push(es) of source {source_id} as outcome unknown");
    }
    Ok(())
}

#[derive(Debug, Default)]
struct Progress {
    cumulative: u64,
    total: Option<u64>,
    restopped: bool,
    objects: ObjectChanges,
}

/// Turns committed pages into notifications, and is the worker's page boundary: the sync mutex
/// is honoured here, after the page's transaction and before the next request.
struct PageObserver {
    shared: Arc<Shared>,
    client: Arc<SyncClient>,
    epoch: u64,
    source_id: i64,
    name: String,
    progress: Mutex<Progress>,
}

impl PageObserver {
    /// A stop that raced with the start of `SyncClient::sync_source` (its stop signal is read
    /// when the call begins) is passed on once more.
    fn pass_on_stop(&self) {
        let first = !std::mem::replace(&mut self.progress.lock().restopped, true);
        if first {
            self.client.stop();
        }
    }
}

impl SyncObserver for PageObserver {
    fn on_page(&self, e: &PageEvent<'_>) {
        let page = e.page_objects as u64;
        let cumulative = e.cumulative_objects as u64;
        let mut events = Vec::with_capacity(2);
        if page > 0 {
            let mut n = SyncNotification::source(Some(self.source_id), &self.name, SyncStatus::InProgress, false);
            n.total_count = Some(e.server_total);
            n.processed_count = page;
            n.cumulative_count = cumulative;
            events.push(n);
        }
        if e.stats.errors > 0 {
            let mut n = SyncNotification::source(Some(self.source_id), &self.name, SyncStatus::Error, false);
            n.total_count = Some(e.server_total);
            n.processed_count = page;
            n.cumulative_count = cumulative;
            n.error_code = ErrorCode::CustomSyncServer;
            n.server_errors = self.client.sync_errors(&self.name).unwrap_or_else(|err| {
                log::warn!("reading the server errors of {}: {err}", self.name);
                Vec::new()
            });
            n.error_message = n
                .server_errors
                .iter()
                .find(|r| r.kind == "source")
                .map(|r| r.message.clone())
                .unwrap_or_default();
            events.push(n);
        }
        let mut changes = ObjectChanges::default();
        self.shared.notifier.watched_changes(&self.name, e.stats, &mut changes);
        {
            let mut p = self.progress.lock();
            p.cumulative = cumulative;
            p.total = Some(e.server_total);
            p.objects.created.extend(changes.created);
            p.objects.changed.extend(changes.changed);
        }
        for n in events {
            self.shared.notifier.push(Delivery::Sync(n));
        }
        if self.shared.stopped_since(self.epoch) || !worker::enter(&self.shared, self.epoch) {
            self.pass_on_stop();
        }
    }
}
