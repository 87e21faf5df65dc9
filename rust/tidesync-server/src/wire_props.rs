//! Property tests of the server's wire formats: what it writes (pages, search answers, bulk
//! answers, cookies, JSON strings, objects) round-trips through what reads it — the TideSync
//! client's parser, serde_json, the server's own parsers — and what it reads (requests through
//! the router, push bodies, fault rules, dataset specs) never makes it panic.
//!
//! Case counts are small: the whole module runs in a few seconds in a debug build.

use std::borrow::Cow;
use std::collections::BTreeMap;

use proptest::prelude::*;
use tidesync_core::protocol::rhoconnect::page::{self, parse_page, parse_search};

use crate::fuzzing::{
    Harness, PageContent, RawRequest, SearchPart, WireError, WireObject, encode_page, encode_search, run_requests,
};
use crate::obj::Obj;

/// Text with the characters that need escaping, multi-byte characters, and sometimes nothing.
fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            6 => prop::char::range('a', 'z'),
            1 => Just('"'),
            1 => Just('\\'),
            1 => Just('/'),
            1 => Just('-'),
            1 => prop::char::range('\0', '\u{1f}'),
            1 => Just('\u{7f}'),
            1 => Just('\u{2028}'),
            2 => any::<char>(),
        ],
        0..8,
    )
    .prop_map(|c| c.into_iter().collect())
}

/// An object id. Ids ending in `-error` are left out: in an error map the server writes `<id>`
/// and `<id>-error`, so such an id is ambiguous on the wire (RhoConnect has the same ambiguity;
/// `error_ids_ending_in_dash_error_are_ambiguous` pins down what the client makes of it).
fn id() -> impl Strategy<Value = String> {
    text().prop_filter("not an -error key", |s| !s.ends_with("-error"))
}

/// Attributes with distinct names, in an arbitrary (not sorted) order.
fn attrs() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::btree_map(text(), text(), 0..5)
        .prop_flat_map(|m| Just(m.into_iter().collect::<Vec<_>>()).prop_shuffle())
}

/// Objects with distinct ids.
fn objects() -> impl Strategy<Value = Vec<WireObject>> {
    prop::collection::btree_map(id(), attrs(), 0..5).prop_map(|m| m.into_iter().collect())
}

fn errors() -> impl Strategy<Value = Vec<WireError>> {
    prop::collection::btree_map(id(), (attrs(), text()), 0..4)
        .prop_map(|m| m.into_iter().map(|(id, (a, msg))| (id, a, msg)).collect())
}

fn page_content() -> impl Strategy<Value = PageContent> {
    (
        (text(), 0_usize..1_000_000, objects(), objects()),
        (
            prop::collection::btree_map(id(), text(), 0..4),
            errors(),
            errors(),
            errors(),
        ),
        (objects(), prop::option::of((text(), text()))),
    )
        .prop_map(
            |((token, total_count, insert, delete), (links, ce, ue, de), (rollback, source_error))| PageContent {
                token,
                total_count,
                insert,
                delete,
                links: links.into_iter().collect(),
                create_errors: ce,
                update_errors: ue,
                delete_errors: de,
                rollback,
                source_error,
            },
        )
}

fn cow_attrs(a: &[(String, String)]) -> Vec<(Cow<'static, str>, Cow<'static, str>)> {
    a.iter()
        .map(|(k, v)| (Cow::Owned(k.clone()), Cow::Owned(v.clone())))
        .collect()
}

fn cow_objects(list: &[WireObject]) -> Vec<page::ObjectAttrs<'static>> {
    list.iter()
        .map(|(id, a)| page::ObjectAttrs {
            id: Cow::Owned(id.clone()),
            attrs: cow_attrs(a),
        })
        .collect()
}

fn cow_errors(list: &[WireError]) -> Vec<page::ObjectError<'static>> {
    list.iter()
        .map(|(id, a, msg)| page::ObjectError {
            id: Cow::Owned(id.clone()),
            message: Cow::Owned(msg.clone()),
            attrs: cow_attrs(a),
        })
        .collect()
}

