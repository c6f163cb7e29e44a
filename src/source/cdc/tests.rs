//! Unit tests of the decoder and the envelope: schemas built here (headers with `changeType` as
//! enum or string, compound fields, unions), payloads from apache-avro, every error's stage.

use super::schema::{EventKind, EventSchema};
use super::*;
use apache_avro::types::Value as Avro;
use serde_json::Value;
use serde_json::json;

const CHANGE_TYPES: [&str; 10] = [
    "CREATE",
    "UPDATE",
    "DELETE",
    "UNDELETE",
    "GAP_CREATE",
    "GAP_UPDATE",
    "GAP_DELETE",
    "GAP_UNDELETE",
    "GAP_OVERFLOW",
    "SNAPSHOT",
];

/// `ChangeEventHeader` as Salesforce declares it; `changeType` as enum or string.
fn header_schema(change_type_enum: bool, with_commit_user: bool) -> String {
    let change_type = if change_type_enum {
        format!(
            r#"{{"type":"enum","name":"ChangeType","namespace":"com.sforce.eventbus","symbols":{}}}"#,
            serde_json::to_string(&CHANGE_TYPES).unwrap()
        )
    } else {
        r#""string""#.to_owned()
    };
    let commit_user = if with_commit_user {
        r#"{"name":"commitUser","type":"string"},"#
    } else {
        ""
    };
    format!(
        r#"{{"name":"ChangeEventHeader","type":{{"type":"record","name":"ChangeEventHeader","namespace":"com.sforce.eventbus","fields":[
        {{"name":"entityName","type":"string"}},
        {{"name":"recordIds","type":{{"type":"array","items":"string"}}}},
        {{"name":"changeType","type":{change_type}}},
        {{"name":"changeOrigin","type":"string"}},
        {{"name":"transactionKey","type":"string"}},
        {{"name":"sequenceNumber","type":"int"}},
        {{"name":"commitTimestamp","type":"long"}},
        {{"name":"commitNumber","type":"long"}},
        {commit_user}
        {{"name":"nulledFields","type":{{"type":"array","items":"string"}}}},
        {{"name":"diffFields","type":{{"type":"array","items":"string"}}}},
        {{"name":"changedFields","type":{{"type":"array","items":"string"}}}}]}}}}"#
    )
}

const ADDRESS: &str = r#"{"type":"record","name":"Address","fields":[
    {"name":"Street","type":["null","string"],"default":null},{"name":"City","type":["null","string"],"default":null},
    {"name":"State","type":["null","string"],"default":null},{"name":"PostalCode","type":["null","string"],"default":null},
    {"name":"Country","type":["null","string"],"default":null},{"name":"StateCode","type":["null","string"],"default":null},
    {"name":"CountryCode","type":["null","string"],"default":null},{"name":"Latitude","type":["null","double"],"default":null},
    {"name":"Longitude","type":["null","double"],"default":null},{"name":"Xyz","type":["null","string"],"default":null},
    {"name":"GeocodeAccuracy","type":["null","string"],"default":null}]}"#;

/// Body fields of the Node README Account sample, in its order (after `ChangeEventHeader`).
const ACCOUNT_FIELDS: [&str; 34] = [
    "Name",
    "Type",
    "ParentId",
    "BillingAddress",
    "ShippingAddress",
    "Phone",
    "Fax",
    "AccountNumber",
    "Website",
    "Sic",
    "Industry",
    "AnnualRevenue",
    "NumberOfEmployees",
    "Ownership",
    "TickerSymbol",
    "Description",
    "Rating",
    "Site",
    "OwnerId",
    "CreatedDate",
    "CreatedById",
    "LastModifiedDate",
    "LastModifiedById",
    "Jigsaw",
    "JigsawCompanyId",
    "CleanStatus",
    "AccountSource",
    "DunsNumber",
    "Tradestyle",
    "NaicsCode",
    "NaicsDesc",
    "YearStarted",
    "SicDesc",
    "DandbCompanyId",
];

