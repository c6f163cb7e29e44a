//! `ops`: the operations HTTP server's settings (`crate::ops` serves them).
//!
//! Contract: `ops.kafka_probe_timeout` is between 100ms and 30s; `ops.stall_after` at least 1s.

use std::time::Duration;

use serde::Deserialize;

use super::error::{ConfigError, invalid};

/// `ops`: the operations HTTP server (see `crate::ops`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpsConfig {
    /// Address to listen on, e.g. `0.0.0.0:9464` (port 0: any free port, logged).
    pub listen: std::net::SocketAddr,
    /// How long `/readyz` waits for Kafka to answer a metadata request.
    #[serde(default = "default_kafka_probe_timeout", with = "humantime_serde")]
    pub kafka_probe_timeout: Duration,
    /// `/readyz` is 503 for a source channel whose received events have waited this long (beyond
    /// `source.checkpoint_interval`) for Kafka, and for a sink that has held fetched records this
    /// long with none finished.
    #[serde(default = "default_stall_after", with = "humantime_serde")]
    pub stall_after: Duration,
}

const fn default_kafka_probe_timeout() -> Duration {
    Duration::from_secs(2)
}

/// The default of `ops.stall_after`: longer than a Composite call's retries or a broker's leader
/// election, well below librdkafka's `message.timeout.ms` (300 s).
pub(crate) const fn default_stall_after() -> Duration {
    Duration::from_secs(60)
}

impl OpsConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !(Duration::from_millis(100)..=Duration::from_secs(30))
            .contains(&self.kafka_probe_timeout)
        {
            return Err(invalid(
                "ops.kafka_probe_timeout",
                "must be between 100ms and 30s",
            ));
        }
        if self.stall_after < Duration::from_secs(1) {
            return Err(invalid("ops.stall_after", "must be at least 1s"));
        }
        Ok(())
    }
}
