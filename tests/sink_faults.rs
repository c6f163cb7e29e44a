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

fn mock_kafka() -> MockKafka {
    let kafka = MockKafka::start(1);
    for topic in [WRITEBACK, DLQ, "forcebridge.conflicts"] {
        kafka.create_topic(topic, 1);
    }
    kafka
}

/// Sends `values` as one burst, runs the sink until all are finished, stops it; returns its stats
/// and the dead letters as `key=status_code`, comma-separated.
async fn run_sink(
    sim: &SimOrg,
    values: Vec<(String, Value)>,
) -> (forcebridge::ops::telemetry::SinkSnapshot, String) {
    let kafka = mock_kafka();
    let bootstrap = kafka.bootstrap();
    let n = values.len() as u64;
    let messages: Vec<support::kafka::TestRecord> = values
        .into_iter()
        .map(|(k, v)| (Some(k), serde_json::to_vec(&v).unwrap(), vec![]))
        .collect();
    produce(&bootstrap, WRITEBACK, &messages).await;
    let stats = run_until_finished(sim, &bootstrap, n).await;
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
    (stats, keys.join(","))
}

/// Runs the sink until `n` records are finished, then stops it (it must end without error).
async fn run_until_finished(
    sim: &SimOrg,
    bootstrap: &str,
    n: u64,
) -> forcebridge::ops::telemetry::SinkSnapshot {
    let cancel = CancellationToken::new();
    let stats = Arc::new(SinkStats::default());
    let handle = tokio::spawn(forcebridge::sink::run(
        config(sim, bootstrap),
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
    stats.snapshot()
}

/// A record to produce: key, value, headers.
type Raw<'a> = (&'a [u8], &'a [u8], &'a [(&'a str, &'a [u8])]);

/// Produces `(key, value, headers)` records with a larger `message.max.bytes` than our producer's
/// default, as a writer with another limit would.
async fn produce_large(bootstrap: &str, records: &[Raw<'_>]) {
    let mut settings = support::kafka::settings(bootstrap);
    settings
        .properties
        .insert("message.max.bytes".into(), "4000000".into());
    let producer = forcebridge::kafka::Producer::new(&settings).expect("producer");
    producer
        .deliver(
            records
                .iter()
                .map(|(key, value, headers)| forcebridge::kafka::OutgoingRecord {
                    topic: WRITEBACK,
                    key: Some(key),
                    value: Some(value),
                    headers,
                }),
        )
        .await
        .expect("produce the oversize write-backs");
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

/// Four valid inserts written while a proxy answers the first `html_400s` Composite calls with
/// its HTML 400: every record lands, none is dead-lettered; the sink's counters.
async fn four_inserts_behind_proxy_400s(
    html_400s: usize,
) -> forcebridge::ops::telemetry::SinkSnapshot {
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    sim.fail_next_composite_calls(html_400s, RestFault::ProxyHtmlBadRequest);
    let (stats, dead) = run_sink(
        &sim,
        (1..=4)
            .map(|i| insert(&format!("V-{i}"), json!(i)))
            .collect(),
    )
    .await;
    assert_eq!(landed(&sim), ["V-1", "V-2", "V-3", "V-4"], "{stats:?}");
    assert_eq!(dead, "", "{stats:?}");
    assert_eq!(stats.dead_lettered, 0, "{stats:?}");
    sim.shutdown().await;
    stats
}

/// A proxy's HTML 400 (not Salesforce's JSON error array) is no verdict on the records: the call
/// is retried and every record lands; nothing is dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_html_400_dead_letters_nothing() {
    let stats = four_inserts_behind_proxy_400s(1).await;
    assert_eq!(stats.written, 4, "{stats:?}");
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

/// Ten headers of 100,000 bytes each: a megabyte of headers.
fn fat_headers() -> Vec<(String, Vec<u8>)> {
    (0..10)
        .map(|i| (format!("trace-{i}"), vec![b'h'; 100_000]))
        .collect()
}

fn borrowed(headers: &[(String, Vec<u8>)]) -> Vec<(&str, &[u8])> {
    headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect()
}

/// A write-back just over 1 MB and one carrying 1 MB of headers are dead-lettered, cut to fit
/// Kafka's default `message.max.bytes` and saying so; the good record behind them is written and
/// everything is committed (a restarted sink reads only a new message). Kafka used to refuse
/// the full copies (`MsgSizeTooLarge`) and the sink repeated the batch for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_write_backs_are_dead_lettered_cut_and_the_partition_moves_on() {
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    let kafka = mock_kafka();
    let bootstrap = kafka.bootstrap();
    let big_value = serde_json::to_vec(&json!({"object": "Account", "operation": "insert",
        "timestamp": 1_700_000_000_000_i64,
        "fields": {"External_Id__c": "BIG", "Name": "x".repeat(1_050_000)}}))
    .unwrap();
    let small_bad = serde_json::to_vec(&json!({"object": "Account", "operation": "merge",
        "fields": {"Name": "x"}}))
    .unwrap();
    let fat = fat_headers();
    let fat_headers = borrowed(&fat);
    let good = serde_json::to_vec(&insert("GOOD", json!(1)).1).unwrap();
    let records = [
        (&b"BIG"[..], big_value.as_slice(), &[][..]),
        (&b"FAT"[..], small_bad.as_slice(), fat_headers.as_slice()),
        (&b"GOOD"[..], good.as_slice(), &[][..]),
    ];
    produce_large(&bootstrap, &records).await;

    let stats = run_until_finished(&sim, &bootstrap, 3).await;
    assert_eq!(landed(&sim), ["GOOD"], "{stats:?}");
    let dead = wait_for_records(&bootstrap, DLQ, 2, WAIT).await;
    let note = |r: &support::kafka::ConsumedRecord, name: &str| {
        String::from_utf8_lossy(r.header(name).unwrap_or_default()).into_owned()
    };
    let by_key = |key: &[u8]| {
        dead.iter()
            .find(|r| r.key.as_deref() == Some(key))
            .unwrap_or_else(|| panic!("no dead letter for {key:?}"))
    };
    let big = by_key(b"BIG");
    assert_eq!(note(big, "forcebridge.error.truncated"), "value");
    assert_eq!(
        note(big, "forcebridge.error.truncated_from"),
        big_value.len().to_string()
    );
    assert_eq!(note(big, "forcebridge.error.stage"), "sink.field");
    assert!(big.value.as_ref().is_some_and(|v| v.len() < 1_000_000));
    let fat = by_key(b"FAT");
    assert_eq!(note(fat, "forcebridge.error.truncated"), "headers");
    assert!(
        note(fat, "forcebridge.error.headers_dropped").contains(" of 10 ("),
        "{}",
        note(fat, "forcebridge.error.headers_dropped")
    );
    assert_eq!(fat.value.as_deref(), Some(small_bad.as_slice()));

    // Everything was committed: a restarted sink reads only a new message.
    let (key, value) = insert("AFTER", json!(2));
    produce(
        &bootstrap,
        WRITEBACK,
        &[(Some(key), serde_json::to_vec(&value).unwrap(), vec![])],
    )
    .await;
    let again = run_until_finished(&sim, &bootstrap, 1).await;
    assert_eq!(again.received, 1, "{again:?}");
    assert_eq!(landed(&sim), ["AFTER", "GOOD"]);
    sim.shutdown().await;
}

/// A proxy's HTML 400 that persists through the client's retries fails the batch instead: nothing
/// is dead-lettered or committed, the sink restarts, repeats it, and every record lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_proxy_html_400_fails_the_batch_and_it_is_repeated() {
    // The client gives up after 4 such answers; the 2 left hit the repeated batch.
    let stats = four_inserts_behind_proxy_400s(6).await;
    assert!(stats.received > 4, "the batch was read again: {stats:?}");
}

/// A write that loses to Salesforce's newer record, carrying 1 MB of headers, goes to the
/// conflicts topic cut to fit (saying so), and the good record behind it is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_conflict_record_is_cut_to_fit() {
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    let kafka = mock_kafka();
    let bootstrap = kafka.bootstrap();
    let mut person = serde_json::Map::new();
    person.insert("Name".into(), json!("Edited by a person"));
    let human = sim.create("Account", person).unwrap();
    let stale = serde_json::to_vec(&json!({"object": "Account", "operation": "update",
        "id": human, "timestamp": 1_000_000_000_000_i64, "fields": {"Name": "Stale"}}))
    .unwrap();
    let fat = fat_headers();
    let fat_headers = borrowed(&fat);
    let good = serde_json::to_vec(&insert("GOOD", json!(1)).1).unwrap();
    let records = [
        (human.as_bytes(), stale.as_slice(), fat_headers.as_slice()),
        (&b"GOOD"[..], good.as_slice(), &[][..]),
    ];
    produce_large(&bootstrap, &records).await;
    let stats = run_until_finished(&sim, &bootstrap, 2).await;
    assert_eq!((stats.written, stats.conflicts), (1, 1), "{stats:?}");
    assert_eq!(landed(&sim), ["GOOD"]);
    let conflicts = wait_for_records(&bootstrap, "forcebridge.conflicts", 1, WAIT).await;
    let header = |name: &str| {
        String::from_utf8_lossy(conflicts[0].header(name).unwrap_or_default()).into_owned()
    };
    assert_eq!(header("forcebridge.error.truncated"), "headers");
    assert!(header("forcebridge.error.headers_dropped").contains(" of 10 ("));
    assert_eq!(header("forcebridge.conflict.record_id"), human);
    sim.shutdown().await;
}
