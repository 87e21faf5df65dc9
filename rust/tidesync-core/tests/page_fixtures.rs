//! Fixture tests of the page parser against the recorded RhoConnect 7.8 exchanges in
//! `shared/spec/transcripts` (beside the repository).
#![allow(clippy::unwrap_used)]

use std::borrow::Cow;
use std::path::Path;

use serde_json::Value;
use tidesync_core::protocol::rhoconnect::page::{
    KindError, Link, ObjectAttrs, ObjectError, Page, PageError, parse_page, parse_search,
};

const TRANSCRIPTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/spec/transcripts");

/// One recorded exchange.
struct Exchange {
    file: String,
    index: usize,
    body: Option<String>,
    truncated: bool,
    notes: Vec<String>,
}

impl Exchange {
    fn name(&self) -> String {
        format!("{}#{}", self.file, self.index)
    }

    fn body(&self) -> &str {
        self.body
            .as_deref()
            .unwrap_or_else(|| panic!("{}: no body", self.name()))
    }

    fn is_query_page(&self) -> bool {
        self.body
            .as_deref()
            .is_some_and(|b| b.trim_start().starts_with(r#"[{"version":3}"#))
    }

    fn is_search_answer(&self) -> bool {
        self.file.starts_with("17-") && self.body.as_deref().is_some_and(|b| b.trim_start().starts_with('['))
    }
}

/// All exchanges of all transcripts, in file order. Fails (does not skip) when the directory is
/// missing.
fn exchanges() -> Vec<Exchange> {
    let dir = Path::new(TRANSCRIPTS);
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| {
        panic!(
            "transcripts directory {} is missing or unreadable ({e}): the fixture tests need a copy of \
             shared/spec/transcripts beside the repository checkout",
            dir.display()
        )
    });
    let mut files: Vec<_> = entries
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 22,
        "expected the 22 transcripts in {}, found {}",
        dir.display(),
        files.len()
    );
    let mut out = Vec::new();
    for path in files {
        let file = path.file_name().expect("file name").to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let json: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let list = match json {
            Value::Array(list) => list,
            one => vec![one],
        };
        for (index, exchange) in list.into_iter().enumerate() {
            let Some(response) = exchange.get("response") else {
                continue;
            };
            let notes = exchange
                .get("notes")
                .and_then(Value::as_array)
                .map(|n| n.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                .unwrap_or_default();
            out.push(Exchange {
                file: file.clone(),
                index,
                body: response.get("body").and_then(Value::as_str).map(str::to_owned),
                truncated: response.get("body_truncated").and_then(Value::as_bool).unwrap_or(false),
                notes,
            });
        }
    }
    out
}

fn exchange(prefix: &str, index: usize) -> Exchange {
    exchanges()
        .into_iter()
        .find(|e| e.file.starts_with(prefix) && e.index == index)
        .unwrap_or_else(|| panic!("no exchange {prefix}*#{index} in {TRANSCRIPTS}"))
}

/// The recorded query page `prefix*#index`, parsed.
fn recorded_page(prefix: &str, index: usize) -> Page<'static> {
    let ex = exchange(prefix, index);
    parse_page(ex.body().as_bytes())
        .unwrap_or_else(|e| panic!("{}: {e}", ex.name()))
        .into_owned()
}

fn attrs<'a>(pairs: &[(&'a str, &'a str)]) -> Vec<(Cow<'a, str>, Cow<'a, str>)> {
    pairs
        .iter()
        .map(|&(n, v)| (Cow::Borrowed(n), Cow::Borrowed(v)))
        .collect()
}

// ---- an independent reference reading of a page, from serde_json::Value ----------------------

fn ref_attrs(v: &Value) -> Vec<(Cow<'static, str>, Cow<'static, str>)> {
    v.as_object()
        .expect("attribute object")
        .iter()
        .map(|(k, v)| {
            (
                Cow::Owned(k.clone()),
                Cow::Owned(v.as_str().expect("string value").to_owned()),
            )
        })
        .collect()
}

fn ref_objects(v: &Value) -> Vec<ObjectAttrs<'static>> {
    v.as_object()
        .expect("object map")
        .iter()
        .map(|(id, a)| ObjectAttrs {
            id: Cow::Owned(id.clone()),
            attrs: ref_attrs(a),
        })
        .collect()
}

