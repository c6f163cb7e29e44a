//! PLACEHOLDER until the rest-client branch merges: the types the sink plans against.
#![allow(missing_docs, dead_code)]
use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq)]
pub enum SubRequest {
    Query { soql: String },
    Create { records: Vec<Map<String, Value>> },
    Update { records: Vec<Map<String, Value>> },
    Upsert { object: String, external_id_field: String, records: Vec<Map<String, Value>> },
    Delete { ids: Vec<String> },
}
#[derive(Debug, Clone, PartialEq)]
pub enum SubResponse {
    Query { records: Vec<Map<String, Value>> },
    Saved(Vec<SaveResult>),
    Failed { http_status: u16, errors: Vec<ApiError> },
}
#[derive(Debug, Clone, PartialEq)]
pub struct SaveResult { pub id: Option<String>, pub success: bool, pub created: Option<bool>, pub errors: Vec<ApiError> }
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError { pub code: String, pub message: String, pub fields: Vec<String> }
