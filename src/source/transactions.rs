//! Transactions of a channel in exactly-once mode.
//!
//! Contract: there is no separate checkpointer: every `checkpoint_interval` the processor calls
//! [`Transaction::commit`], which waits until Kafka acknowledged every record of the open
//! transaction, adds the checkpoint record (the window's durable replay id) to it and commits, so
//! the checkpoint follows its records in the log. A failed event aborts instead (the restart
//! redoes the interval); a commit whose outcome stays unknown after its retries stops the
//! pipeline. [`transaction_error`] and [`attempt_transaction_error`] say what a failed step means:
//! fenced, fatal or unsupported stops the pipeline; abortable or retriable restarts the channel.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use tracing::warn;

use super::error::{AttemptError, PipelineError};
use super::setup::Shared;
use crate::kafka::{AckWindow, KafkaError, Producer, TransactionFailure};
use crate::ops::telemetry::ChannelStats;
use crate::retry::Directive;

/// One open Kafka transaction of a channel (exactly-once mode).
pub(super) struct Transaction<'a> {
    pub(super) shared: &'a Shared,
    pub(super) channel: &'a str,
    pub(super) producer: &'a Producer,
    pub(super) stats: &'a ChannelStats,
    pub(super) window: &'a AckWindow,
    /// The checkpoint of the last committed transaction.
    pub(super) committed: Option<Bytes>,
    pub(super) ticker: tokio::time::Interval,
}

impl Transaction<'_> {
    /// Commits the open transaction with the checkpoint of everything processed so far; with
    /// `reopen`, begins the next one.
    ///
    /// Every record of the transaction is acknowledged before the checkpoint record is sent, so
    /// the checkpoint follows its records in the log: even a broker that does not filter aborted
    /// transactions for `read_committed` readers never shows a checkpoint without its records.
    pub(super) async fn commit(&mut self, reopen: bool) -> Result<(), AttemptError> {
        let drain = self.shared.config.drain_timeout;
        let since = crate::ops::telemetry::unix_millis();
        let idle = self.window.in_flight() == 0;
        self.producer
            .flush(drain)
            .await
            .map_err(|err| AttemptError::Restart(err.to_string()))?;
        // The transaction may hold records past a failed event (also on the last commit: the
        // head of a gap re-sync abandoned by the stop): committing them with a checkpoint before
        // them would repeat them after the restart. Abort; the restart redoes the interval.
        if let Some(reason) = self.window.failure() {
            return Err(AttemptError::Restart(reason));
        }
        let durable = self.window.durable();
        let Some(durable) = durable.filter(|d| self.committed.as_ref() != Some(d)) else {
            if idle {
                self.stats.note_caught_up(since, false);
            }
            if !reopen {
                // Nothing new: end the empty transaction.
                self.producer
                    .abort_transaction(drain)
                    .await
                    .map_err(|err| attempt_transaction_error(self.channel, err))?;
            }
            return Ok(());
        };
        let checkpoints = &self.shared.checkpoints;
        let at = self.window.durable_at();
        checkpoints
            .deliver_in(self.producer, self.channel, &durable, at, None)
            .await
            .map_err(AttemptError::Restart)?;
        let mut attempts = 0;
        loop {
            match self.producer.commit_transaction(drain).await {
                Ok(()) => break,
                Err(err)
                    if err.transaction_failure().directive() == Directive::Retry
                        && attempts < 3 =>
                {
                    attempts += 1;
                    warn!(error = %crate::ops::telemetry::error_chain(&err), "committing the transaction again");
                }
                // Still retriable after the retries: the commit may have succeeded. Aborting and
                // restarting from the checkpoint remembered before it could repeat committed
                // records; stop instead, so the next start reads the committed checkpoint.
                Err(err) if err.transaction_failure().directive() == Directive::Retry => {
                    return Err(AttemptError::Stop(PipelineError::Channel {
                        channel: self.channel.to_owned(),
                        message: format!(
                            "the outcome of the Kafka transaction commit is unknown ({}); stopping",
                            crate::ops::telemetry::error_chain(&err)
                        ),
                    }));
                }
                Err(err) => return Err(attempt_transaction_error(self.channel, err)),
            }
        }
        checkpoints.remember_with(self.channel, &durable, at, None);
        self.stats
            .checkpoints_written
            .fetch_add(1, Ordering::Relaxed);
        self.stats.note_caught_up(since, true);
        self.committed = Some(durable);
        if reopen {
            self.producer
                .begin_transaction()
                .await
                .map_err(|err| attempt_transaction_error(self.channel, err))?;
        }
        Ok(())
    }
}

/// Waits for the next commit time of `transaction`; never, without one.
pub(super) async fn commit_due(transaction: &mut Option<Transaction<'_>>) {
    match transaction {
        Some(t) => {
            t.ticker.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// A failed transaction step: fenced or fatal stops the channel; anything else aborts and
/// restarts the attempt.
pub(super) fn transaction_error(channel: &str, err: KafkaError) -> PipelineError {
    match err.transaction_failure() {
        TransactionFailure::Fenced => PipelineError::Fenced {
            channel: channel.to_owned(),
            transactional_id: match &err {
                KafkaError::Transaction {
                    transactional_id, ..
                } => transactional_id.clone(),
                _ => String::new(),
            },
        },
        TransactionFailure::Unsupported => PipelineError::Channel {
            channel: channel.to_owned(),
            message: format!(
                "the Kafka cluster does not support transactions, which `source.delivery: exactly_once` needs; use `at_least_once` ({})",
                crate::ops::telemetry::error_chain(&err)
            ),
        },
        _ => PipelineError::Kafka(err),
    }
}

/// [`transaction_error`] for a step inside an attempt: a step that could be retried or aborted
/// restarts the attempt (only the commit retries in place, in [`Transaction::commit`]).
pub(super) fn attempt_transaction_error(channel: &str, err: KafkaError) -> AttemptError {
    match err.transaction_failure().directive() {
        Directive::Stop => AttemptError::Stop(transaction_error(channel, err)),
        _ => AttemptError::Restart(crate::ops::telemetry::error_chain(&err)),
    }
}
