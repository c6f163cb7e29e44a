//! The Rust API of a running simulated org ([`SimOrg`], cheap to clone): its endpoints and
//! configuration, record changes (one at a time or in a [`Transaction`]), platform events, schema
//! changes, reads of the committed state (records, SOQL), event counts, tokens and API usage, and
//! shutdown. Changes run as [`SimConfig::user_id`] with `changeOrigin`
//! `com/salesforce/api/rest/62.0` (`;client=<tag>` on a [`SimOrg::with_client_tag`] handle).
//! Starting the org is in `start`, its fault knobs in `faults`.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde_json::{Map, Value};
use tokio::task::JoinHandle;

use super::config::SimConfig;
use super::error::SimError;
use super::jwt;
use super::org::Op;
use super::shared::Shared;
use super::soql;
use super::util::{API_VERSION, lock, rest_origin};

/// Handle to a running simulated org (cheap to clone).
#[derive(Clone)]
pub struct SimOrg {
    pub(super) shared: Arc<Shared>,
    pub(super) client_tag: Option<Arc<str>>,
    pub(super) tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl std::fmt::Debug for SimOrg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimOrg")
            .field("instance_url", &self.shared.instance_url)
            .field("pubsub_endpoint", &self.shared.pubsub_endpoint)
            .field("client_tag", &self.client_tag)
            .finish()
    }
}

impl SimOrg {
    /// The Pub/Sub API endpoint, `http://127.0.0.1:PORT` (`https://` with [`SimConfig::tls`]).
    pub fn pubsub_endpoint(&self) -> String {
        self.shared.pubsub_endpoint.clone()
    }

    /// The `salesforce:` section of a forcebridge config for this org: its endpoints and the
    /// connected app's client credentials (the integration user), as the demo and the bench
    /// write it.
    pub fn salesforce_yaml(&self) -> String {
        let c = self.config();
        format!(
            "salesforce:\n  login_url: {instance}\n  pubsub_endpoint: {pubsub}\n  allow_plaintext: true\n  auth:\n    type: client_credentials\n    client_id: {id}\n    client_secret: {secret}\n",
            instance = self.instance_url(),
            pubsub = self.pubsub_endpoint(),
            id = c.client_id,
            secret = c.client_secret,
        )
    }

    /// The instance URL (also the login URL), `http://127.0.0.1:PORT` (`https://` with
    /// [`SimConfig::tls`]).
    pub fn instance_url(&self) -> String {
        self.shared.instance_url.clone()
    }

    /// The configuration the org runs with.
    pub fn config(&self) -> &SimConfig {
        &self.shared.config
    }

    pub(super) fn origin(&self) -> String {
        rest_origin(API_VERSION, self.client_tag.as_deref())
    }

    fn run(&self, ops: &[Op]) -> Result<(), SimError> {
        self.shared
            .apply(ops, self.origin(), &self.shared.config.user_id)
    }

    /// Creates a record; returns its Id. Emits a CREATE event.
    pub fn create(&self, object: &str, fields: Map<String, Value>) -> Result<String, SimError> {
        let mut tx = self.transaction();
        let id = tx.create(object, fields)?;
        tx.commit()?;
        Ok(id)
    }

    /// Updates fields (a null value sets the field to null). Emits an UPDATE event.
    pub fn update(
        &self,
        object: &str,
        id: &str,
        fields: Map<String, Value>,
    ) -> Result<(), SimError> {
        self.run(&[Op::Update {
            object: object.to_owned(),
            id: id.to_owned(),
            fields,
        }])
    }

    /// Moves a record to the recycle bin. Emits a DELETE event.
    pub fn delete(&self, object: &str, id: &str) -> Result<(), SimError> {
        self.run(&[Op::Delete {
            object: object.to_owned(),
            id: id.to_owned(),
        }])
    }

    /// Restores a record from the recycle bin. Emits an UNDELETE event.
    pub fn undelete(&self, object: &str, id: &str) -> Result<(), SimError> {
        self.run(&[Op::Undelete {
            object: object.to_owned(),
            id: id.to_owned(),
        }])
    }

    /// Starts a transaction: its changes commit together (shared `transactionKey`).
    pub fn transaction(&self) -> Transaction {
        Transaction {
            org: self.clone(),
            ops: Vec::new(),
        }
    }

