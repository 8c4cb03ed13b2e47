//! The supervisor's verdict on a pooled tool: how many starts failed in a
//! row, when the next may be tried, and whether the tool is down.
//!
//! A process that ends before it ever answered, soon after it started (the
//! pool's `STABLE_AFTER`), or that cannot start at all, is a failure: failures in a row back off (from
//! [`BACKOFF_FIRST`], doubling, up to [`BACKOFF_MAX`]), and after
//! [`DOWN_AFTER`] of them — or the first, when the program is missing — the
//! tool is *down* until a process answers (or, for a missing program,
//! until one starts).

use std::sync::Arc;
use std::time::{Duration, Instant};

/// The first pause after a failure.
pub const BACKOFF_FIRST: Duration = Duration::from_millis(100);
/// The longest pause between starts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Failures in a row after which the tool is down.
pub const DOWN_AFTER: u32 = 3;

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct Health {
    /// What fails, in messages: `processes`, `sessions`.
    noun: &'static str,
    failures: u32,
    retry_at: Option<Instant>,
    down: Option<Arc<str>>,
    /// Down because its program could not be run: the next process that
    /// starts brings it up (one that never answers would not, else).
    down_missing: bool,
}

impl Default for Health {
    fn default() -> Health {
        Health::new("processes")
    }
}

impl Health {
    /// A tool's health, its `noun`s (`processes`, `sessions`) failing.
    pub(crate) fn new(noun: &'static str) -> Health {
        Health {
            noun,
            failures: 0,
            retry_at: None,
            down: None,
            down_missing: false,
        }
    }

    /// Why the tool is down, if it is.
    pub(crate) fn down(&self) -> Option<&Arc<str>> {
        self.down.as_ref()
    }

    /// When the next start may be tried, while a back-off lasts.
    pub(crate) fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    /// Whether a start may be tried at `now`.
    pub(crate) fn may_start(&self, now: Instant) -> bool {
        self.retry_at.is_none_or(|at| at <= now)
    }

    /// A failure of `tool`'s (`why`; `missing`: its program cannot be run):
    /// the next start waits, and enough in a row (or one missing program)
    /// put the tool down.
    pub(crate) fn failed(&mut self, tool: &str, why: &str, missing: bool, now: Instant) {
        self.failures += 1;
        let pause = BACKOFF_FIRST
            .saturating_mul(1 << (self.failures - 1).min(16))
            .min(BACKOFF_MAX);
        self.retry_at = Some(now + pause);
        if missing && self.down.is_none() {
            tracing::warn!(tool, "down: {why}");
            self.down = Some(format!("its program cannot be run: {why}").into());
            self.down_missing = true;
        } else if self.failures >= DOWN_AFTER && self.down.is_none() {
            tracing::warn!(
                tool,
                "down after {} failures in a row: {why}",
                self.failures
            );
            self.down = Some(
                format!(
                    "its {} keep failing ({DOWN_AFTER} in a row); the last: {why}",
                    self.noun
                )
                .into(),
            );
        }
    }

    /// A process of `tool` started: a tool down for a missing program is up.
    pub(crate) fn started(&mut self, tool: &str) {
        if self.down_missing {
            tracing::info!(tool, "its program runs again: up");
            *self = Health::new(self.noun);
        }
    }

    /// A process of `tool` answered: whatever failed before, it is up.
    pub(crate) fn answered(&mut self, tool: &str) {
        if self.failures > 0 || self.down.is_some() {
            if self.down.is_some() {
                tracing::info!(tool, "up again");
            }
            *self = Health::new(self.noun);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_back_off_doubling_then_put_the_tool_down_until_an_answer() {
        let t0 = Instant::now();
        let mut h = Health::default();
        assert!(h.may_start(t0) && h.down().is_none());
        h.failed("t", "exited 1", false, t0);
        assert_eq!(h.retry_at(), Some(t0 + BACKOFF_FIRST));
        assert!(!h.may_start(t0) && h.may_start(t0 + BACKOFF_FIRST));
        h.failed("t", "exited 1", false, t0);
        assert_eq!(h.retry_at(), Some(t0 + BACKOFF_FIRST * 2));
        assert!(h.down().is_none(), "down only after {DOWN_AFTER}");
        h.failed("t", "exited 2", false, t0);
        let why = h.down().expect("down after three").to_string();
        assert!(
            why.contains("3 in a row") && why.contains("exited 2"),
            "{why}"
        );
        for _ in 0..30 {
            h.failed("t", "exited 1", false, t0);
        }
        assert_eq!(h.retry_at(), Some(t0 + BACKOFF_MAX));
        // A start alone does not bring it up; an answer does.
        h.started("t");
        assert!(h.down().is_some());
        h.answered("t");
        assert!(h.down().is_none() && h.may_start(t0));
    }

    #[test]
    fn a_missing_program_is_down_at_once_and_up_at_its_first_start() {
        let t0 = Instant::now();
        let mut h = Health::default();
        h.failed("t", "no such file", true, t0);
        let why = h.down().expect("down at once").to_string();
        assert!(
            why.contains("cannot be run") && why.contains("no such file"),
            "{why}"
        );
        h.started("t");
        assert!(h.down().is_none() && h.may_start(t0));
    }
}
