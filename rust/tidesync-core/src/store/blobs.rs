//! Blob attributes: files owned by the store.
//!
//! A source declares blob attributes ([`crate::SourceDef::blob_attrs`]). Locally such an
//! attribute holds a path *relative to the files directory*, always `blobs/<name>`; the file is
//! owned by the store. The app API speaks absolute paths:
//!
//! * create/update: the value is the path of a file the app wrote (absolute, or relative to the
//!   files directory). The store **copies** it to `<files dir>/blobs/<random>.<ext>` before the
//!   write transaction and keeps the relative path; the app may delete its own file afterwards.
//!   A value that already names a file under `<files dir>/blobs` is kept as is, so writing back
//!   what `find` returned changes nothing. A URL (`http://`, `https://`) is kept as a URL.
//! * find: relative values come back as absolute paths; a blob that is not downloaded yet
//!   still holds its server URL.
//!
//! Pull: a page that sets a blob attribute to a URL records a *pending download* in the same
//! transaction as the page (table `blob_downloads`); the files are fetched after the pull, into
//! a temporary file renamed into place, and a small transaction swaps the value to the local
//! path only if the attribute still holds that URL. A failed download stays pending and is
//! retried at the next sync; its temporary file is removed and never referenced.
//!
//! Files nobody references — replaced or deleted blobs, leftovers of a crash, strangers — are
//! removed by the orphan sweep ([`Store::sweep_blobs`]) that runs after each sync of a source
//! with blob attributes. A file is referenced when an object's blob attribute or a queued update
//! (an upload not yet confirmed) names it; files being imported or downloaded are reserved and
//! skipped.

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

use parking_lot::{Mutex, RwLock};
use rusqlite::{Connection, params};

use super::Store;
use super::meta::{self, SourceRow, ident};
use super::objects;
use crate::error::{Error, Result};
use crate::model::{Attrs, Object};
use crate::query::json_path;

/// The subdirectory of the files directory that holds blob files.
pub const BLOB_SUBDIR: &str = "blobs";
/// A download that failed this many times is no longer tried (nor reported) until the server
/// sends a new URL for the attribute.
pub(crate) const MAX_ATTEMPTS: i64 = 10;

/// The files directory and the files being written into it.
#[derive(Debug)]
pub(crate) struct BlobFiles {
    dir: RwLock<PathBuf>,
    /// Absolute paths of files being imported or downloaded: the sweep leaves them alone.
    reserved: Mutex<HashSet<PathBuf>>,
}

impl BlobFiles {
    /// The default files directory of a database: `<db path>.files`.
    pub(crate) fn for_db(db: &Path) -> Self {
        let mut dir = db.as_os_str().to_owned();
        dir.push(".files");
        Self {
            dir: RwLock::new(PathBuf::from(dir)),
            reserved: Mutex::new(HashSet::new()),
        }
    }
}

/// True for a value that is a download URL.
pub(crate) fn is_url(v: &str) -> bool {
    let l = v.get(..8).unwrap_or(v).to_ascii_lowercase();
    l.starts_with("http://") || l.starts_with("https://")
}

/// True for a value that names a local blob file (`blobs/<name>`).
pub(crate) fn is_local(v: &str) -> bool {
    v.strip_prefix("blobs/")
        .is_some_and(|n| !n.is_empty() && !n.contains(['/', '\\']) && n != "." && n != "..")
}

fn io(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::Storage {
        reason: format!("{what} {}: {e}", path.display()),
    }
}

fn random_name(ext: Option<&str>) -> String {
    let id = objects::temp_id();
    let id = id.trim_start_matches("tmp-");
    match ext.filter(|e| !e.is_empty() && e.len() <= 16 && e.chars().all(|c| c.is_ascii_alphanumeric())) {
        Some(e) => format!("{id}.{e}"),
        None => id.to_owned(),
    }
}

/// Files reserved (imported or being downloaded) until dropped; unless kept, they are deleted
/// on drop (a failed write leaves nothing behind).
#[derive(Debug)]
pub(crate) struct Reserved<'a> {
    files: &'a BlobFiles,
    paths: Vec<PathBuf>,
    keep: bool,
}

impl Reserved<'_> {
    /// The files stay (their references committed).
    pub(crate) fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        let mut reserved = self.files.reserved.lock();
        for p in &self.paths {
            if !self.keep {
                let _ = std::fs::remove_file(p);
            }
            reserved.remove(p);
        }
    }
}

