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
//! * [`encode`] does both in one pass for the pipeline.
//!
//! Hot path: the schema is compiled once per schema id (see [`avro`]); [`encode`] writes the
//! envelope's JSON text straight from the Avro bytes into reusable buffers ([`Scratch`]), with
//! no intermediate values; the part shared by an event's record ids is written once and copied
//! per record.

mod avro;
mod bitmap;
pub mod schema;

use apache_avro::Schema;
use serde_json::{Map, Value};

use crate::source::cdc::schema::{EventKind, EventSchema};
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

/// Reusable buffers of the decoder. A channel's processor keeps one, so that [`encode`]
/// allocates nothing per event but the records it returns.
#[derive(Debug, Default)]
pub struct Scratch {
    /// The body as JSON text (the envelope's `record`).
    body: Vec<u8>,
    /// The envelope after its leading per-record fields.
    tail: Vec<u8>,
    changed: Vec<FieldRef>,
    nulled: Vec<FieldRef>,
    diff: Vec<FieldRef>,
    /// Per top-level body field: [`NULLED`] / [`CHILD_NULLED`].
    flags: Vec<u8>,
}

/// The field itself is in `nulledFields`.
const NULLED: u8 = 1;
/// One of the (compound) field's children is in `nulledFields`.
const CHILD_NULLED: u8 = 2;

/// What [`read_event`] returns besides the text it writes into the [`Scratch`].
struct Parsed {
    /// The header with its bitmaps as received (expanded into the scratch).
    header: Option<ChangeHeader>,
    created_date: Option<i64>,
}

/// Reads one datum: the header into [`Parsed`], its bitmaps expanded into `s.changed`,
/// `s.nulled` and `s.diff`, and the body written as JSON text into `s.body` under the envelope
/// rule (fields that carry a value, plus the nulled fields as `null`, in schema order).
///
/// Errors come in the order of the contract: the datum (header, body, trailing bytes), then the
/// `changedFields`, `diffFields` and `nulledFields` bitmaps.
fn read_event(
    schema: &EventSchema,
    payload: &[u8],
    s: &mut Scratch,
) -> Result<Parsed, DecodeError> {
    let l = &schema.layout;
    let p = &l.program;
    let t = &l.fields;
    let fields = &p.records[l.body].fields;
    let mut r = Reader::new(payload);
    s.body.clear();
    s.changed.clear();
    s.nulled.clear();
    s.diff.clear();
    s.flags.clear();
    s.flags.resize(fields.len(), 0);
    let mut header = None;
    let mut nulled_error = None;
    let mut created_date = None;
    let out = &mut s.body;
    out.push(b'{');
    let mut first = true;
    for (i, f) in fields.iter().enumerate() {
        if i == 0 {
            if let Some(h) = &l.header {
                let read = read_header(p, h, &mut r)?;
                // The body is written knowing the nulled fields; a bad bitmap is reported after
                // the datum has been read.
                if let Err(err) = t.expand(&read.nulled_fields, |f| s.nulled.push(f)) {
                    nulled_error = Some(err);
                    s.nulled.clear();
                }
                for f in &s.nulled {
                    s.flags[f.top] |= if f.nested.is_none() {
                        NULLED
                    } else {
                        CHILD_NULLED
                    };
                }
                header = Some(read);
                continue;
            }
        }
        let mark = out.len();
        if !first {
            out.push(b',');
        }
        out.extend_from_slice(&f.key);
        let value_at = out.len();
        let mut written = match p.select(&mut r, &f.node)? {
            None => false,
            Some(Node::Record(record)) => {
                write_compound(p, *record, i, &mut r, &s.nulled, s.flags[i], out)?
            }
            Some(node) => {
                p.write(&mut r, node, 1, true, out)?;
                true
            }
        };
        if written && l.created_date == Some(i) {
            created_date = std::str::from_utf8(&out[value_at..])
                .ok()
                .and_then(|v| v.parse::<i64>().ok());
        }
        if !written {
            out.truncate(value_at);
            if s.flags[i] & CHILD_NULLED != 0 {
                // Absent compound field with nulled children: an object of those children.
                write_nulled_children(p, &f.node, i, &s.nulled, out);
                written = true;
            } else if s.flags[i] & NULLED != 0 {
                out.extend_from_slice(b"null");
                written = true;
            }
        }
        if written {
            first = false;
        } else {
            out.truncate(mark);
        }
    }
    out.push(b'}');
    r.finish()?;
    if let Some(h) = &header {
        t.expand(&h.changed_fields, |f| s.changed.push(f))
            .map_err(bitmap("changedFields"))?;
        t.expand(&h.diff_fields, |f| s.diff.push(f))
            .map_err(bitmap("diffFields"))?;
        if let Some(err) = nulled_error {
            return Err(bitmap("nulledFields")(err));
        }
    }
    Ok(Parsed {
        header,
        created_date,
    })
}

