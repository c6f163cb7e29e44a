//! Dead letters and conflicts: a record the sink finishes without writing it goes, as it came
//! (key, value, headers), to the dead-letter or the conflicts topic, with headers that say why.
//!
//! Contract:
//! * [`Reporter::dead_letter`] sends the record to the dead-letter topic with the reason
//!   ([`Failure`]: stage, status code, message, fields, attempts) in `forcebridge.error.*`
//!   headers; [`Reporter::conflict`] sends it to the conflicts topic with Salesforce's
//!   `SystemModstamp`, the record's timestamp, the reason (`older`, `same_second`) and the last
//!   modifier in `forcebridge.conflict.*` headers. Both add `forcebridge.source.*` (topic, partition, offset) and count the record in
//!   [`SinkStats`].
//! * The record's [`AckToken`] goes with it: the record counts as finished (and its offset as
//!   committable) once Kafka acknowledges the report, not before.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tracing::{debug, warn};

use super::fit;
use super::message::WriteOp;
use super::plan::{ConflictReason, Current};
use crate::kafka::headers::{self, DeadLetterStage};
use crate::kafka::{AckToken, KafkaError, OutgoingRecord, Producer};
use crate::ops::telemetry::SinkStats;
use crate::salesforce::rest::ApiError;

/// Where a record came from, kept to dead-letter or report it.
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    pub(crate) topic: String,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) value: Option<Vec<u8>>,
    pub(crate) headers: Vec<(String, Vec<u8>)>,
}

/// One record of a batch: its write, where it came from, and its offset's token.
#[derive(Debug)]
pub(crate) struct Item {
    pub(crate) op: WriteOp,
    pub(crate) origin: Origin,
    pub(crate) token: AckToken,
}

/// A reason to dead-letter.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    /// `sink.message`, `sink.lookup` or `sink.write`.
    pub(crate) stage: DeadLetterStage,
    pub(crate) code: String,
    pub(crate) message: String,
    pub(crate) fields: Vec<String>,
    pub(crate) attempts: u32,
}

impl Failure {
    pub(crate) fn from_api(stage: DeadLetterStage, e: &ApiError, attempts: u32) -> Self {
        Self {
            stage,
            code: e.code.clone(),
            message: e.message.clone(),
            fields: e.fields.clone(),
            attempts,
        }
    }
}

/// Writes dead letters and conflicts.
#[derive(Clone)]
pub(crate) struct Reporter {
    pub(crate) producer: Producer,
    pub(crate) dead_letter_topic: String,
    pub(crate) conflicts_topic: String,
    pub(crate) stats: Arc<SinkStats>,
    /// Kafka's record limit: every dead letter and conflict record is cut to fit it
    /// ([`super::fit`]).
    pub(crate) max_record_bytes: usize,
}

fn source_headers(origin: &Origin) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (headers::SOURCE_TOPIC, origin.topic.clone().into_bytes()),
        (
            headers::SOURCE_PARTITION,
            origin.partition.to_string().into_bytes(),
        ),
        (
            headers::SOURCE_OFFSET,
            origin.offset.to_string().into_bytes(),
        ),
    ]
}

impl Reporter {
    async fn send(
        &self,
        topic: &str,
        origin: &Origin,
        extra: Vec<(&'static str, Vec<u8>)>,
        token: AckToken,
    ) -> Result<(), KafkaError> {
        // Whatever arrived, the copy fits Kafka's limit, or Kafka would refuse it and the
        // partition would never move on.
        let cut = fit::fit(
            self.max_record_bytes,
            origin.key.as_deref(),
            origin.value.as_deref(),
            &origin.headers,
            &extra,
        );
        if !cut.notes.is_empty() {
            warn!(topic = %origin.topic, partition = origin.partition, offset = origin.offset,
                "record cut to fit Kafka's message.max.bytes in its dead letter or conflict record");
        }
        let mut headers = cut.headers;
        headers.extend(extra.iter().map(|(k, v)| (*k, v.as_slice())));
        headers.extend(cut.notes.iter().map(|(k, v)| (*k, v.as_slice())));
        let record = OutgoingRecord {
            topic,
            key: cut.key,
            value: cut.value,
            headers: &headers,
        };
        self.producer.send(record, token).await
    }

    /// Sends the original record to the dead-letter topic with the reason in headers.
    pub(crate) async fn dead_letter(
        &self,
        origin: &Origin,
        failure: &Failure,
        token: AckToken,
    ) -> Result<(), KafkaError> {
        warn!(
            topic = %origin.topic,
            partition = origin.partition,
            offset = origin.offset,
            stage = failure.stage.as_str(),
            code = %failure.code,
            message = %failure.message,
            "write-back record sent to the dead-letter topic"
        );
        self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
        let reason = if failure.fields.is_empty() {
            format!("{}: {}", failure.code, failure.message)
        } else {
            format!(
                "{}: {} (fields: {})",
                failure.code,
                failure.message,
                failure.fields.join(", ")
            )
        };
        let mut extra = vec![
            (
                headers::ERROR_STAGE,
                failure.stage.as_str().as_bytes().to_vec(),
            ),
            (headers::ERROR_REASON, fit::cap_text(&reason).into_bytes()),
            (
                headers::ERROR_STATUS_CODE,
                failure.code.clone().into_bytes(),
            ),
            (
                headers::ERROR_MESSAGE,
                fit::cap_text(&failure.message).into_bytes(),
            ),
            (
                headers::ERROR_FIELDS,
                fit::cap_text(&failure.fields.join(",")).into_bytes(),
            ),
            (
                headers::ERROR_ATTEMPTS,
                failure.attempts.to_string().into_bytes(),
            ),
        ];
        extra.extend(source_headers(origin));
        self.send(&self.dead_letter_topic, origin, extra, token)
            .await
    }

    /// Sends the original record to the conflicts topic with both timestamps and the reason
    /// (`older`, `same_second`) in headers. `written`: the message's timestamp and why it lost.
    pub(crate) async fn conflict(
        &self,
        origin: &Origin,
        current: &Current,
        written: (i64, ConflictReason),
        token: AckToken,
    ) -> Result<(), KafkaError> {
        let (timestamp, reason) = written;
        debug!(record_id = %current.id, reason = reason.as_str(), "write loses to Salesforce's record: conflict");
        self.stats.conflicts.fetch_add(1, Ordering::Relaxed);
        let mut extra = vec![
            (headers::CONFLICT_RECORD_ID, current.id.clone().into_bytes()),
            (
                headers::CONFLICT_SALESFORCE_MODSTAMP,
                current
                    .modstamp
                    .map(crate::salesforce::sftime::format_datetime)
                    .unwrap_or_default()
                    .into_bytes(),
            ),
            (
                headers::CONFLICT_RECORD_TIMESTAMP,
                crate::salesforce::sftime::format_datetime(timestamp).into_bytes(),
            ),
            (
                headers::CONFLICT_REASON,
                reason.as_str().as_bytes().to_vec(),
            ),
            (
                headers::CONFLICT_LAST_MODIFIED_BY,
                current
                    .last_modified_by
                    .clone()
                    .unwrap_or_default()
                    .into_bytes(),
            ),
        ];
        extra.extend(source_headers(origin));
        self.send(&self.conflicts_topic, origin, extra, token).await
    }
}
