//! The master document of one source partition: what the backend holds, with a change log.
//!
//! RhoConnect computes every page as `md − cd` over the whole data set. We get the same answer
//! without rescanning: every change to the master document gets a sequence number, deleted ids
//! leave a tombstone, and each client document remembers the sequence number up to which it has
//! been reconciled ([`crate::state`]'s cursor). A page scans only the changes after the cursor, so
//! a full sync of N objects costs O(N), not O(N²/page size).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use crate::obj::{Obj, ObjRef};

/// A stored `source-error` (the adapter's query failed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SourceError {
    pub kind: String,
    pub message: String,
}

#[derive(Debug, Default)]
pub(crate) struct MasterDoc {
    objects: HashMap<Arc<str>, (ObjRef, u64)>,
    by_seq: BTreeMap<u64, Arc<str>>,
    tombstones: BTreeMap<u64, Arc<str>>,
    seq: u64,
    /// When the adapter was last queried; `None` before the first load.
    pub loaded_at: Option<Instant>,
    pub source_error: Option<SourceError>,
}

impl MasterDoc {
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn seq(&self) -> u64 {
        self.seq
    }

    pub fn get(&self, id: &str) -> Option<&ObjRef> {
        self.objects.get(id).map(|(o, _)| o)
    }

    /// The interned id, if present (so client documents share the allocation).
    pub fn key(&self, id: &str) -> Option<Arc<str>> {
        self.objects.get_key_value(id).map(|(k, _)| k.clone())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &ObjRef)> {
        self.objects.iter().map(|(k, (o, _))| (k, o))
    }

    /// Stores `obj` under `id`; a no-op when the content is unchanged. Returns the key.
    pub fn put(&mut self, id: &str, obj: ObjRef) -> Arc<str> {
        if let Some((key, (old, old_seq))) = self.objects.get_key_value(id)
            && **old == *obj
        {
            let _ = old_seq;
            return key.clone();
        }
        self.seq += 1;
        let seq = self.seq;
        match self.objects.get_mut(id) {
            Some(slot) => {
                self.by_seq.remove(&slot.1);
                *slot = (obj, seq);
                let key = self.key(id).unwrap_or_else(|| Arc::from(id));
                self.by_seq.insert(seq, key.clone());
                key
            }
            None => {
                let key: Arc<str> = Arc::from(id);
                self.objects.insert(key.clone(), (obj, seq));
                self.by_seq.insert(seq, key.clone());
                key
            }
        }
    }

    /// Removes `id`; returns the old object.
    pub fn remove(&mut self, id: &str) -> Option<ObjRef> {
        let (key, (obj, seq)) = self.objects.remove_entry(id)?;
        self.by_seq.remove(&seq);
        self.seq += 1;
        self.tombstones.insert(self.seq, key);
        Some(obj)
    }

    /// Replaces the whole content with `items` (an adapter query), recording only real changes.
    pub fn replace_all(&mut self, items: Vec<(String, Obj)>) {
        let mut seen: HashMap<Arc<str>, ()> = HashMap::with_capacity(items.len());
        for (id, obj) in items {
            let key = self.put(&id, Arc::new(obj));
            seen.insert(key, ());
        }
        let gone: Vec<Arc<str>> = self
            .objects
            .keys()
            .filter(|k| !seen.contains_key(*k))
            .cloned()
            .collect();
        for id in gone {
            self.remove(&id);
        }
    }

    /// Every change after `cursor`, in sequence order: `(seq, id)`. An id may appear twice (a
    /// tombstone and a later re-insert); callers compare against the current state.
    pub fn changes_after(&self, cursor: u64) -> impl Iterator<Item = (u64, &Arc<str>)> {
        let mut live = self.by_seq.range(cursor + 1..).map(|(s, k)| (*s, k)).peekable();
        let mut dead = self.tombstones.range(cursor + 1..).map(|(s, k)| (*s, k)).peekable();
        std::iter::from_fn(move || match (live.peek(), dead.peek()) {
            (Some(a), Some(b)) => {
                if a.0 < b.0 {
                    live.next()
                } else {
                    dead.next()
                }
            }
            (Some(_), None) => live.next(),
            (None, Some(_)) => dead.next(),
            (None, None) => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(v: &str) -> ObjRef {
        Arc::new(Obj::from_pairs([("a", v)]))
    }

    #[test]
    fn unchanged_put_does_not_advance_the_log() {
        let mut md = MasterDoc::default();
        md.put("1", o("x"));
        let s = md.seq();
        md.put("1", o("x"));
        assert_eq!(md.seq(), s);
        md.put("1", o("y"));
        assert_eq!(md.seq(), s + 1);
        assert_eq!(md.changes_after(0).count(), 1);
    }

    #[test]
    fn changes_after_merges_live_and_deleted_in_order() {
        let mut md = MasterDoc::default();
        md.put("1", o("a"));
        md.put("2", o("b"));
        md.remove("1");
        md.put("3", o("c"));
        let ids: Vec<(u64, String)> = md.changes_after(1).map(|(s, k)| (s, k.to_string())).collect();
        assert_eq!(ids, vec![(2, "2".into()), (3, "1".into()), (4, "3".into())]);
    }

    #[test]
    fn replace_all_records_inserts_changes_and_deletes() {
        let mut md = MasterDoc::default();
        md.replace_all(vec![
            ("1".into(), Obj::from_pairs([("a", "1")])),
            ("2".into(), Obj::from_pairs([("a", "2")])),
        ]);
        let s = md.seq();
        md.replace_all(vec![
            ("2".into(), Obj::from_pairs([("a", "2")])),
            ("3".into(), Obj::from_pairs([("a", "3")])),
        ]);
        assert_eq!(md.len(), 2);
        let changed: Vec<String> = md.changes_after(s).map(|(_, k)| k.to_string()).collect();
        assert_eq!(changed, vec!["3".to_string(), "1".to_string()]);
    }
}
