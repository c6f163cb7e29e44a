//! The Kafka producer of the source side, topic naming, and the embedded Kafka.
//!
//! # Contract
//!
//! * [`Producer`] is an idempotent librdkafka producer (`enable.idempotence=true`, `acks=all`).
//!   [`Producer::send`] returns once librdkafka accepted the record into its local queue; while
//!   that queue is full it waits (without blocking the runtime) and retries the same record: that
//!   is the backpressure towards the source. The delivery outcome is reported to the record's
//!   [`AckToken`] from librdkafka's delivery callback (on the producer's polling thread), never
//!   awaited per record. Retries of a produce request are librdkafka's (`message.timeout.ms`).
//! * In exactly-once mode each source channel has its own *transactional* producer
//!   ([`Producer::transactional`], `transactional.id` per channel): [`Producer::init_transactions`]
//!   fences any earlier owner of that id and aborts its open transaction;
//!   [`Producer::begin_transaction`] / [`Producer::commit_transaction`] /
//!   [`Producer::abort_transaction`] frame the records and the checkpoint of one interval. Their
//!   errors say whether the transaction can be aborted and retried or the producer is finished
//!   ([`TransactionFailure`]: fenced by a newer owner, or fatal).
//! * [`render_topic`] renders a topic-name template and validates the result as a legal Kafka
//!   topic name.
//! * [`EmbeddedKafka`] is the librdkafka mock cluster used by the demo and the tests. It is
//!   `!Send`: keep it on the stack of the thread that created it, and drop clients before it.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError as RdKafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Header, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{
    BaseRecord, DefaultProducerContext, Producer as _, ProducerContext, ThreadedProducer,
};
use tokio::sync::Notify;

use crate::ops::telemetry::DeliveryStats;
use crate::source::checkpoint::{AckToken, AckWindow};

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

impl KafkaError {
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

/// One record to produce. Key, value and headers are copied by librdkafka on enqueue.
#[derive(Debug, Clone, Copy)]
pub struct OutgoingRecord<'a> {
    /// Target topic.
    pub topic: &'a str,
    /// Record key (`None`: no key).
    pub key: Option<&'a [u8]>,
    /// Record value (`None`: a tombstone).
    pub value: Option<&'a [u8]>,
    /// Record headers.
    pub headers: &'a [(&'a str, &'a [u8])],
}

/// How long a sender blocked on a full queue sleeps at most before retrying, in case it missed
/// the wake-up of a delivery report.
const QUEUE_FULL_RECHECK: Duration = Duration::from_millis(20);

/// Producer context: resolves each record's [`AckToken`] from its delivery report and wakes
/// senders blocked on a full queue.
struct DeliveryContext {
    /// Senders currently waiting for queue space; deliveries only notify when > 0.
    blocked: AtomicUsize,
    space: Notify,
    /// How many sends found the queue full (for telemetry and tests).
    queue_full: AtomicU64,
    /// Enqueue→report latency and outcomes.
    stats: Arc<DeliveryStats>,
}

/// What travels with a record through librdkafka: its token and when it was enqueued.
struct Pending {
    token: AckToken,
    enqueued: Instant,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<Pending>;

    fn delivery(&self, result: &DeliveryResult<'_>, pending: Self::DeliveryOpaque) {
        let outcome = match result {
            Ok(_) => Ok(()),
            Err((err, _)) => Err(err.to_string()),
        };
        let waited = pending.enqueued.elapsed();
        self.stats.observe(waited, outcome.is_ok());
        if let (Some(probe), Ok(message)) = (LATENCY_PROBE.get(), result) {
            probe.observe(rdkafka::Message::payload(message), waited);
        }
        pending.token.ack(outcome);
        if self.blocked.load(Ordering::Acquire) > 0 {
            self.space.notify_waiters();
        }
    }
}

/// Set once per process by [`install_latency_probe`] (`forcebridge bench`); unset otherwise, when
/// the delivery callback pays one atomic load for it.
static LATENCY_PROBE: std::sync::OnceLock<Arc<LatencyProbe>> = std::sync::OnceLock::new();

