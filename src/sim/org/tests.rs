//! Unit tests of the org: staging and committing transactions, and the change events they
//! encode.

use apache_avro::types::Value as Avro;
use serde_json::{Map, Value as Json, json};

use super::cdc::body_value;
use super::state::EXTERNAL_ID_FIELD;
use super::*;
use crate::sim::error::SimError;

const USER: &str = "0055S0000000SIMAAA";

fn obj(v: Json) -> Map<String, Json> {
    match v {
        Json::Object(m) => m,
        _ => Map::new(),
    }
}

fn ctx() -> CommitContext {
    CommitContext {
        origin: "com/salesforce/api/rest/62.0;client=test".into(),
        user: USER.into(),
        timestamp: 1_696_444_513_000,
        commit_number: 42,
        transaction_key: "tx-1".into(),
    }
}

fn decode(org: &Org, e: &BuiltEvent) -> Json {
    let schema = org.schema_by_id(&e.event.schema_id).expect("schema");
    let mut r = &e.event.payload[..];
    let v = apache_avro::from_avro_datum(schema.schema(), &mut r, None).expect("decode");
    assert!(r.is_empty());
    avro_to_json(&v)
}

fn commit(org: &mut Org, ops: &[Op]) -> Vec<Json> {
    let changes = org.commit(ops, USER, 1_696_444_513_000).expect("commit");
    let events = org.build_events(changes, &ctx()).expect("events");
    events.iter().map(|e| decode(org, e)).collect()
}

fn create_account(org: &mut Org, fields: Json) -> (String, Json) {
    let id = org.reserve_id("Account").expect("id");
    let ev = commit(
        org,
        &[Op::Create {
            object: "Account".into(),
            id: id.clone(),
            fields: obj(fields),
        }],
    );
    (id, ev.into_iter().next().expect("event"))
}

fn update(object: &str, id: &str, fields: Json) -> Op {
    Op::Update {
        object: object.into(),
        id: id.into(),
        fields: obj(fields),
    }
}

#[test]
fn create_carries_all_set_fields_and_header() {
    let mut org = Org::new().expect("org");
    let (id, ev) = create_account(
        &mut org,
        json!({"Name": "Acme", "BillingAddress": {"City": "Paris"}, "NumberOfEmployees": 12}),
    );
    let h = &ev["ChangeEventHeader"];
    assert_eq!(h["entityName"], "Account");
    assert_eq!(h["recordIds"], json!([id]));
    assert_eq!(h["changeType"], "CREATE");
    assert_eq!(
        h["changeOrigin"],
        "com/salesforce/api/rest/62.0;client=test"
    );
    assert_eq!(h["sequenceNumber"], 1);
    assert_eq!(h["commitUser"], USER);
    assert_eq!(h["changedFields"], json!([]));
    assert_eq!(ev["Name"], "Acme");
    assert_eq!(ev["BillingAddress"]["City"], "Paris");
    assert_eq!(ev["BillingAddress"]["Street"], Json::Null);
    assert_eq!(ev["ShippingAddress"], Json::Null);
    assert_eq!(ev["OwnerId"], USER);
    assert_eq!(ev["CreatedDate"], 1_696_444_513_000_i64);
    let rec = org.record("Account", &id).expect("record");
    assert_eq!(rec["SystemModstamp"], 1_696_444_513_000_i64);
    assert_eq!(rec["IsDeleted"], false);
}

