//! Change events whose large text fields arrive as a diff (`diffFields`): the source never
//! presents a diff as a field's value.
//!
//! Contract (see `ARCHITECTURE.md`, "Diff fields"): Salesforce may send an update of a large text
//! field (a Long Text Area of at least 1,000 characters) as a unified diff of the old and new
//! value, naming the field in `diffFields` (Change Data Capture Developer Guide, "Sending Data
//! Differences for Fields of Updated Records"). [`resolve`] rewrites the decoded records of such
//! an event before they are produced, so they go out under the event's own ack handle like any
//! other record (the checkpoint moves past the event only after Kafka holds them):
//! * `source.diff_fields: reread` (default): the fields' current values are re-read over REST
//!   (`SELECT Id, <diff fields> FROM <Object> WHERE Id IN (…)`, 200 Ids per query, as gap
//!   re-reads) into `record`, with `"reread": {"mode": "diff", "state": "present", "fields": […],
//!   "read_at": <ms>}` and the header `forcebridge.reread: diff`. The value is the one at read
//!   time, which may be newer than the event (as for gap re-reads). A record the query does not
//!   return (deleted since, or invisible to the integration user) is not lost: it is produced
//!   with the diff under `diffs`, the fields left out of `record`, and state `absent`.
//! * `source.diff_fields: pass`: no REST call; each diff goes under
//!   `"diffs": {"<Field>": "<unified diff>"}` and the field is left out of `record`.
//! * A re-read the REST client cannot complete after its retries (transport, 5xx, 429, re-login,
//!   daily limit: `retry.rs`) is a [`DiffError`]; the pipeline dead-letters the event (stage
//!   `diff`) with the reason, its raw payload keeping the diffs.

use std::sync::atomic::Ordering;

use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use crate::config::DiffFieldsMode;
use crate::kafka::headers;
use crate::ops::telemetry::ChannelStats;
use crate::source::cdc::OutRecord;
use crate::source::gap::{Field, GapError, IDS_PER_QUERY, Rereader, Shape, select};

/// `forcebridge.reread` / `reread.mode` of records whose diff fields were re-read.
pub const MODE_DIFF: &str = "diff";

/// Why the diff fields of an event could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    /// The REST re-read failed in a way retrying cannot fix.
    #[error("re-reading the diff fields {fields:?}: {source}")]
    Reread {
        fields: Vec<String>,
        #[source]
        source: Box<GapError>,
    },
    /// A decoded record's envelope is not a JSON object with a `record` object.
    #[error("record {id}: the envelope cannot take the diff fields: {reason}")]
    Envelope { id: String, reason: String },
    /// Shutdown interrupted the re-read.
    #[error("cancelled")]
    Cancelled,
}

/// Rewrites the records of one change event whose `diff_fields` are not empty (see the module
/// docs). `records` are the event's decoded records (tombstones are left as they are).
pub async fn resolve(
    records: &mut [OutRecord],
    diff_fields: &[String],
    mode: DiffFieldsMode,
    rereader: &Rereader,
    stats: &ChannelStats,
    cancel: &CancellationToken,
) -> Result<(), DiffError> {
    if diff_fields.is_empty() {
        return Ok(());
    }
    stats.diff_events.fetch_add(1, Ordering::Relaxed);
    let found = match mode {
        DiffFieldsMode::Pass => None,
        DiffFieldsMode::Reread => Some(reread(records, diff_fields, rereader, cancel).await?),
    };
    let (present, absent) = rewrite(records, diff_fields, found.as_deref())?;
    stats
        .diff_records_reread
        .fetch_add(present, Ordering::Relaxed);
    stats
        .diff_records_absent
        .fetch_add(absent, Ordering::Relaxed);
    Ok(())
}

/// Rewrites the envelopes: with the re-read rows (`found`), or passing the diffs (`None`).
/// Returns how many records were re-read and how many were not found.
fn rewrite(
    records: &mut [OutRecord],
    diff_fields: &[String],
    found: Option<&[(String, Map<String, Value>)]>,
) -> Result<(u64, u64), DiffError> {
    let (mut present, mut absent) = (0, 0);
    let read_at = crate::ops::telemetry::unix_millis();
    for record in records.iter_mut().filter(|r| r.value.is_some()) {
        let current = found.map(|rows| {
            rows.iter()
                .find(|(id, _)| {
                    crate::salesforce::sfid::id15(id) == crate::salesforce::sfid::id15(&record.key)
                })
                .map(|(_, row)| row)
        });
        let mut envelope = parse(record)?;
        let body = body_of(&mut envelope, &record.key)?;
        match current {
            None => {
                let diffs = take_diffs(body, diff_fields);
                envelope.insert("diffs".into(), Value::Object(diffs));
            }
            Some(Some(row)) => {
                for (field, value) in row {
                    body.insert(field.clone(), value.clone());
                }
                envelope.insert(
                    "reread".into(),
                    reread_note("present", diff_fields, read_at),
                );
                record.headers.push((headers::REREAD, MODE_DIFF.to_owned()));
                present += 1;
            }
            Some(None) => {
                let diffs = take_diffs(body, diff_fields);
                envelope.insert("diffs".into(), Value::Object(diffs));
                envelope.insert("reread".into(), reread_note("absent", diff_fields, read_at));
                record.headers.push((headers::REREAD, MODE_DIFF.to_owned()));
                absent += 1;
            }
        }
        record.value =
            Some(serde_json::to_vec(&envelope).expect("serializing JSON values cannot fail"));
    }
    Ok((present, absent))
}

