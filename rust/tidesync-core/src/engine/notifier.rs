//! The notifier thread: delivers notifications and completion callbacks in order, never under
//! an engine lock, so that a slow or failing listener cannot stall or break the sync.
//!
//! The worker only appends to a queue and never waits for it. The queue holds at most
//! [`PROGRESS_CAPACITY`] items before `in_progress` events are thinned: a new `in_progress` then
//! replaces the last queued item when that is an `in_progress` of the same source (consecutive
//! progress coalesces), and is dropped otherwise. Final events, server-error events, object
//! notifications and completions are never dropped.

use std::collections::{HashMap, HashSet, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, OnceLock, Weak};
use std::thread::ThreadId;

use parking_lot::{Condvar, Mutex};

use super::notify::{
    CreatedObject, ListenerError, ObjectListener, ObjectNotification, SyncListener, SyncNotification, SyncStatus,
};
use crate::store::apply::ApplyStats;

/// Queue length beyond which `in_progress` events are coalesced or dropped.
pub(crate) const PROGRESS_CAPACITY: usize = 1024;

/// Something to run on the notifier thread.
pub(crate) enum Delivery {
    Sync(SyncNotification),
    Objects(ObjectNotification),
    /// A completion callback (already bound to its result).
    Call(Box<dyn FnOnce() + Send>),
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Delivery>,
    closed: bool,
    coalesced: u64,
    dropped: u64,
}

struct Entry<L: ?Sized> {
    id: u64,
    listener: Arc<L>,
}

impl<L: ?Sized> Clone for Entry<L> {
    fn clone(&self) -> Self {
        Self {
            id: self.id,
            listener: self.listener.clone(),
        }
    }
}

#[derive(Default)]
struct Registry {
    next_id: u64,
    all: Option<Entry<dyn SyncListener>>,
    per_source: HashMap<String, Entry<dyn SyncListener>>,
    objects: Option<Arc<dyn ObjectListener>>,
}

/// Listeners, watched objects and the delivery queue.
#[derive(Default)]
pub(crate) struct Notifier {
    queue: Mutex<Queue>,
    cv: Condvar,
    registry: Mutex<Registry>,
    /// Watched object ids per source.
    watch: Mutex<HashMap<String, HashSet<String>>>,
    thread: OnceLock<ThreadId>,
}

/// A registered sync listener; [`NotificationHandle::cancel`] removes it if it is still the one
/// registered for its target. Dropping the handle keeps the listener (RhoConnect semantics).
#[derive(Debug, Clone)]
pub struct NotificationHandle {
    notifier: Weak<Notifier>,
    source: Option<String>,
    id: u64,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier").finish_non_exhaustive()
    }
}

impl NotificationHandle {
    /// The source it listens to (`None`: `*`).
    pub fn source(&self) -> Option<&str> {
        self.source.as_deref()
    }

    /// Removes the listener unless it was replaced (or already removed after its final event).
    pub fn cancel(&self) {
        if let Some(n) = self.notifier.upgrade() {
            let mut r = n.registry.lock();
            match &self.source {
                None => {
                    if r.all.as_ref().is_some_and(|e| e.id == self.id) {
                        r.all = None;
                    }
                }
                Some(s) => {
                    if r.per_source.get(s).is_some_and(|e| e.id == self.id) {
                        r.per_source.remove(s);
                    }
                }
            }
        }
    }
}

impl Notifier {
    /// Starts the notifier thread (`tidesync-notify`).
    pub(crate) fn spawn(self: &Arc<Self>) -> std::io::Result<std::thread::JoinHandle<()>> {
        let me = self.clone();
        std::thread::Builder::new()
            .name("tidesync-notify".into())
            .spawn(move || {
                let _ = me.thread.set(std::thread::current().id());
                me.run();
            })
    }

    /// True on the notifier thread (inside a listener or completion).
    pub(crate) fn is_current_thread(&self) -> bool {
        self.thread.get() == Some(&std::thread::current().id())
    }

