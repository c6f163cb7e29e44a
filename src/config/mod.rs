//! The forcebridge configuration: one YAML file.
//!
//! Contract:
//! * `${NAME}` anywhere in the file is replaced by the environment variable `NAME` before parsing
//!   (`$${` escapes a literal `${`); an unset variable is an error naming it and its line.
//! * Unknown keys are errors (`deny_unknown_fields`); every error names the offending key path
//!   (e.g. `source.channels[1].name`) and, where serde knows it, the line.
//! * [`Config::validate`] checks cross-field rules before anything starts.
//! * Secrets are [`SecretString`]s: never printed by `Debug`, and the config is not `Serialize`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;

use serde::Deserialize;

/// Errors while loading or validating the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// `${NAME}` names a variable that is not set.
    #[error("line {line}: environment variable `{name}` is not set (referenced as ${{{name}}})")]
    MissingEnv { name: String, line: usize },
    /// `${` without a closing `}`.
    #[error("line {line}: unterminated `${{` (write `$${{` for a literal `${{`)")]
    UnterminatedEnv { line: usize },
    /// YAML did not match the schema.
    #[error("{location}`{key}`: {message}")]
    Parse {
        key: String,
        location: String,
        message: String,
    },
    /// A value is out of range or inconsistent with another.
    #[error("`{key}`: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// The whole configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Name of this connector: prefixes checkpoint keys and is the default client tag.
    #[serde(default = "default_name")]
    pub name: String,
    /// How to reach and log in to the Salesforce org.
    pub salesforce: SalesforceConfig,
    /// Salesforce → Kafka (optional: a deployment may run only the sink).
    #[serde(default)]
    pub source: Option<SourceConfig>,
    /// Kafka → Salesforce (optional).
    #[serde(default)]
    pub sink: Option<SinkConfig>,
    /// The Kafka cluster.
    pub kafka: KafkaConfig,
    /// How long a graceful shutdown (SIGTERM) may take to flush Kafka, write checkpoints and
    /// commit offsets. Keep the pod's `terminationGracePeriodSeconds` above it.
    #[serde(default = "default_drain_timeout", with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// The operations HTTP server (`/metrics`, `/healthz`, `/readyz`); off when absent.
    #[serde(default)]
    pub ops: Option<OpsConfig>,
}

/// `ops`: the operations HTTP server (see `crate::ops`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpsConfig {
    /// Address to listen on, e.g. `0.0.0.0:9464` (port 0: any free port, logged).
    pub listen: std::net::SocketAddr,
    /// How long `/readyz` waits for Kafka to answer a metadata request.
    #[serde(default = "default_kafka_probe_timeout", with = "humantime_serde")]
    pub kafka_probe_timeout: Duration,
}

const fn default_kafka_probe_timeout() -> Duration {
    Duration::from_secs(2)
}

impl OpsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(Duration::from_millis(100)..=Duration::from_secs(30))
            .contains(&self.kafka_probe_timeout)
        {
            return Err(invalid(
                "ops.kafka_probe_timeout",
                "must be between 100ms and 30s",
            ));
        }
        Ok(())
    }
}

const fn default_drain_timeout() -> Duration {
    Duration::from_secs(20)
}

fn default_name() -> String {
    "forcebridge".to_owned()
}

/// Where the org is and how to log in.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SalesforceConfig {
    /// OAuth login URL: `https://login.salesforce.com`, `https://test.salesforce.com` or the org's
    /// My Domain URL (required for the client credentials flow).
    #[serde(default = "default_login_url")]
    pub login_url: String,
    /// Pub/Sub API endpoint.
    #[serde(default = "default_pubsub_endpoint")]
    pub pubsub_endpoint: String,
    /// REST API version used for REST calls, e.g. `62.0`.
    #[serde(default = "default_api_version")]
    pub api_version: String,
    /// Allow `http://` endpoints, and only to a loopback host (127.0.0.0/8, `::1`, `localhost`):
    /// a simulated org on this machine. Never for a real org.
    #[serde(default)]
    pub allow_plaintext: bool,
    /// A PEM bundle of CA certificates trusted in addition to the platform's roots, by the gRPC
    /// and the HTTP clients alike (a TLS-inspecting proxy, a private or test CA).
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// Timeout of one HTTP request (login, REST).
    #[serde(default = "default_http_timeout", with = "humantime_serde")]
    pub http_timeout: Duration,
    /// The tag every REST write carries as `Sforce-Call-Options: client=<tag>`; Salesforce
    /// copies it into the CDC `changeOrigin`, which is how the source recognises the sink's own
    /// writes. Defaults to the connector `name`.
    #[serde(default)]
    pub client_tag: Option<String>,
    /// The OAuth flow.
    pub auth: AuthConfig,
}

