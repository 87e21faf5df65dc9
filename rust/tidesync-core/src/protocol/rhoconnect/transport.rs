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
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            ssl_verify_peer: true,
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
    /// The request certainly did not reach the server (DNS, connect, TLS handshake).
    NotSent(String),
    /// The request may have been received and processed; the answer was lost.
    Lost(String),
}

impl From<Failure> for Error {
    fn from(f: Failure) -> Self {
        match f {
            Failure::NotSent(r) | Failure::Lost(r) => Error::Network { reason: r },
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

fn classify(e: ureq::Error) -> Failure {
    use ureq::Error as E;
    use ureq::Timeout as T;
    let msg = e.to_string();
    match e {
        E::HostNotFound | E::ConnectionFailed | E::BadUri(_) | E::Tls(_) | E::TlsRequired | E::RequireHttpsOnly(_) => {
            Failure::NotSent(msg)
        }
        E::Rustls(_) | E::Pem(_) => Failure::NotSent(format!("TLS: {msg}")),
        E::Timeout(T::Resolve | T::Connect) => Failure::NotSent(msg),
        E::Io(ref io) if io.kind() == std::io::ErrorKind::ConnectionRefused => Failure::NotSent(msg),
        _ => Failure::Lost(msg),
    }
}

impl Transport {
    pub fn new(cfg: &HttpConfig) -> Self {
        if !cfg.ssl_verify_peer {
            log::warn!("TLS certificate verification is OFF (ssl_verify_peer = false)");
        }
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
                    .build(),
            )
            .build();
        Self {
            agent: ureq::Agent::new_with_config(config),
        }
    }

    fn finish(resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<Answer, Failure> {
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
