//! The operations HTTP server: `/metrics`, `/healthz`, `/readyz`.
//!
//! # Contract
//!
//! * [`OpsServer::bind`] binds the configured address (`ops.listen`; port 0 picks a free port)
//!   and reports it through [`OpsServer::local_addr`] before anything is served;
//!   [`OpsServer::serve`] answers until its token fires, within [`ServerLimits`] (`ops/server.rs`:
//!   a header-read timeout, a request timeout, a connection limit that closes the oldest idle or
//!   half-sent connection first, so a flood cannot starve `/healthz`).
//! * `GET /metrics`: Prometheus text exposition format 0.0.4, rendered at each scrape from the
//!   counters of [`crate::ops::telemetry`] (names defined there only): per `channel` (and `topic`) for
//!   the source, unlabelled for the sink, a delivery-latency histogram of the source's Kafka
//!   producers, and the last Kafka probe. Nothing is cached between scrapes. The page itself is
//!   written by `ops/metrics.rs` ([`sample_value`] reads it back).
//! * `GET /healthz`: 200 `ok` while the process serves HTTP (liveness: no dependency checked).
//! * `GET /readyz`: 200 when every configured source channel has an open Subscribe stream
//!   ([`crate::ops::telemetry::ChannelStats::stream_up`], set by the pipeline's reader) or runs
//!   its snapshot (`snapshot_running`: the stream follows it), the sink's
//!   consumer is subscribed and running ([`crate::ops::telemetry::SinkStats::consumer_running`]), and
//!   Kafka answered a metadata request within `ops.kafka_probe_timeout` (one probe client, one
//!   probe at a time, a result reused for `PROBE_REUSE`), no transient failure is being
//!   retried (`"source: salesforce login: retrying after HTTP 503 …"`, [`telemetry::Retrying`]).
//!   and nothing is stalled: no channel's
//!   received events have waited longer than `ops.stall_after` (beyond
//!   `source.checkpoint_interval`) for Kafka, and the sink has not held fetched records for
//!   longer than `ops.stall_after` with none finished ([`progress::SinkProgress`]). Otherwise
//!   503. Both answer a JSON body
//!   `{"ready": bool, "not_ready": [reasons]}` naming each part that is not ready.

pub mod full_record;
mod logging;
mod metrics;
pub mod progress;
mod retrying;
mod server;
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
use crate::ops::telemetry::{PipelineStats, SinkStats};

pub(crate) use metrics::render_metrics;
pub use metrics::sample_value;
pub use server::ServerLimits;

/// How long a Kafka probe result is reused before `/readyz` asks again.
pub(crate) const PROBE_REUSE: Duration = Duration::from_secs(1);

/// `Content-Type` of `/metrics`.
pub(crate) const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

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
    /// How long without progress makes a channel or the sink not ready (`ops.stall_after`), and
    /// the source's checkpoint interval (the lag a channel has in normal flow).
    stall_after: Duration,
    checkpoint_interval: Duration,
}

impl OpsState {
    /// A state probing the Kafka cluster of `settings`, reporting on nothing else yet.
    pub fn new(settings: &KafkaSettings, probe_timeout: Duration) -> Result<OpsState, OpsError> {
        Ok(OpsState {
            source: None,
            sink: None,
            kafka: KafkaProbe::new(settings, probe_timeout)?,
            stall_after: crate::config::default_stall_after(),
            checkpoint_interval: Duration::ZERO,
        })
    }

    /// Progress readiness: not ready after `stall_after` without progress (`ops.stall_after`),
    /// a source channel's lag counted beyond `checkpoint_interval`.
    pub fn with_stall_after(
        mut self,
        stall_after: Duration,
        checkpoint_interval: Duration,
    ) -> Self {
        self.stall_after = stall_after;
        self.checkpoint_interval = checkpoint_interval;
        self
    }

