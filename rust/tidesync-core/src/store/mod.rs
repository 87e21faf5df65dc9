//! The local SQLite store: one writer connection (sync and app writes, one transaction at a
//! time) and one reader (app queries run during a commit thanks to WAL).
//!
//! Layout and why (measured figures in ARCHITECTURE.md): property-bag objects are one row per
//! object with the attributes as a JSON object, so applying a page of N objects is N upserts —
//! the same order of work as inserting N rows into a plain table — while any attribute set is
//! still possible and attribute-level diffs are merged in SQL (`json_patch`). Fixed-schema
//! sources get a real table per source.

pub mod apply;
pub mod blobs;
pub mod bulk_import;
pub mod meta;
pub mod objects;
pub mod queue;
#[cfg(test)]
mod queue_tests;

use std::path::{Path, PathBuf};
use std::time::Duration;

use parking_lot::Mutex;
use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};

use crate::error::{Error, Result};

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = 3;

/// The store. Safe to share between threads (`Arc<Store>`).
pub struct Store {
    writer: Mutex<Connection>,
    reader: Mutex<Connection>,
    interrupt: rusqlite::InterruptHandle,
    /// True while a page transaction runs: only then may [`Store::interrupt`] abort the
    /// writer. Other writes (app writes, queue bookkeeping after a push) must not be aborted.
    interruptible: Mutex<bool>,
    path: PathBuf,
    /// The files directory of blob attributes and the files being written into it.
    blobs: blobs::BlobFiles,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn configure(conn: &Connection) -> Result<()> {
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = ON;
         PRAGMA temp_store = MEMORY;
         PRAGMA cache_size = -16384;",
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

impl Store {
    /// Opens (creating or migrating) the database at `path`.
    ///
    /// # Errors
    /// [`Error::Storage`] when SQLite fails, [`Error::IncompatibleSchema`] when the file was
    /// written by a newer build.
    pub fn open(path: &Path) -> Result<Store> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::Storage {
                reason: format!("{}: {e}", dir.display()),
            })?;
        }
        let mut writer = Connection::open(path)?;
        configure(&writer)?;
        migrate(&mut writer)?;
        let reader = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
        )?;
        reader.busy_timeout(Duration::from_secs(5))?;
        reader.set_prepared_statement_cache_capacity(64);
        let interrupt = writer.get_interrupt_handle();
        log::info!("store opened (schema v{SCHEMA_VERSION})");
        Ok(Store {
            writer: Mutex::new(writer),
            reader: Mutex::new(reader),
            interrupt,
            interruptible: Mutex::new(false),
            path: path.to_owned(),
            blobs: blobs::BlobFiles::for_db(path),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` in one IMMEDIATE write transaction; commits on `Ok`, rolls back on `Err`.
    pub(crate) fn write<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.writer.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// Like [`Store::write`], but [`Store::interrupt`] may abort it (a page being applied: the
    /// transaction rolls back and the page is fetched again next time).
    pub(crate) fn write_interruptible<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        self.write_page(true, f)
    }

    /// [`Store::write_interruptible`] for a page. With `durable == false` the commit does not
    /// wait for the disk (`synchronous = NORMAL` for this one commit): it is still atomic and
    /// survives a crash of the app, but a power cut may roll it back. Only for a commit that
    /// nothing acknowledges and whose loss the next sync repairs: the last page of a pull when
    /// it carries no data and no server error (token `""`, queue settling, bookkeeping).
    pub(crate) fn write_page<T>(&self, durable: bool, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.writer.lock();
        if !durable {
            conn.pragma_update(None, "synchronous", "NORMAL")?;
        }
        *self.interruptible.lock() = true;
        let result = (|| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        })();
        *self.interruptible.lock() = false;
        if !durable {
            // Back to the default before the lock is released, whatever happened above.
            if let Err(e) = conn.pragma_update(None, "synchronous", "FULL") {
                log::error!("restoring synchronous = FULL: {e}");
                return Err(e.into());
            }
        }
        result
    }

    /// Runs `f` on the reader connection (a consistent snapshot per statement; use a
    /// transaction inside `f` for a multi-statement snapshot).
    pub(crate) fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = self.reader.lock();
        f(&conn)
    }

    /// Aborts the page transaction running now, if any (`stop_sync`). App writes and queue
    /// bookkeeping are never aborted.
    pub fn interrupt(&self) {
        let guard = self.interruptible.lock();
        if *guard {
            self.interrupt.interrupt();
        }
    }

    /// An engine setting (sync server URL, page size, …), if set.
    ///
    /// # Errors
    /// Storage.
    pub fn setting(&self, key: &str) -> Result<Option<String>> {
        self.read(|c| meta::setting(c, key))
    }

    /// Stores (or, with `None`, removes) an engine setting.
    ///
    /// # Errors
    /// Storage.
    pub fn set_setting(&self, key: &str, value: Option<&str>) -> Result<()> {
        self.write(|tx| meta::set_setting(tx, key, value))
    }

    /// Rewrites the file so that deleted data leaves no trace in it (after `logout(wipe)`).
    ///
    /// # Errors
    /// Storage.
    pub fn vacuum(&self) -> Result<()> {
        let conn = self.writer.lock();
        conn.execute_batch("VACUUM; PRAGMA wal_checkpoint(TRUNCATE);")?;
        Ok(())
    }

    /// `PRAGMA integrity_check`: `Ok(())` when the database is sound.
    ///
    /// # Errors
    /// [`Error::Storage`] with SQLite's findings.
    pub fn check_integrity(&self) -> Result<()> {
        let conn = self.writer.lock();
        let rows: Vec<String> = conn
            .prepare("PRAGMA integrity_check")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        if rows == ["ok"] {
            Ok(())
        } else {
            Err(Error::Storage {
                reason: format!("integrity check: {}", rows.join("; ")),
            })
        }
    }
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found: u32 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    match found {
        0 => {
            tx.execute_batch(include_str!("sql/schema.sql"))?;
            (1..SCHEMA_VERSION).try_for_each(|from| upgrade_from(&tx, from))?;
        }
        v if v > SCHEMA_VERSION => {
            return Err(Error::IncompatibleSchema {
                found: v,
                supported: SCHEMA_VERSION,
            });
        }
        v => (v..SCHEMA_VERSION).try_for_each(|from| upgrade_from(&tx, from))?,
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    // A push interrupted by a crash may have reached the server: its changes' outcome is
    // unknown (settled by the next complete pull), never silently stuck in flight.
    tx.execute("UPDATE changes SET state = 'unknown' WHERE state = 'in_flight'", [])?;
    tx.commit()?;
    Ok(())
}

/// Forward migration from `from` to `from + 1`. (Version 1 is the first released schema; a
/// fresh database is built as version 1 and then migrated, so both paths give one schema.)
fn upgrade_from(tx: &Transaction<'_>, from: u32) -> Result<()> {
    match from {
        1 => tx.execute_batch(include_str!("sql/v2.sql"))?,
        2 => tx.execute_batch(include_str!("sql/blobs.sql"))?,
        _ => {
            return Err(Error::Storage {
                reason: format!("no migration from schema version {from}"),
            });
        }
    }
    Ok(())
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_database_gets_the_current_schema_and_reopens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.db");
        let s = Store::open(&path).expect("open");
        s.check_integrity().expect("sound");
        drop(s);
        let s = Store::open(&path).expect("reopen");
        let v: u32 = s
            .read(|c| Ok(c.query_row("PRAGMA user_version", [], |r| r.get(0))?))
            .expect("version");
        assert_eq!(v, SCHEMA_VERSION);
    }

    #[test]
    fn a_version_1_database_gets_the_blob_downloads_table() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("v1.db");
        {
            let c = Connection::open(&path).expect("raw open");
            c.execute_batch(include_str!("sql/schema.sql")).expect("v1 schema");
            c.execute_batch("PRAGMA user_version = 1; INSERT INTO sources(id, name) VALUES (1, 'Photo');")
                .expect("v1 rows");
        }
        let s = Store::open(&path).expect("migrate");
        s.check_integrity().expect("sound");
        assert_eq!(s.pending_blob_downloads().expect("table"), 0);
    }

    #[test]
    fn a_version_1_database_is_migrated_with_its_queue_and_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("v1.db");
        {
            let c = Connection::open(&path).expect("raw open");
            c.execute_batch(include_str!("sql/schema.sql")).expect("v1 schema");
            c.execute_batch(
                "PRAGMA user_version = 1;
                 INSERT INTO sources(id, name) VALUES (1, 'Product');
                 INSERT INTO objects VALUES (1, 'a', '{\"x\":\"1\"}');
                 INSERT INTO changes(source_id, object, op, attrs, state) VALUES (1, 'a', 'update', '{\"x\":\"1\"}', 'sent');
                 INSERT INTO sync_errors(source_id, kind, object, message, created_at) VALUES (1, 'update', 'a', 'no', 5);",
            )
            .expect("v1 rows");
        }
        let s = Store::open(&path).expect("migrate");
        s.check_integrity().expect("sound");
        let (version, change, error): (u32, String, String) = s
            .read(|c| {
                Ok((
                    c.query_row("PRAGMA user_version", [], |r| r.get(0))?,
                    c.query_row("SELECT op || ' ' || state || ' ' || attrs FROM changes", [], |r| {
                        r.get(0)
                    })?,
                    c.query_row("SELECT kind || ' ' || message FROM sync_errors", [], |r| r.get(0))?,
                ))
            })
            .expect("read");
        assert_eq!(version, SCHEMA_VERSION);
        assert_eq!(change, "update sent {\"x\":\"1\"}");
        assert_eq!(error, "update no");
        // Same schema as a fresh database, and the checks still refuse unknown values.
        let fresh = Store::open(&dir.path().join("fresh.db")).expect("fresh");
        let schema = |st: &Store| -> Vec<String> {
            st.read(|c| {
                Ok(
                    c.prepare("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name")?
                        .query_map([], |r| r.get(0))?
                        .collect::<Result<_, _>>()?,
                )
            })
            .expect("schema")
        };
        assert_eq!(schema(&s), schema(&fresh));
        assert!(
            s.write(|tx| Ok(tx.execute("INSERT INTO changes(source_id, object, op) VALUES (1, 'b', 'nope')", [])?))
                .is_err()
        );
        // No temporary b-tree per queued change any more.
        let ephemeral = s
            .read(|c| {
                let ops: Vec<String> = c
                    .prepare("EXPLAIN INSERT INTO changes(source_id, object, op) VALUES (1, 'b', 'create')")?
                    .query_map([], |r| r.get(1))?
                    .collect::<Result<_, _>>()?;
                Ok(ops.iter().filter(|o| o.as_str() == "OpenEphemeral").count())
            })
            .expect("explain");
        assert_eq!(ephemeral, 0);
    }

    #[test]
    fn a_newer_database_is_refused_with_a_typed_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.db");
        drop(Store::open(&path).expect("open"));
        let c = Connection::open(&path).expect("raw open");
        c.pragma_update(None, "user_version", SCHEMA_VERSION + 1).expect("bump");
        drop(c);
        assert_eq!(
            Store::open(&path).map(|_| ()),
            Err(Error::IncompatibleSchema {
                found: SCHEMA_VERSION + 1,
                supported: SCHEMA_VERSION
            })
        );
    }
}
