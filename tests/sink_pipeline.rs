//! The write-back path end to end: Kafka (librdkafka mock cluster) → forcebridge sink →
//! the simulated org's Composite API, asserting the org's final state, the API calls spent, the
//! conflicts and dead-letter topics, and that the source drops the echo.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use forcebridge::config::Config;
use forcebridge::ops::telemetry::{PipelineStats, SinkStats};
use forcebridge::sim::{SimConfig, SimOrg};
use forcebridge::sink::{self, SinkError};
use support::kafka::{ConsumedRecord, MockKafka, produce, wait_for_records};

const WRITEBACK: &str = "salesforce.writeback";
const DLQ: &str = "forcebridge.dlq";
const CONFLICTS: &str = "forcebridge.conflicts";
const WAIT: Duration = Duration::from_secs(90);

fn fields(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Now, once the clock is in a later second than every datetime the org has recorded: the org
/// keeps datetimes to the second, so a write timestamped in the second of a change made in the
/// org is a same-second tie (a conflict by default).
async fn next_second_ms() -> i64 {
    let ms = now_ms();
    tokio::time::sleep(Duration::from_millis((1000 - ms.rem_euclid(1000)) as u64)).await;
    now_ms()
}

fn mock_kafka() -> MockKafka {
    let kafka = MockKafka::start(1);
    for topic in [WRITEBACK, DLQ, CONFLICTS, "forcebridge.checkpoints"] {
        kafka.create_topic(topic, 1);
    }
    kafka
}

/// The sink logs in with the client credentials flow: the connected app's integration user.
fn config(sim: &SimOrg, bootstrap: &str, extra_sink: &str, source: &str) -> Config {
    let text = config_text(sim, bootstrap, extra_sink, source);
    Config::from_yaml(&text, |_| None).expect("test config is valid")
}

fn config_text(sim: &SimOrg, bootstrap: &str, extra_sink: &str, source: &str) -> String {
    let c = sim.config();
    let extra_sink = if extra_sink.contains("commit_interval") {
        extra_sink.to_owned()
    } else {
        format!("  commit_interval: 100ms\n{extra_sink}")
    };
    let text = format!(
        "name: test\nsalesforce:\n  login_url: {login}\n  pubsub_endpoint: {pubsub}\n  allow_plaintext: true\n  auth:\n    type: client_credentials\n    client_id: {id}\n    client_secret: {secret}\n{source}sink:\n  topics: [{WRITEBACK}]\n  objects:\n    Account:\n      external_id_field: External_Id__c\n  initial_backoff: 20ms\n  max_backoff: 200ms\n{linger}{extra_sink}kafka:\n  bootstrap_servers: {bootstrap}\n  create_topics: false\n  properties:\n    session.timeout.ms: \"6000\"\n    heartbeat.interval.ms: \"500\"\n",
        // A test may set its own linger (e.g. long, so batches fill whatever the machine's load).
        linger = if extra_sink.contains("linger:") {
            ""
        } else {
            "  linger: 100ms\n"
        },
        login = sim.instance_url(),
        pubsub = sim.pubsub_endpoint(),
        id = c.client_id,
        secret = c.client_secret,
    );
    text
}

struct Running {
    cancel: CancellationToken,
    stats: Arc<SinkStats>,
    handle: JoinHandle<Result<(), SinkError>>,
}

fn start(config: Config) -> Running {
    let cancel = CancellationToken::new();
    let stats = Arc::new(SinkStats::default());
    let handle = tokio::spawn(sink::run(config, stats.clone(), cancel.clone()));
    Running {
        cancel,
        stats,
        handle,
    }
}

impl Running {
    /// Waits until `n` records are finished (written, conflict or dead letter).
    async fn wait_finished(&self, n: u64) {
        let deadline = Instant::now() + WAIT;
        loop {
            let s = self.stats.snapshot();
            if s.written + s.conflicts + s.dead_lettered >= n {
                return;
            }
            assert!(!self.handle.is_finished(), "the sink stopped early: {s:?}");
            assert!(Instant::now() < deadline, "only {s:?} of {n} finished");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(self) -> forcebridge::ops::telemetry::SinkSnapshot {
        self.cancel.cancel();
        tokio::time::timeout(WAIT, self.handle)
            .await
            .expect("sink drains in time")
            .expect("sink task")
            .expect("sink ends without error");
        self.stats.snapshot()
    }
}

type Message = support::kafka::TestRecord;

fn msg(key: &str, value: Value) -> Message {
    (
        Some(key.to_owned()),
        serde_json::to_vec(&value).unwrap(),
        vec![],
    )
}

async fn send(bootstrap: &str, messages: Vec<Message>) {
    produce(bootstrap, WRITEBACK, &messages).await;
}

fn header(record: &ConsumedRecord, name: &str) -> String {
    String::from_utf8(record.header(name).unwrap_or_default().to_vec()).unwrap()
}

/// Live accounts by External Id.
fn accounts_by_ext(sim: &SimOrg) -> BTreeMap<String, Map<String, Value>> {
    sim.records("Account")
        .into_iter()
        .filter_map(|r| {
            let ext = r.get("External_Id__c")?.as_str()?.to_owned();
            Some((ext, r))
        })
        .collect()
}

/// 5,000 mixed operations (upserts creating and updating, updates by Id, inserts, deletes) land
/// with the exact final state, and cost about two API calls per 1,000 records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_mixed_operations_land_exactly() {
    let kafka = mock_kafka();
    let bootstrap = kafka.bootstrap();
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();

    // Existing records: 1,000 with External Ids, 1,000 to update by Id, 500 to delete.
    let mut existing_ext = Vec::new();
    for i in 0..1000 {
        let ext = format!("X-{i:04}");
        sim.create(
            "Account",
            fields(json!({"Name": format!("Old {i}"), "External_Id__c": ext})),
        )
        .unwrap();
        existing_ext.push(ext);
    }
    let to_update = sim.generate("Account", 1000).unwrap();
    let to_delete = sim.generate("Account", 500).unwrap();
    let ts = next_second_ms().await;

    let mut messages = Vec::new();
    for i in 0..2000 {
        let ext = format!("E-{i:04}");
        messages.push(msg(
            &ext,
            json!({"object": "Account", "operation": "upsert", "timestamp": ts,
            "fields": {"External_Id__c": ext, "Name": format!("New {i}"), "Rating": "Warm"}}),
        ));
    }
    for (i, ext) in existing_ext.iter().enumerate() {
        messages.push(msg(
            ext,
            json!({"object": "Account", "operation": "upsert", "timestamp": ts,
            "fields": {"External_Id__c": ext, "Name": format!("Renamed {i}")}}),
        ));
    }
    for (i, id) in to_update.iter().enumerate() {
        messages.push(msg(
            id,
            json!({"object": "Account", "operation": "update", "id": id, "timestamp": ts,
            "fields": {"Phone": format!("+1 555 {i:04}"), "Rating": null}}),
        ));
    }
    for i in 0..500 {
        messages.push(msg(
            &format!("I-{i}"),
            json!({"object": "Account", "operation": "insert",
            "fields": {"Name": format!("Inserted {i}")}}),
        ));
    }
    for id in &to_delete {
        messages.push(msg(
            id,
            json!({"object": "Account", "operation": "delete", "id": id, "timestamp": ts}),
        ));
    }
    assert_eq!(messages.len(), 5000);
    send(&bootstrap, messages).await;

    let (used_before, _) = sim.api_usage();
    // Every message is in Kafka before the sink starts; a long linger makes full batches of
    // 1,000 however slowly this machine delivers them.
    let running = start(config(&sim, &bootstrap, "  linger: 3s\n", ""));
    running.wait_finished(5000).await;
    let stats = running.stop().await;
    let (used_after, _) = sim.api_usage();

    assert_eq!(
        (stats.written, stats.conflicts, stats.dead_lettered),
        (5000, 0, 0),
        "{stats:?}"
    );
    let by_ext = accounts_by_ext(&sim);
    for i in 0..2000 {
        let r = &by_ext[&format!("E-{i:04}")];
        assert_eq!(
            (r["Name"].as_str(), r["Rating"].as_str()),
            (Some(format!("New {i}").as_str()), Some("Warm"))
        );
    }
    for (i, ext) in existing_ext.iter().enumerate() {
        assert_eq!(by_ext[ext]["Name"], format!("Renamed {i}"));
    }
    assert_eq!(
        by_ext.len(),
        3000,
        "upserts by External Id create no duplicates"
    );
    for (i, id) in to_update.iter().enumerate() {
        let r = sim.record("Account", id).unwrap();
        assert_eq!(r["Phone"], format!("+1 555 {i:04}"));
        assert!(r.get("Rating").is_none_or(Value::is_null), "{r:?}");
    }
    let inserted = sim
        .records("Account")
        .into_iter()
        .filter(|r| {
            r["Name"]
                .as_str()
                .is_some_and(|n| n.starts_with("Inserted "))
        })
        .count();
    assert_eq!(inserted, 500);
    for id in &to_delete {
        assert_eq!(sim.record("Account", id).unwrap()["IsDeleted"], true);
    }
    let calls = used_after - used_before;
    println!(
        "5,000 write-backs: {calls} API calls ({} composite calls and {} describe by the sink)",
        stats.composite_calls, stats.describe_calls
    );
    assert_eq!(
        calls,
        stats.composite_calls + stats.describe_calls,
        "every call the org counted is one the sink made"
    );
    assert_eq!(stats.describe_calls, 1, "Account, described once");
    assert!(
        calls <= 13,
        "about 2 calls per 1,000 records and the describe, got {calls}"
    );
    // The same figures reach /metrics: the client's calls and the allowance Salesforce reported.
    assert_eq!(stats.api_calls, calls, "forcebridge_sink_api_calls_total");
    let (_, max) = sim.api_usage();
    assert_eq!(stats.api_remaining, Some(max - used_after));
    sim.shutdown().await;
}

/// A record changed in the org after the Kafka record's timestamp is not overwritten: the write
/// goes to the conflicts topic with both timestamps. The sink's own earlier write is no conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newer_changes_in_salesforce_win() {
    let kafka = mock_kafka();
    let bootstrap = kafka.bootstrap();
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    let before = now_ms() - 60_000;
    let human = sim
        .create("Account", fields(json!({"Name": "Edited by a person"})))
        .unwrap();
    let stale = msg(
        &human,
        json!({"object": "Account", "operation": "update", "id": human,
        "timestamp": before, "fields": {"Name": "Stale warehouse value"}}),
    );
    let fresh_ext = msg(
        "F-1",
        json!({"object": "Account", "operation": "upsert",
        "timestamp": now_ms() + 60_000, "fields": {"External_Id__c": "F-1", "Name": "First"}}),
    );
    send(&bootstrap, vec![stale, fresh_ext]).await;
    let running = start(config(&sim, &bootstrap, "", ""));
    running.wait_finished(2).await;
    // Our own write of F-1 is newer than this message's timestamp, but it is ours: applied.
    send(
        &bootstrap,
        vec![msg(
            "F-1",
            json!({"object": "Account", "operation": "upsert",
        "timestamp": before, "fields": {"External_Id__c": "F-1", "Name": "Second"}}),
        )],
    )
    .await;
    running.wait_finished(3).await;
    let stats = running.stop().await;

    assert_eq!((stats.written, stats.conflicts), (2, 1), "{stats:?}");
    assert_eq!(
        sim.record("Account", &human).unwrap()["Name"],
        "Edited by a person"
    );
    assert_eq!(accounts_by_ext(&sim)["F-1"]["Name"], "Second");
    let conflicts = wait_for_records(&bootstrap, CONFLICTS, 1, WAIT).await;
    assert_eq!(conflicts.len(), 1);
    let c = &conflicts[0];
    assert_eq!(c.key.as_deref(), Some(human.as_bytes()));
    assert_eq!(header(c, "forcebridge.conflict.record_id"), human);
    assert_eq!(header(c, "forcebridge.conflict.reason"), "older");
    assert_eq!(
        header(c, "forcebridge.conflict.record_timestamp"),
        forcebridge::salesforce::sftime::format_datetime(before)
    );
    let sf = forcebridge::salesforce::sftime::parse_datetime(&header(
        c,
        "forcebridge.conflict.salesforce_modstamp",
    ))
    .unwrap();
    assert!(sf > before, "Salesforce's SystemModstamp is the newer one");
    assert_eq!(
        header(c, "forcebridge.conflict.last_modified_by"),
        sim.config().user_id
    );
    let original: Value = serde_json::from_slice(c.value.as_deref().unwrap()).unwrap();
    assert_eq!(original["fields"]["Name"], "Stale warehouse value");
    sim.shutdown().await;
}

/// A change made in the org, then a write-back timestamped a few hundred ms *before* it but in
/// the same second: `SystemModstamp` has second precision (SOAP API Developer Guide, "Primitive
/// Data Types": dateTime), so the two cannot be ordered. `winner` is `sink.same_second_winner`
/// (unset: the default). Returns the sink's stats, the conflicts topic's records and the
/// record's `Name` in the org afterwards.
async fn same_second_stale_write(
    winner: Option<&str>,
) -> (
    forcebridge::ops::telemetry::SinkSnapshot,
    Vec<ConsumedRecord>,
    Value,
) {
    let kafka = mock_kafka();
    let bootstrap = kafka.bootstrap();
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    let id = sim
        .create("Account", fields(json!({"Name": "Before"})))
        .unwrap();
    // The write's timestamp: up to 300 ms before the change, in the change's second (the
    // machine may cross into the next second while changing: then change again).
    let written_at = loop {
        next_second_ms().await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        let before = now_ms();
        sim.update(
            "Account",
            &id,
            fields(json!({"Name": "Edited in Salesforce"})),
        )
        .unwrap();
        let stamp = sim.record("Account", &id).unwrap()["SystemModstamp"]
            .as_i64()
            .unwrap();
        if stamp.div_euclid(1000) == before.div_euclid(1000) && before.rem_euclid(1000) >= 300 {
            break before - 300;
        }
    };
    send(
        &bootstrap,
        vec![msg(
            &id,
            json!({"object": "Account", "operation": "update", "id": id,
            "timestamp": written_at, "fields": {"Name": "Warehouse value"}}),
        )],
    )
    .await;
    let extra = winner.map_or(String::new(), |w| format!("  same_second_winner: {w}\n"));
    let running = start(config(&sim, &bootstrap, &extra, ""));
    running.wait_finished(1).await;
    let stats = running.stop().await;
    let conflicts = if stats.conflicts > 0 {
        wait_for_records(&bootstrap, CONFLICTS, 1, WAIT).await
    } else {
        Vec::new()
    };
    let name = sim.record("Account", &id).unwrap()["Name"].clone();
    sim.shutdown().await;
    (stats, conflicts, name)
}

/// By default Salesforce's value wins a same-second tie: the write goes to the conflicts topic
/// with the reason `same_second` and the org keeps its value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_same_second_stale_write_is_a_conflict() {
    let (stats, conflicts, name) = same_second_stale_write(None).await;
    assert_eq!((stats.written, stats.conflicts), (0, 1), "{stats:?}");
    assert_eq!(name, "Edited in Salesforce");
    assert_eq!(conflicts.len(), 1);
    let c = &conflicts[0];
    assert_eq!(header(c, "forcebridge.conflict.reason"), "same_second");
    let stamp = header(c, "forcebridge.conflict.salesforce_modstamp");
    assert!(stamp.ends_with(".000+0000"), "{stamp}");
    let original: Value = serde_json::from_slice(c.value.as_deref().unwrap()).unwrap();
    assert_eq!(original["fields"]["Name"], "Warehouse value");
}

