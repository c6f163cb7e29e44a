//! The source path end to end: simulated org → Pub/Sub → forcebridge → Kafka (the librdkafka
//! mock cluster, and a real tansu broker), asserting the exact records.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{Value, json};

use forcebridge::config::Config;

use forcebridge::sim::{SimConfig, SimOrg};
use support::kafka::{ConsumedRecord, Tansu, read_topic, wait_for_records};
use support::source::{
    MOCK_KAFKA, WAIT, checkpoints, config_with, fields, header, key, mock_kafka, order,
    record_texts, replay_ids, start, value,
};

const ACCOUNTS: &str = "salesforce.Account";

fn config(sim: &SimOrg, bootstrap: &str, channels: &[&str], extra_source: &str) -> Config {
    config_with(sim, bootstrap, channels, extra_source, MOCK_KAFKA)
}

fn names(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .expect("array of field names")
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// Create, update (with a nulled field), delete (+ tombstone), undelete, and a multi-record
/// transaction become exactly the expected Kafka records, keys, envelopes and headers.
#[allow(
    clippy::too_many_lines,
    reason = "one scenario, each record checked whole"
)]
async fn exact_records_scenario(bootstrap: &str, extra_kafka: &str) {
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    let running = start(config_with(
        &sim,
        bootstrap,
        &["/data/AccountChangeEvent"],
        "  tombstones: true\n",
        extra_kafka,
    ));

    let a = sim
        .create(
            "Account",
            fields(json!({"Name": "Acme", "Phone": "+1 555 0100", "BillingAddress": {"City": "Paris", "Country": "France"}})),
        )
        .unwrap();
    sim.update(
        "Account",
        &a,
        fields(json!({"Name": "Acme Corp", "Phone": null, "BillingAddress": {"City": "Lyon"}})),
    )
    .unwrap();
    sim.delete("Account", &a).unwrap();
    sim.undelete("Account", &a).unwrap();
    let mut tx = sim.transaction();
    let b = tx
        .create("Account", fields(json!({"Name": "Beta"})))
        .unwrap();
    let c = tx
        .create("Account", fields(json!({"Name": "Gamma"})))
        .unwrap();
    tx.commit().unwrap();
    let mut tx = sim.transaction();
    tx.update("Account", &b, fields(json!({"Rating": "Hot"})))
        .unwrap();
    tx.update("Account", &c, fields(json!({"Rating": "Hot"})))
        .unwrap();
    tx.commit().unwrap();

    // A: create, update, delete, tombstone, undelete; B and C: create, update.
    let records = wait_for_records(bootstrap, ACCOUNTS, 9, WAIT).await;
    assert_eq!(
        records.len(),
        9,
        "records: {:?}",
        records.iter().map(key).collect::<Vec<_>>()
    );
    let mut by_key: BTreeMap<String, Vec<&ConsumedRecord>> = BTreeMap::new();
    for r in &records {
        by_key.entry(key(r)).or_default().push(r);
    }
    let ops = |id: &str| -> Vec<String> {
        by_key[id]
            .iter()
            .map(|r| match &r.value {
                None => "TOMBSTONE".to_owned(),
                Some(_) => value(r)["operation"].as_str().unwrap().to_owned(),
            })
            .collect()
    };
    assert_eq!(
        ops(&a),
        ["CREATE", "UPDATE", "DELETE", "TOMBSTONE", "UNDELETE"]
    );
    assert_eq!(ops(&b), ["CREATE", "UPDATE"]);
    assert_eq!(ops(&c), ["CREATE", "UPDATE"]);

    // Every non-tombstone record: envelope and headers agree.
    for r in records.iter().filter(|r| r.value.is_some()) {
        let v = value(r);
        assert_eq!(v["object"], "Account");
        assert_eq!(v["id"], key(r));
        assert_eq!(v["source"]["channel"], "/data/AccountChangeEvent");
        assert_eq!(header(r, "forcebridge.change_type"), v["operation"]);
        assert_eq!(header(r, "forcebridge.replay_id"), v["source"]["replay_id"]);
        assert_eq!(header(r, "forcebridge.schema_id"), v["source"]["schema_id"]);
        assert_eq!(header(r, "forcebridge.channel"), "/data/AccountChangeEvent");
        assert!(!header(r, "forcebridge.event_id").is_empty());
        assert_eq!(v["commit_user"], sim.config().user_id.as_str());
    }

    let create = value(by_key[&a][0]);
    assert_eq!(create["record"]["Name"], "Acme");
    assert_eq!(create["record"]["BillingAddress"]["City"], "Paris");
    assert_eq!(create["record"]["BillingAddress"]["Country"], "France");

    let update = value(by_key[&a][1]);
    let changed = names(&update["changed_fields"]);
    for f in ["Name", "Phone", "LastModifiedDate", "BillingAddress.City"] {
        assert!(
            changed.contains(f),
            "{f} missing from changed_fields {changed:?}"
        );
    }
    assert_eq!(names(&update["nulled_fields"]), set(&["Phone"]));
    assert_eq!(update["record"]["Name"], "Acme Corp");
    assert_eq!(update["record"]["Phone"], Value::Null);
    assert!(update["record"].as_object().unwrap().contains_key("Phone"));
    assert_eq!(update["record"]["BillingAddress"], json!({"City": "Lyon"}));
    assert!(
        update["record"].get("Rating").is_none(),
        "unchanged fields stay out"
    );

    let delete = value(by_key[&a][2]);
    assert_eq!(delete["record"], json!({}));
    assert!(
        by_key[&a][3].value.is_none(),
        "a tombstone follows the delete"
    );
    assert_eq!(header(by_key[&a][3], "forcebridge.change_type"), "DELETE");

    // The multi-record update: one event (same replay id) fanned out to B and C.
    let (ub, uc) = (value(by_key[&b][1]), value(by_key[&c][1]));
    assert_eq!(ub["source"]["replay_id"], uc["source"]["replay_id"]);
    assert_eq!(ub["record"]["Rating"], "Hot");
    assert_eq!(uc["record"]["Rating"], "Hot");
    // The two creates of one transaction share its key, in sequence.
    let (cb, cc) = (value(by_key[&b][0]), value(by_key[&c][0]));
    assert_eq!(cb["transaction_key"], cc["transaction_key"]);
    assert_ne!(cb["source"]["replay_id"], cc["source"]["replay_id"]);
    assert_eq!(
        [
            cb["sequence_number"].as_i64().unwrap(),
            cc["sequence_number"].as_i64().unwrap()
        ],
        [1, 2]
    );

    running.stop().await;

    // The checkpoint names the newest replay id of the channel.
    let newest = records
        .iter()
        .map(|r| header(r, "forcebridge.replay_id"))
        .max()
        .unwrap();
    let store = checkpoints(bootstrap).await;
    let checkpoint = store
        .get("/data/AccountChangeEvent")
        .expect("checkpoint saved");
    assert_eq!(hex::encode(&checkpoint.replay_id), newest);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_become_exact_records_on_the_mock_cluster() {
    let kafka = mock_kafka();
    exact_records_scenario(&kafka.bootstrap(), MOCK_KAFKA).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_become_exact_records_on_a_real_broker() {
    let Some(tansu) = tokio::task::spawn_blocking(Tansu::start_or_skip)
        .await
        .unwrap()
    else {
        return;
    };
    // A real broker: forcebridge creates the per-object and dead-letter topics itself.
    exact_records_scenario(&tansu.bootstrap(), "").await;
}

/// Stopped mid-stream — aborted like a crash, then stopped gracefully — and restarted each time
/// from its checkpoint: every event arrives, none missing; repeats only after the crash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_resumes_from_the_checkpoint_without_loss() {
    let kafka = mock_kafka();
    let bootstrap = kafka.bootstrap();
    kafka.create_topic(ACCOUNTS, 3);
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    let cfg = || config(&sim, &bootstrap, &["/data/AccountChangeEvent"], "");

    let mut ids: BTreeSet<String> = sim.generate("Account", 3000).unwrap().into_iter().collect();

    // Run 1: killed (task aborted, no drain) once a third has been produced.
    let first = start(cfg());
    tokio::time::timeout(WAIT, async {
        while first.stats.snapshot().records_produced() < 1000 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the first run makes progress");
    first.handle.abort();
    let _ = first.handle.await;
    let after_crash = read_topic(&bootstrap, ACCOUNTS).len();
    assert!(
        after_crash < 3000,
        "the crash should come mid-stream ({after_crash})"
    );

    // Run 2: more changes arrive while it runs; stopped gracefully once all are in.
    ids.extend(sim.generate("Account", 1000).unwrap());
    let second = start(cfg());
    let records = wait_for_distinct(&bootstrap, 4000).await;
    second.stop().await;
    let (distinct, all) = replay_ids(&records);
    assert_eq!(distinct.len(), 4000, "every event is in Kafka");
    let keys: BTreeSet<String> = records.iter().map(key).collect();
    assert_eq!(keys, ids, "every record Id is in Kafka");
    let repeats_after_crash = all.len() - distinct.len();
    eprintln!("after the crash: {repeats_after_crash} repeated records (at-least-once)");
    // The checkpoint keeps the replay id as the org sent it: 10 bytes on a real org (and in the
    // simulated one), which run 3 resumes from.
    let store = checkpoints(&bootstrap).await;
    let checkpoint = store
        .get("/data/AccountChangeEvent")
        .expect("checkpoint saved");
    assert_eq!(checkpoint.replay_id.len(), 10);

    // Run 3: after a graceful stop nothing is repeated.
    let before = all.len();
    sim.generate("Account", 500).unwrap();
    let third = start(cfg());
    let records = wait_for_distinct(&bootstrap, 4500).await;
    third.stop().await;
    let (distinct, all) = replay_ids(&records);
    assert_eq!(distinct.len(), 4500);
    assert_eq!(all.len() - before, 500, "a graceful stop repeats nothing");
    sim.shutdown().await;
}

async fn wait_for_distinct(bootstrap: &str, n: usize) -> Vec<ConsumedRecord> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let records = wait_for_records(bootstrap, ACCOUNTS, n, WAIT).await;
        let (distinct, _) = replay_ids(&records);
        if distinct.len() >= n || tokio::time::Instant::now() > deadline {
            return records;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An unknown schema id, a blank one and a corrupt payload go to the dead-letter topic with the
/// reason and the raw bytes; the events around them flow on and the checkpoint moves past them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_events_go_to_the_dead_letter_topic() {
    let kafka = mock_kafka();
    let bootstrap = kafka.bootstrap();
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    let channel = "/event/Order_Event__e";
    let running = start(config(&sim, &bootstrap, &[channel], ""));

    sim.publish_event(channel, order("ORD-1")).unwrap();
    let first = wait_for_records(&bootstrap, "salesforce.Order_Event__e", 1, WAIT).await;
    let schema_id = header(&first[0], "forcebridge.schema_id");
    sim.inject_raw_event(channel, "NoSuchSchemaId0000000w", b"\x02ab".to_vec())
        .unwrap();
    sim.inject_raw_event(channel, "", b"\x02ab".to_vec())
        .unwrap();
    let corrupt = b"\x80\x80\x80\x80\x80\x80".to_vec();
    sim.inject_raw_event(channel, &schema_id, corrupt.clone())
        .unwrap();
    let last = sim.publish_event(channel, order("ORD-2")).unwrap();

    let good = wait_for_records(&bootstrap, "salesforce.Order_Event__e", 2, WAIT).await;
    // Keys (event ids) spread over partitions: compare contents, not positions.
    assert_eq!(
        record_texts(&good, "Order_Number__c"),
        set(&["ORD-1", "ORD-2"])
    );
    let dead = wait_for_records(&bootstrap, "forcebridge.dlq", 3, WAIT).await;
    assert_eq!(dead.len(), 3);
    let stages: Vec<String> = dead
        .iter()
        .map(|r| header(r, "forcebridge.error.stage"))
        .collect();
    assert_eq!(stages, ["schema", "schema", "decode"]);
    let reasons: Vec<String> = dead
        .iter()
        .map(|r| header(r, "forcebridge.error.reason"))
        .collect();
    assert!(
        reasons[0].contains("NoSuchSchemaId0000000w"),
        "{}",
        reasons[0]
    );
    assert!(
        reasons[1].to_lowercase().contains("blank"),
        "{}",
        reasons[1]
    );
    assert!(!reasons[2].is_empty());
    assert_eq!(
        dead[2].value.as_deref(),
        Some(corrupt.as_slice()),
        "raw bytes kept"
    );
    for r in &dead {
        assert_eq!(header(r, "forcebridge.channel"), channel);
        assert_eq!(key(r), header(r, "forcebridge.replay_id"));
    }

    running.stop().await;
    let store = checkpoints(&bootstrap).await;
    assert_eq!(
        store.get(channel).unwrap().replay_id.as_ref(),
        last.as_slice()
    );
    sim.shutdown().await;
}

/// `/data/ChangeEvents` on a real org delivers its events with a blank schema id
/// (pozil/pub-sub-api-node-client#34, forcedotcom/pub-sub-api#63), and so does the simulated org:
/// each event is decoded with the schema of the entity it names and lands in its object's topic,
/// saying which schema decoded it; a payload naming an entity the org has no channel for is
/// dead-lettered with the reason, and the events after it flow on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_events_without_schema_ids_land_in_their_object_topics() {
    let kafka = mock_kafka();
    let bootstrap = kafka.bootstrap();
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    let channel = "/data/ChangeEvents";
    let running = start(config(&sim, &bootstrap, &[channel], ""));

    let accounts: BTreeSet<String> = sim.generate("Account", 20).unwrap().into_iter().collect();
    // A payload that names `Nope__c` first, as a change event names its entity.
    let mut nope = vec![14];
    nope.extend_from_slice(b"Nope__c");
    nope.extend_from_slice(&[0, 0, 0]);
    sim.inject_raw_event("/data/AccountChangeEvent", "", nope.clone())
        .unwrap();
    let contacts: BTreeSet<String> = sim.generate("Contact", 10).unwrap().into_iter().collect();

    let got = wait_for_records(&bootstrap, ACCOUNTS, 20, WAIT).await;
    assert_eq!(got.iter().map(key).collect::<BTreeSet<_>>(), accounts);
    let got_contacts = wait_for_records(&bootstrap, "salesforce.Contact", 10, WAIT).await;
    assert_eq!(
        got_contacts.iter().map(key).collect::<BTreeSet<_>>(),
        contacts
    );
    for r in got.iter().chain(&got_contacts) {
        assert_eq!(header(r, "forcebridge.channel"), channel);
        assert!(!header(r, "forcebridge.schema_id").is_empty());
    }
    let dead = wait_for_records(&bootstrap, "forcebridge.dlq", 1, WAIT).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(header(&dead[0], "forcebridge.error.stage"), "schema");
    let reason = header(&dead[0], "forcebridge.error.reason");
    assert!(
        reason.contains("blank") && reason.contains("Nope__c"),
        "{reason}"
    );
    assert_eq!(
        dead[0].value.as_deref(),
        Some(nope.as_slice()),
        "raw bytes kept"
    );
    running.stop().await;
    sim.shutdown().await;
}

/// With `replay_rejected: fail`, a checkpoint whose replay id the org rejects stops the channel
/// with an error that names Salesforce's error code, instead of looping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_replay_id_is_a_clear_error() {
    let kafka = mock_kafka();
    let bootstrap = kafka.bootstrap();
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    sim.generate("Account", 3).unwrap();
    let store = checkpoints(&bootstrap).await;
    store
        .save("/data/AccountChangeEvent", &[0xde, 0xad, 0xbe, 0xef])
        .await
        .unwrap();
    drop(store);

    let running = start(config(
        &sim,
        &bootstrap,
        &["/data/AccountChangeEvent"],
        "  replay_rejected: fail\n",
    ));
    let outcome = tokio::time::timeout(WAIT, running.handle)
        .await
        .expect("the pipeline stops by itself")
        .unwrap();
    let message = outcome
        .expect_err("a rejected replay id is an error")
        .to_string();
    assert!(message.contains("replayid.corrupted"), "{message}");
    assert!(message.contains("/data/AccountChangeEvent"), "{message}");
    sim.shutdown().await;
}

/// A schema change mid-stream: the next event carries a new schema id, which is fetched once and
/// used, with no restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_change_mid_stream_needs_no_restart() {
    let kafka = mock_kafka();
    let bootstrap = kafka.bootstrap();
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    let running = start(config(&sim, &bootstrap, &["/data/AccountChangeEvent"], ""));
    sim.create("Account", fields(json!({"Name": "Before"})))
        .unwrap();
    wait_for_records(&bootstrap, ACCOUNTS, 1, WAIT).await;
    sim.add_field("Account", "Tier__c", json!(["null", "string"]))
        .unwrap();
    sim.create(
        "Account",
        fields(json!({"Name": "After", "Tier__c": "Gold"})),
    )
    .unwrap();
    let records = wait_for_records(&bootstrap, ACCOUNTS, 2, WAIT).await;
    assert_eq!(records.len(), 2);
    // Different record Ids may sit on different partitions: find each by its name.
    let by_name = |name: &str| {
        records
            .iter()
            .map(value)
            .find(|v| v["record"]["Name"] == name)
            .unwrap()
    };
    let (before, after) = (by_name("Before"), by_name("After"));
    assert_ne!(before["source"]["schema_id"], after["source"]["schema_id"]);
    assert_eq!(after["record"]["Tier__c"], "Gold");
    assert_eq!(running.stats.snapshot().schemas_fetched, 2);
    running.stop().await;
    sim.shutdown().await;
}

