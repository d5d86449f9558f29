//! The conference-registration system: `cargo run --release -p conference-app`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use conference_app::documents::Documents;
use conference_app::system::{Backend, System};
use conference_app::{api, audit, demo, load, rebuild};
use cqrs_core::{DeadLetters, SystemClock};
use cqrs_sql::{PgOptions, PgStore, SqliteOptions, SqliteStore};
use tokio::sync::watch;

/// mimalloc rather than glibc's allocator: under load the server spent about 18 % of its CPU
/// samples in glibc's `malloc` and `free` (their arenas' locks and consolidation), the
/// requests, envelopes and documents being many small, short-lived allocations.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The conference-registration system: web API and workers, on SQLite or PostgreSQL.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Where the embedded SQLite database lives.
    #[arg(long, env = "CONFERENCE_DATA_DIR", default_value = "./data", global = true)]
    data_dir: PathBuf,
    /// A PostgreSQL URL (`postgres://…`) to run on instead of the embedded SQLite file.
    #[arg(long, env = "DATABASE_URL", global = true)]
    database_url: Option<String>,
    /// The address to serve on.
    #[arg(
        long,
        env = "CONFERENCE_LISTEN",
        default_value = "127.0.0.1:8080",
        global = true
    )]
    listen: SocketAddr,
    /// The admin's bearer token (default: generated once and kept in the data directory).
    #[arg(long, env = "CONFERENCE_ADMIN_TOKEN", global = true, hide_env_values = true)]
    admin_token: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Web, API and all workers in one process (the default).
    Serve,
    /// The web front end and API only.
    Web,
    /// The workers only (several may run against one PostgreSQL).
    Worker,
    /// Applies the database migrations and exits.
    Migrate,
    /// Rebuilds a read model from the event log while the old one keeps serving, then switches.
    Rebuild {
        /// The read model: conference_view, draft_order, priced_order, order_seats, payments,
        /// admin_orders.
        read_model: String,
    },
    /// Drives a running instance over HTTP with simulated registrants, reports what it
    /// measured (JSON and an SVG latency plot), then audits the database.
    Load {
        /// The running instance.
        #[arg(long, env = "CONFERENCE_LOAD_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
        /// Orders to run through the whole flow.
        #[arg(long, env = "CONFERENCE_LOAD_ORDERS", default_value_t = 1000)]
        orders: usize,
        /// Registrants at a time.
        #[arg(long, env = "CONFERENCE_LOAD_CONCURRENCY", default_value_t = 64)]
        concurrency: usize,
        /// Orders started per second (default: as fast as the concurrency allows).
        #[arg(long, env = "CONFERENCE_LOAD_RATE")]
        rate: Option<f64>,
        /// Where to write the JSON report.
        #[arg(long, env = "CONFERENCE_LOAD_REPORT", default_value = "load-report.json")]
        report: PathBuf,
        /// Where to draw the latency histogram (SVG).
        #[arg(long, env = "CONFERENCE_LOAD_PLOT", default_value = "load-latency.svg")]
        plot: PathBuf,
    },
    /// Checks the invariants from the event log; exits non-zero on a violation.
    Audit {
        /// Confirmations and payments younger than this are in flight, not checked.
        #[arg(long, env = "CONFERENCE_AUDIT_GRACE_SECONDS", default_value_t = 60)]
        grace_seconds: u64,
    },
    /// Lists or requeues dead letters.
    DeadLetters {
        #[command(subcommand)]
        action: DeadLetterAction,
    },
}

impl Command {
    /// Whether the command runs workers: the queues' consumers and the publisher, the only
    /// waiters the store's notifications of other processes' enqueues and appends wake.
    fn runs_workers(&self) -> bool {
        matches!(self, Self::Serve | Self::Worker)
    }

    /// Whether the command runs until stopped, or for long (a rebuild), reading read models
    /// that other processes write: it listens for their commits (its long polls wake, and
    /// what it read stays cached until a commit names it) and vacuums the store's tables.
    fn long_running(&self) -> bool {
        match self {
            Self::Serve | Self::Web | Self::Worker | Self::Rebuild { .. } => true,
            Self::Migrate | Self::Load { .. } | Self::Audit { .. } | Self::DeadLetters { .. } => false,
        }
    }
}

