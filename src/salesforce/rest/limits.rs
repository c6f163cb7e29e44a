//! The org's daily API allowance: [`LimitGuard`] learns it from every response's
//! `Sforce-Limit-Info` header ([`parse_limit_info`]) and from `GET /limits` ([`parse_limits`]),
//! and holds calls while it is down to the [`Reserve`] (`sink.api_reserve`; the type is the
//! config's).
//!
//! Contract: the guard only keeps state; the client ([`super::client`]) asks it before each
//! guarded call ([`LimitGuard::must_wait`]: `max - used <= reserve`), polls `/limits` while it
//! says wait (one poll per `poll_interval` across all clones, [`LimitGuard::claim_poll`]), and
//! reports what it reads. A 403 `REQUEST_LIMIT_EXCEEDED` marks the allowance exhausted until a
//! `/limits` answer lifts it. The gauges `forcebridge_sink_api_paused` and
//! `forcebridge_sink_api_remaining` follow the state.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::ops::telemetry::ApiLimitGauges;

/// How much of the daily allowance the sink leaves to other integrations (`sink.api_reserve`).
pub use crate::config::ApiReserve as Reserve;

/// Salesforce's API usage header (`api-usage=USED/MAX`).
pub(crate) const LIMIT_INFO_HEADER: &str = "Sforce-Limit-Info";

/// The org's daily API request allowance (`DailyApiRequests`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiUsage {
    pub used: u64,
    pub max: u64,
}

impl ApiUsage {
    /// Requests left in the rolling 24 hours.
    pub(crate) fn remaining(&self) -> u64 {
        self.max.saturating_sub(self.used)
    }
}

/// Holds REST calls while the org's daily API allowance is down to the reserve. Cheap to clone;
/// clones share state, so one guard serves every worker of a sink.
#[derive(Clone)]
pub struct LimitGuard(Arc<GuardInner>);

struct GuardInner {
    reserve: Reserve,
    poll_interval: Duration,
    state: Mutex<GuardState>,
    gauges: Arc<ApiLimitGauges>,
}

#[derive(Default)]
struct GuardState {
    /// As last reported by Salesforce.
    usage: Option<ApiUsage>,
    /// A 403 `REQUEST_LIMIT_EXCEEDED` was seen; only a `/limits` answer clears it (a response
    /// header may come from a call that started before the refusal).
    exhausted: bool,
    last_poll: Option<Instant>,
}

impl GuardState {
    fn remaining(&self) -> Option<u64> {
        if self.exhausted {
            Some(0)
        } else {
            self.usage.map(|u| u.remaining())
        }
    }
}

impl fmt::Debug for LimitGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LimitGuard")
            .field("reserve", &self.0.reserve)
            .field("poll_interval", &self.0.poll_interval)
            .field("usage", &self.usage())
            .field("paused", &self.paused())
            .finish()
    }
}

impl LimitGuard {
    /// A guard that keeps `reserve` calls and polls `/limits` every `poll_interval` while paused.
    /// The allowance is unknown (calls go ahead) until the first response tells it.
    pub fn new(reserve: Reserve, poll_interval: Duration) -> Self {
        Self::with_gauges(reserve, poll_interval, Arc::default())
    }

    /// As [`LimitGuard::new`], reporting to `gauges` (e.g. the sink's, for `/metrics`).
    pub(crate) fn with_gauges(
        reserve: Reserve,
        poll_interval: Duration,
        gauges: Arc<ApiLimitGauges>,
    ) -> Self {
        LimitGuard(Arc::new(GuardInner {
            reserve,
            poll_interval,
            state: Mutex::new(GuardState::default()),
            gauges,
        }))
    }