/// What the client must read from `encode_page(p)`.
fn expected_page(p: &PageContent) -> page::Page<'static> {
    page::Page {
        token: Cow::Owned(p.token.clone()),
        count: (p.insert.len() + p.delete.len()) as u64,
        progress_count: 0,
        total_count: p.total_count as u64,
        inserts: cow_objects(&p.insert),
        deletes: cow_objects(&p.delete),
        links: p
            .links
            .iter()
            .map(|(t, id)| page::Link {
                temp_id: Cow::Owned(t.clone()),
                id: Cow::Owned(id.clone()),
            })
            .collect(),
        create_errors: cow_errors(&p.create_errors),
        update_errors: cow_errors(&p.update_errors),
        delete_errors: cow_errors(&p.delete_errors),
        update_rollback: cow_objects(&p.rollback),
        source_error: p.source_error.as_ref().map(|(k, m)| page::KindError {
            kind: Cow::Owned(k.clone()),
            message: Cow::Owned(m.clone()),
        }),
        ..page::Page::default()
    }
}

fn search_part() -> impl Strategy<Value = SearchPart> {
    prop_oneof![
        4 => (text(), text(), objects()).prop_map(|(s, t, o)| SearchPart::Page(s, t, o)),
        1 => (text(), text()).prop_map(|(s, m)| SearchPart::Error(s, m)),
        1 => Just(SearchPart::Done),
    ]
}

fn expected_search(parts: &[SearchPart]) -> Vec<page::Page<'static>> {
    parts
        .iter()
        .filter_map(|p| match p {
            SearchPart::Page(source, token, objects) => Some(page::Page {
                token: Cow::Owned(token.clone()),
                count: objects.len() as u64,
                source: Some(Cow::Owned(source.clone())),
                inserts: cow_objects(objects),
                ..page::Page::default()
            }),
            SearchPart::Error(source, message) => Some(page::Page {
                source: Some(Cow::Owned(source.clone())),
                search_error: Some(page::KindError {
                    kind: Cow::Borrowed("search-error"),
                    message: Cow::Owned(message.clone()),
                }),
                ..page::Page::default()
            }),
            SearchPart::Done => None,
        })
        .collect()
}

/// A JSON value for a push: mostly objects of attributes, sometimes anything.
fn json_value(depth: u32) -> BoxedStrategy<serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        text().prop_map(Value::String),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        any::<bool>().prop_map(Value::Bool),
        Just(Value::Null),
    ];
    if depth == 0 {
        return leaf.boxed();
    }
    prop_oneof![
        3 => leaf,
        1 => prop::collection::vec(json_value(depth - 1), 0..3).prop_map(Value::Array),
        2 => prop::collection::btree_map(text(), json_value(depth - 1), 0..4)
            .prop_map(|m| Value::Object(m.into_iter().collect())),
    ]
    .boxed()
}

/// Push sections: ids mapping to attribute objects whose values are of any JSON type. Names
/// `error` and `conflict` make the transcripts' adapter refuse a create or an update.
fn push_section() -> impl Strategy<Value = BTreeMap<String, serde_json::Value>> {
    let value = prop_oneof![
        4 => text().prop_map(serde_json::Value::String),
        1 => prop_oneof![Just("error"), Just("conflict")].prop_map(serde_json::Value::from),
        1 => json_value(1),
    ];
    let attrs = prop::collection::btree_map(text(), value, 0..4)
        .prop_map(|m| serde_json::Value::Object(m.into_iter().collect()));
    let id = prop_oneof![3 => id(), 1 => (1_u32..400).prop_map(|n| n.to_string())];
    prop::collection::btree_map(id, attrs, 0..4)
}

fn push_document() -> impl Strategy<Value = serde_json::Value> {
    (
        prop::option::of(push_section()),
        prop::option::of(push_section()),
        prop::option::of(push_section()),
        prop::option::of(json_value(2)),
    )
        .prop_map(|(c, u, d, extra)| {
            let mut m = serde_json::Map::new();
            for (name, section) in [("create", c), ("update", u), ("delete", d)] {
                if let Some(s) = section {
                    m.insert(name.into(), serde_json::Value::Object(s.into_iter().collect()));
                }
            }
            if let Some(x) = extra {
                m.insert("extra".into(), x);
            }
            serde_json::Value::Object(m)
        })
}

fn get(target: String) -> RawRequest {
    RawRequest {
        method: b"GET".to_vec(),
        target: target.into_bytes(),
        headers: vec![(b"Cookie".to_vec(), b"rhoconnect_session=@COOKIE@".to_vec())],
        body: Vec::new(),
    }
}

