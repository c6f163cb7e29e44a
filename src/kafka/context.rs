//! The client context of forcebridge's reading consumers: the end of a partition is not an error.
//!
//! Contract: [`EndIsNotAnError`] behaves as rdkafka's default context except for one event.
//! rdkafka hands every consumer error event, `PartitionEOF` included, to
//! `ClientContext::error`, whose default logs it at `ERROR` ("librdkafka: Global error:
//! PartitionEOF"), so every start of the checkpoint loader logged an error for the normal end of
//! its partitions (issue 19, item 13). Here that one code is logged at `DEBUG`; every other error
//! still at `ERROR`. The consumer's `poll` still returns the EOF to its caller.

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError as RdKafkaError, RDKafkaErrorCode};

/// A consumer context whose `error` does not report the end of a partition as an error.
#[derive(Debug, Clone, Copy, Default)]
pub struct EndIsNotAnError;

/// Whether `error` is librdkafka's "end of partition" event (`enable.partition.eof`).
pub(crate) fn is_partition_end(error: &RdKafkaError) -> bool {
    match error {
        RdKafkaError::PartitionEOF(_) => true,
        RdKafkaError::Global(code) | RdKafkaError::MessageConsumption(code) => {
            *code == RDKafkaErrorCode::PartitionEOF
        }
        _ => false,
    }
}

/// The high watermark of `partition` that came with the consumer's last fetch response for it
/// (librdkafka's `rd_kafka_get_watermark_offsets`: cached, no request); `None` before any.
///
/// rdkafka 0.39 wraps only the querying variant (`fetch_watermarks`, a ListOffsets request).
pub(crate) fn cached_high_watermark<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partition: i32,
) -> Option<i64> {
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1_i64, -1_i64);
    // SAFETY: the client pointer is valid for the consumer's lifetime, `topic` is a valid
    // NUL-terminated string for the call, and both out-pointers point to live locals.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
        .then_some(high)
}

impl ClientContext for EndIsNotAnError {
    fn error(&self, error: RdKafkaError, reason: &str) {
        if is_partition_end(&error) {
            tracing::debug!(reason, "reached the end of a partition");
        } else {
            tracing::error!(%error, reason, "librdkafka error");
        }
    }
}

impl ConsumerContext for EndIsNotAnError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_end_of_a_partition_is_not_an_error() {
        assert!(is_partition_end(&RdKafkaError::PartitionEOF(3)));
        assert!(is_partition_end(&RdKafkaError::Global(
            RDKafkaErrorCode::PartitionEOF
        )));
        assert!(!is_partition_end(&RdKafkaError::Global(
            RDKafkaErrorCode::BrokerTransportFailure
        )));
        assert!(!is_partition_end(&RdKafkaError::MessageConsumption(
            RDKafkaErrorCode::UnknownTopicOrPartition
        )));
    }
}
