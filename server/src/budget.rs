//! Log lines under a budget: what a caller can repeat at will (a refused
//! token, a call over its client's rate, a bad input) is written at most so
//! many times a second, and the next line written says how many were not.
//! The numbers of every one of them are in `/metrics`.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};

/// At most `per_second` lines a second (governor's direct GCRA limiter,
/// no burst beyond that).
#[derive(Debug)]
pub struct LogBudget {
    limiter: governor::DefaultDirectRateLimiter,
    skipped: AtomicU64,
}

impl LogBudget {
    /// A budget of `per_second` lines (at least one).
    pub fn new(per_second: u32) -> LogBudget {
        let n = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
        LogBudget {
            limiter: governor::RateLimiter::direct(governor::Quota::per_second(n)),
            skipped: AtomicU64::new(0),
        }
    }

    /// Whether a line may be written now: `Some(n)`, where `n` lines were
    /// left out since the last one written (`None`: leave this one out).
    pub fn take(&self) -> Option<u64> {
        if self.limiter.check().is_ok() {
            Some(self.skipped.swap(0, Ordering::Relaxed))
        } else {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_past_the_budget_are_counted_and_named_by_the_next() {
        let b = LogBudget::new(3);
        let taken: Vec<Option<u64>> = (0..10).map(|_| b.take()).collect();
        assert_eq!(taken.iter().filter(|t| t.is_some()).count(), 3, "{taken:?}");
        assert_eq!(taken[0], Some(0));
        std::thread::sleep(std::time::Duration::from_millis(400));
        // One cell refilled (a third of a second): the 7 left out named.
        assert_eq!(b.take(), Some(7));
    }
}
