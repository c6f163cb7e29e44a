//! The checkpoint store: where a channel's durable replay id is kept.
//!
//! # Contract
//!
//! * [`CheckpointStore`] keeps one record per `<connector>/<channel>` in a compacted Kafka topic,
//!   value `{"channel": "...", "replay_id": "<hex>", "updated_at": <epoch ms>,
//!   "commit_timestamp": <epoch ms>}`, plus `"snapshot": {…}` ([`SnapshotProgress`]) while a
//!   snapshot of the channel is under way. On open the topic
//!   is read to its end (`read_committed`: checkpoints of aborted transactions are skipped where
//!   the broker filters them) and the last value per key wins (a record that is not a checkpoint
//!   is an error, [`CheckpointError::Corrupt`], only when it is its key's last: a later record
//!   supersedes it as compaction would); [`CheckpointStore::save`] resolves
//!   only once the broker acknowledged the record. In exactly-once mode the pipeline produces the
//!   record itself inside the channel's transaction ([`CheckpointStore::record`]) and calls
//!   [`CheckpointStore::remember`] after the commit.
//! * Which replay id is durable is decided by the channel's [`crate::kafka::ack::AckWindow`]; the
//!   store only writes what it is given.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError as RdKafkaError, RDKafkaErrorCode};
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use crate::kafka::{EndIsNotAnError, KafkaSettings, cached_high_watermark, is_partition_end};
pub use crate::source::snapshot::progress::SnapshotProgress;

/// How long metadata, watermark and admin requests may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long reading the checkpoint topic to its end may take.
const LOAD_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a checkpoint write may wait for its acknowledgement.
const SAVE_TIMEOUT: Duration = Duration::from_secs(30);

/// Errors of the checkpoint store.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// A Kafka client could not be created from the settings.
    #[error("creating the Kafka {role} for checkpoint topic {topic:?}")]
    Client {
        /// `admin client`, `consumer` or `producer`.
        role: &'static str,
        /// The checkpoint topic.
        topic: String,
        /// The client error.
        #[source]
        source: Box<RdKafkaError>,
    },
    /// Creating the checkpoint topic failed (other than "already exists" or "not supported").
    #[error("creating checkpoint topic {topic:?}")]
    CreateTopic {
        /// The checkpoint topic.
        topic: String,
        /// The admin error.
        #[source]
        source: Box<crate::kafka::KafkaError>,
    },
    /// Reading the checkpoint topic failed.
    #[error("reading checkpoint topic {topic:?}: {what}")]
    Read {
        /// The checkpoint topic.
        topic: String,
        /// What was being done.
        what: String,
        /// The client error, if any.
        #[source]
        source: Option<Box<RdKafkaError>>,
    },
    /// The last record of one of this connector's channels in the checkpoint topic does not hold
    /// a valid checkpoint.
    #[error(
        "corrupt checkpoint in topic {topic:?} at partition {partition} offset {offset}, key {key:?}: {reason}"
    )]
    Corrupt {
        /// The checkpoint topic.
        topic: String,
        /// Partition of the bad record.
        partition: i32,
        /// Offset of the bad record.
        offset: i64,
        /// Key of the bad record.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Writing a checkpoint failed.
    #[error("saving checkpoint {key:?} to topic {topic:?}")]
    Save {
        /// The checkpoint topic.
        topic: String,
        /// The record key.
        key: String,
        /// The producer error.
        #[source]
        source: Box<RdKafkaError>,
    },
    /// A blocking helper task failed.
    #[error("checkpoint task failed: {0}")]
    Task(String),
}

/// The durable position of one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The channel, e.g. `/data/AccountChangeEvent`.
    pub channel: String,
    /// The opaque replay id.
    pub replay_id: Bytes,
    /// When it was written, epoch milliseconds.
    pub updated_at: i64,
    /// The newest commit timestamp (epoch ms) of the events up to `replay_id` (a keepalive: its
    /// arrival; a snapshot: when it began): a resync reads what changed since (minus a margin).
    /// `None` in checkpoints written before it was kept.
    pub commit_timestamp: Option<i64>,
    /// A snapshot under way: `replay_id` is then the stream position fixed before it began.
    pub snapshot: Option<SnapshotProgress>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointValue {
    channel: String,
    replay_id: String,
    updated_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    commit_timestamp: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    snapshot: Option<SnapshotProgress>,
}

/// Replay ids per channel in a compacted Kafka topic (see the module docs).
pub struct CheckpointStore {
    topic: String,
    connector: String,
    producer: FutureProducer,
    loaded: Mutex<HashMap<String, Checkpoint>>,
}

