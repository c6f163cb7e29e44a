//! The org's REST API under `/services/data/v{ver}/`: sObject rows, rows by External Id, SOQL
//! query and limits here; sObject Collections in `collections`, Composite in `composite`.
//!
//! Contract:
//! * Bearer (or `OAuth`) token auth: 401 `INVALID_SESSION_ID` otherwise. Then the call passes the
//!   gate of `limits` (injected faults, daily allocation: counted once per top-level call) and
//!   any configured latency; every authenticated response carries `Sforce-Limit-Info`.
//! * Changes run as the token's user (`commitUser`, `CreatedById`, default `OwnerId`) and emit
//!   CDC events whose `changeOrigin` is `com/salesforce/api/rest/{ver};client=<tag>` with the tag
//!   of the `Sforce-Call-Options: client=<tag>` header (no `;client=` without one).
//! * Resources: `sobjects/{Object}` POST (201 `{id, success, errors}`);
//!   `sobjects/{Object}/{Id}` GET (`?fields=` optional) / PATCH (204) / DELETE (204);
//!   `sobjects/{Object}/{ExtIdField}/{value}` GET / PATCH upsert (201 `created: true` or 200
//!   `created: false`); `query?q=` ([`super::soql`]; at most `query_batch_size` rows per page,
//!   the rest through `nextRecordsUrl` = `query/{locator}-{offset}`, see [`Cursors`]); `limits`;
//!   `composite/sobjects…` (incl. `composite/sobjects/{Object}` POST retrieve);
//!   `composite`; the resource list (GET on the version). Other paths: 404 `NOT_FOUND`; a
//!   known path with another method: 405 `METHOD_NOT_ALLOWED`.
//! * Field values as the Rust API takes them (compound fields nested), except that dates and
//!   datetimes also accept text and are *rendered* as Salesforce renders them:
//!   `2024-01-31T12:05:09.042+0000` and `2024-01-31`. A record read returns every field of the
//!   object (null when unset) plus `Id`, `IsDeleted`, `SystemModstamp` and `attributes`.
//! * Errors are Salesforce's arrays `[{"message", "errorCode", "fields"}]`; per-record errors of
//!   collections are `{"statusCode", "message", "fields"}` (see [`RecordError`]).

use std::collections::VecDeque;
use std::sync::{Arc, MutexGuard};

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::catalog::{SchemaVersion, Temporal};
use super::error::SimError;
use super::org::{Applied, Op, Org, StageOptions, Tx};
use super::shared::{Session, Shared};
use super::soql::Query;
use super::util::{API_VERSION, lock, now_ms, rest_origin};
use super::{collections, composite};
use crate::salesforce::sftime;

/// The reply to one (sub)request.
#[derive(Debug, Clone)]
pub(super) struct Reply {
    pub status: StatusCode,
    pub body: Option<Value>,
    pub headers: Vec<(&'static str, String)>,
}

impl Reply {
    pub fn json(status: StatusCode, body: Value) -> Self {
        Self {
            status,
            body: Some(body),
            headers: Vec::new(),
        }
    }

