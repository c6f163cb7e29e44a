//! Composite calls over sObject Collections and queries: what to send ([`SubRequest`]), the
//! check against Salesforce's limits ([`validate`], nothing sent), the request body,
//! [`RestClient::composite`], and the reading of every subrequest's answer ([`SubResponse`],
//! [`SaveResult`]).
//!
//! Contract: see the module docs of [`super`]: one `POST …/composite` with `allOrNone: false` and
//! `collateSubrequests: false`, answered one [`SubResponse`] per [`SubRequest`], in input order;
//! a subrequest whose answer cannot be read fails alone ([`super::UNREADABLE_RESPONSE`]); a
//! composite answer that cannot be matched to the subrequests is [`RestError::Protocol`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info_span};

use super::client::{CALL_OPTIONS_HEADER, RestClient};
use super::errors::{ApiError, RestError, errors_from_value, truncate};
use super::query::{QueryPage, percent_encode, query_page, strip_attributes};

/// Subrequests per Composite call.
pub(crate) const MAX_SUBREQUESTS: usize = 25;
/// sObject Collections and query subrequests per Composite call.
pub(crate) const MAX_COLLECTIONS_AND_QUERIES: usize = 5;
/// Records (or ids) per sObject Collections subrequest.
pub(crate) const MAX_COLLECTION_RECORDS: usize = 200;
/// Ids per sObject Collections retrieve with a request body (`POST
/// /composite/sobjects/{SObject}`): "The request retrieves up to 2,000 records of the same object
/// type" (<https://developer.salesforce.com/docs/platform/api-rest/guide/resources-composite-sobjects-collections-retrieve-post.html>).
/// The GET form takes about 800 ids before the URL is too long (HTTP 414), so only POST is used.
pub(crate) const MAX_RETRIEVE_IDS: usize = 2_000;

/// Durations of [`RestClient::composite`] requests as the client saw them (from sending the
/// `/composite` request to having read its answer, retries and waits on the limit guard
/// included; query pages fetched after it are not), in microseconds. Collected only after
/// [`install_call_probe`].
#[derive(Debug, Default)]
pub(crate) struct CallProbe {
    samples_us: Mutex<Vec<u64>>,
}

impl CallProbe {
    fn observe(&self, took: Duration) {
        if let Ok(mut samples) = self.samples_us.lock() {
            samples.push(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
        }
    }

    /// Takes the samples collected so far (microseconds).
    pub fn take(&self) -> Vec<u64> {
        self.samples_us
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default()
    }
}

/// Set once per process by [`install_call_probe`] (`forcebridge bench`); unset otherwise, when
/// recording costs one atomic load per call.
static CALL_PROBE: std::sync::OnceLock<Arc<CallProbe>> = std::sync::OnceLock::new();

/// Turns on the [`CallProbe`] for every [`RestClient`] of this process; returns it. Meant for
/// `forcebridge bench` only.
pub(crate) fn install_call_probe() -> Arc<CallProbe> {
    CALL_PROBE.get_or_init(Default::default).clone()
}

/// One subrequest of a Composite call.
#[derive(Debug, Clone, PartialEq)]
pub enum SubRequest {
    /// `GET …/query?q=<soql>`.
    Query { soql: String },
    /// `POST …/composite/sobjects/{object}` with `{"ids": [...], "fields": [...]}`: sObject
    /// Collections retrieve, up to [`MAX_RETRIEVE_IDS`] ids of one object, answered in id order
    /// with `null` for an id that is invalid, inaccessible or deleted.
    Retrieve {
        object: String,
        ids: Vec<String>,
        fields: Vec<String>,
    },
    /// `POST …/composite/sobjects`; each record carries `attributes.type`.
    Create { records: Vec<Map<String, Value>> },
    /// `PATCH …/composite/sobjects`; each record carries `attributes.type` and `Id`.
    Update { records: Vec<Map<String, Value>> },
    /// `PATCH …/composite/sobjects/{object}/{external_id_field}`; one object type, each record
    /// carries the external id field.
    Upsert {
        object: String,
        external_id_field: String,
        records: Vec<Map<String, Value>>,
    },
    /// `DELETE …/composite/sobjects?ids=…&allOrNone=false`.
    Delete { ids: Vec<String> },
}

impl SubRequest {
    fn kind(&self) -> &'static str {
        match self {
            SubRequest::Query { .. } => "Query",
            SubRequest::Retrieve { .. } => "Retrieve",
            SubRequest::Create { .. } => "Create",
            SubRequest::Update { .. } => "Update",
            SubRequest::Upsert { .. } => "Upsert",
            SubRequest::Delete { .. } => "Delete",
        }
    }

