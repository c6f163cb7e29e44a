//! Full record on update (`source.channels[].full_record: true`): each `UPDATE` record is
//! completed with the record's current values before it is produced.
//!
//! Contract (see `ARCHITECTURE.md`, "Full record on update"):
//! * Which records: the `UPDATE` records (not tombstones) of change events; `CREATE` and
//!   `UNDELETE` carry every field already, `DELETE` has nothing to read, gap events are re-read by
//!   [`crate::source::gap`].
//! * Field list: every body field of the event's writer schema, compound fields (address, name,
//!   geolocation) read through their components and nested back into the event's shape
//!   ([`Columns`], built once per object and schema from the object's describe); a schema field
//!   the describe does not list (not visible to the integration user) is left as the event has it.
//! * Reads ([`Completer::read`]): sObject Collections retrieve (`POST
//!   /composite/sobjects/{Object}`, "Get Records With a Request Body Using sObject Collections",
//!   REST API Developer Guide: up to 2,000 records of one object per call, `null` for an Id not
//!   found, deleted or not visible), the Ids of many events at once, each Id once, at most
//!   [`IDS_PER_CALL`] per call; each call counted in `forcebridge_source_full_record_reads_total`.
//! * The completed record ([`complete`]): the read values, then the event's own values on top —
//!   for a compound, child by child — so every field the change set keeps the value it committed,
//!   and every other field is the one at read time, never older than the event (the read happens
//!   after the event was received). The envelope gets `"reread": {"mode": "full", "state":
//!   "present", "read_at": <ms>}` and the record the header `forcebridge.reread: full`.
//! * A record the read does not return (deleted since, or not visible): the event's partial record
//!   is produced as it is, with state `absent` (counted).
//! * Failures: the REST client retries what is retryable (transport, 5xx, 429, re-login, daily
//!   limit); a refusal retrying cannot fix, a describe that fails, or a value that does not fit
//!   the schema is a [`FullRecordError`]: the events that needed that read are dead-lettered
//!   (stage `full`) with the reason, and the channel goes on.
//! * [`complete`] works on the `record` map alone, so another envelope writer (e.g. Debezium's
//!   `after`) can place the completed map itself.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use crate::kafka::headers;
use crate::ops::full_record::FullRecordStats;
use crate::salesforce::rest::{MAX_RETRIEVE_IDS, ObjectFields, RestClient, RestError};
use crate::salesforce::sfid::id15;
use crate::source::cdc::OutRecord;
use crate::source::cdc::schema::EventSchema;
use crate::source::shape::fields_of;
use crate::source::snapshot::columns::Columns;

/// `forcebridge.reread` / `reread.mode` of completed records.
pub const MODE_FULL: &str = "full";
/// Ids per sObject Collections retrieve call (Salesforce's limit).
pub const IDS_PER_CALL: usize = MAX_RETRIEVE_IDS;

/// Why the records of an event could not be completed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FullRecordError {
    /// The describe or the retrieve of the object failed in a way retrying cannot fix.
    #[error("reading the current values of {object} records failed: {reason}")]
    Read { object: String, reason: String },
    /// A value read does not fit the event's schema.
    #[error("{object} {id}: a value read does not fit the event schema: {reason}")]
    Value {
        object: String,
        id: String,
        reason: String,
    },
    /// A decoded record's envelope is not a JSON object with a `record` object.
    #[error("record {id}: the envelope cannot take the full record: {reason}")]
    Envelope { id: String, reason: String },
    /// Shutdown interrupted the read.
    #[error("cancelled")]
    Cancelled,
}

/// True for a record [`Completer::read`] completes: an `UPDATE` record with a value.
pub(crate) fn wants(record: &OutRecord) -> bool {
    record.value.is_some() && record.operation == "UPDATE"
}

/// What one read found for an Id.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Found {
    /// The record's current values in the event's shape.
    Present(Map<String, Value>),
    /// Not returned (deleted since, or not visible).
    Absent,
    /// A value that does not fit the schema.
    Bad(String),
}

/// The answers of one batch, per object and schema id: per Id (15 characters), what was found;
/// or why the object could not be read.
#[derive(Debug, Default)]
pub(crate) struct Reads {
    groups: HashMap<(String, String), Result<HashMap<String, Found>, FullRecordError>>,
    /// When the reads were made (epoch ms).
    read_at: u64,
}

/// The records one batch asks for: per (object, schema id), the schema and the Ids.
#[derive(Default)]
pub(crate) struct Wanted {
    groups: BTreeMap<(String, String), (Arc<EventSchema>, Vec<String>)>,
}

