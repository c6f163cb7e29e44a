//! The operations HTTP server: `/metrics`, `/healthz`, `/readyz`.
//!
//! # Contract
//!
//! * [`OpsServer::bind`] binds the configured address (`ops.listen`; port 0 picks a free port)
//!   and reports it through [`OpsServer::local_addr`] before anything is served;
//!   [`OpsServer::serve`] answers until its token fires.
//! * `GET /metrics`: Prometheus text exposition format 0.0.4, rendered at each scrape from the
//!   counters of [`crate::ops::telemetry`] (names defined there only): per `channel` (and `topic`) for
//!   the source, unlabelled for the sink, a delivery-latency histogram of the source's Kafka
//!   producers, and the last Kafka probe. Nothing is cached between scrapes.
//! * `GET /healthz`: 200 `ok` while the process serves HTTP (liveness: no dependency checked).
//! * `GET /readyz`: 200 when every configured source channel has an open Subscribe stream
//!   ([`crate::ops::telemetry::ChannelStats::stream_up`], set by the pipeline's reader), the sink's
//!   consumer is subscribed and running ([`crate::ops::telemetry::SinkStats::consumer_running`]), and
//!   Kafka answered a metadata request within `ops.kafka_probe_timeout` (one probe client, one
//!   probe at a time, a result reused for [`PROBE_REUSE`]). Otherwise 503. Both answer a JSON body
//!   `{"ready": bool, "not_ready": [reasons]}` naming each part that is not ready.

pub mod telemetry;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::kafka::KafkaSettings;
use crate::ops::telemetry::{self as t, PipelineStats, SinkSnapshot, SinkStats, StatsSnapshot};

/// How long a Kafka probe result is reused before `/readyz` asks again.
pub const PROBE_REUSE: Duration = Duration::from_secs(1);

