//! End to end: the public `SyncClient` API of `tidesync-core` against the reference server with the
//! transcripts' application (Product: app partition, 300 objects, create refused for name "error",
//! update refused for name "conflict", delete refused for id 13; Customer: user partition, 120
//! objects per user). Every test starts its own server and client database; nothing sleeps.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use tempfile::TempDir;
use tidesync_core::store::queue::Change;
use tidesync_core::{
    Attrs, CreateErrorAction, DeleteErrorAction, Error as CoreError, PageEvent, Query, SourceDef, SourceReport,
    SyncClient, SyncConfig, SyncErrorRecord, SyncObserver, SyncOptions, UpdateErrorAction,
};
use tidesync_server::{App, FaultKind, FaultRule, Obj, Route, Server, ServerConfig};
use tidesync_tests::{Store, store_diff, store_of};

const PASSWORD: &str = "password";
const PRODUCTS: usize = 300;
const CUSTOMERS: usize = 120;

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

fn server_with(config: ServerConfig) -> Server {
    Server::start(config).expect("the reference server binds a loopback port")
}

fn start_server() -> Server {
    server_with(ServerConfig::new(App::transcripts()))
}

/// A transcripts server with a fixed cookie secret, bound to `addr` (`None`: a free port).
fn server_at(addr: Option<std::net::SocketAddr>, secret: &[u8]) -> Server {
    let mut cfg = ServerConfig::new(App::transcripts());
    if let Some(a) = addr {
        cfg.addr = a;
    }
    cfg.secret = Some(secret.to_vec());
    server_with(cfg)
}

/// One installation: its database directory (kept alive) and its client.
struct Device {
    client: SyncClient,
    _dir: TempDir,
}

impl std::ops::Deref for Device {
    type Target = SyncClient;
    fn deref(&self) -> &SyncClient {
        &self.client
    }
}

/// A client database with Product (priority 1) and Customer (priority 2), not logged in.
fn device_unlogged(url: &str, page_size: u32) -> Device {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut config = SyncConfig::new(url);
    config.page_size = page_size;
    let client = SyncClient::open(&dir.path().join("client.db"), config).expect("the client database opens");
    client
        .define_source(&SourceDef::new("Product").priority(1))
        .expect("define Product");
    client
        .define_source(&SourceDef::new("Customer").priority(2))
        .expect("define Customer");
    Device { client, _dir: dir }
}

/// A client of `server`'s sync URL logged in as `user`.
fn device_for(server: &Server, user: &str, page_size: u32) -> Device {
    let d = device_unlogged(&server.sync_url(), page_size);
    d.login(user, PASSWORD).expect("login with the right password succeeds");
    d
}

fn alice(server: &Server) -> Device {
    device_for(server, "alice", 2000)
}

fn sync_all_ok(c: &SyncClient) {
    let report = c
        .sync_all(&SyncOptions::default(), None)
        .expect("sync_all reads its sources");
    assert!(report.ok(), "every source syncs: {report:?}");
}

fn sync_product(c: &SyncClient) -> Result<SourceReport, CoreError> {
    c.sync_source("Product", &SyncOptions::default(), None)
}

fn sync_product_ok(c: &SyncClient) -> SourceReport {
    sync_product(c).expect("the Product sync succeeds")
}

fn local(c: &SyncClient, source: &str) -> Store {
    c.find_all(source, &Query::all())
        .expect("find_all")
        .into_iter()
        .map(|o| (o.id, o.attrs))
        .collect()
}

fn remote(server: &Server, source: &str, user: Option<&str>) -> Store {
    store_of(
        server
            .backend()
            .objects(source, user)
            .expect("the backend lists the source"),
    )
}

fn assert_same(expected: &Store, actual: &Store, what: &str) {
    assert!(expected == actual, "{what}: {}", store_diff(expected, actual));
}

fn assert_product_in_sync(server: &Server, c: &SyncClient) {
    assert_same(
        &remote(server, "Product", None),
        &local(c, "Product"),
        "local Product vs backend",
    );
}

fn attrs(pairs: &[(&str, &str)]) -> Attrs {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn obj(pairs: &[(&str, &str)]) -> Obj {
    Obj::from_pairs(pairs.iter().copied())
}

fn new_product(name: &str) -> Attrs {
    attrs(&[
        ("name", name),
        ("brand", "Acme"),
        ("price", "1.99"),
        ("quantity", "3"),
        ("sku", "SKU-E2E"),
    ])
}

/// Backend objects of `source` whose `name` is `name`.
fn backend_named(server: &Server, source: &str, user: Option<&str>, attr: &str, value: &str) -> Vec<(String, Obj)> {
    server
        .backend()
        .objects(source, user)
        .expect("the backend lists the source")
        .into_iter()
        .filter(|(_, o)| o.get(attr) == Some(value))
        .collect()
}

fn backend_attrs(server: &Server, source: &str, user: Option<&str>, id: &str) -> Option<Attrs> {
    server
        .backend()
        .get(source, user, id)
        .expect("backend get")
        .map(|o| o.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect())
}

fn pending(c: &SyncClient, source: &str) -> Vec<Change> {
    c.pending_changes(source).expect("pending_changes")
}

fn errors(c: &SyncClient, source: &str) -> Vec<SyncErrorRecord> {
    c.sync_errors(source).expect("sync_errors")
}

fn error_of<'a>(errs: &'a [SyncErrorRecord], kind: &str, object: &str) -> &'a SyncErrorRecord {
    errs.iter()
        .find(|e| e.kind == kind && e.object.as_deref() == Some(object))
        .unwrap_or_else(|| panic!("a {kind} error for {object} in {errs:?}"))
}

