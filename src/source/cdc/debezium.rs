//! Debezium's change event envelope (`source.format: debezium`), written from forcebridge's.
//!
//! Contract: [`Debezium::convert`] turns one forcebridge envelope (`ARCHITECTURE.md`, "Kafka
//! record format": a change event's, a gap re-read's, a snapshot or resync row's) into
//! Debezium's value `{"before","after","source","op","ts_ms","transaction"}` as Debezium's
//! documentation describes it ("Debezium connector for MySQL", section "Change event values":
//! `before`, `after`, `source` with `version`, `connector`, `name`, `ts_ms`, `snapshot`, `db`,
//! `table`; `op` `c`/`u`/`d`/`r`; top-level `ts_ms` = when the connector processed the event).
//! The mapping is `ARCHITECTURE.md`, "Debezium format":
//! * `op`: `CREATE`, `UNDELETE`, `GAP_CREATE`, `GAP_UNDELETE` → `c` (an undeleted record comes
//!   back from the Recycle Bin: to a table it is a row that appears); `UPDATE`, `GAP_UPDATE` →
//!   `u`; `DELETE`, `GAP_DELETE` and any envelope whose `record` is null (a gap re-read that
//!   found the record gone) → `d`; `READ` (snapshot and resync rows) and a `GAP_OVERFLOW`
//!   re-sync's rows → `r` (a read of the current state, as a snapshot's).
//! * `after`: `{"Id": id, …record}` (null for `d`); `before`: `{"Id": id}` for `u` and `d`
//!   (Flink's `debezium-json` refuses a `u` or `d` whose `before` is null, apache/flink#13019),
//!   null for `c` and `r`. Salesforce sends no before-image, so `before` holds the key only.
//! * `source`: Debezium's keys (`ts_ms` = `commitTimestamp`, or the row's `SystemModstamp`;
//!   `snapshot` `"true"` for snapshot rows, `"incremental"` for resync rows, else `"false"`; `db` = the org id; `table` = the
//!   object) plus forcebridge's (`channel`, `replay_id`, `event_id`, `schema_id`, `change_type`,
//!   `transaction_key`, `sequence_number`, `commit_number` as a string, `commit_user`,
//!   `change_origin`, `changed_fields`, `nulled_fields`, `diff_fields`, `partial`, and `diffs`,
//!   `reread`, `snapshot_read` when the forcebridge envelope has them).
//! * `partial` is true for an `UPDATE` change event: its `after` holds the changed fields only
//!   (the event's), unless the envelope says `"full_record": true`.
//!
//! A value that is not a forcebridge envelope is an error naming the record, never a panic.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// The Debezium `source.connector` of every record.
pub const CONNECTOR: &str = "salesforce";

/// A forcebridge envelope that cannot be turned into Debezium's.
#[derive(Debug, thiserror::Error)]
pub enum DebeziumError {
    #[error("record {key}: the envelope is not JSON: {reason}")]
    NotJson { key: String, reason: String },
    #[error("record {key}: the envelope has no `{field}` ({reason})")]
    Field {
        key: String,
        field: &'static str,
        reason: &'static str,
    },
}

/// What every record of one deployment and org says in `source`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Debezium {
    /// `source.name`: the deployment's `name` (Debezium's logical connector name).
    pub name: String,
    /// `source.db`: the org id.
    pub db: String,
}

/// Debezium's `op` for a forcebridge `operation` with a `record` (`has_record`).
pub fn op_of(operation: &str, has_record: bool) -> Result<&'static str, &'static str> {
    if !has_record {
        return Ok("d");
    }
    match operation {
        "CREATE" | "UNDELETE" | "GAP_CREATE" | "GAP_UNDELETE" => Ok("c"),
        "UPDATE" | "GAP_UPDATE" => Ok("u"),
        "DELETE" | "GAP_DELETE" => Ok("d"),
        "READ" | "GAP_OVERFLOW" => Ok("r"),
        _ => Err("a change type Debezium has no op for"),
    }
}

