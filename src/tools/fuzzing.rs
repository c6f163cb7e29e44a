//! Fuzz target bodies, shared by the cargo-fuzz targets (`fuzz/fuzz_targets/*.rs`) and the short
//! fuzz run of the tests (`tests/fuzz_short.rs`). Not part of forcebridge's API.
//!
//! Contract of every target function: it takes arbitrary bytes, drives the same public functions
//! the pipeline uses, and returns [`Outcome::Accepted`] when the input was taken as valid and
//! [`Outcome::Rejected`] when it was refused with an error. It **panics** (a fuzzer finding)
//! when the code under test panics or when an oracle disagrees with what it returned:
//!
//! * [`cdc_decode`]: first byte = schema ([`fixture`]: Account, Contact change events,
//!   `Order_Event__e`; bit 7: tombstones on), the rest = the Avro payload. What [`cdc::decode`]
//!   accepts must be a datum `apache_avro` reads to the last byte with the same values, header
//!   fields and bitmap expansions (checked against [`reference_expand`], written from the
//!   simulator's schema catalog rather than the decoder's tables); the records of
//!   [`cdc::to_records`] must be JSON with the decoded record and one key per record id. What it
//!   refuses must not be a canonical datum (one that `apache_avro` reads and re-encodes to the
//!   same bytes) unless the header or a bitmap is at fault, and a bitmap refusal must be one the
//!   reference refuses too.
//! * [`bitmap`]: first byte = schema, the rest = bitmap elements separated by `,` (lossy
//!   UTF-8). [`cdc::expand_bitmaps`] must agree with [`reference_expand`], and its errors must
//!   name the offending element.
//! * [`writeback_message`]: first byte = flags, then optional headers, then the value (layout on
//!   the function). [`sink::message::parse`] runs with a realistic sink config; an accepted
//!   message must satisfy the documented contract of `WriteOp`.

#![doc(hidden)]

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use apache_avro::types::Value as Avro;
use serde_json::{Map, Value, json};

use crate::config::{SinkObjectConfig, is_api_name};
use crate::sim::catalog::{
    ACCOUNT_CHANGE_EVENT, CONTACT_CHANGE_EVENT, FieldKind, HEADER_FIELD, ORDER_EVENT, SchemaVersion,
};
use crate::sink::message::{self, OpKind, ParseOptions, Target, WriteOp};
use crate::source::cdc::schema::EventSchema;
use crate::source::cdc::{self, DecodeError, DecodedEvent, EnvelopeOptions, RawEvent};

/// What a target made of one input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Decoded / parsed successfully.
    Accepted,
    /// Refused with an error (the dead-letter path).
    Rejected,
}

/// The fuzz targets by name (the `fuzz/fuzz_targets/<name>.rs` files).
pub const TARGETS: [&str; 3] = ["cdc_decode", "bitmap", "writeback_message"];

/// Runs target `name` on `data`; `None` for an unknown name.
pub fn run(name: &str, data: &[u8]) -> Option<Outcome> {
    Some(match name {
        "cdc_decode" => cdc_decode(data),
        "bitmap" => bitmap(data),
        "writeback_message" => writeback_message(data),
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------------------
// Schemas
// ---------------------------------------------------------------------------------------------

/// One of the bundled event schemas (`schemas/*.avsc`), as the pipeline and the simulator see it.
#[derive(Debug)]
pub struct Fixture {
    /// The Pub/Sub channel its events arrive on.
    pub channel: &'static str,
    /// As the pipeline parses it (compiled decoder, field tables).
    pub schema: EventSchema,
    /// As the simulator's catalog parses it (field positions, compound children).
    pub catalog: Arc<SchemaVersion>,
}

/// The bundled schemas; the selector byte of [`cdc_decode`] and [`bitmap`] indexes this
/// (modulo its length).
pub fn fixtures() -> &'static [Fixture] {
    static FIXTURES: OnceLock<Vec<Fixture>> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        // Corrupt length prefixes must not make the oracle allocate: no payload here is large.
        apache_avro::util::max_allocation_bytes(1 << 20);
        [
            ("/data/AccountChangeEvent", ACCOUNT_CHANGE_EVENT),
            ("/data/ContactChangeEvent", CONTACT_CHANGE_EVENT),
            ("/event/Order_Event__e", ORDER_EVENT),
        ]
        .into_iter()
        .map(|(channel, json)| {
            let catalog = SchemaVersion::parse(json).expect("bundled schema parses (simulator)");
            let schema =
                EventSchema::parse(catalog.id.clone(), json).expect("bundled schema parses");
            Fixture {
                channel,
                schema,
                catalog,
            }
        })
        .collect()
    })
}

