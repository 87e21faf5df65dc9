//! Importing a snapshot file (the bulk data file of spec §6.4) into the store: validation first,
//! then one transaction that replaces the synced objects of the file's sources.
//!
//! Validation ([`validate`]) opens the file read-only and checks that it is a sound SQLite
//! database (`PRAGMA integrity_check`; `quick_check` above [`FULL_CHECK_MAX`]), has the §6.4 tables, and lists every requested source in
//! the partition, selected (`sync_type` not `none`); a fixed-schema source whose `schema`
//! column describes other properties than the local columns is a schema change. Anything else
//! wrong is [`Error::BulkFile`] and nothing is touched.
//!
//! The import ([`Store::import_snapshot`]) attaches the file to the writer connection and, in
//! ONE transaction per partition, for each source:
//!
//! 1. removes the local objects that have no queued change;
//! 2. inserts the file's objects, except those with queued changes, in one `INSERT … SELECT`
//!    (`json_group_object` builds the property-bag rows; fixed-schema rows pivot the
//!    attributes onto the columns);
//! 3. applies the file's copy of objects with queued changes as a page would
//!    ([`super::apply::apply`]): a pending edit keeps its local value (H8), a locally deleted
//!    object stays deleted, a locally created object is untouched;
//! 4. checks the number of objects against the file's `last_inserted_size` (a mismatch rolls
//!    everything back), and resets the source's tokens to "no page pending".
//!
//! Queued changes are never touched, so they are pushed after the import exactly as before. A
//! stop interrupts the transaction (rollback). Source ids of the file are mapped by name, never
//! adopted.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};

use super::Store;
use super::apply::{self, Batch};
use super::meta::{self, SourceRow, ident};
use crate::error::{Error, Result};
use crate::model::{ModelKind, Partition};

/// A source of the file matched to a local source.
#[derive(Debug, Clone)]
pub struct SnapshotSource {
    /// The local source.
    pub local: SourceRow,
    /// Its `source_id` in the file.
    pub file_id: i64,
    /// Objects the file says it holds for it (`last_inserted_size`), when given.
    pub expected: Option<u64>,
    /// A table of the file holding this fixed-schema source's rows (`object` + columns).
    pub table: Option<String>,
}

/// What [`Store::import_snapshot`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportStats {
    /// Objects imported per source (name, count), in plan order.
    pub objects: Vec<(String, u64)>,
}

impl ImportStats {
    /// All objects imported.
    pub fn total(&self) -> u64 {
        self.objects.iter().map(|(_, n)| n).sum()
    }
}

/// Files up to this size get the full `PRAGMA integrity_check`, larger ones `quick_check`.
pub const FULL_CHECK_MAX: u64 = 32 * 1024 * 1024;

fn bad(reason: impl Into<String>) -> Error {
    Error::BulkFile { reason: reason.into() }
}

/// Any SQLite failure while reading the file means the file is unusable.
fn file_err(e: rusqlite::Error) -> Error {
    bad(format!("sqlite: {e}"))
}

