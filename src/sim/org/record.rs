//! One record write: the new record with its system fields (`CreatedDate`, `LastModifiedDate`,
//! `SystemModstamp`, …, default `OwnerId`) and the [`Change`] it records — all set fields for a
//! CREATE, only what differs for an UPDATE (compound fields part by part, nulled parts in
//! `nulledFields`; a Long Text Area's update as a diff when Salesforce would send one, in
//! `diffFields`), `LastModifiedDate` always changed.

use serde_json::{Map, Value as Json};

use super::change::{Change, ChangeType};
use super::state::Record;
use super::text_diff;
use crate::sim::catalog::{FieldDef, FieldKind, SchemaVersion};

/// Updates `LastModifiedDate`/`LastModifiedById`/`SystemModstamp`, recording them as changed.
pub(super) fn touch(
    rec: &mut Map<String, Json>,
    schema: &SchemaVersion,
    change: &mut Change,
    user: &str,
    now: i64,
) {
    for (name, value) in [
        ("LastModifiedDate", Json::from(now)),
        ("LastModifiedById", Json::from(user)),
    ] {
        let always = name == "LastModifiedDate";
        if always || rec.get(name) != Some(&value) {
            if let Some(def) = schema.field(name) {
                change.changed.top.insert(def.position);
                change.values.insert(name.into(), value.clone());
            }
        }
        rec.insert(name.into(), value);
    }
    rec.insert("SystemModstamp".into(), now.into());
}

/// Records the difference between `old` and the requested `new` value of one field.
fn diff_field(change: &mut Change, def: &FieldDef, old: Option<&Json>, new: &Json) {
    match &def.kind {
        FieldKind::Scalar(_) => {
            let old = old.unwrap_or(&Json::Null);
            if old == new {
                return;
            }
            change.changed.top.insert(def.position);
            if new.is_null() {
                change.nulled.top.insert(def.position);
            } else if let Some(diff) = large_text_diff(change, def, old, new) {
                // Listed in `diffFields` (and still in `changedFields`): "Data Differences in
                // Event Fields", Change Data Capture Developer Guide.
                change.diff.top.insert(def.position);
                change.values.insert(def.name.clone(), Json::String(diff));
            } else {
                change.values.insert(def.name.clone(), new.clone());
            }
        }
        FieldKind::Compound(children) => {
            let empty = Map::new();
            let old = old.and_then(Json::as_object).unwrap_or(&empty);
            let mut partial = Map::new();
            for (pos, (cname, _)) in children.iter().enumerate() {
                let requested = match new {
                    Json::Null => Some(&Json::Null),
                    Json::Object(o) => o.get(cname),
                    _ => None,
                };
                let Some(requested) = requested else { continue };
                let before = old.get(cname).unwrap_or(&Json::Null);
                if before == requested {
                    continue;
                }
                change.changed.insert_nested(def.position, pos);
                if requested.is_null() {
                    change.nulled.insert_nested(def.position, pos);
                } else {
                    partial.insert(cname.clone(), requested.clone());
                }
            }
            if !partial.is_empty() {
                change
                    .values
                    .insert(def.name.clone(), Json::Object(partial));
            }
        }
    }
}

/// The diff an UPDATE carries instead of a Long Text Area's new value, when Salesforce's
/// conditions allow one ([`text_diff::diff_value`]); diffs are sent "of updated text values" only
/// ("Sending Data Differences for Fields of Updated Records").
fn large_text_diff(change: &Change, def: &FieldDef, old: &Json, new: &Json) -> Option<String> {
    if change.change_type != ChangeType::Update || !def.is_long_text_area() {
        return None;
    }
    text_diff::diff_value(old.as_str()?, new.as_str()?)
}

/// Writes a validated value into a record (null removes; compound values merge).
fn set_field(rec: &mut Map<String, Json>, schema: &SchemaVersion, name: &str, value: &Json) {
    let compound = matches!(
        schema.field(name).map(|f| &f.kind),
        Some(FieldKind::Compound(_))
    );
    match (compound, value) {
        (_, Json::Null) => {
            rec.remove(name);
        }
        (true, Json::Object(o)) => {
            let entry = rec
                .entry(name.to_owned())
                .or_insert_with(|| Json::Object(Map::new()));
            if let Json::Object(existing) = entry {
                for (k, v) in o {
                    if v.is_null() {
                        existing.remove(k);
                    } else {
                        existing.insert(k.clone(), v.clone());
                    }
                }
                if existing.is_empty() {
                    rec.remove(name);
                }
            }
        }
        (_, v) => {
            rec.insert(name.to_owned(), v.clone());
        }
    }
}

/// All body fields of the schema that the record sets.
pub(super) fn body_values(schema: &SchemaVersion, rec: &Map<String, Json>) -> Map<String, Json> {
    // In the record's (sorted) order, which the map is built from without sorting.
    rec.iter()
        .filter(|(name, _)| schema.field(name).is_some())
        .map(|(name, v)| (name.clone(), v.clone()))
        .collect()
}

/// A new record with its system fields, and its CREATE change.
pub(super) fn created_record(
    schema: &SchemaVersion,
    object: &str,
    id: &str,
    fields: &Map<String, Json>,
    user: &str,
    now: i64,
) -> (Record, Change) {
    let mut rec = Map::new();
    rec.insert("Id".into(), Json::String(id.to_owned()));
    for (k, v) in fields {
        set_field(&mut rec, schema, k, v);
    }
    if schema.field("OwnerId").is_some() && !rec.contains_key("OwnerId") {
        rec.insert("OwnerId".into(), user.into());
    }
    for f in ["CreatedDate", "LastModifiedDate", "SystemModstamp"] {
        rec.insert(f.into(), now.into());
    }
    for f in ["CreatedById", "LastModifiedById"] {
        rec.insert(f.into(), user.into());
    }
    let mut change = Change::new(object, ChangeType::Create, id);
    change.values = body_values(schema, &rec);
    (
        Record {
            fields: rec,
            deleted: false,
        },
        change,
    )
}

/// `old` with `fields` applied and its system fields touched, and its UPDATE change.
pub(super) fn updated_record(
    schema: &SchemaVersion,
    object: &str,
    id: &str,
    mut old: Record,
    fields: &Map<String, Json>,
    user: &str,
    now: i64,
) -> (Record, Change) {
    let mut change = Change::new(object, ChangeType::Update, id);
    for (k, v) in fields {
        if let Some(def) = schema.field(k) {
            diff_field(&mut change, def, old.fields.get(k), v);
        }
        set_field(&mut old.fields, schema, k, v);
    }
    touch(&mut old.fields, schema, &mut change, user, now);
    (old, change)
}