    /// Sets (or replaces) the listener of `source` (`None`: `*`).
    pub(crate) fn set_listener(self: &Arc<Self>, source: Option<&str>, l: Arc<dyn SyncListener>) -> NotificationHandle {
        let mut r = self.registry.lock();
        r.next_id += 1;
        let entry = Entry {
            id: r.next_id,
            listener: l,
        };
        match source {
            None => r.all = Some(entry),
            Some(s) => {
                r.per_source.insert(s.to_owned(), entry);
            }
        }
        NotificationHandle {
            notifier: Arc::downgrade(self),
            source: source.map(str::to_owned),
            id: r.next_id,
        }
    }

    /// Removes the listener of `source` (`None`: `*`).
    pub(crate) fn clear_listener(&self, source: Option<&str>) {
        let mut r = self.registry.lock();
        match source {
            None => r.all = None,
            Some(s) => {
                r.per_source.remove(s);
            }
        }
    }

    pub(crate) fn set_object_listener(&self, l: Option<Arc<dyn ObjectListener>>) {
        self.registry.lock().objects = l;
    }

    pub(crate) fn add_watch(&self, source: &str, ids: &[String]) {
        self.watch
            .lock()
            .entry(source.to_owned())
            .or_default()
            .extend(ids.iter().cloned());
    }

    pub(crate) fn clear_watch(&self) {
        self.watch.lock().clear();
    }

    /// The watched objects a page touched; a created object's watch moves to its server id.
    pub(crate) fn watched_changes(&self, source: &str, stats: &ApplyStats, into: &mut ObjectChanges) {
        let mut w = self.watch.lock();
        let Some(set) = w.get_mut(source) else {
            return;
        };
        for (tmp, id) in &stats.links {
            if set.remove(tmp) {
                set.insert(id.clone());
                into.created.push(CreatedObject {
                    temp_id: tmp.clone(),
                    id: id.clone(),
                });
            }
        }
        // A page applies deletes before inserts: an object deleted and inserted again in one
        // page exists afterwards, so `updated` is recorded last.
        for id in stats.deleted_ids.iter().filter(|id| set.contains(*id)) {
            into.changed.insert(id.clone(), true);
        }
        for id in stats.updated_ids.iter().filter(|id| set.contains(*id)) {
            into.changed.insert(id.clone(), false);
        }
    }

    /// Queues a notification or a callback. After [`Notifier::close`] notifications are dropped
    /// and callbacks run on the calling thread.
    pub(crate) fn push(&self, d: Delivery) {
        let mut q = self.queue.lock();
        if q.closed {
            drop(q);
            if let Delivery::Call(f) = d {
                run_guarded("completion callback", f);
            }
            return;
        }
        if let Delivery::Sync(n) = &d
            && n.status == SyncStatus::InProgress
            && q.items.len() >= PROGRESS_CAPACITY
        {
            match q.items.back_mut() {
                Some(Delivery::Sync(last))
                    if last.status == SyncStatus::InProgress && last.source_name == n.source_name =>
                {
                    *last = n.clone();
                    q.coalesced += 1;
                }
                _ => q.dropped += 1,
            }
            return;
        }
        q.items.push_back(d);
        self.cv.notify_one();
    }

    /// (coalesced, dropped) `in_progress` events so far.
    pub(crate) fn thinned(&self) -> (u64, u64) {
        let q = self.queue.lock();
        (q.coalesced, q.dropped)
    }

    /// No more deliveries after those queued: the thread drains the queue and ends.
    pub(crate) fn close(&self) {
        self.queue.lock().closed = true;
        self.cv.notify_all();
    }

    fn run(&self) {
        loop {
            let next = {
                let mut q = self.queue.lock();
                loop {
                    if let Some(d) = q.items.pop_front() {
                        break d;
                    }
                    if q.closed {
                        return;
                    }
                    self.cv.wait(&mut q);
                }
            };
            self.deliver(next);
        }
    }

