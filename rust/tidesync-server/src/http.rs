//! HTTP routes: the RhoConnect API as RhoConnect 7.8 answers it (status codes, bodies, headers).
//!
//! Every handler reads the raw request and builds its answer through [`Reply`], which adds the
//! headers the real server sends (`Cache-Control`/`pragma: no-cache`, the deprecation `Warning`
//! on `/application/*` routes, the re-issued session cookie).

// Handlers return ready answers as errors (`Result<_, Response>`), as axum handlers do.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State as AxState};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{any, get, post};

use crate::cookie::{self, Session};
use crate::cud::PushBody;
use crate::fault::{FaultKind, Route};
use crate::net::ConnCtl;
use crate::obj::Obj;
use crate::search::SearchSource;
use crate::state::{ClientError, State, random_hex};

type St = Arc<State>;

const HTML: &str = "text/html;charset=utf-8";
const JSON: &str = "application/json";
const TEXT: &str = "text/plain";
const CLIENT_DATA_ERROR: &str = "Server error while processing client data";
/// Longest source name accepted; longer ones are answered like a missing source.
const MAX_SOURCE_NAME: usize = 255;
/// Dynamic (unknown) sources one user may create before further unknown names are refused.
const MAX_DYNAMIC_SOURCES: usize = 64;

/// Builds every route.
pub(crate) fn router(state: St) -> Router {
    let limit = state.config().body_limit;
    let mut r = Router::new()
        .route("/application/clientlogin", post(login))
        .route("/api/application/clientlogin", post(login))
        .route("/rc/v1/app/login", post(login))
        .route("/application/clientcreate", get(client_create))
        .route("/rc/v1/clients", post(client_create))
        .route("/application/clientregister", post(client_register))
        .route("/rc/v1/clients/{id}/register", post(client_register))
        .route("/application/clientreset", get(client_reset))
        .route("/rc/v1/clients/{id}/reset", post(client_reset))
        .route("/rc/v1/clients/{id}", get(admin_only))
        .route("/application", get(query).post(push))
        .route("/api/application", get(query).post(push))
        .route("/api/application/query", get(query))
        .route("/api/application/queue_updates", post(push))
        .route("/app/v1/{source}", get(query).post(push))
        .route("/app/v1/{source}/{id}", axum::routing::put(push).delete(push))
        .route("/application/search", get(search))
        .route("/rc/v1/app/search", post(search))
        .route("/application/bulk_data", get(bulk_data))
        .route("/rc/v1/app/bulk_data", post(bulk_data))
        .route("/data/{*path}", get(bulk_file))
        .route("/blobs/{id}", get(crate::blob::download));
    if state.config().test_routes {
        r = r.route("/app/v1/Product/test_backend_change", post(test_backend_change));
    }
    r.fallback(any(not_found))
        .method_not_allowed_fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), faults))
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        .with_state(state)
}

// ---------------------------------------------------------------------------------------------
// Request helpers

/// The parts of a request every handler needs.
struct Req {
    method: Method,
    path: String,
    query: Vec<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
    cookie: Option<(String, Session)>,
    duplicate_page: bool,
    path_params: Vec<String>,
}

