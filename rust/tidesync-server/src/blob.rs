//! Blob attributes (spec §5.3, §4.5): a push carrying files arrives as `multipart/form-data`
//! with one file part per blob, named `<attr>-<object id>`, and a part `cud` holding the JSON
//! body with `"blob_fields":["attr",…]`. Each file is stored under `<data_dir>/blobs/<id>` (as
//! RhoConnect's `store_blob`), and the attribute's value becomes its download URL
//! `http(s)://<Host>/blobs/<id>` before the CUD is queued.
//!
//! `GET /blobs/<id>` serves a stored file with `Content-Length`, single `Range` requests, and
//! `X-Blob-Sha256: <64 lowercase hex>` — the SHA-256 of the whole file (also on a `206`), which
//! the TideSync client verifies. Blob ids are 128 random bits: a URL is a capability, and the
//! route needs no session (a client may hand it to a download manager, as Rhodes does).
//!
//! A bad multipart body is refused with `400` before anything is stored.

use std::path::{Path, PathBuf};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State as AxState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;

use crate::state::{State, random_hex};

/// The checksum header of a blob download: the SHA-256 of the whole file, lowercase hex.
pub const BLOB_SHA256_HEADER: &str = "x-blob-sha256";
/// Most parts a push may carry.
const MAX_PARTS: usize = 10_000;

/// One part of a multipart body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Part {
    /// The `name` of its `Content-Disposition`.
    pub name: String,
    /// The `filename`, if given.
    pub filename: Option<String>,
    /// The content.
    pub data: Bytes,
}

/// A blob of a push, validated but not stored yet.
#[derive(Debug)]
pub(crate) struct PendingBlob {
    /// `create` or `update`.
    section: &'static str,
    object: String,
    attr: String,
    data: Bytes,
}

/// True when the request body is `multipart/form-data`.
pub(crate) fn is_multipart(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.trim_start().to_ascii_lowercase().starts_with("multipart/form-data"))
}

/// The `boundary` parameter of a multipart content type.
fn boundary(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_owned())
            .filter(|b| !b.is_empty() && b.len() <= 70)
    })
}

/// The parameters of a `Content-Disposition: form-data; name="…"; filename="…"` value.
fn disposition(value: &str) -> (Option<String>, Option<String>) {
    let mut name = None;
    let mut filename = None;
    for p in value.split(';').skip(1) {
        if let Some((k, v)) = p.split_once('=') {
            let v = v.trim().trim_matches('"').to_owned();
            match k.trim().to_ascii_lowercase().as_str() {
                "name" => name = Some(v),
                "filename" => filename = Some(v),
                _ => {}
            }
        }
    }
    (name, filename)
}

/// Parses a `multipart/form-data` body (RFC 7578). Every part needs a
/// `Content-Disposition: form-data` with a name.
pub(crate) fn parse_multipart(content_type: &str, body: &Bytes) -> Result<Vec<Part>, &'static str> {
    let boundary = boundary(content_type).ok_or("no boundary")?;
    let delim = format!("--{boundary}");
    let next_delim = format!("\r\n--{boundary}");
    let next_finder = memchr::memmem::Finder::new(next_delim.as_bytes());
    // The first delimiter: at the start, or after a preamble ending with CRLF.
    let mut pos = if body.starts_with(delim.as_bytes()) {
        0
    } else {
        next_finder.find(body).ok_or("no first boundary")? + 2
    };
    let mut parts = Vec::new();
    loop {
        pos += delim.len();
        let rest = &body[pos..];
        if rest.starts_with(b"--") {
            return if parts.is_empty() { Err("no parts") } else { Ok(parts) };
        }
        if !rest.starts_with(b"\r\n") {
            return Err("boundary not followed by CRLF");
        }
        pos += 2;
        let head_len = memchr::memmem::find(&body[pos..], b"\r\n\r\n").ok_or("part without header end")?;
        let head = std::str::from_utf8(&body[pos..pos + head_len]).map_err(|_| "part header not UTF-8")?;
        let mut name = None;
        let mut filename = None;
        for line in head.split("\r\n") {
            let (k, v) = line.split_once(':').ok_or("malformed part header")?;
            if k.trim().eq_ignore_ascii_case("content-disposition") {
                if !v.trim_start().to_ascii_lowercase().starts_with("form-data") {
                    return Err("part is not form-data");
                }
                (name, filename) = disposition(v);
            }
        }
        let name = name.filter(|n| !n.is_empty()).ok_or("part without a name")?;
        let start = pos + head_len + 4;
        let len = next_finder
            .find(&body[start..])
            .ok_or("part without closing boundary")?;
        parts.push(Part {
            name,
            filename,
            data: body.slice(start..start + len),
        });
        if parts.len() > MAX_PARTS {
            return Err("too many parts");
        }
        pos = start + len + 2;
    }
}

