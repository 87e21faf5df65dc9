//! Entry points for fuzzing and property tests: the server's router answering one in-process
//! request at a time, and the page encoders. Not a stable API (hidden from the docs); used by
//! `fuzz/` (cargo-fuzz) and by the crate's own property tests.
//!
//! Every input gets a fresh server state, so an answer depends only on the input and a crash
//! found by the fuzzer replays.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, Request};
use tower::ServiceExt as _;

use crate::app::App;
use crate::cookie::{self, Session};
use crate::state::State;
use crate::{ServerConfig, obj::Obj};

/// Replaced, in a request's target, headers and body, by a valid session cookie value of `alice`.
pub const COOKIE_MARKER: &str = "@COOKIE@";
/// Replaced by the id of a client of `alice` that exists in the fresh state.
pub const CLIENT_MARKER: &str = "@CLIENT@";
/// Separates requests in one fuzz input (on a line of its own).
pub const REQUEST_SEPARATOR: &[u8] = b"\n~~~\n";
/// Requests of one input beyond this many are ignored.
pub const MAX_REQUESTS: usize = 8;

/// One request: method, target (`/path?query`), headers, body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawRequest {
    /// The method token (any bytes; invalid ones are not sent).
    pub method: Vec<u8>,
    /// The request target, e.g. `/application?client_id=…`.
    pub target: Vec<u8>,
    /// Header names and values as sent (invalid ones are left out).
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    /// The body.
    pub body: Vec<u8>,
}

impl RawRequest {
    /// Parses the text form `METHOD TARGET\nName: value\n…\n\nBODY` (lenient: anything parses).
    pub fn parse(input: &[u8]) -> RawRequest {
        let (head, body) = match find(input, b"\n\n") {
            Some(i) => (&input[..i], &input[i + 2..]),
            None => (input, &[][..]),
        };
        let mut lines = head.split(|b| *b == b'\n');
        let first = lines.next().unwrap_or_default();
        let (method, target) = match first.iter().position(|b| *b == b' ') {
            Some(i) => (&first[..i], &first[i + 1..]),
            None => (first, &b"/"[..]),
        };
        let headers = lines
            .filter_map(|l| {
                let i = l.iter().position(|b| *b == b':')?;
                let value = l[i + 1..].strip_prefix(b" ").unwrap_or(&l[i + 1..]);
                Some((l[..i].to_vec(), value.to_vec()))
            })
            .collect();
        RawRequest {
            method: method.to_vec(),
            target: target.to_vec(),
            headers,
            body: body.to_vec(),
        }
    }

    /// The text form [`RawRequest::parse`] reads.
    pub fn to_text(&self) -> Vec<u8> {
        let mut out = self.method.clone();
        out.push(b' ');
        out.extend_from_slice(&self.target);
        for (n, v) in &self.headers {
            out.push(b'\n');
            out.extend_from_slice(n);
            out.extend_from_slice(b": ");
            out.extend_from_slice(v);
        }
        out.extend_from_slice(b"\n\n");
        out.extend_from_slice(&self.body);
        out
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn replace(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while let Some(i) = find(rest, from.as_bytes()) {
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(to.as_bytes());
        rest = &rest[i + from.len()..];
    }
    out.extend_from_slice(rest);
    out
}

/// An answer: status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The HTTP status code.
    pub status: u16,
    /// The body (empty when the body failed mid-stream).
    pub body: Vec<u8>,
}

/// A fresh reference server state (the transcripts' app, a fixed secret, small body limit),
/// reachable through its router without a socket, on a current-thread runtime.
pub struct Harness {
    rt: &'static tokio::runtime::Runtime,
    router: axum::Router,
    state: Arc<State>,
    /// References to `state` held by the harness and its router when nothing runs.
    idle_refs: usize,
    cookie: String,
    client_id: String,
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness").finish_non_exhaustive()
    }
}

