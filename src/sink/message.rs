//! Write-back messages: one Kafka record → one Salesforce write ([`WriteOp`]), or a
//! [`MessageError`] that names the offending field.
//!
//! Contract (the format is documented in ARCHITECTURE.md, "Write-back messages"):
//! * The value is a JSON object: `object`, `operation` (`insert`, `update`, `upsert`,
//!   `delete`; any case), `id`, `external_id_field`, `fields`, `timestamp` (epoch milliseconds
//!   or an ISO 8601 / Salesforce datetime). The headers `forcebridge.object` and
//!   `forcebridge.operation` supply `object` / `operation` when the JSON has none.
//! * `insert` takes `fields` and no `id`; `update` and `delete` address the record by `id` or by
//!   an External Id (`external_id_field`, defaulting to `sink.objects.<object>.external_id_field`,
//!   whose value is read from `fields`); `upsert` always goes by External Id.
//! * `fields` is mapped (`field_map`, then `ignore_fields`) before anything else looks at it;
//!   it may not set `Id` or `attributes`.
//! * With last-write-wins on, every operation but `insert` needs a `timestamp`: without one
//!   forcebridge could not tell whether Salesforce holds a newer change.
//! * Nothing here talks to Salesforce; the checks are the ones that need only the message.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::config::{SinkObjectConfig, is_api_name};
use crate::kafka::headers;
use crate::salesforce::sfid::id15;

/// The four write operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OpKind {
    Insert,
    Update,
    Upsert,
    Delete,
}

impl OpKind {
    /// Lower-case name, as in messages.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            OpKind::Insert => "insert",
            OpKind::Update => "update",
            OpKind::Upsert => "upsert",
            OpKind::Delete => "delete",
        }
    }
}

/// Which record a write addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A new record (insert).
    New,
    /// A record Id (15 or 18 characters).
    Id(String),
    /// An External Id field and its value.
    External { field: String, value: String },
}

/// One write, ready for planning.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteOp {
    pub object: String,
    pub kind: OpKind,
    pub target: Target,
    /// Salesforce field names → values (mapped; for upserts it includes the External Id).
    pub fields: Map<String, Value>,
    /// The source's change time (epoch ms), compared with `SystemModstamp`.
    pub timestamp: Option<i64>,
    /// An insert that sets the object's External Id field: that field and value, so that later
    /// writes addressing the new record by External Id wait for the insert.
    pub insert_key: Option<(String, String)>,
}

impl WriteOp {
    /// The identity used to keep writes to one record in order (`None` for inserts): object,
    /// then the 15-character Id or the External Id field and its lower-cased value (External Ids
    /// are case-insensitive unless configured otherwise in Salesforce).
    pub(crate) fn order_key(&self) -> Option<String> {
        match &self.target {
            Target::New => self
                .insert_key
                .as_ref()
                .map(|(field, value)| record_key(&self.object, Some(field), value)),
            Target::Id(id) => Some(record_key(&self.object, None, id)),
            Target::External { field, value } => Some(record_key(&self.object, Some(field), value)),
        }
    }
}

/// The identity of a record, as ordering and lookups compare it: the object (case-insensitive),
/// then the 15-character Id (`external_field` `None`) or the External Id field and its value
/// (both case-insensitive, as Salesforce compares them by default).
pub(crate) fn record_key(object: &str, external_field: Option<&str>, value: &str) -> String {
    let object = object.to_ascii_lowercase();
    match external_field {
        None => format!("{object}\0id\0{}", id15(value)),
        Some(field) => format!(
            "{object}\0{}\0{}",
            field.to_ascii_lowercase(),
            value.to_lowercase()
        ),
    }
}

/// Why a message cannot become a write; always names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// The value is empty (a tombstone) or not JSON.
    #[error("value is not a JSON object: {0}")]
    NotJson(String),
    /// A field is missing.
    #[error("`{field}` is missing: {hint}")]
    Missing { field: &'static str, hint: String },
    /// A field has the wrong type or an invalid value.
    #[error("`{field}`: {message}")]
    Invalid { field: String, message: String },
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> MessageError {
    MessageError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// What the parser needs from the sink config.
#[derive(Debug, Clone, Copy)]
pub struct ParseOptions<'a> {
    pub objects: &'a BTreeMap<String, SinkObjectConfig>,
    pub last_write_wins: bool,
}

/// The keys a message may have.
const KNOWN: [&str; 6] = [
    "object",
    "operation",
    "id",
    "external_id_field",
    "fields",
    "timestamp",
];

/// A write-back message as JSON: the keys of [`KNOWN`] and no other; a key set to `null` counts
/// as absent. The values stay JSON here: the checks below read them one at a time, in a fixed
/// order, so that an error names the same field whatever the order of the keys.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    object: Option<Value>,
    operation: Option<Value>,
    id: Option<Value>,
    external_id_field: Option<Value>,
    fields: Option<Value>,
    timestamp: Option<Value>,
}