fn ref_errors(v: &Value) -> Vec<ObjectError<'static>> {
    let mut out: Vec<ObjectError<'static>> = Vec::new();
    for (key, value) in v.as_object().expect("error map") {
        let (id, message) = match key.strip_suffix("-error") {
            Some(id) => (id, Some(value["message"].as_str().expect("message").to_owned())),
            None => (key.as_str(), None),
        };
        let pos = out.iter().position(|e| e.id == id).unwrap_or_else(|| {
            out.push(ObjectError {
                id: Cow::Owned(id.to_owned()),
                ..ObjectError::default()
            });
            out.len() - 1
        });
        match message {
            Some(m) => out[pos].message = Cow::Owned(m),
            None => out[pos].attrs = ref_attrs(value),
        }
    }
    out
}

fn ref_kind(v: &Value) -> Option<KindError<'static>> {
    let (kind, value) = v.as_object().expect("kind map").iter().next()?;
    Some(KindError {
        kind: Cow::Owned(kind.clone()),
        message: Cow::Owned(value["message"].as_str().expect("message").to_owned()),
    })
}

fn reference(elements: &Value) -> Page<'static> {
    let mut page = Page::default();
    for element in elements.as_array().expect("page array") {
        for (key, v) in element.as_object().expect("element object") {
            match key.as_str() {
                "version" => assert_eq!(v.as_u64(), Some(3)),
                "token" => page.token = Cow::Owned(v.as_str().expect("token").to_owned()),
                "count" => page.count = v.as_u64().expect("count"),
                "progress_count" => page.progress_count = v.as_u64().expect("progress_count"),
                "total_count" => page.total_count = v.as_u64().expect("total_count"),
                "source" => page.source = Some(Cow::Owned(v.as_str().expect("source").to_owned())),
                "insert" => page.inserts = ref_objects(v),
                "delete" => page.deletes = ref_objects(v),
                "update-rollback" => page.update_rollback = ref_objects(v),
                "links" => {
                    page.links = v
                        .as_object()
                        .expect("links")
                        .iter()
                        .map(|(t, l)| Link {
                            temp_id: Cow::Owned(t.clone()),
                            id: Cow::Owned(l["l"].as_str().expect("l").to_owned()),
                        })
                        .collect()
                }
                "create-error" => page.create_errors = ref_errors(v),
                "update-error" => page.update_errors = ref_errors(v),
                "delete-error" => page.delete_errors = ref_errors(v),
                "source-error" => page.source_error = ref_kind(v),
                "search-error" => page.search_error = ref_kind(v),
                other => panic!("transcript key {other} not covered by the reference reader"),
            }
        }
    }
    page
}

/// Object counts per element before truncation, from the notes
/// (`TRUNCATED: element "insert" had 50 objects; ...`).
fn original_sizes(notes: &[String]) -> Vec<(String, u64)> {
    notes
        .iter()
        .filter_map(|n| {
            let rest = n.strip_prefix("TRUNCATED: element \"")?;
            let (element, rest) = rest.split_once("\" had ")?;
            let (count, _) = rest.split_once(" objects")?;
            Some((element.to_owned(), count.parse().ok()?))
        })
        .collect()
}

/// The page's objects are what `count` announces, taking the transcript's truncation into account.
fn check_count(page: &Page<'_>, ex: &Exchange) {
    let sizes = original_sizes(&ex.notes);
    assert_eq!(
        ex.truncated,
        !sizes.is_empty(),
        "{}: truncation flag vs notes",
        ex.name()
    );
    let size = |name: &str, parsed: usize| {
        sizes.iter().find(|(e, _)| e == name).map_or(parsed as u64, |&(_, n)| {
            assert_eq!(parsed, 3, "{}: a truncated {name} keeps 3 objects", ex.name());
            n
        })
    };
    let announced = size("insert", page.inserts.len()) + size("delete", page.deletes.len());
    assert_eq!(page.count, announced, "{}: count vs objects", ex.name());
}

