//! The Salesforce REST client of the write-back sink: Composite calls over sObject Collections and
//! queries, with retries, re-login, and a guard that keeps the org's daily API allowance above a
//! reserve.
//!
//! Contract:
//! * [`RestClient::composite`] sends one `POST /services/data/v{ver}/composite` with
//!   `allOrNone: false` and `collateSubrequests: false` (subrequests run in order; one failing
//!   does not roll back the others). It checks Salesforce's limits first ([`validate`]: ≤ 25
//!   subrequests, ≤ 5 of them collections or queries, 1–200 records per collection, 1–2,000 ids
//!   per retrieve) and answers
//!   one [`SubResponse`] per [`SubRequest`], in input order, each collection's [`SaveResult`]s in
//!   record order. A query whose result is not `done` is followed through `nextRecordsUrl` (one
//!   more API call per page).
//! * [`RestClient::query`] / [`RestClient::query_more`] read a query one page at a time (the
//!   source's gap re-reads stream large results through them), guarded and retried alike.
//! * Every request carries `Authorization: Bearer <token>` and `Sforce-Call-Options:
//!   client=<tag>`. The tag is what lands in CDC `changeOrigin` (echo detection). It is set on
//!   the top-level request only, not in the subrequests' `httpHeaders`: Salesforce's docs list
//!   Call Options for sObject Rows, Query and Bulk but not for Composite (open question, see the
//!   connector reference §3.4), and subrequests that carry headers are never collated. If a real
//!   org turns out to need it per subrequest, [`RestClient::with_subrequest_call_options`] adds it.
//! * Retries (whole call, capped exponential backoff with full jitter, until `cancel`):
//!   transport errors, 408/429/5xx, 403 `REQUEST_LIMIT_EXCEEDED` (which also marks the
//!   [`LimitGuard`] exhausted, so the call waits for the allowance), 401 (log in again, replace
//!   the [`SessionHandle`]'s session, retry). Classification is [`crate::retry::classify_http`].
//!   Any other non-2xx answer of the whole call is [`RestError::Rejected`] with Salesforce's error
//!   array. A request already sent is never abandoned on cancel (the HTTP client's timeout bounds
//!   it); cancel ends waits and backoffs with [`RestError::Cancelled`].
//! * Retrying a whole call whose response was lost (a timeout after Salesforce committed) sends
//!   its writes twice: harmless for Update, Upsert and Delete, but a Create can create the record
//!   again. Callers that cannot accept that should write through Upsert on an external id.
//! * [`LimitGuard`] learns the allowance from every response's `Sforce-Limit-Info:
//!   api-usage=USED/MAX` header and from `GET /limits` (`DailyApiRequests`). Before each guarded
//!   call: when `max - used <= reserve` the call waits (the guard is *paused*), polling `/limits`
//!   every `poll_interval` (one poll at a time across all workers sharing the guard; each poll is
//!   itself an API call that Salesforce counts) until the remaining allowance is above the
//!   reserve again. A call costs 1, so the sink never spends the reserve itself.

use std::fmt;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::Method;
use reqwest::header::{ACCEPT, HeaderValue};
use secrecy::ExposeSecret;
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::ops::telemetry::error_chain;
use crate::ops::telemetry::{ApiLimitGauges, ApiStats};
use crate::retry::{Backoff, HttpDirective, classify_http, sleep_or_cancel};
use crate::salesforce::auth::{AuthError, Authenticator, Session, SessionHandle};

/// Subrequests per Composite call.
pub const MAX_SUBREQUESTS: usize = 25;
/// sObject Collections and query subrequests per Composite call.
pub const MAX_COLLECTIONS_AND_QUERIES: usize = 5;
/// Records (or ids) per sObject Collections subrequest.
pub const MAX_COLLECTION_RECORDS: usize = 200;
/// Ids per sObject Collections retrieve with a request body (`POST
/// /composite/sobjects/{SObject}`): "The request retrieves up to 2,000 records of the same object
/// type" (<https://developer.salesforce.com/docs/platform/api-rest/guide/resources-composite-sobjects-collections-retrieve-post.html>).
/// The GET form takes about 800 ids before the URL is too long (HTTP 414), so only POST is used.
pub const MAX_RETRIEVE_IDS: usize = 2_000;
/// Salesforce's call options header (`client=<tag>`).
pub const CALL_OPTIONS_HEADER: &str = "Sforce-Call-Options";
/// Salesforce's API usage header (`api-usage=USED/MAX`).
pub const LIMIT_INFO_HEADER: &str = "Sforce-Limit-Info";
/// The code of an [`ApiError`] that forcebridge made up because Salesforce's answer for a
/// subrequest (or a failed call) could not be read as documented. The outcome of the writes it
/// covers is unknown.
pub const UNREADABLE_RESPONSE: &str = "FORCEBRIDGE_UNREADABLE_RESPONSE";

/// Durations of [`RestClient::composite`] requests as the client saw them (from sending the
/// `/composite` request to having read its answer, retries and waits on the limit guard
/// included; query pages fetched after it are not), in microseconds. Collected only after
/// [`install_call_probe`].
#[derive(Debug, Default)]
pub struct CallProbe {
    samples_us: Mutex<Vec<u64>>,
}

