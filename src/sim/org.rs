//! The in-memory org: sObject records, platform event definitions, schema versions, and the
//! translation of committed changes into Avro-encoded CDC events.
//!
//! Contract:
//! * Records carry an 18-character Id, `CreatedDate`, `CreatedById`, `LastModifiedDate`,
//!   `LastModifiedById`, `SystemModstamp` (epoch ms) and `IsDeleted` (soft delete = recycle bin).
//! * Field values are JSON: scalars, compound fields as nested objects, dates and datetimes as
//!   epoch ms (a date/datetime field also accepts Salesforce/ISO text, stored as epoch ms).
//!   Unknown or read-only fields and ill-typed values are rejected with an error naming object
//!   and field.
//! * Every saved record satisfies the object's rules, checked in Salesforce's order: required
//!   fields (Account `Name`, Contact `Name.LastName`), validation rules
//!   ([`Org::add_validation_rule`]), then unique External Id fields (`External_Id__c`: no two live
//!   records share a value, compared case-insensitively; looked up through an index).
//! * Writes are staged into a [`Tx`] ([`Org::stage`]): each operation is checked and applied on
//!   its own, a failed one leaves the transaction as it was, and nothing is visible outside the
//!   transaction until [`Org::finish`] commits it; dropping a `Tx` rolls it back.
//!   [`Org::commit`] is the all-or-nothing shorthand. `finish` returns one [`Change`] per record;
//!   [`Org::build_events`] turns them into change events following the Pub/Sub API body rules:
//!   CREATE/UNDELETE carry all set fields, UPDATE only changed fields (bitmaps in
//!   `changedFields`/`nulledFields`, `LastModifiedDate` always changed), DELETE no fields.
//!   Several operations on one record in one transaction give one change with the committed state
//!   (CREATE + UPDATEs → CREATE; UPDATEs → one UPDATE). Identical changes (same type, same values,
//!   same origin) to several records of one object in one transaction become one event listing
//!   all record Ids.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use apache_avro::types::Value as Avro;
use serde_json::{Map, Value as Json};

use super::bitmap::FieldSet;
use super::catalog::{self, FieldDef, FieldKind, ScalarType, SchemaVersion, Temporal};
use super::error::SimError;
use super::ids::{self, IdGenerator};
use crate::salesforce::proto::ProducerEvent;
use crate::salesforce::sftime;

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

/// The External Id field every bundled object has (unique, case-insensitive).
pub const EXTERNAL_ID_FIELD: &str = "External_Id__c";

/// CDC change types the org emits (the first four symbols of the `ChangeType` enum).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChangeType {
    /// Record created.
    Create,
    /// Record updated.
    Update,
    /// Record moved to the recycle bin.
    Delete,
    /// Record restored from the recycle bin.
    Undelete,
}

impl ChangeType {
    /// Enum symbol.
    pub fn symbol(self) -> &'static str {
        match self {
            Self::Create => "CREATE",
            Self::Update => "UPDATE",
            Self::Delete => "DELETE",
            Self::Undelete => "UNDELETE",
        }
    }

    fn index(self) -> u32 {
        match self {
            Self::Create => 0,
            Self::Update => 1,
            Self::Delete => 2,
            Self::Undelete => 3,
        }
    }
}

/// One requested change.
#[derive(Debug, Clone)]
pub enum Op {
    /// Create a record with a pre-reserved Id.
    Create {
        /// Object API name.
        object: String,
        /// Reserved Id.
        id: String,
        /// Field values.
        fields: Map<String, Json>,
    },
    /// Update fields (null = set to null).
    Update {
        /// Object API name.
        object: String,
        /// Record Id.
        id: String,
        /// Field values.
        fields: Map<String, Json>,
    },
    /// Update the live record whose External Id field `field` equals `value`
    /// (case-insensitively), or create one with that value.
    Upsert {
        /// Object API name.
        object: String,
        /// External Id field.
        field: String,
        /// Its value.
        value: String,
        /// Field values (may repeat `field` with the same value).
        fields: Map<String, Json>,
    },
    /// Soft delete.
    Delete {
        /// Object API name.
        object: String,
        /// Record Id.
        id: String,
    },
    /// Restore from the recycle bin.
    Undelete {
        /// Object API name.
        object: String,
        /// Record Id.
        id: String,
    },
}

impl Op {
    /// The object the operation writes.
    pub fn object(&self) -> &str {
        match self {
            Op::Create { object, .. }
            | Op::Update { object, .. }
            | Op::Upsert { object, .. }
            | Op::Delete { object, .. }
            | Op::Undelete { object, .. } => object,
        }
    }
}

/// The effect of one operation, before encoding.
#[derive(Debug, Clone)]
pub struct Change {
    /// Object API name.
    pub entity: String,
    /// Change type.
    pub change_type: ChangeType,
    /// Record Id.
    pub record_id: String,
    /// Body fields carrying a value (compound fields as partial nested objects).
    pub values: Map<String, Json>,
    /// `changedFields` positions.
    pub changed: FieldSet,
    /// `nulledFields` positions.
    pub nulled: FieldSet,
    /// `changeOrigin` of the call that made the change (`None`: the commit's).
    pub origin: Option<String>,
}

impl Change {
    fn new(entity: &str, change_type: ChangeType, record_id: &str) -> Self {
        Self {
            entity: entity.to_owned(),
            change_type,
            record_id: record_id.to_owned(),
            values: Map::new(),
            changed: FieldSet::default(),
            nulled: FieldSet::default(),
            origin: None,
        }
    }
}

/// Header values shared by all events of one transaction.
#[derive(Debug, Clone)]
pub struct CommitContext {
    /// `changeOrigin` (for changes that carry none of their own).
    pub origin: String,
    /// `commitUser`.
    pub user: String,
    /// `commitTimestamp` (epoch ms).
    pub timestamp: i64,
    /// `commitNumber`.
    pub commit_number: i64,
    /// `transactionKey`.
    pub transaction_key: String,
}

/// A CDC event ready for the bus.
#[derive(Debug, Clone)]
pub struct BuiltEvent {
    /// Entity (object API name).
    pub entity: String,
    /// The event (id, schema id, Avro payload).
    pub event: ProducerEvent,
}

/// What a staged operation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The record's Id (18 characters).
    pub id: String,
    /// True when the operation created the record (create, or an upsert that matched nothing).
    pub created: bool,
}