fn account_schema() -> EventSchema {
    let body: Vec<String> = ACCOUNT_FIELDS
        .iter()
        .map(|&n| match n {
            "BillingAddress" => {
                format!(r#"{{"name":"{n}","type":["null",{ADDRESS}],"default":null}}"#)
            }
            "ShippingAddress" => {
                format!(r#"{{"name":"{n}","type":["null","Address"],"default":null}}"#)
            }
            "CreatedDate" | "LastModifiedDate" => {
                format!(r#"{{"name":"{n}","type":["null","long"],"default":null}}"#)
            }
            _ => format!(r#"{{"name":"{n}","type":["null","string"],"default":null}}"#),
        })
        .collect();
    let json = format!(
        r#"{{"type":"record","name":"AccountChangeEvent","namespace":"com.sforce.eventbus","fields":[{},{}]}}"#,
        header_schema(true, true),
        body.join(",")
    );
    EventSchema::parse("acct", &json).unwrap()
}

/// A small CDC schema: header + scalars + Address compound + switchable person name.
fn mini_json(change_type_enum: bool, with_commit_user: bool) -> String {
    format!(
        r#"{{"type":"record","name":"ContactChangeEvent","namespace":"com.sforce.eventbus","fields":[{},
        {{"name":"Name","type":["null","string"],"default":null}},
        {{"name":"Phone","type":["null","string"],"default":null}},
        {{"name":"NumberOfEmployees","type":["null","int"],"default":null}},
        {{"name":"BillingAddress","type":["null",{ADDRESS}],"default":null}},
        {{"name":"AnnualRevenue","type":["null","double"],"default":null}},
        {{"name":"LastModifiedDate","type":["null","long"],"default":null}},
        {{"name":"PersonName","type":["null","string",{{"type":"record","name":"Switchable_PersonName","fields":[
            {{"name":"Salutation","type":["null","string"],"default":null}},
            {{"name":"FirstName","type":["null","string"],"default":null}},
            {{"name":"LastName","type":["null","string"],"default":null}}]}}],"default":null}},
        {{"name":"CreatedDate","type":["null","long"],"default":null}},
        {{"name":"Status","type":["null",{{"type":"enum","name":"Status","symbols":["Open","Closed"]}}],"default":null}},
        {{"name":"ShippingAddress","type":["null","Address"],"default":null}},
        {{"name":"Data__c","type":["null","bytes"],"default":null}}]}}"#,
        header_schema(change_type_enum, with_commit_user)
    )
}

fn mini() -> EventSchema {
    EventSchema::parse("mini-1", &mini_json(true, true)).unwrap()
}

fn null() -> Avro {
    Avro::Union(0, Box::new(Avro::Null))
}

fn some(i: u32, v: Avro) -> Avro {
    Avro::Union(i, Box::new(v))
}

fn s(v: &str) -> Avro {
    Avro::String(v.to_owned())
}

fn strs(v: &[&str]) -> Avro {
    Avro::Array(v.iter().map(|x| s(x)).collect())
}

struct H<'a> {
    change_type: &'a str,
    ids: &'a [&'a str],
    origin: &'a str,
    changed: &'a [&'a str],
    nulled: &'a [&'a str],
    diff: &'a [&'a str],
}

fn header(h: &H<'_>, change_type_enum: bool, with_commit_user: bool) -> Avro {
    let ct = if change_type_enum {
        let i = CHANGE_TYPES
            .iter()
            .position(|c| *c == h.change_type)
            .unwrap();
        Avro::Enum(i as u32, h.change_type.to_owned())
    } else {
        s(h.change_type)
    };
    let mut fields = vec![
        ("entityName".to_owned(), s("Contact")),
        ("recordIds".to_owned(), strs(h.ids)),
        ("changeType".to_owned(), ct),
        ("changeOrigin".to_owned(), s(h.origin)),
        (
            "transactionKey".to_owned(),
            s("000046c7-a642-11e2-c29b-229c6786473e"),
        ),
        ("sequenceNumber".to_owned(), Avro::Int(1)),
        ("commitTimestamp".to_owned(), Avro::Long(1_696_444_513_000)),
        (
            "commitNumber".to_owned(),
            Avro::Long(1_698_100_138_468_892_700),
        ),
    ];
    if with_commit_user {
        fields.push(("commitUser".to_owned(), s("005SIM000000001AAA")));
    }
    fields.push(("nulledFields".to_owned(), strs(h.nulled)));
    fields.push(("diffFields".to_owned(), strs(h.diff)));
    fields.push(("changedFields".to_owned(), strs(h.changed)));
    Avro::Record(fields)
}

fn address(city: Option<&str>) -> Avro {
    let names = [
        "Street",
        "City",
        "State",
        "PostalCode",
        "Country",
        "StateCode",
        "CountryCode",
        "Latitude",
        "Longitude",
        "Xyz",
        "GeocodeAccuracy",
    ];
    Avro::Record(
        names
            .iter()
            .map(|&n| {
                let v = match (n, city) {
                    ("City", Some(c)) => some(1, s(c)),
                    ("Latitude", Some(_)) => some(1, Avro::Double(48.85)),
                    _ => null(),
                };
                (n.to_owned(), v)
            })
            .collect(),
    )
}

