//! Bad input: malformed, mistyped, incomplete, oversized and unexpected requests against a fresh
//! transcripts server. Each must get a clear answer (the recorded one where a transcript shows
//! it), must not change the backend, and must leave the server able to serve a normal login and
//! full sync. The last test sends all of them to one server before that sync.

use serde_json::{Value, json};
use std::time::Duration;

use tidesync_tests::{Client, Response, Store, TestServer, cut, query_value, raw_request};

/// A logged-in alice with a fresh client id.
fn alice(server: &TestServer) -> Client {
    let mut c = server.client();
    c.login("alice", "password").expect("alice logs in");
    c.client_create().expect("alice gets a client id");
    c
}

fn cookie(c: &Client) -> &str {
    c.cookie.as_deref().expect("logged in")
}

fn cid(c: &Client) -> &str {
    c.client_id.as_deref().expect("client created")
}

fn products(server: &TestServer) -> Store {
    server.backend_store("Product", None)
}

/// A new user can still log in and pull all of Product, which equals the backend's data.
fn assert_still_serves(server: &TestServer) {
    let mut c = server.client();
    c.login("zed", "password")
        .expect("after bad input the server still accepts a login");
    c.client_create().expect("and creates a client");
    let mut store = Store::new();
    let report = c.sync("Product", 500, &mut store, 10).expect("and serves a full sync");
    assert_eq!(
        store,
        products(server),
        "the full sync after bad input holds the backend's data"
    );
    assert_eq!(report.total_count, store.len() as u64);
}

/// An answer was received (no dropped connection) with a status in `range`.
fn assert_status_in(what: &str, resp: &Result<Response, tidesync_tests::Error>, range: std::ops::RangeInclusive<u16>) {
    match resp {
        Ok(r) => assert!(
            range.contains(&r.status),
            "{what}: status {} not in {range:?}; body {:?}",
            r.status,
            cut(&r.text(), 200)
        ),
        Err(e) => panic!("{what}: no answer ({e})"),
    }
}

fn assert_answer(what: &str, resp: &Result<Response, tidesync_tests::Error>, status: u16, body: &str) {
    match resp {
        Ok(r) => {
            assert_eq!(r.status, status, "{what}: status (body {:?})", cut(&r.text(), 200));
            assert_eq!(r.text(), body, "{what}: body");
        }
        Err(e) => panic!("{what}: no answer ({e})"),
    }
}

fn push_raw(server: &TestServer, c: &Client, body: &str) -> Result<Response, tidesync_tests::Error> {
    server.http().send(
        "POST",
        "/application",
        &[("Content-Type", "application/json"), ("Cookie", cookie(c))],
        Some(body.as_bytes()),
    )
}

