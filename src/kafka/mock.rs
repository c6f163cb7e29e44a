//! The embedded Kafka (librdkafka's mock cluster) of the demo, the benchmarks and the tests, and
//! a record count by watermarks.
//!
//! Contract: [`EmbeddedKafka`] is `!Send`: keep it on the stack of the thread that created it,
//! and drop clients before it. [`count_records`] reads watermarks only (no consumption).

use std::time::Duration;

use rdkafka::error::KafkaError as RdKafkaError;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

use super::error::KafkaError;
use super::settings::KafkaSettings;

/// The embedded Kafka for the demo and tests: a librdkafka mock cluster.
///
/// `!Send`: keep it on the thread/stack that created it, and drop every client before it.
pub struct EmbeddedKafka {
    cluster: MockCluster<'static, DefaultProducerContext>,
}

impl EmbeddedKafka {
    /// Starts a mock cluster of `brokers` brokers on loopback.
    pub fn start(brokers: i32) -> Result<Self, KafkaError> {
        let cluster = MockCluster::new(brokers).map_err(|source| KafkaError::Embedded {
            what: format!("starting a mock cluster of {brokers} brokers"),
            source,
        })?;
        Ok(EmbeddedKafka { cluster })
    }

    /// The `bootstrap.servers` string of the cluster.
    pub fn bootstrap_servers(&self) -> String {
        self.cluster.bootstrap_servers()
    }

    /// Creates `name` with `partitions` partitions (the mock has no CreateTopics API).
    pub fn create_topic(&self, name: &str, partitions: i32) -> Result<(), KafkaError> {
        self.cluster
            .create_topic(name, partitions, 1)
            .map_err(|source| KafkaError::Embedded {
                what: format!("creating topic {name:?}"),
                source,
            })
    }

    /// The underlying mock cluster, for error injection in tests (`request_errors`,
    /// `broker_down`, ...).
    pub fn cluster(&self) -> &MockCluster<'static, DefaultProducerContext> {
        &self.cluster
    }
}

impl std::fmt::Debug for EmbeddedKafka {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedKafka")
            .field("bootstrap_servers", &self.bootstrap_servers())
            .finish()
    }
}

/// Counts the records of `topic`: the sum over its partitions of high minus low watermark (a
/// compacted or transactional topic may hold fewer readable records than that).
pub fn count_records(
    bootstrap_servers: &str,
    topic: &str,
    timeout: Duration,
) -> Result<u64, KafkaError> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let client = |source: RdKafkaError| KafkaError::Client {
        what: "watermark reader",
        source,
    };
    let settings = KafkaSettings {
        bootstrap_servers: bootstrap_servers.to_owned(),
        properties: Default::default(),
    };
    let consumer: BaseConsumer = settings
        .client_config(&[("group.id", "forcebridge-count")])
        .create()
        .map_err(client)?;
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(client)?;
    let mut total = 0u64;
    for t in metadata.topics().iter().filter(|t| t.name() == topic) {
        for partition in t.partitions() {
            let (low, high) = consumer
                .fetch_watermarks(topic, partition.id(), timeout)
                .map_err(client)?;
            total += (high - low).max(0) as u64;
        }
    }
    Ok(total)
}