#[derive(Debug, Subcommand)]
enum DeadLetterAction {
    /// Lists dead letters, oldest first.
    List {
        /// Only those of this queue.
        #[arg(long, env = "CONFERENCE_DEAD_LETTERS_QUEUE")]
        queue: Option<String>,
        /// At most this many.
        #[arg(long, env = "CONFERENCE_DEAD_LETTERS_LIMIT", default_value_t = 100)]
        limit: usize,
    },
    /// Puts dead letters back on their queues, delivery counts reset.
    Requeue {
        /// The ids to requeue.
        #[arg(required_unless_present = "all")]
        ids: Vec<u64>,
        /// Requeue every dead letter.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .init();
    let cli = Cli::parse();
    let clock = SystemClock::shared();
    match &cli.database_url {
        Some(url) => {
            // PostgreSQL wakes a backend of every listening connection at each commit that
            // notifies, so a process listens only where something of it waits: the store's
            // notifications wake the publisher and consumers, which only workers run; the read
            // models' wake long polls and keep the cache of documents read. A one-shot command
            // listens to neither, and leaves the vacuum to the servers.
            let command = cli.command.as_ref().unwrap_or(&Command::Serve);
            let long_running = command.long_running();
            let options = PgOptions::new(url.clone())
                .clock(clock.clone())
                .listen(command.runs_workers());
            let options = if long_running {
                options
            } else {
                options.vacuum_every(None)
            };
            let store = PgStore::connect_with(options)
                .await
                .context("connecting to PostgreSQL")?;
            let documents = if long_running {
                Documents::connect_postgres(url, store.schema()).await
            } else {
                Documents::connect_postgres_unlistening(url, store.schema()).await
            }
            .context("opening the read models")?;
            run(&cli, store, documents).await
        }
        None => {
            std::fs::create_dir_all(&cli.data_dir)
                .with_context(|| format!("creating {}", cli.data_dir.display()))?;
            let store =
                SqliteStore::open_with(SqliteOptions::new(cli.data_dir.join("conference.db")).clock(clock))
                    .await
                    .context("opening the SQLite event store")?;
            let documents = Documents::open_sqlite(&cli.data_dir.join("read_models.db"))
                .await
                .context("opening the read models")?;
            run(&cli, store, documents).await
        }
    }
}

/// The admin token: given, or generated once and kept in the data directory.
fn admin_token(cli: &Cli) -> anyhow::Result<String> {
    if let Some(token) = &cli.admin_token {
        return Ok(token.clone());
    }
    let path = cli.data_dir.join("admin-token");
    if let Ok(token) = std::fs::read_to_string(&path) {
        return Ok(token.trim().to_owned());
    }
    let token = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    std::fs::create_dir_all(&cli.data_dir)?;
    std::fs::write(&path, &token).with_context(|| format!("writing {}", path.display()))?;
    Ok(token)
}

async fn run<S: Backend>(cli: &Cli, store: S, documents: Documents) -> anyhow::Result<()> {
    let system = Arc::new(System::new(store, documents, SystemClock::shared())?);
    let command = cli.command.as_ref().unwrap_or(&Command::Serve);
    match command {
        Command::Migrate => {
            system.subscribe().await?;
            println!("migrations applied");
            return Ok(());
        }
        Command::Audit { grace_seconds } => {
            let grace = chrono::TimeDelta::seconds(i64::try_from(*grace_seconds).unwrap_or(i64::MAX));
            let report = audit::audit(&system.store, &system.documents, system.clock.now() - grace).await?;
            println!("{report}");
            if !report.is_clean() {
                std::process::exit(1);
            }
            return Ok(());
        }
        Command::DeadLetters { action } => return dead_letters(&system.store, action).await,
        Command::Rebuild { read_model } => return rebuild(&system, read_model).await,
        Command::Load {
            url,
            orders,
            concurrency,
            rate,
            report,
            plot,
        } => {
            let token = match &cli.admin_token {
                Some(token) => token.clone(),
                None => std::fs::read_to_string(cli.data_dir.join("admin-token"))
                    .context("the admin token (give --admin-token, or run from the server's data directory)")?
                    .trim()
                    .to_owned(),
            };
            let config = load::LoadConfig {
                url: url.clone(),
                orders: *orders,
                concurrency: *concurrency,
                rate: *rate,
                admin_token: token,
            };
            return load(&system, &config, report, plot).await;
        }
        Command::Serve | Command::Web | Command::Worker => {}
    }
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        let _ = stop.send(true);
    });
    let until_stopped = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };
    let workers = match command {
        Command::Serve | Command::Worker => {
            let system = system.clone();
            let done = until_stopped();
            Some(tokio::spawn(async move { system.run_workers(done).await }))
        }
        _ => None,
    };
    if matches!(command, Command::Web) {
        tokio::spawn(system.refresh_generations(until_stopped()));
    }
    if matches!(command, Command::Serve | Command::Web) {
        if demo::seed(&system).await? {
            println!("created the demo conference `{}`", demo::DEMO_CODE);
        }
        let token = admin_token(cli)?;
        let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .context("installing the metrics recorder")?;
        tokio::spawn(sample_queues(system.store.clone()));
        let listener = tokio::net::TcpListener::bind(cli.listen)
            .await
            .with_context(|| format!("listening on {}", cli.listen))?;
        println!("conference registration at http://{}/", cli.listen);
        println!("admin token: {token}");
        axum::serve(
            listener,
            api::with_metrics(api::router(system.clone(), token), metrics),
        )
        .with_graceful_shutdown(until_stopped())
        .await?;
    }
    if let Some(workers) = workers {
        workers.await??;
    }
    Ok(())
}