fn malformed_json_push(server: &TestServer) {
    let c = alice(server);
    let before = products(server);
    for body in [
        format!(r#"{{"source_name":"Product","client_id":"{}","update":{{"#, cid(&c)),
        "{".to_owned(),
        "not json at all".to_owned(),
        format!(
            r#"{{"source_name":"Product","client_id":"{}","update":{{"20":{{"name":"x"}}}}}}trailing"#,
            cid(&c)
        ),
    ] {
        // Transcript 20: 500, text/plain, "Server error while processing client data".
        assert_answer(
            &format!("malformed push {body:?}"),
            &push_raw(server, &c, &body),
            500,
            "Server error while processing client data",
        );
    }
    assert_eq!(products(server), before, "a malformed push changes nothing");
}

#[test]
fn malformed_json_push_is_a_500_and_changes_nothing() {
    let server = TestServer::transcripts(false);
    malformed_json_push(&server);
    assert_still_serves(&server);
}

fn mistyped_push(server: &TestServer) {
    let c = alice(server);
    let before = products(server);
    let id = cid(&c);
    let bodies: Vec<Value> = vec![
        json!({"source_name": "Product", "client_id": id, "create": 5}),
        json!({"source_name": "Product", "client_id": id, "update": [1, 2]}),
        json!({"source_name": "Product", "client_id": id, "delete": "14"}),
        json!({"source_name": "Product", "client_id": id, "create": {"t1": ["a", "b"]}}),
        json!({"source_name": "Product", "client_id": id, "update": {"20": {"name": ["x"]}}}),
        json!({"source_name": "Product", "client_id": id, "update": {"20": {"name": {"nested": "x"}}}}),
        json!({"source_name": "Product", "client_id": id, "update": {"20": "Renamed"}}),
        json!({"source_name": "Product", "client_id": id, "delete": {"14": 7}}),
        // One valid entry next to a mistyped one: the push is refused as a whole.
        json!({"source_name": "Product", "client_id": id, "update": {"21": {"name": "ok"}, "20": {"name": ["x"]}}}),
        json!([1, 2, 3]),
        json!("a string"),
    ];
    for body in bodies {
        let resp = push_raw(server, &c, &body.to_string());
        assert_status_in(&format!("mistyped push {body}"), &resp, 400..=599);
        assert_eq!(products(server), before, "mistyped push {body} changes nothing");
    }
    // Nothing was queued either: a later valid push of another object only changes that object.
    c.push("Product", &json!({"update": {"30": {"quantity": "5"}}}))
        .expect("a valid push after the bad ones");
    let mut expected = before;
    expected
        .get_mut("30")
        .expect("Product 30")
        .insert("quantity".into(), "5".into());
    assert_eq!(products(server), expected, "only the valid push took effect");
}

#[test]
fn mistyped_push_is_refused_and_changes_nothing() {
    let server = TestServer::transcripts(false);
    mistyped_push(&server);
    assert_still_serves(&server);
}

fn missing_fields(server: &TestServer) {
    let c = alice(server);
    let http = server.http();
    let ck = [("Cookie", cookie(&c))];
    let before = products(server);
    // Transcript 11: query without client_id.
    assert_answer(
        "query without client_id",
        &http.get("/application?p_size=50&version=3&source_name=Product", &ck),
        500,
        "Unknown client",
    );
    // Transcript 13: query without source_name.
    let q = format!("/application?client_id={}&p_size=50&version=3", cid(&c));
    assert_answer("query without source_name", &http.get(&q, &ck), 500, "Unknown source");
    // As transcripts 11 and 20 (push with an unknown client; push whose source_name is not read).
    let body = json!({"source_name": "Product", "update": {"20": {"name": "x"}}}).to_string();
    assert_answer(
        "push without client_id",
        &push_raw(server, &c, &body),
        500,
        "Unknown client",
    );
    let body = json!({"client_id": cid(&c), "update": {"20": {"name": "x"}}}).to_string();
    assert_answer(
        "push without source_name",
        &push_raw(server, &c, &body),
        500,
        "Unknown source",
    );
    assert_answer("push of {}", &push_raw(server, &c, "{}"), 500, "Unknown source");
    assert_eq!(products(server), before, "incomplete pushes change nothing");
    // Logins without a login or password (transcript 02: 401).
    for body in [json!({"login": "alice"}), json!({"password": "password"}), json!({})] {
        let resp = http.post_json("/application/clientlogin", &[], &body);
        assert_status_in(&format!("login {body}"), &resp, 401..=401);
    }
    let resp = http.send(
        "POST",
        "/application/clientlogin",
        &[("Content-Type", "application/json")],
        Some(b"{\"login\":"),
    );
    assert_status_in("login with malformed JSON", &resp, 400..=599);
    // Routes whose client_id is missing: an answer, never a success that invents a client.
    for path in ["/application/clientreset", "/application/bulk_data?partition=app"] {
        assert_status_in(
            &format!("GET {path} without client_id"),
            &http.get(path, &ck),
            400..=599,
        );
    }
    let resp = http.post_json(
        "/application/clientregister",
        &ck,
        &json!({"device_pin": "x", "device_type": "Android"}),
    );
    assert!(
        resp.is_ok(),
        "clientregister without client_id gets an answer: {resp:?}"
    );
}

#[test]
fn missing_fields_get_the_recorded_errors() {
    let server = TestServer::transcripts(false);
    missing_fields(&server);
    assert_still_serves(&server);
}

fn unknown_source(server: &TestServer) {
    let c = alice(server);
    // Transcript 13: an unknown source is not rejected; the page carries a source-error.
    let resp = c.query_raw("NoSuchSource", 50, None).expect("an answer");
    assert_eq!(resp.status, 200);
    let v = resp.json().expect("a JSON page");
    assert_eq!(
        v,
        json!([{"version":3},{"token":""},{"count":0},{"progress_count":0},{"total_count":0},
               {"source-error":{"query-error":{"message":"Please set uri in your settings or through console"}}}])
    );
}

#[test]
fn unknown_source_gets_a_source_error_page() {
    let server = TestServer::transcripts(false);
    unknown_source(&server);
    assert_still_serves(&server);
}

fn unknown_routes(server: &TestServer) {
    let c = alice(server);
    let http = server.http();
    let ck = [("Cookie", cookie(&c))];
    for (method, path) in [
        ("GET", "/nope"),
        ("GET", "/application/nope"),
        ("POST", "/application/clientlogout"),
        ("GET", "/rc/v1/app/nope"),
        ("GET", "/app/v1/Product/1/2/3"),
        ("GET", "/data/application/nothing_here.data"),
    ] {
        let resp = http.send(method, path, &ck, None);
        assert_status_in(&format!("{method} {path}"), &resp, 404..=404);
    }
    // A path escaping the bulk data directory: refused (400) or not found, never served.
    let resp = http.send("GET", "/data/../../etc/passwd", &ck, None);
    assert_status_in("GET /data/../../etc/passwd", &resp, 400..=404);
}

#[test]
fn unknown_routes_are_404() {
    let server = TestServer::transcripts(false);
    unknown_routes(&server);
    assert_still_serves(&server);
}

fn wrong_methods(server: &TestServer) {
    let c = alice(server);
    let http = server.http();
    let ck = [("Cookie", cookie(&c))];
    for (method, path) in [
        ("DELETE", "/application/clientcreate"),
        ("PUT", "/application/clientlogin"),
        ("GET", "/application/clientlogin"),
        ("PATCH", "/application"),
        ("DELETE", "/application"),
        ("PUT", "/application/search"),
        ("DELETE", "/application/bulk_data"),
    ] {
        let resp = http.send(method, path, &ck, None);
        assert_status_in(&format!("{method} {path}"), &resp, 404..=405);
    }
}

#[test]
fn wrong_methods_are_404_or_405() {
    let server = TestServer::transcripts(false);
    wrong_methods(&server);
    assert_still_serves(&server);
}

fn oversized_body(server: &TestServer) {
    let c = alice(server);
    let before = products(server);
    // 20 MiB, over the default limit of 16 MiB: a valid JSON push padded with a long value.
    let pad = "x".repeat(20 * 1024 * 1024);
    let body = format!(
        r#"{{"source_name":"Product","client_id":"{}","update":{{"20":{{"name":"{pad}"}}}}}}"#,
        cid(&c)
    );
    let resp = server.http().send(
        "POST",
        "/application",
        &[
            ("Content-Type", "application/json"),
            ("Cookie", cookie(&c)),
            ("Expect", "100-continue"),
        ],
        Some(body.as_bytes()),
    );
    assert_status_in("a 20 MiB push", &resp, 413..=413);
    assert_eq!(products(server), before, "an oversized push changes nothing");
}

#[test]
fn a_body_over_the_limit_is_413() {
    let server = TestServer::transcripts(false);
    oversized_body(&server);
    assert_still_serves(&server);
}

fn garbage_cookies(server: &TestServer) {
    let c = alice(server);
    let http = server.http();
    let q = format!(
        "/application?client_id={}&p_size=50&version=3&source_name=Product",
        cid(&c)
    );
    let valid = cookie(&c).to_owned();
    let long = format!("rhoconnect_session={}", "A".repeat(8000));
    let tampered = format!(
        "{}{}",
        &valid[..valid.len() - 1],
        if valid.ends_with('0') { '1' } else { '0' }
    );
    let fake_hmac = format!(
        "rhoconnect_session=BAh7BkkiCmxvZ2luBjoGRVRJIgphbGljZQY7AFQ%3D--{}",
        "0".repeat(40)
    );
    let other_server = TestServer::transcripts(false);
    let mut stranger = other_server.client();
    stranger.login("alice", "password").expect("login on another server");
    let foreign = stranger.cookie.clone().expect("cookie");
    for cookie in [
        "rhoconnect_session=",
        "rhoconnect_session=garbage",
        "rhoconnect_session=%%%--%%",
        "rhoconnect_session=--",
        "other=1",
        "rhoconnect_session",
        long.as_str(),
        tampered.as_str(),
        fake_hmac.as_str(),
        foreign.as_str(),
    ] {
        // Transcript 12: 401, "Not authenticated".
        assert_answer(
            &format!("cookie {:?}", cut(cookie, 60)),
            &http.get(&q, &[("Cookie", cookie)]),
            401,
            "Not authenticated",
        );
    }
}

#[test]
fn garbage_cookies_are_401() {
    let server = TestServer::transcripts(false);
    garbage_cookies(&server);
    assert_still_serves(&server);
}

fn huge_query_values(server: &TestServer) {
    let c = alice(server);
    let ck = [("Cookie", cookie(&c))];
    let big = "S".repeat(100 * 1024);
    let id = cid(&c);
    for (what, q) in [
        (
            "100 KB source_name",
            format!("/application?client_id={id}&p_size=50&version=3&source_name={big}"),
        ),
        (
            "100 KB client_id",
            format!("/application?client_id={big}&p_size=50&version=3&source_name=Product"),
        ),
        (
            "100 KB token",
            format!("/application?client_id={id}&p_size=50&version=3&source_name=Product&token={big}"),
        ),
        (
            "100-digit p_size",
            format!(
                "/application?client_id={id}&p_size={}&version=3&source_name=Product",
                "9".repeat(100)
            ),
        ),
        (
            "negative p_size",
            format!("/application?client_id={id}&p_size=-5&version=3&source_name=Product"),
        ),
        (
            "100 KB search value",
            format!(
                "/application/search?client_id={id}&p_size=50&version=3&search[name]={big}&sources[][name]=Product"
            ),
        ),
        (
            "encoded junk",
            format!(
                "/application?client_id={id}&p_size=50&version=3&source_name={}",
                query_value("\u{0}\u{ffff}%zz\"<>")
            ),
        ),
    ] {
        // An error or a page, never a dropped connection. Sent over a plain TCP connection: the
        // `http` crate behind ureq refuses URIs over 64 KiB.
        let resp = raw_request(&server.url(), "GET", &q, &ck, b"", Duration::from_secs(30));
        assert_status_in(what, &resp, 200..=599);
        if let Ok(r) = &resp
            && r.status == 200
            && r.header("content-type")
                .is_some_and(|t| t.starts_with("application/json"))
        {
            assert!(r.json().is_ok(), "{what}: a 200 JSON answer parses");
        }
    }
}

#[test]
fn huge_query_values_never_crash_the_server() {
    let server = TestServer::transcripts(false);
    huge_query_values(&server);
    assert_still_serves(&server);
}

#[test]
fn the_server_still_syncs_after_every_kind_of_bad_input() {
    let server = TestServer::transcripts(false);
    malformed_json_push(&server);
    mistyped_push(&server);
    missing_fields(&server);
    unknown_source(&server);
    unknown_routes(&server);
    wrong_methods(&server);
    oversized_body(&server);
    garbage_cookies(&server);
    huge_query_values(&server);
    assert_still_serves(&server);
}
