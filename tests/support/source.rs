//! The source pipeline in tests: a config for a simulated org, a running pipeline task, its
//! checkpoints, and accessors for the records it produced.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use forcebridge::config::Config;
use forcebridge::ops::telemetry::PipelineStats;
use forcebridge::sim::SimOrg;
use forcebridge::source::checkpoint::CheckpointStore;
use forcebridge::source::{self, PipelineError};

use super::kafka::{ConsumedRecord, MockKafka};

/// How long tests wait for a condition.
pub const WAIT: Duration = Duration::from_secs(60);

/// The mock cluster has no CreateTopics API: tests on it let the broker auto-create topics.
pub const MOCK_KAFKA: &str = "  create_topics: false\n";

/// A config of connector `test` for `sim`, the given channels (replay from earliest), a 100 ms
/// checkpoint interval; `extra_source` and `extra_kafka` are YAML lines appended to the
/// `source` and `kafka` sections.
pub fn config_with(
    sim: &SimOrg,
    bootstrap: &str,
    channels: &[&str],
    extra_source: &str,
    extra_kafka: &str,
) -> Config {
    Config::from_yaml(
        &config_text(sim, bootstrap, channels, extra_source, extra_kafka),
        |_| None,
    )
    .expect("test config is valid")
}

/// The YAML of [`config_with`] (for a child process's config file).
pub fn config_text(
    sim: &SimOrg,
    bootstrap: &str,
    channels: &[&str],
    extra_source: &str,
    extra_kafka: &str,
) -> String {
    let c = sim.config();
    let channels: String = channels
        .iter()
        .map(|ch| format!("    - name: {ch}\n      initial_replay: earliest\n"))
        .collect();
    format!(
        "name: test\nsalesforce:\n  login_url: {login}\n  pubsub_endpoint: {pubsub}\n  allow_plaintext: true\n  auth:\n    type: password\n    client_id: {id}\n    client_secret: {secret}\n    username: {user}\n    password: {password}\n    security_token: {token}\nsource:\n  channels:\n{channels}  checkpoint_interval: 100ms\n{extra_source}kafka:\n  bootstrap_servers: {bootstrap}\n{extra_kafka}",
        login = sim.instance_url(),
        pubsub = sim.pubsub_endpoint(),
        id = c.client_id,
        secret = c.client_secret,
        user = c.username,
        password = c.password,
        token = c.security_token,
    )
}

/// A pipeline running in a task.
pub struct Running {
    pub cancel: CancellationToken,
    pub stats: Arc<PipelineStats>,
    pub handle: JoinHandle<Result<(), PipelineError>>,
}

/// Starts the source pipeline in a task. Its logs go to stderr when `RUST_LOG` is set.
pub fn start(config: Config) -> Running {
    if std::env::var_os("RUST_LOG").is_some() {
        forcebridge::ops::telemetry::init_logging(
            forcebridge::ops::telemetry::LogFormat::Text,
            "info",
        );
    }
    let cancel = CancellationToken::new();
    let stats = Arc::new(PipelineStats::default());
    let handle = tokio::spawn(source::run(config, stats.clone(), cancel.clone()));
    Running {
        cancel,
        stats,
        handle,
    }
}

impl Running {
    /// Graceful stop: drain, final checkpoints. Returns the counters.
    pub async fn stop(self) -> Arc<PipelineStats> {
        self.cancel.cancel();
        tokio::time::timeout(WAIT, self.handle)
            .await
            .expect("pipeline drains in time")
            .expect("pipeline task")
            .expect("pipeline ends without error");
        self.stats
    }

    /// The counters of `channel`.
    pub fn channel(&self, channel: &str) -> forcebridge::ops::telemetry::ChannelSnapshot {
        self.stats
            .snapshot()
            .channels
            .get(channel)
            .cloned()
            .unwrap_or_default()
    }

    /// The pipeline recovered by itself: it is still running.
    pub fn assert_running(&self) {
        assert!(
            !self.handle.is_finished(),
            "the pipeline stopped instead of recovering"
        );
    }

