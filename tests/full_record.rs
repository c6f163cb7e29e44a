//! `source.channels[].full_record: true` end to end: simulated org → Pub/Sub → forcebridge →
//! Kafka (the librdkafka mock cluster). Change events carry only the changed fields; each UPDATE
//! record of such a channel comes out whole (every field as the org holds it), read in batches
//! through sObject Collections retrieve ("Get Records With a Request Body Using sObject
//! Collections", REST API Developer Guide: up to 2,000 records per call), not one call per record.

mod support;

use std::collections::BTreeMap;

use serde_json::{Value, json};

use forcebridge::config::Config;
use forcebridge::sim::{RestFault, SimConfig, SimOrg};
use support::kafka::{ConsumedRecord, wait_for_records};
use support::source::{WAIT, fields, header, key, start, value};

const ACCOUNTS: &str = "salesforce.Account";
const CHANNEL: &str = "/data/AccountChangeEvent";

fn config(sim: &SimOrg, bootstrap: &str) -> Config {
    let text =
        support::source::config_text(sim, bootstrap, &[CHANNEL], "", support::source::MOCK_KAFKA)
            .replace(
                "      initial_replay: earliest\n",
                "      initial_replay: earliest\n      full_record: true\n",
            );
    Config::from_yaml(&text, |_| None).expect("test config is valid")
}

/// The mock cluster keeps about 5 MB per partition (librdkafka's `rdkafka_mock.c`): 3,000 whole
/// Account records need several.
fn kafka() -> support::kafka::MockKafka {
    let kafka = support::source::mock_kafka();
    kafka.create_topic(ACCOUNTS, 4);
    kafka
}

/// Asserts that `record` (a Kafka record's `record`) holds every field the org stores for `id`
/// with the org's value; compounds child by child, their other children null.
fn assert_whole(sim: &SimOrg, id: &str, record: &Value) {
    let stored = sim.record("Account", id).expect("the record exists");
    let record = record.as_object().expect("record is an object");
    for (field, want) in stored.iter().filter(|(f, _)| !matches!(f.as_str(), "Id")) {
        let Some(got) = record.get(field) else {
            // A stored field that is not in the event schema (e.g. IsDeleted).
            continue;
        };
        match (want, got) {
            (Value::Object(children), Value::Object(got)) => {
                for (child, v) in got {
                    let want = children.get(child).unwrap_or(&Value::Null);
                    assert_eq!(v, want, "{id}: {field}.{child}");
                }
            }
            _ => assert_eq!(got, want, "{id}: {field}"),
        }
    }
}

