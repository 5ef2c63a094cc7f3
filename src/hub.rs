//! Running the hub's roles: the API server, the workers, or both, until a shutdown signal.

use std::{future::Future, net::SocketAddr, time::Duration};

use poem::{
    Endpoint, Server,
    listener::{Acceptor, Listener, TcpAcceptor, TcpListener},
};
use sqlx::PgPool;
use syncline_jobs::{WorkerSet, WorkerSettings, core::PartnerSettings};
use tokio::sync::watch;

use crate::{api, config::Config, db};

/// The database the hub runs on, and the embedded cluster behind it if we started one.
pub struct Database {
    pub pool: PgPool,
    pub embedded: Option<db::embedded::EmbeddedPostgres>,
}

impl Database {
    /// Connects to `DATABASE_URL`, or starts the embedded cluster, then migrates.
    pub async fn open(config: &Config, max_connections: u32) -> anyhow::Result<Self> {
        let (url, embedded) = match &config.database_url {
            Some(url) => (url.clone(), None),
            None => {
                let pg = db::embedded::EmbeddedPostgres::start(&config.data_dir).await?;
                (pg.url.clone(), Some(pg))
            }
        };
        let pool = db::connect_with_retry(&url, Duration::from_secs(30), max_connections).await?;
        db::migrate::run(&pool).await?;
        Ok(Self { pool, embedded })
    }

    pub async fn close(self) {
        self.pool.close().await;
        if let Some(pg) = self.embedded {
            pg.stop();
        }
    }
}

/// A shutdown signal that many tasks can wait on.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// Fires on Ctrl-C or SIGTERM.
    pub fn on_signals() -> Self {
        let (trigger, shutdown) = Self::manual();
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler installs");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            tracing::info!("shutdown requested: finishing in-flight work");
            let _ = trigger.send(true);
        });
        shutdown
    }

    /// A signal fired by sending `true` on the returned sender (tests, embedding).
    pub fn manual() -> (watch::Sender<bool>, Self) {
        let (tx, rx) = watch::channel(false);
        (tx, Self(rx))
    }

    pub fn wait(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.0.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }
}

pub async fn bind(addr: SocketAddr) -> anyhow::Result<(TcpAcceptor, SocketAddr)> {
    let acceptor = TcpListener::bind(addr).into_acceptor().await?;
    let local = acceptor
        .local_addr()
        .first()
        .and_then(|a| a.as_socket_addr().copied())
        .unwrap_or(addr);
    Ok((acceptor, local))
}

/// Serves the API on `acceptor` until `shutdown`, then lets open requests finish.
pub async fn serve(
    acceptor: TcpAcceptor,
    state: api::AppState,
    config: &Config,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    run_server(acceptor, api::app(state, config.max_body_bytes), shutdown).await
}

/// Serves `GET /metrics` alone on `acceptor` until `shutdown` (the worker role's scrape
/// address, `SYNCLINE_METRICS_ADDR`).
pub async fn serve_metrics(
    acceptor: TcpAcceptor,
    pool: PgPool,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    run_server(acceptor, api::only_metrics(pool), shutdown).await
}

async fn run_server(
    acceptor: TcpAcceptor,
    app: impl Endpoint + 'static,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    Server::new_with_acceptor(acceptor)
        .run_with_graceful_shutdown(app, shutdown.wait(), Some(Duration::from_secs(10)))
        .await?;
    Ok(())
}

/// A name no other worker process has: live workers are told from dead ones by it.
pub fn process_name() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "host".into());
    format!(
        "{host}-{}-{:04x}",
        std::process::id(),
        rand::random::<u16>()
    )
}

/// Runs every job kind until `shutdown`, then drains within the grace period.
pub async fn work(
    pool: PgPool,
    config: &Config,
    process_name: String,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    syncline_jobs::core::delay::set_max(config.max_delay);
    let mut settings = WorkerSettings::new(process_name);
    settings.concurrency = config.worker_concurrency;
    settings.batch_size = config.worker_batch_size;
    settings.shutdown_grace = config.shutdown_grace;
    settings.heartbeat = config.worker_heartbeat;
    settings.missed_heartbeats = config.missed_heartbeats;
    settings.max_recoveries = config.max_recoveries;
    settings.poll_interval = config.worker_poll;
    settings.retention_days = config.retention_days;
    settings.scheduler = config.scheduler;
    settings.allio_sweep_at = config.allio_sweep_at;
    settings.retry_delay_scale = config.retry_delay_scale;
    settings.partners = PartnerSettings {
        allio_rate_per_sec: config.allio_rate,
        allio_egress: config.allio_egress.clone(),
    };
    let workers = syncline_jobs::register_all(WorkerSet::new(pool, settings));
    workers.run(shutdown.wait()).await
}
