//! The outbound change queue and its lifecycle (spec §5.4, §8.5), with explicit states:
//!
//! ```text
//! pending ──push──▶ in_flight ──200──▶ awaiting_link (create) ──link──▶ (done, row removed)
//!                        │                sent (update/delete) ──pull ends / echo──▶ (done)
//!                        ├──HTTP error──▶ pending
//!                        └──no answer──▶ unknown ──pull ends without link/echo──▶ pending (re-push)
//! create-error / update-error / delete-error ──▶ failed (until the app decides)
//! ```
//!
//! Rows in flight are never edited: a local write during a push adds a new pending row.

use std::collections::HashMap;

use rusqlite::{Connection, params};

use super::objects::{attrs_json, parse_attrs};
use crate::error::Result;
use crate::model::Attrs;

/// A queued change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Queue position.
    pub seq: i64,
    /// Object id (temporary for creates until linked).
    pub object: String,
    /// `create`, `update`, `delete` or `push`.
    pub op: String,
    /// Values (update: new values; delete: last values).
    pub attrs: Attrs,
    /// Lifecycle state.
    pub state: String,
}

pub(crate) fn record_create(c: &Connection, source_id: i64, id: &str) -> Result<()> {
    c.prepare_cached("INSERT INTO changes(source_id, object, op) VALUES (?1, ?2, 'create')")?
        .execute(params![source_id, id])?;
    Ok(())
}

fn pending_row(c: &Connection, source_id: i64, id: &str, op: &str) -> Result<Option<(i64, String)>> {
    use rusqlite::OptionalExtension as _;
    Ok(c.prepare_cached(
        "SELECT seq, attrs FROM changes WHERE source_id = ?1 AND object = ?2 AND op = ?3 AND state = 'pending'
         ORDER BY seq DESC LIMIT 1",
    )?
    .query_row(params![source_id, id, op], |r| Ok((r.get(0)?, r.get(1)?)))
    .optional()?)
}

/// Update coalescing: a pending create absorbs it; a pending update merges it.
pub(crate) fn record_update(c: &Connection, source_id: i64, id: &str, changed: &Attrs) -> Result<()> {
    if pending_row(c, source_id, id, "create")?.is_some() {
        return Ok(()); // create + update = create with the latest values
    }
    let json = attrs_json(changed.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    match pending_row(c, source_id, id, "update")? {
        Some((seq, _)) => {
            c.prepare_cached("UPDATE changes SET attrs = json_patch(attrs, ?2) WHERE seq = ?1")?
                .execute(params![seq, json])?;
        }
        None => {
            c.prepare_cached("INSERT INTO changes(source_id, object, op, attrs) VALUES (?1, ?2, 'update', ?3)")?
                .execute(params![source_id, id, json])?;
        }
    }
    Ok(())
}

/// Delete coalescing: a never-sent create and its updates vanish; pending updates are dropped.
pub(crate) fn record_delete(c: &Connection, source_id: i64, id: &str, last: &Attrs) -> Result<()> {
    if pending_row(c, source_id, id, "create")?.is_some() {
        c.prepare_cached("DELETE FROM changes WHERE source_id = ?1 AND object = ?2 AND state = 'pending'")?
            .execute(params![source_id, id])?;
        return Ok(()); // create + delete = nothing
    }
    c.prepare_cached(
        "DELETE FROM changes WHERE source_id = ?1 AND object = ?2 AND op = 'update' AND state = 'pending'",
    )?
    .execute(params![source_id, id])?;
    c.prepare_cached("INSERT INTO changes(source_id, object, op, attrs) VALUES (?1, ?2, 'delete', ?3)")?
        .execute(params![
            source_id,
            id,
            attrs_json(last.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        ])?;
    Ok(())
}

/// Queues a forced push for the source (RhoConnect `push_changes`).
pub(crate) fn record_push_marker(c: &Connection, source_id: i64) -> Result<()> {
    c.execute(
        "INSERT INTO changes(source_id, object, op) SELECT ?1, '', 'push'
         WHERE NOT EXISTS (SELECT 1 FROM changes WHERE source_id = ?1 AND op = 'push' AND state = 'pending')",
        [source_id],
    )?;
    Ok(())
}

/// Every change of a source (tests, diagnostics, the app's "pending changes" view).
pub(crate) fn changes(c: &Connection, source_id: i64) -> Result<Vec<Change>> {
    let mut stmt =
        c.prepare_cached("SELECT seq, object, op, attrs, state FROM changes WHERE source_id = ?1 ORDER BY seq")?;
    let raw = stmt
        .query_map([source_id], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get(4)?,
            ))
        })?
        .collect::<Result<Vec<(i64, String, String, String, String)>, _>>()?;
    raw.into_iter()
        .map(|(seq, object, op, attrs, state)| {
            Ok(Change {
                seq,
                object,
                op,
                attrs: parse_attrs(&attrs)?,
                state,
            })
        })
        .collect()
}