/// With `replay_rejected: earliest`, a rejected replay id is applied once: the channel
/// resumes from the oldest retained event, a gap marker lands in the dead-letter topic, the gap
/// is counted, and the checkpoint moves on to a valid replay id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_replay_id_resumes_from_earliest_with_a_gap_marker() {
    let kafka = mock_kafka();
    let bootstrap = kafka.bootstrap();
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    let ids: BTreeSet<String> = sim.generate("Account", 3).unwrap().into_iter().collect();
    let channel = "/data/AccountChangeEvent";
    let store = checkpoints(&bootstrap).await;
    store
        .save(channel, &[0xde, 0xad, 0xbe, 0xef])
        .await
        .unwrap();
    drop(store);

    let running = start(config(
        &sim,
        &bootstrap,
        &[channel],
        "  replay_rejected: earliest\n",
    ));
    let records = wait_for_records(&bootstrap, ACCOUNTS, 3, WAIT).await;
    assert_eq!(records.iter().map(key).collect::<BTreeSet<_>>(), ids);
    let gaps = wait_for_records(&bootstrap, "forcebridge.dlq", 1, WAIT).await;
    assert_eq!(gaps.len(), 1);
    assert_eq!(header(&gaps[0], "forcebridge.error.stage"), "replay");
    assert_eq!(header(&gaps[0], "forcebridge.replay_id"), "deadbeef");
    let marker = value(&gaps[0]);
    assert_eq!(marker["resumed_from"], "earliest");
    assert_eq!(marker["channel"], channel);
    assert!(
        marker["reason"]
            .as_str()
            .unwrap()
            .contains("replayid.corrupted")
    );
    assert_eq!(running.stats.snapshot().channels[channel].replay_gaps, 1);
    running.stop().await;

    let store = checkpoints(&bootstrap).await;
    let newest = records
        .iter()
        .map(|r| header(r, "forcebridge.replay_id"))
        .max()
        .unwrap();
    assert_eq!(hex::encode(store.get(channel).unwrap().replay_id), newest);
    sim.shutdown().await;
}

