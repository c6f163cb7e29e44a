//! `forcebridge demo`: the whole source path on embedded defaults.
//!
//! Contract: starts a simulated Salesforce org and an embedded Kafka (librdkafka's mock cluster,
//! on loopback, readable by any Kafka client), runs the real pipeline against them with a config
//! rendered exactly as a user would write it, makes a known stream of changes (creates, updates,
//! deletes, undeletes, a multi-record transaction, contacts, Platform Events), shows progress,
//! and ends with a summary read back from Kafka. Then the round trip: write-back messages go
//! to a Kafka topic, the sink writes them into the org (upserts by External Id, updates by Id,
//! one stale update that loses to a newer change in the org, two malformed messages), and the
//! source drops their echo. It fails (non-zero exit) when Kafka does not hold exactly the
//! records the changes should produce, or the org does not hold what was written back.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::kafka::EmbeddedKafka;
use crate::kafka::{OutgoingRecord, Producer};
use crate::ops::telemetry::{PipelineStats, SinkStats};
use crate::sim::{SimConfig, SimOrg};

/// Options of `forcebridge demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Accounts to create (half of them are then updated).
    #[arg(long, default_value_t = 2000)]
    pub accounts: usize,
    /// Contacts to create.
    #[arg(long, default_value_t = 200)]
    pub contacts: usize,
    /// Platform Events (`/event/Order_Event__e`) to publish.
    #[arg(long, default_value_t = 100)]
    pub platform_events: usize,
    /// Write-back messages (upserts of new accounts by External Id) for the round trip.
    #[arg(long, default_value_t = 1000)]
    pub write_backs: usize,
    /// Keep the simulated org and Kafka running after the summary, until Ctrl-C.
    #[arg(long)]
    pub keep_running: bool,
    /// Give up when the records have not all arrived after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout_secs: u64,
}

/// Errors of the demo.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("the simulated org failed: {0}")]
    Sim(String),
    #[error("the embedded Kafka failed: {0}")]
    Kafka(String),
    #[error("the demo config was rejected: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Pipeline(#[from] crate::source::PipelineError),
    #[error(transparent)]
    Sink(#[from] crate::sink::SinkError),
    #[error("{0}")]
    Mismatch(String),
}

const ACCOUNT_TOPIC: &str = "salesforce.Account";
const CONTACT_TOPIC: &str = "salesforce.Contact";
const ORDER_TOPIC: &str = "salesforce.Order_Event__e";
const WRITEBACK_TOPIC: &str = "salesforce.writeback";
const CONFLICTS_TOPIC: &str = "forcebridge.conflicts";

/// Partitions for an embedded topic of about `records` records: a mock-cluster partition keeps
/// only its last 5 MB (older records are dropped), so keep each under 4 MB at ~1.5 KB a record.
fn object_topic_partitions(records: usize) -> i32 {
    const RECORD_BYTES: usize = 1536;
    const PARTITION_BYTES: usize = 4 << 20;
    (1 + records * RECORD_BYTES / PARTITION_BYTES).min(1000) as i32
}

