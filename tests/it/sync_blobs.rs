//! Blob attributes end to end (issue 19): the core's `SyncClient` against the reference server
//! with the transcripts' application, Product declared with a blob attribute `image`. Uploads
//! go as multipart pushes, downloads through `GET /blobs/<id>`; faults cut connections in the
//! middle of a blob. Nothing sleeps.

use std::path::{Path, PathBuf};

use tempfile::TempDir;
use tidesync_core::{Attrs, Cond, Error as CoreError, Query, SourceDef, SyncClient, SyncConfig, SyncOptions};
use tidesync_server::{App, FaultKind, FaultRule, Route, Server, ServerConfig};
use tidesync_tests::{Client, Http};

const PASSWORD: &str = "password";

/// A transcripts server whose data directory (blob files) the test can see.
struct Srv {
    server: Server,
    data: TempDir,
}

fn start() -> Srv {
    let data = tempfile::tempdir().unwrap();
    let mut cfg = ServerConfig::new(App::transcripts());
    cfg.data_dir = Some(data.path().to_owned());
    Srv {
        server: Server::start(cfg).expect("the reference server binds a loopback port"),
        data,
    }
}

/// One installation with Product (blob attribute `image`), logged in as `user`.
struct Device {
    client: SyncClient,
    dir: TempDir,
}

impl std::ops::Deref for Device {
    type Target = SyncClient;
    fn deref(&self) -> &SyncClient {
        &self.client
    }
}

impl Device {
    fn new(srv: &Srv, user: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = SyncConfig::new(&srv.server.sync_url());
        config.files_dir = Some(dir.path().join("files"));
        let client = SyncClient::open(&dir.path().join("app.db"), config).unwrap();
        let mut def = SourceDef::new("Product");
        def.blob_attrs = vec!["image".into()];
        client.define_source(&def).unwrap();
        client.login(user, PASSWORD).unwrap();
        Device { client, dir }
    }

    fn sync(&self) -> Result<(), CoreError> {
        self.sync_source("Product", &SyncOptions::default(), None).map(|_| ())
    }

    /// Writes `bytes` to a file of the app (outside the files directory).
    fn app_file(&self, name: &str, bytes: &[u8]) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p.to_str().unwrap().to_owned()
    }

    fn blob_files(&self) -> Vec<PathBuf> {
        let dir = self.store().files_dir().join("blobs");
        let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    fn by_name(&self, name: &str) -> tidesync_core::Object {
        let mut found = self
            .find_all("Product", &Query::filter(Cond::Eq("name".into(), name.into())))
            .unwrap();
        assert_eq!(found.len(), 1, "one object named {name}");
        found.remove(0)
    }
}

fn attrs(pairs: &[(&str, &str)]) -> Attrs {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

/// Deterministic bytes that are not all alike.
fn bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
        .collect()
}

fn assert_local_blob(d: &Device, value: &str, expected: &[u8]) {
    let p = Path::new(value);
    assert!(p.is_absolute(), "{value}");
    assert!(p.starts_with(d.store().files_dir().join("blobs")), "{value}");
    assert!(std::fs::read(p).unwrap() == expected, "{value}: bytes differ");
}

/// Alice creates a product with a blob and syncs; returns its server id and URL.
fn upload(srv: &Srv, alice: &Device, name: &str, blob: &[u8]) -> (String, String) {
    let file = alice.app_file(&format!("{name}.jpg"), blob);
    alice
        .create("Product", attrs(&[("name", name), ("image", &file)]))
        .unwrap();
    alice.sync().unwrap();
    let id = alice.by_name(name).id;
    assert!(!id.starts_with("tmp-"), "linked");
    let obj = srv
        .server
        .backend()
        .get("Product", None, &id)
        .unwrap()
        .expect("on the server");
    let url = obj.get("image").expect("image").to_owned();
    assert!(
        url.starts_with(&format!("{}/blobs/", srv.server.url().trim_end_matches('/'))),
        "{url}"
    );
    assert!(
        srv.server.backend().blob(&url).unwrap() == blob,
        "the server stored the bytes"
    );
    (id, url)
}

