//! `tidesync demo`: the engine doing its job, end to end, in well under 30 s.
//!
//! It starts the reference server on loopback with a realistic data set, syncs a fresh client
//! with a progress bar per source driven by the engine's notifications, makes local edits and
//! pushes them, shows a change the server refuses and how the app resolves it, and ends with a
//! summary table. Plain lines when stdout is not a terminal.

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use parking_lot::Mutex;
use tidesync_core::{
    Attrs, CreateErrorAction, Engine, EngineConfig, Partition, Query, SourceDef, SyncNotification, SyncOptions,
    SyncStatus, SyncType,
};
use tidesync_server::{App, DatasetSpec, Server, ServerConfig};

/// Per-source figures gathered from notifications.
#[derive(Default, Clone)]
struct Row {
    objects: u64,
    pages: u64,
    started: Option<Instant>,
    seconds: f64,
}

/// Turns notifications into progress bars (terminal) or plain lines.
struct Progress {
    tty: bool,
    multi: MultiProgress,
    bars: Mutex<BTreeMap<String, ProgressBar>>,
    rows: Mutex<BTreeMap<String, Row>>,
    phase: Mutex<String>,
    /// When the current source began: the start of the phase, or the previous source's end.
    mark: Mutex<Instant>,
}

impl Progress {
    fn new() -> Arc<Self> {
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

    fn say(&self, line: &str) {
        if self.tty {
            let _ = self.multi.println(line);
        } else {
            println!("{line}");
        }
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

    fn on(&self, n: &SyncNotification) {
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

fn attrs(pairs: &[(&str, &str)]) -> Attrs {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

/// Runs the demo with `products` products, `customers` customers, and a `catalog` of that many
/// objects × 10 attributes loaded by bulk sync (0: no bulk step).
pub fn run(products: u64, customers: u64, catalog: u64) -> Result<()> {
    let total = Instant::now();
    let mut spec = format!("Product={products},Customer={customers}");
    if catalog > 0 {
        spec.push_str(&format!(",Catalog={catalog}x10"));
    }
    let specs = DatasetSpec::parse_list(&spec).map_err(anyhow::Error::msg)?;
    let server =
        Server::start(ServerConfig::new(App::generated(&specs, 42))).context("starting the reference server")?;
    let dir = std::env::temp_dir().join(format!("tidesync-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let _cleanup = Cleanup(dir.clone());
    let progress = Progress::new();
    progress.say(&format!(
        "TideSync demo: a RhoConnect-compatible server on {} with {products} products, {customers} customers per user and a catalog of {catalog} objects",
        server.url()
    ));

    let engine = Engine::open(
        &dir.join("app.db"),
        EngineConfig {
            sync_server: Some(server.sync_url()),
            page_size: Some(2000),
            poll_interval: Some(0),
            ..EngineConfig::default()
        },
    )?;
    let client = engine.client();
    client.define_source(&SourceDef::new("Product").priority(1).partition(Partition::App))?;
    client.define_source(&SourceDef::new("Customer").priority(2))?;
    if catalog > 0 {
        // A large, rarely changing partition: its first sync is one bulk file, not pages.
        client.define_source(
            &SourceDef::new("Catalog")
                .priority(3)
                .partition(Partition::App)
                .sync_type(SyncType::Bulk),
        )?;
    }
    let p = progress.clone();
    let _listener = engine.set_notification(None, move |n: &SyncNotification| p.on(n));

    progress.say(if catalog > 0 {
        "\n1. First sync of a fresh client: the Catalog partition by bulk file, then page by page"
    } else {
        "\n1. First sync of a fresh client"
    });
    engine.login_blocking("demo", "password").context("login")?;
    *progress.phase.lock() = String::new();
    *progress.mark.lock() = Instant::now();
    let report = engine.sync_all_blocking(SyncOptions::default())?;
    anyhow::ensure!(report.ok(), "first sync failed: {report:?}");

    progress.say("\n2. Local edits while offline-first: 3 creates, 5 updates, 2 deletes");
    let made = client.store().create_many(
        "Product",
        (1..=3)
            .map(|i| {
                attrs(&[
                    ("name", &format!("Demo phone {i}")),
                    ("brand", "TideSync"),
                    ("price", "9.99"),
                ])
            })
            .collect(),
    )?;
    for id in ["1", "2", "3", "4", "5"] {
        client.store().update("Product", id, attrs(&[("price", "1.00")]))?;
    }
    client.store().destroy("Product", "6")?;
    client.store().destroy("Product", "7")?;
    let refused = client.create("Product", attrs(&[("name", "error"), ("brand", "Nope")]))?;
    progress.say(&format!(
        "   created {} (temporary ids such as {}), and one product named \"error\", which this server refuses",
        made.len(),
        made[0].id
    ));

    progress.say("\n3. Sync again: push, then pull the results");
    *progress.phase.lock() = "push ".into();
    *progress.mark.lock() = Instant::now();
    engine.sync_all_blocking(SyncOptions::default())?;
    let linked = made
        .iter()
        .filter(|m| client.find("Product", &m.id).ok().flatten().is_none())
        .count();
    progress.say(&format!(
        "   {linked} of {} creates now carry their server ids",
        made.len()
    ));
    let errors = client.sync_errors("Product")?;
    for e in &errors {
        progress.say(&format!(
            "   refused: {} {} — \"{}\"; the app decides: drop it locally (on_sync_create_error Delete)",
            e.kind,
            e.object.as_deref().unwrap_or("?"),
            e.message
        ));
    }
    client.on_sync_create_error("Product", std::slice::from_ref(&refused.id), CreateErrorAction::Delete)?;
    let backend = server.backend();
    let server_count = backend.count("Product", None)?;
    let local_count = client.count("Product", None)?;
    progress.say(&format!(
        "   server and client both hold {server_count} / {local_count} products"
    ));
    anyhow::ensure!(
        server_count as u64 == local_count,
        "the client does not match the server"
    );
    let pending = client.pending_changes("Product")?;
    anyhow::ensure!(pending.is_empty(), "changes left in the queue: {pending:?}");
    let cheap = client.find_all(
        "Product",
        &Query::filter(tidesync_core::Cond::Eq("price".into(), "1.00".into())),
    )?;
    progress.say(&format!("   a local query: {} products at 1.00", cheap.len()));

    engine.shutdown();
    let rows = progress.rows.lock().clone();
    println!("\n| source | objects | pages | time | objects/s |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for (name, r) in &rows {
        let rate = if r.seconds > 0.0 {
            r.objects as f64 / r.seconds
        } else {
            0.0
        };
        println!(
            "| {name} | {} | {} | {:.2} s | {:.0} |",
            r.objects, r.pages, r.seconds, rate
        );
    }
    println!("\ndemo finished in {:.1} s", total.elapsed().as_secs_f64());
    Ok(())
}

struct Cleanup(std::path::PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