/// The org resets every stream and revokes the session mid-stream: the pipeline logs in again,
/// resubscribes from the last event it handed on, and every event arrives exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_resets_and_revoked_tokens_lose_and_repeat_nothing() {
    let kafka = mock_kafka();
    let bootstrap = kafka.bootstrap();
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    let running = start(config(&sim, &bootstrap, &["/data/AccountChangeEvent"], ""));
    let mut ids: BTreeSet<String> = sim.generate("Account", 500).unwrap().into_iter().collect();
    wait_for_distinct(&bootstrap, 500).await;

    sim.revoke_tokens();
    sim.reset_streams();
    ids.extend(sim.generate("Account", 500).unwrap());
    let records = wait_for_distinct(&bootstrap, 1000).await;
    let (distinct, all) = replay_ids(&records);
    assert_eq!(distinct.len(), 1000, "nothing lost");
    assert_eq!(all.len(), 1000, "nothing repeated");
    assert_eq!(records.iter().map(key).collect::<BTreeSet<_>>(), ids);
    let channel = &running.stats.snapshot().channels["/data/AccountChangeEvent"];
    assert!(channel.streams_opened >= 2, "{channel:?}");
    running.stop().await;
    sim.shutdown().await;
}

/// Echo suppression: changes tagged with the connector's client tag (`name: test`) are dropped by
/// default and marked with `source.echo.mode: mark`; untagged changes and other tags pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echoes_of_our_own_writes_are_dropped_or_marked() {
    for (mode, expect_echoes) in [("drop", false), ("mark", true)] {
        let kafka = mock_kafka();
        let bootstrap = kafka.bootstrap();
        let sim = SimOrg::start(SimConfig::default()).await.unwrap();
        let running = start(config(
            &sim,
            &bootstrap,
            &["/data/AccountChangeEvent"],
            &format!("  echo:\n    mode: {mode}\n"),
        ));
        let ours = sim.with_client_tag("test");
        let theirs = sim.with_client_tag("test-other");
        let a = ours
            .create("Account", fields(json!({"Name": "Echo"})))
            .unwrap();
        ours.update("Account", &a, fields(json!({"Rating": "Hot"})))
            .unwrap();
        let b = theirs
            .create("Account", fields(json!({"Name": "Foreign"})))
            .unwrap();
        let c = sim
            .create("Account", fields(json!({"Name": "Plain"})))
            .unwrap();
        // The last change, untagged, proves everything before it was processed.
        let expected = if expect_echoes { 4 } else { 2 };
        let records = wait_for_records(&bootstrap, ACCOUNTS, expected, WAIT).await;
        let stats = running.stats.clone();
        running.stop().await;
        let keys: BTreeSet<String> = records.iter().map(key).collect();
        assert_eq!(records.len(), expected, "{mode}: {keys:?}");
        if expect_echoes {
            assert_eq!(keys, set(&[&a, &b, &c]));
            for r in &records {
                let marked = r.header("forcebridge.echo").map(|v| v.to_vec());
                if key(r) == a {
                    assert_eq!(marked.as_deref(), Some(&b"client_tag"[..]), "{mode}");
                } else {
                    assert_eq!(marked, None, "{mode}: {}", key(r));
                }
            }
        } else {
            assert_eq!(keys, set(&[&b, &c]), "{mode}");
        }
        let echoes = stats.snapshot().channels["/data/AccountChangeEvent"].echoes;
        assert_eq!(echoes, 2, "{mode}");
        sim.shutdown().await;
    }
}