/// Benchmark probe: for every acknowledged record whose value carries `"commit_timestamp":<ms>`
/// (a source record), the time from that commit in Salesforce to the delivery report, in whole
/// milliseconds (the commit timestamp's resolution), counted in histograms of 1 ms buckets, so
/// that its memory stays the same however long the run. The time is also split in two legs at
/// the record's enqueue into the producer: commit → enqueue (the org, the stream, the pipeline)
/// and enqueue → delivery report (librdkafka's linger, the broker), and the records that took
/// [`LatencyProbe::SLOW_MS`] or more are summed per leg, so a run says where its slow ones waited.
#[derive(Debug)]
pub struct LatencyProbe {
    total: MsHistogram,
    before_producer: MsHistogram,
    in_producer: MsHistogram,
    /// Records of [`LatencyProbe::SLOW_MS`] or more: how many, and their µs per leg, summed.
    slow: AtomicU64,
    slow_before_us: AtomicU64,
    slow_in_us: AtomicU64,
    /// Finds [`LatencyProbe::KEY`] from the end of a value.
    finder: memchr::memmem::FinderRev<'static>,
}

impl Default for LatencyProbe {
    fn default() -> Self {
        LatencyProbe {
            total: MsHistogram::default(),
            before_producer: MsHistogram::default(),
            in_producer: MsHistogram::default(),
            slow: AtomicU64::new(0),
            slow_before_us: AtomicU64::new(0),
            slow_in_us: AtomicU64::new(0),
            finder: memchr::memmem::FinderRev::new(Self::KEY),
        }
    }
}

/// 1 ms buckets up to [`LatencyProbe::LAST`] (open-ended), and the maximum.
#[derive(Debug)]
struct MsHistogram {
    buckets: Box<[AtomicU64]>,
    max_ms: AtomicU64,
}

impl Default for MsHistogram {
    fn default() -> Self {
        MsHistogram {
            buckets: (0..=LatencyProbe::LAST)
                .map(|_| AtomicU64::new(0))
                .collect(),
            max_ms: AtomicU64::new(0),
        }
    }
}

impl MsHistogram {
    fn add(&self, ms: u64) {
        let bucket = usize::try_from(ms)
            .unwrap_or(LatencyProbe::LAST)
            .min(LatencyProbe::LAST);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.max_ms.fetch_max(ms, Ordering::Relaxed);
    }

    fn take(&self) -> LatencyCounts {
        LatencyCounts {
            counts: self
                .buckets
                .iter()
                .map(|b| b.swap(0, Ordering::Relaxed))
                .collect(),
            max_ms: self.max_ms.swap(0, Ordering::Relaxed),
        }
    }
}

/// What a [`LatencyProbe`] counted.
#[derive(Debug, Clone, Default)]
pub struct LatencyCounts {
    /// `counts[ms]`, the last bucket open-ended.
    pub counts: Vec<u64>,
    pub max_ms: u64,
}

impl LatencyCounts {
    /// Samples counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The `q` quantile (0..=1), nearest rank, in ms; `None` without samples. A quantile in the
    /// open-ended last bucket is reported as the maximum.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let bucket = crate::ops::telemetry::nearest_rank_bucket(&self.counts, q)?;
        Some(if bucket + 1 == self.counts.len() {
            self.max_ms
        } else {
            bucket as u64
        })
    }
}

/// A [`LatencyProbe`]'s counts: commit → delivery report, and its two legs.
#[derive(Debug, Clone, Default)]
pub struct LatencySplit {
    /// Commit → delivery report.
    pub total: LatencyCounts,
    /// Commit → enqueue into the producer (the org, the stream, decoding and the pipeline's
    /// queues). Derived as the total less the producer's leg, so it is within a millisecond.
    pub before_producer: LatencyCounts,
    /// Enqueue → delivery report (librdkafka's linger and queues, the broker, the report).
    pub in_producer: LatencyCounts,
    /// Records of [`LatencyProbe::SLOW_MS`] or more.
    pub slow: u64,
    /// Their mean commit → enqueue and enqueue → report, ms.
    pub slow_before_ms: f64,
    pub slow_in_ms: f64,
}

