//! sObject Collections: `/composite/sobjects` create (POST), update (PATCH), delete (DELETE
//! `?ids=…&allOrNone=`), `/composite/sobjects/{Object}/{ExternalIdField}` upsert (PATCH) and
//! `/composite/sobjects/{Object}` retrieve with a request body (POST).
//!
//! Contract:
//! * Body `{"allOrNone": bool (default false), "records": [...]}`; at most 200 records (or ids)
//!   → 400 `EXCEEDED_ID_LIMIT` otherwise. Every record needs `attributes.type` (an object of the
//!   org; the URI's object for upsert) → 400 `INVALID_TYPE` otherwise; create accepts mixed
//!   types in at most 10 chunks of consecutive same-type records.
//! * The whole request is refused (400, nothing written) when any record names an unknown field
//!   (`INVALID_FIELD`, "No such column 'F' on sobject of type T") or carries an ill-typed value
//!   (`JSON_PARSER_ERROR` naming the field), or the body is not JSON of that shape.
//! * Otherwise HTTP 200 with one result per record, in input order:
//!   `{"id", "success": true, "errors": []}` (+ `"created"` for upsert), or
//!   `{"success": false, "errors": [{"statusCode", "message", "fields"}]}` (no `id`, as
//!   Salesforce omits it). Records are applied in order, each on its own; the successful ones
//!   commit as one transaction (one `transactionKey`, merged events).
//! * `allOrNone: true` and any failure: nothing is committed; failed records carry their error,
//!   the others `ALL_OR_NONE_OPERATION_ROLLED_BACK` (with their `id` when the record existed).
//! * Per-record errors: those of the org (`REQUIRED_FIELD_MISSING`, `DUPLICATE_VALUE`,
//!   `ENTITY_IS_DELETED`, `INVALID_CROSS_REFERENCE_KEY`, `MALFORMED_ID`,
//!   `FIELD_CUSTOM_VALIDATION_EXCEPTION`, `UNABLE_TO_LOCK_ROW`, read-only fields), plus: an `Id`
//!   in a create (`INVALID_FIELD_FOR_INSERT_UPDATE`, "cannot specify Id in an insert call") or an
//!   upsert (`INVALID_FIELD`, "Only external ids are supported…"), a missing `Id` in an update or
//!   External Id in an upsert (`MISSING_ARGUMENT`), one External Id twice in an upsert
//!   (`DUPLICATE_EXTERNAL_ID`, every occurrence).
//! * Retrieve (POST, <https://developer.salesforce.com/docs/platform/api-rest/guide/resources-composite-sobjects-collections-retrieve-post.html>):
//!   body `{"ids": [...], "fields": [...]}`, both required and non-empty (400
//!   `JSON_PARSER_ERROR` / `MISSING_ARGUMENT` otherwise); at most [`MAX_RETRIEVE`] ids (400
//!   `EXCEEDED_ID_LIMIT`); an unknown field refuses the request (400 `INVALID_FIELD`, "No such
//!   column"); an unknown object is 404 `NOT_FOUND`. Otherwise HTTP 200 with one entry per id, in
//!   the order of the ids: the record (`attributes` and the requested fields, canonical names,
//!   datetimes as Salesforce text) or `null` for an id that is malformed, not found, of another
//!   object, or deleted. Nothing is written; inside `/composite` it is one of the five
//!   collection or query subrequests.

use std::collections::HashMap;

use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use super::call::{Call, Exec, flag, query_param};
use super::render::{canonical_field, render_record};
use super::reply::{RecordError, Reply};
use crate::sim::error::SimError;
use crate::sim::ids;
use crate::sim::org::{Applied, Op, Org};

/// Most records (or ids) per call.
pub const MAX_RECORDS: usize = 200;
/// Most ids per retrieve (POST) call.
pub const MAX_RETRIEVE: usize = 2_000;
/// Most chunks of same-type records in one create.
const MAX_CHUNKS: usize = 10;

fn too_many() -> Reply {
    Reply::error(
        StatusCode::BAD_REQUEST,
        "EXCEEDED_ID_LIMIT",
        "record limit reached. cannot submit more than 200 records in a single call",
        &[],
    )
}

/// A record of the request: refused before it was tried, or the op it became.
enum Slot {
    Rejected(RecordError),
    Op(usize),
}

/// The slots of a request's records, in order, and the operations of those not refused.
fn slots_of(records: impl IntoIterator<Item = Result<Op, RecordError>>) -> (Vec<Slot>, Vec<Op>) {
    let mut slots = Vec::new();
    let mut ops = Vec::new();
    for record in records {
        match record {
            Ok(op) => {
                slots.push(Slot::Op(ops.len()));
                ops.push(op);
            }
            Err(e) => slots.push(Slot::Rejected(e)),
        }
    }
    (slots, ops)
}

