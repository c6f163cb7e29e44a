//! The `/metrics` page: Prometheus text exposition format 0.0.4, written by hand from the
//! telemetry snapshots.
//!
//! Contract: [`render_metrics`] takes point-in-time snapshots of the source
//! ([`StatsSnapshot`]), the sink ([`SinkSnapshot`]) and the last Kafka probe, any of them absent,
//! and renders every family of the parts given (the names are [`crate::ops::telemetry`]'s),
//! each with its `# HELP` and `# TYPE` lines before its samples, label values escaped: per
//! `channel` (and `topic`) for the source, unlabelled for the sink, the delivery-latency
//! histogram of the source's Kafka producers (cumulative buckets, `_sum`, `_count`), and the last
//! Kafka probe. Nothing is cached. [`sample_value`] reads one sample back from such a page.

use crate::ops::full_record::{FULL_RECORD_READS, FULL_RECORDS_ABSENT, FULL_RECORDS_COMPLETED};
use crate::ops::telemetry::{self as t, DeliverySnapshot, SinkSnapshot, StatsSnapshot};

/// A Prometheus text-format (0.0.4) page under construction.
#[derive(Default)]
struct Exposition {
    out: String,
}

impl Exposition {
    /// Starts a metric family: its `# HELP` and `# TYPE` lines.
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        use std::fmt::Write as _;
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// One sample line; label values escaped.
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        use std::fmt::Write as _;
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let escaped = value
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                let _ = write!(self.out, "{key}=\"{escaped}\"");
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// A family with one sample per channel.
    fn per_channel(
        &mut self,
        source: &StatsSnapshot,
        name: &str,
        kind: &str,
        help: &str,
        value: impl Fn(&t::ChannelSnapshot) -> Option<f64>,
    ) {
        self.family(name, kind, help);
        for (channel, stats) in &source.channels {
            if let Some(v) = value(stats) {
                self.sample(name, &[("channel", channel)], v);
            }
        }
    }
}

/// A per-channel counter: name, help, and how to read it from a snapshot.
type ChannelCounter = (&'static str, &'static str, fn(&t::ChannelSnapshot) -> u64);

/// Renders the `/metrics` page from snapshots (`kafka_reachable`: the last probe, if any).
pub(crate) fn render_metrics(
    source: Option<&StatsSnapshot>,
    sink: Option<&SinkSnapshot>,
    kafka_reachable: Option<bool>,
) -> String {
    let mut e = Exposition::default();
    if let Some(s) = source {
        channel_counters(&mut e, s);
        records_produced(&mut e, s);
        channel_gauges(&mut e, s);
        e.family(t::SCHEMAS_FETCHED, "counter", "GetSchema calls.");
        e.sample(t::SCHEMAS_FETCHED, &[], s.schemas_fetched);
        deliveries(&mut e, &s.deliveries);
    }
    if let Some(k) = sink {
        sink_counters(&mut e, k);
        sink_gauges(&mut e, k);
    }
    if let Some(up) = kafka_reachable {
        e.family(
            t::KAFKA_REACHABLE,
            "gauge",
            "1 if the last Kafka metadata probe was answered.",
        );
        e.sample(t::KAFKA_REACHABLE, &[], u8::from(up));
    }
    e.out
}

