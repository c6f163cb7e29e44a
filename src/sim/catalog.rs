//! The simulated org's event schemas: the bundled `.avsc` files (compiled into the binary), their
//! Salesforce-style schema ids, and schema evolution.
//!
//! Contract: a [`SchemaVersion`] is immutable; its id is a fingerprint of its JSON (16 bytes,
//! base64url without padding, 22 characters like Salesforce's `a01VpgrsZNJdn-7KStJcxQ`), so a
//! changed schema always gets a new id. Body fields are `["null", T]` unions (Platform Event
//! system fields `CreatedDate`/`CreatedById` are plain); compound fields (addresses, names) are
//! nested records of nullable scalars. Field positions are the writer-schema positions used by
//! the CDC bitmaps (position 0 of a change event is `ChangeEventHeader`).

use std::collections::HashMap;
use std::sync::Arc;

use apache_avro::Schema;
use apache_avro::rabin::Rabin;
use base64::Engine as _;
use serde_json::Value as Json;

use super::error::SimError;

/// `AccountChangeEvent` schema as bundled.
pub const ACCOUNT_CHANGE_EVENT: &str = include_str!("../../schemas/AccountChangeEvent.avsc");
/// `ContactChangeEvent` schema as bundled.
pub const CONTACT_CHANGE_EVENT: &str = include_str!("../../schemas/ContactChangeEvent.avsc");
/// `Order_Event__e` platform event schema as bundled.
pub const ORDER_EVENT: &str = include_str!("../../schemas/Order_Event__e.avsc");

/// Name of the CDC header field (position 0 of every change event schema).
pub const HEADER_FIELD: &str = "ChangeEventHeader";

/// Primitive Avro types a simulated field can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScalarType {
    /// `string`
    String,
    /// `int`
    Int,
    /// `long` (also dates and datetimes, epoch ms)
    Long,
    /// `float`
    Float,
    /// `double`
    Double,
    /// `boolean`
    Boolean,
}

impl ScalarType {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "string" => Self::String,
            "int" => Self::Int,
            "long" => Self::Long,
            "float" => Self::Float,
            "double" => Self::Double,
            "boolean" => Self::Boolean,
            _ => return None,
        })
    }

    /// The Avro type name.
    pub fn avro_name(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Int => "int",
            Self::Long => "long",
            Self::Float => "float",
            Self::Double => "double",
            Self::Boolean => "boolean",
        }
    }
}

/// What a `long` field holds, from the schema's `doc` (`Data:DateTime`, `Data:Date`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Temporal {
    /// A datetime: epoch ms in events and the Rust API, `2024-01-31T12:05:09.042+0000` over REST.
    DateTime,
    /// A date: epoch ms at midnight UTC in events, `2024-01-31` over REST.
    Date,
}

impl Temporal {
    fn from_doc(doc: Option<&str>) -> Option<Self> {
        let kind = doc?.rsplit(':').next()?;
        match kind {
            "DateTime" => Some(Self::DateTime),
            "Date" => Some(Self::Date),
            _ => None,
        }
    }
}

/// Shape of a body field.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldKind {
    /// A plain field.
    Scalar(ScalarType),
    /// A compound field: nested record of nullable scalars, in schema order.
    Compound(Vec<(String, ScalarType)>),
}

/// One body field of an event schema.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldDef {
    /// Field name.
    pub name: String,
    /// Position in the writer schema (what bitmaps index).
    pub position: usize,
    /// Scalar or compound.
    pub kind: FieldKind,
    /// `["null", T]` union (true) or plain `T`.
    pub nullable: bool,
    /// Date or datetime (a `long` whose `doc` says so).
    pub temporal: Option<Temporal>,
    /// The Salesforce data type of the schema's `doc` (`Data:Phone` → `Phone`), if any: what
    /// `describe` types the field by (see [`super::fieldmeta`]).
    pub data_type: Option<String>,
}

impl FieldDef {
    /// Position of a nested field of a compound.
    pub fn child_position(&self, child: &str) -> Option<usize> {
        match &self.kind {
            FieldKind::Compound(children) => children.iter().position(|(n, _)| n == child),
            FieldKind::Scalar(_) => None,
        }
    }
}

/// One immutable version of an event schema.
#[derive(Debug)]
pub struct SchemaVersion {
    /// Record name (`AccountChangeEvent`, `Order_Event__e`).
    pub name: String,
    /// Salesforce-style schema id (fingerprint).
    pub id: String,
    /// The schema JSON as served by `GetSchema`.
    pub json: String,
    /// Writes the datums of [`SchemaVersion::schema`] (and holds the parsed schema).
    pub writer: super::avro_out::Writer,
    /// Body fields (the CDC header excluded), in schema order.
    pub fields: Vec<FieldDef>,
    /// True for change event schemas (field 0 is `ChangeEventHeader`).
    pub is_change_event: bool,
    /// Body field name → its index in `fields` (records are checked and encoded field by field).
    by_name: HashMap<String, usize>,
}