/// How [`Org::stage`] runs a batch.
#[derive(Debug, Clone, Copy, Default)]
pub struct StageOptions {
    /// Stop at the first failed operation (the later ones are not tried).
    pub stop_on_error: bool,
    /// Apply the REST fault knobs (`lock_rows`) to these writes.
    pub rest_faults: bool,
}

/// Writes staged but not committed: commit with [`Org::finish`], roll back by dropping it.
#[derive(Debug, Default)]
pub struct Tx {
    overlay: HashMap<(String, String), Record>,
    changes: Vec<Change>,
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
struct Record {
    fields: Map<String, Json>,
    deleted: bool,
}

/// A field a saved record must have: a top-level field or a compound's part, and the name
/// Salesforce reports for it.
#[derive(Debug, Clone, Copy)]
struct Required {
    field: &'static str,
    child: Option<&'static str>,
    label: &'static str,
}

#[derive(Debug)]
struct SObject {
    schema: Arc<SchemaVersion>,
    records: HashMap<String, Record>,
    ids: IdGenerator,
    prefix: &'static str,
    required: Vec<Required>,
    external_ids: Vec<String>,
    /// External Id field → lower-cased value → Id of the live record holding it.
    index: HashMap<String, HashMap<String, String>>,
    rules: Vec<ValidationRule>,
}

/// The org's data and metadata.
#[derive(Debug)]
pub struct Org {
    objects: BTreeMap<String, SObject>,
    platform_events: BTreeMap<String, Arc<SchemaVersion>>,
    schemas: HashMap<String, Arc<SchemaVersion>>,
    commit_number: i64,
    /// Record writes still to fail with `UNABLE_TO_LOCK_ROW` (REST writes only).
    lock_faults: usize,
}

/// Lower-cased key of an External Id value.
fn unique_key(v: &Json) -> Option<String> {
    v.as_str().filter(|s| !s.is_empty()).map(str::to_lowercase)
}

impl Org {
    /// The org with the bundled objects (Account, Contact) and platform event (Order_Event__e).
    pub fn new() -> Result<Self, SimError> {
        let mut org = Self {
            objects: BTreeMap::new(),
            platform_events: BTreeMap::new(),
            schemas: HashMap::new(),
            commit_number: 11_657_372_702_432,
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

    /// True for a CDC-enabled object.
    pub fn has_object(&self, object: &str) -> bool {
        self.objects.contains_key(object)
    }

    /// Current change event schema of an object.
    pub fn object_schema(&self, object: &str) -> Option<Arc<SchemaVersion>> {
        self.objects.get(object).map(|o| o.schema.clone())
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

    fn sobject(&self, object: &str) -> Result<&SObject, SimError> {
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
            .filter(|r| !r.deleted)
            .map(|r| with_deleted_flag(r.clone()))
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

    /// Applies `ops` atomically (stopping at the first failure, which is returned); returns one
    /// change per record.
    pub fn commit(&mut self, ops: &[Op], user: &str, now: i64) -> Result<Vec<Change>, SimError> {
        let mut tx = Tx::default();
        let opts = StageOptions {
            stop_on_error: true,
            rest_faults: false,
        };
        for result in self.stage(&mut tx, ops, user, now, opts, None) {
            result?;
        }
        Ok(self.finish(tx))
    }

    /// Stages `ops` into `tx`, each on its own: a failed operation changes nothing and the
    /// others go on (unless `opts.stop_on_error`). One result per operation tried, in order.
    pub fn stage(
        &mut self,
        tx: &mut Tx,
        ops: &[Op],
        user: &str,
        now: i64,
        opts: StageOptions,
        origin: Option<&str>,
    ) -> Vec<Result<Applied, SimError>> {
        let mut out = Vec::with_capacity(ops.len());
        for op in ops {
            let result = self.stage_one(tx, op, user, now, opts.rest_faults, origin);
            let failed = result.is_err();
            out.push(result);
            if failed && opts.stop_on_error {
                break;
            }
        }
        out
    }

    /// Commits a transaction: writes its records back (maintaining the External Id index) and
    /// returns its changes, one per record.
    pub fn finish(&mut self, tx: Tx) -> Vec<Change> {
        let changes = self.coalesce(tx.changes, &tx.overlay);
        for ((object, id), rec) in tx.overlay {
            let Some(o) = self.objects.get_mut(&object) else {
                continue;
            };
            let old = o.records.insert(id.clone(), rec);
            let new = o.records.get(&id);
            for field in &o.external_ids {
                let Some(index) = o.index.get_mut(field) else {
                    continue;
                };
                let key_of = |r: Option<&Record>| {
                    r.filter(|r| !r.deleted)
                        .and_then(|r| r.fields.get(field))
                        .and_then(unique_key)
                };
                if let Some(k) = key_of(old.as_ref()) {
                    if index.get(&k) == Some(&id) {
                        index.remove(&k);
                    }
                }
                if let Some(k) = key_of(new) {
                    index.insert(k, id.clone());
                }
            }
        }
        changes
    }

    fn current(&self, tx: Option<&Tx>, object: &str, id: &str) -> Option<Record> {
        if let Some(r) = tx.and_then(|tx| tx.overlay.get(&(object.to_owned(), id.to_owned()))) {
            return Some(r.clone());
        }
        self.objects.get(object)?.records.get(id).cloned()
    }

    fn live(&self, tx: &Tx, object: &str, id: &str) -> Result<Record, SimError> {
        match self.current(Some(tx), object, id) {
            Some(r) if !r.deleted => Ok(r),
            Some(_) => Err(SimError::EntityIsDeleted(id.to_owned())),
            None => Err(SimError::RecordNotFound {
                object: object.to_owned(),
                id: id.to_owned(),
            }),
        }
    }

    /// The canonical Id of a record of `object`: a well-formed Id with the object's key prefix.
    fn resolve_id(&self, object: &str, raw: &str) -> Result<String, SimError> {
        let prefix = self.sobject(object)?.prefix;
        ids::normalize(raw)
            .filter(|id| id.starts_with(prefix))
            .ok_or_else(|| SimError::MalformedId {
                object: object.to_owned(),
                id: raw.to_owned(),
            })
    }

    fn take_lock(&mut self, faults: bool, id: &str) -> Result<(), SimError> {
        if faults && self.lock_faults > 0 {
            self.lock_faults -= 1;
            return Err(SimError::UnableToLockRow(id.to_owned()));
        }
        Ok(())
    }

    /// The live record (other than `except`) holding External Id key `key`, in `tx`'s view.
    fn live_owner(
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

    /// The rules a record must satisfy to be saved: required fields and validation rules when
    /// `full`, unique External Ids always.
    fn check_saved(
        &self,
        tx: &Tx,
        object: &str,
        id: &str,
        rec: &Record,
        full: bool,
    ) -> Result<(), SimError> {
        let o = self.sobject(object)?;
        if full {
            let missing: Vec<String> = o
                .required
                .iter()
                .filter(|r| {
                    let v = rec.fields.get(r.field);
                    let v = match r.child {
                        Some(c) => v.and_then(|v| v.get(c)),
                        None => v,
                    };
                    is_blank(v)
                })
                .map(|r| r.label.to_owned())
                .collect();
            if !missing.is_empty() {
                return Err(SimError::RequiredFieldMissing {
                    object: object.to_owned(),
                    fields: missing,
                });
            }
            for rule in &o.rules {
                let v = match rule.field.split_once('.') {
                    Some((t, c)) => rec.fields.get(t).and_then(|v| v.get(c)),
                    None => rec.fields.get(&rule.field),
                };
                let hit = if rule.value.is_null() {
                    is_blank(v)
                } else {
                    v == Some(&rule.value)
                };
                if hit {
                    return Err(SimError::ValidationFailed {
                        object: object.to_owned(),
                        field: rule.field.clone(),
                        message: rule.message.clone(),
                    });
                }
            }
        }
        for field in &o.external_ids {
            let Some(key) = rec.fields.get(field).and_then(unique_key) else {
                continue;
            };
            if let Some(existing) = self.live_owner(Some(tx), object, field, &key, Some(id)) {
                return Err(SimError::DuplicateValue {
                    object: object.to_owned(),
                    field: field.clone(),
                    existing,
                });
            }
        }
        Ok(())
    }

    fn stage_one(
        &mut self,
        tx: &mut Tx,
        op: &Op,
        user: &str,
        now: i64,
        faults: bool,
        origin: Option<&str>,
    ) -> Result<Applied, SimError> {
        let object = op.object();
        let schema = self.sobject(object)?.schema.clone();
        let (id, rec, change, created) = match op {
            Op::Create { id, fields, .. } => {
                let id = self.resolve_id(object, id)?;
                self.take_lock(faults, &id)?;
                if self.current(Some(tx), object, &id).is_some() {
                    return Err(SimError::DuplicateId(id));
                }
                let fields = normalize_fields(&schema, object, fields, FieldCheck::Write)?;
                let (rec, change) = created_record(&schema, object, &id, &fields, user, now);
                self.check_saved(tx, object, &id, &rec, true)?;
                (id, rec, change, true)
            }
            Op::Update { id, fields, .. } => {
                let id = self.resolve_id(object, id)?;
                let old = self.live(tx, object, &id)?;
                self.take_lock(faults, &id)?;
                let fields = normalize_fields(&schema, object, fields, FieldCheck::Write)?;
                let (rec, change) = updated_record(&schema, object, &id, old, &fields, user, now);
                self.check_saved(tx, object, &id, &rec, true)?;
                (id, rec, change, false)
            }
            Op::Upsert {
                field,
                value,
                fields,
                ..
            } => {
                if !self.is_external_id(object, field) {
                    return Err(SimError::NotExternalId {
                        object: object.to_owned(),
                        field: field.clone(),
                    });
                }
                let key = unique_key(&Json::from(value.as_str())).ok_or_else(|| {
                    SimError::InvalidValue {
                        object: object.to_owned(),
                        field: field.clone(),
                        reason: "the External Id value is blank".into(),
                    }
                })?;
                if let Some(given) = fields.get(field).filter(|v| !v.is_null()) {
                    if unique_key(given).as_deref() != Some(key.as_str()) {
                        return Err(SimError::InvalidValue {
                            object: object.to_owned(),
                            field: field.clone(),
                            reason: format!(
                                "the value {given} differs from the External Id {value:?} the record is matched on"
                            ),
                        });
                    }
                }
                let mut fields = normalize_fields(&schema, object, fields, FieldCheck::Write)?;
                match self.live_owner(Some(tx), object, field, &key, None) {
                    Some(id) => {
                        let old = self.live(tx, object, &id)?;
                        self.take_lock(faults, &id)?;
                        let (rec, change) =
                            updated_record(&schema, object, &id, old, &fields, user, now);
                        self.check_saved(tx, object, &id, &rec, true)?;
                        (id, rec, change, false)
                    }
                    None => {
                        let id = self.reserve_id(object)?;
                        self.take_lock(faults, &id)?;
                        fields.insert(field.clone(), Json::from(value.as_str()));
                        let (rec, change) =
                            created_record(&schema, object, &id, &fields, user, now);
                        self.check_saved(tx, object, &id, &rec, true)?;
                        (id, rec, change, true)
                    }
                }
            }
            Op::Delete { id, .. } => {
                let id = self.resolve_id(object, id)?;
                let mut rec = self.live(tx, object, &id)?;
                self.take_lock(faults, &id)?;
                rec.deleted = true;
                rec.fields.insert("SystemModstamp".into(), now.into());
                let change = Change::new(object, ChangeType::Delete, &id);
                (id, rec, change, false)
            }
            Op::Undelete { id, .. } => {
                let id = self.resolve_id(object, id)?;
                let mut rec = match self.current(Some(tx), object, &id) {
                    Some(r) if r.deleted => r,
                    Some(_) => return Err(SimError::NotDeleted(id)),
                    None => {
                        return Err(SimError::RecordNotFound {
                            object: object.to_owned(),
                            id,
                        });
                    }
                };
                self.take_lock(faults, &id)?;
                rec.deleted = false;
                let mut scratch = Change::new(object, ChangeType::Undelete, &id);
                touch(&mut rec.fields, &schema, &mut scratch, user, now);
                self.check_saved(tx, object, &id, &rec, false)?;
                let mut change = Change::new(object, ChangeType::Undelete, &id);
                change.values = body_values(&schema, &rec.fields);
                (id, rec, change, false)
            }
        };
        let mut change = change;
        change.origin = origin.map(str::to_owned);
        tx.overlay.insert((object.to_owned(), id.clone()), rec);
        tx.changes.push(change);
        Ok(Applied { id, created })
    }

    /// Several operations on one record in one transaction yield one change with the committed
    /// state: CREATE/UNDELETE followed by updates stays a CREATE/UNDELETE with the final values;
    /// consecutive updates become one UPDATE with the union of the changed fields.
    fn coalesce(
        &self,
        changes: Vec<Change>,
        overlay: &HashMap<(String, String), Record>,
    ) -> Vec<Change> {
        let mut merged: Vec<Change> = Vec::with_capacity(changes.len());
        let mut dirty = Vec::with_capacity(changes.len());
        let mut latest: HashMap<(String, String), usize> = HashMap::new();
        for c in changes {
            let key = (c.entity.clone(), c.record_id.clone());
            if let Some(&i) = latest.get(&key) {
                let prev = &mut merged[i];
                if c.change_type == ChangeType::Update && prev.change_type != ChangeType::Delete {
                    prev.changed.top.extend(c.changed.top);
                    for (parent, children) in c.changed.nested {
                        prev.changed
                            .nested
                            .entry(parent)
                            .or_default()
                            .extend(children);
                    }
                    dirty[i] = true;
                    continue;
                }
            }
            latest.insert(key, merged.len());
            merged.push(c);
            dirty.push(false);
        }
        for (change, _) in merged.iter_mut().zip(dirty).filter(|(_, d)| *d) {
            let key = (change.entity.clone(), change.record_id.clone());
            let (Some(rec), Some(sobject)) = (overlay.get(&key), self.objects.get(&change.entity))
            else {
                continue;
            };
            let schema = &sobject.schema;
            if change.change_type != ChangeType::Update {
                change.values = body_values(schema, &rec.fields);
                change.changed = FieldSet::default();
                continue;
            }
            change.values.clear();
            change.nulled = FieldSet::default();
            for def in &schema.fields {
                match &def.kind {
                    FieldKind::Scalar(_) if change.changed.top.contains(&def.position) => {
                        match rec.fields.get(&def.name) {
                            Some(v) => {
                                change.values.insert(def.name.clone(), v.clone());
                            }
                            None => {
                                change.nulled.top.insert(def.position);
                            }
                        }
                    }
                    FieldKind::Compound(children) => {
                        let Some(set) = change.changed.nested.get(&def.position) else {
                            continue;
                        };
                        let current = rec.fields.get(&def.name).and_then(Json::as_object);
                        let mut partial = Map::new();
                        for &pos in set {
                            let Some((cname, _)) = children.get(pos) else {
                                continue;
                            };
                            match current.and_then(|o| o.get(cname)) {
                                Some(v) => {
                                    partial.insert(cname.clone(), v.clone());
                                }
                                None => change.nulled.insert_nested(def.position, pos),
                            }
                        }
                        if !partial.is_empty() {
                            change
                                .values
                                .insert(def.name.clone(), Json::Object(partial));
                        }
                    }
                    FieldKind::Scalar(_) => {}
                }
            }
        }
        merged
    }

    /// Encodes committed changes as change events (merging identical changes per object).
    pub fn build_events(
        &self,
        changes: Vec<Change>,
        ctx: &CommitContext,
    ) -> Result<Vec<BuiltEvent>, SimError> {
        let mut out = Vec::with_capacity(changes.len());
        for (seq, (change, record_ids)) in group_identical(changes).into_iter().enumerate() {
            let schema = self.sobject(&change.entity)?.schema.clone();
            let header = Avro::Record(vec![
                ("entityName".into(), Avro::String(change.entity.clone())),
                (
                    "recordIds".into(),
                    Avro::Array(record_ids.into_iter().map(Avro::String).collect()),
                ),
                (
                    "changeType".into(),
                    Avro::Enum(
                        change.change_type.index(),
                        change.change_type.symbol().into(),
                    ),
                ),
                (
                    "changeOrigin".into(),
                    Avro::String(change.origin.clone().unwrap_or_else(|| ctx.origin.clone())),
                ),
                (
                    "transactionKey".into(),
                    Avro::String(ctx.transaction_key.clone()),
                ),
                ("sequenceNumber".into(), Avro::Int(seq as i32 + 1)),
                ("commitTimestamp".into(), Avro::Long(ctx.timestamp)),
                ("commitNumber".into(), Avro::Long(ctx.commit_number)),
                ("commitUser".into(), Avro::String(ctx.user.clone())),
                ("nulledFields".into(), strings(change.nulled.encode())),
                ("diffFields".into(), Avro::Array(Vec::new())),
                ("changedFields".into(), strings(change.changed.encode())),
            ]);
            let payload = encode_body(&schema, Some(header), &change.values)?;
            out.push(BuiltEvent {
                entity: change.entity,
                event: ProducerEvent {
                    id: uuid::Uuid::new_v4().to_string(),
                    schema_id: schema.id.clone(),
                    payload: payload.into(),
                    headers: Vec::new(),
                },
            });
        }
        Ok(out)
    }
}

/// Identical changes of one transaction (same object, type, values, bitmaps and origin) merged
/// into one event over their record ids, in first-occurrence order.
fn group_identical(changes: Vec<Change>) -> Vec<(Change, Vec<String>)> {
    // Each change's group, numbered in order of first occurrence; the keys borrow the changes.
    // (One hash lookup per change: a transaction may carry 100,000 changes.)
    let group_of: Vec<usize> = {
        type Key<'c> = (
            &'c str,
            ChangeType,
            String,
            &'c FieldSet,
            &'c FieldSet,
            Option<&'c str>,
        );
        let mut groups: HashMap<Key<'_>, usize> = HashMap::new();
        changes
            .iter()
            .map(|c| {
                let values = serde_json::to_string(&c.values).expect("a JSON map serializes");
                let key = (
                    c.entity.as_str(),
                    c.change_type,
                    values,
                    &c.changed,
                    &c.nulled,
                    c.origin.as_deref(),
                );
                let next = groups.len();
                *groups.entry(key).or_insert(next)
            })
            .collect()
    };
    let mut merged: Vec<(Change, Vec<String>)> = Vec::new();
    for (c, group) in changes.into_iter().zip(group_of) {
        match merged.get_mut(group) {
            Some((_, record_ids)) => record_ids.push(c.record_id),
            None => {
                let id = c.record_id.clone();
                merged.push((c, vec![id]));
            }
        }
    }
    merged
}

fn strings(v: Vec<String>) -> Avro {
    Avro::Array(v.into_iter().map(Avro::String).collect())
}

/// Updates `LastModifiedDate`/`LastModifiedById`/`SystemModstamp`, recording them as changed.
fn touch(
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
fn body_values(schema: &SchemaVersion, rec: &Map<String, Json>) -> Map<String, Json> {
    // In the record's (sorted) order, which the map is built from without sorting.
    rec.iter()
        .filter(|(name, _)| schema.field(name).is_some())
        .map(|(name, v)| (name.clone(), v.clone()))
        .collect()
}

/// True for a missing, null or blank value (as Salesforce treats a required field).
fn is_blank(v: Option<&Json>) -> bool {
    match v {
        None | Some(Json::Null) => true,
        Some(Json::String(s)) => s.trim().is_empty(),
        Some(_) => false,
    }
}

fn with_deleted_flag(rec: Record) -> Map<String, Json> {
    let mut out = rec.fields;
    out.insert("IsDeleted".into(), Json::Bool(rec.deleted));
    out
}

/// A new record with its system fields, and its CREATE change.
fn created_record(
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
fn updated_record(
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
/// becomes epoch ms.
pub fn normalize_fields(
    schema: &SchemaVersion,
    object: &str,
    fields: &Map<String, Json>,
    check: FieldCheck,
) -> Result<Map<String, Json>, SimError> {
    let mut out = Map::new();
    for (name, value) in fields {
        if check != FieldCheck::Event && SYSTEM_FIELDS.contains(&name.as_str()) {
            if check == FieldCheck::Write {
                return Err(SimError::ReadOnlyField {
                    object: object.to_owned(),
                    field: name.clone(),
                });
            }
            out.insert(name.clone(), value.clone());
            continue;
        }
        let def = schema.field(name).ok_or_else(|| SimError::UnknownField {
            object: object.to_owned(),
            field: name.clone(),
        })?;
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
                    (Some(Temporal::DateTime), Json::String(s)) => {
                        Json::from(sftime::parse_datetime(s).map_err(bad)?)
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

/// Checks names and types of requested field values (`reject_system`: system fields are
/// read-only).
pub fn validate_against(
    schema: &SchemaVersion,
    object: &str,
    fields: &Map<String, Json>,
    reject_system: bool,
) -> Result<(), SimError> {
    let check = if reject_system {
        FieldCheck::Write
    } else {
        FieldCheck::Event
    };
    normalize_fields(schema, object, fields, check).map(drop)
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

/// Encodes a body (and the CDC header, for change events) as one raw Avro datum. Fields absent
/// from `values` are null; a non-nullable field must be present.
pub fn encode_body(
    schema: &SchemaVersion,
    header: Option<Avro>,
    values: &Map<String, Json>,
) -> Result<Vec<u8>, SimError> {
    let record = body_value(schema, header, values)?;
    let mut out = Vec::with_capacity(256);
    schema
        .writer
        .write(&record, &mut out)
        .map_err(SimError::Encode)?;
    Ok(out)
}

/// The datum [`encode_body`] encodes.
fn body_value(
    schema: &SchemaVersion,
    header: Option<Avro>,
    values: &Map<String, Json>,
) -> Result<Avro, SimError> {
    let mut record = Vec::with_capacity(schema.fields.len() + 1);
    if let Some(h) = header {
        record.push((catalog::HEADER_FIELD.to_owned(), h));
    }
    for def in &schema.fields {
        let value = values.get(&def.name).filter(|v| !v.is_null());
        let inner = match (value, &def.kind) {
            (None, _) => None,
            (Some(v), FieldKind::Scalar(t)) => {
                Some(scalar_to_avro(*t, v).ok_or_else(|| SimError::InvalidValue {
                    object: schema.name.clone(),
                    field: def.name.clone(),
                    reason: format!("expected {}, got {v}", t.avro_name()),
                })?)
            }
            (Some(v), FieldKind::Compound(children)) => {
                let obj = v.as_object();
                let nested = children
                    .iter()
                    .map(|(cname, t)| {
                        let cv = obj
                            .and_then(|o| o.get(cname))
                            .and_then(|cv| scalar_to_avro(*t, cv));
                        let cv = match cv {
                            Some(cv) => Avro::Union(1, Box::new(cv)),
                            None => Avro::Union(0, Box::new(Avro::Null)),
                        };
                        (cname.clone(), cv)
                    })
                    .collect();
                Some(Avro::Record(nested))
            }
        };
        let avro = match (inner, def.nullable) {
            (Some(v), true) => Avro::Union(1, Box::new(v)),
            (Some(v), false) => v,
            (None, true) => Avro::Union(0, Box::new(Avro::Null)),
            (None, false) => {
                return Err(SimError::InvalidValue {
                    object: schema.name.clone(),
                    field: def.name.clone(),
                    reason: "required field is missing".into(),
                });
            }
        };
        record.push((def.name.clone(), avro));
    }
    Ok(Avro::Record(record))
}

/// Avro value → JSON (unions flattened, bytes as base64).
pub fn avro_to_json(v: &Avro) -> Json {
    use base64::Engine as _;
    match v {
        Avro::Null => Json::Null,
        Avro::Boolean(b) => Json::Bool(*b),
        Avro::Int(i) => Json::from(*i),
        Avro::Long(i) => Json::from(*i),
        Avro::Float(f) => {
            serde_json::Number::from_f64(f64::from(*f)).map_or(Json::Null, Json::Number)
        }
        Avro::Double(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
        Avro::String(s) | Avro::Enum(_, s) => Json::String(s.clone()),
        Avro::Bytes(b) | Avro::Fixed(_, b) => {
            Json::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        Avro::Union(_, inner) => avro_to_json(inner),
        Avro::Array(items) => Json::Array(items.iter().map(avro_to_json).collect()),
        Avro::Map(m) => Json::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), avro_to_json(v)))
                .collect(),
        ),
        Avro::Record(fields) => Json::Object(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), avro_to_json(v)))
                .collect(),
        ),
        other => Json::String(format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const USER: &str = "0055S0000000SIMAAA";

    fn obj(v: Json) -> Map<String, Json> {
        match v {
            Json::Object(m) => m,
            _ => Map::new(),
        }
    }

    fn ctx() -> CommitContext {
        CommitContext {
            origin: "com/salesforce/api/rest/62.0;client=test".into(),
            user: USER.into(),
            timestamp: 1_696_444_513_000,
            commit_number: 42,
            transaction_key: "tx-1".into(),
        }
    }

    fn decode(org: &Org, e: &BuiltEvent) -> Json {
        let schema = org.schema_by_id(&e.event.schema_id).expect("schema");
        let mut r = &e.event.payload[..];
        let v = apache_avro::from_avro_datum(schema.schema(), &mut r, None).expect("decode");
        assert!(r.is_empty());
        avro_to_json(&v)
    }

    fn commit(org: &mut Org, ops: &[Op]) -> Vec<Json> {
        let changes = org.commit(ops, USER, 1_696_444_513_000).expect("commit");
        let events = org.build_events(changes, &ctx()).expect("events");
        events.iter().map(|e| decode(org, e)).collect()
    }

    fn create_account(org: &mut Org, fields: Json) -> (String, Json) {
        let id = org.reserve_id("Account").expect("id");
        let ev = commit(
            org,
            &[Op::Create {
                object: "Account".into(),
                id: id.clone(),
                fields: obj(fields),
            }],
        );
        (id, ev.into_iter().next().expect("event"))
    }

    fn update(object: &str, id: &str, fields: Json) -> Op {
        Op::Update {
            object: object.into(),
            id: id.into(),
            fields: obj(fields),
        }
    }

    #[test]
    fn create_carries_all_set_fields_and_header() {
        let mut org = Org::new().expect("org");
        let (id, ev) = create_account(
            &mut org,
            json!({"Name": "Acme", "BillingAddress": {"City": "Paris"}, "NumberOfEmployees": 12}),
        );
        let h = &ev["ChangeEventHeader"];
        assert_eq!(h["entityName"], "Account");
        assert_eq!(h["recordIds"], json!([id]));
        assert_eq!(h["changeType"], "CREATE");
        assert_eq!(
            h["changeOrigin"],
            "com/salesforce/api/rest/62.0;client=test"
        );
        assert_eq!(h["sequenceNumber"], 1);
        assert_eq!(h["commitUser"], USER);
        assert_eq!(h["changedFields"], json!([]));
        assert_eq!(ev["Name"], "Acme");
        assert_eq!(ev["BillingAddress"]["City"], "Paris");
        assert_eq!(ev["BillingAddress"]["Street"], Json::Null);
        assert_eq!(ev["ShippingAddress"], Json::Null);
        assert_eq!(ev["OwnerId"], USER);
        assert_eq!(ev["CreatedDate"], 1_696_444_513_000_i64);
        let rec = org.record("Account", &id).expect("record");
        assert_eq!(rec["SystemModstamp"], 1_696_444_513_000_i64);
        assert_eq!(rec["IsDeleted"], false);
    }

    #[test]
    fn events_are_encoded_as_apache_avro_encodes_them() {
        let mut org = Org::new().expect("org");
        let a = create_account(&mut org, json!({"Name": "Acme"})).0;
        let b = create_account(&mut org, json!({"Name": "Acme"})).0;
        let changes = org
            .commit(
                &[
                    update("Account", &a, json!({"Phone": "1", "BillingAddress": {"City": "Paris", "Street": null}, "ShippingAddress": {"Country": "FR"}, "AnnualRevenue": 2.5, "NumberOfEmployees": 7})),
                    update("Account", &b, json!({"Phone": "1", "BillingAddress": {"City": "Paris", "Street": null}, "ShippingAddress": {"Country": "FR"}, "AnnualRevenue": 2.5, "NumberOfEmployees": 7})),
                ],
                USER,
                1_696_444_514_000,
            )
            .expect("commit");
        let events = org.build_events(changes, &ctx()).expect("events");
        assert_eq!(
            events.len(),
            1,
            "the identical changes merge into one event"
        );
        let event = &events[0];
        let schema = org.schema_by_id(&event.event.schema_id).expect("schema");
        let decoded =
            apache_avro::from_avro_datum(schema.schema(), &mut &event.event.payload[..], None)
                .expect("decode");
        assert_eq!(
            event.event.payload,
            apache_avro::to_avro_datum(schema.schema(), decoded.clone()).expect("encode"),
            "{decoded:?}"
        );
        let Avro::Record(fields) = decoded else {
            panic!("a record")
        };
        let header = fields.into_iter().next().map(|(_, h)| h);
        let values =
            obj(json!({"Name": "x", "ShippingAddress": {"City": "Lyon"}, "LastModifiedDate": 5}));
        let ours = encode_body(&schema, header.clone(), &values).expect("ours");
        let theirs = apache_avro::to_avro_datum(
            schema.schema(),
            body_value(&schema, header, &values).expect("value"),
        )
        .expect("theirs");
        assert_eq!(ours, theirs);
        let err = encode_body(&schema, Some(Avro::Null), &values).unwrap_err();
        assert!(
            err.to_string()
                .contains("ChangeEventHeader: cannot write Null as record ChangeEventHeader"),
            "{err}"
        );
    }

    #[test]
    fn update_matches_the_documented_sample_bitmaps() {
        let mut org = Org::new().expect("org");
        let (id, _) = create_account(&mut org, json!({"Name": "Acme", "Phone": "1"}));
        let ev = commit(
            &mut org,
            &[update(
                "Account",
                &id,
                json!({"BillingAddress": {"City": "San Francisco", "State": "CA"}, "Name": "Acme"}),
            )],
        );
        let h = &ev[0]["ChangeEventHeader"];
        assert_eq!(h["changeType"], "UPDATE");
        assert_eq!(h["changedFields"], json!(["0x400000", "4-0x06"]));
        assert_eq!(h["nulledFields"], json!([]));
        assert_eq!(ev[0]["Name"], Json::Null, "unchanged fields are null");
        assert_eq!(ev[0]["BillingAddress"]["City"], "San Francisco");
        assert_eq!(ev[0]["LastModifiedDate"], 1_696_444_513_000_i64);

        let ev = commit(&mut org, &[update("Account", &id, json!({"Phone": null}))]);
        let h = &ev[0]["ChangeEventHeader"];
        // Phone = position 6, LastModifiedDate = 22; nulled fields are also changed fields.
        assert_eq!(h["changedFields"], json!(["0x400040"]));
        assert_eq!(h["nulledFields"], json!(["0x40"]));
        assert_eq!(ev[0]["Phone"], Json::Null);
        assert!(
            org.record("Account", &id)
                .expect("rec")
                .get("Phone")
                .is_none()
        );

        let ev = commit(
            &mut org,
            &[update(
                "Account",
                &id,
                json!({"BillingAddress": {"City": null}}),
            )],
        );
        let h = &ev[0]["ChangeEventHeader"];
        assert_eq!(h["changedFields"], json!(["0x400000", "4-0x02"]));
        assert_eq!(h["nulledFields"], json!(["0x00", "4-0x02"]));
    }

    #[test]
    fn identical_changes_in_one_transaction_are_merged() {
        let mut org = Org::new().expect("org");
        let (a, _) = create_account(&mut org, json!({"Name": "A"}));
        let (b, _) = create_account(&mut org, json!({"Name": "B"}));
        let (c, _) = create_account(&mut org, json!({"Name": "C"}));
        let ev = commit(
            &mut org,
            &[
                update("Account", &a, json!({"Rating": "Hot"})),
                update("Account", &b, json!({"Rating": "Cold"})),
                update("Account", &c, json!({"Rating": "Hot"})),
            ],
        );
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0]["ChangeEventHeader"]["recordIds"], json!([a, c]));
        assert_eq!(ev[0]["ChangeEventHeader"]["sequenceNumber"], 1);
        assert_eq!(ev[1]["ChangeEventHeader"]["recordIds"], json!([b]));
        assert_eq!(ev[1]["ChangeEventHeader"]["sequenceNumber"], 2);
        assert_eq!(ev[1]["ChangeEventHeader"]["transactionKey"], "tx-1");
    }

    #[test]
    fn delete_has_no_fields_and_undelete_has_all() {
        let mut org = Org::new().expect("org");
        let (id, _) = create_account(&mut org, json!({"Name": "Acme"}));
        let ev = commit(
            &mut org,
            &[Op::Delete {
                object: "Account".into(),
                id: id.clone(),
            }],
        );
        assert_eq!(ev[0]["ChangeEventHeader"]["changeType"], "DELETE");
        assert_eq!(ev[0]["Name"], Json::Null);
        assert_eq!(ev[0]["CreatedDate"], Json::Null);
        assert_eq!(org.record("Account", &id).expect("rec")["IsDeleted"], true);
        let err = org.commit(&[update("Account", &id, json!({"Name": "x"}))], USER, 1);
        assert!(matches!(err, Err(SimError::EntityIsDeleted(_))));
        let ev = commit(
            &mut org,
            &[Op::Undelete {
                object: "Account".into(),
                id: id.clone(),
            }],
        );
        assert_eq!(ev[0]["ChangeEventHeader"]["changeType"], "UNDELETE");
        assert_eq!(ev[0]["Name"], "Acme");
    }

    #[test]
    fn several_changes_to_one_record_in_a_transaction_become_one_event() {
        let mut org = Org::new().expect("org");
        let id = org.reserve_id("Account").expect("id");
        let ev = commit(
            &mut org,
            &[
                Op::Create {
                    object: "Account".into(),
                    id: id.clone(),
                    fields: obj(json!({"Name": "Draft"})),
                },
                update("Account", &id, json!({"Name": "Final", "Phone": "1"})),
            ],
        );
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0]["ChangeEventHeader"]["changeType"], "CREATE");
        assert_eq!(ev[0]["Name"], "Final");
        assert_eq!(ev[0]["Phone"], "1");

        let ev = commit(
            &mut org,
            &[
                update("Account", &id, json!({"Phone": null, "Rating": "Hot"})),
                update(
                    "Account",
                    &id,
                    json!({"Phone": "2", "BillingAddress": {"City": "Oslo"}}),
                ),
            ],
        );
        assert_eq!(ev.len(), 1);
        let h = &ev[0]["ChangeEventHeader"];
        // Phone (6), Rating (17), LastModifiedDate (22); BillingAddress.City (4-0x02).
        assert_eq!(h["changedFields"], json!(["0x420040", "4-0x02"]));
        assert_eq!(h["nulledFields"], json!([]));
        assert_eq!(ev[0]["Phone"], "2");
        assert_eq!(ev[0]["Rating"], "Hot");
        assert_eq!(ev[0]["BillingAddress"]["City"], "Oslo");
    }

    #[test]
    fn failed_transaction_changes_nothing() {
        let mut org = Org::new().expect("org");
        let (id, _) = create_account(&mut org, json!({"Name": "Acme"}));
        let err = org.commit(
            &[
                update("Account", &id, json!({"Name": "Changed"})),
                update("Account", "001000000000000AAA", json!({"Name": "x"})),
            ],
            USER,
            2,
        );
        assert!(matches!(err, Err(SimError::RecordNotFound { .. })));
        assert_eq!(org.record("Account", &id).expect("rec")["Name"], "Acme");
    }

    #[test]
    fn partial_staging_skips_failures_and_commits_the_rest_as_one_transaction() {
        let mut org = Org::new().expect("org");
        let (a, _) = create_account(&mut org, json!({"Name": "A", "External_Id__c": "EXT-A"}));
        let b = org.reserve_id("Account").expect("id");
        let c = org.reserve_id("Account").expect("id");
        let ops = [
            Op::Create {
                object: "Account".into(),
                id: b.clone(),
                fields: obj(json!({"Name": "B", "External_Id__c": "ext-a"})),
            },
            Op::Create {
                object: "Account".into(),
                id: c.clone(),
                fields: obj(json!({"Name": "C", "External_Id__c": "EXT-C"})),
            },
            update("Account", &a, json!({"Name": null})),
            update("Account", "003000000000000AAA", json!({"Name": "x"})),
            Op::Upsert {
                object: "Account".into(),
                field: EXTERNAL_ID_FIELD.into(),
                value: "ext-c".into(),
                fields: obj(json!({"Rating": "Hot"})),
            },
        ];
        let mut tx = Tx::default();
        let results = org.stage(&mut tx, &ops, USER, 7, StageOptions::default(), None);
        assert!(
            matches!(&results[0], Err(SimError::DuplicateValue { existing, .. }) if *existing == a)
        );
        assert_eq!(
            results[1].as_ref().ok(),
            Some(&Applied {
                id: c.clone(),
                created: true
            })
        );
        assert!(
            matches!(&results[2], Err(SimError::RequiredFieldMissing { fields, .. }) if fields == &["Name"])
        );
        assert!(matches!(&results[3], Err(SimError::MalformedId { .. })));
        // The upsert sees the staged record C.
        assert_eq!(
            results[4].as_ref().ok(),
            Some(&Applied {
                id: c.clone(),
                created: false
            })
        );
        assert!(
            org.record("Account", &c).is_none(),
            "not visible before commit"
        );
        assert!(org.view(Some(&tx), "Account", &c).is_some());
        let changes = org.finish(tx);
        assert_eq!(changes.len(), 1, "create + upsert of C coalesce");
        assert_eq!(changes[0].change_type, ChangeType::Create);
        assert_eq!(changes[0].values["Rating"], "Hot");
        assert_eq!(
            org.find_by_external_id(None, "Account", EXTERNAL_ID_FIELD, "Ext-C"),
            Some(c.clone())
        );
        assert!(org.record("Account", &b).is_none());

        // The index follows value changes and deletes.
        org.commit(
            &[update("Account", &a, json!({"External_Id__c": "EXT-Z"}))],
            USER,
            8,
        )
        .expect("rename");
        assert_eq!(
            org.find_by_external_id(None, "Account", EXTERNAL_ID_FIELD, "ext-a"),
            None
        );
        assert_eq!(
            org.find_by_external_id(None, "Account", EXTERNAL_ID_FIELD, "ext-z"),
            Some(a.clone())
        );
        org.commit(
            &[Op::Delete {
                object: "Account".into(),
                id: c.clone(),
            }],
            USER,
            9,
        )
        .expect("delete");
        assert_eq!(
            org.find_by_external_id(None, "Account", EXTERNAL_ID_FIELD, "ext-c"),
            None
        );
        assert_eq!(org.live_records(None, "Account").len(), 1);
        // Undeleting C would be fine; a live record taking its value first blocks it.
        org.commit(
            &[update("Account", &a, json!({"External_Id__c": "EXT-C"}))],
            USER,
            10,
        )
        .expect("take the value");
        let err = org.commit(
            &[Op::Undelete {
                object: "Account".into(),
                id: c,
            }],
            USER,
            11,
        );
        assert!(matches!(err, Err(SimError::DuplicateValue { .. })));
    }

    #[test]
    fn lock_faults_hit_rest_writes_only_and_validation_rules_all_writes() {
        let mut org = Org::new().expect("org");
        let (a, _) = create_account(&mut org, json!({"Name": "A"}));
        org.set_lock_faults(1);
        org.commit(&[update("Account", &a, json!({"Phone": "1"}))], USER, 2)
            .expect("Rust-API writes take no lock faults");
        let rest = StageOptions {
            stop_on_error: false,
            rest_faults: true,
        };
        let mut tx = Tx::default();
        let ops = [
            update("Account", &a, json!({"Phone": "2"})),
            update("Account", &a, json!({"Phone": "3"})),
        ];
        let results = org.stage(&mut tx, &ops, USER, 3, rest, None);
        assert!(matches!(&results[0], Err(SimError::UnableToLockRow(id)) if *id == a));
        assert!(results[1].is_ok());
        assert_eq!(org.lock_faults(), 0);
        org.add_validation_rule(
            "Account",
            ValidationRule {
                field: "BillingAddress.City".into(),
                value: json!("Nowhere"),
                message: "No such city".into(),
            },
        )
        .expect("rule");
        let err = org.commit(
            &[update(
                "Account",
                &a,
                json!({"BillingAddress": {"City": "Nowhere"}}),
            )],
            USER,
            4,
        );
        assert!(
            matches!(err, Err(SimError::ValidationFailed { field, .. }) if field == "BillingAddress.City")
        );
        assert!(
            org.add_validation_rule(
                "Account",
                ValidationRule {
                    field: "Nope__c".into(),
                    value: Json::Null,
                    message: String::new(),
                },
            )
            .is_err()
        );
    }

    #[test]
    fn dates_and_datetimes_accept_text() {
        let org = Org::new().expect("org");
        let schema = org.object_schema("Contact").expect("schema");
        let fields = normalize_fields(
            &schema,
            "Contact",
            &obj(json!({"Birthdate": "1990-05-17", "Email": "a@b.c"})),
            FieldCheck::Write,
        )
        .expect("normalize");
        assert_eq!(fields["Birthdate"], 642_902_400_000_i64);
        assert!(matches!(
            normalize_fields(
                &schema,
                "Contact",
                &obj(json!({"Birthdate": "1990-05-17T10:00:00Z"})),
                FieldCheck::Write,
            ),
            Err(SimError::InvalidValue { .. })
        ));
    }

    #[test]
    fn bad_fields_are_named() {
        let org = Org::new().expect("org");
        let err = org
            .validate_fields("Account", &obj(json!({"Nmae": "x"})))
            .expect_err("unknown");
        assert_eq!(err.to_string(), "no such field Nmae on Account");
        let err = org
            .validate_fields("Account", &obj(json!({"BillingAddress": {"Town": "x"}})))
            .expect_err("nested");
        assert_eq!(
            err.to_string(),
            "no such field BillingAddress.Town on Account"
        );
        assert!(matches!(
            org.validate_fields("Account", &obj(json!({"NumberOfEmployees": "many"}))),
            Err(SimError::InvalidValue { .. })
        ));
        assert!(matches!(
            org.validate_fields("Account", &obj(json!({"CreatedDate": 1}))),
            Err(SimError::ReadOnlyField { .. })
        ));
        assert!(matches!(
            org.validate_fields("Lead", &Map::new()),
            Err(SimError::UnknownObject(_))
        ));
    }

    #[test]
    fn added_field_gets_a_new_schema_and_old_events_keep_theirs() {
        let mut org = Org::new().expect("org");
        let v1 = org.object_schema("Account").expect("v1").id.clone();
        let (id, _) = create_account(&mut org, json!({"Name": "Acme"}));
        let v2 = org
            .add_field("Account", "Loyalty__c", &json!("string"))
            .expect("add");
        assert_ne!(v1, v2);
        assert!(org.schema_by_id(&v1).is_some());
        let changes = org
            .commit(
                &[update("Account", &id, json!({"Loyalty__c": "Gold"}))],
                USER,
                5,
            )
            .expect("commit");
        let events = org.build_events(changes, &ctx()).expect("events");
        assert_eq!(events[0].event.schema_id, v2);
        let ev = decode(&org, &events[0]);
        assert_eq!(ev["Loyalty__c"], "Gold");
        // Loyalty__c = position 36 (after External_Id__c), LastModifiedDate = 22.
        assert_eq!(
            ev["ChangeEventHeader"]["changedFields"],
            json!(["0x1000400000"])
        );
    }
}