impl LatencyProbe {
    /// The last (open-ended) bucket, ms.
    const LAST: usize = 120_000;

    /// A record this late or later is counted among the slow ones (the latency target, ms).
    pub const SLOW_MS: u64 = 10;

    /// The envelope's field the probe reads.
    const KEY: &[u8] = b"\"commit_timestamp\":";

    /// Counts one delivered record, enqueued `in_producer` ago.
    fn observe(&self, payload: Option<&[u8]>, in_producer: Duration) {
        let Some(committed) = payload.and_then(|p| self.commit_timestamp(p)) else {
            return;
        };
        let total = crate::ops::telemetry::unix_millis().saturating_sub(committed);
        let in_us = u64::try_from(in_producer.as_micros()).unwrap_or(u64::MAX);
        let before_us = total.saturating_mul(1000).saturating_sub(in_us);
        self.total.add(total);
        self.in_producer.add(in_us / 1000);
        self.before_producer.add(before_us / 1000);
        if total >= Self::SLOW_MS {
            self.slow.fetch_add(1, Ordering::Relaxed);
            self.slow_before_us.fetch_add(before_us, Ordering::Relaxed);
            self.slow_in_us.fetch_add(in_us, Ordering::Relaxed);
        }
    }

    /// The value of the envelope's `commit_timestamp`, ms.
    fn commit_timestamp(&self, payload: &[u8]) -> Option<u64> {
        // The envelope's own field comes after `record`, near the end: search from there.
        let at = self.finder.rfind(payload)?;
        let digits = &payload[at + Self::KEY.len()..];
        let end = digits
            .iter()
            .position(|b| !b.is_ascii_digit())
            .unwrap_or(digits.len());
        std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
    }

    /// Takes the counts so far and starts afresh.
    pub fn take(&self) -> LatencySplit {
        let slow = self.slow.swap(0, Ordering::Relaxed);
        let mean_ms = |sum_us: &AtomicU64| {
            sum_us.swap(0, Ordering::Relaxed) as f64 / 1000.0 / slow.max(1) as f64
        };
        LatencySplit {
            total: self.total.take(),
            before_producer: self.before_producer.take(),
            in_producer: self.in_producer.take(),
            slow,
            slow_before_ms: mean_ms(&self.slow_before_us),
            slow_in_ms: mean_ms(&self.slow_in_us),
        }
    }
}

/// Turns on the [`LatencyProbe`] for every producer of this process (costs a scan of each
/// delivered record's value); returns it. Meant for `forcebridge bench` only.
pub fn install_latency_probe() -> Arc<LatencyProbe> {
    LATENCY_PROBE.get_or_init(Default::default).clone()
}

/// The idempotent producer of the source side. Cheap to clone; share it across channel tasks
/// (a transactional one belongs to one channel).
#[derive(Clone)]
pub struct Producer {
    inner: Arc<ThreadedProducer<DeliveryContext>>,
    /// Set for a transactional producer.
    transactional_id: Option<Arc<str>>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("in_flight", &self.inner.in_flight_count())
            .finish()
    }
}

impl Producer {
    /// How long a partly filled batch waits for more records, ms (librdkafka takes a fraction).
    /// librdkafka's default, 5 ms, alone held a record at 5,000 events/s for p50 4 ms and p99
    /// 9–13 ms (commit → ack). Interleaved runs at that rate: 1 ms gave p99 4–12 ms, 0.5 ms
    /// 4–7 ms, 0 ms 3–7 ms. At flat out the backlog fills batches anyway, as long as there is a
    /// linger at all: a warm run held 157,000–174,000 events/s at 0.5 ms (1 ms alike, 5 ms
    /// 168,000–193,000), where 0 ms fell to 89,000–124,000 (a produce request per few records).
    /// `kafka.properties` `linger.ms` overrides it.
    pub const LINGER_MS: &str = "0.5";

