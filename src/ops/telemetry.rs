//! Telemetry: the metric names (defined here, and the full-record ones in `ops/full_record.rs`), the in-process counters behind
//! them, and log setup (in [`super::logging`], re-exported).
//!
//! Contract: every counter forcebridge keeps is a field of [`PipelineStats`] or
//! [`ChannelStats`] (source), of [`SinkStats`], of [`DeliveryStats`] (a Kafka producer's delivery
//! reports), or of [`ApiStats`] / [`ApiLimitGauges`] (the sink's REST client and its limit guard),
//! named by a `const` below; [`PipelineStats::snapshot`] and [`SinkStats::snapshot`] read them (the
//! demo's summary, `ops`'s `/metrics`). Counters are plain atomics, cheap on the hot path; the
//! per-topic map is touched only by its channel's own task. The same atomics carry the readiness
//! `ops`'s `/readyz` reports: [`ChannelStats::stream_up`], [`SinkStats::consumer_running`], and
//! each side's [`Retrying`] (the transient failures being waited out, `ops/retrying.rs`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Pub/Sub events received, per channel.
pub const EVENTS_RECEIVED: &str = "forcebridge_source_events_received_total";
/// Kafka records produced (acknowledged), per channel and topic.
pub const RECORDS_PRODUCED: &str = "forcebridge_source_records_produced_total";
/// Events written to the dead-letter topic, per channel.
pub const EVENTS_DEAD_LETTERED: &str = "forcebridge_source_events_dead_lettered_total";
/// Keepalive responses (empty FetchResponses), per channel.
pub const KEEPALIVES: &str = "forcebridge_source_keepalives_total";
/// Subscribe streams (re)opened, per channel.
pub const STREAMS_OPENED: &str = "forcebridge_source_streams_opened_total";
/// Subscribe calls refused and streams that ended with an error (each followed by a backoff and
/// a new Subscribe), per channel.
pub const STREAM_FAILURES: &str = "forcebridge_source_stream_failures_total";
/// Checkpoints written, per channel.
pub const CHECKPOINTS_WRITTEN: &str = "forcebridge_source_checkpoints_written_total";
/// Replay ids the org rejected, after which events may be missing, per channel.
pub const REPLAY_GAPS: &str = "forcebridge_source_replay_gaps_total";
/// Change events recognised as echoes of forcebridge's own writes (dropped or marked), per channel.
pub const ECHOES: &str = "forcebridge_source_echoes_total";
/// Gap and overflow events (`GAP_*` change types) handled by re-reading, per channel.
pub const GAP_EVENTS: &str = "forcebridge_source_gap_events_total";
/// Records re-read over REST and produced for gap events and overflow re-syncs, per channel.
pub const GAP_RECORDS_REREAD: &str = "forcebridge_source_gap_records_reread_total";
/// Records named by a gap event that the re-read did not find (produced as absent), per channel.
pub const GAP_RECORDS_ABSENT: &str = "forcebridge_source_gap_records_absent_total";
/// Change events with `diffFields` (large text values sent as a diff), per channel.
pub const DIFF_EVENTS: &str = "forcebridge_source_diff_events_total";
/// Records whose diff fields were re-read over REST (`source.diff_fields: reread`), per channel.
pub const DIFF_RECORDS_REREAD: &str = "forcebridge_source_diff_records_reread_total";
/// Records whose diff fields the re-read did not find (produced with `diffs`), per channel.
pub const DIFF_RECORDS_ABSENT: &str = "forcebridge_source_diff_records_absent_total";
/// Snapshot rows handed to Kafka (operation `READ`), per channel.
pub const SNAPSHOT_ROWS: &str = "forcebridge_source_snapshot_rows_total";
/// Snapshots finished (handed off to the stream), per channel.
pub const SNAPSHOTS_COMPLETED: &str = "forcebridge_source_snapshots_completed_total";
/// 1 while a channel's snapshot runs (the stream waits for it).
pub const SNAPSHOT_RUNNING: &str = "forcebridge_source_snapshot_running";
/// Object re-syncs started by `GAP_OVERFLOW` events, per channel.
pub const RESYNCS: &str = "forcebridge_source_resyncs_total";
/// GetSchema calls (schema cache misses, including failed fetches).
pub const SCHEMAS_FETCHED: &str = "forcebridge_source_schemas_fetched_total";
/// Gauge, 0 or 1, per channel: a Subscribe stream is open (the channel's readiness).
pub const STREAM_UP: &str = "forcebridge_source_stream_up";
/// Gauge, per channel: seconds since the checkpoint last caught up (a checkpoint written, or the
/// durable position found already written with nothing in flight), counted only while events
/// received since then wait for the next one; 0 otherwise. At most about `checkpoint_interval`
/// in steady flow; it grows while Kafka does not acknowledge or checkpoints cannot be written.
pub const CHECKPOINT_LAG: &str = "forcebridge_source_checkpoint_lag_seconds";
/// Gauge, per channel: Unix time of the last checkpoint written; absent before the first.
pub const LAST_CHECKPOINT: &str = "forcebridge_source_last_checkpoint_timestamp_seconds";
/// Histogram: time from enqueueing a record in the source's Kafka producer to its delivery
/// report (acknowledged or failed).
pub const KAFKA_DELIVERY_LATENCY: &str = "forcebridge_kafka_delivery_latency_seconds";
/// Delivery reports of the source's Kafka producers, labelled `result` (`ok` or `error`).
pub const KAFKA_DELIVERIES: &str = "forcebridge_kafka_deliveries_total";
/// Gauge, 0 or 1: the last Kafka metadata probe of `/readyz` or `/metrics` was answered.
pub const KAFKA_REACHABLE: &str = "forcebridge_kafka_reachable";

