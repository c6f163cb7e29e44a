//! The simulated Salesforce org: a product feature for demos, local development and users' CI.
//!
//! Contract: [`SimOrg::start`] binds two servers on loopback — the Pub/Sub API (gRPC, the real
//! `eventbus.v1` proto, HTTP/2) and the org's instance/login URL (HTTP/1.1: OAuth token
//! and userinfo endpoints, the REST API a write-back sink uses — sObject rows and rows by
//! External Id, sObject Collections, Composite, SOQL query, limits — and `/sim/*` endpoints).
//! Record changes made through the Rust API or REST emit Change Data Capture events exactly as
//! the Pub/Sub API delivers them (Avro body, bitmap-encoded header fields, transactions, merged
//! multi-record events; REST changes carry `changeOrigin`
//! `com/salesforce/api/rest/{ver};client=<tag>` and the token's user as `commitUser`); platform
//! events can be published through the API or the `Publish` RPC. Events live in a log with a
//! retention window and are served with the documented flow control, replay, keepalive and error
//! semantics (error codes in the `error-code` trailer).
//!
//! Transport: plaintext (`http://`) by default; with [`SimConfig::tls`] both servers speak TLS
//! (`https://`) with that identity, e.g. one of a generated [`tls::TestCa`].
//!
//! Users: tokens of the `password` grant act as [`SimConfig::user_id`], those of the
//! `client_credentials` grant as [`SimConfig::integration_user_id`] (the connected app's "Run As"
//! user); Rust-API changes are made as `user_id`.
//!
//! Fault knobs (Rust API, and `POST /sim/faults` for `forcebridge sim`):
//! [`SimOrg::set_rest_latency`], [`SimOrg::fail_next_requests`], [`SimOrg::lock_rows`],
//! [`SimOrg::add_validation_rule`], [`SimOrg::set_api_usage`]/[`SimOrg::set_api_limit`]; for the
//! streams [`SimOrg::reset_streams`], [`SimOrg::revoke_tokens`], [`SimOrg::inject_raw_event`],
//! [`SimOrg::reset_stream_every`], [`SimOrg::refuse_subscriptions_for`],
//! [`SimOrg::silence_streams`] (and a stream ends when its token expires); gap and overflow
//! events ([`gap`]) [`SimOrg::emit_gap`], [`SimOrg::emit_overflow`], [`SimOrg::emit_gaps_for`]
//! and [`SimConfig::overflow_threshold`].
//!
//! Files: `catalog` (schemas and ids), `ids` (record Ids), `bitmap` (header bitmaps), `org`
//! (records, rules, transactions → events), `bus` (log, channels, replay, retention), `grpc`
//! (Pub/Sub service), `http` (server, OAuth, `/sim/*`), `rest` (REST routing, sObject rows,
//! query), `collections` (sObject Collections), `composite` (Composite), `soql` (the query
//! subset), `limits` (API usage, refusals), `tls` (test CA, TLS listener).
//!
//! Known differences from a real org: compound fields (addresses, Contact `Name`) are read and
//! written nested, as change events carry them, rather than as Salesforce's flat REST fields
//! (`BillingCity`, `LastName`); only the SOQL subset of [`soql`] is understood; Composite
//! subrequests always run in order (`collateSubrequests` is ignored).

pub mod avro_out;
pub mod bitmap;
pub mod bus;
pub mod catalog;
mod cli;
mod collections;
mod composite;
pub mod gap;
mod grpc;
mod http;
pub mod ids;
pub mod jwt;
mod limits;
pub mod org;
mod rest;
#[cfg(test)]
mod rest_tests;
pub mod soql;
#[cfg(test)]
mod tests;
pub mod tls;

