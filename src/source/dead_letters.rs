//! Dead letters of the source: events that cannot become records, kept with the reason.
//!
//! Contract: an event that cannot be decoded (stage `schema`, `decode`, `bitmap`), routed
//! (`route`), re-read (`gap`) or whose record Kafka would refuse as too large (`size`, checked
//! before any of its records is sent) is written to the dead-letter topic: key = the replay id
//! hex, value = the raw Avro payload, headers naming the stage, the reason (cut to 8 KiB), the
//! channel, the replay id, the schema id and the event id. Raw bytes that alone exceed Kafka's
//! limit are cut to fit and marked `forcebridge.error.truncated_from`. The dead letter is
//! registered under the event's own handle, so the checkpoint moves past the event only once
//! Kafka has it. [`write_gap_marker`] records a replay gap (stage `replay`) the same way.

use std::sync::atomic::Ordering;

use super::setup::Shared;
use crate::config::{Config, ReplayRejectedPolicy};
use crate::kafka::headers::{self, DeadLetterStage};
use crate::kafka::{EventHandle, KafkaError, OutgoingRecord, Producer};
use crate::ops::telemetry::ChannelStats;
use crate::source::cdc::{self, RawEvent};
use tracing::warn;

/// Kafka's record size limit ([`crate::kafka::max_record_bytes`]).
fn max_record_bytes(config: &Config) -> usize {
    crate::kafka::max_record_bytes(&config.kafka)
}

/// The size librdkafka counts against `message.max.bytes`: key, value and headers (with a
/// generous allowance for the header framing).
fn record_size<'h>(
    key: &[u8],
    value: Option<&[u8]>,
    headers: impl IntoIterator<Item = (&'h str, &'h [u8])>,
) -> usize {
    key.len()
        + value.map_or(0, <[u8]>::len)
        + headers
            .into_iter()
            .map(|(k, v)| k.len() + v.len() + 10)
            .sum::<usize>()
}

/// Why an event goes to the dead-letter topic.
pub(super) struct DeadLetter {
    pub(super) stage: DeadLetterStage,
    pub(super) reason: String,
}

/// A record that cannot be written in Debezium's envelope: stage `decode`.
impl From<crate::source::cdc::DebeziumError> for DeadLetter {
    fn from(err: crate::source::cdc::DebeziumError) -> Self {
        DeadLetter {
            stage: DeadLetterStage::Decode,
            reason: err.to_string(),
        }
    }
}

/// Writes a channel's dead letters (see the module docs).
pub(super) struct DeadLetters<'a> {
    producer: &'a Producer,
    topic: &'a str,
    /// Kafka's record size limit: larger records dead-letter their event.
    max_record_bytes: usize,
    stats: &'a ChannelStats,
}

impl<'a> DeadLetters<'a> {
    pub(super) fn new(shared: &'a Shared, producer: &'a Producer, stats: &'a ChannelStats) -> Self {
        DeadLetters {
            producer,
            topic: &shared.config.kafka.dead_letter_topic,
            max_record_bytes: max_record_bytes(&shared.config),
            stats,
        }
    }

    /// Refuses an event with a record Kafka would refuse as too large, before any of its
    /// records is sent.
    pub(super) fn check_sizes(&self, records: &[cdc::OutRecord]) -> Result<(), DeadLetter> {
        for record in records {
            let headers = record.headers.iter().map(|(k, v)| (*k, v.as_bytes()));
            let size = record_size(record.key.as_bytes(), record.value.as_deref(), headers);
            if size > self.max_record_bytes {
                return Err(DeadLetter {
                    stage: DeadLetterStage::Size,
                    reason: format!(
                        "the Kafka record of {} {} would be {size} bytes, over the limit of {} (kafka.properties.message.max.bytes)",
                        record.object, record.key, self.max_record_bytes
                    ),
                });
            }
        }
        Ok(())
    }