/// Upper bounds (seconds) of the [`KAFKA_DELIVERY_LATENCY`] buckets (`+Inf` implied).
pub const DELIVERY_LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// The index of the histogram bucket that holds the `q` quantile (0..=1) of the samples counted
/// in `counts` (per bucket, not cumulative), by nearest rank; `None` without samples.
pub fn nearest_rank_bucket(counts: &[u64], q: f64) -> Option<usize> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    counts.iter().position(|n| {
        seen += n;
        seen >= rank
    })
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Delivery reports of one Kafka producer: a fixed-bucket latency histogram and outcome counts.
/// Updated from librdkafka's delivery callback: a few relaxed atomic adds per record.
#[derive(Debug, Default)]
pub struct DeliveryStats {
    /// Per bucket of [`DELIVERY_LATENCY_BUCKETS`] plus `+Inf` (not cumulative).
    buckets: [AtomicU64; DELIVERY_LATENCY_BUCKETS.len() + 1],
    /// Sum of the latencies, microseconds.
    sum_micros: AtomicU64,
    /// Acknowledged records.
    ok: AtomicU64,
    /// Failed records.
    failed: AtomicU64,
}

/// A point-in-time copy of one or more [`DeliveryStats`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeliverySnapshot {
    /// Per bucket of [`DELIVERY_LATENCY_BUCKETS`] plus `+Inf` (not cumulative).
    pub buckets: [u64; DELIVERY_LATENCY_BUCKETS.len() + 1],
    /// Sum of the latencies, seconds.
    pub sum_seconds: f64,
    /// Acknowledged records.
    pub ok: u64,
    /// Failed records.
    pub failed: u64,
}