/// The fixture a selector byte names (bit 7 is a flag, not part of the index).
pub fn fixture(selector: u8) -> &'static Fixture {
    let all = fixtures();
    &all[usize::from(selector & 0x7f) % all.len()]
}

// ---------------------------------------------------------------------------------------------
// Reference bitmap expansion
// ---------------------------------------------------------------------------------------------

/// The bitmap rules (facts §11.4) implemented a second time, naively, over the simulator's
/// catalog: `0x<hex>` names top-level fields by position (bit 0 = least significant bit of the
/// last digit; position 0 of a change event is `ChangeEventHeader`), `<N>-0x<hex>` names the
/// children of the compound field at position `N` as `Parent.Child`. `None` when any element is
/// malformed or names a field the schema does not have.
pub fn reference_expand(catalog: &SchemaVersion, bitmaps: &[String]) -> Option<Vec<String>> {
    let mut out = Vec::new();
    for element in bitmaps {
        let (position, hex) = match element.split_once('-') {
            Some((pos, hex)) => {
                if pos.is_empty() || !pos.chars().all(|c| c.is_ascii_digit()) {
                    return None;
                }
                (Some(pos.parse::<usize>().ok()?), hex)
            }
            None => (None, element.as_str()),
        };
        let digits = hex.strip_prefix("0x").or_else(|| hex.strip_prefix("0X"))?;
        if digits.is_empty() {
            return None;
        }
        let mut bits = Vec::new();
        for (k, c) in digits.chars().rev().enumerate() {
            let v = c.to_digit(16)?;
            for b in 0..4 {
                if v >> b & 1 == 1 {
                    bits.push(k * 4 + b);
                }
            }
        }
        match position {
            None => {
                for bit in bits {
                    if bit == 0 && catalog.is_change_event {
                        out.push(HEADER_FIELD.to_owned());
                    } else {
                        let f = catalog.fields.iter().find(|f| f.position == bit)?;
                        out.push(f.name.clone());
                    }
                }
            }
            Some(p) => {
                let f = catalog.fields.iter().find(|f| f.position == p)?;
                let FieldKind::Compound(children) = &f.kind else {
                    return None;
                };
                for bit in bits {
                    let (child, _) = children.get(bit)?;
                    out.push(format!("{}.{child}", f.name));
                }
            }
        }
    }
    Some(out)
}

// ---------------------------------------------------------------------------------------------
// cdc_decode
// ---------------------------------------------------------------------------------------------

/// Target `cdc_decode`: `[selector, payload...]`; see the module docs.
pub fn cdc_decode(data: &[u8]) -> Outcome {
    let Some((&selector, payload)) = data.split_first() else {
        return Outcome::Rejected;
    };
    let fx = fixture(selector);
    let tombstones = selector & 0x80 != 0;
    let ours = cdc::decode(&fx.schema, payload);
    // apache-avro reads from a slice; what it leaves is what it did not consume.
    let mut rest = payload;
    let theirs = apache_avro::from_avro_datum(&fx.schema.schema, &mut rest, None);
    match ours {
        Ok(event) => {
            let theirs = match theirs {
                Ok(v) => v,
                Err(e) => panic!("decoded a payload apache-avro refuses ({e}): {payload:?}"),
            };
            assert!(
                rest.is_empty(),
                "decoded a payload with {} bytes apache-avro does not read",
                rest.len()
            );
            check_against_apache(fx, &event, &theirs);
            check_records(fx, payload, &event, tombstones);
            Outcome::Accepted
        }
        Err(err) => {
            let raw = RawEvent {
                channel: fx.channel,
                replay_id: &[1],
                event_id: "e",
                schema_id: &fx.schema.id,
                payload,
            };
            let opts = EnvelopeOptions { tombstones };
            match cdc::encode(&fx.schema, &raw, &opts, &mut cdc::Scratch::default()) {
                Ok(_) => panic!("encode accepts what decode refuses ({err})"),
                Err(e) => assert_eq!(e.to_string(), err.to_string(), "encode's refusal"),
            }
            check_refusal(fx, payload, &err, theirs.ok().filter(|_| rest.is_empty()));
            Outcome::Rejected
        }
    }
}

/// The fields of an apache-avro record by name (unions unwrapped).
fn avro_fields(v: &Avro) -> BTreeMap<&str, &Avro> {
    let Avro::Record(fields) = unwrap_union(v) else {
        panic!("apache-avro read a record schema as {v:?}");
    };
    fields
        .iter()
        .map(|(n, v)| (n.as_str(), unwrap_union(v)))
        .collect()
}