/// The current values of `fields` of the records' Ids, one query per 200 Ids.
async fn reread(
    records: &[OutRecord],
    fields: &[String],
    rereader: &Rereader,
    cancel: &CancellationToken,
) -> Result<Vec<(String, Map<String, Value>)>, DiffError> {
    let failed = |source| match source {
        GapError::Cancelled => DiffError::Cancelled,
        source => DiffError::Reread {
            fields: fields.to_vec(),
            source: Box::new(source),
        },
    };
    let Some(object) = records.first().map(|r| r.object.as_str()) else {
        return Ok(Vec::new());
    };
    // Long Text Areas are text: the REST value is the event's value as it is.
    let query_fields: Vec<Field> = fields
        .iter()
        .map(|name| Field {
            name: name.clone(),
            shape: Shape::Plain,
        })
        .collect();
    let ids: Vec<&str> = records
        .iter()
        .filter(|r| r.value.is_some())
        .map(|r| r.key.as_str())
        .collect();
    let mut found = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(IDS_PER_QUERY) {
        let soql =
            select(object, &query_fields, Some(chunk)).map_err(|e| failed(GapError::from(e)))?;
        let mut pages = rereader.pages(object, &query_fields, &soql, cancel);
        while let Some(rows) = pages.next().await.map_err(failed)? {
            for row in rows {
                found.push(row.map_err(failed)?);
            }
        }
    }
    Ok(found)
}

fn parse(record: &OutRecord) -> Result<Map<String, Value>, DiffError> {
    let value = record.value.as_deref().unwrap_or_default();
    match serde_json::from_slice(value) {
        Ok(Value::Object(envelope)) => Ok(envelope),
        Ok(_) => Err(DiffError::Envelope {
            id: record.key.clone(),
            reason: "not a JSON object".into(),
        }),
        Err(err) => Err(DiffError::Envelope {
            id: record.key.clone(),
            reason: err.to_string(),
        }),
    }
}

fn body_of<'e>(
    envelope: &'e mut Map<String, Value>,
    id: &str,
) -> Result<&'e mut Map<String, Value>, DiffError> {
    match envelope.get_mut("record") {
        Some(Value::Object(body)) => Ok(body),
        _ => Err(DiffError::Envelope {
            id: id.to_owned(),
            reason: "no `record` object".into(),
        }),
    }
}

/// Moves the diff fields out of `record`: field → its diff text.
fn take_diffs(body: &mut Map<String, Value>, fields: &[String]) -> Map<String, Value> {
    fields
        .iter()
        .filter_map(|field| body.remove(field).map(|diff| (field.clone(), diff)))
        .collect()
}

fn reread_note(state: &str, fields: &[String], read_at: u64) -> Value {
    json!({"mode": MODE_DIFF, "state": state, "fields": fields, "read_at": read_at})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(value: &str) -> OutRecord {
        OutRecord {
            object: "Account".into(),
            key: "001SIM000000001AAA".into(),
            value: Some(value.as_bytes().to_vec()),
            headers: Vec::new(),
            operation: "UPDATE".into(),
        }
    }

    fn resolved(found: Option<&[(String, Map<String, Value>)]>) -> (Value, OutRecord) {
        let value = json!({"operation": "UPDATE", "record": {"Name": "Acme", "Description": DIFF},
            "diff_fields": ["Description"]});
        let mut records = vec![record(&value.to_string())];
        rewrite(&mut records, &["Description".to_owned()], found).expect("rewritten");
        let out = serde_json::from_slice(records[0].value.as_deref().unwrap()).unwrap();
        (out, records.remove(0))
    }

    const DIFF: &str = "--- \n+++ 0123\n@@ -2,1 +2,1 @@\n-a\n+b\n";

    #[test]
    fn pass_moves_each_diff_out_of_record_into_diffs() {
        let (out, record) = resolved(None);
        assert_eq!(out["record"], json!({"Name": "Acme"}));
        assert_eq!(out["diffs"], json!({"Description": DIFF}));
        assert!(record.headers.is_empty());
    }

    #[test]
    fn a_reread_value_replaces_the_diff_and_an_absent_record_keeps_it() {
        let row = json!({"Description": "the full value"})
            .as_object()
            .unwrap()
            .clone();
        let (out, record) = resolved(Some(&[("001SIM000000001".into(), row)]));
        assert_eq!(
            out["record"],
            json!({"Name": "Acme", "Description": "the full value"})
        );
        assert_eq!(out["reread"]["state"], "present");
        assert_eq!(out.get("diffs"), None);
        assert_eq!(
            record.headers,
            vec![(headers::REREAD, MODE_DIFF.to_owned())]
        );
        let (out, _) = resolved(Some(&[]));
        assert_eq!(out["record"], json!({"Name": "Acme"}));
        assert_eq!(out["diffs"], json!({"Description": DIFF}));
        assert_eq!(out["reread"]["state"], "absent");
    }
}
