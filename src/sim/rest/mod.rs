//! The org's REST API under `/services/data/v{ver}/`: authentication, accounting and routing
//! here; sObject rows and rows by External Id in `rows`, the SOQL query endpoint in `query` (its
//! cursors in `cursors`), sObject Collections in `collections`, Composite in `composite`,
//! Composite Batch in `batch`, sObject Tree in `tree`, API accounting, fault refusals and limits
//! in `limits`; what they share in `call` (the request, [`Exec`]), `reply` (replies and errors)
//! and `render` (records as REST renders them). The Identity URL (`/id/{orgId}/{userId}`, outside
//! `/services/data`) is in `identity`; the records each user last wrote, in `recent`.
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
//!   the rest through `nextRecordsUrl` = `query/{locator}-{offset}`, see [`Cursors`](cursors::Cursors)); `limits`;
//!   `composite/sobjects…` (incl. `composite/sobjects/{Object}` POST retrieve);
//!   `sobjects/{Event__e}` POST publishes a Platform Event (in `events`);
//!   `tooling/…` for `ManagedEventSubscription` (in `tooling`);
//!   `composite`; `composite/batch` POST (in `batch`); `composite/tree/{Object}` POST (in
//!   `tree`); `sobjects/` GET (describe global), `sobjects/{Object}` GET (sObject Basic
//!   Information: `objectDescribe` and `recentItems`) and `sobjects/{Object}/describe` GET (in
//!   `describe`); the resource list (GET on the version: `sobjects`, `query`, `composite`,
//!   `limits`, and `identity`, the token user's Identity URL). Other paths: 404 `NOT_FOUND`; a
//!   known path with another method: 405 `METHOD_NOT_ALLOWED`.
//! * Fields as Salesforce's REST API has them (SOAP API Developer Guide, "Compound Fields"): a
//!   compound field's components (`BillingCity`, `FirstName`) are written and read; the
//!   compound (`BillingAddress`, Contact `Name`) is read-only (`INVALID_FIELD_FOR_INSERT_UPDATE`,
//!   per record in collections) and read as an object with lower-case keys (Contact `Name` as
//!   text); formula fields are read-only and computed on read (see `crate::sim::fieldmeta`).
//!   Dates and datetimes also accept text and are *rendered* as Salesforce renders them:
//!   `2024-01-31T12:05:09.042+0000` and `2024-01-31`. A record read returns every field of the
//!   object's describe (null when unset) and `attributes`.
//! * Errors are Salesforce's arrays `[{"message", "errorCode", "fields"}]`; per-record errors of
//!   collections are `{"statusCode", "message", "fields"}` (see [`RecordError`]).

mod batch;
mod bulk;
mod bulk_csv;
pub(super) mod bulk_jobs;
#[cfg(test)]
mod bulk_tests;
mod call;
mod collections;
mod composite;
pub(super) mod cursors;
mod describe;
mod events;
mod identity;
pub(super) mod limits;
mod query;
pub(super) mod recent;
mod render;
mod replication;
mod reply;
#[cfg(test)]
mod resources_tests;
mod rows;
#[cfg(test)]
mod tests;
mod tooling;
mod tree;

pub(crate) use self::call::bearer;
pub(crate) use self::identity::identity;
pub(crate) use self::reply::Reply;

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::json;