    /// Records (or ids) written; 0 for a query or a retrieve.
    fn record_count(&self) -> usize {
        match self {
            SubRequest::Query { .. } | SubRequest::Retrieve { .. } => 0,
            SubRequest::Create { records }
            | SubRequest::Update { records }
            | SubRequest::Upsert { records, .. } => records.len(),
            SubRequest::Delete { ids } => ids.len(),
        }
    }
}

/// The answer to one subrequest.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum SubResponse {
    /// Every record of the query (all pages), `attributes` removed at every level.
    Query { records: Vec<Map<String, Value>> },
    /// One entry per id of a [`SubRequest::Retrieve`], in id order: the record (`attributes`
    /// removed) or `None` where Salesforce answered `null`.
    Retrieved {
        records: Vec<Option<Map<String, Value>>>,
    },
    /// One result per record (or id), in input order.
    Saved(Vec<SaveResult>),
    /// The subrequest as a whole failed (its body was an error array), or its answer could not
    /// be read ([`UNREADABLE_RESPONSE`]).
    Failed {
        http_status: u16,
        errors: Vec<ApiError>,
    },
}

/// The outcome of one record of an sObject Collections subrequest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SaveResult {
    /// The record id (null for a failed create).
    pub id: Option<String>,
    pub success: bool,
    /// Upsert only: whether the record was created (else updated).
    pub created: Option<bool>,
    pub errors: Vec<ApiError>,
}

/// Checks a Composite call against Salesforce's limits and the shapes each kind needs, without
/// sending anything.
pub(crate) fn validate(subrequests: &[SubRequest]) -> Result<(), RestError> {
    let invalid = |message: String| Err(RestError::Invalid(message));
    if subrequests.len() > MAX_SUBREQUESTS {
        return invalid(format!(
            "{} subrequests; a Composite call takes at most {MAX_SUBREQUESTS}",
            subrequests.len()
        ));
    }
    // Every kind of subrequest we send is an sObject Collections or a query subrequest.
    let heavy = subrequests.len();
    if heavy > MAX_COLLECTIONS_AND_QUERIES {
        return invalid(format!(
            "{heavy} collection or query subrequests; a Composite call takes at most \
             {MAX_COLLECTIONS_AND_QUERIES}"
        ));
    }
    for (index, sub) in subrequests.iter().enumerate() {
        validate_one(sub).map_err(|message| {
            RestError::Invalid(format!("subrequest {index} ({}): {message}", sub.kind()))
        })?;
    }
    Ok(())
}

