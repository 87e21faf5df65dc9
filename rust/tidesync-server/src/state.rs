//! Server state: master documents, clients and their documents, pages and tokens.
//!
//! Lock order (outer first): `cud` processing lock of a source → a client → a master document.
//! The maps (`clients`, `mds`, `cud`) are locked only to look up or insert an `Arc` and never
//! held while another lock is taken.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};

use crate::ServerConfig;
use crate::adapter::UnconfiguredAdapter;
use crate::app::{App, Partition, SourceDef};
use crate::bulk_job::BulkJobs;
use crate::fault::Faults;
use crate::json::write_str;
use crate::md::{MasterDoc, SourceError};
use crate::obj::{Obj, ObjRef};

/// Key of a master document: source name and owner (`""` for the app partition, else the user).
pub(crate) type MdKey = (String, String);

/// Per-client, per-source state: the client document and everything pending for it.
#[derive(Debug, Default)]
pub(crate) struct ClientSource {
    /// What the server believes this client holds.
    pub cd: HashMap<Arc<str>, ObjRef>,
    /// Master-document sequence number up to which `cd` has been reconciled.
    pub cursor: u64,
    /// The page sent and not yet acknowledged.
    pub pending: Option<Arc<Page>>,
    /// Create links (temporary id → new id) waiting for the next page.
    pub links: Vec<(String, String)>,
    /// Creates the adapter dropped: the client is told to delete the temporary object.
    pub dropped_creates: Vec<(String, Obj)>,
    /// Object errors waiting for the next page.
    pub errors: ObjectErrors,
    /// Search in progress.
    pub search: Option<crate::search::SearchState>,
}

/// `create-error`, `update-error`, `delete-error` and `update-rollback` of one page.
#[derive(Debug, Default, Clone)]
pub(crate) struct ObjectErrors {
    pub create: Vec<(String, Obj, String)>,
    pub update: Vec<(String, Obj, String)>,
    pub delete: Vec<(String, Obj, String)>,
    pub rollback: Vec<(String, ObjRef)>,
}

/// One page as sent (kept while pending, to resend it unchanged).
#[derive(Debug, Clone, Default)]
pub(crate) struct Page {
    pub token: String,
    pub total_count: usize,
    /// Whole objects share the master document's allocation; attribute diffs are new.
    pub insert: Vec<(Arc<str>, ObjRef)>,
    pub delete: Vec<(Arc<str>, ObjRef)>,
    pub links: Vec<(String, String)>,
    pub errors: ObjectErrors,
}

impl Page {
    pub fn count(&self) -> usize {
        self.insert.len() + self.delete.len()
    }

    /// The page as RhoConnect 7.8 writes it.
    pub fn to_json(&self, source_error: Option<&SourceError>) -> String {
        let mut out = String::with_capacity(64 + 128 * self.count());
        out.push_str("[{\"version\":3},{\"token\":");
        write_str(&mut out, &self.token);
        out.push_str(&format!(
            "}},{{\"count\":{}}},{{\"progress_count\":0}},{{\"total_count\":{}}},{{",
            self.count(),
            self.total_count
        ));
        let mut first = true;
        let mut key = |out: &mut String, k: &str| {
            if !first {
                out.push(',');
            }
            first = false;
            write_str(out, k);
            out.push(':');
        };
        if !self.insert.is_empty() {
            key(&mut out, "insert");
            write_objects(&mut out, &self.insert);
        }
        if !self.delete.is_empty() {
            key(&mut out, "delete");
            write_objects(&mut out, &self.delete);
        }
        if !self.links.is_empty() {
            key(&mut out, "links");
            out.push('{');
            for (i, (tmp, id)) in self.links.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_str(&mut out, tmp);
                out.push_str(":{\"l\":");
                write_str(&mut out, id);
                out.push('}');
            }
            out.push('}');
        }
        for (name, list) in [
            ("create-error", &self.errors.create),
            ("update-error", &self.errors.update),
            ("delete-error", &self.errors.delete),
        ] {
            if list.is_empty() {
                continue;
            }
            key(&mut out, name);
            out.push('{');
            for (i, (id, obj, msg)) in list.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_str(&mut out, id);
                out.push(':');
                obj.write_json(&mut out);
                out.push(',');
                write_str(&mut out, &format!("{id}-error"));
                out.push_str(":{\"message\":");
                write_str(&mut out, msg);
                out.push('}');
            }
            out.push('}');
        }
        if !self.errors.rollback.is_empty() {
            key(&mut out, "update-rollback");
            out.push('{');
            for (i, (id, obj)) in self.errors.rollback.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_str(&mut out, id);
                out.push(':');
                obj.write_json(&mut out);
            }
            out.push('}');
        }
        if let Some(e) = source_error {
            key(&mut out, "source-error");
            out.push('{');
            write_str(&mut out, &e.kind);
            out.push_str(":{\"message\":");
            write_str(&mut out, &e.message);
            out.push_str("}}");
        }
        out.push_str("}]");
        out
    }
}