fn unwrap_union(v: &Avro) -> &Avro {
    match v {
        Avro::Union(_, inner) => inner,
        v => v,
    }
}

/// JSON with every `null` member removed and objects left empty by that removed too: the
/// envelope's "fields that carry a value" rule, applied to both sides before comparing.
fn carried(v: Value) -> Option<Value> {
    match v {
        Value::Null => None,
        Value::Object(m) => {
            let m: Map<String, Value> = m
                .into_iter()
                .filter_map(|(k, v)| carried(v).map(|v| (k, v)))
                .collect();
            (!m.is_empty()).then_some(Value::Object(m))
        }
        v => Some(v),
    }
}

fn avro_strings(v: &Avro, what: &str) -> Vec<String> {
    match unwrap_union(v) {
        Avro::Array(items) => items
            .iter()
            .map(|i| match unwrap_union(i) {
                Avro::String(s) => s.clone(),
                other => panic!("{what}: not a string: {other:?}"),
            })
            .collect(),
        other => panic!("{what}: not an array: {other:?}"),
    }
}

fn avro_string(v: &Avro) -> String {
    match unwrap_union(v) {
        Avro::String(s) | Avro::Enum(_, s) => s.clone(),
        other => panic!("not a string: {other:?}"),
    }
}

fn avro_long(v: &Avro) -> i64 {
    match unwrap_union(v) {
        Avro::Int(i) => i64::from(*i),
        Avro::Long(i) => *i,
        other => panic!("not an int or long: {other:?}"),
    }
}

/// The decoded event carries exactly the values apache-avro reads from the same bytes.
fn check_against_apache(fx: &Fixture, event: &DecodedEvent, theirs: &Avro) {
    let fields = avro_fields(theirs);
    let mut body = Map::new();
    for (name, v) in &fields {
        if *name != HEADER_FIELD || !fx.catalog.is_change_event {
            body.insert((*name).to_owned(), crate::sim::org::avro_to_json(v));
        }
    }
    let ours = carried(Value::Object(event.record.clone()));
    assert_eq!(
        ours,
        carried(Value::Object(body)),
        "record differs from apache-avro's reading"
    );
    // Every record key is a body field.
    for k in event.record.keys() {
        assert!(
            fx.catalog.field(k).is_some(),
            "record carries `{k}`, not a body field"
        );
    }
    let created = fields.get("CreatedDate").and_then(|v| match v {
        Avro::Long(i) => Some(*i),
        _ => None,
    });
    assert_eq!(event.created_date, created, "CreatedDate");

    let Some(h) = &event.header else {
        assert!(!fx.catalog.is_change_event, "change event without header");
        return;
    };
    assert!(fx.catalog.is_change_event, "platform event with a header");
    let hf = avro_fields(fields[HEADER_FIELD]);
    assert_eq!(h.entity_name, avro_string(hf["entityName"]));
    assert_eq!(h.record_ids, avro_strings(hf["recordIds"], "recordIds"));
    assert!(!h.record_ids.is_empty(), "no record ids");
    assert_eq!(h.change_type, avro_string(hf["changeType"]));
    let origin = avro_string(hf["changeOrigin"]);
    assert_eq!(h.change_origin, (!origin.is_empty()).then_some(origin));
    assert_eq!(h.transaction_key, avro_string(hf["transactionKey"]));
    assert_eq!(
        i64::from(h.sequence_number),
        avro_long(hf["sequenceNumber"])
    );
    assert_eq!(h.commit_timestamp, avro_long(hf["commitTimestamp"]));
    assert_eq!(h.commit_number, avro_long(hf["commitNumber"]));
    assert_eq!(h.commit_user, avro_string(hf["commitUser"]));
    for (name, ours) in [
        ("changedFields", &h.changed_fields),
        ("nulledFields", &h.nulled_fields),
        ("diffFields", &h.diff_fields),
    ] {
        let raw = avro_strings(hf[name], name);
        let reference = reference_expand(&fx.catalog, &raw);
        assert_eq!(
            Some(ours),
            reference.as_ref(),
            "{name} {raw:?} expanded differently from the reference"
        );
    }
    // Every nulled field is in the record: as null, or with the value the body carries.
    for name in &h.nulled_fields {
        if name == HEADER_FIELD {
            continue;
        }
        let present = match name.split_once('.') {
            None => event.record.contains_key(name),
            Some((parent, child)) => match event.record.get(parent) {
                Some(Value::Object(m)) => m.contains_key(child),
                Some(Value::Null) | None => false,
                // A non-record variant of a compound field is kept as it is.
                Some(_) => true,
            },
        };
        assert!(present, "nulled field `{name}` is not in the record");
    }
}