/// A pending download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PendingDownload {
    pub object: String,
    pub attr: String,
    pub url: String,
}

impl Store {
    /// The files directory: blob files live in its `blobs/` subdirectory. Default:
    /// `<database path>.files`.
    pub fn files_dir(&self) -> PathBuf {
        self.blobs.dir.read().clone()
    }

    /// Sets the files directory (before syncing; files already stored are not moved).
    pub fn set_files_dir(&self, dir: &Path) {
        *self.blobs.dir.write() = dir.to_owned();
    }

    fn blob_dir(&self) -> PathBuf {
        self.files_dir().join(BLOB_SUBDIR)
    }

    /// A fresh path in `<files dir>/blobs` (the directory is created), reserved.
    fn new_reserved_path(&self, ext: Option<&str>, temp: bool) -> Result<PathBuf> {
        let dir = self.blob_dir();
        std::fs::create_dir_all(&dir).map_err(|e| io("creating", &dir, e))?;
        let name = random_name(ext);
        let path = dir.join(if temp { format!(".{name}.tmp") } else { name });
        self.blobs.reserved.lock().insert(path.clone());
        Ok(path)
    }

    /// Where a new blob file goes: a fresh reserved path in `<files dir>/blobs`. `temp`: a
    /// `.tmp` name for a download in progress.
    pub(crate) fn reserve_blob_path(&self, ext: Option<&str>, temp: bool) -> Result<(PathBuf, Reserved<'_>)> {
        let path = self.new_reserved_path(ext, temp)?;
        Ok((
            path.clone(),
            Reserved {
                files: &self.blobs,
                paths: vec![path],
                keep: false,
            },
        ))
    }

    /// The stored form of an app-given blob value, copying the file in when needed. Returns
    /// the new relative value and the copy made, if any.
    fn import_value(&self, attr: &str, value: &str) -> Result<(String, Option<PathBuf>)> {
        if value.is_empty() || is_url(value) {
            return Ok((value.to_owned(), None));
        }
        let files = self.files_dir();
        let given = Path::new(value);
        let abs = if given.is_absolute() {
            given.to_owned()
        } else {
            files.join(given)
        };
        // Already one of ours: keep it.
        if let Ok(rest) = abs.strip_prefix(files.join(BLOB_SUBDIR))
            && let [Component::Normal(name)] = rest.components().collect::<Vec<_>>()[..]
            && let Some(name) = name.to_str()
            && abs.is_file()
        {
            let rel = format!("{BLOB_SUBDIR}/{name}");
            if is_local(&rel) {
                return Ok((rel, None));
            }
        }
        if !abs.is_file() {
            return Err(Error::invalid(format!(
                "blob attribute `{attr}`: no file at {}",
                abs.display()
            )));
        }
        let ext = abs.extension().and_then(|e| e.to_str());
        let dest = self.new_reserved_path(ext, false)?; // the caller's `Reserved` releases it
        if let Err(e) = std::fs::copy(&abs, &dest) {
            self.blobs.reserved.lock().remove(&dest);
            let _ = std::fs::remove_file(&dest);
            return Err(io("copying a blob from", &abs, e));
        }
        let name = dest.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        Ok((format!("{BLOB_SUBDIR}/{name}"), Some(dest)))
    }