impl std::fmt::Debug for CheckpointStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointStore")
            .field("topic", &self.topic)
            .field("connector", &self.connector)
            .finish_non_exhaustive()
    }
}

impl CheckpointStore {
    /// Creates the topic if missing (`cleanup.policy=compact`; tolerates "already exists" and
    /// brokers without the CreateTopics API such as the librdkafka mock cluster, where topic
    /// auto-creation applies) while it reads it to the end.
    pub async fn open(
        kafka: &KafkaSettings,
        topic: &str,
        connector: &str,
    ) -> Result<CheckpointStore, CheckpointError> {
        // Side by side: a topic that does not exist yet holds no checkpoint, so the read needs
        // nothing from the creation, and a restart does not wait for one before the other.
        let read = {
            let kafka = kafka.clone();
            let topic = topic.to_owned();
            let prefix = format!("{connector}/");
            tokio::task::spawn_blocking(move || load(&kafka, &topic, &prefix))
        };
        let (created, loaded) = tokio::join!(create_compacted_topic(kafka, topic), read);
        created?;
        let loaded = loaded.map_err(|e| CheckpointError::Task(e.to_string()))??;

        let producer = kafka
            .client_config(&[
                ("enable.idempotence", "true"),
                ("acks", "all"),
                ("linger.ms", "0"),
            ])
            .create::<FutureProducer>()
            .map_err(|source| CheckpointError::Client {
                role: "producer",
                topic: topic.to_owned(),
                source: source.into(),
            })?;

        Ok(CheckpointStore {
            topic: topic.to_owned(),
            connector: connector.to_owned(),
            producer,
            loaded: Mutex::new(loaded),
        })
    }

    /// The checkpoint of `channel`: the last value read at open, or the last one saved since.
    pub fn get(&self, channel: &str) -> Option<Checkpoint> {
        self.loaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(channel)
            .cloned()
    }

    /// The checkpoint topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The key and value of the checkpoint record of `channel` at `replay_id`.
    pub fn record(&self, channel: &str, replay_id: &[u8]) -> (String, Vec<u8>) {
        self.record_with(channel, replay_id, None, None)
    }

    /// The key and value of the checkpoint record of `channel` at `replay_id`, with a snapshot
    /// under way.
    pub fn record_with(
        &self,
        channel: &str,
        replay_id: &[u8],
        commit_timestamp: Option<i64>,
        snapshot: Option<&SnapshotProgress>,
    ) -> (String, Vec<u8>) {
        let key = format!("{}/{channel}", self.connector);
        let value = serde_json::to_vec(&CheckpointValue {
            channel: channel.to_owned(),
            replay_id: hex::encode(replay_id),
            updated_at: now_ms(),
            commit_timestamp,
            snapshot: snapshot.cloned(),
        })
        .expect("checkpoint value serializes");
        (key, value)
    }

    /// Sends the checkpoint record of `channel` through `producer` (the open Kafka transaction of
    /// exactly-once mode) and waits until Kafka acknowledged it; the caller commits, then
    /// [`CheckpointStore::remember_with`]s it.
    pub async fn deliver_in(
        &self,
        producer: &crate::kafka::Producer,
        channel: &str,
        replay_id: &[u8],
        commit_timestamp: Option<i64>,
        snapshot: Option<&SnapshotProgress>,
    ) -> Result<(), String> {
        let (key, value) = self.record_with(channel, replay_id, commit_timestamp, snapshot);
        producer
            .deliver([crate::kafka::OutgoingRecord {
                topic: &self.topic,
                key: Some(key.as_bytes()),
                value: Some(&value),
                headers: &[],
            }])
            .await
    }

    /// Records that `replay_id` is now the durable checkpoint of `channel` (written by the
    /// caller, e.g. committed in a Kafka transaction).
    pub fn remember(&self, channel: &str, replay_id: &[u8]) {
        self.remember_with(channel, replay_id, None, None);
    }

    /// [`CheckpointStore::remember`] with a snapshot under way.
    pub fn remember_with(
        &self,
        channel: &str,
        replay_id: &[u8],
        commit_timestamp: Option<i64>,
        snapshot: Option<&SnapshotProgress>,
    ) {
        self.loaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                channel.to_owned(),
                Checkpoint {
                    channel: channel.to_owned(),
                    replay_id: Bytes::copy_from_slice(replay_id),
                    updated_at: now_ms(),
                    commit_timestamp,
                    snapshot: snapshot.cloned(),
                },
            );
    }

    /// Writes the checkpoint of `channel`; resolves only when the broker acknowledged it.
    pub async fn save(&self, channel: &str, replay_id: &[u8]) -> Result<(), CheckpointError> {
        self.save_with(channel, replay_id, None, None).await
    }

    /// Writes the checkpoint of `channel` with a snapshot under way (`None`: none); resolves
    /// only when the broker acknowledged it.
    pub async fn save_with(
        &self,
        channel: &str,
        replay_id: &[u8],
        commit_timestamp: Option<i64>,
        snapshot: Option<&SnapshotProgress>,
    ) -> Result<(), CheckpointError> {
        let (key, value) = self.record_with(channel, replay_id, commit_timestamp, snapshot);
        self.producer
            .send(
                FutureRecord::to(&self.topic).key(&key).payload(&value),
                SAVE_TIMEOUT,
            )
            .await
            .map_err(|(source, _)| CheckpointError::Save {
                topic: self.topic.clone(),
                key: key.clone(),
                source: source.into(),
            })?;
        self.remember_with(channel, replay_id, commit_timestamp, snapshot);
        Ok(())
    }
}