/// `{"allOrNone", "records"}` of a create/update/upsert body.
fn parse_body(call: &Call) -> Result<(bool, Vec<Value>), Reply> {
    let mut body = call.body.object()?;
    let all_or_none = flag(&body, "allOrNone")?;
    let records = match body.remove("records") {
        Some(Value::Array(records)) => records,
        Some(other) => {
            return Err(Reply::json_parser_error(&format!(
                "Cannot deserialize records: expected an array, got {other}"
            )));
        }
        None => {
            return Err(Reply::json_parser_error(
                "Cannot deserialize the request body: records is required",
            ));
        }
    };
    if records.len() > MAX_RECORDS {
        return Err(too_many());
    }
    Ok((all_or_none, records))
}

/// A record's type and fields (`attributes` removed, component fields nested into their
/// compound as the org stores them), checked against the org: the whole request's refusals; a
/// compound or formula field named refuses that record only (`INVALID_FIELD_FOR_INSERT_UPDATE`).
pub(super) fn typed_record(exec: &Exec, record: Value) -> Result<(String, Stored), Reply> {
    let Value::Object(mut fields) = record else {
        return Err(Reply::json_parser_error(
            "Cannot deserialize instance of sObject from a value that is not a JSON object",
        ));
    };
    let object = fields
        .remove("attributes")
        .and_then(|a| a.get("type").and_then(Value::as_str).map(str::to_owned))
        // Object names match in any case, as field names do.
        .map(|o| exec.org.canonical_object(&o).map_or(o, str::to_owned))
        .ok_or_else(|| {
            Reply::error(
                StatusCode::BAD_REQUEST,
                "INVALID_TYPE",
                "Must send a concrete entity type.",
                &[],
            )
        })?;
    if !exec.org.has_object(&object) {
        return Err(Reply::error(
            StatusCode::BAD_REQUEST,
            "INVALID_TYPE",
            &Org::unsupported_object(&object),
            &[],
        ));
    }
    let Some(meta) = exec.org.meta(&object) else {
        return Err(Reply::not_found());
    };
    let fields = match meta.to_stored(&object, fields) {
        Ok(f) => f,
        Err(e) => return Ok((object, Err(RecordError::of(&e)))),
    };
    if let Err(e) = exec.org.check_shape(&object, &fields) {
        return Err(match e {
            SimError::UnknownField { object, field } => Reply::error(
                StatusCode::BAD_REQUEST,
                "INVALID_FIELD",
                &format!("No such column '{field}' on sobject of type {object}"),
                &[&field],
            ),
            // A value Salesforce cannot read refuses the whole request with one error that
            // names no field and no record, only the type and the position in the body:
            // `[{"message":"Cannot deserialize instance of multipicklist from START_ARRAY value
            // [line:1, column:842]","errorCode":"JSON_PARSER_ERROR"}]` (captures in public
            // issues verbb/formie#2124 and regican/Salesforce#2).
            SimError::InvalidValue { field, reason, .. } => Reply::error(
                StatusCode::BAD_REQUEST,
                "JSON_PARSER_ERROR",
                &format!("Cannot deserialize value for field {field}: {reason}"),
                &[],
            ),
            other => RecordError::of(&other).reply_400(),
        });
    }
    Ok((object, Ok(fields)))
}

/// A record's fields as the org stores them, or why the record is refused on its own.
pub(super) type Stored = Result<Map<String, Value>, RecordError>;

impl RecordError {
    fn reply_400(&self) -> Reply {
        Reply::json(
            StatusCode::BAD_REQUEST,
            json!([{ "message": self.message, "errorCode": self.code, "fields": self.fields }]),
        )
    }
}

/// Writes the ops and renders one result per slot.
fn finish(
    exec: &mut Exec,
    call: &Call,
    slots: Vec<Slot>,
    ops: Vec<Op>,
    all_or_none: bool,
    upsert: bool,
) -> Reply {
    let rejected = slots.iter().any(|s| matches!(s, Slot::Rejected(_)));
    let results = exec.write(&ops, &call.origin(), all_or_none, rejected);
    let rolled_back = all_or_none && (rejected || results.iter().any(Result::is_err));
    let items: Vec<Value> = slots
        .into_iter()
        .map(|slot| match slot {
            Slot::Rejected(e) => failure(&e),
            Slot::Op(i) => match &results[i] {
                Err(e) => failure(&RecordError::of(e)),
                Ok(applied) if rolled_back => rolled_back_item(applied),
                Ok(applied) => {
                    let mut item = json!({"id": applied.id, "success": true, "errors": []});
                    if upsert {
                        item["created"] = Value::Bool(applied.created);
                    }
                    item
                }
            },
        })
        .collect();
    Reply::json(StatusCode::OK, Value::Array(items))
}

