//! Test harness for TideSync's cross-crate tests.
//!
//! * [`TestServer`]: a reference server (`tidesync-server`) bound to `127.0.0.1:0` on its own
//!   thread, started with the transcripts' application or a generated data set.
//! * [`Http`]: a raw HTTP helper on ureq 3 that sends exactly the request it is given (method,
//!   path and query, headers, body), never follows redirects, never turns a status into an error,
//!   and returns status, headers (case-insensitive lookup) and body.
//! * [`Client`]: a minimal RhoConnect protocol client for tests: login, clientcreate, one page
//!   query, push, and a full pull loop that applies pages to a [`Store`].
//!
//! Nothing here sleeps to synchronize: every request is bounded by the agent's timeouts and every
//! loop by a page budget.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
pub use tidesync_server;
use tidesync_server::{App, DatasetSpec, Server, ServerConfig};

/// Objects as a test client holds them: id → attribute → value.
pub type Store = BTreeMap<String, BTreeMap<String, String>>;

/// What went wrong in a harness call.
#[derive(Debug)]
pub enum Error {
    /// The request could not be sent or its answer could not be read (connection refused or
    /// reset, timeout, bad URI).
    Transport(String),
    /// The server answered with an unexpected status.
    Status {
        /// What was being done, e.g. `login alice`.
        what: String,
        /// The status received.
        status: u16,
        /// The body received (lossy UTF-8, cut to 500 characters).
        body: String,
    },
    /// The answer does not follow the protocol.
    Protocol(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Transport(m) => write!(f, "transport: {m}"),
            Error::Status { what, status, body } => write!(f, "{what}: status {status}, body {body:?}"),
            Error::Protocol(m) => write!(f, "protocol: {m}"),
        }
    }
}

impl std::error::Error for Error {}

/// Result alias of the harness.
pub type Result<T> = std::result::Result<T, Error>;

/// A reference server for one test. Stops when dropped.
#[derive(Debug)]
pub struct TestServer {
    /// The running server (its backend, faults, URLs).
    pub server: Server,
}

impl TestServer {
    /// The transcripts' application (Product: app partition, 300 objects; Customer: user
    /// partition, 120 per user; password `password`). `test_routes` enables transcript 15's
    /// harness route `POST /app/v1/Product/test_backend_change`.
    pub fn transcripts(test_routes: bool) -> Self {
        let mut cfg = ServerConfig::new(App::transcripts());
        cfg.test_routes = test_routes;
        Self::with_config(cfg)
    }

    /// A generated application, e.g. `"Item=10000x10"` (see [`DatasetSpec::parse_list`]).
    pub fn generated(spec: &str, seed: u64) -> Self {
        let specs = DatasetSpec::parse_list(spec).expect("the test passes a valid dataset spec");
        Self::with_config(ServerConfig::new(App::generated(&specs, seed)))
    }

    /// A server started from `config` (which should bind `127.0.0.1:0`).
    pub fn with_config(config: ServerConfig) -> Self {
        let server = Server::start(config).expect("the reference server binds a loopback port");
        Self { server }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// A raw HTTP helper aimed at this server.
    pub fn http(&self) -> Http {
        Http::new(&self.url())
    }

    /// A protocol client aimed at this server (not logged in yet).
    pub fn client(&self) -> Client {
        Client::new(self.http())
    }

    /// The backend's current objects of `source` (`user`: `None` for the app partition) as a
    /// [`Store`].
    pub fn backend_store(&self, source: &str, user: Option<&str>) -> Store {
        store_of(
            self.server
                .backend()
                .objects(source, user)
                .expect("the backend lists the source"),
        )
    }
}

/// One HTTP answer.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers in the order received (names as the HTTP library reports them: lower case).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every header named `name` (case-insensitive), in order.
    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body as text (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    ///
    /// # Errors
    /// The body is not JSON.
    pub fn json(&self) -> Result<Value> {
        serde_json::from_slice(&self.body)
            .map_err(|e| Error::Protocol(format!("body is not JSON ({e}): {}", cut(&self.text(), 300))))
    }

    /// The `name=value` part of the `rhoconnect_session` cookie set by this answer, if any.
    pub fn session_cookie(&self) -> Option<String> {
        self.headers_named("set-cookie")
            .into_iter()
            .filter_map(|v| v.split(';').next())
            .map(str::trim)
            .find(|nv| nv.starts_with("rhoconnect_session="))
            .map(str::to_owned)
    }

    fn expect_status(self, what: &str, status: u16) -> Result<Response> {
        if self.status == status {
            Ok(self)
        } else {
            Err(Error::Status {
                what: what.to_owned(),
                status: self.status,
                body: cut(&self.text(), 500),
            })
        }
    }
}

/// `s` cut to `max` characters (for messages).
pub fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(max).collect();
        out.push('…');
        out
    }
}