#[test]
fn blobs_go_up_as_multipart_and_come_down_to_another_device() {
    let srv = start();
    let alice = Device::new(&srv, "alice");
    alice.sync().unwrap();
    let big = bytes(8 * 1024 * 1024, 1);
    let small = bytes(1000, 2);
    let (big_id, _) = upload(&srv, &alice, "Big blob", &big);
    upload(&srv, &alice, "Small blob", &small);
    // The uploader keeps its own copies (the server's URL is in its client document).
    assert_local_blob(&alice, &alice.by_name("Big blob").attrs["image"], &big);
    assert_eq!(alice.blob_files().len(), 2);

    let bob = Device::new(&srv, "bob");
    bob.sync().unwrap();
    let got = bob.find("Product", &big_id).unwrap().unwrap();
    assert_local_blob(&bob, &got.attrs["image"], &big);
    assert_local_blob(&bob, &bob.by_name("Small blob").attrs["image"], &small);
    assert_eq!(bob.blob_files().len(), 2);
    assert_eq!(bob.store().pending_blob_downloads().unwrap(), 0);
    // Syncing again downloads nothing and keeps the files.
    bob.sync().unwrap();
    assert_eq!(bob.blob_files().len(), 2);
}

#[test]
fn a_download_cut_mid_blob_leaves_no_partial_file_and_the_next_sync_completes() {
    let srv = start();
    let alice = Device::new(&srv, "alice");
    let blob = bytes(512 * 1024, 3);
    let (id, url) = upload(&srv, &alice, "Cut blob", &blob);

    let bob = Device::new(&srv, "bob");
    srv.server
        .faults()
        .set(vec![FaultRule::once_after(Route::Blob, FaultKind::DropMidBody, 0)]);
    let r = bob.sync();
    assert!(matches!(r, Err(CoreError::Network { .. })), "{r:?}");
    assert_eq!(srv.server.faults().injected(), 1);
    // The page committed; the attribute still holds the URL, no file (partial or not) exists.
    assert_eq!(bob.find("Product", &id).unwrap().unwrap().attrs["image"], url);
    assert!(bob.blob_files().is_empty(), "{:?}", bob.blob_files());
    assert_eq!(bob.store().pending_blob_downloads().unwrap(), 1);

    srv.server.faults().clear();
    bob.sync().unwrap();
    assert_local_blob(&bob, &bob.find("Product", &id).unwrap().unwrap().attrs["image"], &blob);
    assert_eq!(bob.blob_files().len(), 1);
    assert_eq!(bob.store().pending_blob_downloads().unwrap(), 0);
}

#[test]
fn an_upload_whose_answer_is_cut_is_applied_once() {
    let srv = start();
    let alice = Device::new(&srv, "alice");
    let blob = bytes(300 * 1024, 4);
    let file = alice.app_file("once.png", &blob);
    alice
        .create("Product", attrs(&[("name", "Once blob"), ("image", &file)]))
        .unwrap();
    srv.server
        .faults()
        .set(vec![FaultRule::once_after(Route::Push, FaultKind::ApplyThenDrop, 0)]);
    assert!(matches!(alice.sync(), Err(CoreError::Network { .. })));
    srv.server.faults().clear();
    alice.sync().unwrap();
    let obj = alice.by_name("Once blob");
    assert!(!obj.id.starts_with("tmp-"));
    assert_local_blob(&alice, &obj.attrs["image"], &blob);
    let on_server: Vec<_> = srv
        .server
        .backend()
        .objects("Product", None)
        .unwrap()
        .into_iter()
        .filter(|(_, o)| o.get("name") == Some("Once blob"))
        .collect();
    assert_eq!(on_server.len(), 1, "created exactly once");
    let url = on_server[0].1.get("image").unwrap();
    assert!(srv.server.backend().blob(url).unwrap() == blob);
}

