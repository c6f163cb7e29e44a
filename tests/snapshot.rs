//! The snapshot and its handoff to the stream, end to end: simulated org (records existing
//! before forcebridge starts, changes going on throughout) → forcebridge (`snapshot: initial`) →
//! Kafka (the librdkafka mock cluster); a loader written here applies the topic and must hold
//! exactly the org's records, field by field.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;

use forcebridge::config::Config;
use forcebridge::sim::{SimConfig, SimOrg};
use support::kafka::{ConsumedRecord, MockKafka, read_topic};
use support::replica::{assert_converged, load, org_and_replica};
use support::source::{WAIT, header, start, value};

const ACCOUNTS: &str = "salesforce.Account";
const CHANNEL: &str = "/data/AccountChangeEvent";

fn config(sim: &SimOrg, bootstrap: &str) -> Config {
    config_with(sim, bootstrap, "")
}

/// A config of the Account channel with `snapshot: initial`; `extra_source`: YAML lines of the
/// `source` section.
fn config_with(sim: &SimOrg, bootstrap: &str, extra_source: &str) -> Config {
    let kafka = support::source::MOCK_KAFKA;
    let text = support::source::config_text(sim, bootstrap, &[CHANNEL], extra_source, kafka)
        .replace(
            "      initial_replay: earliest\n",
            "      initial_replay: latest\n      snapshot: initial\n",
        );
    Config::from_yaml(&text, |_| None).expect("test config is valid")
}

fn mock_kafka() -> MockKafka {
    let kafka = support::source::mock_kafka();
    // One partition: the records are read back in the order they were produced.
    kafka.create_topic(ACCOUNTS, 1);
    kafka
}

/// A simulated org answering quiet channels with a keepalive after 200 ms (a real org: within
/// 270 s), its REST answers slowed so that a snapshot takes long enough for changes to land
/// while it runs.
async fn sim() -> SimOrg {
    let sim = SimOrg::start(SimConfig {
        keepalive_interval: Duration::from_millis(200),
        query_batch_size: 500,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    sim.set_rest_latency(Duration::from_millis(150));
    sim
}

/// Changes the org until `stop`: each round updates two records, creates one and deletes one.
fn churn(sim: SimOrg, ids: Vec<String>, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut rounds = 0usize;
        let mut live = ids;
        while !stop.load(Ordering::Relaxed) {
            let n = rounds;
            for id in [&live[n * 7 % live.len()], &live[(n * 13 + 5) % live.len()]] {
                let fields = json!({"Name": format!("changed {n}"), "BillingAddress": {"City": format!("City {n}")}, "NumberOfEmployees": n});
                sim.update("Account", id, fields.as_object().unwrap().clone())
                    .unwrap();
            }
            let created = sim
                .create(
                    "Account",
                    json!({"Name": format!("new {n}"), "Phone": "555"})
                        .as_object()
                        .unwrap()
                        .clone(),
                )
                .unwrap();
            live.push(created);
            let gone = live.remove((n * 31 + 3) % live.len());
            sim.delete("Account", &gone).unwrap();
            rounds += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        rounds
    })
}

/// Records existing before the start are loaded (`READ`), changes made while the snapshot runs
/// and after it follow in the topic, and the loader holds exactly the org's records. Without
/// the position fixed before the snapshot the changes made during it would be missing: the
/// test shows the loader would then differ from the org.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_hands_off_to_the_stream_without_losing_a_change() {
    hands_off("").await;
}

/// The same with `delivery: exactly_once`: each page and its progress one Kafka transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exactly_once_snapshot_hands_off_the_same_way() {
    hands_off("  delivery: exactly_once\n").await;
}

