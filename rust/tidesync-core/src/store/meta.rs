//! Client identity, settings and source definitions.

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{BelongsTo, ModelKind, Partition, SourceDef};

/// `client_info`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientInfo {
    /// RhoConnect client id, once created.
    pub client_id: Option<String>,
    /// Session cookie (`rhoconnect_session=…`), `None` when logged out.
    pub session: Option<String>,
    /// Last login name.
    pub user_name: Option<String>,
    /// A client reset must be sent before the next sync.
    pub reset_pending: bool,
}

pub(crate) fn client_info(c: &Connection) -> Result<ClientInfo> {
    Ok(c.query_row(
        "SELECT client_id, session, user_name, reset_pending FROM client_info WHERE id = 1",
        [],
        |r| {
            Ok(ClientInfo {
                client_id: r.get(0)?,
                session: r.get(1)?,
                user_name: r.get(2)?,
                reset_pending: r.get::<_, i64>(3)? != 0,
            })
        },
    )?)
}

pub(crate) fn set_session(c: &Connection, session: Option<&str>, user: Option<&str>) -> Result<()> {
    match user {
        Some(u) => c.execute(
            "UPDATE client_info SET session = ?1, user_name = ?2 WHERE id = 1",
            params![session, u],
        )?,
        None => c.execute("UPDATE client_info SET session = ?1 WHERE id = 1", params![session])?,
    };
    Ok(())
}

pub(crate) fn set_client_id(c: &Connection, id: Option<&str>) -> Result<()> {
    c.execute("UPDATE client_info SET client_id = ?1 WHERE id = 1", params![id])?;
    Ok(())
}

pub(crate) fn set_reset_pending(c: &Connection, pending: bool) -> Result<()> {
    c.execute(
        "UPDATE client_info SET reset_pending = ?1 WHERE id = 1",
        params![pending as i64],
    )?;
    Ok(())
}

pub(crate) fn setting(c: &Connection, key: &str) -> Result<Option<String>> {
    Ok(
        c.query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| r.get(0))
            .optional()?,
    )
}

pub(crate) fn set_setting(c: &Connection, key: &str, value: Option<&str>) -> Result<()> {
    match value {
        Some(v) => c.execute(
            "INSERT INTO settings(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![key, v],
        )?,
        None => c.execute("DELETE FROM settings WHERE key = ?1", [key])?,
    };
    Ok(())
}

/// The stored form of the parts of a definition that have no column of their own.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Definition {
    #[serde(default)]
    columns: Vec<String>,
    #[serde(default)]
    blob_attrs: Vec<String>,
    #[serde(default)]
    belongs_to: Vec<BelongsTo>,
    #[serde(default)]
    sync_type: crate::model::SyncType,
}

/// A source as stored, with its sync state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRow {
    /// Local source id.
    pub id: i64,
    /// The definition.
    pub def: SourceDef,
    /// Pending page token (`""`: none).
    pub token: String,
    /// Last `total_count` from the server.
    pub server_total: Option<i64>,
    /// Unix ms of the last sync of this source.
    pub last_sync_at: Option<i64>,
    /// Whether it succeeded.
    pub last_sync_ok: Option<bool>,
    /// Its error, if it failed.
    pub last_error: Option<String>,
}

impl SourceRow {
    /// The table holding this source's objects when it has a fixed schema.
    pub(crate) fn fixed_table(&self) -> Option<String> {
        matches!(self.def.kind, ModelKind::FixedSchema { .. }).then(|| fixed_table(self.id))
    }
}

pub(crate) fn fixed_table(id: i64) -> String {
    format!("fx_{id}")
}

/// Quotes an SQL identifier.
pub(crate) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

const SOURCE_COLUMNS: &str = "id, name, priority, partition, sync, kind, definition, token, server_total, last_sync_at, last_sync_ok, last_error";

fn row_to_source(r: &rusqlite::Row<'_>) -> rusqlite::Result<(SourceRow, String, String)> {
    let def_json: String = r.get(6)?;
    let kind: String = r.get(5)?;
    let partition: String = r.get(3)?;
    Ok((
        SourceRow {
            id: r.get(0)?,
            def: SourceDef {
                name: r.get(1)?,
                sync: r.get::<_, i64>(4)? != 0,
                priority: r.get(2)?,
                partition: Partition::User,
                kind: if kind == "fixed" {
                    ModelKind::FixedSchema { columns: Vec::new() }
                } else {
                    ModelKind::PropertyBag
                },
                blob_attrs: Vec::new(),
                belongs_to: Vec::new(),
                sync_type: crate::model::SyncType::Incremental,
            },
            token: r.get(7)?,
            server_total: r.get(8)?,
            last_sync_at: r.get(9)?,
            last_sync_ok: r.get::<_, Option<i64>>(10)?.map(|v| v != 0),
            last_error: r.get(11)?,
        },
        partition,
        def_json,
    ))
}

fn finish(parts: (SourceRow, String, String)) -> Result<SourceRow> {
    let (mut row, partition, def_json) = parts;
    row.def.partition = Partition::parse(&partition)?;
    let d: Definition = serde_json::from_str(&def_json)?;
    if let ModelKind::FixedSchema { columns } = &mut row.def.kind {
        *columns = d.columns;
    }
    row.def.blob_attrs = d.blob_attrs;
    row.def.belongs_to = d.belongs_to;
    row.def.sync_type = d.sync_type;
    Ok(row)
}