    pub fn no_content() -> Self {
        Self {
            status: StatusCode::NO_CONTENT,
            body: None,
            headers: Vec::new(),
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

    fn method_not_allowed(method: &Method, allowed: &str) -> Self {
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
    fn reply(&self, not_found: StatusCode) -> Reply {
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

/// The request body of a (sub)request.
#[derive(Debug, Clone, Copy)]
pub(super) enum Body<'b> {
    /// Bytes as received.
    Raw(&'b [u8]),
    /// A Composite subrequest's `body`.
    Json(Option<&'b Value>),
}

impl Body<'_> {
    pub fn json(&self) -> Result<Value, Reply> {
        match self {
            Body::Raw(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Err(
                Reply::json_parser_error("No content to map due to end-of-input"),
            ),
            Body::Raw(bytes) => serde_json::from_slice(bytes)
                .map_err(|e| Reply::json_parser_error(&format!("Malformed JSON: {e}"))),
            Body::Json(Some(v)) => Ok((*v).clone()),
            Body::Json(None) => Err(Reply::json_parser_error(
                "No content to map due to end-of-input",
            )),
        }
    }

    /// The body as a record's fields (`attributes` dropped).
    fn fields(&self) -> Result<Map<String, Value>, Reply> {
        match self.json()? {
            Value::Object(mut m) => {
                m.remove("attributes");
                Ok(m)
            }
            _ => Err(Reply::json_parser_error(
                "Cannot deserialize instance of sObject from a value that is not a JSON object",
            )),
        }
    }
}

/// One (sub)request, routed relative to `/services/data/v{version}`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Call<'b> {
    pub method: &'b Method,
    /// Path after the version, e.g. `/sobjects/Account` (percent-encoded).
    pub path: &'b str,
    /// Query string (percent-encoded), if any.
    pub query: Option<&'b str>,
    pub body: Body<'b>,
    /// API version, e.g. `62.0`.
    pub version: &'b str,
    /// `Sforce-Call-Options` client tag.
    pub tag: Option<&'b str>,
    /// False inside `/composite`.
    pub top: bool,
}

impl Call<'_> {
    pub fn origin(&self) -> String {
        rest_origin(self.version, self.tag)
    }
}

/// The `vNN.N` path segment → `NN.N`.
pub(super) fn parse_version(segment: &str) -> Option<&str> {
    let v = segment.strip_prefix('v')?;
    let (major, minor) = v.split_once('.')?;
    (!major.is_empty()
        && !minor.is_empty()
        && major.bytes().all(|b| b.is_ascii_digit())
        && minor.bytes().all(|b| b.is_ascii_digit()))
    .then_some(v)
}

/// Percent-decoding (`+` as a space when `plus`), lossy on invalid UTF-8.
pub(super) fn percent_decode(s: &str, plus: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let hex = |c: u8| (c as char).to_digit(16);
        match b {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b),
            },
            b'+' if plus => out.push(b' '),
            _ => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A query-string parameter, decoded.
pub(super) fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k, true) == name).then(|| percent_decode(v, true))
    })
}

/// The `client=` tag of a `Sforce-Call-Options` value.
pub(super) fn call_options_tag(value: &str) -> Option<String> {
    value
        .split([',', ';'])
        .filter_map(|opt| opt.trim().strip_prefix("client="))
        .map(str::trim)
        .find(|t| !t.is_empty())
        .map(str::to_owned)
}

/// The session of a request's `Authorization: Bearer` (or `OAuth`) token.
pub(super) fn bearer(s: &Shared, headers: &HeaderMap) -> Option<Session> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("OAuth "))?
        .trim();
    s.session(token)
}

/// `GET /services/data`: the supported versions (no auth, not counted).
pub(super) async fn versions() -> Response {
    axum::Json(json!([{
        "label": "Winter '25",
        "url": format!("/services/data/v{}", API_VERSION),
        "version": API_VERSION,
    }]))
    .into_response()
}

/// Every request under `/services/data/{version}/…`.
pub(super) async fn services_data(
    State(s): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(session) = bearer(&s, &headers) else {
        return into_response(
            Reply::error(
                StatusCode::UNAUTHORIZED,
                "INVALID_SESSION_ID",
                "Session expired or invalid",
                &[],
            ),
            None,
        );
    };
    let path = uri.path().strip_prefix("/services/data/").unwrap_or("");
    let (segment, rest) = match path.find('/') {
        Some(i) => (&path[..i], &path[i..]),
        None => (path, ""),
    };
    let limits_call = method == Method::GET && rest.trim_matches('/') == "limits";
    let (admitted, latency) = {
        let mut api = lock(&s.api);
        (api.admit(limits_call), api.latency)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let reply = match (admitted, parse_version(segment)) {
        (Err(refusal), _) => Reply::json(refusal.status, refusal.body),
        (Ok(()), None) => Reply::not_found(),
        (Ok(()), Some(version)) => {
            let tag = headers
                .get("sforce-call-options")
                .and_then(|v| v.to_str().ok())
                .and_then(call_options_tag);
            let call = Call {
                method: &method,
                path: rest,
                query: uri.query(),
                body: Body::Raw(&body),
                version,
                tag: tag.as_deref(),
                top: true,
            };
            Exec::new(&s, &session.user_id).dispatch(&call)
        }
    };
    let usage = lock(&s.api).header();
    into_response(reply, Some(usage))
}

fn into_response(reply: Reply, usage: Option<String>) -> Response {
    let mut response = match reply.body {
        Some(body) => (reply.status, axum::Json(body)).into_response(),
        None => reply.status.into_response(),
    };
    let headers = response.headers_mut();
    for (name, value) in reply.headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
    if let Some(v) = usage.and_then(|u| HeaderValue::from_str(&u).ok()) {
        headers.insert("sforce-limit-info", v);
    }
    response
}

/// Executes (sub)requests against the locked org as one user; inside an all-or-none Composite,
/// every write is staged into `outer` and committed (or dropped) at the end.
pub(super) struct Exec<'a> {
    pub shared: &'a Shared,
    pub org: MutexGuard<'a, Org>,
    pub user: String,
    pub outer: Option<Tx>,
}

