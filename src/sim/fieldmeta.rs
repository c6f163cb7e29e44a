//! The simulated objects' fields as Salesforce's REST API and `describe` present them: one
//! [`FieldMeta`] per field (label, describe type, lengths, createable/updateable, compound
//! component, formula…), built from the object's change event schema plus the tables of this
//! file, which hold what the event schemas lack.
//!
//! Contract:
//! * Field order is describe's: `Id`, `IsDeleted`, then the schema's fields, a compound field's
//!   components (`BillingStreet`, `BillingCity`, …) just before the compound (`BillingAddress`),
//!   `SystemModstamp` after `LastModifiedById`, formula fields last.
//! * Storage stays as change events carry it: a compound field is one nested record
//!   (`BillingAddress: {"City": …}`). Over REST the components are the writable fields and the
//!   compound is read-only ([`ObjectMeta::to_stored`] and [`ObjectMeta::read`] translate).
//! * Formula fields are not stored and not in the change event schema (Change Data Capture
//!   Developer Guide, "General Considerations": "No Formula Field Support"); they are computed on
//!   read.
//! * Names are matched case-insensitively, as Salesforce matches field names.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{Map, Value as Json};

use super::catalog::{FieldDef, FieldKind, ScalarType, SchemaVersion, Temporal};
use super::error::SimError;

/// Where a field's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    /// Stored under its own name (a schema field, or `Id`, `IsDeleted`, `SystemModstamp`).
    Stored,
    /// A component of a compound field, stored nested: `BillingCity` is `BillingAddress.City`.
    Component {
        /// The compound (stored) field, e.g. `BillingAddress`.
        compound: String,
        /// The nested field, e.g. `City`.
        child: String,
    },
    /// A read-only compound field (`BillingAddress`, Contact `Name`, a custom geolocation).
    Compound(CompoundShape),
    /// A formula field, computed on read.
    Formula(Formula),
}

/// The shape a compound field is read in over REST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CompoundShape {
    /// An object with lower-case keys (`city`, `postalCode`, …): SOAP API Developer Guide,
    /// "Address Compound Fields".
    Address,
    /// Contact `Name`: a string, "FirstName MiddleName LastName Suffix" (Object Reference,
    /// "Contact": Name is the concatenation of FirstName, MiddleName, LastName and Suffix).
    PersonName,
    /// A geolocation: `{"latitude", "longitude"}` (SOAP API Developer Guide, "Geolocation
    /// Compound Field").
    Location,
}

/// The formula fields the simulated org defines (computed on read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Formula {
    /// `UPPER(Name)`, a Text formula.
    UpperName,
}

/// The formula fields of the simulated objects: (object, name, label, formula, what computes it).
const FORMULAS: &[(&str, &str, &str, &str, Formula)] = &[(
    "Account",
    "Name_Upper__c",
    "Name Upper",
    "UPPER(Name)",
    Formula::UpperName,
)];

/// Fields a record must have (`nillable: false` in describe), as the org's save checks them.
const REQUIRED: &[(&str, &str)] = &[("Account", "Name"), ("Contact", "LastName")];

/// One field as `describe` reports it and REST reads and writes it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FieldMeta {
    pub name: String,
    pub label: String,
    /// describe `type`: `id`, `string`, `textarea`, `reference`, `address`, `picklist`, …
    pub ty: &'static str,
    pub soap_type: &'static str,
    pub length: u32,
    pub precision: u32,
    pub scale: u32,
    pub digits: u32,
    pub nillable: bool,
    pub createable: bool,
    pub updateable: bool,
    pub defaulted_on_create: bool,
    pub custom: bool,
    pub name_field: bool,
    pub external_id: bool,
    pub id_lookup: bool,
    pub reference_to: Vec<&'static str>,
    pub extra_type_info: Option<&'static str>,
    /// The formula of a calculated field.
    pub formula: Option<&'static str>,
    /// The compound a component belongs to (describe `compoundFieldName`).
    pub compound_field_name: Option<String>,
    /// A date or datetime (rendered as Salesforce text over REST).
    pub temporal: Option<Temporal>,
    pub source: Source,
}