impl Req {
    async fn read(state: &State, req: Request) -> Result<Req, Response> {
        let (parts, body) = req.into_parts();
        let limit = state.config().body_limit;
        let body = read_body(body, limit).await.ok_or_else(|| {
            Reply::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                TEXT,
                format!("Request body larger than {limit} bytes"),
            )
            .finish()
        })?;
        let query = parts
            .uri
            .query()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        let cookie = parts
            .headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(cookie::from_header)
            .and_then(|v| cookie::verify(state.secret(), v).map(|s| (v.to_owned(), s)));
        let duplicate_page = parts.extensions.get::<FaultFlags>().is_some_and(|f| f.duplicate_page);
        let path_params = path_params(parts.uri.path());
        Ok(Req {
            method: parts.method,
            path: parts.uri.path().to_owned(),
            query,
            headers: parts.headers,
            body,
            cookie,
            duplicate_page,
            path_params,
        })
    }

    fn param(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn is_json(&self) -> bool {
        self.header("content-type")
            .is_some_and(|c| c.to_ascii_lowercase().starts_with("application/json"))
    }

    fn is_form(&self) -> bool {
        self.header("content-type")
            .is_some_and(|c| c.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"))
    }

    /// `/application*` and `/api/application*` routes are deprecated in RhoConnect 7.8.
    fn deprecated(&self) -> Option<String> {
        (self.path.starts_with("/application") || self.path.starts_with("/api/application")).then(|| {
            format!(
                "Use of the {} {} is deprecated. Use Rhoconnect API v1 instead.",
                self.method, self.path
            )
        })
    }

    /// A reply carrying this request's standard headers (deprecation warning, cookie).
    fn reply(&self, status: StatusCode, ctype: &'static str, body: impl Into<Body>) -> Reply {
        let mut r = Reply::new(status, ctype, body);
        r.warning = self.deprecated();
        r.cookie = self.cookie.as_ref().map(|(v, _)| v.clone());
        r
    }

    /// The signed-in user, or the `401 Not authenticated` answer.
    fn user(&self) -> Result<String, Response> {
        match &self.cookie {
            Some((_, Session { login: Some(l), .. })) => Ok(l.clone()),
            _ => Err(Reply::new(StatusCode::UNAUTHORIZED, TEXT, "Not authenticated").finish()),
        }
    }

    /// The body as JSON (`Ok(None)` when it is not sent as JSON), or the 500 the real server sends.
    fn json(&self) -> Result<Option<serde_json::Value>, Response> {
        if !self.is_json() {
            return Ok(None);
        }
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Some(serde_json::Value::Object(Default::default())));
        }
        serde_json::from_slice(&self.body)
            .map(Some)
            .map_err(|_| client_data_error())
    }

    /// The client id from the parameters, the JSON body, or the `X-RhoConnect-CLIENT-ID` header.
    fn client_id(&self, body: Option<&serde_json::Value>) -> Option<String> {
        self.param("client_id")
            .map(str::to_owned)
            .or_else(|| {
                body.and_then(|b| b.get("client_id"))
                    .and_then(|v| v.as_str())
                    .map(str::to_owned)
            })
            .or_else(|| self.header("x-rhoconnect-client-id").map(str::to_owned))
    }
}

/// Reads a body of at most `limit` bytes. A larger body is read on and discarded (up to
/// [`DRAIN_LIMIT`]) so that the client finishes sending and sees the `413`, instead of a
/// connection reset in the middle of its upload; `None` then.
async fn read_body(body: Body, limit: usize) -> Option<Bytes> {
    use http_body_util::BodyExt as _;
    let mut body = body;
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { return None };
        if let Ok(data) = frame.into_data() {
            seen = seen.saturating_add(data.len());
            if seen <= limit {
                buf.extend_from_slice(&data);
            } else if seen > DRAIN_LIMIT {
                return None;
            }
        }
    }
    (seen <= limit).then(|| buf.freeze())
}

/// How much of an oversized body is read and discarded before the connection is closed.
const DRAIN_LIMIT: usize = 256 * 1024 * 1024;

/// The variable segments of REST paths: `/app/v1/<source>[/<id>]`, `/rc/v1/clients/<id>/…`.
fn path_params(path: &str) -> Vec<String> {
    let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
    if let Some(rest) = path.strip_prefix("/app/v1/") {
        return rest.split('/').filter(|s| !s.is_empty()).map(decode).collect();
    }
    if let Some(rest) = path.strip_prefix("/rc/v1/clients/") {
        return rest
            .split('/')
            .next()
            .filter(|s| !s.is_empty())
            .map(decode)
            .into_iter()
            .collect();
    }
    Vec::new()
}

fn client_data_error() -> Response {
    let mut resp = Response::new(Body::from(CLIENT_DATA_ERROR));
    *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(TEXT));
    resp.headers_mut()
        .insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    resp
}

/// An answer under construction.
struct Reply {
    status: StatusCode,
    ctype: &'static str,
    body: Body,
    warning: Option<String>,
    cookie: Option<String>,
    extra: Vec<(&'static str, String)>,
}

impl Reply {
    fn new(status: StatusCode, ctype: &'static str, body: impl Into<Body>) -> Self {
        Self {
            status,
            ctype,
            body: body.into(),
            warning: None,
            cookie: None,
            extra: Vec::new(),
        }
    }