impl<'a> Exec<'a> {
    pub fn new(shared: &'a Shared, user: &str) -> Self {
        Self {
            shared,
            org: lock(&shared.org),
            user: user.to_owned(),
            outer: None,
        }
    }

    /// Runs `ops` as one transaction (each op on its own; with `all_or_none`, any failure —
    /// or `rejected`: a record refused before it was tried — rolls back all), or stages them into
    /// the enclosing all-or-none Composite. Publishes the committed changes' events.
    pub fn write(
        &mut self,
        ops: &[Op],
        origin: &str,
        all_or_none: bool,
        rejected: bool,
    ) -> Vec<Result<Applied, SimError>> {
        let now = now_ms();
        let opts = StageOptions {
            stop_on_error: false,
            rest_faults: true,
        };
        let org = &mut *self.org;
        if let Some(outer) = self.outer.as_mut() {
            return org.stage(outer, ops, &self.user, now, opts, Some(origin));
        }
        let mut tx = Tx::default();
        let results = org.stage(&mut tx, ops, &self.user, now, opts, Some(origin));
        if all_or_none && (rejected || results.iter().any(Result::is_err)) {
            return results;
        }
        let changes = org.finish(tx);
        if let Err(error) = self
            .shared
            .publish(org, changes, origin.to_owned(), &self.user)
        {
            tracing::error!(%error, "simulated org could not publish change events");
        }
        results
    }

    /// Commits the enclosing all-or-none Composite's writes and publishes their events.
    pub fn commit_outer(&mut self, origin: String) {
        let Some(tx) = self.outer.take() else {
            return;
        };
        let org = &mut *self.org;
        let changes = org.finish(tx);
        if let Err(error) = self.shared.publish(org, changes, origin, &self.user) {
            tracing::error!(%error, "simulated org could not publish change events");
        }
    }