impl Harness {
    /// A fresh state with one client of `alice`: the transcripts' app (its refusal rules, ids
    /// 1–40 of Product and 1–15 of Customer, so that every input stays cheap).
    ///
    /// # Errors
    /// The runtime or the state's data directory cannot be created.
    pub fn new() -> std::io::Result<Harness> {
        use crate::dataset::{GeneratedAdapter, Refusals, Shape};
        let mut app = App::transcripts();
        app.bulk_job_delay = Duration::ZERO;
        for s in &mut app.sources {
            let (shape, count) = match s.name.as_str() {
                "Product" => (Shape::Product, 40),
                _ => (Shape::Customer, 15),
            };
            s.adapter = Arc::new(GeneratedAdapter::new(&s.name, shape, count, 0, Refusals::transcripts()));
        }
        let mut config = ServerConfig::new(app);
        config.secret = Some(b"tidesync-fuzzing".to_vec());
        config.body_limit = 64 * 1024;
        // One runtime per process: it holds no server state, and its blocking threads are
        // reused from input to input instead of being started and joined every time.
        static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
        let rt = match RT.get() {
            Some(rt) => rt,
            None => {
                let built = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                RT.get_or_init(|| built)
            }
        };
        let state = Arc::new(State::new(config)?);
        let router = crate::http::router(state.clone());
        let idle_refs = Arc::strong_count(&state);
        let cookie = cookie::issue(
            state.secret(),
            &state.app().name,
            &Session {
                session_id: "fuzz".into(),
                login: Some("alice".into()),
            },
        );
        let client_id = state.create_client("alice");
        Ok(Harness {
            rt,
            router,
            state,
            idle_refs,
            cookie,
            client_id,
        })
    }

    /// The valid session cookie value of `alice`.
    pub fn cookie(&self) -> &str {
        &self.cookie
    }

    /// The id of `alice`'s client.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// Changes the backend data as another system would.
    pub fn backend(&self) -> crate::Backend {
        crate::Backend::new(self.state.clone())
    }

    /// Sends `req` (markers replaced) to the router; `None` when it is not a valid HTTP request
    /// (bad method or target), which a real server would refuse before routing.
    pub fn send(&self, req: &RawRequest) -> Option<Answer> {
        let sub = |b: &[u8]| replace(&replace(b, COOKIE_MARKER, &self.cookie), CLIENT_MARKER, &self.client_id);
        let method = Method::from_bytes(&req.method).ok()?;
        let mut builder = Request::builder().method(method).uri(sub(&req.target));
        for (n, v) in &req.headers {
            if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(n), HeaderValue::from_bytes(&sub(v))) {
                builder = builder.header(n, v);
            }
        }
        let request = builder.body(Body::from(sub(&req.body))).ok()?;
        let router = self.router.clone();
        self.rt.block_on(async move {
            let resp = match router.oneshot(request).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            let status = resp.status().as_u16();
            let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .map(|b| b.to_vec())
                .unwrap_or_default();
            Some(Answer { status, body })
        })
    }

    /// Waits (up to 10 s) for background work holding the state (bulk jobs) to end.
    pub fn settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Arc::strong_count(&self.state) > self.idle_refs && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Runs every request of a fuzz input (split on [`REQUEST_SEPARATOR`], at most
/// [`MAX_REQUESTS`]) against a fresh [`Harness`]; returns the answers of the valid ones.
///
/// # Panics
/// When the harness cannot be created (no temporary directory), or when the server panics —
/// which is what a fuzzer looks for.
pub fn run_requests(input: &[u8]) -> Vec<Answer> {
    let h = Harness::new().expect("fuzz harness");
    let mut answers = Vec::new();
    let mut rest = input;
    for _ in 0..MAX_REQUESTS {
        let (one, next) = match find(rest, REQUEST_SEPARATOR) {
            Some(i) => (&rest[..i], Some(&rest[i + REQUEST_SEPARATOR.len()..])),
            None => (rest, None),
        };
        if let Some(a) = h.send(&RawRequest::parse(one)) {
            answers.push(a);
        }
        match next {
            Some(n) => rest = n,
            None => break,
        }
    }
    h.settle();
    answers
}

/// One object of a page: id and attributes in order.
pub type WireObject = (String, Vec<(String, String)>);

/// One failed object of an error map: id, attributes as the client sent them, message.
pub type WireError = (String, Vec<(String, String)>, String);

/// The content of a query page, as [`encode_page`] writes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageContent {
    /// The page token (`""` on a last page).
    pub token: String,
    /// `total_count`.
    pub total_count: usize,
    /// `insert`.
    pub insert: Vec<WireObject>,
    /// `delete`.
    pub delete: Vec<WireObject>,
    /// `links`: temporary id → id.
    pub links: Vec<(String, String)>,
    /// `create-error`: id, attributes, message.
    pub create_errors: Vec<WireError>,
    /// `update-error`.
    pub update_errors: Vec<WireError>,
    /// `delete-error`.
    pub delete_errors: Vec<WireError>,
    /// `update-rollback`.
    pub rollback: Vec<WireObject>,
    /// `source-error`: kind and message.
    pub source_error: Option<(String, String)>,
}

