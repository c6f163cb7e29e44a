//! Gap and overflow events end to end: simulated org → Pub/Sub → forcebridge (REST re-reads) →
//! Kafka (the librdkafka mock cluster), asserting the exact records, markers, counters and
//! checkpoints.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{Map, Value, json};

use forcebridge::config::Config;
use forcebridge::sim::{GapKind, RestFault, SimConfig, SimOrg};
use support::kafka::{ConsumedRecord, MockKafka, wait_for_records};
use support::replica::account_fields;
use support::source::{WAIT, fields, header, key, start, value};

const ACCOUNTS: &str = "salesforce.Account";
const CHANNEL: &str = "/data/AccountChangeEvent";
/// Fields a REST read returns that change events do not carry.
const NOT_IN_EVENTS: [&str; 3] = ["Id", "IsDeleted", "SystemModstamp"];

/// The test config of one channel; the mock cluster has no CreateTopics API.
fn config(sim: &SimOrg, bootstrap: &str, extra_source: &str) -> Config {
    support::source::config_with(
        sim,
        bootstrap,
        &[CHANNEL],
        extra_source,
        "  create_topics: false\n",
    )
}

fn mock_kafka() -> MockKafka {
    let kafka = support::source::mock_kafka();
    // One partition: the records of the object topic are read back in production order.
    kafka.create_topic(ACCOUNTS, 1);
    kafka
}

async fn checkpoint(bootstrap: &str) -> String {
    let store = support::source::checkpoints(bootstrap).await;
    hex::encode(store.get(CHANNEL).expect("checkpoint saved").replay_id)
}

/// `operation` of a record, `TOMBSTONE` for a null value.
fn op(record: &ConsumedRecord) -> String {
    match &record.value {
        None => "TOMBSTONE".to_owned(),
        Some(_) => value(record)["operation"].as_str().unwrap().to_owned(),
    }
}

/// The org's current record in the envelope's `record` shape: every event field, compound
/// fields with every child (null when unset).
fn expected_record(sim: &SimOrg, id: &str) -> Value {
    let current = sim.record("Account", id).expect("record exists");
    let mut out = Map::new();
    for (name, children) in account_fields() {
        let v = current.get(&name).cloned().unwrap_or(Value::Null);
        let v = match (children, v) {
            (Some(children), Value::Object(parts)) => Value::Object(
                children
                    .iter()
                    .map(|c| (c.clone(), parts.get(c).cloned().unwrap_or(Value::Null)))
                    .collect(),
            ),
            (_, v) => v,
        };
        out.insert(name, v);
    }
    for extra in current.keys() {
        assert!(
            out.contains_key(extra) || NOT_IN_EVENTS.contains(&extra.as_str()),
            "{extra} missing from the re-read record"
        );
    }
    Value::Object(out)
}

