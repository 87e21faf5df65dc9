//! RhoConnect bulk data (spec §6.2–6.3): ask `bulk_data` for a partition, poll while the
//! server answers `wait` (bounded backoff that a stop interrupts), download `<url>.rzip` (or the
//! raw `.data` when no zip is served) to disk with resume after a dropped connection, and unzip
//! it. The result is the §6.4 SQLite file; the store validates and imports it.
//!
//! Partial downloads are kept under the request's directory with the URL's file name, so a
//! download interrupted by a dropped connection, a stop or a killed process resumes with
//! `Range` at the next attempt of the same file; files of other URLs are removed.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::client::{RhoConnect, UNKNOWN_CLIENT, enc, is_unknown_client, status_error};
use super::transport::DownloadError;
use crate::error::{Error, Result};
use crate::protocol::{BulkEvent, BulkStep, SnapshotFile, SnapshotRequest, SyncCtx};
use crate::store::Store;

/// First wait after a `wait` answer; doubles up to [`POLL_MAX`] (Rhodes waits 5 s each time).
const POLL_FIRST: Duration = Duration::from_millis(100);
/// Longest wait between two `bulk_data` polls.
const POLL_MAX: Duration = Duration::from_secs(2);
/// Download attempts in a row that may end without receiving a single byte.
const MAX_IDLE_ATTEMPTS: u32 = 3;
/// Largest unzipped file accepted (a zip bomb is refused, not written out).
const MAX_UNZIPPED: u64 = 32 * 1024 * 1024 * 1024;

/// What `bulk_data` answered.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Wait,
    Nop,
    Url(String),
}

fn parse_answer(body: &[u8]) -> Result<Answer> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| Error::protocol(format!("bulk_data answer: {e}")))?;
    match v.get("result").and_then(|r| r.as_str()) {
        Some("wait") => Ok(Answer::Wait),
        Some("nop") => Ok(Answer::Nop),
        Some("url") => Ok(Answer::Url(
            v.get("url")
                .and_then(|u| u.as_str())
                .ok_or_else(|| Error::protocol("bulk_data answer: url without a string"))?
                .to_owned(),
        )),
        other => Err(Error::protocol(format!(
            "bulk_data answer: unexpected result {other:?}"
        ))),
    }
}

/// Sleeps `d` in short slices, returning early (with `Stopped`) when the run is stopped.
fn wait_or_stop(ctx: &SyncCtx, d: Duration) -> Result<()> {
    let until = Instant::now() + d;
    loop {
        if ctx.stopped() {
            return Err(Error::Stopped);
        }
        let now = Instant::now();
        if now >= until {
            return Ok(());
        }
        std::thread::sleep((until - now).min(Duration::from_millis(20)));
    }
}

/// `scheme://host[:port]` of the sync server: bulk URLs are absolute paths on that host.
fn origin(base: &str) -> &str {
    let after = base.find("://").map_or(0, |i| i + 3);
    match base[after..].find('/') {
        Some(i) => &base[..after + i],
        None => base,
    }
}

/// The file name part of a bulk URL, checked to be a plain name (it names files on disk).
fn file_name(url: &str) -> Result<String> {
    let name = url.rsplit('/').next().unwrap_or_default();
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= 200
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok && url.starts_with('/') {
        Ok(name.to_owned())
    } else {
        Err(Error::protocol(format!("bulk_data answer: unusable url `{url}`")))
    }
}

pub(super) fn fetch_snapshot(
    rc: &RhoConnect,
    store: &Store,
    ctx: &SyncCtx,
    request: &SnapshotRequest,
) -> Result<Option<SnapshotFile>> {
    let mut recovered = false;
    let url = loop {
        match request_url(rc, store, ctx, request) {
            Err(Error::Server { status: 500, message }) if message == UNKNOWN_CLIENT && !recovered => {
                recovered = true;
                RhoConnect::recover_unknown_client(store)?;
            }
            other => break other?,
        }
    };
    let Some(url) = url else {
        return Ok(None);
    };
    let cookie = RhoConnect::session(store)?;
    std::fs::create_dir_all(&request.dir).map_err(|e| io_error(&request.dir, e))?;
    let name = file_name(&url)?;
    remove_other_files(&request.dir, &name);
    let data = request.dir.join(&name);
    let origin = origin(&rc.base);
    let zipped = request.dir.join(format!("{name}.rzip"));
    let got_zip = download(rc, ctx, request, &format!("{origin}{url}.rzip"), &cookie, &zipped)?;
    if got_zip {
        if ctx.stopped() {
            return Err(Error::Stopped);
        }
        let t = Instant::now();
        unzip(&zipped, &data)?;
        log::debug!("bulk file unzipped in {:?}", t.elapsed());
        let _ = std::fs::remove_file(&zipped);
    } else if !download(rc, ctx, request, &format!("{origin}{url}"), &cookie, &data)? {
        return Err(Error::Server {
            status: 404,
            message: format!("bulk file {url} not found"),
        });
    }
    let bytes = std::fs::metadata(&data).map_err(|e| io_error(&data, e))?.len();
    Ok(Some(SnapshotFile { path: data, bytes }))
}

