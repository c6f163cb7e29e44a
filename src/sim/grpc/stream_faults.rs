//! Stream fault knobs: end every stream with `INTERNAL` (`service.unavailable`, as seen in
//! Salesforce outages) after it sent N events; refuse every `Subscribe` with `UNAVAILABLE`
//! (`service.unavailable`) until a deadline; make the open streams go silent (no events, no
//! keepalives, not closed) as a dead stream behind a proxy does; delay credits by a simulated
//! round trip. And the counts of what they (and token expiry) did.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;
use tokio::time::Instant;
use tonic::{Code, Status};

use super::status::sf_status;
use crate::sim::util::lock;

/// Fault injection for Subscribe streams (set through [`SimOrg`](crate::sim::SimOrg)'s knobs).
#[derive(Debug)]
pub(crate) struct StreamFaults {
    /// End every stream with `INTERNAL` after it sent this many events (0: off).
    pub reset_every: AtomicU64,
    /// Refuse every `Subscribe` with `UNAVAILABLE` until then.
    pub refuse_until: std::sync::Mutex<Option<Instant>>,
    /// Bumped to make every open stream go silent.
    pub silences: watch::Sender<u64>,
    /// Subscribe calls refused.
    pub refused: AtomicU64,
    /// Streams ended by `reset_every`.
    pub resets: AtomicU64,
    /// Streams ended because their token expired.
    pub expired: AtomicU64,
    /// Streams that went silent.
    pub silenced: AtomicU64,
    /// Credits of FetchRequests beyond the 100 outstanding, dropped (a client that counts its
    /// credits right never sends any).
    pub over_limit: AtomicU64,
    /// FetchRequests received on Subscribe streams.
    pub requests: AtomicU64,
    /// Simulated client↔org round trip, microseconds (0: none): the credits of a FetchRequest
    /// after the first take effect this long after it arrives (the flow-control round trip of a
    /// real network). Events already requested are not delayed.
    pub rtt_micros: AtomicU64,
}

impl Default for StreamFaults {
    fn default() -> Self {
        StreamFaults {
            reset_every: AtomicU64::new(0),
            refuse_until: std::sync::Mutex::new(None),
            silences: watch::Sender::new(0),
            refused: AtomicU64::new(0),
            resets: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            silenced: AtomicU64::new(0),
            over_limit: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            rtt_micros: AtomicU64::new(0),
        }
    }
}

/// How often each stream fault fired.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamFaultCounts {
    /// `Subscribe` calls refused with `UNAVAILABLE`.
    pub refused_subscriptions: u64,
    /// Streams ended with `INTERNAL` by
    /// [`SimOrg::reset_stream_every`](crate::sim::SimOrg::reset_stream_every).
    pub streams_reset: u64,
    /// Streams ended with `UNAUTHENTICATED` because their token expired.
    pub streams_expired: u64,
    /// Streams that went silent.
    pub streams_silenced: u64,
    /// Credits requested beyond the 100 outstanding (treated as 100, the excess dropped).
    pub credits_over_limit: u64,
    /// FetchRequests received on Subscribe streams (the first of each stream included).
    pub fetch_requests: u64,
}

impl StreamFaults {
    /// `Err(UNAVAILABLE)` while Subscribe calls are refused.
    pub(super) fn check_refusal(&self, rpc_id: &str) -> Result<(), Status> {
        let until = *lock(&self.refuse_until);
        if until.is_some_and(|t| Instant::now() < t) {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(sf_status(
                Code::Unavailable,
                "service.unavailable",
                "The service is unavailable. Try again later.",
                rpc_id,
            ));
        }
        Ok(())
    }

    /// The counters.
    pub fn counts(&self) -> StreamFaultCounts {
        StreamFaultCounts {
            refused_subscriptions: self.refused.load(Ordering::Relaxed),
            streams_reset: self.resets.load(Ordering::Relaxed),
            streams_expired: self.expired.load(Ordering::Relaxed),
            streams_silenced: self.silenced.load(Ordering::Relaxed),
            credits_over_limit: self.over_limit.load(Ordering::Relaxed),
            fetch_requests: self.requests.load(Ordering::Relaxed),
        }
    }
}
