//! A private Postgres cluster for when no `DATABASE_URL` is given: found among the
//! locally installed server binaries, created under our data folder, started on a free
//! loopback port, and stopped when we exit (even on `kill -9`, via the parent-death
//! signal).

use std::{
    fs,
    io::Read,
    net::TcpListener,
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Mutex, mpsc},
    time::Duration,
};

use anyhow::{Context, bail};
use nix::{
    sys::signal::{Signal, kill},
    unistd::{Pid, Uid, User, chown},
};

const DATABASE: &str = "syncline";

/// A running embedded cluster. Dropping it does not stop it; call [`stop`](Self::stop).
pub struct EmbeddedPostgres {
    /// Connection URL of the `syncline` database.
    pub url: String,
    /// The postmaster we started, if we started it (not when we joined a running one).
    started: Option<Pid>,
    exited: Option<Mutex<mpsc::Receiver<()>>>,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "no PostgreSQL server binaries found (looked for `initdb` and `postgres` on PATH and in \
     /usr/lib/postgresql/*/bin). Either install PostgreSQL (e.g. `apt-get install postgresql`) \
     or set DATABASE_URL to a running server."
)]
pub struct NotInstalled;

/// Directory holding `initdb` and `postgres`: PATH first, then the newest Debian layout.
pub fn find_binaries() -> Result<PathBuf, NotInstalled> {
    let has_both = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>());
    if let Some(dir) = on_path.into_iter().find(|d| has_both(d)) {
        return Ok(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, bin)| has_both(bin))
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or(NotInstalled)
}

impl EmbeddedPostgres {
    /// Starts (creating if needed) the cluster in `root/pgdata`, or joins the one already
    /// running there.
    pub async fn start(root: &Path) -> anyhow::Result<Self> {
        let bin = find_binaries()?;
        fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
        let root = root.canonicalize()?;
        let data = root.join("pgdata");
        let owner = cluster_owner(&root)?;

        if let Some(port) = running_port(&data) {
            tracing::info!(port, data = %data.display(), "joining the embedded Postgres already running");
            let url = format!("postgres://postgres@127.0.0.1:{port}/{DATABASE}");
            return Ok(Self {
                url,
                started: None,
                exited: None,
            });
        }
        if !data.join("PG_VERSION").exists() {
            init_cluster(&bin, &data, owner.as_ref())?;
        }
        let port = free_port()?;
        let log = root.join("postgres.log");
        let (pid, exited) = spawn_postmaster(&bin, &data, port, &log, owner.as_ref())?;
        let this = Self {
            url: format!("postgres://postgres@127.0.0.1:{port}/{DATABASE}"),
            started: Some(pid),
            exited: Some(Mutex::new(exited)),
        };
        if let Err(e) = this.create_database(port).await {
            this.stop();
            return Err(e.context(format!(
                "embedded Postgres did not come up; see {}",
                log.display()
            )));
        }
        tracing::info!(port, data = %data.display(), "started embedded Postgres (no DATABASE_URL set)");
        Ok(this)
    }

    async fn create_database(&self, port: u16) -> anyhow::Result<()> {
        let admin = format!("postgres://postgres@127.0.0.1:{port}/postgres");
        let pool = super::connect_with_retry(&admin, Duration::from_secs(30), 2).await?;
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(DATABASE)
                .fetch_one(&pool)
                .await?;
        if !exists {
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {DATABASE}")))
                .execute(&pool)
                .await?;
        }
        pool.close().await;
        Ok(())
    }

    /// Fast shutdown of the postmaster we started; waits up to 10 s for it to exit.
    pub fn stop(&self) {
        if let (Some(pid), Some(exited)) = (self.started, &self.exited) {
            let _ = kill(pid, Signal::SIGINT);
            if let Ok(exited) = exited.lock() {
                let _ = exited.recv_timeout(Duration::from_secs(10));
            }
        }
    }
}

