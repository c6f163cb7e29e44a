//! The REST client of the write-back sink, the gap re-reads and the snapshots ([`RestClient`]):
//! one request at a time with the current session, the call options header and the org's API
//! usage read from every answer; retries by [`crate::retry::classify_http`], re-login on 401, and
//! the hold on the [`LimitGuard`] with its `/limits` polls. [`RestClient::execute`] answers the
//! body; [`RestClient::execute_for`] also the response headers and takes the `Accept` type (the
//! Bulk API 2.0 results are `text/csv`), through the same retries. The calls themselves are in
//! [`super::composite`], [`super::query`], [`super::describe`], [`super::bulk`] and
//! [`super::replication`]; the contract is the module's ([`super`]).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use reqwest::Method;
use reqwest::header::{ACCEPT, HeaderMap, HeaderValue};
use secrecy::ExposeSecret;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::errors::{ApiError, RestError, errors_from_bytes, summarize};
use super::limits::{ApiUsage, LIMIT_INFO_HEADER, LimitGuard, parse_limit_info, parse_limits};
use crate::ops::telemetry::error_chain;
use crate::ops::telemetry::{ApiStats, Retrying};
use crate::retry::{
    Backoff, Directive, MAX_UNREADABLE_ATTEMPTS, UNREADABLE_RESPONSE, classify_http,
    sleep_or_cancel,
};
use crate::salesforce::auth::{AuthError, Authenticator, Session, SessionHandle};

/// Salesforce's call options header (`client=<tag>`).
pub(crate) const CALL_OPTIONS_HEADER: &str = "Sforce-Call-Options";

const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(200);
const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// The first wait between two polls of a Bulk API 2.0 job, doubled up to the cap.
const DEFAULT_JOB_POLL_FIRST: Duration = Duration::from_millis(100);
const DEFAULT_JOB_POLL_MAX: Duration = Duration::from_secs(10);

/// A 2xx answer: headers and body.
#[derive(Debug)]
pub(super) struct Answer {
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// The header's value as text, when present and printable.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// What one call sends: method, path (and query), JSON body, the `Accept` type, and whether the
/// limit guard holds it.
pub(super) struct Call<'a> {
    pub method: Method,
    pub path: &'a str,
    pub body: Option<&'a Value>,
    pub accept: &'static str,
    pub guarded: bool,
}

impl<'a> Call<'a> {
    /// A guarded call answered with JSON.
    pub fn json(method: Method, path: &'a str, body: Option<&'a Value>) -> Self {
        Call {
            method,
            path,
            body,
            accept: "application/json",
            guarded: true,
        }
    }
}

/// The call options value for `tag`, or why it cannot be one.
fn call_options_value(tag: &str) -> Result<HeaderValue, String> {
    let printable = tag
        .bytes()
        .all(|b| (b' '..=b'~').contains(&b) && !matches!(b, b';' | b',' | b'='));
    if tag.trim().is_empty() || !printable {
        return Err(format!(
            "client tag `{tag}` must be non-empty printable ASCII without `;`, `,` or `=`"
        ));
    }
    HeaderValue::from_str(&format!("client={tag}")).map_err(|e| e.to_string())
}

/// One HTTP exchange's outcome.
enum Exchange {
    /// 2xx, with the headers and body.
    Success(Answer),
    /// Any other status, with Salesforce's errors and the session that was used.
    Refused {
        status: u16,
        errors: Vec<ApiError>,
        session: Arc<Session>,
    },
    /// No answer (or no complete answer).
    Transport(reqwest::Error),
}

/// The REST client of the write-back sink. Cheap to clone; clones share the session, the
/// counters and the guard.
#[derive(Clone)]
pub struct RestClient {
    inner: Arc<ClientInner>,
    backoff_base: Duration,
    backoff_max: Duration,
    job_poll: (Duration, Duration),
    subrequest_call_options: bool,
}

struct ClientInner {
    http: reqwest::Client,
    auth: Authenticator,
    session: SessionHandle,
    /// `/services/data/v62.0`.
    data_path: String,
    client_tag: String,
    call_options: Result<HeaderValue, String>,
    guard: LimitGuard,
    stats: Arc<ApiStats>,
    /// Where a re-login that keeps failing is reported (`/readyz`), and under which step.
    retrying: Option<(Arc<Retrying>, &'static str)>,
}

impl fmt::Debug for RestClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RestClient")
            .field("data_path", &self.inner.data_path)
            .field("client_tag", &self.inner.client_tag)
            .field("guard", &self.inner.guard)
            .finish_non_exhaustive()
    }
}

