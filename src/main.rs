use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use syncline::{
    api,
    config::Config,
    hub::{self, Database, Shutdown},
    secrets,
    tenancy::{self, IntegrationKind, Name},
};
use syncline_jobs::core::store::operator::Filter;
use uuid::Uuid;

/// syncline: durable integration hub.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// API + workers in one process (embedded Postgres when DATABASE_URL is unset).
    Dev,
    /// The API only.
    Serve,
    /// Workers only; run as many of these processes as you like.
    Work,
    /// Apply database migrations (ours and apalis's) and exit.
    Migrate,
    /// Write the OpenAPI document.
    Openapi {
        #[arg(long, default_value = "openapi/openapi.json")]
        out: PathBuf,
        /// Fail if the file differs from what the code generates instead of writing it.
        #[arg(long)]
        check: bool,
    },
    /// Manage tenants.
    #[command(subcommand)]
    Tenants(TenantCommand),
    /// Manage integrations.
    #[command(subcommand)]
    Integrations(IntegrationCommand),
    /// Issue tokens.
    #[command(subcommand)]
    Tokens(TokenCommand),
    /// Inspect jobs.
    #[command(subcommand)]
    Jobs(JobCommand),
    /// Remote favourites sources (Conference Compass protocol) for `favourites.reconcile`.
    #[command(subcommand)]
    Sources(SourceCommand),
    /// ALLIO integrations.
    #[command(subcommand)]
    Allio(AllioCommand),
    /// Changes-feed webhooks.
    #[command(subcommand)]
    Webhooks(WebhookCommand),
    /// Run a partner simulator (a real HTTP server) until Ctrl-C.
    #[command(subcommand)]
    Simulate(SimulateCommand),
}

#[derive(Subcommand)]
enum SourceCommand {
    Create {
        #[arg(long)]
        tenant: Uuid,
        #[arg(long)]
        name: String,
        #[arg(long)]
        base_url: String,
    },
    List {
        #[arg(long)]
        tenant: Uuid,
    },
    /// Store the token the source accepts for a user (read from stdin, so it stays out
    /// of shell history) and queue a reconcile.
    SetToken {
        #[arg(long)]
        source: Uuid,
        #[arg(long)]
        user: String,
    },
}

#[derive(Subcommand)]
enum SimulateCommand {
    /// A remote favourites server speaking the Conference Compass protocol.
    Cc {
        #[arg(long, default_value = "127.0.0.1:9100")]
        listen: std::net::SocketAddr,
    },
    /// The ALLIO API (`reserve/list`, `dealcard/list`), 2 requests/s per client IP.
    Allio {
        #[arg(long, default_value = "127.0.0.1:9200")]
        listen: std::net::SocketAddr,
        /// The `x-api-key` it accepts.
        #[arg(long, default_value = "allio-dev-key")]
        api_key: String,
        #[arg(long, default_value_t = 2)]
        rate: usize,
    },
}

#[derive(Subcommand)]
enum WebhookCommand {
    /// Put a stopped (or retrying) webhook back to `ok` and queue a delivery.
    Resume { id: i64 },
}

#[derive(Subcommand)]
enum AllioCommand {
    /// Queue a delete sweep of one integration now (besides the daily one).
    Sweep {
        #[arg(long)]
        integration: Uuid,
    },
}

#[derive(Subcommand)]
enum TenantCommand {
    Create { name: String },
    List,
}