/// Body of the mini schema: an update of Name, BillingAddress.City (+Latitude), LastModifiedDate.
fn mini_datum(h: &H<'_>, change_type_enum: bool, with_commit_user: bool, body: bool) -> Avro {
    let f = |n: &str, v: Avro| (n.to_owned(), v);
    let b = |v: Avro| if body { v } else { null() };
    Avro::Record(vec![
        f(
            "ChangeEventHeader",
            header(h, change_type_enum, with_commit_user),
        ),
        f("Name", b(some(1, s("Acme \"Quoted\" é")))),
        f("Phone", null()),
        f("NumberOfEmployees", b(some(1, Avro::Int(42)))),
        f("BillingAddress", b(some(1, address(Some("Paris"))))),
        f("AnnualRevenue", b(some(1, Avro::Double(f64::INFINITY)))),
        f(
            "LastModifiedDate",
            b(some(1, Avro::Long(1_696_444_513_000))),
        ),
        f("PersonName", b(some(1, s("Dr. Plain")))),
        f("CreatedDate", null()),
        f("Status", b(some(1, Avro::Enum(1, "Closed".to_owned())))),
        f("ShippingAddress", b(some(1, address(None)))),
        f(
            "Data__c",
            b(some(1, Avro::Bytes(vec![0xde, 0xad, 0xbe, 0xef]))),
        ),
    ])
}

fn encode(schema: &EventSchema, datum: Avro) -> Vec<u8> {
    apache_avro::to_avro_datum(&schema.schema, datum).unwrap()
}

const UPDATE: H<'static> = H {
    change_type: "UPDATE",
    ids: &["003SIM000000001AAA", "003SIM000000002AAA"],
    origin: "com/salesforce/api/rest/62.0;client=forcebridge",
    // Name(1), Phone(2), LastModifiedDate(6); BillingAddress(4).City(1)
    changed: &["0x46", "4-0x02"],
    // Phone; BillingAddress.State; ShippingAddress.Street (parent otherwise empty)
    nulled: &["0x4", "4-0x04", "10-0x1"],
    diff: &[],
};

fn raw<'a>(schema_id: &'a str, payload: &'a [u8]) -> RawEvent<'a> {
    RawEvent {
        channel: "/data/ContactChangeEvent",
        replay_id: &[0, 0, 0, 0, 0, 0, 0, 0x42],
        event_id: "9b77cea1-a923-4766-ad50-a1797d9b39fd",
        schema_id,
        payload,
    }
}

// ---------------------------------------------------------------------------------------------
// Bitmaps
// ---------------------------------------------------------------------------------------------

fn positions(schema: &EventSchema, bitmaps: &[&str]) -> Vec<(usize, Option<usize>)> {
    let bitmaps: Vec<String> = bitmaps.iter().map(|b| b.to_string()).collect();
    let mut out = Vec::new();
    schema
        .layout
        .fields
        .expand(&bitmaps, |f| out.push((f.top, f.nested)))
        .unwrap();
    out
}

fn expand(schema: &EventSchema, bitmaps: &[&str]) -> Result<Vec<String>, BitmapError> {
    let bitmaps: Vec<String> = bitmaps.iter().map(|b| b.to_string()).collect();
    expand_bitmaps(&bitmaps, schema)
}

#[test]
fn bitmap_doc_vector() {
    let acct = account_schema();
    let top: Vec<usize> = positions(&acct, &["0x650004E0"])
        .into_iter()
        .map(|(p, n)| {
            assert_eq!(n, None);
            p
        })
        .collect();
    assert_eq!(top, [5, 6, 7, 10, 24, 26, 29, 30]);
    // Lower case and leading zeros are the same bitmap.
    assert_eq!(
        positions(&acct, &["0x650004e0"]),
        positions(&acct, &["0x00650004E0"])
    );
    // Odd digit count: 0x4E0 = bits 5, 6, 7, 10.
    assert_eq!(
        positions(&acct, &["0x4E0"]),
        [(5, None), (6, None), (7, None), (10, None)]
    );
    assert_eq!(positions(&acct, &["0X1"]), [(0, None)]);
    assert_eq!(positions(&acct, &["0x0"]), []);
}

#[test]
fn bitmap_node_readme_sample() {
    let acct = account_schema();
    assert_eq!(
        expand(&acct, &["0x400000", "4-0x06"]).unwrap(),
        [
            "LastModifiedDate",
            "BillingAddress.City",
            "BillingAddress.State"
        ]
    );
    // ShippingAddress refers to the `Address` type by name; nested expansion resolves it.
    assert_eq!(
        expand(&acct, &["5-0x401"]).unwrap(),
        ["ShippingAddress.Street", "ShippingAddress.GeocodeAccuracy"]
    );
    // Elements are classified independently: nested first, then top-level.
    assert_eq!(
        expand(&acct, &["4-0x2", "0x2"]).unwrap(),
        ["BillingAddress.City", "Name"]
    );
}

