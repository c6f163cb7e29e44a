//! Resync instead of a hole (issue 20, item 3): a checkpoint whose replay id the org no longer
//! has (the events were purged while forcebridge was stopped) is followed by a re-read of what
//! changed since its commit timestamp, deletes included, then the stream; the replica built from
//! the topic equals the org. With `replay_rejected: earliest` instead, the same outage leaves
//! the replica wrong: the test shows the step is needed.

mod support;

use std::time::{Duration, SystemTime};

use serde_json::{Map, Value, json};

use forcebridge::config::Config;
use forcebridge::sim::{SimConfig, SimOrg};
use support::kafka::{MockKafka, read_topic};
use support::replica::{assert_converged, load, org_and_replica};
use support::source::{WAIT, header, start, value};

const ACCOUNTS: &str = "salesforce.Account";
const CHANNEL: &str = "/data/AccountChangeEvent";

fn config(sim: &SimOrg, bootstrap: &str, policy: &str) -> Config {
    let extra = format!(
        "  replay_rejected: {policy}\n  tombstones: true\n  snapshot:\n    resync_margin: 1s\n"
    );
    let text = support::source::config_text(
        sim,
        bootstrap,
        &[CHANNEL],
        &extra,
        support::source::MOCK_KAFKA,
    );
    Config::from_yaml(&text, |_| None).expect("test config is valid")
}

fn fields(value: Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap_or_default()
}

/// Streams `ids`' creation, stops, then changes the org while stopped (updates, creates,
/// deletes, an undelete) and purges every event; returns the org and Kafka to restart on.
async fn outage(policy: &str) -> (SimOrg, MockKafka, String) {
    let kafka = support::source::mock_kafka();
    kafka.create_topic(ACCOUNTS, 1);
    let bootstrap = kafka.bootstrap();
    let sim = SimOrg::start(SimConfig {
        keepalive_interval: Duration::from_millis(200),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let ids = sim.generate("Account", 300).unwrap();
    // The last change streamed comes seconds after the others: the resync reads from it (minus
    // the 1 s margin), not from the creations (commit timestamps have second precision).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let last = json!({"Name": "streamed last"});
    sim.update("Account", &ids[299], fields(last)).unwrap();
    let running = start(config(&sim, &bootstrap, policy));
    running.wait_produced(301).await;
    running.stop().await;

    for (n, id) in ids.iter().enumerate().take(40) {
        let change = json!({"Name": format!("while stopped {n}"), "Phone": null});
        sim.update("Account", id, fields(change)).unwrap();
    }
    for id in &ids[40..60] {
        sim.delete("Account", id).unwrap();
    }
    sim.undelete("Account", &ids[59]).unwrap();
    for n in 0..25 {
        sim.create(
            "Account",
            fields(json!({"Name": format!("born while stopped {n}")})),
        )
        .unwrap();
    }
    // Longer than the org keeps events: the checkpoint's replay id is gone.
    sim.purge_events_before(SystemTime::now());
    (sim, kafka, bootstrap)
}

/// The replica after restarting with `policy` and streaming one more change.
async fn restart(sim: &SimOrg, bootstrap: &str, policy: &str) -> support::source::Running {
    let running = start(config(sim, bootstrap, policy));
    tokio::time::timeout(WAIT, async {
        while !running.channel(CHANNEL).stream_up {
            running.assert_running();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("streaming again");
    running
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_checkpoint_is_followed_by_a_resync_and_the_replica_converges() {
    let (sim, _kafka, bootstrap) = outage("resync").await;
    let before = read_topic(&bootstrap, ACCOUNTS).len();
    let running = restart(&sim, &bootstrap, "resync").await;
    let after = sim
        .create("Account", fields(json!({"Name": "after the resync"})))
        .unwrap();
    let records = tokio::time::timeout(WAIT, async {
        loop {
            let records = read_topic(&bootstrap, ACCOUNTS);
            if records.iter().any(|r| support::source::key(r) == after) {
                return records;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the change after the resync streams");
    let channel = running.channel(CHANNEL);
    running.stop().await;
    assert_eq!(channel.resyncs, 1);

    let resynced: Vec<_> = records[before..]
        .iter()
        .filter(|r| r.value.is_some() && value(r)["snapshot"]["mode"] == "resync")
        .collect();
    // What changed while stopped (40 updates, 25 creates, the undelete), at least: the resync
    // reads from the minute of the checkpoint's commit timestamp, which here also holds the
    // creation of every record (the filter itself: `snapshot::columns` tests).
    let reads = resynced
        .iter()
        .filter(|r| value(r)["operation"] == "READ")
        .count();
    assert!(reads >= 66, "{reads} rows re-read");
    let deletes: Vec<_> = resynced
        .iter()
        .filter(|r| value(r)["operation"] == "DELETE")
        .collect();
    assert!(deletes.len() >= 19, "{} deletes", deletes.len());
    assert_eq!(header(deletes[0], "forcebridge.change_type"), "DELETE");
    let markers = read_topic(&bootstrap, "forcebridge.dlq");
    let marker = value(markers.last().expect("a replay marker"));
    assert_eq!(marker["resumed_from"], "resync");
    assert_eq!(marker["gap"], false);

    assert_converged(&sim, &load(&records));
}

/// Without the resync (`replay_rejected: earliest`), the same outage leaves a hole: what
/// changed while stopped is not in the topic, and the replica differs from the org.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_resync_the_replica_keeps_a_hole() {
    let (sim, _kafka, bootstrap) = outage("earliest").await;
    let running = restart(&sim, &bootstrap, "earliest").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    running.stop().await;
    let (org, replica) = org_and_replica(&sim, &load(&read_topic(&bootstrap, ACCOUNTS)));
    assert_ne!(
        replica, org,
        "earliest after purged events cannot rebuild the object"
    );
}

/// The org's delete log no longer reaches the resync's start (the recycle bin was emptied):
/// the resync still runs to its end (deletes after the purge are read from the log's earliest
/// date on) instead of stopping, and the stream resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purged_delete_log_does_not_stop_the_resync() {
    let (sim, _kafka, bootstrap) = outage("resync").await;
    sim.purge_recycle_bin("Account");
    let live: Vec<String> = sim
        .records("Account")
        .iter()
        .map(|r| r["Id"].as_str().unwrap().to_owned())
        .collect();
    for id in &live[..5] {
        sim.delete("Account", id).unwrap();
    }
    sim.purge_events_before(SystemTime::now());
    let running = restart(&sim, &bootstrap, "resync").await;
    let channel = running.channel(CHANNEL);
    running.stop().await;
    assert_eq!(channel.resyncs, 1);
    let records = read_topic(&bootstrap, ACCOUNTS);
    for id in &live[..5] {
        assert!(
            records.iter().any(|r| support::source::key(r) == *id
                && r.value.is_some()
                && value(r)["operation"] == "DELETE"),
            "{id}, deleted after the purge, is deleted in the topic"
        );
    }
}
