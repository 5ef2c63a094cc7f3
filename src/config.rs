//! Settings from the environment, validated once at start-up into one struct.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

#[derive(Debug, Clone)]
pub struct Config {
    /// Postgres to use; `None` starts the embedded cluster under `data_dir`.
    pub database_url: Option<String>,
    pub listen: SocketAddr,
    /// Bearer token for `/admin/...`; `dev` generates one when unset.
    pub admin_token: Option<String>,
    pub data_dir: PathBuf,
    pub worker_concurrency: usize,
    pub worker_batch_size: usize,
    /// Worker heartbeat; a worker silent for `missed_heartbeats` of them is dead and its
    /// running jobs are taken back.
    pub worker_heartbeat: Duration,
    pub missed_heartbeats: u32,
    /// A job whose worker died this many times while running it is discarded.
    pub max_recoveries: u32,
    /// The longest delay anything from outside may ask for (Retry-After, scaled retry
    /// tables, pacing pushed back after a 429).
    pub max_delay: Duration,
    /// Fallback poll for jobs whose run time comes due (new jobs arrive by NOTIFY).
    pub worker_poll: Duration,
    pub shutdown_grace: Duration,
    /// Finished jobs are pruned after this many days (failed ones are kept).
    pub retention_days: u32,
    /// Whether `work`/`dev` processes enqueue periodic jobs.
    pub scheduler: bool,
    /// Multiplies every retry delay (staging and tests shorten long schedules with it).
    pub retry_delay_scale: f64,
    /// Requests per second to ALLIO per egress IP, summed over all processes.
    pub allio_rate: f64,
    /// Name of the egress IP this process reaches ALLIO from.
    pub allio_egress: String,
    /// Time of day (UTC) of the daily ALLIO delete sweep, as time after midnight.
    pub allio_sweep_at: Duration,
    pub max_body_bytes: usize,
    pub log_json: bool,
    /// Where the worker role (`work`, `dev`) serves `GET /metrics`; `None` = not served
    /// apart from the API's own `/metrics`.
    pub metrics_addr: Option<SocketAddr>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{variable}: {problem}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub problem: String,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Builds the config from any variable source (the environment, or a map in tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let var = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        Ok(Self {
            database_url: var("DATABASE_URL"),
            listen: parsed(&var, "SYNCLINE_LISTEN", "127.0.0.1:8080".parse().ok())?,
            admin_token: match var("SYNCLINE_ADMIN_TOKEN") {
                Some(t) if t.len() < 16 => {
                    return Err(ConfigError {
                        variable: "SYNCLINE_ADMIN_TOKEN",
                        problem: "must be at least 16 characters".into(),
                    });
                }
                other => other,
            },
            data_dir: var("SYNCLINE_DATA_DIR").map_or_else(|| ".syncline".into(), PathBuf::from),
            worker_concurrency: positive(&var, "SYNCLINE_WORKER_CONCURRENCY", 32)?,
            worker_batch_size: positive(&var, "SYNCLINE_WORKER_BATCH_SIZE", 32)?,
            worker_heartbeat: Duration::from_millis(positive(
                &var,
                "SYNCLINE_WORKER_HEARTBEAT_MS",
                2000,
            )? as u64),
            missed_heartbeats: positive(&var, "SYNCLINE_WORKER_MISSED_HEARTBEATS", 4)? as u32,
            max_recoveries: positive(&var, "SYNCLINE_MAX_CRASH_RECOVERIES", 3)? as u32,
            max_delay: Duration::from_secs(
                positive(&var, "SYNCLINE_MAX_DELAY_SECS", 86_400)? as u64
            ),
            worker_poll: Duration::from_millis(
                positive(&var, "SYNCLINE_WORKER_POLL_MS", 500)? as u64
            ),
            shutdown_grace: Duration::from_secs(parsed(
                &var,
                "SYNCLINE_SHUTDOWN_GRACE_SECS",
                Some(30u64),
            )?),
            retention_days: positive(&var, "SYNCLINE_RETENTION_DAYS", 7)? as u32,
            scheduler: match var("SYNCLINE_SCHEDULER").as_deref() {
                None | Some("on") => true,
                Some("off") => false,
                Some(other) => {
                    return Err(ConfigError {
                        variable: "SYNCLINE_SCHEDULER",
                        problem: format!("expected `on` or `off`, got `{other}`"),
                    });
                }
            },
            max_body_bytes: positive(&var, "SYNCLINE_MAX_BODY_BYTES", 1024 * 1024)?,
            allio_rate: match parsed(&var, "SYNCLINE_ALLIO_RATE", Some(2.0f64))? {
                r if r > 0.0 && r <= 1000.0 => r,
                _ => {
                    return Err(ConfigError {
                        variable: "SYNCLINE_ALLIO_RATE",
                        problem: "must be above 0 and at most 1000".into(),
                    });
                }
            },
            retry_delay_scale: match parsed(&var, "SYNCLINE_RETRY_DELAY_SCALE", Some(1.0f64))? {
                f if f > 0.0 && f <= 1.0 => f,
                _ => {
                    return Err(ConfigError {
                        variable: "SYNCLINE_RETRY_DELAY_SCALE",
                        problem: "must be above 0 and at most 1".into(),
                    });
                }
            },
            allio_egress: var("SYNCLINE_ALLIO_EGRESS").unwrap_or_else(|| "default".into()),
            allio_sweep_at: time_of_day(
                var("SYNCLINE_ALLIO_SWEEP_AT").as_deref().unwrap_or("03:00"),
            )
            .ok_or(ConfigError {
                variable: "SYNCLINE_ALLIO_SWEEP_AT",
                problem: "expected HH:MM (UTC)".into(),
            })?,
            metrics_addr: match var("SYNCLINE_METRICS_ADDR") {
                None => None,
                Some(_) => Some(parsed(&var, "SYNCLINE_METRICS_ADDR", None)?),
            },
            log_json: match var("SYNCLINE_LOG_FORMAT").as_deref() {
                None | Some("text") => false,
                Some("json") => true,
                Some(other) => {
                    return Err(ConfigError {
                        variable: "SYNCLINE_LOG_FORMAT",
                        problem: format!("expected `text` or `json`, got `{other}`"),
                    });
                }
            },
        })
    }
}