impl RestClient {
    /// A client for the org of `session`, API version `api_version` (`62.0`; a leading `v` is
    /// accepted), tagging every call `client=<client_tag>`. An unusable tag (empty, non-ASCII,
    /// `;`, `,`, `=`) makes every call fail with [`RestError::Invalid`].
    pub fn new(
        http: reqwest::Client,
        auth: Authenticator,
        session: SessionHandle,
        api_version: String,
        client_tag: String,
        guard: LimitGuard,
    ) -> Self {
        let version = api_version.trim_start_matches(['v', 'V']);
        RestClient {
            inner: Arc::new(ClientInner {
                http,
                auth,
                session,
                data_path: format!("/services/data/v{version}"),
                call_options: call_options_value(&client_tag),
                client_tag,
                guard,
                stats: Arc::default(),
                retrying: None,
            }),
            backoff_base: DEFAULT_BACKOFF_BASE,
            backoff_max: DEFAULT_BACKOFF_MAX,
            job_poll: (DEFAULT_JOB_POLL_FIRST, DEFAULT_JOB_POLL_MAX),
            subrequest_call_options: false,
        }
    }

    /// Counts into `stats` (e.g. the sink's, for `/metrics`) instead of the client's own
    /// counters. Call it on a new client, before it is cloned.
    pub(crate) fn with_stats(mut self, stats: Arc<ApiStats>) -> Self {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.stats = stats,
            None => warn!("RestClient::with_stats on a shared client: the counters stay its own"),
        }
        self
    }

    /// Reports re-logins that fail transiently to `retrying` under `step` (a `/readyz` reason
    /// until a login succeeds). Call it on a new client, before it is cloned.
    pub(crate) fn with_retrying(mut self, retrying: Arc<Retrying>, step: &'static str) -> Self {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.retrying = Some((retrying, step)),
            None => warn!("RestClient::with_retrying on a shared client: not reported"),
        }
        self
    }

    /// Retry backoff: starts at `base`, doubles up to `max`, full jitter (default 200 ms – 30 s).
    pub fn with_backoff(mut self, base: Duration, max: Duration) -> Self {
        self.backoff_base = base;
        self.backoff_max = max;
        self
    }

    /// Waits between two polls of a Bulk API 2.0 job: `first`, doubled up to `max` (default
    /// 100 ms – 10 s).
    pub fn with_job_poll(mut self, first: Duration, max: Duration) -> Self {
        self.job_poll = (first, max.max(first));
        self
    }

    /// The waits between two polls of a Bulk API 2.0 job (first, cap).
    pub(super) fn job_poll(&self) -> (Duration, Duration) {
        self.job_poll
    }

    /// Also puts `Sforce-Call-Options` in every subrequest's `httpHeaders` (default off; see the
    /// module docs).
    pub fn with_subrequest_call_options(mut self, enabled: bool) -> Self {
        self.subrequest_call_options = enabled;
        self
    }

    /// API calls this client (and its clones) made that Salesforce answered, whatever the status:
    /// Composite calls, query pages, `/limits` polls.
    #[cfg(test)]
    pub(crate) fn calls(&self) -> u64 {
        self.inner.stats.calls.load(Ordering::Relaxed)
    }

    /// The client's counters.
    pub fn stats(&self) -> &ApiStats {
        &self.inner.stats
    }

    /// The limit guard.
    pub(crate) fn guard(&self) -> &LimitGuard {
        &self.inner.guard
    }

    /// `GET /limits` → `DailyApiRequests`; also tells the guard. Not held by the guard (it is how
    /// the guard learns), retried like any call.
    pub async fn limits(&self, cancel: &CancellationToken) -> Result<ApiUsage, RestError> {
        self.check_tag()?;
        let path = format!("{}/limits", self.inner.data_path);
        let body = self
            .execute(Method::GET, &path, None, false, cancel)
            .await?;
        let usage = parse_limits(&body).map_err(RestError::Protocol)?;
        self.inner.guard.observe_limits(usage);
        Ok(usage)
    }

    /// `/services/data/v62.0`.
    pub(super) fn data_path(&self) -> &str {
        &self.inner.data_path
    }

    /// The client tag when it also goes into every subrequest's `httpHeaders`
    /// ([`RestClient::with_subrequest_call_options`]).
    pub(super) fn subrequest_call_options(&self) -> Option<&str> {
        self.subrequest_call_options
            .then_some(self.inner.client_tag.as_str())
    }

    pub(super) fn check_tag(&self) -> Result<(), RestError> {
        match &self.inner.call_options {
            Ok(_) => Ok(()),
            Err(message) => Err(RestError::Invalid(message.clone())),
        }
    }

    /// Sends until a 2xx answer, retrying as classified; the body of the answer. `guarded`: wait
    /// on the limit guard before each attempt.
    pub(super) async fn execute(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        guarded: bool,
        cancel: &CancellationToken,
    ) -> Result<Bytes, RestError> {
        let call = Call {
            guarded,
            ..Call::json(method, path, body)
        };
        Ok(self.execute_for(&call, cancel).await?.body)
    }

    /// Sends `call` until a 2xx answer, retrying as classified (the same retries, re-logins,
    /// guard and counters as every call); the whole answer, headers included.
    pub(super) async fn execute_for(
        &self,
        call: &Call<'_>,
        cancel: &CancellationToken,
    ) -> Result<Answer, RestError> {
        let (method, path, body, guarded) = (&call.method, call.path, call.body, call.guarded);
        let mut backoff = Backoff::new(self.backoff_base, self.backoff_max);
        let mut unreadable = 0u32;
        loop {
            if cancel.is_cancelled() {
                return Err(RestError::Cancelled);
            }
            if guarded {
                self.wait_for_allowance(cancel).await?;
            }
            let reason = match self.exchange(method, path, body, call.accept).await {
                Exchange::Success(answer) => return Ok(answer),
                Exchange::Transport(error) => format!("transport: {}", error_chain(&error)),
                Exchange::Refused {
                    status,
                    errors,
                    session,
                } => {
                    let code = errors.first().map(|e| e.code.as_str());
                    let reason = format!("HTTP {status}: {}", summarize(&errors));
                    let foreign = code == Some(UNREADABLE_RESPONSE) && status < 500;
                    match classify_http(status, code) {
                        // Not Salesforce's answer (a proxy's page): retried a few times, then
                        // the call fails without a verdict on what it carried.
                        Directive::Retry if foreign => {
                            unreadable += 1;
                            if unreadable >= MAX_UNREADABLE_ATTEMPTS {
                                return Err(RestError::Protocol(format!(
                                    "{reason} ({unreadable} times, not Salesforce's error shape)"
                                )));
                            }
                            reason
                        }
                        Directive::Retry => reason,
                        Directive::Reauthenticate => {
                            self.reauthenticate(&session, status, errors, cancel)
                                .await?;
                            reason
                        }
                        Directive::WaitForLimit => {
                            self.inner.guard.mark_exhausted();
                            if guarded {
                                // The guard holds the retry until /limits shows an allowance.
                                warn!(%method, path, reason, "API allowance exhausted; waiting");
                                self.inner.stats.retries.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                            reason
                        }
                        // `classify_http` gives nothing else for a refused call.
                        _ => return Err(RestError::Rejected { status, errors }),
                    }
                }
            };
            let delay = backoff.next_delay();
            warn!(%method, path, reason, ?delay, attempt = backoff.attempts(), "REST call failed; retrying");
            self.inner.stats.retries.fetch_add(1, Ordering::Relaxed);
            if !sleep_or_cancel(delay, cancel).await {
                return Err(RestError::Cancelled);
            }
        }
    }

    /// One request with the current session; counts and reads the answer.
    async fn exchange(
        &self,
        method: &Method,
        path: &str,
        body: Option<&Value>,
        accept: &'static str,
    ) -> Exchange {
        let session = self.inner.session.current();
        let url = format!("{}{path}", session.instance_url);
        let mut request = self
            .inner
            .http
            .request(method.clone(), &url)
            .bearer_auth(session.access_token.expose_secret())
            .header(ACCEPT, accept);
        if let Ok(options) = &self.inner.call_options {
            request = request.header(CALL_OPTIONS_HEADER, options.clone());
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => return Exchange::Transport(error),
        };
        self.inner.stats.calls.fetch_add(1, Ordering::Relaxed);
        let usage = response
            .headers()
            .get(LIMIT_INFO_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_limit_info);
        if let Some(usage) = usage {
            self.inner.guard.observe(usage);
        }
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let answer = match response.bytes().await {
            Ok(answer) => answer,
            Err(error) => return Exchange::Transport(error),
        };
        if (200..300).contains(&status) {
            Exchange::Success(Answer {
                headers,
                body: answer,
            })
        } else {
            Exchange::Refused {
                status,
                errors: errors_from_bytes(&answer),
                session,
            }
        }
    }

    /// Logs in again after `failed` was refused, unless another worker (or another client of
    /// the same session: the source's stream, its schema fetches) already did: one login at a
    /// time per session ([`SessionHandle::renew`]). A login that may work later is logged and
    /// left to the retry; refused credentials end the call. A configured access token cannot be
    /// refreshed: getting the refused token back ends the call with the refusal.
    async fn reauthenticate(
        &self,
        failed: &Arc<Session>,
        status: u16,
        errors: Vec<ApiError>,
        cancel: &CancellationToken,
    ) -> Result<(), RestError> {
        warn!(
            reason = summarize(&errors),
            "Salesforce refused the session; logging in again"
        );
        let renewed = tokio::select! {
            _ = cancel.cancelled() => return Err(RestError::Cancelled),
            renewed = self.inner.session.renew(&self.inner.auth, failed) => renewed,
        };
        if let Some((retrying, step)) = &self.inner.retrying {
            match &renewed {
                Ok(_) => retrying.recovered(step),
                Err(error) if error.directive() == Directive::Retry => {
                    retrying.failed(step, &error_chain(error));
                }
                Err(_) => {}
            }
        }
        match renewed {
            Ok(false) => Ok(()),
            Err(AuthError::CannotRenew) => Err(RestError::Rejected { status, errors }),
            Ok(true) => {
                self.inner.stats.relogins.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(error) if error.directive() == Directive::Retry => {
                warn!(%error, "re-login failed; will retry");
                Ok(())
            }
            Err(error) => Err(RestError::Auth(error)),
        }
    }

    /// Returns when the guard lets a call through; polls `/limits` while it does not.
    async fn wait_for_allowance(&self, cancel: &CancellationToken) -> Result<(), RestError> {
        let guard = &self.inner.guard;
        loop {
            if !guard.must_wait() {
                if guard.set_paused(false) {
                    info!(
                        remaining = guard.remaining(),
                        "API allowance above the reserve again; resuming REST calls"
                    );
                }
                return Ok(());
            }
            if guard.set_paused(true) {
                let usage = guard.usage();
                warn!(
                    used = usage.map(|u| u.used),
                    max = usage.map(|u| u.max),
                    reserve = guard.reserve().calls(usage.map_or(0, |u| u.max)),
                    poll_interval = ?guard.poll_interval(),
                    "daily API allowance down to the reserve; pausing REST calls"
                );
            }
            if !sleep_or_cancel(guard.poll_interval(), cancel).await {
                return Err(RestError::Cancelled);
            }
            if guard.claim_poll() {
                self.poll_limits(cancel).await?;
            }
        }
    }

    /// One `/limits` request while paused; failures only delay the resumption.
    async fn poll_limits(&self, cancel: &CancellationToken) -> Result<(), RestError> {
        let path = format!("{}/limits", self.inner.data_path);
        match self
            .exchange(&Method::GET, &path, None, "application/json")
            .await
        {
            Exchange::Success(answer) => match parse_limits(&answer.body) {
                Ok(usage) => self.inner.guard.observe_limits(usage),
                Err(message) => warn!(message, "unreadable /limits answer while paused"),
            },
            Exchange::Refused {
                status,
                errors,
                session,
            } => {
                let code = errors.first().map(|e| e.code.as_str());
                if classify_http(status, code) == Directive::Reauthenticate {
                    self.reauthenticate(&session, status, errors, cancel)
                        .await?;
                } else {
                    debug!(
                        status,
                        reason = summarize(&errors),
                        "/limits refused while paused"
                    );
                }
            }
            Exchange::Transport(error) => {
                warn!(
                    error = error_chain(&error),
                    "/limits poll failed while paused"
                );
            }
        }
        Ok(())
    }
}
