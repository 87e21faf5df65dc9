//! Blob attributes on the wire (spec §5.3, §4.5).
//!
//! Push: when a pushed create or update names a local blob file, the push is sent as
//! `multipart/form-data` — a part `cud` with the JSON body plus `"blob_fields":[…]`, and one
//! `application/octet-stream` part per file named `<attr>-<object id>` — streamed from the files
//! through a chain of readers with an exact `Content-Length`, so no file is held in memory.
//!
//! Pull: pending downloads (recorded in the page transactions) are fetched after the pull by
//! [`DOWNLOAD_THREADS`] threads sharing the one agent: `client_id` appended to the URL as Rhodes
//! does (no total time budget, but each read must progress within the read timeout), the body
//! streamed into a temporary file while hashing, the length checked against
//! `Content-Length` and the SHA-256 against `X-Blob-Sha256` when the server sends it, the file
//! synced and renamed, then swapped in (`Store::finish_download`). A failure leaves the
//! download pending for the next sync and its temporary file removed.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use sha2::Digest as _;

use super::transport::{Answer, Failure, Transport, classify};
use crate::error::{Error, Result};
use crate::protocol::SyncCtx;
use crate::store::Store;
use crate::store::blobs::{PendingDownload, is_local};
use crate::store::meta::SourceRow;
use crate::store::queue::PushBatch;

/// Concurrent blob downloads per source.
pub const DOWNLOAD_THREADS: usize = 4;
/// The checksum header of the reference server: SHA-256 of the whole file, hex.
pub const SHA256_HEADER: &str = "x-blob-sha256";

/// Most bytes of blob files in one push (a single larger file still goes, alone): the rest of
/// the queue follows in further pushes of the same sync, so that a backlog of photos never
/// makes one request larger than servers accept (the reference server's default limit is
/// 16 MiB).
pub const MAX_PUSH_BLOB_BYTES: u64 = 8 * 1024 * 1024;

/// Local blob bytes an object's pushed attributes carry.
fn blob_bytes(dir: &Path, src: &SourceRow, attrs: &crate::model::Attrs) -> u64 {
    src.def
        .blob_attrs
        .iter()
        .filter_map(|a| attrs.get(a).filter(|v| is_local(v)))
        .filter_map(|v| std::fs::metadata(dir.join(v)).ok())
        .map(|m| m.len())
        .sum()
}

/// Bounds the blob bytes of a push to [`MAX_PUSH_BLOB_BYTES`]: creates, then updates, are kept
/// in queue order while they fit (the first always); from the first one that does not fit,
/// the rest of its section and the sections after it go back to `pending` for the next push.
/// Returns true when something was put back.
pub(super) fn limit_push(store: &Store, src: &SourceRow, batch: &mut PushBatch) -> Result<bool> {
    if src.def.blob_attrs.is_empty() {
        return Ok(false);
    }
    let dir = store.files_dir();
    let mut total = 0u64;
    let mut cut: Option<(usize, usize)> = None; // (section 0 = creates / 1 = updates, index)
    'outer: for (section, list) in [&batch.creates, &batch.updates].into_iter().enumerate() {
        for (i, (_, attrs)) in list.iter().enumerate() {
            let bytes = blob_bytes(&dir, src, attrs);
            if bytes > 0 && total > 0 && total + bytes > MAX_PUSH_BLOB_BYTES {
                cut = Some((section, i));
                break 'outer;
            }
            total += bytes;
        }
    }
    let Some((section, i)) = cut else { return Ok(false) };
    let mut back: Vec<(&'static str, String)> = Vec::new();
    if section == 0 {
        back.extend(batch.creates.drain(i..).map(|(id, _)| ("create", id)));
        back.extend(batch.updates.drain(..).map(|(id, _)| ("update", id)));
    } else {
        back.extend(batch.updates.drain(i..).map(|(id, _)| ("update", id)));
    }
    let push_id = batch.push_id;
    store.write(|tx| {
        let mut put_back = tx.prepare_cached(
            "UPDATE changes SET state = 'pending', push_id = NULL, push_pos = NULL
             WHERE source_id = ?1 AND push_id = ?2 AND op = ?3 AND object = ?4 AND state = 'in_flight'",
        )?;
        for (op, id) in &back {
            put_back.execute(rusqlite::params![src.id, push_id, op, id])?;
        }
        Ok(())
    })?;
    log::debug!(
        "{}: {} changes with blobs left for the next push ({total} bytes in this one)",
        src.def.name,
        back.len()
    );
    Ok(true)
}

