//! `forcebridge sim --replay DIR`: a capture made by `forcebridge capture` ([`format`]) loaded
//! into the simulated org's bus, so that it serves the captured stream.
//!
//! Contract: [`load_into`] appends every captured event to an empty bus, in the order of the
//! replay ids the real org gave them (merged over channels), with the exact payload bytes,
//! schema id and event id, then makes the bus serve the captured replay ids
//! ([`Bus::use_captured_ids`]). A channel's events keep their channel through their
//! [`Source`]: `/data/<Entity>ChangeEvent` and `/event/<Name>__e` channels are replayed;
//! `/data/ChangeEvents` and custom `__chn` channels are refused (which entity an event belongs
//! to would need its payload decoded: not done yet). Keepalives are not re-sent as captured:
//! the bus sends its own, each carrying the replay id of its position, as a real org does.

pub mod format;

use std::collections::BTreeMap;
use std::time::SystemTime;

use self::format::{Capture, Captured, TopicRecord};
use crate::salesforce::proto::ProducerEvent;
use crate::sim::bus::{Bus, CapturedIdsError, Channel, Source};
use crate::sim::config::SimConfig;

/// A capture the simulated org cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The capture could not be read.
    #[error(transparent)]
    Format(#[from] format::FormatError),
    /// A channel kind replay does not serve.
    #[error(
        "channel {0}: replay serves /data/<Entity>ChangeEvent and /event/<Name>__e channels only"
    )]
    Channel(String),
    /// Two captured events share a replay id.
    #[error("replay id {id} is captured on both {first} and {second}")]
    Duplicate {
        /// The replay id, hex.
        id: String,
        /// One channel.
        first: String,
        /// The other.
        second: String,
    },
    /// The bus already holds events.
    #[error("the simulated org already has {0} events: a replay starts from an empty bus")]
    NotEmpty(u64),
    /// The captured replay ids are not usable.
    #[error("captured replay ids: {0}")]
    Ids(#[from] CapturedIdsError),
}

/// The producer of a channel's events, for the bus's channel filter.
fn source_of(channel: &str) -> Result<Source, ReplayError> {
    if let Some(name) = channel.strip_prefix("/event/")
        && name.ends_with("__e")
    {
        return Ok(Source::PlatformEvent(name.to_string()));
    }
    match channel
        .strip_prefix("/data/")
        .and_then(|n| n.strip_suffix("ChangeEvent"))
    {
        Some(entity) if !entity.is_empty() && !entity.contains('/') => {
            Ok(Source::Entity(entity.to_string()))
        }
        _ => Err(ReplayError::Channel(channel.to_string())),
    }
}

/// The channel of a replayed capture's `topic`, when the org serves a capture that has it.
pub(crate) fn replayed_channel(config: &SimConfig, topic: &str) -> Option<Channel> {
    let capture = config.replay.as_ref()?;
    if !capture.streams.contains_key(topic) {
        return None;
    }
    match source_of(topic).ok()? {
        Source::Entity(e) => Some(Channel::Entity(e)),
        Source::PlatformEvent(p) => Some(Channel::PlatformEvent(p)),
    }
}

/// GetSchema's captured text for `schema_id`, when the org serves a capture that has it.
pub(crate) fn captured_schema(config: &SimConfig, schema_id: &str) -> Option<String> {
    config.replay.as_ref()?.schemas.get(schema_id).cloned()
}

/// GetTopic's captured answer for `topic`, when the org serves a capture that has it.
pub(crate) fn captured_topic<'a>(config: &'a SimConfig, topic: &str) -> Option<&'a TopicRecord> {
    config.replay.as_ref()?.topics.get(topic)
}

/// Appends `capture`'s events to the empty `bus` (all at `at`) and makes it serve their captured
/// replay ids; returns the number of events.
pub fn load_into(bus: &mut Bus, capture: &Capture, at: SystemTime) -> Result<usize, ReplayError> {
    if bus.tip() != 0 {
        return Err(ReplayError::NotEmpty(bus.tip()));
    }
    // Replay id -> (channel, event): real replay ids are big-endian counters of one length, so
    // byte order is their order.
    let mut merged: BTreeMap<Vec<u8>, (&str, &format::CapturedEvent)> = BTreeMap::new();
    for (channel, stream) in &capture.streams {
        source_of(channel)?;
        for item in stream {
            let Captured::Event(event) = item else {
                continue;
            };
            if let Some((first, _)) = merged.insert(event.replay_id.clone(), (channel, event)) {
                return Err(ReplayError::Duplicate {
                    id: hex::encode(&event.replay_id),
                    first: first.to_string(),
                    second: channel.clone(),
                });
            }
        }
    }
    let mut ids = Vec::with_capacity(merged.len());
    for (id, (channel, event)) in merged {
        let producer = ProducerEvent {
            id: event.event_id.clone(),
            schema_id: event.schema_id.clone(),
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
        bus.append(source_of(channel)?, producer, at);
        ids.push(id);
    }
    bus.use_captured_ids(&ids)?;
    Ok(ids.len())
}

#[cfg(test)]
mod tests;