/// With `sink.same_second_winner: kafka`, the same write is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_kafka_winning_ties_a_same_second_write_applies() {
    let (stats, conflicts, name) = same_second_stale_write(Some("kafka")).await;
    assert_eq!((stats.written, stats.conflicts), (1, 0), "{stats:?}");
    assert!(conflicts.is_empty());
    assert_eq!(name, "Warehouse value");
}

/// Per-record failures end in the dead-letter topic with their reason while the rest commit;
/// retryable ones (`UNABLE_TO_LOCK_ROW`) are retried; malformed messages are dead-lettered and
/// the consumer goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_dead_lettered_and_the_rest_commit() {
    let kafka = mock_kafka();
    let bootstrap = kafka.bootstrap();
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    sim.add_validation_rule(
        "Account",
        "Name",
        json!("REJECT ME"),
        "Names may not be REJECT ME",
    )
    .unwrap();
    sim.lock_rows(3);
    let ts = now_ms();
    let mut messages = vec![
        (Some("bad-json".to_owned()), b"{not json".to_vec(), vec![]),
        msg(
            "bad-op",
            json!({"object": "Account", "operation": "merge", "fields": {"Name": "x"}}),
        ),
        msg(
            "no-id",
            json!({"object": "Contact", "operation": "update", "timestamp": ts, "fields": {"Email": "a@b.c"}}),
        ),
        msg(
            "rule",
            json!({"object": "Account", "operation": "upsert", "timestamp": ts,
            "fields": {"External_Id__c": "V-1", "Name": "REJECT ME"}}),
        ),
        msg(
            "required",
            json!({"object": "Account", "operation": "insert", "fields": {"Phone": "1"}}),
        ),
        msg(
            "bad-field",
            json!({"object": "Account", "operation": "upsert", "timestamp": ts,
            "fields": {"External_Id__c": "B-1", "Name": "x", "Bogus__c": 1}}),
        ),
    ];
    for i in 0..20 {
        let ext = format!("OK-{i:02}");
        messages.push(msg(
            &ext,
            json!({"object": "Account", "operation": "upsert", "timestamp": ts,
            "fields": {"External_Id__c": ext, "Name": format!("Fine {i}")}}),
        ));
    }
    send(&bootstrap, messages).await;
    let running = start(config(&sim, &bootstrap, "", ""));
    running.wait_finished(26).await;
    let stats = running.stop().await;
    assert_eq!((stats.written, stats.dead_lettered), (20, 6), "{stats:?}");
    assert!(stats.retries >= 1, "locked rows were retried: {stats:?}");
    let by_ext = accounts_by_ext(&sim);
    assert_eq!(by_ext.keys().filter(|k| k.starts_with("OK-")).count(), 20);
    assert!(!by_ext.contains_key("V-1") && !by_ext.contains_key("B-1"));

    let dead = wait_for_records(&bootstrap, DLQ, 6, WAIT).await;
    let by_key: BTreeMap<String, &ConsumedRecord> = dead
        .iter()
        .map(|r| (String::from_utf8(r.key.clone().unwrap()).unwrap(), r))
        .collect();
    let expect = [
        (
            "bad-json",
            "sink.message",
            "INVALID_MESSAGE",
            "value is not a JSON object",
        ),
        (
            "bad-op",
            "sink.message",
            "INVALID_MESSAGE",
            "`operation`: unknown operation `merge`",
        ),
        (
            "no-id",
            "sink.message",
            "INVALID_MESSAGE",
            "`id` is missing",
        ),
        (
            "rule",
            "sink.write",
            "FIELD_CUSTOM_VALIDATION_EXCEPTION",
            "Names may not be REJECT ME",
        ),
        ("required", "sink.write", "REQUIRED_FIELD_MISSING", "Name"),
        // Refused by the Account describe before any write call.
        (
            "bad-field",
            "sink.field",
            "INVALID_FIELD",
            "Account.Bogus__c",
        ),
    ];
    for (key, stage, code, reason) in expect {
        let r = by_key
            .get(key)
            .unwrap_or_else(|| panic!("{key} not dead-lettered: {:?}", by_key.keys()));
        assert_eq!(header(r, "forcebridge.error.stage"), stage, "{key}");
        assert_eq!(header(r, "forcebridge.error.status_code"), code, "{key}");
        assert!(
            header(r, "forcebridge.error.reason").contains(reason),
            "{key}: {}",
            header(r, "forcebridge.error.reason")
        );
        assert_eq!(header(r, "forcebridge.source.topic"), WRITEBACK);
    }

    // Everything was committed: a restarted sink reads only a new message.
    send(
        &bootstrap,
        vec![msg(
            "OK-new",
            json!({"object": "Account", "operation": "upsert",
        "timestamp": ts, "fields": {"External_Id__c": "OK-new", "Name": "After restart"}}),
        )],
    )
    .await;
    let running = start(config(&sim, &bootstrap, "", ""));
    running.wait_finished(1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let again = running.stop().await;
    assert_eq!(again.received, 1, "{again:?}");
    sim.shutdown().await;
}

