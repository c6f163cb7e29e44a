//! The checks of the `salesforce` config section that need the clients' knowledge
//! ([`ConfigChecks`]): the plaintext rule of the endpoints ([`crate::salesforce::tls::check_url`]),
//! the JWT bearer flow's private key ([`crate::salesforce::auth::load_jwt_signer`]) and assertion
//! lifetime ([`MAX_ASSERTION_LIFETIME`]), the CA bundle ([`ClientTls::from_config`]).
//!
//! Contract: each check loads what the clients will load, so a config that passes builds them;
//! each error is a [`ConfigError::Invalid`] naming its key, with the cause chain `: `-separated.
//! Config calls them in its own order of checks (`Config::validate`), since it imports no stage.

use crate::config::{AuthConfig, ConfigError, SalesforceChecks, SalesforceConfig, invalid};
use crate::salesforce::auth::{MAX_ASSERTION_LIFETIME, load_jwt_signer};
use crate::salesforce::tls::{ClientTls, check_url};

/// The Salesforce clients' checks of their config section.
pub(crate) struct ConfigChecks;

impl SalesforceChecks for ConfigChecks {
    fn check_url(&self, key: &str, url: &str, allow_plaintext: bool) -> Result<(), ConfigError> {
        check_url(url, allow_plaintext).map_err(|message| invalid(key, message))
    }

    fn check_jwt(&self, auth: &AuthConfig) -> Result<(), ConfigError> {
        if let Some(Err((key, e))) = load_jwt_signer(auth) {
            return Err(invalid(key, error_chain(&e)));
        }
        if let AuthConfig::JwtBearer {
            assertion_lifetime, ..
        } = auth
            && (assertion_lifetime.is_zero() || *assertion_lifetime > MAX_ASSERTION_LIFETIME)
        {
            return Err(invalid(
                "salesforce.auth.assertion_lifetime",
                "must be more than 0s and at most 3m (Salesforce's limit)",
            ));
        }
        Ok(())
    }

    fn check_tls(&self, salesforce: &SalesforceConfig) -> Result<(), ConfigError> {
        match ClientTls::from_config(salesforce) {
            Ok(_) => Ok(()),
            Err(e) => Err(invalid("salesforce.ca_file", error_chain(&e))),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const JWT: &str = r#"
salesforce:
  login_url: https://acme.my.salesforce.com
  auth:
    type: jwt_bearer
    client_id: 3MVG9id
    username: integration@acme.example
    private_key: not a key
sink:
  topics: [writeback]
kafka:
  bootstrap_servers: localhost:9092
"#;

    #[test]
    fn the_default_assertion_lifetime_is_salesforces_limit() {
        let config = Config::parse(JWT, |_| None).unwrap();
        let AuthConfig::JwtBearer {
            assertion_lifetime, ..
        } = config.salesforce.auth
        else {
            panic!("wrong auth variant");
        };
        assert_eq!(assertion_lifetime, MAX_ASSERTION_LIFETIME);
    }

    #[test]
    fn an_unusable_key_is_refused_before_the_api_version() {
        let text = JWT.replace("  auth:", "  api_version: latest\n  auth:");
        let err = Config::from_yaml(&text, |_| None).unwrap_err().to_string();
        assert!(err.starts_with("`salesforce.auth.private_key`: "), "{err}");
        assert!(err.contains("no PEM private key found"), "{err}");
    }
}