/// `replay_rejected: latest`: the events retained before the rejection are skipped (that is the
/// policy's price), a gap marker says so, and new events flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_replay_id_resumes_from_latest_with_a_gap_marker() {
    let kafka = mock_kafka();
    let bootstrap = kafka.bootstrap();
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    let skipped: BTreeSet<String> = sim.generate("Account", 3).unwrap().into_iter().collect();
    let channel = "/data/AccountChangeEvent";
    let store = checkpoints(&bootstrap).await;
    store
        .save(channel, &[0xde, 0xad, 0xbe, 0xef])
        .await
        .unwrap();
    drop(store);

    let running = start(config(
        &sim,
        &bootstrap,
        &[channel],
        "  replay_rejected: latest\n",
    ));
    let gaps = wait_for_records(&bootstrap, "forcebridge.dlq", 1, WAIT).await;
    assert_eq!(gaps.len(), 1);
    assert_eq!(value(&gaps[0])["resumed_from"], "latest");
    assert_eq!(header(&gaps[0], "forcebridge.replay_id"), "deadbeef");

    // The new subscription starts at the tip: keep making changes until the first arrives.
    let mut made = BTreeSet::new();
    let deadline = std::time::Instant::now() + WAIT;
    let records = loop {
        made.insert(
            sim.create("Account", fields(json!({"Name": "After the gap"})))
                .unwrap(),
        );
        let records = wait_for_records(&bootstrap, ACCOUNTS, 1, Duration::from_millis(300)).await;
        if !records.is_empty() {
            break records;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no event after the gap"
        );
    };
    running.stop().await;
    let keys: BTreeSet<String> = records.iter().map(key).collect();
    assert!(keys.is_subset(&made), "{keys:?}");
    assert!(
        keys.is_disjoint(&skipped),
        "events before the gap were skipped"
    );
    assert_eq!(
        gap_markers(&bootstrap).await,
        1,
        "the marker is written once"
    );
    sim.shutdown().await;
}