impl Debezium {
    /// One event's records in the channel's format: converted when `debezium` is `Some`, except
    /// a gap event's (`GAP_*`: re-read first, then converted by the gap stage).
    pub fn apply(
        debezium: Option<&Debezium>,
        mut records: Vec<super::event::OutRecord>,
    ) -> Result<Vec<super::event::OutRecord>, DebeziumError> {
        let gap = records
            .first()
            .is_some_and(|r| r.operation.starts_with("GAP_"));
        if let Some(d) = debezium.filter(|_| !gap) {
            d.convert_records(&mut records)?;
        }
        Ok(records)
    }

    /// Converts the values of `records` (tombstones stay tombstones).
    pub fn convert_records(
        &self,
        records: &mut [super::event::OutRecord],
    ) -> Result<(), DebeziumError> {
        let now = crate::ops::telemetry::unix_millis();
        for record in records {
            if let Some(value) = &record.value {
                record.value = Some(self.convert_at(&record.key, value, now)?);
            }
        }
        Ok(())
    }

    /// Converts one forcebridge envelope (`value`, the record's `key` for errors).
    pub fn convert(&self, key: &str, value: &[u8]) -> Result<Vec<u8>, DebeziumError> {
        self.convert_at(key, value, crate::ops::telemetry::unix_millis())
    }

    /// Converts one parsed forcebridge envelope; `now` is the top-level `ts_ms`.
    pub fn convert_map(
        &self,
        key: &str,
        envelope: &Map<String, Value>,
        now: u64,
    ) -> Result<Vec<u8>, DebeziumError> {
        let bytes = serde_json::to_vec(envelope).expect("serializing JSON values cannot fail");
        self.convert_at(key, &bytes, now)
    }

    /// Converts one forcebridge envelope; `now` is the top-level `ts_ms`. The envelope's parts
    /// are copied as they are (borrowed raw JSON), not parsed into values and written back.
    pub fn convert_at(&self, key: &str, value: &[u8], now: u64) -> Result<Vec<u8>, DebeziumError> {
        let envelope: Envelope<'_> =
            serde_json::from_slice(value).map_err(|e| DebeziumError::NotJson {
                key: key.to_owned(),
                reason: e.to_string(),
            })?;
        let missing = |field, reason| DebeziumError::Field {
            key: key.to_owned(),
            field,
            reason,
        };
        let required = "a string is required";
        let operation = (envelope.operation).ok_or_else(|| missing("operation", required))?;
        let object = (envelope.object).ok_or_else(|| missing("object", required))?;
        let id = (envelope.id).ok_or_else(|| missing("id", required))?;
        let record = match envelope.record.map(|r| r.get()) {
            Some("null") => None,
            Some(r) if r.starts_with('{') => Some(r),
            _ => return Err(missing("record", "an object or null is required")),
        };
        let op = op_of(&operation, record.is_some()).map_err(|r| missing("operation", r))?;
        let partial = operation == "UPDATE" && envelope.full_record != Some(true);
        let mut out = Vec::with_capacity(value.len() + 256);
        out.extend_from_slice(b"{\"before\":");
        if matches!(op, "u" | "d") {
            key_struct(&mut out, &id);
        } else {
            out.extend_from_slice(b"null");
        }
        out.extend_from_slice(b",\"after\":");
        match record {
            Some(r) if op != "d" => row(&mut out, &id, r)?,
            _ => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"source\":{\"version\":");
        json(&mut out, env!("CARGO_PKG_VERSION"));
        out.extend_from_slice(b",\"connector\":");
        json(&mut out, CONNECTOR);
        out.extend_from_slice(b",\"name\":");
        json(&mut out, &self.name);
        out.extend_from_slice(b",\"ts_ms\":");
        raw(&mut out, envelope.commit_timestamp);
        out.extend_from_slice(b",\"snapshot\":");
        let resync = operation == "GAP_OVERFLOW"
            || envelope.snapshot.is_some_and(|s| {
                serde_json::from_str::<SnapshotBlock<'_>>(s.get())
                    .is_ok_and(|b| b.mode.as_deref() == Some("resync"))
            });
        json(
            &mut out,
            match op {
                // Debezium's incremental snapshots mark their rows "incremental" (Debezium
                // documentation, "Incremental snapshots"): a resync is one, of what changed.
                "r" if resync => "incremental",
                "r" => "true",
                _ => "false",
            },
        );
        out.extend_from_slice(b",\"db\":");
        json(&mut out, &self.db);
        out.extend_from_slice(b",\"table\":");
        json(&mut out, &object);
        if let Some(source) = envelope.source {
            members(&mut out, source.get());
        }
        out.extend_from_slice(b",\"change_type\":");
        json(&mut out, &operation);
        for (name, v) in [
            ("transaction_key", envelope.transaction_key),
            ("sequence_number", envelope.sequence_number),
            ("commit_number", envelope.commit_number),
            ("commit_user", envelope.commit_user),
            ("change_origin", envelope.change_origin),
            ("changed_fields", envelope.changed_fields),
            ("nulled_fields", envelope.nulled_fields),
            ("diff_fields", envelope.diff_fields),
            ("diffs", envelope.diffs),
            ("reread", envelope.reread),
            ("snapshot_read", envelope.snapshot),
        ] {
            if v.is_some() {
                out.push(b',');
                json(&mut out, name);
                out.push(b':');
                raw(&mut out, v);
            }
        }
        out.extend_from_slice(b",\"partial\":");
        out.extend_from_slice(if partial { b"true" } else { b"false" });
        out.extend_from_slice(b"},\"op\":");
        json(&mut out, op);
        out.extend_from_slice(b",\"ts_ms\":");
        json(&mut out, &now);
        out.extend_from_slice(b",\"transaction\":null}");
        Ok(out)
    }

