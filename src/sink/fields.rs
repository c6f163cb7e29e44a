//! Field translation and refusal: a write-back message's fields, checked against the object's
//! describe and rewritten into what a real org accepts, before any write call.
//!
//! Contract ([`translate`] for one write, [`FieldCheck::check`] for a batch):
//! * A real org writes **component** fields only: compound fields (`BillingAddress`, Contact
//!   `Name`, a custom geolocation `Loc__c`) are read-only (SOAP API Developer Guide, "Compound
//!   Fields": "Compound fields are read-only"; "Compound Field Considerations and
//!   Limitations"). A message may give a compound nested as the source emits it
//!   (`"BillingAddress": {"City": "Paris"}`, `"Name": {"LastName": "Doe"}` on Contact,
//!   `"Loc__c": {"Latitude": 48.85}`), the children named as change events or REST reads name
//!   them, in any case; or give the components (`BillingCity`). Either way the write carries
//!   the components ([`super::describe::ObjectFields::component`]). A null compound clears
//!   every component the write may set to null.
//! * Every field is written in the describe's spelling (names match in any case); the object
//!   too. `sink.objects.<object>.ignore_fields` also drops components (`BillingGeocodeAccuracy`
//!   drops it from a nested `BillingAddress`).
//! * Refused, naming the object and the field, so that the record is dead-lettered (stage
//!   `sink.field`) and no write call is spent on it: an object the org does not describe, or
//!   the user may not create (insert) or update (update); a field the describe does not know;
//!   a formula field (`calculated`); a field not `createable` (insert) or not `updateable`
//!   (update); a compound given as a scalar, or with a child it has no component for; a value
//!   of the wrong JSON type for the field's describe `type`, a text longer than its `length`,
//!   null for a field that is not `nillable`; one field given twice with different values
//!   (`BillingCity` and `BillingAddress.City`); an External Id target that is not an External
//!   Id (`externalId` or `idLookup`).
//! * **Upsert** needs every field both `createable` and `updateable` (the object too):
//!   whether it creates or updates depends on the org at the moment of the write, so a message
//!   is refused or accepted the same way whatever the record's state. Its External Id field only
//!   needs `createable` (it is the match key; an update does not change it).
//! * Values: dates and datetimes given as epoch milliseconds (as the source emits them) are
//!   written as Salesforce's text (`2024-01-31`, `2024-01-31T12:05:09.042+0000`); a number given
//!   to a text field is written as its text. Deletes carry no fields and are not checked.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use super::describe::{DescribeCache, Described, ObjectFields};
use super::message::{OpKind, Target, WriteOp};
use super::reporter::{Failure, Item, Reporter};
use crate::config::SinkObjectConfig;
use crate::kafka::KafkaError;
use crate::kafka::headers::DeadLetterStage;
use crate::salesforce::rest::{ApiError, FieldDescribe, RestClient, RestError};
use crate::salesforce::sftime;

/// Why a write cannot be sent: always names the object and, but for the object's own refusals,
/// the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FieldError {
    #[error("the org does not describe object {object} ({code}: {message})")]
    UnknownObject {
        object: String,
        code: String,
        message: String,
    },
    #[error("{object}: the integration user may not {verb} records of it (describe: {flag} false)")]
    ObjectReadOnly {
        object: String,
        verb: &'static str,
        flag: &'static str,
    },
    #[error("{object}.{field}: no such field in the object's describe")]
    UnknownField { object: String, field: String },
    #[error("{object}.{field} is a formula field (calculated): it cannot be written")]
    Calculated { object: String, field: String },
    #[error("{object}.{field} is not {flag} for the integration user: an {op} cannot set it")]
    ReadOnly {
        object: String,
        field: String,
        flag: &'static str,
        op: &'static str,
    },
    #[error(
        "{object}.{field} is a compound field, read-only: give it as an object of its components' values ({children}) or write the components"
    )]
    CompoundScalar {
        object: String,
        field: String,
        children: String,
    },
    #[error("{object}.{field}.{child}: the compound field {field} has no component `{child}`")]
    UnknownChild {
        object: String,
        field: String,
        child: String,
    },
    #[error("{object}.{field} is of type {field_type}: expected {expected}, found {found}")]
    WrongType {
        object: String,
        field: String,
        field_type: String,
        expected: &'static str,
        found: String,
    },
    #[error("{object}.{field}: {chars} characters, the field holds {length}")]
    TooLong {
        object: String,
        field: String,
        chars: usize,
        length: u64,
    },
    #[error("{object}.{field} cannot be null (describe: nillable false)")]
    Required { object: String, field: String },
    #[error("{object}.{field} is given twice with different values ({first} and {second})")]
    Duplicate {
        object: String,
        field: String,
        first: Value,
        second: Value,
    },
    #[error(
        "{object}.{field} is not an External Id field (describe: externalId and idLookup false)"
    )]
    NotExternalId { object: String, field: String },
}

