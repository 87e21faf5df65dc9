//! Objects: the app's local data API (create / find / update / destroy) and the primitives the
//! sync layer uses to apply pages. Every local write to a synced source records its change in
//! the queue in the same transaction.

use rusqlite::{Connection, OptionalExtension, params, params_from_iter};

use super::Store;
use super::meta::{self, SourceRow, ident};
use super::queue;
use crate::error::{Error, Result};
use crate::model::{Attrs, ModelKind, Object, SourceDef, check_name};
use crate::query::{AttrExpr, BagExpr, ColumnExpr, Cond, Query, json_path, tail_sql, where_sql};

/// The bytes a JSON string literal must escape: control characters, the quote and the backslash.
const ESCAPE: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// True when `s` holds a byte a JSON string literal must escape. A table lookup per byte:
/// values are mostly short, and for them this beat both a `match` per byte and an
/// eight-bytes-at-a-time check (callgrind, page of 10 attributes of 12 characters).
fn needs_escape(s: &[u8]) -> bool {
    s.iter().any(|&b| ESCAPE[b as usize])
}

/// Appends `s` as a JSON string literal.
pub(crate) fn write_json_str(out: &mut String, s: &str) {
    out.push('"');
    // Almost every value needs no escape: a table lookup per byte decides, and the string is
    // copied whole (a `match` with a branch per byte and piecewise copies cost 3-4x more).
    if !needs_escape(s.as_bytes()) {
        out.push_str(s);
        out.push('"');
        return;
    }
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let esc = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if esc.is_empty() {
            out.push_str(&format!("\\u{b:04x}"));
        } else {
            out.push_str(esc);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// A JSON object from attribute pairs.
pub(crate) fn attrs_json<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::with_capacity(128);
    write_attrs_json(&mut out, pairs);
    out
}

/// Appends a JSON object of attribute pairs to `out`.
pub(crate) fn write_attrs_json<'a>(out: &mut String, pairs: impl IntoIterator<Item = (&'a str, &'a str)>) {
    out.push('{');
    let pairs = pairs.into_iter();
    for (i, (k, v)) in pairs.enumerate() {
        // One reservation per pair instead of one per push (the escape-free common case).
        out.reserve(k.len() + v.len() + 6);
        if i > 0 {
            out.push(',');
        }
        write_json_str(out, k);
        out.push(':');
        write_json_str(out, v);
    }
    out.push('}');
}

/// A JSON merge patch that removes the named attributes.
fn removal_patch<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::from("{");
    for (i, k) in names.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_json_str(&mut out, k);
        out.push_str(":null");
    }
    out.push('}');
    out
}

pub(crate) fn parse_attrs(json: &str) -> Result<Attrs> {
    let v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(json)?;
    Ok(v.into_iter()
        .filter_map(|(k, v)| match v {
            serde_json::Value::String(s) => Some((k, s)),
            serde_json::Value::Null => None,
            other => Some((k, other.to_string())),
        })
        .collect())
}

fn columns(src: &SourceRow) -> &[String] {
    match &src.def.kind {
        ModelKind::FixedSchema { columns } => columns,
        ModelKind::PropertyBag => &[],
    }
}

/// The attributes of object `id`, if it exists.
pub(crate) fn get(c: &Connection, src: &SourceRow, id: &str) -> Result<Option<Attrs>> {
    match src.fixed_table() {
        None => {
            let json: Option<String> = c
                .prepare_cached("SELECT attrs FROM objects WHERE source_id = ?1 AND id = ?2")?
                .query_row(params![src.id, id], |r| r.get(0))
                .optional()?;
            json.map(|j| parse_attrs(&j)).transpose()
        }
        Some(table) => {
            let cols = columns(src);
            let sql = format!(
                "SELECT {} FROM {table} WHERE id = ?1",
                cols.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ")
            );
            let row = c
                .prepare_cached(&sql)?
                .query_row([id], |r| {
                    let mut a = Attrs::new();
                    for (i, col) in cols.iter().enumerate() {
                        if let Some(v) = r.get::<_, Option<String>>(i)? {
                            a.insert(col.clone(), v);
                        }
                    }
                    Ok(a)
                })
                .optional()?;
            Ok(row)
        }
    }
}

