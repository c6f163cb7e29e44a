//! Why the source stops, and how an attempt of a channel ends.
//!
//! Contract: [`PipelineError`] is what [`super::run`] returns: each variant says what failed
//! (login, TLS, Pub/Sub, a channel, Kafka, the checkpoint topic, being fenced) and is final.
//! [`AttemptError`] is what one attempt of a channel ends with: `Fatal` stops the pipeline,
//! `DeliveryFailed` restarts the channel from its durable checkpoint (the supervisor decides).

use crate::kafka::KafkaError;
use crate::salesforce::auth::AuthError;
use crate::salesforce::pubsub::PubSubError;
use crate::salesforce::tls::TlsError;
use crate::source::checkpoint::CheckpointError;

/// Why the pipeline stopped.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Login failed.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client")]
    Http(#[source] reqwest::Error),
    /// The TLS settings (`salesforce.ca_file`) cannot be used.
    #[error("salesforce.ca_file: {0}")]
    Tls(#[from] TlsError),
    /// Pub/Sub failed in a way retrying cannot fix.
    #[error(transparent)]
    PubSub(#[from] PubSubError),
    /// A channel cannot be subscribed to.
    #[error("channel {channel}: {message}")]
    Channel { channel: String, message: String },
    /// Kafka could not be set up.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// The checkpoint topic could not be read or written.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// Exactly-once mode: another producer with this channel's transactional id took over.
    #[error(
        "channel {channel}: fenced: another forcebridge instance now owns transactional id \
         {transactional_id:?} (are two replicas configured with the same channel?); this one stops"
    )]
    Fenced {
        channel: String,
        transactional_id: String,
    },
}

/// How an attempt of a channel ended, when not by a stop: the supervisor stops the pipeline, or
/// restarts the channel from its durable checkpoint after a backoff.
#[derive(Debug)]
pub(super) enum AttemptError {
    /// [`crate::retry::Directive::Stop`]: the pipeline stops with this error.
    Stop(PipelineError),
    /// [`crate::retry::Directive::Restart`]: Kafka did not acknowledge a record (or a transaction
    /// step can be redone); the reason.
    Restart(String),
    /// `source.replay_rejected: resync`: the org rejected the checkpoint's replay id
    /// (`rejected`); the channel re-reads what changed since its commit timestamp, then streams.
    Resync {
        rejected: bytes::Bytes,
        reason: String,
    },
}
