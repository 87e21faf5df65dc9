//! Applying a page of server changes: links, then deletes, then inserts, then errors, and the
//! page's checkpoint (token) — all in the caller's one transaction.
//!
//! The batch is protocol-neutral: RhoConnect pages map onto it directly, and a document-based
//! protocol (CouchDB) maps a changed document to "delete the attributes it lost, insert the
//! ones it has".

use std::collections::HashMap;

use rusqlite::{Connection, params};

use super::meta::{self, SourceRow};
use super::objects::{self, attrs_json};
use super::queue;
use crate::error::Result;
use crate::model::Attrs;
use crate::query::json_path;

/// One object error reported by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectError<'a> {
    /// Object id (temporary id for creates).
    pub id: &'a str,
    /// The server's message.
    pub message: &'a str,
    /// The attributes that were sent.
    pub attrs: Vec<(&'a str, &'a str)>,
}

/// Server changes for one source, to apply atomically.
#[derive(Debug, Default, Clone)]
pub struct Batch<'a> {
    /// Temporary id → server id.
    pub links: Vec<(&'a str, &'a str)>,
    /// Attribute removals per object (an object left without attributes is deleted).
    pub deletes: Vec<(&'a str, Vec<&'a str>)>,
    /// Attribute upserts per object.
    pub inserts: Vec<(&'a str, Vec<(&'a str, &'a str)>)>,
    /// Refused creates.
    pub create_errors: Vec<ObjectError<'a>>,
    /// Refused updates.
    pub update_errors: Vec<ObjectError<'a>>,
    /// Refused deletes.
    pub delete_errors: Vec<ObjectError<'a>>,
    /// The server's copy of objects whose update was refused.
    pub rollbacks: Vec<(&'a str, Vec<(&'a str, &'a str)>)>,
    /// The backend failed for the whole source: (kind, message).
    pub source_error: Option<(&'a str, &'a str)>,
    /// The checkpoint to store with these changes (RhoConnect: the page token).
    pub checkpoint: Option<&'a str>,
    /// The server's object count for the source.
    pub server_total: Option<i64>,
}

/// What applying a batch did (for notifications).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApplyStats {
    /// Objects that received attributes.
    pub inserted: usize,
    /// Objects that lost attributes (or were deleted).
    pub deleted: usize,
    /// Links applied: (temporary id, server id).
    pub links: Vec<(String, String)>,
    /// Ids of objects changed by inserts.
    pub updated_ids: Vec<String>,
    /// Ids of objects deleted entirely.
    pub deleted_ids: Vec<String>,
    /// Attributes kept because of a local edit not yet confirmed (spec H8).
    pub conflicts_kept_local: usize,
    /// Local updates confirmed by their echo.
    pub echoes_confirmed: usize,
    /// Server errors recorded.
    pub errors: usize,
}

/// Applies `b` to source `src` inside the caller's transaction `c`.
pub(crate) fn apply(c: &Connection, src: &SourceRow, all: &[SourceRow], b: &Batch<'_>) -> Result<ApplyStats> {
    let mut stats = ApplyStats::default();
    for (tmp, id) in &b.links {
        link(c, src, all, tmp, id)?;
        stats.links.push(((*tmp).to_owned(), (*id).to_owned()));
    }
    let mut edits = if queue::has_any(c, src.id)? {
        Some(queue::local_edits(c, src.id)?)
    } else {
        None
    };
    for (id, names) in &b.deletes {
        let names: Vec<&str> = match &edits {
            Some(e) if e.deleted.contains(*id) => continue,
            Some(e) => match e.updates.get(*id) {
                Some(local) => names
                    .iter()
                    .copied()
                    .filter(|n| {
                        let keep = local.iter().any(|(a, _, state, _)| a == n && state != "sent");
                        stats.conflicts_kept_local += keep as usize;
                        !keep
                    })
                    .collect(),
                None => names.clone(),
            },
            None => names.clone(),
        };
        if names.is_empty() {
            continue;
        }
        objects::remove_attrs(c, src, id, &names)?;
        stats.deleted += 1;
        if objects::get(c, src, id)?.is_none() {
            stats.deleted_ids.push((*id).to_owned());
        }
    }
    let mut merger = objects::Merger::new(c, src)?;
    let mut kept: Vec<(&str, &str)> = Vec::new();
    for (id, attrs) in &b.inserts {
        // Without a local edit of this object the page's attributes go in as they are
        // (borrowed, no copy): the common case, and all of an initial sync.
        let local = match edits.as_mut() {
            Some(e) if e.deleted.contains(*id) => continue,
            Some(e) => e.updates.get_mut(*id),
            None => None,
        };
        let attrs: &[(&str, &str)] = match local {
            None => attrs,
            Some(local) => {
                kept.clear();
                for &(k, v) in attrs {
                    match local.iter().position(|(a, _, _, _)| a == k) {
                        None => kept.push((k, v)),
                        Some(i) => {
                            let (_, lv, state, seq) = local[i].clone();
                            if (state == "sent" || state == "unknown" || state == "deferred") && lv == v {
                                // The echo of our own update: it is confirmed.
                                confirm_update_attr(c, seq, k)?;
                                local.remove(i);
                                stats.echoes_confirmed += 1;
                                kept.push((k, v));
                            } else if state == "sent" {
                                // The server took our update and has a newer value since.
                                kept.push((k, v));
                            } else {
                                stats.conflicts_kept_local += 1;
                            }
                        }
                    }
                }
                &kept
            }
        };
        if attrs.is_empty() {
            continue;
        }
        merger.merge(id, attrs)?;
        stats.inserted += 1;
        stats.updated_ids.push((*id).to_owned());
    }
    merger.finish()?;
    record_errors(c, src, b, &mut stats)?;
    if let Some(cp) = b.checkpoint {
        meta::set_token(c, src.id, cp)?;
    }
    if let Some(t) = b.server_total {
        meta::set_server_total(c, src.id, t)?;
    }
    Ok(stats)
}

