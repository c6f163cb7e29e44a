//! The source: Salesforce Pub/Sub channels → Kafka, one task group per channel.
//!
//! Contract (at-least-once, per channel, in replay order):
//! * A **reader** task owns the `Subscribe` stream and hands events to the **processor** through a
//!   bounded channel; credits are topped up only as events are handed on, so a slow Kafka stops
//!   the stream instead of filling memory. A failed stream is rebuilt (backoff with jitter,
//!   re-login on auth errors) from the last event handed on, so nothing is skipped or repeated.
//! * The processor decodes each event with the schema its own `schema_id` names, fans it out to
//!   one Kafka record per record Id, and registers the records in the channel's [`crate::kafka::AckWindow`].
//!   An event that cannot be decoded goes to the dead-letter topic with the reason and its raw
//!   bytes; it is never dropped.
//! * An event caused by forcebridge's own write-back (see [`crate::source::echo`]) is dropped (it still
//!   moves the checkpoint), marked with the `forcebridge.echo` header, or passed, per
//!   `source.echo.mode`.
//! * A **checkpointer** writes the window's durable replay id (every earlier event acknowledged by
//!   Kafka) to the checkpoint topic every `checkpoint_interval` and once more on shutdown.
//!   Keepalive `latest_replay_id`s pass through the window too, so they are checkpointed in order.
//! * If Kafka fails to deliver a record, the channel restarts from its durable checkpoint: records
//!   after it may be produced twice (each carries its replay id), none are lost.
//! * With `source.delivery: exactly_once` the channel has its own transactional producer
//!   (`transactional.id` = `Config::transactional_id`), initialised before the checkpoints are
//!   read, which fences an earlier owner of the channel. There is no separate checkpointer: every
//!   `checkpoint_interval` the processor waits until Kafka acknowledged every record of the open
//!   transaction, adds the checkpoint record to it and commits. A failure aborts the transaction
//!   and restarts from the last committed checkpoint; being fenced stops the channel.
//! * Cancellation stops intake at once, flushes Kafka within `drain_timeout` and writes the
//!   final checkpoints (commits the last transaction, or aborts it if an event was cut short).
//! * A record larger than Kafka accepts (`message.max.bytes`) dead-letters its event (stage
//!   `size`) instead of failing the channel.
//!
//! Files, in the order of the data flow: [`supervisor`] (the entry point [`run`], one task per
//! channel, attempts and restarts), `setup` (login, channels, producers, checkpoints), `reader`
//! (the stream and its credits), `processor` (decode → resolve → produce; one event's steps and
//! the `full_record` batches in `batch`, the reads in `full_record`), `routes` (object →
//! topic), `dead_letters`, `transactions` (exactly-once), `checkpointer` (at-least-once); with
//! [`cdc`] (schema cache, Avro, header, bitmaps, envelope), [`echo`], [`gap`] (re-reads) and
//! [`checkpoint`] (the store).

mod batch;
mod blank_schema;
pub mod cdc;
pub mod checkpoint;
mod checkpointer;
mod dead_letters;
pub mod diffs;
pub mod echo;
mod error;
pub(crate) mod full_record;
pub mod gap;
mod processor;
mod reader;
mod routes;
mod setup;
pub(crate) mod shape;
pub mod snapshot;
pub mod supervisor;
mod transactions;

pub use self::error::PipelineError;
pub use self::supervisor::run;
