//! The forcebridge configuration: one YAML file.
//!
//! Contract:
//! * `${NAME}` inside a string value is replaced by the environment variable `NAME` after parsing,
//!   as data (`$${` escapes a literal `${`): a value never changes the YAML's structure, and a
//!   typed field (`port: ${PORT}`) parses the substituted text as its type. An unset variable is
//!   an error naming it, its key and its line; an error never shows an interpolated value.
//! * Unknown keys are errors (`deny_unknown_fields`); every error names the offending key path
//!   (e.g. `source.channels[1].name`) and, where serde knows it, the line.
//! * [`Config::validate`] checks cross-field rules before anything starts.
//! * Secrets are [`SecretString`](secrecy::SecretString)s: never printed by `Debug`, and the
//!   config is not `Serialize`.
//!
//! Files: one per section ([`SalesforceConfig`] in `salesforce.rs`, [`SourceConfig`] in
//! `source.rs`, [`SinkConfig`] in `sink.rs`, [`KafkaConfig`] in `kafka.rs`, [`OpsConfig`] in
//! `ops.rs`), `env.rs` (reading, the YAML parse), `interpolate.rs` (`${NAME}` in parsed strings) and `error.rs`
//! ([`ConfigError`]). A leaf: config imports no stage. The checks that need a stage's knowledge
//! are the stage's, handed in to [`Config::validate_with`]; `Config::load`, `Config::from_yaml`
//! and `Config::validate` (in `src/settings.rs`) hand in the Salesforce clients' checks, so every
//! entry point refuses the same configs, in the same order of checks.

mod env;
mod error;
mod interpolate;
mod kafka;
mod ops;
mod salesforce;
mod sink;
mod snapshot;
mod source;

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

pub use error::ConfigError;
pub(crate) use error::invalid;
pub(crate) use kafka::TopicChecks;
pub use kafka::{KafkaConfig, RedactedProperties, is_secret_property};
pub use ops::OpsConfig;
pub(crate) use ops::default_stall_after;
pub(crate) use salesforce::SalesforceChecks;
use salesforce::is_tag_char;
pub use salesforce::{AuthConfig, SalesforceConfig};
pub(crate) use sink::is_api_name;
pub use sink::{ApiReserve, SameSecondWinner, SinkConfig, SinkObjectConfig};
pub use snapshot::{SnapshotMode, SnapshotSettings, channel_object};
pub(crate) use source::MAX_TRANSACTION_INTERVAL;
pub use source::{
    ChannelConfig, DeliveryMode, DiffFieldsMode, EchoConfig, EchoMode, InitialReplay, RecordFormat,
    ReplayRejectedPolicy, SourceConfig,
};

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

const fn default_drain_timeout() -> Duration {
    Duration::from_secs(20)
}

fn default_name() -> String {
    "forcebridge".to_owned()
}

impl Config {
    /// Reads, interpolates and parses a config file, without validating it (`Config::load`
    /// validates).
    pub(crate) fn parse_file(path: &Path) -> Result<Config, ConfigError> {
        let text = env::read(path)?;
        Config::parse(&text, |name| std::env::var(name).ok())
    }

    /// Interpolates and parses config text, without validating it (`Config::from_yaml`
    /// validates); `env` resolves `${NAME}`.
    pub(crate) fn parse(
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        env::parse(text, env)
    }

    /// Cross-field and range checks, in order; each error names its key. `salesforce` makes the
    /// checks of the `salesforce` section that need the Salesforce clients' knowledge, `topics`
    /// those of topic names and templates that need Kafka's (`Config::validate` hands in theirs).
    pub(crate) fn validate_with(
        &self,
        salesforce: &dyn SalesforceChecks,
        topics: &dyn TopicChecks,
    ) -> Result<(), ConfigError> {
        if self.name.is_empty() || !self.name.chars().all(is_tag_char) {
            return Err(invalid(
                "name",
                "must be non-empty and use only letters, digits, '_', '-' and '.'",
            ));
        }
        self.salesforce.validate(salesforce)?;
        if self.source.is_none() && self.sink.is_none() {
            return Err(invalid(
                "source",
                "nothing to run: configure `source`, `sink` or both",
            ));
        }
        if let Some(source) = &self.source {
            source.validate(topics)?;
        }
        if let Some(sink) = &self.sink {
            sink.validate(topics)?;
        }
        if self.drain_timeout < Duration::from_secs(1) {
            return Err(invalid("drain_timeout", "must be at least 1s"));
        }
        if let Some(ops) = &self.ops {
            ops.validate()?;
        }
        self.kafka.validate(topics)
    }

    /// The Kafka `transactional.id` of a source channel in exactly-once mode: unique per
    /// connector and channel, stable across restarts, so a new owner fences the old one.
    pub(crate) fn transactional_id(&self, channel: &str) -> String {
        format!("{}/{}", self.name, channel.trim_start_matches('/'))
    }