/// The Kafka records of an accepted event: one per record id (plus a tombstone after each
/// `DELETE` when asked), JSON envelopes carrying the decoded record.
fn check_records(fx: &Fixture, payload: &[u8], event: &DecodedEvent, tombstones: bool) {
    let raw = RawEvent {
        channel: fx.channel,
        replay_id: &[0, 0, 0, 0, 0, 0, 1, 0x42],
        event_id: "9b77cea1-a923-4766-ad50-a1797d9b39fd",
        schema_id: &fx.schema.id,
        payload,
    };
    let opts = EnvelopeOptions { tombstones };
    let records = cdc::to_records(&raw, event, &opts);
    // The pipeline's one-pass encoder makes the same records (field order aside).
    let encoded = cdc::encode(&fx.schema, &raw, &opts, &mut cdc::Scratch::default())
        .expect("encode accepts what decode accepts");
    assert_eq!(encoded.records.len(), records.len(), "encode: record count");
    for (ours, theirs) in encoded.records.iter().zip(&records) {
        assert_eq!(
            (&ours.key, &ours.object, &ours.operation, &ours.headers),
            (
                &theirs.key,
                &theirs.object,
                &theirs.operation,
                &theirs.headers
            ),
            "encode: key, object, operation and headers"
        );
        let parse = |v: &Option<Vec<u8>>| {
            v.as_deref()
                .map(|v| serde_json::from_slice::<Value>(v).expect("the envelope is JSON"))
        };
        assert_eq!(parse(&ours.value), parse(&theirs.value), "encode: envelope");
    }
    match (&encoded.commit, &event.header) {
        (None, None) => {}
        (Some(c), Some(h)) => {
            assert_eq!(c.change_origin, h.change_origin);
            assert_eq!(c.commit_user, h.commit_user);
        }
        _ => panic!("encode and decode disagree on the event kind"),
    }
    let (ids, operation, object): (Vec<&str>, &str, &str) = match &event.header {
        Some(h) => (
            h.record_ids.iter().map(String::as_str).collect(),
            &h.change_type,
            &h.entity_name,
        ),
        None => (
            vec![raw.event_id],
            cdc::OPERATION_EVENT,
            fx.channel.trim_start_matches("/event/"),
        ),
    };
    let with_tombstones = tombstones && event.header.is_some() && operation == "DELETE";
    let per_id = if with_tombstones { 2 } else { 1 };
    assert_eq!(records.len(), ids.len() * per_id, "one record per id");
    for (i, r) in records.iter().enumerate() {
        let id = ids[i / per_id];
        assert_eq!(r.key, id);
        assert_eq!(r.object, object);
        assert_eq!(r.operation, operation);
        assert!(
            r.headers
                .iter()
                .any(|(k, v)| *k == cdc::HEADER_CHANGE_TYPE && v == operation)
        );
        let Some(value) = &r.value else {
            assert!(with_tombstones && i % 2 == 1, "unexpected tombstone");
            continue;
        };
        let v: Value = serde_json::from_slice(value).expect("the envelope is JSON");
        assert_eq!(v["operation"], json!(operation));
        assert_eq!(v["object"], json!(object));
        assert_eq!(v["id"], json!(id));
        // Compared as text: serde_json's default float parsing may be one ulp off, the
        // envelope's shortest round-trip text is not.
        let record = format!(
            "\"record\":{}",
            serde_json::to_string(&event.record).expect("JSON values serialize")
        );
        assert!(
            value.windows(record.len()).any(|w| w == record.as_bytes()),
            "the envelope does not carry the decoded record"
        );
        assert!(v["record"].is_object());
        assert_eq!(v["source"]["schema_id"], json!(fx.schema.id));
        if let Some(h) = &event.header {
            assert_eq!(v["changed_fields"], json!(h.changed_fields));
            assert_eq!(v["nulled_fields"], json!(h.nulled_fields));
            assert_eq!(v["commit_number"], json!(h.commit_number));
        }
    }
}

