//! `forcebridge sim --replay DIR`: a capture made by `forcebridge capture` ([`format`]) loaded
//! into the simulated org's bus, so that it serves the captured stream.
//!
//! Contract: [`load_into`] appends every captured event to an empty bus, in the order of the
//! replay ids the real org gave them (merged over channels), with the exact payload bytes and
//! event id, then makes the bus serve the captured replay ids ([`Bus::use_captured_ids`]).
//! Each event is a [`Source::Captured`] that remembers the captured channels it came on and the
//! schema id it carried on each (blank on `/data/ChangeEvents`, as captured), and its origin:
//! the entity of its `/data/<Entity>ChangeEvent` channel, the platform event of its
//! `/event/<Name>__e` channel, or on `/data/ChangeEvents` and custom `/data/<Name>__chn`
//! channels the entity recorded beside it. A replayed channel ([`replayed_channel`]) serves the
//! events captured on it, with their ids, schema ids and bytes, under the org's flow control
//! and replay presets; other channels select the captured events by their origin, with the
//! schema id of the entity's channel where it was captured blank. One event captured on two
//! channels under the same replay id (the same event id and payload) is one event of the bus;
//! under two ids it is two. Keepalives are not re-sent as captured: the bus sends its own, each
//! carrying the replay id of its position, as a real org does.

pub mod format;
pub mod writer;

use std::collections::BTreeMap;
use std::time::SystemTime;

use self::format::{Capture, Captured, CapturedEvent, TopicRecord, entity_channel};
use crate::salesforce::proto::ProducerEvent;
use crate::sim::bus::{Bus, CapturedIdsError, CapturedSource, Channel, Source};
use crate::sim::config::SimConfig;

/// A capture the simulated org cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The capture could not be read.
    #[error(transparent)]
    Format(#[from] format::FormatError),
    /// A channel kind replay does not serve.
    #[error(
        "channel {0}: replay serves /data/<Entity>ChangeEvent, /data/ChangeEvents, /data/<Name>__chn and /event/<Name>__e channels only"
    )]
    Channel(String),
    /// Two different captured events share a replay id.
    #[error("replay id {id} is captured on both {first} and {second}")]
    Duplicate {
        /// The replay id, hex.
        id: String,
        /// One channel.
        first: String,
        /// The other.
        second: String,
    },
    /// An event of `/data/ChangeEvents` or a custom channel without its entity.
    #[error("channel {0}: an event without its entity")]
    NoEntity(String),
    /// The bus already holds events.
    #[error("the simulated org already has {0} events: a replay starts from an empty bus")]
    NotEmpty(u64),
    /// The captured replay ids are not usable.
    #[error("captured replay ids: {0}")]
    Ids(#[from] CapturedIdsError),
}

/// The kinds of channel a capture can hold.
enum Kind {
    /// `/data/<Entity>ChangeEvent`, with its entity (`Foo__c` for `/data/Foo__ChangeEvent`).
    Entity(String),
    /// `/event/<Name>__e`.
    PlatformEvent(String),
    /// `/data/ChangeEvents`.
    AllChanges,
    /// `/data/<Name>__chn`.
    Custom,
}

/// The kind of a captured channel (Change Data Capture Developer Guide, "Subscription
/// Channels"; Platform Events Developer Guide, "Subscribe to Platform Event Notifications").
fn kind_of(channel: &str) -> Result<Kind, ReplayError> {
    if let Some(name) = channel.strip_prefix("/event/")
        && name.ends_with("__e")
    {
        return Ok(Kind::PlatformEvent(name.to_string()));
    }
    if channel == "/data/ChangeEvents" {
        return Ok(Kind::AllChanges);
    }
    if let Some(name) = channel.strip_prefix("/data/")
        && name.len() > "__chn".len()
        && name.ends_with("__chn")
        && !name.contains('/')
    {
        return Ok(Kind::Custom);
    }
    match crate::config::channel_object(channel) {
        Some(entity) if !entity.contains('/') => Ok(Kind::Entity(entity)),
        _ => Err(ReplayError::Channel(channel.to_string())),
    }
}

/// The producer of `event`, captured on `channel`.
fn origin_of(channel: &str, event: &CapturedEvent) -> Result<Source, ReplayError> {
    Ok(match kind_of(channel)? {
        Kind::Entity(e) => Source::Entity(e),
        Kind::PlatformEvent(p) => Source::PlatformEvent(p),
        Kind::AllChanges | Kind::Custom => Source::Entity(
            event
                .entity
                .clone()
                .ok_or_else(|| ReplayError::NoEntity(channel.to_string()))?,
        ),
    })
}

/// How the org resolves `topic` for its own events: a custom channel's members are the
/// simulator's (`SimConfig::custom_channels`) when it has that channel, else the entities
/// captured on it.
fn live_channel(config: &SimConfig, capture: &Capture, topic: &str) -> Option<Channel> {
    Some(match kind_of(topic).ok()? {
        Kind::Entity(e) => Channel::Entity(e),
        Kind::PlatformEvent(p) => Channel::PlatformEvent(p),
        Kind::AllChanges => Channel::AllChanges,
        Kind::Custom => {
            let configured = config.custom_channels.iter().find_map(|(name, members)| {
                let full = name.starts_with('/').then(|| name.clone());
                let full = full.unwrap_or_else(|| format!("/data/{name}"));
                (full == topic).then(|| members.clone())
            });
            Channel::Custom(configured.unwrap_or_else(|| captured_entities(capture, topic)))
        }
    })
}