    /// Idempotent producer (`enable.idempotence=true`, `acks=all`), no compression,
    /// `linger.ms=0.5` ([`Producer::LINGER_MS`]); passthrough properties are applied last.
    pub fn new(settings: &KafkaSettings) -> Result<Producer, KafkaError> {
        Self::create(settings, None)
    }

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

    /// The producer's librdkafka configuration: forcebridge's defaults, then the passthrough
    /// properties, then the transaction settings.
    fn config(settings: &KafkaSettings, transactional: Option<(&str, Duration)>) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &settings.bootstrap_servers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", "none")
            .set("linger.ms", Self::LINGER_MS)
            // Small produce requests leave at once instead of waiting for the last one's ACK.
            .set("socket.nagle.disable", "true");
        for (k, v) in &settings.properties {
            config.set(k, v);
        }
        if let Some((id, timeout)) = transactional {
            config
                .set("transactional.id", id)
                .set("transaction.timeout.ms", timeout.as_millis().to_string());
        }
        config
    }

    fn create(
        settings: &KafkaSettings,
        transactional: Option<(&str, Duration)>,
    ) -> Result<Producer, KafkaError> {
        let config = Self::config(settings, transactional);
        let context = DeliveryContext {
            blocked: AtomicUsize::new(0),
            space: Notify::new(),
            queue_full: AtomicU64::new(0),
            stats: Arc::default(),
        };
        let inner = config
            .create_with_context::<_, ThreadedProducer<_>>(context)
            .map_err(KafkaError::Create)?;
        Ok(Producer {
            inner: Arc::new(inner),
            transactional_id: transactional.map(|(id, _)| Arc::from(id)),
        })
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

    /// Enqueues one record; returns once librdkafka accepted it. While librdkafka's local queue
    /// is full this waits (asynchronously) and retries the same record. The delivery outcome
    /// goes to `ack` from the delivery callback. If the record is refused for another reason the
    /// error is returned and `ack` is resolved as failed.
    pub async fn send(&self, record: OutgoingRecord<'_>, ack: AckToken) -> Result<(), KafkaError> {
        let pending = Box::new(Pending {
            token: ack,
            enqueued: Instant::now(),
        });
        let mut base = BaseRecord::with_opaque_to(record.topic, pending);
        if let Some(key) = record.key {
            base = base.key(key);
        }
        if let Some(value) = record.value {
            base = base.payload(value);
        }
        if !record.headers.is_empty() {
            let headers = record.headers.iter().fold(
                OwnedHeaders::new_with_capacity(record.headers.len()),
                |h, (key, value)| {
                    h.insert(Header {
                        key,
                        value: Some(*value),
                    })
                },
            );
            base = base.headers(headers);
        }

        let mut base = match self.inner.send(base) {
            Ok(()) => return Ok(()),
            Err((RdKafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), base)) => base,
            Err((source, base)) => return Err(self.refused(record.topic, source, base)),
        };

        // Backpressure: wait for deliveries to free queue space, then retry the same record.
        let context = self.inner.context();
        context.queue_full.fetch_add(1, Ordering::Relaxed);
        context.blocked.fetch_add(1, Ordering::AcqRel);
        let _unblock = DecrementOnDrop(&context.blocked);
        loop {
            let notified = context.space.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            base = match self.inner.send(base) {
                Ok(()) => return Ok(()),
                Err((RdKafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), base)) => base,
                Err((source, base)) => return Err(self.refused(record.topic, source, base)),
            };
            let _ = tokio::time::timeout(QUEUE_FULL_RECHECK, notified).await;
        }
    }

    fn refused(
        &self,
        topic: &str,
        source: RdKafkaError,
        base: BaseRecord<'_, [u8], [u8], Box<Pending>>,
    ) -> KafkaError {
        base.delivery_opaque
            .token
            .ack(Err(format!("not enqueued: {source}")));
        KafkaError::Enqueue {
            topic: topic.to_owned(),
            source,
        }
    }

    /// Produces `records` and waits until Kafka has acknowledged every one of them; returns the
    /// first failure. For the few records that must be durable before going on (gap markers,
    /// the demo's write-backs); the pipelines' hot paths use [`Producer::send`] with the tokens
    /// of their own windows.
    pub async fn deliver<'a>(
        &self,
        records: impl IntoIterator<Item = OutgoingRecord<'a>>,
    ) -> Result<(), String> {
        let window = AckWindow::new();
        let handle = window.begin(bytes::Bytes::new());
        for record in records {
            self.send(record, handle.token())
                .await
                .map_err(|e| e.to_string())?;
        }
        handle.seal();
        window.wait_idle().await;
        window.failure().map_or(Ok(()), Err)
    }

    /// Waits until every enqueued record has been delivered or failed, at most `timeout`.
    pub async fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.flush(timeout))
            .await
            .map_err(|e| KafkaError::Task(e.to_string()))?
            .map_err(KafkaError::Flush)
    }

    /// How many [`Producer::send`] calls found librdkafka's queue full and had to wait.
    pub fn queue_full_waits(&self) -> u64 {
        self.inner.context().queue_full.load(Ordering::Relaxed)
    }

    /// Records enqueued or in flight and not yet reported.
    pub fn in_flight_count(&self) -> i32 {
        self.inner.in_flight_count()
    }

    /// The delivery-report statistics of this producer (shared by its clones).
    pub fn delivery_stats(&self) -> Arc<DeliveryStats> {
        self.inner.context().stats.clone()
    }
}