/// A refused payload: the error is a dead-letter reason, and the refusal is justified.
/// `theirs`: apache-avro's reading when it consumed every byte.
fn check_refusal(fx: &Fixture, payload: &[u8], err: &DecodeError, theirs: Option<Avro>) {
    assert!(!err.to_string().is_empty());
    assert!(matches!(err.stage(), "decode" | "bitmap"));
    match err {
        DecodeError::Avro { offset, .. } => {
            assert!(*offset <= payload.len(), "offset {offset} past the payload");
            // A canonical datum (read and re-encoded to the same bytes) is valid Avro.
            if let Some(v) = theirs
                && apache_avro::to_avro_datum(&fx.schema.schema, v)
                    .is_ok_and(|bytes| bytes == payload)
            {
                panic!("refused a canonical datum: {err}");
            }
        }
        DecodeError::Bitmap { field, source } => {
            let theirs = theirs.expect("a bitmap error needs a readable datum");
            let hf = avro_fields(avro_fields(&theirs)[HEADER_FIELD]);
            let raw = avro_strings(hf[*field], field);
            assert_eq!(
                reference_expand(&fx.catalog, &raw),
                None,
                "{field} {raw:?} refused ({source}) but the reference expands it"
            );
        }
        DecodeError::MissingHeaderField { field } => {
            if let Some(theirs) = theirs {
                let hf = avro_fields(avro_fields(&theirs)[HEADER_FIELD]);
                // The bundled schemas declare every header field non-null: only empty ids.
                assert_eq!(*field, "recordIds");
                assert!(avro_strings(hf["recordIds"], field).is_empty());
            }
        }
        DecodeError::HeaderFieldType { field, .. } => {
            panic!("bundled schemas give `{field}` its expected type: {err}")
        }
    }
}

// ---------------------------------------------------------------------------------------------
// bitmap
// ---------------------------------------------------------------------------------------------

/// Target `bitmap`: `[selector, elements separated by ','...]`; see the module docs.
pub fn bitmap(data: &[u8]) -> Outcome {
    let Some((&selector, text)) = data.split_first() else {
        return Outcome::Rejected;
    };
    let fx = fixture(selector);
    let text = String::from_utf8_lossy(text);
    let elements: Vec<String> = if text.is_empty() {
        Vec::new()
    } else {
        text.split(',').map(str::to_owned).collect()
    };
    let ours = cdc::expand_bitmaps(&elements, &fx.schema);
    let reference = reference_expand(&fx.catalog, &elements);
    match ours {
        Ok(names) => {
            assert_eq!(
                Some(&names),
                reference.as_ref(),
                "{elements:?} expanded differently from the reference"
            );
            Outcome::Accepted
        }
        Err(e) => {
            assert_eq!(
                reference, None,
                "{elements:?} refused ({e}) but the reference expands it"
            );
            let message = e.to_string();
            assert!(
                elements
                    .iter()
                    .any(|el| message.contains(&format!("{el:?}"))),
                "the error does not name the element: {message}"
            );
            Outcome::Rejected
        }
    }
}

// ---------------------------------------------------------------------------------------------
// writeback_message
// ---------------------------------------------------------------------------------------------

/// The `sink.objects` section the write-back target parses with (as in README's example).
pub const SINK_OBJECTS_YAML: &str = "\
Account:
  external_id_field: External_Id__c
  field_map: { customer_name: Name, phone_number: Phone }
  ignore_fields: [Internal__c]
Contact:
  external_id_field: Email_Key__c
  field_map: { last: LastName }
Order__c: {}
";

fn sink_objects() -> &'static BTreeMap<String, SinkObjectConfig> {
    static OBJECTS: OnceLock<BTreeMap<String, SinkObjectConfig>> = OnceLock::new();
    OBJECTS.get_or_init(|| {
        serde_yaml::from_str(SINK_OBJECTS_YAML).expect("the fuzz sink config parses")
    })
}

/// Flag bits of the first byte of a `writeback_message` input.
pub const WB_NO_VALUE: u8 = 1;
/// Last-write-wins on.
pub const WB_LAST_WRITE_WINS: u8 = 2;
/// Headers follow: a length byte `n`, then `n` bytes `object-header \n operation-header`.
pub const WB_HEADERS: u8 = 4;

/// Encodes a `writeback_message` input (the inverse of what the target reads).
pub fn writeback_input(
    value: Option<&[u8]>,
    last_write_wins: bool,
    headers: Option<(&[u8], &[u8])>,
) -> Vec<u8> {
    let mut flags = 0;
    if value.is_none() {
        flags |= WB_NO_VALUE;
    }
    if last_write_wins {
        flags |= WB_LAST_WRITE_WINS;
    }
    let mut out = vec![flags];
    if let Some((object, operation)) = headers {
        out[0] |= WB_HEADERS;
        let mut h = object.to_vec();
        h.push(b'\n');
        h.extend_from_slice(operation);
        h.truncate(255);
        out.push(h.len() as u8);
        out.extend_from_slice(&h);
    }
    out.extend_from_slice(value.unwrap_or_default());
    out
}

