//! The envelope: one Kafka record per record Id of a decoded event, with the JSON value and the
//! headers of `ARCHITECTURE.md` ("Kafka record format").
//!
//! Contract: [`to_records`] fans a [`super::DecodedEvent`] out in record-Id order (a tombstone
//! after each `DELETE` when asked; one record keyed by the event id for a Platform Event);
//! [`encode`] decodes and fans out in one pass for the pipeline, writing the part shared by an
//! event's record ids once and copying it per record.

use super::avro;
use super::debezium::Debezium;
use super::debezium_direct::{self as direct, Origin};
use super::decode::{Parsed, Scratch, read_event};
use super::event::{ChangeHeader, DecodeError, DecodedEvent, OutRecord, RawEvent};
use super::schema::EventSchema;
use crate::kafka::headers;

/// Envelope options from the channel config.
#[derive(Debug, Clone, Copy, Default)]
pub struct EnvelopeOptions {
    /// Follow each `DELETE` record with a tombstone (same key, null value).
    pub tombstones: bool,
}

/// Writes one record's value from its Id.
type ValueOf<'a> = &'a dyn Fn(&str) -> Vec<u8>;

/// The operation of a Platform Event record.
pub const OPERATION_EVENT: &str = "EVENT";

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
        // A string: real orgs' commit numbers exceed 2^53 (1698100138468892700, reported in
        // pozil/pub-sub-api-node-client#21 and #25, forcedotcom/pub-sub-api#44), which a JSON
        // reader that keeps numbers as doubles (JavaScript, jq) would round.
        out.extend_from_slice(b",\"commit_number\":\"");
        integer(out, h.commit_number);
        out.push(b'"');
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
    value: Option<ValueOf<'_>>,
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
            value: Some(match value {
                Some(make) => make(id),
                None => envelope(&h.change_type, &h.entity_name, id, tail),
            }),
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
    records(raw, event.header.as_ref(), &tail, replay_hex, opts, None)
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
    /// The change's `commitTimestamp`, or a Platform Event's `CreatedDate`, epoch ms.
    pub at: Option<i64>,
    /// The expanded `diffFields`: fields whose value in `record` is a unified diff (empty for
    /// most events, and for Platform Events).
    pub diff_fields: Vec<String>,
    /// The values are Debezium's already (see [`encode_as`]).
    pub debezium: bool,
}

/// Decodes one event and builds its Kafka records in one pass: the envelope's JSON is written
/// straight from the Avro bytes into `scratch`'s buffers (no intermediate values), and copied
/// once per record. The records are those [`to_records`] makes of [`super::decode`]'s result, except
/// that the fields of `record` (and of its compound fields) come in schema order.
pub fn encode(
    schema: &EventSchema,
    raw: &RawEvent<'_>,
    opts: &EnvelopeOptions,
    scratch: &mut Scratch,
) -> Result<Encoded, DecodeError> {
    encode_as(schema, raw, opts, None, scratch)
}

/// [`encode`], writing Debezium's envelope directly when `debezium` is given and the event's
/// records need no later rewrite (`Encoded::debezium`; `debezium_direct`): a change event that
/// is neither a gap event nor one with `diffFields`. Other events keep forcebridge's envelope,
/// for the stages that rewrite it, and are converted after them.
pub fn encode_as(
    schema: &EventSchema,
    raw: &RawEvent<'_>,
    opts: &EnvelopeOptions,
    debezium: Option<&Debezium>,
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
    let mut op = None;
    if let (Some(d), Some(h)) = (debezium, &parsed.header)
        && direct::direct(h, !diff.is_empty())
    {
        let origin = Origin {
            channel: raw.channel,
            replay_id: &replay_hex,
            event_id: raw.event_id,
            schema_id: raw.schema_id,
        };
        let now = crate::ops::telemetry::unix_millis();
        let changed = &mut changed.iter().map(|&f| t.name(f));
        let nulled = &mut nulled.iter().map(|&f| t.name(f));
        op = direct::write_shared(tail, d, h, changed, nulled, &origin, now);
    }
    let body: &[u8] = body;
    let shared: &[u8] = tail;
    let make = op.map(|op| move |id: &str| direct::value(op, id, body, shared));
    let make = make.as_ref().map(|m| m as ValueOf<'_>);
    if make.is_some() {
        let records = records(raw, parsed.header.as_ref(), &[], replay_hex, opts, make);
        return Ok(finish(parsed, records, Vec::new(), true));
    }
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
    let records = records(raw, parsed.header.as_ref(), tail, replay_hex, opts, None);
    let diff_fields = diff.iter().map(|&f| t.name(f).to_owned()).collect();
    Ok(finish(parsed, records, diff_fields, false))
}

/// The [`Encoded`] of a parsed event and its records.
fn finish(
    parsed: Parsed,
    records: Vec<OutRecord>,
    diff_fields: Vec<String>,
    debezium: bool,
) -> Encoded {
    let at = match &parsed.header {
        Some(h) => Some(h.commit_timestamp),
        None => parsed.created_date,
    };
    Encoded {
        records,
        diff_fields,
        at,
        debezium,
        commit: parsed.header.map(|h| Commit {
            change_origin: h.change_origin,
            commit_user: h.commit_user,
        }),
    }
}

fn headers(
    raw: &RawEvent<'_>,
    replay_hex: String,
    change_type: &str,
    change_origin: Option<&str>,
) -> Vec<(&'static str, String)> {
    let mut h = Vec::with_capacity(6);
    h.push((headers::REPLAY_ID, replay_hex));
    h.push((headers::SCHEMA_ID, raw.schema_id.to_owned()));
    h.push((headers::CHANGE_TYPE, change_type.to_owned()));
    if let Some(o) = change_origin {
        h.push((headers::CHANGE_ORIGIN, o.to_owned()));
    }
    h.push((headers::CHANNEL, raw.channel.to_owned()));
    h.push((headers::EVENT_ID, raw.event_id.to_owned()));
    h
}