fn default_login_url() -> String {
    "https://login.salesforce.com".to_owned()
}
fn default_pubsub_endpoint() -> String {
    "https://api.pubsub.salesforce.com:7443".to_owned()
}
fn default_api_version() -> String {
    "62.0".to_owned()
}
const fn default_http_timeout() -> Duration {
    Duration::from_secs(30)
}

/// The OAuth 2.0 flow used to obtain an access token.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthConfig {
    /// OAuth 2.0 client credentials flow (connected app with a run-as user; My Domain login URL).
    ClientCredentials {
        client_id: String,
        client_secret: SecretString,
    },
    /// OAuth 2.0 username-password flow; the password is sent with the security token appended.
    Password {
        client_id: String,
        client_secret: SecretString,
        username: String,
        password: SecretString,
        #[serde(default)]
        security_token: Option<SecretString>,
    },
    /// OAuth 2.0 JWT bearer flow: an RS256 assertion signed with the private key whose
    /// certificate is uploaded to the connected app; the user must be pre-authorized.
    JwtBearer {
        /// The connected app's consumer key (`iss`).
        client_id: String,
        /// The user to act as (`sub`).
        username: String,
        /// `aud`; default `https://test.salesforce.com` for a sandbox `login_url`, else
        /// `https://login.salesforce.com` (see [`crate::salesforce::auth::jwt_audience`]).
        #[serde(default)]
        audience: Option<String>,
        /// A PEM file with the RSA private key (PKCS#8 or PKCS#1). Exactly one of this and
        /// `private_key`.
        #[serde(default)]
        private_key_file: Option<PathBuf>,
        /// The PEM private key itself (e.g. `${FORCEBRIDGE_JWT_KEY}`).
        #[serde(default)]
        private_key: Option<SecretString>,
        /// `exp` is this far ahead (Salesforce accepts at most 3 minutes).
        #[serde(default = "default_assertion_lifetime", with = "humantime_serde")]
        assertion_lifetime: Duration,
    },
    /// A token obtained elsewhere (no refresh possible).
    AccessToken {
        access_token: SecretString,
        instance_url: String,
        /// The org id; taken from `userinfo` when absent.
        #[serde(default)]
        org_id: Option<String>,
    },
}

const fn default_assertion_lifetime() -> Duration {
    crate::salesforce::auth::MAX_ASSERTION_LIFETIME
}

/// Salesforce → Kafka settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// The Pub/Sub channels to subscribe to.
    pub channels: Vec<ChannelConfig>,
    /// Kafka topic per object; `{object}` is the object API name (`Account`, `Order_Event__e`),
    /// `{channel}` the channel name without the leading `/` and with `/` turned into `.`.
    #[serde(default = "default_topic_template")]
    pub topic_template: String,
    /// Flow-control credits per subscription (`num_requested`), 1..=100.
    #[serde(default = "default_batch_size")]
    pub batch_size: u32,
    /// Write a tombstone (null value) after each DELETE, for compacted topics.
    #[serde(default)]
    pub tombstones: bool,
    /// Rebuild a stream that delivered nothing (not even a keepalive) for this long.
    #[serde(default = "default_stream_idle_timeout", with = "humantime_serde")]
    pub stream_idle_timeout: Duration,
    /// What to do when the org rejects a checkpoint's replay id (older than the 72 h retention, or
    /// corrupt): resume from `earliest` (default) or `latest` once, writing a gap marker to the
    /// dead-letter topic, or `fail`.
    #[serde(default)]
    pub replay_rejected: ReplayRejectedPolicy,
    /// How often durable replay ids are written to the checkpoint topic.
    #[serde(default = "default_checkpoint_interval", with = "humantime_serde")]
    pub checkpoint_interval: Duration,
    /// What to do with change events caused by forcebridge's own write-backs.
    #[serde(default)]
    pub echo: EchoConfig,
    /// `at_least_once` (default): records first, then the checkpoint once Kafka acknowledged
    /// them; a crash repeats the records after the last checkpoint. `exactly_once`: each
    /// channel's records and its checkpoint are produced in one Kafka transaction
    /// (`transactional.id` = `<name>/<channel>`, which also fences a second owner of the
    /// channel); consumers reading with `isolation.level=read_committed` see every event once.
    #[serde(default)]
    pub delivery: DeliveryMode,
}