    /// The Debezium value of one snapshot row (`op` `r`): `record` holds the row's fields
    /// (compound fields nested as change events carry them), `modstamp` its `SystemModstamp`
    /// (epoch ms, `source.ts_ms`), `channel` and `replay_hex` the channel and its fixed position.
    /// For the snapshot stage, which holds a full record map.
    #[allow(clippy::too_many_arguments)]
    pub fn write_read_record(
        &self,
        object: &str,
        id: &str,
        record: &Map<String, Value>,
        modstamp: Option<i64>,
        channel: &str,
        replay_hex: &str,
        now: u64,
    ) -> Vec<u8> {
        let mut envelope = Map::new();
        envelope.insert("operation".into(), Value::from("READ"));
        envelope.insert("object".into(), Value::from(object));
        envelope.insert("id".into(), Value::from(id));
        envelope.insert("record".into(), Value::Object(record.clone()));
        envelope.insert("commit_timestamp".into(), modstamp.into());
        let mut source = Map::new();
        source.insert("channel".into(), Value::from(channel));
        source.insert("replay_id".into(), Value::from(replay_hex));
        envelope.insert("source".into(), Value::Object(source));
        self.convert_map(id, &envelope, now)
            .expect("the envelope built above has every field")
    }
}

/// `{"Id":id}`: the key columns of a row, Debezium's `before` for `u` and `d`.
fn key_struct(out: &mut Vec<u8>, id: &str) {
    out.extend_from_slice(b"{\"Id\":");
    json(out, id);
    out.push(b'}');
}

/// `{"Id":id,…record}` from the record's raw JSON object (a record's own top-level `Id`, as a
/// re-read row has, is not repeated: such a record is parsed and written again).
fn row(out: &mut Vec<u8>, id: &str, record: &str) -> Result<(), DebeziumError> {
    out.extend_from_slice(b"{\"Id\":");
    json(out, id);
    // `"Id":` can only be a key (inside a string the quotes are escaped), at any depth: only
    // then is the object parsed to find a top-level one.
    if memchr::memmem::find(record.as_bytes(), b"\"Id\":").is_some() {
        let fields: Map<String, Value> =
            serde_json::from_str(record).map_err(|e| DebeziumError::NotJson {
                key: id.to_owned(),
                reason: e.to_string(),
            })?;
        for (k, v) in &fields {
            if k != "Id" {
                out.push(b',');
                json(out, k);
                out.push(b':');
                json(out, v);
            }
        }
        out.push(b'}');
    } else {
        members(out, record);
        out.push(b'}');
    }
    Ok(())
}

/// `,member,member…`: the members of a raw JSON object (`{…}`), each after a comma.
fn members(out: &mut Vec<u8>, object: &str) {
    let inner = object
        .trim()
        .strip_prefix('{')
        .and_then(|o| o.strip_suffix('}'))
        .unwrap_or_default();
    if !inner.trim().is_empty() {
        out.push(b',');
        out.extend_from_slice(inner.as_bytes());
    }
}