#[test]
fn events_are_encoded_as_apache_avro_encodes_them() {
    let mut org = Org::new().expect("org");
    let a = create_account(&mut org, json!({"Name": "Acme"})).0;
    let b = create_account(&mut org, json!({"Name": "Acme"})).0;
    let changes = org
        .commit(
            &[
                update("Account", &a, json!({"Phone": "1", "BillingAddress": {"City": "Paris", "Street": null}, "ShippingAddress": {"Country": "FR"}, "AnnualRevenue": 2.5, "NumberOfEmployees": 7})),
                update("Account", &b, json!({"Phone": "1", "BillingAddress": {"City": "Paris", "Street": null}, "ShippingAddress": {"Country": "FR"}, "AnnualRevenue": 2.5, "NumberOfEmployees": 7})),
            ],
            USER,
            1_696_444_514_000,
        )
        .expect("commit");
    let events = org.build_events(changes, &ctx()).expect("events");
    assert_eq!(
        events.len(),
        1,
        "the identical changes merge into one event"
    );
    let event = &events[0];
    let schema = org.schema_by_id(&event.event.schema_id).expect("schema");
    let decoded =
        apache_avro::from_avro_datum(schema.schema(), &mut &event.event.payload[..], None)
            .expect("decode");
    assert_eq!(
        event.event.payload,
        apache_avro::to_avro_datum(schema.schema(), decoded.clone()).expect("encode"),
        "{decoded:?}"
    );
    let Avro::Record(fields) = decoded else {
        panic!("a record")
    };
    let header = fields.into_iter().next().map(|(_, h)| h);
    let values =
        obj(json!({"Name": "x", "ShippingAddress": {"City": "Lyon"}, "LastModifiedDate": 5}));
    let ours = encode_body(&schema, header.clone(), &values).expect("ours");
    let theirs = apache_avro::to_avro_datum(
        schema.schema(),
        body_value(&schema, header, &values).expect("value"),
    )
    .expect("theirs");
    assert_eq!(ours, theirs);
    let err = encode_body(&schema, Some(Avro::Null), &values).unwrap_err();
    assert!(
        err.to_string()
            .contains("ChangeEventHeader: cannot write Null as record ChangeEventHeader"),
        "{err}"
    );
}

#[test]
fn update_matches_the_documented_sample_bitmaps() {
    let mut org = Org::new().expect("org");
    let (id, _) = create_account(&mut org, json!({"Name": "Acme", "Phone": "1"}));
    let ev = commit(
        &mut org,
        &[update(
            "Account",
            &id,
            json!({"BillingAddress": {"City": "San Francisco", "State": "CA"}, "Name": "Acme"}),
        )],
    );
    let h = &ev[0]["ChangeEventHeader"];
    assert_eq!(h["changeType"], "UPDATE");
    assert_eq!(h["changedFields"], json!(["0x400000", "4-0x06"]));
    assert_eq!(h["nulledFields"], json!([]));
    assert_eq!(ev[0]["Name"], Json::Null, "unchanged fields are null");
    assert_eq!(ev[0]["BillingAddress"]["City"], "San Francisco");
    assert_eq!(ev[0]["LastModifiedDate"], 1_696_444_513_000_i64);

    let ev = commit(&mut org, &[update("Account", &id, json!({"Phone": null}))]);
    let h = &ev[0]["ChangeEventHeader"];
    // Phone = position 6, LastModifiedDate = 22; nulled fields are also changed fields.
    assert_eq!(h["changedFields"], json!(["0x400040"]));
    assert_eq!(h["nulledFields"], json!(["0x40"]));
    assert_eq!(ev[0]["Phone"], Json::Null);
    assert!(
        org.record("Account", &id)
            .expect("rec")
            .get("Phone")
            .is_none()
    );

    let ev = commit(
        &mut org,
        &[update(
            "Account",
            &id,
            json!({"BillingAddress": {"City": null}}),
        )],
    );
    let h = &ev[0]["ChangeEventHeader"];
    assert_eq!(h["changedFields"], json!(["0x400000", "4-0x02"]));
    assert_eq!(h["nulledFields"], json!(["0x00", "4-0x02"]));
}