    /// Rewrites the blob attributes of `items` (app values) into stored values, copying files
    /// into the files directory. The copies are reserved; call [`Reserved::keep`] once the
    /// write committed (dropping it removes them).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when a value names no file, storage errors copying.
    pub(crate) fn import_blobs<'a>(
        &self,
        source: &str,
        items: impl IntoIterator<Item = &'a mut Attrs>,
    ) -> Result<Reserved<'_>> {
        let mut copies = Reserved {
            files: &self.blobs,
            paths: Vec::new(),
            keep: false,
        };
        let blob_attrs = match self.read(|c| meta::source(c, source)) {
            Ok(src) => src.def.blob_attrs,
            Err(_) => return Ok(copies), // the write reports the unknown source
        };
        if blob_attrs.is_empty() {
            return Ok(copies);
        }
        for attrs in items {
            for a in &blob_attrs {
                if let Some(v) = attrs.get_mut(a) {
                    let (stored, copy) = self.import_value(a, v)?;
                    copies.paths.extend(copy);
                    *v = stored;
                }
            }
        }
        Ok(copies)
    }

    /// Turns stored blob values of `objs` into absolute paths (URLs stay URLs).
    pub(crate) fn resolve_blobs(&self, src: &SourceRow, objs: &mut [Object]) {
        if src.def.blob_attrs.is_empty() {
            return;
        }
        let files = self.files_dir();
        for o in objs {
            for a in &src.def.blob_attrs {
                if let Some(v) = o.attrs.get_mut(a)
                    && is_local(v)
                {
                    *v = files.join(v.as_str()).to_string_lossy().into_owned();
                }
            }
        }
    }

    /// Downloads still to do for a source (at most [`MAX_ATTEMPTS`] tries each).
    pub(crate) fn pending_downloads(&self, source_id: i64) -> Result<Vec<PendingDownload>> {
        self.read(|c| {
            Ok(c.prepare_cached(
                "SELECT object, attr, url FROM blob_downloads WHERE source_id = ?1 AND attempts < ?2
                 ORDER BY object, attr",
            )?
            .query_map(params![source_id, MAX_ATTEMPTS], |r| {
                Ok(PendingDownload {
                    object: r.get(0)?,
                    attr: r.get(1)?,
                    url: r.get(2)?,
                })
            })?
            .collect::<Result<_, _>>()?)
        })
    }

    /// Number of blob downloads not done yet, over all sources (including those given up).
    ///
    /// # Errors
    /// Storage.
    pub fn pending_blob_downloads(&self) -> Result<u64> {
        self.read(|c| Ok(c.query_row("SELECT count(*) FROM blob_downloads", [], |r| r.get::<_, i64>(0))? as u64))
    }

    /// A download finished: the file `tmp` (complete and verified) becomes the attribute's
    /// value if the attribute still holds `d.url`; otherwise it is discarded. Either way the
    /// pending row of that URL goes.
    pub(crate) fn finish_download(&self, src: &SourceRow, d: &PendingDownload, tmp: &Path) -> Result<bool> {
        let ext = Path::new(d.url.split(['?', '#']).next().unwrap_or_default())
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_owned);
        let (dest, res) = self.reserve_blob_path(ext.as_deref(), false)?;
        std::fs::rename(tmp, &dest).map_err(|e| io("renaming", tmp, e))?;
        let name = dest.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let rel = format!("{BLOB_SUBDIR}/{name}");
        let swapped = self.write(|tx| {
            let current = objects::get(tx, src, &d.object)?;
            let still = current
                .as_ref()
                .and_then(|a| a.get(&d.attr))
                .is_some_and(|v| *v == d.url);
            if still {
                objects::merge(tx, src, &d.object, &[(d.attr.as_str(), rel.as_str())])?;
            }
            tx.prepare_cached(
                "DELETE FROM blob_downloads WHERE source_id = ?1 AND object = ?2 AND attr = ?3 AND url = ?4",
            )?
            .execute(params![src.id, d.object, d.attr, d.url])?;
            Ok(still)
        })?;
        if swapped {
            res.keep();
        }
        Ok(swapped)
    }

    /// True when the attribute still holds `d.url`; otherwise the pending row goes (the page
    /// that replaced or deleted it made the download pointless).
    pub(crate) fn download_wanted(&self, src: &SourceRow, d: &PendingDownload) -> Result<bool> {
        let current = self.read(|c| objects::get(c, src, &d.object))?;
        if current.as_ref().and_then(|a| a.get(&d.attr)) == Some(&d.url) {
            return Ok(true);
        }
        self.write(|tx| {
            tx.prepare_cached(
                "DELETE FROM blob_downloads WHERE source_id = ?1 AND object = ?2 AND attr = ?3 AND url = ?4",
            )?
            .execute(params![src.id, d.object, d.attr, d.url])?;
            Ok(false)
        })
    }

    /// A download failed: counted, retried at the next sync — or, when `give_up` (the server
    /// says the blob does not exist), not tried again until the server sends a new URL.
    pub(crate) fn download_failed(
        &self,
        src: &SourceRow,
        d: &PendingDownload,
        error: &str,
        give_up: bool,
    ) -> Result<()> {
        self.write(|tx| {
            tx.prepare_cached(
                "UPDATE blob_downloads SET attempts = CASE WHEN ?6 THEN ?7 ELSE attempts + 1 END, last_error = ?5
                 WHERE source_id = ?1 AND object = ?2 AND attr = ?3 AND url = ?4",
            )?
            .execute(params![src.id, d.object, d.attr, d.url, error, give_up, MAX_ATTEMPTS])?;
            Ok(())
        })
    }

    /// The orphan sweep: removes every file under `<files dir>/blobs` that no object's blob
    /// attribute and no queued update names, except files being imported or downloaded now.
    /// Returns how many files were removed.
    ///
    /// # Errors
    /// Storage (reading references; a file that cannot be removed is logged and skipped).
    pub fn sweep_blobs(&self) -> Result<usize> {
        let dir = self.blob_dir();
        if !dir.is_dir() {
            return Ok(0);
        }
        // Held throughout: nothing is reserved (imported) between reading the references and
        // deleting, and references committed before a reservation was released are visible.
        let reserved = self.blobs.reserved.lock();
        let referenced = self.read(referenced_blobs)?;
        let entries = std::fs::read_dir(&dir).map_err(|e| io("listing", &dir, e))?;
        let mut removed = 0;
        for entry in entries.flatten() {
            let path = entry.path();
            if !entry.file_type().is_ok_and(|t| t.is_file()) || reserved.contains(&path) {
                continue;
            }
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if referenced.contains(&name) {
                continue;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => removed += 1,
                Err(e) => log::warn!("removing an orphan blob file: {e}"),
            }
        }
        if removed > 0 {
            log::debug!("blob sweep: {removed} orphan files removed");
        }
        Ok(removed)
    }
}

