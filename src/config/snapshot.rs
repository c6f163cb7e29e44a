//! `source.snapshot` and `source.channels[].snapshot`: the initial load of a channel's objects.
//!
//! Contract: [`SnapshotMode`] per channel (`never`, the default, or `initial`); the objects a
//! snapshot reads come from `snapshot_objects` or, when absent, from the channel's name
//! ([`channel_object`]: `/data/AccountChangeEvent` → `Account`, `/data/Foo__ChangeEvent` →
//! `Foo__c`); a snapshot of a Platform Event channel, or of a channel whose objects cannot be
//! told (`/data/ChangeEvents`, a custom channel) without `snapshot_objects`, is refused naming the
//! key. [`SnapshotSettings`] are the section's shared settings, each range checked.

use std::time::Duration;

use serde::Deserialize;

use super::error::{ConfigError, invalid};

/// When a channel loads its objects' existing records before streaming.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotMode {
    /// Never: only changes are streamed.
    #[default]
    Never,
    /// When the channel has no checkpoint (a first deployment, or a checkpoint removed to load
    /// again): every record of its objects, then the stream from a position fixed before the
    /// first record was read.
    Initial,
}

/// Settings shared by every channel's snapshot.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotSettings {
    /// Objects with fewer records than this (`SELECT COUNT()`) are read with REST `query` pages
    /// (one API call per 2,000 records, no job to wait for); larger ones with a Bulk API 2.0
    /// query job. 0: always Bulk API 2.0.
    #[serde(default = "default_rest_below")]
    pub rest_below: u64,
    /// Rows per Bulk API 2.0 results page (`maxRecords`), 1,000..=1,000,000 (one page is held
    /// in memory at a time, plus the one being fetched).
    #[serde(default = "default_page_records")]
    pub page_records: u32,
    /// A resync (`source.replay_rejected: resync`) reads rows whose `SystemModstamp` is at
    /// least the checkpoint's commit timestamp minus this, for clock differences between
    /// Salesforce's servers and events published after their commit (0s..=1d).
    #[serde(default = "default_resync_margin", with = "humantime_serde")]
    pub resync_margin: Duration,
}

impl Default for SnapshotSettings {
    fn default() -> Self {
        SnapshotSettings {
            rest_below: default_rest_below(),
            page_records: default_page_records(),
            resync_margin: default_resync_margin(),
        }
    }
}

const fn default_rest_below() -> u64 {
    20_000
}
const fn default_page_records() -> u32 {
    50_000
}
const fn default_resync_margin() -> Duration {
    Duration::from_secs(300)
}

impl SnapshotSettings {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !(1_000..=1_000_000).contains(&self.page_records) {
            return Err(invalid(
                "source.snapshot.page_records",
                format!(
                    "{} is out of range: 1000 to 1000000 rows per results page",
                    self.page_records
                ),
            ));
        }
        if self.resync_margin > Duration::from_secs(86_400) {
            return Err(invalid(
                "source.snapshot.resync_margin",
                "must be at most 1d",
            ));
        }
        Ok(())
    }
}

/// The object a single-object change channel carries: `/data/AccountChangeEvent` → `Account`,
/// `/data/Foo__ChangeEvent` → `Foo__c` (Change Data Capture Developer Guide, "Subscription
/// Channels": standard objects `<Object>ChangeEvent`, custom objects `<Name>__ChangeEvent`).
/// `None` for `/data/ChangeEvents`, custom channels (`__chn`) and Platform Events.
pub fn channel_object(channel: &str) -> Option<String> {
    let name = channel.strip_prefix("/data/")?;
    if let Some(custom) = name.strip_suffix("__ChangeEvent") {
        return (!custom.is_empty()).then(|| format!("{custom}__c"));
    }
    let object = name.strip_suffix("ChangeEvent")?;
    (!object.is_empty()).then(|| object.to_owned())
}

/// Checks one channel's snapshot keys (`index` names it).
pub(super) fn validate_channel(
    index: usize,
    channel: &str,
    mode: SnapshotMode,
    objects: &[String],
) -> Result<(), ConfigError> {
    let key = |k: &str| format!("source.channels[{index}].{k}");
    for (i, object) in objects.iter().enumerate() {
        if object.is_empty()
            || !object
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(invalid(
                format!("{}[{i}]", key("snapshot_objects")),
                format!("`{object}` is not an object API name (letters, digits and '_')"),
            ));
        }
    }
    if mode == SnapshotMode::Never {
        return Ok(());
    }
    if channel.starts_with("/event/") {
        return Err(invalid(
            key("snapshot"),
            format!("`{channel}` is a Platform Event channel: events have no records to load"),
        ));
    }
    if objects.is_empty() && channel_object(channel).is_none() {
        return Err(invalid(
            key("snapshot_objects"),
            format!(
                "`{channel}` carries several objects: list the ones to load, e.g. \
                 `snapshot_objects: [Account, Contact]`"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_object_of_a_channel_follows_salesforce_naming() {
        assert_eq!(
            channel_object("/data/AccountChangeEvent").as_deref(),
            Some("Account")
        );
        assert_eq!(
            channel_object("/data/Order_Line__ChangeEvent").as_deref(),
            Some("Order_Line__c")
        );
        assert_eq!(channel_object("/data/ChangeEvents"), None);
        assert_eq!(channel_object("/data/Sales__chn"), None);
        assert_eq!(channel_object("/event/Order__e"), None);
        assert_eq!(channel_object("/data/ChangeEvent"), None);
    }

    #[test]
    fn snapshot_keys_are_checked() {
        let ok = |c: &str, o: &[&str]| {
            let o: Vec<String> = o.iter().map(|s| (*s).to_owned()).collect();
            validate_channel(2, c, SnapshotMode::Initial, &o)
        };
        assert!(ok("/data/AccountChangeEvent", &[]).is_ok());
        assert!(ok("/data/ChangeEvents", &["Account", "Contact"]).is_ok());
        let err = ok("/data/ChangeEvents", &[]).unwrap_err().to_string();
        assert!(err.contains("source.channels[2].snapshot_objects"), "{err}");
        let err = ok("/event/Order__e", &[]).unwrap_err().to_string();
        assert!(err.contains("source.channels[2].snapshot"), "{err}");
        let err = ok("/data/ChangeEvents", &["Acc ount"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("source.channels[2].snapshot_objects[0]"),
            "{err}"
        );
        let settings = SnapshotSettings {
            page_records: 10,
            ..SnapshotSettings::default()
        };
        let err = settings.validate().unwrap_err().to_string();
        assert!(err.contains("source.snapshot.page_records"), "{err}");
    }
}