fn columns_of(c: &Connection, schema: &str, table: &str) -> Result<Vec<String>> {
    let mut stmt = c
        .prepare("SELECT name FROM pragma_table_info(?1, ?2)")
        .map_err(file_err)?;
    let cols = stmt
        .query_map(params![table, schema], |r| r.get::<_, String>(0))
        .map_err(file_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(file_err)?;
    Ok(cols)
}

/// The property names of a RhoConnect fixed schema (`{"property":{"name":"string",…}}`), or
/// `None` when the column is empty or not that shape.
fn schema_properties(schema: &str) -> Option<BTreeSet<String>> {
    let v: serde_json::Value = serde_json::from_str(schema).ok()?;
    let props = v.get("property")?.as_object()?;
    Some(props.keys().cloned().collect())
}

/// Checks the file at `path` for `sources` of `partition` (see the module docs).
///
/// # Errors
/// [`Error::BulkFile`] for a file that does not open, fails its integrity check, lacks the
/// tables, or does not list a requested source as selected in the partition;
/// [`Error::SchemaChanged`] when a fixed-schema source's server schema differs from the local
/// columns.
pub fn validate(path: &Path, partition: Partition, sources: &[SourceRow]) -> Result<Vec<SnapshotSource>> {
    let c = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(|e| bad(format!("does not open: {e}")))?;
    // `integrity_check` also cross-checks every index entry against its row: O(N log N), about
    // 5 s per 100k objects × 10 attributes. Above FULL_CHECK_MAX bytes `quick_check` (every page,
    // b-tree and record, O(N), 8× faster) is used; the import then verifies each source's object
    // count against the file's `last_inserted_size`.
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let pragma = if size <= FULL_CHECK_MAX {
        "integrity_check"
    } else {
        "quick_check"
    };
    // One pass over the file: a small cache is enough, and it bounds the peak RSS.
    c.execute_batch("PRAGMA cache_size = -8192;").map_err(file_err)?;
    let check: Vec<String> = c
        .prepare(&format!("PRAGMA {pragma}"))
        .and_then(|mut s| s.query_map([], |r| r.get::<_, String>(0))?.collect())
        .map_err(file_err)?;
    if check != ["ok"] {
        let mut msg = check.join("; ");
        msg.truncate(500);
        return Err(bad(format!("integrity check: {msg}")));
    }
    for (table, needed) in [
        ("sources", &["source_id", "name", "partition", "sync_type"][..]),
        ("object_values", &["source_id", "attrib", "object", "value"][..]),
    ] {
        let have = columns_of(&c, "main", table)?;
        if let Some(missing) = needed.iter().find(|n| !have.iter().any(|h| h == *n)) {
            return Err(bad(format!("table {table} lacks column {missing}")));
        }
    }
    let has_schema = columns_of(&c, "main", "sources")?.iter().any(|n| n == "schema");
    let has_size = columns_of(&c, "main", "sources")?
        .iter()
        .any(|n| n == "last_inserted_size");
    let sql = format!(
        "SELECT source_id, name, partition, sync_type, {}, {} FROM sources",
        if has_size { "last_inserted_size" } else { "NULL" },
        if has_schema { "schema" } else { "NULL" }
    );
    type Row = (i64, String, Option<String>, Option<String>, Option<i64>, Option<String>);
    let rows: Vec<Row> = c
        .prepare(&sql)
        .and_then(|mut s| {
            s.query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
            })?
            .collect()
        })
        .map_err(file_err)?;
    let mut by_name: HashMap<&str, &Row> = HashMap::new();
    for row in &rows {
        if by_name.insert(row.1.as_str(), row).is_some() {
            return Err(bad(format!("source {} is listed twice", row.1)));
        }
    }
    let mut plan = Vec::with_capacity(sources.len());
    for src in sources {
        let name = src.def.name.as_str();
        let Some((file_id, _, part, sync_type, size, schema)) = by_name.get(name).copied() else {
            return Err(bad(format!("source {name} is not in the file")));
        };
        if part.as_deref() != Some(partition.as_str()) {
            return Err(bad(format!(
                "source {name} is in partition {part:?} of the file, not {}",
                partition.as_str()
            )));
        }
        if sync_type.as_deref().is_none_or(|t| t == "none") {
            return Err(bad(format!("source {name} was not selected in the file")));
        }
        if *size.as_ref().unwrap_or(&0) < 0 {
            return Err(bad(format!("source {name}: negative object count")));
        }
        let mut table = None;
        if let ModelKind::FixedSchema { columns } = &src.def.kind {
            if let Some(props) = schema
                .as_deref()
                .filter(|s| !s.trim().is_empty())
                .map(schema_properties)
            {
                let local: BTreeSet<String> = columns.iter().cloned().collect();
                match props {
                    Some(p) if p == local => {}
                    Some(_) => return Err(Error::SchemaChanged),
                    None => return Err(bad(format!("source {name}: unreadable schema"))),
                }
            }
            let exists: Option<String> = c
                .query_row(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?1",
                    [name],
                    |r| r.get(0),
                )
                .optional()
                .map_err(file_err)?;
            if let Some(t) = exists {
                if !columns_of(&c, "main", &t)?.iter().any(|n| n == "object") {
                    return Err(bad(format!("table {t} lacks column object")));
                }
                table = Some(t);
            }
        }
        plan.push(SnapshotSource {
            local: src.clone(),
            file_id: *file_id,
            expected: size.map(|s| s as u64),
            table,
        });
    }
    Ok(plan)
}

