//! `forcebridge bench sink`: throughput, Salesforce API calls, call latency, CPU and memory of the
//! write-back path, end to end.
//!
//! Contract: starts a simulated Salesforce org and an embedded Kafka (librdkafka's mock cluster)
//! in this process and runs the real sink ([`crate::sink::run`], last-write-wins on, as by
//! default) against them.
//!
//! * Outside the measured window: `--records` records are created in the org (round-robin over
//!   `--objects`: Account, then Contact), and one write-back message per record is produced into
//!   the write-back topic: an `update` by Id of `Description`, keyed by the Id, whose `timestamp`
//!   is newer than the record's `SystemModstamp` (so last-write-wins reads every record and
//!   writes it). Then `GET /limits` is read.
//! * The window opens when the sink starts (login and the consumer group join included) and
//!   closes when the sink has finished every record (written, conflict or dead letter).
//! * After the window: the sink is stopped and `/limits` read again. API calls spent = the drop of
//!   `DailyApiRequests.Remaining` between the two reads, less the second read itself (a `/limits`
//!   read counts as a call, and its answer includes itself).
//!
//! Per run it prints: records/s (records ÷ window); the API calls spent, the sink's own count of
//! its REST calls (which must equal them; Composite calls and one describe per object), the
//! calls the batch plan needs when every batch is full ([`planned_calls`]), and records per API
//! call; the latency of the sink's Composite calls
//! as its REST client saw them (p50/p99/max, [`crate::salesforce::rest::install_call_probe`]); CPU time per
//! record (the process's user+sys time over the window, 10 ms ticks, ÷ records — it includes the
//! in-process simulated org and mock Kafka); the peak RSS (`VmHWM`). `--rest-latency` delays every
//! REST call at the org ([`crate::sim::SimConfig::rest_latency`]).
//!
//! It fails (non-zero exit) unless every record was written, none was a conflict or dead-lettered
//! (the conflicts and dead-letter topics are empty), every record in the org holds the value its
//! message wrote, and the calls counted by `/limits` equal the sink's own count; or when the run
//! overruns `--timeout-secs`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::error::BenchError;
use super::limits::Limits;
use super::machine::{cpu_time, machine_ticks, peak_rss};
use super::report::{SinkFigures, print_sink};
use crate::config::{Config, SinkConfig};
use crate::kafka::{EmbeddedKafka, OutgoingRecord, Producer};
use crate::ops::telemetry::{SinkSnapshot, SinkStats};
use crate::sim::{SimConfig, SimOrg};
use crate::sink::message::{OpKind, Target, WriteOp};
use crate::sink::plan::{self, COMPOSITE_COLLECTIONS, Decision};

/// Options of `forcebridge bench sink`.
#[derive(Debug, Clone, clap::Args)]
pub struct SinkBenchArgs {
    /// Write-back records (updates by Id of records created in the org first).
    #[arg(long, default_value_t = 20_000)]
    pub(crate) records: usize,
    /// Simulated latency of every REST call at the org, milliseconds (one Composite call is one
    /// REST call).
    #[arg(long, default_value_t = 0)]
    pub(crate) rest_latency: u64,
    /// Objects written, round-robin (1: Account; 2: Account and Contact).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
    pub(crate) objects: u8,
    /// `sink.batch_records`; the config's default when absent.
    #[arg(long)]
    pub(crate) batch_records: Option<usize>,
    /// `sink.linger`, milliseconds; the config's default when absent.
    #[arg(long)]
    pub(crate) linger_ms: Option<u64>,
    /// `sink.concurrency`; the config's default when absent.
    #[arg(long)]
    pub(crate) concurrency: Option<usize>,
    /// Give up when the records have not all been finished after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub(crate) timeout_secs: u64,
}

const OBJECTS: [&str; 2] = ["Account", "Contact"];
const WRITEBACK_TOPIC: &str = "salesforce.writeback";
const FIELD: &str = "Description";

/// The value message `i` writes.
fn value_of(i: usize) -> String {
    format!("forcebridge bench write-back {i}")
}

