//! A snapshot's progress, kept in the channel's checkpoint record while the snapshot runs.
//!
//! Contract: [`SnapshotProgress`] is the `snapshot` object of a checkpoint value (see
//! `ARCHITECTURE.md`, "Snapshot"): when the snapshot began and, per object in order, whether it
//! is `pending`, `reading` or `done`, how it is read (`bulk` or `rest`), the Bulk API 2.0 job and
//! the locator of the first results page whose rows Kafka does not hold yet, and how many rows
//! Kafka holds. The checkpoint's `replay_id` is the stream position fixed before the snapshot
//! began; a checkpoint with a `snapshot` resumes the snapshot, one without streams. Unknown keys
//! are refused (a checkpoint written by a later version is not half understood).

use serde::{Deserialize, Serialize};

/// A snapshot under way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotProgress {
    /// When the snapshot began (epoch ms), before any row was read.
    pub started_at: i64,
    /// A resync: only rows whose `SystemModstamp` is at least this (epoch ms), deleted rows
    /// included (as `DELETE` records), and the records deleted since (the replication API).
    /// `None`: a whole snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<i64>,
    /// The channel's objects, in the order they are read.
    pub objects: Vec<ObjectProgress>,
}

/// One object of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectProgress {
    /// The object's API name.
    pub object: String,
    pub state: ObjectState,
    /// How it is read, once decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<ReadMethod>,
    /// The Bulk API 2.0 query job reading it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// The `Sforce-Locator` of the next results page to produce (`None`: the first page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locator: Option<String>,
    /// Rows Kafka holds.
    pub rows: u64,
    /// A resync: the records deleted since its start (the replication API) are in Kafka.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deletes_done: bool,
}

/// Where an object's snapshot is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectState {
    /// Not begun.
    Pending,
    /// Being read.
    Reading,
    /// Every row is in Kafka.
    Done,
}

/// How an object's rows are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadMethod {
    /// A Bulk API 2.0 query job, its CSV results paged by locator.
    Bulk,
    /// REST `query` pages (`nextRecordsUrl`); restarted from the first page after a crash.
    Rest,
}

impl ReadMethod {
    /// `bulk` or `rest`: the `forcebridge.snapshot` header and the envelope's `snapshot.method`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReadMethod::Bulk => "bulk",
            ReadMethod::Rest => "rest",
        }
    }
}

impl SnapshotProgress {
    /// A snapshot of `objects` beginning now (`started_at`, epoch ms).
    pub fn new(objects: &[String], started_at: i64) -> Self {
        SnapshotProgress {
            started_at,
            since: None,
            objects: objects
                .iter()
                .map(|object| ObjectProgress {
                    object: object.clone(),
                    state: ObjectState::Pending,
                    method: None,
                    job_id: None,
                    locator: None,
                    rows: 0,
                    deletes_done: false,
                })
                .collect(),
        }
    }

    /// Rows Kafka holds, over every object.
    pub fn rows(&self) -> u64 {
        self.objects.iter().map(|o| o.rows).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_round_trips_and_refuses_unknown_keys() {
        let mut progress = SnapshotProgress::new(&["Account".into(), "Contact".into()], 42);
        progress.objects[0].state = ObjectState::Reading;
        progress.objects[0].method = Some(ReadMethod::Bulk);
        progress.objects[0].job_id = Some("750R0000000zlh9IAA".into());
        progress.objects[0].locator = Some("MTAwMDA".into());
        progress.objects[0].rows = 10_000;
        let json = serde_json::to_string(&progress).unwrap();
        assert_eq!(
            json,
            r#"{"started_at":42,"objects":[{"object":"Account","state":"reading","method":"bulk","job_id":"750R0000000zlh9IAA","locator":"MTAwMDA","rows":10000},{"object":"Contact","state":"pending","rows":0}]}"#
        );
        assert_eq!(
            serde_json::from_str::<SnapshotProgress>(&json).unwrap(),
            progress
        );
        assert_eq!(progress.rows(), 10_000);
        let unknown = json.replace("\"rows\":0", "\"rows\":0,\"x\":1");
        assert!(serde_json::from_str::<SnapshotProgress>(&unknown).is_err());
    }
}
