//! The RhoConnect client: login, client identity, push, and the pull loop that never loses a
//! page (spec §2–5, §12).

use super::page::{Page, parse_page, parse_search};
use super::transport::{Answer, Failure, HttpConfig, Transport};
use crate::error::{Error, Result};
use crate::protocol::{
    PageEvent, Protocol, PushRegistration, SearchReport, SearchRequest, SnapshotFile, SnapshotRequest, SourceReport,
    SyncCtx,
};
use crate::store::Store;
use crate::store::apply::{Batch, ObjectError};
use crate::store::meta::{self, SourceRow};
use crate::store::queue::{self, PushBatch, PushOutcome};

/// Body of the `500` answer for an unknown or missing client id.
pub(super) const UNKNOWN_CLIENT: &str = "Unknown client";

/// A RhoConnect server.
#[derive(Debug, Clone)]
pub struct RhoConnect {
    /// `syncserver`, ending with `/`, e.g. `http://host:9292/application/`.
    pub(super) base: String,
    pub(super) transport: Transport,
}

pub(super) fn status_error(a: &Answer) -> Error {
    match a.status {
        401 => Error::Unauthorized { message: a.text() },
        s => Error::Server {
            status: s,
            message: a.text(),
        },
    }
}

pub(super) fn is_unknown_client(a: &Answer) -> bool {
    a.status == 500 && a.text().trim().eq_ignore_ascii_case(UNKNOWN_CLIENT)
}

pub(super) fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

impl RhoConnect {
    /// A client for `sync_server` (the Rhodes `syncserver` URL; a missing trailing `/` is added).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a URL that is not `http://` or `https://`.
    pub fn new(sync_server: &str, http: &HttpConfig) -> Result<Self> {
        let url = sync_server.trim();
        if !(url.starts_with("http://") || url.starts_with("https://")) || url.contains(char::is_whitespace) {
            return Err(Error::invalid(format!(
                "sync server URL `{url}` must start with http:// or https://"
            )));
        }
        let base = if url.ends_with('/') {
            url.to_owned()
        } else {
            format!("{url}/")
        };
        Ok(Self {
            base,
            transport: Transport::new(http)?,
        })
    }

    pub(super) fn url(&self, word: &str) -> String {
        format!("{}{word}", self.base)
    }

    /// The push/query URL: `syncserver` without its trailing slash.
    fn app_url(&self) -> &str {
        self.base.trim_end_matches('/')
    }

    pub(super) fn session(store: &Store) -> Result<String> {
        store
            .read(meta::client_info)?
            .session
            .ok_or_else(|| Error::Unauthorized {
                message: "not logged in".into(),
            })
    }

    /// Keeps the stored cookie fresh when a successful answer re-issues it (spec §2.2).
    pub(super) fn refresh_cookie(store: &Store, a: &Answer) -> Result<()> {
        if a.ok()
            && let Some(c) = &a.session
        {
            let current = store.read(meta::client_info)?.session;
            if current.as_deref().is_some_and(|s| s != c) {
                store.write(|tx| meta::set_session(tx, Some(c), None))?;
            }
        }
        Ok(())
    }

    /// A client id, created lazily and persisted; sends a pending client reset first.
    pub(super) fn client_id(&self, store: &Store, cookie: &str) -> Result<String> {
        let info = store.read(meta::client_info)?;
        if let Some(id) = info.client_id.filter(|s| !s.is_empty()) {
            if info.reset_pending {
                let a = self.transport.get(
                    &format!("{}?client_id={}", self.url("clientreset"), enc(&id)),
                    Some(cookie),
                    None,
                )?;
                if !a.ok() {
                    return Err(status_error(&a));
                }
                store.write(|tx| meta::set_reset_pending(tx, false))?;
            }
            return Ok(id);
        }
        let a = self.transport.get(&self.url("clientcreate"), Some(cookie), None)?;
        if !a.ok() {
            return Err(status_error(&a));
        }
        let id = client_id_from_answer(&a.body)?;
        store.write(|tx| {
            meta::set_client_id(tx, Some(&id))?;
            meta::set_reset_pending(tx, false)
        })?;
        log::info!("client id created");
        Ok(id)
    }

