//! Decoding stage: Avro payload → [`DecodedEvent`] → Kafka [`OutRecord`]s with the JSON envelope.
//!
//! Contract (see `ARCHITECTURE.md`, "Kafka record format"):
//! * [`decode`] reads one raw Avro datum with the event's own writer schema ([`EventSchema`],
//!   looked up by the event's `schema_id`). For CDC events it parses `ChangeEventHeader` and
//!   expands the `changedFields` / `nulledFields` / `diffFields` bitmaps (facts §11.4, including
//!   the `P-0xHEX` compound form) to field names. The body becomes `record`: fields that carry a
//!   value plus the nulled fields as `null`; compound fields are nested objects under the same
//!   rule; unions flattened; longs stay `i64`; bytes/fixed base64; non-finite doubles `null`.
//! * [`to_records`] fans out one [`OutRecord`] per record id (in order), each with the JSON
//!   envelope and headers, plus a tombstone after each `DELETE` when asked. Platform Events give
//!   one record keyed by the event id with operation `EVENT`.
//! * Corrupt payloads and bad bitmaps are errors ([`DecodeError::stage`] names the dead-letter
//!   stage), never panics.
//!
//! Hot path: the schema is compiled once per schema id (see [`avro`]); decoding writes JSON
//! values directly from the bytes, allocating only for values that are kept; the envelope's
//! shared part is serialized once per event and reused for every record id.

mod avro;
mod bitmap;

use apache_avro::Schema;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::schema::{EventKind, EventSchema};
use avro::{Node, Program, Reader};
pub use bitmap::BitmapError;
use bitmap::{FieldRef, FieldTable};

/// One event as received from Pub/Sub, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct RawEvent<'a> {
    pub channel: &'a str,
    pub replay_id: &'a [u8],
    pub event_id: &'a str,
    pub schema_id: &'a str,
    pub payload: &'a [u8],
}

/// A decoded `ChangeEventHeader`; the bitmaps are already expanded to field names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeHeader {
    pub entity_name: String,
    pub record_ids: Vec<String>,
    pub change_type: String,
    /// `None` when absent or empty.
    pub change_origin: Option<String>,
    pub transaction_key: String,
    pub sequence_number: i32,
    pub commit_timestamp: i64,
    pub commit_number: i64,
    pub commit_user: String,
    pub changed_fields: Vec<String>,
    pub nulled_fields: Vec<String>,
    pub diff_fields: Vec<String>,
}

/// One decoded event.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedEvent {
    /// `Some` for Change Data Capture events, `None` for Platform Events.
    pub header: Option<ChangeHeader>,
    /// The envelope's `record` (without `ChangeEventHeader`).
    pub record: Map<String, Value>,
    /// The body's `CreatedDate` when present and set (a Platform Event's commit timestamp).
    pub created_date: Option<i64>,
}

/// Why an event could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The payload is not a datum of the writer schema (truncated, garbage, trailing bytes).
    #[error("corrupt Avro payload at byte {offset}: {reason}")]
    Avro { offset: usize, reason: String },
    /// A header bitmap could not be expanded against the writer schema.
    #[error("bad {field} bitmap: {source}")]
    Bitmap {
        field: &'static str,
        #[source]
        source: BitmapError,
    },
    /// A required `ChangeEventHeader` field is absent from the schema, null or (ids) empty.
    #[error("ChangeEventHeader field `{field}` is missing, null or empty")]
    MissingHeaderField { field: &'static str },
    /// A `ChangeEventHeader` field has a type we cannot interpret.
    #[error("ChangeEventHeader field `{field}` has an unexpected type (expected {expected})")]
    HeaderFieldType {
        field: &'static str,
        expected: &'static str,
    },
}

impl DecodeError {
    /// The dead-letter stage (`forcebridge.error.stage`): `"bitmap"` or `"decode"`.
    pub fn stage(&self) -> &'static str {
        match self {
            DecodeError::Bitmap { .. } => "bitmap",
            _ => "decode",
        }
    }
}

/// Envelope options from the channel config.
#[derive(Debug, Clone, Copy, Default)]
pub struct EnvelopeOptions {
    /// Follow each `DELETE` record with a tombstone (same key, null value).
    pub tombstones: bool,
}

