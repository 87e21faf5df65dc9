//! Engine settings persisted in the store (`settings` table): sync server URL, page size, poll
//! interval, TLS verification.
//!
//! Precedence at [`crate::engine::Engine::open`]: a value given in [`EngineConfig`] wins and is
//! stored; a value left `None` is read from the store, else the default. Setters store their
//! value at once. The server URL is required the first time (nothing stored yet).

use std::time::Duration;

use super::Engine;
use super::command::Command;
use crate::error::{Error, Result};
use crate::protocol::rhoconnect::{HttpConfig, RhoConnect};
use crate::store::Store;
use crate::sync::SyncConfig;

pub(crate) const KEY_SYNC_SERVER: &str = "engine.sync_server";
pub(crate) const KEY_PAGE_SIZE: &str = "engine.page_size";
pub(crate) const KEY_POLL_INTERVAL: &str = "engine.poll_interval";
pub(crate) const KEY_SSL_VERIFY_PEER: &str = "engine.ssl_verify_peer";

/// RhoConnect's default `sync_poll_interval`, in seconds.
pub const DEFAULT_POLL_INTERVAL: u32 = 60;

/// How to open an [`crate::engine::Engine`]. `None` fields come from the store, else defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineConfig {
    /// The RhoConnect `syncserver` URL, e.g. `http://127.0.0.1:9292/application/`. Required
    /// unless stored. A URL different from the stored one is a new account (see
    /// [`crate::engine::Engine::set_sync_server`]).
    pub sync_server: Option<String>,
    /// Objects per page (default 2000, as Rhodes).
    pub page_size: Option<u32>,
    /// Seconds between polls; 0 disables polling (default 60, as Rhodes).
    pub poll_interval: Option<u32>,
    /// Verify TLS certificates (default true).
    pub ssl_verify_peer: Option<bool>,
    /// Connect timeout (not stored; default 10 s).
    pub connect_timeout: Option<Duration>,
    /// Response head and body timeout (not stored; default 60 s). A stop cannot end an HTTP
    /// request sooner than this: it bounds the stop latency while a request is stalled.
    pub read_timeout: Option<Duration>,
    /// Certificates (PEM) to trust instead of the built-in Mozilla roots — a private CA or a
    /// self-signed server (not stored; default: the built-in roots).
    pub trusted_certificates_pem: Option<String>,
    /// The directory for files of blob attributes (not stored; default `<database path>.files`).
    /// Blob files live in its `blobs/` subdirectory, owned by the store.
    pub files_dir: Option<std::path::PathBuf>,
}

impl EngineConfig {
    /// A configuration for `sync_server`; everything else from the store or defaults.
    pub fn new(sync_server: &str) -> Self {
        Self {
            sync_server: Some(sync_server.to_owned()),
            ..Self::default()
        }
    }
}

/// The effective settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Settings {
    pub sync_server: String,
    pub page_size: u32,
    pub poll_interval: u32,
    pub ssl_verify_peer: bool,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub trusted_certificates_pem: Option<String>,
    pub files_dir: Option<std::path::PathBuf>,
}

impl Settings {
    pub(crate) fn sync_config(&self) -> SyncConfig {
        let mut c = SyncConfig::new(&self.sync_server);
        c.page_size = self.page_size;
        c.http = HttpConfig {
            connect_timeout: self.connect_timeout,
            read_timeout: self.read_timeout,
            ssl_verify_peer: self.ssl_verify_peer,
            trusted_certificates_pem: self.trusted_certificates_pem.clone(),
        };
        c.files_dir = self.files_dir.clone();
        c
    }
}

/// Checks a server URL the way the client will use it.
pub(crate) fn check_url(url: &str) -> Result<()> {
    RhoConnect::new(url, &HttpConfig::default()).map(|_| ())
}

pub(crate) fn check_page_size(n: u32) -> Result<()> {
    if n == 0 {
        return Err(Error::InvalidInput {
            reason: "page size must be at least 1".into(),
        });
    }
    Ok(())
}

fn parse<T: std::str::FromStr>(store: &Store, key: &str) -> Result<Option<T>> {
    Ok(store.setting(key)?.and_then(|v| match v.parse() {
        Ok(x) => Some(x),
        Err(_) => {
            log::warn!("ignoring the unreadable stored setting {key}");
            None
        }
    }))
}

/// Resolves `config` against the stored settings and stores the result. Returns the effective
/// settings and whether the server URL changed from a stored one (a new account).
pub(crate) fn resolve(store: &Store, config: &EngineConfig) -> Result<(Settings, bool)> {
    let stored_url = store.setting(KEY_SYNC_SERVER)?;
    let sync_server = config
        .sync_server
        .clone()
        .or_else(|| stored_url.clone())
        .ok_or_else(|| Error::InvalidInput {
            reason: "no sync server: give EngineConfig::sync_server the first time".into(),
        })?;
    check_url(&sync_server)?;
    let defaults = SyncConfig::new(&sync_server);
    let page_size = match config.page_size {
        Some(n) => n,
        None => parse(store, KEY_PAGE_SIZE)?.unwrap_or(defaults.page_size),
    };
    check_page_size(page_size)?;
    let settings = Settings {
        sync_server,
        page_size,
        poll_interval: match config.poll_interval {
            Some(n) => n,
            None => parse(store, KEY_POLL_INTERVAL)?.unwrap_or(DEFAULT_POLL_INTERVAL),
        },
        ssl_verify_peer: match config.ssl_verify_peer {
            Some(b) => b,
            None => parse(store, KEY_SSL_VERIFY_PEER)?.unwrap_or(defaults.http.ssl_verify_peer),
        },
        connect_timeout: config.connect_timeout.unwrap_or(defaults.http.connect_timeout),
        read_timeout: config.read_timeout.unwrap_or(defaults.http.read_timeout),
        trusted_certificates_pem: config.trusted_certificates_pem.clone(),
        files_dir: config.files_dir.clone(),
    };
    let changed = stored_url.is_some_and(|u| u != settings.sync_server);
    persist(store, &settings)?;
    Ok((settings, changed))
}

