//! The configuration of a simulated org ([`SimConfig`]): its identity (org, users, connected
//! app), its timing (keepalive, idle timeout, retention, token lifetime), its channels, limits and
//! transport. The default is the demo org `forcebridge sim` and the tests run.

use std::collections::BTreeMap;
use std::time::Duration;

use super::ids;
use super::jwt_demo::DEMO_CERTIFICATE_PEM;
use super::tls;

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
    /// default [`jwt::DEMO_CERTIFICATE_PEM`](super::jwt::DEMO_CERTIFICATE_PEM) (private key:
    /// [`jwt::DEMO_PRIVATE_KEY_PEM`](super::jwt::DEMO_PRIVATE_KEY_PEM)).
    pub jwt_certificate_pem: String,
    /// Empty `FetchResponse` after this long without sending anything (Salesforce: 270 s).
    pub keepalive_interval: Duration,
    /// Close a Subscribe stream when no credits are pending and no FetchRequest came for this
    /// long (Salesforce: 60 s).
    pub idle_timeout: Duration,
    /// Close a PublishStream when no request with events came for this long (Salesforce: 70 s,
    /// `proto/pubsub_api.proto`, `rpc PublishStream`).
    pub publish_idle_timeout: Duration,
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
    /// per entity type (Salesforce: 100,000). See [`gap`](super::gap).
    pub overflow_threshold: usize,
    /// Records per SOQL query page; more rows are served through `nextRecordsUrl` (Salesforce's
    /// default batch size: 2,000).
    pub query_batch_size: usize,
    /// Serve both sides over TLS with this identity (`https://` URLs); plaintext when `None`.
    pub tls: Option<tls::SimTls>,
    /// Simulated latency added to every REST request under `/services/data` (one whole
    /// `/composite` call is one request); changed later by [`SimOrg::set_rest_latency`](super::SimOrg::set_rest_latency).
    pub rest_latency: Duration,
    /// A capture to serve (`forcebridge sim --replay DIR`, see `replay`): its events are the
    /// bus's first, with their captured replay ids, schemas and topics.
    pub replay: Option<std::sync::Arc<crate::sim::replay::format::Capture>>,
    /// The SOAP API's `login()` is enabled (API versions up to 64.0), as in orgs created before
    /// Winter '26; `false` answers it as an org created since, where it is disabled by default
    /// (SOAP API Developer Guide, "login()"; see `soap`).
    pub soap_login: bool,
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
            jwt_certificate_pem: DEMO_CERTIFICATE_PEM.into(),
            keepalive_interval: Duration::from_secs(270),
            idle_timeout: Duration::from_secs(60),
            publish_idle_timeout: Duration::from_secs(70),
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
            replay: None,
            soap_login: true,
        }
    }
}
