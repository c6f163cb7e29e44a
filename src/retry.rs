//! What to do after an error: the one vocabulary ([`Directive`]), the classifiers that decide it,
//! and the backoff used between attempts.
//!
//! Contract: every error forcebridge acts on maps to a [`Directive`] here or through a
//! `directive()` of its own error type, and the code that acts on it matches on the directive, not
//! on the error. [`classify_status`] maps a Pub/Sub gRPC status (Salesforce's `error-code` trailer
//! first, the gRPC code second); [`classify_http`] maps a failed REST call (HTTP status +
//! Salesforce `errorCode`); [`classify_login`] maps a failed login (OAuth token endpoint,
//! userinfo); [`classify_record_error`] maps one record's save error (sObject Collections
//! `statusCode`). [`Backoff`] is capped exponential backoff with full jitter;
//! [`sleep_or_cancel`] is a sleep that shutdown interrupts.

use std::time::Duration;

use rand::Rng;
use tokio_util::sync::CancellationToken;
use tonic::Code;

/// The Salesforce error-code trailer prefix.
pub const ERROR_CODE_PREFIX: &str = "sfdc.platform.eventbus.grpc.";

/// What to do after an error: the project's one vocabulary for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Directive {
    /// Transient: the same call again after a backoff (a stream resumes from its last position).
    Retry,
    /// The session is no longer accepted: log in again, then retry.
    Reauthenticate,
    /// The org's API allowance is spent (`REQUEST_LIMIT_EXCEEDED`): wait until `/limits` shows
    /// an allowance again, then retry.
    WaitForLimit,
    /// The replay id was rejected (outside retention or corrupt): apply
    /// `source.replay_rejected`.
    ReplayRejected,
    /// The unit of work (a source channel's attempt, the sink's consumer) starts over from its
    /// durable position (checkpoint, committed offsets) after a backoff.
    Restart,
    /// This record alone cannot be processed: it goes to the dead-letter topic with the reason,
    /// and the stream goes on.
    DeadLetter,
    /// Retrying cannot help (bad topic, permissions, refused credentials, bad request): stop with
    /// the error.
    Stop,
}

/// The Salesforce error code carried in the `error-code` trailer, if any.
pub fn error_code(status: &tonic::Status) -> Option<&str> {
    status.metadata().get("error-code")?.to_str().ok()
}

/// Classifies a Pub/Sub RPC failure.
pub fn classify_status(status: &tonic::Status) -> Directive {
    if let Some(code) = error_code(status) {
        let code = code.strip_prefix(ERROR_CODE_PREFIX).unwrap_or(code);
        match code {
            "subscription.fetch.replayid.corrupted"
            | "subscription.fetch.replayid.validation.failed" => {
                return Directive::ReplayRejected;
            }
            "service.auth.error" | "service.auth.refresh.invalid" => {
                return Directive::Reauthenticate;
            }
            "service.unavailable"
            | "service.protection.triggered"
            | "service.protection.stream.limit.triggered"
            | "subscription.internal.error"
            | "topic.api.unavailable"
            | "schema.api.unavailable"
            | "concurrent.client.limit.exceeded" => return Directive::Retry,
            "topic.not.found"
            | "topic.meta.permission"
            | "subscription.topic.cannot.subscribe"
            | "subscription.limit.exceeded"
            | "subscription.fetch.requested.events.invalid"
            | "subscription.fetch.topic.mismatch"
            | "service.auth.headers.invalid"
            | "service.tenant.license" => return Directive::Stop,
            _ => {}
        }
    }
    match status.code() {
        Code::Unauthenticated => Directive::Reauthenticate,
        Code::Unavailable
        | Code::Internal
        | Code::Unknown
        | Code::Aborted
        | Code::Cancelled
        | Code::DeadlineExceeded
        | Code::ResourceExhausted => Directive::Retry,
        Code::Ok
        | Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::PermissionDenied
        | Code::FailedPrecondition
        | Code::OutOfRange
        | Code::Unimplemented
        | Code::DataLoss => Directive::Stop,
    }
}

pub(crate) use crate::salesforce::rest::UNREADABLE_RESPONSE;

/// Attempts of one REST call answered with a 4xx that is not Salesforce's error shape before the
/// call fails (as a protocol failure: the batch is repeated later, its records not condemned).
pub const MAX_UNREADABLE_ATTEMPTS: u32 = 4;

