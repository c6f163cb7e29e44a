//! What a failed REST call says: [`RestError`] (the client's failures) and [`ApiError`] (one
//! Salesforce error), read from Salesforce's error shapes.
//!
//! Contract: [`errors_from_value`] and [`errors_from_bytes`] never fail. They read an error array
//! as documented (`errorCode` in REST error arrays, `statusCode` in sObject Collections
//! per-record errors, with `message` and `fields`); an object that looks like one error is taken
//! as that error; anything else becomes one [`UNREADABLE_RESPONSE`] error quoting the body (at
//! most 500 characters, [`truncate`]).

use std::fmt;

use serde_json::Value;

use crate::salesforce::auth::AuthError;

/// The code of an [`ApiError`] that forcebridge made up because Salesforce's answer for a
/// subrequest (or a failed call) could not be read as documented. The outcome of the writes it
/// covers is unknown.
pub(crate) const UNREADABLE_RESPONSE: &str = "FORCEBRIDGE_UNREADABLE_RESPONSE";

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
    pub(super) fn unreadable(message: impl Into<String>) -> Self {
        ApiError {
            code: UNREADABLE_RESPONSE.to_owned(),
            message: message.into(),
            fields: Vec::new(),
        }
    }

    /// The error a whole refused call gives each record it carried: Salesforce's first error,
    /// or, when the answer was not Salesforce's error shape (a proxy's page), `HTTP_<status>`
    /// quoting it.
    pub(crate) fn of_refused_call(status: u16, errors: Vec<ApiError>) -> Self {
        match errors.into_iter().next() {
            Some(e) if e.code != UNREADABLE_RESPONSE => e,
            other => ApiError {
                code: format!("HTTP_{status}"),
                message: match other {
                    Some(e) => format!("the request was refused with HTTP {status}: {}", e.message),
                    None => format!("the request was refused with HTTP {status}"),
                },
                fields: Vec::new(),
            },
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

pub(super) fn summarize(errors: &[ApiError]) -> String {
    match errors {
        [] => "no error details".to_owned(),
        [one] => one.to_string(),
        [first, rest @ ..] => format!("{first} (and {} more)", rest.len()),
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
    /// A Bulk API 2.0 job ended `Failed` or `Aborted` (Bulk API 2.0 Developer Guide, "Job
    /// States"; "Get Information About a Query Job": `errorMessage`). Not retried by the client:
    /// what to do is [`crate::retry::classify_query_job`]'s verdict, the caller's to act on.
    #[error(
        "Bulk API 2.0 job {id} ended {state}: {}",
        message.as_deref().unwrap_or("no errorMessage")
    )]
    JobFailed {
        id: String,
        /// `Failed` or `Aborted`, as Salesforce spells it.
        state: String,
        /// The job's `errorMessage`, when it has one.
        message: Option<String>,
    },
    /// Shutdown interrupted a wait or a backoff.
    #[error("cancelled")]
    Cancelled,
}

impl RestError {
    /// Salesforce answered 404 `NOT_FOUND`: the resource (an object's describe, a record) does
    /// not exist for this user (REST API Developer Guide, "Status Codes and Error Responses":
    /// 404, "The requested resource couldn't be found").
    pub fn is_not_found(&self) -> bool {
        matches!(self, RestError::Rejected { status: 404, errors }
            if errors.is_empty() || errors.iter().any(|e| e.code == "NOT_FOUND"))
    }
}

/// Salesforce errors from a failed call's or subrequest's body: an error array as documented;
/// an object that looks like one error is taken as that error; anything else becomes one
/// [`UNREADABLE_RESPONSE`] error quoting the body.
pub(super) fn errors_from_value(body: &Value) -> Vec<ApiError> {
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

pub(super) fn errors_from_bytes(body: &[u8]) -> Vec<ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(value) => errors_from_value(&value),
        Err(_) => vec![ApiError::unreadable(truncate(&String::from_utf8_lossy(
            body,
        )))],
    }
}

pub(super) fn truncate(text: &str) -> String {
    const MAX: usize = 500;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}