    /// Recovery from `500 Unknown client` (spec §3.4, H10): a new client id, every token
    /// cleared, and the local copies of synced objects dropped — except objects with queued
    /// changes — so that the full resend leaves no stale object behind. Queued changes stay.
    pub(super) fn recover_unknown_client(store: &Store) -> Result<()> {
        log::warn!("server does not know this client: creating a new client id and resyncing");
        store.write(meta::start_over)
    }

    fn push(&self, store: &Store, ctx: &SyncCtx, src: &SourceRow, cookie: &str, client_id: &str) -> Result<usize> {
        let all = store.read(meta::sources)?;
        let mut batch: PushBatch = store.write(|tx| queue::take_for_push(tx, src, &all))?;
        // Blob files: at most a bounded size per request; the rest goes in further pushes.
        let more = super::blobs::limit_push(store, src, &mut batch)?;
        if batch.is_empty() {
            return Ok(0);
        }
        let n = batch.creates.len() + batch.updates.len() + batch.deletes.len();
        let body = push_body(&src.def.name, client_id, &batch);
        let outcome = if ctx.stopped() {
            Err(Error::Stopped)
        } else {
            match super::blobs::send_push(
                &self.transport,
                store,
                ctx,
                src,
                &batch,
                body,
                self.app_url(),
                cookie,
                client_id,
            ) {
                Ok(a) if a.ok() => {
                    Self::refresh_cookie(store, &a)?;
                    Ok(PushOutcome::Accepted)
                }
                Ok(a) if is_unknown_client(&a) => Err((
                    PushOutcome::Rejected,
                    Error::Server {
                        status: 500,
                        message: UNKNOWN_CLIENT.into(),
                    },
                )),
                Ok(a) => Err((PushOutcome::Rejected, status_error(&a))),
                Err(Failure::NotSent(r)) => Err((PushOutcome::Rejected, Error::Network { reason: r })),
                Err(Failure::Tls(reason)) => Err((PushOutcome::Rejected, Error::Tls { reason })),
                Err(Failure::Lost(r)) => Err((PushOutcome::Unknown, Error::Network { reason: r })),
            }
            .map_err(|(o, e)| {
                if let Err(e2) = store.write(|tx| queue::push_finished(tx, src.id, batch.push_id, o)) {
                    log::error!("recording a failed push: {e2}");
                }
                e
            })
        };
        let outcome = match outcome {
            Ok(o) => o,
            Err(Error::Stopped) => {
                store.write(|tx| queue::push_finished(tx, src.id, batch.push_id, PushOutcome::Rejected))?;
                return Err(Error::Stopped);
            }
            Err(e) => return Err(e),
        };
        store.write(|tx| queue::push_finished(tx, src.id, batch.push_id, outcome))?;
        log::debug!("pushed {n} changes of {}", src.def.name);
        if more {
            return Ok(n + self.push(store, ctx, src, cookie, client_id)?);
        }
        Ok(n)
    }