fn failure(e: &RecordError) -> Value {
    json!({"success": false, "errors": [e.to_json()]})
}

fn rolled_back_item(applied: &Applied) -> Value {
    let error = RecordError::new(
        "ALL_OR_NONE_OPERATION_ROLLED_BACK",
        "Record rolled back because not all records were valid and the request was using AllOrNone header",
        &[],
    );
    let mut item = failure(&error);
    if !applied.created {
        item["id"] = Value::String(applied.id.clone());
    }
    item
}

/// `POST /composite/sobjects`.
pub(super) fn create(exec: &mut Exec, call: &Call) -> Reply {
    let (all_or_none, records) = match parse_body(call) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let mut typed = Vec::with_capacity(records.len());
    for record in records {
        match typed_record(exec, record) {
            Ok(t) => typed.push(t),
            Err(r) => return r,
        }
    }
    let chunks = typed.windows(2).filter(|w| w[0].0 != w[1].0).count() + 1;
    if !typed.is_empty() && chunks > MAX_CHUNKS {
        return Reply::error(
            StatusCode::BAD_REQUEST,
            "INVALID_BATCH_SIZE",
            "Cannot have more than 10 chunks in a single operation. Please rearrange the data to reduce chunking.",
            &[],
        );
    }
    let (slots, ops) = slots_of(typed.into_iter().map(|(object, fields)| {
        let fields = fields?;
        if has_id(&fields) {
            return Err(RecordError::new(
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                "cannot specify Id in an insert call",
                &["Id"],
            ));
        }
        let id = exec
            .org
            .reserve_id(&object)
            .map_err(|e| RecordError::of(&e))?;
        Ok(Op::Create { object, id, fields })
    }));
    finish(exec, call, slots, ops, all_or_none, false)
}

/// Whether a record names its Id, in any case (field names are case-insensitive in Salesforce).
fn has_id(fields: &Map<String, Value>) -> bool {
    fields.keys().any(|k| k.eq_ignore_ascii_case("id"))
}

/// `PATCH /composite/sobjects`.
pub(super) fn update(exec: &mut Exec, call: &Call) -> Reply {
    let (all_or_none, records) = match parse_body(call) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let mut typed = Vec::with_capacity(records.len());
    for record in records {
        match typed_record(exec, record) {
            Ok(t) => typed.push(t),
            Err(r) => return r,
        }
    }
    let (slots, ops) = slots_of(typed.into_iter().map(|(object, fields)| {
        let mut fields = fields?;
        // `id` or `Id`: Salesforce's own example of this call sends `"id"`.
        let id_key = fields
            .keys()
            .find(|k| k.eq_ignore_ascii_case("id"))
            .cloned();
        match id_key.and_then(|k| fields.remove(&k)) {
            Some(Value::String(id)) if !id.is_empty() => Ok(Op::Update { object, id, fields }),
            _ => Err(RecordError::new(
                "MISSING_ARGUMENT",
                "Id not specified in an update call",
                &[],
            )),
        }
    }));
    finish(exec, call, slots, ops, all_or_none, false)
}

/// `PATCH /composite/sobjects/{Object}/{ExternalIdField}`.
pub(super) fn upsert(exec: &mut Exec, call: &Call, object: &str, field: &str) -> Reply {
    if !exec.org.has_object(object) {
        return Reply::not_found();
    }
    if let Err(r) = exec.external_id_field(object, field) {
        return r;
    }
    let (all_or_none, records) = match parse_body(call) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let mut typed = Vec::with_capacity(records.len());
    for record in records {
        match typed_record(exec, record) {
            Ok((t, _)) if t != object => {
                return Reply::error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_TYPE",
                    &format!(
                        "Record of type {t} in an upsert of {object}: the list can contain objects only of the type indicated in the request URI"
                    ),
                    &[],
                );
            }
            Ok((_, fields)) => typed.push(fields),
            Err(r) => return r,
        }
    }
    let key = |fields: &Map<String, Value>| {
        fields
            .get(field)
            .and_then(Value::as_str)
            .filter(|v| !v.trim().is_empty())
            .map(str::to_owned)
    };
    let mut seen: HashMap<String, usize> = HashMap::new();
    for fields in typed.iter().flatten() {
        if let Some(v) = key(fields) {
            *seen.entry(v.to_lowercase()).or_default() += 1;
        }
    }
    let (slots, ops) = slots_of(typed.into_iter().map(|fields| {
        let fields = fields?;
        if has_id(&fields) {
            return Err(RecordError::new(
                "INVALID_FIELD",
                "Only external ids are supported. Don't use record ids.",
                &["Id"],
            ));
        }
        let Some(value) = key(&fields) else {
            return Err(RecordError::new(
                "MISSING_ARGUMENT",
                format!("{field} not specified"),
                &[],
            ));
        };
        if seen.get(&value.to_lowercase()).copied().unwrap_or(0) > 1 {
            return Err(RecordError::new(
                "DUPLICATE_EXTERNAL_ID",
                format!("Duplicate external id specified: {value}"),
                &[field],
            ));
        }
        Ok(Op::Upsert {
            object: object.to_owned(),
            field: field.to_owned(),
            value,
            fields,
        })
    }));
    finish(exec, call, slots, ops, all_or_none, true)
}

