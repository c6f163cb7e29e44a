//! Bad input on the source path (issue 4, item 8): change events whose Avro is well formed but
//! whose header bitmaps are truncated or name fields the schema does not have go to the
//! dead-letter topic with stage `bitmap`, a reason naming the bitmap and the raw bytes, and the
//! events after them still flow. Simulated org → Pub/Sub → forcebridge → librdkafka mock
//! cluster.
//!
//! The simulator injects raw events on Platform Event channels only, so the change events ride
//! `/event/Order_Event__e` with the Account change event's schema id: forcebridge decodes every
//! event with the schema its own `schema_id` names, never by channel (ARCHITECTURE.md), so they
//! take the same decode path as on `/data/AccountChangeEvent`.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use apache_avro::types::Value as Avro;
use serde_json::{Value, json};

use forcebridge::config::Config;
use forcebridge::sim::catalog::{ACCOUNT_CHANGE_EVENT, FieldKind, SchemaVersion};
use forcebridge::sim::{SimConfig, SimOrg};
use forcebridge::source::checkpoint::CheckpointStore;
use support::kafka::{MockKafka, wait_for_records};
use support::source::{MOCK_KAFKA, config_with, header, key, order, record_texts, start, value};

const WAIT: Duration = Duration::from_secs(60);
const CHANNEL: &str = "/event/Order_Event__e";
const ORDERS: &str = "salesforce.Order_Event__e";
const ACCOUNTS: &str = "salesforce.Account";
const DLQ: &str = "forcebridge.dlq";

fn config(sim: &SimOrg, bootstrap: &str) -> Config {
    config_with(sim, bootstrap, &[CHANNEL], "", MOCK_KAFKA)
}

/// A correctly encoded `AccountChangeEvent` UPDATE of `id` setting `Name` (and
/// `BillingAddress.City`), with the given header bitmaps as they arrive: the bitmaps are not
/// checked here.
fn account_update(
    schema: &SchemaVersion,
    id: &str,
    name: &str,
    changed: &[&str],
    nulled: &[&str],
) -> Vec<u8> {
    let strings =
        |items: &[&str]| Avro::Array(items.iter().map(|s| Avro::String((*s).into())).collect());
    let header = Avro::Record(vec![
        ("entityName".into(), Avro::String("Account".into())),
        ("recordIds".into(), strings(&[id])),
        ("changeType".into(), Avro::Enum(1, "UPDATE".into())),
        (
            "changeOrigin".into(),
            Avro::String("com/salesforce/api/rest/62.0".into()),
        ),
        (
            "transactionKey".into(),
            Avro::String("000046c7-a642-11e2-c29b-229c6786473e".into()),
        ),
        ("sequenceNumber".into(), Avro::Int(1)),
        ("commitTimestamp".into(), Avro::Long(1_763_892_900_000)),
        ("commitNumber".into(), Avro::Long(11_657_372_702_432)),
        (
            "commitUser".into(),
            Avro::String("005SIM000000001AAA".into()),
        ),
        ("nulledFields".into(), strings(nulled)),
        ("diffFields".into(), strings(&[])),
        ("changedFields".into(), strings(changed)),
    ]);
    let null = || Avro::Union(0, Box::new(Avro::Null));
    let mut record = vec![("ChangeEventHeader".to_owned(), header)];
    for f in &schema.fields {
        let v = match (&f.kind, f.name.as_str()) {
            (_, "Name") => Avro::Union(1, Box::new(Avro::String(name.into()))),
            (FieldKind::Compound(children), "BillingAddress") => Avro::Union(
                1,
                Box::new(Avro::Record(
                    children
                        .iter()
                        .map(|(c, _)| {
                            let v = if c == "City" {
                                Avro::Union(1, Box::new(Avro::String("Lyon".into())))
                            } else {
                                null()
                            };
                            (c.clone(), v)
                        })
                        .collect(),
                )),
            ),
            _ => null(),
        };
        record.push((f.name.clone(), v));
    }
    apache_avro::to_avro_datum(schema.schema(), Avro::Record(record)).expect("encodes")
}

