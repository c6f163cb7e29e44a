//! `forcebridge bench source`: throughput, CPU, latency and memory of the source path, end to end.
//!
//! Contract: starts a simulated Salesforce org and an embedded Kafka (librdkafka's mock cluster)
//! in this process, like `forcebridge demo`, and runs the real pipeline (at-least-once) on
//! `--channels` CDC channels (`/data/AccountChangeEvent`, then `/data/ContactChangeEvent`).
//! Each event is one record created in the org with exactly `--width` fields set by the bench
//! (`Name` plus `Bench_Field_<k>__c` text fields added to the object's schema, so at least 2:
//! the last holds when the bench asked for the change); the org adds its
//! system fields. Events go round-robin over the channels.
//!
//! * Flat out (no `--rate`): the `--events` changes are made first, outside the measured window;
//!   then the pipeline starts from `earliest` and the window runs until Kafka acknowledged every
//!   record (startup — login, Subscribe, GetSchema — included).
//!   With `--warmup W`, W more changes are made first and the window opens only once Kafka has
//!   acknowledged their records: the figures are then those of a warm process (its memory's
//!   working set touched, the producer connected, the schema cached), not of its start.
//!   With `--updates` each change updates a record seeded beforehand (one UPDATE record per
//!   event); `--full-record` also sets `full_record: true` and prints the reads it made.
//! * At a rate (`--rate R`): the pipeline starts and subscribes first; the window opens when a
//!   generator begins committing changes at R events/s and closes at the last acknowledgement.
//!
//! Per run it prints: events/s (events ÷ window; flat out also the steady state, from a tenth to
//! nine tenths of the records acknowledged), CPU time per event (the process's user+sys time
//! over the window from `/proc/self/stat`, 10 ms ticks, ÷ events — it includes the in-process
//! simulated org and mock Kafka, and in a rate run the generation of the changes), latency from
//! the moment the bench asked the org for the change (the epoch ms it writes into the change's
//! last field, [`workload::timing_field`]: a change event's `commitTimestamp` has second
//! precision in Salesforce) to the Kafka delivery report (p50/p99/max, ms)
//! and its two legs either side of the enqueue into the producer, with how many records took
//! 10 ms or more and where they waited ([`crate::kafka::LatencyProbe`]), the producer's
//! enqueue→ack histogram (bucket bounds, as the metric has them), and the peak RSS (`VmHWM`, which
//! includes the org's stored events), and how busy, stolen (by the hypervisor) and idle the
//! machine's CPUs were over the window, so that a run on a contended host shows as one, and the
//! process's minor page faults over the window (first touches of memory), and whether the process
//! has transparent huge pages (`main` turns them off). `--rtt`
//! delays each FetchRequest's credits at the org by that round trip
//! ([`crate::sim::SimOrg::set_stream_rtt`]). It fails when the records
//! acknowledged do not match the events made, or the run overruns `--timeout-secs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::error::BenchError;
use super::machine::{Ends, GENERATOR_THREAD, Marks, SIM_THREAD};
use super::report::{Memory, SourceFigures, print_source};
use super::source_args::{SourceBenchArgs, bench_config};
use super::window::{Counts, Watch};
use super::workload::{self, Generator, OBJECTS};
use crate::config::Config;
use crate::kafka::{EmbeddedKafka, LatencySplit};
use crate::ops::telemetry::{PipelineStats, StatsSnapshot};
use crate::sim::SimOrg;

/// A runtime of one worker whose threads are named `name` (their CPU is counted by name).
fn one_thread_runtime(name: &str) -> Result<OwnRuntime, BenchError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(name)
        .enable_all()
        .build()
        .map(|rt| OwnRuntime(Some(rt)))
        .map_err(|e| BenchError::Sim(e.to_string()))
}

/// A runtime of the bench's own (the org's, the generator's), used from inside the bench's async
/// code: dropped, it shuts down in the background, so that a run that stops early on an error
/// (a rejected `--kafka-property`, say) reports that error instead of panicking at the drop.
struct OwnRuntime(Option<tokio::runtime::Runtime>);

impl std::ops::Deref for OwnRuntime {
    type Target = tokio::runtime::Runtime;

    fn deref(&self) -> &Self::Target {
        self.0.as_ref().expect("present until dropped")
    }
}

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// What a run sets up before the pipeline starts: the org on its own runtimes, the records a
/// `--duration` run updates, and Kafka. Dropped, Kafka goes first and the org's runtime last, as
/// in [`Rig::shut_down`].
struct Rig {
    kafka: EmbeddedKafka,
    pool: Arc<Vec<Vec<String>>>,
    sim: SimOrg,
    generator_runtime: OwnRuntime,
    sim_runtime: OwnRuntime,
}