impl CallProbe {
    fn observe(&self, took: Duration) {
        if let Ok(mut samples) = self.samples_us.lock() {
            samples.push(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
        }
    }

    /// Takes the samples collected so far (microseconds).
    pub fn take(&self) -> Vec<u64> {
        self.samples_us
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default()
    }
}

/// Set once per process by [`install_call_probe`] (`forcebridge bench`); unset otherwise, when
/// recording costs one atomic load per call.
static CALL_PROBE: std::sync::OnceLock<Arc<CallProbe>> = std::sync::OnceLock::new();

/// Turns on the [`CallProbe`] for every [`RestClient`] of this process; returns it. Meant for
/// `forcebridge bench` only.
pub fn install_call_probe() -> Arc<CallProbe> {
    CALL_PROBE.get_or_init(Default::default).clone()
}

const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(200);
const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// One subrequest of a Composite call.
#[derive(Debug, Clone, PartialEq)]
pub enum SubRequest {
    /// `GET …/query?q=<soql>`.
    Query { soql: String },
    /// `POST …/composite/sobjects/{object}` with `{"ids": [...], "fields": [...]}`: sObject
    /// Collections retrieve, up to [`MAX_RETRIEVE_IDS`] ids of one object, answered in id order
    /// with `null` for an id that is invalid, inaccessible or deleted.
    Retrieve {
        object: String,
        ids: Vec<String>,
        fields: Vec<String>,
    },
    /// `POST …/composite/sobjects`; each record carries `attributes.type`.
    Create { records: Vec<Map<String, Value>> },
    /// `PATCH …/composite/sobjects`; each record carries `attributes.type` and `Id`.
    Update { records: Vec<Map<String, Value>> },
    /// `PATCH …/composite/sobjects/{object}/{external_id_field}`; one object type, each record
    /// carries the external id field.
    Upsert {
        object: String,
        external_id_field: String,
        records: Vec<Map<String, Value>>,
    },
    /// `DELETE …/composite/sobjects?ids=…&allOrNone=false`.
    Delete { ids: Vec<String> },
}

impl SubRequest {
    fn kind(&self) -> &'static str {
        match self {
            SubRequest::Query { .. } => "Query",
            SubRequest::Retrieve { .. } => "Retrieve",
            SubRequest::Create { .. } => "Create",
            SubRequest::Update { .. } => "Update",
            SubRequest::Upsert { .. } => "Upsert",
            SubRequest::Delete { .. } => "Delete",
        }
    }

    /// Records (or ids) written; 0 for a query or a retrieve.
    fn record_count(&self) -> usize {
        match self {
            SubRequest::Query { .. } | SubRequest::Retrieve { .. } => 0,
            SubRequest::Create { records }
            | SubRequest::Update { records }
            | SubRequest::Upsert { records, .. } => records.len(),
            SubRequest::Delete { ids } => ids.len(),
        }
    }
}

/// The answer to one subrequest.
#[derive(Debug, Clone, PartialEq)]
pub enum SubResponse {
    /// Every record of the query (all pages), `attributes` removed at every level.
    Query { records: Vec<Map<String, Value>> },
    /// One entry per id of a [`SubRequest::Retrieve`], in id order: the record (`attributes`
    /// removed) or `None` where Salesforce answered `null`.
    Retrieved {
        records: Vec<Option<Map<String, Value>>>,
    },
    /// One result per record (or id), in input order.
    Saved(Vec<SaveResult>),
    /// The subrequest as a whole failed (its body was an error array), or its answer could not
    /// be read ([`UNREADABLE_RESPONSE`]).
    Failed {
        http_status: u16,
        errors: Vec<ApiError>,
    },
}

/// The outcome of one record of an sObject Collections subrequest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaveResult {
    /// The record id (null for a failed create).
    pub id: Option<String>,
    pub success: bool,
    /// Upsert only: whether the record was created (else updated).
    pub created: Option<bool>,
    pub errors: Vec<ApiError>,
}

/// One Salesforce error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// `errorCode` (REST error arrays) or `statusCode` (collection per-record errors).
    pub code: String,
    pub message: String,
    /// The fields the error is about (may be empty).
    pub fields: Vec<String>,
}

impl ApiError {
    fn unreadable(message: impl Into<String>) -> Self {
        ApiError {
            code: UNREADABLE_RESPONSE.to_owned(),
            message: message.into(),
            fields: Vec::new(),
        }
    }

    /// Reads `{"errorCode"|"statusCode", "message", "fields"}`; `None` when it is none of that.
    fn from_value(value: &Value) -> Option<Self> {
        let object = value.as_object()?;
        let code = object
            .get("errorCode")
            .or_else(|| object.get("statusCode"))
            .and_then(Value::as_str);
        let message = object.get("message").and_then(Value::as_str);
        if code.is_none() && message.is_none() {
            return None;
        }
        let fields = object
            .get("fields")
            .and_then(Value::as_array)
            .map(|fields| {
                fields
                    .iter()
                    .filter_map(|f| f.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        Some(ApiError {
            code: code.unwrap_or_default().to_owned(),
            message: message.unwrap_or_default().to_owned(),
            fields,
        })
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)?;
        if !self.fields.is_empty() {
            write!(f, " (fields: {})", self.fields.join(", "))?;
        }
        Ok(())
    }
}

fn summarize(errors: &[ApiError]) -> String {
    match errors {
        [] => "no error details".to_owned(),
        [one] => one.to_string(),
        [first, rest @ ..] => format!("{first} (and {} more)", rest.len()),
    }
}

/// The org's daily API request allowance (`DailyApiRequests`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiUsage {
    pub used: u64,
    pub max: u64,
}

impl ApiUsage {
    /// Requests left in the rolling 24 hours.
    pub fn remaining(&self) -> u64 {
        self.max.saturating_sub(self.used)
    }
}

/// REST client failures.
#[derive(Debug, thiserror::Error)]
pub enum RestError {
    /// Logging in again after a 401 failed for good (refused credentials).
    #[error("Salesforce re-login failed")]
    Auth(#[from] AuthError),
    /// The request breaks a Salesforce limit or shape rule; nothing was sent.
    #[error("invalid REST request: {0}")]
    Invalid(String),
    /// Salesforce refused the whole call and retrying cannot help.
    #[error(
        "Salesforce refused the call with HTTP {status}: {}",
        summarize(errors)
    )]
    Rejected { status: u16, errors: Vec<ApiError> },
    /// A successful answer that is not what Salesforce documents; the writes it covers may have
    /// happened.
    #[error("unreadable Salesforce response: {0}")]
    Protocol(String),
    /// Shutdown interrupted a wait or a backoff.
    #[error("cancelled")]
    Cancelled,
}