#[allow(
    clippy::too_many_lines,
    reason = "one scenario: snapshot, handoff, stream, then the replica checked twice"
)]
async fn hands_off(extra_source: &str) {
    let kafka = mock_kafka();
    let bootstrap = kafka.bootstrap();
    let sim = sim().await;
    let ids = sim.generate("Account", 3_000).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let churning = churn(sim.clone(), ids, stop.clone());
    let running = start(config_with(&sim, &bootstrap, extra_source));
    tokio::time::timeout(WAIT, async {
        while running.channel(CHANNEL).snapshots_completed == 0 {
            running.assert_running();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the snapshot ends");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let rounds = churning.await.unwrap();
    assert!(
        rounds > 10,
        "changes went on during the snapshot ({rounds} rounds)"
    );
    support::source::wait_caught_up(&sim, &bootstrap, CHANNEL).await;
    let stats = running.stop().await;

    let records = read_topic(&bootstrap, ACCOUNTS);
    let reads: Vec<&ConsumedRecord> = records
        .iter()
        .filter(|r| r.value.is_some() && value(r)["operation"] == "READ")
        .collect();
    assert!(
        reads.len() >= 3_000,
        "every existing record read: {}",
        reads.len()
    );
    let first = value(reads[0]);
    assert_eq!(first["snapshot"]["method"], "rest");
    assert_eq!(header(reads[0], "forcebridge.change_type"), "READ");
    assert_eq!(header(reads[0], "forcebridge.snapshot"), "rest");
    assert!(first["commit_timestamp"].as_i64().unwrap() > 0);
    let channel = &stats.snapshot().channels[CHANNEL];
    assert_eq!(channel.snapshot_rows, reads.len() as u64);
    assert_eq!(channel.snapshots_completed, 1);

    // Every READ comes before every change record: the stream starts after the snapshot.
    let last_read = records
        .iter()
        .rposition(|r| r.value.is_some() && value(r)["operation"] == "READ")
        .unwrap();
    let first_change = records
        .iter()
        .position(|r| r.value.is_some() && value(r)["operation"] != "READ")
        .expect("changes streamed");
    assert!(last_read < first_change, "snapshot rows then changes");

    let rows = load(&records);
    assert_converged(&sim, &rows);

    // The checkpoint keeps the newest commit timestamp durable, what a resync starts from.
    let newest = records
        .iter()
        .filter(|r| r.value.is_some() && value(r)["operation"] != "READ")
        .map(|r| value(r)["commit_timestamp"].as_i64().unwrap())
        .max()
        .unwrap();
    let checkpoint = support::source::checkpoints(&bootstrap)
        .await
        .get(CHANNEL)
        .unwrap();
    assert!(
        checkpoint.commit_timestamp.unwrap() >= newest,
        "{:?} < {newest}",
        checkpoint.commit_timestamp
    );

    // The step is needed: changes committed while the snapshot ran are in the stream after the
    // fixed position; a stream started only after the snapshot (Redpanda Connect's handoff)
    // would not have them, and its replica would differ from the org.
    let snapshot_end = reads
        .iter()
        .map(|r| value(r)["snapshot"]["read_at"].as_i64().unwrap())
        .max()
        .unwrap();
    let later: Vec<ConsumedRecord> = records
        .iter()
        .filter(|r| {
            r.value.is_none()
                || value(r)["operation"] == "READ"
                || value(r)["commit_timestamp"].as_i64().unwrap() > snapshot_end + 1_000
        })
        .cloned()
        .collect();
    assert!(
        later.len() < records.len(),
        "changes were made during the snapshot"
    );
    let (org, lossy) = org_and_replica(&sim, &load(&later));
    assert_ne!(
        lossy, org,
        "without the fixed position the replica is wrong"
    );
}

/// A snapshot cut short (the task aborted, as a crash ends it: no drain, no last checkpoint)
/// resumes at the position it fixed, not a new one, and the replica still converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_cut_short_resumes_at_the_position_it_fixed() {
    let kafka = mock_kafka();
    let bootstrap = kafka.bootstrap();
    let sim = sim().await;
    let ids = sim.generate("Account", 3_000).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let churning = churn(sim.clone(), ids, stop.clone());

    let first = start(config(&sim, &bootstrap));
    tokio::time::timeout(WAIT, async {
        while support::source::checkpoints(&bootstrap)
            .await
            .get(CHANNEL)
            .and_then(|c| c.snapshot)
            .is_none_or(|s| s.rows() < 1_000)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("snapshot progress saved");
    first.handle.abort();
    let _ = first.handle.await;
    let cut = support::source::checkpoints(&bootstrap)
        .await
        .get(CHANNEL)
        .expect("checkpoint");
    let fixed = hex::encode(&cut.replay_id);
    assert!(cut.snapshot.is_some(), "the snapshot is under way");

    let second = start(config(&sim, &bootstrap));
    tokio::time::timeout(WAIT, async {
        while second.channel(CHANNEL).snapshots_completed == 0 {
            second.assert_running();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the resumed snapshot ends");
    stop.store(true, Ordering::Relaxed);
    churning.await.unwrap();
    support::source::wait_caught_up(&sim, &bootstrap, CHANNEL).await;
    second.stop().await;

    let records = read_topic(&bootstrap, ACCOUNTS);
    for record in records
        .iter()
        .filter(|r| r.value.is_some() && value(r)["operation"] == "READ")
    {
        assert_eq!(value(record)["source"]["replay_id"], fixed.as_str());
    }
    assert_converged(&sim, &load(&records));
}