/// initdb refuses to run as root: as root we run the cluster as the `postgres` system
/// user, which must be able to reach our data folder.
fn cluster_owner(root: &Path) -> anyhow::Result<Option<User>> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    let user = User::from_name("postgres")?.context(
        "running as root, and initdb refuses root; there is no `postgres` system user to run \
         the embedded cluster as. Run as an unprivileged user, create a `postgres` user, or set \
         DATABASE_URL.",
    )?;
    tracing::info!("running as root: the embedded cluster runs as the `postgres` system user");
    for dir in root.ancestors().skip(1) {
        let meta = fs::metadata(dir)?;
        let reachable = meta.permissions().mode() & 0o001 != 0;
        if !reachable && std::os::unix::fs::MetadataExt::uid(&meta) != user.uid.as_raw() {
            bail!(
                "the `postgres` user cannot reach {} (no execute permission for others on {}); \
                 set SYNCLINE_DATA_DIR to a folder it can reach, or set DATABASE_URL",
                root.display(),
                dir.display()
            );
        }
    }
    chown(root, Some(user.uid), Some(user.gid))?;
    Ok(Some(user))
}

fn as_owner(command: &mut Command, owner: Option<&User>) {
    if let Some(user) = owner {
        command.uid(user.uid.as_raw()).gid(user.gid.as_raw());
    }
}

fn init_cluster(bin: &Path, data: &Path, owner: Option<&User>) -> anyhow::Result<()> {
    tracing::info!(data = %data.display(), "creating embedded Postgres cluster");
    let mut initdb = Command::new(bin.join("initdb"));
    initdb
        .arg("-D")
        .arg(data)
        .args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-locale",
        ])
        .stdin(Stdio::null());
    as_owner(&mut initdb, owner);
    let out = initdb.output().context("running initdb")?;
    if !out.status.success() {
        bail!(
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Whether a live postmaster runs the cluster under `root` (as created by [`EmbeddedPostgres::start`]).
pub fn is_running(root: &Path) -> bool {
    running_port(&root.join("pgdata")).is_some()
}

/// The port of a live postmaster in `data` (from `postmaster.pid`), if any.
fn running_port(data: &Path) -> Option<u16> {
    let mut text = String::new();
    fs::File::open(data.join("postmaster.pid"))
        .ok()?
        .read_to_string(&mut text)
        .ok()?;
    let mut lines = text.lines();
    let pid: i32 = lines.next()?.trim().parse().ok()?;
    kill(Pid::from_raw(pid), None).ok()?;
    lines.nth(2)?.trim().parse().ok()
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Starts `postgres` as a child that receives SIGINT (fast shutdown) when this process
/// dies. The child is spawned from a thread that lives as long as the child, because
/// the parent-death signal fires when the spawning *thread* exits.
fn spawn_postmaster(
    bin: &Path,
    data: &Path,
    port: u16,
    log: &Path,
    owner: Option<&User>,
) -> anyhow::Result<(Pid, mpsc::Receiver<()>)> {
    let log_file = fs::File::create(log)?;
    if let Some(user) = owner {
        chown(log, Some(user.uid), Some(user.gid))?;
    }
    let mut postgres = Command::new(bin.join("postgres"));
    postgres
        .arg("-D")
        .arg(data)
        .args(["-p", &port.to_string()])
        .args(["-c", "listen_addresses=127.0.0.1"])
        .arg("-c")
        .arg(format!("unix_socket_directories={}", data.display()))
        // A development cluster: losing the last commits on a machine crash is acceptable.
        .args(["-c", "fsync=off", "-c", "max_connections=300"])
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file);
    as_owner(&mut postgres, owner);
    // SAFETY: prctl is async-signal-safe; it runs in the child after the uid change,
    // which would otherwise clear the parent-death signal.
    unsafe {
        postgres.pre_exec(|| {
            if nix::libc::prctl(nix::libc::PR_SET_PDEATHSIG, nix::libc::SIGINT) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (pid_tx, pid_rx) = mpsc::channel();
    let (exit_tx, exit_rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("embedded-postgres".into())
        .spawn(move || match postgres.spawn() {
            Ok(mut child) => {
                let _ = pid_tx.send(Ok(child.id()));
                let _ = child.wait();
                let _ = exit_tx.send(());
            }
            Err(e) => {
                let _ = pid_tx.send(Err(e));
            }
        })?;
    let pid = pid_rx.recv()?.context("starting postgres")?;
    Ok((Pid::from_raw(pid as i32), exit_rx))
}
