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

use forcebridge::source::cdc::schema::EventSchema;
use forcebridge::source::cdc::{EnvelopeOptions, RawEvent, decode, to_records};

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

// ---------------------------------------------------------------------------------------------
// The raw event of pozil/pub-sub-api-node-client#27 (a custom channel on a real org, 2024-03-01):
// event id, schema id, the 237 payload bytes and the 10-byte replay id, as that client logged them.

const RAW_27: &str =
    include_str!("fixtures/real/ActionVente__c.raw-event.pozil-node-client-27.json");
const REPLAY_36: &str = include_str!("fixtures/real/replay-id.pozil-node-client-36.json");

fn bytes(v: &Value) -> Vec<u8> {
    v["data"]
        .as_array()
        .expect("a Node Buffer")
        .iter()
        .map(|b| u8::try_from(b.as_u64().unwrap()).unwrap())
        .collect()
}

/// The header every change event schema starts with, as the org serves it (the bundled
/// Account schema's).
fn header_schema() -> Value {
    let account: Value = serde_json::from_str(SCHEMA).unwrap();
    account["fields"][0].clone()
}

/// A writer schema for the capture. The capture has no schema, so its body is read off the bytes:
/// after the header come 49 union fields, all `null` (branch 0) but position 7 (a `long` equal to
/// `commitTimestamp`, so `LastModifiedDate`, which every update changes) and position 13 (the
/// string `arstrast`): exactly the two positions of the capture's bitmap `0x2080`. `body` is the number
/// of body fields.
fn schema_27(body: usize) -> String {
    let mut fields = vec![header_schema()];
    for position in 1..=body {
        let (name, ty) = match position {
            7 => ("LastModifiedDate".to_owned(), "long"),
            _ => (format!("Field{position}__c"), "string"),
        };
        fields.push(json!({"name": name, "type": ["null", ty], "default": null}));
    }
    json!({
        "type": "record", "name": "ActionVente__ChangeEvent",
        "namespace": "com.sforce.eventbus", "fields": fields
    })
    .to_string()
}

#[test]
fn the_raw_custom_channel_event_of_node_client_27_decodes_as_captured() {
    let capture: Value = serde_json::from_str(RAW_27).unwrap();
    let event = &capture["event"]["event"];
    let payload = bytes(&event["payload"]);
    assert_eq!(payload.len(), 237);

    let schema = EventSchema::parse(event["schemaId"].as_str().unwrap(), &schema_27(49)).unwrap();
    let decoded = decode(&schema, &payload).expect("decodes");
    let header = decoded.header.expect("a change event");
    assert_eq!(header.entity_name, "ActionVente__c");
    assert_eq!(header.record_ids, ["a21AU000000FSC5YAO"]);
    assert_eq!(header.change_type, "UPDATE");
    assert_eq!(
        header.change_origin.as_deref(),
        Some("com/salesforce/api/soap/60.0;client=SfdcInternalAPI/")
    );
    assert_eq!(
        header.transaction_key,
        "00001983-4fdf-b2cf-3f09-22bfd2e31173"
    );
    assert_eq!(header.sequence_number, 1);
    assert_eq!(header.commit_timestamp, 1_709_303_151_000);
    assert_eq!(header.commit_number, 1_709_303_151_782_928_388);
    assert_eq!(header.commit_user, "0055J000001D89MQAS");
    assert_eq!(header.changed_fields, ["LastModifiedDate", "Field13__c"]);
    assert!(header.nulled_fields.is_empty() && header.diff_fields.is_empty());
    assert_eq!(
        Value::Object(decoded.record),
        json!({"LastModifiedDate": 1_709_303_151_000_i64, "Field13__c": "arstrast"})
    );
    // A real org's datetimes have second precision (issue 18, item 4).
    assert_eq!(header.commit_timestamp % 1000, 0);

    // The decode consumes the payload exactly: one body field fewer leaves a trailing byte,
    // one more runs past the end.
    for body in [48, 50] {
        let wrong = EventSchema::parse("wrong", &schema_27(body)).unwrap();
        assert!(decode(&wrong, &payload).is_err(), "{body} body fields");
    }
}

#[test]
fn the_envelope_carries_the_real_commit_number_and_replay_id_losslessly() {
    let capture: Value = serde_json::from_str(RAW_27).unwrap();
    let event = &capture["event"]["event"];
    let payload = bytes(&event["payload"]);
    let replay_id = bytes(&capture["event"]["replayId"]);
    let schema_id = event["schemaId"].as_str().unwrap();
    let schema = EventSchema::parse(schema_id, &schema_27(49)).unwrap();
    let raw = RawEvent {
        channel: "/data/ActionVente__chn",
        replay_id: &replay_id,
        event_id: event["id"].as_str().unwrap(),
        schema_id,
        payload: &payload,
    };
    let decoded = decode(&schema, &payload).unwrap();
    let out = to_records(&raw, &decoded, &EnvelopeOptions::default());
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].key, "a21AU000000FSC5YAO");
    let envelope: Value = serde_json::from_slice(out[0].value.as_deref().unwrap()).unwrap();
    // 1709303151782928388 > 2^53: as a JSON number, JavaScript and jq would read …8400.
    assert_ne!(
        1_709_303_151_782_928_388_i64 as f64 as i64,
        1_709_303_151_782_928_388
    );
    assert_eq!(envelope["commit_number"], json!("1709303151782928388"));
    assert_eq!(
        envelope["source"]["replay_id"],
        json!("0000000000076f5b0000")
    );
    assert_eq!(envelope["commit_timestamp"], json!(1_709_303_151_000_i64));
}

