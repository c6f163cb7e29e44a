//! Telemetry: the metric names (defined here and nowhere else), the in-process counters behind
//! them, and log setup.
//!
//! Contract: every counter forcebridge keeps is a field of [`PipelineStats`] or
//! [`ChannelStats`] (source), or of [`ApiStats`] / [`ApiLimitGauges`] (the sink's REST client and
//! its limit guard), named by a `const` below; [`PipelineStats::snapshot`] reads the source's (the
//! demo's summary, `/metrics` later). Counters are plain atomics, cheap on the hot path; the
//! per-topic map is touched only by its channel's own task.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

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
/// Object re-syncs started by `GAP_OVERFLOW` events, per channel.
pub const RESYNCS: &str = "forcebridge_source_resyncs_total";
/// GetSchema calls (schema cache misses, including failed fetches).
pub const SCHEMAS_FETCHED: &str = "forcebridge_source_schemas_fetched_total";

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
}

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
}

/// All counters of one pipeline.
#[derive(Debug, Default)]
pub struct PipelineStats {
    channels: Mutex<BTreeMap<String, Arc<ChannelStats>>>,
    /// [`SCHEMAS_FETCHED`]
    pub schemas_fetched: AtomicU64,
}

/// A point-in-time copy of the counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Per channel: (events received, dead-lettered, keepalives, streams opened, checkpoints).
    pub channels: BTreeMap<String, ChannelSnapshot>,
    /// Records acknowledged per topic, over all channels.
    pub records_by_topic: BTreeMap<String, u64>,
    /// Schemas fetched.
    pub schemas_fetched: u64,
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
}

impl PipelineStats {
    /// The counters of `channel` (created on first use).
    pub fn channel(&self, channel: &str) -> Arc<ChannelStats> {
        let mut map = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(channel.to_owned()).or_default().clone()
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        let channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        let mut snapshot = StatsSnapshot {
            schemas_fetched: self.schemas_fetched.load(Ordering::Relaxed),
            ..Default::default()
        };
        for (name, stats) in channels.iter() {
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
                },
            );
            let topics = stats
                .records_by_topic
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for (topic, count) in topics.iter() {
                *snapshot.records_by_topic.entry(topic.clone()).or_default() +=
                    count.load(Ordering::Relaxed);
            }
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

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Sets up tracing to stderr; `RUST_LOG` filters (default `default_level`).
pub fn init_logging(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests, demo inside run) is harmless: keep the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

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