impl DeliveryStats {
    /// Records one delivery report: its enqueue→report latency and outcome.
    pub fn observe(&self, latency: Duration, ok: bool) {
        let seconds = latency.as_secs_f64();
        let bucket = DELIVERY_LATENCY_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(DELIVERY_LATENCY_BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(latency.as_micros() as u64, Ordering::Relaxed);
        if ok {
            self.ok.fetch_add(1, Ordering::Relaxed);
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Adds this producer's counts to `into`.
    pub fn add_to(&self, into: &mut DeliverySnapshot) {
        for (total, bucket) in into.buckets.iter_mut().zip(&self.buckets) {
            *total += bucket.load(Ordering::Relaxed);
        }
        into.sum_seconds += self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        into.ok += self.ok.load(Ordering::Relaxed);
        into.failed += self.failed.load(Ordering::Relaxed);
    }
}

impl DeliverySnapshot {
    /// Delivery reports counted (the histogram's `_count`).
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

/// Write-back records consumed from Kafka.
pub const SINK_RECORDS_RECEIVED: &str = "forcebridge_sink_records_received_total";
/// Write-back records written to Salesforce (including deletes already done).
pub const SINK_RECORDS_WRITTEN: &str = "forcebridge_sink_records_written_total";
/// Write-back records not applied because Salesforce held a newer change (conflicts topic).
pub const SINK_CONFLICTS: &str = "forcebridge_sink_conflicts_total";
/// Write-back records sent to the dead-letter topic.
pub const SINK_DEAD_LETTERED: &str = "forcebridge_sink_records_dead_lettered_total";
/// Per-record retries after retryable Salesforce errors.
pub const SINK_RETRIES: &str = "forcebridge_sink_record_retries_total";
/// Batches written.
pub const SINK_BATCHES: &str = "forcebridge_sink_batches_total";
/// Composite calls made by the sink (lookups and writes).
pub const SINK_COMPOSITE_CALLS: &str = "forcebridge_sink_composite_calls_total";
/// Describe calls made by the sink (`GET …/sobjects/{Object}/describe`, once per object per run).
pub const SINK_DESCRIBE_CALLS: &str = "forcebridge_sink_describe_calls_total";

/// Counters of the sink.
#[derive(Debug, Default)]
pub struct SinkStats {
    /// [`SINK_RECORDS_RECEIVED`]
    pub received: AtomicU64,
    /// [`SINK_RECORDS_WRITTEN`]
    pub written: AtomicU64,
    /// [`SINK_CONFLICTS`]
    pub conflicts: AtomicU64,
    /// [`SINK_DEAD_LETTERED`]
    pub dead_lettered: AtomicU64,
    /// [`SINK_RETRIES`]
    pub retries: AtomicU64,
    /// [`SINK_BATCHES`]
    pub batches: AtomicU64,
    /// [`SINK_COMPOSITE_CALLS`]
    pub composite_calls: AtomicU64,
    /// [`SINK_DESCRIBE_CALLS`]
    pub describe_calls: AtomicU64,
    /// [`SINK_CONSUMER_UP`]: the Kafka consumer is subscribed and its attempt running.
    pub consumer_running: AtomicBool,
    /// The sink's REST client: [`SINK_API_CALLS`], [`SINK_API_RETRIES`], [`SINK_API_RELOGINS`].
    pub api: Arc<ApiStats>,
    /// The sink's limit guard: [`SINK_API_PAUSED`], [`SINK_API_REMAINING`].
    pub api_limits: Arc<ApiLimitGauges>,
    /// The sink's transient failures being retried (`/readyz` reasons, [`TRANSIENT_RETRIES`]).
    pub retrying: Arc<Retrying>,
    /// Records held and when one last finished (readiness, `ops.stall_after`).
    pub progress: super::progress::SinkProgress,
}

/// Gauge, 0 or 1: the sink's Kafka consumer is subscribed and consuming (the sink's readiness).
pub const SINK_CONSUMER_UP: &str = "forcebridge_sink_consumer_up";

/// A point-in-time copy of [`SinkStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SinkSnapshot {
    pub received: u64,
    pub written: u64,
    pub conflicts: u64,
    pub dead_lettered: u64,
    pub retries: u64,
    pub batches: u64,
    pub composite_calls: u64,
    pub describe_calls: u64,
    pub consumer_running: bool,
    pub api_calls: u64,
    pub api_retries: u64,
    pub api_relogins: u64,
    pub api_paused: bool,
    /// `None` until Salesforce reported the allowance.
    pub api_remaining: Option<u64>,
}

impl SinkStats {
    /// Reads every counter.
    pub fn snapshot(&self) -> SinkSnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SinkSnapshot {
            received: r(&self.received),
            written: r(&self.written),
            conflicts: r(&self.conflicts),
            dead_lettered: r(&self.dead_lettered),
            retries: r(&self.retries),
            batches: r(&self.batches),
            composite_calls: r(&self.composite_calls),
            describe_calls: r(&self.describe_calls),
            consumer_running: self.consumer_running.load(Ordering::Relaxed),
            api_calls: r(&self.api.calls),
            api_retries: r(&self.api.retries),
            api_relogins: r(&self.api.relogins),
            api_paused: self.api_limits.paused.load(Ordering::Relaxed),
            api_remaining: Some(r(&self.api_limits.remaining)).filter(|&v| v != u64::MAX),
        }
    }
}

/// Salesforce REST API calls the sink's client made that Salesforce answered (any status,
/// including `/limits` polls and query pages).
pub const SINK_API_CALLS: &str = "forcebridge_sink_api_calls_total";
/// REST calls sent again after a transient failure, a re-login or an exhausted allowance.
pub const SINK_API_RETRIES: &str = "forcebridge_sink_api_retries_total";
/// Re-logins after Salesforce refused the session (401).
pub const SINK_API_RELOGINS: &str = "forcebridge_sink_api_relogins_total";
/// Gauge, 0 or 1: the sink holds its REST calls because the daily API allowance is down to the
/// reserve.
pub const SINK_API_PAUSED: &str = "forcebridge_sink_api_paused";
/// Gauge: remaining daily API requests as last reported by Salesforce (`Sforce-Limit-Info` or
/// `/limits`); absent until known.
pub const SINK_API_REMAINING: &str = "forcebridge_sink_api_remaining";

/// Counters of one REST client (shared by its clones).
#[derive(Debug, Default)]
pub struct ApiStats {
    /// [`SINK_API_CALLS`]
    pub calls: AtomicU64,
    /// [`SINK_API_RETRIES`]
    pub retries: AtomicU64,
    /// [`SINK_API_RELOGINS`]
    pub relogins: AtomicU64,
}

/// Gauges of one API limit guard (shared by every worker of a sink).
#[derive(Debug)]
pub struct ApiLimitGauges {
    /// [`SINK_API_PAUSED`]
    pub paused: AtomicBool,
    /// [`SINK_API_REMAINING`]; `u64::MAX` while unknown.
    pub remaining: AtomicU64,
}

impl Default for ApiLimitGauges {
    fn default() -> Self {
        ApiLimitGauges {
            paused: AtomicBool::new(false),
            remaining: AtomicU64::new(u64::MAX),
        }
    }
}

/// Counters of one channel.
#[derive(Debug, Default)]
pub struct ChannelStats {
    /// [`EVENTS_RECEIVED`]
    pub events_received: AtomicU64,
    /// [`EVENTS_DEAD_LETTERED`]
    pub events_dead_lettered: AtomicU64,
    /// [`KEEPALIVES`]
    pub keepalives: AtomicU64,
    /// [`STREAMS_OPENED`]
    pub streams_opened: AtomicU64,
    /// [`STREAM_FAILURES`]
    pub stream_failures: AtomicU64,
    /// [`CHECKPOINTS_WRITTEN`]
    pub checkpoints_written: AtomicU64,
    /// [`REPLAY_GAPS`]
    pub replay_gaps: AtomicU64,
    /// [`ECHOES`]
    pub echoes: AtomicU64,
    /// [`GAP_EVENTS`]
    pub gap_events: AtomicU64,
    /// [`GAP_RECORDS_REREAD`]
    pub records_reread: AtomicU64,
    /// [`GAP_RECORDS_ABSENT`]
    pub records_absent: AtomicU64,
    /// [`RESYNCS`]
    pub resyncs: AtomicU64,
    /// [`DIFF_EVENTS`]
    pub diff_events: AtomicU64,
    /// [`DIFF_RECORDS_REREAD`]
    pub diff_records_reread: AtomicU64,
    /// [`DIFF_RECORDS_ABSENT`]
    pub diff_records_absent: AtomicU64,
    /// [`SNAPSHOT_ROWS`]
    pub snapshot_rows: AtomicU64,
    /// [`SNAPSHOTS_COMPLETED`]
    pub snapshots_completed: AtomicU64,
    /// [`SNAPSHOT_RUNNING`]
    pub snapshot_running: AtomicBool,
    /// [`STREAM_UP`]: set while a Subscribe stream is open.
    pub stream_up: AtomicBool,
    /// `source.channels[].full_record` ([`super::full_record`]).
    pub full_record: super::full_record::FullRecordStats,
    /// Unix ms of the first and the last event received ([`ChannelStats::note_event`]).
    first_event_ms: AtomicU64,
    last_event_ms: AtomicU64,
    /// Unix ms at which the checkpoint last caught up ([`ChannelStats::note_caught_up`]).
    caught_up_ms: AtomicU64,
    /// Unix ms of the last checkpoint written.
    last_checkpoint_ms: AtomicU64,
    /// [`RECORDS_PRODUCED`] by topic.
    records_by_topic: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
}

impl ChannelStats {
    /// The counter of records acknowledged for `topic` (created on first use; keep the `Arc`).
    pub fn topic_counter(&self, topic: &str) -> Arc<AtomicU64> {
        let mut map = self
            .records_by_topic
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        map.entry(topic.to_owned()).or_default().clone()
    }

    /// Marks the stream open until the returned guard drops ([`STREAM_UP`] falls back to 0 when
    /// the reader stops, whatever the way).
    pub fn stream_down_on_drop(&self) -> ClearOnDrop<'_> {
        ClearOnDrop(&self.stream_up)
    }

    /// An event arrived (for [`CHECKPOINT_LAG`]): one clock read and one relaxed store.
    pub fn note_event(&self) {
        let now = unix_millis();
        self.last_event_ms.store(now, Ordering::Relaxed);
        if self.first_event_ms.load(Ordering::Relaxed) == 0 {
            let _ =
                self.first_event_ms
                    .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// A checkpoint was written (`written`) or found current with nothing in flight, for the
    /// durable position read after `since_ms` (Unix ms): events received before it are covered
    /// or their successors are.
    pub fn note_caught_up(&self, since_ms: u64, written: bool) {
        self.caught_up_ms.fetch_max(since_ms, Ordering::Relaxed);
        if written {
            self.last_checkpoint_ms
                .fetch_max(unix_millis(), Ordering::Relaxed);
        }
    }

    /// [`CHECKPOINT_LAG`] at `now_ms`, in milliseconds.
    fn checkpoint_lag_ms(&self, now_ms: u64) -> u64 {
        let last_event = self.last_event_ms.load(Ordering::Relaxed);
        let caught_up = self.caught_up_ms.load(Ordering::Relaxed);
        if last_event == 0 || last_event < caught_up {
            0
        } else {
            // Never caught up yet: count from the first event.
            let since = if caught_up == 0 {
                self.first_event_ms.load(Ordering::Relaxed)
            } else {
                caught_up
            };
            now_ms.saturating_sub(since)
        }
    }
}

/// Clears a readiness flag ([`ChannelStats::stream_up`], [`SinkStats::consumer_running`]) when
/// dropped, however its owner stops.
#[derive(Debug)]
pub struct ClearOnDrop<'a>(pub &'a AtomicBool);

impl Drop for ClearOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

/// All counters of one pipeline.
#[derive(Debug, Default)]
pub struct PipelineStats {
    channels: Mutex<BTreeMap<String, Arc<ChannelStats>>>,
    /// [`SCHEMAS_FETCHED`]
    pub schemas_fetched: AtomicU64,
    /// The delivery stats of the source's producers (each once).
    deliveries: Mutex<Vec<Arc<DeliveryStats>>>,
    /// The source's transient failures being retried (`/readyz` reasons, [`TRANSIENT_RETRIES`]).
    pub retrying: Arc<Retrying>,
}

/// A point-in-time copy of the counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatsSnapshot {
    /// Per channel: (events received, dead-lettered, keepalives, streams opened, checkpoints).
    pub channels: BTreeMap<String, ChannelSnapshot>,
    /// Records acknowledged per topic, over all channels.
    pub records_by_topic: BTreeMap<String, u64>,
    /// Schemas fetched.
    pub schemas_fetched: u64,
    /// Delivery reports of the source's producers.
    pub deliveries: DeliverySnapshot,
}

/// Counters of one channel at a point in time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelSnapshot {
    pub events_received: u64,
    pub events_dead_lettered: u64,
    pub keepalives: u64,
    pub streams_opened: u64,
    pub stream_failures: u64,
    pub checkpoints_written: u64,
    pub replay_gaps: u64,
    pub echoes: u64,
    pub gap_events: u64,
    pub records_reread: u64,
    pub records_absent: u64,
    pub resyncs: u64,
    pub diff_events: u64,
    pub diff_records_reread: u64,
    pub diff_records_absent: u64,
    pub snapshot_rows: u64,
    pub snapshots_completed: u64,
    /// A snapshot runs.
    pub snapshot_running: bool,
    /// A Subscribe stream is open.
    pub stream_up: bool,
    /// `source.channels[].full_record`.
    pub full_record: super::full_record::FullRecordCounts,
    /// [`CHECKPOINT_LAG`], milliseconds.
    pub checkpoint_lag_ms: u64,
    /// [`LAST_CHECKPOINT`], Unix ms; 0 before the first.
    pub last_checkpoint_unix_ms: u64,
    /// Records acknowledged per topic.
    pub records_by_topic: BTreeMap<String, u64>,
}