/// Largest response body read (bulk files and one-page syncs of large sets are well below).
const BODY_LIMIT: u64 = 256 * 1024 * 1024;

/// A raw HTTP helper: one pooled ureq agent, no redirects, statuses returned as they are, timeouts
/// on every phase so that a stuck server fails the test instead of hanging it.
#[derive(Clone)]
pub struct Http {
    agent: ureq::Agent,
    base: String,
}

impl fmt::Debug for Http {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Http").field("base", &self.base).finish_non_exhaustive()
    }
}

impl Http {
    /// A helper for the server at `base` (`http://127.0.0.1:PORT`, no trailing slash), with a
    /// 60 s budget per request.
    pub fn new(base: &str) -> Self {
        Self::with_timeout(base, Duration::from_secs(60))
    }

    /// Like [`Http::new`] with a per-request budget of `timeout`.
    pub fn with_timeout(base: &str, timeout: Duration) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(timeout))
            .timeout_connect(Some(Duration::from_secs(5)))
            .build()
            .new_agent();
        Self {
            agent,
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends `method path_and_query` with exactly `headers` (plus ureq's own `Host`,
    /// `User-Agent`, `Accept`) and `body`. `path_and_query` is used as given, except that bytes
    /// an HTTP URI cannot carry (space, `"`, `<`, `>`, non-ASCII, …) are percent-encoded, as
    /// Python `requests` did when the transcripts were recorded. No `Content-Type` is added.
    ///
    /// # Errors
    /// [`Error::Transport`] when no complete answer was received.
    pub fn send(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Response> {
        let uri = format!("{}{}", self.base, encode_uri_text(path_and_query));
        let mut builder = ureq::http::Request::builder().method(method).uri(&uri);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let sent = match body {
            None => builder
                .body(())
                .map_err(|e| Error::Transport(format!("{method} {}: {e}", cut(&uri, 200))))
                .and_then(|req| {
                    self.agent
                        .run(req)
                        .map_err(|e| Error::Transport(format!("{method} {}: {e}", cut(&uri, 200))))
                }),
            Some(b) => builder
                .body(b.to_vec())
                .map_err(|e| Error::Transport(format!("{method} {}: {e}", cut(&uri, 200))))
                .and_then(|req| {
                    self.agent
                        .run(req)
                        .map_err(|e| Error::Transport(format!("{method} {}: {e}", cut(&uri, 200))))
                }),
        };
        let mut resp = sent?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = resp
            .body_mut()
            .with_config()
            .limit(BODY_LIMIT)
            .read_to_vec()
            .map_err(|e| Error::Transport(format!("{method} {}: reading the body: {e}", cut(&uri, 200))))?;
        Ok(Response { status, headers, body })
    }

    /// `GET path_and_query` with `headers`.
    ///
    /// # Errors
    /// See [`Http::send`].
    pub fn get(&self, path_and_query: &str, headers: &[(&str, &str)]) -> Result<Response> {
        self.send("GET", path_and_query, headers, None)
    }

    /// `POST path` with a JSON body (`Content-Type: application/json`) and `headers`.
    ///
    /// # Errors
    /// See [`Http::send`].
    pub fn post_json(&self, path: &str, headers: &[(&str, &str)], body: &Value) -> Result<Response> {
        let mut all = vec![("Content-Type", "application/json")];
        all.extend_from_slice(headers);
        self.send("POST", path, &all, Some(body.to_string().as_bytes()))
    }
}

/// Sends one HTTP/1.1 request over a plain TCP connection, for request targets an HTTP library
/// refuses to build (the `http` crate caps a URI at 64 KiB). The request is written as given
/// (`Connection: close` is added) and the answer is read until the server closes the
/// connection; chunked bodies are decoded. `base` is `http://HOST:PORT`.
///
/// # Errors
/// [`Error::Transport`] when the connection fails or the answer is not HTTP.
pub fn raw_request(
    base: &str,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> Result<Response> {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://").trim_end_matches('/');
    let transport = |e: std::io::Error| Error::Transport(format!("{method} {}: {e}", cut(target, 100)));
    let mut stream = std::net::TcpStream::connect(addr).map_err(transport)?;
    stream.set_read_timeout(Some(timeout)).map_err(transport)?;
    stream.set_write_timeout(Some(timeout)).map_err(transport)?;
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).map_err(transport)?;
    stream.write_all(body).map_err(transport)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(transport)?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| {
        Error::Transport(format!(
            "{method} {}: no HTTP answer ({} bytes)",
            cut(target, 100),
            raw.len()
        ))
    })?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| Error::Transport(format!("{method} {}: bad status line in {head:?}", cut(target, 100))))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        body = dechunk(&body)
            .ok_or_else(|| Error::Transport(format!("{method} {}: bad chunked body", cut(target, 100))))?;
    }
    Ok(Response { status, headers, body })
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let size_text = String::from_utf8_lossy(&b[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        b = &b[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

/// Percent-encodes the bytes of `s` that may not appear in an HTTP request target; everything
/// else (including `%`, `[`, `]`, `&`, `=`) is kept as it is.
pub fn encode_uri_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        let keep = matches!(b, b'!' | b'$'..=b';' | b'=' | b'?'..=b'~')
            && !matches!(b, b'\\' | b'^' | b'`' | b'{' | b'|' | b'}');
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Encodes one query value (`application/x-www-form-urlencoded`).
pub fn query_value(v: &str) -> String {
    form_urlencoded::byte_serialize(v.as_bytes()).collect()
}

/// One parsed query page (RhoConnect protocol version 3).
#[derive(Debug, Clone)]
pub struct Page {
    /// The key of each element of the page array, in order (`version`, `token`, …, then the
    /// command keys joined with `+`, or `{}` for an empty commands object).
    pub element_keys: Vec<String>,
    /// `version` element.
    pub version: Option<i64>,
    /// `token` element (`""` on the last page).
    pub token: Option<String>,
    /// `count` element.
    pub count: Option<u64>,
    /// `progress_count` element.
    pub progress_count: Option<u64>,
    /// `total_count` element.
    pub total_count: Option<u64>,
    /// `source` element (search pages).
    pub source: Option<String>,
    /// The command keys and their values (`insert`, `delete`, `links`, errors, …).
    pub commands: serde_json::Map<String, Value>,
}

const META_KEYS: [&str; 7] = [
    "version",
    "token",
    "count",
    "progress_count",
    "total_count",
    "source",
    "refresh_time",
];

impl Page {
    /// Parses a page array.
    ///
    /// # Errors
    /// The value is not an array of single-purpose objects.
    pub fn parse(v: &Value) -> Result<Page> {
        let arr = v
            .as_array()
            .ok_or_else(|| Error::Protocol(format!("page is not an array: {}", cut(&v.to_string(), 200))))?;
        let mut page = Page {
            element_keys: Vec::new(),
            version: None,
            token: None,
            count: None,
            progress_count: None,
            total_count: None,
            source: None,
            commands: serde_json::Map::new(),
        };
        for el in arr {
            let obj = el
                .as_object()
                .ok_or_else(|| Error::Protocol(format!("page element is not an object: {el}")))?;
            let meta = obj.len() == 1 && obj.keys().all(|k| META_KEYS.contains(&k.as_str()));
            if meta {
                let (k, val) = obj.iter().next().expect("one key");
                page.element_keys.push(k.clone());
                match k.as_str() {
                    "version" => page.version = val.as_i64(),
                    "token" => page.token = Some(val.as_str().map(str::to_owned).unwrap_or_else(|| val.to_string())),
                    "count" => page.count = val.as_u64(),
                    "progress_count" => page.progress_count = val.as_u64(),
                    "total_count" => page.total_count = val.as_u64(),
                    "source" => page.source = val.as_str().map(str::to_owned),
                    _ => {}
                }
            } else {
                let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
                keys.sort_unstable();
                page.element_keys.push(if keys.is_empty() {
                    "{}".to_owned()
                } else {
                    keys.join("+")
                });
                for (k, val) in obj {
                    page.commands.insert(k.clone(), val.clone());
                }
            }
        }
        Ok(page)
    }

    /// The token, `""` when absent.
    pub fn token_str(&self) -> &str {
        self.token.as_deref().unwrap_or("")
    }

    /// Ids of command `key` (`insert`, `delete`, …), in page order.
    pub fn ids(&self, key: &str) -> Vec<String> {
        self.commands
            .get(key)
            .and_then(Value::as_object)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Applies the page to `store` as a client must: deletes first (each listed attribute is
    /// removed), then inserts (each listed attribute is set), then links rename temporary ids;
    /// objects left without attributes are removed.
    ///
    /// # Errors
    /// `insert` or `delete` does not have the `{id: {attr: "value"}}` shape.
    pub fn apply(&self, store: &mut Store) -> Result<()> {
        if let Some(del) = self.commands.get("delete") {
            for (id, attrs) in objects_of(del, "delete")? {
                if let Some(obj) = store.get_mut(&id) {
                    for (k, _) in attrs {
                        obj.remove(&k);
                    }
                    if obj.is_empty() {
                        store.remove(&id);
                    }
                }
            }
        }
        if let Some(ins) = self.commands.get("insert") {
            for (id, attrs) in objects_of(ins, "insert")? {
                let obj = store.entry(id).or_default();
                obj.extend(attrs);
            }
        }
        if let Some(links) = self.commands.get("links").and_then(Value::as_object) {
            for (tmp, link) in links {
                if let Some(new_id) = link.get("l").and_then(Value::as_str)
                    && let Some(obj) = store.remove(tmp)
                {
                    store.insert(new_id.to_owned(), obj);
                }
            }
        }
        store.retain(|_, attrs| !attrs.is_empty());
        Ok(())
    }
}

/// Attributes of one object in a page, in page order.
type Attrs = Vec<(String, String)>;

fn objects_of(v: &Value, what: &str) -> Result<Vec<(String, Attrs)>> {
    let map = v
        .as_object()
        .ok_or_else(|| Error::Protocol(format!("`{what}` is not an object")))?;
    map.iter()
        .map(|(id, attrs)| {
            let attrs = attrs
                .as_object()
                .ok_or_else(|| Error::Protocol(format!("`{what}` of {id} is not an object")))?;
            let attrs = attrs
                .iter()
                .map(|(k, val)| {
                    val.as_str()
                        .map(|s| (k.clone(), s.to_owned()))
                        .ok_or_else(|| Error::Protocol(format!("`{what}` {id}.{k} is not a string: {val}")))
                })
                .collect::<Result<Vec<_>>>()?;
            Ok((id.clone(), attrs))
        })
        .collect()
}

/// What one pull loop did.
#[derive(Debug, Clone, Default)]
pub struct SyncReport {
    /// Pages received, including the final one.
    pub pages: usize,
    /// Objects received in `insert` over all pages.
    pub inserted: usize,
    /// `total_count` of the last page.
    pub total_count: u64,
}

/// A minimal RhoConnect client for tests, on the protocol-3 (`/application`) routes.
#[derive(Debug, Clone)]
pub struct Client {
    /// The HTTP helper.
    pub http: Http,
    /// `rhoconnect_session=…` after login.
    pub cookie: Option<String>,
    /// The client id after clientcreate.
    pub client_id: Option<String>,
    /// The application path word (`application`).
    pub app: String,
    /// When set, [`Client::sync`] gives up (with an error) once this instant has passed.
    pub deadline: Option<Instant>,
}

impl Client {
    /// A client that is not logged in.
    pub fn new(http: Http) -> Self {
        Self {
            http,
            cookie: None,
            client_id: None,
            app: "application".into(),
            deadline: None,
        }
    }

    fn cookie_header(&self) -> Vec<(&str, &str)> {
        self.cookie.as_deref().map(|c| vec![("Cookie", c)]).unwrap_or_default()
    }

    fn client_id(&self) -> Result<&str> {
        self.client_id
            .as_deref()
            .ok_or_else(|| Error::Protocol("no client id: call client_create first".into()))
    }

    /// Rhodes login: `POST /application/clientlogin` with a JSON body; keeps the session cookie.
    ///
    /// # Errors
    /// Not 200, or no `rhoconnect_session` cookie in the answer.
    pub fn login(&mut self, login: &str, password: &str) -> Result<()> {
        let body = serde_json::json!({"login": login, "password": password, "remember_me": 1});
        let resp = self
            .http
            .post_json(&format!("/{}/clientlogin", self.app), &[], &body)?
            .expect_status(&format!("login {login}"), 200)?;
        let cookie = resp
            .session_cookie()
            .ok_or_else(|| Error::Protocol(format!("login {login}: no rhoconnect_session cookie")))?;
        self.cookie = Some(cookie);
        Ok(())
    }

    /// `GET /application/clientcreate`; keeps and returns the new client id.
    ///
    /// # Errors
    /// Not 200, or no `client.client_id` in the answer.
    pub fn client_create(&mut self) -> Result<String> {
        let resp = self
            .http
            .get(&format!("/{}/clientcreate", self.app), &self.cookie_header())?
            .expect_status("clientcreate", 200)?;
        let v = resp.json()?;
        let id = v
            .pointer("/client/client_id")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::Protocol(format!("clientcreate: no client id in {v}")))?
            .to_owned();
        self.client_id = Some(id.clone());
        Ok(id)
    }

    /// One query request (`GET /application?client_id=..&p_size=..&version=3&source_name=..[&token=..]`),
    /// returned raw.
    ///
    /// # Errors
    /// Transport failure only; the status is not checked.
    pub fn query_raw(&self, source: &str, p_size: usize, token: Option<&str>) -> Result<Response> {
        let mut q = format!(
            "/{}?client_id={}&p_size={p_size}&version=3&source_name={}",
            self.app,
            query_value(self.client_id()?),
            query_value(source)
        );
        if let Some(t) = token {
            q.push_str("&token=");
            q.push_str(&query_value(t));
        }
        self.http.get(&q, &self.cookie_header())
    }

    /// One query page, checked (status 200, a page array).
    ///
    /// # Errors
    /// Not 200 or not a page.
    pub fn query(&self, source: &str, p_size: usize, token: Option<&str>) -> Result<Page> {
        let resp = self
            .query_raw(source, p_size, token)?
            .expect_status(&format!("query {source}"), 200)?;
        Page::parse(&resp.json()?)
    }

    /// Pulls `source` until the page with token `""`, acknowledging each page's token, applying
    /// every page to `store`. At most `max_pages` pages.
    ///
    /// # Errors
    /// A request failed, a page is malformed, or the budget of pages ran out.
    pub fn sync(&self, source: &str, p_size: usize, store: &mut Store, max_pages: usize) -> Result<SyncReport> {
        let mut report = SyncReport::default();
        let mut token: Option<String> = None;
        while report.pages < max_pages {
            if self.deadline.is_some_and(|d| Instant::now() > d) {
                return Err(Error::Protocol(format!(
                    "sync {source}: deadline passed after {} pages",
                    report.pages
                )));
            }
            let page = self.query(source, p_size, token.as_deref())?;
            report.pages += 1;
            report.inserted += page.ids("insert").len();
            report.total_count = page.total_count.unwrap_or(0);
            page.apply(store)?;
            let t = page.token_str();
            if t.is_empty() {
                return Ok(report);
            }
            token = Some(t.to_owned());
        }
        Err(Error::Protocol(format!(
            "sync {source}: no final page after {max_pages} pages"
        )))
    }

    /// `POST /application` with `{"source_name":..,"client_id":..}` plus `changes` (an object with
    /// `create` / `update` / `delete`).
    ///
    /// # Errors
    /// Not 200.
    pub fn push(&self, source: &str, changes: &Value) -> Result<()> {
        let mut body = serde_json::json!({"source_name": source, "client_id": self.client_id()?});
        if let (Some(b), Some(c)) = (body.as_object_mut(), changes.as_object()) {
            for (k, v) in c {
                b.insert(k.clone(), v.clone());
            }
        }
        self.http
            .post_json(&format!("/{}", self.app), &self.cookie_header(), &body)?
            .expect_status(&format!("push {source}"), 200)?;
        Ok(())
    }
}

/// Where the recorded transcripts are: `$TIDESYNC_TRANSCRIPTS`, else `shared/spec/transcripts`
/// next to the repository (as laid out for developers and CI), else `/work/shared/spec/transcripts`.
pub fn transcripts_dir() -> PathBuf {
    let candidates = [
        std::env::var_os("TIDESYNC_TRANSCRIPTS").map(PathBuf::from),
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/spec/transcripts")),
        Some(PathBuf::from("/work/shared/spec/transcripts")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.join("README.md").is_file())
        .expect("transcripts not found: set TIDESYNC_TRANSCRIPTS or lay shared/spec/transcripts beside the repository")
}

/// Turns a backend snapshot into a [`Store`].
pub fn store_of(objects: Vec<(String, tidesync_server::Obj)>) -> Store {
    objects
        .into_iter()
        .map(|(id, obj)| (id, obj.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect()))
        .collect()
}

/// A short description of how two stores differ (for assertion messages).
pub fn store_diff(expected: &Store, actual: &Store) -> String {
    let missing: Vec<&String> = expected.keys().filter(|k| !actual.contains_key(*k)).collect();
    let extra: Vec<&String> = actual.keys().filter(|k| !expected.contains_key(*k)).collect();
    let differing: Vec<&String> = expected
        .iter()
        .filter(|(k, v)| actual.get(*k).is_some_and(|a| a != *v))
        .map(|(k, _)| k)
        .collect();
    format!(
        "expected {} objects, got {}; missing {} (e.g. {:?}), extra {} (e.g. {:?}), differing {} (e.g. {:?})",
        expected.len(),
        actual.len(),
        missing.len(),
        missing.iter().take(5).collect::<Vec<_>>(),
        extra.len(),
        extra.iter().take(5).collect::<Vec<_>>(),
        differing.len(),
        differing
            .iter()
            .take(5)
            .map(|k| (k, expected.get(*k), actual.get(*k)))
            .collect::<Vec<_>>()
    )
}

/// How many times the server applied each marked change of `source` (`None`: every source):
/// creates by their `ctag` attribute, updates by their `utag` attribute, deletes by object id
/// (the markers the crash test and the fault matrix put on their local changes). Unmarked
/// creates and updates count under `"?"`.
pub fn applied_by_marker(
    log: &[tidesync_server::AppliedChange],
    source: Option<&str>,
) -> std::collections::HashMap<(tidesync_server::AppliedOp, String), u32> {
    use tidesync_server::AppliedOp;
    let mut seen = std::collections::HashMap::new();
    for change in log.iter().filter(|c| source.is_none_or(|s| c.source == s)) {
        let key = match change.op {
            AppliedOp::Create => change.attrs.get("ctag").unwrap_or("?").to_owned(),
            AppliedOp::Update => change.attrs.get("utag").unwrap_or("?").to_owned(),
            AppliedOp::Delete => change.id.clone(),
        };
        *seen.entry((change.op, key)).or_default() += 1;
    }
    seen
}