/// The CUD body of a multipart push and its blobs, checked: a `cud` part holding a JSON object,
/// `blob_fields` a list of names, and every other part named `<blob field>-<id>` of an object
/// in the `create` or `update` section. `Err(None)`: the `cud` JSON is malformed (the caller
/// answers as for a malformed JSON body); `Err(Some(reason))`: a bad multipart body (400).
pub(crate) fn read_push(
    content_type: &str,
    body: &Bytes,
) -> Result<(serde_json::Value, Vec<PendingBlob>), Option<&'static str>> {
    let parts = parse_multipart(content_type, body).map_err(Some)?;
    let mut cud_parts = parts.iter().filter(|p| p.name == "cud");
    let cud = cud_parts.next().ok_or(Some("no `cud` part"))?;
    if cud_parts.next().is_some() {
        return Err(Some("more than one `cud` part"));
    }
    let cud: serde_json::Value = serde_json::from_slice(&cud.data).map_err(|_| None)?;
    if !cud.is_object() {
        return Err(None);
    }
    let fields: Vec<String> = match cud.get("blob_fields") {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or(Some("`blob_fields` holds a non-string"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(Some("`blob_fields` is not a list")),
    };
    let mut blobs = Vec::new();
    for p in parts.iter().filter(|p| p.name != "cud") {
        let found = fields.iter().find_map(|f| {
            let id = p.name.strip_prefix(f.as_str())?.strip_prefix('-')?;
            ["create", "update"]
                .into_iter()
                .find(|s| cud.get(*s).and_then(|sec| sec.get(id)).is_some_and(|o| o.is_object()))
                .map(|s| (s, f.clone(), id.to_owned()))
        });
        let (section, attr, object) = found.ok_or(Some("a file part names no blob field of a pushed object"))?;
        if blobs
            .iter()
            .any(|b: &PendingBlob| b.section == section && b.object == object && b.attr == attr)
        {
            return Err(Some("two file parts for one blob"));
        }
        blobs.push(PendingBlob {
            section,
            object,
            attr,
            data: p.data.clone(),
        });
    }
    Ok((cud, blobs))
}

fn blob_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("blobs")
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `data` as a new blob (temporary file, then rename) and returns its id.
pub(crate) fn write_blob(data_dir: &Path, data: &[u8]) -> std::io::Result<String> {
    let dir = blob_dir(data_dir);
    std::fs::create_dir_all(&dir)?;
    let id = random_hex(16);
    let tmp = dir.join(format!(".{id}.tmp"));
    std::fs::write(&tmp, data)?;
    std::fs::write(dir.join(format!("{id}.sha256")), sha256_hex(data))?;
    std::fs::rename(&tmp, dir.join(&id))?;
    Ok(id)
}

/// Stores the blobs (`store_blob`) and puts their download URLs into the CUD body. Runs after
/// the session, source and client checks, so that a refused push stores nothing.
///
/// # Errors
/// An I/O error writing a file (the caller answers 500; files already written are unreferenced).
pub(crate) fn store_blobs(
    data_dir: &Path,
    base_url: &str,
    cud: &mut serde_json::Value,
    blobs: Vec<PendingBlob>,
) -> std::io::Result<()> {
    for b in blobs {
        let id = write_blob(data_dir, &b.data)?;
        if let Some(obj) = cud.get_mut(b.section).and_then(|s| s.get_mut(&b.object)) {
            obj[b.attr.as_str()] = serde_json::Value::String(format!("{base_url}/blobs/{id}"));
        }
    }
    Ok(())
}

/// `http(s)://<Host>` of a request (the server's own address without a `Host` header).
pub(crate) fn base_url(st: &State, headers: &HeaderMap) -> String {
    let scheme = if st.config().tls.is_some() { "https" } else { "http" };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| !h.is_empty() && !h.contains(['/', ' ', '\\']))
        .map(str::to_owned)
        .unwrap_or_else(|| st.config().addr.to_string());
    format!("{scheme}://{host}")
}

fn plain(status: StatusCode, body: &'static str) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

/// `GET /blobs/<id>`: the stored file, with its length, range support and checksum.
pub(crate) async fn download(AxState(st): AxState<std::sync::Arc<State>>, req: Request) -> Response {
    let id = req.uri().path().trim_start_matches("/blobs/").to_owned();
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return plain(StatusCode::NOT_FOUND, "Not found");
    }
    let dir = blob_dir(st.data_dir());
    let path = dir.join(&id);
    let Ok(meta) = tokio::fs::metadata(&path).await else {
        return plain(StatusCode::NOT_FOUND, "Not found");
    };
    let len = meta.len();
    let sha = tokio::fs::read_to_string(dir.join(format!("{id}.sha256")))
        .await
        .unwrap_or_default();
    let range = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(|h| crate::bulk::parse_range(h, len));
    let (status, start, end) = match range {
        None | Some(Ok(None)) => (StatusCode::OK, 0, len.saturating_sub(1)),
        Some(Ok(Some((a, b)))) => (StatusCode::PARTIAL_CONTENT, a, b),
        Some(Err(())) => {
            let mut r = plain(StatusCode::RANGE_NOT_SATISFIABLE, "");
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return r;
        }
    };
    let Ok(mut file) = tokio::fs::File::open(&path).await else {
        return plain(StatusCode::NOT_FOUND, "Not found");
    };
    use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
    if start > 0 && file.seek(std::io::SeekFrom::Start(start)).await.is_err() {
        return plain(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error");
    }
    let n = if len == 0 { 0 } else { end - start + 1 };
    let mut r = Response::new(Body::from_stream(tokio_util::io::ReaderStream::new(file.take(n))));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(v) = HeaderValue::from_str(sha.trim()) {
        h.insert(BLOB_SHA256_HEADER, v);
    }
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}"))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    r
}