/// `DELETE /composite/sobjects?ids=…&allOrNone=…`.
pub(super) fn delete(exec: &mut Exec, call: &Call) -> Reply {
    let ids_param = query_param(call.query, "ids").unwrap_or_default();
    let raw_ids: Vec<&str> = ids_param
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if raw_ids.is_empty() {
        return Reply::error(
            StatusCode::BAD_REQUEST,
            "MISSING_ARGUMENT",
            "ids parameter is required: a comma-separated list of record Ids",
            &["ids"],
        );
    }
    if raw_ids.len() > MAX_RECORDS {
        return too_many();
    }
    let all_or_none = match query_param(call.query, "allOrNone").as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Reply::error(
                StatusCode::BAD_REQUEST,
                "INVALID_INPUT",
                &format!("allOrNone must be true or false, not {other}"),
                &["allOrNone"],
            );
        }
    };
    let mut slots = Vec::with_capacity(raw_ids.len());
    let mut ops = Vec::with_capacity(raw_ids.len());
    for raw in raw_ids {
        let object =
            ids::normalize(raw).and_then(|id| exec.org.object_for_id(&id).map(str::to_owned));
        match object {
            Some(object) => {
                slots.push(Slot::Op(ops.len()));
                ops.push(Op::Delete {
                    object,
                    id: raw.to_owned(),
                });
            }
            None if ids::normalize(raw).is_none() => slots.push(Slot::Rejected(RecordError::new(
                "MALFORMED_ID",
                format!("malformed id {raw}"),
                &[],
            ))),
            None => slots.push(Slot::Rejected(RecordError::new(
                "INVALID_CROSS_REFERENCE_KEY",
                "invalid cross reference id",
                &[],
            ))),
        }
    }
    finish(exec, call, slots, ops, all_or_none, false)
}

/// `POST /composite/sobjects/{Object}`: retrieve by Id with a request body.
pub(super) fn retrieve(exec: &mut Exec, call: &Call, object: &str) -> Reply {
    if !exec.org.has_object(object) {
        return Reply::not_found();
    }
    let Some(meta) = exec.org.meta(object) else {
        return Reply::not_found();
    };
    let body = match call.body.object() {
        Ok(b) => b,
        Err(r) => return r,
    };
    let list = |name: &str| -> Result<Vec<String>, Reply> {
        match body.get(name) {
            None | Some(Value::Null) => Err(Reply::error(
                StatusCode::BAD_REQUEST,
                "MISSING_ARGUMENT",
                &format!("{name} parameter is required"),
                &[name],
            )),
            Some(Value::Array(items)) => {
                let strings: Option<Vec<String>> = items
                    .iter()
                    .map(|v| v.as_str().map(str::to_owned))
                    .collect();
                match strings {
                    Some(s) if !s.is_empty() => Ok(s),
                    Some(_) => Err(Reply::error(
                        StatusCode::BAD_REQUEST,
                        "MISSING_ARGUMENT",
                        &format!("{name} parameter is required"),
                        &[name],
                    )),
                    None => Err(Reply::json_parser_error(&format!(
                        "Cannot deserialize {name}: expected an array of strings"
                    ))),
                }
            }
            Some(other) => Err(Reply::json_parser_error(&format!(
                "Cannot deserialize {name}: expected an array, got {other}"
            ))),
        }
    };
    let (ids_list, field_list) = match (list("ids"), list("fields")) {
        (Ok(i), Ok(f)) => (i, f),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    if ids_list.len() > MAX_RETRIEVE {
        return Reply::error(
            StatusCode::BAD_REQUEST,
            "EXCEEDED_ID_LIMIT",
            &format!(
                "record limit reached. cannot submit more than {MAX_RETRIEVE} records in a single call"
            ),
            &[],
        );
    }
    let mut fields = Vec::with_capacity(field_list.len());
    for name in &field_list {
        match canonical_field(&meta, name) {
            Some(f) => fields.push(f),
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
    let records: Vec<Value> = ids_list
        .iter()
        .map(|id| match exec.org.view(exec.outer.as_ref(), object, id) {
            Some(record) if record.get("IsDeleted") != Some(&Value::Bool(true)) => Value::Object(
                render_record(&meta, object, call.version, &record, Some(&fields)),
            ),
            _ => Value::Null,
        })
        .collect();
    Reply::json(StatusCode::OK, Value::Array(records))
}
