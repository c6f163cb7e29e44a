//! Transactions: writes staged into a [`Tx`] ([`Org::stage`]), each operation checked and
//! applied on its own (a failed one leaves the transaction as it was) against the object's rules
//! in Salesforce's order — required fields, validation rules, unique External Ids — and the REST
//! lock faults; [`Org::finish`] commits them (maintaining the External Id index) and returns one
//! [`Change`] per record, several operations on one record coalesced into one change with the
//! committed state. [`Org::commit`] is the all-or-nothing shorthand.

use std::collections::HashMap;

use serde_json::{Map, Value as Json};

use super::change::{Applied, Change, ChangeType, Op, StageOptions};
use super::fields::{FieldCheck, normalize_fields};
use super::record::{body_values, created_record, touch, updated_record};
use super::state::{Org, Record, Tx, unique_key};
use crate::sim::bitmap::FieldSet;
use crate::sim::catalog::FieldKind;
use crate::sim::error::SimError;
use crate::sim::ids;

impl Org {
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
            // The values are rebuilt from the committed record: full values, no diffs (a real
            // org only "sometimes" sends a diff).
            change.diff = FieldSet::default();
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
}

/// True for a missing, null or blank value (as Salesforce treats a required field).
fn is_blank(v: Option<&Json>) -> bool {
    match v {
        None | Some(Json::Null) => true,
        Some(Json::String(s)) => s.trim().is_empty(),
        Some(_) => false,
    }
}