/// Truncated and out-of-range `changedFields` / `nulledFields` dead-letter their events with
/// stage `bitmap` and the raw bytes; good change events and platform events around them flow,
/// and the checkpoint moves past the dead letters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bitmaps_go_to_the_dead_letter_topic_and_later_events_flow() {
    let kafka = MockKafka::start(1);
    kafka.create_topic("forcebridge.checkpoints", 1);
    kafka.create_topic(DLQ, 1);
    let bootstrap = kafka.bootstrap();
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    let running = start(config(&sim, &bootstrap));

    // The org serves the bundled Account schema under this id (GetSchema).
    let account = SchemaVersion::parse(ACCOUNT_CHANGE_EVENT).unwrap();
    let id = "001SIM000000001AAA";
    // Name (bit 1), LastModifiedDate (bit 22); BillingAddress (position 4) . City (bit 1).
    let good = ["0x400002", "4-0x02"];

    sim.publish_event(CHANNEL, order("ORD-1")).unwrap();
    sim.inject_raw_event(
        CHANNEL,
        &account.id,
        account_update(&account, id, "Before", &good, &[]),
    )
    .unwrap();
    // (bitmap field, element, the raw bitmaps)
    let bad: [(&str, &str, Vec<u8>); 5] = [
        (
            "changedFields",
            "0x",
            account_update(&account, id, "Truncated", &["0x"], &[]),
        ),
        (
            "changedFields",
            "4-",
            account_update(&account, id, "Truncated nested", &["0x400002", "4-"], &[]),
        ),
        (
            "changedFields",
            "0x1000000000",
            account_update(&account, id, "Out of range", &["0x1000000000"], &[]),
        ),
        (
            "nulledFields",
            "4-0x1000",
            account_update(&account, id, "Nested out of range", &good, &["4-0x1000"]),
        ),
        (
            "nulledFields",
            "0-0x1",
            account_update(&account, id, "Header member", &good, &["0-0x1"]),
        ),
    ];
    let mut bad_replay_ids = Vec::new();
    for (_, _, payload) in &bad {
        bad_replay_ids.push(
            sim.inject_raw_event(CHANNEL, &account.id, payload.clone())
                .unwrap(),
        );
    }
    sim.inject_raw_event(
        CHANNEL,
        &account.id,
        account_update(&account, id, "After", &good, &["0x40"]),
    )
    .unwrap();
    let last = sim.publish_event(CHANNEL, order("ORD-2")).unwrap();

    // Everything good arrived, in order for the one record id.
    let orders = wait_for_records(&bootstrap, ORDERS, 2, WAIT).await;
    assert_eq!(
        record_texts(&orders, "Order_Number__c"),
        BTreeSet::from(["ORD-1".to_owned(), "ORD-2".to_owned()])
    );
    let accounts = wait_for_records(&bootstrap, ACCOUNTS, 2, WAIT).await;
    assert_eq!(accounts.len(), 2, "only the two good change events");
    let names: Vec<Value> = accounts
        .iter()
        .map(|r| value(r)["record"]["Name"].clone())
        .collect();
    assert_eq!(names, [json!("Before"), json!("After")]);
    for r in &accounts {
        assert_eq!(key(r), id);
        assert_eq!(
            value(r)["changed_fields"],
            json!(["Name", "LastModifiedDate", "BillingAddress.City"])
        );
    }
    assert_eq!(value(&accounts[1])["nulled_fields"], json!(["Phone"]));
    assert_eq!(value(&accounts[1])["record"]["Phone"], Value::Null);

    // One dead letter per bad event, in order, with the reason and the raw bytes.
    let dead = wait_for_records(&bootstrap, DLQ, bad.len(), WAIT).await;
    assert_eq!(dead.len(), bad.len());
    for ((r, (field, element, payload)), replay_id) in dead.iter().zip(&bad).zip(&bad_replay_ids) {
        assert_eq!(header(r, "forcebridge.error.stage"), "bitmap");
        let reason = header(r, "forcebridge.error.reason");
        assert!(
            reason.starts_with(&format!("bad {field} bitmap: bitmap element \"{element}\"")),
            "{reason}"
        );
        assert_eq!(
            r.value.as_deref(),
            Some(payload.as_slice()),
            "raw bytes kept"
        );
        assert_eq!(key(r), hex::encode(replay_id));
        assert_eq!(header(r, "forcebridge.replay_id"), hex::encode(replay_id));
        assert_eq!(header(r, "forcebridge.schema_id"), account.id);
        assert_eq!(header(r, "forcebridge.channel"), CHANNEL);
        assert!(!header(r, "forcebridge.event_id").is_empty());
    }

    running.stop().await;
    let store = CheckpointStore::open(
        &support::kafka::settings(&bootstrap),
        "forcebridge.checkpoints",
        "test",
    )
    .await
    .unwrap();
    assert_eq!(
        store.get(CHANNEL).unwrap().replay_id.as_ref(),
        last.as_slice(),
        "the checkpoint moved past the dead letters"
    );
    sim.shutdown().await;
}