fn validate_one(sub: &SubRequest) -> Result<(), String> {
    if let SubRequest::Query { soql } = sub {
        return if soql.trim().is_empty() {
            Err("empty SOQL".to_owned())
        } else {
            Ok(())
        };
    }
    if let SubRequest::Retrieve {
        object,
        ids,
        fields,
    } = sub
    {
        if !is_api_name(object) {
            return Err(format!("`{object}` is not an API name"));
        }
        match ids.len() {
            0 => return Err("no ids".to_owned()),
            n if n > MAX_RETRIEVE_IDS => {
                return Err(format!("{n} ids; at most {MAX_RETRIEVE_IDS}"));
            }
            _ => {}
        }
        if let Some(id) = ids
            .iter()
            .find(|id| id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()))
        {
            return Err(format!("`{id}` is not a record id"));
        }
        if fields.is_empty() {
            return Err("no fields".to_owned());
        }
        if let Some(field) = fields.iter().find(|f| !is_api_name(f)) {
            return Err(format!("`{field}` is not an API name"));
        }
        return Ok(());
    }
    match sub.record_count() {
        0 => return Err("no records".to_owned()),
        n if n > MAX_COLLECTION_RECORDS => {
            return Err(format!("{n} records; at most {MAX_COLLECTION_RECORDS}"));
        }
        _ => {}
    }
    let has_type = |r: &Map<String, Value>| {
        r.get("attributes")
            .and_then(|a| a.get("type"))
            .and_then(Value::as_str)
            .is_some_and(|t| !t.is_empty())
    };
    let has_str = |r: &Map<String, Value>, key: &str| {
        r.get(key)
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
    };
    match sub {
        SubRequest::Query { .. } | SubRequest::Retrieve { .. } => {}
        SubRequest::Create { records } => {
            if let Some(i) = records.iter().position(|r| !has_type(r)) {
                return Err(format!("record {i} has no attributes.type"));
            }
        }
        SubRequest::Update { records } => {
            if let Some(i) = records.iter().position(|r| !has_type(r)) {
                return Err(format!("record {i} has no attributes.type"));
            }
            if let Some(i) = records.iter().position(|r| !has_str(r, "Id")) {
                return Err(format!("record {i} has no Id"));
            }
        }
        SubRequest::Upsert {
            object,
            external_id_field,
            records,
        } => {
            for name in [object, external_id_field] {
                if !is_api_name(name) {
                    return Err(format!("`{name}` is not an API name"));
                }
            }
            if let Some(i) = records
                .iter()
                .position(|r| !r.contains_key(external_id_field))
            {
                return Err(format!("record {i} has no {external_id_field}"));
            }
        }
        SubRequest::Delete { ids } => {
            if let Some(id) = ids
                .iter()
                .find(|id| id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()))
            {
                return Err(format!("`{id}` is not a record id"));
            }
        }
    }
    Ok(())
}

/// `^[A-Za-z0-9_]+$`: object and field API names, reference ids.
fn is_api_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The answer to a retrieve of `expected` ids: an array of one record or `null` per id.
fn retrieved(mut body: Value, expected: usize) -> Result<Vec<Option<Map<String, Value>>>, String> {
    strip_attributes(&mut body);
    let Value::Array(items) = body else {
        return Err("retrieve answer is not an array".to_owned());
    };
    if items.len() != expected {
        return Err(format!(
            "retrieve answered {} entries for {expected} ids",
            items.len()
        ));
    }
    items
        .into_iter()
        .map(|item| match item {
            Value::Null => Ok(None),
            Value::Object(record) => Ok(Some(record)),
            other => Err(format!(
                "retrieve entry is neither a record nor null: {other}"
            )),
        })
        .collect()
}

fn save_results(body: &Value, expected: usize) -> Result<Vec<SaveResult>, String> {
    let items = body.as_array().ok_or_else(|| {
        format!(
            "expected an array of save results: {}",
            truncate(&body.to_string())
        )
    })?;
    if items.len() != expected {
        return Err(format!(
            "{} save results for {expected} records",
            items.len()
        ));
    }
    items
        .iter()
        .map(|item| {
            let success = item["success"].as_bool().ok_or_else(|| {
                format!(
                    "save result without success: {}",
                    truncate(&item.to_string())
                )
            })?;
            Ok(SaveResult {
                id: item["id"].as_str().map(str::to_owned),
                success,
                created: item["created"].as_bool(),
                errors: match &item["errors"] {
                    Value::Null => Vec::new(),
                    errors => errors_from_value(errors),
                },
            })
        })
        .collect()
}