    fn header(mut self, name: &'static str, value: String) -> Self {
        self.extra.push((name, value));
        self
    }

    fn finish(self) -> Response {
        let mut resp = Response::new(self.body);
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        h.insert("pragma", HeaderValue::from_static("no-cache"));
        if let Some(w) = self.warning.and_then(|w| HeaderValue::from_str(&w).ok()) {
            h.insert(header::WARNING, w);
        }
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(self.ctype));
        for (name, value) in self.extra {
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.insert(name, v);
            }
        }
        if let Some(c) = self
            .cookie
            .and_then(|c| HeaderValue::from_str(&cookie::set_cookie(&c)).ok())
        {
            h.insert(header::SET_COOKIE, c);
        }
        h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
        if self.ctype == HTML {
            h.insert("x-xss-protection", HeaderValue::from_static("1; mode=block"));
            h.insert("x-frame-options", HeaderValue::from_static("SAMEORIGIN"));
        }
        resp
    }
}

/// `500 Unknown client` (RhoConnect sends these errors without the deprecation warning).
fn unknown_client(req: &Req) -> Response {
    let mut r = req.reply(StatusCode::INTERNAL_SERVER_ERROR, HTML, "Unknown client");
    r.warning = None;
    r.finish()
}

/// `500 Unknown source`, without the deprecation warning.
fn unknown_source(req: &Req) -> Response {
    let mut r = req.reply(StatusCode::INTERNAL_SERVER_ERROR, HTML, "Unknown source");
    r.warning = None;
    r.finish()
}

/// Ruby's `String#to_i` for a page size: leading digits, else 0.
fn ruby_to_usize(s: &str) -> usize {
    let digits: String = s.trim_start().chars().take_while(|c| c.is_ascii_digit()).collect();
    digits
        .parse::<usize>()
        .unwrap_or(if digits.is_empty() { 0 } else { usize::MAX })
}

/// Runs blocking state work off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Response> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        log::error!("handler panicked: {e}");
        Reply::new(StatusCode::INTERNAL_SERVER_ERROR, TEXT, "Internal Server Error").finish()
    })
}

macro_rules! tri {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(resp) => return resp,
        }
    };
}

// ---------------------------------------------------------------------------------------------
// Handlers