#[test]
fn bitmap_switchable_person_name() {
    let m = mini();
    // Position 7 is ["null", string, record]: the record variant gives the children.
    assert_eq!(
        expand(&m, &["7-0x06"]).unwrap(),
        ["PersonName.FirstName", "PersonName.LastName"]
    );
}

#[test]
fn bitmap_errors_name_the_element() {
    let acct = account_schema();
    let cases: &[(&str, &str)] = &[
        (
            "0xZZ",
            r#"bitmap element "0xZZ" has invalid hex: 'Z' is not a hex digit"#,
        ),
        (
            "0x",
            r#"bitmap element "0x" has invalid hex: no hex digits"#,
        ),
        (
            "4-0x",
            r#"bitmap element "4-0x" has invalid hex: no hex digits"#,
        ),
        (
            "Name",
            r#"bitmap element "Name" is neither `0x<hex>` nor `<position>-0x<hex>`"#,
        ),
        (
            "-0x1",
            r#"bitmap element "-0x1" is neither `0x<hex>` nor `<position>-0x<hex>`"#,
        ),
        (
            "4-06",
            r#"bitmap element "4-06" is neither `0x<hex>` nor `<position>-0x<hex>`"#,
        ),
        (
            "99-0x01",
            r#"bitmap element "99-0x01" names compound position 99, but the schema has 35 fields"#,
        ),
        (
            "0x800000000",
            r#"bitmap element "0x800000000" sets bit 35, but the schema has only 35 fields"#,
        ),
        (
            "4-0x800",
            r#"bitmap element "4-0x800" sets bit 11, but `BillingAddress` has only 11 fields"#,
        ),
        (
            "1-0x01",
            r#"bitmap element "1-0x01" names position 1 (`Name`), which is not a compound field"#,
        ),
    ];
    for (element, want) in cases {
        let err = expand(&acct, &["0x2", element]).unwrap_err();
        assert_eq!(err.to_string(), *want);
    }
    // The highest valid bit is fine.
    assert_eq!(expand(&acct, &["0x400000000"]).unwrap(), ["DandbCompanyId"]);
}

// ---------------------------------------------------------------------------------------------
// Decode
// ---------------------------------------------------------------------------------------------

#[test]
fn decode_update_header_fields_and_record() {
    let m = mini();
    assert_eq!(m.kind, EventKind::ChangeEvent);
    let payload = encode(&m, mini_datum(&UPDATE, true, true, true));
    let ev = decode(&m, &payload).unwrap();
    let h = ev.header.as_ref().unwrap();
    assert_eq!(
        h,
        &ChangeHeader {
            entity_name: "Contact".into(),
            record_ids: vec!["003SIM000000001AAA".into(), "003SIM000000002AAA".into()],
            change_type: "UPDATE".into(),
            change_origin: Some("com/salesforce/api/rest/62.0;client=forcebridge".into()),
            transaction_key: "000046c7-a642-11e2-c29b-229c6786473e".into(),
            sequence_number: 1,
            commit_timestamp: 1_696_444_513_000,
            commit_number: 1_698_100_138_468_892_700,
            commit_user: "005SIM000000001AAA".into(),
            changed_fields: vec![
                "Name".into(),
                "Phone".into(),
                "LastModifiedDate".into(),
                "BillingAddress.City".into()
            ],
            nulled_fields: vec![
                "Phone".into(),
                "BillingAddress.State".into(),
                "ShippingAddress.Street".into()
            ],
            diff_fields: vec![],
        }
    );
    assert_eq!(
        Value::Object(ev.record.clone()),
        json!({
            "Name": "Acme \"Quoted\" é",
            "Phone": null,
            "NumberOfEmployees": 42,
            "BillingAddress": {"City": "Paris", "Latitude": 48.85, "State": null},
            "AnnualRevenue": null,
            "LastModifiedDate": 1_696_444_513_000_i64,
            "PersonName": "Dr. Plain",
            "Status": "Closed",
            "ShippingAddress": {"Street": null},
            "Data__c": "3q2+7w==",
        })
    );
    // A non-finite double is null, not dropped: it carried a value.
    assert!(ev.record.contains_key("AnnualRevenue"));
    assert_eq!(ev.created_date, None);
}