    /// The `Sforce-Call-Options` client tag: `salesforce.client_tag`, else `name`.
    pub(crate) fn client_tag(&self) -> &str {
        self.salesforce.client_tag.as_deref().unwrap_or(&self.name)
    }

    /// The sink's consumer group: `sink.group_id`, else `<name>-sink`.
    pub(crate) fn sink_group_id(&self) -> String {
        self.sink
            .as_ref()
            .and_then(|s| s.group_id.clone())
            .unwrap_or_else(|| format!("{}-sink", self.name))
    }

    /// The sink's dead-letter topic: `sink.dead_letter_topic`, else `kafka.dead_letter_topic`.
    pub(crate) fn sink_dead_letter_topic(&self) -> &str {
        self.sink
            .as_ref()
            .and_then(|s| s.dead_letter_topic.as_deref())
            .unwrap_or(&self.kafka.dead_letter_topic)
    }
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
    fn diff_fields_defaults_to_reread_and_a_bad_mode_names_its_key() {
        let config = Config::from_yaml(EXAMPLE, env).unwrap();
        assert_eq!(
            config.source.as_ref().unwrap().diff_fields,
            DiffFieldsMode::Reread
        );
        let pass = EXAMPLE.replace("tombstones: true", "tombstones: true\n  diff_fields: pass");
        let config = Config::from_yaml(&pass, env).unwrap();
        assert_eq!(
            config.source.as_ref().unwrap().diff_fields,
            DiffFieldsMode::Pass
        );
        let text = EXAMPLE.replace("tombstones: true", "tombstones: true\n  diff_fields: value");
        let err = Config::from_yaml(&text, env).unwrap_err().to_string();
        assert!(err.contains("source.diff_fields"), "{err}");
        assert!(err.contains("unknown variant `value`"), "{err}");
    }