pub use cli::{SimArgs, run_cli};
pub use gap::GapKind;
pub use grpc::StreamFaultCounts;
pub use limits::RestFault;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng as _;
use serde_json::{Map, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use self::bus::{Bus, Channel, Source};
use self::limits::ApiState;
use self::org::{Change, CommitContext, Op, Org, ValidationRule};
use crate::salesforce::proto::ProducerEvent;

/// REST API version the simulator reports in `changeOrigin` for Rust-API changes.
pub const API_VERSION: &str = "62.0";

/// Errors of the simulated org.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The object is not a CDC-enabled sObject (or platform event) of this org.
    #[error("unknown object {0}")]
    UnknownObject(String),
    /// The field does not exist on the object's current schema.
    #[error("no such field {field} on {object}")]
    UnknownField {
        /// Object API name.
        object: String,
        /// Field name (`Parent.Child` for nested fields).
        field: String,
    },
    /// The field is maintained by the org.
    #[error("field {field} on {object} is not writable")]
    ReadOnlyField {
        /// Object API name.
        object: String,
        /// Field name.
        field: String,
    },
    /// The value does not fit the field's type.
    #[error("invalid value for {object}.{field}: {reason}")]
    InvalidValue {
        /// Object API name.
        object: String,
        /// Field name.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// No record with that Id.
    #[error("{object} record {id} not found")]
    RecordNotFound {
        /// Object API name.
        object: String,
        /// Record Id as given.
        id: String,
    },
    /// The record is in the recycle bin.
    #[error("record {0} is deleted")]
    EntityIsDeleted(String),
    /// Undelete of a record that is not deleted.
    #[error("record {0} is not in the recycle bin")]
    NotDeleted(String),
    /// A create reused an existing Id.
    #[error("duplicate record id {0}")]
    DuplicateId(String),
    /// Not a well-formed Id of a record of the object (`MALFORMED_ID`).
    #[error("{object} ID: id value of incorrect type: {id}")]
    MalformedId {
        /// Object API name.
        object: String,
        /// The Id as given.
        id: String,
    },
    /// A required field is missing or blank (`REQUIRED_FIELD_MISSING`).
    #[error("Required fields are missing: [{}]", fields.join(", "))]
    RequiredFieldMissing {
        /// Object API name.
        object: String,
        /// The missing fields as Salesforce names them (`Name`, `LastName`).
        fields: Vec<String>,
    },
    /// A unique field's value is held by another live record (`DUPLICATE_VALUE`).
    #[error("duplicate value found: {field} duplicates value on record with id: {existing}")]
    DuplicateValue {
        /// Object API name.
        object: String,
        /// The unique field.
        field: String,
        /// Id of the record holding the value.
        existing: String,
    },
    /// A validation rule refused the record (`FIELD_CUSTOM_VALIDATION_EXCEPTION`).
    #[error("{message}")]
    ValidationFailed {
        /// Object API name.
        object: String,
        /// The rule's field.
        field: String,
        /// The rule's message.
        message: String,
    },
    /// Injected by [`SimOrg::lock_rows`] (`UNABLE_TO_LOCK_ROW`).
    #[error("unable to obtain exclusive access to this record or 1 records: {0}")]
    UnableToLockRow(String),
    /// An upsert named a field that is not an External Id field.
    #[error("{field} is not an External Id field of {object}")]
    NotExternalId {
        /// Object API name.
        object: String,
        /// Field name.
        field: String,
    },
    /// A SOQL query was refused.
    #[error(transparent)]
    Query(#[from] soql::QueryError),
    /// Not a channel/topic of this org.
    #[error("unknown topic {0}")]
    UnknownTopic(String),
    /// A bundled or derived schema is unusable.
    #[error("schema error: {0}")]
    Schema(String),
    /// `add_field` refused.
    #[error("invalid schema change: {0}")]
    InvalidSchemaChange(String),
    /// Avro encoding failed.
    #[error("avro encoding failed: {0}")]
    Encode(String),
    /// A listener could not be bound.
    #[error("cannot bind {addr}")]
    Bind {
        /// Address asked for.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// `forcebridge sim --write-jwt-key` could not write the key file.
    #[error("cannot write the JWT private key to {path}")]
    WriteJwtKey {
        /// The file.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// [`SimConfig::jwt_certificate_pem`] is not a PEM X.509 certificate.
    #[error("SimConfig::jwt_certificate_pem: {0}")]
    JwtCertificate(String),
    /// [`SimConfig::tls`] is unusable, or a test CA could not be generated.
    #[error(transparent)]
    Tls(#[from] tls::SimTlsError),
    /// The test CA certificate could not be written (`forcebridge sim --tls-ca`).
    #[error("cannot write the test CA certificate to {path}: {source}")]
    WriteCa {
        /// The file.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// Configuration of a simulated org.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// 18-character org Id (`00D…`), also the `tenantid` the Pub/Sub API expects.
    pub org_id: String,
    /// 18-character Id of the org's user (`005…`): the password grant's user and the user of
    /// Rust-API changes (`commitUser`, `CreatedById`, …).
    pub user_id: String,
    /// 18-character Id of the integration user: the connected app's "Run As" user, whom tokens
    /// of the `client_credentials` grant act as.
    pub integration_user_id: String,
    /// Connected app consumer key.
    pub client_id: String,
    /// Connected app consumer secret.
    pub client_secret: String,
    /// Username for the password grant.
    pub username: String,
    /// Password for the password grant (sent as password + security token).
    pub password: String,
    /// Security token appended to the password.
    pub security_token: String,
    /// The connected app's certificate (PEM X.509), whose key must sign JWT bearer assertions;
    /// default [`jwt::DEMO_CERTIFICATE_PEM`] (private key: [`jwt::DEMO_PRIVATE_KEY_PEM`]).
    pub jwt_certificate_pem: String,
    /// Empty `FetchResponse` after this long without sending anything (Salesforce: 270 s).
    pub keepalive_interval: Duration,
    /// Close a Subscribe stream when no credits are pending and no FetchRequest came for this
    /// long (Salesforce: 60 s).
    pub idle_timeout: Duration,
    /// Event retention window (Salesforce: 72 h).
    pub retention: Duration,
    /// Lifetime of issued access tokens.
    pub token_ttl: Duration,
    /// Custom channels (`/data/Name__chn`) → member entities.
    pub custom_channels: BTreeMap<String, Vec<String>>,
    /// Daily API request allocation (`DailyApiRequests.Max`; Enterprise Edition: 100,000 +
    /// per-licence adders).
    pub daily_api_requests: u64,
    /// Changes per transaction that produce change events; beyond it, one `GAP_OVERFLOW` event
    /// per entity type (Salesforce: 100,000). See [`gap`].
    pub overflow_threshold: usize,
    /// Records per SOQL query page; more rows are served through `nextRecordsUrl` (Salesforce's
    /// default batch size: 2,000).
    pub query_batch_size: usize,
    /// Serve both sides over TLS with this identity (`https://` URLs); plaintext when `None`.
    pub tls: Option<tls::SimTls>,
    /// Simulated latency added to every REST request under `/services/data` (one whole
    /// `/composite` call is one request); changed later by [`SimOrg::set_rest_latency`].
    pub rest_latency: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            org_id: ids::fixed("00D5S0000000SIM"),
            user_id: ids::fixed("0055S0000000SIM"),
            integration_user_id: ids::fixed("0055S0000000INT"),
            client_id: "3MVG9SIM.forcebridge.demo.consumer.key".into(),
            client_secret: "SIM0123456789SECRET".into(),
            username: "demo@forcebridge.sim".into(),
            password: "forcebridge-demo".into(),
            security_token: "SIMTOKEN42".into(),
            jwt_certificate_pem: jwt::DEMO_CERTIFICATE_PEM.into(),
            keepalive_interval: Duration::from_secs(270),
            idle_timeout: Duration::from_secs(60),
            retention: Duration::from_secs(72 * 3600),
            token_ttl: Duration::from_secs(2 * 3600),
            custom_channels: BTreeMap::from([(
                "/data/Sales__chn".to_owned(),
                vec!["Account".to_owned(), "Contact".to_owned()],
            )]),
            daily_api_requests: 100_000,
            overflow_threshold: 100_000,
            query_batch_size: 2_000,
            tls: None,
            rest_latency: Duration::ZERO,
        }
    }
}

/// An issued access token.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub user_id: String,
    pub expires: tokio::time::Instant,
}

/// State shared by the API handle and both servers.
pub(crate) struct Shared {
    pub config: SimConfig,
    pub org: Mutex<Org>,
    pub bus: Mutex<Bus>,
    /// Sequence number of the newest event; subscribers wait on it.
    pub tip: watch::Sender<u64>,
    pub tokens: Mutex<HashMap<String, Session>>,
    /// API request accounting and REST fault knobs.
    pub api: Mutex<ApiState>,
    /// Bumped by [`SimOrg::reset_streams`]; every open Subscribe stream ends when it changes.
    pub resets: watch::Sender<u64>,
    /// Subscribe stream fault knobs (see the knobs on [`SimOrg`]).
    pub stream_faults: grpc::StreamFaults,
    pub instance_url: String,
    pub pubsub_endpoint: String,
    /// [`SimConfig::jwt_certificate_pem`], parsed.
    pub jwt_certificate: rustls_pki_types::CertificateDer<'static>,
    pub shutdown: CancellationToken,
    /// Records whose changes are published as gap events ([`SimOrg::emit_gaps_for`]).
    pub gap_records: Mutex<HashSet<String>>,
    /// Open query cursors (`nextRecordsUrl`), see `rest`.
    pub cursors: Mutex<rest::Cursors>,
}

/// Locks a mutex, ignoring poisoning (the data stays consistent: every mutation is applied
/// under the lock from validated input and cannot panic half-way).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Milliseconds since the epoch.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `changeOrigin` for a REST change with an optional client tag.
pub(crate) fn rest_origin(version: &str, tag: Option<&str>) -> String {
    match tag {
        Some(tag) => format!("com/salesforce/api/rest/{version};client={tag}"),
        None => format!("com/salesforce/api/rest/{version}"),
    }
}

impl Shared {
    /// Commits `ops` as one transaction and publishes its change events.
    pub fn apply(&self, ops: &[Op], origin: String, user: &str) -> Result<(), SimError> {
        if ops.is_empty() {
            return Ok(());
        }
        let mut org = lock(&self.org);
        let changes = org.commit(ops, user, now_ms())?;
        self.publish(&mut org, changes, origin, user)
    }

    /// Publishes the change events of one committed transaction (nothing when `changes` is
    /// empty). `origin` is the `changeOrigin` of changes that carry none of their own. The
    /// caller holds the org lock, so commit numbers follow the log order.
    pub fn publish(
        &self,
        org: &mut Org,
        changes: Vec<Change>,
        origin: String,
        user: &str,
    ) -> Result<(), SimError> {
        if changes.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let ctx = CommitContext {
            origin,
            user: user.to_owned(),
            timestamp: now,
            commit_number: org.next_commit_number(),
            transaction_key: uuid::Uuid::new_v4().to_string(),
        };
        let events = {
            let gap_records = lock(&self.gap_records);
            gap::transaction_events(
                org,
                changes,
                &ctx,
                self.config.overflow_threshold,
                &gap_records,
            )?
        };
        self.append_entity_events(events);
        Ok(())
    }

    /// Publishes one header-only event (a transaction of its own, made by the org's user);
    /// returns its replay id.
    pub fn emit_header_only(
        &self,
        object: &str,
        ids: Vec<String>,
        symbol: &str,
        origin: String,
    ) -> Result<Vec<u8>, SimError> {
        let mut org = lock(&self.org);
        let ctx = CommitContext {
            origin,
            user: self.config.user_id.clone(),
            timestamp: now_ms(),
            commit_number: org.next_commit_number(),
            transaction_key: uuid::Uuid::new_v4().to_string(),
        };
        let event = gap::header_only_event(&org, object, ids, symbol, &ctx, 1)?;
        Ok(bus::replay_id(self.append_entity_events(vec![event])))
    }

    /// Appends change events to the bus and wakes the subscribers; returns the newest sequence
    /// number.
    pub fn append_entity_events(&self, events: Vec<org::BuiltEvent>) -> u64 {
        let at = SystemTime::now();
        let tip = {
            let mut bus = lock(&self.bus);
            bus.expire(self.config.retention);
            for e in events {
                bus.append(Source::Entity(e.entity), e.event, at);
            }
            bus.tip()
        };
        self.tip.send_replace(tip);
        tip
    }

    /// Appends a platform event; returns its sequence number.
    pub fn append_platform_event(&self, name: &str, event: ProducerEvent) -> u64 {
        let seq = {
            let mut bus = lock(&self.bus);
            bus.expire(self.config.retention);
            bus.append(
                Source::PlatformEvent(name.to_owned()),
                event,
                SystemTime::now(),
            )
        };
        self.tip.send_replace(seq);
        seq
    }

    /// The channel behind a topic name, if this org has it.
    pub fn resolve_channel(&self, topic: &str) -> Option<Channel> {
        let org = lock(&self.org);
        if topic == "/data/ChangeEvents" {
            return Some(Channel::AllChanges);
        }
        if let Some(members) = self.config.custom_channels.iter().find_map(|(name, m)| {
            let full = if name.starts_with('/') {
                name.clone()
            } else {
                format!("/data/{name}")
            };
            (full == topic).then_some(m)
        }) {
            return Some(Channel::Custom(members.clone()));
        }
        if let Some(entity) = topic
            .strip_prefix("/data/")
            .and_then(|t| t.strip_suffix("ChangeEvent"))
        {
            return org
                .has_object(entity)
                .then(|| Channel::Entity(entity.to_owned()));
        }
        if let Some(name) = topic.strip_prefix("/event/") {
            return org
                .platform_event_schema(name)
                .map(|_| Channel::PlatformEvent(name.to_owned()));
        }
        None
    }

    /// Issues a new access token (`<orgId>!<random>`) acting as `user_id`.
    pub fn issue_token(&self, user_id: &str) -> String {
        let random: String = rand::rng()
            .sample_iter(rand::distr::Alphanumeric)
            .take(96)
            .map(char::from)
            .collect();
        let token = format!("{}!AQ{random}", self.config.org_id);
        lock(&self.tokens).insert(
            token.clone(),
            Session {
                user_id: user_id.to_owned(),
                expires: tokio::time::Instant::now() + self.config.token_ttl,
            },
        );
        token
    }

    /// The session of a valid, unexpired token.
    pub fn session(&self, token: &str) -> Option<Session> {
        let tokens = lock(&self.tokens);
        let s = tokens.get(token)?;
        (tokio::time::Instant::now() < s.expires).then(|| s.clone())
    }

    /// Bulk creates with generated values, in transactions of up to 200 records.
    pub fn generate(
        &self,
        object: &str,
        count: usize,
        origin: &str,
        user: &str,
    ) -> Result<Vec<String>, SimError> {
        if !lock(&self.org).has_object(object) {
            return Err(SimError::UnknownObject(object.to_owned()));
        }
        let mut ids = Vec::with_capacity(count);
        let mut remaining = count;
        while remaining > 0 {
            let n = remaining.min(200);
            let mut ops = Vec::with_capacity(n);
            {
                let mut org = lock(&self.org);
                for _ in 0..n {
                    let id = org.reserve_id(object)?;
                    let seed = rand::rng().random_range(0..1_000_000_000u64);
                    ids.push(id.clone());
                    ops.push(Op::Create {
                        object: object.to_owned(),
                        id,
                        fields: self.fake_fields(object, seed),
                    });
                }
            }
            self.apply(&ops, origin.to_owned(), user)?;
            remaining -= n;
        }
        Ok(ids)
    }

    /// Fake but plausible field values for record number `n` of `object`.
    fn fake_fields(&self, object: &str, n: u64) -> Map<String, Value> {
        const CITIES: &[(&str, &str, &str)] = &[
            ("San Francisco", "CA", "US"),
            ("Paris", "", "FR"),
            ("Berlin", "", "DE"),
            ("Austin", "TX", "US"),
            ("Tokyo", "", "JP"),
        ];
        const INDUSTRIES: &[&str] = &["Technology", "Banking", "Retail", "Energy", "Media"];
        let (city, state, country) = CITIES[(n % CITIES.len() as u64) as usize];
        let mut address = serde_json::json!({"Street": format!("{n} Market Street"), "City": city, "CountryCode": country});
        if !state.is_empty() {
            address["StateCode"] = state.into();
        }
        let value = match object {
            "Account" => serde_json::json!({
                "Name": format!("Sim Account {n}"),
                "Type": "Customer - Direct",
                "Industry": INDUSTRIES[(n % INDUSTRIES.len() as u64) as usize],
                "Phone": format!("+1 415 555 {:04}", n % 10_000),
                "NumberOfEmployees": (n % 5000) as i64 + 1,
                "AnnualRevenue": (n % 1000) as f64 * 10_000.0,
                "BillingAddress": address,
                "AccountSource": "Web",
            }),
            "Contact" => serde_json::json!({
                "Name": {"FirstName": "Sim", "LastName": format!("Contact {n}")},
                "Email": format!("contact{n}@example.com"),
                "Phone": format!("+1 415 555 {:04}", n % 10_000),
                "Title": "Buyer",
                "MailingAddress": address,
            }),
            _ => serde_json::json!({}),
        };
        match value {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }
}

/// Handle to a running simulated org (cheap to clone).
#[derive(Clone)]
pub struct SimOrg {
    shared: Arc<Shared>,
    client_tag: Option<Arc<str>>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
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
    /// Starts the org with both servers on `127.0.0.1:0`.
    pub async fn start(config: SimConfig) -> Result<SimOrg, SimError> {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Self::start_on(config, any, any).await
    }

    /// Starts the org with the gRPC and HTTP servers on the given addresses.
    pub async fn start_on(
        config: SimConfig,
        grpc: SocketAddr,
        http: SocketAddr,
    ) -> Result<SimOrg, SimError> {
        let jwt_certificate = jwt::parse_certificate(&config.jwt_certificate_pem)
            .map_err(SimError::JwtCertificate)?;
        let bind = |addr: SocketAddr| async move {
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| SimError::Bind { addr, source })
        };
        let grpc_listener = bind(grpc).await?;
        let http_listener = bind(http).await?;
        let local = |l: &tokio::net::TcpListener, addr| {
            l.local_addr()
                .map_err(|source| SimError::Bind { addr, source })
        };
        let grpc_addr = local(&grpc_listener, grpc)?;
        let http_addr = local(&http_listener, http)?;
        // Checked before anything is spawned, so a bad identity fails the start.
        let http_tls = config.tls.as_ref().map(|t| t.rustls_config()).transpose()?;
        let grpc_tls = config.tls.as_ref().map(tls::SimTls::grpc_config);
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let mut api = ApiState::new(config.daily_api_requests);
        api.latency = config.rest_latency;
        let shared = Arc::new(Shared {
            api: Mutex::new(api),
            config,
            org: Mutex::new(Org::new()?),
            bus: Mutex::new(Bus::default()),
            tip: watch::Sender::new(0),
            tokens: Mutex::new(HashMap::new()),
            resets: watch::Sender::new(0),
            stream_faults: grpc::StreamFaults::default(),
            instance_url: format!("{scheme}://{http_addr}"),
            pubsub_endpoint: format!("{scheme}://{grpc_addr}"),
            jwt_certificate,
            shutdown: CancellationToken::new(),
            gap_records: Mutex::new(HashSet::new()),
            cursors: Mutex::new(rest::Cursors::default()),
        });
        let http_listener = match http_tls {
            Some(config) => http::Incoming::Tls(
                tls::TlsListener::new(http_listener, config, shared.shutdown.clone())
                    .map_err(|source| SimError::Bind { addr: http, source })?,
            ),
            None => http::Incoming::Plain(http_listener),
        };
        let grpc_task = tokio::spawn(grpc::serve(shared.clone(), grpc_listener, grpc_tls));
        let http_task = tokio::spawn(http::serve(shared.clone(), http_listener));
        tracing::info!(
            instance_url = %shared.instance_url,
            pubsub_endpoint = %shared.pubsub_endpoint,
            org_id = %shared.config.org_id,
            "simulated org started"
        );
        Ok(SimOrg {
            shared,
            client_tag: None,
            tasks: Arc::new(Mutex::new(vec![grpc_task, http_task])),
        })
    }

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

    fn origin(&self) -> String {
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

    /// Publishes a platform event (`Order_Event__e` or `/event/Order_Event__e`); `CreatedDate`
    /// and `CreatedById` default to now and the org's user. Returns the replay id.
    pub fn publish_event(
        &self,
        topic: &str,
        fields: Map<String, Value>,
    ) -> Result<Vec<u8>, SimError> {
        let name = topic.strip_prefix("/event/").unwrap_or(topic);
        let schema = lock(&self.shared.org)
            .platform_event_schema(name)
            .ok_or_else(|| SimError::UnknownTopic(topic.to_owned()))?;
        let mut values = org::normalize_fields(&schema, name, &fields, org::FieldCheck::Event)?;
        values
            .entry("CreatedDate")
            .or_insert_with(|| now_ms().into());
        values
            .entry("CreatedById")
            .or_insert_with(|| self.shared.config.user_id.clone().into());
        let payload = org::encode_body(&schema, None, &values)?;
        let event = ProducerEvent {
            id: uuid::Uuid::new_v4().to_string(),
            schema_id: schema.id.clone(),
            payload: payload.into(),
            headers: Vec::new(),
        };
        let seq = self.shared.append_platform_event(name, event);
        Ok(bus::replay_id(seq))
    }

    /// Fault injection: appends an event with any schema id and payload to a Platform Event
    /// channel, as a corrupt or foreign event would arrive; returns its replay id.
    pub fn inject_raw_event(
        &self,
        topic: &str,
        schema_id: &str,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, SimError> {
        let name = topic.strip_prefix("/event/").unwrap_or(topic);
        if lock(&self.shared.org).platform_event_schema(name).is_none() {
            return Err(SimError::UnknownTopic(topic.to_owned()));
        }
        let event = ProducerEvent {
            id: uuid::Uuid::new_v4().to_string(),
            schema_id: schema_id.to_owned(),
            payload: payload.into(),
            headers: Vec::new(),
        };
        Ok(bus::replay_id(
            self.shared.append_platform_event(name, event),
        ))
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
            .map(|rec| query.select(&rec))
            .collect())
    }

    /// REST API usage: `(used, max)` of the daily allocation, as `Sforce-Limit-Info` reports it.
    pub fn api_usage(&self) -> (u64, u64) {
        let api = lock(&self.shared.api);
        (api.used, api.max)
    }

    /// Sets the REST calls used so far today (e.g. 0 to restore an exhausted allocation).
    pub fn set_api_usage(&self, used: u64) {
        lock(&self.shared.api).used = used;
    }

    /// Sets the daily API request allocation.
    pub fn set_api_limit(&self, max: u64) {
        lock(&self.shared.api).max = max;
    }

    /// Fault injection: every REST response (under `/services/data`) is delayed this long
    /// (`Duration::ZERO` turns it off).
    pub fn set_rest_latency(&self, latency: Duration) {
        lock(&self.shared.api).latency = latency;
    }

    /// Fault injection: the next `n` authenticated REST calls are refused with `fault` (after any
    /// faults queued before), and not counted.
    pub fn fail_next_requests(&self, n: usize, fault: RestFault) {
        lock(&self.shared.api).queue_faults(n, fault);
    }

    /// Fault injection: the next `n` record writes made over REST fail, each on its own record,
    /// with `UNABLE_TO_LOCK_ROW` and are not applied. Rust-API writes are not affected.
    pub fn lock_rows(&self, n: usize) {
        lock(&self.shared.org).set_lock_faults(n);
    }

    /// Adds a validation rule: a create or update (REST or Rust API) leaving `field`
    /// (`Parent.Child` for a compound's part) equal to `value` (null: blank) fails with
    /// `FIELD_CUSTOM_VALIDATION_EXCEPTION`, `message` and fields `[field]`.
    pub fn add_validation_rule(
        &self,
        object: &str,
        field: &str,
        value: Value,
        message: &str,
    ) -> Result<(), SimError> {
        lock(&self.shared.org).add_validation_rule(
            object,
            ValidationRule {
                field: field.to_owned(),
                value,
                message: message.to_owned(),
            },
        )
    }

    /// Publishes a header-only gap event (`GAP_CREATE`, …) of `object` naming `ids` (at least
    /// one), as Salesforce does when it cannot build a change event; returns its replay id. The
    /// records are not touched. See [`gap`].
    pub fn emit_gap(
        &self,
        object: &str,
        ids: &[String],
        kind: GapKind,
    ) -> Result<Vec<u8>, SimError> {
        if ids.is_empty() {
            return Err(SimError::InvalidValue {
                object: object.to_owned(),
                field: "recordIds".into(),
                reason: "a gap event names at least one record".into(),
            });
        }
        self.emit_header_only(object, ids.to_vec(), kind.symbol())
    }

    /// Publishes a `GAP_OVERFLOW` event of `object` (`recordIds = ["000000000000000AAA"]`), as
    /// after a transaction over [`SimConfig::overflow_threshold`]; returns its replay id.
    pub fn emit_overflow(&self, object: &str) -> Result<Vec<u8>, SimError> {
        self.emit_header_only(
            object,
            vec![gap::OVERFLOW_RECORD_ID.to_owned()],
            gap::GAP_OVERFLOW,
        )
    }

    fn emit_header_only(
        &self,
        object: &str,
        ids: Vec<String>,
        symbol: &str,
    ) -> Result<Vec<u8>, SimError> {
        self.shared
            .emit_header_only(object, ids, symbol, self.origin())
    }

    /// Fault injection: from now on, changes to these records are published as gap events
    /// (`GAP_UPDATE`, …) instead of change events, as when an event would exceed 1 MB. Replaces
    /// the previous set; an empty slice turns it off.
    pub fn emit_gaps_for(&self, ids: &[String]) {
        *lock(&self.shared.gap_records) = ids.iter().cloned().collect();
    }

    /// Fault injection: ends every open Subscribe stream with `UNAVAILABLE`
    /// (`service.unavailable`), as an outage or a reset HTTP/2 stream does.
    pub fn reset_streams(&self) {
        self.shared.reset_streams();
    }

    /// Fault injection: revokes every issued access token (as a session timeout or a revoked
    /// connected app does); later calls with them are refused until the client logs in again.
    pub fn revoke_tokens(&self) {
        self.shared.revoke_tokens();
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

/// The stream knobs, shared by [`SimOrg`]'s Rust API and `POST /sim/faults`.
impl Shared {
    fn reset_streams(&self) {
        self.resets.send_modify(|n| *n += 1);
    }

    fn revoke_tokens(&self) {
        lock(&self.tokens).clear();
    }

    fn reset_stream_every(&self, n: u64) {
        self.stream_faults
            .reset_every
            .store(n, std::sync::atomic::Ordering::Relaxed);
    }

    fn refuse_subscriptions_for(&self, duration: Duration) {
        *lock(&self.stream_faults.refuse_until) = Some(tokio::time::Instant::now() + duration);
    }

    fn silence_streams(&self) {
        self.stream_faults.silences.send_modify(|n| *n += 1);
    }
}

/// Stream fault knobs and what the org emitted (for fault and crash tests).
impl SimOrg {
    /// Fault injection: every Subscribe stream ends with `INTERNAL` (`service.unavailable`, as
    /// Salesforce outages show) once it has sent `n` events; 0 turns it off.
    pub fn reset_stream_every(&self, n: u64) {
        self.shared.reset_stream_every(n);
    }

    /// Simulated network round trip between client and org on Subscribe streams: the credits of
    /// each FetchRequest after a stream's first take effect `rtt` after it arrives, as on a real
    /// network where the client's request and the org's next events each cross it once. Events
    /// the client already requested are sent at once (no one-way delay). Zero turns it off.
    pub fn set_stream_rtt(&self, rtt: Duration) {
        self.shared
            .stream_faults
            .rtt_micros
            .store(rtt.as_micros() as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// Fault injection: every `Subscribe` call in the next `duration` is refused with
    /// `UNAVAILABLE` (`service.unavailable`); open streams are not affected.
    pub fn refuse_subscriptions_for(&self, duration: Duration) {
        self.shared.refuse_subscriptions_for(duration);
    }

    /// Fault injection: every open Subscribe stream goes silent — no more events, no keepalives,
    /// requests ignored — without closing, as a dead stream behind a proxy does. New streams
    /// are served normally.
    pub fn silence_streams(&self) {
        self.shared.silence_streams();
    }

    /// How often each stream fault (and token expiry) ended or refused a stream.
    pub fn stream_fault_counts(&self) -> StreamFaultCounts {
        self.shared.stream_faults.counts()
    }

    /// Replay ids of the retained events of `channel`, oldest first (empty for an unknown
    /// channel).
    pub fn replay_ids(&self, channel: &str) -> Vec<Vec<u8>> {
        match self.shared.resolve_channel(channel) {
            Some(c) => lock(&self.shared.bus).replay_ids(&c),
            None => Vec::new(),
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
