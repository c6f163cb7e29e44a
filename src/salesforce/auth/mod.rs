//! Salesforce OAuth 2.0 login.
//!
//! Contract: [`Authenticator::login`] runs the configured flow against
//! `<login_url>/services/oauth2/token` and returns a [`Session`] (access token, instance URL,
//! org id, user id). The org id comes from the token response's identity URL
//! (`…/id/<orgId>/<userId>`), or from `/services/oauth2/userinfo` when that is absent. A given
//! access token is used as is. Errors carry Salesforce's `error` / `error_description`. The
//! `instance_url` a login returns is checked (`instance.rs`: a Salesforce domain or the login
//! host, and the plaintext rule) before the token is sent to it; a refusal stops the process.
//! [`SessionHandle`] holds the current session for every client; logging in again replaces it.
//!
//! Flows: client credentials (My Domain login URL; the connected app's "Run As" user),
//! username-password (password + security token), a given access token, and the JWT bearer flow:
//! a fresh assertion per login (header `{"alg":"RS256"}`, claims `iss` = consumer key, `sub` =
//! username, `aud` = [`jwt_audience`], `exp` = now + `assertion_lifetime` ≤ 3 min), signed with
//! the connected app's private key ([`JwtSigner`], PKCS#8 or PKCS#1 PEM, read once when the
//! [`Authenticator`] is built) and posted as
//! `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=…`.
//!
//! Failures: [`AuthError::directive`] asks `retry::classify_login`, the one place that decides:
//! no answer, 5xx/408/429, an answer that is not Salesforce's OAuth JSON (a maintenance or proxy
//! HTML page, even with 200), or `unknown_error` are waited out by the callers
//! ([`login_until_ready`], the re-logins); `invalid_client`, `invalid_grant`,
//! `unsupported_grant_type` and the other refusals of the configuration or credentials stop.
//!
//! Expiry: Salesforce's token response carries no `expires_in` (the session timeout is the
//! connected app's or the org's policy), so sessions are renewed on rejection: the Pub/Sub side
//! logs in again on `UNAUTHENTICATED`, the REST client on 401 `INVALID_SESSION_ID`. Every flow
//! but a given access token can log in again; the JWT flow signs a new assertion each time.

mod instance;
mod jwt;
mod session;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::config::{AuthConfig, SalesforceConfig};
use crate::retry::{Directive, classify_login};
use crate::salesforce::tls::ClientTls;

pub(crate) use jwt::{
    JWT_BEARER_GRANT, JwtClaims, JwtSigner, MAX_ASSERTION_LIFETIME, load_jwt_signer,
};
pub use jwt::{KeyError, jwt_audience};
pub use session::{Session, SessionHandle, login_until_ready};

/// Login failures.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The TLS handshake failed on the server's certificate.
    #[error(
        "Salesforce login at {url} failed: {reason} ({})",
        crate::salesforce::tls::CERTIFICATE_HINT
    )]
    Certificate { url: String, reason: String },
    /// Salesforce answered with its OAuth error body (`{"error", "error_description"}`).
    #[error(
        "Salesforce login at {url} was refused (HTTP {status}): {error}: {description}{}",
        refusal_hint(error, description)
    )]
    Rejected {
        url: String,
        status: u16,
        error: String,
        description: String,
    },
    /// No answer: connection refused or reset, DNS, timeout, a body cut short.
    #[error("Salesforce login at {url} failed")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// An answer that is not Salesforce's (an HTML maintenance or proxy page, a 200 that is not
    /// a token, an empty body); `what` describes it without repeating a 2xx body (it could hold
    /// a token).
    #[error("Salesforce login at {url}: HTTP {status} with {what}")]
    Unreadable {
        url: String,
        status: u16,
        what: String,
    },
    /// Salesforce refused the configured access token (`salesforce.auth.type: access_token`),
    /// which forcebridge cannot renew.
    #[error(
        "Salesforce refused the configured access token (salesforce.auth.access_token), which cannot be renewed: give a new one, or use a flow that logs in (jwt_bearer, client_credentials)"
    )]
    CannotRenew,
    /// The token endpoint named an `instance_url` the token must not go to (a host outside
    /// Salesforce's domains and the login host, or plaintext against the rule): configuration
    /// or an attack, not a hiccup.
    #[error("Salesforce login at {url} returned an instance_url that is not trusted: {reason}")]
    UntrustedInstance { url: String, reason: String },
    /// The JWT bearer flow's private key is unusable (`key` is the config key it came from).
    #[error("JWT bearer login: {key}: {source}")]
    PrivateKey {
        key: &'static str,
        #[source]
        source: Arc<KeyError>,
    },
}