/// Gap events for created, updated and deleted records: one full re-read record per Id (or an
/// `absent`/`deleted` record, with a tombstone after `GAP_DELETE`), marked, counted; the events
/// after them flow on and the checkpoint ends past them.
#[allow(
    clippy::too_many_lines,
    reason = "one scenario: each gap change type in turn, then the events after them"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gap_events_become_full_reread_records() {
    let kafka = mock_kafka();
    let bootstrap = kafka.bootstrap();
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    let running = start(config(&sim, &bootstrap, "  tombstones: true\n"));

    let a = sim
        .create(
            "Account",
            fields(
                json!({"Name": "Acme", "Phone": "+1 555 0100", "NumberOfEmployees": 12,
                "BillingAddress": {"City": "Paris", "Country": "France"}}),
            ),
        )
        .unwrap();
    let b = sim
        .create("Account", fields(json!({"Name": "Beta"})))
        .unwrap();
    let c = sim
        .create("Account", fields(json!({"Name": "Gamma"})))
        .unwrap();
    sim.delete("Account", &c).unwrap();
    // The >1 MB case: the change to A comes out as a GAP_UPDATE.
    sim.emit_gaps_for(std::slice::from_ref(&a));
    sim.update(
        "Account",
        &a,
        fields(json!({"Name": "Acme Corp", "BillingAddress": {"City": "Lyon"}})),
    )
    .unwrap();
    sim.emit_gaps_for(&[]);
    // One merged gap event for B (present) and C (deleted since: absent on re-read).
    sim.emit_gap("Account", &[b.clone(), c.clone()], GapKind::Create)
        .unwrap();
    sim.emit_gap("Account", std::slice::from_ref(&c), GapKind::Delete)
        .unwrap();
    // Retryable REST refusals (whichever re-read meets them): retried, not dead-lettered.
    sim.fail_next_requests(2, RestFault::ServiceUnavailable);
    sim.emit_gap("Account", std::slice::from_ref(&b), GapKind::Undelete)
        .unwrap();
    let d = sim
        .create("Account", fields(json!({"Name": "Delta"})))
        .unwrap();

    // A, B, C created; C deleted + tombstone; GAP_UPDATE A; GAP_CREATE B, C; GAP_DELETE C +
    // tombstone; GAP_UNDELETE B; D created.
    let records = wait_for_records(&bootstrap, ACCOUNTS, 12, WAIT).await;
    let ops: Vec<(String, String)> = records.iter().map(|r| (key(r), op(r))).collect();
    let expected: Vec<(String, String)> = [
        (&a, "CREATE"),
        (&b, "CREATE"),
        (&c, "CREATE"),
        (&c, "DELETE"),
        (&c, "TOMBSTONE"),
        (&a, "GAP_UPDATE"),
        (&b, "GAP_CREATE"),
        (&c, "GAP_CREATE"),
        (&c, "GAP_DELETE"),
        (&c, "TOMBSTONE"),
        (&b, "GAP_UNDELETE"),
        (&d, "CREATE"),
    ]
    .iter()
    .map(|(id, op)| ((*id).clone(), (*op).to_owned()))
    .collect();
    assert_eq!(ops, expected);

    // Every record of a gap event: marked, with the event's headers and envelope.
    for r in &records[5..11] {
        assert_eq!(header(r, "forcebridge.reread"), "gap");
        assert!(header(r, "forcebridge.change_type").starts_with("GAP_"));
        assert_eq!(header(r, "forcebridge.channel"), CHANNEL);
        assert!(!header(r, "forcebridge.replay_id").is_empty());
        if r.value.is_some() {
            let v = value(r);
            assert_eq!(v["operation"], header(r, "forcebridge.change_type"));
            assert_eq!(v["object"], "Account");
            assert_eq!(v["id"], key(r));
            assert_eq!(v["source"]["replay_id"], header(r, "forcebridge.replay_id"));
            assert_eq!(v["reread"]["mode"], "gap");
            assert!(v["reread"]["read_at"].as_i64().unwrap() > 0);
            assert_eq!(v["commit_user"], sim.config().user_id.as_str());
        }
    }
    for r in [&records[0], &records[11]] {
        assert!(r.header("forcebridge.reread").is_none());
        assert!(value(r).get("reread").is_none());
    }

    assert_eq!(
        value(&records[0])["record"]["BillingAddress"]["City"],
        "Paris"
    );

    // GAP_UPDATE A: the full record after the update, re-read.
    let gap_a = value(&records[5]);
    assert_eq!(gap_a["reread"]["state"], "present");
    let record = &gap_a["record"];
    assert_eq!(record["Name"], "Acme Corp");
    assert_eq!(record["Phone"], "+1 555 0100");
    assert_eq!(record["NumberOfEmployees"], 12);
    assert_eq!(record["BillingAddress"]["City"], "Lyon");
    assert_eq!(record["BillingAddress"]["Country"], "France");
    assert_eq!(record["BillingAddress"]["Street"], Value::Null);
    assert_eq!(record["Rating"], Value::Null);
    assert!(record.as_object().unwrap().contains_key("Rating"));
    // Datetimes are epoch ms, as in change events.
    assert!(record["CreatedDate"].is_i64());
    assert!(record.get("ChangeEventHeader").is_none());
    // Every field of the event schema is present.
    assert_eq!(
        record
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect::<BTreeSet<_>>(),
        account_fields()
            .into_iter()
            .map(|(n, _)| n)
            .collect::<BTreeSet<_>>()
    );

    // GAP_CREATE: B present (its full state at re-read time), C absent.
    let gap_b = value(&records[6]);
    assert_eq!(gap_b["reread"]["state"], "present");
    assert_eq!(gap_b["record"]["Name"], "Beta");
    let gap_c = value(&records[7]);
    assert_eq!(gap_c["reread"]["state"], "absent");
    assert_eq!(gap_c["record"], Value::Null);
    assert_eq!(gap_b["source"]["replay_id"], gap_c["source"]["replay_id"]);
    // GAP_DELETE: deleted, not re-read, then a tombstone.
    let del_c = value(&records[8]);
    assert_eq!(del_c["reread"]["state"], "deleted");
    assert_eq!(del_c["record"], Value::Null);
    assert_eq!(header(&records[9], "forcebridge.change_type"), "GAP_DELETE");
    let und_b = value(&records[10]);
    assert_eq!(und_b["reread"]["state"], "present");

    // Exact contents: A and B as the org holds them (unchanged since the gap events).
    assert_eq!(record, &expected_record(&sim, &a));
    assert_eq!(gap_b["record"], expected_record(&sim, &b));
    assert_eq!(und_b["record"], expected_record(&sim, &b));

    let stats = running.stop().await;
    let snapshot = stats.snapshot();
    let channel = &snapshot.channels[CHANNEL];
    assert_eq!(channel.gap_events, 4);
    assert_eq!(channel.records_reread, 3);
    assert_eq!(channel.records_absent, 1);
    assert_eq!(channel.resyncs, 0);
    assert_eq!(channel.events_dead_lettered, 0);

    // The checkpoint is the newest event's, past every gap event.
    assert_eq!(
        checkpoint(&bootstrap).await,
        header(&records[11], "forcebridge.replay_id")
    );
    sim.shutdown().await;
}