/// Target `writeback_message`: `[flags, (len, headers...)?, value...]` (see [`writeback_input`]).
pub fn writeback_message(data: &[u8]) -> Outcome {
    let Some((&flags, mut rest)) = data.split_first() else {
        return Outcome::Rejected;
    };
    let mut object_header: &[u8] = &[];
    let mut operation_header: &[u8] = &[];
    let with_headers = flags & WB_HEADERS != 0;
    if with_headers && let Some((&n, tail)) = rest.split_first() {
        let n = usize::from(n).min(tail.len());
        let (h, tail) = tail.split_at(n);
        rest = tail;
        match h.iter().position(|&b| b == b'\n') {
            Some(i) => (object_header, operation_header) = (&h[..i], &h[i + 1..]),
            None => object_header = h,
        }
    }
    let headers: Vec<(&str, &[u8])> = if with_headers {
        vec![
            (message::HEADER_OBJECT, object_header),
            (message::HEADER_OPERATION, operation_header),
        ]
    } else {
        Vec::new()
    };
    let value = (flags & WB_NO_VALUE == 0).then_some(rest);
    let opts = ParseOptions {
        objects: sink_objects(),
        last_write_wins: flags & WB_LAST_WRITE_WINS != 0,
    };
    match message::parse(value, &headers, opts) {
        Ok(op) => {
            check_write_op(&op, opts);
            Outcome::Accepted
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
            // Errors name the field; only an unknown key may itself be empty (`""`).
            if let message::MessageError::Invalid { field, message } = &e {
                assert!(
                    !field.is_empty() || message.starts_with("unknown key"),
                    "an error without a field: {e}"
                );
            }
            Outcome::Rejected
        }
    }
}

/// The `WriteOp` contract of `sink::message`.
fn check_write_op(op: &WriteOp, opts: ParseOptions<'_>) {
    assert!(is_api_name(&op.object), "object `{}`", op.object);
    let settings = opts
        .objects
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(&op.object));
    if let Some((name, _)) = settings {
        assert_eq!(&op.object, name, "the configured spelling of the object");
    }
    match (&op.kind, &op.target) {
        (OpKind::Insert, Target::New) => {}
        (OpKind::Upsert, Target::External { .. }) => {}
        (OpKind::Update | OpKind::Delete, Target::Id(_) | Target::External { .. }) => {}
        (kind, target) => panic!("{kind:?} with target {target:?}"),
    }
    match &op.target {
        Target::Id(id) => assert!(crate::salesforce::sfid::is_well_formed(id), "id `{id}`"),
        Target::External { field, value } => {
            assert!(is_api_name(field), "external id field `{field}`");
            assert!(!value.is_empty(), "empty external id");
        }
        Target::New => {}
    }
    if op.kind == OpKind::Delete {
        assert!(op.fields.is_empty(), "a delete carries no fields");
    } else {
        assert!(!op.fields.is_empty(), "{:?} without fields", op.kind);
    }
    if opts.last_write_wins && op.kind != OpKind::Insert {
        assert!(op.timestamp.is_some(), "last-write-wins needs a timestamp");
    }
    for name in op.fields.keys() {
        assert!(is_api_name(name), "field `{name}`");
        assert!(
            !name.eq_ignore_ascii_case("id") && name != "attributes",
            "writes `{name}`"
        );
        if let Some((_, s)) = settings {
            assert!(!s.ignore_fields.contains(name), "ignored `{name}` written");
        }
    }
    if op.kind == OpKind::Insert {
        assert_eq!(op.order_key().is_some(), op.insert_key.is_some());
    } else {
        assert!(op.order_key().is_some(), "writes to a record are ordered");
        assert!(op.insert_key.is_none());
    }
}

// ---------------------------------------------------------------------------------------------
// Seeds
// ---------------------------------------------------------------------------------------------

/// One seed input: target, file name (under `fuzz/corpus/<target>/`), bytes.
#[derive(Debug, Clone)]
pub struct Seed {
    pub target: &'static str,
    pub name: String,
    pub data: Vec<u8>,
}