/// A compound field's record (sparse), with its nulled children as `null` unless they carry a
/// value; `false` (and a partial write) when nothing is left.
fn write_compound(
    p: &Program,
    record: usize,
    top: usize,
    r: &mut Reader<'_>,
    nulled: &[FieldRef],
    flags: u8,
    out: &mut Vec<u8>,
) -> Result<bool, DecodeError> {
    let depth = p.deeper(r, 1)?;
    out.push(b'{');
    let mut first = true;
    for (j, child) in p.records[record].fields.iter().enumerate() {
        let mark = out.len();
        if !first {
            out.push(b',');
        }
        out.extend_from_slice(&child.key);
        let value_at = out.len();
        if p.write_present(r, &child.node, depth, out)? {
            first = false;
        } else if flags & CHILD_NULLED != 0 && is_nulled_child(nulled, top, j) {
            out.truncate(value_at);
            out.extend_from_slice(b"null");
            first = false;
        } else {
            out.truncate(mark);
        }
    }
    out.push(b'}');
    Ok(!first)
}

fn is_nulled_child(nulled: &[FieldRef], top: usize, child: usize) -> bool {
    nulled
        .iter()
        .any(|f| f.top == top && f.nested == Some(child))
}

/// `{"Child":null,…}` for the nulled children of an absent compound field, in schema order.
fn write_nulled_children(
    p: &Program,
    node: &Node,
    top: usize,
    nulled: &[FieldRef],
    out: &mut Vec<u8>,
) {
    out.push(b'{');
    if let Some(record) = node.record_variant() {
        let mut first = true;
        for (j, child) in p.records[record].fields.iter().enumerate() {
            if is_nulled_child(nulled, top, j) {
                if !std::mem::take(&mut first) {
                    out.push(b',');
                }
                out.extend_from_slice(&child.key);
                out.extend_from_slice(b"null");
            }
        }
    }
    out.push(b'}');
}