/// How much of the daily allowance the sink leaves to other integrations.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reserve {
    /// A number of API calls.
    Calls(u64),
    /// A percentage (0–100) of the org's maximum, rounded up; out-of-range values are clamped.
    Percent(f64),
}

impl Reserve {
    /// The reserve in calls for an allowance of `max`.
    pub fn calls(&self, max: u64) -> u64 {
        match *self {
            Reserve::Calls(calls) => calls,
            Reserve::Percent(percent) => {
                let percent = if percent.is_nan() {
                    0.0
                } else {
                    percent.clamp(0.0, 100.0)
                };
                (max as f64 * percent / 100.0).ceil() as u64
            }
        }
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
    pub fn with_gauges(
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
    pub fn reserve(&self) -> Reserve {
        self.0.reserve
    }

    /// The `/limits` poll interval while paused.
    pub fn poll_interval(&self) -> Duration {
        self.0.poll_interval
    }

    /// The allowance as last reported (`used == max` once exhausted); `None` until known.
    pub fn usage(&self) -> Option<ApiUsage> {
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
    pub fn remaining(&self) -> Option<u64> {
        self.state().remaining()
    }

    /// Whether calls are being held.
    pub fn paused(&self) -> bool {
        self.0.gauges.paused.load(Ordering::Relaxed)
    }

    /// The guard's gauges (`forcebridge_sink_api_paused`, `forcebridge_sink_api_remaining`).
    pub fn gauges(&self) -> &ApiLimitGauges {
        &self.0.gauges
    }

    /// Records usage reported by a response's `Sforce-Limit-Info` header. It does not lift an
    /// exhaustion (see [`LimitGuard::observe_limits`]).
    pub fn observe(&self, usage: ApiUsage) {
        let mut state = self.state();
        state.usage = Some(usage);
        self.publish(&state);
    }

    /// Records usage reported by `GET /limits`: authoritative, it also lifts an exhaustion.
    pub fn observe_limits(&self, usage: ApiUsage) {
        let mut state = self.state();
        state.usage = Some(usage);
        state.exhausted = false;
        self.publish(&state);
    }

    /// Salesforce answered 403 `REQUEST_LIMIT_EXCEEDED`: treat the allowance as spent until
    /// `/limits` says otherwise. (The same code is used when too many long-running requests are
    /// in flight; the first `/limits` poll then shows the allowance and lifts the pause.)
    pub fn mark_exhausted(&self) {
        let mut state = self.state();
        state.exhausted = true;
        self.publish(&state);
    }

    /// Whether a call now would leave no more than the reserve: `max - used <= reserve`.
    pub fn must_wait(&self) -> bool {
        let state = self.state();
        let max = state.usage.map_or(0, |u| u.max);
        state
            .remaining()
            .is_some_and(|remaining| remaining <= self.0.reserve.calls(max))
    }

    /// Claims the next `/limits` poll: true when none was made in the last `poll_interval`.
    fn claim_poll(&self) -> bool {
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
    fn set_paused(&self, paused: bool) -> bool {
        self.0.gauges.paused.swap(paused, Ordering::Relaxed) != paused
    }
}

/// Parses `Sforce-Limit-Info` (`api-usage=18/15000`, possibly with `; api-bursts=2/750` or other
/// entries, separated by `;` or `,`) into the daily usage.
pub fn parse_limit_info(value: &str) -> Option<ApiUsage> {
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
fn parse_limits(body: &[u8]) -> Result<ApiUsage, String> {
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

/// Checks a Composite call against Salesforce's limits and the shapes each kind needs, without
/// sending anything.
pub fn validate(subrequests: &[SubRequest]) -> Result<(), RestError> {
    let invalid = |message: String| Err(RestError::Invalid(message));
    if subrequests.len() > MAX_SUBREQUESTS {
        return invalid(format!(
            "{} subrequests; a Composite call takes at most {MAX_SUBREQUESTS}",
            subrequests.len()
        ));
    }
    // Every kind of subrequest we send is an sObject Collections or a query subrequest.
    let heavy = subrequests.len();
    if heavy > MAX_COLLECTIONS_AND_QUERIES {
        return invalid(format!(
            "{heavy} collection or query subrequests; a Composite call takes at most \
             {MAX_COLLECTIONS_AND_QUERIES}"
        ));
    }
    for (index, sub) in subrequests.iter().enumerate() {
        validate_one(sub).map_err(|message| {
            RestError::Invalid(format!("subrequest {index} ({}): {message}", sub.kind()))
        })?;
    }
    Ok(())
}

fn validate_one(sub: &SubRequest) -> Result<(), String> {
    if let SubRequest::Query { soql } = sub {
        return if soql.trim().is_empty() {
            Err("empty SOQL".to_owned())
        } else {
            Ok(())
        };
    }
    if let SubRequest::Retrieve {
        object,
        ids,
        fields,
    } = sub
    {
        if !is_api_name(object) {
            return Err(format!("`{object}` is not an API name"));
        }
        match ids.len() {
            0 => return Err("no ids".to_owned()),
            n if n > MAX_RETRIEVE_IDS => {
                return Err(format!("{n} ids; at most {MAX_RETRIEVE_IDS}"));
            }
            _ => {}
        }
        if let Some(id) = ids
            .iter()
            .find(|id| id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()))
        {
            return Err(format!("`{id}` is not a record id"));
        }
        if fields.is_empty() {
            return Err("no fields".to_owned());
        }
        if let Some(field) = fields.iter().find(|f| !is_api_name(f)) {
            return Err(format!("`{field}` is not an API name"));
        }
        return Ok(());
    }
    match sub.record_count() {
        0 => return Err("no records".to_owned()),
        n if n > MAX_COLLECTION_RECORDS => {
            return Err(format!("{n} records; at most {MAX_COLLECTION_RECORDS}"));
        }
        _ => {}
    }
    let has_type = |r: &Map<String, Value>| {
        r.get("attributes")
            .and_then(|a| a.get("type"))
            .and_then(Value::as_str)
            .is_some_and(|t| !t.is_empty())
    };
    let has_str = |r: &Map<String, Value>, key: &str| {
        r.get(key)
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
    };
    match sub {
        SubRequest::Query { .. } | SubRequest::Retrieve { .. } => {}
        SubRequest::Create { records } => {
            if let Some(i) = records.iter().position(|r| !has_type(r)) {
                return Err(format!("record {i} has no attributes.type"));
            }
        }
        SubRequest::Update { records } => {
            if let Some(i) = records.iter().position(|r| !has_type(r)) {
                return Err(format!("record {i} has no attributes.type"));
            }
            if let Some(i) = records.iter().position(|r| !has_str(r, "Id")) {
                return Err(format!("record {i} has no Id"));
            }
        }
        SubRequest::Upsert {
            object,
            external_id_field,
            records,
        } => {
            for name in [object, external_id_field] {
                if !is_api_name(name) {
                    return Err(format!("`{name}` is not an API name"));
                }
            }
            if let Some(i) = records
                .iter()
                .position(|r| !r.contains_key(external_id_field))
            {
                return Err(format!("record {i} has no {external_id_field}"));
            }
        }
        SubRequest::Delete { ids } => {
            if let Some(id) = ids
                .iter()
                .find(|id| id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()))
            {
                return Err(format!("`{id}` is not a record id"));
            }
        }
    }
    Ok(())
}

/// `^[A-Za-z0-9_]+$`: object and field API names, reference ids.
fn is_api_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// The call options value for `tag`, or why it cannot be one.
fn call_options_value(tag: &str) -> Result<HeaderValue, String> {
    let printable = tag
        .bytes()
        .all(|b| (b' '..=b'~').contains(&b) && !matches!(b, b';' | b',' | b'='));
    if tag.trim().is_empty() || !printable {
        return Err(format!(
            "client tag `{tag}` must be non-empty printable ASCII without `;`, `,` or `=`"
        ));
    }
    HeaderValue::from_str(&format!("client={tag}")).map_err(|e| e.to_string())
}

/// Salesforce errors from a failed call's or subrequest's body: an error array as documented;
/// an object that looks like one error is taken as that error; anything else becomes one
/// [`UNREADABLE_RESPONSE`] error quoting the body.
fn errors_from_value(body: &Value) -> Vec<ApiError> {
    match body {
        Value::Array(items) => items
            .iter()
            .map(|item| {
                ApiError::from_value(item)
                    .unwrap_or_else(|| ApiError::unreadable(truncate(&item.to_string())))
            })
            .collect(),
        other => vec![
            ApiError::from_value(other)
                .unwrap_or_else(|| ApiError::unreadable(truncate(&other.to_string()))),
        ],
    }
}

fn errors_from_bytes(body: &[u8]) -> Vec<ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(value) => errors_from_value(&value),
        Err(_) => vec![ApiError::unreadable(truncate(&String::from_utf8_lossy(
            body,
        )))],
    }
}

fn truncate(text: &str) -> String {
    const MAX: usize = 500;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// The answer to a retrieve of `expected` ids: an array of one record or `null` per id.
fn retrieved(mut body: Value, expected: usize) -> Result<Vec<Option<Map<String, Value>>>, String> {
    strip_attributes(&mut body);
    let Value::Array(items) = body else {
        return Err("retrieve answer is not an array".to_owned());
    };
    if items.len() != expected {
        return Err(format!(
            "retrieve answered {} entries for {expected} ids",
            items.len()
        ));
    }
    items
        .into_iter()
        .map(|item| match item {
            Value::Null => Ok(None),
            Value::Object(record) => Ok(Some(record)),
            other => Err(format!(
                "retrieve entry is neither a record nor null: {other}"
            )),
        })
        .collect()
}

/// Removes `attributes` objects from query records, at every level (relationships, subqueries).
fn strip_attributes(value: &mut Value) {
    match value {
        Value::Object(object) => {
            if object.get("attributes").is_some_and(Value::is_object) {
                object.remove("attributes");
            }
            object.values_mut().for_each(strip_attributes);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_attributes),
        _ => {}
    }
}

/// One page of a query result.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryPage {
    /// The page's records, `attributes` removed at every level.
    pub records: Vec<Map<String, Value>>,
    /// The next page's path (`nextRecordsUrl`), when not done.
    pub next: Option<String>,
}

fn query_page(mut body: Value) -> Result<QueryPage, String> {
    strip_attributes(&mut body);
    let done = body["done"].as_bool().unwrap_or(true);
    let next = (!done)
        .then(|| body["nextRecordsUrl"].as_str().map(str::to_owned))
        .flatten();
    if !done && next.as_deref().is_none_or(|n| !n.starts_with('/')) {
        return Err("query not done but no usable nextRecordsUrl".to_owned());
    }
    let Value::Array(records) = body["records"].take() else {
        return Err("query result has no records array".to_owned());
    };
    let records = records
        .into_iter()
        .map(|record| match record {
            Value::Object(object) => Ok(object),
            other => Err(format!(
                "query record is not an object: {}",
                truncate(&other.to_string())
            )),
        })
        .collect::<Result<_, _>>()?;
    Ok(QueryPage { records, next })
}

fn save_results(body: &Value, expected: usize) -> Result<Vec<SaveResult>, String> {
    let items = body.as_array().ok_or_else(|| {
        format!(
            "expected an array of save results: {}",
            truncate(&body.to_string())
        )
    })?;
    if items.len() != expected {
        return Err(format!(
            "{} save results for {expected} records",
            items.len()
        ));
    }
    items
        .iter()
        .map(|item| {
            let success = item["success"].as_bool().ok_or_else(|| {
                format!(
                    "save result without success: {}",
                    truncate(&item.to_string())
                )
            })?;
            Ok(SaveResult {
                id: item["id"].as_str().map(str::to_owned),
                success,
                created: item["created"].as_bool(),
                errors: match &item["errors"] {
                    Value::Null => Vec::new(),
                    errors => errors_from_value(errors),
                },
            })
        })
        .collect()
}

/// One HTTP exchange's outcome.
enum Exchange {
    /// 2xx, with the body.
    Success(Bytes),
    /// Any other status, with Salesforce's errors and the session that was used.
    Refused {
        status: u16,
        errors: Vec<ApiError>,
        session: Arc<Session>,
    },
    /// No answer (or no complete answer).
    Transport(reqwest::Error),
}

/// The REST client of the write-back sink. Cheap to clone; clones share the session, the
/// counters and the guard.
#[derive(Clone)]
pub struct RestClient {
    inner: Arc<ClientInner>,
    backoff_base: Duration,
    backoff_max: Duration,
    subrequest_call_options: bool,
}

struct ClientInner {
    http: reqwest::Client,
    auth: Authenticator,
    session: SessionHandle,
    /// `/services/data/v62.0`.
    data_path: String,
    client_tag: String,
    call_options: Result<HeaderValue, String>,
    guard: LimitGuard,
    stats: Arc<ApiStats>,
    /// One re-login at a time.
    login: tokio::sync::Mutex<()>,
}

impl fmt::Debug for RestClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RestClient")
            .field("data_path", &self.inner.data_path)
            .field("client_tag", &self.inner.client_tag)
            .field("guard", &self.inner.guard)
            .finish_non_exhaustive()
    }
}