pub(crate) fn sources(c: &Connection) -> Result<Vec<SourceRow>> {
    let mut stmt = c.prepare_cached(&format!("SELECT {SOURCE_COLUMNS} FROM sources ORDER BY priority, id"))?;
    let rows = stmt.query_map([], row_to_source)?.collect::<Result<Vec<_>, _>>()?;
    rows.into_iter().map(finish).collect()
}

pub(crate) fn source(c: &Connection, name: &str) -> Result<SourceRow> {
    let mut stmt = c.prepare_cached(&format!("SELECT {SOURCE_COLUMNS} FROM sources WHERE name = ?1"))?;
    let row = stmt.query_row([name], row_to_source).optional()?;
    row.map(finish)
        .transpose()?
        .ok_or_else(|| Error::invalid(format!("unknown source `{name}`")))
}

/// Defines or redefines a source. A fixed-schema source gets its table; new columns are added.
pub(crate) fn define_source(c: &Connection, def: &SourceDef) -> Result<SourceRow> {
    def.validate()?;
    let columns = match &def.kind {
        ModelKind::FixedSchema { columns } => columns.clone(),
        ModelKind::PropertyBag => Vec::new(),
    };
    let stored = Definition {
        columns: columns.clone(),
        blob_attrs: def.blob_attrs.clone(),
        belongs_to: def.belongs_to.clone(),
        sync_type: def.sync_type,
    };
    let kind = if columns.is_empty() { "bag" } else { "fixed" };
    if let Ok(existing) = source(c, &def.name)
        && std::mem::discriminant(&existing.def.kind) != std::mem::discriminant(&def.kind)
    {
        let n: i64 = c.query_row(
            "SELECT count(*) FROM objects WHERE source_id = ?1",
            [existing.id],
            |r| r.get(0),
        )?;
        let m: i64 = match existing.fixed_table() {
            Some(t) => c.query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get(0))?,
            None => 0,
        };
        if n + m > 0 {
            return Err(Error::invalid(format!(
                "source {}: cannot switch between property bag and fixed schema while it holds objects",
                def.name
            )));
        }
    }
    c.execute(
        "INSERT INTO sources(name, priority, partition, sync, kind, definition) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT(name) DO UPDATE SET priority = excluded.priority, partition = excluded.partition,
             sync = excluded.sync, kind = excluded.kind, definition = excluded.definition",
        params![
            def.name,
            def.priority,
            def.partition.as_str(),
            def.sync as i64,
            kind,
            serde_json::to_string(&stored)?
        ],
    )?;
    let row = source(c, &def.name)?;
    if let Some(table) = row.fixed_table() {
        c.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (id TEXT PRIMARY KEY NOT NULL)"
        ))?;
        let existing: Vec<String> = c
            .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        for col in &columns {
            if !existing.contains(col) {
                c.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {} TEXT", ident(col)))?;
            }
        }
    }
    Ok(row)
}

pub(crate) fn set_token(c: &Connection, source_id: i64, token: &str) -> Result<()> {
    c.prepare_cached("UPDATE sources SET token = ?1 WHERE id = ?2")?
        .execute(params![token, source_id])?;
    Ok(())
}

pub(crate) fn set_server_total(c: &Connection, source_id: i64, total: i64) -> Result<()> {
    c.prepare_cached("UPDATE sources SET server_total = ?1 WHERE id = ?2")?
        .execute(params![total, source_id])?;
    Ok(())
}

pub(crate) fn record_sync_result(c: &Connection, source_id: i64, error: Option<&str>) -> Result<()> {
    c.execute(
        "UPDATE sources SET last_sync_at = ?1, last_sync_ok = ?2, last_error = ?3 WHERE id = ?4",
        params![crate::store::now_ms(), error.is_none() as i64, error, source_id],
    )?;
    Ok(())
}

/// Resets every source's sync tokens ("no page pending").
pub(crate) fn clear_tokens(c: &Connection) -> Result<()> {
    c.execute("UPDATE sources SET token = '', search_token = ''", [])?;
    Ok(())
}

/// Starts over with the server (unknown client, `database_client_reset`): no client id, no
/// tokens, and the local copies of synced objects dropped — except objects with queued changes,
/// which stay and are pushed — so that the full resend leaves no stale object behind.
pub(crate) fn start_over(tx: &rusqlite::Transaction<'_>) -> Result<()> {
    set_client_id(tx, None)?;
    clear_tokens(tx)?;
    for src in sources(tx)?.into_iter().filter(|s| s.def.sync) {
        match src.fixed_table() {
            None => tx.execute(
                "DELETE FROM objects WHERE source_id = ?1 AND id NOT IN (SELECT object FROM changes WHERE source_id = ?1)",
                [src.id],
            )?,
            Some(t) => tx.execute(
                &format!("DELETE FROM {t} WHERE id NOT IN (SELECT object FROM changes WHERE source_id = ?1)"),
                [src.id],
            )?,
        };
    }
    Ok(())
}