/// A field's describe type: (`type`, `soapType`, `length`, `precision`, `scale`, `digits`,
/// `extraTypeInfo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TypeInfo {
    pub ty: &'static str,
    pub soap_type: &'static str,
    pub length: u32,
    pub precision: u32,
    pub scale: u32,
    pub digits: u32,
    pub extra_type_info: Option<&'static str>,
}

const fn text(ty: &'static str, length: u32) -> TypeInfo {
    TypeInfo {
        ty,
        soap_type: "xsd:string",
        length,
        precision: 0,
        scale: 0,
        digits: 0,
        extra_type_info: None,
    }
}

const fn number(ty: &'static str, soap_type: &'static str, precision: u32, scale: u32) -> TypeInfo {
    TypeInfo {
        ty,
        soap_type,
        length: 0,
        precision,
        scale,
        digits: 0,
        extra_type_info: None,
    }
}

/// The describe type of a field by the Salesforce data type its event schema documents
/// (`Data:Phone`, …), or by its Avro type when undocumented. The one table of field types:
/// lengths as the Salesforce Field Reference lists them for Account and Contact. Long text areas
/// (`Data:LongTextArea`, e.g. `Description`) are `textarea`, length 32000, `plaintextarea`.
pub(crate) fn type_info(data_type: Option<&str>, scalar: Option<ScalarType>) -> TypeInfo {
    match data_type {
        Some("Id") => TypeInfo {
            soap_type: "tns:ID",
            ..text("id", 18)
        },
        Some("EntityId") => TypeInfo {
            soap_type: "tns:ID",
            ..text("reference", 18)
        },
        Some("Picklist") => text("picklist", 255),
        Some("Phone") => text("phone", 40),
        Some("Url") => text("url", 255),
        Some("Email") => text("email", 80),
        Some("LongTextArea") => TypeInfo {
            extra_type_info: Some("plaintextarea"),
            ..text("textarea", 32000)
        },
        Some("Currency") => number("currency", "xsd:double", 18, 2),
        Some("Integer") => TypeInfo {
            digits: 9,
            ..number("int", "xsd:int", 0, 0)
        },
        Some("Boolean") => number("boolean", "xsd:boolean", 0, 0),
        Some("DateTime") => number("datetime", "xsd:dateTime", 0, 0),
        Some("Date") => number("date", "xsd:date", 0, 0),
        Some("Address") => number("address", "urn:address", 0, 0),
        Some("Location") => number("location", "urn:location", 0, 0),
        Some("PersonName") => text("string", 121),
        _ => match scalar {
            Some(ScalarType::Boolean) => number("boolean", "xsd:boolean", 0, 0),
            Some(ScalarType::Int) => TypeInfo {
                digits: 9,
                ..number("int", "xsd:int", 0, 0)
            },
            Some(ScalarType::Double | ScalarType::Float | ScalarType::Long) => {
                number("double", "xsd:double", 18, 0)
            }
            _ => text("string", 255),
        },
    }
}

/// The describe type of a compound's component (Salesforce Field Reference, Account/Contact).
fn component_type(child: &str) -> TypeInfo {
    match child {
        "Street" => text("textarea", 255),
        "City" => text("string", 40),
        "PostalCode" => text("string", 20),
        "StateCode" | "CountryCode" => text("picklist", 10),
        "GeocodeAccuracy" | "Salutation" => text("picklist", 40),
        "Latitude" | "Longitude" => number("double", "xsd:double", 18, 15),
        "FirstName" | "MiddleName" | "Suffix" => text("string", 40),
        _ => text("string", 80),
    }
}

