//! The demo's round trip: write-back messages through Kafka into the org by the sink, and their
//! echoes dropped by the source.
//!
//! Contract: [`round_trip`] produces upserts of `--write-backs` new accounts by External Id,
//! updates by Id of accounts in the org, one stale update that loses to a newer change in the org
//! (a conflict) and two malformed messages (dead letters); waits until the sink finished them and
//! the source has produced a change made after them (so every echo went through it); and reports
//! what the org holds, the API calls spent and the echoes dropped. [`print_round_trip`] prints
//! that part of the summary.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::changes::fields;
use super::setup::{ACCOUNT_TOPIC, DemoArgs, DemoError, WRITEBACK_TOPIC};
use crate::kafka::{OutgoingRecord, Producer};
use crate::ops::telemetry::{PipelineStats, SinkSnapshot, SinkStats};
use crate::sim::SimOrg;

/// What the round trip did.
pub(super) struct RoundTrip {
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
pub(super) async fn round_trip(
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
    let (messages, expected_written) = write_back_messages(sim, args).await?;
    produce(bootstrap, &messages).await?;

    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.timeout_secs);
    await_write_backs(sink_stats, messages.len() as u64, started, deadline).await;
    let (used_after, _) = sim.api_usage();
    await_echoes(sim, stats, expected, deadline).await?;
    let account_channel = stats.channel("/data/AccountChangeEvent");
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

/// A write-back message: its key and its value.
type Message = (String, Vec<u8>);

/// The write-back messages and how many of them the sink should write: upserts
/// of `--write-backs` new accounts, updates by Id of up to 99 accounts, a stale update of an
/// account someone edits in the org now (a conflict), two malformed messages.
async fn write_back_messages(
    sim: &SimOrg,
    args: &DemoArgs,
) -> Result<(Vec<Message>, u64), DemoError> {
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
    // The org keeps datetimes to the second: the warehouse's writes are timestamped in a later
    // second than every change made so far, so last-write-wins can order them.
    tokio::time::sleep(crate::sim::until_next_second()).await;
    let now = crate::sim::now_ms();
    let mut messages: Vec<Message> = Vec::new();
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
    Ok((messages, expected_written))
}

/// Produces the messages into the write-back topic.
async fn produce(bootstrap: &str, messages: &[Message]) -> Result<(), DemoError> {
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
        .map_err(DemoError::Kafka)
}

/// Progress until the sink has finished the `total` messages (written, conflict or dead
/// letter), or `deadline`.
async fn await_write_backs(
    sink_stats: &SinkStats,
    total: u64,
    started: Instant,
    deadline: Instant,
) {
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
}

/// Waits (until `deadline`) for the source to produce a change made by a person after the
/// write-backs: once it has, every echo of the write-backs has been through the source.
async fn await_echoes(
    sim: &SimOrg,
    stats: &PipelineStats,
    expected: &BTreeMap<String, u64>,
    deadline: Instant,
) -> Result<(), DemoError> {
    // A change made by a person after the write-backs: once the source has produced it, every
    // echo of the write-backs has been through the source.
    sim.create(
        "Account",
        fields(json!({"Name": "Fence: made after the write-backs"})),
    )
    .map_err(|e| DemoError::Sim(e.to_string()))?;
    let want = expected.get(ACCOUNT_TOPIC).copied().unwrap_or(0) + 2;
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
    Ok(())
}

/// Prints the round trip's part of the summary; whether the org and the sink's outcomes are
/// what the messages should make.
pub(super) fn print_round_trip(rt: &RoundTrip, s: &SinkSnapshot) -> bool {
    println!(
        "  write-back (Kafka → Salesforce)  {} messages",
        rt.messages
    );
    println!(
        "    written {}  conflicts {}  dead-lettered {}  retries {}",
        s.written, s.conflicts, s.dead_lettered, s.retries
    );
    println!(
        "    API calls spent {} ({} composite calls, {} describe calls, {:.0} records per call)",
        rt.api_calls,
        s.composite_calls,
        s.describe_calls,
        s.written as f64 / rt.api_calls.max(1) as f64
    );
    let org_ok = rt.in_org == rt.expected_in_org;
    let counts_ok = s.written == rt.expected_written && s.conflicts == 1 && s.dead_lettered == 2;
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
    org_ok && counts_ok
}