/// A transaction over the (lowered) overflow threshold: change events for its first N changes,
/// then one GAP_OVERFLOW whose re-sync puts every Account of the org into Kafka, marked
/// `resync`, paged through `nextRecordsUrl`; the checkpoint ends past the overflow event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overflow_transaction_resyncs_the_object() {
    let kafka = mock_kafka();
    let bootstrap = kafka.bootstrap();
    let sim = SimOrg::start(SimConfig {
        overflow_threshold: 50,
        query_batch_size: 40,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let earlier = sim.generate("Account", 10).unwrap();
    // One transaction of 60 creates.
    let big = sim.generate("Account", 60).unwrap();
    let running = start(config(&sim, &bootstrap, ""));

    let all: BTreeSet<String> = earlier.iter().chain(&big).cloned().collect();
    assert_eq!(all.len(), 70);
    let records = wait_for_records(&bootstrap, ACCOUNTS, 10 + 50 + 70, WAIT).await;
    assert_eq!(records.len(), 130);

    // Change events: the 10 earlier creates, then the first 50 of the transaction.
    let creates: Vec<String> = records[..60].iter().map(key).collect();
    let expected: Vec<String> = earlier.iter().chain(&big[..50]).cloned().collect();
    assert_eq!(creates, expected);
    assert!(records[..60].iter().all(|r| op(r) == "CREATE"));

    // The re-sync: every Account once, marked, with its current values.
    let resync = &records[60..];
    let mut by_id: BTreeMap<String, Value> = BTreeMap::new();
    for r in resync {
        assert_eq!(op(r), "GAP_OVERFLOW");
        assert_eq!(header(r, "forcebridge.reread"), "resync");
        assert_eq!(header(r, "forcebridge.change_type"), "GAP_OVERFLOW");
        let v = value(r);
        assert_eq!(v["reread"]["mode"], "resync");
        assert_eq!(v["reread"]["state"], "present");
        assert_eq!(v["id"], key(r));
        assert_eq!(v["object"], "Account");
        assert!(by_id.insert(key(r), v).is_none(), "{} twice", key(r));
    }
    assert_eq!(by_id.keys().cloned().collect::<BTreeSet<_>>(), all);
    for (id, v) in &by_id {
        assert_eq!(v["record"], expected_record(&sim, id), "{id}");
    }
    // The overflowed records exist in Kafka only through the re-sync; their values are the
    // org's, with the generator's fields set.
    for id in &big[50..] {
        assert!(!creates.contains(id));
        assert!(
            by_id[id]["record"]["Name"]
                .as_str()
                .unwrap()
                .starts_with("Sim Account")
        );
    }
    assert_eq!(
        value(&records[0])["record"]["Name"],
        by_id[&earlier[0]]["record"]["Name"]
    );
    // One overflow event: every re-sync record carries its replay id.
    let overflow_replay = header(&resync[0], "forcebridge.replay_id");
    assert!(
        resync
            .iter()
            .all(|r| header(r, "forcebridge.replay_id") == overflow_replay)
    );

    let stats = running.stop().await;
    let snapshot = stats.snapshot();
    let channel = &snapshot.channels[CHANNEL];
    assert_eq!(channel.gap_events, 1);
    assert_eq!(channel.resyncs, 1);
    assert_eq!(channel.records_reread, 70);
    assert_eq!(snapshot.records_by_topic[ACCOUNTS], 130);
    assert_eq!(checkpoint(&bootstrap).await, overflow_replay);
    sim.shutdown().await;
}

/// A gap event whose re-read Salesforce refuses for good (an Id the org rejects in the filter)
/// goes to the dead-letter topic with stage `gap` and the reason; the events after it flow on
/// and the checkpoint moves past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_event_that_cannot_be_reread_is_dead_lettered() {
    let kafka = mock_kafka();
    let bootstrap = kafka.bootstrap();
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    let running = start(config(&sim, &bootstrap, ""));
    // Id-shaped, but its checksum is wrong: the org refuses the query
    // (INVALID_QUERY_FILTER_OPERATOR).
    let bad = "001SIM000000001XYZ".to_owned();
    assert!(forcebridge::salesforce::sfid::normalize(&bad).is_none());
    let dead_replay = hex::encode(
        sim.emit_gap("Account", std::slice::from_ref(&bad), GapKind::Update)
            .unwrap(),
    );
    let a = sim
        .create("Account", fields(json!({"Name": "After"})))
        .unwrap();

    let records = wait_for_records(&bootstrap, ACCOUNTS, 1, WAIT).await;
    assert_eq!(records.len(), 1);
    assert_eq!(
        (key(&records[0]), op(&records[0])),
        (a, "CREATE".to_owned())
    );
    let dead = wait_for_records(&bootstrap, "forcebridge.dlq", 1, WAIT).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(header(&dead[0], "forcebridge.error.stage"), "gap");
    assert_eq!(header(&dead[0], "forcebridge.replay_id"), dead_replay);
    assert_eq!(key(&dead[0]), dead_replay);
    let reason = header(&dead[0], "forcebridge.error.reason");
    assert!(
        reason.starts_with("re-reading Account over REST failed")
            && reason.contains("INVALID_QUERY_FILTER_OPERATOR"),
        "{reason}"
    );

    let stats = running.stop().await;
    let channel = &stats.snapshot().channels[CHANNEL];
    assert_eq!(channel.gap_events, 1);
    assert_eq!(channel.events_dead_lettered, 1);
    assert_eq!(channel.records_reread, 0);
    assert_eq!(
        checkpoint(&bootstrap).await,
        header(&records[0], "forcebridge.replay_id")
    );
    sim.shutdown().await;
}

