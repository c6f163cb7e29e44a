//! The in-memory org: sObject records, platform event definitions, schema versions, and the
//! translation of committed changes into Avro-encoded CDC events.
//!
//! Contract:
//! * Records carry an 18-character Id, `CreatedDate`, `CreatedById`, `LastModifiedDate`,
//!   `LastModifiedById`, `SystemModstamp` (epoch ms) and `IsDeleted` (soft delete = recycle bin).
//! * Field values are JSON: scalars, compound fields as nested objects, dates as epoch ms. Unknown
//!   or read-only fields and ill-typed values are rejected with an error naming object and field.
//! * [`Org::commit`] applies a transaction atomically (all or nothing) and returns one
//!   [`Change`] per operation; [`Org::build_events`] turns them into change events following the
//!   Pub/Sub API body rules: CREATE/UNDELETE carry all set fields, UPDATE only changed fields
//!   (bitmaps in `changedFields`/`nulledFields`, `LastModifiedDate` always changed), DELETE no
//!   fields. Several operations on one record in one transaction give one change with the
//!   committed state (CREATE + UPDATEs → CREATE; UPDATEs → one UPDATE). Identical changes (same
//!   type, same values) to several records of one object in one transaction become one event
//!   listing all record Ids.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use apache_avro::types::Value as Avro;
use serde_json::{Map, Value as Json};

use super::SimError;
use super::bitmap::FieldSet;
use super::catalog::{self, FieldDef, FieldKind, ScalarType, SchemaVersion};
use super::ids::{self, IdGenerator};
use crate::proto::ProducerEvent;

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
}

