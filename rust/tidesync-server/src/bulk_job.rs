//! Bulk data jobs (spec §6): build a partition's SQLite file in the background, answer `wait`
//! until it exists, then its URL; reuse it for `bulk_sync_poll_interval`.
//!
//! When a client is given the URL, the server records that the client now holds the file's
//! content (RhoConnect sets the client document to the master document). We set it to exactly
//! the snapshot the file was built from, so incremental sync after a bulk install continues with
//! the changes made since, and nothing is missed or doubled.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use crate::app::{Partition, SourceDef};
use crate::bulk::{BulkSource, write_bulk_file, write_rzip};
use crate::obj::ObjRef;
use crate::state::{ClientError, State};

type BulkKey = (Partition, String, Vec<String>);

/// A selected source as written: name, objects, master-document sequence number.
type Snapshot = (String, Vec<(Arc<str>, ObjRef)>, u64);

/// A finished job.
#[derive(Debug)]
struct Done {
    url: String,
    built: Instant,
    /// Per selected source: its objects as written and the master document's sequence number.
    snapshots: Vec<Snapshot>,
}

#[derive(Debug)]
enum Job {
    Running,
    Done(Arc<Done>),
}

/// All bulk jobs of a server.
#[derive(Debug, Default)]
pub(crate) struct BulkJobs {
    jobs: Mutex<HashMap<BulkKey, Job>>,
}

/// What `bulk_data` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BulkAnswer {
    /// `{"result":"wait"}`.
    Wait,
    /// `{"result":"nop"}`: the partition has no sources.
    Nop,
    /// `{"result":"url","url":...}`; empty when a selected source has a source error.
    Url(String),
}

impl BulkAnswer {
    pub fn to_json(&self) -> String {
        match self {
            BulkAnswer::Wait => r#"{"result":"wait"}"#.into(),
            BulkAnswer::Nop => r#"{"result":"nop"}"#.into(),
            BulkAnswer::Url(u) => serde_json::json!({"result": "url", "url": u}).to_string(),
        }
    }
}

impl State {
    fn partition_sources(&self, partition: Partition, user: &str) -> Vec<SourceDef> {
        let mut defs: Vec<SourceDef> = self
            .app()
            .sources
            .iter()
            .filter(|s| s.partition == partition)
            .cloned()
            .collect();
        if partition == Partition::User {
            defs.extend(self.dynamic_sources(user));
        }
        defs
    }

    /// `bulk_data?partition=P[&sources=A,B]`.
    pub fn bulk_data(
        self: &Arc<Self>,
        user: &str,
        client_id: Option<&str>,
        partition: &str,
        sources: Option<&str>,
    ) -> Result<BulkAnswer, ClientError> {
        let client = self.client(user, client_id)?;
        let partition = if partition == "user" {
            Partition::User
        } else {
            Partition::App
        };
        let defs = self.partition_sources(partition, user);
        if defs.is_empty() {
            return Ok(BulkAnswer::Nop);
        }
        let wanted: Option<Vec<String>> = sources.map(|s| {
            s.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        });
        let mut selected: Vec<String> = defs
            .iter()
            .filter(|d| wanted.as_ref().is_none_or(|w| w.contains(&d.name)))
            .map(|d| d.name.clone())
            .collect();
        selected.sort();
        let owner = match partition {
            Partition::App => String::new(),
            Partition::User => user.to_owned(),
        };
        let key: BulkKey = (partition, owner, selected.clone());
        let done = {
            let mut jobs = self.bulk.jobs.lock();
            match jobs.get(&key) {
                Some(Job::Running) => return Ok(BulkAnswer::Wait),
                Some(Job::Done(d)) if d.built.elapsed() < self.app().bulk_sync_poll_interval => d.clone(),
                _ => {
                    jobs.insert(key.clone(), Job::Running);
                    let state = self.clone();
                    let user = user.to_owned();
                    let spawned = std::thread::Builder::new()
                        .name("tidesync-bulk-job".into())
                        .spawn(move || {
                            std::thread::sleep(state.app().bulk_job_delay);
                            let done = state.build_bulk(partition, &user, &defs, &selected);
                            state.bulk.jobs.lock().insert(key, Job::Done(Arc::new(done)));
                        });
                    if let Err(e) = spawned {
                        log::error!("bulk job thread: {e}");
                    }
                    return Ok(BulkAnswer::Wait);
                }
            }
        };
        // The client now holds the file's content, as far as the server is concerned.
        let mut c = client.lock();
        for (name, objects, seq) in &done.snapshots {
            let cs = c.sources.entry(name.clone()).or_default();
            cs.cd = objects.iter().cloned().collect();
            cs.cursor = *seq;
            cs.pending = None;
        }
        Ok(BulkAnswer::Url(done.url.clone()))
    }

    fn build_bulk(&self, partition: Partition, user: &str, defs: &[SourceDef], selected: &[String]) -> Done {
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let app = self.app().name.clone();
        let (rel_dir, base) = match partition {
            Partition::App => (PathBuf::from(&app), format!("{app}_{ts}")),
            Partition::User => (PathBuf::from(&app).join(user), format!("{user}_{ts}")),
        };
        let mut failed = false;
        let mut inputs = Vec::new();
        let mut snapshots = Vec::new();
        for def in defs {
            let is_selected = selected.contains(&def.name);
            let mut objects = Vec::new();
            if is_selected {
                let md = self.md(def, user);
                let md = md.read();
                if md.source_error.is_some() {
                    failed = true;
                }
                objects = md.iter().map(|(k, o)| (k.clone(), o.clone())).collect();
                // Rows in object id order: the file's table order then matches its
                // `by_src_object` index, and a client importing it in table order inserts its
                // objects in key order (appends instead of b-tree page splits).
                objects.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                snapshots.push((def.name.clone(), objects.clone(), md.seq()));
            }
            inputs.push(BulkSource {
                name: def.name.clone(),
                partition: def.partition,
                priority: def.priority,
                selected: is_selected,
                objects,
                refresh_time: ts as i64,
            });
        }
        let dir = self.data_dir().join(&rel_dir);
        let data = dir.join(format!("{base}.data"));
        let rzip = dir.join(format!("{base}.data.rzip"));
        let result = std::fs::create_dir_all(&dir)
            .map_err(crate::bulk::BulkError::from)
            .and_then(|()| write_bulk_file(&data, &inputs))
            .and_then(|stats| {
                log::info!("bulk file {} built: {stats:?}", data.display());
                write_rzip(&data, &rzip)
            });
        if let Err(e) = &result {
            log::error!("bulk file {}: {e}", data.display());
        }
        if failed || result.is_err() {
            let _ = std::fs::remove_file(&data);
            let _ = std::fs::remove_file(&rzip);
            return Done {
                url: String::new(),
                built: Instant::now(),
                snapshots,
            };
        }
        let url = format!("/data/{}/{base}.data", rel_dir.to_string_lossy().replace('\\', "/"));
        Done {
            url,
            built: Instant::now(),
            snapshots,
        }
    }
}
