//! The decoder's vocabulary: an event as received, a decoded event and its header, and why an
//! event could not be decoded (with the dead-letter stage it belongs to).

use serde_json::{Map, Value};

use crate::kafka::headers::DeadLetterStage;

/// One event as received from Pub/Sub, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct RawEvent<'a> {
    pub channel: &'a str,
    pub replay_id: &'a [u8],
    pub event_id: &'a str,
    pub schema_id: &'a str,
    pub payload: &'a [u8],
}

/// A decoded `ChangeEventHeader`; the bitmaps are already expanded to field names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeHeader {
    pub entity_name: String,
    pub record_ids: Vec<String>,
    pub change_type: String,
    /// `None` when absent or empty.
    pub change_origin: Option<String>,
    pub transaction_key: String,
    pub sequence_number: i32,
    pub commit_timestamp: i64,
    pub commit_number: i64,
    pub commit_user: String,
    pub changed_fields: Vec<String>,
    pub nulled_fields: Vec<String>,
    pub diff_fields: Vec<String>,
}

/// One decoded event.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedEvent {
    /// `Some` for Change Data Capture events, `None` for Platform Events.
    pub header: Option<ChangeHeader>,
    /// The envelope's `record` (without `ChangeEventHeader`).
    pub record: Map<String, Value>,
    /// The body's `CreatedDate` when present and set (a Platform Event's commit timestamp).
    pub created_date: Option<i64>,
}

/// Why an event could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The payload is not a datum of the writer schema (truncated, garbage, trailing bytes).
    #[error("corrupt Avro payload at byte {offset}: {reason}")]
    Avro { offset: usize, reason: String },
    /// A header bitmap could not be expanded against the writer schema.
    #[error("bad {field} bitmap: {source}")]
    Bitmap {
        field: &'static str,
        #[source]
        source: BitmapError,
    },
    /// A required `ChangeEventHeader` field is absent from the schema, null or (ids) empty.
    #[error("ChangeEventHeader field `{field}` is missing, null or empty")]
    MissingHeaderField { field: &'static str },
    /// A `ChangeEventHeader` field has a type we cannot interpret.
    #[error("ChangeEventHeader field `{field}` has an unexpected type (expected {expected})")]
    HeaderFieldType {
        field: &'static str,
        expected: &'static str,
    },
}

impl DecodeError {
    /// The dead-letter stage (`forcebridge.error.stage`): `bitmap` or `decode`.
    pub fn stage(&self) -> DeadLetterStage {
        match self {
            DecodeError::Bitmap { .. } => DeadLetterStage::Bitmap,
            _ => DeadLetterStage::Decode,
        }
    }
}

/// Why a bitmap element could not be expanded. Every variant names the element.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BitmapError {
    #[error("bitmap element {element:?} is neither `0x<hex>` nor `<position>-0x<hex>`")]
    Malformed { element: String },
    #[error("bitmap element {element:?} has invalid hex: {reason}")]
    BadHex { element: String, reason: String },
    #[error(
        "bitmap element {element:?} names compound position {position}, but the schema has {field_count} fields"
    )]
    PositionOutOfRange {
        element: String,
        position: usize,
        field_count: usize,
    },
    #[error(
        "bitmap element {element:?} sets bit {bit}, but {target} has only {field_count} fields"
    )]
    BitOutOfRange {
        element: String,
        bit: usize,
        target: String,
        field_count: usize,
    },
    #[error(
        "bitmap element {element:?} names position {position} (`{field}`), which is not a compound field"
    )]
    NotCompound {
        element: String,
        position: usize,
        field: String,
    },
}

/// One Kafka record to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutRecord {
    /// Entity name (CDC) or event name (Platform Event); input to the topic template.
    pub object: String,
    pub key: String,
    /// The JSON envelope; `None` = tombstone.
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(&'static str, String)>,
    /// `changeType`, or `EVENT` for a Platform Event.
    pub operation: String,
}