    #[test]
    fn missing_env_names_the_variable_and_line() {
        let err = Config::from_yaml(EXAMPLE, |_| None)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "line 7: `salesforce.auth.client_id`: environment variable `SF_CLIENT_ID` is not set (referenced as ${SF_CLIENT_ID})"
        );
    }

    /// EXAMPLE with `SF_CLIENT_SECRET` (and `extra` variables) set to the given values.
    fn with_secret(
        text: &str,
        secret: &str,
        extra: &[(&str, &str)],
    ) -> Result<Config, ConfigError> {
        let extra: Vec<(String, String)> = extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_yaml(text, |name| match name {
            "SF_CLIENT_SECRET" => Some(secret.to_owned()),
            _ => extra
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .or_else(|| env(name)),
        })
    }

    fn client_secret(config: &Config) -> String {
        match &config.salesforce.auth {
            AuthConfig::ClientCredentials { client_secret, .. } => {
                client_secret.expose_secret().to_owned()
            }
            other => panic!("wrong auth variant {other:?}"),
        }
    }

    /// Issue 19, item 10: an environment value is data. A `#`, a newline followed by a key, a
    /// leading YAML indicator, or a number or boolean: each is the secret, verbatim.
    #[test]
    fn env_values_are_data_not_yaml() {
        let secrets = [
            "X #tail",
            "x\n  allow_plaintext: true",
            "\"quoted",
            "*alias",
            "%directive",
            "[flow",
            "{map",
            "12345678",
            "true",
            "~",
            "- item",
            "a: b",
        ];
        for secret in secrets {
            let config =
                with_secret(EXAMPLE, secret, &[]).unwrap_or_else(|e| panic!("{secret:?}: {e}"));
            assert_eq!(client_secret(&config), secret);
            assert!(
                !config.salesforce.allow_plaintext,
                "{secret:?} injected a key"
            );
        }
    }

    /// A typed field written `${NAME}` is parsed as its type after the substitution, as it was
    /// when the text was substituted.
    #[test]
    fn typed_fields_from_env_keep_working() {
        let text = EXAMPLE
            .replace(
                "tombstones: true",
                "tombstones: ${TOMB}\n  batch_size: ${BATCH}",
            )
            .replace(
                "checkpoint_interval: 500ms",
                "checkpoint_interval: ${EVERY}",
            )
            .replace(
                "name: acme-sync",
                "name: acme-${SUFFIX}\nops:\n  listen: ${OPS}",
            );
        let vars = [
            ("TOMB", "false"),
            ("BATCH", "50"),
            ("EVERY", "2s"),
            ("SUFFIX", "eu"),
            ("OPS", "127.0.0.1:9464"),
        ];
        let config = with_secret(&text, "s", &vars).unwrap();
        let source = config.source.as_ref().unwrap();
        assert!(!source.tombstones);
        assert_eq!(source.batch_size, 50);
        assert_eq!(source.checkpoint_interval, Duration::from_secs(2));
        assert_eq!(config.name, "acme-eu");
        assert_eq!(config.ops.unwrap().listen.port(), 9464);
    }

    /// A value from the environment that its field refuses: the error names the key and the
    /// variable, never the value (it may be a secret).
    #[test]
    fn a_refused_env_value_is_named_not_shown() {
        let cases = [
            (
                "tombstones: true",
                "tombstones: ${SF_CLIENT_SECRET}",
                "source.tombstones",
            ),
            (
                "checkpoint_interval: 500ms",
                "checkpoint_interval: ${SF_CLIENT_SECRET}",
                "source.checkpoint_interval",
            ),
            (
                "initial_replay: earliest",
                "initial_replay: ${SF_CLIENT_SECRET}",
                "source.channels[0].initial_replay",
            ),
            (
                "  tombstones: true",
                "  tombstones: true\n  batch_size: ${SF_CLIENT_SECRET}",
                "source.batch_size",
            ),
        ];
        for secret in [
            "s3cr3t-Value#1",
            "123456789012345678901234567890",
            "-42",
            "1.5",
        ] {
            for (from, to, key) in cases {
                let text = EXAMPLE.replace(from, to);
                let err = with_secret(&text, secret, &[]).unwrap_err().to_string();
                assert!(!err.contains(secret), "{key} echoed {secret:?}: {err}");
                assert!(err.contains(&format!("`{key}`")), "{err}");
                assert!(err.contains("${SF_CLIENT_SECRET}"), "{err}");
                assert!(err.contains("line "), "{err}");
            }
        }
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

    /// `sink.same_second_winner`: `salesforce` by default, `kafka` when set, an error naming the
    /// key for an unknown value or without last-write-wins.
    #[test]
    fn same_second_winner_is_typed_and_needs_last_write_wins() {
        let with_sink = |extra: &str| {
            let sink = format!("sink:\n  topics: [writeback]\n{extra}kafka:\n");
            Config::from_yaml(&EXAMPLE.replace("kafka:\n", &sink), env)
        };
        let winner = |c: Config| c.sink.expect("sink").same_second();
        assert_eq!(
            winner(with_sink("").expect("default")),
            SameSecondWinner::Salesforce
        );
        let kafka = with_sink("  same_second_winner: kafka\n").expect("kafka");
        assert_eq!(winner(kafka), SameSecondWinner::Kafka);
        let unknown = with_sink("  same_second_winner: newest\n").unwrap_err();
        assert!(
            unknown.to_string().contains("sink.same_second_winner"),
            "{unknown}"
        );
        let without = with_sink("  last_write_wins: false\n  same_second_winner: kafka\n")
            .unwrap_err()
            .to_string();
        assert!(
            without.starts_with("`sink.same_second_winner`"),
            "{without}"
        );
    }

    #[test]
    fn of_two_faults_the_first_check_is_reported() {
        // (both replacements, the key the error must start with): each pair spans config's own
        // checks and the Salesforce clients' (plaintext rule, CA bundle), in both orders.
        let cases = [
            (
                ("login_url: https://", "login_url: http://"),
                ("salesforce:\n", "salesforce:\n  api_version: latest\n"),
                "salesforce.login_url",
            ),
            (
                ("name: acme-sync", "name: acme sync"),
                ("login_url: https://", "login_url: http://"),
                "name",
            ),
            (
                (
                    "salesforce:\n",
                    "salesforce:\n  ca_file: /nonexistent/ca.pem\n",
                ),
                ("salesforce:\n", "salesforce:\n  client_tag: a tag\n"),
                "salesforce.ca_file",
            ),
            (
                ("salesforce:\n", "salesforce:\n  api_version: latest\n"),
                (
                    "salesforce:\n",
                    "salesforce:\n  ca_file: /nonexistent/ca.pem\n",
                ),
                "salesforce.api_version",
            ),
            (
                (
                    "salesforce:\n",
                    "salesforce:\n  ca_file: /nonexistent/ca.pem\n",
                ),
                (
                    "  tombstones: true",
                    "  tombstones: true\n  batch_size: 500",
                ),
                "salesforce.ca_file",
            ),
        ];
        for ((from1, to1), (from2, to2), key) in cases {
            let text = EXAMPLE.replacen(from1, to1, 1).replacen(from2, to2, 1);
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

    #[test]
    fn full_record_is_for_change_data_capture_channels_only() {
        let config = Config::from_yaml(EXAMPLE, env).unwrap();
        assert!(!config.source.as_ref().unwrap().channels[0].full_record);
        let cdc = EXAMPLE.replace(
            "      initial_replay: earliest\n",
            "      initial_replay: earliest\n      full_record: true\n",
        );
        let config = Config::from_yaml(&cdc, env).unwrap();
        assert!(config.source.as_ref().unwrap().channels[0].full_record);
        let event = EXAMPLE.replace(
            "      topic: orders\n",
            "      topic: orders\n      full_record: true\n",
        );
        let err = Config::from_yaml(&event, env).unwrap_err().to_string();
        assert!(err.starts_with("`source.channels[1].full_record`"), "{err}");
        assert!(err.contains("/event/Order_Event__e"), "{err}");
    }
}