fn post(target: &str, ctype: &str, body: Vec<u8>) -> RawRequest {
    RawRequest {
        method: b"POST".to_vec(),
        target: target.as_bytes().to_vec(),
        headers: vec![
            (b"Cookie".to_vec(), b"rhoconnect_session=@COOKIE@".to_vec()),
            (b"Content-Type".to_vec(), ctype.as_bytes().to_vec()),
        ],
        body,
    }
}

/// A request aimed at the real routes: method, path, query, cookie, content type and body drawn
/// from what the server looks at, with arbitrary values.
fn request() -> impl Strategy<Value = RawRequest> {
    let method = prop_oneof![
        4 => Just("GET".to_owned()),
        4 => Just("POST".to_owned()),
        1 => Just("PUT".to_owned()),
        1 => Just("DELETE".to_owned()),
        1 => "[A-Z]{1,7}",
    ];
    let path = prop_oneof![
        Just("/application".to_owned()),
        Just("/application/clientlogin".to_owned()),
        Just("/application/clientcreate".to_owned()),
        Just("/application/clientregister".to_owned()),
        Just("/application/clientreset".to_owned()),
        Just("/application/search".to_owned()),
        Just("/application/bulk_data".to_owned()),
        Just("/api/application/query".to_owned()),
        Just("/rc/v1/app/login".to_owned()),
        Just("/rc/v1/clients".to_owned()),
        Just("/app/v1/Product".to_owned()),
        Just("/app/v1/Customer/5".to_owned()),
        "/rc/v1/clients/[a-z%0-9@]{0,12}/(reset|register)",
        "/app/v1/[A-Za-z%0-9._~-]{0,12}(/[a-z0-9%]{0,6})?",
        "/data/[a-z%./]{0,20}",
        "/[ -~]{0,20}",
    ];
    let key = prop_oneof![
        Just("client_id".to_owned()),
        Just("source_name".to_owned()),
        Just("p_size".to_owned()),
        Just("token".to_owned()),
        Just("version".to_owned()),
        Just("resend".to_owned()),
        Just("partition".to_owned()),
        Just("sources".to_owned()),
        Just("sources[][name]".to_owned()),
        Just("sources[][token]".to_owned()),
        Just("search[name]".to_owned()),
        "[a-z\\[\\]]{1,8}",
    ];
    let value = prop_oneof![
        Just("@CLIENT@".to_owned()),
        Just("Product".to_owned()),
        Just("Customer".to_owned()),
        Just("user".to_owned()),
        "[0-9]{0,22}",
        "-?[0-9a-z]{0,5}",
        "[ -~]{0,12}",
    ];
    let query = prop::collection::vec((key, value), 0..5).prop_map(|pairs| {
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish()
    });
    let cookie = prop_oneof![
        4 => Just("rhoconnect_session=@COOKIE@".to_owned()),
        1 => "rhoconnect_session=[ -~]{0,40}",
        1 => "[ -~]{0,40}",
    ];
    let ctype = prop_oneof![
        Just("application/json".to_owned()),
        Just("application/x-www-form-urlencoded".to_owned()),
        Just("text/plain".to_owned()),
        "[ -~]{0,20}",
    ];
    let body = prop_oneof![
        3 => push_document().prop_map(|v| v.to_string().into_bytes()),
        1 => push_document().prop_map(|v| {
            let form = form_urlencoded::Serializer::new(String::new())
                .append_pair("cud", &v.to_string())
                .finish();
            form.into_bytes()
        }),
        1 => json_value(3).prop_map(|v| v.to_string().into_bytes()),
        1 => "[ -~]{0,60}".prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 0..60),
    ];
    let range = prop::option::of("bytes=[0-9]{0,4}-[0-9]{0,4}");
    (
        method,
        path,
        query,
        prop::option::of(cookie),
        prop::option::of(ctype),
        body,
        range,
    )
        .prop_map(|(method, path, query, cookie, ctype, body, range)| {
            let mut headers = Vec::new();
            for (name, v) in [("Cookie", cookie), ("Content-Type", ctype), ("Range", range)] {
                if let Some(v) = v {
                    headers.push((name.as_bytes().to_vec(), v.into_bytes()));
                }
            }
            let target = if query.is_empty() {
                path
            } else {
                format!("{path}?{query}")
            };
            RawRequest {
                method: method.into_bytes(),
                target: target.into_bytes(),
                headers,
                body,
            }
        })
}