impl SchemaVersion {
    /// Parses a schema JSON into a version with its id.
    pub fn parse(json: &str) -> Result<Arc<Self>, SimError> {
        let schema = Schema::parse_str(json).map_err(|e| SimError::Schema(e.to_string()))?;
        let doc: Json = serde_json::from_str(json).map_err(|e| SimError::Schema(e.to_string()))?;
        let name = doc
            .get("name")
            .and_then(Json::as_str)
            .ok_or_else(|| SimError::Schema("schema has no name".into()))?
            .to_owned();
        let raw_fields = doc
            .get("fields")
            .and_then(Json::as_array)
            .ok_or_else(|| SimError::Schema(format!("schema {name} has no fields")))?;
        let mut named: HashMap<String, Vec<(String, ScalarType)>> = HashMap::new();
        let mut fields = Vec::new();
        let mut is_change_event = false;
        for (position, f) in raw_fields.iter().enumerate() {
            let fname = f.get("name").and_then(Json::as_str).ok_or_else(|| {
                SimError::Schema(format!("field {position} of {name} has no name"))
            })?;
            if position == 0 && fname == HEADER_FIELD {
                is_change_event = true;
                continue;
            }
            let ty = f.get("type").unwrap_or(&Json::Null);
            let (nullable, inner) = match ty.as_array() {
                Some(variants) if variants.len() == 2 && variants[0] == "null" => {
                    (true, &variants[1])
                }
                Some(_) => {
                    return Err(SimError::Schema(format!(
                        "field {fname} of {name}: only [\"null\", T] unions are supported"
                    )));
                }
                None => (false, ty),
            };
            let kind = field_kind(inner, &mut named).ok_or_else(|| {
                SimError::Schema(format!("field {fname} of {name}: unsupported type {inner}"))
            })?;
            let temporal = match kind {
                FieldKind::Scalar(ScalarType::Long) => {
                    Temporal::from_doc(f.get("doc").and_then(Json::as_str))
                }
                _ => None,
            };
            let data_type = f
                .get("doc")
                .and_then(Json::as_str)
                .and_then(|d| d.strip_prefix("Data:"))
                .map(str::to_owned);
            fields.push(FieldDef {
                name: fname.to_owned(),
                position,
                kind,
                nullable,
                temporal,
                data_type,
            });
        }
        let id = schema_id(&schema, json);
        Ok(Arc::new(Self {
            name,
            id,
            json: json.to_owned(),
            writer: super::avro_out::Writer::new(schema),
            by_name: fields
                .iter()
                .enumerate()
                .map(|(i, f)| (f.name.clone(), i))
                .collect(),
            fields,
            is_change_event,
        }))
    }

    /// The parsed schema, for encoding and decoding.
    pub fn schema(&self) -> &Schema {
        self.writer.schema()
    }

    /// The body field of that name.
    pub fn field(&self, name: &str) -> Option<&FieldDef> {
        self.by_name.get(name).map(|&i| &self.fields[i])
    }

    /// The field `name` names, matched case-insensitively as Salesforce matches field names.
    pub fn field_ignore_case(&self, name: &str) -> Option<&FieldDef> {
        self.field(name).or_else(|| {
            self.fields
                .iter()
                .find(|f| f.name.eq_ignore_ascii_case(name))
        })
    }

    /// A new version with `name` appended as a nullable field of `avro_type` (a primitive type
    /// name, or `["null", primitive]`; `"datetime"` or `"date"` for a `long` documented as a
    /// Salesforce datetime or date).
    pub fn with_added_field(&self, name: &str, avro_type: &Json) -> Result<Arc<Self>, SimError> {
        if self.field(name).is_some() || name == HEADER_FIELD {
            return Err(SimError::InvalidSchemaChange(format!(
                "{} already has a field {name}",
                self.name
            )));
        }
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(SimError::InvalidSchemaChange(format!(
                "invalid field name {name:?}"
            )));
        }
        let type_name = match avro_type {
            Json::String(s) => Some(s.as_str()),
            Json::Array(v) if v.len() == 2 && v[0] == "null" => v[1].as_str(),
            _ => None,
        };
        let (scalar, data_doc) = match type_name {
            Some("datetime") => (Some(ScalarType::Long), Some("Data:DateTime")),
            Some("date") => (Some(ScalarType::Long), Some("Data:Date")),
            Some(t) => (ScalarType::parse(t), None),
            None => (None, None),
        };
        let scalar = scalar.ok_or_else(|| {
            SimError::InvalidSchemaChange(format!(
                "unsupported type {avro_type} for {name} (use a primitive Avro type, \"datetime\" or \"date\")"
            ))
        })?;
        let mut doc: Json =
            serde_json::from_str(&self.json).map_err(|e| SimError::Schema(e.to_string()))?;
        let fields = doc
            .get_mut("fields")
            .and_then(Json::as_array_mut)
            .ok_or_else(|| SimError::Schema("schema has no fields".into()))?;
        let mut field = serde_json::json!({
            "name": name,
            "type": ["null", scalar.avro_name()],
            "default": null,
        });
        if let Some(d) = data_doc {
            field["doc"] = Json::from(d);
        }
        fields.push(field);
        let json =
            serde_json::to_string_pretty(&doc).map_err(|e| SimError::Schema(e.to_string()))?;
        Self::parse(&json)
    }
}