#[test]
fn decode_change_type_as_string_and_empty_origin() {
    let json = mini_json(false, true);
    let m = EventSchema::parse("mini-str", &json).unwrap();
    let h = H {
        change_type: "GAP_UPDATE",
        ids: &["003SIM000000009AAA"],
        origin: "",
        changed: &[],
        nulled: &[],
        diff: &[],
    };
    let ev = decode(&m, &encode(&m, mini_datum(&h, false, true, false))).unwrap();
    let hdr = ev.header.as_ref().unwrap();
    assert_eq!(hdr.change_type, "GAP_UPDATE");
    assert_eq!(hdr.change_origin, None);
    assert!(ev.record.is_empty(), "{:?}", ev.record);
}

#[test]
fn decode_missing_header_field() {
    let m = EventSchema::parse("no-user", &mini_json(true, false)).unwrap();
    let payload = encode(&m, mini_datum(&UPDATE, true, false, true));
    let err = decode(&m, &payload).unwrap_err();
    assert!(matches!(
        err,
        DecodeError::MissingHeaderField {
            field: "commitUser"
        }
    ));
    assert_eq!(err.stage(), "decode");
    assert_eq!(
        err.to_string(),
        "ChangeEventHeader field `commitUser` is missing, null or empty"
    );
    // No record ids is as bad as none at all.
    let m = mini();
    let h = H { ids: &[], ..UPDATE };
    let err = decode(&m, &encode(&m, mini_datum(&h, true, true, true))).unwrap_err();
    assert!(matches!(
        err,
        DecodeError::MissingHeaderField { field: "recordIds" }
    ));
}

#[test]
fn decode_bad_bitmap_is_bitmap_stage() {
    let m = mini();
    let h = H {
        nulled: &["0x1000"],
        ..UPDATE
    };
    let err = decode(&m, &encode(&m, mini_datum(&h, true, true, true))).unwrap_err();
    assert_eq!(err.stage(), "bitmap");
    assert_eq!(
        err.to_string(),
        r#"bad nulledFields bitmap: bitmap element "0x1000" sets bit 12, but the schema has only 12 fields"#
    );
}

/// Found by the `bitmap` fuzz target: `ChangeEventHeader` (position 0) is a record, and
/// `0-0x…` used to expand to header members (`ChangeEventHeader.entityName`) listed as changed or
/// nulled fields. It is not a compound field, so the element is refused.
#[test]
fn header_position_is_not_a_compound_field() {
    let m = mini();
    let err = expand(&m, &["0x2", "0-0x01"]).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"bitmap element "0-0x01" names position 0 (`ChangeEventHeader`), which is not a compound field"#
    );
    let h = H {
        nulled: &["0x4", "0-0x9"],
        ..UPDATE
    };
    let err = decode(&m, &encode(&m, mini_datum(&h, true, true, true))).unwrap_err();
    assert_eq!(err.stage(), "bitmap");
    assert!(
        err.to_string().starts_with("bad nulledFields bitmap: "),
        "{err}"
    );
    // Real compound fields still expand.
    assert_eq!(expand(&m, &["4-0x02"]).unwrap(), ["BillingAddress.City"]);
}

#[test]
fn corrupt_payloads_are_errors_not_panics() {
    let m = mini();
    let payload = encode(&m, mini_datum(&UPDATE, true, true, true));
    // Every truncation fails (apache-avro would read some of these as trailing nulls).
    for n in 0..payload.len() {
        let err = decode(&m, &payload[..n]).unwrap_err();
        assert_eq!(err.stage(), "decode");
        assert!(matches!(err, DecodeError::Avro { .. }), "len {n}: {err}");
    }
    // Trailing garbage.
    let mut long = payload.clone();
    long.push(0);
    let err = decode(&m, &long).unwrap_err();
    assert!(err.to_string().contains("1 trailing bytes"), "{err}");
    // Pseudo-random garbage and bit flips never panic.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for round in 0..2000 {
        let mut bytes = payload.clone();
        if round % 2 == 0 {
            for b in bytes.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
        } else {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = (x as usize) % bytes.len();
            bytes[i] ^= 1 << (x % 8);
        }
        let _ = decode(&m, &bytes);
    }
    let err = decode(&m, b"\xff\xff\xff\xff").unwrap_err();
    assert!(
        err.to_string().starts_with("corrupt Avro payload at byte "),
        "{err}"
    );
}

