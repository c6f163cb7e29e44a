//! Salesforce OAuth 2.0 login.
//!
//! Contract: [`Authenticator::login`] runs the configured flow against
//! `<login_url>/services/oauth2/token` and returns a [`Session`] (access token, instance URL,
//! org id, user id). The org id comes from the token response's identity URL
//! (`…/id/<orgId>/<userId>`), or from `/services/oauth2/userinfo` when that is absent. A given
//! access token is used as is. Errors carry Salesforce's `error` / `error_description`.
//! [`SessionHandle`] holds the current session for every client; logging in again replaces it.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::config::{AuthConfig, SalesforceConfig};

/// Login failures.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The token endpoint rejected the credentials.
    #[error("Salesforce login at {url} was refused: {error}: {description}")]
    Rejected {
        url: String,
        error: String,
        description: String,
    },
    /// The endpoint could not be reached or answered something unreadable.
    #[error("Salesforce login at {url} failed")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The response lacked something Salesforce always sends.
    #[error("Salesforce login at {url}: unexpected response: {message}")]
    Protocol { url: String, message: String },
}

impl AuthError {
    /// Whether trying again later can help (network trouble, 5xx); refused credentials cannot.
    pub fn is_retryable(&self) -> bool {
        match self {
            AuthError::Transport { source, .. } => {
                source.is_connect()
                    || source.is_timeout()
                    || source.status().is_some_and(|s| s.is_server_error())
            }
            AuthError::Rejected { .. } | AuthError::Protocol { .. } => false,
        }
    }
}

/// An authenticated session with an org.
#[derive(Clone)]
pub struct Session {
    /// OAuth access token (session id).
    pub access_token: SecretString,
    /// e.g. `https://acme.my.salesforce.com`.
    pub instance_url: String,
    /// 18-character org id (the `tenantid` of Pub/Sub calls).
    pub org_id: String,
    /// The integration user's id, when known.
    pub user_id: Option<String>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("access_token", &"[REDACTED]")
            .field("instance_url", &self.instance_url)
            .field("org_id", &self.org_id)
            .field("user_id", &self.user_id)
            .finish()
    }
}

/// The current session, shared by the gRPC and REST clients; swapped on re-login.
#[derive(Clone)]
pub struct SessionHandle(Arc<RwLock<Arc<Session>>>);

impl SessionHandle {
    /// Wraps a first session.
    pub fn new(session: Session) -> Self {
        SessionHandle(Arc::new(RwLock::new(Arc::new(session))))
    }

    /// The session in force now.
    pub fn current(&self) -> Arc<Session> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the session (after a re-login).
    pub fn replace(&self, session: Session) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(session);
    }
}

/// Runs the configured OAuth flow.
pub struct Authenticator {
    http: reqwest::Client,
    login_url: String,
    auth: AuthConfig,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    instance_url: String,
    /// Identity URL: `https://login.salesforce.com/id/<orgId>/<userId>`.
    #[serde(default)]
    id: Option<String>,
}

#[derive(Deserialize)]
struct OAuthErrorBody {
    error: String,
    #[serde(default)]
    error_description: String,
}

#[derive(Deserialize)]
struct UserInfo {
    organization_id: String,
    #[serde(default)]
    user_id: Option<String>,
}

impl Authenticator {
    /// Builds an authenticator for the configured org.
    pub fn new(config: &SalesforceConfig, http: reqwest::Client) -> Self {
        Authenticator {
            http,
            login_url: config.login_url.trim_end_matches('/').to_owned(),
            auth: config.auth.clone(),
        }
    }

