//! The errors of the Kafka stage, and what a failed transaction step means for its producer.
//!
//! Contract: [`KafkaError::transaction_failure`] is the one classification of a transaction
//! step's failure (fenced, fatal, unsupported, abortable, retriable) that the source's
//! transactions act on; [`KafkaError::is_record_too_large`] tells a record Kafka refuses for its
//! size (dead-lettered, not retried).

use rdkafka::error::{KafkaError as RdKafkaError, RDKafkaErrorCode};

use crate::retry::Directive;

/// Errors of the Kafka stage.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// The producer could not be created (bad property, unknown compression, ...).
    #[error("creating the Kafka producer")]
    Create(#[source] RdKafkaError),
    /// librdkafka refused a record for a reason other than a full queue.
    #[error("enqueueing a record for topic {topic:?}")]
    Enqueue {
        /// The target topic.
        topic: String,
        /// The librdkafka error.
        #[source]
        source: RdKafkaError,
    },
    /// Not every record was delivered within the flush timeout.
    #[error("flushing the Kafka producer")]
    Flush(#[source] RdKafkaError),
    /// The embedded (mock) Kafka cluster failed.
    #[error("embedded Kafka: {what}")]
    Embedded {
        /// What was being done.
        what: String,
        /// The librdkafka error.
        #[source]
        source: RdKafkaError,
    },
    /// A metadata or watermark request failed.
    #[error("Kafka {what}")]
    Client {
        /// What was being done.
        what: &'static str,
        /// The librdkafka error.
        #[source]
        source: RdKafkaError,
    },
    /// A blocking helper task failed.
    #[error("Kafka producer task failed: {0}")]
    Task(String),
    /// A transaction step failed.
    #[error("Kafka transaction of transactional id {transactional_id:?}: {what} failed")]
    Transaction {
        /// The producer's `transactional.id`.
        transactional_id: String,
        /// `init`, `begin`, `commit` or `abort`.
        what: &'static str,
        /// The librdkafka error.
        #[source]
        source: RdKafkaError,
    },
}

/// What a failed transaction step leaves behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionFailure {
    /// Another producer with the same `transactional.id` took over: this one must stop.
    Fenced,
    /// The producer is unusable (fatal error): stop, or make a new one.
    Fatal,
    /// The cluster does not support transactions (e.g. no `EndTxn` API).
    Unsupported,
    /// Abort the transaction and start again from the last committed checkpoint.
    Abortable,
    /// The step may simply be repeated (e.g. a commit that timed out).
    Retriable,
}

impl TransactionFailure {
    /// What the channel does after a failed transaction step: a step retried in place
    /// (`Retriable`), the channel restarted from its last committed checkpoint after an abort
    /// (`Abortable`), or the pipeline stopped (fenced by a newer owner, fatal, unsupported).
    pub fn directive(self) -> Directive {
        match self {
            TransactionFailure::Retriable => Directive::Retry,
            TransactionFailure::Abortable => Directive::Restart,
            TransactionFailure::Fenced
            | TransactionFailure::Fatal
            | TransactionFailure::Unsupported => Directive::Stop,
        }
    }
}

impl KafkaError {
    /// Kafka did not answer a metadata or admin request (or its helper task failed): waiting
    /// for the cluster can help (issue 19, item 8: retried at start). A client the settings
    /// cannot create, a refused record or a transaction failure cannot be waited out.
    pub fn is_unreachable(&self) -> bool {
        use rdkafka::types::RDKafkaErrorCode as Code;
        match self {
            // The broker answered, and refused: permissions, policy or the topic's settings.
            KafkaError::Client {
                source:
                    RdKafkaError::AdminOp(
                        Code::TopicAuthorizationFailed
                        | Code::ClusterAuthorizationFailed
                        | Code::PolicyViolation
                        | Code::InvalidTopic
                        | Code::InvalidPartitions
                        | Code::InvalidReplicationFactor
                        | Code::InvalidReplicaAssignment
                        | Code::InvalidConfig,
                    ),
                ..
            } => false,
            KafkaError::Client { .. } | KafkaError::Task(_) => true,
            _ => false,
        }
    }