async fn gap_markers(bootstrap: &str) -> usize {
    wait_for_records(bootstrap, "forcebridge.dlq", 1, Duration::from_millis(200))
        .await
        .len()
}

/// A change whose Kafka record would exceed Kafka's size limit (`message.max.bytes`) goes to the
/// dead-letter topic (stage `size`, the reason naming the record and the limit, the raw bytes cut
/// to fit and marked) instead of stopping the channel; the changes around it flow on and the
/// checkpoint moves past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_over_the_kafka_size_limit_is_dead_lettered() {
    let kafka = mock_kafka();
    let bootstrap = kafka.bootstrap();
    kafka.create_topic(ACCOUNTS, 1);
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    let running = start(config_with(
        &sim,
        &bootstrap,
        &["/data/AccountChangeEvent"],
        "",
        "  create_topics: false\n  properties:\n    message.max.bytes: \"20000\"\n",
    ));
    let small = sim
        .create("Account", fields(json!({"Name": "Small one"})))
        .unwrap();
    let big = sim
        .create(
            "Account",
            fields(json!({"Name": "Big one", "Description": "x".repeat(30_000)})),
        )
        .unwrap();
    let after = sim
        .create("Account", fields(json!({"Name": "After it"})))
        .unwrap();

    let records = wait_for_records(&bootstrap, ACCOUNTS, 2, WAIT).await;
    assert_eq!(
        records.iter().map(key).collect::<Vec<_>>(),
        [small, after.clone()]
    );
    let dead = wait_for_records(&bootstrap, "forcebridge.dlq", 1, WAIT).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(header(&dead[0], "forcebridge.error.stage"), "size");
    let reason = header(&dead[0], "forcebridge.error.reason");
    assert!(
        reason.contains(&big) && reason.contains("20000"),
        "{reason}"
    );
    let original: usize = header(&dead[0], "forcebridge.error.truncated_from")
        .parse()
        .expect("the raw bytes were cut to fit");
    assert!(original > 30_000, "{original}");
    let kept = dead[0].value.as_ref().unwrap().len();
    assert!(kept < 20_000 && kept > 10_000, "{kept}");

    running.stop().await;
    let store = checkpoints(&bootstrap).await;
    assert_eq!(
        hex::encode(store.get("/data/AccountChangeEvent").unwrap().replay_id),
        header(&records[1], "forcebridge.replay_id")
    );
    sim.shutdown().await;
}