impl Store {
    /// Imports a validated snapshot file ([`validate`]) in one transaction (see the module
    /// docs). `stopped` is checked between sources and before the commit; [`Store::interrupt`]
    /// aborts the statement running.
    ///
    /// # Errors
    /// [`Error::BulkFile`] when the file's object count of a source does not match what it
    /// announced, [`Error::Stopped`], storage. On any error nothing changed.
    pub fn import_snapshot(
        &self,
        path: &Path,
        plan: &[SnapshotSource],
        stopped: &dyn Fn() -> bool,
    ) -> Result<ImportStats> {
        let path_str = path
            .to_str()
            .ok_or_else(|| Error::invalid("the snapshot path is not UTF-8"))?;
        let mut conn = self.writer.lock();
        // A previous import that could not detach (it logged why) must not block this one.
        let _ = conn.execute("DETACH DATABASE bulk", []);
        conn.execute("ATTACH DATABASE ?1 AS bulk", [path_str])
            .map_err(file_err)?;
        // The file is read once, in table order: a small cache bounds the peak RSS.
        if let Err(e) = conn.execute_batch("PRAGMA bulk.cache_size = -8192;") {
            log::warn!("bulk file cache size: {e}");
        }
        *self.interruptible.lock() = true;
        let result = (|| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let all = meta::sources(&tx)?;
            let mut stats = ImportStats::default();
            for s in plan {
                if stopped() {
                    return Err(Error::Stopped);
                }
                // The definition may have changed since validation: use the stored one.
                let local = all
                    .iter()
                    .find(|r| r.def.name == s.local.def.name)
                    .ok_or_else(|| Error::invalid(format!("unknown source `{}`", s.local.def.name)))?;
                if local.def.kind != s.local.def.kind {
                    return Err(Error::invalid(format!(
                        "source {} was redefined during the bulk sync",
                        local.def.name
                    )));
                }
                let t = std::time::Instant::now();
                let n = import_source(&tx, local, &all, s)?;
                log::debug!("bulk import of {}: {n} objects in {:?}", local.def.name, t.elapsed());
                if let Some(expected) = s.expected
                    && n != expected
                {
                    return Err(bad(format!(
                        "source {} holds {n} objects, the file announced {expected}",
                        local.def.name
                    )));
                }
                tx.execute(
                    "UPDATE sources SET token = '', search_token = '', server_total = ?2 WHERE id = ?1",
                    params![local.id, n as i64],
                )?;
                // The `blobs` step: the file's blob values are URLs; the source's next pull
                // downloads them (recorded here, in the same transaction).
                let blobs = super::blobs::record_all_downloads(&tx, local)?;
                if blobs > 0 {
                    log::debug!("bulk import of {}: {blobs} blob downloads recorded", local.def.name);
                }
                stats.objects.push((local.def.name.clone(), n));
            }
            if stopped() {
                return Err(Error::Stopped);
            }
            let t = std::time::Instant::now();
            tx.commit()?;
            log::debug!("bulk import committed in {:?}", t.elapsed());
            Ok(stats)
        })();
        *self.interruptible.lock() = false;
        if let Err(e) = conn.execute("DETACH DATABASE bulk", []) {
            log::error!("detaching the bulk file: {e}");
        }
        result
    }
}