async fn login(AxState(st): AxState<St>, req: Request) -> Response {
    let req = tri!(Req::read(&st, req).await);
    let (login, password) = if req.is_form() {
        let form: Vec<(String, String)> = form_urlencoded::parse(&req.body).into_owned().collect();
        let get = |k: &str| {
            form.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        (get("login"), get("password"))
    } else {
        let body = tri!(req.json()).unwrap_or_default();
        let get = |k: &str| body.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
        (get("login"), get("password"))
    };
    let auth = st.app().auth.clone();
    let (l, p) = (login.clone(), password);
    let ok = tri!(blocking(move || auth.authenticate(&l, &p)).await);
    let app = st.app().name.clone();
    if !ok {
        let anon = cookie::issue(
            st.secret(),
            &app,
            &Session {
                session_id: random_hex(32),
                login: None,
            },
        );
        let mut r = req.reply(
            StatusCode::UNAUTHORIZED,
            HTML,
            format!("Unable to authenticate '{login}'"),
        );
        r.cookie = Some(anon);
        return r.finish();
    }
    let value = cookie::issue(
        st.secret(),
        &app,
        &Session {
            session_id: random_hex(32),
            login: Some(login),
        },
    );
    let body = if req.path.starts_with("/api/") {
        let escaped: String =
            form_urlencoded::byte_serialize(format!("{}={value};", cookie::NAME).as_bytes()).collect::<String>();
        serde_json::json!({ "rhoconnect_session": escaped }).to_string()
    } else {
        String::new()
    };
    let mut r = req.reply(StatusCode::OK, HTML, body);
    r.cookie = Some(value);
    r.finish()
}

async fn client_create(AxState(st): AxState<St>, req: Request) -> Response {
    let req = tri!(Req::read(&st, req).await);
    let user = tri!(req.user());
    let id = st.create_client(&user);
    req.reply(
        StatusCode::OK,
        JSON,
        serde_json::json!({"client": {"client_id": id}}).to_string(),
    )
    .finish()
}

async fn client_register(AxState(st): AxState<St>, req: Request) -> Response {
    let req = tri!(Req::read(&st, req).await);
    let user = tri!(req.user());
    let body = tri!(req.json()).unwrap_or_default();
    let id = req
        .path_params
        .first()
        .cloned()
        .or_else(|| req.client_id(Some(&body)))
        .unwrap_or_default();
    let fields: Vec<(String, String)> = body
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    match st.register(&user, &id, fields) {
        Ok(()) => req.reply(StatusCode::OK, HTML, "").finish(),
        Err(ClientError::UnknownClient) => unknown_client(&req),
    }
}

async fn client_reset(AxState(st): AxState<St>, req: Request) -> Response {
    let req = tri!(Req::read(&st, req).await);
    let user = tri!(req.user());
    let body = tri!(req.json());
    let id = req
        .path_params
        .first()
        .cloned()
        .or_else(|| req.client_id(body.as_ref()));
    let mut sources: Vec<String> = req
        .query
        .iter()
        .filter(|(k, _)| k == "sources[][name]")
        .map(|(_, v)| v.clone())
        .collect();
    if let Some(list) = body.as_ref().and_then(|b| b.get("sources")).and_then(|s| s.as_array()) {
        sources.extend(
            list.iter()
                .filter_map(|s| s.get("name").and_then(|n| n.as_str()).map(str::to_owned)),
        );
    }
    let sources = (!sources.is_empty()).then_some(sources);
    match st.reset(&user, id.as_deref(), sources) {
        Ok(()) => req.reply(StatusCode::OK, HTML, "").finish(),
        Err(ClientError::UnknownClient) => unknown_client(&req),
    }
}

async fn admin_only(AxState(st): AxState<St>, req: Request) -> Response {
    let req = tri!(Req::read(&st, req).await);
    Reply::new(StatusCode::UNPROCESSABLE_ENTITY, TEXT, "No API token provided").finish_with_cookie(&req)
}

impl Reply {
    fn finish_with_cookie(mut self, req: &Req) -> Response {
        self.cookie = req.cookie.as_ref().map(|(v, _)| v.clone());
        self.finish()
    }
}

/// Checks a source name; `Err` is the answer for a missing or unacceptable one.
fn check_source(st: &State, req: &Req, user: &str, name: Option<&str>) -> Result<String, Response> {
    let name = name
        .filter(|n| !n.is_empty() && n.len() <= MAX_SOURCE_NAME)
        .ok_or_else(|| unknown_source(req))?;
    if st.app().source(name).is_none() {
        let known = st.dynamic_sources(user);
        if !known.iter().any(|d| d.name == name) && known.len() >= MAX_DYNAMIC_SOURCES {
            return Err(unknown_source(req));
        }
    }
    Ok(name.to_owned())
}

async fn query(AxState(st): AxState<St>, req: Request) -> Response {
    let req = tri!(Req::read(&st, req).await);
    let user = tri!(req.user());
    let source = req
        .path_params
        .first()
        .cloned()
        .or_else(|| req.param("source_name").map(str::to_owned));
    let source = tri!(check_source(&st, &req, &user, source.as_deref()));
    let client_id = req.client_id(None);
    let p_size = req.param("p_size").map(ruby_to_usize).unwrap_or(500);
    let token = req.param("token").map(str::to_owned);
    let dup = req.duplicate_page;
    let st2 = st.clone();
    let result =
        tri!(blocking(move || st2.query(&user, client_id.as_deref(), &source, p_size, token.as_deref(), dup)).await);
    match result {
        Err(ClientError::UnknownClient) => unknown_client(&req),
        Ok(page) => {
            let mut r = req.reply(StatusCode::OK, JSON, page.body);
            if !page.token.is_empty() {
                r = r.header("x-rhoconnect-page-token", page.token);
            }
            r.header("x-rhoconnect-page-object-count", page.count.to_string())
                .finish()
        }
    }
}

/// Parses one CUD section: `{"id": {"attr": "value", ...}, ...}`.
fn section(body: &serde_json::Value, name: &str) -> Result<Vec<(String, Obj)>, ()> {
    match body.get(name) {
        None | Some(serde_json::Value::Null) => Ok(Vec::new()),
        Some(serde_json::Value::Object(map)) => map
            .iter()
            .map(|(id, attrs)| Obj::from_json(attrs).map(|o| (id.clone(), o)).ok_or(()))
            .collect(),
        Some(_) => Err(()),
    }
}

async fn push(AxState(st): AxState<St>, req: Request) -> Response {
    let req = tri!(Req::read(&st, req).await);
    let user = tri!(req.user());
    // The CUD document: a JSON body, or a form field `cud` holding JSON (also in a multipart body).
    let mut blobs = Vec::new();
    let body: Option<serde_json::Value> = if req.is_form() {
        let form: Vec<(String, String)> = form_urlencoded::parse(&req.body).into_owned().collect();
        match form.iter().find(|(k, _)| k == "cud") {
            Some((_, cud)) => match serde_json::from_str(cud) {
                Ok(v) => Some(v),
                Err(_) => return client_data_error(),
            },
            None => None,
        }
    } else if crate::blob::is_multipart(&req.headers) {
        // Blob attributes (spec §5.3): checked now, stored after the session and client checks.
        match crate::blob::read_push(req.header("content-type").unwrap_or_default(), &req.body) {
            Ok((cud, found)) => {
                blobs = found;
                Some(cud)
            }
            Err(None) => return client_data_error(),
            Err(Some(why)) => {
                return Reply::new(StatusCode::BAD_REQUEST, TEXT, format!("Bad multipart body: {why}")).finish();
            }
        }
    } else {
        tri!(req.json())
    };
    let mut body = body.unwrap_or(serde_json::Value::Null);
    if !body.is_object() && !body.is_null() {
        return client_data_error();
    }
    let source = req
        .path_params
        .first()
        .cloned()
        .or_else(|| body.get("source_name").and_then(|s| s.as_str()).map(str::to_owned))
        // RhoConnect reads `params`: the JSON body merged over the query parameters.
        .or_else(|| req.param("source_name").map(str::to_owned));
    let source = tri!(check_source(&st, &req, &user, source.as_deref()));
    let client_id = req.client_id(Some(&body));
    let client_id = match st.client(&user, client_id.as_deref()) {
        Ok(_) => client_id.unwrap_or_default(),
        Err(ClientError::UnknownClient) => return unknown_client(&req),
    };
    if !blobs.is_empty() {
        let (dir, base) = (st.data_dir().to_path_buf(), crate::blob::base_url(&st, &req.headers));
        let stored =
            tri!(blocking(move || crate::blob::store_blobs(&dir, &base, &mut body, blobs).map(|()| body)).await);
        body = match stored {
            Ok(b) => b,
            Err(e) => {
                log::error!("storing a blob: {e}");
                return Reply::new(StatusCode::INTERNAL_SERVER_ERROR, TEXT, "Internal Server Error").finish();
            }
        };
    }
    let mut cud = PushBody::default();
    if req.method == Method::PUT || req.method == Method::DELETE {
        let id = req.path_params.get(1).cloned().unwrap_or_default();
        let attrs = if body.is_null() {
            Some(Obj::new())
        } else {
            Obj::from_json(&body)
        };
        let Some(attrs) = attrs else { return client_data_error() };
        if req.method == Method::PUT {
            cud.update.push((id, attrs));
        } else {
            cud.delete.push((id, attrs));
        }
    } else {
        match (
            section(&body, "create"),
            section(&body, "update"),
            section(&body, "delete"),
        ) {
            (Ok(c), Ok(u), Ok(d)) => {
                cud.create = c;
                cud.update = u;
                cud.delete = d;
            }
            _ => return client_data_error(),
        }
    }
    let st2 = st.clone();
    tri!(blocking(move || st2.push(&user, &client_id, &source, cud)).await);
    req.reply(StatusCode::OK, HTML, "").finish()
}

async fn search(AxState(st): AxState<St>, req: Request) -> Response {
    let req = tri!(Req::read(&st, req).await);
    let user = tri!(req.user());
    let body = tri!(req.json());
    let client_id = req.client_id(body.as_ref());
    let p_size = req.param("p_size").map(ruby_to_usize).unwrap_or(2000);
    let resend = req.param("resend") == Some("1");
    let mut params = Vec::new();
    let mut sources: Vec<SearchSource> = Vec::new();
    for (k, v) in &req.query {
        if let Some(attr) = k.strip_prefix("search[").and_then(|r| r.strip_suffix(']')) {
            params.push((attr.to_owned(), v.clone()));
        } else if k == "sources[][name]" {
            sources.push(SearchSource {
                name: v.clone(),
                token: None,
            });
        } else if k == "sources[][token]"
            && let Some(last) = sources.last_mut()
        {
            last.token = Some(v.clone());
        }
    }
    for s in &sources {
        if let Err(resp) = check_source(&st, &req, &user, Some(&s.name)) {
            return resp;
        }
    }
    let st2 = st.clone();
    let result =
        tri!(blocking(move || st2.search(&user, client_id.as_deref(), p_size, &params, &sources, resend)).await);
    match result {
        Err(ClientError::UnknownClient) => unknown_client(&req),
        Ok(out) => {
            let mut r = req.reply(StatusCode::OK, JSON, out.body);
            if let Some((token, count)) = out.first {
                r = r
                    .header("x-rhoconnect-page-token", token)
                    .header("x-rhoconnect-page-object-count", count.to_string());
            }
            r.finish()
        }
    }
}

async fn bulk_data(AxState(st): AxState<St>, req: Request) -> Response {
    let req = tri!(Req::read(&st, req).await);
    let user = tri!(req.user());
    let body = tri!(req.json());
    let client_id = req.client_id(body.as_ref());
    let partition = req
        .param("partition")
        .map(str::to_owned)
        .or_else(|| {
            body.as_ref()
                .and_then(|b| b.get("partition"))
                .and_then(|p| p.as_str())
                .map(str::to_owned)
        })
        .unwrap_or_default();
    let sources = req.param("sources").map(str::to_owned);
    let st2 = st.clone();
    let result =
        tri!(blocking(move || st2.bulk_data(&user, client_id.as_deref(), &partition, sources.as_deref())).await);
    match result {
        Err(ClientError::UnknownClient) => unknown_client(&req),
        Ok(answer) => req.reply(StatusCode::OK, JSON, answer.to_json()).finish(),
    }
}

async fn bulk_file(AxState(st): AxState<St>, req: Request) -> Response {
    let req = tri!(Req::read(&st, req).await);
    let user = tri!(req.user());
    let rel = req.path.trim_start_matches("/data/");
    let parts: Vec<String> = rel
        .split('/')
        .map(|p| percent_encoding::percent_decode_str(p).decode_utf8_lossy().into_owned())
        .collect();
    let safe = parts
        .iter()
        .all(|p| !p.is_empty() && p != "." && p != ".." && !p.contains(['/', '\\']));
    // `app/<user>/<file>` belongs to that user only.
    let allowed = safe && (parts.len() == 2 || (parts.len() == 3 && parts[1] == user));
    if !allowed {
        return not_found_for(&req);
    }
    let path = parts.iter().fold(st.data_dir().to_path_buf(), |p, c| p.join(c));
    let Ok(meta) = tokio::fs::metadata(&path).await else {
        return not_found_for(&req);
    };
    if !meta.is_file() {
        return not_found_for(&req);
    }
    let len = meta.len();
    let ctype = if rel.ends_with(".rzip") {
        TEXT
    } else {
        "application/octet-stream"
    };
    let range = match req.header("range").map(|h| crate::bulk::parse_range(h, len)) {
        None | Some(Ok(None)) => None,
        Some(Ok(Some(r))) => Some(r),
        Some(Err(())) => {
            return Reply::new(StatusCode::RANGE_NOT_SATISFIABLE, TEXT, "")
                .header("content-range", format!("bytes */{len}"))
                .finish();
        }
    };
    let Ok(mut file) = tokio::fs::File::open(&path).await else {
        return not_found_for(&req);
    };
    let (status, start, end) = match range {
        Some((a, b)) => (StatusCode::PARTIAL_CONTENT, a, b),
        None => (StatusCode::OK, 0, len.saturating_sub(1)),
    };
    use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
    if start > 0 && file.seek(std::io::SeekFrom::Start(start)).await.is_err() {
        return Reply::new(StatusCode::INTERNAL_SERVER_ERROR, TEXT, "Internal Server Error").finish();
    }
    let n = if len == 0 { 0 } else { end - start + 1 };
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(file.take(n), 256 * 1024));
    let modified = meta.modified().map(httpdate::fmt_http_date).unwrap_or_default();
    let mut r = Reply::new(status, ctype, body)
        .header("content-length", n.to_string())
        .header("accept-ranges", "bytes".into())
        .header("last-modified", modified);
    if status == StatusCode::PARTIAL_CONTENT {
        r = r.header("content-range", format!("bytes {start}-{end}/{len}"));
    }
    r.finish()
}

