//! Topic creation for the topics forcebridge writes to (object topics, dead letters, conflicts).

use std::sync::Arc;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError as RdKafkaError, RDKafkaErrorCode};

use super::error::KafkaError;
use super::settings::KafkaSettings;

/// Creates topics forcebridge writes to, once each, as Kafka Connect does with
/// `topic.creation.enable`: a topic that exists is left alone; `TopicAlreadyExists` is success;
/// a cluster that cannot create topics (no CreateTopics API, no controller: the librdkafka mock
/// cluster, whose admin requests time out) falls back to broker auto-creation, with one warning,
/// and is not asked again by any admin of this process (the source's, the sink's and the
/// checkpoint store's each used to wait for the refusal, about 6 s each: issue 19, item 13).
pub struct TopicAdmin {
    admin: Arc<rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext>>,
    known: std::sync::Mutex<std::collections::HashSet<String>>,
    bootstrap: String,
}

/// The `bootstrap.servers` of the clusters that refused to create a topic, for the process.
static REFUSED: std::sync::Mutex<std::collections::BTreeSet<String>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

fn refused(bootstrap: &str) -> bool {
    REFUSED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains(bootstrap)
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
            bootstrap: settings.bootstrap_servers.clone(),
        })
    }

    /// Forgets which topics were seen to exist: the next [`TopicAdmin::ensure`] of each asks the
    /// cluster again, and re-creates a topic deleted since (a deleted topic, a wiped broker:
    /// issue 19, item 5). Called when a delivery failed.
    pub fn forget_known(&self) {
        self.known.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Whether this admin still asks the cluster to create missing topics: `false` once the
    /// cluster refused it (in this process), when only broker auto-creation is left.
    pub fn creates_topics(&self) -> bool {
        !refused(&self.bootstrap)
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
        if !exists && self.creates_topics() {
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
                    let first = REFUSED
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(self.bootstrap.clone());
                    if first {
                        tracing::warn!(topic, error = %code, bootstrap_servers = %self.bootstrap,
                            "the Kafka cluster cannot create topics; relying on broker auto-creation and not asking again (kafka.create_topics)");
                    }
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
