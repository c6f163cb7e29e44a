//! `kafka`: the Kafka cluster and forcebridge's own topics ([`KafkaConfig`]).
//!
//! Contract: [`KafkaConfig::validate`] checks the section, each error naming its key: the
//! bootstrap servers, topic names that render, partitions, and no `properties` forcebridge sets
//! itself. `Debug` hides the values of secret `properties`.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use super::error::{ConfigError, invalid};

/// The check of a topic name or template that needs Kafka's knowledge (its legal names):
/// `crate::kafka::TopicTemplates` implements it; config imports no stage, so whoever validates a
/// config hands it in (`Config::validate`).
pub(crate) trait TopicChecks {
    /// `template` renders, for `object` and `channel`, to a legal topic name; the error says why
    /// not.
    fn check_topic(&self, template: &str, object: &str, channel: &str) -> Result<(), String>;
}

/// Whether a librdkafka property holds a secret: passwords (`sasl.password`,
/// `ssl.key.password`, `ssl.keystore.password`, `ssl.truststore.password`), private keys
/// (`ssl.key.pem`), OAUTHBEARER client secrets and configs (`sasl.oauthbearer.client.secret`,
/// `sasl.oauthbearer.config`), JAAS configs, and anything else named like a secret or token.
pub fn is_secret_property(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "token",
        "jaas",
        "key.pem",
        "oauthbearer.config",
    ]
    .iter()
    .any(|word| key.contains(word))
}

/// `Debug` of librdkafka properties with the values of [`is_secret_property`] keys replaced by
/// `[redacted]`.
pub struct RedactedProperties<'a>(pub &'a BTreeMap<String, String>);

impl fmt::Debug for RedactedProperties<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| {
                let v: &dyn fmt::Debug = if is_secret_property(k) {
                    &"[redacted]"
                } else {
                    v
                };
                (k, v)
            }))
            .finish()
    }
}

/// The Kafka cluster and forcebridge's own topics. `Debug` hides the values of secret
/// `properties` (see [`RedactedProperties`]).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `host:port,host:port`.
    pub bootstrap_servers: String,
    /// librdkafka properties passed through unchanged (`security.protocol`, `sasl.*`, …).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// Compacted topic holding replay ids per channel.
    #[serde(default = "default_checkpoint_topic")]
    pub checkpoint_topic: String,
    /// Events that cannot be processed go here, with the reason in headers.
    #[serde(default = "default_dead_letter_topic")]
    pub dead_letter_topic: String,
    /// Create missing topics (per-object topics, dead-letter, checkpoints) instead of relying on
    /// broker auto-creation.
    #[serde(default = "default_true")]
    pub create_topics: bool,
    /// Partitions of the topics forcebridge creates (replication: the broker's default).
    #[serde(default = "default_topic_partitions")]
    pub topic_partitions: i32,
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("properties", &RedactedProperties(&self.properties))
            .field("checkpoint_topic", &self.checkpoint_topic)
            .field("dead_letter_topic", &self.dead_letter_topic)
            .field("create_topics", &self.create_topics)
            .field("topic_partitions", &self.topic_partitions)
            .finish()
    }
}

const fn default_true() -> bool {
    true
}
const fn default_topic_partitions() -> i32 {
    3
}

fn default_checkpoint_topic() -> String {
    "forcebridge.checkpoints".to_owned()
}
fn default_dead_letter_topic() -> String {
    "forcebridge.dlq".to_owned()
}

impl KafkaConfig {
    pub(super) fn validate(&self, topics: &dyn TopicChecks) -> Result<(), ConfigError> {
        if self.bootstrap_servers.trim().is_empty() {
            return Err(invalid("kafka.bootstrap_servers", "must not be empty"));
        }
        for (key, topic) in [
            ("kafka.checkpoint_topic", &self.checkpoint_topic),
            ("kafka.dead_letter_topic", &self.dead_letter_topic),
        ] {
            topics
                .check_topic(topic, "", "")
                .map_err(|e| invalid(key, e))?;
        }
        if self.topic_partitions < 1 {
            return Err(invalid("kafka.topic_partitions", "must be at least 1"));
        }
        for managed in [
            "bootstrap.servers",
            "enable.idempotence",
            "transactional.id",
        ] {
            if self.properties.contains_key(managed) {
                return Err(invalid(
                    format!("kafka.properties.{managed}"),
                    "is set by forcebridge; remove it",
                ));
            }
        }
        Ok(())
    }
}
