//! Writing a capture as it arrives, in the format of [`super::format`]: schemas and topics once,
//! stream lines appended and flushed per line (a killed capture keeps every line already
//! received), the manifest at the end.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::Serialize;

use super::format::{
    CapturedEvent, FormatError, HeaderRecord, Manifest, StreamRecord, TopicRecord, check_schema_id,
    events_file_name, invalid, io_err,
};

/// Writes a capture as it arrives: schemas and topics once, stream lines appended and flushed
/// per line (a killed capture keeps every line already received), the manifest at the end.
pub struct CaptureWriter {
    dir: PathBuf,
    topics: BufWriter<File>,
    streams: BTreeMap<String, BufWriter<File>>,
    schemas: BTreeSet<String>,
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
            entity: event.entity.clone(),
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
