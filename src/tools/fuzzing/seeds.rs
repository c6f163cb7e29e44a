//! The seed corpus of the fuzz targets (`fuzz/corpus/<target>/`): real inputs, made by the code
//! that makes them in production or in the simulated org.
//!
//! Contract: [`seeds`] returns the same seeds at every call (a fixed clock, user and transaction
//! key; the org reserves ids in a fixed order): change events encoded by the simulated org
//! (create, update with nulled and nested fields, delete, undelete, merged multi-record events)
//! as `cdc_decode` seeds and their bitmaps as `bitmap` seeds, platform events, bitmaps of the
//! documentation, and the README's write-back messages as `writeback_message` seeds.

use serde_json::{Map, Value, json};

use crate::sim::SimError;
use crate::sim::catalog::HEADER_FIELD;
use crate::sim::org::{self, CommitContext, FieldCheck, Op, Org};

use super::cdc::{avro_fields, avro_strings};
use super::fixtures::fixtures;
use super::writeback::writeback_input;

/// One seed input: target, file name (under `fuzz/corpus/<target>/`), bytes.
#[derive(Debug, Clone)]
pub struct Seed {
    pub target: &'static str,
    pub name: String,
    pub data: Vec<u8>,
}

/// The user and the clock of every commit.
const USER: &str = "005SIM000000001AAA";
const NOW: i64 = 1_763_892_900_000;
/// `changeOrigin` of a REST call, and of one made by forcebridge (its client tag).
const REST: &str = "com/salesforce/api/rest/62.0";
const TAGGED: &str = "com/salesforce/api/rest/62.0;client=forcebridge";

