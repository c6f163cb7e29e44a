//! Target `cdc_decode`: the pipeline's decoder and envelope encoder against apache-avro.
//!
//! Contract: [`cdc_decode`] takes `[selector, payload...]` (the selector picks the schema, bit 7
//! turns tombstones on). What [`cdc::decode`] accepts must be a datum apache-avro reads to the last
//! byte with the same values, header fields and bitmap expansions ([`reference_expand`]), and
//! [`cdc::to_records`] and [`cdc::encode`] must make the same records from it; what it refuses
//! [`cdc::encode`] must refuse with the same error, and the refusal must be justified (see
//! [`check_refusal`]). It panics otherwise (a finding). The apache-avro readers here
//! ([`avro_fields`], [`avro_strings`]) serve the seeds too.

use std::collections::BTreeMap;

use apache_avro::types::Value as Avro;
use serde_json::{Map, Value, json};

use crate::kafka::headers::DeadLetterStage;
use crate::sim::catalog::HEADER_FIELD;
use crate::source::cdc::{self, DecodeError, DecodedEvent, EnvelopeOptions, RawEvent};

use super::bitmap::reference_expand;
use super::fixtures::{Fixture, Outcome, fixture};

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
pub(crate) fn avro_fields(v: &Avro) -> BTreeMap<&str, &Avro> {
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

pub(crate) fn avro_strings(v: &Avro, what: &str) -> Vec<String> {
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
                .any(|(k, v)| *k == crate::kafka::headers::CHANGE_TYPE && v == operation)
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
            assert_eq!(v["commit_number"], json!(h.commit_number.to_string()));
        }
    }
}

/// A refused payload: the error is a dead-letter reason, and the refusal is justified.
/// `theirs`: apache-avro's reading when it consumed every byte.
fn check_refusal(fx: &Fixture, payload: &[u8], err: &DecodeError, theirs: Option<Avro>) {
    assert!(!err.to_string().is_empty());
    assert!(matches!(
        err.stage(),
        DeadLetterStage::Decode | DeadLetterStage::Bitmap
    ));
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
