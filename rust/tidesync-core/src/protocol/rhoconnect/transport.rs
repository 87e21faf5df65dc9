//! HTTP for the RhoConnect client: one ureq agent, timeouts, cookies and client ids, bounded
//! bodies, and a precise answer to "could the server have received this request?".

use std::time::Duration;

use crate::error::Error;

/// Largest response body accepted (a page of very large objects still fits).
pub const MAX_BODY: u64 = 256 * 1024 * 1024;

/// Connection settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Time to wait for the response head, and for the body.
    pub read_timeout: Duration,
    /// Verify TLS certificates (on by default; turning it off is logged).
    pub ssl_verify_peer: bool,
    /// Certificates (PEM) to trust instead of the built-in Mozilla roots: a private CA, or a
    /// self-signed server certificate. `None`: the built-in roots.
    pub trusted_certificates_pem: Option<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            ssl_verify_peer: true,
            trusted_certificates_pem: None,
        }
    }
}

/// An HTTP answer (any status).
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
    /// The `rhoconnect_session` cookie as `name=value`, if the answer set one.
    pub session: Option<String>,
}

impl Answer {
    pub fn text(&self) -> String {
        let t = String::from_utf8_lossy(&self.body);
        t.chars().take(500).collect()
    }

    pub fn ok(&self) -> bool {
        self.status == 200 || self.status == 206
    }
}

/// A request that got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The request certainly did not reach the server (DNS, connect).
    NotSent(String),
    /// No secure connection (untrusted certificate, failed handshake): nothing was sent.
    Tls(String),
    /// The request may have been received and processed; the answer was lost.
    Lost(String),
}

impl From<Failure> for Error {
    fn from(f: Failure) -> Self {
        match f {
            Failure::NotSent(r) | Failure::Lost(r) => Error::Network { reason: r },
            Failure::Tls(reason) => Error::Tls { reason },
        }
    }
}

/// The `rhoconnect_session` cookie as `name=value`, from the answer's `Set-Cookie` values.
fn session_cookie<'a>(set_cookies: impl IntoIterator<Item = &'a str>) -> Option<String> {
    set_cookies.into_iter().find_map(|v| {
        let first = v.split(';').next()?.trim();
        first.starts_with("rhoconnect_session=").then(|| first.to_owned())
    })
}

/// The HTTP channel.
#[derive(Clone)]
pub(crate) struct Transport {
    agent: ureq::Agent,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport").finish_non_exhaustive()
    }
}

pub(super) fn classify(e: ureq::Error) -> Failure {
    use ureq::Error as E;
    use ureq::Timeout as T;
    let msg = e.to_string();
    match e {
        E::HostNotFound | E::ConnectionFailed | E::BadUri(_) | E::RequireHttpsOnly(_) => Failure::NotSent(msg),
        E::Tls(_) | E::TlsRequired | E::Rustls(_) | E::Pem(_) => Failure::Tls(msg),
        // rustls reports a refused certificate through the I/O error of the handshake.
        E::Io(ref io) if io.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()) => Failure::Tls(msg),
        E::Timeout(T::Resolve | T::Connect) => Failure::NotSent(msg),
        E::Io(ref io) if io.kind() == std::io::ErrorKind::ConnectionRefused => Failure::NotSent(msg),
        _ => Failure::Lost(msg),
    }
}

