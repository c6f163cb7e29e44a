//! Producing one page of a snapshot's rows under one handle of the [`Committer`].
//!
//! Contract: [`RowWriter::produce`] turns each row (text values in select order) into its record
//! ([`Columns::encode`]: operation `READ`; a row of a deleted record, which only a resync's
//! `queryAll` reads, [`Columns::encode_delete`]: operation `DELETE`, then a tombstone when
//! `source.tombstones`) keyed by Id into the object's topic, with the headers
//! `forcebridge.change_type`, `forcebridge.channel`, `forcebridge.snapshot` (`rest`|`bulk`) and
//! `forcebridge.replay_id` (the fixed position). A row that does not fit the schema is
//! dead-lettered (stage `snapshot`, key = the position's replay id, value = the row as a JSON
//! object of column → text) and counted; a row the CSV reader cannot read stops the snapshot
//! (the org's answer is broken). [`RowWriter::deleted`] writes the `DELETE` records of Ids the
//! replication API reports.

use std::borrow::Cow;
use std::sync::atomic::Ordering;

use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use super::SnapshotError;
use super::columns::{Columns, RowContext};
use super::commit::Committer;
use super::progress::ReadMethod;
use crate::kafka::headers::{self, DeadLetterStage};
use crate::kafka::{EventHandle, OutgoingRecord, Producer};
use crate::ops::telemetry::ChannelStats;
use crate::salesforce::rest::RestError;
use crate::source::cdc::RawEvent;
use crate::source::cdc::schema::EventSchema;
use crate::source::dead_letters::{DeadLetter, DeadLetters};
use crate::source::setup::Shared;

/// One row: values in select order, `None` = null.
pub(super) type Row<'a> = Vec<Option<Cow<'a, str>>>;

/// Where an object's rows go and what their records say.
pub(super) struct RowWriter<'a> {
    pub(super) shared: &'a Shared,
    pub(super) stats: &'a ChannelStats,
    pub(super) channel: &'a str,
    /// The fixed position (its replay id, and in hex).
    pub(super) position: &'a [u8],
    pub(super) position_hex: &'a str,
    pub(super) columns: &'a Columns,
    pub(super) topic: &'a str,
    /// The topic's records counter (`forcebridge_source_records_produced_total`).
    pub(super) produced: &'a std::sync::atomic::AtomicU64,
    pub(super) schema: &'a EventSchema,
    pub(super) method: ReadMethod,
    /// A resync (`"mode":"resync"`).
    pub(super) resync: bool,
    /// `Some` when the channel's format is `debezium`: each row's envelope is converted
    /// ([`crate::source::cdc::Debezium::convert`]).
    pub(super) debezium: Option<crate::source::cdc::Debezium>,
}

