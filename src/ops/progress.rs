//! Progress of the sink for readiness: records it holds unfinished, and when it last finished one.
//!
//! Contract (a leaf: the caller passes the clock): the sink's committer calls
//! [`SinkProgress::note`] at every tick with the number of
//! records its consumer holds unfinished (fetched, not yet written, a conflict or a dead letter
//! acknowledged by Kafka) and the number finished so far. [`SinkProgress::stalled_for`] is how
//! long records have been held with none finished: `None` while nothing is held or records keep
//! finishing. `/readyz` compares it with `ops.stall_after` (issue 19, item 5: a deleted topic left
//! the sink holding records for minutes while `/readyz` said 200).

use std::sync::atomic::{AtomicU64, Ordering};

/// When the sink last made progress (see the module docs).
#[derive(Debug, Default)]
pub struct SinkProgress {
    in_flight: AtomicU64,
    finished: AtomicU64,
    /// Unix ms of the last tick at which nothing was held or a record had finished; 0: none yet.
    progress_ms: AtomicU64,
}

impl SinkProgress {
    /// One committer tick at `now_ms`: `in_flight` records held, `finished` finished in total.
    pub fn note(&self, in_flight: u64, finished: u64, now_ms: u64) {
        let before = self.finished.swap(finished, Ordering::Relaxed);
        self.in_flight.store(in_flight, Ordering::Relaxed);
        if in_flight == 0 || finished != before || self.progress_ms.load(Ordering::Relaxed) == 0 {
            self.progress_ms.store(now_ms, Ordering::Relaxed);
        }
    }

    /// How long (ms, at `now_ms`) records have been held with none finished; `None` when nothing
    /// is held.
    pub fn stalled_for(&self, now_ms: u64) -> Option<u64> {
        let since = self.progress_ms.load(Ordering::Relaxed);
        (self.in_flight.load(Ordering::Relaxed) > 0 && since != 0)
            .then(|| now_ms.saturating_sub(since))
    }

    /// Records held unfinished at the last tick.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_records_with_none_finishing_is_a_stall() {
        let p = SinkProgress::default();
        assert_eq!(p.stalled_for(1_000), None, "nothing noted");
        p.note(0, 0, 1_000);
        assert_eq!(p.stalled_for(5_000), None, "nothing held");
        p.note(10, 0, 2_000);
        assert_eq!(
            p.stalled_for(5_000),
            Some(4_000),
            "held since the idle tick at 1 s"
        );
        p.note(10, 3, 6_000);
        assert_eq!(
            p.stalled_for(7_000),
            Some(1_000),
            "a record finished at 6 s"
        );
        p.note(10, 3, 60_000);
        assert_eq!(
            p.stalled_for(61_000),
            Some(55_000),
            "held, none finished since 6 s"
        );
        p.note(0, 3, 62_000);
        assert_eq!(p.stalled_for(100_000), None, "all finished");
    }
}