/// One Kafka record to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutRecord {
    /// Entity name (CDC) or event name (Platform Event); input to the topic template.
    pub object: String,
    pub key: String,
    /// The JSON envelope; `None` = tombstone.
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(&'static str, String)>,
    /// `changeType`, or `EVENT` for a Platform Event.
    pub operation: String,
}

/// Header names (ARCHITECTURE.md).
pub const HEADER_REPLAY_ID: &str = "forcebridge.replay_id";
pub const HEADER_SCHEMA_ID: &str = "forcebridge.schema_id";
pub const HEADER_CHANGE_TYPE: &str = "forcebridge.change_type";
pub const HEADER_CHANGE_ORIGIN: &str = "forcebridge.change_origin";
pub const HEADER_CHANNEL: &str = "forcebridge.channel";
/// Set (to `client_tag` or `commit_user`) on records of echo events when `source.echo.mode` is
/// `mark`.
pub const HEADER_ECHO: &str = "forcebridge.echo";
pub const HEADER_EVENT_ID: &str = "forcebridge.event_id";

/// The operation of a Platform Event record.
pub const OPERATION_EVENT: &str = "EVENT";

// ---------------------------------------------------------------------------------------------
// Per-schema precomputation
// ---------------------------------------------------------------------------------------------

/// The role of a `ChangeEventHeader` field, resolved once per schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    EntityName,
    RecordIds,
    ChangeType,
    ChangeOrigin,
    TransactionKey,
    SequenceNumber,
    CommitTimestamp,
    CommitNumber,
    CommitUser,
    ChangedFields,
    NulledFields,
    DiffFields,
    Other,
}

const ROLES: [(&str, Role); 12] = [
    ("entityName", Role::EntityName),
    ("recordIds", Role::RecordIds),
    ("changeType", Role::ChangeType),
    ("changeOrigin", Role::ChangeOrigin),
    ("transactionKey", Role::TransactionKey),
    ("sequenceNumber", Role::SequenceNumber),
    ("commitTimestamp", Role::CommitTimestamp),
    ("commitNumber", Role::CommitNumber),
    ("commitUser", Role::CommitUser),
    ("changedFields", Role::ChangedFields),
    ("nulledFields", Role::NulledFields),
    ("diffFields", Role::DiffFields),
];

#[derive(Debug)]
struct HeaderLayout {
    roles: Box<[Role]>,
    record: usize,
}

/// Everything the decoder needs for one writer schema, built by [`EventSchema`] at parse time.
#[derive(Debug)]
pub(crate) struct Layout {
    program: Program,
    /// Record index of the event body.
    body: usize,
    /// `Some` iff field 0 is `ChangeEventHeader`.
    header: Option<HeaderLayout>,
    /// Position of the top-level `CreatedDate` field.
    created_date: Option<usize>,
    pub(crate) fields: FieldTable,
}

impl Layout {
    pub(crate) fn compile(schema: &Schema) -> Result<Layout, String> {
        let program = Program::compile(schema)?;
        let Node::Record(body) = program.root else {
            return Err("the top-level type is not a record".to_owned());
        };
        let fields = &program.records[body].fields;
        let header = match fields.first() {
            Some(f) if f.name == "ChangeEventHeader" => {
                let Node::Record(record) = f.node else {
                    return Err("field `ChangeEventHeader` is not a record".to_owned());
                };
                let roles = program.records[record]
                    .fields
                    .iter()
                    .map(|hf| {
                        ROLES
                            .iter()
                            .find(|(n, _)| *n == hf.name)
                            .map_or(Role::Other, |(_, r)| *r)
                    })
                    .collect();
                Some(HeaderLayout { roles, record })
            }
            _ => None,
        };
        let created_date = fields.iter().position(|f| f.name == "CreatedDate");
        let table = FieldTable::build(&program, body, header.is_some());
        Ok(Layout {
            program,
            body,
            header,
            created_date,
            fields: table,
        })
    }