/// An overflow of deletes, re-synced through a Bulk API 2.0 job (`rest_below: 0`): the records
/// deleted past the threshold have no DELETE event, so the re-sync produces each of them as
/// `deleted` (the replication API, and the job's `queryAll` rows), with a tombstone; the records
/// still alive come as `present`. A loader applying the topic holds exactly the org's records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overflow_of_deletes_resyncs_through_bulk_and_deletes_them() {
    let kafka = mock_kafka();
    let bootstrap = kafka.bootstrap();
    let sim = SimOrg::start(SimConfig {
        overflow_threshold: 50,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    // Transactions under the threshold: no overflow before the deletes.
    let ids: Vec<String> = (0..3)
        .flat_map(|_| sim.generate("Account", 40).unwrap())
        .collect();
    let running = start(config(
        &sim,
        &bootstrap,
        "  tombstones: true\n  snapshot:\n    rest_below: 0\n",
    ));
    wait_for_records(&bootstrap, ACCOUNTS, 120, WAIT).await;
    let mut tx = sim.transaction();
    for id in &ids[..70] {
        tx.delete("Account", id).unwrap();
    }
    tx.commit().unwrap();
    // 50 DELETE events (each with its tombstone), then the overflow's re-sync.
    let records = tokio::time::timeout(WAIT, async {
        loop {
            let records = support::kafka::read_topic(&bootstrap, ACCOUNTS);
            let deleted: BTreeSet<String> = records
                .iter()
                .filter(|r| r.value.is_some())
                .filter(|r| op(r) == "GAP_OVERFLOW" && value(r)["reread"]["state"] == "deleted")
                .map(key)
                .collect();
            if deleted.len() >= 20 {
                return records;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the overflow's deletes are produced");
    let stats = running.stop().await;
    assert_eq!(stats.snapshot().channels[CHANNEL].resyncs, 1);
    let resync: Vec<&ConsumedRecord> = records
        .iter()
        .filter(|r| header(r, "forcebridge.change_type") == "GAP_OVERFLOW")
        .collect();
    let deleted: BTreeSet<String> = resync
        .iter()
        .filter(|r| r.value.is_some() && value(r)["reread"]["state"] == "deleted")
        .map(|r| key(r))
        .collect();
    let expected: BTreeSet<String> = ids[..70].iter().cloned().collect();
    assert_eq!(
        deleted, expected,
        "every deleted record, beyond the 50 events too"
    );
    assert!(
        resync.iter().any(|r| r.value.is_none()),
        "tombstones after the deletes"
    );
    // A loader: present → the row, deleted or a tombstone → removed.
    let mut rows: BTreeSet<String> = BTreeSet::new();
    for r in &records {
        match r
            .value
            .as_ref()
            .map(|_| (op(r), value(r)["reread"]["state"].clone()))
        {
            None => {
                rows.remove(&key(r));
            }
            Some((o, _)) if o == "CREATE" => {
                rows.insert(key(r));
            }
            Some((o, _)) if o == "DELETE" => {
                rows.remove(&key(r));
            }
            Some((_, state)) if state == "present" => {
                rows.insert(key(r));
            }
            Some(_) => {
                rows.remove(&key(r));
            }
        }
    }
    let live: BTreeSet<String> = sim
        .records("Account")
        .iter()
        .map(|r| r["Id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(rows, live);
    sim.shutdown().await;
}
