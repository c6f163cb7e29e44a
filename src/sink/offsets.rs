//! Consumer offsets of the sink: a record's offset is committed only after the record is
//! finished — written to Salesforce, recorded as a conflict, or dead-lettered (each of the latter
//! acknowledged by Kafka).
//!
//! Contract:
//! * Each assigned partition has an [`AckWindow`] (the same ordered window the source uses for
//!   replay ids) keyed by offset; [`Offsets::track`] registers a record and returns the
//!   [`AckToken`] that finishes it. [`Offsets::committable`] yields, per partition, the offset
//!   after the last record that — with every earlier one — is finished.
//! * A token dropped or failed (a dead-letter write Kafka refused) marks its partition failed;
//!   [`Offsets::failure`] reports it and the sink restarts from the committed offsets.
//! * [`Offsets::holds`] says whether a partition is still this member's: writers drop the records
//!   of a revoked partition from a batch they have not sent yet.
//! * Commits ([`super::committer`]) take [`Offsets::committable`] and record what the broker
//!   confirmed with [`Offsets::mark_committed`]; a revoked partition is forgotten
//!   ([`Offsets::forget`]) once its finished offsets are committed.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use rdkafka::{Offset, TopicPartitionList};

use crate::kafka::ack::{AckToken, AckWindow};

#[derive(Default)]
struct Partition {
    window: AckWindow,
    /// The next offset to read as last committed (Kafka's committed-offset convention).
    committed: Option<i64>,
}

/// Offset windows of the assigned partitions. `Send + Sync`.
#[derive(Default)]
pub(crate) struct Offsets {
    partitions: Mutex<HashMap<(String, i32), Partition>>,
}

fn decode(durable: &Bytes) -> Option<i64> {
    <[u8; 8]>::try_from(durable.as_ref())
        .ok()
        .map(i64::from_be_bytes)
}

impl Offsets {
    fn lock(&self) -> MutexGuard<'_, HashMap<(String, i32), Partition>> {
        self.partitions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a consumed record (calls per partition must follow offset order).
    pub(crate) fn track(&self, topic: &str, partition: i32, offset: i64) -> AckToken {
        let mut map = self.lock();
        let state = map.entry((topic.to_owned(), partition)).or_default();
        let handle = state
            .window
            .begin(Bytes::copy_from_slice(&offset.to_be_bytes()));
        let token = handle.token();
        handle.seal();
        token
    }

    /// Records tracked and not finished yet, over every partition.
    pub(crate) fn in_flight(&self) -> u64 {
        self.lock()
            .values()
            .map(|p| p.window.in_flight() as u64)
            .sum()
    }

    /// Offsets to commit: per partition, one past the last finished record, when it moved.
    pub(crate) fn committable(&self) -> TopicPartitionList {
        self.committable_where(|_, _| true)
    }

    /// [`Offsets::committable`] of the partitions `keep` selects.
    pub(crate) fn committable_where(&self, keep: impl Fn(&str, i32) -> bool) -> TopicPartitionList {
        let map = self.lock();
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), state) in map.iter() {
            if !keep(topic, *partition) {
                continue;
            }
            let Some(next) = state
                .window
                .durable()
                .as_ref()
                .and_then(decode)
                .map(|o| o + 1)
            else {
                continue;
            };
            if state.committed.is_some_and(|c| c >= next) {
                continue;
            }
            // Adding a fresh (topic, partition) to a new list cannot fail.
            let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(next));
        }
        tpl
    }

    /// Records that `tpl` was committed.
    pub(crate) fn mark_committed(&self, tpl: &TopicPartitionList) {
        let mut map = self.lock();
        for elem in tpl.elements() {
            if let (Some(state), Offset::Offset(o)) = (
                map.get_mut(&(elem.topic().to_owned(), elem.partition())),
                elem.offset(),
            ) {
                state.committed = Some(state.committed.map_or(o, |c| c.max(o)));
            }
        }
    }

    /// The first failure of any partition (a record that could not be finished).
    pub(crate) fn failure(&self) -> Option<String> {
        self.lock().values().find_map(|p| p.window.failure())
    }

    /// Whether `partition` of `topic` is still this member's: tracked and not forgotten (revoked).
    pub(crate) fn holds(&self, topic: &str, partition: i32) -> bool {
        self.lock().contains_key(&(topic.to_owned(), partition))
    }

    /// Forgets partitions (revoked).
    pub(crate) fn forget(&self, tpl: &TopicPartitionList) {
        let mut map = self.lock();
        for elem in tpl.elements() {
            map.remove(&(elem.topic().to_owned(), elem.partition()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets_of(tpl: &TopicPartitionList) -> Vec<(String, i32, i64)> {
        let mut v: Vec<_> = tpl
            .elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => (e.topic().to_owned(), e.partition(), o),
                other => panic!("{other:?}"),
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_revoked_partition_is_no_longer_held() {
        let offsets = Offsets::default();
        let _a = offsets.track("t", 0, 10);
        let b = offsets.track("t", 1, 5);
        assert!(offsets.holds("t", 0) && offsets.holds("t", 1));
        let mut revoked = TopicPartitionList::new();
        revoked.add_partition("t", 1);
        offsets.forget(&revoked);
        assert!(offsets.holds("t", 0));
        assert!(!offsets.holds("t", 1), "revoked");
        // A record of the revoked partition dropped unwritten fails nothing this member holds.
        drop(b);
        assert_eq!(offsets.failure(), None);
    }

    #[test]
    fn commits_only_the_finished_prefix_per_partition() {
        let offsets = Offsets::default();
        let a0 = offsets.track("t", 0, 10);
        let a1 = offsets.track("t", 0, 11);
        let a2 = offsets.track("t", 0, 12);
        let b0 = offsets.track("t", 1, 5);
        assert_eq!(offsets.committable().count(), 0);
        a1.ack(Ok(()));
        a2.ack(Ok(()));
        assert_eq!(offsets.committable().count(), 0, "10 is unfinished");
        a0.ack(Ok(()));
        b0.ack(Ok(()));
        let tpl = offsets.committable();
        assert_eq!(offsets_of(&tpl), [("t".into(), 0, 13), ("t".into(), 1, 6)]);
        offsets.mark_committed(&tpl);
        assert_eq!(offsets.committable().count(), 0, "nothing new");
        assert_eq!(offsets.in_flight(), 0);
        let c = offsets.track("t", 1, 6);
        drop(c);
        assert!(
            offsets.failure().is_some(),
            "a dropped token fails its partition"
        );
        assert_eq!(offsets.committable().count(), 0);
    }
}