    fn state(&self) -> MutexGuard<'_, GuardState> {
        self.0.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, state: &GuardState) {
        let remaining = state.remaining().unwrap_or(u64::MAX);
        self.0.gauges.remaining.store(remaining, Ordering::Relaxed);
    }

    /// The configured reserve.
    pub(crate) fn reserve(&self) -> Reserve {
        self.0.reserve
    }

    /// The `/limits` poll interval while paused.
    pub(crate) fn poll_interval(&self) -> Duration {
        self.0.poll_interval
    }

    /// The allowance as last reported (`used == max` once exhausted); `None` until known.
    pub(crate) fn usage(&self) -> Option<ApiUsage> {
        let state = self.state();
        match (state.exhausted, state.usage) {
            (true, Some(u)) => Some(ApiUsage {
                used: u.max,
                max: u.max,
            }),
            (_, usage) => usage,
        }
    }

    /// Remaining calls as last reported (0 once exhausted); `None` until known.
    pub(crate) fn remaining(&self) -> Option<u64> {
        self.state().remaining()
    }

    /// Whether calls are being held.
    pub(crate) fn paused(&self) -> bool {
        self.0.gauges.paused.load(Ordering::Relaxed)
    }

    /// The guard's gauges (`forcebridge_sink_api_paused`, `forcebridge_sink_api_remaining`).
    #[cfg(test)]
    pub(crate) fn gauges(&self) -> &ApiLimitGauges {
        &self.0.gauges
    }

    /// Records usage reported by a response's `Sforce-Limit-Info` header. It does not lift an
    /// exhaustion (see [`LimitGuard::observe_limits`]).
    pub(crate) fn observe(&self, usage: ApiUsage) {
        let mut state = self.state();
        state.usage = Some(usage);
        self.publish(&state);
    }

    /// Records usage reported by `GET /limits`: authoritative, it also lifts an exhaustion.
    pub(crate) fn observe_limits(&self, usage: ApiUsage) {
        let mut state = self.state();
        state.usage = Some(usage);
        state.exhausted = false;
        self.publish(&state);
    }

    /// Salesforce answered 403 `REQUEST_LIMIT_EXCEEDED`: treat the allowance as spent until
    /// `/limits` says otherwise. (The same code is used when too many long-running requests are
    /// in flight; the first `/limits` poll then shows the allowance and lifts the pause.)
    pub(crate) fn mark_exhausted(&self) {
        let mut state = self.state();
        state.exhausted = true;
        self.publish(&state);
    }

    /// Whether a call now would leave no more than the reserve: `max - used <= reserve`.
    pub(crate) fn must_wait(&self) -> bool {
        let state = self.state();
        let max = state.usage.map_or(0, |u| u.max);
        state
            .remaining()
            .is_some_and(|remaining| remaining <= self.0.reserve.calls(max))
    }

    /// Claims the next `/limits` poll: true when none was made in the last `poll_interval`.
    pub(super) fn claim_poll(&self) -> bool {
        let mut state = self.state();
        let now = Instant::now();
        let due = state
            .last_poll
            .is_none_or(|last| now.duration_since(last) >= self.0.poll_interval);
        if due {
            state.last_poll = Some(now);
        }
        due
    }

    /// Sets the paused flag; true when that changed it.
    pub(super) fn set_paused(&self, paused: bool) -> bool {
        self.0.gauges.paused.swap(paused, Ordering::Relaxed) != paused
    }
}

/// Parses `Sforce-Limit-Info` (`api-usage=18/15000`, possibly with `; api-bursts=2/750` or other
/// entries, separated by `;` or `,`) into the daily usage.
pub(crate) fn parse_limit_info(value: &str) -> Option<ApiUsage> {
    value.split([';', ',']).find_map(|part| {
        let (key, counts) = part.split_once('=')?;
        if !key.trim().eq_ignore_ascii_case("api-usage") {
            return None;
        }
        let (used, max) = counts.trim().split_once('/')?;
        Some(ApiUsage {
            used: used.trim().parse().ok()?,
            max: max.trim().parse().ok()?,
        })
    })
}

/// Reads `DailyApiRequests` from a `/limits` body.
pub(super) fn parse_limits(body: &[u8]) -> Result<ApiUsage, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("/limits is not JSON: {e}"))?;
    let daily = &value["DailyApiRequests"];
    match (daily["Max"].as_u64(), daily["Remaining"].as_u64()) {
        (Some(max), Some(remaining)) => Ok(ApiUsage {
            used: max.saturating_sub(remaining),
            max,
        }),
        _ => Err("/limits has no DailyApiRequests Max/Remaining".to_owned()),
    }
}