fn write_objects(out: &mut String, list: &[(Arc<str>, ObjRef)]) {
    out.push('{');
    for (i, (id, obj)) in list.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_str(out, id);
        out.push(':');
        obj.write_json(out);
    }
    out.push('}');
}

/// Push-registration data of a client.
#[derive(Debug, Clone, Default)]
pub(crate) struct DeviceInfo {
    pub fields: Vec<(String, String)>,
}

/// One client (installation) of one user.
#[derive(Debug)]
pub(crate) struct Client {
    pub user: String,
    pub sources: HashMap<String, ClientSource>,
    pub device: Option<DeviceInfo>,
}

/// Why a request about a client fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ClientError {
    /// Missing, unknown, or another user's client id: `500 Unknown client`.
    UnknownClient,
}

/// A page ready to send.
#[derive(Debug)]
pub(crate) struct PageOut {
    pub body: String,
    pub token: String,
    pub count: usize,
}

pub(crate) struct State {
    config: ServerConfig,
    secret: Vec<u8>,
    data_dir: PathBuf,
    remove_data_dir: bool,
    mds: Mutex<HashMap<MdKey, Arc<RwLock<MasterDoc>>>>,
    clients: RwLock<HashMap<String, Arc<Mutex<Client>>>>,
    /// Source names created on the fly for unknown names, per user (RhoConnect's dynamic adapters).
    dynamic: Mutex<HashMap<String, Vec<String>>>,
    pub(crate) cud: crate::cud::CudQueues,
    pub(crate) bulk: BulkJobs,
    last_token: AtomicU64,
}

impl State {
    pub fn new(config: ServerConfig) -> std::io::Result<Self> {
        let (data_dir, remove_data_dir) = match &config.data_dir {
            Some(d) => (d.clone(), false),
            None => {
                let d = std::env::temp_dir().join(format!("tidesync-server-{}-{}", std::process::id(), random_hex(8)));
                (d, true)
            }
        };
        std::fs::create_dir_all(&data_dir)?;
        let secret = config.secret.clone().unwrap_or_else(|| random_hex(32).into_bytes());
        Ok(Self {
            config,
            secret,
            data_dir,
            remove_data_dir,
            mds: Mutex::new(HashMap::new()),
            clients: RwLock::new(HashMap::new()),
            dynamic: Mutex::new(HashMap::new()),
            cud: Default::default(),
            bulk: Default::default(),
            last_token: AtomicU64::new(0),
        })
    }

    pub fn app(&self) -> &App {
        &self.config.app
    }

    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    pub fn faults(&self) -> &Faults {
        &self.config.faults
    }

    pub fn secret(&self) -> &[u8] {
        &self.secret
    }

    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// A fresh page token: microseconds since 2009-01-01, strictly increasing.
    pub fn new_token(&self) -> String {
        const EPOCH_2009: u64 = 1_230_768_000;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        let candidate = now.saturating_sub(EPOCH_2009 * 1_000_000);
        let mut prev = self.last_token.load(Ordering::SeqCst);
        loop {
            let next = candidate.max(prev + 1);
            match self
                .last_token
                .compare_exchange(prev, next, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return next.to_string(),
                Err(p) => prev = p,
            }
        }
    }

    /// The source `name` for `user`: declared, or a dynamic source created for this user.
    pub fn source_def(&self, user: &str, name: &str) -> SourceDef {
        if let Some(def) = self.config.app.source(name) {
            return def.clone();
        }
        let mut dynamic = self.dynamic.lock();
        let list = dynamic.entry(user.to_owned()).or_default();
        if !list.iter().any(|n| n == name) {
            log::info!("dynamic source `{name}` created for a user (unknown source name)");
            list.push(name.to_owned());
        }
        dynamic_def(name)
    }

