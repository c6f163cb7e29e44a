//! [`Limits`]: the org's API request usage as the benches read it, `GET /limits` as the org's
//! user; what a run's calls spent is the drop of `DailyApiRequests.Remaining` between two reads.
//!
//! Contract: built from the config's TLS settings and timeout, an instance URL and an access
//! token (one the in-process org issued, or one a login to a `forcebridge sim` process got);
//! [`Limits::remaining`] fails naming the call when the org does not answer with the figure.
//! The `/limits` resource: REST API Developer Guide, "Limits" (`DailyApiRequests.Remaining`).

use serde_json::Value;

use super::error::BenchError;
use crate::config::Config;

/// Reads `GET /limits` of one org.
pub(super) struct Limits {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl Limits {
    /// A client with the config's TLS settings and timeout, for the org at `instance_url`,
    /// calling with `token`.
    pub(super) fn new(
        config: &Config,
        instance_url: &str,
        token: String,
    ) -> Result<Limits, BenchError> {
        let tls = crate::salesforce::tls::ClientTls::from_config(&config.salesforce)
            .map_err(|e| BenchError::Failed(format!("TLS settings: {e}")))?;
        let http = crate::salesforce::auth::http_client(&tls, config.salesforce.http_timeout)
            .map_err(|e| BenchError::Failed(format!("HTTP client: {e}")))?;
        let url = format!(
            "{}/services/data/v{}/limits",
            instance_url.trim_end_matches('/'),
            config.salesforce.api_version
        );
        Ok(Limits { http, url, token })
    }

    /// `DailyApiRequests.Remaining` from `GET /limits` (a call the org counts, itself included).
    pub(super) async fn remaining(&self) -> Result<u64, BenchError> {
        let failed = |e: String| BenchError::Failed(format!("GET /limits: {e}"));
        let response = self
            .http
            .get(&self.url)
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| failed(e.to_string()))?;
        let status = response.status();
        let body: Value = response.json().await.map_err(|e| failed(e.to_string()))?;
        if !status.is_success() {
            return Err(failed(format!("HTTP {status}: {body}")));
        }
        body.pointer("/DailyApiRequests/Remaining")
            .and_then(Value::as_u64)
            .ok_or_else(|| failed(format!("no DailyApiRequests.Remaining in {body}")))
    }
}
