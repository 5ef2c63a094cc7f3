//! The one classifier for every outbound HTTP call a job makes, mirroring Ergonode's rules:
//! connection error, timeout, 429, 502, 503 → retryable (honouring `Retry-After`);
//! other 5xx and 3xx → permanent; 4xx → permanent unless the JSON body says
//! `"retryable": true`, whose `custom_message` then becomes the error.

use std::time::Duration;

use reqwest::{
    RequestBuilder, StatusCode,
    header::{HeaderMap, RETRY_AFTER},
};
use serde::Deserialize;

use super::error::JobError;

/// Characters of a response body quoted in an error message.
const BODY_EXCERPT_CHARS: usize = 120;

/// A peer's answer, body read in full.
#[derive(Debug)]
pub struct PeerResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl PeerResponse {
    /// Applies the classifier: `Ok` only for a 2xx.
    pub fn classified(self) -> Result<Self, JobError> {
        let result = classify(self.status, &self.headers, &self.body).map(|()| self);
        count_call(&result);
        result
    }
}

/// The HTTP client jobs share: no redirects followed (a 3xx is an answer we classify),
/// bounded connect and total time.
pub fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .timeout(timeout)
        .build()
        .expect("a client with static settings always builds")
}

tokio::task_local! {
    /// The queue of the job making calls (set by the runner), for the call metrics.
    pub static CALLING_QUEUE: &'static str;
}

fn count_call<T>(result: &Result<T, JobError>) {
    let outcome = match result {
        Ok(_) => "ok",
        Err(e) if e.is_permanent() => "permanent",
        Err(_) => "retryable",
    };
    let queue = CALLING_QUEUE.try_with(|q| *q).unwrap_or("none");
    super::metrics::outbound(queue, outcome);
}

/// Sends the request and classifies the outcome.
pub async fn send(request: RequestBuilder) -> Result<PeerResponse, JobError> {
    fetch(request).await?.classified()
}

/// Sends the request; only transport failures are errors (retryable), so the caller can
/// look at a status before classifying it.
pub async fn fetch(request: RequestBuilder) -> Result<PeerResponse, JobError> {
    let result = read(request).await;
    if result.is_err() {
        count_call(&result);
    }
    result
}

async fn read(request: RequestBuilder) -> Result<PeerResponse, JobError> {
    let response = request.send().await.map_err(transport_error)?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.text().await.map_err(transport_error)?;
    Ok(PeerResponse {
        status,
        headers,
        body,
    })
}

fn transport_error(e: reqwest::Error) -> JobError {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "transport error"
    };
    JobError::retryable(format!("{what}: {e}"))
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    retryable: bool,
    custom_message: Option<String>,
}

/// Classifies a received status (and, for 4xx, its body). `Ok` only for 2xx.
pub fn classify(status: StatusCode, headers: &HeaderMap, body: &str) -> Result<(), JobError> {
    if status.is_success() {
        return Ok(());
    }
    let code = status.as_u16();
    match code {
        429 | 502 | 503 => Err(JobError::retry_after(
            format!("HTTP {code}{}", excerpt(body)),
            retry_after(headers),
        )),
        400..=499 => {
            let parsed = serde_json::from_str::<ErrorBody>(body).ok();
            let message = parsed
                .as_ref()
                .and_then(|b| b.custom_message.clone())
                .unwrap_or_else(|| format!("HTTP {code}{}", excerpt(body)));
            match parsed {
                Some(b) if b.retryable => Err(JobError::retryable(message)),
                _ => Err(JobError::permanent(message)),
            }
        }
        300..=399 => Err(JobError::permanent(format!(
            "unexpected redirect: HTTP {code}"
        ))),
        _ => Err(JobError::permanent(format!("HTTP {code}{}", excerpt(body)))),
    }
}

fn excerpt(body: &str) -> String {
    let trimmed = body.trim();
    if trimmed.is_empty() {
        return String::new();
    }
    format!(
        ": {}",
        super::error::truncate_chars(trimmed.to_owned(), BODY_EXCERPT_CHARS)
    )
}

/// `Retry-After` as delay-seconds or an HTTP date, cut to the longest delay allowed.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(super::delay::clamp(Duration::from_secs(seconds)));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = when
        .signed_duration_since(chrono::Utc::now())
        .to_std()
        .ok()?;
    Some(super::delay::clamp(wait))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::error::ErrorKind;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, v.parse().unwrap());
        }
        map
    }

    #[test]
    fn retry_after_seconds_are_read() {
        let err = classify(
            StatusCode::TOO_MANY_REQUESTS,
            &headers(&[("retry-after", "7")]),
            "",
        )
        .unwrap_err();
        assert_eq!(
            err.kind,
            ErrorKind::Retryable {
                retry_after: Some(Duration::from_secs(7))
            }
        );
    }

    #[test]
    fn retry_after_http_date_in_the_future_is_read() {
        let when = chrono::Utc::now() + chrono::Duration::seconds(120);
        let value = when.to_rfc2822();
        let err = classify(
            StatusCode::SERVICE_UNAVAILABLE,
            &headers(&[("retry-after", &value)]),
            "",
        )
        .unwrap_err();
        let ErrorKind::Retryable {
            retry_after: Some(d),
        } = err.kind
        else {
            panic!("expected a retry-after, got {err:?}");
        };
        assert!(d > Duration::from_secs(100) && d <= Duration::from_secs(120));
    }

    #[test]
    fn non_json_4xx_body_is_quoted_in_the_message() {
        let err = classify(StatusCode::NOT_FOUND, &HeaderMap::new(), "no such user").unwrap_err();
        assert_eq!(err.message, "HTTP 404: no such user");
        assert!(err.is_permanent());
    }
}
