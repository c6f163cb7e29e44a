//! The org's data and metadata ([`Org`]): the CDC-enabled objects (Account, Contact) with their
//! records, required fields, unique External Id fields (and their index), validation rules and
//! schema versions; the platform events; reads of the committed state or of a transaction's view
//! of it ([`Tx`]); and the metadata changes (fields, validation rules, lock faults).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::{Map, Value as Json};

use super::change::Change;
use super::fields::{FieldCheck, normalize_fields};
use crate::sim::catalog::{self, SchemaVersion};
use crate::sim::error::SimError;
use crate::sim::fieldmeta::{self, ObjectMeta};
use crate::sim::ids::{self, IdGenerator};

/// The External Id field every bundled object has (unique, case-insensitive).
pub const EXTERNAL_ID_FIELD: &str = "External_Id__c";

/// Writes staged but not committed: commit with [`Org::finish`], roll back by dropping it.
#[derive(Debug, Default)]
pub struct Tx {
    pub(super) overlay: HashMap<(String, String), Record>,
    pub(super) changes: Vec<Change>,
}

impl Tx {
    /// True when nothing was staged successfully.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

/// A validation rule: a saved record whose `field` (`Parent.Child` for a compound's part)
/// equals `value` (null: is blank) is refused with `message`.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidationRule {
    /// Field path.
    pub field: String,
    /// Refused value.
    pub value: Json,
    /// Error message.
    pub message: String,
}

#[derive(Debug, Clone)]
pub(super) struct Record {
    pub(super) fields: Map<String, Json>,
    pub(super) deleted: bool,
}

/// A field a saved record must have: a top-level field or a compound's part, and the name
/// Salesforce reports for it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Required {
    pub(super) field: &'static str,
    pub(super) child: Option<&'static str>,
    pub(super) label: &'static str,
}

#[derive(Debug)]
pub(super) struct SObject {
    pub(super) schema: Arc<SchemaVersion>,
    pub(super) records: HashMap<String, Record>,
    pub(super) ids: IdGenerator,
    pub(super) prefix: &'static str,
    pub(super) required: Vec<Required>,
    pub(super) external_ids: Vec<String>,
    /// External Id field → lower-cased value → Id of the live record holding it.
    pub(super) index: HashMap<String, HashMap<String, String>>,
    pub(super) rules: Vec<ValidationRule>,
    /// Deletion time of the newest record physically purged from the recycle bin.
    pub(super) last_purged: Option<i64>,
}

/// The org's data and metadata.
#[derive(Debug)]
pub struct Org {
    pub(super) objects: BTreeMap<String, SObject>,
    pub(super) platform_events: BTreeMap<String, Arc<SchemaVersion>>,
    pub(super) schemas: HashMap<String, Arc<SchemaVersion>>,
    pub(super) commit_number: i64,
    /// Record writes still to fail with `UNABLE_TO_LOCK_ROW` (REST writes only).
    pub(super) lock_faults: usize,
}

/// Lower-cased key of an External Id value.
pub(super) fn unique_key(v: &Json) -> Option<String> {
    v.as_str().filter(|s| !s.is_empty()).map(str::to_lowercase)
}