/// The entities of the events captured on `topic`, sorted.
fn captured_entities(capture: &Capture, topic: &str) -> Vec<String> {
    let mut entities: Vec<String> = capture.streams[topic]
        .iter()
        .filter_map(|item| match item {
            Captured::Event(e) => e.entity.clone(),
            Captured::Keepalive { .. } => None,
        })
        .collect();
    entities.sort();
    entities.dedup();
    entities
}

/// The channel of a replayed capture's `topic`, when the org serves a capture that has it: a
/// captured channel is [`Channel::Replayed`]; an entity's channel only asked with `GetTopic`
/// (`entity_channels`) selects the captured events of its entity.
pub(crate) fn replayed_channel(config: &SimConfig, topic: &str) -> Option<Channel> {
    let capture = config.replay.as_ref()?;
    if capture.streams.contains_key(topic) {
        let live = live_channel(config, capture, topic)?;
        return Some(Channel::Replayed {
            topic: topic.to_string(),
            live: Box::new(live),
        });
    }
    if capture.topics.contains_key(topic) {
        return live_channel(config, capture, topic);
    }
    None
}

/// GetSchema's captured text for `schema_id`, when the org serves a capture that has it.
pub(crate) fn captured_schema(config: &SimConfig, schema_id: &str) -> Option<String> {
    config.replay.as_ref()?.schemas.get(schema_id).cloned()
}

/// GetTopic's captured answer for `topic`, when the org serves a capture that has it.
pub(crate) fn captured_topic<'a>(config: &'a SimConfig, topic: &str) -> Option<&'a TopicRecord> {
    config.replay.as_ref()?.topics.get(topic)
}

/// One event of the bus built from a capture: the first capture of it, its origin, and every
/// channel it was captured on with the schema id it carried there.
struct Merged<'a> {
    event: &'a CapturedEvent,
    first: &'a str,
    source: CapturedSource,
}

/// Every captured event by replay id; the same event captured on several channels under one id
/// is one entry.
fn merge(capture: &Capture) -> Result<BTreeMap<Vec<u8>, Merged<'_>>, ReplayError> {
    // Real replay ids are big-endian counters of one length, so byte order is their order. They
    // are unique for the org and the channel (Streaming API Developer Guide, "Message
    // Durability", "Event Numbering"): the same event may carry another id on another channel
    // (then it is two events here, each served on its own channel), and since the bus keeps one
    // org-wide order, two different events must not share an id.
    let mut merged: BTreeMap<Vec<u8>, Merged<'_>> = BTreeMap::new();
    for (channel, stream) in &capture.streams {
        kind_of(channel)?;
        for item in stream {
            let Captured::Event(event) = item else {
                continue;
            };
            let origin = origin_of(channel, event)?;
            let on = (channel.clone(), event.schema_id.clone());
            match merged.get_mut(&event.replay_id) {
                None => {
                    let source = CapturedSource {
                        origin,
                        channels: vec![on],
                    };
                    let first = channel.as_str();
                    merged.insert(
                        event.replay_id.clone(),
                        Merged {
                            event,
                            first,
                            source,
                        },
                    );
                }
                Some(m)
                    if m.event.event_id == event.event_id
                        && m.event.payload == event.payload
                        && m.source.origin == origin =>
                {
                    m.source.channels.push(on);
                }
                Some(m) => {
                    return Err(ReplayError::Duplicate {
                        id: hex::encode(&event.replay_id),
                        first: m.first.to_string(),
                        second: channel.clone(),
                    });
                }
            }
        }
    }
    Ok(merged)
}

/// The schema id an event carries on channels that were not captured: one it carried on a
/// captured channel, else (captured blank, on `/data/ChangeEvents`) its entity's channel's.
fn schema_id_of(capture: &Capture, source: &CapturedSource) -> String {
    if let Some((_, id)) = source.channels.iter().find(|(_, id)| !id.is_empty()) {
        return id.clone();
    }
    match &source.origin {
        Source::Entity(entity) => capture
            .topics
            .get(&entity_channel(entity))
            .map(|t| t.schema_id.clone())
            .unwrap_or_default(),
        _ => String::new(),
    }
}

/// Appends `capture`'s events to the empty `bus` (all at `at`) and makes it serve their captured
/// replay ids; returns the number of events.
pub fn load_into(bus: &mut Bus, capture: &Capture, at: SystemTime) -> Result<usize, ReplayError> {
    if bus.tip() != 0 {
        return Err(ReplayError::NotEmpty(bus.tip()));
    }
    let merged = merge(capture)?;
    let mut ids = Vec::with_capacity(merged.len());
    for (id, Merged { event, source, .. }) in merged {
        let producer = ProducerEvent {
            id: event.event_id.clone(),
            schema_id: schema_id_of(capture, &source),
            payload: event.payload.clone().into(),
            headers: event
                .headers
                .iter()
                .map(|(key, value)| crate::salesforce::proto::EventHeader {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
        };
        bus.append(Source::Captured(Box::new(source)), producer, at);
        ids.push(id);
    }
    bus.use_captured_ids(&ids)?;
    Ok(ids.len())
}

#[cfg(test)]
mod tests;
