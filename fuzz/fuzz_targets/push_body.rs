//! Arbitrary push bodies (JSON, or a form with a `cud` field when the input starts with `cud=`)
//! from a signed-in client, followed by a query: the server never panics, and every page it
//! builds afterwards — links, errors, rollbacks for whatever was pushed — parses with the
//! client's page parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidesync_core::protocol::rhoconnect::page::parse_page;
use tidesync_server::fuzzing::{Harness, RawRequest};

fuzz_target!(|data: &[u8]| {
    let h = Harness::new().expect("harness");
    let ctype: &[u8] = if data.starts_with(b"cud=") {
        b"application/x-www-form-urlencoded"
    } else {
        b"application/json"
    };
    for source in ["Product", "Customer"] {
        let push = RawRequest {
            method: b"POST".to_vec(),
            target: format!("/application?client_id=@CLIENT@&source_name={source}").into_bytes(),
            headers: vec![
                (b"Cookie".to_vec(), b"rhoconnect_session=@COOKIE@".to_vec()),
                (b"Content-Type".to_vec(), ctype.to_vec()),
            ],
            body: data.to_vec(),
        };
        let answer = h.send(&push).expect("valid request");
        assert!(matches!(answer.status, 200 | 500), "push answered {}", answer.status);
        let query = RawRequest {
            method: b"GET".to_vec(),
            target: format!("/application?client_id=@CLIENT@&p_size=100&version=3&source_name={source}")
                .into_bytes(),
            headers: vec![(b"Cookie".to_vec(), b"rhoconnect_session=@COOKIE@".to_vec())],
            body: Vec::new(),
        };
        let page = h.send(&query).expect("valid request");
        assert_eq!(page.status, 200);
        if let Err(e) = parse_page(&page.body) {
            panic!("the client cannot parse the server's page: {e}\n{}", String::from_utf8_lossy(&page.body));
        }
    }
    h.settle();
});
