//! Checkpoints: which replay id of a channel is durable, and where that is stored.
//!
//! # Contract
//!
//! * [`AckWindow`] tracks, per channel, the ordered window of events whose Kafka records are in
//!   flight. The *durable* replay id is the replay id of the newest event such that it and every
//!   earlier event of the channel are complete: sealed, and every record registered for it
//!   acknowledged by the broker. Events may complete out of order (their records go to different
//!   partitions or topics); the durable id only ever moves forward in channel order.
//! * The first delivery failure is latched: the durable id never moves past the failed event, so
//!   a restart replays it (at-least-once; the sink side must tolerate duplicates).
//! * [`CheckpointStore`] keeps one record per `<connector>/<channel>` in a compacted Kafka topic,
//!   value `{"channel": "...", "replay_id": "<hex>", "updated_at": <epoch ms>}`. On open the topic
//!   is read to its end (`read_committed`: checkpoints of aborted transactions are skipped where
//!   the broker filters them) and the last value per key wins; [`CheckpointStore::save`] resolves
//!   only once the broker acknowledged the record. In exactly-once mode the pipeline produces the
//!   record itself inside the channel's transaction ([`CheckpointStore::record`]) and calls
//!   [`CheckpointStore::remember`] after the commit.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError as RdKafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::kafka::KafkaSettings;

// ---------------------------------------------------------------------------------------------
// AckWindow
// ---------------------------------------------------------------------------------------------

/// The ordered window of in-flight events of one channel (see the module docs for the contract).
///
/// Cheap to clone (an `Arc` inside); `Send + Sync`.
#[derive(Clone, Default)]
pub struct AckWindow {
    shared: Arc<WindowShared>,
}

#[derive(Default)]
struct WindowShared {
    state: Mutex<WindowState>,
    /// Woken when the window becomes idle (empty) or the first failure is recorded.
    idle: Notify,
}

#[derive(Default)]
struct WindowState {
    /// Sequence number of `events[0]`.
    front_seq: u64,
    /// Events not yet durable, in channel order; `events[i]` has sequence `front_seq + i`.
    events: VecDeque<PendingEvent>,
    durable: Option<Bytes>,
    failure: Option<String>,
}

struct PendingEvent {
    replay_id: Bytes,
    /// Tokens handed out and not yet resolved.
    outstanding: u32,
    sealed: bool,
    failed: bool,
}

impl PendingEvent {
    fn is_complete(&self) -> bool {
        self.sealed && self.outstanding == 0 && !self.failed
    }
}

impl WindowShared {
    fn lock(&self) -> MutexGuard<'_, WindowState> {
        // A panic while holding the lock cannot leave the state half-updated in a way that breaks
        // the invariants we rely on (each update is a few field writes), so poisoning is ignored.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `update` to the event `seq`, then advances the durable cursor.
    fn update(&self, seq: u64, update: impl FnOnce(&mut PendingEvent, &mut Option<String>)) {
        let wake = {
            let mut state = self.lock();
            let WindowState {
                front_seq,
                events,
                failure,
                ..
            } = &mut *state;
            let Some(event) = seq
                .checked_sub(*front_seq)
                .and_then(|i| events.get_mut(i as usize))
            else {
                // Unreachable by construction: an event leaves the window only once complete, and
                // it cannot complete while a handle or token for it exists.
                debug_assert!(false, "ack window: update for an event no longer in flight");
                return;
            };
            let had_failure = failure.is_some();
            update(event, failure);
            let newly_failed = !had_failure && failure.is_some();
            state.advance() || newly_failed
        };
        if wake {
            self.idle.notify_waiters();
        }
    }
}

impl WindowState {
    /// Pops complete events off the front; returns true when the window became empty.
    fn advance(&mut self) -> bool {
        let mut popped = false;
        while self.events.front().is_some_and(PendingEvent::is_complete) {
            let event = self.events.pop_front().expect("front checked above");
            self.durable = Some(event.replay_id);
            self.front_seq += 1;
            popped = true;
        }
        popped && self.events.is_empty()
    }
}

