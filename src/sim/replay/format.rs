//! The on-disk format of a capture: a directory a user can diff, commit as a CI fixture and
//! replay with `forcebridge sim --replay DIR`.
//!
//! Contract (format version 1):
//! * `manifest.json`: `{"format": 1, "forcebridge_version", "org_id", "api_version",
//!   "started_at_ms", "ended_at_ms", "channels": ["/data/AccountChangeEvent", ...],
//!   "entity_channels": ["/data/ContactChangeEvent", ...]}`; `entity_channels` (left out when
//!   empty) lists the per-entity channels that were not subscribed but asked with `GetTopic`
//!   for the schema of events that came with a blank schema id.
//! * `schemas/<schema_id>.json`: the exact `schema_json` text `GetSchema` returned for that id,
//!   byte for byte (never re-serialised, so the replayed org serves the same text).
//! * `topics.jsonl`: one line per channel of `channels` and `entity_channels`, what `GetTopic`
//!   answered: `{"topic_name", "schema_id", "can_subscribe", "can_publish", "tenant_guid"}`;
//!   `schema_id` is blank where the org gave none (`/data/ChangeEvents`, a custom channel of
//!   several entities), otherwise it has its `schemas/` file.
//! * `events/<file>.jsonl`, one file per channel (the channel name with its leading `/` dropped
//!   and every other `/` turned into `.`: `/data/AccountChangeEvent` ->
//!   `data.AccountChangeEvent.jsonl`), in the order the org sent them, one line each:
//!   - `{"kind": "event", "channel", "replay_id": <hex>, "schema_id", "event_id",
//!     "payload": <base64 of the Avro bytes>, "headers": [{"key", "value": <base64>}], "at_ms",
//!     "entity"}` (`headers` left out when the event has none). `entity` is the entity the
//!     payload names first (its `ChangeEventHeader.entityName`), present on every event of
//!     `/data/ChangeEvents` and of custom `/data/<Name>__chn` channels, left out elsewhere.
//!     `schema_id` is as received: blank on `/data/ChangeEvents` (real orgs send none there,
//!     forcedotcom/pub-sub-api#63), and then the topic of the entity's own channel
//!     ([`entity_channel`]) is in `topics.jsonl` with its schema, unless the org had no such
//!     channel (its `GetTopic` failed: the replayed org answers it as an unknown topic too);
//!   - `{"kind": "keepalive", "channel", "latest_replay_id": <hex>, "at_ms"}` (a `FetchResponse`
//!     with no events).
//!
//!   Replay ids are opaque bytes (10 on real orgs), kept as lowercase hex.
//!
//! [`super::writer::CaptureWriter`] writes this format; [`read_capture`] reads it back.
//!
//! Reading checks everything a replay relies on and names the file and line of the first fault:
//! unknown `kind`, bad hex/base64, an event whose schema file is missing, a blank-schema event
//! without its entity or whose entity's topic has no schema id, an event of
//! `/data/ChangeEvents` or a `__chn` channel without its entity, a line on the wrong channel's
//! file, a topic or channel not listed in the manifest.
//!
//! Compatibility: `entity_channels`, `entity` and blank schema ids were added without a new
//! format number; a capture written before them reads as it did.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::{Deserialize, Serialize};

/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// A capture could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// A file could not be created, written or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file's content is not what the format says (line 0 for whole-file JSON).
    #[error("{path}:{line}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The 1-based line, 0 when the fault is the file as a whole.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

pub(super) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> FormatError + '_ {
    move |source| FormatError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(super) fn invalid(path: &Path, line: usize, reason: impl Into<String>) -> FormatError {
    FormatError::Invalid {
        path: path.to_path_buf(),
        line,
        reason: reason.into(),
    }
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`FORMAT_VERSION`].
    pub format: u32,
    /// The forcebridge that wrote it.
    pub forcebridge_version: String,
    /// The org's id (18 characters), as the login answered.
    pub org_id: String,
    /// The REST API version of the login (`"62.0"`).
    pub api_version: String,
    /// When the capture started (Unix ms).
    pub started_at_ms: i64,
    /// When it stopped (Unix ms).
    pub ended_at_ms: i64,
    /// The channels subscribed to, in the config's order.
    pub channels: Vec<String>,
    /// The per-entity channels asked with `GetTopic` only, for events with a blank schema id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entity_channels: Vec<String>,
}

/// One line of `topics.jsonl`: what `GetTopic` answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicRecord {
    /// The channel (`/data/AccountChangeEvent`).
    pub topic_name: String,
    /// The topic's current schema id.
    pub schema_id: String,
    /// Whether the caller may subscribe.
    pub can_subscribe: bool,
    /// Whether the caller may publish.
    pub can_publish: bool,
    /// The org's tenant GUID as `GetTopic` reported it.
    pub tenant_guid: String,
}

