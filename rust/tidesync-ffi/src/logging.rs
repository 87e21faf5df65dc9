//! Logging: `android_logger` on Android, `oslog` on iOS, and elsewhere a sink the app provides
//! (or stderr). Installed once; later calls only change the level.

use std::sync::{Arc, OnceLock};

use parking_lot::RwLock;

/// Log levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum LogLevel {
    /// Data at risk, invariant broken.
    Error,
    /// A failure the app sees (network down, 5xx).
    Warn,
    /// Lifecycle, once per operation.
    Info,
    /// Per page or request.
    Debug,
    /// Local debugging.
    Trace,
}

impl From<LogLevel> for log::LevelFilter {
    fn from(l: LogLevel) -> Self {
        match l {
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Trace => log::LevelFilter::Trace,
        }
    }
}

impl From<log::Level> for LogLevel {
    fn from(l: log::Level) -> Self {
        match l {
            log::Level::Error => LogLevel::Error,
            log::Level::Warn => LogLevel::Warn,
            log::Level::Info => LogLevel::Info,
            log::Level::Debug => LogLevel::Debug,
            log::Level::Trace => LogLevel::Trace,
        }
    }
}

/// Receives log lines (host platforms; a sink that throws is ignored).
#[uniffi::export(foreign)]
pub trait LogSink: Send + Sync {
    /// One log line.
    fn log(&self, level: LogLevel, target: String, line: String);
}

static SINK: RwLock<Option<Arc<dyn LogSink>>> = RwLock::new(None);
static INSTALLED: OnceLock<()> = OnceLock::new();

/// Crates whose debug and trace lines carry the bytes of requests and answers (the password,
/// the session cookie, object data): only their warnings and errors are ever logged.
const QUIET_TARGETS: [&str; 2] = ["ureq", "rustls"];

/// True when a line may be logged: at or above the level set, and never a request dump.
pub(crate) fn allowed(m: &log::Metadata<'_>) -> bool {
    m.level() <= log::max_level()
        && (m.level() <= log::Level::Warn || !QUIET_TARGETS.iter().any(|t| m.target().starts_with(t)))
}

/// A platform logger behind the [`allowed`] filter.
#[cfg_attr(not(any(target_os = "android", target_os = "ios")), allow(dead_code))]
struct Filtered<L>(L);

impl<L: log::Log> log::Log for Filtered<L> {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        allowed(m) && self.0.enabled(m)
    }
    fn log(&self, r: &log::Record<'_>) {
        if allowed(r.metadata()) {
            self.0.log(r);
        }
    }
    fn flush(&self) {
        self.0.flush();
    }
}

/// Forwards lines to the app's [`LogSink`] (or stderr), behind the [`allowed`] filter.
pub struct Forwarder;

impl log::Log for Forwarder {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        allowed(m)
    }
    fn log(&self, r: &log::Record<'_>) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let sink = SINK.read().clone();
        match sink {
            Some(s) => {
                // A foreign sink that throws makes UniFFI panic on this (our) thread: contain it.
                let line = (r.level().into(), r.target().to_owned(), r.args().to_string());
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| s.log(line.0, line.1, line.2)));
            }
            None => eprintln!("[{} {}] {}", r.level(), r.target(), r.args()),
        }
    }
    fn flush(&self) {}
}

/// Installs logging at `level` (idempotent: later calls change the level and the sink).
#[uniffi::export]
pub fn init_logging(level: LogLevel, sink: Option<Arc<dyn LogSink>>) {
    *SINK.write() = sink;
    INSTALLED.get_or_init(|| {
        #[cfg(target_os = "android")]
        {
            let inner = android_logger::AndroidLogger::new(
                android_logger::Config::default()
                    .with_tag("TideSync")
                    .with_max_level(log::LevelFilter::Trace),
            );
            let _ = log::set_logger(Box::leak(Box::new(Filtered(inner))));
        }
        #[cfg(target_os = "ios")]
        {
            let inner = oslog::OsLogger::new("dev.tidesync");
            let _ = log::set_logger(Box::leak(Box::new(Filtered(inner))));
        }
        #[cfg(not(any(target_os = "android", target_os = "ios")))]
        {
            let _ = log::set_logger(&Forwarder);
        }
    });
    log::set_max_level(level.into());
}