/// Parses one message. `headers` are the record's headers (name, value).
pub fn parse(
    value: Option<&[u8]>,
    headers: &[(&str, &[u8])],
    opts: ParseOptions<'_>,
) -> Result<WriteOp, MessageError> {
    let wire = read(value)?;
    let object = object_name(wire.object, headers)?;
    let kind = op_kind(wire.operation, headers)?;
    let (object, settings) = configured(object, opts);
    let id = record_id(wire.id)?;
    let ext_field = external_id_field(wire.external_id_field, settings)?;
    let fields = field_values(wire.fields, settings)?;
    let timestamp = timestamp(wire.timestamp)?;
    let target = target(kind, id, ext_field.as_deref(), &fields, &object)?;
    check_complete(kind, &fields, timestamp, opts.last_write_wins)?;
    let insert_key = insert_key(&target, ext_field.as_deref(), &fields);
    Ok(WriteOp {
        object,
        kind,
        target,
        fields: if kind == OpKind::Delete {
            Map::new()
        } else {
            fields
        },
        timestamp,
        insert_key,
    })
}

/// The value as a [`Wire`] message: JSON, an object, no key but the known ones.
fn read(value: Option<&[u8]>) -> Result<Wire, MessageError> {
    let value = value.ok_or_else(|| MessageError::NotJson("the record has no value".into()))?;
    // The common case in one pass: an object of known keys, each once, read straight into the
    // struct. Anything else (not an object, an unknown or repeated key, not JSON) takes the path
    // below, which accepts and refuses exactly as before and names what is wrong. (An object only:
    // a derived struct would also take a JSON array as its fields in order.)
    if value.trim_ascii_start().first() == Some(&b'{')
        && let Ok(wire) = serde_json::from_slice::<Wire>(value)
    {
        return Ok(wire);
    }
    let json: Value =
        serde_json::from_slice(value).map_err(|e| MessageError::NotJson(e.to_string()))?;
    let Value::Object(msg) = json else {
        return Err(MessageError::NotJson(format!("found {}", kind_of(&json))));
    };
    // Checked here, before the struct refuses it, so that the error names the key.
    if let Some(unknown) = msg.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(invalid(
            unknown.clone(),
            format!("unknown key (expected {})", KNOWN.join(", ")),
        ));
    }
    // Only known keys, each once (of a repeated key JSON keeps the last): the struct takes them.
    Wire::deserialize(Value::Object(msg)).map_err(|e| MessageError::NotJson(e.to_string()))
}

/// A header's value, trimmed, if it is UTF-8 and not blank.
fn header(headers: &[(&str, &[u8])], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// `object`, else the [`headers::OBJECT`] header: an object API name.
fn object_name(value: Option<Value>, headers: &[(&str, &[u8])]) -> Result<String, MessageError> {
    let object = match value {
        Some(v) => string(v, "object")?,
        None => header(headers, headers::OBJECT).ok_or_else(|| MessageError::Missing {
            field: "object",
            hint: format!(
                "name the object API name, or set the `{}` header",
                headers::OBJECT
            ),
        })?,
    };
    if !is_api_name(&object) {
        return Err(invalid(
            "object",
            format!("`{object}` is not an object API name"),
        ));
    }
    Ok(object)
}

/// `operation`, else the [`headers::OPERATION`] header: one of the four, in any case.
fn op_kind(value: Option<Value>, headers: &[(&str, &[u8])]) -> Result<OpKind, MessageError> {
    let operation = match value {
        Some(v) => string(v, "operation")?,
        None => header(headers, headers::OPERATION).ok_or_else(|| MessageError::Missing {
            field: "operation",
            hint: format!(
                "insert, update, upsert or delete, or set the `{}` header",
                headers::OPERATION
            ),
        })?,
    };
    match operation.to_ascii_lowercase().as_str() {
        "insert" => Ok(OpKind::Insert),
        "update" => Ok(OpKind::Update),
        "upsert" => Ok(OpKind::Upsert),
        "delete" => Ok(OpKind::Delete),
        _ => Err(invalid(
            "operation",
            format!("unknown operation `{operation}` (expected insert, update, upsert or delete)"),
        )),
    }
}

/// The object's settings in `sink.objects`, if any, and its name as spelled there.
fn configured<'a>(
    object: String,
    opts: ParseOptions<'a>,
) -> (String, Option<&'a SinkObjectConfig>) {
    // Object API names are case-insensitive in Salesforce: use the configured spelling.
    match opts
        .objects
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(&object))
    {
        Some((name, settings)) => (name.clone(), Some(settings)),
        None => (object, None),
    }
}