/// One line of an events file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum StreamRecord {
    /// A delivered event.
    Event {
        /// The channel it came on.
        channel: String,
        /// Its replay id, lowercase hex.
        replay_id: String,
        /// The id of the schema its payload is written with.
        schema_id: String,
        /// The event's `id` (a UUID on real orgs).
        event_id: String,
        /// The Avro payload, standard base64.
        payload: String,
        /// The event's headers (`EventHeader`), when it has any.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        headers: Vec<HeaderRecord>,
        /// When it was received (Unix ms).
        at_ms: i64,
        /// The entity its payload names first (on `/data/ChangeEvents` and `__chn` channels).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        entity: Option<String>,
    },
    /// A `FetchResponse` without events.
    Keepalive {
        /// The channel.
        channel: String,
        /// Its `latest_replay_id`, lowercase hex.
        latest_replay_id: String,
        /// When it was received (Unix ms).
        at_ms: i64,
    },
}

/// One `EventHeader` of an event: its key, and its value in standard base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderRecord {
    /// The key.
    pub key: String,
    /// The value bytes, standard base64.
    pub value: String,
}

/// An event as read back, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedEvent {
    /// The replay id bytes.
    pub replay_id: Vec<u8>,
    /// The schema id.
    pub schema_id: String,
    /// The event id.
    pub event_id: String,
    /// The Avro payload bytes.
    pub payload: Vec<u8>,
    /// The event's headers (key, value bytes), in order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// When it was received (Unix ms).
    pub at_ms: i64,
    /// The entity its payload names first (see the module doc).
    pub entity: Option<String>,
}

/// One item of a channel's stream, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Captured {
    /// An event.
    Event(CapturedEvent),
    /// A keepalive with its `latest_replay_id` bytes and time.
    Keepalive {
        /// `latest_replay_id`.
        latest_replay_id: Vec<u8>,
        /// When it was received (Unix ms).
        at_ms: i64,
    },
}

/// A whole capture, read back and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capture {
    /// `manifest.json`.
    pub manifest: Manifest,
    /// Schema id -> the exact JSON text.
    pub schemas: BTreeMap<String, String>,
    /// Channel -> its `GetTopic` answer.
    pub topics: BTreeMap<String, TopicRecord>,
    /// Channel -> its stream, in the order received.
    pub streams: BTreeMap<String, Vec<Captured>>,
}

/// The change event channel of an entity: `Account` -> `/data/AccountChangeEvent`, a custom
/// object `Foo__c` -> `/data/Foo__ChangeEvent` (Change Data Capture Developer Guide, "Change
/// Event Object Name").
pub fn entity_channel(entity: &str) -> String {
    match entity.strip_suffix("__c") {
        Some(base) => format!("/data/{base}__ChangeEvent"),
        None => format!("/data/{entity}ChangeEvent"),
    }
}

/// True for the channels whose events carry their entity in the capture: `/data/ChangeEvents`
/// and custom channels `/data/<Name>__chn`.
pub fn names_entities(channel: &str) -> bool {
    channel == "/data/ChangeEvents"
        || channel
            .strip_prefix("/data/")
            .is_some_and(|n| n.ends_with("__chn"))
}

/// The events file name of `channel` (see the module doc).
pub fn events_file_name(channel: &str) -> String {
    format!(
        "{}.jsonl",
        channel.trim_start_matches('/').replace('/', ".")
    )
}

pub(super) fn check_schema_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "schema id {id:?} is not 1-64 letters, digits, '-' or '_'"
        ))
    }
}

/// Reads the capture in `dir` whole and checks it (see the module doc).
pub fn read_capture(dir: &Path) -> Result<Capture, FormatError> {
    let path = dir.join("manifest.json");
    let text = fs::read_to_string(&path).map_err(io_err(&path))?;
    let manifest: Manifest =
        serde_json::from_str(&text).map_err(|e| invalid(&path, e.line(), e.to_string()))?;
    if manifest.format != FORMAT_VERSION {
        return Err(invalid(
            &path,
            0,
            format!(
                "format {} is not {FORMAT_VERSION}, the one this build reads",
                manifest.format
            ),
        ));
    }
    let schemas = read_schemas(&dir.join("schemas"))?;
    let topics = read_topics(&dir.join("topics.jsonl"), &manifest, &schemas)?;
    let mut streams = BTreeMap::new();
    for channel in &manifest.channels {
        let path = dir.join("events").join(events_file_name(channel));
        let stream = if path.exists() {
            read_stream(&path, channel, &schemas, &topics)?
        } else {
            Vec::new()
        };
        streams.insert(channel.clone(), stream);
    }
    Ok(Capture {
        manifest,
        schemas,
        topics,
        streams,
    })
}

fn read_schemas(dir: &Path) -> Result<BTreeMap<String, String>, FormatError> {
    let mut schemas = BTreeMap::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let path = entry.map_err(io_err(dir))?.path();
        let Some(id) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".json"))
        else {
            return Err(invalid(&path, 0, "not a <schema id>.json file"));
        };
        check_schema_id(id).map_err(|r| invalid(&path, 0, r))?;
        let text = fs::read_to_string(&path).map_err(io_err(&path))?;
        serde_json::from_str::<serde_json::Value>(&text)
            .map_err(|e| invalid(&path, e.line(), format!("not JSON: {e}")))?;
        schemas.insert(id.to_string(), text);
    }
    Ok(schemas)
}

