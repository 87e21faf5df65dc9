//! [`SyncClient`]: the public Rust API of the sync client — login, sync, local data, and the
//! app's decisions about refused changes. The engine (background thread, notifications) is
//! built on it; the FFI wraps it.

mod bulk;

pub use bulk::{BULK_STATE_KEY, BulkReport, BulkSyncState};

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::params;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{Attrs, Object, SourceDef};
use crate::protocol::rhoconnect::{HttpConfig, RhoConnect};
use crate::protocol::{Protocol, PushRegistration, SearchReport, SearchRequest, SourceReport, SyncCtx, SyncObserver};
use crate::query::{Cond, Query};
use crate::store::Store;
use crate::store::meta::{self, SourceRow};
use crate::store::objects::{self, parse_attrs};
use crate::store::queue::{self, Change};

/// Client settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncConfig {
    /// The Rhodes `syncserver` URL, e.g. `http://127.0.0.1:9292/application/`.
    pub sync_server: String,
    /// Objects per page (default 2000, as Rhodes).
    pub page_size: u32,
    /// Timeouts and TLS.
    pub http: HttpConfig,
    /// The directory for files of blob attributes (kept in its `blobs/` subdirectory).
    /// `None`: `<database path>.files`. See [`crate::store::blobs`].
    pub files_dir: Option<std::path::PathBuf>,
}

impl SyncConfig {
    /// Defaults for `sync_server`.
    pub fn new(sync_server: &str) -> Self {
        Self {
            sync_server: sync_server.to_owned(),
            page_size: 2000,
            http: HttpConfig::default(),
            files_dir: None,
        }
    }
}

/// Options of one sync run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncOptions {
    /// Extra query parameters for every pull (`a=1&b=2`).
    pub query_params: String,
    /// Only sources with local changes to push.
    pub only_changed_sources: bool,
    /// Page size for this run (default: the client's).
    pub page_size: Option<u32>,
    /// The stop epoch ([`SyncClient::stop_epoch`]) the run belongs to: a stop requested after
    /// that moment stops the run even if it came before the run started. Default: now.
    pub stop_epoch: Option<u64>,
    /// Do not count the source's local objects at the end ([`SourceReport::local_objects`]
    /// stays 0): the count scans the source, which costs more than a small incremental sync of
    /// a large store.
    pub skip_object_count: bool,
}

/// The outcome of a sync of several sources.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Per source, in sync order.
    pub sources: Vec<(String, std::result::Result<SourceReport, Error>)>,
}

impl SyncReport {
    /// True when every source synced.
    pub fn ok(&self) -> bool {
        self.sources.iter().all(|(_, r)| r.is_ok())
    }
}

/// A refused change as the server reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncErrorRecord {
    /// `create`, `update`, `delete` or `source`.
    pub kind: String,
    /// The object (for `source`: the error kind, e.g. `query-error`).
    pub object: Option<String>,
    /// The server's message.
    pub message: String,
    /// What was sent.
    pub attrs: Attrs,
    /// For `update`: the server's copy of the object.
    pub rollback: Option<Attrs>,
}

/// What to do with a refused create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateErrorAction {
    /// Forget it: the object is removed locally, nothing is sent.
    Delete,
    /// Send it again as a new create with its current attributes.
    Recreate,
}

/// What to do with a refused update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateErrorAction {
    /// Send the refused values again (newer local edits win).
    Retry,
    /// Take the server's copy for the refused attributes.
    Rollback,
}

/// What to do with a refused delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteErrorAction {
    /// Send the delete again.
    Retry,
    /// Bring the object back locally from the values it had.
    Restore,
}

/// The sync client over one database.
#[derive(Debug)]
pub struct SyncClient {
    store: Arc<Store>,
    protocol: Box<dyn Protocol>,
    config: SyncConfig,
    epoch: Arc<AtomicU64>,
}