/// The source's delivery guarantee.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryMode {
    /// Records, then the checkpoint after their acknowledgement.
    #[default]
    AtLeastOnce,
    /// Records and checkpoint in one Kafka transaction per checkpoint interval.
    ExactlyOnce,
}

/// Echo suppression: change events caused by the sink's own writes.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EchoConfig {
    /// `drop` (default): not produced; `mark`: produced with the `forcebridge.echo` header and
    /// `"echo": true`; `pass`: produced as any other change.
    #[serde(default)]
    pub mode: EchoMode,
    /// Also treat changes committed by the logged-in (integration) user as echoes, whatever
    /// their `changeOrigin`.
    #[serde(default)]
    pub own_user: bool,
    /// Also treat changes committed by these user Ids as echoes.
    #[serde(default)]
    pub commit_users: Vec<String>,
}

/// What happens to an echo.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EchoMode {
    /// Not produced (the replay id still advances).
    #[default]
    Drop,
    /// Produced, marked.
    Mark,
    /// Produced unmarked.
    Pass,
}

/// Kafka → Salesforce settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Write-back topics (messages in the format of ARCHITECTURE.md, "Write-back messages").
    pub topics: Vec<String>,
    /// Consumer group; defaults to `<name>-sink`.
    #[serde(default)]
    pub group_id: Option<String>,
    /// Per-object settings, by object API name.
    #[serde(default)]
    pub objects: BTreeMap<String, SinkObjectConfig>,
    /// Records per batch (1..=10000). A batch reads its records once (last-write-wins: sObject
    /// Collections retrieves of 2,000 Ids, five per Composite call, so one read call for up to
    /// 10,000 records by Id) and writes them five collections of 200 per call: 10,000 updates
    /// of one object cost 1 + 10 API calls (≈ 909 records per call), 1,000 cost 1 + 1 (500).
    #[serde(default = "default_sink_batch_records")]
    pub batch_records: usize,
    /// How long a partly filled batch waits for more records.
    #[serde(default = "default_sink_linger", with = "humantime_serde")]
    pub linger: Duration,
    /// Batches written concurrently (each is one Composite call at a time).
    #[serde(default = "default_sink_concurrency")]
    pub concurrency: usize,
    /// Skip writes older than the record's current `SystemModstamp` (changed by someone else)
    /// and send them to `conflicts_topic`.
    #[serde(default = "default_true")]
    pub last_write_wins: bool,
    /// Where last-write-wins conflicts go.
    #[serde(default = "default_conflicts_topic")]
    pub conflicts_topic: String,
    /// Where records that cannot be written go; defaults to `kafka.dead_letter_topic`.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// Attempts per record for retryable per-record errors (`UNABLE_TO_LOCK_ROW`, …).
    #[serde(default = "default_sink_max_attempts")]
    pub max_attempts: u32,
    /// First retry delay (full jitter, doubling up to `max_backoff`).
    #[serde(default = "default_sink_initial_backoff", with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// Longest retry delay.
    #[serde(default = "default_sink_max_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Daily API allowance kept in reserve: writing pauses when only this much is left.
    /// A number of calls (`5000`) or a percentage of the daily maximum (`"10%"`).
    #[serde(default)]
    pub api_reserve: ApiReserve,
    /// While paused on the reserve, how often `/limits` is polled (each poll is one API call).
    #[serde(default = "default_limits_poll_interval", with = "humantime_serde")]
    pub limits_poll_interval: Duration,
    /// How often consumer offsets of finished records are committed.
    #[serde(default = "default_checkpoint_interval", with = "humantime_serde")]
    pub commit_interval: Duration,
}

/// Largest `sink.batch_records`: one Composite call of five sObject Collections retrieves of
/// 2,000 Ids reads a whole batch.
pub const MAX_SINK_BATCH_RECORDS: usize = 10_000;

const fn default_sink_batch_records() -> usize {
    MAX_SINK_BATCH_RECORDS
}
const fn default_sink_linger() -> Duration {
    Duration::from_millis(200)
}
const fn default_sink_concurrency() -> usize {
    2
}
const fn default_sink_max_attempts() -> u32 {
    5
}
const fn default_sink_initial_backoff() -> Duration {
    Duration::from_millis(500)
}
const fn default_sink_max_backoff() -> Duration {
    Duration::from_secs(30)
}
const fn default_limits_poll_interval() -> Duration {
    Duration::from_secs(60)
}
fn default_conflicts_topic() -> String {
    "forcebridge.conflicts".to_owned()
}