/// A crash after writing and before committing repeats the writes, idempotently: upserts by
/// External Id land on the same records, none is lost, and the repeat is no conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_before_the_commit_repeats_writes_idempotently() {
    let kafka = mock_kafka();
    let bootstrap = kafka.bootstrap();
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    send_upserts(&bootstrap, ("C", "Crash"), 0, 1500).await;
    // The first run is a `forcebridge run` process that commits nothing (commit interval of an
    // hour) and is killed with SIGKILL once every record is in the org: no drain, no commit on
    // leaving the group.
    let dir = std::env::temp_dir().join(format!(
        "forcebridge-crash-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sink.yaml");
    std::fs::write(
        &path,
        config_text(&sim, &bootstrap, "  commit_interval: 1h\n", ""),
    )
    .unwrap();
    let mut first = std::process::Command::new(env!("CARGO_BIN_EXE_forcebridge"))
        .args(["run", "--config"])
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    while accounts_by_ext(&sim).len() < 1500 {
        assert!(
            Instant::now() < deadline,
            "the first run did not write everything"
        );
        assert!(
            first.try_wait().unwrap().is_none(),
            "the first run stopped early"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first.kill().unwrap();
    first.wait().unwrap();
    let _ = std::fs::remove_dir_all(&dir);

    let second = start(config(&sim, &bootstrap, "", ""));
    second.wait_finished(1500).await;
    let stats = second.stop().await;
    assert_eq!(
        stats.received, 1500,
        "every uncommitted record is read again"
    );
    assert_eq!(
        (stats.written, stats.conflicts, stats.dead_lettered),
        (1500, 0, 0),
        "{stats:?}"
    );
    let by_ext = accounts_by_ext(&sim);
    assert_eq!(by_ext.len(), 1500, "no duplicates");
    assert!((0..1500).all(|i| by_ext[&format!("C-{i:04}")]["Name"] == format!("Crash {i}")));
    sim.shutdown().await;
}

/// Writing pauses before the reserve of the daily allowance is spent and resumes when the
/// allowance returns; 503s are retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writing_pauses_at_the_api_reserve_and_resumes() {
    let kafka = mock_kafka();
    let bootstrap = kafka.bootstrap();
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    sim.set_api_limit(1000);
    sim.set_api_usage(950);
    let ts = now_ms();
    let messages: Vec<Message> = (0..10)
        .map(|i| {
            let ext = format!("L-{i}");
            msg(
                &ext,
                json!({"object": "Account", "operation": "upsert", "timestamp": ts,
                "fields": {"External_Id__c": ext, "Name": "Limited"}}),
            )
        })
        .collect();
    send(&bootstrap, messages).await;
    let running = start(config(
        &sim,
        &bootstrap,
        "  api_reserve: 100\n  limits_poll_interval: 1s\n",
        "",
    ));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(running.stats.snapshot().written, 0, "paused at the reserve");
    assert!(accounts_by_ext(&sim).is_empty());
    let (used, _) = sim.api_usage();
    // Only `/limits` polls (one a second) spend calls while paused.
    assert!(
        used <= 950 + 5,
        "the reserve is not spent on writes: {used}"
    );
    sim.fail_next_requests(2, forcebridge::sim::RestFault::ServiceUnavailable);
    sim.set_api_usage(0);
    running.wait_finished(10).await;
    let stats = running.stop().await;
    assert_eq!(stats.written, 10);
    assert_eq!(accounts_by_ext(&sim).len(), 10);
    sim.shutdown().await;
}

/// The round trip: write-backs land in the org, and the source drops their echo (or marks it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_backs_do_not_echo_into_the_source_topics() {
    for mode in ["drop", "mark"] {
        let kafka = mock_kafka();
        kafka.create_topic("salesforce.Account", 1);
        let bootstrap = kafka.bootstrap();
        let sim = SimOrg::start(SimConfig::default()).await.unwrap();
        let source = format!(
            "source:\n  channels:\n    - name: /data/AccountChangeEvent\n      initial_replay: earliest\n  checkpoint_interval: 100ms\n  echo:\n    mode: {mode}\n"
        );
        let config = Arc::new(config(&sim, &bootstrap, "", &source));
        let cancel = CancellationToken::new();
        let source_stats = Arc::new(PipelineStats::default());
        let source_task = tokio::spawn(forcebridge::source::run(
            config.clone(),
            source_stats.clone(),
            cancel.clone(),
        ));
        let stats = Arc::new(SinkStats::default());
        let sink_task = tokio::spawn(sink::run(config.clone(), stats.clone(), cancel.clone()));
        let running = Running {
            cancel: cancel.clone(),
            stats,
            handle: sink_task,
        };

        let ts = now_ms();
        let messages: Vec<Message> = (0..50)
            .map(|i| {
                let ext = format!("R-{i:02}");
                msg(
                    &ext,
                    json!({"object": "Account", "operation": "upsert", "timestamp": ts,
                    "fields": {"External_Id__c": ext, "Name": format!("Round trip {i}")}}),
                )
            })
            .collect();
        send(&bootstrap, messages).await;
        running.wait_finished(50).await;
        assert_eq!(accounts_by_ext(&sim).len(), 50);
        // A change by a person after the write-backs: once it is in Kafka, every echo before it
        // has been through the source.
        let fence = sim
            .create("Account", fields(json!({"Name": "Fence"})))
            .unwrap();
        let expected = if mode == "drop" { 1 } else { 51 };
        let records = wait_for_records(&bootstrap, "salesforce.Account", expected, WAIT).await;
        let sunk = running.stop().await;
        source_task.await.unwrap().unwrap();
        assert_eq!(sunk.written, 50);
        assert_eq!(records.len(), expected, "{mode}");
        let fence_record = records
            .iter()
            .find(|r| r.key.as_deref() == Some(fence.as_bytes()));
        assert!(fence_record.is_some(), "{mode}: the fence arrived");
        let marked = records
            .iter()
            .filter(|r| r.header("forcebridge.echo").is_some())
            .count();
        assert_eq!(marked, expected - 1, "{mode}");
        let echoes = source_stats.snapshot().channels["/data/AccountChangeEvent"].echoes;
        assert!(echoes >= 1, "{mode}: echo events were recognised");
        sim.shutdown().await;
    }
}