impl SyncClient {
    /// Opens the database at `db_path` and prepares a client of `config.sync_server`.
    ///
    /// # Errors
    /// Storage errors, an incompatible schema, or an invalid server URL.
    pub fn open(db_path: &Path, config: SyncConfig) -> Result<Self> {
        let store = Arc::new(Store::open(db_path)?);
        Self::with_store(store, config)
    }

    /// A client over an already open store (to change settings without reopening the file).
    ///
    /// # Errors
    /// An invalid server URL.
    pub fn with_store(store: Arc<Store>, config: SyncConfig) -> Result<Self> {
        let protocol = RhoConnect::new(&config.sync_server, &config.http)?;
        if let Some(dir) = &config.files_dir {
            store.set_files_dir(dir);
        }
        Ok(Self {
            store,
            protocol: Box::new(protocol),
            config,
            epoch: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The current stop epoch: [`SyncClient::stop`] advances it.
    pub fn stop_epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// The sources a sync-all would sync, in order (priority, belongs_to parents first).
    ///
    /// # Errors
    /// Storage.
    pub fn sync_plan(&self) -> Result<Vec<SourceRow>> {
        Ok(sync_order(self.store.sources()?))
    }

    /// The store (local data API).
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The settings.
    pub fn config(&self) -> &SyncConfig {
        &self.config
    }

    /// Declares a source.
    ///
    /// # Errors
    /// See [`Store::define_source`].
    pub fn define_source(&self, def: &SourceDef) -> Result<()> {
        self.store.define_source(def)
    }

    /// Signs in; the session cookie is stored byte for byte.
    ///
    /// # Errors
    /// [`Error::Unauthorized`] for refused credentials; network and server errors.
    pub fn login(&self, user: &str, password: &str) -> Result<()> {
        self.protocol.login(&self.store, user, password)
    }

    /// Signs out locally (RhoConnect has no logout route). Pending changes are kept unless
    /// `wipe_data`, which removes every object, queued change, error and the client id.
    ///
    /// # Errors
    /// Storage.
    pub fn logout(&self, wipe_data: bool) -> Result<()> {
        self.store.write(|tx| {
            meta::set_session(tx, None, None)?;
            if wipe_data {
                crate::protocol::rhoconnect::client::wipe_synced_data(tx)?;
                tx.execute("UPDATE client_info SET user_name = NULL", [])?;
            }
            Ok(())
        })?;
        if wipe_data {
            // Rewrite the file so that no deleted user data stays in free pages or the WAL.
            self.store.vacuum()?;
            // Blob files of the wiped objects (files being imported now are kept).
            self.store.sweep_blobs()?;
        }
        Ok(())
    }

    /// True when a session is stored.
    ///
    /// # Errors
    /// Storage.
    pub fn is_logged_in(&self) -> Result<bool> {
        Ok(self.store.read(meta::client_info)?.session.is_some())
    }

    /// The last login name.
    ///
    /// # Errors
    /// Storage.
    pub fn user_name(&self) -> Result<Option<String>> {
        Ok(self.store.read(meta::client_info)?.user_name)
    }

    /// Asks a running sync to stop at once (between requests, pages and statements). The store
    /// stays consistent and the next sync resumes where this one stopped.
    pub fn stop(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.store.interrupt();
    }

    fn ctx(&self, opts: &SyncOptions, observer: Option<Arc<dyn SyncObserver>>) -> SyncCtx {
        let mut ctx = match opts.stop_epoch {
            Some(start) => SyncCtx::from_epoch(
                opts.page_size.unwrap_or(self.config.page_size),
                self.epoch.clone(),
                start,
                observer,
            ),
            None => SyncCtx::new(
                opts.page_size.unwrap_or(self.config.page_size),
                self.epoch.clone(),
                observer,
            ),
        };
        ctx.query_params = opts.query_params.clone();
        ctx.count_objects = !opts.skip_object_count;
        ctx
    }

    /// Syncs one source: push its changes, then pull.
    ///
    /// # Errors
    /// Typed errors; nothing committed is lost.
    pub fn sync_source(
        &self,
        name: &str,
        opts: &SyncOptions,
        observer: Option<Arc<dyn SyncObserver>>,
    ) -> Result<SourceReport> {
        let ctx = self.ctx(opts, observer);
        let result = self.protocol.sync_source(&self.store, &ctx, name);
        self.record(name, result.as_ref().err());
        result
    }

    /// Records a failed sync of `name` (a successful one is recorded by the protocol in the
    /// transaction of its last page, see [`Protocol::sync_source`]).
    fn record(&self, name: &str, err: Option<&Error>) {
        let Some(err) = err else {
            return;
        };
        let msg = Some(err.to_string());
        let r = self.store.write(|tx| {
            let src = meta::source(tx, name)?;
            meta::record_sync_result(tx, src.id, msg.as_deref())
        });
        if let Err(e) = r {
            log::warn!("recording the sync result of {name}: {e}");
        }
    }

    /// Syncs every synced source in priority order (parents of belongs_to first). A source
    /// that fails does not stop the others, except when the session is refused or the sync
    /// is stopped.
    ///
    /// # Errors
    /// [`Error::Unauthorized`] when not logged in; storage errors reading the sources;
    /// per-source errors are in the report.
    pub fn sync_all(&self, opts: &SyncOptions, observer: Option<Arc<dyn SyncObserver>>) -> Result<SyncReport> {
        if !self.is_logged_in()? {
            return Err(Error::Unauthorized {
                message: "not logged in".into(),
            });
        }
        // A bulk sync first when one is needed (spec §6.1); if it fails, the bulk sources are
        // not synced page by page in this run (their objects would be missed, H7).
        let bulk_failed = if !opts.only_changed_sources && self.bulk_needed()? {
            self.bulk_sync(opts, observer.clone()).err()
        } else {
            None
        };
        let ctx = self.ctx(opts, observer);
        let mut report = SyncReport::default();
        for src in sync_order(self.store.sources()?) {
            if let Some(e) = &bulk_failed
                && src.def.sync_type == crate::model::SyncType::Bulk
            {
                report.sources.push((src.def.name.clone(), Err(e.clone())));
                continue;
            }
            if opts.only_changed_sources && !self.store.read(|c| queue::has_pending(c, src.id))? {
                continue;
            }
            let r = self.protocol.sync_source(&self.store, &ctx, &src.def.name);
            self.record(&src.def.name, r.as_ref().err());
            let fatal = matches!(
                r,
                Err(Error::Unauthorized { .. } | Error::Stopped | Error::Storage { .. })
            );
            report.sources.push((src.def.name.clone(), r));
            if fatal {
                break;
            }
        }
        Ok(report)
    }

    /// Forces a push for `source` at its next sync even without changes (makes the server run
    /// work it deferred, spec §5.6).
    ///
    /// # Errors
    /// Unknown source, storage.
    pub fn push_changes(&self, source: &str) -> Result<()> {
        self.protocol.push_changes_marker(&self.store, source)
    }

    /// Searches the server (spec §7); found objects are stored like synced ones.
    ///
    /// # Errors
    /// Not logged in, unknown or local-only source, network, server, protocol.
    pub fn search(&self, request: &SearchRequest, observer: Option<Arc<dyn SyncObserver>>) -> Result<SearchReport> {
        let ctx = self.ctx(&SyncOptions::default(), observer);
        self.protocol.search(&self.store, &ctx, request)
    }

    /// Registers this device for push messages (`clientregister`); an empty pin unregisters.
    ///
    /// # Errors
    /// Not logged in, network, server.
    pub fn register_push(&self, device: &PushRegistration) -> Result<()> {
        self.protocol.register_push(&self.store, device)
    }

    /// Starts over with the server: a new client id at the next sync, every token cleared, the
    /// local copies of synced objects dropped — queued local changes are kept and pushed.
    ///
    /// # Errors
    /// Storage.
    pub fn database_client_reset(&self) -> Result<()> {
        self.store.write(meta::start_over)
    }

    /// The queued changes of a source (any state).
    ///
    /// # Errors
    /// Unknown source, storage.
    pub fn pending_changes(&self, source: &str) -> Result<Vec<Change>> {
        self.store.read(|c| {
            let src = meta::source(c, source)?;
            queue::changes(c, src.id)
        })
    }

    /// Errors the server reported for a source, until the app resolves them.
    ///
    /// # Errors
    /// Unknown source, storage.
    pub fn sync_errors(&self, source: &str) -> Result<Vec<SyncErrorRecord>> {
        self.store.read(|c| {
            let src = meta::source(c, source)?;
            let mut stmt = c.prepare_cached(
                "SELECT kind, object, message, attrs, rollback FROM sync_errors WHERE source_id = ?1 ORDER BY id",
            )?;
            let rows = stmt
                .query_map([src.id], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, Option<String>>(4)?,
                    ))
                })?
                .collect::<Result<Vec<(String, Option<String>, String, String, Option<String>)>, _>>()?;
            rows.into_iter()
                .map(|(kind, object, message, attrs, rollback)| {
                    Ok(SyncErrorRecord {
                        kind,
                        object,
                        message,
                        attrs: parse_attrs(&attrs)?,
                        rollback: rollback.map(|r| parse_attrs(&r)).transpose()?,
                    })
                })
                .collect()
        })
    }