/// `id`, if given: a well-formed record Id.
fn record_id(value: Option<Value>) -> Result<Option<String>, MessageError> {
    let Some(v) = value else {
        return Ok(None);
    };
    let id = string(v, "id")?;
    if !crate::salesforce::sfid::is_well_formed(&id) {
        return Err(invalid(
            "id",
            format!("`{id}` is not a 15- or 18-character record Id"),
        ));
    }
    Ok(Some(id))
}

/// `external_id_field` (a field API name), else the object's configured one.
fn external_id_field(
    value: Option<Value>,
    settings: Option<&SinkObjectConfig>,
) -> Result<Option<String>, MessageError> {
    match value {
        Some(v) => {
            let f = string(v, "external_id_field")?;
            if !is_api_name(&f) {
                return Err(invalid(
                    "external_id_field",
                    format!("`{f}` is not a field API name"),
                ));
            }
            Ok(Some(f))
        }
        None => Ok(settings.and_then(|s| s.external_id_field.clone())),
    }
}

/// `fields`, mapped ([`map_fields`]); empty when absent.
fn field_values(
    value: Option<Value>,
    settings: Option<&SinkObjectConfig>,
) -> Result<Map<String, Value>, MessageError> {
    match value {
        None => Ok(Map::new()),
        Some(Value::Object(m)) => map_fields(m, settings),
        Some(other) => Err(invalid(
            "fields",
            format!(
                "must be an object of field values, found {}",
                kind_of(&other)
            ),
        )),
    }
}

/// `timestamp` in epoch milliseconds: whole milliseconds, or a datetime string.
fn timestamp(value: Option<Value>) -> Result<Option<i64>, MessageError> {
    match value {
        None => Ok(None),
        Some(Value::Number(n)) => Ok(Some(n.as_i64().ok_or_else(|| {
            invalid("timestamp", format!("{n} is not whole epoch milliseconds"))
        })?)),
        Some(Value::String(s)) => Ok(Some(
            crate::salesforce::sftime::parse_datetime(&s).map_err(|e| invalid("timestamp", e))?,
        )),
        Some(other) => Err(invalid(
            "timestamp",
            format!(
                "must be epoch milliseconds or a datetime string, found {}",
                kind_of(&other)
            ),
        )),
    }
}

/// The record `kind` addresses: none for an insert, the External Id for an upsert, the Id or
/// else the External Id for an update or a delete.
fn target(
    kind: OpKind,
    id: Option<String>,
    ext_field: Option<&str>,
    fields: &Map<String, Value>,
    object: &str,
) -> Result<Target, MessageError> {
    let ext_target = |required| external_target(kind, ext_field, fields, object, required);
    match kind {
        OpKind::Insert => {
            if id.is_some() {
                return Err(invalid(
                    "id",
                    "an insert creates a record and cannot carry an Id",
                ));
            }
            Ok(Target::New)
        }
        OpKind::Upsert => {
            if id.is_some() {
                return Err(invalid(
                    "id",
                    "an upsert goes by External Id; use `update` to address a record by Id",
                ));
            }
            Ok(ext_target(true)?.expect("required"))
        }
        OpKind::Update | OpKind::Delete => match id {
            Some(id) => Ok(Target::Id(id)),
            None => ext_target(false)?.ok_or_else(|| MessageError::Missing {
                field: "id",
                hint: format!(
                    "an {} needs `id`, or an External Id field with its value in `fields`",
                    kind.as_str()
                ),
            }),
        },
    }
}