/// The Salesforce error code of API quota exhaustion.
pub const REQUEST_LIMIT_EXCEEDED: &str = "REQUEST_LIMIT_EXCEEDED";

/// Classifies a REST call that answered `status` (not 2xx), with the first Salesforce
/// `errorCode` of its error array when there is one.
///
/// * 401 (any code; Salesforce sends `INVALID_SESSION_ID`) → [`Directive::Reauthenticate`].
/// * 403 `REQUEST_LIMIT_EXCEEDED` → [`Directive::WaitForLimit`]; any other 403 is a
///   permission problem → [`Directive::Stop`].
/// * 408, 429 (too many requests), and every 5xx (503: overloaded or maintenance) →
///   [`Directive::Retry`]. Salesforce documents no `Retry-After`; the caller backs off.
/// * Any other code with `REQUEST_LIMIT_EXCEEDED` (seen on 503 by some clients) →
///   [`Directive::WaitForLimit`].
/// * A 4xx whose body is not Salesforce's JSON error shape (`error_code` is
///   [`UNREADABLE_RESPONSE`]: an HTML page, an empty or non-JSON body, typically from a proxy or
///   a load balancer in front of the org) → [`Directive::Retry`]: it is no verdict on the
///   request, since Salesforce itself answers a refused call with its JSON error array (REST API
///   Developer Guide, "Status Codes and Error Responses"). Not for 413, 414 and 431 (the
///   request, URL or headers too large), which are verdicts on the request whoever sends them.
///   The caller caps these retries ([`MAX_UNREADABLE_ATTEMPTS`]) and then fails the call
///   without condemning its content.
/// * Everything else (400, 404, 405, 409, 410, 412, 415, 300, …) → [`Directive::Stop`]: the call
///   as a whole is refused (what that means for its records is the caller's to say).
pub fn classify_http(status: u16, error_code: Option<&str>) -> Directive {
    if status == 401 {
        return Directive::Reauthenticate;
    }
    if error_code == Some(REQUEST_LIMIT_EXCEEDED) {
        return Directive::WaitForLimit;
    }
    if error_code == Some(UNREADABLE_RESPONSE)
        && (400..500).contains(&status)
        && !matches!(status, 413 | 414 | 431)
    {
        return Directive::Retry;
    }
    match status {
        408 | 429 | 500..=599 => Directive::Retry,
        _ => Directive::Stop,
    }
}

/// OAuth `error` codes after which Salesforce asks for the same request again.
///
/// * `unknown_error` (`error_description: retry your request`): Salesforce's own answer when its
///   login service fails; seen from `/services/oauth2/token` by users
///   (amazon-connect/amazon-connect-salesforce-lambda#43, "unknown_error: retry your request").
/// * `rate_limit_exceeded`: too many logins in a short time (Salesforce Help, "OAuth 2.0
///   Authorization Errors"); a later login succeeds.
/// * `server_error`, `temporarily_unavailable`: RFC 6749 §4.1.2.1's codes for a server that
///   cannot answer now.
const TRANSIENT_OAUTH_ERRORS: [&str; 4] = [
    "unknown_error",
    "rate_limit_exceeded",
    "server_error",
    "temporarily_unavailable",
];

