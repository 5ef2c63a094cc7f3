//! The one error type every job returns: retryable (try again later) or permanent (stop now).

use std::time::Duration;

/// Longest message kept for an error; partners and operators see at most this many characters.
pub const MAX_MESSAGE_CHARS: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// Worth another attempt; `retry_after` is a peer's explicit request (e.g. `Retry-After`).
    Retryable { retry_after: Option<Duration> },
    /// Another attempt cannot succeed (bad payload, 4xx, revoked credentials...).
    Permanent,
    /// Not a failure: run the job again after `after` without using an attempt (e.g. a
    /// resource it needs is busy).
    Snooze { after: Duration },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct JobError {
    pub kind: ErrorKind,
    pub message: String,
}

impl JobError {
    pub fn retryable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Retryable { retry_after: None }, message)
    }

    pub fn retry_after(message: impl Into<String>, after: Option<Duration>) -> Self {
        Self::new(ErrorKind::Retryable { retry_after: after }, message)
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Permanent, message)
    }

    /// Run again after `after`; the attempt is given back.
    pub fn snooze(after: Duration) -> Self {
        Self::new(ErrorKind::Snooze { after }, "snoozed")
    }

    fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: truncate_chars(message.into(), MAX_MESSAGE_CHARS),
        }
    }

    pub fn is_permanent(&self) -> bool {
        self.kind == ErrorKind::Permanent
    }
}

/// A database error inside a job is treated as transient: the database may be restarting.
impl From<sqlx::Error> for JobError {
    fn from(e: sqlx::Error) -> Self {
        JobError::retryable(format!("database: {e}"))
    }
}

/// Cuts `text` to at most `max` characters, never inside a UTF-8 sequence.
pub fn truncate_chars(mut text: String, max: usize) -> String {
    if let Some((cut, _)) = text.char_indices().nth(max) {
        text.truncate(cut);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_is_capped_at_256_characters_on_a_char_boundary() {
        let long = "ж".repeat(300);
        let err = JobError::permanent(long);
        assert_eq!(err.message.chars().count(), MAX_MESSAGE_CHARS);
        assert!(err.message.chars().all(|c| c == 'ж'));
    }

    #[test]
    fn short_message_is_kept_whole() {
        assert_eq!(JobError::retryable("boom").message, "boom");
    }
}