    pub(crate) fn kind(&self) -> EventKind {
        if self.header.is_some() {
            EventKind::ChangeEvent
        } else {
            EventKind::PlatformEvent
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------------

/// Decodes one raw Avro datum with its writer schema, parsing the header and expanding bitmaps.
pub fn decode(schema: &EventSchema, payload: &[u8]) -> Result<DecodedEvent, DecodeError> {
    let l = &schema.layout;
    let p = &l.program;
    let mut r = Reader::new(payload);
    let mut record = Map::new();
    let mut header = None;
    let mut created_date = None;
    for (i, f) in p.records[l.body].fields.iter().enumerate() {
        if i == 0 {
            if let Some(h) = &l.header {
                header = Some(read_header(p, h, &mut r)?);
                continue;
            }
        }
        let Some(v) = p.read_present(&mut r, &f.node, 1)? else {
            continue;
        };
        if l.created_date == Some(i) {
            created_date = v.as_i64();
        }
        record.insert(f.name.clone(), v);
    }
    r.finish()?;

    let header = match header {
        None => None,
        Some(mut h) => {
            let t = &l.fields;
            h.changed_fields = t
                .names(&h.changed_fields)
                .map_err(bitmap("changedFields"))?;
            h.diff_fields = t.names(&h.diff_fields).map_err(bitmap("diffFields"))?;
            let mut nulled = Vec::new();
            t.expand(&h.nulled_fields, |f| nulled.push(f))
                .map_err(bitmap("nulledFields"))?;
            h.nulled_fields = nulled.iter().map(|&f| t.name(f).to_owned()).collect();
            for f in nulled {
                insert_null(&mut record, t, f);
            }
            Some(h)
        }
    };
    Ok(DecodedEvent {
        header,
        record,
        created_date,
    })
}

/// Expands Pub/Sub bitmap strings to field names against the event's writer schema.
pub fn expand_bitmaps(
    bitmaps: &[String],
    schema: &EventSchema,
) -> Result<Vec<String>, BitmapError> {
    schema.layout.fields.names(bitmaps)
}

fn bitmap(field: &'static str) -> impl FnOnce(BitmapError) -> DecodeError {
    move |source| DecodeError::Bitmap { field, source }
}

/// Puts a nulled field into `record` as `null` unless the body already carries it; nested
/// `Parent.Child` goes into the parent's object (created when the parent is absent).
fn insert_null(record: &mut Map<String, Value>, t: &FieldTable, f: FieldRef) {
    if f.top == 0 && t.top_name(0) == "ChangeEventHeader" {
        return;
    }
    let parent = t.top_name(f.top);
    match f.nested {
        None => {
            if !record.contains_key(parent) {
                record.insert(parent.to_owned(), Value::Null);
            }
        }
        Some(j) => {
            let child = t.child_name(f.top, j);
            match record.get_mut(parent) {
                Some(Value::Object(m)) => {
                    if !m.contains_key(child) {
                        m.insert(child.to_owned(), Value::Null);
                    }
                }
                None | Some(Value::Null) => {
                    let mut m = Map::new();
                    m.insert(child.to_owned(), Value::Null);
                    record.insert(parent.to_owned(), Value::Object(m));
                }
                // A non-record variant (e.g. the string form of a switchable name): keep it.
                Some(_) => {}
            }
        }
    }
}

fn read_header(
    p: &Program,
    h: &HeaderLayout,
    r: &mut Reader<'_>,
) -> Result<ChangeHeader, DecodeError> {
    let mut entity_name = None;
    let mut record_ids = None;
    let mut change_type = None;
    let mut change_origin = None;
    let mut transaction_key = None;
    let mut sequence_number = None;
    let mut commit_timestamp = None;
    let mut commit_number = None;
    let mut commit_user = None;
    let mut changed_fields = Vec::new();
    let mut nulled_fields = Vec::new();
    let mut diff_fields = Vec::new();
    for (f, role) in p.records[h.record].fields.iter().zip(h.roles.iter()) {
        let v = p.read(r, &f.node, 2, false)?;
        match role {
            Role::EntityName => entity_name = string(v, "entityName")?,
            Role::RecordIds => record_ids = strings(v, "recordIds")?,
            Role::ChangeType => change_type = string(v, "changeType")?,
            Role::ChangeOrigin => change_origin = string(v, "changeOrigin")?,
            Role::TransactionKey => transaction_key = string(v, "transactionKey")?,
            Role::SequenceNumber => {
                sequence_number = int(&v, "sequenceNumber")?
                    .map(i32::try_from)
                    .transpose()
                    .map_err(|_| DecodeError::HeaderFieldType {
                        field: "sequenceNumber",
                        expected: "int",
                    })?
            }
            Role::CommitTimestamp => commit_timestamp = int(&v, "commitTimestamp")?,
            Role::CommitNumber => commit_number = int(&v, "commitNumber")?,
            Role::CommitUser => commit_user = string(v, "commitUser")?,
            Role::ChangedFields => {
                changed_fields = strings(v, "changedFields")?.unwrap_or_default()
            }
            Role::NulledFields => nulled_fields = strings(v, "nulledFields")?.unwrap_or_default(),
            Role::DiffFields => diff_fields = strings(v, "diffFields")?.unwrap_or_default(),
            Role::Other => {}
        }
    }
    Ok(ChangeHeader {
        entity_name: required(entity_name, "entityName")?,
        record_ids: required(record_ids.filter(|ids| !ids.is_empty()), "recordIds")?,
        change_type: required(change_type, "changeType")?,
        change_origin: change_origin.filter(|o| !o.is_empty()),
        transaction_key: required(transaction_key, "transactionKey")?,
        sequence_number: required(sequence_number, "sequenceNumber")?,
        commit_timestamp: required(commit_timestamp, "commitTimestamp")?,
        commit_number: required(commit_number, "commitNumber")?,
        commit_user: required(commit_user, "commitUser")?,
        changed_fields,
        nulled_fields,
        diff_fields,
    })
}

fn required<T>(v: Option<T>, field: &'static str) -> Result<T, DecodeError> {
    v.ok_or(DecodeError::MissingHeaderField { field })
}

/// A string (or enum symbol, already a string) header value; `null` is `None`.
fn string(v: Value, field: &'static str) -> Result<Option<String>, DecodeError> {
    match v {
        Value::String(s) => Ok(Some(s)),
        Value::Null => Ok(None),
        _ => Err(DecodeError::HeaderFieldType {
            field,
            expected: "string",
        }),
    }
}

fn strings(v: Value, field: &'static str) -> Result<Option<Vec<String>>, DecodeError> {
    let wrong = DecodeError::HeaderFieldType {
        field,
        expected: "array of strings",
    };
    match v {
        Value::Null => Ok(None),
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    Value::String(s) => out.push(s),
                    _ => return Err(wrong),
                }
            }
            Ok(Some(out))
        }
        _ => Err(wrong),
    }
}