impl FieldError {
    /// The Salesforce status code of the same refusal, so that a dead letter reads alike
    /// whether forcebridge or the org refused the record.
    pub(crate) fn code(&self) -> String {
        match self {
            FieldError::UnknownObject { code, .. } => code.clone(),
            FieldError::ObjectReadOnly { .. } => "INSUFFICIENT_ACCESS_OR_READONLY".into(),
            FieldError::UnknownField { .. } | FieldError::UnknownChild { .. } => {
                "INVALID_FIELD".into()
            }
            FieldError::Calculated { .. }
            | FieldError::ReadOnly { .. }
            | FieldError::CompoundScalar { .. } => "INVALID_FIELD_FOR_INSERT_UPDATE".into(),
            FieldError::WrongType { .. } => "INVALID_TYPE_ON_FIELD_IN_RECORD".into(),
            FieldError::TooLong { .. } => "STRING_TOO_LONG".into(),
            FieldError::Required { .. } => "REQUIRED_FIELD_MISSING".into(),
            FieldError::Duplicate { .. } => "DUPLICATE_VALUE".into(),
            FieldError::NotExternalId { .. } => "INVALID_FIELD".into(),
        }
    }

    /// The field it is about (`BillingAddress.Xyz` for a child), if any.
    pub(crate) fn field(&self) -> Option<String> {
        match self {
            FieldError::UnknownObject { .. } | FieldError::ObjectReadOnly { .. } => None,
            FieldError::UnknownChild { field, child, .. } => Some(format!("{field}.{child}")),
            FieldError::UnknownField { field, .. }
            | FieldError::Calculated { field, .. }
            | FieldError::ReadOnly { field, .. }
            | FieldError::CompoundScalar { field, .. }
            | FieldError::WrongType { field, .. }
            | FieldError::TooLong { field, .. }
            | FieldError::Required { field, .. }
            | FieldError::Duplicate { field, .. }
            | FieldError::NotExternalId { field, .. } => Some(field.clone()),
        }
    }

    fn failure(&self) -> Failure {
        Failure {
            stage: DeadLetterStage::SinkField,
            code: self.code(),
            message: self.to_string(),
            fields: self.field().into_iter().collect(),
            attempts: 0,
        }
    }
}

/// Why a batch's field check stopped (the batch fails and is repeated).
#[derive(Debug, thiserror::Error)]
pub(crate) enum CheckError {
    /// A describe could not be had (after the client's retries).
    #[error("describe: {0}")]
    Rest(#[from] RestError),
    /// A dead letter could not be enqueued.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
}

/// The field check of the writers: the describe cache and the objects' `ignore_fields`. Cheap to
/// clone; clones share the cache.
#[derive(Clone, Default)]
pub(crate) struct FieldCheck {
    cache: DescribeCache,
    /// Lower-cased object name → its `ignore_fields`.
    ignore: Arc<HashMap<String, Vec<String>>>,
}

impl FieldCheck {
    pub(crate) fn new(objects: &BTreeMap<String, SinkObjectConfig>) -> Self {
        FieldCheck {
            cache: DescribeCache::default(),
            ignore: Arc::new(
                objects
                    .iter()
                    .map(|(name, o)| (name.to_ascii_lowercase(), o.ignore_fields.clone()))
                    .collect(),
            ),
        }
    }