/// Stores every persisted setting that differs from the stored value.
pub(crate) fn persist(store: &Store, s: &Settings) -> Result<()> {
    for (key, value) in [
        (KEY_SYNC_SERVER, s.sync_server.clone()),
        (KEY_PAGE_SIZE, s.page_size.to_string()),
        (KEY_POLL_INTERVAL, s.poll_interval.to_string()),
        (KEY_SSL_VERIFY_PEER, s.ssl_verify_peer.to_string()),
    ] {
        if store.setting(key)?.as_deref() != Some(value.as_str()) {
            store.set_setting(key, Some(&value))?;
        }
    }
    Ok(())
}

/// Settings of a running engine (stored at once; see the module docs).
impl Engine {
    /// Sets the poll interval in seconds (0: no polling) and returns the old one. It takes
    /// effect at once: the next poll is `seconds` from now. Stored.
    pub fn set_poll_interval(&self, seconds: u32) -> u32 {
        let old = std::mem::replace(&mut self.shared.settings.lock().poll_interval, seconds);
        if let Err(e) = self.store().set_setting(KEY_POLL_INTERVAL, Some(&seconds.to_string())) {
            log::warn!("storing the poll interval: {e}");
        }
        let mut st = self.shared.state.lock();
        st.poll_every = Duration::from_secs(seconds.into());
        st.next_poll = None;
        self.shared.state_cv.notify_all();
        old
    }

    /// Seconds between polls (0: off).
    pub fn poll_interval(&self) -> u32 {
        self.shared.settings.lock().poll_interval
    }

    /// Sets the page size for the next runs and returns the old one. Stored.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for 0; storage.
    pub fn set_page_size(&self, objects: u32) -> Result<u32> {
        check_page_size(objects)?;
        self.update_setting(KEY_PAGE_SIZE, objects.to_string(), |s| {
            std::mem::replace(&mut s.page_size, objects)
        })
    }

    /// Objects per page.
    pub fn page_size(&self) -> u32 {
        self.shared.settings.lock().page_size
    }

    /// Turns TLS certificate verification on or off for the next runs; returns the old value.
    /// Stored.
    ///
    /// # Errors
    /// Storage.
    pub fn set_ssl_verify_peer(&self, verify: bool) -> Result<bool> {
        self.update_setting(KEY_SSL_VERIFY_PEER, verify.to_string(), |s| {
            std::mem::replace(&mut s.ssl_verify_peer, verify)
        })
    }

    /// Whether TLS certificates are verified.
    pub fn ssl_verify_peer(&self) -> bool {
        self.shared.settings.lock().ssl_verify_peer
    }

    /// Changes the sync server and returns the old URL. A different URL is a new account (as
    /// RhoConnect `set_syncserver`): the running sync is stopped, and before the next command
    /// the client id, every token, the synced copies of objects (not queued local changes) and
    /// the session are cleared — log in again. Stored.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a URL that is not `http://` or `https://`; storage.
    pub fn set_sync_server(&self, url: &str) -> Result<String> {
        check_url(url)?;
        let old = self.sync_server();
        if old == url {
            return Ok(old);
        }
        self.store().set_setting(KEY_SYNC_SERVER, Some(url))?;
        self.shared.settings.lock().sync_server = url.to_owned();
        self.shared.signal_stop_syncs();
        self.submit(Command::Reconfigure { new_account: true }, None);
        Ok(old)
    }

    /// The sync server URL.
    pub fn sync_server(&self) -> String {
        self.shared.settings.lock().sync_server.clone()
    }

    fn update_setting<T>(&self, key: &str, value: String, set: impl FnOnce(&mut Settings) -> T) -> Result<T> {
        self.store().set_setting(key, Some(&value))?;
        let (old, changed) = {
            let mut s = self.shared.settings.lock();
            let before = s.clone();
            let old = set(&mut s);
            (old, *s != before)
        };
        if changed {
            self.submit(Command::Reconfigure { new_account: false }, None);
        }
        Ok(old)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_settings_config_wins_and_is_stored_then_store_fills_gaps() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("s.db")).expect("store");
        assert!(resolve(&store, &EngineConfig::default()).is_err(), "no URL anywhere");
        let mut c = EngineConfig::new("http://127.0.0.1:1/application/");
        c.page_size = Some(50);
        c.poll_interval = Some(0);
        let (s, changed) = resolve(&store, &c).expect("resolves");
        assert!(!changed);
        assert_eq!((s.page_size, s.poll_interval, s.ssl_verify_peer), (50, 0, true));
        let (s2, changed) = resolve(&store, &EngineConfig::default()).expect("from the store");
        assert!(!changed);
        assert_eq!(s2, s);
        let (s3, changed) = resolve(&store, &EngineConfig::new("http://127.0.0.1:2/application/")).expect("new URL");
        assert!(changed, "a different URL is a new account");
        assert_eq!(s3.page_size, 50);
        let mut bad = EngineConfig::new("ftp://x");
        assert!(resolve(&store, &bad).is_err());
        bad.sync_server = None;
        bad.page_size = Some(0);
        assert!(resolve(&store, &bad).is_err());
    }
}
