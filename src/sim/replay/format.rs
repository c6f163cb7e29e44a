//! The on-disk format of a capture: a directory a user can diff, commit as a CI fixture and
//! replay with `forcebridge sim --replay DIR`.
//!
//! Contract (format version 1):
//! * `manifest.json`: `{"format": 1, "forcebridge_version", "org_id", "api_version",
//!   "started_at_ms", "ended_at_ms", "channels": ["/data/AccountChangeEvent", ...]}`.
//! * `schemas/<schema_id>.json`: the exact `schema_json` text `GetSchema` returned for that id,
//!   byte for byte (never re-serialised, so the replayed org serves the same text).
//! * `topics.jsonl`: one line per channel, what `GetTopic` answered:
//!   `{"topic_name", "schema_id", "can_subscribe", "can_publish", "tenant_guid"}`.
//! * `events/<file>.jsonl`, one file per channel (the channel name with its leading `/` dropped
//!   and every other `/` turned into `.`: `/data/AccountChangeEvent` ->
//!   `data.AccountChangeEvent.jsonl`), in the order the org sent them, one line each:
//!   - `{"kind": "event", "channel", "replay_id": <hex>, "schema_id", "event_id",
//!     "payload": <base64 of the Avro bytes>, "headers": [{"key", "value": <base64>}], "at_ms"}`
//!     (`headers` left out when the event has none);
//!   - `{"kind": "keepalive", "channel", "latest_replay_id": <hex>, "at_ms"}` (a `FetchResponse`
//!     with no events).
//!
//!   Replay ids are opaque bytes (10 on real orgs), kept as lowercase hex.
//!
//! Reading checks everything a replay relies on and names the file and line of the first fault:
//! unknown `kind`, bad hex/base64, an event whose schema file is missing, a line on the wrong
//! channel's file, a topic or channel not listed in the manifest.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
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

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> FormatError + '_ {
    move |source| FormatError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn invalid(path: &Path, line: usize, reason: impl Into<String>) -> FormatError {
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

/// The events file name of `channel` (see the module doc).
pub fn events_file_name(channel: &str) -> String {
    format!(
        "{}.jsonl",
        channel.trim_start_matches('/').replace('/', ".")
    )
}

fn check_schema_id(id: &str) -> Result<(), String> {
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

/// Writes a capture as it arrives: schemas and topics once, stream lines appended and flushed
/// per line (a killed capture keeps every line already received), the manifest at the end.
pub struct CaptureWriter {
    dir: PathBuf,
    topics: BufWriter<File>,
    streams: BTreeMap<String, BufWriter<File>>,
    schemas: std::collections::BTreeSet<String>,
}

impl CaptureWriter {
    /// Creates `dir` (which must not exist or be empty) with its `schemas/` and `events/`.
    pub fn create(dir: &Path) -> Result<Self, FormatError> {
        if dir.exists() {
            let mut entries = fs::read_dir(dir).map_err(io_err(dir))?;
            if entries.next().is_some() {
                return Err(invalid(dir, 0, "the output directory is not empty"));
            }
        }
        for sub in ["schemas", "events"] {
            let path = dir.join(sub);
            fs::create_dir_all(&path).map_err(io_err(&path))?;
        }
        let path = dir.join("topics.jsonl");
        let topics = BufWriter::new(File::create(&path).map_err(io_err(&path))?);
        Ok(Self {
            dir: dir.to_path_buf(),
            topics,
            streams: BTreeMap::new(),
            schemas: Default::default(),
        })
    }

    /// Records a schema's exact text, once per id.
    pub fn schema(&mut self, schema_id: &str, json: &str) -> Result<(), FormatError> {
        let path = self.dir.join("schemas").join(format!("{schema_id}.json"));
        check_schema_id(schema_id).map_err(|r| invalid(&path, 0, r))?;
        if self.schemas.insert(schema_id.to_string()) {
            fs::write(&path, json).map_err(io_err(&path))?;
        }
        Ok(())
    }

    /// Records a channel's `GetTopic` answer.
    pub fn topic(&mut self, topic: &TopicRecord) -> Result<(), FormatError> {
        let path = self.dir.join("topics.jsonl");
        write_line(&mut self.topics, &path, topic)
    }

    /// Appends an event to its channel's file.
    pub fn event(&mut self, channel: &str, event: &CapturedEvent) -> Result<(), FormatError> {
        let record = StreamRecord::Event {
            channel: channel.to_string(),
            replay_id: hex::encode(&event.replay_id),
            schema_id: event.schema_id.clone(),
            event_id: event.event_id.clone(),
            payload: base64::engine::general_purpose::STANDARD.encode(&event.payload),
            headers: event
                .headers
                .iter()
                .map(|(key, value)| HeaderRecord {
                    key: key.clone(),
                    value: base64::engine::general_purpose::STANDARD.encode(value),
                })
                .collect(),
            at_ms: event.at_ms,
        };
        self.append(channel, &record)
    }

    /// Appends a keepalive to its channel's file.
    pub fn keepalive(
        &mut self,
        channel: &str,
        latest_replay_id: &[u8],
        at_ms: i64,
    ) -> Result<(), FormatError> {
        let record = StreamRecord::Keepalive {
            channel: channel.to_string(),
            latest_replay_id: hex::encode(latest_replay_id),
            at_ms,
        };
        self.append(channel, &record)
    }

    fn append(&mut self, channel: &str, record: &StreamRecord) -> Result<(), FormatError> {
        let path = self.dir.join("events").join(events_file_name(channel));
        if !self.streams.contains_key(channel) {
            let file = File::create(&path).map_err(io_err(&path))?;
            self.streams
                .insert(channel.to_string(), BufWriter::new(file));
        }
        let out = self.streams.get_mut(channel).expect("inserted above");
        write_line(out, &path, record)
    }

    /// Flushes every file and writes `manifest.json`.
    pub fn finish(mut self, manifest: &Manifest) -> Result<(), FormatError> {
        let path = self.dir.join("topics.jsonl");
        self.topics.flush().map_err(io_err(&path))?;
        for (channel, out) in &mut self.streams {
            let path = self.dir.join("events").join(events_file_name(channel));
            out.flush().map_err(io_err(&path))?;
        }
        let path = self.dir.join("manifest.json");
        let text = serde_json::to_string_pretty(manifest).expect("a manifest serialises");
        fs::write(&path, text + "\n").map_err(io_err(&path))
    }
}

fn write_line<T: Serialize>(
    out: &mut BufWriter<File>,
    path: &Path,
    value: &T,
) -> Result<(), FormatError> {
    let line = serde_json::to_string(value).expect("a record serialises");
    writeln!(out, "{line}").map_err(io_err(path))?;
    out.flush().map_err(io_err(path))
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
            read_stream(&path, channel, &schemas)?
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
        if !manifest.channels.contains(&topic.topic_name) {
            return Err(invalid(
                path,
                n,
                format!(
                    "topic {} is not in the manifest's channels",
                    topic.topic_name
                ),
            ));
        }
        if !schemas.contains_key(&topic.schema_id) {
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
) -> Result<Vec<Captured>, FormatError> {
    let text = fs::read_to_string(path).map_err(io_err(path))?;
    let mut stream = Vec::new();
    for (n, line) in numbered_lines(&text) {
        let record: StreamRecord =
            serde_json::from_str(line).map_err(|e| invalid(path, n, e.to_string()))?;
        stream.push(decode_record(record, channel, schemas).map_err(|r| invalid(path, n, r))?);
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
        } => {
            on(&c)?;
            if !schemas.contains_key(&schema_id) {
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

#[cfg(test)]
#[path = "format_tests.rs"]
mod tests;