/// One applied page as the observer saw it.
#[derive(Debug, Clone)]
struct PageRecord {
    source: String,
    page_objects: usize,
    inserted: usize,
    deleted: usize,
    updated_ids: Vec<String>,
    deleted_ids: Vec<String>,
}

#[derive(Default)]
struct Recorder {
    pages: Mutex<Vec<PageRecord>>,
}

impl SyncObserver for Recorder {
    fn on_page(&self, e: &PageEvent<'_>) {
        self.pages.lock().unwrap().push(PageRecord {
            source: e.source.to_owned(),
            page_objects: e.page_objects,
            inserted: e.stats.inserted,
            deleted: e.stats.deleted,
            updated_ids: e.stats.updated_ids.clone(),
            deleted_ids: e.stats.deleted_ids.clone(),
        });
    }
}

impl Recorder {
    /// (page objects, inserted, deleted, updated ids sorted, deleted ids sorted) over a source.
    fn totals(&self, source: &str) -> (usize, usize, usize, Vec<String>, Vec<String>) {
        let pages = self.pages.lock().unwrap();
        let mut t = (0, 0, 0, Vec::new(), Vec::new());
        for p in pages.iter().filter(|p| p.source == source) {
            t.0 += p.page_objects;
            t.1 += p.inserted;
            t.2 += p.deleted;
            t.3.extend(p.updated_ids.iter().cloned());
            t.4.extend(p.deleted_ids.iter().cloned());
        }
        t.3.sort();
        t.4.sort();
        t
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Fresh sync
// ---------------------------------------------------------------------------------------------

#[test]
fn sync_fresh_equals_server_dataset() {
    let server = start_server();
    let c = alice(&server);
    sync_all_ok(&c);
    let products = remote(&server, "Product", None);
    let customers = remote(&server, "Customer", Some("alice"));
    assert_eq!(products.len(), PRODUCTS);
    assert_eq!(customers.len(), CUSTOMERS);
    assert_same(&products, &local(&c, "Product"), "Product");
    assert_same(&customers, &local(&c, "Customer"), "Customer");
    assert!(pending(&c, "Product").is_empty() && pending(&c, "Customer").is_empty());
    assert!(errors(&c, "Product").is_empty() && errors(&c, "Customer").is_empty());
}

#[test]
fn sync_page_size_does_not_change_the_result() {
    let server = start_server();
    let products = remote(&server, "Product", None);
    let customers = remote(&server, "Customer", Some("alice"));
    for page_size in [1u32, 7, 50, 2000] {
        let c = device_for(&server, "alice", page_size);
        let report = c
            .sync_all(&SyncOptions::default(), None)
            .expect("sync_all reads its sources");
        assert!(report.ok(), "page size {page_size}: {report:?}");
        for (name, r) in &report.sources {
            let r = r.as_ref().unwrap();
            let expected = if name == "Product" { PRODUCTS } else { CUSTOMERS };
            assert_eq!(
                r.objects, expected,
                "page size {page_size}: {name} objects transferred once"
            );
            assert_eq!(r.local_objects, expected as u64, "page size {page_size}: {name}");
        }
        assert_same(
            &products,
            &local(&c, "Product"),
            &format!("Product, page size {page_size}"),
        );
        assert_same(
            &customers,
            &local(&c, "Customer"),
            &format!("Customer, page size {page_size}"),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Backend changes by another user
// ---------------------------------------------------------------------------------------------

#[test]
fn sync_backend_changes_arrive_as_attribute_diffs() {
    let server = start_server();
    let c = alice(&server);
    sync_all_ok(&c);
    let before_5 = c.find("Product", "5").unwrap().expect("Product 5 synced").attrs;

    let backend = server.backend();
    backend
        .update("Product", None, "5", obj(&[("price", "999.99")]))
        .unwrap();
    backend
        .insert(
            "Product",
            None,
            "301",
            obj(&[
                ("name", "Product 301"),
                ("brand", "Nokia"),
                ("price", "311.01"),
                ("quantity", "7"),
                ("sku", "SKU-00301"),
            ]),
        )
        .unwrap();
    backend.delete("Product", None, "7").unwrap();
    backend
        .update("Customer", Some("alice"), "3", obj(&[("city", "Reykjavik")]))
        .unwrap();

    let rec = Arc::new(Recorder::default());
    let report = c
        .sync_all(&SyncOptions::default(), Some(rec.clone() as Arc<dyn SyncObserver>))
        .unwrap();
    assert!(report.ok(), "{report:?}");

    assert_product_in_sync(&server, &c);
    assert_same(
        &remote(&server, "Customer", Some("alice")),
        &local(&c, "Customer"),
        "Customer",
    );

    let mut expected_5 = before_5;
    expected_5.insert("price".into(), "999.99".into());
    assert_eq!(c.find("Product", "5").unwrap().unwrap().attrs, expected_5);
    assert!(c.find("Product", "7").unwrap().is_none());
    assert_eq!(c.count("Product", None).unwrap(), PRODUCTS as u64);

    // Only the changed objects were applied: 5 (old price out, new price in), 301 in, 7 out.
    let (objects, inserted, deleted, updated, gone) = rec.totals("Product");
    assert_eq!(
        (inserted, deleted),
        (2, 2),
        "Product pages: {:?}",
        rec.pages.lock().unwrap()
    );
    assert_eq!(objects, 4, "Product page objects");
    assert_eq!(updated, ["301", "5"]);
    assert_eq!(gone, ["7"]);
    let (objects, inserted, deleted, updated, gone) = rec.totals("Customer");
    assert_eq!((objects, inserted, deleted), (2, 1, 1), "Customer: only the city of 3");
    assert_eq!(updated, ["3"]);
    assert!(gone.is_empty());
}

// ---------------------------------------------------------------------------------------------
// 3. Local create → link
// ---------------------------------------------------------------------------------------------

#[test]
fn sync_local_create_is_linked_to_the_server_id() {
    let server = start_server();
    let c = alice(&server);
    sync_product_ok(&c);
    let created = c.create("Product", new_product("Widget e2e")).unwrap();
    assert!(created.id.starts_with("tmp-"), "a temporary id: {}", created.id);

    sync_product_ok(&c);

    assert!(
        c.find("Product", &created.id).unwrap().is_none(),
        "the temporary id is gone"
    );
    let on_server = backend_named(&server, "Product", None, "name", "Widget e2e");
    assert_eq!(on_server.len(), 1, "the backend holds it exactly once: {on_server:?}");
    let server_id = &on_server[0].0;
    assert!(!server_id.starts_with("tmp-"));
    let linked = c
        .find("Product", server_id)
        .unwrap()
        .expect("the object under its server id");
    assert_eq!(linked.attrs, created.attrs);
    assert_eq!(
        backend_attrs(&server, "Product", None, server_id).unwrap(),
        created.attrs
    );
    assert!(pending(&c, "Product").is_empty(), "{:?}", pending(&c, "Product"));
    assert_eq!(server.backend().applied().creates, 1);
    assert_product_in_sync(&server, &c);
}

// ---------------------------------------------------------------------------------------------
// 4. Update and delete round trips
// ---------------------------------------------------------------------------------------------

#[test]
fn sync_local_update_round_trip() {
    let server = start_server();
    let c = alice(&server);
    sync_product_ok(&c);
    c.store().update("Product", "5", attrs(&[("price", "1.23")])).unwrap();

    sync_product_ok(&c);
    assert_eq!(
        server
            .backend()
            .get("Product", None, "5")
            .unwrap()
            .unwrap()
            .get("price"),
        Some("1.23")
    );
    assert_eq!(c.find("Product", "5").unwrap().unwrap().attrs["price"], "1.23");
    assert_product_in_sync(&server, &c);

    // The echo settled it: nothing flips, nothing is sent again.
    sync_product_ok(&c);
    assert!(pending(&c, "Product").is_empty(), "{:?}", pending(&c, "Product"));
    assert_eq!(c.find("Product", "5").unwrap().unwrap().attrs["price"], "1.23");
    assert_product_in_sync(&server, &c);
    assert_eq!(server.backend().applied().updates, 1);
    assert!(errors(&c, "Product").is_empty());
}

#[test]
fn sync_local_delete_round_trip() {
    let server = start_server();
    let c = alice(&server);
    sync_product_ok(&c);
    assert!(c.store().destroy("Product", "9").unwrap());

    sync_product_ok(&c);
    assert!(server.backend().get("Product", None, "9").unwrap().is_none());
    assert!(c.find("Product", "9").unwrap().is_none());
    assert!(pending(&c, "Product").is_empty(), "{:?}", pending(&c, "Product"));
    assert_product_in_sync(&server, &c);

    sync_product_ok(&c);
    assert!(pending(&c, "Product").is_empty());
    assert!(errors(&c, "Product").is_empty(), "{:?}", errors(&c, "Product"));
    assert_eq!(server.backend().applied().deletes, 1);
    assert_product_in_sync(&server, &c);
}

// ---------------------------------------------------------------------------------------------
// 5. Refused create
// ---------------------------------------------------------------------------------------------

/// Creates a Product named "error" and syncs; returns its temporary id.
fn refused_create(server: &Server, c: &SyncClient) -> String {
    sync_product_ok(c);
    let tmp = c.create("Product", new_product("error")).unwrap().id;
    sync_product_ok(c);
    let errs = errors(c, "Product");
    let e = error_of(&errs, "create", &tmp);
    assert_eq!(e.message, "Product name 'error' is not allowed");
    assert_eq!(e.attrs.get("name").map(String::as_str), Some("error"));
    assert!(backend_named(server, "Product", None, "name", "error").is_empty());
    tmp
}

#[test]
fn sync_refused_create_reports_the_error() {
    let server = start_server();
    let c = alice(&server);
    let tmp = refused_create(&server, &c);
    assert!(
        c.find("Product", &tmp).unwrap().is_some(),
        "kept locally until the app decides"
    );
    assert_eq!(server.backend().applied().creates, 0);
}

#[test]
fn sync_refused_create_delete_action_drops_it() {
    let server = start_server();
    let c = alice(&server);
    let tmp = refused_create(&server, &c);
    c.on_sync_create_error("Product", std::slice::from_ref(&tmp), CreateErrorAction::Delete)
        .unwrap();
    assert!(c.find("Product", &tmp).unwrap().is_none());
    assert!(pending(&c, "Product").is_empty(), "{:?}", pending(&c, "Product"));
    assert!(errors(&c, "Product").is_empty());

    sync_product_ok(&c);
    assert!(backend_named(&server, "Product", None, "name", "error").is_empty());
    assert_eq!(server.backend().count("Product", None).unwrap(), PRODUCTS);
    assert_eq!(server.backend().applied().creates, 0);
    assert!(errors(&c, "Product").is_empty());
    assert_product_in_sync(&server, &c);
}

#[test]
fn sync_refused_create_recreate_after_fix_creates_once() {
    let server = start_server();
    let c = alice(&server);
    let tmp = refused_create(&server, &c);
    c.store()
        .update("Product", &tmp, attrs(&[("name", "Fixed e2e")]))
        .unwrap();
    c.on_sync_create_error("Product", std::slice::from_ref(&tmp), CreateErrorAction::Recreate)
        .unwrap();
    assert!(errors(&c, "Product").is_empty());

    sync_product_ok(&c);
    let on_server = backend_named(&server, "Product", None, "name", "Fixed e2e");
    assert_eq!(on_server.len(), 1, "created exactly once: {on_server:?}");
    assert!(backend_named(&server, "Product", None, "name", "error").is_empty());
    assert!(c.find("Product", &tmp).unwrap().is_none(), "linked to the server id");
    assert_eq!(
        c.find("Product", &on_server[0].0).unwrap().expect("linked").attrs["name"],
        "Fixed e2e"
    );
    assert!(errors(&c, "Product").is_empty(), "{:?}", errors(&c, "Product"));

    sync_product_ok(&c);
    assert!(pending(&c, "Product").is_empty(), "{:?}", pending(&c, "Product"));
    assert_eq!(backend_named(&server, "Product", None, "name", "Fixed e2e").len(), 1);
    assert_eq!(server.backend().applied().creates, 1);
    assert_product_in_sync(&server, &c);
}

// ---------------------------------------------------------------------------------------------
// 6. Refused update
// ---------------------------------------------------------------------------------------------

/// Renames Product 20 to "conflict" and syncs; checks the error and its rollback data.
fn refused_update(server: &Server, c: &SyncClient) {
    sync_product_ok(c);
    c.store()
        .update("Product", "20", attrs(&[("name", "conflict")]))
        .unwrap();
    sync_product_ok(c);
    let errs = errors(c, "Product");
    let e = error_of(&errs, "update", "20");
    assert_eq!(e.message, "Update conflict: name 'conflict' rejected");
    assert_eq!(e.attrs, attrs(&[("name", "conflict")]));
    let server_20 = backend_attrs(server, "Product", None, "20").unwrap();
    assert_eq!(server_20["name"], "Product 20");
    assert_eq!(
        e.rollback.as_ref(),
        Some(&server_20),
        "the rollback data is the server's copy"
    );
}

#[test]
fn sync_refused_update_rollback_restores_the_server_copy() {
    let server = start_server();
    let c = alice(&server);
    refused_update(&server, &c);
    c.on_sync_update_error("Product", &["20".to_owned()], UpdateErrorAction::Rollback)
        .unwrap();
    assert_eq!(
        Some(c.find("Product", "20").unwrap().unwrap().attrs),
        backend_attrs(&server, "Product", None, "20")
    );
    assert!(errors(&c, "Product").is_empty());
    assert!(pending(&c, "Product").is_empty(), "{:?}", pending(&c, "Product"));

    sync_product_ok(&c);
    assert!(errors(&c, "Product").is_empty());
    assert_eq!(server.backend().applied().updates, 0);
    assert_product_in_sync(&server, &c);
}

#[test]
fn sync_refused_update_retry_is_refused_again() {
    let server = start_server();
    let c = alice(&server);
    refused_update(&server, &c);
    c.on_sync_update_error("Product", &["20".to_owned()], UpdateErrorAction::Retry)
        .unwrap();
    let queued = pending(&c, "Product");
    assert!(
        queued.iter().any(|ch| ch.object == "20"
            && ch.op == "update"
            && ch.attrs.get("name").map(String::as_str) == Some("conflict")),
        "the refused values are queued again: {queued:?}"
    );

    sync_product_ok(&c);
    let errs = errors(&c, "Product");
    assert_eq!(
        error_of(&errs, "update", "20").message,
        "Update conflict: name 'conflict' rejected"
    );
    assert_eq!(
        server
            .backend()
            .get("Product", None, "20")
            .unwrap()
            .unwrap()
            .get("name"),
        Some("Product 20")
    );
    assert_eq!(server.backend().applied().updates, 0);
}

#[test]
fn sync_refused_update_retry_after_newer_edit_sends_the_newer_value() {
    let server = start_server();
    let c = alice(&server);
    refused_update(&server, &c);
    c.store()
        .update("Product", "20", attrs(&[("name", "Renamed 20")]))
        .unwrap();
    c.on_sync_update_error("Product", &["20".to_owned()], UpdateErrorAction::Retry)
        .unwrap();
    assert_eq!(c.find("Product", "20").unwrap().unwrap().attrs["name"], "Renamed 20");

    sync_product_ok(&c);
    assert_eq!(
        server
            .backend()
            .get("Product", None, "20")
            .unwrap()
            .unwrap()
            .get("name"),
        Some("Renamed 20")
    );
    assert!(errors(&c, "Product").is_empty(), "{:?}", errors(&c, "Product"));
    assert_eq!(c.find("Product", "20").unwrap().unwrap().attrs["name"], "Renamed 20");
    assert_product_in_sync(&server, &c);

    sync_product_ok(&c);
    assert!(pending(&c, "Product").is_empty(), "{:?}", pending(&c, "Product"));
    assert_eq!(server.backend().applied().updates, 1);
    assert_product_in_sync(&server, &c);
}

// ---------------------------------------------------------------------------------------------
// 7. Refused delete
// ---------------------------------------------------------------------------------------------

/// Deletes Product 13 locally and syncs; checks the error.
fn refused_delete(server: &Server, c: &SyncClient) {
    sync_product_ok(c);
    assert!(c.store().destroy("Product", "13").unwrap());
    sync_product_ok(c);
    let errs = errors(c, "Product");
    let e = error_of(&errs, "delete", "13");
    assert_eq!(e.message, "Product 13 cannot be deleted");
    assert!(server.backend().get("Product", None, "13").unwrap().is_some());
}

#[test]
fn sync_refused_delete_retry_is_refused_again() {
    let server = start_server();
    let c = alice(&server);
    refused_delete(&server, &c);
    c.on_sync_delete_error("Product", &["13".to_owned()], DeleteErrorAction::Retry)
        .unwrap();
    let queued = pending(&c, "Product");
    assert!(
        queued.iter().any(|ch| ch.object == "13" && ch.op == "delete"),
        "the delete is queued again: {queued:?}"
    );
    assert!(c.find("Product", "13").unwrap().is_none(), "still deleted locally");

    sync_product_ok(&c);
    let errs = errors(&c, "Product");
    assert_eq!(error_of(&errs, "delete", "13").message, "Product 13 cannot be deleted");
    assert!(server.backend().get("Product", None, "13").unwrap().is_some());
    assert_eq!(server.backend().applied().deletes, 0);
}

#[test]
fn sync_refused_delete_restore_brings_the_object_back() {
    let server = start_server();
    let c = alice(&server);
    refused_delete(&server, &c);
    c.on_sync_delete_error("Product", &["13".to_owned()], DeleteErrorAction::Restore)
        .unwrap();
    assert_eq!(
        Some(c.find("Product", "13").unwrap().expect("restored").attrs),
        backend_attrs(&server, "Product", None, "13")
    );
    assert!(errors(&c, "Product").is_empty());
    assert!(pending(&c, "Product").is_empty(), "{:?}", pending(&c, "Product"));

    sync_product_ok(&c);
    assert!(errors(&c, "Product").is_empty());
    assert_product_in_sync(&server, &c);
}

// ---------------------------------------------------------------------------------------------
// 8. Unknown client
// ---------------------------------------------------------------------------------------------

#[test]
fn sync_unknown_client_recovers_and_pushes_pending_changes_once() {
    const SECRET: &[u8] = b"sync-e2e-secret";
    let first = server_at(None, SECRET);
    let addr = first.addr();
    let c = alice(&first);
    sync_all_ok(&c);
    let created = c.create("Product", new_product("Offline e2e")).unwrap();
    c.store().update("Product", "5", attrs(&[("price", "55.55")])).unwrap();
    first.stop();

    // Same address and cookie secret, fresh state: the session is valid, the client id is not.
    let server = server_at(Some(addr), SECRET);
    sync_all_ok(&c);

    assert!(
        c.find("Product", &created.id).unwrap().is_none(),
        "the create was linked"
    );
    let on_server = backend_named(&server, "Product", None, "name", "Offline e2e");
    assert_eq!(on_server.len(), 1, "created exactly once: {on_server:?}");
    assert_eq!(
        server
            .backend()
            .get("Product", None, "5")
            .unwrap()
            .unwrap()
            .get("price"),
        Some("55.55")
    );
    assert_product_in_sync(&server, &c);
    assert_same(
        &remote(&server, "Customer", Some("alice")),
        &local(&c, "Customer"),
        "Customer",
    );

    sync_all_ok(&c);
    assert!(pending(&c, "Product").is_empty(), "{:?}", pending(&c, "Product"));
    let applied = server.backend().applied();
    assert_eq!((applied.creates, applied.updates), (1, 1), "{applied:?}");
    assert_product_in_sync(&server, &c);
}

// ---------------------------------------------------------------------------------------------
// 9. 401
// ---------------------------------------------------------------------------------------------

#[test]
fn sync_wrong_password_is_unauthorized() {
    let server = start_server();
    let c = device_unlogged(&server.sync_url(), 2000);
    let r = c.login("alice", "wrong");
    assert!(matches!(r, Err(CoreError::Unauthorized { .. })), "{r:?}");
    assert!(!c.is_logged_in().unwrap());
    let r = sync_product(&c);
    assert!(matches!(r, Err(CoreError::Unauthorized { .. })), "{r:?}");
}

#[test]
fn sync_rejected_session_logs_out_and_keeps_pending_changes() {
    let first = server_at(None, b"first-secret");
    let addr = first.addr();
    let c = alice(&first);
    sync_product_ok(&c);
    let created = c.create("Product", new_product("Kept e2e")).unwrap();
    c.store().update("Product", "5", attrs(&[("price", "5.55")])).unwrap();
    let before = pending(&c, "Product");
    first.stop();

    let _server = server_at(Some(addr), b"another-secret");
    let r = sync_product(&c);
    assert!(matches!(r, Err(CoreError::Unauthorized { .. })), "{r:?}");
    assert!(!c.is_logged_in().unwrap(), "a refused session logs out");
    let after = pending(&c, "Product");
    assert_eq!(after.len(), before.len(), "pending changes kept: {after:?}");
    assert!(after.iter().all(|ch| ch.state == "pending"), "{after:?}");
    assert!(after.iter().any(|ch| ch.object == created.id && ch.op == "create"));
    assert!(after.iter().any(|ch| ch.object == "5" && ch.op == "update"));
    assert!(c.find("Product", &created.id).unwrap().is_some());
}

// ---------------------------------------------------------------------------------------------
// 10–11. Interrupted pulls
// ---------------------------------------------------------------------------------------------

/// Pulls Product at 50 per page with `kind` injected into the query of page `k + 1` (pages 1..=k
/// commit); then pulls again without faults.
fn interrupted_pull(kind: FaultKind, k: u32, expect: fn(&CoreError) -> bool) {
    const PAGE: u32 = 50;
    let server = start_server();
    let c = device_for(&server, "alice", PAGE);
    server.faults().set(vec![FaultRule::once_after(Route::Query, kind, k)]);
    let r = sync_product(&c);
    match &r {
        Err(e) if expect(e) => {}
        other => panic!("{kind:?} on page {}: unexpected {other:?}", k + 1),
    }
    assert_eq!(server.faults().injected(), 1);
    let committed = (k * PAGE) as u64;
    assert_eq!(
        c.count("Product", None).unwrap(),
        committed,
        "pages before the failing one are committed, the failing one is not"
    );
    let products = remote(&server, "Product", None);
    let partial = local(&c, "Product");
    assert!(
        partial.iter().all(|(id, a)| products.get(id) == Some(a)),
        "what was committed is the server's data"
    );

    server.faults().clear();
    let report = sync_product_ok(&c);
    assert_eq!(c.count("Product", None).unwrap(), PRODUCTS as u64);
    assert_product_in_sync(&server, &c);
    assert_eq!(
        report.objects,
        PRODUCTS - committed as usize,
        "the resumed sync resends only what was not committed"
    );
}

#[test]
fn sync_dropped_connection_mid_pull_resumes_without_gap() {
    interrupted_pull(FaultKind::DropMidBody, 3, |e| matches!(e, CoreError::Network { .. }));
}

#[test]
fn sync_truncated_page_is_a_protocol_error_and_resumes() {
    interrupted_pull(FaultKind::TruncatedJson, 2, |e| matches!(e, CoreError::Protocol { .. }));
}

#[test]
fn sync_malformed_page_is_a_protocol_error_and_resumes() {
    interrupted_pull(FaultKind::MalformedJson, 4, |e| matches!(e, CoreError::Protocol { .. }));
}

// ---------------------------------------------------------------------------------------------
// 12. Partitions
// ---------------------------------------------------------------------------------------------

#[test]
fn sync_users_see_only_their_own_customers() {
    let server = start_server();
    server
        .backend()
        .update("Customer", Some("bob"), "1", obj(&[("city", "Bobtown")]))
        .unwrap();
    let a = device_for(&server, "alice", 2000);
    let b = device_for(&server, "bob", 2000);
    sync_all_ok(&a);
    sync_all_ok(&b);
    assert_same(
        &remote(&server, "Customer", Some("alice")),
        &local(&a, "Customer"),
        "alice",
    );
    assert_same(&remote(&server, "Customer", Some("bob")), &local(&b, "Customer"), "bob");
    assert_eq!(local(&a, "Customer").len(), CUSTOMERS);
    assert_eq!(local(&b, "Customer")["1"]["city"], "Bobtown");
    assert_ne!(local(&a, "Customer")["1"]["city"], "Bobtown");

    let mine = a
        .create(
            "Customer",
            attrs(&[
                ("first", "Alice"),
                ("last", "Only"),
                ("city", "Alicetown"),
                ("phone", "555-9999"),
            ]),
        )
        .unwrap();
    sync_all_ok(&a);
    sync_all_ok(&b);

    assert_eq!(
        backend_named(&server, "Customer", Some("alice"), "city", "Alicetown").len(),
        1
    );
    assert!(backend_named(&server, "Customer", Some("bob"), "city", "Alicetown").is_empty());
    assert!(
        local(&b, "Customer")
            .values()
            .all(|o| o.get("city").map(String::as_str) != Some("Alicetown"))
    );
    assert!(
        a.find("Customer", &mine.id).unwrap().is_none(),
        "alice's create was linked"
    );
    assert_same(
        &remote(&server, "Customer", Some("alice")),
        &local(&a, "Customer"),
        "alice",
    );
    assert_same(&remote(&server, "Customer", Some("bob")), &local(&b, "Customer"), "bob");
    assert_eq!(local(&a, "Customer").len(), CUSTOMERS + 1);
    assert_eq!(local(&b, "Customer").len(), CUSTOMERS);
}

// ---------------------------------------------------------------------------------------------
// 13. Push with unknown outcome
// ---------------------------------------------------------------------------------------------

#[test]
fn sync_push_with_lost_answer_is_applied_exactly_once() {
    let server = start_server();
    let c = alice(&server);
    sync_product_ok(&c);
    c.create("Product", new_product("Once e2e")).unwrap();
    c.store().update("Product", "5", attrs(&[("price", "77.77")])).unwrap();
    assert!(c.store().destroy("Product", "9").unwrap());

    server
        .faults()
        .set(vec![FaultRule::once_after(Route::Push, FaultKind::ApplyThenDrop, 0)]);
    let r = sync_product(&c);
    assert!(matches!(r, Err(CoreError::Network { .. })), "{r:?}");
    server.faults().clear();

    sync_product_ok(&c);
    let once = backend_named(&server, "Product", None, "name", "Once e2e");
    assert_eq!(once.len(), 1, "created exactly once: {once:?}");
    assert_eq!(
        server
            .backend()
            .get("Product", None, "5")
            .unwrap()
            .unwrap()
            .get("price"),
        Some("77.77")
    );
    assert!(server.backend().get("Product", None, "9").unwrap().is_none());
    let applied = server.backend().applied();
    assert_eq!(
        (applied.creates, applied.updates, applied.deletes),
        (1, 1, 1),
        "{applied:?}"
    );
    assert_product_in_sync(&server, &c);

    sync_product_ok(&c);
    assert!(pending(&c, "Product").is_empty(), "queue: {:?}", pending(&c, "Product"));
    assert!(errors(&c, "Product").is_empty(), "errors: {:?}", errors(&c, "Product"));
    let applied = server.backend().applied();
    assert_eq!(
        (applied.creates, applied.updates, applied.deletes),
        (1, 1, 1),
        "{applied:?}"
    );
    assert_eq!(backend_named(&server, "Product", None, "name", "Once e2e").len(), 1);
    assert_product_in_sync(&server, &c);
}

// ---------------------------------------------------------------------------------------------
// 14. The CLI
// ---------------------------------------------------------------------------------------------

/// `target/debug/tidesync`, built once if missing.
pub(crate) fn cli_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let bin = root.join("target/debug/tidesync");
        if !bin.exists() {
            let status = std::process::Command::new(env!("CARGO"))
                .args(["build", "-p", "tidesync-cli", "--quiet"])
                .current_dir(&root)
                .status()
                .expect("cargo runs");
            assert!(status.success(), "building tidesync-cli failed");
        }
        assert!(bin.exists(), "{} exists", bin.display());
        bin
    })
    .clone()
}

fn run_cli_sync(server: &Server, password: &str) -> (std::process::ExitStatus, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(cli_binary())
        .args([
            "sync",
            "--url",
            &server.sync_url(),
            "--user",
            "alice",
            "--password",
            password,
            "--db",
        ])
        .arg(dir.path().join("cli.db"))
        .arg("--json")
        .output()
        .expect("tidesync runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout
        .lines()
        .last()
        .unwrap_or_else(|| panic!("no stdout; stderr: {}", String::from_utf8_lossy(&out.stderr)));
    let json: serde_json::Value =
        serde_json::from_str(last).unwrap_or_else(|e| panic!("last stdout line is not JSON ({e}): {last}"));
    (out.status, json)
}

#[test]
fn sync_cli_json_reports_the_synced_counts() {
    let server = start_server();
    let (status, json) = run_cli_sync(&server, PASSWORD);
    assert!(status.success(), "exit {status:?}: {json}");
    assert_eq!(json["ok"], true, "{json}");
    assert_eq!(json["sources"]["Product"]["objects"], PRODUCTS, "{json}");
    assert_eq!(json["sources"]["Customer"]["objects"], CUSTOMERS, "{json}");
}

#[test]
fn sync_cli_wrong_password_fails() {
    let server = start_server();
    let (status, json) = run_cli_sync(&server, "wrong");
    assert!(!status.success(), "exit {status:?}: {json}");
    assert_eq!(json["ok"], false, "{json}");
}

// ---------------------------------------------------------------------------------------------
// 15. A re-sent delete that the first attempt already applied (found by the crash test)
// ---------------------------------------------------------------------------------------------

/// The first push of a delete is applied but its answer lost; the delete goes out again in a push
/// with two more deletes after it. The server refuses the re-sent one ("does not exist") and so
/// defers the two after it (spec §5.6). The client counts the refusal as done AND waits for the
/// deferred two with a push marker: both reach the server, nothing stays in error.
#[test]
fn sync_resent_delete_refused_as_already_done_does_not_lose_the_deletes_after_it() {
    let server = start_server();
    let c = alice(&server);
    sync_product_ok(&c);
    assert!(c.store().destroy("Product", "21").unwrap());
    server
        .faults()
        .set(vec![FaultRule::once_after(Route::Push, FaultKind::ApplyThenDrop, 0)]);
    assert!(matches!(sync_product(&c), Err(CoreError::Network { .. })));
    server.faults().clear();
    assert!(
        server.backend().get("Product", None, "21").unwrap().is_none(),
        "applied"
    );
    // A sync whose push is refused (500): its pull settles 21 as "not applied" (a delete has no
    // echo), so 21 goes out again with the next push.
    server
        .faults()
        .set(vec![FaultRule::always(Route::Push, FaultKind::Http500)]);
    let _ = sync_product(&c);
    server.faults().clear();
    assert!(c.store().destroy("Product", "22").unwrap());
    assert!(c.store().destroy("Product", "23").unwrap());

    for _ in 0..3 {
        sync_product_ok(&c);
    }
    for id in ["22", "23"] {
        assert!(
            server.backend().get("Product", None, id).unwrap().is_none(),
            "delete of {id} reached the server"
        );
    }
    assert!(errors(&c, "Product").is_empty(), "errors: {:?}", errors(&c, "Product"));
    assert!(pending(&c, "Product").is_empty(), "queue: {:?}", pending(&c, "Product"));
    assert_eq!(server.backend().applied().deletes, 3);
    assert_product_in_sync(&server, &c);
}

#[test]
fn sync_cli_without_json_prints_progress_lines_when_not_on_a_terminal() {
    let server = start_server();
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(cli_binary())
        .args([
            "sync",
            "--url",
            &server.sync_url(),
            "--user",
            "alice",
            "--password",
            PASSWORD,
            "--page-size",
            "100",
            "--db",
        ])
        .arg(dir.path().join("cli.db"))
        .output()
        .expect("tidesync runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    // Output is a pipe: one plain line per page and per final event, no terminal escapes.
    assert!(stdout.contains("  Product: 100 / "), "{stdout}");
    assert!(stdout.contains("  Product: Ok"), "{stdout}");
    assert!(
        stdout.contains(&format!("Product: {PRODUCTS} objects (ok)")),
        "{stdout}"
    );
    assert!(!stdout.contains('\u{1b}'), "{stdout}");
}
