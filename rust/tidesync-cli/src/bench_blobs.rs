//! `tidesync bench`, blob figure: a client syncs objects that each carry one blob attribute
//! (256 KB, distinct bytes per file) from the reference server on loopback. The time is the
//! whole `sync_source` — pages, then the downloads (4 at a time, streamed to temporary files,
//! length and SHA-256 checked, renamed, swapped in) and the orphan sweep.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context as _, Result};
use tidesync_core::{SourceDef, SyncClient, SyncConfig, SyncOptions};
use tidesync_server::{App, Obj, Server, ServerConfig};

/// Size of each blob.
pub const BLOB_BYTES: usize = 256 * 1024;

/// Blob download figures.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct BlobFigures {
    /// Files downloaded.
    pub files: u64,
    /// Throughput in MB/s (10^6 bytes).
    pub mb_per_s: f64,
    /// Files per second.
    pub files_per_s: f64,
}

/// Syncs `files` objects with a 256 KB blob each; `dir` holds the server's and client's files.
pub fn run(dir: &Path, files: u64) -> Result<BlobFigures> {
    let data = dir.join("blob-server");
    let mut cfg = ServerConfig::new(App::transcripts());
    cfg.data_dir = Some(data.clone());
    let server = Server::start(cfg)?;
    let backend = server.backend();
    let base = server.url();
    for i in 0..files {
        let bytes: Vec<u8> = (0..BLOB_BYTES)
            .map(|j| (j as u64).wrapping_mul(2_654_435_761).wrapping_add(i) as u8)
            .collect();
        let id = backend.put_blob(&bytes).context("storing a blob")?;
        let url = format!("{}/blobs/{id}", base.trim_end_matches('/'));
        backend
            .insert(
                "Product",
                None,
                &format!("blob-{i}"),
                Obj::from_pairs([("name", format!("Blob {i}")), ("image", url)]),
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let mut config = SyncConfig::new(&server.sync_url());
    config.files_dir = Some(dir.join("blob-client-files"));
    let c = SyncClient::open(&dir.join("blobs.db"), config)?;
    let mut def = SourceDef::new("Product");
    def.blob_attrs = vec!["image".into()];
    c.define_source(&def)?;
    c.login("bench", "password")?;
    let t = Instant::now();
    c.sync_source("Product", &SyncOptions::default(), None)?;
    let secs = t.elapsed().as_secs_f64();
    let on_disk = std::fs::read_dir(c.store().files_dir().join("blobs"))?.count() as u64;
    anyhow::ensure!(on_disk == files, "{on_disk} of {files} blobs downloaded");
    anyhow::ensure!(c.store().pending_blob_downloads()? == 0, "downloads pending");
    Ok(BlobFigures {
        files,
        mb_per_s: (files * BLOB_BYTES as u64) as f64 / 1e6 / secs,
        files_per_s: files as f64 / secs,
    })
}

#[cfg(test)]
mod tests {
    /// The blob figure alone: `cargo test -p tidesync-cli bench_blobs -- --ignored --nocapture`
    /// (`TIDESYNC_BLOB_FILES` sets the count, default 1000).
    #[test]
    #[ignore = "a benchmark: 256 MB through loopback"]
    fn blob_download_figure() {
        let files = std::env::var("TIDESYNC_BLOB_FILES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000);
        let dir = tempfile::tempdir().expect("tempdir");
        let f = super::run(dir.path(), files).expect("bench");
        println!(
            "blob download, {} files x 256 KB: {:.1} MB/s, {:.0} files/s",
            f.files, f.mb_per_s, f.files_per_s
        );
    }

    #[test]
    fn a_few_blobs_download() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(super::run(dir.path(), 3).expect("bench").files, 3);
    }
}