/// Reads a sequence of readers one after the other, failing once the sync is stopped.
struct Chain {
    parts: VecDeque<Box<dyn Read + Send>>,
    ctx: SyncCtx,
}

impl Read for Chain {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.ctx.stopped() {
            return Err(io::Error::other("sync stopped"));
        }
        while let Some(p) = self.parts.front_mut() {
            let n = p.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            self.parts.pop_front();
        }
        Ok(0)
    }
}

/// A multipart part name or file name inside a quoted header parameter (HTML's escaping).
fn quoted(s: &str) -> String {
    s.replace('"', "%22").replace('\r', "%0D").replace('\n', "%0A")
}

/// Sends the push: JSON as before, or multipart when it carries local blob files.
#[allow(clippy::too_many_arguments)]
pub(super) fn send_push(
    transport: &Transport,
    store: &Store,
    ctx: &SyncCtx,
    src: &SourceRow,
    batch: &PushBatch,
    body: Vec<u8>,
    url: &str,
    cookie: &str,
    client_id: &str,
) -> std::result::Result<Answer, Failure> {
    let mut files: Vec<(String, String, File, u64)> = Vec::new();
    let mut fields: Vec<&str> = Vec::new();
    if !src.def.blob_attrs.is_empty() {
        let dir = store.files_dir();
        for (id, attrs) in batch.creates.iter().chain(&batch.updates) {
            for attr in &src.def.blob_attrs {
                let Some(v) = attrs.get(attr).filter(|v| is_local(v)) else {
                    continue;
                };
                let path = dir.join(v);
                let opened = File::open(&path).and_then(|f| f.metadata().map(|m| (f, m.len())));
                match opened {
                    Ok((f, len)) => {
                        let name = Path::new(v).file_name().and_then(|n| n.to_str()).unwrap_or("blob");
                        files.push((format!("{attr}-{id}"), name.to_owned(), f, len));
                        if !fields.contains(&attr.as_str()) {
                            fields.push(attr);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        log::warn!(
                            "{}: a blob file of a pushed object is missing; sent without it",
                            src.def.name
                        );
                    }
                    Err(e) => return Err(Failure::NotSent(format!("reading a blob file: {e}"))),
                }
            }
        }
    }
    if files.is_empty() {
        return transport.post_json(url, &body, Some(cookie), Some(client_id));
    }
    // The CUD body with `blob_fields`, then the multipart envelope.
    let mut cud = body;
    cud.pop(); // the closing `}`
    cud.extend_from_slice(
        format!(
            ",\"blob_fields\":{}}}",
            serde_json::to_string(&fields).unwrap_or_else(|_| "[]".into())
        )
        .as_bytes(),
    );
    let boundary = format!(
        "TideSync{}",
        crate::store::objects::temp_id().trim_start_matches("tmp-")
    );
    let mut head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"cud\"\r\nContent-Type: application/json\r\n\r\n"
    )
    .into_bytes();
    head.extend_from_slice(&cud);
    let mut parts: VecDeque<Box<dyn Read + Send>> = VecDeque::new();
    let mut total = head.len() as u64;
    parts.push_back(Box::new(io::Cursor::new(head)));
    for (name, file_name, file, len) in files {
        let h = format!(
            "\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"{}\"; filename=\"{}\"\r\nContent-Type: application/octet-stream\r\n\r\n",
            quoted(&name),
            quoted(&file_name)
        );
        total += h.len() as u64 + len;
        parts.push_back(Box::new(io::Cursor::new(h.into_bytes())));
        parts.push_back(Box::new(file.take(len)));
    }
    let tail = format!("\r\n--{boundary}--\r\n");
    total += tail.len() as u64;
    parts.push_back(Box::new(io::Cursor::new(tail.into_bytes())));
    let mut reader = Chain {
        parts,
        ctx: ctx.clone(),
    };
    let req = transport
        .agent()
        .post(url)
        .header("Content-Type", format!("multipart/form-data; boundary={boundary}"))
        .header("Content-Length", total.to_string())
        .header("Cookie", cookie)
        .header("X-RhoConnect-CLIENT-ID", client_id);
    Transport::finish(req.send(ureq::SendBody::from_reader(&mut reader)))
}