impl RestClient {
    /// A client for the org of `session`, API version `api_version` (`62.0`; a leading `v` is
    /// accepted), tagging every call `client=<client_tag>`. An unusable tag (empty, non-ASCII,
    /// `;`, `,`, `=`) makes every call fail with [`RestError::Invalid`].
    pub fn new(
        http: reqwest::Client,
        auth: Authenticator,
        session: SessionHandle,
        api_version: String,
        client_tag: String,
        guard: LimitGuard,
    ) -> Self {
        let version = api_version.trim_start_matches(['v', 'V']);
        RestClient {
            inner: Arc::new(ClientInner {
                http,
                auth,
                session,
                data_path: format!("/services/data/v{version}"),
                call_options: call_options_value(&client_tag),
                client_tag,
                guard,
                stats: Arc::default(),
                login: tokio::sync::Mutex::new(()),
            }),
            backoff_base: DEFAULT_BACKOFF_BASE,
            backoff_max: DEFAULT_BACKOFF_MAX,
            subrequest_call_options: false,
        }
    }

    /// Counts into `stats` (e.g. the sink's, for `/metrics`) instead of the client's own
    /// counters. Call it on a new client, before it is cloned.
    pub fn with_stats(mut self, stats: Arc<ApiStats>) -> Self {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.stats = stats,
            None => warn!("RestClient::with_stats on a shared client: the counters stay its own"),
        }
        self
    }

    /// Retry backoff: starts at `base`, doubles up to `max`, full jitter (default 200 ms – 30 s).
    pub fn with_backoff(mut self, base: Duration, max: Duration) -> Self {
        self.backoff_base = base;
        self.backoff_max = max;
        self
    }

    /// Also puts `Sforce-Call-Options` in every subrequest's `httpHeaders` (default off; see the
    /// module docs).
    pub fn with_subrequest_call_options(mut self, enabled: bool) -> Self {
        self.subrequest_call_options = enabled;
        self
    }

    /// API calls this client (and its clones) made that Salesforce answered, whatever the status:
    /// Composite calls, query pages, `/limits` polls.
    pub fn calls(&self) -> u64 {
        self.inner.stats.calls.load(Ordering::Relaxed)
    }

    /// The client's counters.
    pub fn stats(&self) -> &ApiStats {
        &self.inner.stats
    }

    /// The limit guard.
    pub fn guard(&self) -> &LimitGuard {
        &self.inner.guard
    }

    /// One Composite call (see the module docs). An empty `subrequests` answers an empty list
    /// without a call. Query pages are fetched after the call; a cancel while fetching them ends
    /// with [`RestError::Cancelled`] although the call's writes were made (at-least-once callers
    /// send them again).
    pub async fn composite(
        &self,
        subrequests: &[SubRequest],
        cancel: &CancellationToken,
    ) -> Result<Vec<SubResponse>, RestError> {
        validate(subrequests)?;
        self.check_tag()?;
        if subrequests.is_empty() {
            return Ok(Vec::new());
        }
        let records: usize = subrequests.iter().map(SubRequest::record_count).sum();
        let span = info_span!("composite", subrequests = subrequests.len(), records);
        async {
            let body = self.composite_body(subrequests);
            let path = format!("{}/composite", self.inner.data_path);
            let started = Instant::now();
            let answer = self
                .execute(Method::POST, &path, Some(&body), true, cancel)
                .await;
            if let Some(probe) = CALL_PROBE.get() {
                probe.observe(started.elapsed());
            }
            let answer = answer?;
            let results = parse_composite(&answer, subrequests.len())?;
            let mut responses = Vec::with_capacity(subrequests.len());
            for (sub, (status, body)) in subrequests.iter().zip(results) {
                responses.push(self.sub_response(sub, status, body, cancel).await?);
            }
            Ok(responses)
        }
        .instrument(span)
        .await
    }

    /// `GET …/query?q=<soql>`: the first page only, so a caller can stream a large result; follow
    /// [`QueryPage::next`] with [`RestClient::query_more`]. Held by the guard and retried like
    /// every call; a refused query is [`RestError::Rejected`].
    pub async fn query(
        &self,
        soql: &str,
        cancel: &CancellationToken,
    ) -> Result<QueryPage, RestError> {
        if soql.trim().is_empty() {
            return Err(RestError::Invalid("empty SOQL".to_owned()));
        }
        let path = format!("{}/query?q={}", self.inner.data_path, percent_encode(soql));
        self.query_at(&path, cancel).await
    }

    /// The page at `next` (a [`QueryPage::next`] path of this org).
    pub async fn query_more(
        &self,
        next: &str,
        cancel: &CancellationToken,
    ) -> Result<QueryPage, RestError> {
        if !next.starts_with('/') {
            return Err(RestError::Invalid(format!(
                "`{next}` is not a nextRecordsUrl path"
            )));
        }
        self.query_at(next, cancel).await
    }

    async fn query_at(
        &self,
        path: &str,
        cancel: &CancellationToken,
    ) -> Result<QueryPage, RestError> {
        self.check_tag()?;
        let answer = self.execute(Method::GET, path, None, true, cancel).await?;
        serde_json::from_slice(&answer)
            .map_err(|e| format!("query page is not JSON: {e}"))
            .and_then(query_page)
            .map_err(RestError::Protocol)
    }

    /// `GET /limits` → `DailyApiRequests`; also tells the guard. Not held by the guard (it is how
    /// the guard learns), retried like any call.
    pub async fn limits(&self, cancel: &CancellationToken) -> Result<ApiUsage, RestError> {
        self.check_tag()?;
        let path = format!("{}/limits", self.inner.data_path);
        let body = self
            .execute(Method::GET, &path, None, false, cancel)
            .await?;
        let usage = parse_limits(&body).map_err(RestError::Protocol)?;
        self.inner.guard.observe_limits(usage);
        Ok(usage)
    }

    fn check_tag(&self) -> Result<(), RestError> {
        match &self.inner.call_options {
            Ok(_) => Ok(()),
            Err(message) => Err(RestError::Invalid(message.clone())),
        }
    }

    /// The JSON body of one Composite call (public for `benches/hot_path.rs` only).
    #[doc(hidden)]
    pub fn composite_body(&self, subrequests: &[SubRequest]) -> Value {
        let data = &self.inner.data_path;
        let collection =
            |records: &Vec<Map<String, Value>>| json!({ "allOrNone": false, "records": records });
        let requests: Vec<Value> = subrequests
            .iter()
            .enumerate()
            .map(|(index, sub)| {
                let (method, url, body) = match sub {
                    SubRequest::Query { soql } => (
                        "GET",
                        format!("{data}/query?q={}", percent_encode(soql)),
                        None,
                    ),
                    SubRequest::Retrieve {
                        object,
                        ids,
                        fields,
                    } => (
                        "POST",
                        format!("{data}/composite/sobjects/{object}"),
                        Some(json!({ "ids": ids, "fields": fields })),
                    ),
                    SubRequest::Create { records } => (
                        "POST",
                        format!("{data}/composite/sobjects"),
                        Some(collection(records)),
                    ),
                    SubRequest::Update { records } => (
                        "PATCH",
                        format!("{data}/composite/sobjects"),
                        Some(collection(records)),
                    ),
                    SubRequest::Upsert {
                        object,
                        external_id_field,
                        records,
                    } => (
                        "PATCH",
                        format!("{data}/composite/sobjects/{object}/{external_id_field}"),
                        Some(collection(records)),
                    ),
                    SubRequest::Delete { ids } => {
                        let ids: Vec<String> = ids.iter().map(|id| percent_encode(id)).collect();
                        let ids = ids.join(",");
                        let url = format!("{data}/composite/sobjects?ids={ids}&allOrNone=false");
                        ("DELETE", url, None)
                    }
                };
                let mut request = json!({
                    "method": method,
                    "url": url,
                    "referenceId": format!("r{index}"),
                });
                if let Some(body) = body {
                    request["body"] = body;
                }
                if self.subrequest_call_options {
                    request["httpHeaders"] = json!({
                        CALL_OPTIONS_HEADER: format!("client={}", self.inner.client_tag),
                    });
                }
                request
            })
            .collect();
        json!({
            "allOrNone": false,
            "collateSubrequests": false,
            "compositeRequest": requests,
        })
    }

    /// Turns one subrequest's answer into a [`SubResponse`], following query pages.
    async fn sub_response(
        &self,
        sub: &SubRequest,
        status: u16,
        body: Value,
        cancel: &CancellationToken,
    ) -> Result<SubResponse, RestError> {
        let unreadable = |message: String| SubResponse::Failed {
            http_status: status,
            errors: vec![ApiError::unreadable(message)],
        };
        if !(200..300).contains(&status) {
            return Ok(SubResponse::Failed {
                http_status: status,
                errors: errors_from_value(&body),
            });
        }
        if let SubRequest::Retrieve { ids, .. } = sub {
            return Ok(match retrieved(body, ids.len()) {
                Ok(records) => SubResponse::Retrieved { records },
                Err(message) => unreadable(message),
            });
        }
        if !matches!(sub, SubRequest::Query { .. }) {
            return Ok(match save_results(&body, sub.record_count()) {
                Ok(results) => SubResponse::Saved(results),
                Err(message) => unreadable(message),
            });
        }
        let QueryPage {
            mut records,
            mut next,
        } = match query_page(body) {
            Ok(page) => page,
            Err(message) => return Ok(unreadable(message)),
        };
        while let Some(path) = next.take() {
            let page = match self.execute(Method::GET, &path, None, true, cancel).await {
                Ok(page) => page,
                Err(RestError::Rejected { status, errors }) => {
                    return Ok(SubResponse::Failed {
                        http_status: status,
                        errors,
                    });
                }
                Err(other) => return Err(other),
            };
            let parsed = serde_json::from_slice(&page)
                .map_err(|e| format!("query page is not JSON: {e}"))
                .and_then(query_page);
            match parsed {
                Ok(page) => {
                    records.extend(page.records);
                    next = page.next;
                }
                Err(message) => return Ok(unreadable(message)),
            }
        }
        Ok(SubResponse::Query { records })
    }

    /// Sends until a 2xx answer, retrying as classified. `guarded`: wait on the limit guard
    /// before each attempt.
    async fn execute(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        guarded: bool,
        cancel: &CancellationToken,
    ) -> Result<Bytes, RestError> {
        let mut backoff = Backoff::new(self.backoff_base, self.backoff_max);
        loop {
            if cancel.is_cancelled() {
                return Err(RestError::Cancelled);
            }
            if guarded {
                self.wait_for_allowance(cancel).await?;
            }
            let reason = match self.exchange(&method, path, body).await {
                Exchange::Success(answer) => return Ok(answer),
                Exchange::Transport(error) => format!("transport: {}", error_chain(&error)),
                Exchange::Refused {
                    status,
                    errors,
                    session,
                } => {
                    let code = errors.first().map(|e| e.code.as_str());
                    let reason = format!("HTTP {status}: {}", summarize(&errors));
                    match classify_http(status, code) {
                        HttpDirective::Fatal => return Err(RestError::Rejected { status, errors }),
                        HttpDirective::Retry => reason,
                        HttpDirective::Reauthenticate => {
                            self.reauthenticate(&session, status, errors, cancel)
                                .await?;
                            reason
                        }
                        HttpDirective::LimitExceeded => {
                            self.inner.guard.mark_exhausted();
                            if guarded {
                                // The guard holds the retry until /limits shows an allowance.
                                warn!(%method, path, reason, "API allowance exhausted; waiting");
                                self.inner.stats.retries.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                            reason
                        }
                    }
                }
            };
            let delay = backoff.next_delay();
            warn!(%method, path, reason, ?delay, attempt = backoff.attempts(), "REST call failed; retrying");
            self.inner.stats.retries.fetch_add(1, Ordering::Relaxed);
            if !sleep_or_cancel(delay, cancel).await {
                return Err(RestError::Cancelled);
            }
        }
    }

    /// One request with the current session; counts and reads the answer.
    async fn exchange(&self, method: &Method, path: &str, body: Option<&Value>) -> Exchange {
        let session = self.inner.session.current();
        let url = format!("{}{path}", session.instance_url);
        let mut request = self
            .inner
            .http
            .request(method.clone(), &url)
            .bearer_auth(session.access_token.expose_secret())
            .header(ACCEPT, "application/json");
        if let Ok(options) = &self.inner.call_options {
            request = request.header(CALL_OPTIONS_HEADER, options.clone());
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => return Exchange::Transport(error),
        };
        self.inner.stats.calls.fetch_add(1, Ordering::Relaxed);
        let usage = response
            .headers()
            .get(LIMIT_INFO_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_limit_info);
        if let Some(usage) = usage {
            self.inner.guard.observe(usage);
        }
        let status = response.status().as_u16();
        let answer = match response.bytes().await {
            Ok(answer) => answer,
            Err(error) => return Exchange::Transport(error),
        };
        if (200..300).contains(&status) {
            Exchange::Success(answer)
        } else {
            Exchange::Refused {
                status,
                errors: errors_from_bytes(&answer),
                session,
            }
        }
    }

    /// Logs in again after `failed` was refused, unless another worker already did. A login that
    /// may work later is logged and left to the retry; refused credentials end the call. A
    /// configured access token cannot be refreshed: getting the refused token back ends the call
    /// with the refusal.
    async fn reauthenticate(
        &self,
        failed: &Arc<Session>,
        status: u16,
        errors: Vec<ApiError>,
        cancel: &CancellationToken,
    ) -> Result<(), RestError> {
        let _one_at_a_time = self.inner.login.lock().await;
        if !Arc::ptr_eq(&self.inner.session.current(), failed) {
            return Ok(());
        }
        warn!(
            reason = summarize(&errors),
            "Salesforce refused the session; logging in again"
        );
        let login = tokio::select! {
            _ = cancel.cancelled() => return Err(RestError::Cancelled),
            login = self.inner.auth.login() => login,
        };
        match login {
            Ok(session)
                if session.access_token.expose_secret() == failed.access_token.expose_secret() =>
            {
                Err(RestError::Rejected { status, errors })
            }
            Ok(session) => {
                self.inner.stats.relogins.fetch_add(1, Ordering::Relaxed);
                self.inner.session.replace(session);
                Ok(())
            }
            Err(error) if error.is_retryable() => {
                warn!(%error, "re-login failed; will retry");
                Ok(())
            }
            Err(error) => Err(RestError::Auth(error)),
        }
    }

    /// Returns when the guard lets a call through; polls `/limits` while it does not.
    async fn wait_for_allowance(&self, cancel: &CancellationToken) -> Result<(), RestError> {
        let guard = &self.inner.guard;
        loop {
            if !guard.must_wait() {
                if guard.set_paused(false) {
                    info!(
                        remaining = guard.remaining(),
                        "API allowance above the reserve again; resuming REST calls"
                    );
                }
                return Ok(());
            }
            if guard.set_paused(true) {
                let usage = guard.usage();
                warn!(
                    used = usage.map(|u| u.used),
                    max = usage.map(|u| u.max),
                    reserve = guard.reserve().calls(usage.map_or(0, |u| u.max)),
                    poll_interval = ?guard.poll_interval(),
                    "daily API allowance down to the reserve; pausing REST calls"
                );
            }
            if !sleep_or_cancel(guard.poll_interval(), cancel).await {
                return Err(RestError::Cancelled);
            }
            if guard.claim_poll() {
                self.poll_limits(cancel).await?;
            }
        }
    }

    /// One `/limits` request while paused; failures only delay the resumption.
    async fn poll_limits(&self, cancel: &CancellationToken) -> Result<(), RestError> {
        let path = format!("{}/limits", self.inner.data_path);
        match self.exchange(&Method::GET, &path, None).await {
            Exchange::Success(body) => match parse_limits(&body) {
                Ok(usage) => self.inner.guard.observe_limits(usage),
                Err(message) => warn!(message, "unreadable /limits answer while paused"),
            },
            Exchange::Refused {
                status,
                errors,
                session,
            } => {
                let code = errors.first().map(|e| e.code.as_str());
                if classify_http(status, code) == HttpDirective::Reauthenticate {
                    self.reauthenticate(&session, status, errors, cancel)
                        .await?;
                } else {
                    debug!(
                        status,
                        reason = summarize(&errors),
                        "/limits refused while paused"
                    );
                }
            }
            Exchange::Transport(error) => {
                warn!(
                    error = error_chain(&error),
                    "/limits poll failed while paused"
                );
            }
        }
        Ok(())
    }
}