/// True when the source has changes that a push would send now.
pub(crate) fn has_pending(c: &Connection, source_id: i64) -> Result<bool> {
    Ok(
        c.prepare_cached("SELECT EXISTS (SELECT 1 FROM changes WHERE source_id = ?1 AND state = 'pending')")?
            .query_row([source_id], |r| r.get(0))?,
    )
}

/// True when the source has any change not yet finished (for the page-apply conflict check).
pub(crate) fn has_any(c: &Connection, source_id: i64) -> Result<bool> {
    Ok(
        c.prepare_cached("SELECT EXISTS (SELECT 1 FROM changes WHERE source_id = ?1)")?
            .query_row([source_id], |r| r.get(0))?,
    )
}

/// Local edits that a page must not silently overwrite (spec H8), per object.
#[derive(Debug, Default)]
pub(crate) struct LocalEdits {
    /// object → (attribute → (value, state, seq)) of update rows.
    pub updates: HashMap<String, Vec<(String, String, String, i64)>>,
    /// Objects deleted locally whose delete has not finished.
    pub deleted: std::collections::HashSet<String>,
}

pub(crate) fn local_edits(c: &Connection, source_id: i64) -> Result<LocalEdits> {
    let mut out = LocalEdits::default();
    for ch in changes(c, source_id)? {
        match ch.op.as_str() {
            "update" if ch.state != "failed" => {
                let e = out.updates.entry(ch.object).or_default();
                for (k, v) in ch.attrs {
                    e.push((k, v, ch.state.clone(), ch.seq));
                }
            }
            "delete" if ch.state != "failed" => {
                out.deleted.insert(ch.object);
            }
            _ => {}
        }
    }
    Ok(out)
}

/// What one push carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PushBatch {
    pub push_id: i64,
    pub creates: Vec<(String, Attrs)>,
    pub updates: Vec<(String, Attrs)>,
    pub deletes: Vec<(String, Attrs)>,
    /// A `push_changes` marker: push even with nothing else.
    pub marker: bool,
}

impl PushBatch {
    pub fn is_empty(&self) -> bool {
        self.creates.is_empty() && self.updates.is_empty() && self.deletes.is_empty() && !self.marker
    }
}

