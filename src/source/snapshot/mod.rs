//! The snapshot: a channel's objects loaded into their topics before the channel streams, handed
//! off to the stream without losing a change (see `ARCHITECTURE.md`, "Snapshot").
//!
//! Contract:
//! * [`needed`]: a channel snapshots when its checkpoint holds a snapshot under way (a resume),
//!   or when it has no checkpoint and `snapshot: initial`.
//! * [`run`]: first the stream position is fixed ([`position::fix_position`]) and saved in the
//!   checkpoint with the snapshot's progress ([`progress::SnapshotProgress`]), before any row is
//!   read; then each object is read ([`read`]) into its topic (the channel's topic template),
//!   keyed by Id, operation `READ`, with `commit_timestamp` = the row's `SystemModstamp`. Progress
//!   (the Bulk API 2.0 job, the locator of the next page, rows) is saved only once Kafka holds
//!   every row before it; in exactly-once mode each page and its progress are one Kafka
//!   transaction. Last the checkpoint is saved at the fixed position without a snapshot, and the
//!   channel streams after it: a change made while the snapshot ran comes after the rows in the
//!   topic, so applying a topic in order (or keeping the newest `commit_timestamp` per Id) builds
//!   the object exactly.
//! * A crash resumes: the same fixed position, objects done are skipped, a Bulk job continues at
//!   the saved locator (a job the org no longer has starts again), a REST read starts again.
//!   Rows may repeat (at least once), none are lost.
//! * Errors ([`SnapshotError`]): Kafka not acknowledging, a checkpoint not saved restart the
//!   channel (the snapshot resumes); the org refusing a query, a describe or a schema stops the
//!   pipeline with the object named; a row that does not fit the schema is dead-lettered
//!   (stage `snapshot`) and the snapshot goes on.

mod bulk;
pub(crate) mod columns;
mod commit;
pub(crate) mod deletes;
mod position;
pub mod progress;
mod read;
mod rows;
mod schema;

use std::sync::Arc;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::error::{AttemptError, PipelineError};
use super::setup::Shared;
use crate::config::SnapshotMode;
use crate::kafka::KafkaError;
use crate::ops::telemetry::ChannelStats;
use crate::salesforce::rest::RestError;
use crate::source::checkpoint::CheckpointError;
use crate::source::shape::ShapeError;
use progress::{ObjectState, SnapshotProgress};

/// Why a snapshot could not go on.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The org refused a call about an object (after the client's retries).
    #[error("snapshot of {object}: {source}")]
    Rest {
        object: String,
        #[source]
        source: RestError,
    },
    /// The object's change event schema cannot be had.
    #[error("snapshot of {object}: {reason}")]
    Schema { object: String, reason: String },
    /// The object cannot be queried as its schema says.
    #[error(transparent)]
    Shape(#[from] ShapeError),
    /// A row could not be handed to Kafka.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// Kafka did not acknowledge a row.
    #[error("Kafka did not acknowledge a snapshot row: {0}")]
    Delivery(String),
    /// The progress could not be saved.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// A Kafka transaction step failed (exactly-once mode).
    #[error("{0}")]
    Transaction(String),
    /// Shutdown interrupted the snapshot.
    #[error("cancelled")]
    Cancelled,
}

impl SnapshotError {
    /// What the channel does after it: the one place that decides.
    fn into_attempt(self, channel: &str) -> Option<AttemptError> {
        match self {
            SnapshotError::Cancelled => None,
            SnapshotError::Kafka(_)
            | SnapshotError::Delivery(_)
            | SnapshotError::Checkpoint(_)
            | SnapshotError::Transaction(_) => Some(AttemptError::Restart(self.to_string())),
            SnapshotError::Rest { .. } | SnapshotError::Schema { .. } | SnapshotError::Shape(_) => {
                Some(AttemptError::Stop(PipelineError::Channel {
                    channel: channel.to_owned(),
                    message: self.to_string(),
                }))
            }
        }
    }
}