/// Polls `bulk_data` until the server answers with a URL (`None` for `nop`).
fn request_url(rc: &RhoConnect, store: &Store, ctx: &SyncCtx, request: &SnapshotRequest) -> Result<Option<String>> {
    let cookie = RhoConnect::session(store)?;
    let client_id = rc.client_id(store, &cookie)?;
    let mut sources: Vec<&str> = request.sources.iter().map(String::as_str).collect();
    sources.sort_unstable();
    let url = format!(
        "{}?client_id={}&partition={}&sources={}",
        rc.url("bulk_data"),
        enc(&client_id),
        request.partition.as_str(),
        enc(&sources.join(","))
    );
    let started = Instant::now();
    let mut pause = POLL_FIRST;
    loop {
        if ctx.stopped() {
            return Err(Error::Stopped);
        }
        let a = rc.transport.get(&url, Some(&cookie), Some(&client_id))?;
        if is_unknown_client(&a) {
            return Err(Error::Server {
                status: 500,
                message: UNKNOWN_CLIENT.into(),
            });
        }
        if !a.ok() {
            return Err(status_error(&a));
        }
        RhoConnect::refresh_cookie(store, &a)?;
        match parse_answer(&a.body)? {
            Answer::Nop => return Ok(None),
            Answer::Url(u) if u.is_empty() => {
                // RhoConnect answers an empty url when a selected source has a source error
                // (transcript 18). It has already marked the file's data as delivered (H7): the
                // bulk state stays "needed" and the next sync asks again.
                return Err(Error::Server {
                    status: a.status,
                    message: "bulk_data answered an empty url: a source of the partition has a source error".into(),
                });
            }
            Answer::Url(u) => return Ok(Some(u)),
            Answer::Wait => {
                if started.elapsed() >= request.max_wait {
                    return Err(Error::Network {
                        reason: format!(
                            "bulk data for partition {} not ready after {:?}",
                            request.partition.as_str(),
                            request.max_wait
                        ),
                    });
                }
                log::debug!("bulk_data: wait {pause:?}");
                wait_or_stop(ctx, pause)?;
                pause = (pause * 2).min(POLL_MAX);
            }
        }
    }
}

/// Downloads `url` to `dest` with resume. `Ok(false)`: the server has no such file (404).
fn download(
    rc: &RhoConnect,
    ctx: &SyncCtx,
    request: &SnapshotRequest,
    url: &str,
    cookie: &str,
    dest: &Path,
) -> Result<bool> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dest)
        .map_err(|e| io_error(dest, e))?;
    let mut idle = 0;
    let mut last_note = Instant::now();
    loop {
        if ctx.stopped() {
            return Err(Error::Stopped);
        }
        let before = file.metadata().map_err(|e| io_error(dest, e))?.len();
        let mut event = BulkEvent::new(BulkStep::Download, Some(request.partition));
        event.bytes = before;
        ctx.bulk(&event);
        let result = rc
            .transport
            .download(url, Some(cookie), &mut file, &|| ctx.stopped(), &mut |n, total| {
                if last_note.elapsed() >= Duration::from_millis(250) {
                    last_note = Instant::now();
                    let mut e = BulkEvent::new(BulkStep::Download, Some(request.partition));
                    e.bytes = n;
                    e.total_bytes = total;
                    ctx.bulk(&e);
                }
            });
        match result {
            Ok(n) => {
                file.sync_all().map_err(|e| io_error(dest, e))?;
                log::info!("bulk file downloaded: {n} bytes");
                return Ok(true);
            }
            Err(DownloadError::Status(a)) if a.status == 404 => {
                drop(file);
                let _ = std::fs::remove_file(dest);
                return Ok(false);
            }
            Err(DownloadError::Status(a)) => return Err(status_error(&a)),
            Err(DownloadError::Stopped) => return Err(Error::Stopped),
            Err(DownloadError::Io(e)) => return Err(io_error(dest, e)),
            Err(DownloadError::Failure(f)) => {
                let after = file.metadata().map_err(|e| io_error(dest, e))?.len();
                idle = if after > before { 0 } else { idle + 1 };
                let err = Error::from(f);
                if idle >= MAX_IDLE_ATTEMPTS {
                    return Err(err);
                }
                log::warn!("bulk download interrupted at {after} bytes ({err}); resuming");
                wait_or_stop(ctx, POLL_FIRST * idle)?;
            }
        }
    }
}