/// The object of record `i` with `objects` objects.
fn object_of(i: usize, objects: usize) -> &'static str {
    OBJECTS[i % objects]
}

/// API calls the sink's plan needs for one batch of updates by Id, last-write-wins on, when
/// every record is found and written at the first attempt: the lookups of [`plan::lookups`] and
/// the collections of [`plan::chunks`], each [`COMPOSITE_COLLECTIONS`] per Composite call.
fn batch_calls(ops: &[WriteOp]) -> u64 {
    let lookups = plan::lookups(ops, true).len();
    let writes: Vec<plan::Write> = ops
        .iter()
        .filter_map(
            |op| match plan::decide(op, &HashMap::new(), Some(Default::default()), None) {
                Decision::Write(w) => Some(w),
                _ => None,
            },
        )
        .collect();
    let collections = plan::chunks(writes.iter().enumerate().map(|(i, w)| (i, w, 0))).len();
    (lookups.div_ceil(COMPOSITE_COLLECTIONS) + collections.div_ceil(COMPOSITE_COLLECTIONS)) as u64
}

/// API calls the bench's `records` updates need when the sink cuts them into full batches of
/// `batch_records` (the last one holds the rest): one describe per object written (the sink's
/// describe cache fetches each once per run), plus the sum of `batch_calls` over the batches.
/// Record `i` is on object `i % objects` (Account, Contact), as the bench makes them.
pub fn planned_calls(records: usize, objects: usize, batch_records: usize) -> u64 {
    let objects = objects.clamp(1, OBJECTS.len());
    let batch_records = batch_records.max(1);
    let mut total = objects.min(records) as u64;
    let mut start = 0;
    while start < records {
        let end = (start + batch_records).min(records);
        let ops: Vec<WriteOp> = (start..end)
            .map(|i| {
                let object = object_of(i, objects);
                let prefix = if object == "Account" { "001" } else { "003" };
                WriteOp {
                    object: object.to_owned(),
                    kind: OpKind::Update,
                    // Distinct in the first 15 characters, as record Ids are.
                    target: Target::Id(format!("{prefix}{i:012}AAA")),
                    fields: [(FIELD.to_owned(), Value::String(value_of(i)))]
                        .into_iter()
                        .collect(),
                    timestamp: Some(1),
                    insert_key: None,
                }
            })
            .collect();
        total += batch_calls(&ops);
        start = end;
    }
    total
}

fn bench_config(sim: &SimOrg, bootstrap: &str, args: &SinkBenchArgs) -> Result<Config, BenchError> {
    let mut sink = format!("sink:\n  topics: [{WRITEBACK_TOPIC}]\n  commit_interval: 1s\n");
    if let Some(b) = args.batch_records {
        sink.push_str(&format!("  batch_records: {b}\n"));
    }
    if let Some(ms) = args.linger_ms {
        sink.push_str(&format!("  linger: {ms}ms\n"));
    }
    if let Some(c) = args.concurrency {
        sink.push_str(&format!("  concurrency: {c}\n"));
    }
    let text = format!(
        "name: forcebridge-bench\n{salesforce}{sink}kafka:\n  bootstrap_servers: {bootstrap}\n  create_topics: false\n",
        salesforce = sim.salesforce_yaml(),
    );
    Ok(Config::from_yaml(&text, |_| None)?)
}

fn kafka_error(e: impl std::fmt::Display) -> BenchError {
    BenchError::Kafka(e.to_string())
}

fn sim_error(e: impl std::fmt::Display) -> BenchError {
    BenchError::Sim(e.to_string())
}

