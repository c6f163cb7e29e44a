//! Batch planning: which records to read for last-write-wins, what each write becomes, and how
//! writes pack into sObject Collections. Pure functions; no I/O.
//!
//! Contract:
//! * [`lookups`] reads, per object, `Id, SystemModstamp, LastModifiedById` (plus the External Id
//!   field) of every record a batch updates, upserts or deletes. Records addressed by Id are read
//!   with sObject Collections retrieve (`POST /composite/sobjects/{Object}`, at most
//!   [`RETRIEVE_LIMIT`] ids each: 2,000 per subrequest instead of a query's 200, so five per
//!   Composite call read 10,000 records); records addressed by External Id with SOQL
//!   `<ExtField> IN (…)`, at most [`MAX_IN_VALUES`] values and [`MAX_IN_CHARS`] characters per
//!   query. Writes by External Id other than upserts are always looked up (to find the Id);
//!   the rest only with last-write-wins on. [`as_queries`] turns a retrieve Salesforce refused
//!   into `Id IN (…)` queries of 200, so that a refusal only costs the records of one query.
//! * [`decide`]: a write whose `timestamp` is older than the record's `SystemModstamp` is a
//!   conflict (reason `older`). `SystemModstamp` has second precision in Salesforce, so a write
//!   in the same second as it (equal timestamps included) cannot be ordered: by default it is a
//!   conflict too (reason `same_second`), or it is written with `sink.same_second_winner: kafka`.
//!   Neither applies when the last modification was made by forcebridge's own user (its earlier
//!   write of the same stream, e.g. repeated after a crash), which is not a competing change. A record not found is written as asked (an update then fails in
//!   Salesforce with its own error), except a delete by External Id of a record that does not
//!   exist, which is already done.
//! * [`chunks`] groups writes by (operation, object, External Id field, isolation group) into
//!   collections of at most [`COLLECTION_LIMIT`] records, keeping first-seen order.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::message::{OpKind, Target, WriteOp, record_key};
use crate::config::SameSecondWinner;
use crate::salesforce::rest::SubRequest;
use crate::salesforce::sfid::id15;

/// Records per sObject Collections write request (Salesforce's limit).
pub(crate) const COLLECTION_LIMIT: usize = 200;
/// Collections (writes or retrieves) or queries per Composite request (Salesforce's limit: up
/// to 25 subrequests, of which up to 5 sObject Collections or query operations).
pub const COMPOSITE_COLLECTIONS: usize = 5;
/// Ids per sObject Collections retrieve (`POST`; Salesforce's limit, see
/// [`crate::salesforce::rest::MAX_RETRIEVE_IDS`]).
pub(crate) const RETRIEVE_LIMIT: usize = crate::salesforce::rest::MAX_RETRIEVE_IDS;
/// The fields last-write-wins reads of a record.
pub(crate) const LOOKUP_FIELDS: [&str; 3] = ["Id", "SystemModstamp", "LastModifiedById"];
/// Values per `IN (…)` list.
pub(crate) const MAX_IN_VALUES: usize = 200;
/// Characters of one `IN (…)` list, keeping the query URL well under Salesforce's 16,384-byte
/// limit for URI plus headers.
pub(crate) const MAX_IN_CHARS: usize = 8_000;

/// How a lookup finds records.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum LookupBy {
    Id,
    External(String),
}

/// One read of a batch: a [`SubRequest::Retrieve`] (by Id) or a [`SubRequest::Query`].
#[derive(Debug, Clone, PartialEq)]
pub struct Lookup {
    pub(crate) object: String,
    pub(crate) by: LookupBy,
    pub request: SubRequest,
    /// The lookup keys ([`op_lookup_key`]) of the values it asks for.
    pub keys: Vec<String>,
}

/// A record as Salesforce holds it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Current {
    pub id: String,
    pub modstamp: Option<i64>,
    pub last_modified_by: Option<String>,
}

/// Key of a record in lookup results: the op's order key.
fn lookup_key(object: &str, by: &LookupBy, value: &str) -> String {
    match by {
        LookupBy::Id => record_key(object, None, value),
        LookupBy::External(field) => record_key(object, Some(field), value),
    }
}