fn confirm_update_attr(c: &Connection, seq: i64, attr: &str) -> Result<()> {
    c.prepare_cached("UPDATE changes SET attrs = json_remove(attrs, ?2) WHERE seq = ?1")?
        .execute(params![seq, json_path(attr)])?;
    c.prepare_cached("DELETE FROM changes WHERE seq = ?1 AND attrs = '{}'")?
        .execute([seq])?;
    Ok(())
}

/// A create was confirmed: the object, its queued changes and references take the server id.
fn link(c: &Connection, src: &SourceRow, all: &[SourceRow], tmp: &str, id: &str) -> Result<()> {
    objects::rename(c, src, tmp, id)?;
    c.prepare_cached(
        "DELETE FROM changes WHERE source_id = ?1 AND object = ?2 AND op = 'create' AND state != 'pending'",
    )?
    .execute(params![src.id, tmp])?;
    c.prepare_cached("UPDATE changes SET object = ?3 WHERE source_id = ?1 AND object = ?2")?
        .execute(params![src.id, tmp, id])?;
    c.prepare_cached("UPDATE sync_errors SET object = ?3 WHERE source_id = ?1 AND object = ?2")?
        .execute(params![src.id, tmp, id])?;
    c.prepare_cached(
        "INSERT INTO id_map(source_id, temp_id, server_id) VALUES (?1, ?2, ?3)
         ON CONFLICT(source_id, temp_id) DO UPDATE SET server_id = excluded.server_id",
    )?
    .execute(params![src.id, tmp, id])?;
    for child in all {
        for b in child.def.belongs_to.iter().filter(|b| b.source == src.def.name) {
            objects::rename_refs(c, child, &b.attr, tmp, id)?;
            c.prepare_cached(
                "UPDATE changes SET attrs = json_set(attrs, ?2, ?4) WHERE source_id = ?1 AND json_extract(attrs, ?2) = ?3",
            )?
            .execute(params![child.id, json_path(&b.attr), tmp, id])?;
        }
    }
    Ok(())
}

fn record_errors(c: &Connection, src: &SourceRow, b: &Batch<'_>, stats: &mut ApplyStats) -> Result<()> {
    let now = crate::store::now_ms();
    let rollbacks: HashMap<&str, &Vec<(&str, &str)>> = b.rollbacks.iter().map(|(id, a)| (*id, a)).collect();
    let mut insert = c.prepare_cached(
        "INSERT INTO sync_errors(source_id, kind, object, message, attrs, rollback, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for (kind, list) in [
        ("create", &b.create_errors),
        ("update", &b.update_errors),
        ("delete", &b.delete_errors),
    ] {
        for e in list.iter() {
            if kind == "delete" {
                // A re-sent delete refused because its first attempt did delete the object.
                if crate::store::queue::settle_resent_delete(c, src.id, e.id)? {
                    log::info!("delete of an object already deleted by an earlier attempt: done");
                    continue;
                }
            }
            stats.errors += 1;
            c.prepare_cached("DELETE FROM sync_errors WHERE source_id = ?1 AND kind = ?2 AND object = ?3")?
                .execute(params![src.id, kind, e.id])?;
            let rollback = rollbacks.get(e.id).map(|a| attrs_json(a.iter().copied()));
            insert.execute(params![
                src.id,
                kind,
                e.id,
                e.message,
                attrs_json(e.attrs.iter().copied()),
                rollback,
                now
            ])?;
            c.prepare_cached(
                "UPDATE changes SET state = 'failed', error = ?4 WHERE source_id = ?1 AND object = ?2 AND op = ?3
                 AND state IN ('in_flight', 'awaiting_link', 'sent', 'unknown', 'deferred')",
            )?
            .execute(params![src.id, e.id, kind, e.message])?;
        }
    }
    // Default policy for refused updates (spec H14): show the server's copy again, except for
    // attributes the user changed since (a newer pending edit wins).
    for (id, attrs) in &b.rollbacks {
        let pending: Vec<String> = c
            .prepare_cached(
                "SELECT attrs FROM changes WHERE source_id = ?1 AND object = ?2 AND op = 'update' AND state = 'pending'",
            )?
            .query_map(params![src.id, id], |r| r.get::<_, String>(0))?
            .collect::<Result<_, _>>()?;
        let edited: Attrs = pending
            .iter()
            .filter_map(|j| objects::parse_attrs(j).ok())
            .flatten()
            .collect();
        let restore: Vec<(&str, &str)> = attrs
            .iter()
            .copied()
            .filter(|(k, _)| !edited.contains_key(*k))
            .collect();
        if objects::get(c, src, id)?.is_some() {
            objects::merge(c, src, id, &restore)?;
        }
    }
    c.prepare_cached("DELETE FROM sync_errors WHERE source_id = ?1 AND kind = 'source'")?
        .execute([src.id])?;
    if let Some((kind, message)) = b.source_error {
        stats.errors += 1;
        insert.execute(params![
            src.id,
            "source",
            kind,
            message,
            "{}",
            Option::<String>::None,
            now
        ])?;
    }
    Ok(())
}
