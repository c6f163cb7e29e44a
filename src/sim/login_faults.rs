//! The token endpoint's faults: what `POST /services/oauth2/token` answers instead of a token
//! while a fault is queued ([`LoginFault`]), and the count of logins served.
//!
//! Contract: [`LoginFaults::next`] takes the next queued fault (then the endpoint answers with
//! [`LoginFault::response`], whatever the credentials); none queued, the endpoint answers as
//! usual and counts each token it issues ([`LoginFaults::served`]).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::util::lock;

/// How `POST /services/oauth2/token` fails when a fault is queued: the answers clients of real
/// orgs have met, none of which says anything about the credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoginFault {
    /// HTTP 503 with Salesforce's "down for maintenance" HTML page, as a login met it during
    /// maintenance (forcedotcom/EMP-Connector#84 shows the page; BookingBug/restforcephp#22 the
    /// 503s of `/services/oauth2/token` on login.salesforce.com and test.salesforce.com).
    Maintenance,
    /// HTTP 500 with Salesforce's own OAuth error `unknown_error` / `retry your request`
    /// (amazon-connect/amazon-connect-salesforce-lambda#43,
    /// wadewegner/Force.com-Toolkit-for-NET#203).
    UnknownError,
    /// HTTP 200 whose body is the maintenance HTML page, not a token (what the client of
    /// forcedotcom/EMP-Connector#84 received instead of a login answer).
    #[serde(rename = "html_200")]
    Html200,
}

/// The maintenance page, in the shape of the one in forcedotcom/EMP-Connector#84 (an HTML 4
/// table page with the notice), in our own words.
const MAINTENANCE_PAGE: &str = "<!DOCTYPE HTML PUBLIC \"-//W3C//DTD HTML 4.01 Transitional//EN\">\n<html><head><title>Maintenance</title></head><body><center><table><tr><td><span style=\"font-weight: bold;\">We are down for maintenance.</span><br><br>Please come back shortly.</td></tr></table></center></body></html>\n";

impl LoginFault {
    /// The answer of the token endpoint under this fault.
    pub(crate) fn response(self) -> Response {
        let html = |status| {
            (
                status,
                [(header::CONTENT_TYPE, "text/html; charset=UTF-8")],
                MAINTENANCE_PAGE,
            )
                .into_response()
        };
        match self {
            LoginFault::Maintenance => html(StatusCode::SERVICE_UNAVAILABLE),
            LoginFault::Html200 => html(StatusCode::OK),
            LoginFault::UnknownError => (
                StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(serde_json::json!({
                    "error": "unknown_error",
                    "error_description": "retry your request",
                })),
            )
                .into_response(),
        }
    }
}

/// The token endpoint's queued faults and the logins it served.
#[derive(Debug, Default)]
pub(crate) struct LoginFaults {
    queue: Mutex<VecDeque<LoginFault>>,
    served: AtomicU64,
}

impl LoginFaults {
    /// Queues `n` answers of `fault` after those queued before.
    pub(crate) fn queue(&self, n: usize, fault: LoginFault) {
        lock(&self.queue).extend(std::iter::repeat_n(fault, n));
    }

    /// The next queued fault, taken; `None`: the endpoint answers normally.
    pub(crate) fn next(&self) -> Option<LoginFault> {
        lock(&self.queue).pop_front()
    }

    /// Drops every queued fault: the endpoint answers normally again.
    pub(crate) fn clear(&self) {
        lock(&self.queue).clear();
    }

    /// Faults still queued.
    pub(crate) fn pending(&self) -> usize {
        lock(&self.queue).len()
    }

    /// Counts a login answered with a token.
    pub(crate) fn served(&self) {
        self.served.fetch_add(1, Ordering::Relaxed);
    }

    /// Logins answered with a token so far.
    pub(crate) fn served_count(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }
}