impl AuthError {
    /// What to do next, decided by [`classify_login`] (the one place): [`Directive::Retry`] when
    /// waiting for Salesforce can help (no answer, 5xx, 429, an answer that is not Salesforce's,
    /// `unknown_error`), else [`Directive::Stop`]: refused credentials or configuration
    /// (`invalid_client`, `invalid_grant`, `unsupported_grant_type`, …), a refused certificate,
    /// an unusable key.
    pub fn directive(&self) -> Directive {
        match self {
            AuthError::Transport { .. } => classify_login(None, None),
            AuthError::Rejected { status, error, .. } => classify_login(Some(*status), Some(error)),
            AuthError::Unreadable { status, .. } => classify_login(Some(*status), None),
            AuthError::Certificate { .. }
            | AuthError::CannotRenew
            | AuthError::UntrustedInstance { .. }
            | AuthError::PrivateKey { .. } => Directive::Stop,
        }
    }
}

/// The error of an answer with `status` that is not a success: Salesforce's OAuth error when
/// the body is one, else a description of what came (content type, length, and for a refusal
/// the start of the body on one line).
fn refusal(url: &str, status: reqwest::StatusCode, content_type: &str, body: &[u8]) -> AuthError {
    if let Ok(e) = serde_json::from_slice::<OAuthErrorBody>(body) {
        return AuthError::Rejected {
            url: url.to_owned(),
            status: status.as_u16(),
            error: e.error,
            description: e.error_description,
        };
    }
    unreadable(
        url,
        status,
        content_type,
        body,
        "a body that is not Salesforce's OAuth answer",
    )
}

/// [`AuthError::Unreadable`]: `what` came, described by type and length; the start of the body
/// only when it is not a success (a 2xx body may hold a token).
fn unreadable(
    url: &str,
    status: reqwest::StatusCode,
    content_type: &str,
    body: &[u8],
    what: &str,
) -> AuthError {
    let content_type = if content_type.is_empty() {
        "no content type"
    } else {
        content_type
    };
    let mut what = format!("{what} ({content_type}, {} bytes)", body.len());
    if !status.is_success() && !body.is_empty() {
        let text = String::from_utf8_lossy(body);
        let head: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let head: String = head.chars().take(160).collect();
        what.push_str(&format!(": {head}"));
    }
    AuthError::Unreadable {
        url: url.to_owned(),
        status: status.as_u16(),
        what,
    }
}