    /// For [`KafkaError::Transaction`]: what the failure leaves behind. Other errors are
    /// [`TransactionFailure::Abortable`].
    pub fn transaction_failure(&self) -> TransactionFailure {
        let KafkaError::Transaction { source, .. } = self else {
            return TransactionFailure::Abortable;
        };
        let fenced = |code: RDKafkaErrorCode| {
            matches!(
                code,
                RDKafkaErrorCode::Fenced
                    | RDKafkaErrorCode::ProducerFenced
                    | RDKafkaErrorCode::InvalidProducerEpoch
                    | RDKafkaErrorCode::TransactionCoordinatorFenced
            )
        };
        match source {
            RdKafkaError::Transaction(err) if fenced(err.code()) => TransactionFailure::Fenced,
            RdKafkaError::Transaction(err)
                if err.code() == RDKafkaErrorCode::UnsupportedFeature =>
            {
                TransactionFailure::Unsupported
            }
            RdKafkaError::Transaction(err) if err.is_fatal() => TransactionFailure::Fatal,
            RdKafkaError::Transaction(err) if err.is_retriable() => TransactionFailure::Retriable,
            RdKafkaError::Transaction(_) => TransactionFailure::Abortable,
            other => match other.rdkafka_error_code() {
                Some(code) if fenced(code) => TransactionFailure::Fenced,
                Some(RDKafkaErrorCode::UnsupportedFeature) => TransactionFailure::Unsupported,
                _ => TransactionFailure::Abortable,
            },
        }
    }

    /// librdkafka refused to enqueue a record because it exceeds `message.max.bytes`.
    pub fn is_record_too_large(&self) -> bool {
        matches!(
            self,
            KafkaError::Enqueue {
                source: RdKafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge),
                ..
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_is_told_from_refused() {
        let client = |source| KafkaError::Client {
            what: "topic creation",
            source,
        };
        assert!(
            client(RdKafkaError::MetadataFetch(
                RDKafkaErrorCode::OperationTimedOut
            ))
            .is_unreachable()
        );
        assert!(KafkaError::Task("join".into()).is_unreachable());
        assert!(
            !client(RdKafkaError::AdminOp(
                RDKafkaErrorCode::TopicAuthorizationFailed
            ))
            .is_unreachable()
        );
        assert!(!KafkaError::Create(RdKafkaError::ClientCreation("bad".into())).is_unreachable());
    }

    #[test]
    fn transaction_failures_are_classified() {
        let produce = |code| KafkaError::Enqueue {
            topic: "t".into(),
            source: RdKafkaError::MessageProduction(code),
        };
        let step = |code| KafkaError::Transaction {
            transactional_id: "c/data/X".into(),
            what: "commit",
            source: RdKafkaError::MessageProduction(code),
        };
        for fenced in [
            RDKafkaErrorCode::ProducerFenced,
            RDKafkaErrorCode::InvalidProducerEpoch,
            RDKafkaErrorCode::Fenced,
        ] {
            assert_eq!(
                step(fenced).transaction_failure(),
                TransactionFailure::Fenced
            );
        }
        assert_eq!(
            step(RDKafkaErrorCode::UnsupportedFeature).transaction_failure(),
            TransactionFailure::Unsupported
        );
        assert_eq!(
            step(RDKafkaErrorCode::MessageTimedOut).transaction_failure(),
            TransactionFailure::Abortable
        );
        let too_large = produce(RDKafkaErrorCode::MessageSizeTooLarge);
        assert!(too_large.is_record_too_large());
        assert!(!produce(RDKafkaErrorCode::QueueFull).is_record_too_large());
    }
}
