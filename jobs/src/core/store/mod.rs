//! The one owner of job rows: every statement that reads or writes `jobs`,
//! `job_attempts`, `job_workers` or `job_operator_actions` is in this module.
//!
//! - [`queue`]: enqueue, and the SQL the change-log trigger runs (built from Rust's
//!   constants for the job kind it enqueues).
//! - [`worker`]: the hot path: claim, acknowledge (state + attempt history in one
//!   statement), heartbeat, taking back jobs of dead workers, shutdown hand-back.
//! - [`operator`]: list, show, replay, cancel, snooze, run now, stats, retention.

pub mod operator;
pub mod queue;
pub mod worker;

use std::fmt;

/// The channel workers LISTEN on; a notification's payload is the name of a queue that
/// has jobs due (sent by the insert trigger and by [`worker::wake`]).
pub const WAKE_CHANNEL: &str = "syncline_jobs";

/// A job's stored state (`job_state` in Postgres). Claims take `Available`,
/// `Scheduled` and `Retryable` jobs whose `run_at` has come; `Completed`, `Cancelled`
/// and `Discarded` are terminal, left only by an operator's replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, sqlx::Type)]
#[sqlx(type_name = "job_state", rename_all = "lowercase")]
pub enum JobState {
    Available,
    Scheduled,
    Running,
    Retryable,
    Completed,
    Cancelled,
    Discarded,
}

impl JobState {
    pub const ALL: [JobState; 7] = [
        JobState::Available,
        JobState::Scheduled,
        JobState::Running,
        JobState::Retryable,
        JobState::Completed,
        JobState::Cancelled,
        JobState::Discarded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Available => "available",
            JobState::Scheduled => "scheduled",
            JobState::Running => "running",
            JobState::Retryable => "retryable",
            JobState::Completed => "completed",
            JobState::Cancelled => "cancelled",
            JobState::Discarded => "discarded",
        }
    }

    pub fn parse(name: &str) -> Option<JobState> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// No worker will run the job again unless an operator replays it.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Cancelled | JobState::Discarded
        )
    }

    /// Waiting for its run time (or due): what claims, cancel and snooze act on.
    pub fn is_waiting(self) -> bool {
        matches!(
            self,
            JobState::Available | JobState::Scheduled | JobState::Retryable
        )
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Most characters of an error kept with a job or attempt.
pub const MAX_ERROR_CHARS: usize = 1000;

/// Text from outside (a partner's error body, a panic message) made storable: Postgres
/// text cannot hold U+0000, so each becomes U+FFFD, and the length is capped.
pub fn storable_text(text: &str) -> String {
    let capped = super::error::truncate_chars(text.to_owned(), MAX_ERROR_CHARS);
    if capped.contains('\0') {
        capped.replace('\0', "\u{FFFD}")
    } else {
        capped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_bytes_never_reach_the_database_and_text_is_capped() {
        let text = storable_text("503: \0\0oops\0");
        assert!(!text.contains('\0'));
        assert_eq!(text, "503: \u{FFFD}\u{FFFD}oops\u{FFFD}");
        assert_eq!(storable_text(&"x".repeat(5000)).len(), MAX_ERROR_CHARS);
    }

    #[test]
    fn state_names_round_trip() {
        for state in JobState::ALL {
            assert_eq!(JobState::parse(state.as_str()), Some(state));
        }
        assert_eq!(JobState::parse("Pending"), None);
    }
}
