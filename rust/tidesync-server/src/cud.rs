//! Push processing (create / update / delete), with RhoConnect 7.8's queue semantics.
//!
//! Each operation of a push is appended to the source's queue for that operation; then the whole
//! queue of each operation is processed, in the order create, update, delete, including entries
//! other clients left there. Within one entry the first object that fails stops the entry: the
//! rest is put back on the queue and only runs at the next push to that source (spec §5.6,
//! transcripts 14, 15 and 22). Results are stored per originating client and reach it on its
//! next page: links, errors, rollbacks; successful updates come back as an echo (diff).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::backend::AppliedOp;
use crate::obj::{Obj, ObjRef};
use crate::state::{Queue, State};

/// The three CUD operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Op {
    Create,
    Update,
    Delete,
}

/// One client's objects for one operation.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub client_id: String,
    pub user: String,
    pub objects: Vec<(String, Obj)>,
}

#[derive(Debug, Default)]
struct SourceQueues {
    create: Queue<Entry>,
    update: Queue<Entry>,
    delete: Queue<Entry>,
}

impl SourceQueues {
    fn get(&mut self, op: Op) -> &mut Queue<Entry> {
        match op {
            Op::Create => &mut self.create,
            Op::Update => &mut self.update,
            Op::Delete => &mut self.delete,
        }
    }
}

/// Per-source queues, each behind its own lock (held while that source's queue is processed).
#[derive(Debug, Default)]
pub(crate) struct CudQueues {
    sources: Mutex<HashMap<String, Arc<Mutex<SourceQueues>>>>,
    /// Objects the adapter accepted, per operation (for tests that count applications).
    pub applied: AppliedCounts,
    /// Every accepted change in order (for tests that check "exactly once" per change).
    pub log: Mutex<Vec<crate::backend::AppliedChange>>,
}

impl CudQueues {
    fn record(&self, op: AppliedOp, source: &str, user: &str, id: &str, attrs: &Obj) {
        self.log.lock().push(crate::backend::AppliedChange {
            op,
            source: source.to_owned(),
            user: user.to_owned(),
            id: id.to_owned(),
            attrs: attrs.clone(),
        });
    }
}

/// Counts of changes applied to the backend.
#[derive(Debug, Default)]
pub(crate) struct AppliedCounts {
    pub creates: AtomicU64,
    pub updates: AtomicU64,
    pub deletes: AtomicU64,
}

/// A parsed push body.
#[derive(Debug, Default, Clone)]
pub(crate) struct PushBody {
    pub create: Vec<(String, Obj)>,
    pub update: Vec<(String, Obj)>,
    pub delete: Vec<(String, Obj)>,
}

impl State {
    /// Queues the push of `client_id` for `source` and runs the source's CUD queues.
    pub fn push(&self, user: &str, client_id: &str, source: &str, body: PushBody) {
        let queues = self.cud.sources.lock().entry(source.to_owned()).or_default().clone();
        let mut q = queues.lock();
        for (op, objects) in [
            (Op::Create, body.create),
            (Op::Update, body.update),
            (Op::Delete, body.delete),
        ] {
            if !objects.is_empty() {
                q.get(op).push_back(Entry {
                    client_id: client_id.to_owned(),
                    user: user.to_owned(),
                    objects,
                });
            }
        }
        for op in [Op::Create, Op::Update, Op::Delete] {
            let work: Vec<Entry> = q.get(op).drain(..).collect();
            let mut requeue = Vec::new();
            for entry in work {
                if let Some(rest) = self.run_entry(source, op, entry, client_id) {
                    requeue.push(rest);
                }
            }
            q.get(op).extend(requeue);
        }
    }

