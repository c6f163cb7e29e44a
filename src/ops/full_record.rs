//! The counters of `source.channels[].full_record` (the completion of UPDATE records with the
//! records' current values, `crate::source::full_record`), one set per channel, kept in
//! [`super::telemetry::ChannelStats::full_record`] and exposed per `channel` by `/metrics`.
//!
//! Contract: the metric names are defined here (the telemetry module keeps every other name);
//! the counters are plain atomics, read by [`FullRecordStats::snapshot`].

use std::sync::atomic::{AtomicU64, Ordering};

/// sObject Collections retrieve calls made to complete UPDATE records, per channel.
pub const FULL_RECORD_READS: &str = "forcebridge_source_full_record_reads_total";
/// UPDATE records completed with the record's current values, per channel.
pub const FULL_RECORDS_COMPLETED: &str = "forcebridge_source_full_records_completed_total";
/// UPDATE records the read did not return (deleted since, or not visible): produced as the event
/// carried them, marked `absent`, per channel.
pub const FULL_RECORDS_ABSENT: &str = "forcebridge_source_full_records_absent_total";

/// The counters of one channel.
#[derive(Debug, Default)]
pub struct FullRecordStats {
    /// [`FULL_RECORD_READS`]
    pub reads: AtomicU64,
    /// [`FULL_RECORDS_COMPLETED`]
    pub completed: AtomicU64,
    /// [`FULL_RECORDS_ABSENT`]
    pub absent: AtomicU64,
}

/// [`FullRecordStats`] at a point in time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FullRecordCounts {
    pub reads: u64,
    pub completed: u64,
    pub absent: u64,
}

impl FullRecordStats {
    /// Reads the counters.
    pub fn snapshot(&self) -> FullRecordCounts {
        FullRecordCounts {
            reads: self.reads.load(Ordering::Relaxed),
            completed: self.completed.load(Ordering::Relaxed),
            absent: self.absent.load(Ordering::Relaxed),
        }
    }
}