/// Runs the demo until the summary (or until `cancel` with `--keep-running`).
pub async fn run(args: DemoArgs, cancel: CancellationToken) -> Result<(), DemoError> {
    let sim = SimOrg::start(SimConfig::default())
        .await
        .map_err(|e| DemoError::Sim(e.to_string()))?;
    // The mock cluster is !Send: it lives on this task, for the whole demo.
    let kafka = EmbeddedKafka::start(3).map_err(|e| DemoError::Kafka(e.to_string()))?;
    let bootstrap = kafka.bootstrap_servers();
    // The mock cluster has no CreateTopics API: create forcebridge's own topics up front.
    for topic in [
        "forcebridge.checkpoints",
        "forcebridge.dlq",
        ACCOUNT_TOPIC,
        CONTACT_TOPIC,
        ORDER_TOPIC,
        WRITEBACK_TOPIC,
        CONFLICTS_TOPIC,
    ] {
        let partitions = if topic == ACCOUNT_TOPIC {
            object_topic_partitions(args.accounts * 2)
        } else {
            1
        };
        kafka
            .create_topic(topic, partitions)
            .map_err(|e| DemoError::Kafka(e.to_string()))?;
    }
    println!("forcebridge demo");
    println!(
        "  simulated Salesforce org  Pub/Sub {}  REST/OAuth {}",
        sim.pubsub_endpoint(),
        sim.instance_url()
    );
    println!(
        "  embedded Kafka            {bootstrap}  (librdkafka mock cluster; any Kafka client can read it)"
    );

    let config_text = demo_config(&sim, &bootstrap);
    let config = Arc::new(Config::from_yaml(&config_text, |_| None)?);
    let stats = Arc::new(PipelineStats::default());
    let sink_stats = Arc::new(SinkStats::default());
    let pipeline_cancel = cancel.child_token();
    let pipeline = tokio::spawn(crate::source::run(
        config.clone(),
        stats.clone(),
        pipeline_cancel.clone(),
    ));
    let sink = tokio::spawn(crate::sink::run(
        config.clone(),
        sink_stats.clone(),
        pipeline_cancel.clone(),
    ));

    let started = Instant::now();
    let Changes { events, expected } = make_changes(&sim, &args).map_err(DemoError::Sim)?;
    let total: u64 = expected.values().sum();
    println!(
        "  made {events} changes in the org ({total} Kafka records expected) in {:.1?}",
        started.elapsed()
    );

    // Progress until every expected record is acknowledged by Kafka.
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    loop {
        ticker.tick().await;
        let snapshot = stats.snapshot();
        let produced = snapshot.records_produced();
        println!(
            "  [{:>5.1}s] events in {:>6}  records out {:>6}/{total}  dead-lettered {}",
            started.elapsed().as_secs_f64(),
            snapshot.events_received(),
            produced,
            snapshot.events_dead_lettered()
        );
        if produced >= total || pipeline.is_finished() || cancel.is_cancelled() {
            break;
        }
        if Instant::now() > deadline {
            break;
        }
    }
    let source_elapsed = started.elapsed();

    let round_trip = if pipeline.is_finished() || sink.is_finished() || cancel.is_cancelled() {
        None
    } else {
        Some(round_trip(&sim, &bootstrap, &args, &stats, &sink_stats, &expected).await?)
    };

    pipeline_cancel.cancel();
    let outcome = pipeline
        .await
        .map_err(|e| DemoError::Mismatch(format!("pipeline task failed: {e}")))?;
    outcome?;
    sink.await
        .map_err(|e| DemoError::Mismatch(format!("sink task failed: {e}")))??;
    let elapsed = started.elapsed();

    // The summary is read back from Kafka, not from our own counters.
    let snapshot = stats.snapshot();
    let mut in_kafka = BTreeMap::new();
    for topic in expected.keys() {
        let count = crate::kafka::count_records(&bootstrap, topic, Duration::from_secs(10))
            .map_err(|e| DemoError::Kafka(e.to_string()))?;
        in_kafka.insert(topic.clone(), count);
    }
    println!();
    println!(
        "summary ({:.1?}; source phase {:.1?})",
        elapsed, source_elapsed
    );
    println!(
        "  events received from Salesforce  {}",
        snapshot.events_received()
    );
    for (channel, c) in &snapshot.channels {
        println!(
            "    {channel:<32} {:>6} events  {} keepalives  {} checkpoints",
            c.events_received, c.keepalives, c.checkpoints_written
        );
    }
    println!(
        "  records in Kafka (read back)     {}",
        in_kafka.values().sum::<u64>()
    );
    println!("    {:<32} {:>8} {:>8}", "topic", "expected", "in Kafka");
    let mut ok = true;
    for (topic, want) in &expected {
        // The round trip adds exactly two Account records, both changes made by a person: the
        // contested edit and the fence. The write-backs' echoes are dropped.
        let want = &(want + 2 * u64::from(topic == ACCOUNT_TOPIC && round_trip.is_some()));
        let got = in_kafka.get(topic).copied().unwrap_or(0);
        let mark = if got == *want { "ok" } else { "MISMATCH" };
        ok &= got == *want;
        println!("    {topic:<32} {want:>8} {got:>8}  {mark}");
    }
    println!(
        "  dead-lettered                    {}",
        snapshot.events_dead_lettered()
    );
    println!(
        "  schemas fetched (GetSchema)      {}",
        snapshot.schemas_fetched
    );
    if let Some(rt) = &round_trip {
        let s = sink_stats.snapshot();
        println!(
            "  write-back (Kafka → Salesforce)  {} messages",
            rt.messages
        );
        println!(
            "    written {}  conflicts {}  dead-lettered {}  retries {}",
            s.written, s.conflicts, s.dead_lettered, s.retries
        );
        println!(
            "    API calls spent {} ({} composite calls, {:.0} records per call)",
            rt.api_calls,
            s.composite_calls,
            s.written as f64 / rt.api_calls.max(1) as f64
        );
        let org_ok = rt.in_org == rt.expected_in_org;
        let counts_ok =
            s.written == rt.expected_written && s.conflicts == 1 && s.dead_lettered == 2;
        println!(
            "    accounts in the org by External Id {}/{}  {}",
            rt.in_org,
            rt.expected_in_org,
            if org_ok { "ok" } else { "MISMATCH" }
        );
        println!(
            "    outcomes (written {}, 1 conflict, 2 dead letters)  {}",
            rt.expected_written,
            if counts_ok { "ok" } else { "MISMATCH" }
        );
        println!(
            "    echoes dropped by the source   {} events (none reached {ACCOUNT_TOPIC})",
            rt.echoes
        );
        ok &= org_ok && counts_ok;
    }
    println!();
    println!("Kafka bootstrap servers: {bootstrap}");
    if args.keep_running {
        println!("keeping the simulated org and Kafka running; Ctrl-C to stop");
        cancel.cancelled().await;
    }
    drop(kafka);
    sim.shutdown().await;
    if !ok {
        return Err(DemoError::Mismatch(
            "Kafka does not hold exactly the expected records".into(),
        ));
    }
    Ok(())
}