/// Per-object sink settings.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkObjectConfig {
    /// External Id field used by `upsert` (and by `update`/`delete` without an `id`) when the
    /// message does not name one.
    #[serde(default)]
    pub external_id_field: Option<String>,
    /// Message field name → Salesforce field name.
    #[serde(default)]
    pub field_map: BTreeMap<String, String>,
    /// Message fields never written (after mapping: Salesforce names).
    #[serde(default)]
    pub ignore_fields: Vec<String>,
}

/// How much of the daily allowance the sink leaves to other integrations (`sink.api_reserve`;
/// the REST client's `LimitGuard` keeps it, as `salesforce::rest::Reserve`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ApiReserve {
    /// A number of API calls.
    Calls(u64),
    /// A percentage (0–100) of the org's maximum, rounded up; out-of-range values are clamped.
    Percent(f64),
}

impl ApiReserve {
    /// The reserve in calls for an allowance of `max`.
    pub fn calls(&self, max: u64) -> u64 {
        match *self {
            ApiReserve::Calls(calls) => calls,
            ApiReserve::Percent(percent) => {
                let percent = if percent.is_nan() {
                    0.0
                } else {
                    percent.clamp(0.0, 100.0)
                };
                (max as f64 * percent / 100.0).ceil() as u64
            }
        }
    }
}

impl Default for ApiReserve {
    fn default() -> Self {
        ApiReserve::Percent(10.0)
    }
}

/// `5000` (calls) or `"10%"` (of the daily maximum).
impl<'de> Deserialize<'de> for ApiReserve {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Calls(u64),
            Text(String),
        }
        let fail = || {
            serde::de::Error::custom("expected a number of calls (5000) or a percentage (\"10%\")")
        };
        match Raw::deserialize(d)? {
            Raw::Calls(n) => Ok(ApiReserve::Calls(n)),
            Raw::Text(t) => {
                let t = t.trim();
                match t.strip_suffix('%') {
                    Some(p) => {
                        let p: f64 = p.trim().parse().map_err(|_| fail())?;
                        if !(0.0..100.0).contains(&p) {
                            return Err(serde::de::Error::custom(
                                "a percentage must be at least 0 and below 100",
                            ));
                        }
                        Ok(ApiReserve::Percent(p))
                    }
                    None => t.parse().map(ApiReserve::Calls).map_err(|_| fail()),
                }
            }
        }
    }
}

fn default_topic_template() -> String {
    "salesforce.{object}".to_owned()
}
const fn default_batch_size() -> u32 {
    100
}
const fn default_stream_idle_timeout() -> Duration {
    // Salesforce sends a keepalive within 270 s; allow a margin before calling the stream dead.
    Duration::from_secs(300)
}
const fn default_checkpoint_interval() -> Duration {
    Duration::from_secs(1)
}

/// One Pub/Sub channel.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    /// `/data/AccountChangeEvent`, `/data/ChangeEvents`, `/data/Name__chn`, `/event/Name__e`.
    pub name: String,
    /// Where to start when no checkpoint exists.
    #[serde(default)]
    pub initial_replay: InitialReplay,
    /// Overrides `source.topic_template` for this channel.
    #[serde(default)]
    pub topic: Option<String>,
}

/// What to do when the org rejects a replay id.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplayRejectedPolicy {
    /// Resume from the oldest retained event (repeats, but nothing retained is skipped).
    #[default]
    Earliest,
    /// Resume from new events only (the events in between are skipped).
    Latest,
    /// Stop the pipeline with the error.
    Fail,
}

/// Where a channel without a checkpoint starts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InitialReplay {
    /// Only events published from now on.
    #[default]
    Latest,
    /// Every event still retained (up to 72 hours).
    Earliest,
}

