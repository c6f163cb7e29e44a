//! `sink`: Kafka → Salesforce settings ([`SinkConfig`], [`SinkObjectConfig`] per object, the
//! [`ApiReserve`], the [`SameSecondWinner`] of last-write-wins ties).
//!
//! Contract: [`SinkConfig::validate`] checks the section, each error naming its key: at least one
//! topic, topic names that render, `same_second_winner` only with `last_write_wins`, `batch_records` 1..=[`MAX_SINK_BATCH_RECORDS`], `concurrency`
//! 1..=25 (Salesforce's long-running request limit), attempts, backoffs and intervals, and object
//! and field API names ([`is_api_name`]).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::error::{ConfigError, invalid};
use super::kafka::TopicChecks;

/// Kafka → Salesforce settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Write-back topics (messages in the format of ARCHITECTURE.md, "Write-back messages").
    pub topics: Vec<String>,
    /// Consumer group; defaults to `<name>-sink`.
    #[serde(default)]
    pub group_id: Option<String>,
    /// Static group membership (KIP-345): the consumer's `group.instance.id`, unique per sink
    /// instance and stable across its restarts (the Helm chart sets it to the pod's name). A
    /// restarted sink with the same id takes its partitions back at once instead of waiting for
    /// the dead member's `session.timeout.ms`; a static member does not leave the group when it
    /// stops, so an instance that is gone for good holds its partitions until that timeout.
    /// Unset: dynamic membership.
    #[serde(default)]
    pub group_instance_id: Option<String>,
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
    #[serde(default = "default_last_write_wins")]
    pub last_write_wins: bool,
    /// With `last_write_wins`: who wins when a write's `timestamp` falls in the same second as
    /// the record's `SystemModstamp`. Salesforce keeps datetimes to the second, so such a write
    /// cannot be ordered against the change in Salesforce (which may be up to 999 ms newer).
    /// `salesforce` (the default): the record keeps its value and the write goes to
    /// `conflicts_topic` with the reason `same_second`; `kafka`: the write is applied. Setting it
    /// with `last_write_wins: false` is an error.
    #[serde(default)]
    pub same_second_winner: Option<SameSecondWinner>,
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
    #[serde(default = "default_commit_interval", with = "humantime_serde")]
    pub commit_interval: Duration,
}

/// Largest `sink.batch_records`: one Composite call of five sObject Collections retrieves of
/// 2,000 Ids reads a whole batch.
const MAX_SINK_BATCH_RECORDS: usize = 10_000;

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
const fn default_last_write_wins() -> bool {
    true
}
const fn default_commit_interval() -> Duration {
    Duration::from_secs(1)
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
    /// Message field name → Salesforce field name (matched in any case, as Salesforce matches
    /// field names).
    #[serde(default)]
    pub field_map: BTreeMap<String, String>,
    /// Message fields never written (after mapping: Salesforce names, in any case).
    #[serde(default)]
    pub ignore_fields: Vec<String>,
}

/// Who wins a last-write-wins tie: a write in the same second as the record's
/// `SystemModstamp` (`sink.same_second_winner`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SameSecondWinner {
    /// The record keeps Salesforce's value; the write is a conflict.
    #[default]
    Salesforce,
    /// The write is applied.
    Kafka,
}

impl SinkConfig {
    /// The tie rule in force ([`SameSecondWinner::Salesforce`] unless set).
    pub(crate) fn same_second(&self) -> SameSecondWinner {
        self.same_second_winner.unwrap_or_default()
    }
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
    pub(crate) fn calls(&self, max: u64) -> u64 {
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

impl SinkConfig {
    pub(super) fn validate(&self, checks: &dyn TopicChecks) -> Result<(), ConfigError> {
        if self.topics.is_empty() {
            return Err(invalid(
                "sink.topics",
                "at least one write-back topic is required",
            ));
        }
        for (i, topic) in self.topics.iter().enumerate() {
            checks
                .check_topic(topic, "", "")
                .map_err(|e| invalid(format!("sink.topics[{i}]"), e))?;
        }
        checks
            .check_topic(&self.conflicts_topic, "", "")
            .map_err(|e| invalid("sink.conflicts_topic", e))?;
        if let Some(topic) = &self.dead_letter_topic {
            checks
                .check_topic(topic, "", "")
                .map_err(|e| invalid("sink.dead_letter_topic", e))?;
        }
        if let Some(id) = &self.group_instance_id {
            check_group_instance_id(id).map_err(|e| invalid("sink.group_instance_id", e))?;
        }
        if self.same_second_winner.is_some() && !self.last_write_wins {
            return Err(invalid(
                "sink.same_second_winner",
                "decides last-write-wins ties and needs last_write_wins: true",
            ));
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

/// Kafka's rule for a `group.instance.id` (the Java client's `JoinGroupRequest`
/// `validateGroupInstanceId`, the rule of topic names): 1 to 249 ASCII letters, digits, `.`, `_`
/// and `-`, not `.` or `..`. A Kubernetes pod name always passes.
fn check_group_instance_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 249 {
        return Err(format!("must be 1 to 249 characters, not {}", id.len()));
    }
    if id == "." || id == ".." {
        return Err("'.' and '..' are not allowed".to_owned());
    }
    match id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        Some(c) => Err(format!(
            "contains {c:?}: only ASCII letters, digits, '.', '_' and '-' are allowed"
        )),
        None => Ok(()),
    }
}

/// Letters, digits and `_`, starting with a letter (Salesforce API names).
pub(crate) fn is_api_name(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_instance_ids_follow_kafkas_rule() {
        assert!(check_group_instance_id("forcebridge-sink-7d9f8c6b5-x2x9z").is_ok());
        assert!(check_group_instance_id("sink_0.a").is_ok());
        assert!(check_group_instance_id("").is_err());
        assert!(check_group_instance_id("..").is_err());
        assert!(check_group_instance_id(&"a".repeat(250)).is_err());
        let err = check_group_instance_id("sink 1").unwrap_err();
        assert!(err.contains("' '"), "{err}");
        assert!(check_group_instance_id("${POD_NAME}").is_err());
    }

    #[test]
    fn reserve_in_calls() {
        assert_eq!(ApiReserve::Calls(50).calls(15000), 50);
        assert_eq!(ApiReserve::Percent(10.0).calls(15000), 1500);
        assert_eq!(ApiReserve::Percent(0.01).calls(15000), 2); // rounded up
        assert_eq!(ApiReserve::Percent(150.0).calls(100), 100);
        assert_eq!(ApiReserve::Percent(-1.0).calls(100), 0);
        assert_eq!(ApiReserve::Percent(f64::NAN).calls(100), 0);
    }
}