impl Rig {
    /// The org (with the bench's fields and, in a long run, the pool) and Kafka (with the topics).
    async fn start(args: &SourceBenchArgs) -> Result<Rig, BenchError> {
        let channels = usize::from(args.channels);
        // The org serves on its own runtime (threads named `sim-org`), so that its CPU is counted
        // apart from forcebridge's; one worker, as it is one peer.
        let sim_runtime = one_thread_runtime(SIM_THREAD)?;
        let generator_runtime = one_thread_runtime(GENERATOR_THREAD)?;
        let long_run = args.duration.is_some();
        let sim =
            workload::start_org(&sim_runtime, long_run, args.rtt, channels, args.width).await?;
        // A long run updates a fixed pool of records, so that the org's own memory stays flat.
        let pool = Arc::new(workload::pool(&sim, long_run, channels, args.width)?);
        let kafka = start_kafka(args)?;
        Ok(Rig {
            kafka,
            pool,
            sim,
            generator_runtime,
            sim_runtime,
        })
    }

    /// The changes that created the pool.
    fn pool_events(&self) -> usize {
        self.pool.iter().map(Vec::len).sum()
    }

    /// At `--rate`: commits the `n` changes from `start` on the generator's runtime.
    fn generate(
        &self,
        args: &SourceBenchArgs,
        n: usize,
        rate: f64,
        start: Instant,
        stop: CancellationToken,
    ) -> JoinHandle<Result<Duration, BenchError>> {
        // Committing changes is the org's work (counted as the org's CPU), but on a thread of
        // its own: changes are committed synchronously, so a generator catching up on the
        // org's serving worker would starve its streams.
        let changes = Generator {
            sim: self.sim.clone(),
            pool: self.pool.clone(),
            n,
            channels: usize::from(args.channels),
            width: args.width,
            rate,
            start,
            stop,
        };
        self.generator_runtime.spawn(changes.run())
    }

    /// Kafka dropped, the org shut down on its runtime, the runtimes dropped.
    async fn shut_down(self) {
        let Rig {
            kafka,
            pool,
            sim,
            generator_runtime,
            sim_runtime,
        } = self;
        drop(kafka);
        let _ = sim_runtime.spawn(async move { sim.shutdown().await }).await;
        drop(sim_runtime);
        drop(generator_runtime);
        drop(pool);
    }
}

/// Runs `forcebridge bench source`: the setup, the flat-out or the rate run, the report.
pub(super) async fn run(
    args: SourceBenchArgs,
    cancel: CancellationToken,
) -> Result<(), BenchError> {
    let probe = crate::kafka::install_latency_probe(&workload::timing_field(args.width));
    let rig = Rig::start(&args).await?;
    let counts = Counts::new(&args, rig.pool_events());
    print_header(&args, counts.n);
    let config = Arc::new(Config::from_yaml(
        &bench_config(&rig.sim, &rig.kafka.bootstrap_servers(), &args),
        |_| None,
    )?);
    let stats = Arc::new(PipelineStats::default());
    let pipeline_cancel = cancel.child_token();
    let generated_in = match args.rate {
        None => Some(make_first(&rig.sim, counts, &args)?),
        Some(_) => None,
    };

    let mut marks = Marks::now();
    let pipeline = tokio::spawn(crate::source::run(
        config.clone(),
        stats.clone(),
        pipeline_cancel.clone(),
    ));
    let watch = Watch::new(&args, counts, &stats, &pipeline, &cancel);
    if counts.warmup > 0 {
        marks = watch.warm_up(&marks).await;
    }
    let stop_generating = CancellationToken::new();
    let mut generator = None;
    if let Some(rate) = args.rate {
        // Subscribed on every channel before the first change.
        watch.until_subscribed().await;
        marks = Marks::now();
        generator = Some(rig.generate(&args, counts.n, rate, marks.at, stop_generating.clone()));
    }
    let window = watch.window(&rig.kafka, marks.at).await?;
    let ends = Ends::now();
    if window.outcome.is_err() {
        stop_generating.cancel();
    }
    let generation = match generator {
        Some(g) => Some(
            g.await
                .map_err(|e| BenchError::Failed(format!("generator task failed: {e}")))??,
        ),
        None => None,
    };

    pipeline_cancel.cancel();
    let result = pipeline
        .await
        .map_err(|e| BenchError::Failed(format!("pipeline task failed: {e}")))?;
    let snapshot = stats.snapshot();
    let latency = probe.take();
    let (api_calls, _) = rig.sim.api_usage();
    rig.shut_down().await;
    result?;
    window.outcome.map_err(BenchError::Failed)?;

    print_source(&SourceFigures {
        total: counts.total,
        warmup: counts.warmup,
        measured: counts.measured,
        pool_events: counts.pool_events,
        n: counts.n,
        snapshot: &snapshot,
        secs: window.elapsed.as_secs_f64(),
        generation,
        flat_out: generated_in.is_some(),
        tenth: window.tenth,
        nine_tenths: window.nine_tenths,
        marks: &marks,
        ends: &ends,
        latency: &latency,
        memory: args.duration.map(|_| Memory {
            samples: &window.rss_samples,
            outage: window.outage,
        }),
    });
    if args.full_record {
        let (mut reads, mut completed, mut absent) = (0, 0, 0);
        for channel in snapshot.channels.values() {
            reads += channel.full_record.reads;
            completed += channel.full_record.completed;
            absent += channel.full_record.absent;
        }
        println!(
            "  full_record: {reads} retrieve calls for {completed} records completed ({absent} absent); the org counted {api_calls} API calls"
        );
    }
    verify_counts(&snapshot, &latency, counts.total)
}