/// The Kafka cluster and forcebridge's own topics. `Debug` hides the values of secret
/// `properties` (see [`crate::kafka::RedactedProperties`]).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `host:port,host:port`.
    pub bootstrap_servers: String,
    /// librdkafka properties passed through unchanged (`security.protocol`, `sasl.*`, …).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// Compacted topic holding replay ids per channel.
    #[serde(default = "default_checkpoint_topic")]
    pub checkpoint_topic: String,
    /// Events that cannot be processed go here, with the reason in headers.
    #[serde(default = "default_dead_letter_topic")]
    pub dead_letter_topic: String,
    /// Create missing topics (per-object topics, dead-letter, checkpoints) instead of relying on
    /// broker auto-creation.
    #[serde(default = "default_true")]
    pub create_topics: bool,
    /// Partitions of the topics forcebridge creates (replication: the broker's default).
    #[serde(default = "default_topic_partitions")]
    pub topic_partitions: i32,
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field(
                "properties",
                &crate::kafka::RedactedProperties(&self.properties),
            )
            .field("checkpoint_topic", &self.checkpoint_topic)
            .field("dead_letter_topic", &self.dead_letter_topic)
            .field("create_topics", &self.create_topics)
            .field("topic_partitions", &self.topic_partitions)
            .finish()
    }
}

const fn default_true() -> bool {
    true
}
const fn default_topic_partitions() -> i32 {
    3
}

fn default_checkpoint_topic() -> String {
    "forcebridge.checkpoints".to_owned()
}
fn default_dead_letter_topic() -> String {
    "forcebridge.dlq".to_owned()
}

impl Config {
    /// Reads, interpolates, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::from_yaml(&text, |name| std::env::var(name).ok())
    }

    /// Parses and validates config text; `env` resolves `${NAME}`.
    pub fn from_yaml(
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let text = interpolate(text, env)?;
        let deserializer = serde_yaml::Deserializer::from_str(&text);
        let config: Config = serde_path_to_error::deserialize(deserializer).map_err(|err| {
            let key = err.path().to_string();
            let inner = err.into_inner();
            let location = inner
                .location()
                .map(|l| format!("line {}: ", l.line()))
                .unwrap_or_default();
            ConfigError::Parse {
                key,
                location,
                message: strip_location(&inner.to_string()),
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Cross-field and range checks; each error names its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.name.is_empty() || !self.name.chars().all(is_tag_char) {
            return Err(invalid(
                "name",
                "must be non-empty and use only letters, digits, '_', '-' and '.'",
            ));
        }
        self.salesforce.validate()?;
        if self.source.is_none() && self.sink.is_none() {
            return Err(invalid(
                "source",
                "nothing to run: configure `source`, `sink` or both",
            ));
        }
        if let Some(source) = &self.source {
            source.validate()?;
        }
        if let Some(sink) = &self.sink {
            sink.validate()?;
        }
        if self.drain_timeout < Duration::from_secs(1) {
            return Err(invalid("drain_timeout", "must be at least 1s"));
        }
        if let Some(ops) = &self.ops {
            ops.validate()?;
        }
        self.kafka.validate()
    }

    /// The Kafka `transactional.id` of a source channel in exactly-once mode: unique per
    /// connector and channel, stable across restarts, so a new owner fences the old one.
    pub fn transactional_id(&self, channel: &str) -> String {
        format!("{}/{}", self.name, channel.trim_start_matches('/'))
    }

    /// The `Sforce-Call-Options` client tag: `salesforce.client_tag`, else `name`.
    pub fn client_tag(&self) -> &str {
        self.salesforce.client_tag.as_deref().unwrap_or(&self.name)
    }

    /// The sink's consumer group: `sink.group_id`, else `<name>-sink`.
    pub fn sink_group_id(&self) -> String {
        self.sink
            .as_ref()
            .and_then(|s| s.group_id.clone())
            .unwrap_or_else(|| format!("{}-sink", self.name))
    }

    /// The sink's dead-letter topic: `sink.dead_letter_topic`, else `kafka.dead_letter_topic`.
    pub fn sink_dead_letter_topic(&self) -> &str {
        self.sink
            .as_ref()
            .and_then(|s| s.dead_letter_topic.as_deref())
            .unwrap_or(&self.kafka.dead_letter_topic)
    }
}

fn is_tag_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}

/// An error and its causes, `: `-separated.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl SalesforceConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.check_url("salesforce.login_url", &self.login_url)?;
        self.check_url("salesforce.pubsub_endpoint", &self.pubsub_endpoint)?;
        if let AuthConfig::AccessToken { instance_url, .. } = &self.auth {
            self.check_url("salesforce.auth.instance_url", instance_url)?;
        }
        if let AuthConfig::JwtBearer {
            private_key_file,
            private_key,
            assertion_lifetime,
            ..
        } = &self.auth
        {
            if private_key_file.is_some() == private_key.is_some() {
                return Err(invalid(
                    "salesforce.auth.private_key_file",
                    "set exactly one of `private_key_file` (a PEM file) and `private_key` (the PEM text)",
                ));
            }
            if let Some(Err((key, e))) = crate::salesforce::auth::load_jwt_signer(&self.auth) {
                return Err(invalid(key, error_chain(&e)));
            }
            if assertion_lifetime.is_zero()
                || *assertion_lifetime > crate::salesforce::auth::MAX_ASSERTION_LIFETIME
            {
                return Err(invalid(
                    "salesforce.auth.assertion_lifetime",
                    "must be more than 0s and at most 3m (Salesforce's limit)",
                ));
            }
        }
        let version_ok = self
            .api_version
            .split_once('.')
            .is_some_and(|(major, minor)| {
                major.parse::<u32>().is_ok() && minor.chars().all(|c| c.is_ascii_digit())
            });
        if !version_ok {
            return Err(invalid(
                "salesforce.api_version",
                format!("`{}` is not a version like `62.0`", self.api_version),
            ));
        }
        if let Err(e) = crate::salesforce::tls::ClientTls::from_config(self) {
            return Err(invalid("salesforce.ca_file", error_chain(&e)));
        }
        if let Some(tag) = &self.client_tag
            && (tag.is_empty() || !tag.chars().all(is_tag_char))
        {
            return Err(invalid(
                "salesforce.client_tag",
                "must be non-empty and use only letters, digits, '_', '-' and '.'",
            ));
        }
        Ok(())
    }

    fn check_url(&self, key: &str, url: &str) -> Result<(), ConfigError> {
        crate::salesforce::tls::check_url(url, self.allow_plaintext)
            .map_err(|message| invalid(key, message))
    }
}

