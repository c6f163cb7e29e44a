//! A replica built from a source topic, as a warehouse loader builds it, and its comparison
//! with the simulated org's records, field by field.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use forcebridge::sim::SimOrg;

use super::kafka::ConsumedRecord;
use super::source::{key, value};

/// The body fields of `AccountChangeEvent`, with the children of compounds.
pub fn account_fields() -> Vec<(String, Option<Vec<String>>)> {
    let schema: Value =
        serde_json::from_str(include_str!("../../schemas/AccountChangeEvent.avsc")).unwrap();
    let mut address: Option<Vec<String>> = None;
    let mut out = Vec::new();
    for f in schema["fields"].as_array().unwrap() {
        let name = f["name"].as_str().unwrap().to_owned();
        if name == "ChangeEventHeader" {
            continue;
        }
        let mut children = None;
        for v in f["type"].as_array().cloned().unwrap_or_default() {
            if let Some(fields) = v["fields"].as_array() {
                let names: Vec<String> = fields
                    .iter()
                    .map(|c| c["name"].as_str().unwrap().to_owned())
                    .collect();
                address = Some(names.clone());
                children = Some(names);
            } else if v == "Address" {
                children = address.clone();
            }
        }
        out.push((name, children));
    }
    out
}

/// A record in one comparable form: every schema field, compounds with every child or null
/// when every child is, numbers as doubles.
pub fn canonical(fields: &[(String, Option<Vec<String>>)], record: &Map<String, Value>) -> Value {
    let number = |v: Value| match v {
        Value::Number(n) => json!(n.as_f64().unwrap()),
        other => other,
    };
    let mut out = Map::new();
    for (name, children) in fields {
        let v = record.get(name).cloned().unwrap_or(Value::Null);
        let v = match (children, v) {
            (Some(children), Value::Object(parts)) => {
                let parts: Map<String, Value> = children
                    .iter()
                    .map(|c| {
                        (
                            c.clone(),
                            number(parts.get(c).cloned().unwrap_or(Value::Null)),
                        )
                    })
                    .collect();
                if parts.values().all(Value::is_null) {
                    Value::Null
                } else {
                    Value::Object(parts)
                }
            }
            (_, v) => number(v),
        };
        out.insert(name.clone(), v);
    }
    Value::Object(out)
}

/// Merges `changes` into `row`, compounds child by child.
pub fn merge(row: &mut Map<String, Value>, changes: &Map<String, Value>) {
    for (k, v) in changes {
        match (row.get_mut(k), v) {
            (Some(Value::Object(old)), Value::Object(new)) => {
                for (c, cv) in new {
                    old.insert(c.clone(), cv.clone());
                }
            }
            _ => {
                row.insert(k.clone(), v.clone());
            }
        }
    }
}

/// What a loader does with one record.
enum Step {
    Replace(Map<String, Value>),
    Merge(Map<String, Value>),
    Remove,
}

/// Applies `records` in order, per key, as `step` reads each value; a tombstone removes.
fn apply(
    records: &[ConsumedRecord],
    step: impl Fn(&Value) -> Step,
) -> BTreeMap<String, Map<String, Value>> {
    let mut rows: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for record in records {
        let id = key(record);
        if record.value.is_none() {
            rows.remove(&id);
            continue;
        }
        match step(&value(record)) {
            Step::Replace(fields) => {
                rows.insert(id, fields);
            }
            Step::Merge(fields) => merge(rows.entry(id).or_default(), &fields),
            Step::Remove => {
                rows.remove(&id);
            }
        }
    }
    rows
}

/// The loader: applies the topic in order, per Id: `READ`, `CREATE` and `UNDELETE` replace the
/// row, `UPDATE` merges its changed fields, `DELETE` (and a tombstone) removes it.
pub fn load(records: &[ConsumedRecord]) -> BTreeMap<String, Map<String, Value>> {
    apply(records, |envelope| {
        let fields = envelope["record"].as_object().cloned().unwrap_or_default();
        match envelope["operation"].as_str().unwrap() {
            "READ" | "CREATE" | "UNDELETE" => Step::Replace(fields),
            "UPDATE" => Step::Merge(fields),
            "DELETE" => Step::Remove,
            other => panic!("unexpected operation {other}"),
        }
    })
}

/// The loader of a `format: debezium` topic, applied in order per key as Flink's
/// `debezium-json` or Kafka Connect's `ExtractNewRecordState` would: `r` and `c` replace the
/// row with `after`, `u` sets the fields of `after` (a partial row, `source.partial`), `d` or a
/// tombstone removes it.
pub fn load_debezium(records: &[ConsumedRecord]) -> BTreeMap<String, Map<String, Value>> {
    apply(records, |envelope| {
        let after = envelope["after"].as_object().cloned().unwrap_or_default();
        match envelope["op"].as_str().unwrap() {
            "r" | "c" => Step::Replace(after),
            "u" => Step::Merge(after),
            "d" => Step::Remove,
            other => panic!("unexpected op {other}"),
        }
    })
}

/// The org's live Accounts and the loaded `rows`, each by Id in [`canonical`] form.
pub fn org_and_replica(
    sim: &SimOrg,
    rows: &BTreeMap<String, Map<String, Value>>,
) -> (BTreeMap<String, Value>, BTreeMap<String, Value>) {
    let fields = account_fields();
    let org = sim
        .records("Account")
        .into_iter()
        .map(|r| (r["Id"].as_str().unwrap().to_owned(), canonical(&fields, &r)))
        .collect();
    let loaded = rows
        .iter()
        .map(|(id, r)| (id.clone(), canonical(&fields, r)))
        .collect();
    (org, loaded)
}

/// The loaded rows equal the org's live records, field by field.
pub fn assert_converged(sim: &SimOrg, rows: &BTreeMap<String, Map<String, Value>>) {
    let (org, loaded) = org_and_replica(sim, rows);
    let missing: Vec<&String> = org.keys().filter(|id| !loaded.contains_key(*id)).collect();
    let extra: Vec<&String> = loaded.keys().filter(|id| !org.contains_key(*id)).collect();
    assert!(missing.is_empty(), "missing from the replica: {missing:?}");
    assert!(
        extra.is_empty(),
        "deleted in the org, still in the replica: {extra:?}"
    );
    for (id, expected) in &org {
        assert_eq!(&loaded[id], expected, "record {id} differs");
    }
}