struct DecrementOnDrop<'a>(&'a AtomicUsize);

impl Drop for DecrementOnDrop<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A topic name template is invalid or renders an illegal Kafka topic name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicNameError {
    /// The template holds a `{...}` placeholder other than `{object}` and `{channel}`.
    #[error(
        "topic template {template:?}: unknown placeholder {placeholder:?} (use {{object}} or {{channel}})"
    )]
    UnknownPlaceholder {
        /// The template.
        template: String,
        /// The unknown placeholder, braces included.
        placeholder: String,
    },
    /// The rendered name holds a character Kafka does not allow (only `a-z A-Z 0-9 . _ -`).
    #[error(
        "topic template {template:?} renders {topic:?}, which contains {character:?}: Kafka topic names allow only ASCII letters, digits, '.', '_' and '-'"
    )]
    IllegalCharacter {
        /// The template.
        template: String,
        /// The rendered name.
        topic: String,
        /// The first illegal character.
        character: char,
    },
    /// The rendered name is empty, `.`, `..`, or longer than 249 characters.
    #[error(
        "topic template {template:?} renders {topic:?}, which is not a legal Kafka topic name: {reason}"
    )]
    IllegalName {
        /// The template.
        template: String,
        /// The rendered name.
        topic: String,
        /// Why it is illegal.
        reason: &'static str,
    },
}

/// Longest legal Kafka topic name.
const MAX_TOPIC_LEN: usize = 249;

