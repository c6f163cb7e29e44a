//! Making a snapshot's rows and progress durable together.
//!
//! Contract: [`Committer::save`] returns once Kafka holds every row sent so far (acknowledged;
//! the first failure is [`SnapshotError::Delivery`]) and then the checkpoint record with the
//! position and progress given. At least once: the rows' acknowledgements, then the checkpoint
//! written by the store. Exactly once: the rows and the checkpoint record are one Kafka
//! transaction (the checkpoint sent after every row is acknowledged, so even a broker that does
//! not filter aborted transactions never shows a checkpoint without its rows), committed, and
//! the next transaction begun; a transaction is open whenever the snapshot runs, so a failure
//! leaves one for the supervisor to abort.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::SnapshotError;
use super::progress::SnapshotProgress;
use crate::kafka::{AckWindow, EventHandle, Producer};
use crate::ops::telemetry::ChannelStats;
use crate::source::setup::Shared;

/// Rows in flight and the saving of progress after them (see the module docs).
pub(super) struct Committer<'a> {
    shared: &'a Shared,
    channel: &'a str,
    producer: &'a Producer,
    stats: &'a ChannelStats,
    window: AckWindow,
    /// Exactly-once mode: whether a transaction is open.
    open: Option<bool>,
    /// Pages handed out (their handles' ids in the window).
    pages: u64,
}

impl<'a> Committer<'a> {
    pub(super) fn new(shared: &'a Shared, index: usize, stats: &'a Arc<ChannelStats>) -> Self {
        let producer = &shared.producers[index];
        Committer {
            shared,
            channel: &shared.source().channels[index].name,
            producer,
            stats,
            window: AckWindow::new(),
            open: producer.transactional_id().is_some().then_some(false),
            pages: 0,
        }
    }

    /// The producer rows go through.
    pub(super) fn producer(&self) -> &'a Producer {
        self.producer
    }

    /// A handle for the rows of one page (their acknowledgements are waited for by `save`);
    /// in exactly-once mode the transaction is begun first when none is open.
    pub(super) async fn page(&mut self) -> Result<EventHandle, SnapshotError> {
        self.begin().await?;
        self.pages += 1;
        Ok(self
            .window
            .begin(bytes::Bytes::copy_from_slice(&self.pages.to_be_bytes())))
    }

    async fn begin(&mut self) -> Result<(), SnapshotError> {
        if self.open == Some(false) {
            self.producer
                .begin_transaction()
                .await
                .map_err(|e| SnapshotError::Transaction(crate::ops::telemetry::error_chain(&e)))?;
            self.open = Some(true);
        }
        Ok(())
    }

    /// Waits until Kafka holds every row sent, then saves `position` with `progress` (see the
    /// module docs).
    pub(super) async fn save(
        &mut self,
        position: &[u8],
        started_at: i64,
        progress: Option<&SnapshotProgress>,
    ) -> Result<(), SnapshotError> {
        // Every change committed before the snapshot began is in it (or in the stream after the
        // position): a resync of this checkpoint reads from then.
        let at = Some(started_at);
        self.window.wait_idle().await;
        if let Some(reason) = self.window.failure() {
            return Err(SnapshotError::Delivery(reason));
        }
        let checkpoints = &self.shared.checkpoints;
        if self.open.is_none() {
            checkpoints
                .save_with(self.channel, position, at, progress)
                .await?;
        } else {
            self.begin().await?;
            checkpoints
                .deliver_in(self.producer, self.channel, position, at, progress)
                .await
                .map_err(SnapshotError::Delivery)?;
            self.producer
                .commit_transaction(self.shared.config.drain_timeout)
                .await
                .map_err(|e| SnapshotError::Transaction(crate::ops::telemetry::error_chain(&e)))?;
            self.open = Some(false);
            checkpoints.remember_with(self.channel, position, at, progress);
        }
        self.stats
            .checkpoints_written
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}