fn int(v: &Value, field: &'static str) -> Result<Option<i64>, DecodeError> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => n.as_i64().map(Some).ok_or(DecodeError::HeaderFieldType {
            field,
            expected: "int or long",
        }),
        _ => Err(DecodeError::HeaderFieldType {
            field,
            expected: "int or long",
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// Envelope
// ---------------------------------------------------------------------------------------------

/// The leading envelope fields, which differ per record id.
#[derive(Serialize)]
struct Head<'a> {
    operation: &'a str,
    object: &'a str,
    id: &'a str,
}

/// The rest of the envelope, shared by all record ids of an event (serialized once).
#[derive(Serialize)]
struct Tail<'a> {
    record: &'a Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    changed_fields: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nulled_fields: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    diff_fields: Option<&'a [String]>,
    commit_timestamp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    commit_number: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    commit_user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    transaction_key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sequence_number: Option<i32>,
    /// Outer `None`: absent (Platform Event); `Some(None)`: `null` (CDC without origin).
    #[serde(skip_serializing_if = "Option::is_none")]
    change_origin: Option<Option<&'a str>>,
    source: Source<'a>,
}

#[derive(Serialize)]
struct Source<'a> {
    channel: &'a str,
    replay_id: &'a str,
    event_id: &'a str,
    schema_id: &'a str,
}