/// Begins a resync of channel `index` after the org rejected its checkpoint's replay id
/// `rejected` (`source.replay_rejected: resync`): fixes a new position, then saves it with a
/// snapshot limited to what changed since the checkpoint's commit timestamp minus
/// `source.snapshot.resync_margin` (everything, for a checkpoint without one) and a marker in
/// the dead-letter topic (stage `replay`, `resumed_from: resync`), together. The channel's next
/// round runs the snapshot ([`run`]), then streams.
pub(super) async fn begin_resync(
    shared: &Arc<Shared>,
    index: usize,
    stats: &Arc<ChannelStats>,
    rejected: &[u8],
    reason: &str,
    cancel: &CancellationToken,
) -> Result<(), AttemptError> {
    let channel = &shared.source().channels[index];
    let margin = i64::try_from(shared.source().snapshot.resync_margin.as_millis()).unwrap_or(0);
    let now = crate::ops::telemetry::unix_millis() as i64;
    let since = shared
        .checkpoints
        .get(&channel.name)
        .and_then(|c| c.commit_timestamp)
        .map(|at| columns::resync_start(at - margin, now));
    stats
        .resyncs
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let Some(position) = position::fix_position(shared, &channel.name, cancel).await? else {
        return Ok(());
    };
    let mut progress = SnapshotProgress::new(&channel.snapshot_objects(), now);
    progress.since = since;
    info!(since = ?since, replay_id = %hex::encode(&position), "resync begins: rows changed since the checkpoint, then the stream");
    let mut committer = commit::Committer::new(shared, index, stats);
    let saved = async {
        let handle = committer.page().await?;
        let policy = crate::config::ReplayRejectedPolicy::Resync;
        super::dead_letters::send_gap_marker(
            shared,
            committer.producer(),
            &channel.name,
            rejected,
            policy,
            reason,
            &handle,
        )
        .await?;
        handle.seal();
        committer
            .save(&position, progress.started_at, Some(&progress))
            .await
    };
    match saved.await {
        Ok(()) => Ok(()),
        Err(err) => err.into_attempt(&channel.name).map_or(Ok(()), Err),
    }
}

/// True when channel `index` must snapshot before it streams.
pub(super) fn needed(shared: &Shared, index: usize) -> bool {
    let channel = &shared.source().channels[index];
    match shared.checkpoints.get(&channel.name) {
        Some(checkpoint) => checkpoint.snapshot.is_some(),
        None => channel.snapshot == SnapshotMode::Initial,
    }
}

/// Runs (or resumes) the snapshot of channel `index`; `Ok(())` once the checkpoint holds the
/// fixed position without a snapshot, or when cancelled.
pub(super) async fn run(
    shared: &Arc<Shared>,
    index: usize,
    stats: &Arc<ChannelStats>,
    cancel: &CancellationToken,
) -> Result<(), AttemptError> {
    let channel = &shared.source().channels[index];
    let mut committer = commit::Committer::new(shared, index, stats);
    let resumed = shared
        .checkpoints
        .get(&channel.name)
        .and_then(|c| c.snapshot.map(|s| (c.replay_id, s)));
    let (position, mut progress) = match resumed {
        Some((position, progress)) => {
            info!(
                rows = progress.rows(),
                "resuming the snapshot at the position fixed before it"
            );
            (position, progress)
        }
        None => {
            let Some(position) = position::fix_position(shared, &channel.name, cancel).await?
            else {
                return Ok(());
            };
            let now = crate::ops::telemetry::unix_millis() as i64;
            let progress = SnapshotProgress::new(&channel.snapshot_objects(), now);
            info!(replay_id = %hex::encode(&position), objects = ?channel.snapshot_objects(), "stream position fixed; snapshot begins");
            if let Err(err) = committer
                .save(&position, progress.started_at, Some(&progress))
                .await
            {
                return err.into_attempt(&channel.name).map_or(Ok(()), Err);
            }
            (position, progress)
        }
    };
    stats
        .snapshot_running
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let outcome = read_all(
        shared,
        index,
        stats,
        &mut committer,
        &position,
        &mut progress,
        cancel,
    )
    .await;
    stats
        .snapshot_running
        .store(false, std::sync::atomic::Ordering::Relaxed);
    match outcome {
        Ok(true) => {
            info!(
                rows = progress.rows(),
                "snapshot done; streaming from the fixed position"
            );
            stats
                .snapshots_completed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(())
        }
        Ok(false) => Ok(()),
        Err(err) => match err.into_attempt(&channel.name) {
            None => Ok(()),
            Some(attempt) => Err(attempt),
        },
    }
}

/// Reads every object not done, then saves the position without a snapshot; `Ok(false)` when
/// cancelled on the way.
async fn read_all(
    shared: &Arc<Shared>,
    index: usize,
    stats: &Arc<ChannelStats>,
    committer: &mut commit::Committer<'_>,
    position: &Bytes,
    progress: &mut SnapshotProgress,
    cancel: &CancellationToken,
) -> Result<bool, SnapshotError> {
    let channel = &shared.source().channels[index];
    let mut reader = read::ObjectReader::new(shared, channel, stats, position);
    for i in 0..progress.objects.len() {
        if progress.objects[i].state == ObjectState::Done {
            continue;
        }
        reader.read(committer, progress, i, cancel).await?;
    }
    committer.save(position, progress.started_at, None).await?;
    Ok(true)
}
