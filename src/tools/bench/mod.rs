//! `forcebridge bench source`: throughput, CPU, latency and memory of the source path, end to end.
//!
//! Contract: starts a simulated Salesforce org and an embedded Kafka (librdkafka's mock cluster)
//! in this process, like `forcebridge demo`, and runs the real pipeline (at-least-once) on
//! `--channels` CDC channels (`/data/AccountChangeEvent`, then `/data/ContactChangeEvent`).
//! Each event is one record created in the org with exactly `--width` fields set by the bench
//! (`Name` plus `Bench_Field_<k>__c` text fields added to the object's schema); the org adds its
//! system fields. Events go round-robin over the channels.
//!
//! * Flat out (no `--rate`): the `--events` changes are made first, outside the measured window;
//!   then the pipeline starts from `earliest` and the window runs until Kafka acknowledged every
//!   record (startup — login, Subscribe, GetSchema — included).
//!   With `--warmup W`, W more changes are made first and the window opens only once Kafka has
//!   acknowledged their records: the figures are then those of a warm process (its memory's
//!   working set touched, the producer connected, the schema cached), not of its start.
//! * At a rate (`--rate R`): the pipeline starts and subscribes first; the window opens when a
//!   generator begins committing changes at R events/s and closes at the last acknowledgement.
//!
//! Per run it prints: events/s (events ÷ window; flat out also the steady state, from a tenth to
//! nine tenths of the records acknowledged), CPU time per event (the process's user+sys time
//! over the window from `/proc/self/stat`, 10 ms ticks, ÷ events — it includes the in-process
//! simulated org and mock Kafka, and in a rate run the generation of the changes), latency from
//! the commit in the org (`commit_timestamp`, ms) to the Kafka delivery report (p50/p99/max, ms)
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

pub mod sink;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::kafka::EmbeddedKafka;
use crate::ops::telemetry::{DELIVERY_LATENCY_BUCKETS, PipelineStats};
use crate::sim::{SimConfig, SimOrg};

/// `forcebridge bench …`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum BenchCommand {
    /// Salesforce (simulated) → forcebridge → Kafka (mock cluster), in this process.
    Source(SourceBenchArgs),
    /// Kafka (mock cluster) → forcebridge's sink → Salesforce (simulated), in this process.
    Sink(sink::SinkBenchArgs),
}

/// Options of `forcebridge bench source`.
#[derive(Debug, Clone, clap::Args)]
pub struct SourceBenchArgs {
    /// Change events to make (one record per event).
    #[arg(long, default_value_t = 20_000)]
    pub events: usize,
    /// Commit changes at this many events/s while the pipeline runs; flat out when absent.
    #[arg(long)]
    pub rate: Option<f64>,
    /// CDC channels to stream (1: Account; 2: Account and Contact, the objects the simulated org
    /// has change events for).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
    pub channels: u8,
    /// Fields set per event: `Name` plus `width - 1` added text fields (16 characters each).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=500))]
    pub width: u16,
    /// Simulated client↔org network round trip, milliseconds (delays the flow-control credits).
    #[arg(long, default_value_t = 0)]
    pub rtt: u64,
    /// With `--rate`: run this many seconds (events = rate × duration), updating a fixed pool of
    /// records, with the org keeping events for a minute and librdkafka's queue bounded, and
    /// print the process's memory (VmRSS) through the run.
    #[arg(long, requires = "rate")]
    pub duration: Option<u64>,
    /// Take every mock Kafka broker down `START` seconds into the measured window for `LEN`
    /// seconds (`START+LEN`, e.g. `120+60`).
    #[arg(long, value_parser = parse_outage)]
    pub kafka_outage: Option<(u64, u64)>,
    /// Partitions of each object topic (records are spread over them by record Id).
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(i32).range(1..=1000))]
    pub partitions: i32,
    /// Flow-control credits per subscription (`source.batch_size`, 1..=100).
    #[arg(long, default_value_t = 100)]
    pub batch_size: u32,
    /// Give up when the records have not all been acknowledged after this many seconds (after
    /// the `--duration`, in a timed run).
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
    /// A producer property (`kafka.properties`) for the run, `KEY=VALUE`, e.g. `linger.ms=0`;
    /// repeatable.
    #[arg(long = "kafka-property", value_parser = parse_property)]
    pub kafka_properties: Vec<(String, String)>,
    /// Flat out: make this many more changes first and open the measured window only once
    /// Kafka has acknowledged their records, so that the window sees the process warm (its
    /// working set of memory touched, producer connected, schemas cached) instead of its start.
    #[arg(long, default_value_t = 0, conflicts_with = "rate")]
    pub warmup: usize,
}

