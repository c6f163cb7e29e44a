//! The org's managed event subscriptions (Beta): the `ManagedEventSubscription` records that the
//! Tooling API creates and reads (`rest/tooling.rs`) and that `ManagedSubscribe` streams
//! (`grpc/managed.rs`) subscribe through, with the replay id each one committed.
//!
//! Contract (Pub/Sub API Developer Guide, "Managed Event Subscriptions (Beta)" and "ManagedSubscribe
//! RPC Method (Beta)"; Metadata API Developer Guide, "ManagedEventSubscription (Beta)"):
//! * A record has an Id with the key prefix `18x` (the prefix the pozil Node client recognizes),
//!   a `DeveloperName` unique in the org, and `Metadata`: `label`, `topicName`, `defaultReplay`
//!   and `errorRecoveryReplay` (`LATEST` default, or `EARLIEST`), `state` (`RUN` default, or
//!   `STOP`).
//! * A subscription starts after its committed replay id; with none, at `defaultReplay`; when the
//!   committed id is no longer in the event bus, at `errorRecoveryReplay`.
//! * "A managed subscription is unique per client and can't be shared with other clients": one
//!   stream at a time holds it ([`ManagedSubscriptions::acquire`]); it is released when that
//!   stream ends.
//! * The records and their commits live as long as the org process (Known differences).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::ids::IdGenerator;

/// Where a subscription starts when it has no usable commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Replay {
    Latest,
    Earliest,
}

impl Replay {
    fn parse(field: &str, value: Option<&Value>) -> Result<Self, String> {
        match value.and_then(Value::as_str) {
            None | Some("LATEST") => Ok(Self::Latest),
            Some("EARLIEST") => Ok(Self::Earliest),
            Some(other) => Err(format!(
                "{field}: bad value for restricted picklist field: {other}"
            )),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Latest => "LATEST",
            Self::Earliest => "EARLIEST",
        }
    }
}

/// One `ManagedEventSubscription` record and its server-side state.
#[derive(Debug, Clone)]
pub(crate) struct ManagedSubscription {
    pub id: String,
    pub developer_name: String,
    pub label: String,
    pub topic_name: String,
    pub default_replay: Replay,
    pub error_recovery_replay: Replay,
    pub running: bool,
    /// The replay id last committed.
    pub committed: Option<Vec<u8>>,
    /// A stream holds the subscription.
    pub held: bool,
}

impl ManagedSubscription {
    /// The record as the Tooling API renders it.
    pub fn record(&self, version: &str) -> Value {
        json!({
            "attributes": {
                "type": "ManagedEventSubscription",
                "url": format!("/services/data/v{version}/tooling/sobjects/ManagedEventSubscription/{}", self.id),
            },
            "Id": self.id,
            "DeveloperName": self.developer_name,
            "MasterLabel": self.label,
            "Metadata": {
                "label": self.label,
                "topicName": self.topic_name,
                "defaultReplay": self.default_replay.as_str(),
                "errorRecoveryReplay": self.error_recovery_replay.as_str(),
                "state": if self.running { "RUN" } else { "STOP" },
            },
        })
    }
}

/// Every managed subscription of the org.
#[derive(Debug)]
pub(crate) struct ManagedSubscriptions {
    ids: IdGenerator,
    by_id: BTreeMap<String, ManagedSubscription>,
}

impl Default for ManagedSubscriptions {
    fn default() -> Self {
        Self {
            ids: IdGenerator::new("18x"),
            by_id: BTreeMap::new(),
        }
    }
}

