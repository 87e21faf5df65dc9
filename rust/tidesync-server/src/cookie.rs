//! The `rhoconnect_session` cookie: a signed session, opaque to clients.
//!
//! RhoConnect uses a Rack cookie session: URL-escaped `base64(data)--<40-hex HMAC-SHA1>`. We keep
//! that outer form (clients see the same shape and length class) with JSON instead of Ruby's
//! Marshal inside. A cookie whose HMAC does not verify under this server's secret is rejected,
//! exactly like a tampered Rack cookie.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use sha1::Sha1;

/// Cookie name.
pub(crate) const NAME: &str = "rhoconnect_session";

/// Characters Rack escapes in the cookie value (everything but unreserved characters).
const ESCAPE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// What a verified cookie says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Session {
    pub session_id: String,
    /// The signed-in user; `None` for an anonymous session (after a failed login).
    pub login: Option<String>,
}

fn mac(secret: &[u8], data: &str) -> Hmac<Sha1> {
    let mut m = <Hmac<Sha1> as Mac>::new_from_slice(secret).unwrap_or_else(|_| {
        // HMAC accepts keys of any length; this branch is unreachable in practice.
        <Hmac<Sha1> as Mac>::new_from_slice(b"tidesync").unwrap_or_else(|_| unreachable!())
    });
    m.update(data.as_bytes());
    m
}

/// Issues the cookie value for `session`.
pub(crate) fn issue(secret: &[u8], app_name: &str, session: &Session) -> String {
    let payload = serde_json::json!({
        "session_id": session.session_id,
        "login": session.login,
        "app_name": app_name,
    });
    let data = STANDARD.encode(payload.to_string());
    let sig: String = mac(secret, &data)
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{}--{sig}", utf8_percent_encode(&data, ESCAPE))
}

/// Verifies a cookie value; `None` when malformed or not signed by `secret`.
pub(crate) fn verify(secret: &[u8], value: &str) -> Option<Session> {
    let raw = percent_decode_str(value).decode_utf8().ok()?;
    let (data, sig) = raw.rsplit_once("--")?;
    if sig.len() != 40 {
        return None;
    }
    let sig_bytes: Vec<u8> = (0..20)
        .map(|i| u8::from_str_radix(sig.get(2 * i..2 * i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    mac(secret, data).verify_slice(&sig_bytes).ok()?;
    let json = STANDARD.decode(data).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&json).ok()?;
    Some(Session {
        session_id: v.get("session_id")?.as_str()?.to_owned(),
        login: v.get("login").and_then(|l| l.as_str()).map(str::to_owned),
    })
}

/// Finds our cookie's value in a `Cookie` request header.
pub(crate) fn from_header(header: &str) -> Option<&str> {
    header
        .split(';')
        .map(str::trim)
        .find_map(|kv| kv.strip_prefix(NAME)?.strip_prefix('='))
}

/// The `Set-Cookie` header value for `value`, expiring in one year.
pub(crate) fn set_cookie(value: &str) -> String {
    let expires = std::time::SystemTime::now() + std::time::Duration::from_secs(31_536_000);
    format!(
        "{NAME}={value}; path=/; expires={}; HttpOnly",
        httpdate::fmt_http_date(expires)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn alice() -> Session {
        Session {
            session_id: "abc".into(),
            login: Some("alice".into()),
        }
    }

    #[test]
    fn issued_cookie_verifies_and_has_the_rack_shape() {
        let v = issue(b"secret", "application", &alice());
        assert_eq!(verify(b"secret", &v), Some(alice()));
        let (_, sig) = v.rsplit_once("--").expect("signed");
        assert_eq!(sig.len(), 40);
        assert!(!v.contains('='), "base64 padding is URL-escaped: {v}");
    }

    #[test]
    fn tampered_or_foreign_cookies_are_rejected() {
        let v = issue(b"secret", "application", &alice());
        assert_eq!(verify(b"other", &v), None);
        let mut t = v.clone();
        let last = t.pop().expect("non-empty");
        t.push(if last == '0' { '1' } else { '0' });
        assert_eq!(verify(b"secret", &t), None);
        assert_eq!(verify(b"secret", "garbage"), None);
        assert_eq!(verify(b"secret", ""), None);
    }

    #[test]
    fn cookie_is_found_among_others() {
        assert_eq!(from_header("a=1; rhoconnect_session=xyz; b=2"), Some("xyz"));
        assert_eq!(from_header("rhoconnect_sessionx=1"), None);
    }

    proptest! {
        #[test]
        fn verify_never_panics(s in ".{0,300}") {
            let _ = verify(b"secret", &s);
        }
    }
}