/// The longest checkpoint interval in exactly-once mode: the producer's transaction timeout is
/// twice this, within the broker's default `transaction.max.timeout.ms` (15 min).
pub const MAX_TRANSACTION_INTERVAL: Duration = Duration::from_secs(60);

impl SourceConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.channels.is_empty() {
            return Err(invalid(
                "source.channels",
                "at least one channel is required",
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, channel) in self.channels.iter().enumerate() {
            let key = format!("source.channels[{i}].name");
            validate_channel_name(&channel.name).map_err(|m| invalid(&key, m))?;
            if !seen.insert(channel.name.as_str()) {
                return Err(invalid(key, format!("`{}` is listed twice", channel.name)));
            }
            if let Some(topic) = &channel.topic {
                crate::kafka::render_topic(topic, "Object", &channel.name)
                    .map_err(|e| invalid(format!("source.channels[{i}].topic"), e.to_string()))?;
            }
        }
        crate::kafka::render_topic(&self.topic_template, "Account", "/data/AccountChangeEvent")
            .map_err(|e| invalid("source.topic_template", e.to_string()))?;
        if !(1..=100).contains(&self.batch_size) {
            return Err(invalid(
                "source.batch_size",
                format!(
                    "{} is out of range: the Pub/Sub API allows 1 to 100 outstanding events",
                    self.batch_size
                ),
            ));
        }
        if self.stream_idle_timeout < Duration::from_secs(1) {
            return Err(invalid("source.stream_idle_timeout", "must be at least 1s"));
        }
        if self.checkpoint_interval.is_zero() {
            return Err(invalid(
                "source.checkpoint_interval",
                "must be greater than 0",
            ));
        }
        if self.delivery == DeliveryMode::ExactlyOnce
            && self.checkpoint_interval > MAX_TRANSACTION_INTERVAL
        {
            return Err(invalid(
                "source.checkpoint_interval",
                format!(
                    "with `delivery: exactly_once` each interval is one Kafka transaction, which \
                     must commit within {}s (transaction.timeout.ms)",
                    MAX_TRANSACTION_INTERVAL.as_secs()
                ),
            ));
        }
        Ok(())
    }
}

