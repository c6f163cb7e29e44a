//! Header names of the Kafka records forcebridge writes and reads, and the dead-letter stages.
//!
//! Contract: every `forcebridge.*` header name is a constant here and nowhere else; each is
//! documented where users read it (README, "Kafka record format", "Write-back message format";
//! ARCHITECTURE.md, "Dead-letter records"). [`DeadLetterStage`] is every value of
//! [`ERROR_STAGE`]. Renaming one changes the record format: don't, without a migration note.

use std::fmt;

// Source records (one per changed record; README, "Kafka record format").
/// The event's replay id, hex.
pub const REPLAY_ID: &str = "forcebridge.replay_id";
/// The id of the event's writer schema.
pub const SCHEMA_ID: &str = "forcebridge.schema_id";
/// The CDC `changeType`, or `EVENT`.
pub const CHANGE_TYPE: &str = "forcebridge.change_type";
/// The CDC `changeOrigin`, when set.
pub const CHANGE_ORIGIN: &str = "forcebridge.change_origin";
/// The Pub/Sub channel.
pub const CHANNEL: &str = "forcebridge.channel";
/// The event's `EventUuid`.
pub const EVENT_ID: &str = "forcebridge.event_id";
/// Set (to `client_tag` or `commit_user`) on records of echo events when `source.echo.mode` is
/// `mark`.
pub const ECHO: &str = "forcebridge.echo";
/// `gap` or `resync`, on records re-read for gap and overflow events; `diff` or `full` on
/// records completed by a re-read (diff fields, `full_record`).
pub const REREAD: &str = "forcebridge.reread";
/// On snapshot records (operation `READ`): how the row was read, `bulk` or `rest`.
pub const SNAPSHOT: &str = "forcebridge.snapshot";

// Write-back messages (README, "Write-back message format").
/// The object API name, when the value does not name it.
pub const OBJECT: &str = "forcebridge.object";
/// `insert`, `update`, `upsert` or `delete`, when the value does not name it.
pub const OPERATION: &str = "forcebridge.operation";

// Dead letters (both sides) and conflicts (the sink).
/// Where it failed: a [`DeadLetterStage`].
pub const ERROR_STAGE: &str = "forcebridge.error.stage";
/// Why, in words.
pub const ERROR_REASON: &str = "forcebridge.error.reason";
/// The original length of a value cut to fit Kafka's limit.
pub const ERROR_TRUNCATED_FROM: &str = "forcebridge.error.truncated_from";
/// The sink: what of the original record was cut so that its dead letter or conflict record
/// fits Kafka's limit: `key`, `value`, `headers`, comma-separated.
pub const ERROR_TRUNCATED: &str = "forcebridge.error.truncated";
/// The sink: how many of the original record's headers were left out to fit, and their size:
/// `3 of 5 (1048600 bytes)`.
pub const ERROR_HEADERS_DROPPED: &str = "forcebridge.error.headers_dropped";
/// The sink: Salesforce's HTTP status of the refusal.
pub const ERROR_STATUS_CODE: &str = "forcebridge.error.status_code";
/// The sink: Salesforce's error message.
pub const ERROR_MESSAGE: &str = "forcebridge.error.message";
/// The sink: the fields Salesforce named.
pub const ERROR_FIELDS: &str = "forcebridge.error.fields";
/// The sink: how many times the record was sent.
pub const ERROR_ATTEMPTS: &str = "forcebridge.error.attempts";
/// The sink: the write-back message's topic.
pub const SOURCE_TOPIC: &str = "forcebridge.source.topic";
/// The sink: the write-back message's partition.
pub const SOURCE_PARTITION: &str = "forcebridge.source.partition";
/// The sink: the write-back message's offset.
pub const SOURCE_OFFSET: &str = "forcebridge.source.offset";
/// A conflict: the Salesforce record's Id.
pub const CONFLICT_RECORD_ID: &str = "forcebridge.conflict.record_id";
/// A conflict: the record's `SystemModstamp` in Salesforce.
pub const CONFLICT_SALESFORCE_MODSTAMP: &str = "forcebridge.conflict.salesforce_modstamp";
/// A conflict: the message's own timestamp.
pub const CONFLICT_RECORD_TIMESTAMP: &str = "forcebridge.conflict.record_timestamp";
/// A conflict: why the write lost: `older` (than `SystemModstamp`) or `same_second` (in the
/// same second as `SystemModstamp`, which has second precision: `sink.same_second_winner`).
pub const CONFLICT_REASON: &str = "forcebridge.conflict.reason";
/// A conflict: who changed the record last in Salesforce.
pub const CONFLICT_LAST_MODIFIED_BY: &str = "forcebridge.conflict.last_modified_by";

