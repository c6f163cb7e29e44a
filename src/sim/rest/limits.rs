//! API request accounting and REST fault injection, as a real org's edge applies them.
//!
//! Contract:
//! * Every authenticated call under `/services/data/v{ver}/` counts one call against the daily
//!   allocation (`SimConfig::daily_api_requests`); a whole `/composite` counts one ("the entire
//!   series of requests counts as a single call"). OAuth endpoints and the version list don't
//!   count. Every authenticated response carries `Sforce-Limit-Info: api-usage=USED/MAX` (the
//!   count after this call).
//! * Once `used >= max`, calls are refused with 403
//!   `[{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]` and
//!   not counted, except `GET /limits`, which still answers (uncounted while exhausted).
//! * Faults queued by `SimOrg::fail_next_requests` refuse the next calls before the limit check,
//!   each once, in order, uncounted: [`RestFault`] says how.
//! * `GET /limits` answers `{"DailyApiRequests": {"Max", "Remaining"}, …}` with a few other
//!   allocations at their Enterprise Edition values (static).

use std::collections::VecDeque;
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};

/// How an injected fault refuses a REST call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RestFault {
    /// 503 `SERVER_UNAVAILABLE` (maintenance, overload).
    ServiceUnavailable,
    /// 429 `REQUEST_LIMIT_EXCEEDED` ("too many requests": rate protection).
    TooManyRequests,
    /// 403 `REQUEST_LIMIT_EXCEEDED` (the daily allocation, as if it were used up).
    RequestLimitExceeded,
    /// 400 with an HTML page, as a proxy or load balancer in front of the org answers: not
    /// Salesforce's JSON error array, which is how Salesforce itself answers a 400 (REST API
    /// Developer Guide, "Status Codes and Error Responses").
    ProxyHtmlBadRequest,
    /// 413 with an HTML page: the front end refuses a request it finds too large, as users of
    /// real orgs met it (`ERROR_HTTP_413: Request Entity Too Large`, jsforce/jsforce#311).
    PayloadTooLarge,
}

/// A refused call: status and Salesforce error array.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub status: StatusCode,
    pub body: Value,
    /// Answered as this HTML page instead of `body` (a proxy's answer).
    pub html: Option<&'static str>,
}

fn refusal(status: StatusCode, code: &str, message: &str) -> Refusal {
    Refusal {
        status,
        body: json!([{ "message": message, "errorCode": code }]),
        html: None,
    }
}

fn html(status: StatusCode, page: &'static str) -> Refusal {
    Refusal {
        status,
        body: Value::Null,
        html: Some(page),
    }
}

impl RestFault {
    fn refusal(self) -> Refusal {
        match self {
            RestFault::ServiceUnavailable => refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "SERVER_UNAVAILABLE",
                "Server temporarily unavailable. Please try again later.",
            ),
            RestFault::TooManyRequests => refusal(
                StatusCode::TOO_MANY_REQUESTS,
                "REQUEST_LIMIT_EXCEEDED",
                "Too many requests. Please try again later.",
            ),
            RestFault::RequestLimitExceeded => limit_exceeded(),
            RestFault::ProxyHtmlBadRequest => html(
                StatusCode::BAD_REQUEST,
                "<html><head><title>400 Bad Request</title></head><body><h1>Bad Request</h1></body></html>",
            ),
            RestFault::PayloadTooLarge => html(
                StatusCode::PAYLOAD_TOO_LARGE,
                "<html><head><title>413 Request Entity Too Large</title></head><body><h1>Request Entity Too Large</h1></body></html>",
            ),
        }
    }
}

fn limit_exceeded() -> Refusal {
    refusal(
        StatusCode::FORBIDDEN,
        "REQUEST_LIMIT_EXCEEDED",
        "TotalRequests Limit exceeded.",
    )
}

/// Usage counters and REST fault knobs.
#[derive(Debug)]
pub(crate) struct ApiState {
    /// Calls counted so far.
    pub used: u64,
    /// Daily allocation.
    pub max: u64,
    /// Added to every REST response.
    pub latency: Duration,
    /// Refusals still to inject, in order.
    faults: VecDeque<RestFault>,
    /// Fault injection: the `instance_url` the token endpoint answers with instead of its own.
    pub token_instance_url: Option<String>,
    /// Refusals still to inject into `/composite` calls only, in order.
    composite_faults: VecDeque<RestFault>,
    /// Request bodies longer than this are refused with 413 (an HTML page from the front end).
    pub max_request_bytes: Option<usize>,
}

