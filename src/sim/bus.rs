//! The org's event bus: one append-only log of every event (CDC and platform events), channels
//! as filters over it, replay ids, and the retention window.
//!
//! Contract:
//! * Replay ids are opaque to clients: 10 bytes, an org-wide counter as 8 bytes big-endian
//!   followed by two zero bytes, as real orgs send them (captures: pozil/pub-sub-api-node-client
//!   #36, `[0,0,0,0,0,16,219,77,0,0]` for replay id 1104717; pozil/pub-sub-api-java-client #6,
//!   `latest_replay_id: "\000\000\000\000\000+\247+\000\000"`). They increase along every
//!   channel but are not contiguous within one.
//! * A channel (`/data/AccountChangeEvent`, `/data/ChangeEvents`, `/data/Foo__chn`,
//!   `/event/Foo__e`) selects events by their source (entity or platform event).
//! * Events older than the retention window are dropped ([`Bus::expire`], [`Bus::purge_before`]);
//!   a `CUSTOM` replay id is accepted only if it has that form (or is its first 8 bytes, as the
//!   pozil Node client sends it), is not newer than the newest event
//!   and not older than the newest dropped event ([`Bus::check_replay_id`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::salesforce::proto::ProducerEvent;

/// What produced an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A change event of this entity (object API name).
    Entity(String),
    /// A platform event of this name (`Order_Event__e`).
    PlatformEvent(String),
}

/// A subscribable channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Channel {
    /// `/data/<Entity>ChangeEvent`.
    Entity(String),
    /// `/data/ChangeEvents`: every selected entity.
    AllChanges,
    /// A custom channel `/data/<Name>__chn` with member entities.
    Custom(Vec<String>),
    /// `/event/<Name>__e`.
    PlatformEvent(String),
}

impl Channel {
    /// True if events from `source` are published on this channel.
    pub fn matches(&self, source: &Source) -> bool {
        match (self, source) {
            (Self::Entity(e), Source::Entity(s)) => e == s,
            (Self::AllChanges, Source::Entity(_)) => true,
            (Self::Custom(members), Source::Entity(s)) => members.iter().any(|m| m == s),
            (Self::PlatformEvent(p), Source::PlatformEvent(s)) => p == s,
            _ => false,
        }
    }
}

/// One event in the log.
#[derive(Debug)]
pub struct LoggedEvent {
    /// Org-wide sequence number (the replay id's value).
    pub seq: u64,
    /// When it was appended.
    pub at: SystemTime,
    /// Producer.
    pub source: Source,
    /// The event as delivered.
    pub event: ProducerEvent,
}

/// Why a replay id was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayIdError {
    /// Not a replay id this org issues (10 bytes, the last two zero).
    Malformed,
    /// Older than the retention window or newer than the newest event.
    OutOfRange,
}

/// How long a replay id is (see the module docs for the captures).
pub(crate) const REPLAY_ID_LEN: usize = 10;

/// Encodes a sequence number as a replay id: 8 bytes big-endian, then two zero bytes.
pub fn replay_id(seq: u64) -> Vec<u8> {
    let mut id = Vec::with_capacity(REPLAY_ID_LEN);
    id.extend_from_slice(&seq.to_be_bytes());
    id.extend_from_slice(&[0, 0]);
    id
}

/// The log.
#[derive(Debug, Default)]
pub struct Bus {
    log: VecDeque<Arc<LoggedEvent>>,
    last_seq: u64,
    /// Highest sequence number dropped from the log (0 if none).
    floor: u64,
}

impl Bus {
    /// Appends an event; returns its sequence number.
    pub fn append(&mut self, source: Source, event: ProducerEvent, at: SystemTime) -> u64 {
        self.last_seq += 1;
        self.log.push_back(Arc::new(LoggedEvent {
            seq: self.last_seq,
            at,
            source,
            event,
        }));
        self.last_seq
    }

    /// Sequence number of the newest event ever appended (0 if none).
    pub fn tip(&self) -> u64 {
        self.last_seq
    }

    /// Cursor for `EARLIEST`: just before the oldest retained event.
    pub fn earliest_cursor(&self) -> u64 {
        self.floor
    }

    /// Drops events appended before `cutoff`.
    pub fn purge_before(&mut self, cutoff: SystemTime) {
        while self.log.front().is_some_and(|e| e.at < cutoff) {
            if let Some(e) = self.log.pop_front() {
                self.floor = e.seq;
            }
        }
    }

    /// Drops events older than `retention` (relative to now).
    pub fn expire(&mut self, retention: Duration) {
        if let Some(cutoff) = SystemTime::now().checked_sub(retention) {
            self.purge_before(cutoff);
        }
    }

    /// Validates a `CUSTOM` replay id; returns the cursor (deliver strictly after it).
    pub fn check_replay_id(&self, raw: &[u8]) -> Result<u64, ReplayIdError> {
        // The 10 bytes real orgs send, or their first 8 bytes: the pozil Node client encodes the
        // replay id it is given as an 8-byte big-endian number (`encodeReplayId`, the fix of
        // pozil/pub-sub-api-node-client#4, whose `replayid.corrupted` came from sending text),
        // and its `subscribeFromReplayId` works against real orgs.
        let (counter, tail) = match raw.split_first_chunk::<8>() {
            Some((counter, tail)) if raw.len() == REPLAY_ID_LEN || tail.is_empty() => {
                (counter, tail)
            }
            _ => return Err(ReplayIdError::Malformed),
        };
        if !tail.is_empty() && tail != [0, 0] {
            return Err(ReplayIdError::Malformed);
        }
        let seq = u64::from_be_bytes(*counter);
        if seq < self.floor || seq > self.last_seq {
            return Err(ReplayIdError::OutOfRange);
        }
        Ok(seq)
    }