/// Runs `forcebridge bench sink`.
pub(super) async fn run(args: SinkBenchArgs, cancel: CancellationToken) -> Result<(), BenchError> {
    let n = args.records;
    if n == 0 {
        return Err(BenchError::Failed("--records must be at least 1".into()));
    }
    let objects = usize::from(args.objects);
    let probe = crate::salesforce::rest::install_call_probe();
    let sim = SimOrg::start(SimConfig {
        rest_latency: Duration::from_millis(args.rest_latency),
        // Room for the run's calls at any batch size; the figures come from the drop.
        daily_api_requests: 1_000_000,
        ..SimConfig::default()
    })
    .await
    .map_err(sim_error)?;

    // The records to update, made by the org's user before the window.
    let made = Instant::now();
    let targets = make_targets(&sim, n, objects)?;
    // Newer than every SystemModstamp just set: the org keeps them to the second, so a write
    // in the same second would be a same-second tie (a conflict by default).
    tokio::time::sleep(crate::sim::until_next_second()).await;
    let timestamp = crate::sim::now_ms();

    let kafka = EmbeddedKafka::start(3).map_err(kafka_error)?;
    let bootstrap = kafka.bootstrap_servers();
    let config = Arc::new(bench_config(&sim, &bootstrap, &args)?);
    let sink_config = config.sink.as_ref().expect("the bench config has a sink");
    let topics = create_topics(&kafka, &config, n)?;
    produce(&config, &targets, timestamp).await?;
    let prepared = made.elapsed();

    let planned = planned_calls(n, objects, sink_config.batch_records);
    print_header(&args, sink_config, topics.partitions, prepared);

    let limits = Limits::new(&config, &sim.instance_url(), sim.issue_access_token())?;
    let remaining_before = limits.remaining().await?;

    let stats = Arc::new(SinkStats::default());
    let sink_cancel = cancel.child_token();
    let cpu_start = cpu_time();
    let machine_start = machine_ticks();
    let window_start = Instant::now();
    let sink = tokio::spawn(crate::sink::run(
        config.clone(),
        stats.clone(),
        sink_cancel.clone(),
    ));
    let deadline = window_start + Duration::from_secs(args.timeout_secs);
    let (outcome, first_write) = watch(&sink, &stats, &cancel, n, window_start, deadline).await;
    let window = window_start.elapsed();
    let cpu_end = cpu_time();
    let machine_end = machine_ticks();
    let rss = peak_rss();

    sink_cancel.cancel();
    let result = sink
        .await
        .map_err(|e| BenchError::Failed(format!("sink task failed: {e}")))?;
    let snapshot = stats.snapshot();
    let remaining_after = limits.remaining().await;
    let mut latencies = probe.take();
    latencies.sort_unstable();
    let topic_counts = count_records(&bootstrap, &topics).await?;
    let wrong = wrong_values(&sim, &targets);
    drop(kafka);
    sim.shutdown().await;
    result.map_err(|e| BenchError::Failed(format!("the sink failed: {e}")))?;
    outcome.map_err(BenchError::Failed)?;
    let remaining_after = remaining_after?;
    // The drop includes the second /limits read itself.
    let spent = remaining_before
        .saturating_sub(remaining_after)
        .saturating_sub(1);

    print_sink(&SinkFigures {
        n,
        snapshot: &snapshot,
        wrong: wrong.len(),
        window,
        first_write,
        spent,
        planned,
        latencies: &latencies,
        cpu: (cpu_start, cpu_end),
        machine: (machine_start, machine_end),
        rss,
    });
    verify(&snapshot, n, spent, &wrong, &topics, topic_counts)
}

/// Makes the records to update in the org, round-robin over the `objects` first objects:
/// (object, Id) of record `i`.
fn make_targets(
    sim: &SimOrg,
    n: usize,
    objects: usize,
) -> Result<Vec<(&'static str, String)>, BenchError> {
    let mut per_object: Vec<Vec<String>> = Vec::with_capacity(objects);
    for (k, object) in OBJECTS[..objects].iter().enumerate() {
        let count = (n + objects - 1 - k) / objects;
        per_object.push(sim.generate(object, count).map_err(sim_error)?);
    }
    Ok((0..n)
        .map(|i| {
            (
                object_of(i, objects),
                per_object[i % objects][i / objects].clone(),
            )
        })
        .collect())
}

/// The topics of a run: the write-back topic's partitions, the dead-letter and conflicts topics.
struct Topics {
    partitions: i32,
    dead_letter: String,
    conflicts: String,
}