async fn dead_letters(store: &impl DeadLetters, action: &DeadLetterAction) -> anyhow::Result<()> {
    match action {
        DeadLetterAction::List { queue, limit } => {
            let letters = store.dead_letters(queue.as_deref(), *limit).await?;
            if letters.is_empty() {
                println!("no dead letters");
            }
            for letter in letters {
                println!(
                    "{:>6}  {}  {:<10} {:<36} after {} deliveries: {}",
                    letter.id,
                    letter.dead_lettered_at.format("%Y-%m-%d %H:%M:%S"),
                    letter.queue,
                    letter.envelope.name(),
                    letter.delivery_count,
                    letter.reason
                );
            }
        }
        DeadLetterAction::Requeue { ids, all } => {
            let mut requeued = 0;
            if *all {
                loop {
                    let page = store.dead_letters(None, 1_000).await?;
                    if page.is_empty() {
                        break;
                    }
                    for letter in page {
                        store.requeue(letter.id).await?;
                        requeued += 1;
                    }
                }
            } else {
                for id in ids {
                    store
                        .requeue(*id)
                        .await
                        .with_context(|| format!("requeueing dead letter {id}"))?;
                    requeued += 1;
                }
            }
            println!("{requeued} dead letters requeued");
        }
    }
    Ok(())
}

/// Keeps the queue gauges current.
async fn sample_queues<S: Backend>(store: S) {
    let mut seen = std::collections::BTreeSet::new();
    loop {
        if let Err(error) = conference_app::system::record_queue_metrics(&store, &mut seen).await {
            tracing::warn!(%error, "queue metrics not sampled");
        }
        tokio::time::sleep(std::time::Duration::from_secs(10)).await;
    }
}

async fn rebuild<S: Backend>(system: &System<S>, name: &str) -> anyhow::Result<()> {
    let bar = indicatif::ProgressBar::new_spinner().with_message(format!("rebuilding {name}"));
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {msg}: {pos} events applied ({per_sec}, {elapsed})",
        )
        .context("the progress template")?,
    );
    let rebuilt = rebuild::rebuild(system, name, || bar.inc(1)).await?;
    bar.finish_with_message(format!("{name} generation {} built", rebuilt.to));
    println!(
        "switched {name} from generation {} to {}",
        rebuilt.from, rebuilt.to
    );
    // Every process reads the switch within a second; then the old generation can go.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let dropped = rebuild::drop_old(system, name, &rebuilt).await?;
    println!("dropped generation {} ({dropped} rows)", rebuilt.from);
    Ok(())
}

async fn load<S: Backend>(
    system: &System<S>,
    config: &load::LoadConfig,
    report_path: &std::path::Path,
    plot_path: &std::path::Path,
) -> anyhow::Result<()> {
    println!(
        "{} orders, {} registrants at a time{}, against {}",
        config.orders,
        config.concurrency,
        config.rate.map(|r| format!(", {r} orders/s")).unwrap_or_default(),
        config.url
    );
    let report = load::run(config, &system.documents)
        .await
        .map_err(anyhow::Error::msg)?;
    std::fs::write(report_path, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", report_path.display()))?;
    load::plot(&report, plot_path).map_err(anyhow::Error::msg)?;
    println!(
        "{} of {} orders completed in {:.1} s: {:.1} orders/s",
        report.completed, report.orders, report.elapsed_seconds, report.orders_per_second
    );
    println!(
        "  steady {:.1} orders/s over the middle {:.0} % of the run; slowest second {} orders",
        report.throughput.steady,
        load::Throughput::STEADY * 100.0,
        report.throughput.slowest_second
    );
    for (what, p) in [
        ("time to priced", &report.time_to_priced_ms),
        ("time to confirmed", &report.time_to_confirmed_ms),
    ]
    .into_iter()
    .chain(report.calls_ms.iter().map(|(route, p)| (route.as_str(), p)))
    {
        println!(
            "  {what:<24} p50 {:>7.1} ms  p90 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms",
            p.p50, p.p90, p.p99, p.max
        );
    }
    for error in report.errors.iter().take(10) {
        println!("  error: {error}");
    }
    println!("report: {}  plot: {}", report_path.display(), plot_path.display());
    // Let the last confirmations' follow-ups (commits, seat assignments) land, then audit.
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let grace = chrono::TimeDelta::seconds(5);
    let audit = audit::audit(&system.store, &system.documents, system.clock.now() - grace).await?;
    println!("{audit}");
    if !report.errors.is_empty() || !audit.is_clean() {
        std::process::exit(1);
    }
    Ok(())
}