/// File names (under `blobs/`) named by an object's blob attribute or a queued update.
fn referenced_blobs(c: &Connection) -> Result<HashSet<String>> {
    let mut out = HashSet::new();
    let mut add = |v: Option<String>| {
        if let Some(v) = v.filter(|v| is_local(v)) {
            out.insert(v[BLOB_SUBDIR.len() + 1..].to_owned());
        }
    };
    for src in meta::sources(c)? {
        for attr in &src.def.blob_attrs {
            let path = json_path(attr);
            let sql = match src.fixed_table() {
                None => "SELECT json_extract(attrs, ?2) FROM objects WHERE source_id = ?1".to_owned(),
                Some(t) => {
                    if !matches!(&src.def.kind, crate::model::ModelKind::FixedSchema { columns } if columns.contains(attr))
                    {
                        continue;
                    }
                    format!("SELECT {} FROM {t} WHERE ?1 = ?1 AND ?2 = ?2", ident(attr))
                }
            };
            let mut stmt = c.prepare(&sql)?;
            let mut rows = stmt.query(params![src.id, path])?;
            while let Some(r) = rows.next()? {
                add(r.get(0)?);
            }
            // Updates not confirmed yet may be (re)sent with their file; a delete sends none.
            let mut stmt =
                c.prepare_cached("SELECT json_extract(attrs, ?2) FROM changes WHERE source_id = ?1 AND op = 'update'")?;
            let mut rows = stmt.query(params![src.id, path])?;
            while let Some(r) = rows.next()? {
                add(r.get(0)?);
            }
        }
    }
    Ok(out)
}

/// Records a download for every blob attribute of `src` whose value is a URL, in the bulk
/// import's transaction: a bulk file carries blob values as the server's URLs (spec §6, the
/// `blobs` step). The source's next pull downloads them like a page's. Returns how many.
pub(crate) fn record_all_downloads(tx: &Connection, src: &SourceRow) -> Result<u64> {
    if src.def.blob_attrs.is_empty() {
        return Ok(0);
    }
    let ids: Vec<String> = match src.fixed_table() {
        None => tx
            .prepare("SELECT id FROM objects WHERE source_id = ?1")?
            .query_map([src.id], |r| r.get(0))?
            .collect::<std::result::Result<_, _>>()?,
        Some(t) => tx
            .prepare(&format!("SELECT id FROM {t}"))?
            .query_map([], |r| r.get(0))?
            .collect::<std::result::Result<_, _>>()?,
    };
    let mut n = 0;
    for id in ids {
        let Some(attrs) = objects::get(tx, src, &id)? else {
            continue;
        };
        for b in &src.def.blob_attrs {
            if let Some(v) = attrs.get(b)
                && is_url(v)
            {
                tx.prepare_cached(
                    "INSERT INTO blob_downloads(source_id, object, attr, url) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(source_id, object, attr) DO UPDATE SET url = excluded.url, attempts = 0, last_error = NULL",
                )?
                .execute(params![src.id, id, b, v])?;
                n += 1;
            }
        }
    }
    Ok(n)
}