/// The seed corpus: real change events encoded by the simulated org (create, update with
/// nulled and nested fields, delete, undelete, merged multi-record events, a platform event),
/// their bitmaps, and the README's write-back messages. Deterministic (fixed clock and keys).
pub fn seeds() -> Result<Vec<Seed>, SimError> {
    let mut changes = Changes {
        org: Org::new()?,
        events: Vec::new(),
    };
    let account = changes.accounts()?;
    let contact = changes.contact(&account)?;
    changes.deletes(&account, &contact)?;
    let mut out = event_seeds(&changes.events)?;
    out.extend(platform_event_seeds(&changes.org)?);
    out.extend(bitmap_seeds());
    out.extend(writeback_seeds());
    Ok(out)
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn create(object: &str, id: &str, fields: Value) -> Op {
    Op::Create {
        object: object.to_owned(),
        id: id.to_owned(),
        fields: obj(fields),
    }
}

fn update(object: &str, id: &str, fields: Value) -> Op {
    Op::Update {
        object: object.to_owned(),
        id: id.to_owned(),
        fields: obj(fields),
    }
}

fn delete(object: &str, id: &str) -> Op {
    Op::Delete {
        object: object.to_owned(),
        id: id.to_owned(),
    }
}

/// The org the changes are committed in, and the events they emitted: (entity, Avro payload).
struct Changes {
    org: Org,
    events: Vec<(String, bytes::Bytes)>,
}

impl Changes {
    /// Commits `ops` as one transaction made through `origin`; keeps its events.
    fn commit(&mut self, ops: Vec<Op>, origin: &str) -> Result<(), SimError> {
        let changes = self.org.commit(&ops, USER, NOW)?;
        let ctx = CommitContext {
            origin: origin.to_owned(),
            user: USER.to_owned(),
            timestamp: NOW,
            commit_number: self.org.next_commit_number(),
            transaction_key: "000046c7-a642-11e2-c29b-229c6786473e".to_owned(),
        };
        for e in self.org.build_events(changes, &ctx)? {
            self.events.push((e.entity, e.event.payload));
        }
        Ok(())
    }

    /// Three accounts: one created with compound and numeric fields then updated (nulling
    /// fields, by forcebridge), two created and then updated together (multi-record events).
    /// Returns the first one's Id.
    fn accounts(&mut self) -> Result<String, SimError> {
        let a = self.org.reserve_id("Account")?;
        let b = self.org.reserve_id("Account")?;
        let c = self.org.reserve_id("Account")?;
        self.commit(
            vec![create(
                "Account",
                &a,
                json!({"Name": "Acme", "Phone": "+1 555 0100", "AnnualRevenue": 1.5e6,
                       "NumberOfEmployees": 120, "External_Id__c": "ERP-1042",
                       "BillingAddress": {"City": "Paris", "Country": "France", "Latitude": 48.85}}),
            )],
            REST,
        )?;
        self.commit(
            vec![update(
                "Account",
                &a,
                json!({"Name": "Acme Corp", "Phone": null,
                       "BillingAddress": {"City": "Lyon", "Country": null}}),
            )],
            TAGGED,
        )?;
        self.commit(
            vec![
                create("Account", &b, json!({"Name": "Beta"})),
                create("Account", &c, json!({"Name": "Gamma"})),
            ],
            REST,
        )?;
        self.commit(
            vec![
                update("Account", &b, json!({"Rating": "Hot"})),
                update("Account", &c, json!({"Rating": "Hot"})),
            ],
            REST,
        )?;
        Ok(a)
    }

    /// A contact of account `a`, created with a compound name and address, then updated (nulling
    /// a name component and a field). Returns its Id.
    fn contact(&mut self, a: &str) -> Result<String, SimError> {
        let ct = self.org.reserve_id("Contact")?;
        self.commit(
            vec![create(
                "Contact",
                &ct,
                json!({"Name": {"FirstName": "Ada", "LastName": "Lovelace"}, "AccountId": a,
                       "HasOptedOutOfEmail": true, "Birthdate": -4_906_368_000_000_i64,
                       "MailingAddress": {"Street": "12 St James's Sq", "City": "London"}}),
            )],
            REST,
        )?;
        self.commit(
            vec![update(
                "Contact",
                &ct,
                json!({"Name": {"FirstName": null}, "Email": "ada@example.com", "Title": null}),
            )],
            REST,
        )?;
        Ok(ct)
    }

    /// Account `a` deleted and undeleted, contact `ct` deleted.
    fn deletes(&mut self, a: &str, ct: &str) -> Result<(), SimError> {
        self.commit(vec![delete("Account", a)], REST)?;
        self.commit(
            vec![Op::Undelete {
                object: "Account".to_owned(),
                id: a.to_owned(),
            }],
            REST,
        )?;
        self.commit(vec![delete("Contact", ct)], REST)
    }
}

/// A `cdc_decode` seed per event (tombstones on for every other one), and its `changedFields`
/// and `nulledFields` as `bitmap` seeds.
fn event_seeds(events: &[(String, bytes::Bytes)]) -> Result<Vec<Seed>, SimError> {
    let mut out = Vec::new();
    let selector = |entity: &str| match entity {
        "Account" => 0u8,
        "Contact" => 1,
        _ => 2,
    };
    let fx = fixtures();
    for (i, (entity, payload)) in events.iter().enumerate() {
        let sel = selector(entity);
        let mut data = vec![sel | if i % 2 == 1 { 0x80 } else { 0 }];
        data.extend_from_slice(payload);
        out.push(Seed {
            target: "cdc_decode",
            name: format!("{i:02}-{entity}"),
            data,
        });
        // The event's own bitmaps as `bitmap` seeds.
        let mut r = &payload[..];
        let datum = apache_avro::from_avro_datum(&fx[usize::from(sel)].schema.schema, &mut r, None)
            .map_err(|e| SimError::Encode(e.to_string()))?;
        let hf = avro_fields(avro_fields(&datum)[HEADER_FIELD]);
        for name in ["changedFields", "nulledFields"] {
            let bitmaps = avro_strings(hf[name], name);
            if !bitmaps.is_empty() {
                let mut data = vec![sel];
                data.extend_from_slice(bitmaps.join(",").as_bytes());
                out.push(Seed {
                    target: "bitmap",
                    name: format!("{i:02}-{entity}-{name}"),
                    data,
                });
            }
        }
    }
    Ok(out)
}

/// `Order_Event__e` platform events, one with every field, one with the required ones only.
fn platform_event_seeds(org: &Org) -> Result<Vec<Seed>, SimError> {
    let mut out = Vec::new();
    let order = org
        .platform_event_schema("Order_Event__e")
        .ok_or_else(|| SimError::UnknownObject("Order_Event__e".into()))?;
    for (i, fields) in [
        json!({"CreatedDate": NOW, "CreatedById": USER, "Order_Number__c": "ORD-1",
               "Amount__c": 12.5, "Status__c": "Placed", "Quantity__c": 3.0}),
        json!({"CreatedDate": NOW, "CreatedById": USER}),
    ]
    .into_iter()
    .enumerate()
    {
        let values =
            org::normalize_fields(&order, "Order_Event__e", &obj(fields), FieldCheck::Event)?;
        let mut data = vec![2u8];
        data.extend_from_slice(&org::encode_body(&order, None, &values)?);
        out.push(Seed {
            target: "cdc_decode",
            name: format!("order-{i}"),
            data,
        });
    }
    Ok(out)
}

/// Bitmaps written by hand: the documentation's example, compound fields only, a platform event.
fn bitmap_seeds() -> Vec<Seed> {
    let mut out = Vec::new();
    for (name, sel, text) in [
        ("doc-vector", 0u8, "0x46,4-0x02"),
        ("compound-only", 1, "0x00,1-0x06,3-0x1"),
        ("platform-event", 2, "0x7F"),
    ] {
        let mut data = vec![sel];
        data.extend_from_slice(text.as_bytes());
        out.push(Seed {
            target: "bitmap",
            name: name.to_owned(),
            data,
        });
    }
    out
}

/// Name, value, last-write-wins, (object, operation) headers.
type Message = (
    &'static str,
    Value,
    bool,
    Option<(&'static str, &'static str)>,
);

/// The README's write-back messages (and a few variants), and a tombstone.
fn writeback_seeds() -> Vec<Seed> {
    let mut out = Vec::new();
    for (name, value, lww, headers) in messages() {
        let bytes = serde_json::to_vec(&value).unwrap_or_default();
        out.push(Seed {
            target: "writeback_message",
            name: name.to_owned(),
            data: writeback_input(
                Some(&bytes),
                lww,
                headers.map(|(o, p)| (o.as_bytes(), p.as_bytes())),
            ),
        });
    }
    out.push(Seed {
        target: "writeback_message",
        name: "tombstone".to_owned(),
        data: writeback_input(None, true, Some((b"Account", b"delete"))),
    });
    out
}

fn messages() -> [Message; 8] {
    [
        (
            "upsert",
            json!({"object": "Account", "operation": "upsert",
                   "timestamp": "2026-11-23T10:15:00.000Z",
                   "fields": {"External_Id__c": "ERP-1042", "Name": "Acme", "Phone": null}}),
            true,
            None,
        ),
        (
            "update-by-id",
            json!({"object": "Account", "operation": "update", "id": "001SIM000000001AAA",
                   "timestamp": 1_763_892_900_000_i64, "fields": {"Rating": "Hot"}}),
            true,
            None,
        ),
        (
            "insert",
            json!({"object": "Contact", "operation": "insert", "fields": {"last": "Lovelace",
                   "Email_Key__c": "ada-1"}}),
            true,
            None,
        ),
        (
            "delete",
            json!({"object": "Account", "operation": "delete", "id": "001SIM000000001AAA",
                   "timestamp": 1_763_892_900_000_i64}),
            true,
            None,
        ),
        (
            "delete-by-external-id",
            json!({"object": "account", "operation": "DELETE",
                   "timestamp": "2024-01-31T12:05:09.042+0000",
                   "fields": {"External_Id__c": 1042}}),
            true,
            None,
        ),
        (
            "mapped-fields",
            json!({"object": "Account", "operation": "Update",
                   "external_id_field": "External_Id__c",
                   "fields": {"customer_name": "Acme", "phone_number": "+1", "Internal__c": "x",
                              "External_Id__c": "ERP-7"}}),
            false,
            None,
        ),
        (
            "headers",
            json!({"fields": {"Name": "From headers"}, "id": "001SIM000000001"}),
            false,
            Some(("Account", "update")),
        ),
        (
            "unknown-object",
            json!({"object": "Order__c", "operation": "insert", "fields": {"Amount__c": 12.5}}),
            true,
            None,
        ),
    ]
}
