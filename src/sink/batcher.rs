//! The intake of the sink: consumed records → parsed writes → batches for the writers.
//!
//! Contract:
//! * Each consumed record is tracked in the offsets ([`Offsets::track`]) and parsed
//!   ([`message::parse`]); a record that is not a valid write-back message is dead-lettered
//!   (stage `sink.message`, the reason naming the field) and the intake goes on.
//! * A batch is sent to the writers when it holds `sink.batch_records` records or is
//!   `sink.linger` old ([`Batcher::flush`]; it waits while every writer is busy).
//! * A batch holds at most one write per record (Id or External Id): a second write to a record
//!   sends the batch, and waits until no batch in flight holds that record, so writes to one
//!   record reach Salesforce in Kafka order ([`Batcher::admit`]).
//! * Cancellation hands a partial batch to a writer only if one can take it at once; on
//!   shutdown or failure an unsent batch is dropped: its records stay uncommitted and are read
//!   again.

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::sync::atomic::Ordering;

use rdkafka::message::{Headers, Message};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::committer::SinkConsumer;
use super::message::{self, MessageError, ParseOptions};
use super::offsets::Offsets;
use super::reporter::{Failure, Item, Origin, Reporter};
use super::tripwire::Tripwire;
use crate::config::SinkConfig;
use crate::kafka::headers::DeadLetterStage;
use crate::ops::telemetry::SinkStats;

/// A batch being filled.
#[derive(Default)]
pub(crate) struct Batch {
    pub(crate) items: Vec<Item>,
    /// The order keys ([`message::WriteOp::order_key`]) of its writes.
    pub(crate) keys: HashSet<String>,
    started: Option<tokio::time::Instant>,
}

/// What the intake does after a step: go on (`Continue`), or stop (`Break`) with the reason to
/// restart the attempt, or `None` (shutdown, or another task failed and recorded its reason).
type Step = ControlFlow<Option<String>>;

/// Converts a consumed record into an owned [`Origin`].
fn origin_of<M: Message>(m: &M) -> Origin {
    let headers = m
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                .collect()
        })
        .unwrap_or_default();
    Origin {
        topic: m.topic().to_owned(),
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(<[u8]>::to_vec),
        value: m.payload().map(<[u8]>::to_vec),
        headers,
    }
}

fn message_failure(e: &MessageError) -> Failure {
    let field = match e {
        MessageError::NotJson(_) => String::new(),
        MessageError::Missing { field, .. } => (*field).to_owned(),
        MessageError::Invalid { field, .. } => field.clone(),
    };
    Failure {
        stage: DeadLetterStage::SinkMessage,
        code: "INVALID_MESSAGE".into(),
        message: e.to_string(),
        fields: if field.is_empty() {
            vec![]
        } else {
            vec![field]
        },
        attempts: 0,
    }
}

/// What the intake of one attempt reads from and reports to.
pub(crate) struct Intake<'a> {
    pub(crate) consumer: &'a SinkConsumer,
    pub(crate) offsets: &'a Offsets,
    pub(crate) reporter: &'a Reporter,
    pub(crate) stats: &'a SinkStats,
    pub(crate) sink: &'a SinkConfig,
    pub(crate) trip: &'a Tripwire,
    pub(crate) cancel: &'a CancellationToken,
}

impl Intake<'_> {
    /// Reads, parses and batches records into `batches` until cancellation or a failure;
    /// `done` brings back the keys of each batch the writers finished. Returns the reason to
    /// restart if the intake itself failed.
    pub(crate) async fn run(
        self,
        batches: mpsc::Sender<Batch>,
        done: mpsc::UnboundedReceiver<HashSet<String>>,
    ) -> Option<String> {
        let mut batcher = Batcher {
            intake: self,
            batches,
            done,
            batch: Batch::default(),
            in_flight: HashSet::new(),
        };
        loop {
            if let ControlFlow::Break(outcome) = batcher.step().await {
                return outcome;
            }
        }
    }
}

/// The intake's state: the batch being filled and the records of the batches in flight.
struct Batcher<'a> {
    intake: Intake<'a>,
    batches: mpsc::Sender<Batch>,
    done: mpsc::UnboundedReceiver<HashSet<String>>,
    batch: Batch,
    /// The keys of the batches sent and not yet finished.
    in_flight: HashSet<String>,
}

