//! The fault knobs of a simulated org, shared by the Rust API ([`SimOrg`]) and `POST /sim/faults`
//! (see `http`): REST latency and refusals, row locks, validation rules and the API allocation;
//! raw and gap/overflow events; the Subscribe stream knobs (resets, refusals, silence, token
//! revocation, simulated round trip) with the counts of what they did; and the token endpoint's
//! faults (`login_faults.rs`: a maintenance page, Salesforce's `unknown_error`, an HTML 200) with
//! the count of logins served.

use std::time::Duration;

use serde_json::Value;

use super::bus::Channel;
use super::error::SimError;
use super::gap::{self, GAP_OVERFLOW, GapKind, OVERFLOW_RECORD_ID};
use super::grpc::stream_faults::StreamFaultCounts;
use super::handle::SimOrg;
use super::login_faults::LoginFault;
use super::org::{BuiltEvent, ValidationRule};
use super::rest::limits::RestFault;
use super::shared::Shared;
use super::util::{API_VERSION, lock, rest_origin};
use crate::salesforce::proto::ProducerEvent;

/// Fault knobs of REST calls, record writes and events (also set through `POST /sim/faults`).
impl SimOrg {
    /// Fault injection: appends an event with any schema id and payload to a Platform Event
    /// channel (`/event/Foo__e`) or an object's change event channel
    /// (`/data/AccountChangeEvent`, so also to `/data/ChangeEvents`), as a corrupt or foreign
    /// event would arrive; returns its replay id.
    pub fn inject_raw_event(
        &self,
        topic: &str,
        schema_id: &str,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, SimError> {
        let event = ProducerEvent {
            id: uuid::Uuid::new_v4().to_string(),
            schema_id: schema_id.to_owned(),
            payload: payload.into(),
            headers: Vec::new(),
        };
        let seq = match self
            .shared
            .resolve_channel(topic)
            .as_ref()
            .map(Channel::live)
            .cloned()
        {
            Some(Channel::Entity(entity)) => self
                .shared
                .append_entity_events(vec![BuiltEvent { entity, event }]),
            Some(Channel::PlatformEvent(name)) => self.shared.append_platform_event(&name, event),
            _ => return Err(SimError::UnknownTopic(topic.to_owned())),
        };
        Ok(lock(&self.shared.bus).id_of(seq))
    }

    /// Sets the REST calls used so far today (e.g. 0 to restore an exhausted allocation).
    pub fn set_api_usage(&self, used: u64) {
        lock(&self.shared.api).used = used;
    }

    /// Sets the daily API request allocation.
    pub fn set_api_limit(&self, max: u64) {
        lock(&self.shared.api).max = max;
    }

    /// Fault injection: every REST response (under `/services/data`) is delayed this long
    /// (`Duration::ZERO` turns it off).
    pub fn set_rest_latency(&self, latency: Duration) {
        lock(&self.shared.api).latency = latency;
    }

    /// Fault injection: the token endpoint answers every login with this `instance_url` (and
    /// identity URL host) instead of its own, as a hijacked or misconfigured login host would;
    /// `None` restores it.
    pub fn answer_logins_with_instance_url(&self, url: Option<String>) {
        lock(&self.shared.api).token_instance_url = url;
    }

    /// Fault injection: the next `n` Bulk API 2.0 query jobs created fail when they would
    /// complete (`Failed`, `retries` 15, `errorMessage` "Retried more than 15 times").
    pub fn fail_next_bulk_jobs(&self, n: usize) {
        lock(&self.shared.bulk).fail_next = n;
    }

    /// How long a new Bulk API 2.0 query job stays `InProgress` before it completes (default
    /// 0: it completes the first time it is looked at).
    pub fn set_bulk_job_duration(&self, d: Duration) {
        lock(&self.shared.bulk).in_progress = d;
    }

    /// The Bulk API 2.0 allocations per rolling 24 hours: query jobs (Salesforce: 10,000) and
    /// results in bytes (Salesforce: 1 TB, `DailyBulkV2QueryFileStorageMB`); lower them to test
    /// what a client does when they run out.
    pub fn set_bulk_query_limits(&self, jobs: u64, results_bytes: u64) {
        let mut bulk = lock(&self.shared.bulk);
        bulk.job_limit = jobs;
        bulk.results_limit = results_bytes;
    }

    /// An administrator empties the recycle bin of `object`: every deleted record is purged
    /// for good, and the `deleted` replication resource's `earliestDateAvailable` moves to the
    /// newest of them. Returns how many were purged.
    pub fn purge_recycle_bin(&self, object: &str) -> usize {
        lock(&self.shared.org).purge_recycle_bin(object, i64::MAX)
    }

    /// Fault injection: the next `n` authenticated REST calls are refused with `fault` (after any
    /// faults queued before), and not counted.
    pub fn fail_next_requests(&self, n: usize, fault: RestFault) {
        lock(&self.shared.api).queue_faults(n, fault);
    }

    /// Fault injection: the next `n` `/composite` calls are refused with `fault` (after any
    /// composite faults queued before), and not counted; other calls are not affected.
    pub fn fail_next_composite_calls(&self, n: usize, fault: RestFault) {
        lock(&self.shared.api).queue_composite_faults(n, fault);
    }

    /// Fault injection: REST request bodies longer than `max` bytes are refused with 413 and an
    /// HTML page, as a front end or proxy does (`None` turns it off).
    pub fn set_max_request_bytes(&self, max: Option<usize>) {
        lock(&self.shared.api).max_request_bytes = max;
    }

    /// Fault injection: the next `n` record writes made over REST fail, each on its own record,
    /// with `UNABLE_TO_LOCK_ROW` and are not applied. Rust-API writes are not affected.
    pub fn lock_rows(&self, n: usize) {
        lock(&self.shared.org).set_lock_faults(n);
    }

    /// Adds a validation rule: a create or update (REST or Rust API) leaving `field`
    /// (`Parent.Child` for a compound's part) equal to `value` (null: blank) fails with
    /// `FIELD_CUSTOM_VALIDATION_EXCEPTION`, `message` and fields `[field]`.
    pub fn add_validation_rule(
        &self,
        object: &str,
        field: &str,
        value: Value,
        message: &str,
    ) -> Result<(), SimError> {
        lock(&self.shared.org).add_validation_rule(
            object,
            ValidationRule {
                field: field.to_owned(),
                value,
                message: message.to_owned(),
            },
        )
    }

    /// Publishes a header-only gap event (`GAP_CREATE`, …) of `object` naming `ids` (at least
    /// one), as Salesforce does when it cannot build a change event; returns its replay id. The
    /// records are not touched. See [`gap`].
    pub fn emit_gap(
        &self,
        object: &str,
        ids: &[String],
        kind: GapKind,
    ) -> Result<Vec<u8>, SimError> {
        if ids.is_empty() {
            return Err(SimError::InvalidValue {
                object: object.to_owned(),
                field: "recordIds".into(),
                reason: "a gap event names at least one record".into(),
            });
        }
        self.emit_header_only(object, ids.to_vec(), kind.symbol())
    }

    /// Publishes a `GAP_OVERFLOW` event of `object` (`recordIds = ["000000000000000AAA"]`), as
    /// after a transaction over [`super::SimConfig::overflow_threshold`]; returns its replay id.
    pub fn emit_overflow(&self, object: &str) -> Result<Vec<u8>, SimError> {
        self.emit_header_only(
            object,
            vec![gap::OVERFLOW_RECORD_ID.to_owned()],
            gap::GAP_OVERFLOW,
        )
    }

    fn emit_header_only(
        &self,
        object: &str,
        ids: Vec<String>,
        symbol: &str,
    ) -> Result<Vec<u8>, SimError> {
        self.shared
            .emit_header_only(object, ids, symbol, self.origin())
    }

    /// Fault injection: from now on, changes to these records are published as gap events
    /// (`GAP_UPDATE`, …) instead of change events, as when an event would exceed 1 MB. Replaces
    /// the previous set; an empty slice turns it off.
    pub fn emit_gaps_for(&self, ids: &[String]) {
        *lock(&self.shared.gap_records) = ids.iter().cloned().collect();
    }

    /// Fault injection: ends every open Subscribe stream with `UNAVAILABLE`
    /// (`service.unavailable`), as an outage or a reset HTTP/2 stream does.
    pub fn reset_streams(&self) {
        self.shared.reset_streams();
    }

    /// Fault injection: revokes every issued access token (as a session timeout or a revoked
    /// connected app does); later calls with them are refused until the client logs in again.
    pub fn revoke_tokens(&self) {
        self.shared.revoke_tokens();
    }
}

/// The stream knobs, shared by [`SimOrg`]'s Rust API and `POST /sim/faults`.
impl Shared {
    pub(super) fn reset_streams(&self) {
        self.resets.send_modify(|n| *n += 1);
    }