/// `KEY=VALUE`.
fn parse_property(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.trim().to_owned()))
        }
        _ => Err(format!("`{text}`: expected KEY=VALUE, e.g. linger.ms=0")),
    }
}

/// `START+LEN` seconds.
fn parse_outage(text: &str) -> Result<(u64, u64), String> {
    let (start, len) = text
        .split_once('+')
        .ok_or_else(|| format!("`{text}`: expected START+LEN in seconds, e.g. 120+60"))?;
    let secs = |v: &str| {
        v.trim()
            .parse::<u64>()
            .map_err(|e| format!("`{text}`: `{v}` is not a number of seconds: {e}"))
    };
    Ok((secs(start)?, secs(len)?))
}

/// Records per object updated round-robin in a `--duration` run.
const POOL: usize = 2_000;
/// How long the org keeps events in a `--duration` run (its memory stays bounded).
const LONG_RUN_RETENTION: Duration = Duration::from_secs(60);
/// librdkafka's queue bound in a `--duration` run: memory during a Kafka outage.
const LONG_RUN_QUEUE: usize = 20_000;

/// The number a `/proc/self/status` line starts with, after its `key` (e.g. `VmRSS:`).
fn status_number(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix(key))?;
    line.split_whitespace().next()?.parse().ok()
}

/// Resident set size now (`VmRSS`), bytes.
fn rss() -> Option<u64> {
    status_number("VmRSS:").map(|kb| kb * 1024)
}

/// Whether this process may get transparent huge pages (`THP_enabled`; `main` turns them off).
fn huge_pages_enabled() -> Option<bool> {
    status_number("THP_enabled:").map(|v| v != 0)
}

/// Errors of the benchmark.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("the simulated org failed: {0}")]
    Sim(String),
    #[error("the embedded Kafka failed: {0}")]
    Kafka(String),
    #[error("the bench config was rejected: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Pipeline(#[from] crate::source::PipelineError),
    #[error("{0}")]
    Failed(String),
}

const OBJECTS: [(&str, &str); 2] = [
    ("Account", "/data/AccountChangeEvent"),
    ("Contact", "/data/ContactChangeEvent"),
];

/// Runs `forcebridge bench …`.
pub async fn run(command: BenchCommand, cancel: CancellationToken) -> Result<(), BenchError> {
    match command {
        BenchCommand::Source(args) => source(args, cancel).await,
        BenchCommand::Sink(args) => sink::run(args, cancel).await,
    }
}

/// Process CPU time (user + system) so far, from `/proc/self/stat` (clock ticks of 10 ms).
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let (_, fields) = parse_stat(&stat)?;
    stat_cpu(&fields)
}

/// What the measured window's figures are differences from: taken when it opens.
struct Marks {
    at: Instant,
    cpu: Option<Duration>,
    parts: Option<[Duration; 3]>,
    machine: Option<MachineTicks>,
    faults: Option<u64>,
}

impl Marks {
    fn now() -> Marks {
        Marks {
            at: Instant::now(),
            cpu: cpu_time(),
            parts: cpu_by_part(),
            machine: machine_ticks(),
            faults: minor_faults(),
        }
    }
}

/// The process's minor page faults so far (`minflt`, field 10 of `/proc/self/stat`).
fn minor_faults() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let (_, fields) = parse_stat(&stat)?;
    fields.get(7)?.parse().ok()
}

/// A `/proc/.../stat` line: the command name (in parentheses, may hold spaces) and the fields
/// after it, from the state on (field 3 of the line is index 0).
fn parse_stat(stat: &str) -> Option<(&str, Vec<&str>)> {
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let fields = stat.get(close + 2..)?.split(' ').collect();
    Some((&stat[open + 1..close], fields))
}

/// utime + stime (fields 14 and 15 of the line, clock ticks of 10 ms).
fn stat_cpu(fields: &[&str]) -> Option<Duration> {
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    const TICKS_PER_SECOND: u64 = 100;
    Some(Duration::from_millis(
        (ticks(11)? + ticks(12)?) * 1000 / TICKS_PER_SECOND,
    ))
}

/// Who a thread of this process works for, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// The pipeline: tokio workers, the main thread, librdkafka's client threads.
    Forcebridge,
    /// The simulated org's runtime ([`SIM_THREAD`]).
    Org,
    /// librdkafka's mock cluster (`rdk:mock`).
    MockKafka,
}

/// Name of the simulated org's runtime threads in `bench source`; every thread whose name
/// starts with it counts as the org's.
const SIM_THREAD: &str = "sim-org";
/// The thread that commits changes in the org at `--rate` (the org's work, apart from serving).
const GENERATOR_THREAD: &str = "sim-org-generator";