/// `HH:MM` as time after midnight.
fn time_of_day(text: &str) -> Option<Duration> {
    let (h, m) = text.trim().split_once(':')?;
    let (h, m): (u64, u64) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then(|| Duration::from_secs(h * 3600 + m * 60))
}

fn parsed<T: std::str::FromStr>(
    var: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: Option<T>,
) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match var(name) {
        Some(raw) => raw.trim().parse().map_err(|e| ConfigError {
            variable: name,
            problem: format!("cannot parse `{raw}`: {e}"),
        }),
        None => default.ok_or(ConfigError {
            variable: name,
            problem: "is required".into(),
        }),
    }
}

fn positive(
    var: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: usize,
) -> Result<usize, ConfigError> {
    match parsed(var, name, Some(default))? {
        0 => Err(ConfigError {
            variable: name,
            problem: "must be greater than 0".into(),
        }),
        n => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let c = config(&[]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.database_url, None);
        assert_eq!(c.worker_concurrency, 32);
        assert_eq!(
            c.worker_heartbeat * c.missed_heartbeats,
            Duration::from_secs(8)
        );
        assert_eq!(c.max_recoveries, 3);
        assert_eq!(c.max_delay, Duration::from_secs(86_400));
        assert_eq!(c.allio_sweep_at, Duration::from_secs(3 * 3600));
        assert_eq!(c.metrics_addr, None);
    }

    #[test]
    fn bad_value_names_the_variable() {
        let err = config(&[("SYNCLINE_LISTEN", "nowhere")]).unwrap_err();
        assert_eq!(err.variable, "SYNCLINE_LISTEN");
        let err = config(&[("SYNCLINE_WORKER_CONCURRENCY", "0")]).unwrap_err();
        assert_eq!(err.variable, "SYNCLINE_WORKER_CONCURRENCY");
        let err = config(&[("SYNCLINE_ADMIN_TOKEN", "short")]).unwrap_err();
        assert_eq!(err.variable, "SYNCLINE_ADMIN_TOKEN");
        let err = config(&[("SYNCLINE_LOG_FORMAT", "xml")]).unwrap_err();
        assert_eq!(err.variable, "SYNCLINE_LOG_FORMAT");
        let err = config(&[("SYNCLINE_ALLIO_SWEEP_AT", "25:00")]).unwrap_err();
        assert_eq!(err.variable, "SYNCLINE_ALLIO_SWEEP_AT");
        let err = config(&[("SYNCLINE_ALLIO_RATE", "0")]).unwrap_err();
        assert_eq!(err.variable, "SYNCLINE_ALLIO_RATE");
        let err = config(&[("SYNCLINE_METRICS_ADDR", "9100")]).unwrap_err();
        assert_eq!(err.variable, "SYNCLINE_METRICS_ADDR");
        let c = config(&[("SYNCLINE_METRICS_ADDR", "0.0.0.0:9100")]).unwrap();
        assert_eq!(c.metrics_addr, "0.0.0.0:9100".parse().ok());
    }
}
