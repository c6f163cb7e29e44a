//! The CDC encoding of committed changes: identical changes of one transaction (same object,
//! type, values, bitmaps and origin) merged into one event over their record ids; the
//! `ChangeEventHeader` (`transactionKey`, `sequenceNumber` 1.., commit number, timestamp and
//! user, `changeOrigin`, the `changedFields`/`nulledFields`/`diffFields` bitmaps); the body as one raw Avro
//! datum of the object's current schema; and Avro values back to JSON.

use std::collections::HashMap;

use apache_avro::types::Value as Avro;
use serde_json::{Map, Value as Json};

use super::change::{BuiltEvent, Change, ChangeType, CommitContext};
use super::fields::scalar_to_avro;
use super::state::Org;
use crate::salesforce::proto::ProducerEvent;
use crate::sim::bitmap::FieldSet;
use crate::sim::catalog::{self, FieldKind, SchemaVersion};
use crate::sim::error::SimError;

impl Org {
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
                ("diffFields".into(), strings(change.diff.encode())),
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
                    &c.diff,
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
pub(super) fn body_value(
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