    /// Up to `max` events of `channel` after `cursor`; also returns the new cursor (the last
    /// returned event, or the tip when fewer than `max` matched).
    pub fn fetch(
        &self,
        channel: &Channel,
        cursor: u64,
        max: usize,
    ) -> (Vec<Arc<LoggedEvent>>, u64) {
        let start = self.log.partition_point(|e| e.seq <= cursor);
        let mut out = Vec::new();
        for e in self.log.range(start..) {
            if out.len() == max {
                let last = out.last().map_or(cursor, |l: &Arc<LoggedEvent>| l.seq);
                return (out, last);
            }
            if channel.matches(&e.source) {
                out.push(e.clone());
            }
        }
        let new_cursor = match (out.len() == max, out.last()) {
            (true, Some(l)) => l.seq,
            _ => self.last_seq.max(cursor),
        };
        (out, new_cursor)
    }

    /// Replay ids of the retained events on `channel`, oldest first.
    pub fn replay_ids(&self, channel: &Channel) -> Vec<Vec<u8>> {
        self.log
            .iter()
            .filter(|e| channel.matches(&e.source))
            .map(|e| replay_id(e.seq))
            .collect()
    }

    /// Number of retained events on `channel`.
    pub fn count(&self, channel: &Channel) -> usize {
        self.log
            .iter()
            .filter(|e| channel.matches(&e.source))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev() -> ProducerEvent {
        ProducerEvent::default()
    }

    fn account() -> Source {
        Source::Entity("Account".into())
    }

    #[test]
    fn fetch_filters_by_channel_and_respects_max() {
        let mut bus = Bus::default();
        let now = SystemTime::now();
        bus.append(account(), ev(), now);
        bus.append(Source::Entity("Contact".into()), ev(), now);
        bus.append(account(), ev(), now);
        bus.append(Source::PlatformEvent("Order_Event__e".into()), ev(), now);
        let acc = Channel::Entity("Account".into());
        let (got, cursor) = bus.fetch(&acc, 0, 1);
        assert_eq!(got.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1]);
        assert_eq!(cursor, 1);
        let (got, cursor) = bus.fetch(&acc, cursor, 10);
        assert_eq!(got.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3]);
        assert_eq!(cursor, 4);
        assert_eq!(bus.count(&Channel::AllChanges), 3);
        assert_eq!(bus.count(&Channel::Custom(vec!["Contact".into()])), 1);
        assert_eq!(
            bus.count(&Channel::PlatformEvent("Order_Event__e".into())),
            1
        );
    }

    /// Replay ids have the layout real orgs send: pozil/pub-sub-api-node-client #36 shows
    /// replay id 1104717 as the bytes `[0,0,0,0,0,16,219,77,0,0]`.
    #[test]
    fn replay_ids_are_ten_bytes_as_real_orgs_send_them() {
        assert_eq!(replay_id(1_104_717), [0, 0, 0, 0, 0, 16, 219, 77, 0, 0]);
        assert_eq!(replay_id(1).len(), REPLAY_ID_LEN);
    }

    #[test]
    fn retention_moves_the_floor_and_invalidates_old_replay_ids() {
        let mut bus = Bus::default();
        let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        bus.append(account(), ev(), old);
        bus.append(account(), ev(), old);
        bus.append(account(), ev(), SystemTime::now());
        assert_eq!(bus.check_replay_id(&replay_id(1)), Ok(1));
        bus.expire(Duration::from_secs(72 * 3600));
        assert_eq!(bus.earliest_cursor(), 2);
        assert_eq!(
            bus.check_replay_id(&replay_id(1)),
            Err(ReplayIdError::OutOfRange)
        );
        assert_eq!(bus.check_replay_id(&replay_id(2)), Ok(2));
        assert_eq!(
            bus.check_replay_id(&replay_id(4)),
            Err(ReplayIdError::OutOfRange)
        );
        assert_eq!(bus.check_replay_id(b"42"), Err(ReplayIdError::Malformed));
        // The first 8 bytes, as the pozil Node client encodes a replay id, name the same event;
        // other lengths and a non-zero tail are malformed.
        assert_eq!(bus.check_replay_id(&2u64.to_be_bytes()), Ok(2));
        assert_eq!(
            bus.check_replay_id(&[0, 0, 0, 0, 0, 0, 0, 2, 0]),
            Err(ReplayIdError::Malformed)
        );
        assert_eq!(
            bus.check_replay_id(&[0, 0, 0, 0, 0, 0, 0, 2, 0, 1]),
            Err(ReplayIdError::Malformed)
        );
        let (got, _) = bus.fetch(&Channel::AllChanges, bus.earliest_cursor(), 10);
        assert_eq!(got.len(), 1);
    }
}