/// Where a record could not be processed: the value of [`ERROR_STAGE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterStage {
    /// The source: the event's schema could not be had (blank or unknown id).
    Schema,
    /// The source: the payload is not a datum of its schema, or its header is unusable.
    Decode,
    /// The source: a header bitmap could not be expanded.
    Bitmap,
    /// The source: no topic name can be made for the event's object.
    Route,
    /// The source: a gap or overflow event's records could not be re-read.
    Gap,
    /// The source: the large text fields an event carries as diffs (`diffFields`) could not be
    /// re-read.
    Diff,
    /// The source: the UPDATE records of a `full_record` channel could not be completed with
    /// the records' current values.
    Full,
    /// The source: a record would be larger than Kafka accepts.
    Size,
    /// The source: a gap marker (the org rejected the replay id; events may be missing).
    Replay,
    /// The source: a snapshot row that does not fit the object's change event schema.
    Snapshot,
    /// The sink: the write-back message cannot be parsed.
    SinkMessage,
    /// The sink: a field the object's describe refuses (unknown, read-only, formula, a compound
    /// given whole, a value of the wrong type), or an object the org does not describe; found
    /// before any write call.
    SinkField,
    /// The sink: the last-write-wins lookup was refused.
    SinkLookup,
    /// The sink: Salesforce refused the write.
    SinkWrite,
}

impl DeadLetterStage {
    /// The header value.
    pub const fn as_str(self) -> &'static str {
        match self {
            DeadLetterStage::Schema => "schema",
            DeadLetterStage::Decode => "decode",
            DeadLetterStage::Bitmap => "bitmap",
            DeadLetterStage::Route => "route",
            DeadLetterStage::Gap => "gap",
            DeadLetterStage::Diff => "diff",
            DeadLetterStage::Full => "full",
            DeadLetterStage::Size => "size",
            DeadLetterStage::Snapshot => "snapshot",
            DeadLetterStage::Replay => "replay",
            DeadLetterStage::SinkMessage => "sink.message",
            DeadLetterStage::SinkField => "sink.field",
            DeadLetterStage::SinkLookup => "sink.lookup",
            DeadLetterStage::SinkWrite => "sink.write",
        }
    }
}

impl fmt::Display for DeadLetterStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for DeadLetterStage {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// The longest text forcebridge puts in one of its own headers (a reason, an error message), so
/// that a long error body never makes the dead letter itself too large.
pub(crate) const MAX_HEADER_TEXT: usize = 8 * 1024;

/// `text` cut to at most `max` bytes, at a character boundary.
pub(crate) fn cut_text(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    &text[..cut]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_are_cut_at_a_character_boundary() {
        assert_eq!(cut_text("short", 10), "short");
        assert_eq!(cut_text("abcdef", 3), "abc");
        // 'é' is two bytes: a cut inside it backs off to before it.
        assert_eq!(cut_text("aé", 2), "a");
        assert!(cut_text(&"x".repeat(20_000), MAX_HEADER_TEXT).len() == MAX_HEADER_TEXT);
    }
}
