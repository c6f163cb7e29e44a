//! The supervisor: one task per channel, each a series of attempts.
//!
//! Contract: [`run`] sets the source up ([`super::setup`]), then runs every channel in a task of
//! its own until `cancel` fires (then drains) or one channel fails for good, which stops the
//! others; at the end each producer is flushed within `drain_timeout`. A channel's attempt runs
//! the reader, the processor and the checkpointer from the durable checkpoint; a delivery failure
//! (Kafka did not acknowledge a record) aborts the open transaction in exactly-once mode and
//! restarts the channel after a backoff; anything fatal stops the pipeline.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, info_span, warn};

use super::checkpointer::checkpoint_loop;
use super::error::{AttemptError, PipelineError};
use super::processor::process;
use super::reader::{Item, read_stream};
use super::setup::{Shared, connect};
use super::transactions::{attempt_transaction_error, transaction_error};
use crate::config::{Config, InitialReplay};
use crate::kafka::AckWindow;
use crate::ops::telemetry::{ChannelStats, PipelineStats};
use crate::retry::{Backoff, sleep_or_cancel};
use crate::salesforce::pubsub::ReplayStart;

/// Runs the source pipeline until `cancel` fires (then drains) or a fatal error occurs.
pub async fn run(
    config: impl Into<Arc<Config>>,
    stats: Arc<PipelineStats>,
    cancel: CancellationToken,
) -> Result<(), PipelineError> {
    let Some(shared) = connect(config.into(), stats, &cancel).await? else {
        return Ok(());
    };

    let failed = cancel.child_token();
    let mut tasks = JoinSet::new();
    for index in 0..shared.source().channels.len() {
        let shared = shared.clone();
        let cancel = failed.clone();
        let name = shared.source().channels[index].name.clone();
        tasks.spawn(
            async move { run_channel(&shared, index, cancel).await }
                .instrument(info_span!("channel", channel = %name)),
        );
    }
    let mut result = Ok(());
    while let Some(joined) = tasks.join_next().await {
        let outcome = joined.unwrap_or_else(|panic| {
            Err(PipelineError::Channel {
                channel: "?".into(),
                message: format!("task panicked: {panic}"),
            })
        });
        if let Err(err) = outcome {
            error!(error = %err, "channel stopped");
            if result.is_ok() {
                result = Err(err);
            }
            failed.cancel();
        }
    }
    for producer in &shared.producers {
        if let Err(err) = producer.flush(shared.config.drain_timeout).await {
            warn!(error = %err, "Kafka flush at shutdown did not complete");
        }
    }
    result
}

