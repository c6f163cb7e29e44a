//! How to reach Kafka, and the one builder of every librdkafka client's configuration.
//!
//! Contract: [`KafkaSettings::client_config`] is how every client forcebridge makes (producers,
//! the admin client, the sink's consumer, the checkpoint loader, the readiness probe, `check`)
//! gets its librdkafka configuration: `bootstrap.servers`, then the client's own defaults, then
//! the passthrough `kafka.properties`, which win. `Debug` never shows a secret property's value.

use std::collections::BTreeMap;
use std::fmt;

use rdkafka::ClientConfig;

use crate::config::KafkaConfig;
pub use crate::config::{RedactedProperties, is_secret_property};

/// How to reach Kafka. `Debug` hides the values of secret properties ([`RedactedProperties`]).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KafkaSettings {
    /// `bootstrap.servers`.
    pub bootstrap_servers: String,
    /// librdkafka properties passed through verbatim; applied after ours, so they win.
    pub properties: BTreeMap<String, String>,
}

impl fmt::Debug for KafkaSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaSettings")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("properties", &RedactedProperties(&self.properties))
            .finish()
    }
}

impl From<&KafkaConfig> for KafkaSettings {
    fn from(config: &KafkaConfig) -> Self {
        KafkaSettings {
            bootstrap_servers: config.bootstrap_servers.clone(),
            properties: config.properties.clone(),
        }
    }
}

impl KafkaSettings {
    /// A librdkafka configuration: `bootstrap.servers`, then `defaults` in order, then the
    /// passthrough properties (which win over both). A client sets what must hold whatever the
    /// properties say (a transactional id, the isolation level) on the result.
    pub fn client_config(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap_servers);
        for (k, v) in defaults {
            config.set(*k, *v);
        }
        for (k, v) in &self.properties {
            config.set(k, v);
        }
        config
    }
}

/// librdkafka's default `message.max.bytes`.
pub(crate) const DEFAULT_MESSAGE_MAX_BYTES: usize = 1_000_000;

/// Kafka's record size limit as our producer applies it: `message.max.bytes` from
/// `kafka.properties`, else librdkafka's default (librdkafka CONFIGURATION.md,
/// `message.max.bytes`: "Maximum Kafka protocol request message size", default 1000000).
pub(crate) fn max_record_bytes(config: &KafkaConfig) -> usize {
    config
        .properties
        .get("message.max.bytes")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(DEFAULT_MESSAGE_MAX_BYTES)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::kafka::{Producer, TopicAdmin};

    #[test]
    fn the_clients_defaults_hold_unless_a_property_says_otherwise() {
        let mut settings = KafkaSettings {
            bootstrap_servers: "127.0.0.1:9092".to_owned(),
            properties: BTreeMap::new(),
        };
        let config = TopicAdmin::config(&settings);
        assert_eq!(config.get("enable.sparse.connections"), Some("false"));
        assert_eq!(config.get("allow.auto.create.topics"), Some("false"));
        let producer = Producer::config(&settings, None);
        assert_eq!(producer.get("enable.idempotence"), Some("true"));
        assert_eq!(producer.get("transactional.id"), None);
        assert_eq!(producer.get("linger.ms"), Some("0.5"));
        settings
            .properties
            .insert("enable.sparse.connections".to_owned(), "true".to_owned());
        settings
            .properties
            .insert("linger.ms".to_owned(), "5".to_owned());
        let config = TopicAdmin::config(&settings);
        assert_eq!(config.get("enable.sparse.connections"), Some("true"));
        let producer = Producer::config(&settings, Some(("fb-1", Duration::from_secs(60))));
        assert_eq!(producer.get("enable.sparse.connections"), Some("true"));
        assert_eq!(producer.get("transactional.id"), Some("fb-1"));
        assert_eq!(producer.get("transaction.timeout.ms"), Some("60000"));
        assert_eq!(producer.get("linger.ms"), Some("5"));
    }
}
