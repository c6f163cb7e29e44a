//! Retry policy: the one place where errors are classified into what to do next, and the backoff
//! used between attempts.
//!
//! Contract: [`classify_status`] maps a Pub/Sub gRPC status (Salesforce's `error-code` trailer
//! first, the gRPC code second) to a [`Directive`]. [`Backoff`] is capped exponential backoff with
//! full jitter; [`sleep_or_cancel`] is a sleep that shutdown interrupts.

use std::time::Duration;

use rand::Rng;
use tokio_util::sync::CancellationToken;
use tonic::Code;

/// The Salesforce error-code trailer prefix.
pub const ERROR_CODE_PREFIX: &str = "sfdc.platform.eventbus.grpc.";

/// What to do after an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Directive {
    /// Transient: open a new call after a backoff, resuming from the last position.
    Retry,
    /// The token is no longer accepted: log in again, then retry.
    Reauthenticate,
    /// The replay id was rejected (outside retention or corrupt): apply the replay policy.
    ReplayRejected,
    /// Retrying cannot help (bad topic, permissions, bad request): stop with the error.
    Fatal,
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
            | "service.tenant.license" => return Directive::Fatal,
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
        | Code::DataLoss => Directive::Fatal,
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
        assert_eq!(classify_status(&missing), Directive::Fatal);
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
            Directive::Fatal
        );
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

/// PLACEHOLDER (rest-client branch).
pub fn record_error_is_retryable(code: &str) -> bool {
    matches!(code, "UNABLE_TO_LOCK_ROW")
}