    fn resolve<T>(
        &self,
        source: &str,
        kind: &str,
        ids: &[String],
        f: impl Fn(&rusqlite::Transaction<'_>, &SourceRow, &str, &SyncErrorRecord) -> Result<T>,
    ) -> Result<()> {
        self.store.write(|tx| {
            let src = meta::source(tx, source)?;
            for id in ids {
                let rec: Option<(String, String, Option<String>)> = {
                    use rusqlite::OptionalExtension as _;
                    tx.prepare_cached(
                        "SELECT message, attrs, rollback FROM sync_errors WHERE source_id = ?1 AND kind = ?2 AND object = ?3",
                    )?
                    .query_row(params![src.id, kind, id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .optional()?
                };
                let Some((message, attrs, rollback)) = rec else {
                    return Err(Error::NotFound { what: format!("{kind} error for {source} {id}") });
                };
                let rec = SyncErrorRecord {
                    kind: kind.to_owned(),
                    object: Some(id.clone()),
                    message,
                    attrs: parse_attrs(&attrs)?,
                    rollback: rollback.map(|r| parse_attrs(&r)).transpose()?,
                };
                f(tx, &src, id, &rec)?;
                tx.execute(
                    "DELETE FROM sync_errors WHERE source_id = ?1 AND kind = ?2 AND object = ?3",
                    params![src.id, kind, id],
                )?;
                tx.execute(
                    "DELETE FROM changes WHERE source_id = ?1 AND object = ?2 AND op = ?3 AND state = 'failed'",
                    params![src.id, id, kind],
                )?;
            }
            Ok(())
        })
    }

    /// Resolves refused creates (spec §10.8), atomically.
    ///
    /// # Errors
    /// [`Error::NotFound`] when an id has no create error (nothing is changed), storage.
    pub fn on_sync_create_error(&self, source: &str, ids: &[String], action: CreateErrorAction) -> Result<()> {
        self.resolve(source, "create", ids, |tx, src, id, _| {
            let deleted_locally: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM changes WHERE source_id = ?1 AND object = ?2 AND op = 'delete')",
                params![src.id, id],
                |r| r.get(0),
            )?;
            tx.execute(
                "DELETE FROM changes WHERE source_id = ?1 AND object = ?2",
                params![src.id, id],
            )?;
            match action {
                CreateErrorAction::Recreate if !deleted_locally && objects::get(tx, src, id)?.is_some() => {
                    queue::record_create(tx, src.id, id)
                }
                _ => objects::remove(tx, src, id).map(|_| ()),
            }
        })
    }

    /// Resolves refused updates (spec §10.8), atomically.
    ///
    /// # Errors
    /// [`Error::NotFound`] when an id has no update error, storage.
    pub fn on_sync_update_error(&self, source: &str, ids: &[String], action: UpdateErrorAction) -> Result<()> {
        self.resolve(source, "update", ids, |tx, src, id, rec| match action {
            UpdateErrorAction::Retry => {
                let pending = queue::local_edits(tx, src.id)?;
                let newer: Vec<String> = pending
                    .updates
                    .get(id)
                    .map(|v| {
                        v.iter()
                            .filter(|(_, _, s, _)| s == "pending")
                            .map(|(a, _, _, _)| a.clone())
                            .collect()
                    })
                    .unwrap_or_default();
                let retry: Attrs = rec
                    .attrs
                    .iter()
                    .filter(|(k, _)| !newer.contains(k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                if let Some(mut current) = objects::get(tx, src, id)? {
                    current.extend(retry.clone());
                    objects::put(tx, src, id, &current)?;
                }
                if !retry.is_empty() {
                    queue::record_update(tx, src.id, id, &retry)?;
                }
                Ok(())
            }
            UpdateErrorAction::Rollback => {
                let server = rec.rollback.clone().unwrap_or_default();
                if let Some(mut current) = objects::get(tx, src, id)? {
                    for k in rec.attrs.keys() {
                        match server.get(k) {
                            Some(v) => {
                                current.insert(k.clone(), v.clone());
                            }
                            None => {
                                current.remove(k);
                            }
                        }
                    }
                    objects::put(tx, src, id, &current)?;
                }
                Ok(())
            }
        })
    }

    /// Resolves refused deletes, atomically: retry, or restore the object locally.
    ///
    /// # Errors
    /// [`Error::NotFound`] when an id has no delete error, storage.
    pub fn on_sync_delete_error(&self, source: &str, ids: &[String], action: DeleteErrorAction) -> Result<()> {
        self.resolve(source, "delete", ids, |tx, src, id, rec| match action {
            DeleteErrorAction::Retry => queue::record_delete(tx, src.id, id, &rec.attrs),
            DeleteErrorAction::Restore => objects::put(tx, src, id, &rec.attrs),
        })
    }

    /// Local data: create.
    ///
    /// # Errors
    /// See [`Store::create`].
    pub fn create(&self, source: &str, attrs: Attrs) -> Result<Object> {
        self.store.create(source, attrs)
    }

    /// Local data: find by id.
    ///
    /// # Errors
    /// See [`Store::find`].
    pub fn find(&self, source: &str, id: &str) -> Result<Option<Object>> {
        self.store.find(source, id)
    }

    /// Local data: find with conditions.
    ///
    /// # Errors
    /// See [`Store::find_all`].
    pub fn find_all(&self, source: &str, q: &Query) -> Result<Vec<Object>> {
        self.store.find_all(source, q)
    }

    /// Local data: count.
    ///
    /// # Errors
    /// See [`Store::count`].
    pub fn count(&self, source: &str, cond: Option<&Cond>) -> Result<u64> {
        self.store.count(source, cond)
    }
}

/// Sources to sync, by priority, with belongs_to parents moved before their children.
fn sync_order(mut sources: Vec<SourceRow>) -> Vec<SourceRow> {
    sources.retain(|s| s.def.sync);
    let mut out: Vec<SourceRow> = Vec::with_capacity(sources.len());
    let mut rest = sources;
    while !rest.is_empty() {
        let pos = rest
            .iter()
            .position(|s| {
                s.def
                    .belongs_to
                    .iter()
                    .all(|b| b.source == s.def.name || !rest.iter().any(|p| p.def.name == b.source))
            })
            .unwrap_or(0);
        out.push(rest.remove(pos));
    }
    out
}
