//! The shape of a change event's `record`, and how values read over REST or Bulk API 2.0 are put
//! in it, so that a re-read or snapshot record and a change record of one Id look alike.
//!
//! Contract:
//! * [`fields_of`]: the body fields of a change event's writer schema (every top-level field but
//!   `ChangeEventHeader`) with their [`Shape`]: `long` (dates and datetimes as epoch ms), a
//!   compound (a nested record: address, name, geolocation, children in schema order, reused
//!   named types resolved), or plain.
//! * [`select`]: `SELECT Id, <fields> FROM <Object> [WHERE Id IN (…)]`, every name checked to be
//!   an API name and every Id well-formed, so nothing from an event can change the query.
//! * [`normalize`]: a REST query row (JSON) in the event's shape: every schema field present
//!   (`null` when unset), `long` fields given as Salesforce date/datetime text turned into epoch
//!   ms, compounds as objects with the schema's child names (REST keys matched
//!   case-insensitively, so a real org's `{"city": …}` fills `City`), every child present.
//! * The snapshot writes CSV text in the same shape by the field's [`Shape`] (booleans, integers,
//!   doubles, epoch ms: `crate::source::snapshot::columns`).

use apache_avro::Schema;
use apache_avro::schema::RecordSchema;
use serde_json::{Map, Value};

/// Why a query could not be built or a value does not fit the event's schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    /// The event names something that cannot go into a query.
    #[error("cannot read {object}: {reason}")]
    Unqueryable { object: String, reason: String },
    /// A value read does not fit the event's schema.
    #[error("{object}.{field}: {reason}")]
    Value {
        object: String,
        field: String,
        reason: String,
    },
}

/// The shape a body field takes in the envelope's `record`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Shape {
    /// Text (and anything the schema does not type more precisely).
    Plain,
    /// `boolean`.
    Bool,
    /// `int`.
    Int,
    /// `double` or `float`.
    Double,
    /// `long`: dates and datetimes are epoch ms.
    Long,
    /// A nested record (address, name): children in schema order.
    Compound(Vec<(String, Shape)>),
}

/// One queried field.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Field {
    pub(crate) name: String,
    pub(crate) shape: Shape,
}

/// `^[A-Za-z0-9_]+$`.
pub(crate) fn is_api_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `SELECT Id, <fields> FROM <object> [WHERE Id IN ('…', …)]`.
pub(crate) fn select(
    object: &str,
    fields: &[Field],
    ids: Option<&[&str]>,
) -> Result<String, ShapeError> {
    let bad = |reason: String| ShapeError::Unqueryable {
        object: object.to_owned(),
        reason,
    };
    if !is_api_name(object) {
        return Err(bad(format!("`{object}` is not an object API name")));
    }
    let mut soql = String::from("SELECT Id");
    for field in fields.iter().filter(|f| f.name != "Id") {
        if !is_api_name(&field.name) {
            return Err(bad(format!("`{}` is not a field API name", field.name)));
        }
        soql.push_str(", ");
        soql.push_str(&field.name);
    }
    soql.push_str(" FROM ");
    soql.push_str(object);
    if let Some(ids) = ids {
        if let Some(id) = ids
            .iter()
            .find(|id| !crate::salesforce::sfid::is_well_formed(id))
        {
            return Err(bad(format!("`{id}` is not a record Id")));
        }
        let list: Vec<String> = ids.iter().map(|id| format!("'{id}'")).collect();
        soql.push_str(" WHERE Id IN (");
        soql.push_str(&list.join(", "));
        soql.push(')');
    }
    Ok(soql)
}

/// The body fields of a change event schema (every top-level field but `ChangeEventHeader`).
pub(crate) fn fields_of(schema: &Schema) -> Vec<Field> {
    let mut named = Vec::new();
    collect_records(schema, &mut named);
    let Schema::Record(body) = schema else {
        return Vec::new();
    };
    body.fields
        .iter()
        .filter(|f| f.name != "ChangeEventHeader")
        .map(|f| Field {
            name: f.name.clone(),
            shape: shape(&f.schema, &named, 0),
        })
        .collect()
}