/// `{head..., tail...}` from two serialized objects.
fn envelope(head: &Head<'_>, tail: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(tail.len() + 64 + head.object.len() + head.id.len());
    serde_json::to_writer(&mut out, head).expect("serializing strings to a Vec cannot fail");
    out.pop(); // the closing '}'
    out.push(b',');
    out.extend_from_slice(&tail[1..]); // without the opening '{'
    out
}

/// Builds the Kafka records for one decoded event: one per record id (in order), each followed
/// by a tombstone for `DELETE` when `opts.tombstones`; one keyed by the event id for a Platform
/// Event.
pub fn to_records(
    raw: &RawEvent<'_>,
    event: &DecodedEvent,
    opts: &EnvelopeOptions,
) -> Vec<OutRecord> {
    let replay_hex = hex::encode(raw.replay_id);
    let source = Source {
        channel: raw.channel,
        replay_id: &replay_hex,
        event_id: raw.event_id,
        schema_id: raw.schema_id,
    };
    let Some(h) = &event.header else {
        let object = raw
            .channel
            .strip_prefix("/event/")
            .unwrap_or_else(|| raw.channel.rsplit('/').next().unwrap_or(raw.channel));
        let tail = Tail {
            record: &event.record,
            changed_fields: None,
            nulled_fields: None,
            diff_fields: None,
            commit_timestamp: event.created_date,
            commit_number: None,
            commit_user: None,
            transaction_key: None,
            sequence_number: None,
            change_origin: None,
            source,
        };
        let tail = serde_json::to_vec(&tail).expect("serializing JSON values cannot fail");
        let head = Head {
            operation: OPERATION_EVENT,
            object,
            id: raw.event_id,
        };
        return vec![OutRecord {
            object: object.to_owned(),
            key: raw.event_id.to_owned(),
            value: Some(envelope(&head, &tail)),
            headers: headers(raw, replay_hex.clone(), OPERATION_EVENT, None),
            operation: OPERATION_EVENT.to_owned(),
        }];
    };

    let tail = Tail {
        record: &event.record,
        changed_fields: Some(&h.changed_fields),
        nulled_fields: Some(&h.nulled_fields),
        diff_fields: Some(&h.diff_fields),
        commit_timestamp: Some(h.commit_timestamp),
        commit_number: Some(h.commit_number),
        commit_user: Some(&h.commit_user),
        transaction_key: Some(&h.transaction_key),
        sequence_number: Some(h.sequence_number),
        change_origin: Some(h.change_origin.as_deref()),
        source,
    };
    let tail = serde_json::to_vec(&tail).expect("serializing JSON values cannot fail");
    let hdrs = headers(raw, replay_hex, &h.change_type, h.change_origin.as_deref());
    let tombstones = opts.tombstones && h.change_type == "DELETE";
    let mut out = Vec::with_capacity(h.record_ids.len() * if tombstones { 2 } else { 1 });
    for id in &h.record_ids {
        let head = Head {
            operation: &h.change_type,
            object: &h.entity_name,
            id,
        };
        out.push(OutRecord {
            object: h.entity_name.clone(),
            key: id.clone(),
            value: Some(envelope(&head, &tail)),
            headers: hdrs.clone(),
            operation: h.change_type.clone(),
        });
        if tombstones {
            out.push(OutRecord {
                object: h.entity_name.clone(),
                key: id.clone(),
                value: None,
                headers: hdrs.clone(),
                operation: h.change_type.clone(),
            });
        }
    }
    out
}

fn headers(
    raw: &RawEvent<'_>,
    replay_hex: String,
    change_type: &str,
    change_origin: Option<&str>,
) -> Vec<(&'static str, String)> {
    let mut h = Vec::with_capacity(6);
    h.push((HEADER_REPLAY_ID, replay_hex));
    h.push((HEADER_SCHEMA_ID, raw.schema_id.to_owned()));
    h.push((HEADER_CHANGE_TYPE, change_type.to_owned()));
    if let Some(o) = change_origin {
        h.push((HEADER_CHANGE_ORIGIN, o.to_owned()));
    }
    h.push((HEADER_CHANNEL, raw.channel.to_owned()));
    h.push((HEADER_EVENT_ID, raw.event_id.to_owned()));
    h
}

#[cfg(test)]
mod tests;
