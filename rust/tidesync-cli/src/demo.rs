//! `tidesync demo`: the engine doing its job, end to end, in well under 30 s.
//!
//! It starts the reference server on loopback with a realistic data set, syncs a fresh client
//! with a progress bar per source driven by the engine's notifications, makes local edits and
//! pushes them, shows a change the server refuses and how the app resolves it, and ends with a
//! summary table. Plain lines when stdout is not a terminal.

use std::time::Instant;

use anyhow::{Context as _, Result};
use tidesync_core::{
    Attrs, CreateErrorAction, Engine, EngineConfig, Partition, Query, SourceDef, SyncNotification, SyncOptions,
    SyncType,
};

use crate::progress::Progress;
use tidesync_server::{App, DatasetSpec, Server, ServerConfig};

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
    progress.start_phase("");
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
    progress.start_phase("push ");
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
    let rows = progress.rows();
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
