//! Records as REST renders them: `attributes`, the selected fields with their API spelling
//! (every field of the object's describe by default, unset ones null): compound fields'
//! components (`BillingCity`) and the read-only compound (`BillingAddress` as an object with
//! lower-case keys, Contact `Name` as text), formula fields computed, dates and datetimes as
//! Salesforce's text (`2024-01-31`, `2024-01-31T12:05:09.042+0000`); and the URL of a record's
//! row resource.

use serde_json::{Map, Value, json};

use super::call::Call;
use crate::salesforce::sftime;
use crate::sim::catalog::Temporal;
use crate::sim::fieldmeta::ObjectMeta;

/// The API spelling of a readable field of the object, matched case-insensitively.
pub(super) fn canonical_field(meta: &ObjectMeta, name: &str) -> Option<String> {
    meta.field(name).map(|f| f.name.clone())
}

/// A field value as REST renders it: dates and datetimes as Salesforce text.
fn render_value(meta: &ObjectMeta, rec: &Map<String, Value>, field: &str) -> Value {
    let value = meta.read(rec, field);
    let temporal = meta.field(field).and_then(|f| f.temporal);
    match (temporal, value.as_i64()) {
        (Some(Temporal::DateTime), Some(ms)) => Value::String(sftime::format_datetime(ms)),
        (Some(Temporal::Date), Some(ms)) => Value::String(sftime::format_date(ms)),
        _ => value,
    }
}

/// A record as REST returns it: `attributes`, then the selected fields (every field when
/// `fields` is `None`), unset ones null.
pub(super) fn render_record(
    meta: &ObjectMeta,
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
    match fields {
        Some(names) => {
            for name in names {
                out.insert(name.clone(), render_value(meta, record, name));
            }
        }
        None => {
            for f in &meta.fields {
                out.insert(f.name.clone(), render_value(meta, record, &f.name));
            }
        }
    }
    out
}

/// The URL of a record's row resource (the `Location` of a created record).
pub(super) fn row_url(call: &Call, object: &str, id: &str) -> String {
    format!("/services/data/v{}/sobjects/{object}/{id}", call.version)
}