/// The source's per-channel counters, one family each.
fn channel_counters(e: &mut Exposition, s: &StatsSnapshot) {
    let counters: [ChannelCounter; 20] = [
        (t::EVENTS_RECEIVED, "Pub/Sub events received.", |c| {
            c.events_received
        }),
        (
            t::EVENTS_DEAD_LETTERED,
            "Events written to the dead-letter topic.",
            |c| c.events_dead_lettered,
        ),
        (
            t::KEEPALIVES,
            "Keepalive responses (empty FetchResponses).",
            |c| c.keepalives,
        ),
        (t::STREAMS_OPENED, "Subscribe streams opened.", |c| {
            c.streams_opened
        }),
        (
            t::STREAM_FAILURES,
            "Subscribe calls refused and streams ended with an error.",
            |c| c.stream_failures,
        ),
        (t::CHECKPOINTS_WRITTEN, "Checkpoints written.", |c| {
            c.checkpoints_written
        }),
        (
            t::REPLAY_GAPS,
            "Replay ids the org rejected (events may be missing).",
            |c| c.replay_gaps,
        ),
        (
            t::ECHOES,
            "Change events recognised as echoes of forcebridge's own writes.",
            |c| c.echoes,
        ),
        (t::GAP_EVENTS, "Gap and overflow events handled.", |c| {
            c.gap_events
        }),
        (
            t::GAP_RECORDS_REREAD,
            "Records re-read over REST for gap and overflow events.",
            |c| c.records_reread,
        ),
        (
            t::GAP_RECORDS_ABSENT,
            "Records named by a gap event that the re-read did not find.",
            |c| c.records_absent,
        ),
        (
            t::RESYNCS,
            "Object re-syncs started by GAP_OVERFLOW events.",
            |c| c.resyncs,
        ),
        (
            t::DIFF_EVENTS,
            "Change events carrying large text values as diffs (diffFields).",
            |c| c.diff_events,
        ),
        (
            t::DIFF_RECORDS_REREAD,
            "Records whose diff fields were re-read over REST.",
            |c| c.diff_records_reread,
        ),
        (
            t::DIFF_RECORDS_ABSENT,
            "Records whose diff fields the re-read did not find (produced with their diffs).",
            |c| c.diff_records_absent,
        ),
        (
            t::SNAPSHOT_ROWS,
            "Snapshot rows (operation READ) handed to Kafka.",
            |c| c.snapshot_rows,
        ),
        (
            t::SNAPSHOTS_COMPLETED,
            "Snapshots finished and handed off to the stream.",
            |c| c.snapshots_completed,
        ),
        (
            FULL_RECORD_READS,
            "sObject Collections retrieve calls completing UPDATE records (full_record).",
            |c| c.full_record.reads,
        ),
        (
            FULL_RECORDS_COMPLETED,
            "UPDATE records completed with the record's current values (full_record).",
            |c| c.full_record.completed,
        ),
        (
            FULL_RECORDS_ABSENT,
            "UPDATE records the full-record read did not find (produced as absent).",
            |c| c.full_record.absent,
        ),
    ];
    for (name, help, value) in counters {
        e.per_channel(s, name, "counter", help, |c| Some(value(c) as f64));
    }
}

/// [`t::RECORDS_PRODUCED`]: one sample per channel and topic.
fn records_produced(e: &mut Exposition, s: &StatsSnapshot) {
    e.family(
        t::RECORDS_PRODUCED,
        "counter",
        "Kafka records produced and acknowledged.",
    );
    for (channel, stats) in &s.channels {
        for (topic, count) in &stats.records_by_topic {
            e.sample(
                t::RECORDS_PRODUCED,
                &[("channel", channel), ("topic", topic)],
                count,
            );
        }
    }
}

/// The source's per-channel gauges: stream up, checkpoint lag, last checkpoint.
fn channel_gauges(e: &mut Exposition, s: &StatsSnapshot) {
    e.per_channel(
        s,
        t::STREAM_UP,
        "gauge",
        "1 while a Subscribe stream is open.",
        |c| Some(if c.stream_up { 1.0 } else { 0.0 }),
    );
    e.per_channel(
        s,
        t::SNAPSHOT_RUNNING,
        "gauge",
        "1 while the channel's snapshot runs (its stream starts after it).",
        |c| Some(if c.snapshot_running { 1.0 } else { 0.0 }),
    );
    e.per_channel(
        s,
        t::CHECKPOINT_LAG,
        "gauge",
        "Seconds since the checkpoint last caught up, while received events wait for it; else 0.",
        |c| Some(c.checkpoint_lag_ms as f64 / 1000.0),
    );
    e.per_channel(
        s,
        t::LAST_CHECKPOINT,
        "gauge",
        "Unix time of the last checkpoint written.",
        |c| (c.last_checkpoint_unix_ms > 0).then(|| c.last_checkpoint_unix_ms as f64 / 1000.0),
    );
}

/// The delivery reports of the source's Kafka producers: a counter by `result` and the
/// enqueue → report latency histogram.
fn deliveries(e: &mut Exposition, d: &DeliverySnapshot) {
    e.family(
        t::KAFKA_DELIVERIES,
        "counter",
        "Delivery reports of the source's Kafka producers.",
    );
    e.sample(t::KAFKA_DELIVERIES, &[("result", "ok")], d.ok);
    e.sample(t::KAFKA_DELIVERIES, &[("result", "error")], d.failed);
    e.family(
        t::KAFKA_DELIVERY_LATENCY,
        "histogram",
        "Seconds from enqueueing a record to its delivery report.",
    );
    let bucket = format!("{}_bucket", t::KAFKA_DELIVERY_LATENCY);
    let mut cumulative = 0;
    for (bound, count) in t::DELIVERY_LATENCY_BUCKETS.iter().zip(&d.buckets) {
        cumulative += count;
        e.sample(&bucket, &[("le", &bound.to_string())], cumulative);
    }
    e.sample(&bucket, &[("le", "+Inf")], d.count());
    e.sample(
        &format!("{}_sum", t::KAFKA_DELIVERY_LATENCY),
        &[],
        d.sum_seconds,
    );
    e.sample(
        &format!("{}_count", t::KAFKA_DELIVERY_LATENCY),
        &[],
        d.count(),
    );
}