    /// Dynamic sources registered for `user`.
    pub fn dynamic_sources(&self, user: &str) -> Vec<SourceDef> {
        self.dynamic
            .lock()
            .get(user)
            .map(|l| l.iter().map(|n| dynamic_def(n)).collect())
            .unwrap_or_default()
    }

    /// The master document of `def` for `user`, loaded (or refreshed) from the adapter if due.
    pub fn md(&self, def: &SourceDef, user: &str) -> Arc<RwLock<MasterDoc>> {
        let owner = match def.partition {
            Partition::App => String::new(),
            Partition::User => user.to_owned(),
        };
        let md = self.mds.lock().entry((def.name.clone(), owner)).or_default().clone();
        let due = {
            let r = md.read();
            match (r.loaded_at, def.refresh) {
                (None, _) => true,
                (Some(at), Some(every)) => at.elapsed() >= every,
                (Some(_), None) => false,
            }
        };
        if due {
            let mut w = md.write();
            // Re-check under the write lock: another request may have loaded it meanwhile.
            let still_due = match (w.loaded_at, def.refresh) {
                (None, _) => true,
                (Some(at), Some(every)) => at.elapsed() >= every,
                (Some(_), None) => false,
            };
            if still_due {
                match def.adapter.query(user) {
                    Ok(items) => {
                        w.replace_all(items);
                        w.source_error = None;
                    }
                    Err(e) => {
                        log::warn!("source {}: query failed: {e}", def.name);
                        w.source_error = Some(SourceError {
                            kind: "query-error".into(),
                            message: e.0,
                        });
                    }
                }
                w.loaded_at = Some(Instant::now());
            }
        }
        md
    }

    /// Creates a client for `user`; returns its 32-hex id.
    pub fn create_client(&self, user: &str) -> String {
        let id = random_hex(16);
        self.clients.write().insert(
            id.clone(),
            Arc::new(Mutex::new(Client {
                user: user.to_owned(),
                sources: HashMap::new(),
                device: None,
            })),
        );
        id
    }

    /// The client `id` if it belongs to `user`.
    pub fn client(&self, user: &str, id: Option<&str>) -> Result<Arc<Mutex<Client>>, ClientError> {
        let id = id.filter(|s| !s.is_empty()).ok_or(ClientError::UnknownClient)?;
        let c = self.clients.read().get(id).cloned().ok_or(ClientError::UnknownClient)?;
        if c.lock().user != user {
            return Err(ClientError::UnknownClient);
        }
        Ok(c)
    }

    /// The client `id` whoever it belongs to (CUD results of queued work).
    pub fn client_any(&self, id: &str) -> Option<Arc<Mutex<Client>>> {
        self.clients.read().get(id).cloned()
    }

    /// `clientregister`: stores the device fields, creating the client if it does not exist.
    pub fn register(&self, user: &str, id: &str, fields: Vec<(String, String)>) -> Result<(), ClientError> {
        if id.is_empty() {
            return Err(ClientError::UnknownClient);
        }
        let existing = self.clients.read().get(id).cloned();
        let client = match existing {
            Some(c) => c,
            None => {
                let c = Arc::new(Mutex::new(Client {
                    user: user.to_owned(),
                    sources: HashMap::new(),
                    device: None,
                }));
                self.clients.write().entry(id.to_owned()).or_insert(c).clone()
            }
        };
        let mut c = client.lock();
        if c.user != user {
            return Err(ClientError::UnknownClient);
        }
        c.device = Some(DeviceInfo { fields });
        Ok(())
    }

    /// `clientreset`: forgets what the client holds (all sources, or the listed ones).
    pub fn reset(&self, user: &str, id: Option<&str>, sources: Option<Vec<String>>) -> Result<(), ClientError> {
        let client = self.client(user, id)?;
        let mut c = client.lock();
        match sources {
            None => c.sources.clear(),
            Some(names) => {
                for n in names {
                    c.sources.remove(&n);
                }
            }
        }
        Ok(())
    }