/// A SOQL string literal.
fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        match c {
            '\'' => out.push_str("\\'"),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

fn needs_lookup(op: &WriteOp, lww: bool) -> Option<(LookupBy, &str)> {
    match (&op.target, op.kind) {
        (Target::New, _) => None,
        (Target::Id(id), _) => lww.then_some((LookupBy::Id, id.as_str())),
        (Target::External { field, value }, OpKind::Upsert) => {
            lww.then(|| (LookupBy::External(field.clone()), value.as_str()))
        }
        (Target::External { field, value }, _) => {
            Some((LookupBy::External(field.clone()), value.as_str()))
        }
    }
}

/// The reads a batch needs (see the module contract).
pub fn lookups<'a>(ops: impl IntoIterator<Item = &'a WriteOp>, lww: bool) -> Vec<Lookup> {
    // (object, by) → distinct values, in first-seen order.
    let mut groups: Vec<((String, LookupBy), Vec<&str>)> = Vec::new();
    let mut seen: HashMap<String, ()> = HashMap::new();
    for op in ops {
        let Some((by, value)) = needs_lookup(op, lww) else {
            continue;
        };
        if seen
            .insert(lookup_key(&op.object, &by, value), ())
            .is_some()
        {
            continue;
        }
        let group = (op.object.clone(), by);
        match groups.iter_mut().find(|(g, _)| *g == group) {
            Some((_, values)) => values.push(value),
            None => groups.push((group, vec![value])),
        }
    }
    let mut out = Vec::new();
    for ((object, by), values) in groups {
        match by {
            LookupBy::Id => {
                for part in values.chunks(RETRIEVE_LIMIT) {
                    out.push(Lookup {
                        object: object.clone(),
                        by: LookupBy::Id,
                        request: SubRequest::Retrieve {
                            object: object.clone(),
                            ids: part.iter().map(|v| (*v).to_owned()).collect(),
                            fields: LOOKUP_FIELDS.iter().map(|f| (*f).to_owned()).collect(),
                        },
                        keys: part
                            .iter()
                            .map(|v| lookup_key(&object, &LookupBy::Id, v))
                            .collect(),
                    });
                }
            }
            LookupBy::External(_) => queries(&object, &by, &values, &mut out),
        }
    }
    out
}

/// The reads of a refused [`SubRequest::Retrieve`] as SOQL `Id IN (…)` queries (empty for any
/// other lookup).
pub(crate) fn as_queries(lookup: &Lookup) -> Vec<Lookup> {
    let mut out = Vec::new();
    if let SubRequest::Retrieve { ids, .. } = &lookup.request {
        let values: Vec<&str> = ids.iter().map(String::as_str).collect();
        queries(&lookup.object, &LookupBy::Id, &values, &mut out);
    }
    out
}

/// SOQL lookups of `values` of `object` by `by`, at most [`MAX_IN_VALUES`] values and
/// [`MAX_IN_CHARS`] characters each.
fn queries(object: &str, by: &LookupBy, values: &[&str], out: &mut Vec<Lookup>) {
    let mut keys: Vec<String> = Vec::new();
    let (select, column) = match by {
        LookupBy::Id => (format!("SELECT {}", LOOKUP_FIELDS.join(", ")), "Id"),
        LookupBy::External(field) => (
            format!("SELECT {}, {field}", LOOKUP_FIELDS.join(", ")),
            field.as_str(),
        ),
    };
    let mut list: Vec<String> = Vec::new();
    let mut chars = 0;
    let flush = |list: &mut Vec<String>, keys: &mut Vec<String>, out: &mut Vec<Lookup>| {
        if list.is_empty() {
            return;
        }
        out.push(Lookup {
            object: object.to_owned(),
            by: by.clone(),
            request: SubRequest::Query {
                soql: format!(
                    "{select} FROM {object} WHERE {column} IN ({})",
                    list.join(",")
                ),
            },
            keys: std::mem::take(keys),
        });
        list.clear();
    };
    for value in values {
        let quoted = quote(value);
        // The query travels URL-encoded: anything but letters and digits may take 3 bytes.
        let encoded = quoted
            .bytes()
            .map(|b| if b.is_ascii_alphanumeric() { 1 } else { 3 })
            .sum::<usize>()
            + 3;
        if list.len() == MAX_IN_VALUES || chars + encoded > MAX_IN_CHARS {
            flush(&mut list, &mut keys, out);
            chars = 0;
        }
        chars += encoded;
        list.push(quoted);
        keys.push(lookup_key(object, by, value));
    }
    flush(&mut list, &mut keys, out);
}

