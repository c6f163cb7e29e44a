//! `forcebridge demo`: the whole source path on embedded defaults.
//!
//! Contract: starts a simulated Salesforce org holding `--existing-accounts` Accounts (their
//! events past retention) and an embedded Kafka (librdkafka's mock cluster, on loopback,
//! readable by any Kafka client), runs the real pipeline against them with a config rendered
//! exactly as a user would write it, shows the Account channel's snapshot loading the existing
//! records and handing off to the stream, then makes a known stream of changes (creates, updates,
//! deletes, undeletes, a multi-record transaction, contacts, Platform Events), shows progress,
//! and ends with a summary read back from Kafka. Then the round trip: write-back messages go
//! to a Kafka topic, the sink writes them into the org (upserts by External Id, updates by Id,
//! one stale update that loses to a newer change in the org, two malformed messages), and the
//! source drops their echo. It fails (non-zero exit) when Kafka does not hold exactly the
//! records the changes should produce, or the org does not hold what was written back.
//!
//! The files: `setup.rs` (options, errors, topics, Kafka, config), `changes.rs` (the changes in
//! the org), `round_trip.rs` (the write-backs and their echoes); here the run, its progress and
//! its summary.

mod changes;
mod round_trip;
mod setup;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::ops::telemetry::{PipelineStats, SinkStats, StatsSnapshot};
use crate::sim::{SimConfig, SimOrg};
use changes::{Changes, make_changes};
use round_trip::{print_round_trip, round_trip};
use setup::{ACCOUNT_TOPIC, demo_config, start_kafka};

/// The channel the demo snapshots.
const ACCOUNT_CHANNEL: &str = "/data/AccountChangeEvent";

pub use setup::{DemoArgs, DemoError};