    fn pull(
        &self,
        store: &Store,
        ctx: &SyncCtx,
        src: &SourceRow,
        cookie: &str,
        client_id: &str,
        report: &mut SourceReport,
    ) -> Result<()> {
        let all = store.read(meta::sources)?;
        let mut token = store.read(|c| meta::source(c, &src.def.name))?.token;
        loop {
            if ctx.stopped() {
                return Err(Error::Stopped);
            }
            // Always send a token: the stored pending one, or an empty one. The server never
            // takes "no token" as "client lost its state" then (rule 4), so a page it built for
            // us but whose answer we never committed is resent, not dropped (spec H1).
            let mut url = format!(
                "{}?client_id={}&p_size={}&version=3&source_name={}&token={}",
                self.app_url(),
                enc(client_id),
                ctx.page_size,
                enc(&src.def.name),
                enc(&token)
            );
            if !ctx.query_params.is_empty() {
                url.push('&');
                url.push_str(ctx.query_params.trim_start_matches('&'));
            }
            let a = self.transport.get(&url, Some(cookie), Some(client_id))?;
            if is_unknown_client(&a) {
                return Err(Error::Server {
                    status: 500,
                    message: UNKNOWN_CLIENT.into(),
                });
            }
            if !a.ok() {
                return Err(status_error(&a));
            }
            Self::refresh_cookie(store, &a)?;
            let page = parse_page(&a.body).map_err(|e| Error::protocol(format!("{} page: {e}", src.def.name)))?;
            if page.schema_changed {
                return Err(Error::SchemaChanged);
            }
            let batch = to_batch(&page);
            let last = page.token.is_empty();
            if ctx.stopped() {
                return Err(Error::Stopped);
            }
            // A page is made durable before the request that acknowledges it. The last page
            // is never acknowledged: when it carries nothing the server would not send again
            // (no objects, links or errors), losing its commit to a power cut only loses
            // bookkeeping that the next complete pull redoes, so it does not wait for the disk.
            let durable = !last
                || page.object_count() > 0
                || !page.links.is_empty()
                || page.has_server_errors()
                || page.metadata.is_some();
            let stats = store.write_page(durable, |tx| {
                let s = crate::store::apply::apply(tx, src, &all, &batch)?;
                crate::store::blobs::record_downloads(
                    tx,
                    src,
                    batch
                        .inserts
                        .iter()
                        .chain(&batch.rollbacks)
                        .map(|(i, a)| (*i, a.as_slice())),
                )?;
                if last {
                    queue::settle_after_pull(tx, src.id)?;
                    // The source synced: recorded with its last page, not in a commit of its own.
                    meta::record_sync_result(tx, src.id, None)?;
                }
                Ok(s)
            })?;
            let count = page.inserts.len() + page.deletes.len();
            report.pages += 1;
            report.objects += count;
            ctx.page(&PageEvent {
                source: &src.def.name,
                source_id: src.id,
                page_objects: count,
                cumulative_objects: report.objects,
                server_total: page.total_count,
                stats: &stats,
            });
            log::debug!(
                "{}: page {} applied ({count} objects, {} so far, server total {:?})",
                src.def.name,
                report.pages,
                report.objects,
                page.total_count
            );
            if last {
                return Ok(());
            }
            token = page.token.into_owned();
        }
    }
}

/// The client id of a `clientcreate` answer: `{"client":{"client_id":"…"}}` (1–255 bytes).
fn client_id_from_answer(body: &[u8]) -> Result<String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| Error::protocol(format!("clientcreate answer: {e}")))?;
    Ok(v.pointer("/client/client_id")
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty() && s.len() <= 255)
        .ok_or_else(|| Error::protocol("clientcreate answer without client id"))?
        .to_owned())
}

/// Removes every synced object, error and sync state (a different user signs in); the bulk
/// state becomes "needed" again.
pub(crate) fn wipe_synced_data(tx: &rusqlite::Connection) -> Result<()> {
    for src in meta::sources(tx)? {
        if let Some(t) = src.fixed_table() {
            tx.execute(&format!("DELETE FROM {t}"), [])?;
        }
    }
    tx.execute_batch(
        "DELETE FROM objects; DELETE FROM changes; DELETE FROM sync_errors; DELETE FROM id_map; DELETE FROM blob_downloads;
         UPDATE client_info SET client_id = NULL, reset_pending = 0;
         UPDATE sources SET token = '', search_token = '', server_total = NULL, metadata = NULL,
             last_sync_at = NULL, last_sync_ok = NULL, last_error = NULL;
         DELETE FROM settings WHERE key = 'bulksync_state';",
    )?;
    Ok(())
}

