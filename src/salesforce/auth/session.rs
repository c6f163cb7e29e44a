//! The session every client of one side shares, renewed one login at a time, and the first
//! login, waited for while Salesforce cannot answer.
//!
//! Contract:
//! * [`SessionHandle`] holds the current [`Session`]; every client reads it per call.
//! * [`SessionHandle::renew`] replaces a session Salesforce refused (Pub/Sub
//!   `UNAUTHENTICATED`, REST 401) with a new login, once for all the callers that saw the same
//!   refused session: the first logs in while the others wait, then they find a newer session
//!   and use it (single flight). A reader, a schema fetch and a `GetTopic` of the same side
//!   that notice the refusal together cost one login. A configured access token cannot be
//!   renewed: its refusal is [`AuthError::CannotRenew`] (the process stops, naming the key).
//! * [`login_until_ready`] logs in, and after a failure that waiting can help
//!   ([`AuthError::directive`] = `Retry`, decided by `retry::classify_login`) tries again after
//!   a capped exponential backoff with full jitter, until it succeeds or `cancel` fires; each
//!   failure is reported to [`Retrying`] under its step (the `/readyz` reason and the retry
//!   counter) and cleared on success. A refusal that retrying cannot fix is returned.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::{AuthError, Authenticator};
use crate::ops::telemetry::{Retrying, error_chain};
use crate::retry::{Backoff, Directive, sleep_or_cancel};

/// The first delay after a failed login.
const LOGIN_BACKOFF_BASE: Duration = Duration::from_millis(500);
/// The longest delay between two logins while Salesforce cannot answer.
const LOGIN_BACKOFF_MAX: Duration = Duration::from_secs(30);

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
pub struct SessionHandle(Arc<Shared>);

struct Shared {
    current: RwLock<Arc<Session>>,
    /// Held by the one caller logging in again.
    renewing: tokio::sync::Mutex<()>,
}

impl SessionHandle {
    /// Wraps a first session.
    pub fn new(session: Session) -> Self {
        SessionHandle(Arc::new(Shared {
            current: RwLock::new(Arc::new(session)),
            renewing: tokio::sync::Mutex::new(()),
        }))
    }

    /// The session in force now.
    pub fn current(&self) -> Arc<Session> {
        self.0
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the session (after a re-login).
    pub fn replace(&self, session: Session) {
        *self.0.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(session);
    }

    /// Logs in again because Salesforce refused `refused` (a session taken from
    /// [`SessionHandle::current`] before the refused call), unless another caller already
    /// replaced it: `Ok(true)` when this call logged in, `Ok(false)` when a newer session was
    /// already in force. A failed login leaves the session as it was; a login that gives the
    /// refused token back (a configured access token) is [`AuthError::CannotRenew`].
    pub async fn renew(
        &self,
        authenticator: &Authenticator,
        refused: &Arc<Session>,
    ) -> Result<bool, AuthError> {
        let _one_at_a_time = self.0.renewing.lock().await;
        if !Arc::ptr_eq(&self.current(), refused) {
            return Ok(false);
        }
        let session = authenticator.login().await?;
        if session.access_token.expose_secret() == refused.access_token.expose_secret() {
            return Err(AuthError::CannotRenew);
        }
        self.replace(session);
        Ok(true)
    }
}

/// Logs in, waiting out what [`AuthError::directive`] calls transient (see the module docs);
/// `Ok(None)` when cancelled first. `step` names the login in `/readyz`
/// (`source: salesforce login`).
pub async fn login_until_ready(
    authenticator: &Authenticator,
    retrying: &Retrying,
    step: &'static str,
    cancel: &CancellationToken,
) -> Result<Option<Session>, AuthError> {
    let mut backoff = Backoff::new(LOGIN_BACKOFF_BASE, LOGIN_BACKOFF_MAX);
    loop {
        let login = tokio::select! {
            _ = cancel.cancelled() => return Ok(None),
            login = authenticator.login() => login,
        };
        match login {
            Ok(session) => {
                retrying.recovered(step);
                return Ok(Some(session));
            }
            Err(err) if err.directive() == Directive::Retry => {
                let reason = error_chain(&err);
                retrying.failed(step, &reason);
                let delay = backoff.next_delay();
                warn!(error = %reason, ?delay, attempt = backoff.attempts(), "{step} failed; retrying");
                if !sleep_or_cancel(delay, cancel).await {
                    return Ok(None);
                }
            }
            Err(err) => return Err(err),
        }
    }
}