/// Extracts the one entry of the `.rzip` to `data` (the entry's own name is not used as a path).
fn unzip(zipped: &Path, data: &Path) -> Result<()> {
    let bad = |reason: String| Error::BulkFile { reason };
    let file = File::open(zipped).map_err(|e| io_error(zipped, e))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| {
        let _ = std::fs::remove_file(zipped);
        bad(format!("not a zip file: {e}"))
    })?;
    if archive.len() != 1 {
        let _ = std::fs::remove_file(zipped);
        return Err(bad(format!("the zip holds {} entries, not 1", archive.len())));
    }
    let tmp = data.with_extension("unzipping");
    let result = (|| {
        let mut entry = archive.by_index(0).map_err(|e| bad(format!("zip entry: {e}")))?;
        if entry.size() > MAX_UNZIPPED {
            return Err(bad(format!("the zip entry is too large ({} bytes)", entry.size())));
        }
        let out = File::create(&tmp).map_err(|e| io_error(&tmp, e))?;
        let mut out = BufWriter::with_capacity(256 * 1024, out);
        let mut limited = (&mut entry).take(MAX_UNZIPPED + 1);
        let n = std::io::copy(&mut limited, &mut out).map_err(|e| bad(format!("unzip: {e}")))?;
        if n > MAX_UNZIPPED {
            return Err(bad("the zip entry is too large".into()));
        }
        out.flush().map_err(|e| io_error(&tmp, e))?;
        out.get_ref().sync_all().map_err(|e| io_error(&tmp, e))?;
        Ok(())
    })();
    match result {
        Ok(()) => std::fs::rename(&tmp, data).map_err(|e| io_error(data, e)),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            // A corrupt zip is not resumed: the next attempt downloads it again.
            let _ = std::fs::remove_file(zipped);
            Err(e)
        }
    }
}

/// Removes files in `dir` that belong to other bulk URLs than `name` (older snapshots).
fn remove_other_files(dir: &Path, name: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let keep = e.file_name().to_str().is_some_and(|f| f.starts_with(name));
        if !keep && e.file_type().is_ok_and(|t| t.is_file()) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

fn io_error(path: &Path, e: std::io::Error) -> Error {
    Error::Storage {
        reason: format!("{}: {e}", PathBuf::from(path).display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_and_bad_ones_are_protocol_errors() {
        assert_eq!(parse_answer(br#"{"result":"wait"}"#), Ok(Answer::Wait));
        assert_eq!(parse_answer(br#"{"result":"nop"}"#), Ok(Answer::Nop));
        assert_eq!(
            parse_answer(br#"{"result":"url","url":"/data/application/a_1.data"}"#),
            Ok(Answer::Url("/data/application/a_1.data".into()))
        );
        assert!(matches!(parse_answer(b"{"), Err(Error::Protocol { .. })));
        assert!(matches!(
            parse_answer(br#"{"result":"what"}"#),
            Err(Error::Protocol { .. })
        ));
        assert!(matches!(
            parse_answer(br#"{"result":"url"}"#),
            Err(Error::Protocol { .. })
        ));
    }

    #[test]
    fn origin_and_file_names() {
        assert_eq!(origin("http://127.0.0.1:9292/application/"), "http://127.0.0.1:9292");
        assert_eq!(origin("https://h/app"), "https://h");
        assert_eq!(origin("http://h"), "http://h");
        assert_eq!(
            file_name("/data/application/alice/alice_1795512274.data"),
            Ok("alice_1795512274.data".into())
        );
        assert!(file_name("/data/..").is_err());
        assert!(file_name("/data/a b.data").is_err());
        assert!(file_name("relative.data").is_err());
        assert!(file_name("/data/").is_err());
    }

    #[test]
    fn a_corrupt_zip_is_a_bulk_file_error_and_is_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let z = dir.path().join("x.data.rzip");
        std::fs::write(&z, b"PK\x03\x04 definitely not a zip").expect("write");
        let r = unzip(&z, &dir.path().join("x.data"));
        assert!(matches!(r, Err(Error::BulkFile { .. })), "{r:?}");
        assert!(!z.exists());
        assert!(!dir.path().join("x.data").exists());
    }
}