/// Classifies a failed login (`/services/oauth2/token`, `/services/oauth2/userinfo`): the one
/// place that decides whether the process waits for Salesforce or stops.
///
/// `status` is the HTTP status of the answer (`None`: no answer: connection refused or reset,
/// DNS, timeout, a body cut short); `oauth_error` the `error` of Salesforce's JSON error body
/// (`{"error": …, "error_description": …}`, Salesforce Help "OAuth 2.0 Authorization Errors"),
/// `None` when the answer is not that shape (an HTML maintenance or proxy page, a 200 that is
/// not a token, an empty or truncated body).
///
/// * No answer → [`Directive::Retry`].
/// * A Salesforce error whose code asks for a retry (`unknown_error`, `rate_limit_exceeded`,
///   `server_error`, `temporarily_unavailable`), or any Salesforce error with status 408, 429 or
///   5xx → [`Directive::Retry`].
/// * Any other Salesforce error (`invalid_client`, `invalid_client_id`, `invalid_grant`,
///   `unsupported_grant_type`, `invalid_request`, `inactive_user`, `inactive_org`, …: the
///   configuration or the credentials) → [`Directive::Stop`].
/// * An answer that is not Salesforce's: 401 and 403 (a refused access token at userinfo) →
///   [`Directive::Stop`]; anything else (a 503 "down for maintenance" page, a 500, a 200 with
///   HTML from a proxy) → [`Directive::Retry`]: it says nothing about the credentials.
pub fn classify_login(status: Option<u16>, oauth_error: Option<&str>) -> Directive {
    let Some(status) = status else {
        return Directive::Retry;
    };
    let server_side = matches!(status, 408 | 429 | 500..=599);
    let transient = match oauth_error {
        Some(code) => server_side || TRANSIENT_OAUTH_ERRORS.contains(&code),
        None => !matches!(status, 401 | 403),
    };
    if transient {
        Directive::Retry
    } else {
        Directive::Stop
    }
}

/// Whether a whole REST call refused with `status` (after the client's own retries) is a
/// verdict on what it carried (its records' content or its size), so that splitting it finds the
/// record at fault. 400: "The request couldn't be understood, usually because the JSON or XML
/// body contains an error"; 413, 414 and 431 (from Salesforce's front end or a proxy): the
/// request, its URL or its headers are too large (REST API Developer Guide, "Status Codes and
/// Error Responses"; RFC 9110 §15.5). 401 is the client's re-login, 403 permissions or the
/// allowance, 404 the API version or resource, 408 and 429 are retried by the client: none of
/// them says anything about the records.
pub fn refuses_content(status: u16) -> bool {
    (400..500).contains(&status) && !matches!(status, 401 | 403 | 404 | 408 | 429)
}

/// What to do with one record after its save error (the `statusCode` of an sObject Collections
/// result, or the `errorCode` of a failed subrequest): [`Directive::Retry`] when the same record
/// can succeed when sent again unchanged, else [`Directive::DeadLetter`].
///
/// Retryable, with the reason:
/// * `UNABLE_TO_LOCK_ROW`: another transaction held the row (or a parent/sharing row) for longer
///   than Salesforce waits (10 s); contention passes.
/// * `SERVER_UNAVAILABLE`, `SERVICE_UNAVAILABLE`: the instance was briefly unavailable.
/// * `REQUEST_LIMIT_EXCEEDED`: a quota, not the record; the limit guard waits it out.
/// * `QUERY_TIMEOUT`: a query inside the save (trigger, sharing) timed out under load.
/// * `ALL_OR_NONE_OPERATION_ROLLED_BACK`, `PROCESSING_HALTED`: this record was not written (or was
///   rolled back) only because another record or subrequest failed; it is fine on its own.
/// * `UNKNOWN_EXCEPTION`: Salesforce's "An unexpected error occurred": most often an internal
///   hiccup that a second attempt gets past, but it can also be deterministic (some trigger or
///   platform bugs). Counted as retryable so a transient fault is not dead-lettered; callers must
///   cap the attempts per record (then dead-letter) so a deterministic one does not block them.
///
/// Everything else is a property of the record or the org (validation rules, required fields,
/// duplicates, deleted or missing records, field permissions, `CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY`
/// wrapping a trigger error, …): sending it again gives the same answer, so it is dead-lettered.
pub fn classify_record_error(code: &str) -> Directive {
    let retryable = matches!(
        code,
        "UNABLE_TO_LOCK_ROW"
            | "SERVER_UNAVAILABLE"
            | "SERVICE_UNAVAILABLE"
            | "REQUEST_LIMIT_EXCEEDED"
            | "QUERY_TIMEOUT"
            | "ALL_OR_NONE_OPERATION_ROLLED_BACK"
            | "PROCESSING_HALTED"
            | "UNKNOWN_EXCEPTION"
    );
    if retryable {
        Directive::Retry
    } else {
        Directive::DeadLetter
    }
}