#[test]
fn replaced_and_deleted_blobs_are_removed_from_disk() {
    let srv = start();
    let alice = Device::new(&srv, "alice");
    let (id, _) = upload(&srv, &alice, "Changing blob", &bytes(2000, 5));
    let bob = Device::new(&srv, "bob");
    bob.sync().unwrap();
    let old_bob = bob.find("Product", &id).unwrap().unwrap().attrs["image"].clone();
    let old_alice = alice.find("Product", &id).unwrap().unwrap().attrs["image"].clone();

    // Alice replaces the image: her old file goes, the new one is uploaded.
    let new = bytes(3000, 6);
    let file = alice.app_file("new.jpg", &new);
    alice
        .store()
        .update("Product", &id, attrs(&[("image", &file)]))
        .unwrap();
    alice.sync().unwrap();
    assert!(!Path::new(&old_alice).exists(), "the replaced file is gone");
    assert_local_blob(
        &alice,
        &alice.find("Product", &id).unwrap().unwrap().attrs["image"],
        &new,
    );
    assert_eq!(alice.blob_files().len(), 1);

    // Bob gets the new image; his old file goes.
    bob.sync().unwrap();
    assert_local_blob(&bob, &bob.find("Product", &id).unwrap().unwrap().attrs["image"], &new);
    assert!(!Path::new(&old_bob).exists());
    assert_eq!(bob.blob_files().len(), 1);

    // Alice deletes the object: the file goes on both devices.
    assert!(alice.store().destroy("Product", &id).unwrap());
    alice.sync().unwrap();
    assert!(alice.blob_files().is_empty(), "{:?}", alice.blob_files());
    bob.sync().unwrap();
    assert!(bob.find("Product", &id).unwrap().is_none());
    assert!(bob.blob_files().is_empty(), "{:?}", bob.blob_files());
}

#[test]
fn an_orphan_file_is_removed_after_sync() {
    let srv = start();
    let alice = Device::new(&srv, "alice");
    let blob = bytes(100, 7);
    upload(&srv, &alice, "Kept blob", &blob);
    let dir = alice.store().files_dir().join("blobs");
    std::fs::write(dir.join("stray.bin"), b"nobody's").unwrap();
    std::fs::write(dir.join(".crashed-download.tmp"), b"half").unwrap();
    alice.sync().unwrap();
    assert_eq!(alice.blob_files().len(), 1);
    assert_local_blob(&alice, &alice.by_name("Kept blob").attrs["image"], &blob);
}

#[test]
fn a_checksum_mismatch_is_rejected_and_nothing_is_referenced() {
    let srv = start();
    let alice = Device::new(&srv, "alice");
    let blob = bytes(4096, 8);
    let (id, url) = upload(&srv, &alice, "Tampered blob", &blob);
    // Same length, other bytes: the server still announces the original checksum.
    let blob_id = url.rsplit('/').next().unwrap();
    std::fs::write(srv.data.path().join("blobs").join(blob_id), bytes(4096, 9)).unwrap();

    let bob = Device::new(&srv, "bob");
    let r = bob.sync();
    assert!(
        matches!(&r, Err(CoreError::Protocol { reason }) if reason.contains("checksum")),
        "{r:?}"
    );
    assert_eq!(bob.find("Product", &id).unwrap().unwrap().attrs["image"], url);
    assert!(bob.blob_files().is_empty(), "{:?}", bob.blob_files());
    assert_eq!(bob.store().pending_blob_downloads().unwrap(), 1);
}

#[test]
fn a_blob_value_naming_no_file_is_refused() {
    let srv = start();
    let alice = Device::new(&srv, "alice");
    let r = alice.create("Product", attrs(&[("name", "x"), ("image", "/nonexistent/file.jpg")]));
    assert!(matches!(r, Err(CoreError::InvalidInput { .. })), "{r:?}");
    assert!(alice.pending_changes("Product").unwrap().is_empty());
}