    /// Waits until at least `n` records were produced.
    pub async fn wait_produced(&self, n: u64) {
        tokio::time::timeout(WAIT, async {
            while self.stats.snapshot().records_produced() < n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{n} records produced in time"));
    }
}

/// The test connector's checkpoints in `bootstrap`.
pub async fn checkpoints(bootstrap: &str) -> CheckpointStore {
    CheckpointStore::open(
        &super::kafka::settings(bootstrap),
        "forcebridge.checkpoints",
        "test",
    )
    .await
    .unwrap()
}

/// A one-broker mock cluster with forcebridge's own topics created up front (the mock has no
/// CreateTopics API).
pub fn mock_kafka() -> MockKafka {
    let kafka = MockKafka::start(1);
    kafka.create_topic("forcebridge.checkpoints", 1);
    kafka.create_topic("forcebridge.dlq", 1);
    kafka
}

/// A JSON object literal as a field map.
pub fn fields(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

/// The fields of an `Order_Event__e` Platform Event numbered `number`.
pub fn order(number: &str) -> Map<String, Value> {
    fields(serde_json::json!({"Order_Number__c": number, "Amount__c": 12.5, "Status__c": "Placed"}))
}

/// The distinct values of `record.<field>` (text) in `records`.
pub fn record_texts(records: &[ConsumedRecord], field: &str) -> BTreeSet<String> {
    records
        .iter()
        .map(|r| {
            value(r)["record"][field]
                .as_str()
                .unwrap_or_else(|| panic!("record.{field} is not text"))
                .to_owned()
        })
        .collect()
}

/// The JSON value of a record.
pub fn value(record: &ConsumedRecord) -> Value {
    serde_json::from_slice(record.value.as_deref().expect("not a tombstone")).expect("JSON value")
}

/// A header as text (empty when absent).
pub fn header(record: &ConsumedRecord, name: &str) -> String {
    String::from_utf8(record.header(name).unwrap_or_default().to_vec()).unwrap()
}

/// The key as text.
pub fn key(record: &ConsumedRecord) -> String {
    String::from_utf8(record.key.clone().unwrap_or_default()).unwrap()
}

/// Distinct replay ids and the full list of replay ids (with repeats) of `records`.
pub fn replay_ids(records: &[ConsumedRecord]) -> (BTreeSet<String>, Vec<String>) {
    let all: Vec<String> = records
        .iter()
        .map(|r| header(r, "forcebridge.replay_id"))
        .collect();
    (all.iter().cloned().collect(), all)
}

/// The `forcebridge.replay_id` header of a record (empty when missing).
pub fn replay_id(record: &ConsumedRecord) -> String {
    String::from_utf8_lossy(record.header("forcebridge.replay_id").unwrap_or_default()).into_owned()
}

/// What a topic holds, seen through replay ids.
#[derive(Debug, Default)]
pub struct Delivered {
    /// Records read (repeats included).
    pub records: usize,
    /// Distinct replay ids (hex).
    pub replay_ids: BTreeSet<String>,
    /// Distinct (replay id, key) pairs: one per record an event fans out to.
    pub distinct_records: usize,
    /// Records beyond the first copy of their (replay id, key).
    pub repeats: usize,
    /// (replay id, key) pairs whose copies differ in value or headers.
    pub inconsistent: Vec<(String, String)>,
}

/// Groups `records` by (replay id, key) and checks that every repeat is identical (value and
/// headers) to the first copy.
pub fn delivered(records: &[ConsumedRecord]) -> Delivered {
    let mut first: BTreeMap<(String, Vec<u8>), &ConsumedRecord> = BTreeMap::new();
    let mut out = Delivered {
        records: records.len(),
        ..Delivered::default()
    };
    for r in records {
        let id = replay_id(r);
        out.replay_ids.insert(id.clone());
        let key = (id, r.key.clone().unwrap_or_default());
        match first.get(&key) {
            None => {
                first.insert(key, r);
            }
            Some(original) => {
                out.repeats += 1;
                if original.value != r.value || original.headers != r.headers {
                    out.inconsistent
                        .push((key.0.clone(), String::from_utf8_lossy(&key.1).into_owned()));
                }
            }
        }
    }
    out.distinct_records = first.len();
    out
}

/// The org's replay ids of `channel` as the hex the records carry.
pub fn org_replay_ids(sim: &SimOrg, channel: &str) -> BTreeSet<String> {
    sim.replay_ids(channel).iter().map(hex::encode).collect()
}

/// Waits until `channel`'s checkpoint is at the org's last event, no snapshot under way.
pub async fn wait_caught_up(sim: &SimOrg, bootstrap: &str, channel: &str) {
    let last = sim.replay_ids(channel).last().cloned().expect("events");
    tokio::time::timeout(WAIT, async {
        loop {
            let store = checkpoints(bootstrap).await;
            if store
                .get(channel)
                .is_some_and(|c| c.replay_id[..] == last[..] && c.snapshot.is_none())
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the stream caught up with the org");
}