impl Org {
    /// The org with the bundled objects (Account, Contact) and platform event (Order_Event__e).
    pub fn new() -> Result<Self, SimError> {
        let mut org = Self {
            objects: BTreeMap::new(),
            platform_events: BTreeMap::new(),
            schemas: HashMap::new(),
            // Real orgs' commit numbers are past 2^53: 1698100138468892700 is reported in
            // pozil/pub-sub-api-node-client#21 and #25 and forcedotcom/pub-sub-api#44 (an
            // older capture in that client's README has 11657372702432).
            commit_number: 1_698_100_138_468_892_700,
            lock_faults: 0,
        };
        let account_required = vec![Required {
            field: "Name",
            child: None,
            label: "Name",
        }];
        let contact_required = vec![Required {
            field: "Name",
            child: Some("LastName"),
            label: "LastName",
        }];
        for (name, prefix, json, required) in [
            (
                "Account",
                "001",
                catalog::ACCOUNT_CHANGE_EVENT,
                account_required,
            ),
            (
                "Contact",
                "003",
                catalog::CONTACT_CHANGE_EVENT,
                contact_required,
            ),
        ] {
            let schema = SchemaVersion::parse(json)?;
            org.schemas.insert(schema.id.clone(), schema.clone());
            let external_ids: Vec<String> = [EXTERNAL_ID_FIELD]
                .into_iter()
                .filter(|f| schema.field(f).is_some())
                .map(str::to_owned)
                .collect();
            org.objects.insert(
                name.to_owned(),
                SObject {
                    schema,
                    records: HashMap::new(),
                    ids: IdGenerator::new(prefix),
                    prefix,
                    required,
                    index: external_ids
                        .iter()
                        .map(|f| (f.clone(), HashMap::new()))
                        .collect(),
                    external_ids,
                    rules: Vec::new(),
                    last_purged: None,
                },
            );
        }
        let order = SchemaVersion::parse(catalog::ORDER_EVENT)?;
        org.schemas.insert(order.id.clone(), order.clone());
        org.platform_events.insert(order.name.clone(), order);
        Ok(org)
    }

    /// CDC-enabled object names.
    pub fn object_names(&self) -> impl Iterator<Item = &str> {
        self.objects.keys().map(String::as_str)
    }

    /// The API spelling of an object named in any case, as Salesforce matches object names
    /// (REST paths, `attributes.type`, SOQL `FROM`); `None` for an object the org lacks.
    pub fn canonical_object(&self, object: &str) -> Option<&str> {
        if let Some((name, _)) = self.objects.get_key_value(object) {
            return Some(name);
        }
        self.object_names().find(|o| o.eq_ignore_ascii_case(object))
    }

    /// Salesforce's message for an object name it does not know (SOQL `INVALID_TYPE`, sObject
    /// Collections `INVALID_TYPE`).
    pub fn unsupported_object(object: &str) -> String {
        format!(
            "sObject type '{object}' is not supported. If you are attempting to use a custom object, be sure to append the '__c' after the entity name. Please reference your WSDL or the describe call for the appropriate names."
        )
    }

    /// True for a CDC-enabled object.
    pub fn has_object(&self, object: &str) -> bool {
        self.objects.contains_key(object)
    }

    /// Current change event schema of an object.
    pub fn object_schema(&self, object: &str) -> Option<Arc<SchemaVersion>> {
        self.objects.get(object).map(|o| o.schema.clone())
    }

    /// The REST/describe metadata of an object's current version (see [`fieldmeta`]).
    pub(crate) fn meta(&self, object: &str) -> Option<Arc<ObjectMeta>> {
        let o = self.objects.get(object)?;
        let external: Vec<&str> = o.external_ids.iter().map(String::as_str).collect();
        Some(fieldmeta::object_meta(object, &o.schema, &external))
    }

    /// The 3-character key prefix of an object's record Ids (`001` for Account).
    pub fn key_prefix(&self, object: &str) -> Option<&str> {
        self.objects.get(object).map(|o| o.prefix)
    }

    /// Current schema of a platform event (`Order_Event__e`).
    pub fn platform_event_schema(&self, name: &str) -> Option<Arc<SchemaVersion>> {
        self.platform_events.get(name).cloned()
    }

    /// Any schema version ever used, by id.
    pub fn schema_by_id(&self, id: &str) -> Option<Arc<SchemaVersion>> {
        self.schemas.get(id).cloned()
    }

    /// Next commit number (monotonic).
    pub fn next_commit_number(&mut self) -> i64 {
        self.commit_number += 1;
        self.commit_number
    }

    pub(super) fn sobject(&self, object: &str) -> Result<&SObject, SimError> {
        self.objects
            .get(object)
            .ok_or_else(|| SimError::UnknownObject(object.to_owned()))
    }