/// Creates the write-back topic (partitions for `n` records) and the sink's dead-letter and
/// conflicts topics.
fn create_topics(kafka: &EmbeddedKafka, config: &Config, n: usize) -> Result<Topics, BenchError> {
    let sink_config = config.sink.as_ref().expect("the bench config has a sink");
    // A mock-cluster partition keeps only its last 5 MB: keep each under 4 MB.
    let partitions = (1 + n * 320 / (4 << 20)).min(1000) as i32;
    kafka
        .create_topic(WRITEBACK_TOPIC, partitions)
        .map_err(kafka_error)?;
    let dead_letter_topic = config.sink_dead_letter_topic().to_owned();
    let conflicts_topic = sink_config.conflicts_topic.clone();
    for topic in [&dead_letter_topic, &conflicts_topic] {
        kafka.create_topic(topic, 1).map_err(kafka_error)?;
    }
    Ok(Topics {
        partitions,
        dead_letter: dead_letter_topic,
        conflicts: conflicts_topic,
    })
}

/// Produces one write-back message per target into the write-back topic: an `update` by Id of
/// [`FIELD`] at `timestamp`, keyed by the Id.
async fn produce(
    config: &Config,
    targets: &[(&str, String)],
    timestamp: i64,
) -> Result<(), BenchError> {
    let messages: Vec<Vec<u8>> = targets
        .iter()
        .enumerate()
        .map(|(i, (object, id))| {
            json!({"object": object, "operation": "update", "id": id, "timestamp": timestamp,
                "fields": {FIELD: value_of(i)}})
            .to_string()
            .into_bytes()
        })
        .collect();
    let producer =
        Producer::new(&crate::kafka::KafkaSettings::from(&config.kafka)).map_err(kafka_error)?;
    producer
        .deliver(
            targets
                .iter()
                .zip(&messages)
                .map(|((_, id), value)| OutgoingRecord {
                    topic: WRITEBACK_TOPIC,
                    key: Some(id.as_bytes()),
                    value: Some(value),
                    headers: &[],
                }),
        )
        .await
        .map_err(BenchError::Kafka)?;
    drop(producer);
    drop(messages);
    Ok(())
}

/// The run's first lines: what it writes, and how.
fn print_header(
    args: &SinkBenchArgs,
    sink_config: &SinkConfig,
    partitions: i32,
    prepared: Duration,
) {
    let (n, objects) = (args.records, usize::from(args.objects));
    let batch_records = sink_config.batch_records;
    println!("forcebridge bench sink");
    println!(
        "  {n} updates by Id over {objects} object(s), last-write-wins on; batch_records {batch_records}, linger {:?}, concurrency {}; REST latency {} ms; {partitions} partition(s)",
        sink_config.linger, sink_config.concurrency, args.rest_latency
    );
    println!(
        "  made {n} records in the org and produced {n} write-back messages in {prepared:.2?} (outside the measured window)"
    );
}