/// One channel: attempts that each run reader + processor + checkpointer from the durable
/// checkpoint, until cancelled or a fatal error.
async fn run_channel(
    shared: &Arc<Shared>,
    index: usize,
    cancel: CancellationToken,
) -> Result<(), PipelineError> {
    let channel = &shared.source().channels[index];
    let stats = shared.stats.channel(&channel.name);
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    loop {
        // A snapshot first (or its resume): it ends with the checkpoint at the position it fixed.
        let snapshot = async {
            if super::snapshot::needed(shared, index) {
                super::snapshot::run(shared, index, &stats, &cancel).await
            } else {
                Ok(())
            }
        };
        let start = match snapshot.await {
            Err(err) => Err(err),
            Ok(()) if cancel.is_cancelled() => return Ok(()),
            Ok(()) => Ok(match shared.checkpoints.get(&channel.name) {
                // A channel that never carried an event: every event retained is newer than the
                // position fixed for the snapshot.
                Some(checkpoint) if checkpoint.replay_id.is_empty() => ReplayStart::Earliest,
                Some(checkpoint) => ReplayStart::After(checkpoint.replay_id),
                None => match channel.initial_replay {
                    InitialReplay::Latest => ReplayStart::Latest,
                    InitialReplay::Earliest => ReplayStart::Earliest,
                },
            }),
        };
        let attempt = match start {
            Ok(start) => {
                info!(?start, "starting channel");
                run_attempt(shared, index, &stats, start, &cancel).await
            }
            Err(err) => Err(err),
        };
        match attempt {
            Ok(()) => return Ok(()),
            Err(AttemptError::Stop(err)) => return Err(err),
            Err(AttemptError::Resync { rejected, reason }) => {
                // The attempt's transaction (exactly-once) ended with it; the resync's own
                // transactions begin with its first step.
                let begun = super::snapshot::begin_resync(
                    shared, index, &stats, &rejected, &reason, &cancel,
                )
                .await;
                match begun {
                    Ok(()) => {}
                    Err(AttemptError::Stop(err)) => return Err(err),
                    // Kafka refused a step: the checkpoint still names the rejected replay id,
                    // so the next round is refused again and begins the resync again.
                    Err(other) => {
                        let delay = backoff.next_delay();
                        warn!(reason = ?other, ?delay, "beginning the resync failed; trying again");
                        if !sleep_or_cancel(delay, &cancel).await {
                            return Ok(());
                        }
                    }
                }
            }
            Err(AttemptError::Restart(reason)) => {
                let producer = &shared.producers[index];
                if producer.transactional_id().is_some() {
                    warn!(%reason, "aborting the channel's Kafka transaction");
                    if let Err(err) = producer
                        .abort_transaction(shared.config.drain_timeout)
                        .await
                    {
                        return Err(transaction_error(&channel.name, err));
                    }
                }
                let delay = backoff.next_delay();
                warn!(%reason, ?delay, "restarting the channel from its checkpoint");
                if !sleep_or_cancel(delay, &cancel).await {
                    return Ok(());
                }
            }
        }
    }
}

/// One attempt of a channel: the reader in a task of its own, so that it tops credits up and
/// decodes the next response while the processor works (on the other core), and the processor
/// with the checkpointer in this one. Either side ending ends the attempt.
async fn run_attempt(
    shared: &Arc<Shared>,
    index: usize,
    stats: &Arc<ChannelStats>,
    start: ReplayStart,
    cancel: &CancellationToken,
) -> Result<(), AttemptError> {
    let channel = &shared.source().channels[index];
    let producer = &shared.producers[index];
    let transactions = producer.transactional_id().is_some();
    if transactions {
        producer
            .begin_transaction()
            .await
            .map_err(|err| attempt_transaction_error(&channel.name, err))?;
    }
    let window = AckWindow::new();
    let attempt = cancel.child_token();
    // However this attempt ends (even dropped), its reader task stops with it.
    let _stop_reader = attempt.clone().drop_guard();
    let capacity = shared.source().batch_size as usize;
    let (tx, rx) = mpsc::channel::<Item>(capacity);

    let reader = tokio::spawn(
        {
            let shared = shared.clone();
            let stats = stats.clone();
            let attempt = attempt.clone();
            async move {
                let channel = &shared.source().channels[index];
                let read = read_stream(&shared, channel, &stats, start, tx, &attempt).await;
                attempt.cancel();
                read
            }
        }
        .in_current_span(),
    );
    let processor = process(shared, channel, producer, stats, &window, rx, &attempt);
    // In exactly-once mode the processor commits the checkpoints inside its transactions.
    let checkpointer = async {
        if transactions {
            Ok(())
        } else {
            checkpoint_loop(shared, channel, producer, stats, &window, &attempt).await
        }
    };
    let (read, processed, checkpointed) = tokio::join!(
        async {
            reader.await.unwrap_or_else(|panic| {
                attempt.cancel();
                Err(AttemptError::Stop(PipelineError::Channel {
                    channel: channel.name.clone(),
                    message: format!("the reader task panicked: {panic}"),
                }))
            })
        },
        async {
            let r = processor.await;
            attempt.cancel();
            r
        },
        checkpointer
    );
    read.and(processed).and(checkpointed)
}