/// The External Id field and its value in `fields`; `None` when either is missing and not
/// `required`.
fn external_target(
    kind: OpKind,
    field: Option<&str>,
    fields: &Map<String, Value>,
    object: &str,
    required: bool,
) -> Result<Option<Target>, MessageError> {
    let Some(field) = field else {
        return if required {
            Err(MessageError::Missing {
                field: "external_id_field",
                hint: format!(
                    "an {} goes by External Id: set it, or sink.objects.{object}.external_id_field",
                    kind.as_str()
                ),
            })
        } else {
            Ok(None)
        };
    };
    let value = match fields.get(field) {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(other) if !other.is_null() && !matches!(other, Value::String(_)) => {
            return Err(invalid(
                format!("fields.{field}"),
                format!("an External Id must be a string, found {}", kind_of(other)),
            ));
        }
        _ if !required => return Ok(None),
        _ => {
            return Err(MessageError::Missing {
                field: "fields",
                hint: format!("the External Id `{field}` needs a value in `fields`"),
            });
        }
    };
    Ok(Some(Target::External {
        field: field.to_owned(),
        value,
    }))
}

/// What every write needs beyond its target: field values (but a delete), and a `timestamp`
/// with last-write-wins (but an insert).
fn check_complete(
    kind: OpKind,
    fields: &Map<String, Value>,
    timestamp: Option<i64>,
    last_write_wins: bool,
) -> Result<(), MessageError> {
    if matches!(kind, OpKind::Insert | OpKind::Update | OpKind::Upsert) && fields.is_empty() {
        return Err(MessageError::Missing {
            field: "fields",
            hint: format!("an {} needs at least one field value", kind.as_str()),
        });
    }
    if last_write_wins && kind != OpKind::Insert && timestamp.is_none() {
        return Err(MessageError::Missing {
            field: "timestamp",
            hint: "last-write-wins compares it with the record's SystemModstamp (epoch ms or a datetime)".into(),
        });
    }
    Ok(())
}

/// [`WriteOp::insert_key`]: an insert's External Id field and its (string) value.
fn insert_key(
    target: &Target,
    ext_field: Option<&str>,
    fields: &Map<String, Value>,
) -> Option<(String, String)> {
    match (target, ext_field) {
        (Target::New, Some(field)) => match fields.get(field) {
            Some(Value::String(v)) if !v.is_empty() => Some((field.to_owned(), v.clone())),
            _ => None,
        },
        _ => None,
    }
}

/// Applies `field_map` then `ignore_fields`; refuses `Id` and `attributes`.
fn map_fields(
    raw: Map<String, Value>,
    settings: Option<&SinkObjectConfig>,
) -> Result<Map<String, Value>, MessageError> {
    let mut out = Map::with_capacity(raw.len());
    for (name, value) in raw {
        // Salesforce matches field names case-insensitively, so `field_map` and `ignore_fields`
        // do too (an exact key first).
        let mapped = settings
            .and_then(|s| {
                s.field_map.get(&name).or_else(|| {
                    s.field_map
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(&name))
                        .map(|(_, v)| v)
                })
            })
            .cloned()
            .unwrap_or(name);
        if settings.is_some_and(|s| {
            s.ignore_fields
                .iter()
                .any(|f| f.eq_ignore_ascii_case(&mapped))
        }) {
            continue;
        }
        if mapped.eq_ignore_ascii_case("id") || mapped == "attributes" {
            return Err(invalid(
                format!("fields.{mapped}"),
                "cannot be written: address the record with `id` instead",
            ));
        }
        if !is_api_name(&mapped) {
            return Err(invalid(
                format!("fields.{mapped}"),
                "is not a field API name",
            ));
        }
        out.insert(mapped, value);
    }
    Ok(out)
}

