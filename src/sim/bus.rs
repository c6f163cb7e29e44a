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
//! * A replayed capture (`forcebridge sim --replay`) keeps the replay ids the real org sent
//!   ([`Bus::use_captured_ids`]): the n-th event of the log carries the n-th captured id (the
//!   captured ids of every channel, merged and strictly increasing as big-endian integers, all of
//!   one length up to 16 bytes); events appended after them get the last captured id plus 1, 2, …
//!   and the position before the first event is the first id minus 1. Cursors stay sequence
//!   numbers, so fetching, retention and flow control are unchanged; only the bytes on the wire
//!   ([`Bus::id_of`]) and their parsing ([`Bus::check_replay_id`]) differ.
//! * A replayed capture's events are [`Source::Captured`]: each captured channel
//!   ([`Channel::Replayed`]) serves exactly the events captured on it, with the schema id each
//!   carried there; any other channel selects them by the entity or platform event that produced
//!   them, as it selects the org's own events.

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
    /// An event of a replayed capture (`forcebridge sim --replay`).
    Captured(Box<CapturedSource>),
}

/// What produced a replayed event, and the captured channels it came on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedSource {
    /// The entity or platform event that produced it ([`Source::Entity`] or
    /// [`Source::PlatformEvent`]).
    pub origin: Source,
    /// Each captured channel it was delivered on, with the schema id it carried there (blank on
    /// `/data/ChangeEvents`, as captured).
    pub channels: Vec<(String, String)>,
}

impl Source {
    /// The schema id this event carried on the captured channel `topic`, if it was captured there.
    pub fn captured_schema_id(&self, topic: &str) -> Option<&str> {
        match self {
            Self::Captured(c) => c
                .channels
                .iter()
                .find(|(t, _)| t == topic)
                .map(|(_, id)| id.as_str()),
            _ => None,
        }
    }
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
    /// A channel of a replayed capture: the events captured on `topic`, then the events
    /// appended after the capture that `live` selects.
    Replayed {
        /// The channel's name (`/data/ChangeEvents`).
        topic: String,
        /// The channel as the org resolves it for its own events.
        live: Box<Channel>,
    },
}

impl Channel {
    /// The channel as the org resolves it for its own events (itself, or a replayed channel's
    /// `live`).
    pub fn live(&self) -> &Channel {
        match self {
            Self::Replayed { live, .. } => live,
            other => other,
        }
    }