impl Wanted {
    /// Adds the records of one event (decoded with `schema`) that [`wants`] completes; returns
    /// how many.
    pub(crate) fn add(&mut self, schema: &Arc<EventSchema>, records: &[OutRecord]) -> usize {
        let mut added = 0;
        for record in records.iter().filter(|r| wants(r)) {
            let key = (record.object.clone(), schema.id.clone());
            let (_, ids) = self
                .groups
                .entry(key)
                .or_insert_with(|| (schema.clone(), Vec::new()));
            ids.push(record.key.clone());
            added += 1;
        }
        added
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}

/// Reads current values for a channel; keeps each object's [`Columns`] per schema.
#[derive(Default)]
pub(crate) struct Completer {
    columns: HashMap<(String, String), Arc<Columns>>,
}

impl Completer {
    /// Reads every wanted record (see the module docs); failures are kept per object in the
    /// [`Reads`]. `None` when cancelled.
    pub(crate) async fn read(
        &mut self,
        rest: &RestClient,
        wanted: Wanted,
        stats: &FullRecordStats,
        cancel: &CancellationToken,
    ) -> Option<Reads> {
        let mut reads = Reads {
            groups: HashMap::with_capacity(wanted.groups.len()),
            read_at: crate::ops::telemetry::unix_millis(),
        };
        for (key, (schema, ids)) in wanted.groups {
            let found = match self.columns_of(rest, &key, &schema, cancel).await {
                Ok(columns) => read_group(rest, &columns, ids, stats, cancel).await,
                Err(err) => Err(err),
            };
            if matches!(found, Err(FullRecordError::Cancelled)) {
                return None;
            }
            reads.groups.insert(key, found);
        }
        Some(reads)
    }