#[derive(Subcommand)]
enum IntegrationCommand {
    /// Create an integration; prints its token once.
    Create {
        #[arg(long)]
        tenant: Uuid,
        #[arg(long, value_enum)]
        kind: IntegrationKind,
        #[arg(long)]
        name: String,
    },
    List {
        #[arg(long)]
        tenant: Uuid,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Issue a token for one user of an integration; prints it once.
    CreateUser {
        #[arg(long)]
        integration: Uuid,
        #[arg(long)]
        user: String,
    },
}

#[derive(Subcommand)]
enum JobCommand {
    /// One job with every attempt.
    Show { id: String },
    /// Jobs by filter, newest first.
    List {
        #[command(flatten)]
        filter: FilterArgs,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Replay failed and killed jobs by id or filter (fresh attempt budget, history kept).
    Replay(BulkArgs),
    /// Cancel waiting jobs (pending, scheduled, retrying) by id or filter.
    Cancel(BulkArgs),
    /// Per queue: jobs by status, oldest due job, failures in the last hour.
    Stats,
}

/// Which jobs a replay or cancel touches, and why.
#[derive(clap::Args)]
struct BulkArgs {
    #[command(flatten)]
    filter: FilterArgs,
    /// Why; stored with every job touched.
    #[arg(long, required_unless_present = "dry_run")]
    reason: Option<String>,
    /// Only count what would be touched.
    #[arg(long)]
    dry_run: bool,
}

#[derive(clap::Args)]
struct FilterArgs {
    /// Exactly these job ids.
    #[arg(long = "id")]
    ids: Vec<String>,
    #[arg(long)]
    queue: Option<String>,
    /// available, scheduled, running, retryable, completed, cancelled or discarded.
    #[arg(long)]
    status: Option<String>,
    /// Created at or after (RFC 3339).
    #[arg(long)]
    since: Option<chrono::DateTime<chrono::Utc>>,
    /// Created before (RFC 3339).
    #[arg(long)]
    until: Option<chrono::DateTime<chrono::Utc>>,
    /// Substring of the last error.
    #[arg(long)]
    error: Option<String>,
    #[arg(long)]
    integration: Option<Uuid>,
}

impl From<FilterArgs> for syncline::job_ops::JobFilter {
    fn from(a: FilterArgs) -> Self {
        Self {
            ids: a.ids,
            queue: a.queue,
            status: a.status,
            since: a.since,
            until: a.until,
            error: a.error,
            integration: a.integration,
        }
    }
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("syncline: invalid configuration: {e}");
            std::process::exit(2);
        }
    };
    init_tracing(&config);
    if let Err(e) = run(cli.command, config).await {
        eprintln!("syncline: {e:#}");
        std::process::exit(1);
    }
}

fn init_tracing(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        "info,sqlx=warn,apalis=warn,apalis_core=warn,apalis_postgres=warn".into()
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if config.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Openapi { out, check } => return openapi(&out, check),
        Command::Simulate(simulator) => return simulate(simulator).await,
        Command::Dev => return dev(config).await,
        _ => {}
    }
    let db = Database::open(&config, 20).await?;
    let result = match command {
        Command::Serve => serve(&config, &db).await,
        Command::Work => work(&config, &db, Shutdown::on_signals()).await,
        Command::Migrate => {
            println!("migrations applied");
            Ok(())
        }
        Command::Tenants(c) => tenants(&db, c).await,
        Command::Integrations(c) => integrations(&db, c).await,
        Command::Tokens(c) => tokens(&db, c).await,
        Command::Jobs(command) => jobs(&db, command).await,
        Command::Sources(c) => sources(&db, c).await,
        Command::Webhooks(WebhookCommand::Resume { id }) => {
            use syncline_jobs::webhook_deliver::{Resumed, resume};
            let mut tx = db.pool.begin().await?;
            let resumed = resume(&mut tx, id).await?;
            anyhow::ensure!(resumed != Resumed::NoSuchWebhook, "no webhook {id}");
            tx.commit().await?;
            println!("webhook {id} resumed; delivery queued");
            Ok(())
        }
        Command::Allio(AllioCommand::Sweep { integration }) => {
            let mut tx = db.pool.begin().await?;
            let job = syncline_jobs::allio_delete_sweep::enqueue_sweep(&mut tx, integration, None)
                .await?;
            tx.commit().await?;
            println!("delete sweep queued: job {}", job.unwrap_or_default());
            Ok(())
        }
        Command::Openapi { .. } | Command::Dev | Command::Simulate(_) => {
            unreachable!("handled above")
        }
    };
    db.close().await;
    result
}

fn openapi(out: &std::path::Path, check: bool) -> anyhow::Result<()> {
    let spec = api::openapi_json();
    if check {
        let committed =
            std::fs::read_to_string(out).with_context(|| format!("reading {}", out.display()))?;
        anyhow::ensure!(
            committed == spec,
            "{} is out of date: run `syncline openapi`",
            out.display()
        );
        println!("{} is up to date", out.display());
    } else {
        if let Some(dir) = out.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(out, spec)?;
        println!("wrote {}", out.display());
    }
    Ok(())
}