impl AckWindow {
    /// An empty window.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the next event of the channel (calls must follow channel order).
    ///
    /// Records are added with [`EventHandle::token`]; the event completes once sealed and every
    /// token is acknowledged. An event with no records (filtered, or a keepalive's
    /// `latest_replay_id`) completes on [`EventHandle::seal`].
    pub fn begin(&self, replay_id: Bytes) -> EventHandle {
        let mut state = self.shared.lock();
        let seq = state.front_seq + state.events.len() as u64;
        state.events.push_back(PendingEvent {
            replay_id,
            outstanding: 0,
            sealed: false,
            failed: false,
        });
        EventHandle {
            shared: Some(self.shared.clone()),
            seq,
        }
    }

    /// The newest durable replay id so far (`None` if nothing is durable yet).
    pub fn durable(&self) -> Option<Bytes> {
        self.shared.lock().durable.clone()
    }

    /// Events registered and not yet durable.
    pub fn in_flight(&self) -> usize {
        self.shared.lock().events.len()
    }

    /// The first delivery failure, if any. Once failed, the durable id never moves past the
    /// failed event.
    pub fn failure(&self) -> Option<String> {
        self.shared.lock().failure.clone()
    }

    /// Resolves when no event is in flight or a failure occurred (drain on shutdown).
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.shared.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let state = self.shared.lock();
                if state.events.is_empty() || state.failure.is_some() {
                    return;
                }
            }
            notified.await;
        }
    }
}

impl std::fmt::Debug for AckWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("AckWindow")
            .field("in_flight", &state.events.len())
            .field("durable", &state.durable.as_ref().map(hex::encode))
            .field("failure", &state.failure)
            .finish()
    }
}

fn record_failure(event: &mut PendingEvent, failure: &mut Option<String>, reason: &str) {
    event.failed = true;
    if failure.is_none() {
        *failure = Some(format!(
            "event with replay id {}: {reason}",
            hex::encode(&event.replay_id)
        ));
    }
}

/// One registered event; hands out [`AckToken`]s for its records and is sealed once all of its
/// records have been handed to the producer.
///
/// Dropping a handle without sealing it marks the event as failed (it was abandoned half-way).
pub struct EventHandle {
    shared: Option<Arc<WindowShared>>,
    seq: u64,
}

impl EventHandle {
    /// A token for one more record of this event; the event cannot complete until it is acked.
    pub fn token(&self) -> AckToken {
        let shared = self.shared.clone().expect("handle is live until sealed");
        shared.update(self.seq, |event, _| event.outstanding += 1);
        AckToken {
            shared: Some(shared),
            seq: self.seq,
        }
    }

    /// Declares that no more records will be added; the event completes once every token is acked.
    pub fn seal(mut self) {
        if let Some(shared) = self.shared.take() {
            shared.update(self.seq, |event, _| event.sealed = true);
        }
    }
}

impl Drop for EventHandle {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            shared.update(self.seq, |event, failure| {
                event.sealed = true;
                record_failure(event, failure, "abandoned before it was sealed");
            });
        }
    }
}

impl std::fmt::Debug for EventHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventHandle")
            .field("seq", &self.seq)
            .finish()
    }
}

/// The acknowledgement of one Kafka record. `Send + Sync + 'static`.
///
/// Dropping a token without calling [`AckToken::ack`] counts as a delivery failure.
pub struct AckToken {
    shared: Option<Arc<WindowShared>>,
    seq: u64,
}

impl AckToken {
    /// Resolves the record: `Ok` once the broker acknowledged it, `Err(reason)` if it failed.
    pub fn ack(mut self, result: Result<(), String>) {
        if let Some(shared) = self.shared.take() {
            Self::resolve(&shared, self.seq, result);
        }
    }

    fn resolve(shared: &WindowShared, seq: u64, result: Result<(), String>) {
        shared.update(seq, |event, failure| {
            event.outstanding -= 1;
            if let Err(reason) = result {
                record_failure(event, failure, &reason);
            }
        });
    }
}

impl Drop for AckToken {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            Self::resolve(
                &shared,
                self.seq,
                Err("record dropped without a delivery report".to_owned()),
            );
        }
    }
}

impl std::fmt::Debug for AckToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AckToken").field("seq", &self.seq).finish()
    }
}

