//! Sync progress on the terminal, driven by the engine's notifications: a progress bar per
//! source (indicatif) when stdout is a terminal, one plain line per page and per final event
//! otherwise. Shared by `tidesync sync` and `tidesync demo`.

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::sync::Arc;
use std::time::Instant;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use parking_lot::Mutex;
use tidesync_core::{SyncNotification, SyncStatus, SyncType};

/// Per-source figures gathered from notifications.
#[derive(Default, Clone)]
pub struct Row {
    /// Objects received.
    pub objects: u64,
    /// Pages received (`in_progress` events).
    pub pages: u64,
    started: Option<Instant>,
    /// From the start of the phase (or the previous source's end) to the final event.
    pub seconds: f64,
}

/// Turns notifications into progress bars (terminal) or plain lines.
pub struct Progress {
    tty: bool,
    multi: MultiProgress,
    bars: Mutex<BTreeMap<String, ProgressBar>>,
    rows: Mutex<BTreeMap<String, Row>>,
    phase: Mutex<String>,
    /// When the current source began: the start of the phase, or the previous source's end.
    mark: Mutex<Instant>,
}

impl Progress {
    /// Bars on stdout when it is a terminal, plain lines otherwise.
    pub fn new() -> Arc<Self> {
        let tty = std::io::stdout().is_terminal();
        let multi = MultiProgress::with_draw_target(if tty {
            ProgressDrawTarget::stdout()
        } else {
            ProgressDrawTarget::hidden()
        });
        Arc::new(Self {
            tty,
            multi,
            bars: Mutex::default(),
            rows: Mutex::default(),
            phase: Mutex::new(String::new()),
            mark: Mutex::new(Instant::now()),
        })
    }

    /// Prints a line above the bars (or plainly).
    pub fn say(&self, line: &str) {
        if self.tty {
            let _ = self.multi.println(line);
        } else {
            println!("{line}");
        }
    }

    /// Starts a phase: its rows are keyed `{phase}{source}` and timed from now.
    pub fn start_phase(&self, phase: &str) {
        *self.phase.lock() = phase.to_owned();
        *self.mark.lock() = Instant::now();
    }

    /// The per-source figures so far, by `{phase}{source}`.
    pub fn rows(&self) -> BTreeMap<String, Row> {
        self.rows.lock().clone()
    }

    /// Bulk steps: one line per step (the download as a byte bar on a terminal), and a summary
    /// row per partition.
    fn on_bulk(&self, n: &SyncNotification) {
        let step = n.bulk_status.clone().unwrap_or_default();
        let part = n.partition.clone().unwrap_or_default();
        let key = format!("bulk {part}");
        let now = Instant::now();
        match step.as_str() {
            "start" if !part.is_empty() => {
                self.rows.lock().entry(key).or_default().started = Some(now);
                self.say(&format!("  bulk {part}: asking the server for its bulk file"));
            }
            "download" => {
                let mb = |b: u64| b as f64 / 1_048_576.0;
                if self.tty {
                    let mut bars = self.bars.lock();
                    let bar = bars.entry(key).or_insert_with(|| {
                        let b = self.multi.add(ProgressBar::new(n.total_count.unwrap_or(0)));
                        b.set_style(
                            ProgressStyle::with_template("{prefix:>12} [{bar:40}] {bytes:>9}/{total_bytes:9} {msg}")
                                .unwrap_or_else(|_| ProgressStyle::default_bar())
                                .progress_chars("=> "),
                        );
                        b.set_prefix(format!("bulk {part}"));
                        b
                    });
                    if let Some(t) = n.total_count {
                        bar.set_length(t);
                    }
                    bar.set_position(n.cumulative_count);
                } else if n.total_count.is_some() {
                    println!(
                        "  bulk {part}: download {:.1} / {:.1} MB",
                        mb(n.cumulative_count),
                        mb(n.total_count.unwrap_or(0))
                    );
                }
            }
            "change_db" => {
                if let Some(b) = self.bars.lock().get(&key) {
                    b.finish_with_message("downloaded");
                }
                self.say(&format!("  bulk {part}: file checked; importing it in one transaction"));
            }
            "ok" => {
                let mut rows = self.rows.lock();
                let row = rows.entry(key).or_default();
                row.objects = n.cumulative_count;
                row.pages = 1;
                row.seconds = row.started.map(|s| (now - s).as_secs_f64()).unwrap_or(0.0);
                self.say(&format!(
                    "  bulk {part}: {} objects imported in {:.2} s",
                    n.cumulative_count, row.seconds
                ));
                *self.mark.lock() = now;
            }
            "complete" => self.say("  bulk sync complete; incremental sync continues from the file's snapshot"),
            "error" => self.say(&format!("  bulk {part}: failed: {}", n.error_message)),
            _ => {}
        }
    }

    /// Handles one engine notification (call it from the engine's `*` listener).
    pub fn on(&self, n: &SyncNotification) {
        if n.sync_type == SyncType::Bulk {
            self.on_bulk(n);
            return;
        }
        let Some(name) = n.source_name.clone() else { return };
        let phase = self.phase.lock().clone();
        let key = format!("{phase}{name}");
        let now = Instant::now();
        {
            let mut rows = self.rows.lock();
            let row = rows.entry(key.clone()).or_default();
            let mark = *self.mark.lock();
            row.started.get_or_insert(mark);
            if n.status == SyncStatus::InProgress {
                row.pages += 1;
                row.objects = n.cumulative_count;
            }
            if n.is_final {
                row.objects = n.cumulative_count;
                row.seconds = row.started.map(|s| (now - s).as_secs_f64()).unwrap_or(0.0);
                *self.mark.lock() = now;
            }
        }
        if self.tty {
            let mut bars = self.bars.lock();
            let bar = bars.entry(key).or_insert_with(|| {
                let b = self.multi.add(ProgressBar::new(n.total_count.unwrap_or(0)));
                b.set_style(
                    ProgressStyle::with_template("{prefix:>12} [{bar:40}] {pos:>7}/{len:7} {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                );
                b.set_prefix(name.clone());
                b
            });
            if let Some(t) = n.total_count {
                bar.set_length(t.max(n.cumulative_count));
            }
            bar.set_position(n.cumulative_count);
            if n.is_final {
                bar.finish_with_message(format!("{:?}", n.status).to_lowercase());
            }
        } else if n.status == SyncStatus::InProgress {
            println!(
                "  {name}: {} / {} objects (page of {})",
                n.cumulative_count,
                n.total_count.unwrap_or(0),
                n.processed_count
            );
        } else if n.is_final {
            println!(
                "  {name}: {:?}{}",
                n.status,
                if n.error_message.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", n.error_message)
                }
            );
        }
        if n.status == SyncStatus::Error && !n.server_errors.is_empty() {
            for e in &n.server_errors {
                self.say(&format!(
                    "  server refused a {} of {}: {}",
                    e.kind,
                    e.object.as_deref().unwrap_or("?"),
                    e.message
                ));
            }
        }
    }
}
