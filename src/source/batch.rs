//! One event through the processor: prepared (its window entry opened, decoded, diff fields
//! resolved, sizes checked, routed; nothing produced), then emitted (its records produced under
//! its window entry, a gap re-read, or its dead letter; the entry sealed). A `full_record`
//! channel batches between the two, so that the current values of many events' UPDATE records
//! are read in few calls, then produced in replay order.
//!
//! Contract of the batch (see `ARCHITECTURE.md`, "Full record on update"):
//! * The processor hands an event to [`Processor::handle_batch`]; it is decoded ("prepared": its
//!   window entry opened, nothing produced), and so is every further event already waiting in the
//!   reader's channel or (once the batch has records to read) arriving within [`LINGER`] of the
//!   last one, until the batch asks for
//!   [`IDS_PER_CALL`] records (the reader hands on at most `batch_size` events before its credits
//!   come back, so waiting a little is what lets a burst fill a call). An item that is not an
//!   event (a keepalive, a gap marker) ends the batch and is handed back, to be handled after it,
//!   in order.
//! * The batch's UPDATE records are read at once ([`crate::source::full_record`]), each event's
//!   records completed, their sizes checked again, then every event is produced in replay order
//!   under its own window entry, which is sealed after its records: the checkpoint passes an
//!   event only once Kafka holds its completed records. An event whose records could not be
//!   completed is dead-lettered (stage `full`); the others of the batch go on.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use tokio::sync::mpsc::{self, error::TryRecvError};
use tokio_util::sync::CancellationToken;

use super::dead_letters::DeadLetter;
use super::processor::{HandleError, Processor};
use super::reader::Item;
use crate::kafka::headers::DeadLetterStage;
use crate::kafka::{EventHandle, OutgoingRecord};
use crate::salesforce::proto::{ConsumerEvent, ProducerEvent};
use crate::source::cdc::schema::EventSchema;
use crate::source::cdc::{OutRecord, RawEvent};
use crate::source::full_record::{self, IDS_PER_CALL, Wanted};
use crate::source::gap::is_gap;

/// How long a batch waits for one more event once none is waiting in the reader's channel.
pub(super) const LINGER: std::time::Duration = std::time::Duration::from_millis(5);

/// One decoded event whose records are not produced yet.
pub(super) struct Prepared {
    /// Its window entry (sealed after its records are handed to Kafka).
    pub(super) handle: EventHandle,
    /// Its routed records, or why it goes to the dead-letter topic.
    pub(super) records: Result<Vec<OutRecord>, DeadLetter>,
    /// Its commit timestamp (or `CreatedDate`).
    pub(super) event_time: Option<i64>,
    /// The schema that decoded it (when decoded).
    pub(super) schema: Option<Arc<EventSchema>>,
}