fn string(v: Value, field: &'static str) -> Result<String, MessageError> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
        Value::String(_) => Err(invalid(field, "must not be empty")),
        other => Err(invalid(
            field,
            format!("must be a string, found {}", kind_of(&other)),
        )),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn objects() -> BTreeMap<String, SinkObjectConfig> {
        BTreeMap::from([(
            "Account".to_owned(),
            SinkObjectConfig {
                external_id_field: Some("External_Id__c".into()),
                field_map: BTreeMap::from([("name".to_owned(), "Name".to_owned())]),
                ignore_fields: vec!["Secret__c".into()],
            },
        )])
    }

    fn parse_json(v: Value) -> Result<WriteOp, MessageError> {
        let objects = objects();
        let bytes = serde_json::to_vec(&v).unwrap();
        parse(
            Some(&bytes),
            &[],
            ParseOptions {
                objects: &objects,
                last_write_wins: true,
            },
        )
    }

    /// `field_map` and `ignore_fields` match names in any case, as Salesforce does.
    #[test]
    fn field_map_and_ignore_fields_match_in_any_case() {
        let op = parse_json(json!({
            "object": "Account", "operation": "insert",
            "fields": {"NAME": "Acme", "secret__C": "x", "Phone": "1"},
            "timestamp": 1
        }))
        .unwrap();
        assert_eq!(
            op.fields,
            *json!({"Name": "Acme", "Phone": "1"}).as_object().unwrap()
        );
    }

    /// The one-pass read and the checked read agree: an array is not a message even when its
    /// elements would fill the fields in order, and of a repeated key the last counts.
    #[test]
    fn only_objects_are_messages_and_the_last_of_a_repeated_key_counts() {
        let objects = objects();
        let opts = ParseOptions {
            objects: &objects,
            last_write_wins: false,
        };
        let array = br#"["Account", "insert", null, null, {"Name": "A"}, null]"#;
        assert!(matches!(
            parse(Some(array), &[], opts),
            Err(MessageError::NotJson(m)) if m == "found an array"
        ));
        let repeated =
            br#"{"object": "Contact", "object": "Account", "operation": "insert", "fields": {"Name": "A"}}"#;
        let op = parse(Some(repeated), &[], opts).unwrap();
        assert_eq!(op.object, "Account");
        let spaced = b" \n {\"object\": \"Account\", \"operation\": \"insert\", \"fields\": {\"Name\": \"B\"}}";
        assert_eq!(parse(Some(spaced), &[], opts).unwrap().object, "Account");
    }

    #[test]
    fn parses_each_operation() {
        let op = parse_json(json!({
            "object": "Account", "operation": "UPSERT",
            "fields": {"name": "Acme", "External_Id__c": "ERP-1", "Secret__c": "x"},
            "timestamp": "2024-01-31T12:05:09.042Z"
        }))
        .unwrap();
        assert_eq!(op.kind, OpKind::Upsert);
        assert_eq!(
            op.target,
            Target::External {
                field: "External_Id__c".into(),
                value: "ERP-1".into()
            }
        );
        assert_eq!(
            Value::Object(op.fields.clone()),
            json!({"Name": "Acme", "External_Id__c": "ERP-1"})
        );
        assert_eq!(op.timestamp, Some(1_706_702_709_042));

        let op = parse_json(json!({
            "object": "Account", "operation": "update", "id": "001SIM000000001AAA",
            "fields": {"Phone": null}, "timestamp": 1_706_702_709_042_i64
        }))
        .unwrap();
        assert_eq!(op.target, Target::Id("001SIM000000001AAA".into()));
        assert_eq!(
            op.order_key(),
            parse_json(json!({
                "object": "Account", "operation": "delete", "id": "001SIM000000001",
                "timestamp": 1
            }))
            .unwrap()
            .order_key()
        );

        let op = parse_json(
            json!({"object": "Contact", "operation": "insert", "fields": {"LastName": "X"}}),
        )
        .unwrap();
        assert_eq!(
            (op.kind, op.target.clone(), op.order_key()),
            (OpKind::Insert, Target::New, None)
        );

        let op = parse_json(json!({
            "object": "Account", "operation": "delete",
            "fields": {"External_Id__c": "ERP-9"}, "timestamp": 5
        }))
        .unwrap();
        assert!(op.fields.is_empty());
        assert_eq!(
            op.target,
            Target::External {
                field: "External_Id__c".into(),
                value: "ERP-9".into()
            }
        );
    }

    #[test]
    fn headers_supply_object_and_operation() {
        let objects = objects();
        let value = br#"{"fields": {"LastName": "Doe"}}"#;
        let headers: [(&str, &[u8]); 2] = [
            (headers::OBJECT, b"Contact"),
            (headers::OPERATION, b"insert"),
        ];
        let op = parse(
            Some(value),
            &headers,
            ParseOptions {
                objects: &objects,
                last_write_wins: true,
            },
        )
        .unwrap();
        assert_eq!((op.object.as_str(), op.kind), ("Contact", OpKind::Insert));
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (json!([1]), "value is not a JSON object"),
            (
                json!({"operation": "insert", "fields": {"A": 1}}),
                "`object` is missing",
            ),
            (
                json!({"object": "Account", "operation": "merge", "fields": {"A": 1}}),
                "`operation`: unknown operation `merge`",
            ),
            (
                json!({"object": "Account", "operation": "update", "fields": {"Name": "x"}, "timestamp": 1, "external_id_field": null, "id": null}),
                "`id` is missing",
            ),
            (
                json!({"object": "Contact", "operation": "update", "fields": {"LastName": "x"}, "timestamp": 1}),
                "`id` is missing",
            ),
            (
                json!({"object": "Account", "operation": "update", "id": "001X", "fields": {"A": 1}, "timestamp": 1}),
                "`id`: `001X` is not",
            ),
            (
                json!({"object": "Account", "operation": "insert", "id": "001SIM000000001AAA", "fields": {"A": 1}}),
                "`id`: an insert",
            ),
            (
                json!({"object": "Account", "operation": "upsert", "fields": {"External_Id__c": "E"}}),
                "`timestamp` is missing",
            ),
            (
                json!({"object": "Account", "operation": "upsert", "fields": {"External_Id__c": "E"}, "timestamp": "noon"}),
                "`timestamp`: `noon`",
            ),
            (
                json!({"object": "Account", "operation": "upsert", "fields": "Name=x", "timestamp": 1}),
                "`fields`: must be an object",
            ),
            (
                json!({"object": "Account", "operation": "upsert", "fields": {"External_Id__c": "E", "Id": "x"}, "timestamp": 1}),
                "`fields.Id`: cannot be written",
            ),
            (
                json!({"object": "Account", "operation": "upsert", "fields": {"External_Id__c": true}, "timestamp": 1}),
                "`fields.External_Id__c`: an External Id must be a string",
            ),
            (
                json!({"object": "Account", "operation": "insert", "fields": {}}),
                "`fields` is missing",
            ),
            (
                json!({"object": "Account", "operation": "insert", "fields": {"A": 1}, "colour": 1}),
                "`colour`: unknown key",
            ),
            (
                json!({"object": "Acc ount", "operation": "insert", "fields": {"A": 1}}),
                "`object`: `Acc ount`",
            ),
        ];
        for (value, expected) in cases {
            let err = parse_json(value.clone()).unwrap_err().to_string();
            assert!(err.starts_with(expected), "{value}: {err}");
        }
        let objects = objects();
        let opts = ParseOptions {
            objects: &objects,
            last_write_wins: true,
        };
        assert!(
            parse(None, &[], opts)
                .unwrap_err()
                .to_string()
                .contains("no value")
        );
        assert!(
            parse(Some(b"{oops"), &[], opts)
                .unwrap_err()
                .to_string()
                .starts_with("value is not a JSON object: key must be a string")
        );
    }

    #[test]
    fn without_last_write_wins_timestamps_are_optional() {
        let objects = objects();
        let op = parse(
            Some(br#"{"object":"Account","operation":"update","id":"001SIM000000001AAA","fields":{"Name":"x"}}"#),
            &[],
            ParseOptions { objects: &objects, last_write_wins: false },
        )
        .unwrap();
        assert_eq!(op.timestamp, None);
    }

    #[test]
    fn object_names_are_case_insensitive_and_inserts_order_with_later_writes() {
        // `account` finds the `Account` settings: field map, ignore list, External Id field.
        let op = parse_json(json!({"object": "account", "operation": "insert",
            "fields": {"name": "A", "Secret__c": "s", "External_Id__c": "X-1"}}))
        .unwrap();
        assert_eq!(op.object, "Account");
        assert_eq!(
            Value::Object(op.fields.clone()),
            json!({"Name": "A", "External_Id__c": "X-1"})
        );
        let update = parse_json(
            json!({"object": "ACCOUNT", "operation": "update", "timestamp": 1,
            "fields": {"External_Id__c": "x-1", "Phone": "1"}}),
        )
        .unwrap();
        assert!(op.order_key().is_some());
        assert_eq!(
            op.order_key(),
            update.order_key(),
            "the update waits for the insert"
        );
    }

    #[test]
    fn null_object_and_operation_fall_back_to_headers() {
        let objects = objects();
        let value = br#"{"object": null, "operation": null, "fields": {"LastName": "Doe"}}"#;
        let headers: [(&str, &[u8]); 2] = [
            (headers::OBJECT, b" Contact "),
            (headers::OPERATION, b"insert"),
        ];
        let op = parse(
            Some(value),
            &headers,
            ParseOptions {
                objects: &objects,
                last_write_wins: true,
            },
        )
        .unwrap();
        assert_eq!((op.object.as_str(), op.kind), ("Contact", OpKind::Insert));
    }
}