/// A session Salesforce refuses and forcebridge cannot renew (a configured access token) is not
/// the records' fault: nothing is dead-lettered or committed; the sink retries until the token
/// works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_session_dead_letters_nothing() {
    let kafka = mock_kafka();
    let bootstrap = kafka.bootstrap();
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    let token = sim.issue_access_token();
    let ts = now_ms();
    send(
        &bootstrap,
        (0..5)
            .map(|i| {
                let ext = format!("T-{i}");
                msg(
                    &ext,
                    json!({"object": "Account", "operation": "upsert", "timestamp": ts,
                "fields": {"External_Id__c": ext, "Name": "Token"}}),
                )
            })
            .collect(),
    )
    .await;
    let text = format!(
        "name: test\nsalesforce:\n  login_url: {login}\n  pubsub_endpoint: {login}\n  allow_plaintext: true\n  auth:\n    type: access_token\n    access_token: {token}\n    instance_url: {login}\n    org_id: {org}\nsink:\n  topics: [{WRITEBACK}]\n  objects:\n    Account:\n      external_id_field: External_Id__c\n  linger: 50ms\n  commit_interval: 100ms\nkafka:\n  bootstrap_servers: {bootstrap}\n  create_topics: false\n  properties:\n    session.timeout.ms: \"6000\"\n",
        login = sim.instance_url(),
        org = sim.config().org_id,
    );
    let config = Config::from_yaml(&text, |_| None).unwrap();
    // The token is revoked after login (the consumer group takes seconds to form on the mock
    // cluster, so no write happens before): every REST call answers 401.
    let running = start(config);
    tokio::time::sleep(Duration::from_millis(500)).await;
    sim.revoke_tokens();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && running.stats.snapshot().received < 5 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stats = running.stop().await;
    assert!(stats.received >= 5, "{stats:?}");
    assert_eq!((stats.written, stats.dead_lettered), (0, 0), "{stats:?}");
    assert!(accounts_by_ext(&sim).is_empty());
    let dead = wait_for_records(&bootstrap, DLQ, 1, Duration::from_millis(500)).await;
    assert!(dead.is_empty());
    sim.shutdown().await;
}