async fn test_backend_change(AxState(st): AxState<St>) -> Response {
    let backend = crate::Backend::new(st);
    let r = blocking(move || -> Result<(), crate::BackendError> {
        backend.update("Product", None, "5", Obj::from_pairs([("price", "999.99")]))?;
        // The recorded harness added 301 with brand Nokia (not the generated brand of 301).
        let mut p301 = crate::dataset::generate(&crate::dataset::Shape::Product, 301, 0);
        p301.set("brand".into(), "Nokia".into());
        backend.insert("Product", None, "301", p301)?;
        backend.delete("Product", None, "7")
    })
    .await;
    match r {
        Ok(Ok(())) => Reply::new(
            StatusCode::OK,
            JSON,
            r#"{"changed":["5"],"added":["301"],"deleted":["7"]}"#,
        )
        .finish(),
        Ok(Err(e)) => Reply::new(StatusCode::CONFLICT, TEXT, e.to_string()).finish(),
        Err(resp) => resp,
    }
}

async fn not_found(AxState(st): AxState<St>, req: Request) -> Response {
    let req = tri!(Req::read(&st, req).await);
    not_found_for(&req)
}

fn not_found_for(req: &Req) -> Response {
    let body = format!(
        "<!DOCTYPE html>\n<html>\n<head></head>\n<body>\n  <h2>TideSync doesn't know this ditty.</h2>\n  <p>{} {}</p>\n</body>\n</html>\n",
        req.method,
        html_escape(&req.path)
    );
    let mut r = Reply::new(StatusCode::NOT_FOUND, HTML, body).header("x-cascade", "pass".into());
    r.cookie = req.cookie.as_ref().map(|(v, _)| v.clone());
    r.finish()
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

// ---------------------------------------------------------------------------------------------
// Fault injection

/// Faults decided for a request that its handler acts on.
#[derive(Clone, Copy, Debug, Default)]
struct FaultFlags {
    duplicate_page: bool,
}

fn classify(method: &Method, path: &str) -> Route {
    let p = path.trim_end_matches('/');
    match p {
        "/application/clientlogin" | "/api/application/clientlogin" | "/rc/v1/app/login" => Route::Login,
        "/application/clientcreate" | "/rc/v1/clients" => Route::ClientCreate,
        "/application/clientregister" => Route::ClientRegister,
        "/application/clientreset" => Route::ClientReset,
        "/application/search" | "/rc/v1/app/search" => Route::Search,
        "/application/bulk_data" | "/rc/v1/app/bulk_data" => Route::BulkData,
        "/application" | "/api/application" | "/api/application/query" | "/api/application/queue_updates" => {
            if method == Method::GET {
                Route::Query
            } else {
                Route::Push
            }
        }
        _ if p.starts_with("/data/") => Route::BulkFile,
        _ if p.starts_with("/blobs/") => Route::Blob,
        _ if p.starts_with("/rc/v1/clients/") && p.ends_with("/register") => Route::ClientRegister,
        _ if p.starts_with("/rc/v1/clients/") && p.ends_with("/reset") => Route::ClientReset,
        _ if p.starts_with("/app/v1/") => {
            if method == Method::GET {
                Route::Query
            } else {
                Route::Push
            }
        }
        _ => Route::Any,
    }
}

async fn faults(AxState(st): AxState<St>, mut req: Request, next: Next) -> Response {
    let route = classify(req.method(), req.uri().path());
    let decided = if route == Route::Any {
        Vec::new()
    } else {
        st.faults().decide(route)
    };
    if decided.is_empty() {
        return next.run(req).await;
    }
    log::debug!("fault on {}: {decided:?}", route.as_str());
    let ctl = req.extensions().get::<ConnCtl>().cloned();
    let mut post = None;
    for kind in &decided {
        match *kind {
            FaultKind::Latency(d) => tokio::time::sleep(d).await,
            FaultKind::Stall(max) => st.faults().stall(max).await,
            FaultKind::Http500 => {
                return Reply::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    TEXT,
                    "Internal Server Error (injected)",
                )
                .finish();
            }
            FaultKind::DuplicatePage => {
                req.extensions_mut().insert(FaultFlags { duplicate_page: true });
            }
            k @ (FaultKind::DropMidBody
            | FaultKind::TruncatedJson
            | FaultKind::MalformedJson
            | FaultKind::ApplyThenDrop) => {
                post = Some(k);
            }
        }
    }
    let resp = next.run(req).await;
    let Some(kind) = post else { return resp };
    let (mut parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    match kind {
        FaultKind::ApplyThenDrop => {
            if let Some(c) = &ctl {
                c.kill();
            }
            Response::new(Body::empty())
        }
        FaultKind::TruncatedJson => {
            let cut = bytes.slice(..bytes.len() / 2);
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(cut.len()));
            Response::from_parts(parts, Body::from(cut))
        }
        FaultKind::MalformedJson => {
            let bad = Bytes::from_static(b"[{\"version\":3},{\"token\":<html>oops</html>");
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(bad.len()));
            Response::from_parts(parts, Body::from(bad))
        }
        _ => {
            // Drop mid-body: announce the full length, send half, then cut the connection.
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
            let half = bytes.slice(..bytes.len() / 2);
            let stream = futures_util::stream::unfold(0u8, move |step| {
                let half = half.clone();
                let ctl = ctl.clone();
                async move {
                    match step {
                        0 => Some((Ok::<Bytes, std::io::Error>(half), 1)),
                        1 => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            if let Some(c) = &ctl {
                                c.kill();
                            }
                            Some((Err(std::io::Error::other("dropped mid-body by fault injection")), 2))
                        }
                        _ => None,
                    }
                }
            });
            Response::from_parts(parts, Body::from_stream(stream))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_size_parses_like_ruby_to_i() {
        assert_eq!(ruby_to_usize("50"), 50);
        assert_eq!(ruby_to_usize("abc"), 0);
        assert_eq!(ruby_to_usize("12abc"), 12);
        assert_eq!(ruby_to_usize("-5"), 0);
        assert_eq!(ruby_to_usize("99999999999999999999999"), usize::MAX);
    }

    #[test]
    fn routes_are_classified_for_faults() {
        assert_eq!(classify(&Method::GET, "/application"), Route::Query);
        assert_eq!(classify(&Method::POST, "/application"), Route::Push);
        assert_eq!(classify(&Method::GET, "/app/v1/Product"), Route::Query);
        assert_eq!(classify(&Method::POST, "/rc/v1/clients/abc/reset"), Route::ClientReset);
        assert_eq!(classify(&Method::GET, "/data/application/x.data.rzip"), Route::BulkFile);
        assert_eq!(classify(&Method::GET, "/nowhere"), Route::Any);
        assert_eq!(classify(&Method::GET, "/blobs/0123"), Route::Blob);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 256, ..Default::default() })]

        /// `p_size`: any text gives Ruby's `to_i` (clamped at `usize::MAX`), never a panic.
        #[test]
        fn page_sizes_parse_like_ruby_for_any_text(s in ".{0,30}", n in proptest::prelude::any::<u64>(), tail in "[^0-9\\s].{0,5}") {
            let _ = ruby_to_usize(&s);
            proptest::prop_assert_eq!(ruby_to_usize(&format!(" {n}{tail}")), n as usize);
            proptest::prop_assert_eq!(ruby_to_usize(&tail), 0);
        }

        /// REST path parameters: percent-encoded segments decode back to what was encoded;
        /// arbitrary paths never panic, and routes are classified without panicking.
        #[test]
        fn path_params_round_trip(
            segments in proptest::collection::vec(".{1,12}", 1..3),
            junk in ".{0,40}",
        ) {
            use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
            let _ = path_params(&junk);
            let _ = classify(&Method::GET, &junk);
            let encoded: Vec<String> = segments.iter().map(|s| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()).collect();
            proptest::prop_assert_eq!(path_params(&format!("/app/v1/{}", encoded.join("/"))), segments.clone());
            proptest::prop_assert_eq!(
                path_params(&format!("/rc/v1/clients/{}/reset", encoded[0])),
                vec![segments[0].clone()]
            );
        }
    }
}
