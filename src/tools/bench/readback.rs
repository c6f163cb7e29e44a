//! [`ReadBack`]: reads `salesforce.Account` back while the snapshot runs, counting the READ
//! records (header `forcebridge.change_type: READ`) and their distinct Ids (the record key).
//!
//! Contract: a consumer without a group, assigned every partition from the beginning, on a
//! thread of its own; [`ReadBack::finish`] is called once the producer is done (`expected`
//! records acknowledged) and returns when it has read that many or nothing more came for 5 s.
//! The mock cluster keeps only the last 5 MB of each partition: a reader that falls that far
//! behind misses records, which shows as fewer distinct Ids (more partitions keep more).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::error::BenchError;

/// What was read back.
pub(super) struct Read {
    pub(super) records: u64,
    pub(super) reads: u64,
    pub(super) distinct_ids: u64,
}

/// The reading thread.
pub(super) struct ReadBack {
    expected: Arc<AtomicU64>,
    thread: JoinHandle<Read>,
}

impl ReadBack {
    /// Starts reading `topic`'s `partitions` from the beginning.
    pub(super) fn start(
        bootstrap: &str,
        topic: &str,
        partitions: i32,
    ) -> Result<ReadBack, BenchError> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", "forcebridge-bench-readback")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .create()
            .map_err(|e| BenchError::Kafka(format!("read-back consumer: {e}")))?;
        let mut assignment = TopicPartitionList::new();
        for p in 0..partitions {
            assignment
                .add_partition_offset(topic, p, Offset::Beginning)
                .map_err(|e| BenchError::Kafka(e.to_string()))?;
        }
        consumer
            .assign(&assignment)
            .map_err(|e| BenchError::Kafka(format!("read-back assign: {e}")))?;
        let expected = Arc::new(AtomicU64::new(u64::MAX));
        let until = expected.clone();
        let thread = std::thread::spawn(move || read(&consumer, &until));
        Ok(ReadBack { expected, thread })
    }

    /// Reads until `expected` records were read, or 5 s passed without one.
    pub(super) fn finish(self, expected: u64) -> Result<Read, BenchError> {
        self.expected.store(expected, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| BenchError::Failed("the read-back thread panicked".into()))
    }
}

fn read(consumer: &BaseConsumer, expected: &AtomicU64) -> Read {
    let mut ids: HashSet<Box<[u8]>> = HashSet::new();
    let (mut records, mut reads) = (0u64, 0u64);
    let mut last = Instant::now();
    loop {
        let target = expected.load(Ordering::Relaxed);
        if records >= target || (target != u64::MAX && last.elapsed() > Duration::from_secs(5)) {
            break;
        }
        let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        last = Instant::now();
        records += 1;
        let read = message.headers().is_some_and(|h| {
            h.iter()
                .any(|h| h.key == "forcebridge.change_type" && h.value == Some(b"READ"))
        });
        if read {
            reads += 1;
            if let Some(key) = message.key() {
                ids.insert(key.into());
            }
        }
    }
    Read {
        records,
        reads,
        distinct_ids: ids.len() as u64,
    }
}