    /// True if events from `source` are published on this channel.
    pub fn matches(&self, source: &Source) -> bool {
        match (self, source) {
            (Self::Replayed { topic, .. }, Source::Captured(_)) => {
                source.captured_schema_id(topic).is_some()
            }
            (Self::Replayed { live, .. }, _) => live.matches(source),
            (_, Source::Captured(c)) => self.matches(&c.origin),
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
    /// The captured replay ids of a replayed capture (see the module docs).
    captured: Option<CapturedIds>,
}

/// The replay ids of a capture: `ids[n - 1]` is the id of sequence number `n`.
#[derive(Debug)]
struct CapturedIds {
    ids: Vec<u128>,
    width: usize,
}

/// Captured replay ids a bus cannot use, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapturedIdsError {
    /// The ids are not all of one length from 1 to 16 bytes.
    #[error("replay id {0} is not as long as the first one (1 to 16 bytes)")]
    Width(String),
    /// Not strictly increasing, or the first is zero (no position before it).
    #[error("replay id {0} does not follow the one before it (or is zero)")]
    Order(String),
    /// Fewer or more ids than events in the log.
    #[error("{ids} captured replay ids for {events} events")]
    Count {
        /// Ids given.
        ids: usize,
        /// Events in the log.
        events: u64,
    },
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

    /// From now on, the events already in the log carry `ids` (one each, in order) instead of
    /// the simulator's own replay ids (see the module docs).
    pub fn use_captured_ids(&mut self, ids: &[Vec<u8>]) -> Result<(), CapturedIdsError> {
        if ids.len() as u64 != self.last_seq {
            return Err(CapturedIdsError::Count {
                ids: ids.len(),
                events: self.last_seq,
            });
        }
        let width = ids.first().map_or(REPLAY_ID_LEN, Vec::len);
        let mut values: Vec<u128> = Vec::with_capacity(ids.len());
        for id in ids {
            if id.len() != width || !(1..=16).contains(&width) {
                return Err(CapturedIdsError::Width(hex::encode(id)));
            }
            let value = id.iter().fold(0u128, |v, b| (v << 8) | u128::from(*b));
            if values.last().map_or(value == 0, |last| value <= *last) {
                return Err(CapturedIdsError::Order(hex::encode(id)));
            }
            values.push(value);
        }
        self.captured = Some(CapturedIds { ids: values, width });
        Ok(())
    }

    /// The replay id of sequence number `seq` (0: the position before the first event).
    pub fn id_of(&self, seq: u64) -> Vec<u8> {
        let Some(c) = self.captured.as_ref().filter(|c| !c.ids.is_empty()) else {
            return replay_id(seq);
        };
        let len = c.ids.len() as u64;
        let value = match seq {
            0 => c.ids[0] - 1,
            n if n <= len => c.ids[(n - 1) as usize],
            n => c.ids[c.ids.len() - 1] + u128::from(n - len),
        };
        value.to_be_bytes()[16 - c.width..].to_vec()
    }

    /// The sequence number a replay id stands for, if this org issued it.
    fn seq_of(&self, raw: &[u8]) -> Option<u64> {
        let Some(c) = self.captured.as_ref().filter(|c| !c.ids.is_empty()) else {
            // The 10 bytes real orgs send, or their first 8 bytes: the pozil Node client encodes
            // the replay id it is given as an 8-byte big-endian number (`encodeReplayId`, the fix
            // of pozil/pub-sub-api-node-client#4, whose `replayid.corrupted` came from sending
            // text), and its `subscribeFromReplayId` works against real orgs.
            let (counter, tail) = raw.split_first_chunk::<8>()?;
            let ok = (raw.len() == REPLAY_ID_LEN && tail == [0, 0]) || tail.is_empty();
            return ok.then(|| u64::from_be_bytes(*counter));
        };
        if raw.len() != c.width {
            return None;
        }
        let value = raw.iter().fold(0u128, |v, b| (v << 8) | u128::from(*b));
        let last = c.ids[c.ids.len() - 1];
        if value == c.ids[0] - 1 {
            Some(0)
        } else if value > last {
            u64::try_from(value - last)
                .ok()?
                .checked_add(c.ids.len() as u64)
        } else {
            c.ids.binary_search(&value).ok().map(|i| i as u64 + 1)
        }
    }

    /// Validates a `CUSTOM` replay id; returns the cursor (deliver strictly after it).
    pub fn check_replay_id(&self, raw: &[u8]) -> Result<u64, ReplayIdError> {
        let seq = self.seq_of(raw).ok_or(ReplayIdError::Malformed)?;
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
            .map(|e| self.id_of(e.seq))
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

    /// A replayed capture's channel selects the events captured on it, and the org's own events
    /// as its live channel does; any other channel selects captured events by their origin.
    #[test]
    fn replayed_channels_select_what_was_captured_on_them() {
        let captured = |channels: &[(&str, &str)]| {
            Source::Captured(Box::new(CapturedSource {
                origin: account(),
                channels: channels
                    .iter()
                    .map(|(c, id)| (c.to_string(), id.to_string()))
                    .collect(),
            }))
        };
        let both = captured(&[("/data/ChangeEvents", ""), ("/data/Sales__chn", "s1")]);
        let one = captured(&[("/data/Sales__chn", "s1")]);
        let all = Channel::Replayed {
            topic: "/data/ChangeEvents".into(),
            live: Box::new(Channel::AllChanges),
        };
        assert!(all.matches(&both));
        assert!(!all.matches(&one), "not captured on /data/ChangeEvents");
        assert!(
            all.matches(&account()),
            "the org's own events, as AllChanges"
        );
        assert!(!all.matches(&Source::PlatformEvent("Order_Event__e".into())));
        assert_eq!(all.live(), &Channel::AllChanges);
        assert!(Channel::Entity("Account".into()).matches(&one));
        assert!(!Channel::Entity("Contact".into()).matches(&one));
        assert_eq!(both.captured_schema_id("/data/ChangeEvents"), Some(""));
        assert_eq!(both.captured_schema_id("/data/Sales__chn"), Some("s1"));
        assert_eq!(one.captured_schema_id("/data/ChangeEvents"), None);
        assert_eq!(account().captured_schema_id("/data/ChangeEvents"), None);
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
