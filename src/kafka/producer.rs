//! The source's producer: records into librdkafka's queue, delivery reports into ack tokens.
//!
//! Contract: [`Producer`] is an idempotent librdkafka producer (`enable.idempotence=true`,
//! `acks=all`). [`Producer::send`] returns once librdkafka accepted the record into its local
//! queue; while that queue is full it waits (without blocking the runtime) and retries the same
//! record: that is the backpressure towards the source. The delivery outcome is reported to the
//! record's [`AckToken`] from librdkafka's delivery callback (on the producer's polling thread),
//! never awaited per record. Retries of a produce request are librdkafka's (`message.timeout.ms`).
//! Transactions are in `transactions.rs`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError as RdKafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer as _, ProducerContext, ThreadedProducer};
use tokio::sync::Notify;

use super::ack::{AckToken, AckWindow};
use super::error::KafkaError;
use super::probe::LATENCY_PROBE;
use super::settings::KafkaSettings;
use crate::ops::telemetry::DeliveryStats;

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
pub(super) struct DeliveryContext {
    /// Senders currently waiting for queue space; deliveries only notify when > 0.
    blocked: AtomicUsize,
    space: Notify,
    /// How many sends found the queue full (for telemetry and tests).
    queue_full: AtomicU64,
    /// Enqueue→report latency and outcomes.
    stats: Arc<DeliveryStats>,
}

/// What travels with a record through librdkafka: its token and when it was enqueued.
pub(super) struct Pending {
    token: AckToken,
    enqueued: Instant,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<Pending>;

    fn delivery(&self, result: &DeliveryResult<'_>, pending: Self::DeliveryOpaque) {
        let outcome = match result {
            Ok(_) => Ok(()),
            // The topic is named: a deleted topic is what an operator must see (issue 19, item 5).
            Err((err, message)) => Err(format!(
                "{err} (topic {:?})",
                rdkafka::Message::topic(message)
            )),
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

/// The idempotent producer of the source side. Cheap to clone; share it across channel tasks
/// (a transactional one belongs to one channel).
#[derive(Clone)]
pub struct Producer {
    pub(super) inner: Arc<ThreadedProducer<DeliveryContext>>,
    /// Set for a transactional producer.
    pub(super) transactional_id: Option<Arc<str>>,
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

    /// The producer's librdkafka configuration: forcebridge's defaults, then the passthrough
    /// properties, then the transaction settings.
    pub(super) fn config(
        settings: &KafkaSettings,
        transactional: Option<(&str, Duration)>,
    ) -> ClientConfig {
        let mut config = settings.client_config(&[
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("compression.type", "none"),
            ("linger.ms", Self::LINGER_MS),
            // Small produce requests leave at once instead of waiting for the last one's ACK.
            ("socket.nagle.disable", "true"),
        ]);
        if let Some((id, timeout)) = transactional {
            config
                .set("transactional.id", id)
                .set("transaction.timeout.ms", timeout.as_millis().to_string());
        }
        config
    }

    pub(super) fn create(
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