/// CPU time (user + system, 10 ms ticks) of this process's live threads, summed per [`Part`]:
/// `[forcebridge, org, mock Kafka]`, from `/proc/self/task/*/stat`.
fn cpu_by_part() -> Option<[Duration; 3]> {
    let mut parts = [Duration::ZERO; 3];
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue; // the thread ended
        };
        let Some((comm, fields)) = parse_stat(&stat) else {
            continue;
        };
        let Some(cpu) = stat_cpu(&fields) else {
            continue;
        };
        let part = if comm.starts_with(SIM_THREAD) {
            Part::Org
        } else if comm == "rdk:mock" {
            Part::MockKafka
        } else {
            Part::Forcebridge
        };
        parts[part as usize] += cpu;
    }
    Some(parts)
}

/// The machine's CPU time, all CPUs, in clock ticks, from the `cpu` line of `/proc/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct MachineTicks {
    /// user, nice, system, irq, softirq.
    busy: u64,
    /// idle and iowait.
    idle: u64,
    /// Time a virtual CPU wanted to run and the hypervisor ran something else.
    steal: u64,
}

impl MachineTicks {
    /// Parses the first (`cpu`, all CPUs) line of `/proc/stat`.
    fn parse(stat: &str) -> Option<MachineTicks> {
        let line = stat.lines().next()?;
        let mut fields = line.split_whitespace();
        if fields.next()? != "cpu" {
            return None;
        }
        let v: Vec<u64> = fields
            .take(8)
            .map(|f| f.parse().ok())
            .collect::<Option<_>>()?;
        let [user, nice, system, idle, iowait, irq, softirq, steal] = v[..] else {
            return None;
        };
        Some(MachineTicks {
            busy: user + nice + system + irq + softirq,
            idle: idle + iowait,
            steal,
        })
    }

    fn since(&self, earlier: &MachineTicks) -> MachineTicks {
        MachineTicks {
            busy: self.busy.saturating_sub(earlier.busy),
            idle: self.idle.saturating_sub(earlier.idle),
            steal: self.steal.saturating_sub(earlier.steal),
        }
    }

    fn total(&self) -> u64 {
        self.busy + self.idle + self.steal
    }

    fn percent(&self, part: u64) -> f64 {
        100.0 * part as f64 / self.total().max(1) as f64
    }
}