// ---------------------------------------------------------------------------------------------
// CheckpointStore
// ---------------------------------------------------------------------------------------------

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
    /// A record of this connector in the checkpoint topic does not hold a valid checkpoint.
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
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointValue {
    channel: String,
    replay_id: String,
    updated_at: i64,
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

fn client_config(kafka: &KafkaSettings) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &kafka.bootstrap_servers);
    config
}

fn with_passthrough(mut config: ClientConfig, kafka: &KafkaSettings) -> ClientConfig {
    for (k, v) in &kafka.properties {
        config.set(k, v);
    }
    config
}

impl CheckpointStore {
    /// Creates the topic if missing (`cleanup.policy=compact`; tolerates "already exists" and
    /// brokers without the CreateTopics API such as the librdkafka mock cluster, where topic
    /// auto-creation applies), then reads it to the end.
    pub async fn open(
        kafka: &KafkaSettings,
        topic: &str,
        connector: &str,
    ) -> Result<CheckpointStore, CheckpointError> {
        create_compacted_topic(kafka, topic).await?;

        let loaded = {
            let kafka = kafka.clone();
            let topic = topic.to_owned();
            let prefix = format!("{connector}/");
            tokio::task::spawn_blocking(move || load(&kafka, &topic, &prefix))
                .await
                .map_err(|e| CheckpointError::Task(e.to_string()))??
        };

        let producer = with_passthrough(
            {
                let mut c = client_config(kafka);
                c.set("enable.idempotence", "true")
                    .set("acks", "all")
                    .set("linger.ms", "0");
                c
            },
            kafka,
        )
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
        let key = format!("{}/{channel}", self.connector);
        let value = serde_json::to_vec(&CheckpointValue {
            channel: channel.to_owned(),
            replay_id: hex::encode(replay_id),
            updated_at: now_ms(),
        })
        .expect("checkpoint value serializes");
        (key, value)
    }