/// Imports one source; returns the number of the file's objects for it.
fn import_source(tx: &Connection, src: &SourceRow, all: &[SourceRow], s: &SnapshotSource) -> Result<u64> {
    let queued = "SELECT object FROM main.changes WHERE source_id = ?1";
    let inserted = match (src.fixed_table(), &src.def.kind) {
        (None, _) => {
            tx.execute(
                &format!("DELETE FROM main.objects WHERE source_id = ?1 AND id NOT IN ({queued})"),
                [src.id],
            )?;
            stream_bag(tx, src, s)? as usize
        }
        (Some(t), ModelKind::FixedSchema { columns }) => {
            tx.execute(&format!("DELETE FROM main.{t} WHERE id NOT IN ({queued})"), [src.id])?;
            let cols: Vec<String> = columns.iter().map(|c| ident(c)).collect();
            let sql = match &s.table {
                Some(table) => {
                    let have = columns_of(tx, "bulk", table)?;
                    let picked: Vec<String> = columns
                        .iter()
                        .map(|c| {
                            if have.contains(c) {
                                format!("CAST({} AS TEXT)", ident(c))
                            } else {
                                "NULL".into()
                            }
                        })
                        .collect();
                    format!(
                        "INSERT INTO main.{t} (id, {}) SELECT CAST(object AS TEXT), {} FROM bulk.{}
                         WHERE object IS NOT NULL AND object NOT IN ({queued}) AND ?2 = ?2",
                        cols.join(", "),
                        picked.join(", "),
                        ident(table)
                    )
                }
                None => {
                    let pivot: Vec<String> = columns
                        .iter()
                        .map(|c| {
                            format!(
                                "max(CASE WHEN attrib = '{}' THEN CAST(value AS TEXT) END)",
                                c.replace('\'', "''")
                            )
                        })
                        .collect();
                    format!(
                        "INSERT INTO main.{t} (id, {}) SELECT CAST(object AS TEXT), {} FROM bulk.object_values
                         WHERE source_id = ?2 AND object IS NOT NULL AND object NOT IN ({queued})
                         GROUP BY object",
                        cols.join(", "),
                        pivot.join(", ")
                    )
                }
            };
            tx.execute(&sql, params![src.id, s.file_id]).map_err(import_err)?
        }
        (Some(_), ModelKind::PropertyBag) => return Err(Error::invalid("a property bag has no table")),
    };
    // Objects with queued changes: the file's copy goes through the page logic.
    let ids: Vec<String> = tx
        .prepare_cached("SELECT DISTINCT object FROM main.changes WHERE source_id = ?1 AND op != 'push'")?
        .query_map([src.id], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut found = 0_u64;
    for chunk in ids.chunks(500) {
        let mut objects: Vec<(String, Vec<(String, String)>)> = Vec::with_capacity(chunk.len());
        for id in chunk {
            let attrs = file_attrs(tx, src, s, id)?;
            if let Some(a) = attrs {
                objects.push((id.clone(), a));
            }
        }
        found += objects.len() as u64;
        let batch = Batch {
            inserts: objects
                .iter()
                .map(|(id, a)| (id.as_str(), a.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()))
                .collect(),
            ..Batch::default()
        };
        apply::apply(tx, src, all, &batch)?;
    }
    Ok(inserted as u64 + found)
}

/// Copies the file's property-bag rows of `s` into `objects`, one row per object, skipping
/// objects with queued changes; returns the number of objects written.
///
/// The rows are read in table order (how RhoConnect and our server write them: all attributes
/// of an object together) and grouped while consecutive. An object whose rows are not together is merged (`json_patch`), so
/// any order is correct; only the speed depends on it. Memory: one object at a time.
fn stream_bag(tx: &Connection, src: &SourceRow, s: &SnapshotSource) -> Result<u64> {
    use crate::store::objects::write_json_str;
    let queued: std::collections::HashSet<String> = tx
        .prepare_cached("SELECT DISTINCT object FROM main.changes WHERE source_id = ?1")?
        .query_map([src.id], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let count = |tx: &Connection| -> Result<i64> {
        Ok(tx.query_row(
            "SELECT count(*) FROM main.objects WHERE source_id = ?1",
            [src.id],
            |r| r.get(0),
        )?)
    };
    let kept = count(tx)?;
    // In table order (sequential reads, no sort, no row lookups). RhoConnect writes all the
    // attributes of an object together; our server also writes objects in id order, so they are
    // inserted in key order (appends to the primary key's b-tree). Reading through the file's
    // `by_src_object` index instead costs a random row lookup per attribute when the file is not
    // in id order (RhoConnect's is not): 26 s against 5 s for 10M rows, measured.
    let mut read = tx
        .prepare(
            "SELECT CAST(object AS TEXT), CAST(attrib AS TEXT), coalesce(CAST(value AS TEXT), '')
             FROM bulk.object_values NOT INDEXED
             WHERE source_id = ?1 AND object IS NOT NULL AND attrib IS NOT NULL",
        )
        .map_err(import_err)?;
    let mut put = tx.prepare(
        "INSERT INTO main.objects (source_id, id, attrs) VALUES (?1, ?2, ?3)
         ON CONFLICT (source_id, id) DO UPDATE SET attrs = json_patch(attrs, excluded.attrs)",
    )?;
    let mut rows = read.query([s.file_id]).map_err(import_err)?;
    let mut id = String::new();
    let mut skip = false;
    // Attribute names of the current object, for duplicates: one buffer, `\0`-separated.
    let mut names = String::new();
    let mut json = String::with_capacity(1024);
    let mut flush = |id: &str, json: &mut String, names: &mut String| -> Result<()> {
        if !names.is_empty() {
            json.push('}');
            put.execute(params![src.id, id, json.as_str()]).map_err(import_err)?;
        }
        json.clear();
        names.clear();
        Ok(())
    };
    while let Some(r) = rows.next().map_err(import_err)? {
        let object = r.get_ref(0)?.as_str().map_err(|e| bad(format!("object id: {e}")))?;
        if object != id {
            if !skip {
                flush(&id, &mut json, &mut names)?;
            }
            json.clear();
            names.clear();
            object.clone_into(&mut id);
            skip = queued.contains(&id);
        }
        if skip {
            continue;
        }
        let attrib = r
            .get_ref(1)?
            .as_str()
            .map_err(|e| bad(format!("attribute name: {e}")))?;
        if names.split('\0').any(|n| n == attrib) {
            continue; // a duplicate row: the first value wins
        }
        let value = r.get_ref(2)?.as_str().map_err(|e| bad(format!("value: {e}")))?;
        json.push(if names.is_empty() { '{' } else { ',' });
        write_json_str(&mut json, attrib);
        json.push(':');
        write_json_str(&mut json, value);
        names.push_str(attrib);
        names.push('\0');
    }
    if !skip {
        flush(&id, &mut json, &mut names)?;
    }
    drop(rows);
    Ok((count(tx)? - kept) as u64)
}

/// The file's attributes of object `id`, `None` when the file does not have it.
fn file_attrs(tx: &Connection, src: &SourceRow, s: &SnapshotSource, id: &str) -> Result<Option<Vec<(String, String)>>> {
    if let (Some(table), ModelKind::FixedSchema { columns }) = (&s.table, &src.def.kind) {
        let have = columns_of(tx, "bulk", table)?;
        let picked: Vec<&String> = columns.iter().filter(|c| have.contains(c)).collect();
        let list: Vec<String> = picked.iter().map(|c| format!("CAST({} AS TEXT)", ident(c))).collect();
        let sql = format!(
            "SELECT 1{}{} FROM bulk.{} WHERE object = ?1",
            if list.is_empty() { "" } else { ", " },
            list.join(", "),
            ident(table)
        );
        let row = tx
            .query_row(&sql, [id], |r| {
                let mut out = Vec::new();
                for (i, c) in picked.iter().enumerate() {
                    if let Some(v) = r.get::<_, Option<String>>(i + 1)? {
                        out.push(((*c).clone(), v));
                    }
                }
                Ok(out)
            })
            .optional()
            .map_err(import_err)?;
        return Ok(row);
    }
    // Not cached: a statement on the attached file must not outlive the import.
    let rows: Vec<(String, String)> = tx
        .prepare(
            "SELECT CAST(attrib AS TEXT), coalesce(CAST(value AS TEXT), '') FROM bulk.object_values
             WHERE object = ?1 AND source_id = ?2 AND attrib IS NOT NULL",
        )?
        .query_map(params![id, s.file_id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()
        .map_err(import_err)?;
    Ok((!rows.is_empty()).then_some(rows))
}

/// A failure reading the attached file is the file's fault unless it was a stop.
fn import_err(e: rusqlite::Error) -> Error {
    match Error::from(e) {
        Error::Stopped => Error::Stopped,
        Error::Storage { reason } if reason.contains("UNIQUE") => bad(format!("duplicate rows: {reason}")),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Attrs, SourceDef};

    /// A `sources` row: name, partition, sync_type, last_inserted_size, schema.
    type SourceLine<'a> = (&'a str, &'a str, &'a str, i64, Option<&'a str>);

    /// A §6.4-shaped file: `sources` rows (name, partition, sync_type, size, schema) and
    /// `object_values` rows (file source id, object, attrib, value).
    fn file(dir: &Path, sources: &[SourceLine<'_>], values: &[(i64, &str, &str, &str)]) -> std::path::PathBuf {
        let path = dir.join("snap.data");
        let _ = std::fs::remove_file(&path);
        let c = Connection::open(&path).expect("create");
        c.execute_batch(
            "CREATE TABLE sources (source_id BIGINT PRIMARY KEY, name VARCHAR(255), token BIGINT, sync_priority BIGINT,
               partition VARCHAR(255), sync_type VARCHAR(255), metadata varchar, last_inserted_size BIGINT default 0,
               source_attribs varchar, schema varchar);
             CREATE TABLE object_values (source_id BIGINT, attrib varchar(255), object varchar(255), value varchar);
             CREATE UNIQUE INDEX by_src_object ON object_values (object, attrib, source_id);",
        )
        .expect("schema");
        for (i, (name, part, st, size, schema)) in sources.iter().enumerate() {
            c.execute(
                "INSERT INTO sources (source_id, name, partition, sync_type, last_inserted_size, schema) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![i as i64 + 1, name, part, st, size, schema],
            )
            .expect("source row");
        }
        for (sid, obj, attr, val) in values {
            c.execute(
                "INSERT INTO object_values (source_id, object, attrib, value) VALUES (?1, ?2, ?3, ?4)",
                params![sid, obj, attr, val],
            )
            .expect("value row");
        }
        path
    }

    fn attrs(pairs: &[(&str, &str)]) -> Attrs {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn store(dir: &Path) -> Store {
        let s = Store::open(&dir.join("local.db")).expect("store");
        s.define_source(&SourceDef::new("Bag").partition(Partition::App))
            .expect("Bag");
        s.define_source(
            &SourceDef::new("Fixed")
                .partition(Partition::App)
                .fixed_schema(&["name", "price"]),
        )
        .expect("Fixed");
        s
    }

    fn rows(s: &Store) -> Vec<String> {
        let mut out = Vec::new();
        for src in s.sources().expect("sources") {
            for o in s.find_all(&src.def.name, &crate::Query::default()).expect("find_all") {
                out.push(format!("{} {} {:?}", src.def.name, o.id, o.attrs));
            }
            out.push(format!("{} token={:?}", src.def.name, src.token));
        }
        out.push(format!(
            "{:?}",
            s.read(|c| crate::store::queue::changes(c, 1)).expect("queue")
        ));
        out
    }

    #[test]
    fn bag_and_fixed_sources_import_and_queued_changes_survive() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(dir.path());
        // Local state: a stale synced object, a local create, a local update, a local delete.
        s.write(|tx| {
            let bag = meta::source(tx, "Bag")?;
            crate::store::objects::put(tx, &bag, "stale", &attrs(&[("a", "old")]))?;
            crate::store::objects::put(tx, &bag, "2", &attrs(&[("a", "old2"), ("b", "x")]))?;
            crate::store::objects::put(tx, &bag, "3", &attrs(&[("a", "old3")]))?;
            meta::set_token(tx, bag.id, "pending-token")
        })
        .expect("seed");
        let created = s.create("Bag", attrs(&[("a", "new")])).expect("create");
        s.update("Bag", "2", attrs(&[("a", "mine")])).expect("update");
        s.destroy("Bag", "3").expect("destroy");
        let path = file(
            dir.path(),
            &[
                ("Bag", "app", "incremental", 3, None),
                ("Fixed", "app", "incremental", 2, None),
            ],
            &[
                (1, "1", "a", "one"),
                (1, "2", "a", "theirs"),
                (1, "2", "b", "y"),
                (1, "3", "a", "three"),
                (2, "f1", "name", "n1"),
                (2, "f1", "price", "1.5"),
                (2, "f1", "extra", "ignored"),
                (2, "f2", "name", "n2"),
                // Not next to the object's other rows: merged, still one object.
                (1, "1", "c", "late"),
            ],
        );
        let all = s.sources().expect("sources");
        let plan = validate(&path, Partition::App, &all).expect("valid");
        let stats = s.import_snapshot(&path, &plan, &|| false).expect("import");
        assert_eq!(stats.objects, vec![("Bag".to_owned(), 3), ("Fixed".to_owned(), 2)]);
        let get = |src: &str, id: &str| s.find(src, id).expect("find").map(|o| o.attrs);
        assert_eq!(get("Bag", "1"), Some(attrs(&[("a", "one"), ("c", "late")])));
        assert_eq!(get("Bag", "stale"), None, "objects absent from the file are gone");
        assert_eq!(
            get("Bag", &created.id),
            Some(attrs(&[("a", "new")])),
            "local create kept"
        );
        assert_eq!(
            get("Bag", "2"),
            Some(attrs(&[("a", "mine"), ("b", "y")])),
            "pending edit wins (H8)"
        );
        assert_eq!(get("Bag", "3"), None, "local delete kept");
        assert_eq!(get("Fixed", "f1"), Some(attrs(&[("name", "n1"), ("price", "1.5")])));
        assert_eq!(get("Fixed", "f2"), Some(attrs(&[("name", "n2")])));
        let ops: Vec<String> = s
            .read(|c| crate::store::queue::changes(c, 1))
            .expect("queue")
            .into_iter()
            .map(|c| format!("{:?}", c.op))
            .collect();
        assert_eq!(ops.len(), 3, "the queue is untouched: {ops:?}");
        let bag = s
            .sources()
            .expect("sources")
            .into_iter()
            .find(|r| r.def.name == "Bag")
            .expect("Bag");
        assert_eq!(bag.token, "", "no page pending after the import");
        assert_eq!(bag.server_total, Some(3));
        s.check_integrity().expect("sound");
    }

    #[test]
    fn a_count_mismatch_or_a_stop_rolls_back_every_source() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(dir.path());
        s.write(|tx| {
            let bag = meta::source(tx, "Bag")?;
            crate::store::objects::put(tx, &bag, "keep", &attrs(&[("a", "1")]))
        })
        .expect("seed");
        let before = rows(&s);
        // Fixed announces 5 objects but holds 1: Bag (imported first) must roll back too.
        let path = file(
            dir.path(),
            &[
                ("Bag", "app", "incremental", 1, None),
                ("Fixed", "app", "incremental", 5, None),
            ],
            &[(1, "x", "a", "1"), (2, "f", "name", "n")],
        );
        let all = s.sources().expect("sources");
        let plan = validate(&path, Partition::App, &all).expect("valid shape");
        let r = s.import_snapshot(&path, &plan, &|| false);
        assert!(matches!(r, Err(Error::BulkFile { .. })), "{r:?}");
        assert_eq!(rows(&s), before);
        let r = s.import_snapshot(&path, &plan, &|| true);
        assert_eq!(r, Err(Error::Stopped));
        assert_eq!(rows(&s), before);
    }

    #[test]
    fn mismatched_files_are_refused_before_anything_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(dir.path());
        let all = s.sources().expect("sources");
        let cases: Vec<(Vec<SourceLine<'_>>, &str)> = vec![
            (vec![("Bag", "app", "incremental", 0, None)], "Fixed missing"),
            (
                vec![
                    ("Bag", "user", "incremental", 0, None),
                    ("Fixed", "app", "incremental", 0, None),
                ],
                "wrong partition",
            ),
            (
                vec![
                    ("Bag", "app", "none", 0, None),
                    ("Fixed", "app", "incremental", 0, None),
                ],
                "not selected",
            ),
            (
                vec![
                    ("Bag", "app", "incremental", 0, None),
                    ("Bag", "app", "incremental", 0, None),
                    ("Fixed", "app", "incremental", 0, None),
                ],
                "listed twice",
            ),
        ];
        for (sources, what) in cases {
            let path = file(dir.path(), &sources, &[]);
            let r = validate(&path, Partition::App, &all);
            assert!(matches!(r, Err(Error::BulkFile { .. })), "{what}: {r:?}");
        }
        let junk = dir.path().join("junk.data");
        std::fs::write(&junk, vec![7_u8; 8192]).expect("write");
        assert!(matches!(
            validate(&junk, Partition::App, &all),
            Err(Error::BulkFile { .. })
        ));
    }

    #[test]
    fn a_changed_fixed_schema_is_schema_changed_and_the_same_one_imports() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(dir.path());
        let all = s.sources().expect("sources");
        let changed = r#"{"property":{"name":"string","price":"string","sku":"string"},"version":"2"}"#;
        let path = file(
            dir.path(),
            &[
                ("Bag", "app", "incremental", 0, None),
                ("Fixed", "app", "incremental", 0, Some(changed)),
            ],
            &[],
        );
        assert_eq!(
            validate(&path, Partition::App, &all).map(|_| ()),
            Err(Error::SchemaChanged)
        );
        let same = r#"{"property":{"name":"string","price":"string"},"version":"1"}"#;
        let path = file(
            dir.path(),
            &[
                ("Bag", "app", "incremental", 0, None),
                ("Fixed", "app", "incremental", 0, Some(same)),
            ],
            &[],
        );
        assert!(validate(&path, Partition::App, &all).is_ok());
    }
}
