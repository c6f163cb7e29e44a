//! Topic creation for the topics forcebridge writes to (object topics, dead letters, conflicts).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError as RdKafkaError, RDKafkaErrorCode};

use super::error::KafkaError;
use super::settings::KafkaSettings;

/// Creates topics forcebridge writes to, once each, as Kafka Connect does with
/// `topic.creation.enable`: a topic that exists is left alone; `TopicAlreadyExists` is success;
/// a broker without the CreateTopics API (the librdkafka mock cluster) falls back to broker
/// auto-creation, with a warning, and is not asked again.
pub struct TopicAdmin {
    admin: Arc<rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext>>,
    known: std::sync::Mutex<std::collections::HashSet<String>>,
    unsupported: std::sync::atomic::AtomicBool,
}

impl TopicAdmin {
    /// An admin client for `settings` (passthrough properties apply).
    pub fn new(settings: &KafkaSettings) -> Result<TopicAdmin, KafkaError> {
        let admin = Self::config(settings)
            .create()
            .map_err(|source| KafkaError::Client {
                what: "admin client",
                source,
            })?;
        Ok(TopicAdmin {
            admin: Arc::new(admin),
            known: Default::default(),
            unsupported: Default::default(),
        })
    }

    /// The admin client's librdkafka configuration: forcebridge's settings, then the
    /// passthrough properties.
    pub(super) fn config(settings: &KafkaSettings) -> ClientConfig {
        settings.client_config(&[
            // The existence check must not auto-create the topic with broker defaults.
            ("allow.auto.create.topics", "false"),
            // Connected to every broker from the start: the check of a new object's topic is on
            // the path of that object's first records, which otherwise waited for the
            // connection (about 50 ms in most short runs of `bench source --rate`,
            // BENCHMARKS.md).
            ("enable.sparse.connections", "false"),
        ])
    }

    /// Makes sure `topic` exists, creating it with `partitions` partitions, the broker's default
    /// replication and the given topic configs when missing.
    pub async fn ensure(
        &self,
        topic: &str,
        partitions: i32,
        configs: &[(&str, &str)],
    ) -> Result<(), KafkaError> {
        use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
        if self
            .known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(topic)
        {
            return Ok(());
        }
        let exists = {
            let (admin, name) = (self.admin.clone(), topic.to_owned());
            tokio::task::spawn_blocking(move || {
                admin
                    .inner()
                    .fetch_metadata(Some(&name), Duration::from_secs(10))
                    .map(|md| {
                        md.topics()
                            .iter()
                            .any(|t| t.name() == name && t.error().is_none())
                    })
            })
            .await
            .map_err(|e| KafkaError::Task(e.to_string()))?
            .map_err(|source| KafkaError::Client {
                what: "topic metadata request",
                source,
            })?
        };
        if !exists && !self.unsupported.load(Ordering::Relaxed) {
            let mut new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(-1));
            for (k, v) in configs {
                new_topic = new_topic.set(k, v);
            }
            let options = AdminOptions::new()
                .request_timeout(Some(Duration::from_secs(6)))
                .operation_timeout(Some(Duration::from_secs(4)));
            let code = match self.admin.create_topics([&new_topic], &options).await {
                Ok(results) => match results.into_iter().next() {
                    Some(Err((_, code))) => Some(code),
                    _ => None,
                },
                Err(RdKafkaError::AdminOp(code)) => Some(code),
                Err(source) => {
                    return Err(KafkaError::Client {
                        what: "topic creation",
                        source,
                    });
                }
            };
            match code {
                None | Some(RDKafkaErrorCode::TopicAlreadyExists) => {
                    tracing::info!(topic, partitions, "created topic");
                }
                Some(
                    code @ (RDKafkaErrorCode::OperationTimedOut
                    | RDKafkaErrorCode::RequestTimedOut
                    | RDKafkaErrorCode::UnsupportedVersion
                    | RDKafkaErrorCode::UnsupportedFeature
                    | RDKafkaErrorCode::InvalidRequest),
                ) => {
                    self.unsupported.store(true, Ordering::Relaxed);
                    tracing::warn!(topic, error = %code, "the broker cannot create topics; relying on broker auto-creation");
                }
                Some(code) => {
                    return Err(KafkaError::Client {
                        what: "topic creation",
                        source: RdKafkaError::AdminOp(code),
                    });
                }
            }
        }
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(topic.to_owned());
        Ok(())
    }
}