use self::call::{Body, Call, Exec, call_options_tag, parse_version, percent_decode};
use crate::sim::shared::Shared;
use crate::sim::util::{API_VERSION, lock};

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
        let composite_call = rest.trim_matches('/') == "composite";
        let admitted = match api.refuse_early(composite_call, body.len()) {
            Some(refusal) => Err(refusal),
            None => api.admit(limits_call),
        };
        (admitted, api.latency)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let reply = match (admitted, parse_version(segment)) {
        (
            Err(limits::Refusal {
                status,
                html: Some(page),
                ..
            }),
            _,
        ) => {
            return (
                status,
                [(axum::http::header::CONTENT_TYPE, "text/html")],
                page,
            )
                .into_response();
        }
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

pub(super) fn into_response(reply: Reply, usage: Option<String>) -> Response {
    let mut response = match (reply.raw, reply.body) {
        (Some(raw), _) => (reply.status, raw).into_response(),
        (None, Some(body)) => (reply.status, axum::Json(body)).into_response(),
        (None, None) => reply.status.into_response(),
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

impl Exec<'_> {
    /// Routes one (sub)request.
    pub fn dispatch(&mut self, call: &Call) -> Reply {
        let segments: Vec<String> = call
            .path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| percent_decode(s, false))
            .collect();
        let mut segments = segments;
        // Object names match in any case and are used in their API spelling: in a URI, object
        // and field names are case-insensitive and Ids are not (REST API Developer Guide, "REST
        // Resources and Requests"), so `/sobjects/account/describe` describes Account.
        let object_at = match segments.first().map(String::as_str) {
            Some("sobjects") => 1,
            Some("composite")
                if segments
                    .get(1)
                    .is_some_and(|s| s == "sobjects" || s == "tree") =>
            {
                2
            }
            _ => usize::MAX,
        };
        if let Some(name) = segments
            .get(object_at)
            .and_then(|o| self.org.canonical_object(o))
        {
            segments[object_at] = name.to_owned();
        }
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
                        "identity": format!(
                            "{}/id/{}/{}",
                            self.shared.instance_url, self.shared.config.org_id, self.user
                        ),
                    }),
                )
            }
            ["limits"] if !call.top => composite_unsupported(call),
            ["limits"] if m == Method::GET => {
                let mut body = lock(&self.shared.api).limits_body();
                let (jobs, storage) = lock(&self.shared.bulk).limits();
                body["DailyBulkV2QueryJobs"] = jobs;
                body["DailyBulkV2QueryFileStorageMB"] = storage;
                Reply::json(StatusCode::OK, body)
            }
            ["limits"] => Reply::method_not_allowed(m, "GET,HEAD"),
            ["query"] if m == Method::GET => self.query(call, false),
            ["queryAll"] if m == Method::GET => self.query(call, true),
            ["query" | "queryAll"] => Reply::method_not_allowed(m, "GET,HEAD"),
            ["query" | "queryAll", locator] if m == Method::GET => self.query_more(call, locator),
            ["query" | "queryAll", _] => Reply::method_not_allowed(m, "GET,HEAD"),
            ["jobs", "query", ..] if !call.top => composite_unsupported(call),
            ["jobs", "query", rest @ ..] => self.bulk_query(call, rest),
            ["sobjects"] if m == Method::GET => self.describe_global(call),
            ["sobjects"] => Reply::method_not_allowed(m, "GET,HEAD"),
            ["sobjects", event] if self.is_platform_event(event) => self.publish_event(call, event),
            ["sobjects", object] if !self.org.has_object(object) => Reply::not_found(),
            ["sobjects", object] if m == Method::POST => self.create_row(call, object),
            ["sobjects", object] if m == Method::GET => self.basic_info(call, object),
            ["sobjects", _] => Reply::method_not_allowed(m, "GET,POST,HEAD"),
            ["sobjects", object, ..] if !self.org.has_object(object) => Reply::not_found(),
            ["sobjects", object, "describe"] if m == Method::GET => self.describe(call, object),
            ["sobjects", _, "describe"] => Reply::method_not_allowed(m, "GET,HEAD"),
            ["sobjects", object, kind @ ("deleted" | "updated")] if m == Method::GET => {
                self.replication(call, object, *kind == "deleted")
            }
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
            ["tooling", rest @ ..] if call.top => self.tooling(call, rest),
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
            ["composite", "tree" | "batch", ..] if !call.top => composite_unsupported(call),
            ["composite", "tree", object] if !self.org.has_object(object) => Reply::not_found(),
            ["composite", "tree", object] if m == Method::POST => tree::create(self, call, object),
            ["composite", "tree", _] => Reply::method_not_allowed(m, "POST"),
            ["composite", "batch"] if m == Method::POST => batch::run(self, call),
            ["composite", "batch"] => Reply::method_not_allowed(m, "POST"),
            _ => Reply::not_found(),
        }
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
