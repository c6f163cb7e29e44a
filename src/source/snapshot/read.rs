//! Reading one object of a snapshot into its topic, page by page.
//!
//! Contract: [`ObjectReader::read`] finds the object's change event schema (`GetTopic` on the
//! object's own channel, then the schema cache), its describe and so its [`Columns`], then reads
//! its rows: REST `query` pages (`nextRecordsUrl`) for a small object or when resuming one read
//! so, a Bulk API 2.0 query job otherwise (see [`super::pages`]). Each page's rows are produced
//! under one handle of the [`Committer`], then the progress (rows, the next locator) is saved
//! after them. The next page is fetched while the rows of the current one are produced and
//! acknowledged, so at most two pages are in memory. A row that does not fit the schema is
//! dead-lettered (stage `snapshot`, key = the fixed position's replay id, value = the row as a
//! JSON object of column → text) and counted; the snapshot goes on.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::SnapshotError;
use super::columns::{Columns, RowContext};
use super::commit::Committer;
use super::progress::{ObjectState, ReadMethod, SnapshotProgress};
use crate::config::ChannelConfig;
use crate::kafka::headers::{self, DeadLetterStage};
use crate::kafka::{EventHandle, OutgoingRecord, Producer};
use crate::ops::telemetry::ChannelStats;
use crate::salesforce::rest::{ObjectFields, RestClient, RestError};
use crate::source::cdc::RawEvent;
use crate::source::cdc::schema::EventSchema;
use crate::source::dead_letters::{DeadLetter, DeadLetters};
use crate::source::routes::Routes;
use crate::source::setup::Shared;
use crate::source::shape::fields_of;

/// One page of rows, values in select order (`None`: null).
pub(super) struct Page {
    pub(super) rows: Vec<Vec<Option<String>>>,
    /// The next page's locator (REST: `nextRecordsUrl`); `None` on the last page.
    pub(super) next: Option<String>,
}

/// Reads the objects of one channel's snapshot.
pub(super) struct ObjectReader<'a> {
    shared: &'a Arc<Shared>,
    channel: &'a ChannelConfig,
    stats: &'a ChannelStats,
    position: &'a Bytes,
    position_hex: String,
    routes: Routes<'a>,
}

impl<'a> ObjectReader<'a> {
    pub(super) fn new(
        shared: &'a Arc<Shared>,
        channel: &'a ChannelConfig,
        stats: &'a Arc<ChannelStats>,
        position: &'a Bytes,
    ) -> Self {
        ObjectReader {
            shared,
            channel,
            stats,
            position,
            position_hex: hex::encode(position),
            routes: Routes::new(shared, channel, stats),
        }
    }

    fn rest(&self) -> &RestClient {
        self.shared.gaps.rest()
    }

    /// Reads object `i` of `progress` to its end; `Ok(false)` when cancelled.
    pub(super) async fn read(
        &mut self,
        committer: &mut Committer<'_>,
        progress: &mut SnapshotProgress,
        i: usize,
        cancel: &CancellationToken,
    ) -> Result<bool, SnapshotError> {
        let object = progress.objects[i].object.clone();
        let rest_error = |source: RestError| match source {
            RestError::Cancelled => SnapshotError::Cancelled,
            source => SnapshotError::Rest {
                object: object.clone(),
                source,
            },
        };
        let schema = super::schema::object_schema(self.shared, &object, cancel).await?;
        let describe = self
            .rest()
            .describe(&object, cancel)
            .await
            .map_err(rest_error)?;
        let columns = Columns::new(
            &object,
            &fields_of(&schema.schema),
            &ObjectFields::new(describe),
        );
        if !columns.left_out().is_empty() {
            warn!(object, fields = ?columns.left_out(), "schema fields the integration user cannot read are left out of the snapshot");
        }
        let topic = match self.routes.resolve_object(columns.object()).await? {
            Ok(route) => route.topic.clone(),
            Err(dead) => {
                return Err(SnapshotError::Schema {
                    object,
                    reason: dead.reason,
                });
            }
        };
        let entry = &mut progress.objects[i];
        // A REST read cannot be resumed (its cursor lives 15 minutes): from the first page.
        entry.state = ObjectState::Reading;
        entry.method = Some(ReadMethod::Rest);
        entry.locator = None;
        entry.rows = 0;
        info!(object, topic, method = "rest", "reading");
        let since = progress.since;
        let soql = columns.soql(since);
        // A resync reads deleted rows too (`queryAll`): they become DELETE records.
        let first = match since {
            Some(_) => self.rest().query_all(&soql, cancel).await,
            None => self.rest().query(&soql, cancel).await,
        };
        let mut next = Some(first.map_err(rest_error)?);
        let mut buffer = Vec::with_capacity(4096);
        while let Some(page) = next.take() {
            let page = rest_page(&columns, page);
            // Fetch the next page while this one is produced and acknowledged.
            let fetch = async {
                match &page.next {
                    Some(url) => self.rest().query_more(url, cancel).await.map(Some),
                    None => Ok(None),
                }
            };
            let produce = self.produce_page(
                committer,
                &columns,
                &topic,
                &schema,
                &page,
                (ReadMethod::Rest, since.is_some()),
                &mut buffer,
                cancel,
            );
            let (fetched, produced) = tokio::join!(fetch, produce);
            let rows = produced?;
            next = fetched.map_err(rest_error)?;
            let entry = &mut progress.objects[i];
            entry.rows += rows;
            if next.is_none() {
                entry.state = ObjectState::Done;
            }
            committer
                .save(self.position, progress.started_at, Some(progress))
                .await?;
        }
        info!(object, rows = progress.objects[i].rows, "object read");
        Ok(true)
    }

