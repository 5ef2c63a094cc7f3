//! Process-wide counters for `/metrics` (Prometheus text format): attempt outcomes and
//! durations per queue, outbound calls per calling queue and outcome, pacing waits, and
//! HTTP requests per route and status. Cheap enough for every request and job.

use std::{
    collections::BTreeMap,
    fmt::Write,
    sync::{Mutex, OnceLock},
    time::Duration,
};

/// Upper bounds (seconds) of the duration histogram buckets.
const BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (bound, count) in BUCKETS.iter().zip(self.counts.iter_mut()) {
            if seconds <= *bound {
                *count += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }
}

#[derive(Default)]
struct Registry {
    attempts: BTreeMap<(String, &'static str), u64>,
    durations: BTreeMap<String, Histogram>,
    outbound: BTreeMap<(String, &'static str), u64>,
    pacing_waits: u64,
    pacing_wait_seconds: f64,
    http: BTreeMap<(String, String, u16), u64>,
}

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();
    REGISTRY
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub fn attempt(queue: &str, outcome: &'static str, took: Duration) {
    let mut r = registry();
    *r.attempts.entry((queue.to_owned(), outcome)).or_default() += 1;
    r.durations
        .entry(queue.to_owned())
        .or_default()
        .observe(took.as_secs_f64());
}

/// An outbound call made by a job of `queue`: `ok`, `retryable` or `permanent`.
pub fn outbound(queue: &str, outcome: &'static str) {
    *registry()
        .outbound
        .entry((queue.to_owned(), outcome))
        .or_default() += 1;
}

pub fn pacing_wait(waited: Duration) {
    let mut r = registry();
    r.pacing_waits += 1;
    r.pacing_wait_seconds += waited.as_secs_f64();
}

pub fn http(method: &str, route: &str, status: u16) {
    *registry()
        .http
        .entry((method.to_owned(), route.to_owned(), status))
        .or_default() += 1;
}

/// The counters in Prometheus text format.
pub fn render() -> String {
    let r = registry();
    let mut out = String::new();
    let _ = writeln!(out, "# TYPE syncline_job_attempts_total counter");
    for ((queue, outcome), n) in &r.attempts {
        let _ = writeln!(
            out,
            "syncline_job_attempts_total{{queue=\"{queue}\",outcome=\"{outcome}\"}} {n}"
        );
    }
    let _ = writeln!(out, "# TYPE syncline_job_duration_seconds histogram");
    for (queue, h) in &r.durations {
        for (bound, count) in BUCKETS.iter().zip(h.counts) {
            let _ = writeln!(
                out,
                "syncline_job_duration_seconds_bucket{{queue=\"{queue}\",le=\"{bound}\"}} {count}"
            );
        }
        let _ = writeln!(
            out,
            "syncline_job_duration_seconds_bucket{{queue=\"{queue}\",le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(
            out,
            "syncline_job_duration_seconds_sum{{queue=\"{queue}\"}} {}",
            h.sum
        );
        let _ = writeln!(
            out,
            "syncline_job_duration_seconds_count{{queue=\"{queue}\"}} {}",
            h.count
        );
    }
    let _ = writeln!(out, "# TYPE syncline_outbound_calls_total counter");
    for ((queue, outcome), n) in &r.outbound {
        let _ = writeln!(
            out,
            "syncline_outbound_calls_total{{queue=\"{queue}\",outcome=\"{outcome}\"}} {n}"
        );
    }
    let _ = writeln!(out, "# TYPE syncline_rate_limiter_waits_total counter");
    let _ = writeln!(out, "syncline_rate_limiter_waits_total {}", r.pacing_waits);
    let _ = writeln!(
        out,
        "# TYPE syncline_rate_limiter_wait_seconds_total counter"
    );
    let _ = writeln!(
        out,
        "syncline_rate_limiter_wait_seconds_total {}",
        r.pacing_wait_seconds
    );
    let _ = writeln!(out, "# TYPE syncline_http_requests_total counter");
    for ((method, route, status), n) in &r.http {
        let _ = writeln!(
            out,
            "syncline_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {n}"
        );
    }
    out
}
