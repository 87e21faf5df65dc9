//! A backend stored in a SQLite file, for `tidesync serve --db app.db`.
//!
//! Layout (created if missing):
//!
//! ```sql
//! CREATE TABLE ts_sources (name TEXT PRIMARY KEY, partition TEXT NOT NULL DEFAULT 'user'
//!                          CHECK (partition IN ('user','app')), priority INTEGER NOT NULL DEFAULT 0);
//! CREATE TABLE ts_objects (source TEXT NOT NULL, owner TEXT NOT NULL DEFAULT '', id TEXT NOT NULL,
//!                          attrs TEXT NOT NULL /* JSON object of strings */, PRIMARY KEY (source, owner, id));
//! CREATE TABLE ts_users (login TEXT PRIMARY KEY, password_sha256 TEXT NOT NULL);
//! ```
//!
//! `owner` is `''` for app-partition sources and the user's login otherwise. Objects created by
//! clients get the next integer id of their source. Other programs may edit the tables; the
//! server sees their edits after the source's refresh interval (`--refresh-secs`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, params};
use sha2::Digest as _;

use crate::adapter::{AdapterError, Authenticator, SourceAdapter};
use crate::app::{App, Partition, SourceDef};
use crate::obj::Obj;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS ts_sources (name TEXT PRIMARY KEY, partition TEXT NOT NULL DEFAULT 'user'
    CHECK (partition IN ('user','app')), priority INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS ts_objects (source TEXT NOT NULL, owner TEXT NOT NULL DEFAULT '', id TEXT NOT NULL,
    attrs TEXT NOT NULL, PRIMARY KEY (source, owner, id));
CREATE TABLE IF NOT EXISTS ts_users (login TEXT PRIMARY KEY, password_sha256 TEXT NOT NULL);
";

/// Errors opening a SQLite backend.
#[derive(Debug, thiserror::Error)]
pub enum SqliteBackendError {
    /// SQLite failed.
    #[error("sqlite backend: {0}")]
    Sql(#[from] rusqlite::Error),
    /// The file's content is not usable.
    #[error("sqlite backend: {0}")]
    Invalid(String),
}

type Shared = Arc<Mutex<Connection>>;

/// Opens (creating if needed) the backend at `path` and builds the application from its
/// `ts_sources` table. `refresh` is how often sources re-read their table (`None`: once).
///
/// # Errors
/// The file cannot be opened or has an invalid `ts_sources` row.
pub fn open_app(path: &Path, refresh: Option<Duration>) -> Result<App, SqliteBackendError> {
    let conn = Connection::open(path)?;
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.execute_batch(SCHEMA)?;
    let defs: Vec<(String, String, i64)> = conn
        .prepare("SELECT name, partition, priority FROM ts_sources ORDER BY priority, name")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    let shared: Shared = Arc::new(Mutex::new(conn));
    let mut sources = Vec::new();
    for (name, partition, priority) in defs {
        let partition = match partition.as_str() {
            "app" => Partition::App,
            "user" => Partition::User,
            p => return Err(SqliteBackendError::Invalid(format!("source {name}: partition `{p}`"))),
        };
        sources.push(SourceDef {
            name: name.clone(),
            partition,
            priority,
            adapter: Arc::new(SqliteAdapter {
                conn: shared.clone(),
                source: name,
                partition,
            }),
            refresh,
        });
    }
    let mut app = App::transcripts();
    app.sources = sources;
    app.auth = Arc::new(SqliteUsers { conn: shared });
    Ok(app)
}

/// Adds (or changes the password of) a user.
///
/// # Errors
/// SQLite failed.
pub fn add_user(path: &Path, login: &str, password: &str) -> Result<(), SqliteBackendError> {
    let conn = Connection::open(path)?;
    conn.execute_batch(SCHEMA)?;
    conn.execute(
        "INSERT INTO ts_users(login, password_sha256) VALUES (?1, ?2)
         ON CONFLICT(login) DO UPDATE SET password_sha256 = excluded.password_sha256",
        params![login, sha256_hex(password)],
    )?;
    Ok(())
}

/// Declares a source (idempotent).
///
/// # Errors
/// SQLite failed.
pub fn add_source(path: &Path, name: &str, partition: Partition, priority: i64) -> Result<(), SqliteBackendError> {
    let conn = Connection::open(path)?;
    conn.execute_batch(SCHEMA)?;
    conn.execute(
        "INSERT INTO ts_sources(name, partition, priority) VALUES (?1, ?2, ?3)
         ON CONFLICT(name) DO UPDATE SET partition = excluded.partition, priority = excluded.priority",
        params![name, partition.as_str(), priority],
    )?;
    Ok(())
}

fn sha256_hex(s: &str) -> String {
    // Unsalted SHA-256 keeps clear-text passwords out of the file; this is a reference server,
    // not a credential store (put a real identity provider behind `Authenticator` for that).
    let mut h = sha2::Sha256::new();
    h.update(s.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

struct SqliteUsers {
    conn: Shared,
}

impl Authenticator for SqliteUsers {
    fn authenticate(&self, login: &str, password: &str) -> bool {
        if login.is_empty() {
            return false;
        }
        let stored: Option<String> = self
            .conn
            .lock()
            .query_row("SELECT password_sha256 FROM ts_users WHERE login = ?1", [login], |r| {
                r.get(0)
            })
            .optional()
            .unwrap_or(None);
        stored.is_some_and(|s| s == sha256_hex(password))
    }
}

struct SqliteAdapter {
    conn: Shared,
    source: String,
    partition: Partition,
}

impl SqliteAdapter {
    fn owner<'a>(&self, user: &'a str) -> &'a str {
        match self.partition {
            Partition::App => "",
            Partition::User => user,
        }
    }

    fn write(&self, user: &str, id: &str, obj: Option<&Obj>) -> Result<(), AdapterError> {
        let conn = self.conn.lock();
        let r = match obj {
            Some(o) => conn.execute(
                "INSERT INTO ts_objects(source, owner, id, attrs) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(source, owner, id) DO UPDATE SET attrs = excluded.attrs",
                params![self.source, self.owner(user), id, o.to_json().to_string()],
            ),
            None => conn.execute(
                "DELETE FROM ts_objects WHERE source = ?1 AND owner = ?2 AND id = ?3",
                params![self.source, self.owner(user), id],
            ),
        };
        r.map(|_| ()).map_err(|e| AdapterError(format!("storage error: {e}")))
    }
}

impl SourceAdapter for SqliteAdapter {
    fn query(&self, user: &str) -> Result<Vec<(String, Obj)>, AdapterError> {
        let conn = self.conn.lock();
        let mut stmt = conn
            .prepare_cached("SELECT id, attrs FROM ts_objects WHERE source = ?1 AND owner = ?2")
            .map_err(|e| AdapterError(format!("storage error: {e}")))?;
        let rows = stmt
            .query_map(params![self.source, self.owner(user)], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(|e| AdapterError(format!("storage error: {e}")))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, attrs) = row.map_err(|e| AdapterError(format!("storage error: {e}")))?;
            let obj = serde_json::from_str::<serde_json::Value>(&attrs)
                .ok()
                .and_then(|v| Obj::from_json(&v))
                .ok_or_else(|| AdapterError(format!("object {id}: attrs is not a JSON object of strings")))?;
            out.push((id, obj));
        }
        Ok(out)
    }

    fn create(&self, user: &str, obj: &Obj) -> Result<Option<String>, AdapterError> {
        let next: i64 = {
            let conn = self.conn.lock();
            conn.query_row(
                "SELECT COALESCE(MAX(CAST(id AS INTEGER)), 0) + 1 FROM ts_objects WHERE source = ?1 AND owner = ?2",
                params![self.source, self.owner(user)],
                |r| r.get(0),
            )
            .map_err(|e| AdapterError(format!("storage error: {e}")))?
        };
        let id = next.to_string();
        self.write(user, &id, Some(obj))?;
        Ok(Some(id))
    }

    fn update(&self, user: &str, id: &str, current: &Obj, changes: &Obj) -> Result<(), AdapterError> {
        self.write(user, id, Some(&current.merged(changes)))
    }

    fn delete(&self, user: &str, id: &str, _current: &Obj) -> Result<(), AdapterError> {
        self.write(user, id, None)
    }

    fn put(&self, user: &str, id: &str, obj: Option<&Obj>) -> Result<(), AdapterError> {
        self.write(user, id, obj)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_users_and_creates_persist_in_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("app.db");
        add_source(&path, "Task", Partition::User, 1).expect("source");
        add_user(&path, "alice", "s3cret").expect("user");
        let app = open_app(&path, None).expect("open");
        assert!(app.auth.authenticate("alice", "s3cret"));
        assert!(!app.auth.authenticate("alice", "wrong"));
        assert!(!app.auth.authenticate("bob", "s3cret"));
        let task = app.source("Task").expect("declared");
        let id = task
            .adapter
            .create("alice", &Obj::from_pairs([("title", "a")]))
            .expect("create")
            .expect("id");
        assert_eq!(id, "1");
        let again = open_app(&path, None).expect("reopen");
        let rows = again
            .source("Task")
            .expect("declared")
            .adapter
            .query("alice")
            .expect("query");
        assert_eq!(rows, vec![("1".to_string(), Obj::from_pairs([("title", "a")]))]);
        assert!(
            again
                .source("Task")
                .expect("declared")
                .adapter
                .query("bob")
                .expect("query")
                .is_empty()
        );
    }
}