pub(super) fn machine_ticks() -> Option<MachineTicks> {
    MachineTicks::parse(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// Prints how busy, stolen and idle the machine's CPUs were between `start` and `end` (the
/// window), the label padded to `width`.
pub(super) fn print_machine(start: Option<MachineTicks>, end: Option<MachineTicks>, width: usize) {
    let Some(m) = start.zip(end).map(|(a, b)| b.since(&a)) else {
        return;
    };
    println!(
        "  {:<width$} busy {:.0}%, stolen {:.0}%, idle {:.0}%",
        "the machine's CPUs over the window",
        m.percent(m.busy),
        m.percent(m.steal),
        m.percent(m.idle),
    );
    println!(
        "    (/proc/stat, all CPUs; stolen: time the hypervisor gave to other guests; a run with much of it is not comparable)"
    );
}

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

/// Peak resident set size (`VmHWM`), bytes.
fn peak_rss() -> Option<u64> {
    status_number("VmHWM:").map(|kb| kb * 1024)
}

/// The `q` quantile (0..=1) of sorted samples (nearest rank).
fn quantile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// Upper bound (ms) of the histogram bucket holding the `q` quantile; `None` past the last bound.
fn bucket_quantile(buckets: &[u64], q: f64) -> Option<Option<f64>> {
    crate::ops::telemetry::nearest_rank_bucket(buckets, q)
        .map(|i| DELIVERY_LATENCY_BUCKETS.get(i).map(|s| s * 1000.0))
}

fn fields(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// The fields of change `i` on `object`: exactly `width` of them.
fn change(object: &str, i: usize, width: u16) -> Map<String, Value> {
    let mut f = if object == "Contact" {
        fields(json!({ "Name": { "LastName": format!("Bench {i}") } }))
    } else {
        fields(json!({ "Name": format!("Bench {i}") }))
    };
    for k in 1..width {
        f.insert(
            format!("Bench_Field_{k}__c"),
            Value::String(format!("{:016}", i as u64 * 1000 + u64::from(k))),
        );
    }
    f
}

/// Makes change `i` (on object `i % channels`).
fn make_change(sim: &SimOrg, i: usize, channels: usize, width: u16) -> Result<(), BenchError> {
    let (object, _) = OBJECTS[i % channels];
    sim.create(object, change(object, i, width))
        .map(|_| ())
        .map_err(|e| BenchError::Sim(e.to_string()))
}

fn bench_config(sim: &SimOrg, bootstrap: &str, args: &SourceBenchArgs) -> String {
    let channels: String = OBJECTS[..usize::from(args.channels)]
        .iter()
        .map(|(_, ch)| format!("    - name: {ch}\n      initial_replay: earliest\n"))
        .collect();
    format!(
        r#"name: forcebridge-bench
{salesforce}source:
  channels:
{channels}  topic_template: "salesforce.{{object}}"
  batch_size: {batch}
kafka:
  bootstrap_servers: {bootstrap}
{properties}"#,
        salesforce = sim.salesforce_yaml(),
        batch = args.batch_size,
        properties = bench_properties(args),
    )
}

/// The `kafka.properties` section of the bench config: librdkafka's queue bounded in a long run,
/// then `--kafka-property` (which may override it).
fn bench_properties(args: &SourceBenchArgs) -> String {
    let mut properties: Vec<(String, String)> = Vec::new();
    if args.duration.is_some() {
        properties.push((
            "queue.buffering.max.messages".to_owned(),
            LONG_RUN_QUEUE.to_string(),
        ));
    }
    for (key, value) in &args.kafka_properties {
        properties.retain(|(k, _)| k != key);
        properties.push((key.clone(), value.clone()));
    }
    if properties.is_empty() {
        return String::new();
    }
    let quote = |v: &str| serde_json::Value::String(v.to_owned()).to_string();
    let mut text = "  properties:\n".to_owned();
    for (key, value) in &properties {
        text.push_str(&format!("    {}: {}\n", quote(key), quote(value)));
    }
    text
}

async fn source(args: SourceBenchArgs, cancel: CancellationToken) -> Result<(), BenchError> {
    let channels = usize::from(args.channels);
    let n = match (args.rate, args.duration) {
        (Some(rate), Some(secs)) => (rate * secs as f64).round() as usize,
        _ => args.events,
    };
    let probe = crate::kafka::install_latency_probe();
    // The org serves on its own runtime (threads named `sim-org`), so that its CPU is counted
    // apart from forcebridge's; one worker, as it is one peer.
    let sim_runtime = one_thread_runtime(SIM_THREAD)?;
    let generator_runtime = one_thread_runtime(GENERATOR_THREAD)?;
    let stop_generating = CancellationToken::new();
    let sim = sim_runtime
        .spawn(SimOrg::start(SimConfig {
            retention: match args.duration {
                Some(_) => LONG_RUN_RETENTION,
                None => SimConfig::default().retention,
            },
            ..SimConfig::default()
        }))
        .await
        .map_err(|e| BenchError::Sim(e.to_string()))?
        .map_err(|e| BenchError::Sim(e.to_string()))?;
    sim.set_stream_rtt(Duration::from_millis(args.rtt));
    for (object, _) in &OBJECTS[..channels] {
        for k in 1..args.width {
            sim.add_field(object, &format!("Bench_Field_{k}__c"), json!("string"))
                .map_err(|e| BenchError::Sim(e.to_string()))?;
        }
    }
    // A long run updates a fixed pool of records, so that the org's own memory stays flat.
    let pool: Arc<Vec<Vec<String>>> = Arc::new(if args.duration.is_some() {
        OBJECTS[..channels]
            .iter()
            .map(|(object, _)| {
                (0..POOL)
                    .map(|i| sim.create(object, change(object, i, args.width)))
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<_, _>>()
            .map_err(|e| BenchError::Sim(e.to_string()))?
    } else {
        Vec::new()
    });
    let pool_events: usize = pool.iter().map(Vec::len).sum();
    let warmup = if args.rate.is_none() { args.warmup } else { 0 };
    // Every record the run waits for; the window measures `measured` of them.
    let total = warmup + n + pool_events;
    let measured = n + pool_events;
    let kafka = EmbeddedKafka::start(3).map_err(|e| BenchError::Kafka(e.to_string()))?;
    let bootstrap = kafka.bootstrap_servers();
    // The records are counted by their delivery reports, not read back, so the mock cluster
    // keeping only the last 5 MB of a partition does not matter here.
    let partitions = args.partitions;
    for topic in ["forcebridge.checkpoints", "forcebridge.dlq"] {
        kafka
            .create_topic(topic, 1)
            .map_err(|e| BenchError::Kafka(e.to_string()))?;
    }
    for (object, _) in &OBJECTS[..channels] {
        kafka
            .create_topic(&format!("salesforce.{object}"), partitions)
            .map_err(|e| BenchError::Kafka(e.to_string()))?;
    }
    let mode = match args.rate {
        Some(r) => format!("at {r} events/s"),
        None => "flat out (changes made first, then drained from earliest)".to_owned(),
    };
    println!("forcebridge bench source");
    println!(
        "  {n} events, {mode}; {channels} channel(s), {} fields per event, rtt {} ms, batch_size {}, {partitions} partition(s) per topic",
        args.width, args.rtt, args.batch_size
    );

    let config = Arc::new(Config::from_yaml(
        &bench_config(&sim, &bootstrap, &args),
        |_| None,
    )?);
    let stats = Arc::new(PipelineStats::default());
    let pipeline_cancel = cancel.child_token();

    let generated_in = if args.rate.is_none() {
        let started = Instant::now();
        for i in 0..warmup + n {
            make_change(&sim, i, channels, args.width)?;
        }
        let took = started.elapsed();
        if warmup > 0 {
            println!(
                "  made {warmup} + {n} changes in the org in {took:.2?} (outside the measured window; the first {warmup} warm the pipeline up)"
            );
        } else {
            println!("  made {n} changes in the org in {took:.2?} (outside the measured window)");
        }
        Some(took)
    } else {
        None
    };

    let mut marks = Marks::now();
    let pipeline = tokio::spawn(crate::source::run(
        config.clone(),
        stats.clone(),
        pipeline_cancel.clone(),
    ));
    // A timed run commits changes for its whole duration: the timeout counts after it.
    let deadline = Instant::now()
        + Duration::from_secs(args.timeout_secs)
        + Duration::from_secs(args.duration.unwrap_or(0));
    if warmup > 0 {
        // The window opens at the first look that finds the warm-up's records acknowledged.
        while stats.snapshot().records_produced() < warmup as u64 {
            if pipeline.is_finished() || cancel.is_cancelled() || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        println!(
            "  [{:>6.1}s] warm-up: {warmup} records acknowledged; the measured window opens",
            marks.at.elapsed().as_secs_f64()
        );
        marks = Marks::now();
    }

    let mut generator = None;
    if let Some(rate) = args.rate {
        // Subscribed on every channel before the first change.
        loop {
            let snap = stats.snapshot();
            let up = snap.channels.values().filter(|c| c.stream_up).count();
            if up >= channels || pipeline.is_finished() || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let sim = sim.clone();
        let width = args.width;
        let pool = pool.clone();
        marks = Marks::now();
        let start = marks.at;
        let stop = stop_generating.clone();
        // Committing changes is the org's work (counted as the org's CPU), but on a thread of
        // its own: changes are committed synchronously, so a generator catching up on the
        // org's serving worker would starve its streams.
        generator = Some(generator_runtime.spawn(async move {
            for i in 0..n {
                if stop.is_cancelled() {
                    break;
                }
                let due = start + Duration::from_secs_f64(i as f64 / rate.max(0.001));
                if due > Instant::now() {
                    tokio::time::sleep_until(due.into()).await;
                }
                if pool.is_empty() {
                    make_change(&sim, i, channels, width)?;
                } else {
                    let (object, _) = OBJECTS[i % channels];
                    let id = &pool[i % channels][(i / channels) % POOL];
                    sim.update(object, id, change(object, i, width))
                        .map_err(|e| BenchError::Sim(e.to_string()))?;
                }
            }
            Ok::<_, BenchError>(start.elapsed())
        }));
    }
    let window_start = marks.at;

    // Until every record is acknowledged; memory sampled every second, the outage played.
    let mut last_report = Instant::now();
    let mut rss_samples: Vec<(f64, u64)> = Vec::new();
    let mut next_sample = Instant::now();
    let outage = args
        .kafka_outage
        .map(|(start, len)| (Duration::from_secs(start), Duration::from_secs(start + len)));
    let mut brokers_down = false;
    // When a tenth and nine tenths of the records were acknowledged: the steady state between
    // them leaves out the startup and the tail.
    let mut tenth: Option<Instant> = None;
    let mut nine_tenths: Option<Instant> = None;
    let mut outage_played = false;
    let outcome = loop {
        let now = Instant::now();
        let elapsed = window_start.elapsed();
        if now >= next_sample {
            next_sample = now + Duration::from_secs(1);
            if let Some(bytes) = rss() {
                rss_samples.push((elapsed.as_secs_f64(), bytes));
            }
        }
        if let Some((down_at, up_at)) = outage {
            let want_down = elapsed >= down_at && elapsed < up_at;
            if want_down != brokers_down && !(outage_played && want_down) {
                for broker in 1..=3 {
                    let toggled = if want_down {
                        kafka.cluster().broker_down(broker)
                    } else {
                        kafka.cluster().broker_up(broker)
                    };
                    toggled.map_err(|e| BenchError::Kafka(e.to_string()))?;
                }
                brokers_down = want_down;
                outage_played |= want_down;
                println!(
                    "  [{:>6.1}s] Kafka brokers {}",
                    elapsed.as_secs_f64(),
                    if want_down { "down" } else { "back up" }
                );
            }
        }
        let produced = stats.snapshot().records_produced();
        let in_window = produced.saturating_sub(warmup as u64);
        if tenth.is_none() && in_window * 10 >= measured as u64 {
            tenth = Some(Instant::now());
        }
        if nine_tenths.is_none() && in_window * 10 >= measured as u64 * 9 {
            nine_tenths = Some(Instant::now());
        }
        if produced >= total as u64 {
            break Ok(());
        }
        if pipeline.is_finished() {
            break Err("the pipeline stopped early".to_owned());
        }
        if cancel.is_cancelled() {
            break Err("interrupted".to_owned());
        }
        if Instant::now() > deadline {
            break Err(format!(
                "timed out with {produced}/{total} records acknowledged"
            ));
        }
        let every = if args.duration.is_some() { 30 } else { 2 };
        if last_report.elapsed() >= Duration::from_secs(every) {
            last_report = Instant::now();
            println!(
                "  [{:>6.1}s] records acknowledged {produced:>8}/{total}",
                window_start.elapsed().as_secs_f64()
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let window = window_start.elapsed();
    // And once at the close, so that the memory after an outage is there however the last
    // second's samples fell (a run can end in the iteration that brought the brokers back).
    if let Some(bytes) = rss() {
        rss_samples.push((window.as_secs_f64(), bytes));
    }
    let machine_end = machine_ticks();
    let cpu_end = cpu_time();
    let parts_end = cpu_by_part();
    let faults_end = minor_faults();
    let rss = peak_rss();
    if outcome.is_err() {
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
    drop(kafka);
    let _ = sim_runtime.spawn(async move { sim.shutdown().await }).await;
    drop(sim_runtime);
    drop(generator_runtime);
    result?;
    outcome.map_err(BenchError::Failed)?;

    let secs = window.as_secs_f64();
    let produced = snapshot.records_produced();
    let received = snapshot.events_received();
    let ms = |v: Option<u64>| v.map_or("n/a".to_owned(), |v| format!("{v} ms"));
    let bound = |v: Option<Option<f64>>| match v {
        None => "n/a".to_owned(),
        Some(Some(b)) => format!("<= {b} ms"),
        Some(None) => "> 10000 ms".to_owned(),
    };
    println!();
    println!("results");
    println!("  {:<44} {total}", "events made in the org");
    if warmup > 0 {
        println!(
            "    ({warmup} of them warming up, before the measured window; {measured} measured)"
        );
    }
    if pool_events > 0 {
        println!(
            "    ({pool_events} of them creating the records that the {n} updates at the rate change)"
        );
    }
    println!("  {:<44} {received}", "events received by forcebridge");
    println!("  {:<44} {produced}", "records acknowledged by Kafka");
    println!(
        "  {:<44} {}",
        "dead-lettered",
        snapshot.events_dead_lettered()
    );
    println!("  {:<44} {:.3} s", "measured window", secs);
    if let Some(g) = generation {
        println!(
            "  {:<44} {:.3} s",
            "  of which committing changes at the rate",
            g.as_secs_f64()
        );
    }
    println!(
        "  {:<44} {:.0}",
        "throughput, events/s (end to end)",
        measured as f64 / secs
    );
    if let (None, Some(a), Some(b)) = (args.rate, tenth, nine_tenths) {
        let between = b.duration_since(a).as_secs_f64();
        let label = "  steady state (10 % → 90 % acknowledged)";
        if between > 0.0 {
            println!(
                "  {label:<44} {:.0}  (the middle 80 % of the records in {between:.3} s)",
                0.8 * measured as f64 / between
            );
        } else {
            println!("  {label:<44} n/a  (acknowledged between two looks: too few records)");
        }
    }
    match (marks.cpu, cpu_end) {
        (Some(a), Some(b)) => {
            let cpu = b.saturating_sub(a);
            println!(
                "  {:<44} {:.1} µs  ({:.2} s CPU over the window, {:.0}% of one core)",
                "CPU time per event",
                cpu.as_secs_f64() * 1e6 / measured.max(1) as f64,
                cpu.as_secs_f64(),
                100.0 * cpu.as_secs_f64() / secs
            );
        }
        _ => println!("  {:<44} n/a (no /proc/self/stat)", "CPU time per event"),
    }
    if let (Some(a), Some(b)) = (marks.parts, parts_end) {
        for (i, label) in [
            "  forcebridge (pipeline, Kafka client)",
            "  simulated org (serving, committing)",
            "  mock Kafka cluster",
        ]
        .into_iter()
        .enumerate()
        {
            let cpu = b[i].saturating_sub(a[i]);
            println!(
                "  {:<44} {:.1} µs  ({:.0}% of one core)",
                label,
                cpu.as_secs_f64() * 1e6 / measured.max(1) as f64,
                100.0 * cpu.as_secs_f64() / secs
            );
        }
    }
    println!(
        "    (process user+sys, 10 ms ticks; includes the in-process simulated org and mock Kafka{})",
        if generated_in.is_some() {
            "; the changes were made before the window"
        } else {
            ", and committing the changes"
        }
    );
    print_machine(marks.machine, machine_end, 44);
    if let (Some(a), Some(b)) = (marks.faults, faults_end) {
        println!(
            "  {:<44} {}  ({:.0}/s)",
            "minor page faults over the window",
            b.saturating_sub(a),
            b.saturating_sub(a) as f64 / secs
        );
        println!(
            "    (memory the process touches for the first time; on a VM that hands freed memory back to its host, each costs a host fault too)"
        );
    }
    let quantiles = |label: &str, counts: &crate::kafka::LatencyCounts, samples: &str| {
        println!(
            "  {label:<44} p50 {}  p99 {}  max {}{samples}",
            ms(counts.quantile(0.50)),
            ms(counts.quantile(0.99)),
            ms((counts.total() > 0).then_some(counts.max_ms)),
        );
    };
    quantiles(
        "latency commit → Kafka ack",
        &latency.total,
        &format!("  ({} samples)", latency.total.total()),
    );
    quantiles("  commit → producer enqueue", &latency.before_producer, "");
    quantiles("  producer enqueue → Kafka ack", &latency.in_producer, "");
    println!(
        "  {:<44} {} ({:.2} %), on average {:.1} ms before the producer, {:.1} ms in it",
        format!(
            "  records of {} ms or more",
            crate::kafka::LatencyProbe::SLOW_MS
        ),
        latency.slow,
        100.0 * latency.slow as f64 / latency.total.total().max(1) as f64,
        latency.slow_before_ms,
        latency.slow_in_ms,
    );
    if generated_in.is_some() {
        println!(
            "    (flat out: the changes were committed before the pipeline started, so this is mostly queueing)"
        );
    }
    println!("    (commit_timestamp has millisecond resolution)");
    println!(
        "  {:<44} p50 {}  p99 {}  mean {:.2} ms  ({} reports)",
        "Kafka producer enqueue → ack (histogram)",
        bound(bucket_quantile(&snapshot.deliveries.buckets, 0.50)),
        bound(bucket_quantile(&snapshot.deliveries.buckets, 0.99)),
        snapshot.deliveries.sum_seconds * 1000.0 / snapshot.deliveries.count().max(1) as f64,
        snapshot.deliveries.count()
    );
    match rss {
        Some(b) => println!(
            "  {:<44} {:.1} MiB  (whole process, incl. the org's stored events)",
            "peak RSS (VmHWM)",
            b as f64 / (1 << 20) as f64
        ),
        None => println!("  {:<44} n/a", "peak RSS (VmHWM)"),
    }
    println!(
        "  {:<44} {}",
        "transparent huge pages",
        match huge_pages_enabled() {
            Some(false) => "off for this process (MIMALLOC_ALLOW_THP=1 keeps them on)",
            Some(true) => "on (as the system's setting allows)",
            None => "n/a",
        }
    );
    if args.duration.is_some() {
        print_memory(&rss_samples, outage);
    }
    if produced != total as u64 || received != total as u64 || latency.total.total() != total as u64
    {
        return Err(BenchError::Failed(format!(
            "count mismatch: {total} events made, {received} received, {produced} acknowledged, {} latency samples",
            latency.total.total()
        )));
    }
    Ok(())
}

/// The memory of a `--duration` run: a sample per tenth of the run, then the steady state
/// (after the first tenth) and, with an outage, the peak during it and the last sample after.
fn print_memory(samples: &[(f64, u64)], outage: Option<(Duration, Duration)>) {
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let Some(&(end, _)) = samples.last() else {
        println!("  memory: no /proc/self/status samples");
        return;
    };
    println!(
        "  {:<44} (whole process, incl. the org and the mock cluster; librdkafka's queue bounded at {LONG_RUN_QUEUE} records)",
        "memory over the run (VmRSS, sampled each second and at the end)"
    );
    let mut next = 0.0;
    for (i, &(t, bytes)) in samples.iter().enumerate() {
        if t >= next || i + 1 == samples.len() {
            println!("    [{t:>6.0}s] {:>8.1} MiB", mib(bytes));
            next = t + end / 10.0;
        }
    }
    let steady: Vec<u64> = samples
        .iter()
        .filter(|(t, _)| *t >= end / 10.0)
        .map(|(_, b)| *b)
        .collect();
    if let (Some(min), Some(max), Some(first), Some(last)) = (
        steady.iter().min(),
        steady.iter().max(),
        steady.first(),
        steady.last(),
    ) {
        println!(
            "  {:<44} min {:.1} MiB, max {:.1} MiB, last − first {:+.1} MiB",
            "after the first tenth of the run",
            mib(*min),
            mib(*max),
            mib(*last) - mib(*first)
        );
    }
    if let Some((down, up)) = outage {
        let (down, up) = (down.as_secs_f64(), up.as_secs_f64());
        let before = samples
            .iter()
            .filter(|(t, _)| *t < down)
            .map(|(_, b)| *b)
            .max();
        let during = samples
            .iter()
            .filter(|(t, _)| *t >= down && *t < up)
            .map(|(_, b)| *b)
            .max();
        let after = samples
            .iter()
            .filter(|(t, _)| *t >= up)
            .map(|(_, b)| *b)
            .next_back();
        let show = |v: Option<u64>| v.map_or("n/a".to_owned(), |b| format!("{:.1} MiB", mib(b)));
        println!(
            "  {:<44} max before {}, max during {}, last after {}",
            "Kafka outage",
            show(before),
            show(during),
            show(after)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_machine_cpu_line_parses_and_differences() {
        let before = MachineTicks::parse(
            "cpu  100 5 50 1000 20 3 2 40 0 0\ncpu0 50 2 25 500 10 1 1 20 0 0\n",
        )
        .expect("parses");
        assert_eq!(
            before,
            MachineTicks {
                busy: 160,
                idle: 1020,
                steal: 40
            }
        );
        let after = MachineTicks::parse("cpu  200 5 90 1100 20 3 2 100 0 0\n").expect("parses");
        let d = after.since(&before);
        assert_eq!((d.busy, d.idle, d.steal), (140, 100, 60));
        assert_eq!(d.total(), 300);
        assert!((d.percent(d.steal) - 20.0).abs() < 1e-9);
        assert_eq!(MachineTicks::parse("intr 1 2 3\n"), None);
        assert_eq!(MachineTicks::parse("cpu 1 2 x 4 5 6 7 8\n"), None);
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), Some(50));
        assert_eq!(quantile(&v, 0.99), Some(99));
        assert_eq!(quantile(&[], 0.5), None);
        let mut buckets = [0u64; DELIVERY_LATENCY_BUCKETS.len() + 1];
        buckets[0] = 60;
        buckets[3] = 39;
        buckets[DELIVERY_LATENCY_BUCKETS.len()] = 1;
        assert_eq!(bucket_quantile(&buckets, 0.5), Some(Some(1.0)));
        assert_eq!(bucket_quantile(&buckets, 0.99), Some(Some(10.0)));
        assert_eq!(bucket_quantile(&buckets, 1.0), Some(None));
    }

    #[test]
    fn outages_parse_and_name_the_mistake() {
        assert_eq!(parse_outage("120+60"), Ok((120, 60)));
        let err = parse_outage("120").unwrap_err();
        assert!(err.contains("expected START+LEN"), "{err}");
        let err = parse_outage("1+x").unwrap_err();
        assert!(err.contains("`x` is not a number of seconds"), "{err}");
    }

    #[test]
    fn kafka_properties_parse_and_override_the_long_run_queue() {
        assert_eq!(
            parse_property("linger.ms=0"),
            Ok(("linger.ms".to_owned(), "0".to_owned()))
        );
        assert!(
            parse_property("linger.ms")
                .unwrap_err()
                .contains("KEY=VALUE")
        );
        assert!(parse_property("=1").is_err());
        let args = |extra: &[&str]| {
            #[derive(clap::Parser)]
            struct Cli {
                #[command(flatten)]
                args: SourceBenchArgs,
            }
            let argv = ["bench", "--rate", "10", "--duration", "1"]
                .iter()
                .chain(extra);
            <Cli as clap::Parser>::parse_from(argv).args
        };
        let text = bench_properties(&args(&[
            "--kafka-property",
            "queue.buffering.max.messages=5",
            "--kafka-property",
            "linger.ms=0",
        ]));
        assert_eq!(
            text,
            "  properties:\n    \"queue.buffering.max.messages\": \"5\"\n    \"linger.ms\": \"0\"\n"
        );
        assert!(bench_properties(&args(&[])).contains("\"20000\""));
    }

    #[test]
    fn a_change_sets_exactly_width_fields() {
        assert_eq!(change("Account", 3, 1).len(), 1);
        assert_eq!(change("Contact", 3, 20).len(), 20);
    }
}
