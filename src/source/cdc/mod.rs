//! Decoding stage: Avro payload → [`DecodedEvent`] → Kafka [`OutRecord`]s with the JSON envelope.
//!
//! Contract (see `ARCHITECTURE.md`, "Kafka record format"):
//! * [`decode`] reads one raw Avro datum with the event's own writer schema ([`schema::EventSchema`],
//!   looked up by the event's `schema_id`). For CDC events it parses `ChangeEventHeader` and
//!   expands the `changedFields` / `nulledFields` / `diffFields` bitmaps (facts §11.4, including
//!   the `P-0xHEX` compound form) to field names. The body becomes `record`: fields that carry a
//!   value plus the nulled fields as `null`; compound fields are nested objects under the same
//!   rule; unions flattened; longs stay `i64`; bytes/fixed base64; non-finite doubles `null`.
//! * [`to_records`] fans out one [`OutRecord`] per record id (in order), each with the JSON
//!   envelope and headers, plus a tombstone after each `DELETE` when asked. Platform Events give
//!   one record keyed by the event id with operation `EVENT`.
//! * Corrupt payloads and bad bitmaps are errors ([`DecodeError::stage`] names the dead-letter
//!   stage), never panics.
//!
//! * [`encode`] does both in one pass for the pipeline.
//!
//! Hot path: the schema is compiled once per schema id (see [`avro`]); [`encode`] writes the
//! envelope's JSON text straight from the Avro bytes into reusable buffers ([`Scratch`]), with
//! no intermediate values; the part shared by an event's record ids is written once and copied
//! per record.
//!
//! Files: `event` (the vocabulary), `schema` (the schema cache the decoder owns), `layout`
//! (per-schema tables), `avro` (the compiled reader), `header` (`ChangeEventHeader`), `bitmap`
//! (bitmap expansion), `decode`, `envelope`, `debezium` (Debezium's envelope from forcebridge's,
//! for `source.format: debezium`), `debezium_direct` (the same written straight from the Avro
//! bytes, `encode_as`).

mod avro;
mod bitmap;
mod debezium;
mod debezium_direct;
mod decode;
mod envelope;
mod event;
mod header;
mod layout;
pub mod schema;

pub use self::debezium::{CONNECTOR, Debezium, DebeziumError, op_of};
pub use self::decode::Scratch;
pub use self::decode::{decode, expand_bitmaps};
pub use self::envelope::{
    Commit, Encoded, EnvelopeOptions, OPERATION_EVENT, encode, encode_as, to_records,
};
pub use self::event::BitmapError;
pub use self::event::{ChangeHeader, DecodeError, DecodedEvent, OutRecord, RawEvent};
pub use self::header::leading_string;

#[cfg(test)]
mod tests;