/// The same path on a real broker (tansu): writes, a conflict, a dead letter, and offsets that a
/// restarted member finds committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_backs_on_a_real_broker() {
    let Some(tansu) = tokio::task::spawn_blocking(support::kafka::Tansu::start_or_skip)
        .await
        .unwrap()
    else {
        return;
    };
    let bootstrap = tansu.bootstrap();
    tansu.create_topic(WRITEBACK, 1).await;
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    let human = sim
        .create("Account", fields(json!({"Name": "Edited by a person"})))
        .unwrap();
    let ts = now_ms();
    let mut messages: Vec<Message> = (0..300)
        .map(|i| {
            let ext = format!("T-{i:03}");
            msg(
                &ext,
                json!({"object": "Account", "operation": "upsert", "timestamp": ts,
                "fields": {"External_Id__c": ext, "Name": format!("Tansu {i}")}}),
            )
        })
        .collect();
    messages.push(msg(
        &human,
        json!({"object": "Account", "operation": "update", "id": human,
        "timestamp": ts - 3_600_000, "fields": {"Name": "stale"}}),
    ));
    messages.push((Some("bad".into()), b"[]".to_vec(), vec![]));
    send(&bootstrap, messages).await;
    // A real broker: forcebridge creates its dead-letter and conflicts topics; tansu's group join
    // waits for the rebalance timeout (max.poll.interval.ms).
    let make = || {
        let c = sim.config();
        let text = format!(
            "name: test\nsalesforce:\n  login_url: {login}\n  pubsub_endpoint: {login}\n  allow_plaintext: true\n  auth:\n    type: client_credentials\n    client_id: {id}\n    client_secret: {secret}\nsink:\n  topics: [{WRITEBACK}]\n  objects:\n    Account:\n      external_id_field: External_Id__c\n  linger: 100ms\n  commit_interval: 100ms\nkafka:\n  bootstrap_servers: {bootstrap}\n  properties:\n    max.poll.interval.ms: \"6000\"\n    session.timeout.ms: \"6000\"\n",
            login = sim.instance_url(),
            id = c.client_id,
            secret = c.client_secret,
        );
        Config::from_yaml(&text, |_| None).unwrap()
    };
    let running = start(make());
    running.wait_finished(302).await;
    let stats = running.stop().await;
    assert_eq!(
        (stats.written, stats.conflicts, stats.dead_lettered),
        (300, 1, 1),
        "{stats:?}"
    );
    assert_eq!(accounts_by_ext(&sim).len(), 300);
    assert_eq!(
        sim.record("Account", &human).unwrap()["Name"],
        "Edited by a person"
    );
    let dead = wait_for_records(&bootstrap, DLQ, 1, WAIT).await;
    assert_eq!(header(&dead[0], "forcebridge.error.stage"), "sink.message");
    let conflicts = wait_for_records(&bootstrap, CONFLICTS, 1, WAIT).await;
    assert_eq!(
        header(&conflicts[0], "forcebridge.conflict.record_id"),
        human
    );

    let running = start(make());
    tokio::time::sleep(Duration::from_secs(10)).await;
    let again = running.stop().await;
    assert_eq!(
        again.received, 0,
        "offsets were committed on the broker: {again:?}"
    );
    sim.shutdown().await;
}