/// 3,000 records updated in six transactions (one event of 500 records each, as Salesforce
/// merges identical changes of one transaction): every UPDATE record comes out whole, the reads
/// cost at most one retrieve per event (not one per record), counted in the org's API usage and
/// in the channel's counters; a record deleted before the read keeps the event's fields, marked
/// absent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_come_out_whole_in_batched_reads() {
    let kafka = kafka();
    let bootstrap = kafka.bootstrap();
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    sim.seed("Account", 3_000, 7).unwrap();
    let ids: Vec<String> = sim
        .records("Account")
        .iter()
        .map(|r| r["Id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 3_000);
    for (t, chunk) in ids.chunks(500).enumerate() {
        let mut tx = sim.transaction();
        for id in chunk {
            let change = json!({"Phone": format!("+33 1 00 00 0{t}"), "BillingAddress": {"City": format!("City {t}")}});
            tx.update("Account", id, fields(change)).unwrap();
        }
        tx.commit().unwrap();
    }
    // Updated, then deleted before anything read it.
    let gone = sim
        .create(
            "Account",
            fields(json!({"Name": "Gone", "Website": "https://gone.example"})),
        )
        .unwrap();
    sim.update("Account", &gone, fields(json!({"Phone": "+1 000"})))
        .unwrap();
    sim.delete("Account", &gone).unwrap();
    let events = sim.event_count(CHANNEL);
    let (used_before, _) = sim.api_usage();
    let running = start(config(&sim, &bootstrap));

    // 3,000 updates; Gone: CREATE, UPDATE, DELETE.
    let records = wait_for_records(&bootstrap, ACCOUNTS, 3_003, WAIT).await;
    let updates: BTreeMap<String, &ConsumedRecord> = records
        .iter()
        .filter(|r| r.value.is_some() && value(r)["operation"] == "UPDATE")
        .map(|r| (key(r), r))
        .collect();
    assert_eq!(updates.len(), 3_001);
    for (t, chunk) in ids.chunks(500).enumerate() {
        for id in chunk {
            let v = value(updates[id]);
            assert_eq!(v["reread"]["mode"], "full", "{id}");
            assert_eq!(v["reread"]["state"], "present", "{id}");
            assert_eq!(header(updates[id], "forcebridge.reread"), "full");
            // The change set by the event, and the fields it did not carry.
            assert_eq!(v["record"]["Phone"], json!(format!("+33 1 00 00 0{t}")));
            assert_eq!(
                v["record"]["BillingAddress"]["City"],
                json!(format!("City {t}"))
            );
            assert!(v["record"]["Name"].is_string(), "{id}: {v}");
            assert!(
                v["record"]["BillingAddress"]["Street"].is_string(),
                "{id}: {v}"
            );
            assert_whole(&sim, id, &v["record"]);
            // Only the fields the event changed are named as changed.
            let changed = v["changed_fields"].as_array().unwrap();
            assert!(!changed.contains(&json!("Name")), "{changed:?}");
        }
    }
    let v = value(updates[&gone]);
    assert_eq!(v["reread"]["state"], "absent");
    assert_eq!(v["record"]["Phone"], "+1 000");
    assert_eq!(
        v["record"].get("Website"),
        None,
        "the event's fields only: {v}"
    );

    // Within each partition the records are in replay order (each event's after the one
    // before), and the checkpoint passed the last event only once Kafka held its records.
    // (`read_topic` sorts by partition, then offset; replay ids are hex of one length.)
    for pair in records
        .windows(2)
        .filter(|w| w[0].partition == w[1].partition)
    {
        let (a, b) = (
            header(&pair[0], "forcebridge.replay_id"),
            header(&pair[1], "forcebridge.replay_id"),
        );
        assert!(a <= b, "partition {}: {a} after {b}", pair[1].partition);
    }
    let last = records
        .iter()
        .map(|r| header(r, "forcebridge.replay_id"))
        .max()
        .unwrap();
    let stats = running.stop().await;
    let store = support::source::checkpoints(&bootstrap).await;
    let saved = store.get(CHANNEL).expect("checkpoint saved");
    assert_eq!(hex::encode(&saved.replay_id), last);
    let channel = &stats.snapshot().channels[CHANNEL];
    assert_eq!(channel.events_dead_lettered, 0);
    let counts = channel.full_record;
    assert_eq!((counts.completed, counts.absent), (3_000, 1));
    // One describe, then the retrieves: never more than one per event with updates (7), where
    // one call per record would be 3,001; at least two (2,000 Ids per call at most).
    let (used_after, _) = sim.api_usage();
    assert_eq!(used_after - used_before, counts.reads + 1);
    assert!(
        (2..=7).contains(&counts.reads),
        "{} retrieve calls for {events} events",
        counts.reads
    );
    eprintln!(
        "{} retrieve calls for 3,001 updated records in {events} events",
        counts.reads
    );
}

/// A read Salesforce refuses for good (413 from the front end: not retried) dead-letters the
/// event with stage `full` and the reason; the events after it flow on, completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_read_dead_letters_the_event() {
    let kafka = kafka();
    let bootstrap = kafka.bootstrap();
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    let a = sim
        .create(
            "Account",
            fields(json!({"Name": "A", "Website": "https://a.example"})),
        )
        .unwrap();
    sim.update("Account", &a, fields(json!({"Phone": "1"})))
        .unwrap();
    let running = start(config(&sim, &bootstrap));
    // A's CREATE and completed UPDATE: the describe is cached from now on.
    let records = wait_for_records(&bootstrap, ACCOUNTS, 2, WAIT).await;
    assert_eq!(value(&records[1])["record"]["Website"], "https://a.example");

    sim.fail_next_requests(1, RestFault::PayloadTooLarge);
    sim.update("Account", &a, fields(json!({"Phone": "2"})))
        .unwrap();
    let dead = wait_for_records(&bootstrap, "forcebridge.dlq", 1, WAIT).await;
    assert_eq!(header(&dead[0], "forcebridge.error.stage"), "full");
    let reason = header(&dead[0], "forcebridge.error.reason");
    assert!(
        reason.contains("reading the current values of Account records failed"),
        "{reason}"
    );

    sim.update("Account", &a, fields(json!({"Phone": "3"})))
        .unwrap();
    let records = wait_for_records(&bootstrap, ACCOUNTS, 3, WAIT).await;
    let v = value(&records[2]);
    assert_eq!(v["record"]["Phone"], "3");
    assert_eq!(v["record"]["Website"], "https://a.example");
    let stats = running.stop().await;
    let channel = &stats.snapshot().channels[CHANNEL];
    assert_eq!(channel.events_dead_lettered, 1);
    assert_eq!(channel.full_record.completed, 2);
}