fn admin_token(config: &Config, generate: bool) -> anyhow::Result<String> {
    match (&config.admin_token, generate) {
        (Some(token), _) => Ok(token.clone()),
        (None, true) => {
            let token = secrets::issue().plaintext;
            println!(
                "admin token (generated for this run; set SYNCLINE_ADMIN_TOKEN to choose one): {token}"
            );
            Ok(token)
        }
        (None, false) => Err(anyhow::anyhow!(
            "SYNCLINE_ADMIN_TOKEN: is required for `serve` (at least 16 characters)"
        )),
    }
}

async fn serve(config: &Config, db: &Database) -> anyhow::Result<()> {
    let state = api::AppState::new(db.pool.clone(), &admin_token(config, false)?);
    let (acceptor, addr) = hub::bind(config.listen).await?;
    println!("syncline API on http://{addr} (docs: http://{addr}/docs)");
    hub::serve(acceptor, state, config, Shutdown::on_signals()).await
}

async fn dev(config: Config) -> anyhow::Result<()> {
    let db = Database::open(&config, 40).await?;
    let state = api::AppState::new(db.pool.clone(), &admin_token(&config, true)?);
    let (acceptor, addr) = hub::bind(config.listen).await?;
    let shutdown = Shutdown::on_signals();
    println!("syncline dev: API, workers and scheduler in one process");
    println!("  API:  http://{addr}");
    println!("  docs: http://{addr}/docs");
    let api = hub::serve(acceptor, state, &config, shutdown.clone());
    let workers = work(&config, &db, shutdown);
    let (api, workers) = tokio::join!(api, workers);
    db.close().await;
    api.and(workers)
}

/// The worker role, and `GET /metrics` on `SYNCLINE_METRICS_ADDR` when it is set.
async fn work(config: &Config, db: &Database, shutdown: Shutdown) -> anyhow::Result<()> {
    let metrics = match config.metrics_addr {
        Some(addr) => {
            let (acceptor, addr) = hub::bind(addr)
                .await
                .with_context(|| format!("SYNCLINE_METRICS_ADDR: cannot listen on {addr}"))?;
            println!("  metrics: http://{addr}/metrics");
            Some(hub::serve_metrics(
                acceptor,
                db.pool.clone(),
                shutdown.clone(),
            ))
        }
        None => None,
    };
    let workers = hub::work(db.pool.clone(), config, hub::process_name(), shutdown);
    match metrics {
        Some(metrics) => {
            let (metrics, workers) = tokio::join!(metrics, workers);
            workers.and(metrics)
        }
        None => workers.await,
    }
}

async fn tenants(db: &Database, command: TenantCommand) -> anyhow::Result<()> {
    match command {
        TenantCommand::Create { name } => {
            let t = tenancy::create_tenant(&db.pool, &Name::parse(&name, "name")?).await?;
            println!("{}\t{}", t.id, t.name);
        }
        TenantCommand::List => {
            for t in tenancy::list_tenants(&db.pool).await? {
                println!("{}\t{}\t{}", t.id, t.name, t.created_at);
            }
        }
    }
    Ok(())
}

async fn integrations(db: &Database, command: IntegrationCommand) -> anyhow::Result<()> {
    match command {
        IntegrationCommand::Create { tenant, kind, name } => {
            let name = Name::parse(&name, "name")?;
            let (i, token) = tenancy::create_integration(&db.pool, tenant, kind, &name).await?;
            println!("{}\t{}\t{}", i.id, i.kind.as_str(), i.name);
            println!("token (shown once): {}", token.token);
        }
        IntegrationCommand::List { tenant } => {
            for i in tenancy::list_integrations(&db.pool, tenant).await? {
                println!(
                    "{}\t{}\t{}\t{}",
                    i.id,
                    i.kind.as_str(),
                    i.name,
                    i.created_at
                );
            }
        }
    }
    Ok(())
}

async fn tokens(db: &Database, command: TokenCommand) -> anyhow::Result<()> {
    let TokenCommand::CreateUser { integration, user } = command;
    let token = tenancy::issue_user_token(&db.pool, integration, &user).await?;
    println!(
        "{}\ttoken (shown once): {}",
        token.credential_id, token.token
    );
    Ok(())
}