/// A formula field of the simulated Account (`UPPER(Name)`, `calculated` in its describe).
const FORMULA_FIELD: &str = "Name_Upper__c";

/// A record as the org's REST API returns it (`GET /sobjects/{object}/{id}`), as any client
/// reads it.
async fn rest_record(sim: &SimOrg, object: &str, id: &str) -> Map<String, Value> {
    forcebridge::ops::telemetry::install_crypto_provider();
    let url = format!(
        "{}/services/data/v62.0/sobjects/{object}/{id}",
        sim.instance_url()
    );
    let answer = reqwest::Client::new()
        .get(&url)
        .bearer_auth(sim.issue_access_token())
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success(), "GET {url}: {answer:?}");
    fields(answer.json().await.unwrap())
}

/// Write-backs give compound fields nested, as the source emits them (`BillingAddress.City`,
/// Contact `Name.FirstName`), or as components (`BillingCity`, in any case): both land, and the
/// org holds the component values (a real org writes components only: "Compound Fields", SOAP
/// API Developer Guide). The describe of each object is read once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_and_component_write_backs_land_as_components() {
    let kafka = mock_kafka();
    let bootstrap = kafka.bootstrap();
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    let nested = sim
        .create("Account", fields(json!({"Name": "Nested"})))
        .unwrap();
    let flat = sim
        .create("Account", fields(json!({"Name": "Flat"})))
        .unwrap();
    let ts = next_second_ms().await;
    send(
        &bootstrap,
        vec![
            msg(
                &nested,
                json!({"object": "Account", "operation": "update", "id": nested, "timestamp": ts,
                "fields": {"BillingAddress": {"Street": "1 Rue de Rivoli", "City": "Paris", "postalcode": "75001"}}}),
            ),
            msg(
                &flat,
                json!({"object": "account", "operation": "update", "id": flat, "timestamp": ts,
                "fields": {"billingstreet": "2 Place Bellecour", "BillingCity": "Lyon", "BILLINGPOSTALCODE": "69002"}}),
            ),
            msg(
                "C-nested",
                json!({"object": "Contact", "operation": "insert", "fields": {
                "External_Id__c": "C-nested", "Name": {"FirstName": "Ada", "LastName": "Lovelace"},
                "MailingAddress": {"City": "London"}}}),
            ),
            msg(
                "C-flat",
                json!({"object": "Contact", "operation": "insert", "fields": {
                "External_Id__c": "C-flat", "firstname": "Grace", "LastName": "Hopper", "MailingCity": "Arlington"}}),
            ),
        ],
    )
    .await;
    let running = start(config(&sim, &bootstrap, "", ""));
    running.wait_finished(4).await;
    let stats = running.stop().await;
    assert_eq!((stats.written, stats.dead_lettered), (4, 0), "{stats:?}");
    assert_eq!(stats.describe_calls, 2, "Account and Contact, once each");

    for (id, street, city, postal) in [
        (&nested, "1 Rue de Rivoli", "Paris", "75001"),
        (&flat, "2 Place Bellecour", "Lyon", "69002"),
    ] {
        let r = rest_record(&sim, "Account", id).await;
        assert_eq!(
            (
                &r["BillingStreet"],
                &r["BillingCity"],
                &r["BillingPostalCode"]
            ),
            (&json!(street), &json!(city), &json!(postal)),
            "{r:?}"
        );
    }
    for (ext, first, last, city) in [
        ("C-nested", "Ada", "Lovelace", "London"),
        ("C-flat", "Grace", "Hopper", "Arlington"),
    ] {
        let contact = sim
            .find_by_external_id("Contact", "External_Id__c", ext)
            .unwrap_or_else(|| panic!("{ext} was not inserted"));
        let id = contact["Id"].as_str().unwrap();
        let r = rest_record(&sim, "Contact", id).await;
        assert_eq!(
            (&r["FirstName"], &r["LastName"], &r["MailingCity"]),
            (&json!(first), &json!(last), &json!(city)),
            "{r:?}"
        );
    }
    sim.shutdown().await;
}