impl Processor<'_> {
    /// Decodes one event and produces its records (or dead-letters it), registered in the window
    /// under `replay_id`.
    pub(super) async fn handle(
        &mut self,
        consumer_event: &ConsumerEvent,
        replay_id: Bytes,
        cancel: &CancellationToken,
    ) -> Result<(), HandleError> {
        let prepared = self.prepare(consumer_event, replay_id, cancel).await?;
        self.emit(consumer_event, prepared, cancel).await
    }

    /// Opens the event's window entry and decodes it into routed records (or a dead letter),
    /// nothing produced yet.
    pub(super) async fn prepare(
        &mut self,
        consumer_event: &ConsumerEvent,
        replay_id: Bytes,
        cancel: &CancellationToken,
    ) -> Result<Prepared, HandleError> {
        let raw = raw_event(&self.channel.name, consumer_event);
        let handle = self.window.begin(replay_id);
        self.event_time = None;
        let records = match self.decode(&raw, cancel).await {
            Err(None) => {
                let refused = self.login_refused.lock().ok().and_then(|mut e| e.take());
                return Err(refused.map_or(HandleError::Cancelled, HandleError::LoginRefused));
            }
            Err(Some(dead)) => Err(dead),
            Ok(records) => match self.resolve_diffs(records, cancel).await {
                Err(None) => return Err(HandleError::Cancelled),
                Err(Some(dead)) => Err(dead),
                // A `full_record` channel converts after the completion (in `emit`).
                Ok(records) if self.channel.full_record => Ok(records),
                Ok(records) => self
                    .to_format(records)
                    .and_then(|r| self.dead_letters.check_sizes(&r).map(|()| r)),
            },
        };
        let records = match records {
            Ok(records) => self
                .routes
                .resolve(&records)
                .await
                .map_err(HandleError::Kafka)?
                .map(|()| records),
            Err(dead) => Err(dead),
        };
        let schema = records.is_ok().then(|| self.last_schema.clone()).flatten();
        Ok(Prepared {
            handle,
            records,
            event_time: self.event_time,
            schema,
        })
    }

    /// Produces a prepared event's records (or its dead letter) and seals its window entry.
    pub(super) async fn emit(
        &self,
        consumer_event: &ConsumerEvent,
        prepared: Prepared,
        cancel: &CancellationToken,
    ) -> Result<(), HandleError> {
        let raw = raw_event(&self.channel.name, consumer_event);
        let handle = prepared.handle;
        let records = match prepared.records {
            Ok(records) if self.channel.full_record && !is_gap(&records) => self
                .to_format(records)
                .and_then(|r| self.dead_letters.check_sizes(&r).map(|()| r)),
            other => other,
        };
        match records {
            Ok(records) if crate::source::gap::is_gap(&records) => {
                self.handle_gap(&records, &raw, &handle, cancel).await?;
            }
            Ok(records) => {
                for record in &records {
                    let route = self.routes.get(&record.object);
                    let headers: Vec<(&str, &[u8])> = record
                        .headers
                        .iter()
                        .map(|(k, v)| (*k, v.as_bytes()))
                        .collect();
                    let outgoing = OutgoingRecord {
                        topic: &route.topic,
                        key: Some(record.key.as_bytes()),
                        value: record.value.as_deref(),
                        headers: &headers,
                    };
                    self.producer
                        .send(outgoing, handle.token())
                        .await
                        .map_err(HandleError::Kafka)?;
                    route.produced.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(dead) => self
                .dead_letters
                .write(&raw, &dead, &handle)
                .await
                .map_err(HandleError::Kafka)?,
        }
        if let Some(at) = prepared.event_time {
            handle.note_time(at);
        }
        handle.seal();
        Ok(())
    }

    /// The records in the channel's format: converted to Debezium's envelope unless the decoder
    /// wrote them so (`converted`); a record that does not convert dead-letters the event.
    fn to_format(
        &self,
        records: Vec<crate::source::cdc::OutRecord>,
    ) -> Result<Vec<crate::source::cdc::OutRecord>, DeadLetter> {
        let pending = self
            .debezium
            .as_ref()
            .filter(|_| !self.converted || self.channel.full_record);
        crate::source::cdc::Debezium::apply(pending, records).map_err(DeadLetter::from)
    }

    /// Handles `first` and the events waiting behind it as one batch (see the module docs).
    /// Returns the item that ended the batch, if it was not an event.
    pub(super) async fn handle_batch(
        &mut self,
        first: (ConsumerEvent, Bytes),
        rx: &mut mpsc::Receiver<Item>,
        cancel: &CancellationToken,
    ) -> Result<Option<Item>, HandleError> {
        let mut batch: Vec<(ConsumerEvent, Prepared)> = Vec::new();
        let mut wanted = Wanted::default();
        let mut asked = 0;
        let mut next = Some(first);
        let mut after = None;
        while let Some((event, replay_id)) = next.take() {
            let prepared = self.prepare(&event, replay_id, cancel).await?;
            if let (Ok(records), Some(schema)) = (&prepared.records, &prepared.schema) {
                if !is_gap(records) {
                    asked += wanted.add(schema, records);
                }
            }
            batch.push((event, prepared));
            if asked >= IDS_PER_CALL {
                break;
            }
            let item = match rx.try_recv() {
                Ok(item) => Some(item),
                Err(TryRecvError::Disconnected) => None,
                // The reader hands on at most `batch_size` events before its next credits come
                // back: wait a little for more rather than read a few Ids per call.
                // (Nothing to read yet, e.g. CREATEs only: no reason to wait.)
                Err(TryRecvError::Empty) if asked == 0 => None,
                Err(TryRecvError::Empty) => tokio::select! {
                    biased;
                    _ = cancel.cancelled() => None,
                    item = tokio::time::timeout(LINGER, rx.recv()) => item.ok().flatten(),
                },
            };
            match item {
                Some(Item::Event { event, replay_id }) => next = Some((event, replay_id)),
                Some(other) => after = Some(other),
                None => {}
            }
        }
        tracing::debug!(events = batch.len(), records = asked, "full-record batch");
        if !wanted.is_empty() {
            self.complete(&mut batch, wanted, cancel).await?;
        }
        for (event, prepared) in batch {
            self.emit(&event, prepared, cancel).await?;
        }
        Ok(after)
    }

    /// Reads the wanted records and completes each event's; an event that cannot be completed
    /// becomes a dead letter (stage `full`), one that grew too large one of stage `size`.
    async fn complete(
        &mut self,
        batch: &mut [(ConsumerEvent, Prepared)],
        wanted: Wanted,
        cancel: &CancellationToken,
    ) -> Result<(), HandleError> {
        let stats = &self.stats.full_record;
        let rest = self.shared.gaps.rest();
        let Some(reads) = self.completer.read(rest, wanted, stats, cancel).await else {
            return Err(HandleError::Cancelled);
        };
        for (_, prepared) in batch.iter_mut() {
            let (Ok(records), Some(schema)) = (&mut prepared.records, &prepared.schema) else {
                continue;
            };
            if is_gap(records) {
                continue;
            }
            let done = match full_record::apply(records, &schema.id, &reads, stats) {
                Ok(()) => self.dead_letters.check_sizes(records),
                Err(err) => Err(DeadLetter {
                    stage: DeadLetterStage::Full,
                    reason: err.to_string(),
                }),
            };
            if let Err(dead) = done {
                prepared.records = Err(dead);
            }
        }
        Ok(())
    }
}

/// The event as the decoder reads it.
fn raw_event<'e>(channel: &'e str, consumer_event: &'e ConsumerEvent) -> RawEvent<'e> {
    static EMPTY: std::sync::OnceLock<ProducerEvent> = std::sync::OnceLock::new();
    let event =
        (consumer_event.event.as_ref()).unwrap_or_else(|| EMPTY.get_or_init(Default::default));
    RawEvent {
        channel,
        replay_id: &consumer_event.replay_id,
        event_id: &event.id,
        schema_id: &event.schema_id,
        payload: &event.payload,
    }
}