/// The CUD body (spec §5.1): create, update and delete sections in queue order.
fn push_body(source: &str, client_id: &str, b: &PushBatch) -> Vec<u8> {
    use crate::store::objects::{attrs_json, write_json_str};
    let mut out = String::from("{\"source_name\":");
    write_json_str(&mut out, source);
    out.push_str(",\"client_id\":");
    write_json_str(&mut out, client_id);
    for (name, list) in [("create", &b.creates), ("update", &b.updates), ("delete", &b.deletes)] {
        if list.is_empty() {
            continue;
        }
        out.push_str(&format!(",\"{name}\":{{"));
        for (i, (id, attrs)) in list.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            write_json_str(&mut out, id);
            out.push(':');
            out.push_str(&attrs_json(
                attrs.iter().map(|(k, v): (&String, &String)| (k.as_str(), v.as_str())),
            ));
        }
        out.push('}');
    }
    out.push('}');
    out.into_bytes()
}

fn pairs<'a>(attrs: &'a [(std::borrow::Cow<'a, str>, std::borrow::Cow<'a, str>)]) -> Vec<(&'a str, &'a str)> {
    attrs.iter().map(|(k, v)| (k.as_ref(), v.as_ref())).collect()
}

/// A page as a protocol-neutral batch (borrowing the page).
fn to_batch<'a>(p: &'a Page<'a>) -> Batch<'a> {
    let errs = |list: &'a [super::page::ObjectError<'a>]| -> Vec<ObjectError<'a>> {
        list.iter()
            .map(|e| ObjectError {
                id: e.id.as_ref(),
                message: e.message.as_ref(),
                attrs: pairs(&e.attrs),
            })
            .collect()
    };
    Batch {
        links: p.links.iter().map(|l| (l.temp_id.as_ref(), l.id.as_ref())).collect(),
        deletes: p
            .deletes
            .iter()
            .map(|o| (o.id.as_ref(), o.attrs.iter().map(|(k, _)| k.as_ref()).collect()))
            .collect(),
        inserts: p.inserts.iter().map(|o| (o.id.as_ref(), pairs(&o.attrs))).collect(),
        create_errors: errs(&p.create_errors),
        update_errors: errs(&p.update_errors),
        delete_errors: errs(&p.delete_errors),
        rollbacks: p
            .update_rollback
            .iter()
            .map(|o| (o.id.as_ref(), pairs(&o.attrs)))
            .collect(),
        source_error: p.source_error.as_ref().map(|e| (e.kind.as_ref(), e.message.as_ref())),
        checkpoint: Some(p.token.as_ref()),
        server_total: Some(p.total_count as i64),
    }
}

impl Protocol for RhoConnect {
    fn login(&self, store: &Store, user: &str, password: &str) -> Result<()> {
        let body = serde_json::json!({"login": user, "password": password, "remember_me": 1}).to_string();
        let a = self
            .transport
            .post_json(&self.url("clientlogin"), body.as_bytes(), None, None)?;
        if !a.ok() {
            return Err(status_error(&a));
        }
        let cookie = a
            .session
            .ok_or_else(|| Error::protocol("login answered 200 without a session cookie"))?;
        store.write(|tx| {
            let previous = meta::client_info(tx)?.user_name;
            if previous.as_deref().is_some_and(|p| p != user) {
                // Another user on this device. Their unsent changes must neither be lost nor be
                // pushed under this user's session: refuse until they are synced or wiped.
                let unsent: i64 = tx.query_row("SELECT count(*) FROM changes", [], |r| r.get(0))?;
                if unsent > 0 {
                    return Err(Error::invalid(format!(
                        "the previous user has {unsent} unsent changes: sync them, or logout(wipe_data = true) first"
                    )));
                }
                // Their data and sync state are not this user's.
                wipe_synced_data(tx)?;
            }
            meta::set_session(tx, Some(&cookie), Some(user))
        })?;
        log::info!("logged in");
        Ok(())
    }