/// A write to a formula field and a compound field given as a single value are dead-lettered,
/// with the object and field named, before any write call: the org counts one API call, the
/// Account describe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn formula_and_whole_compound_writes_are_dead_lettered_before_any_write_call() {
    let kafka = mock_kafka();
    let bootstrap = kafka.bootstrap();
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    let id = sim
        .create("Account", fields(json!({"Name": "Unchanged"})))
        .unwrap();
    let ts = now_ms();
    send(
        &bootstrap,
        vec![
            msg(
                "formula",
                json!({"object": "Account", "operation": "update", "id": id, "timestamp": ts,
                "fields": {"Name": "Changed", (FORMULA_FIELD): 7}}),
            ),
            msg(
                "compound",
                json!({"object": "Account", "operation": "update", "id": id, "timestamp": ts,
                "fields": {"BillingAddress": "1 Rue de Rivoli, Paris"}}),
            ),
        ],
    )
    .await;
    let (used_before, _) = sim.api_usage();
    let running = start(config(&sim, &bootstrap, "", ""));
    running.wait_finished(2).await;
    let stats = running.stop().await;
    let (used_after, _) = sim.api_usage();
    assert_eq!((stats.written, stats.dead_lettered), (0, 2), "{stats:?}");
    assert_eq!(
        (stats.composite_calls, stats.describe_calls),
        (0, 1),
        "{stats:?}"
    );
    assert_eq!(
        used_after - used_before,
        1,
        "the org counted the describe and no write"
    );
    assert_eq!(sim.record("Account", &id).unwrap()["Name"], "Unchanged");

    let dead = wait_for_records(&bootstrap, DLQ, 2, WAIT).await;
    for (key, field, reason) in [
        (
            "formula",
            FORMULA_FIELD,
            format!("Account.{FORMULA_FIELD} is a formula field"),
        ),
        (
            "compound",
            "BillingAddress",
            "Account.BillingAddress is a compound field".to_owned(),
        ),
    ] {
        let r = dead
            .iter()
            .find(|r| r.key.as_deref() == Some(key.as_bytes()))
            .unwrap_or_else(|| panic!("{key} not dead-lettered"));
        assert_eq!(header(r, "forcebridge.error.stage"), "sink.field", "{key}");
        assert_eq!(
            header(r, "forcebridge.error.status_code"),
            "INVALID_FIELD_FOR_INSERT_UPDATE",
            "{key}"
        );
        assert_eq!(header(r, "forcebridge.error.fields"), field, "{key}");
        assert!(
            header(r, "forcebridge.error.reason").contains(&reason),
            "{key}: {}",
            header(r, "forcebridge.error.reason")
        );
    }
    sim.shutdown().await;
}