/// Writes to a file while hashing and counting.
struct HashingFile {
    file: File,
    hash: sha2::Sha256,
    len: u64,
}

impl Write for HashingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hash.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Stops a body read once the sync is stopped.
struct Stoppable<'a, R> {
    inner: R,
    ctx: &'a SyncCtx,
}

impl<R: Read> Read for Stoppable<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.ctx.stopped() {
            return Err(io::Error::other("sync stopped"));
        }
        self.inner.read(buf)
    }
}

fn with_client_id(url: &str, client_id: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    let id: String = form_urlencoded::byte_serialize(client_id.as_bytes()).collect();
    format!("{url}{sep}client_id={id}")
}

/// Downloads one blob into a verified temporary file and swaps it in.
fn fetch(
    transport: &Transport,
    store: &Store,
    ctx: &SyncCtx,
    src: &SourceRow,
    d: &PendingDownload,
    client_id: &str,
) -> Result<()> {
    if !store.download_wanted(src, d)? {
        return Ok(());
    }
    let (tmp, _reserved) = store.reserve_blob_path(None, true)?;
    // A blob may take longer than the body budget of a page on a slow link: no total budget,
    // but every read must make progress within it (a stalled transfer still ends).
    let budget = transport.agent().config().timeouts().recv_body;
    let mut resp = transport
        .agent()
        .get(&with_client_id(&d.url, client_id))
        .config()
        .timeout_recv_body(None)
        .timeout_per_read(budget)
        .build()
        .call()
        .map_err(|e| Error::from(classify(e)))?;
    let status = resp.status().as_u16();
    if status != 200 {
        return Err(Error::Server {
            status,
            message: format!("blob download of {}.{}", src.def.name, d.attr),
        });
    }
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.trim().to_ascii_lowercase())
    };
    let expected_len: Option<u64> = header("content-length").and_then(|v| v.parse().ok());
    let expected_sha = header(SHA256_HEADER);
    let file = File::create(&tmp).map_err(|e| Error::Storage {
        reason: format!("creating {}: {e}", tmp.display()),
    })?;
    let mut out = HashingFile {
        file,
        hash: sha2::Sha256::new(),
        len: 0,
    };
    let mut body = Stoppable {
        inner: resp.body_mut().as_reader(),
        ctx,
    };
    if let Err(e) = io::copy(&mut body, &mut out) {
        return Err(if ctx.stopped() {
            Error::Stopped
        } else {
            Error::Network {
                reason: format!("blob download of {}.{}: {e}", src.def.name, d.attr),
            }
        });
    }
    out.file.sync_all().map_err(|e| Error::Storage {
        reason: format!("writing {}: {e}", tmp.display()),
    })?;
    if expected_len.is_some_and(|n| n != out.len) {
        return Err(Error::Network {
            reason: format!(
                "blob download of {}.{}: body shorter than its length",
                src.def.name, d.attr
            ),
        });
    }
    let sha: String = out.hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    if expected_sha.is_some_and(|s| s != sha) {
        return Err(Error::protocol(format!(
            "blob download of {}.{}: checksum mismatch",
            src.def.name, d.attr
        )));
    }
    drop(out.file);
    store.finish_download(src, d, &tmp)?;
    Ok(())
}