/// Header values shared by all events of one transaction.
#[derive(Debug, Clone)]
pub struct CommitContext {
    /// `changeOrigin`.
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

#[derive(Debug, Clone)]
struct Record {
    fields: Map<String, Json>,
    deleted: bool,
}

#[derive(Debug)]
struct SObject {
    schema: Arc<SchemaVersion>,
    records: HashMap<String, Record>,
    ids: IdGenerator,
}

/// The org's data and metadata.
#[derive(Debug)]
pub struct Org {
    objects: BTreeMap<String, SObject>,
    platform_events: BTreeMap<String, Arc<SchemaVersion>>,
    schemas: HashMap<String, Arc<SchemaVersion>>,
    commit_number: i64,
}

impl Org {
    /// The org with the bundled objects (Account, Contact) and platform event (Order_Event__e).
    pub fn new() -> Result<Self, SimError> {
        let mut org = Self {
            objects: BTreeMap::new(),
            platform_events: BTreeMap::new(),
            schemas: HashMap::new(),
            commit_number: 11_657_372_702_432,
        };
        for (name, prefix, json) in [
            ("Account", "001", catalog::ACCOUNT_CHANGE_EVENT),
            ("Contact", "003", catalog::CONTACT_CHANGE_EVENT),
        ] {
            let schema = SchemaVersion::parse(json)?;
            org.schemas.insert(schema.id.clone(), schema.clone());
            org.objects.insert(
                name.to_owned(),
                SObject {
                    schema,
                    records: HashMap::new(),
                    ids: IdGenerator::new(prefix),
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

    /// Checks field names and value types against the object's current schema.
    pub fn validate_fields(
        &self,
        object: &str,
        fields: &Map<String, Json>,
    ) -> Result<(), SimError> {
        let schema = &self.sobject(object)?.schema;
        validate_against(schema, object, fields, true)
    }

    /// A record's fields (with `Id`, system fields and `IsDeleted`).
    pub fn record(&self, object: &str, id: &str) -> Option<Map<String, Json>> {
        let id = ids::normalize(id)?;
        let rec = self.objects.get(object)?.records.get(&id)?;
        let mut out = rec.fields.clone();
        out.insert("IsDeleted".into(), Json::Bool(rec.deleted));
        Some(out)
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

    /// Applies `ops` atomically; returns one change per op.
    pub fn commit(&mut self, ops: &[Op], user: &str, now: i64) -> Result<Vec<Change>, SimError> {
        // Work on copies of the touched records; write back only if every op succeeds.
        let mut overlay: HashMap<(String, String), Option<Record>> = HashMap::new();
        let mut changes = Vec::with_capacity(ops.len());
        for op in ops {
            let (object, raw_id) = match op {
                Op::Create { object, id, .. }
                | Op::Update { object, id, .. }
                | Op::Delete { object, id }
                | Op::Undelete { object, id } => (object, id),
            };
            let sobject = self.sobject(object)?;
            let schema = sobject.schema.clone();
            let id = ids::normalize(raw_id).ok_or_else(|| SimError::RecordNotFound {
                object: object.clone(),
                id: raw_id.clone(),
            })?;
            let key = (object.clone(), id.clone());
            let slot = overlay
                .entry(key)
                .or_insert_with(|| sobject.records.get(&id).cloned());
            let not_found = || SimError::RecordNotFound {
                object: object.clone(),
                id: id.clone(),
            };
            let change = match op {
                Op::Create { fields, .. } => {
                    if slot.is_some() {
                        return Err(SimError::DuplicateId(id));
                    }
                    validate_against(&schema, object, fields, true)?;
                    let mut rec = Map::new();
                    rec.insert("Id".into(), Json::String(id.clone()));
                    for (k, v) in fields {
                        set_field(&mut rec, &schema, k, v);
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
                    let values = body_values(&schema, &rec);
                    *slot = Some(Record {
                        fields: rec,
                        deleted: false,
                    });
                    Change {
                        entity: object.clone(),
                        change_type: ChangeType::Create,
                        record_id: id,
                        values,
                        changed: FieldSet::default(),
                        nulled: FieldSet::default(),
                    }
                }
                Op::Update { fields, .. } => {
                    validate_against(&schema, object, fields, true)?;
                    let rec = match slot {
                        Some(r) if !r.deleted => r,
                        Some(_) => return Err(SimError::EntityIsDeleted(id)),
                        None => return Err(not_found()),
                    };
                    let mut change = Change {
                        entity: object.clone(),
                        change_type: ChangeType::Update,
                        record_id: id.clone(),
                        values: Map::new(),
                        changed: FieldSet::default(),
                        nulled: FieldSet::default(),
                    };
                    for (k, v) in fields {
                        if let Some(def) = schema.field(k) {
                            diff_field(&mut change, def, rec.fields.get(k), v);
                        }
                        set_field(&mut rec.fields, &schema, k, v);
                    }
                    touch(&mut rec.fields, &schema, &mut change, user, now);
                    change
                }
                Op::Delete { .. } => {
                    let rec = match slot {
                        Some(r) if !r.deleted => r,
                        Some(_) => return Err(SimError::EntityIsDeleted(id)),
                        None => return Err(not_found()),
                    };
                    rec.deleted = true;
                    rec.fields.insert("SystemModstamp".into(), now.into());
                    Change {
                        entity: object.clone(),
                        change_type: ChangeType::Delete,
                        record_id: id,
                        values: Map::new(),
                        changed: FieldSet::default(),
                        nulled: FieldSet::default(),
                    }
                }
                Op::Undelete { .. } => {
                    let rec = match slot {
                        Some(r) if r.deleted => r,
                        Some(_) => return Err(SimError::NotDeleted(id)),
                        None => return Err(not_found()),
                    };
                    rec.deleted = false;
                    let mut scratch = Change {
                        entity: String::new(),
                        change_type: ChangeType::Undelete,
                        record_id: String::new(),
                        values: Map::new(),
                        changed: FieldSet::default(),
                        nulled: FieldSet::default(),
                    };
                    touch(&mut rec.fields, &schema, &mut scratch, user, now);
                    Change {
                        entity: object.clone(),
                        change_type: ChangeType::Undelete,
                        record_id: id,
                        values: body_values(&schema, &rec.fields),
                        changed: FieldSet::default(),
                        nulled: FieldSet::default(),
                    }
                }
            };
            changes.push(change);
        }
        let changes = self.coalesce(changes, &overlay);
        for ((object, id), rec) in overlay {
            if let (Some(o), Some(rec)) = (self.objects.get_mut(&object), rec) {
                o.records.insert(id, rec);
            }
        }
        Ok(changes)
    }

    /// Several operations on one record in one transaction yield one change with the committed
    /// state: CREATE/UNDELETE followed by updates stays a CREATE/UNDELETE with the final values;
    /// consecutive updates become one UPDATE with the union of the changed fields.
    fn coalesce(
        &self,
        changes: Vec<Change>,
        overlay: &HashMap<(String, String), Option<Record>>,
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
            let (Some(Some(rec)), Some(sobject)) =
                (overlay.get(&key), self.objects.get(&change.entity))
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
        // Group identical changes, keeping first-occurrence order.
        type Key = (String, ChangeType, String, FieldSet, FieldSet);
        let mut order: Vec<Key> = Vec::new();
        let mut groups: HashMap<Key, (Change, Vec<String>)> = HashMap::new();
        for c in changes {
            let key = (
                c.entity.clone(),
                c.change_type,
                Json::Object(c.values.clone()).to_string(),
                c.changed.clone(),
                c.nulled.clone(),
            );
            match groups.get_mut(&key) {
                Some((_, record_ids)) => record_ids.push(c.record_id),
                None => {
                    order.push(key.clone());
                    let rid = c.record_id.clone();
                    groups.insert(key, (c, vec![rid]));
                }
            }
        }
        let mut out = Vec::with_capacity(order.len());
        for (seq, key) in order.into_iter().enumerate() {
            let Some((change, record_ids)) = groups.remove(&key) else {
                continue;
            };
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
                ("changeOrigin".into(), Avro::String(ctx.origin.clone())),
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
                    payload,
                    headers: Vec::new(),
                },
            });
        }
        Ok(out)
    }
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
    schema
        .fields
        .iter()
        .filter_map(|f| rec.get(&f.name).map(|v| (f.name.clone(), v.clone())))
        .collect()
}

/// Checks names and types of requested field values.
pub fn validate_against(
    schema: &SchemaVersion,
    object: &str,
    fields: &Map<String, Json>,
    reject_system: bool,
) -> Result<(), SimError> {
    for (name, value) in fields {
        if reject_system && SYSTEM_FIELDS.contains(&name.as_str()) {
            return Err(SimError::ReadOnlyField {
                object: object.to_owned(),
                field: name.clone(),
            });
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
            continue;
        }
        match &def.kind {
            FieldKind::Scalar(t) => {
                if scalar_to_avro(*t, value).is_none() {
                    return Err(bad(format!("expected {}, got {value}", t.avro_name())));
                }
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
            }
        }
    }
    Ok(())
}

/// JSON scalar → Avro value of the given type; `None` if the JSON value does not fit.
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
    apache_avro::to_avro_datum(&schema.schema, Avro::Record(record))
        .map_err(|e| SimError::Encode(e.to_string()))
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
        let mut r = e.event.payload.as_slice();
        let v = apache_avro::from_avro_datum(&schema.schema, &mut r, None).expect("decode");
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
        // Loyalty__c = position 35, LastModifiedDate = 22.
        assert_eq!(
            ev["ChangeEventHeader"]["changedFields"],
            json!(["0x0800400000"])
        );
    }
}