    /// Reserves a new record Id for `object`.
    pub fn reserve_id(&mut self, object: &str) -> Result<String, SimError> {
        self.objects
            .get_mut(object)
            .map(|o| o.ids.next_id())
            .ok_or_else(|| SimError::UnknownObject(object.to_owned()))
    }

    /// The object whose key prefix a (15- or 18-character) Id carries.
    pub fn object_for_id(&self, id: &str) -> Option<&str> {
        let prefix = id.get(..3)?;
        self.objects
            .iter()
            .find(|(_, o)| o.prefix == prefix)
            .map(|(name, _)| name.as_str())
    }

    /// True when `field` is an External Id field of `object`.
    pub fn is_external_id(&self, object: &str, field: &str) -> bool {
        self.objects
            .get(object)
            .is_some_and(|o| o.external_ids.iter().any(|f| f == field))
    }

    /// Checks field names and value types against the object's current schema (system fields
    /// are refused as read-only).
    pub fn validate_fields(
        &self,
        object: &str,
        fields: &Map<String, Json>,
    ) -> Result<(), SimError> {
        let schema = &self.sobject(object)?.schema;
        normalize_fields(schema, object, fields, FieldCheck::Write).map(drop)
    }

    /// Like [`Org::validate_fields`], but system fields pass (they are refused per record when
    /// written): what a request is checked against before any record is tried.
    pub fn check_shape(&self, object: &str, fields: &Map<String, Json>) -> Result<(), SimError> {
        let schema = &self.sobject(object)?.schema;
        normalize_fields(schema, object, fields, FieldCheck::Shape).map(drop)
    }

    /// A record's fields (with `Id`, system fields and `IsDeleted`), committed state.
    pub fn record(&self, object: &str, id: &str) -> Option<Map<String, Json>> {
        self.view(None, object, id)
    }

    /// A record's fields as a transaction sees them (`tx` = `None`: committed state).
    pub fn view(&self, tx: Option<&Tx>, object: &str, id: &str) -> Option<Map<String, Json>> {
        let id = ids::normalize(id)?;
        let rec = self.current(tx, object, &id)?;
        Some(with_deleted_flag(rec))
    }

    /// Every live record of `object` as a transaction sees it, in Id order.
    pub fn live_records(&self, tx: Option<&Tx>, object: &str) -> Vec<Map<String, Json>> {
        self.records(tx, object, false)
    }

    /// Every record of `object` as a transaction sees it, in Id order: the live ones, and with
    /// `deleted` also those in the recycle bin (`IsDeleted` true).
    pub fn records(&self, tx: Option<&Tx>, object: &str, deleted: bool) -> Vec<Map<String, Json>> {
        let Some(o) = self.objects.get(object) else {
            return Vec::new();
        };
        let mut out: BTreeMap<&str, &Record> =
            o.records.iter().map(|(id, r)| (id.as_str(), r)).collect();
        if let Some(tx) = tx {
            for ((obj, id), r) in &tx.overlay {
                if obj == object {
                    out.insert(id.as_str(), r);
                }
            }
        }
        out.into_values()
            .filter(|r| deleted || !r.deleted)
            .map(|r| with_deleted_flag(r.clone()))
            .collect()
    }

    /// Every committed record of `object` by reference, in Id order, each with its deleted
    /// flag: the live ones, and with `deleted` also those in the recycle bin. What a large read
    /// (a Bulk API query job) scans without copying the records.
    pub(crate) fn committed_records(
        &self,
        object: &str,
        deleted: bool,
    ) -> Vec<(&Map<String, Json>, bool)> {
        let Some(o) = self.objects.get(object) else {
            return Vec::new();
        };
        let mut out: Vec<(&str, &Record)> = o
            .records
            .iter()
            .filter(|(_, r)| deleted || !r.deleted)
            .map(|(id, r)| (id.as_str(), r))
            .collect();
        out.sort_unstable_by(|a, b| a.0.cmp(b.0));
        out.into_iter()
            .map(|(_, r)| (&r.fields, r.deleted))
            .collect()
    }

