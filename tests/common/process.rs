//! `syncline` child processes for tests: started on a test database with fast settings,
//! their output collected line by line, killed if the test ends first.

use std::{
    io::{BufRead, BufReader, Read},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

use super::TestDb;

pub struct WorkProcess {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl WorkProcess {
    pub fn start(db: &TestDb) -> Self {
        Self::start_with(db, &[])
    }

    /// Starts `syncline work` with `env` on top of the tests' settings.
    pub fn start_with(db: &TestDb, env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_syncline"))
            .arg("work")
            .env("DATABASE_URL", &db.url)
            .env("SYNCLINE_WORKER_HEARTBEAT_MS", "1000")
            .env("SYNCLINE_WORKER_POLL_MS", "100")
            .env("SYNCLINE_SHUTDOWN_GRACE_SECS", "10")
            .env("SYNCLINE_SCHEDULER", "off")
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("syncline binary starts");
        let lines = Arc::new(Mutex::new(Vec::new()));
        collect_lines(child.stdout.take().expect("stdout piped"), &lines);
        collect_lines(child.stderr.take().expect("stderr piped"), &lines);
        Self { child, lines }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn output(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// The first output line for which `pick` returns something, waiting up to `limit`.
    pub fn wait_for_line<T>(&self, limit: Duration, pick: impl Fn(&str) -> Option<T>) -> T {
        let start = Instant::now();
        loop {
            if let Some(found) = self.lines.lock().unwrap().iter().find_map(|l| pick(l)) {
                return found;
            }
            assert!(
                start.elapsed() < limit,
                "no such output line in {limit:?}; output:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).expect("signal delivered");
    }

    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < limit,
                "worker process did not exit in {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn collect_lines(stream: impl Read + Send + 'static, into: &Arc<Mutex<Vec<String>>>) {
    let into = into.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            into.lock().unwrap().push(line);
        }
    });
}

impl Drop for WorkProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` every 50 ms until it holds, or panics after `limit`.
pub async fn wait_until<F: std::future::Future<Output = bool>>(
    limit: Duration,
    mut check: impl FnMut() -> F,
) {
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < limit,
            "condition not reached in {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