/// Upserts `{prefix}-{first..first + n}` (External Ids, four digits) named `{name} {i}` into the
/// write-back topic.
async fn send_upserts(bootstrap: &str, (prefix, name): (&str, &str), first: usize, n: usize) {
    let ts = now_ms();
    let messages = (first..first + n)
        .map(|i| {
            let ext = format!("{prefix}-{i:04}");
            msg(
                &ext,
                json!({"object": "Account", "operation": "upsert", "timestamp": ts,
                "fields": {"External_Id__c": ext, "Name": format!("{name} {i}")}}),
            )
        })
        .collect();
    send(bootstrap, messages).await;
}

/// Issue 19, item 7: a sink that crashed (SIGKILL: no LeaveGroup) and restarts with the same
/// `sink.group_instance_id` takes its partition back and writes at once, without waiting for
/// the dead member's session to expire. The session timeout and the rebalance timeout
/// (`max.poll.interval.ms`) are 45 s, and the restarted sink must finish its records within
/// `STATIC_GUARD` (25 s): as a dynamic member it cannot (the coordinator waits for the dead member
/// until one of the two timeouts), as a static member it replaces the dead one. The guard is the
/// line between those two outcomes, 20 s away from either, not a measure of speed. A real broker
/// (tansu): the librdkafka mock's classic group coordinator does not replace a member by its
/// instance id (rdkafka_mock_cgrp.c finds members by member id only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_static_member_resumes_before_the_session_timeout() {
    restart_after_a_crash("  group_instance_id: sink-a\n").await;
}

/// How long the restarted member may take; well below the 45 s session and rebalance timeouts.
const STATIC_GUARD: Duration = Duration::from_secs(25);

async fn restart_after_a_crash(membership: &str) {
    let Some(tansu) = tokio::task::spawn_blocking(support::kafka::Tansu::start_or_skip)
        .await
        .unwrap()
    else {
        return;
    };
    let bootstrap = tansu.bootstrap();
    for topic in [WRITEBACK, DLQ, CONFLICTS] {
        tansu.create_topic(topic, 1).await;
    }
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    let text = config_text(&sim, &bootstrap, membership, "").replace(
        "    session.timeout.ms: \"6000\"\n",
        "    session.timeout.ms: \"45000\"\n    max.poll.interval.ms: \"45000\"\n",
    );
    assert!(text.contains("45000"), "{text}");
    send_upserts(&bootstrap, ("S", "Static"), 0, 100).await;

    let dir = std::env::temp_dir().join(format!(
        "forcebridge-static-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sink.yaml");
    std::fs::write(&path, &text).unwrap();
    let mut first = std::process::Command::new(env!("CARGO_BIN_EXE_forcebridge"))
        .args(["run", "--config"])
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    while accounts_by_ext(&sim).len() < 100 {
        assert!(Instant::now() < deadline, "the first run did not write");
        assert!(first.try_wait().unwrap().is_none(), "the first run stopped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let its commit of the written records land, then kill it: no drain, no LeaveGroup.
    tokio::time::sleep(Duration::from_millis(500)).await;
    first.kill().unwrap();
    first.wait().unwrap();
    let _ = std::fs::remove_dir_all(&dir);

    send_upserts(&bootstrap, ("S", "Static"), 100, 100).await;
    let second = start(Config::from_yaml(&text, |_| None).unwrap());
    let resumed = tokio::time::timeout(STATIC_GUARD, async {
        while accounts_by_ext(&sim).len() < 200 {
            assert!(!second.handle.is_finished(), "the restarted sink stopped");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let written = accounts_by_ext(&sim).len();
    second.stop().await;
    assert!(
        resumed.is_ok(),
        "the restarted sink wrote {written} of 200 records before the guard: it waited for the dead member"
    );
    let by_ext = accounts_by_ext(&sim);
    assert!((0..200).all(|i| by_ext[&format!("S-{i:04}")]["Name"] == format!("Static {i}")));
    sim.shutdown().await;
}