// ---------------------------------------------------------------------------------------------
// The server's routes, over raw HTTP

fn multipart(boundary: &str, parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, file, data) in parts {
        out.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"").as_bytes());
        if let Some(f) = file {
            out.extend_from_slice(format!("; filename=\"{f}\"\r\nContent-Type: application/octet-stream").as_bytes());
        }
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    out
}

fn logged_in(srv: &Srv) -> Client {
    let mut c = Client::new(Http::new(&srv.server.url()));
    c.login("alice", PASSWORD).unwrap();
    c.client_create().unwrap();
    c
}

fn post_multipart(c: &Client, body: &[u8]) -> tidesync_tests::Response {
    let cookie = c.cookie.clone().unwrap();
    c.http
        .send(
            "POST",
            "/application",
            &[
                ("Cookie", &cookie),
                ("Content-Type", "multipart/form-data; boundary=B0und"),
            ],
            Some(body),
        )
        .unwrap()
}

#[test]
fn the_server_stores_multipart_blobs_and_serves_them_with_length_range_and_checksum() {
    let srv = start();
    let c = logged_in(&srv);
    let cud = format!(
        r#"{{"source_name":"Product","client_id":"{}","create":{{"tmp-a-1":{{"name":"Raw blob","image":"x.bin"}}}},"blob_fields":["image"]}}"#,
        c.client_id.as_deref().unwrap()
    );
    let blob = bytes(70_000, 10);
    let resp = post_multipart(
        &c,
        &multipart(
            "B0und",
            &[("cud", None, cud.as_bytes()), ("image-tmp-a-1", Some("x.bin"), &blob)],
        ),
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    let objs = srv.server.backend().objects("Product", None).unwrap();
    let (_, obj) = objs
        .iter()
        .find(|(_, o)| o.get("name") == Some("Raw blob"))
        .expect("created");
    let url = obj.get("image").unwrap().to_owned();
    let path = url
        .strip_prefix(srv.server.url().trim_end_matches('/'))
        .unwrap()
        .to_owned();

    let whole = c.http.get(&path, &[]).unwrap();
    assert_eq!(whole.status, 200);
    assert!(whole.body == blob);
    assert_eq!(whole.header("content-length"), Some("70000"));
    use sha2::Digest as _;
    let sha: String = sha2::Sha256::digest(&blob).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(whole.header(tidesync_server::BLOB_SHA256_HEADER), Some(sha.as_str()));
    let part = c.http.get(&path, &[("Range", "bytes=10-19")]).unwrap();
    assert_eq!(part.status, 206);
    assert!(part.body == blob[10..20]);
    assert_eq!(part.header("content-range"), Some("bytes 10-19/70000"));
    assert_eq!(
        c.http
            .get("/blobs/00000000000000000000000000000000", &[])
            .unwrap()
            .status,
        404
    );
    assert_eq!(c.http.get("/blobs/..%2F..%2Fetc", &[]).unwrap().status, 404);
}

#[test]
fn a_bad_multipart_push_is_refused_with_400_and_changes_nothing() {
    let srv = start();
    let c = logged_in(&srv);
    let before = srv.server.backend().objects("Product", None).unwrap().len();
    let cud = format!(
        r#"{{"source_name":"Product","client_id":"{}","create":{{"t1":{{"name":"Bad","image":"x"}}}},"blob_fields":["image"]}}"#,
        c.client_id.as_deref().unwrap()
    );
    let bodies: Vec<Vec<u8>> = vec![
        b"not multipart at all".to_vec(),
        multipart("B0und", &[("image-t1", Some("f"), b"1")]),
        multipart(
            "B0und",
            &[("cud", None, cud.as_bytes()), ("image-nope", Some("f"), b"1")],
        ),
        multipart("B0und", &[("cud", None, cud.as_bytes()), ("other-t1", Some("f"), b"1")]),
        format!("--B0und\r\nContent-Disposition: form-data; name=\"cud\"\r\n\r\n{cud}").into_bytes(),
    ];
    for (i, b) in bodies.iter().enumerate() {
        let r = post_multipart(&c, b);
        assert_eq!(r.status, 400, "body {i}: {}", r.text());
    }
    assert_eq!(srv.server.backend().objects("Product", None).unwrap().len(), before);
    let stored = std::fs::read_dir(srv.data.path().join("blobs"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(stored, 0, "no blob stored");
}

#[test]
fn a_blob_gone_from_the_server_is_given_up_without_failing_the_sync() {
    let srv = start();
    let alice = Device::new(&srv, "alice");
    let (id, url) = upload(&srv, &alice, "Gone blob", &bytes(100, 11));
    let blob_id = url.rsplit('/').next().unwrap();
    std::fs::remove_file(srv.data.path().join("blobs").join(blob_id)).unwrap();

    let bob = Device::new(&srv, "bob");
    bob.sync().unwrap();
    assert_eq!(bob.find("Product", &id).unwrap().unwrap().attrs["image"], url);
    assert!(bob.blob_files().is_empty());
    bob.sync().unwrap();
}

#[test]
fn a_backlog_larger_than_the_servers_body_limit_goes_in_several_pushes_of_one_sync() {
    let srv = start();
    let alice = Device::new(&srv, "alice");
    // 4 x 5 MB: one request would exceed the server's 16 MiB body limit.
    let blobs: Vec<Vec<u8>> = (0..4).map(|i| bytes(5 * 1024 * 1024, 20 + i)).collect();
    for (i, b) in blobs.iter().enumerate() {
        let file = alice.app_file(&format!("big{i}.bin"), b);
        alice
            .create("Product", attrs(&[("name", &format!("Backlog {i}")), ("image", &file)]))
            .unwrap();
    }
    alice.sync().unwrap();
    assert!(alice.pending_changes("Product").unwrap().is_empty());
    for (i, b) in blobs.iter().enumerate() {
        let id = alice.by_name(&format!("Backlog {i}")).id;
        assert!(!id.starts_with("tmp-"), "linked");
        let obj = srv.server.backend().get("Product", None, &id).unwrap().unwrap();
        assert!(srv.server.backend().blob(obj.get("image").unwrap()).unwrap() == *b);
    }
}

/// The bulk `blobs` step: a client that starts from the bulk file gets the file's blob values as
/// URLs; they are recorded in the import's transaction and downloaded by the same sync.
#[test]
fn a_bulk_first_sync_downloads_the_blobs_of_the_bulk_file() {
    use tidesync_core::{BulkSyncState, Partition, SyncType};
    let srv = start();
    let alice = Device::new(&srv, "alice");
    alice.sync().unwrap();
    let blob = bytes(300_000, 7);
    let (id, _) = upload(&srv, &alice, "Bulk blob", &blob);

    let dir = tempfile::tempdir().unwrap();
    let mut config = SyncConfig::new(&srv.server.sync_url());
    config.files_dir = Some(dir.path().join("files"));
    let bob = SyncClient::open(&dir.path().join("app.db"), config).unwrap();
    let mut def = SourceDef::new("Product")
        .partition(Partition::App)
        .sync_type(SyncType::Bulk);
    def.blob_attrs = vec!["image".into()];
    bob.define_source(&def).unwrap();
    bob.login("bob", PASSWORD).unwrap();
    let report = bob.sync_all(&SyncOptions::default(), None).unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(
        bob.bulk_sync_state().unwrap(),
        BulkSyncState::Done,
        "started from the bulk file"
    );
    let got = bob.find("Product", &id).unwrap().expect("imported");
    let path = Path::new(&got.attrs["image"]);
    assert!(path.starts_with(bob.store().files_dir().join("blobs")), "{path:?}");
    assert!(
        std::fs::read(path).unwrap() == blob,
        "the bulk file's blob was downloaded"
    );
    assert_eq!(bob.store().pending_blob_downloads().unwrap(), 0);
}