/// Every named record of the schema (for `Ref`s to reused types such as `Address`).
fn collect_records<'s>(schema: &'s Schema, out: &mut Vec<&'s RecordSchema>) {
    match schema {
        Schema::Record(r) => {
            out.push(r);
            for f in &r.fields {
                collect_records(&f.schema, out);
            }
        }
        Schema::Union(u) => u.variants().iter().for_each(|v| collect_records(v, out)),
        Schema::Array(a) => collect_records(&a.items, out),
        Schema::Map(m) => collect_records(&m.types, out),
        _ => {}
    }
}

fn shape(schema: &Schema, named: &[&RecordSchema], depth: usize) -> Shape {
    match schema {
        Schema::Long
        | Schema::TimestampMillis
        | Schema::TimestampMicros
        | Schema::LocalTimestampMillis
        | Schema::LocalTimestampMicros => Shape::Long,
        Schema::Boolean => Shape::Bool,
        Schema::Int => Shape::Int,
        Schema::Double | Schema::Float => Shape::Double,
        Schema::Union(u) => {
            // Prefer a record variant (a switchable name's `[string, record]`), else the first
            // non-null one.
            let variants = u.variants();
            let pick = variants
                .iter()
                .find(|v| matches!(v, Schema::Record(_) | Schema::Ref { .. }))
                .or_else(|| variants.iter().find(|v| !matches!(v, Schema::Null)));
            pick.map_or(Shape::Plain, |v| shape(v, named, depth))
        }
        Schema::Ref { name } if depth == 0 => named
            .iter()
            .find(|r| r.name == *name)
            .or_else(|| named.iter().find(|r| r.name.name == name.name))
            .map_or(Shape::Plain, |r| compound(r, named, depth)),
        Schema::Record(r) if depth == 0 => compound(r, named, depth),
        _ => Shape::Plain,
    }
}

fn compound(record: &RecordSchema, named: &[&RecordSchema], depth: usize) -> Shape {
    Shape::Compound(
        record
            .fields
            .iter()
            .map(|f| (f.name.clone(), shape(&f.schema, named, depth + 1)))
            .collect(),
    )
}

/// A REST record in the event's shape; returns its Id too.
pub(crate) fn normalize(
    object: &str,
    fields: &[Field],
    mut row: Map<String, Value>,
) -> Result<(String, Map<String, Value>), ShapeError> {
    let id = match row.remove("Id") {
        Some(Value::String(id)) => id,
        other => {
            return Err(ShapeError::Value {
                object: object.to_owned(),
                field: "Id".into(),
                reason: format!("query row without an Id ({other:?})"),
            });
        }
    };
    let mut record = Map::with_capacity(fields.len());
    for field in fields {
        let value = take_field(&mut row, &field.name).unwrap_or(Value::Null);
        let value = convert(object, &field.name, &field.shape, value)?;
        record.insert(field.name.clone(), value);
    }
    Ok((id, record))
}

/// Removes `name` from `row` (exact spelling first, then case-insensitively).
fn take_field(row: &mut Map<String, Value>, name: &str) -> Option<Value> {
    if let Some(v) = row.remove(name) {
        return Some(v);
    }
    let key = row.keys().find(|k| k.eq_ignore_ascii_case(name))?.clone();
    row.remove(&key)
}