/// A raw JSON value, `null` when absent.
fn raw(out: &mut Vec<u8>, v: Option<&RawValue>) {
    out.extend_from_slice(v.map_or("null", RawValue::get).as_bytes());
}

/// The parts of a forcebridge envelope the Debezium value is made of, borrowed from its bytes.
/// A member present with `null` is `Some` (`"null"`), so that it is written as it was.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    operation: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    object: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "present")]
    record: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    commit_timestamp: Option<&'a RawValue>,
    #[serde(default)]
    full_record: Option<bool>,
    #[serde(borrow, default, deserialize_with = "present")]
    snapshot: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    source: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    transaction_key: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    sequence_number: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    commit_number: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    commit_user: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    change_origin: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    changed_fields: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    nulled_fields: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    diff_fields: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    diffs: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    reread: Option<&'a RawValue>,
}

/// forcebridge's `snapshot` block: only its `mode` (`resync` rows are incremental).
#[derive(Deserialize)]
struct SnapshotBlock<'a> {
    #[serde(borrow, default)]
    mode: Option<Cow<'a, str>>,
}

/// A member that is present, `null` included.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

fn json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
    serde_json::to_writer(out, v).expect("serializing JSON values cannot fail");
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dbz() -> Debezium {
        Debezium {
            name: "forcebridge".into(),
            db: "00D000000000001AAA".into(),
        }
    }

    fn change(operation: &str, record: Value) -> Value {
        json!({"operation": operation, "object": "Account", "id": "001000000000001AAA",
            "record": record, "changed_fields": ["Name", "BillingAddress.City"],
            "nulled_fields": ["Phone"], "diff_fields": [], "commit_timestamp": 1_706_702_709_000_i64,
            "commit_number": "1698100138468892700", "commit_user": "005000000000001AAA",
            "transaction_key": "0002a6b1-7c1e", "sequence_number": 2, "change_origin": null,
            "source": {"channel": "/data/AccountChangeEvent", "replay_id": "00ff",
                "event_id": "e-1", "schema_id": "s-1"}})
    }

    fn convert(envelope: &Value) -> Value {
        let bytes = serde_json::to_vec(envelope).unwrap();
        let out = dbz().convert("001000000000001AAA", &bytes).unwrap();
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn update_is_u_with_the_key_before_and_the_fields_after() {
        let record = json!({"Name": "Acme", "Phone": null,
            "BillingAddress": {"City": "Paris", "Street": null}});
        let v = convert(&change("UPDATE", record));
        assert_eq!(v["op"], "u");
        assert_eq!(v["before"], json!({"Id": "001000000000001AAA"}));
        assert_eq!(
            v["after"],
            json!({"Id": "001000000000001AAA", "Name": "Acme", "Phone": null,
                "BillingAddress": {"City": "Paris", "Street": null}})
        );
        let s = &v["source"];
        assert_eq!(s["connector"], "salesforce");
        assert_eq!(s["name"], "forcebridge");
        assert_eq!(s["db"], "00D000000000001AAA");
        assert_eq!(s["table"], "Account");
        assert_eq!(s["ts_ms"], 1_706_702_709_000_i64);
        assert_eq!(s["snapshot"], "false");
        assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(s["channel"], "/data/AccountChangeEvent");
        assert_eq!(s["replay_id"], "00ff");
        assert_eq!(s["change_type"], "UPDATE");
        assert_eq!(s["transaction_key"], "0002a6b1-7c1e");
        assert_eq!(s["sequence_number"], 2);
        // Beyond 2^53: kept as the string the forcebridge envelope holds.
        assert_eq!(s["commit_number"], "1698100138468892700");
        assert_eq!(s["changed_fields"], json!(["Name", "BillingAddress.City"]));
        assert_eq!(s["nulled_fields"], json!(["Phone"]));
        assert_eq!(s["partial"], true);
        assert_eq!(v["transaction"], Value::Null);
        assert!(v["ts_ms"].as_i64().unwrap() > 1_700_000_000_000);
    }

    #[test]
    fn full_record_update_is_not_partial() {
        let mut e = change("UPDATE", json!({"Name": "Acme"}));
        e["full_record"] = json!(true);
        assert_eq!(convert(&e)["source"]["partial"], false);
    }

    #[test]
    fn create_and_undelete_are_c_without_before() {
        for operation in ["CREATE", "UNDELETE", "GAP_CREATE", "GAP_UNDELETE"] {
            let v = convert(&change(operation, json!({"Name": "Acme"})));
            assert_eq!(v["op"], "c", "{operation}");
            assert_eq!(v["before"], Value::Null, "{operation}");
            assert_eq!(v["after"]["Name"], "Acme");
            assert_eq!(v["source"]["partial"], false);
        }
    }

    #[test]
    fn delete_is_d_with_the_key_before_and_no_after() {
        for (operation, record) in [
            ("DELETE", json!({})),
            ("GAP_DELETE", Value::Null),
            ("GAP_UPDATE", Value::Null),
        ] {
            let v = convert(&change(operation, record));
            assert_eq!(v["op"], "d", "{operation}");
            assert_eq!(v["before"], json!({"Id": "001000000000001AAA"}));
            assert_eq!(v["after"], Value::Null, "{operation}");
        }
    }

    #[test]
    fn gap_update_with_a_reread_record_is_u() {
        let mut e = change(
            "GAP_UPDATE",
            json!({"Name": "Acme", "Id": "001000000000001AAA"}),
        );
        e["reread"] = json!({"mode": "gap", "state": "present", "read_at": 5});
        let v = convert(&e);
        assert_eq!(v["op"], "u");
        assert_eq!(v["source"]["reread"]["state"], "present");
        assert_eq!(v["source"]["partial"], false);
        // The record's own Id is not written twice.
        let out = dbz()
            .convert("k", &serde_json::to_vec(&e).unwrap())
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches("\"Id\"").count(), 2, "{text}");
    }

    #[test]
    fn snapshot_rows_are_r_through_the_entry_point() {
        let record = json!({"Name": "Acme", "BillingAddress": {"City": "Paris"}, "Phone": null});
        let out = dbz().write_read_record(
            "Account",
            "001000000000001AAA",
            record.as_object().unwrap(),
            Some(1_706_702_709_000),
            "/data/AccountChangeEvent",
            "00ff",
            7,
        );
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["op"], "r");
        assert_eq!(v["before"], Value::Null);
        assert_eq!(v["after"]["BillingAddress"]["City"], "Paris");
        assert_eq!(v["after"]["Phone"], Value::Null);
        assert_eq!(v["source"]["snapshot"], "true");
        assert_eq!(v["source"]["ts_ms"], 1_706_702_709_000_i64);
        assert_eq!(v["source"]["change_type"], "READ");
        assert_eq!(v["ts_ms"], 7);
    }

    #[test]
    fn snapshot_envelopes_keep_their_read_block() {
        let e = json!({"operation": "READ", "object": "Account", "id": "001000000000001AAA",
            "record": {"Name": "A"}, "commit_timestamp": 3,
            "snapshot": {"method": "bulk", "mode": "resync", "read_at": 7},
            "source": {"channel": "/data/AccountChangeEvent", "replay_id": "00"}});
        let v = convert(&e);
        assert_eq!(v["op"], "r");
        assert_eq!(v["source"]["snapshot_read"]["mode"], "resync");
        assert_eq!(v["source"]["snapshot"], "incremental");
        let v = convert(&change("GAP_OVERFLOW", json!({"Name": "A"})));
        assert_eq!(
            (v["op"].as_str(), v["source"]["snapshot"].as_str()),
            (Some("r"), Some("incremental"))
        );
    }

    #[test]
    fn bad_envelopes_name_the_record_and_field() {
        let err = dbz().convert("001X", b"[1]").unwrap_err().to_string();
        assert!(err.contains("001X"), "{err}");
        let mut e = change("UPDATE", json!({}));
        e["operation"] = json!("MERGE");
        let err = dbz()
            .convert("001X", &serde_json::to_vec(&e).unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("001X") && err.contains("operation"), "{err}");
        let mut e = change("UPDATE", json!({}));
        e["record"] = json!(3);
        let err = dbz()
            .convert("001X", &serde_json::to_vec(&e).unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("`record`"), "{err}");
    }
}
