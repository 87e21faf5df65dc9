//! Search (spec §7) and push registration against the reference server.

use tidesync_core::{PushRegistration, Query, SearchRequest, SourceDef, SyncClient, SyncConfig, SyncOptions};
use tidesync_server::{App, Server, ServerConfig};

fn client(server: &Server, dir: &tempfile::TempDir, page_size: u32) -> SyncClient {
    let mut cfg = SyncConfig::new(&server.sync_url());
    cfg.page_size = page_size;
    let c = SyncClient::open(&dir.path().join("c.db"), cfg).unwrap();
    c.define_source(&SourceDef::new("Product").priority(1)).unwrap();
    c.login("alice", "password").unwrap();
    c
}

fn search_product_2() -> SearchRequest {
    SearchRequest {
        sources: vec!["Product".into()],
        params: vec![("name".into(), "Product 2".into())],
        sync_changes: false,
    }
}

#[test]
fn sync_search_brings_every_match_in_pages_and_keeps_the_query_token() {
    let server = Server::start(ServerConfig::new(App::transcripts())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let c = client(&server, &dir, 50);
    let report = c.search(&search_product_2(), None).unwrap();
    // "Product 2" matches 2, 20-29 and 200-299: 111 objects, in pages of 50, 50, 11.
    assert_eq!(report.objects, vec![("Product".to_owned(), 111)]);
    assert!(report.errors.is_empty());
    let found = c.find_all("Product", &Query::all()).unwrap();
    assert_eq!(found.len(), 111);
    assert!(found.iter().all(|o| o.attrs["name"].contains("Product 2")));
    // The query state was not touched by the search: a full sync still brings everything.
    c.sync_source("Product", &SyncOptions::default(), None).unwrap();
    assert_eq!(c.count("Product", None).unwrap(), 300);
    let again = c.search(&search_product_2(), None).unwrap();
    assert_eq!(
        again.objects,
        vec![("Product".to_owned(), 0)],
        "a client holding the data gets [[]]"
    );
}

#[test]
fn sync_search_of_a_local_only_source_is_refused() {
    let server = Server::start(ServerConfig::new(App::transcripts())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let c = client(&server, &dir, 50);
    c.define_source(&SourceDef::new("Notes").local_only()).unwrap();
    let r = c.search(
        &SearchRequest {
            sources: vec!["Notes".into()],
            ..SearchRequest::default()
        },
        None,
    );
    assert!(matches!(r, Err(tidesync_core::Error::InvalidInput { .. })), "{r:?}");
}

#[test]
fn sync_push_registration_reaches_the_server() {
    let server = Server::start(ServerConfig::new(App::transcripts())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let c = client(&server, &dir, 50);
    c.register_push(&PushRegistration {
        device_pin: "pin-123".into(),
        device_type: "Android".into(),
        push_type: "fcm".into(),
    })
    .unwrap();
    let client_id = {
        let conn = rusqlite::Connection::open(dir.path().join("c.db")).unwrap();
        conn.query_row("SELECT client_id FROM client_info", [], |r| r.get::<_, String>(0))
            .unwrap()
    };
    let fields = server.backend().client_device(&client_id).expect("registered");
    assert!(
        fields.contains(&("device_pin".to_owned(), "pin-123".to_owned())),
        "{fields:?}"
    );
    assert!(
        fields.contains(&("device_push_type".to_owned(), "fcm".to_owned())),
        "{fields:?}"
    );
}