/// The sink's counters, unlabelled, one family each.
fn sink_counters(e: &mut Exposition, k: &SinkSnapshot) {
    let counters = [
        (
            t::SINK_RECORDS_RECEIVED,
            "Write-back records consumed from Kafka.",
            k.received,
        ),
        (
            t::SINK_RECORDS_WRITTEN,
            "Write-back records written to Salesforce.",
            k.written,
        ),
        (
            t::SINK_CONFLICTS,
            "Write-back records not applied: Salesforce held a newer change.",
            k.conflicts,
        ),
        (
            t::SINK_DEAD_LETTERED,
            "Write-back records sent to the dead-letter topic.",
            k.dead_lettered,
        ),
        (
            t::SINK_RETRIES,
            "Per-record retries after retryable Salesforce errors.",
            k.retries,
        ),
        (t::SINK_BATCHES, "Batches written.", k.batches),
        (
            t::SINK_COMPOSITE_CALLS,
            "Composite calls made by the sink.",
            k.composite_calls,
        ),
        (
            t::SINK_DESCRIBE_CALLS,
            "Describe calls made by the sink (once per object per run).",
            k.describe_calls,
        ),
        (
            t::SINK_API_CALLS,
            "Salesforce API calls the sink made (each spends the daily allowance).",
            k.api_calls,
        ),
        (
            t::SINK_API_RETRIES,
            "Whole API calls retried (transport errors, 5xx, 429).",
            k.api_retries,
        ),
        (
            t::SINK_API_RELOGINS,
            "Logins after Salesforce refused the session.",
            k.api_relogins,
        ),
    ];
    for (name, help, value) in counters {
        e.family(name, "counter", help);
        e.sample(name, &[], value);
    }
}

/// The sink's gauges: consumer up, writing paused, API requests remaining (once known).
fn sink_gauges(e: &mut Exposition, k: &SinkSnapshot) {
    e.family(
        t::SINK_CONSUMER_UP,
        "gauge",
        "1 while the sink's Kafka consumer is subscribed and running.",
    );
    e.sample(t::SINK_CONSUMER_UP, &[], u8::from(k.consumer_running));
    e.family(
        t::SINK_API_PAUSED,
        "gauge",
        "1 while writing is held because the daily API allowance is down to the reserve.",
    );
    e.sample(t::SINK_API_PAUSED, &[], u8::from(k.api_paused));
    if let Some(remaining) = k.api_remaining {
        e.family(
            t::SINK_API_REMAINING,
            "gauge",
            "Daily API requests remaining, as Salesforce last reported.",
        );
        e.sample(t::SINK_API_REMAINING, &[], remaining);
    }
}