/// Decodes one raw Avro datum with its writer schema, parsing the header and expanding bitmaps
/// (the structured form, for tests and tools; the pipeline uses [`encode`]).
pub fn decode(schema: &EventSchema, payload: &[u8]) -> Result<DecodedEvent, DecodeError> {
    let mut s = Scratch::default();
    let parsed = read_event(schema, payload, &mut s)?;
    let record = serde_json::from_slice(&s.body).expect("the decoder writes a JSON object");
    let t = &schema.layout.fields;
    let names = |refs: &[FieldRef]| refs.iter().map(|&f| t.name(f).to_owned()).collect();
    let header = parsed.header.map(|mut h| {
        h.changed_fields = names(&s.changed);
        h.nulled_fields = names(&s.nulled);
        h.diff_fields = names(&s.diff);
        h
    });
    Ok(DecodedEvent {
        header,
        record,
        created_date: parsed.created_date,
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
        let node = &f.node;
        match role {
            Role::EntityName => entity_name = header_string(p, r, node, "entityName")?,
            Role::RecordIds => record_ids = header_strings(p, r, node, "recordIds")?,
            Role::ChangeType => change_type = header_string(p, r, node, "changeType")?,
            Role::ChangeOrigin => change_origin = header_string(p, r, node, "changeOrigin")?,
            Role::TransactionKey => transaction_key = header_string(p, r, node, "transactionKey")?,
            Role::SequenceNumber => {
                sequence_number = header_int(p, r, node, "sequenceNumber")?
                    .map(i32::try_from)
                    .transpose()
                    .map_err(|_| DecodeError::HeaderFieldType {
                        field: "sequenceNumber",
                        expected: "int",
                    })?
            }
            Role::CommitTimestamp => commit_timestamp = header_int(p, r, node, "commitTimestamp")?,
            Role::CommitNumber => commit_number = header_int(p, r, node, "commitNumber")?,
            Role::CommitUser => commit_user = header_string(p, r, node, "commitUser")?,
            Role::ChangedFields => {
                changed_fields = header_strings(p, r, node, "changedFields")?.unwrap_or_default()
            }
            Role::NulledFields => {
                nulled_fields = header_strings(p, r, node, "nulledFields")?.unwrap_or_default()
            }
            Role::DiffFields => {
                diff_fields = header_strings(p, r, node, "diffFields")?.unwrap_or_default()
            }
            Role::Other => p.write(r, node, 2, false, &mut Vec::new())?,
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

/// A string (or enum symbol) header field; `null` is `None`. The usual types are read
/// directly, anything else through a JSON value.
fn header_string(
    p: &Program,
    r: &mut Reader<'_>,
    node: &Node,
    field: &'static str,
) -> Result<Option<String>, DecodeError> {
    match p.select(r, node)? {
        None => Ok(None),
        Some(Node::String) => Ok(Some(r.str()?.to_owned())),
        Some(Node::Enum(symbols)) => Ok(Some(r.symbol(symbols)?.to_owned())),
        Some(other) => string(p.value(r, other, 2)?, field),
    }
}

fn header_int(
    p: &Program,
    r: &mut Reader<'_>,
    node: &Node,
    field: &'static str,
) -> Result<Option<i64>, DecodeError> {
    match p.select(r, node)? {
        None => Ok(None),
        Some(Node::Long) => Ok(Some(r.long()?)),
        Some(Node::Int) => Ok(Some(r.int()?.into())),
        Some(other) => int(&p.value(r, other, 2)?, field),
    }
}

fn header_strings(
    p: &Program,
    r: &mut Reader<'_>,
    node: &Node,
    field: &'static str,
) -> Result<Option<Vec<String>>, DecodeError> {
    match p.select(r, node)? {
        None => Ok(None),
        Some(Node::Array(item)) if matches!(**item, Node::String) => {
            let mut out = Vec::new();
            loop {
                let n = r.block()?;
                if n == 0 {
                    break;
                }
                out.reserve(n);
                for _ in 0..n {
                    out.push(r.str()?.to_owned());
                }
            }
            Ok(Some(out))
        }
        Some(other) => strings(p.value(r, other, 2)?, field),
    }
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

/// Where an event came from (the envelope's `source`).
struct Source<'a> {
    channel: &'a str,
    replay_id: &'a str,
    event_id: &'a str,
    schema_id: &'a str,
}

/// The change-event part of the envelope: the header and its expanded bitmaps.
struct ChangeTail<'a, 'i> {
    header: &'a ChangeHeader,
    changed: &'i mut dyn Iterator<Item = &'a str>,
    nulled: &'i mut dyn Iterator<Item = &'a str>,
    diff: &'i mut dyn Iterator<Item = &'a str>,
}

/// Appends the envelope after its leading per-record fields (`operation`, `object`, `id`):
/// `"record":…,` the change fields (CDC only), `"commit_timestamp":…,` `"source":{…}}`. The field
/// order and text are those of ARCHITECTURE.md, "Kafka record format".
fn write_tail(
    out: &mut Vec<u8>,
    record: &[u8],
    change: Option<ChangeTail<'_, '_>>,
    commit_timestamp: Option<i64>,
    source: &Source<'_>,
) {
    use avro::{integer, string as text};
    fn names(out: &mut Vec<u8>, key: &[u8], names: &mut dyn Iterator<Item = &str>) {
        out.extend_from_slice(key);
        out.push(b'[');
        for (i, name) in names.enumerate() {
            if i > 0 {
                out.push(b',');
            }
            text(out, name);
        }
        out.extend_from_slice(b"],");
    }
    out.extend_from_slice(b"\"record\":");
    out.extend_from_slice(record);
    out.push(b',');
    let header = match change {
        Some(c) => {
            names(out, b"\"changed_fields\":", c.changed);
            names(out, b"\"nulled_fields\":", c.nulled);
            names(out, b"\"diff_fields\":", c.diff);
            Some(c.header)
        }
        None => None,
    };
    out.extend_from_slice(b"\"commit_timestamp\":");
    match commit_timestamp {
        Some(ts) => integer(out, ts),
        None => out.extend_from_slice(b"null"),
    }
    if let Some(h) = header {
        out.extend_from_slice(b",\"commit_number\":");
        integer(out, h.commit_number);
        out.extend_from_slice(b",\"commit_user\":");
        text(out, &h.commit_user);
        out.extend_from_slice(b",\"transaction_key\":");
        text(out, &h.transaction_key);
        out.extend_from_slice(b",\"sequence_number\":");
        integer(out, h.sequence_number);
        out.extend_from_slice(b",\"change_origin\":");
        match &h.change_origin {
            Some(o) => text(out, o),
            None => out.extend_from_slice(b"null"),
        }
    }
    out.extend_from_slice(b",\"source\":{\"channel\":");
    text(out, source.channel);
    out.extend_from_slice(b",\"replay_id\":");
    text(out, source.replay_id);
    out.extend_from_slice(b",\"event_id\":");
    text(out, source.event_id);
    out.extend_from_slice(b",\"schema_id\":");
    text(out, source.schema_id);
    out.extend_from_slice(b"}}");
}

/// `{"operation":…,"object":…,"id":…,` followed by `tail`.
fn envelope(operation: &str, object: &str, id: &str, tail: &[u8]) -> Vec<u8> {
    use avro::string as text;
    let mut out = Vec::with_capacity(tail.len() + 48 + operation.len() + object.len() + id.len());
    out.extend_from_slice(b"{\"operation\":");
    text(&mut out, operation);
    out.extend_from_slice(b",\"object\":");
    text(&mut out, object);
    out.extend_from_slice(b",\"id\":");
    text(&mut out, id);
    out.push(b',');
    out.extend_from_slice(tail);
    out
}

/// The object of a Platform Event record: the event's API name.
fn event_object(channel: &str) -> &str {
    channel
        .strip_prefix("/event/")
        .unwrap_or_else(|| channel.rsplit('/').next().unwrap_or(channel))
}

/// The records of one event from its envelope tail: one per record id (in order), each followed
/// by a tombstone for `DELETE` when `opts.tombstones`; one keyed by the event id for a Platform
/// Event.
fn records(
    raw: &RawEvent<'_>,
    header: Option<&ChangeHeader>,
    tail: &[u8],
    replay_hex: String,
    opts: &EnvelopeOptions,
) -> Vec<OutRecord> {
    let Some(h) = header else {
        let object = event_object(raw.channel);
        return vec![OutRecord {
            object: object.to_owned(),
            key: raw.event_id.to_owned(),
            value: Some(envelope(OPERATION_EVENT, object, raw.event_id, tail)),
            headers: headers(raw, replay_hex, OPERATION_EVENT, None),
            operation: OPERATION_EVENT.to_owned(),
        }];
    };
    let hdrs = headers(raw, replay_hex, &h.change_type, h.change_origin.as_deref());
    let tombstones = opts.tombstones && h.change_type == "DELETE";
    let mut out = Vec::with_capacity(h.record_ids.len() * if tombstones { 2 } else { 1 });
    for id in &h.record_ids {
        out.push(OutRecord {
            object: h.entity_name.clone(),
            key: id.clone(),
            value: Some(envelope(&h.change_type, &h.entity_name, id, tail)),
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
    let record = serde_json::to_vec(&event.record).expect("serializing JSON values cannot fail");
    let mut tail = Vec::new();
    match &event.header {
        Some(h) => {
            let change = ChangeTail {
                header: h,
                changed: &mut h.changed_fields.iter().map(String::as_str),
                nulled: &mut h.nulled_fields.iter().map(String::as_str),
                diff: &mut h.diff_fields.iter().map(String::as_str),
            };
            write_tail(
                &mut tail,
                &record,
                Some(change),
                Some(h.commit_timestamp),
                &source,
            );
        }
        None => write_tail(&mut tail, &record, None, event.created_date, &source),
    }
    records(raw, event.header.as_ref(), &tail, replay_hex, opts)
}

/// The `changeOrigin` and `commitUser` of a change event, for echo detection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    pub change_origin: Option<String>,
    pub commit_user: String,
}

/// One event decoded straight into its Kafka records.
#[derive(Debug)]
pub struct Encoded {
    pub records: Vec<OutRecord>,
    /// `None` for a Platform Event.
    pub commit: Option<Commit>,
}

/// Decodes one event and builds its Kafka records in one pass: the envelope's JSON is written
/// straight from the Avro bytes into `scratch`'s buffers (no intermediate values), and copied
/// once per record. The records are those [`to_records`] makes of [`decode`]'s result, except
/// that the fields of `record` (and of its compound fields) come in schema order.
pub fn encode(
    schema: &EventSchema,
    raw: &RawEvent<'_>,
    opts: &EnvelopeOptions,
    scratch: &mut Scratch,
) -> Result<Encoded, DecodeError> {
    let parsed = read_event(schema, raw.payload, scratch)?;
    let replay_hex = hex::encode(raw.replay_id);
    let source = Source {
        channel: raw.channel,
        replay_id: &replay_hex,
        event_id: raw.event_id,
        schema_id: raw.schema_id,
    };
    let t = &schema.layout.fields;
    let Scratch {
        body,
        tail,
        changed,
        nulled,
        diff,
        ..
    } = scratch;
    tail.clear();
    match &parsed.header {
        Some(h) => {
            let change = ChangeTail {
                header: h,
                changed: &mut changed.iter().map(|&f| t.name(f)),
                nulled: &mut nulled.iter().map(|&f| t.name(f)),
                diff: &mut diff.iter().map(|&f| t.name(f)),
            };
            write_tail(tail, body, Some(change), Some(h.commit_timestamp), &source);
        }
        None => write_tail(tail, body, None, parsed.created_date, &source),
    }
    let records = records(raw, parsed.header.as_ref(), tail, replay_hex, opts);
    Ok(Encoded {
        records,
        commit: parsed.header.map(|h| Commit {
            change_origin: h.change_origin,
            commit_user: h.commit_user,
        }),
    })
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