/// Parses `SystemModstamp`: a Salesforce datetime string or epoch milliseconds.
fn modstamp(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::String(s) => crate::salesforce::sftime::parse_datetime(s).ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

/// Adds the records a lookup returned to `found`.
pub fn index_results(
    lookup: &Lookup,
    records: &[Map<String, Value>],
    found: &mut HashMap<String, Current>,
) {
    for record in records {
        let Some(id) = record.get("Id").and_then(Value::as_str) else {
            continue;
        };
        let key_value = match &lookup.by {
            LookupBy::Id => Some(id.to_owned()),
            LookupBy::External(field) => record
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(field))
                .and_then(|(_, v)| match v {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                }),
        };
        let Some(key_value) = key_value else {
            continue;
        };
        found.insert(
            lookup_key(&lookup.object, &lookup.by, &key_value),
            Current {
                id: id.to_owned(),
                modstamp: modstamp(record.get("SystemModstamp")),
                last_modified_by: record
                    .get("LastModifiedById")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            },
        );
    }
}

/// The key under which a lookup reports `op`'s target (`None` for inserts).
pub fn op_lookup_key(op: &WriteOp) -> Option<String> {
    match op.target {
        Target::New => None,
        _ => op.order_key(),
    }
}

/// The current record of `op`'s target, if a lookup found it.
pub(crate) fn current_of<'a>(
    op: &WriteOp,
    found: &'a HashMap<String, Current>,
) -> Option<&'a Current> {
    found.get(&op_lookup_key(op)?)
}

/// A write as it will be sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    pub kind: OpKind,
    pub object: String,
    /// For update and delete: the record Id.
    pub id: Option<String>,
    /// For upsert: the External Id field.
    pub external_id_field: Option<String>,
    pub fields: Map<String, Value>,
}

/// What to do with one op of a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Send this write.
    Write(Write),
    /// Salesforce holds a newer change by someone else (or one of the same second): not written.
    Conflict {
        current: Current,
        timestamp: i64,
        reason: ConflictReason,
    },
    /// An update by External Id whose record does not exist.
    NotFound { field: String, value: String },
    /// A delete by External Id whose record does not exist: nothing to do.
    AlreadyAbsent,
}

/// Why a write is a last-write-wins conflict (the conflict's `forcebridge.conflict.reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictReason {
    /// The write is older than the record's `SystemModstamp`.
    Older,
    /// The write falls in the same second as the record's `SystemModstamp`, which has second
    /// precision: it cannot be ordered, and `sink.same_second_winner` is `salesforce`.
    SameSecond,
}

impl ConflictReason {
    /// The header value: `older` or `same_second`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Older => "older",
            Self::SameSecond => "same_second",
        }
    }
}

/// Why a write written at `timestamp` loses to a record last changed at `stamp` (epoch ms), or
/// `None` when it may be written. Salesforce keeps `SystemModstamp` to the second (SOAP API
/// Developer Guide, "Primitive Data Types": dateTime, "a precision of one second"), so a stamp
/// ending in `000` stands for any instant of its second: a write in that second cannot be ordered
/// against it and `tie` decides. A stamp with milliseconds is compared exactly.
fn stale(stamp: i64, timestamp: i64, tie: SameSecondWinner) -> Option<ConflictReason> {
    let same_second =
        stamp.rem_euclid(1000) == 0 && stamp.div_euclid(1000) == timestamp.div_euclid(1000);
    if same_second {
        (tie == SameSecondWinner::Salesforce).then_some(ConflictReason::SameSecond)
    } else {
        (stamp > timestamp).then_some(ConflictReason::Older)
    }
}