/// The REST name of a compound's component: `BillingAddress`+`City` → `BillingCity`, Contact
/// `Name`+`FirstName` → `FirstName`, `Loc__c`+`Latitude` → `Loc__Latitude__s` (SOAP API
/// Developer Guide, "Compound Fields"). `Xyz` of the change event schemas' Address record is
/// not a field of the REST API.
pub(crate) fn component_name(compound: &str, child: &str) -> Option<String> {
    if child == "Xyz" {
        return None;
    }
    if compound == "Name" {
        return Some(child.to_owned());
    }
    if let Some(base) = compound.strip_suffix("__c") {
        return Some(format!("{base}__{child}__s"));
    }
    Some(format!(
        "{}{child}",
        compound.strip_suffix("Address").unwrap_or(compound)
    ))
}

/// `PostalCode` → `postalCode`: the key of a component in a compound's REST value.
fn lower_camel(name: &str) -> String {
    let mut chars = name.chars();
    chars
        .next()
        .map(|c| c.to_ascii_lowercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

/// `BillingPostalCode` → `Billing Postal Code`, `External_Id__c` → `External Id`.
fn label_of(name: &str) -> String {
    let base = name
        .strip_suffix("__c")
        .or_else(|| name.strip_suffix("__s"))
        .unwrap_or(name);
    let mut out = String::new();
    let mut prev_lower = false;
    for c in base.chars() {
        if c == '_' {
            if !out.ends_with(' ') {
                out.push(' ');
            }
            prev_lower = false;
            continue;
        }
        if c.is_ascii_uppercase() && prev_lower {
            out.push(' ');
        }
        prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        out.push(c);
    }
    out.trim().to_owned()
}

/// The objects a reference field points to (Object Reference, "Account", "Contact").
fn reference_to(name: &str) -> Vec<&'static str> {
    match name {
        "ParentId" | "AccountId" | "MasterRecordId" => vec!["Account"],
        "DandbCompanyId" => vec!["DandBCompany"],
        _ => vec!["User"],
    }
}

fn plain(name: &str, label: String, t: TypeInfo) -> FieldMeta {
    FieldMeta {
        name: name.to_owned(),
        label,
        ty: t.ty,
        soap_type: t.soap_type,
        length: t.length,
        precision: t.precision,
        scale: t.scale,
        digits: t.digits,
        nillable: true,
        createable: true,
        updateable: true,
        defaulted_on_create: false,
        custom: name.ends_with("__c"),
        name_field: false,
        external_id: false,
        id_lookup: false,
        reference_to: Vec::new(),
        extra_type_info: t.extra_type_info,
        formula: None,
        compound_field_name: None,
        temporal: None,
        source: Source::Stored,
    }
}

/// A system field: read-only, set by the org.
fn system(name: &str, label: &str, t: TypeInfo) -> FieldMeta {
    FieldMeta {
        nillable: false,
        createable: false,
        updateable: false,
        defaulted_on_create: true,
        id_lookup: name == "Id",
        temporal: (t.ty == "datetime").then_some(Temporal::DateTime),
        ..plain(name, label.to_owned(), t)
    }
}

const SYSTEM_READ_ONLY: &[&str] = &[
    "CreatedDate",
    "CreatedById",
    "LastModifiedDate",
    "LastModifiedById",
];

/// The metadata of one schema field, its components first when it is a compound.
fn schema_field(object: &str, def: &FieldDef, external_ids: &[&str], out: &mut Vec<FieldMeta>) {
    let scalar = match &def.kind {
        FieldKind::Scalar(t) => Some(*t),
        FieldKind::Compound(_) => None,
    };
    let t = type_info(def.data_type.as_deref(), scalar);
    if let FieldKind::Compound(children) = &def.kind {
        let shape = match def.data_type.as_deref() {
            Some("PersonName") => CompoundShape::PersonName,
            Some("Location") => CompoundShape::Location,
            _ if def.name.ends_with("__c") => CompoundShape::Location,
            _ => CompoundShape::Address,
        };
        for (child, _) in children {
            let Some(name) = component_name(&def.name, child) else {
                continue;
            };
            let required = REQUIRED.contains(&(object, name.as_str()));
            out.push(FieldMeta {
                nillable: !required,
                compound_field_name: Some(def.name.clone()),
                source: Source::Component {
                    compound: def.name.clone(),
                    child: child.clone(),
                },
                ..plain(&name, label_of(&name), component_type(child))
            });
        }
        out.push(FieldMeta {
            createable: false,
            updateable: false,
            name_field: shape == CompoundShape::PersonName,
            source: Source::Compound(shape),
            ..plain(&def.name, label_of(&def.name), t)
        });
        return;
    }
    let read_only = SYSTEM_READ_ONLY.contains(&def.name.as_str());
    let external_id = external_ids.contains(&def.name.as_str());
    let mut meta = FieldMeta {
        nillable: def.nullable && !REQUIRED.contains(&(object, def.name.as_str())),
        createable: !read_only,
        updateable: !read_only,
        defaulted_on_create: read_only || def.name == "OwnerId",
        name_field: def.name == "Name",
        external_id,
        id_lookup: external_id,
        temporal: def.temporal,
        ..plain(&def.name, label_of(&def.name), t)
    };
    if meta.ty == "reference" {
        meta.reference_to = reference_to(&def.name);
        meta.label = meta
            .label
            .strip_suffix(" Id")
            .map_or(meta.label.clone(), |l| format!("{l} ID"));
    }
    if meta.ty == "boolean" {
        meta.nillable = false;
        meta.defaulted_on_create = true;
    }
    out.push(meta);
}

/// The fields of one object version, in describe's order, with a case-insensitive index.
#[derive(Debug)]
pub(crate) struct ObjectMeta {
    pub fields: Vec<FieldMeta>,
    by_name: HashMap<String, usize>,
}

impl ObjectMeta {
    /// Builds the metadata of `object` from its schema and `external_ids` (its External Id
    /// fields).
    pub(crate) fn build(object: &str, schema: &SchemaVersion, external_ids: &[&str]) -> Self {
        let id_type = type_info(Some("Id"), None);
        let mut fields = vec![
            system("Id", &format!("{object} ID"), id_type),
            system("IsDeleted", "Deleted", type_info(Some("Boolean"), None)),
        ];
        for def in &schema.fields {
            schema_field(object, def, external_ids, &mut fields);
            if def.name == "LastModifiedById" {
                fields.push(system(
                    "SystemModstamp",
                    "System Modstamp",
                    type_info(Some("DateTime"), None),
                ));
            }
        }
        if !fields.iter().any(|f| f.name == "SystemModstamp") {
            fields.push(system(
                "SystemModstamp",
                "System Modstamp",
                type_info(Some("DateTime"), None),
            ));
        }
        for (_, name, label, formula, kind) in FORMULAS.iter().filter(|f| f.0 == object) {
            fields.push(FieldMeta {
                createable: false,
                updateable: false,
                formula: Some(formula),
                source: Source::Formula(*kind),
                ..plain(name, (*label).to_owned(), text("string", 1300))
            });
        }
        let by_name = fields
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name.to_ascii_lowercase(), i))
            .collect();
        Self { fields, by_name }
    }

    /// The field `name` names, matched case-insensitively.
    pub(crate) fn field(&self, name: &str) -> Option<&FieldMeta> {
        self.by_name
            .get(&name.to_ascii_lowercase())
            .map(|&i| &self.fields[i])
    }

    /// A REST write's fields as the org stores them: components nested into their compound
    /// (`BillingCity` → `BillingAddress.City`, with the API spelling). Naming a compound or a
    /// formula field is refused ([`SimError::ReadOnlyField`]: Salesforce answers
    /// `INVALID_FIELD_FOR_INSERT_UPDATE`, "Unable to create/update fields: BillingAddress…", as
    /// captured in restforce/restforce#390). Other names pass unchanged, for the org's checks.
    pub(crate) fn to_stored(
        &self,
        object: &str,
        fields: Map<String, Json>,
    ) -> Result<Map<String, Json>, SimError> {
        let mut out = Map::new();
        for (name, value) in fields {
            match self.field(&name).map(|f| (f, &f.source)) {
                Some((_, Source::Component { compound, child })) => {
                    let entry = out
                        .entry(compound.clone())
                        .or_insert_with(|| Json::Object(Map::new()));
                    if let Json::Object(nested) = entry {
                        nested.insert(child.clone(), value);
                    }
                }
                Some((f, Source::Compound(_) | Source::Formula(_))) => {
                    return Err(SimError::ReadOnlyField {
                        object: object.to_owned(),
                        field: f.name.clone(),
                    });
                }
                _ => {
                    out.insert(name, value);
                }
            }
        }
        Ok(out)
    }

    /// The value of field `name` (its API spelling) of a stored record, as REST reads it (dates
    /// and datetimes still epoch ms); null when unset.
    pub(crate) fn read(&self, rec: &Map<String, Json>, name: &str) -> Json {
        let Some(meta) = self.field(name) else {
            return Json::Null;
        };
        let stored = |field: &str, child: &str| {
            rec.get(field)
                .and_then(|c| c.get(child))
                .cloned()
                .unwrap_or(Json::Null)
        };
        match &meta.source {
            Source::Stored => rec.get(&meta.name).cloned().unwrap_or(Json::Null),
            Source::Component { compound, child } => stored(compound, child),
            Source::Formula(Formula::UpperName) => rec
                .get("Name")
                .and_then(Json::as_str)
                .map_or(Json::Null, |n| Json::from(n.to_uppercase())),
            Source::Compound(CompoundShape::PersonName) => {
                let parts: Vec<String> = ["FirstName", "MiddleName", "LastName", "Suffix"]
                    .iter()
                    .filter_map(|c| stored(&meta.name, c).as_str().map(str::to_owned))
                    .filter(|s| !s.is_empty())
                    .collect();
                if parts.is_empty() {
                    Json::Null
                } else {
                    Json::from(parts.join(" "))
                }
            }
            Source::Compound(_) => {
                let Some(Json::Object(nested)) = rec.get(&meta.name) else {
                    return Json::Null;
                };
                if nested.values().all(Json::is_null) {
                    return Json::Null;
                }
                let mut keys: Vec<(String, Json)> = self
                    .fields
                    .iter()
                    .filter_map(|f| match &f.source {
                        Source::Component { compound, child } if *compound == meta.name => Some((
                            lower_camel(child),
                            nested.get(child).cloned().unwrap_or(Json::Null),
                        )),
                        _ => None,
                    })
                    .collect();
                // Real orgs list the keys alphabetically (`city`, `country`, `geocodeAccuracy`,
                // …), as simple-salesforce users' dumps of BillingAddress show.
                keys.sort_by(|a, b| a.0.cmp(&b.0));
                Json::Object(keys.into_iter().collect())
            }
        }
    }
}

/// Built metadata by (object, schema id).
type MetaCache = HashMap<(String, String), Arc<ObjectMeta>>;

/// The metadata of `object` at `schema`'s version (built once per version).
pub(crate) fn object_meta(
    object: &str,
    schema: &SchemaVersion,
    external_ids: &[&str],
) -> Arc<ObjectMeta> {
    static CACHE: OnceLock<Mutex<MetaCache>> = OnceLock::new();
    let key = (object.to_owned(), schema.id.clone());
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = cache
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    map.entry(key)
        .or_insert_with(|| Arc::new(ObjectMeta::build(object, schema, external_ids)))
        .clone()
}
