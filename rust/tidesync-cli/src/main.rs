//! `tidesync`: run the reference RhoConnect-compatible server (and, as the engine grows, sync,
//! demo and benchmark against it).

mod bench;
mod bench_blobs;
mod demo;
mod progress;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use tidesync_server::{App, DatasetSpec, FaultRule, Faults, Partition, ServerConfig, sqlite_backend};

#[derive(Parser, Debug)]
#[command(
    name = "tidesync",
    version,
    about = "TideSync: offline-first sync over the RhoConnect protocol"
)]
struct Cli {
    /// More logging (-v: info, -vv: debug, -vvv: trace). `RUST_LOG` overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve a RhoConnect-compatible sync server until interrupted.
    Serve(ServeArgs),
    /// Sync a local database with a RhoConnect server (any RhoConnect-compatible URL).
    Sync(SyncArgs),
    /// The main job: a server with a realistic data set, a fresh client syncing it with progress,
    /// local edits pushed, a refused change handled, and a summary.
    Demo(DemoArgs),
    /// Measure sync speed, memory, latency against the raw-SQLite ceiling (loopback only).
    Bench(BenchArgs),
}

#[derive(clap::Args, Debug)]
struct DemoArgs {
    /// Products (shared by all users).
    #[arg(long, default_value_t = 20_000)]
    products: u64,
    /// Customers (per user).
    #[arg(long, default_value_t = 5_000)]
    customers: u64,
    /// Objects (× 10 attributes) of the Catalog source, loaded by a bulk first sync (0: none).
    #[arg(long, default_value_t = 100_000)]
    catalog: u64,
}

#[derive(clap::Args, Debug)]
struct BenchArgs {
    /// Print the figures as one JSON object on the last line.
    #[arg(long)]
    json: bool,
    /// Small sizes (a smoke test of the whole path, for CI), not the full benchmark.
    #[arg(long)]
    quick: bool,
    /// Only the bulk-versus-incremental first sync (1M objects; 5k with --quick).
    #[arg(long)]
    bulk: bool,
    /// Measure only one part (for profiling).
    #[arg(long, value_enum)]
    only: Option<bench::Part>,
    /// Objects of the initial sync (default 100000, 20000 with --quick).
    #[arg(long)]
    objects: Option<u64>,
    /// Objects of the store the incremental update is measured on (default 500000, 20000 with
    /// --quick; the JSON key keeps its `_500k` name and `incremental_store_objects` says the size).
    #[arg(long)]
    incremental_objects: Option<u64>,
}

