//! Kafka transactions of the exactly-once source: one transactional producer per channel.
//!
//! Contract: [`Producer::transactional`] makes a producer with the channel's `transactional.id`;
//! [`Producer::init_transactions`] fences any earlier owner of that id and aborts its open
//! transaction; [`Producer::begin_transaction`] / [`Producer::commit_transaction`] /
//! [`Producer::abort_transaction`] frame the records and the checkpoint of one interval. Each step
//! runs on a blocking helper thread; its error says (through
//! [`KafkaError::transaction_failure`]) whether the transaction can be aborted and retried or the
//! producer is finished.

use std::time::Duration;

use rdkafka::producer::{Producer as _, ThreadedProducer};

use super::error::KafkaError;
use super::producer::{DeliveryContext, Producer};
use super::settings::KafkaSettings;

impl Producer {
    /// A transactional producer (exactly-once mode): as [`Producer::new`], plus
    /// `transactional.id` and `transaction.timeout.ms`. Call [`Producer::init_transactions`]
    /// before anything else.
    pub fn transactional(
        settings: &KafkaSettings,
        transactional_id: &str,
        transaction_timeout: Duration,
    ) -> Result<Producer, KafkaError> {
        Self::create(settings, Some((transactional_id, transaction_timeout)))
    }

    /// The `transactional.id` of a transactional producer.
    pub fn transactional_id(&self) -> Option<&str> {
        self.transactional_id.as_deref()
    }

    /// Registers the `transactional.id` with the broker: fences every earlier producer with the
    /// same id and aborts its open transaction. Blocks a helper thread up to `timeout`.
    pub async fn init_transactions(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.transaction_step("init", move |p| p.init_transactions(timeout))
            .await
    }

    /// Starts a transaction: every record sent until the commit or abort belongs to it.
    pub async fn begin_transaction(&self) -> Result<(), KafkaError> {
        self.transaction_step("begin", |p| p.begin_transaction())
            .await
    }

    /// Flushes and commits the open transaction, up to `timeout`.
    pub async fn commit_transaction(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.transaction_step("commit", move |p| p.commit_transaction(timeout))
            .await
    }

    /// Aborts the open transaction (purging records not yet sent), up to `timeout`.
    pub async fn abort_transaction(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.transaction_step("abort", move |p| p.abort_transaction(timeout))
            .await
    }

    /// Runs a (blocking) transaction call on a helper thread.
    async fn transaction_step(
        &self,
        what: &'static str,
        step: impl FnOnce(&ThreadedProducer<DeliveryContext>) -> rdkafka::error::KafkaResult<()>
        + Send
        + 'static,
    ) -> Result<(), KafkaError> {
        let transactional_id = self
            .transactional_id
            .as_deref()
            .unwrap_or("(not transactional)")
            .to_owned();
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || step(&inner))
            .await
            .map_err(|e| KafkaError::Task(e.to_string()))?
            .map_err(|source| KafkaError::Transaction {
                transactional_id,
                what,
                source,
            })
    }
}