fn obj(attrs: &[(String, String)]) -> Obj {
    Obj::from_pairs(attrs.iter().cloned())
}

/// A query page as the server writes it (`crate::state::Page::to_json`).
pub fn encode_page(p: &PageContent) -> String {
    let objs = |l: &[WireObject]| -> Vec<(Arc<str>, crate::ObjRef)> {
        l.iter()
            .map(|(id, a)| (Arc::from(id.as_str()), Arc::new(obj(a))))
            .collect()
    };
    let errs = |l: &[WireError]| -> Vec<(String, Obj, String)> {
        l.iter().map(|(id, a, m)| (id.clone(), obj(a), m.clone())).collect()
    };
    let page = crate::state::Page {
        token: p.token.clone(),
        total_count: p.total_count,
        insert: objs(&p.insert),
        delete: objs(&p.delete),
        links: p.links.clone(),
        errors: crate::state::ObjectErrors {
            create: errs(&p.create_errors),
            update: errs(&p.update_errors),
            delete: errs(&p.delete_errors),
            rollback: p
                .rollback
                .iter()
                .map(|(id, a)| (id.clone(), Arc::new(obj(a))))
                .collect(),
        },
    };
    let source_error = p.source_error.as_ref().map(|(kind, message)| crate::md::SourceError {
        kind: kind.clone(),
        message: message.clone(),
    });
    page.to_json(source_error.as_ref())
}

/// One source's part of a search answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchPart {
    /// A page of results: source, token, objects.
    Page(String, String, Vec<WireObject>),
    /// The source's search failed: source, message.
    Error(String, String),
    /// No more results for the source (`[]`).
    Done,
}

/// A search answer as the server writes it: one inner array per source.
pub fn encode_search(parts: &[SearchPart]) -> String {
    let mut out = String::from("[");
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match part {
            SearchPart::Page(source, token, objects) => {
                let objects: Vec<(Arc<str>, Obj)> =
                    objects.iter().map(|(id, a)| (Arc::from(id.as_str()), obj(a))).collect();
                crate::search::write_search_page(&mut out, source, token, &objects);
            }
            SearchPart::Error(source, message) => crate::search::write_search_error(&mut out, source, message),
            SearchPart::Done => out.push_str("[]"),
        }
    }
    out.push(']');
    out
}

/// The `Set-Cookie` header value the server sends for the cookie `value`.
pub fn set_cookie(value: &str) -> String {
    cookie::set_cookie(value)
}

/// A session cookie value for `login` signed with `secret`, as the server issues it.
pub fn issue_cookie(secret: &[u8], app_name: &str, session_id: &str, login: Option<&str>) -> String {
    cookie::issue(
        secret,
        app_name,
        &Session {
            session_id: session_id.to_owned(),
            login: login.map(str::to_owned),
        },
    )
}
