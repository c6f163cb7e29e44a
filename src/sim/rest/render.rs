//! Records as REST renders them: `attributes`, the selected fields with their API spelling
//! (every readable field by default, unset ones null), dates and datetimes as Salesforce's text
//! (`2024-01-31`, `2024-01-31T12:05:09.042+0000`); and the URL of a record's row resource.

use serde_json::{Map, Value, json};

use super::call::Call;
use crate::salesforce::sftime;
use crate::sim::catalog::{SchemaVersion, Temporal};

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
pub(super) fn row_url(call: &Call, object: &str, id: &str) -> String {
    format!("/services/data/v{}/sobjects/{object}/{id}", call.version)
}
