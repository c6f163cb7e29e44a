//! PLACEHOLDER until the rest-client branch merges: the types the sink plans against.
#![allow(missing_docs, dead_code)]
use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq)]
pub enum SubRequest {
    Query {
        soql: String,
    },
    Create {
        records: Vec<Map<String, Value>>,
    },
    Update {
        records: Vec<Map<String, Value>>,
    },
    Upsert {
        object: String,
        external_id_field: String,
        records: Vec<Map<String, Value>>,
    },
    Delete {
        ids: Vec<String>,
    },
}
#[derive(Debug, Clone, PartialEq)]
pub enum SubResponse {
    Query {
        records: Vec<Map<String, Value>>,
    },
    Saved(Vec<SaveResult>),
    Failed {
        http_status: u16,
        errors: Vec<ApiError>,
    },
}
#[derive(Debug, Clone, PartialEq)]
pub struct SaveResult {
    pub id: Option<String>,
    pub success: bool,
    pub created: Option<bool>,
    pub errors: Vec<ApiError>,
}
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: String,
    pub message: String,
    pub fields: Vec<String>,
}
#[derive(Debug, thiserror::Error)]
pub enum RestError {
    #[error("auth")]
    Auth(#[from] crate::auth::AuthError),
    #[error("invalid {0}")]
    Invalid(String),
    #[error("rejected")]
    Rejected { status: u16, errors: Vec<ApiError> },
    #[error("protocol {0}")]
    Protocol(String),
    #[error("cancelled")]
    Cancelled,
}
pub enum Reserve {
    Calls(u64),
    Percent(f64),
}
#[derive(Clone)]
pub struct LimitGuard;
impl LimitGuard {
    pub fn new(_r: Reserve, _p: std::time::Duration) -> Self {
        unimplemented!()
    }
}
#[derive(Clone)]
pub struct RestClient;
impl RestClient {
    pub fn new(
        _h: reqwest::Client,
        _a: crate::auth::Authenticator,
        _s: crate::auth::SessionHandle,
        _v: String,
        _t: String,
        _g: LimitGuard,
    ) -> Self {
        unimplemented!()
    }
    pub async fn composite(
        &self,
        _s: &[SubRequest],
        _c: &tokio_util::sync::CancellationToken,
    ) -> Result<Vec<SubResponse>, RestError> {
        unimplemented!()
    }
}