#[test]
fn identical_changes_in_one_transaction_are_merged() {
    let mut org = Org::new().expect("org");
    let (a, _) = create_account(&mut org, json!({"Name": "A"}));
    let (b, _) = create_account(&mut org, json!({"Name": "B"}));
    let (c, _) = create_account(&mut org, json!({"Name": "C"}));
    let ev = commit(
        &mut org,
        &[
            update("Account", &a, json!({"Rating": "Hot"})),
            update("Account", &b, json!({"Rating": "Cold"})),
            update("Account", &c, json!({"Rating": "Hot"})),
        ],
    );
    assert_eq!(ev.len(), 2);
    assert_eq!(ev[0]["ChangeEventHeader"]["recordIds"], json!([a, c]));
    assert_eq!(ev[0]["ChangeEventHeader"]["sequenceNumber"], 1);
    assert_eq!(ev[1]["ChangeEventHeader"]["recordIds"], json!([b]));
    assert_eq!(ev[1]["ChangeEventHeader"]["sequenceNumber"], 2);
    assert_eq!(ev[1]["ChangeEventHeader"]["transactionKey"], "tx-1");
}

#[test]
fn delete_has_no_fields_and_undelete_has_all() {
    let mut org = Org::new().expect("org");
    let (id, _) = create_account(&mut org, json!({"Name": "Acme"}));
    let ev = commit(
        &mut org,
        &[Op::Delete {
            object: "Account".into(),
            id: id.clone(),
        }],
    );
    assert_eq!(ev[0]["ChangeEventHeader"]["changeType"], "DELETE");
    assert_eq!(ev[0]["Name"], Json::Null);
    assert_eq!(ev[0]["CreatedDate"], Json::Null);
    assert_eq!(org.record("Account", &id).expect("rec")["IsDeleted"], true);
    let err = org.commit(&[update("Account", &id, json!({"Name": "x"}))], USER, 1);
    assert!(matches!(err, Err(SimError::EntityIsDeleted(_))));
    let ev = commit(
        &mut org,
        &[Op::Undelete {
            object: "Account".into(),
            id: id.clone(),
        }],
    );
    assert_eq!(ev[0]["ChangeEventHeader"]["changeType"], "UNDELETE");
    assert_eq!(ev[0]["Name"], "Acme");
}

#[test]
fn several_changes_to_one_record_in_a_transaction_become_one_event() {
    let mut org = Org::new().expect("org");
    let id = org.reserve_id("Account").expect("id");
    let ev = commit(
        &mut org,
        &[
            Op::Create {
                object: "Account".into(),
                id: id.clone(),
                fields: obj(json!({"Name": "Draft"})),
            },
            update("Account", &id, json!({"Name": "Final", "Phone": "1"})),
        ],
    );
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0]["ChangeEventHeader"]["changeType"], "CREATE");
    assert_eq!(ev[0]["Name"], "Final");
    assert_eq!(ev[0]["Phone"], "1");

    let ev = commit(
        &mut org,
        &[
            update("Account", &id, json!({"Phone": null, "Rating": "Hot"})),
            update(
                "Account",
                &id,
                json!({"Phone": "2", "BillingAddress": {"City": "Oslo"}}),
            ),
        ],
    );
    assert_eq!(ev.len(), 1);
    let h = &ev[0]["ChangeEventHeader"];
    // Phone (6), Rating (17), LastModifiedDate (22); BillingAddress.City (4-0x02).
    assert_eq!(h["changedFields"], json!(["0x420040", "4-0x02"]));
    assert_eq!(h["nulledFields"], json!([]));
    assert_eq!(ev[0]["Phone"], "2");
    assert_eq!(ev[0]["Rating"], "Hot");
    assert_eq!(ev[0]["BillingAddress"]["City"], "Oslo");
}

#[test]
fn failed_transaction_changes_nothing() {
    let mut org = Org::new().expect("org");
    let (id, _) = create_account(&mut org, json!({"Name": "Acme"}));
    let err = org.commit(
        &[
            update("Account", &id, json!({"Name": "Changed"})),
            update("Account", "001000000000000AAA", json!({"Name": "x"})),
        ],
        USER,
        2,
    );
    assert!(matches!(err, Err(SimError::RecordNotFound { .. })));
    assert_eq!(org.record("Account", &id).expect("rec")["Name"], "Acme");
}