/// Selects the pending changes of a source that may go now and marks them in flight.
///
/// Held back (stay pending): edits of an object whose create is not confirmed yet, and objects
/// whose belongs_to attribute names an unconfirmed temporary id of the parent source.
pub(crate) fn take_for_push(
    c: &Connection,
    src: &super::meta::SourceRow,
    all: &[super::meta::SourceRow],
) -> Result<PushBatch> {
    let push_id: i64 = c.query_row("SELECT COALESCE(MAX(push_id), 0) + 1 FROM changes", [], |r| r.get(0))?;
    let unconfirmed = |source_id: i64| -> Result<std::collections::HashSet<String>> {
        Ok(c.prepare_cached(
            "SELECT object FROM changes WHERE source_id = ?1 AND op = 'create' AND state != 'pending'",
        )?
        .query_map([source_id], |r| r.get::<_, String>(0))?
        .collect::<Result<_, _>>()?)
    };
    let own_unconfirmed = unconfirmed(src.id)?;
    let mut parents: Vec<(String, std::collections::HashSet<String>)> = Vec::new();
    for b in &src.def.belongs_to {
        if let Some(p) = all.iter().find(|s| s.def.name == b.source) {
            let mut ids = unconfirmed(p.id)?;
            ids.extend(
                c.prepare_cached(
                    "SELECT object FROM changes WHERE source_id = ?1 AND op = 'create' AND state = 'pending'",
                )?
                .query_map([p.id], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?,
            );
            parents.push((b.attr.clone(), ids));
        }
    }
    let refers_unconfirmed = |attrs: &Attrs| {
        parents
            .iter()
            .any(|(attr, ids)| attrs.get(attr).is_some_and(|v| ids.contains(v)))
    };
    let rows: Vec<(i64, String, String, String)> = c
        .prepare_cached(
            "SELECT seq, object, op, attrs FROM changes WHERE source_id = ?1 AND state = 'pending' ORDER BY seq",
        )?
        .query_map([src.id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<Result<_, _>>()?;
    let mut batch = PushBatch {
        push_id,
        ..PushBatch::default()
    };
    let mut taken: Vec<(i64, usize)> = Vec::new();
    let mut update_pos: HashMap<String, usize> = HashMap::new();
    for (seq, object, op, attrs) in rows {
        match op.as_str() {
            "push" => {
                batch.marker = true;
                taken.push((seq, 0));
            }
            "create" => {
                let Some(current) = super::objects::get(c, src, &object)? else {
                    c.prepare_cached("DELETE FROM changes WHERE seq = ?1")?.execute([seq])?;
                    continue;
                };
                if refers_unconfirmed(&current) {
                    continue;
                }
                taken.push((seq, batch.creates.len()));
                batch.creates.push((object, current));
            }
            "update" => {
                let attrs = parse_attrs(&attrs)?;
                if own_unconfirmed.contains(&object) || refers_unconfirmed(&attrs) {
                    continue;
                }
                match update_pos.get(&object) {
                    Some(&i) => {
                        batch.updates[i].1.extend(attrs);
                        taken.push((seq, i));
                    }
                    None => {
                        update_pos.insert(object.clone(), batch.updates.len());
                        taken.push((seq, batch.updates.len()));
                        batch.updates.push((object, attrs));
                    }
                }
            }
            "delete" => {
                if own_unconfirmed.contains(&object) {
                    continue;
                }
                taken.push((seq, batch.deletes.len()));
                batch.deletes.push((object, parse_attrs(&attrs)?));
            }
            _ => {}
        }
    }
    let mut mark =
        c.prepare_cached("UPDATE changes SET state = 'in_flight', push_id = ?2, push_pos = ?3 WHERE seq = ?1")?;
    for (seq, pos) in taken {
        mark.execute(params![seq, push_id, pos as i64])?;
    }
    Ok(batch)
}

/// How a push ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PushOutcome {
    /// HTTP 200: the server took it.
    Accepted,
    /// The server answered with an error: it did not take it.
    Rejected,
    /// No answer after the request may have been sent: outcome unknown.
    Unknown,
}

pub(crate) fn push_finished(c: &Connection, source_id: i64, push_id: i64, outcome: PushOutcome) -> Result<()> {
    let sql = match outcome {
        PushOutcome::Accepted => {
            "DELETE FROM changes WHERE source_id = ?1 AND push_id = ?2 AND state = 'in_flight' AND op = 'push';
             UPDATE changes SET state = CASE op WHEN 'create' THEN 'awaiting_link' ELSE 'sent' END
                 WHERE source_id = ?1 AND push_id = ?2 AND state = 'in_flight';
             UPDATE changes SET state = CASE op WHEN 'create' THEN 'awaiting_link' ELSE 'sent' END
                 WHERE source_id = ?1 AND state = 'deferred' AND ?2 IS NOT NULL;"
        }
        PushOutcome::Rejected => {
            "UPDATE changes SET state = 'pending' WHERE source_id = ?1 AND push_id = ?2 AND state = 'in_flight';"
        }
        PushOutcome::Unknown => {
            "DELETE FROM changes WHERE source_id = ?1 AND push_id = ?2 AND state = 'in_flight' AND op = 'push';
             UPDATE changes SET state = 'unknown' WHERE source_id = ?1 AND push_id = ?2 AND state = 'in_flight';"
        }
    };
    for stmt in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        c.prepare_cached(stmt)?.execute(params![source_id, push_id])?;
    }
    Ok(())
}

/// A refused delete of `object` that was re-sent because its first attempt's outcome was
/// unknown: the first attempt's own error would have arrived in the pull after it, so this
/// refusal means that attempt did delete the object — the change is done. The server still
/// counted the refusal as a failure and so deferred the deletes pushed after it in the same push
/// (spec §5.6): they become `deferred` and wait for a push marker, as after any failure.
/// Returns false when no such re-sent delete is queued (the refusal is a real one).
pub(crate) fn settle_resent_delete(c: &Connection, source_id: i64, object: &str) -> Result<bool> {
    let retried: Vec<(i64, Option<i64>, Option<i64>)> = c
        .prepare_cached(
            "SELECT seq, push_id, push_pos FROM changes WHERE source_id = ?1 AND object = ?2
             AND op = 'delete' AND retried_unknown = 1
             AND state IN ('sent', 'unknown', 'deferred', 'in_flight')",
        )?
        .query_map(params![source_id, object], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<std::result::Result<_, _>>()?;
    for &(seq, push_id, pos) in &retried {
        let deferred = c
            .prepare_cached(
                "UPDATE changes SET state = 'deferred' WHERE source_id = ?1 AND push_id = ?2
                 AND op = 'delete' AND push_pos > ?3 AND state IN ('sent', 'unknown', 'in_flight')",
            )?
            .execute(params![source_id, push_id, pos])?;
        if deferred > 0 {
            record_push_marker(c, source_id)?;
        }
        c.prepare_cached("DELETE FROM changes WHERE seq = ?1")?.execute([seq])?;
    }
    Ok(!retried.is_empty())
}

/// After a complete pull (token ""): settles what the pull could tell.
///
/// * Changes pushed after a change that failed in the same push and operation were deferred by
///   the server (spec §5.6): they become `deferred` and a push marker makes the server run its
///   queue at the next sync.
/// * `sent` updates and deletes are done (errors would have arrived in this pull).
/// * `unknown` changes that got neither a link, an echo nor an error were not applied: they go
///   back to `pending`. (A create that the server applied always gets its link in the first page
///   built after the push, so "no link after a complete pull" means "not created".)
pub(crate) fn settle_after_pull(c: &Connection, source_id: i64) -> Result<()> {
    let deferred = c
        .prepare_cached(
            "UPDATE changes SET state = 'deferred'
         WHERE source_id = ?1 AND state IN ('sent', 'unknown', 'awaiting_link') AND EXISTS (
             SELECT 1 FROM changes f WHERE f.source_id = changes.source_id AND f.state = 'failed'
               AND f.push_id = changes.push_id AND f.op = changes.op AND f.push_pos < changes.push_pos)",
        )?
        .execute([source_id])?;
    if deferred > 0 {
        record_push_marker(c, source_id)?;
    }
    c.prepare_cached("DELETE FROM changes WHERE source_id = ?1 AND state = 'sent'")?
        .execute([source_id])?;
    c.prepare_cached(
        "UPDATE changes SET state = 'pending', retried_unknown = 1 WHERE source_id = ?1 AND state = 'unknown'",
    )?
    .execute([source_id])?;
    Ok(())
}