/// Decides one op (see the module contract). `found`: the lookup results of its batch; `lww`:
/// last-write-wins with its rule for same-second ties, `None` when off.
pub fn decide(
    op: &WriteOp,
    found: &HashMap<String, Current>,
    lww: Option<SameSecondWinner>,
    own_user: Option<&str>,
) -> Decision {
    let current = current_of(op, found);
    if let Some(tie) = lww
        && let (Some(current), Some(ts)) = (current, op.timestamp)
        && let Some(stamp) = current.modstamp
        && let Some(reason) = stale(stamp, ts, tie)
    {
        let ours = match (own_user, current.last_modified_by.as_deref()) {
            (Some(me), Some(by)) => id15(me) == id15(by),
            _ => false,
        };
        if !ours {
            return Decision::Conflict {
                current: current.clone(),
                timestamp: ts,
                reason,
            };
        }
    }
    let write = |id: Option<String>, external_id_field: Option<String>| {
        Decision::Write(Write {
            kind: op.kind,
            object: op.object.clone(),
            id,
            external_id_field,
            fields: op.fields.clone(),
        })
    };
    match (&op.target, op.kind) {
        (Target::New, _) => write(None, None),
        (Target::Id(id), _) => write(Some(id.clone()), None),
        (Target::External { field, .. }, OpKind::Upsert) => write(None, Some(field.clone())),
        (Target::External { field, value }, kind) => match current {
            Some(current) => write(Some(current.id.clone()), None),
            None if kind == OpKind::Delete => Decision::AlreadyAbsent,
            None => Decision::NotFound {
                field: field.clone(),
                value: value.clone(),
            },
        },
    }
}

/// One collection subrequest and the positions (in the caller's list) of its writes.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub request: SubRequest,
    pub members: Vec<usize>,
}

fn record_body(w: &Write) -> Map<String, Value> {
    let mut body = Map::with_capacity(w.fields.len() + 2);
    body.insert("attributes".into(), serde_json::json!({ "type": w.object }));
    if w.kind == OpKind::Update
        && let Some(id) = &w.id
    {
        body.insert("Id".into(), Value::String(id.clone()));
    }
    for (k, v) in &w.fields {
        body.insert(k.clone(), v.clone());
    }
    body
}

