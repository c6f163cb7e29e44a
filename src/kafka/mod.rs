//! Kafka: the producer (and its transactions), topic naming and creation, the acknowledgement
//! window, client settings, and the embedded Kafka.
//!
//! # Contract
//!
//! * [`Producer`] is an idempotent librdkafka producer (`enable.idempotence=true`, `acks=all`).
//!   [`Producer::send`] returns once librdkafka accepted the record into its local queue; while
//!   that queue is full it waits (without blocking the runtime) and retries the same record: that
//!   is the backpressure towards the source. The delivery outcome is reported to the record's
//!   [`AckToken`] from librdkafka's delivery callback (on the producer's polling thread), never
//!   awaited per record. Retries of a produce request are librdkafka's (`message.timeout.ms`).
//! * In exactly-once mode each source channel has its own *transactional* producer
//!   ([`Producer::transactional`], `transactional.id` per channel): [`Producer::init_transactions`]
//!   fences any earlier owner of that id and aborts its open transaction;
//!   [`Producer::begin_transaction`] / [`Producer::commit_transaction`] /
//!   [`Producer::abort_transaction`] frame the records and the checkpoint of one interval. Their
//!   errors say whether the transaction can be aborted and retried or the producer is finished
//!   ([`TransactionFailure`]: fenced by a newer owner, or fatal).
//! * [`render_topic`] renders a topic-name template and validates the result as a legal Kafka
//!   topic name.
//! * [`EmbeddedKafka`] is the librdkafka mock cluster used by the demo and the tests. It is
//!   `!Send`: keep it on the stack of the thread that created it, and drop clients before it.

//!
//! Files: `settings` (how to reach Kafka; the one builder of client configs), `error`,
//! `producer`, `transactions`, `ack` (the [`AckWindow`] shared by source and sink), `topics`
//! (names), `admin` (creation), `context` (the reading consumers' context: the end of a partition
//! is not an error), `probe` (the bench's latency probe), `mock` (the embedded
//! cluster, record counts).

pub mod ack;
mod admin;
mod context;
mod error;
pub mod headers;
mod mock;
mod probe;
mod producer;
mod settings;
mod topics;
mod transactions;

pub use self::ack::{AckToken, AckWindow, EventHandle};
pub use self::admin::TopicAdmin;
pub use self::context::EndIsNotAnError;
pub(crate) use self::context::{cached_high_watermark, is_partition_end};
pub use self::error::{KafkaError, TransactionFailure};
pub use self::mock::{EmbeddedKafka, count_records};
pub use self::probe::{LatencyCounts, LatencyProbe, LatencySplit, install_latency_probe};
pub use self::producer::{OutgoingRecord, Producer};
pub(crate) use self::settings::max_record_bytes;
pub use self::settings::{KafkaSettings, RedactedProperties, is_secret_property};
pub(crate) use self::topics::TopicTemplates;
pub use self::topics::{TopicNameError, render_topic};