#[derive(clap::Args, Debug)]
struct SyncArgs {
    /// The sync server URL as a Rhodes app configures it, e.g. `http://127.0.0.1:9292/application`.
    #[arg(long)]
    url: String,
    /// Login.
    #[arg(long)]
    user: String,
    /// Password.
    #[arg(long)]
    password: String,
    /// The local database (created if missing).
    #[arg(long)]
    db: PathBuf,
    /// Sources to sync (repeatable), `NAME`, `NAME:app` or `NAME:user` (the partition, which a
    /// bulk sync needs; default user, except Product: app). Default: Product and Customer when
    /// the database declares no source yet, else every declared source.
    #[arg(long = "source")]
    sources: Vec<String>,
    /// Force a bulk sync of the sources (spec §6: one SQLite file per partition) before the
    /// incremental sync; they become bulk sources.
    #[arg(long)]
    bulk: bool,
    /// Objects per page.
    #[arg(long, default_value_t = 2000)]
    page_size: u32,
    /// Do not verify TLS certificates (for test servers with self-signed certificates).
    #[arg(long)]
    insecure: bool,
    /// Trust the certificates in this PEM file instead of the built-in roots (a private CA or a
    /// self-signed server).
    #[arg(long, value_name = "PEM")]
    ca_cert: Option<PathBuf>,
    /// Print one JSON summary as the last stdout line.
    #[arg(long)]
    json: bool,
    /// Print every notification as one JSON line on stdout (before the summary).
    #[arg(long)]
    notifications: bool,
    /// Add this process's peak RSS (`peak_rss_kb`) to the JSON summary (used by `bench`).
    #[arg(long, hide = true)]
    report_rss: bool,
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// Address to listen on; port 0 picks a free port (printed on stdout).
    #[arg(long, default_value = "127.0.0.1:9292")]
    addr: SocketAddr,
    /// Generated in-memory data: `Product=300,Customer=120` or `Item=100000x10` (N objects × M
    /// attributes). Product/Customer get the shapes of the transcripts' test app.
    #[arg(long, conflicts_with_all = ["app", "db"])]
    dataset: Option<String>,
    /// A built-in application: `transcripts` (the test app the RhoConnect transcripts were
    /// recorded with: Product 300 shared, Customer 120 per user, its refusal rules).
    #[arg(long, conflicts_with = "db")]
    app: Option<String>,
    /// Serve the data of a SQLite file (created if missing; see `--source` and `--user`).
    #[arg(long)]
    db: Option<PathBuf>,
    /// With --db: declare a source `NAME[:user|:app]` (default partition user). Repeatable.
    #[arg(long = "source", requires = "db")]
    sources: Vec<String>,
    /// With --db: add or update a user `LOGIN:PASSWORD`. Repeatable.
    #[arg(long = "user", requires = "db")]
    users: Vec<String>,
    /// With --db: re-read the tables every N seconds to see edits made by other programs.
    #[arg(long, requires = "db")]
    refresh_secs: Option<u64>,
    /// Seed of generated data and of fault decisions.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Inject a fault: `ROUTE:FAULT[@PROBABILITY][+SKIP][xTIMES]`, e.g. `query:http500@0.1`,
    /// `push:apply_then_drop+1x1`, `any:latency=100`. Repeatable.
    #[arg(long = "fault")]
    faults: Vec<String>,
    /// Largest accepted request body in bytes.
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    body_limit: usize,
    /// Where bulk data files are written (default: a temporary directory).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Serve the transcripts' test-harness route `POST /app/v1/Product/test_backend_change`.
    #[arg(long)]
    test_routes: bool,
    /// Serve HTTPS with this certificate chain (PEM, server certificate first).
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

fn main() {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).init();
    if let Err(e) = run(cli) {
        eprintln!("tidesync: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Sync(args) => sync(args),
        Command::Demo(args) => demo::run(args.products, args.customers, args.catalog),
        Command::Bench(args) => {
            let mut sizes = if args.quick {
                bench::Sizes::quick()
            } else {
                bench::Sizes::full()
            };
            sizes.initial = args.objects.unwrap_or(sizes.initial);
            sizes.incremental_store = args.incremental_objects.unwrap_or(sizes.incremental_store);
            if args.bulk {
                bench::run_bulk(sizes, args.json).map(|_| ())
            } else {
                bench::run(sizes, args.json, args.only).map(|_| ())
            }
        }
    }
}

fn sync(args: SyncArgs) -> Result<()> {
    use tidesync_core::{
        BulkSyncState, Engine, EngineConfig, Partition as CorePartition, SourceDef, SyncNotification, SyncOptions,
        SyncType,
    };
    let config = EngineConfig {
        sync_server: Some(args.url.clone()),
        page_size: Some(args.page_size),
        poll_interval: Some(0),
        ssl_verify_peer: Some(!args.insecure),
        trusted_certificates_pem: match &args.ca_cert {
            Some(p) => Some(std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?),
            None => None,
        },
        ..EngineConfig::default()
    };
    let engine = Engine::open(&args.db, config).with_context(|| format!("opening {}", args.db.display()))?;
    let client = engine.client();
    let declared: Vec<tidesync_core::store::meta::SourceRow> = client.store().sources()?;
    let requested: Vec<String> = if !args.sources.is_empty() {
        args.sources.clone()
    } else if declared.is_empty() {
        vec!["Product".into(), "Customer".into()]
    } else {
        declared.iter().map(|s| s.def.name.clone()).collect()
    };
    let mut wanted: Vec<String> = Vec::with_capacity(requested.len());
    for (i, spec) in requested.iter().enumerate() {
        let (name, partition) = match spec.rsplit_once(':') {
            Some((n, "app")) => (n, Some(CorePartition::App)),
            Some((n, "user")) => (n, Some(CorePartition::User)),
            Some((_, p)) => bail!("--source {spec}: partition must be `user` or `app`, not `{p}`"),
            None => (spec.as_str(), None),
        };
        let existing = declared.iter().find(|s| s.def.name == name).map(|s| s.def.clone());
        let mut def = existing.clone().unwrap_or_else(|| {
            let p = if name == "Product" {
                CorePartition::App
            } else {
                CorePartition::User
            };
            SourceDef::new(name).priority(i as i64 + 1).partition(p)
        });
        if let Some(p) = partition {
            def = def.partition(p);
        }
        if args.bulk {
            def = def.sync_type(SyncType::Bulk);
        }
        if existing.as_ref() != Some(&def) {
            client.define_source(&def)?;
        }
        wanted.push(name.to_owned());
    }
    if args.bulk {
        client.set_bulk_sync_state(BulkSyncState::Needed)?;
    }
    let _listener = if args.notifications {
        Some(engine.set_notification(None, |n: &SyncNotification| {
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", n.to_json());
        }))
    } else if !args.json {
        // Progress bars per source on a terminal, plain lines otherwise (as `demo`).
        let p = progress::Progress::new();
        Some(engine.set_notification(None, move |n: &SyncNotification| p.on(n)))
    } else {
        None
    };
    let started = std::time::Instant::now();
    let mut results: Vec<(
        String,
        std::result::Result<tidesync_core::SourceReport, tidesync_core::Error>,
    )> = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    match engine.login_blocking(&args.user, &args.password) {
        Err(e) => errors.push(format!("login: {e}")),
        Ok(()) if args.bulk => {
            // A sync of all sources: the bulk sync first, then page by page.
            match engine.sync_all_blocking(SyncOptions::default()) {
                Err(e) => errors.push(format!("sync: {e}")),
                Ok(report) => {
                    for (name, r) in report.sources {
                        if wanted.contains(&name) {
                            if let Err(e) = &r {
                                errors.push(format!("{name}: {e}"));
                            }
                            results.push((name, r));
                        }
                    }
                }
            }
        }
        Ok(()) => {
            for name in &wanted {
                let r = engine.sync_source_blocking(name, SyncOptions::default());
                if let Err(e) = &r {
                    errors.push(format!("{name}: {e}"));
                }
                results.push((name.clone(), r));
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    engine.shutdown();
    let ok = errors.is_empty() && results.len() == wanted.len();
    let mut sources = serde_json::Map::new();
    for name in &wanted {
        let objects = client.count(name, None).unwrap_or(0);
        let status = match results.iter().find(|(n, _)| n == name) {
            Some((_, Ok(_))) => "ok",
            Some((_, Err(_))) => "error",
            None => "skipped",
        };
        if !args.json {
            println!("{name}: {objects} objects ({status})");
        }
        sources.insert(name.clone(), serde_json::json!({"objects": objects, "status": status}));
    }
    if !args.json {
        for e in &errors {
            eprintln!("error: {e}");
        }
        println!("synced in {elapsed:.2} s");
    } else {
        let mut summary = serde_json::json!({
            "ok": ok,
            "sources": sources,
            "errors": errors,
            "elapsed_s": elapsed,
        });
        if args.report_rss {
            summary["peak_rss_kb"] = serde_json::json!(bench::peak_rss_kb());
        }
        println!("{summary}");
    }
    if !ok {
        std::process::exit(2);
    }
    Ok(())
}

fn serve(args: ServeArgs) -> Result<()> {
    let app = if let Some(db) = &args.db {
        for s in &args.sources {
            let (name, partition) = match s.split_once(':') {
                Some((n, "user")) => (n, Partition::User),
                Some((n, "app")) => (n, Partition::App),
                Some((_, p)) => bail!("--source {s}: partition must be `user` or `app`, not `{p}`"),
                None => (s.as_str(), Partition::User),
            };
            sqlite_backend::add_source(db, name, partition, 0).with_context(|| format!("--source {s}"))?;
        }
        for u in &args.users {
            let (login, password) = u.split_once(':').context("--user expects LOGIN:PASSWORD")?;
            sqlite_backend::add_user(db, login, password).with_context(|| format!("--user {login}"))?;
        }
        let app = sqlite_backend::open_app(db, args.refresh_secs.map(Duration::from_secs))
            .with_context(|| format!("opening {}", db.display()))?;
        if app.sources.is_empty() {
            eprintln!(
                "tidesync: {} declares no source yet; add one with --source NAME[:user|:app]",
                db.display()
            );
        }
        app
    } else if let Some(name) = &args.app {
        match name.as_str() {
            "transcripts" => App::transcripts(),
            other => bail!("unknown --app `{other}` (known: transcripts)"),
        }
    } else {
        let spec = args.dataset.as_deref().unwrap_or("Product=300,Customer=120");
        let specs = DatasetSpec::parse_list(spec)
            .map_err(anyhow::Error::msg)
            .context("--dataset")?;
        App::generated(&specs, args.seed)
    };
    let rules: Vec<FaultRule> = args
        .faults
        .iter()
        .map(|f| {
            f.parse::<FaultRule>()
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("--fault {f}"))
        })
        .collect::<Result<_>>()?;
    let mut config = ServerConfig::new(app);
    config.addr = args.addr;
    config.faults = Faults::new(rules, args.seed);
    config.body_limit = args.body_limit;
    config.data_dir = args.data_dir;
    config.test_routes = args.test_routes;
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let read = |p: &PathBuf| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
        config.tls = Some(tidesync_server::TlsIdentity {
            cert_chain_pem: read(cert)?,
            key_pem: read(key)?,
        });
    }
    let scheme = if config.tls.is_some() { "https" } else { "http" };
    tidesync_server::serve_blocking(
        config,
        |addr| {
            use std::io::Write as _;
            println!("listening on {scheme}://{addr}/");
            let _ = std::io::stdout().flush();
        },
        async {
            let _ = tokio::signal::ctrl_c().await;
        },
    )
    .context("serving")
}