    /// Routes one (sub)request.
    pub fn dispatch(&mut self, call: &Call) -> Reply {
        let segments: Vec<String> = call
            .path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| percent_decode(s, false))
            .collect();
        let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
        let m = call.method;
        match segs.as_slice() {
            [] if m == Method::GET => {
                let base = format!("/services/data/v{}", call.version);
                Reply::json(
                    StatusCode::OK,
                    json!({
                        "sobjects": format!("{base}/sobjects"),
                        "query": format!("{base}/query"),
                        "composite": format!("{base}/composite"),
                        "limits": format!("{base}/limits"),
                    }),
                )
            }
            ["limits"] if !call.top => composite_unsupported(call),
            ["limits"] if m == Method::GET => {
                Reply::json(StatusCode::OK, lock(&self.shared.api).limits_body())
            }
            ["limits"] => Reply::method_not_allowed(m, "GET,HEAD"),
            ["query"] if m == Method::GET => self.query(call),
            ["query"] => Reply::method_not_allowed(m, "GET,HEAD"),
            ["query", locator] if m == Method::GET => self.query_more(call, locator),
            ["query", _] => Reply::method_not_allowed(m, "GET,HEAD"),
            ["sobjects", object] if !self.org.has_object(object) => Reply::not_found(),
            ["sobjects", object] if m == Method::POST => self.create_row(call, object),
            ["sobjects", _] => Reply::method_not_allowed(m, "GET,POST,HEAD"),
            ["sobjects", object, ..] if !self.org.has_object(object) => Reply::not_found(),
            ["sobjects", object, id] => match *m {
                Method::GET => self.get_row(call, object, id),
                Method::PATCH => self.update_row(call, object, id),
                Method::DELETE => self.delete_row(call, object, id),
                _ => Reply::method_not_allowed(m, "GET,PATCH,DELETE,HEAD"),
            },
            ["sobjects", object, field, value] => match *m {
                Method::GET => self.get_by_external_id(call, object, field, value),
                Method::PATCH => self.upsert_row(call, object, field, value),
                _ => Reply::method_not_allowed(m, "GET,PATCH,HEAD"),
            },
            ["composite"] if !call.top => composite_unsupported(call),
            ["composite"] if m == Method::POST => composite::run(self, call),
            ["composite"] => Reply::method_not_allowed(m, "POST"),
            ["composite", "sobjects"] => match *m {
                Method::POST => collections::create(self, call),
                Method::PATCH => collections::update(self, call),
                Method::DELETE => collections::delete(self, call),
                _ => Reply::method_not_allowed(m, "POST,PATCH,DELETE"),
            },
            ["composite", "sobjects", object] => match *m {
                Method::POST => collections::retrieve(self, call, object),
                _ => Reply::method_not_allowed(m, "POST"),
            },
            ["composite", "sobjects", object, field] if m == Method::PATCH => {
                collections::upsert(self, call, object, field)
            }
            ["composite", "sobjects", _, _] => Reply::method_not_allowed(m, "PATCH"),
            _ => Reply::not_found(),
        }
    }

    fn create_row(&mut self, call: &Call, object: &str) -> Reply {
        let fields = match call.body.fields() {
            Ok(f) => f,
            Err(r) => return r,
        };
        if let Err(e) = self.org.validate_fields(object, &fields) {
            return row_error(&e);
        }
        let id = match self.org.reserve_id(object) {
            Ok(id) => id,
            Err(e) => return row_error(&e),
        };
        let op = Op::Create {
            object: object.to_owned(),
            id,
            fields,
        };
        match self.write(&[op], &call.origin(), true, false).remove(0) {
            Ok(applied) => {
                let mut reply = Reply::json(
                    StatusCode::CREATED,
                    json!({"id": applied.id, "success": true, "errors": []}),
                );
                reply
                    .headers
                    .push(("location", row_url(call, object, &applied.id)));
                reply
            }
            Err(e) => row_error(&e),
        }
    }

    fn get_row(&mut self, call: &Call, object: &str, id: &str) -> Reply {
        if super::ids::normalize(id).is_none() {
            return row_error(&SimError::MalformedId {
                object: object.to_owned(),
                id: id.to_owned(),
            });
        }
        let Some(record) = self.org.view(self.outer.as_ref(), object, id) else {
            return Reply::not_found();
        };
        self.render_row(call, object, &record)
    }

    fn render_row(&self, call: &Call, object: &str, record: &Map<String, Value>) -> Reply {
        if record.get("IsDeleted") == Some(&Value::Bool(true)) {
            return Reply::error(
                StatusCode::NOT_FOUND,
                "ENTITY_IS_DELETED",
                "entity is deleted",
                &[],
            );
        }
        let Some(schema) = self.org.object_schema(object) else {
            return Reply::not_found();
        };
        let selected = match query_param(call.query, "fields") {
            Some(list) => {
                let mut out = Vec::new();
                for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                    match canonical_field(&schema, name) {
                        Some(f) => out.push(f),
                        None => {
                            return Reply::error(
                                StatusCode::BAD_REQUEST,
                                "INVALID_FIELD",
                                &format!("No such column '{name}' on sobject of type {object}"),
                                &[name],
                            );
                        }
                    }
                }
                Some(out)
            }
            None => None,
        };
        Reply::json(
            StatusCode::OK,
            Value::Object(render_record(
                &schema,
                object,
                call.version,
                record,
                selected.as_deref(),
            )),
        )
    }

    fn update_row(&mut self, call: &Call, object: &str, id: &str) -> Reply {
        let fields = match call.body.fields() {
            Ok(f) => f,
            Err(r) => return r,
        };
        if let Err(e) = self.org.validate_fields(object, &fields) {
            return row_error(&e);
        }
        let op = Op::Update {
            object: object.to_owned(),
            id: id.to_owned(),
            fields,
        };
        match self.write(&[op], &call.origin(), true, false).remove(0) {
            Ok(_) => Reply::no_content(),
            Err(e) => row_error(&e),
        }
    }

    fn delete_row(&mut self, call: &Call, object: &str, id: &str) -> Reply {
        let op = Op::Delete {
            object: object.to_owned(),
            id: id.to_owned(),
        };
        match self.write(&[op], &call.origin(), true, false).remove(0) {
            Ok(_) => Reply::no_content(),
            Err(e) => row_error(&e),
        }
    }

    /// Checks the External Id field of a by-External-Id resource.
    pub fn external_id_field(&self, object: &str, field: &str) -> Result<(), Reply> {
        let exists = self
            .org
            .object_schema(object)
            .is_some_and(|s| s.field(field).is_some());
        if !exists {
            return Err(Reply::error(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                &format!("Provided external ID field does not exist or is not accessible: {field}"),
                &[],
            ));
        }
        if !self.org.is_external_id(object, field) {
            return Err(RecordError::of(&SimError::NotExternalId {
                object: object.to_owned(),
                field: field.to_owned(),
            })
            .reply(StatusCode::BAD_REQUEST));
        }
        Ok(())
    }

    fn get_by_external_id(&mut self, call: &Call, object: &str, field: &str, value: &str) -> Reply {
        if let Err(r) = self.external_id_field(object, field) {
            return r;
        }
        let outer = self.outer.as_ref();
        let found = self
            .org
            .find_by_external_id(outer, object, field, value)
            .and_then(|id| self.org.view(outer, object, &id));
        match found {
            Some(record) => self.render_row(call, object, &record),
            None => Reply::not_found(),
        }
    }

    fn upsert_row(&mut self, call: &Call, object: &str, field: &str, value: &str) -> Reply {
        if let Err(r) = self.external_id_field(object, field) {
            return r;
        }
        let fields = match call.body.fields() {
            Ok(f) => f,
            Err(r) => return r,
        };
        if let Err(e) = self.org.validate_fields(object, &fields) {
            return row_error(&e);
        }
        let op = Op::Upsert {
            object: object.to_owned(),
            field: field.to_owned(),
            value: value.to_owned(),
            fields,
        };
        match self.write(&[op], &call.origin(), true, false).remove(0) {
            Ok(applied) => {
                let status = if applied.created {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                };
                let mut reply = Reply::json(
                    status,
                    json!({"id": applied.id, "success": true, "errors": [], "created": applied.created}),
                );
                if applied.created {
                    reply
                        .headers
                        .push(("location", row_url(call, object, &applied.id)));
                }
                reply
            }
            Err(e) => row_error(&e),
        }
    }

    fn query(&mut self, call: &Call) -> Reply {
        let Some(text) = query_param(call.query, "q").filter(|q| !q.trim().is_empty()) else {
            return Reply::error(
                StatusCode::BAD_REQUEST,
                "MALFORMED_QUERY",
                "A query string has to be specified",
                &[],
            );
        };
        let query = match Query::parse(&text, &self.org) {
            Ok(q) => q,
            Err(e) => {
                return Reply::json(
                    StatusCode::BAD_REQUEST,
                    json!([{ "message": e.to_string(), "errorCode": e.code() }]),
                );
            }
        };
        let Some(schema) = self.org.object_schema(&query.object) else {
            return Reply::not_found();
        };
        let rows: Vec<Value> = query
            .run(&self.org, self.outer.as_ref())
            .iter()
            .map(|rec| {
                Value::Object(render_record(
                    &schema,
                    &query.object,
                    call.version,
                    rec,
                    Some(&query.fields),
                ))
            })
            .collect();
        let batch = self.shared.config.query_batch_size.max(1);
        let page = lock(&self.shared.cursors).first_page(rows, batch, call.version);
        Reply::json(StatusCode::OK, page)
    }

    /// `GET query/{locator}-{offset}`: the next page of an open cursor.
    fn query_more(&mut self, call: &Call, locator: &str) -> Reply {
        let batch = self.shared.config.query_batch_size.max(1);
        match lock(&self.shared.cursors).page(locator, batch, call.version) {
            Some(page) => Reply::json(StatusCode::OK, page),
            None => Reply::error(
                StatusCode::BAD_REQUEST,
                "INVALID_QUERY_LOCATOR",
                "invalid query locator",
                &[],
            ),
        }
    }
}