    /// Runs one entry; returns the deferred rest after a failure.
    ///
    /// Results (links, errors, rollbacks) go to the entry's client. The client document that
    /// records a create or a delete is the one of the client whose push runs the queue — for a
    /// deferred entry that is another client, so its originator later receives the change as a
    /// diff (transcript 15: alice's deferred delete of 14, run by bob's push, reaches alice).
    fn run_entry(&self, source: &str, op: Op, entry: Entry, pusher: &str) -> Option<Entry> {
        let def = self.source_def(&entry.user, source);
        let md = self.md(&def, &entry.user);
        let client = self.client_any(&entry.client_id);
        let other = (pusher != entry.client_id).then(|| self.client_any(pusher)).flatten();
        let mut objects = entry.objects.into_iter();
        while let Some((key, obj)) = objects.next() {
            // cd change for the pushing client when it is not the originator, applied after the
            // originator's and the master document's locks are released (one client lock at a time).
            let mut other_cd: Option<(Arc<str>, Option<ObjRef>)> = None;
            let failed = {
                let mut guard = client.as_ref().map(|c| c.lock());
                let mut cs = guard.as_mut().map(|c| c.sources.entry(source.to_owned()).or_default());
                let mut md = md.write();
                match op {
                    Op::Create => match def.adapter.create(&entry.user, &obj) {
                        Ok(Some(id)) => {
                            let stored = Arc::new(obj);
                            let k = md.put(&id, stored.clone());
                            self.cud.applied.creates.fetch_add(1, Ordering::SeqCst);
                            self.cud.record(AppliedOp::Create, source, &entry.user, &id, &stored);
                            if other.is_some() {
                                other_cd = Some((k, Some(stored)));
                            } else if let Some(cs) = cs.as_mut() {
                                cs.cd.insert(k, stored);
                            }
                            if let Some(cs) = cs {
                                cs.links.retain(|(t, _)| *t != key);
                                cs.links.push((key, id));
                            }
                            false
                        }
                        Ok(None) => {
                            self.cud.applied.creates.fetch_add(1, Ordering::SeqCst);
                            self.cud.record(AppliedOp::Create, source, &entry.user, &key, &obj);
                            if let Some(cs) = cs {
                                cs.dropped_creates.push((key, obj));
                            }
                            false
                        }
                        Err(e) => {
                            if let Some(cs) = cs {
                                cs.errors.create.retain(|(t, _, _)| *t != key);
                                cs.errors.create.push((key, obj, e.0));
                            }
                            true
                        }
                    },
                    Op::Update => {
                        let result = match md.get(&key) {
                            None => Err(crate::adapter::AdapterError(format!("Object '{key}' does not exist"))),
                            Some(current) => {
                                let current = current.clone();
                                def.adapter
                                    .update(&entry.user, &key, &current, &obj)
                                    .map(|()| current.merged(&obj))
                            }
                        };
                        match result {
                            Ok(new) => {
                                md.put(&key, Arc::new(new));
                                self.cud.applied.updates.fetch_add(1, Ordering::SeqCst);
                                self.cud.record(AppliedOp::Update, source, &entry.user, &key, &obj);
                                false
                            }
                            Err(e) => {
                                if let Some(cs) = cs {
                                    if let Some(old) = cs.cd.get(key.as_str()).cloned() {
                                        cs.errors.rollback.retain(|(t, _)| *t != key);
                                        cs.errors.rollback.push((key.clone(), old));
                                    }
                                    cs.errors.update.retain(|(t, _, _)| *t != key);
                                    cs.errors.update.push((key, obj, e.0));
                                }
                                true
                            }
                        }
                    }
                    Op::Delete => {
                        let result = match md.get(&key) {
                            None => Err(crate::adapter::AdapterError(format!("Object '{key}' does not exist"))),
                            Some(current) => {
                                let current = current.clone();
                                def.adapter.delete(&entry.user, &key, &current)
                            }
                        };
                        match result {
                            Ok(()) => {
                                md.remove(&key);
                                self.cud.applied.deletes.fetch_add(1, Ordering::SeqCst);
                                self.cud.record(AppliedOp::Delete, source, &entry.user, &key, &obj);
                                if other.is_some() {
                                    other_cd = Some((Arc::from(key.as_str()), None));
                                } else if let Some(cs) = cs {
                                    cs.cd.remove(key.as_str());
                                }
                                false
                            }
                            Err(e) => {
                                if let Some(cs) = cs {
                                    cs.errors.delete.retain(|(t, _, _)| *t != key);
                                    cs.errors.delete.push((key, obj, e.0));
                                }
                                true
                            }
                        }
                    }
                }
            };
            if let (Some(o), Some((k, v))) = (&other, other_cd) {
                let mut o = o.lock();
                let cd = &mut o.sources.entry(source.to_owned()).or_default().cd;
                match v {
                    Some(v) => {
                        cd.insert(k, v);
                    }
                    None => {
                        cd.remove(&k);
                    }
                }
            }
            if failed {
                let rest: Vec<(String, Obj)> = objects.collect();
                return (!rest.is_empty()).then_some(Entry {
                    client_id: entry.client_id,
                    user: entry.user,
                    objects: rest,
                });
            }
        }
        None
    }
}