    /// Translates every write of `items` ([`translate`]), fetching the describes the batch needs
    /// first; dead-letters the refused ones and returns the others.
    pub(crate) async fn check(
        &self,
        items: Vec<Item>,
        rest: &RestClient,
        reporter: &Reporter,
        cancel: &CancellationToken,
    ) -> Result<Vec<Item>, CheckError> {
        let mut described: HashMap<String, Described> = HashMap::new();
        for item in &items {
            let key = item.op.object.to_ascii_lowercase();
            if item.op.kind != OpKind::Delete && !described.contains_key(&key) {
                let d = (self.cache)
                    .get(&item.op.object, rest, &reporter.stats, cancel)
                    .await?;
                described.insert(key, d);
            }
        }
        let mut kept = Vec::with_capacity(items.len());
        for mut item in items {
            let key = item.op.object.to_ascii_lowercase();
            let result = match described.get(&key) {
                None => Ok(item.op),
                Some(Described::Unknown(e)) => Err(unknown_object(&item.op.object, e)),
                Some(Described::Known(fields)) => {
                    let ignore = self.ignore.get(&key).map_or(&[][..], Vec::as_slice);
                    translate(item.op, fields, ignore)
                }
            };
            match result {
                Ok(op) => {
                    item.op = op;
                    kept.push(item);
                }
                Err(e) => {
                    reporter
                        .dead_letter(&item.origin, &e.failure(), item.token)
                        .await?;
                }
            }
        }
        Ok(kept)
    }
}

fn unknown_object(object: &str, e: &ApiError) -> FieldError {
    FieldError::UnknownObject {
        object: object.to_owned(),
        code: e.code.clone(),
        message: e.message.clone(),
    }
}

/// What a write may set: `createable` (insert), `updateable` (update), both (upsert).
fn writable(f: &FieldDescribe, kind: OpKind) -> Option<&'static str> {
    match kind {
        OpKind::Insert | OpKind::Upsert if !f.createable => Some("createable"),
        OpKind::Update | OpKind::Upsert if !f.updateable => Some("updateable"),
        _ => None,
    }
}

/// One write checked and rewritten against its object's describe (see the module contract).
pub(crate) fn translate(
    mut op: WriteOp,
    object: &ObjectFields,
    ignore: &[String],
) -> Result<WriteOp, FieldError> {
    op.object.clone_from(&object.name);
    let denied = match op.kind {
        OpKind::Insert | OpKind::Upsert if !object.createable => Some(("create", "createable")),
        OpKind::Update | OpKind::Upsert if !object.updateable => Some(("update", "updateable")),
        _ => None,
    };
    if let Some((verb, flag)) = denied {
        return Err(FieldError::ObjectReadOnly {
            object: object.name.clone(),
            verb,
            flag,
        });
    }
    let ext = canonical_external_id(&mut op, object)?;
    let mut out = Fields {
        object,
        kind: op.kind,
        ext: ext.as_deref(),
        ignore,
        values: Map::with_capacity(op.fields.len()),
    };
    for (name, value) in std::mem::take(&mut op.fields) {
        let Some(field) = object.field(&name) else {
            return Err(FieldError::UnknownField {
                object: object.name.clone(),
                field: name,
            });
        };
        match object.components(&field.name) {
            Some(components) => out.compound(field, &components, value)?,
            None => out.put(field, value)?,
        }
    }
    op.fields = out.values;
    if let Some((field, _)) = &mut op.insert_key
        && let Some(f) = object.field(field)
    {
        field.clone_from(&f.name);
    }
    Ok(op)
}

/// The External Id field the write addresses, in the describe's spelling; refused unless the
/// describe marks it `externalId` or `idLookup`.
fn canonical_external_id(
    op: &mut WriteOp,
    object: &ObjectFields,
) -> Result<Option<String>, FieldError> {
    let Target::External { field, .. } = &mut op.target else {
        return Ok(None);
    };
    let Some(f) = object.field(field) else {
        return Err(FieldError::UnknownField {
            object: object.name.clone(),
            field: field.clone(),
        });
    };
    if !(f.external_id || f.id_lookup) {
        return Err(FieldError::NotExternalId {
            object: object.name.clone(),
            field: f.name.clone(),
        });
    }
    field.clone_from(&f.name);
    Ok(Some(f.name.clone()))
}

/// The fields of one write being translated.
struct Fields<'a> {
    object: &'a ObjectFields,
    kind: OpKind,
    /// The External Id field the write addresses (canonical).
    ext: Option<&'a str>,
    ignore: &'a [String],
    values: Map<String, Value>,
}