/// A loaded JWT signing key, or why it could not be loaded and from which config key.
type LoadedSigner = Result<Arc<JwtSigner>, (&'static str, Arc<KeyError>)>;

/// Runs the configured OAuth flow.
pub struct Authenticator {
    http: reqwest::Client,
    login_url: String,
    /// `salesforce.allow_plaintext`: the plaintext rule the returned `instance_url` must pass.
    allow_plaintext: bool,
    auth: AuthConfig,
    /// The JWT flow's key, loaded when the authenticator is built.
    jwt_signer: Option<LoadedSigner>,
    /// The clock assertion expiries are computed from (tests move it).
    clock: fn() -> SystemTime,
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
    ///
    /// The JWT flow's private key is read and parsed here, once (config validation has checked
    /// it); if it has become unusable since, every login fails with [`AuthError::PrivateKey`].
    pub fn new(config: &SalesforceConfig, http: reqwest::Client) -> Self {
        let jwt_signer = load_jwt_signer(&config.auth)
            .map(|loaded| loaded.map(Arc::new).map_err(|(key, e)| (key, Arc::new(e))));
        Authenticator {
            http,
            login_url: config.login_url.trim_end_matches('/').to_owned(),
            allow_plaintext: config.allow_plaintext,
            auth: config.auth.clone(),
            jwt_signer,
            clock: SystemTime::now,
        }
    }

    /// Replaces the clock the JWT assertion's `exp` is computed from (tests use a clock in the
    /// past to produce an expired assertion).
    pub fn with_clock(mut self, clock: fn() -> SystemTime) -> Self {
        self.clock = clock;
        self
    }

    fn sign_assertion(
        &self,
        client_id: &str,
        username: &str,
        audience: Option<&str>,
        lifetime: Duration,
    ) -> Result<String, AuthError> {
        let signer = match &self.jwt_signer {
            Some(Ok(signer)) => signer,
            Some(Err((key, e))) => {
                return Err(AuthError::PrivateKey {
                    key,
                    source: e.clone(),
                });
            }
            None => {
                return Err(AuthError::PrivateKey {
                    key: "salesforce.auth.private_key_file",
                    source: Arc::new(KeyError::NotPem {
                        detail: "; no key was loaded".to_owned(),
                    }),
                });
            }
        };
        let exp = (self.clock)()
            .checked_add(lifetime)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        let claims = JwtClaims {
            iss: client_id.to_owned(),
            sub: username.to_owned(),
            aud: jwt_audience(&self.login_url, audience),
            exp,
        };
        signer
            .assertion(&claims)
            .map_err(|e| AuthError::PrivateKey {
                key: "salesforce.auth.private_key_file",
                source: Arc::new(e),
            })
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
            AuthConfig::JwtBearer {
                client_id,
                username,
                audience,
                assertion_lifetime,
                ..
            } => {
                let assertion = self.sign_assertion(
                    client_id,
                    username,
                    audience.as_deref(),
                    *assertion_lifetime,
                )?;
                let form = [
                    ("grant_type", JWT_BEARER_GRANT),
                    ("assertion", assertion.as_str()),
                ];
                self.token_request(&form).await.map_err(jwt_hint)?
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
        let transport = |source| transport_error(&url, source);
        let response = self
            .http
            .post(&url)
            .form(form)
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        let content_type = content_type(&response);
        let body = response.bytes().await.map_err(transport)?;
        if !status.is_success() {
            return Err(refusal(&url, status, &content_type, &body));
        }
        let token: TokenResponse = serde_json::from_slice(&body).map_err(|_| {
            unreadable(
                &url,
                status,
                &content_type,
                &body,
                "a body that is not a token response",
            )
        })?;
        // Checked before anything is sent to it (userinfo, REST): the token goes to this host.
        let instance_url = token.instance_url.trim_end_matches('/').to_owned();
        instance::check_instance_url(&instance_url, &self.login_url, self.allow_plaintext)
            .map_err(|reason| AuthError::UntrustedInstance {
                url: url.clone(),
                reason,
            })?;
        Ok((
            SecretString::from(token.access_token),
            instance_url,
            token.id,
        ))
    }

    async fn userinfo(
        &self,
        token: &SecretString,
        instance_url: &str,
    ) -> Result<UserInfo, AuthError> {
        let url = format!("{instance_url}/services/oauth2/userinfo");
        let transport = |source| transport_error(&url, source);
        let response = self
            .http
            .get(&url)
            .bearer_auth(token.expose_secret())
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        let content_type = content_type(&response);
        let body = response.bytes().await.map_err(transport)?;
        if !status.is_success() {
            return Err(refusal(&url, status, &content_type, &body));
        }
        serde_json::from_slice(&body).map_err(|_| {
            unreadable(
                &url,
                status,
                &content_type,
                &body,
                "a body that is not userinfo",
            )
        })
    }
}

/// The `Content-Type` of an answer, or empty.
fn content_type(response: &reqwest::Response) -> String {
    response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// A failed request: [`AuthError::Certificate`] when the server's certificate was refused.
fn transport_error(url: &str, source: reqwest::Error) -> AuthError {
    match crate::salesforce::tls::certificate_error(&source) {
        Some(reason) => AuthError::Certificate {
            url: url.to_owned(),
            reason,
        },
        None => AuthError::Transport {
            url: url.to_owned(),
            source,
        },
    }
}

/// What to check after a refusal of any flow, appended when shown (the description stays
/// Salesforce's): which config keys the OAuth error points at (Salesforce Help, "OAuth 2.0
/// Authorization Errors").
fn refusal_hint(error: &str, description: &str) -> &'static str {
    match (error, description) {
        ("invalid_client", _) => {
            " (check salesforce.auth.client_id and client_secret: the connected app's consumer key and secret)"
        }
        ("invalid_grant", "authentication failure") => {
            " (check salesforce.auth.username, password and security_token)"
        }
        ("unsupported_grant_type", _) => {
            " (the connected app or the org does not allow this salesforce.auth.type)"
        }
        ("inactive_user" | "inactive_org", _) => " (the integration user or the org is not active)",
        _ => "",
    }
}

/// Adds what to check to Salesforce's terse JWT bearer refusals.
fn jwt_hint(error: AuthError) -> AuthError {
    let AuthError::Rejected {
        url,
        status,
        error,
        description,
    } = error
    else {
        return error;
    };
    let hint = match (error.as_str(), description.as_str()) {
        ("invalid_grant", "invalid assertion") => {
            "the signature does not match the certificate uploaded to the connected app, or the assertion is malformed or expires too late (at most 3 minutes ahead)"
        }
        ("invalid_grant", "expired authorization code") => {
            "the assertion's exp is in the past: check this host's clock"
        }
        ("invalid_grant", "audience is invalid") => {
            "set salesforce.auth.audience to https://login.salesforce.com (production) or https://test.salesforce.com (sandbox)"
        }
        ("invalid_grant", "user hasn't approved this consumer") => {
            "pre-authorize the user (salesforce.auth.username) for the connected app, through a profile or permission set"
        }
        ("invalid_client_id", _) => {
            "salesforce.auth.client_id must be the connected app's consumer key"
        }
        _ => {
            return AuthError::Rejected {
                url,
                status,
                error,
                description,
            };
        }
    };
    AuthError::Rejected {
        url,
        status,
        error,
        description: format!("{description} ({hint})"),
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

/// The HTTP client of every Salesforce call (OAuth, REST, gap re-reads, the sink, `check`):
/// rustls with the platform verifier plus the extra roots of `tls` (`salesforce.ca_file`), a
/// request timeout, and `https://` only unless `tls` allows plaintext (loopback, checked by the
/// config). A redirect is followed (at most 10) only to a URL that passes the plaintext rule:
/// with `allow_plaintext`, never to `http://` on a host that is not loopback.
pub fn http_client(tls: &ClientTls, timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    crate::ops::telemetry::install_crypto_provider();
    let plaintext = tls.plaintext_allowed();
    let redirects = reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= 10 {
            return attempt.error("too many redirects (more than 10)");
        }
        match crate::salesforce::tls::check_url(attempt.url().as_str(), plaintext) {
            Ok(()) => attempt.follow(),
            Err(reason) => attempt.error(format!("redirect refused: {reason}")),
        }
    });
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .user_agent(concat!("forcebridge/", env!("CARGO_PKG_VERSION")))
        .https_only(!plaintext)
        .redirect(redirects);
    for der in tls.extra_roots() {
        builder = builder.add_root_certificate(reqwest::Certificate::from_der(der)?);
    }
    builder.build()
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

    /// Issue 19, item 11: with `allow_plaintext`, the client follows a redirect to loopback but
    /// not to `http://` on another host (TEST-NET-1, never reached).
    #[tokio::test]
    async fn plaintext_redirects_only_to_loopback() {
        use axum::response::Redirect;
        let app = axum::Router::new()
            .route(
                "/away",
                axum::routing::get(|| async { Redirect::temporary("http://192.0.2.1/") }),
            )
            .route(
                "/home",
                axum::routing::get(|| async { Redirect::temporary("/ok") }),
            )
            .route("/ok", axum::routing::get(|| async { "ok" }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let tls = ClientTls::new().allow_plaintext(true);
        let client = http_client(&tls, Duration::from_secs(30)).unwrap();
        let home = client.get(format!("{base}/home")).send().await.unwrap();
        assert_eq!(home.text().await.unwrap(), "ok");
        let away = client.get(format!("{base}/away")).send().await.unwrap_err();
        assert!(away.is_redirect(), "{away:?}");
        let chain = format!("{:?}", away);
        assert!(chain.contains("not loopback"), "{chain}");
        server.abort();
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