    fn sync_source(&self, store: &Store, ctx: &SyncCtx, source: &str) -> Result<SourceReport> {
        let mut report = SourceReport {
            name: source.to_owned(),
            ..SourceReport::default()
        };
        let mut recovered = false;
        loop {
            let cookie = Self::session(store)?;
            let src = store.read(|c| meta::source(c, source))?;
            if !src.def.sync {
                return Err(Error::invalid(format!("source `{source}` is local only")));
            }
            let result = self.client_id(store, &cookie).and_then(|client_id| {
                let n = self.push(store, ctx, &src, &cookie, &client_id)?;
                report.pushed += n;
                self.pull(store, ctx, &src, &cookie, &client_id, &mut report)?;
                super::blobs::after_pull(&self.transport, store, ctx, &src, &client_id)
            });
            match result {
                Err(Error::Server { status: 500, message }) if message == UNKNOWN_CLIENT && !recovered => {
                    recovered = true;
                    Self::recover_unknown_client(store)?;
                }
                Err(Error::Unauthorized { message }) => {
                    // The server no longer accepts the session: logged out (spec §2.3).
                    store.write(|tx| meta::set_session(tx, None, None))?;
                    return Err(Error::Unauthorized { message });
                }
                other => {
                    other?;
                    break;
                }
            }
        }
        if ctx.count_objects {
            report.local_objects = store.count(source, None)?;
        }
        Ok(report)
    }

    fn push_changes_marker(&self, store: &Store, source: &str) -> Result<()> {
        store.write(|tx| {
            let src = meta::source(tx, source)?;
            queue::record_push_marker(tx, src.id)
        })
    }

    fn search(&self, store: &Store, ctx: &SyncCtx, request: &SearchRequest) -> Result<SearchReport> {
        let cookie = Self::session(store)?;
        let client_id = self.client_id(store, &cookie)?;
        let mut sources: Vec<SourceRow> = Vec::new();
        for name in &request.sources {
            let src = store.read(|c| meta::source(c, name))?;
            if !src.def.sync {
                return Err(Error::invalid(format!("source `{name}` is local only")));
            }
            if request.sync_changes {
                self.push(store, ctx, &src, &cookie, &client_id)?;
            }
            sources.push(src);
        }
        let all = store.read(meta::sources)?;
        let mut report = SearchReport {
            objects: sources.iter().map(|s| (s.def.name.clone(), 0)).collect(),
            errors: Vec::new(),
        };
        // Search tokens are kept apart from query tokens (spec H9).
        let mut active: Vec<(SourceRow, Option<String>)> = sources.into_iter().map(|s| (s, None)).collect();
        for _round in 0..100_000 {
            if active.is_empty() {
                break;
            }
            if ctx.stopped() {
                return Err(Error::Stopped);
            }
            let mut url = format!(
                "{}?client_id={}&p_size={}&version=3",
                self.url("search"),
                enc(&client_id),
                ctx.page_size
            );
            for (k, v) in &request.params {
                url.push_str(&format!("&{}={}", enc(&format!("search[{k}]")), enc(v)));
            }
            for (src, token) in &active {
                url.push_str(&format!("&{}={}", enc("sources[][name]"), enc(&src.def.name)));
                if let Some(t) = token {
                    url.push_str(&format!("&{}={}", enc("sources[][token]"), enc(t)));
                }
            }
            let a = self.transport.get(&url, Some(&cookie), Some(&client_id))?;
            if !a.ok() {
                return Err(status_error(&a));
            }
            let pages = parse_search(&a.body).map_err(|e| Error::protocol(format!("search answer: {e}")))?;
            let mut next: Vec<(SourceRow, Option<String>)> = Vec::new();
            for page in &pages {
                let name = page.source.as_deref().unwrap_or_default();
                let Some(pos) = active.iter().position(|(s, _)| s.def.name == name) else {
                    return Err(Error::protocol(format!("search answer for unexpected source `{name}`")));
                };
                let src = active[pos].0.clone();
                if let Some(e) = &page.search_error {
                    report.errors.push((name.to_owned(), e.message.to_string()));
                    continue;
                }
                let batch = Batch {
                    inserts: page.inserts.iter().map(|o| (o.id.as_ref(), pairs(&o.attrs))).collect(),
                    ..Batch::default()
                };
                let token = page.token.to_string();
                let stats = store.write_interruptible(|tx| {
                    let s = crate::store::apply::apply(tx, &src, &all, &batch)?;
                    crate::store::blobs::record_downloads(
                        tx,
                        &src,
                        batch.inserts.iter().map(|(i, a)| (*i, a.as_slice())),
                    )?;
                    tx.execute(
                        "UPDATE sources SET search_token = ?1 WHERE id = ?2",
                        rusqlite::params![token, src.id],
                    )?;
                    Ok(s)
                })?;
                if let Some(r) = report.objects.iter_mut().find(|(n, _)| n == name) {
                    r.1 += page.inserts.len();
                    ctx.page(&PageEvent {
                        source: name,
                        source_id: src.id,
                        page_objects: page.inserts.len(),
                        cumulative_objects: r.1,
                        server_total: page.total_count,
                        stats: &stats,
                    });
                }
                if !page.token.is_empty() && !page.inserts.is_empty() {
                    next.push((src, Some(token)));
                }
            }
            // Sources absent from the answer (an empty inner array) are done.
            for (src, _) in &active {
                if !next.iter().any(|(s, _)| s.id == src.id) {
                    store.write(|tx| {
                        tx.execute("UPDATE sources SET search_token = '' WHERE id = ?1", [src.id])?;
                        Ok(())
                    })?;
                }
            }
            active = next;
        }
        Ok(report)
    }

