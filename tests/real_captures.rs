//! Conformance with what real orgs send, from public captures (tests/fixtures/real/).
//!
//! `AccountChangeEvent.decoded-example.pozil-node-client-readme.json`: an Account update as the
//! pozil Node Pub/Sub client's README shows it decoded from a real org (bitmaps already expanded
//! by that client; the raw form `["0x400000", "4-0x06"]` follows from the schema, facts §11.4).
//! The bundled schema must match it field for field (then the simulated org's own custom fields),
//! and forcebridge must decode the datum to exactly what the capture says.

use apache_avro::Schema;
use apache_avro::types::Value as Avro;
use serde_json::{Value, json};

use forcebridge::source::cdc::decode;
use forcebridge::source::cdc::schema::EventSchema;

const SCHEMA: &str = include_str!("../schemas/AccountChangeEvent.avsc");
const CAPTURE: &str =
    include_str!("fixtures/real/AccountChangeEvent.decoded-example.pozil-node-client-readme.json");

fn capture() -> Value {
    serde_json::from_str(CAPTURE).expect("the capture is JSON")
}

/// The capture's payload keys, in order (serde_json keeps them sorted, so read them from text).
fn payload_keys_in_order() -> Vec<String> {
    let start = CAPTURE.find("\"payload\"").expect("payload");
    let body = &CAPTURE[start..];
    let mut keys = Vec::new();
    let mut depth = 0;
    for line in body.lines().skip(1) {
        let trimmed = line.trim();
        if depth == 0
            && let Some(rest) = trimmed.strip_prefix('"')
        {
            keys.push(rest.split('"').next().unwrap().to_owned());
        }
        depth += trimmed.matches('{').count() as i32 - trimmed.matches('}').count() as i32;
        if depth < 0 {
            break;
        }
    }
    keys
}

#[test]
fn the_bundled_account_schema_matches_the_capture_field_for_field() {
    let schema: Value = serde_json::from_str(SCHEMA).unwrap();
    let ours: Vec<&str> = schema["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    let captured = payload_keys_in_order();
    // The capture's fields in the capture's order; the simulated org's own custom fields
    // (`External_Id__c`) follow the standard ones, as custom fields do in a real schema.
    assert_eq!(ours[..captured.len()], captured[..]);
    assert!(
        ours[captured.len()..].iter().all(|f| f.ends_with("__c")),
        "{:?}",
        &ours[captured.len()..]
    );
}

/// A JSON value of the capture as the Avro value of `schema` (unions: null or the branch that
/// takes the value).
fn to_avro(schema: &Schema, v: &Value) -> Avro {
    match schema {
        Schema::Union(u) => {
            let (i, branch) = u
                .variants()
                .iter()
                .enumerate()
                .find(|(_, s)| (v.is_null()) == matches!(s, Schema::Null))
                .expect("a branch");
            Avro::Union(i as u32, Box::new(to_avro(branch, v)))
        }
        Schema::Null => Avro::Null,
        Schema::String => Avro::String(v.as_str().unwrap().to_owned()),
        Schema::Int => Avro::Int(v.as_i64().unwrap() as i32),
        Schema::Long => Avro::Long(v.as_i64().unwrap()),
        Schema::Double => Avro::Double(v.as_f64().unwrap()),
        Schema::Boolean => Avro::Boolean(v.as_bool().unwrap()),
        Schema::Array(a) => Avro::Array(
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| to_avro(&a.items, x))
                .collect(),
        ),
        Schema::Enum(e) => {
            let s = v.as_str().unwrap();
            let i = e.symbols.iter().position(|x| x == s).unwrap();
            Avro::Enum(i as u32, s.to_owned())
        }
        Schema::Record(r) => Avro::Record(
            r.fields
                .iter()
                .map(|f| (f.name.clone(), to_avro(&f.schema, &v[&f.name])))
                .collect(),
        ),
        other => panic!("no such type in the capture: {other:?}"),
    }
}

#[test]
fn the_captured_account_update_decodes_as_captured() {
    let capture = capture();
    let mut payload = capture["payload"].clone();
    // The raw bitmaps of the capture's expanded `changedFields`.
    payload["ChangeEventHeader"]["changedFields"] = json!(["0x400000", "4-0x06"]);
    let schema = Schema::parse_str(SCHEMA).unwrap();
    let datum = apache_avro::to_avro_datum(&schema, to_avro(&schema, &payload)).unwrap();

    let ours = EventSchema::parse("a01VpgrsZNJdn-7KStJcxQ", SCHEMA).unwrap();
    let event = decode(&ours, &datum).expect("decodes");
    let header = event.header.expect("a change event");
    let want = &capture["payload"]["ChangeEventHeader"];
    assert_eq!(header.entity_name, want["entityName"]);
    assert_eq!(header.record_ids, ["0014H00002LbR7QQAV"]);
    assert_eq!(header.change_type, want["changeType"]);
    assert_eq!(
        header.change_origin.as_deref(),
        want["changeOrigin"].as_str()
    );
    assert_eq!(header.transaction_key, want["transactionKey"]);
    assert_eq!(i64::from(header.sequence_number), want["sequenceNumber"]);
    assert_eq!(header.commit_timestamp, want["commitTimestamp"]);
    assert_eq!(header.commit_number, want["commitNumber"]);
    assert_eq!(header.commit_user, want["commitUser"]);
    assert_eq!(
        header.changed_fields,
        [
            "LastModifiedDate",
            "BillingAddress.City",
            "BillingAddress.State"
        ]
    );
    assert!(header.nulled_fields.is_empty() && header.diff_fields.is_empty());
    // The record: the fields that carry a value (the envelope rule).
    assert_eq!(
        Value::Object(event.record),
        json!({
            "BillingAddress": {"City": "San Francisco", "State": "CA"},
            "LastModifiedDate": 1_696_444_513_000_i64
        })
    );
}