    /// A handle whose changes carry `changeOrigin` `com/salesforce/api/rest/62.0;client=<tag>`.
    pub fn with_client_tag(&self, tag: &str) -> SimOrg {
        SimOrg {
            client_tag: Some(Arc::from(tag)),
            ..self.clone()
        }
    }

    /// Creates `count` records with generated values (transactions of up to 200 records, one
    /// CREATE event per record); returns their Ids.
    pub fn generate(&self, object: &str, count: usize) -> Result<Vec<String>, SimError> {
        self.shared
            .generate(object, count, &self.origin(), &self.shared.config.user_id)
    }

    /// Seeds `count` records of `object` that existed before anything listened (no change
    /// events), deterministic from `seed`; see [`Org::seed`](super::org::Org::seed). Returns
    /// the first and last Id written.
    pub fn seed(
        &self,
        object: &str,
        count: usize,
        seed: u64,
    ) -> Result<Option<(String, String)>, SimError> {
        let mut org = lock(&self.shared.org);
        let object = org
            .canonical_object(object)
            .ok_or_else(|| SimError::UnknownObject(object.to_owned()))?
            .to_owned();
        org.seed(&object, count, seed, &self.shared.config.user_id)
    }

    /// Publishes a platform event (`Order_Event__e` or `/event/Order_Event__e`); `CreatedDate`
    /// and `CreatedById` default to now and the org's user. Returns the replay id.
    pub fn publish_event(
        &self,
        topic: &str,
        fields: Map<String, Value>,
    ) -> Result<Vec<u8>, SimError> {
        let name = topic.strip_prefix("/event/").unwrap_or(topic);
        let event = lock(&self.shared.org)
            .build_platform_event(name, &fields, &self.shared.config.user_id)
            .ok_or_else(|| SimError::UnknownTopic(topic.to_owned()))??;
        let seq = self.shared.append_platform_event(name, event);
        Ok(lock(&self.shared.bus).id_of(seq))
    }

    /// Adds a nullable field (`avro_type`: a primitive type name such as `"string"`, or
    /// `["null", "string"]`; `"datetime"`/`"date"` for a Salesforce datetime/date, an epoch-ms
    /// `long` in events) to an object or platform event; returns the new schema id. Later events
    /// use the new schema; stored events keep theirs.
    pub fn add_field(
        &self,
        object: &str,
        name: &str,
        avro_type: Value,
    ) -> Result<String, SimError> {
        let object = object.strip_prefix("/event/").unwrap_or(object);
        lock(&self.shared.org).add_field(object, name, &avro_type)
    }

    /// A record's current fields (including `Id`, system fields and `IsDeleted`).
    pub fn record(&self, object: &str, id: &str) -> Option<Map<String, Value>> {
        lock(&self.shared.org).record(object, id)
    }

    /// Number of retained events on a channel (0 for unknown channels).
    pub fn event_count(&self, channel: &str) -> usize {
        match self.shared.resolve_channel(channel) {
            Some(c) => lock(&self.shared.bus).count(&c),
            None => 0,
        }
    }

    /// Drops every event appended before `cutoff` (as if the retention window had passed).
    pub fn purge_events_before(&self, cutoff: SystemTime) {
        lock(&self.shared.bus).purge_before(cutoff);
    }

    /// Issues an access token directly (as the OAuth endpoint's password grant would: acting as
    /// `user_id`).
    pub fn issue_access_token(&self) -> String {
        self.shared.issue_token(&self.shared.config.user_id)
    }

    /// Every access token issued so far and not revoked (tests grep outputs for them).
    pub fn issued_tokens(&self) -> Vec<String> {
        lock(&self.shared.tokens).keys().cloned().collect()
    }