impl Transport {
    /// An agent for `cfg`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when `trusted_certificates_pem` holds no valid certificate.
    pub fn new(cfg: &HttpConfig) -> Result<Self, Error> {
        if !cfg.ssl_verify_peer {
            log::warn!("TLS certificate verification is OFF (ssl_verify_peer = false)");
        }
        let roots = match &cfg.trusted_certificates_pem {
            None => ureq::tls::RootCerts::WebPki,
            Some(pem) => {
                let mut certs = Vec::new();
                for item in ureq::tls::parse_pem(pem.as_bytes()) {
                    match item {
                        Ok(ureq::tls::PemItem::Certificate(c)) => certs.push(c),
                        Ok(_) => {}
                        Err(e) => return Err(Error::invalid(format!("trusted certificates: {e}"))),
                    }
                }
                if certs.is_empty() {
                    return Err(Error::invalid("trusted certificates: no PEM certificate found"));
                }
                ureq::tls::RootCerts::new_with_certs(&certs)
            }
        };
        let config = ureq::Agent::config_builder()
            .timeout_connect(Some(cfg.connect_timeout))
            .timeout_recv_response(Some(cfg.read_timeout))
            .timeout_recv_body(Some(cfg.read_timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .save_redirect_history(false)
            .tls_config(
                ureq::tls::TlsConfig::builder()
                    .disable_verification(!cfg.ssl_verify_peer)
                    .root_certs(roots)
                    .build(),
            )
            .build();
        Ok(Self {
            agent: ureq::Agent::new_with_config(config),
        })
    }

    /// The agent (streamed blob uploads and downloads).
    pub(super) fn agent(&self) -> &ureq::Agent {
        &self.agent
    }

    pub(super) fn finish(resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<Answer, Failure> {
        let mut resp = resp.map_err(classify)?;
        let status = resp.status().as_u16();
        let session = session_cookie(
            resp.headers()
                .get_all("set-cookie")
                .iter()
                .filter_map(|v| v.to_str().ok()),
        );
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_vec()
            .map_err(classify)?;
        Ok(Answer { status, body, session })
    }

    pub fn get(&self, url: &str, cookie: Option<&str>, client_id: Option<&str>) -> Result<Answer, Failure> {
        let mut req = self.agent.get(url);
        if let Some(c) = cookie {
            req = req.header("Cookie", c);
        }
        if let Some(id) = client_id {
            req = req.header("X-RhoConnect-CLIENT-ID", id);
        }
        Self::finish(req.call())
    }

    pub fn post_json(
        &self,
        url: &str,
        body: &[u8],
        cookie: Option<&str>,
        client_id: Option<&str>,
    ) -> Result<Answer, Failure> {
        let mut req = self.agent.post(url).header("Content-Type", "application/json");
        if let Some(c) = cookie {
            req = req.header("Cookie", c);
        }
        if let Some(id) = client_id {
            req = req.header("X-RhoConnect-CLIENT-ID", id);
        }
        Self::finish(req.send(body))
    }
}

/// How a download ended.
#[derive(Debug)]
pub(crate) enum DownloadError {
    /// The server answered with this status (not 200, 206 or a usable 416).
    Status(Answer),
    /// The connection failed or dropped; the bytes received so far are in the file.
    Failure(Failure),
    /// Writing the file failed.
    Io(std::io::Error),
    /// `stop` returned true between two chunks.
    Stopped,
}

impl Transport {
    /// Downloads `url` into `file`, resuming at `file`'s current length with `Range: bytes=N-`
    /// when it is not empty. A server that ignores the range (200) gets the file rewritten from
    /// the start; `416` with a `Content-Range: bytes */LEN` equal to the file's length means the
    /// file is already complete. `stop` is checked between chunks of 64 KiB; `progress` receives
    /// the bytes in the file and the total, when known. Returns the file's final length.
    pub fn download(
        &self,
        url: &str,
        cookie: Option<&str>,
        file: &mut std::fs::File,
        stop: &dyn Fn() -> bool,
        progress: &mut dyn FnMut(u64, Option<u64>),
    ) -> Result<u64, DownloadError> {
        use std::io::{Read as _, Seek as _, Write as _};
        let have = file.metadata().map_err(DownloadError::Io)?.len();
        let mut req = self.agent.get(url);
        if let Some(c) = cookie {
            req = req.header("Cookie", c);
        }
        if have > 0 {
            req = req.header("Range", format!("bytes={have}-"));
        }
        let mut resp = req.call().map_err(|e| DownloadError::Failure(classify(e)))?;
        let status = resp.status().as_u16();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let content_range = header("content-range");
        let content_length = header("content-length").and_then(|v| v.trim().parse::<u64>().ok());
        let (start, total) = match status {
            200 => (0, content_length),
            206 => {
                // `bytes A-B/LEN`: the part must start where the file ends.
                let parsed = content_range.as_deref().and_then(|v| {
                    let v = v.trim().strip_prefix("bytes")?.trim();
                    let (range, len) = v.split_once('/')?;
                    let (a, _) = range.split_once('-')?;
                    Some((a.trim().parse::<u64>().ok()?, len.trim().parse::<u64>().ok()))
                });
                match parsed {
                    Some((a, len)) if a == have => (have, len),
                    _ => {
                        return Err(DownloadError::Failure(Failure::Lost(format!(
                            "download: unexpected Content-Range {content_range:?} for a file of {have} bytes"
                        ))));
                    }
                }
            }
            416 => {
                let len = content_range
                    .as_deref()
                    .and_then(|v| v.rsplit_once('/'))
                    .and_then(|(_, l)| l.trim().parse::<u64>().ok());
                if len == Some(have) {
                    progress(have, Some(have));
                    return Ok(have);
                }
                // The file changed under us: start over.
                file.set_len(0).map_err(DownloadError::Io)?;
                return Err(DownloadError::Failure(Failure::Lost(
                    "download: range not satisfiable; restarting".into(),
                )));
            }
            _ => {
                let body = resp
                    .body_mut()
                    .with_config()
                    .limit(64 * 1024)
                    .read_to_vec()
                    .unwrap_or_default();
                return Err(DownloadError::Status(Answer {
                    status,
                    body,
                    session: None,
                }));
            }
        };
        if start == 0 {
            file.set_len(0).map_err(DownloadError::Io)?;
        }
        file.seek(std::io::SeekFrom::Start(start)).map_err(DownloadError::Io)?;
        let mut written = start;
        let mut reader = resp.body_mut().as_reader();
        let mut out = std::io::BufWriter::with_capacity(256 * 1024, &mut *file);
        let mut buf = vec![0_u8; 64 * 1024];
        let result = loop {
            if stop() {
                break Err(DownloadError::Stopped);
            }
            match reader.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    if let Err(e) = out.write_all(&buf[..n]) {
                        break Err(DownloadError::Io(e));
                    }
                    written += n as u64;
                    progress(written, total);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Err(DownloadError::Failure(Failure::Lost(format!("download: {e}")))),
            }
        };
        // What arrived is kept (a valid prefix) so that the next attempt resumes after it.
        out.flush().map_err(DownloadError::Io)?;
        drop(out);
        result?;
        if let Some(t) = total
            && written != t
        {
            return Err(DownloadError::Failure(Failure::Lost(format!(
                "download ended at {written} of {t} bytes"
            ))));
        }
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn session_cookie_is_found_among_other_cookies() {
        let values = ["a=1; path=/", "rhoconnect_session=abc--12; path=/; HttpOnly", "b=2"];
        assert_eq!(session_cookie(values), Some("rhoconnect_session=abc--12".into()));
        assert_eq!(
            session_cookie(["rhoconnect_sessionx=1", "other=rhoconnect_session=2"]),
            None
        );
        assert_eq!(session_cookie([]), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        /// The reference server's `Set-Cookie` → the client's cookie: `name=value` exactly, for
        /// any session the server can issue.
        #[test]
        fn server_set_cookie_round_trips(
            session_id in any::<String>(),
            login in prop::option::of(any::<String>()),
            others in prop::collection::vec("[a-z]{1,6}=[ -:<-~]{0,12}(; path=/)?", 0..3),
            at in any::<prop::sample::Index>(),
        ) {
            use tidesync_server::fuzzing::{issue_cookie, set_cookie};
            let value = issue_cookie(b"secret", "application", &session_id, login.as_deref());
            let header = set_cookie(&value);
            let mut all: Vec<&str> = others.iter().map(String::as_str).collect();
            all.insert(at.index(all.len() + 1), &header);
            prop_assert_eq!(session_cookie(all), Some(format!("rhoconnect_session={value}")));
        }

        /// Arbitrary `Set-Cookie` values never panic, and a cookie found is one of them.
        #[test]
        fn arbitrary_set_cookie_values_never_panic(values in prop::collection::vec(any::<String>(), 0..4)) {
            if let Some(c) = session_cookie(values.iter().map(String::as_str)) {
                prop_assert!(c.starts_with("rhoconnect_session="));
                prop_assert!(values.iter().any(|v| v.contains(&c)));
            }
        }
    }
}