/// Records the downloads a page asks for, in the page's transaction: every blob attribute of
/// an object it inserted whose value now (after the page) is a URL.
pub(crate) fn record_downloads<'a>(
    tx: &Connection,
    src: &SourceRow,
    inserts: impl IntoIterator<Item = (&'a str, &'a [(&'a str, &'a str)])>,
) -> Result<()> {
    if src.def.blob_attrs.is_empty() {
        return Ok(());
    }
    for (id, attrs) in inserts {
        if !attrs.iter().any(|(k, _)| src.def.blob_attrs.iter().any(|b| b == k)) {
            continue;
        }
        let Some(now) = objects::get(tx, src, id)? else {
            continue;
        };
        for (k, v) in attrs {
            if src.def.blob_attrs.iter().any(|b| b == k) && is_url(v) && now.get(*k).is_some_and(|n| n == v) {
                tx.prepare_cached(
                    "INSERT INTO blob_downloads(source_id, object, attr, url) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(source_id, object, attr) DO UPDATE SET url = excluded.url, attempts = 0, last_error = NULL",
                )?
                .execute(params![src.id, id, k, v])?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SourceDef;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(&dir.path().join("t.db")).expect("open");
        let mut def = SourceDef::new("Photo");
        def.blob_attrs = vec!["image".into()];
        s.define_source(&def).expect("define");
        (dir, s)
    }

    fn a(pairs: &[(&str, &str)]) -> Attrs {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn an_app_file_is_copied_in_and_found_by_absolute_path() {
        let (dir, s) = store();
        let mine = dir.path().join("shot.jpg");
        std::fs::write(&mine, b"jpeg bytes").expect("write");
        let o = s
            .create("Photo", a(&[("image", mine.to_str().expect("utf8")), ("title", "t")]))
            .expect("create");
        let found = s.find("Photo", &o.id).expect("find").expect("exists");
        let path = PathBuf::from(&found.attrs["image"]);
        assert!(path.starts_with(s.files_dir().join("blobs")), "{path:?}");
        assert_eq!(path.extension().and_then(|e| e.to_str()), Some("jpg"));
        assert_eq!(std::fs::read(&path).expect("copied"), b"jpeg bytes");
        assert_eq!(o.attrs["image"], found.attrs["image"]);
        // Writing back what find returned changes nothing (no new queued change, no copy).
        std::fs::remove_file(&mine).expect("the app's own file may go");
        s.update("Photo", &o.id, a(&[("image", &found.attrs["image"])]))
            .expect("same");
        assert_eq!(std::fs::read_dir(s.files_dir().join("blobs")).expect("dir").count(), 1);
        let stored: String = s
            .read(|c| Ok(c.query_row("SELECT attrs FROM objects", [], |r| r.get(0))?))
            .expect("raw");
        assert!(stored.contains("\"blobs/"), "{stored}");
    }

    #[test]
    fn a_missing_file_is_refused_and_nothing_is_written() {
        let (dir, s) = store();
        let r = s.create(
            "Photo",
            a(&[("image", dir.path().join("nope").to_str().expect("utf8"))]),
        );
        assert!(matches!(r, Err(Error::InvalidInput { .. })), "{r:?}");
        assert_eq!(s.count("Photo", None).expect("count"), 0);
    }

    #[test]
    fn the_sweep_removes_replaced_deleted_and_stranger_files_only() {
        let (dir, s) = store();
        let f = |n: &str| {
            let p = dir.path().join(n);
            std::fs::write(&p, n).expect("write");
            p.to_string_lossy().into_owned()
        };
        let keep = s.create("Photo", a(&[("image", &f("a.png"))])).expect("create");
        let replaced = s.create("Photo", a(&[("image", &f("b.png"))])).expect("create");
        let old = PathBuf::from(&replaced.attrs["image"]);
        s.update("Photo", &replaced.id, a(&[("image", &f("c.png"))]))
            .expect("update");
        let gone = s.create("Photo", a(&[("image", &f("d.png"))])).expect("create");
        let gone_path = PathBuf::from(&gone.attrs["image"]);
        s.destroy("Photo", &gone.id).expect("destroy");
        let stranger = s.files_dir().join("blobs").join("stranger");
        std::fs::write(&stranger, b"?").expect("write");
        let removed = s.sweep_blobs().expect("sweep");
        assert!(!old.exists() && !stranger.exists() && !gone_path.exists());
        assert!(PathBuf::from(&keep.attrs["image"]).exists());
        assert!(PathBuf::from(&s.find("Photo", &replaced.id).expect("find").expect("exists").attrs["image"]).exists());
        assert_eq!(removed, 3);
    }
}