/// Open query cursors: the rendered rows of a query larger than one page, served a page at a
/// time through `nextRecordsUrl` (`/services/data/v{ver}/query/01gSIM…-{offset}`, as Salesforce
/// spells query locators). A cursor is closed once its last page is served; at most
/// [`Cursors::MAX_OPEN`] stay open (the oldest is dropped, as Salesforce expires locators).
#[derive(Debug, Default)]
pub(crate) struct Cursors {
    next: u64,
    open: VecDeque<(String, Arc<Vec<Value>>)>,
}

impl Cursors {
    /// Open cursors kept at most.
    pub const MAX_OPEN: usize = 50;

    /// The first page of `rows`; opens a cursor when they do not fit.
    fn first_page(&mut self, rows: Vec<Value>, batch: usize, version: &str) -> Value {
        if rows.len() <= batch {
            return json!({"totalSize": rows.len(), "done": true, "records": rows});
        }
        self.next += 1;
        let locator = format!("01gSIM{:09}", self.next);
        if self.open.len() == Self::MAX_OPEN {
            self.open.pop_front();
        }
        self.open.push_back((locator.clone(), Arc::new(rows)));
        self.page(&format!("{locator}-0"), batch, version)
            .unwrap_or(Value::Null)
    }

    /// The page at `{locator}-{offset}`, or `None` for an unknown (or closed) cursor or offset.
    fn page(&mut self, at: &str, batch: usize, version: &str) -> Option<Value> {
        let (locator, offset) = at.rsplit_once('-')?;
        let offset: usize = offset.parse().ok()?;
        let index = self.open.iter().position(|(l, _)| l == locator)?;
        let rows = self.open[index].1.clone();
        if offset >= rows.len() {
            return None;
        }
        let end = (offset + batch).min(rows.len());
        let mut page = json!({
            "totalSize": rows.len(),
            "done": end == rows.len(),
            "records": rows[offset..end].to_vec(),
        });
        if end == rows.len() {
            self.open.remove(index);
        } else {
            page["nextRecordsUrl"] =
                Value::String(format!("/services/data/v{version}/query/{locator}-{end}"));
        }
        Some(page)
    }
}