impl PipelineStats {
    /// The counters of `channel` (created on first use).
    pub fn channel(&self, channel: &str) -> Arc<ChannelStats> {
        let mut map = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(channel.to_owned()).or_default().clone()
    }

    /// Counts the delivery reports of a producer into [`StatsSnapshot::deliveries`] (a producer
    /// registered twice, e.g. clones shared by channels, counts once).
    pub fn register_deliveries(&self, stats: Arc<DeliveryStats>) {
        let mut all = self.deliveries.lock().unwrap_or_else(|e| e.into_inner());
        if !all.iter().any(|known| Arc::ptr_eq(known, &stats)) {
            all.push(stats);
        }
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        let now_ms = unix_millis();
        let mut snapshot = StatsSnapshot {
            schemas_fetched: self.schemas_fetched.load(Ordering::Relaxed),
            ..Default::default()
        };
        for producer in self
            .deliveries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            producer.add_to(&mut snapshot.deliveries);
        }
        let channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        for (name, stats) in channels.iter() {
            let topics = stats
                .records_by_topic
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let records_by_topic: BTreeMap<String, u64> = topics
                .iter()
                .map(|(topic, count)| (topic.clone(), count.load(Ordering::Relaxed)))
                .collect();
            drop(topics);
            for (topic, count) in &records_by_topic {
                *snapshot.records_by_topic.entry(topic.clone()).or_default() += count;
            }
            snapshot.channels.insert(
                name.clone(),
                ChannelSnapshot {
                    events_received: stats.events_received.load(Ordering::Relaxed),
                    events_dead_lettered: stats.events_dead_lettered.load(Ordering::Relaxed),
                    keepalives: stats.keepalives.load(Ordering::Relaxed),
                    streams_opened: stats.streams_opened.load(Ordering::Relaxed),
                    stream_failures: stats.stream_failures.load(Ordering::Relaxed),
                    checkpoints_written: stats.checkpoints_written.load(Ordering::Relaxed),
                    replay_gaps: stats.replay_gaps.load(Ordering::Relaxed),
                    echoes: stats.echoes.load(Ordering::Relaxed),
                    gap_events: stats.gap_events.load(Ordering::Relaxed),
                    records_reread: stats.records_reread.load(Ordering::Relaxed),
                    records_absent: stats.records_absent.load(Ordering::Relaxed),
                    resyncs: stats.resyncs.load(Ordering::Relaxed),
                    diff_events: stats.diff_events.load(Ordering::Relaxed),
                    diff_records_reread: stats.diff_records_reread.load(Ordering::Relaxed),
                    diff_records_absent: stats.diff_records_absent.load(Ordering::Relaxed),
                    snapshot_rows: stats.snapshot_rows.load(Ordering::Relaxed),
                    snapshots_completed: stats.snapshots_completed.load(Ordering::Relaxed),
                    snapshot_running: stats.snapshot_running.load(Ordering::Relaxed),
                    stream_up: stats.stream_up.load(Ordering::Relaxed),
                    full_record: stats.full_record.snapshot(),
                    checkpoint_lag_ms: stats.checkpoint_lag_ms(now_ms),
                    last_checkpoint_unix_ms: stats.last_checkpoint_ms.load(Ordering::Relaxed),
                    records_by_topic,
                },
            );
        }
        snapshot
    }
}

impl StatsSnapshot {
    /// Events received over all channels.
    pub fn events_received(&self) -> u64 {
        self.channels.values().map(|c| c.events_received).sum()
    }
    /// Records acknowledged over all topics.
    pub fn records_produced(&self) -> u64 {
        self.records_by_topic.values().sum()
    }
    /// Dead-lettered events over all channels.
    pub fn events_dead_lettered(&self) -> u64 {
        self.channels.values().map(|c| c.events_dead_lettered).sum()
    }
}

pub use super::logging::{LogFormat, init_logging};
pub use super::retrying::{Retrying, TRANSIENT_RETRIES};

/// Installs rustls' ring provider as the process default (idempotent).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// An error with its sources, `a: b: c`, skipping a source whose text the message already holds.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}
