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

#[cfg_attr(any(target_os = "android", target_os = "ios"), allow(dead_code))]
struct Forwarder;

impl log::Log for Forwarder {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::max_level()
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
            android_logger::init_once(android_logger::Config::default().with_tag("TideSync"));
        }
        #[cfg(target_os = "ios")]
        {
            let _ = oslog::OsLogger::new("dev.tidesync").init();
        }
        #[cfg(not(any(target_os = "android", target_os = "ios")))]
        {
            let _ = log::set_logger(&Forwarder);
        }
    });
    log::set_max_level(level.into());
}