/// Fails unless every record made was received, acknowledged and timed by the latency probe.
fn verify_counts(
    snapshot: &StatsSnapshot,
    latency: &LatencySplit,
    total: usize,
) -> Result<(), BenchError> {
    let produced = snapshot.records_produced();
    let received = snapshot.events_received();
    if produced != total as u64 || received != total as u64 || latency.total.total() != total as u64
    {
        return Err(BenchError::Failed(format!(
            "count mismatch: {total} events made, {received} received, {produced} acknowledged, {} latency samples",
            latency.total.total()
        )));
    }
    Ok(())
}

/// Starts the embedded Kafka (three mock brokers) with forcebridge's topics and one topic per
/// object streamed, of `--partitions` partitions.
fn start_kafka(args: &SourceBenchArgs) -> Result<EmbeddedKafka, BenchError> {
    let kafka = EmbeddedKafka::start(3).map_err(|e| BenchError::Kafka(e.to_string()))?;
    // The records are counted by their delivery reports, not read back, so the mock cluster
    // keeping only the last 5 MB of a partition does not matter here.
    let partitions = args.partitions;
    for topic in ["forcebridge.checkpoints", "forcebridge.dlq"] {
        kafka
            .create_topic(topic, 1)
            .map_err(|e| BenchError::Kafka(e.to_string()))?;
    }
    for (object, _) in &OBJECTS[..usize::from(args.channels)] {
        kafka
            .create_topic(&format!("salesforce.{object}"), partitions)
            .map_err(|e| BenchError::Kafka(e.to_string()))?;
    }
    Ok(kafka)
}

/// The run's first lines: what it makes, and how.
fn print_header(args: &SourceBenchArgs, n: usize) {
    let channels = usize::from(args.channels);
    let partitions = args.partitions;
    let mode = match args.rate {
        Some(r) => format!("at {r} events/s"),
        None => "flat out (changes made first, then drained from earliest)".to_owned(),
    };
    println!("forcebridge bench source");
    println!(
        "  {n} events, {mode}; {channels} channel(s), {} fields per event, rtt {} ms, batch_size {}, {partitions} partition(s) per topic",
        args.width, args.rtt, args.batch_size
    );
}

/// Flat out: makes the warm-up's and the measured changes in the org before the pipeline starts
/// (outside the measured window); how long that took.
fn make_first(
    sim: &SimOrg,
    counts: Counts,
    args: &SourceBenchArgs,
) -> Result<Duration, BenchError> {
    let Counts { n, warmup, .. } = counts;
    let channels = usize::from(args.channels);
    let targets = match args.updates || args.full_record {
        true => Some(workload::seed_targets(
            sim,
            channels,
            (warmup + n).div_ceil(channels),
        )?),
        false => None,
    };
    let started = Instant::now();
    for i in 0..warmup + n {
        match &targets {
            Some(targets) => workload::make_update(sim, targets, i, channels, args.width)?,
            None => workload::make_change(sim, i, channels, args.width)?,
        }
    }
    let took = started.elapsed();
    if warmup > 0 {
        println!(
            "  made {warmup} + {n} changes in the org in {took:.2?} (outside the measured window; the first {warmup} warm the pipeline up)"
        );
    } else {
        println!("  made {n} changes in the org in {took:.2?} (outside the measured window)");
    }
    Ok(took)
}
