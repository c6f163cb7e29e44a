//! Gap and overflow events of the simulated org (facts §11.5).
//!
//! Contract:
//! * A gap event (`GAP_CREATE`, `GAP_UPDATE`, `GAP_DELETE`, `GAP_UNDELETE`) is a real change event
//!   of the object's current schema that carries the header only: change type, `recordIds`
//!   (possibly several), the commit's origin, user, timestamp, commit number and transaction key;
//!   every bitmap empty and every body field null. It is appended to the bus as an event of the
//!   entity, so every channel carrying the entity (per-object, `/data/ChangeEvents`, custom
//!   channels) delivers it. [`super::SimOrg::emit_gap`] publishes one on demand;
//!   [`super::SimOrg::emit_gaps_for`] makes later changes to given records come out as gap events
//!   (one per change, the change type prefixed `GAP_`) instead of change events — as when an event
//!   would exceed 1 MB.
//! * Overflow: a transaction with more than [`super::SimConfig::overflow_threshold`] changes
//!   yields change events for the changes that fit under the threshold (in the transaction's
//!   order) and one `GAP_OVERFLOW` event per entity type among the rest (first-occurrence order),
//!   with `recordIds = ["000000000000000AAA"]` and no fields. The changes themselves are
//!   committed. As Salesforce counts them, a create, delete or undelete is one change and an
//!   update counts each field it changes (each entry its `changedFields` names, compound
//!   components one by one): Change Data Capture Developer Guide, "Overflow Events".
//! * Event order within one transaction: change events, then gap events of gap records, then
//!   overflow events; `sequenceNumber` runs on across them.

use std::collections::HashSet;

use apache_avro::Schema;
use apache_avro::types::Value as Avro;
use serde_json::Map;

use super::catalog::{HEADER_FIELD, SchemaVersion};
use super::error::SimError;
use super::org::{BuiltEvent, Change, ChangeType, CommitContext, Org, encode_body};
use crate::salesforce::proto::ProducerEvent;

/// The `recordIds` entry of a `GAP_OVERFLOW` event (the empty Id).
pub(crate) const OVERFLOW_RECORD_ID: &str = "000000000000000AAA";

/// The `changeType` of an overflow event.
pub(crate) const GAP_OVERFLOW: &str = "GAP_OVERFLOW";

/// The four gap change types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GapKind {
    /// `GAP_CREATE`
    Create,
    /// `GAP_UPDATE`
    Update,
    /// `GAP_DELETE`
    Delete,
    /// `GAP_UNDELETE`
    Undelete,
}

impl GapKind {
    /// The `changeType` enum symbol.
    pub(crate) fn symbol(self) -> &'static str {
        match self {
            GapKind::Create => "GAP_CREATE",
            GapKind::Update => "GAP_UPDATE",
            GapKind::Delete => "GAP_DELETE",
            GapKind::Undelete => "GAP_UNDELETE",
        }
    }

    /// The gap kind replacing a change of type `change`.
    pub(crate) fn of(change: ChangeType) -> Self {
        match change {
            ChangeType::Create => GapKind::Create,
            ChangeType::Update => GapKind::Update,
            ChangeType::Delete => GapKind::Delete,
            ChangeType::Undelete => GapKind::Undelete,
        }
    }

    /// `create`, `GAP_CREATE`, … (case-insensitive).
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let upper = text.to_ascii_uppercase();
        let bare = upper.strip_prefix("GAP_").unwrap_or(&upper);
        [
            GapKind::Create,
            GapKind::Update,
            GapKind::Delete,
            GapKind::Undelete,
        ]
        .into_iter()
        .find(|k| k.symbol()[4..] == *bare)
    }
}

/// The `ChangeType` enum value of `symbol` in a change event schema.
fn change_type(schema: &SchemaVersion, symbol: &str) -> Result<Avro, SimError> {
    let missing = || SimError::Schema(format!("{} has no changeType {symbol}", schema.name));
    let Schema::Record(body) = schema.schema() else {
        return Err(missing());
    };
    let header = body
        .fields
        .iter()
        .find(|f| f.name == HEADER_FIELD)
        .ok_or_else(missing)?;
    let Schema::Record(header) = &header.schema else {
        return Err(missing());
    };
    let field = header
        .fields
        .iter()
        .find(|f| f.name == "changeType")
        .ok_or_else(missing)?;
    let Schema::Enum(e) = &field.schema else {
        return Err(missing());
    };
    let index = e
        .symbols
        .iter()
        .position(|s| s == symbol)
        .ok_or_else(missing)?;
    Ok(Avro::Enum(index as u32, symbol.to_owned()))
}

