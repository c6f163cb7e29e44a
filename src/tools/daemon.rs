//! `forcebridge run`: the daemon. Runs the source and/or the sink of a config, and the operations
//! server when `ops` is configured, until the token fires or one side fails.
//!
//! Contract: the operations server is bound before anything starts (a taken port fails the start,
//! not a probe later) and serves through the drain; one side failing cancels the other (the pod
//! restarts as a whole); when both have stopped, the server stops and the counters are logged.
//! The result is the source's error, else the sink's. Logs under the binary's target
//! (`forcebridge`), as when this body lived in `main.rs`.

use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::config::Config;
use crate::ops::telemetry::{self, PipelineStats, SinkStats};
use crate::ops::{OpsError, OpsServer, OpsState, ServerLimits};
use crate::sink::SinkError;
use crate::source::PipelineError;

/// Why the daemon stopped.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The source stopped with an error (the sink was stopped too).
    #[error("source stopped")]
    Source(#[source] PipelineError),
    /// The sink stopped with an error (the source was stopped too).
    #[error("sink stopped")]
    Sink(#[source] SinkError),
    /// The operations server could not start.
    #[error(transparent)]
    Ops(#[from] OpsError),
}

/// The log target of the daemon's own lines.
const TARGET: &str = "forcebridge";

/// Runs the daemon of `config` until `cancel` (a signal) or a failure.
pub async fn run(config: Arc<Config>, cancel: CancellationToken) -> Result<(), DaemonError> {
    let stats = Arc::new(PipelineStats::default());
    let sink_stats = Arc::new(SinkStats::default());
    // Bound before anything starts: a taken port fails the start, not a probe later.
    let ops = start_ops(&config, &stats, &sink_stats).await?;
    // One side failing stops the other: the pod restarts as a whole.
    let source = async {
        if config.source.is_none() {
            return Ok(());
        }
        let result = crate::source::run(config.clone(), stats.clone(), cancel.clone()).await;
        if result.is_err() {
            cancel.cancel();
        }
        result.map_err(DaemonError::Source)
    };
    let sink = async {
        if config.sink.is_none() {
            return Ok(());
        }
        let result = crate::sink::run(config.clone(), sink_stats.clone(), cancel.clone()).await;
        if result.is_err() {
            cancel.cancel();
        }
        result.map_err(DaemonError::Sink)
    };
    let (source, sink) = tokio::join!(source, sink);
    // Served through the drain; stopped once both sides are done.
    if let Some((stop, server)) = ops {
        stop.cancel();
        if let Ok(Err(err)) = server.await {
            error!(target: TARGET, error = %telemetry::error_chain(&err), "the ops server failed");
        }
    }
    let snapshot = stats.snapshot();
    let sunk = sink_stats.snapshot();
    info!(
        target: TARGET,
        events = snapshot.events_received(),
        records = snapshot.records_produced(),
        dead_lettered = snapshot.events_dead_lettered(),
        written_back = sunk.written,
        conflicts = sunk.conflicts,
        write_back_dead_lettered = sunk.dead_lettered,
        "stopped"
    );
    source.and(sink)
}

/// A serving operations server: the token that stops it, and its task.
type Serving = (CancellationToken, JoinHandle<Result<(), OpsError>>);

/// The operations server of `config.ops`, bound and serving (its stop token and task); `None`
/// without `ops`.
async fn start_ops(
    config: &Config,
    stats: &Arc<PipelineStats>,
    sink_stats: &Arc<SinkStats>,
) -> Result<Option<Serving>, OpsError> {
    let Some(ops) = &config.ops else {
        return Ok(None);
    };
    let state = OpsState::for_config(config, Some(stats.clone()), Some(sink_stats.clone()))?;
    let server = OpsServer::bind(ops.listen, state)
        .await?
        .with_limits(ServerLimits::from(ops));
    info!(target: TARGET, addr = %server.local_addr(), "serving /metrics, /healthz, /readyz");
    let stop = CancellationToken::new();
    Ok(Some((stop.clone(), tokio::spawn(server.serve(stop)))))
}