fn composite_unsupported(call: &Call) -> Reply {
    Reply::error(
        StatusCode::BAD_REQUEST,
        "INVALID_INPUT",
        &format!(
            "The composite request doesn't support {} {} as a subrequest",
            call.method, call.path
        ),
        &[],
    )
}

/// The API spelling of a readable field of the object (`Id`, `IsDeleted`, `SystemModstamp` or a
/// schema field), matched case-insensitively.
pub(super) fn canonical_field(schema: &SchemaVersion, name: &str) -> Option<String> {
    ["Id", "IsDeleted", "SystemModstamp"]
        .into_iter()
        .map(str::to_owned)
        .chain(schema.fields.iter().map(|f| f.name.clone()))
        .find(|f| f.eq_ignore_ascii_case(name))
}

/// A field value as REST renders it: dates and datetimes as Salesforce text.
fn render_value(schema: &SchemaVersion, field: &str, value: &Value) -> Value {
    let temporal = if field == "SystemModstamp" {
        Some(Temporal::DateTime)
    } else {
        schema.field(field).and_then(|f| f.temporal)
    };
    match (temporal, value.as_i64()) {
        (Some(Temporal::DateTime), Some(ms)) => Value::String(sftime::format_datetime(ms)),
        (Some(Temporal::Date), Some(ms)) => Value::String(sftime::format_date(ms)),
        _ => value.clone(),
    }
}

/// A record as REST returns it: `attributes`, then the selected fields (all readable fields when
/// `fields` is `None`), unset ones null.
pub(super) fn render_record(
    schema: &SchemaVersion,
    object: &str,
    version: &str,
    record: &Map<String, Value>,
    fields: Option<&[String]>,
) -> Map<String, Value> {
    let id = record.get("Id").and_then(Value::as_str).unwrap_or_default();
    let mut out = Map::new();
    out.insert(
        "attributes".into(),
        json!({"type": object, "url": format!("/services/data/v{version}/sobjects/{object}/{id}")}),
    );
    let all: Vec<String>;
    let names = match fields {
        Some(f) => f,
        None => {
            all = ["Id", "IsDeleted", "SystemModstamp"]
                .into_iter()
                .map(str::to_owned)
                .chain(schema.fields.iter().map(|f| f.name.clone()))
                .collect();
            &all
        }
    };
    for name in names {
        let value = record.get(name).unwrap_or(&Value::Null);
        out.insert(name.clone(), render_value(schema, name, value));
    }
    out
}

/// The URL of a record's row resource (the `Location` of a created record).
fn row_url(call: &Call, object: &str, id: &str) -> String {
    format!("/services/data/v{}/sobjects/{object}/{id}", call.version)
}