    /// The Id of the live record whose External Id field `field` holds `value`
    /// (case-insensitively), as a transaction sees it.
    pub fn find_by_external_id(
        &self,
        tx: Option<&Tx>,
        object: &str,
        field: &str,
        value: &str,
    ) -> Option<String> {
        let key = unique_key(&Json::from(value))?;
        self.live_owner(tx, object, field, &key, None)
    }

    /// Adds a validation rule to an object (its field must exist).
    pub fn add_validation_rule(
        &mut self,
        object: &str,
        rule: ValidationRule,
    ) -> Result<(), SimError> {
        let o = self
            .objects
            .get_mut(object)
            .ok_or_else(|| SimError::UnknownObject(object.to_owned()))?;
        let (top, child) = match rule.field.split_once('.') {
            Some((t, c)) => (t, Some(c)),
            None => (rule.field.as_str(), None),
        };
        let known = match (o.schema.field(top), child) {
            (Some(def), Some(c)) => def.child_position(c).is_some(),
            (Some(_), None) => true,
            (None, _) => false,
        };
        if !known {
            return Err(SimError::UnknownField {
                object: object.to_owned(),
                field: rule.field,
            });
        }
        o.rules.push(rule);
        Ok(())
    }

    /// The next `n` REST record writes fail with `UNABLE_TO_LOCK_ROW`.
    pub fn set_lock_faults(&mut self, n: usize) {
        self.lock_faults = n;
    }

    /// REST record writes still to fail with `UNABLE_TO_LOCK_ROW`.
    pub fn lock_faults(&self) -> usize {
        self.lock_faults
    }

    /// Adds a nullable field to an object or platform event; returns the new schema id.
    pub fn add_field(&mut self, object: &str, name: &str, ty: &Json) -> Result<String, SimError> {
        let new = if let Some(o) = self.objects.get_mut(object) {
            let new = o.schema.with_added_field(name, ty)?;
            o.schema = new.clone();
            new
        } else if let Some(pe) = self.platform_events.get_mut(object) {
            let new = pe.with_added_field(name, ty)?;
            *pe = new.clone();
            new
        } else {
            return Err(SimError::UnknownObject(object.to_owned()));
        };
        self.schemas.insert(new.id.clone(), new.clone());
        Ok(new.id.clone())
    }

    pub(super) fn current(&self, tx: Option<&Tx>, object: &str, id: &str) -> Option<Record> {
        if let Some(r) = tx.and_then(|tx| tx.overlay.get(&(object.to_owned(), id.to_owned()))) {
            return Some(r.clone());
        }
        self.objects.get(object)?.records.get(id).cloned()
    }

    /// The live record (other than `except`) holding External Id key `key`, in `tx`'s view.
    pub(super) fn live_owner(
        &self,
        tx: Option<&Tx>,
        object: &str,
        field: &str,
        key: &str,
        except: Option<&str>,
    ) -> Option<String> {
        if let Some(tx) = tx {
            for ((obj, id), r) in &tx.overlay {
                if obj == object
                    && Some(id.as_str()) != except
                    && !r.deleted
                    && r.fields.get(field).and_then(unique_key).as_deref() == Some(key)
                {
                    return Some(id.clone());
                }
            }
        }
        let owner = self.objects.get(object)?.index.get(field)?.get(key)?;
        let shadowed =
            tx.is_some_and(|tx| tx.overlay.contains_key(&(object.to_owned(), owner.clone())));
        (Some(owner.as_str()) != except && !shadowed).then(|| owner.clone())
    }
}

fn with_deleted_flag(rec: Record) -> Map<String, Json> {
    let mut out = rec.fields;
    out.insert("IsDeleted".into(), Json::Bool(rec.deleted));
    out
}