/// The seed corpus: real change events encoded by the simulated org (create, update with
/// nulled and nested fields, delete, undelete, merged multi-record events, a platform event),
/// their bitmaps, and the README's write-back messages. Deterministic (fixed clock and keys).
pub fn seeds() -> Result<Vec<Seed>, crate::sim::SimError> {
    use crate::sim::org::{self, CommitContext, FieldCheck, Op, Org};

    const USER: &str = "005SIM000000001AAA";
    const NOW: i64 = 1_763_892_900_000;
    let obj = |v: Value| match v {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    let mut org = Org::new()?;
    let mut events = Vec::new();
    let mut commit = |org: &mut Org, ops: Vec<Op>, origin: &str| {
        let changes = org.commit(&ops, USER, NOW)?;
        let ctx = CommitContext {
            origin: origin.to_owned(),
            user: USER.to_owned(),
            timestamp: NOW,
            commit_number: org.next_commit_number(),
            transaction_key: "000046c7-a642-11e2-c29b-229c6786473e".to_owned(),
        };
        for e in org.build_events(changes, &ctx)? {
            events.push((e.entity, e.event.payload));
        }
        Ok::<_, crate::sim::SimError>(())
    };
    let rest = "com/salesforce/api/rest/62.0";
    let tagged = "com/salesforce/api/rest/62.0;client=forcebridge";

    let a = org.reserve_id("Account")?;
    let b = org.reserve_id("Account")?;
    let c = org.reserve_id("Account")?;
    let create = |object: &str, id: &str, fields: Value| Op::Create {
        object: object.to_owned(),
        id: id.to_owned(),
        fields: obj(fields),
    };
    let update = |object: &str, id: &str, fields: Value| Op::Update {
        object: object.to_owned(),
        id: id.to_owned(),
        fields: obj(fields),
    };
    commit(
        &mut org,
        vec![create(
            "Account",
            &a,
            json!({"Name": "Acme", "Phone": "+1 555 0100", "AnnualRevenue": 1.5e6,
                   "NumberOfEmployees": 120, "External_Id__c": "ERP-1042",
                   "BillingAddress": {"City": "Paris", "Country": "France", "Latitude": 48.85}}),
        )],
        rest,
    )?;
    commit(
        &mut org,
        vec![update(
            "Account",
            &a,
            json!({"Name": "Acme Corp", "Phone": null,
                   "BillingAddress": {"City": "Lyon", "Country": null}}),
        )],
        tagged,
    )?;
    commit(
        &mut org,
        vec![
            create("Account", &b, json!({"Name": "Beta"})),
            create("Account", &c, json!({"Name": "Gamma"})),
        ],
        rest,
    )?;
    commit(
        &mut org,
        vec![
            update("Account", &b, json!({"Rating": "Hot"})),
            update("Account", &c, json!({"Rating": "Hot"})),
        ],
        rest,
    )?;
    let ct = org.reserve_id("Contact")?;
    commit(
        &mut org,
        vec![create(
            "Contact",
            &ct,
            json!({"Name": {"FirstName": "Ada", "LastName": "Lovelace"}, "AccountId": a,
                   "HasOptedOutOfEmail": true, "Birthdate": -4_906_368_000_000_i64,
                   "MailingAddress": {"Street": "12 St James's Sq", "City": "London"}}),
        )],
        rest,
    )?;
    commit(
        &mut org,
        vec![update(
            "Contact",
            &ct,
            json!({"Name": {"FirstName": null}, "Email": "ada@example.com", "Title": null}),
        )],
        rest,
    )?;
    let delete = |object: &str, id: &str| Op::Delete {
        object: object.to_owned(),
        id: id.to_owned(),
    };
    commit(&mut org, vec![delete("Account", &a)], rest)?;
    commit(
        &mut org,
        vec![Op::Undelete {
            object: "Account".to_owned(),
            id: a.clone(),
        }],
        rest,
    )?;
    commit(&mut org, vec![delete("Contact", &ct)], rest)?;

    let mut out = Vec::new();
    let selector = |entity: &str| match entity {
        "Account" => 0u8,
        "Contact" => 1,
        _ => 2,
    };
    let fx = fixtures();
    for (i, (entity, payload)) in events.iter().enumerate() {
        let sel = selector(entity);
        let mut data = vec![sel | if i % 2 == 1 { 0x80 } else { 0 }];
        data.extend_from_slice(payload);
        out.push(Seed {
            target: "cdc_decode",
            name: format!("{i:02}-{entity}"),
            data,
        });
        // The event's own bitmaps as `bitmap` seeds.
        let mut r = &payload[..];
        let datum = apache_avro::from_avro_datum(&fx[usize::from(sel)].schema.schema, &mut r, None)
            .map_err(|e| crate::sim::SimError::Encode(e.to_string()))?;
        let hf = avro_fields(avro_fields(&datum)[HEADER_FIELD]);
        for name in ["changedFields", "nulledFields"] {
            let bitmaps = avro_strings(hf[name], name);
            if !bitmaps.is_empty() {
                let mut data = vec![sel];
                data.extend_from_slice(bitmaps.join(",").as_bytes());
                out.push(Seed {
                    target: "bitmap",
                    name: format!("{i:02}-{entity}-{name}"),
                    data,
                });
            }
        }
    }
    let order = org
        .platform_event_schema("Order_Event__e")
        .ok_or_else(|| crate::sim::SimError::UnknownObject("Order_Event__e".into()))?;
    for (i, fields) in [
        json!({"CreatedDate": NOW, "CreatedById": USER, "Order_Number__c": "ORD-1",
               "Amount__c": 12.5, "Status__c": "Placed", "Quantity__c": 3.0}),
        json!({"CreatedDate": NOW, "CreatedById": USER}),
    ]
    .into_iter()
    .enumerate()
    {
        let values =
            org::normalize_fields(&order, "Order_Event__e", &obj(fields), FieldCheck::Event)?;
        let mut data = vec![2u8];
        data.extend_from_slice(&org::encode_body(&order, None, &values)?);
        out.push(Seed {
            target: "cdc_decode",
            name: format!("order-{i}"),
            data,
        });
    }
    for (name, sel, text) in [
        ("doc-vector", 0u8, "0x46,4-0x02"),
        ("compound-only", 1, "0x00,1-0x06,3-0x1"),
        ("platform-event", 2, "0x7F"),
    ] {
        let mut data = vec![sel];
        data.extend_from_slice(text.as_bytes());
        out.push(Seed {
            target: "bitmap",
            name: name.to_owned(),
            data,
        });
    }

    /// Name, value, last-write-wins, (object, operation) headers.
    type Message = (
        &'static str,
        Value,
        bool,
        Option<(&'static str, &'static str)>,
    );
    let messages: [Message; 8] = [
        (
            "upsert",
            json!({"object": "Account", "operation": "upsert",
                   "timestamp": "2026-11-23T10:15:00.000Z",
                   "fields": {"External_Id__c": "ERP-1042", "Name": "Acme", "Phone": null}}),
            true,
            None,
        ),
        (
            "update-by-id",
            json!({"object": "Account", "operation": "update", "id": "001SIM000000001AAA",
                   "timestamp": 1_763_892_900_000_i64, "fields": {"Rating": "Hot"}}),
            true,
            None,
        ),
        (
            "insert",
            json!({"object": "Contact", "operation": "insert", "fields": {"last": "Lovelace",
                   "Email_Key__c": "ada-1"}}),
            true,
            None,
        ),
        (
            "delete",
            json!({"object": "Account", "operation": "delete", "id": "001SIM000000001AAA",
                   "timestamp": 1_763_892_900_000_i64}),
            true,
            None,
        ),
        (
            "delete-by-external-id",
            json!({"object": "account", "operation": "DELETE",
                   "timestamp": "2024-01-31T12:05:09.042+0000",
                   "fields": {"External_Id__c": 1042}}),
            true,
            None,
        ),
        (
            "mapped-fields",
            json!({"object": "Account", "operation": "Update",
                   "external_id_field": "External_Id__c",
                   "fields": {"customer_name": "Acme", "phone_number": "+1", "Internal__c": "x",
                              "External_Id__c": "ERP-7"}}),
            false,
            None,
        ),
        (
            "headers",
            json!({"fields": {"Name": "From headers"}, "id": "001SIM000000001"}),
            false,
            Some(("Account", "update")),
        ),
        (
            "unknown-object",
            json!({"object": "Order__c", "operation": "insert", "fields": {"Amount__c": 12.5}}),
            true,
            None,
        ),
    ];
    for (name, value, lww, headers) in messages {
        let bytes = serde_json::to_vec(&value).unwrap_or_default();
        out.push(Seed {
            target: "writeback_message",
            name: name.to_owned(),
            data: writeback_input(
                Some(&bytes),
                lww,
                headers.map(|(o, p)| (o.as_bytes(), p.as_bytes())),
            ),
        });
    }
    out.push(Seed {
        target: "writeback_message",
        name: "tombstone".to_owned(),
        data: writeback_input(None, true, Some((b"Account", b"delete"))),
    });
    Ok(out)
}
