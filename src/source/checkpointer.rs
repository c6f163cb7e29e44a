//! The checkpointer of a channel in at-least-once mode.
//!
//! Contract: every `checkpoint_interval`, and once more when the attempt ends (after letting
//! in-flight records land within `drain_timeout`), [`checkpoint_loop`] writes the window's durable
//! replay id (every earlier event acknowledged by Kafka) to the checkpoint topic, when it moved.
//! Keepalive `latest_replay_id`s pass through the window too, so they are checkpointed in order.
//! A write Kafka does not acknowledge restarts the channel from the last saved checkpoint.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::error::AttemptError;
use super::setup::Shared;
use crate::config::ChannelConfig;
use crate::kafka::{AckWindow, Producer};
use crate::ops::telemetry::ChannelStats;

/// Writes the durable replay id every `checkpoint_interval`, and once more when the attempt ends.
pub(super) async fn checkpoint_loop(
    shared: &Shared,
    channel: &ChannelConfig,
    producer: &Producer,
    stats: &ChannelStats,
    window: &AckWindow,
    cancel: &CancellationToken,
) -> Result<(), AttemptError> {
    let mut last_saved: Option<Bytes> = shared.checkpoints.get(&channel.name).map(|c| c.replay_id);
    let mut ticker = tokio::time::interval(shared.source().checkpoint_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            _ = cancel.cancelled() => true,
            _ = ticker.tick() => false,
        };
        if stopping {
            // Drain: let in-flight records land (bounded), then write the final position.
            let drain = shared.config.drain_timeout;
            let _ = tokio::time::timeout(drain, async {
                let _ = producer.flush(drain).await;
                window.wait_idle().await;
            })
            .await;
        }
        let since = crate::ops::telemetry::unix_millis();
        let idle = window.in_flight() == 0;
        if let Some(durable) = window.durable()
            && last_saved.as_ref() != Some(&durable)
        {
            shared
                .checkpoints
                .save_with(&channel.name, &durable, window.durable_at(), None)
                .await
                // Kafka unreachable for longer than a delivery may wait: restart the channel from
                // the last saved checkpoint (after a backoff) rather than stop.
                .map_err(|err| AttemptError::Restart(crate::ops::telemetry::error_chain(&err)))?;
            stats.checkpoints_written.fetch_add(1, Ordering::Relaxed);
            stats.note_caught_up(since, true);
            last_saved = Some(durable);
        } else if idle {
            stats.note_caught_up(since, false);
        }
        if stopping {
            return Ok(());
        }
    }
}