/// What a Bulk API 2.0 query job that ended in `state` (`Failed`, `Aborted`) with
/// `error_message` asks for; the REST client never repeats a job itself (a new job costs one of
/// the org's daily jobs), the snapshot or resync that created it acts on this.
///
/// * `Aborted` → [`Directive::Stop`]: the job's creator or a user with "Manage Data
///   Integrations" cancelled it (Bulk API 2.0 Developer Guide, "Job States"); starting it again
///   would overrule them.
/// * `Failed` whose message names a verdict on the query itself → [`Directive::Stop`]: the same
///   SOQL fails the same way. Salesforce's message carries the SOQL error code after
///   `InvalidBatch : Failed to process query:` (a capture: ForceCLI/force#531, `INVALID_FIELD`,
///   `FUNCTIONALITY_NOT_ENABLED: Selecting compound data not supported in Bulk Query`).
/// * Any other `Failed` (a query timeout, an internal error) → [`Directive::Restart`]: a new
///   job after a backoff.
pub fn classify_query_job(state: &str, error_message: Option<&str>) -> Directive {
    const VERDICTS: [&str; 7] = [
        "INVALID_FIELD",
        "MALFORMED_QUERY",
        "INVALID_TYPE",
        "FUNCTIONALITY_NOT_ENABLED",
        "INVALID_QUERY_FILTER_OPERATOR",
        "INSUFFICIENT_ACCESS",
        "INVALID_OPERATION",
    ];
    match state {
        "Failed" if error_message.is_some_and(|m| VERDICTS.iter().any(|v| m.contains(v))) => {
            Directive::Stop
        }
        "Failed" => Directive::Restart,
        _ => Directive::Stop,
    }
}

/// Capped exponential backoff with full jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// Starts at `base`, doubling up to `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max,
            attempt: 0,
        }
    }

    /// The delay before the next attempt: uniform in `[0, min(max, base·2^attempt)]`.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let millis = ceiling.as_millis() as u64;
        Duration::from_millis(rand::rng().random_range(0..=millis))
    }

    /// Attempts made since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// After a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Sleeps for `delay` unless `cancel` fires first; returns `false` when cancelled.