    pub(super) fn revoke_tokens(&self) {
        lock(&self.tokens).clear();
    }

    pub(super) fn reset_stream_every(&self, n: u64) {
        self.stream_faults
            .reset_every
            .store(n, std::sync::atomic::Ordering::Relaxed);
    }

    pub(super) fn refuse_subscriptions_for(&self, duration: Duration) {
        *lock(&self.stream_faults.refuse_until) = Some(tokio::time::Instant::now() + duration);
    }

    pub(super) fn silence_streams(&self) {
        self.stream_faults.silences.send_modify(|n| *n += 1);
    }
}

/// Stream fault knobs and what the org emitted (for fault and crash tests).
impl SimOrg {
    /// Fault injection: every Subscribe stream ends with `INTERNAL` (`service.unavailable`, as
    /// Salesforce outages show) once it has sent `n` events; 0 turns it off.
    pub fn reset_stream_every(&self, n: u64) {
        self.shared.reset_stream_every(n);
    }

    /// Simulated network round trip between client and org on Subscribe streams: the credits of
    /// each FetchRequest after a stream's first take effect `rtt` after it arrives, as on a real
    /// network where the client's request and the org's next events each cross it once. Events
    /// the client already requested are sent at once (no one-way delay). Zero turns it off.
    pub fn set_stream_rtt(&self, rtt: Duration) {
        self.shared
            .stream_faults
            .rtt_micros
            .store(rtt.as_micros() as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// Fault injection: every `Subscribe` call in the next `duration` is refused with
    /// `UNAVAILABLE` (`service.unavailable`); open streams are not affected.
    pub fn refuse_subscriptions_for(&self, duration: Duration) {
        self.shared.refuse_subscriptions_for(duration);
    }

    /// Fault injection: every open Subscribe stream goes silent — no more events, no keepalives,
    /// requests ignored — without closing, as a dead stream behind a proxy does. New streams
    /// are served normally.
    pub fn silence_streams(&self) {
        self.shared.silence_streams();
    }

    /// How often each stream fault (and token expiry) ended or refused a stream.
    pub fn stream_fault_counts(&self) -> StreamFaultCounts {
        self.shared.stream_faults.counts()
    }

    /// Replay ids of the retained events of `channel`, oldest first (empty for an unknown
    /// channel).
    pub fn replay_ids(&self, channel: &str) -> Vec<Vec<u8>> {
        match self.shared.resolve_channel(channel) {
            Some(c) => lock(&self.shared.bus).replay_ids(&c),
            None => Vec::new(),
        }
    }
}

/// The `gap` knob of `POST /sim/faults`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GapRequest {
    object: String,
    ids: Vec<String>,
    kind: String,
}

/// Applies the gap knobs of `POST /sim/faults`: publish a gap event, an overflow event, and/or
/// replace the set of gap records.
pub(crate) fn apply_http(
    shared: &Shared,
    gap: Option<GapRequest>,
    overflow: Option<String>,
    gap_records: Option<Vec<String>>,
) -> Result<(), SimError> {
    let origin = || rest_origin(API_VERSION, None);
    if let Some(gap) = gap {
        let kind = GapKind::parse(&gap.kind).ok_or_else(|| SimError::InvalidValue {
            object: gap.object.clone(),
            field: "kind".into(),
            reason: format!("`{}` is not create, update, delete or undelete", gap.kind),
        })?;
        if gap.ids.is_empty() {
            return Err(SimError::InvalidValue {
                object: gap.object,
                field: "ids".into(),
                reason: "a gap event names at least one record".into(),
            });
        }
        shared.emit_header_only(&gap.object, gap.ids, kind.symbol(), origin())?;
    }
    if let Some(object) = overflow {
        shared.emit_header_only(
            &object,
            vec![OVERFLOW_RECORD_ID.to_owned()],
            GAP_OVERFLOW,
            origin(),
        )?;
    }
    if let Some(ids) = gap_records {
        *lock(&shared.gap_records) = ids.into_iter().collect();
    }
    Ok(())
}

/// Token endpoint fault knobs.
impl SimOrg {
    /// Fault injection: the next `n` requests to `/services/oauth2/token` are answered with
    /// `fault` (after any queued before), whatever their credentials.
    pub fn fail_next_logins(&self, n: usize, fault: LoginFault) {
        self.shared.logins.queue(n, fault);
    }

    /// Ends a token endpoint outage: the faults still queued are dropped.
    pub fn clear_login_faults(&self) {
        self.shared.logins.clear();
    }

    /// Logins the token endpoint answered with a token so far.
    pub fn logins(&self) -> u64 {
        self.shared.logins.served_count()
    }
}
