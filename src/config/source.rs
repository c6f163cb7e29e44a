//! `source`: Salesforce → Kafka settings ([`SourceConfig`], one [`ChannelConfig`] per Pub/Sub
//! channel).
//!
//! Contract: [`SourceConfig::validate`] checks the section, each error naming its key: at least
//! one channel, each name a `/data/…` or `/event/…` channel listed once, topic templates that
//! render, `batch_size` 1..=100 (the Pub/Sub API's limit), the idle timeout and checkpoint
//! interval, and an interval short enough for one Kafka transaction with `delivery: exactly_once`,
//! and `format: debezium` only on change-event channels (a Platform Event is no row change).

use std::time::Duration;

use serde::Deserialize;

use super::error::{ConfigError, invalid};
use super::kafka::TopicChecks;
use super::snapshot::{SnapshotMode, SnapshotSettings, channel_object, validate_channel};

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
    /// corrupt): `resync` (default) re-reads what changed since the checkpoint; `earliest` or
    /// `latest` resume once from that preset, writing a gap marker to the dead-letter topic;
    /// `fail` stops.
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
    /// What to do with a large text field that a change event carries as a unified diff (listed
    /// in `diffFields`): `reread` (default) re-reads its current value over REST into `record`;
    /// `pass` leaves it out of `record` and passes the diff under `diffs`.
    #[serde(default)]
    pub diff_fields: DiffFieldsMode,
    /// Settings shared by the channels' snapshots (`source.channels[].snapshot`).
    #[serde(default)]
    pub snapshot: SnapshotSettings,
    /// The value written for each record: `forcebridge` (default; `ARCHITECTURE.md`, "Kafka
    /// record format") or `debezium` (Debezium's change event envelope, for Flink's
    /// `debezium-json`, Kafka Connect's `ExtractNewRecordState`, Tableflow; `ARCHITECTURE.md`,
    /// "Debezium format"). `source.channels[].format` overrides it per channel.
    #[serde(default)]
    pub format: RecordFormat,
}

/// The envelope of the records the source writes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordFormat {
    /// forcebridge's own envelope (`operation`, `object`, `id`, `record`, …).
    #[default]
    Forcebridge,
    /// Debezium's envelope (`before`, `after`, `source`, `op`, `ts_ms`, `transaction`).
    Debezium,
}

/// What the source does with the fields of `diffFields` (values sent as a unified diff).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiffFieldsMode {
    /// Re-read the field's current value over REST (the value at read time).
    #[default]
    Reread,
    /// Pass the diff under the envelope's `diffs` key; the field is left out of `record`.
    Pass,
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
    /// `never` (default) or `initial`: load the existing records of the channel's objects
    /// before streaming when the channel has no checkpoint (see `ARCHITECTURE.md`, "Snapshot").
    #[serde(default)]
    pub snapshot: SnapshotMode,
    /// The objects a snapshot loads; by default the channel's own object
    /// (`/data/AccountChangeEvent` → `Account`). Required for `/data/ChangeEvents` and custom
    /// channels.
    #[serde(default)]
    pub snapshot_objects: Vec<String>,
    /// Overrides `source.format` for this channel (`forcebridge` | `debezium`).
    #[serde(default)]
    pub format: Option<RecordFormat>,
    /// `true`: each `UPDATE` record is completed with the record's current values (every field of
    /// the event schema, read in batches of up to 2,000 Ids through sObject Collections retrieve)
    /// before it is produced; the event's own values win for the fields it carries (see
    /// `ARCHITECTURE.md`, "Full record on update"). Default `false`. Change Data Capture channels
    /// only: refused on `/event/…` channels.
    #[serde(default)]
    pub full_record: bool,
}

impl ChannelConfig {
    /// The channel's record format: its own `format`, else `source.format`.
    pub fn format(&self, source: &SourceConfig) -> RecordFormat {
        self.format.unwrap_or(source.format)
    }

    /// The objects a snapshot of this channel loads (empty: none can be told; refused by the
    /// config's checks when a snapshot is asked).
    pub fn snapshot_objects(&self) -> Vec<String> {
        if self.snapshot_objects.is_empty() {
            channel_object(&self.name).into_iter().collect()
        } else {
            self.snapshot_objects.clone()
        }
    }
}

/// What to do when the org rejects a replay id.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplayRejectedPolicy {
    /// Re-read what changed since the checkpoint's commit timestamp (minus
    /// `source.snapshot.resync_margin`): rows changed since, deletes since, then the stream from
    /// a position fixed before the re-read, so nothing is missing. A channel whose objects cannot
    /// be told (a Platform Event channel, `/data/ChangeEvents` without `snapshot_objects`)
    /// resumes from `earliest` instead.
    #[default]
    Resync,
    /// Resume from the oldest retained event (repeats, but nothing retained is skipped).
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

/// The longest checkpoint interval in exactly-once mode: the producer's transaction timeout is
/// twice this, within the broker's default `transaction.max.timeout.ms` (15 min).
pub(crate) const MAX_TRANSACTION_INTERVAL: Duration = Duration::from_secs(60);

impl SourceConfig {
    pub(super) fn validate(&self, topics: &dyn TopicChecks) -> Result<(), ConfigError> {
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
            validate_channel(
                i,
                &channel.name,
                channel.snapshot,
                &channel.snapshot_objects,
            )?;
            if channel.format(self) == RecordFormat::Debezium && channel.name.starts_with("/event/")
            {
                let key = match channel.format {
                    Some(_) => format!("source.channels[{i}].format"),
                    None => "source.format".to_owned(),
                };
                return Err(invalid(
                    key,
                    format!(
                        "`{}` is a Platform Event channel: its events are messages, not changes \
                         of a row, so Debezium's envelope (before/after/op) does not fit; set \
                         `format: forcebridge` on this channel",
                        channel.name
                    ),
                ));
            }
            if channel.full_record && channel.name.starts_with("/event/") {
                return Err(invalid(
                    format!("source.channels[{i}].full_record"),
                    format!(
                        "`{}` is a Platform Event channel: its events are not record changes, \
                         there is no record to complete",
                        channel.name
                    ),
                ));
            }
            if let Some(topic) = &channel.topic {
                topics
                    .check_topic(topic, "Object", &channel.name)
                    .map_err(|e| invalid(format!("source.channels[{i}].topic"), e))?;
            }
        }
        topics
            .check_topic(&self.topic_template, "Account", "/data/AccountChangeEvent")
            .map_err(|e| invalid("source.topic_template", e))?;
        if !(1..=100).contains(&self.batch_size) {
            return Err(invalid(
                "source.batch_size",
                format!(
                    "{} is out of range: the Pub/Sub API allows 1 to 100 outstanding events",
                    self.batch_size
                ),
            ));
        }
        self.snapshot.validate()?;
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

/// Checks a Pub/Sub channel name: `/data/...` or `/event/...` followed by an API name.
fn validate_channel_name(name: &str) -> Result<(), String> {
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