pub async fn sleep_or_cancel(delay: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        _ = cancel.cancelled() => false,
        _ = tokio::time::sleep(delay) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataValue;

    fn status(code: Code, trailer: Option<&str>) -> tonic::Status {
        let mut status = tonic::Status::new(code, "boom");
        if let Some(t) = trailer {
            status
                .metadata_mut()
                .insert("error-code", MetadataValue::try_from(t).unwrap());
        }
        status
    }

    #[test]
    fn trailer_wins_over_grpc_code() {
        let corrupted = status(
            Code::InvalidArgument,
            Some("sfdc.platform.eventbus.grpc.subscription.fetch.replayid.corrupted"),
        );
        assert_eq!(classify_status(&corrupted), Directive::ReplayRejected);
        let unavailable = status(
            Code::Internal,
            Some("sfdc.platform.eventbus.grpc.service.unavailable"),
        );
        assert_eq!(classify_status(&unavailable), Directive::Retry);
        let auth = status(
            Code::PermissionDenied,
            Some("sfdc.platform.eventbus.grpc.service.auth.error"),
        );
        assert_eq!(classify_status(&auth), Directive::Reauthenticate);
        let missing = status(
            Code::NotFound,
            Some("sfdc.platform.eventbus.grpc.topic.not.found"),
        );
        assert_eq!(classify_status(&missing), Directive::Stop);
    }

    #[test]
    fn grpc_code_when_no_trailer() {
        assert_eq!(
            classify_status(&status(Code::Unavailable, None)),
            Directive::Retry
        );
        assert_eq!(
            classify_status(&status(Code::Unauthenticated, None)),
            Directive::Reauthenticate
        );
        assert_eq!(
            classify_status(&status(Code::NotFound, None)),
            Directive::Stop
        );
    }

    #[test]
    fn a_4xx_that_is_not_salesforces_error_shape_is_retried() {
        // A proxy's HTML 400 is no verdict on the request; Salesforce's own 400 is.
        assert_eq!(
            classify_http(400, Some(UNREADABLE_RESPONSE)),
            Directive::Retry
        );
        assert_eq!(
            classify_http(400, Some("JSON_PARSER_ERROR")),
            Directive::Stop
        );
        // Too large is a verdict whoever says it: the caller splits the request.
        for status in [413, 414, 431] {
            assert_eq!(
                classify_http(status, Some(UNREADABLE_RESPONSE)),
                Directive::Stop
            );
        }
    }

    #[test]
    fn failed_query_jobs_restart_unless_the_query_is_at_fault() {
        // ForceCLI/force#531: the message of a job failed on its SOQL.
        let invalid = "InvalidBatch : Failed to process query: INVALID_FIELD: SELECT Id, BadField FROM Account";
        assert_eq!(classify_query_job("Failed", Some(invalid)), Directive::Stop);
        assert_eq!(
            classify_query_job("Failed", Some("Query timed out")),
            Directive::Restart
        );
        assert_eq!(classify_query_job("Failed", None), Directive::Restart);
        assert_eq!(classify_query_job("Aborted", None), Directive::Stop);
    }

    #[test]
    fn http_statuses_are_classified() {
        assert_eq!(
            classify_http(401, Some("INVALID_SESSION_ID")),
            Directive::Reauthenticate
        );
        assert_eq!(classify_http(401, None), Directive::Reauthenticate);
        assert_eq!(
            classify_http(403, Some("REQUEST_LIMIT_EXCEEDED")),
            Directive::WaitForLimit
        );
        assert_eq!(
            classify_http(403, Some("INSUFFICIENT_ACCESS")),
            Directive::Stop
        );
        assert_eq!(classify_http(403, None), Directive::Stop);
        for status in [408, 429, 500, 502, 503, 504] {
            assert_eq!(classify_http(status, None), Directive::Retry, "{status}");
        }
        assert_eq!(
            classify_http(503, Some("SERVER_UNAVAILABLE")),
            Directive::Retry
        );
        for status in [300, 400, 404, 405, 409, 410, 412, 415] {
            assert_eq!(
                classify_http(status, Some("MALFORMED_QUERY")),
                Directive::Stop,
                "{status}"
            );
        }
    }

    #[test]
    fn logins_are_classified() {
        // No answer, proxies' and maintenance pages, server errors: wait for Salesforce.
        assert_eq!(classify_login(None, None), Directive::Retry);
        for status in [200, 400, 404, 500, 502, 503, 504] {
            assert_eq!(
                classify_login(Some(status), None),
                Directive::Retry,
                "{status}"
            );
        }
        assert_eq!(
            classify_login(Some(400), Some("unknown_error")),
            Directive::Retry
        );
        assert_eq!(
            classify_login(Some(400), Some("rate_limit_exceeded")),
            Directive::Retry
        );
        assert_eq!(
            classify_login(Some(503), Some("invalid_grant")),
            Directive::Retry
        );
        // The configuration or the credentials: stop.
        for code in [
            "invalid_client",
            "invalid_client_id",
            "invalid_grant",
            "unsupported_grant_type",
            "invalid_request",
            "inactive_user",
            "inactive_org",
        ] {
            assert_eq!(
                classify_login(Some(400), Some(code)),
                Directive::Stop,
                "{code}"
            );
        }
        assert_eq!(classify_login(Some(401), None), Directive::Stop);
        assert_eq!(classify_login(Some(403), None), Directive::Stop);
    }

    #[test]
    fn record_errors_are_classified() {
        for code in [
            "UNABLE_TO_LOCK_ROW",
            "SERVER_UNAVAILABLE",
            "REQUEST_LIMIT_EXCEEDED",
            "QUERY_TIMEOUT",
            "ALL_OR_NONE_OPERATION_ROLLED_BACK",
            "PROCESSING_HALTED",
            "UNKNOWN_EXCEPTION",
        ] {
            assert_eq!(classify_record_error(code), Directive::Retry, "{code}");
        }
        for code in [
            "REQUIRED_FIELD_MISSING",
            "FIELD_CUSTOM_VALIDATION_EXCEPTION",
            "DUPLICATE_VALUE",
            "ENTITY_IS_DELETED",
            "INVALID_CROSS_REFERENCE_KEY",
            "CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY",
            "unable_to_lock_row",
            "",
        ] {
            assert_eq!(classify_record_error(code), Directive::DeadLetter, "{code}");
        }
    }

    #[test]
    fn backoff_is_capped_and_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        for _ in 0..20 {
            assert!(backoff.next_delay() <= Duration::from_secs(2));
        }
        assert_eq!(backoff.attempts(), 20);
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }
}