/// Renders a topic name from `template`: `{object}` is replaced by `object`, `{channel}` by the
/// channel name without its leading `/` and with `/` turned into `.` (`/data/AccountChangeEvent`
/// → `data.AccountChangeEvent`). The result must be a legal Kafka topic name.
pub fn render_topic(template: &str, object: &str, channel: &str) -> Result<String, TopicNameError> {
    let channel = channel
        .strip_prefix('/')
        .unwrap_or(channel)
        .replace('/', ".");
    let mut topic = String::with_capacity(template.len() + object.len() + channel.len());
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        topic.push_str(&rest[..start]);
        let after = &rest[start..];
        let end = after.find('}').map_or(after.len(), |i| i + 1);
        match &after[..end] {
            "{object}" => topic.push_str(object),
            "{channel}" => topic.push_str(&channel),
            other => {
                return Err(TopicNameError::UnknownPlaceholder {
                    template: template.to_owned(),
                    placeholder: other.to_owned(),
                });
            }
        }
        rest = &after[end..];
    }
    topic.push_str(rest);

    let illegal = |reason| TopicNameError::IllegalName {
        template: template.to_owned(),
        topic: topic.clone(),
        reason,
    };
    if topic.is_empty() {
        return Err(illegal("it is empty"));
    }
    if topic == "." || topic == ".." {
        return Err(illegal("'.' and '..' are reserved"));
    }
    if topic.len() > MAX_TOPIC_LEN {
        return Err(illegal("it is longer than 249 characters"));
    }
    if let Some(character) = topic
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(TopicNameError::IllegalCharacter {
            template: template.to_owned(),
            topic,
            character,
        });
    }
    Ok(topic)
}

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
    fn config(settings: &KafkaSettings) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &settings.bootstrap_servers)
            // The existence check must not auto-create the topic with broker defaults.
            .set("allow.auto.create.topics", "false")
            // Connected to every broker from the start: the check of a new object's topic is on
            // the path of that object's first records, which otherwise waited for the
            // connection (about 50 ms in most short runs of `bench source --rate`,
            // BENCHMARKS.md).
            .set("enable.sparse.connections", "false");
        for (k, v) in &settings.properties {
            config.set(k, v);
        }
        config
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
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap_servers)
        .set("group.id", "forcebridge-count")
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

#[cfg(test)]
mod tests {
    use super::*;

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

    /// `Producer::send` must be usable from `tokio::spawn`ed channel tasks.
    #[allow(dead_code)]
    fn send_future_is_send(producer: &Producer, token: AckToken) {
        fn is_send<T: Send>(_: T) {}
        let record = OutgoingRecord {
            topic: "t",
            key: None,
            value: None,
            headers: &[],
        };
        is_send(producer.send(record, token));
    }