    fn fetch_snapshot(&self, store: &Store, ctx: &SyncCtx, request: &SnapshotRequest) -> Result<Option<SnapshotFile>> {
        super::bulk::fetch_snapshot(self, store, ctx, request)
    }

    fn register_push(&self, store: &Store, device: &PushRegistration) -> Result<()> {
        let cookie = Self::session(store)?;
        let client_id = self.client_id(store, &cookie)?;
        let mut body = serde_json::json!({
            "client_id": client_id,
            "device_pin": device.device_pin,
            "device_port": "100",
            "device_type": device.device_type,
        });
        if !device.push_type.is_empty() {
            body["device_push_type"] = serde_json::Value::String(device.push_type.clone());
        }
        let a = self.transport.post_json(
            &self.url("clientregister"),
            body.to_string().as_bytes(),
            Some(&cookie),
            None,
        )?;
        if !a.ok() {
            return Err(status_error(&a));
        }
        Self::refresh_cookie(store, &a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Attrs;
    use proptest::prelude::*;
    use tidesync_server::fuzzing::{Harness, RawRequest};

    fn text() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![
                6 => prop::char::range('a', 'z'),
                1 => Just('"'),
                1 => Just('\\'),
                1 => prop::char::range('\0', '\u{1f}'),
                1 => Just('\u{7f}'),
                2 => any::<char>(),
            ],
            0..8,
        )
        .prop_map(|c| c.into_iter().collect())
    }

    fn section() -> impl Strategy<Value = Vec<(String, Attrs)>> {
        prop::collection::btree_map(text(), prop::collection::btree_map(text(), text(), 0..4), 0..4)
            .prop_flat_map(|m| Just(m.into_iter().collect::<Vec<_>>()).prop_shuffle())
    }

    fn batch() -> impl Strategy<Value = PushBatch> {
        (section(), section(), section()).prop_map(|(creates, updates, deletes)| PushBatch {
            push_id: 1,
            creates,
            updates,
            deletes,
            marker: false,
        })
    }

    fn request(method: &str, target: &str, body: Vec<u8>) -> RawRequest {
        RawRequest {
            method: method.as_bytes().to_vec(),
            target: target.as_bytes().to_vec(),
            headers: vec![
                (b"Cookie".to_vec(), b"rhoconnect_session=@COOKIE@".to_vec()),
                (b"Content-Type".to_vec(), b"application/json".to_vec()),
            ],
            body,
        }
    }