#[test]
fn error_ids_ending_in_dash_error_are_ambiguous() {
    // The server writes `"a-error":{attrs}` and `"a-error-error":{"message":..}` for id
    // `a-error`; the client reads `a-error` as the message entry of id `a` (as Rhodes would).
    let p = PageContent {
        token: "1".into(),
        create_errors: vec![("a-error".into(), vec![("name".into(), "x".into())], "refused".into())],
        ..PageContent::default()
    };
    let body = encode_page(&p);
    let page = parse_page(body.as_bytes()).expect("parses");
    let ids: Vec<&str> = page.create_errors.iter().map(|e| e.id.as_ref()).collect();
    assert_eq!(ids, ["a", "a-error"], "{body}");
}

/// Regression (found by `pushes_are_answered_and_the_next_page_parses`): a push naming its
/// source only in the query string was answered `500 Unknown source`; RhoConnect reads
/// `params`, where the query parameters are merged with the JSON body.
#[test]
fn a_push_may_name_its_source_in_the_query() {
    let h = Harness::new().expect("harness");
    let push = post(
        "/application?client_id=@CLIENT@&source_name=Product",
        "application/json",
        br#"{"create":{"t1":{"name":"New"}}}"#.to_vec(),
    );
    assert_eq!(h.send(&push).map(|a| a.status), Some(200));
    let page = h
        .send(&get(
            "/application?client_id=@CLIENT@&source_name=Product&p_size=1".into()
        ))
        .expect("sent");
    let page = parse_page(&page.body).expect("page");
    assert_eq!(page.links.len(), 1);
    assert_eq!(page.links[0].temp_id, "t1");
}