    /// The paged query: acknowledges, resends or builds a page as RhoConnect 7.8 does (§4.4).
    ///
    /// `duplicate` (a fault) ignores a matching acknowledgement and resends the pending page.
    pub fn query(
        &self,
        user: &str,
        client_id: Option<&str>,
        source: &str,
        p_size: usize,
        token: Option<&str>,
        duplicate: bool,
    ) -> Result<PageOut, ClientError> {
        let client = self.client(user, client_id)?;
        let def = self.source_def(user, source);
        let md = self.md(&def, user);
        let mut c = client.lock();
        let cs = c.sources.entry(source.to_owned()).or_default();
        let md = md.read();
        let resend = match (&cs.pending, token) {
            (Some(p), Some(t)) if t == p.token && !duplicate => {
                cs.pending = None; // rule 2: acknowledged
                false
            }
            (Some(_), Some(_)) => true, // rule 3: any other token (also "") resends
            (Some(_), None) => {
                cs.pending = None; // rule 4: client lost state; the pending page is dropped
                false
            }
            (None, _) => false, // rule 1
        };
        let page = match (resend, &cs.pending) {
            (true, Some(p)) => p.clone(),
            _ => {
                let page = Arc::new(build_page(cs, &md, p_size, self));
                if !page.token.is_empty() {
                    cs.pending = Some(page.clone());
                }
                page
            }
        };
        let body = page.to_json(md.source_error.as_ref());
        Ok(PageOut {
            body,
            token: page.token.clone(),
            count: page.count(),
        })
    }
}

impl Drop for State {
    fn drop(&mut self) {
        if self.remove_data_dir {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}

fn dynamic_def(name: &str) -> SourceDef {
    SourceDef {
        name: name.to_owned(),
        partition: Partition::User,
        priority: 1000,
        adapter: Arc::new(UnconfiguredAdapter),
        refresh: None,
    }
}

/// Builds the next page from the diff after the client's cursor, updating the client document
/// at once (as the real server does: `cd` is updated when the page is built).
fn build_page(cs: &mut ClientSource, md: &MasterDoc, p_size: usize, state: &State) -> Page {
    let mut insert = Vec::new();
    let mut delete = Vec::new();
    let mut cursor = cs.cursor;
    for (seq, id) in md.changes_after(cs.cursor) {
        if insert.len() >= p_size || delete.len() >= p_size {
            break;
        }
        cursor = seq;
        let m = md.get(id);
        let c = cs.cd.get(id);
        match (m, c) {
            (Some(m), Some(c)) if Arc::ptr_eq(m, c) || **m == **c => continue,
            (None, None) => continue,
            _ => {}
        }
        // A whole new object is sent as the master document's own allocation; a changed one as
        // the attributes that differ (old values in `delete`, new ones in `insert`).
        let ins = match (m, c) {
            (Some(m), None) => Some(m.clone()),
            (Some(m), Some(c)) => Some(Arc::new(m.minus(Some(c)))).filter(|o| !o.is_empty()),
            (None, _) => None,
        };
        let del = match (c, m) {
            (Some(c), None) => Some(c.clone()),
            (Some(c), Some(m)) => Some(Arc::new(c.minus(Some(m)))).filter(|o| !o.is_empty()),
            (None, _) => None,
        };
        if let Some(ins) = ins {
            insert.push((id.clone(), ins));
        }
        if let Some(del) = del {
            delete.push((id.clone(), del));
        }
        match m {
            Some(m) => {
                cs.cd.insert(id.clone(), m.clone());
            }
            None => {
                cs.cd.remove(id);
            }
        }
    }
    cs.cursor = cursor;
    for (tmp, obj) in cs.dropped_creates.drain(..) {
        delete.push((Arc::from(tmp.as_str()), Arc::new(obj)));
    }
    let links = std::mem::take(&mut cs.links);
    let errors = std::mem::take(&mut cs.errors);
    let token = if insert.is_empty() && delete.is_empty() && links.is_empty() {
        String::new()
    } else {
        state.new_token()
    };
    Page {
        token,
        total_count: md.len(),
        insert,
        delete,
        links,
        errors,
    }
}

/// `n` random bytes as lowercase hex.
pub(crate) fn random_hex(n: usize) -> String {
    use rand::RngCore;
    let mut bytes = vec![0u8; n];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A queue of work waiting (used by CUD).
pub(crate) type Queue<T> = VecDeque<T>;