async fn sources(db: &Database, command: SourceCommand) -> anyhow::Result<()> {
    use syncline_domain::favourites::{UserId, sources};
    let mut tx = db.pool.begin().await?;
    match command {
        SourceCommand::Create {
            tenant,
            name,
            base_url,
        } => {
            let name = Name::parse(&name, "name")?;
            let url = reqwest::Url::parse(&base_url).context("base URL")?;
            let s = sources::create(&mut tx, tenant, name.as_str(), url.as_str()).await?;
            println!("{}\t{}\t{}", s.id, s.name, s.base_url);
        }
        SourceCommand::List { tenant } => {
            for s in sources::list(&mut tx, tenant).await? {
                println!("{}\t{}\t{}", s.id, s.name, s.base_url);
            }
        }
        SourceCommand::SetToken { source, user } => {
            let user = UserId::parse(&user)?;
            let mut token = String::new();
            std::io::stdin().read_line(&mut token)?;
            let token = token.trim();
            anyhow::ensure!(!token.is_empty(), "no token on standard input");
            sources::set_user_token(&mut tx, source, &user, token)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no source `{source}`"))?;
            syncline_jobs::reconcile::enqueue_one(&mut tx, source, user.as_str()).await?;
            println!("token stored; reconcile queued");
        }
    }
    tx.commit().await?;
    Ok(())
}

async fn simulate(simulator: SimulateCommand) -> anyhow::Result<()> {
    use syncline::simulators::{allio::AllioSimulator, cc::CcSimulator};
    let server = match simulator {
        SimulateCommand::Cc { listen } => {
            let (acceptor, addr) = hub::bind(listen).await?;
            println!("Conference Compass simulator on http://{addr}");
            println!(
                "  seed a user: curl -X PUT http://{addr}/_sim/users/TOKEN -H 'content-type: application/json' -d '[]'"
            );
            CcSimulator::default().serve(acceptor)
        }
        SimulateCommand::Allio {
            listen,
            api_key,
            rate,
        } => {
            let (acceptor, addr) = hub::bind(listen).await?;
            println!(
                "ALLIO simulator on http://{addr} ({rate} requests/s per client IP, x-api-key: {api_key})"
            );
            AllioSimulator::new(&api_key, rate).serve(acceptor)
        }
    };
    Shutdown::on_signals().wait().await;
    server.abort();
    Ok(())
}

/// The CLI's filter as the store's, refusing an unknown status.
fn checked(args: FilterArgs) -> anyhow::Result<Filter> {
    Ok(Filter::try_from(syncline::job_ops::JobFilter::from(args))?)
}

async fn jobs(db: &Database, command: JobCommand) -> anyhow::Result<()> {
    use syncline::job_ops::{self, Action};
    let bulk = |args: BulkArgs, action: Action| async move {
        let BulkArgs {
            filter,
            reason,
            dry_run,
        } = args;
        let filter = checked(filter)?;
        if dry_run {
            let n = job_ops::count(&db.pool, &filter, action).await?;
            println!("{n} jobs would be affected");
        } else {
            let ids = job_ops::apply(
                &db.pool,
                &filter,
                action,
                reason.as_deref().unwrap_or_default(),
            )
            .await?;
            println!("{} jobs affected", ids.len());
            for id in ids {
                println!("{id}");
            }
        }
        anyhow::Ok(())
    };
    match command {
        JobCommand::Show { id } => {
            let job = job_ops::show(&db.pool, &id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no job `{id}`"))?;
            println!("{job:#?}");
        }
        JobCommand::List { filter, limit } => {
            for j in job_ops::list(&db.pool, &checked(filter)?, None, limit).await? {
                let error = j.last_error.unwrap_or_default();
                println!(
                    "{}\t{}\t{}\t{}/{}\t{}\t{error}",
                    j.id, j.queue, j.status, j.attempts, j.max_attempts, j.created_at
                );
            }
        }
        JobCommand::Replay(args) => bulk(args, Action::Replay).await?,
        JobCommand::Cancel(args) => bulk(args, Action::Cancel).await?,
        JobCommand::Stats => {
            for q in job_ops::stats(&db.pool).await? {
                let counts: Vec<String> =
                    q.counts.iter().map(|(s, n)| format!("{s}={n}")).collect();
                let oldest = q
                    .oldest_due_secs
                    .map_or_else(|| "-".into(), |s| format!("{s:.0}s"));
                println!(
                    "{}\t{}\toldest due {oldest}\tlast hour {} attempts, {} failed",
                    q.queue,
                    counts.join(" "),
                    q.attempts_last_hour,
                    q.failed_attempts_last_hour
                );
            }
        }
    }
    Ok(())
}