    /// The state of `config`: its Kafka, its source channels (when `source` is given and the
    /// config has a source) and its sink (when `sink` is given and the config has a sink).
    pub(crate) fn for_config(
        config: &Config,
        source: Option<Arc<PipelineStats>>,
        sink: Option<Arc<SinkStats>>,
    ) -> Result<OpsState, OpsError> {
        let timeout = config
            .ops
            .as_ref()
            .map_or(Duration::from_secs(2), |ops| ops.kafka_probe_timeout);
        let stall_after = config
            .ops
            .as_ref()
            .map_or(crate::config::default_stall_after(), |ops| ops.stall_after);
        let checkpoint_interval = config
            .source
            .as_ref()
            .map_or(Duration::ZERO, |s| s.checkpoint_interval);
        let mut state = OpsState::new(&crate::kafka::KafkaSettings::from(&config.kafka), timeout)?
            .with_stall_after(stall_after, checkpoint_interval);
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
    pub(crate) fn with_sink(mut self, stats: Arc<SinkStats>) -> OpsState {
        self.sink = Some(stats);
        self
    }

    /// The `/readyz` verdict: the reasons it is not ready (empty when ready).
    pub(crate) async fn not_ready(&self) -> Vec<String> {
        let mut reasons = Vec::new();
        if let Some((stats, channels)) = &self.source {
            let snapshot = stats.snapshot();
            let stalled = (self.stall_after + self.checkpoint_interval).as_millis() as u64;
            for channel in channels {
                let stats = snapshot.channels.get(channel);
                // A channel loading its snapshot streams after it: working, not down.
                if !stats.is_some_and(|c| c.stream_up || c.snapshot_running) {
                    reasons.push(format!(
                        "source channel {channel}: no open Subscribe stream"
                    ));
                }
                if let Some(lag) = stats.map(|c| c.checkpoint_lag_ms).filter(|&l| l > stalled) {
                    reasons.push(format!(
                        "source channel {channel}: received events have waited {} s for Kafka to acknowledge them (ops.stall_after {:?})",
                        lag / 1000,
                        self.stall_after
                    ));
                }
            }
        }
        if let Some(sink) = &self.sink {
            if !sink.snapshot().consumer_running {
                reasons.push("sink: the Kafka consumer is not running".to_owned());
            }
            let now = telemetry::unix_millis();
            if let Some(ms) = sink
                .progress
                .stalled_for(now)
                .filter(|&ms| ms > self.stall_after.as_millis() as u64)
            {
                reasons.push(format!(
                    "sink: {} fetched records held for {} s with none finished (ops.stall_after {:?})",
                    sink.progress.in_flight(),
                    ms / 1000,
                    self.stall_after
                ));
            }
        }
        for retrying in self.retrying() {
            reasons.extend(retrying.not_ready());
        }
        if let Err(reason) = self.kafka.probe().await {
            reasons.push(format!("kafka: {reason}"));
        }
        reasons
    }

    /// The `/metrics` page.
    pub(crate) fn metrics(&self) -> String {
        let source = self.source.as_ref().map(|(stats, _)| stats.snapshot());
        let sink = self.sink.as_ref().map(|stats| stats.snapshot());
        let mut page = render_metrics(source.as_ref(), sink.as_ref(), self.kafka.last());
        page.push_str(&retrying::render(&self.retrying()));
        page
    }

    /// The transient failures each side reports (source, then sink).
    fn retrying(&self) -> Vec<&telemetry::Retrying> {
        let source = self.source.as_ref().map(|(stats, _)| &*stats.retrying);
        let sink = self.sink.as_ref().map(|stats| &*stats.retrying);
        source.into_iter().chain(sink).collect()
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
    limits: ServerLimits,
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
            limits: ServerLimits::default(),
        })
    }

    /// Serves within `limits` instead of the defaults.
    pub fn with_limits(mut self, limits: ServerLimits) -> OpsServer {
        self.limits = limits;
        self
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
        server::serve(self.listener, app, self.limits, stop)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::telemetry::unix_millis;

    /// A state whose Kafka probe fails fast (nothing listens on port 1); only the other reasons
    /// are looked at.
    fn state() -> OpsState {
        let settings = KafkaSettings {
            bootstrap_servers: "127.0.0.1:1".to_owned(),
            properties: Default::default(),
        };
        OpsState::new(&settings, Duration::from_millis(100))
            .unwrap()
            .with_stall_after(Duration::from_secs(60), Duration::from_secs(1))
    }

    fn stalls(reasons: &[String]) -> Vec<&String> {
        reasons
            .iter()
            .filter(|r| r.contains("ops.stall_after"))
            .collect()
    }

    #[tokio::test]
    async fn a_sink_holding_records_with_none_finished_is_not_ready() {
        let stats = Arc::new(SinkStats::default());
        stats
            .consumer_running
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let state = state().with_sink(stats.clone());
        let now = unix_millis();
        stats.progress.note(5, 0, now - 120_000);
        stats.progress.note(5, 0, now - 1_000);
        let reasons = state.not_ready().await;
        let stalled = stalls(&reasons);
        assert_eq!(stalled.len(), 1, "{reasons:?}");
        assert!(
            stalled[0].starts_with("sink: 5 fetched records held for 12"),
            "{reasons:?}"
        );
        // A record finished: progress.
        stats.progress.note(5, 1, unix_millis());
        assert!(stalls(&state.not_ready().await).is_empty());
    }

    #[tokio::test]
    async fn a_channel_whose_events_wait_for_kafka_is_not_ready() {
        let stats = Arc::new(PipelineStats::default());
        let state = state().with_source(stats.clone(), vec!["/data/A".into(), "/data/B".into()]);
        let (a, b) = (stats.channel("/data/A"), stats.channel("/data/B"));
        // /data/A: caught up 200 s ago, events received since, none durable.
        a.note_caught_up(unix_millis() - 200_000, true);
        a.note_event();
        // /data/B: events received, caught up just now.
        b.note_event();
        b.note_caught_up(unix_millis(), true);
        let reasons = state.not_ready().await;
        let stalled = stalls(&reasons);
        assert_eq!(stalled.len(), 1, "{reasons:?}");
        assert!(
            stalled[0].starts_with("source channel /data/A: received events have waited"),
            "{reasons:?}"
        );
    }
}