impl RowWriter<'_> {
    fn context(&self) -> RowContext<'_> {
        RowContext {
            channel: self.channel,
            replay_hex: self.position_hex,
            method: self.method.as_str(),
            read_at: crate::ops::telemetry::unix_millis(),
            resync: self.resync,
        }
    }

    fn headers<'h>(&'h self, operation: &'h str) -> [(&'h str, &'h [u8]); 4] {
        [
            (headers::CHANGE_TYPE, operation.as_bytes()),
            (headers::CHANNEL, self.channel.as_bytes()),
            (headers::SNAPSHOT, self.method.as_str().as_bytes()),
            (headers::REPLAY_ID, self.position_hex.as_bytes()),
        ]
    }

    /// Produces `rows` under one handle of `committer`; returns how many records Kafka was
    /// given (dead letters not counted).
    pub(super) async fn produce<'r>(
        &self,
        committer: &mut Committer<'_>,
        rows: impl Iterator<Item = Result<Row<'r>, RestError>>,
        buffer: &mut Vec<u8>,
        cancel: &CancellationToken,
    ) -> Result<u64, SnapshotError> {
        let handle = committer.page().await?;
        let producer = committer.producer();
        let context = self.context();
        let dead_letters = DeadLetters::new(self.shared, producer, self.stats);
        let read = self.headers("READ");
        let mut produced = 0u64;
        for row in rows {
            if cancel.is_cancelled() {
                return Err(SnapshotError::Cancelled);
            }
            let row = row.map_err(|source| SnapshotError::Rest {
                object: self.columns.object().to_owned(),
                source,
            })?;
            let id = self.columns.id(&row).unwrap_or_default();
            if self.columns.is_deleted(&row) {
                let at = self.columns.modstamp(&row);
                self.delete(producer, &handle, id, at, &context, buffer)
                    .await?;
                produced += 1;
                continue;
            }
            let encoded = self.columns.encode(&row, &context, buffer);
            match encoded.and_then(|()| self.to_format(id, buffer)) {
                Ok(()) => {
                    send(producer, self.topic, id, Some(buffer), &read, &handle).await?;
                    self.stats.snapshot_rows.fetch_add(1, Ordering::Relaxed);
                    self.produced.fetch_add(1, Ordering::Relaxed);
                    produced += 1;
                }
                Err(reason) => {
                    let payload = row_json(self.columns, &row);
                    let raw = RawEvent {
                        channel: self.channel,
                        replay_id: self.position,
                        event_id: id,
                        schema_id: &self.schema.id,
                        payload: &payload,
                    };
                    let dead = DeadLetter {
                        stage: DeadLetterStage::Snapshot,
                        reason,
                    };
                    dead_letters.write(&raw, &dead, &handle).await?;
                }
            }
        }
        handle.seal();
        Ok(produced)
    }

    /// The envelope in `buffer` in the channel's format (Debezium's when asked).
    fn to_format(&self, id: &str, buffer: &mut Vec<u8>) -> Result<(), String> {
        if let Some(d) = &self.debezium {
            *buffer = d.convert(id, buffer).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Produces the `DELETE` records of `deleted` (Id, deleted date) under one handle.
    pub(super) async fn deleted(
        &self,
        committer: &mut Committer<'_>,
        deleted: &[(String, i64)],
        buffer: &mut Vec<u8>,
    ) -> Result<u64, SnapshotError> {
        let handle = committer.page().await?;
        let producer = committer.producer();
        let context = self.context();
        for (id, at) in deleted {
            self.delete(producer, &handle, id, Some(*at), &context, buffer)
                .await?;
        }
        handle.seal();
        Ok(deleted.len() as u64)
    }

    /// One `DELETE` record, then a tombstone when `source.tombstones`.
    async fn delete(
        &self,
        producer: &Producer,
        handle: &EventHandle,
        id: &str,
        at: Option<i64>,
        context: &RowContext<'_>,
        buffer: &mut Vec<u8>,
    ) -> Result<(), SnapshotError> {
        let headers = self.headers("DELETE");
        self.columns.encode_delete(id, at, context, buffer);
        self.to_format(id, buffer)
            .map_err(|reason| SnapshotError::Schema {
                object: self.columns.object().to_owned(),
                reason,
            })?;
        send(producer, self.topic, id, Some(buffer), &headers, handle).await?;
        self.stats.snapshot_rows.fetch_add(1, Ordering::Relaxed);
        self.produced.fetch_add(1, Ordering::Relaxed);
        if self.shared.source().tombstones {
            send(producer, self.topic, id, None, &headers, handle).await?;
            self.produced.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// Sends one record (a tombstone when `value` is `None`) under `handle`.
async fn send(
    producer: &Producer,
    topic: &str,
    id: &str,
    value: Option<&[u8]>,
    headers: &[(&str, &[u8])],
    handle: &EventHandle,
) -> Result<(), SnapshotError> {
    let record = OutgoingRecord {
        topic,
        key: Some(id.as_bytes()),
        value,
        headers,
    };
    producer.send(record, handle.token()).await?;
    Ok(())
}

/// A row as a JSON object of column → text: the dead letter's value.
fn row_json(columns: &Columns, row: &[Option<Cow<'_, str>>]) -> Vec<u8> {
    let map: Map<String, Value> = columns
        .select()
        .iter()
        .zip(row)
        .map(|(c, v)| {
            let v = v
                .as_deref()
                .map_or(Value::Null, |t| Value::String(t.to_owned()));
            (c.clone(), v)
        })
        .collect();
    serde_json::to_vec(&map).expect("serializing JSON values cannot fail")
}