    #[test]
    fn the_reference_servers_client_id_is_read() {
        let h = Harness::new().expect("harness");
        let answer = h
            .send(&request("GET", "/application/clientcreate", Vec::new()))
            .expect("sent");
        assert_eq!(answer.status, 200);
        let id = client_id_from_answer(&answer.body).expect("client id");
        assert_eq!(id.len(), 32, "{id}");
        let page = h
            .send(&request(
                "GET",
                &format!("/application?client_id={id}&source_name=Product&p_size=1"),
                Vec::new(),
            ))
            .expect("sent");
        assert_eq!(page.status, 200, "the server knows the id it gave");
    }

    #[test]
    fn client_create_answers_without_an_id_are_protocol_errors() {
        for body in [
            &b""[..],
            b"{}",
            b"{\"client\":{}}",
            b"{\"client\":{\"client_id\":\"\"}}",
            b"{\"client\":{\"client_id\":5}}",
            b"[]",
        ] {
            assert!(
                matches!(client_id_from_answer(body), Err(Error::Protocol { .. })),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let long = format!("{{\"client\":{{\"client_id\":\"{}\"}}}}", "a".repeat(256));
        assert!(client_id_from_answer(long.as_bytes()).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        /// `clientcreate` answers: arbitrary bytes never panic; an id written as the server
        /// writes it is read back whenever it is 1–255 bytes long.
        #[test]
        fn client_create_answers_parse(bytes in prop::collection::vec(any::<u8>(), 0..64), id in any::<String>()) {
            let _ = client_id_from_answer(&bytes);
            let body = serde_json::json!({"client": {"client_id": id}}).to_string();
            let got = client_id_from_answer(body.as_bytes()).ok();
            let expected = (!id.is_empty() && id.len() <= 255).then_some(id);
            prop_assert_eq!(got, expected);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// The client's push body → JSON → the reference server: every section, id, attribute
        /// and value comes back in queue order, the server accepts it, and its next page
        /// answers every create (a link or a create error).
        #[test]
        fn push_bodies_round_trip_through_the_server(b in batch(), source in text(), client_id in text()) {
            let body = push_body(&source, &client_id, &b);
            let v: serde_json::Value = serde_json::from_slice(&body)
                .map_err(|e| TestCaseError::fail(format!("{e}: {}", String::from_utf8_lossy(&body))))?;
            prop_assert_eq!(v["source_name"].as_str(), Some(source.as_str()));
            prop_assert_eq!(v["client_id"].as_str(), Some(client_id.as_str()));
            for (name, list) in [("create", &b.creates), ("update", &b.updates), ("delete", &b.deletes)] {
                let got: Vec<(String, Vec<(String, String)>)> = v
                    .get(name)
                    .and_then(|s| s.as_object())
                    .map(|m| {
                        m.iter()
                            .map(|(id, attrs)| {
                                let obj = tidesync_server::Obj::from_json(attrs).unwrap_or_default();
                                (id.clone(), obj.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect())
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let want: Vec<(String, Vec<(String, String)>)> =
                    list.iter().map(|(id, a)| (id.clone(), a.clone().into_iter().collect())).collect();
                prop_assert_eq!(got, want, "section {}", name);
            }

            // The same changes for Product from the harness's client, as the server reads them.
            let h = Harness::new().map_err(|e| TestCaseError::fail(e.to_string()))?;
            let body = push_body("Product", h.client_id(), &b);
            let answer = h.send(&request("POST", "/application", body)).ok_or_else(|| TestCaseError::fail("not sent"))?;
            prop_assert_eq!(answer.status, 200);
            let page = h
                .send(&request("GET", "/application?client_id=@CLIENT@&source_name=Product&p_size=1000", Vec::new()))
                .ok_or_else(|| TestCaseError::fail("not sent"))?;
            let page = parse_page(&page.body).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let mut answered: Vec<&str> = page
                .links
                .iter()
                .map(|l| l.temp_id.as_ref())
                .chain(page.create_errors.iter().map(|e| e.id.as_ref()))
                .collect();
            answered.sort_unstable();
            let mut created: Vec<&str> = b.creates.iter().map(|(id, _)| id.as_str()).collect();
            created.sort_unstable();
            prop_assert_eq!(answered, created);
            h.settle();
        }
    }
}