impl ApiState {
    pub fn new(max: u64) -> Self {
        Self {
            used: 0,
            max,
            latency: Duration::ZERO,
            faults: VecDeque::new(),
            token_instance_url: None,
            composite_faults: VecDeque::new(),
            max_request_bytes: None,
        }
    }

    /// Queues `n` refusals of one kind for the next `/composite` calls.
    pub fn queue_composite_faults(&mut self, n: usize, fault: RestFault) {
        self.composite_faults.extend(std::iter::repeat_n(fault, n));
    }

    /// Refuses (uncounted) a `/composite` call with a queued composite fault, or a request whose
    /// body is over [`ApiState::max_request_bytes`]; `None` lets it go on to [`ApiState::admit`].
    pub fn refuse_early(&mut self, composite_call: bool, body_len: usize) -> Option<Refusal> {
        if self.max_request_bytes.is_some_and(|max| body_len > max) {
            return Some(RestFault::PayloadTooLarge.refusal());
        }
        if composite_call {
            return self.composite_faults.pop_front().map(RestFault::refusal);
        }
        None
    }

    /// Queues `n` refusals of one kind.
    pub fn queue_faults(&mut self, n: usize, fault: RestFault) {
        self.faults.extend(std::iter::repeat_n(fault, n));
    }

    /// Refusals still queued.
    pub fn pending_faults(&self) -> usize {
        self.faults.len()
    }

    /// Admits (and counts) one call, or refuses it: an injected fault first, then the daily
    /// allocation. `limits_call`: `GET /limits`, answered even when the allocation is used up.
    pub fn admit(&mut self, limits_call: bool) -> Result<(), Refusal> {
        if let Some(fault) = self.faults.pop_front() {
            return Err(fault.refusal());
        }
        if self.used >= self.max {
            return if limits_call {
                Ok(())
            } else {
                Err(limit_exceeded())
            };
        }
        self.used += 1;
        Ok(())
    }

    /// `Sforce-Limit-Info` value.
    pub fn header(&self) -> String {
        format!("api-usage={}/{}", self.used, self.max)
    }

    /// The `/limits` resource.
    pub fn limits_body(&self) -> Value {
        let full = |max: u64| json!({"Max": max, "Remaining": max});
        json!({
            "ConcurrentAsyncGetReportInstances": full(200),
            "ConcurrentSyncReportRuns": full(20),
            "DailyApiRequests": {"Max": self.max, "Remaining": self.max.saturating_sub(self.used)},
            "DailyAsyncApexExecutions": full(250_000),
            "DailyBulkApiBatches": full(15_000),
            "DailyBulkV2QueryFileStorageMB": full(976_562),
            "DailyBulkV2QueryJobs": full(10_000),
            "DailyDurableStreamingApiEvents": full(1_000_000),
            "DailyStreamingApiEvents": full(1_000_000),
            "DataStorageMB": full(1_024),
            "FileStorageMB": full(1_024),
            "HourlyPublishedPlatformEvents": full(250_000),
            "HourlyPublishedStandardVolumePlatformEvents": full(1_000),
            "MonthlyPlatformEventsUsageEntitlement": full(1_500_000),
            "SingleEmail": full(5_000),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_come_first_then_the_allocation() {
        let mut api = ApiState::new(2);
        api.queue_faults(1, RestFault::ServiceUnavailable);
        let r = api.admit(false).expect_err("fault");
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(api.used, 0, "refused calls are not counted");
        api.admit(false).expect("1");
        api.admit(false).expect("2");
        assert_eq!(api.header(), "api-usage=2/2");
        let r = api.admit(false).expect_err("exhausted");
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert_eq!(r.body[0]["errorCode"], "REQUEST_LIMIT_EXCEEDED");
        api.admit(true).expect("limits still answers");
        assert_eq!(api.used, 2);
        assert_eq!(api.limits_body()["DailyApiRequests"]["Remaining"], 0);
    }
}