pub(crate) fn convert(
    object: &str,
    field: &str,
    shape: &Shape,
    value: Value,
) -> Result<Value, ShapeError> {
    match (shape, value) {
        (_, Value::Null) => Ok(Value::Null),
        (Shape::Long, Value::String(text)) => crate::salesforce::sftime::parse_datetime(&text)
            .or_else(|_| crate::salesforce::sftime::parse_date(&text))
            .map(Value::from)
            .map_err(|reason| ShapeError::Value {
                object: object.to_owned(),
                field: field.to_owned(),
                reason: format!("`{text}` is not a Salesforce date or datetime: {reason}"),
            }),
        (Shape::Compound(children), Value::Object(mut parts)) => {
            let mut out = Map::with_capacity(children.len());
            for (child, child_shape) in children {
                let v = take_field(&mut parts, child).unwrap_or(Value::Null);
                let path = format!("{field}.{child}");
                out.insert(child.clone(), convert(object, &path, child_shape, v)?);
            }
            Ok(Value::Object(out))
        }
        (_, other) => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::cdc::schema::EventSchema;
    use serde_json::json;

    fn schema() -> EventSchema {
        EventSchema::parse("s1", include_str!("../../schemas/AccountChangeEvent.avsc"))
            .expect("schema")
    }

    #[test]
    fn the_field_list_is_the_event_schema_body() {
        let fields = fields_of(&schema().schema);
        let names: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names.first(), Some(&"Name"));
        assert_eq!(names.last(), Some(&"External_Id__c"));
        assert!(!names.contains(&"ChangeEventHeader"));
        let by_name = |n: &str| &fields.iter().find(|f| f.name == n).expect(n).shape;
        assert_eq!(*by_name("CreatedDate"), Shape::Long);
        assert_eq!(*by_name("Name"), Shape::Plain);
        // The reused `Address` type (a Ref in ShippingAddress) resolves like the first use.
        for address in ["BillingAddress", "ShippingAddress"] {
            let Shape::Compound(children) = by_name(address) else {
                panic!("{address} is not a compound");
            };
            assert_eq!(children.len(), 11, "{address}");
            assert_eq!(children[1], ("City".to_owned(), Shape::Plain));
        }
        let soql = select("Account", &fields[..2], Some(&["001000000000001AAA"])).expect("soql");
        assert_eq!(
            soql,
            "SELECT Id, Name, Type FROM Account WHERE Id IN ('001000000000001AAA')"
        );
        assert_eq!(
            select("Account", &fields[..1], None).expect("soql"),
            "SELECT Id, Name FROM Account"
        );
        assert!(select("Account", &fields, Some(&["1' OR Name != '"])).is_err());
        assert!(select("Acc ount", &fields, None).is_err());
    }

    #[test]
    fn rest_rows_take_the_event_shape() {
        let fields = fields_of(&schema().schema);
        let row = json!({
            "Id": "001000000000001AAA",
            "Name": "Acme",
            "CreatedDate": "2024-01-31T12:05:09.042+0000",
            "billingaddress": {"city": "Paris", "countryCode": "FR", "geocodeAccuracy": null},
            "NumberOfEmployees": 12,
        });
        let Value::Object(row) = row else { panic!() };
        let (id, record) = normalize("Account", &fields, row).expect("normalize");
        assert_eq!(id, "001000000000001AAA");
        assert_eq!(record.len(), fields.len(), "every schema field is present");
        assert_eq!(record["Name"], "Acme");
        assert_eq!(record["CreatedDate"], json!(1_706_702_709_042_i64));
        assert_eq!(record["NumberOfEmployees"], 12);
        assert_eq!(record["Phone"], Value::Null);
        assert_eq!(record["ShippingAddress"], Value::Null);
        let billing = record["BillingAddress"].as_object().expect("address");
        assert_eq!(billing.len(), 11);
        assert_eq!(billing["City"], "Paris");
        assert_eq!(billing["CountryCode"], "FR");
        assert_eq!(billing["Street"], Value::Null);

        let Value::Object(bad) = json!({"Id": "001000000000001AAA", "CreatedDate": "yesterday"})
        else {
            panic!()
        };
        let err = normalize("Account", &fields, bad).expect_err("bad date");
        assert!(
            err.to_string()
                .starts_with("Account.CreatedDate: `yesterday`"),
            "{err}"
        );
    }
}