/// Real replay ids are 10 bytes; the clients' numbers are the first eight, big-endian.
#[test]
fn real_replay_ids_are_ten_bytes() {
    for text in [RAW_27, REPLAY_36] {
        let capture: Value = serde_json::from_str(text).unwrap();
        let replay_id = bytes(&capture["event"]["replayId"]);
        assert_eq!(replay_id.len(), 10);
        let number = u64::from_be_bytes(replay_id[..8].try_into().unwrap());
        assert_eq!(Some(number), capture["replayId"].as_u64());
        assert_eq!(replay_id[8..], [0, 0]);
    }
}

// ---------------------------------------------------------------------------------------------
// The person-account `Name` of the forcedotcom/pub-sub-api Java sample (`utility/EventParser`):
// `["null", "string", Switchable_PersonName]`, a string for a business account and a record
// (whose children the nested bitmap names) for a person account.

fn person_account_schema() -> String {
    let nullable = |name: &str| json!({"name": name, "type": ["null", "string"], "default": null});
    json!({
        "type": "record", "name": "AccountChangeEvent", "namespace": "com.sforce.eventbus",
        "fields": [
            header_schema(),
            {"name": "Name", "type": ["null", "string", {
                "type": "record", "name": "Switchable_PersonName",
                "fields": [nullable("Salutation"), nullable("FirstName"), nullable("LastName")]
            }], "default": null},
            {"name": "LastModifiedDate", "type": ["null", "long"], "default": null}
        ]
    })
    .to_string()
}

fn account_update(name: Avro, changed: &[&str]) -> Avro {
    let text = |s: &str| Avro::String(s.to_owned());
    let strings = |v: &[&str]| Avro::Array(v.iter().map(|s| text(s)).collect());
    let header = Avro::Record(vec![
        ("entityName".into(), text("Account")),
        ("recordIds".into(), strings(&["001SIM000000001AAA"])),
        ("changeType".into(), Avro::Enum(1, "UPDATE".into())),
        ("changeOrigin".into(), text("")),
        ("transactionKey".into(), text("t")),
        ("sequenceNumber".into(), Avro::Int(1)),
        ("commitTimestamp".into(), Avro::Long(1_709_303_151_000)),
        ("commitNumber".into(), Avro::Long(1)),
        ("commitUser".into(), text("005SIM000000001AAA")),
        ("nulledFields".into(), strings(&[])),
        ("diffFields".into(), strings(&[])),
        ("changedFields".into(), strings(changed)),
    ]);
    Avro::Record(vec![
        ("ChangeEventHeader".into(), header),
        ("Name".into(), name),
        (
            "LastModifiedDate".into(),
            Avro::Union(1, Box::new(Avro::Long(1_709_303_151_000))),
        ),
    ])
}

#[test]
fn the_person_account_name_union_decodes_in_both_forms() {
    let json = person_account_schema();
    let schema = Schema::parse_str(&json).unwrap();
    let ours = EventSchema::parse("person", &json).unwrap();
    let some = |s: &str| Avro::Union(1, Box::new(Avro::String(s.to_owned())));

    // A business account: Name is the string branch.
    let business = account_update(
        Avro::Union(1, Box::new(Avro::String("Acme".into()))),
        &["0x06"],
    );
    let datum = apache_avro::to_avro_datum(&schema, business).unwrap();
    let event = decode(&ours, &datum).unwrap();
    assert_eq!(
        event.header.unwrap().changed_fields,
        ["Name", "LastModifiedDate"]
    );
    assert_eq!(event.record["Name"], json!("Acme"));

    // A person account: Name is the record branch; `1-0x06` names its FirstName and LastName.
    let person_name = Avro::Record(vec![
        ("Salutation".into(), Avro::Union(0, Box::new(Avro::Null))),
        ("FirstName".into(), some("Ada")),
        ("LastName".into(), some("Lovelace")),
    ]);
    let person = account_update(Avro::Union(2, Box::new(person_name)), &["0x04", "1-0x06"]);
    let datum = apache_avro::to_avro_datum(&schema, person).unwrap();
    let event = decode(&ours, &datum).unwrap();
    assert_eq!(
        event.header.unwrap().changed_fields,
        ["LastModifiedDate", "Name.FirstName", "Name.LastName"]
    );
    assert_eq!(
        event.record["Name"],
        json!({"FirstName": "Ada", "LastName": "Lovelace"})
    );
}