impl Fields<'_> {
    /// A compound given nested, null, or (refused) as a scalar.
    fn compound(
        &mut self,
        compound: &FieldDescribe,
        components: &[&FieldDescribe],
        value: Value,
    ) -> Result<(), FieldError> {
        match value {
            Value::Object(children) => {
                for (child, v) in children {
                    let Some(component) = self.object.component(&compound.name, &child) else {
                        return Err(FieldError::UnknownChild {
                            object: self.object.name.clone(),
                            field: compound.name.clone(),
                            child,
                        });
                    };
                    self.put(component, v)?;
                }
                Ok(())
            }
            Value::Null => {
                for c in components {
                    if c.nillable && writable(c, self.kind).is_none() && !c.calculated {
                        self.put(c, Value::Null)?;
                    }
                }
                Ok(())
            }
            _ => Err(FieldError::CompoundScalar {
                object: self.object.name.clone(),
                field: compound.name.clone(),
                children: components
                    .iter()
                    .map(|c| super::describe::child_name(&compound.name, &c.name))
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// One field's value, checked and converted, under its canonical name.
    fn put(&mut self, field: &FieldDescribe, value: Value) -> Result<(), FieldError> {
        if self
            .ignore
            .iter()
            .any(|i| i.eq_ignore_ascii_case(&field.name))
        {
            return Ok(());
        }
        let object = || self.object.name.clone();
        if field.calculated {
            return Err(FieldError::Calculated {
                object: object(),
                field: field.name.clone(),
            });
        }
        // An upsert's External Id is its match key: on an existing record it does not change.
        let is_key = self.kind == OpKind::Upsert && self.ext == Some(field.name.as_str());
        let refused = if is_key {
            (!field.createable).then_some("createable")
        } else {
            writable(field, self.kind)
        };
        if let Some(flag) = refused {
            return Err(FieldError::ReadOnly {
                object: object(),
                field: field.name.clone(),
                flag,
                op: self.kind.as_str(),
            });
        }
        let value = value_for(&self.object.name, field, value)?;
        match self.values.get(&field.name) {
            Some(first) if *first != value => Err(FieldError::Duplicate {
                object: object(),
                field: field.name.clone(),
                first: first.clone(),
                second: value,
            }),
            _ => {
                self.values.insert(field.name.clone(), value);
                Ok(())
            }
        }
    }
}

/// `value` checked against the field's describe `type` (and `length`, `nillable`), converted
/// where the source's form differs from Salesforce's (see the module contract).
fn value_for(object: &str, field: &FieldDescribe, value: Value) -> Result<Value, FieldError> {
    let wrong = |expected: &'static str, found: &Value| FieldError::WrongType {
        object: object.to_owned(),
        field: field.name.clone(),
        field_type: field.field_type.clone(),
        expected,
        found: describe_value(found),
    };
    if value.is_null() {
        // A checkbox is never nillable in a describe; Salesforce decides what null means there.
        if !field.nillable && field.field_type != "boolean" {
            return Err(FieldError::Required {
                object: object.to_owned(),
                field: field.name.clone(),
            });
        }
        return Ok(Value::Null);
    }
    match field.field_type.as_str() {
        "boolean" => match value {
            Value::Bool(_) => Ok(value),
            other => Err(wrong("true or false", &other)),
        },
        "int" | "long" => match &value {
            Value::Number(n) if n.is_i64() || n.is_u64() => Ok(value),
            Value::Number(n) if n.as_f64().is_some_and(|f| f.fract() == 0.0) => Ok(value),
            other => Err(wrong("a whole number", other)),
        },
        "double" | "currency" | "percent" => match value {
            Value::Number(_) => Ok(value),
            other => Err(wrong("a number", &other)),
        },
        "date" | "datetime" => temporal(field, value).map_err(|(expected, v)| wrong(expected, &v)),
        "string" | "textarea" | "phone" | "url" | "email" | "picklist" | "multipicklist"
        | "combobox" | "encryptedstring" => {
            let text = match value {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                other => return Err(wrong("a string", &other)),
            };
            let chars = text.chars().count();
            if field.length > 0 && chars as u64 > field.length {
                return Err(FieldError::TooLong {
                    object: object.to_owned(),
                    field: field.name.clone(),
                    chars,
                    length: field.length,
                });
            }
            Ok(Value::String(text))
        }
        "id" | "reference" | "base64" | "time" => match value {
            Value::String(_) => Ok(value),
            other => Err(wrong("a string", &other)),
        },
        "address" | "location" => Err(wrong("an object of components", &value)),
        // Other types (`anyType`, types added later): any scalar; the org decides.
        _ => match value {
            Value::Array(_) | Value::Object(_) => Err(wrong("a single value", &value)),
            other => Ok(other),
        },
    }
}

/// A date or datetime: Salesforce's text as given (checked), or epoch milliseconds (the
/// source's form) written as that text. `Err` gives what was expected and the value.
fn temporal(field: &FieldDescribe, value: Value) -> Result<Value, (&'static str, Value)> {
    let date = field.field_type == "date";
    let expected = if date {
        "a date (2024-01-31) or epoch milliseconds"
    } else {
        "a datetime (2024-01-31T12:05:09.000Z) or epoch milliseconds"
    };
    match &value {
        Value::Number(n) => match n.as_i64() {
            Some(ms) if date => Ok(Value::String(sftime::format_date(ms))),
            Some(ms) => Ok(Value::String(sftime::format_datetime(ms))),
            None => Err((expected, value)),
        },
        Value::String(s) => {
            let ok = if date {
                sftime::parse_date(s).is_ok()
            } else {
                sftime::parse_datetime(s).is_ok()
            };
            if ok {
                Ok(value)
            } else {
                Err((expected, value))
            }
        }
        _ => Err((expected, value)),
    }
}

/// A value as an error shows it: its kind, and short scalars themselves.
fn describe_value(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) if s.chars().count() <= 40 => format!("the string \"{s}\""),
        Value::String(_) => "a string".into(),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::describe::tests::{ACCOUNT, CONTACT, fields_of};
    use super::super::message::{ParseOptions, parse};
    use super::*;

    /// A message's write, as the batcher parses it (no `sink.objects`, last-write-wins on).
    fn op(message: Value) -> WriteOp {
        let objects = BTreeMap::new();
        let bytes = serde_json::to_vec(&message).unwrap();
        parse(
            Some(&bytes),
            &[],
            ParseOptions {
                objects: &objects,
                last_write_wins: true,
            },
        )
        .expect("a valid message")
    }

    fn update(object: &str, fields: Value) -> WriteOp {
        op(
            json!({"object": object, "operation": "update", "id": "001SIM000000001AAA",
            "timestamp": 1, "fields": fields}),
        )
    }

    fn account(op: WriteOp) -> Result<WriteOp, FieldError> {
        translate(op, &fields_of(ACCOUNT), &[])
    }

    fn contact(op: WriteOp) -> Result<WriteOp, FieldError> {
        translate(op, &fields_of(CONTACT), &[])
    }

    /// Nested compounds (as the source emits them, or as REST reads give them: lower-case
    /// children) and component fields become the same write: components, canonical names.
    #[test]
    fn nested_and_component_forms_write_the_components() {
        let nested = account(update(
            "account",
            json!({"billingaddress": {"City": "Paris", "street": "1 Rue X", "PostalCode": "75001"},
                "Loc__c": {"Latitude": 48.85, "longitude": 2.35}, "phone": "+33 1"}),
        ))
        .unwrap();
        let flat = account(update(
            "Account",
            json!({"BILLINGCITY": "Paris", "BillingStreet": "1 Rue X", "billingPostalCode": "75001",
                "Loc__Latitude__s": 48.85, "loc__longitude__s": 2.35, "Phone": "+33 1"}),
        ))
        .unwrap();
        let expected = json!({"BillingCity": "Paris", "BillingStreet": "1 Rue X",
            "BillingPostalCode": "75001", "Loc__Latitude__s": 48.85, "Loc__Longitude__s": 2.35,
            "Phone": "+33 1"});
        assert_eq!(Value::Object(nested.fields.clone()), expected);
        assert_eq!(nested, flat);
        assert_eq!(nested.object, "Account");

        let name = contact(op(json!({"object": "Contact", "operation": "insert",
            "fields": {"Name": {"FirstName": "Ada", "LastName": "Lovelace"}, "Birthdate": 0}})))
        .unwrap();
        assert_eq!(
            Value::Object(name.fields),
            json!({"FirstName": "Ada", "LastName": "Lovelace", "Birthdate": "1970-01-01"})
        );
    }

    #[test]
    fn refusals_name_the_object_and_the_field() {
        let cases: Vec<(Result<WriteOp, FieldError>, &str, &str, &str)> = vec![
            (
                account(update("Account", json!({"Score__c": 3}))),
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                "Score__c",
                "Account.Score__c is a formula field",
            ),
            (
                account(update(
                    "Account",
                    json!({"BillingAddress": "1 Rue X, Paris"}),
                )),
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                "BillingAddress",
                "Account.BillingAddress is a compound field, read-only: give it as an object of its components' values (Street, City, State, PostalCode, Country, Latitude, Longitude, GeocodeAccuracy)",
            ),
            (
                contact(update("Contact", json!({"name": "Ada Lovelace"}))),
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                "Name",
                "Contact.Name is a compound field",
            ),
            (
                account(update("Account", json!({"BillingAddress": {"Xyz": "1"}}))),
                "INVALID_FIELD",
                "BillingAddress.Xyz",
                "Account.BillingAddress.Xyz: the compound field BillingAddress has no component `Xyz`",
            ),
            (
                account(update("Account", json!({"Colour__c": "red"}))),
                "INVALID_FIELD",
                "Colour__c",
                "Account.Colour__c: no such field",
            ),
            (
                account(update("Account", json!({"LastModifiedDate": 1}))),
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                "LastModifiedDate",
                "Account.LastModifiedDate is not updateable for the integration user: an update",
            ),
            (
                account(update("Account", json!({"NumberOfEmployees": "many"}))),
                "INVALID_TYPE_ON_FIELD_IN_RECORD",
                "NumberOfEmployees",
                "Account.NumberOfEmployees is of type int: expected a whole number, found the string \"many\"",
            ),
            (
                account(update("Account", json!({"Active__c": "yes"}))),
                "INVALID_TYPE_ON_FIELD_IN_RECORD",
                "Active__c",
                "Account.Active__c is of type boolean",
            ),
            (
                account(update("Account", json!({"Phone": {"Number": "1"}}))),
                "INVALID_TYPE_ON_FIELD_IN_RECORD",
                "Phone",
                "Account.Phone is of type phone: expected a string, found an object",
            ),
            (
                account(update("Account", json!({"Renewal__c": "next week"}))),
                "INVALID_TYPE_ON_FIELD_IN_RECORD",
                "Renewal__c",
                "Account.Renewal__c is of type datetime",
            ),
            (
                account(update(
                    "Account",
                    json!({"BillingAddress": {"City": "x".repeat(41)}}),
                )),
                "STRING_TOO_LONG",
                "BillingCity",
                "Account.BillingCity: 41 characters, the field holds 40",
            ),
            (
                account(update("Account", json!({"Name": null}))),
                "REQUIRED_FIELD_MISSING",
                "Name",
                "Account.Name cannot be null",
            ),
            (
                account(update(
                    "Account",
                    json!({"BillingCity": "Paris", "BillingAddress": {"City": "Lyon"}}),
                )),
                "DUPLICATE_VALUE",
                "BillingCity",
                "Account.BillingCity is given twice",
            ),
            (
                account(op(json!({"object": "Account", "operation": "upsert",
                    "external_id_field": "Phone", "timestamp": 1, "fields": {"Phone": "1"}}))),
                "INVALID_FIELD",
                "Phone",
                "Account.Phone is not an External Id field",
            ),
        ];
        for (result, code, field, message) in cases {
            let e = result.expect_err(message);
            assert_eq!(e.code(), code, "{e}");
            assert_eq!(e.field().as_deref(), Some(field), "{e}");
            assert!(
                e.to_string().starts_with(message),
                "{e}\nexpected: {message}"
            );
        }
    }

    /// Upsert: every field createable and updateable, but the External Id only createable.
    #[test]
    fn upserts_need_both_permissions_but_for_the_external_id() {
        let mut describe: crate::salesforce::rest::SObjectDescribe =
            serde_json::from_str(ACCOUNT).unwrap();
        for f in &mut describe.fields {
            if matches!(f.name.as_str(), "External_Id__c" | "Rating") {
                f.updateable = false;
            }
        }
        let object = ObjectFields::new(describe);
        let upsert = |fields: Value| {
            op(
                json!({"object": "Account", "operation": "upsert", "timestamp": 1,
                "external_id_field": "external_id__c", "fields": fields}),
            )
        };
        let ok = translate(
            upsert(json!({"external_id__c": "E-1", "Name": "A"})),
            &object,
            &[],
        )
        .unwrap();
        assert_eq!(
            ok.target,
            Target::External {
                field: "External_Id__c".into(),
                value: "E-1".into()
            }
        );
        assert_eq!(
            Value::Object(ok.fields),
            json!({"External_Id__c": "E-1", "Name": "A"})
        );
        let e = translate(
            upsert(json!({"external_id__c": "E-1", "Rating": "Hot"})),
            &object,
            &[],
        )
        .unwrap_err();
        assert_eq!(e.field().as_deref(), Some("Rating"));
        assert!(e.to_string().contains("not updateable"), "{e}");
        // An insert may set a createable field that is not updateable; an update may not.
        let insert = op(json!({"object": "Account", "operation": "insert",
            "fields": {"Name": "A", "Rating": "Hot"}}));
        assert!(translate(insert, &object, &[]).is_ok());
        let e = translate(update("Account", json!({"rating": "Hot"})), &object, &[]).unwrap_err();
        assert_eq!(e.code(), "INVALID_FIELD_FOR_INSERT_UPDATE");
    }

    #[test]
    fn object_permissions_unknown_objects_and_deletes() {
        let mut describe: crate::salesforce::rest::SObjectDescribe =
            serde_json::from_str(ACCOUNT).unwrap();
        describe.createable = false;
        let object = ObjectFields::new(describe);
        let insert =
            op(json!({"object": "Account", "operation": "insert", "fields": {"Name": "A"}}));
        let e = translate(insert, &object, &[]).unwrap_err();
        assert_eq!(
            (e.code().as_str(), e.field()),
            ("INSUFFICIENT_ACCESS_OR_READONLY", None)
        );
        assert!(
            e.to_string()
                .starts_with("Account: the integration user may not create")
        );
        assert!(translate(update("Account", json!({"Name": "B"})), &object, &[]).is_ok());
        let e = unknown_object(
            "Nope__c",
            &ApiError {
                code: "NOT_FOUND".into(),
                message: "The requested resource does not exist".into(),
                fields: vec![],
            },
        );
        assert_eq!(e.code(), "NOT_FOUND");
        assert!(e.to_string().contains("object Nope__c"), "{e}");
    }

    #[test]
    fn values_take_salesforce_forms_and_ignore_fields_drop_components() {
        let op = update(
            "Account",
            json!({"Founded__c": 1_706_659_200_000_i64, "Renewal__c": 1_706_702_709_000_i64,
                "External_Id__c": 42, "NumberOfEmployees": 12.0, "AnnualRevenue": 1.5,
                "BillingAddress": {"City": "Paris", "GeocodeAccuracy": "Address"},
                "Description": null}),
        );
        let ignore = ["billinggeocodeaccuracy".to_owned()];
        let out = translate(op, &fields_of(ACCOUNT), &ignore).unwrap();
        assert_eq!(
            Value::Object(out.fields),
            json!({"Founded__c": "2024-01-31", "Renewal__c": "2024-01-31T12:05:09.000+0000",
                "External_Id__c": "42", "NumberOfEmployees": 12.0, "AnnualRevenue": 1.5,
                "BillingCity": "Paris", "Description": null})
        );
        // A null compound clears the components an update may set to null.
        let cleared = account(update("Account", json!({"ShippingAddress": null}))).unwrap();
        let names: Vec<&str> = cleared.fields.keys().map(String::as_str).collect();
        assert_eq!(names.len(), 8, "{names:?}");
        assert!(cleared.fields.values().all(Value::is_null));
        assert!(names.contains(&"ShippingCity") && !names.contains(&"ShippingAddress"));
        // LastName is not nillable: a null Name clears the rest of it.
        let name = contact(update("Contact", json!({"Name": null}))).unwrap();
        assert!(!name.fields.contains_key("LastName") && name.fields.contains_key("FirstName"));
    }
}