impl SinkConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.topics.is_empty() {
            return Err(invalid(
                "sink.topics",
                "at least one write-back topic is required",
            ));
        }
        for (i, topic) in self.topics.iter().enumerate() {
            crate::kafka::render_topic(topic, "", "")
                .map_err(|e| invalid(format!("sink.topics[{i}]"), e.to_string()))?;
        }
        crate::kafka::render_topic(&self.conflicts_topic, "", "")
            .map_err(|e| invalid("sink.conflicts_topic", e.to_string()))?;
        if let Some(topic) = &self.dead_letter_topic {
            crate::kafka::render_topic(topic, "", "")
                .map_err(|e| invalid("sink.dead_letter_topic", e.to_string()))?;
        }
        if !(1..=MAX_SINK_BATCH_RECORDS).contains(&self.batch_records) {
            return Err(invalid(
                "sink.batch_records",
                format!(
                    "{} is out of range: 1 to {MAX_SINK_BATCH_RECORDS} (one Composite call of five sObject Collections retrieves of 2,000 Ids reads a batch)",
                    self.batch_records
                ),
            ));
        }
        if !(1..=25).contains(&self.concurrency) {
            return Err(invalid(
                "sink.concurrency",
                "must be 1 to 25 (Salesforce limits long-running concurrent requests to 25)",
            ));
        }
        if self.max_attempts == 0 {
            return Err(invalid("sink.max_attempts", "must be at least 1"));
        }
        if self.initial_backoff.is_zero() || self.max_backoff < self.initial_backoff {
            return Err(invalid(
                "sink.max_backoff",
                "backoffs must be > 0 and max_backoff >= initial_backoff",
            ));
        }
        if self.commit_interval.is_zero() {
            return Err(invalid("sink.commit_interval", "must be greater than 0"));
        }
        if self.limits_poll_interval < Duration::from_secs(1) {
            return Err(invalid("sink.limits_poll_interval", "must be at least 1s"));
        }
        for (object, settings) in &self.objects {
            let key = format!("sink.objects.{object}");
            if !is_api_name(object) {
                return Err(invalid(key, "is not an object API name"));
            }
            if let Some(field) = &settings.external_id_field
                && !is_api_name(field)
            {
                return Err(invalid(
                    format!("{key}.external_id_field"),
                    format!("`{field}` is not a field API name"),
                ));
            }
            for (from, to) in &settings.field_map {
                if !is_api_name(to) {
                    return Err(invalid(
                        format!("{key}.field_map.{from}"),
                        format!("`{to}` is not a field API name"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Letters, digits and `_`, starting with a letter (Salesforce API names).
pub fn is_api_name(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Checks a Pub/Sub channel name: `/data/...` or `/event/...` followed by an API name.
pub fn validate_channel_name(name: &str) -> Result<(), String> {
    let rest = name
        .strip_prefix("/data/")
        .or_else(|| name.strip_prefix("/event/"))
        .ok_or_else(|| format!("`{name}` must start with /data/ or /event/"))?;
    if rest.is_empty() || !rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "`{name}`: `{rest}` is not an API name (letters, digits and '_')"
        ));
    }
    Ok(())
}

impl KafkaConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.bootstrap_servers.trim().is_empty() {
            return Err(invalid("kafka.bootstrap_servers", "must not be empty"));
        }
        for (key, topic) in [
            ("kafka.checkpoint_topic", &self.checkpoint_topic),
            ("kafka.dead_letter_topic", &self.dead_letter_topic),
        ] {
            crate::kafka::render_topic(topic, "", "").map_err(|e| invalid(key, e.to_string()))?;
        }
        if self.topic_partitions < 1 {
            return Err(invalid("kafka.topic_partitions", "must be at least 1"));
        }
        for managed in [
            "bootstrap.servers",
            "enable.idempotence",
            "transactional.id",
        ] {
            if self.properties.contains_key(managed) {
                return Err(invalid(
                    format!("kafka.properties.{managed}"),
                    "is set by forcebridge; remove it",
                ));
            }
        }
        Ok(())
    }

    /// The settings the Kafka stage needs.
    pub fn settings(&self) -> crate::kafka::KafkaSettings {
        crate::kafka::KafkaSettings {
            bootstrap_servers: self.bootstrap_servers.clone(),
            properties: self.properties.clone(),
        }
    }
}

/// serde_yaml appends "at line L column C"; we print the line ourselves, first.
fn strip_location(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// Replaces `${NAME}` with the value of `env(NAME)`; `$${` is a literal `${`.
fn interpolate(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let line_of = |rest: &str| text[..text.len() - rest.len()].matches('\n').count() + 1;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let end = tail.find('}').ok_or(ConfigError::UnterminatedEnv {
                line: line_of(after),
            })?;
            let name = &tail[..end];
            let value = env(name).ok_or_else(|| ConfigError::MissingEnv {
                name: name.to_owned(),
                line: line_of(after),
            })?;
            out.push_str(&value);
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    const EXAMPLE: &str = r#"
name: acme-sync
salesforce:
  login_url: https://acme.my.salesforce.com
  auth:
    type: client_credentials
    client_id: ${SF_CLIENT_ID}
    client_secret: ${SF_CLIENT_SECRET}
source:
  channels:
    - name: /data/AccountChangeEvent
      initial_replay: earliest
    - name: /event/Order_Event__e
      topic: orders
  tombstones: true
  checkpoint_interval: 500ms
kafka:
  bootstrap_servers: localhost:9092
  properties:
    compression.type: zstd
"#;

    fn env(name: &str) -> Option<String> {
        match name {
            "SF_CLIENT_ID" => Some("3MVG9id".into()),
            "SF_CLIENT_SECRET" => Some("s3cr3t-value".into()),
            _ => None,
        }
    }

    #[test]
    fn example_parses_with_env_and_defaults() {
        let config = Config::from_yaml(EXAMPLE, env).unwrap();
        assert_eq!(config.name, "acme-sync");
        let AuthConfig::ClientCredentials {
            client_id,
            client_secret,
        } = &config.salesforce.auth
        else {
            panic!("wrong auth variant");
        };
        assert_eq!(client_id, "3MVG9id");
        assert_eq!(client_secret.expose_secret(), "s3cr3t-value");
        assert_eq!(
            config.source.as_ref().unwrap().channels[0].initial_replay,
            InitialReplay::Earliest
        );
        assert_eq!(
            config.source.as_ref().unwrap().channels[1].initial_replay,
            InitialReplay::Latest
        );
        assert_eq!(
            config.source.as_ref().unwrap().checkpoint_interval,
            Duration::from_millis(500)
        );
        assert_eq!(config.source.as_ref().unwrap().batch_size, 100);
        assert_eq!(config.kafka.checkpoint_topic, "forcebridge.checkpoints");
        assert_eq!(
            config.salesforce.pubsub_endpoint,
            "https://api.pubsub.salesforce.com:7443"
        );
    }

    #[test]
    fn secrets_are_not_printed_by_debug() {
        let config = Config::from_yaml(EXAMPLE, env).unwrap();
        let printed = format!("{config:?}");
        assert!(!printed.contains("s3cr3t-value"), "{printed}");
    }

    #[test]
    fn unknown_key_names_its_path_and_line() {
        let text = EXAMPLE.replace("tombstones: true", "tombstone: true");
        let err = Config::from_yaml(&text, env).unwrap_err().to_string();
        assert!(err.contains("source"), "{err}");
        assert!(err.contains("unknown field `tombstone`"), "{err}");
        assert!(err.contains("line 15"), "{err}");
    }

    #[test]
    fn wrong_type_names_the_nested_key() {
        let text = EXAMPLE.replace("initial_replay: earliest", "initial_replay: yesterday");
        let err = Config::from_yaml(&text, env).unwrap_err().to_string();
        assert!(err.contains("source.channels[0].initial_replay"), "{err}");
    }

    #[test]
    fn missing_env_names_the_variable_and_line() {
        let err = Config::from_yaml(EXAMPLE, |_| None)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "line 7: environment variable `SF_CLIENT_ID` is not set (referenced as ${SF_CLIENT_ID})"
        );
    }

    #[test]
    fn interpolation_escape_and_lone_dollar() {
        let out = interpolate("a: $${X} $5 ${Y}", |n| (n == "Y").then(|| "y".into())).unwrap();
        assert_eq!(out, "a: ${X} $5 y");
        assert!(matches!(
            interpolate("a: ${X", |_| None),
            Err(ConfigError::UnterminatedEnv { line: 1 })
        ));
    }

    #[test]
    fn validation_errors_name_the_key() {
        // (text in EXAMPLE, its replacement, the key the error must start with)
        let cases = [
            (
                "  tombstones: true",
                "  tombstones: true\n  batch_size: 500",
                "source.batch_size",
            ),
            (
                "- name: /data/AccountChangeEvent",
                "- name: AccountChangeEvent",
                "source.channels[0].name",
            ),
            (
                "login_url: https://",
                "login_url: http://",
                "salesforce.login_url",
            ),
        ];
        for (from, to, key) in cases {
            let text = EXAMPLE.replace(from, to);
            let err = Config::from_yaml(&text, env).unwrap_err().to_string();
            assert!(err.starts_with(&format!("`{key}`")), "{key}: {err}");
        }
    }

    #[test]
    fn duplicate_channel_is_rejected() {
        let text = EXAMPLE.replace("/event/Order_Event__e", "/data/AccountChangeEvent");
        let err = Config::from_yaml(&text, env).unwrap_err().to_string();
        assert!(err.contains("source.channels[1].name"), "{err}");
        assert!(err.contains("listed twice"), "{err}");
    }
}