/// A header-only change event of `entity` (current schema) with `changeType` `symbol`.
pub(crate) fn header_only_event(
    org: &Org,
    entity: &str,
    record_ids: Vec<String>,
    symbol: &str,
    ctx: &CommitContext,
    sequence: i32,
) -> Result<BuiltEvent, SimError> {
    let schema = org
        .object_schema(entity)
        .ok_or_else(|| SimError::UnknownObject(entity.to_owned()))?;
    let empty = || Avro::Array(Vec::new());
    let header = Avro::Record(vec![
        ("entityName".into(), Avro::String(entity.to_owned())),
        (
            "recordIds".into(),
            Avro::Array(record_ids.into_iter().map(Avro::String).collect()),
        ),
        ("changeType".into(), change_type(&schema, symbol)?),
        ("changeOrigin".into(), Avro::String(ctx.origin.clone())),
        (
            "transactionKey".into(),
            Avro::String(ctx.transaction_key.clone()),
        ),
        ("sequenceNumber".into(), Avro::Int(sequence)),
        ("commitTimestamp".into(), Avro::Long(ctx.timestamp)),
        ("commitNumber".into(), Avro::Long(ctx.commit_number)),
        ("commitUser".into(), Avro::String(ctx.user.clone())),
        ("nulledFields".into(), empty()),
        ("diffFields".into(), empty()),
        ("changedFields".into(), empty()),
    ]);
    let payload = encode_body(&schema, Some(header), &Map::new())?;
    Ok(BuiltEvent {
        entity: entity.to_owned(),
        event: ProducerEvent {
            id: uuid::Uuid::new_v4().to_string(),
            schema_id: schema.id.clone(),
            payload: payload.into(),
            headers: Vec::new(),
        },
    })
}

/// How many of `changes` (in order) generate change events: those whose running count of
/// changes stays within `threshold`. "A record creation, deletion, or undeletion counts as one
/// change toward the threshold. In a record update, each field change counts" (Change Data
/// Capture Developer Guide, "Overflow Events").
fn within_threshold(changes: &[Change], threshold: usize) -> usize {
    let mut count = 0usize;
    changes
        .iter()
        .take_while(|c| {
            count += match c.change_type {
                ChangeType::Update => c.changed.len().max(1),
                _ => 1,
            };
            count <= threshold
        })
        .count()
}