fn now_ms() -> i64 {
    crate::ops::telemetry::unix_millis() as i64
}

async fn create_compacted_topic(kafka: &KafkaSettings, topic: &str) -> Result<(), CheckpointError> {
    let create_err = |source: crate::kafka::KafkaError| CheckpointError::CreateTopic {
        topic: topic.to_owned(),
        source: Box::new(source),
    };
    crate::kafka::TopicAdmin::new(kafka)
        .map_err(create_err)?
        .ensure(topic, 1, &[("cleanup.policy", "compact")])
        .await
        .map_err(create_err)
}

/// A [`CheckpointError::Read`] of `topic`.
fn read_err(topic: &str, what: String, source: Option<RdKafkaError>) -> CheckpointError {
    CheckpointError::Read {
        topic: topic.to_owned(),
        what,
        source: source.map(Box::new),
    }
}

/// Reads `topic` from the beginning of every partition to its end (blocking).
///
/// A partition is done as soon as a record at its end arrives: the high watermark that came with
/// the same fetch response (librdkafka's cached watermark) is one past the record. Waiting for
/// librdkafka's end-of-partition event instead cost a whole further fetch, which the broker holds
/// for `fetch.wait.max.ms` (500 ms by default, librdkafka's CONFIGURATION.md) before answering
/// empty: most of a restart's time to its first event (issue 19, item 14). The event is still
/// the end where no record sits at the watermark (a transaction's commit marker is last, or only
/// aborted records follow); this reader's `fetch.wait.max.ms` is short for that case.
fn load(
    kafka: &KafkaSettings,
    topic: &str,
    prefix: &str,
) -> Result<HashMap<String, Checkpoint>, CheckpointError> {
    let mut config = kafka.client_config(&[
        ("enable.auto.commit", "false"),
        ("enable.partition.eof", "true"),
        ("fetch.wait.max.ms", "10"),
        ("group.id", "forcebridge-checkpoint-loader"),
    ]);
    // Checkpoints of aborted transactions (exactly-once mode) are not positions.
    config.set("isolation.level", "read_committed");
    let consumer: BaseConsumer<EndIsNotAnError> = config
        .create_with_context(EndIsNotAnError)
        .map_err(|source| CheckpointError::Client {
            role: "consumer",
            topic: topic.to_owned(),
            source: source.into(),
        })?;
    let mut checkpoints = HashMap::new();
    // A channel whose latest record so far is corrupt. A later record of the same key (a
    // checkpoint or a tombstone) supersedes it, as compaction would; only a corrupt *last* record
    // is an error.
    let mut corrupt: HashMap<String, CheckpointError> = HashMap::new();
    let Some((mut remaining, assignment)) = partitions_to_read(&consumer, topic)? else {
        return Ok(checkpoints);
    };
    consumer
        .assign(&assignment)
        .map_err(|e| read_err(topic, "assigning partitions".into(), Some(e)))?;

    let deadline = std::time::Instant::now() + LOAD_TIMEOUT;
    while !remaining.is_empty() {
        if std::time::Instant::now() >= deadline {
            return Err(read_err(
                topic,
                format!(
                    "timed out after {LOAD_TIMEOUT:?} before reaching the end of partitions {:?}",
                    remaining.iter().collect::<Vec<_>>()
                ),
                None,
            ));
        }
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        match message {
            Ok(message) => {
                apply(&mut checkpoints, &mut corrupt, topic, prefix, &message);
                let (partition, next) = (message.partition(), message.offset() + 1);
                if reached_end(&consumer, topic, partition, next) {
                    remaining.remove(&partition);
                }
            }
            Err(e) if is_partition_end(&e) => {
                if let RdKafkaError::PartitionEOF(partition) = e {
                    remaining.remove(&partition);
                }
            }
            Err(e) => return Err(read_err(topic, "consuming".into(), Some(e))),
        }
    }
    // The first by channel name, so the error is the same on every start.
    match corrupt.into_iter().min_by(|a, b| a.0.cmp(&b.0)) {
        Some((_, err)) => Err(err),
        None => Ok(checkpoints),
    }
}

