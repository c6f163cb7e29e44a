//! Requested field values checked against a schema: names (system fields read-only for writes),
//! types, nullability; dates and datetimes given as Salesforce/ISO text normalized to epoch ms
//! (datetimes truncated to the second, as a real org stores them);
//! and the Avro value of a scalar.

use apache_avro::types::Value as Avro;
use serde_json::{Map, Value as Json};

use crate::salesforce::sftime;
use crate::sim::catalog::{FieldDef, FieldKind, ScalarType, SchemaVersion, Temporal};
use crate::sim::error::SimError;
use crate::sim::util::to_second;

/// Fields maintained by the org; a change request naming one is rejected.
pub const SYSTEM_FIELDS: &[&str] = &[
    "Id",
    "CreatedDate",
    "CreatedById",
    "LastModifiedDate",
    "LastModifiedById",
    "SystemModstamp",
    "IsDeleted",
];

/// How [`normalize_fields`] treats system fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldCheck {
    /// A write: system fields are read-only.
    Write,
    /// A request's shape: system fields pass unchecked.
    Shape,
    /// A platform event: every schema field may be set.
    Event,
}

/// Checks names and types of requested field values against `schema` and returns them
/// normalized: date/datetime text (`2024-01-31`, `2024-01-31T12:05:09.042+0000`, ISO 8601)
/// becomes epoch ms, and names are matched case-insensitively and given their API spelling, as
/// Salesforce matches them (its own sObject Collections update example sends `"id"`: REST API
/// Developer Guide, "Update Records Using sObject Collections").
pub fn normalize_fields(
    schema: &SchemaVersion,
    object: &str,
    fields: &Map<String, Json>,
    check: FieldCheck,
) -> Result<Map<String, Json>, SimError> {
    let mut out = Map::new();
    for (requested, value) in fields {
        let system = SYSTEM_FIELDS
            .iter()
            .find(|s| s.eq_ignore_ascii_case(requested));
        if let (true, Some(system)) = (check != FieldCheck::Event, system) {
            if check == FieldCheck::Write {
                return Err(SimError::ReadOnlyField {
                    object: object.to_owned(),
                    field: (*system).to_owned(),
                });
            }
            out.insert((*system).to_owned(), value.clone());
            continue;
        }
        let def = schema
            .field_ignore_case(requested)
            .ok_or_else(|| SimError::UnknownField {
                object: object.to_owned(),
                field: requested.clone(),
            })?;
        let name = &def.name;
        let bad = |reason: String| SimError::InvalidValue {
            object: object.to_owned(),
            field: name.clone(),
            reason,
        };
        if value.is_null() {
            if !def.nullable {
                return Err(bad("the field cannot be null".into()));
            }
            out.insert(name.clone(), Json::Null);
            continue;
        }
        match &def.kind {
            FieldKind::Scalar(t) => {
                let value = match (def.temporal, value) {
                    // Stored to the second: SOAP API Developer Guide, "Primitive Data Types"
                    // (dateTime: "a precision of one second"); see `util::to_second`.
                    (Some(Temporal::DateTime), Json::String(s)) => {
                        Json::from(to_second(sftime::parse_datetime(s).map_err(bad)?))
                    }
                    (Some(Temporal::DateTime), Json::Number(n)) if n.as_i64().is_some() => {
                        Json::from(n.as_i64().map_or(0, to_second))
                    }
                    (Some(Temporal::Date), Json::String(s)) => {
                        Json::from(sftime::parse_date(s).map_err(bad)?)
                    }
                    _ => value.clone(),
                };
                if scalar_to_avro(*t, &value).is_none() {
                    return Err(bad(format!("expected {}, got {value}", expected(def, *t))));
                }
                out.insert(name.clone(), value);
            }
            FieldKind::Compound(children) => {
                let obj = value.as_object().ok_or_else(|| {
                    bad(format!("expected an object of nested fields, got {value}"))
                })?;
                for (cname, cvalue) in obj {
                    let Some((_, t)) = children.iter().find(|(n, _)| n == cname) else {
                        return Err(SimError::UnknownField {
                            object: object.to_owned(),
                            field: format!("{name}.{cname}"),
                        });
                    };
                    if !cvalue.is_null() && scalar_to_avro(*t, cvalue).is_none() {
                        return Err(bad(format!(
                            "{cname}: expected {}, got {cvalue}",
                            t.avro_name()
                        )));
                    }
                }
                out.insert(name.clone(), value.clone());
            }
        }
    }
    Ok(out)
}

fn expected(def: &FieldDef, t: ScalarType) -> &'static str {
    match def.temporal {
        Some(Temporal::DateTime) => "a datetime (epoch ms or 2024-01-31T12:05:09.042+0000)",
        Some(Temporal::Date) => "a date (epoch ms or 2024-01-31)",
        None => t.avro_name(),
    }
}

pub fn scalar_to_avro(t: ScalarType, v: &Json) -> Option<Avro> {
    Some(match t {
        ScalarType::String => Avro::String(v.as_str()?.to_owned()),
        ScalarType::Int => Avro::Int(i32::try_from(v.as_i64()?).ok()?),
        ScalarType::Long => Avro::Long(v.as_i64()?),
        ScalarType::Float => Avro::Float(v.as_f64()? as f32),
        ScalarType::Double => Avro::Double(v.as_f64()?),
        ScalarType::Boolean => Avro::Boolean(v.as_bool()?),
    })
}