/// The events of one committed transaction: change events for the changes within `threshold`
/// (gap events for those to `gap_records`), one `GAP_OVERFLOW` per entity among the rest.
pub(crate) fn transaction_events(
    org: &Org,
    mut changes: Vec<Change>,
    ctx: &CommitContext,
    threshold: usize,
    gap_records: &HashSet<String>,
) -> Result<Vec<BuiltEvent>, SimError> {
    let overflowed = changes.split_off(within_threshold(&changes, threshold));
    let (gaps, normal): (Vec<Change>, Vec<Change>) = changes
        .into_iter()
        .partition(|c| gap_records.contains(&c.record_id));
    let mut events = org.build_events(normal, ctx)?;
    for change in gaps {
        let sequence = events.len() as i32 + 1;
        let symbol = GapKind::of(change.change_type).symbol();
        let ctx = match &change.origin {
            Some(origin) => &CommitContext {
                origin: origin.clone(),
                ..ctx.clone()
            },
            None => ctx,
        };
        events.push(header_only_event(
            org,
            &change.entity,
            vec![change.record_id],
            symbol,
            ctx,
            sequence,
        )?);
    }
    let mut entities: Vec<String> = Vec::new();
    for change in overflowed {
        if !entities.contains(&change.entity) {
            entities.push(change.entity);
        }
    }
    for entity in entities {
        let sequence = events.len() as i32 + 1;
        events.push(header_only_event(
            org,
            &entity,
            vec![OVERFLOW_RECORD_ID.to_owned()],
            GAP_OVERFLOW,
            ctx,
            sequence,
        )?);
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::super::bus::Channel;
    use super::super::tests::obj;
    use super::super::util::lock;
    use super::super::{SimConfig, SimOrg, org};
    use super::*;

    /// Every retained event of `channel`, decoded with its own schema: (changeType, entityName,
    /// recordIds, sequenceNumber, body without the header).
    fn events(sim: &SimOrg, channel: &Channel) -> Vec<(String, String, Vec<String>, i64, Value)> {
        let logged = lock(&sim.shared.bus).fetch(channel, 0, usize::MAX).0;
        let org = lock(&sim.shared.org);
        logged
            .iter()
            .map(|e| {
                let schema = org.schema_by_id(&e.event.schema_id).expect("schema");
                let mut r = &e.event.payload[..];
                let v = apache_avro::from_avro_datum(schema.schema(), &mut r, None).expect("avro");
                assert!(r.is_empty());
                let mut v = org::avro_to_json(&v);
                let h = v["ChangeEventHeader"].take();
                let body = v.as_object_mut().expect("record");
                body.remove("ChangeEventHeader");
                let ids = h["recordIds"]
                    .as_array()
                    .expect("ids")
                    .iter()
                    .map(|i| i.as_str().expect("id").to_owned())
                    .collect();
                (
                    h["changeType"].as_str().expect("type").to_owned(),
                    h["entityName"].as_str().expect("entity").to_owned(),
                    ids,
                    h["sequenceNumber"].as_i64().expect("seq"),
                    Value::Object(body.clone()),
                )
            })
            .collect()
    }

    fn all_null(body: &Value) -> bool {
        body.as_object().expect("body").values().all(Value::is_null)
    }

    #[tokio::test]
    async fn emitted_gap_events_are_header_only_on_every_channel_of_the_object() {
        let sim = SimOrg::start(SimConfig::default()).await.expect("start");
        let a = sim.create("Account", obj(json!({"Name": "A"}))).expect("a");
        let b = sim.create("Account", obj(json!({"Name": "B"}))).expect("b");
        sim.emit_gap("Account", &[a.clone(), b.clone()], GapKind::Update)
            .expect("gap");
        sim.emit_gap("Account", std::slice::from_ref(&a), GapKind::Delete)
            .expect("gap");
        let channels = [
            Channel::Entity("Account".into()),
            Channel::AllChanges,
            Channel::Custom(vec!["Account".into(), "Contact".into()]),
        ];
        for channel in &channels {
            let got = events(&sim, channel);
            let types: Vec<&str> = got.iter().map(|e| e.0.as_str()).collect();
            assert_eq!(types, ["CREATE", "CREATE", "GAP_UPDATE", "GAP_DELETE"]);
            assert_eq!(got[2].2, [a.clone(), b.clone()]);
            assert_eq!(got[3].2, std::slice::from_ref(&a));
            assert_eq!(got[2].1, "Account");
            assert!(all_null(&got[2].4) && all_null(&got[3].4), "no field data");
            assert!(!all_null(&got[0].4), "a change event carries fields");
        }
        assert!(events(&sim, &Channel::Entity("Contact".into())).is_empty());
        assert!(matches!(
            sim.emit_gap("Lead", std::slice::from_ref(&a), GapKind::Create),
            Err(SimError::UnknownObject(_))
        ));
        assert!(sim.emit_gap("Account", &[], GapKind::Create).is_err());
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn a_transaction_over_the_threshold_overflows_once_per_entity() {
        let sim = SimOrg::start(SimConfig {
            overflow_threshold: 3,
            ..SimConfig::default()
        })
        .await
        .expect("start");
        let mut tx = sim.transaction();
        let mut ids = Vec::new();
        for n in 0..3 {
            ids.push(
                tx.create("Account", obj(json!({"Name": format!("A{n}")})))
                    .expect("a"),
            );
        }
        for n in 0..2 {
            tx.create(
                "Contact",
                obj(json!({"Name": {"LastName": format!("C{n}")}})),
            )
            .expect("c");
            tx.create("Account", obj(json!({"Name": format!("B{n}")})))
                .expect("b");
        }
        tx.commit().expect("commit");
        let got = events(&sim, &Channel::AllChanges);
        let summary: Vec<(&str, &str, i64)> = got
            .iter()
            .map(|e| (e.0.as_str(), e.1.as_str(), e.3))
            .collect();
        assert_eq!(
            summary,
            [
                ("CREATE", "Account", 1),
                ("CREATE", "Account", 2),
                ("CREATE", "Account", 3),
                ("GAP_OVERFLOW", "Contact", 4),
                ("GAP_OVERFLOW", "Account", 5),
            ]
        );
        let first: Vec<String> = got[..3].iter().map(|e| e.2[0].clone()).collect();
        assert_eq!(first, ids);
        for e in &got[3..] {
            assert_eq!(e.2, [OVERFLOW_RECORD_ID]);
            assert!(all_null(&e.4));
        }
        // Everything was committed: 5 Accounts, 2 Contacts.
        assert_eq!(sim.records("Account").len(), 5);
        assert_eq!(sim.records("Contact").len(), 2);
        // At the threshold exactly: no overflow.
        let mut tx = sim.transaction();
        for n in 0..3 {
            tx.create("Account", obj(json!({"Name": format!("D{n}")})))
                .expect("d");
        }
        tx.commit().expect("commit");
        let got = events(&sim, &Channel::Entity("Account".into()));
        assert_eq!(got.len(), 4 + 3);
        assert!(got[4..].iter().all(|e| e.0 == "CREATE"));
        sim.shutdown().await;
    }

    /// An update counts each field it changes toward the threshold, as Salesforce counts them:
    /// three updates of three records (3 + 2 + 2 changed fields, `LastModifiedDate` included)
    /// exceed a threshold of 5 although they are only three records.
    #[tokio::test]
    async fn an_update_counts_each_changed_field_toward_the_overflow_threshold() {
        let sim = SimOrg::start(SimConfig {
            overflow_threshold: 5,
            ..SimConfig::default()
        })
        .await
        .expect("start");
        let ids: Vec<String> = (0..3)
            .map(|n| {
                sim.create("Account", obj(json!({"Name": format!("A{n}")})))
                    .expect("create")
            })
            .collect();
        let mut tx = sim.transaction();
        tx.update("Account", &ids[0], obj(json!({"Name": "B0", "Phone": "1"})))
            .expect("3 changed fields");
        tx.update("Account", &ids[1], obj(json!({"Name": "B1"})))
            .expect("2 changed fields");
        tx.update("Account", &ids[2], obj(json!({"Name": "B2"})))
            .expect("2 more: 7 > 5");
        tx.commit().expect("commit");
        let got = events(&sim, &Channel::Entity("Account".into()));
        let kinds: Vec<(&str, usize)> =
            got[3..].iter().map(|e| (e.0.as_str(), e.2.len())).collect();
        assert_eq!(kinds, [("UPDATE", 1), ("UPDATE", 1), ("GAP_OVERFLOW", 1)]);
        assert_eq!(got[5].2, [OVERFLOW_RECORD_ID]);
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn changes_to_gap_records_come_out_as_gap_events() {
        let sim = SimOrg::start(SimConfig::default()).await.expect("start");
        let a = sim.create("Account", obj(json!({"Name": "A"}))).expect("a");
        let b = sim.create("Account", obj(json!({"Name": "B"}))).expect("b");
        sim.emit_gaps_for(std::slice::from_ref(&a));
        let mut tx = sim.transaction();
        tx.update("Account", &a, obj(json!({"Rating": "Hot"})))
            .expect("a");
        tx.update("Account", &b, obj(json!({"Rating": "Hot"})))
            .expect("b");
        tx.commit().expect("commit");
        sim.delete("Account", &a).expect("delete");
        sim.undelete("Account", &a).expect("undelete");
        sim.emit_gaps_for(&[]);
        sim.update("Account", &a, obj(json!({"Rating": "Cold"})))
            .expect("a");
        let got = events(&sim, &Channel::Entity("Account".into()));
        let summary: Vec<(&str, Vec<String>, i64)> = got[2..]
            .iter()
            .map(|e| (e.0.as_str(), e.2.clone(), e.3))
            .collect();
        assert_eq!(
            summary,
            [
                ("UPDATE", vec![b.clone()], 1),
                ("GAP_UPDATE", vec![a.clone()], 2),
                ("GAP_DELETE", vec![a.clone()], 1),
                ("GAP_UNDELETE", vec![a.clone()], 1),
                ("UPDATE", vec![a.clone()], 1),
            ]
        );
        assert_eq!(
            sim.record("Account", &a).expect("a")["Rating"],
            json!("Cold")
        );
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn the_faults_endpoint_emits_gaps_and_overflows() {
        let sim = SimOrg::start(SimConfig::default()).await.expect("start");
        let a = sim.create("Account", obj(json!({"Name": "A"}))).expect("a");
        let http = super::super::tests::http_client();
        let post = |body: Value| {
            http.post(format!("{}/sim/faults", sim.instance_url()))
                .json(&body)
                .send()
        };
        let ok = post(json!({"gap": {"object": "Account", "ids": [a], "kind": "undelete"}, "overflow": "Contact"}))
            .await
            .expect("faults");
        assert_eq!(ok.status(), 200);
        let bad = post(json!({"gap": {"object": "Account", "ids": [a], "kind": "overflow"}}))
            .await
            .expect("faults");
        assert_eq!(bad.status(), 400);
        let got = events(&sim, &Channel::AllChanges);
        let summary: Vec<(&str, &str, Vec<String>)> = got
            .iter()
            .map(|e| (e.0.as_str(), e.1.as_str(), e.2.clone()))
            .collect();
        assert_eq!(
            summary,
            [
                ("CREATE", "Account", vec![a.clone()]),
                ("GAP_UNDELETE", "Account", vec![a.clone()]),
                (
                    "GAP_OVERFLOW",
                    "Contact",
                    vec![OVERFLOW_RECORD_ID.to_owned()]
                ),
            ]
        );
        let ok = post(json!({"gap_records": [a]})).await.expect("faults");
        assert_eq!(ok.status(), 200);
        sim.update("Account", &a, obj(json!({"Rating": "Warm"})))
            .expect("update");
        let last = events(&sim, &Channel::AllChanges).pop().expect("event");
        assert_eq!((last.0.as_str(), last.2), ("GAP_UPDATE", vec![a.clone()]));
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn queries_larger_than_a_batch_are_paged_through_next_records_url() {
        let sim = SimOrg::start(SimConfig {
            query_batch_size: 2,
            ..SimConfig::default()
        })
        .await
        .expect("start");
        let ids = sim.generate("Account", 5).expect("generate");
        let token = super::super::tests::login(&sim).await;
        let http = super::super::tests::http_client();
        let get = |path: String| {
            http.get(format!("{}{path}", sim.instance_url()))
                .bearer_auth(&token)
                .send()
        };
        let mut path = "/services/data/v62.0/query?q=SELECT+Id,Name+FROM+Account".to_owned();
        let mut seen = Vec::new();
        let mut pages = 0;
        loop {
            let page: Value = get(path.clone())
                .await
                .expect("query")
                .json()
                .await
                .expect("json");
            pages += 1;
            assert_eq!(page["totalSize"], 5);
            for r in page["records"].as_array().expect("records") {
                seen.push(r["Id"].as_str().expect("id").to_owned());
            }
            if page["done"] == json!(true) {
                assert!(page.get("nextRecordsUrl").is_none());
                break;
            }
            path = page["nextRecordsUrl"].as_str().expect("next").to_owned();
            assert!(
                path.starts_with("/services/data/v62.0/query/01gSIM"),
                "{path}"
            );
        }
        assert_eq!(pages, 3);
        assert_eq!(seen, ids);
        // A served cursor is closed.
        let again = get(path).await.expect("query");
        assert_eq!(again.status(), 400);
        let body: Value = again.json().await.expect("json");
        assert_eq!(body[0]["errorCode"], "INVALID_QUERY_LOCATOR");
        sim.shutdown().await;
    }

    #[test]
    fn kinds_parse_from_symbols_and_short_names() {
        assert_eq!(GapKind::parse("update"), Some(GapKind::Update));
        assert_eq!(GapKind::parse("GAP_UNDELETE"), Some(GapKind::Undelete));
        assert_eq!(GapKind::parse("Gap_Create"), Some(GapKind::Create));
        assert_eq!(GapKind::parse("overflow"), None);
        assert_eq!(GapKind::of(ChangeType::Delete).symbol(), "GAP_DELETE");
    }
}