    /// The private key (PKCS#8 PEM) for JWT bearer logins: [`jwt::DEMO_PRIVATE_KEY_PEM`] when the
    /// org runs with the demo certificate, `None` for a certificate of the caller's own.
    pub fn jwt_private_key_pem(&self) -> Option<&'static str> {
        (self.shared.config.jwt_certificate_pem.trim() == jwt::DEMO_CERTIFICATE_PEM.trim())
            .then_some(jwt::DEMO_PRIVATE_KEY_PEM)
    }

    /// The integration user's username (`integration@<domain>`), a valid JWT `sub` besides
    /// [`SimConfig::username`].
    pub fn integration_username(&self) -> String {
        jwt::integration_username(&self.shared.config)
    }

    /// Live records of `object` (committed state, epoch-ms values, with `Id`, system fields and
    /// `IsDeleted`), in Id order; empty for an unknown object.
    pub fn records(&self, object: &str) -> Vec<Map<String, Value>> {
        lock(&self.shared.org).live_records(None, object)
    }

    /// The live record of `object` whose External Id field `field` holds `value`
    /// (case-insensitively, as Salesforce matches unique External Ids).
    pub fn find_by_external_id(
        &self,
        object: &str,
        field: &str,
        value: &str,
    ) -> Option<Map<String, Value>> {
        let org = lock(&self.shared.org);
        let id = org.find_by_external_id(None, object, field, value)?;
        org.record(object, &id)
    }

    /// Runs a SOQL query of the supported subset (see [`soql`]) on the committed state; rows
    /// carry the selected fields in epoch-ms shape.
    pub fn query(&self, soql: &str) -> Result<Vec<Map<String, Value>>, SimError> {
        let org = lock(&self.shared.org);
        let query = soql::Query::parse(soql, &org)?;
        Ok(query
            .run(&org, None)
            .into_iter()
            .map(|rec| query.select(&org, &rec))
            .collect())
    }

    /// REST API usage: `(used, max)` of the daily allocation, as `Sforce-Limit-Info` reports it.
    pub fn api_usage(&self) -> (u64, u64) {
        let api = lock(&self.shared.api);
        (api.used, api.max)
    }

    /// Stops both servers within `grace`: open Subscribe streams end with `UNAVAILABLE`, idle
    /// connections close, and a request still running after `grace` (a large `/sim/generate`)
    /// is dropped. The org's records and events stay in memory (see `forcebridge sim`'s exit).
    pub async fn stop_servers(&self, grace: std::time::Duration) {
        self.shared.shutdown.cancel();
        let tasks = std::mem::take(&mut *lock(&self.tasks));
        let deadline = tokio::time::Instant::now() + grace;
        for mut task in tasks {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
            }
        }
    }

    /// Stops both servers (open Subscribe streams end with `UNAVAILABLE`).
    pub async fn shutdown(self) {
        self.shared.shutdown.cancel();
        let tasks = std::mem::take(&mut *lock(&self.tasks));
        for t in tasks {
            let _ = t.await;
        }
    }
}

/// Changes committed together: one `transactionKey`, `sequenceNumber` 1.., identical changes to
/// several records of one object merged into one event.
#[derive(Debug)]
pub struct Transaction {
    org: SimOrg,
    ops: Vec<Op>,
}

impl Transaction {
    /// Queues a create; returns the Id the record will have.
    pub fn create(&mut self, object: &str, fields: Map<String, Value>) -> Result<String, SimError> {
        let id = {
            let mut org = lock(&self.org.shared.org);
            org.validate_fields(object, &fields)?;
            org.reserve_id(object)?
        };
        self.ops.push(Op::Create {
            object: object.to_owned(),
            id: id.clone(),
            fields,
        });
        Ok(id)
    }

    /// Queues an update (fields are checked now, the record at commit).
    pub fn update(
        &mut self,
        object: &str,
        id: &str,
        fields: Map<String, Value>,
    ) -> Result<(), SimError> {
        lock(&self.org.shared.org).validate_fields(object, &fields)?;
        self.ops.push(Op::Update {
            object: object.to_owned(),
            id: id.to_owned(),
            fields,
        });
        Ok(())
    }

    /// Queues a delete.
    pub fn delete(&mut self, object: &str, id: &str) -> Result<(), SimError> {
        self.check_object(object)?;
        self.ops.push(Op::Delete {
            object: object.to_owned(),
            id: id.to_owned(),
        });
        Ok(())
    }

    /// Queues an undelete.
    pub fn undelete(&mut self, object: &str, id: &str) -> Result<(), SimError> {
        self.check_object(object)?;
        self.ops.push(Op::Undelete {
            object: object.to_owned(),
            id: id.to_owned(),
        });
        Ok(())
    }

    fn check_object(&self, object: &str) -> Result<(), SimError> {
        if lock(&self.org.shared.org).has_object(object) {
            Ok(())
        } else {
            Err(SimError::UnknownObject(object.to_owned()))
        }
    }

    /// Applies all queued changes atomically and emits their events.
    pub fn commit(self) -> Result<(), SimError> {
        self.org.run(&self.ops)
    }
}