    /// Produces the rows of `page` under one handle; returns how many rows Kafka was given.
    #[allow(clippy::too_many_arguments)]
    async fn produce_page(
        &self,
        committer: &mut Committer<'_>,
        columns: &Columns,
        topic: &str,
        schema: &EventSchema,
        page: &Page,
        (method, resync): (ReadMethod, bool),
        buffer: &mut Vec<u8>,
        cancel: &CancellationToken,
    ) -> Result<u64, SnapshotError> {
        let handle = committer.page().await?;
        let producer = committer.producer();
        let context = RowContext {
            channel: &self.channel.name,
            replay_hex: &self.position_hex,
            method: method.as_str(),
            read_at: crate::ops::telemetry::unix_millis(),
            resync,
        };
        let tombstones = self.shared.source().tombstones;
        let record_headers: [(&str, &[u8]); 4] = [
            (headers::CHANGE_TYPE, b"READ"),
            (headers::CHANNEL, self.channel.name.as_bytes()),
            (headers::SNAPSHOT, method.as_str().as_bytes()),
            (headers::REPLAY_ID, self.position_hex.as_bytes()),
        ];
        let dead_letters = DeadLetters::new(self.shared, producer, self.stats);
        let mut rows = 0u64;
        for row in &page.rows {
            if cancel.is_cancelled() {
                return Err(SnapshotError::Cancelled);
            }
            let values: Vec<Option<Cow<'_, str>>> = row
                .iter()
                .map(|v| v.as_deref().map(Cow::Borrowed))
                .collect();
            if columns.is_deleted(&values) {
                let id = columns.id(&values).unwrap_or_default();
                columns.encode_delete(id, columns.modstamp(&values), &context, buffer);
                self.send(producer, topic, id, Some(buffer), &record_headers, &handle)
                    .await?;
                if tombstones {
                    self.send(producer, topic, id, None, &record_headers, &handle)
                        .await?;
                }
                rows += 1;
                continue;
            }
            match columns.encode(&values, &context, buffer) {
                Ok(()) => {
                    let id = columns.id(&values).unwrap_or_default();
                    self.send(producer, topic, id, Some(buffer), &record_headers, &handle)
                        .await?;
                    rows += 1;
                }
                Err(reason) => {
                    let payload = row_json(columns, row);
                    let raw = RawEvent {
                        channel: &self.channel.name,
                        replay_id: self.position,
                        event_id: columns.id(&values).unwrap_or_default(),
                        schema_id: &schema.id,
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
        Ok(rows)
    }

    /// Sends one record of a page (a tombstone when `value` is `None`), counted.
    async fn send(
        &self,
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
        if value.is_some() {
            self.stats.snapshot_rows.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// A REST page's rows in select order (names matched case-insensitively; values as text).
fn rest_page(columns: &Columns, page: crate::salesforce::rest::QueryPage) -> Page {
    let rows = page
        .records
        .into_iter()
        .map(|mut record| {
            columns
                .select()
                .iter()
                .map(|name| take(&mut record, name).and_then(as_text))
                .collect()
        })
        .collect();
    Page {
        rows,
        next: page.next,
    }
}

fn take(record: &mut Map<String, Value>, name: &str) -> Option<Value> {
    if let Some(v) = record.remove(name) {
        return Some(v);
    }
    let key = record
        .keys()
        .find(|k| k.eq_ignore_ascii_case(name))?
        .clone();
    record.remove(&key)
}

/// A REST value as the text a CSV would carry.
fn as_text(value: Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        other => Some(other.to_string()),
    }
}

/// A row as a JSON object of column → text: the dead letter's value.
fn row_json(columns: &Columns, row: &[Option<String>]) -> Vec<u8> {
    let map: Map<String, Value> = columns
        .select()
        .iter()
        .zip(row)
        .map(|(c, v)| (c.clone(), v.clone().map_or(Value::Null, Value::String)))
        .collect();
    serde_json::to_vec(&map).expect("serializing JSON values cannot fail")
}