    /// Records that `replay_id` is now the durable checkpoint of `channel` (written by the
    /// caller, e.g. committed in a Kafka transaction).
    pub fn remember(&self, channel: &str, replay_id: &[u8]) {
        self.loaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                channel.to_owned(),
                Checkpoint {
                    channel: channel.to_owned(),
                    replay_id: Bytes::copy_from_slice(replay_id),
                    updated_at: now_ms(),
                },
            );
    }

    /// Writes the checkpoint of `channel`; resolves only when the broker acknowledged it.
    pub async fn save(&self, channel: &str, replay_id: &[u8]) -> Result<(), CheckpointError> {
        let (key, value) = self.record(channel, replay_id);
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
        self.remember(channel, replay_id);
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

/// Reads `topic` from the beginning of every partition to its high watermark (blocking).
fn load(
    kafka: &KafkaSettings,
    topic: &str,
    prefix: &str,
) -> Result<HashMap<String, Checkpoint>, CheckpointError> {
    let read_err = |what: String, source: Option<RdKafkaError>| CheckpointError::Read {
        topic: topic.to_owned(),
        what,
        source: source.map(Box::new),
    };
    let mut config = with_passthrough(
        {
            let mut c = client_config(kafka);
            c.set("enable.auto.commit", "false")
                .set("enable.partition.eof", "true")
                .set("group.id", "forcebridge-checkpoint-loader");
            c
        },
        kafka,
    );
    // Checkpoints of aborted transactions (exactly-once mode) are not positions.
    config.set("isolation.level", "read_committed");
    let consumer: BaseConsumer = config.create().map_err(|source| CheckpointError::Client {
        role: "consumer",
        topic: topic.to_owned(),
        source: source.into(),
    })?;

    let metadata = consumer
        .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
        .map_err(|e| read_err("fetching metadata".into(), Some(e)))?;
    let Some(topic_md) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Ok(HashMap::new());
    };
    if let Some(err) = topic_md.error() {
        let code = RDKafkaErrorCode::from(err);
        if code == RDKafkaErrorCode::UnknownTopicOrPartition {
            return Ok(HashMap::new());
        }
        return Err(read_err(format!("topic metadata: {code}"), None));
    }

    // Partitions whose end is still to reach. The end is where librdkafka reports partition EOF:
    // the high watermark of the fetch responses. ListOffsets is only used to skip empty
    // partitions, since not every broker answers it right (tansu's memory engine reports the
    // latest *batch* rather than the high watermark).
    let mut remaining: HashSet<i32> = HashSet::new();
    let mut assignment = TopicPartitionList::new();
    for p in topic_md.partitions() {
        let (low, high) = consumer
            .fetch_watermarks(topic, p.id(), REQUEST_TIMEOUT)
            .map_err(|e| {
                read_err(
                    format!("fetching watermarks of partition {}", p.id()),
                    Some(e),
                )
            })?;
        if high > low {
            remaining.insert(p.id());
            assignment
                .add_partition_offset(topic, p.id(), Offset::Beginning)
                .map_err(|e| read_err("building the assignment".into(), Some(e)))?;
        }
    }
    let mut checkpoints = HashMap::new();
    if remaining.is_empty() {
        return Ok(checkpoints);
    }
    consumer
        .assign(&assignment)
        .map_err(|e| read_err("assigning partitions".into(), Some(e)))?;

    let deadline = std::time::Instant::now() + LOAD_TIMEOUT;
    while !remaining.is_empty() {
        if std::time::Instant::now() >= deadline {
            return Err(read_err(
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
        let message = match message {
            Ok(message) => message,
            Err(RdKafkaError::PartitionEOF(partition)) => {
                remaining.remove(&partition);
                continue;
            }
            Err(e) => return Err(read_err("consuming".into(), Some(e))),
        };
        let (partition, offset) = (message.partition(), message.offset());
        let Some(key) = message.key().and_then(|k| std::str::from_utf8(k).ok()) else {
            continue;
        };
        let Some(channel) = key.strip_prefix(prefix) else {
            continue; // another connector's checkpoint
        };
        let corrupt = |reason: String| CheckpointError::Corrupt {
            topic: topic.to_owned(),
            partition,
            offset,
            key: key.to_owned(),
            reason,
        };
        let Some(payload) = message.payload() else {
            checkpoints.remove(channel); // tombstone
            continue;
        };
        let value: CheckpointValue = serde_json::from_slice(payload)
            .map_err(|e| corrupt(format!("value is not a checkpoint JSON object: {e}")))?;
        if value.channel != channel {
            return Err(corrupt(format!(
                "value names channel {:?} but the key names {channel:?}",
                value.channel
            )));
        }
        let replay_id = hex::decode(&value.replay_id)
            .map_err(|e| corrupt(format!("replay_id {:?} is not hex: {e}", value.replay_id)))?;
        checkpoints.insert(
            channel.to_owned(),
            Checkpoint {
                channel: value.channel,
                replay_id: replay_id.into(),
                updated_at: value.updated_at,
            },
        );
    }
    Ok(checkpoints)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    #[test]
    fn empty_window_has_nothing_durable() {
        let w = AckWindow::new();
        assert_eq!(w.durable(), None);
        assert_eq!(w.in_flight(), 0);
        assert_eq!(w.failure(), None);
    }

    #[test]
    fn zero_record_events_complete_on_seal() {
        let w = AckWindow::new();
        w.begin(b("1")).seal();
        assert_eq!(w.durable(), Some(b("1")));
        let h = w.begin(b("2"));
        assert_eq!(w.in_flight(), 1);
        assert_eq!(w.durable(), Some(b("1")));
        h.seal();
        assert_eq!(w.durable(), Some(b("2")));
        assert_eq!(w.in_flight(), 0);
    }

    #[test]
    fn out_of_order_acks_advance_in_channel_order() {
        let w = AckWindow::new();
        let mut tokens = Vec::new();
        for id in ["1", "2", "3"] {
            let h = w.begin(b(id));
            tokens.push(h.token());
            tokens.push(h.token());
            h.seal();
        }
        let mut it = tokens.into_iter();
        let (a1, a2, b1, b2, c1, c2) = (
            it.next().unwrap(),
            it.next().unwrap(),
            it.next().unwrap(),
            it.next().unwrap(),
            it.next().unwrap(),
            it.next().unwrap(),
        );
        c1.ack(Ok(()));
        c2.ack(Ok(()));
        b1.ack(Ok(()));
        assert_eq!(w.durable(), None, "event 1 is not complete");
        a2.ack(Ok(()));
        assert_eq!(w.durable(), None);
        a1.ack(Ok(()));
        assert_eq!(
            w.durable(),
            Some(b("1")),
            "event 2 still has a record in flight"
        );
        assert_eq!(w.in_flight(), 2);
        b2.ack(Ok(()));
        assert_eq!(w.durable(), Some(b("3")));
        assert_eq!(w.in_flight(), 0);
    }

    #[test]
    fn seal_after_acks_and_before_acks() {
        let w = AckWindow::new();
        // Acks before seal: not complete until sealed.
        let h = w.begin(b("1"));
        h.token().ack(Ok(()));
        assert_eq!(w.durable(), None, "unsealed event must not complete");
        let t = h.token();
        t.ack(Ok(()));
        h.seal();
        assert_eq!(w.durable(), Some(b("1")));
        // Seal before acks: complete on the last ack.
        let h = w.begin(b("2"));
        let t = h.token();
        h.seal();
        assert_eq!(w.durable(), Some(b("1")));
        t.ack(Ok(()));
        assert_eq!(w.durable(), Some(b("2")));
    }

    #[test]
    fn failure_stops_the_cursor() {
        let w = AckWindow::new();
        let h1 = w.begin(b("1"));
        let t1 = h1.token();
        h1.seal();
        let h2 = w.begin(b("2"));
        let t2 = h2.token();
        h2.seal();
        w.begin(b("3")).seal();
        t2.ack(Err("broker said no".into()));
        let failure = w.failure().expect("failure recorded");
        assert!(failure.contains("broker said no"), "{failure}");
        assert!(failure.contains(&hex::encode("2")), "{failure}");
        // Earlier events may still complete...
        t1.ack(Ok(()));
        assert_eq!(w.durable(), Some(b("1")));
        // ...but never past the failed one.
        let h4 = w.begin(b("4"));
        h4.seal();
        assert_eq!(w.durable(), Some(b("1")));
        assert_eq!(w.in_flight(), 3);
    }

    #[test]
    fn first_failure_is_kept() {
        let w = AckWindow::new();
        let h = w.begin(b("1"));
        let (t1, t2) = (h.token(), h.token());
        h.seal();
        t1.ack(Err("first".into()));
        t2.ack(Err("second".into()));
        assert!(w.failure().unwrap().contains("first"));
    }

    #[test]
    fn dropped_token_is_a_failure() {
        let w = AckWindow::new();
        let h = w.begin(b("1"));
        drop(h.token());
        h.seal();
        assert_eq!(w.durable(), None);
        assert!(w.failure().unwrap().contains("dropped"));
    }

    #[test]
    fn dropped_handle_is_a_failure() {
        let w = AckWindow::new();
        w.begin(b("1")).seal();
        drop(w.begin(b("2")));
        w.begin(b("3")).seal();
        assert_eq!(w.durable(), Some(b("1")));
        assert!(w.failure().unwrap().contains("abandoned"));
    }

    #[test]
    fn window_is_send_sync_and_tokens_are_static() {
        fn check<T: Send + Sync + 'static>() {}
        check::<AckWindow>();
        check::<AckToken>();
        check::<EventHandle>();
    }

    #[tokio::test]
    async fn wait_idle_resolves_when_drained_or_failed() {
        let w = AckWindow::new();
        w.wait_idle().await; // empty: immediately
        let h = w.begin(b("1"));
        let t = h.token();
        h.seal();
        let waiter = tokio::spawn({
            let w = w.clone();
            async move { w.wait_idle().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        std::thread::spawn(move || t.ack(Ok(()))).join().unwrap();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("idle after last ack")
            .unwrap();

        let h = w.begin(b("2"));
        let t = h.token();
        h.seal();
        let waiter = tokio::spawn({
            let w = w.clone();
            async move { w.wait_idle().await }
        });
        t.ack(Err("boom".into()));
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("wait_idle resolves on failure")
            .unwrap();
        assert_eq!(w.in_flight(), 1);
    }
}