/// The `compositeResponse` array as (status, body) per subrequest, in `r0…` order.
fn parse_composite(answer: &[u8], expected: usize) -> Result<Vec<(u16, Value)>, RestError> {
    let protocol = |message: String| RestError::Protocol(message);
    let mut value: Value = serde_json::from_slice(answer)
        .map_err(|e| protocol(format!("composite answer is not JSON: {e}")))?;
    let Value::Array(items) = value["compositeResponse"].take() else {
        return Err(protocol(
            "composite answer has no compositeResponse array".into(),
        ));
    };
    let mut slots: Vec<Option<(u16, Value)>> = vec![None; expected];
    for mut item in items {
        let reference = item["referenceId"].as_str().unwrap_or_default();
        let index = reference
            .strip_prefix('r')
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|&i| i < expected)
            .ok_or_else(|| protocol(format!("unexpected referenceId `{reference}`")))?;
        let status = item["httpStatusCode"]
            .as_u64()
            .and_then(|s| u16::try_from(s).ok())
            .ok_or_else(|| protocol(format!("subrequest {reference} has no httpStatusCode")))?;
        if slots[index].is_some() {
            return Err(protocol(format!(
                "referenceId `{reference}` answered twice"
            )));
        }
        slots[index] = Some((status, item["body"].take()));
    }
    slots
        .into_iter()
        .enumerate()
        .map(|(i, slot)| slot.ok_or_else(|| protocol(format!("no answer for subrequest r{i}"))))
        .collect()
}

#[cfg(test)]
mod tests;