/// `Content-Type` of `/metrics`.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Errors of the operations server.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr} (ops.listen)")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The Kafka probe client could not be created from the settings.
    #[error("creating the Kafka probe client of /readyz")]
    Probe(#[source] rdkafka::error::KafkaError),
    /// Serving failed.
    #[error("serving HTTP")]
    Serve(#[source] std::io::Error),
}

/// What the server reports on: the source's and the sink's counters, and Kafka.
pub struct OpsState {
    /// The source's counters and its configured channels.
    source: Option<(Arc<PipelineStats>, Vec<String>)>,
    sink: Option<Arc<SinkStats>>,
    kafka: KafkaProbe,
}

impl OpsState {
    /// A state probing the Kafka cluster of `settings`, reporting on nothing else yet.
    pub fn new(settings: &KafkaSettings, probe_timeout: Duration) -> Result<OpsState, OpsError> {
        Ok(OpsState {
            source: None,
            sink: None,
            kafka: KafkaProbe::new(settings, probe_timeout)?,
        })
    }

    /// The state of `config`: its Kafka, its source channels (when `source` is given and the
    /// config has a source) and its sink (when `sink` is given and the config has a sink).
    pub fn for_config(
        config: &Config,
        source: Option<Arc<PipelineStats>>,
        sink: Option<Arc<SinkStats>>,
    ) -> Result<OpsState, OpsError> {
        let timeout = config
            .ops
            .as_ref()
            .map_or(Duration::from_secs(2), |ops| ops.kafka_probe_timeout);
        let mut state = OpsState::new(&config.kafka.settings(), timeout)?;
        if let (Some(stats), Some(cfg)) = (source, config.source.as_ref()) {
            let channels = cfg.channels.iter().map(|c| c.name.clone()).collect();
            state = state.with_source(stats, channels);
        }
        if let (Some(stats), Some(_)) = (sink, config.sink.as_ref()) {
            state = state.with_sink(stats);
        }
        Ok(state)
    }

    /// Reports on a source pipeline whose configured channels are `channels`.
    pub fn with_source(mut self, stats: Arc<PipelineStats>, channels: Vec<String>) -> OpsState {
        self.source = Some((stats, channels));
        self
    }

    /// Reports on a sink.
    pub fn with_sink(mut self, stats: Arc<SinkStats>) -> OpsState {
        self.sink = Some(stats);
        self
    }

    /// The `/readyz` verdict: the reasons it is not ready (empty when ready).
    pub async fn not_ready(&self) -> Vec<String> {
        let mut reasons = Vec::new();
        if let Some((stats, channels)) = &self.source {
            let snapshot = stats.snapshot();
            for channel in channels {
                if !snapshot.channels.get(channel).is_some_and(|c| c.stream_up) {
                    reasons.push(format!(
                        "source channel {channel}: no open Subscribe stream"
                    ));
                }
            }
        }
        if let Some(sink) = &self.sink
            && !sink.snapshot().consumer_running
        {
            reasons.push("sink: the Kafka consumer is not running".to_owned());
        }
        if let Err(reason) = self.kafka.probe().await {
            reasons.push(format!("kafka: {reason}"));
        }
        reasons
    }

    /// The `/metrics` page.
    pub fn metrics(&self) -> String {
        let source = self.source.as_ref().map(|(stats, _)| stats.snapshot());
        let sink = self.sink.as_ref().map(|stats| stats.snapshot());
        render_metrics(source.as_ref(), sink.as_ref(), self.kafka.last())
    }
}

/// Asks Kafka for metadata through one long-lived client; one probe at a time.
struct KafkaProbe {
    client: Arc<BaseConsumer>,
    timeout: Duration,
    /// The last probe: when, and its outcome.
    last: tokio::sync::Mutex<Option<(Instant, Result<(), String>)>>,
    /// The last outcome, readable without waiting (for `/metrics`).
    reachable: std::sync::Mutex<Option<bool>>,
}

impl KafkaProbe {
    fn new(settings: &KafkaSettings, timeout: Duration) -> Result<KafkaProbe, OpsError> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &settings.bootstrap_servers)
            // Notice a broker back within a second or so, not librdkafka's default 10 s.
            .set("reconnect.backoff.max.ms", "1000")
            .set("log_level", "3");
        for (k, v) in &settings.properties {
            config.set(k, v);
        }
        let client = config.create().map_err(OpsError::Probe)?;
        Ok(KafkaProbe {
            client: Arc::new(client),
            timeout,
            last: tokio::sync::Mutex::new(None),
            reachable: std::sync::Mutex::new(None),
        })
    }

    /// `Ok` when Kafka answered a metadata request (within the last [`PROBE_REUSE`]).
    async fn probe(&self) -> Result<(), String> {
        let mut last = self.last.lock().await;
        if let Some((at, outcome)) = last.as_ref()
            && at.elapsed() < PROBE_REUSE
        {
            return outcome.clone();
        }
        let client = self.client.clone();
        let timeout = self.timeout;
        let outcome = tokio::task::spawn_blocking(move || {
            client
                .fetch_metadata(None, timeout)
                .map(|_| ())
                .map_err(|err| format!("no metadata answer within {timeout:?}: {err}"))
        })
        .await
        .unwrap_or_else(|err| Err(format!("probe task failed: {err}")));
        *self.reachable.lock().unwrap_or_else(|e| e.into_inner()) = Some(outcome.is_ok());
        *last = Some((Instant::now(), outcome.clone()));
        outcome
    }

    /// The outcome of the last probe, if any.
    fn last(&self) -> Option<bool> {
        *self.reachable.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A bound, not yet serving, operations server.
pub struct OpsServer {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    state: Arc<OpsState>,
}

impl OpsServer {
    /// Binds `addr` (port 0: any free port).
    pub async fn bind(addr: SocketAddr, state: OpsState) -> Result<OpsServer, OpsError> {
        let bind_error = |source| OpsError::Bind { addr, source };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(bind_error)?;
        let addr = listener.local_addr().map_err(bind_error)?;
        Ok(OpsServer {
            listener,
            addr,
            state: Arc::new(state),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `stop` fires.
    pub async fn serve(self, stop: CancellationToken) -> Result<(), OpsError> {
        let app = Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .with_state(self.state);
        axum::serve(self.listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
            .map_err(OpsError::Serve)
    }
}

async fn metrics(State(state): State<Arc<OpsState>>) -> Response {
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        state.metrics(),
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<Arc<OpsState>>) -> Response {
    let reasons = state.not_ready().await;
    let status = if reasons.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({ "ready": reasons.is_empty(), "not_ready": reasons });
    (status, axum::Json(body)).into_response()
}

// ---------------------------------------------------------------------------------------------
// Exposition
// ---------------------------------------------------------------------------------------------

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
pub fn render_metrics(
    source: Option<&StatsSnapshot>,
    sink: Option<&SinkSnapshot>,
    kafka_reachable: Option<bool>,
) -> String {
    let mut e = Exposition::default();
    if let Some(s) = source {
        let counters: [ChannelCounter; 12] = [
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
        ];
        for (name, help, value) in counters {
            e.per_channel(s, name, "counter", help, |c| Some(value(c) as f64));
        }
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
        e.per_channel(
            s,
            t::STREAM_UP,
            "gauge",
            "1 while a Subscribe stream is open.",
            |c| Some(if c.stream_up { 1.0 } else { 0.0 }),
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
        e.family(t::SCHEMAS_FETCHED, "counter", "GetSchema calls.");
        e.sample(t::SCHEMAS_FETCHED, &[], s.schemas_fetched);

        let d = &s.deliveries;
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
    if let Some(k) = sink {
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
    use std::collections::BTreeMap;
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