    #[test]
    fn the_latency_probe_counts_in_constant_memory_and_reports_nearest_rank_quantiles() {
        let probe = LatencyProbe::default();
        let now = crate::ops::telemetry::unix_millis();
        let in_producer = Duration::from_millis(3);
        // Commit timestamps far enough back that the clock moving on during the test only
        // shifts each by a millisecond or two: 100 samples of ~k ms, one of ~10 minutes.
        for k in 1..=100u64 {
            let value = format!(r#"{{"record":{{}},"commit_timestamp":{}}}"#, now - k * 1000);
            probe.observe(Some(value.as_bytes()), in_producer);
        }
        probe.observe(
            Some(format!(r#"{{"commit_timestamp":{}}}"#, now - 600_000).as_bytes()),
            in_producer,
        );
        probe.observe(Some(b"{\"no\":1}"), in_producer);
        probe.observe(None, in_producer);
        let split = probe.take();
        let counts = &split.total;
        assert_eq!(counts.counts.len(), LatencyProbe::LAST + 1);
        assert_eq!(counts.total(), 101);
        let p50 = counts.quantile(0.5).unwrap();
        assert!((51_000..51_100).contains(&p50), "{p50}");
        // The open-ended last bucket reports the maximum.
        assert!(counts.max_ms >= 600_000);
        assert_eq!(counts.quantile(1.0), Some(counts.max_ms));
        // The legs: 3 ms in the producer, the rest before it.
        assert_eq!(split.in_producer.total(), 101);
        assert_eq!(split.in_producer.quantile(0.5), Some(3));
        assert_eq!(split.in_producer.max_ms, 3);
        let before = split.before_producer.quantile(0.5).unwrap();
        assert!((50_997..51_097).contains(&before), "{before}");
        // Every sample is past the slow mark.
        assert_eq!(split.slow, 101);
        assert!(
            (split.slow_in_ms - 3.0).abs() < 1e-9,
            "{}",
            split.slow_in_ms
        );
        assert!(split.slow_before_ms > 50_000.0, "{}", split.slow_before_ms);
        // Taken: the probe starts afresh.
        let again = probe.take();
        assert_eq!(again.total.total(), 0);
        assert_eq!(again.total.quantile(0.5), None);
        assert_eq!(again.slow, 0);
    }

    #[test]
    fn the_latency_probe_sums_the_legs_of_slow_records_only() {
        let probe = LatencyProbe::default();
        let now = crate::ops::telemetry::unix_millis();
        // A fresh record (well under the mark) and one 2 s old, 1.5 s of which in the producer.
        let fresh = format!(r#"{{"commit_timestamp":{now}}}"#);
        probe.observe(Some(fresh.as_bytes()), Duration::from_micros(200));
        let old = format!(r#"{{"commit_timestamp":{}}}"#, now - 2000);
        probe.observe(Some(old.as_bytes()), Duration::from_millis(1500));
        let split = probe.take();
        assert_eq!(split.total.total(), 2);
        assert_eq!(split.slow, 1);
        assert!(
            (split.slow_in_ms - 1500.0).abs() < 1e-9,
            "{}",
            split.slow_in_ms
        );
        assert!(
            (500.0..520.0).contains(&split.slow_before_ms),
            "{}",
            split.slow_before_ms
        );
        assert_eq!(split.in_producer.quantile(0.0), Some(0));
        assert_eq!(split.in_producer.max_ms, 1500);
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

    #[test]
    fn renders_object_and_channel() {
        assert_eq!(
            render_topic("sf.{object}", "Account", "/data/AccountChangeEvent").unwrap(),
            "sf.Account"
        );
        assert_eq!(
            render_topic("cdc-{channel}", "Account", "/data/AccountChangeEvent").unwrap(),
            "cdc-data.AccountChangeEvent"
        );
        assert_eq!(
            render_topic("{channel}_{object}", "Order__c", "/event/Order_Event__e").unwrap(),
            "event.Order_Event__e_Order__c"
        );
        assert_eq!(render_topic("fixed", "A", "/x").unwrap(), "fixed");
    }

    #[test]
    fn rejects_illegal_characters_naming_template_and_char() {
        let err = render_topic("sf/{object}", "Account", "/data/X").unwrap_err();
        assert_eq!(
            err,
            TopicNameError::IllegalCharacter {
                template: "sf/{object}".into(),
                topic: "sf/Account".into(),
                character: '/',
            }
        );
        let msg = err.to_string();
        assert!(msg.contains("sf/{object}") && msg.contains("'/'"), "{msg}");
        let err = render_topic("sf {object}", "Account", "/x").unwrap_err();
        assert!(matches!(
            err,
            TopicNameError::IllegalCharacter { character: ' ', .. }
        ));
        let err = render_topic("sf.{object}", "Accöunt", "/x").unwrap_err();
        assert!(matches!(
            err,
            TopicNameError::IllegalCharacter {
                character: 'ö', ..
            }
        ));
    }

    #[test]
    fn rejects_unknown_placeholders_and_bad_names() {
        assert!(matches!(
            render_topic("sf.{objekt}", "A", "/x"),
            Err(TopicNameError::UnknownPlaceholder { placeholder, .. }) if placeholder == "{objekt}"
        ));
        assert!(matches!(
            render_topic("sf.{object", "A", "/x"),
            Err(TopicNameError::UnknownPlaceholder { .. })
        ));
        assert!(matches!(
            render_topic("{object}", "", "/x"),
            Err(TopicNameError::IllegalName { .. })
        ));
        assert!(matches!(
            render_topic("..", "", "/x"),
            Err(TopicNameError::IllegalName { .. })
        ));
        let long = "a".repeat(250);
        assert!(matches!(
            render_topic(&long, "", "/x"),
            Err(TopicNameError::IllegalName { .. })
        ));
        assert!(render_topic(&long[..249], "", "/x").is_ok());
    }
}