impl Batcher<'_> {
    /// Waits for the next event: cancellation, failure, a finished batch, the linger deadline or
    /// a record.
    async fn step(&mut self) -> Step {
        let deadline = self.batch.started.map(|s| s + self.intake.sink.linger);
        let msg = tokio::select! {
            biased;
            _ = self.intake.cancel.cancelled() => {
                // Hand the partial batch over if a writer can take it now; never wait for one.
                if !self.batch.items.is_empty() {
                    let full = std::mem::take(&mut self.batch);
                    let _ = self.batches.try_send(full);
                }
                return ControlFlow::Break(None);
            }
            _ = self.intake.trip.tripped() => return ControlFlow::Break(None),
            Some(keys) = self.done.recv() => {
                self.finished(keys);
                return ControlFlow::Continue(());
            }
            _ = async { tokio::time::sleep_until(deadline.expect("guarded")).await }, if deadline.is_some() => {
                return self.flush().await;
            }
            msg = self.intake.consumer.recv() => msg,
        };
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "Kafka consumer error");
                return ControlFlow::Continue(());
            }
        };
        let origin = origin_of(&msg);
        drop(msg);
        self.take(origin).await
    }

    /// A batch the writers finished: its records are no longer in flight.
    fn finished(&mut self, keys: HashSet<String>) {
        for k in keys {
            self.in_flight.remove(&k);
        }
    }

    /// Parses a consumed record and adds its write to the batch; dead-letters it if it is not a
    /// write-back message.
    async fn take(&mut self, origin: Origin) -> Step {
        let intake = &self.intake;
        intake.stats.received.fetch_add(1, Ordering::Relaxed);
        let token = intake
            .offsets
            .track(&origin.topic, origin.partition, origin.offset);
        let headers: Vec<(&str, &[u8])> = origin
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        let parse_opts = ParseOptions {
            objects: &intake.sink.objects,
            last_write_wins: intake.sink.last_write_wins,
        };
        let parsed = message::parse(origin.value.as_deref(), &headers, parse_opts);
        drop(headers);
        let op = match parsed {
            Ok(op) => op,
            Err(e) => {
                if let Err(e) = intake
                    .reporter
                    .dead_letter(&origin, &message_failure(&e), token)
                    .await
                {
                    return ControlFlow::Break(Some(e.to_string()));
                }
                return ControlFlow::Continue(());
            }
        };
        if let Some(key) = op.order_key() {
            self.admit(key).await?;
        }
        self.batch
            .started
            .get_or_insert_with(tokio::time::Instant::now);
        self.batch.items.push(Item { op, origin, token });
        if self.batch.items.len() >= self.intake.sink.batch_records {
            return self.flush().await;
        }
        ControlFlow::Continue(())
    }

    /// Makes room in the batch for a write to the record `key`: sends the batch if it already
    /// writes that record, then waits until no batch in flight does.
    async fn admit(&mut self, key: String) -> Step {
        if self.batch.keys.contains(&key) {
            self.flush().await?;
        }
        // Wait until no batch in flight writes this record.
        while self.in_flight.contains(&key) {
            tokio::select! {
                _ = self.intake.trip.tripped() => break,
                _ = self.intake.cancel.cancelled() => break,
                keys = self.done.recv() => match keys {
                    Some(keys) => self.finished(keys),
                    None => break,
                },
            }
        }
        if self.intake.trip.is_tripped() || self.intake.cancel.is_cancelled() {
            return ControlFlow::Break(None);
        }
        self.batch.keys.insert(key);
        ControlFlow::Continue(())
    }

    /// Sends the current batch to the writers (waits while they are all busy). On shutdown or
    /// failure an unsent batch is dropped: its records stay uncommitted and are read again.
    async fn flush(&mut self) -> Step {
        if self.batch.items.is_empty() {
            return ControlFlow::Continue(());
        }
        let full = std::mem::take(&mut self.batch);
        let keys: Vec<String> = full.keys.iter().cloned().collect();
        tokio::select! {
            sent = self.batches.send(full) => {
                if sent.is_err() {
                    return ControlFlow::Break(Some("the writers stopped".to_owned()));
                }
                self.in_flight.extend(keys);
            }
            _ = self.intake.trip.tripped() => return ControlFlow::Break(None),
            _ = self.intake.cancel.cancelled() => return ControlFlow::Break(None),
        }
        ControlFlow::Continue(())
    }
}