    fn deliver(&self, d: Delivery) {
        match d {
            Delivery::Sync(n) => {
                // Route as RhoConnect (spec §9.1): the source's own listener, else `*`; a
                // per-source listener is removed by its source's final event.
                let target = {
                    let mut r = self.registry.lock();
                    match n.source_name.as_deref() {
                        Some(s) if r.per_source.contains_key(s) => {
                            let e = if n.is_final {
                                r.per_source.remove(s)
                            } else {
                                r.per_source.get(s).cloned()
                            };
                            e.map(|e| e.listener)
                        }
                        _ => r.all.as_ref().map(|e| e.listener.clone()),
                    }
                }; // registry guard dropped before the call
                if let Some(l) = target {
                    report(
                        "sync listener",
                        catch_unwind(AssertUnwindSafe(|| l.on_notification(&n))),
                    );
                }
            }
            Delivery::Objects(n) => {
                let target = self.registry.lock().objects.clone();
                if let Some(l) = target {
                    report("object listener", catch_unwind(AssertUnwindSafe(|| l.on_objects(&n))));
                }
            }
            Delivery::Call(f) => run_guarded("completion callback", f),
        }
    }
}

/// Watched-object changes collected over one source's sync.
#[derive(Debug, Default)]
pub(crate) struct ObjectChanges {
    pub created: Vec<CreatedObject>,
    /// id → deleted (true) or updated (false); the last change wins.
    pub changed: std::collections::BTreeMap<String, bool>,
}

impl ObjectChanges {
    pub(crate) fn is_empty(&self) -> bool {
        self.created.is_empty() && self.changed.is_empty()
    }

    pub(crate) fn into_notification(self, source: &str) -> ObjectNotification {
        let (deleted, updated): (Vec<_>, Vec<_>) = self.changed.into_iter().partition(|(_, d)| *d);
        ObjectNotification {
            source_name: source.to_owned(),
            created: self.created,
            updated: updated.into_iter().map(|(id, _)| id).collect(),
            deleted: deleted.into_iter().map(|(id, _)| id).collect(),
        }
    }
}

fn run_guarded(what: &str, f: Box<dyn FnOnce() + Send>) {
    if catch_unwind(AssertUnwindSafe(f)).is_err() {
        log::error!("{what} panicked; the engine carries on");
    }
}

fn report(what: &str, r: std::thread::Result<Result<(), ListenerError>>) {
    match r {
        Ok(Ok(())) => {}
        Ok(Err(e)) => log::warn!("{what}: {e}"),
        Err(_) => log::error!("{what} panicked; the engine carries on"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(source: &str, cumulative: u64) -> Delivery {
        let mut n = SyncNotification::source(Some(1), source, SyncStatus::InProgress, false);
        n.cumulative_count = cumulative;
        Delivery::Sync(n)
    }

    #[test]
    fn engine_notifier_thins_progress_only_and_keeps_finals() {
        let n = Notifier::default();
        for i in 0..(PROGRESS_CAPACITY as u64 + 10) {
            n.push(progress("A", i));
        }
        n.push(Delivery::Sync(SyncNotification::source(
            Some(1),
            "A",
            SyncStatus::Ok,
            true,
        )));
        n.push(progress("A", 5000)); // after a final: not consecutive, dropped
        n.push(progress("B", 1)); // another source: dropped
        let q = n.queue.lock();
        assert_eq!(q.items.len(), PROGRESS_CAPACITY + 1);
        assert_eq!(q.coalesced, 10);
        assert_eq!(q.dropped, 2);
        match (q.items.get(PROGRESS_CAPACITY - 1), q.items.back()) {
            (Some(Delivery::Sync(p)), Some(Delivery::Sync(f))) => {
                assert_eq!(
                    p.cumulative_count,
                    PROGRESS_CAPACITY as u64 + 9,
                    "the newest progress survives"
                );
                assert_eq!(f.status, SyncStatus::Ok);
            }
            _ => panic!("unexpected queue shape"),
        }
    }
}