#[test]
fn decode_agrees_with_apache_avro_on_values() {
    // Cross-check the compiled decoder against apache-avro's own reader on the same bytes.
    let m = mini();
    let payload = encode(&m, mini_datum(&UPDATE, true, true, true));
    let theirs = apache_avro::from_avro_datum(&m.schema, &mut &payload[..], None).unwrap();
    let Avro::Record(fields) = theirs else {
        panic!("not a record")
    };
    let ev = decode(&m, &payload).unwrap();
    for (name, v) in fields {
        let v = match v {
            Avro::Union(_, b) => *b,
            v => v,
        };
        match v {
            Avro::Null => {}
            Avro::String(s) => assert_eq!(ev.record[&name], json!(s)),
            Avro::Int(i) => assert_eq!(ev.record[&name], json!(i)),
            Avro::Long(i) => assert_eq!(ev.record[&name], json!(i)),
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Envelope
// ---------------------------------------------------------------------------------------------

#[test]
fn envelope_fan_out_exact_json_and_headers() {
    let m = mini();
    let payload = encode(&m, mini_datum(&UPDATE, true, true, true));
    let ev = decode(&m, &payload).unwrap();
    let recs = to_records(
        &raw("mini-1", &payload),
        &ev,
        &EnvelopeOptions { tombstones: true },
    );
    assert_eq!(recs.len(), 2, "UPDATE has no tombstones");
    let record_json = serde_json::to_string(&ev.record).unwrap();
    for (rec, id) in recs
        .iter()
        .zip(["003SIM000000001AAA", "003SIM000000002AAA"])
    {
        assert_eq!(rec.object, "Contact");
        assert_eq!(rec.key, id);
        assert_eq!(rec.operation, "UPDATE");
        let want = format!(
            concat!(
                r#"{{"operation":"UPDATE","object":"Contact","id":"{id}","record":{record},"#,
                r#""changed_fields":["Name","Phone","LastModifiedDate","BillingAddress.City"],"#,
                r#""nulled_fields":["Phone","BillingAddress.State","ShippingAddress.Street"],"#,
                r#""diff_fields":[],"commit_timestamp":1696444513000,"commit_number":"1698100138468892700","#,
                r#""commit_user":"005SIM000000001AAA","transaction_key":"000046c7-a642-11e2-c29b-229c6786473e","#,
                r#""sequence_number":1,"change_origin":"com/salesforce/api/rest/62.0;client=forcebridge","#,
                r#""source":{{"channel":"/data/ContactChangeEvent","replay_id":"0000000000000042","#,
                r#""event_id":"9b77cea1-a923-4766-ad50-a1797d9b39fd","schema_id":"mini-1"}}}}"#
            ),
            id = id,
            record = record_json
        );
        assert_eq!(
            std::str::from_utf8(rec.value.as_ref().unwrap()).unwrap(),
            want
        );
        let h: Vec<(&str, &str)> = rec.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(
            h,
            [
                ("forcebridge.replay_id", "0000000000000042"),
                ("forcebridge.schema_id", "mini-1"),
                ("forcebridge.change_type", "UPDATE"),
                (
                    "forcebridge.change_origin",
                    "com/salesforce/api/rest/62.0;client=forcebridge"
                ),
                ("forcebridge.channel", "/data/ContactChangeEvent"),
                (
                    "forcebridge.event_id",
                    "9b77cea1-a923-4766-ad50-a1797d9b39fd"
                ),
            ]
        );
    }
    // The value parses back, with the long intact.
    let v: Value = serde_json::from_slice(recs[1].value.as_ref().unwrap()).unwrap();
    // A string, so that a reader keeping numbers as doubles gets it exactly: as a double it would
    // come back as another number.
    assert_eq!(v["commit_number"].as_str(), Some("1698100138468892700"));
    let exact: i64 = 1_698_100_138_468_892_700;
    assert_ne!(exact as f64 as i64, exact);
    let as_double_reader: f64 = v["commit_number"].as_f64().unwrap_or(f64::NAN);
    assert!(as_double_reader.is_nan(), "not a JSON number");
    assert_eq!(v["record"]["BillingAddress"]["City"], "Paris");
}

#[test]
fn delete_fans_out_with_tombstones() {
    let m = mini();
    let h = H {
        change_type: "DELETE",
        origin: "",
        changed: &[],
        nulled: &[],
        ..UPDATE
    };
    let payload = encode(&m, mini_datum(&h, true, true, false));
    let ev = decode(&m, &payload).unwrap();
    let r = raw("mini-1", &payload);

    let recs = to_records(&r, &ev, &EnvelopeOptions { tombstones: true });
    let shape: Vec<(&str, bool)> = recs
        .iter()
        .map(|r| (r.key.as_str(), r.value.is_some()))
        .collect();
    assert_eq!(
        shape,
        [
            ("003SIM000000001AAA", true),
            ("003SIM000000001AAA", false),
            ("003SIM000000002AAA", true),
            ("003SIM000000002AAA", false),
        ]
    );
    assert!(
        recs.iter()
            .all(|r| r.operation == "DELETE" && r.object == "Contact")
    );
    let v = std::str::from_utf8(recs[0].value.as_ref().unwrap()).unwrap();
    assert!(
        v.starts_with(r#"{"operation":"DELETE","object":"Contact","id":"003SIM000000001AAA","record":{},"changed_fields":[],"nulled_fields":[],"diff_fields":[],"#),
        "{v}"
    );
    assert!(
        v.contains(r#""sequence_number":1,"change_origin":null,"source":"#),
        "{v}"
    );
    // No change_origin header when unset.
    assert!(
        !recs[1]
            .headers
            .iter()
            .any(|(k, _)| *k == crate::kafka::headers::CHANGE_ORIGIN)
    );

    let recs = to_records(&r, &ev, &EnvelopeOptions { tombstones: false });
    assert_eq!(recs.len(), 2);
    assert!(recs.iter().all(|r| r.value.is_some()));
}

#[test]
fn platform_event_envelope() {
    let pe = EventSchema::parse(
        "pe-1",
        r#"{"type":"record","name":"Order_Event__e","namespace":"com.sforce.eventbus","fields":[
            {"name":"CreatedDate","type":"long"},{"name":"CreatedById","type":"string"},
            {"name":"Amount__c","type":["null","double"],"default":null},
            {"name":"Note__c","type":["null","string"],"default":null}]}"#,
    )
    .unwrap();
    assert_eq!(pe.kind, EventKind::PlatformEvent);
    let datum = Avro::Record(vec![
        ("CreatedDate".into(), Avro::Long(1_700_000_000_123)),
        ("CreatedById".into(), s("005SIM000000001AAA")),
        ("Amount__c".into(), some(1, Avro::Double(12.5))),
        ("Note__c".into(), null()),
    ]);
    let payload = encode(&pe, datum);
    let ev = decode(&pe, &payload).unwrap();
    assert_eq!(ev.header, None);
    assert_eq!(ev.created_date, Some(1_700_000_000_123));
    let r = RawEvent {
        channel: "/event/Order_Event__e",
        replay_id: &[0, 0, 0, 0, 0, 16, 219, 77, 0, 0],
        event_id: "e3f1c2d4-0000-4000-8000-000000000001",
        schema_id: "pe-1",
        payload: &payload,
    };
    let recs = to_records(&r, &ev, &EnvelopeOptions { tombstones: true });
    assert_eq!(recs.len(), 1);
    let rec = &recs[0];
    assert_eq!(rec.object, "Order_Event__e");
    assert_eq!(rec.key, "e3f1c2d4-0000-4000-8000-000000000001");
    assert_eq!(rec.operation, "EVENT");
    assert_eq!(
        std::str::from_utf8(rec.value.as_ref().unwrap()).unwrap(),
        concat!(
            r#"{"operation":"EVENT","object":"Order_Event__e","id":"e3f1c2d4-0000-4000-8000-000000000001","#,
            r#""record":{"Amount__c":12.5,"CreatedById":"005SIM000000001AAA","CreatedDate":1700000000123},"#,
            r#""commit_timestamp":1700000000123,"source":{"channel":"/event/Order_Event__e","#,
            r#""replay_id":"000000000010db4d0000","event_id":"e3f1c2d4-0000-4000-8000-000000000001","schema_id":"pe-1"}}"#
        )
    );
    let h: Vec<(&str, &str)> = rec.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(
        h,
        [
            ("forcebridge.replay_id", "000000000010db4d0000"),
            ("forcebridge.schema_id", "pe-1"),
            ("forcebridge.change_type", "EVENT"),
            ("forcebridge.channel", "/event/Order_Event__e"),
            (
                "forcebridge.event_id",
                "e3f1c2d4-0000-4000-8000-000000000001"
            ),
        ]
    );
}

#[test]
fn schema_change_mid_stream_uses_each_events_schema() {
    // Same channel, two schema versions with different field positions: each event is
    // expanded against its own writer schema.
    let v1 = account_schema();
    let v2 = mini();
    assert_eq!(expand(&v1, &["0x2"]).unwrap(), ["Name"]);
    assert_eq!(expand(&v2, &["0x4"]).unwrap(), ["Phone"]);
    assert_eq!(expand(&v1, &["0x4"]).unwrap(), ["Type"]);
}

#[test]
fn encode_writes_the_record_in_schema_order_with_one_scratch_for_every_event() {
    let m = mini();
    let full = encode(&m, mini_datum(&UPDATE, true, true, true));
    let empty = encode(&m, mini_datum(&UPDATE, true, true, false));
    let opts = EnvelopeOptions { tombstones: false };
    let mut scratch = Scratch::default();
    let record_of = |value: &[u8]| -> String {
        let text = std::str::from_utf8(value).unwrap();
        let start = text.find("\"record\":").unwrap() + 9;
        let end = text.find(",\"changed_fields\"").unwrap();
        text[start..end].to_owned()
    };
    let mut first = None;
    for (i, payload) in [&full, &empty, &full].into_iter().enumerate() {
        let raw = raw("mini-1", payload);
        let ours = super::encode(&m, &raw, &opts, &mut scratch).unwrap();
        let theirs = to_records(&raw, &decode(&m, payload).unwrap(), &opts);
        assert_eq!(ours.records.len(), theirs.len());
        for (a, b) in ours.records.iter().zip(&theirs) {
            assert_eq!((&a.key, &a.headers), (&b.key, &b.headers));
            let parse = |v: &Option<Vec<u8>>| -> Value {
                serde_json::from_slice(v.as_ref().unwrap()).unwrap()
            };
            assert_eq!(parse(&a.value), parse(&b.value), "event {i}");
        }
        let record = record_of(ours.records[0].value.as_ref().unwrap());
        match i {
            0 => {
                assert_eq!(
                    record,
                    concat!(
                        r#"{"Name":"Acme \"Quoted\" é","Phone":null,"NumberOfEmployees":42,"#,
                        r#""BillingAddress":{"City":"Paris","State":null,"Latitude":48.85},"#,
                        r#""AnnualRevenue":null,"LastModifiedDate":1696444513000,"#,
                        r#""PersonName":"Dr. Plain","Status":"Closed","#,
                        r#""ShippingAddress":{"Street":null},"Data__c":"3q2+7w=="}"#
                    )
                );
                first = Some(ours.records[0].value.clone());
            }
            // Nothing carried: only the nulled fields, as null.
            1 => assert_eq!(
                record,
                r#"{"Phone":null,"BillingAddress":{"State":null},"ShippingAddress":{"Street":null}}"#
            ),
            // Nothing left over from the events before.
            _ => assert_eq!(Some(ours.records[0].value.clone()), first),
        }
        assert_eq!(
            ours.commit,
            Some(Commit {
                change_origin: Some(UPDATE.origin.to_owned()),
                commit_user: "005SIM000000001AAA".to_owned(),
            })
        );
    }
}

/// `encode_as` with Debezium writes the value `Debezium::convert` makes of forcebridge's
/// envelope (same JSON but the processing time `ts_ms`) for every direct change type, keeps the
/// headers and tombstones, and leaves gap events and events with diff fields in forcebridge's
/// envelope (`debezium: false`) for the stages that rewrite them.
#[test]
fn encode_as_debezium_equals_the_conversion_of_the_envelope() {
    let m = mini();
    let d = Debezium {
        name: "forcebridge".into(),
        db: "00D000000000001AAA".into(),
    };
    let opts = EnvelopeOptions { tombstones: true };
    let mut scratch = Scratch::default();
    let without_now = |bytes: &[u8]| -> Value {
        let mut v: Value = serde_json::from_slice(bytes).unwrap();
        v.as_object_mut().unwrap().remove("ts_ms").expect("ts_ms");
        v
    };
    let cases = [
        ("UPDATE", true, &[][..], true),
        ("UPDATE", false, &[][..], true),
        ("CREATE", true, &[][..], true),
        ("UNDELETE", true, &[][..], true),
        ("DELETE", false, &[][..], true),
        ("UPDATE", true, &["0x2"][..], false),
        ("GAP_UPDATE", false, &[][..], false),
    ];
    for (change_type, body, diff, direct) in cases {
        let h = H {
            change_type,
            diff,
            ..UPDATE
        };
        let payload = encode(&m, mini_datum(&h, true, true, body));
        let raw = raw("mini-1", &payload);
        let ours = encode_as(&m, &raw, &opts, Some(&d), &mut scratch).unwrap();
        let plain = super::encode(&m, &raw, &opts, &mut scratch).unwrap();
        assert_eq!(ours.debezium, direct, "{change_type} {diff:?}");
        assert_eq!(ours.records.len(), plain.records.len());
        for (a, b) in ours.records.iter().zip(&plain.records) {
            assert_eq!((&a.key, &a.headers), (&b.key, &b.headers));
            let (Some(a_value), Some(b_value)) = (&a.value, &b.value) else {
                assert_eq!(a.value, b.value, "tombstones stay");
                continue;
            };
            if direct {
                let converted = d.convert(&b.key, b_value).unwrap();
                assert_eq!(
                    without_now(a_value),
                    without_now(&converted),
                    "{change_type} body={body}"
                );
            } else {
                assert_eq!(a_value, b_value, "{change_type}: left for later stages");
            }
        }
    }
}