/// Packs writes into collections (see the module contract). `writes`: (position, write,
/// isolation group); writes of different groups never share a collection.
pub fn chunks<'a>(writes: impl IntoIterator<Item = (usize, &'a Write, u64)>) -> Vec<Chunk> {
    type GroupKey = (OpKind, String, Option<String>, u64);
    let mut groups: Vec<(GroupKey, Vec<(usize, &Write)>)> = Vec::new();
    for (pos, w, group) in writes {
        let key = (w.kind, w.object.clone(), w.external_id_field.clone(), group);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.push((pos, w)),
            None => groups.push((key, vec![(pos, w)])),
        }
    }
    let mut out = Vec::new();
    for ((kind, object, ext, _), members) in groups {
        for part in members.chunks(COLLECTION_LIMIT) {
            let positions = part.iter().map(|(p, _)| *p).collect();
            let request = match kind {
                OpKind::Insert => SubRequest::Create {
                    records: part.iter().map(|(_, w)| record_body(w)).collect(),
                },
                OpKind::Update => SubRequest::Update {
                    records: part.iter().map(|(_, w)| record_body(w)).collect(),
                },
                OpKind::Upsert => SubRequest::Upsert {
                    object: object.clone(),
                    external_id_field: ext.clone().unwrap_or_default(),
                    records: part.iter().map(|(_, w)| record_body(w)).collect(),
                },
                OpKind::Delete => SubRequest::Delete {
                    ids: part
                        .iter()
                        .map(|(_, w)| w.id.clone().unwrap_or_default())
                        .collect(),
                },
            };
            out.push(Chunk {
                request,
                members: positions,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn op(kind: OpKind, target: Target, ts: Option<i64>) -> WriteOp {
        WriteOp {
            object: "Account".into(),
            kind,
            target,
            fields: json!({"Name": "x"}).as_object().unwrap().clone(),
            timestamp: ts,
            insert_key: None,
        }
    }
    fn ext(v: &str) -> Target {
        Target::External {
            field: "External_Id__c".into(),
            value: v.into(),
        }
    }
    fn id(n: u32) -> String {
        format!("001SIM{n:09}AAA")
    }
    fn soql(l: &Lookup) -> &str {
        match &l.request {
            SubRequest::Query { soql } => soql,
            other => panic!("not a query: {other:?}"),
        }
    }

    #[test]
    fn lookups_group_dedupe_escape_and_chunk() {
        let mut ops = vec![
            op(OpKind::Insert, Target::New, None),
            op(OpKind::Upsert, ext("O'Brien\\1"), Some(1)),
            op(OpKind::Update, Target::Id(id(1)), Some(1)),
            op(OpKind::Delete, Target::Id(id(1)[..15].to_owned()), Some(1)),
        ];
        let l = lookups(&ops, true);
        assert_eq!(l.len(), 2);
        assert_eq!(
            soql(&l[0]),
            "SELECT Id, SystemModstamp, LastModifiedById, External_Id__c FROM Account WHERE External_Id__c IN ('O\\'Brien\\\\1')"
        );
        // By Id: one retrieve; the 15-character Id of the same record is not read twice.
        assert_eq!(
            l[1].request,
            SubRequest::Retrieve {
                object: "Account".into(),
                ids: vec![id(1)],
                fields: vec![
                    "Id".into(),
                    "SystemModstamp".into(),
                    "LastModifiedById".into()
                ],
            }
        );
        assert_eq!(l[1].keys.len(), 1);
        // Without LWW only writes by External Id that need an Id are looked up.
        assert!(lookups(&ops, false).is_empty());
        ops.push(op(OpKind::Update, ext("E2"), None));
        assert_eq!(lookups(&ops, false).len(), 1);

        // Retrieves of at most 2,000 Ids, in first-seen order.
        let many: Vec<WriteOp> = (0..4_500)
            .map(|n| op(OpKind::Update, Target::Id(id(n)), Some(1)))
            .collect();
        let l = lookups(&many, true);
        let sizes: Vec<usize> = l
            .iter()
            .map(|l| match &l.request {
                SubRequest::Retrieve { ids, .. } => ids.len(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(sizes, [RETRIEVE_LIMIT, RETRIEVE_LIMIT, 500]);
        assert!(l.iter().all(|l| l.keys.len()
            == match &l.request {
                SubRequest::Retrieve { ids, .. } => ids.len(),
                _ => 0,
            }));
        let SubRequest::Retrieve { ids, .. } = &l[1].request else {
            panic!()
        };
        assert_eq!(ids[0], id(2_000));
        // A refused retrieve becomes queries of 200 Ids with the same keys.
        let q = as_queries(&l[2]);
        assert_eq!(q.len(), 3);
        assert!(soql(&q[0]).starts_with(
            "SELECT Id, SystemModstamp, LastModifiedById FROM Account WHERE Id IN ('001SIM000004000AAA',"
        ));
        assert_eq!(soql(&q[2]).matches("'001").count(), 100);
        assert_eq!(
            q.iter().flat_map(|q| q.keys.clone()).collect::<Vec<_>>(),
            l[2].keys
        );
        assert!(as_queries(&q[0]).is_empty());
        let long: Vec<WriteOp> = (0..100)
            .map(|n| op(OpKind::Upsert, ext(&format!("{n:0>100}")), Some(1)))
            .collect();
        let l = lookups(&long, true);
        assert!(
            l.len() >= 2 && l.iter().all(|q| soql(q).len() < MAX_IN_CHARS + 200),
            "{}",
            l.len()
        );
    }

    #[test]
    fn last_write_wins_decisions() {
        let me = "0055S0000000INTAAA";
        let other = "0055S0000000SIMAAA";
        let lookup = Lookup {
            object: "Account".into(),
            by: LookupBy::Id,
            request: SubRequest::Query {
                soql: String::new(),
            },
            keys: vec![],
        };
        let mut found = HashMap::new();
        index_results(
            &lookup,
            &[json!({"Id": id(1), "SystemModstamp": "1970-01-01T00:00:01.000+0000", "LastModifiedById": other}).as_object().unwrap().clone(),
              json!({"Id": id(2), "SystemModstamp": 1000, "LastModifiedById": me}).as_object().unwrap().clone()],
            &mut found,
        );
        let on = Some(SameSecondWinner::Salesforce);
        // Older than a change by someone else: conflict, with both timestamps.
        let d = decide(
            &op(OpKind::Update, Target::Id(id(1)), Some(999)),
            &found,
            on,
            Some(me),
        );
        assert!(
            matches!(d, Decision::Conflict { ref current, timestamp: 999, reason: ConflictReason::Older } if current.modstamp == Some(1000)),
            "{d:?}"
        );
        // In a later second: written. 15-character Ids find the 18-character result.
        for ts in [2000, 2001] {
            let d = decide(
                &op(OpKind::Update, Target::Id(id(1)[..15].to_owned()), Some(ts)),
                &found,
                on,
                Some(me),
            );
            assert!(matches!(d, Decision::Write(_)), "{d:?}");
        }
        // Older, but the last change was our own write: written.
        let d = decide(
            &op(OpKind::Update, Target::Id(id(2)), Some(5)),
            &found,
            on,
            Some(&me[..15]),
        );
        assert!(matches!(d, Decision::Write(_)), "{d:?}");
        // LWW off: written.
        let d = decide(
            &op(OpKind::Update, Target::Id(id(1)), Some(5)),
            &found,
            None,
            None,
        );
        assert!(matches!(d, Decision::Write(_)));
    }

    /// `SystemModstamp` has second precision: a write in its second (equal included) is a tie,
    /// Salesforce's by default, Kafka's when configured; our own last write is no competitor;
    /// a stamp with milliseconds is compared exactly.
    #[test]
    fn same_second_writes_follow_the_tie_rule() {
        let me = "0055S0000000INTAAA";
        let other = "0055S0000000SIMAAA";
        let lookup = Lookup {
            object: "Account".into(),
            by: LookupBy::Id,
            request: SubRequest::Query {
                soql: String::new(),
            },
            keys: vec![],
        };
        let mut found = HashMap::new();
        index_results(
            &lookup,
            &[json!({"Id": id(1), "SystemModstamp": "2024-01-31T12:05:09.000+0000", "LastModifiedById": other}).as_object().unwrap().clone(),
              json!({"Id": id(2), "SystemModstamp": "2024-01-31T12:05:09.000+0000", "LastModifiedById": me}).as_object().unwrap().clone(),
              json!({"Id": id(3), "SystemModstamp": 1_706_702_709_500_i64, "LastModifiedById": other}).as_object().unwrap().clone()],
            &mut found,
        );
        let second = 1_706_702_709_000_i64;
        let at = |n: u32, ts: i64, tie: SameSecondWinner, user: Option<&str>| {
            decide(
                &op(OpKind::Update, Target::Id(id(n)), Some(ts)),
                &found,
                Some(tie),
                user,
            )
        };
        for ts in [second, second + 400, second + 999] {
            let d = at(1, ts, SameSecondWinner::Salesforce, Some(me));
            assert!(
                matches!(d, Decision::Conflict { reason: ConflictReason::SameSecond, timestamp, .. } if timestamp == ts),
                "{ts}: {d:?}"
            );
            let d = at(1, ts, SameSecondWinner::Kafka, Some(me));
            assert!(matches!(d, Decision::Write(_)), "{ts}: {d:?}");
            let d = at(2, ts, SameSecondWinner::Salesforce, Some(me));
            assert!(matches!(d, Decision::Write(_)), "ours, {ts}: {d:?}");
        }
        // The second before is older whatever the tie rule; the next one is newer.
        let d = at(1, second - 1, SameSecondWinner::Kafka, Some(me));
        assert!(
            matches!(
                d,
                Decision::Conflict {
                    reason: ConflictReason::Older,
                    ..
                }
            ),
            "{d:?}"
        );
        let d = at(1, second + 1000, SameSecondWinner::Salesforce, Some(me));
        assert!(matches!(d, Decision::Write(_)), "{d:?}");
        // Milliseconds in the stamp order the write exactly.
        let d = at(3, second + 400, SameSecondWinner::Kafka, Some(me));
        assert!(
            matches!(
                d,
                Decision::Conflict {
                    reason: ConflictReason::Older,
                    ..
                }
            ),
            "{d:?}"
        );
        let d = at(3, second + 600, SameSecondWinner::Salesforce, Some(me));
        assert!(matches!(d, Decision::Write(_)), "{d:?}");
        assert_eq!(ConflictReason::SameSecond.as_str(), "same_second");
    }

    #[test]
    fn external_ids_resolve_to_record_ids() {
        let lookup = Lookup {
            object: "Account".into(),
            by: LookupBy::External("External_Id__c".into()),
            request: SubRequest::Query {
                soql: String::new(),
            },
            keys: vec![],
        };
        let mut found = HashMap::new();
        index_results(
            &lookup,
            &[
                json!({"Id": id(7), "SystemModstamp": null, "External_Id__c": "ERP-7"})
                    .as_object()
                    .unwrap()
                    .clone(),
            ],
            &mut found,
        );
        let d = decide(
            &op(OpKind::Update, ext("erp-7"), Some(1)),
            &found,
            Some(SameSecondWinner::Salesforce),
            None,
        );
        let Decision::Write(w) = d else {
            panic!("{d:?}")
        };
        assert_eq!(
            (w.kind, w.id.as_deref()),
            (OpKind::Update, Some(id(7).as_str()))
        );
        assert_eq!(
            decide(
                &op(OpKind::Delete, ext("ERP-8"), Some(1)),
                &found,
                Some(SameSecondWinner::Salesforce),
                None
            ),
            Decision::AlreadyAbsent
        );
        assert!(matches!(
            decide(
                &op(OpKind::Update, ext("ERP-8"), Some(1)),
                &found,
                Some(SameSecondWinner::Salesforce),
                None
            ),
            Decision::NotFound { .. }
        ));
        let Decision::Write(w) = decide(
            &op(OpKind::Upsert, ext("ERP-8"), Some(1)),
            &found,
            Some(SameSecondWinner::Salesforce),
            None,
        ) else {
            panic!()
        };
        assert_eq!(w.external_id_field.as_deref(), Some("External_Id__c"));
    }

    #[test]
    fn chunks_pack_by_operation_object_and_group() {
        let w = |kind, n: u32| Write {
            kind,
            object: "Account".into(),
            id: Some(id(n)),
            external_id_field: (kind == OpKind::Upsert).then(|| "External_Id__c".into()),
            fields: json!({"Name": format!("n{n}")})
                .as_object()
                .unwrap()
                .clone(),
        };
        let writes: Vec<Write> = (0..450)
            .map(|n| w(OpKind::Upsert, n))
            .chain((0..3).map(|n| w(OpKind::Update, n)))
            .chain((0..2).map(|n| w(OpKind::Delete, n)))
            .collect();
        let c = chunks(writes.iter().enumerate().map(|(i, w)| (i, w, 0)));
        let sizes: Vec<usize> = c.iter().map(|c| c.members.len()).collect();
        assert_eq!(sizes, [200, 200, 50, 3, 2]);
        let SubRequest::Update { records } = &c[3].request else {
            panic!()
        };
        assert_eq!(
            Value::Object(records[0].clone()),
            json!({"attributes": {"type": "Account"}, "Id": id(0), "Name": "n0"})
        );
        let SubRequest::Delete { ids } = &c[4].request else {
            panic!()
        };
        assert_eq!(ids, &[id(0), id(1)]);
        let SubRequest::Upsert {
            object,
            external_id_field,
            records,
        } = &c[0].request
        else {
            panic!()
        };
        assert_eq!(
            (object.as_str(), external_id_field.as_str(), records.len()),
            ("Account", "External_Id__c", 200)
        );
        assert!(!records[0].contains_key("Id"));
        // Isolation groups split.
        let c = chunks(
            writes[..4]
                .iter()
                .enumerate()
                .map(|(i, w)| (i, w, (i % 2) as u64)),
        );
        assert_eq!(
            c.iter().map(|c| c.members.clone()).collect::<Vec<_>>(),
            [vec![0, 2], vec![1, 3]]
        );
    }
}
