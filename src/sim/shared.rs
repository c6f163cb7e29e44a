//! The state shared by the [`SimOrg`](super::SimOrg) handle and both servers ([`Shared`]):
//! the org, the event bus, issued tokens, API accounting and fault knobs; and what every writer
//! goes through: a committed transaction's change events appended to the bus (gap and overflow
//! events included, see `gap`), platform events, channel resolution, token issue and lookup,
//! and bulk generation of records.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::SystemTime;

use rand::Rng as _;
use serde_json::{Map, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::bus::{Bus, Channel, Source};
use super::config::SimConfig;
use super::error::SimError;
use super::gap;
use super::grpc::stream_faults::StreamFaults;
use super::org::{self, Change, CommitContext, Op, Org};
use super::rest::bulk_jobs::BulkJobs;
use super::rest::cursors::Cursors;
use super::rest::limits::ApiState;
use super::util::{lock, org_now};
use crate::salesforce::proto::ProducerEvent;

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
    pub stream_faults: StreamFaults,
    pub instance_url: String,
    pub pubsub_endpoint: String,
    /// [`SimConfig::jwt_certificate_pem`], parsed.
    pub jwt_certificate: rustls_pki_types::CertificateDer<'static>,
    pub shutdown: CancellationToken,
    /// Records whose changes are published as gap events ([`SimOrg::emit_gaps_for`]).
    pub gap_records: Mutex<HashSet<String>>,
    /// Open query cursors (`nextRecordsUrl`), see `rest`.
    pub cursors: Mutex<Cursors>,
    /// Bulk API 2.0 query jobs (see `rest::bulk`).
    pub bulk: Mutex<BulkJobs>,
    /// Token endpoint faults queued, and the logins served ([`SimOrg::fail_next_logins`]).
    pub logins: super::login_faults::LoginFaults,
    /// Managed event subscriptions and their commits (see `managed`).
    pub managed: Mutex<super::managed::ManagedSubscriptions>,
    /// The records each user last wrote through REST (sObject Basic Information's
    /// `recentItems`).
    pub recent: Mutex<super::rest::recent::RecentItems>,
}

impl Shared {
    /// Commits `ops` as one transaction and publishes its change events.
    pub fn apply(&self, ops: &[Op], origin: String, user: &str) -> Result<(), SimError> {
        if ops.is_empty() {
            return Ok(());
        }
        let mut org = lock(&self.org);
        let changes = org.commit(ops, user, org_now())?;
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
        let now = org_now();
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
            timestamp: org_now(),
            commit_number: org.next_commit_number(),
            transaction_key: uuid::Uuid::new_v4().to_string(),
        };
        let event = gap::header_only_event(&org, object, ids, symbol, &ctx, 1)?;
        let seq = self.append_entity_events(vec![event]);
        Ok(lock(&self.bus).id_of(seq))
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
        self.resolve_channel_in(&lock(&self.org), topic)
    }

    /// [`Shared::resolve_channel`] with the org already locked.
    pub fn resolve_channel_in(&self, org: &super::org::Org, topic: &str) -> Option<Channel> {
        if let Some(channel) = super::replay::replayed_channel(&self.config, topic) {
            return Some(channel);
        }
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