fn read_topics(
    path: &Path,
    manifest: &Manifest,
    schemas: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, TopicRecord>, FormatError> {
    let text = fs::read_to_string(path).map_err(io_err(path))?;
    let mut topics = BTreeMap::new();
    for (n, line) in numbered_lines(&text) {
        let topic: TopicRecord =
            serde_json::from_str(line).map_err(|e| invalid(path, n, e.to_string()))?;
        let listed = |list: &[String]| list.contains(&topic.topic_name);
        if !listed(&manifest.channels) && !listed(&manifest.entity_channels) {
            return Err(invalid(
                path,
                n,
                format!(
                    "topic {} is not in the manifest's channels",
                    topic.topic_name
                ),
            ));
        }
        // GetTopic gives no schema id for a channel of several entities (simulator: the same).
        if !topic.schema_id.is_empty() && !schemas.contains_key(&topic.schema_id) {
            return Err(invalid(
                path,
                n,
                format!("schema {} has no schemas/{0}.json", topic.schema_id),
            ));
        }
        topics.insert(topic.topic_name.clone(), topic);
    }
    Ok(topics)
}

fn numbered_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| !l.trim().is_empty())
}

fn read_stream(
    path: &Path,
    channel: &str,
    schemas: &BTreeMap<String, String>,
    topics: &BTreeMap<String, TopicRecord>,
) -> Result<Vec<Captured>, FormatError> {
    let text = fs::read_to_string(path).map_err(io_err(path))?;
    let mut stream = Vec::new();
    for (n, line) in numbered_lines(&text) {
        let record: StreamRecord =
            serde_json::from_str(line).map_err(|e| invalid(path, n, e.to_string()))?;
        let item = decode_record(record, channel, schemas).map_err(|r| invalid(path, n, r))?;
        if let Captured::Event(event) = &item {
            check_entity(channel, event, topics).map_err(|r| invalid(path, n, r))?;
        }
        stream.push(item);
    }
    Ok(stream)
}

fn decode_record(
    record: StreamRecord,
    channel: &str,
    schemas: &BTreeMap<String, String>,
) -> Result<Captured, String> {
    let on = |c: &str| {
        if c == channel {
            Ok(())
        } else {
            Err(format!("a line of channel {c} in the file of {channel}"))
        }
    };
    let bytes =
        |field: &str, v: &str| hex::decode(v).map_err(|e| format!("{field} {v:?} is not hex: {e}"));
    match record {
        StreamRecord::Event {
            channel: c,
            replay_id,
            schema_id,
            event_id,
            payload,
            headers,
            at_ms,
            entity,
        } => {
            on(&c)?;
            if !schema_id.is_empty() && !schemas.contains_key(&schema_id) {
                return Err(format!(
                    "schema {schema_id} has no schemas/{schema_id}.json"
                ));
            }
            let b64 = |field: &str, v: &str| {
                base64::engine::general_purpose::STANDARD
                    .decode(v)
                    .map_err(|e| format!("{field} is not base64: {e}"))
            };
            let headers = headers
                .into_iter()
                .map(|h| Ok((h.key, b64("header value", &h.value)?)))
                .collect::<Result<_, String>>()?;
            Ok(Captured::Event(CapturedEvent {
                replay_id: bytes("replay_id", &replay_id)?,
                schema_id,
                event_id,
                payload: b64("payload", &payload)?,
                headers,
                at_ms,
                entity,
            }))
        }
        StreamRecord::Keepalive {
            channel: c,
            latest_replay_id,
            at_ms,
        } => {
            on(&c)?;
            Ok(Captured::Keepalive {
                latest_replay_id: bytes("latest_replay_id", &latest_replay_id)?,
                at_ms,
            })
        }
    }
}

/// An event of a channel of several entities names its entity, so does a blank-schema event, and
/// its entity's channel's topic, when recorded, has a schema id.
fn check_entity(
    channel: &str,
    event: &CapturedEvent,
    topics: &BTreeMap<String, TopicRecord>,
) -> Result<(), String> {
    let entity = match &event.entity {
        Some(entity) => entity,
        None if names_entities(channel) => {
            return Err(format!("an event of {channel} without its entity"));
        }
        None if event.schema_id.is_empty() => {
            return Err("an event with a blank schema id and no entity".to_owned());
        }
        None => return Ok(()),
    };
    let topic = entity_channel(entity);
    match topics.get(&topic) {
        Some(t) if event.schema_id.is_empty() && t.schema_id.is_empty() => Err(format!(
            "the schema id is blank and entity {entity}'s channel {topic} has no schema id"
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
#[path = "format_tests.rs"]
mod tests;