/// Fetches the pending downloads of `src` ([`DOWNLOAD_THREADS`] at a time). Failed ones stay
/// pending for the next sync; returns the number done.
///
/// # Errors
/// [`Error::Stopped`], or the first failure (after all downloads were tried).
fn download_pending(
    transport: &Transport,
    store: &Store,
    ctx: &SyncCtx,
    src: &SourceRow,
    client_id: &str,
) -> Result<usize> {
    let todo = store.pending_downloads(src.id)?;
    if todo.is_empty() {
        return Ok(0);
    }
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let failures: Mutex<Vec<Error>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..DOWNLOAD_THREADS.min(todo.len()) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(d) = todo.get(i) else { break };
                    if ctx.stopped() {
                        failures.lock().push(Error::Stopped);
                        break;
                    }
                    match fetch(transport, store, ctx, src, d, client_id) {
                        Ok(()) => {
                            done.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) => {
                            // 404/410: the server has no such blob; retrying cannot help.
                            let gone = matches!(e, Error::Server { status: 404 | 410, .. });
                            if !matches!(e, Error::Stopped)
                                && let Err(e2) = store.download_failed(src, d, &e.to_string(), gone)
                            {
                                log::error!("recording a failed blob download: {e2}");
                            }
                            if gone {
                                log::warn!("{}: a blob is gone from the server; its URL is kept", src.def.name);
                            } else {
                                failures.lock().push(e);
                            }
                        }
                    }
                }
            });
        }
    });
    let failures = failures.into_inner();
    let done = done.into_inner();
    log::debug!("{}: {done} blobs downloaded, {} failed", src.def.name, failures.len());
    if failures.iter().any(|e| matches!(e, Error::Stopped)) {
        return Err(Error::Stopped);
    }
    match failures.into_iter().next() {
        Some(e) => {
            log::warn!(
                "{}: blob downloads failed (retried at the next sync): {e}",
                src.def.name
            );
            Err(e)
        }
        None => Ok(done),
    }
}

/// After a source's pull: its blob downloads, then the orphan sweep (also when a download
/// failed, so that nothing partial stays on disk).
///
/// # Errors
/// As the downloads.
pub(super) fn after_pull(
    transport: &Transport,
    store: &Store,
    ctx: &SyncCtx,
    src: &SourceRow,
    client_id: &str,
) -> Result<()> {
    if src.def.blob_attrs.is_empty() {
        return Ok(());
    }
    let result = download_pending(transport, store, ctx, src, client_id);
    if let Err(e) = store.sweep_blobs() {
        log::warn!("blob sweep: {e}");
    }
    result.map(|_| ())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;

    use super::*;

    #[test]
    fn the_client_id_is_appended_as_rhodes_does() {
        assert_eq!(
            with_client_id("http://h/blobs/1", "a b"),
            "http://h/blobs/1?client_id=a+b"
        );
        assert_eq!(with_client_id("http://h/x?y=1", "c"), "http://h/x?y=1&client_id=c");
    }

    #[test]
    fn part_names_cannot_break_out_of_their_quotes() {
        assert_eq!(quoted("a\"b\r\nc"), "a%22b%0D%0Ac");
    }

    #[test]
    fn the_chain_reads_its_parts_in_order_and_stops_with_the_sync() {
        let epoch = Arc::new(AtomicU64::new(0));
        let parts: VecDeque<Box<dyn Read + Send>> = VecDeque::from(vec![
            Box::new(io::Cursor::new(b"ab".to_vec())) as Box<dyn Read + Send>,
            Box::new(io::empty()),
            Box::new(io::Cursor::new(b"cde".to_vec())),
        ]);
        let ctx = SyncCtx::new(10, epoch.clone(), None);
        let mut chain = Chain {
            parts,
            ctx: ctx.clone(),
        };
        let mut out = Vec::new();
        chain.read_to_end(&mut out).expect("read");
        assert_eq!(out, b"abcde");
        let mut stopped = Chain {
            parts: VecDeque::from(vec![Box::new(io::Cursor::new(b"x".to_vec())) as Box<dyn Read + Send>]),
            ctx,
        };
        epoch.fetch_add(1, Ordering::SeqCst);
        assert!(stopped.read(&mut [0u8; 4]).is_err());
    }
}