#[test]
fn the_page_of_an_unknown_source_round_trips() {
    let p = PageContent {
        source_error: Some(("query-error".into(), "Unknown source \"x\"".into())),
        total_count: 0,
        ..PageContent::default()
    };
    let body = encode_page(&p);
    assert_eq!(
        parse_page(body.as_bytes()).map(|p| p.into_owned()),
        Ok(expected_page(&p))
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Server page encoder → client page parser: every field comes back as written.
    #[test]
    fn server_pages_round_trip_through_the_client_parser(p in page_content()) {
        let body = encode_page(&p);
        prop_assert!(serde_json::from_str::<serde_json::Value>(&body).is_ok(), "not JSON: {}", body);
        let parsed = parse_page(body.as_bytes()).map(|p| p.into_owned());
        prop_assert_eq!(parsed, Ok(expected_page(&p)), "{}", body);
    }

    /// Server search encoder → client search parser: pages and search errors come back in
    /// order, empty inner arrays are skipped.
    #[test]
    fn server_search_answers_round_trip_through_the_client_parser(
        parts in prop::collection::vec(search_part(), 0..4),
    ) {
        let body = encode_search(&parts);
        let parsed = parse_search(body.as_bytes()).map(|v| v.into_iter().map(page::Page::into_owned).collect::<Vec<_>>());
        prop_assert_eq!(parsed, Ok(expected_search(&parts)), "{}", body);
    }

    /// JSON string writer → serde_json: any string comes back unchanged.
    #[test]
    fn json_strings_round_trip(s in any::<String>(), t in text()) {
        for s in [s, t] {
            let mut out = String::new();
            crate::json::write_str(&mut out, &s);
            prop_assert_eq!(serde_json::from_str::<String>(&out).ok(), Some(s), "{}", out);
        }
    }

    /// `Obj::write_json` → `Obj::from_json`: attributes and their order come back.
    #[test]
    fn objects_round_trip(a in attrs()) {
        let obj = Obj::from_pairs(a);
        let mut out = String::new();
        obj.write_json(&mut out);
        let v: serde_json::Value = serde_json::from_str(&out).map_err(|e| TestCaseError::fail(format!("{e}: {out}")))?;
        prop_assert_eq!(Obj::from_json(&v), Some(obj));
    }

    /// `Obj::from_json` on any JSON: never panics; accepts exactly objects of scalars.
    #[test]
    fn object_parsing_never_panics(v in json_value(3)) {
        let accepted = Obj::from_json(&v).is_some();
        let scalars = v.as_object().is_some_and(|m| m.values().all(|x| !x.is_object() && !x.is_array()));
        prop_assert_eq!(accepted, scalars);
    }

    /// Cookies: what `issue` writes `verify` reads back (under the same secret only), and
    /// `from_header` finds it among other cookies; `Set-Cookie` starts with `name=value;`.
    #[test]
    fn session_cookies_round_trip(
        session_id in any::<String>(),
        login in prop::option::of(any::<String>()),
        app in any::<String>(),
        secret in prop::collection::vec(any::<u8>(), 0..80),
        before in "[a-z_]{1,8}=[!-:<-~]{0,10}",
        after in "[a-z_]{1,8}=[!-:<-~]{0,10}",
    ) {
        use crate::cookie::{Session, from_header, issue, set_cookie, verify, NAME};
        let session = Session { session_id, login };
        let value = issue(&secret, &app, &session);
        prop_assert_eq!(verify(&secret, &value), Some(session.clone()));
        let mut other = secret.clone();
        other.push(1);
        prop_assert_eq!(verify(&other, &value), None);
        let header = format!("{before}; {NAME}={value}; {after}");
        prop_assert_eq!(from_header(&header), Some(value.as_str()));
        let set = set_cookie(&value);
        let expected_prefix = format!("{NAME}={value};");
        prop_assert!(set.starts_with(&expected_prefix), "{}", set);
        prop_assert!(axum::http::HeaderValue::from_str(&set).is_ok(), "not a header value: {}", set);
    }

    /// `from_header` and `verify` on arbitrary headers never panic.
    #[test]
    fn cookie_headers_never_panic(header in any::<String>()) {
        if let Some(v) = crate::cookie::from_header(&header) {
            prop_assert!(header.contains(v));
            let _ = crate::cookie::verify(b"secret", v);
        }
    }

    /// Bulk answers are the JSON the client expects: `result`, and `url` for a URL answer.
    #[test]
    fn bulk_answers_are_json(url in any::<String>()) {
        use crate::bulk_job::BulkAnswer;
        for (answer, result) in [(BulkAnswer::Wait, "wait"), (BulkAnswer::Nop, "nop"), (BulkAnswer::Url(url.clone()), "url")] {
            let v: serde_json::Value = serde_json::from_str(&answer.to_json()).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(v["result"].as_str(), Some(result));
            if result == "url" {
                prop_assert_eq!(v["url"].as_str(), Some(url.as_str()));
            }
        }
    }

    /// Fault rules: any string parses or is refused without panicking; a rule written in the
    /// command-line form parses back to itself.
    #[test]
    fn fault_rules_parse_without_panicking_and_round_trip(
        s in any::<String>(),
        route in prop::sample::select(crate::fault::Route::ALL.to_vec()),
        kind in 0_usize..8,
        ms in any::<u64>(),
        probability in prop::option::of(0.0_f64..=1.0),
        skip in prop::option::of(any::<u32>()),
        times in prop::option::of(any::<u32>()),
    ) {
        use crate::fault::{FaultKind, FaultRule};
        let _ = s.parse::<FaultRule>();
        let _ = s.parse::<FaultKind>();
        let d = std::time::Duration::from_millis(ms);
        let (kind, text) = [
            (FaultKind::Latency(d), format!("latency={ms}")),
            (FaultKind::Http500, "http500".to_owned()),
            (FaultKind::DropMidBody, "drop_mid_body".to_owned()),
            (FaultKind::Stall(d), format!("stall={ms}")),
            (FaultKind::TruncatedJson, "truncated_json".to_owned()),
            (FaultKind::MalformedJson, "malformed_json".to_owned()),
            (FaultKind::DuplicatePage, "duplicate_page".to_owned()),
            (FaultKind::ApplyThenDrop, "apply_then_drop".to_owned()),
        ][kind].clone();
        let mut line = format!("{}:{text}", route.as_str());
        if let Some(p) = probability {
            line.push_str(&format!("@{p}"));
        }
        if let Some(k) = skip {
            line.push_str(&format!("+{k}"));
        }
        if let Some(t) = times {
            line.push_str(&format!("x{t}"));
        }
        let expected = FaultRule { route, kind, probability: probability.unwrap_or(1.0), skip: skip.unwrap_or(0), times };
        prop_assert_eq!(line.parse::<FaultRule>(), Ok(expected), "{}", line);
    }

    /// Dataset specs: any string parses or is refused without panicking; a written list parses
    /// back to itself.
    #[test]
    fn dataset_specs_parse_without_panicking_and_round_trip(
        s in any::<String>(),
        specs in prop::collection::vec(("[A-Za-z0-9_]{1,10}", any::<u64>(), prop::option::of(any::<usize>())), 0..4),
    ) {
        use crate::app::DatasetSpec;
        let _ = DatasetSpec::parse_list(&s);
        let line = specs
            .iter()
            .map(|(n, c, a)| match a {
                Some(a) => format!("{n}={c}x{a}"),
                None => format!("{n}={c}"),
            })
            .collect::<Vec<_>>()
            .join(",");
        let expected: Vec<DatasetSpec> = specs
            .iter()
            .map(|(n, c, a)| DatasetSpec { name: n.clone(), count: *c, attrs: *a, partition: None })
            .collect();
        prop_assert_eq!(DatasetSpec::parse_list(&line), Ok(expected), "{}", line);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// The router on requests built from the real routes, parameters, cookies and bodies: it
    /// never panics (a panic in a handler thread would abort this test through the hook below)
    /// and answers a status the real server uses.
    #[test]
    fn the_router_answers_every_request(requests in prop::collection::vec(request(), 1..4)) {
        let input = requests
            .iter()
            .map(RawRequest::to_text)
            .collect::<Vec<_>>()
            .join(crate::fuzzing::REQUEST_SEPARATOR);
        let answers = no_panic(|| run_requests(&input))?;
        for a in answers {
            prop_assert!(
                [200, 206, 401, 404, 405, 413, 416, 422, 500].contains(&a.status),
                "status {} for {}", a.status, String::from_utf8_lossy(&input)
            );
        }
    }

    /// A signed-in client pushes an arbitrary CUD document (JSON or form): the push is answered
    /// 200 (or the recorded 500 for a body that is not CUD), and the next page — carrying the
    /// links and errors the push produced — parses with the client's parser and reports every
    /// create either as a link or as a create error.
    #[test]
    fn pushes_are_answered_and_the_next_page_parses(doc in push_document(), form in any::<bool>()) {
        let h = Harness::new().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let json = doc.to_string();
        let push = if form {
            let body = form_urlencoded::Serializer::new(String::new()).append_pair("cud", &json).finish();
            post("/application?client_id=@CLIENT@&source_name=Product", "application/x-www-form-urlencoded", body.into_bytes())
        } else {
            post("/application?client_id=@CLIENT@&source_name=Product", "application/json", json.clone().into_bytes())
        };
        let answer = no_panic(|| h.send(&push))?.ok_or_else(|| TestCaseError::fail("not sent"))?;
        let well_formed = ["create", "update", "delete"].iter().all(|s| {
            doc.get(s).is_none_or(|sec| sec.as_object().is_some_and(|m| m.values().all(|o| Obj::from_json(o).is_some())))
        });
        prop_assert_eq!(answer.status, if well_formed { 200 } else { 500 }, "{}", json);
        let page = no_panic(|| h.send(&get("/application?client_id=@CLIENT@&p_size=1000&version=3&source_name=Product".into())))?
            .ok_or_else(|| TestCaseError::fail("not sent"))?;
        prop_assert_eq!(page.status, 200);
        let parsed = parse_page(&page.body).map_err(|e| TestCaseError::fail(format!("{e}: {}", String::from_utf8_lossy(&page.body))))?;
        if well_formed {
            let mut reported: Vec<&str> = parsed.links.iter().map(|l| l.temp_id.as_ref())
                .chain(parsed.create_errors.iter().map(|e| e.id.as_ref()))
                .collect();
            reported.sort_unstable();
            let mut created: Vec<&str> = doc.get("create").and_then(|c| c.as_object()).map(|m| m.keys().map(String::as_str).collect()).unwrap_or_default();
            created.sort_unstable();
            prop_assert_eq!(reported, created, "{}", String::from_utf8_lossy(&page.body));
        }
        h.settle();
    }
}

/// Runs `f`, turning a panic (also one on another thread, seen by a hook) into a test failure.
fn no_panic<T>(f: impl FnOnce() -> T) -> Result<T, TestCaseError> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static PANICS: AtomicUsize = AtomicUsize::new(0);
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            previous(info);
        }));
    });
    let before = PANICS.load(Ordering::SeqCst);
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .map_err(|_| TestCaseError::fail("the server panicked"))?;
    if PANICS.load(Ordering::SeqCst) != before {
        return Err(TestCaseError::fail("a server thread panicked"));
    }
    Ok(out)
}