#[test]
fn partial_staging_skips_failures_and_commits_the_rest_as_one_transaction() {
    let mut org = Org::new().expect("org");
    let (a, _) = create_account(&mut org, json!({"Name": "A", "External_Id__c": "EXT-A"}));
    let b = org.reserve_id("Account").expect("id");
    let c = org.reserve_id("Account").expect("id");
    let ops = [
        Op::Create {
            object: "Account".into(),
            id: b.clone(),
            fields: obj(json!({"Name": "B", "External_Id__c": "ext-a"})),
        },
        Op::Create {
            object: "Account".into(),
            id: c.clone(),
            fields: obj(json!({"Name": "C", "External_Id__c": "EXT-C"})),
        },
        update("Account", &a, json!({"Name": null})),
        update("Account", "003000000000000AAA", json!({"Name": "x"})),
        Op::Upsert {
            object: "Account".into(),
            field: EXTERNAL_ID_FIELD.into(),
            value: "ext-c".into(),
            fields: obj(json!({"Rating": "Hot"})),
        },
    ];
    let mut tx = Tx::default();
    let results = org.stage(&mut tx, &ops, USER, 7, StageOptions::default(), None);
    assert!(
        matches!(&results[0], Err(SimError::DuplicateValue { existing, .. }) if *existing == a)
    );
    assert_eq!(
        results[1].as_ref().ok(),
        Some(&Applied {
            id: c.clone(),
            created: true
        })
    );
    assert!(
        matches!(&results[2], Err(SimError::RequiredFieldMissing { fields, .. }) if fields == &["Name"])
    );
    assert!(matches!(&results[3], Err(SimError::MalformedId { .. })));
    // The upsert sees the staged record C.
    assert_eq!(
        results[4].as_ref().ok(),
        Some(&Applied {
            id: c.clone(),
            created: false
        })
    );
    assert!(
        org.record("Account", &c).is_none(),
        "not visible before commit"
    );
    assert!(org.view(Some(&tx), "Account", &c).is_some());
    let changes = org.finish(tx);
    assert_eq!(changes.len(), 1, "create + upsert of C coalesce");
    assert_eq!(changes[0].change_type, ChangeType::Create);
    assert_eq!(changes[0].values["Rating"], "Hot");
    assert_eq!(
        org.find_by_external_id(None, "Account", EXTERNAL_ID_FIELD, "Ext-C"),
        Some(c.clone())
    );
    assert!(org.record("Account", &b).is_none());

    // The index follows value changes and deletes.
    org.commit(
        &[update("Account", &a, json!({"External_Id__c": "EXT-Z"}))],
        USER,
        8,
    )
    .expect("rename");
    assert_eq!(
        org.find_by_external_id(None, "Account", EXTERNAL_ID_FIELD, "ext-a"),
        None
    );
    assert_eq!(
        org.find_by_external_id(None, "Account", EXTERNAL_ID_FIELD, "ext-z"),
        Some(a.clone())
    );
    org.commit(
        &[Op::Delete {
            object: "Account".into(),
            id: c.clone(),
        }],
        USER,
        9,
    )
    .expect("delete");
    assert_eq!(
        org.find_by_external_id(None, "Account", EXTERNAL_ID_FIELD, "ext-c"),
        None
    );
    assert_eq!(org.live_records(None, "Account").len(), 1);
    // Undeleting C would be fine; a live record taking its value first blocks it.
    org.commit(
        &[update("Account", &a, json!({"External_Id__c": "EXT-C"}))],
        USER,
        10,
    )
    .expect("take the value");
    let err = org.commit(
        &[Op::Undelete {
            object: "Account".into(),
            id: c,
        }],
        USER,
        11,
    );
    assert!(matches!(err, Err(SimError::DuplicateValue { .. })));
}