/// The config a user would write for this org and cluster.
fn demo_config(sim: &SimOrg, bootstrap: &str) -> String {
    format!(
        r#"name: forcebridge-demo
{salesforce}source:
  channels:
    - name: /data/AccountChangeEvent
      initial_replay: earliest
    - name: /data/ContactChangeEvent
      initial_replay: earliest
    - name: /event/Order_Event__e
      initial_replay: earliest
  topic_template: "salesforce.{{object}}"
  checkpoint_interval: 200ms
sink:
  topics: [{WRITEBACK_TOPIC}]
  objects:
    Account:
      external_id_field: External_Id__c
  linger: 100ms
  commit_interval: 200ms
kafka:
  bootstrap_servers: {bootstrap}
"#,
        salesforce = sim.salesforce_yaml(),
    )
}

/// What the demo did to the org.
struct Changes {
    /// CDC and Platform Events the changes emit.
    events: usize,
    /// Kafka records each topic should receive.
    expected: BTreeMap<String, u64>,
}

fn fields(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// Makes the demo's changes; returns the events they emit and the records each topic should get.
fn make_changes(sim: &SimOrg, args: &DemoArgs) -> Result<Changes, String> {
    let err = |e: crate::sim::SimError| e.to_string();
    let accounts = sim.generate("Account", args.accounts).map_err(err)?;
    for (i, id) in accounts.iter().take(args.accounts / 2).enumerate() {
        let change = json!({ "Phone": format!("+1 415 555 {:04}", i % 10_000), "BillingAddress": { "City": "San Francisco", "State": "CA" } });
        sim.update("Account", id, fields(change)).map_err(err)?;
    }
    // One transaction: the same change to ten accounts → one event with ten recordIds.
    let batch: Vec<&String> = accounts.iter().rev().take(10.min(accounts.len())).collect();
    let mut tx = sim.transaction();
    for id in &batch {
        tx.update("Account", id, fields(json!({ "Rating": "Hot" })))
            .map_err(err)?;
    }
    tx.commit().map_err(err)?;
    let deleted: Vec<&String> = accounts.iter().skip(args.accounts / 2).take(5).collect();
    for id in &deleted {
        sim.delete("Account", id).map_err(err)?;
    }
    for id in deleted.iter().take(2) {
        sim.undelete("Account", id).map_err(err)?;
    }
    for i in 0..args.contacts {
        let account = accounts.get(i % accounts.len().max(1)).cloned();
        let contact = json!({
            "Name": { "FirstName": format!("Ada{i}"), "LastName": "Lovelace" },
            "Email": format!("ada{i}@example.com"),
            "AccountId": account,
        });
        sim.create("Contact", fields(contact)).map_err(err)?;
    }
    for i in 0..args.platform_events {
        let event = json!({
            "Order_Number__c": format!("ORD-{i:06}"),
            "Amount__c": 100.0 + i as f64,
            "Status__c": "Placed",
        });
        sim.publish_event("/event/Order_Event__e", fields(event))
            .map_err(err)?;
    }
    let undeleted = deleted.len().min(2);
    // One event per change, except the transaction: one event, one record per account in it.
    let tx_events = usize::from(!batch.is_empty());
    let account_events = args.accounts + args.accounts / 2 + tx_events + deleted.len() + undeleted;
    let account_records = account_events - tx_events + batch.len();
    Ok(Changes {
        events: account_events + args.contacts + args.platform_events,
        expected: BTreeMap::from([
            (ACCOUNT_TOPIC.to_owned(), account_records as u64),
            (CONTACT_TOPIC.to_owned(), args.contacts as u64),
            (ORDER_TOPIC.to_owned(), args.platform_events as u64),
        ]),
    })
}

/// What the round trip did.
struct RoundTrip {
    messages: usize,
    expected_written: u64,
    expected_in_org: usize,
    in_org: usize,
    api_calls: u64,
    echoes: u64,
}

/// Writes back through Kafka: upserts of new accounts, updates by Id, one stale update (a
/// conflict), two malformed messages (dead letters); waits until the sink finished them and the
/// source has seen a change made after them (so every echo went through it).
async fn round_trip(
    sim: &SimOrg,
    bootstrap: &str,
    args: &DemoArgs,
    stats: &PipelineStats,
    sink_stats: &SinkStats,
    expected: &BTreeMap<String, u64>,
) -> Result<RoundTrip, DemoError> {
    println!();
    println!(
        "round trip: {} write-back messages → {WRITEBACK_TOPIC} → Salesforce",
        args.write_backs
    );
    let (used_before, _) = sim.api_usage();
    let existing: Vec<String> = sim
        .records("Account")
        .into_iter()
        .filter_map(|r| r.get("Id").and_then(Value::as_str).map(str::to_owned))
        .take(100)
        .collect();
    let past = crate::sim::now_ms() - 3_600_000;
    // Someone edits the first account in the org now; a write-back from an hour ago loses.
    let contested = existing.first().cloned();
    if let Some(id) = &contested {
        sim.update(
            "Account",
            id,
            fields(json!({"Description": "edited in Salesforce"})),
        )
        .map_err(|e| DemoError::Sim(e.to_string()))?;
    }
    let now = crate::sim::now_ms();
    let mut messages: Vec<(String, Vec<u8>)> = Vec::new();
    for i in 0..args.write_backs {
        let ext = format!("DEMO-{i:06}");
        let value = json!({"object": "Account", "operation": "upsert", "timestamp": now,
            "fields": {"External_Id__c": ext, "Name": format!("Warehouse customer {i}"), "Rating": "Warm"}});
        messages.push((ext, value.to_string().into_bytes()));
    }
    for id in existing.iter().skip(1) {
        let value = json!({"object": "Account", "operation": "update", "id": id, "timestamp": now,
            "fields": {"Description": "enriched by the warehouse"}});
        messages.push((id.clone(), value.to_string().into_bytes()));
    }
    if let Some(id) = &contested {
        let value = json!({"object": "Account", "operation": "update", "id": id, "timestamp": past,
            "fields": {"Description": "stale warehouse value"}});
        messages.push((id.clone(), value.to_string().into_bytes()));
    }
    messages.push(("malformed-1".into(), b"{this is not json".to_vec()));
    messages.push((
        "malformed-2".into(),
        br#"{"object": "Account", "operation": "merge", "fields": {"Name": "x"}}"#.to_vec(),
    ));
    let expected_written = (args.write_backs + existing.len().saturating_sub(1)) as u64;

    let producer = Producer::new(&crate::kafka::KafkaSettings {
        bootstrap_servers: bootstrap.to_owned(),
        properties: Default::default(),
    })
    .map_err(|e| DemoError::Kafka(e.to_string()))?;
    producer
        .deliver(messages.iter().map(|(key, value)| OutgoingRecord {
            topic: WRITEBACK_TOPIC,
            key: Some(key.as_bytes()),
            value: Some(value),
            headers: &[],
        }))
        .await
        .map_err(DemoError::Kafka)?;

    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.timeout_secs);
    let total = messages.len() as u64;
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    loop {
        ticker.tick().await;
        let s = sink_stats.snapshot();
        let done = s.written + s.conflicts + s.dead_lettered;
        println!(
            "  [{:>5.1}s] write-backs {:>6}/{total}  written {}  conflicts {}  dead-lettered {}",
            started.elapsed().as_secs_f64(),
            done,
            s.written,
            s.conflicts,
            s.dead_lettered
        );
        if done >= total || Instant::now() > deadline {
            break;
        }
    }
    let (used_after, _) = sim.api_usage();

    // A change made by a person after the write-backs: once the source has produced it, every
    // echo of the write-backs has been through the source.
    sim.create(
        "Account",
        fields(json!({"Name": "Fence: made after the write-backs"})),
    )
    .map_err(|e| DemoError::Sim(e.to_string()))?;
    let want = expected.get(ACCOUNT_TOPIC).copied().unwrap_or(0) + 2;
    let account_channel = stats.channel("/data/AccountChangeEvent");
    while Instant::now() < deadline {
        let produced = stats
            .snapshot()
            .records_by_topic
            .get(ACCOUNT_TOPIC)
            .copied()
            .unwrap_or(0);
        if produced >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let in_org = (0..args.write_backs)
        .filter(|i| {
            sim.find_by_external_id("Account", "External_Id__c", &format!("DEMO-{i:06}"))
                .is_some()
        })
        .count();
    Ok(RoundTrip {
        messages: messages.len(),
        expected_written,
        expected_in_org: args.write_backs,
        in_org,
        api_calls: used_after - used_before,
        echoes: account_channel
            .echoes
            .load(std::sync::atomic::Ordering::Relaxed),
    })
}