/// Reads a stored blob (tests, `Backend`).
pub(crate) fn read_blob(data_dir: &Path, id: &str) -> Option<Vec<u8>> {
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    std::fs::read(blob_dir(data_dir).join(id)).ok()
}

/// Bytes for a test body.
#[cfg(test)]
fn body_of(parts: &[(&str, Option<&str>, &[u8])], boundary: &str) -> Bytes {
    let mut out = Vec::new();
    for (name, file, data) in parts {
        out.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"").as_bytes());
        if let Some(f) = file {
            out.extend_from_slice(format!("; filename=\"{f}\"\r\nContent-Type: application/octet-stream").as_bytes());
        }
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CT: &str = "multipart/form-data; boundary=XyZ";

    #[test]
    fn a_multipart_push_is_parsed_into_its_cud_and_blobs() {
        let cud = br#"{"source_name":"Product","create":{"tmp-1":{"name":"a","image":"blobs/x.jpg"}},"update":{"7":{"image":"p"}},"blob_fields":["image"]}"#;
        let body = body_of(
            &[
                ("cud", None, cud),
                ("image-tmp-1", Some("x.jpg"), b"\x00\x01binary\r\n--Xy"),
                ("image-7", Some("y.jpg"), b""),
            ],
            "XyZ",
        );
        let (v, blobs) = read_push(CT, &body).expect("valid");
        assert_eq!(v["create"]["tmp-1"]["name"], "a");
        assert_eq!(blobs.len(), 2);
        assert_eq!(
            (blobs[0].section, blobs[0].object.as_str(), blobs[0].attr.as_str()),
            ("create", "tmp-1", "image")
        );
        assert_eq!(&blobs[0].data[..], b"\x00\x01binary\r\n--Xy");
        assert_eq!((blobs[1].section, blobs[1].data.len()), ("update", 0));
        let dir = tempfile::tempdir().expect("tempdir");
        let mut v = v;
        store_blobs(dir.path(), "http://h:1", &mut v, blobs).expect("stored");
        let url = v["create"]["tmp-1"]["image"].as_str().expect("url").to_owned();
        let id = url.strip_prefix("http://h:1/blobs/").expect("a blob URL");
        assert_eq!(read_blob(dir.path(), id).expect("stored"), b"\x00\x01binary\r\n--Xy");
    }

    #[test]
    fn bad_multipart_bodies_are_refused() {
        let cud = br#"{"create":{"1":{"image":"x"}},"blob_fields":["image"]}"#;
        let cases: Vec<(&str, Bytes)> = vec![
            ("multipart/form-data", body_of(&[("cud", None, cud)], "XyZ")),
            (CT, Bytes::from_static(b"garbage")),
            (CT, body_of(&[("image-1", Some("f"), b"1")], "XyZ")),
            (CT, body_of(&[("cud", None, cud), ("image-2", Some("f"), b"1")], "XyZ")),
            (CT, body_of(&[("cud", None, cud), ("other-1", Some("f"), b"1")], "XyZ")),
            (
                CT,
                body_of(
                    &[
                        ("cud", None, cud),
                        ("image-1", Some("f"), b"1"),
                        ("image-1", Some("f"), b"2"),
                    ],
                    "XyZ",
                ),
            ),
            (
                CT,
                Bytes::from_static(b"--XyZ\r\nContent-Disposition: form-data; name=\"cud\"\r\n\r\n{}"),
            ),
            (CT, body_of(&[("cud", None, br#"{"blob_fields":"image"}"#)], "XyZ")),
        ];
        for (i, (ct, body)) in cases.iter().enumerate() {
            assert!(matches!(read_push(ct, body), Err(Some(_))), "case {i}");
        }
        assert!(matches!(
            read_push(CT, &body_of(&[("cud", None, b"{not json")], "XyZ")),
            Err(None)
        ));
    }

    proptest::proptest! {
        #[test]
        fn parse_multipart_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let mut b = b"--XyZ\r\n".to_vec();
            b.extend_from_slice(&bytes);
            let _ = parse_multipart(CT, &Bytes::from(b));
            let _ = parse_multipart(CT, &Bytes::from(bytes));
        }
    }
}