impl RestClient {
    /// One Composite call (see the module docs). An empty `subrequests` answers an empty list
    /// without a call. Query pages are fetched after the call; a cancel while fetching them ends
    /// with [`RestError::Cancelled`] although the call's writes were made (at-least-once callers
    /// send them again).
    pub(crate) async fn composite(
        &self,
        subrequests: &[SubRequest],
        cancel: &CancellationToken,
    ) -> Result<Vec<SubResponse>, RestError> {
        validate(subrequests)?;
        self.check_tag()?;
        if subrequests.is_empty() {
            return Ok(Vec::new());
        }
        let records: usize = subrequests.iter().map(SubRequest::record_count).sum();
        let span = info_span!("composite", subrequests = subrequests.len(), records);
        async {
            let body = self.composite_body(subrequests);
            let path = format!("{}/composite", self.data_path());
            let started = Instant::now();
            let answer = self
                .execute(Method::POST, &path, Some(&body), true, cancel)
                .await;
            if let Some(probe) = CALL_PROBE.get() {
                probe.observe(started.elapsed());
            }
            let answer = answer?;
            let results = parse_composite(&answer, subrequests.len())?;
            let mut responses = Vec::with_capacity(subrequests.len());
            for (sub, (status, body)) in subrequests.iter().zip(results) {
                responses.push(self.sub_response(sub, status, body, cancel).await?);
            }
            Ok(responses)
        }
        .instrument(span)
        .await
    }

    /// sObject Collections retrieve with a request body, sent on its own (`POST
    /// …/composite/sobjects/{object}` with `{"ids", "fields"}`: one API call for up to
    /// [`MAX_RETRIEVE_IDS`] ids of one object, "Get Records With a Request Body Using sObject
    /// Collections", REST API Developer Guide). One entry per id, in id order: the record
    /// (`attributes` removed) or `None` where Salesforce answered `null` (an id invalid, not
    /// found, deleted, or not visible). An answer of another length is [`RestError::Protocol`].
    pub(crate) async fn retrieve(
        &self,
        object: &str,
        ids: Vec<String>,
        fields: &[String],
        cancel: &CancellationToken,
    ) -> Result<Vec<Option<Map<String, Value>>>, RestError> {
        let sub = SubRequest::Retrieve {
            object: object.to_owned(),
            ids,
            fields: fields.to_vec(),
        };
        validate_one(&sub).map_err(|m| RestError::Invalid(format!("retrieve: {m}")))?;
        self.check_tag()?;
        let SubRequest::Retrieve { ids, fields, .. } = sub else {
            unreachable!("built above as a retrieve");
        };
        let body = json!({ "ids": ids, "fields": fields });
        let path = format!("{}/composite/sobjects/{object}", self.data_path());
        let answer = self
            .execute(Method::POST, &path, Some(&body), true, cancel)
            .await?;
        let answer: Value = serde_json::from_slice(&answer)
            .map_err(|e| RestError::Protocol(format!("retrieve answer is not JSON: {e}")))?;
        retrieved(answer, ids.len()).map_err(RestError::Protocol)
    }

    /// The JSON body of one Composite call (public for `benches/hot_path.rs` only).
    #[doc(hidden)]
    pub fn composite_body(&self, subrequests: &[SubRequest]) -> Value {
        let data = self.data_path();
        let collection =
            |records: &Vec<Map<String, Value>>| json!({ "allOrNone": false, "records": records });
        let requests: Vec<Value> = subrequests
            .iter()
            .enumerate()
            .map(|(index, sub)| {
                let (method, url, body) = match sub {
                    SubRequest::Query { soql } => (
                        "GET",
                        format!("{data}/query?q={}", percent_encode(soql)),
                        None,
                    ),
                    SubRequest::Retrieve {
                        object,
                        ids,
                        fields,
                    } => (
                        "POST",
                        format!("{data}/composite/sobjects/{object}"),
                        Some(json!({ "ids": ids, "fields": fields })),
                    ),
                    SubRequest::Create { records } => (
                        "POST",
                        format!("{data}/composite/sobjects"),
                        Some(collection(records)),
                    ),
                    SubRequest::Update { records } => (
                        "PATCH",
                        format!("{data}/composite/sobjects"),
                        Some(collection(records)),
                    ),
                    SubRequest::Upsert {
                        object,
                        external_id_field,
                        records,
                    } => (
                        "PATCH",
                        format!("{data}/composite/sobjects/{object}/{external_id_field}"),
                        Some(collection(records)),
                    ),
                    SubRequest::Delete { ids } => {
                        let ids: Vec<String> = ids.iter().map(|id| percent_encode(id)).collect();
                        let ids = ids.join(",");
                        let url = format!("{data}/composite/sobjects?ids={ids}&allOrNone=false");
                        ("DELETE", url, None)
                    }
                };
                let mut request = json!({
                    "method": method,
                    "url": url,
                    "referenceId": format!("r{index}"),
                });
                if let Some(body) = body {
                    request["body"] = body;
                }
                if let Some(tag) = self.subrequest_call_options() {
                    request["httpHeaders"] = json!({
                        CALL_OPTIONS_HEADER: format!("client={tag}"),
                    });
                }
                request
            })
            .collect();
        json!({
            "allOrNone": false,
            "collateSubrequests": false,
            "compositeRequest": requests,
        })
    }