    /// Logs in and returns a fresh session.
    pub async fn login(&self) -> Result<Session, AuthError> {
        let (token, instance_url, identity) = match &self.auth {
            AuthConfig::AccessToken {
                access_token,
                instance_url,
                org_id,
            } => {
                let instance_url = instance_url.trim_end_matches('/').to_owned();
                if let Some(org_id) = org_id {
                    return Ok(Session {
                        access_token: access_token.clone(),
                        instance_url,
                        org_id: org_id.clone(),
                        user_id: None,
                    });
                }
                (access_token.clone(), instance_url, None)
            }
            AuthConfig::ClientCredentials {
                client_id,
                client_secret,
            } => {
                let form = [
                    ("grant_type", "client_credentials"),
                    ("client_id", client_id.as_str()),
                    ("client_secret", client_secret.expose_secret()),
                ];
                self.token_request(&form).await?
            }
            AuthConfig::Password {
                client_id,
                client_secret,
                username,
                password,
                security_token,
            } => {
                let mut secret = password.expose_secret().to_owned();
                if let Some(token) = security_token {
                    secret.push_str(token.expose_secret());
                }
                let form = [
                    ("grant_type", "password"),
                    ("client_id", client_id.as_str()),
                    ("client_secret", client_secret.expose_secret()),
                    ("username", username.as_str()),
                    ("password", secret.as_str()),
                ];
                self.token_request(&form).await?
            }
        };
        let (org_id, user_id) = match identity.as_deref().and_then(parse_identity_url) {
            Some((org, user)) => (org, Some(user)),
            None => {
                let info = self.userinfo(&token, &instance_url).await?;
                (info.organization_id, info.user_id)
            }
        };
        Ok(Session {
            access_token: token,
            instance_url,
            org_id,
            user_id,
        })
    }

    async fn token_request(
        &self,
        form: &[(&str, &str)],
    ) -> Result<(SecretString, String, Option<String>), AuthError> {
        let url = format!("{}/services/oauth2/token", self.login_url);
        let transport = |source| AuthError::Transport {
            url: url.clone(),
            source,
        };
        let response = self
            .http
            .post(&url)
            .form(form)
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        let body = response.bytes().await.map_err(transport)?;
        if !status.is_success() {
            return Err(match serde_json::from_slice::<OAuthErrorBody>(&body) {
                Ok(e) => AuthError::Rejected {
                    url,
                    error: e.error,
                    description: e.error_description,
                },
                Err(_) => AuthError::Protocol {
                    message: format!("HTTP {status}: {}", String::from_utf8_lossy(&body)),
                    url,
                },
            });
        }
        let token: TokenResponse =
            serde_json::from_slice(&body).map_err(|e| AuthError::Protocol {
                url: url.clone(),
                message: format!("token response is not valid: {e}"),
            })?;
        Ok((
            SecretString::from(token.access_token),
            token.instance_url.trim_end_matches('/').to_owned(),
            token.id,
        ))
    }

    async fn userinfo(
        &self,
        token: &SecretString,
        instance_url: &str,
    ) -> Result<UserInfo, AuthError> {
        let url = format!("{instance_url}/services/oauth2/userinfo");
        let transport = |source| AuthError::Transport {
            url: url.clone(),
            source,
        };
        let response = self
            .http
            .get(&url)
            .bearer_auth(token.expose_secret())
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        if !status.is_success() {
            return Err(AuthError::Rejected {
                url: url.clone(),
                error: format!("HTTP {status}"),
                description: "userinfo refused the access token".to_owned(),
            });
        }
        response.json().await.map_err(transport)
    }
}

/// `https://login.salesforce.com/id/00D.../005...` → (org id, user id).
fn parse_identity_url(url: &str) -> Option<(String, String)> {
    let mut parts = url.rsplit('/');
    let user = parts.next()?;
    let org = parts.next()?;
    let marker = parts.next()?;
    (marker == "id" && !org.is_empty() && !user.is_empty())
        .then(|| (org.to_owned(), user.to_owned()))
}

/// An HTTP client for Salesforce calls: rustls with the platform's roots, a request timeout.
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    crate::telemetry::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(timeout)
        .user_agent(concat!("forcebridge/", env!("CARGO_PKG_VERSION")))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_url_yields_org_and_user() {
        assert_eq!(
            parse_identity_url(
                "https://login.salesforce.com/id/00D5g000004uvXYEAY/0055g00000ABCDEAA2"
            ),
            Some(("00D5g000004uvXYEAY".into(), "0055g00000ABCDEAA2".into()))
        );
        assert_eq!(parse_identity_url("https://example.com/nothing"), None);
    }

    #[test]
    fn session_debug_hides_the_token() {
        let session = Session {
            access_token: SecretString::from("00D!secret-token".to_owned()),
            instance_url: "https://x".into(),
            org_id: "00D".into(),
            user_id: None,
        };
        assert!(!format!("{session:?}").contains("secret-token"));
    }
}
