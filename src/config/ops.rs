//! `ops`: the operations HTTP server's settings (`crate::ops` serves them).
//!
//! Contract: `ops.kafka_probe_timeout` is between 100ms and 30s; `ops.header_read_timeout`
//! between 100ms and 60s; `ops.request_timeout` between 1s and 5m and longer than
//! `kafka_probe_timeout` (a `/readyz` waits for the probe); `ops.max_connections` between 1 and
//! 4096; `ops.stall_after` at least 1s.

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
    /// A connection must send a request's whole header within this (also between requests
    /// of a kept-alive connection), or it is closed.
    #[serde(default = "default_header_read_timeout", with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A request is answered within this (503 `request timed out` otherwise).
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Connections open at once; a new one over the limit closes the oldest connection that is
    /// not in the middle of a request, or waits for one to end.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// `/readyz` is 503 for a source channel whose received events have waited this long (beyond
    /// `source.checkpoint_interval`) for Kafka, and for a sink that has held fetched records this
    /// long with none finished.
    #[serde(default = "default_stall_after", with = "humantime_serde")]
    pub stall_after: Duration,
}

const fn default_kafka_probe_timeout() -> Duration {
    Duration::from_secs(2)
}

const fn default_header_read_timeout() -> Duration {
    Duration::from_secs(5)
}

const fn default_request_timeout() -> Duration {
    Duration::from_secs(10)
}

const fn default_max_connections() -> usize {
    64
}

/// The default of `ops.stall_after`: longer than a Composite call's retries or a broker's leader
/// election, well below librdkafka's `message.timeout.ms` (300 s).
pub(crate) const fn default_stall_after() -> Duration {
    Duration::from_secs(60)
}

impl OpsConfig {
    /// The settings of an ops server on `listen` with every other key at its default.
    pub fn on(listen: std::net::SocketAddr) -> OpsConfig {
        OpsConfig {
            listen,
            kafka_probe_timeout: default_kafka_probe_timeout(),
            header_read_timeout: default_header_read_timeout(),
            request_timeout: default_request_timeout(),
            max_connections: default_max_connections(),
            stall_after: default_stall_after(),
        }
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !(Duration::from_millis(100)..=Duration::from_secs(30))
            .contains(&self.kafka_probe_timeout)
        {
            return Err(invalid(
                "ops.kafka_probe_timeout",
                "must be between 100ms and 30s",
            ));
        }
        if !(Duration::from_millis(100)..=Duration::from_secs(60))
            .contains(&self.header_read_timeout)
        {
            return Err(invalid(
                "ops.header_read_timeout",
                "must be between 100ms and 60s",
            ));
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(300)).contains(&self.request_timeout) {
            return Err(invalid("ops.request_timeout", "must be between 1s and 5m"));
        }
        if self.request_timeout <= self.kafka_probe_timeout {
            return Err(invalid(
                "ops.request_timeout",
                "must be longer than ops.kafka_probe_timeout (/readyz waits for the Kafka probe)",
            ));
        }
        if !(1..=4096).contains(&self.max_connections) {
            return Err(invalid("ops.max_connections", "must be between 1 and 4096"));
        }
        if self.stall_after < Duration::from_secs(1) {
            return Err(invalid("ops.stall_after", "must be at least 1s"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A change to a valid config, and the key its error must name.
    type Case = (&'static str, fn(&mut OpsConfig));

    #[test]
    fn defaults_are_valid_and_each_range_names_its_key() {
        let ok = OpsConfig::on("127.0.0.1:0".parse().unwrap());
        ok.validate().unwrap();
        let cases: [Case; 5] = [
            ("ops.header_read_timeout", |c| {
                c.header_read_timeout = Duration::ZERO;
            }),
            ("ops.request_timeout", |c| {
                c.request_timeout = Duration::from_secs(3600);
            }),
            ("ops.request_timeout", |c| {
                c.kafka_probe_timeout = Duration::from_secs(20);
            }),
            ("ops.max_connections", |c| c.max_connections = 0),
            ("ops.kafka_probe_timeout", |c| {
                c.kafka_probe_timeout = Duration::from_secs(31);
            }),
        ];
        for (key, change) in cases {
            let mut config = ok.clone();
            change(&mut config);
            let err = config.validate().unwrap_err().to_string();
            assert!(err.starts_with(&format!("`{key}`")), "{key}: {err}");
        }
    }
}
