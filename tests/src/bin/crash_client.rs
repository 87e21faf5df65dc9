//! The client the crash test (`tests/it/crash.rs`) kills: one sync through the public engine API.
//!
//! `tidesync-crash-client DB URL USER PAGE_SIZE` opens the engine on `DB`, defines Product and
//! Customer, logs in as `USER` (password `password`) unless the stored session is still there,
//! syncs every source with a listener on every notification, and exits 0 when the sync succeeded,
//! 2 when it failed, 1 on bad arguments or a failure to open. It prints one line per step on
//! stdout (`open`, `login`, `sync`, `event …`, `done …`), flushed at once, so the test knows which
//! step was running when it sent SIGKILL.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use tidesync_core::{Engine, EngineConfig, SourceDef, SyncNotification, SyncOptions};

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [db, url, user, page_size] = args.as_slice() else {
        eprintln!("usage: tidesync-crash-client DB URL USER PAGE_SIZE");
        return ExitCode::from(1);
    };
    let Ok(page_size) = page_size.parse::<u32>() else {
        eprintln!("PAGE_SIZE must be a number");
        return ExitCode::from(1);
    };
    say("open");
    let config = EngineConfig {
        page_size: Some(page_size),
        poll_interval: Some(0),
        read_timeout: Some(Duration::from_secs(10)),
        ..EngineConfig::new(url)
    };
    let engine = match Engine::open(&PathBuf::from(db), config) {
        Ok(e) => e,
        Err(e) => {
            say(&format!("done open-failed {e}"));
            return ExitCode::from(1);
        }
    };
    let client = engine.client();
    for def in [
        SourceDef::new("Product").priority(1),
        SourceDef::new("Customer").priority(2),
    ] {
        if let Err(e) = client.define_source(&def) {
            say(&format!("done define-failed {e}"));
            return ExitCode::from(1);
        }
    }
    if !engine.is_logged_in().unwrap_or(false) {
        say("login");
        if let Err(e) = engine.login_blocking(user, "password") {
            say(&format!("done login-failed {e}"));
            return ExitCode::from(2);
        }
    }
    engine.set_notification(None, |n: &SyncNotification| {
        say(&format!(
            "event {:?} {} {}",
            n.status,
            n.source_name.as_deref().unwrap_or("*"),
            n.cumulative_count
        ));
    });
    say("sync");
    let result = engine.sync_all_blocking(SyncOptions::default());
    engine.flush_notifications(Duration::from_secs(10));
    let code = match &result {
        Ok(report) if report.ok() => {
            say("done ok");
            0
        }
        Ok(report) => {
            say(&format!("done failed {report:?}"));
            2
        }
        Err(e) => {
            say(&format!("done error {e}"));
            2
        }
    };
    engine.shutdown();
    ExitCode::from(code)
}
