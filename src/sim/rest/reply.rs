//! What a REST (sub)request answers: [`Reply`] (status, JSON body, headers), Salesforce's error
//! arrays `[{"message", "errorCode", "fields"}]`, and the per-record errors of collections
//! ([`RecordError`], `{"statusCode", "message", "fields"}`) with the code Salesforce reports for
//! each [`SimError`] of a record write.

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::sim::error::SimError;

/// The reply to one (sub)request.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub status: StatusCode,
    pub body: Option<Value>,
    pub headers: Vec<(&'static str, String)>,
    /// A body that is not JSON (a Bulk API job's CSV), sent instead of `body`.
    pub raw: Option<bytes::Bytes>,
}

impl Reply {
    pub fn json(status: StatusCode, body: Value) -> Self {
        Self {
            status,
            body: Some(body),
            headers: Vec::new(),
            raw: None,
        }
    }

    /// A body of another content type (`text/csv`).
    pub fn raw(status: StatusCode, content_type: &str, body: Vec<u8>) -> Self {
        Self {
            status,
            body: None,
            headers: vec![("content-type", format!("{content_type}; charset=UTF-8"))],
            raw: Some(body.into()),
        }
    }

    pub fn no_content() -> Self {
        Self {
            status: StatusCode::NO_CONTENT,
            body: None,
            headers: Vec::new(),
            raw: None,
        }
    }

    /// A Salesforce error array with one entry.
    pub fn error(status: StatusCode, code: &str, message: &str, fields: &[&str]) -> Self {
        Self::json(
            status,
            json!([{ "message": message, "errorCode": code, "fields": fields }]),
        )
    }

    pub fn not_found() -> Self {
        Self::error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "The requested resource does not exist",
            &[],
        )
    }

    pub fn json_parser_error(message: &str) -> Self {
        Self::error(StatusCode::BAD_REQUEST, "JSON_PARSER_ERROR", message, &[])
    }

    pub(super) fn method_not_allowed(method: &Method, allowed: &str) -> Self {
        Self::error(
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
            &format!("HTTP Method '{method}' not allowed. Allowed are {allowed}"),
            &[],
        )
    }

    /// True for an HTTP error or a collection result with a failed record.
    pub fn failed(&self) -> bool {
        self.status.as_u16() >= 400
            || self
                .body
                .as_ref()
                .and_then(Value::as_array)
                .is_some_and(|items| {
                    items
                        .iter()
                        .any(|i| i.get("success") == Some(&Value::Bool(false)))
                })
    }
}

/// A per-record error of a collection: `{"statusCode", "message", "fields"}`.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct RecordError {
    pub code: &'static str,
    pub message: String,
    pub fields: Vec<String>,
}

impl RecordError {
    pub fn new(code: &'static str, message: impl Into<String>, fields: &[&str]) -> Self {
        Self {
            code,
            message: message.into(),
            fields: fields.iter().map(|f| (*f).to_owned()).collect(),
        }
    }

    pub fn to_json(&self) -> Value {
        json!({"statusCode": self.code, "message": self.message, "fields": self.fields})
    }

    /// The error Salesforce reports for a failed record write.
    pub fn of(e: &SimError) -> Self {
        let msg = e.to_string();
        match e {
            SimError::UnknownField { object, field } => Self::new(
                "INVALID_FIELD",
                format!("No such column '{field}' on sobject of type {object}"),
                &[field],
            ),
            SimError::ReadOnlyField { field, .. } if field == "Id" => Self::new(
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                "cannot specify Id in an insert call",
                &["Id"],
            ),
            SimError::ReadOnlyField { field, .. } => Self::new(
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                format!(
                    "Unable to create/update fields: {field}. Please check the security settings of this field and verify that it is read/write for your profile or permission set."
                ),
                &[field],
            ),
            SimError::InvalidValue { field, reason, .. } => Self::new(
                "JSON_PARSER_ERROR",
                format!("Cannot deserialize value for field {field}: {reason}"),
                &[field],
            ),
            SimError::RequiredFieldMissing { fields, .. } => Self {
                code: "REQUIRED_FIELD_MISSING",
                message: msg,
                fields: fields.clone(),
            },
            SimError::DuplicateValue { .. } => Self::new("DUPLICATE_VALUE", msg, &[]),
            SimError::ValidationFailed { field, .. } => {
                Self::new("FIELD_CUSTOM_VALIDATION_EXCEPTION", msg, &[field])
            }
            SimError::UnableToLockRow(_) => Self::new("UNABLE_TO_LOCK_ROW", msg, &[]),
            SimError::EntityIsDeleted(_) => {
                Self::new("ENTITY_IS_DELETED", "entity is deleted", &[])
            }
            SimError::RecordNotFound { .. } => Self::new(
                "INVALID_CROSS_REFERENCE_KEY",
                "invalid cross reference id",
                &[],
            ),
            SimError::MalformedId { .. } => Self::new("MALFORMED_ID", msg, &["Id"]),
            SimError::NotExternalId { object, field } => Self::new(
                "INVALID_FIELD",
                format!(
                    "Field name provided, {field} is not an External ID or indexed field for {object}"
                ),
                &[field],
            ),
            SimError::UnknownObject(object) => Self::new(
                "INVALID_TYPE",
                format!("sObject type '{object}' is not supported."),
                &[],
            ),
            _ => Self::new("UNKNOWN_EXCEPTION", msg, &[]),
        }
    }

    /// The same error as a single-row resource answers it.
    pub(super) fn reply(&self, not_found: StatusCode) -> Reply {
        let status = match self.code {
            "INVALID_CROSS_REFERENCE_KEY" | "MALFORMED_ID" | "ENTITY_IS_DELETED" => not_found,
            "UNKNOWN_EXCEPTION" => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        Reply::json(
            status,
            json!([{ "message": self.message, "errorCode": self.code, "fields": self.fields }]),
        )
    }
}

/// A single-row error: a missing or malformed record is 404 `NOT_FOUND`, a deleted one 404
/// `ENTITY_IS_DELETED`, the rest 400 with the record error's code.
pub(super) fn row_error(e: &SimError) -> Reply {
    match e {
        SimError::RecordNotFound { .. } | SimError::UnknownObject(_) => Reply::not_found(),
        SimError::MalformedId { id, .. } => Reply::error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            &format!("Provided external ID field does not exist or is not accessible: {id}"),
            &[],
        ),
        other => RecordError::of(other).reply(StatusCode::NOT_FOUND),
    }
}
