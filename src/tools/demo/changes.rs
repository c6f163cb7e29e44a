//! The demo's changes in the org, and the Kafka records they should make.
//!
//! Contract: [`make_changes`] makes a known stream of changes (creates, updates, deletes,
//! undeletes, a multi-record transaction, contacts, Platform Events) and counts, per topic, the
//! records the source should produce from them: one per change, except the transaction (one
//! event, one record per account in it).

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::setup::{ACCOUNT_TOPIC, CONTACT_TOPIC, DemoArgs, ORDER_TOPIC};
use crate::sim::SimOrg;

/// What the demo did to the org.
pub(super) struct Changes {
    /// CDC and Platform Events the changes emit.
    pub(super) events: usize,
    /// Kafka records each topic should receive.
    pub(super) expected: BTreeMap<String, u64>,
}

pub(super) fn fields(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// Makes the demo's changes; returns the events they emit and the records each topic should get.
pub(super) fn make_changes(sim: &SimOrg, args: &DemoArgs) -> Result<Changes, String> {
    let err = |e: crate::sim::SimError| e.to_string();
    let accounts = sim.generate("Account", args.accounts).map_err(err)?;
    for (i, id) in accounts.iter().take(args.accounts / 2).enumerate() {
        let change = json!({ "Phone": format!("+1 415 555 {:04}", i % 10_000), "BillingAddress": { "City": "San Francisco", "State": "CA" } });
        sim.update("Account", id, fields(change)).map_err(err)?;
    }
    // One transaction: the same change to ten accounts → one event with ten recordIds.
    let batch: Vec<&String> = accounts.iter().rev().take(10.min(accounts.len())).collect();
    let mut tx = sim.transaction();
    for id in &batch {
        tx.update("Account", id, fields(json!({ "Rating": "Hot" })))
            .map_err(err)?;
    }
    tx.commit().map_err(err)?;
    let deleted: Vec<&String> = accounts.iter().skip(args.accounts / 2).take(5).collect();
    for id in &deleted {
        sim.delete("Account", id).map_err(err)?;
    }
    for id in deleted.iter().take(2) {
        sim.undelete("Account", id).map_err(err)?;
    }
    for i in 0..args.contacts {
        let account = accounts.get(i % accounts.len().max(1)).cloned();
        let contact = json!({
            "Name": { "FirstName": format!("Ada{i}"), "LastName": "Lovelace" },
            "Email": format!("ada{i}@example.com"),
            "AccountId": account,
        });
        sim.create("Contact", fields(contact)).map_err(err)?;
    }
    for i in 0..args.platform_events {
        let event = json!({
            "Order_Number__c": format!("ORD-{i:06}"),
            "Amount__c": 100.0 + i as f64,
            "Status__c": "Placed",
        });
        sim.publish_event("/event/Order_Event__e", fields(event))
            .map_err(err)?;
    }
    let undeleted = deleted.len().min(2);
    // One event per change, except the transaction: one event, one record per account in it.
    let tx_events = usize::from(!batch.is_empty());
    let account_events = args.accounts + args.accounts / 2 + tx_events + deleted.len() + undeleted;
    let account_records = account_events - tx_events + batch.len();
    Ok(Changes {
        events: account_events + args.contacts + args.platform_events,
        expected: BTreeMap::from([
            (ACCOUNT_TOPIC.to_owned(), account_records as u64),
            (CONTACT_TOPIC.to_owned(), args.contacts as u64),
            (ORDER_TOPIC.to_owned(), args.platform_events as u64),
        ]),
    })
}