#[test]
fn every_query_page_matches_its_recording() {
    let mut checked = 0;
    for ex in exchanges().iter().filter(|e| e.is_query_page()) {
        let body = ex.body();
        let page = parse_page(body.as_bytes()).unwrap_or_else(|e| panic!("{}: {e}", ex.name()));
        let json: Value = serde_json::from_str(body).expect("recorded body is JSON");
        assert_eq!(page, reference(&json), "{}", ex.name());
        check_count(&page, ex);
        assert_eq!(page.progress_count, 0, "{}", ex.name());
        assert_eq!(page.is_final(), page.token.is_empty());
        if !page.token.is_empty() {
            assert_eq!(page.token.len(), 15, "{}: token {}", ex.name(), page.token);
            assert!(page.token.bytes().all(|b| b.is_ascii_digit()));
        }
        // A query page is not a search answer.
        assert!(parse_search(body.as_bytes()).is_err(), "{}", ex.name());
        checked += 1;
    }
    assert_eq!(checked, 31, "number of recorded query pages");
}

#[test]
fn recorded_page_headers() {
    // (file, index, token, count, total_count, inserts, deletes)
    let table: &[(&str, usize, &str, u64, u64, usize, usize)] = &[
        ("05-", 0, "564744267555226", 50, 300, 3, 0),
        ("06-", 0, "564744267622050", 50, 300, 3, 0),
        ("07-", 0, "564744267622050", 50, 300, 3, 0),
        ("07-", 1, "564744267622050", 50, 300, 3, 0),
        ("08-", 0, "564744267754383", 50, 300, 3, 0),
        ("09-", 3, "", 0, 300, 0, 0),
        ("10-", 0, "564744268174858", 120, 120, 3, 0),
        ("10-", 1, "", 0, 120, 0, 0),
        ("14-", 1, "564744268446775", 0, 301, 0, 0),
        ("15-", 1, "564744268638032", 4, 301, 2, 2),
        ("15-", 6, "564744268843936", 5, 300, 2, 3),
        ("20-", 1, "564744275634861", 300, 300, 3, 0),
        ("22-", 2, "564744353237639", 299, 299, 3, 0),
        ("22-", 5, "", 0, 299, 0, 0),
        ("22-", 7, "564744353578345", 4, 299, 2, 2),
    ];
    for &(file, index, token, count, total, inserts, deletes) in table {
        let ex = exchange(file, index);
        let page = parse_page(ex.body().as_bytes()).unwrap_or_else(|e| panic!("{}: {e}", ex.name()));
        assert_eq!(page.token, token, "{}", ex.name());
        assert_eq!((page.count, page.total_count), (count, total), "{}", ex.name());
        assert_eq!(
            (page.inserts.len(), page.deletes.len()),
            (inserts, deletes),
            "{}",
            ex.name()
        );
    }
    // 07: the old token and a bogus token both get page 2 again, unchanged.
    let a = exchange("07-", 0);
    let b = exchange("07-", 1);
    assert_eq!(parse_page(a.body().as_bytes()), parse_page(b.body().as_bytes()));
    let first_ids: Vec<_> = recorded_page("05-", 0)
        .inserts
        .iter()
        .map(|o| o.id.clone().into_owned())
        .collect();
    assert_eq!(first_ids, ["192", "213", "86"]);
}

#[test]
fn transcript_13_source_error() {
    for index in [0, 2] {
        let ex = exchange("13-", index);
        let page = parse_page(ex.body().as_bytes()).expect("13");
        assert_eq!(
            page,
            Page {
                source_error: Some(KindError {
                    kind: "query-error".into(),
                    message: "Please set uri in your settings or through console".into(),
                }),
                ..Page::default()
            }
        );
        assert!(page.is_final() && page.has_server_errors());
    }
    assert!(matches!(
        parse_page(exchange("13-", 1).body().as_bytes()),
        Err(PageError::Json(_))
    ));
}

