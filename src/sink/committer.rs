//! Offset commits of the sink: per partition, the offset after the finished prefix of its
//! records ([`Offsets::committable`]), every `sink.commit_interval`, before a rebalance gives up
//! a partition, and at the end of an attempt.
//!
//! Contract:
//! * [`Committer::start`] commits at every tick, synchronously and off the runtime threads: an
//!   offset counts as committed only once the broker confirmed it, so a failed commit is retried
//!   at the next tick. A partition with a record that could not be finished
//!   ([`Offsets::failure`]) trips the attempt instead, which restarts from the committed offsets.
//! * On a rebalance, the revoked partitions' finished offsets are committed synchronously before
//!   they are given up ([`SinkContext`]); records of theirs still in flight are written but not
//!   committed by this member (the next owner repeats them: at least once).
//! * At every tick it tells the sink's [`crate::ops::progress::SinkProgress`] how many records are
//!   held unfinished and how many finished so far (`/readyz`'s stall check).
//! * [`commit_final`] is the last commit of an attempt, once its writers stopped.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::{ClientContext, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::{info, warn};

use super::offsets::Offsets;
use super::tripwire::Tripwire;
use crate::ops::telemetry::SinkStats;

/// The sink's Kafka consumer.
pub(crate) type SinkConsumer = StreamConsumer<SinkContext>;

/// Consumer context: commits finished offsets of revoked partitions before giving them up.
pub(crate) struct SinkContext {
    pub(crate) offsets: Arc<Offsets>,
}

impl ClientContext for SinkContext {}

impl ConsumerContext for SinkContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(revoked) = rebalance {
            let revoked_set: Vec<(String, i32)> = revoked
                .elements()
                .iter()
                .map(|e| (e.topic().to_owned(), e.partition()))
                .collect();
            let tpl = self
                .offsets
                .committable_where(|t, p| revoked_set.iter().any(|(rt, rp)| rt == t && *rp == p));
            if tpl.count() > 0 {
                match consumer.commit(&tpl, CommitMode::Sync) {
                    Ok(()) => self.offsets.mark_committed(&tpl),
                    Err(error) => warn!(%error, "commit before giving up partitions failed"),
                }
            }
            self.offsets.forget(revoked);
            info!(partitions = revoked.count(), "partitions revoked");
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(assigned) = rebalance {
            info!(partitions = assigned.count(), "partitions assigned");
        }
    }
}

/// Commits what is committable with `consumer`, synchronously; returns what was committed.
fn commit_sync<C: Consumer<X>, X: ConsumerContext>(
    offsets: &Offsets,
    consumer: &C,
) -> Result<TopicPartitionList, rdkafka::error::KafkaError> {
    let tpl = offsets.committable();
    if tpl.count() > 0 {
        consumer.commit(&tpl, CommitMode::Sync)?;
        offsets.mark_committed(&tpl);
    }
    Ok(tpl)
}

/// The periodic committer of one attempt.
pub(crate) struct Committer {
    // Aborted if the attempt is dropped (a crash of the task), so the consumer it holds
    // leaves the group instead of lingering as a member that never polls.
    task: AbortOnDropHandle<()>,
    stop: CancellationToken,
}

impl Committer {
    /// Commits every `interval` until [`Committer::stop`], or until a partition failed (then
    /// trips `trip` with the reason).
    pub(crate) fn start(
        consumer: Arc<SinkConsumer>,
        offsets: Arc<Offsets>,
        interval: Duration,
        trip: Tripwire,
        stats: Arc<SinkStats>,
    ) -> Self {
        let stop = CancellationToken::new();
        let stop2 = stop.clone();
        let task = AbortOnDropHandle::new(tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop2.cancelled() => return,
                    _ = ticker.tick() => {}
                }
                if let Some(reason) = offsets.failure() {
                    trip.trip(reason);
                    return;
                }
                // Progress for readiness: records held, and whether any finished since.
                let s = stats.snapshot();
                stats.progress.note(
                    offsets.in_flight(),
                    s.written + s.conflicts + s.dead_lettered,
                    crate::ops::telemetry::unix_millis(),
                );
                // Synchronous, off the runtime threads: an offset counts as committed only once
                // the broker confirmed it, so a failed commit is retried at the next tick.
                let (consumer, offsets) = (consumer.clone(), offsets.clone());
                let committed =
                    tokio::task::spawn_blocking(move || commit_sync(&offsets, consumer.as_ref()))
                        .await;
                if let Ok(Err(error)) = committed {
                    warn!(%error, "offset commit failed; will retry");
                }
            }
        }));
        Self { task, stop }
    }

    /// Stops the periodic commits and waits for the task.
    pub(crate) async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// The last commit of an attempt, after its writers stopped and the producer flushed.
pub(crate) async fn commit_final(consumer: &Arc<SinkConsumer>, offsets: &Arc<Offsets>) {
    let final_commit = {
        let consumer = consumer.clone();
        let offsets = offsets.clone();
        tokio::task::spawn_blocking(move || commit_sync(&offsets, consumer.as_ref())).await
    };
    match final_commit {
        Ok(Ok(tpl)) => info!(partitions = tpl.count(), "final offsets committed"),
        Ok(Err(error)) => warn!(%error, "final offset commit failed"),
        Err(error) => warn!(%error, "final offset commit task failed"),
    }
}