/// Runs the demo until the summary (or until `cancel` with `--keep-running`).
pub async fn run(args: DemoArgs, cancel: CancellationToken) -> Result<(), DemoError> {
    // Keepalives every second (a real org: within 270 s): the snapshot's position is fixed at
    // the first answer of a quiet channel.
    let sim = SimOrg::start(SimConfig {
        keepalive_interval: Duration::from_secs(1),
        ..SimConfig::default()
    })
    .await
    .map_err(|e| DemoError::Sim(e.to_string()))?;
    let existing = seed_existing(&sim, args.existing_accounts)?;
    // The mock cluster is !Send: it lives on this task, for the whole demo.
    let kafka = start_kafka(&args)?;
    let bootstrap = kafka.bootstrap_servers();
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
    await_snapshot(
        &stats,
        &pipeline,
        &cancel,
        started,
        existing,
        args.timeout_secs,
    )
    .await;
    let Changes {
        events,
        mut expected,
    } = make_changes(&sim, &args).map_err(DemoError::Sim)?;
    // The snapshot's rows are on the Account topic before the changes.
    *expected.entry(ACCOUNT_TOPIC.to_owned()).or_default() += existing as u64;
    let total: u64 = expected.values().sum();
    println!(
        "  made {events} changes in the org ({total} Kafka records expected) in {:.1?}",
        started.elapsed()
    );
    await_records(
        &stats,
        &pipeline,
        &cancel,
        started,
        total,
        args.timeout_secs,
    )
    .await;
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
    let in_kafka = read_back(&bootstrap, &expected)?;
    println!();
    println!(
        "summary ({:.1?}; source phase {:.1?})",
        elapsed, source_elapsed
    );
    let mut ok = print_source_summary(&snapshot, &in_kafka, &expected, round_trip.is_some());
    if let Some(rt) = &round_trip {
        ok &= print_round_trip(rt, &sink_stats.snapshot());
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

/// Creates `count` Accounts that exist before forcebridge starts: their change events are
/// past the org's retention (purged), so only a snapshot can bring them to Kafka.
fn seed_existing(sim: &SimOrg, count: usize) -> Result<usize, DemoError> {
    let started = Instant::now();
    sim.generate("Account", count)
        .map_err(|e| DemoError::Sim(e.to_string()))?;
    sim.purge_events_before(std::time::SystemTime::now());
    println!(
        "  {count} Accounts exist in the org before forcebridge starts (made in {:.1?})",
        started.elapsed()
    );
    Ok(count)
}

/// Progress of the Account channel's snapshot until it hands off to the stream (or the
/// pipeline stops, the demo is interrupted or overruns `timeout_secs`).
async fn await_snapshot<T>(
    stats: &PipelineStats,
    pipeline: &JoinHandle<T>,
    cancel: &CancellationToken,
    started: Instant,
    existing: usize,
    timeout_secs: u64,
) {
    let deadline = Instant::now() + Duration::from_secs(timeout_secs);
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    loop {
        ticker.tick().await;
        let channel = stats
            .snapshot()
            .channels
            .get(ACCOUNT_CHANNEL)
            .cloned()
            .unwrap_or_default();
        let phase = if channel.snapshots_completed > 0 {
            "done: streaming from the position fixed before it"
        } else if channel.snapshot_running {
            "reading"
        } else {
            "fixing the stream position"
        };
        println!(
            "  [{:>5.1}s] snapshot of Account  rows {:>6}/{existing}  {phase}",
            started.elapsed().as_secs_f64(),
            channel.snapshot_rows,
        );
        if channel.snapshots_completed > 0
            || pipeline.is_finished()
            || cancel.is_cancelled()
            || Instant::now() > deadline
        {
            break;
        }
    }
}

/// Progress until every expected record is acknowledged by Kafka (or the pipeline stops, the
/// demo is interrupted or overruns `timeout_secs` from now).
async fn await_records<T>(
    stats: &PipelineStats,
    pipeline: &JoinHandle<T>,
    cancel: &CancellationToken,
    started: Instant,
    total: u64,
    timeout_secs: u64,
) {
    let deadline = Instant::now() + Duration::from_secs(timeout_secs);
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
}

/// The records each expected topic holds, read back from Kafka.
fn read_back(
    bootstrap: &str,
    expected: &BTreeMap<String, u64>,
) -> Result<BTreeMap<String, u64>, DemoError> {
    let mut in_kafka = BTreeMap::new();
    for topic in expected.keys() {
        let count = crate::kafka::count_records(bootstrap, topic, Duration::from_secs(10))
            .map_err(|e| DemoError::Kafka(e.to_string()))?;
        in_kafka.insert(topic.clone(), count);
    }
    Ok(in_kafka)
}

/// Prints the source's part of the summary; whether each topic holds exactly the records
/// expected (and the round trip's two, when it `round_tripped`).
fn print_source_summary(
    snapshot: &StatsSnapshot,
    in_kafka: &BTreeMap<String, u64>,
    expected: &BTreeMap<String, u64>,
    round_tripped: bool,
) -> bool {
    println!(
        "  events received from Salesforce  {}",
        snapshot.events_received()
    );
    for (channel, c) in &snapshot.channels {
        println!(
            "    {channel:<32} {:>6} events  {} keepalives  {} checkpoints{}",
            c.events_received,
            c.keepalives,
            c.checkpoints_written,
            if c.snapshot_rows > 0 {
                format!("  {} snapshot rows", c.snapshot_rows)
            } else {
                String::new()
            }
        );
    }
    println!(
        "  records in Kafka (read back)     {}",
        in_kafka.values().sum::<u64>()
    );
    println!("    {:<32} {:>8} {:>8}", "topic", "expected", "in Kafka");
    let mut ok = true;
    for (topic, want) in expected {
        // The round trip adds exactly two Account records, both changes made by a person: the
        // contested edit and the fence. The write-backs' echoes are dropped.
        let want = &(want + 2 * u64::from(topic == ACCOUNT_TOPIC && round_tripped));
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
    ok
}