/// Whether `next` (one past the record just read) is the end of `partition`: the high watermark
/// of the fetch response that brought the record, which librdkafka caches (no request).
fn reached_end(
    consumer: &BaseConsumer<EndIsNotAnError>,
    topic: &str,
    partition: i32,
    next: i64,
) -> bool {
    cached_high_watermark(consumer, topic, partition).is_some_and(|high| next >= high)
}

/// The partitions of `topic` that hold records, and their assignment from the beginning;
/// `None` when there is nothing to read (no such topic, or every partition empty).
fn partitions_to_read(
    consumer: &BaseConsumer<EndIsNotAnError>,
    topic: &str,
) -> Result<Option<(HashSet<i32>, TopicPartitionList)>, CheckpointError> {
    let metadata = consumer
        .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
        .map_err(|e| read_err(topic, "fetching metadata".into(), Some(e)))?;
    let Some(topic_md) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Ok(None);
    };
    if let Some(err) = topic_md.error() {
        let code = RDKafkaErrorCode::from(err);
        if code == RDKafkaErrorCode::UnknownTopicOrPartition {
            return Ok(None);
        }
        return Err(read_err(topic, format!("topic metadata: {code}"), None));
    }

    // Partitions whose end is still to reach. The end is the high watermark of the fetch
    // responses (see `load`). ListOffsets is only used to skip empty partitions, since not every
    // broker answers it right (tansu's memory engine reports the latest *batch* rather than the
    // high watermark).
    let mut remaining: HashSet<i32> = HashSet::new();
    let mut assignment = TopicPartitionList::new();
    for p in topic_md.partitions() {
        let (low, high) = consumer
            .fetch_watermarks(topic, p.id(), REQUEST_TIMEOUT)
            .map_err(|e| {
                read_err(
                    topic,
                    format!("fetching watermarks of partition {}", p.id()),
                    Some(e),
                )
            })?;
        if high > low {
            remaining.insert(p.id());
            assignment
                .add_partition_offset(topic, p.id(), Offset::Beginning)
                .map_err(|e| read_err(topic, "building the assignment".into(), Some(e)))?;
        }
    }
    Ok((!remaining.is_empty()).then_some((remaining, assignment)))
}

/// Applies one record of the checkpoint topic: a checkpoint of this connector's `prefix` replaces
/// its channel's, a tombstone removes it, and a record that cannot be read is remembered in
/// `corrupt` (with where it is and why) until a later record of its key supersedes it.
fn apply(
    checkpoints: &mut HashMap<String, Checkpoint>,
    corrupt: &mut HashMap<String, CheckpointError>,
    topic: &str,
    prefix: &str,
    message: &BorrowedMessage<'_>,
) {
    let (partition, offset) = (message.partition(), message.offset());
    let Some(key) = message.key().and_then(|k| std::str::from_utf8(k).ok()) else {
        return;
    };
    let Some(channel) = key.strip_prefix(prefix) else {
        return; // another connector's checkpoint
    };
    match parse(channel, message.payload()) {
        Ok(Some(checkpoint)) => {
            checkpoints.insert(channel.to_owned(), checkpoint);
            corrupt.remove(channel);
        }
        Ok(None) => {
            checkpoints.remove(channel); // tombstone
            corrupt.remove(channel);
        }
        Err(reason) => {
            let err = CheckpointError::Corrupt {
                topic: topic.to_owned(),
                partition,
                offset,
                key: key.to_owned(),
                reason,
            };
            corrupt.insert(channel.to_owned(), err);
        }
    }
}

/// The checkpoint of `channel` in a record's value; `None` for a tombstone; why not otherwise.
fn parse(channel: &str, payload: Option<&[u8]>) -> Result<Option<Checkpoint>, String> {
    let Some(payload) = payload else {
        return Ok(None);
    };
    let value: CheckpointValue = serde_json::from_slice(payload)
        .map_err(|e| format!("value is not a checkpoint JSON object: {e}"))?;
    if value.channel != channel {
        return Err(format!(
            "value names channel {:?} but the key names {channel:?}",
            value.channel
        ));
    }
    let replay_id = hex::decode(&value.replay_id)
        .map_err(|e| format!("replay_id {:?} is not hex: {e}", value.replay_id))?;
    Ok(Some(Checkpoint {
        channel: value.channel,
        replay_id: replay_id.into(),
        updated_at: value.updated_at,
        commit_timestamp: value.commit_timestamp,
        snapshot: value.snapshot,
    }))
}