#[test]
fn lock_faults_hit_rest_writes_only_and_validation_rules_all_writes() {
    let mut org = Org::new().expect("org");
    let (a, _) = create_account(&mut org, json!({"Name": "A"}));
    org.set_lock_faults(1);
    org.commit(&[update("Account", &a, json!({"Phone": "1"}))], USER, 2)
        .expect("Rust-API writes take no lock faults");
    let rest = StageOptions {
        stop_on_error: false,
        rest_faults: true,
    };
    let mut tx = Tx::default();
    let ops = [
        update("Account", &a, json!({"Phone": "2"})),
        update("Account", &a, json!({"Phone": "3"})),
    ];
    let results = org.stage(&mut tx, &ops, USER, 3, rest, None);
    assert!(matches!(&results[0], Err(SimError::UnableToLockRow(id)) if *id == a));
    assert!(results[1].is_ok());
    assert_eq!(org.lock_faults(), 0);
    org.add_validation_rule(
        "Account",
        ValidationRule {
            field: "BillingAddress.City".into(),
            value: json!("Nowhere"),
            message: "No such city".into(),
        },
    )
    .expect("rule");
    let err = org.commit(
        &[update(
            "Account",
            &a,
            json!({"BillingAddress": {"City": "Nowhere"}}),
        )],
        USER,
        4,
    );
    assert!(
        matches!(err, Err(SimError::ValidationFailed { field, .. }) if field == "BillingAddress.City")
    );
    assert!(
        org.add_validation_rule(
            "Account",
            ValidationRule {
                field: "Nope__c".into(),
                value: Json::Null,
                message: String::new(),
            },
        )
        .is_err()
    );
}

#[test]
fn dates_and_datetimes_accept_text() {
    let org = Org::new().expect("org");
    let schema = org.object_schema("Contact").expect("schema");
    let fields = normalize_fields(
        &schema,
        "Contact",
        &obj(json!({"Birthdate": "1990-05-17", "Email": "a@b.c"})),
        FieldCheck::Write,
    )
    .expect("normalize");
    assert_eq!(fields["Birthdate"], 642_902_400_000_i64);
    assert!(matches!(
        normalize_fields(
            &schema,
            "Contact",
            &obj(json!({"Birthdate": "1990-05-17T10:00:00Z"})),
            FieldCheck::Write,
        ),
        Err(SimError::InvalidValue { .. })
    ));
}

/// A datetime a client writes is stored to the second, as text or as epoch ms (SOAP API
/// Developer Guide, "Primitive Data Types": dateTime has "a precision of one second").
#[test]
fn client_datetimes_are_stored_to_the_second() {
    let mut org = Org::new().expect("org");
    org.add_field("Account", "Renewal__c", &json!("datetime"))
        .expect("add field");
    let schema = org.object_schema("Account").expect("schema");
    for given in [
        json!("2024-01-31T12:05:09.042+0000"),
        json!(1_706_702_709_042_i64),
    ] {
        let fields = normalize_fields(
            &schema,
            "Account",
            &obj(json!({ "Renewal__c": given })),
            FieldCheck::Write,
        )
        .expect("normalize");
        assert_eq!(fields["Renewal__c"], 1_706_702_709_000_i64, "{given}");
    }
}

#[test]
fn bad_fields_are_named() {
    let org = Org::new().expect("org");
    let err = org
        .validate_fields("Account", &obj(json!({"Nmae": "x"})))
        .expect_err("unknown");
    assert_eq!(err.to_string(), "no such field Nmae on Account");
    let err = org
        .validate_fields("Account", &obj(json!({"BillingAddress": {"Town": "x"}})))
        .expect_err("nested");
    assert_eq!(
        err.to_string(),
        "no such field BillingAddress.Town on Account"
    );
    assert!(matches!(
        org.validate_fields("Account", &obj(json!({"NumberOfEmployees": "many"}))),
        Err(SimError::InvalidValue { .. })
    ));
    assert!(matches!(
        org.validate_fields("Account", &obj(json!({"CreatedDate": 1}))),
        Err(SimError::ReadOnlyField { .. })
    ));
    assert!(matches!(
        org.validate_fields("Lead", &Map::new()),
        Err(SimError::UnknownObject(_))
    ));
}

