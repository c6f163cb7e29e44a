//! The sink under faults that used to condemn valid records (issue 19, items 1 and 2): a whole
//! collection refused for one record's value, and a proxy's HTML 400. Kafka is the librdkafka mock
//! cluster, Salesforce the simulated org.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use forcebridge::config::Config;
use forcebridge::ops::telemetry::SinkStats;
use forcebridge::sim::{RestFault, SimConfig, SimOrg};
use support::kafka::{MockKafka, produce, wait_for_records};

const WRITEBACK: &str = "salesforce.writeback";
const DLQ: &str = "forcebridge.dlq";
/// A hang guard only.
const WAIT: Duration = Duration::from_secs(90);

fn config(sim: &SimOrg, bootstrap: &str) -> Config {
    let c = sim.config();
    let text = format!(
        "name: test\nsalesforce:\n  login_url: {login}\n  pubsub_endpoint: {pubsub}\n  allow_plaintext: true\n  auth:\n    type: client_credentials\n    client_id: {id}\n    client_secret: {secret}\nsink:\n  topics: [{WRITEBACK}]\n  objects:\n    Account:\n      external_id_field: External_Id__c\n  initial_backoff: 20ms\n  max_backoff: 200ms\n  linger: 500ms\n  commit_interval: 100ms\nkafka:\n  bootstrap_servers: {bootstrap}\n  create_topics: false\n  properties:\n    session.timeout.ms: \"6000\"\n    heartbeat.interval.ms: \"500\"\n",
        login = sim.instance_url(),
        pubsub = sim.pubsub_endpoint(),
        id = c.client_id,
        secret = c.client_secret,
    );
    Config::from_yaml(&text, |_| None).expect("test config is valid")
}

/// Sends `values` as one burst, runs the sink until all are finished, stops it; returns its stats.
async fn run_sink(
    sim: &SimOrg,
    values: Vec<(String, Value)>,
) -> (forcebridge::ops::telemetry::SinkSnapshot, String) {
    let kafka = MockKafka::start(1);
    for topic in [WRITEBACK, DLQ, "forcebridge.conflicts"] {
        kafka.create_topic(topic, 1);
    }
    let bootstrap = kafka.bootstrap();
    let n = values.len() as u64;
    let messages: Vec<support::kafka::TestRecord> = values
        .into_iter()
        .map(|(k, v)| (Some(k), serde_json::to_vec(&v).unwrap(), vec![]))
        .collect();
    produce(&bootstrap, WRITEBACK, &messages).await;
    let cancel = CancellationToken::new();
    let stats = Arc::new(SinkStats::default());
    let handle = tokio::spawn(forcebridge::sink::run(
        config(sim, &bootstrap),
        stats.clone(),
        cancel.clone(),
    ));
    let deadline = Instant::now() + WAIT;
    loop {
        let s = stats.snapshot();
        if s.written + s.conflicts + s.dead_lettered >= n {
            break;
        }
        assert!(!handle.is_finished(), "the sink stopped early: {s:?}");
        assert!(Instant::now() < deadline, "only {s:?} of {n} finished");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cancel.cancel();
    tokio::time::timeout(WAIT, handle)
        .await
        .expect("sink drains in time")
        .expect("sink task")
        .expect("sink ends without error");
    let dead = wait_for_records(&bootstrap, DLQ, 1, Duration::from_secs(2)).await;
    let keys: Vec<String> = dead
        .iter()
        .map(|r| {
            format!(
                "{}={}",
                String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()),
                String::from_utf8_lossy(
                    r.header("forcebridge.error.status_code")
                        .unwrap_or_default()
                )
            )
        })
        .collect();
    (stats.snapshot(), keys.join(","))
}

fn insert(ext: &str, employees: Value) -> (String, Value) {
    (
        ext.to_owned(),
        json!({"object": "Account", "operation": "insert", "timestamp": 1_700_000_000_000_i64,
               "fields": {"External_Id__c": ext, "Name": ext, "NumberOfEmployees": employees}}),
    )
}

fn landed(sim: &SimOrg) -> Vec<String> {
    let mut exts: Vec<String> = sim
        .records("Account")
        .into_iter()
        .filter_map(|r| r.get("External_Id__c")?.as_str().map(str::to_owned))
        .collect();
    exts.sort();
    exts
}

/// A value the describe check lets through (a whole number beyond an int's range) makes the org
/// refuse the whole collection with `JSON_PARSER_ERROR`, naming no record: the collection is
/// split until the culprit stands alone; its three batch-mates, which carry the same field, land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collection_refused_as_a_whole_condemns_only_its_culprit() {
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    let (stats, dead) = run_sink(
        &sim,
        vec![
            insert("V-1", json!(10)),
            insert("V-2", json!(20)),
            insert("BAD", json!(3_000_000_000_u64)),
            insert("V-3", json!(30)),
        ],
    )
    .await;
    assert_eq!(landed(&sim), ["V-1", "V-2", "V-3"], "{stats:?}");
    assert_eq!(dead, "BAD=JSON_PARSER_ERROR", "{stats:?}");
    assert_eq!((stats.written, stats.dead_lettered), (3, 1), "{stats:?}");
    sim.shutdown().await;
}

/// An array for a text field is refused per record before any write (stage `sink.field`) with
/// its own reason; the others land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_array_for_a_text_field_is_dead_lettered_alone() {
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    let mut bad = insert("BAD", json!(1));
    bad.1["fields"]["Name"] = json!(["a", "b"]);
    let (stats, dead) = run_sink(
        &sim,
        vec![
            insert("V-1", json!(1)),
            bad,
            insert("V-2", json!(2)),
            insert("V-3", json!(3)),
        ],
    )
    .await;
    assert_eq!(landed(&sim), ["V-1", "V-2", "V-3"], "{stats:?}");
    assert_eq!(dead, "BAD=INVALID_TYPE_ON_FIELD_IN_RECORD", "{stats:?}");
    sim.shutdown().await;
}

/// A proxy's HTML 400 (not Salesforce's JSON error array) is no verdict on the records: the call
/// is retried and every record lands; nothing is dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_html_400_dead_letters_nothing() {
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    sim.fail_next_composite_calls(1, RestFault::ProxyHtmlBadRequest);
    let (stats, dead) = run_sink(
        &sim,
        (1..=4)
            .map(|i| insert(&format!("V-{i}"), json!(i)))
            .collect(),
    )
    .await;
    assert_eq!(landed(&sim), ["V-1", "V-2", "V-3", "V-4"], "{stats:?}");
    assert_eq!(dead, "", "{stats:?}");
    assert_eq!((stats.written, stats.dead_lettered), (4, 0), "{stats:?}");
    sim.shutdown().await;
}

/// A batch answered 413 (the request body too large for the org's front end) is split until each
/// part fits: the good records land, the record too large alone is dead-lettered with the status,
/// and the sink goes on (it used to fail the batch and repeat it forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_413_splits_the_batch_and_dead_letters_only_the_record_too_large() {
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    sim.set_max_request_bytes(Some(10_000));
    let mut big = insert("BIG", json!(1));
    big.1["fields"]["Description"] = json!("x".repeat(20_000));
    let (stats, dead) = run_sink(
        &sim,
        vec![
            insert("V-1", json!(1)),
            insert("V-2", json!(2)),
            big,
            insert("V-3", json!(3)),
        ],
    )
    .await;
    assert_eq!(landed(&sim), ["V-1", "V-2", "V-3"], "{stats:?}");
    assert_eq!(dead, "BIG=HTTP_413", "{stats:?}");
    sim.shutdown().await;
}
