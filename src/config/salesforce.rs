//! `salesforce`: where the org is and how to log in ([`SalesforceConfig`], [`AuthConfig`]).
//!
//! Contract: [`SalesforceConfig::validate`] checks the section in a fixed order, each error naming
//! its key: the endpoints' plaintext rule, the JWT bearer flow's key choice, key and assertion
//! lifetime, `api_version`, the CA bundle, `client_tag`. The rules only the Salesforce clients
//! know (the plaintext rule, loading the key and the CA bundle, Salesforce's assertion lifetime
//! limit) come from a [`SalesforceChecks`] the caller hands in: config imports no stage.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use super::error::{ConfigError, invalid};

/// The checks of the `salesforce` section that need the Salesforce clients' knowledge, each
/// error naming its key. `crate::salesforce::checks::ConfigChecks` implements them; config imports
/// no stage, so whoever validates a config hands them in (`Config::validate`).
pub(crate) trait SalesforceChecks {
    /// `url`, the value of `key`, against the plaintext rule of `salesforce.allow_plaintext`.
    fn check_url(&self, key: &str, url: &str, allow_plaintext: bool) -> Result<(), ConfigError>;
    /// The JWT bearer flow's private key loads, and its assertion lifetime is one Salesforce
    /// accepts (called for that flow only, once exactly one key source is set).
    fn check_jwt(&self, auth: &AuthConfig) -> Result<(), ConfigError>;
    /// The trust settings load (the CA bundle of `salesforce.ca_file`).
    fn check_tls(&self, salesforce: &SalesforceConfig) -> Result<(), ConfigError>;
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

/// 3 minutes: the longest assertion lifetime Salesforce accepts
/// (`crate::salesforce::auth::MAX_ASSERTION_LIFETIME`, which a test keeps equal to it).
const fn default_assertion_lifetime() -> Duration {
    Duration::from_secs(180)
}

/// The characters of a client tag (and of the connector `name`, its default).
pub(super) fn is_tag_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}

impl SalesforceConfig {
    /// The section's checks, in order; `checks` makes those that need the Salesforce clients'
    /// knowledge.
    pub(super) fn validate(&self, checks: &dyn SalesforceChecks) -> Result<(), ConfigError> {
        let plaintext = self.allow_plaintext;
        checks.check_url("salesforce.login_url", &self.login_url, plaintext)?;
        checks.check_url(
            "salesforce.pubsub_endpoint",
            &self.pubsub_endpoint,
            plaintext,
        )?;
        if let AuthConfig::AccessToken { instance_url, .. } = &self.auth {
            checks.check_url("salesforce.auth.instance_url", instance_url, plaintext)?;
        }
        if let AuthConfig::JwtBearer {
            private_key_file,
            private_key,
            ..
        } = &self.auth
        {
            if private_key_file.is_some() == private_key.is_some() {
                return Err(invalid(
                    "salesforce.auth.private_key_file",
                    "set exactly one of `private_key_file` (a PEM file) and `private_key` (the PEM text)",
                ));
            }
            checks.check_jwt(&self.auth)?;
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
        checks.check_tls(self)?;
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
}