    /// The columns of `object` under `schema` (one describe call the first time).
    async fn columns_of(
        &mut self,
        rest: &RestClient,
        key: &(String, String),
        schema: &EventSchema,
        cancel: &CancellationToken,
    ) -> Result<Arc<Columns>, FullRecordError> {
        if let Some(columns) = self.columns.get(key) {
            return Ok(columns.clone());
        }
        let object = key.0.as_str();
        let describe = rest
            .describe(object, cancel)
            .await
            .map_err(|e| read_error(object, e))?;
        let fields = fields_of(&schema.schema);
        let columns = Arc::new(Columns::new(object, &fields, &ObjectFields::new(describe)));
        self.columns.insert(key.clone(), columns.clone());
        Ok(columns)
    }
}

/// Reads the Ids of one object, [`IDS_PER_CALL`] per call, each Id once.
async fn read_group(
    rest: &RestClient,
    columns: &Columns,
    mut ids: Vec<String>,
    stats: &FullRecordStats,
    cancel: &CancellationToken,
) -> Result<HashMap<String, Found>, FullRecordError> {
    let mut seen = std::collections::HashSet::with_capacity(ids.len());
    ids.retain(|id| seen.insert(id15(id).to_owned()));
    let fields = columns.select();
    let mut found = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(IDS_PER_CALL) {
        stats.reads.fetch_add(1, Ordering::Relaxed);
        let rows = rest
            .retrieve(columns.object(), chunk.to_vec(), fields, cancel)
            .await
            .map_err(|e| read_error(columns.object(), e))?;
        for (id, row) in chunk.iter().zip(rows) {
            found.insert(id15(id).to_owned(), found_of(columns, row));
        }
    }
    Ok(found)
}

/// One retrieve entry in the event's shape.
fn found_of(columns: &Columns, row: Option<Map<String, Value>>) -> Found {
    let Some(row) = row else {
        return Found::Absent;
    };
    let row = columns.rest_row(row);
    let row: Vec<Option<std::borrow::Cow<'_, str>>> = row
        .iter()
        .map(|v| v.as_deref().map(std::borrow::Cow::Borrowed))
        .collect();
    match columns.record(&row) {
        Ok(record) => Found::Present(record),
        Err(reason) => Found::Bad(reason),
    }
}

fn read_error(object: &str, error: RestError) -> FullRecordError {
    match error {
        RestError::Cancelled => FullRecordError::Cancelled,
        other => FullRecordError::Read {
            object: object.to_owned(),
            reason: other.to_string(),
        },
    }
}

/// The completed `record`: `read` (every field, current values) with the event's own values on
/// top, compound children one by one.
pub(crate) fn complete(event: &Map<String, Value>, read: Map<String, Value>) -> Map<String, Value> {
    let mut out = read;
    for (field, value) in event {
        match (out.get_mut(field), value) {
            (Some(Value::Object(current)), Value::Object(changed)) => {
                for (child, v) in changed {
                    current.insert(child.clone(), v.clone());
                }
            }
            _ => {
                out.insert(field.clone(), value.clone());
            }
        }
    }
    out
}

/// Rewrites the [`wants`] records of one event (decoded with schema `schema_id`) with what
/// `reads` found; the other records are left as they are.
pub(crate) fn apply(
    records: &mut [OutRecord],
    schema_id: &str,
    reads: &Reads,
    stats: &FullRecordStats,
) -> Result<(), FullRecordError> {
    for record in records.iter_mut().filter(|r| wants(r)) {
        let key = (record.object.clone(), schema_id.to_owned());
        let found = match reads.groups.get(&key) {
            Some(Ok(found)) => found.get(id15(&record.key)).unwrap_or(&Found::Absent),
            Some(Err(err)) => return Err(err.clone()),
            None => &Found::Absent,
        };
        let present = match found {
            Found::Present(read) => Some(read),
            Found::Absent => None,
            Found::Bad(reason) => {
                return Err(FullRecordError::Value {
                    object: record.object.clone(),
                    id: record.key.clone(),
                    reason: reason.clone(),
                });
            }
        };
        rewrite(record, present, reads.read_at)?;
        match present {
            Some(_) => stats.completed.fetch_add(1, Ordering::Relaxed),
            None => stats.absent.fetch_add(1, Ordering::Relaxed),
        };
    }
    Ok(())
}

/// One record's envelope: `record` completed (`read`: `None` = absent, left as it is) and the
/// `reread` note; the header.
fn rewrite(
    record: &mut OutRecord,
    read: Option<&Map<String, Value>>,
    read_at: u64,
) -> Result<(), FullRecordError> {
    let bad = |reason: String| FullRecordError::Envelope {
        id: record.key.clone(),
        reason,
    };
    let value = record.value.as_deref().unwrap_or_default();
    let mut envelope = match serde_json::from_slice(value) {
        Ok(Value::Object(envelope)) => envelope,
        Ok(_) => return Err(bad("not a JSON object".into())),
        Err(err) => return Err(bad(err.to_string())),
    };
    let state = match (read, envelope.get_mut("record")) {
        (Some(read), Some(Value::Object(body))) => {
            *body = complete(body, read.clone());
            "present"
        }
        (None, Some(Value::Object(_))) => "absent",
        _ => return Err(bad("no `record` object".into())),
    };
    envelope.insert(
        "reread".into(),
        json!({"mode": MODE_FULL, "state": state, "read_at": read_at}),
    );
    // The whole row: `format: debezium` then says `partial: false`.
    if state == "present" {
        envelope.insert("full_record".into(), Value::Bool(true));
    }
    record.value =
        Some(serde_json::to_vec(&envelope).expect("serializing JSON values cannot fail"));
    record.headers.retain(|(k, _)| *k != headers::REREAD);
    record.headers.push((headers::REREAD, MODE_FULL.to_owned()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(m) => m,
            other => panic!("not an object: {other}"),
        }
    }

    fn update(id: &str, record: Value) -> OutRecord {
        let envelope = json!({"operation": "UPDATE", "object": "Account", "id": id,
            "record": record, "changed_fields": ["Phone"], "commit_timestamp": 1});
        OutRecord {
            object: "Account".into(),
            key: id.into(),
            value: Some(envelope.to_string().into_bytes()),
            headers: vec![(headers::REPLAY_ID, "00".into())],
            operation: "UPDATE".into(),
        }
    }

    fn reads(found: Vec<(&str, Found)>) -> Reads {
        let found = found
            .into_iter()
            .map(|(id, f)| (id15(id).to_owned(), f))
            .collect();
        let mut groups = HashMap::new();
        groups.insert(("Account".to_owned(), "s1".to_owned()), Ok(found));
        Reads {
            groups,
            read_at: 42,
        }
    }

    #[test]
    fn the_event_values_win_over_the_read_child_by_child() {
        let event = map(json!({"Phone": "2", "BillingAddress": {"City": "Lyon"}, "Fax": null}));
        let read = map(json!({"Phone": "1", "Name": "Acme", "Fax": "9",
            "BillingAddress": {"City": "Paris", "Street": "1 rue"}, "ShippingAddress": null}));
        let out = complete(&event, read);
        assert_eq!(
            Value::Object(out),
            json!({"Phone": "2", "Name": "Acme", "Fax": null,
                "BillingAddress": {"City": "Lyon", "Street": "1 rue"}, "ShippingAddress": null})
        );
        // A compound the read has as null takes the event's children as they are.
        let event = map(json!({"ShippingAddress": {"City": "Nice"}}));
        let out = complete(&event, map(json!({"ShippingAddress": null})));
        assert_eq!(out["ShippingAddress"], json!({"City": "Nice"}));
    }

    #[test]
    fn updates_are_completed_and_marked_others_left_alone() {
        let a = "001SIM000000001AAA";
        let b = "001SIM000000002AAA";
        let mut records = vec![
            update(a, json!({"Phone": "2"})),
            update(b, json!({"Phone": "3"})),
            OutRecord {
                operation: "CREATE".into(),
                ..update(a, json!({"Name": "x"}))
            },
        ];
        let create = records[2].clone();
        let stats = FullRecordStats::default();
        let read = map(json!({"Phone": "1", "Name": "Acme"}));
        // Found by its 15-character Id.
        let reads = reads(vec![("001SIM000000001", Found::Present(read))]);
        apply(&mut records, "s1", &reads, &stats).expect("applied");
        let v: Value = serde_json::from_slice(records[0].value.as_deref().unwrap()).unwrap();
        assert_eq!(v["record"], json!({"Phone": "2", "Name": "Acme"}));
        assert_eq!(
            v["reread"],
            json!({"mode": "full", "state": "present", "read_at": 42})
        );
        assert_eq!(v["changed_fields"], json!(["Phone"]));
        assert_eq!(
            v["full_record"], true,
            "format: debezium then says partial: false"
        );
        assert_eq!(records[0].headers[1], (headers::REREAD, "full".to_owned()));
        // Not returned: the event's record as it was, marked absent.
        let v: Value = serde_json::from_slice(records[1].value.as_deref().unwrap()).unwrap();
        assert_eq!(v["record"], json!({"Phone": "3"}));
        assert_eq!(v["reread"]["state"], "absent");
        assert!(
            v.get("full_record").is_none(),
            "a partial row stays partial"
        );
        assert_eq!(records[2], create);
        assert_eq!(stats.snapshot().completed, 1);
        assert_eq!(stats.snapshot().absent, 1);
    }

    #[test]
    fn a_failed_read_or_a_bad_value_is_an_error_naming_it() {
        let a = "001SIM000000001AAA";
        let stats = FullRecordStats::default();
        let mut records = vec![update(a, json!({"Phone": "2"}))];
        let bad = reads(vec![(
            a,
            Found::Bad("CreatedDate: `x` is not a date".into()),
        )]);
        let err = apply(&mut records, "s1", &bad, &stats).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "Account {a}: a value read does not fit the event schema: CreatedDate: `x` is \
                 not a date"
            )
        );
        let mut failed = reads(vec![]);
        failed.groups.insert(
            ("Account".into(), "s1".into()),
            Err(FullRecordError::Read {
                object: "Account".into(),
                reason: "HTTP 400: INVALID_FIELD".into(),
            }),
        );
        let err = apply(&mut records, "s1", &failed, &stats).unwrap_err();
        assert!(err.to_string().contains("INVALID_FIELD"), "{err}");
        let mut broken = vec![OutRecord {
            value: Some(b"[]".to_vec()),
            ..update(a, json!({}))
        }];
        let found = reads(vec![(a, Found::Present(Map::new()))]);
        let err = apply(&mut broken, "s1", &found, &stats).unwrap_err();
        assert!(err.to_string().starts_with(&format!("record {a}")), "{err}");
    }

    #[test]
    fn wanted_groups_the_update_records_by_object_and_schema() {
        let schema = Arc::new(
            EventSchema::parse("s1", include_str!("../../schemas/AccountChangeEvent.avsc"))
                .expect("schema"),
        );
        let mut wanted = Wanted::default();
        assert!(wanted.is_empty());
        let records = vec![
            update("001SIM000000001AAA", json!({})),
            OutRecord {
                value: None,
                ..update("001SIM000000002AAA", json!({}))
            },
            OutRecord {
                operation: "DELETE".into(),
                ..update("001SIM000000003AAA", json!({}))
            },
        ];
        assert_eq!(wanted.add(&schema, &records), 1);
        assert_eq!(wanted.add(&schema, &records[..1]), 1);
        let (_, ids) = &wanted.groups[&("Account".to_owned(), "s1".to_owned())];
        assert_eq!(ids.len(), 2, "an Id twice is read once, later");
    }
}
