//! The first failure of a sink attempt. Each task of the attempt that can fail (a writer, the
//! committer, the intake) records its reason here and fires the token the others watch.
//!
//! Contract: [`Tripwire::trip`] keeps the first reason only and fires at once;
//! [`Tripwire::tripped`] completes once any task tripped; [`Tripwire::take_reason`] hands the
//! recorded reason to the attempt, which restarts with it.

use std::sync::{Arc, Mutex};

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// Shared by the tasks of one attempt (clones share the state).
#[derive(Clone, Default)]
pub(crate) struct Tripwire {
    fired: CancellationToken,
    reason: Arc<Mutex<Option<String>>>,
}

impl Tripwire {
    /// Records `reason` unless a failure was recorded before, and fires.
    pub(crate) fn trip(&self, reason: String) {
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(reason);
        self.fired.cancel();
    }

    /// Completes once a task tripped.
    pub(crate) fn tripped(&self) -> WaitForCancellationFuture<'_> {
        self.fired.cancelled()
    }

    /// Whether a task tripped.
    pub(crate) fn is_tripped(&self) -> bool {
        self.fired.is_cancelled()
    }

    /// The first reason recorded, if any.
    pub(crate) fn take_reason(&self) -> Option<String> {
        self.reason.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_reason_wins_and_every_clone_sees_the_trip() {
        let trip = Tripwire::default();
        let other = trip.clone();
        assert!(!other.is_tripped());
        trip.trip("writer failed".into());
        other.trip("committer failed".into());
        other.tripped().await;
        assert!(trip.is_tripped());
        assert_eq!(other.take_reason().as_deref(), Some("writer failed"));
        assert_eq!(trip.take_reason(), None);
    }
}