/// The measured window, from the sink's start until it has finished every record (or stops,
/// the run is interrupted or overruns `deadline`): `Ok` or why it closed, and when the first
/// records were seen written (into the window) and how many.
async fn watch(
    sink: &JoinHandle<Result<(), crate::sink::SinkError>>,
    stats: &SinkStats,
    cancel: &CancellationToken,
    n: usize,
    window_start: Instant,
    deadline: Instant,
) -> (Result<(), String>, Option<(Duration, u64)>) {
    // When the first records were seen written, and how many.
    let mut first_write: Option<(Duration, u64)> = None;
    let mut last_report = Instant::now();
    let outcome = loop {
        let s = stats.snapshot();
        if first_write.is_none() && s.written > 0 {
            first_write = Some((window_start.elapsed(), s.written));
        }
        let finished = s.written + s.conflicts + s.dead_lettered;
        if finished >= n as u64 {
            break Ok(());
        }
        if sink.is_finished() {
            break Err("the sink stopped early".to_owned());
        }
        if cancel.is_cancelled() {
            break Err("interrupted".to_owned());
        }
        if Instant::now() > deadline {
            break Err(format!("timed out with {finished}/{n} records finished"));
        }
        if last_report.elapsed() >= Duration::from_secs(2) {
            last_report = Instant::now();
            println!(
                "  [{:>6.1}s] records finished {finished:>8}/{n}",
                window_start.elapsed().as_secs_f64()
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    (outcome, first_write)
}

/// Records on the dead-letter and the conflicts topics, read back from Kafka.
async fn count_records(bootstrap: &str, topics: &Topics) -> Result<Vec<u64>, BenchError> {
    let bootstrap = bootstrap.to_owned();
    let topics = [topics.dead_letter.clone(), topics.conflicts.clone()];
    tokio::task::spawn_blocking(move || {
        topics
            .iter()
            .map(|t| crate::kafka::count_records(&bootstrap, t, Duration::from_secs(10)))
            .collect::<Result<Vec<u64>, _>>()
    })
    .await
    .map_err(|e| BenchError::Failed(format!("topic count task failed: {e}")))?
    .map_err(kafka_error)
}

/// The records that do not hold the value their message wrote, as `object id: field = value`.
fn wrong_values(sim: &SimOrg, targets: &[(&str, String)]) -> Vec<String> {
    let mut wrong: Vec<String> = Vec::new();
    for (i, (object, id)) in targets.iter().enumerate() {
        let held = sim
            .record(object, id)
            .and_then(|r| r.get(FIELD).and_then(Value::as_str).map(str::to_owned));
        if held.as_deref() != Some(value_of(i).as_str()) {
            wrong.push(format!("{object} {id}: {FIELD} = {held:?}"));
        }
    }
    wrong
}

/// Fails unless every record was written, none was a conflict or dead-lettered (the topics
/// hold none: `topic_counts`, dead-letter then conflicts), every record holds its new value,
/// and the calls `/limits` counted equal the sink's own count.
fn verify(
    snapshot: &SinkSnapshot,
    n: usize,
    spent: u64,
    wrong: &[String],
    topics: &Topics,
    topic_counts: Vec<u64>,
) -> Result<(), BenchError> {
    let (dlq_records, conflict_records) = (topic_counts[0], topic_counts[1]);
    let (dead_letter_topic, conflicts_topic) = (&topics.dead_letter, &topics.conflicts);
    let mut problems: Vec<String> = Vec::new();
    if snapshot.written != n as u64 {
        problems.push(format!("{} of {n} records written", snapshot.written));
    }
    if snapshot.conflicts != 0 || conflict_records != 0 {
        problems.push(format!(
            "{} conflicts ({conflict_records} records on {conflicts_topic})",
            snapshot.conflicts
        ));
    }
    if snapshot.dead_lettered != 0 || dlq_records != 0 {
        problems.push(format!(
            "{} dead letters ({dlq_records} records on {dead_letter_topic})",
            snapshot.dead_lettered
        ));
    }
    if !wrong.is_empty() {
        problems.push(format!(
            "{} records without their new value in the org, e.g. {}",
            wrong.len(),
            wrong[..wrong.len().min(3)].join("; ")
        ));
    }
    if spent != snapshot.api_calls {
        problems.push(format!(
            "/limits counted {spent} API calls, the sink made {}",
            snapshot.api_calls
        ));
    }
    if spent == 0 {
        problems.push("no API call was counted".to_owned());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(BenchError::Failed(format!(
            "verification failed: {}",
            problems.join("; ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planned_calls_follow_the_batches() {
        // One describe per object and run, then per batch its calls. One batch of 1,000 on one
        // object: one retrieve, five collections of 200 in one call.
        assert_eq!(planned_calls(1_000, 1, 1_000), 1 + 2);
        // Ten such batches, and a last one of 1 record (one retrieve, one collection).
        assert_eq!(planned_calls(10_001, 1, 1_000), 1 + 22);
        // 10,000: five retrieves of 2,000 in one call, fifty collections in ten.
        assert_eq!(planned_calls(10_000, 1, 10_000), 1 + 11);
        // 500 per object: a retrieve each (one call), three collections each (two calls).
        assert_eq!(planned_calls(1_000, 2, 1_000), 2 + 3);
        // One record: one object described.
        assert_eq!(planned_calls(1, 2, 1_000), 1 + 2);
    }
}