#[test]
fn added_field_gets_a_new_schema_and_old_events_keep_theirs() {
    let mut org = Org::new().expect("org");
    let v1 = org.object_schema("Account").expect("v1").id.clone();
    let (id, _) = create_account(&mut org, json!({"Name": "Acme"}));
    let v2 = org
        .add_field("Account", "Loyalty__c", &json!("string"))
        .expect("add");
    assert_ne!(v1, v2);
    assert!(org.schema_by_id(&v1).is_some());
    let changes = org
        .commit(
            &[update("Account", &id, json!({"Loyalty__c": "Gold"}))],
            USER,
            5,
        )
        .expect("commit");
    let events = org.build_events(changes, &ctx()).expect("events");
    assert_eq!(events[0].event.schema_id, v2);
    let ev = decode(&org, &events[0]);
    assert_eq!(ev["Loyalty__c"], "Gold");
    // Loyalty__c = position 36 (after External_Id__c), LastModifiedDate = 22.
    assert_eq!(
        ev["ChangeEventHeader"]["changedFields"],
        json!(["0x1000400000"])
    );
}

/// A Long Text Area value of 20 lines (about 2,400 characters).
fn long_description() -> String {
    (0..20)
        .map(|i| format!("Paragraph {i}: business applications are moving to the cloud, and the shift has gained momentum over ten years."))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_small_update_of_a_long_description_is_sent_as_a_diff() {
    // Change Data Capture Developer Guide, "Sending Data Differences for Fields of Updated
    // Records" and "Data Differences in Event Fields": an update of a large text field of at
    // least 1,000 characters carries a unified diff (`--- \n+++ <SHA-256>\n@@ …`) and the field
    // is listed in `diffFields`; a CREATE carries the full value.
    let mut org = Org::new().expect("org");
    let old = long_description();
    let (id, created) = create_account(&mut org, json!({"Name": "Acme", "Description": old}));
    assert_eq!(created["Description"], json!(old));
    assert_eq!(created["ChangeEventHeader"]["diffFields"], json!([]));
    let new = old.replace(
        "Paragraph 3: business applications",
        "Paragraph 3: business apps",
    );
    let ev = commit(
        &mut org,
        &[update("Account", &id, json!({"Description": new}))],
    );
    let position = org
        .sobject("Account")
        .expect("Account")
        .schema
        .field("Description")
        .expect("Description")
        .position;
    let bitmap = crate::sim::bitmap::encode_hex(&[position].into_iter().collect());
    let h = &ev[0]["ChangeEventHeader"];
    assert_eq!(h["diffFields"], json!([bitmap]));
    let diff = ev[0]["Description"].as_str().expect("a text value");
    assert!(diff.starts_with("--- \n+++ "), "{diff}");
    assert!(
        diff.contains("\n@@ -4,1 +4,1 @@\n-Paragraph 3: business applications"),
        "{diff}"
    );
    assert!(diff.len() < new.len());
    // The org holds the full value; a change too large for a diff sends the value itself.
    let rewritten = "Rewritten. ".repeat(150);
    let ev = commit(
        &mut org,
        &[update("Account", &id, json!({"Description": rewritten}))],
    );
    assert_eq!(ev[0]["Description"], json!(rewritten));
    assert_eq!(ev[0]["ChangeEventHeader"]["diffFields"], json!([]));
    // A short text field is never diffed.
    let ev = commit(
        &mut org,
        &[update("Account", &id, json!({"Name": "Acme 2"}))],
    );
    assert_eq!(ev[0]["ChangeEventHeader"]["diffFields"], json!([]));
}

#[test]
fn updates_coalesced_in_one_transaction_carry_the_full_value() {
    // Several updates of one record in one transaction become one UPDATE with the committed
    // values: a diff of the first update must not be left in `diffFields` over a full value.
    let mut org = Org::new().expect("org");
    let old = long_description();
    let (id, _) = create_account(&mut org, json!({"Name": "Acme", "Description": old}));
    let first = old.replace(
        "Paragraph 3: business applications",
        "Paragraph 3: business apps",
    );
    let ev = commit(
        &mut org,
        &[
            update("Account", &id, json!({"Description": first})),
            update("Account", &id, json!({"Name": "Acme 2"})),
        ],
    );
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0]["Description"], json!(first));
    assert_eq!(ev[0]["ChangeEventHeader"]["diffFields"], json!([]));
}