#[test]
fn transcript_14_links_errors_rollback() {
    let ex = exchange("14-", 1);
    let page = parse_page(ex.body().as_bytes()).expect("14");
    assert_eq!(page.token, "564744268446775");
    assert_eq!((page.count, page.total_count), (0, 301));
    assert!(page.inserts.is_empty() && page.deletes.is_empty());
    assert_eq!(
        page.links,
        [Link {
            temp_id: "1795512300001".into(),
            id: "1001".into()
        }]
    );
    assert_eq!(
        page.create_errors,
        [ObjectError {
            id: "1795512300002".into(),
            message: "Product name 'error' is not allowed".into(),
            attrs: attrs(&[
                ("name", "error"),
                ("brand", "Acme"),
                ("price", "2.99"),
                ("quantity", "1"),
                ("sku", "SKU-NEW-2"),
            ]),
        }]
    );
    assert_eq!(
        page.update_errors,
        [ObjectError {
            id: "20".into(),
            message: "Update conflict: name 'conflict' rejected".into(),
            attrs: attrs(&[("name", "conflict")]),
        }]
    );
    // Recorded with the "13-error" key before "13".
    assert!(ex.body().contains(r#""delete-error":{"13-error""#));
    assert_eq!(
        page.delete_errors,
        [ObjectError {
            id: "13".into(),
            message: "Product 13 cannot be deleted".into(),
            attrs: attrs(&[
                ("name", "Product 13"),
                ("brand", "Samsung"),
                ("price", "23.13"),
                ("quantity", "41"),
                ("sku", "SKU-00013"),
            ]),
        }]
    );
    assert_eq!(
        page.update_rollback,
        [ObjectAttrs {
            id: "20".into(),
            attrs: attrs(&[
                ("name", "Product 20"),
                ("brand", "LG"),
                ("price", "30.20"),
                ("quantity", "40"),
                ("sku", "SKU-00020"),
            ]),
        }]
    );
    assert!(page.source_error.is_none() && page.search_error.is_none() && !page.schema_changed);
    // The next page is the end page, errors delivered once.
    let next = recorded_page("14-", 2);
    assert_eq!(
        next,
        Page {
            total_count: 301,
            ..Page::default()
        }
    );
}

#[test]
fn transcript_15_attribute_level_diff() {
    let page = recorded_page("15-", 1);
    assert_eq!(page.token, "564744268638032");
    assert_eq!(page.count, 4);
    assert_eq!(
        page.inserts,
        [
            ObjectAttrs {
                id: "301".into(),
                attrs: attrs(&[
                    ("name", "Product 301"),
                    ("brand", "Nokia"),
                    ("price", "311.01"),
                    ("quantity", "7"),
                    ("sku", "SKU-00301"),
                ]),
            },
            ObjectAttrs {
                id: "5".into(),
                attrs: attrs(&[("price", "999.99")])
            },
        ]
    );
    assert_eq!(
        page.deletes,
        [
            ObjectAttrs {
                id: "5".into(),
                attrs: attrs(&[("price", "15.05")])
            },
            ObjectAttrs {
                id: "7".into(),
                attrs: attrs(&[
                    ("name", "Product 7"),
                    ("brand", "Google"),
                    ("price", "17.07"),
                    ("quantity", "49"),
                    ("sku", "SKU-00007"),
                ]),
            },
        ]
    );
    // bob's update of 8 plus alice's deferred update of 21 and delete of 14.
    let page = recorded_page("15-", 6);
    assert_eq!(page.count, 5);
    assert_eq!(
        page.inserts,
        [
            ObjectAttrs {
                id: "21".into(),
                attrs: attrs(&[("name", "Renamed 21"), ("price", "77.77")])
            },
            ObjectAttrs {
                id: "8".into(),
                attrs: attrs(&[("quantity", "99")])
            },
        ]
    );
    assert_eq!(
        page.deletes,
        [
            ObjectAttrs {
                id: "21".into(),
                attrs: attrs(&[("name", "Product 21"), ("price", "31.21")])
            },
            ObjectAttrs {
                id: "8".into(),
                attrs: attrs(&[("quantity", "6")])
            },
            ObjectAttrs {
                id: "14".into(),
                attrs: attrs(&[
                    ("name", "Product 14"),
                    ("brand", "HTC"),
                    ("price", "24.14"),
                    ("quantity", "48"),
                    ("sku", "SKU-00014"),
                ]),
            },
        ]
    );
}

#[test]
fn transcript_17_search() {
    let search = |index: usize| {
        let ex = exchange("17-", index);
        let pages = parse_search(ex.body().as_bytes()).unwrap_or_else(|e| panic!("{}: {e}", ex.name()));
        pages.into_iter().map(Page::into_owned).collect::<Vec<_>>()
    };
    assert_eq!(search(0), []);
    for (index, count) in [(2, 50), (3, 50), (4, 10)] {
        let ex = exchange("17-", index);
        let pages = search(index);
        assert_eq!(pages.len(), 1, "{}", ex.name());
        let page = &pages[0];
        assert_eq!(page.token, "564744269307964", "{}", ex.name());
        assert_eq!(page.source.as_deref(), Some("Product"));
        assert_eq!((page.count, page.progress_count, page.total_count), (count, 0, 0));
        assert_eq!(page.inserts.len(), 3, "{}: truncated to 3", ex.name());
        assert!(page.deletes.is_empty() && !page.has_server_errors());
        check_count(page, &ex);
        let json: Value = serde_json::from_str(ex.body()).expect("JSON");
        assert_eq!(*page, reference(&json[0]), "{}", ex.name());
        // A search answer is not a query page.
        assert!(parse_page(ex.body().as_bytes()).is_err());
    }
    assert_eq!(search(2)[0].inserts[0].get("brand"), Some("Motorola"));
    assert_eq!(search(5), []);
    let error = search(6);
    assert_eq!(
        error,
        [Page {
            source: Some("Product".into()),
            search_error: Some(KindError {
                kind: "search-error".into(),
                message: "Search error - invalid token".into(),
            }),
            ..Page::default()
        }]
    );
    assert!(error[0].is_final() && error[0].has_server_errors());
    let searched = exchanges()
        .iter()
        .filter(|e| e.is_search_answer() && !e.is_query_page())
        .count();
    assert_eq!(searched, 6);
}

#[test]
fn transcript_22_errors_only_page_and_echo() {
    let page = recorded_page("22-", 5);
    assert_eq!(
        page,
        Page {
            total_count: 299,
            update_errors: vec![ObjectError {
                id: "31".into(),
                message: "Update conflict: name 'conflict' rejected".into(),
                attrs: attrs(&[("name", "conflict")]),
            }],
            update_rollback: vec![ObjectAttrs {
                id: "31".into(),
                attrs: attrs(&[
                    ("name", "Product 31"),
                    ("brand", "Google"),
                    ("price", "41.31"),
                    ("quantity", "17"),
                    ("sku", "SKU-00031"),
                ]),
            }],
            ..Page::default()
        }
    );
    assert!(page.is_final(), "errors-only page has nothing to acknowledge");
    let echo = recorded_page("22-", 7);
    assert_eq!(
        echo.inserts,
        [
            ObjectAttrs {
                id: "33".into(),
                attrs: attrs(&[("name", "Renamed 33")])
            },
            ObjectAttrs {
                id: "32".into(),
                attrs: attrs(&[("name", "Renamed 32")])
            },
        ]
    );
    assert_eq!(
        echo.deletes,
        [
            ObjectAttrs {
                id: "33".into(),
                attrs: attrs(&[("name", "Product 33")])
            },
            ObjectAttrs {
                id: "32".into(),
                attrs: attrs(&[("name", "Product 32")])
            },
        ]
    );
}

#[test]
fn other_bodies_are_not_pages() {
    let mut rejected = 0;
    for ex in exchanges()
        .iter()
        .filter(|e| !e.is_query_page() && !e.is_search_answer())
    {
        let Some(body) = ex.body.as_deref() else { continue };
        assert!(
            matches!(parse_page(body.as_bytes()), Err(PageError::Json(_))),
            "{}: {body:?}",
            ex.name()
        );
        assert!(parse_search(body.as_bytes()).is_err(), "{}: {body:?}", ex.name());
        rejected += 1;
    }
    assert!(rejected >= 40, "only {rejected} non-page bodies");
}

#[test]
fn every_prefix_of_every_recorded_page_is_an_error() {
    for ex in exchanges().iter().filter(|e| e.is_query_page() || e.is_search_answer()) {
        let body = ex.body().as_bytes();
        for end in 0..body.len() {
            let prefix = &body[..end];
            let complete = serde_json::from_slice::<Value>(prefix).is_ok();
            assert!(
                parse_page(prefix).is_err() || complete,
                "{}: prefix of {end} bytes accepted",
                ex.name()
            );
            assert!(
                parse_search(prefix).is_err() || complete,
                "{}: prefix of {end} bytes accepted",
                ex.name()
            );
        }
    }
}