    /// Writes the raw event to the dead-letter topic with the reason in headers.
    pub(super) async fn write(
        &self,
        raw: &RawEvent<'_>,
        dead: &DeadLetter,
        handle: &EventHandle,
    ) -> Result<(), KafkaError> {
        let replay_hex = hex::encode(raw.replay_id);
        warn!(
            stage = dead.stage.as_str(),
            reason = %dead.reason,
            replay_id = %replay_hex,
            schema_id = raw.schema_id,
            "event sent to the dead-letter topic"
        );
        self.stats
            .events_dead_lettered
            .fetch_add(1, Ordering::Relaxed);
        let original_len = raw.payload.len().to_string();
        // A reason (e.g. a long REST error body) never makes the dead letter itself too large.
        let reason = headers::cut_text(&dead.reason, headers::MAX_HEADER_TEXT);
        let mut headers: Vec<(&str, &[u8])> = vec![
            (headers::ERROR_STAGE, dead.stage.as_str().as_bytes()),
            (headers::ERROR_REASON, reason.as_bytes()),
            (headers::CHANNEL, raw.channel.as_bytes()),
            (headers::REPLAY_ID, replay_hex.as_bytes()),
            (headers::SCHEMA_ID, raw.schema_id.as_bytes()),
            (headers::EVENT_ID, raw.event_id.as_bytes()),
        ];
        // The raw bytes, unless they alone exceed Kafka's limit: then their head, marked.
        let framing = record_size(replay_hex.as_bytes(), None, headers.iter().copied()) + 64;
        let room = self.max_record_bytes.saturating_sub(framing);
        let value = if raw.payload.len() > room {
            headers.push((headers::ERROR_TRUNCATED_FROM, original_len.as_bytes()));
            &raw.payload[..room]
        } else {
            raw.payload
        };
        let outgoing = OutgoingRecord {
            topic: self.topic,
            key: Some(replay_hex.as_bytes()),
            value: Some(value),
            headers: &headers,
        };
        self.producer.send(outgoing, handle.token()).await
    }
}

/// Writes a gap marker to the dead-letter topic and waits until Kafka has it: a record saying
/// which replay id the org rejected and where the channel resumed, so a consumer knows events may
/// be missing.
pub(super) async fn write_gap_marker(
    shared: &Shared,
    producer: &Producer,
    channel: &str,
    rejected: &[u8],
    resumed_from: ReplayRejectedPolicy,
    reason: &str,
) -> Result<(), String> {
    let window = crate::kafka::AckWindow::new();
    let handle = window.begin(bytes::Bytes::new());
    send_gap_marker(
        shared,
        producer,
        channel,
        rejected,
        resumed_from,
        reason,
        &handle,
    )
    .await
    .map_err(|e| e.to_string())?;
    handle.seal();
    // The marker is durable before any event after the gap is processed.
    window.wait_idle().await;
    window.failure().map_or(Ok(()), Err)
}

/// Sends a gap marker (see [`write_gap_marker`]) under `handle`; `resumed_from` `resync` says
/// that a resync follows, so nothing will be missing.
pub(super) async fn send_gap_marker(
    shared: &Shared,
    producer: &Producer,
    channel: &str,
    rejected: &[u8],
    resumed_from: ReplayRejectedPolicy,
    reason: &str,
    handle: &EventHandle,
) -> Result<(), KafkaError> {
    let rejected_hex = hex::encode(rejected);
    let resumed = match resumed_from {
        ReplayRejectedPolicy::Latest => "latest",
        ReplayRejectedPolicy::Resync => "resync",
        _ => "earliest",
    };
    let value = serde_json::json!({
        "gap": resumed_from != ReplayRejectedPolicy::Resync,
        "channel": channel,
        "rejected_replay_id": rejected_hex,
        "resumed_from": resumed,
        "reason": reason,
    })
    .to_string();
    let headers: [(&str, &[u8]); 4] = [
        (
            headers::ERROR_STAGE,
            DeadLetterStage::Replay.as_str().as_bytes(),
        ),
        (headers::ERROR_REASON, reason.as_bytes()),
        (headers::CHANNEL, channel.as_bytes()),
        (headers::REPLAY_ID, rejected_hex.as_bytes()),
    ];
    let record = OutgoingRecord {
        topic: &shared.config.kafka.dead_letter_topic,
        key: Some(channel.as_bytes()),
        value: Some(value.as_bytes()),
        headers: &headers,
    };
    producer.send(record, handle.token()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_size_counts_key_value_and_headers() {
        let headers: [(&str, &[u8]); 2] = [("a", b"12"), ("bc", b"")];
        assert_eq!(
            record_size(b"key", Some(b"value"), headers.iter().copied()),
            3 + 5 + (1 + 2 + 10) + (2 + 10)
        );
        assert_eq!(record_size(b"", None, std::iter::empty()), 0);
    }
}