impl ManagedSubscriptions {
    /// Creates a record from a Tooling API body `{"FullName", "Metadata": {...}}`; `Err` names
    /// the field that is wrong. `topic_exists` tells whether the org has the topic.
    pub fn create(
        &mut self,
        body: &Value,
        topic_exists: impl Fn(&str) -> bool,
    ) -> Result<String, String> {
        let name = body
            .get("FullName")
            .or_else(|| body.get("DeveloperName"))
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or("FullName: Required fields are missing: [FullName]")?;
        if self.by_name(name).is_some() {
            return Err(format!(
                "FullName: A managed event subscription named {name} already exists."
            ));
        }
        let metadata = body.get("Metadata").cloned().unwrap_or(Value::Null);
        let topic = metadata
            .get("topicName")
            .and_then(Value::as_str)
            .ok_or("topicName: Required fields are missing: [topicName]")?;
        if !topic_exists(topic) {
            return Err(format!("topicName: The topic {topic} doesn't exist."));
        }
        let running = match metadata.get("state").and_then(Value::as_str) {
            None | Some("RUN") => true,
            Some("STOP") => false,
            Some(other) => {
                return Err(format!(
                    "state: bad value for restricted picklist field: {other}"
                ));
            }
        };
        let subscription = ManagedSubscription {
            id: self.ids.next_id(),
            developer_name: name.to_owned(),
            label: metadata
                .get("label")
                .and_then(Value::as_str)
                .unwrap_or(name)
                .to_owned(),
            topic_name: topic.to_owned(),
            default_replay: Replay::parse("defaultReplay", metadata.get("defaultReplay"))?,
            error_recovery_replay: Replay::parse(
                "errorRecoveryReplay",
                metadata.get("errorRecoveryReplay"),
            )?,
            running,
            committed: None,
            held: false,
        };
        let id = subscription.id.clone();
        self.by_id.insert(id.clone(), subscription);
        Ok(id)
    }

    /// The record of this Id (15 or 18 characters) or developer name.
    pub fn find(&self, id_or_name: &str) -> Option<&ManagedSubscription> {
        self.by_id
            .values()
            .find(|s| s.id == id_or_name || s.id[..15] == *id_or_name)
            .or_else(|| self.by_name(id_or_name))
    }

    /// Every record, by Id.
    pub fn all(&self) -> impl Iterator<Item = &ManagedSubscription> {
        self.by_id.values()
    }

    fn by_name(&self, name: &str) -> Option<&ManagedSubscription> {
        self.by_id
            .values()
            .find(|s| s.developer_name.eq_ignore_ascii_case(name))
    }

    /// Deletes a record; false if there is none.
    pub fn delete(&mut self, id: &str) -> bool {
        let key = self.find(id).map(|s| s.id.clone());
        key.is_some_and(|k| self.by_id.remove(&k).is_some())
    }

    /// Takes the subscription for one stream; `None` if another stream holds it.
    pub fn acquire(&mut self, id: &str) -> Option<ManagedSubscription> {
        let sub = self.by_id.get_mut(id)?;
        if sub.held {
            return None;
        }
        sub.held = true;
        Some(sub.clone())
    }

    /// Releases the subscription when its stream ends.
    pub fn release(&mut self, id: &str) {
        if let Some(sub) = self.by_id.get_mut(id) {
            sub.held = false;
        }
    }

    /// Stores a committed replay id.
    pub fn commit(&mut self, id: &str, replay_id: Vec<u8>) {
        if let Some(sub) = self.by_id.get_mut(id) {
            sub.committed = Some(replay_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_created_found_held_once_and_committed() {
        let mut subs = ManagedSubscriptions::default();
        let body = json!({"FullName": "Orders_Sub", "Metadata": {
            "label": "Orders", "topicName": "/event/Order_Event__e", "defaultReplay": "EARLIEST",
            "errorRecoveryReplay": "LATEST", "state": "RUN"}});
        let id = subs
            .create(&body, |t| t == "/event/Order_Event__e")
            .unwrap();
        assert!(id.starts_with("18x") && id.len() == 18);
        assert_eq!(subs.find("orders_sub").unwrap().id, id);
        assert_eq!(subs.find(&id[..15]).unwrap().id, id);
        assert!(
            subs.create(&body, |_| true)
                .unwrap_err()
                .starts_with("FullName")
        );
        let bad = json!({"FullName": "X", "Metadata": {"topicName": "/event/Nope__e"}});
        assert!(
            subs.create(&bad, |_| false)
                .unwrap_err()
                .starts_with("topicName")
        );
        let bad = json!({"FullName": "Y", "Metadata": {"topicName": "/event/Order_Event__e", "defaultReplay": "CUSTOM"}});
        assert!(
            subs.create(&bad, |_| true)
                .unwrap_err()
                .starts_with("defaultReplay")
        );
        assert!(subs.acquire(&id).is_some());
        assert!(subs.acquire(&id).is_none(), "one client per subscription");
        subs.commit(&id, vec![1, 2]);
        subs.release(&id);
        assert_eq!(subs.acquire(&id).unwrap().committed, Some(vec![1, 2]));
        let record = subs.find(&id).unwrap().record("62.0");
        assert_eq!(record["Metadata"]["defaultReplay"], "EARLIEST");
        assert_eq!(record["Metadata"]["state"], "RUN");
        assert!(subs.delete(&id));
        assert!(subs.find(&id).is_none());
    }
}