/// One sample parsed back from a `/metrics` page: the value of `name{labels}` (labels in the
/// order written, e.g. `channel="/data/AccountChangeEvent"`). For tests and tools.
pub fn sample_value(page: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut e = Exposition::default();
    e.sample(name, labels, "");
    let prefix = e.out.trim_end();
    page.lines()
        .find_map(|line| line.strip_prefix(prefix)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::telemetry::PipelineStats;
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::time::Duration;

    fn source() -> StatsSnapshot {
        let stats = PipelineStats::default();
        let channel = stats.channel("/data/Account\"ChangeEvent");
        channel
            .events_received
            .fetch_add(3, std::sync::atomic::Ordering::Relaxed);
        channel
            .topic_counter("salesforce.Account")
            .fetch_add(5, std::sync::atomic::Ordering::Relaxed);
        channel
            .stream_up
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let deliveries = Arc::new(t::DeliveryStats::default());
        deliveries.observe(Duration::from_micros(800), true);
        deliveries.observe(Duration::from_millis(30), true);
        deliveries.observe(Duration::from_secs(20), false);
        stats.register_deliveries(deliveries.clone());
        stats.register_deliveries(deliveries);
        stats.snapshot()
    }

    #[test]
    fn every_family_has_help_and_type_and_samples_are_well_formed() {
        let page = render_metrics(Some(&source()), Some(&SinkSnapshot::default()), Some(true));
        let mut families: BTreeMap<String, (bool, Option<String>)> = BTreeMap::new();
        for line in page.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap().to_owned();
                assert!(
                    families.insert(name, (true, None)).is_none(),
                    "family twice: {line}"
                );
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                let family = families.get_mut(name).expect("TYPE after its HELP");
                assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
                family.1 = Some(kind.to_owned());
                if kind == "counter" {
                    assert!(name.ends_with("_total"), "counter without _total: {name}");
                } else {
                    assert!(!name.ends_with("_total"), "{kind} named _total: {name}");
                }
            } else {
                let (series, value) = line.rsplit_once(' ').expect("name and value");
                value
                    .parse::<f64>()
                    .unwrap_or_else(|_| panic!("bad value in {line:?}"));
                let name = series.split('{').next().unwrap();
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s).filter(|f| families.contains_key(*f)))
                    .unwrap_or(name);
                assert!(
                    families.contains_key(family),
                    "sample before its family: {line}"
                );
                assert!(
                    name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                    "bad metric name {name}"
                );
                if let Some(labels) = series.strip_prefix(name) {
                    assert!(
                        labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}'))
                    );
                }
            }
        }
        assert!(families.values().all(|(_, kind)| kind.is_some()));
        assert!(page.ends_with('\n'));
        // A quote in a label value is escaped.
        assert!(page.contains(
            "forcebridge_source_events_received_total{channel=\"/data/Account\\\"ChangeEvent\"} 3\n"
        ));
    }

    #[test]
    fn values_and_histogram_are_cumulative() {
        let page = render_metrics(Some(&source()), None, None);
        let channel = "/data/Account\"ChangeEvent";
        assert_eq!(
            sample_value(
                &page,
                t::RECORDS_PRODUCED,
                &[("channel", channel), ("topic", "salesforce.Account")]
            ),
            Some(5.0)
        );
        assert_eq!(
            sample_value(&page, t::STREAM_UP, &[("channel", channel)]),
            Some(1.0)
        );
        assert_eq!(
            sample_value(&page, t::CHECKPOINT_LAG, &[("channel", channel)]),
            Some(0.0)
        );
        // No checkpoint yet: no timestamp sample.
        assert_eq!(
            sample_value(&page, t::LAST_CHECKPOINT, &[("channel", channel)]),
            None
        );
        // The producer registered twice counts once.
        let bucket = format!("{}_bucket", t::KAFKA_DELIVERY_LATENCY);
        assert_eq!(sample_value(&page, &bucket, &[("le", "0.001")]), Some(1.0));
        assert_eq!(sample_value(&page, &bucket, &[("le", "0.025")]), Some(1.0));
        assert_eq!(sample_value(&page, &bucket, &[("le", "0.05")]), Some(2.0));
        assert_eq!(sample_value(&page, &bucket, &[("le", "10")]), Some(2.0));
        assert_eq!(sample_value(&page, &bucket, &[("le", "+Inf")]), Some(3.0));
        let count = format!("{}_count", t::KAFKA_DELIVERY_LATENCY);
        assert_eq!(sample_value(&page, &count, &[]), Some(3.0));
        let sum = sample_value(&page, &format!("{}_sum", t::KAFKA_DELIVERY_LATENCY), &[]).unwrap();
        assert!((sum - 20.0308).abs() < 1e-6, "sum {sum}");
        assert_eq!(
            sample_value(&page, t::KAFKA_DELIVERIES, &[("result", "error")]),
            Some(1.0)
        );
        // Parts not given are absent.
        assert!(!page.contains("forcebridge_sink_"));
        assert!(!page.contains(t::KAFKA_REACHABLE));
    }

    #[test]
    fn sink_api_figures_are_reported() {
        let sink = SinkSnapshot {
            api_calls: 11,
            api_retries: 2,
            api_relogins: 1,
            api_paused: true,
            api_remaining: Some(4_321),
            ..SinkSnapshot::default()
        };
        let page = render_metrics(None, Some(&sink), None);
        for (name, value) in [
            (t::SINK_API_CALLS, 11.0),
            (t::SINK_API_RETRIES, 2.0),
            (t::SINK_API_RELOGINS, 1.0),
            (t::SINK_API_PAUSED, 1.0),
            (t::SINK_API_REMAINING, 4_321.0),
        ] {
            assert_eq!(sample_value(&page, name, &[]), Some(value), "{name}");
        }
        // Unknown allowance: no remaining sample.
        let page = render_metrics(None, Some(&SinkSnapshot::default()), None);
        assert_eq!(sample_value(&page, t::SINK_API_REMAINING, &[]), None);
        assert_eq!(sample_value(&page, t::SINK_API_PAUSED, &[]), Some(0.0));
    }
}