fn field_kind(
    ty: &Json,
    named: &mut HashMap<String, Vec<(String, ScalarType)>>,
) -> Option<FieldKind> {
    match ty {
        Json::String(s) => ScalarType::parse(s).map(FieldKind::Scalar).or_else(|| {
            let short = s.rsplit('.').next().unwrap_or(s);
            named.get(short).cloned().map(FieldKind::Compound)
        }),
        Json::Object(o) if o.get("type").and_then(Json::as_str) == Some("record") => {
            let rname = o.get("name")?.as_str()?.to_owned();
            let mut children = Vec::new();
            for c in o.get("fields")?.as_array()? {
                let cname = c.get("name")?.as_str()?.to_owned();
                let cty = match c.get("type")? {
                    Json::Array(v) if v.len() == 2 && v[0] == "null" => v[1].as_str()?,
                    Json::String(s) => s.as_str(),
                    _ => return None,
                };
                children.push((cname, ScalarType::parse(cty)?));
            }
            named.insert(rname, children.clone());
            Some(FieldKind::Compound(children))
        }
        _ => None,
    }
}

/// Salesforce-style schema id: 16 bytes (the Rabin fingerprint of the canonical form, then an
/// FNV-1a 64 hash of the exact JSON), base64url without padding.
pub fn schema_id(schema: &Schema, json: &str) -> String {
    let mut bytes = schema.fingerprint::<Rabin>().bytes;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in json.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    bytes.extend_from_slice(&h.to_be_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_schemas_parse_with_documented_positions() {
        let account = SchemaVersion::parse(ACCOUNT_CHANGE_EVENT).expect("account");
        assert!(account.is_change_event);
        assert_eq!(account.field("BillingAddress").map(|f| f.position), Some(4));
        assert_eq!(
            account.field("LastModifiedDate").map(|f| f.position),
            Some(22)
        );
        let billing = account.field("BillingAddress").expect("billing");
        assert_eq!(billing.child_position("City"), Some(1));
        assert_eq!(billing.child_position("State"), Some(2));
        // ShippingAddress references the named Address record.
        assert!(matches!(
            account.field("ShippingAddress").map(|f| &f.kind),
            Some(FieldKind::Compound(c)) if c.len() == 11
        ));
        let contact = SchemaVersion::parse(CONTACT_CHANGE_EVENT).expect("contact");
        assert!(matches!(
            contact.field("Name").map(|f| &f.kind),
            Some(FieldKind::Compound(c)) if c[1].0 == "FirstName"
        ));
        assert_eq!(
            account.field("CreatedDate").and_then(|f| f.temporal),
            Some(Temporal::DateTime)
        );
        assert_eq!(
            contact.field("Birthdate").and_then(|f| f.temporal),
            Some(Temporal::Date)
        );
        assert_eq!(account.field("Name").and_then(|f| f.temporal), None);
        assert!(account.field("External_Id__c").is_some());
        assert!(contact.field("External_Id__c").is_some());
        let order = SchemaVersion::parse(ORDER_EVENT).expect("order");
        assert!(!order.is_change_event);
        assert_eq!(order.field("CreatedDate").map(|f| f.nullable), Some(false));
    }

    #[test]
    fn schema_id_is_salesforce_shaped_and_changes_with_the_schema() {
        let v1 = SchemaVersion::parse(ACCOUNT_CHANGE_EVENT).expect("v1");
        assert_eq!(v1.id.len(), 22);
        assert!(
            v1.id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        let again = SchemaVersion::parse(ACCOUNT_CHANGE_EVENT).expect("again");
        assert_eq!(v1.id, again.id);
        let v2 = v1
            .with_added_field("Loyalty__c", &serde_json::json!("string"))
            .expect("v2");
        assert_ne!(v1.id, v2.id);
        assert_eq!(v2.fields.last().map(|f| f.position), Some(36));
        assert!(
            v1.with_added_field("Name", &serde_json::json!("string"))
                .is_err()
        );
        assert!(
            v1.with_added_field("X__c", &serde_json::json!({"type": "map"}))
                .is_err()
        );
        let v3 = v2
            .with_added_field("Renewal__c", &serde_json::json!("datetime"))
            .expect("v3");
        assert_eq!(
            v3.field("Renewal__c").map(|f| (f.kind.clone(), f.temporal)),
            Some((
                FieldKind::Scalar(ScalarType::Long),
                Some(Temporal::DateTime)
            ))
        );
    }
}