/// Replaces object `id` with exactly `attrs` (creating it).
pub(crate) fn put(c: &Connection, src: &SourceRow, id: &str, attrs: &Attrs) -> Result<()> {
    match src.fixed_table() {
        None => {
            c.prepare_cached(
                "INSERT INTO objects(source_id, id, attrs) VALUES (?1, ?2, ?3)
                 ON CONFLICT(source_id, id) DO UPDATE SET attrs = excluded.attrs",
            )?
            .execute(params![
                src.id,
                id,
                attrs_json(attrs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            ])?;
        }
        Some(table) => {
            c.prepare_cached(&format!("DELETE FROM {table} WHERE id = ?1"))?
                .execute([id])?;
            let known: Vec<(&str, &str)> = attrs
                .iter()
                .filter(|(k, _)| columns(src).contains(k))
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            merge(c, src, id, &known)?;
            if known.is_empty() {
                c.prepare_cached(&format!("INSERT INTO {table}(id) VALUES (?1)"))?
                    .execute([id])?;
            }
        }
    }
    Ok(())
}

/// Upserts the given attributes of object `id` (a page's `insert`).
pub(crate) fn merge(c: &Connection, src: &SourceRow, id: &str, attrs: &[(&str, &str)]) -> Result<()> {
    if attrs.is_empty() {
        return Ok(());
    }
    match src.fixed_table() {
        None => {
            c.prepare_cached(
                "INSERT INTO objects(source_id, id, attrs) VALUES (?1, ?2, ?3)
                 ON CONFLICT(source_id, id) DO UPDATE SET attrs = json_patch(attrs, excluded.attrs)",
            )?
            .execute(params![src.id, id, attrs_json(attrs.iter().copied())])?;
        }
        Some(table) => {
            let cols = columns(src);
            let known: Vec<&(&str, &str)> = attrs.iter().filter(|(k, _)| cols.iter().any(|c| c == k)).collect();
            if known.is_empty() {
                return Ok(());
            }
            let names: Vec<String> = known.iter().map(|(k, _)| ident(k)).collect();
            let sql = format!(
                "INSERT INTO {table}(id, {}) VALUES (?1, {}) ON CONFLICT(id) DO UPDATE SET {}",
                names.join(", "),
                (2..known.len() + 2)
                    .map(|i| format!("?{i}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                names
                    .iter()
                    .map(|n| format!("{n} = excluded.{n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let mut values: Vec<&str> = vec![id];
            values.extend(known.iter().map(|(_, v)| *v));
            c.prepare_cached(&sql)?.execute(params_from_iter(values))?;
        }
    }
    Ok(())
}

/// Rows per multi-row upsert statement of [`Merger`].
const MERGE_ROWS: usize = 32;

/// The property-bag upsert of one object: its attributes merged into the stored ones.
const MERGE_SQL: &str = "INSERT INTO objects(source_id, id, attrs) VALUES (?1, ?2, ?3)
     ON CONFLICT(source_id, id) DO UPDATE SET attrs = json_patch(attrs, excluded.attrs)";

/// Upserts the attributes of many objects of one source (a page's `insert`). For a
/// property-bag source the objects are written [`MERGE_ROWS`] at a time by one cached
/// multi-row statement, their JSON built into one reused buffer: a row costs a share of one
/// `sqlite3_step` and no allocation. Fixed-schema sources use [`merge`] per object. Rows are
/// written at the latest by [`Merger::finish`]; nothing may read them before.
pub(crate) struct Merger<'c, 'a> {
    c: &'c Connection,
    src: &'c SourceRow,
    bag: Option<(rusqlite::CachedStatement<'c>, rusqlite::CachedStatement<'c>)>,
    ids: Vec<&'a str>,
    json: String,
    ends: Vec<usize>,
}

impl<'c, 'a> Merger<'c, 'a> {
    pub(crate) fn new(c: &'c Connection, src: &'c SourceRow) -> Result<Self> {
        let bag = match src.fixed_table() {
            None => {
                let rows = vec!["(?, ?, ?)"; MERGE_ROWS].join(", ");
                let many = format!(
                    "INSERT INTO objects(source_id, id, attrs) VALUES {rows}
                     ON CONFLICT(source_id, id) DO UPDATE SET attrs = json_patch(attrs, excluded.attrs)"
                );
                Some((c.prepare_cached(MERGE_SQL)?, c.prepare_cached(&many)?))
            }
            Some(_) => None,
        };
        Ok(Self {
            c,
            src,
            bag,
            ids: Vec::with_capacity(MERGE_ROWS),
            json: String::with_capacity(MERGE_ROWS * 512),
            ends: Vec::with_capacity(MERGE_ROWS),
        })
    }

    /// As [`merge`]: upserts `attrs` of object `id` (nothing for an empty list).
    pub(crate) fn merge(&mut self, id: &'a str, attrs: &[(&str, &str)]) -> Result<()> {
        if attrs.is_empty() {
            return Ok(());
        }
        if self.bag.is_none() {
            return merge(self.c, self.src, id, attrs);
        }
        write_attrs_json(&mut self.json, attrs.iter().copied());
        self.ids.push(id);
        self.ends.push(self.json.len());
        if self.ids.len() == MERGE_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes the rows still buffered.
    pub(crate) fn finish(mut self) -> Result<()> {
        self.flush()
    }

    fn flush(&mut self) -> Result<()> {
        let Some((one, many)) = self.bag.as_mut() else {
            return Ok(());
        };
        let mut start = 0;
        if self.ids.len() == MERGE_ROWS {
            for (i, (id, &end)) in self.ids.iter().zip(&self.ends).enumerate() {
                many.raw_bind_parameter(3 * i + 1, self.src.id)?;
                many.raw_bind_parameter(3 * i + 2, *id)?;
                many.raw_bind_parameter(3 * i + 3, &self.json[start..end])?;
                start = end;
            }
            many.raw_execute()?;
        } else {
            for (id, &end) in self.ids.iter().zip(&self.ends) {
                one.execute(params![self.src.id, id, &self.json[start..end]])?;
                start = end;
            }
        }
        self.ids.clear();
        self.ends.clear();
        self.json.clear();
        Ok(())
    }
}

/// Removes the named attributes of `id`; an object left without attributes is deleted.
pub(crate) fn remove_attrs(c: &Connection, src: &SourceRow, id: &str, names: &[&str]) -> Result<()> {
    if names.is_empty() {
        return Ok(());
    }
    match src.fixed_table() {
        None => {
            c.prepare_cached("UPDATE objects SET attrs = json_patch(attrs, ?3) WHERE source_id = ?1 AND id = ?2")?
                .execute(params![src.id, id, removal_patch(names.iter().copied())])?;
            c.prepare_cached("DELETE FROM objects WHERE source_id = ?1 AND id = ?2 AND attrs = '{}'")?
                .execute(params![src.id, id])?;
        }
        Some(table) => {
            let cols = columns(src);
            let known: Vec<String> = names
                .iter()
                .filter(|k| cols.iter().any(|c| c == *k))
                .map(|k| ident(k))
                .collect();
            if !known.is_empty() {
                let sql = format!(
                    "UPDATE {table} SET {} WHERE id = ?1",
                    known
                        .iter()
                        .map(|n| format!("{n} = NULL"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                c.prepare_cached(&sql)?.execute([id])?;
            }
            let all_null = cols
                .iter()
                .map(|c| format!("{} IS NULL", ident(c)))
                .collect::<Vec<_>>()
                .join(" AND ");
            c.prepare_cached(&format!("DELETE FROM {table} WHERE id = ?1 AND {all_null}"))?
                .execute([id])?;
        }
    }
    Ok(())
}

/// Deletes object `id`; true if it existed.
pub(crate) fn remove(c: &Connection, src: &SourceRow, id: &str) -> Result<bool> {
    let n = match src.fixed_table() {
        None => c
            .prepare_cached("DELETE FROM objects WHERE source_id = ?1 AND id = ?2")?
            .execute(params![src.id, id])?,
        Some(table) => c
            .prepare_cached(&format!("DELETE FROM {table} WHERE id = ?1"))?
            .execute([id])?,
    };
    Ok(n > 0)
}

/// Renames object `from` to `to` (a create's link). If `to` exists, `from`'s attributes win.
pub(crate) fn rename(c: &Connection, src: &SourceRow, from: &str, to: &str) -> Result<()> {
    match src.fixed_table() {
        None => {
            c.prepare_cached("UPDATE OR REPLACE objects SET id = ?3 WHERE source_id = ?1 AND id = ?2")?
                .execute(params![src.id, from, to])?;
        }
        Some(table) => {
            c.prepare_cached(&format!("UPDATE OR REPLACE {table} SET id = ?2 WHERE id = ?1"))?
                .execute([from, to])?;
        }
    }
    Ok(())
}

/// Replaces references `attr = from` with `to` in `src`'s objects (belongs_to after a link).
pub(crate) fn rename_refs(c: &Connection, src: &SourceRow, attr: &str, from: &str, to: &str) -> Result<usize> {
    Ok(match src.fixed_table() {
        None => c
            .prepare_cached(
                "UPDATE objects SET attrs = json_set(attrs, ?2, ?4) WHERE source_id = ?1 AND json_extract(attrs, ?2) = ?3",
            )?
            .execute(params![src.id, json_path(attr), from, to])?,
        Some(table) => {
            if !columns(src).iter().any(|c| c == attr) {
                return Ok(0);
            }
            let col = ident(attr);
            c.prepare_cached(&format!("UPDATE {table} SET {col} = ?2 WHERE {col} = ?1"))?.execute([from, to])?
        }
    })
}

fn select(c: &Connection, src: &SourceRow, q: &Query) -> Result<Vec<Object>> {
    let mut params: Vec<String> = Vec::new();
    let rows: Vec<Object> = match src.fixed_table() {
        None => {
            let x = BagExpr;
            params.push(src.id.to_string());
            let w = q.cond.as_ref().map(|cnd| where_sql(cnd, &x, &mut params)).transpose()?;
            let tail = tail_sql(q, &x, &mut params)?;
            let sql = format!(
                "SELECT id, attrs FROM objects WHERE source_id = ?1{}{tail}",
                w.map(|w| format!(" AND {w}")).unwrap_or_default()
            );
            let mut stmt = c.prepare_cached(&sql)?;
            let raw = stmt
                .query_map(params_from_iter(params.iter()), |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            raw.into_iter()
                .map(|(id, a)| {
                    Ok(Object {
                        id,
                        attrs: parse_attrs(&a)?,
                    })
                })
                .collect::<Result<_>>()?
        }
        Some(table) => {
            let cols = columns(src);
            let x = ColumnExpr(cols);
            let w = q.cond.as_ref().map(|cnd| where_sql(cnd, &x, &mut params)).transpose()?;
            let tail = tail_sql(q, &x, &mut params)?;
            let list = std::iter::once("id".to_owned())
                .chain(cols.iter().map(|c| ident(c)))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "SELECT {list} FROM {table}{}{tail}",
                w.map(|w| format!(" WHERE {w}")).unwrap_or_default()
            );
            let mut stmt = c.prepare_cached(&sql)?;
            stmt.query_map(params_from_iter(params.iter()), |r| {
                let mut attrs = Attrs::new();
                for (i, col) in cols.iter().enumerate() {
                    if let Some(v) = r.get::<_, Option<String>>(i + 1)? {
                        attrs.insert(col.clone(), v);
                    }
                }
                Ok(Object { id: r.get(0)?, attrs })
            })?
            .collect::<Result<Vec<_>, _>>()?
        }
    };
    Ok(match &q.select {
        None => rows,
        Some(keep) => rows
            .into_iter()
            .map(|mut o| {
                o.attrs.retain(|k, _| keep.contains(k));
                o
            })
            .collect(),
    })
}

fn count_where(c: &Connection, src: &SourceRow, cond: Option<&Cond>) -> Result<u64> {
    let mut params: Vec<String> = Vec::new();
    let (x, base): (Box<dyn AttrExpr>, String) = match src.fixed_table() {
        None => {
            params.push(src.id.to_string());
            (
                Box::new(BagExpr),
                "SELECT count(*) FROM objects WHERE source_id = ?1".into(),
            )
        }
        Some(t) => (
            Box::new(ColumnExpr(columns(src))),
            format!("SELECT count(*) FROM {t} WHERE 1"),
        ),
    };
    let w = cond.map(|cnd| where_sql(cnd, x.as_ref(), &mut params)).transpose()?;
    let sql = format!("{base}{}", w.map(|w| format!(" AND {w}")).unwrap_or_default());
    let n: i64 = c
        .prepare_cached(&sql)?
        .query_row(params_from_iter(params.iter()), |r| r.get(0))?;
    Ok(n as u64)
}

fn check_attrs(attrs: &Attrs) -> Result<()> {
    for (k, v) in attrs {
        check_name("attribute", k)?;
        if k == "id" {
            return Err(Error::invalid("`id` is the object id, not an attribute"));
        }
        if v.len() > 16 * 1024 * 1024 {
            return Err(Error::invalid(format!("attribute `{k}`: value larger than 16 MiB")));
        }
    }
    Ok(())
}

/// A new temporary id: cannot collide with server ids or other temporary ids.
pub(crate) fn temp_id() -> String {
    use rand::RngCore;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    let mut s = String::with_capacity(36);
    s.push_str("tmp-");
    for x in b {
        s.push(HEX[(x >> 4) as usize] as char);
        s.push(HEX[(x & 15) as usize] as char);
    }
    s
}

impl Store {
    /// Declares (or redeclares) a source.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for bad names, or switching the storage kind of a non-empty source.
    pub fn define_source(&self, def: &SourceDef) -> Result<()> {
        self.write(|tx| meta::define_source(tx, def).map(|_| ()))
    }

    /// Every declared source with its sync state, in sync order.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub fn sources(&self) -> Result<Vec<SourceRow>> {
        self.read(meta::sources)
    }

    /// Creates objects in one transaction; each gets a temporary id until the server confirms it.
    ///
    /// # Errors
    /// Unknown source, bad attribute names, storage failure. Nothing is written on error.
    pub fn create_many(&self, source: &str, mut items: Vec<Attrs>) -> Result<Vec<Object>> {
        for a in &items {
            check_attrs(a)?;
        }
        let blobs = self.import_blobs(source, items.iter_mut())?;
        let created = self.write(|tx| {
            let src = meta::source(tx, source)?;
            items
                .into_iter()
                .map(|attrs| {
                    let id = temp_id();
                    put(tx, &src, &id, &attrs)?;
                    if src.def.sync {
                        queue::record_create(tx, src.id, &id)?;
                    }
                    Ok(Object { id, attrs })
                })
                .collect::<Result<Vec<_>>>()
                .map(|mut out| {
                    self.resolve_blobs(&src, &mut out);
                    out
                })
        })?;
        blobs.keep();
        Ok(created)
    }

    /// Creates one object.
    ///
    /// # Errors
    /// As [`Store::create_many`].
    pub fn create(&self, source: &str, attrs: Attrs) -> Result<Object> {
        self.create_many(source, vec![attrs])?
            .pop()
            .ok_or_else(|| Error::invalid("nothing created"))
    }

    /// The object `id`, if it exists.
    ///
    /// # Errors
    /// Unknown source, storage failure.
    pub fn find(&self, source: &str, id: &str) -> Result<Option<Object>> {
        self.read(|c| {
            let src = meta::source(c, source)?;
            let mut found: Vec<Object> = get(c, &src, id)?
                .map(|attrs| Object {
                    id: id.to_owned(),
                    attrs,
                })
                .into_iter()
                .collect();
            self.resolve_blobs(&src, &mut found);
            Ok(found.pop())
        })
    }

    /// Objects matching `q`.
    ///
    /// # Errors
    /// Unknown source or attribute (fixed schema), storage failure.
    pub fn find_all(&self, source: &str, q: &Query) -> Result<Vec<Object>> {
        self.read(|c| {
            let src = meta::source(c, source)?;
            let mut found = select(c, &src, q)?;
            self.resolve_blobs(&src, &mut found);
            Ok(found)
        })
    }

    /// Number of objects matching `cond`.
    ///
    /// # Errors
    /// As [`Store::find_all`].
    pub fn count(&self, source: &str, cond: Option<&Cond>) -> Result<u64> {
        self.read(|c| {
            let src = meta::source(c, source)?;
            count_where(c, &src, cond)
        })
    }

    /// Sets attributes of several objects in one transaction. Unchanged values are not queued.
    ///
    /// # Errors
    /// [`Error::NotFound`] for a missing object (nothing is written), bad input, storage.
    pub fn update_many(&self, source: &str, mut items: Vec<(String, Attrs)>) -> Result<Vec<Object>> {
        for (_, a) in &items {
            check_attrs(a)?;
        }
        let blobs = self.import_blobs(source, items.iter_mut().map(|(_, a)| a))?;
        let updated = self.write(|tx| {
            let src = meta::source(tx, source)?;
            items
                .into_iter()
                .map(|(id, changes)| {
                    let mut current = get(tx, &src, &id)?.ok_or_else(|| Error::NotFound {
                        what: format!("{source} {id}"),
                    })?;
                    let changed: Attrs = changes
                        .into_iter()
                        .filter(|(k, v)| current.get(k).map(String::as_str).unwrap_or("") != v.as_str())
                        .collect();
                    if !changed.is_empty() {
                        current.extend(changed.clone());
                        put(tx, &src, &id, &current)?;
                        if src.def.sync {
                            queue::record_update(tx, src.id, &id, &changed)?;
                        }
                    }
                    Ok(Object { id, attrs: current })
                })
                .collect::<Result<Vec<_>>>()
                .map(|mut out| {
                    self.resolve_blobs(&src, &mut out);
                    out
                })
        })?;
        blobs.keep();
        Ok(updated)
    }

    /// Sets attributes of one object.
    ///
    /// # Errors
    /// As [`Store::update_many`].
    pub fn update(&self, source: &str, id: &str, changes: Attrs) -> Result<Object> {
        self.update_many(source, vec![(id.to_owned(), changes)])?
            .pop()
            .ok_or_else(|| Error::invalid("nothing updated"))
    }

    /// Deletes an object; false if it did not exist.
    ///
    /// # Errors
    /// Unknown source, storage failure.
    pub fn destroy(&self, source: &str, id: &str) -> Result<bool> {
        self.write(|tx| {
            let src = meta::source(tx, source)?;
            destroy_in(tx, &src, id)
        })
    }

    /// Deletes every object matching `cond` (all when `None`); returns how many.
    ///
    /// # Errors
    /// As [`Store::find_all`].
    pub fn delete_all(&self, source: &str, cond: Option<&Cond>) -> Result<u64> {
        self.write(|tx| {
            let src = meta::source(tx, source)?;
            let ids: Vec<String> = select(
                tx,
                &src,
                &Query {
                    cond: cond.cloned(),
                    ..Query::default()
                },
            )?
            .into_iter()
            .map(|o| o.id)
            .collect();
            for id in &ids {
                destroy_in(tx, &src, id)?;
            }
            Ok(ids.len() as u64)
        })
    }
}

fn destroy_in(tx: &Connection, src: &SourceRow, id: &str) -> Result<bool> {
    let Some(attrs) = get(tx, src, id)? else {
        return Ok(false);
    };
    remove(tx, src, id)?;
    if src.def.sync {
        queue::record_delete(tx, src.id, id, &attrs)?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SourceDef;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(&dir.path().join("t.db")).expect("open");
        s.define_source(&SourceDef::new("Product")).expect("define");
        s.define_source(&SourceDef::new("Fixed").fixed_schema(&["name", "qty"]))
            .expect("define");
        (dir, s)
    }

    fn a(pairs: &[(&str, &str)]) -> Attrs {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn merger_writes_in_chunks_and_keeps_page_order_for_repeated_ids() {
        let (_d, s) = store();
        let ids: Vec<String> = (0..70).map(|i| format!("o{i}")).collect();
        s.write(|tx| {
            let src = meta::source(tx, "Product")?;
            let mut m = Merger::new(tx, &src)?;
            for id in &ids {
                m.merge(id, &[("name", id.as_str()), ("qty", "1")])?;
            }
            // The same object again in the same chunk and in a later one: later values win,
            // other attributes stay.
            m.merge(&ids[40], &[("qty", "2")])?;
            m.merge(&ids[3], &[("qty", "3"), ("extra", "x")])?;
            m.merge(&ids[3], &[])?;
            m.finish()
        })
        .expect("merge");
        assert_eq!(s.count("Product", None).expect("count"), 70);
        let o40 = s.find("Product", "o40").expect("find").expect("exists");
        assert_eq!(o40.attrs, a(&[("name", "o40"), ("qty", "2")]));
        let o3 = s.find("Product", "o3").expect("find").expect("exists");
        assert_eq!(o3.attrs, a(&[("name", "o3"), ("qty", "3"), ("extra", "x")]));
    }

    #[test]
    fn escape_check_finds_every_special_byte_at_every_position() {
        for len in 1..20 {
            for pos in 0..len {
                for special in [0u8, 0x1f, b'"', b'\\', b'\n'] {
                    let mut s = vec![b'a'; len];
                    s[pos] = special;
                    assert!(needs_escape(&s), "{special:#x} at {pos} of {len}");
                }
                let mut s = vec![b'a'; len];
                s[pos] = 0x7f;
                assert!(!needs_escape(&s));
            }
        }
        assert!(!needs_escape("ééééé !#$%&'()*+,-./[]^_`{|}~".as_bytes()));
    }

    #[test]
    fn attribute_json_escapes_exactly_what_json_requires() {
        let pairs = [("plain", "abc é /"), ("q\"k", "a\\b\n\r\t\u{1}\u{1f}\u{7f}")];
        let json = attrs_json(pairs.iter().copied());
        assert_eq!(
            json,
            r#"{"plain":"abc é /","q\"k":"a\\b\n\r\t\u0001\u001f"#.to_owned() + "\u{7f}\"}"
        );
        let back = parse_attrs(&json).expect("valid JSON");
        assert_eq!(back.get("q\"k").map(String::as_str), Some(pairs[1].1));
    }

    #[test]
    fn create_find_update_destroy_round_trip_in_both_layouts() {
        let (_d, s) = store();
        for source in ["Product", "Fixed"] {
            let o = s
                .create(source, a(&[("name", "x \"q\""), ("qty", "1")]))
                .expect("create");
            assert!(o.id.starts_with("tmp-"));
            assert_eq!(s.find(source, &o.id).expect("find").expect("exists").attrs, o.attrs);
            let u = s.update(source, &o.id, a(&[("qty", "2")])).expect("update");
            assert_eq!(u.attrs.get("qty").map(String::as_str), Some("2"));
            assert_eq!(u.attrs.get("name").map(String::as_str), Some("x \"q\""));
            assert!(s.destroy(source, &o.id).expect("destroy"));
            assert_eq!(s.find(source, &o.id).expect("find"), None);
            assert!(!s.destroy(source, &o.id).expect("destroy again"));
        }
    }

    #[test]
    fn conditions_order_and_paging() {
        let (_d, s) = store();
        for source in ["Product", "Fixed"] {
            let items = (0..10)
                .map(|i| a(&[("name", &format!("n{i}")), ("qty", &format!("{}", i % 3))]))
                .collect();
            s.create_many(source, items).expect("create");
            let q = Query::filter(Cond::And(vec![
                Cond::In("qty".into(), vec!["0".into(), "1".into()]),
                Cond::Like("name".into(), "N%".into()),
            ]))
            .order_by("name", true)
            .page(3, 1);
            let names: Vec<String> = s
                .find_all(source, &q)
                .expect("find")
                .into_iter()
                .map(|o| o.attrs["name"].clone())
                .collect();
            assert_eq!(names, vec!["n7", "n6", "n4"]);
            assert_eq!(
                s.count(source, Some(&Cond::Eq("qty".into(), "2".into())))
                    .expect("count"),
                3
            );
            assert_eq!(s.count(source, Some(&Cond::IsNull("qty".into()))).expect("count"), 0);
            assert_eq!(
                s.count(
                    source,
                    Some(&Cond::Or(vec![
                        Cond::Eq("name".into(), "n1".into()),
                        Cond::Gt("name".into(), "n8".into())
                    ]))
                )
                .expect("count"),
                2
            );
            assert_eq!(
                s.delete_all(source, Some(&Cond::Ne("qty".into(), "0".into())))
                    .expect("delete"),
                6
            );
            assert_eq!(s.count(source, None).expect("count"), 4);
        }
    }

    #[test]
    fn bad_input_is_refused_and_changes_nothing() {
        let (_d, s) = store();
        assert!(matches!(
            s.create("Nope", Attrs::new()),
            Err(Error::InvalidInput { .. })
        ));
        assert!(matches!(
            s.create("Product", a(&[("id", "1")])),
            Err(Error::InvalidInput { .. })
        ));
        assert!(matches!(
            s.create("Product", a(&[("", "1")])),
            Err(Error::InvalidInput { .. })
        ));
        assert!(matches!(
            s.find_all("Fixed", &Query::filter(Cond::Eq("nope".into(), "1".into()))),
            Err(Error::InvalidInput { .. })
        ));
        assert!(matches!(
            s.update("Product", "missing", a(&[("x", "1")])),
            Err(Error::NotFound { .. })
        ));
        assert_eq!(s.count("Product", None).expect("count"), 0);
    }
}
