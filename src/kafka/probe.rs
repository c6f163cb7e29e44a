//! The benchmark's latency probe: the change asked of Salesforce → Kafka acknowledgement, per
//! record.
//!
//! Contract: off unless [`install_latency_probe`] was called (`forcebridge bench`); then the
//! producer's delivery callback hands it every acknowledged record, and it keeps constant-memory
//! millisecond histograms of the whole time and of its two legs (see [`LatencyProbe`]). The
//! start of each record's time is an epoch-ms value the bench wrote into a field of the change
//! itself, not the change event's `commitTimestamp`: Salesforce keeps that to the second.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Set once per process by [`install_latency_probe`] (`forcebridge bench`); unset otherwise, when
/// the delivery callback pays one atomic load for it.
pub(super) static LATENCY_PROBE: std::sync::OnceLock<Arc<LatencyProbe>> =
    std::sync::OnceLock::new();

/// Benchmark probe: for every acknowledged record whose value carries its field
/// (`"<field>":<ms>` or `"<field>":"<digits>"`: epoch milliseconds, written by the bench into
/// the change when it asked the org for it), the time from then to the delivery report, in whole
/// milliseconds, counted in histograms of 1 ms buckets, so that its memory stays the same however
/// long the run. The time is also split in two legs at the record's enqueue into the producer:
/// change → enqueue (the org, the stream, the pipeline) and enqueue → delivery report
/// (librdkafka's linger, the broker), and the records that took [`LatencyProbe::SLOW_MS`] or
/// more are summed per leg, so a run says where its slow ones waited.
#[derive(Debug)]
pub struct LatencyProbe {
    total: MsHistogram,
    before_producer: MsHistogram,
    in_producer: MsHistogram,
    /// Records of [`LatencyProbe::SLOW_MS`] or more: how many, and their µs per leg, summed.
    slow: AtomicU64,
    slow_before_us: AtomicU64,
    slow_in_us: AtomicU64,
    /// Finds `"<field>":` from the end of a value.
    finder: memchr::memmem::FinderRev<'static>,
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

    /// A probe timing records from the epoch-ms value of their JSON field `field`.
    pub fn new(field: &str) -> Self {
        let key = format!("\"{field}\":");
        LatencyProbe {
            total: MsHistogram::default(),
            before_producer: MsHistogram::default(),
            in_producer: MsHistogram::default(),
            slow: AtomicU64::new(0),
            slow_before_us: AtomicU64::new(0),
            slow_in_us: AtomicU64::new(0),
            finder: memchr::memmem::FinderRev::new(key.as_bytes()).into_owned(),
        }
    }

    /// Counts one delivered record, enqueued `in_producer` ago.
    pub(super) fn observe(&self, payload: Option<&[u8]>, in_producer: Duration) {
        let Some(asked) = payload.and_then(|p| self.started_at(p)) else {
            return;
        };
        let total = crate::ops::telemetry::unix_millis().saturating_sub(asked);
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

    /// The value of the probe's field, ms: a number or a string of digits.
    fn started_at(&self, payload: &[u8]) -> Option<u64> {
        // The bench's field is the record's last: search from the end.
        let at = self.finder.rfind(payload)?;
        let value = &payload[at + self.finder.needle().len()..];
        let digits = value.strip_prefix(b"\"").unwrap_or(value);
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
/// delivered record's value), timing records from their JSON field `field` (the first call's
/// field holds for the process); returns it. Meant for `forcebridge bench` only.
pub fn install_latency_probe(field: &str) -> Arc<LatencyProbe> {
    LATENCY_PROBE
        .get_or_init(|| Arc::new(LatencyProbe::new(field)))
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latency_probe_counts_in_constant_memory_and_reports_nearest_rank_quantiles() {
        let probe = LatencyProbe::new("Bench_Field_7__c");
        let now = crate::ops::telemetry::unix_millis();
        let in_producer = Duration::from_millis(3);
        // Commit timestamps far enough back that the clock moving on during the test only
        // shifts each by a millisecond or two: 100 samples of ~k ms, one of ~10 minutes.
        for k in 1..=100u64 {
            let value = format!(r#"{{"record":{{"Bench_Field_7__c":{}}}}}"#, now - k * 1000);
            probe.observe(Some(value.as_bytes()), in_producer);
        }
        probe.observe(
            Some(format!(r#"{{"Bench_Field_7__c":{}}}"#, now - 600_000).as_bytes()),
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
        let probe = LatencyProbe::new("Bench_Field_7__c");
        let now = crate::ops::telemetry::unix_millis();
        // A fresh record (well under the mark) and one 2 s old, 1.5 s of which in the producer;
        // as the bench writes them: text fields of 16 digits.
        let fresh = format!(r#"{{"record":{{"Bench_Field_7__c":"{now:016}"}}}}"#);
        probe.observe(Some(fresh.as_bytes()), Duration::from_micros(200));
        let old = format!(
            r#"{{"record":{{"Bench_Field_7__c":"{:016}"}}}}"#,
            now - 2000
        );
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
}