    /// Turns one subrequest's answer into a [`SubResponse`], following query pages.
    async fn sub_response(
        &self,
        sub: &SubRequest,
        status: u16,
        body: Value,
        cancel: &CancellationToken,
    ) -> Result<SubResponse, RestError> {
        let unreadable = |message: String| SubResponse::Failed {
            http_status: status,
            errors: vec![ApiError::unreadable(message)],
        };
        if !(200..300).contains(&status) {
            return Ok(SubResponse::Failed {
                http_status: status,
                errors: errors_from_value(&body),
            });
        }
        if let SubRequest::Retrieve { ids, .. } = sub {
            return Ok(match retrieved(body, ids.len()) {
                Ok(records) => SubResponse::Retrieved { records },
                Err(message) => unreadable(message),
            });
        }
        if !matches!(sub, SubRequest::Query { .. }) {
            return Ok(match save_results(&body, sub.record_count()) {
                Ok(results) => SubResponse::Saved(results),
                Err(message) => unreadable(message),
            });
        }
        let QueryPage {
            mut records,
            mut next,
        } = match query_page(body) {
            Ok(page) => page,
            Err(message) => return Ok(unreadable(message)),
        };
        while let Some(path) = next.take() {
            let page = match self.execute(Method::GET, &path, None, true, cancel).await {
                Ok(page) => page,
                Err(RestError::Rejected { status, errors }) => {
                    return Ok(SubResponse::Failed {
                        http_status: status,
                        errors,
                    });
                }
                Err(other) => return Err(other),
            };
            let parsed = serde_json::from_slice(&page)
                .map_err(|e| format!("query page is not JSON: {e}"))
                .and_then(query_page);
            match parsed {
                Ok(page) => {
                    records.extend(page.records);
                    next = page.next;
                }
                Err(message) => return Ok(unreadable(message)),
            }
        }
        Ok(SubResponse::Query { records })
    }
}

/// The `compositeResponse` array as (status, body) per subrequest, in `r0…` order.
fn parse_composite(answer: &[u8], expected: usize) -> Result<Vec<(u16, Value)>, RestError> {
    let protocol = |message: String| RestError::Protocol(message);
    let mut value: Value = serde_json::from_slice(answer)
        .map_err(|e| protocol(format!("composite answer is not JSON: {e}")))?;
    let Value::Array(items) = value["compositeResponse"].take() else {
        return Err(protocol(
            "composite answer has no compositeResponse array".into(),
        ));
    };
    let mut slots: Vec<Option<(u16, Value)>> = vec![None; expected];
    for mut item in items {
        let reference = item["referenceId"].as_str().unwrap_or_default();
        let index = reference
            .strip_prefix('r')
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|&i| i < expected)
            .ok_or_else(|| protocol(format!("unexpected referenceId `{reference}`")))?;
        let status = item["httpStatusCode"]
            .as_u64()
            .and_then(|s| u16::try_from(s).ok())
            .ok_or_else(|| protocol(format!("subrequest {reference} has no httpStatusCode")))?;
        if slots[index].is_some() {
            return Err(protocol(format!(
                "referenceId `{reference}` answered twice"
            )));
        }
        slots[index] = Some((status, item["body"].take()));
    }
    slots
        .into_iter()
        .enumerate()
        .map(|(i, slot)| slot.ok_or_else(|| protocol(format!("no answer for subrequest r{i}"))))
        .collect()
}
